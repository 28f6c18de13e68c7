"""Helpers for the reload / workers / signal cases (cases_reload.py, issue 11).

Standard library only. A config generator with several listeners, workers,
pid_file and TLS upstreams; a Reloader that rewrites the config, sends SIGHUP
and waits for the exact `reloaded FILE: generation N` (or `reload failed:
keeping generation N`) error-log line; a named backend that answers plain
requests with its name on keep-alive connections and echoes after a 101, and
records per connection what it saw and when it saw EOF; tunnel client helpers.
"""

import inspect
import os
import re
import signal
import socket
import subprocess
import threading
import time

from harness import Client, ProtocolError, _listening_inodes, eq, make_config, split_head, wait_until
from wslib import client_recv_exact, header_value, raise_nofile, read_101, relayed_101, resp_101, ws_key, ws_request

_MC_WORKERS = "workers" in inspect.signature(make_config).parameters
PLAIN_LISTEN = 'listen = ( { address = "127.0.0.1:0"; } );'

# root reads a mode-0 file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH;
# without them uid 0 gets the owner bits like anyone else (Permission denied)
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search", "--"]


# ---------------------------------------------------------------------------
# config


def listen_entry(spec):
    """A listen group: a port (int or "{port}") for plain, or (port, [(cert, key), ...])
    for TLS."""
    if isinstance(spec, tuple):
        port, certs = spec
        ents = ", ".join('{ cert = "%s"; key = "%s"; }' % ck for ck in certs)
        return '{ address = "127.0.0.1:%s"; tls = { certificates = ( %s ); }; }' % (port, ents)
    return '{ address = "127.0.0.1:%s"; }' % spec


def conf(port, upstreams, routes=None, listens=(), workers=2, mode=None, timeouts=None, limits=None,
         pid_file=None, upstream_tls=None, extra="", **kw):
    """Whole config text. port: the first listen address (an int, or "{port}" for
    t.proxy(config_text=...)); listens: more listen specs (see listen_entry).
    workers=None leaves the key out. mode: tunnel mode. upstream_tls: {name:
    'verify = true; ...'}. limits default to max_connections = 1000 (no
    descriptor warning). Other keywords as for harness.make_config."""
    lim = {"max_connections": 1000}
    lim.update(limits or {})
    if _MC_WORKERS:  # the harness writes the key itself (its default: 1)
        kw["workers"] = workers
    text = make_config(0, upstreams, routes=routes, timeouts=timeouts, limits=lim, **kw)
    assert PLAIN_LISTEN in text
    ents = [listen_entry(port)] + [listen_entry(s) for s in listens]
    text = text.replace(PLAIN_LISTEN, "listen = ( %s );" % ", ".join(ents))
    for name, body in (upstream_tls or {}).items():
        rx = re.compile(r'^(  \{ name = "%s"; servers = \(.*\);) \}$' % re.escape(name), re.M)
        text, n = rx.subn(lambda m: "%s tls = { %s }; }" % (m.group(1), body), text)
        assert n == 1, "upstream %s not found" % name
    top = []
    if workers is not None and not _MC_WORKERS:
        top.append("workers = %d;" % workers)
    if pid_file is not None:
        top.append('pid_file = "%s";' % pid_file)
    if mode is not None:
        top.append('tunnel = { mode = "%s"; };' % mode)
    if extra:
        top.append(extra)
    return text + "".join(l + "\n" for l in top)


def line_of(text, needle):
    """1-based line number of the first line containing needle."""
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise AssertionError("%r not in the config" % needle)


def start(t, text_fn, env=None):
    """t.proxy with the config text_fn("{port}"); returns (proxy, Reloader)."""
    px = t.proxy(config_text=text_fn("{port}"), env=env)
    return px, Reloader(px)


