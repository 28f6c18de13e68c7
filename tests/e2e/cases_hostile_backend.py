"""Hostile backends (issue 16): a raw backend sends each answer below to one
request, and each case asserts

- the exact client-visible outcome: the proxy's own error (status line,
  fields, one-line reason) and a close; or the exact bytes relayed and then
  either a close or a connection that stays usable;
- the proxy's log lines: `warn s=N <status>: <reason>` or `warn s=N <cut
  reason>` in the error log, and the access-log line (status, reason);
- that neither side's keep-alive connection outlives an ambiguous exchange:
  the backend connection that answered is closed by the proxy (the backend
  sees EOF), and a client connection left open gets its next answer from a
  fresh backend connection (never from bytes the first backend sent past its
  response).

Every answer is sent in one send() right after the request head arrived,
unless the row says otherwise. The genuine answer of any later backend
connection is FRESH.

Status codes are 100..599 only (a code below 100 taken for an interim
response would give the client two answers to one request); a backend that
stops reading the request is cut at timeouts.send, one that stalls in the
body at timeouts.response; interim responses obey the client's
backpressure.
"""

import re
import socket
import select
import threading
import time

from harness import check_error_response, eq, register, wait_until
from wslib import read_head, relayed_101, resp_101, ws_request

VIA = b"Via: 1.1 switchyard"
FRESH = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfresh\n"
FRESH_RELAYED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n" + VIA + b"\r\n\r\nfresh\n"
GET = b"GET /hostile HTTP/1.1\r\nHost: hb.test\r\n\r\n"
HEAD = b"HEAD /hostile HTTP/1.1\r\nHost: hb.test\r\n\r\n"
GET10 = b"GET /hostile HTTP/1.0\r\nHost: hb.test\r\n\r\n"
SECOND = b"GET /second HTTP/1.1\r\nHost: hb.test\r\n\r\n"
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_REQ = ws_request(WS_KEY, target="/ws", host="hb.test")[0]
CONTINUE_RELAYED = b"HTTP/1.1 100 Continue\r\n" + VIA + b"\r\n\r\n"


def relayed(first, lines=(), body=b"", via=VIA, chunked=False, close=False):
    """What the client gets for a backend head: the status line, the
    end-to-end fields byte-exact, then the proxy's own fields in the order
    the proxy writes them (Transfer-Encoding, Connection, Via)."""
    out = first + b"\r\n" + b"".join(l + b"\r\n" for l in lines)
    if chunked:
        out += b"Transfer-Encoding: chunked\r\n"
    if close:
        out += b"Connection: close\r\n"
    return out + via + b"\r\n\r\n" + body


class HostileBackend:
    """A raw backend: connection 0 gets `answer` (bytes, or callable(rec,
    head) that sends itself) right after the request head; then, with
    after="keep", it answers FRESH to any further request on that connection
    (a proxy that reuses it is caught by the connection index) until EOF;
    with after="close" it closes. Later connections answer FRESH to every
    request until EOF. .heads: [(connection index, request head)]."""

    def __init__(self, t, answer, after="keep"):
        self.answer, self.after = answer, after
        self.heads = []
        self.recs = {}
        self.raw = t.raw_backend(self._handle)
        self.port = self.raw.port

    def _serve(self, rec, start):
        pos = start
        while True:
            i = rec.data.find(b"\r\n\r\n", pos)
            if i >= 0:
                self.heads.append((rec.index, bytes(rec.data[pos:i + 4])))
                pos = i + 4
                rec.send(FRESH)
                continue
            try:
                if not rec.recv(timeout=30):
                    return
            except socket.timeout:
                return

    def _handle(self, rec):
        self.recs[rec.index] = rec
        head, _ = read_head(rec)
        self.heads.append((rec.index, head))
        if rec.index > 0:
            rec.send(FRESH)
            self._serve(rec, len(head))
            return
        if callable(self.answer):
            self.answer(rec, head)
        else:
            rec.send(self.answer)
        if self.after == "close":
            return
        self._serve(rec, len(head))

    def wait_closed_by_proxy(self, index=0, timeout=5):
        wait_until(lambda: index in self.recs and self.recs[index].eof, timeout,
                   what="the proxy closing backend connection %d" % index)


