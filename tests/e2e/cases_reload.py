"""Reloads, workers and signals (issue 11).

SIGHUP reloads (new generation for new requests, tunnels untouched, listeners
kept / added / removed, bad files change nothing), on_remove keep / drain /
close, SIGTERM with shutdown_grace, SIGQUIT, SIGUSR1 log reopen, `-s reload`
/ `-s stop` with pid_file, workers (SO_REUSEPORT, per-worker share of
max_connections), idle upstream connections to removed servers. Tunnel cases
run as <name>.splice and <name>.copy. Helpers in reload_lib.py."""

import os
import re
import signal
import socket
import subprocess
import time

from harness import Client, blob, eq, case, wait_until
from reload_lib import (NO_DAC, NamedBackend, check_gw, memory_sanitizer, check_t_output, conf,
                        connect_refused, echo, error_lines, get, hold_port, line_of, listeners, open_tunnel,
                        proxy_listeners, scaled, start, tunnel_alive, wait_exit, watch_close)
from wslib import (tcase, SelectorEchoBackend, check_fds_back, fd_kinds, open_tunnels, tunnel_lines,
                   wait_tunnel_line, ws_key)

KiB = 1 << 10


def ws_route(name="ws", prefix="/ws", upstream="app", **kw):
    r = {"name": name, "path_prefix": prefix, "upstream": upstream}
    r.update(kw)
    return r


# ==========================================================================
# 1. many tunnels across two workers, 100 reloads while they carry traffic


@tcase(timeout=400)
def tunnels_survive_100_reloads(t, mode):
    N = scaled(t, 200)
    R = 100
    be = SelectorEchoBackend()
    t.backends.append(be)

    def text(port, k):
        # each reload swaps an extra route (one removed, one added) and the Via pseudonym is kept
        return conf(port, {"app": [be]}, workers=2, mode=mode, limits={"max_connections": 4 * N},
                    routes=[ws_route(), {"name": "extra%d" % (k % 2), "path_prefix": "/x%d" % k,
                                         "upstream": "app"}])

    px, rl = start(t, lambda p: text(p, 0))
    base = fd_kinds(px.pid)
    socks = []
    try:
        keys = open_tunnels(px.port, N, mode, socks)

        sent = [0] * N  # bytes each way per tunnel

        def exchange_round(tag):
            msgs = [("%s tunnel %04d %s\n" % (tag, i, keys[i])).encode() * (1 + i % 7) for i in range(N)]
            for s, m in zip(socks, msgs):
                s.sendall(m)
            for i, (s, m) in enumerate(zip(socks, msgs)):
                got = b""
                while len(got) < len(m):
                    d = s.recv(len(m) - len(got))
                    if not d:
                        raise AssertionError("tunnel %d: EOF after %r (round %s)" % (i, got, tag))
                    got += d
                if got != m:
                    raise AssertionError("tunnel %d round %s: echo %r, want %r" % (i, tag, got[:80], m[:80]))
                sent[i] += len(m)

        # warm-up: the same traffic as during the reloads, as long as they
        # take, so that buffers the traffic alone grows are in the baseline
        end = time.monotonic() + 2.0
        w = 0
        while time.monotonic() < end or w < 3:
            exchange_round("warmup%d" % w)
            w += 1
        time.sleep(0.2)
        rss0 = px.rss_kb()
        stop = []
        rounds = [0]

        def traffic():
            while not stop:
                exchange_round("r%d" % rounds[0])
                rounds[0] += 1

        th = t.thread(traffic)
        took = []
        rss10 = None
        for k in range(1, R + 1):
            took.append(rl.ok(text(px.port, k)))
            if k == 10:
                rss10 = px.rss_kb()
        stop.append(1)
        th.join(60)
        time.sleep(0.2)
        rss1 = px.rss_kb()
        t.note("%d tunnels (%s), %d reloads: %.1f ms per reload (max %.1f), %d traffic rounds meanwhile"
               % (N, mode, R, 1000 * sum(took) / R, 1000 * max(took), rounds[0]))
        t.note("RSS before %d KiB, after 10 reloads %d KiB, after %d reloads %d KiB: %+.2f KiB per reload "
               "(%+.2f KiB per reload over the last %d)"
               % (rss0, rss10, R, rss1, (rss1 - rss0) / R, (rss1 - rss10) / (R - 10), R - 10))
        if rounds[0] < 1:
            raise AssertionError("no traffic round completed during the reloads")
        # byte-exact afterwards: a unique 4 KiB per tunnel
        msgs = [blob(4 * KiB, seed=1000 + i) for i in range(N)]
        for s, m in zip(socks, msgs):
            s.sendall(m)
        for i, (s, m) in enumerate(zip(socks, msgs)):
            got = bytearray()
            while len(got) < len(m):
                d = s.recv(len(m) - len(got))
                if not d:
                    raise AssertionError("tunnel %d: EOF after the reloads (%d of %d bytes)" % (i, len(got), len(m)))
                got += d
            if bytes(got) != m:
                raise AssertionError("tunnel %d: the 4 KiB echo after %d reloads differs" % (i, R))
            sent[i] += len(m)
        san = memory_sanitizer(px.pid)
        if san:
            t.note("RSS bound not checked: the proxy runs with the %s runtime (freed memory is kept)" % san)
        elif rss1 - rss0 > 64:
            raise AssertionError("RSS grew by %d KiB over %d reloads (%.2f KiB per reload), want <= 64 KiB"
                                 % (rss1 - rss0, R, (rss1 - rss0) / R))
        # a new tunnel runs on the last generation
        c = open_tunnel(t, px.port)
        echo(c, b"new tunnel after the reloads\n")
        eq(be.open, N + 1, "backend connections open (the %d old tunnels and the new one)" % N)
        c.close()
    finally:
        for s in socks:
            s.close()
    wait_tunnel_line(px, timeout=30, n=N + 1)
    lines = tunnel_lines(px)
    new = [tl for tl in lines if tl.get("generation") == R + 1]
    eq(len(new), 1, "tunnel lines of generation %d (the tunnel opened after the reloads): %r" % (R + 1, lines[-3:]))
    old = [tl for tl in lines if tl is not new[0]]
    for tl in old:
        check_gw(tl, 1, (0, 1))
        eq((tl.get("mode"), tl.get("closed_by"), tl.get("reason")), (mode, "client", "client EOF"),
           "tunnel line %r" % tl)
    eq(sorted(tl["bytes_up"] for tl in old), sorted(sent), "bytes_up over the old tunnels")
    eq(sorted(tl["bytes_down"] for tl in old), sorted(sent), "bytes_down over the old tunnels")
    eq(sorted({tl["worker"] for tl in old}), [0, 1], "workers in the tunnel lines")
    ups = [a for a in px.access_lines() if a.get("status") == 101]
    eq(len(ups), N + 1, "status 101 access lines")
    for a in ups[:N]:
        check_gw(a, 1, (0, 1))
    check_gw(ups[N], R + 1, (0, 1))
    wait_until(lambda: be.open == 0, 10, what="all backend connections closed")
    eq(be.errors, [], "backend errors")
    check_fds_back(px, base, N, timeout=10)


# ==========================================================================
# 1b. every kind of tunnel (splice, copy over TLS, TLS upstream, terminated
#     WebSocket plain and over TLS) across reloads, incl. a certificate change


