"""upstreams[].retries: a connect failure, or a connection the server closes
or resets before a byte of its answer, sends an idempotent body-less
request to another server (never the same one twice), at most `retries`
times; anything else keeps its 502.
"""

from harness import case, eq, check_error_response

READ_THEN_CLOSE = "close"
READ_THEN_RESET = "reset"


def conf(servers, retries=None):
    srv = ", ".join('{ address = "127.0.0.1:%d"; }' % p for p in servers)
    r = "retries = %d; " % retries if retries is not None else ""
    return ('listen = ( { address = "127.0.0.1:{port}"; } );\n'
            'upstreams = ( { name = "app"; %sservers = ( %s ); } );\n'
            'routes = ( { name = "all"; upstream = "app"; } );\n'
            'timeouts = { shutdown_grace = "3s"; };\n'
            'workers = 1;\n' % (r, srv))


def failing(t, how):
    """A backend that reads a request head and then closes (or resets)
    without answering; .heads counts the heads it read."""
    import socket
    import struct

    def handler(rec):
        rec.recv_until(b"\r\n\r\n")
        if how == READ_THEN_RESET:
            rec.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rec.sock.close()

    be = t.raw_backend(handler)
    be.expect_errors("the proxy may see the reset first")
    return be


def answering(t):
    def handler(rec):
        rec.recv_until(b"\r\n\r\n")
        rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    return t.raw_backend(handler)


def heads(be):
    return be.connections


@case()
def closed_before_answer_goes_to_another_server(t):
    for how in (READ_THEN_CLOSE, READ_THEN_RESET):
        a, b = failing(t, how), answering(t)
        px = t.proxy(config_text=conf([a.port, b.port]))
        c = px.connect()
        r = c.get("/idem")
        eq((r.status, r.body), (200, b"ok"), "%s: response" % how)
        eq((heads(a), heads(b)), (1, 1), "%s: connections at a and b" % how)
        acc = px.wait_access(1)[-1]
        eq(acc["server"], b.address, "%s: server in the access log" % how)
        px.wait_log(r" warn s=\d+ %s (closed|failed) before answering; trying another server$"
                    % a.address.replace(".", r"\."))
        c.close()
        px.stop()


@case()
def post_is_not_sent_twice(t):
    """A non-idempotent request may have had effects: its 502 stands."""
    a, b = failing(t, READ_THEN_CLOSE), answering(t)
    px = t.proxy(config_text=conf([a.port, b.port]))
    c = px.connect()
    c.request("POST", "/once", body=b"")
    data = c.read_until_close(5)
    eq(check_error_response(data, 502), "backend closed before a complete response head", "502 body")
    eq((heads(a), heads(b)), (1, 0), "connections at a and b")


@case()
def retries_bound_the_servers_tried(t):
    """Four servers that all fail, retries = 2: three are tried, then the
    502 says what the last one did."""
    bes = [failing(t, READ_THEN_CLOSE) for _ in range(4)]
    px = t.proxy(config_text=conf([be.port for be in bes], retries=2))
    c = px.connect()
    c.request("GET", "/all-fail")
    data = c.read_until_close(5)
    eq(check_error_response(data, 502), "backend closed before a complete response head", "502 body")
    eq([heads(be) for be in bes], [1, 1, 1, 0], "connections per server")


@case()
def connect_failures_count_too(t):
    """Refused connects use the same budget: with the live server fourth in
    round-robin order, retries = 2 gives up, retries = 3 reaches it."""
    dead = [t.dead_port() for _ in range(3)]
    live = answering(t)
    px = t.proxy(config_text=conf(dead + [live.port], retries=2))
    c = px.connect()
    c.request("GET", "/far")
    data = c.read_until_close(5)
    eq(check_error_response(data, 502), "no upstream server could be reached (last: Connection refused)",
       "502 body with retries = 2")
    eq(heads(live), 0, "connections at the live server")
    px.stop()
    px = t.proxy(config_text=conf(dead + [live.port], retries=3))
    c = px.connect()
    eq(c.get("/far").status, 200, "status with retries = 3")
    eq(heads(live), 1, "connections at the live server")


@case()
def retries_zero_tries_one_server(t):
    dead = t.dead_port()
    live = answering(t)
    px = t.proxy(config_text=conf([dead, live.port], retries=0))
    c = px.connect()
    c.request("GET", "/one")
    data = c.read_until_close(5)
    eq(check_error_response(data, 502), "no upstream server could be reached (last: Connection refused)",
       "502 body")
    eq(heads(live), 0, "connections at the live server")
