"""Slow and many peers (issue 16): slowloris, slow readers of a large
response and of a tunnel, thousands of half-open connections against
max_connections, and the splice pipe pool running dry.

Memory is watched as the proxy's VmRSS (/proc/PID/status) and CPU as its
utime + stime (/proc/PID/stat); the bounds are resource bounds, far above
what a correct proxy uses, never timing thresholds on behaviour. Every
figure is printed with t.note (shown with -v) for the closing note.
"""

import os
import select
import socket
import threading
import time

from harness import Reply, blob, case, check_error_response, eq, expect_proxy_error, fd_kinds, register, sha256, \
    wait_until
from wslib import (UpgradeBackend, check_fds_back, client_recv_exact, raise_nofile, read_101, relayed_101, tcase,
                   wait_tunnel_line, ws_key, ws_request)

MiB = 1 << 20
# ASan (if the binary has it) keeps freed memory in quarantine: keep that small
# so RSS measures what the proxy holds, not what it freed
ENV = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1").lstrip(":")}
RSS_GROWTH_BOUND_KB = 5 * 1024


class RssWatch:
    """Samples the proxy's RSS every 20 ms in a thread: .base, .peak (kB)."""

    def __init__(self, px):
        self.px = px
        self.base = self.peak = px.rss_kb()
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.px.rss_kb())
            except OSError:
                return
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.th.join()
        return self.peak - self.base


# ---------------------------------------------------------------------------
# slowloris


@case(timeout=60)
def slowloris_cut_at_header_timeout(t):
    """One byte every 0.5 s, never a complete head: at timeouts.header (3 s)
    the client gets exactly the 408 and a close while it is still sending;
    the backend sees nothing."""
    be = t.raw_backend()
    px = t.proxy(be, timeouts={"header": "3s"})
    base = px.fd_count()
    c = px.connect()
    head = b"GET /slow HTTP/1.1\r\nHost: s.test\r\nX-Slow: " + b"a" * 200
    state = {"sent": 0, "stopped": False}

    def trickle():
        try:
            for ch in head:
                if state["stopped"]:
                    return
                c.sock.send(bytes([ch]))
                state["sent"] += 1
                time.sleep(0.5)
        except OSError:
            pass

    w = t.thread(trickle)
    try:
        data = c.read_until_close(40)
    finally:
        state["stopped"] = True
    w.join()
    t.note("client sent %d bytes before the 408" % state["sent"])
    assert state["sent"] < len(head), "the head was complete before the proxy answered"
    eq(check_error_response(data, 408), "request head not received in time", "408 reason")
    px.wait_log(r"^\S+ info s=1 408: request head not received in time$")
    a = px.wait_access(1)[0]
    eq((a["status"], a.get("reason")), (408, "request head not received in time"), "access line")
    eq(be.connections, 0, "backend connections")
    px.wait_fds(base)


# ---------------------------------------------------------------------------
# a slow reader of a large response


