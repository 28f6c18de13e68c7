#!/usr/bin/python3
"""WebSocket echo server for the e2e upgrade cases (python3-websockets 10.x).

    /usr/bin/python3 ws_echo_server.py PORT EVENTS_FILE

Echoes text and binary messages as they came, answers pings (the library
does), selects subprotocol "chat" when offered, and appends one JSON line
per event to EVENTS_FILE: {"event": "open", "path", "subprotocol",
"headers": [[name, value], ...]}, {"event": "message", "type", "len"},
{"event": "closed", "code", "reason"}.
"""

import asyncio
import json
import sys

import websockets

PORT = int(sys.argv[1])
EVENTS = sys.argv[2]


def record(**ev):
    with open(EVENTS, "a") as f:
        f.write(json.dumps(ev) + "\n")


async def handler(ws, path=None):
    record(event="open", path=ws.path, subprotocol=ws.subprotocol,
           headers=[[k, v] for k, v in ws.request_headers.raw_items()])
    try:
        async for msg in ws:
            record(event="message", type="text" if isinstance(msg, str) else "binary", len=len(msg))
            await ws.send(msg)
    finally:
        await ws.wait_closed()
        record(event="closed", code=ws.close_code, reason=ws.close_reason)


async def main():
    async with websockets.serve(handler, "127.0.0.1", PORT, subprotocols=["chat"],
                                max_size=None, ping_interval=None):
        record(event="listening", port=PORT)
        await asyncio.Future()


asyncio.run(main())
