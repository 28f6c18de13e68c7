"""switchyard end-to-end harness (standard library only).

Cases live in tests/e2e/cases_*.py and register themselves with @case; the
runner (run.py) forks one process per case, gives it a Ctx `t`, and cleans up
everything the case created through `t`. See README.md for the API.
"""

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import zlib

# ---------------------------------------------------------------------------
# registry

CASES = []  # list of Case, in registration order
_module = "main"  # set by the runner while it imports a cases_*.py module


class Case:
    def __init__(self, name, fn, timeout):
        self.name, self.fn, self.timeout = name, fn, timeout


def register(name, fn, timeout=30):
    """Register fn(t) as case '<module>.<name>' (for table-driven corpora)."""
    full = "%s.%s" % (_module, name)
    if any(c.name == full for c in CASES):
        raise ValueError("duplicate case name " + full)
    CASES.append(Case(full, fn, timeout))
    return fn


def case(name=None, timeout=30):
    """Decorator: @case() or @case("name", timeout=60) on a function fn(t)."""

    def deco(fn):
        register(name or fn.__name__, fn, timeout)
        return fn

    return deco


class CaseTimeout(Exception):
    pass


class Skip(Exception):
    """Raised by t.skip(reason): the case is reported as SKIP, not PASS/FAIL."""


# ---------------------------------------------------------------------------
# small helpers

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def eq(got, want, what="value"):
    """assert got == want with a readable message."""
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def blackhole_port(t):
    """A loopback port whose listener's accept queue is full: a SYN to it is
    dropped, so a connect hangs until the connector's own timeout (a network
    namespace with an unroutable address would do the same, but needs tools
    the suite does not otherwise require). None when the kernel here does not
    enforce the backlog."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    t.held.append(ls)
    port = ls.getsockname()[1]
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        t.held.append(s)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.5)
    t.held.append(probe)
    try:
        probe.connect(("127.0.0.1", port))
        return None
    except (socket.timeout, OSError):
        return port


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Poll pred() until truthy; return its value or raise AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def blob(n, seed=1):
    """n deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def dur(v):
    """Duration for the config: int/float = milliseconds, str passed as is."""
    if isinstance(v, (int, float)):
        return "%dms" % v
    return v


class Raw:
    """A raw libconfig value inserted verbatim into a generated config."""

    def __init__(self, text):
        self.text = text