def error_line(px, code, reason, level="warn"):
    return px.wait_log(r"^\S+ %s s=\d+ %d: %s$" % (level, code, re.escape(reason)))


def cut_line(px, reason):
    return px.wait_log(r"^\S+ warn s=\d+ %s$" % re.escape(reason))


def access_of_first(px):
    a = [x for x in px.wait_access(1) if x.get("event") is None]
    return a[0]


# ---------------------------------------------------------------------------
# outcomes


class Error:
    """The proxy answers `code` with `reason` (after relaying `prefix`, e.g.
    interim responses), closes the client and the backend connection."""

    pooled_ok = False

    def __init__(self, code, reason, prefix=b"", repeated=False):
        self.code, self.reason, self.prefix, self.repeated = code, reason, prefix, repeated

    def check(self, t, px, be, c):
        data = c.read_until_close(10)
        t.note("client got %r" % data[:600])
        if not data.startswith(self.prefix):
            raise AssertionError("relayed before the error: %r, want %r" % (data[:300], self.prefix[:300]))
        n = 1 if self.prefix else 0
        data = data[len(self.prefix):]
        while self.repeated and data.startswith(self.prefix):
            data = data[len(self.prefix):]
            n += 1
        t.note("%d interim response(s) relayed before the error" % n)
        body = check_error_response(data, self.code)
        eq(body, self.reason, "error reason")
        error_line(px, self.code, self.reason)
        a = access_of_first(px)
        eq((a["status"], a.get("reason")), (self.code, self.reason), "access line (status, reason)")


class Relay:
    """The client gets exactly `data`. then="close": and then EOF, access
    line with `reason`; then="open": the client connection stays usable and
    its next request is answered by a fresh backend connection;
    then="any": not ambiguous, the next request may reuse the connection."""

    def __init__(self, data, then="open", status=200, reason=None, method="GET", pooled_ok=None):
        self.data, self.then, self.status, self.reason, self.method = data, then, status, reason, method
        # the backend connection may go back to the pool: the exchange was not ambiguous
        self.pooled_ok = then == "any" if pooled_ok is None else pooled_ok

    def check(self, t, px, be, c):
        if self.then == "close":
            got = c.read_until_close(10)
            t.note("client got %r" % got[:600])
            eq(got, self.data, "bytes relayed before the close")
        else:
            got = bytearray()
            try:
                c.rd.read_exact(len(self.data), time.monotonic() + 10, got.extend)
            except Exception as e:
                raise AssertionError("want %d bytes %r, got %r (%s)" % (len(self.data), self.data[:300],
                                                                         bytes(got[:300]) + bytes(c.rd.buf[:300]), e))
            eq(bytes(got), self.data, "bytes relayed")
        if self.reason:
            cut_line(px, self.reason)
        a = access_of_first(px)
        eq((a["status"], a.get("reason")), (self.status, self.reason), "access line (status, reason)")
        if self.then == "close":
            return
        if self.then == "open":
            # everything the backend said past its response is thrown away
            # with its connection before the client's next request goes out
            be.wait_closed_by_proxy(0)
        c.send(SECOND)
        rest = bytearray()
        c.rd.read_exact(len(FRESH_RELAYED), time.monotonic() + 10, rest.extend)
        eq(bytes(rest), FRESH_RELAYED, "answer to the next request on the client connection")
        if self.then == "open":
            eq([(i, h.split(b"\r\n")[0]) for i, h in be.heads],
               [(0, b"GET /hostile HTTP/1.1" if self.method == "GET" else b"HEAD /hostile HTTP/1.1"),
                (1, b"GET /second HTTP/1.1")], "backend connection of each request")


class Tunnel:
    """A valid 101: everything after it is tunnel data, relayed verbatim
    (`data` incl. the relayed 101), never parsed as HTTP."""

    pooled_ok = False

    def __init__(self, data):
        self.data = data

    def check(self, t, px, be, c):
        got = bytearray()
        c.rd.read_exact(len(self.data), time.monotonic() + 10, got.extend)
        eq(bytes(got), self.data, "101 and the tunnel bytes after it")
        c.sock.shutdown(socket.SHUT_WR)
        c.expect_closed(10)
        px.wait_access(3)
        tl = px.access_lines()
        kinds = [(a.get("event"), a.get("status"), a.get("cause")) for a in tl]
        eq(kinds, [(None, 101, None), ("open", None, None), ("tunnel", None, "client_eof")],
           "access lines (a 101, the tunnel open and its close; never a second response)")


