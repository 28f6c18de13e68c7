"""Helpers for the upgrade / tunnel cases (cases_upgrade.py).

Standard library only (the real-client case imports websockets itself).
Builds WebSocket handshakes, scripted raw backends that answer upgrade
requests, exact-head checks, tunnel log checks and socket/pipe fd counting.
"""

import base64
import functools
import hashlib
import os
import re
import resource
import selectors
import socket
import threading
import time

from harness import BackendErrors, eq, fd_kinds, register, split_head, wait_until

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MODES = ("splice", "copy")


def tcase(name=None, timeout=30):
    """Register fn(t, mode) as <name>.splice and <name>.copy: tunnel cases
    run in both pumps."""

    def deco(fn):
        for m in MODES:
            register("%s.%s" % (name or fn.__name__, m), functools.partial(fn, mode=m), timeout)
        return fn

    return deco
VIA = b"Via: 1.1 switchyard"
SWITCHING = b"Switching Protocols"


def ws_key(seed=None):
    """A valid Sec-WebSocket-Key (base64 of 16 bytes)."""
    raw = os.urandom(16) if seed is None else hashlib.sha256(str(seed).encode()).digest()[:16]
    return base64.b64encode(raw).decode()


def ws_accept(key):
    """Sec-WebSocket-Accept for key (RFC 6455 §4.2.2)."""
    if isinstance(key, str):
        key = key.encode("latin-1")
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def ws_request(key=None, target="/ws", host="test.example", upgrade="websocket",
               connection="Upgrade", version="13", method="GET", extra=(), origin="http://test.example",
               http="HTTP/1.1", lines=None):
    """An upgrade request head. Returns (bytes, e2e) where e2e is the list of
    field lines (bytes) the backend must receive byte-exact and in order.

    lines: if given, the exact field lines (bytes) to send after Host (then
    connection/upgrade/key/version/origin/extra are ignored) and e2e is
    computed by dropping hop-by-hop names."""
    if lines is None:
        key = ws_key() if key is None else key
        lines = []
        if connection is not None:
            lines.append(b"Connection: " + connection.encode("latin-1"))
        if upgrade is not None:
            lines.append(b"Upgrade: " + upgrade.encode("latin-1"))
        if key is not False:
            lines.append(b"Sec-WebSocket-Key: " + key.encode("latin-1"))
        if version is not None:
            lines.append(b"Sec-WebSocket-Version: " + version.encode("latin-1"))
        if origin is not None:
            lines.append(b"Origin: " + origin.encode("latin-1"))
        for x in extra:
            lines.append(x if isinstance(x, bytes) else ("%s: %s" % x).encode("latin-1"))
    lines = [b"Host: " + host.encode("latin-1")] + list(lines)
    head = ("%s %s %s\r\n" % (method, target, http)).encode("latin-1")
    head += b"".join(l + b"\r\n" for l in lines) + b"\r\n"
    hop = {"connection", "upgrade", "keep-alive", "proxy-connection", "te", "trailer",
           "transfer-encoding", "http2-settings"}
    nominated = set()
    for l in lines:
        n, _, v = l.partition(b":")
        if n.strip().lower() == b"connection":
            nominated |= {t.strip().lower().decode("latin-1") for t in v.split(b",")}
    e2e = [l for l in lines if l.partition(b":")[0].strip().lower().decode("latin-1") not in hop | nominated]
    return head, e2e


def resp_101(key, upgrade=b"websocket", reason=SWITCHING, extra=(), accept=None):
    """A backend's 101 head: Upgrade, Connection, Sec-WebSocket-Accept, extra lines."""
    acc = ws_accept(key) if accept is None else accept
    lines = []
    if upgrade is not None:
        lines.append(b"Upgrade: " + upgrade)
    lines.append(b"Connection: Upgrade")
    if acc is not False:
        lines.append(b"Sec-WebSocket-Accept: " + acc.encode())
    lines += list(extra)
    return b"HTTP/1.1 101 " + reason + b"\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n"


def relayed_101(key, upgrade=b"websocket", reason=SWITCHING, extra=(), accept=None):
    """What the client must get for resp_101(...) with the same arguments:
    end-to-end fields byte-exact, then Connection, Upgrade, Via."""
    acc = ws_accept(key) if accept is None else accept
    lines = [b"Sec-WebSocket-Accept: " + acc.encode()] + list(extra)
    lines += [b"Connection: Upgrade", b"Upgrade: " + upgrade, VIA]
    return b"HTTP/1.1 101 " + reason + b"\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n"


