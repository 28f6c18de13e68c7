#!/usr/bin/python3
"""Seed corpora for the libFuzzer drivers, built from the test cases.

    /usr/bin/python3 tests/fuzz/make_corpus.py     (from anywhere)

    /usr/bin/python3 tests/fuzz/make_corpus.py fuzz_response fuzz_config
                                                   (only those drivers' seeds)

Writes tests/fuzz/corpus/<driver>/ afresh for fuzz_http, fuzz_ws, fuzz_h2,
fuzz_response and fuzz_config (fuzz_proxyproto's seeds are kept by hand),
one file per distinct input, named <origin>-<sha1 prefix> (stable across
runs). Sources:

  fuzz_http  tests/unit/check_http.c, check_http_hdr.c, check_upgrade.c
                                       every string literal that is a request
                                       or response head (C escapes decoded,
                                       string macros expanded), chunked bodies
             tests/e2e/cases_malformed.py  CORPUS and BODY_CORPUS (imported)
             tests/e2e/cases_http.py, cases_upgrade.py  byte-string
                                       expressions that are HTTP messages,
                                       Reply(...) scripts rendered to wire bytes
             by hand                   Connection nominating framing fields,
                                       an upgrade handshake, each request method
  fuzz_ws    tests/unit/check_ws.c     RAW_CASES wire bytes with their mask
                                       and max_message settings, SCRIPTS
                                       encoded unmasked / masked, UTF8_CASES as
                                       text frames, every opcode, close codes
  fuzz_response  every response seed of fuzz_http (same sources), answering
                                       the matching request, the backend
                                       closing after it
             tests/unit/check_upgrade.c  resp_cases: each 101 against the
                                       WebSocket request, the other-protocol
                                       one and one offering both
             by hand                   interim heads before finals and 101s,
                                       each request kind, hostile 101s
  fuzz_config    etc/switchyard.conf
             tests/unit/check_config.c  every string literal (macros expanded)
                                       that is a config text
             tests/e2e/*.py            string constants that are config texts
                                       or fragments (fragments appended to a
                                       minimal config), harness.make_config()
                                       renderings
             by hand                   the driver's fixtures (@FIXTURES@):
                                       includes, a certificate and keys;
                                       includes of a directory

Each seed starts with the driver's control byte(s), except fuzz_config's
(plain config text); see the header comments of the drivers for the layout.
"""

import ast
import hashlib
import os
import re
import shutil
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
MAX_SEED = 20480  # the -max_len `make fuzz` gives fuzz_http

# ---------------------------------------------------------------------------
# a little C: tokens, string literals with escapes, string macros


def c_tokens(text):
    """Tokens of C source: ('s', bytes) string literals, ('c', str) char
    literals, ('n', str) numbers, ('i', str) identifiers, ('p', str) others.
    Comments and preprocessor lines are dropped; #define NAME "..." macros
    made of string literals (or other such macros) are expanded."""
    text = text.replace("\\\n", "")
    macros = {}
    toks = []
    i, n = 0, len(text)
    line_start = True
    while i < n:
        ch = text[i]
        if ch == "\n":
            line_start = True
            i += 1
            continue
        if ch in " \t\r\f\v":
            i += 1
            continue
        if line_start and ch == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            m = re.match(r"#\s*define\s+(\w+)\s+(.*)", text[i:j])
            if m and "(" not in m.group(1):
                body = c_tokens(m.group(2))
                if body and all(t[0] == "s" or (t[0] == "i" and t[1] in macros) for t in body):
                    macros[m.group(1)] = b"".join(t[1] if t[0] == "s" else macros[t[1]] for t in body)
            i = j
            continue
        line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        if ch in "\"'":
            j = i + 1
            while text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            lit = c_unescape(text[i + 1:j])
            toks.append(("s" if ch == '"' else "c", lit))
            i = j + 1
            continue
        m = re.compile(r"[A-Za-z_]\w*|\d[\w.]*").match(text, i)
        if m:
            w = m.group(0)
            toks.append(("n" if w[0].isdigit() else "i", w))
            i = m.end()
            continue
        toks.append(("p", ch))
        i += 1
    # expand string macros
    return [("s", macros[t[1]]) if t[0] == "i" and t[1] in macros else t for t in toks]


