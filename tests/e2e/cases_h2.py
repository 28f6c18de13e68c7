"""HTTP/2 front end (issue 17; behaviour spec: notes/h2spec.md).

Real binary, real HTTP/1.1 backends (harness.HttpBackend, wslib.UpgradeBackend,
term_lib.StreamBackend, ws_echo_server.py), real clients: h2lib.H2Client on
Python's h2 package for conformant traffic, h2lib.RawH2 (frames by hand) for
GOAWAY handling, malformed requests and the attacks. Every case runs over TLS
with ALPN h2 ("tls") or cleartext prior knowledge ("h2c") or both
(h2.<mode>.<name>)."""

import base64
import functools
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import Reply, blackhole_port, blob, eq, register, sha256, wait_listen, wait_until
from h2lib import (CANCEL, CONTINUATION, DATA, ENHANCE_YOUR_CALM, F_END_HEADERS, F_END_STREAM, HEADERS,
                   HOP_BY_HOP, NO_ERROR, PRIORITY, PROTOCOL_ERROR, S_ENABLE_CONNECT_PROTOCOL,
                   S_INITIAL_WINDOW_SIZE, S_MAX_CONCURRENT_STREAMS, S_MAX_HEADER_LIST_SIZE, SETTINGS, H2Client,
                   RawH2, err_name, frame, h2_config, open_socket, ping, rst_stream, settings_frame, tls_context,
                   window_update, ws_frame, ws_parse)
from tls_lib import PKI
from wslib import UpgradeBackend, echo_until_eof, header_value

HERE = os.path.dirname(os.path.abspath(__file__))
KiB = 1 << 10
MiB = 1 << 20
MODES = ("tls", "h2c")
OP_TEXT, OP_BINARY, OP_CLOSE = 1, 2, 8
# ASan (if the binary has it) keeps freed memory in quarantine (256 MiB by default), which an RSS
# bound would measure: every case that bounds the proxy's RSS starts it with a small one
ASAN_LOW_QUARANTINE = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1").lstrip(":")}


def mcase(name, timeout=30, modes=MODES):
    """Register fn(t, mode) as h2.<mode>.<name> for each mode."""

    def deco(fn):
        for m in modes:
            register("%s.%s" % (m, name), functools.partial(fn, mode=m), timeout)
        return fn

    return deco


def case1(name, timeout=30):
    def deco(fn):
        register(name, fn, timeout)
        return fn

    return deco


# ---------------------------------------------------------------------------
# environment


class Env:
    """A proxy with an h2 listener (mode "tls" or "h2c") and ways to connect."""

    def __init__(self, t, mode, backend=None, upstreams=None, routes=None, h2=None, env=None, **kw):
        self.t, self.mode = t, mode
        certs = None
        self.ctx = None
        if mode == "tls":
            pki = PKI(t.dir)
            cert, key = pki.leaf("h2", "h2.test", ["DNS:h2.test", "DNS:only.test", "IP:127.0.0.1"])
            certs = (pki.path(cert), pki.path(key))
            self.ca = pki.path(pki.ca)
            self.ctx = tls_context(self.ca)
        if upstreams is None:
            upstreams = {"app": [backend if backend is not None else t.dead_port()]}
        self.text = h2_config(upstreams, mode, certs=certs, h2=h2, routes=routes, **kw)
        self.px = t.proxy(config_text=self.text, env=env)
        self.scheme = "https" if mode == "tls" else "http"

    def sock(self, **kw):
        return open_socket(self.px.port, self.ctx, **kw)

    def client(self, rcvbuf=None, **kw):
        c = H2Client(self.sock(rcvbuf=rcvbuf), **kw)
        self.t.clients.append(c)
        return c

    def raw(self, rcvbuf=None, **kw):
        c = RawH2(self.sock(rcvbuf=rcvbuf), **kw)
        self.t.clients.append(c)
        return c

    def get_ok(self, path="/after", what="a request on a new connection", want=b"ok\n"):
        """A fresh connection is served (status 200, body want)."""
        c = self.client()
        sid = c.request("GET", path, scheme=self.scheme)
        st = c.response(sid, 20)
        eq((st.status, st.body, st.reset), (200, want, None), what)
        c.close()
        return st


def check_head(st, what="response"):
    """Response head: :status first, names lowercase, no hop-by-hop field."""
    names = st.names()
    if not names or names[0] != b":status":
        raise AssertionError("%s: :status is not the first field: %r" % (what, st.headers))
    for n in names:
        if n != n.lower():
            raise AssertionError("%s: header name not lowercase: %r" % (what, n))
        if n in HOP_BY_HOP:
            raise AssertionError("%s: hop-by-hop field %r in an h2 response: %r" % (what, n, st.headers))
        if n.startswith(b":") and n != b":status":
            raise AssertionError("%s: pseudo-header %r in a response" % (what, n))


def access_line(px, sid, target=None, timeout=5):
    """The access-log line of h2 stream sid (and target)."""
    def pred(a):
        return a.get("h2_stream") == sid and (target is None or a.get("target") == target) and "event" not in a
    return px.wait_access(1, pred, timeout)[-1]


