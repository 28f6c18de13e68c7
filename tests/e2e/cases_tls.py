"""TLS (issue 7): TLS listeners (certificates by SNI, ALPN http/1.1 only,
TLS 1.2+, tickets), X-Forwarded-Proto https and the access-log tls/sni
fields, TLS upstreams (verification, sni, 502 reasons), tunnels over TLS
(copy mode, half-close as close_notify, 8 MiB each way through real
websockets clients and servers), bad input and handshake timeouts on a TLS
port, and `-t` on certificate errors.

A throwaway CA and certificates are generated per case with the openssl
command in the case directory (tls_lib.PKI); config files live in the same
directory and name the certificates by relative path, so relative-path
resolution against the config file's directory is exercised everywhere."""

import asyncio
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import time

from harness import ConfigCheck, Reply, blob, case, eq, expect_proxy_error, register, sha256, wait_listen, wait_until
from tls_lib import (PKI, SUBJECT, MemTLS, TLSBackend, cert_cn, client_ctx, client_hello, fd_count, http_ok,
                     mem_connect, standard_pki, tls_config, tls_connect, wait_closed_sock)
from wslib import (UpgradeBackend, check_tunnel_line, echo_until_eof, read_head, resp_101, wait_tunnel_line,
                   ws_accept, ws_key, ws_request)

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


def tls_proxy(t, backend=None, upstreams=None, certs=None, pki=None, **kw):
    """A proxy with a TLS listener (standard certificates unless certs given)."""
    if certs is None:
        pki, certs = standard_pki(t)
    if upstreams is None:
        upstreams = {"app": [backend if backend is not None else t.dead_port()]}
    px = t.proxy(config_text=tls_config(upstreams, certs=certs, **kw))
    px.pki = pki
    return px