def _lname(line):
    return line.split(b":", 1)[0].lower()


XF = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")


def check_forwarded_head(head, request_line, e2e, tail, xff=b"127.0.0.1", host=b"test.example"):
    """Assert the head a backend received: the request line; the end-to-end
    lines byte-exact and in order, first; then X-Forwarded-* (any order);
    then exactly the `tail` lines (e.g. Connection: Upgrade, Upgrade: ..., Via)."""
    if not head.endswith(b"\r\n\r\n"):
        raise AssertionError("backend head not terminated: %r" % head[-100:])
    first, _, lines = split_head(head[:-4])
    eq(first, request_line, "request line at the backend")
    n = len(e2e)
    eq(lines[:n], list(e2e), "end-to-end fields at the backend (in order, byte-exact)")
    rest = lines[n:]
    tail = list(tail)
    mid = rest[:len(rest) - len(tail)] if len(rest) >= len(tail) else rest
    eq(rest[len(mid):], tail, "last fields at the backend (after the end-to-end ones); whole head %r" % head)
    eq(sorted(mid), sorted([b"X-Forwarded-For: " + xff, b"X-Forwarded-Proto: http",
                            b"X-Forwarded-Host: " + host]),
       "X-Forwarded-* fields at the backend; whole head %r" % head)


def upgrade_tail(tokens=b"websocket"):
    return [b"Connection: Upgrade", b"Upgrade: " + tokens, VIA]


PLAIN_TAIL = [VIA]  # plain requests keep the backend connection (upstream keep-alive)


# ---------------------------------------------------------------------------
# backends


def read_head(rec, timeout=10):
    """Read a request head on a ConnRecord; returns (head, extra bytes)."""
    data = rec.recv_until(b"\r\n\r\n", timeout)
    i = data.find(b"\r\n\r\n")
    if i < 0:
        raise AssertionError("backend: no complete head, got %r" % data[:300])
    return data[:i + 4], data[i + 4:]


def header_value(head, name):
    _, fields, _ = split_head(head[:-4] if head.endswith(b"\r\n\r\n") else head)
    for k, v in fields:
        if k.lower() == name.lower():
            return v
    return None


