"""Terminated WebSocket (issue 6): routes with upgrade = "terminate" answer the
handshake in switchyard and bridge message payloads to a TCP or Unix-socket
stream. Real client: python3-websockets 10.x; raw client: term_lib.RawWS with
hand-built frames. Backends: term_lib.StreamBackend (echo or scripted)."""

import asyncio
import base64
import re
import signal
import socket
import time

from harness import blob, case, eq, register, sha256, wait_until
from term_lib import (CHUNK, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, StreamBackend,
                      check_ws_line, close_payload, exact_101, expect_error, frame, handshake, record, tproxy,
                      wait_ws_lines, ws_lines)
from wslib import fd_kinds, ws_key

MiB = 1 << 20
KiB = 1 << 10


def url(px, path="/ws"):
    return "ws://127.0.0.1:%d%s" % (px.port, path)


async def recv_bytes(ws, n, timeout=20):
    """Reassemble n bytes from binary messages (the bridge sends backend
    bytes as one binary message per read)."""
    out = bytearray()
    msgs = 0
    while len(out) < n:
        m = await asyncio.wait_for(ws.recv(), timeout)
        if not isinstance(m, bytes):
            raise AssertionError("text message %r from a binary bridge" % m[:80])
        out += m
        msgs += 1
    if len(out) != n:
        raise AssertionError("got %d bytes, want %d" % (len(out), n))
    return bytes(out), msgs


def connect(px, path="/ws", **kw):
    import websockets  # python3-websockets 10.x
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    kw.setdefault("close_timeout", 5)
    return websockets.connect(url(px, path), **kw)


# ==========================================================================
# real client through the bridge


def _echo_session(t, kind):
    be = StreamBackend(t, kind=kind)
    px = tproxy(t, be)
    text = "hello through switchyard \u00fcnic\u00f8de \u2603"
    small = blob(1000, 1)
    big_bin = blob(MiB, 2)
    big_text = "0123456789abcd\u00e9" * (MiB // 16)  # exactly 1 MiB of UTF-8 (= max_message default)
    frag_text = ["fr\u00e4g", "mented \u20ac", " text"]  # each fragment valid UTF-8 on its own
    frag_bin = [blob(10 * KiB, 3), blob(1, 4), blob(70 * KiB, 5)]
    sent = []

    async def client():
        out = {}
        async with connect(px) as ws:
            out["subprotocol"] = ws.subprotocol
            out["resp"] = list(ws.response_headers.raw_items())

            async def roundtrip(msg, raw):
                await ws.send(msg)
                sent.append(raw)
                return await recv_bytes(ws, len(raw))

            out["text"] = await roundtrip(text, text.encode())
            out["small"] = await roundtrip(small, small)
            out["big_bin"] = await roundtrip(big_bin, big_bin)
            out["big_text"] = await roundtrip(big_text, big_text.encode())
            await ws.send(iter(frag_text))  # fragmented text message
            sent.append("".join(frag_text).encode())
            out["frag_text"] = await recv_bytes(ws, len(sent[-1]))
            await ws.send(iter(frag_bin))
            sent.append(b"".join(frag_bin))
            out["frag_bin"] = await recv_bytes(ws, len(sent[-1]))
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            out["pong"] = True
            await ws.close(code=1000, reason="bye")
            out["close"] = (ws.close_code, ws.close_reason)
        return out

    with px.no_fd_leak(timeout=5):
        out = asyncio.run(client())
        eq(out["subprotocol"], None, "subprotocol (route lists none)")
        eq([k.lower() for k, _ in out["resp"]], ["upgrade", "connection", "sec-websocket-accept"],
           "101 fields (no extensions, no protocol)")
        eq(out["text"][0], text.encode(), "text echo (as bytes)")
        eq(out["small"][0], small, "binary echo")
        eq(sha256(out["big_bin"][0]), sha256(big_bin), "1 MiB binary echo (sha256)")
        if out["big_bin"][1] < MiB // CHUNK:
            raise AssertionError("1 MiB came back in %d messages; the bridge sends <= 16 KiB per message"
                                 % out["big_bin"][1])
        eq(sha256(out["big_text"][0]), sha256(big_text.encode()), "1 MiB text echo (sha256)")
        eq(out["frag_text"][0], "".join(frag_text).encode(), "fragmented text echo")
        eq(out["frag_bin"][0], b"".join(frag_bin), "fragmented binary echo")
        eq(out["close"], (1000, ""), "close code echoed (reason not echoed)")
        conn = be.wait_conns(1)[0]
        conn.wait_eof()
        eq(sha256(bytes(conn.data)), sha256(b"".join(sent)), "bytes at the backend = all payloads, in order")
        total = sum(len(s) for s in sent)
        l101, wl = check_ws_line(px, "client", "client close 1000", up=total, down=total, server=be.server)
        eq(l101.get("target"), "/ws", "101 line target")
    eq(be.connections, 1, "backend connections")
    eq(be.errors, [], "backend errors")


@case(timeout=60)
def websockets_tcp_echo(t):
    _echo_session(t, "tcp")


@case(timeout=60)
def websockets_unix_echo(t):
    _echo_session(t, "unix")


def _close_code(t, code):
    be = StreamBackend(t)
    px = tproxy(t, be)

    async def client():
        async with connect(px) as ws:
            await ws.send(b"x")
            await recv_bytes(ws, 1)
            await ws.close(code=code, reason="r")
            return ws.close_code, ws.close_reason

    with px.no_fd_leak():
        got = asyncio.run(client())
        eq(got[0], code, "close code echoed by the proxy")
        be.wait_conns(1)[0].wait_eof()
        check_ws_line(px, "client", "client close %d" % code, up=1, down=1)


for _c in (1000, 1001, 3000, 4000, 4999):
    register("close_code_%d" % _c, lambda t, c=_c: _close_code(t, c))


@case()
def raw_close_echo_exact(t):
    """Close with a reason: the echo carries the same code; without a code:
    an empty close comes back."""
    be = StreamBackend(t)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_CLOSE, close_payload(4000, b"done here"))
        f = ws.expect_close(4000)
        if f.close_reason not in (b"", b"done here"):
            raise AssertionError("close reason %r" % f.close_reason)
        ws2, _ = RawWS.open(t, px)
        ws2.send_frame(OP_CLOSE, b"")
        f = ws2.recv_frame()
        eq((f.op, f.payload), (OP_CLOSE, b""), "echo of a close without a code")
        ws2.expect_eof()
        wait_ws_lines(px, 2)