def openssl_client(port, args, stdin=b"", timeout=15):
    """Run `openssl s_client -connect 127.0.0.1:port ARGS`; returns stdout+stderr text."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + args, input=stdin,
                       capture_output=True, timeout=timeout)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def subject_cn(out):
    m = re.search(r"^subject=.*?CN\s*=\s*([^,\n]+)", out, re.M)
    return m.group(1).strip() if m else None


REQ = b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


# ---------------------------------------------------------------------------
# certificate selection (SNI), ALPN, versions


@case(timeout=40)
def sni_curl_two_names(t):
    """curl with SNI a.test (exact) and x.b.test (wildcard): verification
    against the test CA succeeds, the right certificate, 200 through."""
    be = t.http_backend(Reply(200, b"hello over tls"))
    px = tls_proxy(t, be)
    ca = px.pki.path(px.pki.ca)
    for name, want in (("a.test", "a.test"), ("x.b.test", "*.b.test")):
        p = subprocess.run(["curl", "-sS", "-v", "--cacert", ca, "--resolve", "%s:%d:127.0.0.1" % (name, px.port),
                            "https://%s:%d/p" % (name, px.port)], capture_output=True, timeout=20)
        err = p.stderr.decode(errors="replace")
        t.note(err)
        eq(p.returncode, 0, "curl exit status for %s (%s)" % (name, err[-300:]))
        eq(p.stdout, b"hello over tls", "body via %s" % name)
        m = re.search(r"^\*\s+subject: (.*)$", err, re.M)
        eq(m and m.group(1).strip(), "CN=" + want, "certificate subject for SNI %s" % name)
        assert "ALPN: server accepted http/1.1" in err, "curl -v: no 'ALPN: server accepted http/1.1' in %r" % err
    eq(len(be.requests), 2, "requests at the backend")


SNI_TABLE = [
    # (sni or None, expected CN)
    ("a.test", "a.test"),
    ("A.TEST", "a.test"),                # case-insensitive
    ("x.b.test", "*.b.test"),            # wildcard
    ("exact.b.test", "a.test"),          # an exact name beats a wildcard listed before it
    ("x.y.b.test", "default.test"),      # the wildcard covers one label only
    ("b.test", "default.test"),          # nor the bare suffix
    ("unknown.example", "default.test"),  # unknown: the default (first) certificate
    (None, "default.test"),              # no SNI: the default
]


@case(timeout=60)
def sni_selection_openssl(t):
    px = tls_proxy(t)
    for sni, want in SNI_TABLE:
        args = ["-servername", sni] if sni else ["-noservername"]
        out = openssl_client(px.port, args, stdin=REQ)
        eq(subject_cn(out), want, "certificate CN for SNI %r (openssl output %r)" % (sni, out[-400:]))
    # the same through Python's client, reading the peer certificate
    for sni, want in (("a.test", "a.test"), ("z.b.test", "*.b.test"), (None, "default.test")):
        c = tls_connect(t, px.port, sni=sni)
        eq(c.peer_cn(), want, "peer certificate CN for SNI %r (python client)" % sni)
        c.close()


@case(timeout=30)
def alpn_http11_only(t):
    be = t.http_backend(Reply(200, b"ok"))
    px = tls_proxy(t, be)
    out = openssl_client(px.port, ["-servername", "a.test", "-alpn", "h2"], stdin=REQ)
    assert "No ALPN negotiated" in out, "client offering only h2: want 'No ALPN negotiated' in %r" % out[-800:]
    assert "Protocol  : TLSv1.3" in out or "TLSv1.3" in out, "handshake completed: %r" % out[-800:]
    out = openssl_client(px.port, ["-servername", "a.test", "-alpn", "h2,http/1.1"], stdin=REQ)
    assert re.search(r"ALPN protocol: http/1\.1", out), "h2,http/1.1 offered: want http/1.1, got %r" % out[-800:]
    c = tls_connect(t, px.port, sni="a.test", alpn=["h2", "http/1.1"])
    eq(c.sock.selected_alpn_protocol(), "http/1.1", "ALPN selected for a Python client offering h2, http/1.1")
    r = c.get("/")
    eq(r.status, 200, "status after ALPN http/1.1")
    c = tls_connect(t, px.port, sni="a.test", alpn=["h2"])
    eq(c.sock.selected_alpn_protocol(), None, "ALPN for a client offering only h2 (none)")
    eq(c.get("/").status, 200, "HTTP/1.1 still served without ALPN")


@case(timeout=30)
def tls11_refused_tls12_13_work(t):
    px = tls_proxy(t, t.http_backend(Reply(200, b"ok")))
    with px.no_fd_leak():
        for v in ("-tls1_1", "-tls1"):
            # SECLEVEL=0 so that the client itself is willing to speak the old version
            out = openssl_client(px.port, [v, "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "a.test"], stdin=REQ)
            assert "CONNECTED" in out, "client did not connect: %r" % out[-500:]
            assert not re.search(r"^subject=", out, re.M), "%s handshake succeeded: %r" % (v, out[-800:])
            assert re.search(r"alert protocol version|unsupported protocol|no protocols available", out), \
                "%s: want a protocol-version failure, got %r" % (v, out[-800:])
        px.wait_log(r"TLS handshake failed: .*(unsupported protocol|version)", timeout=5)
        for v, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            out = openssl_client(px.port, [v, "-servername", "a.test", "-ign_eof"], stdin=REQ)
            assert "HTTP/1.1 200 OK" in out, "response over %s: %r" % (v, out[-500:])
            assert re.search(r"^(New|Reused), %s," % want, out, re.M), "%s handshake: %r" % (v, out[-800:])
        c = tls_connect(t, px.port, sni="a.test", maxv=ssl.TLSVersion.TLSv1_2)
        eq(c.version, "TLSv1.2", "negotiated version (client max 1.2)")
        c.close()
        c = tls_connect(t, px.port, sni="a.test")
        eq(c.version, "TLSv1.3", "negotiated version (default client)")
        c.close()


@case(timeout=30)
def protocols_tls13_only(t):
    pki, certs = standard_pki(t)
    px = tls_proxy(t, certs=certs, pki=pki, protocols="TLSv1.3+")
    out = openssl_client(px.port, ["-tls1_2", "-servername", "a.test"], stdin=REQ)
    assert not re.search(r"^subject=", out, re.M), "TLS 1.2 accepted with protocols TLSv1.3+: %r" % out[-600:]
    c = tls_connect(t, px.port, sni="a.test")
    eq(c.version, "TLSv1.3", "negotiated version")


@case(timeout=40)
def session_resumption(t):
    px = tls_proxy(t, t.http_backend(Reply(200, b"ok")))
    for v in ("-tls1_2", "-tls1_3"):
        for sni in (None, "a.test"):
            sess = t.path("sess%s%s" % (v, sni or ""))
            base = [v, "-ign_eof"] + (["-servername", sni] if sni else ["-noservername"])
            out = openssl_client(px.port, base + ["-sess_out", sess], stdin=REQ)
            assert re.search(r"^New, ", out, re.M), "first handshake %s sni %r: %r" % (v, sni, out[-600:])
            if v == "-tls1_2":
                assert "TLS session ticket:" in out, "no session ticket issued (TLS 1.2): %r" % out[-1500:]
            out = openssl_client(px.port, base + ["-sess_in", sess], stdin=REQ)
            assert re.search(r"^Reused, ", out, re.M), "session not resumed %s sni %r: %r" % (v, sni, out[-800:])
            assert "HTTP/1.1 200" in out, "request on the resumed session: %r" % out[-600:]


# ---------------------------------------------------------------------------
# requests over TLS: X-Forwarded-Proto, access log


@case(timeout=30)
def forwarded_proto_and_access_log(t):
    be = t.http_backend(Reply(200, b"hi"))
    px = tls_proxy(t, be)
    c = tls_connect(t, px.port, sni="a.test")
    r = c.get("/one", host="a.test")
    eq((r.status, r.body), (200, b"hi"), "response over TLS 1.3")
    c.close()
    c = tls_connect(t, px.port, sni=None, maxv=ssl.TLSVersion.TLSv1_2)
    eq(c.get("/two").status, 200, "response over TLS 1.2 without SNI")
    c.close()
    be.wait_requests(2)
    for req in be.requests:
        eq(req.get_all("X-Forwarded-Proto"), [b"https"] if isinstance(req.get("X-Forwarded-Proto"), bytes)
           else ["https"], "X-Forwarded-Proto at the backend (%r)" % req.head)
    px.wait_access(2)
    lines = [a for a in px.access_lines() if a.get("status") == 200]
    eq(len(lines), 2, "access lines")
    eq((lines[0].get("tls"), lines[0].get("sni"), lines[0].get("target")), ("TLSv1.3", "a.test", "/one"),
       "access log tls/sni (line %r)" % lines[0])
    eq(lines[1].get("tls"), "TLSv1.2", "access log tls (line %r)" % lines[1])
    assert lines[1].get("sni") is None, "access log sni without SNI: %r" % lines[1]
    # a plain listener says http and logs no tls fields
    be2 = t.http_backend(Reply(200, b"plain"))
    px2 = t.proxy(be2)
    eq(px2.connect().get("/").status, 200, "plain status")
    be2.wait_requests(1)
    xfp = be2.requests[0].get("X-Forwarded-Proto")
    eq(xfp.decode() if isinstance(xfp, bytes) else xfp, "http", "X-Forwarded-Proto on a plain listener")
    a = px2.wait_access(1)
    line = px2.access_lines()[0]
    assert line.get("tls") is None and line.get("sni") is None, "plain listener logs tls fields: %r" % line


@case(timeout=30)
def keepalive_and_errors_over_tls(t):
    """Several requests on one TLS connection, then a proxy-generated 404
    over TLS and the close that follows it."""
    be = t.http_backend(Reply(200, b"k"))
    pki, certs = standard_pki(t)
    text = tls_config({"app": [be]}, certs=certs,
                      routes=[{"name": "a", "host": "a.test", "upstream": "app"}])
    px = t.proxy(config_text=text)
    with px.no_fd_leak():
        c = tls_connect(t, px.port, sni="a.test")
        for i in range(3):
            r = c.get("/k%d" % i, host="a.test", headers=[("Connection", "keep-alive")])
            eq((r.status, r.body), (200, b"k"), "keep-alive response %d" % i)
        c.request("GET", "/", host="nowhere.test")
        expect_proxy_error(c, 404)
        c.close()


# ---------------------------------------------------------------------------
# TLS upstreams: verification


def backend_pki(t, pki=None):
    pki = pki or PKI(t.dir)
    return pki, pki.leaf("backend", "backend.test", ["DNS:backend.test"])


@case(timeout=30)
def upstream_tls_verified_with_sni(t):
    pki, (cert, key) = backend_pki(t)
    be = TLSBackend(t, pki, cert, key, http_ok(b"from tls backend"))
    text = tls_config({"app": [be]}, upstream_tls={"app": 'verify = true; ca = "%s"; sni = "backend.test";' % pki.ca})
    px = t.proxy(config_text=text)
    with px.no_fd_leak():
        c = px.connect()
        r = c.get("/up", host="client.test", headers=[("Connection", "close")])
        eq((r.status, r.body), (200, b"from tls backend"), "response via a TLS upstream")
        c.expect_closed()
        c.close()
    eq(be.snis, ["backend.test"], "SNI the backend saw")
    head = be.raw.records[0].data
    assert head.startswith(b"GET /up HTTP/1.1\r\n"), "request at the TLS backend: %r" % head[:200]
    assert b"\r\nX-Forwarded-Proto: http\r\n" in head, "X-Forwarded-Proto for a plain client: %r" % head


@case(timeout=30)
def upstream_tls_verify_by_address(t):
    """Without sni, the server address host (127.0.0.1) is verified: a
    certificate with that IP in subjectAltName passes."""
    pki = PKI(t.dir)
    cert, key = pki.leaf("ipcert", "backend.test", ["DNS:backend.test", "IP:127.0.0.1"])
    be = TLSBackend(t, pki, cert, key, http_ok(b"ip ok"))
    px = t.proxy(config_text=tls_config({"app": [be]}, upstream_tls={"app": 'ca = "%s";' % pki.ca}))
    r = px.connect().get("/")
    eq((r.status, r.body), (200, b"ip ok"), "response (cert with IP SAN, no sni)")


def _verify_fail(t, make, tls_body, reason_rx, calls=1):
    pki = PKI(t.dir)
    cert, key = make(t, pki)
    be = TLSBackend(t, pki, cert, key, http_ok(b"must not be seen"))
    px = t.proxy(config_text=tls_config({"app": [be]}, upstream_tls={"app": tls_body % {"ca": pki.ca}}))
    with px.no_fd_leak():
        c = px.connect()
        c.request("GET", "/v")
        body = expect_proxy_error(c, 502)
    body = body.decode() if isinstance(body, bytes) else body
    t.note(body)
    rx = r"no upstream server could be reached \(last: certificate verify failed: (%s)\)\n?" % reason_rx
    assert re.fullmatch(rx, body), "502 body %r does not match /%s/" % (body, rx)
    m = px.wait_log(r"connect to 127\.0\.0\.1:%d failed: certificate verify failed: (%s)" % (be.port, reason_rx))
    t.note(m.group(0))
    px.wait_access(1)
    a = [l for l in px.access_lines() if l.get("status") == 502]
    eq(len(a), 1, "502 access lines")
    assert re.search(r"certificate verify failed", a[0].get("reason", "")), "access-log reason: %r" % a[0]
    eq(be.handshakes, 0, "handshakes the backend completed")


VERIFY_FAILURES = [
    # name, certificate maker, upstream tls body, reason regex
    ("wrong_sni", lambda t, pki: pki.leaf("backend", "backend.test", ["DNS:backend.test"]),
     'verify = true; ca = "%(ca)s"; sni = "wrong.test";', r"hostname mismatch"),
    ("unknown_ca", lambda t, pki: PKI(t.dir, prefix="other-", cn="unknown CA").leaf(
        "backend", "backend.test", ["DNS:backend.test"]),
     'ca = "%(ca)s"; sni = "backend.test";', r"unable to get local issuer certificate"),
    ("address_mismatch", lambda t, pki: pki.leaf("backend", "backend.test", ["DNS:backend.test"]),
     'ca = "%(ca)s";', r"(IP address|hostname) mismatch"),
]


for _n, _mk, _body, _rx in VERIFY_FAILURES:
    register("upstream_verify_fails_" + _n,
             (lambda mk, body, rx: lambda t: _verify_fail(t, mk, body, rx))(_mk, _body, _rx), 30)


@case(timeout=30)
def upstream_verify_off_accepts_unknown_ca(t):
    pki = PKI(t.dir)
    other = PKI(t.dir, prefix="other-", cn="unknown CA")
    cert, key = other.leaf("backend", "backend.test", ["DNS:backend.test"])
    be = TLSBackend(t, other, cert, key, http_ok(b"unverified"))
    px = t.proxy(config_text=tls_config({"app": [be]}, upstream_tls={"app": 'verify = false; sni = "x.test";'}))
    r = px.connect().get("/")
    eq((r.status, r.body), (200, b"unverified"), "verify = false")
    eq(be.snis, ["x.test"], "SNI sent with verify = false")


@case(timeout=30)
def upstream_verify_failover_to_good_server(t):
    """Two servers, the first fails verification: the request goes to the
    second; the failure is logged."""
    pki = PKI(t.dir)
    other = PKI(t.dir, prefix="other-", cn="unknown CA")
    bad = TLSBackend(t, other, *other.leaf("bad", "backend.test", ["DNS:backend.test"]), http_ok(b"bad"))
    good = TLSBackend(t, pki, *pki.leaf("good", "backend.test", ["DNS:backend.test"]), http_ok(b"good"))
    text = tls_config({"app": [bad, good]}, upstream_tls={"app": 'ca = "%s"; sni = "backend.test";' % pki.ca})
    px = t.proxy(config_text=text)
    seen = set()
    for i in range(2):
        r = px.connect().get("/")
        eq(r.status, 200, "status %d" % i)
        seen.add(r.body)
    eq(seen, {b"good"}, "bodies")
    px.wait_log(r"connect to 127\.0\.0\.1:%d failed: certificate verify failed" % bad.port)


# ---------------------------------------------------------------------------
# WebSocket over TLS (real clients and servers), tunnels in copy mode


def _events(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    except OSError:
        return []


def _ws_server(t, port, events, cert=None, key=None):
    argv = ["/usr/bin/python3", os.path.join(HERE, "tls_ws_server.py"), str(port), events]
    if cert:
        argv += [cert, key]
    t.popen(argv, stdout=open(t.path("ws_server.out"), "ab"), stderr=subprocess.STDOUT)
    wait_listen(port)
    wait_until(lambda: any(e["event"] == "listening" for e in _events(events)), 10, what="ws server ready")


def _ws_roundtrip(t, url, ssl_ctx=None, server_hostname=None, size=8 * MiB):
    import websockets  # python3-websockets 10.x

    up = blob(size, 71)

    async def run():
        kw = {"ssl": ssl_ctx} if ssl_ctx else {}
        if server_hostname:
            kw["server_hostname"] = server_hostname
        async with websockets.connect(url, ping_interval=None, max_size=None, close_timeout=5, **kw) as ws:
            await ws.send(up)
            back = await asyncio.wait_for(ws.recv(), 60)
            await ws.send("text after the big one")
            txt = await asyncio.wait_for(ws.recv(), 10)
            await ws.close(code=1000)
            return back, txt, ws.close_code

    back, txt, code = asyncio.run(run())
    eq(len(back), size, "echoed message length")
    eq(hashlib.sha256(back).hexdigest(), sha256(up), "SHA-256 of the %d bytes echoed back" % size)
    eq(txt, "text after the big one", "text echo")
    eq(code, 1000, "close code")
    return sha256(up)


def _check_ws_events(events, digest, size):
    wait_until(lambda: any(e["event"] == "closed" for e in _events(events)), 10, what="server close event")
    msgs = [e for e in _events(events) if e["event"] == "message"]
    eq([(m["type"], m["len"], m["sha256"]) for m in msgs[:1]], [("binary", size, digest)],
       "message (length, SHA-256) at the server")
    opened = [e for e in _events(events) if e["event"] == "open"]
    eq(len(opened), 1, "server connections")
    return dict((k.lower(), v) for k, v in opened[0]["headers"])


@case(timeout=120)
def wss_client_to_plain_ws_backend(t):
    """websockets wss:// client -> switchyard TLS listener -> plain ws://
    server: 8 MiB each way, SHA-256 on both ends; the tunnel runs in copy mode
    although splice is configured."""
    port = t.free_port()
    events = t.path("ws_events.jsonl")
    _ws_server(t, port, events)
    pki, certs = standard_pki(t)
    px = t.proxy(config_text=tls_config({"app": ["127.0.0.1:%d" % port]}, certs=certs,
                                        extra='tunnel = { mode = "splice"; };'))
    ctx = client_ctx(ca=pki.path(pki.ca))
    digest = _ws_roundtrip(t, "wss://127.0.0.1:%d/sec" % px.port, ctx, server_hostname="x.b.test")
    hdrs = _check_ws_events(events, digest, 8 * MiB)
    eq(hdrs.get("x-forwarded-proto"), "https", "X-Forwarded-Proto at the ws server")
    tl = check_tunnel_line(px, "copy", "backend", "backend EOF")
    if tl["bytes_up"] < 8 * MiB or tl["bytes_down"] < 8 * MiB:
        raise AssertionError("tunnel byte counts too small: %r" % tl)
    s101 = [a for a in px.access_lines() if a.get("status") == 101]
    eq((s101[0].get("tls"), s101[0].get("sni")), ("TLSv1.3", "x.b.test"), "tls/sni on the 101 access line")


@case(timeout=120)
def ws_client_to_tls_backend(t):
    """websockets ws:// client -> switchyard -> ssl-wrapped websockets server
    (upstream tls with ca and sni): 8 MiB each way with SHA-256."""
    pki = PKI(t.dir)
    cert, key = pki.leaf("wsbe", "wsbackend.test", ["DNS:wsbackend.test"])
    port = t.free_port()
    events = t.path("ws_events.jsonl")
    _ws_server(t, port, events, pki.path(cert), pki.path(key))
    text = tls_config({"app": ["127.0.0.1:%d" % port]},
                      upstream_tls={"app": 'ca = "%s"; sni = "wsbackend.test";' % pki.ca},
                      extra='tunnel = { mode = "splice"; };')
    px = t.proxy(config_text=text)
    digest = _ws_roundtrip(t, "ws://127.0.0.1:%d/to-tls" % px.port)
    hdrs = _check_ws_events(events, digest, 8 * MiB)
    eq(hdrs.get("x-forwarded-proto"), "http", "X-Forwarded-Proto at the ws server (plain client)")
    tl = check_tunnel_line(px, "copy", "backend", "backend EOF")
    if tl["bytes_up"] < 8 * MiB or tl["bytes_down"] < 8 * MiB:
        raise AssertionError("tunnel byte counts too small: %r" % tl)


@case(timeout=120)
def wss_through_two_proxies(t):
    """wss:// client -> switchyard A (TLS listener, TLS upstream) -> switchyard
    B (TLS listener) -> plain ws server: TLS on both sides of A."""
    port = t.free_port()
    events = t.path("ws_events.jsonl")
    _ws_server(t, port, events)
    pki, certs = standard_pki(t)
    pb = t.proxy(config_text=tls_config({"app": ["127.0.0.1:%d" % port]}, certs=certs))
    pa = t.proxy(config_text=tls_config({"app": ["127.0.0.1:%d" % pb.port]}, certs=certs,
                                        upstream_tls={"app": 'ca = "%s"; sni = "a.test";' % pki.ca}))
    digest = _ws_roundtrip(t, "wss://127.0.0.1:%d/two" % pa.port, client_ctx(ca=pki.path(pki.ca)),
                           server_hostname="a.test")
    _check_ws_events(events, digest, 8 * MiB)
    check_tunnel_line(pa, "copy", "backend", "backend EOF")
    lb = [a for a in pb.access_lines() if a.get("status") == 101]
    eq((lb[0].get("tls"), lb[0].get("sni")), ("TLSv1.3", "a.test"), "tls/sni at the inner proxy")


def _upgrade_over_mem(m, path="/ws"):
    key = ws_key()
    head, _ = ws_request(key=key, target=path)
    m.send(head)
    got = m.recv_until(b"\r\n\r\n")
    resp, _, rest = got.partition(b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 101 "), "101 expected, got %r" % resp[:200]
    assert ("Sec-WebSocket-Accept: " + ws_accept(key)).encode() in resp, "accept in %r" % resp
    return rest


@case(timeout=40)
def half_close_client_close_notify(t):
    """TLS client sends data then close_notify, TCP stays open: the plain
    backend gets the data then EOF (FIN), and can still answer; the client
    reads the answer, then the proxy's close_notify."""
    res = {}

    def after(tun):
        tun.recv_exact_total(len(b"up before close"))
        res["up"] = tun.recv_to_eof()
        tun.send(b"answer after the client's half-close")
        tun.sock.shutdown(socket.SHUT_WR)
        tun.recv_to_eof(timeout=5)

    be = UpgradeBackend(t, after=after)
    px = tls_proxy(t, be, extra='tunnel = { mode = "splice"; };')
    base = fd_count(px.pid)
    m = mem_connect(px.port, client_ctx(), sni="a.test")
    rest = _upgrade_over_mem(m)
    eq(rest, b"", "bytes after the 101")
    m.send(b"up before close")
    m.close_notify()
    down = m.recv_to_eof(10)
    eq(down, b"answer after the client's half-close", "bytes after the client's close_notify")
    eq(res.get("up"), b"up before close", "what the backend got before EOF")
    assert m.got_close_notify, "the proxy closed TLS without close_notify (ragged EOF)"
    m.sock.close()
    check_tunnel_line(px, "copy", "client", "client EOF", up=15, down=36)
    px.wait_fds(base, timeout=5)


