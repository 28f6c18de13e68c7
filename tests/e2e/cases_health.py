"""upstreams[].health and upstreams[].on_down: active checks (tcp, http,
websocket, also over TLS), passive marking from traffic (connect failures,
closes and resets before the answer, 5xx with passive_5xx), type = "none"
with retry_down_after, the 503 when every server is down, on_down = "close"
ending the tunnels of a server that went down, the state shared by workers
and kept over a reload, and `-t` on bad health keys.

Every state change is asserted as its exact error-log line ("server
127.0.0.1:P of app is down: http check: got 503, not 200"), every proxy
answer by status and body, and where requests went by the access log's
server field and the requests each backend recorded. Intervals are short
(100-150 ms) and every wait is on a log line or a count, never a duration.

Active checks connect on their own schedule, so the descriptor baseline the
harness takes right after startup may hold a check in flight; cases with
active checks take it again as the fewest descriptors seen over a moment
(`quiet_baseline`), which keeps the fd check at cleanup on: with the
backends closed a check lives for microseconds, and the cleanup polls.
"""

import base64
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time

from harness import (BackendErrors, Client, ProtocolError, case, check_error_response, close_listener, eq,
                     make_config, register, wait_listen, wait_until, _cfg_value)
from reload_lib import Reloader, line_of
from tls_lib import PKI, TLSBackend
from wslib import (client_recv_exact, header_value, read_101, relayed_101, resp_101, tcase, ws_accept, ws_key,
                   ws_request)

HERE = os.path.dirname(os.path.abspath(__file__))
UA = b"User-Agent: switchyard-health"
WAIT = 10  # seconds for a state change to show up (checks every 100-150 ms)


# ---------------------------------------------------------------------------
# a backend the case flips, stops and starts again on the same port


class Conn:
    """One connection a FlipBackend accepted."""

    def __init__(self, index):
        self.index = index
        self.head = b""  # the request head (b"" when none came, e.g. a tcp check)
        self.after = bytearray()  # bytes received after the head
        self.eof = False  # the peer closed (or reset)
        self.done = threading.Event()  # the handler finished

    @property
    def check(self):
        return (b"\r\n" + UA + b"\r\n") in self.head

    @property
    def target(self):
        parts = self.head.split(b"\r\n", 1)[0].split(b" ")
        return parts[1].decode("latin-1") if len(parts) == 3 else None


class FlipBackend(BackendErrors):
    """A backend named `name` whose behaviour the case changes at run time:

    status: the status of its answer to a plain request (body: the name,
      Content-Length, Connection: close; then it closes);
    ws: its answer to an upgrade request: "ok" (a valid 101, then an echo for
      traffic; a check's bytes are recorded until EOF), "200", "bad_accept"
      (101 with a wrong Sec-WebSocket-Accept), "no_upgrade" (101 without
      Upgrade), "no_connection" (101 without Connection);
    mode: "answer" (the above), "hang" (read until EOF, never answer),
      "close" (close after the head), "reset" (reset after the head),
      "partial" (send "HTTP/1.1 200" and close), "garbage" (a malformed head).

    stop() closes its listener (connects are refused; open connections go
    on) and keeps the port bound without listening so that nobody else takes
    it; start() listens on the same port again. .conns: Conn records in
    accept order; .checks() / .traffic(): those with / without the health
    check's User-Agent."""

    def __init__(self, t, name, status=200, ws="ok", mode="answer"):
        self.name, self.status, self.ws, self.mode = name, status, ws, mode
        self.paths = {}  # target -> status, overriding .status for that target
        self.interim = b""  # sent before each answer to a plain request (e.g. a 103)
        self.conns = []
        self.socks = []
        self.errors = []
        self.lock = threading.Lock()
        self.stopped = False  # closed by the harness
        self.lsock = None
        self.holder = None
        self._listen(0)
        self.port = self.lsock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        t.backends.append(self)

    # -- listener
    def _listen(self, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        self.lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self):
        """Close the listener: connects are refused from now on."""
        with self.lock:
            s, self.lsock = self.lsock, None
        close_listener(s)
        h = socket.socket()
        h.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        h.bind(("127.0.0.1", self.port))  # bound, not listening: refused, and the port stays ours
        self.holder = h

    def start(self):
        """Listen on the same port again."""
        self._listen(self.port)
        self.holder.close()
        self.holder = None

    def _accept(self, lsock):
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.stopped:
                    c.close()
                    return
                rec = Conn(len(self.conns))
                self.conns.append(rec)
                self.socks.append(c)
            threading.Thread(target=self._run, args=(c, rec), daemon=True).start()

    def close(self):
        with self.lock:
            self.stopped = True
            socks = list(self.socks)
            s, self.lsock = self.lsock, None
        if s is not None:
            close_listener(s)
        if self.holder is not None:
            self.holder.close()
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    # -- connections
    def _run(self, c, rec):
        try:
            self._handle(c, rec)
        except Exception as e:  # fails the case at cleanup unless expected
            self._record_error("%s: %s (connection %d, head %r)" % (type(e).__name__, e, rec.index, rec.head[:80]))
        finally:
            rec.done.set()
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def _recv(c, rec, timeout=30):
        c.settimeout(timeout)
        try:
            d = c.recv(65536)
        except ConnectionResetError:
            d = b""
        except socket.timeout:
            return None
        if not d:
            rec.eof = True
        return d

    @staticmethod
    def _send(c, data):
        """False if the peer is gone (a check may close whenever it is done)."""
        try:
            c.settimeout(30)
            c.sendall(data)
            return True
        except OSError:
            return False

    def _to_eof(self, c, rec, echo=False):
        while True:
            d = self._recv(c, rec)
            if d is None:
                return  # nothing for 30 s: give up quietly (the harness closes us)
            if not d:
                return
            rec.after += d
            if echo and not self._send(c, d):
                return

    def _handle(self, c, rec):
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            d = self._recv(c, rec)
            if not d:
                rec.head = bytes(buf)
                return
            buf += d
        i = buf.find(b"\r\n\r\n")
        rec.head = bytes(buf[:i + 4])
        rec.after += buf[i + 4:]
        mode = self.mode
        if mode == "hang":
            self._to_eof(c, rec)
            return
        if mode == "close":
            return
        if mode == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if mode == "partial":
            self._send(c, b"HTTP/1.1 200")
            return
        if mode == "garbage":
            self._send(c, b"HELLO THERE\r\n\r\n")
            self._to_eof(c, rec)
            return
        if header_value(rec.head, "Upgrade") is None:
            status = self.paths.get(rec.target, self.status)
            if status in (204, 304):
                self._send(c, self.interim + b"HTTP/1.1 %d Whatever\r\nConnection: close\r\n\r\n" % status)
                return
            body = self.name.encode()
            self._send(c, self.interim + b"HTTP/1.1 %d Whatever\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                       % (status, len(body), body))
            return
        key = header_value(rec.head, "Sec-WebSocket-Key") or ""
        ws = self.ws
        if ws == "ok":
            if not self._send(c, resp_101(key) + bytes(rec.after)):
                return
            self._to_eof(c, rec, echo=not rec.check)
            return
        if ws == "200":
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        elif ws == "bad_accept":
            answer = resp_101(key, accept=ws_accept(ws_key(seed="not the key")))
        elif ws == "no_upgrade":
            answer = resp_101(key, upgrade=None)
        elif ws == "no_connection":
            answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                      % ws_accept(key).encode())
        else:
            raise ValueError("unknown ws mode %r" % ws)
        if self._send(c, answer):
            self._to_eof(c, rec)

    # -- records
    def checks(self):
        return [r for r in list(self.conns) if r.check]

    def traffic(self):
        return [r for r in list(self.conns) if r.head and not r.check]

    def wait_checks(self, n, timeout=WAIT):
        wait_until(lambda: len(self.checks()) >= n, timeout,
                   what="%d health checks at backend %s (have %d)" % (n, self.name, len(self.checks())))
        return self.checks()