# ---------------------------------------------------------------------------
# the table: name, request, answer, outcome[, options]


def _big_head(n):
    return b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * n + b"\r\nContent-Length: 2\r\n\r\nok"


def _flood(kind_lines, n):
    return b"".join(kind_lines for _ in range(n))


def _continue_forever(rec, head):
    """100 Continue every 0.1 s, never a final answer (until the proxy closes)."""
    while True:
        try:
            rec.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError:
            return
        time.sleep(0.1)
        if rec.eof:
            return


H200 = b"HTTP/1.1 200 OK"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_RELAYED = relayed(H200, chunked=True)

TABLE = [
    # -- 101s
    ("unrequested_101_then_http", GET,
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + EVIL,
     Error(502, "unrequested 101")),
    ("unrequested_101_h2c", GET,
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
     b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", Error(502, "unrequested 101")),
    ("unrequested_101_after_100", GET,
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     b"Connection: Upgrade\r\n\r\n", Error(502, "unrequested 101", CONTINUE_RELAYED)),
    ("ws_101_then_http_is_tunnel_data", WS_REQ, resp_101(WS_KEY) + EVIL,
     Tunnel(relayed_101(WS_KEY) + EVIL)),
    ("ws_101_with_content_length", WS_REQ,
     resp_101(WS_KEY, extra=[b"Content-Length: 5"]) + b"hello", Error(502, "101 with a body")),
    ("ws_101_with_transfer_encoding", WS_REQ,
     resp_101(WS_KEY, extra=[b"Transfer-Encoding: chunked"]) + b"0\r\n\r\n", Error(502, "101 with a body")),
    # -- more bytes than the response: never a second response, never a reused connection
    ("two_responses_one_send", GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + EVIL,
     Relay(relayed(H200, [b"Content-Length: 2"], b"ok"))),
    ("two_responses_second_later", GET,
     lambda rec, head: (rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), time.sleep(0.3),
                        rec.send(EVIL)),
     Relay(relayed(H200, [b"Content-Length: 2"], b"ok"))),
    ("content_length_longer_than_announced", GET,
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES PAST THE BODY",
     Relay(relayed(H200, [b"Content-Length: 5"], b"hello"))),
    ("chunked_then_a_second_response", GET, CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n" + EVIL,
     Relay(CHUNKED_RELAYED + b"5\r\nhello\r\n0\r\n\r\n")),
    ("head_answered_with_a_body", HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + EVIL,
     Relay(relayed(H200, [b"Content-Length: 5"]), method="HEAD")),
    ("204_with_a_body", GET, b"HTTP/1.1 204 No Content\r\n\r\n" + EVIL,
     Relay(relayed(b"HTTP/1.1 204 No Content"), status=204)),
    ("304_with_a_body", GET, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + EVIL,
     Relay(relayed(b"HTTP/1.1 304 Not Modified", [b"Content-Length: 5"]), status=304)),
    ("http10_status_line_not_kept_alive", GET, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
     Relay(relayed(H200, [b"Content-Length: 2"], b"ok", via=b"Via: 1.0 switchyard"))),
    ("http10_close_delimited_rechunked", GET,
     lambda rec, head: (rec.send(b"HTTP/1.0 200 OK\r\n\r\nclose-delimited"), rec.sock.shutdown(socket.SHUT_WR)),
     Relay(relayed(H200, chunked=True, via=b"Via: 1.0 switchyard") + b"f\r\nclose-delimited\r\n0\r\n\r\n")),
    # -- framing the proxy cannot trust: 502 before a byte reaches the client
    ("content_length_and_chunked", GET,
     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + EVIL,
     Error(502, "both Content-Length and Transfer-Encoding")),
    ("chunked_and_content_length", GET,
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + EVIL,
     Error(502, "both Content-Length and Transfer-Encoding")),
    ("content_length_twice_differing", GET,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nokevil!", Error(502, "repeated Content-Length")),
    ("content_length_twice_same", GET,
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", Error(502, "repeated Content-Length")),
    ("content_length_list", GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
     Error(502, "invalid Content-Length")),
    ("content_length_negative", GET, b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
     Error(502, "invalid Content-Length")),
    ("content_length_plus", GET, b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
     Error(502, "invalid Content-Length")),
    ("transfer_encoding_gzip_chunked", GET,
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Error(502, "unsupported Transfer-Encoding")),
    ("transfer_encoding_identity", GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc",
     Error(502, "unsupported Transfer-Encoding")),
    ("transfer_encoding_two_lines", GET,
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     Error(502, "unsupported Transfer-Encoding")),
    ("transfer_encoding_in_http10", GET, b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     Error(502, "Transfer-Encoding in HTTP/1.0")),
    ("transfer_encoding_obs_fold", GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
     Error(502, "obs-fold or leading whitespace in field line")),
    # -- response splitting inside the head
    ("field_value_bare_cr", GET, b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "bare CR or LF in head")),
    ("field_value_bare_lf", GET, b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "bare CR or LF in head")),
    ("field_value_crlf_splits_a_second_response", GET,
     b"HTTP/1.1 200 OK\r\nX-A: a\r\nContent-Length: 0\r\n\r\n" + EVIL,
     Relay(relayed(H200, [b"X-A: a", b"Content-Length: 0"]))),
    ("field_value_nul", GET, b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "control character in field value")),
    ("field_obs_fold", GET, b"HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "obs-fold or leading whitespace in field line")),
    ("field_space_before_colon", GET, b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
     Error(502, "whitespace between field name and colon")),
    ("head_with_bare_lf_lines", GET, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
     Error(502, "bare CR or LF in head")),
    ("reason_phrase_bare_cr", GET, b"HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "bare CR or LF in head")),
    ("reason_phrase_nul", GET, b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok",
     Error(502, "malformed status line")),
    # -- bad chunking: the head went out, so the client gets what was relayed and then a close
    ("chunk_size_not_hex", GET, CHUNKED_HEAD + b"zz\r\nhello\r\n0\r\n\r\n",
     Relay(CHUNKED_RELAYED, then="close", reason="malformed response body")),
    ("chunk_size_overflow", GET, CHUNKED_HEAD + b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
     Relay(CHUNKED_RELAYED, then="close", reason="malformed response body")),
    ("chunk_data_without_crlf", GET, CHUNKED_HEAD + b"5\r\nhelloXX0\r\n\r\n" + EVIL,
     Relay(CHUNKED_RELAYED + b"5\r\nhello\r\n", then="close", reason="malformed response body")),
    ("chunk_size_bare_lf", GET, CHUNKED_HEAD + b"5\nhello\r\n0\r\n\r\n",
     Relay(CHUNKED_RELAYED, then="close", reason="malformed response body")),
    ("chunk_trailer_obs_fold", GET, CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" + EVIL,
     Relay(CHUNKED_RELAYED + b"5\r\nhello\r\n", then="close", reason="malformed response body")),
    ("chunked_eof_before_last_chunk", GET,
     lambda rec, head: (rec.send(CHUNKED_HEAD + b"5\r\nhello\r\n"), time.sleep(0.3), rec.sock.shutdown(socket.SHUT_WR)),
     Relay(CHUNKED_RELAYED + b"5\r\nhello\r\n", then="close",
           reason="backend closed in the middle of the response body")),
    # -- Content-Length mismatch, shorter: the client never gets a complete-looking body
    ("content_length_shorter_then_close", GET,
     lambda rec, head: (rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"s" * 50), time.sleep(0.3),
                        rec.sock.shutdown(socket.SHUT_WR)),
     Relay(relayed(H200, [b"Content-Length: 100"], b"s" * 50), then="close",
           reason="backend closed in the middle of the response body")),
    # -- interim responses
    ("interim_flood_then_final", GET,
     _flood(b"HTTP/1.1 100 Continue\r\n\r\n", 1000) + _flood(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 1000)
     + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
     Relay(CONTINUE_RELAYED * 1000 + relayed(b"HTTP/1.1 103 Early Hints", [b"Link: </a>"]) * 1000
           + relayed(H200, [b"Content-Length: 2"], b"ok"), then="any")),
    ("interim_flood_to_http10_client_dropped", GET10,
     _flood(b"HTTP/1.1 100 Continue\r\n\r\n", 1000) + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
     Relay(relayed(H200, [b"Content-Length: 2"], b"ok", close=True), then="close", pooled_ok=True)),
    ("interim_with_body_bytes", GET, b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello\r\n\r\n",
     Error(502, "malformed status line", relayed(b"HTTP/1.1 100 Continue", [b"Content-Length: 5"]))),
    ("continue_loop_cut_at_response_timeout", GET, _continue_forever,
     Error(504, "no response head from the backend in time", CONTINUE_RELAYED, repeated=True),
     {"timeouts": {"response": "1s"}}),
    # -- heads beyond the limits
    ("head_larger_than_header_bytes", GET, _big_head(17000), Error(502, "header section too large")),
    ("head_larger_than_header_bytes_after_100", GET, b"HTTP/1.1 100 Continue\r\n\r\n" + _big_head(17000),
     Error(502, "header section too large", CONTINUE_RELAYED)),
    ("too_many_fields", GET,
     b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-F%03d: v\r\n" % i for i in range(101)) + b"Content-Length: 2\r\n\r\nok",
     Error(502, "too many header fields")),
    ("head_never_finished", GET, b"HTTP/1.1 200 OK\r\nX-A: 1\r\n",
     Error(504, "no response head from the backend in time"), {"timeouts": {"response": "1s"}}),
    # -- status lines
    ("status_000", GET, b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok" + EVIL,
     Error(502, "malformed status line")),
    ("status_099", GET, b"HTTP/1.1 099 Below\r\n\r\n" + EVIL, Error(502, "malformed status line")),
    # RFC 9110 §15: values outside 100..599 are invalid
    ("status_600", GET, b"HTTP/1.1 600 Beyond\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_1000", GET, b"HTTP/1.1 1000 Four\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_two_digits", GET, b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_line_http20", GET, b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_line_http2", GET, b"HTTP/2 200\r\ncontent-length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_line_http12", GET, b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_line_lowercase", GET, b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("status_without_space", GET, b"HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\nok", Error(502, "malformed status line")),
    ("h2_preface_instead_of_a_response", GET, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Error(502, "malformed status line")),
    ("closed_without_a_byte", GET, lambda rec, head: rec.sock.shutdown(socket.SHUT_WR),
     Error(502, "backend closed before a complete response head")),
]


def _run(t, request, answer, outcome, opts=None):
    opts = dict(opts or {})
    after = opts.pop("after", "keep")
    be = HostileBackend(t, answer, after)
    px = t.proxy(be, **opts)
    c = px.connect()
    c.send(request)
    outcome.check(t, px, be, c)
    eq(be.heads[0][0], 0, "backend connection of the request")
    if not outcome.pooled_ok:
        be.wait_closed_by_proxy(0)
        eq([i for i, _ in be.heads].count(0), 1, "requests on the first backend connection")
    eq(px.alive(), True, "proxy alive")


for _row in TABLE:
    register(_row[0], (lambda row: (lambda t: _run(t, *row[1:])))(_row))


# ---------------------------------------------------------------------------
# stalls and floods: each needs its own clock or memory watch


def _rss_peak_during(px, fn):
    """Run fn(); return (rss before kB, peak kB while it ran)."""
    stop = threading.Event()
    peak = [px.rss_kb()]
    base = peak[0]

    def watch():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], px.rss_kb())
            except OSError:
                return
            time.sleep(0.02)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
    return base, peak[0]


