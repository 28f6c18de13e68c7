"""Balancing policies and PROXY protocol to servers (issue 12).

upstreams[].balance = "round-robin" | "least-conn" | "random" | "hash" with
hash_key = "client" | "header:NAME" | "cookie:NAME" | "query:NAME";
upstreams[].proxy_protocol = "v1" | "v2". One worker (counts and round-robin
state are per worker). Exact assertions only: which backend got what.
"""

import socket
import threading

from harness import Client, Reply, _Reader, case, eq, register, wait_until
from reload_lib import Reloader
from wslib import (SelectorEchoBackend, client_recv_exact, header_value, open_tunnels, read_101, relayed_101,
                   resp_101, ws_key, ws_request)


def conf(servers, balance=None, hash_key=None, proxy_protocol=None, port="{port}"):
    """Whole config: one listener, upstream "app" with the servers (backends
    or "ip:port" texts, or (either, weight)), one catch-all route, one worker."""
    def one(s):
        w = None
        if isinstance(s, tuple):
            s, w = s
        addr = s if isinstance(s, str) else s.address
        return '{ address = "%s"; }' % addr if w is None else '{ address = "%s"; weight = %d; }' % (addr, w)
    srv = ", ".join(one(s) for s in servers)
    up = 'name = "app"; '
    if balance is not None:
        up += 'balance = "%s"; ' % balance
    if hash_key is not None:
        up += 'hash_key = "%s"; ' % hash_key
    if proxy_protocol is not None:
        up += 'proxy_protocol = "%s"; ' % proxy_protocol
    return ('listen = ( { address = "127.0.0.1:%s"; } );\n'
            'upstreams = ( { %sservers = ( %s ); } );\n'
            'routes = ( { name = "all"; upstream = "app"; } );\n'
            'timeouts = { shutdown_grace = "3s"; };\n'
            'limits = { max_connections = 1000; };\n'
            'access_log = "stderr";\n'
            'error_log = "stderr";\n'
            'log_level = "info";\n'
            'workers = 1;\n' % (port, up, srv))


def named(t, names):
    """HTTP backends answering every request with 200 and their name (keep-alive)."""
    return [t.http_backend(Reply(200, n.encode(), close=False)) for n in names]


def ask(c, target="/", headers=(), what="request"):
    """One request on client c; returns the answering backend's name."""
    r = c.get(target, headers=list(headers))
    eq(r.status, 200, "%s: status (body %r)" % (what, r.body[:200]))
    return r.body.decode()


def ask_new(t, px, target="/", headers=(), what="request"):
    c = px.connect()
    try:
        return ask(c, target, headers, what)
    finally:
        c.close()


def client_from(t, src, port):
    """A harness Client whose source address is src (any 127.x.y.z works on loopback)."""
    c = Client.__new__(Client)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.bind((src, 0))
    c.sock.settimeout(10)
    c.sock.connect(("127.0.0.1", port))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.rd = _Reader(c.sock)
    c.local_port = c.sock.getsockname()[1]
    c.closed = False
    t.clients.append(c)
    return c


def sid(t, n=20):
    """A Socket.IO-like session id (base64url characters)."""
    abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(t.rng.choice(abc) for _ in range(n))


# ---------------------------------------------------------------------------
# least-conn / round-robin with long tunnels


def echo_backends(t, n):
    out = []
    for _ in range(n):
        be = SelectorEchoBackend()
        t.backends.append(be)
        out.append(be)
    return out


def open_one(px, backs, socks, seed):
    """Open one tunnel (101 checked byte-exact); return the index of the backend that answered it."""
    before = [b.heads for b in backs]
    open_tunnels(px.port, 1, seed, socks)
    wait_until(lambda: sum(b.heads for b in backs) == sum(before) + 1, 5,
               what="the tunnel's head at a backend (heads %r before)" % before)
    diff = [b.heads - h for b, h in zip(backs, before)]
    return diff.index(1)


def check_echo(socks, tag):
    for i, s in enumerate(socks):
        msg = b"%s-%d" % (tag, i)
        s.sendall(msg)
        got = b""
        s.settimeout(10)
        while len(got) < len(msg):
            d = s.recv(4096)
            if not d:
                raise AssertionError("tunnel %d: EOF instead of the echo (got %r)" % (i, got))
            got += d
        eq(got, msg, "echo on tunnel %d" % i)