@case(timeout=120)
def mixed_tunnels_survive_reloads(t):
    from tls_lib import PKI, TLSBackend, tls_connect
    from term_lib import OP_BINARY, RawWS, StreamBackend, exact_101, handshake, ws_lines

    pki = PKI(t.dir)
    c1 = pki.leaf("one", "one.test", ["DNS:one.test"])
    c2 = pki.leaf("two", "two.test", ["DNS:two.test"])
    upc = pki.leaf("up", "up.test", ["DNS:up.test"])

    def tls_echo(m, rec):
        head = m.recv_until(b"\r\n\r\n")
        key = re.search(rb"(?i)\r\nSec-WebSocket-Key: *([^\r]*)", head).group(1).decode()
        from wslib import resp_101
        m.send(resp_101(key))
        while True:
            d = m.recv(60)
            if not d:
                return
            m.send(d)

    tbe = TLSBackend(t, pki, upc[0], upc[1], tls_echo)
    be = NamedBackend(t, "A")
    sb = StreamBackend(t)
    tport = t.free_port()

    def text(port, k, cert=c1):
        routes = [{"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": sb.bridge},
                  ws_route("wstls", "/wstls", "secure"), ws_route("ws", "/ws", "app"),
                  {"name": "extra%d" % (k % 2), "path_prefix": "/x%d" % k, "upstream": "app"}]
        return conf(port, {"app": [be], "secure": [tbe]}, routes=routes, listens=[(tport, [cert])],
                    workers=2, mode="splice",
                    upstream_tls={"secure": 'verify = true; ca = "%s"; sni = "up.test";' % pki.path(pki.ca)})

    px, rl = start(t, lambda p: text(p, 0))
    ca = pki.path(pki.ca)
    tun = {}
    tun["plain"] = [open_tunnel(t, px.port) for _ in range(2)]
    tun["tls-client"] = []
    for _ in range(2):
        c = tls_connect(t, tport, sni="one.test", ca=ca)
        tun["tls-client"].append(open_tunnel(t, tport, client=c))
    tun["tls-upstream"] = [open_tunnel(t, px.port, target="/wstls") for _ in range(2)]
    wss = [RawWS.open(t, px, target="/term")[0] for _ in range(2)]
    c = tls_connect(t, tport, sni="one.test", ca=ca)
    key = ws_key()
    c.send(handshake(key, target="/term"))
    eq(c.rd.read_until(b"\r\n\r\n", time.monotonic() + 10), exact_101(key), "101 of the terminated wss")
    wss.append(RawWS(c))

    def traffic(tag):
        for kind, cs in tun.items():
            for i, cl in enumerate(cs):
                m = ("%s %s %d\n" % (tag, kind, i)).encode()
                echo(cl, m, "%s tunnel %d echo at %s" % (kind, i, tag))
        for i, w in enumerate(wss):
            m = ("%s ws %d\n" % (tag, i)).encode()
            w.send_frame(OP_BINARY, m)
            eq(w.recv_data(len(m)), m, "terminated WebSocket %d echo at %s" % (i, tag))

    traffic("before")
    for k in range(1, 21):
        rl.ok(text(px.port, k))
        traffic("after reload %d" % k)
    # a new certificate: new TLS connections get it, the old TLS tunnels keep running
    rl.ok(text(px.port, 21, cert=c2))
    n = tls_connect(t, tport, sni="two.test", ca=ca)
    eq(n.peer_cn(), "two.test", "certificate on a new TLS connection after the reload")
    r = get(tport, "/ws/plain", client=n)
    eq((r.status, r.body), (200, b"A"), "request over TLS after the certificate change")
    n.close()
    traffic("after the certificate change")
    big = blob(256 * KiB, 5)
    for kind, cs in tun.items():
        for i, cl in enumerate(cs):
            echo(cl, big, "256 KiB on %s tunnel %d" % (kind, i), timeout=20)
    for kind, cs in tun.items():
        for cl in cs:
            cl.close()
    for w in wss:
        w.close()
    lines = wait_tunnel_line(px, timeout=10, n=6)
    for tl in lines:
        check_gw(tl, 1, (0, 1))
        eq(tl.get("closed_by"), "client", "closed_by in %r" % tl)
    eq(sorted(tl["mode"] for tl in lines), ["copy", "copy", "copy", "copy", "splice", "splice"],
       "tunnel modes (plain splice, TLS copy)")
    px.wait_access(3, lambda a: a.get("event") == "websocket", timeout=10)
    for wl in ws_lines(px):
        check_gw(wl, 1, (0, 1))


# ==========================================================================
# 2. a reload that changes a route's upstream


@case(timeout=60)
def upstream_change(t):
    A, B, C = NamedBackend(t, "A", slow=1.0), NamedBackend(t, "B"), NamedBackend(t, "C")

    def text(port, gen):
        if gen == 1:
            return conf(port, {"a": [A], "b": [B]}, routes=[{"name": "all", "upstream": "a"}])
        if gen == 2:  # the route now names b; a is gone
            return conf(port, {"b": [B]}, routes=[{"name": "all", "upstream": "b"}])
        return conf(port, {"b": [C]}, routes=[{"name": "all", "upstream": "b"}])  # b's server changed

    px, rl = start(t, lambda p: text(p, 1))
    r = get(px.port, "/one")
    eq((r.status, r.body), (200, b"A"), "generation 1 answers from A")
    t1 = open_tunnel(t, px.port)
    echo(t1, b"t1 before\n")
    ka = t.connect(px.port)  # idle keep-alive connection across the reload
    r = ka.get("/ka-1")
    eq((r.status, r.body), (200, b"A"), "keep-alive request before the reload")
    # a request in flight during the reload finishes on the old generation
    slow = t.connect(px.port)
    slow.request("GET", "/slow")
    wait_until(lambda: b"GET /slow HTTP/1.1" in A.requests(), 5, what="the slow request at A")
    rl.ok(text(px.port, 2))
    r = slow.read_response(timeout=5)
    eq((r.status, r.body), (200, b"A"), "the request in flight during the reload (answered by A)")
    r = get(px.port, "/two")
    eq((r.status, r.body), (200, b"B"), "a new request after the reload goes to B")
    r = ka.get("/ka-2")
    eq((r.status, r.body), (200, b"B"), "the next request on a keep-alive connection idle during the reload "
                                        "(a new request: new generation, backend B)")
    if b"GET /two HTTP/1.1" in A.requests():
        raise AssertionError("A saw a request sent after the reload: %r" % A.requests())
    echo(t1, b"t1 after reload 2\n", "old tunnel (to A) after the reload")
    t2 = open_tunnel(t, px.port)
    echo(t2, b"t2\n")
    rl.ok(text(px.port, 3))
    r = get(px.port, "/three")
    eq((r.status, r.body), (200, b"C"), "a new request after the second reload goes to C")
    echo(t1, b"t1 after reload 3\n", "tunnel 1 (to A) after two reloads")
    echo(t2, b"t2 after reload 3\n", "tunnel 2 (to B) after the reload")
    eq([bytes(c.tunnel) for c in A.tunnels()], [b"t1 before\nt1 after reload 2\nt1 after reload 3\n"],
       "tunnel bytes at A")
    eq([bytes(c.tunnel) for c in B.tunnels()], [b"t2\nt2 after reload 3\n"], "tunnel bytes at B")
    eq(C.tunnels(), [], "tunnels at C")
    t1.close()
    t2.close()
    wait_tunnel_line(px, n=2)
    acc = px.access_lines()
    want = {"/one": (1, "a", A.address), "/slow": (1, "a", A.address), "/two": (2, "b", B.address),
            "/ka-1": (1, "a", A.address), "/ka-2": (2, "b", B.address),
            "/three": (3, "b", C.address)}
    for target, (gen, ups, srv) in want.items():
        ls = [a for a in acc if a.get("target") == target and a.get("event") is None]
        eq(len(ls), 1, "access lines for %s" % target)
        check_gw(ls[0], gen, (0, 1))
        eq((ls[0].get("upstream"), ls[0].get("server")), (ups, srv), "upstream/server of %s" % target)
    tl = {a["server"]: a for a in tunnel_lines(px)}
    eq(sorted(tl), sorted([A.address, B.address]), "servers in the tunnel lines")
    check_gw(tl[A.address], 1)
    check_gw(tl[B.address], 2)