def rss_growth_check(px, base_kb, bound_bytes, what):
    now = px.rss_kb()
    if (now - base_kb) * 1024 > bound_bytes:
        raise AssertionError("%s: proxy RSS grew from %d KiB to %d KiB (bound: %d KiB more)"
                             % (what, base_kb, now, bound_bytes // 1024))
    return now


class PeakRSS:
    """Samples the proxy's VmRSS in a thread while a block runs; .peak in KiB."""

    def __init__(self, px):
        self.px = px
        self.peak = px.rss_kb()
        self.base = self.peak
        self.stop = threading.Event()

    def __enter__(self):
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.px.rss_kb())
            except OSError:
                return
            self.stop.wait(0.01)

    def __exit__(self, *a):
        self.stop.set()
        self.th.join(5)

    def check(self, bound_bytes, what):
        if (self.peak - self.base) * 1024 > bound_bytes:
            raise AssertionError("%s: proxy RSS peaked at %d KiB from %d KiB (growth bound %d KiB)"
                                 % (what, self.peak, self.base, bound_bytes // 1024))


def gated(first, rest, gate, timeout=30):
    """A response body iterable: `first`, then (once gate is set) `rest`."""
    def gen():
        yield first
        if not gate.wait(timeout):
            raise AssertionError("backend gate never opened")
        yield rest
    return gen()


# ---------------------------------------------------------------------------
# request / response bodies of each size


SIZES = [("0", 0), ("1", 1), ("16383", 16383), ("16384", 16384), ("1m", MiB), ("8m", 8 * MiB)]


def _bodies(t, mode, n):
    down_get = blob(n, 11)

    def script(req):
        if req.method == "GET":
            return Reply(200, down_get, headers=[("X-Kind", "get")])
        return Reply(200, lambda r: blob(n, 12), framing="chunked", headers=[("X-Kind", "post")])

    be = t.http_backend(script)
    e = Env(t, mode, be)
    c = e.client()
    tmo = 60
    # GET, Content-Length response
    sid = c.request("GET", "/get/%d" % n, scheme=e.scheme)
    st = c.response(sid, tmo)
    eq((st.status, st.ended, st.reset), (200, True, None), "GET: status / END_STREAM / reset")
    check_head(st, "GET")
    eq(st.data_len, n, "GET: body length")
    eq(st.sha256, sha256(down_get), "GET: body sha256")
    eq(st.get("content-length"), str(n).encode(), "GET: content-length")
    eq(st.get("x-kind"), b"get", "GET: x-kind from the backend")
    # POST with content-length, chunked response
    up = blob(n, 13)
    sid2 = c.request("POST", "/post-cl/%d" % n, body=up, scheme=e.scheme)
    st2 = c.response(sid2, tmo)
    eq((st2.status, st2.ended, st2.reset), (200, True, None), "POST cl: status / END_STREAM / reset")
    check_head(st2, "POST cl")
    eq((st2.data_len, st2.sha256), (n, sha256(blob(n, 12))), "POST cl: response length / sha256")
    eq(st2.get("content-length"), None, "POST cl: content-length of a chunked response")
    # POST without content-length (unknown length)
    up3 = blob(n, 14)
    sid3 = c.request("POST", "/post-nocl/%d" % n, body=up3, content_length=False, scheme=e.scheme)
    st3 = c.response(sid3, tmo)
    eq((st3.status, st3.ended, st3.reset), (200, True, None), "POST no-cl: status / END_STREAM / reset")
    eq((st3.data_len, st3.sha256), (n, sha256(blob(n, 12))), "POST no-cl: response length / sha256")
    reqs = be.wait_requests(3)
    by = {r.target: r for r in reqs}
    g, p1, p2 = by["/get/%d" % n], by["/post-cl/%d" % n], by["/post-nocl/%d" % n]
    eq(g.request_line, b"GET /get/%d HTTP/1.1" % n, "backend request line")
    eq(g.get("Host"), "h2.test", "backend Host (from :authority)")
    eq(g.body_len, 0, "GET body at the backend")
    eq((p1.body_len, p1.sha256), (n, sha256(up)), "POST cl: body at the backend (length, sha256)")
    eq(p1.get("Content-Length"), str(n), "POST cl: Content-Length at the backend")
    eq((p2.body_len, p2.sha256), (n, sha256(up3)), "POST no-cl: body at the backend (length, sha256)")
    if p2.get("Content-Length") not in (None, str(n)) or (p2.get("Content-Length") is None
                                                          and (p2.get("Transfer-Encoding") or "").lower() != "chunked"):
        raise AssertionError("POST no-cl: framing at the backend: %r" % p2.head)
    for s, target, method in ((sid, "/get/%d" % n, "GET"), (sid2, "/post-cl/%d" % n, "POST"),
                              (sid3, "/post-nocl/%d" % n, "POST")):
        a = access_line(e.px, s, target)
        eq((a.get("method"), a.get("status"), a.get("route")), (method, 200, "all"), "access line of " + target)
    eq(sorted(a.get("h2_stream") for a in e.px.access_lines() if "h2_stream" in a), [1, 3, 5], "h2_stream values")


for _name, _n in SIZES:
    register("%s.body_%s" % ("tls", _name), lambda t, n=_n: _bodies(t, "tls", n), timeout=90)
    register("%s.body_%s" % ("h2c", _name), lambda t, n=_n: _bodies(t, "h2c", n), timeout=90)


@mcase("head")
def head(t, mode):
    be = t.http_backend(Reply(200, b"", headers=[("Content-Length", "1234"), ("X-H", "1")], framing="none"))
    e = Env(t, mode, be)
    c = e.client()
    sid = c.request("HEAD", "/h", scheme=e.scheme)
    st = c.response(sid)
    eq((st.status, st.ended, st.reset, st.data_len), (200, True, None, 0), "HEAD: status / end / reset / bytes")
    check_head(st, "HEAD")
    eq(st.get("content-length"), b"1234", "HEAD: content-length kept")
    eq(be.requests[0].request_line, b"HEAD /h HTTP/1.1", "backend request line")
    # the connection goes on
    be.script = Reply(200, b"ok\n")
    sid2 = c.request("GET", "/g", scheme=e.scheme)
    eq(c.response(sid2).body, b"ok\n", "GET after HEAD")
    eq(access_line(e.px, sid, "/h").get("method"), "HEAD", "access log method")


@mcase("no_route_404")
def no_route_404(t, mode):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be, routes=[{"name": "only", "host": "only.test", "upstream": "app"}])
    c = e.client()
    sid = c.request("GET", "/x", scheme=e.scheme, authority="h2.test")
    st = c.response(sid)
    eq((st.status, st.ended, st.reset), (404, True, None), "404: status / END_STREAM / reset")
    check_head(st, "404")
    eq(st.get("content-type"), b"text/plain", "404 content-type")
    eq(st.get("content-length"), str(st.data_len).encode(), "404 content-length")
    if not st.body.endswith(b"\n") or st.body.count(b"\n") != 1:
        raise AssertionError("404 body is not one line: %r" % st.body)
    a = access_line(e.px, sid, "/x")
    eq((a.get("status"), a.get("route")), (404, None), "404 access line")
    # the same connection then reaches the route
    sid2 = c.request("GET", "/y", scheme=e.scheme, authority="only.test")
    st2 = c.response(sid2)
    eq((st2.status, st2.body), (200, b"ok\n"), "routed request on the same connection")
    eq(len(be.requests), 1, "backend requests")
    eq(be.requests[0].get("Host"), "only.test", "Host at the backend")


@mcase("response_headers_clean")
def response_headers_clean(t, mode):
    be = t.http_backend(Reply(200, b"hello\n", framing="chunked", headers=[
        ("X-Mixed-Case", "Value"), ("Connection", "keep-alive, X-Nominated"), ("Keep-Alive", "timeout=5"),
        ("X-Nominated", "gone"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "foo"),
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Trailer", "X-T")], trailers=[b"X-T: 1"]))
    e = Env(t, mode, be)
    c = e.client()
    sid = c.request("GET", "/hdrs", scheme=e.scheme, headers=[("x-client", "1")])
    st = c.response(sid)
    eq((st.status, st.body, st.ended), (200, b"hello\n", True), "response")
    check_head(st)
    eq(st.get("x-mixed-case"), b"Value", "end-to-end field kept (value as sent)")
    eq(st.get("x-nominated"), None, "field nominated by Connection dropped")
    eq([v for k, v in st.headers if k == b"set-cookie"], [b"a=1", b"b=2"], "set-cookie fields")
    eq(st.trailers, None, "trailers dropped")
    r = be.requests[0]
    eq(r.get("x-client"), "1", "request field at the backend")
    a = access_line(e.px, sid, "/hdrs")
    eq((a.get("h2_stream"), a.get("status"), a.get("method")), (1, 200, "GET"), "access line")
    if mode == "tls":
        eq(a.get("tls") is not None, True, "tls field in the access line of an h2 TLS stream")


@mcase("settings_defaults")
def settings_defaults(t, mode):
    e = Env(t, mode, t.http_backend(Reply(200, b"ok\n")))
    c = e.raw()
    s = c.wait_settings()
    eq({k: s.get(k) for k in (S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_HEADER_LIST_SIZE,
                              S_ENABLE_CONNECT_PROTOCOL)},
       {S_MAX_CONCURRENT_STREAMS: 128, S_INITIAL_WINDOW_SIZE: 256 * KiB, S_MAX_HEADER_LIST_SIZE: 16 * KiB,
        S_ENABLE_CONNECT_PROTOCOL: 1}, "server SETTINGS (defaults)")
    sid = c.request("GET", "/s", scheme=e.scheme)
    c.response(sid)
    wu = [f.increment for f in c.frames_of(8, 0)]
    eq(sum(wu), 4 * 256 * KiB - 65535, "connection window opened to 4 x initial_window (WINDOW_UPDATEs %r)" % wu)


@case1("h2c.settings_configured")
def settings_configured(t):
    e = Env(t, "h2c", t.http_backend(Reply(200, b"ok\n")),
            h2={"max_concurrent_streams": 8, "initial_window": "64k", "max_header_list": "8k"})
    c = e.raw()
    s = c.wait_settings()
    eq((s.get(S_MAX_CONCURRENT_STREAMS), s.get(S_INITIAL_WINDOW_SIZE), s.get(S_MAX_HEADER_LIST_SIZE),
        s.get(S_ENABLE_CONNECT_PROTOCOL)), (8, 64 * KiB, 8 * KiB, 1), "server SETTINGS (configured)")
    sid = c.request("GET", "/s", scheme=e.scheme)
    eq(c.response(sid).status, 200, "status")
    eq(sum(f.increment for f in c.frames_of(8, 0)), 4 * 64 * KiB - 65535, "connection window")


@case1("h2c.http1_same_port")
def http1_same_port(t):
    """h2c = true: an HTTP/1.1 client on the same port is served as before."""
    e = Env(t, "h2c", t.http_backend(Reply(200, b"ok\n")))
    r = e.px.connect().get("/one")
    eq((r.status, r.body), (200, b"ok\n"), "HTTP/1.1 on an h2c listener")
    e.get_ok("/two")


@case1("tls.alpn_http11_still")
def alpn_http11_still(t):
    """A client offering only http/1.1 on an h2 listener gets HTTP/1.1."""
    import ssl
    e = Env(t, "tls", t.http_backend(Reply(200, b"ok\n")))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(t.dir, "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", e.px.port), 10), server_hostname="h2.test")
    try:
        eq(s.selected_alpn_protocol(), "http/1.1", "ALPN")
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h2.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200 OK\r\n") or not data.endswith(b"\r\n\r\nok\n"):
        raise AssertionError("HTTP/1.1 response over TLS: %r" % data[:300])


# ---------------------------------------------------------------------------
# concurrency


@mcase("concurrent_100_streams", timeout=60)
def concurrent_100_streams(t, mode):
    be = t.http_backend(Reply(200, lambda r: r.body[::-1], framing="cl"))
    e = Env(t, mode, be)
    c = e.client()
    c.wait_settings()
    bodies = {}
    for i in range(100):
        b = blob(1000 + 97 * i, 100 + i)
        sid = c.request("POST", "/c/%d" % i, body=b, scheme=e.scheme)
        bodies[sid] = (i, b)
    c.until(lambda: all(c.streams[s].done for s in bodies), 60, "100 responses")
    for sid, (i, b) in bodies.items():
        st = c.streams[sid]
        eq((st.status, st.reset), (200, None), "stream %d status" % sid)
        eq(st.body, b[::-1], "stream %d body (its own request body reversed)" % sid)
    eq(len(be.requests), 100, "backend requests")
    for r in be.requests:
        i = int(r.target.rsplit("/", 1)[1])
        eq(r.body, blob(1000 + 97 * i, 100 + i), "backend body of %s" % r.target)
    e.px.wait_access(100, lambda a: "h2_stream" in a)
    eq(sorted(a["h2_stream"] for a in e.px.access_lines() if "h2_stream" in a), sorted(bodies), "h2_stream ids")


@case1("h2c.max_concurrent_streams_enforced")
def max_concurrent_streams_enforced(t):
    """SETTINGS_MAX_CONCURRENT_STREAMS = 8 is what the client sees; a 9th
    stream after the SETTINGS ACK is nghttp2's connection error (RFC 9113
    §5.4: an endpoint MAY treat the §5.1.2 stream error as a connection
    error): GOAWAY PROTOCOL_ERROR naming the 8th stream; the 9th never
    reaches a backend; a new connection is served."""
    gate = threading.Event()

    def script(req):
        if req.target.startswith("/hold"):
            return Reply(200, gated(b"a", b"b\n", gate), length=3)
        return Reply(200, b"ok\n")

    be = t.http_backend(script, errors_ok="the held streams' upstream connections are cut with the connection")
    e = Env(t, "h2c", be, h2={"max_concurrent_streams": 8})
    c = e.raw()
    eq(c.wait_settings().get(S_MAX_CONCURRENT_STREAMS), 8, "SETTINGS_MAX_CONCURRENT_STREAMS seen by the client")
    c.until(lambda: any(f.type == SETTINGS and f.flags & 1 for f in c.frames), 5, "SETTINGS ACK")
    held = [c.request("GET", "/hold/%d" % i, scheme=e.scheme) for i in range(8)]
    c.until(lambda: all(c.streams[s].headers is not None for s in held), 10, "8 response heads")
    eq(be.wait_requests(8, complete=False) and len(be.requests), 8, "backend requests of the held streams")
    extra = c.request("GET", "/ninth", scheme=e.scheme)
    c.read_to_eof(10)
    t.note("9th stream: %r frames %r" % (c.streams[extra], c.frames[-3:]))
    eq([(g.last_sid, err_name(g.error_code), g.debug) for g in c.goaways],
       [(held[-1], "PROTOCOL_ERROR", b"request HEADERS: max concurrent streams exceeded")],
       "the proxy's answer to a 9th concurrent stream")
    eq(c.streams[extra].headers, None, "no response on the 9th stream")
    gate.set()
    eq([r.target for r in be.requests if not r.target.startswith("/hold")], [], "the 9th stream never reached the backend")
    e.get_ok("/tenth", "a new connection after the GOAWAY")


# ---------------------------------------------------------------------------
# flow control


@mcase("slow_reader_8m", timeout=120)
def slow_reader_8m(t, mode):
    n = 8 * MiB
    body = blob(n, 21)
    be = t.http_backend(lambda req: Reply(200, body) if req.target == "/big" else Reply(200, b"ok\n"))
    e = Env(t, mode, be, env=ASAN_LOW_QUARANTINE)
    c = e.client(settings={S_INITIAL_WINDOW_SIZE: 16 * KiB}, auto_window=False, rcvbuf=32 * KiB)
    c.wait_settings()
    warm = c.request("GET", "/warm", scheme=e.scheme)
    c.response(warm)
    c.consume(warm)
    with PeakRSS(e.px) as peak:
        sid = c.request("GET", "/big", scheme=e.scheme)
        deadline = time.monotonic() + 100
        reads = 0
        while not c.streams[sid].done:
            if time.monotonic() > deadline:
                raise AssertionError("slow reader: %r after 100s" % c.streams[sid])
            c.pump(deadline, nbytes=4096)  # small reads
            reads += 1
            if reads % 8 == 0:
                time.sleep(0.002)  # the reader is slower than the proxy
            c.consume(sid)  # WINDOW_UPDATE only for what was read
    st = c.streams[sid]
    eq((st.status, st.ended, st.reset), (200, True, None), "slow reader: status / end / reset")
    eq((st.data_len, st.sha256), (n, sha256(body)), "slow reader: 8 MiB intact")
    t.note("slow reader: %d DATA frames, RSS %d -> peak %d KiB" % (st.data_frames, peak.base, peak.peak))
    peak.check(4 * MiB, "8 MiB to a 16 KiB-window reader")


def _ping_barrier(c, rounds=2, timeout=10):
    """`rounds` PING round trips one after the other on H2Client c: each ACK
    comes after the proxy processed every frame sent before its PING, and a
    next PING is only read once the proxy's loop went back to its poll, i.e.
    after the events those frames set off (a stream's read, a WINDOW_UPDATE
    queued for what it took) ran."""
    import h2.events
    for _ in range(rounds):
        c.ping_seq = getattr(c, "ping_seq", 0) + 1
        data = struct.pack("!Q", 0x7769_6e64_0000_0000 | c.ping_seq)
        c.conn.ping(data)
        c.flush()
        c.until(lambda: any(isinstance(ev, h2.events.PingAckReceived) and ev.ping_data == data for ev in c.events),
                timeout, "PING ACK %d" % c.ping_seq)


def _fill_until_held(c, sid, cap, deadline):
    """Send DATA on sid (never END_STREAM) as long as the proxy opens windows,
    until the window is spent and stays spent across a PING barrier: the
    session on the stream takes no more, and what the window still counts is
    waiting in the proxy, unconsumed. Returns the bytes sent. cap bounds it."""
    sent = 0
    chunk = b"h" * 16384
    while True:
        if time.monotonic() >= deadline:
            raise AssertionError("stream %d: still taking bytes at the deadline (%d sent)" % (sid, sent))
        st = c.streams[sid]
        if st.done:
            raise AssertionError("stream %d ended while its body was being sent: %r %r" % (sid, st, st.headers))
        win = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if win > 0:
            if sent + win > cap:
                raise AssertionError("stream %d: the proxy took more than %d bytes of a body its backend "
                                     "cannot have read" % (sid, cap))
            c.conn.send_data(sid, chunk[:win])
            c.flush()
            sent += win
            continue
        _ping_barrier(c)
        if c.conn.local_flow_control_window(sid) == 0:
            return sent


@mcase("reset_streams_keep_connection_window", timeout=90)
def reset_streams_keep_connection_window(t, mode):
    """Regression (df6f6f1): a stream reset while DATA bytes of it wait in the
    proxy, not yet taken by its session, gives their window back to the
    connection. initial_window 16k: stream windows of 16 KiB, a connection
    window of 64 KiB. 12 POST streams go to a black-hole server (the connect
    hangs: the session takes 256 KiB of body, its input's high watermark, and
    then no more); each is fed until its window stays at zero (16 KiB received
    by the proxy and not acknowledged, at least 8 KiB of it untaken since
    nghttp2 acknowledges at half a window; about 16 KiB measured), then reset
    (CANCEL). Had those bytes' connection window been kept, 12 x >= 8 KiB >
    64 KiB: the connection could carry no more DATA. Then an upload of 1 MiB
    (16 connection windows) on the same connection to a live backend arrives
    whole, with its 200.

    Measured: the binary before df6f6f1 passes too with libnghttp2 1.52.0:
    its nghttp2_session_consume() on the closed stream returned 0 and did
    credit the connection (nghttp2 updates the connection's consumed size
    before it looks the stream up). With nghttp2_session_consume() made to
    refuse closed streams (an LD_PRELOAD shim), as df6f6f1's message assumes,
    the old binary fails here (connection window 0 after the 4th reset stream,
    the upload gets no window) and the fixed one passes."""
    hole = blackhole_port(t)
    if hole is None:
        raise AssertionError("could not build a black-hole listener (backlog not enforced?)")
    up = blob(MiB, 71)
    be = t.http_backend(lambda req: Reply(200, lambda r: ("%d %s\n" % (r.body_len, r.sha256)).encode()))
    e = Env(t, mode, upstreams={"hole": [hole], "app": [be]},
            routes=[{"name": "hold", "path_prefix": "/hold", "upstream": "hole"}, {"name": "all", "upstream": "app"}],
            h2={"initial_window": "16k"}, timeouts={"connect": "60s"})
    c = e.client()
    s = c.wait_settings()
    eq(s.get(S_INITIAL_WINDOW_SIZE), 16 * KiB, "server SETTINGS_INITIAL_WINDOW_SIZE")
    _ping_barrier(c, 1)  # the connection's WINDOW_UPDATE (to 4 x 16 KiB) came before the ACK
    eq(c.conn.outbound_flow_control_window, 64 * KiB, "connection window")
    streams = 12
    deadline = time.monotonic() + 45
    held = []
    for i in range(streams):
        sid = c.request("POST", "/hold/%d" % i, scheme=e.scheme, headers=[("content-length", str(4 * MiB))],
                        end=False)
        sent = _fill_until_held(c, sid, 2 * MiB, deadline)
        c.reset_stream(sid, CANCEL)
        held.append(sent)
        t.note("stream %d: %d bytes sent before its window stayed spent; connection window now %d"
               % (sid, sent, c.conn.outbound_flow_control_window))
    t.note("held streams: %r bytes sent; connection window after the resets %d"
           % (held, c.conn.outbound_flow_control_window))
    sid = c.request("POST", "/up", scheme=e.scheme, body=None, end=False, headers=[("content-length", str(len(up)))])
    try:
        c.send_body(sid, up, end=True, timeout=20)
    except AssertionError as ex:
        raise AssertionError("upload after %d reset streams with untaken bytes: %s (connection window %d): the "
                             "reset streams' bytes were not given back to the connection window"
                             % (streams, ex, c.conn.outbound_flow_control_window))
    st = c.response(sid, 20)
    want = ("%d %s\n" % (len(up), sha256(up))).encode()
    eq((st.status, st.body, st.reset), (200, want, None), "upload after the resets: status / body (length and "
                                                          "sha256 the backend read) / reset")
    r = [r for r in be.requests if r.target == "/up"]
    eq([(x.body_len, x.sha256) for x in r], [(len(up), sha256(up))], "the upload at the backend")
    eq(c.goaway, None, "no GOAWAY")


# ---------------------------------------------------------------------------
# malformed requests: stream error, the connection goes on


BAD_REQUESTS = [
    ("missing_path", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test")]),
    ("uppercase_name", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test"),
                                    (":path", "/"), ("X-Upper", "1")]),
    ("connection_keepalive", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test"),
                                          (":path", "/"), ("connection", "keep-alive")]),
    ("te_gzip", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test"), (":path", "/"),
                             ("te", "gzip")]),
    ("transfer_encoding", lambda sch: [(":method", "POST"), (":scheme", sch), (":authority", "h2.test"),
                                       (":path", "/"), ("transfer-encoding", "chunked")]),
    ("upgrade_field", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test"),
                                   (":path", "/"), ("upgrade", "websocket")]),
    ("unknown_pseudo", lambda sch: [(":method", "GET"), (":scheme", sch), (":authority", "h2.test"),
                                    (":path", "/"), (":foo", "bar")]),
    ("pseudo_after_regular", lambda sch: [(":method", "GET"), (":scheme", sch), ("x-a", "1"),
                                          (":authority", "h2.test"), (":path", "/")]),
    ("duplicate_method", lambda sch: [(":method", "GET"), (":method", "GET"), (":scheme", sch),
                                      (":authority", "h2.test"), (":path", "/")]),
]