@case(timeout=40)
def half_close_backend_fin_to_close_notify(t):
    """The plain backend sends data then FIN: the TLS client gets the data
    then close_notify while TCP stays usable; it then sends more, which
    reaches the backend, then closes."""
    res = {}

    def after(tun):
        tun.send(b"bye from backend")
        tun.sock.shutdown(socket.SHUT_WR)
        res["late"] = tun.recv_to_eof(timeout=10)

    be = UpgradeBackend(t, after=after)
    px = tls_proxy(t, be)
    base = fd_count(px.pid)
    m = mem_connect(px.port, client_ctx(), sni="a.test")
    rest = _upgrade_over_mem(m)
    got = rest + m.recv_to_eof(10)
    eq(got, b"bye from backend", "bytes before the backend's half-close")
    assert m.got_close_notify and not m.tcp_eof, \
        "backend FIN must become close_notify with TCP still open (close_notify %s, tcp eof %s)" % (
            m.got_close_notify, m.tcp_eof)
    m.send(b"late data from the client")
    m.close_notify()
    wait_until(lambda: "late" in res, 10, what="backend EOF")
    eq(res["late"], b"late data from the client", "bytes the backend got after its half-close")
    wait_closed_sock(m.sock, 5)
    m.sock.close()
    check_tunnel_line(px, "copy", "backend", "backend EOF", up=25, down=16)
    px.wait_fds(base, timeout=5)