class Tun:
    """Backend side of one connection after the head (a ConnRecord wrapper)."""

    def __init__(self, rec, head, extra):
        self.rec, self.head, self.extra = rec, head, extra
        self.sock = rec.sock
        self.got = bytearray(extra)  # tunnel bytes received (after the head)
        self.eof = False

    def recv(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
        self.got += d
        return d

    def recv_exact_total(self, n, timeout=15):
        """Receive until `got` holds n bytes (AssertionError on EOF/timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("backend: %d of %d tunnel bytes after %ss" % (len(self.got), n, timeout))
            try:
                if not self.recv(left):
                    raise AssertionError("backend: EOF after %d of %d tunnel bytes" % (len(self.got), n))
            except socket.timeout:
                pass
        return bytes(self.got)

    def recv_to_eof(self, timeout=15):
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("backend: no EOF within %ss (have %d bytes)" % (timeout, len(self.got)))
            try:
                self.recv(left)
            except socket.timeout:
                pass
        return bytes(self.got)

    def send(self, data):
        self.sock.settimeout(60)
        self.sock.sendall(data)


class UpgradeBackend:
    """A RawBackend whose connections read a head, then answer.

    answer(head) -> bytes sent in one send right after the head (default:
    a valid 101 for the request's key). Then after(tun) runs with a Tun
    (default: echo until EOF, then close). Results: .tuns (list of Tun),
    .heads. Wraps t.raw_backend()."""

    def __init__(self, t, after=None, answer=None, early=b"", hold=0.0, fin_with_answer=False):
        self.after = after if after is not None else echo_until_eof
        self.fin_with_answer = fin_with_answer  # answer + FIN in one segment (TCP_CORK), then close
        self.answer = answer
        self.early = early
        self.hold = hold  # seconds to wait (recording) between head and answer
        self.tuns = []
        self.pre_answer = []  # bytes seen past the head before the answer was sent
        self.raw = t.raw_backend(self._handle)
        self.port = self.raw.port
        self.address = self.raw.address

    def _handle(self, rec):
        head, extra = read_head(rec)
        if self.hold:
            end = time.monotonic() + self.hold
            while time.monotonic() < end:
                try:
                    if not rec.recv(timeout=max(0.01, end - time.monotonic())):
                        break
                except socket.timeout:
                    break
            extra = bytes(rec.data[len(head):])
        self.pre_answer.append(extra)
        tun = Tun(rec, head, extra)
        self.tuns.append(tun)
        if self.answer is not None:
            out = self.answer(head)
        else:
            key = header_value(head, "Sec-WebSocket-Key") or ""
            out = resp_101(key)
        if self.fin_with_answer:
            rec.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            rec.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            rec.send(out + self.early)
            rec.sock.shutdown(socket.SHUT_WR)  # the FIN joins the corked segment
            rec.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            tun.recv_to_eof()
            return
        rec.send(out + self.early)
        self.after(tun)

    @property
    def connections(self):
        return self.raw.connections

    @property
    def errors(self):
        return self.raw.errors

    def expect_errors(self, reason="expected by the case"):
        """Errors in the backend threads are part of the case (see harness.BackendErrors)."""
        self.raw.expect_errors(reason)
        return self

    def wait_tuns(self, n=1, timeout=5):
        wait_until(lambda: len(self.tuns) >= n, timeout, what="%d backend connection(s)" % n)
        return self.tuns


def echo_until_eof(tun):
    """Echo everything (incl. early bytes) until EOF, then close."""
    if tun.extra:
        tun.send(tun.extra)
    while True:
        try:
            d = tun.recv(timeout=30)
        except socket.timeout:
            return
        if not d:
            return
        tun.send(d)


# ---------------------------------------------------------------------------
# client side


def read_101(c, timeout=10):
    """Read a response head through a harness Client (bytes incl. CRLFCRLF)."""
    return c.rd.read_until(b"\r\n\r\n", time.monotonic() + timeout)


def client_recv_exact(c, n, timeout=15):
    """n bytes from a harness Client (buffered data first)."""
    out = bytearray()
    c.rd.read_exact(n, time.monotonic() + timeout, out.extend)
    return bytes(out)


def client_expect_eof(c, timeout=5):
    """Assert the peer closes without more bytes (reset counts as EOF)."""
    c.expect_closed(timeout)


# ---------------------------------------------------------------------------
# logs


def tunnel_lines(px):
    return [a for a in px.access_lines() if a.get("event") == "tunnel"]


def wait_tunnel_line(px, timeout=5, n=1):
    px.wait_access(n, lambda a: a.get("event") == "tunnel", timeout)
    time.sleep(0.05)  # a duplicate line would show up now
    lines = tunnel_lines(px)
    eq(len(lines), n, "number of tunnel access-log lines (%r)" % lines[:3])
    return lines


def check_tunnel_line(px, mode, closed_by, reason, up=None, down=None, route="all", server=None,
                      timeout=5):
    """Wait for the one tunnel line and check it; also that a status 101
    access line came before it. Returns the tunnel line."""
    lines = wait_tunnel_line(px, timeout)
    tl = lines[0]
    eq(tl.get("mode"), mode, "tunnel log mode")
    eq(tl.get("closed_by"), closed_by, "tunnel log closed_by (line %r)" % tl)
    if isinstance(reason, re.Pattern):
        if not reason.fullmatch(str(tl.get("reason"))):
            raise AssertionError("tunnel log reason %r does not match /%s/" % (tl.get("reason"), reason.pattern))
    else:
        eq(tl.get("reason"), reason, "tunnel log reason (line %r)" % tl)
    if up is not None:
        eq(tl.get("bytes_up"), up, "tunnel log bytes_up")
    if down is not None:
        eq(tl.get("bytes_down"), down, "tunnel log bytes_down")
    if not isinstance(tl.get("duration_ms"), int):
        raise AssertionError("tunnel log duration_ms missing or not an integer: %r" % tl)
    eq(tl.get("route"), route, "tunnel log route")
    if server is not None:
        eq(tl.get("server"), server, "tunnel log server")
    all_lines = px.access_lines()
    i_t = all_lines.index(tl)
    s101 = [i for i, a in enumerate(all_lines) if a.get("status") == 101 and a.get("event") is None
            and a.get("session") == tl.get("session")]
    if not s101 or s101[0] > i_t:
        raise AssertionError("no status 101 access line before the tunnel line: %r" % all_lines)
    return tl


# ---------------------------------------------------------------------------
# descriptors


def wait_sockets(px, base, timeout=5):
    """Assert the proxy's socket fds return to `base` (splice mode keeps idle
    pipes in a bounded pool, so pipes are checked separately)."""
    deadline = time.monotonic() + timeout
    while True:
        k = fd_kinds(px.pid)
        if k["socket"] == base:
            return k
        if time.monotonic() > deadline:
            raise AssertionError("socket fd leak: %d sockets open, baseline %d: %s"
                                 % (k["socket"], base, " ".join(px.fds())))
        time.sleep(0.02)


def check_fds_back(px, base_kinds, max_pool_pipes, timeout=5):
    """Sockets exactly back to baseline; 'other' fds too; pipe fds at most
    baseline + 2 * max_pool_pipes (the pool)."""
    k = wait_sockets(px, base_kinds["socket"], timeout)
    eq(k["other"], base_kinds["other"], "non-socket non-pipe fds after the tunnels closed")
    if k["pipe"] > base_kinds["pipe"] + 2 * max_pool_pipes:
        raise AssertionError("pipe fds %d > baseline %d + pool of %d pipes"
                             % (k["pipe"], base_kinds["pipe"], max_pool_pipes))
    return k


def open_tunnels(port, n, seed, socks):
    """Open n WebSocket tunnels through the proxy on port, all requests sent
    first, then each 101 read and checked byte-exact. The sockets are
    appended to socks as they open (the caller closes them, also when this
    raises); returns the keys."""
    keys = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
        k = ws_key(seed="%s-%d" % (seed, i))
        keys.append(k)
        s.sendall(ws_request(k)[0])
    for i, s in enumerate(socks[-n:]):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise AssertionError("tunnel %d: EOF before the 101 (got %r)" % (i, buf))
            buf += d
        eq(buf, relayed_101(keys[i]), "101 of tunnel %d" % i)
    return keys


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ---------------------------------------------------------------------------
# many connections: a single-threaded selector backend


class SelectorEchoBackend(BackendErrors):
    """Upgrade backend for many connections in one thread: reads a head,
    answers a valid 101, then echoes. .heads: number of heads answered;
    .open: connections currently open; .max_open; .eofs."""

    def __init__(self, backlog=4096):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.heads = 0
        self.open = 0
        self.max_open = 0
        self.eofs = 0
        self.errors = []
        self.stopped = False
        self.lock = threading.Lock()
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()

    def _loop(self):
        try:
            while not self.stopped:
                for key, _ in self.sel.select(0.2):
                    if key.data is None:
                        self._accept()
                    else:
                        self._io(key.fileobj, key.data)
        except Exception as e:  # the loop is the whole backend: record why it ended
            self._record_error(e)

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except (BlockingIOError, OSError):
                return
            c.setblocking(False)
            with self.lock:
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            self.sel.register(c, selectors.EVENT_READ, {"buf": bytearray(), "up": False})

    def _close(self, c):
        self.sel.unregister(c)
        c.close()
        with self.lock:
            self.open -= 1

    def _io(self, c, st):
        try:
            d = c.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._record_error(e)
            d = b""
        if not d:
            self.eofs += 1
            self._close(c)
            return
        try:
            if st["up"]:
                c.setblocking(True)
                c.sendall(d)
                c.setblocking(False)
                return
            st["buf"] += d
            i = st["buf"].find(b"\r\n\r\n")
            if i < 0:
                return
            head, rest = bytes(st["buf"][:i + 4]), bytes(st["buf"][i + 4:])
            st["up"] = True
            key = header_value(head, "Sec-WebSocket-Key") or ""
            c.setblocking(True)
            c.sendall(resp_101(key) + rest)
            c.setblocking(False)
            self.heads += 1
        except OSError as e:
            self._record_error(e)
            self._close(c)

    def close(self):
        self.stopped = True
        self.th.join(2)
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