def uneven_tunnels(t, balance):
    backs = echo_backends(t, 2)
    px = t.proxy(config_text=conf(backs, balance))
    socks, owner = [], []
    try:
        for i in range(6):
            owner.append(open_one(px, backs, socks, "first-%d" % i))
            if i % 2 == 1:
                if owner[i] == owner[i - 1]:
                    raise AssertionError("%s: tunnels %d and %d both went to backend %d (order %r): with "
                                         "equal counts the second must go to the other server"
                                         % (balance, i - 1, i, owner[i], owner))
        t.note(balance, "first six tunnels went to", owner)
        if balance == "round-robin":
            eq(owner, [0, 1, 0, 1, 0, 1], "round-robin: backends of the first six tunnels")
        eq(sorted(owner), [0, 0, 0, 1, 1, 1], "backends of the first six tunnels")
        a = owner[0]
        b = 1 - a
        # close every tunnel of A, B keeps its 3
        keep = []
        for s, o in zip(socks, owner):
            if o == a:
                s.close()
            else:
                keep.append(s)
        socks[:] = keep
        wait_until(lambda: backs[a].open == 0, 5, what="backend A (%d) without tunnels (open %d)"
                   % (a, backs[a].open))
        eq(backs[b].open, 3, "tunnels open at backend B")
        check_echo(socks, b"B")
        nxt = [open_one(px, backs, socks, "next-%d" % i) for i in range(3)]
        t.note(balance, "A =", a, "next three tunnels went to", nxt)
        if balance == "least-conn":
            eq(nxt, [a, a, a], "least-conn: backends of the 3 tunnels opened while A has 0 and B has 3 "
                               "(A = %d)" % a)
        else:
            eq(nxt, [a, b, a], "round-robin: backends of the 3 tunnels after the first six (A = %d)" % a)
        check_echo(socks, b"all")
        eq([backs[a].open, backs[b].open], [3, 3] if balance == "least-conn" else [2, 4],
           "tunnels open at A and B at the end")
    finally:
        for s in socks:
            s.close()


@case(timeout=60)
def least_conn_uneven_tunnels(t):
    """6 tunnels split 3/3; A's 3 closed; the next 3 all go to A (round-robin
    would alternate: see least_conn_uneven_tunnels_round_robin_control)."""
    uneven_tunnels(t, "least-conn")


@case(timeout=60)
def least_conn_uneven_tunnels_round_robin_control(t):
    """The same steps with balance = "round-robin": the next 3 alternate A, B, A."""
    uneven_tunnels(t, "round-robin")