def c_unescape(s):
    out = bytearray()
    i = 0
    simple = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "f": 12, "v": 11,
              "\\": 92, '"': 34, "'": 39, "?": 63}
    while i < len(s):
        ch = s[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        e = s[i + 1]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == "x":  # greedy, as in C
            m = re.compile(r"[0-9A-Fa-f]+").match(s, i + 2)
            out.append(int(m.group(0), 16) & 0xFF)
            i = m.end()
        elif e in "01234567":
            m = re.compile(r"[0-7]{1,3}").match(s, i + 1)
            out.append(int(m.group(0), 8) & 0xFF)
            i = m.end()
        else:
            raise ValueError("escape \\%s" % e)
    return bytes(out)


def string_runs(toks):
    """(index after the run, bytes) for every run of adjacent string literals."""
    runs, i = [], 0
    while i < len(toks):
        if toks[i][0] == "s":
            j, b = i, b""
            while j < len(toks) and toks[j][0] == "s":
                b += toks[j][1]
                j += 1
            runs.append((j, b))
            i = j
        else:
            i += 1
    return runs


def c_array(toks, name):
    """The initializer of `... name[] = { ... };` as nested lists: a brace is
    a list of elements, an element a list of tokens (or a nested list)."""
    for i in range(len(toks) - 3):
        if toks[i] == ("i", name) and toks[i + 1] == ("p", "[") and toks[i + 2] == ("p", "]"):
            j = i + 3
            while toks[j] != ("p", "{"):
                j += 1
            val, _ = _brace(toks, j + 1)
            # each element of the array is one braced initializer
            return [e[0] if len(e) == 1 and isinstance(e[0], list) else e for e in val]
    raise KeyError(name)


def _brace(toks, i):
    items, cur, depth = [], [], 0
    while True:
        t = toks[i]
        if t == ("p", "{") and depth == 0:
            sub, i = _brace(toks, i + 1)
            cur.append(sub)
            continue
        if t[0] == "p" and t[1] in "([":
            depth += 1
        elif t[0] == "p" and t[1] in ")]":
            depth -= 1
        if depth == 0 and t == ("p", ","):
            items.append(cur)
            cur = []
        elif depth == 0 and t == ("p", "}"):
            if cur:
                items.append(cur)
            return items, i + 1
        else:
            cur.append(t)
        i += 1


def c_value(elem, consts):
    """An element of an initializer: bytes, int, bool, or None."""
    if len(elem) == 1 and isinstance(elem[0], list):
        return elem[0]
    if elem and all(t[0] == "s" for t in elem):
        return b"".join(t[1] for t in elem)
    if elem and elem[0] == ("i", "W"):  # W("...") -> bytes
        return b"".join(t[1] for t in elem if t[0] == "s")
    if len(elem) == 1 and elem[0][0] == "n":
        return int(elem[0][1].rstrip("uUlL"), 0)
    if len(elem) == 1 and elem[0][0] == "i":
        w = elem[0][1]
        if w in ("true", "false"):
            return w == "true"
        if w in consts:
            return consts[w]
    return None


# ---------------------------------------------------------------------------
# seeds

SEEDS = {"fuzz_http": {}, "fuzz_ws": {}, "fuzz_response": {}, "fuzz_config": {}, "fuzz_h2": {}}


def add(driver, origin, data):
    if len(data) > MAX_SEED:
        return
    h = hashlib.sha1(data).hexdigest()
    SEEDS[driver].setdefault(data, "%s-%s" % (origin, h[:12]))


# fuzz_http control byte: bit 0 response, bits 1-2 request method, bits 3-7 piece - 1
METHOD_BITS = {"GET": 0, "HEAD": 1, "CONNECT": 2, "OTHER": 3}


def http_ctl(response, method="GET", piece=7):
    return bytes([(1 if response else 0) | METHOD_BITS[method] << 1 | (piece - 1) << 3])


REQ_RE = re.compile(rb"^[!-~]*[ \t]+\S*[ \t]*(HTTP|http)/")
METHODS_RE = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|FOO|M-SEARCH\*|get) ")


