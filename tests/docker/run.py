#!/usr/bin/env python3
"""make docker-test: build docker/Dockerfile with buildah, run it with `buildah run`, check it.

    /usr/bin/python3 tests/docker/run.py [--cache DIR] [--keep]

No Docker engine is needed (root, buildah, podman, debootstrap; all in the Makefile's
DEPS). Steps, each printed as a PASS or FAIL line, then a summary; exit 1 if any failed:

  1. docker/compose.yaml and docker/kubernetes.yaml: YAML, known keys (check_manifests.py)
  2. the base debian:bookworm-slim: reused if the image store has it, else imported from
     DIR/bookworm-minbase.tar, else made with `debootstrap --variant=minbase` (about 40 s)
     and saved there; DIR (default /var/cache/switchyard-ci) is outside the tree and kept
  3. `buildah bud --format docker` of docker/Dockerfile (and of docker/app/Dockerfile);
     the image's config (non-root numeric USER, EXPOSE, STOPSIGNAL, HEALTHCHECK, labels)
     and its size against the base (at most 15 MB more; /var/cache/apt empty)
  4. in a container of it: `id -u` is not 0, `switchyard -t` passes on the image's
     config, the compose stack's and the Kubernetes ConfigMap's
  5. the image's config (ports moved to free loopback ports; `buildah run` shares the
     host's network, so the host name app is mapped to 127.0.0.1): an HTTP request and
     a WebSocket echo through it reach docker/app/app.py started on the host; the
     image's HEALTHCHECK command passes; a reload (`switchyard -s reload` inside);
     a stop while a tunnel is open turns the HEALTHCHECK to 503 and exits 0
  6. the compose stack: two app containers and the TCP echo from docker/app's image,
     switchyard on docker/compose/switchyard.conf: round robin HTTP over app1 and app2,
     least-conn WebSocket tunnels on different replicas, the terminate route's echo
     through the bridge, Upgrade refused on the HTTP route, SIGHUP from outside
     (what `docker compose kill -s HUP switchyard` sends) reloads

Every container and image it made is removed at the end (not the cached base);
--keep leaves them for a look. Logs go to a temporary directory, printed on failure.
"""
import argparse
import asyncio
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import check_manifests  # noqa: E402

BASE = "debian:bookworm-slim"
MAX_GROWTH = 15_000_000  # bytes the runtime layers may add to the base
CONF = "/etc/switchyard/switchyard.conf"
TAG = f"{os.getpid()}-{int(time.time())}"
IMAGE = f"localhost/switchyard-docker-test:{TAG}"
APP_IMAGE = f"localhost/switchyard-docker-test-app:{TAG}"


class Result:
    def __init__(self):
        self.passed = self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        line = f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(line)
        return ok


R = Result()
WORK = tempfile.mkdtemp(prefix="switchyard-docker-test-")
CONTAINERS, IMAGES, PROCS = [], [], []


def run(cmd, timeout=120, check=False, log=None, **kw):
    """Runs cmd; returns CompletedProcess with text output (stdout+stderr to log if given)."""
    if log:
        with open(log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                               text=True, **kw)
    else:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}"
                           + (f"\n{p.stderr}" if not log else f" (log {log})"))
    return p


def first(p):
    """The first line a command printed (buildah adds its own lines on a failure)."""
    lines = (p.stdout + "\n" + p.stderr).strip().splitlines()
    return lines[0] if lines else ""


def tail(path, n=30):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def free_port(taken=set()):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


# ---- base image ----------------------------------------------------------------------