# ---------------------------------------------------------------------------
# config


def health_text(h):
    """A health group from a dict (values rendered as libconfig) or raw text."""
    if isinstance(h, str):
        return h
    return "health = { %s };" % " ".join("%s = %s;" % (k, _cfg_value(v)) for k, v in h.items())


def conf(upstreams, health=None, routes=None, workers=1, log_level="info", mode=None, port="{port}", **kw):
    """Whole config text. upstreams: {name: [servers]} (as make_config);
    health: {upstream name: dict of health keys or raw text, plus the
    pseudo-keys "on_down", "retries" and "tls" (raw body of the tls group)
    moved to the upstream itself}. mode: tunnel mode."""
    text = make_config(0, upstreams, routes=routes, workers=workers, log_level=log_level,
                       limits={"max_connections": 200}, **kw)
    plain = 'listen = ( { address = "127.0.0.1:0"; } );'
    assert plain in text
    text = text.replace(plain, plain.replace(":0", ":%s" % port))
    for name, h in (health or {}).items():
        extra = []
        if not isinstance(h, str):
            h = dict(h)
            for key in ("on_down", "retries"):
                if key in h:
                    extra.append("%s = %s;" % (key, _cfg_value(h.pop(key))))
            if "tls" in h:
                extra.append("tls = { %s };" % h.pop("tls"))
            if h.pop("no_health", False):
                h = None
        if h is not None:
            extra.insert(0, health_text(h))
        rx = re.compile(r'^(  \{ name = "%s"; servers = \(.*\);) \}(,?)$' % re.escape(name), re.M)
        text, n = rx.subn(lambda m: "%s %s }%s" % (m.group(1), " ".join(extra), m.group(2)), text)
        assert n == 1, "upstream %s not found in %r" % (name, text)
    if mode is not None:
        text += 'tunnel = { mode = "%s"; };\n' % mode
    return text


def fast(type_="http", **kw):
    """A health dict with short interval and timeout (100 ms / 500 ms), rise 2, fall 2."""
    h = {"type": type_, "interval": "100ms", "timeout": "500ms", "rise": 2, "fall": 2}
    h.update(kw)
    return h


# ---------------------------------------------------------------------------
# logs


STATE_RX = re.compile(r"^\S+ (\w+) s=(\d+) server (\S+) of (\S+) is (down|up): (.*)$", re.M)


def state_lines(px, addr=None, upstream="app"):
    """[(state, why)] of the "server ADDR of UPSTREAM is down|up: why" lines,
    in order; each one checked for its level (warn for down, info for up)
    and session 0."""
    out = []
    for m in STATE_RX.finditer(px.log()):
        level, sid, a, up, state, why = m.groups()
        if (addr is not None and a != addr) or up != upstream:
            continue
        eq((level, sid), ("warn" if state == "down" else "info", "0"), "level and session of %r" % m.group(0))
        out.append((state, why))
    return out


def wait_state(px, addr, state, why, upstream="app", n=1, timeout=WAIT):
    """Wait until (state, why) is the n-th line about addr."""
    def ok():
        got = [l for l in state_lines(px, addr, upstream) if l == (state, why)]
        return len(got) >= n
    wait_until(ok, timeout, what="%d line(s) 'server %s of %s is %s: %s' (have %r)"
               % (n, addr, upstream, state, why, state_lines(px, addr, upstream)))


def check_results(px, type_, addr, upstream="app"):
    """The debug results of the checks of addr, in order ("passed" or why)."""
    rx = re.compile(r"^\S+ debug s=0 %s check of %s \(%s\): (.*)$" % (type_, re.escape(addr), re.escape(upstream)),
                    re.M)
    return rx.findall(px.log())


def quiet_baseline(px, samples=15):
    """Retake px's descriptor baseline as the snapshot with the fewest
    sockets over ~0.3 s: a check in flight when t.proxy() took it would be
    one socket too many for the comparison at cleanup."""
    best = None
    for _ in range(samples):
        snap = px.fd_snapshot()
        if best is None or snap[0]["socket"] < best[0]["socket"]:
            best = snap
        time.sleep(0.02)
    px.fd_baseline = best


# ---------------------------------------------------------------------------
# requests


def ask(px, target="/", n=1, host="test.example"):
    """n sequential GETs, each on a new connection. Returns [(status, body)]."""
    out = []
    for _ in range(n):
        c = Client(px.port, timeout=10)
        try:
            c.request("GET", target, host=host)
            r = c.read_response(timeout=10)
            out.append((r.status, r.body))
        finally:
            c.close()
    return out


def ask_raw(px, target="/"):
    """One GET; every byte until the proxy closes (for its own error answers)."""
    c = Client(px.port, timeout=10)
    try:
        c.request("GET", target, headers=[("Connection", "close")])
        return c.read_until_close(10)
    finally:
        c.close()


def expect_503(px, upstream, target="/"):
    eq(check_error_response(ask_raw(px, target), 503), "no server of upstream '%s' is up" % upstream,
       "503 body for upstream %s" % upstream)


def first_not_503(px, target="/", tries=500):
    """Requests (one connection each) until one is not the proxy's 503 (a
    passively-down server's retry_down_after has passed); that answer's bytes."""
    for _ in range(tries):
        data = ask_raw(px, target)
        if not data.startswith(b"HTTP/1.1 503 "):
            return data
        check_error_response(data, 503)
        time.sleep(0.01)
    raise AssertionError("still the proxy's 503 after %d requests" % tries)


def servers_of(px, since):
    """The server fields of the access lines after the first `since` ones
    (plain requests only)."""
    return [a.get("server") for a in px.access_lines() if a.get("event") is None][since:]


def n_access(px):
    return len([a for a in px.access_lines() if a.get("event") is None])


def served(px, n, target="/"):
    """n requests: all must be 200; returns the servers (access log) that answered, in order."""
    before = n_access(px)
    got = ask(px, target, n)
    for i, (st, body) in enumerate(got):
        eq(st, 200, "status of request %d of %d (body %r)" % (i + 1, n, body[:100]))
    px.wait_access(before + n, lambda a: a.get("event") is None)
    return servers_of(px, before)


def exact_check_head(target, host):
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\nConnection: close\r\n\r\n" % (target.encode(), host.encode(), UA)


WS_HEAD_RX = (rb"GET %s HTTP/1\.1\r\nHost: %s\r\nUser-Agent: switchyard-health\r\nConnection: Upgrade\r\n"
              rb"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ([A-Za-z0-9+/]{22}==)\r\n\r\n")


