"""PROXY protocol in: a listener behind a load balancer (listen[].proxy_protocol
= true) takes the client address from the v1 or v2 header that comes first,
and uses it everywhere (access log, X-Forwarded-For, the header sent on to
servers); connections without a valid header are closed with a log line.
"""

import socket
import struct
import time

from harness import Reply, case, eq, wait_until
from tls_lib import client_ctx, listen_tls, standard_pki

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def conf(backend, listen_extra="proxy_protocol = true;", upstream_extra="", listen=None):
    lst = listen or 'listen = ( { address = "127.0.0.1:{port}"; %s } );' % listen_extra
    return (lst + "\n"
            'upstreams = ( { name = "app"; %s servers = ( { address = "127.0.0.1:%d"; } ); } );\n'
            'routes = ( { name = "all"; upstream = "app"; } );\n'
            'timeouts = { header = "500ms"; shutdown_grace = "3s"; };\n'
            'workers = 1;\n' % (upstream_extra, backend.port))


def v2_inet(src, sport, dst, dport, command=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return V2_SIG + bytes([command, 0x11]) + struct.pack(">H", len(body)) + body


def v2_inet6(src, sport, dst, dport):
    body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack(">HH", sport, dport))
    return V2_SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(body)) + body


def request(host="pp.test"):
    return b"GET /pp HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"


def served(px, be, header, want_client, want_xff):
    c = px.connect()
    c.send(header + request())  # header and request in one segment: nothing after it is lost
    r = c.read_response()
    eq((r.status, r.body), (200, b"ok"), "response")
    a = px.wait_access(1)[-1]
    eq(a["client"], want_client, "access log client")
    eq(be.requests[-1].get("X-Forwarded-For"), want_xff, "X-Forwarded-For at the backend")
    c.close()


@case()
def v1_in(t):
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be))
    served(px, be, b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d\r\n" % px.port,
           "203.0.113.7:51234", "203.0.113.7")


@case()
def v2_in_ipv4_and_ipv6(t):
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be))
    served(px, be, v2_inet("198.51.100.9", 4000, "127.0.0.1", px.port),
           "198.51.100.9:4000", "198.51.100.9")
    served(px, be, v2_inet6("2001:db8::1", 4001, "::1", px.port),
           "[2001:db8::1]:4001", "2001:db8::1")


@case()
def v2_local_uses_the_connection(t):
    """LOCAL (a balancer's own health check): the connection's own address."""
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be))
    c = px.connect()
    c.send(V2_SIG + bytes([0x20, 0x00, 0x00, 0x00]) + request())
    eq(c.read_response().status, 200, "status")
    eq(px.wait_access(1)[-1]["client"], "127.0.0.1:%d" % c.local_port, "access log client")


@case()
def header_then_pipelined_requests(t):
    """Bytes after the header, in the same segment, are the client's: two
    pipelined requests are both answered."""
    be = t.http_backend(Reply(200, b"ok", close=False))
    px = t.proxy(config_text=conf(be))
    c = px.connect()
    c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n" + request() + request())
    eq(c.read_response().status, 200, "first")
    eq(c.read_response().status, 200, "second")
    eq(len(be.requests), 2, "requests at the backend")


@case()
def missing_or_malformed_header_closes(t):
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be))
    for data in (request(),
                 b"PROXY TCP4 203.0.113.7 127.0.0.1 051234 80\r\n" + request(),
                 b"PROXY TCP4 203.0.113.7 127.0.0.1 1 80\n" + request(),
                 b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
                 V2_SIG + bytes([0x31, 0x11, 0x00, 0x0c]) + bytes(12)):
        c = px.connect()
        c.send(data)
        eq(c.read_until_close(5), b"", "bytes before the close of %r" % data[:40])
    wait_until(lambda: px.log().count("PROXY protocol on 127.0.0.1:%d:" % px.port) >= 5, 5,
               what="five refusal lines")
    eq(len(be.requests), 0, "requests at the backend")


@case()
def no_header_in_time(t):
    """A partial header is closed after timeouts.header, saying so."""
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be))
    c = px.connect()
    c.send(b"PROXY TCP4 203.0.113.7")
    t0 = time.monotonic()
    eq(c.read_until_close(5), b"", "bytes before the close")
    t.note("closed after %.2fs (timeouts.header 500ms)" % (time.monotonic() - t0))
    px.wait_log(r" info s=0 PROXY protocol on 127\.0\.0\.1:%d: no PROXY header in time$" % px.port)


@case()
def header_before_tls(t):
    """On a TLS listener the header precedes the handshake."""
    pki, certs = standard_pki(t)
    be = t.http_backend(Reply(200, b"ok"))
    lst = listen_tls(certs[:1]).replace("tls = {", "proxy_protocol = true; tls = {")
    px = t.proxy(config_text=conf(be, listen=lst))
    raw = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    t.held.append(raw)
    raw.sendall(b"PROXY TCP4 203.0.113.44 127.0.0.1 7000 443\r\n")
    s = client_ctx().wrap_socket(raw, server_hostname="default.test")
    s.sendall(request("default.test"))
    data = b""
    while b"\r\n\r\nok" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    eq(data.split(b"\r\n")[0], b"HTTP/1.1 200 OK", "status line over TLS")
    a = px.wait_access(1)[-1]
    eq((a["client"], a["tls"]), ("203.0.113.44:7000", "TLSv1.3"), "access log client, tls")
    s.close()


@case()
def carried_address_sent_on_to_servers(t):
    """PROXY in and out: the server's header names the client the balancer
    named, not the balancer."""
    got = []

    def handler(rec):
        got.append(rec.recv_until(b"\r\n\r\n"))
        rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    be = t.raw_backend(handler)
    px = t.proxy(config_text=conf(be, upstream_extra='proxy_protocol = "v1";'))
    c = px.connect()
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d\r\n" % px.port + request())
    eq(c.read_response().status, 200, "status")
    eq(got[0].split(b"\r\n")[0], b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d" % px.port,
       "the header the server got")


@case()
def plain_listener_unaffected(t):
    """Without proxy_protocol a request that starts with "PROXY" is just a
    request with an unknown method (forwarded, as every unknown method)."""
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be, listen_extra=""))
    c = px.connect()
    c.send(request())
    eq(c.read_response().status, 200, "status")
    eq(px.wait_access(1)[-1]["client"], "127.0.0.1:%d" % c.local_port, "access log client")