@case(timeout=60)
def least_conn_weighted_tunnels(t):
    """Weights 2:1: tunnels held open split 2:1 (open / weight stays even)."""
    backs = echo_backends(t, 2)
    px = t.proxy(config_text=conf([(backs[0], 2), (backs[1], 1)], "least-conn"))
    socks, owner = [], []
    try:
        for i in range(9):
            owner.append(open_one(px, backs, socks, "w-%d" % i))
            if i % 3 == 2:
                eq([owner.count(0), owner.count(1)], [2 * (i + 1) // 3, (i + 1) // 3],
                   "tunnels per server (weights 2:1) after %d tunnels (order %r)" % (i + 1, owner))
        t.note("weighted least-conn: tunnels went to", owner)
        eq([b.open for b in backs], [6, 3], "tunnels open per server")
        check_echo(socks, b"w")
    finally:
        for s in socks:
            s.close()


@case(timeout=60)
def least_conn_http(t):
    """Plain exchanges count until they end: a request held by its server
    sends every later request to the other one; once it ends (and all the
    quick ones ended, their upstream connections pooled), both are used."""
    gate = threading.Event()

    def script(name):
        def reply(req):
            if req.target.startswith("/slow"):
                gate.wait(30)
            return Reply(200, name.encode(), close=False)
        return reply

    backs = [t.http_backend(script("a")), t.http_backend(script("b"))]
    px = t.proxy(config_text=conf(backs, "least-conn"))
    first = [ask_new(t, px, "/q%d" % i, what="quick request %d" % i) for i in range(4)]
    t.note("four quick requests went to", first)
    eq(sorted(set(first)), ["a", "b"], "servers of 4 quick requests with equal (zero) counts: ties go round robin")
    cs = px.connect()
    try:
        cs.request("GET", "/slow")
        wait_until(lambda: any(r.target == "/slow" for b in backs for r in b.requests), 5,
                   what="the slow request at a server")
        x = "a" if any(r.target == "/slow" for r in backs[0].requests) else "b"
        y = "b" if x == "a" else "a"
        t.note("slow request held by", x)
        during = [ask_new(t, px, "/d%d" % i, what="request %d during the slow one" % i) for i in range(4)]
        ka = px.connect()
        during += [ask(ka, "/k%d" % i, what="keep-alive request %d during the slow one" % i) for i in range(3)]
        ka.close()
        eq(during, [y] * 7, "servers of 7 requests while the slow one is held by %s" % x)
        gate.set()
        r = cs.read_response()
        eq((r.status, r.body), (200, x.encode()), "the slow response")
    finally:
        gate.set()
    after = [ask_new(t, px, "/a%d" % i, what="request %d after the slow one" % i) for i in range(4)]
    t.note("after the slow one ended:", after)
    eq(sorted(set(after)), ["a", "b"], "servers of 4 requests after the slow one ended (counts back to 0 on both)")
    cs.close()


# ---------------------------------------------------------------------------
# hash


def keyed_rounds(t, px, keys, send, what):
    """Each key 3 times: new connection, new connection, then all keys on one
    keep-alive connection. Returns {key: server}; asserts stickiness."""
    m = {}
    for rnd in range(2):
        for k in keys:
            target, headers = send(k)
            got = ask_new(t, px, target, headers, "%s %r round %d" % (what, k, rnd + 1))
            if rnd == 0:
                m[k] = got
            else:
                eq(got, m[k], "%s %r: server of the repeat on a new connection" % (what, k))
    c = px.connect()
    for k in keys:
        target, headers = send(k)
        eq(ask(c, target, headers, "%s %r keep-alive" % (what, k)), m[k],
           "%s %r: server of the repeat on a keep-alive connection" % (what, k))
    c.close()
    return m


def check_keyless(t, px, keyless, what, exact):
    seq = []
    for i in range(6):
        target, headers = keyless[i % len(keyless)]
        seq.append(ask_new(t, px, target, headers, "%s request %d without the key" % (what, i)))
    t.note(what, "requests without the key went to", seq)
    if exact:
        eq(seq, ["a", "b", "c", "a", "b", "c"], "%s: servers of requests without the key (round robin)" % what)
    else:
        eq(sorted(seq), ["a", "a", "b", "b", "c", "c"], "%s: servers of 6 requests without the key" % what)
        eq(seq[3:], seq[:3], "%s: requests without the key cycle with period 3 (%r)" % (what, seq))
    return seq


def hash_case(t, hash_key, send, keyless, nkeys=40):
    backs = named(t, ["a", "b", "c"])
    px = t.proxy(config_text=conf(backs, "hash", hash_key))
    check_keyless(t, px, keyless, hash_key, exact=True)
    keys = [sid(t) + "%02d" % i for i in range(nkeys)]
    m = keyed_rounds(t, px, keys, send, hash_key)
    per = {n: sum(1 for v in m.values() if v == n) for n in "abc"}
    t.note(hash_key, "keys per server:", per)
    eq(sorted(k for k, v in per.items() if v), ["a", "b", "c"], "servers that got keys (%r)" % per)
    check_keyless(t, px, keyless, hash_key, exact=False)
    return m


def cookie_send(k):
    i = int(k[-2:])
    v = ["io=%s" % k, "theme=dark; io=%s" % k, "io=%s; lang=en" % k, "a=1; io=%s; b=2" % k,
         "sess=io=FAKE; xio=FAKE2; io=%s" % k][i % 5]
    return "/socket.io/?EIO=4&transport=polling&t=%d" % i, [("Cookie", v)]


@case(timeout=90)
def hash_cookie_sticky(t):
    hash_case(t, "cookie:io", cookie_send,
              [("/", []), ("/", [("Cookie", "other=1; iox=2; xio=3")])])


@case(timeout=90)
def hash_header(t):
    hash_case(t, "header:X-User", lambda k: ("/u", [("X-User", k)]),
              [("/", []), ("/", [("X-User-Id", "7"), ("X-Users", "8")])])


@case(timeout=90)
def hash_header_name_case_insensitive(t):
    """The field name of header:NAME matches in any case."""
    hash_case(t, "header:X-User", lambda k: ("/u", [(["x-user", "X-USER", "X-User"][int(k[-2:]) % 3], k)]),
              [("/", [])])


def query_send(k):
    i = int(k[-2:])
    q = ["sid=%s" % k, "EIO=4&transport=polling&sid=%s" % k, "sid=%s&t=%d" % (k, i),
         "q=sid=FAKE&xsid=FAKE2&sid=%s" % k][i % 4]
    return ("/sid=FAKE3/" if i % 5 == 0 else "/socket.io/") + "?" + q, []


@case(timeout=90)
def hash_query(t):
    hash_case(t, "query:sid", query_send,
              [("/socket.io/?EIO=4&transport=polling", []), ("/x?sidx=1&xsid=2", []), ("/sid", [])])


@case(timeout=90)
def hash_client(t):
    """All requests from 127.0.0.1 land on one server; 30 other loopback
    source addresses each stick to theirs and reach all three servers."""
    backs = named(t, ["a", "b", "c"])
    px = t.proxy(config_text=conf(backs, "hash", "client"))
    seq = [ask_new(t, px, "/n%d" % i, what="request %d from 127.0.0.1" % i) for i in range(6)]
    c = px.connect()
    seq += [ask(c, "/k%d" % i, what="keep-alive request %d from 127.0.0.1" % i) for i in range(6)]
    c.close()
    eq(seq, [seq[0]] * 12, "servers of 12 requests from 127.0.0.1")
    m = {}
    for rnd in range(3):
        for i in range(2, 32):
            src = "127.0.0.%d" % i
            c = client_from(t, src, px.port)
            got = ask(c, "/", what="request from %s" % src)
            c.close()
            if rnd == 0:
                m[src] = got
            else:
                eq(got, m[src], "server of a repeated request from %s" % src)
    per = {n: sum(1 for v in m.values() if v == n) for n in "abc"}
    t.note("client sources per server:", per)
    eq(sorted(k for k, v in per.items() if v), ["a", "b", "c"], "servers that got client addresses (%r)" % per)
    for b in backs:
        for r in b.requests:
            peer = r.get("X-Forwarded-For")
            if not peer or not peer.startswith("127.0.0."):
                raise AssertionError("X-Forwarded-For %r" % peer)


def cookie_map(t, px, keys):
    m = {}
    c = None
    for i, k in enumerate(keys):
        if i % 25 == 0:
            if c is not None:
                c.close()
            c = px.connect()
        m[k] = ask(c, "/", [("Cookie", "io=" + k)], "key %r" % k)
    c.close()
    return m


@case(timeout=120)
def hash_server_added_moves_few(t):
    """4 servers, then a reload adding a 5th: of 200 keys at most 1.5/5 move;
    nearly all of them to the new server: Maglev, unlike a ring, also moves a
    few keys between the old servers (0 in ~80 % of runs, 1-2 keys in most
    others; up to 3 % of all keys for some address sets), so at most 5 % of
    the keys may do so here; a reload back to 4 puts every key back on its
    first server."""
    backs = named(t, ["a", "b", "c", "d", "e"])
    px = t.proxy(config_text=conf(backs[:4], "hash", "cookie:io"))
    keys = ["k%03d-%s" % (i, sid(t, 12)) for i in range(200)]
    m1 = cookie_map(t, px, keys)
    per1 = {n: sum(1 for v in m1.values() if v == n) for n in "abcd"}
    rl = Reloader(px)
    rl.ok(conf(backs, "hash", "cookie:io", port=px.port))
    m2 = cookie_map(t, px, keys)
    per2 = {n: sum(1 for v in m2.values() if v == n) for n in "abcde"}
    moved = [k for k in keys if m2[k] != m1[k]]
    to_e = [k for k in moved if m2[k] == "e"]
    elsewhere = ["%s: %s->%s" % (k, m1[k], m2[k]) for k in moved if m2[k] != "e"]
    frac = len(moved) / len(keys)
    t.note("keys per server with 4: %r; with 5: %r; moved %d of %d = %.3f (ideal 1/5 = 0.200, bound 1.5/5 = "
           "0.300): %d to the new server e, %d between the old ones %r"
           % (per1, per2, len(moved), len(keys), frac, len(to_e), len(elsewhere), elsewhere))
    print("MOVED_FRACTION %.3f TO_NEW %d BETWEEN_OLD %d" % (frac, len(to_e), len(elsewhere)))
    if frac > 1.5 / 5:
        raise AssertionError("%d of %d keys (%.3f) moved when a 5th server was added; bound 1.5/5 = 0.3"
                             % (len(moved), len(keys), frac))
    if not to_e:
        raise AssertionError("no key moved to the added server e (per server %r)" % per2)
    if len(elsewhere) > len(keys) // 20:
        raise AssertionError("%d of %d keys moved between the old servers when e was added (at most 5 %%): %r"
                             % (len(elsewhere), len(keys), elsewhere))
    rl.ok(conf(backs[:4], "hash", "cookie:io", port=px.port))
    m3 = cookie_map(t, px, keys)
    back = ["%s: %s->%s" % (k, m1[k], m3[k]) for k in keys if m3[k] != m1[k]]
    eq(back, [], "keys not on their first server after the 5th server was removed again")


# ---------------------------------------------------------------------------
# Socket.IO: polling, then the upgrade, on one server


class SioBackend:
    """Raw backend: a GET with Upgrade: websocket gets a 101 and an echo;
    any other request 200 with the name (keep-alive). .seen: [(io cookie,
    "poll"|"ws")]."""

    def __init__(self, t, name):
        self.name = name
        self.seen = []
        self.raw = t.raw_backend(self._handle)
        self.address = self.raw.address

    def _handle(self, rec):
        buf = bytearray()
        while True:
            while b"\r\n\r\n" not in buf:
                d = rec.recv(timeout=120)
                if not d:
                    return
                buf += d
            i = buf.find(b"\r\n\r\n")
            head = bytes(buf[:i + 4])
            del buf[:i + 4]
            io = None
            for part in (header_value(head, "Cookie") or "").split(";"):
                n, _, v = part.strip().partition("=")
                if n == "io":
                    io = v
            up = (header_value(head, "Upgrade") or "").lower() == "websocket"
            self.seen.append((io, "ws" if up else "poll"))
            if up:
                rec.send(resp_101(header_value(head, "Sec-WebSocket-Key") or "") + bytes(buf))
                while True:
                    d = rec.recv(timeout=120)
                    if not d:
                        return
                    rec.send(d)
            body = self.name.encode()
            rec.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))