def check_ws_heads(checks, target, host, what):
    """Every WebSocket check head is exact, with a fresh valid key each time."""
    keys = []
    rx = re.compile(WS_HEAD_RX % (re.escape(target.encode()), re.escape(host.encode())))
    for c in checks:
        m = rx.fullmatch(c.head)
        if not m:
            raise AssertionError("%s: WebSocket check head %r does not match /%s/" % (what, c.head, rx.pattern))
        eq(len(base64.b64decode(m.group(1))), 16, "%s: bytes in the Sec-WebSocket-Key" % what)
        keys.append(m.group(1))
    eq(len(set(keys)), len(keys), "%s: every check sends a new Sec-WebSocket-Key (%r)" % (what, keys))


def check_close_frame(data, what):
    """A masked close frame with code 1000 and nothing else."""
    eq(len(data), 8, "%s: bytes after the 101 (%r)" % (what, bytes(data)))
    eq((data[0], data[1]), (0x88, 0x82), "%s: FIN + close opcode, MASK + payload length 2 (%r)" % (what, bytes(data)))
    mask = data[2:6]
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[6:8]))
    eq(struct.unpack("!H", payload)[0], 1000, "%s: close code" % what)


# ---------------------------------------------------------------------------
# active checks: http


@case(timeout=60)
def http_check_down_and_up(t):
    """http check: A answering 503 is down after `fall` (2) failed checks
    in a row, up again after `rise` (2) passes in a row; meanwhile every
    request goes to B. The check request is exact; debug logs each check."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": fast(path="/hz")}, log_level="debug"))
    quiet_baseline(px)
    A.wait_checks(2)
    B.wait_checks(2)
    for be in (A, B):
        for c in be.checks():
            eq(c.head, exact_check_head("/hz", be.address), "check request at %s" % be.name)
    eq(served(px, 4), [A.address, B.address, A.address, B.address], "servers of 4 requests, both up")

    A.status = 503
    wait_state(px, A.address, "down", "http check: got 503, not 200")
    eq(check_results_before(px, "http", A.address, "is down")[-3:], ["passed", "got 503, not 200", "got 503, not 200"],
       "A's checks up to the fall (fall = 2)")
    traffic_a = len(A.traffic())
    eq(served(px, 6), [B.address] * 6, "servers of 6 requests while A is down")
    eq(len(A.traffic()), traffic_a, "requests A got while down")

    A.status = 200
    wait_state(px, A.address, "up", "http check passed 2 times")
    eq(check_results_before(px, "http", A.address, "is up")[-3:], ["got 503, not 200", "passed", "passed"], "A's checks up to the rise (rise = 2)")
    got = served(px, 4)
    eq(sorted(got), sorted([A.address, B.address] * 2), "servers of 4 requests, both up again (%r)" % got)
    eq(len(A.traffic()), traffic_a + 2, "requests at A after it came back")
    eq(state_lines(px, A.address), [("down", "http check: got 503, not 200"), ("up", "http check passed 2 times")],
       "A's state lines")
    eq(state_lines(px, B.address), [], "B's state lines")


def check_results_before(px, type_, addr, state):
    """The debug results of addr's checks logged before its (only) "is STATE" line."""
    text = px.log()
    at = [m.start() for m in re.finditer(r"server %s of app %s: " % (re.escape(addr), state), text)]
    eq(len(at), 1, "'%s' lines of %s" % (state, addr))
    rx = re.compile(r"^\S+ debug s=0 %s check of %s \(app\): (.*)$" % (type_, re.escape(addr)), re.M)
    return rx.findall(text[:at[0]])


@case(timeout=60)
def http_check_failure_texts(t):
    """Each way an http check fails names itself in the down line; the one
    server answering `expect` (204 here) stays up and gets every request."""
    good = FlipBackend(t, "good", status=204)
    wrong = FlipBackend(t, "wrong", status=200)
    hang = FlipBackend(t, "hang", mode="hang")
    early = FlipBackend(t, "early", mode="close")
    garbage = FlipBackend(t, "garbage", mode="garbage")
    dead = FlipBackend(t, "dead")
    dead.stop()
    bes = [good, wrong, hang, early, garbage, dead]
    h = fast(path="/check", expect=204, timeout="200ms", fall=1)
    px = t.proxy(config_text=conf({"app": bes}, {"app": h}))
    quiet_baseline(px)
    want = {
        wrong: "http check: got 200, not 204",
        hang: "http check: no answer within 200 ms",
        early: "http check: connection closed before a complete response",
        garbage: "http check: malformed response: malformed status line",
        dead: "http check: Connection refused",
    }
    for be, why in want.items():
        wait_state(px, be.address, "down", why)
    for be, why in want.items():
        eq(state_lines(px, be.address), [("down", why)], "state lines of %s" % be.name)
    eq(state_lines(px, good.address), [], "state lines of the good server")
    before = n_access(px)
    got = ask(px, "/x", 5)
    eq(got, [(204, b"")] * 5, "5 answers (all from the good server, 204 without body)")
    px.wait_access(before + 5, lambda a: a.get("event") is None)
    eq(servers_of(px, before), [good.address] * 5, "servers")
    for be in bes:
        for c in be.checks():
            eq(c.head, exact_check_head("/check", be.address), "check request at %s" % be.name)
    eq([len(be.traffic()) for be in bes], [5, 0, 0, 0, 0, 0], "requests per server")


# ---------------------------------------------------------------------------
# active checks: websocket


@case(timeout=60)
def websocket_check_real_server(t):
    """A websocket check against python3-websockets: down while the server
    is not running, up once it runs; the server saw a proper handshake
    (path and Host from the config) and a close with code 1000."""
    port = t.free_port()
    events = t.path("ws_events.jsonl")
    addr = "127.0.0.1:%d" % port
    h = fast("websocket", path="/live?probe=1", host="ws.health.test")
    px = t.proxy(config_text=conf({"app": ["127.0.0.1:%d" % port]}, {"app": h}))
    quiet_baseline(px)
    wait_state(px, addr, "down", "websocket check: Connection refused")
    t.popen(["/usr/bin/python3", os.path.join(HERE, "ws_echo_server.py"), str(port), events],
            stdout=open(t.path("ws_server.out"), "wb"), stderr=subprocess.STDOUT)
    wait_listen(port)
    wait_state(px, addr, "up", "websocket check passed 2 times")

    def evs():
        with open(events) as f:
            return [json.loads(l) for l in f if l.strip()]

    wait_until(lambda: len([e for e in evs() if e["event"] == "closed"]) >= 2, WAIT,
               what="two closed connections at the WebSocket server")
    opens = [e for e in evs() if e["event"] == "open"]
    for e in opens:
        eq(e["path"], "/live?probe=1", "path at the WebSocket server")
        names = [k for k, _ in e["headers"]]
        eq(names, ["Host", "User-Agent", "Connection", "Upgrade", "Sec-WebSocket-Version", "Sec-WebSocket-Key"],
           "header names at the WebSocket server")
        eq(e["headers"][:5], [["Host", "ws.health.test"], ["User-Agent", "switchyard-health"],
                              ["Connection", "Upgrade"], ["Upgrade", "websocket"], ["Sec-WebSocket-Version", "13"]],
           "headers at the WebSocket server")
    closed = [e for e in evs() if e["event"] == "closed"]
    eq({(e["code"], e["reason"]) for e in closed}, {(1000, "")}, "close codes the WebSocket server got")
    eq([e for e in evs() if e["event"] == "message"], [], "messages at the WebSocket server")
    eq(state_lines(px, addr), [("down", "websocket check: Connection refused"),
                               ("up", "websocket check passed 2 times")], "state lines")