@case(timeout=40)
def half_close_to_tls_backend(t):
    """Plain client FIN -> close_notify to a TLS backend (TCP still open);
    the backend answers after it and sends close_notify -> the client gets
    the answer then FIN."""
    pki = PKI(t.dir)
    cert, key = pki.leaf("backend", "backend.test", ["DNS:backend.test"])
    res = {}

    def handler(m, rec):
        head = m.recv_until(b"\r\n\r\n")
        key_ = re.search(rb"Sec-WebSocket-Key: (\S+)", head).group(1).decode()
        m.send(resp_101(key_))
        res["up"] = m.recv_to_eof(10)
        res["close_notify"], res["tcp_eof"] = m.got_close_notify, m.tcp_eof
        m.send(b"answer from the tls backend")
        m.close_notify()
        rec.sock.shutdown(socket.SHUT_WR)
        try:
            rec.sock.settimeout(5)
            while rec.sock.recv(65536):
                pass
        except OSError:
            pass

    be = TLSBackend(t, pki, cert, key, handler)
    px = t.proxy(config_text=tls_config({"app": [be]}, upstream_tls={"app": 'ca = "%s"; sni = "backend.test";' % pki.ca}))
    base = fd_count(px.pid)
    c = px.connect()
    key_ = ws_key()
    c.send(ws_request(key=key_)[0])
    head = c.rd.read_until(b"\r\n\r\n", time.monotonic() + 10)
    assert head.startswith(b"HTTP/1.1 101 "), head
    c.send(b"client data then FIN")
    c.sock.shutdown(socket.SHUT_WR)
    down = c.read_until_close(10)
    eq(down, b"answer from the tls backend", "bytes after the client's FIN")
    eq(res.get("up"), b"client data then FIN", "bytes at the TLS backend")
    eq((res["close_notify"], res["tcp_eof"]), (True, False),
       "client FIN arrives at the TLS backend as close_notify with TCP open (close_notify, tcp eof)")
    c.close()
    check_tunnel_line(px, "copy", "client", "client EOF", up=20, down=27)
    px.wait_fds(base, timeout=5)