def _bad_request(t, mode, hdrs):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be)
    c = e.raw()
    c.wait_settings()
    sid = c.new_sid()
    c.send_headers(sid, hdrs(e.scheme), end_stream=True)
    st = c.response(sid)
    eq((st.headers, st.reset), (None, PROTOCOL_ERROR), "malformed request: RST_STREAM PROTOCOL_ERROR, no response")
    eq(c.goaways, [], "no GOAWAY")
    # the reason, from nghttp2, in the error log
    e.px.wait_log(r"^\S+ info s=\d+ HTTP/2: .*stream: %d\b" % sid)
    sid2 = c.request("GET", "/good", scheme=e.scheme)
    st2 = c.response(sid2)
    eq((st2.status, st2.body), (200, b"ok\n"), "a good request on the same connection")
    eq([r.target for r in be.requests], ["/good"], "backend saw only the good request")


for _name, _h in BAD_REQUESTS:
    for _m in MODES:
        register("%s.reject_%s" % (_m, _name), lambda t, m=_m, h=_h: _bad_request(t, m, h))


@mcase("te_trailers_allowed")
def te_trailers_allowed(t, mode):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be)
    c = e.raw()
    sid = c.request("GET", "/te", scheme=e.scheme, headers=[("te", "trailers")])
    eq(c.response(sid).status, 200, "te: trailers is allowed")