# ==========================================================================
# 3. bad reloads change nothing


def _bad_reload_setup(t, **kw):
    """A proxy at generation 2 (route to B); returns (px, rl, text_fn, A, B)."""
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")

    def text(port, ups="b", **kw2):
        k = dict(kw)
        k.update(kw2)
        return conf(port, {"a": [A], "b": [B]}, routes=[{"name": "all", "upstream": ups}], **k)

    px, rl = start(t, lambda p: text(p, "a"))
    eq(get(px.port, "/g1").body, b"A", "generation 1")
    rl.ok(text(px.port, "b"))
    eq(get(px.port, "/g2").body, b"B", "generation 2")
    return px, rl, text, A, B


def _check_bad(t, px, rl, chunk, want_lines, target):
    """After a failed reload: the -t lines logged as error lines, then
    `reload failed`; a request still served by generation 2 (B)."""
    errs = error_lines(chunk)
    if not errs or errs[-1] != "reload failed: keeping generation 2":
        raise AssertionError("last error line after the bad reload: %r" % errs)
    for ln in want_lines:
        if ln not in errs[:-1]:
            raise AssertionError("error line %r not logged; error lines since SIGHUP: %r" % (ln, errs))
    r = get(px.port, target)
    eq((r.status, r.body), (200, b"B"), "request after the failed reload (old config keeps serving)")
    a = px.wait_access(1, lambda a: a.get("target") == target)[0]
    check_gw(a, 2, (0, 1))
    eq(a.get("upstream"), "b", "upstream after the failed reload")


@case(timeout=30)
def bad_reload_syntax(t):
    px, rl, text, A, B = _bad_reload_setup(t)
    good = text(px.port, "a")
    bad = good.replace('upstream = "a"; }', 'upstream = = "a"; }')
    assert bad != good
    rl.write(bad)
    lines = check_t_output(t, px.config_path)
    want = "%s:%d: " % (px.config_path, line_of(bad, 'upstream = = "a"'))
    if not any(ln.startswith(want) for ln in lines):
        raise AssertionError("-t does not name the line: %r, want %r" % (lines, want))
    chunk = rl.fail()
    t.note(chunk)
    _check_bad(t, px, rl, chunk, lines, "/after-syntax")
    rl.ok(good)  # a later good reload is generation 3
    eq(get(px.port, "/g3").body, b"A", "generation 3")
    check_gw(px.wait_access(1, lambda a: a.get("target") == "/g3")[0], 3)


@case(timeout=30)
def bad_reload_unknown_upstream(t):
    px, rl, text, A, B = _bad_reload_setup(t)
    bad = text(px.port, "nope")
    rl.write(bad)
    lines = check_t_output(t, px.config_path)
    want = "%s:%d: " % (px.config_path, line_of(bad, 'upstream = "nope"'))
    if not any(ln.startswith(want) and "nope" in ln for ln in lines):
        raise AssertionError("-t lines %r: none starts with %r and names the upstream" % (lines, want))
    chunk = rl.fail()
    t.note(chunk)
    _check_bad(t, px, rl, chunk, lines, "/after-unknown")
    # two errors at once: both logged
    bad2 = bad.replace('max_connections = 1000;', 'max_connections = -5;')
    rl.write(bad2)
    lines2 = check_t_output(t, px.config_path)
    if len(lines2) < 2:
        raise AssertionError("-t reports both errors: %r" % lines2)
    chunk = rl.fail()
    _check_bad(t, px, rl, chunk, lines2, "/after-two")
    rl.ok(text(px.port, "a"))
    eq(get(px.port, "/g3").body, b"A", "generation 3 after two failed reloads")
    check_gw(px.wait_access(1, lambda a: a.get("target") == "/g3")[0], 3)