@case(timeout=30)
def tls_backend_close_delimited_body(t):
    """A TLS backend's close-delimited body ends with close_notify + FIN
    (clean) or with a bare FIN (a dirty shutdown, which many servers do; the
    proxy sets allow_dirty_shutdown, so it is an EOF): the client gets the
    whole body either way."""
    pki = PKI(t.dir)
    cert, key = pki.leaf("backend", "backend.test", ["DNS:backend.test"])
    body = blob(200000, 5)

    def handler(m, rec):
        head = m.recv_until(b"\r\n\r\n")
        m.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        if b"/clean" in head:
            m.close_notify()
        rec.sock.shutdown(socket.SHUT_WR)
        try:
            rec.sock.settimeout(5)
            while rec.sock.recv(65536):
                pass
        except OSError:
            pass

    be = TLSBackend(t, pki, cert, key, handler)
    px = t.proxy(config_text=tls_config({"app": [be]}, upstream_tls={"app": 'ca = "%s"; sni = "backend.test";' % pki.ca}))
    with px.no_fd_leak():
        for path in ("/clean", "/dirty"):
            c = px.connect()
            r = c.get(path, headers=[("Connection", "close")])
            eq((r.status, r.body_len, r.sha256), (200, len(body), sha256(body)), "close-delimited body via %s" % path)
            c.expect_closed()
            c.close()


