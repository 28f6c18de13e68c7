"""Upstream keep-alive: pooled backend connections, their limits and retries."""

import os
import re
import socket
import struct
import time

from harness import Reply, case, eq, expect_proxy_error, register, wait_until


def _get(c, target="/"):
    r = c.get(target)
    eq(r.status, 200, "status of %s" % target)
    return r


def _config_text(backend, keepalive):
    return (
        'listen = ( { address = "127.0.0.1:{port}"; } );\n'
        'upstreams = ( { name = "app"; keepalive = %d; '
        'servers = ( { address = "127.0.0.1:%d"; } ); } );\n'
        'routes = ( { name = "all"; upstream = "app"; } );\n'
        'workers = 1;\n' % (keepalive, backend.port))  # idle pools are per worker


@case()
def upstream_keepalive_reuses_connection(t):
    """Requests from one client, then from another, share one backend connection;
    the backend is not told to close it."""
    be = t.http_backend(Reply(200, b"pooled\n", close=False))
    px = t.proxy(be)
    c = t.connect(px.port)
    for i in range(3):
        _get(c, "/a%d" % i)
    c.close()
    c2 = t.connect(px.port)
    _get(c2, "/b")
    reqs = be.wait_requests(4)
    eq([r.conn for r in reqs], [reqs[0].conn] * 4, "backend connection of each request")
    eq([r.get("Connection") for r in reqs], [None] * 4, "Connection field sent to the backend")


@case()
def upstream_keepalive_off_closes(t):
    """keepalive = 0: every request gets its own connection and says Connection: close."""
    be = t.http_backend(Reply(200, b"x\n", close=False))
    px = t.proxy(config_text=_config_text(be, 0))
    c = t.connect(px.port)
    _get(c, "/1")
    _get(c, "/2")
    reqs = be.wait_requests(2)
    eq(len({r.conn for r in reqs}), 2, "distinct backend connections")
    eq([r.get("Connection") for r in reqs], ["close", "close"], "Connection field")


@case()
def upstream_keepalive_backend_closed_idle_connection(t):
    """The backend closes its end after answering (without saying so): the next
    request still succeeds, on a new connection."""
    be = t.http_backend(Reply(200, b"once\n", close=True))
    px = t.proxy(be)
    c = t.connect(px.port)
    _get(c, "/1")
    time.sleep(0.2)  # let the FIN arrive at the pooled connection
    _get(c, "/2")
    reqs = be.wait_requests(2)
    eq(reqs[0].conn != reqs[1].conn, True, "second request on a new connection")