WS_BAD = [
    ("200", "websocket check: got 200, not 101"),
    ("bad_accept", "websocket check: wrong Sec-WebSocket-Accept"),
    ("no_upgrade", "websocket check: 101 without Upgrade: websocket"),
    ("no_connection", "websocket check: 101 without Connection: upgrade"),
]


@case(timeout=60)
def websocket_check_bad_answers(t):
    """Answers that are not a valid 101 mark their server down, each with
    its reason; the valid one stays up, gets every tunnel, and after each
    passed check receives a masked close frame (1000) and then EOF."""
    good = FlipBackend(t, "good")
    bads = [FlipBackend(t, "bad-" + ws, ws=ws) for ws, _ in WS_BAD]
    px = t.proxy(config_text=conf({"app": [good] + bads}, {"app": fast("websocket", path="/ws-health", fall=1)}))
    quiet_baseline(px)
    for be, (_, why) in zip(bads, WS_BAD):
        wait_state(px, be.address, "down", why)
    for be, (_, why) in zip(bads, WS_BAD):
        eq(state_lines(px, be.address), [("down", why)], "state lines of %s" % be.name)
        check_ws_heads(be.checks(), "/ws-health", be.address, be.name)
    good.wait_checks(2)
    checks = [c for c in good.checks()]
    for c in checks[:2]:
        wait_until(c.done.is_set, WAIT, what="the end of a check connection at the good server")
        eq(c.eof, True, "the check closed its connection")
        check_close_frame(c.after, "good server's check connection %d" % c.index)
    check_ws_heads(checks, "/ws-health", good.address, "good")
    eq(state_lines(px, good.address), [], "state lines of the good server")
    # tunnels through the proxy: all to the good server
    for i in range(3):
        key = ws_key(seed="tun-%d" % i)
        c = px.connect()
        c.send(ws_request(key)[0])
        eq(read_101(c), relayed_101(key), "101 of tunnel %d" % i)
        c.send(b"ping %d" % i)
        eq(client_recv_exact(c, 6), b"ping %d" % i, "echo on tunnel %d" % i)
        c.close()
    eq([len(be.traffic()) for be in [good] + bads], [3, 0, 0, 0, 0], "tunnels per server")


# ---------------------------------------------------------------------------
# active checks: tcp