# ---------------------------------------------------------------------------
# RFC 8441


def ws_connect_headers(scheme, path="/ws", protocol="websocket", extra=()):
    return ([(":method", "CONNECT"), (":protocol", protocol), (":scheme", scheme), (":path", path),
             (":authority", "h2.test"), ("sec-websocket-version", "13")] + list(extra))


class WsOverH2:
    """A WebSocket on an H2Client stream: masked frames out, frames parsed from DATA."""

    def __init__(self, c, sid):
        self.c, self.sid = c, sid
        self.pos = 0

    def send(self, op, payload, end=False):
        self.c.send_body(self.sid, ws_frame(op, payload), end=end)

    def recv_frames(self, n=1, timeout=15):
        """n more complete frames from the server (asserted unmasked)."""
        def have():
            st = self.c.streams[self.sid]
            return len(ws_parse(st.data[self.pos:], n)[0]) >= n or st.done

        self.c.until(have, timeout, "%d WebSocket frame(s) on stream %d" % (n, self.sid))
        fr, used = ws_parse(self.c.streams[self.sid].data[self.pos:], n)
        if len(fr) < n:
            raise AssertionError("stream %d ended after %d of %d frames: %r" % (self.sid, len(fr), n,
                                                                                self.c.streams[self.sid]))
        self.pos += used
        for f in fr:
            if f[2]:
                raise AssertionError("server WebSocket frame is masked")
        return fr


def ws_recv_payload(ws, n, timeout=20):
    out = bytearray()
    while len(out) < n:
        for fin, op, masked, p in ws.recv_frames(1, timeout):
            eq((fin, op), (1, OP_BINARY), "echoed frame fin/opcode")
            out += p
    return bytes(out)