def _cfg_value(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(_cfg_value(x) for x in v) + " ]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % s


def _server_addr(s):
    """Server spec -> (address text, weight)."""
    weight = 1
    if isinstance(s, tuple):
        s, weight = s
    if hasattr(s, "port"):
        s = s.port
    if isinstance(s, int):
        s = "127.0.0.1:%d" % s
    return s, weight


DEFAULT_TIMEOUTS = {
    "header": "10s",
    "keepalive": "60s",
    "connect": "5s",
    "response": "60s",
    "send": "60s",
    "tunnel_idle": "1h",
    # the product's default is 10s; 3s bounds what a SIGTERM at cleanup costs
    "shutdown_grace": "3s",
}
DEFAULT_LIMITS = {
    "header_bytes": 16384,
    "header_fields": 100,
    "uri_bytes": 8192,
    # small enough that the proxy's descriptor needs (about 2.5 per
    # connection, see fdlimit.h) fit every machine's limit without a warning
    "max_connections": 1000,
}


def make_config(port, upstreams, routes=None, timeouts=None, limits=None, extra="",
                via="switchyard", log_level="info", access_log="stderr",
                error_log="stderr", workers=1):
    """Generate libconfig text.

    upstreams: {name: [server, ...]} where a server is a port (int), a backend
      object (has .port), "host:port", or (any of those, weight).
    routes: list of dicts (keys name, host, path_prefix, upstream, plus any
      other key rendered as a libconfig value; use Raw() for verbatim text).
      Default: one catch-all route "all" to the first upstream.
    timeouts / limits: dict overriding DEFAULT_TIMEOUTS / DEFAULT_LIMITS
      (timeouts may be ints in ms); a value of None drops the key.
    extra: raw text appended at the end.
    workers: event loops (default 1: balancing, pools and connection limits
      are per worker, so most cases want one; None leaves the key out).
    """
    tmo = dict(DEFAULT_TIMEOUTS)
    tmo.update(timeouts or {})
    lim = dict(DEFAULT_LIMITS)
    lim.update(limits or {})
    if routes is None:
        routes = [{"name": "all", "upstream": next(iter(upstreams))}]
    out = []
    out.append('listen = ( { address = "127.0.0.1:%d"; } );' % port)
    out.append("timeouts = { %s };" % " ".join(
        "%s = %s;" % (k, _cfg_value(dur(v))) for k, v in tmo.items() if v is not None))
    out.append("limits = { %s };" % " ".join(
        "%s = %s;" % (k, _cfg_value(v)) for k, v in lim.items() if v is not None))
    ups = []
    for name, servers in upstreams.items():
        srv = ", ".join('{ address = "%s"; weight = %d; }' % _server_addr(s) for s in servers)
        ups.append('  { name = "%s"; servers = ( %s ); }' % (name, srv))
    out.append("upstreams = (\n" + ",\n".join(ups) + "\n);")
    rts = []
    for r in routes:
        rts.append("  { " + " ".join("%s = %s;" % (k, _cfg_value(v)) for k, v in r.items()) + " }")
    out.append("routes = (\n" + ",\n".join(rts) + "\n);")
    out.append('access_log = "%s";' % access_log)
    out.append('error_log = "%s";' % error_log)
    out.append('log_level = "%s";' % log_level)
    out.append('via = "%s";' % via)
    if workers is not None:
        out.append("workers = %d;" % workers)
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


def free_port():
    """A port that was free a moment ago (bind 0, read, close)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _listening_inodes_netlink(port=None):
    """Inodes of TCP listeners on port (None: any port), via NETLINK_SOCK_DIAG (the kernel
    filters on the LISTEN state, so this stays fast and consistent when the
    machine has many connections, unlike reading /proc/net/tcp)."""
    import struct
    found = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
        try:
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
            hdr = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0)  # SOCK_DIAG_BY_FAMILY, REQUEST|DUMP
            nl.sendall(hdr + req)
            done = False
            while not done:
                data = nl.recv(1 << 16)
                off = 0
                while off + 16 <= len(data):
                    ln, typ = struct.unpack_from("=IH", data, off)
                    if typ in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                        if typ == 2:
                            raise OSError("sock_diag error")
                        done = True
                        break
                    body = off + 16
                    sport = struct.unpack_from(">H", data, body + 4)[0]
                    inode = struct.unpack_from("=I", data, body + 4 + 48 + 16)[0]
                    if port is None or sport == port:
                        found.add(str(inode))
                    off += (ln + 3) & ~3
                if not data:
                    break
        finally:
            nl.close()
    return found


def _listening_inodes(port=None):
    try:
        return _listening_inodes_netlink(port)
    except OSError:
        pass
    found = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    local, st, inode = parts[1], parts[3], parts[9]
                    if st == "0A" and (port is None or int(local.rsplit(":", 1)[1], 16) == port):
                        found.add(inode)
        except OSError:
            pass
    return found


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
               "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
               "0B": "CLOSING"}


def _hexaddr(a):
    ip, port = a.rsplit(":", 1)
    if len(ip) == 8:
        host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(ip)[::-1])
    else:
        raw = bytes.fromhex(ip)
        host = "[%s]" % socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return "%s:%d" % (host, int(port, 16))


def _socket_descriptions():
    """{"socket:[inode]": " (tcp LOCAL -> REMOTE STATE)" or " (unix PATH)"}, for messages."""
    out = {}
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    p = line.split()
                    out["socket:[%s]" % p[9]] = " (tcp %s -> %s %s)" % (_hexaddr(p[1]), _hexaddr(p[2]),
                                                                       _TCP_STATES.get(p[3], p[3]))
        except (OSError, ValueError):
            pass
    try:
        with open("/proc/net/unix") as fh:
            next(fh)
            for line in fh:
                p = line.split()
                if len(p) >= 7:
                    out["socket:[%s]" % p[6]] = " (unix%s)" % (" " + p[7] if len(p) > 7 else "")
    except OSError:
        pass
    return out


def wait_listen(port, timeout=10):
    """Wait until something listens on 127.0.0.1:port (reads /proc/net/tcp)."""
    wait_until(lambda: _listening_inodes(port), timeout, what="a listener on port %d" % port)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


PIPE_POOL = 1024  # idle pipes the proxy keeps for splice (src/proxy.c PROXY_PIPE_POOL)


def fd_kinds(pid):
    """{'socket': n, 'pipe': n, 'other': n} of a process."""
    out = {"socket": 0, "pipe": 0, "other": 0}
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        if link.startswith("socket:"):
            out["socket"] += 1
        elif link.startswith("pipe:"):
            out["pipe"] += 1
        else:
            out["other"] += 1
    return out


def fd_list(pid):
    out = []
    d = "/proc/%d/fd" % pid
    for n in sorted(os.listdir(d), key=int):
        try:
            out.append("%s->%s" % (n, os.readlink(os.path.join(d, n))))
        except OSError:
            pass
    return out


# ---------------------------------------------------------------------------
# HTTP message parsing (client and backend side)


def split_head(head):
    """bytes head (without final CRLFCRLF) -> (first line, [(name, value)], [raw lines])."""
    lines = head.split(b"\r\n")
    fields = []
    for ln in lines[1:]:
        name, _, value = ln.partition(b":")
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return lines[0], fields, lines[1:]


class Message:
    """Common accessors over .fields (list of (name, value) str pairs)."""

    fields = ()

    def get(self, name, default=None):
        n = name.lower()
        for k, v in self.fields:
            if k.lower() == n:
                return v
        return default

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.fields if k.lower() == n]

    def has(self, name):
        return self.get(name) is not None


class Response(Message):
    """A response as read by Client.read_response."""

    def __init__(self):
        self.version = self.reason = ""
        self.status = 0
        self.head = b""  # raw head incl. final CRLFCRLF
        self.lines = []  # raw field lines (bytes, no CRLF)
        self.fields = []
        self.body = b""  # decoded payload (empty when store=False)
        self.body_raw = b""  # bytes as on the wire (chunked framing kept)
        self.body_len = 0
        self.sha256 = ""
        self.chunked = False
        self.close_delimited = False
        self.trailers = []
        self.interim = []  # earlier 1xx Response objects

    def __repr__(self):
        return "<Response %d %s %r body=%d>" % (self.status, self.reason, self.fields, self.body_len)


class ProtocolError(Exception):
    pass


class _Reader:
    """Buffered reader over a socket with a deadline per call."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def _fill(self, deadline, n=65536):
        if self.eof:
            return False
        t = deadline - time.monotonic()
        if t <= 0:
            raise socket.timeout("read timed out")
        self.sock.settimeout(t)
        try:
            d = self.sock.recv(n)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_until(self, sep, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("no %r within %d bytes" % (sep, limit))
            if not self._fill(deadline):
                raise ProtocolError("EOF before %r (have %r)" % (sep, bytes(self.buf[:200])))

    def read_exact(self, n, deadline, sink):
        while n > 0:
            if not self.buf and not self._fill(deadline):
                raise ProtocolError("EOF with %d body bytes missing" % n)
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def read_to_eof(self, deadline, sink):
        while True:
            if self.buf:
                sink(bytes(self.buf))
                self.buf.clear()
            if not self._fill(deadline):
                return


def _read_chunked(rd, deadline, sink, raw_sink):
    """Decode a chunked body; returns trailer field lines. Strict on framing."""
    while True:
        line = rd.read_until(b"\r\n", deadline, limit=4096)
        raw_sink(line)
        size_txt = line[:-2].split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]+", size_txt):
            raise ProtocolError("bad chunk size line %r" % line)
        size = int(size_txt, 16)
        if size == 0:
            trailers = []
            while True:
                t = rd.read_until(b"\r\n", deadline, limit=65536)
                raw_sink(t)
                if t == b"\r\n":
                    return trailers
                trailers.append(t[:-2])
        rd.read_exact(size, deadline, lambda d: (sink(d), raw_sink(d)))
        crlf = bytearray()
        rd.read_exact(2, deadline, crlf.extend)
        raw_sink(bytes(crlf))
        if crlf != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                  host="test.example"):
    """Bytes of a request. headers: list of (name, value) or raw b"Name: v"
    lines, sent in order. Host (when host is not None and headers has none)
    goes first; Content-Length is added when body is given and neither CL nor
    TE is present."""
    headers = list(headers or [])
    names = [h[0].lower() if isinstance(h, tuple) else h.split(b":")[0].decode("latin-1").lower()
             for h in headers]
    lines = []
    if host is not None and "host" not in names:
        lines.append(b"Host: " + host.encode("latin-1"))
    for h in headers:
        if isinstance(h, tuple):
            n, v = h
            lines.append(n.encode("latin-1") + b": " + (v if isinstance(v, bytes) else str(v).encode("latin-1")))
        else:
            lines.append(h)
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    m = method.encode() if isinstance(method, str) else method
    t = target.encode("latin-1") if isinstance(target, str) else target
    v = version.encode() if isinstance(version, str) else version
    out = m + b" " + t + b" " + v + b"\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n"
    return out + (body or b"")


