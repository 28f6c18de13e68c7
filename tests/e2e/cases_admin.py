"""The admin listener (issue 13): `admin = { address = ...; allow = [...]; }`
with GET /metrics (Prometheus text 0.0.4), /healthz, /tunnels, /servers and
POST /servers/drain|ready|maint.

/metrics is parsed by the real Prometheus text parser
(prometheus_client.parser from python3-prometheus-client, imported inside
the cases) and checked family by family (HELP, TYPE, label names, the exact
label values of the fixed sets) and value by value against the traffic each
case generates. Counters are read back by polling until they reach the exact
value (a worker thread adds, the admin reads whenever it is asked), never by
waiting a fixed time. Every admin answer is checked for its exact framing:
status line, Content-Type, Content-Length, Cache-Control: no-store, [Allow,]
Connection: close, then EOF.

The access check from a non-loopback address uses the machine's own
non-loopback addresses as the client's source (skipped when there is none;
tests/unit/check_admin.c covers admin_peer_allowed() itself).
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

from harness import REASONS, Raw, blob, case, eq, expect_proxy_error, make_config, wait_until
from reload_lib import NamedBackend, Reloader, hold_port, line_of
from term_lib import OP_BINARY, OP_CLOSE, RawWS, StreamBackend, close_payload
from wslib import (SelectorEchoBackend, UpgradeBackend, client_recv_exact, header_value, open_tunnels,
                   raise_nofile, read_101, relayed_101, resp_101, tcase, ws_accept, ws_key, ws_request)

KiB = 1 << 10

# (name without the switchyard_ prefix, type, label names) in exposition order
FAMILIES = [
    ("requests_total", "counter", ("route", "code")),
    ("upgrades_total", "counter", ("route", "result")),
    ("tunnels_open", "gauge", ("route",)),
    ("tunnel_bytes_total", "counter", ("route", "direction")),
    ("proxy_errors_total", "counter", ("code",)),
    ("tunnel_closes_total", "counter", ("cause",)),
    ("tunnel_duration_seconds", "histogram", ()),
    ("upstream_connect_seconds", "histogram", ()),
    ("upstream_response_seconds", "histogram", ()),
    ("server_up", "gauge", ("upstream", "server")),
    ("server_sessions_open", "gauge", ("upstream", "server")),
    ("server_tunnels_open", "gauge", ("upstream", "server")),
    ("health_checks_total", "counter", ("upstream", "server", "result")),
    ("server_admin_state", "gauge", ("upstream", "server", "state")),
    ("connections_open", "gauge", ()),
    ("connections_total", "counter", ()),
    ("h2_connections_open", "gauge", ()),
    ("h2_connections_total", "counter", ()),
    ("h2_streams_total", "counter", ()),
    ("h2_goaways_total", "counter", ("code",)),
    ("upstream_connections_total", "counter", ("kind",)),
    ("reloads_total", "counter", ("result",)),
    ("address_changes_total", "counter", ()),
    ("config_generation", "gauge", ()),
    ("workers", "gauge", ()),
    ("open_fds", "gauge", ()),
    ("max_fds", "gauge", ()),
    ("start_time_seconds", "gauge", ()),
    ("build_info", "gauge", ("version", "libevent", "openssl")),
]
CODES = ("1xx", "2xx", "3xx", "4xx", "5xx")
UPGRADE_RESULTS = ("forwarded", "refused_by_policy", "invalid_handshake", "backend_non_101", "invalid_101",
                   "terminated")
# the end causes (src/end.c labels), a stable promise of the exposition
END_CAUSES = ("client_eof", "backend_eof", "client_error", "backend_error", "idle_timeout", "lifetime_limit",
              "client_close", "client_eof_without_close", "client_connection_error", "backend_connection_error",
              "protocol_error", "ping_timeout", "shutdown", "route_removed", "server_down", "client_closed",
              "keepalive_timeout", "tls_handshake_failed", "tls_handshake_timeout", "send_timeout",
              "response_delivered", "linger_done", "backend_cut", "bad_response_body", "backend_failed",
              "backend_timeout",
              "bad_request_body", "client_cut", "internal")
LE = ("0.001", "0.005", "0.025", "0.1", "0.25", "1", "2.5", "10", "30", "60", "300", "900", "1800", "3600", "+Inf")
TEXT = "text/plain; charset=utf-8"
PROM = "text/plain; version=0.0.4; charset=utf-8"
TUNNEL_KEYS = {"id", "worker", "route", "upstream", "server", "client", "protocol", "mode", "age_ms", "idle_ms",
               "bytes_up", "bytes_down", "generation"}
SERVER_KEYS = ["upstream", "server", "state", "admin", "sessions", "tunnels", "checks_passed", "checks_failed",
               "check", "last_check"]


# ---------------------------------------------------------------------------
# the admin client


class AdminResponse:
    def __init__(self, status, reason, fields, body, raw):
        self.status, self.reason, self.fields, self.body, self.raw = status, reason, fields, body, raw

    def get(self, name):
        for k, v in self.fields:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return "<admin %d %r>" % (self.status, self.raw[:300])


def parse_admin_response(data, what, head_only=False):
    """Check the exact framing of one admin answer followed by EOF."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("%s: incomplete answer %r" % (what, data[:300]))
    lines = head.split(b"\r\n")
    m = re.fullmatch(rb"HTTP/1\.1 (\d{3}) (.*)", lines[0])
    if not m:
        raise AssertionError("%s: bad status line %r" % (what, lines[0]))
    status, reason = int(m.group(1)), m.group(2).decode("latin-1")
    fields = []
    for ln in lines[1:]:
        k, colon, v = ln.partition(b": ")
        if not colon:
            raise AssertionError("%s: bad field line %r" % (what, ln))
        fields.append((k.decode("latin-1"), v.decode("latin-1")))
    if status in REASONS:
        eq(reason, REASONS[status], "%s: reason phrase" % what)
    names = [k for k, _ in fields]
    want = ["Content-Type", "Content-Length", "Cache-Control"] + (["Allow"] if "Allow" in names else []) + \
        ["Connection"]
    eq(names, want, "%s: field names of the answer (%r)" % (what, head))
    r = AdminResponse(status, reason, fields, body, data)
    eq((r.get("Cache-Control"), r.get("Connection")), ("no-store", "close"), "%s: Cache-Control and Connection" % what)
    if head_only:
        eq(body, b"", "%s: bytes after the head of the answer to HEAD (RFC 9110 9.3.2: no content)" % what)
    else:
        eq(int(r.get("Content-Length")), len(body), "%s: Content-Length against the body before EOF" % what)
    return r


class Admin:
    """The admin listener of a proxy: TCP (host, port) or a Unix socket path."""

    def __init__(self, port=None, path=None, host="127.0.0.1"):
        self.port, self.path, self.host = port, path, host

    def _connect(self, source=None, host=None, timeout=10):
        if self.path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.path)
            return s
        host = host or self.host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((host, self.port))
        return s

    def raw(self, data, source=None, host=None, timeout=10, pieces=None):
        """Send data (or the byte strings of pieces, one send each); all bytes until EOF."""
        s = self._connect(source, host, timeout)
        try:
            for p in (pieces or [data]):
                s.sendall(p)
                if pieces:
                    time.sleep(0.02)
            out = bytearray()
            while True:
                try:
                    d = s.recv(65536)
                except socket.timeout:
                    raise AssertionError("admin: no EOF within %ss after %r (got %r)"
                                         % (timeout, data[:80] if data else pieces[0][:80], bytes(out[:300])))
                if not d:
                    return bytes(out)
                out += d
        finally:
            s.close()

    def call(self, method="GET", target="/metrics", source=None, host=None, timeout=10, headers=()):
        req = "%s %s HTTP/1.1\r\nHost: admin.test\r\n%s\r\n" % (
            method, target, "".join("%s: %s\r\n" % h for h in headers))
        data = self.raw(req.encode("latin-1"), source, host, timeout)
        return parse_admin_response(data, "%s %s" % (method, target), head_only=method == "HEAD")

    def text(self, method, target, status, body, allow=None, **kw):
        """Assert a text/plain answer: status, exact one-line body (without LF), Allow."""
        r = self.call(method, target, **kw)
        eq((r.status, r.get("Content-Type"), r.text), (status, TEXT, body + "\n"), "%s %s" % (method, target))
        eq(r.get("Allow"), allow, "%s %s: Allow" % (method, target))
        return r

    def json(self, target, **kw):
        r = self.call("GET", target, **kw)
        eq((r.status, r.get("Content-Type")), (200, "application/json"), "GET %s (%r)" % (target, r.body[:200]))
        if not r.body.endswith(b"\n"):
            raise AssertionError("GET %s: JSON body without a final LF: %r" % (target, r.body[-50:]))
        return json.loads(r.body)

    def tunnels(self, query="", **kw):
        got = self.json("/tunnels" + query, **kw)
        if not isinstance(got, list):
            raise AssertionError("/tunnels: not an array: %r" % got)
        for e in got:
            keys = set(e)
            want = TUNNEL_KEYS if e.get("mode") != "terminate" else TUNNEL_KEYS - {"idle_ms"}
            eq(keys, want, "keys of a /tunnels entry (%r)" % e)
        ids = [e["id"] for e in got]
        eq(len(set(ids)), len(ids), "distinct tunnel ids in /tunnels%s" % query)
        return got

    def servers(self):
        got = self.json("/servers")
        for e in got:
            eq(list(e), SERVER_KEYS, "keys of a /servers entry, in order (%r)" % e)
        return sorted(got, key=lambda e: (e["upstream"], e["server"]))

    def scrape(self, **kw):
        r = self.call("GET", "/metrics", **kw)
        eq((r.status, r.get("Content-Type")), (200, PROM), "GET /metrics status and Content-Type")
        return Metrics(r.text)

    def post_state(self, state, upstream, server, raw_query=None):
        q = raw_query if raw_query is not None else "upstream=%s&server=%s" % (upstream, server)
        return self.text("POST", "/servers/%s?%s" % (state, q), 200, "server %s of %s: %s" % (server, upstream, state))


class Metrics:
    """One /metrics scrape, parsed by prometheus_client's text parser."""

    def __init__(self, text):
        from prometheus_client.parser import text_string_to_metric_families  # python3-prometheus-client
        self.text = text
        self.families = {}
        self.samples = {}
        for f in text_string_to_metric_families(text):
            if f.name in self.families:
                raise AssertionError("family %s twice in the exposition" % f.name)
            self.families[f.name] = f
            for s in f.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in self.samples:
                    raise AssertionError("sample %s%r twice" % key)
                self.samples[key] = s.value
        check_families(self)

    def get(self, name, default=None, **labels):
        return self.samples.get(("switchyard_" + name, tuple(sorted(labels.items()))), default)

    def value(self, name, **labels):
        key = ("switchyard_" + name, tuple(sorted(labels.items())))
        if key not in self.samples:
            have = [k[1] for k in self.samples if k[0] == key[0]]
            raise AssertionError("no sample %s%r in the scrape; that name has %r" % (key[0], labels, have[:20]))
        return self.samples[key]

    def series(self, name):
        """{(sorted label items): value} of every sample called switchyard_<name>."""
        n = "switchyard_" + name
        return {k[1]: v for k, v in self.samples.items() if k[0] == n}


