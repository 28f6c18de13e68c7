/*
 * check_http: parser strictness for http.c. Every case runs the same path a
 * session does: http_head_scan() to find and check the head, then
 * http_reader_head() for the semantic checks, and compares the outcome (OK or
 * status + reason) byte for byte. Bodies are decoded with http_reader_body()
 * split at every byte boundary so framing never depends on read sizes.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct http_limits lim_default = {8192, 50, 1024};

/* ---- helpers ---- */

struct outcome {
	enum http_scan_result scan;
	size_t head_len;
	int status; /* 0 when accepted */
	const char *reason;
};

/* Scan and parse raw[0..len) as kind; msg is filled when accepted. */
static struct outcome run_head(enum http_msg_kind kind, const char *raw, size_t len,
			       const struct http_limits *lim, enum http_verb req_method,
			       struct http_msg *msg, struct http_reader **rp)
{
	struct outcome o = {HTTP_SCAN_MORE, 0, 0, NULL};
	struct http_error err = {0, NULL};

	o.scan = http_head_scan(kind, raw, len, lim, &o.head_len, &err);
	if (o.scan == HTTP_SCAN_ERROR) {
		o.status = err.status;
		o.reason = err.reason;
		return o;
	}
	if (o.scan == HTTP_SCAN_MORE)
		return o;
	struct http_reader *r = http_reader_new(kind);
	ck_assert_ptr_nonnull(r);
	http_msg_init(msg, kind);
	err.status = 0;
	err.reason = NULL;
	if (http_reader_head(r, msg, raw, o.head_len, req_method, lim, &err) < 0) {
		o.status = err.status;
		o.reason = err.reason;
		ck_assert_int_ne(err.status, 0);
		ck_assert_ptr_nonnull(err.reason);
	}
	if (rp)
		*rp = r;
	else
		http_reader_free(r);
	return o;
}

/* ---- request heads ---- */

struct head_case {
	const char *name;
	const char *raw;
	size_t len;
	int status; /* 0: accepted */
	const char *reason;
};

#define OK(name, raw)                                                                              \
	{                                                                                          \
		name, raw, sizeof(raw) - 1, 0, NULL                                                \
	}
#define BAD(name, raw, st, why)                                                                    \
	{                                                                                          \
		name, raw, sizeof(raw) - 1, st, why                                                \
	}
#define H "Host: a.example\r\n"