# ==========================================================================
# codec errors: close code, then TCP close, then the log lines


def _proto_error(t, send, code, reason_rx, max_message=None, before=b""):
    be = StreamBackend(t, handler=record)
    kw = {"max_message": max_message} if max_message else {}
    px = tproxy(t, be, **kw)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        if before:
            ws.send(before)
        try:
            ws.send(send)
        except OSError:
            pass
        ws.expect_close(code)
        _, wl = check_ws_line(px, "proxy", re.compile(reason_rx))
        if not wl["reason"].endswith("(%d)" % code):
            raise AssertionError("reason %r does not end in (%d)" % (wl["reason"], code))
        be.wait_conns(1)[0].wait_eof()
    return be


PROTO_ERRORS = [
    # name, bytes sent after the handshake, code, reason regex, max_message
    ("unmasked_text", frame(OP_TEXT, b"hello", mask=False), 1002, r".*unmasked.*"),
    ("unmasked_binary", frame(OP_BINARY, b"\x00\x01", mask=False), 1002, r".*unmasked.*"),
    ("bad_utf8", frame(OP_TEXT, b"ok \xff\xfe"), 1007, r".*UTF-8.*"),
    ("bad_utf8_overlong", frame(OP_TEXT, b"\xc0\xaf"), 1007, r".*UTF-8.*"),
    ("bad_utf8_surrogate", frame(OP_TEXT, b"\xed\xa0\x80"), 1007, r".*UTF-8.*"),
    ("bad_utf8_across_fragments", frame(OP_TEXT, b"a\xe2\x82", fin=False) + frame(OP_CONT, b"\x28"), 1007,
     r".*UTF-8.*"),
    ("utf8_truncated_at_end", frame(OP_TEXT, b"a\xe2\x82"), 1007, r".*UTF-8.*"),
    ("close_code_1005", frame(OP_CLOSE, close_payload(1005)), 1002, r".*close code.*"),
    ("close_code_999", frame(OP_CLOSE, close_payload(999)), 1002, r".*close code.*"),
    ("close_code_1016", frame(OP_CLOSE, close_payload(1016)), 1002, r".*close code.*"),
    ("close_code_5000", frame(OP_CLOSE, close_payload(5000)), 1002, r".*close code.*"),
    ("close_1_byte", frame(OP_CLOSE, b"\x03"), 1002, r".*"),
    ("rsv1_set", frame(OP_BINARY, b"x", rsv=4), 1002, r".*reserved.*"),
    ("opcode_3", frame(3, b"x"), 1002, r".*opcode.*"),
    ("ping_126_bytes", frame(OP_PING, b"p" * 126), 1002, r".*control.*"),
    ("fragmented_ping", frame(OP_PING, b"p", fin=False), 1002, r".*control.*"),
    ("continuation_first", frame(OP_CONT, b"x"), 1002, r".*continuation.*"),
    ("new_message_inside_fragmented", frame(OP_TEXT, b"a", fin=False) + frame(OP_BINARY, b"b"), 1002, r".*"),
]