def chunked(data, size=1000, trailers=(), ext=b""):
    """Encode data as a chunked body (optional chunk extension and trailers)."""
    out = bytearray()
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += b"%x%s\r\n" % (len(part), ext) + part + b"\r\n"
    out += b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    return bytes(out)


# ---------------------------------------------------------------------------
# client


class Client:
    """A TCP client connection to the proxy (or anything)."""

    def __init__(self, port, timeout=10, host="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rd = _Reader(self.sock)
        self.local_port = self.sock.getsockname()[1]
        self.closed = False

    def send(self, data):
        self.sock.settimeout(30)
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                host="test.example"):
        """Send a request built by build_request()."""
        self.send(build_request(method, target, headers, body, version, host))

    def get(self, target="/", timeout=10, **kw):
        """Send a GET (kwargs as for request) and return read_response()."""
        self.request("GET", target, **kw)
        return self.read_response(timeout=timeout)

    def read_response(self, method="GET", timeout=10, store=True, on_chunk=None,
                      keep_interim=True):
        """Read one final response (1xx interim responses are collected in
        .interim). The body is decoded by its framing; HEAD/1xx/204/304 have
        none. store=False keeps only length and sha256; on_chunk(bytes) is
        called for each piece of payload (may sleep to read slowly)."""
        deadline = time.monotonic() + timeout
        interim = []
        while True:
            r = Response()
            r.head = self.rd.read_until(b"\r\n\r\n", deadline)
            first, r.fields, r.lines = split_head(r.head[:-4])
            m = re.fullmatch(rb"(HTTP/\d\.\d) (\d{3}) ?(.*)", first)
            if not m:
                raise ProtocolError("bad status line %r" % first)
            r.version, r.status, r.reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        r.interim = interim
        h = hashlib.sha256()
        body, raw = bytearray(), bytearray()

        def sink(d):
            h.update(d)
            r.body_len += len(d)
            if store:
                body.extend(d)
            if on_chunk:
                on_chunk(d)

        def raw_sink(d):
            if store:
                raw.extend(d)

        te = r.get("Transfer-Encoding")
        cl = r.get("Content-Length")
        if method == "HEAD" or r.status in (101, 204, 304):
            pass
        elif te is not None:
            if te.lower() != "chunked":
                raise ProtocolError("unexpected Transfer-Encoding %r" % te)
            r.chunked = True
            r.trailers = _read_chunked(self.rd, deadline, sink, raw_sink)
        elif cl is not None:
            self.rd.read_exact(int(cl), deadline, lambda d: (sink(d), raw_sink(d)))
        else:
            r.close_delimited = True
            self.rd.read_to_eof(deadline, lambda d: (sink(d), raw_sink(d)))
        r.body, r.body_raw, r.sha256 = bytes(body), bytes(raw), h.hexdigest()
        return r

    def read_until_close(self, timeout=5):
        """All bytes until EOF (or RST); AssertionError if not closed in time."""
        deadline = time.monotonic() + timeout
        out = bytearray()
        try:
            self.rd.read_to_eof(deadline, out.extend)
        except socket.timeout:
            raise AssertionError("connection not closed within %.1fs (got %r)" % (timeout, bytes(out[:300])))
        return bytes(out)

    def expect_closed(self, timeout=3):
        """Assert the peer closes the connection without sending more bytes."""
        extra = self.read_until_close(timeout)
        if extra:
            raise AssertionError("expected close, got extra bytes %r" % extra[:300])

    def is_open_after(self, seconds):
        """True if no EOF and no data arrives within `seconds` (data raises)."""
        try:
            got = self.rd._fill(time.monotonic() + seconds)
        except socket.timeout:
            return True
        if got:
            raise AssertionError("unexpected bytes %r" % bytes(self.rd.buf[:300]))
        return False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


def expect_proxy_error(client, code, timeout=5):
    """Read until close and assert the exact proxy-generated error response:
    HTTP/1.1 <code> <Reason>, Content-Type: text/plain, Content-Length: n,
    Connection: close (426 may add Sec-WebSocket-Version: 13), then a one-line
    body ending in LF, then EOF. Returns the body line."""
    data = client.read_until_close(timeout)
    if not data:
        raise AssertionError("connection closed without a response (want %d)%s"
                             % (code, " [reset]" if client.rd.reset else ""))
    return check_error_response(data, code)


