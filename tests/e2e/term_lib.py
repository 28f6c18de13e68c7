"""Helpers for the terminated-WebSocket cases (cases_terminate.py, cases_browser.py).

Standard library only. Stream backends (TCP or Unix socket) that record what
they receive and whether they saw EOF; a terminate-route proxy helper; a raw
WebSocket client (hand-built frames, strict frame reader); access-log checks.
"""

import base64
import os
import re
import socket
import struct
import threading
import time

from harness import BackendErrors, check_error_response, close_listener, eq, wait_until
from wslib import ws_accept, ws_key

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
CHUNK = 16 * 1024  # the bridge's largest backend read per message


# ---------------------------------------------------------------------------
# stream backends


class BConn:
    """One backend connection: .data received, .eof (the proxy half-closed or
    closed), .closed_by_us."""

    def __init__(self, sock):
        self.sock = sock
        self.data = bytearray()
        self.eof = False
        self.eof_at = None
        self.reset = False
        self.lock = threading.Lock()

    def recv(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            self.eof_at = time.monotonic()
        self.data += d
        return d

    def send(self, data, timeout=60):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def wait_data(self, n, timeout=15):
        wait_until(lambda: len(self.data) >= n or self.eof, timeout,
                   what="%d bytes at the backend (have %d)" % (n, len(self.data)))
        if len(self.data) < n:
            raise AssertionError("backend: EOF after %d of %d bytes" % (len(self.data), n))
        return bytes(self.data)

    def wait_eof(self, timeout=5):
        wait_until(lambda: self.eof, timeout, what="EOF at the backend")


def echo(conn):
    """Echo until EOF, then close."""
    while True:
        try:
            d = conn.recv(30)
        except socket.timeout:
            return
        if not d:
            return
        try:
            conn.send(d)
        except OSError:
            return


def record(conn):
    """Record until EOF."""
    while True:
        try:
            if not conn.recv(30):
                return
        except socket.timeout:
            return


class StreamBackend(BackendErrors):
    """A TCP (kind="tcp") or Unix-socket (kind="unix") stream server; each
    connection runs handler(BConn) in a thread (default: echo). .bridge is the
    route's bridge value, .server the access log's "server" value."""

    def __init__(self, t, handler=echo, kind="tcp", path=None):
        self.handler = handler
        self.conns = []
        self.errors = []
        self.stopped = False
        if kind == "unix":
            self.path = path or t.path("bridge.sock")
            if os.path.exists(self.path):
                os.unlink(self.path)
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.lsock.bind(self.path)
            self.bridge = "unix:" + self.path
            self.server = self.path
        else:
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind(("127.0.0.1", 0))
            self.port = self.lsock.getsockname()[1]
            self.bridge = self.server = "127.0.0.1:%d" % self.port
        self.lsock.listen(128)
        t.backends.append(self)  # closed at cleanup
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            c = BConn(s)
            self.conns.append(c)
            if self.stopped:  # accepted while close() ran: close() may not have seen it
                s.close()
                return
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except Exception as e:  # fails the case at cleanup unless expect_errors()
            self._record_error(e)
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    @property
    def connections(self):
        return len(self.conns)

    def wait_conns(self, n=1, timeout=5):
        wait_until(lambda: len(self.conns) >= n, timeout, what="%d backend connection(s)" % n)
        return self.conns

    def close(self):
        self.stopped = True
        close_listener(self.lsock)
        for c in list(self.conns):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.sock.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# proxy


def term_route(bridge, name="term", path_prefix="/ws", **opts):
    r = {"name": name, "path_prefix": path_prefix, "upgrade": "terminate", "bridge": bridge}
    r.update(opts)
    return r


def tproxy(t, bridge, routes_before=(), routes_after=(), upstreams=None, **opts):
    """A proxy with a terminate route "term" on /ws bridged to `bridge` (a
    StreamBackend or a bridge string); opts are route keys (subprotocols,
    require_subprotocol, max_message, ping_interval, origins). A catch-all
    route "rest" to `upstreams` (default a dead port) follows."""
    if hasattr(bridge, "bridge"):
        bridge = bridge.bridge
    ups = upstreams or {"app": [t.dead_port()]}
    routes = list(routes_before) + [term_route(bridge, **opts)] + list(routes_after)
    routes.append({"name": "rest", "upstream": next(iter(ups))})
    return t.proxy(upstreams=ups, routes=routes)


# ---------------------------------------------------------------------------
# frames


def frame(op, payload=b"", fin=True, mask=True, rsv=0, mask_key=None, length_bytes=None):
    """A client frame. mask_key: 4 bytes (default random)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload)
    mbit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        head = bytes([b0, mbit | n])
    elif length_bytes == 2:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, op, payload):
        self.fin, self.rsv, self.op, self.payload = fin, rsv, op, payload

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return "Frame(fin=%d rsv=%d op=%d len=%d %r)" % (self.fin, self.rsv, self.op, len(self.payload), p)


class RawWS:
    """A raw WebSocket client over a harness Client (t.connect)."""

    def __init__(self, client):
        self.c = client
        self.frames = []  # every frame received

    @classmethod
    def open(cls, t, px, target="/ws", protocols=None, origin=None, extra=(), key=None, early=b"",
             check=True):
        """Connect and handshake. Returns (RawWS, head bytes). With check,
        asserts the exact 101 (protocol = the expected chosen one, given as
        check=<str> or check=True for none)."""
        key = key or ws_key()
        c = t.connect(px.port)
        c.send(handshake(key, target=target, protocols=protocols, origin=origin, extra=extra) + early)
        head = c.rd.read_until(b"\r\n\r\n", time.monotonic() + 10)
        if check is not False:
            want = exact_101(key, check if isinstance(check, str) else None)
            eq(head, want, "101 from the proxy")
        return cls(c), head

    def send(self, data):
        self.c.send(data)

    def send_frame(self, op, payload=b"", **kw):
        self.c.send(frame(op, payload, **kw))

    def _exact(self, n, deadline):
        out = bytearray()
        self.c.rd.read_exact(n, deadline, out.extend)
        return bytes(out)

    def recv_frame(self, timeout=10):
        """One frame from the proxy; asserts it is unmasked."""
        deadline = time.monotonic() + timeout
        h = self._exact(2, deadline)
        fin, rsv, op = h[0] >> 7, (h[0] >> 4) & 7, h[0] & 15
        if h[1] & 0x80:
            raise AssertionError("server frame is masked: %r" % h)
        n = h[1] & 127
        if n == 126:
            n = struct.unpack("!H", self._exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exact(8, deadline))[0]
        f = Frame(fin, rsv, op, self._exact(n, deadline) if n else b"")
        self.frames.append(f)
        return f

    def recv_data(self, n, timeout=15, op=OP_BINARY, max_frame=None):
        """Data frames until n payload bytes arrived; asserts every frame is
        an unfragmented `op` message (<= max_frame bytes). Control frames
        other than close are recorded and skipped; a close fails."""
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            f = self.recv_frame(max(0.1, deadline - time.monotonic()))
            if f.op in (OP_PING, OP_PONG):
                continue
            if f.op == OP_CLOSE:
                raise AssertionError("close frame %r after %d of %d bytes" % (f, len(out), n))
            eq((f.op, f.fin, f.rsv), (op, 1, 0), "data frame opcode/FIN/RSV (%r)" % f)
            if max_frame is not None and len(f.payload) > max_frame:
                raise AssertionError("data frame of %d bytes > %d" % (len(f.payload), max_frame))
            out += f.payload
        if len(out) != n:
            raise AssertionError("got %d bytes, want %d" % (len(out), n))
        return bytes(out)

    def expect_close(self, code, reason=None, timeout=5, then_eof=True, reply=False, eof_timeout=5):
        """Skip data/ping frames up to a close frame; assert its code (and
        reason bytes if given); optionally answer it; then assert TCP EOF."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.1, deadline - time.monotonic()))
            if f.op == OP_CLOSE:
                break
        eq((f.fin, f.rsv), (1, 0), "close frame FIN/RSV")
        eq(f.close_code, code, "close code (frame %r)" % f)
        if reason is not None:
            eq(f.close_reason, reason, "close reason")
        if reply:
            try:
                self.send_frame(OP_CLOSE, close_payload(code))
            except OSError:
                pass
        if then_eof:
            self.expect_eof(eof_timeout)
        return f

    def expect_eof(self, timeout=5):
        try:
            rest = self.c.read_until_close(timeout)
        except ConnectionResetError:
            rest = b""
        if rest:
            raise AssertionError("bytes after the close frame: %r" % rest[:200])

    def close(self):
        self.c.close()


def handshake(key, target="/ws", host="test.example", protocols=None, origin=None, extra=(), version="13"):
    lines = ["GET %s HTTP/1.1" % target, "Host: %s" % host, "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: %s" % version]
    if protocols is not None:
        lines.append("Sec-WebSocket-Protocol: %s" % (protocols if isinstance(protocols, str) else ", ".join(protocols)))
    if origin is not None:
        lines.append("Origin: %s" % origin)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exact_101(key, protocol=None):
    out = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Accept: " + ws_accept(key).encode() + b"\r\n")
    if protocol is not None:
        out += b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n"
    return out + b"\r\n"


def expect_error(c, code, ws_version=False, timeout=5):
    """The exact proxy error (check_error_response) + for 426 the
    Sec-WebSocket-Version: 13 and Upgrade: websocket fields. Returns the body line."""
    data = c.read_until_close(timeout)
    if not data:
        raise AssertionError("connection closed without a response (want %d)" % code)
    if ws_version:
        head = data.partition(b"\r\n\r\n")[0]
        for want in (b"\r\nSec-WebSocket-Version: 13\r\n", b"\r\nUpgrade: websocket\r\n"):
            if want not in head + b"\r\n":
                raise AssertionError("%d without %r: %r" % (code, want.strip(), head))
        data = data.replace(b"Sec-WebSocket-Version: 13\r\n", b"", 1).replace(b"Upgrade: websocket\r\n", b"", 1)
    return check_error_response(data, code)


# ---------------------------------------------------------------------------
# logs


def ws_lines(px):
    return [a for a in px.access_lines() if a.get("event") == "websocket"]


def wait_ws_lines(px, n=1, timeout=5):
    px.wait_access(n, lambda a: a.get("event") == "websocket", timeout)
    time.sleep(0.05)  # a duplicate would show up now
    lines = ws_lines(px)
    eq(len(lines), n, "number of websocket access-log lines (%r)" % lines[:4])
    return lines


def check_ws_line(px, closed_by, reason, up=None, down=None, server=None, route="term", timeout=5, n=1,
                  index=None):
    """Check the (index-th, default last of n) websocket line and the 101 line
    of the same session before it. Returns (101 line, websocket line)."""
    lines = wait_ws_lines(px, n, timeout)
    wl = lines[-1 if index is None else index]
    eq(wl.get("closed_by"), closed_by, "websocket log closed_by (line %r)" % wl)
    if isinstance(reason, re.Pattern):
        if not reason.fullmatch(str(wl.get("reason"))):
            raise AssertionError("websocket log reason %r does not match /%s/" % (wl.get("reason"), reason.pattern))
    else:
        eq(wl.get("reason"), reason, "websocket log reason (line %r)" % wl)
    if up is not None:
        eq(wl.get("bytes_up"), up, "websocket log bytes_up (line %r)" % wl)
    if down is not None:
        eq(wl.get("bytes_down"), down, "websocket log bytes_down (line %r)" % wl)
    for k in ("bytes_up", "bytes_down", "duration_ms"):
        if not isinstance(wl.get(k), int) or isinstance(wl.get(k), bool):
            raise AssertionError("websocket log %s missing or not an integer: %r" % (k, wl))
    eq(wl.get("route"), route, "websocket log route")
    if server is not None:
        eq(wl.get("server"), server, "websocket log server")
    allx = px.access_lines()
    i_w = allx.index(wl)
    s101 = [a for a in allx[:i_w] if a.get("status") == 101 and a.get("event") is None
            and a.get("session") == wl.get("session")]
    if len(s101) != 1:
        raise AssertionError("want one status 101 access line before the websocket line, all: %r" % allx)
    l101 = s101[0]
    eq(l101.get("route"), route, "101 line route")
    if server is not None:
        eq(l101.get("server"), server, "101 line server")
    if "upstream" not in l101 or l101["upstream"] is not None:
        raise AssertionError("101 line: \"upstream\" must be null: %r" % l101)
    return l101, wl


def b64(data):
    return base64.b64encode(data).decode()