def scaled(t, want, per=8, reserve=200):
    """How many tunnels fit the descriptor limit: min(want, (hard - reserve) // per),
    after raising the soft limit to the hard one. Noted in the case log."""
    soft, hard = raise_nofile()
    n = min(want, (hard - reserve) // per)
    t.note("RLIMIT_NOFILE soft %d hard %d: using %d (want %d)" % (soft, hard, n, want))
    if n < 4:
        if hasattr(t, "skip"):
            t.skip("descriptor hard limit %d too low for this case" % hard)
        raise AssertionError("descriptor hard limit %d too low for this case" % hard)
    return n


def memory_sanitizer(pid):
    """Name of the ASan / TSan / MSan runtime px runs with, or None. Their
    allocators keep freed memory (quarantine, shadow), so RSS growth says
    nothing about leaks there."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
    except OSError:
        maps = ""
    for name in ("asan", "tsan", "msan"):
        if re.search(r"/lib%s\.so" % name, maps):
            return name
    try:
        with open("/proc/%d/exe" % pid, "rb") as f:  # a statically linked runtime (clang)
            exe = f.read()
    except OSError:
        return None
    for name in ("asan", "tsan", "msan"):
        if b"__%s_init" % name.encode() in exe:
            return name
    return None


# ---------------------------------------------------------------------------
# logs and reloads


class Reloader:
    """Rewrites px's config file and signals it. .gen is the generation the
    proxy is expected to run (1 at start)."""

    def __init__(self, px):
        self.px = px
        self.gen = 1
        self.pos = 0  # log offset where the last operation started

    def log_from(self, pos):
        with open(self.px.log_path, "rb") as f:
            f.seek(pos)
            return f.read().decode("utf-8", "replace")

    def log_size(self):
        return os.path.getsize(self.px.log_path)

    def write(self, text):
        tmp = self.px.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.px.config_path)

    def signal(self, sig=signal.SIGHUP):
        self.pos = self.log_size()
        self.px.proc.send_signal(sig)

    def wait(self, regex, timeout=10, what=None, fail_regex=None):
        """Wait until the log since the last signal matches regex (re.M).
        Returns (match, text since the signal)."""
        rx = re.compile(regex, re.M)
        frx = re.compile(fail_regex, re.M) if fail_regex else None
        deadline = time.monotonic() + timeout
        while True:
            chunk = self.log_from(self.pos)
            m = rx.search(chunk)
            if m:
                return m, chunk
            if frx and frx.search(chunk):
                raise AssertionError("%s: got instead: %s" % (what or regex, chunk.strip()[-1500:]))
            if not self.px.alive():
                raise AssertionError("switchyard exited with status %s while waiting for %s; log since the "
                                     "signal: %r" % (self.px.proc.returncode, what or regex, chunk.strip()[-800:]))
            if time.monotonic() > deadline:
                raise AssertionError("no %s within %ss; log since the signal: %r"
                                     % (what or "/%s/" % regex, timeout, chunk.strip()[-1200:]))
            time.sleep(0.005)

    def ok_rx(self, gen):
        return r"^\S+ info s=\d+ (?:.* )?reloaded %s: generation %d$" % (re.escape(self.px.config_path), gen)

    def ok(self, text=None, timeout=10):
        """Write text (if given), SIGHUP, wait for `reloaded FILE: generation N+1`.
        Returns the seconds it took."""
        if text is not None:
            self.write(text)
        t0 = time.monotonic()
        self.signal()
        want = self.gen + 1
        self.wait(self.ok_rx(want), timeout, "info line 'reloaded %s: generation %d'" % (self.px.config_path, want),
                  fail_regex=r"reload failed")
        self.gen = want
        return time.monotonic() - t0

    def fail(self, text=None, timeout=10):
        """Write text (if given), SIGHUP, wait for `reload failed: keeping
        generation N` (N unchanged). Returns the log text since the signal."""
        if text is not None:
            self.write(text)
        self.signal()
        rx = r"^\S+ error s=\d+ reload failed: keeping generation %d$" % self.gen
        _, chunk = self.wait(rx, timeout, "error line 'reload failed: keeping generation %d'" % self.gen,
                             fail_regex=r"reloaded .*: generation")
        time.sleep(0.05)
        return self.log_from(self.pos)


def error_lines(chunk):
    """Messages of the error-level lines in a log chunk (prefix stripped)."""
    return [m.group(1) for m in re.finditer(r"^\S+ error s=\d+ (.*)$", chunk, re.M)]


def check_t_output(t, path, prefix=()):
    """Run `switchyard -t -c path` (argv prefixed by `prefix`); returns its
    FILE:LINE: error lines (other lines, such as warnings, dropped) and asserts exit 1."""
    p = t.run_binary(["-t", "-c", path], prefix=prefix)
    err = p.stderr.decode("utf-8", "replace")
    eq(p.returncode, 1, "exit status of switchyard -t on the bad file (stderr %r)" % err[-500:])
    lines = [ln for ln in err.splitlines() if ln.startswith(path + ":")]
    if not lines:
        raise AssertionError("switchyard -t printed no %s:LINE: lines: %r" % (path, err[-500:]))
    return lines


def access_lines_of(px, pred=None):
    return [a for a in px.access_lines() if pred is None or pred(a)]


def check_gw(a, gen=None, workers=None):
    """An access line has integer "generation" and "worker" (and the values given)."""
    for k in ("generation", "worker"):
        if not isinstance(a.get(k), int) or isinstance(a.get(k), bool):
            raise AssertionError("access line without an integer %r: %r" % (k, a))
    if gen is not None:
        eq(a["generation"], gen, "generation in access line %r" % a)
    if workers is not None and a["worker"] not in workers:
        raise AssertionError("worker %r not in %r: %r" % (a["worker"], workers, a))


def listeners(port):
    """Inodes of the TCP sockets listening on 127.0.0.1:port (any process)."""
    return _listening_inodes(port)


def proxy_listeners(px, port):
    """Inodes of px's own sockets listening on port."""
    ino = _listening_inodes(port)
    mine = set()
    d = "/proc/%d/fd" % px.pid
    for n in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m and m.group(1) in ino:
            mine.add(m.group(1))
    return mine


def connect_refused(port, timeout=2):
    """True if a connect to 127.0.0.1:port is refused."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def get(port, target="/", host="test.example", timeout=10, client=None):
    """One GET on a fresh connection (closed afterwards) or on `client`."""
    c = client or Client(port, timeout=timeout)
    try:
        c.request("GET", target, host=host)
        return c.read_response(timeout=timeout)
    finally:
        if client is None:
            c.close()


def hold_port():
    """A listening socket on a free port without SO_REUSEADDR/SO_REUSEPORT
    (anyone else's bind fails with EADDRINUSE). Returns the socket."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


# ---------------------------------------------------------------------------
# backend: named HTTP (keep-alive) + upgrade echo


class BConn:
    def __init__(self, sock, idx):
        self.sock, self.idx = sock, idx
        self.requests = []  # request lines
        self.tunnel = bytearray()  # bytes after a 101
        self.upgraded = False
        self.eof = False
        self.eof_at = None
        self.opened_at = time.monotonic()


class NamedBackend:
    """A backend called `name`: a plain request is answered `200` with body
    name (Content-Length, keep-alive; a target starting with /slow waits
    `slow` seconds first); an upgrade request gets a valid 101 and is echoed.
    Records .conns (BConn: request lines, tunnel bytes, EOF time)."""

    def __init__(self, t, name, slow=0.5):
        self.name = name
        self.slow = slow
        self.conns = []
        self.lock = threading.Lock()
        self.raw = t.raw_backend(self._handle)
        self.port, self.address = self.raw.port, self.raw.address

    def _recv(self, c):
        try:
            d = c.sock.recv(65536)
        except (ConnectionResetError, socket.timeout, OSError):
            d = b""
        if not d:
            c.eof, c.eof_at = True, time.monotonic()
        return d

    def _handle(self, rec):
        sock = rec.sock
        sock.settimeout(600)
        with self.lock:
            c = BConn(sock, len(self.conns))
            self.conns.append(c)
        buf = bytearray()
        while True:
            while b"\r\n\r\n" not in buf:
                d = self._recv(c)
                if not d:
                    return
                buf += d
            i = buf.find(b"\r\n\r\n")
            head = bytes(buf[:i + 4])
            del buf[:i + 4]
            first = split_head(head[:-4])[0]
            c.requests.append(first)
            if header_value(head, "Upgrade"):
                key = header_value(head, "Sec-WebSocket-Key") or ""
                c.upgraded = True
                try:
                    sock.sendall(resp_101(key) + bytes(buf))
                except OSError:
                    c.eof, c.eof_at = True, time.monotonic()
                    return
                c.tunnel += buf
                while True:
                    d = self._recv(c)
                    if not d:
                        return
                    c.tunnel += d
                    try:
                        sock.sendall(d)
                    except OSError:
                        return
            target = first.split(b" ")[1] if first.count(b" ") >= 2 else b""
            if target.startswith(b"/slow"):
                time.sleep(self.slow)
            body = self.name.encode()
            try:
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (body, len(body), body))
            except OSError:  # the proxy gave up on the exchange (a stop): EOF for the records
                c.eof, c.eof_at = True, time.monotonic()
                return

    @property
    def connections(self):
        return len(self.conns)

    def requests(self):
        return [r for c in self.conns for r in c.requests]

    def tunnels(self):
        return [c for c in self.conns if c.upgraded]

    def wait_conns(self, n, timeout=5):
        wait_until(lambda: len(self.conns) >= n, timeout, what="%d connection(s) at backend %s" % (n, self.name))


# ---------------------------------------------------------------------------
# tunnels through the proxy


def open_tunnel(t, port, target="/ws", client=None):
    """Upgrade request on a new connection (or `client`), the relayed 101
    checked byte for byte. Returns the client."""
    key = ws_key()
    req, _ = ws_request(key, target=target)
    c = client or t.connect(port)
    c.send(req)
    eq(read_101(c), relayed_101(key), "101 relayed to the client on %s" % target)
    return c


def echo(c, msg, what="echo", timeout=10):
    try:
        c.send(msg)
        got = client_recv_exact(c, len(msg), timeout)
    except (ProtocolError, OSError) as e:
        raise AssertionError("%s: the tunnel failed instead of echoing %d bytes: %s: %s"
                             % (what, len(msg), type(e).__name__, e))
    eq(got, msg, what)


def tunnel_alive(c, tag, what="tunnel"):
    msg = ("%s still echoes at %.3f\n" % (tag, time.monotonic())).encode()
    echo(c, msg, "%s echo" % what)
    return msg


def watch_close(c, interval=0.02, timeout=15, tag=b"x"):
    """Exchange small messages on a tunnel client until the proxy closes it;
    returns the monotonic time of the EOF (or reset). A wrong echo fails."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        msg = tag + b"-%d\n" % n
        n += 1
        try:
            c.sock.settimeout(5)
            c.sock.sendall(msg)
        except OSError:
            return time.monotonic()
        got = bytearray()
        while len(got) < len(msg):
            try:
                d = c.sock.recv(len(msg) - len(got))
            except ConnectionResetError:
                d = b""
            except socket.timeout:
                raise AssertionError("tunnel %r: no echo within 5 s" % tag)
            if not d:
                return time.monotonic()
            got += d
        eq(bytes(got), msg, "echo on tunnel %r" % tag)
        time.sleep(interval)
    raise AssertionError("tunnel %r not closed within %ss" % (tag, timeout))


def send_signal_at(px, sig):
    t0 = time.monotonic()
    px.proc.send_signal(sig)
    return t0


def wait_exit(px, timeout):
    """Wait for px to exit; returns (status, seconds waited)."""
    t0 = time.monotonic()
    try:
        px.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("switchyard still running %.1fs later" % timeout)
    return px.proc.returncode, time.monotonic() - t0