def parser_name(name, typ):
    """The family name prometheus_client gives a family (counters lose _total)."""
    full = "switchyard_" + name
    return full[:-6] if typ == "counter" and full.endswith("_total") else full


def check_families(m):
    """Every family of the issue, once, with HELP and TYPE lines right before
    its samples, the documented type and label names; fixed label sets exact;
    histograms with the documented buckets, cumulative, count = +Inf."""
    want = {parser_name(n, typ): (n, typ, labels) for n, typ, labels in FAMILIES}
    eq(sorted(m.families), sorted(want), "families in the exposition")
    for line in m.text.splitlines():
        if not line.startswith("#") and not line.startswith("switchyard_"):
            raise AssertionError("exposition line without the switchyard_ prefix: %r" % line)
    order = [ln.split()[2] for ln in m.text.splitlines() if ln.startswith("# TYPE ")]
    eq(order, ["switchyard_" + n for n, _, _ in FAMILIES], "families in exposition order (TYPE lines)")
    for pname, (name, typ, labels) in want.items():
        f = m.families[pname]
        eq(f.type, typ, "type of %s" % name)
        if not f.documentation.strip():
            raise AssertionError("family %s without HELP text" % name)
        full = "switchyard_" + name
        rx = re.compile(r"^# HELP %s \S[^\n]*\n# TYPE %s %s$" % (full, full, typ), re.M)
        eq(len(rx.findall(m.text)), 1, "HELP + TYPE lines of %s" % name)
        if not f.samples and name != "proxy_errors_total":  # that one: only codes seen
            raise AssertionError("family %s without samples" % name)
        for s in f.samples:
            got = tuple(k for k in s.labels if k != "le")
            if sorted(got) != sorted(labels):
                raise AssertionError("labels of %s: %r, want %r" % (s.name, s.labels, labels))
        if typ == "histogram":
            buckets = [s for s in f.samples if s.name == full + "_bucket"]
            eq(tuple(s.labels["le"] for s in buckets), LE, "buckets of %s" % name)
            vals = [s.value for s in buckets]
            eq(vals, sorted(vals), "%s buckets are cumulative" % name)
            eq(m.value(name + "_count"), vals[-1], "%s_count = the +Inf bucket" % name)
            if m.value(name + "_sum") < 0:
                raise AssertionError("%s_sum negative" % name)
    routes = {dict(k)["route"] for k in m.series("requests_total")}
    for r in routes:
        eq(sorted(dict(k)["code"] for k in m.series("requests_total") if dict(k)["route"] == r), sorted(CODES),
           "codes of requests_total for route %r" % r)
        eq(sorted(dict(k)["result"] for k in m.series("upgrades_total") if dict(k)["route"] == r),
           sorted(UPGRADE_RESULTS), "results of upgrades_total for route %r" % r)
        eq(sorted(dict(k)["direction"] for k in m.series("tunnel_bytes_total") if dict(k)["route"] == r),
           ["down", "up"], "directions of tunnel_bytes_total for route %r" % r)
    for fam in ("upgrades_total", "tunnels_open", "tunnel_bytes_total"):
        eq({dict(k)["route"] for k in m.series(fam)}, routes, "routes of %s and requests_total" % fam)
    eq(sorted(dict(k)["cause"] for k in m.series("tunnel_closes_total")), sorted(END_CAUSES),
       "causes of tunnel_closes_total")
    for k, v in m.series("proxy_errors_total").items():
        code = dict(k)["code"]
        if not re.fullmatch(r"[45]\d\d", code) or v <= 0:
            raise AssertionError("proxy_errors_total{code=%r} %r: only codes seen, 400..599" % (code, v))
    eq(sorted(dict(k)["kind"] for k in m.series("upstream_connections_total")), ["new", "reused"],
       "kinds of upstream_connections_total")
    eq(sorted(dict(k)["result"] for k in m.series("reloads_total")), ["failed", "ok"], "results of reloads_total")
    servers = {(dict(k)["upstream"], dict(k)["server"]) for k in m.series("server_up")}
    for fam in ("server_sessions_open", "server_tunnels_open"):
        eq({(dict(k)["upstream"], dict(k)["server"]) for k in m.series(fam)}, servers, "servers of %s" % fam)
    for up, srv in servers:
        eq(sorted(dict(k)["result"] for k in m.series("health_checks_total")
                  if (dict(k)["upstream"], dict(k)["server"]) == (up, srv)), ["fail", "pass"],
           "health_checks_total results of %s %s" % (up, srv))
        states = [(dict(k)["state"], v) for k, v in m.series("server_admin_state").items()
                  if (dict(k)["upstream"], dict(k)["server"]) == (up, srv)]
        if len(states) != 1 or states[0][0] not in ("ready", "drain", "maint") or states[0][1] != 1:
            raise AssertionError("server_admin_state of %s %s: %r (want one state at 1)" % (up, srv, states))
    eq(len(m.series("build_info")), 1, "build_info samples")


def expect_metrics(adm, want, timeout=5, what="metrics"):
    """Poll /metrics until every (name, labels dict, value) of want holds;
    returns the last scrape. The failure lists what differed."""
    last = {}

    def ok():
        m = adm.scrape()
        last["m"] = m
        bad = [(n, l, m.get(n, None, **l), v) for n, l, v in want if m.get(n, None, **l) != v]
        last["bad"] = bad
        return m if not bad else None

    try:
        return wait_until(ok, timeout, interval=0.05, what=what)
    except AssertionError:
        raise AssertionError("%s: after %ss these differ (name, labels, got, want): %r"
                             % (what, timeout, last.get("bad")))


def exact_series(m, name, want, what=None):
    """Every sample of name has the value of want ({label dict as tuple of items: value}, 0 when absent)."""
    got = m.series(name)
    wk = {tuple(sorted(k)): v for k, v in want.items()}
    for k in wk:
        if k not in got:
            raise AssertionError("%s: no sample %r" % (what or name, dict(k)))
    diff = {k: (v, wk.get(k, 0)) for k, v in got.items() if v != wk.get(k, 0)}
    if diff:
        raise AssertionError("%s: (got, want) differ: %r" % (what or name, {str(dict(k)): d for k, d in diff.items()}))


def conf(port, upstreams, **kw):
    """make_config whose listen port may be the "{port}" placeholder of t.proxy(config_text=...)."""
    text = make_config(0, upstreams, **kw)
    plain = 'listen = ( { address = "127.0.0.1:0"; } );'
    assert plain in text
    return text.replace(plain, plain.replace(":0", ":%s" % port))


def admin_block(port=None, path=None, allow=None, address=None):
    addr = address or ("unix:%s" % path if path else "127.0.0.1:%d" % port)
    text = 'admin = { address = "%s";' % addr
    if allow is not None:
        text += " allow = [ %s ];" % ", ".join('"%s"' % a for a in allow)
    return text + " };"


def admin_proxy(t, backend=None, allow=None, extra="", **kw):
    """t.proxy(...) with an admin listener on a free loopback port; (proxy, Admin)."""
    port = t.free_port()
    px = t.proxy(backend, extra=admin_block(port, allow=allow) + ("\n" + extra if extra else ""), **kw)
    px.wait_log(r"^\S+ info s=0 admin listening on 127\.0\.0\.1:%d$" % port)
    return px, Admin(port)


def open_ws(px, target="/ws"):
    """An upgrade through the proxy, its 101 checked byte for byte; the client."""
    key = ws_key()
    c = px.connect()
    c.send(ws_request(key, target=target)[0])
    eq(read_101(c), relayed_101(key), "101 relayed on %s" % target)
    return c


def echo(c, data, what="echo"):
    c.send(data)
    eq(client_recv_exact(c, len(data)), data, what)


def close_tunnel(c):
    c.sock.shutdown(socket.SHUT_WR)
    c.expect_closed(5)
    c.close()


def session_of(px, client, status=101):
    """The session id of the access line (status 101 by default) of a client connection."""
    want = "127.0.0.1:%d" % client.local_port
    lines = px.wait_access(1, lambda a: a.get("client") == want and a.get("status") == status
                           and a.get("event") is None)
    return lines[-1]