CLIENT_ENDINGS = [
    # name, close_notify after the request, then: "fin" (shutdown) / "close"; is the answer expected
    ("close_notify_then_close", True, "close", False),
    ("close_notify_then_fin", True, "fin", True),
    ("close_notify_only", True, None, True),
    ("fin_without_close_notify", False, "fin", True),
    ("close_without_close_notify", False, "close", False),
]


def _client_ending_case(notify, then, answer):
    def fn(t):
        """A TLS client sends a request and ends its side in one of several
        ways: no fd may stay open, and a client that can still read gets
        its answer (as a half-closed plain client does)."""
        be = t.http_backend(Reply(200, b"answer", delay=0.2))
        px = tls_proxy(t, be)
        base = fd_count(px.pid)
        for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            m = mem_connect(px.port, client_ctx(maxv=maxv), sni="a.test")
            m.send(REQ)
            if notify:
                m.close_notify()
            if then == "fin":
                m.sock.shutdown(socket.SHUT_WR)
            elif then == "close":
                m.sock.close()
            if answer:
                try:
                    got = m.recv_to_eof(5)
                except socket.timeout:
                    raise AssertionError("%s: no answer within 5 s after the client's request and half-close"
                                         % maxv.name)
                except ssl.SSLError as e:
                    raise AssertionError("%s: TLS error instead of the answer: %s" % (maxv.name, e))
                assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"answer"), \
                    "%s: answer %r" % (maxv.name, got[:200])
                m.sock.close()
            try:
                px.wait_fds(base, timeout=3)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (maxv.name, e))
        if answer:
            eq(len(be.requests), 2, "requests at the backend")
    return fn


