"""Protocol upgrades (issue 4): recognising and checking upgrade requests,
validating the 101, and the byte tunnel. Every tunnel case runs twice,
as <name>.splice and <name>.copy (tunnel = { mode = ...; })."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from harness import blob, case, eq, expect_proxy_error, register, sha256, split_head, wait_listen, wait_until
from wslib import (MODES, tcase, PLAIN_TAIL, VIA, SelectorEchoBackend, UpgradeBackend, check_forwarded_head,
                   check_fds_back, check_tunnel_line, client_recv_exact, echo_until_eof, fd_kinds,
                   header_value, open_tunnels, raise_nofile, read_101, relayed_101, resp_101, tunnel_lines,
                   upgrade_tail, wait_tunnel_line, ws_accept, ws_key, ws_request)

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
KiB = 1 << 10


def tproxy(t, be, mode, extra="", **kw):
    ex = 'tunnel = { mode = "%s"; };' % mode
    return t.proxy(be, extra=ex + ("\n" + extra if extra else ""), **kw)


def open_tunnel(px, key=None, early=b"", extra=(), **reqkw):
    """Connect, send an upgrade request (+ early bytes in the same send),
    read the 101 and check it byte for byte. Returns (client, key, e2e)."""
    key = key or ws_key()
    req, e2e = ws_request(key, extra=extra, **reqkw)
    c = px.connect()
    c.send(req + early)
    head = read_101(c)
    eq(head, relayed_101(key), "101 relayed to the client")
    return c, key, e2e


def backend_eof(tun, timeout=5):
    wait_until(lambda: tun.eof, timeout, what="EOF at the backend")


def error_log_line(px, level, code, reason):
    return px.wait_log(r"^\S+ %s s=\d+ %d: %s$" % (level, code, re.escape(reason)))


def check_exact_error(data, code, reason_text, ws_version=False):
    """Exact proxy error: status line, Content-Type, Content-Length,
    [Sec-WebSocket-Version: 13, Upgrade: websocket (RFC 9110 §15.5.22: a 426 MUST
    name the protocol),] Connection: close, one-line body. Returns the body line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("incomplete error response %r" % data[:300])
    want = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%sConnection: close"
            % (code, reason_text, len(body), b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n" if ws_version else b""))
    eq(head, want, "error response head")
    if not body.endswith(b"\n") or body.count(b"\n") != 1 or len(body) < 2:
        raise AssertionError("error body is not one line: %r" % body)
    return body[:-1].decode()


def reject_check(t, px, be, req, code, reason_re=None, ws_version=False):
    """Send req (+ trailing bytes), expect the exact proxy error, the access
    line with status and reason, the error-log line, and no backend contact."""
    c = px.connect()
    c.send(req + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    data = c.read_until_close(5)
    texts = {400: b"Bad Request", 403: b"Forbidden", 426: b"Upgrade Required"}
    body = check_exact_error(data, code, texts[code], ws_version)
    if reason_re and not re.search(reason_re, body):
        raise AssertionError("reason %r does not match /%s/" % (body, reason_re))
    px.wait_access(1, lambda a: a.get("status") == code and a.get("reason") == body)
    error_log_line(px, "info", code, body)
    time.sleep(0.1)
    eq(be.connections, 0, "backend connections (must not be contacted)")
    return body


# ==========================================================================
# the tunnel


@tcase()
def tunnel_echo(t, mode):
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    tun = be.wait_tuns(1)[0]
    check_forwarded_head(tun.head, b"GET /ws HTTP/1.1", e2e, upgrade_tail())
    msgs = [b"hello", b"x" * 1000, bytes(range(256)) * 100, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]
    for m in msgs:
        c.send(m)
        eq(client_recv_exact(c, len(m)), m, "echo of %d bytes" % len(m))
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    backend_eof(tun)
    total = b"".join(msgs)
    eq(bytes(tun.got), total, "bytes at the backend")
    check_tunnel_line(px, mode, "client", "client EOF", up=len(total), down=len(total),
                      server=be.address)
    eq(be.pre_answer, [b""], "bytes past the head before the 101")
    check_fds_back(px, base, 2)


@tcase(timeout=120)
def tunnel_8mib_both_ways(t, mode):
    N = 8 * MiB
    up, down = blob(N, 101), blob(N, 202)
    res = {}

    def after(tun):
        w = threading.Thread(target=tun.send, args=(down,), daemon=True)
        w.start()
        tun.recv_exact_total(N, timeout=60)
        res["up_sha"] = sha256(bytes(tun.got))
        w.join(60)
        tun.recv_to_eof(30)
        res["extra"] = bytes(tun.got[N:])

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    c.sock.settimeout(60)
    sender = t.thread(c.sock.sendall, up)
    got = client_recv_exact(c, N, timeout=60)
    sender.join(60)
    eq(sha256(got), sha256(down), "SHA-256 of the 8 MiB received by the client")
    wait_until(lambda: "up_sha" in res, 30, what="backend received 8 MiB")
    eq(res["up_sha"], sha256(up), "SHA-256 of the 8 MiB received by the backend")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(10)
    wait_until(lambda: "extra" in res, 10, what="backend EOF")
    eq(res["extra"], b"", "extra bytes at the backend")
    check_tunnel_line(px, mode, "client", "client EOF", up=N, down=N)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_early_data_both_sides(t, mode):
    e_up = b"client-early\x00\xff\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
    e_down = b"backend-early\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    res = {}

    def after(tun):
        tun.recv_exact_total(len(e_up) + 8)
        tun.send(b"later-down")
        tun.recv_to_eof()
        res["done"] = True

    # hold: the backend waits 300 ms after the head before its 101 and records
    # what arrives meanwhile (the client's early bytes must wait for the 101)
    be = UpgradeBackend(t, after=after, early=e_down, hold=0.3)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px, early=e_up)
    eq(client_recv_exact(c, len(e_down)), e_down, "backend early data, first, right after the 101")
    c.send(b"later-up")
    eq(client_recv_exact(c, 10), b"later-down", "later backend data")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    wait_until(lambda: res.get("done"), 5, what="backend EOF")
    tun = be.tuns[0]
    eq(be.pre_answer, [b""], "client early bytes forwarded before the 101")
    check_forwarded_head(tun.head, b"GET /ws HTTP/1.1", e2e, upgrade_tail())
    eq(bytes(tun.got), e_up + b"later-up", "tunnel bytes at the backend (early data once, in order)")
    check_tunnel_line(px, mode, "client", "client EOF", up=len(e_up) + 8, down=len(e_down) + 10)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_client_half_close(t, mode):
    data = blob(MiB, 7)
    res = {}

    def after(tun):
        got = tun.recv_to_eof()
        res["before_eof"] = got
        tun.send(data)  # keeps flowing toward the client after its FIN

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    c.send(b"hello-up")
    c.sock.shutdown(socket.SHUT_WR)
    got = client_recv_exact(c, MiB)
    eq(sha256(got), sha256(data), "SHA-256 of 1 MiB sent by the backend after the client's FIN")
    c.expect_closed(5)
    eq(res.get("before_eof"), b"hello-up", "backend got the bytes, then EOF")
    check_tunnel_line(px, mode, "client", "client EOF", up=8, down=MiB)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_backend_half_close(t, mode):
    data = blob(MiB, 8)
    res = {}

    def after(tun):
        tun.send(b"hello-down")
        tun.sock.shutdown(socket.SHUT_WR)
        res["got"] = tun.recv_to_eof()

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    eq(client_recv_exact(c, 10), b"hello-down", "backend bytes")
    c.expect_closed(5)  # the backend's FIN, passed on
    c.sock.settimeout(30)
    c.sock.sendall(data)  # still flows toward the backend
    c.sock.shutdown(socket.SHUT_WR)
    wait_until(lambda: "got" in res, 10, what="backend EOF")
    eq(len(res["got"]), MiB, "bytes at the backend")
    eq(sha256(res["got"]), sha256(data), "SHA-256 at the backend")
    check_tunnel_line(px, mode, "backend", "backend EOF", up=MiB, down=10)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_backend_closes_after_64k(t, mode):
    data = blob(64 * KiB, 9)

    def after(tun):
        tun.send(data)  # then the handler returns and the socket is closed

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    got = client_recv_exact(c, 64 * KiB)
    eq(got, data, "64 KiB from the backend")
    c.expect_closed(5)
    c.close()
    check_tunnel_line(px, mode, "backend", "backend EOF", up=0, down=64 * KiB)
    check_fds_back(px, base, 2)


def _vanish(t, mode, how):
    res = {}

    def after(tun):
        if how == "unread":
            def flood():
                try:
                    tun.send(blob(4 * MiB, 3))
                except OSError:
                    pass
            threading.Thread(target=flood, daemon=True).start()
        try:
            tun.recv_to_eof(10)
        finally:
            res["eof"] = tun.eof
            res["got"] = bytes(tun.got)

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    key = ws_key()
    req, e2e = ws_request(key)
    c = px.connect(rcvbuf=4096)
    c.send(req)
    eq(read_101(c), relayed_101(key), "101")
    if how == "rst":
        c.send(b"last words")
        wait_until(lambda: be.tuns and bytes(be.tuns[0].got) == b"last words", 5, what="bytes at the backend")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    else:
        time.sleep(0.3)  # the backend floods; the client reads nothing
    c.close()  # unread data / SO_LINGER 0: the kernel sends RST
    wait_until(lambda: "eof" in res, 10, what="backend handler finished")
    eq(res["eof"], True, "backend saw EOF after the client vanished")
    tl = check_tunnel_line(px, mode, "client", re.compile(r"client EOF|error: (Connection reset by peer|Broken pipe)"))
    if tl["reason"] == "client EOF":
        raise AssertionError("a reset client logged as %r" % tl)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_client_vanishes_unread(t, mode):
    _vanish(t, mode, "unread")


@tcase()
def tunnel_client_vanishes_rst(t, mode):
    _vanish(t, mode, "rst")


@tcase(timeout=180)
def tunnel_1000_concurrent(t, mode):
    # 1000 tunnels, or as many as the descriptor limit holds: each costs about
    # 4 fds in this process (client + backend side) and 4 in the proxy (two
    # sockets, a pipe while bytes are in flight); the proxy inherits the limit
    soft, hard = raise_nofile()
    N = min(1000, (soft - 200) // 4)
    if N < 50:
        t.skip("RLIMIT_NOFILE %d/%d holds fewer than 50 tunnels" % (soft, hard))
    t.note("RLIMIT_NOFILE %d/%d: %d tunnels" % (soft, hard, N))
    be = SelectorEchoBackend()
    t.backends.append(be)
    px = tproxy(t, be, mode, limits={"max_connections": N + 16})
    base = fd_kinds(px.pid)
    socks = []
    try:
        keys = open_tunnels(px.port, N, mode, socks)
        msgs = [("tunnel %04d %s unique message\n" % (i, keys[i])).encode() for i in range(N)]
        for s, m in zip(socks, msgs):
            s.sendall(m)
        for i, (s, m) in enumerate(zip(socks, msgs)):
            got = b""
            while len(got) < len(m):
                d = s.recv(len(m) - len(got))
                if not d:
                    raise AssertionError("tunnel %d: EOF after %r" % (i, got))
                got += d
            eq(got, m, "echo on tunnel %d" % i)
        eq(be.open, N, "backend connections open at once")
        k = fd_kinds(px.pid)
        if k["socket"] < base["socket"] + 2 * N:
            raise AssertionError("proxy has %d sockets with %d tunnels open (baseline %d)"
                                 % (k["socket"], N, base["socket"]))
    finally:
        for s in socks:
            s.close()
    wait_tunnel_line(px, timeout=30, n=N)
    lines = tunnel_lines(px)
    for tl in lines:
        eq((tl.get("mode"), tl.get("closed_by"), tl.get("reason")), (mode, "client", "client EOF"),
           "tunnel line %r" % tl)
        eq(tl.get("bytes_up"), tl.get("bytes_down"), "tunnel bytes %r" % tl)
    eq(sorted(tl["bytes_up"] for tl in lines), sorted(len(m) for m in msgs), "bytes_up over all tunnels")
    wait_until(lambda: be.open == 0, 10, what="all backend connections closed")
    eq(be.heads, N, "upgrade heads at the backend")
    eq(be.errors, [], "backend errors")
    check_fds_back(px, base, 1024, timeout=10)


@tcase()
def tunnel_idle_timeout(t, mode):
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode, timeouts={"tunnel_idle": "500ms"})
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    for i in range(6):  # traffic every 200 ms keeps it open past 500 ms
        time.sleep(0.2)
        c.send(b"k")
        eq(client_recv_exact(c, 1), b"k", "echo %d" % i)
    quiet = time.monotonic()
    c.expect_closed(3)
    waited = time.monotonic() - quiet
    if not 0.4 <= waited <= 1.5:
        raise AssertionError("idle tunnel closed %.2fs after the last byte, want ~0.5s" % waited)
    backend_eof(be.tuns[0])
    tl = check_tunnel_line(px, mode, "proxy", "idle timeout", up=6, down=6)
    if tl["duration_ms"] < 1500:
        raise AssertionError("duration_ms %d, the tunnel lived >= 1.6s" % tl["duration_ms"])
    check_fds_back(px, base, 2)


@tcase()
def tunnel_max_lifetime(t, mode):
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode, timeouts={"tunnel_max": "800ms"})
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    t0 = time.monotonic()
    n = 0
    closed = None
    while time.monotonic() - t0 < 4:
        time.sleep(0.1)
        try:
            c.sock.send(b"m")
        except OSError:
            closed = time.monotonic() - t0
            break
        try:
            if not c.rd._fill(time.monotonic() + 1):
                closed = time.monotonic() - t0
                break
        except socket.timeout:
            raise AssertionError("echo lost while the tunnel was open")
        n += 1
    if closed is None or not 0.7 <= closed <= 1.5:
        raise AssertionError("tunnel with traffic closed after %r s, want ~0.8s (tunnel_max)" % closed)
    backend_eof(be.tuns[0])
    tl = check_tunnel_line(px, mode, "proxy", "lifetime limit")
    if not 750 <= tl["duration_ms"] <= 1500:
        raise AssertionError("duration_ms %d, want ~800" % tl["duration_ms"])
    check_fds_back(px, base, 2)


