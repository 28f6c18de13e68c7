#!/usr/bin/python3
"""make soak: switchyard under hours-like load with faults, in minutes.

    soak.py --binary PATH [--seconds 600] [--warmup S] [--tunnels N] [--dir D]

Python 3 standard library only (asyncio). One proxy with workers = 2 on
127.0.0.1, two backend processes (this file with --backend: HTTP, WebSocket
upgrade answered with 101 then a raw echo, and a TCP echo for the terminate
bridge) and, for the whole run:

- N forwarded WebSocket tunnels open at a time (N = min(1000, (nofile-200)/4):
  client, backend and the proxy's two sockets each), each sending a random
  payload and checking the echo by SHA-256, held a random while, then closed;
- plain HTTP keep-alive GETs (body checked by hash) and POSTs (echoed);
- terminated WebSockets (a route with upgrade = "terminate" bridged to the
  TCP echo), payload checked by hash;
- a backend killed (SIGKILL) and restarted every 30 s, in turn;
- a SIGHUP reload every 10 s (the config alternates between two texts, so
  every reload is a new generation).

After a warm-up at full load the proxy is left idle and its descriptors and
RSS are taken; after the run, the same again. Goals (exit 1 if one is missed):
descriptors back to the warm-up count (pipes may only stay pooled), RSS within
5 % of the warm-up level, no completed tunnel or response with wrong bytes,
every tunnel close line in the access log with a "cause", every proxy answer
>= 500 with a "reason", the proxy alive and exiting 0 at SIGTERM, and no
sanitizer report. Error-log lines are counted by kind (numbers stripped).
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TIMEOUT = 30  # bound on any single step of a load loop


# ---------------------------------------------------------------------------
# backend process (--backend PORT ECHO_PORT)


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return lines[0], fields


async def read_body(reader, fields):
    if "chunked" in fields.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(fields.get("content-length", "0"))
    return await reader.readexactly(n) if n else b""


def gen_blob(n, seed):
    return random.Random(seed).randbytes(n)


async def backend_conn(reader, writer):
    try:
        while True:
            try:
                line, fields = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if fields.get("upgrade", "").lower() == "websocket":
                acc = base64.b64encode(hashlib.sha1(fields["sec-websocket-key"].encode() + GUID).digest())
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
                await writer.drain()
                while True:
                    d = await reader.read(65536)
                    if not d:
                        return
                    writer.write(d)
                    await writer.drain()
            method, target, _ = line.split(" ", 2)
            body = await read_body(reader, fields)
            if method == "POST":
                out = body
            else:  # /http/SIZE/SEED
                parts = target.split("/")
                out = gen_blob(int(parts[2]), int(parts[3])) if len(parts) >= 4 else b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError, KeyError):
        pass
    finally:
        writer.close()


async def echo_conn(reader, writer):
    try:
        while True:
            d = await reader.read(65536)
            if not d:
                break
            writer.write(d)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def backend_main(port, echo_port):
    s1 = await asyncio.start_server(backend_conn, "127.0.0.1", port, backlog=1024, reuse_address=True)
    s2 = await asyncio.start_server(echo_conn, "127.0.0.1", echo_port, backlog=1024, reuse_address=True)
    print("ready", flush=True)
    async with s1, s2:
        await asyncio.gather(s1.serve_forever(), s2.serve_forever())


# ---------------------------------------------------------------------------
# helpers


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def fd_kinds(pid):
    """Counts of the process's descriptors by kind: socket, pipe, other."""
    c = collections.Counter()
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        c["socket" if link.startswith("socket:") else "pipe" if link.startswith("pipe:") else "other"] += 1
    return dict(c)


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def socket_details(pid):
    """The process's sockets as "local -> remote STATE" (TCP) or "socket:[inode]"."""
    tcp = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for ln in f:
                    p = ln.split()
                    def addr(h):
                        ip, port = h.split(":")
                        if len(ip) == 8:
                            ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip)))
                        return "%s:%d" % (ip, int(port, 16))
                    tcp[p[9]] = "%s -> %s %s" % (addr(p[1]), addr(p[2]), TCP_STATES.get(int(p[3], 16), p[3]))
        except OSError:
            pass
    out = []
    d = "/proc/%d/fd" % pid
    for n in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.append("fd %s: %s" % (n, tcp.get(link[8:-1], link)))
    return sorted(out)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(path, key):
    return ("GET %s HTTP/1.1\r\nHost: soak.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode()


def ws_frame(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
    m = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, m)) if n < 4096 else \
        head + mask + (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


async def read_ws_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    if b1 & 0x80:
        raise ValueError("masked frame from the proxy")
    return b0 & 0x0F, await reader.readexactly(n)


async def close_writer(writer):
    """Close and wait until the socket is really closed (a FIN, not left to GC)."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (Exception, asyncio.CancelledError):
        pass


# ---------------------------------------------------------------------------
# the soak


class Soak:
    def __init__(self, args):
        self.args = args
        self.dir = args.dir or tempfile.mkdtemp(prefix="sy-soak-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.be_ports = [(free_port(), free_port()) for _ in range(2)]
        self.be_procs = [None, None]
        self.stats = collections.Counter()
        self.fail_kinds = collections.Counter()
        self.problems = []
        self.stop_load = False
        self.generation = 1
        self.rng = random.Random(args.seed)
        self.sockets_end = []

    # -- processes
    def config(self, variant):
        a, b = self.be_ports
        return (
            'listen = ( { address = "127.0.0.1:%d"; } );\n'
            "workers = 2;\n"
            # keepalive 2s: idle pooled upstream connections (up to 32 per server
            # and worker) are gone before the idle measurements, which compare exactly
            'timeouts = { header = "10s"; connect = "2s"; response = "20s"; keepalive = "2s"; };\n'
            "limits = { max_connections = %d; };\n"
            'upstreams = ( { name = "app"; retries = 1; servers = ( { address = "127.0.0.1:%d"; },'
            ' { address = "127.0.0.1:%d"; } ); } );\n'
            "routes = (\n"
            '  { name = "term"; path_prefix = "/term"; upgrade = "terminate"; bridge = "127.0.0.1:%d"; },\n'
            '  { name = "all"; upstream = "app"; }\n);\n'
            'access_log = "%s";\nerror_log = "%s";\nlog_level = "info";\n'
            'via = "%s";\nuser = "root";\n'
            % (self.port, self.args.tunnels * 2 + 400, a[0], b[0], a[1],
               os.path.join(self.dir, "access.log"), os.path.join(self.dir, "error.log"),
               "soak-%d" % variant))

    def write_config(self, variant):
        self.config_path = os.path.join(self.dir, "soak.conf")
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config(variant))
        os.rename(tmp, self.config_path)

    def start_backend(self, i):
        p, e = self.be_ports[i]
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--backend", str(p), str(e)],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit("backend %d did not start" % i)
        self.be_procs[i] = proc

    def start_proxy(self):
        self.write_config(0)
        self.proxy_out = open(os.path.join(self.dir, "proxy.out"), "wb")
        self.proxy = subprocess.Popen([self.args.binary, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                      stdout=self.proxy_out, stderr=self.proxy_out)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise SystemExit("proxy exited with %d at startup" % self.proxy.returncode)
            if re.search(r"\bstarted\b", self.error_log()):
                return
            time.sleep(0.05)
        raise SystemExit("proxy did not start")

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # -- load
    async def tunnel_loop(self, k):
        while not self.stop_load:
            self.stats["tunnels_started"] += 1
            try:
                await asyncio.wait_for(self.one_tunnel(), OP_TIMEOUT)
            except asyncio.TimeoutError:
                self.fail_kinds["tunnel: timeout"] += 1
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
                self.fail_kinds["tunnel: " + type(e).__name__] += 1

    async def one_tunnel(self):
        rng = self.rng
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(upgrade_request("/ws/%d" % rng.randrange(1 << 30), ws_key()))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail_kinds["tunnel: status %s" % head[9:12].decode("latin-1")] += 1
                return
            n = rng.choice((rng.randrange(1, 4096), rng.randrange(4096, 65536), rng.randrange(65536, 262144)))
            payload = rng.randbytes(n)
            want = hashlib.sha256(payload).digest()
            rounds = rng.randrange(1, 4)
            h = hashlib.sha256()
            for r in range(rounds):
                writer.write(payload)
                got = await reader.readexactly(n)
                if r == 0:
                    h.update(got)
                elif hashlib.sha256(got).digest() != want:
                    self.problems.append("tunnel echo differs (round %d, %d bytes)" % (r, n))
                    self.stats["tunnels_corrupt"] += 1
                    return
                await asyncio.sleep(rng.uniform(0, self.args.hold / rounds))
            if h.digest() != want:
                self.problems.append("tunnel echo differs (%d bytes)" % n)
                self.stats["tunnels_corrupt"] += 1
                return
            self.stats["tunnels_completed"] += 1
            self.stats["tunnel_bytes"] += 2 * n * rounds
        finally:
            await close_writer(writer)

    async def http_loop(self, k):
        rng = random.Random(k)
        while not self.stop_load:
            try:
                await asyncio.wait_for(self.http_conn(rng), OP_TIMEOUT * 4)
            except asyncio.TimeoutError:
                self.fail_kinds["http: timeout"] += 1
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
                self.fail_kinds["http: " + type(e).__name__] += 1

    async def http_conn(self, rng):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for _ in range(rng.randrange(1, 20)):
                if self.stop_load:
                    return
                if rng.random() < 0.5:
                    size, seed = rng.randrange(0, 200000), rng.randrange(1 << 30)
                    writer.write(b"GET /http/%d/%d HTTP/1.1\r\nHost: soak.test\r\n\r\n" % (size, seed))
                    want = hashlib.sha256(gen_blob(size, seed)).digest()
                else:
                    body = rng.randbytes(rng.randrange(0, 100000))
                    writer.write(b"POST /post HTTP/1.1\r\nHost: soak.test\r\nContent-Length: %d\r\n\r\n"
                                 % len(body) + body)
                    want = hashlib.sha256(body).digest()
                self.stats["http_requests"] += 1
                line, fields = await read_head(reader)
                status = int(line.split(" ")[1])
                body = await read_body(reader, fields)
                if status != 200:
                    self.fail_kinds["http: status %d" % status] += 1
                    return
                if hashlib.sha256(body).digest() != want:
                    self.problems.append("http body differs (%d bytes)" % len(body))
                    self.stats["http_corrupt"] += 1
                    return
                self.stats["http_ok"] += 1
                if "close" in fields.get("connection", "").lower():
                    return
        finally:
            await close_writer(writer)

    async def term_loop(self, k):
        rng = random.Random(1000 + k)
        while not self.stop_load:
            self.stats["term_started"] += 1
            try:
                await asyncio.wait_for(self.one_term(rng), OP_TIMEOUT)
            except asyncio.TimeoutError:
                self.fail_kinds["terminate: timeout"] += 1
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
                self.fail_kinds["terminate: " + type(e).__name__] += 1

    async def one_term(self, rng):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(upgrade_request("/term", ws_key()))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.fail_kinds["terminate: status %s" % head[9:12].decode("latin-1")] += 1
                return
            n = rng.randrange(1, 100000)
            payload = rng.randbytes(n)
            for i in range(0, n, 30000):
                writer.write(ws_frame(2, payload[i:i + 30000]))
            got = bytearray()
            while len(got) < n:
                op, data = await read_ws_frame(reader)
                if op == 8:
                    self.fail_kinds["terminate: closed early %s" % data[:2].hex()] += 1
                    return
                got += data
            if hashlib.sha256(bytes(got)).digest() != hashlib.sha256(payload).digest():
                self.problems.append("terminated websocket echo differs (%d bytes)" % n)
                self.stats["term_corrupt"] += 1
                return
            await asyncio.sleep(rng.uniform(0, 1))
            writer.write(ws_frame(8, struct.pack("!H", 1000)))
            while True:
                op, data = await read_ws_frame(reader)
                if op == 8:
                    break
            self.stats["term_completed"] += 1
        except ValueError as e:
            self.problems.append("terminated websocket: %s" % e)
        finally:
            await close_writer(writer)

    # -- faults
    async def fault_loop(self, deadline):
        next_kill = time.monotonic() + self.args.kill_every
        next_reload = time.monotonic() + self.args.reload_every
        victim = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if now >= next_kill:
                next_kill += self.args.kill_every
                self.be_procs[victim].kill()
                self.be_procs[victim].wait()
                await asyncio.sleep(1)
                await asyncio.get_running_loop().run_in_executor(None, self.start_backend, victim)
                self.stats["backend_restarts"] += 1
                victim ^= 1
            if now >= next_reload:
                next_reload += self.args.reload_every
                await self.reload()

    async def reload(self):
        self.write_config(self.generation % 2)
        self.generation += 1
        self.proxy.send_signal(signal.SIGHUP)
        rx = re.compile(r"reloaded .*generation %d\b" % self.generation)
        for _ in range(100):
            if rx.search(self.error_log()):
                self.stats["reloads"] += 1
                return
            await asyncio.sleep(0.1)
        self.problems.append("reload to generation %d not logged within 10 s" % self.generation)

    async def run_load(self, seconds, faults):
        self.stop_load = False
        deadline = time.monotonic() + seconds
        tasks = [asyncio.create_task(self.tunnel_loop(k)) for k in range(self.args.tunnels)]
        tasks += [asyncio.create_task(self.http_loop(k)) for k in range(self.args.http)]
        tasks += [asyncio.create_task(self.term_loop(k)) for k in range(self.args.term)]
        if faults:
            await self.fault_loop(deadline)
        else:
            await asyncio.sleep(seconds)
        self.stop_load = True
        # every loop ends its current step (each bounded by OP_TIMEOUT)
        done, pending = await asyncio.wait(tasks, timeout=OP_TIMEOUT * 5)
        for p in pending:
            p.cancel()
        if pending:
            self.problems.append("%d load loops did not end" % len(pending))

    def idle_point(self, what):
        """Wait for the proxy to settle (fds stable for 5 s, longer than the 2 s
        keep-alive of pooled upstream connections), then take fds and RSS."""
        last, stable_since = None, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            k = fd_kinds(self.proxy.pid)
            if k != last:
                last, stable_since = k, time.monotonic()
            elif time.monotonic() - stable_since >= 5:
                break
            time.sleep(0.2)
        time.sleep(1)
        return fd_kinds(self.proxy.pid), rss_kb(self.proxy.pid)

    def run(self):
        nofile = raise_nofile()
        if self.args.tunnels is None:
            self.args.tunnels = max(10, min(1000, (nofile - 200) // 4))
        for i in range(2):
            self.start_backend(i)
        self.start_proxy()
        t0 = time.monotonic()
        print("soak: dir %s, proxy pid %d, %d tunnels, %d HTTP loops, %d terminate loops, %d s (+%d s warm-up)"
              % (self.dir, self.proxy.pid, self.args.tunnels, self.args.http, self.args.term,
                 self.args.seconds, self.args.warmup), flush=True)
        asyncio.run(self.run_load(self.args.warmup, faults=False))
        fds0, rss0 = self.idle_point("warm-up")
        warm = dict(self.stats)
        print("soak: after warm-up, idle: fds %s, RSS %d KiB" % (fds0, rss0), flush=True)
        asyncio.run(self.run_load(self.args.seconds, faults=True))
        # backends back, a last reload settled, then idle
        for i in range(2):
            if self.be_procs[i].poll() is not None:
                self.start_backend(i)
        fds1, rss1 = self.idle_point("end")
        if fds1.get("socket", 0) > fds0.get("socket", 0):
            # timers (keep-alive, idle) or a leak: wait a while, then list them
            print("soak: %d sockets more than after warm-up; waiting up to %d s for them to go"
                  % (fds1["socket"] - fds0.get("socket", 0), self.args.linger), flush=True)
            deadline = time.monotonic() + self.args.linger
            while time.monotonic() < deadline and \
                    fd_kinds(self.proxy.pid).get("socket", 0) > fds0.get("socket", 0):
                time.sleep(1)
            fds1 = fd_kinds(self.proxy.pid)
            self.sockets_end = socket_details(self.proxy.pid)
            with open(os.path.join(self.dir, "sockets-end.txt"), "w") as f:
                f.write("\n".join(self.sockets_end) + "\n")
        alive = self.proxy.poll() is None
        self.proxy.send_signal(signal.SIGTERM)
        try:
            rc = self.proxy.wait(30)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
            rc = "killed after 30 s"
        for p in self.be_procs:
            p.kill()
            p.wait()
        return self.report(fds0, rss0, fds1, rss1, alive, rc, warm, time.monotonic() - t0)

    def report(self, fds0, rss0, fds1, rss1, alive, rc, warm, elapsed):
        s = self.stats
        access = []
        with open(os.path.join(self.dir, "access.log")) as f:
            for ln in f:
                if ln.startswith("{"):
                    access.append(json.loads(ln))
        closes = [a for a in access if a.get("event") in ("tunnel", "websocket")]
        no_cause = [a for a in closes if not a.get("cause")]
        causes = collections.Counter("%s %s" % (a.get("event"), a.get("cause")) for a in closes)
        errs = [a for a in access if isinstance(a.get("status"), int) and a["status"] >= 500]
        no_reason = [a for a in errs if not a.get("reason")]
        statuses = collections.Counter("%s %s" % (a["status"], a.get("reason")) for a in errs)
        kinds = collections.Counter()
        for ln in self.error_log().splitlines():
            m = re.match(r"\S+ (\w+) s=\S+ (.*)", ln)
            if not m or m.group(1) == "info":
                continue
            msg = re.sub(r"\d+(\.\d+)*", "N", m.group(2))
            kinds["%s %s" % (m.group(1), msg[:110])] += 1
        out = open(os.path.join(self.dir, "proxy.out"), "rb").read().decode("utf-8", "replace")
        san = re.search(r"ERROR: \w+Sanitizer|runtime error:|ERROR SUMMARY: [1-9]", out + self.error_log())

        leaked = {k: fds1.get(k, 0) - fds0.get(k, 0) for k in set(fds0) | set(fds1)}
        growth = (rss1 - rss0) * 100.0 / rss0 if rss0 else 0.0
        goals = [
            ("descriptors: no socket or other fd more than after warm-up",
             leaked.get("socket", 0) <= 0 and leaked.get("other", 0) <= 0),
            ("descriptors: pipes only pooled (<= 2048 per worker)", fds1.get("pipe", 0) <= 2 * 2048),
            ("RSS within 5 %% of the warm-up level (%+.1f %%)" % growth, growth <= 5.0),
            ("no completed tunnel, terminated websocket or response with wrong bytes",
             not (s["tunnels_corrupt"] or s["term_corrupt"] or s["http_corrupt"])),
            ("every tunnel close line has a cause (%d lines, %d without)" % (len(closes), len(no_cause)),
             not no_cause and closes),
            ("every answer >= 500 has a reason (%d, %d without)" % (len(errs), len(no_reason)), not no_reason),
            ("proxy alive at the end, exit 0 at SIGTERM (%s)" % rc, alive and rc == 0),
            ("no sanitizer or valgrind report", not san),
            ("no problem in the driver (%d)" % len(self.problems), not self.problems),
            ("tunnels completed during the run", s["tunnels_completed"] > warm.get("tunnels_completed", 0)),
        ]
        print("\n== soak summary (%.0f s wall, %d s under faults)" % (elapsed, self.args.seconds))
        for k in ("tunnels_started", "tunnels_completed", "tunnel_bytes", "http_requests", "http_ok",
                  "term_started", "term_completed", "reloads", "backend_restarts"):
            print("  %-20s %d (warm-up %d)" % (k, s[k], warm.get(k, 0)))
        print("  fds after warm-up   %s" % fds0)
        print("  fds at end          %s" % fds1)
        print("  RSS after warm-up   %d KiB" % rss0)
        print("  RSS at end          %d KiB" % rss1)
        print("  client-side failures by kind (expected around backend kills):")
        for k, v in sorted(self.fail_kinds.items(), key=lambda kv: -kv[1]):
            print("    %7d  %s" % (v, k))
        print("  access log: %d lines, tunnel/websocket close lines by cause:" % len(access))
        for k, v in sorted(causes.items(), key=lambda kv: -kv[1]):
            print("    %7d  %s" % (v, k))
        print("  access log: answers >= 500 by status and reason:")
        for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]):
            print("    %7d  %s" % (v, k))
        print("  error log: warn/error lines by kind:")
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:40]:
            print("    %7d  %s" % (v, k))
        if self.sockets_end:
            print("  proxy sockets at end (all %d, also in sockets-end.txt):" % len(self.sockets_end))
            for ln in self.sockets_end[:80]:
                print("    " + ln)
        for p in self.problems[:20]:
            print("  problem: %s" % p)
        if san:
            print("  report: %s" % (out + self.error_log())[san.start():san.start() + 400])
        ok = True
        for what, good in goals:
            print("%s %s" % ("PASS" if good else "FAIL", what))
            ok = ok and bool(good)
        print("soak: %s (logs in %s)" % ("all goals met" if ok else "GOALS MISSED", self.dir))
        return 0 if ok else 1


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--backend":
        raise_nofile()
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
        asyncio.run(backend_main(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--warmup", type=int, default=None, help="default min(60, seconds / 5)")
    ap.add_argument("--tunnels", type=int, default=None, help="default min(1000, (nofile - 200) / 4)")
    ap.add_argument("--http", type=int, default=8, help="concurrent HTTP keep-alive loops")
    ap.add_argument("--term", type=int, default=20, help="concurrent terminated-websocket loops")
    ap.add_argument("--hold", type=float, default=8.0, help="longest time a tunnel stays open, s")
    ap.add_argument("--kill-every", type=float, default=30)
    ap.add_argument("--reload-every", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--linger", type=float, default=90,
                    help="how long extra sockets at the end may take to go, s")
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = max(10, min(60, args.seconds // 5))
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