def is_response(b):
    return b[:5].upper() == b"HTTP/"


def is_request(b):
    first = b.split(b"\n", 1)[0]
    return bool(METHODS_RE.match(b.lstrip(b"\r\n ")) or REQ_RE.match(first)) and b"\n" in b


CHUNKED = (b"5;ext=1;name=\"q\"\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n00000001\r\n!\r\n"
           b"0;last\r\nTrailer-A: 1\r\n\r\n")
NEXT_REQ = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
NEXT_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def with_body(head, response):
    """A complete head gets a body that fits its framing and a second message
    behind it, so body decoding and keep-alive are reached; anything else
    stays as it is."""
    if not head.endswith(b"\r\n\r\n"):
        return head
    nxt = NEXT_RESP if response else NEXT_REQ
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d{1,4})[ \t]*\r\n", head, re.I)
    if re.search(rb"\r\ntransfer-encoding:[ \t]*chunked[ \t]*\r\n", head, re.I):
        return head + CHUNKED + nxt
    if m:
        return head + b"x" * int(m.group(1)) + nxt
    if response:
        return head + b"close-delimited body"
    return head + nxt


def add_http_message(origin, b, method=None):
    if is_response(b):
        status = re.match(rb"\S+ (\d{3})", b)
        methods = [method] if method else ["GET"]
        if not method and status and status.group(1)[:1] == b"2":
            methods += ["HEAD", "CONNECT"]  # other methods frame as GET does
        for mth in methods:
            add("fuzz_http", origin, http_ctl(True, mth) + with_body(b, True))
    elif is_request(b):
        add("fuzz_http", origin, http_ctl(False) + with_body(b, False))


def http_from_unit(name):
    path = os.path.join(ROOT, "tests", "unit", name)
    toks = c_tokens(open(path, encoding="utf-8").read())
    origin = "unit" if name == "check_http.c" else "unit-" + name[6:-2].replace("_", "")
    for end, b in string_runs(toks):
        method = None
        # a response case names the request method right after its bytes
        if end + 1 < len(toks) and toks[end] == ("p", ",") and toks[end + 1][0] == "i" and toks[end + 1][1].startswith("HTTP_METHOD_"):
            method = {"HTTP_METHOD_GET": "GET", "HTTP_METHOD_HEAD": "HEAD",
                      "HTTP_METHOD_CONNECT": "CONNECT"}.get(toks[end + 1][1], "OTHER")
        if is_response(b) or is_request(b):
            add_http_message(origin, b, method)
        elif name == "check_http.c" and b"\r\n" in b and re.match(rb"^[0-9a-fA-F\-\r\nz]", b):
            # a chunked body: behind a chunked request and a chunked response
            add("fuzz_http", "unit-chunked", http_ctl(False) +
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b)
            add("fuzz_http", "unit-chunked", http_ctl(True) +
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b)



def http_by_hand():
    """What the tables do not spell out."""
    # split feeding: the chunked example fed a byte at a time
    add("fuzz_http", "unit-bytewise", http_ctl(False, piece=1) +
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED + NEXT_REQ)


def http_from_malformed():
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import cases_malformed as m
    for _name, raw, _status in m.CORPUS:
        add("fuzz_http", "e2e-malformed", http_ctl(False) + raw)
    for _name, raw in m.BODY_CORPUS:
        add("fuzz_http", "e2e-malformed-body", http_ctl(False) + raw)