@tcase()
def tunnel_after_keepalive_get(t, mode):
    def answer(head):
        if header_value(head, "Upgrade") is None:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
        return resp_101(header_value(head, "Sec-WebSocket-Key"))

    def after(tun):
        if header_value(tun.head, "Upgrade") is not None:
            echo_until_eof(tun)

    be = UpgradeBackend(t, after=after, answer=answer)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c = px.connect()
    r = c.get("/plain")
    eq((r.status, r.body), (200, b"ok\n"), "plain GET")
    eq(r.lines, [b"Content-Length: 3", VIA], "plain response fields (keep-alive)")
    key = ws_key()
    req, e2e = ws_request(key)
    c.send(req)
    eq(read_101(c), relayed_101(key), "101 on the kept-alive connection")
    c.send(b"after keep-alive")
    eq(client_recv_exact(c, 16), b"after keep-alive", "echo")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    eq(be.connections, 2, "backend connections")
    check_forwarded_head(be.tuns[0].head, b"GET /plain HTTP/1.1", [b"Host: test.example"], PLAIN_TAIL)
    check_forwarded_head(be.tuns[1].head, b"GET /ws HTTP/1.1", e2e, upgrade_tail())
    check_tunnel_line(px, mode, "client", "client EOF", up=16, down=16)
    statuses = [a.get("status") for a in px.access_lines() if a.get("event") is None]
    eq(statuses, [200, 101], "access-log statuses")
    check_fds_back(px, base, 2)