def check_error_response(data, code):
    """Assert bytes `data` are exactly one proxy-generated error response
    (see expect_proxy_error); returns the body line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("incomplete response head %r" % data[:300])
    first, fields, lines = split_head(head)
    want_first = ("HTTP/1.1 %d %s" % (code, REASONS[code])).encode()
    if first != want_first:
        raise AssertionError("status line %r, want %r" % (first, want_first))
    want = [b"Content-Type: text/plain", b"Content-Length: %d" % len(body), b"Connection: close"]
    got = list(lines)
    if code == 426:  # names the protocol it requires (RFC 9110 §15.5.22)
        for extra in (b"Sec-WebSocket-Version: 13", b"Upgrade: websocket"):
            if extra in got:
                got.remove(extra)
    if got != want:
        raise AssertionError("error response fields %r, want %r (body %r)" % (lines, want, body[:200]))
    if not body.endswith(b"\n") or body.count(b"\n") != 1 or len(body) < 2:
        raise AssertionError("error body is not one line: %r" % body[:200])
    return body[:-1].decode("latin-1")


# ---------------------------------------------------------------------------
# backends


class BackendErrors:
    """Mixin of every test backend: .errors (exceptions of its threads, as
    text) fail the case at cleanup unless the case called expect_errors().
    Errors raised after the harness started closing the backend don't count."""

    errors_ok = None  # reason the case gave, or None

    def expect_errors(self, reason="expected by the case"):
        """Errors in this backend's threads are part of the case: don't fail on them."""
        self.errors_ok = reason or "expected by the case"
        return self

    def _record_error(self, e):
        if not getattr(self, "stopped", False):
            self.errors.append(e if isinstance(e, str) else "%s: %s" % (type(e).__name__, e))


class _Listener(BackendErrors):
    """Accept loop on 127.0.0.1:0; each connection is handled in a thread."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []  # accepted sockets
        self.errors = []  # exceptions raised in handler threads (as text)
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, addr = self.lsock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.stopped:  # accepted while close() ran: it would stay open
                    c.close()
                    return
                self.conns.append(c)
                idx = len(self.conns) - 1
            threading.Thread(target=self._run, args=(c, idx), daemon=True).start()

    def _run(self, c, idx):
        try:
            self.handle(c, idx)
        except Exception as e:  # recorded; fails the case at cleanup unless expected
            self._record_error(e)
        finally:
            try:
                c.close()
            except OSError:
                pass

    @property
    def connections(self):
        return len(self.conns)

    def close(self):
        with self.lock:
            self.stopped = True
            conns = list(self.conns)
        close_listener(self.lsock)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass


def close_listener(lsock):
    """Stop listening now: shutdown wakes a thread blocked in accept() (a
    plain close would leave the socket listening until that accept returns)."""
    try:
        lsock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        lsock.close()
    except OSError:
        pass


class ConnRecord:
    """What a RawBackend connection received; passed to the handler."""

    def __init__(self, sock, index):
        self.sock, self.index = sock, index
        self.data = bytearray()
        self.eof = False

    def recv(self, n=65536, timeout=10):
        """Receive and record; b'' on EOF/reset."""
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(n)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
        self.data += d
        return d

    def recv_until(self, sep, timeout=10):
        """Receive until the recorded data contains sep; returns all data."""
        deadline = time.monotonic() + timeout
        while sep not in self.data:
            if not self.recv(timeout=max(0.01, deadline - time.monotonic())):
                break
        return bytes(self.data)

    def read_all(self, timeout=10):
        """Receive and record until EOF (or timeout)."""
        deadline = time.monotonic() + timeout
        try:
            while self.recv(timeout=max(0.01, deadline - time.monotonic())):
                pass
        except socket.timeout:
            pass
        return bytes(self.data)

    def send(self, data):
        self.sock.settimeout(30)
        self.sock.sendall(data)


class RawBackend(_Listener):
    """TCP backend; handler(rec: ConnRecord) has full control of each
    connection. Default handler records everything until EOF. Records are in
    .records; .received is all bytes received over all connections."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda rec: rec.read_all(timeout=30))
        self.records = []
        super().__init__()

    def handle(self, c, idx):
        rec = ConnRecord(c, idx)
        with self.lock:
            self.records.append(rec)
        self.handler(rec)

    @property
    def received(self):
        return b"".join(bytes(r.data) for r in self.records)


class Reply:
    """Scripted answer of an HttpBackend to one request.

    status, reason (default standard), version ("HTTP/1.1"),
    headers: list of (name, value) or raw b"Name: v" lines, sent in order;
    body: bytes, an iterable of bytes, or callable(req) -> bytes (called after
      the request body was read);
    framing: "cl" (adds Content-Length unless present; for an iterable give
      length=), "chunked" (adds Transfer-Encoding: chunked unless present;
      chunk_size, trailers), "close" (no framing, close after body),
      "none" (no body, nothing added);
    interim: list of raw 1xx responses, sent after the head was read and before
      the request body is read (e.g. CONTINUE);
    delay: seconds to wait before answering (after reading the body);
    read_delay: seconds to wait before reading the request body;
    read_chunk / read_sleep: read the body in pieces of read_chunk bytes with a
      sleep between them (slow reader);
    raw: bytes sent verbatim instead of a generated response;
    hang: never answer (keep the connection open until the peer closes);
    close: close the connection after this answer (default True).
    """

    def __init__(self, status=200, body=b"", headers=(), framing="cl", reason=None,
                 version="HTTP/1.1", length=None, chunk_size=16384, trailers=(),
                 interim=(), delay=0, read_delay=0, read_chunk=65536, read_sleep=0,
                 raw=None, hang=False, close=True):
        self.__dict__.update(locals())
        del self.__dict__["self"]


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request(Message):
    """A request as received by an HttpBackend."""

    def __init__(self):
        self.conn = 0  # index of the backend connection
        self.head = b""  # raw head incl. final CRLFCRLF
        self.request_line = b""
        self.method = self.target = self.version = ""
        self.lines = []  # raw field lines (bytes, no CRLF)
        self.fields = []
        self.body = b""  # decoded payload (kept up to store_limit bytes)
        self.body_raw = b""  # wire bytes of the body (up to store_limit)
        self.body_len = 0
        self.sha256 = ""
        self.trailers = []
        self.complete = False  # body fully read
        self.error = None

    def __repr__(self):
        return "<Request %s %s body=%d>" % (self.method, self.target, self.body_len)


