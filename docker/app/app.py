#!/usr/bin/env python3
"""The demo backend of docker/compose.yaml (and the host-side backend of `make docker-test`).

    app.py [--host 0.0.0.0] [--port 9000] [--name NAME]   HTTP + WebSocket
    app.py --tcp-echo [--host 0.0.0.0] [--port 7000]       plain TCP echo

HTTP mode, one port (Python websockets, legacy API: Debian bookworm's 10.4 and later):
  GET /ws       a WebSocket that echoes every message, text as text, binary as binary;
                the 101 carries `X-Instance: NAME`, so a client can tell the replicas apart
  GET /healthz  200 "ok"
  GET anything  200, JSON: the instance, the path and the forwarding headers it got
Only GET (the websockets library's HTTP side); every answer closes the connection.

TCP echo mode: every byte read is written back (the bridge of switchyard's
`upgrade = "terminate"` route in the compose stack).
"""
import argparse
import asyncio
import http
import json
import os
import signal
import socket

from websockets.legacy.server import serve

FORWARDED = ("via", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")


def http_answer(status, body, ctype):
    return (status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                     ("Connection", "close")], body)


def make_process_request(name):
    async def process_request(path, headers):
        if path == "/ws" or path.startswith("/ws?") or path.startswith("/ws/"):
            return None  # the handshake goes on (a request without Upgrade gets 426)
        if path == "/healthz":
            return http_answer(http.HTTPStatus.OK, b"ok\n", "text/plain")
        body = {"instance": name, "path": path,
                "headers": {h: headers[h] for h in FORWARDED if h in headers}}
        return http_answer(http.HTTPStatus.OK, (json.dumps(body) + "\n").encode(),
                           "application/json")
    return process_request


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def tcp_echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(args):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    if args.tcp_echo:
        server = await asyncio.start_server(tcp_echo, args.host, args.port or 7000)
        print(f"tcp echo on {args.host}:{args.port or 7000}", flush=True)
        async with server:
            await stop
        return
    name = args.name or os.environ.get("APP_NAME") or socket.gethostname()
    async with serve(echo, args.host, args.port or 9000,
                     process_request=make_process_request(name),
                     extra_headers=[("X-Instance", name)]):
        print(f"{name}: http and websocket on {args.host}:{args.port or 9000}", flush=True)
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=0, help="default 9000 (7000 with --tcp-echo)")
    p.add_argument("--name", help="instance name (default $APP_NAME, else the host name)")
    p.add_argument("--tcp-echo", action="store_true")
    asyncio.run(main(p.parse_args()))