@tcase()
def tunnel_sigterm(t, mode):
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode)
    c, key, e2e = open_tunnel(px)
    c.send(b"ping")
    eq(client_recv_exact(c, 4), b"ping", "echo")
    px.stop(signal.SIGTERM, timeout=5, expect=0)
    c.expect_closed(3)
    backend_eof(be.tuns[0])
    check_tunnel_line(px, mode, "proxy", "shutdown", up=4, down=4)


@tcase()
def tunnel_connection_spellings(t, mode):
    """Firefox's "Connection: keep-alive, Upgrade", several Connection lines,
    odd case: all upgrades; Upgrade is forwarded byte-exact."""
    variants = [
        ([b"Connection: keep-alive, Upgrade", b"Upgrade: websocket"], b"websocket"),
        ([b"Connection: keep-alive", b"Upgrade: websocket", b"Connection: Upgrade"], b"websocket"),
        ([b"connection: UPGRADE", b"upgrade: WebSocket"], b"WebSocket"),
        ([b"Connection: Upgrade,keep-alive", b"Upgrade:websocket  "], b"websocket"),
    ]
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    for i, (hop, token) in enumerate(variants):
        key = ws_key()
        lines = hop + [b"Sec-WebSocket-Key: " + key.encode(), b"Sec-WebSocket-Version: 13",
                       b"Origin: http://test.example"]
        req, e2e = ws_request(lines=lines)
        c = px.connect()
        c.send(req)
        eq(read_101(c), relayed_101(key), "101 for variant %d" % i)
        c.send(b"v%d" % i)
        eq(client_recv_exact(c, 2), b"v%d" % i, "echo for variant %d" % i)
        c.sock.shutdown(socket.SHUT_WR)
        c.expect_closed(5)
        tun = be.wait_tuns(i + 1)[i]
        check_forwarded_head(tun.head, b"GET /ws HTTP/1.1", e2e, upgrade_tail(token))
    wait_tunnel_line(px, n=len(variants))
    check_fds_back(px, base, 2)