def _race_backend(t, reset, fresh_answers=True):
    """Connection 0 answers its first request with keep-alive, then closes
    (FIN, or RST when reset) the moment the next request head arrives on it,
    without a byte of answer: the race a pooled connection can lose. Later
    connections answer every request (or, with fresh_answers=False, close on
    their first request too)."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nrace\n"

    def close(rec):
        if reset:
            rec.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rec.sock.close()

    def handler(rec):
        heads = 0
        while True:
            try:
                while bytes(rec.data).count(b"\r\n\r\n") <= heads:
                    if not rec.recv(timeout=60):
                        return  # the proxy closed it
            except (socket.timeout, OSError):
                return  # closed at cleanup
            heads += 1
            if (rec.index == 0 and heads == 2) or (rec.index > 0 and not fresh_answers):
                close(rec)
                return
            rec.send(ok)

    return t.raw_backend(handler)


def _targets_by_connection(be):
    return [re.findall(rb"^GET (\S+) HTTP/1.1\r\n", bytes(r.data), re.M) for r in be.records]


def race_case(reset):
    def fn(t):
        """A pooled connection the backend closes at the very moment it is
        reused: the body-less request is sent again on a fresh connection, and
        the client never sees the failure."""
        be = _race_backend(t, reset)
        px = t.proxy(be, log_level="debug")
        c = t.connect(px.port)
        r = c.get("/first")
        eq((r.status, r.body), (200, b"race\n"), "first response")
        c.close()
        c = t.connect(px.port)
        r = c.get("/raced")
        eq((r.status, r.body), (200, b"race\n"), "response to the raced request")
        # the answer came from the fresh connection: every connection and
        # request that led to it is recorded by now
        eq(_targets_by_connection(be), [[b"/first", b"/raced"], [b"/raced"]],
           "requests seen by each backend connection (the pooled one, then the fresh one)")
        px.wait_access(2)
        eq([(a["target"], a["status"]) for a in px.access_lines()], [("/first", 200), ("/raced", 200)],
           "access log")
        px.wait_log(r"debug s=\d+ pooled connection to 127\.0\.0\.1:%d closed; retrying$" % be.port)
    return fn


register("upstream_keepalive_race_retried", race_case(reset=False))
register("upstream_keepalive_race_reset_retried", race_case(reset=True))


@case()
def upstream_keepalive_race_retried_once(t):
    """The retry is made once: when the fresh connection closes without an
    answer too, the client gets the 502 and no third connection is made."""
    be = _race_backend(t, False, fresh_answers=False)
    px = t.proxy(be)
    c = t.connect(px.port)
    eq(c.get("/first").status, 200, "first response")
    c.close()
    c = t.connect(px.port)
    c.request("GET", "/raced")
    eq(expect_proxy_error(c, 502), "backend closed before a complete response head", "502 body")
    # the 502 comes instead of a further attempt: the count is final
    eq(_targets_by_connection(be), [[b"/first", b"/raced"], [b"/raced"]],
       "requests seen by each backend connection")


@case()
def upstream_keepalive_connection_close_response_not_reused(t):
    """A response with Connection: close ends that backend connection."""
    be = t.http_backend(Reply(200, b"bye\n", headers=[("Connection", "close")], close=False))
    px = t.proxy(be)
    c = t.connect(px.port)
    _get(c, "/1")
    _get(c, "/2")
    reqs = be.wait_requests(2)
    eq(reqs[0].conn != reqs[1].conn, True, "second request on a new connection")


@case()
def upstream_keepalive_body_requests_use_fresh_connections(t):
    """A request with a body cannot be replayed, so it never goes on a pooled
    connection (which the backend might be closing)."""
    be = t.http_backend(Reply(200, b"ok\n", close=False))
    px = t.proxy(be)
    c = t.connect(px.port)
    _get(c, "/warm")
    c.request("POST", "/upload", body=b"payload")
    eq(c.read_response(method="POST").status, 200, "POST status")
    reqs = be.wait_requests(2)
    eq(reqs[1].conn != reqs[0].conn, True, "POST on a fresh connection")
    eq(reqs[1].body, b"payload", "POST body")


@case()
def upstream_keepalive_idle_connections_bounded(t):
    """At most `keepalive` idle connections per server stay open."""
    be = t.http_backend(Reply(200, b"x\n", close=False, delay=0.3))
    px = t.proxy(config_text=_config_text(be, 2))
    clients = [t.connect(px.port) for _ in range(5)]
    for c in clients:  # five requests in flight at once: five backend connections
        c.request("GET", "/slow")
    for c in clients:
        eq(c.read_response().status, 200, "status")
    for c in clients:
        c.close()
    reqs = be.wait_requests(5)
    eq(len({r.conn for r in reqs}), 5, "backend connections while busy")
    # the proxy keeps 2 of them: count its established sockets to the backend
    wait_until(lambda: _backend_sockets(px.pid, be.port) == 2, 5,
               what="2 pooled connections left")


def _backend_sockets(pid, port):
    """Established TCP connections of pid whose remote port is port."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            parts = line.split()
            rport = int(parts[2].split(":")[1], 16)
            if rport == port and parts[3] == "01" and parts[9] in inodes:
                n += 1
    return n