@case(timeout=60)
def tcp_check_stop_and_restart(t):
    """tcp check (the default type): A's listener closed -> down with the
    connect error; requests go to B only; A listening again on the same port
    -> up after rise passes. A tcp check sends nothing."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": {"interval": "100ms", "timeout": "300ms"}}))
    quiet_baseline(px)
    wait_until(lambda: len([c for c in A.conns if c.eof]) >= 2, WAIT, what="two tcp checks at A")
    eq(served(px, 2), [A.address, B.address], "servers with both up")
    A.stop()
    wait_state(px, A.address, "down", "tcp check: Connection refused", timeout=WAIT)  # fall 3 by default
    eq(served(px, 5), [B.address] * 5, "servers while A is down")
    A.start()
    wait_state(px, A.address, "up", "tcp check passed 2 times")
    got = served(px, 4)
    eq(sorted(got), sorted([A.address, B.address] * 2), "servers once A is up again (%r)" % got)
    eq(state_lines(px, A.address), [("down", "tcp check: Connection refused"), ("up", "tcp check passed 2 times")],
       "A's state lines")
    eq(state_lines(px, B.address), [], "B's state lines")
    # a request's connection may still sit in the proxy's idle pool (not done)
    heads = [c for be in (A, B) for c in be.conns if c.head]
    eq(len(heads), 2 + 5 + 4, "connections that sent a head (the requests)")
    checks = [c for be in (A, B) for c in be.conns if c.done.is_set() and not c.head]
    if len(checks) < 4:
        raise AssertionError("fewer than 4 completed tcp checks recorded: %d" % len(checks))
    eq({(bytes(c.after), c.eof) for c in checks}, {(b"", True)}, "what a tcp check sent (nothing, then EOF)")


# ---------------------------------------------------------------------------
# checks over TLS


def tls_handler(m, rec):
    """TLSBackend handler for checks: an http check gets 200, a websocket
    check a valid 101; a tcp check (EOF right after the handshake) nothing."""
    try:
        head = m.recv_until(b"\r\n\r\n", timeout=10)
    except (AssertionError, OSError, socket.timeout):
        return  # a tcp check closes after the handshake
    rec.data += head
    key = header_value(head, "Sec-WebSocket-Key")
    try:
        if key:
            m.send(resp_101(key))
        else:
            m.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        rec.data += b"|" + m.recv_to_eof(5)
    except (OSError, socket.timeout):
        pass


def tls_checks(t, type_):
    pki = PKI(t.dir)
    other = PKI(t.dir, prefix="other-", cn="unknown CA")
    good = TLSBackend(t, pki, *pki.leaf("good", "backend.test", ["DNS:backend.test"]), tls_handler)
    bad = TLSBackend(t, other, *other.leaf("bad", "backend.test", ["DNS:backend.test"]), tls_handler)
    h = fast(type_)
    if type_ != "tcp":
        h["path"] = "/tls-health"
    h["tls"] = 'verify = true; ca = "%s"; sni = "backend.test";' % pki.ca
    px = t.proxy(config_text=conf({"app": [good, bad]}, {"app": h}, log_level="debug"))
    quiet_baseline(px)
    why = "%s check: certificate verify failed: unable to get local issuer certificate" % type_
    wait_state(px, bad.address, "down", why)
    wait_until(lambda: check_results(px, type_, good.address).count("passed") >= 3, WAIT,
               what="3 passed %s checks of the good server (have %r)"
               % (type_, check_results(px, type_, good.address)))
    eq(set(check_results(px, type_, good.address)), {"passed"}, "results of the good server's checks")
    eq(state_lines(px, good.address), [], "state lines of the good server")
    eq(state_lines(px, bad.address), [("down", why)], "state lines of the bad server")
    eq(set(good.snis), {"backend.test"}, "SNI of the checks")
    eq(bad.handshakes, 0, "handshakes the bad server completed")
    if type_ != "tcp":
        heads = [bytes(r.data).split(b"|")[0] for r in good.raw.records if r.data]
        if not heads:
            raise AssertionError("no check request reached the good TLS server")
        for hd in heads:
            if type_ == "http":
                eq(hd, exact_check_head("/tls-health", good.address), "http check request over TLS")
            else:
                if not re.fullmatch(WS_HEAD_RX % (rb"/tls-health", re.escape(good.address.encode())), hd):
                    raise AssertionError("websocket check head over TLS: %r" % hd)
        if type_ == "websocket":
            tails = [bytes(r.data).split(b"|", 1)[1] for r in good.raw.records if b"|" in bytes(r.data)]
            if not tails:
                raise AssertionError("no websocket check over TLS got to its close frame")
            for tail in tails:
                check_close_frame(tail, "close frame over TLS")


for _type in ("tcp", "http", "websocket"):
    register("tls_checks_" + _type, (lambda ty: lambda t: tls_checks(t, ty))(_type), 60)


# ---------------------------------------------------------------------------
# every server down


@case(timeout=60)
def all_down_503_names_upstream(t):
    """Both servers down: the proxy answers 503 itself, naming the
    upstream; no backend sees the request; one server up again -> 200."""
    A, B = FlipBackend(t, "A", status=500), FlipBackend(t, "B", status=500)
    other = FlipBackend(t, "other")
    routes = [{"name": "api", "path_prefix": "/api", "upstream": "api"}, {"name": "all", "upstream": "other"}]
    px = t.proxy(config_text=conf({"api": [A, B], "other": [other]}, {"api": fast(path="/hz", fall=1, rise=1)},
                                  routes=routes))
    quiet_baseline(px)
    wait_state(px, A.address, "down", "http check: got 500, not 200", upstream="api")
    wait_state(px, B.address, "down", "http check: got 500, not 200", upstream="api")
    for i in range(3):
        expect_503(px, "api", "/api/x%d" % i)
    eq((len(A.traffic()), len(B.traffic())), (0, 0), "requests at the servers of api")
    lines = px.wait_access(3, lambda a: a.get("status") == 503)
    for a in lines:
        eq((a.get("route"), a.get("upstream"), a.get("server"), a.get("reason")),
           ("api", "api", None, "no server of upstream 'api' is up"), "access line of a 503 (%r)" % a)
    eq(len(re.findall(r"^\S+ warn s=[1-9]\d* 503: no server of upstream 'api' is up$", px.log(), re.M)), 3,
       "error-log lines of the 503s")
    eq(ask(px, "/other"), [(200, b"other")], "another upstream still answers")
    B.status = 200
    wait_state(px, B.address, "up", "http check passed 1 times", upstream="api")
    eq(ask(px, "/api/y", 2), [(200, b"B")] * 2, "answers once B is up")


# ---------------------------------------------------------------------------
# passive marking (no active check: the fd check at cleanup stays on)


PASSIVE = {"type": "none", "fall": 3, "retry_down_after": "300ms", "retries": 0}


@case(timeout=60)
def passive_connect_failures_and_retry_down_after(t):
    """type none, fall 3, retries 0: three refused connects mark the server
    down (502, 502, 502, then the proxy's 503 without a connect);
    retry_down_after lets one request through, whose failure takes it down
    again at once; a good answer clears the count."""
    A = FlipBackend(t, "A")
    A.stop()
    px = t.proxy(config_text=conf({"app": [A]}, {"app": PASSIVE}))
    refused = "no upstream server could be reached (last: Connection refused)"
    connects = lambda: len(re.findall(r"^\S+ warn s=\d+ connect to %s failed: Connection refused$"
                                      % re.escape(A.address), px.log(), re.M))
    for i in range(3):
        eq(state_lines(px), [], "state lines before request %d" % (i + 1))
        eq(check_error_response(ask_raw(px), 502), refused, "502 of request %d" % (i + 1))
    down = ("down", "3 failures in a row (last: Connection refused)")
    wait_state(px, A.address, *down)
    eq(connects(), 3, "connect attempts")
    expect_503(px, "app")
    eq(connects(), 3, "connect attempts after the 503")

    # retry_down_after: polls get the 503 until one request is let through
    eq(check_error_response(first_not_503(px), 502), refused, "the request let through")
    probation = ("up", "retry_down_after 300 ms passed")
    eq(state_lines(px, A.address), [down, probation, down], "state lines after the probation request")
    eq(connects(), 4, "connect attempts after the probation request")
    expect_503(px, "app")

    # back for real: the first request let through is answered
    A.start()
    data = first_not_503(px)
    eq(data.split(b"\r\n", 1)[0], b"HTTP/1.1 200 Whatever", "the first answer after the restart (%r)" % data[:200])
    eq(data.endswith(b"\r\n\r\nA"), True, "body of the first answer (%r)" % data[-50:])
    eq(state_lines(px, A.address), [down, probation, down, probation], "state lines after the answer")
    # the answer cleared the count: two failures are not enough, the third is
    A.stop()
    for i in range(2):
        eq(check_error_response(ask_raw(px), 502), refused, "502 after the answer, %d" % (i + 1))
    eq(len(state_lines(px, A.address)), 4, "state lines after two failures")
    eq(check_error_response(ask_raw(px), 502), refused, "third 502")
    wait_state(px, A.address, *down, n=3)
    eq(state_lines(px, A.address), [down, probation, down, probation, down], "state lines at the end")
    expect_503(px, "app")


@case(timeout=60)
def passive_close_and_reset_before_answer(t):
    """A close or a reset before any byte of the answer counts (fall 2:
    down after two); a server that sent part of its head and then closed
    does not count."""
    C = FlipBackend(t, "C", mode="close")
    R = FlipBackend(t, "R", mode="reset")
    P = FlipBackend(t, "P", mode="partial")
    h = {"type": "none", "fall": 2, "retries": 0, "retry_down_after": "60s"}
    routes = [{"name": n, "path_prefix": "/" + n, "upstream": n} for n in ("c", "r", "p")]
    px = t.proxy(config_text=conf({"c": [C], "r": [R], "p": [P]}, {"c": h, "r": h, "p": h}, routes=routes))
    for i in range(2):
        eq(check_error_response(ask_raw(px, "/c"), 502), "backend closed before a complete response head",
           "close: 502 %d" % (i + 1))
        eq(check_error_response(ask_raw(px, "/r"), 502), "backend connection error", "reset: 502 %d" % (i + 1))
    wait_state(px, C.address, "down", "2 failures in a row (last: closed before answering)", upstream="c")
    wait_state(px, R.address, "down", "2 failures in a row (last: failed before answering)", upstream="r")
    expect_503(px, "c", "/c")
    expect_503(px, "r", "/r")
    eq((len(C.traffic()), len(R.traffic())), (2, 2), "requests at C and R")
    for i in range(4):
        eq(check_error_response(ask_raw(px, "/p"), 502), "backend closed before a complete response head",
           "partial: 502 %d" % (i + 1))
    eq(len(P.traffic()), 4, "requests at P")
    eq(state_lines(px, upstream="p"), [], "state lines of P (it had begun to answer)")


@case(timeout=60)
def passive_5xx_counts(t):
    """passive_5xx = true: 5xx answers count, a good answer clears the
    count (500, 200, 503, 200, 503 never makes two in a row); then 503 503
    -> down, and the proxy answers its own 503."""
    A = FlipBackend(t, "A")
    px = t.proxy(config_text=conf({"app": [A]}, {"app": {"type": "none", "fall": 2, "passive_5xx": True,
                                                         "retry_down_after": "60s"}}))
    for st in (500, 200, 503, 200, 503, 200):
        A.status = st
        eq(ask(px), [(st, b"A")], "answer %d relayed" % st)
    eq(state_lines(px), [], "state lines after alternating answers")
    A.status = 503
    eq(ask(px, n=2), [(503, b"A")] * 2, "two 503 answers relayed")
    wait_state(px, A.address, "down", "2 failures in a row (last: answered 503)")
    expect_503(px, "app")
    eq(len(A.traffic()), 8, "requests at A")


@case(timeout=60)
def passive_5xx_off_and_passive_off(t):
    """Without passive_5xx, 5xx answers never mark down; with passive =
    false, refused connects do not either."""
    A = FlipBackend(t, "A", status=503)
    dead = FlipBackend(t, "dead")
    dead.stop()
    routes = [{"name": "d", "path_prefix": "/d", "upstream": "d"}, {"name": "all", "upstream": "a"}]
    h = {"type": "none", "fall": 1, "retries": 0, "retry_down_after": "60s"}
    hd = dict(h, passive=False)
    px = t.proxy(config_text=conf({"a": [A], "d": [dead]}, {"a": h, "d": hd}, routes=routes))
    eq(ask(px, n=6), [(503, b"A")] * 6, "503 answers relayed")
    for i in range(4):
        eq(check_error_response(ask_raw(px, "/d"), 502), "no upstream server could be reached (last: Connection "
           "refused)", "502 %d with passive = false" % (i + 1))
    eq(len(re.findall(r"connect to %s failed" % re.escape(dead.address), px.log())), 4, "connect attempts")
    eq(len(A.traffic()), 6, "requests at A")
    eq([m.group(0) for m in STATE_RX.finditer(px.log())], [], "state lines")


# ---------------------------------------------------------------------------
# on_down and tunnels


def open_ws(t, px, i):
    key = ws_key(seed="t%d" % i)
    c = px.connect()
    c.send(ws_request(key)[0])
    eq(read_101(c), relayed_101(key), "101 of tunnel %d" % i)
    return c


def echo_ok(c, msg, what):
    try:
        c.send(msg)
        got = client_recv_exact(c, len(msg), 10)
    except (ProtocolError, OSError) as e:
        raise AssertionError("%s: no echo: %s: %s" % (what, type(e).__name__, e))
    eq(got, msg, what)


def tunnel_lines(px):
    return [a for a in px.access_lines() if a.get("event") == "tunnel"]


def on_down(t, mode, close):
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    h = fast(path="/hz", fall=1)
    if close is not None:
        h["on_down"] = "close" if close else "keep"
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": h}, mode=mode))
    quiet_baseline(px)
    ta, tb = open_ws(t, px, 0), open_ws(t, px, 1)
    eq([len(A.traffic()), len(B.traffic())], [1, 1], "tunnels at A and B")
    echo_ok(ta, b"to A", "tunnel to A before")
    echo_ok(tb, b"to B", "tunnel to B before")
    A.status = 503
    wait_state(px, A.address, "down", "http check: got 503, not 200")
    tun_a = A.traffic()[0]
    if close:
        ta.expect_closed(5)
        wait_until(tun_a.done.is_set, 5, what="EOF of the tunnel at A")
        eq(tun_a.eof, True, "A saw the tunnel end")
        px.wait_access(1, lambda a: a.get("event") == "tunnel")
        tl = tunnel_lines(px)
        eq(len(tl), 1, "tunnel lines (%r)" % tl)
        eq((tl[0].get("server"), tl[0].get("closed_by"), tl[0].get("reason"), tl[0].get("mode")),
           (A.address, "proxy", "server down", mode), "tunnel line of A's tunnel (%r)" % tl[0])
        eq(bytes(tun_a.after), b"to A", "bytes A got on its tunnel")
    else:
        A.wait_checks(len(A.checks()) + 2)  # the close would have come at the down line
        echo_ok(ta, b"still to A", "tunnel to A after A went down (on_down keep)")
        eq(tunnel_lines(px), [], "tunnel lines while both tunnels are open")
    echo_ok(tb, b"still to B", "tunnel to B after A went down")
    # a new tunnel goes to B
    tc = open_ws(t, px, 2)
    echo_ok(tc, b"new", "new tunnel")
    eq([len(A.traffic()), len(B.traffic())], [1, 2], "tunnels at A and B at the end")
    for c in (ta, tb, tc):
        c.close()
    px.wait_access(3, lambda a: a.get("event") == "tunnel")
    rest = [a for a in tunnel_lines(px) if a.get("reason") != "server down"]
    eq(sorted((a.get("server"), a.get("closed_by"), a.get("reason")) for a in rest),
       sorted([(B.address, "client", "client EOF")] * 2 + ([] if close else [(A.address, "client", "client EOF")])),
       "the other tunnel lines")


@tcase(timeout=60)
def on_down_close(t, mode):
    """on_down = "close": A's tunnel ends when A's check fails (the client
    and A see EOF; the tunnel line says server down); B's goes on."""
    on_down(t, mode, True)


@tcase(timeout=60)
def on_down_keep(t, mode):
    """on_down = "keep" (explicit): A's tunnel goes on after A is down."""
    on_down(t, mode, False)


@case(timeout=60)
def on_down_default_keeps(t):
    """Without on_down, a tunnel to a server that went down stays open."""
    on_down(t, "splice", None)


@case(timeout=60)
def on_down_close_passive(t):
    """A passive fall (from another session's refused connects, on the
    worker thread) also ends the server's tunnels with on_down = "close"."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    h = {"type": "none", "fall": 2, "retry_down_after": "60s", "on_down": "close"}
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": h}))
    ta = open_ws(t, px, 0)
    eq(len(A.traffic()), 1, "tunnel at A")
    echo_ok(ta, b"hello A", "tunnel to A")
    A.stop()
    for i in range(10):
        eq(ask(px), [(200, b"B")], "request %d while A refuses" % (i + 1))
        if state_lines(px, A.address):
            break
    eq(state_lines(px, A.address), [("down", "2 failures in a row (last: Connection refused)")], "A's state lines")
    ta.expect_closed(5)
    tl = px.wait_access(1, lambda a: a.get("event") == "tunnel")
    eq((tl[0].get("server"), tl[0].get("closed_by"), tl[0].get("reason")), (A.address, "proxy", "server down"),
       "tunnel line (%r)" % tl[0])


# ---------------------------------------------------------------------------
# reloads and workers


@case(timeout=90)
def reload_keeps_state(t):
    """gen 1 without health; gen 2 adds http checks: A and C (answering 503)
    go down; gen 3 changes the interval: they stay down (no new up or down
    line, still skipped / 503 right after the reload); gen 4 drops the
    health blocks: both up again ("no health block any more"), requests
    reach them, and no check runs any more."""
    A, B, C = FlipBackend(t, "A"), FlipBackend(t, "B"), FlipBackend(t, "C")
    routes = [{"name": "solo", "path_prefix": "/solo", "upstream": "solo"}, {"name": "all", "upstream": "app"}]

    def text(gen, port):
        h = None
        if gen in (2, 3):
            iv = "100ms" if gen == 2 else "150ms"
            h = {"app": fast(path="/hz", interval=iv), "solo": fast(path="/hz", interval=iv)}
        return conf({"app": [A, B], "solo": [C]}, h, routes=routes, port=port)

    px = t.proxy(config_text=text(1, "{port}"))
    rl = Reloader(px)
    eq(served(px, 2), [A.address, B.address], "gen 1: servers")
    eq(ask(px, "/solo"), [(200, b"C")], "gen 1: solo")
    A.status = C.status = 503
    rl.ok(text(2, px.port))
    down = ("down", "http check: got 503, not 200")
    wait_state(px, A.address, *down)
    wait_state(px, C.address, *down, upstream="solo")
    eq(served(px, 3), [B.address] * 3, "gen 2: servers")
    expect_503(px, "solo", "/solo")
    checks_a = len(A.checks())
    rl.ok(text(3, px.port))
    expect_503(px, "solo", "/solo")
    eq(served(px, 3), [B.address] * 3, "gen 3, right after the reload: servers")
    A.wait_checks(checks_a + 3)
    eq(state_lines(px, A.address), [down], "A's state lines in gen 3")
    eq(state_lines(px, C.address, "solo"), [down], "C's state lines in gen 3")
    expect_503(px, "solo", "/solo")
    rl.ok(text(4, px.port))
    up = ("up", "no health block any more")
    wait_state(px, A.address, *up)
    wait_state(px, C.address, *up, upstream="solo")
    eq(ask(px, "/solo"), [(503, b"C")], "gen 4: C's own 503 relayed")
    got = ask(px, "/", 4)
    eq(sorted(got), sorted([(503, b"A"), (200, b"B")] * 2), "gen 4: answers from A and B (%r)" % (got,))
    eq(state_lines(px, A.address), [down, up], "A's state lines at the end")
    eq(state_lines(px, B.address), [], "B's state lines")
    # no check any more: what would be five intervals later, none came
    n = [len(be.checks()) for be in (A, B, C)]
    time.sleep(0.75)
    eq([len(be.checks()) for be in (A, B, C)], n, "checks after the health blocks went away")


@case(timeout=90)
def reload_new_identity_starts_up(t):
    """State belongs to (upstream name, address): A down in upstream "app"
    stays down over a reload, but the same address under a new upstream
    name starts up and goes down on its own checks."""
    A, B = FlipBackend(t, "A", status=503), FlipBackend(t, "B")

    def text(name, port):
        return conf({name: [A, B]}, {name: fast(path="/hz", interval="150ms")}, port=port)

    px = t.proxy(config_text=text("app", "{port}"))
    quiet_baseline(px)
    rl = Reloader(px)
    down = ("down", "http check: got 503, not 200")
    wait_state(px, A.address, *down)
    rl.ok(text("app2", px.port))
    wait_state(px, A.address, *down, upstream="app2")
    eq(state_lines(px, A.address, "app"), [down], "A's lines under app")
    eq(state_lines(px, A.address, "app2"), [down], "A's lines under app2")
    eq(served(px, 3), [B.address] * 3, "servers under app2")


@case(timeout=60)
def workers_two_agree_active(t):
    """workers = 2: once A's check failed, requests on 40 connections
    (served by both workers) never reach A."""
    A, B = FlipBackend(t, "A", status=503), FlipBackend(t, "B")
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": fast(path="/hz")}, workers=2))
    quiet_baseline(px)
    wait_state(px, A.address, "down", "http check: got 503, not 200")
    before = n_access(px)
    eq(ask(px, n=40), [(200, b"B")] * 40, "40 answers")
    lines = px.wait_access(before + 40, lambda a: a.get("event") is None)[before:]
    eq({a["worker"] for a in lines}, {0, 1}, "workers that served the 40 requests")
    eq(len(A.traffic()), 0, "requests at A")


@case(timeout=60)
def workers_two_agree_passive(t):
    """workers = 2, type none, fall 3: the failures of both workers add up:
    exactly 3 refused connects to A in all, then A is down for both; all 40
    requests (retried on B) answered."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    A.stop()
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": {"type": "none", "fall": 3, "retry_down_after": "60s"}},
                                  workers=2))
    before = n_access(px)
    eq(ask(px, n=40), [(200, b"B")] * 40, "40 answers")
    lines = px.wait_access(before + 40, lambda a: a.get("event") is None)[before:]
    eq({a["worker"] for a in lines}, {0, 1}, "workers that served the 40 requests")
    eq(len(re.findall(r"^\S+ warn s=\d+ connect to %s failed: Connection refused$" % re.escape(A.address),
                      px.log(), re.M)), 3, "refused connects to A (fall = 3, shared by the workers)")
    eq(state_lines(px, A.address), [("down", "3 failures in a row (last: Connection refused)")], "A's state lines")