for _n, _send, _code, _rx in PROTO_ERRORS:
    register("codec_%s_%d" % (_n, _code), lambda t, s=_send, c=_code, r=_rx: _proto_error(t, s, c, r))


@case()
def oversized_message_1009(t):
    lim = 64 * KiB
    ok = blob(lim, 1)
    be = StreamBackend(t)
    px = tproxy(t, be, max_message="64k")
    with px.no_fd_leak():
        # exactly max_message passes
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, ok)
        eq(ws.recv_data(lim), ok, "echo of a max_message-sized message")
        # one byte more: 1009
        ws.send_frame(OP_BINARY, blob(lim + 1, 2))
        ws.expect_close(1009)
        _, wl = check_ws_line(px, "proxy", re.compile(r".*\(1009\)"))
        eq(wl["bytes_up"], lim, "bytes_up (a frame that declares more than max_message is not forwarded)")
    eq(be.conns[0].data[:lim], ok, "backend bytes")


@case()
def oversized_fragmented_1009(t):
    """The limit is per message across fragments (streamed, so some of it may
    have reached the backend already)."""
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be, max_message="64k")
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        parts = [blob(30 * KiB, i) for i in range(3)]
        try:
            ws.send(frame(OP_BINARY, parts[0], fin=False) + frame(OP_CONT, parts[1], fin=False)
                    + frame(OP_CONT, parts[2]))
        except OSError:
            pass
        ws.expect_close(1009)
        check_ws_line(px, "proxy", re.compile(r".*\(1009\)"))
        be.wait_conns(1)[0].wait_eof()
        if len(be.conns[0].data) > 64 * KiB:
            raise AssertionError("backend got %d bytes of a message over max_message 64k" % len(be.conns[0].data))


@case()
def oversized_websockets_client_1009(t):
    import websockets
    be = StreamBackend(t)
    px = tproxy(t, be, max_message="1k")

    async def client():
        async with connect(px) as ws:
            await ws.send(b"a" * 1024)
            await recv_bytes(ws, 1024)
            await ws.send(b"b" * 1025)
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
            raise AssertionError("no close after an oversized message")

    with px.no_fd_leak():
        eq(asyncio.run(client()), 1009, "close code received by the websockets client")
        check_ws_line(px, "proxy", re.compile(r".*\(1009\)"), up=1024, down=1024)


@case()
def valid_utf8_split_across_fragments(t):
    """A UTF-8 sequence split across fragments (and a ping between them) is fine."""
    be = StreamBackend(t)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        msg = "a\u20ac\U0001F600z".encode()  # a E2 82 AC F0 9F 98 80 z
        ws.send(frame(OP_TEXT, msg[:2], fin=False) + frame(OP_PING, b"mid") + frame(OP_CONT, msg[2:5], fin=False)
                + frame(OP_CONT, msg[5:]))
        got = bytearray()
        pongs = []
        while len(got) < len(msg):
            f = ws.recv_frame()
            if f.op == OP_PONG:
                pongs.append(f.payload)
            else:
                eq(f.op, OP_BINARY, "opcode of echoed bytes")
                got += f.payload
        eq(bytes(got), msg, "echo")
        ws.send_frame(OP_PING, b"last")
        f = ws.recv_frame()
        eq((f.op, f.payload), (OP_PONG, b"last"), "pong")
        eq(pongs, [b"mid"], "pong for the ping inside the fragmented message")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)


# ==========================================================================
# bridge behaviour


@case()
def ping_pong_raw(t):
    be = StreamBackend(t)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        for p in (b"", b"x", bytes(range(125))):
            ws.send_frame(OP_PING, p)
            f = ws.recv_frame()
            eq((f.op, f.fin, f.payload), (OP_PONG, 1, p), "pong for a %d-byte ping" % len(p))
        ws.send_frame(OP_PONG, b"unsolicited")  # ignored
        ws.send_frame(OP_BINARY, b"after")
        eq(ws.recv_data(5), b"after", "echo after pings")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
    eq(bytes(be.conns[0].data), b"after", "backend got only data payloads")


@case()
def frames_with_the_handshake(t):
    """Frames sent in the same segment as the handshake are not lost."""
    be = StreamBackend(t)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px, early=frame(OP_BINARY, b"early") + frame(OP_TEXT, b" bird"))
        eq(ws.recv_data(10), b"early bird", "echo of frames sent with the handshake")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)


@case()
def backend_bytes_as_binary_frames(t):
    """Backend bytes: unfragmented binary messages of at most 16 KiB."""
    data = blob(200 * KiB, 7)

    def h(conn):
        conn.send(data)
        record(conn)

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        got = ws.recv_data(len(data), max_frame=CHUNK)
        eq(sha256(got), sha256(data), "bytes")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
        check_ws_line(px, "client", "client close 1000", up=0, down=len(data))


