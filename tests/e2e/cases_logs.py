"""Tunnel lines of the access log (open, progress every log_interval, close
with its cause label) and access_log = "syslog:unix:PATH".
"""

import json
import os
import re
import socket

from harness import case, eq, Reply, wait_until
from wslib import UpgradeBackend, client_recv_exact, read_101, relayed_101, ws_key, ws_request


def conf(backend, extra=""):
    return ('listen = ( { address = "127.0.0.1:{port}"; } );\n'
            'upstreams = ( { name = "app"; servers = ( { address = "%s"; } ); } );\n'
            'routes = ( { name = "all"; upstream = "app"; } );\n%s' % (backend.address, extra))


def open_tunnel(px, seed):
    c = px.connect()
    key = ws_key(seed=seed)
    c.send(ws_request(key)[0])
    eq(read_101(c), relayed_101(key), "101")
    return c


def events(px):
    return [a for a in px.access_lines() if a.get("event") in ("open", "progress", "tunnel")]


@case()
def open_progress_and_close_lines(t):
    """log_interval = "300ms": the 101's line, then "open", then "progress"
    lines with the bytes so far, then the close line with its cause label."""
    be = UpgradeBackend(t)
    px = t.proxy(config_text=conf(be, 'log_interval = "300ms";\n'))
    c = open_tunnel(px, "logs-1")
    c.send(b"x" * 100)
    eq(client_recv_exact(c, 100), b"x" * 100, "echo")
    wait_until(lambda: len([a for a in events(px) if a["event"] == "progress"]) >= 2, 10,
               what="two progress lines")
    c.close()
    px.wait_access(1, lambda a: a.get("event") == "tunnel")
    lines = px.access_lines()
    eq([a.get("event", a.get("status")) for a in lines][:2], [101, "open"], "first two lines")
    access, opened = lines[0], lines[1]
    for key in ("session", "generation", "worker", "client", "route", "upstream", "server"):
        eq(opened[key], access[key], "open line %s" % key)
    eq((opened["protocol"], opened["mode"]), ("websocket", "splice"), "open line protocol, mode")
    progress = [a for a in lines if a.get("event") == "progress"]
    for p in progress:
        eq((p["session"], p["bytes_up"], p["bytes_down"]), (access["session"], 100, 100),
           "progress line %r" % p)
    durations = [p["duration_ms"] for p in progress]
    eq(durations, sorted(durations), "progress durations grow")
    close = lines[-1]
    eq((close["event"], close["closed_by"], close["cause"], close["reason"]),
       ("tunnel", "client", "client_eof", "client EOF"), "close line")
    eq((close["bytes_up"], close["bytes_down"]), (100, 100), "close line bytes")
    eq(lines.index(close), len(lines) - 1, "the close line is the last")


@case()
def no_progress_lines_without_log_interval(t):
    be = UpgradeBackend(t)
    px = t.proxy(config_text=conf(be))
    c = open_tunnel(px, "logs-2")
    c.send(b"abc")
    eq(client_recv_exact(c, 3), b"abc", "echo")
    c.close()
    px.wait_access(1, lambda a: a.get("event") == "tunnel")
    eq([a["event"] for a in events(px)], ["open", "tunnel"], "tunnel events")


@case()
def close_cause_of_a_backend_eof(t):
    """The backend closes first: cause backend_eof, closed_by backend."""
    def close_at_once(tun):
        tun.sock.close()

    be = UpgradeBackend(t, after=close_at_once)
    px = t.proxy(config_text=conf(be))
    c = open_tunnel(px, "logs-3")
    c.expect_closed(5)  # the backend's FIN, passed on; the tunnel ends with ours
    c.close()
    px.wait_access(1, lambda a: a.get("event") == "tunnel")
    close = [a for a in events(px) if a["event"] == "tunnel"][0]
    eq((close["closed_by"], close["cause"]), ("backend", "backend_eof"), "close line")


def syslog_socket(t):
    path = t.path("log.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    t.held.append(s)
    return path, s


@case()
def syslog_datagrams(t):
    """access_log = "syslog:unix:PATH": one datagram per line,
    "<134>switchyard[PID]: " and the JSON object (local0.info)."""
    path, s = syslog_socket(t)
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(be, 'access_log = "syslog:unix:%s";\n' % path))
    r = px.connect().get("/syslog")
    eq(r.status, 200, "status")
    data = s.recv(65536).decode()
    m = re.fullmatch(r"<134>switchyard\[(\d+)\]: (\{.*\})", data)
    if m is None:
        raise AssertionError("not a syslog line: %r" % data)
    eq(int(m.group(1)), px.proc.pid, "pid in the tag")
    line = json.loads(m.group(2))
    eq((line["target"], line["status"], line["route"]), ("/syslog", 200, "all"), "the line")
    if '"target":"/syslog"' in px.log():
        raise AssertionError("the access line went to stderr as well")


@case()
def syslog_socket_missing(t):
    """No socket at the path: the proxy does not start, and says why."""
    be = t.http_backend(Reply(200, b"never"))
    path = t.path("conf")
    missing = t.path("no.sock")
    with open(path, "w") as f:
        f.write(conf(be, 'access_log = "syslog:unix:%s";\nuser = "root";\n' % missing)
                .replace("{port}", "1"))
    r = t.run_binary(["-c", path])
    eq(r.returncode, 1, "exit status")
    eq(r.stderr.decode().strip().splitlines()[-1],
       "switchyard: cannot open log syslog:unix:%s: No such file or directory" % missing,
       "the reason")
    if os.path.exists(missing):
        raise AssertionError("a file appeared at the socket path")