@case(timeout=90)
def socketio_polling_then_upgrade(t):
    backs = [SioBackend(t, n) for n in ("a", "b", "c")]
    px = t.proxy(config_text=conf(backs, "hash", "cookie:io"))
    sids = [sid(t) for _ in range(6)]
    tunnels = []
    served = {}
    for s in sids:
        c = px.connect()
        got = [ask(c, "/socket.io/?EIO=4&transport=polling&sid=%s&t=P%d" % (s, i), [("Cookie", "io=" + s)],
                   "poll %d of %s" % (i, s)) for i in range(3)]
        c.close()
        eq(got, [got[0]] * 3, "servers of the 3 polling requests of %s" % s)
        served[s] = got[0]
        w = px.connect()
        tunnels.append(w)
        key = ws_key()
        w.send(ws_request(key, target="/socket.io/?EIO=4&transport=websocket&sid=%s" % s,
                          extra=[("Cookie", "io=%s" % s)])[0])
        eq(read_101(w), relayed_101(key), "101 of %s" % s)
        msg = b"2probe " + s.encode()
        w.send(msg)
        eq(client_recv_exact(w, len(msg)), msg, "echo on the tunnel of %s" % s)
    for s in sids:
        where = sorted({b.name for b in backs for io, _ in b.seen if io == s})
        eq(where, [served[s]], "servers that saw session %s" % s)
        b = [x for x in backs if x.name == served[s]][0]
        eq([kind for io, kind in b.seen if io == s], ["poll", "poll", "poll", "ws"],
           "requests of %s at server %s" % (s, b.name))
    t.note("sessions per server:", {b.name: sorted({io for io, _ in b.seen}) for b in backs})
    for i, w in enumerate(tunnels):  # all still open
        msg = b"42[\"bye\",%d]" % i
        w.send(msg)
        eq(client_recv_exact(w, len(msg)), msg, "second echo on tunnel %d" % i)
        w.close()