@case()
def streamed_not_buffered(t):
    """Half of a 1 MiB message reaches the backend before the rest is sent;
    backend bytes reach the client before the backend says more."""
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be)
    msg = blob(MiB, 8)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        fr = frame(OP_BINARY, msg)
        head_len = len(fr) - len(msg)
        ws.send(fr[:head_len + MiB // 2])
        conn = be.wait_conns(1)[0]
        conn.wait_data(MiB // 2, timeout=10)
        eq(bytes(conn.data), msg[:MiB // 2], "first half at the backend while the message is incomplete")
        ws.send(fr[head_len + MiB // 2:])
        conn.wait_data(MiB)
        eq(sha256(bytes(conn.data)), sha256(msg), "whole message at the backend")
        conn.send(b"first")
        eq(ws.recv_data(5), b"first", "backend bytes forwarded at once")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)


@case()
def base64_round_trip(t):
    be = StreamBackend(t)
    px = tproxy(t, be, subprotocols=["binary", "base64"])
    data = blob(300 * KiB, 9)

    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px, protocols="base64", check="base64")
        # a text message in two fragments, split inside a base64 group
        enc = base64.b64encode(b"hello \x00\xff bytes").decode()
        ws.send(frame(OP_TEXT, enc[:5].encode(), fin=False) + frame(OP_CONT, enc[5:].encode()))
        conn = be.wait_conns(1)[0]
        conn.wait_data(len(b"hello \x00\xff bytes"))
        # echoed back as base64 text frames, each decoding on its own
        got = bytearray()
        while len(got) < len(b"hello \x00\xff bytes"):
            f = ws.recv_frame()
            eq((f.op, f.fin), (OP_TEXT, 1), "base64 bridge frames are single text frames")
            got += base64.b64decode(f.payload, validate=True)
        eq(bytes(got), b"hello \x00\xff bytes", "base64 echo")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
        eq(bytes(conn.data), b"hello \x00\xff bytes", "backend received the decoded bytes")

        # the real client, a larger payload
        async def client():
            async with connect(px, subprotocols=["base64"]) as ws:
                proto = ws.subprotocol
                enc = base64.b64encode(data).decode()
                for i in range(0, len(enc), 40000):  # several messages, each whole base64 groups
                    await ws.send(enc[i:i + 40000])
                got = bytearray()
                while len(got) < len(data):
                    m = await asyncio.wait_for(ws.recv(), 10)
                    if not isinstance(m, str):
                        raise AssertionError("binary message on the base64 subprotocol")
                    got += base64.b64decode(m, validate=True)
                await ws.close()
                return proto, bytes(got)

        proto, got = asyncio.run(client())
        eq(proto, "base64", "chosen subprotocol")
        eq(sha256(got), sha256(data), "300 KiB base64 round trip")
        l101, wl = check_ws_line(px, "client", "client close 1000", up=len(data), down=len(data), n=2)


@case()
def base64_invalid_1007(t):
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be, subprotocols=["base64"])
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px, protocols="base64", check="base64")
        ws.send_frame(OP_TEXT, b"not*base64!")
        ws.expect_close(1007)
        check_ws_line(px, "proxy", re.compile(r".*\(1007\)"))


# ==========================================================================
# handshake


@case()
def exact_101_bytes(t):
    be = StreamBackend(t)
    px = tproxy(t, be, subprotocols=["binary", "base64"])
    with px.no_fd_leak():
        for protos, chosen in ((None, None), ("binary", "binary")):
            key = ws_key()
            c = t.connect(px.port)
            c.send(handshake(key, protocols=protos,
                             extra=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]))
            head = c.rd.read_until(b"\r\n\r\n", time.monotonic() + 5)
            eq(head, exact_101(key, chosen), "exact 101 (no extensions) for protocols %r" % protos)
            ws = RawWS(c)
            ws.send_frame(OP_CLOSE, close_payload(1000))
            ws.expect_close(1000)
        wait_ws_lines(px, 2)
    # the RFC 6455 §1.3 sample key
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    ws, head = RawWS.open(t, px, key=key, check=False)
    eq(head, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", "101 for the RFC sample key")


def _subproto(t, route_kw, offered, want, status=101):
    """offered: None, a header value, or a list of header values (several lines)."""
    be = StreamBackend(t)
    px = tproxy(t, be, **route_kw)
    with px.no_fd_leak():
        key = ws_key()
        extra = []
        if isinstance(offered, list):
            extra = ["Sec-WebSocket-Protocol: %s" % v for v in offered]
            offered = None
        c = t.connect(px.port)
        c.send(handshake(key, protocols=offered, extra=extra))
        if status != 101:
            body = expect_error(c, status)
            t.note(body)
            px.wait_access(1, lambda a: a.get("status") == status)
            time.sleep(0.1)
            eq(be.connections, 0, "backend connections after %d" % status)
            return
        head = c.rd.read_until(b"\r\n\r\n", time.monotonic() + 5)
        eq(head, exact_101(key, want), "101 (chosen protocol %r)" % want)
        ws = RawWS(c)
        if want == "base64":
            ws.send_frame(OP_TEXT, base64.b64encode(b"ok"))
            eq(ws.recv_data(4, op=OP_TEXT), base64.b64encode(b"ok"), "echo (base64)")
        else:
            ws.send_frame(OP_BINARY, b"ok")
            eq(ws.recv_data(2), b"ok", "echo")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
        wait_ws_lines(px)


BOTH = {"subprotocols": ["binary", "base64"]}
SUBPROTO_TABLE = [
    ("first_offered_listed", BOTH, "base64, binary", "base64"),
    ("first_offered_listed_2", BOTH, "binary, base64", "binary"),
    ("skip_unlisted", BOTH, "chat, x-y, binary", "binary"),
    ("several_lines", BOTH, ["chat", "superchat, base64", "binary"], "base64"),
    ("none_offered", BOTH, None, None),
    ("case_sensitive", dict(BOTH, require_subprotocol=False), "Binary", None),
    ("none_matching_400", BOTH, "chat, superchat", None, 400),
    ("none_matching_explicit_require_400", dict(BOTH, require_subprotocol=True), "chat", None, 400),
    ("none_matching_not_required", dict(BOTH, require_subprotocol=False), "chat", None),
    ("route_lists_none_offered_some", {}, "chat", None),
]
for _row in SUBPROTO_TABLE:
    register("subprotocol_" + _row[0],
             lambda t, r=_row: _subproto(t, r[1], r[2], r[3], *(r[4:] or (101,))))


@case()
def origins_allow_list(t):
    be = StreamBackend(t)
    page = "http://127.0.0.1:%d" % 8123
    px = tproxy(t, be, origins=[page, "https://app.example.com"])
    with px.no_fd_leak():
        for origin in (page, "https://app.example.com", "HTTPS://APP.EXAMPLE.COM", None):
            ws, _ = RawWS.open(t, px, origin=origin)
            ws.send_frame(OP_BINARY, b"hi")
            eq(ws.recv_data(2), b"hi", "echo with Origin %r" % origin)
            ws.send_frame(OP_CLOSE, close_payload(1000))
            ws.expect_close(1000)
        n_ok = be.connections
        for origin in ("http://evil.example", page + "/", "http://127.0.0.1:8124", "null",
                       "https://app.example.com:443x"):
            c = t.connect(px.port)
            c.send(handshake(ws_key(), origin=origin))
            expect_error(c, 403)
        px.wait_access(5, lambda a: a.get("status") == 403)
        time.sleep(0.1)
        eq(be.connections, n_ok, "no backend connection for a refused Origin")


@case()
def origins_websockets_client(t):
    import websockets
    be = StreamBackend(t)
    px = tproxy(t, be, origins=["http://good.example"])

    async def client(origin):
        try:
            async with connect(px, origin=origin) as ws:
                await ws.send(b"x")
                await recv_bytes(ws, 1)
                return 101
        except websockets.InvalidStatusCode as e:
            return e.status_code

    eq(asyncio.run(client("http://good.example")), 101, "allowed origin")
    eq(asyncio.run(client("http://bad.example")), 403, "refused origin")


@case()
def non_websocket_requests(t):
    """426 for a plain request; bad key 400; bad version 426; none reach the bridge."""
    be = StreamBackend(t)
    px = tproxy(t, be)
    with px.no_fd_leak():
        c = t.connect(px.port)
        c.send(b"GET /ws HTTP/1.1\r\nHost: test.example\r\n\r\n")
        expect_error(c, 426, ws_version=True)
        c = t.connect(px.port)
        c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n")
        expect_error(c, 426, ws_version=True)
        c = t.connect(px.port)
        c.send(handshake("short"))
        expect_error(c, 400)
        c = t.connect(px.port)
        c.send(handshake(ws_key(), version="8"))
        expect_error(c, 426, ws_version=True)
        c = t.connect(px.port)
        c.send(b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        expect_error(c, 426, ws_version=True)
        px.wait_access(5)
    time.sleep(0.1)
    eq(be.connections, 0, "bridge connections")


@case()
def backend_unreachable_502(t):
    dead = t.dead_port()
    px = tproxy(t, "127.0.0.1:%d" % dead,
                routes_after=[{"name": "unix", "path_prefix": "/u", "upgrade": "terminate",
                               "bridge": "unix:" + t.path("nobody.sock")}])
    with px.no_fd_leak():
        for target in ("/ws", "/u"):
            c = t.connect(px.port)
            c.send(handshake(ws_key(), target=target))
            body = expect_error(c, 502)
            t.note(target, body)
        lines = px.wait_access(2, lambda a: a.get("status") == 502)
        eq([a.get("server") for a in lines], ["127.0.0.1:%d" % dead, t.path("nobody.sock")],
           "access log server of the 502s")
    eq(ws_lines(px), [], "no websocket lines for a 502")


@case()
def backend_eof_close_1000(t):
    def h(conn):
        conn.send(b"hello")
        conn.sock.shutdown(socket.SHUT_WR)
        record(conn)

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be)
    with px.no_fd_leak():
        # a client that answers the close
        ws, _ = RawWS.open(t, px)
        eq(ws.recv_data(5), b"hello", "backend bytes before EOF")
        ws.expect_close(1000, reply=True)
        _, wl = check_ws_line(px, "backend", "backend EOF", up=0, down=5, server=be.server)
        # a client that never answers: the proxy closes TCP anyway (bounded wait)
        ws2, _ = RawWS.open(t, px)
        eq(ws2.recv_data(5), b"hello", "backend bytes before EOF (2)")
        ws2.expect_close(1000, reply=False, eof_timeout=10)
        check_ws_line(px, "backend", "backend EOF", up=0, down=5, n=2)


@case()
def backend_eof_websockets_client(t):
    import websockets

    def h(conn):
        conn.send(b"bye now")
        conn.sock.close()

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be)

    async def client():
        async with connect(px) as ws:
            got = await recv_bytes(ws, 7)
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosedOK:
                return got[0], ws.close_code
            raise AssertionError("no clean close after backend EOF")

    with px.no_fd_leak():
        eq(asyncio.run(client()), (b"bye now", 1000), "bytes and close code")
        check_ws_line(px, "backend", "backend EOF", down=7)


def _client_close(t, together):
    """Client close frame: echoed, and the backend sees every payload byte,
    then EOF. together: the data frame and the close frame arrive in one
    segment (else 0.2 s apart)."""
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        if together:
            ws.send(frame(OP_BINARY, b"last words") + frame(OP_CLOSE, close_payload(1000, b"bye")))
        else:
            ws.send_frame(OP_BINARY, b"last words")
            time.sleep(0.2)
            ws.send_frame(OP_CLOSE, close_payload(1000, b"bye"))
        ws.expect_close(1000)
        conn = be.wait_conns(1)[0]
        conn.wait_eof()
        eq(bytes(conn.data), b"last words", "backend bytes before EOF")
        check_ws_line(px, "client", "client close 1000", up=10, down=0)


register("client_close_backend_sees_eof", lambda t: _client_close(t, False))
register("client_close_with_data_in_same_segment", lambda t: _client_close(t, True))


@case(timeout=60)
def upload_then_close_slow_backend(t):
    """A client sends 2 MiB and its close frame at once to a backend that
    starts reading late: the backend still gets all 2 MiB, then EOF."""
    total = 2 * MiB
    data = blob(total, 21)

    def h(conn):
        time.sleep(1.0)
        record(conn)

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be, max_message="4m")
    with px.no_fd_leak(timeout=5):
        ws, _ = RawWS.open(t, px)
        th = t.thread(lambda: ws.send(frame(OP_BINARY, data) + frame(OP_CLOSE, close_payload(1000))))
        ws.expect_close(1000, timeout=20)
        th.join(20)
        conn = be.wait_conns(1)[0]
        conn.wait_eof(10)
        eq((len(conn.data), sha256(bytes(conn.data))), (total, sha256(data)),
           "bytes at the backend before EOF (length, sha256)")
        check_ws_line(px, "client", "client close 1000", up=total, down=0)


@case()
def client_tcp_half_close_backend_sees_eof(t):
    """A client that shuts down its sending side without a close frame."""
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, b"abc")
        be.wait_conns(1)[0].wait_data(3)
        ws.c.sock.shutdown(socket.SHUT_WR)
        be.conns[0].wait_eof()
        try:
            rest = ws.c.read_until_close(5)
        except ConnectionResetError:
            rest = b""
        t.note("after half-close the client got %r" % rest[:50])
        _, wl = check_ws_line(px, "client", re.compile(r"client .*"), up=3, down=0)
        t.note(wl)