@case(timeout=60)
def bad_reload_unreadable_cert(t):
    """The listener's certificate becomes unreadable (mode 0; as root the proxy
    runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH): the reload fails,
    the old TLS context keeps serving; a missing certificate file too."""
    from tls_lib import PKI, tls_connect

    pki = PKI(t.dir)
    c1 = pki.leaf("one", "one.test", ["DNS:one.test"])
    c2 = pki.leaf("two", "two.test", ["DNS:two.test"])
    tport = t.free_port()
    prefix = NO_DAC if os.geteuid() == 0 else []
    if prefix:
        wrapper = t.path("nodac.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(prefix), t.binary))
        os.chmod(wrapper, 0o755)
        real, t.binary = t.binary, wrapper
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")

    def text(port, ups, cert):
        return conf(port, {"a": [A], "b": [B]}, routes=[{"name": "all", "upstream": ups}], listens=[(tport, [cert])])

    try:
        px, rl = start(t, lambda p: text(p, "a", c1))
    finally:
        if prefix:
            t.binary = real
    ca = pki.path(pki.ca)
    rl.ok(text(px.port, "b", c1))
    old = tls_connect(t, tport, sni="one.test", ca=ca)
    eq(get(tport, "/g2", client=old).body, b"B", "generation 2 over TLS")
    # the new file names the second certificate, whose key is unreadable
    os.chmod(pki.path(c2[1]), 0)
    probe = subprocess.run(prefix + ["cat", pki.path(c2[1])], capture_output=True, timeout=20)
    eq((probe.returncode, b"Permission denied" in probe.stderr), (1, True), "probe: the key is unreadable")
    bad = text(px.port, "a", c2)
    rl.write(bad)
    lines = check_t_output(t, px.config_path, prefix)
    want = "%s:%d: " % (px.config_path, line_of(bad, "two.key"))
    if not any(ln.startswith(want) and "two.key" in ln for ln in lines):
        raise AssertionError("-t lines %r: none starts with %r and names two.key" % (lines, want))
    chunk = rl.fail()
    t.note(chunk)
    _check_bad(t, px, rl, chunk, lines, "/after-unreadable")
    n = tls_connect(t, tport, sni="one.test", ca=ca)
    eq(n.peer_cn(), "one.test", "certificate after the failed reload (the old one)")
    eq(get(tport, "/tls-after", client=n).body, b"B", "TLS request after the failed reload")
    eq(get(tport, "/old-conn", client=old).body, b"B", "old TLS connection after the failed reload")
    os.chmod(pki.path(c2[1]), 0o600)
    # a missing certificate file
    bad = text(px.port, "a", ("missing.pem", c2[1]))
    rl.write(bad)
    lines = check_t_output(t, px.config_path)
    chunk = rl.fail()
    _check_bad(t, px, rl, chunk, lines, "/after-missing")
    rl.ok(text(px.port, "a", c2))
    n = tls_connect(t, tport, sni="two.test", ca=ca)
    eq(n.peer_cn(), "two.test", "certificate after the good reload")
    eq(get(tport, "/g3", client=n).body, b"A", "generation 3 over TLS")


@case(timeout=30)
def bad_reload_port_in_use(t):
    px, rl, text, A, B = _bad_reload_setup(t)
    held = hold_port()
    t.held.append(held)
    busy = held.getsockname()[1]
    free = t.free_port()
    kept = proxy_listeners(px, px.port)
    eq(len(kept), 2, "listening sockets of the 2 workers on the first address")
    bad = text(px.port, "a", listens=[free, busy])
    chunk = rl.fail(bad)
    t.note(chunk)
    errs = error_lines(chunk)
    rx = re.compile(r"(?:\S+:\d+: )?cannot listen on 127\.0\.0\.1:%d: Address already in use" % busy)
    if not any(rx.fullmatch(e) for e in errs[:-1]):
        raise AssertionError("no error line 'cannot listen on 127.0.0.1:%d: Address already in use' before "
                             "'reload failed'; error lines: %r" % (busy, errs))
    _check_bad(t, px, rl, chunk, [], "/after-busy")
    # nothing of the new config is in effect: the free address was not (or no longer is) bound
    eq(listeners(free), set(), "listeners on the other new address after the failed reload")
    eq(connect_refused(free), True, "connect to the other new address is refused")
    eq(proxy_listeners(px, px.port), kept, "listening sockets on the kept address (same sockets)")
    held.close()
    rl.ok(bad)
    for p in (free, busy):
        r = get(p, "/new-%d" % p)
        eq((r.status, r.body), (200, b"A"), "request on the address added by generation 3")
        check_gw(px.wait_access(1, lambda a: a.get("target") == "/new-%d" % p)[0], 3)


# ==========================================================================
# 4. listeners


def _refused_now(px, port, what):
    """A removed address refuses connections once the reload line is out."""
    if connect_refused(port):
        return
    t0 = time.monotonic()
    late = None
    while time.monotonic() - t0 < 2:
        if connect_refused(port):
            late = time.monotonic() - t0
            break
        time.sleep(0.005)
    raise AssertionError("%s accepted a connection after the reload line (listening sockets of the proxy "
                         "there: %d; refused %s)" % (what, len(proxy_listeners(px, port)),
                                                     "%.3fs later" % late if late is not None else "not within 2s"))


@case(timeout=120)
def listener_kept_50_reloads(t):
    be = NamedBackend(t, "A")
    other = t.free_port()

    def text(port, k):
        return conf(port, {"app": [be]}, listens=[other] if k % 2 else [],
                    routes=[{"name": "r%d" % (k % 3), "upstream": "app"}])

    px, rl = start(t, lambda p: text(p, 0))
    before = proxy_listeners(px, px.port)
    eq(len(before), 2, "listening sockets on the address (2 workers)")
    stop, errors, done = [], [], [0]

    def hammer():
        while not stop:
            try:
                c = Client(px.port, timeout=5)
                try:
                    c.request("GET", "/h")
                    r = c.read_response(timeout=5)
                    if (r.status, r.body) != (200, b"A"):
                        errors.append("response %d %r" % (r.status, r.body))
                    done[0] += 1
                finally:
                    c.close()
            except Exception as e:
                errors.append("%s: %s (at generation %d)" % (type(e).__name__, e, rl.gen))

    ths = [t.thread(hammer) for _ in range(2)]
    for k in range(1, 51):
        rl.ok(text(px.port, k))
        if k % 2:
            eq(get(other, "/other").body, b"A", "the address added at generation %d answers" % rl.gen)
        else:
            _refused_now(px, other, "the address removed at generation %d" % rl.gen)
    stop.append(1)
    for th in ths:
        th.join(30)
    t.note("%d requests on the kept address during 50 reloads" % done[0])
    eq(errors[:5], [], "errors of connections to the kept address during the reloads")
    if done[0] < 50:
        raise AssertionError("only %d requests during 50 reloads" % done[0])
    eq(proxy_listeners(px, px.port), before, "listening sockets on the kept address (never reopened)")


@tcase(timeout=30)
def listener_added_removed(t, mode):
    be = NamedBackend(t, "A")
    q = t.free_port()

    def text(port, with_q):
        return conf(port, {"app": [be]}, listens=[q] if with_q else [], mode=mode)

    px, rl = start(t, lambda p: text(p, False))
    eq(connect_refused(q), True, "the second address before it is configured")
    kept = proxy_listeners(px, px.port)
    rl.ok(text(px.port, True))
    eq(len(proxy_listeners(px, q)), 2, "listening sockets on the added address (2 workers)")
    r = get(q, "/on-q")
    eq((r.status, r.body), (200, b"A"), "request on the added address")
    check_gw(px.wait_access(1, lambda a: a.get("target") == "/on-q")[0], 2)
    ka = t.connect(q)
    r = ka.get("/ka-1")
    eq((r.status, r.body), (200, b"A"), "keep-alive connection on the added address")
    tun = open_tunnel(t, q)
    echo(tun, b"on q\n")
    rl.ok(text(px.port, False))
    _refused_now(px, q, "the removed address")
    eq(proxy_listeners(px, q), set(), "listening sockets on the removed address")
    echo(tun, b"still on q\n", "tunnel on the removed address")
    r = ka.get("/ka-2")
    eq((r.status, r.body), (200, b"A"), "the established keep-alive connection on the removed address")
    # a keep-alive connection follows the reload at its next request
    check_gw(px.wait_access(1, lambda a: a.get("target") == "/ka-2")[0], 3)
    eq(proxy_listeners(px, px.port), kept, "listening sockets on the kept address")
    eq(get(px.port, "/p").body, b"A", "the kept address")
    check_gw(px.wait_access(1, lambda a: a.get("target") == "/p")[0], 3)
    tun.close()
    ka.close()
    tl = wait_tunnel_line(px)[0]
    eq((tl.get("closed_by"), tl.get("reason"), tl.get("mode")), ("client", "client EOF", mode), "tunnel line")
    check_gw(tl, 2)


# ==========================================================================
# 5. on_remove: keep / close / drain


def _tunnel_to(t, px, prefix, backend):
    """A tunnel on `prefix` whose backend connection is identified at `backend`.
    Returns (client, BConn)."""
    before = len(backend.tunnels())
    c = open_tunnel(t, px.port, target=prefix)
    wait_until(lambda: len(backend.tunnels()) > before, 5, what="the tunnel at backend %s" % backend.name)
    bc = backend.tunnels()[-1]
    tag = ("%s first\n" % prefix).encode()
    echo(c, tag, "first echo on %s" % prefix)
    return c, bc


@tcase(timeout=30)
def on_remove_keep(t, mode):
    """keep (explicit and the default): tunnels of a removed route, and of a
    route whose upstream was removed, are untouched."""
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")

    def text(port, gen):
        if gen == 1:
            routes = [ws_route("keep", "/keep", "a", on_remove="keep"), ws_route("dflt", "/dflt", "a"),
                      ws_route("orphan", "/orphan", "a", on_remove="keep"), {"name": "all", "upstream": "b"}]
            return conf(port, {"a": [A], "b": [B]}, routes=routes, mode=mode)
        routes = [ws_route("orphan", "/orphan", "b", on_remove="keep"), {"name": "all", "upstream": "b"}]
        return conf(port, {"b": [B]}, routes=routes, mode=mode, extra="# %d" % gen)

    px, rl = start(t, lambda p: text(p, 1))
    tuns = {r: _tunnel_to(t, px, "/" + r, A) for r in ("keep", "dflt", "orphan")}
    rl.ok(text(px.port, 2))
    time.sleep(1.0)
    for k in range(3, 6):
        rl.ok(text(px.port, k))
    for r, (c, bc) in tuns.items():
        echo(c, b"after the reloads\n", "tunnel of route %s after its removal (keep)" % r)
        eq(bc.eof, False, "backend EOF on the %s tunnel" % r)
    eq(tunnel_lines(px), [], "tunnel lines while the kept tunnels run")
    for c, _ in tuns.values():
        c.close()
    lines = wait_tunnel_line(px, n=3)
    for tl in lines:
        eq((tl.get("closed_by"), tl.get("reason")), ("client", "client EOF"), "tunnel line %r" % tl)
        check_gw(tl, 1)
    eq(sorted(tl["route"] for tl in lines), ["dflt", "keep", "orphan"], "routes of the tunnel lines")


@tcase(timeout=30)
def on_remove_close(t, mode):
    """close: at the reload, tunnels of a removed route and of a route whose
    upstream no longer exists are closed at once (closed_by proxy, "route
    removed"); a kept route's tunnels and keep-mode tunnels stay."""
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")

    def text(port, gen):
        if gen == 1:
            routes = [ws_route("gone", "/gone", "a", on_remove="close"),
                      ws_route("orphan", "/orphan", "a2", on_remove="close"),
                      ws_route("stay", "/stay", "b", on_remove="close"),
                      ws_route("kept", "/kept", "a", on_remove="keep"), {"name": "all", "upstream": "b"}]
            return conf(port, {"a": [A], "a2": [A], "b": [B]}, routes=routes, mode=mode)
        routes = [ws_route("orphan", "/orphan", "b", on_remove="close"),
                  ws_route("stay", "/stay", "b", on_remove="close"), {"name": "all", "upstream": "b"}]
        return conf(port, {"b": [B]}, routes=routes, mode=mode)

    px, rl = start(t, lambda p: text(p, 1))
    gone = _tunnel_to(t, px, "/gone", A)
    orphan = _tunnel_to(t, px, "/orphan", A)
    stay = _tunnel_to(t, px, "/stay", B)
    kept = _tunnel_to(t, px, "/kept", A)
    t0 = time.monotonic()
    rl.ok(text(px.port, 2))
    for name, (c, bc) in (("gone", gone), ("orphan", orphan)):
        c.expect_closed(1.0)
        took = time.monotonic() - t0
        if took > 0.5:
            raise AssertionError("the %s tunnel closed %.2fs after SIGHUP, want at once (< 0.5 s)" % (name, took))
        wait_until(lambda: bc.eof, 1, what="EOF at the backend of the %s tunnel" % name)
    time.sleep(0.5)
    echo(stay[0], b"stay after\n", "tunnel of the kept route")
    echo(kept[0], b"kept after\n", "tunnel of the removed keep route")
    lines = wait_tunnel_line(px, n=2)
    for tl in lines:
        eq((tl.get("closed_by"), tl.get("reason"), tl.get("mode")), ("proxy", "route removed", mode),
           "tunnel line %r" % tl)
        check_gw(tl, 1)
    eq(sorted(tl["route"] for tl in lines), ["gone", "orphan"], "routes of the closed tunnels")
    stay[0].close()
    kept[0].close()
    lines = wait_tunnel_line(px, n=4)
    for tl in lines[2:]:
        eq((tl.get("closed_by"), tl.get("reason")), ("client", "client EOF"), "tunnel line %r" % tl)


@tcase(timeout=40)
def on_remove_drain(t, mode):
    """drain: 10 tunnels of a removed route with drain_time 2s are closed
    spread over the 2 s (all within 2.4 s, first before 1 s, last after
    1.2 s, no gap over 0.6 s), echoing until their turn; a keep tunnel stays."""
    A = NamedBackend(t, "A")
    N, D = 10, 2.0

    def text(port, gen):
        if gen == 1:
            routes = [ws_route("d", "/d", "a", on_remove="drain", drain_time="2s"),
                      ws_route("k", "/k", "a"), {"name": "all", "upstream": "a"}]
        else:
            routes = [{"name": "all", "upstream": "a"}]
        return conf(port, {"a": [A]}, routes=routes, mode=mode)

    px, rl = start(t, lambda p: text(p, 1))
    tuns = [_tunnel_to(t, px, "/d", A) for _ in range(N)]
    keep = _tunnel_to(t, px, "/k", A)
    ths = [t.thread(watch_close, c, 0.02, 15, b"d%d" % i) for i, (c, _) in enumerate(tuns)]
    time.sleep(0.2)
    t0 = time.monotonic()
    rl.ok(text(px.port, 2))
    rel = sorted(th.join(20) - t0 for th in ths)
    t.note("drain closes (s after SIGHUP): %s" % " ".join("%.3f" % x for x in rel))
    if rel[-1] > D * 1.2:
        raise AssertionError("last close %.2fs after the reload, want <= %.1fs: %r" % (rel[-1], D * 1.2, rel))
    if rel[0] >= 1.0:
        raise AssertionError("first close %.2fs after the reload, want < 1s: %r" % (rel[0], rel))
    if rel[-1] <= 1.2:
        raise AssertionError("all %d closed within %.2fs, want spread over %.1fs (last after 1.2s): %r"
                             % (N, rel[-1], D, rel))
    gaps = [b - a for a, b in zip([0.0] + rel, rel)]
    if max(gaps) > 0.6:
        raise AssertionError("a gap of %.2fs between closes, want spread evenly (%.2fs apart): %r"
                             % (max(gaps), D / N, rel))
    for i, (_, bc) in enumerate(tuns):
        wait_until(lambda: bc.eof, 1, what="EOF at the backend of drained tunnel %d" % i)
    echo(keep[0], b"keep after the drain\n", "the keep tunnel after the drain")
    lines = wait_tunnel_line(px, n=N)
    for tl in lines:
        eq((tl.get("route"), tl.get("closed_by"), tl.get("reason"), tl.get("mode")),
           ("d", "proxy", "route removed", mode), "tunnel line %r" % tl)
        check_gw(tl, 1)


@case(timeout=40)
def on_remove_terminated(t):
    """Terminated WebSockets of removed routes: drain sends close 1001 spread
    over drain_time, close closes them at once, keep leaves them running."""
    from term_lib import OP_BINARY, OP_CLOSE, RawWS, StreamBackend, ws_lines

    sb = StreamBackend(t)
    A = NamedBackend(t, "A")

    def text(port, gen):
        routes = [{"name": "all", "upstream": "a"}]
        if gen == 1:
            routes = [{"name": n, "path_prefix": "/" + n, "upgrade": "terminate", "bridge": sb.bridge,
                       "on_remove": n} for n in ("drain", "close", "keep")] + routes
            routes[0]["drain_time"] = "1s"
        return conf(port, {"a": [A]}, routes=routes)

    px, rl = start(t, lambda p: text(p, 1))
    ws = {}
    for n in ("drain", "close", "keep"):
        ws[n] = []
        for i in range(3):
            w = RawWS.open(t, px, target="/" + n)[0]
            m = b"%s %d\n" % (n.encode(), i)
            w.send_frame(OP_BINARY, m)
            eq(w.recv_data(len(m)), m, "echo on %s websocket %d" % (n, i))
            ws[n].append(w)
    t0 = time.monotonic()
    rl.ok(text(px.port, 2))

    def closed(w):
        try:
            f = w.recv_frame(3)
        except socket.timeout:
            raise AssertionError("a websocket of a removed route still open (no frame, no EOF) 3s after SIGHUP")
        except Exception as e:  # EOF without a close frame
            return time.monotonic(), None, str(e)
        return time.monotonic(), f, None

    res = {n: [t.thread(closed, w) for w in ws[n]] for n in ("drain", "close")}
    got = {n: [th.join(5) for th in ths] for n, ths in res.items()}
    for at, f, err in got["close"]:
        if at - t0 > 0.5:
            raise AssertionError("on_remove close: websocket closed %.2fs after SIGHUP, want at once" % (at - t0))
        if f is not None and (f.op != OP_CLOSE or f.close_code != 1001):
            raise AssertionError("on_remove close: first frame after the reload %r, want close 1001 or EOF" % f)
    times = sorted(at - t0 for at, f, err in got["drain"])
    t.note("drain close frames (s after SIGHUP): %r" % times)
    for at, f, err in got["drain"]:
        if f is None or f.op != OP_CLOSE or f.close_code != 1001:
            raise AssertionError("on_remove drain: want a close frame 1001, got %r %s" % (f, err or ""))
    if times[-1] > 1.2 or times[-1] - times[0] < 0.2:
        raise AssertionError("drain over 1s: close frames at %r, want within 1.2s and not all at once" % times)
    for i, w in enumerate(ws["keep"]):
        m = b"keep still %d\n" % i
        w.send_frame(OP_BINARY, m)
        eq(w.recv_data(len(m)), m, "keep websocket %d after the reload" % i)
    px.wait_access(6, lambda a: a.get("event") == "websocket", timeout=5)
    for wl in ws_lines(px):
        eq((wl.get("closed_by"), wl.get("reason")), ("proxy", "route removed"), "websocket line %r" % wl)
        if wl.get("route") not in ("drain", "close"):
            raise AssertionError("websocket line of route %r closed: %r" % (wl.get("route"), wl))
        check_gw(wl, 1)


# ==========================================================================
# 5b. stop: SIGTERM with shutdown_grace, SIGQUIT


@tcase(timeout=30)
def shutdown_grace(t, mode):
    """SIGTERM with shutdown_grace 1s: listeners closed at once, the request in
    flight answered, the tunnel and the terminated WebSocket run until the
    grace, then are closed (tunnel line "shutdown", close 1001), exit 0."""
    from term_lib import OP_BINARY, OP_CLOSE, RawWS, StreamBackend, check_ws_line

    A = NamedBackend(t, "A", slow=0.5)
    sb = StreamBackend(t)
    routes = [{"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": sb.bridge},
              ws_route("ws", "/ws", "a"), {"name": "all", "upstream": "a"}]
    px, rl = start(t, lambda p: conf(p, {"a": [A]}, routes=routes, mode=mode,
                                     timeouts={"shutdown_grace": "1s"}))
    tun, bc = _tunnel_to(t, px, "/ws", A)
    w = RawWS.open(t, px, target="/term")[0]
    slow = t.connect(px.port)
    slow.request("GET", "/slow")
    wait_until(lambda: b"GET /slow HTTP/1.1" in A.requests(), 5, what="the slow request at the backend")
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not proxy_listeners(px, px.port), 0.5, what="listeners closed after SIGTERM")
    eq(connect_refused(px.port), True, "connect after SIGTERM")
    r = slow.read_response(timeout=3)
    eq((r.status, r.body), (200, b"A"), "the request in flight at SIGTERM")
    tunnel_alive(tun, b"during the grace", "tunnel during the grace")
    w.send_frame(OP_BINARY, b"ws during the grace")
    eq(w.recv_data(19), b"ws during the grace", "terminated WebSocket during the grace")
    th = t.thread(watch_close, tun, 0.02, 5, b"grace")
    while True:
        try:
            f = w.recv_frame(3)
        except Exception as e:
            raise AssertionError("terminated WebSocket: no close frame, %s: %s (%.2fs after SIGTERM)"
                                 % (type(e).__name__, e, time.monotonic() - t0))
        if f.op == OP_CLOSE:
            break
    ws_at = time.monotonic() - t0
    eq(f.close_code, 1001, "close code at the end of the grace (frame %r)" % f)
    try:
        w.send_frame(OP_CLOSE, f.payload[:2])
    except OSError:
        pass
    w.expect_eof(3)
    at = th.join(5) - t0
    t.note("tunnel closed %.3fs, websocket %.3fs after SIGTERM" % (at, ws_at))
    for what, x in (("tunnel", at), ("terminated WebSocket", ws_at)):
        if not 0.8 <= x <= 1.5:
            raise AssertionError("%s closed %.2fs after SIGTERM, want at the 1s grace (0.8..1.5)" % (what, x))
    st, _ = wait_exit(px, 2.0)
    eq(st, 0, "exit status after SIGTERM")
    px.stop(sig=None, expect=0)
    tl = wait_tunnel_line(px)[0]
    eq((tl.get("closed_by"), tl.get("reason"), tl.get("mode")), ("proxy", "shutdown", mode), "tunnel line")
    check_gw(tl, 1)
    check_ws_line(px, "proxy", "shutdown", route="term")


