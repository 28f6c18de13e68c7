#!/usr/bin/python3
"""WebSocket echo server for the TLS cases (python3-websockets 10.x).

    /usr/bin/python3 tls_ws_server.py PORT EVENTS_FILE [CERT KEY]

With CERT and KEY it serves wss:// (ssl-wrapped), else ws://. Echoes every
message and appends one JSON line per event to EVENTS_FILE:
{"event": "listening"}, {"event": "open", "path", "headers"},
{"event": "message", "type", "len", "sha256"}, {"event": "closed", "code"}.
"""

import asyncio
import hashlib
import json
import ssl
import sys

import websockets

PORT = int(sys.argv[1])
EVENTS = sys.argv[2]
CTX = None
if len(sys.argv) > 4:
    CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CTX.load_cert_chain(sys.argv[3], sys.argv[4])


def record(**ev):
    with open(EVENTS, "a") as f:
        f.write(json.dumps(ev) + "\n")


async def handler(ws, path=None):
    record(event="open", path=ws.path, headers=[[k, v] for k, v in ws.request_headers.raw_items()])
    try:
        async for msg in ws:
            raw = msg.encode() if isinstance(msg, str) else msg
            record(event="message", type="text" if isinstance(msg, str) else "binary", len=len(raw),
                   sha256=hashlib.sha256(raw).hexdigest())
            await ws.send(msg)
    finally:
        await ws.wait_closed()
        record(event="closed", code=ws.close_code)


async def main():
    async with websockets.serve(handler, "127.0.0.1", PORT, ssl=CTX, max_size=None, ping_interval=None):
        record(event="listening", port=PORT)
        await asyncio.Future()


asyncio.run(main())