@case()
def client_vanishes_backend_sees_eof(t):
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be)
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, b"abc")
        be.wait_conns(1)[0].wait_data(3)
        ws.c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.close()  # RST
        be.conns[0].wait_eof()
        check_ws_line(px, "client", re.compile(r"client .*"), up=3)


@case(timeout=30)
def ping_interval_timeout_1011(t):
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be, ping_interval="400ms")
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        t0 = time.monotonic()
        f = ws.recv_frame(timeout=3)
        eq(f.op, OP_PING, "first frame from the proxy is a ping (%r)" % f)
        if len(f.payload) > 125:
            raise AssertionError("ping payload too long")
        # never answer: close 1011 by the next interval
        f = ws.expect_close(1011, timeout=3, reply=True)
        el = time.monotonic() - t0
        t.note("close after %.2fs: %r" % (el, f))
        eq(f.close_reason, b"ping timeout", "close reason text")
        check_ws_line(px, "proxy", "ping timeout")
        be.conns[0].wait_eof()


@case(timeout=30)
def ping_interval_answered_stays_open(t):
    be = StreamBackend(t)
    px = tproxy(t, be, ping_interval="300ms")
    with px.no_fd_leak():
        ws, _ = RawWS.open(t, px)
        pings = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                f = ws.recv_frame(timeout=max(0.05, end - time.monotonic()))
            except socket.timeout:
                break
            eq(f.op, OP_PING, "frame while idle")
            pings += 1
            ws.send_frame(OP_PONG, f.payload)
        if pings < 3:
            raise AssertionError("only %d pings in 2s with ping_interval 300ms" % pings)
        ws.send_frame(OP_BINARY, b"still here")
        eq(ws.recv_data(10), b"still here", "echo after answering pings")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
        check_ws_line(px, "client", "client close 1000")

    # and the websockets client, which answers pings itself
    async def client():
        async with connect(px) as ws:
            await asyncio.sleep(1.5)
            await ws.send(b"ok")
            return (await recv_bytes(ws, 2))[0]

    eq(asyncio.run(client()), b"ok", "websockets client after 1.5 s of proxy pings")