for _n, _no, _th, _an in CLIENT_ENDINGS:
    register("client_ending_" + _n, _client_ending_case(_no, _th, _an), 40)


# ---------------------------------------------------------------------------
# bad input on a TLS port, handshake timeout


GARBAGE = [
    # name, bytes to send, then shut down our sending side?
    ("plain_http", b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", False),
    ("random_bytes", bytes(range(256)) * 8, False),
    ("random_bytes_fin", os.urandom(0) + bytes((i * 37 + 11) & 255 for i in range(3000)), True),
    ("truncated_client_hello_fin", None, True),
    ("tls_record_bad_length", b"\x16\x03\x01\xff\xff" + b"\x01" * 64, True),
]


def _garbage_case(name, data, fin):
    def fn(t):
        be = t.http_backend(Reply(200, b"ok"))
        px = tls_proxy(t, be, timeouts={"header": "3s"})
        base = fd_count(px.pid)
        payload = data if data is not None else client_hello()[:60]
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        try:
            s.sendall(payload)
            if fin:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the proxy may have closed already
            pass
        got, took = wait_closed_sock(s, 2.5)  # well before the 3 s header timeout
        s.close()
        t.note("closed after %.3fs, got %r" % (took, got[:100]))
        assert not got.startswith(b"HTTP/"), "an HTTP answer on a TLS port: %r" % got[:200]
        m = px.wait_log(r"s=\d+ TLS handshake failed: .+")
        t.note(m.group(0))
        px.wait_fds(base, timeout=3)
        eq(len(be.requests), 0, "requests at the backend")
        c = tls_connect(t, px.port, sni="a.test")
        eq(c.get("/").status, 200, "a good TLS client afterwards")
    return fn


for _n, _d, _f in GARBAGE:
    register("garbage_" + _n, _garbage_case(_n, _d, _f), 30)


@case(timeout=30)
def handshake_timeout(t):
    """Connect and send nothing / half a ClientHello: dropped after
    timeouts.header (500ms), logged; a full handshake that is slow to send
    the request is not cut by this path before the header timeout."""
    be = t.http_backend(Reply(200, b"ok"))
    px = tls_proxy(t, be, timeouts={"header": "500ms"})
    base = fd_count(px.pid)
    for payload in (b"", client_hello()[:40]):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        if payload:
            s.sendall(payload)
        got, took = wait_closed_sock(s, 4)
        s.close()
        t.note("payload %d bytes: closed after %.3fs" % (len(payload), took))
        eq(got, b"", "bytes on a stalled handshake")
        if not 0.35 <= took <= 2.0:
            raise AssertionError("stalled handshake (%d bytes sent) closed after %.3fs, want about 0.5s"
                                 % (len(payload), took))
    logs = re.findall(r"TLS handshake not finished in time", px.log())
    eq(len(logs), 2, "'TLS handshake not finished in time' log lines")
    px.wait_fds(base, timeout=3)
    # many at once
    socks = [socket.create_connection(("127.0.0.1", px.port), timeout=5) for _ in range(20)]
    for s in socks:
        wait_closed_sock(s, 4)
        s.close()
    px.wait_fds(base, timeout=3)
    c = tls_connect(t, px.port, sni="a.test")
    eq(c.get("/").status, 200, "a good client afterwards")


@case(timeout=30)
def handshake_aborts_no_leak(t):
    """Clients that reset mid-handshake or right after it, or close after the
    handshake without a request: fds back to baseline, proxy alive."""
    be = t.http_backend(Reply(200, b"ok"))
    px = tls_proxy(t, be)
    base = fd_count(px.pid)
    hello = client_hello()
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        s.sendall(hello)
        if i % 2:
            s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    for i in range(5):
        c = tls_connect(t, px.port, sni="a.test")
        c.close()
    px.wait_fds(base, timeout=5)
    c = tls_connect(t, px.port, sni="a.test")
    eq(c.get("/").status, 200, "a good client afterwards")


# ---------------------------------------------------------------------------
# -t: certificate errors with FILE:LINE


def _check_lines(res, line, rx):
    got = [l for l in res.err.splitlines() if l.startswith("%s:%d: " % (res.path, line))]
    assert got, "no '%s:%d: ...' line in stderr %r" % (res.path, line, res.err)
    assert re.search(rx, got[0]), "message %r does not match /%s/" % (got[0], rx)


def _tls_conf(t, certs_lines, upstream_tls=""):
    """Config with each certificate entry on its own line; line numbers: the
    first entry is on line 3."""
    port = t.free_port()
    return "\n".join([
        'listen = ( { address = "127.0.0.1:%d";' % port,
        "  tls = { certificates = (",
    ] + ["    " + l + ("," if i < len(certs_lines) - 1 else "") for i, l in enumerate(certs_lines)] + [
        '  ); protocols = "TLSv1.2+"; }; } );',
        'upstreams = ( { name = "app"; servers = ( { address = "127.0.0.1:9"; } );%s } );' % upstream_tls,
        'routes = ( { name = "all"; upstream = "app"; } );',
        ""])


# root reads a mode-0 file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH:
# without them uid 0 gets the owner bits like anyone else (Permission denied)
_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
           "--bounding-set=-dac_override,-dac_read_search", "--"]