@tcase(timeout=60)
def websockets_client_and_server(t, mode):
    import websockets  # python3-websockets 10.x

    port = t.free_port()
    events = t.path("ws_events.jsonl")
    t.popen(["/usr/bin/python3", os.path.join(HERE, "ws_echo_server.py"), str(port), events],
            stdout=open(t.path("ws_server.out"), "wb"), stderr=subprocess.STDOUT)
    wait_listen(port)
    px = tproxy(t, port, mode)
    text = "hello through switchyard \u00fcnic\u00f8de"
    data = blob(300 * KiB, 4)

    async def client():
        out = {}
        async with websockets.connect("ws://127.0.0.1:%d/chat?room=1" % px.port, subprotocols=["chat"],
                                      ping_interval=None, max_size=None, close_timeout=5) as ws:
            out["subprotocol"] = ws.subprotocol
            out["resp"] = list(ws.response_headers.raw_items())
            await ws.send(text)
            out["text"] = await asyncio.wait_for(ws.recv(), 10)
            await ws.send(data)
            out["binary"] = await asyncio.wait_for(ws.recv(), 10)
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            out["pong"] = True
            await ws.close(code=1000, reason="bye")
            out["close"] = (ws.close_code, ws.close_reason)
        return out

    out = asyncio.run(client())
    eq(out["subprotocol"], "chat", "subprotocol")
    eq(out["text"], text, "text echo")
    eq(out["binary"], data, "binary echo")
    eq(out["close"], (1000, "bye"), "close code/reason seen by the client")
    resp = dict((k.lower(), v) for k, v in out["resp"])
    eq((resp.get("connection"), resp.get("upgrade"), resp.get("via")), ("Upgrade", "websocket", "1.1 switchyard"),
       "101 fields at the client")

    def evs():
        try:
            with open(events) as f:
                return [json.loads(l) for l in f if l.strip()]
        except OSError:
            return []

    wait_until(lambda: any(e["event"] == "closed" for e in evs()), 5, what="server close event")
    ev = evs()
    opened = [e for e in ev if e["event"] == "open"]
    eq(len(opened), 1, "server connections")
    eq(opened[0]["path"], "/chat?room=1", "path at the server")
    hdrs = dict((k.lower(), v) for k, v in opened[0]["headers"])
    eq(hdrs.get("via"), "1.1 switchyard", "Via at the server")
    eq(hdrs.get("sec-websocket-protocol"), "chat", "Sec-WebSocket-Protocol at the server")
    eq([(e["type"], e["len"]) for e in ev if e["event"] == "message"],
       [("text", len(text)), ("binary", len(data))], "messages at the server")
    closed = [e for e in ev if e["event"] == "closed"]
    eq([(e["code"], e["reason"]) for e in closed], [(1000, "bye")], "close code/reason seen by the server")
    tl = check_tunnel_line(px, mode, "backend", "backend EOF", server="127.0.0.1:%d" % port)
    if tl["bytes_up"] < len(data) or tl["bytes_down"] < len(data):
        raise AssertionError("tunnel byte counts too small: %r" % tl)


@tcase(timeout=60)
def tunnel_burst_request_response(t, mode):
    """Request/response bursts of exactly 1 MiB and 1,000,000 bytes, each way,
    20 rounds: every burst must arrive completely while the sender waits for
    the answer (no bytes may sit in the proxy until more traffic comes)."""
    sizes = [MiB, 1000000]
    down = {n: blob(n, n) for n in sizes}
    up = {n: blob(n, n + 1) for n in sizes}
    res = {"rounds": 0}

    def after(tun):
        while True:
            cmd = bytearray()
            while not cmd.endswith(b"\n"):
                if tun.got:
                    cmd += tun.got[:1]
                    del tun.got[:1]
                    continue
                if not tun.recv(30):
                    return
            op, n = cmd.decode().split()
            n = int(n)
            if op == "get":
                tun.send(down[n])
            else:
                tun.recv_exact_total(n, timeout=5)
                eq(bytes(tun.got[:n]), up[n], "upload burst at the backend")
                del tun.got[:n]
                tun.send(b"ok\n")
            res["rounds"] += 1

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    c, key, e2e = open_tunnel(px)
    for r in range(20):
        n = sizes[r % 2]
        c.send(b"get %d\n" % n)
        out = bytearray()
        try:
            c.rd.read_exact(n, time.monotonic() + 3, out.extend)
        except socket.timeout:
            raise AssertionError("round %d: download burst of %d stalled, client has %d bytes" % (r, n, len(out)))
        eq(bytes(out), down[n], "download burst %d" % r)
        c.send(b"put %d\n" % n + up[n])
        try:
            got = client_recv_exact(c, 3, timeout=3)
        except socket.timeout:
            have = len(be.tuns[0].got)
            raise AssertionError("round %d: upload burst of %d stalled, backend has %d bytes" % (r, n, have))
        eq(got, b"ok\n", "upload ack %d" % r)
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    check_tunnel_line(px, mode, "client", "client EOF")


