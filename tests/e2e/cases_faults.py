"""Faults (issue 16): peers that fail in the middle of things. A backend
resets a response or a tunnel, or dies; a client resets its upload; a
connect is refused or never answered; the access log's disk is full.

Each case asserts what the client sees (never a fake complete body: the
bytes relayed so far, then the close), what the backend sees (the proxy
closes its connection), the log lines with their cause, and that the proxy's
descriptors are back to where they were (the harness checks that at cleanup
too).
"""

import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from harness import Reply, blackhole_port, check_error_response, eq, fd_kinds, register, wait_listen, wait_until
from wslib import (UpgradeBackend, check_fds_back, client_recv_exact, read_101, relayed_101, tcase,
                   wait_tunnel_line, ws_key, ws_request)

GET = b"GET /fault HTTP/1.1\r\nHost: f.test\r\n\r\n"


def rst(sock):
    """Close with a reset (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def warn_line(px, text):
    return px.wait_log(r"^\S+ warn s=\d+ %s$" % re.escape(text))


def one_access(px, pred=lambda a: a.get("event") is None):
    px.wait_access(1, pred)
    time.sleep(0.05)  # a second line would show up now
    a = [x for x in px.access_lines() if pred(x)]
    eq(len(a), 1, "access lines (%r)" % a)
    return a[0]


def _reset_mid_response(t, head, part, rest_must_not):
    go = threading.Event()
    recs = []

    def handler(rec):
        recs.append(rec)
        rec.recv_until(b"\r\n\r\n")
        rec.send(head + part)
        go.wait(20)
        rst(rec.sock)

    be = t.raw_backend(handler)
    px = t.proxy(be)
    base = px.fd_count()
    c = px.connect()
    c.send(GET)
    deadline = time.monotonic() + 10
    got_head = c.rd.read_until(b"\r\n\r\n", deadline)
    got = bytearray()
    c.rd.read_exact(len(part), deadline, got.extend)
    go.set()  # the client has everything relayed so far; now the backend resets
    rest = c.read_until_close(10)
    eq(rest, b"", "bytes after the backend's reset")
    t.note("client head %r" % got_head)
    assert rest_must_not not in bytes(got), "the client got a completed body"
    reason = "backend connection error during the response"
    warn_line(px, reason)
    a = one_access(px)
    eq((a["status"], a.get("reason")), (200, reason), "access line (status, reason)")
    px.wait_fds(base)
    return got_head, bytes(got)


def backend_rst_mid_response_content_length(t):
    """Head with Content-Length 100000 and 3000 bytes, then a reset: the
    client has the head and the 3000 bytes, then the close."""
    head, got = _reset_mid_response(t, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"r" * 3000, b"\0")
    eq(head, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nVia: 1.1 switchyard\r\n\r\n", "relayed head")
    eq(got, b"r" * 3000, "relayed part")


def backend_rst_mid_response_chunked(t):
    """A chunked response reset after one chunk: the client has that chunk,
    then the close, never a last chunk."""
    head, got = _reset_mid_response(t, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                    b"bb8\r\n" + b"c" * 3000 + b"\r\n", b"0\r\n\r\n")
    eq(head, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 switchyard\r\n\r\n", "relayed head")
    eq(got, b"bb8\r\n" + b"c" * 3000 + b"\r\n", "relayed chunk")


def backend_rst_before_answer(t):
    """A POST (not retried: not idempotent, has a body) whose backend resets
    before a byte of the answer: 502, the client closed, logged."""
    def handler(rec):
        rec.recv_until(b"hello")
        rst(rec.sock)

    be = t.raw_backend(handler)
    px = t.proxy(be)
    base = px.fd_count()
    c = px.connect()
    c.send(b"POST /up HTTP/1.1\r\nHost: f.test\r\nContent-Length: 5\r\n\r\nhello")
    data = c.read_until_close(10)
    eq(check_error_response(data, 502), "backend connection error", "502 reason")
    px.wait_log(r"^\S+ warn s=\d+ 502: backend connection error$")
    a = one_access(px)
    eq((a["status"], a.get("reason")), (502, "backend connection error"), "access line")
    eq(be.connections, 1, "backend connections (no retry of a POST)")
    px.wait_fds(base)


for _fn in (backend_rst_mid_response_content_length, backend_rst_mid_response_chunked, backend_rst_before_answer):
    register(_fn.__name__, _fn)


# ---------------------------------------------------------------------------
# tunnels whose backend fails


def _tunnel_line(px):
    return wait_tunnel_line(px, timeout=10)[0]


@tcase()
def backend_rst_mid_tunnel(t, mode):
    """The backend resets an open tunnel: the client sees the close; the
    tunnel line says backend_error with the errno."""
    go = threading.Event()

    def after(tun):
        d = tun.recv(10)  # echo one message, then reset
        tun.send(d)
        go.wait(20)
        rst(tun.sock)

    be = UpgradeBackend(t, after=after)
    px = t.proxy(be, extra='tunnel = { mode = "%s"; };' % mode)
    base = fd_kinds(px.pid)
    key = ws_key()
    c = px.connect()
    c.send(ws_request(key)[0])
    eq(read_101(c), relayed_101(key), "101")
    c.send(b"ping")
    eq(client_recv_exact(c, 4), b"ping", "echo")
    go.set()
    eq(c.read_until_close(10), b"", "bytes after the backend's reset")
    tl = _tunnel_line(px)
    t.note("tunnel line %r" % tl)
    eq((tl["cause"], tl["closed_by"], tl["reason"], tl["mode"]),
       ("backend_error", "backend", "error: Connection reset by peer", mode), "tunnel line (cause, closed_by, reason, mode)")
    eq((tl["bytes_up"], tl["bytes_down"]), (4, 4), "tunnel bytes")
    c.close()
    check_fds_back(px, base, 2)  # a pipe pair may stay in the splice pool


BACKEND_SCRIPT = r'''
import base64, hashlib, socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(8)
print(ls.getsockname()[1], flush=True)
c, _ = ls.accept()
buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(4096)
key = [l.split(b":", 1)[1].strip() for l in buf.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
'''


@tcase()
def backend_killed_mid_tunnel(t, mode):
    """The backend process is killed (SIGKILL) with a tunnel open and nothing
    unread: its kernel closes the socket (FIN), the client sees the close
    (EOF), and once the client closes too the tunnel line says backend_eof."""
    path = t.path("tunnel_backend.py")
    with open(path, "w") as f:
        f.write(BACKEND_SCRIPT)
    p = t.popen([sys.executable, path], stdout=subprocess.PIPE)
    port = int(p.stdout.readline())
    wait_listen(port)
    px = t.proxy(port, extra='tunnel = { mode = "%s"; };' % mode)
    base = fd_kinds(px.pid)
    key = ws_key()
    c = px.connect()
    c.send(ws_request(key)[0])
    eq(read_101(c), relayed_101(key), "101")
    c.send(b"ping-before-the-kill")
    eq(client_recv_exact(c, 20), b"ping-before-the-kill", "echo")
    p.send_signal(signal.SIGKILL)
    p.wait()
    eq(c.read_until_close(10), b"", "bytes after the backend died")
    c.sock.shutdown(socket.SHUT_WR)
    tl = _tunnel_line(px)
    t.note("tunnel line %r" % tl)
    eq((tl["cause"], tl["closed_by"], tl["reason"], tl["mode"]), ("backend_eof", "backend", "backend EOF", mode),
       "tunnel line (cause, closed_by, reason, mode)")
    eq((tl["bytes_up"], tl["bytes_down"]), (20, 20), "tunnel bytes")
    c.close()
    check_fds_back(px, base, 2)  # a pipe pair may stay in the splice pool


# ---------------------------------------------------------------------------
# a client that resets its upload


def client_rst_mid_upload(t):
    """A client resets after 100 kB of a 1 MB upload: the proxy closes the
    backend connection (the backend sees EOF after a truncated body, never a
    complete one), logs why, and frees both descriptors."""
    seen = threading.Event()
    recs = []

    def handler(rec):
        recs.append(rec)
        while len(rec.data) < 50000 and rec.recv(timeout=10):
            pass
        seen.set()
        rec.read_all(timeout=15)

    be = t.raw_backend(handler)
    px = t.proxy(be)
    base = px.fd_count()
    c = px.connect()
    c.send(b"PUT /up HTTP/1.1\r\nHost: f.test\r\nContent-Length: 1000000\r\n\r\n" + b"u" * 100000)
    assert seen.wait(10), "the backend never got 50 kB of the upload"
    rst(c.sock)
    c.closed = True
    wait_until(lambda: recs and recs[0].eof, 10, what="the proxy closing the backend connection")
    got = bytes(recs[0].data)
    head, _, body = got.partition(b"\r\n\r\n")
    t.note("backend got a head and %d body bytes" % len(body))
    assert 0 < len(body) <= 100000, "body bytes at the backend: %d" % len(body)
    reason = "client connection error"
    warn_line(px, reason)
    a = one_access(px)
    t.note("access line %r" % a)
    eq((a["method"], a.get("reason")), ("PUT", reason), "access line (method, reason)")
    px.wait_fds(base)


register("client_rst_mid_upload", client_rst_mid_upload)


# ---------------------------------------------------------------------------
# connects that fail


def connect_refused(t):
    """Nothing listens: 502 naming the refusal, the connect failure logged
    with the server's address."""
    port = t.dead_port()
    px = t.proxy(port)
    base = px.fd_count()
    c = px.connect()
    c.send(GET)
    reason = "no upstream server could be reached (last: Connection refused)"
    eq(check_error_response(c.read_until_close(10), 502), reason, "502 reason")
    px.wait_log(r"^\S+ warn s=1 connect to 127\.0\.0\.1:%d failed: Connection refused$" % port)
    px.wait_log(r"^\S+ warn s=1 502: %s$" % re.escape(reason))
    a = one_access(px)
    eq((a["status"], a.get("reason")), (502, reason), "access line")
    px.wait_fds(base)