class _Eval(ast.NodeVisitor):
    """Byte strings, Reply(...) and build_request(...) with literal arguments."""

    def __init__(self, origin, harness):
        self.origin, self.h = origin, harness

    def value(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            if isinstance(node.op, ast.Add) and type(a) is type(b) and isinstance(a, (bytes, str)):
                return a + b
            if isinstance(node.op, ast.Mult) and isinstance(a, (bytes, str)) and isinstance(b, int) and b < 30000:
                return a * b
            if isinstance(node.op, ast.Mod) and isinstance(a, bytes):
                return a % b
            raise ValueError
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Name) and node.id == "CONTINUE":
            return self.h.CONTINUE
        raise ValueError

    def visit_BinOp(self, node):
        self._bytes(node)

    def visit_Constant(self, node):
        self._bytes(node)

    def _bytes(self, node):
        try:
            b = self.value(node)
        except (ValueError, TypeError):
            self.generic_visit(node)
            return
        if isinstance(b, bytes):
            add_http_message(self.origin, b)

    def visit_Call(self, node):
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        try:
            args = [self.value(a) for a in node.args]
            kw = {k.arg: self.value(k.value) for k in node.keywords}
        except (ValueError, TypeError):
            self.generic_visit(node)
            return
        if name == "build_request":
            add_http_message(self.origin, self.h.build_request(*args, **kw))
        elif name == "Reply":
            rep = self.h.Reply(*args, **kw)
            for i in rep.interim:
                add_http_message(self.origin, i)
            if rep.raw is not None:
                add_http_message(self.origin, rep.raw)
            elif isinstance(rep.body, (bytes, bytearray)):
                add_http_message(self.origin, render_reply(self.h, rep))
        self.generic_visit(node)


def render_reply(h, rep):
    """The wire bytes HttpBackend._send writes for a Reply (bytes body)."""
    lines, names = [], []
    for f in rep.headers:
        if isinstance(f, tuple):
            names.append(f[0].lower())
            lines.append(("%s: %s" % f).encode("latin-1"))
        else:
            names.append(f.split(b":")[0].decode("latin-1").lower())
            lines.append(f)
    body = bytes(rep.body)
    if rep.framing == "cl" and "content-length" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    if rep.framing == "chunked" and "transfer-encoding" not in names:
        lines.append(b"Transfer-Encoding: chunked")
    reason = rep.reason if rep.reason is not None else h.REASONS.get(rep.status, "Whatever")
    head = ("%s %d %s\r\n" % (rep.version, rep.status, reason)).encode("latin-1")
    head += b"".join(l + b"\r\n" for l in lines) + b"\r\n"
    if rep.framing == "chunked":
        return head + h.chunked(body, rep.chunk_size, rep.trailers)
    if rep.framing in ("cl", "close"):
        return head + body
    return head


def http_from_e2e():
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import harness
    for name in ("cases_http", "cases_upgrade"):
        path = os.path.join(ROOT, "tests", "e2e", name + ".py")
        _Eval("e2e-" + name[6:], harness).visit(ast.parse(open(path, encoding="utf-8").read()))


def http_nominated():
    """Connection nominating the fields that frame or route the message: the
    forwarded head must keep them (fuzz_http checks the framing it re-parses)."""
    for field in (b"Content-Length", b"content-length", b"Transfer-Encoding", b"Host"):
        add("fuzz_http", "nominated", http_ctl(False) +
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, " + field +
            b"\r\nContent-Length: 5\r\n\r\nhello" + NEXT_REQ)
        add("fuzz_http", "nominated", http_ctl(True) +
            b"HTTP/1.1 200 OK\r\nConnection: " + field + b"\r\nContent-Length: 5\r\n\r\nhello" +
            NEXT_RESP)
    add("fuzz_http", "nominated", http_ctl(False) +
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED + NEXT_REQ)