# ---------------------------------------------------------------------------
# -t


GOOD_UPSTREAMS = """upstreams = (
  { name = "a"; servers = ( { address = "127.0.0.1:9001"; } );
    health = { type = "http"; interval = "2s"; timeout = "1s"; rise = 2; fall = 3;
               path = "/healthz"; host = "a.test"; expect = 204; passive = true; passive_5xx = true; };
    on_down = "close"; },
  { name = "b"; servers = ( { address = "127.0.0.1:9002"; } );
    health = { type = "websocket"; path = "/ws"; host = "b.test"; }; on_down = "keep"; },
  { name = "c"; servers = ( { address = "127.0.0.1:9003"; } ); health = { type = "tcp"; }; },
  { name = "d"; servers = ( { address = "127.0.0.1:9004"; } );
    health = { type = "none"; retry_down_after = "10s"; passive = false; }; },
  { name = "e"; servers = ( { address = "127.0.0.1:9005"; } ); health = { }; }
);
"""


def t_conf(t, ups):
    return ('listen = ( { address = "127.0.0.1:%d"; } );\n%s'
            'routes = ( { upstream = "a"; } );\nlimits = { max_connections = 100; };\n'
            % (t.free_port(), ups))


def one_bad(health, up_extra=""):
    return ('upstreams = ( { name = "a"; servers = ( { address = "127.0.0.1:9001"; } );\n'
            '  %s%s } );\n' % (health, up_extra))