@mcase("ws_forward_echo_server", timeout=60)
def ws_forward_echo_server(t, mode):
    """Extended CONNECT on a forward route to a real WebSocket server
    (ws_echo_server.py): 200, masked frames echo both ways, close handshake,
    backend close -> END_STREAM."""
    import json
    port = t.free_port()
    events = t.path("ws_events.jsonl")
    t.popen(["/usr/bin/python3", os.path.join(HERE, "ws_echo_server.py"), str(port), events],
            stdout=open(t.path("ws_server.out"), "wb"), stderr=subprocess.STDOUT)
    wait_listen(port)
    e = Env(t, mode, port)
    c = e.client()
    s = c.wait_settings()
    eq(s.get(S_ENABLE_CONNECT_PROTOCOL), 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
    sid = c.request(raw_headers=[(k.encode(), v.encode()) for k, v in ws_connect_headers(e.scheme, "/chat?room=1")],
                    end=False)
    c.until(lambda: c.streams[sid].headers is not None or c.streams[sid].done, 10, "CONNECT response")
    st = c.streams[sid]
    eq((st.status, st.reset, st.ended), (200, None, False), "extended CONNECT answer")
    check_head(st, "CONNECT 200")
    eq(st.get("sec-websocket-accept"), None, "no Sec-WebSocket-Accept in an RFC 8441 200")
    ws = WsOverH2(c, sid)
    ws.send(OP_TEXT, "h\u00e9llo".encode())
    (fin, op, masked, p), = ws.recv_frames(1)
    eq((fin, op, p), (1, OP_TEXT, "h\u00e9llo".encode()), "text echo")
    big = blob(300 * KiB, 31)
    ws.send(OP_BINARY, big)
    (fin, op, masked, p), = ws.recv_frames(1)
    eq((fin, op, sha256(p)), (1, OP_BINARY, sha256(big)), "300 KiB binary echo")
    ws.send(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    (fin, op, masked, p), = ws.recv_frames(1)
    eq((op, p[:2]), (OP_CLOSE, struct.pack("!H", 1000)), "close echoed")
    c.until(lambda: c.streams[sid].done, 10, "END_STREAM after the server closed")
    eq((c.streams[sid].ended, c.streams[sid].reset), (True, None), "stream ended cleanly")
    c.end_stream(sid)
    evs = []
    wait_until(lambda: any(json.loads(l)["event"] == "closed" for l in open(events)), 10, what="server closed")
    for l in open(events):
        evs.append(json.loads(l))
    op_ev = [x for x in evs if x["event"] == "open"][0]
    eq(op_ev["path"], "/chat?room=1", "path at the WebSocket server")
    eq([(x["type"], x["len"]) for x in evs if x["event"] == "message"], [("text", 5), ("binary", 300 * KiB)],
       "messages at the server")
    eq([x["code"] for x in evs if x["event"] == "closed"], [1000], "close code at the server")
    # the connection still serves plain requests
    sid2 = c.request("GET", "/plain", scheme=e.scheme)
    c.response(sid2)
    a = access_line(e.px, sid, "/chat?room=1", timeout=10)
    t.note("CONNECT access line: %r" % a)


def _upgrade_be(t, after=echo_until_eof):
    return UpgradeBackend(t, after=after)


@mcase("ws_forward_halfclose_client", timeout=40)
def ws_forward_halfclose_client(t, mode):
    """Client END_STREAM -> the backend sees EOF; the backend closes -> END_STREAM."""
    be = _upgrade_be(t)
    e = Env(t, mode, be)
    c = e.client()
    c.wait_settings()
    sid = c.request(raw_headers=[(k.encode(), v.encode()) for k, v in ws_connect_headers(e.scheme)], end=False)
    c.until(lambda: c.streams[sid].headers is not None or c.streams[sid].done, 10, "CONNECT response")
    eq((c.streams[sid].status, c.streams[sid].reset), (200, None), "extended CONNECT answer")
    tun = be.wait_tuns(1)[0]
    head = tun.head
    if not head.startswith(b"GET /ws HTTP/1.1\r\n"):
        raise AssertionError("backend request line: %r" % head[:200])
    key = header_value(head, "Sec-WebSocket-Key")
    if key is None or len(base64.b64decode(key)) != 16:
        raise AssertionError("backend Sec-WebSocket-Key missing or not 16 bytes: %r" % head)
    eq(header_value(head, "Upgrade"), "websocket", "backend Upgrade")
    eq(header_value(head, "Connection"), "Upgrade", "backend Connection")
    eq(header_value(head, "Sec-WebSocket-Version"), "13", "backend Sec-WebSocket-Version")
    f1 = ws_frame(OP_BINARY, blob(70000, 32))
    c.send_body(sid, f1, end=False)
    c.until(lambda: len(c.streams[sid].data) >= len(f1), 15, "echo of the frame bytes")
    eq(bytes(c.streams[sid].data), f1, "backend echo of the masked frame bytes, as sent")
    eq(tun.recv_exact_total(len(f1))[:len(f1)], f1, "backend got the frame bytes exactly")
    c.end_stream(sid)
    c.until(lambda: c.streams[sid].done, 10, "END_STREAM after the backend saw EOF and closed")
    eq((c.streams[sid].ended, c.streams[sid].reset), (True, None), "stream ended cleanly")
    eq(tun.eof, True, "backend saw EOF")
    sid2 = c.request("GET", "/after", scheme=e.scheme)
    c.until(lambda: c.streams[sid2].done, 10, "plain request after the tunnel")


@mcase("ws_forward_backend_closes", timeout=40)
def ws_forward_backend_closes(t, mode):
    """The backend sends bytes and closes first: the client gets them and END_STREAM."""
    def after(tun):
        tun.send(b"\x82\x03bye")
        tun.sock.shutdown(socket.SHUT_WR)
        tun.recv_to_eof(15)

    be = _upgrade_be(t, after)
    e = Env(t, mode, be)
    c = e.client()
    sid = c.request(raw_headers=[(k.encode(), v.encode()) for k, v in ws_connect_headers(e.scheme)], end=False)
    c.until(lambda: c.streams[sid].done, 10, "END_STREAM from the backend's close")
    st = c.streams[sid]
    eq((st.status, st.body, st.ended, st.reset), (200, b"\x82\x03bye", True, None), "backend bytes then END_STREAM")
    # half-closed (remote): the client may still send, then ends
    c.send_body(sid, ws_frame(OP_BINARY, b"late"), end=True)
    tun = be.wait_tuns(1)[0]
    wait_until(lambda: tun.eof, 10, what="backend EOF after the client's END_STREAM")
    if not bytes(tun.got).startswith(ws_frame(OP_BINARY, b"late")[:2]):
        raise AssertionError("late bytes at the backend: %r" % bytes(tun.got))


def _term_env(t, mode, be):
    from term_lib import term_route
    return Env(t, mode, upstreams={"app": [t.dead_port()]},
               routes=[term_route(be.bridge), {"name": "rest", "upstream": "app"}])


def _ws_open(c, e, path="/ws"):
    sid = c.request(raw_headers=[(k.encode(), v.encode()) for k, v in ws_connect_headers(e.scheme, path)], end=False)
    c.until(lambda: c.streams[sid].headers is not None or c.streams[sid].done, 10, "CONNECT response")
    st = c.streams[sid]
    eq((st.status, st.reset), (200, None), "extended CONNECT answer")
    check_head(st, "CONNECT 200")
    return sid


@mcase("ws_terminate_route", timeout=40)
def ws_terminate_route(t, mode):
    """Terminate route: 200 from the proxy, payloads bridged both ways, the
    client's close is echoed, then END_STREAM both ways and the bridge sees EOF."""
    from term_lib import StreamBackend
    be = StreamBackend(t)
    e = _term_env(t, mode, be)
    c = e.client()
    sid = _ws_open(c, e)
    ws = WsOverH2(c, sid)
    payload = blob(5000, 41)
    ws.send(OP_BINARY, payload)
    got = ws_recv_payload(ws, len(payload))
    eq(got, payload, "payload bridged and echoed as binary messages")
    conn = be.wait_conns(1)[0]
    eq(bytes(conn.wait_data(len(payload))), payload, "raw payload at the bridge backend")
    ws.send(OP_CLOSE, struct.pack("!H", 1000))
    (fin, op, masked, p), = ws.recv_frames(1)
    eq((op, p[:2]), (OP_CLOSE, struct.pack("!H", 1000)), "close echoed by the proxy")
    c.end_stream(sid)
    conn.wait_eof(10)
    c.until(lambda: c.streams[sid].done, 10, "stream end after the close handshake")
    eq((c.streams[sid].ended, err_name(c.streams[sid].reset) if c.streams[sid].reset is not None else None),
       (True, None), "END_STREAM, no RST_STREAM, after the close handshake")
    sid2 = c.request("GET", "/plain", scheme=e.scheme)
    eq(c.response(sid2).status, 502, "plain request to the dead catch-all upstream on the same connection")


@mcase("ws_terminate_client_end_stream", timeout=40)
def ws_terminate_client_end_stream(t, mode):
    """END_STREAM without a close frame (the TCP EOF of HTTP/1.1): the bridge
    sees EOF and the stream ends without an error code."""
    from term_lib import StreamBackend
    be = StreamBackend(t)
    e = _term_env(t, mode, be)
    c = e.client()
    sid = _ws_open(c, e)
    ws = WsOverH2(c, sid)
    ws.send(OP_BINARY, b"x" * 10)
    eq(ws_recv_payload(ws, 10), b"x" * 10, "echo")
    c.end_stream(sid)
    be.wait_conns(1)[0].wait_eof(10)
    c.until(lambda: c.streams[sid].done, 10, "stream end")
    st = c.streams[sid]
    t.note("after the client's END_STREAM: %r, frames after the echo %r" % (st, ws_parse(st.data[ws.pos:])[0]))
    if st.reset not in (None, NO_ERROR, CANCEL):
        raise AssertionError("stream ended with RST_STREAM %s after the client's END_STREAM" % err_name(st.reset))


@mcase("ws_terminate_backend_closes", timeout=40)
def ws_terminate_backend_closes(t, mode):
    """The bridge backend closes: its bytes, a close frame (1000), the
    client answers the close, END_STREAM without a reset."""
    from term_lib import StreamBackend

    def handler(conn):
        conn.send(b"from-backend")
        conn.sock.shutdown(socket.SHUT_RDWR)

    be = StreamBackend(t, handler=handler)
    e = _term_env(t, mode, be)
    c = e.client()
    sid = _ws_open(c, e)
    ws = WsOverH2(c, sid)
    fr = ws.recv_frames(2)
    eq([(f[0], f[1], f[3]) for f in fr], [(1, OP_BINARY, b"from-backend"), (1, OP_CLOSE, struct.pack("!H", 1000))],
       "backend bytes as a binary message, then close 1000")
    ws.send(OP_CLOSE, struct.pack("!H", 1000), end=True)
    c.until(lambda: c.streams[sid].done, 10, "stream end after the close handshake")
    eq((c.streams[sid].ended, err_name(c.streams[sid].reset) if c.streams[sid].reset is not None else None),
       (True, None), "END_STREAM, no RST_STREAM")


@mcase("connect_without_protocol")
def connect_without_protocol(t, mode):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be)
    c = e.raw()
    sid = c.new_sid()
    c.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.com:443")], end_stream=False)
    st = c.response(sid)
    t.note("CONNECT without :protocol: %r %r" % (st, st.headers))
    eq((st.status, st.reset is None or st.reset == NO_ERROR), (405, True),
       "CONNECT without :protocol: an error status on the stream")
    eq(c.goaways, [], "no GOAWAY")
    sid2 = c.request("GET", "/good", scheme=e.scheme)
    eq(c.response(sid2).status, 200, "same connection serves a good request")
    eq([r.target for r in be.requests], ["/good"], "backend requests")


@mcase("connect_protocol_denied_route")
def connect_protocol_denied_route(t, mode):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be, routes=[{"name": "deny", "path_prefix": "/ws", "upstream": "app", "upgrade": "deny"},
                                 {"name": "all", "upstream": "app"}])
    c = e.raw()
    sid = c.new_sid()
    c.send_headers(sid, ws_connect_headers(e.scheme, "/ws"), end_stream=False)
    st = c.response(sid)
    eq(st.status, 403, "deny route: 403 on the stream")
    sid2 = c.new_sid()
    c.send_headers(sid2, ws_connect_headers(e.scheme, "/other", protocol="foo"), end_stream=False)
    st2 = c.response(sid2)
    t.note(":protocol foo on a websocket-only route: %r %r" % (st2, st2.headers))
    eq((st2.status, st2.ended, st2.reset), (403, True, None),
       ":protocol foo on a route that forwards websocket only: the route's refusal, 403")
    eq(c.goaways, [], "no GOAWAY")
    sid3 = c.request("GET", "/good", scheme=e.scheme)
    eq(c.response(sid3).status, 200, "same connection serves a good request")
    eq([r.target for r in be.requests], ["/good"], "backend requests")


