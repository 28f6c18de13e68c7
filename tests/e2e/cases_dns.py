"""Upstream servers given by host name (src/resolve.c): `address =
"app.test:PORT"`, `resolvers`, `resolve`. Each case runs its own dnsmasq on
a free port (answers from a hosts file the case rewrites, then SIGHUP) and
backends on 127.0.0.2, 127.0.0.3, ... sharing one port, so the name's
addresses decide which backend gets the traffic. A stopped dnsmasq (or a UDP
socket on its port that never answers) makes a resolution time out (evdns:
2 s x 2 attempts).
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time

from harness import (Reply, RawBackend, case, eq, expect_proxy_error, register, split_head, wait_until)

try:  # as root, switchyard serves only with a `user` key: the harness adds user = "root"
    from harness import as_root
except ImportError:  # a harness (and proxy) from before the key
    def as_root(text):
        return text
from reload_lib import BConn, Reloader, get, line_of, open_tunnel, tunnel_alive
from tls_lib import PKI, TLSBackend, http_ok, server_ctx
from wslib import header_value, resp_101

DNSMASQ = "/usr/sbin/dnsmasq"
RESOLVE = "300ms"  # re-resolution interval of most cases
FAIL_WAIT = 15  # seconds to wait for a resolution to time out (about 4 s)


# ---------------------------------------------------------------------------
# the DNS server


def free_udp_port():
    """A port free for UDP and TCP on 127.0.0.1 a moment ago (dnsmasq binds both)."""
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
            u.close()


def qname(packet):
    """The question name of a DNS query packet (lower case), or ''."""
    out, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        out.append(packet[i + 1:i + 1 + n].decode("latin-1"))
        i += 1 + n
    return ".".join(out).lower()


class Dns:
    """dnsmasq on 127.0.0.1:.port answering from a hosts file of (ip, name)
    entries: names under .test it does not list get NXDOMAIN, AAAA queries
    NODATA; TTL 0. Killed at cleanup (t.popen)."""

    def __init__(self, t, entries):
        if not os.access(DNSMASQ, os.X_OK):
            raise AssertionError("%s missing: `make deps` installs dnsmasq-base" % DNSMASQ)
        self.t = t
        self.hosts = t.path("dns.hosts")
        self.logf = t.path("dnsmasq.log")
        self.proc = None
        self.port = None
        self.hole = None
        self.write(entries)
        self.start()

    def write(self, entries):
        tmp = self.hosts + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join("%s %s\n" % e for e in entries))
        os.replace(tmp, self.hosts)

    def log(self):
        try:
            with open(self.logf, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def reads(self):
        """How often dnsmasq has read the hosts file (at start and at each SIGHUP)."""
        return len(re.findall(r"read %s - \d+ names?$" % re.escape(self.hosts), self.log(), re.M))

    def queries(self, name):
        """A queries for name so far (evdns randomizes the case of the name)."""
        return len(re.findall(r"query\[A\] %s from " % re.escape(name), self.log(), re.M | re.I))

    def start(self, port=None):
        """Start dnsmasq (on port, or a free one) and wait until it has read the hosts file."""
        for attempt in range(5):
            p = port or free_udp_port()
            n = self.reads()
            with open(self.t.path("dnsmasq.out"), "ab") as out:
                proc = self.t.popen([DNSMASQ, "--keep-in-foreground", "--no-daemon", "--port=%d" % p,
                                     "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                                     "--addn-hosts=" + self.hosts, "--local=/test/", "--pid-file=", "--user=root",
                                     "--local-ttl=0", "--log-queries", "--log-facility=" + self.logf],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            wait_until(lambda: proc.poll() is not None or self.reads() > n, 10, what="dnsmasq to read its hosts file")
            if proc.poll() is None:
                self.proc, self.port = proc, p
                self.t.note("dnsmasq pid %d on 127.0.0.1:%d" % (proc.pid, p))
                return
            if port:
                break
        with open(self.t.path("dnsmasq.out"), "rb") as f:
            raise AssertionError("dnsmasq did not start: %s" % f.read().decode("utf-8", "replace")[-500:])

    def set(self, entries):
        """Rewrite the hosts file, SIGHUP, wait until dnsmasq has read it."""
        self.write(entries)
        n = self.reads()
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.reads() > n, 5, what="dnsmasq to re-read %s after SIGHUP" % self.hosts)

    def stop(self):
        """Stop dnsmasq: from now on queries to its port time out."""
        self.proc.terminate()
        self.proc.wait(5)

    def blackhole(self):
        """Stop dnsmasq and hold its port with a UDP socket that records the
        names asked for (.asked) and never answers."""
        self.stop()
        self.hole = Blackhole(self.t, self.port)
        return self.hole


class Blackhole:
    def __init__(self, t, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        t.held.append(self.sock)  # closed at cleanup; the thread then ends
        self.asked = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                d, _ = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.asked.append(qname(d))

    def wait(self, name, n=1, timeout=5):
        wait_until(lambda: self.asked.count(name) >= n, timeout, what="%d quer(y/ies) for %s" % (n, name))


# ---------------------------------------------------------------------------
# backends on 127.0.0.x


class BoundRaw(RawBackend):
    """A harness RawBackend on an already bound and listening socket (the
    harness's own listen on 127.0.0.1:0)."""

    def __init__(self, lsock, handler):
        self.handler = handler
        self.records = []
        self.lsock = lsock
        host, self.port = lsock.getsockname()[:2]
        self.address = ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port)
        self.conns = []
        self.errors = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()