# (name, upstream text, [(needle for the line, message)])
BAD_T = [
    ("type", one_bad('health = {\n type = "icmp"; };'),
     [('type = "icmp"', "bad value 'health.type' = \"icmp\": expected tcp, http, websocket or none")]),
    ("expect_websocket", one_bad('health = { type = "websocket";\n expect = 200; };'),
     [("expect = 200", "'expect' is only valid with http checks (a websocket check expects 101)")]),
    ("expect_range", one_bad('health = { type = "http";\n expect = 199; };'),
     [("expect = 199", "bad value 'expect' = 199: must be 200..599")]),
    ("on_down_without_health", one_bad("", 'on_down = "close";'),
     [('on_down = "close"', "'on_down' needs a 'health' block (servers are never down without one)")]),
    ("on_down_value", one_bad("health = { };\n", 'on_down = "drain";'),
     [('on_down = "drain"', "bad value 'on_down' = \"drain\": expected keep or close")]),
    ("unknown_key", one_bad("health = { type = \"tcp\";\n  intervall = \"1s\"; };"),
     [("intervall", "unknown key 'health.intervall'")]),
    ("rise_zero", one_bad("health = {\n rise = 0; };"), [("rise = 0", "bad value 'rise' = 0: must be 1..100")]),
    ("fall_big", one_bad("health = {\n fall = 101; };"), [("fall = 101", "bad value 'fall' = 101: must be 1..100")]),
    ("interval_zero", one_bad('health = { interval = "0"; };'),
     [("interval", "health 'interval', 'timeout' and 'retry_down_after' must be > 0")]),
    ("timeout_text", one_bad('health = {\n timeout = "soon"; };'), [("soon", "bad duration 'timeout' = \"soon\"")]),
    ("path_relative", one_bad('health = { type = "http";\n path = "healthz"; };'),
     [("healthz", "bad value 'path' = \"healthz\": must start with '/' and have no spaces")]),
    ("host_space", one_bad('health = { type = "http";\n host = "a b"; };'),
     [('"a b"', "bad value 'host' = \"a b\": must not be empty or have spaces")]),
    ("path_tcp", one_bad('health = {\n path = "/x"; };'),
     [('path = "/x"', "'path' is only valid with http and websocket checks")]),
    ("retry_down_after_http", one_bad('health = { type = "http";\n retry_down_after = "5s"; };'),
     [("retry_down_after", "'retry_down_after' is only valid with type = \"none\" (otherwise the check brings "
                           "servers back)")]),
    ("passive_type", one_bad('health = {\n passive_5xx = "yes"; };'),
     [("passive_5xx", "'health.passive_5xx' must be true or false")]),
    ("two_errors", one_bad('health = { type = "websocket";\n rise = 0;\n expect = 200; };'),
     [("rise = 0", "bad value 'rise' = 0: must be 1..100"),
      ("expect = 200", "'expect' is only valid with http checks (a websocket check expects 101)")]),
]