@tcase(timeout=60)
def tunnel_sigterm_while_streaming(t, mode):
    def after(tun):
        chunk = blob(256 * KiB, 5)
        try:
            while True:
                tun.send(chunk)
        except OSError:
            pass

    be = UpgradeBackend(t, after=after)
    px = tproxy(t, be, mode)
    c, key, e2e = open_tunnel(px)
    stop = threading.Event()

    def upload():
        chunk = blob(256 * KiB, 6)
        try:
            while not stop.is_set():
                c.sock.sendall(chunk)
        except OSError:
            pass

    c.sock.settimeout(30)
    up = t.thread(upload)
    client_recv_exact(c, 4 * MiB, timeout=10)
    px.stop(signal.SIGTERM, timeout=5, expect=0)
    stop.set()
    c.read_until_close(5)
    up.join(10)
    lines = wait_tunnel_line(px)
    eq((lines[0]["closed_by"], lines[0]["reason"]), ("proxy", "shutdown"), "tunnel line %r" % lines[0])


@tcase(timeout=40)
def tunnel_sigterm_during_handshake(t, mode):
    """SIGTERM while the backend has not answered the upgrade yet: the 101
    that follows must not leave a tunnel open past the stop. Either way the
    tunnel (if any) is closed promptly with reason "shutdown" and logged."""
    got_head = threading.Event()

    def answer(head):
        got_head.set()
        time.sleep(0.5)
        return resp_101(header_value(head, "Sec-WebSocket-Key"))

    be = UpgradeBackend(t, answer=answer)
    px = tproxy(t, be, mode)
    key = ws_key()
    req, e2e = ws_request(key)
    c = px.connect()
    c.send(req)
    if not got_head.wait(5):
        raise AssertionError("backend got no request")
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)
    data = c.read_until_close(5)
    closed_after = time.monotonic() - t0
    # README: requests in flight get at most 3 s after SIGTERM, then exit 0.
    # One SIGTERM only (a second one is a no-op); a small scheduling margin.
    bound = 3.0 + 0.5
    try:
        px.proc.wait(max(0.0, t0 + bound - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError("switchyard still running %.1fs after SIGTERM (in-flight requests get at most 3 s)"
                             % (time.monotonic() - t0))
    px.stop(sig=None, expect=0)
    backend_eof(be.tuns[0])
    if data.startswith(b"HTTP/1.1 101 "):
        eq(data, relayed_101(key), "101 then EOF")
        problems = []
        if closed_after > 1.5:
            problems.append("the tunnel opened during the stop stayed open %.1fs after SIGTERM (the 101 came "
                            "after 0.5s)" % closed_after)
        lines = tunnel_lines(px)
        if [(a["closed_by"], a["reason"]) for a in lines] != [("proxy", "shutdown")]:
            problems.append("tunnel lines %r, want one with closed_by proxy, reason shutdown" % lines)
        if problems:
            raise AssertionError("; ".join(problems))
    else:
        check_exact_error(data, 503, b"Service Unavailable")


@tcase()
def tunnel_101_fields_exact(t, mode):
    """The 101's end-to-end fields are relayed byte-exact and in order (its
    own hop-by-hop ones dropped); the request's Sec-WebSocket-*, Origin too."""
    extra_resp = [b"Sec-WebSocket-Protocol: chat", b"X-Hop: secret",
                  b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15",
                  b"Set-Cookie: a=1; Path=/", b"Keep-Alive: timeout=5", b"x-backend:  Two  Spaces"]

    def answer(head):
        k = header_value(head, "Sec-WebSocket-Key")
        return (b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade:  WebSocket \r\n"
                b"Connection: Upgrade, X-Hop\r\nSec-WebSocket-Accept: " + ws_accept(k).encode() + b"\r\n"
                + b"".join(l + b"\r\n" for l in extra_resp) + b"\r\n")

    be = UpgradeBackend(t, answer=answer)
    px = tproxy(t, be, mode)
    key = ws_key()
    lines = [b"Upgrade: websocket", b"Connection: keep-alive, Upgrade", b"Sec-WebSocket-Version: 13",
             b"Origin: https://Example.COM:8443", b"Sec-WebSocket-Key: " + key.encode(),
             b"Sec-WebSocket-Protocol: chat,  superchat", b"Cookie: sid=1",
             b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
             b"Sec-WebSocket-Extensions: x-webkit-deflate-frame", b"User-Agent: e2e"]
    req, e2e = ws_request(lines=lines)
    c = px.connect()
    c.send(req)
    want = (b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nSec-WebSocket-Accept: " + ws_accept(key).encode()
            + b"\r\nSec-WebSocket-Protocol: chat\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
            b"Set-Cookie: a=1; Path=/\r\nx-backend: Two  Spaces\r\n"
            b"Connection: Upgrade\r\nUpgrade: WebSocket\r\nVia: 1.1 switchyard\r\n\r\n")
    eq(read_101(c), want, "relayed 101")
    c.send(b"z")
    eq(client_recv_exact(c, 1), b"z", "echo")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    check_forwarded_head(be.tuns[0].head, b"GET /ws HTTP/1.1", e2e, upgrade_tail())
    check_tunnel_line(px, mode, "client", "client EOF", up=1, down=1)


@tcase()
def tunnel_backend_101_then_close(t, mode):
    """101, bytes and FIN from the backend all at once."""
    be = UpgradeBackend(t, early=b"bye", after=lambda tun: None)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    c, key, e2e = open_tunnel(px)
    eq(client_recv_exact(c, 3), b"bye", "bytes after the 101")
    c.expect_closed(5)
    c.close()
    check_tunnel_line(px, mode, "backend", "backend EOF", up=0, down=3)
    check_fds_back(px, base, 2)


@tcase()
def tunnel_both_closed_at_switch(t, mode):
    """Both ends are already gone when the 101 arrives: the client sent its
    request and FIN; the backend sends 101, a byte and closes. The proxy
    delivers the byte, logs one tunnel line and keeps running (splice mode
    used to finish the tunnel inside tunnel_start and crash in log_tunnel)."""
    be = UpgradeBackend(t, early=b"b", hold=0.3, fin_with_answer=True)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    key = ws_key()
    req, e2e = ws_request(key)
    c = px.connect()
    c.send(req)
    c.sock.shutdown(socket.SHUT_WR)
    eq(read_101(c), relayed_101(key), "101")
    eq(client_recv_exact(c, 1), b"b", "backend byte")
    c.expect_closed(5)
    time.sleep(0.2)
    if not px.alive():
        raise AssertionError("switchyard died (status %s): %s" % (px.proc.returncode, px.log()[-300:]))
    tl = wait_tunnel_line(px)[0]
    if (tl["closed_by"], tl["reason"]) not in (("client", "client EOF"), ("backend", "backend EOF")):
        raise AssertionError("tunnel line %r" % tl)
    eq((tl["bytes_up"], tl["bytes_down"]), (0, 1), "tunnel bytes")
    check_fds_back(px, base, 2)


@tcase()
def tunnel_client_fin_before_101(t, mode):
    """The client sends the request, early bytes and its FIN before the 101
    arrives: the backend gets the bytes then EOF; its answer still flows back."""
    res = {}

    def after(tun):
        res["got"] = tun.recv_to_eof()
        tun.send(b"answer after your FIN")

    be = UpgradeBackend(t, after=after, hold=0.3)
    px = tproxy(t, be, mode)
    base = fd_kinds(px.pid)
    key = ws_key()
    req, e2e = ws_request(key)
    c = px.connect()
    c.send(req + b"early+fin")
    c.sock.shutdown(socket.SHUT_WR)
    eq(read_101(c), relayed_101(key), "101 after the client's FIN")
    eq(client_recv_exact(c, 21), b"answer after your FIN", "backend bytes")
    c.expect_closed(5)
    eq(res.get("got"), b"early+fin", "backend got the early bytes, then EOF")
    eq(be.pre_answer, [b""], "bytes before the 101")
    check_tunnel_line(px, mode, "client", "client EOF", up=9, down=21)
    check_fds_back(px, base, 2)


# ==========================================================================
# checks before a backend is contacted


@case()
def ws_version_426(t):
    be = UpgradeBackend(t)
    px = t.proxy(be)
    for v in ["8", "14", "13, 8", "012"]:
        req, _ = ws_request(version=v)
        reject_check(t, px, be, req, 426, ws_version=True)


@case()
def ws_bad_request_400(t):
    be = UpgradeBackend(t)
    px = t.proxy(be)
    good = ws_key()
    table = [
        ("POST", dict(method="POST"), r"GET"),
        ("PUT", dict(method="PUT"), r"GET"),
        ("short key", dict(key="dGhlIHNhbXBsZQ=="), r"Key"),
        ("17-byte key", dict(key="AAAAAAAAAAAAAAAAAAAAAAA="), r"Key"),
        ("15-byte key", dict(key="AAAAAAAAAAAAAAAAAAAA"), r"Key"),
        ("non-base64 key", dict(key="!!!!!!!!!!!!!!!!!!!!!!=="), r"Key"),
        ("unpadded key", dict(key=good.rstrip("=")), r"Key"),
        ("missing key", dict(key=False), r"Key"),
        ("two keys", dict(key=good, extra=[("Sec-WebSocket-Key", ws_key())]), r"Key"),
        ("missing version", dict(version=None), r"Version"),
    ]
    for name, kw, rx in table:
        req, _ = ws_request(**kw)
        t.note("case", name)
        reject_check(t, px, be, req, 400, reason_re=rx)
    # an upgrade request with a body
    for framing in ([b"Content-Length: 5"], [b"Transfer-Encoding: chunked"]):
        req, _ = ws_request()
        req = req[:-2] + framing[0] + b"\r\n\r\n" + (b"hello" if b"Length" in framing[0] else b"5\r\nhello\r\n0\r\n\r\n")
        reject_check(t, px, be, req, 400, reason_re=r"body")


@case()
def route_deny_403(t):
    be = UpgradeBackend(t, answer=lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                       after=lambda tun: None)
    px = t.proxy(be, routes=[{"name": "all", "upstream": "app", "upgrade": "deny"}])
    req, _ = ws_request()
    reject_check(t, px, be, req, 403)
    # a plain request on the same route still goes through
    c = px.connect()
    r = c.get("/plain")
    eq((r.status, r.body), (200, b"ok\n"), "plain GET on a deny route")
    eq(be.connections, 1, "backend connections")


def plain_answer(head):
    return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def _plain_forward(t, reqs, routes=None):
    """Each (request bytes, e2e lines, via) must reach the backend as a plain
    request (Connection: close, no Upgrade) and get the backend's 200."""
    be = UpgradeBackend(t, answer=plain_answer, after=lambda tun: None)
    px = t.proxy(be, routes=routes)
    for i, (req, e2e, via) in enumerate(reqs):
        c = px.connect()
        c.send(req)
        r = c.read_response()
        eq((r.status, r.body), (200, b"ok\n"), "response %d" % i)
        if r.has("Upgrade"):
            raise AssertionError("Upgrade in a plain response: %r" % r.head)
        tun = be.wait_tuns(i + 1)[i]
        first = req.split(b"\r\n", 1)[0].rsplit(b" ", 1)[0] + b" HTTP/1.1"
        check_forwarded_head(tun.head, first, e2e, [via])
        c.close()
    eq(len(tunnel_lines(px)), 0, "tunnel lines")
    return be, px


@case()
def route_strip(t):
    req, e2e = ws_request()
    _plain_forward(t, [(req, e2e, VIA)], routes=[{"name": "all", "upstream": "app", "upgrade": "strip"}])


@case()
def not_an_upgrade(t):
    """Upgrade without the Connection token, or on HTTP/1.0: plain request."""
    r1 = ws_request(connection="keep-alive")
    r2 = ws_request(connection=None)
    r3 = ws_request(http="HTTP/1.0")
    r4 = ws_request(connection="Upgrade", upgrade="foo")  # nothing allowed remains
    _plain_forward(t, [(r1[0], r1[1], VIA), (r2[0], r2[1], VIA), (r3[0], r3[1], b"Via: 1.0 switchyard"),
                       (r4[0], r4[1], VIA)])


@case()
def h2c_never_forwarded(t):
    settings = b"HTTP2-Settings: AAMAAABkAAQAAP__"
    plain = []
    for up in (b"h2c", b"H2C", b"h2c/1.0"):
        lines = [b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: " + up, settings, b"Accept: */*"]
        req, e2e = ws_request(lines=lines, target="/h2")
        eq(e2e, [b"Host: test.example", b"Accept: */*"], "test setup")
        plain.append((req, e2e, VIA))
    _plain_forward(t, plain)
    # with protocols = "*" too
    req, e2e = ws_request(lines=[b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", settings], target="/h2")
    _plain_forward(t, [(req, e2e, VIA)], routes=[{"name": "all", "upstream": "app", "protocols": ["*"]}])


@tcase()
def h2c_dropped_from_websocket(t, mode):
    be = UpgradeBackend(t)
    px = tproxy(t, be, mode, routes=[{"name": "all", "upstream": "app", "protocols": ["*"]}])
    key = ws_key()
    lines = [b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c, websocket",
             b"HTTP2-Settings: AAMAAABkAAQAAP__", b"Sec-WebSocket-Key: " + key.encode(),
             b"Sec-WebSocket-Version: 13"]
    req, e2e = ws_request(lines=lines)
    c = px.connect()
    c.send(req)
    eq(read_101(c), relayed_101(key), "101")
    c.send(b"x")
    eq(client_recv_exact(c, 1), b"x", "echo")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    tun = be.tuns[0]
    check_forwarded_head(tun.head, b"GET /ws HTTP/1.1", e2e, upgrade_tail(b"websocket"))
    check_tunnel_line(px, mode, "client", "client EOF", up=1, down=1)


@tcase()
def protocols_allow_list(t, mode):
    """Tokens outside the route's list are removed; the rest keep the
    client's order and spelling."""
    cases = [
        ([], b"foo, websocket", b"websocket"),
        (["websocket", "foo"], b"Foo, bar, websocket", b"Foo, websocket"),
        (["*"], b"bar, h2c, websocket", b"bar, websocket"),
        (["*"], b"websocket,  x-custom/2", b"websocket, x-custom/2"),
        (["*"], b"foo, websocket", b"foo, websocket, bar"),  # + a second Upgrade line "bar"
    ]
    for i, (protos, offered, forwarded) in enumerate(cases):
        route = {"name": "all", "upstream": "app"}
        if protos:
            route["protocols"] = protos
        be = UpgradeBackend(t)
        px = tproxy(t, be, mode, routes=[route])
        key = ws_key()
        req, e2e = ws_request(key, upgrade=offered.decode(), extra=[b"Upgrade: bar"] if i == 4 else ())
        c = px.connect()
        c.send(req)
        eq(read_101(c), relayed_101(key), "101 (case %d)" % i)
        c.send(b"p")
        eq(client_recv_exact(c, 1), b"p", "echo")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect_closed(5)
        check_forwarded_head(be.tuns[0].head, b"GET /ws HTTP/1.1", e2e, upgrade_tail(forwarded))
        check_tunnel_line(px, mode, "client", "client EOF", up=1, down=1)


@tcase()
def tunnel_non_websocket_protocol(t, mode):
    """protocols = [ "*" ]: a non-WebSocket upgrade (no Sec-WebSocket-*)
    is forwarded and its 101 (no Accept needed) opens a tunnel."""

    def answer(head):
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/1.1\r\nConnection: Upgrade\r\n\r\n"

    be = UpgradeBackend(t, answer=answer)
    px = tproxy(t, be, mode, routes=[{"name": "all", "upstream": "app", "protocols": ["*"]}])
    req, e2e = ws_request(lines=[b"Connection: Upgrade", b"Upgrade: foo/1.1", b"Accept: */*"], target="/foo")
    c = px.connect()
    c.send(req + b"foo-early")
    eq(read_101(c), b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo/1.1\r\n"
                    b"Via: 1.1 switchyard\r\n\r\n", "relayed 101")
    eq(client_recv_exact(c, 9), b"foo-early", "echo of the early bytes")
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    check_forwarded_head(be.tuns[0].head, b"GET /foo HTTP/1.1", e2e, upgrade_tail(b"foo/1.1"))
    check_tunnel_line(px, mode, "client", "client EOF", up=9, down=9)


# ==========================================================================
# checking the 101


def _bad_101_table():
    k_other = ws_key()
    return [
        # name, request kwargs, plain request?, answer(key) -> bytes, reason regex
        ("unrequested 101", {}, True, lambda k: resp_101(k_other), r"^unrequested 101$"),
        ("101 without Upgrade", {}, False, lambda k: resp_101(k, upgrade=None), r"without Upgrade"),
        ("wrong token", {}, False, lambda k: resp_101(k, upgrade=b"foo"), r"did not offer"),
        ("h2c token", {}, False, lambda k: resp_101(k, upgrade=b"h2c"), r"did not offer"),
        ("bad Accept", {}, False, lambda k: resp_101(k_other), r"^bad Sec-WebSocket-Accept$"),
        ("missing Accept", {}, False, lambda k: resp_101(k, accept=False), r"^bad Sec-WebSocket-Accept$"),
        ("Accept of the key without the GUID", {}, False,
         lambda k: resp_101(k, accept=__import__("base64").b64encode(__import__("hashlib").sha1(k.encode()).digest()).decode()),
         r"^bad Sec-WebSocket-Accept$"),
        ("subprotocol not offered", {"extra": [("Sec-WebSocket-Protocol", "chat, superchat.v2")]}, False,
         lambda k: resp_101(k, extra=[b"Sec-WebSocket-Protocol: superchat"]), r"subprotocol"),
        ("subprotocol when none offered", {}, False,
         lambda k: resp_101(k, extra=[b"Sec-WebSocket-Protocol: chat"]), r"subprotocol"),
    ]


def _bad_101(t, name, reqkw, plain, answer, reason_rx):
    res = {}

    def after(tun):
        try:
            tun.recv_to_eof(5)
        finally:
            res["eof"] = tun.eof

    def ans(head):
        return answer(header_value(head, "Sec-WebSocket-Key") or "")

    be = UpgradeBackend(t, answer=ans, after=after, early=b"TUNNEL-BYTES-FROM-BACKEND")
    px = t.proxy(be)
    base = fd_kinds(px.pid)
    if plain:
        req = b"GET /ws HTTP/1.1\r\nHost: test.example\r\n\r\n"
    else:
        req, _ = ws_request(**reqkw)
    c = px.connect()
    c.send(req + b"CLIENT-BYTES-AFTER-HEAD")
    body = expect_proxy_error(c, 502)
    if not re.search(reason_rx, body):
        raise AssertionError("%s: 502 reason %r does not match /%s/" % (name, body, reason_rx))
    wait_until(lambda: "eof" in res, 6, what="backend handler done")
    eq(res["eof"], True, "%s: backend connection closed by the proxy" % name)
    eq(bytes(be.tuns[0].got), b"", "%s: client bytes after the head reached the backend" % name)
    error_log_line(px, "warn", 502, body)
    px.wait_access(1, lambda a: a.get("status") == 502 and a.get("reason") == body)
    eq(len(tunnel_lines(px)), 0, "%s: tunnel lines" % name)
    check_fds_back(px, base, 0)


for _i, _row in enumerate(_bad_101_table()):
    register("bad_101.%s" % re.sub(r"\W+", "_", _row[0]).strip("_"),
             (lambda row: (lambda t: _bad_101(t, *row)))(_row))


# ==========================================================================
# a non-101 answer to an upgrade request


NON_101 = [
    ("200", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nplain\n",
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n"
     b"Via: 1.1 switchyard\r\n\r\nplain\n"),
    ("400", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope",
     b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\nConnection: close\r\nVia: 1.1 switchyard\r\n\r\nnope"),
    ("302", b"HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n",
     b"HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\nConnection: close\r\n"
     b"Via: 1.1 switchyard\r\n\r\n"),
    ("200 chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
     b"Via: 1.1 switchyard\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
]

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test.example\r\n\r\n"


def _non_101(t, name, answer, relayed):
    res = {}

    def after(tun):
        try:
            tun.recv_to_eof(5)
        finally:
            res["eof"] = tun.eof

    # hold 300 ms before answering, so the client's second send arrives first
    be = UpgradeBackend(t, answer=lambda head: answer, after=after, hold=0.3)
    px = t.proxy(be)
    base = fd_kinds(px.pid)
    req, e2e = ws_request()
    c = px.connect()
    c.send(req + SMUGGLED)
    time.sleep(0.1)
    c.send(SMUGGLED.replace(b"/smuggled", b"/smuggled-2"))
    data = c.read_until_close(5)
    if name == "200 chunked":
        # Connection/Transfer-Encoding order is the core's business; compare as a set
        head, _, body = data.partition(b"\r\n\r\n")
        whead, _, wbody = relayed.partition(b"\r\n\r\n")
        first, _, lines = split_head(head)
        wfirst, _, wlines = split_head(whead)
        eq((first, sorted(lines), body), (wfirst, sorted(wlines), wbody), "relayed %s" % name)
        eq(lines[-1], VIA, "Via last")
    else:
        eq(data, relayed, "relayed %s then close" % name)
    wait_until(lambda: "eof" in res, 6, what="backend handler done")
    eq(res["eof"], True, "backend connection closed")
    eq(bytes(be.tuns[0].got), b"", "bytes after the upgrade request reached the backend")
    eq(be.pre_answer, [b""], "bytes after the upgrade request reached the backend before the answer")
    time.sleep(0.2)
    eq(be.connections, 1, "backend connections (a smuggled request was forwarded)")
    check_forwarded_head(be.tuns[0].head, b"GET /ws HTTP/1.1", e2e, upgrade_tail())
    status = int(name.split()[0])
    eq([a.get("status") for a in px.access_lines()], [status], "access-log statuses")
    eq(len(tunnel_lines(px)), 0, "tunnel lines")
    c.close()
    check_fds_back(px, base, 0)


for _row in NON_101:
    register("non_101.%s" % _row[0].replace(" ", "_"), (lambda row: (lambda t: _non_101(t, *row)))(_row))