@case(timeout=30)
def sigterm_exits_when_tunnels_end(t):
    """shutdown_grace 10s (the default): the proxy exits as soon as its last tunnel ends, an
    idle keep-alive client does not hold it."""
    A = NamedBackend(t, "A")
    px, rl = start(t, lambda p: conf(p, {"a": [A]}))  # shutdown_grace: the default 10s
    tun = open_tunnel(t, px.port)
    idle = t.connect(px.port)
    eq(idle.get("/idle").body, b"A", "keep-alive request")
    px.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    tunnel_alive(tun, b"after SIGTERM")
    eq(px.alive(), True, "proxy alive while a tunnel runs within the grace")
    tun.close()
    st, took = wait_exit(px, 1.5)
    eq(st, 0, "exit status")
    px.stop(sig=None, expect=0)
    tl = wait_tunnel_line(px)[0]
    eq((tl.get("closed_by"), tl.get("reason")), ("client", "client EOF"), "tunnel line")


@case(timeout=30)
def sigquit(t):
    """SIGQUIT closes everything at once (tunnel, request in flight) and exits 0."""
    A = NamedBackend(t, "A", slow=3)
    px, rl = start(t, lambda p: conf(p, {"a": [A]}))  # shutdown_grace: the default 10s
    tun, bc = _tunnel_to(t, px, "/ws", A)
    slow = t.connect(px.port)
    slow.request("GET", "/slow")
    wait_until(lambda: b"GET /slow HTTP/1.1" in A.requests(), 5, what="the slow request at the backend")
    px.proc.send_signal(signal.SIGQUIT)
    st, took = wait_exit(px, 1.0)
    eq(st, 0, "exit status after SIGQUIT")
    px.stop(sig=None, expect=0)
    tun.expect_closed(1)
    slow.read_until_close(1)
    wait_until(lambda: bc.eof, 1, what="EOF at the tunnel's backend")