static const struct head_case req_cases[] = {
    /* accepted */
    OK("get", "GET / HTTP/1.1\r\n" H "\r\n"),
    OK("post cl", "POST /submit HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\n"),
    OK("post cl ows", "POST / HTTP/1.1\r\n" H "Content-Length:  5 \r\n\r\n"),
    OK("unknown method", "FOO /x HTTP/1.1\r\n" H "\r\n"),
    OK("method with tchars", "M-SEARCH* /x HTTP/1.1\r\n" H "\r\n"),
    OK("absolute-form", "GET http://b.example:8080/p?q=1 HTTP/1.1\r\n" H "\r\n"),
    OK("absolute-form https", "GET HTTPS://b.example/ HTTP/1.1\r\n" H "\r\n"),
    OK("asterisk-form", "OPTIONS * HTTP/1.1\r\n" H "\r\n"),
    OK("http/1.0 without host", "GET / HTTP/1.0\r\n\r\n"),
    OK("empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    OK("host with port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
    OK("chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"),
    OK("Chunked case-insensitive", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n"),
    OK("obs-text in value", "GET / HTTP/1.1\r\n" H "X-A: caf\xc3\xa9\r\n\r\n"),
    OK("tab in value", "GET / HTTP/1.1\r\n" H "X-A: a\tb\r\n\r\n"),
    OK("empty value", "GET / HTTP/1.1\r\n" H "X-A:\r\n\r\n"),
    OK("tchar name", "GET / HTTP/1.1\r\n" H "X-!#$%&'*+-.^_`|~1: v\r\n\r\n"),

    /* framing */
    BAD("cl and te",
	"POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
	"both Content-Length and Transfer-Encoding"),
    BAD("te and cl",
	"POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400,
	"both Content-Length and Transfer-Encoding"),
    BAD("cl abc", "POST / HTTP/1.1\r\n" H "Content-Length: abc\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl -1", "POST / HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl 1,2", "POST / HTTP/1.1\r\n" H "Content-Length: 1,2\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl 5,5", "POST / HTTP/1.1\r\n" H "Content-Length: 5,5\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl +5", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl 0x10", "POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl 1 0", "POST / HTTP/1.1\r\n" H "Content-Length: 1 0\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("cl 20 digits", "POST / HTTP/1.1\r\n" H "Content-Length: 12345678901234567890\r\n\r\n", 400,
	"invalid Content-Length"),
    BAD("two cl equal", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n",
	400, "repeated Content-Length"),
    BAD("two cl differ", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\ncontent-length: 6\r\n\r\n",
	400, "repeated Content-Length"),
    BAD("cl 0 and te",
	"POST / HTTP/1.1\r\n" H "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
	"both Content-Length and Transfer-Encoding"),
    BAD("te gzip, chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("te gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("te chunked, gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("te identity", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("te chunked-x", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunkedx\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("te empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", 400,
	"unsupported Transfer-Encoding"),
    BAD("two te lines",
	"POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	400, "unsupported Transfer-Encoding"),
    BAD("te in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
	"Transfer-Encoding in HTTP/1.0"),

    /* field lines */
    BAD("obs-fold", "GET / HTTP/1.1\r\n" H "X-A: b\r\n  c\r\n\r\n", 400,
	"obs-fold or leading whitespace in field line"),
    BAD("obs-fold tab", "GET / HTTP/1.1\r\n" H "X-A: b\r\n\tc\r\n\r\n", 400,
	"obs-fold or leading whitespace in field line"),
    BAD("leading ws first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400,
	"obs-fold or leading whitespace in field line"),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400,
	"whitespace between field name and colon"),
    BAD("tab before colon", "GET / HTTP/1.1\r\n" H "Content-Length\t: 0\r\n\r\n", 400,
	"whitespace between field name and colon"),
    BAD("space inside name", "GET / HTTP/1.1\r\n" H "X A: b\r\n\r\n", 400,
	"whitespace between field name and colon"),
    BAD("no colon", "GET / HTTP/1.1\r\n" H "XA\r\n\r\n", 400, "field line without colon"),
    BAD("nul in value", "GET / HTTP/1.1\r\n" H "X-A: a\0b\r\n\r\n", 400,
	"control character in field value"),
    BAD("ctl 01 in value", "GET / HTTP/1.1\r\n" H "X-A: a\x01z\r\n\r\n", 400,
	"control character in field value"),
    BAD("del in value", "GET / HTTP/1.1\r\n" H "X-A: a\x7fz\r\n\r\n", 400,
	"control character in field value"),
    BAD("nul in name", "GET / HTTP/1.1\r\n" H "X-\0A: b\r\n\r\n", 400,
	"invalid character in field name"),
    BAD("ctl 01 in name", "GET / HTTP/1.1\r\n" H "X-\x01z: b\r\n\r\n", 400,
	"invalid character in field name"),
    BAD("del in name", "GET / HTTP/1.1\r\n" H "X-\x7fz: b\r\n\r\n", 400,
	"invalid character in field name"),
    BAD("@ in name", "GET / HTTP/1.1\r\n" H "X@A: b\r\n\r\n", 400,
	"invalid character in field name"),
    BAD("obs-text in name", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: b\r\n\r\n", 400,
	"invalid character in field name"),
    BAD("empty name", "GET / HTTP/1.1\r\n" H ": b\r\n\r\n", 400, "empty field name"),

    /* Host */
    BAD("missing host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400, "missing Host"),
    BAD("missing host absolute-form", "GET http://b.example/ HTTP/1.1\r\n\r\n", 400,
	"missing Host"),
    BAD("repeated host", "GET / HTTP/1.1\r\n" H "host: b.example\r\n\r\n", 400, "repeated Host"),
    BAD("repeated host in 1.0", "GET / HTTP/1.0\r\n" H H "\r\n", 400, "repeated Host"),
    BAD("host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"),
    BAD("host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host"),
    BAD("host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "invalid Host"),

    /* line endings */
    BAD("bare lf request line", "GET / HTTP/1.1\n" H "\r\n", 400, "bare CR or LF in head"),
    BAD("bare lf field", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare CR or LF in head"),
    BAD("bare lf end", "GET / HTTP/1.1\r\n" H "\n", 400, "bare CR or LF in head"),
    BAD("bare cr request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "bare CR or LF in head"),
    BAD("bare cr in value", "GET / HTTP/1.1\r\n" H "X-A: a\rb\r\n\r\n", 400,
	"bare CR or LF in head"),
    BAD("cr cr lf", "GET / HTTP/1.1\r\r\n" H "\r\n", 400, "bare CR or LF in head"),

    /* request line */
    BAD("two spaces after method", "GET  / HTTP/1.1\r\n" H "\r\n", 400, "malformed request-target"),
    BAD("two spaces after target", "GET /  HTTP/1.1\r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("trailing space", "GET / HTTP/1.1 \r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 400, "malformed method"),
    BAD("leading space", " GET / HTTP/1.1\r\n" H "\r\n", 400, "malformed method"),
    BAD("empty line first", "\r\nGET / HTTP/1.1\r\n" H "\r\n", 400, "malformed method"),
    BAD("http/0.9", "GET /\r\n\r\n", 400, "malformed request-target"),
    BAD("no version", "GET / \r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("lowercase http", "GET / http/1.1\r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("version 1.10", "GET / HTTP/1.10\r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("version 1", "GET / HTTP/1\r\n" H "\r\n", 400, "malformed HTTP version"),
    BAD("http/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 505, "unsupported HTTP version"),
    BAD("http/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 505, "unsupported HTTP version"),
    BAD("http/0.9 version", "GET / HTTP/0.9\r\n" H "\r\n", 505, "unsupported HTTP version"),
    BAD("ctl in target", "GET /a\x01z HTTP/1.1\r\n" H "\r\n", 400, "malformed request-target"),
    BAD("del in target", "GET /a\x7fz HTTP/1.1\r\n" H "\r\n", 400, "malformed request-target"),
    BAD("nul in target", "GET /a\0z HTTP/1.1\r\n" H "\r\n", 400, "malformed request-target"),
    BAD("obs-text in target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400,
	"malformed request-target"),
    BAD("nul in method", "G\0T / HTTP/1.1\r\n" H "\r\n", 400, "malformed method"),
    BAD("@ in method", "G@T / HTTP/1.1\r\n" H "\r\n", 400, "malformed method"),
    BAD("authority-form get", "GET b.example:80 HTTP/1.1\r\n" H "\r\n", 400,
	"invalid request-target"),
    BAD("asterisk get", "GET * HTTP/1.1\r\n" H "\r\n", 400, "invalid request-target"),
    BAD("absolute userinfo", "GET http://u@b.example/ HTTP/1.1\r\n" H "\r\n", 400,
	"invalid authority in request-target"),
    BAD("absolute empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", 400,
	"invalid authority in request-target"),
    BAD("ftp scheme", "GET ftp://b.example/ HTTP/1.1\r\n" H "\r\n", 400, "invalid request-target"),
    BAD("connect", "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n", 405,
	"CONNECT is not supported"),
};

START_TEST(test_request_head)
{
	const struct head_case *c = &req_cases[_i];
	struct http_msg msg;
	struct outcome o =
	    run_head(HTTP_MSG_REQUEST, c->raw, c->len, &lim_default, HTTP_METHOD_OTHER, &msg, NULL);

	ck_assert_msg(o.scan != HTTP_SCAN_MORE, "%s: scan wants more", c->name);
	ck_assert_msg(o.status == c->status, "%s: status %d (%s), want %d (%s)", c->name, o.status,
		      o.reason ? o.reason : "-", c->status, c->reason ? c->reason : "-");
	if (c->status) {
		ck_assert_msg(strcmp(o.reason, c->reason) == 0, "%s: reason '%s', want '%s'",
			      c->name, o.reason, c->reason);
	} else {
		ck_assert_uint_eq(o.head_len, c->len);
	}
	if (o.scan == HTTP_SCAN_DONE)
		http_msg_fini(&msg);
}
END_TEST

/* No prefix of a valid head is an error, and none is complete. */
START_TEST(test_request_prefixes)
{
	const struct head_case *c = &req_cases[_i];
	if (c->status != 0)
		return;
	for (size_t i = 0; i < c->len; i++) {
		size_t head_len = 0;
		struct http_error err = {0, NULL};
		enum http_scan_result r =
		    http_head_scan(HTTP_MSG_REQUEST, c->raw, i, &lim_default, &head_len, &err);
		ck_assert_msg(r == HTTP_SCAN_MORE, "%s: prefix %zu gives %d (%s)", c->name, i, r,
			      err.reason ? err.reason : "-");
	}
}
END_TEST

START_TEST(test_request_fields)
{
	static const char raw[] = "POST http://B.example:81/p?q HTTP/1.1\r\n"
				  "Host: a.example\r\n"
				  "X-A:  padded value \t\r\n"
				  "Content-Length: 42\r\n\r\n"
				  "pipelined";
	struct http_msg msg;
	struct outcome o = run_head(HTTP_MSG_REQUEST, raw, sizeof(raw) - 1, &lim_default,
				    HTTP_METHOD_OTHER, &msg, NULL);
	ck_assert_int_eq(o.scan, HTTP_SCAN_DONE);
	ck_assert_int_eq(o.status, 0);
	ck_assert_uint_eq(o.head_len, sizeof(raw) - 1 - strlen("pipelined"));
	ck_assert_int_eq(msg.method, HTTP_METHOD_OTHER);
	ck_assert_uint_eq(msg.method_len, 4);
	ck_assert_int_eq(memcmp(msg.method_str, "POST", 4), 0);
	ck_assert_uint_eq(msg.target_len, strlen("http://B.example:81/p?q"));
	ck_assert_int_eq(memcmp(msg.target, "http://B.example:81/p?q", msg.target_len), 0);
	ck_assert_ptr_nonnull(msg.authority);
	ck_assert_uint_eq(msg.authority_len, strlen("B.example:81"));
	ck_assert_int_eq(memcmp(msg.authority, "B.example:81", msg.authority_len), 0);
	ck_assert_int_eq(msg.version_major, 1);
	ck_assert_int_eq(msg.version_minor, 1);
	ck_assert_uint_eq(msg.n_headers, 3);
	const struct http_header *h = http_msg_find(&msg, "x-a");
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(h->value_len, strlen("padded value"));
	ck_assert_int_eq(memcmp(h->value, "padded value", h->value_len), 0);
	ck_assert_int_eq(msg.body, HTTP_BODY_LENGTH);
	ck_assert_uint_eq(msg.content_length, 42);
	ck_assert(msg.keep_alive);
	/* fields point into the message's own copy, not the caller's buffer */
	ck_assert(h->value < raw || h->value >= raw + sizeof(raw));
	http_msg_fini(&msg);
}
END_TEST

START_TEST(test_request_methods)
{
	static const struct {
		const char *raw;
		enum http_verb verb;
		enum http_body_kind body;
	} cases[] = {
	    {"GET / HTTP/1.1\r\n" H "\r\n", HTTP_METHOD_GET, HTTP_BODY_NONE},
	    {"HEAD / HTTP/1.1\r\n" H "\r\n", HTTP_METHOD_HEAD, HTTP_BODY_NONE},
	    {"get / HTTP/1.1\r\n" H "\r\n", HTTP_METHOD_OTHER, HTTP_BODY_NONE},
	    {"POST / HTTP/1.1\r\n" H "\r\n", HTTP_METHOD_OTHER, HTTP_BODY_NONE},
	    {"POST / HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", HTTP_METHOD_OTHER,
	     HTTP_BODY_NONE},
	    {"POST / HTTP/1.1\r\n" H "Content-Length: 007\r\n\r\n", HTTP_METHOD_OTHER,
	     HTTP_BODY_LENGTH},
	    {"PUT / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n", HTTP_METHOD_OTHER,
	     HTTP_BODY_CHUNKED},
	};
	for (size_t i = 0; i < N(cases); i++) {
		struct http_msg msg;
		struct outcome o = run_head(HTTP_MSG_REQUEST, cases[i].raw, strlen(cases[i].raw),
					    &lim_default, HTTP_METHOD_OTHER, &msg, NULL);
		ck_assert_msg(o.status == 0, "%s: %s", cases[i].raw, o.reason);
		ck_assert_int_eq(msg.method, cases[i].verb);
		ck_assert_int_eq(msg.body, cases[i].body);
		if (cases[i].body == HTTP_BODY_LENGTH)
			ck_assert_uint_eq(msg.content_length, 7);
		http_msg_fini(&msg);
	}
}
END_TEST

/* ---- limits ---- */

/* "GET /aaa... HTTP/1.1\r\n" with a target of tlen bytes, then fields. */
static char *make_request(size_t tlen, size_t n_fields, size_t *len)
{
	size_t cap = tlen + n_fields * 32 + 64;
	char *buf = malloc(cap);
	size_t n = 0;
	ck_assert_ptr_nonnull(buf);
	n += (size_t)snprintf(buf + n, cap - n, "GET /");
	memset(buf + n, 'a', tlen - 1);
	n += tlen - 1;
	n += (size_t)snprintf(buf + n, cap - n, " HTTP/1.1\r\nHost: a\r\n");
	for (size_t i = 1; i < n_fields; i++)
		n += (size_t)snprintf(buf + n, cap - n, "X-F%zu: v\r\n", i);
	n += (size_t)snprintf(buf + n, cap - n, "\r\n");
	*len = n;
	return buf;
}

static struct outcome scan_only(enum http_msg_kind kind, const char *buf, size_t len,
				const struct http_limits *lim)
{
	struct outcome o = {HTTP_SCAN_MORE, 0, 0, NULL};
	struct http_error err = {0, NULL};
	o.scan = http_head_scan(kind, buf, len, lim, &o.head_len, &err);
	if (o.scan == HTTP_SCAN_ERROR) {
		o.status = err.status;
		o.reason = err.reason;
	}
	return o;
}

START_TEST(test_limit_fields)
{
	struct http_limits lim = {8192, 10, 1024};
	size_t len;
	char *ok = make_request(10, 10, &len);
	struct outcome o = scan_only(HTTP_MSG_REQUEST, ok, len, &lim);
	ck_assert_int_eq(o.scan, HTTP_SCAN_DONE);
	free(ok);

	char *bad = make_request(10, 11, &len);
	o = scan_only(HTTP_MSG_REQUEST, bad, len, &lim);
	ck_assert_int_eq(o.scan, HTTP_SCAN_ERROR);
	ck_assert_int_eq(o.status, 431);
	ck_assert_str_eq(o.reason, "too many header fields");
	/* also before the head is complete */
	o = scan_only(HTTP_MSG_REQUEST, bad, len - 2, &lim);
	ck_assert_int_eq(o.status, 431);
	o = scan_only(HTTP_MSG_RESPONSE, "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", 31,
		      &(struct http_limits){8192, 1, 1024});
	ck_assert_int_eq(o.status, 502);
	ck_assert_str_eq(o.reason, "too many header fields");
	free(bad);
}
END_TEST

START_TEST(test_limit_header_bytes)
{
	size_t len;
	char *req = make_request(10, 20, &len);
	struct http_limits lim = {len, 100, 1024};

	ck_assert_int_eq(scan_only(HTTP_MSG_REQUEST, req, len, &lim).scan, HTTP_SCAN_DONE);
	lim.header_bytes = len - 1;
	struct outcome o = scan_only(HTTP_MSG_REQUEST, req, len, &lim);
	ck_assert_int_eq(o.status, 431);
	ck_assert_str_eq(o.reason, "header section too large");

	/* incomplete: exactly at the limit wants more, one byte over fails */
	lim.header_bytes = 100;
	ck_assert_int_eq(scan_only(HTTP_MSG_REQUEST, req, 100, &lim).scan, HTTP_SCAN_MORE);
	o = scan_only(HTTP_MSG_REQUEST, req, 101, &lim);
	ck_assert_int_eq(o.status, 431);
	ck_assert_str_eq(o.reason, "header section too large");

	/* a single endless field line, no LF at all */
	char *big = malloc(4096);
	ck_assert_ptr_nonnull(big);
	memcpy(big, "GET / HTTP/1.1\r\nX-A: ", 21);
	memset(big + 21, 'v', 4096 - 21);
	o = scan_only(HTTP_MSG_REQUEST, big, 4096, &lim);
	ck_assert_int_eq(o.status, 431);

	/* responses: 502 */
	memcpy(big, "HTTP/1.1 200 OK\r\nX-A: ", 22);
	o = scan_only(HTTP_MSG_RESPONSE, big, 4096, &lim);
	ck_assert_int_eq(o.status, 502);
	ck_assert_str_eq(o.reason, "header section too large");
	free(big);
	free(req);
}
END_TEST

START_TEST(test_limit_uri)
{
	struct http_limits lim = {65536, 100, 100};
	size_t len;
	char *ok = make_request(100, 1, &len);
	struct outcome o = scan_only(HTTP_MSG_REQUEST, ok, len, &lim);
	ck_assert_int_eq(o.scan, HTTP_SCAN_DONE);
	free(ok);

	char *bad = make_request(101, 1, &len);
	o = scan_only(HTTP_MSG_REQUEST, bad, len, &lim);
	ck_assert_int_eq(o.status, 414);
	ck_assert_str_eq(o.reason, "request-target too long");
	/* while the request line is incomplete: "GET " + 101 bytes of target */
	o = scan_only(HTTP_MSG_REQUEST, bad, 4 + 101, &lim);
	ck_assert_int_eq(o.status, 414);
	ck_assert_str_eq(o.reason, "request-target too long");
	/* ... and exactly at the limit it still wants more */
	o = scan_only(HTTP_MSG_REQUEST, bad, 4 + 100, &lim);
	ck_assert_int_eq(o.scan, HTTP_SCAN_MORE);
	/* target complete, version still missing */
	o = scan_only(HTTP_MSG_REQUEST, bad, 4 + 101 + 3, &lim);
	ck_assert_int_eq(o.status, 414);
	free(bad);
}
END_TEST

START_TEST(test_scan_more)
{
	static const char *partial[] = {
	    "",
	    "G",
	    "GET / HTTP/1.1",
	    "GET / HTTP/1.1\r",
	    "GET / HTTP/1.1\r\n",
	    "GET / HTTP/1.1\r\nHost: a",
	    "GET / HTTP/1.1\r\nHost: a\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\n\r",
	};
	for (size_t i = 0; i < N(partial); i++) {
		struct outcome o =
		    scan_only(HTTP_MSG_REQUEST, partial[i], strlen(partial[i]), &lim_default);
		ck_assert_msg(o.scan == HTTP_SCAN_MORE, "'%s': %d", partial[i], o.scan);
	}
	struct outcome o =
	    scan_only(HTTP_MSG_RESPONSE, "HTTP/1.1 200 OK\r\nA: b\r\n", 23, &lim_default);
	ck_assert_int_eq(o.scan, HTTP_SCAN_MORE);
}
END_TEST

/* ---- keep-alive ---- */

static const struct {
	const char *raw;
	bool keep_alive;
} ka_cases[] = {
    {"GET / HTTP/1.1\r\n" H "\r\n", true},
    {"GET / HTTP/1.1\r\n" H "Connection: close\r\n\r\n", false},
    {"GET / HTTP/1.1\r\n" H "Connection: CLOSE\r\n\r\n", false},
    {"GET / HTTP/1.1\r\n" H "Connection: keep-alive, close\r\n\r\n", false},
    {"GET / HTTP/1.1\r\n" H "Connection: foo\r\nConnection: close\r\n\r\n", false},
    {"GET / HTTP/1.1\r\n" H "Connection: closed\r\n\r\n", true},
    {"GET / HTTP/1.1\r\n" H "Connection: keep-alive\r\n\r\n", true},
    {"GET / HTTP/1.0\r\n\r\n", false},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
    {"GET / HTTP/1.0\r\nConnection: upgrade, keep-alive\r\n\r\n", true},
    {"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", false},
    {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
    {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", true},
};

START_TEST(test_keep_alive)
{
	const char *raw = ka_cases[_i].raw;
	enum http_msg_kind kind = raw[0] == 'H' ? HTTP_MSG_RESPONSE : HTTP_MSG_REQUEST;
	struct http_msg msg;
	struct outcome o =
	    run_head(kind, raw, strlen(raw), &lim_default, HTTP_METHOD_GET, &msg, NULL);
	ck_assert_msg(o.status == 0, "%s: %s", raw, o.reason);
	ck_assert_msg(msg.keep_alive == ka_cases[_i].keep_alive, "%s", raw);
	http_msg_fini(&msg);
}
END_TEST

/* ---- responses ---- */

struct resp_case {
	const char *raw;
	enum http_verb req_method;
	int status; /* expected parse error, 0: accepted */
	const char *reason;
	int code; /* status code when accepted */
	const char *phrase;
	enum http_body_kind body;
	uint64_t length;
};

#define RBAD(raw, why)                                                                             \
	{                                                                                          \
		raw, HTTP_METHOD_GET, 502, why, 0, NULL, HTTP_BODY_NONE, 0                         \
	}

static const struct resp_case resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "OK",
     HTTP_BODY_LENGTH, 10},
    {"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "",
     HTTP_BODY_LENGTH, 1},
    {"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "",
     HTTP_BODY_LENGTH, 1},
    {"HTTP/1.0 404 Not  Found \r\nContent-Length: 0\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 404,
     "Not  Found ", HTTP_BODY_NONE, 0},
    {"HTTP/1.1 599 \xe2\x9c\x93\r\nContent-Length: 1\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 599,
     "\xe2\x9c\x93", HTTP_BODY_LENGTH, 1},
    {"HTTP/1.1 200 OK\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "OK", HTTP_BODY_CLOSE, 0},
    {"HTTP/1.0 200 OK\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "OK", HTTP_BODY_CLOSE, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "OK",
     HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 200, "OK",
     HTTP_BODY_CHUNKED, 0},
    {"HTTP/1.1 100 Continue\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 100, "Continue", HTTP_BODY_NONE, 0},
    {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", HTTP_METHOD_GET, 0, NULL,
     101, "Switching Protocols", HTTP_BODY_NONE, 0},
    {"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 103, "Early Hints",
     HTTP_BODY_NONE, 0},
    {"HTTP/1.1 204 No Content\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 204, "No Content", HTTP_BODY_NONE,
     0},
    {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 204,
     "No Content", HTTP_BODY_NONE, 0},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 304,
     "Not Modified", HTTP_BODY_NONE, 0},
    {"HTTP/1.1 304 Not Modified\r\n\r\n", HTTP_METHOD_GET, 0, NULL, 304, "Not Modified",
     HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HTTP_METHOD_HEAD, 0, NULL, 200, "OK",
     HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_METHOD_HEAD, 0, NULL, 200, "OK",
     HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\n\r\n", HTTP_METHOD_HEAD, 0, NULL, 200, "OK", HTTP_BODY_NONE, 0},
    /* errors are 502: the backend is at fault */
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	 "both Content-Length and Transfer-Encoding"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	 "repeated Content-Length"),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid Content-Length"),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    RBAD("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in HTTP/1.0"),
    RBAD("HTTP/1.1 20 OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 200OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1  200 OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/2 200 OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.2 200 OK\r\n\r\n", "malformed status line"),
    RBAD("http/1.1 200 OK\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 200 O\x01K\r\n\r\n", "malformed status line"),
    /* only 100..599 are status codes (RFC 9110 §15) */
    RBAD("HTTP/1.1 000 Zero\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 099 Below\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 600 Beyond\r\n\r\n", "malformed status line"),
    RBAD("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare CR or LF in head"),
    RBAD("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n", "obs-fold or leading whitespace in field line"),
    RBAD("HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n", "whitespace between field name and colon"),
};

START_TEST(test_response_head)
{
	const struct resp_case *c = &resp_cases[_i];
	struct http_msg msg;
	struct outcome o = run_head(HTTP_MSG_RESPONSE, c->raw, strlen(c->raw), &lim_default,
				    c->req_method, &msg, NULL);
	ck_assert_msg(o.scan != HTTP_SCAN_MORE, "%s: wants more", c->raw);
	ck_assert_msg(o.status == c->status, "%s: status %d (%s), want %d", c->raw, o.status,
		      o.reason ? o.reason : "-", c->status);
	if (c->status) {
		ck_assert_str_eq(o.reason, c->reason);
	} else {
		ck_assert_int_eq(msg.status, c->code);
		ck_assert_uint_eq(msg.reason_len, strlen(c->phrase));
		ck_assert_int_eq(memcmp(msg.reason, c->phrase, msg.reason_len), 0);
		ck_assert_msg(msg.body == c->body, "%s: body %d, want %d", c->raw, msg.body,
			      c->body);
		if (c->body == HTTP_BODY_LENGTH)
			ck_assert_uint_eq(msg.content_length, c->length);
	}
	if (o.scan == HTTP_SCAN_DONE)
		http_msg_fini(&msg);
}
END_TEST

/* ---- bodies ---- */

struct sink {
	char buf[4096];
	size_t len;
	size_t calls;
};

static void sink_cb(void *arg, const char *data, size_t len)
{
	struct sink *s = arg;
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_le(s->len + len, sizeof(s->buf));
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	s->calls++;
}

static struct http_reader *reader_for(enum http_msg_kind kind, const char *head,
				      enum http_verb req_method, struct http_msg *msg)
{
	struct http_reader *r = NULL;
	struct outcome o = run_head(kind, head, strlen(head), &lim_default, req_method, msg, &r);
	ck_assert_msg(o.status == 0 && o.scan == HTTP_SCAN_DONE, "%s: %s", head,
		      o.reason ? o.reason : "-");
	return r;
}

#define CL_HEAD "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
#define NEXT "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"

static const char chunked_body[] = "5;ext=1;name=\"q\"\r\nhello\r\n"
				   "1\r\n \r\n"
				   "A\r\n0123456789\r\n"
				   "00000001\r\n!\r\n"
				   "0;last\r\n"
				   "Trailer-A: 1\r\n"
				   "Trailer-B: 2\r\n"
				   "\r\n";
static const char chunked_payload[] = "hello 0123456789!";

/* len 0 means EOF, so splits start at 1. Feed body[0..split) then the rest plus pipelined bytes;
 * check payload and end. */
static void body_two_pieces(const char *head, const char *body, size_t body_len,
			    const char *payload, size_t split)
{
	char wire[2048];
	size_t wire_len = body_len + strlen(NEXT);
	struct http_msg msg;
	struct sink s = {.len = 0};
	bool done = false;

	memcpy(wire, body, body_len);
	memcpy(wire + body_len, NEXT, strlen(NEXT));
	struct http_reader *r = reader_for(HTTP_MSG_REQUEST, head, HTTP_METHOD_OTHER, &msg);
	ssize_t n1 = http_reader_body(r, wire, split, sink_cb, &s, &done);
	ck_assert_msg(n1 == (ssize_t)split, "split %zu: first piece consumed %zd", split, n1);
	ck_assert_msg(!done || split == body_len, "split %zu: done early", split);
	size_t used = (size_t)n1;
	if (!done) {
		ssize_t n2 = http_reader_body(r, wire + used, wire_len - used, sink_cb, &s, &done);
		ck_assert_msg(n2 >= 0, "split %zu: error", split);
		used += (size_t)n2;
	}
	ck_assert_msg(done, "split %zu: not done", split);
	ck_assert_msg(used == body_len, "split %zu: consumed %zu, want %zu", split, used, body_len);
	ck_assert_uint_eq(s.len, strlen(payload));
	ck_assert_int_eq(memcmp(s.buf, payload, s.len), 0);
	/* the pipelined request is untouched */
	ck_assert_int_eq(memcmp(wire + used, NEXT, strlen(NEXT)), 0);
	/* after the end nothing more is taken */
	ck_assert_int_eq(http_reader_body(r, wire + used, wire_len - used, sink_cb, &s, &done), 0);
	ck_assert(done);
	http_reader_free(r);
	http_msg_fini(&msg);
}

START_TEST(test_body_length_splits)
{
	static const char body[] = "hello world";
	for (size_t split = 1; split <= sizeof(body) - 1; split++)
		body_two_pieces(CL_HEAD, body, sizeof(body) - 1, body, split);
}
END_TEST

START_TEST(test_body_chunked_splits)
{
	for (size_t split = 1; split <= sizeof(chunked_body) - 1; split++)
		body_two_pieces(CHUNKED_HEAD, chunked_body, sizeof(chunked_body) - 1,
				chunked_payload, split);
}
END_TEST

/* One byte per call, as a very slow peer would send it. */
static void body_bytewise(const char *head, const char *body, size_t body_len, const char *payload)
{
	struct http_msg msg;
	struct sink s = {.len = 0};
	bool done = false;
	struct http_reader *r = reader_for(HTTP_MSG_REQUEST, head, HTTP_METHOD_OTHER, &msg);
	size_t i;
	for (i = 0; i < body_len && !done; i++) {
		ssize_t n = http_reader_body(r, body + i, 1, sink_cb, &s, &done);
		ck_assert_msg(n == 1, "byte %zu consumed %zd", i, n);
	}
	ck_assert(done);
	ck_assert_uint_eq(i, body_len);
	ck_assert_uint_eq(s.len, strlen(payload));
	ck_assert_int_eq(memcmp(s.buf, payload, s.len), 0);
	http_reader_free(r);
	http_msg_fini(&msg);
}

START_TEST(test_body_bytewise)
{
	body_bytewise(CL_HEAD, "hello world", 11, "hello world");
	body_bytewise(CHUNKED_HEAD, chunked_body, sizeof(chunked_body) - 1, chunked_payload);
}
END_TEST

/* Malformed chunked bodies: -1 at some point, never a clean end. */
static const struct {
	const char *name;
	const char *body;
} bad_chunked[] = {
    {"bad size", "zz\r\nhello\r\n0\r\n\r\n"},
    {"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
    {"size with 0x", "0x5\r\nhello\r\n0\r\n\r\n"},
    {"overflowing size", "10000000000000000\r\n"},
    {"huge size", "fffffffffffffffff\r\nx\r\n"},
    {"missing crlf after data", "5\r\nhelloXY0\r\n\r\n"},
    {"lf only after data", "5\r\nhello\n0\r\n\r\n"},
    {"missing crlf entirely", "5\r\nhello0\r\n\r\n"},
    {"bare lf after size", "5\nhello\r\n0\r\n\r\n"},
    {"junk after size cr", "5\rXhello\r\n0\r\n\r\n"},
    {"empty size", "\r\nhello\r\n0\r\n\r\n"},
    /* whitespace after the size may only lead to ';' or CR: "5 a" must not be read as 5 (or 0x5a)
     */
    {"space then hex digit", "5 a\r\nhello\r\n0\r\n\r\n"},
    {"tab then text", "5\tzz\r\nhello\r\n0\r\n\r\n"},
};

START_TEST(test_body_chunked_bad)
{
	struct http_msg msg;
	struct sink s = {.len = 0};
	bool done = false;
	const char *body = bad_chunked[_i].body;
	struct http_reader *r = reader_for(HTTP_MSG_REQUEST, CHUNKED_HEAD, HTTP_METHOD_OTHER, &msg);
	ssize_t n = http_reader_body(r, body, strlen(body), sink_cb, &s, &done);
	ck_assert_msg(n == -1, "%s: consumed %zd of %zu, done %d, payload '%.*s'",
		      bad_chunked[_i].name, n, strlen(body), done, (int)s.len, s.buf);
	http_reader_free(r);
	http_msg_fini(&msg);
}
END_TEST

START_TEST(test_body_eof)
{
	struct http_msg msg;
	struct sink s = {.len = 0};
	bool done = false;

	/* Content-Length: EOF before the end */
	struct http_reader *r = reader_for(HTTP_MSG_REQUEST, CL_HEAD, HTTP_METHOD_OTHER, &msg);
	ck_assert_int_eq(http_reader_body(r, "hello", 5, sink_cb, &s, &done), 5);
	ck_assert(!done);
	ck_assert_int_eq(http_reader_body(r, "", 0, sink_cb, &s, &done), -1);
	http_reader_free(r);
	http_msg_fini(&msg);

	/* Content-Length: EOF right away */
	r = reader_for(HTTP_MSG_REQUEST, CL_HEAD, HTTP_METHOD_OTHER, &msg);
	ck_assert_int_eq(http_reader_body(r, "", 0, sink_cb, &s, &done), -1);
	http_reader_free(r);
	http_msg_fini(&msg);

	/* chunked: EOF inside data, inside a size line, inside the trailers */
	static const char *cuts[] = {"5\r\nhel", "5\r\nhello\r\n", "5", "5\r\nhello\r\n0\r\n",
				     "5\r\nhello\r\n0\r\nX-T: 1\r\n"};
	for (size_t i = 0; i < N(cuts); i++) {
		r = reader_for(HTTP_MSG_REQUEST, CHUNKED_HEAD, HTTP_METHOD_OTHER, &msg);
		s.len = 0;
		ssize_t n = http_reader_body(r, cuts[i], strlen(cuts[i]), sink_cb, &s, &done);
		ck_assert_int_eq(n, (ssize_t)strlen(cuts[i]));
		ck_assert(!done);
		ck_assert_msg(http_reader_body(r, "", 0, sink_cb, &s, &done) == -1, "cut '%s'",
			      cuts[i]);
		http_reader_free(r);
		http_msg_fini(&msg);
	}

	/* close-delimited response: everything is body until EOF */
	r = reader_for(HTTP_MSG_RESPONSE, "HTTP/1.1 200 OK\r\n\r\n", HTTP_METHOD_GET, &msg);
	s.len = 0;
	ck_assert_int_eq(http_reader_body(r, "abc", 3, sink_cb, &s, &done), 3);
	ck_assert(!done);
	ck_assert_int_eq(http_reader_body(r, "\r\n\r\n0\r\n", 7, sink_cb, &s, &done), 7);
	ck_assert(!done);
	ck_assert_int_eq(http_reader_body(r, "", 0, sink_cb, &s, &done), 0);
	ck_assert(done);
	ck_assert_uint_eq(s.len, 10);
	ck_assert_int_eq(memcmp(s.buf, "abc\r\n\r\n0\r\n", 10), 0);
	http_reader_free(r);
	http_msg_fini(&msg);

	/* no body: done at once, nothing consumed */
	r = reader_for(HTTP_MSG_RESPONSE, "HTTP/1.1 204 No Content\r\n\r\n", HTTP_METHOD_GET, &msg);
	s.len = 0;
	ck_assert_int_eq(http_reader_body(r, "HTTP/1.1", 8, sink_cb, &s, &done), 0);
	ck_assert(done);
	ck_assert_uint_eq(s.len, 0);
	http_reader_free(r);
	http_msg_fini(&msg);
}
END_TEST

/* A response body is chunked the same way; the reader is reusable per message. */
START_TEST(test_body_reader_reuse)
{
	struct http_msg msg;
	struct sink s = {.len = 0};
	bool done = false;
	struct http_reader *r = http_reader_new(HTTP_MSG_RESPONSE);
	struct http_error err;
	static const char h1[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	static const char h2[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";

	http_msg_init(&msg, HTTP_MSG_RESPONSE);
	ck_assert_int_eq(
	    http_reader_head(r, &msg, h1, strlen(h1), HTTP_METHOD_GET, &lim_default, &err), 0);
	ck_assert_int_eq(http_reader_body(r, "3\r\nabc\r\n0\r\n\r\nxyz", 16, sink_cb, &s, &done),
			 13);
	ck_assert(done);
	ck_assert_int_eq(
	    http_reader_head(r, &msg, h2, strlen(h2), HTTP_METHOD_GET, &lim_default, &err), 0);
	done = false;
	ck_assert_int_eq(http_reader_body(r, "xyzGET", 6, sink_cb, &s, &done), 3);
	ck_assert(done);
	ck_assert_uint_eq(s.len, 6);
	ck_assert_int_eq(memcmp(s.buf, "abcxyz", 6), 0);
	/* and chunked again after a length body */
	ck_assert_int_eq(
	    http_reader_head(r, &msg, h1, strlen(h1), HTTP_METHOD_GET, &lim_default, &err), 0);
	done = false;
	ck_assert_int_eq(http_reader_body(r, "1\r\nq\r\n0\r\n\r\n", 11, sink_cb, &s, &done), 11);
	ck_assert(done);
	http_reader_free(r);
	http_msg_fini(&msg);
}
END_TEST

/* ---- lists and tokens ---- */

static const struct {
	const char *value;
	const char *tokens; /* joined with '|' */
} list_cases[] = {
    {"", ""},
    {"a", "a"},
    {"a,b", "a|b"},
    {"a, b", "a|b"},
    {" a , b ", "a|b"},
    {"\ta\t,\tb\t", "a|b"},
    {",,a,,b,,", "a|b"},
    {" , ,", ""},
    {"keep-alive, Upgrade", "keep-alive|Upgrade"},
    {"a b, c", "a b|c"},
};

START_TEST(test_list_next)
{
	const char *v = list_cases[_i].value;
	char joined[256] = "";
	size_t jl = 0, pos = 0, tok_len;
	const char *tok;
	while (http_list_next(v, strlen(v), &pos, &tok, &tok_len)) {
		ck_assert_uint_gt(tok_len, 0);
		ck_assert_uint_lt(jl + tok_len + 1, sizeof(joined));
		if (jl)
			joined[jl++] = '|';
		memcpy(joined + jl, tok, tok_len);
		jl += tok_len;
		joined[jl] = '\0';
	}
	ck_assert_str_eq(joined, list_cases[_i].tokens);
	ck_assert_uint_eq(pos, strlen(v));
}
END_TEST

START_TEST(test_has_token)
{
	static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\n"
				  "Connection: keep-alive, Upgrade\r\n"
				  "X-Other: close\r\n"
				  "connection: ,X-Foo ,\r\n\r\n";
	static const struct {
		const char *name, *token;
		bool has;
	} cases[] = {
	    {"Connection", "keep-alive", true}, {"Connection", "upgrade", true},
	    {"CONNECTION", "UPGRADE", true},	{"Connection", "x-foo", true},
	    {"Connection", "close", false},	{"Connection", "keep", false},
	    {"Connection", "alive", false},	{"Connection", "", false},
	    {"X-Other", "close", true},		{"Missing", "close", false},
	    {"Connectio", "upgrade", false},
	};
	struct http_msg msg;
	struct outcome o = run_head(HTTP_MSG_REQUEST, raw, sizeof(raw) - 1, &lim_default,
				    HTTP_METHOD_OTHER, &msg, NULL);
	ck_assert_int_eq(o.status, 0);
	for (size_t i = 0; i < N(cases); i++)
		ck_assert_msg(http_msg_has_token(&msg, cases[i].name, cases[i].token) ==
				  cases[i].has,
			      "%s / %s", cases[i].name, cases[i].token);
	ck_assert_uint_eq(http_msg_count(&msg, "connection"), 2);
	ck_assert_ptr_null(http_msg_find(&msg, "Conn"));
	ck_assert(http_token_eq("Chunked", 7, "chunked"));
	ck_assert(!http_token_eq("chunked", 6, "chunked"));
	http_msg_fini(&msg);
}
END_TEST

START_TEST(test_status_text)
{
	ck_assert_str_eq(http_status_text(400), "Bad Request");
	ck_assert_str_eq(http_status_text(405), "Method Not Allowed");
	ck_assert_str_eq(http_status_text(414), "URI Too Long");
	ck_assert_str_eq(http_status_text(431), "Request Header Fields Too Large");
	ck_assert_str_eq(http_status_text(505), "HTTP Version Not Supported");
	ck_assert_str_eq(http_status_text(799), "Unknown");
}
END_TEST

static Suite *http_suite(void)
{
	Suite *s = suite_create("http");
	TCase *tc = tcase_create("request_head");
	tcase_add_loop_test(tc, test_request_head, 0, N(req_cases));
	tcase_add_loop_test(tc, test_request_prefixes, 0, N(req_cases));
	tcase_add_test(tc, test_request_fields);
	tcase_add_test(tc, test_request_methods);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_add_test(tc, test_limit_fields);
	tcase_add_test(tc, test_limit_header_bytes);
	tcase_add_test(tc, test_limit_uri);
	tcase_add_test(tc, test_scan_more);
	suite_add_tcase(s, tc);

	tc = tcase_create("keep_alive");
	tcase_add_loop_test(tc, test_keep_alive, 0, N(ka_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("response_head");
	tcase_add_loop_test(tc, test_response_head, 0, N(resp_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("body");
	tcase_add_test(tc, test_body_length_splits);
	tcase_add_test(tc, test_body_chunked_splits);
	tcase_add_test(tc, test_body_bytewise);
	tcase_add_loop_test(tc, test_body_chunked_bad, 0, N(bad_chunked));
	tcase_add_test(tc, test_body_eof);
	tcase_add_test(tc, test_body_reader_reuse);
	suite_add_tcase(s, tc);

	tc = tcase_create("lists");
	tcase_add_loop_test(tc, test_list_next, 0, N(list_cases));
	tcase_add_test(tc, test_has_token);
	tcase_add_test(tc, test_status_text);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(http_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