def local_addresses(family):
    """This machine's addresses of family other than loopback and link-local."""
    try:
        out = subprocess.run(["ip", "-o", "-4" if family == socket.AF_INET else "-6", "addr", "show",
                              "scope", "global"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    addrs = re.findall(r"\sinet6? ([0-9a-fA-F.:]+)/\d+", out)
    return [a for a in addrs if not a.startswith("127.") and a != "::1"]


def build_versions(t):
    """(version, libevent, openssl) as `switchyard -V` prints them."""
    out = t.run_binary(["-V"]).stdout.decode()
    m = re.match(r"switchyard (\S+)\nbuilt with: libevent ([^,]+), .*?(OpenSSL [^,\n]+)", out)
    if not m:
        raise AssertionError("unexpected -V output %r" % out)
    return m.groups()


def proxy_soft_nofile(px):
    with open("/proc/%d/limits" % px.pid) as f:
        for ln in f:
            if ln.startswith("Max open files"):
                return int(ln.split()[3])
    raise AssertionError("no 'Max open files' line")


# ---------------------------------------------------------------------------
# /metrics against traffic


@case(timeout=90)
def metrics_count_traffic(t):
    """/metrics from start (all zero) through N plain requests (pool: one
    new backend connection, then reused), two 404s with no route ("-"), a
    502 from a dead server, M forwarded WebSocket tunnels with K bytes each
    way, a 403 (route upgrade = "deny"), a 400 (invalid handshake), a
    backend's 200 to an upgrade, a bad 101 (502), a terminated WebSocket
    bridged to a TCP echo, and a route name with a quote, a backslash and a
    newline that the parser must give back exactly. Every series of the
    route families is checked exactly, the gauges while the tunnels are open
    and after they closed, the close causes, histograms and process gauges."""
    N, M, K, K2 = 5, 3, 10000, 3000
    ESC = 'a"b\\c\nd'
    t0 = int(time.time())
    version, libevent, openssl = build_versions(t)
    web = NamedBackend(t, "web")
    wsbe = UpgradeBackend(t)
    non101 = UpgradeBackend(t, answer=lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    bad101 = UpgradeBackend(t, answer=lambda head: resp_101(header_value(head, "Sec-WebSocket-Key") or "",
                                                             accept=ws_accept("not the key")))
    bridge = StreamBackend(t)
    dead = t.dead_port()
    ups = {"web": [web], "ws": [wsbe], "non101": [non101], "bad101": [bad101], "dead": [dead]}
    routes = [
        {"name": Raw('"a\\"b\\\\c\\nd"'), "path_prefix": "/esc", "upstream": "web"},
        {"name": "web", "path_prefix": "/web", "upstream": "web"},
        {"name": "ws", "path_prefix": "/ws", "upstream": "ws"},
        {"name": "deny", "path_prefix": "/deny", "upstream": "ws", "upgrade": "deny"},
        {"name": "non101", "path_prefix": "/non101", "upstream": "non101"},
        {"name": "bad101", "path_prefix": "/bad101", "upstream": "bad101"},
        {"name": "dead", "path_prefix": "/dead", "upstream": "dead"},
        {"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": bridge.bridge},
    ]
    px, adm = admin_proxy(t, upstreams=ups, routes=routes)
    route_names = [ESC, "web", "ws", "deny", "non101", "bad101", "dead", "term", "-"]
    servers = [("web", web.address), ("ws", wsbe.address), ("non101", non101.address), ("bad101", bad101.address),
               ("dead", "127.0.0.1:%d" % dead)]

    m = adm.scrape()
    eq(sorted({dict(k)["route"] for k in m.series("requests_total")}), sorted(route_names),
       "routes in requests_total at start (every configured route and \"-\")")
    for fam in ("requests_total", "upgrades_total", "tunnels_open", "tunnel_bytes_total", "tunnel_closes_total",
                "proxy_errors_total", "server_sessions_open", "server_tunnels_open", "health_checks_total",
                "upstream_connections_total", "reloads_total"):
        exact_series(m, fam, {}, "%s at start" % fam)
    eq(sorted((dict(k)["upstream"], dict(k)["server"]) for k in m.series("server_up")), sorted(servers),
       "servers in server_up")
    exact_series(m, "server_up", {(("upstream", u), ("server", s)): 1 for u, s in servers}, "server_up at start")
    exact_series(m, "server_admin_state",
                 {(("upstream", u), ("server", s), ("state", "ready")): 1 for u, s in servers}, "admin states")
    for h in ("tunnel_duration_seconds", "upstream_connect_seconds", "upstream_response_seconds"):
        eq(m.value(h + "_count"), 0, "%s_count at start" % h)
    eq([m.value(n) for n in ("connections_open", "connections_total", "address_changes_total",
                             "config_generation", "workers")], [0, 0, 0, 1, 1],
       "connections_open, connections_total, address_changes_total, config_generation, workers at start")
    eq(m.value("build_info", version=version, libevent=libevent, openssl=openssl), 1,
       "build_info (labels as -V prints them)")
    started = m.value("start_time_seconds")
    if not t0 - 1 <= started <= time.time() + 1:
        raise AssertionError("start_time_seconds %r not between %d and now" % (started, t0))
    eq(m.value("max_fds"), proxy_soft_nofile(px), "max_fds against the proxy's soft RLIMIT_NOFILE")

    conns = 0
    c = px.connect()
    conns += 1
    for i in range(N):
        r = c.get("/web/%d" % i)
        eq((r.status, r.body), (200, b"web"), "plain request %d" % i)
    esc = px.connect()
    conns += 1
    r = esc.get("/esc")
    eq((r.status, r.body), (200, b"web"), "request on the escaped route")
    esc.close()
    eq(px.wait_access(1, lambda a: a.get("target") == "/esc")[0]["route"], ESC, "route of /esc in the access log")
    for i in range(2):
        x = px.connect()
        conns += 1
        x.request("GET", "/nowhere/%d" % i)
        eq(expect_proxy_error(x, 404), "no route for this host and path", "404 %d" % i)
    x = px.connect()
    conns += 1
    x.request("GET", "/dead")
    expect_proxy_error(x, 502)
    tuns = []
    for i in range(M):
        w = open_ws(px, "/ws/%d" % i)
        conns += 1
        echo(w, blob(K, i), "K bytes through tunnel %d" % i)
        tuns.append(w)
    x = px.connect()
    conns += 1
    x.send(ws_request(False, target="/ws/bad")[0])
    eq(expect_proxy_error(x, 400), "bad Sec-WebSocket-Key", "invalid handshake")
    x = px.connect()
    conns += 1
    x.send(ws_request(ws_key(), target="/deny")[0])
    eq(expect_proxy_error(x, 403), "upgrade denied by route", "upgrade on the deny route")
    x = px.connect()
    conns += 1
    x.send(ws_request(ws_key(), target="/non101")[0])
    r = x.read_response()
    eq((r.status, r.body), (200, b"no"), "the backend's 200 to an upgrade, relayed")
    x.close()
    x = px.connect()
    conns += 1
    x.send(ws_request(ws_key(), target="/bad101")[0])
    expect_proxy_error(x, 502)
    ws, _ = RawWS.open(t, px, target="/term")
    conns += 1
    ws.send_frame(OP_BINARY, blob(K2, 99))
    eq(ws.recv_data(K2), blob(K2, 99), "echo through the terminated WebSocket")

    # the tunnels are open: gauges
    expect_metrics(adm, [("tunnels_open", {"route": "ws"}, M), ("tunnels_open", {"route": "term"}, 1),
                         ("server_tunnels_open", {"upstream": "ws", "server": wsbe.address}, M),
                         ("server_sessions_open", {"upstream": "ws", "server": wsbe.address}, M),
                         ("connections_open", {}, M + 2)], what="gauges with the tunnels open")
    m = adm.scrape()
    exact_series(m, "tunnels_open", {(("route", "ws"),): M, (("route", "term"),): 1}, "tunnels_open while open")
    exact_series(m, "server_tunnels_open", {(("upstream", "ws"), ("server", wsbe.address)): M},
                 "server_tunnels_open while open")

    for w in tuns:
        close_tunnel(w)
    ws.send_frame(OP_CLOSE, close_payload(1000))
    ws.expect_close(1000)
    ws.close()
    c.close()
    wl = px.wait_access(1, lambda a: a.get("event") == "websocket")[0]
    tl = px.wait_access(M, lambda a: a.get("event") == "tunnel")
    eq(sorted((a["route"], a["reason"], a["bytes_up"], a["bytes_down"]) for a in tl),
       [("ws", "client EOF", K, K)] * M, "tunnel access lines")
    dead_attempts = len(re.findall(r"connect to 127\.0\.0\.1:%d failed" % dead, px.log()))
    fresh = 1 + M + 2  # web once, each tunnel, non101, bad101 (connected)
    if wl.get("cause") not in END_CAUSES:
        raise AssertionError("cause of the websocket access line %r not a tunnel_closes_total label" % wl)
    eq({a["cause"] for a in tl}, {"client_eof"}, "cause of the tunnel access lines")
    closes = {(("cause", "client_eof"),): M}
    closes[(("cause", wl["cause"]),)] = closes.get((("cause", wl["cause"]),), 0) + 1
    m = expect_metrics(adm, [("tunnel_closes_total", {"cause": "client_eof"}, M),
                             ("tunnel_duration_seconds_count", {}, M + 1), ("connections_open", {}, 0),
                             ("tunnels_open", {"route": "ws"}, 0), ("tunnels_open", {"route": "term"}, 0)],
                       what="counters after every tunnel closed")
    exact_series(m, "requests_total", {
        (("route", ESC), ("code", "2xx")): 1, (("route", "web"), ("code", "2xx")): N,
        (("route", "-"), ("code", "4xx")): 2, (("route", "dead"), ("code", "5xx")): 1,
        (("route", "ws"), ("code", "1xx")): M, (("route", "ws"), ("code", "4xx")): 1,
        (("route", "deny"), ("code", "4xx")): 1, (("route", "non101"), ("code", "2xx")): 1,
        (("route", "bad101"), ("code", "5xx")): 1, (("route", "term"), ("code", "1xx")): 1})
    exact_series(m, "upgrades_total", {
        (("route", "ws"), ("result", "forwarded")): M, (("route", "ws"), ("result", "invalid_handshake")): 1,
        (("route", "deny"), ("result", "refused_by_policy")): 1,
        (("route", "non101"), ("result", "backend_non_101")): 1,
        (("route", "bad101"), ("result", "invalid_101")): 1, (("route", "term"), ("result", "terminated")): 1})
    exact_series(m, "proxy_errors_total", {(("code", "404"),): 2, (("code", "400"),): 1, (("code", "403"),): 1,
                                           (("code", "502"),): 2})
    exact_series(m, "tunnels_open", {})
    exact_series(m, "tunnel_bytes_total", {
        (("route", "ws"), ("direction", "up")): M * K, (("route", "ws"), ("direction", "down")): M * K,
        (("route", "term"), ("direction", "up")): wl["bytes_up"],
        (("route", "term"), ("direction", "down")): wl["bytes_down"]})
    if wl["bytes_up"] < K2 or wl["bytes_down"] < K2:
        raise AssertionError("terminated WebSocket moved fewer than %d bytes each way: %r" % (K2, wl))
    exact_series(m, "tunnel_closes_total", closes)
    exact_series(m, "server_sessions_open", {})
    exact_series(m, "server_tunnels_open", {})
    exact_series(m, "upstream_connections_total", {(("kind", "reused"),): N - 1 + 1,
                                                   (("kind", "new"),): fresh + dead_attempts})
    eq((m.value("tunnel_duration_seconds_count"), m.value("upstream_connect_seconds_count"),
        m.value("upstream_response_seconds_count")), (M + 1, fresh, N + 1 + M + 2),
       "observations of tunnel_duration (every tunnel), upstream_connect (connected new connections), "
       "upstream_response (every backend answer head)")
    eq((m.value("connections_total"), m.value("connections_open")), (conns, 0), "client connections")
    exact_series(m, "reloads_total", {})
    eq(m.value("config_generation"), 1, "config_generation")
    if 'route="a\\"b\\\\c\\nd"' not in m.text:
        raise AssertionError("the route label is not escaped as the format says: %r"
                             % [ln for ln in m.text.splitlines() if "requests_total{route=\"a" in ln])
    # open_fds: the proxy's descriptors while the scrape's own connection is open
    def fds_agree():
        before = px.fd_count()
        v = adm.scrape().value("open_fds")
        return v == before + 1 and px.fd_count() == before
    wait_until(fds_agree, 5, what="open_fds = the proxy's descriptors + the scrape's connection")


@case(timeout=60)
def metrics_survive_reloads(t):
    """Counters run on across SIGHUP: an ok reload counts reloads_total{ok},
    config_generation becomes 2, requests_total keeps its values (a route
    the reload removed keeps its last ones, a new route starts at 0, a
    tunnel opened before the reload is counted when it closes after it); a
    config error and a listener that cannot be bound each count
    reloads_total{failed} and change nothing else."""
    web = NamedBackend(t, "web")
    wsbe = UpgradeBackend(t)
    port = t.free_port()
    held = hold_port()
    t.held.append(held)

    def text(p, routes, more_listen=False):
        txt = conf(p, {"web": [web], "ws": [wsbe]}, routes=routes, extra=admin_block(port))
        if more_listen:
            txt = txt.replace('listen = ( { address = "127.0.0.1:%d"; } );' % p,
                              'listen = ( { address = "127.0.0.1:%d"; }, { address = "127.0.0.1:%d"; } );'
                              % (p, held.getsockname()[1]))
        return txt

    r_web = {"name": "web", "path_prefix": "/web", "upstream": "web"}
    r_gone = {"name": "gone", "path_prefix": "/gone", "upstream": "web"}
    r_new = {"name": "new", "path_prefix": "/new", "upstream": "web"}
    r_ws = {"name": "ws", "path_prefix": "/ws", "upstream": "ws"}
    r_wsgone = {"name": "wsgone", "path_prefix": "/tmp-ws", "upstream": "ws", "on_remove": "close"}
    px = t.proxy(config_text=text("{port}", [r_web, r_gone, r_ws, r_wsgone]))
    adm = Admin(port)
    rl = Reloader(px)

    def ask(target, n):
        for i in range(n):
            c = px.connect()
            r = c.get("%s/%d" % (target, i))
            eq((r.status, r.body), (200, b"web"), "GET %s/%d" % (target, i))
            c.close()

    ask("/web", 3)
    ask("/gone", 2)
    tun = open_ws(px)
    echo(tun, b"x" * 100, "tunnel before the reload")
    doomed = open_ws(px, "/tmp-ws")
    echo(doomed, b"z" * 10, "tunnel on the route the reload removes")
    expect_metrics(adm, [("requests_total", {"route": "web", "code": "2xx"}, 3),
                         ("requests_total", {"route": "gone", "code": "2xx"}, 2),
                         ("requests_total", {"route": "ws", "code": "1xx"}, 1),
                         ("tunnels_open", {"route": "ws"}, 1), ("tunnels_open", {"route": "wsgone"}, 1)],
                   what="before the reload")
    before = adm.scrape()
    eq((before.value("reloads_total", result="ok"), before.value("reloads_total", result="failed"),
        before.value("config_generation")), (0, 0, 1), "reloads and generation before")

    rl.ok(text(px.port, [r_web, r_new, r_ws]))
    doomed.expect_closed(5)
    eq([(a["route"], a["cause"]) for a in px.wait_access(1, lambda a: a.get("event") == "tunnel")],
       [("wsgone", "route_removed")], "tunnel line of the removed route")
    expect_metrics(adm, [("tunnel_closes_total", {"cause": "route_removed"}, 1),
                         ("tunnels_open", {"route": "wsgone"}, 0),
                         ("tunnel_bytes_total", {"route": "wsgone", "direction": "up"}, 10)],
                   what="the tunnel of the removed route counted")
    m = adm.scrape()
    eq((m.value("reloads_total", result="ok"), m.value("reloads_total", result="failed"),
        m.value("config_generation"), m.value("address_changes_total")), (1, 0, 2, 0),
       "reloads ok/failed, generation, address changes after an ok reload")
    eq((m.value("requests_total", route="web", code="2xx"), m.value("requests_total", route="gone", code="2xx"),
        m.value("requests_total", route="new", code="2xx"), m.value("tunnels_open", route="ws")), (3, 2, 0, 1),
       "web, gone (removed by the reload), new, open tunnels after the reload")
    eq(m.value("connections_total"), before.value("connections_total"), "connections_total across the reload")
    ask("/web", 2)
    ask("/new", 1)
    echo(tun, b"y" * 50, "tunnel after the reload")
    close_tunnel(tun)
    m = expect_metrics(adm, [("requests_total", {"route": "web", "code": "2xx"}, 5),
                             ("requests_total", {"route": "new", "code": "2xx"}, 1),
                             ("tunnels_open", {"route": "ws"}, 0),
                             ("tunnel_bytes_total", {"route": "ws", "direction": "up"}, 150),
                             ("tunnel_bytes_total", {"route": "ws", "direction": "down"}, 150),
                             ("tunnel_closes_total", {"cause": "client_eof"}, 1)], what="after more traffic")
    eq(m.value("requests_total", route="gone", code="2xx"), 2, "the removed route keeps its count")
    snapshot = {k: v for k, v in m.samples.items() if "requests_total" in k[0] or "tunnel_" in k[0]}

    rl.fail("this is { not a config")
    m = adm.scrape()
    eq((m.value("reloads_total", result="ok"), m.value("reloads_total", result="failed"),
        m.value("config_generation")), (1, 1, 2), "after a config error")
    rl.fail(text(px.port, [r_web, r_new, r_ws], more_listen=True))
    m = adm.scrape()
    eq((m.value("reloads_total", result="ok"), m.value("reloads_total", result="failed"),
        m.value("config_generation")), (1, 2, 2), "after a reload whose listener cannot be bound")
    eq({k: v for k, v in m.samples.items() if "requests_total" in k[0] or "tunnel_" in k[0]}, snapshot,
       "request and tunnel series across the failed reloads")
    rl.ok(text(px.port, [r_web, r_ws]))
    m = adm.scrape()
    eq((m.value("reloads_total", result="ok"), m.value("reloads_total", result="failed"),
        m.value("config_generation")), (2, 2, 3), "after another ok reload")
    eq((m.value("requests_total", route="new", code="2xx"), m.value("requests_total", route="web", code="2xx")),
       (1, 5), "counts of routes after the second reload")


# ---------------------------------------------------------------------------
# /healthz


@case(timeout=40)
def healthz_stopping_during_grace(t):
    """/healthz answers 200 ok; after SIGTERM, while an open tunnel keeps
    the process in its shutdown_grace (3 s), 503 stopping (and /metrics
    still answers, showing the tunnel); the tunnel closing ends the
    process with status 0."""
    be = UpgradeBackend(t)
    px, adm = admin_proxy(t, be, timeouts={"shutdown_grace": "3s"})
    adm.text("GET", "/healthz", 200, "ok")
    adm.text("GET", "/healthz?probe=1", 200, "ok")
    adm.text("POST", "/healthz", 405, "use GET", allow="GET")
    tun = open_ws(px)
    echo(tun, b"before", "tunnel before SIGTERM")
    px.proc.send_signal(signal.SIGTERM)
    px.wait_log(r"^\S+ info s=0 stopping: 1 open connections$")
    adm.text("GET", "/healthz", 503, "stopping")
    echo(tun, b"during the grace", "tunnel during the grace")
    if not px.alive():
        raise AssertionError("the proxy exited during the grace with a tunnel open")
    m = adm.scrape()
    eq((m.value("tunnels_open", route="all"), m.value("connections_open")), (1, 1), "gauges during the grace")
    adm.text("GET", "/healthz", 503, "stopping")
    close_tunnel(tun)
    px.stop(sig=None, timeout=5)


# ---------------------------------------------------------------------------
# /tunnels


@tcase(timeout=60)
def tunnels_listing(t, mode):
    """/tunnels lists exactly the open tunnels (4 + 2 forwarded WebSockets on
    two routes and three servers, one non-WebSocket protocol, one
    terminated): ids are the access log's sessions, every field checked
    (client, protocol, mode, bytes after known amounts, idle and age
    plausible, generation, upstream null for the terminated one, JSON
    escaping of a route name with a quote and a backslash); filters route=,
    server= (also percent-encoded), both, limit= (and bad values: 400); a
    closed tunnel leaves the list; a tunnel opened after a reload shows
    generation 2."""
    A1, A2, B = NamedBackend(t, "A1"), NamedBackend(t, "A2"), NamedBackend(t, "B")
    foo = UpgradeBackend(t, answer=lambda head: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/1\r\n"
                                                 b"Connection: Upgrade\r\n\r\n")
    bridge = StreamBackend(t)
    RB = 'b"q\\'
    routes = [{"name": "ra", "path_prefix": "/ra", "upstream": "a"},
              {"name": RB, "path_prefix": "/rb", "upstream": "b"},
              {"name": "rfoo", "path_prefix": "/foo", "upstream": "foo", "protocols": ["*"]},
              {"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": bridge.bridge}]
    ups = {"a": [A1, A2], "b": [B], "foo": [foo]}
    port = t.free_port()

    def text(p):
        return conf(p, ups, routes=routes,
                           extra=admin_block(port) + '\ntunnel = { mode = "%s"; };' % mode)

    px = t.proxy(config_text=text("{port}"))
    adm = Admin(port)
    eq(adm.tunnels(), [], "/tunnels with nothing open")
    opened = []  # (client, route, upstream, server, protocol, bytes each way, time before the request)
    for i in range(4):
        at = time.monotonic()
        opened.append([open_ws(px, "/ra/%d" % i), "ra", "a", None, "websocket", 0, at])
    for i in range(2):
        at = time.monotonic()
        opened.append([open_ws(px, "/rb/%d" % i), RB, "b", B.address, "websocket", 0, at])
    at = time.monotonic()
    c = px.connect()
    c.send(ws_request(lines=[b"Connection: Upgrade", b"Upgrade: foo/1"], target="/foo")[0])
    if not read_101(c).startswith(b"HTTP/1.1 101 "):
        raise AssertionError("no 101 for the foo/1 upgrade")
    opened.append([c, "rfoo", "foo", foo.address, "foo/1", 0, at])
    at = time.monotonic()
    ws, _ = RawWS.open(t, px, target="/term")
    opened.append([ws.c, "term", None, bridge.server, "websocket", None, at])
    for i, o in enumerate(opened[:-1]):
        data = blob(100 * i + 7, i)
        echo(o[0], data, "bytes through tunnel %d" % i)
        o[5] = len(data)
        o[3] = o[3] or px.wait_access(1, lambda a, c=o[0]: a.get("client") == "127.0.0.1:%d" % c.local_port
                                      and a.get("status") == 101)[0]["server"]
    ws.send_frame(OP_BINARY, b"t" * 500)
    eq(ws.recv_data(500), b"t" * 500, "terminated echo")
    eq(sorted(o[3] for o in opened[:4]), sorted([A1.address, A2.address] * 2), "servers of the ra tunnels")
    time.sleep(0.3)  # every tunnel idle for a moment
    got = adm.tunnels()
    after = time.monotonic()
    eq(len(got), len(opened), "tunnels listed (%r)" % got)
    by_client = {e["client"]: e for e in got}
    for i, (c, route, upstream, server, proto, nbytes, at) in enumerate(opened):
        addr = "127.0.0.1:%d" % c.local_port
        if addr not in by_client:
            raise AssertionError("tunnel %d (client %s) not listed: %r" % (i, addr, got))
        e = by_client[addr]
        sess = session_of(px, c)
        term = route == "term"
        want = {"id": sess["session"], "worker": 0, "route": route, "upstream": upstream, "server": server,
                "client": addr, "protocol": proto, "mode": "terminate" if term else mode, "generation": 1}
        eq({k: e[k] for k in want}, want, "fields of tunnel %d" % i)
        if not term:
            eq((e["bytes_up"], e["bytes_down"]), (nbytes, nbytes), "bytes of tunnel %d" % i)
            if not 250 <= e["idle_ms"] <= e["age_ms"]:
                raise AssertionError("tunnel %d: idle_ms %r after 0.3 s without traffic, age_ms %r"
                                     % (i, e["idle_ms"], e["age_ms"]))
        else:
            eq(sess["server"], bridge.server, "server of the terminated WebSocket in the access log")
            if e["bytes_up"] < 500 or e["bytes_down"] < 500:
                raise AssertionError("terminated tunnel bytes %r" % e)
        if not 300 <= e["age_ms"] <= (after - at) * 1000 + 1:
            raise AssertionError("tunnel %d: age_ms %r; its request went %.3f s before the answer, and it has "
                                 "been open for at least the 0.3 s of quiet" % (i, e["age_ms"], after - at))
    ids = {by_client["127.0.0.1:%d" % o[0].local_port]["id"]: o for o in opened}

    def listed(query):
        return sorted(e["id"] for e in adm.tunnels(query))

    def ids_where(pred):
        return sorted(i for i, o in ids.items() if pred(o))

    eq(listed("?route=ra"), ids_where(lambda o: o[1] == "ra"), "route=ra")
    eq(listed("?route=b%22q%5C"), ids_where(lambda o: o[1] == RB), "route=b\"q\\ percent-encoded")
    eq(listed("?route=term"), ids_where(lambda o: o[1] == "term"), "route=term")
    eq(listed("?route=nope"), [], "route=nope")
    eq(listed("?server=%s" % A1.address), ids_where(lambda o: o[3] == A1.address), "server=A1")
    eq(listed("?server=127.0.0.1%%3A%d" % A2.port), ids_where(lambda o: o[3] == A2.address), "server=A2 encoded")
    eq(listed("?server=%s" % bridge.server), ids_where(lambda o: o[1] == "term"), "server=the bridge")
    eq(listed("?route=ra&server=%s" % A2.address), ids_where(lambda o: o[3] == A2.address), "route and server")
    eq(listed("?route=%s&server=%s" % ("rfoo", A2.address)), [], "route and a server of another route")
    part = listed("?limit=3")
    eq(len(part), 3, "limit=3 (%r)" % part)
    if not set(part) <= set(ids):
        raise AssertionError("limit=3 listed unknown ids %r" % part)
    eq(listed("?limit=0"), [], "limit=0")
    eq(listed("?limit=100&route=ra"), ids_where(lambda o: o[1] == "ra"), "limit=100 with route=ra")
    for bad in ("limit=abc", "limit=", "limit=5x", "limit=1e3", "limit=-1", "route=%zz",
                "server=%4"):
        adm.text("GET", "/tunnels?%s" % bad, 400, "bad route=, server= or limit= (limit: a number)")
    adm.text("POST", "/tunnels", 405, "use GET", allow="GET")

    # close one: it leaves the list
    close_tunnel(opened[0][0])
    gone = by_client["127.0.0.1:%d" % opened[0][0].local_port]["id"]
    wait_until(lambda: gone not in listed(""), 5, what="the closed tunnel to leave /tunnels")
    eq(listed(""), sorted(set(ids) - {gone}), "ids after one closed")

    # a reload: a new tunnel has generation 2, the old ones keep 1
    Reloader(px).ok(text(px.port))
    c = open_ws(px, "/rb/new")
    new = session_of(px, c)["session"]
    gens = {e["id"]: e["generation"] for e in adm.tunnels()}
    eq(gens.pop(new), 2, "generation of the tunnel opened after the reload")
    eq(set(gens.values()), {1}, "generations of the tunnels from before the reload")
    close_tunnel(c)
    for o in opened[1:-1]:
        close_tunnel(o[0])
    ws.send_frame(OP_CLOSE, close_payload(1000))
    ws.expect_close(1000)
    wait_until(lambda: adm.tunnels() == [], 5, what="an empty /tunnels once every tunnel closed")


@case(timeout=60)
def tunnels_two_workers(t):
    """workers = 2: /tunnels asks both workers; every open tunnel is listed
    once, with the worker the access log names and its byte counts; limit
    applies per worker."""
    be = SelectorEchoBackend()
    t.backends.append(be)
    px, adm = admin_proxy(t, be, workers=2)
    M = 24
    clients = [open_ws(px, "/ws/%d" % i) for i in range(M)]
    sent = {}
    for i, c in enumerate(clients):
        data = blob(10 * i + 1, i)
        echo(c, data, "tunnel %d" % i)
        sent[c.local_port] = len(data)
    lines = {a["client"]: a for a in px.wait_access(M, lambda a: a.get("status") == 101)}
    per = {0: 0, 1: 0}
    for a in lines.values():
        per[a["worker"]] += 1
    if min(per.values()) == 0:
        raise AssertionError("all %d tunnels on one worker (%r): SO_REUSEPORT spread nothing" % (M, per))
    got = adm.tunnels()
    eq(len(got), M, "tunnels listed with two workers")
    for e in got:
        a = lines.get(e["client"])
        if a is None:
            raise AssertionError("listed tunnel %r is not one of ours" % e)
        port = int(e["client"].rsplit(":", 1)[1])
        eq((e["id"], e["worker"], e["bytes_up"], e["bytes_down"]),
           (a["session"], a["worker"], sent[port], sent[port]), "tunnel of client %s" % e["client"])
    eq(len(adm.tunnels("?limit=5")), min(5, per[0]) + min(5, per[1]), "limit=5 per worker (per worker %r)" % per)
    for c in clients:
        close_tunnel(c)
    wait_until(lambda: adm.tunnels() == [], 5, what="an empty /tunnels")


@case(timeout=60)
def tunnels_query_abandoned(t):
    """workers = 2 with 100 tunnels: 40 /tunnels requests whose client goes
    away at once (FIN or reset) while the workers are being asked; the
    admin and the workers carry on, a full /tunnels still lists all 100,
    and no descriptor is left behind."""
    be = SelectorEchoBackend()
    t.backends.append(be)
    px, adm = admin_proxy(t, be, workers=2)
    socks = []
    try:
        open_tunnels(px.port, 100, "abandon", socks)
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", adm.port), timeout=5)
            s.sendall(b"GET /tunnels HTTP/1.1\r\nHost: a\r\n\r\n")
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        eq(len(adm.tunnels()), 100, "tunnels listed after the abandoned requests")
        adm.text("GET", "/healthz", 200, "ok")
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: adm.tunnels() == [], 10, what="an empty /tunnels")


@case(timeout=40)
def tunnels_during_shutdown_two_workers(t):
    """workers = 2, SIGTERM with tunnels open on worker 0 only: worker 1
    has nothing to finish and ends at once, worker 0 runs its grace.
    /healthz says 503 stopping and /tunnels must still answer with the
    tunnels that keep the process alive (the operator's question during a
    drain), not hang on the worker that has already gone."""
    be = SelectorEchoBackend()
    t.backends.append(be)
    px, adm = admin_proxy(t, be, workers=2, timeouts={"shutdown_grace": "5s"})
    keep, rest = [], []
    for i in range(40):
        c = open_ws(px, "/ws/%d" % i)
        (keep if session_of(px, c)["worker"] == 0 else rest).append(c)
        if len(keep) >= 2 and rest:
            break
    if len(keep) < 2 or not rest:
        raise AssertionError("tunnels did not spread over both workers (%d on 0, %d on 1)" % (len(keep), len(rest)))
    for c in rest:
        close_tunnel(c)
    wait_until(lambda: len(adm.tunnels()) == len(keep), 5, what="only worker 0's tunnels left")
    px.proc.send_signal(signal.SIGTERM)
    px.wait_log(r"^\S+ info s=0 worker 1 stopping: 0 open connections$")
    adm.text("GET", "/healthz", 503, "stopping")
    try:
        got = adm.tunnels(timeout=3)
        eq(sorted(e["client"] for e in got), sorted("127.0.0.1:%d" % c.local_port for c in keep),
           "tunnels listed during the grace")
    finally:
        for c in keep:
            close_tunnel(c)
        px.stop(sig=None, timeout=8)


# ---------------------------------------------------------------------------
# /servers and the operator's states


@case(timeout=60)
def servers_drain_maint_ready(t):
    """/servers lists every server; POST drain keeps the open tunnel of a
    server and sends new requests to the other; maint closes that tunnel
    (reason "server down", tunnel_closes_total{cause="server_down"}); ready
    brings it back; with every server drained requests get 503; the state
    is kept across a reload (a new server starts ready). Each change logs
    "server S of app set to X (was Y)" once (a repeated POST logs nothing)."""
    A, B, C, D = (NamedBackend(t, n) for n in "ABCD")
    port = t.free_port()

    def text(p, app):
        return conf(p, {"app": app, "other": [C]}, routes=[
            {"name": "other", "path_prefix": "/other", "upstream": "other"},
            {"name": "all", "upstream": "app"}], extra=admin_block(port))

    px = t.proxy(config_text=text("{port}", [A, B]))
    adm = Admin(port)

    def entry(up, be, admin="ready", sessions=0, tunnels=0):
        return {"upstream": up, "server": be.address, "state": "up", "admin": admin, "sessions": sessions,
                "tunnels": tunnels, "checks_passed": 0, "checks_failed": 0, "check": None, "last_check": None}

    def servers_want(*entries):
        return sorted(entries, key=lambda e: (e["upstream"], e["server"]))

    eq(adm.servers(), servers_want(entry("app", A), entry("app", B), entry("other", C)), "/servers at start")

    def ask(n):
        out = []
        for _ in range(n):
            c = px.connect()
            r = c.get("/x")
            c.close()
            if r.status != 200:
                raise AssertionError("request: %d %r" % (r.status, r.body))
            out.append(r.body.decode())
        return out

    tun = open_ws(px)
    X = A if A.tunnels() else B
    wait_until(lambda: X.tunnels(), 5, what="the tunnel at its backend")
    Y = B if X is A else A
    wait_until(lambda: adm.servers() == servers_want(entry("app", X, sessions=1, tunnels=1), entry("app", Y),
                                                      entry("other", C)), 5, what="/servers with the tunnel open")

    def state_lines():
        return re.findall(r"^\S+ info s=0 server (\S+) of (\S+) set to (\w+) \(was (\w+)\)$", px.log(), re.M)

    adm.post_state("drain", "app", X.address, raw_query="upstream=%%61pp&server=127.0.0.1%%3A%d" % X.port)
    eq(state_lines(), [(X.address, "app", "drain", "ready")], "log lines after drain")
    adm.post_state("drain", "app", X.address)
    eq(len(state_lines()), 1, "a repeated drain logs nothing")
    echo(tun, b"still here", "tunnel of the drained server")
    eq(ask(6), [Y.name] * 6, "servers of 6 requests with %s drained" % X.name)
    eq(adm.servers(), servers_want(entry("app", X, "drain", 1, 1), entry("app", Y), entry("other", C)),
       "/servers with X drained")
    m = adm.scrape()
    exact_series(m, "server_admin_state", {
        (("upstream", "app"), ("server", X.address), ("state", "drain")): 1,
        (("upstream", "app"), ("server", Y.address), ("state", "ready")): 1,
        (("upstream", "other"), ("server", C.address), ("state", "ready")): 1}, "server_admin_state with X drained")

    adm.post_state("maint", "app", X.address)
    tun.expect_closed(5)
    tl = px.wait_access(1, lambda a: a.get("event") == "tunnel")[0]
    eq((tl["server"], tl["closed_by"], tl["reason"], tl["cause"]), (X.address, "proxy", "server down", "server_down"),
       "tunnel line of maint")
    expect_metrics(adm, [("tunnel_closes_total", {"cause": "server_down"}, 1),
                         ("server_tunnels_open", {"upstream": "app", "server": X.address}, 0),
                         ("server_admin_state", {"upstream": "app", "server": X.address, "state": "maint"}, 1)],
                   what="metrics after maint")
    eq(state_lines()[1:], [(X.address, "app", "maint", "drain")], "log line of maint")
    eq(ask(3), [Y.name] * 3, "requests while X is in maint")
    adm.post_state("ready", "app", X.address)
    eq(state_lines()[2:], [(X.address, "app", "ready", "maint")], "log line of ready")
    eq(sorted(ask(4)), sorted([X.name, Y.name] * 2), "requests once X is ready again")
    tun2 = open_ws(px)
    close_tunnel(tun2)

    # every server of app drained: 503; the other upstream unaffected
    adm.post_state("drain", "app", X.address)
    adm.post_state("drain", "app", Y.address)
    c = px.connect()
    c.request("GET", "/x")
    eq(expect_proxy_error(c, 503), "no server of upstream 'app' is up", "every server drained")
    c = px.connect()
    eq(c.get("/other").body, b"C", "the other upstream")
    c.close()

    # a reload keeps the states of the servers that stay; a new one is ready
    adm.post_state("ready", "app", Y.address)
    Reloader(px).ok(text(px.port, [A, B, D]))
    eq(adm.servers(), servers_want(entry("app", X, "drain"), entry("app", Y), entry("app", D),
                                   entry("other", C)), "/servers after the reload")
    eq(sorted(ask(4)), sorted([Y.name, D.name] * 2), "requests after the reload (X still drained)")
    adm.post_state("ready", "app", X.address)
    eq(sorted(ask(3)), sorted([X.name, Y.name, D.name]), "requests with every server ready")


@case(timeout=30)
def servers_post_errors(t):
    """Unknown server or upstream: 404 naming them; a missing or
    undecodable parameter: 400; GET on a state change: 405 Allow: POST;
    POST on the GET resources: 405 Allow: GET; unknown paths: 404. None of
    them changes a state."""
    A, C = NamedBackend(t, "A"), NamedBackend(t, "C")
    px, adm = admin_proxy(t, upstreams={"app": [A], "other": [C]})
    adm.text("POST", "/servers/drain?upstream=app&server=127.0.0.1:1", 404, "no server 127.0.0.1:1 in upstream 'app'")
    adm.text("POST", "/servers/drain?upstream=app&server=%s" % C.address, 404,
             "no server %s in upstream 'app'" % C.address)
    adm.text("POST", "/servers/maint?upstream=nope&server=%s" % A.address, 404,
             "no server %s in upstream 'nope'" % A.address)
    for q in ("", "?upstream=app", "?server=%s" % A.address, "?upstream=app&server=%zz",
              "?upstream=app&servers=%s" % A.address):
        adm.text("POST", "/servers/ready" + q, 400, "upstream= and server= are required")
    for state in ("drain", "ready", "maint"):
        for method in ("GET", "PUT", "DELETE"):
            adm.text(method, "/servers/%s?upstream=app&server=%s" % (state, A.address), 405,
                     "this changes state: use POST", allow="POST")
    for path in ("/metrics", "/healthz", "/tunnels", "/servers"):
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            adm.text(method, path, 405, "use GET", allow="GET")
    for path in ("/", "/nope", "/metricsx", "/servers/", "/servers/other", "/servers/drainx?upstream=app",
                 "/tunnels/1"):
        adm.text("GET", path, 404, "no such admin resource")
    eq(re.findall(r" set to \w+ \(was", px.log()), [], "state lines")
    eq([e["admin"] for e in adm.servers()], ["ready", "ready"], "states")


@case(timeout=60)
def servers_with_health_checks(t):
    """With an http check: /servers names the check type and the last
    result ("passed", or the failure text of a server that is down), counts
    checks by result; /metrics has the same servers with server_up and
    health_checks_total at least what /servers said a moment before. A
    server without checks has "check": null and "last_check": null."""
    good, other = NamedBackend(t, "good"), NamedBackend(t, "other")
    dead = t.dead_port()
    port = t.free_port()
    text = conf("{port}", {"app": [good, "127.0.0.1:%d" % dead], "plain": [other]},
                routes=[{"name": "plain", "path_prefix": "/plain", "upstream": "plain"},
                        {"name": "all", "upstream": "app"}], extra=admin_block(port))
    health = 'health = { type = "http"; interval = "100ms"; timeout = "500ms"; rise = 1; fall = 1; };'
    rx = re.compile(r'^(  \{ name = "app"; servers = \(.*\);) \}(,?)$', re.M)
    text, n = rx.subn(lambda mm: "%s %s }%s" % (mm.group(1), health, mm.group(2)), text)
    eq(n, 1, "health block added to upstream app")
    px = t.proxy(config_text=text)
    # a check may be in flight when t.proxy() took the baseline: the fewest sockets over a moment
    best = None
    for _ in range(15):
        snap = px.fd_snapshot()
        if best is None or snap[0]["socket"] < best[0]["socket"]:
            best = snap
        time.sleep(0.02)
    px.fd_baseline = best
    adm = Admin(port)
    deadaddr = "127.0.0.1:%d" % dead

    def ready():
        by = {e["server"]: e for e in adm.servers()}
        return by if by[good.address]["checks_passed"] >= 2 and by[deadaddr]["state"] == "down" else None

    by = wait_until(ready, 10, what="two passed checks of the good server and the dead one down")
    eq({k: by[good.address][k] for k in ("state", "admin", "check", "last_check", "checks_failed")},
       {"state": "up", "admin": "ready", "check": "http", "last_check": "passed", "checks_failed": 0},
       "the good server in /servers")
    d = by[deadaddr]
    eq({k: d[k] for k in ("upstream", "state", "admin", "check", "last_check", "checks_passed")},
       {"upstream": "app", "state": "down", "admin": "ready", "check": "http", "last_check": "Connection refused",
        "checks_passed": 0}, "the dead server in /servers")
    if d["checks_failed"] < 1:
        raise AssertionError("the dead server counts no failed check: %r" % d)
    eq({k: by[other.address][k] for k in ("state", "check", "last_check", "checks_passed", "checks_failed")},
       {"state": "up", "check": None, "last_check": None, "checks_passed": 0, "checks_failed": 0},
       "a server without checks")
    m = adm.scrape()
    eq((m.value("server_up", upstream="app", server=good.address),
        m.value("server_up", upstream="app", server=deadaddr),
        m.value("server_up", upstream="plain", server=other.address)), (1, 0, 1), "server_up")
    for srv, e in ((good.address, by[good.address]), (deadaddr, d)):
        for result, key in (("pass", "checks_passed"), ("fail", "checks_failed")):
            v = m.value("health_checks_total", upstream="app", server=srv, result=result)
            if v < e[key] or (e[key] == 0 and v != 0):
                raise AssertionError("health_checks_total{%s,%s} %r, /servers said %r a moment before"
                                     % (srv, result, v, e[key]))
    c = px.connect()
    eq(c.get("/x").body, b"good", "requests go to the server that is up")
    c.close()


@case(timeout=40)
def admin_address_kept_over_reload(t):
    """The admin address is bound once: a reload naming another address or
    no admin block at all logs that it takes effect at the next start and
    the listener stays where it was (the allow list of the new file does
    apply)."""
    A = NamedBackend(t, "A")
    port, other = t.free_port(), t.free_port()

    def text(p, block):
        return conf(p, {"app": [A]}, extra=block)

    px = t.proxy(config_text=text("{port}", admin_block(port)))
    rl = Reloader(px)
    adm = Admin(port)
    warn = r"^\S+ warn s=0 a changed admin address takes effect at the next start; keeping the listener$"
    for block in (admin_block(other), admin_block(path=t.path("later.sock")), ""):
        rl.ok(text(px.port, block))
        rl.wait(warn, what="the warning about the admin address")
        adm.text("GET", "/healthz", 200, "ok")
        try:
            socket.create_connection(("127.0.0.1", other), timeout=2).close()
            raise AssertionError("something listens on the new admin port %d after the reload" % other)
        except ConnectionRefusedError:
            pass
        eq(os.path.exists(t.path("later.sock")), False, "no unix socket made by the reload")
    eq(adm.scrape().value("reloads_total", result="ok"), 3, "reloads counted")


@case(timeout=30)
def admin_address_back_to_the_bound_one(t):
    """A reload back to the address the admin listener is bound to (after
    one that named another address) changes nothing, so it must not warn
    that a changed admin address takes effect at the next start: the
    comparison is with the listener, not with the previous file."""
    A = NamedBackend(t, "A")
    port, other = t.free_port(), t.free_port()

    def text(p, block):
        return conf(p, {"app": [A]}, extra=block)

    px = t.proxy(config_text=text("{port}", admin_block(port)))
    rl = Reloader(px)
    warn = r"^\S+ warn s=0 a changed admin address takes effect at the next start; keeping the listener$"
    rl.ok(text(px.port, admin_block(other)))
    rl.wait(warn, what="the warning about the admin address")
    rl.ok(text(px.port, admin_block(port)))
    time.sleep(0.1)
    eq(re.findall(warn, rl.log_from(rl.pos), re.M), [],
       "warnings on a reload naming the address the listener is bound to (127.0.0.1:%d)" % port)
    Admin(port).text("GET", "/healthz", 200, "ok")


BAD_T = [
    ("allow_prefix", 'admin = { address = "127.0.0.1:9901";\n  allow = [ "10.0.0.0/8",\n "10.0.0.0/99" ]; };',
     [('"10.0.0.0/99"', "bad value in 'allow': \"10.0.0.0/99\": expected ADDRESS/PREFIX")]),
    ("allow_values", 'admin = { address = "127.0.0.1:9901"; allow = [\n "fd00::/129",\n "10.0.0.0/",\n'
                     ' "10.0.0.0/-1",\n "localhost",\n "10.0.0.0/8/8" ]; };',
     [('"fd00::/129"', "bad value in 'allow': \"fd00::/129\": expected ADDRESS/PREFIX"),
      ('"10.0.0.0/"', "bad value in 'allow': \"10.0.0.0/\": expected ADDRESS/PREFIX"),
      ('"10.0.0.0/-1"', "bad value in 'allow': \"10.0.0.0/-1\": expected ADDRESS/PREFIX"),
      ('"localhost"', "bad value in 'allow': \"localhost\": expected ADDRESS/PREFIX"),
      ('"10.0.0.0/8/8"', "bad value in 'allow': \"10.0.0.0/8/8\": expected ADDRESS/PREFIX")]),
    ("allow_not_strings", 'admin = { address = "127.0.0.1:9901";\n  allow = "10.0.0.0/8"; };',
     [("allow =", "'admin.allow' must be an array of strings")]),
    ("missing_address", 'admin = {\n  allow = [ "10.0.0.0/8" ]; };',
     [("admin = {", "missing 'address' in 'admin'")]),
    ("unix_relative", 'admin = {\n  address = "unix:run/admin.sock"; };',
     [('  address = "unix:', "bad value 'address' = \"unix:run/admin.sock\": a unix socket path must be absolute")]),
    ("tcp_no_port", 'admin = {\n  address = "127.0.0.1"; };',
     [('  address = "127.0.0.1"', "bad address \"127.0.0.1\" in 'admin': expected HOST:PORT")]),
    ("unknown_key", 'admin = { address = "127.0.0.1:9901";\n  alow = [ ]; };', [("alow", "unknown key 'admin.alow'")]),
    ("not_a_group", 'admin =\n "127.0.0.1:9901";', [("admin =", "'admin' must be a group")]),
]
GOOD_T = ['admin = { address = "127.0.0.1:9901"; };',
          'admin = { address = "[::1]:9901"; allow = [ "10.0.0.0/8", "192.0.2.7", "fd00::/8", "::/0", "0.0.0.0/0" ]; };',
          'admin = { address = "unix:/run/switchyard/admin.sock"; allow = [ ]; };']


@case(timeout=60)
def config_check(t):
    """-t: good admin blocks pass; each bad one gives its exact FILE:LINE:
    message(s) and exit status 1."""
    head = ('listen = ( { address = "127.0.0.1:%d"; } );\nupstreams = ( { name = "app"; servers = ( '
            '{ address = "127.0.0.1:9000"; } ); } );\nroutes = ( { upstream = "app"; } );\n'
            'limits = { max_connections = 100; };\n' % t.free_port())
    for i, block in enumerate(GOOD_T):
        res = t.check_config(head + block + "\n", "good%d.conf" % i)
        got = [l for l in res.err.splitlines() if l.startswith(res.path + ":") and "configuration is valid" not in l
               and "warning" not in l]
        eq((res.rc, got), (0, []), "-t on %r (stderr %r)" % (block, res.err))
    for name, block, want in BAD_T:
        text = head + block + "\n"
        res = t.check_config(text, "bad-%s.conf" % name)
        got = [l for l in res.err.splitlines() if l.startswith(res.path + ":") and "warning:" not in l]
        exp = ["%s:%d: %s" % (res.path, line_of(text, needle), msg) for needle, msg in want]
        eq((res.rc, got), (1, exp), "-t on %s (stderr %r)" % (name, res.err))


# ---------------------------------------------------------------------------
# access


@case(timeout=60)
def access_from_other_addresses(t):
    """The admin listener on every address: a request from one of this
    machine's non-loopback addresses gets 403 whatever the resource (a
    refused POST changes nothing) until admin.allow names it; a reload
    changes the list. Loopback (127.0.0.1, ::1, and ::ffff:127.0.0.1
    through a dual-stack [::] listener) is always allowed. Allow entries are
    single addresses, IPv4 and IPv6 prefixes (host bits set: the prefix
    decides)."""
    v4 = local_addresses(socket.AF_INET)
    v6 = local_addresses(socket.AF_INET6)
    try:
        dual = open("/proc/sys/net/ipv6/bindv6only").read().strip() == "0" and socket.has_ipv6
    except OSError:
        dual = False
    port = t.free_port()
    if dual:  # [::] takes IPv4 as ::ffff:a.b.c.d
        listen_addr, loops, others = "[::]:%d" % port, ["127.0.0.1", "::1"], v4 + v6
    elif v4:
        listen_addr, loops, others = "0.0.0.0:%d" % port, ["127.0.0.1"], v4
    else:
        listen_addr, loops, others = "[::]:%d" % port, ["::1"], v6
    if not others:
        t.skip("no non-loopback address on this machine (admin_peer_allowed is covered by tests/unit/check_admin.c)")
    t.note("admin on %s; loopback sources %r, others %r" % (listen_addr, loops, others))
    A = NamedBackend(t, "A")

    def text(p, allow):
        return conf(p, {"app": [A]}, extra=admin_block(address=listen_addr, allow=allow))

    px = t.proxy(config_text=text("{port}", None))
    rl = Reloader(px)
    adm = Admin(port)
    deny = "admin access from this address is not allowed"
    refused = [("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/tunnels"), ("GET", "/servers"), ("GET", "/nope"),
               ("POST", "/metrics"), ("POST", "/servers/maint?upstream=app&server=%s" % A.address)]

    def check(allowed):
        for a in loops:
            adm.text("GET", "/healthz", 200, "ok", source=a, host=a)
        for a in others:
            if a in allowed:
                adm.text("GET", "/healthz", 200, "ok", source=a, host=a)
                eq(adm.call("GET", "/metrics", source=a, host=a).status, 200, "/metrics from %s" % a)
                eq(len(adm.json("/servers", source=a, host=a)), 1, "/servers from %s" % a)
            else:
                for method, path in refused:
                    adm.text(method, path, 403, deny, source=a, host=a)

    check(set())
    eq(re.findall(r" set to \w+ \(was", px.log()), [], "state lines after refused POSTs")
    eq([e["admin"] for e in adm.servers()], ["ready"], "state after refused POSTs")
    first = others[0]
    rl.ok(text(px.port, ["%s/%d" % (first, 128 if ":" in first else 32)]))
    check({first})
    rl.ok(text(px.port, ["%s" % first]))
    check({first})
    rl.ok(text(px.port, ["198.51.100.0/24", "2001:db8::/32"]))
    check(set())
    rl.ok(text(px.port, ["%s/%d" % (a, 64 if ":" in a else 24) for a in others]))
    check(set(others))


@case(timeout=30)
def unix_socket_admin(t):
    """address = "unix:/abs/path": a stale socket file left at the path is
    replaced; the socket is mode 0660; /healthz, /metrics and a POST answer
    over it (always allowed, with allow naming nothing local); the file is
    removed at exit. A path held by a regular file is an error at start."""
    path = t.path("admin.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays
    A = NamedBackend(t, "A")
    px = t.proxy(A, extra=admin_block(path=path, allow=["198.51.100.0/24"]))
    px.wait_log(r"^\S+ info s=0 admin listening on unix:%s$" % re.escape(path))
    st = os.lstat(path)
    eq((stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode)), (True, 0o660), "socket file type and mode")
    adm = Admin(path=path)
    adm.text("GET", "/healthz", 200, "ok")
    eq(adm.scrape().value("workers"), 1, "workers over the unix socket")
    adm.post_state("drain", "app", A.address)
    eq([e["admin"] for e in adm.servers()], ["drain"], "state set over the unix socket")
    px.stop()
    eq(os.path.exists(path), False, "socket file after exit")

    # a regular file at the path: not removed, start fails
    with open(path, "w") as f:
        f.write("not a socket\n")
    cfg = t.path("regular.conf")
    with open(cfg, "w") as f:
        f.write(make_config(t.free_port(), {"app": [A]}, extra=admin_block(path=path)))
    p = t.run_binary(["-c", cfg], timeout=20)
    err = p.stderr.decode()
    if p.returncode == 0 or "cannot listen on unix:%s: Address already in use" % path not in err:
        raise AssertionError("start with a regular file at the admin path: status %d, stderr %r"
                             % (p.returncode, err[-600:]))
    eq(open(path).read(), "not a socket\n", "the regular file is left alone")


# ---------------------------------------------------------------------------
# the admin listener and the client listener's limits


@case(timeout=40)
def admin_answers_while_clients_paused(t):
    """limits.max_connections = 2 with two idle client connections: the
    client listener is paused (a third client is not served), the admin
    listener is not: /metrics shows connections_open 2, /healthz, /servers
    and /tunnels answer. Closing an idle client lets the third one in."""
    A = NamedBackend(t, "A")
    px, adm = admin_proxy(t, A, limits={"max_connections": 2})
    idle = [px.connect(), px.connect()]
    expect_metrics(adm, [("connections_open", {}, 2), ("connections_total", {}, 2)], what="two idle clients")
    third = px.connect()
    third.request("GET", "/third")
    if not third.is_open_after(0.5):
        raise AssertionError("the third client was closed while the listener is paused")
    eq(A.requests(), [], "requests at the backend while paused")
    for _ in range(3):
        m = adm.scrape()
        eq((m.value("connections_open"), m.value("connections_total")), (2, 2), "connections while paused")
        adm.text("GET", "/healthz", 200, "ok")
        eq(adm.tunnels(), [], "/tunnels while paused")
        eq(len(adm.servers()), 1, "/servers while paused")
    idle[0].close()
    r = third.read_response(timeout=10)
    eq((r.status, r.body), (200, b"A"), "the third client once a slot freed")
    expect_metrics(adm, [("connections_total", {}, 3)], what="the third connection counted")


# ---------------------------------------------------------------------------
# a scrape of many tunnels


@case(timeout=300)
def scrape_many_tunnels(t):
    """As many tunnels as the descriptor limit allows (at most 10 000, 4 fds
    each here), over two workers: GET /metrics and GET /tunnels are timed
    (printed, never asserted); /tunnels?limit=N lists exactly N, the
    default limit gives at most 1000 per worker, /metrics counts them, and
    plain requests sent while /tunnels is being answered are served."""
    soft, hard = raise_nofile()
    N = min(10000, (soft - 200) // 4)
    if N < 50:
        t.skip("RLIMIT_NOFILE %d/%d holds fewer than 50 tunnels" % (soft, hard))
    t.note("RLIMIT_NOFILE %d/%d: %d tunnels" % (soft, hard, N))
    be = SelectorEchoBackend()
    t.backends.append(be)
    plain = NamedBackend(t, "plain")
    px, adm = admin_proxy(t, upstreams={"ws": [be], "plain": [plain]}, workers=2,
                          routes=[{"name": "plain", "path_prefix": "/plain", "upstream": "plain"},
                                  {"name": "ws", "upstream": "ws"}],
                          # max_connections is shared out between the workers and
                          # SO_REUSEPORT does not spread evenly: room for that
                          limits={"max_connections": N + N // 5 + 16})
    idle = []
    for _ in range(3):
        t0 = time.monotonic()
        adm.call("GET", "/metrics")
        idle.append((time.monotonic() - t0) * 1000)
    t.note("GET /metrics with no tunnel open: %s ms" % " ".join("%.1f" % x for x in idle))
    socks = []
    try:
        t_open = time.monotonic()
        open_tunnels(px.port, N, "scrape", socks)
        t.note("%d tunnels open in %.1f s" % (N, time.monotonic() - t_open))
        expect_metrics(adm, [("tunnels_open", {"route": "ws"}, N)], timeout=30, what="tunnels_open = N")
        times = {"metrics": [], "tunnels": []}
        for _ in range(3):
            t0 = time.monotonic()
            r = adm.call("GET", "/metrics")  # the HTTP exchange only; parsed below
            times["metrics"].append((time.monotonic() - t0) * 1000)
            eq(Metrics(r.text).value("tunnels_open", route="ws"), N, "tunnels_open in a timed scrape")
        full = None
        for _ in range(3):
            t0 = time.monotonic()
            tunnels_body = adm.call("GET", "/tunnels?limit=100000").body
            times["tunnels"].append((time.monotonic() - t0) * 1000)
            full = json.loads(tunnels_body)
        eq(len(full), N, "entries of /tunnels?limit=100000")
        eq(len({e["id"] for e in full}), N, "distinct ids")
        eq({(e["route"], e["protocol"]) for e in full}, {("ws", "websocket")}, "routes and protocols listed")
        per = {}
        for e in full:
            per[e["worker"]] = per.get(e["worker"], 0) + 1
        eq(sum(per.values()), N, "tunnels per worker %r" % per)
        eq(len(adm.tunnels()), sum(min(1000, n) for n in per.values()),
           "entries with the default limit (1000 per worker; per worker %r)" % per)
        t.note("scrape with %d tunnels (per worker %r): GET /metrics %s ms (%d bytes), GET /tunnels?limit=100000 %s ms "
               "(%d bytes); request sent to last byte read, parsing not included"
               % (N, per, " ".join("%.1f" % x for x in times["metrics"]), len(adm.call("GET", "/metrics").body),
                  " ".join("%.1f" % x for x in times["tunnels"]), len(tunnels_body)))

        # plain requests while /tunnels is being answered, again and again
        stop = threading.Event()
        scrapes = []

        def scraper():
            while not stop.is_set():
                t0 = time.monotonic()
                body = adm.call("GET", "/tunnels?limit=100000").body
                scrapes.append(((time.monotonic() - t0) * 1000, len(json.loads(body))))

        th = t.thread(scraper)
        lat = []
        try:
            wait_until(lambda: scrapes, 30, what="a first /tunnels scrape from the thread")
            for i in range(20):
                c = px.connect()
                t0 = time.monotonic()
                r = c.get("/plain/%d" % i)
                lat.append((time.monotonic() - t0) * 1000)
                c.close()
                eq((r.status, r.body), (200, b"plain"), "plain request %d during the scrapes" % i)
        finally:
            stop.set()
            th.join(60)
        eq({n for _, n in scrapes}, {N}, "entries of every concurrent /tunnels scrape")
        t.note("during %d concurrent /tunnels scrapes (%.1f ms median): 20 plain requests, latency max %.1f ms, "
               "median %.1f ms" % (len(scrapes), sorted(s for s, _ in scrapes)[len(scrapes) // 2], max(lat),
                                   sorted(lat)[len(lat) // 2]))
        for i in (0, N // 2, N - 1):
            socks[i].sendall(b"still open %d" % i)
            got = b""
            while len(got) < len(b"still open %d" % i):
                got += socks[i].recv(100)
            eq(got, b"still open %d" % i, "echo on tunnel %d after the scrapes" % i)
    finally:
        for s in socks:
            s.close()
    expect_metrics(adm, [("tunnels_open", {"route": "ws"}, 0), ("connections_open", {}, 0)], timeout=60,
                   what="every tunnel closed")
    eq(adm.tunnels(), [], "/tunnels at the end")


# ---------------------------------------------------------------------------
# requests the admin does not like


@case(timeout=30)
def admin_request_edge_cases(t):
    """The proxy's own parser reads admin requests: malformed -> 400, a head
    over 8 KiB -> 431, HTTP/1.0 and a head sent byte by byte are answered,
    one answer per connection (a pipelined second request is not answered),
    HEAD answers carry no body."""
    A = NamedBackend(t, "A")
    px, adm = admin_proxy(t, A)
    for raw, status in ((b"GARBAGE\r\n\r\n", 400), (b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Field\r\n\r\n", 400),
                        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 9000 + b"\r\n\r\n", 431),
                        (b"GET /healthz HTTP/9.9\r\nHost: a\r\n\r\n", 505)):
        r = parse_admin_response(adm.raw(raw), "malformed %r" % raw[:30])
        eq(r.status, status, "status for %r (body %r)" % (raw[:40], r.body))
        eq(r.get("Content-Type"), TEXT, "Content-Type of the %d" % status)
        if r.body.count(b"\n") != 1 or len(r.body) < 2:
            raise AssertionError("%d body is not one line: %r" % (status, r.body))
    r = parse_admin_response(adm.raw(b"GET /healthz HTTP/1.0\r\n\r\n"), "HTTP/1.0")
    eq((r.status, r.body), (200, b"ok\n"), "HTTP/1.0 /healthz")
    req = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    r = parse_admin_response(adm.raw(None, pieces=[req[i:i + 1] for i in range(len(req))]), "byte by byte")
    eq((r.status, r.body), (200, b"ok\n"), "/healthz sent byte by byte")
    data = adm.raw(req + b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    r = parse_admin_response(data, "pipelined")
    eq((r.status, r.body), (200, b"ok\n"), "first of two pipelined requests (and nothing after it)")
    leak = px.fds_settled(5)
    if leak:
        raise AssertionError(leak)


@case(timeout=30)
def head_requests_have_no_body(t):
    """HEAD is accepted where GET is (200, same Content-Type and
    Content-Length as the GET) but, as for any HTTP server (RFC 9110
    9.3.2), the answer has no content after its head."""
    px, adm = admin_proxy(t, NamedBackend(t, "A"))
    for path in ("/healthz", "/servers", "/tunnels"):
        g = adm.call("GET", path)
        h = adm.call("HEAD", path)
        eq((h.status, h.get("Content-Type"), h.get("Content-Length")),
           (200, g.get("Content-Type"), g.get("Content-Length")), "HEAD %s against GET" % path)


@case()
def tunnel_bytes_count_while_open(t):
    """switchyard_tunnel_bytes_total grows while a tunnel is open (counted
    every second), not only when it closes, and the close adds no more than
    what was left."""
    be = UpgradeBackend(t)
    px, adm = admin_proxy(t, be.address)
    c = open_ws(px)
    echo(c, b"u" * 1000)
    route = session_route(px)
    expect_metrics(adm, [("tunnel_bytes_total", {"route": route, "direction": "up"}, 1000),
                         ("tunnel_bytes_total", {"route": route, "direction": "down"}, 1000),
                         ("tunnels_open", {"route": route}, 1)], timeout=5,
                   what="bytes of an open tunnel")
    echo(c, b"v" * 500)
    close_tunnel(c)
    expect_metrics(adm, [("tunnel_bytes_total", {"route": route, "direction": "up"}, 1500),
                         ("tunnel_bytes_total", {"route": route, "direction": "down"}, 1500),
                         ("tunnels_open", {"route": route}, 0)], timeout=5,
                   what="bytes after the close")


def session_route(px):
    return px.wait_access(1, lambda a: a.get("status") == 101)[0]["route"]


@case("h2_metrics")
def h2_metrics(t):
    """The HTTP/2 series: a connection that chose h2 (h2c preface) counts in
    h2_connections_* and in connections_*, its streams in h2_streams_total and
    requests_total (not as connections); a PING flood's GOAWAY counts as
    enhance_your_calm, a reload's as no_error, and the gauge returns to 0."""
    from harness import Reply
    from h2lib import ENHANCE_YOUR_CALM, NO_ERROR, H2Client, RawH2, h2_config, open_socket, ping
    be = t.http_backend([Reply(200, b"ok\n") for _ in range(3)])
    aport = t.free_port()
    text = h2_config({"app": [be]}, "h2c") + admin_block(aport) + "\n"
    px = t.proxy(config_text=text)
    px.wait_log(r"^\S+ info s=0 admin listening on 127\.0\.0\.1:%d$" % aport)
    adm = Admin(aport)
    c = H2Client(open_socket(px.port))
    t.clients.append(c)
    c.wait_settings()
    for i in range(3):
        st = c.response(c.request("GET", "/n%d" % i, scheme="http"))
        eq((st.status, st.body), (200, b"ok\n"), "request %d over h2c" % i)
    expect_metrics(adm, [("h2_connections_open", {}, 1), ("h2_connections_total", {}, 1),
                         ("h2_streams_total", {}, 3), ("connections_open", {}, 1),
                         ("connections_total", {}, 1),
                         ("requests_total", {"route": "all", "code": "2xx"}, 3)],
                   what="one h2 connection, three streams")
    flood = RawH2(open_socket(px.port))
    t.clients.append(flood)
    flood.send(b"".join(ping(b"%08d" % i) for i in range(1500)))
    flood.until(lambda: flood.goaways, 10, "GOAWAY after the PING flood")
    eq([g.error_code for g in flood.goaways], [ENHANCE_YOUR_CALM], "the flood's GOAWAY")
    expect_metrics(adm, [("h2_goaways_total", {"code": "enhance_your_calm"}, 1),
                         ("h2_goaways_total", {"code": "no_error"}, 0),
                         ("h2_connections_total", {}, 2)], what="the flood counted")
    Reloader(px).ok()
    c.until(lambda: c.goaway is not None, 10, "GOAWAY after the reload")
    eq(c.goaway.error_code, NO_ERROR, "the reload's GOAWAY code")
    expect_metrics(adm, [("h2_goaways_total", {"code": "no_error"}, 1), ("h2_connections_open", {}, 0),
                         ("h2_goaways_total", {"code": "protocol_error"}, 0)],
                   what="the reload's GOAWAY counted, both connections closed")
