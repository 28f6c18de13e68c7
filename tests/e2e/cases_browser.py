"""A real browser (issue 6): headless Chromium loads tests/e2e/browser/ws_page.html
served THROUGH switchyard (plain route to `python3 -m http.server`) and opens
`new WebSocket(...)` to (a) a forwarded route (upgrade = "forward") to
ws_echo_server.py (python3-websockets) and (b) a terminate route bridged to a
TCP echo backend. The page sends a text and a binary message on each and writes
the echoes as JSON into <pre id="result">; the case reads the DOM.

How the page is read: the DevTools protocol. Chromium runs headless with
--remote-debugging-port=0 (the port is read from DevToolsActivePort in the
fresh profile); a python3-websockets client navigates the page target and
polls `#state` with Runtime.evaluate (real time, up to 30 s) until the page
says "done", then reads `#result`. (`--dump-dom --virtual-time-budget=10000`
was tried first: it passed when the machine was idle but, under load, virtual
time ran ahead of the real network waits and the DOM was dumped -- or the
page's own fallback timer fired -- before the echoes came back; flaky.)

h2_forward / h2_terminate (issue 17): the same page over https:// from a TLS
listener with alpn = ["h2", "http/1.1"], one WebSocket each, proven to ride the
page's HTTP/2 connection (RFC 8441); what Chromium does there is in h2_forward's
docstring.

The runner has no skip: without /usr/bin/chromium the cases FAIL saying so
(CI installs chromium: `apt-get install -y chromium`).
"""

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from harness import case, eq, make_config, wait_listen, wait_until
from term_lib import StreamBackend, ws_lines
from tls_lib import PKI

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
PAGE_DIR = os.path.join(HERE, "browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_run_page(t, url, timeout=30, flags=(), network=None):
    """Load url in headless Chromium via the DevTools protocol; wait until
    #state is no longer "running". Returns (state, result JSON or None, console lines).
    flags: extra Chromium switches. network: a list; if given, the Network
    domain is enabled before navigating and every Network.* event (the
    DevTools message: {"method", "params"}) is appended to it."""
    import websockets  # python3-websockets 10.x

    prof = tempfile.mkdtemp(prefix="chromium-profile-", dir=t.dir)
    argv = [CHROMIUM] + CHROMIUM_FLAGS + list(flags) + ["--user-data-dir=" + prof, "--remote-debugging-port=0",
                                                        "about:blank"]
    t.note("running: " + " ".join(argv))
    p = t.popen(argv, stdout=subprocess.DEVNULL, stderr=open(t.path("chromium.err"), "wb"))
    active = os.path.join(prof, "DevToolsActivePort")
    wait_until(lambda: os.path.exists(active) and len(open(active).read().splitlines()) >= 2 or p.poll() is not None,
               20, what="chromium DevToolsActivePort")
    if p.poll() is not None:
        raise AssertionError("chromium exited with %s at startup: %r"
                             % (p.returncode, open(t.path("chromium.err"), "rb").read()[-800:]))
    port = int(open(active).read().splitlines()[0])
    targets = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10).read())
    pages = [x for x in targets if x.get("type") == "page"]
    if not pages:
        raise AssertionError("no page target in %r" % targets)
    console = []

    async def drive():
        async with websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None, ping_interval=None) as cdp:
            ids = iter(range(1, 1 << 30))

            async def call(method, **params):
                i = next(ids)
                await cdp.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    m = json.loads(await asyncio.wait_for(cdp.recv(), 15))
                    if network is not None and m.get("method", "").startswith("Network."):
                        network.append(m)
                    if m.get("method") == "Runtime.consoleAPICalled":
                        console.append(" ".join(str(a.get("value", a.get("description")))
                                                for a in m["params"].get("args", [])))
                    if m.get("id") == i:
                        if "error" in m:
                            raise AssertionError("CDP %s: %r" % (method, m["error"]))
                        return m.get("result", {})

            async def value(expr):
                r = await call("Runtime.evaluate", expression=expr, returnByValue=True)
                return r.get("result", {}).get("value")

            await call("Runtime.enable")
            await call("Page.enable")
            if network is not None:
                await call("Network.enable")
            nav = await call("Page.navigate", url=url)
            if nav.get("errorText"):
                raise AssertionError("navigation failed: %s" % nav["errorText"])
            deadline = time.monotonic() + timeout
            state = None
            while time.monotonic() < deadline:
                state = await value("(document.getElementById('state') || {}).textContent || null")
                if state not in (None, "running"):
                    break
                await asyncio.sleep(0.1)
            raw = await value("(document.getElementById('result') || {}).textContent || ''")
            try:
                await call("Browser.close")
            except Exception:
                pass
            return state, json.loads(raw) if raw else None

    try:
        return asyncio.run(drive()) + (console,)
    finally:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(prof, ignore_errors=True)