def head_then_stall(t):
    """The backend sends a head and part of the body, then neither sends nor
    closes: after timeouts.response (1 s) without a body byte the proxy
    says so, closes the backend connection and, after the part it relayed,
    the client's (no completion)."""
    def answer(rec, head):
        rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"p" * 10)
        rec.read_all(timeout=30)  # nothing more to say: wait for the proxy's close

    be = HostileBackend(t, answer, after="close")
    px = t.proxy(be, timeouts={"response": "1s", "send": "1s"})
    c = px.connect()
    c.send(GET)
    want = relayed(H200, [b"Content-Length: 100"], b"p" * 10)
    got = bytearray()
    c.rd.read_exact(len(want), time.monotonic() + 10, got.extend)
    eq(bytes(got), want, "head and the part the backend sent")
    eq(c.read_until_close(15), b"", "bytes after the stalled part")
    px.wait_log(r"^\S+ warn s=1 127\.0\.0\.1:%d stalled in the response body$" % be.port)
    cut_line(px, "backend stalled")
    a = access_of_first(px)
    eq((a["status"], a.get("reason")), (200, "backend stalled"), "access line (status, reason)")
    be.wait_closed_by_proxy(0)


register("head_then_stall_is_cut", head_then_stall, timeout=60)


def never_reads_upload(t):
    """A POST of 50 MB to a backend that reads the head and then nothing,
    and never answers. Memory stays bounded (backpressure stops the client),
    and after timeouts.send (1 s) without the backend taking a byte the
    client gets a 504 and both connections are closed."""
    release = threading.Event()

    def answer(rec, head):
        release.wait(40)  # read nothing until the test has its outcome
        rec.read_all(timeout=30)

    be = HostileBackend(t, answer, after="close")
    px = t.proxy(be, timeouts={"response": "1s", "send": "1s"})
    size = 50 << 20
    c = px.connect()
    c.send(b"POST /upload HTTP/1.1\r\nHost: hb.test\r\nContent-Length: %d\r\n\r\n" % size)
    sent = [0]
    chunk = b"u" * 65536

    answered = threading.Event()

    # a client that stops uploading once the answer comes: what it sent by then is
    # what backpressure let through (afterwards the proxy drains and discards the
    # rest for up to 2 s so that the 504 is not lost to a reset, as fast as the
    # client sends)
    def upload():
        c.sock.settimeout(60)
        try:
            while sent[0] < size and not answered.is_set():
                c.sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    up = threading.Thread(target=upload, daemon=True)
    result = {}

    def wait_end():
        select.select([c.sock], [], [], 15)  # the answer's first bytes, not consumed
        answered.set()
        try:
            result["data"] = c.read_until_close(15)
        except AssertionError as e:
            result["error"] = str(e)

    up.start()
    base, peak = _rss_peak_during(px, wait_end)
    release.set()
    t.note("client sent %d bytes; proxy RSS %d kB -> peak %d kB; outcome %r" % (sent[0], base, peak, result))
    assert sent[0] < 32 << 20, "no backpressure: the client sent %d bytes to a backend that reads nothing" % sent[0]
    assert peak - base < 16 * 1024, "proxy RSS grew by %d kB" % (peak - base)
    if "error" in result:
        raise AssertionError("exchange not ended 15 s after a stalled upload (timeouts.send = 1s): %s"
                             % result["error"])
    reason = "backend did not read the request in time"
    eq(check_error_response(result["data"], 504), reason, "504 reason")
    px.wait_log(r"^\S+ warn s=1 127\.0\.0\.1:%d did not read the request in time$" % be.port)
    error_line(px, 504, reason)
    a = access_of_first(px)
    eq((a["status"], a.get("reason")), (504, reason), "access line (status, reason)")
    be.wait_closed_by_proxy(0)