@case(timeout=60)
def config_check(t):
    """-t: every health key and on_down accepted; each bad value gives its
    exact FILE:LINE: message (and nothing else), exit status 1."""
    res = t.check_config(t_conf(t, GOOD_UPSTREAMS), "good.conf")
    eq((res.rc, [l for l in res.err.splitlines() if l.startswith(res.path + ":") and "configuration is valid" not in l
                 and "warning" not in l]), (0, []), "-t on a config with every health key (stderr %r)" % res.err)
    for name, ups, want in BAD_T:
        text = t_conf(t, ups)
        res = t.check_config(text, "bad-%s.conf" % name)
        got = [l for l in res.err.splitlines() if l.startswith(res.path + ":") and "warning:" not in l]
        exp = ["%s:%d: %s" % (res.path, line_of(text, needle), msg) for needle, msg in want]
        eq((res.rc, got), (1, exp), "-t on %s (stderr %r)" % (name, res.err))


# ---------------------------------------------------------------------------
# rise after a passive fall, interim answers, passive state over a reload,
# on_down with two workers


@case(timeout=60)
def passive_fall_then_rise_counts_anew(t):
    """type http with passive_5xx: traffic answered 503 takes A down
    passively while its check keeps passing; the check then brings it back
    after `rise` (3) passes counted from the fall, not at once from the
    passes before it."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    A.paths["/app"] = 503
    h = fast(path="/hz", rise=3, passive_5xx=True)
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": h}, log_level="debug"))
    quiet_baseline(px)
    wait_until(lambda: check_results(px, "http", A.address).count("passed") >= 5, WAIT,
               what="5 passed checks of A")
    got = ask(px, "/app", 4)
    eq(sorted(got), sorted([(503, b"A"), (200, b"B")] * 2), "answers before the fall (%r)" % (got,))
    wait_state(px, A.address, "down", "2 failures in a row (last: answered 503)")
    wait_state(px, A.address, "up", "http check passed 3 times")
    eq(check_results_before(px, "http", A.address, "is up")[-3:], ["passed"] * 3, "checks before the rise")
    eq(state_lines(px, A.address), [("down", "2 failures in a row (last: answered 503)"),
                                    ("up", "http check passed 3 times")], "A's state lines")


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


@case(timeout=60)
def http_check_skips_interim_responses(t):
    """A server that sends 103 Early Hints before its 200 is healthy: the
    check must judge the final status, not the interim one (RFC 9110
    section 15.2: a client must be able to parse 1xx responses before the
    final one), as the proxy does for the same server's traffic (103 and
    200 relayed)."""
    A, B = FlipBackend(t, "A"), FlipBackend(t, "B")
    A.interim = EARLY_HINTS
    px = t.proxy(config_text=conf({"app": [A, B]}, {"app": fast(path="/hz", fall=1)}, log_level="debug"))
    quiet_baseline(px)
    wait_until(lambda: len(check_results(px, "http", A.address)) >= 3, WAIT, what="3 checks of A")
    eq(set(check_results(px, "http", A.address)), {"passed"}, "results of A's checks (it answers 103, then 200)")
    eq(state_lines(px, A.address), [], "A's state lines")
    c = px.connect()
    for i, want in enumerate([b"A", b"B"]):
        r = c.get("/page")
        eq((r.status, r.body, [x.status for x in r.interim]), (200, want, [103] if want == b"A" else []),
           "request %d: interim and final answer relayed" % (i + 1))
    c.close()


@case(timeout=60)
def reload_keeps_passive_state(t):
    """type none: a passively-down server stays down over a reload (503
    right after it, no connect, no new line) and comes back by
    retry_down_after counted from its fall."""
    A = FlipBackend(t, "A")
    A.stop()

    def text(port, after):
        h = {"type": "none", "fall": 2, "retries": 0, "retry_down_after": after}
        return conf({"app": [A]}, {"app": h}, port=port)

    px = t.proxy(config_text=text("{port}", "60s"))
    rl = Reloader(px)
    for i in range(2):
        eq(check_error_response(ask_raw(px), 502), "no upstream server could be reached (last: Connection refused)",
           "502 %d" % (i + 1))
    down = ("down", "2 failures in a row (last: Connection refused)")
    wait_state(px, A.address, *down)
    expect_503(px, "app")
    rl.ok(text(px.port, "60s"))
    expect_503(px, "app")
    eq(len(re.findall(r"connect to %s failed" % re.escape(A.address), px.log())), 2, "refused connects")
    A.start()
    rl.ok(text(px.port, "100ms"))
    data = first_not_503(px)
    eq((data.split(b"\r\n", 1)[0], data[-1:]), (b"HTTP/1.1 200 Whatever", b"A"),
       "the first answer once retry_down_after (now 100 ms) passed (%r)" % data[:100])
    eq(state_lines(px, A.address), [down, ("up", "retry_down_after 100 ms passed")], "A's state lines")
    eq(len(re.findall(r"connect to %s failed" % re.escape(A.address), px.log())), 2, "refused connects")


@case(timeout=60)
def on_down_close_workers_two(t):
    """workers = 2: the tunnels of a server that went down are closed in
    both workers (the check runs on one)."""
    A = FlipBackend(t, "A")
    h = fast(path="/hz", fall=1, on_down="close")
    px = t.proxy(config_text=conf({"app": [A]}, {"app": h}, workers=2))
    quiet_baseline(px)
    tuns = [open_ws(t, px, i) for i in range(12)]
    ups = px.wait_access(12, lambda a: a.get("status") == 101)
    eq({a["worker"] for a in ups}, {0, 1}, "workers of the 12 tunnels")
    for i, c in enumerate(tuns):
        echo_ok(c, b"t%d" % i, "tunnel %d before" % i)
    A.status = 503
    wait_state(px, A.address, "down", "http check: got 503, not 200")
    for i, c in enumerate(tuns):
        c.expect_closed(5)
    tl = px.wait_access(12, lambda a: a.get("event") == "tunnel")
    eq(sorted((a.get("closed_by"), a.get("reason")) for a in tl), [("proxy", "server down")] * 12, "tunnel lines")
    eq({a["worker"] for a in tl}, {0, 1}, "workers of the closed tunnels")