# ---------------------------------------------------------------------------
# random (power of two choices)


@case(timeout=60)
def random_spreads(t):
    backs = echo_backends(t, 2)
    px = t.proxy(config_text=conf(backs, "random"))
    socks, owner = [], []
    try:
        for i in range(20):
            owner.append(open_one(px, backs, socks, "r-%d" % i))
            if i % 2 == 1:
                eq(sorted(owner).count(0), (i + 1) // 2,
                   "tunnels at backend 0 after %d tunnels (order %r)" % (i + 1, owner))
        t.note("random: tunnels went to", owner)
        eq([b.open for b in backs], [10, 10], "tunnels open per backend")
        check_echo(socks, b"r")
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------
# PROXY protocol to servers

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pp_len(data):
    """Length of a PROXY header at the start of data; None while incomplete;
    0 when data does not start with one."""
    data = bytes(data)
    if not data or V2_SIG.startswith(data[:12]) and len(data) < 12 or b"PROXY ".startswith(data[:6]) and len(data) < 6:
        return None
    if data[:12] == V2_SIG:
        if len(data) < 16:
            return None
        n = 16 + int.from_bytes(data[14:16], "big")
        return n if len(data) >= n else None
    if data.startswith(b"PROXY "):
        j = data.find(b"\r\n")
        if j >= 0:
            return j + 2
        return None if len(data) < 108 else 0
    return 0