class HttpBackend(_Listener):
    """HTTP/1.1 backend that records every request and answers per script.

    script: a Reply (used for every request), a list of Reply (used in order,
    the last one repeats), or callable(req) -> Reply (req has the head; body
    not read yet). Requests are appended to .requests as soon as their head
    arrives (req.complete tells whether the body was read)."""

    store_limit = 16 << 20

    def __init__(self, script=None):
        self.script = script if script is not None else Reply(200, b"ok\n")
        self.requests = []
        self._n = 0
        super().__init__()

    def _reply_for(self, req):
        s = self.script
        if callable(s) and not isinstance(s, Reply):
            return s(req)
        if isinstance(s, list):
            with self.lock:
                i = min(self._n, len(s) - 1)
                self._n += 1
            return s[i]
        return s

    def wait_requests(self, n, timeout=5, complete=True):
        """Wait until at least n requests (complete ones by default) arrived."""
        wait_until(lambda: sum(1 for r in self.requests if r.complete or not complete) >= n,
                   timeout, what="%d request(s) at backend %d (have %d)" % (n, self.port, len(self.requests)))
        return self.requests

    def handle(self, c, idx):
        rd = _Reader(c)
        while True:
            far = time.monotonic() + 60
            try:
                head = rd.read_until(b"\r\n\r\n", far)
            except ProtocolError:
                return  # EOF between requests
            req = Request()
            req.conn = idx
            req.head = head
            first, req.fields, req.lines = split_head(head[:-4])
            req.request_line = first
            parts = first.decode("latin-1").split(" ")
            if len(parts) == 3:
                req.method, req.target, req.version = parts
            with self.lock:
                self.requests.append(req)
            rep = self._reply_for(req)
            for i in rep.interim:
                c.sendall(i)
            if rep.read_delay:
                time.sleep(rep.read_delay)
            self._read_body(rd, req, rep)
            req.complete = True
            if rep.delay:
                time.sleep(rep.delay)
            if rep.hang:
                rd.read_to_eof(time.monotonic() + 3600, lambda d: None)
                return
            closing = self._send(c, req, rep)
            if closing or rd.eof:
                return

    def _read_body(self, rd, req, rep):
        h = hashlib.sha256()
        body, raw = bytearray(), bytearray()
        lim = self.store_limit

        def sink(d):
            h.update(d)
            req.body_len += len(d)
            if len(body) < lim:
                body.extend(d)
            if rep.read_sleep:
                time.sleep(rep.read_sleep)

        def raw_sink(d):
            if len(raw) < lim:
                raw.extend(d)

        far = time.monotonic() + 600
        te, cl = req.get("Transfer-Encoding"), req.get("Content-Length")
        try:
            if te is not None and te.lower() == "chunked":
                req.trailers = _read_chunked(rd, far, sink, raw_sink)
            elif cl is not None:
                n = int(cl)
                while n > 0:
                    step = min(n, rep.read_chunk)
                    rd.read_exact(step, far, lambda d: (sink(d), raw_sink(d)))
                    n -= step
        except (ProtocolError, ValueError) as e:
            req.error = str(e)
            raise
        finally:
            req.body, req.body_raw, req.sha256 = bytes(body), bytes(raw), h.hexdigest()

    def _send(self, c, req, rep):
        c.settimeout(600)
        if rep.raw is not None:
            c.sendall(rep.raw)
            return rep.close
        body = rep.body(req) if callable(rep.body) else rep.body
        reason = rep.reason if rep.reason is not None else REASONS.get(rep.status, "Whatever")
        lines = []
        names = []
        for h in rep.headers:
            if isinstance(h, tuple):
                names.append(h[0].lower())
                lines.append(("%s: %s" % h).encode("latin-1"))
            else:
                names.append(h.split(b":")[0].decode("latin-1").lower())
                lines.append(h)
        if rep.framing == "cl" and "content-length" not in names:
            n = len(body) if isinstance(body, (bytes, bytearray)) else rep.length
            lines.append(b"Content-Length: %d" % n)
        if rep.framing == "chunked" and "transfer-encoding" not in names:
            lines.append(b"Transfer-Encoding: chunked")
        head = ("%s %d %s\r\n" % (rep.version, rep.status, reason)).encode("latin-1")
        head += b"".join(l + b"\r\n" for l in lines) + b"\r\n"
        c.sendall(head)
        pieces = [body] if isinstance(body, (bytes, bytearray)) else body
        if rep.framing == "chunked":
            for p in pieces:
                for i in range(0, len(p), rep.chunk_size):
                    part = p[i:i + rep.chunk_size]
                    if part:
                        c.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            c.sendall(b"0\r\n" + b"".join(t + b"\r\n" for t in rep.trailers) + b"\r\n")
        elif rep.framing in ("cl", "close"):
            for p in pieces:
                if p:
                    c.sendall(p)
        return rep.close or rep.framing == "close"


# ---------------------------------------------------------------------------
# the proxy under test

# what ASan, LSan, UBSan (and TSan/MSan) print when they find something
_SAN_RE = re.compile(r"ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|WARNING: (?:Thread|Memory)Sanitizer"
                     r"|runtime error:|Sanitizer:DEADLYSIGNAL|SUMMARY: \w*Sanitizer")


