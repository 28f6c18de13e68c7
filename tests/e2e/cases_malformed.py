"""Malformed and smuggling-style requests: each gets the exact expected status,
nothing reaches the backend, the connection is closed after the response, and
the proxy's fd count returns to its baseline.

Corpus entries: (name, raw request bytes, expected status, kind). kind "head":
the head itself is bad, so the backend must see no connection at all. kind
"body": the head is valid and the chunked body is bad; the backend may see the
truncated request, but never the request smuggled after it. The proxy parses
the body as it relays it (once the backend is connected, before any answer), so
the client gets exactly the 400 "malformed request body" and then a close.
"""

from harness import check_error_response, eq, expect_proxy_error, register, wait_until

H = b"Host: m.test\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: m.test\r\n\r\n"


def req(head_lines, line=b"GET / HTTP/1.1", body=b""):
    return line + b"\r\n" + b"".join(l + b"\r\n" for l in head_lines) + b"\r\n" + body


def post(fields, body=b"0\r\n\r\n" + SMUGGLED):
    return req([b"Host: m.test"] + fields, b"POST / HTTP/1.1", body)


def chunked_post(body):
    return post([b"Transfer-Encoding: chunked"], body)


CORPUS = [
    # framing: Content-Length / Transfer-Encoding
    ("cl_and_te", post([b"Content-Length: 5", b"Transfer-Encoding: chunked"]), 400),
    ("te_and_cl", post([b"Transfer-Encoding: chunked", b"Content-Length: 5"]), 400),
    ("cl_not_a_number", post([b"Content-Length: abc"], b"abc"), 400),
    ("cl_negative", post([b"Content-Length: -1"], b""), 400),
    ("cl_list_differing", post([b"Content-Length: 1,2"], b"ab"), 400),
    ("cl_plus_sign", post([b"Content-Length: +5"], b"hello"), 400),
    ("cl_hex", post([b"Content-Length: 0x10"], b"0123456789abcdef"), 400),
    ("cl_empty", post([b"Content-Length:"], b""), 400),
    ("cl_inner_space", post([b"Content-Length: 1 2"], b"x" * 12), 400),
    ("cl_overflow", post([b"Content-Length: 99999999999999999999999999"], b"x"), 400),
    ("cl_two_differing", post([b"Content-Length: 5", b"Content-Length: 6"], b"hello!"), 400),
    ("cl_two_identical", post([b"Content-Length: 5", b"Content-Length: 5"], b"hello"), 400),
    ("te_gzip", post([b"Transfer-Encoding: gzip"]), 400),
    ("te_chunked_then_gzip", post([b"Transfer-Encoding: chunked, gzip"]), 400),
    ("te_identity", post([b"Transfer-Encoding: identity"]), 400),
    ("te_xchunked", post([b"Transfer-Encoding: xchunked"]), 400),
    ("te_chunked_two_lines", post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"]), 400),
    ("te_chunked_chunked_one_line", post([b"Transfer-Encoding: chunked, chunked"]), 400),
    ("te_on_http10", req([b"Host: m.test", b"Transfer-Encoding: chunked"], b"POST / HTTP/1.0",
                         b"0\r\n\r\n" + SMUGGLED), 400),
    ("te_space_before_colon", post([b"Transfer-Encoding : chunked"]), 400),
    ("te_vertical_tab_value", post([b"Transfer-Encoding:\x0bchunked"]), 400),
    ("te_obs_fold", post([b"Transfer-Encoding:", b" chunked"]), 400),
    # field syntax
    ("obs_fold_space", req([H[:-2], b"X-A: a", b" continued"]), 400),
    ("obs_fold_tab", req([H[:-2], b"X-A: a", b"\tcontinued"]), 400),
    ("space_before_colon", req([H[:-2], b"X-A : 1"]), 400),
    ("tab_before_colon", req([H[:-2], b"X-A\t: 1"]), 400),
    ("leading_space_first_field", req([b" Host: m.test"]), 400),
    ("leading_tab_first_field", req([b"\tX-A: 1", H[:-2]]), 400),
    ("nul_in_value", req([H[:-2], b"X-A: a\x00b"]), 400),
    ("ctl_01_in_value", req([H[:-2], b"X-A: a\x01b"]), 400),
    ("del_in_value", req([H[:-2], b"X-A: a\x7fb"]), 400),
    ("nul_in_name", req([H[:-2], b"X-\x00A: 1"]), 400),
    ("ctl_01_in_name", req([H[:-2], b"X-\x01A: 1"]), 400),
    ("del_in_name", req([H[:-2], b"X-\x7fA: 1"]), 400),
    ("at_in_name", req([H[:-2], b"X@A: 1"]), 400),
    ("paren_in_name", req([H[:-2], b"X(A: 1"]), 400),
    ("space_in_name", req([H[:-2], b"X A: 1"]), 400),
    ("high_byte_in_name", req([H[:-2], b"X\x80A: 1"]), 400),
    ("empty_name", req([H[:-2], b": x"]), 400),
    ("no_colon", req([H[:-2], b"X-A 1"]), 400),
    # Host
    ("missing_host_http11", req([b"X-A: 1"]), 400),
    ("two_host_lines", req([b"Host: m.test", b"Host: m.test"]), 400),
    ("two_host_lines_differing_case", req([b"Host: a.test", b"host: b.test"]), 400),
    ("host_with_space", req([b"Host: m test"]), 400),
    # line endings
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: m.test\nX-A: 1\n\n", 400),
    ("bare_lf_one_field", b"GET / HTTP/1.1\r\nHost: m.test\nX-A: 1\r\n\r\n", 400),
    ("bare_lf_request_line", b"GET / HTTP/1.1\nHost: m.test\r\n\r\n", 400),
    ("bare_cr_in_value", req([H[:-2], b"X-A: a\rb"]), 400),
    ("bare_cr_in_request_line", b"GET /\r HTTP/1.1\r\nHost: m.test\r\n\r\n", 400),
    # request line
    ("request_line_two_spaces", req([H[:-2]], b"GET  / HTTP/1.1"), 400),
    ("request_line_tab", req([H[:-2]], b"GET\t/ HTTP/1.1"), 400),
    ("request_line_trailing_space", req([H[:-2]], b"GET / HTTP/1.1 "), 400),
    ("request_line_leading_space", req([H[:-2]], b" GET / HTTP/1.1"), 400),
    ("http09", b"GET /\r\n", 400),
    ("version_lowercase", req([H[:-2]], b"GET / http/1.1"), 400),
    ("version_garbage", req([H[:-2]], b"GET / HTTP/1.x"), 400),
    ("version_no_minor", req([H[:-2]], b"GET / HTTP/1"), 400),
    ("version_http20", req([H[:-2]], b"GET / HTTP/2.0"), 505),
    ("version_http12", req([H[:-2]], b"GET / HTTP/1.2"), 505),
    ("version_http30", req([H[:-2]], b"GET / HTTP/3.0"), 505),
    ("target_ctl_char", req([H[:-2]], b"GET /a\x01b HTTP/1.1"), 400),
    ("target_nul", req([H[:-2]], b"GET /a\x00b HTTP/1.1"), 400),
    ("target_del", req([H[:-2]], b"GET /a\x7fb HTTP/1.1"), 400),
    ("target_space", req([H[:-2]], b"GET /a b HTTP/1.1"), 400),
    ("method_paren", req([H[:-2]], b"G(ET / HTTP/1.1"), 400),
    ("method_empty", req([H[:-2]], b" / HTTP/1.1"), 400),
    ("method_ctl", req([H[:-2]], b"G\x01ET / HTTP/1.1"), 400),
    # limits and methods
    ("too_many_fields", req([H[:-2]] + [b"X-F%03d: v" % i for i in range(100)]), 431),
    ("head_too_big_one_field", req([H[:-2], b"X-Big: " + b"b" * 17000]), 431),
    ("head_too_big_many_fields", req([H[:-2]] + [b"X-F%02d: " % i + b"v" * 300 for i in range(60)]), 431),
    ("target_too_long", req([H[:-2]], b"GET /" + b"a" * 8192 + b" HTTP/1.1"), 414),
    ("connect_method", req([b"Host: example.com:443"], b"CONNECT example.com:443 HTTP/1.1"), 405),
]

BODY_CORPUS = [
    ("chunk_size_not_hex", chunked_post(b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_overflow", chunked_post(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_data_without_crlf", chunked_post(b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_negative", chunked_post(b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_bare_lf", chunked_post(b"5\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_empty", chunked_post(b"\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_cr_without_lf", chunked_post(b"5\rXhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_data_cr_without_lf", chunked_post(b"5\r\nhello\rX0\r\n\r\n" + SMUGGLED)),
    ("chunk_data_bare_lf", chunked_post(b"5\r\nhello\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_data_longer_than_size", chunked_post(b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
]


def answer_once(rec):
    """Backend for body cases: answer 200 once the request looks complete."""
    rec.recv_until(b"\r\n0\r\n\r\n", timeout=5)
    if not rec.eof:
        try:
            rec.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
    rec.read_all(timeout=10)


def _send(c, data):
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the proxy may answer and close before reading everything


def head_case(raw, status):
    def fn(t):
        be = t.raw_backend()
        px = t.proxy(be, timeouts={"header": "3s"})
        base = px.fd_count()
        c = px.connect()
        _send(c, raw)
        expect_proxy_error(c, status)
        c.close()
        eq(be.connections, 0, "backend connections")
        px.wait_fds(base)
    return fn


def body_case(raw):
    def fn(t):
        be = t.raw_backend(answer_once)
        px = t.proxy(be, timeouts={"header": "3s", "response": "3s"})
        base = px.fd_count()
        c = px.connect()
        _send(c, raw)
        data = c.read_until_close(timeout=6)
        c.close()
        t.note("client received %r" % data)
        if not data:
            raise AssertionError("connection closed without a response (want the 400)%s"
                                 % (" [reset]" if c.rd.reset else ""))
        eq(check_error_response(data, 400), "malformed request body", "400 body line")
        a = px.wait_access(1)
        eq([(x["method"], x["status"], x.get("reason")) for x in a], [("POST", 400, "malformed request body")],
           "access log (method, status, reason)")
        # the proxy dropped the backend connection before answering: wait for
        # the backend to see that EOF, so everything it will ever get is recorded
        wait_until(lambda: be.records and all(r.eof for r in be.records), 5, what="the backend connection closed")
        got = be.received
        t.note("backend received %r" % got)
        eq(be.connections, 1, "backend connections")
        assert b"/smuggled" not in got, "request after the bad chunked body reached the backend: %r" % got
        eq(got.count(b" HTTP/1.1\r\n"), 1, "requests at the backend (%r)" % got)
        assert b"\r\n0\r\n\r\n" not in got, "the bad body was completed toward the backend: %r" % got
        px.wait_fds(base)
    return fn


for _name, _raw, _status in CORPUS:
    register(_name, head_case(_raw, _status))
for _name, _raw in BODY_CORPUS:
    register(_name, body_case(_raw))


def whole_corpus(t):
    """Every head case in turn against one proxy: still alive, no fd leaked."""
    be = t.raw_backend()
    px = t.proxy(be, timeouts={"header": "3s"})
    base = px.fd_count()
    bad = []
    for name, raw, status in CORPUS:
        c = px.connect()
        _send(c, raw)
        try:
            expect_proxy_error(c, status)
        except AssertionError as e:
            bad.append("%s: %s" % (name, e))
        c.close()
    px.wait_fds(base)
    eq(be.connections, 0, "backend connections")
    assert px.alive(), "proxy died"
    assert not bad, "%d of %d failed, first: %s" % (len(bad), len(CORPUS), bad[0])


register("whole_corpus_one_proxy", whole_corpus, timeout=120)