def apt_mirror():
    if os.environ.get("MIRROR"):
        return os.environ["MIRROR"]
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for m in re.finditer(r"^\s*(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            uri = m.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


SOURCES = """Types: deb
URIs: {mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def ensure_base(cache):
    """debian:bookworm-slim in the image store: present, from the cached tarball, or made."""
    if run(["podman", "image", "exists", BASE]).returncode == 0:
        return "reused from the image store"
    os.makedirs(cache, exist_ok=True)
    tar = os.path.join(cache, "bookworm-minbase.tar")
    how = f"imported from {tar}"
    if not os.path.isfile(tar):
        mirror = apt_mirror()
        rootfs = os.path.join(cache, "rootfs.tmp")
        shutil.rmtree(rootfs, ignore_errors=True)
        log = os.path.join(WORK, "debootstrap.log")
        start = time.monotonic()
        run(["debootstrap", "--variant=minbase", "bookworm", rootfs, mirror], timeout=900,
            check=True, log=log)
        # apt sources as in Docker's debian:bookworm-slim (bookworm, -updates, -security)
        for f in glob.glob(os.path.join(rootfs, "etc/apt/sources.list")):
            os.remove(f)
        security = mirror[:-len("/debian")] + "/debian-security"
        with open(os.path.join(rootfs, "etc/apt/sources.list.d/debian.sources"), "w") as f:
            f.write(SOURCES.format(mirror=mirror, security=security))
        for d in ("var/lib/apt/lists", "var/cache/apt"):
            for p in glob.glob(os.path.join(rootfs, d, "*")):
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        run(["tar", "-C", rootfs, "-cf", tar + ".tmp", "."], timeout=300, check=True)
        os.replace(tar + ".tmp", tar)
        shutil.rmtree(rootfs, ignore_errors=True)
        how = f"made with debootstrap from {mirror} in {time.monotonic() - start:.0f} s, cached in {tar}"
    run(["podman", "import", tar, BASE], timeout=300, check=True)
    return how


# ---- images and containers -----------------------------------------------------------

def build(dockerfile, tag, log):
    rev = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).stdout.strip() or "unknown"
    start = time.monotonic()
    p = run(["buildah", "bud", "--format", "docker", "--isolation", "chroot", "--layers=false",
             "--pull=never",
             "--build-arg", f"REVISION={rev}", "-f", dockerfile, "-t", tag, ROOT],
            timeout=1800, log=log)
    if p.returncode == 0:
        IMAGES.append(tag)
    return p.returncode == 0, time.monotonic() - start


def image_size(name):
    p = run(["podman", "image", "inspect", "--format", "{{.Size}}", name])
    return int(p.stdout.strip()) if p.returncode == 0 else None


def new_container(image, hosts):
    cmd = ["buildah", "from", "--pull=never"]
    for h in hosts:
        cmd += ["--add-host", f"{h}:127.0.0.1"]
    c = run(cmd + [image], check=True).stdout.strip().splitlines()[-1]
    CONTAINERS.append(c)
    return c


def crun(c, args, env=None, timeout=60):
    cmd = ["buildah", "run", "--isolation", "chroot"]
    for k, v in (env or {}).items():
        cmd += ["--env", f"{k}={v}"]
    return run(cmd + [c, "--"] + args, timeout=timeout)


def cstart(c, args, log):
    """Starts `buildah run c -- args` in the background; SIGTERM to it reaches the command."""
    f = open(log, "a")
    p = subprocess.Popen(["buildah", "run", "--isolation", "chroot", c, "--"] + args,
                         stdout=f, stderr=subprocess.STDOUT)
    PROCS.append(p)
    return p


def ccopy(c, text, path):
    local = os.path.join(WORK, os.path.basename(path))
    with open(local, "w") as f:
        f.write(text)
    os.chmod(local, 0o644)
    run(["buildah", "copy", "--chmod", "0644", c, local, path], check=True)


def stop_proc(p, sig=signal.SIGTERM, timeout=15):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


# ---- clients -------------------------------------------------------------------------

def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")
    except OSError as e:
        return None, {}, str(e)


def wait_for(fn, timeout=15, step=0.2):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


def ws_run(coro_fn, timeout=15):
    async def main():
        return await asyncio.wait_for(coro_fn(), timeout)
    try:
        return asyncio.run(main())
    except Exception as e:  # reported by the caller's check
        return e


def ws_connect(url, **kw):
    import websockets
    return websockets.connect(url, open_timeout=5, close_timeout=2, **kw)


async def ws_echo(url, messages=("hello through switchyard", b"\x00\x01binary\xff")):
    async with ws_connect(url) as ws:
        got = []
        for m in messages:
            await ws.send(m)
            got.append(await ws.recv())
        return got


def rewrite(conf, mapping, extra=""):
    """The config with addresses moved (exact string replacement, each must occur)."""
    for old, new in mapping.items():
        if f'"{old}"' not in conf:
            raise ValueError(f"{old} not in the config")
        conf = conf.replace(f'"{old}"', f'"{new}"')
    return conf + "\n# added by tests/docker/run.py\n" + extra


def healthcheck_cmd(cfg):
    test = (cfg.get("Healthcheck") or {}).get("Test") or []
    if test[:1] == ["CMD"]:
        return test[1:]
    if test[:1] == ["CMD-SHELL"]:
        return ["/bin/sh", "-c", test[1]]
    return None


# ---- the steps -----------------------------------------------------------------------

def step_manifests():
    for name, fn in (("compose.yaml", check_manifests.check_compose),
                     ("kubernetes.yaml", check_manifests.check_kubernetes)):
        errors = fn()
        R.check(f"{name}: YAML, known keys, cross-references", not errors, "; ".join(errors))


def step_image_config(cfg):
    user = cfg.get("User", "")
    uid = user.split(":")[0]
    R.check("image USER is numeric and not root", uid.isdigit() and uid != "0", repr(user))
    ports = set((cfg.get("ExposedPorts") or {}).keys())
    R.check("image EXPOSE 8080 and 9901", {"8080/tcp", "9901/tcp"} <= ports, str(sorted(ports)))
    R.check("image STOPSIGNAL SIGTERM", cfg.get("StopSignal") == "SIGTERM",
            repr(cfg.get("StopSignal")))
    R.check("image HEALTHCHECK set", healthcheck_cmd(cfg) is not None,
            json.dumps(cfg.get("Healthcheck")))
    labels = cfg.get("Labels") or {}
    oci = sorted(k for k in labels if k.startswith("org.opencontainers.image."))
    R.check("image org.opencontainers.image.* labels",
            {"org.opencontainers.image.title", "org.opencontainers.image.version",
             "org.opencontainers.image.revision"} <= set(oci), ", ".join(oci))
    R.check("image ENTRYPOINT and CMD run the image config",
            cfg.get("Entrypoint") == ["/usr/sbin/switchyard"] and
            cfg.get("Cmd") == ["-c", CONF], f"{cfg.get('Entrypoint')} {cfg.get('Cmd')}")


def step_static(c):
    p = crun(c, ["id", "-u"])
    uid = p.stdout.strip()
    R.check("runs as non-root (id -u in the container)", p.returncode == 0 and uid not in ("", "0"),
            f"uid {uid}")
    p = crun(c, ["switchyard", "-V"])
    R.check("switchyard -V", p.returncode == 0, p.stdout.splitlines()[0] if p.stdout else p.stderr)
    p = crun(c, ["switchyard", "-t", "-c", CONF])
    R.check(f"switchyard -t -c {CONF} (the image config)", p.returncode == 0,
            first(p) if p.returncode == 0 else (p.stdout + p.stderr).strip())
    ccopy(c, open(os.path.join(ROOT, "docker/compose/switchyard.conf")).read(), "/tmp/compose.conf")
    p = crun(c, ["switchyard", "-t", "-c", "/tmp/compose.conf"])
    R.check("switchyard -t on docker/compose/switchyard.conf", p.returncode == 0,
            first(p) if p.returncode == 0 else (p.stdout + p.stderr).strip())
    import yaml
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, "docker/kubernetes.yaml"))))
    cm = next(d for d in docs if d and d.get("kind") == "ConfigMap")
    ccopy(c, cm["data"]["switchyard.conf"], "/tmp/k8s.conf")
    p = crun(c, ["switchyard", "-t", "-c", "/tmp/k8s.conf"])
    R.check("switchyard -t on the ConfigMap of docker/kubernetes.yaml", p.returncode == 0,
            first(p) if p.returncode == 0 else (p.stdout + p.stderr).strip())
    p = crun(c, ["du", "-sk", "/var/cache/apt", "/var/lib/apt/lists"])
    kb = sum(int(line.split()[0]) for line in p.stdout.splitlines() if line.strip())
    R.check("apt caches empty in the image", p.returncode == 0 and kb <= 64,
            p.stdout.strip().replace("\n", ", ").replace("\t", " "))


def step_image_run(c, cfg):
    """The image's own config, ports moved, app mapped to the host's loopback."""
    log = os.path.join(WORK, "switchyard-image.log")
    listen, admin, app = free_port(), free_port(), free_port()
    backend = subprocess.Popen([sys.executable, os.path.join(ROOT, "docker/app/app.py"),
                                "--host", "127.0.0.1", "--port", str(app), "--name", "host-app"],
                               stdout=open(os.path.join(WORK, "host-app.log"), "w"),
                               stderr=subprocess.STDOUT)
    PROCS.append(backend)
    conf = rewrite(open(os.path.join(ROOT, "docker/switchyard.conf")).read(),
                   {"0.0.0.0:8080": f"127.0.0.1:{listen}", "0.0.0.0:9901": f"127.0.0.1:{admin}",
                    "app:9000": f"app:{app}"},
                   'pid_file = "/tmp/switchyard.pid";\n')
    ccopy(c, conf, "/tmp/image-test.conf")
    sy = cstart(c, ["switchyard", "-c", "/tmp/image-test.conf"], log)
    base = f"http://127.0.0.1:{listen}"
    up = wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/healthz", 1)[0] == 200)
    up = up and wait_for(lambda: http_get(f"http://127.0.0.1:{app}/healthz", 1)[0] == 200)
    if not R.check("switchyard starts in the container on the image config", bool(up),
                   "" if up else tail(log)):
        stop_proc(sy)
        return
    status, _, body = http_get(f"{base}/hello?from=docker-test")
    try:
        info = json.loads(body)
    except ValueError:
        info = {}
    R.check("HTTP through the container reaches the host backend",
            status == 200 and info.get("instance") == "host-app" and
            "switchyard" in info.get("headers", {}).get("via", ""),
            f"{status} {body.strip()[:200]}")
    got = ws_run(lambda: ws_echo(f"ws://127.0.0.1:{listen}/ws"))
    R.check("WebSocket echo through the container (text and binary)",
            got == ["hello through switchyard", b"\x00\x01binary\xff"], repr(got))
    hc = healthcheck_cmd(cfg)
    env = {"SWITCHYARD_ADMIN": f"127.0.0.1:{admin}"}
    p = crun(c, hc, env=env, timeout=30)
    R.check(f"HEALTHCHECK ({' '.join(hc)}) passes while serving",
            p.returncode == 0, first(p))
    p = crun(c, ["switchyard", "-c", "/tmp/image-test.conf", "-s", "reload"])
    reloaded = p.returncode == 0 and wait_for(lambda: "reloaded" in tail(log, 200), 10)
    status2 = http_get(f"{base}/after-reload")[0]
    R.check("reload in the container (switchyard -s reload), still serving",
            bool(reloaded) and status2 == 200, f"-s reload exit {p.returncode}, then {status2}")

    # stop while a tunnel is open: /healthz 503, the tunnel goes on, exit 0 when it ends
    async def stop_with_tunnel():
        async with ws_connect(f"ws://127.0.0.1:{listen}/ws") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            s = await asyncio.to_thread(
                crun, c, ["switchyard", "-c", "/tmp/image-test.conf", "-s", "stop"])
            await asyncio.sleep(0.5)
            h = await asyncio.to_thread(crun, c, hc, env, 30)
            await ws.send("during")
            during = await ws.recv()
            return s.returncode, h.returncode, first(h), during
    got = ws_run(stop_with_tunnel, 40)
    ok = isinstance(got, tuple) and got[0] == 0 and got[1] != 0 and "503" in got[2] \
        and got[3] == "during"
    R.check("stop with a tunnel open: HEALTHCHECK fails with 503, tunnel still echoes",
            ok, repr(got))
    try:
        rc = sy.wait(15)
    except subprocess.TimeoutExpired:
        rc = stop_proc(sy, signal.SIGKILL)
    R.check("switchyard exits 0 once the tunnel closed", rc == 0 and "stopped" in tail(log, 50),
            f"exit {rc}")
    stop_proc(backend)


def step_compose(c, app_image):
    """docker/compose.yaml's stack: app1, app2, tcp-echo from the app image, the stack's config."""
    log = os.path.join(WORK, "switchyard-compose.log")
    listen, admin, p1, p2, pe = (free_port() for _ in range(5))
    # each service as compose.yaml starts it: the image's ENTRYPOINT and the service's
    # command, its --port moved to a free one on loopback (the host's network)
    import yaml
    services = yaml.safe_load(open(os.path.join(ROOT, "docker/compose.yaml")))["services"]
    info = json.loads(run(["buildah", "inspect", "--type", "image", app_image], check=True).stdout)
    entry = ((info.get("Docker") or {}).get("config") or {}).get("Entrypoint") or []
    apps = []
    for name, port in (("app1", p1), ("app2", p2), ("tcp-echo", pe)):
        args = list(services[name]["command"])
        args[args.index("--port") + 1] = str(port)
        ac = new_container(app_image, [])
        apps.append(cstart(ac, entry + args + ["--host", "127.0.0.1"],
                           os.path.join(WORK, f"{name}.log")))
    conf = rewrite(open(os.path.join(ROOT, "docker/compose/switchyard.conf")).read(),
                   {"0.0.0.0:8080": f"127.0.0.1:{listen}", "0.0.0.0:9901": f"127.0.0.1:{admin}",
                    "app1:9000": f"app1:{p1}", "app2:9000": f"app2:{p2}",
                    "172.30.77.10:7000": f"127.0.0.1:{pe}"},
                   'pid_file = "/tmp/switchyard.pid";\nworkers = 1;  # least-conn counts per worker\n')
    ccopy(c, conf, "/tmp/compose-test.conf")
    started = all(wait_for(lambda port=port: http_get(f"http://127.0.0.1:{port}/healthz", 1)[0] == 200,
                           30) for port in (p1, p2))
    R.check("app containers (docker/app image) serve", started,
            "" if started else tail(os.path.join(WORK, "app1.log")))
    sy = cstart(c, ["switchyard", "-c", "/tmp/compose-test.conf"], log)
    up = wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/healthz", 1)[0] == 200)
    if not R.check("switchyard starts on the compose stack's config", bool(up),
                   "" if up else tail(log)):
        stop_proc(sy)
        for a in apps:
            stop_proc(a)
        return
    base = f"http://127.0.0.1:{listen}"
    seen = []
    for i in range(4):
        status, _, body = http_get(f"{base}/page/{i}")
        try:
            seen.append(json.loads(body)["instance"] if status == 200 else status)
        except (ValueError, KeyError):
            seen.append(status)
    R.check("HTTP route: round robin over app1 and app2", set(seen) == {"app1", "app2"},
            str(seen))

    async def least_conn():
        async with ws_connect(f"ws://127.0.0.1:{listen}/ws") as a:
            async with ws_connect(f"ws://127.0.0.1:{listen}/ws") as b:
                ia, ib = a.response_headers.get("X-Instance"), b.response_headers.get("X-Instance")
                await a.send("a")
                await b.send("b")
                return ia, ib, await a.recv(), await b.recv()
    got = ws_run(least_conn)
    R.check("WebSocket route: least-conn puts two open tunnels on different replicas, echo",
            isinstance(got, tuple) and {got[0], got[1]} == {"app1", "app2"} and
            got[2:] == ("a", "b"), repr(got))
    got = ws_run(lambda: ws_echo(f"ws://127.0.0.1:{listen}/echo", ("text in", b"bytes in")))
    R.check("terminate route: messages bridged to the TCP echo and back",
            got == [b"text in", b"bytes in"], repr(got))

    async def refused():
        try:
            async with ws_connect(f"ws://127.0.0.1:{listen}/other"):
                return "opened"
        except Exception as e:
            return getattr(e, "status_code", repr(e))
    got = ws_run(refused)
    R.check("HTTP route refuses Upgrade (403)", got == 403, repr(got))
    # app1 and app2 resolved through the container's /etc/hosts: two servers per upstream,
    # up once the websocket and http checks pass
    def servers_up():
        status, _, body = http_get(f"http://127.0.0.1:{admin}/servers")
        try:
            servers = json.loads(body) if status == 200 else []
        except ValueError:
            servers = []
        by = {}
        for s in servers:
            if s.get("state") == "up" and s.get("checks_passed", 0) > 0:
                by.setdefault(s.get("upstream"), set()).add(s.get("server"))
        return by if by == {"ws-app": {f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"},
                            "web-app": {f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"}} else None
    by = wait_for(servers_up, 10)
    R.check("admin /servers: app1 and app2 up in both upstreams, health checks passing",
            by is not None, str(by) if by else http_get(f"http://127.0.0.1:{admin}/servers")[2][:400])

    # what `docker compose kill -s HUP switchyard` does: SIGHUP to the container's process
    pid = crun(c, ["cat", "/tmp/switchyard.pid"]).stdout.strip()
    before = tail(log, 500).count("reloaded")
    try:
        os.kill(int(pid), signal.SIGHUP)
        sent = True
    except (ValueError, OSError) as e:
        sent = repr(e)
    reloaded = sent is True and wait_for(lambda: tail(log, 500).count("reloaded") > before, 10)
    got = ws_run(lambda: ws_echo(f"ws://127.0.0.1:{listen}/ws", ("after HUP",)))
    R.check("SIGHUP from outside the container reloads (docker compose kill -s HUP)",
            bool(reloaded) and got == ["after HUP"], f"pid {pid}, sent {sent}, then {got!r}")
    p = crun(c, ["switchyard", "-c", "/tmp/compose-test.conf", "-s", "stop"])
    try:
        rc = sy.wait(15)
    except subprocess.TimeoutExpired:
        rc = stop_proc(sy, signal.SIGKILL)
    R.check("compose stack: switchyard stops cleanly", p.returncode == 0 and rc == 0,
            f"-s stop {p.returncode}, exit {rc}")
    for a in apps:
        stop_proc(a)


def cleanup(keep):
    for p in PROCS:
        if p.poll() is None:
            stop_proc(p, signal.SIGKILL if keep else signal.SIGTERM, 10)
    if keep:
        print(f"kept: containers {CONTAINERS}, images {IMAGES}, logs {WORK}")
        return
    for c in CONTAINERS:
        run(["buildah", "rm", c])
    for i in IMAGES:
        run(["buildah", "rmi", i])
    left = run(["buildah", "containers", "--format", "{{.ContainerName}}"]).stdout.split()
    stale = [c for c in CONTAINERS if c in left]
    R.check("cleanup: containers and images of this run removed (base kept)",
            not stale and all(run(["podman", "image", "exists", i]).returncode != 0 for i in IMAGES)
            and run(["podman", "image", "exists", BASE]).returncode == 0, str(stale))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/var/cache/switchyard-ci",
                    help="where the base rootfs tarball is kept (outside the tree)")
    ap.add_argument("--keep", action="store_true", help="leave containers, images and logs")
    args = ap.parse_args()
    start = time.monotonic()
    sizes = ""
    print(f"== make docker-test (logs in {WORK})", flush=True)
    try:
        step_manifests()
        missing = [t for t in ("buildah", "podman", "debootstrap") if shutil.which(t) is None]
        if not R.check("tools: buildah, podman, debootstrap; root", not missing and os.geteuid() == 0,
                       f"missing {missing}" if missing else f"euid {os.geteuid()}"):
            return
        t = time.monotonic()
        try:
            how = ensure_base(args.cache)
            R.check(f"base {BASE}", True, f"{how} ({time.monotonic() - t:.0f} s)")
        except Exception as e:
            R.check(f"base {BASE}", False, f"{e}\n{tail(os.path.join(WORK, 'debootstrap.log'))}")
            return
        log = os.path.join(WORK, "build.log")
        ok, secs = build(os.path.join(ROOT, "docker/Dockerfile"), IMAGE, log)
        if not R.check("buildah bud docker/Dockerfile", ok,
                       f"{secs:.0f} s" if ok else f"{secs:.0f} s, log {log}:\n{tail(log)}"):
            return
        info = json.loads(run(["buildah", "inspect", "--type", "image", IMAGE], check=True).stdout)
        cfg = (info.get("Docker") or {}).get("config") or {}
        step_image_config(cfg)
        b, s = image_size(BASE), image_size(IMAGE)
        if b and s:
            sizes = (f"{BASE} {b / 1e6:.1f} MB, switchyard {s / 1e6:.1f} MB: "
                     f"the runtime layers add {(s - b) / 1e6:.1f} MB")
        R.check(f"image growth over the base at most {MAX_GROWTH / 1e6:.0f} MB",
                bool(b and s) and s - b <= MAX_GROWTH, sizes)
        c = new_container(IMAGE, ["app", "app1", "app2"])
        step_static(c)
        if healthcheck_cmd(cfg):
            step_image_run(c, cfg)
        alog = os.path.join(WORK, "build-app.log")
        ok, secs = build(os.path.join(ROOT, "docker/app/Dockerfile"), APP_IMAGE, alog)
        if R.check("buildah bud docker/app/Dockerfile (the compose demo app)", ok,
                   f"{secs:.0f} s" if ok else f"log {alog}:\n{tail(alog)}"):
            step_compose(c, APP_IMAGE)
    except Exception as e:  # a broken step is a failure, never a crash without a summary
        import traceback
        R.check("docker-test ran to the end", False, "".join(traceback.format_exception(e)))
    finally:
        cleanup(args.keep)
        print(f"== docker-test summary: {R.passed} passed, {R.failed} failed "
              f"in {time.monotonic() - start:.0f} s")
        if sizes:
            print(f"   image sizes: {sizes}")
        for line in R.failures:
            print(f"   {line.splitlines()[0]}")
        if R.failed:
            print(f"   logs: {WORK}")
        elif not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if R.failed or R.passed == 0 else 0)