def pp_header(version, client_port, proxy_port, src="127.0.0.1"):
    if version == "v1":
        return b"PROXY TCP4 %s 127.0.0.1 %d %d\r\n" % (src.encode(), client_port, proxy_port)
    return (V2_SIG + bytes([0x21, 0x11]) + (12).to_bytes(2, "big") + socket.inet_aton(src)
            + socket.inet_aton("127.0.0.1") + client_port.to_bytes(2, "big") + proxy_port.to_bytes(2, "big"))


def pp_handle(rec):
    """After the PROXY header (if any): answer each request with 200 "ok"
    (keep-alive), or an upgrade with a 101 and an echo."""
    while True:
        hl = pp_len(rec.data)
        if hl is not None:
            break
        if not rec.recv(timeout=60):
            return
    rec.pp = hl
    pos = hl
    while True:
        while rec.data.find(b"\r\n\r\n", pos) < 0:
            if not rec.recv(timeout=60):
                return
        i = rec.data.find(b"\r\n\r\n", pos)
        head = bytes(rec.data[pos:i + 4])
        pos = i + 4
        if (header_value(head, "Upgrade") or "").lower() == "websocket":
            rec.send(resp_101(header_value(head, "Sec-WebSocket-Key") or "") + bytes(rec.data[pos:]))
            while True:
                d = rec.recv(timeout=60)
                if not d:
                    return
                rec.send(d)
        rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def proxy_protocol_out(t, version):
    be = t.raw_backend(pp_handle)
    px = t.proxy(config_text=conf([be], proxy_protocol=version))
    c = px.connect()
    for target in ("/one", "/two"):
        r = c.get(target)
        eq((r.status, r.body), (200, b"ok"), "response to %s" % target)
    wait_until(lambda: len(be.records) >= 2, 5, what="2 backend connections (have %d)" % len(be.records))
    hdr = pp_header(version, c.local_port, px.port)
    for rec, target in zip(be.records, ("/one", "/two")):
        data = bytes(rec.data)
        eq(data[:len(hdr)], hdr, "first bytes of the backend connection of %s" % target)
        rest = data[len(hdr):]
        want = b"GET %s HTTP/1.1\r\n" % target.encode()
        eq(rest[:len(want)], want, "request line after the PROXY header (%s)" % target)
        eq(rest.count(b"\r\n\r\n"), 1, "requests on the backend connection of %s (%r)" % (target, rest))
    eq(len(be.records), 2, "backend connections for 2 requests on one client connection (no reuse)")
    # not pooled: the proxy closes the first connection (it names one client)
    wait_until(lambda: be.records[0].eof, 5, what="the proxy closing the backend connection of /one")
    c.close()
    wait_until(lambda: be.records[1].eof, 5, what="the proxy closing the backend connection of /two")
    # a client from another loopback address: its address and port
    o = client_from(t, "127.0.0.7", px.port)
    r = o.get("/three")
    eq((r.status, r.body), (200, b"ok"), "response to /three from 127.0.0.7")
    eq(len(be.records), 3, "backend connections after the request from 127.0.0.7")
    hdr = pp_header(version, o.local_port, px.port, src="127.0.0.7")
    data = bytes(be.records[2].data)
    eq(data[:len(hdr)], hdr, "first bytes of the backend connection for the client at 127.0.0.7")
    eq(data[len(hdr):len(hdr) + 21], b"GET /three HTTP/1.1\r\n", "request line after the header (/three)")
    o.close()
    wait_until(lambda: be.records[2].eof, 5, what="the proxy closing the backend connection of /three")
    # a tunnel: the header precedes the upgrade request
    w = px.connect()
    key = ws_key()
    w.send(ws_request(key, target="/ws")[0])
    eq(read_101(w), relayed_101(key), "101 through a proxy_protocol upstream")
    msg = b"tunnel bytes after a PROXY header"
    w.send(msg)
    eq(client_recv_exact(w, len(msg)), msg, "echo on the tunnel")
    eq(len(be.records), 4, "backend connections after the upgrade")
    data = bytes(be.records[3].data)
    hdr = pp_header(version, w.local_port, px.port)
    eq(data[:len(hdr)], hdr, "first bytes of the tunnel's backend connection")
    want = b"GET /ws HTTP/1.1\r\n"
    eq(data[len(hdr):len(hdr) + len(want)], want, "upgrade request line after the PROXY header")
    eq(data[-len(msg):], msg, "tunnel bytes at the backend")
    w.close()
    wait_until(lambda: be.records[3].eof, 5, what="the tunnel's backend connection closed")