# ---------------------------------------------------------------------------
# attacks


def _flood(c, make, count, batch=500):
    """Send `count` frames built by make(i) from a thread, in batches,
    stopping at the first send error. Returns the worker (result: frames sent)."""
    def run():
        sent = 0
        try:
            while sent < count:
                k = min(batch, count - sent)
                c.send(b"".join(make(sent + j) for j in range(k)))
                sent += k
        except OSError:
            pass
        return sent
    th = _Thread(run)
    return th


class _Thread:
    def __init__(self, fn):
        self.result = None
        self.exc = None
        self.th = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.th.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:
            self.exc = e

    def join(self, timeout=60):
        self.th.join(timeout)
        if self.th.is_alive():
            raise AssertionError("flood sender still running after %ss" % timeout)
        if self.exc:
            raise self.exc
        return self.result


def _attack_env(t, mode, h2=None, timeouts=None, **kw):
    """A proxy (ASan's quarantine low, RSS is bounded) in front of a backend
    answering "ok", warmed up by one request; its RSS then, and a raw client
    past the SETTINGS exchange: (env, backend, RSS KiB, client)."""
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be, h2=h2, timeouts=timeouts, env=ASAN_LOW_QUARANTINE)
    e.be = be
    e.get_ok("/warm", "warm-up request")
    base = e.px.rss_kb()
    c = e.raw(**kw)
    c.wait_settings()
    return e, be, base, c


def _attack(t, mode, setup, expect, count, make, rss_bound=24 * MiB, h2=None, timeouts=None, **kw):
    """Common shape: a proxy, a warm-up request, the flood from a thread
    while reading; `expect(c, sent)` asserts the proxy's answer; then a
    second connection is served and the RSS growth is bounded."""
    e, be, base, c = _attack_env(t, mode, h2=h2, timeouts=timeouts, **kw)
    if setup:
        setup(c, e)
    w = _flood(c, make, count)
    try:
        c.until(lambda: c.goaways, 30, "GOAWAY", eof_ok=True)
        if not c.eof:
            c.read_to_eof(10)
    finally:
        sent = w.join(60)
    t.note("flood: %d frames sent; frames back: %d; last %r; goaways %r" % (sent, len(c.frames), c.frames[-4:],
                                                                              c.goaways))
    expect(c, sent)
    e.get_ok("/after", "a second connection after the attack")
    rss_growth_check(e.px, base, rss_bound, "after the attack")
    return e, be, c


def _expect_goaway(code):
    def check(c, sent):
        if not c.goaways:
            raise AssertionError("no GOAWAY; connection %s; last frames %r"
                                 % ("closed" if c.eof else "open", c.frames[-6:]))
        eq(err_name(c.goaways[-1].error_code), err_name(code), "GOAWAY error code (%r)" % c.goaways[-1])
        eq(c.eof, True, "connection closed after the GOAWAY")
    return check


@mcase("attack_rapid_reset", timeout=90)
def attack_rapid_reset(t, mode):
    state = {}

    def make_frames(i):
        c = state["c"]
        sid = 1 + 2 * i
        return (frame(HEADERS, F_END_HEADERS | F_END_STREAM, sid,
                      c.header_block(c.request_headers("GET", "/rr", scheme=state["hdr"])))
                + rst_stream(sid, CANCEL))

    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be, env=ASAN_LOW_QUARANTINE)
    e.get_ok("/warm", "warm-up request")
    base = e.px.rss_kb()
    cpu0 = e.px.cpu_seconds()
    c = e.raw()
    state["c"], state["hdr"] = c, e.scheme
    c.wait_settings()
    w = _flood(c, make_frames, 20000, batch=200)
    try:
        c.until(lambda: c.goaways, 60, "GOAWAY", eof_ok=True)
        if not c.eof:
            c.read_to_eof(10)
    finally:
        sent = w.join(60)
    t.note("rapid reset: %d pairs sent, %d backend requests, %d frames back, goaways %r, cpu %.2fs"
           % (sent, len(be.requests), len(c.frames), c.goaways, e.px.cpu_seconds() - cpu0))
    _expect_goaway(ENHANCE_YOUR_CALM)(c, sent)
    if sent >= 20000:
        raise AssertionError("all 20000 HEADERS+RST_STREAM pairs were accepted before the GOAWAY")
    # the proxy's reset bucket (200 at once) answers before nghttp2's own limit (400, INTERNAL_ERROR)
    last = c.goaways[-1].last_sid
    if not 401 <= last < 801:
        raise AssertionError("GOAWAY last-stream-id %d: want the 201st..400th reset stream (401..799)" % last)
    if len(be.requests) > 1 + 200:
        raise AssertionError("%d backend requests for reset streams" % (len(be.requests) - 1))
    e.get_ok("/after", "a second connection after the rapid reset")
    rss_growth_check(e.px, base, 24 * MiB, "after the rapid reset")