@case(timeout=120)
def slow_reader_50mib_bounded_then_cut_at_send_timeout(t):
    """A 50 MiB response to a client that reads slowly (64 KiB every 20 ms
    for 4 MiB), then not at all: the proxy's RSS grows by less than 5 MiB
    (backpressure stops the backend), and timeouts.send (2 s) cuts the
    stalled client: it gets part of the body and a close, the access line
    says why."""
    size = 50 * MiB
    piece = blob(MiB, 31)
    sent = [0]

    def gen():
        for _ in range(size // MiB):
            for i in range(0, MiB, 65536):
                yield piece[i:i + 65536]
                sent[0] += 65536

    be = t.http_backend([Reply(200, b"warm"), Reply(200, gen(), length=size)])
    be.expect_errors("the proxy drops the backend connection when the client is cut")
    px = t.proxy(be, timeouts={"send": "2s"}, env=ENV)
    base = px.fd_count()
    c0 = px.connect()
    eq(c0.get("/warm").status, 200, "warm-up")
    c0.close()
    time.sleep(0.2)
    watch = RssWatch(px)
    c = px.connect(rcvbuf=65536)
    c.request("GET", "/big")
    head = c.rd.read_until(b"\r\n\r\n", time.monotonic() + 10)
    eq(head.split(b"\r\n")[0], b"HTTP/1.1 200 OK", "status line")
    got = len(c.rd.buf)
    c.rd.buf.clear()
    c.sock.settimeout(10)
    while got < 4 * MiB:
        d = c.sock.recv(65536)
        if not d:
            raise AssertionError("closed after %d body bytes while the client was reading" % got)
        got += len(d)
        time.sleep(0.02)
    sent_when_stopped = sent[0]
    # stop reading: the proxy's send timer runs out and cuts the client
    reason = "send timeout: client is not reading"
    px.wait_log(r"^\S+ warn s=\d+ %s$" % reason, timeout=30)
    growth = watch.done()
    rest = c.read_until_close(10)
    got += len(rest)
    t.note("slow reader: proxy RSS %d kB -> peak %d kB (growth %d kB); the client read %d of %d bytes, the "
           "backend had sent %d when the client stopped, %d at the end"
           % (watch.base, watch.peak, growth, got, size, sent_when_stopped, sent[0]))
    assert got < size, "the whole body arrived: the client was never cut"
    assert sent[0] < got + 16 * MiB, "no backpressure: the backend sent %d bytes, the client read %d" % (sent[0], got)
    assert growth < RSS_GROWTH_BOUND_KB, "proxy RSS grew by %d kB with a slow reader" % growth
    a = [x for x in px.wait_access(2) if x["target"] == "/big"][0]
    eq((a["status"], a.get("reason")), (200, reason), "access line of the cut response")
    c.close()
    px.wait_fds(base)


# ---------------------------------------------------------------------------
# a tunnel whose client stops reading


def _flooding_tunnel(t, mode, timeouts, size=50 * MiB):
    """A tunnel whose backend sends `size` bytes as fast as it can; returns
    (px, client, counter of bytes the backend sent, RssWatch, base fds)."""
    sent = [0]
    piece = blob(MiB, 32)

    def after(tun):
        try:
            for _ in range(size // MiB):
                tun.sock.settimeout(120)
                tun.sock.sendall(piece)
                sent[0] += MiB
        except OSError:
            return
        tun.recv_to_eof(120)

    be = UpgradeBackend(t, after=after)
    be.expect_errors("the tunnel is cut under the flood")
    px = t.proxy(be, timeouts=timeouts, extra='tunnel = { mode = "%s"; };' % mode, env=ENV)
    base = fd_kinds(px.pid)
    watch = RssWatch(px)
    key = ws_key()
    c = px.connect(rcvbuf=65536)
    c.send(ws_request(key)[0])
    eq(read_101(c), relayed_101(key), "101")
    eq(client_recv_exact(c, MiB), piece, "the first MiB through the tunnel")
    return px, c, sent, watch, base


def _stall_and_measure(t, px, sent, watch, what):
    """The client reads no more: wait until the backend's flood stalls (no
    progress for 1 s), then return the RSS growth."""
    last = [-1, time.monotonic()]

    def stalled():
        if sent[0] != last[0]:
            last[0], last[1] = sent[0], time.monotonic()
            return False
        return time.monotonic() - last[1] > 1.0

    wait_until(stalled, 30, interval=0.1, what="the backend's flood to stall")
    growth = watch.done()
    t.note("%s: proxy RSS %d kB -> peak %d kB (growth %d kB); the backend sent %d bytes before it stalled"
           % (what, watch.base, watch.peak, growth, sent[0]))
    assert sent[0] < 32 * MiB, "no backpressure: the backend sent %d bytes, the client read 1 MiB" % sent[0]
    assert growth < RSS_GROWTH_BOUND_KB, "proxy RSS grew by %d kB under a tunnel nobody reads" % growth
    return growth


@tcase(timeout=90)
def tunnel_client_stops_reading_bounded(t, mode):
    """The backend floods 50 MiB into a tunnel whose client reads 1 MiB and
    stops: the flood stalls, the proxy's RSS grows by less than 5 MiB, and
    tunnel_idle (3 s) ends the tunnel (cause idle_timeout)."""
    px, c, sent, watch, base = _flooding_tunnel(t, mode, {"tunnel_idle": "3s"})
    _stall_and_measure(t, px, sent, watch, "tunnel (%s), client stopped reading" % mode)
    tl = wait_tunnel_line(px, timeout=20)[0]
    eq((tl["cause"], tl["closed_by"]), ("idle_timeout", "proxy"), "tunnel line (cause, closed_by)")
    c.close()
    check_fds_back(px, base, 2)


@tcase(timeout=90)
def tunnel_client_stops_reading_cut_at_send_timeout(t, mode):
    """As above with tunnel_idle at one hour and timeouts.send at 2 s: issue
    16 wants a tunnel whose client stops reading cut at timeouts.send, as an
    HTTP response is. BUG today: tunnels have no send timer, so the stalled
    tunnel holds its buffers (and pipe) until tunnel_idle."""
    px, c, sent, watch, base = _flooding_tunnel(t, mode, {"tunnel_idle": "1h", "send": "2s"})
    _stall_and_measure(t, px, sent, watch, "tunnel (%s), client stopped reading" % mode)
    tl = wait_tunnel_line(px, timeout=20)[0]
    eq((tl["cause"], tl["closed_by"]), ("send_timeout", "proxy"), "tunnel line (cause, closed_by)")
    c.close()
    check_fds_back(px, base, 2)


# ---------------------------------------------------------------------------
# thousands of half-open connections against max_connections


@case(timeout=240)
def half_open_connections_at_max_connections(t):
    """N half-open connections (each sent part of a head, then nothing), N
    = max_connections, as many as the descriptor limit allows up to 15000
    (each costs the proxy one descriptor, the test one more; the proxy plans
    two per connection). The proxy holds all N, accepts nothing more (a
    complete request waits unanswered), burns no CPU while paused, keeps
    RSS per connection bounded, and serves the waiting request once the N
    close. (There is no log line for this pause: only running out of
    descriptors logs "accept on ...: ...; pausing".)"""
    soft, hard = raise_nofile()
    n = min(15000, (hard - 400) // 2)
    if n < 200:
        t.skip("descriptor limit %d: fewer than 200 half-open connections fit" % hard)
    t.note("descriptor limit %d: %d half-open connections" % (hard, n))
    be = t.http_backend(Reply(200, b"served"))
    px = t.proxy(be, limits={"max_connections": n}, timeouts={"header": "300s"},
                 extra='tunnel = { mode = "copy"; };', env=ENV)
    warn = [ln for ln in px.log().splitlines() if " warn " in ln]
    eq(warn, [], "warnings at startup (the limit must hold max_connections)")
    start = px.fd_count()
    c0 = px.connect()
    eq(c0.get("/warm").status, 200, "warm-up")
    c0.close()
    px.wait_fds(start)  # the warm-up's client gone, its backend connection closed by the backend
    base = start
    time.sleep(0.3)
    rss0 = px.rss_kb()
    socks = []
    part = b"GET /half HTTP/1.1\r\nHost: s.test\r\nX-Half: "
    try:
        # in batches well below the listen backlog (1024): a connection whose
        # handshake the kernel drops from a full accept queue would only be
        # retried on the SYN-ACK timer, and may be given up
        while len(socks) < n:
            for _ in range(min(256, n - len(socks))):
                s = socket.create_connection(("127.0.0.1", px.port), timeout=30)
                socks.append(s)
                s.sendall(part)
            wait_until(lambda: px.fd_count() >= base + len(socks), 60, interval=0.02,
                       what="the proxy holding %d connections (has %d)" % (len(socks), px.fd_count() - base))
        time.sleep(0.5)
        eq(px.fd_count(), base + n, "proxy descriptors: one per half-open connection")
        waiting = px.connect()
        waiting.request("GET", "/waiting")
        time.sleep(0.5)
        rss1 = px.rss_kb()
        cpu0 = px.cpu_seconds()
        time.sleep(2.0)
        cpu = px.cpu_seconds() - cpu0
        per_conn = (rss1 - rss0) * 1024 // n
        t.note("half-open: %d connections, RSS %d kB -> %d kB: %d bytes per connection; CPU %.3f s in 2 s while "
               "paused" % (n, rss0, rss1, per_conn, cpu))
        eq(px.fd_count(), base + n, "proxy descriptors while paused (nothing more accepted)")
        eq(len(be.requests), 1, "requests served while paused (the warm-up only)")
        assert cpu < 0.2, "proxy used %.2f s of CPU in 2 s while paused at max_connections" % cpu
        assert per_conn < 32 * 1024, "%d bytes of RSS per half-open connection" % per_conn
        assert waiting.is_open_after(0.5), "the waiting connection was closed"
    finally:
        for s in socks:
            s.close()
    r = waiting.read_response(timeout=60)
    eq((r.status, r.body), (200, b"served"), "the waiting request, once the half-open connections closed")
    eq([q.target for q in be.requests], ["/warm", "/waiting"], "requests at the backend")
    waiting.close()
    px.wait_fds(base, timeout=30)


# ---------------------------------------------------------------------------
# the pipe pool runs dry


def under_prlimit(t, soft, hard):
    """Point t at a wrapper that execs the binary under prlimit (same pid)."""
    path = t.path("switchyard-prlimit-%d-%d" % (soft, hard))
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec prlimit --nofile=%d:%d -- %s "$@"\n' % (soft, hard, t.binary))
    os.chmod(path, 0o755)
    t.binary = path


class StreamFlood:
    """Per tunnel, a backend that sends a deterministic endless stream
    (blob(1 MiB, seed) repeated) with non-blocking sends once the client
    says "go", until told to stop; then it half-closes, so the client can
    read exactly what was sent and compare."""

    def __init__(self, t, seeds):
        self.pieces = {i: blob(MiB, s) for i, s in seeds.items()}
        self.sent = {i: 0 for i in seeds}
        self.stop = threading.Event()
        self.be = UpgradeBackend(t, after=self._after)

    def _after(self, tun):
        i = int(tun.head.split(b" ")[1].rsplit(b"/", 1)[1])
        while len(tun.got) < 2:
            if not tun.recv(60):
                return
        piece, sock = self.pieces[i], tun.sock
        sock.setblocking(False)
        while not self.stop.is_set():
            off = self.sent[i] % MiB
            try:
                n = sock.send(piece[off:off + 65536])
            except BlockingIOError:
                select.select([], [sock], [], 0.05)
                continue
            self.sent[i] += n
        sock.setblocking(True)
        sock.shutdown(socket.SHUT_WR)
        tun.recv_to_eof(60)

    def total(self):
        return sum(self.sent.values())


def read_stream(c, piece, n, timeout=120):
    """Read until EOF from a harness Client; assert it is exactly the first n
    bytes of piece repeated."""
    deadline = time.monotonic() + timeout
    pos = 0
    buf = bytes(c.rd.buf)
    c.rd.buf.clear()
    c.sock.settimeout(30)
    while True:
        if buf:
            off = pos % MiB
            while buf:
                take = min(len(buf), MiB - off)
                if buf[:take] != piece[off:off + take]:
                    raise AssertionError("byte %d differs from what the backend sent" % pos)
                pos += take
                buf = buf[take:]
                off = 0
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d bytes after %ds" % (pos, n, timeout))
        buf = c.sock.recv(1 << 20)
        if not buf:
            break
    eq(pos, n, "bytes through the tunnel")


@case(timeout=240)
def pipe_pool_exhausted_falls_back_to_copy(t):
    """Under a descriptor limit of 256 the proxy serves 63 connections and
    keeps at most 32 splice pipes (fdlimit: the floor of pipes when
    connections must be cut). 40 tunnels whose clients do not read are
    flooded until everything stalls: 32 of them hold a pipe full of bytes,
    the other 8 find the pool empty and copy through a buffer instead. Once
    the clients read, every tunnel delivers its stream byte-exact, and the
    proxy never holds more than 32 pipes."""
    under_prlimit(t, 256, 256)
    tunnels = 40
    flood = StreamFlood(t, {i: 100 + i for i in range(tunnels)})
    px = t.proxy(flood.be, limits={"max_connections": 1000}, extra='tunnel = { mode = "splice"; };')
    px.wait_log(r"serving at most 63 connections")
    base = fd_kinds(px.pid)
    peak = [0]

    def pipes_in_use():
        n = fd_kinds(px.pid)["pipe"] - base["pipe"]
        peak[0] = max(peak[0], n)
        return n

    clients = []
    for i in range(tunnels):
        key = ws_key(seed=i)
        c = px.connect(rcvbuf=4096)
        c.send(ws_request(key, target="/ws/%d" % i)[0])
        eq(read_101(c), relayed_101(key), "101 of tunnel %d" % i)
        c.send(b"go")
        clients.append(c)
        pipes_in_use()
    last = [-1, time.monotonic()]

    def stalled():
        pipes_in_use()
        if flood.total() != last[0]:
            last[0], last[1] = flood.total(), time.monotonic()
            return False
        return time.monotonic() - last[1] > 1.0

    wait_until(stalled, 60, interval=0.05, what="every flood to stall")
    held = pipes_in_use()
    t.note("stalled: backends sent %d bytes in all (%s); pipe fds above the baseline %d, peak %d"
           % (flood.total(), sorted(flood.sent.values())[:3], held, peak[0]))
    eq(held, 64, "pipe fds held by the stalled tunnels (the pool of 32 pipes is spent)")
    flood.stop.set()
    workers = [t.thread(read_stream, clients[i], flood.pieces[i], flood.sent[i]) for i in range(tunnels)]
    for i, w in enumerate(workers):
        try:
            w.join(180)
        except AssertionError as e:
            raise AssertionError("tunnel %d: %s" % (i, e))
    for c in clients:
        c.close()
    px.wait_access(tunnels, lambda a: a.get("event") == "tunnel", timeout=30)
    causes = sorted({a["cause"] for a in px.access_lines() if a.get("event") == "tunnel"})
    eq(causes, ["backend_eof"], "tunnel close causes")
    eq(peak[0] <= 64, True, "pipe fds never above 2 x 32 (peak %d)" % peak[0])
    errors = [ln for ln in px.log().splitlines() if " error " in ln or "Too many open files" in ln]
    eq(errors, [], "error lines")
    check_fds_back(px, base, 32)