register("never_reads_upload_is_cut", never_reads_upload, timeout=90)


def interim_flood_unread(t):
    """The backend floods 100 Continue (about 50 MB) at a client that does
    not read. Interim heads are subject to the same backpressure as a body
    (the client's output above its high-water mark stops reading from the
    backend): the proxy's RSS stays bounded and the backend stalls."""
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * 10000
    sent = [0]

    def answer(rec, head):
        try:
            for _ in range(200):
                rec.send(flood)
                sent[0] += len(flood)
        except OSError:
            pass

    be = HostileBackend(t, answer, after="close")
    be.raw.expect_errors("the flood is cut")
    px = t.proxy(be, timeouts={"send": "5s"})
    c = px.connect(rcvbuf=4096)

    def run():
        c.send(GET)
        time.sleep(4)

    base, peak = _rss_peak_during(px, run)
    t.note("backend sent %d bytes; proxy RSS %d kB -> peak %d kB" % (sent[0], base, peak))
    c.close()
    assert sent[0] < 32 * len(flood), "no backpressure: the backend sent %d bytes of interim heads" % sent[0]
    assert peak - base < 16 * 1024, ("proxy RSS grew by %d kB while a client read none of %d bytes of interim "
                                     "responses" % (peak - base, sent[0]))


register("interim_flood_to_a_client_that_does_not_read_bounded", interim_flood_unread, timeout=60)