def _check_config_unprivileged(t, text, name, unreadable):
    """`switchyard -t -c FILE` as a process that cannot read `unreadable`
    (mode 0). As root (CI) it runs without the two capabilities that bypass
    file permissions; first a probe proves that `unreadable` really is
    unreadable for such a process."""
    prefix = _NO_DAC if os.geteuid() == 0 else []
    probe = subprocess.run(prefix + ["cat", unreadable], capture_output=True, timeout=20)
    eq((probe.returncode, b"Permission denied" in probe.stderr), (1, True),
       "probe: %s cat %s (%r)" % (" ".join(prefix), unreadable, probe.stderr))
    path = os.path.join(t.dir, name)
    with open(path, "w") as f:
        f.write(text)
    p = t.run_binary(["-t", "-c", path], prefix=prefix)  # asserts no sanitizer report
    err = p.stderr.decode("utf-8", "replace")
    return ConfigCheck(path, p.returncode, p.stdout.decode("utf-8", "replace"), err)


@case(timeout=30)
def config_check_tls(t):
    pki, certs = standard_pki(t)
    other = pki.leaf("other", "other.test", ["DNS:other.test"])
    ok = ['{ cert = "%s"; key = "%s"; }' % c for c in certs]
    res = t.check_config(_tls_conf(t, ok), "good.conf")
    eq(res.rc, 0, "-t on a good TLS config with relative paths (%r)" % res.err[-400:])
    # absolute paths too
    ab = ['{ cert = "%s"; key = "%s"; }' % (pki.path(c), pki.path(k)) for c, k in certs]
    res = t.check_config(_tls_conf(t, ab), "abs.conf")
    eq(res.rc, 0, "-t with absolute paths (%r)" % res.err[-400:])
    # relative paths resolve against the config file's directory, not the cwd
    p = t.run_binary(["-t", "-c", os.path.join(t.dir, "good.conf")], cwd="/")
    eq(p.returncode, 0, "-t from another working directory (%r)" % p.stderr[-300:])

    # a missing certificate file (line 4), a key that does not match (line 5)
    bad = [ok[0], '{ cert = "missing.pem"; key = "a.key"; }', '{ cert = "a.pem"; key = "%s"; }' % other[1]]
    res = t.check_config(_tls_conf(t, bad), "bad.conf")
    t.note(res.err)
    eq(res.rc, 1, "exit status of -t")
    _check_lines(res, 4, r"missing\.pem")
    _check_lines(res, 5, r"(?i)%s.*(match|mismatch)|(match|mismatch).*%s" % (re.escape(other[1]), re.escape(other[1])))
    # an unreadable key (mode 0; as root, see _check_config_unprivileged)
    os.chmod(pki.path("a.key"), 0)
    try:
        res = _check_config_unprivileged(t, _tls_conf(t, [ok[0], ok[2]]), "unreadable.conf", pki.path("a.key"))
        eq(res.rc, 1, "exit status with an unreadable key (%r)" % res.err)
        _check_lines(res, 4, r"a\.key: cannot load private key: .*Permission denied")
    finally:
        os.chmod(pki.path("a.key"), 0o600)
    # a missing key file, an empty certificates list, bad protocols, unknown key, missing ca
    res = t.check_config(_tls_conf(t, ['{ cert = "a.pem"; key = "nokey.key"; }']), "nokey.conf")
    eq(res.rc, 1, "exit status with a missing key")
    _check_lines(res, 3, r"nokey\.key")
    text = _tls_conf(t, ok[:1], ' tls = { ca = "no-such-ca.pem"; sni = "x"; };')
    res = t.check_config(text, "noca.conf")
    eq(res.rc, 1, "exit status with a missing ca")
    _check_lines(res, 5, r"no-such-ca\.pem")
    text = _tls_conf(t, ok[:1]).replace('protocols = "TLSv1.2+"', 'protocols = "TLSv1.1+"')
    res = t.check_config(text, "proto.conf")
    eq(res.rc, 1, "exit status with protocols TLSv1.1+")
    _check_lines(res, 4, r"protocols")
    text = _tls_conf(t, ok[:1]).replace('protocols = "TLSv1.2+";', 'protocols = "TLSv1.2+"; ciphers = "x";')
    res = t.check_config(text, "unknown.conf")
    eq(res.rc, 1, "exit status with an unknown key in tls")
    _check_lines(res, 4, r"ciphers")
    res = t.check_config(_tls_conf(t, []).replace("certificates = (\n", "certificates = ( "), "empty.conf")
    eq(res.rc, 1, "exit status with no certificates (%r)" % res.err)
    assert re.search(r"certificates", res.err), "message for empty certificates: %r" % res.err


@case(timeout=30)
def startup_fails_on_bad_cert(t):
    """Starting (not -t) with a mismatched pair: exit 1, message names the file."""
    pki, certs = standard_pki(t)
    text = tls_config({"app": [t.dead_port()]}, certs=[(certs[0][0], certs[1][1])])
    path = t.path("bad.conf")
    with open(path, "w") as f:
        f.write(text.replace("{port}", str(t.free_port())))
    p = t.run_binary(["-c", path])
    err = p.stderr.decode(errors="replace")
    eq(p.returncode, 1, "exit status (%r)" % err[-300:])
    assert "wild.key" in err, "message names the key file: %r" % err