@case(timeout=30)
def sigquit_during_grace(t):
    A = NamedBackend(t, "A")
    px, rl = start(t, lambda p: conf(p, {"a": [A]}))  # shutdown_grace: the default 10s
    tun = open_tunnel(t, px.port)
    px.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    tunnel_alive(tun, b"in the grace")
    px.proc.send_signal(signal.SIGQUIT)
    st, took = wait_exit(px, 1.0)
    eq(st, 0, "exit status after SIGTERM then SIGQUIT")
    px.stop(sig=None, expect=0)
    tun.expect_closed(1)


# ==========================================================================
# 5c. SIGUSR1 reopens the log files


def _fds_to(pid, path):
    out = []
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, n)) == path:
                out.append(n)
        except OSError:
            pass
    return out


@case(timeout=40)
def sigusr1_reopen(t):
    A = NamedBackend(t, "A")
    acc, err = t.path("access.log"), t.path("error.log")
    px = t.proxy(config_text=conf("{port}", {"a": [A]}, routes=[{"name": "app", "path_prefix": "/app",
                                                                 "upstream": "a"}],
                                  access_log=acc, error_log=err), wait_started=False)
    wait_until(lambda: os.path.exists(err) and "started" in open(err).read(), 5, what="'started' in error.log")

    def lines(path):
        with open(path) as f:
            return f.read().splitlines()

    def targets(path):
        import json
        return [json.loads(l).get("target") for l in lines(path) if l.startswith("{")]

    for i in range(5):
        eq(get(px.port, "/app/%d" % i).body, b"A", "request %d" % i)
    wait_until(lambda: len(targets(acc)) == 5, 5, what="5 lines in access.log")
    os.rename(acc, acc + ".1")
    os.rename(err, err + ".1")
    get(px.port, "/app/renamed")
    wait_until(lambda: "/app/renamed" in targets(acc + ".1"), 5, what="the line in the renamed file before SIGUSR1")
    px.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(acc) and os.path.exists(err), 3,
               what="new access.log and error.log at the configured paths after SIGUSR1")
    old_acc, old_err = len(lines(acc + ".1")), len(lines(err + ".1"))
    after = ["/app/after-%d" % i for i in range(20)]
    for tg in after:
        eq(get(px.port, tg).body, b"A", tg)
    r = get(px.port, "/nothing")
    eq(r.status, 404, "status without a route")
    wait_until(lambda: len(targets(acc)) >= 21, 5, what="21 lines in the new access.log")
    eq(targets(acc), after + ["/nothing"], "targets in the new access.log")
    import json
    ws = {json.loads(l)["worker"] for l in lines(acc)}
    eq(sorted(ws), [0, 1], "workers writing to the new access.log")
    wait_until(lambda: any(re.search(r" s=\d+ 404: ", l) for l in lines(err)), 3,
               what="the 404 line in the new error.log (%r)" % lines(err))
    eq((len(lines(acc + ".1")), len(lines(err + ".1"))), (old_acc, old_err), "lines in the renamed files (unchanged)")
    eq((_fds_to(px.pid, acc + ".1"), _fds_to(px.pid, err + ".1")), ([], []), "descriptors still open on the renamed files")
    px.stop()
    eq(px.log().strip(), "", "stderr (everything goes to the files)")