@case(timeout=30)
def sigterm_going_away_1001(t):
    be = StreamBackend(t, handler=record)
    px = tproxy(t, be)
    import websockets
    ws, _ = RawWS.open(t, px)
    ws.send_frame(OP_BINARY, b"x")
    be.wait_conns(1)[0].wait_data(1)
    result = {}

    async def client():
        async with connect(px) as w:
            await w.send(b"y")
            result["ready"] = True
            try:
                await asyncio.wait_for(w.recv(), 10)
            except websockets.ConnectionClosed as e:
                result["rcvd"] = (e.rcvd.code, e.rcvd.reason) if e.rcvd else None

    th = t.thread(lambda: asyncio.run(client()))
    wait_until(lambda: result.get("ready") and be.connections == 2 and len(be.conns[1].data) == 1, 5,
               what="two bridged clients")
    px.proc.send_signal(signal.SIGTERM)
    f = ws.expect_close(1001, reply=True)
    eq(f.close_reason, b"going away", "close reason")
    th.join(15)
    eq(result.get("rcvd"), (1001, "going away"), "close seen by the websockets client")
    eq(px.stop(sig=None, timeout=10), 0, "exit status after SIGTERM")
    lines = ws_lines(px)
    eq(sorted((l["closed_by"], l["reason"]) for l in lines), [("proxy", "shutdown")] * 2, "websocket lines")
    for c in be.conns:
        c.wait_eof()