def sanitizer_report(text):
    """The start of the first sanitizer report in text (str or bytes), or None."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _SAN_RE.search(text or "")
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:start + 600].strip()


def check_sanitizer(text, what="switchyard"):
    """Raise AssertionError if text (a stderr or a log) holds a sanitizer report."""
    rep = sanitizer_report(text)
    if rep:
        raise AssertionError("sanitizer report from %s: %s" % (what, rep))


def as_root(config_text):
    """The tests run as root, where switchyard refuses to serve without a
    `user` key: a config that has none says user = "root" at its end (so no
    earlier line number moves). cases_user tests the key itself."""
    if os.geteuid() != 0 or re.search(r"^\s*user\s*=", config_text, re.M):
        return config_text
    return config_text + '\nuser = "root";\n'


class Proxy:
    """A running switchyard. Created by t.proxy()."""

    def __init__(self, ctx, config_text, port, tag, env=None, wait_started=True):
        self.ctx = ctx
        self.port = port
        self.config_path = os.path.join(ctx.dir, "%s.conf" % tag)
        self.log_path = os.path.join(ctx.dir, "%s.log" % tag)
        config_text = as_root(config_text)
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.config_text = config_text
        self.stopped = False
        self.exit_code = None
        self.fd_check = None  # why the fd check at cleanup is off (None: on)
        self.fd_baseline = None  # fd_kinds() + list once started and idle
        self.fd_transient = set()  # baseline sockets that were health checks in flight
        self._logf = open(self.log_path, "wb")
        penv = None
        if env:
            penv = dict(os.environ)
            penv.update(env)
        self.proc = subprocess.Popen([ctx.binary, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, env=penv)
        self.pid = self.proc.pid
        try:
            self._wait_listening(wait_started=wait_started)
        except BaseException:
            self.kill()
            raise
        # idle right after startup: what cleanup compares against
        self.fd_baseline = self.fd_snapshot()
        # ...except TCP connections: with no client yet, those are health checks in
        # flight, which come and go (a 100 ms interval can catch one here)
        desc = _socket_descriptions()
        self.fd_transient = {link for _, link, kind in self.fd_baseline[1]
                             if kind == "socket" and desc.get(link, "").startswith(" (tcp")}

    def _started_log(self):
        """Where the "started" line goes: a path, or None when the config
        hides it (log_level warn/error). Read from the config text."""
        m = re.search(r'^\s*log_level\s*=\s*"(\w+)"', self.config_text, re.M)
        if m and m.group(1) in ("warn", "error"):
            return None
        m = re.search(r'^\s*error_log\s*=\s*"([^"]*)"', self.config_text, re.M)
        if m and m.group(1) != "stderr":
            return os.path.join(os.path.dirname(self.config_path), m.group(1))
        return self.log_path

    def _wait_listening(self, timeout=10, wait_started=True):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stopped = True
                self.exit_code = self.proc.returncode
                check_sanitizer(self.log(), "the proxy at startup")
                raise AssertionError("switchyard exited with %d at startup: %s"
                                     % (self.proc.returncode, self.log()[-1500:].strip()))
            inodes = _listening_inodes(self.port)
            if inodes:
                try:
                    mine = {os.readlink("/proc/%d/fd/%s" % (self.pid, n))
                            for n in os.listdir("/proc/%d/fd" % self.pid)}
                except OSError:
                    mine = set()
                if any("socket:[%s]" % i in mine for i in inodes):
                    break
            if time.monotonic() > deadline:
                raise AssertionError("switchyard not listening on %d after %ds; log tail: %s"
                                     % (self.port, timeout, self.log()[-800:].strip()))
            time.sleep(0.01)
        where = self._started_log() if wait_started else None
        if where is None:
            return
        # the "started" line comes once the proxy is set up (signal handlers,
        # listeners, pools): a proxy that listens but never says it started
        # is broken, not slow
        rx = re.compile(r"\bstarted\b")
        deadline = max(deadline, time.monotonic() + 2)
        while True:
            if self.proc.poll() is not None:
                check_sanitizer(self.log(), "the proxy at startup")
                raise AssertionError("switchyard exited with %d before its \"started\" line: %s"
                                     % (self.proc.returncode, self.log()[-1500:].strip()))
            try:
                with open(where, "rb") as f:
                    if rx.search(f.read().decode("utf-8", "replace")):
                        return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("switchyard listens on %d but logged no \"started\" line in %ds (%s); "
                                     "log tail: %s" % (self.port, timeout, where, self.log()[-800:].strip()))
            time.sleep(0.005)

    # -- observation
    def log(self):
        """stderr+stdout of the proxy so far (text)."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, regex, timeout=5):
        """Wait until the log matches regex (re.M); return the match."""
        rx = re.compile(regex, re.M)
        return wait_until(lambda: rx.search(self.log()), timeout, what="log line /%s/" % regex)

    def access_lines(self):
        """Parsed JSON access-log lines so far (lines starting with '{').
        A last line without its newline is being written right now (a
        write(2) is not atomic for a reader): it is left for the next call."""
        out = []
        text = self.log()
        complete = text[:text.rfind("\n") + 1]
        for ln in complete.splitlines():
            if ln.startswith("{"):
                out.append(json.loads(ln))
        return out

    def wait_access(self, n=1, pred=None, timeout=5):
        """Wait until n access lines (matching pred, if given) exist; return them."""
        def ok():
            got = [a for a in self.access_lines() if pred is None or pred(a)]
            return got if len(got) >= n else None
        return wait_until(ok, timeout, what="%d access-log line(s)" % n)

    def fd_count(self):
        return fd_count(self.pid)

    def fds(self):
        return fd_list(self.pid)

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
        return 0

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.proc.poll() is None

    def wait_fds(self, baseline, timeout=3):
        """Assert the fd count returns to baseline within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.fd_count()
            if n == baseline:
                return
            if time.monotonic() > deadline:
                raise AssertionError("fd leak: %d open, baseline %d: %s" % (n, baseline, " ".join(self.fds())))
            time.sleep(0.02)

    def skip_fd_check(self, reason):
        """Turn off the fd comparison at cleanup for this proxy; say why."""
        if not reason:
            raise ValueError("skip_fd_check needs a reason")
        self.fd_check = reason
        self.ctx.note("fd check at cleanup off for %s: %s" % (os.path.basename(self.config_path), reason))

    def fd_snapshot(self):
        """(counts, entries) of the proxy's descriptors: counts by kind
        {"socket", "listener", "pipe", "other"} ("listener": a listening TCP
        socket; "socket": any other socket), entries [(fd, target, kind)]."""
        listening = _listening_inodes()
        counts = {"socket": 0, "listener": 0, "pipe": 0, "other": 0}
        entries = []
        d = "/proc/%d/fd" % self.pid
        for n in os.listdir(d):
            try:
                link = os.readlink(os.path.join(d, n))
            except OSError:
                continue
            if link.startswith("socket:["):
                kind = "listener" if link[8:-1] in listening else "socket"
            elif link.startswith("pipe:"):
                kind = "pipe"
            else:
                kind = "other"
            counts[kind] += 1
            entries.append((int(n), link, kind))
        return counts, sorted(entries)

    def _max_pool_pipes(self):
        m = re.search(r"^\s*workers\s*=\s*(\d+)", self.config_text, re.M)
        workers = int(m.group(1)) if m else (os.cpu_count() or 1)
        return PIPE_POOL * max(1, workers)

    def fds_settled(self, timeout=5):
        """At cleanup (clients and backends closed): wait until the proxy's
        descriptors are back to the baseline taken right after startup:
        sockets other than TCP listeners (connections, socketpairs) and
        other fds (files, epoll, eventfd...) exactly; pipes may stay in the
        splice pool (pairs, at most PIPE_POOL per worker); listeners are not
        compared (a reload may change them). Returns None or a problem."""
        base, base_entries = self.fd_baseline
        pool = self._max_pool_pipes()
        deadline = time.monotonic() + timeout
        while True:
            try:
                k, entries = self.fd_snapshot()
            except OSError:
                return None  # gone: the exit status check reports it
            extra_pipes = k["pipe"] - base["pipe"]
            # a health check in flight at startup that has ended is not missing
            now_links = {link for _, link, _ in entries}
            # (of this baseline: a case may have taken a quieter one since)
            transient = self.fd_transient & {link for _, link, _ in base_entries}
            want_sockets = base["socket"] - len(transient - now_links)
            if (k["socket"] == want_sockets and k["other"] == base["other"]
                    and extra_pipes % 2 == 0 and 0 <= extra_pipes <= 2 * pool):
                return None
            if time.monotonic() > deadline:
                before = {(n, link) for n, link, _ in base_entries}
                now = {(n, link) for n, link, _ in entries}
                desc = _socket_descriptions()
                new = ["%d->%s%s" % (n, link, desc.get(link, "")) for n, link, kind in entries
                       if (n, link) not in before and kind != "listener"]
                gone = ["%d->%s" % (n, link) for n, link, kind in base_entries
                        if (n, link) not in now and kind != "listener"]
                return ("fd leak: %d sockets, %d pipes, %d other fds open %.0fs after the clients and backends "
                        "closed; after startup %d, %d, %d (listening sockets not counted); new: %s; gone: %s"
                        % (k["socket"], k["pipe"], k["other"], timeout, base["socket"], base["pipe"],
                           base["other"], " ".join(new[:40]) or "-", " ".join(gone[:40]) or "-"))
            time.sleep(0.02)

    @contextlib.contextmanager
    def no_fd_leak(self, timeout=3):
        """with px.no_fd_leak(): ...  asserts the fd count is back afterwards."""
        base = self.fd_count()
        yield base
        self.wait_fds(base, timeout)

    def connect(self, **kw):
        return self.ctx.connect(self.port, **kw)

    # -- shutdown
    def stop(self, sig=signal.SIGTERM, timeout=5, expect=0):
        """Send sig (None: send nothing, e.g. already signalled); assert the
        process exits with `expect` within timeout."""
        if self.stopped:
            return self.exit_code
        self.stopped = True
        if self.proc.poll() is None:
            if sig is not None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_code = None
                self._logf.close()
                raise AssertionError("switchyard did not exit within %ss of %s"
                                     % (timeout, signal.Signals(sig).name if sig else "the signal"))
        self.exit_code = self.proc.returncode
        self._logf.close()
        check_sanitizer(self.log(), "the proxy (%s)" % os.path.basename(self.log_path))
        if expect is not None and self.exit_code != expect:
            raise AssertionError("switchyard exit status %s, want %s; log tail: %s"
                                 % (self.exit_code, expect, self.log()[-600:].strip()))
        return self.exit_code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopped = True
        try:
            self._logf.close()
        except OSError:
            pass


class ConfigCheck:
    def __init__(self, path, rc, out, err):
        self.path, self.rc, self.out, self.err = path, rc, out, err

    def __repr__(self):
        return "<switchyard -t: rc=%s stderr=%r>" % (self.rc, self.err[-800:])


# ---------------------------------------------------------------------------
# per-case context


class Worker:
    def __init__(self, fn, args):
        self.result = None
        self.exc = None
        self.t = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.t.start()

    def _run(self, fn, args):
        try:
            self.result = fn(*args)
        except BaseException as e:  # re-raised in join()
            self.exc = e

    def join(self, timeout=60):
        """Wait for the thread; re-raise its exception; return its result."""
        self.t.join(timeout)
        if self.t.is_alive():
            raise AssertionError("worker thread still running after %ss" % timeout)
        if self.exc:
            raise self.exc
        return self.result


class Ctx:
    """What a case function receives as `t`. Everything created through it is
    cleaned up when the case ends (clients closed, proxies stopped with
    SIGTERM and checked for exit 0, backends and processes killed)."""

    def __init__(self, name, binary, directory, verbose=False):
        self.name, self.binary, self.dir, self.verbose = name, binary, directory, verbose
        self.rng = random.Random(zlib.crc32(name.encode()))
        self.proxies = []
        self.clients = []
        self.backends = []
        self.procs = []
        self.held = []
        self._n = 0

    def note(self, *args):
        """Print to the case log (shown with -v on failure)."""
        print(*args, flush=True)

    def skip(self, reason):
        """End the case as skipped (reported as SKIP name: reason)."""
        raise Skip(reason)

    # resources
    def free_port(self):
        return free_port()

    def dead_port(self):
        """A port nobody listens on (kept bound, so connects get refused)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.held.append(s)
        return s.getsockname()[1]

    def http_backend(self, script=None, errors_ok=False):
        """errors_ok: exceptions in its threads are expected (see expect_errors)."""
        b = HttpBackend(script)
        if errors_ok:
            b.expect_errors(errors_ok if isinstance(errors_ok, str) else None)
        self.backends.append(b)
        return b

    def raw_backend(self, handler=None, errors_ok=False):
        b = RawBackend(handler)
        if errors_ok:
            b.expect_errors(errors_ok if isinstance(errors_ok, str) else None)
        self.backends.append(b)
        return b

    def config(self, backend=None, upstreams=None, port=None, **kw):
        """Config text (see make_config); backend= is shorthand for one
        upstream "app" with that single server."""
        if upstreams is None:
            upstreams = {"app": [backend if backend is not None else self.dead_port()]}
        return make_config(port if port is not None else free_port(), upstreams, **kw)

    def proxy(self, backend=None, upstreams=None, config_text=None, env=None, wait_started=True, **kw):
        """Start switchyard with a generated config (see config()); or with
        config_text, a full config containing the placeholder {port}.
        env: extra environment variables for the proxy process.
        Returns once the port listens and the "started" log line is out
        (wait_started=False: as soon as the port listens)."""
        self._n += 1
        for attempt in range(3):
            port = free_port()
            if config_text is not None:
                text = config_text.replace("{port}", str(port))
            else:
                text = self.config(backend, upstreams, port=port, **kw)
            try:
                tag = "proxy%d" % self._n if attempt == 0 else "proxy%d.%d" % (self._n, attempt)
                p = Proxy(self, text, port, tag, env, wait_started)
            except AssertionError as e:
                if "in use" in str(e).lower() and attempt < 2:
                    continue
                raise
            self.proxies.append(p)
            return p

    def check_config(self, text, name="check.conf"):
        """Run `switchyard -t -c FILE`; returns ConfigCheck(path, rc, out, err)."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        p = self.run_binary(["-t", "-c", path])
        return ConfigCheck(path, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))

    def run_binary(self, args, prefix=(), timeout=20, **kw):
        """subprocess.run(prefix + [switchyard] + args, capture_output=True,
        ...): the CompletedProcess, after asserting that neither stdout nor
        stderr holds a sanitizer report (whatever the exit status). prefix:
        e.g. ["prlimit", "--nofile=256:256", "--"]. Every run of the binary
        outside t.proxy() goes through here."""
        kw.setdefault("capture_output", True)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.run(list(prefix) + [self.binary] + list(args), timeout=timeout, **kw)
        for stream in (p.stderr, p.stdout):
            check_sanitizer(stream or b"", "switchyard %s" % " ".join(args))
        return p

    def connect(self, port, **kw):
        c = Client(port, **kw)
        self.clients.append(c)
        return c

    def thread(self, fn, *args):
        """Run fn(*args) in a daemon thread; .join() re-raises."""
        return Worker(fn, args)

    def popen(self, argv, **kw):
        """subprocess.Popen killed at cleanup."""
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def path(self, name):
        return os.path.join(self.dir, name)

    def cleanup(self):
        """Release everything; returns a list of problems (strings).

        Order: clients closed; backends closed and processes killed (so the
        proxy's pooled upstream connections are closed by their peer); each
        proxy still running must get back to the descriptors it had right
        after startup (Proxy.fds_settled, unless skip_fd_check) and then exit
        0 on SIGTERM without a sanitizer report; errors recorded by backend
        threads before they were closed fail the case unless expected."""
        problems = []
        for c in self.clients:
            c.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for b in self.backends:
            b.close()
        for s in self.held:
            s.close()
        for p in self.proxies:
            if p.stopped or p.fd_check is not None or p.fd_baseline is None or not p.alive():
                continue
            leak = p.fds_settled()
            if leak:
                problems.append("%s at cleanup: %s" % (os.path.basename(p.config_path), leak))
            else:
                self.note("fd check at cleanup: %s back to its baseline" % os.path.basename(p.config_path))
        for p in self.proxies:
            try:
                if not p.stopped:
                    if not p.alive():
                        check_sanitizer(p.log(), "the proxy (%s)" % os.path.basename(p.log_path))
                        problems.append("switchyard died during the case (status %s): %s"
                                        % (p.proc.returncode, p.log()[-400:].strip()))
                    else:
                        p.stop()
                else:  # stopped or killed by the case: its log still must be clean
                    check_sanitizer(p.log(), "the proxy (%s)" % os.path.basename(p.log_path))
            except AssertionError as e:
                problems.append("at cleanup: %s" % e)
            finally:
                p.kill()
        for b in self.backends:
            errs = list(getattr(b, "errors", None) or [])
            if errs and getattr(b, "errors_ok", None) is None:
                problems.append("%s on port %s: %d error(s) in its threads (expect_errors() if intended): %s"
                                % (type(b).__name__, getattr(b, "port", "?"), len(errs), "; ".join(errs[:5])))
        return problems

    def logs(self):
        return [p.log_path for p in self.proxies]