# ==========================================================================
# 5d. -s reload / -s stop


def _cli(t, action, path, prefix=()):
    p = t.run_binary(["-s", action, "-c", path], prefix=prefix)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


@case(timeout=30)
def signal_cli(t):
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")
    pid = t.path("switchyard.pid")

    def text(port, ups):
        return conf(port, {"a": [A], "b": [B]}, routes=[{"name": "all", "upstream": ups}], pid_file=pid)

    px, rl = start(t, lambda p: text(p, "a"))
    wait_until(lambda: os.path.exists(pid), 3, what="the pid file")
    with open(pid) as f:
        content = f.read()
    eq(content.strip(), str(px.pid), "pid file content (%r)" % content)
    eq(get(px.port, "/g1").body, b"A", "generation 1")
    rl.write(text(px.port, "b"))
    rl.pos = rl.log_size()
    rc, out, err = _cli(t, "reload", px.config_path)
    eq((rc, err), (0, ""), "exit status and stderr of switchyard -s reload")
    rl.wait(rl.ok_rx(2), 5, "reloaded ... generation 2 after -s reload")
    rl.gen = 2
    eq(get(px.port, "/g2").body, b"B", "after -s reload")
    tun = open_tunnel(t, px.port)
    rc, out, err = _cli(t, "stop", px.config_path)
    eq((rc, err), (0, ""), "exit status and stderr of switchyard -s stop")
    time.sleep(0.3)
    tunnel_alive(tun, b"after -s stop", "tunnel after -s stop (SIGTERM grace)")
    eq(connect_refused(px.port), True, "connect after -s stop (SIGTERM: stop accepting)")
    tun.close()
    st, _ = wait_exit(px, 2)
    eq(st, 0, "exit status after -s stop")
    px.stop(sig=None, expect=0)


@case(timeout=30)
def signal_cli_errors(t):
    """-s with a missing pid file, one naming no running process, garbage in it,
    an unreadable one: exit 1 with a message; nothing is signalled."""
    A = NamedBackend(t, "A")
    pid = t.path("sy.pid")
    path = t.path("cli.conf")
    with open(path, "w") as f:
        f.write(conf(t.free_port(), {"a": [A]}, pid_file=pid))
    for action in ("reload", "stop"):
        rc, out, err = _cli(t, action, path)
        eq(rc, 1, "-s %s without the pid file: exit status (stderr %r)" % (action, err))
        if not err.strip():
            raise AssertionError("-s %s without the pid file: no message on stderr" % action)
    p = subprocess.Popen(["true"])
    p.wait()
    for content, what in (("%d\n" % p.pid, "a pid no process has"), ("garbage\n", "garbage"), ("", "an empty file")):
        with open(pid, "w") as f:
            f.write(content)
        for action in ("reload", "stop"):
            rc, out, err = _cli(t, action, path)
            eq(rc, 1, "-s %s with %s in the pid file: exit status (stderr %r)" % (action, what, err))
            if not err.strip():
                raise AssertionError("-s %s with %s in the pid file: no message on stderr" % (action, what))
    # unreadable (mode 0; as root without the DAC capabilities)
    sleeper = t.popen(["sleep", "30"])
    with open(pid, "w") as f:
        f.write("%d\n" % sleeper.pid)
    os.chmod(pid, 0)
    prefix = NO_DAC if os.geteuid() == 0 else []
    rc, out, err = _cli(t, "stop", path, prefix)
    eq(rc, 1, "-s stop with an unreadable pid file: exit status (stderr %r)" % err)
    if not err.strip():
        raise AssertionError("-s stop with an unreadable pid file: no message on stderr")
    time.sleep(0.1)
    eq(sleeper.poll(), None, "the process named in the unreadable pid file was not signalled")


# ==========================================================================
# 6. workers


@case(timeout=60)
def workers_both_accept(t):
    A = NamedBackend(t, "A")
    px, rl = start(t, lambda p: conf(p, {"a": [A]}, workers=2))
    eq(len(proxy_listeners(px, px.port)), 2, "listening sockets with workers = 2 (one per worker)")
    threads = len(os.listdir("/proc/%d/task" % px.pid))
    if threads < 2:
        raise AssertionError("%d thread(s) with workers = 2" % threads)
    for i in range(40):
        eq(get(px.port, "/w%d" % i).body, b"A", "request %d" % i)
    lines = px.wait_access(40, lambda a: a.get("target", "").startswith("/w"))
    for a in lines:
        check_gw(a, 1, (0, 1))
    eq(sorted({a["worker"] for a in lines}), [0, 1], "workers that served 40 connections")
    t.note("per worker: %r" % {w: sum(1 for a in lines if a["worker"] == w) for w in (0, 1)})
    # workers = 1: a single loop
    px1, _ = start(t, lambda p: conf(p, {"a": [A]}, workers=1))
    eq(len(proxy_listeners(px1, px1.port)), 1, "listening sockets with workers = 1")
    for i in range(10):
        get(px1.port, "/one%d" % i)
    for a in px1.wait_access(10):
        check_gw(a, 1, (0,))
    # default: the number of CPUs
    pxd, _ = start(t, lambda p: conf(p, {"a": [A]}, workers=None))
    n = len(proxy_listeners(pxd, pxd.port))
    cpus = {os.cpu_count(), len(os.sched_getaffinity(0))}
    if n not in {min(c, 64) for c in cpus}:
        raise AssertionError("%d listening sockets without `workers`, want the number of CPUs %r" % (n, cpus))


@case(timeout=60)
def workers_max_connections_share(t):
    """workers = 2, max_connections = 3: each worker serves at most 2 (3/2
    rounded up) connections at once; the kernel picks the worker, so the
    assertion is per worker, read from the access log's "worker"."""
    A = NamedBackend(t, "A")
    px, rl = start(t, lambda p: conf(p, {"a": [A]}, workers=2, limits={"max_connections": 3}))
    served, waiting = {0: [], 1: []}, []

    def worker_of(target):
        return px.wait_access(1, lambda a: a.get("target") == target, timeout=2)[0]["worker"]

    opened = 0
    while sum(len(v) for v in served.values()) < 4 and opened < 40:
        opened += 1
        c = t.connect(px.port)
        tg = "/c%d" % opened
        c.request("GET", tg)
        try:
            r = c.read_response(timeout=0.5)
        except socket.timeout:
            waiting.append((c, tg))
            continue
        eq((r.status, r.body), (200, b"A"), "response on %s" % tg)
        served[worker_of(tg)].append(c)
        for w, cs in served.items():
            if len(cs) > 2:
                raise AssertionError("worker %d serves %d connections at once, want at most 2 (3/2 rounded up)"
                                     % (w, len(cs)))
    t.note("opened %d connections: served per worker %r, %d waiting"
           % (opened, {w: len(v) for w, v in served.items()}, len(waiting)))
    eq({w: len(v) for w, v in served.items()}, {0: 2, 1: 2}, "connections served per worker")
    for i in range(10):
        c = t.connect(px.port)
        tg = "/w%d" % i
        c.request("GET", tg)
        waiting.append((c, tg))
    time.sleep(0.5)
    eq(len(px.access_lines()), 4, "access lines while both workers are full")
    # a connection ends on worker w: at most one waiting connection is served, by w
    progressed = 0
    for w in (0, 1):
        n0 = len(px.access_lines())
        served[w].pop().close()
        time.sleep(1.0)
        new = px.access_lines()[n0:]
        if len(new) > 1:
            raise AssertionError("closing one connection of worker %d let %d waiting ones in: %r" % (w, len(new), new))
        if new:
            eq(new[0]["worker"], w, "worker of the connection let in after one of worker %d ended" % w)
            progressed += 1
    if not progressed:
        raise AssertionError("no waiting connection was served after connections ended")