def bind_same_port(hosts):
    """Listening sockets on each of hosts, all on one port."""
    for attempt in range(50):
        socks = []
        try:
            for h in hosts:
                s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((h, socks[0].getsockname()[1] if len(socks) > 1 else 0))
                s.listen(128)
            return socks
        except OSError:
            for s in socks:
                s.close()
    raise AssertionError("no port free on all of %s" % (hosts,))


class Server:
    """A backend called name on a bound socket: a request is answered 200
    with body name (Content-Length, keep-alive), a request for /hc with
    hc_status and Connection: close, an upgrade with a valid 101 and then an
    echo. Records .heads (every request head) and .conns (reload_lib.BConn)."""

    def __init__(self, t, name, lsock, hc_status=200):
        self.name, self.hc_status = name, hc_status
        self.conns, self.heads = [], []
        self.lock = threading.Lock()
        self.raw = BoundRaw(lsock, self._handle)
        t.backends.append(self.raw)
        self.port, self.address = self.raw.port, self.raw.address

    def _recv(self, c):
        try:
            d = c.sock.recv(65536)
        except OSError:
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
            self.heads.append(head)
            try:
                if header_value(head, "Upgrade"):
                    c.upgraded = True
                    sock.sendall(resp_101(header_value(head, "Sec-WebSocket-Key") or "") + bytes(buf))
                    c.tunnel += buf
                    while True:
                        d = self._recv(c)
                        if not d:
                            return
                        c.tunnel += d
                        sock.sendall(d)
                if first.split(b" ")[1:2] == [b"/hc"]:
                    sock.sendall(b"HTTP/1.1 %d Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                 % self.hc_status)
                    continue  # until the checker closes
                body = self.name.encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                c.eof, c.eof_at = True, time.monotonic()
                return

    @property
    def connections(self):
        return len(self.conns)

    def plain_conns(self):
        """Connections that carried plain requests (not tunnels, not checks)."""
        return [c for c in self.conns if not c.upgraded and b"GET /hc HTTP/1.1" not in c.requests]

    def tunnels(self):
        return [c for c in self.conns if c.upgraded]


def servers(t, specs):
    """specs: [(name, host)] or [(name, host, hc_status)] -> (port, [Server]) all on one port."""
    socks = bind_same_port([s[1] for s in specs])
    out = [Server(t, s[0], sock, *s[2:]) for s, sock in zip(specs, socks)]
    return out[0].port, out


# ---------------------------------------------------------------------------
# config and logs


def conf(port, dns, upstreams, routes=None, workers=1, extra="", log_level="info", error_log="stderr",
         access_log="stderr"):
    """Config text. port: the listen port (or "{port}"); dns: a Dns, a port, or
    None (no `resolvers` key); upstreams: [(name, [address text or (text,
    weight)], other keys text)]; routes: [(name, path_prefix or None,
    upstream)], default one route "/NAME" per upstream, then a catch-all to
    the first."""
    out = ['listen = ( { address = "127.0.0.1:%s"; } );' % port]
    if dns is not None:
        out.append('resolvers = [ "127.0.0.1:%d" ];' % (dns.port if isinstance(dns, Dns) else dns))
    out.append('timeouts = { shutdown_grace = "3s"; };')
    out.append("limits = { max_connections = 200; };")  # no descriptor warning under a limit of 1024
    ups = []
    for name, srvs, keys in upstreams:
        ents = ", ".join('{ address = "%s"; weight = %d; }' % ((s, 1) if isinstance(s, str) else s) for s in srvs)
        ups.append('  { name = "%s"; %sservers = ( %s ); }' % (name, keys + " " if keys else "", ents))
    out.append("upstreams = (\n" + ",\n".join(ups) + "\n);")
    if routes is None:
        routes = [(u[0], "/" + u[0], u[0]) for u in upstreams[1:]] + [("all", None, upstreams[0][0])]
    rts = []
    for name, prefix, up in routes:
        pp = ' path_prefix = "%s";' % prefix if prefix else ""
        rts.append('  { name = "%s";%s upstream = "%s"; }' % (name, pp, up))
    out.append("routes = (\n" + ",\n".join(rts) + "\n);")
    out.append('access_log = "%s"; error_log = "%s"; log_level = "%s"; via = "switchyard";'
               % (access_log, error_log, log_level))
    out.append("workers = %d;" % workers)
    if extra:
        out.append(extra)
    return as_root("\n".join(out) + "\n")


def named(port, resolve=RESOLVE, name="app.test", weight=1, keys=""):
    """One upstream "app" with the server name:port."""
    keys = " ".join(k for k in ('resolve = "%s";' % resolve if resolve else "", keys) if k)
    return [("app", [("%s:%d" % (name, port), weight)], keys)]


def line(level, msg):
    """Regex of one whole error-log line at level with exactly msg."""
    return r"^\S+ %s s=\d+ %s$" % (level, re.escape(msg))


def info(msg):
    return line("info", msg)


def wait_new(px, since, rx, timeout=5):
    """Wait until the proxy log after offset `since` matches rx (re.M); the match."""
    crx = re.compile(rx, re.M)
    m = wait_until(lambda: crx.search(px.log()[since:]) or (not px.alive() and "dead"), timeout,
                   what="log line /%s/ (log since: %r)" % (rx, px.log()[since:][-800:]))
    if m == "dead":
        raise AssertionError("switchyard exited (status %s) waiting for /%s/: %s"
                             % (px.proc.returncode, rx, px.log()[-800:]))
    return m


def count(px, rx, since=0):
    return len(re.findall(rx, px.log()[since:], re.M))


def bodies_on(t, px, n, target="/ka"):
    """n GETs on one keep-alive client connection; their bodies."""
    c = t.connect(px.port)
    out = []
    for i in range(n):
        r = c.get("%s%d" % (target, i))
        eq(r.status, 200, "status of keep-alive request %d (body %r)" % (i, r.body))
        out.append(r.body)
    return c, out


def bodies_fresh(px, n, target="/f"):
    """n GETs, each on its own connection; their bodies."""
    out = []
    for i in range(n):
        r = get(px.port, "%s%d" % (target, i))
        eq(r.status, 200, "status of request %d (body %r)" % (i, r.body))
        out.append(r.body)
    return out


def alternates(bodies, names, what):
    """bodies alternate exactly between the names (round robin over two equal servers)."""
    if set(bodies) != set(names) or any(a == b for a, b in zip(bodies, bodies[1:])):
        raise AssertionError("%s: %r does not alternate between %r" % (what, bodies, names))


# ---------------------------------------------------------------------------
# cases


@case(timeout=30)
def one_address_at_start(t):
    """A name with one address: resolved before the proxy says it started;
    requests reach the backend there, the access log names IP:PORT; the name
    is asked again every `resolve`, and an unchanged answer changes nothing."""
    dns = Dns(t, [("127.0.0.2", "app.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    log = px.log()
    m = re.search(info("resolved app.test: 127.0.0.2"), log, re.M)
    s = re.search(r"^\S+ info s=\d+ switchyard \S+ started with .*generation 1$", log, re.M)
    assert m and s and m.start() < s.start(), "the 'resolved' line before the 'started' line: %r" % log[-800:]
    for i in range(3):
        r = get(px.port, "/one%d" % i)
        eq((r.status, r.body), (200, b"A"), "response %d" % i)
    acc = px.wait_access(3)
    eq([a["server"] for a in acc], ["127.0.0.2:%d" % port] * 3, "access-log server fields")
    eq([a["generation"] for a in acc], [1] * 3, "access-log generations")
    n = dns.queries("app.test")
    wait_until(lambda: dns.queries("app.test") >= n + 3, 5, what="three more A queries for app.test")
    eq(count(px, r"resolved app\.test"), 1, "'resolved' lines with an unchanged answer")
    eq(count(px, r"switched to generation"), 0, "new generations with an unchanged answer")
    eq(get(px.port, "/again").body, b"A", "response after the re-resolutions")


def change_case(t, workers):
    """The name gains an address, then loses the first: the change lines,
    a generation for each, round robin over both, then only the one left;
    the idle pooled connections to the address that went are closed, those
    to the one that stays are not; a WebSocket tunnel to the address that
    went echoes through both changes and closes cleanly afterwards."""
    dns = Dns(t, [("127.0.0.2", "app.test")])
    port, (A, B) = servers(t, [("A", "127.0.0.2"), ("B", "127.0.0.3")])
    px = t.proxy(config_text=conf("{port}", dns, named(port), workers=workers))
    px.wait_log(info("resolved app.test: 127.0.0.2"))
    tun = open_tunnel(t, px.port, "/ws")
    tunnel_alive(tun, b"generation 1")
    eq((len(A.tunnels()), len(B.tunnels())), (1, 0), "tunnels at A and B")

    # gains 127.0.0.3
    mark = len(px.log())
    dns.set([("127.0.0.2", "app.test"), ("127.0.0.3", "app.test")])
    wait_new(px, mark, info("resolved app.test: 127.0.0.2, 127.0.0.3 (was 127.0.0.2)"))
    wait_new(px, mark, info("switched to generation 2: new addresses"))
    n_acc = len(px.access_lines())
    ka, got = bodies_on(t, px, 6)
    alternates(got, [b"A", b"B"], "keep-alive connection in generation 2")
    got = bodies_fresh(px, 6)
    if workers == 1:
        alternates(got, [b"A", b"B"], "new connections in generation 2")
    else:
        assert set(got) <= {b"A", b"B"}, "new connections in generation 2: %r" % got
    acc = px.wait_access(n_acc + 12)[n_acc:]
    eq(sorted({(a["generation"], a["server"]) for a in acc}), [(2, A.address), (2, B.address)],
       "generation and server of the access lines after the change")
    tunnel_alive(tun, b"generation 2")
    time.sleep(0.2)  # the last answers' connections back in the pools
    a_pooled, b_pooled = A.plain_conns(), B.plain_conns()
    assert a_pooled and b_pooled, "plain connections at A and B: %d, %d" % (len(a_pooled), len(b_pooled))
    eq([c.eof for c in a_pooled + b_pooled], [False] * (len(a_pooled) + len(b_pooled)),
       "EOF on the pooled connections before the second change")

    # loses 127.0.0.2
    mark = len(px.log())
    dns.set([("127.0.0.3", "app.test")])
    wait_new(px, mark, info("resolved app.test: 127.0.0.3 (was 127.0.0.2, 127.0.0.3)"))
    wait_new(px, mark, info("switched to generation 3: new addresses"))
    wait_until(lambda: all(c.eof for c in a_pooled), 3,
               what="EOF on the %d idle connections to A (address gone)" % len(a_pooled))
    nb = B.connections
    n_acc = len(px.access_lines())
    got = []
    for i in range(4):  # the keep-alive connection from generation 2 follows at its next request
        r = ka.get("/ka-after%d" % i)
        got.append((r.status, r.body))
    eq(got, [(200, b"B")] * 4, "keep-alive connection of generation 2 after the address went")
    ka.close()
    eq(bodies_fresh(px, 6), [b"B"] * 6, "new connections in generation 3")
    acc = px.wait_access(n_acc + 10)[n_acc:]
    eq(sorted({(a["generation"], a["server"]) for a in acc}), [(3, B.address)],
       "generation and server of the access lines after the second change")
    eq([c.eof for c in b_pooled], [False] * len(b_pooled), "EOF on B's pooled connections (B stays)")
    if workers == 1:  # one pool: B's idle connection from generation 2 served generation 3
        eq(B.connections, nb, "connections to B after the second change (its idle pool kept)")
    eq(len(A.plain_conns()), len(a_pooled), "connections to A after its address went")

    # the tunnel to A: untouched, then closed by the client
    tunnel_alive(tun, b"generation 3")
    at = A.tunnels()[0]
    eq(at.eof, False, "EOF at A's tunnel connection")
    tun.sock.shutdown(socket.SHUT_WR)
    eq(tun.read_until_close(5), b"", "bytes after the client's FIN on the tunnel")
    wait_until(lambda: at.eof, 3, what="EOF at A's tunnel connection")
    tl = px.wait_access(1, lambda a: a.get("event") == "tunnel")[0]
    eq((tl.get("server"), tl.get("generation")), (A.address, 1), "server and generation of the tunnel line")


register("address_added_then_removed", lambda t: change_case(t, 1), timeout=40)
register("address_added_then_removed_workers2", lambda t: change_case(t, 2), timeout=40)


@case(timeout=60)
def dns_down_keeps_addresses(t):
    """dnsmasq stops: each try fails after the evdns timeout and keeps the
    two addresses; requests are still served by both; the next try comes
    soon after (min(resolve, 5 s)); dnsmasq back with one address: the
    change is taken."""
    dns = Dns(t, [("127.0.0.2", "app.test"), ("127.0.0.3", "app.test")])
    port, (A, B) = servers(t, [("A", "127.0.0.2"), ("B", "127.0.0.3")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    px.wait_log(info("resolved app.test: 127.0.0.2, 127.0.0.3"))
    alternates(bodies_fresh(px, 4), [b"A", b"B"], "before dnsmasq stops")
    mark = len(px.log())
    dns.stop()
    fail_rx = r"^\S+ warn s=\d+ cannot resolve app\.test: (.+); keeping 127\.0\.0\.2, 127\.0\.0\.3$"
    m = wait_new(px, mark, fail_rx, FAIL_WAIT)
    t.note("failure: %s" % m.group(0))
    alternates(bodies_fresh(px, 4, "/down"), [b"A", b"B"], "after the failed resolution")
    wait_until(lambda: count(px, fail_rx, mark) >= 2, FAIL_WAIT, what="a second failed resolution")
    eq(count(px, r"switched to generation|resolved app\.test:", mark), 0, "new generations or answers while down")
    dns.write([("127.0.0.3", "app.test")])
    dns.start(dns.port)
    wait_new(px, mark, info("resolved app.test: 127.0.0.3 (was 127.0.0.2, 127.0.0.3)"), FAIL_WAIT)
    wait_new(px, mark, info("switched to generation 2: new addresses"))
    eq(bodies_fresh(px, 4, "/back"), [b"B"] * 4, "after dnsmasq came back with one address")


@case(timeout=40)
def unknown_name_then_added(t):
    """A name dnsmasq does not know at start: the proxy starts anyway, the
    upstream has no server (503 naming it); once the name is added, the next
    try (min(resolve, 5 s) after the failure) brings the traffic."""
    dns = Dns(t, [("127.0.0.9", "other.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    log = px.log()
    m = re.search(r"^\S+ warn s=\d+ cannot resolve app\.test: (.+); keeping no addresses$", log, re.M)
    s = re.search(r"^\S+ info s=\d+ switchyard \S+ started with ", log, re.M)
    assert m and s and m.start() < s.start(), "the failure logged before the 'started' line: %r" % log[-800:]
    t.note("failure text: %r" % m.group(1))
    for i in range(2):
        c = px.connect()
        c.request("GET", "/none%d" % i)
        eq(expect_proxy_error(c, 503), "no server of upstream 'app' is up", "503 body")
    eq(A.connections, 0, "connections at the backend")
    mark = len(px.log())
    dns.set([("127.0.0.9", "other.test"), ("127.0.0.2", "app.test")])
    wait_new(px, mark, info("resolved app.test: 127.0.0.2 (was no addresses)"))
    wait_new(px, mark, info("switched to generation 2: new addresses"))
    r = get(px.port, "/now")
    eq((r.status, r.body), (200, b"A"), "response once the name resolves")
    a = px.wait_access(1, lambda a: a.get("target") == "/now")[0]
    eq((a["server"], a["generation"]), (A.address, 2), "server and generation in the access log")


@case(timeout=40)
def reload_adds_named_upstream(t):
    """A reload whose file adds an upstream by name waits for its first
    answer, then switches; the first request after the `reloaded` line is
    served. A second reload adding a name while DNS is down waits for the
    failure (the old generation serves meanwhile), then switches with no
    server for it (503)."""
    dns = Dns(t, [("127.0.0.2", "new.test")])
    port, (N,) = servers(t, [("N", "127.0.0.2")])
    port1, (O,) = servers(t, [("O", "127.0.0.1")])
    old = [("app", ["127.0.0.1:%d" % port1], "")]
    px = t.proxy(config_text=conf("{port}", dns, old))
    rl = Reloader(px)
    eq(get(px.port, "/named/x").body, b"O", "before the reload: the catch-all route")
    with_new = old + [("named", ["new.test:%d" % port], 'resolve = "%s";' % RESOLVE)]
    rl.ok(conf(px.port, dns, with_new))
    _, chunk = rl.wait(rl.ok_rx(2))
    w = re.search(info("reload waits for its host names to resolve"), chunk, re.M)
    r = re.search(info("resolved new.test: 127.0.0.2"), chunk, re.M)
    k = re.search(rl.ok_rx(2), chunk, re.M)
    assert w and r and w.start() < r.start() < k.start(), \
        "'reload waits', 'resolved', 'reloaded' in this order: %r" % chunk
    resp = get(px.port, "/named/first")
    eq((resp.status, resp.body), (200, b"N"), "the first request after the reload line")
    a = px.wait_access(1, lambda a: a.get("target") == "/named/first")[0]
    eq((a["server"], a["generation"]), (N.address, 2), "server and generation of that request")

    hole = dns.blackhole()
    with_late = with_new + [("late", ["late.test:%d" % port], 'resolve = "%s";' % RESOLVE)]
    rl.write(conf(px.port, dns, with_late))
    rl.signal()
    rl.wait(info("reload waits for its host names to resolve"))
    hole.wait("late.test")
    n_acc = len(px.access_lines())
    eq(get(px.port, "/named/during").body, b"N", "request to a named upstream while the reload waits")
    eq(get(px.port, "/late/during").body, b"O", "request for the new route while the reload waits (old routes)")
    acc = px.wait_access(n_acc + 2)[n_acc:]
    eq([a["generation"] for a in acc], [2, 2], "generation while the reload waits")
    rl.wait(r"^\S+ warn s=\d+ cannot resolve late\.test: .+; keeping no addresses$", FAIL_WAIT)
    rl.wait(rl.ok_rx(3), FAIL_WAIT)
    rl.gen = 3
    c = px.connect()
    c.request("GET", "/late/after")
    eq(expect_proxy_error(c, 503), "no server of upstream 'late' is up", "503 for the name that did not resolve")
    eq(get(px.port, "/named/after").body, b"N", "the named upstream keeps its address")
    c.close()
    for be in (N, O):  # their pooled connections go, so the proxy's descriptors can be counted
        be.raw.close()
    resolver_socket_only(t, px)


def udp_sockets():
    """Inodes of the UDP sockets."""
    out = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            next(f)
            out.update(ln.split()[9] for ln in f)
    return out


def resolver_socket_only(t, px):
    """The proxy started without host names (the resolver may not exist
    yet); a reload brought the first name, and the resolver's UDP socket
    may have come with it, to stay. With clients and backends closed, the
    descriptors are the baseline's, or those plus that one socket (then the
    harness's check at cleanup is turned off: it was done here)."""
    base, base_entries = px.fd_baseline
    before = {link for _, link, _ in base_entries}
    def settled():
        k, entries = px.fd_snapshot()
        if k["other"] != base["other"]:
            return None
        if k["socket"] == base["socket"]:
            return "baseline"
        new = [link for _, link, kind in entries if link not in before and kind == "socket"]
        udp = udp_sockets()
        if k["socket"] == base["socket"] + 1 and len(new) == 1 and new[0][8:-1] in udp:
            return "resolver"
        return None

    try:
        how = wait_until(settled, 5)
    except AssertionError:
        k, entries = px.fd_snapshot()
        raise AssertionError("descriptors beyond the baseline are not just the resolver's UDP socket: "
                             "%s, %r (baseline %r)" % (px.fds(), k, base))
    t.note("descriptors after the reloads: %s" % how)
    if how == "resolver":
        px.skip_fd_check("a reload brought the first host name: the resolver's UDP socket (checked) stays")


def file_lines(res):
    """The FILE:LINE: message lines of a -t run."""
    return [l for l in res.err.splitlines() if re.match(re.escape(res.path) + r":\d+: ", l)]


@case(timeout=20)
def config_errors(t):
    """-t: a bad host, a bad resolver, resolve = 0, each as FILE:LINE:
    message; a good file with names passes without asking any DNS server."""
    good = conf(t.free_port(), None, [("app", ["app.test:9000", ("10.0.0.1:80", 2)], 'resolve = "30s";'),
                                      ("b", ["b-1.example.test:1"], "")],
                extra='resolvers = [ "127.0.0.1:5353", "10.0.0.1", "::1", "[::1]:53" ];')
    res = t.check_config(good, "good.conf")
    eq((res.rc, file_lines(res)), (0, []),
       "-t on a good file with host names (stderr %r)" % res.err)
    bads = [('"app.test:9000"', '"app_local:9000"',
             "bad address \"app_local:9000\" in upstream 'app': host must be an IPv4 address or a host name"),
            ('"app.test:9000"', '"-app.test:9000"',
             "bad address \"-app.test:9000\" in upstream 'app': host must be an IPv4 address or a host name"),
            ('"app.test:9000"', '"app.test:0"', "bad address \"app.test:0\" in upstream 'app': port must be 1..65535"),
            ('"127.0.0.1:5353"', '"x"', 'bad resolver "x": expected IP or IP:PORT'),
            ('"127.0.0.1:5353"', '"127.0.0.1:0"', 'bad resolver "127.0.0.1:0": expected IP or IP:PORT'),
            ('resolve = "30s";', 'resolve = "0s";', "bad value 'resolve': must be > 0")]
    for i, (old, new, msg) in enumerate(bads):
        text = good.replace(old, new, 1)
        assert text != good, old
        res = t.check_config(text, "bad%d.conf" % i)
        want = "%s:%d: %s" % (res.path, line_of(text, new), msg)
        eq((res.rc, file_lines(res)), (1, [want]),
           "-t with %s (stderr %r)" % (new, res.err))


def etc_hosts():
    """[(address, [names])] of /etc/hosts."""
    out = []
    try:
        with open("/etc/hosts") as f:
            for ln in f:
                p = ln.split("#", 1)[0].split()
                if len(p) >= 2:
                    out.append((p[0], p[1:]))
    except OSError:
        pass
    return out


@case(timeout=20)
def etc_hosts_localhost(t):
    """`localhost` with `resolvers` unset: its addresses are those of
    /etc/hosts (here only 127.0.0.1), every request reaches the backend there."""
    addrs = [a for a, names in etc_hosts() if "localhost" in names]
    if addrs != ["127.0.0.1"]:
        t.skip("/etc/hosts maps localhost to %r, not only to 127.0.0.1" % addrs)
    port, (L,) = servers(t, [("L", "127.0.0.1")])
    px = t.proxy(config_text=conf("{port}", None, named(port, name="localhost")))
    m = px.wait_log(r"^\S+ info s=\d+ (resolved localhost: .*)$")
    eq(m.group(1), "resolved localhost: 127.0.0.1", "the resolved line (/etc/hosts: %r)" % addrs)
    eq(bodies_fresh(px, 4, "/local"), [b"L"] * 4, "responses")
    eq([a["server"] for a in px.wait_access(4)], ["127.0.0.1:%d" % port] * 4, "access-log servers")


@case(timeout=20)
def etc_hosts_other_name(t):
    """A name /etc/hosts maps to one 127/8 address (other than localhost),
    with `resolvers` set to a dnsmasq that does not know it: the address
    comes from /etc/hosts."""
    cand = {}
    for a, names in etc_hosts():
        for n in names:
            cand.setdefault(n, []).append(a)
    picks = [(n, a[0]) for n, a in cand.items() if n != "localhost" and "." not in n and len(a) == 1
             and re.fullmatch(r"127\.\d+\.\d+\.\d+", a[0])]
    if not picks:
        t.skip("no name other than localhost maps to one 127/8 address in /etc/hosts")
    name, addr = picks[0]
    t.note("/etc/hosts: %s %s" % (addr, name))
    dns = Dns(t, [("127.0.0.9", "other.test")])
    port, (H,) = servers(t, [("H", addr)])
    px = t.proxy(config_text=conf("{port}", dns, named(port, name=name)))
    m = px.wait_log(r"^\S+ \w+ s=\d+ ((?:resolved|cannot resolve) %s: .*)$" % re.escape(name))
    eq(m.group(1), "resolved %s: %s" % (name, addr), "the first resolution of %s" % name)
    eq(bodies_fresh(px, 2, "/hosts"), [b"H"] * 2, "responses")


@case(timeout=40)
def resolution_does_not_block(t):
    """While a query goes unanswered (a socket on the DNS port that never
    answers), requests to a numeric upstream and to the named one (last good
    address) are answered before that resolution fails."""
    dns = Dns(t, [("127.0.0.2", "app.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    port1, (O,) = servers(t, [("O", "127.0.0.1")])
    px = t.proxy(config_text=conf("{port}", dns, named(port) + [("num", ["127.0.0.1:%d" % port1], "")]))
    px.wait_log(info("resolved app.test: 127.0.0.2"))
    mark = len(px.log())
    hole = dns.blackhole()
    hole.wait("app.test")
    fail_rx = r"^\S+ warn s=\d+ cannot resolve app\.test: .+; keeping 127\.0\.0\.2$"
    for i in range(5):
        eq(get(px.port, "/num/%d" % i).body, b"O", "numeric upstream, request %d" % i)
        eq(get(px.port, "/app/%d" % i).body, b"A", "named upstream, request %d" % i)
    eq(count(px, fail_rx, mark), 0, "failed resolutions before the answers (the query was still pending)")
    wait_new(px, mark, fail_rx, FAIL_WAIT)
    eq(get(px.port, "/num/after").body, b"O", "numeric upstream after the failure")


@case(timeout=40)
def health_checks_by_name(t):
    """An http check of a server found by name sends `Host: NAME:PORT`; a
    server that stays keeps its health state across a change of the name's
    addresses: the down one gets no request in the new generation."""
    dns = Dns(t, [("127.0.0.2", "app.test"), ("127.0.0.3", "app.test")])
    port, (A, B, C) = servers(t, [("A", "127.0.0.2"), ("B", "127.0.0.3", 500), ("C", "127.0.0.4")])
    keys = 'health = { type = "http"; interval = "100ms"; path = "/hc"; fall = 2; rise = 2; };'
    px = t.proxy(config_text=conf("{port}", dns, named(port, keys=keys)))
    px.wait_log(r"^\S+ warn s=\d+ server %s of app is down: " % re.escape(B.address))
    for be in (A, B):
        wait_until(lambda: any(h.startswith(b"GET /hc ") for h in be.heads), 3, what="a check at " + be.name)
        h = [h for h in be.heads if h.startswith(b"GET /hc ")][0]
        eq(header_value(h, "Host"), "app.test:%d" % port, "Host of the check at %s (head %r)" % (be.name, h))
    eq(bodies_fresh(px, 4), [b"A"] * 4, "requests with B down")
    mark = len(px.log())
    dns.set([("127.0.0.2", "app.test"), ("127.0.0.3", "app.test"), ("127.0.0.4", "app.test")])
    wait_new(px, mark, info("switched to generation 2: new addresses"))
    got = bodies_fresh(px, 6, "/after")
    alternates(got, [b"A", b"C"], "requests right after the change (B still down)")
    eq(count(px, r"server %s of app is (down|up)" % re.escape(B.address), mark), 0,
       "B's state changes after the change")
    wait_until(lambda: any(h.startswith(b"GET /hc ") for h in C.heads), 3, what="a check at C")
    h = [h for h in C.heads if h.startswith(b"GET /hc ")][0]
    eq(header_value(h, "Host"), "app.test:%d" % port, "Host of the check at C")


class BoundTLS(TLSBackend):
    """tls_lib.TLSBackend on a bound socket."""

    def __init__(self, t, pki, cert, key, handler, lsock):
        self.ctx = server_ctx(pki, cert, key)
        self.snis, self.handshakes, self.failures, self.conns = [], 0, [], []
        self.ctx.sni_callback = lambda sobj, name, c: self.snis.append(name)
        self.handler = handler
        self.raw = BoundRaw(lsock, self._handle)
        t.backends.append(self.raw)
        self.port, self.address = self.raw.port, self.raw.address


@case(timeout=30)
def tls_by_name(t):
    """TLS to a server found by name: SNI is the name and the certificate is
    verified against it (one for the name passes, one for another name fails)."""
    pki = PKI(t.dir)
    good = pki.leaf("app", "app.test", ["DNS:app.test"])
    other = pki.leaf("other", "other.test", ["DNS:other.test", "IP:127.0.0.3"])
    dns = Dns(t, [("127.0.0.2", "app.test"), ("127.0.0.3", "bad.test")])
    s2, s3 = bind_same_port(["127.0.0.2", "127.0.0.3"])
    port = s2.getsockname()[1]
    G = BoundTLS(t, pki, good[0], good[1], http_ok(b"tls by name"), s2)
    X = BoundTLS(t, pki, other[0], other[1], http_ok(b"must not be seen"), s3)
    tls = ' tls = { verify = true; ca = "%s"; };' % pki.path(pki.ca)
    ups = [("app", ["app.test:%d" % port], 'resolve = "%s";%s' % (RESOLVE, tls)),
           ("bad", ["bad.test:%d" % port], 'resolve = "%s";%s' % (RESOLVE, tls))]
    px = t.proxy(config_text=conf("{port}", dns, ups))
    r = get(px.port, "/tls")
    eq((r.status, r.body), (200, b"tls by name"), "response over TLS to app.test")
    eq(G.snis, ["app.test"], "SNI at the server")
    c = px.connect()
    c.request("GET", "/bad/x")
    body = expect_proxy_error(c, 502)
    assert re.fullmatch(r"no upstream server could be reached \(last: certificate verify failed: hostname mismatch\)",
                        body), "502 body %r" % body
    eq(X.snis, ["bad.test"], "SNI at the server with the other name's certificate")
    eq(X.handshakes, 0, "handshakes completed with the wrong certificate")
    X.expect_errors("the proxy aborts the handshake")


@case(timeout=30)
def retry_after_failure_within_5s(t):
    """resolve = "120s": after a failed first resolution the next try comes
    within 5 s, not 120 s, and brings the name's address."""
    dns = Dns(t, [("127.0.0.9", "other.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    px = t.proxy(config_text=conf("{port}", dns, named(port, resolve="120s")))
    px.wait_log(r"^\S+ warn s=\d+ cannot resolve app\.test: .+; keeping no addresses$")
    mark = len(px.log())
    dns.set([("127.0.0.2", "app.test")])
    wait_new(px, mark, info("resolved app.test: 127.0.0.2 (was no addresses)"), 12)
    wait_new(px, mark, info("switched to generation 2: new addresses"))
    eq(get(px.port, "/x").body, b"A", "response")


@case(timeout=30)
def weight_per_address(t):
    """Each address of a name is a server with the name's weight: weight 3
    for app.test (two addresses) next to a numeric server of weight 1: of
    14 requests, 6 + 6 + 2."""
    dns = Dns(t, [("127.0.0.2", "app.test"), ("127.0.0.3", "app.test")])
    port, (A, B) = servers(t, [("A", "127.0.0.2"), ("B", "127.0.0.3")])
    port1, (O,) = servers(t, [("O", "127.0.0.1")])
    ups = [("app", [("app.test:%d" % port, 3), ("127.0.0.1:%d" % port1, 1)], 'resolve = "%s";' % RESOLVE)]
    px = t.proxy(config_text=conf("{port}", dns, ups))
    got = bodies_fresh(px, 14)
    eq({n: got.count(n) for n in (b"A", b"B", b"O")}, {b"A": 6, b"B": 6, b"O": 2}, "requests per server (%r)" % got)


@case(timeout=30)
def ipv4_and_ipv6_addresses(t):
    """A name with an A and an AAAA record: two servers, 127.0.0.2:PORT and
    [::1]:PORT, in the log line sorted IPv4 first; round robin over both."""
    try:
        port, (A, S) = servers(t, [("A", "127.0.0.2"), ("S", "::1")])
    except OSError as e:
        t.skip("no IPv6 loopback: %s" % e)
    dns = Dns(t, [("127.0.0.2", "app.test"), ("::1", "app.test")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    px.wait_log(info("resolved app.test: 127.0.0.2, ::1"))
    alternates(bodies_fresh(px, 6), [b"A", b"S"], "responses")
    eq(sorted({a["server"] for a in px.wait_access(6)}), ["127.0.0.2:%d" % port, "[::1]:%d" % port],
       "access-log servers")


@case(timeout=40)
def reload_drops_name_in_flight(t):
    """A reload that no longer has the name while its query is unanswered:
    no wait, the query is dropped (no failure logged for it later), and the
    proxy serves the new file."""
    dns = Dns(t, [("127.0.0.2", "app.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    port1, (O,) = servers(t, [("O", "127.0.0.1")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    rl = Reloader(px)
    eq(get(px.port, "/a").body, b"A", "before")
    hole = dns.blackhole()
    hole.wait("app.test")
    rl.ok(conf(px.port, dns, [("app", ["127.0.0.1:%d" % port1], "")]))
    _, chunk = rl.wait(rl.ok_rx(2))
    assert "reload waits" not in chunk, "a reload without names waited: %r" % chunk
    eq(get(px.port, "/o").body, b"O", "after the reload")
    mark = len(px.log())
    n = len(hole.asked)
    time.sleep(5)  # longer than a query's timeout (2 s x 2 attempts)
    eq(count(px, r"cannot resolve|resolved ", mark), 0, "lines about the dropped name after the reload")
    eq(hole.asked[n:], [], "queries after the reload")


@case(timeout=30)
def sigterm_while_reload_waits(t):
    """SIGTERM while a reload waits for a name's first answer: exit 0."""
    dns = Dns(t, [("127.0.0.2", "app.test")])
    port, (A,) = servers(t, [("A", "127.0.0.2")])
    px = t.proxy(config_text=conf("{port}", dns, named(port)))
    rl = Reloader(px)
    hole = dns.blackhole()
    rl.write(conf(px.port, dns, named(port) + [("late", ["late.test:%d" % port], "")]))
    rl.signal()
    rl.wait(info("reload waits for its host names to resolve"))
    hole.wait("late.test")
    eq(get(px.port, "/a").body, b"A", "served while the reload waits")
    px.stop()


# ---------------------------------------------------------------------------
# signals while the first answers are awaited


def _find_pid(binary, path, timeout=5):
    """pid of the process running `binary -c path`."""
    want = [os.fsencode(binary), b"-c", os.fsencode(path)]

    def look():
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/cmdline" % d, "rb") as f:
                        if f.read().split(b"\0")[:3] == want:
                            return int(d)
                except OSError:
                    pass
        return None

    return wait_until(look, timeout, what="the process %s -c %s" % (binary, path))


class Waiting:
    """The binary run (t.run_binary, in a thread) on a config whose name gets
    no answer yet (a socket on the DNS port that never answers): once the
    query was asked, .pid waits for its first answers. .config_path and
    .errlog (its error_log file). stop() sends SIGTERM if it still runs and
    returns the CompletedProcess."""

    def __init__(self, t, name, text_fn):
        self.t = t
        self.dns = Dns(t, [("127.0.0.2", "app.test")])
        self.hole = self.dns.blackhole()
        self.lport = t.free_port()
        self.config_path, self.errlog = t.path(name + ".conf"), t.path(name + ".err.log")
        self.write(text_fn(self))
        # (in the case directory: a crash's core file, if any, stays there)
        self.w = t.thread(lambda: t.run_binary(["-c", self.config_path], timeout=30, cwd=t.dir))
        self.pid = None
        t.held.append(self)  # killed at cleanup should the case fail first
        self.hole.wait("app.test")
        self.pid = _find_pid(t.binary, self.config_path)

    def conf(self, upstreams, **kw):
        return conf(self.lport, self.dns, upstreams, error_log=self.errlog, **kw)

    def write(self, text):
        with open(self.config_path, "w") as f:
            f.write(text)

    def log(self):
        return _read(self.errlog)

    def running(self):
        return self.w.t.is_alive()

    def signal(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, term=True):
        """SIGTERM (term=False: none, one was sent) and wait for the exit."""
        if term:
            self.signal(signal.SIGTERM)
        p = self.w.join(25)
        self.result = p
        return p

    def close(self):  # at cleanup (t.held)
        if self.pid and self.running():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _status(p, w):
    return "error log %r, stderr %r" % (w.log()[-600:], p.stderr[-500:])


@case(timeout=30)
def sigterm_while_waiting_for_first_answer(t):
    """SIGTERM while the proxy waits for its names' first answers (before it
    listens): it exits 0."""
    w = Waiting(t, "term", lambda w: w.conf(named(9000)))
    w.signal(signal.SIGTERM)
    p = w.stop(term=False)
    eq(p.returncode, 0, "exit status after SIGTERM while resolving (%s)" % _status(p, w))


@case(timeout=30)
def sighup_without_names_while_waiting_for_first_answer(t):
    """SIGHUP, the file now without host names, while the proxy waits for
    its names' first answers: it goes on, starts, serves, exits 0 on SIGTERM."""
    O = t.http_backend(Reply(200, b"numeric"))
    w = Waiting(t, "hup", lambda w: w.conf(named(9000)))
    w.write(w.conf([("app", [O.address], "")]))
    w.signal(signal.SIGHUP)
    wait_until(lambda: "started" in w.log() or not w.running(), FAIL_WAIT, what="the 'started' line")
    if w.running():
        r = get(w.lport, "/hup")
        eq(r.status, 200, "a request after the start")
    p = w.stop()
    eq(p.returncode, 0, "exit status (%s)" % _status(p, w))


@case(timeout=40)
def sighup_with_names_while_waiting_for_first_answer(t):
    """SIGHUP, the file now with a new route (and the same name), while the
    proxy waits for the name's first answer: the reload waits for it like
    any other, then switches (`reloaded FILE: generation 2`) and the new
    route serves."""
    O = t.http_backend(Reply(200, b"new route"))
    w = Waiting(t, "hupn", lambda w: w.conf(named(9000)))
    ups = named(9000) + [("new", [O.address], "")]
    w.write(w.conf(ups, routes=[("new", "/new", "new"), ("all", None, "app")]))
    w.signal(signal.SIGHUP)
    rx = r"^\S+ info s=\d+ reloaded %s: generation 2$" % re.escape(w.config_path)
    try:
        try:
            wait_until(lambda: re.search(rx, w.log(), re.M) or not w.running(), FAIL_WAIT + 5)
        except AssertionError as e:
            raise AssertionError("%s: no line 'reloaded %s: generation 2'; error log: %r"
                                 % (e, w.config_path, w.log()[-800:]))
        assert w.running(), "switchyard exited: %s" % w.log()[-600:]
        r = get(w.lport, "/new/x")
        eq((r.status, r.body), (200, b"new route"), "the route the reload added")
    finally:
        p = w.stop()
    eq(p.returncode, 0, "exit status (%s)" % _status(p, w))
