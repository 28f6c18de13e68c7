"""Malformed and smuggling-style requests: each gets the exact expected status,
nothing reaches the backend, the connection is closed after the response, and
the proxy's fd count returns to its baseline.

Corpus entries: (name, raw request bytes, expected status, kind). kind "head":
the head itself is bad, so the backend must see no connection at all. kind
"body": the head is valid and the chunked body is bad; the backend may see the
truncated request, but never the request smuggled after it. The proxy parses
the body as it relays it (once the backend is connected, before any answer), so
the client gets exactly the 400 "malformed request body" and then a close.

FORWARD_CORPUS (issue 16) holds the oddities the proxy accepts: each is
forwarded as exactly one request, compared byte for byte with what the
backend received (nothing else reaches it before the proxy closes that
connection), with the status the client gets. Together the three tables are
the request side of the smuggling corpus; cases_hostile_backend.py is the
response side.
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
    # issue 16: TE.TE variants
    ("te_second_line_identity", post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"]), 400),
    ("te_obs_fold_second_value", post([b"Transfer-Encoding: chunked", b" identity"]), 400),
    ("te_empty", post([b"Transfer-Encoding:"]), 400),
    ("te_chunked_trailing_comma", post([b"Transfer-Encoding: chunked,"]), 400),
    ("te_chunked_quoted", post([b'Transfer-Encoding: "chunked"']), 400),
    ("te_chunked_with_cl_zero", post([b"Content-Length: 0", b"Transfer-Encoding: chunked"]), 400),
    # Content-Length: lists, signs, leading zeros past 19 digits, huge values
    ("cl_comma_identical", post([b"Content-Length: 5, 5"], b"hello"), 400),
    ("cl_comma_identical_no_space", post([b"Content-Length: 5,5"], b"hello"), 400),
    ("cl_minus_zero", post([b"Content-Length: -0"], b""), 400),
    ("cl_plus_zero", post([b"Content-Length: +0"], b""), 400),
    ("cl_twenty_digits_leading_zeros", post([b"Content-Length: 00000000000000000005"], b"hello"), 400),
    ("cl_uint64_max", post([b"Content-Length: 18446744073709551615"], b"x"), 400),
    ("cl_uint64_max_plus_one", post([b"Content-Length: 18446744073709551616"], b"x"), 400),
    ("cl_decimal_point", post([b"Content-Length: 5.0"], b"hello"), 400),
    ("cl_trailing_letter", post([b"Content-Length: 5a"], b"hello"), 400),
    ("cl_second_line_empty", post([b"Content-Length: 5", b"Content-Length:"], b"hello"), 400),
    # NUL and bare CR anywhere in the head
    ("nul_first_byte", b"\x00" + req([H[:-2]]), 400),
    ("nul_in_method", req([H[:-2]], b"G\x00ET / HTTP/1.1"), 400),
    ("nul_in_version", req([H[:-2]], b"GET / HTTP/1.\x001"), 400),
    ("nul_after_version", req([H[:-2]], b"GET / HTTP/1.1\x00"), 400),
    ("nul_before_colon", req([H[:-2], b"X-A\x00: 1"]), 400),
    ("nul_field_line", req([H[:-2], b"\x00"]), 400),
    ("nul_in_host", req([b"Host: m.te\x00st"]), 400),
    ("nul_after_head", req([H[:-2], b"X-A: 1\x00"]), 400),
    ("bare_cr_first_byte", b"\rGET / HTTP/1.1\r\nHost: m.test\r\n\r\n", 400),
    ("bare_cr_in_method", b"G\rET / HTTP/1.1\r\nHost: m.test\r\n\r\n", 400),
    ("bare_cr_after_version", b"GET / HTTP/1.1\r\r\nHost: m.test\r\n\r\n", 400),
    ("bare_cr_in_name", req([H[:-2], b"X-\rA: 1"]), 400),
    ("bare_cr_before_crlf", req([H[:-2], b"X-A: 1\r"]), 400),
    ("bare_cr_line", req([H[:-2], b"\r", b"X-A: 1"]), 400),
    ("bare_cr_ends_head", b"GET / HTTP/1.1\r\nHost: m.test\r\n\r\r\n", 400),
    # a leading empty line (RFC 9112 §2.2 lets a server skip it; strict here, never forwarded)
    ("leading_empty_line", b"\r\n" + req([H[:-2]]), 400),
    ("whitespace_only_line", req([H[:-2], b" ", b"X-A: 1"]), 400),
    # request-target oddities
    ("absolute_form_userinfo", req([H[:-2]], b"GET http://user@m.test/ HTTP/1.1"), 400),
    ("absolute_form_empty_host", req([H[:-2]], b"GET http:///x HTTP/1.1"), 400),
    ("absolute_form_ftp_scheme", req([H[:-2]], b"GET ftp://m.test/ HTTP/1.1"), 400),
    ("absolute_form_without_host_field", req([b"X-A: 1"], b"GET http://m.test/ HTTP/1.1"), 400),
    ("absolute_form_bad_host_char", req([H[:-2]], b"GET http://m\"test/ HTTP/1.1"), 400),
    ("asterisk_with_get", req([H[:-2]], b"GET * HTTP/1.1"), 400),
    ("target_fragment_only", req([H[:-2]], b"GET #frag HTTP/1.1"), 400),
    ("target_relative_path", req([H[:-2]], b"GET a/b HTTP/1.1"), 400),
    ("target_query_only", req([H[:-2]], b"GET ?a=1 HTTP/1.1"), 400),
    # versions
    ("version_http101", req([H[:-2]], b"GET / HTTP/1.01"), 400),
    ("version_http011", req([H[:-2]], b"GET / HTTP/01.1"), 400),
    ("version_http110", req([H[:-2]], b"GET / HTTP/1.10"), 400),
    ("version_space_after_slash", req([H[:-2]], b"GET / HTTP/ 1.1"), 400),
    ("version_http09", req([H[:-2]], b"GET / HTTP/0.9"), 505),
    ("http09_with_blank_line", b"GET /\r\n\r\n", 400),
    # upgrades the proxy refuses before any backend is contacted
    ("upgrade_websocket_on_head", req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket",
                                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                       b"Sec-WebSocket-Version: 13"], b"HEAD /ws HTTP/1.1"), 400),
    ("upgrade_websocket_on_post_with_body", req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket",
                                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                                 b"Sec-WebSocket-Version: 13", b"Content-Length: 5"],
                                                b"POST /ws HTTP/1.1", b"hello"), 400),
    ("upgrade_websocket_on_post_without_body", req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket",
                                                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                                    b"Sec-WebSocket-Version: 13"], b"POST /ws HTTP/1.1"), 400),
    ("upgrade_websocket_chunked_body", req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket",
                                            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                            b"Sec-WebSocket-Version: 13", b"Transfer-Encoding: chunked"],
                                           b"GET /ws HTTP/1.1", b"0\r\n\r\n" + SMUGGLED), 400),
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
    # issue 16: sizes, extensions, line ends and trailers
    ("chunk_size_16_digits_leading_zeros", chunked_post(b"0000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_sign", chunked_post(b"+5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_0x_prefix", chunked_post(b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    # RFC 9112 §7.1.1: after chunk-size only BWS ";" chunk-ext; "5 6" is no size at
    # all, and a front end reading it as 0x56 would take the request behind it as data
    ("chunk_size_space_then_hex_digit", chunked_post(b"5 6\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_size_tab_then_text", chunked_post(b"5\tx\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_ext_bare_lf", chunked_post(b"5;a=b\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_ext_nul", chunked_post(b"5;a\x00b\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_ext_ctl", chunked_post(b"5;a\x01b\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk_ext_bare_cr", chunked_post(b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("last_chunk_bare_lf", chunked_post(b"5\r\nhello\r\n0\n\r\n" + SMUGGLED)),
    ("body_end_bare_lf", chunked_post(b"5\r\nhello\r\n0\r\n\n" + SMUGGLED)),
    ("trailer_obs_fold", chunked_post(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" + SMUGGLED)),
    ("trailer_nul", chunked_post(b"5\r\nhello\r\n0\r\nX-T: a\x00\r\n\r\n" + SMUGGLED)),
    ("trailer_bare_lf", chunked_post(b"5\r\nhello\r\n0\r\nX-T: a\n\r\n" + SMUGGLED)),
    ("trailer_bare_cr", chunked_post(b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n" + SMUGGLED)),
    ("trailer_leading_colon", chunked_post(b"5\r\nhello\r\n0\r\n: a\r\n\r\n" + SMUGGLED)),
    ("trailer_larger_than_header_bytes",
     chunked_post(b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 17000 + b"\r\n\r\n" + SMUGGLED)),
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
        # what reached the backend before the bad chunk was found depends on when it
        # was found: nothing when it came in the read that completed the head (the
        # request waits for the connect), else the head and the good chunks before it.
        # Never a second request, never a completed body (below).
        got_requests = got.count(b" HTTP/1.1\r\n")
        assert got_requests <= 1, "requests at the backend: %d (%r)" % (got_requests, got)
        assert not got or got.startswith(b"POST / HTTP/1.1\r\n"), "not the request: %r" % got
        assert b"\r\n0\r\n\r\n" not in got, "the bad body was completed toward the backend: %r" % got
        px.wait_fds(base)
    return fn


for _name, _raw, _status in CORPUS:
    register(_name, head_case(_raw, _status))
for _name, _raw in BODY_CORPUS:
    register(_name, body_case(_raw))


# ---------------------------------------------------------------------------
# Accepted oddities: each is forwarded as exactly one request, byte-exact below
# (end-to-end fields as received, then X-Forwarded-*, the proxy's framing and
# Via), and the backend connection sees nothing else before the proxy closes
# it (the backend answers with Connection: close).

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
WS_KEY_LINES = [b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]
ANY_PROTOCOL = [{"name": "all", "upstream": "app", "protocols": ["*"]}]


def fwd(line, fields, host=b"m.test", body=b"", chunked=False, via=b"1.1", extra=()):
    """The request a backend must receive: request line, end-to-end fields
    in order, X-Forwarded-For/-Proto/-Host, [Transfer-Encoding: chunked],
    [extra (upgrade fields)], Via, then body."""
    out = line + b"\r\n" + b"".join(f + b"\r\n" for f in fields)
    out += b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: " + host + b"\r\n"
    if chunked:
        out += b"Transfer-Encoding: chunked\r\n"
    out += b"".join(e + b"\r\n" for e in extra)
    return out + b"Via: " + via + b" switchyard\r\n\r\n" + body


# (name, request, bytes the backend must receive, status the client gets, options)
# options: routes (else one catch-all route); early (the backend answers as soon
# as the head arrived: `want` is then what it saw first, and anything after it
# must be a prefix of the request body); answer (the backend's answer).
FORWARD_CORPUS = [
    # "chunked " with OWS after it: field values exclude trailing whitespace
    # (RFC 9110 §5.5), so this is exactly "chunked"; the body is re-chunked
    ("te_chunked_trailing_space", post([b"Transfer-Encoding: chunked "], b"5\r\nhello\r\n0\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    ("te_chunked_trailing_tab", post([b"Transfer-Encoding: chunked\t"], b"5\r\nhello\r\n0\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    ("te_chunked_uppercase", post([b"TRANSFER-ENCODING: CHUNKED"], b"5\r\nhello\r\n0\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    # Content-Length: 007 is accepted. RFC 9110 §8.6: Content-Length = 1*DIGIT, a
    # decimal number; leading zeros are in the grammar and no HTTP recipient reads
    # the field as octal (and 007 is 7 in octal too), so proxy and backend agree
    # on 7 bytes. It is forwarded byte-exact, as received.
    ("cl_leading_zeros", post([b"Content-Length: 007"], b"1234567"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test", b"Content-Length: 007"], body=b"1234567"), 200, {}),
    ("cl_leading_zeros_19_digits", post([b"Content-Length: 0000000000000000005"], b"hello"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test", b"Content-Length: 0000000000000000005"], body=b"hello"), 200, {}),
    ("cl_leading_zeros_zero", post([b"Content-Length: 000"], b""),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test", b"Content-Length: 000"]), 200, {}),
    # the largest length the proxy takes (19 digits): forwarded, the backend refuses it
    ("cl_nineteen_nines", post([b"Content-Length: 9999999999999999999"], b"x" * 100),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test", b"Content-Length: 9999999999999999999"]), 413,
     {"early": True, "answer": b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"}),
    # chunk extensions, leading zeros and upper-case hex: re-chunked, extensions dropped
    ("chunk_extensions_dropped", chunked_post(b"5;name=value;q=\"a b\"\r\nhello\r\n0;last=1\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    ("chunk_size_leading_zeros", chunked_post(b"005\r\nhello\r\n00\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    ("chunk_size_upper_hex", chunked_post(b"A\r\n0123456789\r\n0\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"a\r\n0123456789\r\n0\r\n\r\n", chunked=True), 200, {}),
    # trailers are read, checked and dropped: the backend never sees them
    ("trailers_dropped", chunked_post(b"5\r\nhello\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    ("trailer_without_colon_dropped", chunked_post(b"5\r\nhello\r\n0\r\nnocolon\r\n\r\n"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], body=b"5\r\nhello\r\n0\r\n\r\n", chunked=True), 200, {}),
    # absolute-form against a different Host: the target's authority wins for
    # routing and for the Host the backend gets (RFC 9112 §3.2.2), so the route
    # that matched and the backend agree on one host
    ("absolute_form_host_conflict", req([b"Host: b.test", b"X-A: 1"], b"GET http://a.test/x HTTP/1.1"),
     fwd(b"GET http://a.test/x HTTP/1.1", [b"Host: a.test", b"X-A: 1"], host=b"a.test"), 200,
     {"routes": [{"name": "b", "host": "b.test", "upstream": "other"}, {"name": "a", "host": "a.test", "upstream": "app"}]}),
    ("absolute_form_port_and_host_without", req([b"Host: m.test"], b"GET http://m.test:8080/x?q#f HTTP/1.1"),
     fwd(b"GET http://m.test:8080/x?q#f HTTP/1.1", [b"Host: m.test:8080"], host=b"m.test:8080"), 200, {}),
    ("options_asterisk", req([H[:-2]], b"OPTIONS * HTTP/1.1"),
     fwd(b"OPTIONS * HTTP/1.1", [b"Host: m.test"]), 200, {}),
    # a fragment is forwarded as received (routing compares the bytes before it as a path prefix)
    ("target_fragment", req([H[:-2]], b"GET /a#frag HTTP/1.1"),
     fwd(b"GET /a#frag HTTP/1.1", [b"Host: m.test"]), 200, {}),
    # upgrades that are not upgrades: plain requests without the hop-by-hop fields
    ("upgrade_h2c_with_http2_settings",
     req([H[:-2], b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]),
     fwd(b"GET / HTTP/1.1", [b"Host: m.test"]), 200, {"routes": ANY_PROTOCOL}),
    ("connection_upgrade_without_upgrade", req([H[:-2], b"Connection: Upgrade"] + WS_KEY_LINES),
     fwd(b"GET / HTTP/1.1", [b"Host: m.test"] + WS_KEY_LINES), 200, {}),
    ("upgrade_without_connection_upgrade", req([H[:-2], b"Upgrade: websocket"] + WS_KEY_LINES),
     fwd(b"GET / HTTP/1.1", [b"Host: m.test"] + WS_KEY_LINES), 200, {}),
    ("upgrade_on_http10", req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket"] + WS_KEY_LINES,
                              b"GET / HTTP/1.0"),
     fwd(b"GET / HTTP/1.1", [b"Host: m.test"] + WS_KEY_LINES, via=b"1.0"), 200, {}),
    # upgrades forwarded as such (any protocol allowed on the route)
    ("upgrade_on_head", req([H[:-2], b"Connection: Upgrade", b"Upgrade: foo"], b"HEAD / HTTP/1.1"),
     fwd(b"HEAD / HTTP/1.1", [b"Host: m.test"], extra=[b"Connection: Upgrade", b"Upgrade: foo"]), 200,
     {"routes": ANY_PROTOCOL, "method": "HEAD"}),
    ("upgrade_on_post_without_body", req([H[:-2], b"Connection: Upgrade", b"Upgrade: foo"], b"POST / HTTP/1.1"),
     fwd(b"POST / HTTP/1.1", [b"Host: m.test"], extra=[b"Connection: Upgrade", b"Upgrade: foo"]), 200,
     {"routes": ANY_PROTOCOL}),
    # an upgrade with a request pipelined behind it, answered without a switch: the
    # bytes after the upgrade request are never parsed as HTTP (RFC 9110 §7.8)
    ("upgrade_with_pipelined_request_not_switched",
     req([H[:-2], b"Connection: Upgrade", b"Upgrade: websocket"] + WS_KEY_LINES, b"GET /ws HTTP/1.1") + SMUGGLED,
     fwd(b"GET /ws HTTP/1.1", [b"Host: m.test"] + WS_KEY_LINES, extra=[b"Connection: Upgrade", b"Upgrade: websocket"]),
     200, {}),
]


def forward_case(raw, want, status, opts):
    def fn(t):
        answer = opts.get("answer", ANSWER)

        def handler(rec):
            if opts.get("early"):
                rec.recv_until(b"\r\n\r\n", timeout=5)
            else:
                while len(rec.data) < len(want) and rec.recv(timeout=5):
                    pass
            rec.send(answer)
            rec.read_all(timeout=10)

        be = t.raw_backend(handler)
        other = t.raw_backend()
        routes = opts.get("routes")
        px = t.proxy(upstreams={"app": [be], "other": [other]}, routes=routes,
                     timeouts={"header": "3s", "response": "3s"})
        base = px.fd_count()
        c = px.connect()
        _send(c, raw)
        r = c.read_response(method=opts.get("method", "GET"))
        eq(r.status, status, "status")
        c.close()
        wait_until(lambda: be.records and all(x.eof for x in be.records), 5, what="the backend connection closed")
        got = be.received
        t.note("backend received %r" % got)
        eq(be.connections, 1, "backend connections")
        eq(other.connections, 0, "connections to the upstream of the other route")
        if opts.get("early"):
            eq(got[:len(want)], want, "request head at the backend")
            body = raw[raw.index(b"\r\n\r\n") + 4:]
            assert body.startswith(got[len(want):]), "the backend got more than a prefix of the body: %r" % got
        else:
            eq(got, want, "bytes at the backend")
        a = px.wait_access(1)
        eq([x["status"] for x in a], [status], "access-log statuses")
        px.wait_fds(base)
    return fn


for _name, _raw, _want, _status, _opts in FORWARD_CORPUS:
    register(_name, forward_case(_raw, _want, _status, _opts))


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
