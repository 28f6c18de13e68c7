"""`user`: started as root (as these tests are), switchyard binds, reads its
keys and writes its pid file, then runs as the configured user before
serving; without the key it refuses to serve as root; "root" stays root.
"""

import os
import pwd
import re

from harness import case, eq, free_port, Reply

NOBODY = pwd.getpwnam("nobody")


def ids(pid):
    """(real, effective, saved, fs) uids and gids, and the groups, of pid."""
    with open("/proc/%d/status" % pid) as f:
        status = f.read()
    uid = tuple(int(x) for x in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split())
    gid = tuple(int(x) for x in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split())
    groups = sorted(int(x) for x in re.search(r"^Groups:[ \t]*(.*)$", status, re.M).group(1).split())
    return uid, gid, groups


def conf(t, backend, user_line, extra=""):
    return ('listen = ( { address = "127.0.0.1:{port}"; } );\n'
            'upstreams = ( { name = "app"; servers = ( { address = "%s"; } ); } );\n'
            'routes = ( { upstream = "app"; } );\n'
            'workers = 2;\n%s%s' % (backend.address, extra, user_line))


def root_only():
    if os.geteuid() != 0:
        raise AssertionError("these cases need root (the CI runs as root)")


@case()
def drops_to_the_user_once_bound(t):
    """user = "nobody": every thread runs with nobody's uid and gid (real,
    effective, saved, fs) and its groups, and it serves."""
    root_only()
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(t, be, 'user = "nobody";\n'))
    px.wait_log(r" info s=0 running as user nobody \(uid %d, gid %d\)$"
                % (NOBODY.pw_uid, NOBODY.pw_gid))
    want_groups = sorted(set([NOBODY.pw_gid] + os.getgrouplist("nobody", NOBODY.pw_gid)))
    for task in os.listdir("/proc/%d/task" % px.proc.pid):
        uid, gid, groups = ids(int(task))
        eq(uid, (NOBODY.pw_uid,) * 4, "uids of thread %s" % task)
        eq(gid, (NOBODY.pw_gid,) * 4, "gids of thread %s" % task)
        eq(groups, want_groups, "groups of thread %s" % task)
    c = px.connect()
    r = c.get("/")
    eq((r.status, r.body), (200, b"ok"), "a request as nobody")
    c.close()


@case()
def pid_file_and_keys_before_the_drop(t):
    """The pid file goes where only root may write and the TLS key is
    readable by root only: both are done before the drop."""
    root_only()
    from tls_lib import PKI
    pki = PKI(t.dir)
    cert, key = (pki.path(n) for n in pki.leaf("srv", "localhost"))
    os.chmod(key, 0o600)
    private = t.path("private")
    os.mkdir(private, 0o700)
    pid_file = os.path.join(private, "switchyard.pid")
    be = t.http_backend(Reply(200, b"ok"))
    text = ('listen = ( { address = "127.0.0.1:{port}"; tls = { certificates = ( '
            '{ cert = "%s"; key = "%s"; } ); }; } );\n'
            'upstreams = ( { name = "app"; servers = ( { address = "%s"; } ); } );\n'
            'routes = ( { upstream = "app"; } );\npid_file = "%s";\nuser = "nobody";\n'
            % (cert, key, be.address, pid_file))
    px = t.proxy(config_text=text)
    px.wait_log(r"running as user nobody")
    with open(pid_file) as f:
        eq(f.read().strip(), str(px.proc.pid), "pid file written before the drop")
    eq(ids(px.proc.pid)[0][1], NOBODY.pw_uid, "effective uid")
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=pki.path(pki.ca))
    with socket.create_connection(("127.0.0.1", px.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    eq(data.split(b"\r\n", 1)[0], b"HTTP/1.1 200 OK", "TLS with a root-only key")


def does_not_serve(t, user_line, error_line):
    """Started as root with user_line: exit 1 before serving, the error
    log's last line error_line (a regex), the backend untouched."""
    root_only()
    be = t.http_backend(Reply(200, b"never"))
    path = t.path("user.conf")
    with open(path, "w") as f:
        f.write(conf(t, be, user_line).replace("{port}", str(free_port())))
    r = t.run_binary(["-c", path])
    err = r.stderr.decode()
    eq(r.returncode, 1, "exit status")
    if not re.search(r" error s=0 " + error_line + "$", err, re.M):
        raise AssertionError("no line /%s/ in: %r" % (error_line, err))
    eq(len(be.requests), 0, "requests the backend saw")


@case()
def refuses_root_without_the_key(t):
    """No user key, started as root: it does not serve; exit 1 and why."""
    does_not_serve(t, "", r'refusing to serve as root: set user = "NAME" to run as NAME '
                          r'once bound, or user = "root" to stay root')


@case()
def unknown_user_is_an_error(t):
    does_not_serve(t, 'user = "no-such-user-sy";\n', r'user "no-such-user-sy": no such user')


@case()
def root_when_asked(t):
    """user = "root" keeps root, without a line about it."""
    root_only()
    be = t.http_backend(Reply(200, b"ok"))
    px = t.proxy(config_text=conf(t, be, 'user = "root";\n'))
    eq(ids(px.proc.pid)[0], (0, 0, 0, 0), "uids")
    if "running as user" in px.log():
        raise AssertionError("a 'running as' line for root")
    r = px.connect().get("/")
    eq(r.status, 200, "status")


@case()
def empty_user_is_a_config_error(t):
    be = t.http_backend(Reply(200, b"never"))
    c = t.check_config(conf(t, be, 'user = "";\n').replace("{port}", "1"))
    eq(c.rc, 1, "exit status of -t")
    if not re.search(r":5: bad value 'user' = \"\": expected a user name$", c.err, re.M):
        raise AssertionError("no error line in: %r" % c.err)