@mcase("attack_continuation_flood", timeout=60)
def attack_continuation_flood(t, mode):
    e, be, base, c = _attack_env(t, mode)
    first = c.header_block(c.request_headers("GET", "/cont", scheme=e.scheme))
    c.send(frame(HEADERS, F_END_STREAM, 1, first))
    # literal header field without indexing, new name "x-c", value "y": 0x00 len name len value
    frag = b"\x00\x03x-c\x01y"
    w = _flood(c, lambda i: frame(CONTINUATION, 0, 1, frag), 100000, batch=1000)
    try:
        c.until(lambda: c.goaways, 30, "GOAWAY or close", eof_ok=True)
        if not c.eof:
            c.read_to_eof(10)
    finally:
        sent = w.join(60)
    t.note("continuation flood: %d sent; frames back %r; goaways %r; reset %s" % (sent, c.frames[-4:], c.goaways,
                                                                                 c.reset_by_peer))
    eq([(g.last_sid, err_name(g.error_code)) for g in c.goaways], CONTINUATION_ANSWER,
       "the proxy's answer to a CONTINUATION flood (last-stream-id, code)")
    eq(c.eof, True, "connection closed")
    e.px.wait_log(r"HTTP/2: Too many CONTINUATION frames following a HEADER frame")
    if sent >= 100000:
        raise AssertionError("all 100000 CONTINUATION frames were sent before the close")
    eq([r.target for r in be.requests], ["/warm"], "backend requests (the flooded stream never reached one)")
    e.get_ok("/after", "a second connection after the CONTINUATION flood")
    rss_growth_check(e.px, base, 24 * MiB, "after the CONTINUATION flood")


# discovered against the proxy: nghttp2 1.52.0-1+deb12u3 stops after its max_continuations (8) with a
# fatal NGHTTP2_ERR_TOO_MANY_CONTINUATIONS (it queues no GOAWAY); the proxy then sends its own
# GOAWAY ENHANCE_YOUR_CALM naming the flooded stream and closes
CONTINUATION_ANSWER = [(1, "ENHANCE_YOUR_CALM")]


@mcase("attack_ping_flood", timeout=60)
def attack_ping_flood(t, mode):
    _attack(t, mode, None, _expect_goaway(ENHANCE_YOUR_CALM), 200000, lambda i: ping(struct.pack("!Q", i)))


@mcase("attack_settings_flood", timeout=60)
def attack_settings_flood(t, mode):
    _attack(t, mode, None, _expect_goaway(ENHANCE_YOUR_CALM), 200000, lambda i: settings_frame())


@mcase("attack_empty_data_flood", timeout=60)
def attack_empty_data_flood(t, mode):
    def setup(c, e):
        sid = c.new_sid()
        c.send_headers(sid, c.request_headers("POST", "/upload", scheme=e.scheme), end_stream=False)
        e.be.wait_requests(1, complete=False)
        e.be.expect_errors("the upload's upstream connection is cut with the connection")

    _attack(t, mode, setup, _expect_goaway(ENHANCE_YOUR_CALM), 200000, lambda i: frame(DATA, 0, 1, b""))


@mcase("attack_priority_flood", timeout=60)
def attack_priority_flood(t, mode):
    _attack(t, mode, None, _expect_goaway(ENHANCE_YOUR_CALM), 200000,
            lambda i: frame(PRIORITY, 0, 1 + 2 * (i % 50000), struct.pack("!IB", 0, 15)))


@mcase("attack_hpack_bomb", timeout=60)
def attack_hpack_bomb(t, mode):
    e, be, base, c = _attack_env(t, mode)
    big = "b" * 4000  # 6 + 4000 + 32 <= 4096: fits the dynamic table
    hdrs = c.request_headers("GET", "/bomb", scheme=e.scheme) + [("x-bomb", big)] * 4000
    block = c.header_block(hdrs)
    t.note("HPACK bomb: %d header block bytes decode to %d bytes" % (len(block), 4000 * 4006))
    if len(block) > 12000:
        raise AssertionError("encoder did not index the repeated field (%d bytes)" % len(block))
    sid = c.new_sid()
    c.send_headers(sid, hdrs, end_stream=True)
    st = c.response(sid, 20)
    eq((st.status, st.reset), (431, None), "HPACK bomb: 431 on the stream")
    eq(c.goaways, [], "no GOAWAY")
    sid2 = c.request("GET", "/good", scheme=e.scheme)
    eq(c.response(sid2).status, 200, "same connection serves a good request (HPACK state in sync)")
    eq([r.target for r in be.requests], ["/warm", "/good"], "backend requests")
    e.get_ok("/after", "a second connection after the HPACK bomb")
    rss_growth_check(e.px, base, 24 * MiB, "after the HPACK bomb")


@mcase("header_list_over_limit_431")
def header_list_over_limit_431(t, mode):
    be = t.http_backend(Reply(200, b"ok\n"))
    e = Env(t, mode, be)
    c = e.raw()
    c.wait_settings()
    sid = c.request("GET", "/big", scheme=e.scheme, headers=[("x-%d" % i, "v" * 1000) for i in range(20)])
    st = c.response(sid)
    eq((st.status, st.reset), (431, None), "header list over 16k: 431")
    sid2 = c.request("GET", "/good", scheme=e.scheme)
    eq(c.response(sid2).status, 200, "same connection serves a good request")
    eq([r.target for r in be.requests], ["/good"], "backend requests")