@case(timeout=150)
def chromium_websocket_forward_and_terminate(t):
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError("%s is missing: this case needs headless Chromium (apt-get install -y chromium); "
                             "CI installs it" % CHROMIUM)
    # the page, served by python's static server behind switchyard
    web_port = t.free_port()
    t.popen(["/usr/bin/python3", "-m", "http.server", str(web_port), "--bind", "127.0.0.1",
             "--directory", PAGE_DIR], stdout=subprocess.DEVNULL, stderr=open(t.path("http.server.log"), "wb"))
    # (a) a python3-websockets echo server behind a forwarded route
    ws_port = t.free_port()
    events = t.path("ws_events.jsonl")
    t.popen(["/usr/bin/python3", os.path.join(HERE, "ws_echo_server.py"), str(ws_port), events],
            stdout=open(t.path("ws_server.out"), "wb"), stderr=subprocess.STDOUT)
    # (b) a TCP echo stream behind a terminate route
    be = StreamBackend(t)
    wait_listen(web_port)
    wait_listen(ws_port)

    routes = [
        {"name": "fwd", "path_prefix": "/fwd", "upstream": "ws", "upgrade": "forward"},
        {"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": be.bridge,
         "subprotocols": ["binary", "base64"], "origins": ["http://127.0.0.1:{port}"]},
        {"name": "page", "upstream": "web"},
    ]
    text = make_config(1, {"web": [web_port], "ws": [ws_port]}, routes=routes)
    text = text.replace('address = "127.0.0.1:1";', 'address = "127.0.0.1:{port}";', 1)
    px = t.proxy(config_text=text)
    url = "http://127.0.0.1:%d/ws_page.html" % px.port

    state, result, console = chromium_run_page(t, url)
    t.note("state %r result %r console %r" % (state, result, console))
    if state != "done" or result is None:
        raise AssertionError("page state %r (want done); result %r; console %r" % (state, result, console))
    eq(result.get("errors"), [], "errors reported by the page")
    exp = result["expected"]
    fwd, term = result.get("forward", {}), result.get("terminate", {})
    # forwarded: the echo server answers text with text, binary with binary
    eq((fwd.get("text_kind"), fwd.get("text")), ("text", exp["text"]), "forwarded route: text echo")
    eq((fwd.get("binary_kind"), fwd.get("binary")), ("binary", exp["binary"]), "forwarded route: binary echo")
    eq(fwd.get("close", [None])[0], 1000, "forwarded route: close code (%r)" % fwd.get("close"))
    # terminated: every echo comes back as binary bytes
    eq(term.get("protocol"), "binary", "terminate route: chosen subprotocol")
    eq(term.get("extensions"), "", "terminate route: no extensions (permessage-deflate declined)")
    eq((term.get("text_kind"), term.get("text")), ("binary", exp["text"]), "terminate route: text echo (bytes)")
    eq((term.get("binary_kind"), term.get("binary")), ("binary", exp["binary"]),
       "terminate route: binary echo")
    eq(term.get("close", [None])[0], 1000, "terminate route: close code (%r)" % term.get("close"))
    eq(result.get("origin"), "http://127.0.0.1:%d" % px.port, "page origin")

    # the proxy's view: the page came through it, one forwarded tunnel, one websocket session
    lines = px.wait_access(1, lambda a: a.get("event") == "websocket", 5)
    wl = lines[0]
    eq((wl.get("route"), wl.get("closed_by"), wl.get("reason")), ("term", "client", "client close 1000"),
       "websocket access-log line")
    text_len = len(exp["text"].encode())
    eq((wl.get("bytes_up"), wl.get("bytes_down")), (text_len + 300, text_len + 300), "websocket byte counts")
    acc = px.access_lines()
    if not any(a.get("route") == "page" and a.get("status") == 200 and a.get("target") == "/ws_page.html"
               for a in acc):
        raise AssertionError("page not served through switchyard: %r" % acc)
    if not any(a.get("route") == "fwd" and a.get("status") == 101 for a in acc):
        raise AssertionError("no forwarded 101 in the access log: %r" % acc)
    eq(len(ws_lines(px)), 1, "websocket lines")
    conn = be.wait_conns(1)[0]
    conn.wait_eof()
    eq(be.connections, 1, "bridge backend connections")
    with open(events) as f:
        evs = [json.loads(l) for l in f if l.strip()]
    eq([(e["type"], e["len"]) for e in evs if e["event"] == "message"],
       [("text", len(exp["text"])), ("binary", 300)], "messages at the websockets echo server")