@case(timeout=60)
def backpressure_backend_to_slow_client(t):
    """The backend floods 48 MiB; a client that does not read stalls the
    backend (bounded proxy memory), then gets every byte."""
    total = 48 * MiB
    data = blob(MiB, 11)
    sent = [0]

    def h(conn):
        conn.sock.settimeout(60)
        try:
            for _ in range(total // MiB):
                conn.sock.sendall(data)
                sent[0] += len(data)
        except OSError:
            return
        record(conn)

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be)
    with px.no_fd_leak(timeout=5):
        rss0 = px.rss_kb()
        ws, _ = RawWS.open(t, px)
        time.sleep(2.0)
        s1 = sent[0]
        rss1 = px.rss_kb()
        t.note("backend sent %d bytes while the client slept; rss %d -> %d kB" % (s1, rss0, rss1))
        if s1 >= total:
            raise AssertionError("backend was not stalled by a client that does not read")
        if rss1 - rss0 > 32 * 1024:
            raise AssertionError("proxy RSS grew by %d kB with a slow client" % (rss1 - rss0))
        got = 0
        import hashlib
        h2 = hashlib.sha256()
        while got < total:
            f = ws.recv_frame(timeout=20)
            eq(f.op, OP_BINARY, "frame opcode")
            got += len(f.payload)
            h2.update(f.payload)
        eq(h2.hexdigest(), sha256(data * (total // MiB)), "48 MiB sha256")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000, timeout=10)
        check_ws_line(px, "client", "client close 1000", down=total)


@case(timeout=60)
def backpressure_client_to_slow_backend(t):
    """A backend that does not read stalls the client's upload (bounded proxy
    memory), then receives every byte."""
    total = 48 * MiB
    go = [False]

    def h(conn):
        wait_until(lambda: go[0], 30, what="go")
        record(conn)

    be = StreamBackend(t, handler=h)
    px = tproxy(t, be, max_message="64m")
    with px.no_fd_leak(timeout=5):
        rss0 = px.rss_kb()
        ws, _ = RawWS.open(t, px)
        piece = blob(MiB, 12)
        sent = [0]

        def upload():
            ws.c.sock.settimeout(60)
            for i in range(total // MiB):
                ws.c.sock.sendall(frame(OP_BINARY, piece, fin=False) if i == 0 else
                                  frame(OP_CONT, piece, fin=(i == total // MiB - 1)))
                sent[0] += MiB

        th = t.thread(upload)
        time.sleep(2.0)
        s1, rss1 = sent[0], px.rss_kb()
        t.note("client sent %d bytes while the backend slept; rss %d -> %d kB" % (s1, rss0, rss1))
        if s1 >= total:
            raise AssertionError("client upload was not stalled by a backend that does not read")
        if rss1 - rss0 > 32 * 1024:
            raise AssertionError("proxy RSS grew by %d kB with a slow backend" % (rss1 - rss0))
        go[0] = True
        th.join(40)
        conn = be.conns[0]
        conn.wait_data(total, timeout=30)
        eq(sha256(bytes(conn.data)), sha256(piece * (total // MiB)), "48 MiB at the backend")
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000, timeout=10)
        check_ws_line(px, "client", "client close 1000", up=total)


@case(timeout=60)
def access_log_lines(t):
    """101 line then websocket line, per session, for TCP and Unix bridges."""
    be = StreamBackend(t)
    ub = StreamBackend(t, kind="unix")
    px = tproxy(t, be, routes_after=[{"name": "uterm", "path_prefix": "/u", "upgrade": "terminate",
                                      "bridge": ub.bridge}])
    ws, _ = RawWS.open(t, px, target="/ws?x=1")
    ws.send_frame(OP_BINARY, b"12345")
    ws.recv_data(5)
    time.sleep(0.3)
    ws.send_frame(OP_CLOSE, close_payload(1000))
    ws.expect_close(1000)
    l101, wl = check_ws_line(px, "client", "client close 1000", up=5, down=5, server=be.server)
    eq((l101.get("method"), l101.get("target"), l101.get("status")), ("GET", "/ws?x=1", 101), "101 line")
    if wl["duration_ms"] < 250:
        raise AssertionError("duration_ms %r for a ~300 ms session" % wl["duration_ms"])
    ws, _ = RawWS.open(t, px, target="/u")
    ws.send_frame(OP_TEXT, b"abc")
    ws.recv_data(3)
    ws.send_frame(OP_CLOSE, close_payload(4001))
    ws.expect_close(4001)
    check_ws_line(px, "client", "client close 4001", up=3, down=3, server=ub.path, route="uterm", n=2)


@case(timeout=90)
def no_fd_leak_mixed_endings(t):
    """Many sessions ending every which way; proxy sockets and other fds back to baseline."""
    be = StreamBackend(t)

    def eof_h(conn):
        conn.send(b"z")
        conn.sock.close()

    be2 = StreamBackend(t, handler=eof_h)
    px = tproxy(t, be, subprotocols=["binary"], origins=["http://ok.example"], max_message="4k",
                routes_after=[{"name": "eof", "path_prefix": "/eof", "upgrade": "terminate",
                               "bridge": be2.bridge},
                              {"name": "dead", "path_prefix": "/dead", "upgrade": "terminate",
                               "bridge": "127.0.0.1:%d" % t.dead_port()}])
    base = fd_kinds(px.pid)
    base_n = px.fd_count()
    for i in range(15):
        # clean close
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, b"hello")
        ws.recv_data(5)
        ws.send_frame(OP_CLOSE, close_payload(1000))
        ws.expect_close(1000)
        ws.close()
        # protocol error
        ws, _ = RawWS.open(t, px)
        ws.send(frame(OP_TEXT, b"x", mask=False))
        ws.expect_close(1002)
        ws.close()
        # oversized
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, b"x" * 5000)
        ws.expect_close(1009)
        ws.close()
        # vanishing client
        ws, _ = RawWS.open(t, px)
        ws.send_frame(OP_BINARY, b"abc")
        ws.close()
        # backend EOF
        ws, _ = RawWS.open(t, px, target="/eof")
        ws.expect_close(1000, reply=True)
        ws.close()
        # refusals
        for req, code in ((handshake(ws_key(), origin="http://bad.example"), 403),
                          (handshake(ws_key(), protocols="chat"), 400),
                          (handshake(ws_key(), target="/dead"), 502),
                          (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426)):
            c = t.connect(px.port)
            c.send(req)
            expect_error(c, code)
            c.close()
    wait_until(lambda: len(ws_lines(px)) >= 75, 10, what="75 websocket lines")
    px.wait_fds(base_n, timeout=5)
    eq(fd_kinds(px.pid), base, "fd kinds after 135 sessions")