@case(timeout=30)
def config_check_new_keys(t):
    """-t on the new keys: workers 1..64, on_remove, drain_time, shutdown_grace, pid_file."""
    port = t.free_port()
    good = conf(port, {"a": [t.dead_port()]}, workers=64, pid_file=t.path("x.pid"), limits={"max_connections": 100},
                timeouts={"shutdown_grace": "10s"},
                routes=[{"name": "r1", "path_prefix": "/d", "upstream": "a", "on_remove": "drain", "drain_time": "5m"},
                        {"name": "r2", "path_prefix": "/c", "upstream": "a", "on_remove": "close"},
                        {"name": "r3", "upstream": "a", "on_remove": "keep"}])
    res = t.check_config(good, "good.conf")
    # (a descriptor-limit warning may come on a host with a low hard limit)
    eq((res.rc, [l for l in res.err.splitlines() if re.match(re.escape(res.path) + r":\d+: ", l)]), (0, []),
       "-t on a config with every new key (stderr %r)" % res.err)
    eq(t.check_config(good.replace("workers = 64;", "workers = 1;"), "one.conf").rc, 0, "-t with workers = 1")
    bads = [("workers = 64;", "workers = 0;", "workers"), ("workers = 64;", "workers = 65;", "workers"),
            ("workers = 64;", 'workers = "two";', "workers"),
            ('on_remove = "close";', 'on_remove = "bogus";', "on_remove"),
            ('drain_time = "5m";', 'drain_time = "soon";', "drain_time"),
            ('shutdown_grace = "10s";', 'shutdown_grace = "x";', "shutdown_grace"),
            ('pid_file = "%s";' % t.path("x.pid"), "pid_file = 3;", "pid_file")]
    for i, (old, new, key) in enumerate(bads):
        text = good.replace(old, new)
        assert text != good, old
        res = t.check_config(text, "bad%d.conf" % i)
        want = "%s:%d: " % (res.path, line_of(text, new))
        eq(res.rc, 1, "-t exit status with %s (stderr %r)" % (new, res.err))
        if not any(l.startswith(want) and key in l for l in res.err.splitlines()):
            raise AssertionError("-t with %s: no line starting %r naming %s: %r" % (new, want, key, res.err))


# ==========================================================================
# 7. idle upstream connections to removed servers


@case(timeout=40)
def idle_pool_closed_on_reload(t):
    """Idle keep-alive connections to servers the new config no longer has are
    closed at the reload (the backend sees EOF); those to kept servers stay."""
    A, B, C = NamedBackend(t, "A"), NamedBackend(t, "B"), NamedBackend(t, "C")

    def text(port, gen):
        if gen == 1:
            return conf(port, {"a": [A], "b": [B]}, routes=[ws_route("ra", "/a", "a"), ws_route("rb", "/b", "b")])
        if gen == 2:  # upstream a (server A) removed
            return conf(port, {"b": [B]}, routes=[ws_route("rb", "/b", "b")])
        return conf(port, {"b": [C]}, routes=[ws_route("rb", "/b", "b")])  # b's server B replaced by C

    px, rl = start(t, lambda p: text(p, 1))
    for i in range(8):
        eq(get(px.port, "/a/%d" % i).body, b"A", "request %d to A" % i)
        eq(get(px.port, "/b/%d" % i).body, b"B", "request %d to B" % i)
    time.sleep(0.3)
    eq([c.eof for c in A.conns + B.conns], [False] * (A.connections + B.connections),
       "EOF on pooled connections before the reload")
    t.note("pooled connections: A %d, B %d" % (A.connections, B.connections))
    t0 = time.monotonic()
    rl.ok(text(px.port, 2))
    wait_until(lambda: all(c.eof for c in A.conns), 1,
               what="EOF on all %d idle connections to A (removed) after the reload" % A.connections)
    t.note("A's connections closed %.3fs after SIGHUP" % (max(c.eof_at for c in A.conns) - t0))
    time.sleep(0.5)
    eq([c.eof for c in B.conns], [False] * B.connections, "EOF on idle connections to B (kept)")
    nb = B.connections
    for i in range(4):
        eq(get(px.port, "/b/again%d" % i).body, b"B", "request to B after the reload")
    rl.ok(text(px.port, 3))
    wait_until(lambda: all(c.eof for c in B.conns), 1,
               what="EOF on all %d idle connections to B (server replaced) after the reload" % B.connections)
    eq(get(px.port, "/b/c").body, b"C", "request after B was replaced by C")
    t.note("B had %d connections before the first reload, %d after" % (nb, B.connections))


@case(timeout=30)
def idle_pool_closed_when_an_older_generation_lives(t):
    """A server in generations 1 and 2 (1 kept alive by a tunnel) that
    generation 3 drops: its idle connections, parked through generation 2,
    are closed at the third reload, not when generation 1's tunnel ends.
    Regression: only servers no other generation had were drained."""
    A, B = NamedBackend(t, "A"), NamedBackend(t, "B")

    def text(port, gen):
        if gen < 3:
            return conf(port, {"a": [A], "b": [B]}, routes=[ws_route("ra", "/a", "a"), ws_route("rb", "/b", "b")])
        return conf(port, {"b": [B]}, routes=[ws_route("rb", "/b", "b")])  # upstream a dropped

    px, rl = start(t, lambda p: text(p, 1))
    tun = open_tunnel(t, px.port, "/a/ws")  # holds generation 1 (and its server A)
    rl.ok(text(px.port, 2))
    n0 = A.connections
    for i in range(4):
        eq(get(px.port, "/a/%d" % i).body, b"A", "request %d to A in generation 2" % i)
    time.sleep(0.3)
    pooled = A.conns[n0:]
    eq([c.eof for c in pooled], [False] * len(pooled), "EOF on connections pooled through generation 2")
    rl.ok(text(px.port, 3))
    wait_until(lambda: all(c.eof for c in pooled), 1,
               what="EOF on the %d idle connections to A after the reload that drops it" % len(pooled))
    tunnel_alive(tun, b"generation 1 tunnel still up")


@case(timeout=30)
def signal_cli_quit(t):
    """-s quit sends SIGQUIT: a tunnel is closed at once and the proxy exits 0;
    an unknown signal name is a usage error (exit 2) that signals nothing."""
    A = NamedBackend(t, "A")
    pid = t.path("switchyard.pid")
    px, rl = start(t, lambda p: conf(p, {"a": [A]}, pid_file=pid))
    wait_until(lambda: os.path.exists(pid), 3, what="the pid file")
    tun = open_tunnel(t, px.port)
    rc, out, err = _cli(t, "bogus", px.config_path)
    eq(rc, 2, "exit status of -s bogus (stderr %r)" % err)
    if "bogus" not in err:
        raise AssertionError("-s bogus: the message does not name it: %r" % err)
    tunnel_alive(tun, b"after -s bogus")
    rc, out, err = _cli(t, "quit", px.config_path)
    eq((rc, err), (0, ""), "exit status and stderr of switchyard -s quit")
    st, took = wait_exit(px, 1.0)
    eq(st, 0, "exit status after -s quit")
    px.stop(sig=None, expect=0)
    tun.expect_closed(1)