@mcase("attack_zero_window", timeout=60)
def attack_zero_window(t, mode):
    total = 64 * MiB
    chunk = 64 * KiB
    produced = [0]

    def gen():
        for _ in range(total // chunk):
            produced[0] += chunk
            yield b"z" * chunk

    def script(req):
        if req.target == "/big":
            return Reply(200, gen(), length=total)
        return Reply(200, b"ok\n")

    be = t.http_backend(script)
    be.expect_errors("the proxy closes the upstream connection of the reset stream mid-body")
    e = Env(t, mode, be, timeouts={"send": "1s"}, env=ASAN_LOW_QUARANTINE)
    e.get_ok("/warm", "warm-up request")
    base = e.px.rss_kb()
    c = e.raw(settings=[(S_INITIAL_WINDOW_SIZE, 0)])
    c.wait_settings()
    sid = c.request("GET", "/big", scheme=e.scheme)
    st = c.response(sid, 30)
    t.note("zero window: %r; frames %r; produced %d" % (st, c.frames[-5:], produced[0]))
    eq((st.status, st.data_len, st.ended), (200, 0, False), "head only, no DATA with a zero window")
    eq(err_name(st.reset), ZERO_WINDOW_RST, "RST_STREAM code after timeouts.send")
    a = access_line(e.px, sid, "/big", timeout=10)
    t.note("zero window access line: %r" % a)
    if "send" not in str(a.get("reason", "")).lower() and "timeout" not in str(a.get("reason", "")).lower():
        raise AssertionError("access line does not say the send timed out: %r" % a)
    wait_until(lambda: any(r.target == "/big" for r in be.requests), 5, what="backend request")
    if produced[0] > 8 * MiB:
        raise AssertionError("backend was read %d bytes ahead of a client with no window" % produced[0])
    eq(c.goaways, [], "no GOAWAY")
    sid2 = c.request("GET", "/good", scheme=e.scheme)
    c.send(window_update(sid2, 65535))
    eq(c.response(sid2).status, 200, "same connection serves a good request")
    e.get_ok("/after", "a second connection")
    rss_growth_check(e.px, base, 24 * MiB, "after the zero-window stream")


# discovered: the head went out, so the cut response is INTERNAL_ERROR (src/h2.c stream_closed)
ZERO_WINDOW_RST = "INTERNAL_ERROR"


# ---------------------------------------------------------------------------
# GOAWAY


def _final_goaway(c, timeout=10):
    """Wait for a GOAWAY whose last-stream-id is not the 2^31-1 notice."""
    c.until(lambda: [g for g in c.goaways if g.last_sid != 0x7FFFFFFF], timeout, "final GOAWAY")
    return [g for g in c.goaways if g.last_sid != 0x7FFFFFFF][0]


@mcase("goaway_sigterm_inflight", timeout=40)
def goaway_sigterm_inflight(t, mode):
    gate = threading.Event()
    first, rest = blob(100 * KiB, 51), blob(200 * KiB, 52)
    be = t.http_backend(lambda req: Reply(200, gated(first, rest, gate), length=len(first) + len(rest)))
    e = Env(t, mode, be)
    c = e.raw(conn_window=16 * MiB)
    sid = c.request("GET", "/slow", scheme=e.scheme)
    c.until(lambda: c.streams[sid].data_len >= len(first), 10, "first part of the slow body")
    e.px.proc.send_signal(signal.SIGTERM)
    c.until(lambda: c.goaways, 10, "GOAWAY after SIGTERM")
    for g in c.goaways:
        eq(err_name(g.error_code), "NO_ERROR", "GOAWAY error code (%r)" % g)
    g = _final_goaway(c)
    if g.last_sid < sid:
        raise AssertionError("GOAWAY last-stream-id %d below the in-flight stream %d" % (g.last_sid, sid))
    # a stream opened after the GOAWAY is not served
    late = g.last_sid + 2 if g.last_sid % 2 else g.last_sid + 1
    c.next_sid = max(c.next_sid, late)
    late = c.request("GET", "/late", scheme=e.scheme)
    gate.set()
    c.until(lambda: c.streams[sid].done, 15, "the in-flight stream")
    st = c.streams[sid]
    eq((st.status, st.ended, st.reset), (200, True, None), "in-flight stream completes")
    eq(st.sha256, sha256(first + rest), "in-flight body intact")
    c.read_to_eof(10)
    eq(c.streams[late].headers, None, "stream opened after GOAWAY not answered")
    eq([r.target for r in be.requests], ["/slow"], "backend requests")
    e.px.stop(sig=None, timeout=10)


@mcase("goaway_reload_inflight_and_tunnel", timeout=60)
def goaway_reload_inflight_and_tunnel(t, mode):
    from reload_lib import Reloader
    gate = threading.Event()
    first, rest = blob(50 * KiB, 61), blob(50 * KiB, 62)

    ws_be = UpgradeBackend(t)
    be = t.http_backend(lambda req: Reply(200, gated(first, rest, gate), length=len(first) + len(rest))
                        if req.target == "/slow" else Reply(200, b"ok\n"))
    e = Env(t, mode, upstreams={"app": [be], "ws": [ws_be]},
            routes=[{"name": "ws", "path_prefix": "/ws", "upstream": "ws"}, {"name": "all", "upstream": "app"}])
    c = e.raw(conn_window=16 * MiB)
    tsid = c.new_sid()
    c.send_headers(tsid, ws_connect_headers(e.scheme), end_stream=False)
    c.until(lambda: c.streams[tsid].headers is not None, 10, "tunnel 200")
    eq(c.streams[tsid].status, 200, "tunnel status")
    c.send_data(tsid, b"before", end=False)
    c.until(lambda: c.streams[tsid].data_len >= 6, 10, "echo before the reload")
    sid = c.request("GET", "/slow", scheme=e.scheme)
    c.until(lambda: c.streams[sid].data_len >= len(first), 10, "first part of the slow body")
    r = Reloader(e.px)
    r.ok(e.text.replace("{port}", str(e.px.port)))
    c.until(lambda: c.goaways, 10, "GOAWAY after SIGHUP")
    for g in c.goaways:
        eq(err_name(g.error_code), "NO_ERROR", "GOAWAY error code (%r)" % g)
    # the tunnel keeps going
    c.send_data(tsid, b"after-reload", end=False)
    c.until(lambda: c.streams[tsid].data_len >= 6 + 12, 10, "echo after the reload")
    eq(bytes(c.streams[tsid].data), b"beforeafter-reload", "tunnel bytes across the reload")
    gate.set()
    c.until(lambda: c.streams[sid].done, 15, "the in-flight stream")
    st = c.streams[sid]
    eq((st.status, st.ended, st.reset, st.sha256), (200, True, None, sha256(first + rest)), "in-flight stream")
    # new connections are served by the new generation
    e.get_ok("/new", "a new connection after the reload")
    # the tunnel ends: then the old connection closes
    c.send_data(tsid, b"", end=True)
    c.until(lambda: c.streams[tsid].done, 10, "tunnel end")
    eq(c.streams[tsid].ended, True, "tunnel END_STREAM")
    c.read_to_eof(10)


# ---------------------------------------------------------------------------
# the command-line clients: curl --http2 and nghttp (nghttp2-client)


def _tool(t, argv, what, timeout=60):
    """Run a client, its output kept in the case directory; (stdout bytes, stderr text)."""
    t.note("running: " + " ".join(argv))
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    err = p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (what, p.returncode, err[-800:]))
    return p.stdout, err


@case1("tools.curl_http2", timeout=60)
def curl_http2(t):
    """curl --http2 over TLS (ALPN h2, verified against the test CA, SNI h2.test):
    a 1 MiB download and a 1 MiB upload on one connection, HTTP/2 both times,
    the bodies byte for byte; the access lines carry h2_stream 1 and 3."""
    down, up = blob(MiB, 21), blob(MiB, 22)
    be = t.http_backend(lambda req: Reply(200, down) if req.method == "GET"
                        else Reply(200, lambda r: r.sha256.encode()))
    e = Env(t, "tls", be)
    upfile = t.path("up.bin")
    with open(upfile, "wb") as f:
        f.write(up)
    url = "https://h2.test:%d" % e.px.port
    out, err = _tool(t, ["curl", "-sS", "--http2", "--cacert", e.ca, "--resolve", "h2.test:%d:127.0.0.1" % e.px.port,
                         "-o", t.path("down.bin"), "-w", "%{http_version} %{http_code}\\n", url + "/down",
                         "--next", "--http2", "--cacert", e.ca, "--data-binary", "@" + upfile,
                         "-w", "\\n%{http_version} %{http_code}\\n", url + "/up"], "curl")
    lines = out.decode().split("\n")
    eq((lines[0], lines[2]), ("2 200", "2 200"), "curl: HTTP version and status of both")
    eq(lines[1], sha256(up), "curl: the upload's sha256 as the backend computed it")
    with open(t.path("down.bin"), "rb") as f:
        eq(sha256(f.read()), sha256(down), "curl: the download byte for byte")
    eq(sorted(a.get("h2_stream") for a in e.px.access_lines() if "h2_stream" in a), [1, 3],
       "one connection: streams 1 and 3")


@case1("tools.nghttp", timeout=60)
def nghttp_client(t):
    """nghttp (nghttp2's own client) over TLS: four concurrent GETs on one
    connection and a POST, each 200 with the backend's body; nghttp's frame
    trace shows our SETTINGS (ENABLE_CONNECT_PROTOCOL) and no error."""
    bodies = {"/a": blob(100000, 31), "/b": blob(5, 32), "/c": b"", "/d": blob(70000, 33)}
    be = t.http_backend(lambda req: Reply(200, bodies[req.target]) if req.target in bodies
                        else Reply(200, lambda r: r.sha256.encode()))
    e = Env(t, "tls", be)
    url = "https://127.0.0.1:%d" % e.px.port  # nghttp does not verify; the leaf names 127.0.0.1 too
    # -v: the frame trace; every URI goes on one connection
    out, err = _tool(t, ["nghttp", "-nv"] + [url + p for p in bodies], "nghttp")
    text = out.decode("utf-8", "replace")
    t.note(text[-3000:])
    if "SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1" not in text:
        raise AssertionError("nghttp: no SETTINGS_ENABLE_CONNECT_PROTOCOL=1 in the trace")
    eq(len(re.findall(r"recv HEADERS frame", text)), 4, "nghttp: four responses")
    eq(len(re.findall(r":status: 200", text)), 4, "nghttp: all 200")
    if "GOAWAY" in text and "error_code=NO_ERROR" not in text:
        raise AssertionError("nghttp: an error GOAWAY")
    eq(sorted(a.get("h2_stream") for a in e.px.access_lines() if "h2_stream" in a), [13, 15, 17, 19],
       "one connection, four streams")
    # bodies: -o per URI with -d? nghttp writes bodies to stdout without -n; fetch each alone
    for path, want in bodies.items():
        got, _ = _tool(t, ["nghttp", url + path], "nghttp " + path)
        eq(sha256(got), sha256(want), "nghttp: body of " + path)
    up = blob(200000, 34)
    upfile = t.path("up.bin")
    with open(upfile, "wb") as f:
        f.write(up)
    got, _ = _tool(t, ["nghttp", "-d", upfile, url + "/up"], "nghttp POST")
    eq(got.decode(), sha256(up), "nghttp POST: the upload's sha256 at the backend")