def connect_timeout(t):
    """The server never answers the SYN: after timeouts.connect (500 ms) the
    connect is logged as timed out and the client gets the 502."""
    hole = blackhole_port(t)
    if hole is None:
        raise AssertionError("could not build a black-hole listener (backlog not enforced?)")
    px = t.proxy(hole, timeouts={"connect": "500ms"})
    base = px.fd_count()
    c = px.connect()
    c.send(GET)
    reason = "no upstream server could be reached (last: connect timeout)"
    eq(check_error_response(c.read_until_close(15), 502), reason, "502 reason")
    px.wait_log(r"^\S+ warn s=1 connect to 127\.0\.0\.1:%d failed: connect timeout$" % hole)
    a = one_access(px)
    eq((a["status"], a.get("reason")), (502, reason), "access line")
    px.wait_fds(base)


# ---------------------------------------------------------------------------
# the access log's disk is full


def access_log_disk_full(t):
    """access_log = "/dev/full": every write fails with ENOSPC. The error log
    says so exactly once; requests are still answered 200."""
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(be, access_log="/dev/full")
    base = px.fd_count()
    c = px.connect()
    for i in range(5):
        r = c.get("/full-%d" % i)
        eq((r.status, r.body), (200, b"ok"), "answer %d" % i)
    c2 = px.connect()
    eq(c2.get("/other").status, 200, "another connection")
    msg = "access log /dev/full: No space left on device; its lines are lost until it works again"
    px.wait_log(r"^\S+ error s=0 %s$" % re.escape(msg))
    time.sleep(0.2)
    lines = [ln for ln in px.log().splitlines() if "access log" in ln]
    eq([ln.split(" ", 1)[1] for ln in lines], ["error s=0 " + msg], "error-log lines about the access log")
    eq(px.access_lines(), [], "access lines on stderr")
    eq(len(be.requests), 6, "requests at the backend")
    c.close()
    c2.close()
    px.wait_fds(base)


for _fn in (connect_refused, connect_timeout, access_log_disk_full):
    register(_fn.__name__, _fn)