# ---------------------------------------------------------------------------
# HTTP/2 (issue 17): the page over https:// with ALPN h2, its WebSocket on the
# same HTTP/2 connection (RFC 8441)


def spki_sha256_b64(cert_path):
    """base64(sha256(DER SubjectPublicKeyInfo)) of a PEM certificate, the form
    --ignore-certificate-errors-spki-list takes."""
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"], capture_output=True,
                         check=True, timeout=10).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True, timeout=10).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def h2_tls_config(upstreams, routes, cert, key):
    """make_config text with one TLS listener on {port} offering ALPN h2 and http/1.1."""
    text = make_config(0, upstreams, routes=routes)
    plain = 'listen = ( { address = "127.0.0.1:0"; } );'
    assert plain in text
    return text.replace(plain, 'listen = ( { address = "127.0.0.1:{port}"; tls = { certificates = ( '
                                '{ cert = "%s"; key = "%s"; } ); alpn = [ "h2", "http/1.1" ]; }; } );' % (cert, key))


def devtools_view(net, page_url, ws_url):
    """What DevTools saw: the page's response protocol, and for the (one)
    WebSocket to ws_url its handshake request headers, response status and
    headers, and the frames sent / received as [(opcode, bytes)]."""
    doc = [m["params"]["response"] for m in net
           if m["method"] == "Network.responseReceived" and m["params"]["response"].get("url") == page_url]
    created = [m["params"]["requestId"] for m in net
               if m["method"] == "Network.webSocketCreated" and m["params"].get("url") == ws_url]
    v = {"page_protocol": doc[0].get("protocol") if doc else None, "page_status": doc[0].get("status") if doc else None,
         "sockets": len(created), "request_headers": None, "status": None, "response_headers": None,
         "sent": [], "received": [], "frame_errors": []}
    if len(created) != 1:
        return v
    rid = created[0]
    for m in net:
        p = m["params"]
        if p.get("requestId") != rid:
            continue
        if m["method"] == "Network.webSocketWillSendHandshakeRequest":
            v["request_headers"] = {k.lower(): x for k, x in p["request"].get("headers", {}).items()}
        elif m["method"] == "Network.webSocketHandshakeResponseReceived":
            v["status"] = p["response"].get("status")
            v["response_headers"] = {k.lower(): x for k, x in p["response"].get("headers", {}).items()}
        elif m["method"] in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            f = p["response"]
            data = f["payloadData"].encode() if f["opcode"] == 1 else base64.b64decode(f["payloadData"])
            v["sent" if m["method"].endswith("Sent") else "received"].append((f["opcode"], data))
        elif m["method"] == "Network.webSocketFrameError":
            v["frame_errors"].append(p.get("errorMessage"))
    return v