def http_upgrade():
    """The handshake pair the proxy forwards, and a response to each method."""
    req = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    add("fuzz_http", "upgrade", http_ctl(False) + req + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    add("fuzz_http", "upgrade", http_ctl(True) + b"HTTP/1.1 100 Continue\r\n\r\n" + resp + b"\x81\x05Hello")
    for mth in METHOD_BITS:
        add("fuzz_http", "method", http_ctl(True, mth) +
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + NEXT_RESP)
        add("fuzz_http", "method", http_ctl(True, mth) +
            b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x00\x05hello")


# ---- fuzz_ws --------------------------------------------------------------

WS_MAX = [1024 * 1024, 0, 5, 125, 255, 256, 1000, 65536]  # fuzz_ws.c MAX_MESSAGE
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def ws_ctl(require_mask, max_message, piece=17):
    idx = WS_MAX.index(max_message) if max_message in WS_MAX else 0
    return bytes([(1 if require_mask else 0) | idx << 1, (piece - 1) % 17])


def frame(b0, payload, mask=None):
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        h = bytes([b0, mbit | n])
    elif n < 65536:
        h = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask:
        return h + mask + bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
    return h + payload


def ws_from_check_ws():
    path = os.path.join(ROOT, "tests", "unit", "check_ws.c")
    toks = c_tokens(open(path, encoding="utf-8").read())
    consts = {"MIB": 1024 * 1024}
    # {name, W(wire), require_mask, max, ...}
    for case in c_array(toks, "RAW_CASES"):
        wire = c_value(case[1], consts)
        require_mask, max_message = c_value(case[2], consts), c_value(case[3], consts)
        add("fuzz_ws", "unit-raw", ws_ctl(require_mask, max_message) + wire)
        add("fuzz_ws", "unit-raw", ws_ctl(require_mask, max_message, piece=1) + wire)
    # {name, {F(b0, "..."), ...}, max, ...}: unmasked, at a server, at a client
    for case in c_array(toks, "SCRIPTS"):
        frames = []
        for f in c_value(case[1], consts):
            assert f[0] == ("i", "F"), f
            b0 = int(f[2][1], 0)
            frames.append((b0, b"".join(t[1] for t in f if t[0] == "s")))
        max_message = c_value(case[2], consts)
        for masked, require in ((False, False), (True, True), (True, False)):
            wire = b"".join(frame(b0, p, MASK if masked else None) for b0, p in frames)
            add("fuzz_ws", "unit-script", ws_ctl(require, max_message, piece=len(wire) % 17 + 1) + wire)
    for case in c_array(toks, "UTF8_CASES"):
        p = c_value(case[0], consts)
        add("fuzz_ws", "unit-utf8", ws_ctl(True, 0) + frame(0x81, p, MASK))
        if len(p) > 1:
            add("fuzz_ws", "unit-utf8", ws_ctl(True, 0, piece=1) +
                frame(0x01, p[:1], MASK) + frame(0x89, b"", MASK) + frame(0x80, p[1:], MASK))
    for case in c_array(toks, "CLOSE_CODES"):
        code = c_value(case[0], consts)
        add("fuzz_ws", "unit-close", ws_ctl(True, 1024 * 1024) +
            frame(0x88, struct.pack(">H", code) + b"bye", MASK))
    for op in range(16):
        add("fuzz_ws", "unit-opcode", ws_ctl(False, 0) + bytes([0x80 | op, 0]))
    # the RFC's 256-byte binary example, masked at a server, then a close
    payload = bytes((i * 7 + 3) & 0xFF for i in range(256))
    add("fuzz_ws", "unit-rfc256", ws_ctl(True, 1024 * 1024, piece=13) +
        frame(0x82, payload, MASK) + frame(0x88, b"\x03\xe8", MASK))


# ---- fuzz_response ----------------------------------------------------------

# fuzz_response.c REQUESTS and PIECES
RESP_REQ = {"GET": 0, "HEAD": 1, "GET10": 2, "WS": 3, "FOO": 4, "WS_FOO": 5, "POST": 6, "HEAD10": 7}
RESP_PIECES = [1, 2, 3, 7, 16, 100, 1024, 65536]
WS_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def resp_ctl(req="GET", piece=1024, eof=True):
    idx = max(i for i, p in enumerate(RESP_PIECES) if p <= piece)
    return bytes([RESP_REQ[req] | idx << 3 | (0x40 if eof else 0)])


def response_from_http():
    """fuzz_http's response seeds, answering the same kind of request."""
    by_method = {0: "GET", 1: "HEAD", 2: "GET", 3: "POST"}  # CONNECT: no such request here
    for data, name in list(SEEDS["fuzz_http"].items()):
        ctl = data[0]
        if not ctl & 1:
            continue
        req = by_method[(ctl >> 1) & 3]
        body = data[1:]
        add("fuzz_response", name.rsplit("-", 1)[0], resp_ctl(req, (ctl >> 3) + 1) + body)
        if b" 101 " in body[:13] or b"HTTP/1.1 101" in body:
            for r in ("WS", "WS_FOO"):
                add("fuzz_response", "http-101", resp_ctl(r) + body)


def response_from_check_upgrade():
    path = os.path.join(ROOT, "tests", "unit", "check_upgrade.c")
    toks = c_tokens(open(path, encoding="utf-8").read())
    for case in c_array(toks, "resp_cases"):
        fields = c_value(case[3], {})
        if not isinstance(fields, bytes):
            continue
        fields = fields.replace(b"foo/1", b"foo/2").replace(b"FOO/1", b"FOO/2")
        resp = b"HTTP/1.1 101 Switching Protocols\r\n" + fields + b"\r\n" + b"\x81\x02hi"
        for r in ("WS", "FOO", "WS_FOO", "GET"):
            add("fuzz_response", "unit-upgrade", resp_ctl(r) + resp)


def response_by_hand():
    ws101 = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n")
    cases = [
        ("WS", ws101 + b"\r\n\x81\x05hello"),
        ("WS", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
               + ws101 + b"Sec-WebSocket-Protocol: chat\r\nX-End: 1\r\n\r\n"),
        ("WS", ws101 + b"Sec-WebSocket-Protocol: superchat\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n"),
        ("WS", ws101 + b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"),
        ("WS", ws101 + b"Content-Length: 0\r\n\r\n"),
        ("WS", ws101 + b"Sec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n\r\n"),
        ("WS", b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"),
        ("WS", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"),
        ("WS", b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
               + WS_ACCEPT + b"\r\n\r\n"),
        ("FOO", b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo/2\r\n\r\nbytes"),
        ("FOO", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: Foo/2, foo/2\r\nKeep-Alive: 1\r\n\r\n"),
        ("WS_FOO", b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: Foo/2\r\n\r\n"),
        ("WS_FOO", ws101 + b"\r\n"),
        ("WS_FOO", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, foo/2\r\nSec-WebSocket-Accept: "
                   + WS_ACCEPT + b"\r\n\r\n"),
        ("GET", ws101 + b"\r\n"),
        ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\nX: 1\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n"
                b"Trailer: X-T\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nHTTP2-Settings: x\r\n"
                b"Upgrade: foo\r\nX-B: 2\r\n\r\n" + CHUNKED),
        ("GET10", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED),
        ("GET10", b"HTTP/1.1 200 OK\r\n\r\nclose-delimited"),
        ("GET10", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("HEAD10", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("POST", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        ("POST", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"),
        ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"),
        ("GET", b"HTTP/1.1 200 \r\nConnection: via, content-length, host\r\nVia: 1.1 other\r\n"
                b"Content-Length: 2\r\nHost: h\r\n\r\nok"),
    ]
    for req, data in cases:
        for piece, eof in ((1024, True), (1, False), (3, True)):
            add("fuzz_response", "hand", resp_ctl(req, piece, eof) + data)


# ---- fuzz_config --------------------------------------------------------------

CONFIG_KEY_RE = re.compile(r"\b(listen|upstreams|routes|timeouts|limits|admin|tunnel|tls|certificates|"
                           r"health|servers|access_log|error_log|resolvers|workers|via|user|pid_file)\s*[=:]")
MIN_CONFIG = (b'listen = ( { address = "127.0.0.1:8080"; } );\n'
              b'upstreams = ( { name = "app"; servers = ( { address = "127.0.0.1:9000"; } ); } );\n'
              b'routes = ( { upstream = "app"; } );\n')


def config_text(b):
    """Placeholders of the tests filled in with something plausible."""
    for k, v in ((b"{port}", b"8080"), (b"%d", b"8080"), (b"%s", b"/tmp/sy-fuzz.sock"),
                 (b"%%", b"%")):
        b = b.replace(k, v)
    return b


def add_config(origin, b):
    b = config_text(b)
    if not CONFIG_KEY_RE.search(b.decode("latin-1")):
        return
    if not re.search(rb"\blisten\s*[=:]", b):
        b = MIN_CONFIG + b  # a fragment: after a minimal config, so its own section is reached
    add("fuzz_config", origin, b)


def config_from_unit():
    path = os.path.join(ROOT, "tests", "unit", "check_config.c")
    toks = c_tokens(open(path, encoding="utf-8").read())
    for _end, b in string_runs(toks):
        if re.search(rb"\b(listen|upstreams|routes|timeouts|limits|admin|tunnel)\b\s*[=:]", b):
            add("fuzz_config", "unit", config_text(b))


def config_from_e2e():
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    for name in sorted(os.listdir(os.path.join(ROOT, "tests", "e2e"))):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(ROOT, "tests", "e2e", name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                add_config("e2e-" + name[:-3].replace("cases_", "").replace("_", ""),
                           node.value.encode("utf-8"))
    import harness
    mk = harness.make_config
    variants = [
        mk(8080, {"app": [9000]}),
        mk(8080, {"app": [9000, ("127.0.0.1:9001", 3)], "ws": ["backend.example:9100"]},
           routes=[{"name": "ws", "host": "*.example.com", "path_prefix": "/ws", "upstream": "ws",
                    "upgrade": "forward", "protocols": ["websocket", "foo/2"]},
                   {"name": "all", "upstream": "app", "upgrade": "strip"}],
           timeouts={"tunnel_idle": 5000}, limits={"header_bytes": "32k"}, workers=2),
        mk(8080, {"app": [9000]}, routes=[{"name": "vnc", "upgrade": "terminate",
                                            "bridge": "127.0.0.1:5900", "subprotocols": ["binary"],
                                            "origins": ["https://a.example"]}],
           access_log="syslog", log_level="debug", via="edge-1", workers=None,
           extra='admin = { address = "127.0.0.1:9901"; allow = [ "10.0.0.0/8" ]; };'),
    ]
    for v in variants:
        add("fuzz_config", "e2e-harness", v.encode())


def config_by_hand():
    with open(os.path.join(ROOT, "etc", "switchyard.conf"), "rb") as f:
        add("fuzz_config", "etc", f.read())
    tls = (b'listen = ( { address = "127.0.0.1:8443"; tls = { protocols = "TLSv1.3+";\n'
           b'  certificates = ( { cert = "@FIXTURES@/cert.pem"; key = "@FIXTURES@/key.pem"; } ); }; } );\n')
    add("fuzz_config", "fixture", tls + MIN_CONFIG[MIN_CONFIG.index(b"upstreams"):])
    add("fuzz_config", "fixture", tls.replace(b"@FIXTURES@/key.pem", b"@FIXTURES@/other-key.pem") +
        MIN_CONFIG[MIN_CONFIG.index(b"upstreams"):])
    add("fuzz_config", "fixture",
        b'listen = ( { address = "127.0.0.1:8080"; } );\n@include "@FIXTURES@/upstreams.conf"\n'
        b'@include "@FIXTURES@/routes.conf"\n@include "@FIXTURES@/timeouts.conf"\n'
        b'upstreams = ( ); routes = ( );\n')
    add("fuzz_config", "fixture",
        b'listen = ( { address = "127.0.0.1:8080"; } );\n@include "@FIXTURES@/routes.conf"\n'
        b'upstreams = ( { name = "app"; tls = { ca = "@FIXTURES@/cert.pem"; sni = "fuzz.example"; };\n'
        b'  servers = ( { address = "127.0.0.1:9443"; } ); },\n'
        b'  { name = "b"; tls = { ca = "@FIXTURES@/missing.pem"; verify = false; };\n'
        b'  servers = ( { address = "127.0.0.1:9444"; } ); resolve = "0"; } );\n'
        b'limits = { header_bytes = "1g"; uri_bytes = "1G"; };\n')
    # more errors than CONFIG_MAX_ERRORS (64) keeps
    add("fuzz_config", "hand", MIN_CONFIG + b"".join(b"bad%d = %d;\n" % (i, i) for i in range(70)))
    add("fuzz_config", "fixture", MIN_CONFIG + b'@include "@FIXTURES@/bad.conf"\n')
    add("fuzz_config", "fixture", MIN_CONFIG + b'@include "@FIXTURES@/self.conf"\n')
    add("fuzz_config", "fixture", MIN_CONFIG + b'@include "@FIXTURES@/missing.conf"\n')
    # a directory: libconfig 1.5 would exit the process, config.c must refuse it first
    add("fuzz_config", "include-dir", MIN_CONFIG + b'@include "/"\n')
    add("fuzz_config", "include-dir", MIN_CONFIG + b'  @include\t"@FIXTURES@"\n')


def h2_client_bytes(script):
    """What a python3-h2 client sends for script(conn), without the preface
    (fuzz_h2 supplies it)."""
    import h2.config
    import h2.connection
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.data_to_send()  # the preface and SETTINGS: SETTINGS is sent again below
    c.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
    script(c)
    return c.data_to_send()


def h2_frame(ftype, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def h2_by_hand():
    import h2.settings  # noqa: F401 (h2_client_bytes uses it)
    req = [(":method", "GET"), (":scheme", "https"), (":path", "/x?y=1"), (":authority", "a.example"),
           ("cookie", "a=1"), ("cookie", "b=2"), ("accept", "*/*")]
    ws = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/ws"),
          (":authority", "a.example"), ("sec-websocket-version", "13"), ("origin", "https://a.example")]

    def get(c):
        c.send_headers(1, req, end_stream=True)

    def post(c):
        c.send_headers(1, [(":method", "POST")] + req[1:], end_stream=False)
        c.send_data(1, b"hello", end_stream=False)
        c.send_data(1, b" world", end_stream=True)

    def post_length(c):
        c.send_headers(1, [(":method", "POST")] + req[1:] + [("content-length", "5")])
        c.send_data(1, b"hello", end_stream=True)

    def tunnel(c):
        c.send_headers(1, ws, end_stream=False)
        c.send_data(1, b"\x81\x85\x01\x02\x03\x04iglhn", end_stream=False)
        c.send_data(1, b"", end_stream=True)

    def several(c):
        for sid in (1, 3, 5):
            c.send_headers(sid, req, end_stream=sid != 3)
        c.reset_stream(3)
        c.ping(b"12345678")
        c.increment_flow_control_window(65536)

    for name, script in (("get", get), ("post", post), ("post-length", post_length), ("tunnel", tunnel),
                         ("several", several)):
        add("fuzz_h2", "h2-" + name, h2_client_bytes(script))
    # HEADERS without END_HEADERS, then CONTINUATIONs (the flood's shape)
    import hpack
    block = hpack.Encoder().encode(req)
    add("fuzz_h2", "h2-continuation",
        h2_frame(4, 0, 0, b"") + h2_frame(1, 0x1, 1, block[:5]) +
        b"".join(h2_frame(9, 0, 1, block[5 + i:6 + i]) for i in range(len(block) - 6)) +
        h2_frame(9, 0x4, 1, block[-1:]))
    add("fuzz_h2", "h2-bad-pseudo", h2_client_bytes(lambda c: None) +
        h2_frame(1, 0x5, 1, hpack.Encoder().encode([(":method", "GET"), (":path", "/"),
                                                    ("connection", "close")])))


def main():
    only = sys.argv[1:]
    for d in only:
        if d not in SEEDS:
            sys.exit("unknown driver %s (one of %s)" % (d, ", ".join(SEEDS)))
    for name in ("check_http.c", "check_http_hdr.c", "check_upgrade.c"):
        http_from_unit(name)
    http_by_hand()
    http_nominated()
    http_from_malformed()
    http_from_e2e()
    http_upgrade()
    ws_from_check_ws()
    response_from_http()
    response_from_check_upgrade()
    response_by_hand()
    config_from_unit()
    config_from_e2e()
    config_by_hand()
    h2_by_hand()
    for driver, seeds in SEEDS.items():
        if only and driver not in only:
            continue
        d = os.path.join(OUT, driver)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for data, name in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%s: %d seeds, %d bytes" % (d, len(seeds), sum(len(k) for k in seeds)))


if __name__ == "__main__":
    main()
