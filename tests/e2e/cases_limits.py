"""The descriptor limit: switchyard sizes RLIMIT_NOFILE from its config,
warns when the hard limit cannot hold max_connections, and then serves at
most what fits, pausing accept cleanly instead of failing with EMFILE.

The proxy runs under `prlimit --nofile=SOFT:HARD` through a small wrapper
that execs the real binary (same pid), as an operator's LimitNOFILE= would.
"""

import os
import resource
import selectors
import socket
import subprocess
import time

from harness import case, eq, Reply

# harness config: 1 listener, 1 upstream server with keepalive 32, logs on
# stderr, splice mode: fixed = 32 reserve + 1 + 32 = 65 descriptors
FIXED = 65
MIN_PIPES = 32


def needed(max_connections):
    return FIXED + 2 * max_connections + 2 * (max_connections // 4)


# Cases that need a limit raised stay within the hard limit we have (no
# CAP_SYS_RESOURCE in containers): 300 connections need 815 descriptors,
# under the 1024 that most machines allow.
CONNS = 300


def hard_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def under_prlimit(t, soft, hard):
    """Point t at a wrapper running the binary under prlimit; returns it."""
    path = t.path("switchyard-prlimit-%d-%d" % (soft, hard))
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec prlimit --nofile=%d:%d -- %s "$@"\n' % (soft, hard, t.binary))
    os.chmod(path, 0o755)
    t.binary = path
    return path


def nofile_limits(pid):
    """(soft, hard) 'Max open files' of a process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for ln in f:
            if ln.startswith("Max open files"):
                soft, hard = ln.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


def warn_lines(px):
    return [ln.split(" s=0 ", 1)[1] for ln in px.log().splitlines() if " warn s=0 " in ln]


def read_one_response(s, i):
    data = b""
    s.settimeout(5)
    while not data.endswith(b"\r\n\r\nserved"):
        d = s.recv(4096)
        if not d:
            break
        data += d
    if not data.startswith(b"HTTP/1.1 200 OK\r\n") or not data.endswith(b"\r\n\r\nserved"):
        raise AssertionError("client %d: unexpected answer %r" % (i, data[:200]))


def served_within(clients, pending, wait):
    """Indexes of the pending clients whose response starts arriving within
    `wait` seconds (each read completely)."""
    got = set()
    deadline = time.monotonic() + wait
    with selectors.DefaultSelector() as sel:
        for i in pending:
            sel.register(clients[i], selectors.EVENT_READ, i)
        while len(got) < len(pending):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                read_one_response(key.fileobj, key.data)
                sel.unregister(key.fileobj)
                got.add(key.data)
    return got


@case(timeout=90)
def hard_limit_256_pauses_accept_and_serves_everyone(t):
    """max_connections 1000 under 256:256: the warning names the numbers,
    at most 63 connections are accepted at once (no EMFILE, no spinning) and
    every one of 300 waiting clients is served as slots free up."""
    be = t.http_backend(Reply(200, b"served"))
    under_prlimit(t, 256, 256)
    px = t.proxy(be, limits={"max_connections": 1000})
    fit = (256 - FIXED - 2 * MIN_PIPES) // 2
    eq(fit, 63, "connections that fit (arithmetic of this test)")
    eq(warn_lines(px), ["max_connections 1000 needs about %d descriptors; the hard limit is 256: "
                        "serving at most %d connections; raise LimitNOFILE= or ulimit -Hn"
                        % (needed(1000), fit)], "warning lines")
    eq(nofile_limits(px.pid), (256, 256), "limits of the proxy")

    clients = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        s.sendall(b"GET /%d HTTP/1.1\r\nHost: limits.test\r\n\r\n" % i)
        clients.append(s)
    try:
        pending = set(range(300))
        rounds = 0
        while pending:
            got = served_within(clients, pending, 3.0)
            if not got:
                raise AssertionError("no client served in 3s with %d waiting" % len(pending))
            eq(len(got), min(fit, len(pending)), "clients served in round %d" % rounds)
            if rounds == 0:
                # held: nobody else gets in, and waiting costs no CPU
                cpu0 = px.cpu_seconds()
                extra = served_within(clients, pending - got, 1.0)
                cpu = px.cpu_seconds() - cpu0
                t.note("cpu while paused: %.3fs" % cpu)
                eq(extra, set(), "clients served beyond the limit")
                assert cpu < 0.5, "proxy used %.2fs CPU in 1s while paused (spinning?)" % cpu
            for i in got:
                clients[i].close()
            pending -= got
            rounds += 1
        t.note("300 clients served in %d rounds" % rounds)
    finally:
        for s in clients:
            s.close()
    eq(len(be.requests), 300, "requests the backend saw")
    assert "Too many open files" not in px.log(), "EMFILE reached: %s" % px.log()[-600:]


@case()
def soft_limit_raised_to_what_the_config_needs(t):
    """Under a soft limit of 256 with max_connections 300 the proxy raises
    its own soft limit to what it needs (815), says so, and does not warn."""
    be = t.http_backend(Reply(200, b"ok"))
    hard = hard_limit()
    under_prlimit(t, 256, hard)
    px = t.proxy(be, limits={"max_connections": CONNS})
    eq(nofile_limits(px.pid), (needed(CONNS), hard), "soft, hard limit of the proxy")
    px.wait_log(r" info s=0 descriptor limit raised from 256 to %d \(hard limit %d\)$"
                % (needed(CONNS), hard))
    eq(warn_lines(px), [], "warnings")
    eq(px.connect().get("/").status, 200, "served")


@case()
def soft_limit_never_lowered(t):
    """A soft limit already above what the config needs stays as it is."""
    be = t.http_backend(Reply(200, b"ok"))
    hard = hard_limit()
    under_prlimit(t, 900, hard)
    px = t.proxy(be, limits={"max_connections": CONNS})
    eq(nofile_limits(px.pid), (900, hard), "soft, hard limit of the proxy")
    assert "descriptor limit" not in px.log(), px.log()
    eq(warn_lines(px), [], "warnings")


@case()
def limits_nofile_sets_the_soft_limit(t):
    """limits.nofile asks for a number (nginx's worker_rlimit_nofile); below
    what max_connections needs, it warns with that number."""
    be = t.http_backend(Reply(200, b"ok"))
    hard = hard_limit()
    under_prlimit(t, 256, hard)
    px = t.proxy(be, limits={"max_connections": CONNS, "nofile": 700})
    eq(nofile_limits(px.pid), (700, hard), "soft, hard limit of the proxy")
    fit = (700 - FIXED - 2 * MIN_PIPES) // 2
    eq(warn_lines(px), ["max_connections %d needs about %d descriptors; the descriptor limit "
                        "is 700: serving at most %d connections; raise limits.nofile (and the "
                        "hard limit)" % (CONNS, needed(CONNS), fit)], "warning lines")
    eq(px.connect().get("/").status, 200, "served")


def can_raise_hard_limit(hard, want):
    """Whether this machine lets a process raise its hard RLIMIT_NOFILE
    (CAP_SYS_RESOURCE): tried in a throwaway prlimit, never on ourselves."""
    r = subprocess.run(["prlimit", "--nofile=256:%d" % hard, "--", "prlimit",
                        "--nofile=%d:%d" % (want, want), "--", "true"], capture_output=True)
    return r.returncode == 0


@case()
def limits_nofile_above_the_hard_limit(t):
    """limits.nofile above the hard limit: raised when the process may (as
    nginx does), else the proxy uses the hard limit and says so."""
    be = t.http_backend(Reply(200, b"ok"))
    hard = min(hard_limit(), 4096)
    want = hard + 1000
    under_prlimit(t, 256, hard)
    px = t.proxy(be, limits={"max_connections": 100, "nofile": want})
    if can_raise_hard_limit(hard, want):
        eq(nofile_limits(px.pid), (want, want), "soft, hard limit of the proxy")
        eq(warn_lines(px), [], "warnings")
    else:
        eq(nofile_limits(px.pid), (hard, hard), "soft, hard limit of the proxy")
        eq(warn_lines(px), ["limits.nofile %d is above the hard limit %d, which this process "
                            "may not raise: using %d" % (want, hard, hard)], "warning lines")
    eq(px.connect().get("/").status, 200, "served")


@case()
def check_mode_warns_and_exits_0(t):
    """-t prints the same warning on stderr and still exits 0: the limit is
    a property of where it runs, not of the file."""
    under_prlimit(t, 256, 256)
    path = t.path("check.conf")
    with open(path, "w") as f:
        f.write(t.config(limits={"max_connections": 1000}))
    r = t.run_binary(["-t", "-c", path])  # t.binary is the wrapper
    err = r.stderr.decode("utf-8", "replace")
    eq(r.returncode, 0, "exit status (stderr %r)" % err)
    eq(err, "%s: warning: max_connections 1000 needs about %d descriptors; the hard limit is "
            "256: serving at most 63 connections; raise LimitNOFILE= or ulimit -Hn\n"
            % (path, needed(1000)), "stderr")
    eq(r.stdout.decode(), "%s: configuration is valid\n" % path, "stdout")


@case()
def check_mode_quiet_when_it_fits(t):
    """-t with a limit that holds the config: no warning at all."""
    under_prlimit(t, 256, hard_limit())
    path = t.path("check.conf")
    with open(path, "w") as f:
        f.write(t.config(limits={"max_connections": CONNS}))
    r = t.run_binary(["-t", "-c", path])  # t.binary is the wrapper
    eq((r.returncode, r.stderr.decode()), (0, ""), "exit status, stderr")


@case()
def copy_mode_needs_no_pipes(t):
    """tunnel.mode = copy: 2 descriptors per connection, no pipe share."""
    be = t.http_backend(Reply(200, b"ok"))
    under_prlimit(t, 256, 256)
    px = t.proxy(be, limits={"max_connections": 1000}, extra='tunnel = { mode = "copy"; };')
    eq(warn_lines(px), ["max_connections 1000 needs about %d descriptors; the hard limit is 256: "
                        "serving at most %d connections; raise LimitNOFILE= or ulimit -Hn"
                        % (FIXED + 2000, (256 - FIXED) // 2)], "warning lines")


@case()
def websocket_version_repeated_is_named(t):
    """Two Sec-WebSocket-Version fields: 400 whose reason says repeated
    (RFC 6455 §11.3.5 allows one), not missing."""
    be = t.http_backend(Reply(200, b"never"))
    px = t.proxy(be)
    c = px.connect()
    c.request("GET", "/ws", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                     ("Sec-WebSocket-Version", "13"),
                                     ("Sec-WebSocket-Version", "13")])
    r = c.read_response()
    eq(r.status, 400, "status")
    a = px.wait_access(1)[0]
    eq((a["status"], a.get("reason")), (400, "repeated Sec-WebSocket-Version"), "access log")
    eq(len(be.requests), 0, "backend requests")