register("proxy_protocol_v1_out", lambda t: proxy_protocol_out(t, "v1"))
register("proxy_protocol_v2_out", lambda t: proxy_protocol_out(t, "v2"))


def proxy_protocol_after_failed_connect(t, version):
    """The first server refuses; the retry's connection to the second starts with the header."""
    be = t.raw_backend(pp_handle)
    px = t.proxy(config_text=conf(["127.0.0.1:%d" % t.dead_port(), be], proxy_protocol=version))
    for i in range(2):
        c = px.connect()
        r = c.get("/r%d" % i)
        eq((r.status, r.body), (200, b"ok"), "response %d (one of the two picks is the refusing server)" % i)
        wait_until(lambda: len(be.records) > i, 5, what="backend connection %d" % i)
        hdr = pp_header(version, c.local_port, px.port)
        data = bytes(be.records[i].data)
        eq(data[:len(hdr)], hdr, "first bytes of backend connection %d" % i)
        want = b"GET /r%d HTTP/1.1\r\n" % i
        eq(data[len(hdr):len(hdr) + len(want)], want, "request line after the header (%d)" % i)
        c.close()
    eq(len(be.records), 2, "backend connections")


register("proxy_protocol_v1_after_failed_connect", lambda t: proxy_protocol_after_failed_connect(t, "v1"))
register("proxy_protocol_v2_after_failed_connect", lambda t: proxy_protocol_after_failed_connect(t, "v2"))