def h2_browser_case(t, mode):
    """One h2 browser case; mode "forward" or "terminate" (see the cases below)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError("%s is missing: this case needs headless Chromium (apt-get install -y chromium); "
                             "CI installs it" % CHROMIUM)
    web_port = t.free_port()
    t.popen(["/usr/bin/python3", "-m", "http.server", str(web_port), "--bind", "127.0.0.1",
             "--directory", PAGE_DIR], stdout=subprocess.DEVNULL, stderr=open(t.path("http.server.log"), "wb"))
    upstreams = {"web": [web_port]}
    if mode == "forward":
        ws_port = t.free_port()
        events = t.path("ws_events.jsonl")
        t.popen(["/usr/bin/python3", os.path.join(HERE, "ws_echo_server.py"), str(ws_port), events],
                stdout=open(t.path("ws_server.out"), "wb"), stderr=subprocess.STDOUT)
        wait_listen(ws_port)
        upstreams["ws"] = [ws_port]
        ws_route = {"name": "fwd", "path_prefix": "/fwd", "upstream": "ws", "upgrade": "forward"}
        ws_path = "/fwd/echo?x=1"
    else:
        be = StreamBackend(t)
        ws_route = {"name": "term", "path_prefix": "/term", "upgrade": "terminate", "bridge": be.bridge,
                    "subprotocols": ["binary", "base64"], "origins": ["https://127.0.0.1:{port}"]}
        ws_path = "/term/bridge"
    wait_listen(web_port)
    pki = PKI(t.dir)
    cert, key = pki.leaf("h2leaf", "127.0.0.1", ["IP:127.0.0.1", "DNS:localhost"])
    text = h2_tls_config(upstreams, [ws_route, {"name": "page", "upstream": "web"}], cert, key)
    px = t.proxy(config_text=text)
    origin = "https://127.0.0.1:%d" % px.port
    url = "%s/ws_page.html?only=%s" % (origin, mode)
    ws_url = "wss://127.0.0.1:%d%s" % (px.port, ws_path)

    net = []
    state, result, console = chromium_run_page(
        t, url, flags=["--ignore-certificate-errors-spki-list=" + spki_sha256_b64(pki.path(cert))], network=net)
    with open(t.path("devtools_network.json"), "w") as f:
        json.dump(net, f, indent=1)
    t.note("state %r result %r console %r" % (state, result, console))
    if state != "done" or result is None:
        raise AssertionError("page state %r (want done); result %r; console %r" % (state, result, console))

    # the page's own view
    eq(result.get("errors"), [], "errors reported by the page")
    eq(result.get("origin"), origin, "page origin")
    exp = result["expected"]
    r = result.get(mode, {})
    text_bytes, bin_bytes = exp["text"].encode(), bytes.fromhex(exp["binary"])
    if mode == "forward":
        eq((r.get("text_kind"), r.get("text")), ("text", exp["text"]), "text echo")
        eq((r.get("binary_kind"), r.get("binary")), ("binary", exp["binary"]), "binary echo")
    else:
        eq(r.get("protocol"), "binary", "chosen subprotocol")
        eq(r.get("extensions"), "", "no extensions (permessage-deflate declined)")
        eq((r.get("text_kind"), r.get("text")), ("binary", exp["text"]), "text echo (bytes)")
        eq((r.get("binary_kind"), r.get("binary")), ("binary", exp["binary"]), "binary echo")

    # DevTools: the page came over h2, the WebSocket's handshake was an RFC 8441
    # extended CONNECT answered 200 (an HTTP/1.1 upgrade shows 101), and it
    # carried a text and a binary message each way
    v = devtools_view(net, url, ws_url)
    t.note("devtools: %r" % {k: v[k] for k in ("page_protocol", "page_status", "sockets", "status",
                                                 "request_headers", "response_headers")})
    eq((v["page_protocol"], v["page_status"]), ("h2", 200), "DevTools: the page's response protocol and status")
    eq(v["sockets"], 1, "DevTools: webSocketCreated for %s" % ws_url)
    eq(v["status"], 200, "DevTools: WebSocket handshake status (200 = RFC 8441 over the h2 connection, "
                         "101 = a separate HTTP/1.1 upgrade)")
    if "sec-websocket-key" in (v["request_headers"] or {}):
        t.note("DevTools shows a Sec-WebSocket-Key in the handshake request (Chromium 156 shows none over h2)")
    eq(v["frame_errors"], [], "DevTools: webSocketFrameError")
    eq(v["sent"], [(1, text_bytes), (2, bin_bytes)], "DevTools: frames sent")
    if mode == "forward":
        eq(v["received"], [(1, text_bytes), (2, bin_bytes)], "DevTools: frames received")
    else:
        eq(v["response_headers"].get("sec-websocket-protocol"), "binary", "DevTools: sec-websocket-protocol")
        eq(sorted(set(op for op, _ in v["received"])), [2], "DevTools: received opcodes (all binary)")
        eq(b"".join(d for _, d in v["received"]), text_bytes + bin_bytes, "DevTools: bytes received")

    # the proxy's view: the page and the WebSocket are streams of one h2 connection
    route = ws_route["name"]
    end_event = "tunnel" if mode == "forward" else "websocket"
    px.wait_access(1, lambda a: a.get("route") == route and a.get("event") == end_event, 5)
    acc = px.access_lines()
    page = [a for a in acc if a.get("route") == "page" and a.get("target") == "/ws_page.html?only=" + mode
            and "status" in a]
    ws = [a for a in acc if a.get("route") == route and a.get("target") == ws_path and "status" in a]
    if len(page) != 1 or len(ws) != 1:
        raise AssertionError("want one request line each for the page and the WebSocket: %r" % acc)
    page, ws = page[0], ws[0]
    eq(page.get("status"), 200, "page status in the access log")
    for what, a in (("page", page), ("WebSocket", ws)):
        if not isinstance(a.get("h2_stream"), int):
            raise AssertionError("the %s's access-log line has no h2_stream (not served over HTTP/2): %r" % (what, a))
    if ws["h2_stream"] == page["h2_stream"]:
        raise AssertionError("page and WebSocket on the same h2 stream: %r / %r" % (page, ws))
    eq(ws.get("client"), page.get("client"), "WebSocket's client address:port = the page's (one TCP connection)")
    h1 = [a for a in acc if "status" in a and "h2_stream" not in a]
    eq(h1, [], "requests that came over HTTP/1.1")
    end = [a for a in acc if a.get("route") == route and a.get("event") == end_event]
    eq(len(end), 1, "%s lines" % end_event)
    t.note("access log: page %r; websocket %r; end %r" % (page, ws, end[0]))
    if mode == "forward":
        with open(events) as f:
            evs = [json.loads(l) for l in f if l.strip()]
        opens = [e for e in evs if e["event"] == "open"]
        eq(len(opens), 1, "connections at the websockets echo server")
        hdrs = {k.lower(): x for k, x in opens[0]["headers"]}
        eq((opens[0]["path"], hdrs.get("upgrade", "").lower()), (ws_path, "websocket"),
           "the backend's request: path and Upgrade")
        if not hdrs.get("sec-websocket-key"):
            raise AssertionError("the backend got no Sec-WebSocket-Key (the proxy makes a fresh one): %r" % hdrs)
        eq([(e["type"], e["len"]) for e in evs if e["event"] == "message"],
           [("text", len(exp["text"])), ("binary", 300)], "messages at the websockets echo server")
    else:
        eq((end[0].get("closed_by"), end[0].get("reason")), ("client", "client close 1000"), "websocket line")
        eq((end[0].get("bytes_up"), end[0].get("bytes_down")), (len(text_bytes) + 300, len(text_bytes) + 300),
           "websocket byte counts")
        conn = be.wait_conns(1)[0]
        conn.wait_eof()
        eq(be.connections, 1, "bridge backend connections")
    # last, so that a failure here comes after the proofs above: the page's
    # ws.close(1000) must end cleanly. Chromium sends its Close frame with
    # END_STREAM; 1006 (wasClean false) = the stream ended (END_STREAM or
    # RST_STREAM) without the proxy's Close frame in reply (the case failed so
    # at 05b5520 and aeceaba, terminate route; fixed by d2499f5)
    eq(r.get("close", [None])[0], 1000, "close code seen by the page (%r)" % r.get("close"))


@case("h2_forward", timeout=120)
def h2_forward(t):
    """Chromium loads ws_page.html?only=forward over https:// from a switchyard TLS
    listener with alpn = ["h2", "http/1.1"], and the page's wss:// to /fwd (upgrade =
    "forward" to ws_echo_server.py) sends a text and a binary message and gets both
    back. Proven through DevTools (page protocol "h2"; handshake status 200, not 101;
    frames both ways) and the access log (h2_stream on the page's and the WebSocket's
    lines, same client address:port: one connection).

    What Chromium does (measured with Chromium 156.0.8078.114, Debian bookworm,
    headless, --disable-quic, first against HAProxy 2.6 `bind ... ssl alpn h2,http/1.1`
    in front of ws_echo_server.py, before switchyard spoke h2):

    - RFC 8441 is on by default: no --enable-features switch is needed (the binary has
      no WebSocket-over-HTTP/2 feature name left; only kEnableWebsocketsOverHttp3 for
      RFC 9220, which --disable-quic keeps out of the way).
    - Chromium uses it only on an HTTP/2 connection it already has to the WebSocket's
      origin, and only if that server's SETTINGS carried SETTINGS_ENABLE_CONNECT_PROTOCOL
      = 1. A same-origin page loaded over h2 therefore gets its wss:// on a new stream
      of the page's connection (HAProxy logs both on the same client port). Chromium
      never opens a new HTTP/2 connection for a WebSocket: a wss:// to an origin it has
      no h2 session with (a page from another origin) goes over a fresh HTTP/1.1
      connection (101), and so does a same-origin one when the server does not send
      ENABLE_CONNECT_PROTOCOL (HAProxy `h2-workaround-bogus-websocket-clients`).
    - In DevTools an RFC 8441 handshake shows response.status 200 (statusText "",
      headersText "HTTP/1.1 200 ..."), an HTTP/1.1 one 101 "Switching Protocols"; the
      request headers it shows keep Upgrade/Connection (synthesized) but have no
      Sec-WebSocket-Key over h2. Frames are reported as on HTTP/1.1 (opcode 1 with the
      text, opcode 2 with base64 payloadData); close frames are not reported.
    - ws.close() from the page: Chromium sends its Close frame in a DATA frame with
      END_STREAM (half-closes at once) and still expects the server's Close on the
      half-closed stream; END_STREAM without that Close gives the page 1006,
      wasClean false (measured against a python3-h2 test server).
    - Certificates: --ignore-certificate-errors-spki-list=<base64 sha256 of the leaf's
      SubjectPublicKeyInfo> (honoured with --user-data-dir) accepts the test's leaf,
      narrower than --ignore-certificate-errors; with either, the h2 connection is
      pooled and the WebSocket goes on it.
    - Chromium also opens a second, speculative TLS connection that sends no request
      and is closed (HAProxy logs it as <BADREQ>); the cases do not count connections.
    """
    h2_browser_case(t, "forward")


@case("h2_terminate", timeout=120)
def h2_terminate(t):
    """As h2_forward, with the terminate route (subprotocol "binary", TCP echo bridge):
    echoes come back as binary messages; the websocket line counts the payload bytes."""
    h2_browser_case(t, "terminate")

