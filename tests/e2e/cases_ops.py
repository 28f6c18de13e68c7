"""Operations: what the README and switchyard(8) promise about running the
proxy: the shutdown grace bound, -V / -h and bad options, log targets (file,
"off") and log_level filtering, IPv6 and several listen addresses, pooled
upstream connections closed after timeouts.keepalive."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from harness import ProtocolError, Reply, check_error_response, eq, register, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# README: "SIGTERM or SIGINT: stop accepting, close idle connections and
# tunnels, let requests in flight finish (at most 3 s), exit 0."
GRACE = 3.0
MARGIN = 0.5  # scheduling, process exit

ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn|info|debug) s=(\d+) (.+)$")


def _error_lines(text):
    """(level, session, message) of each error-log line; any other line that
    is not a JSON access line fails."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("{"):
            continue
        m = ERROR_LINE.match(ln)
        if not m:
            raise AssertionError("not an error-log line: %r" % ln)
        out.append((m.group(1), int(m.group(2)), m.group(3)))
    return out


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def _run(t, args, timeout=20):
    p = t.run_binary(args, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def _man_version():
    """The version in the manual page's .TH line."""
    with open(os.path.join(ROOT, "man", "switchyard.8")) as f:
        for ln in f:
            if ln.startswith(".TH"):
                m = re.search(r'"switchyard (\d+\.\d+\.\d+)"', ln)
                if m:
                    return m.group(1)
    raise AssertionError("no version in the .TH line of man/switchyard.8")


# ---------------------------------------------------------------------------
# shutdown grace


def shutdown_grace(sig):
    def fn(t):
        """Three clients at the signal: one idle keep-alive connection (closed
        at once), one request answered 2 s after the signal (delivered, then
        closed), one request whose backend never answers (cut when the 3 s
        grace ends). The proxy exits 0 within the bound."""
        signalled = threading.Event()

        def script(req):
            if req.target == "/slow":
                signalled.wait(20)
                return Reply(200, b"done", delay=2.0)
            if req.target == "/hang":
                return Reply(hang=True)
            return Reply(200, b"idle", close=False)

        be = t.http_backend(script)
        px = t.proxy(be)
        idle = px.connect()
        r = idle.get("/first")
        eq((r.status, r.body), (200, b"idle"), "idle client's request")
        slow, hang = px.connect(), px.connect()
        slow.request("GET", "/slow")
        hang.request("GET", "/hang")
        be.wait_requests(3, complete=False)  # /slow waits for the signal
        t0 = time.monotonic()
        px.proc.send_signal(sig)
        signalled.set()

        def left():  # of the documented bound
            return t0 + GRACE + MARGIN - time.monotonic()

        eq(idle.read_until_close(2), b"", "idle keep-alive client: closed without a byte")
        t_idle = time.monotonic() - t0
        try:
            r = slow.read_response(timeout=GRACE + MARGIN)
        except ProtocolError as e:
            raise AssertionError("the request answered 2 s after the signal was cut at %.2fs: %s"
                                 % (time.monotonic() - t0, e))
        t_slow = time.monotonic() - t0
        eq((r.status, r.body), (200, b"done"), "request answered 2 s after the signal")
        assert hang.is_open_after(0.01), "the hanging request was cut before the slow one was answered (%.2fs)" % t_slow
        eq(slow.read_until_close(GRACE + MARGIN), b"", "slow client after its answer: closed")
        eq(hang.read_until_close(max(0.1, left())), b"", "hanging request: cut without a byte")
        t_hang = time.monotonic() - t0
        try:
            px.proc.wait(max(0.0, left()))
        except subprocess.TimeoutExpired:
            raise AssertionError("switchyard still running %.1fs after %s (bound: %.0f s)"
                                 % (time.monotonic() - t0, sig.name, GRACE))
        t_exit = time.monotonic() - t0
        t.note("idle closed %.3f, slow answered %.3f, hang cut %.3f, exit %.3f" % (t_idle, t_slow, t_hang, t_exit))
        assert t_idle < t_slow, "the idle connection was not closed before the slow answer"
        px.stop(sig=None, expect=0)
        msgs = [m for _, _, m in _error_lines(px.log())]
        eq([m for m in msgs if m.startswith("stop")], ["stopping: 3 open connections", "stopped"],
           "stop lines in the error log")
        eq([(a["target"], a["status"]) for a in px.access_lines() if a["target"] != "/hang"],
           [("/first", 200), ("/slow", 200)], "access log of the finished requests")
    return fn


register("shutdown_grace_sigterm", shutdown_grace(signal.SIGTERM), timeout=30)
register("shutdown_grace_sigint", shutdown_grace(signal.SIGINT), timeout=30)


# ---------------------------------------------------------------------------
# command line

USAGE = ("usage: switchyard -c FILE [-t]\n"
         "       switchyard -c FILE -s reload|stop|quit\n"
         "       switchyard -V | -h\n"
         "  -c FILE  configuration file (libconfig syntax)\n"
         "  -t       check the configuration and exit (0 = valid)\n"
         "  -s SIG   signal the running switchyard named by pid_file:\n"
         "           reload (SIGHUP), stop (SIGTERM), quit (SIGQUIT)\n"
         "  -V       print version and build features\n"
         "  -h       this help\n")


def version_and_help(t):
    """-V: three lines (name and the manual's version, the libraries built
    with, the features), exit 0, nothing on stderr. -h: the usage on stdout,
    exit 0."""
    rc, out, err = _run(t, ["-V"])
    eq((rc, err), (0, ""), "-V exit status and stderr")
    lines = out.split("\n")
    eq(len(lines), 4, "-V: three lines and a final newline (%r)" % out)
    eq(lines[0], "switchyard " + _man_version(), "-V first line (the version in man/switchyard.8)")
    assert re.fullmatch(r"built with: libevent \S+, http-parser \d+\.\d+\.\d+, libconfig \d+\.\d+\.\d+, "
                        r"OpenSSL \d+\.\d+\.\d+\S* .+", lines[1]), "-V second line %r" % lines[1]
    assert re.fullmatch(r"features: [a-z0-9 -]+(, [a-z0-9 -]+)*", lines[2]), "-V third line %r" % lines[2]
    eq(lines[3], "", "-V ends with a newline")
    eq(_run(t, ["-h"]), (0, USAGE, ""), "-h (exit status, stdout, stderr)")


def bad_command_lines(t):
    """A bad option, a missing argument, no -c, an extra argument: exit 2,
    nothing on stdout, the usage on stderr (after getopt's own line)."""
    conf = t.path("ok.conf")
    with open(conf, "w") as f:
        f.write(t.config())
    prog = t.binary
    for args, first in ((["-x"], "%s: invalid option -- 'x'\n" % prog),
                        (["-c"], "%s: option requires an argument -- 'c'\n" % prog),
                        ([], ""),
                        (["-t"], ""),
                        (["-c", conf, "extra"], "")):
        eq(_run(t, args), (2, "", first + USAGE), "switchyard %s (exit status, stdout, stderr)" % " ".join(args))


register("version_and_help", version_and_help)
register("bad_command_lines", bad_command_lines)


# ---------------------------------------------------------------------------
# logs


def _three_exchanges(t, px, dead_host="dead.test", missing_host="none.test", ok_host="ok.test"):
    """A 502 (server refused), a 404 (no route), a 200; each client closes and
    its session ends before the next starts, so the log order is fixed."""
    base = px.fd_count()
    for host, code in ((dead_host, 502), (missing_host, 404)):
        c = px.connect()
        c.request("GET", "/" + host, host=host)
        check_error_response(c.read_until_close(5), code)
        c.close()
        px.wait_fds(base)
    c = px.connect()
    r = c.get("/ok", host=ok_host)
    eq((r.status, r.body), (200, b"ok"), "200 response")
    c.close()
    px.wait_fds(base)


def _log_proxy(t, log_level="info", **kw):
    be = t.http_backend(Reply(200, b"ok", close=True))  # nothing pooled: fds return to baseline
    dead = t.dead_port()
    routes = [{"name": "dead", "host": "dead.test", "upstream": "dead"},
              {"name": "ok", "host": "ok.test", "upstream": "app"}]
    # the "started" line is not on stderr with every setting: wait for the
    # port only (the signal handlers are in place before it listens)
    # max_connections well inside any descriptor limit: no startup warning
    # about it, so the expected lines do not depend on the machine's ulimit
    px = t.proxy(upstreams={"app": [be], "dead": [dead]}, routes=routes, log_level=log_level,
                 limits={"max_connections": 100}, wait_started=False, **kw)
    return px, be, dead


def log_to_files(t):
    """access_log and error_log as paths: every line goes to its file
    (appended after what was there), nothing to stderr."""
    alog, elog = t.path("access.log"), t.path("error.log")
    for p in (alog, elog):
        with open(p, "w") as f:
            f.write("previous run\n")
    px, be, dead = _log_proxy(t, access_log=alog, error_log=elog)
    _three_exchanges(t, px)
    px.stop()
    eq(px.log(), "", "stderr with both logs in files")
    a = _read(alog).splitlines()
    eq(a[0], "previous run", "access log: earlier content kept")
    acc = [json.loads(ln) for ln in a[1:]]
    eq([(x["target"], x["status"]) for x in acc], [("/dead.test", 502), ("/none.test", 404), ("/ok", 200)],
       "access log file (target, status)")
    e = _read(elog)
    eq(e.splitlines()[0], "previous run", "error log: earlier content kept")
    got = _error_lines(e.split("\n", 1)[1])
    eq(got, [("info", 0, "switchyard %s started with %s: 1 worker, generation 1" % (_man_version(), px.config_path)),
             ("warn", 1, "connect to 127.0.0.1:%d failed: Connection refused" % dead),
             ("warn", 1, "502: no upstream server could be reached (last: Connection refused)"),
             ("info", 2, "404: no route for this host and path"),
             ("info", 0, "stopping: 0 open connections"),
             ("info", 0, "stopped")], "error log file")


def access_log_off(t):
    """access_log = "off": no access line anywhere; the error log is intact.
    error_log cannot be "off" (errors are never silenced): -t says so."""
    px, be, dead = _log_proxy(t, access_log="off")
    _three_exchanges(t, px)
    px.stop()
    eq([m for _, _, m in _error_lines(px.log())],
       ["switchyard %s started with %s: 1 worker, generation 1" % (_man_version(), px.config_path),
        "connect to 127.0.0.1:%d failed: Connection refused" % dead,
        "502: no upstream server could be reached (last: Connection refused)",
        "404: no route for this host and path", "stopping: 0 open connections", "stopped"],
       "stderr: error-log messages only, no access line")
    text = t.config(error_log="off")
    res = t.check_config(text, "error-off.conf")
    line = text.splitlines().index('error_log = "off";') + 1
    eq((res.rc, res.err), (1, '%s:%d: bad value \'error_log\' = "off": expected "stderr" or a path\n'
                           % (res.path, line)), "-t with error_log = \"off\" (exit status, stderr)")


register("log_to_files", log_to_files)
register("access_log_off", access_log_off)


# the same three exchanges at every level: (level, session, message) expected
# at "debug"; each lower level keeps the lines at or above it
def _debug_lines(version, conf, dead):
    return [("info", 0, "switchyard %s started with %s: 1 worker, generation 1" % (version, conf)),
            ("warn", 1, "connect to 127.0.0.1:%d failed: Connection refused" % dead),
            ("warn", 1, "502: no upstream server could be reached (last: Connection refused)"),
            ("debug", 1, "close in linger: client closed"),
            ("info", 2, "404: no route for this host and path"),
            ("debug", 2, "close in linger: client closed"),
            ("debug", 3, "close in read_req: client closed"),
            ("info", 0, "stopping: 0 open connections"),
            ("info", 0, "stopped")]


LEVELS = ["error", "warn", "info", "debug"]


def log_level_case(level):
    def fn(t):
        px, be, dead = _log_proxy(t, log_level=level)
        _three_exchanges(t, px)
        px.stop()
        keep = LEVELS[:LEVELS.index(level) + 1]
        want = [x for x in _debug_lines(_man_version(), px.config_path, dead) if x[0] in keep]
        eq(_error_lines(px.log()), want, "error log at log_level %s" % level)
        eq([x["status"] for x in px.access_lines()], [502, 404, 200], "access lines at log_level %s" % level)
        if level == "error":
            # an error-level line does show: a listen address already taken
            taken = socket.socket()
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            conf = t.path("taken.conf")
            with open(conf, "w") as f:
                f.write(t.config(log_level="error", limits={"max_connections": 100}).replace(
                    "listen = ( {", 'listen = ( { address = "127.0.0.1:%d"; }, {' % port))
            rc, out, err = _run(t, ["-c", conf])
            taken.close()
            eq((rc, out, [x for x in _error_lines(err)]),
               (1, "", [("error", 0, "cannot listen on 127.0.0.1:%d: Address already in use" % port)]),
               "a taken listen address at log_level error (exit status, stdout, error lines)")
    return fn


for _level in LEVELS:
    register("log_level_" + _level, log_level_case(_level))


# ---------------------------------------------------------------------------
# listen addresses


def listen_ipv6_and_several(t):
    """One config, three listen addresses: 127.0.0.1, a second IPv4 port and
    [::1]. Each serves; the client address is logged and forwarded per family."""
    be = t.http_backend(Reply(200, b"ok"))
    p2, p6 = t.free_port(), t.free_port()
    text = t.config(be, port=1).replace(
        'listen = ( { address = "127.0.0.1:1"; } );',
        'listen = ( { address = "127.0.0.1:{port}"; }, { address = "127.0.0.1:%d"; },\n'
        '           { address = "[::1]:%d"; } );' % (p2, p6))
    px = t.proxy(config_text=text)
    with px.no_fd_leak():
        clients = []
        for family, addr, port in ((socket.AF_INET, "127.0.0.1", px.port), (socket.AF_INET, "127.0.0.1", p2),
                                   (socket.AF_INET6, "::1", p6)):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((addr, port))
            clients.append((s, addr, s.getsockname()[1]))
            s.sendall(b"GET /%d HTTP/1.1\r\nHost: ops.test\r\nConnection: close\r\n\r\n" % port)
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
            s.close()
            eq(data.split(b"\r\n")[0], b"HTTP/1.1 200 OK", "status through %s:%d" % (addr, port))
            eq(data.endswith(b"\r\n\r\nok"), True, "body through %s:%d (%r)" % (addr, port, data))
    reqs = be.wait_requests(3)
    eq([(q.target, q.get("X-Forwarded-For")) for q in reqs],
       [("/%d" % px.port, "127.0.0.1"), ("/%d" % p2, "127.0.0.1"), ("/%d" % p6, "::1")],
       "backend: (target, X-Forwarded-For)")
    acc = px.wait_access(3)
    want = ["127.0.0.1:%d" % clients[0][2], "127.0.0.1:%d" % clients[1][2], "[::1]:%d" % clients[2][2]]
    eq([a["client"] for a in acc], want, "access log client field")


register("listen_ipv6_and_several", listen_ipv6_and_several)


# ---------------------------------------------------------------------------
# pooled upstream connections and timeouts.keepalive


def pooled_connection_closed_after_keepalive(t):
    """timeouts.keepalive = 300ms: a pooled backend connection is reused
    within that time, and closed by the proxy once it has been idle for it
    (not before), leaving no descriptor behind."""
    events = []  # (what, monotonic time) per backend connection 0
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def handler(rec):
        heads = 0
        while True:
            try:
                while bytes(rec.data).count(b"\r\n\r\n") <= heads:
                    if not rec.recv(timeout=30):
                        events.append(("eof", rec.index, time.monotonic()))
                        return
            except (socket.timeout, OSError) as e:
                events.append(("error %s" % type(e).__name__, rec.index, time.monotonic()))
                return
            heads += 1
            rec.send(ok)
            events.append(("answered", rec.index, time.monotonic()))

    be = t.raw_backend(handler)
    px = t.proxy(be, timeouts={"keepalive": "300ms"})
    base = px.fd_count()
    for i in range(2):  # a new client each time: the reuse is the pool's, not the client's
        c = px.connect()
        r = c.get("/%d" % i)
        eq((r.status, r.body), (200, b"ok"), "response %d" % i)
        c.close()
    wait_until(lambda: any(e[0] != "answered" for e in events), 5, what="the backend connection closed")
    eq([(e[0], e[1]) for e in events], [("answered", 0), ("answered", 0), ("eof", 0)],
       "backend connection 0: both requests, then the proxy's close")
    idle = events[2][2] - events[1][2]
    t.note("closed after %.3fs idle" % idle)
    # libevent's cached clock may start the timer a few ms early: 50 ms slack
    assert idle >= 0.25, "pooled connection closed %.3fs after its last answer, before keepalive 300ms" % idle
    px.wait_fds(base)
    eq(be.connections, 1, "backend connections")


register("pooled_connection_closed_after_keepalive", pooled_connection_closed_after_keepalive)
