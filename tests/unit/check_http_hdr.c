/*
 * check_http_hdr: header rewrite for forwarded heads. Each case is a raw head
 * as received, parsed by the real http.c, and the exact bytes that
 * http_hdr_write_request() / _response() must produce with the options a
 * session passes (via "switchyard", client 10.0.0.1, proto "http",
 * Connection: close unless the case says otherwise).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http_hdr.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct http_limits lim = {16384, 100, 8192};

/* ---- helpers ---- */

static void parse(enum http_msg_kind kind, const char *raw, enum http_verb req_method,
		  struct http_msg *msg)
{
	struct http_error err = {0, NULL};
	size_t len = strlen(raw), head_len = 0;
	struct http_reader *r = http_reader_new(kind);

	ck_assert_ptr_nonnull(r);
	ck_assert_msg(http_head_scan(kind, raw, len, &lim, &head_len, &err) == HTTP_SCAN_DONE,
		      "scan failed (%s): %s", err.reason ? err.reason : "incomplete", raw);
	ck_assert_uint_eq(head_len, len);
	http_msg_init(msg, kind);
	ck_assert_msg(http_reader_head(r, msg, raw, head_len, req_method, &lim, &err) == 0,
		      "parse failed (%s): %s", err.reason, raw);
	http_reader_free(r);
}

/* Write msg and return the output as a NUL-terminated string (caller frees). */
static char *rewrite(const struct http_msg *msg, const struct http_hdr_opts *o)
{
	struct evbuffer *out = evbuffer_new();
	ck_assert_ptr_nonnull(out);
	/* bytes already queued stay in front and untouched */
	evbuffer_add(out, "PREV", 4);
	int rc = msg->kind == HTTP_MSG_REQUEST ? http_hdr_write_request(msg, o, out)
					       : http_hdr_write_response(msg, o, out);
	ck_assert_int_eq(rc, 0);
	size_t len = evbuffer_get_length(out);
	char *s = malloc(len + 1);
	ck_assert_ptr_nonnull(s);
	evbuffer_remove(out, s, len);
	s[len] = '\0';
	evbuffer_free(out);
	ck_assert_int_eq(memcmp(s, "PREV", 4), 0);
	memmove(s, s + 4, len - 4 + 1);
	return s;
}

/* Show CR and LF so a failing comparison is readable on one line. */
static const char *visible(const char *s, char *buf, size_t cap)
{
	size_t n = 0;
	for (; *s && n + 3 < cap; s++) {
		if (*s == '\r') {
			buf[n++] = '\\';
			buf[n++] = 'r';
		} else if (*s == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
		} else {
			buf[n++] = *s;
		}
	}
	buf[n] = '\0';
	return buf;
}

static void assert_bytes(const char *name, const char *got, const char *want)
{
	char g[2048], w[2048];
	ck_assert_msg(strcmp(got, want) == 0, "%s:\n got  %s\n want %s", name,
		      visible(got, g, sizeof(g)), visible(want, w, sizeof(w)));
}

/* ---- the table ---- */

enum { OPT_CHUNKED = 1, OPT_NO_CONNECTION = 2, OPT_UPGRADE_EXTRA = 4 };

struct hdr_case {
	const char *name;
	enum http_msg_kind kind;
	enum http_verb req_method; /* responses: the request's method */
	unsigned opts;
	const char *in;
	const char *out;
};

#define REQ HTTP_MSG_REQUEST
#define RESP HTTP_MSG_RESPONSE
#define XFF "X-Forwarded-For: 10.0.0.1\r\n"
#define XFP "X-Forwarded-Proto: http\r\n"
#define CLOSE "Connection: close\r\n"
#define VIA11 "Via: 1.1 switchyard\r\n\r\n"
#define VIA10 "Via: 1.0 switchyard\r\n\r\n"
/* what a session appends after the copied fields of a request to host h */
#define TAIL(h) XFF XFP "X-Forwarded-Host: " h "\r\n" CLOSE VIA11

static const char upgrade_extra[] = "Connection: Upgrade\r\nUpgrade: websocket\r\n";

static const struct hdr_case cases[] = {
    {"plain get", REQ, HTTP_METHOD_GET, 0,
     "GET /a?b=c HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n",
     "GET /a?b=c HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n" TAIL("a.example")},

    {"every hop-by-hop field", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
     "Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
     "HTTP2-Settings: AAMAAABkAAQAAP__\r\nX-End: 1\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\nX-End: 1\r\n" TAIL("a")},

    {"hop-by-hop names any case", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nHost: a\r\nCONNECTION: keep-alive\r\nkeep-alive: timeout=5\r\n"
     "proxy-connection: keep-alive\r\nte: trailers\r\ntrailer: X-T\r\nUPGRADE: h2c\r\n"
     "http2-settings: x\r\nX-End: 1\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\nX-End: 1\r\n" TAIL("a")},

    {"transfer-encoding re-framed", REQ, HTTP_METHOD_GET, OPT_CHUNKED,
     "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
     "\r\n",
     "POST /up HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n" XFF XFP
     "X-Forwarded-Host: a\r\nTransfer-Encoding: chunked\r\n" CLOSE VIA11},

    {"connection-nominated across lines", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Foo\r\nX-FOO: 1\r\nX-Keep: 2\r\n"
     "connection: x-bar ,, KEEP-ALIVE\r\nX-Bar: 3\r\nx-bar: 4\r\nX-Foo-Bar: 5\r\n"
     "Keep-Alive: 1\r\nConnection:\tx-baz\t\r\nX-BAZ: 6\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: 2\r\nX-Foo-Bar: 5\r\n" TAIL("a")},

    {"nominated before and after the Connection line", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nX-Early: 1\r\nHost: a\r\nConnection: x-early, x-late\r\nX-Late: 2\r\n"
     "X-Earlyish: 3\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Earlyish: 3\r\n" TAIL("a")},

    {"x-forwarded-for merged", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\n"
     "x-forwarded-for: 2.2.2.2,  3.3.3.3\r\nX-Forwarded-For:\r\nX-Other: y\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Other: y\r\n"
     "X-Forwarded-For: 1.1.1.1, 2.2.2.2,  3.3.3.3, 10.0.0.1\r\n" XFP
     "X-Forwarded-Host: a\r\n" CLOSE VIA11},

    {"x-forwarded-proto and host replaced", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: a\r\nX-Forwarded-Host: evil\r\n"
     "x-forwarded-proto: ftp\r\nX-FORWARDED-HOST: evil2\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\n" TAIL("a")},

    {"via appended after an existing via", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.1\r\nVia: 1.0 fred, 1.1 p.example\r\nHost: a\r\nvia: 1.1 other\r\n\r\n",
     "GET / HTTP/1.1\r\nVia: 1.0 fred, 1.1 p.example\r\nHost: a\r\nvia: 1.1 other\r\n" TAIL("a")},

    {"absolute-form replaces host", REQ, HTTP_METHOD_GET, 0,
     "GET http://b.example:8080/p?q HTTP/1.1\r\nAccept: x\r\nhost: a.example\r\nX-A: 1\r\n\r\n",
     "GET http://b.example:8080/p?q HTTP/1.1\r\nAccept: x\r\nHost: b.example:8080\r\nX-A: "
     "1\r\n" TAIL("b.example:8080")},

    {"absolute-form without a host field", REQ, HTTP_METHOD_GET, 0,
     "GET http://b.example/x HTTP/1.0\r\nAccept: x\r\n\r\n",
     "GET http://b.example/x HTTP/1.1\r\nAccept: x\r\nHost: b.example\r\n" XFF XFP
     "X-Forwarded-Host: b.example\r\n" CLOSE VIA10},

    {"http/1.0 with host", REQ, HTTP_METHOD_GET, 0,
     "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\n" XFF XFP "X-Forwarded-Host: a\r\n" CLOSE VIA10},

    {"order and values byte-exact", REQ, HTTP_METHOD_GET, 0,
     "PUT /x%20y;p?q=a%2Fb HTTP/1.1\r\nhost: A.Example\r\nX-B:  spaced   value \t\r\n"
     "x-a: 1\r\nCookie: c=1; d=2\r\nCookie: e=3\r\nAccept: a, b,c\r\nContent-Length: 0\r\n"
     "X-Empty:\r\nX-Utf8: caf\xc3\xa9\r\n\r\n",
     "PUT /x%20y;p?q=a%2Fb HTTP/1.1\r\nhost: A.Example\r\nX-B: spaced   value\r\nx-a: 1\r\n"
     "Cookie: c=1; d=2\r\nCookie: e=3\r\nAccept: a, b,c\r\nContent-Length: 0\r\n"
     "X-Empty: \r\nX-Utf8: caf\xc3\xa9\r\n" TAIL("A.Example")},

    {"unknown method and asterisk", REQ, HTTP_METHOD_GET, 0,
     "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS * HTTP/1.1\r\nHost: a\r\n" TAIL("a")},

    {"unknown method kept", REQ, HTTP_METHOD_GET, 0,
     "PROPFIND /dav HTTP/1.1\r\nHost: a\r\nDepth: 1\r\n\r\n",
     "PROPFIND /dav HTTP/1.1\r\nHost: a\r\nDepth: 1\r\n" TAIL("a")},

    {"upgrade: extra fields, no connection option", REQ, HTTP_METHOD_GET,
     OPT_NO_CONNECTION | OPT_UPGRADE_EXTRA,
     "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Key: k\r\n\r\n",
     "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n" XFF XFP
     "X-Forwarded-Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" VIA11},

    /* responses */
    {"set-cookie kept separate", RESP, HTTP_METHOD_GET, 0,
     "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nContent-Length: 2\r\n"
     "Set-Cookie: b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT\r\nset-cookie: d=4\r\n\r\n",
     "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nContent-Length: 2\r\n"
     "Set-Cookie: b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT\r\nset-cookie: d=4\r\n" CLOSE VIA11},

    {"http/1.0 response", RESP, HTTP_METHOD_GET, 0,
     "HTTP/1.0 404 Not  Found\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: max=5\r\n"
     "Content-Length: 0\r\n\r\n",
     "HTTP/1.1 404 Not  Found\r\nServer: x\r\nContent-Length: 0\r\n" CLOSE VIA10},

    {"chunked response re-framed", RESP, HTTP_METHOD_GET, OPT_CHUNKED,
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nContent-Type: a\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Type: a\r\nTransfer-Encoding: chunked\r\n" CLOSE VIA11},

    {"response hop-by-hop and nominated", RESP, HTTP_METHOD_GET, 0,
     "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nConnection: Upgrade\r\nX-Internal: secret\r\n"
     "Upgrade: h2\r\nProxy-Connection: x\r\nContent-Length: 0\r\nx-internal: 2\r\n"
     "X-Public: ok\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Public: ok\r\n" CLOSE VIA11},

    {"response without reason", RESP, HTTP_METHOD_GET, 0, "HTTP/1.1 204\r\nX: y\r\n\r\n",
     "HTTP/1.1 204 \r\nX: y\r\n" CLOSE VIA11},

    {"response via appended", RESP, HTTP_METHOD_GET, 0,
     "HTTP/1.1 200 OK\r\nVia: 1.1 origin-cache\r\nContent-Length: 0\r\n\r\n",
     "HTTP/1.1 200 OK\r\nVia: 1.1 origin-cache\r\nContent-Length: 0\r\n" CLOSE VIA11},

    {"response keep-alive: no connection field", RESP, HTTP_METHOD_GET, OPT_NO_CONNECTION,
     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" VIA11},

    {"response x-forwarded-* untouched", RESP, HTTP_METHOD_GET, 0,
     "HTTP/1.1 200 OK\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: h\r\n"
     "Content-Length: 0\r\n\r\n",
     "HTTP/1.1 200 OK\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: h\r\nContent-Length: "
     "0\r\n" CLOSE VIA11},

    {"101 with upgrade extra", RESP, HTTP_METHOD_GET, OPT_NO_CONNECTION | OPT_UPGRADE_EXTRA,
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Accept: x\r\n\r\n",
     "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n"
     "Connection: Upgrade\r\nUpgrade: websocket\r\n" VIA11},
};

static struct http_hdr_opts opts_for(unsigned flags)
{
	struct http_hdr_opts o = {
	    .via = "switchyard",
	    .client_ip = "10.0.0.1",
	    .proto = "http",
	    .connection = "close",
	};
	if (flags & OPT_CHUNKED)
		o.chunked = true;
	if (flags & OPT_NO_CONNECTION)
		o.connection = NULL;
	if (flags & OPT_UPGRADE_EXTRA) {
		o.extra = upgrade_extra;
		o.extra_len = strlen(upgrade_extra);
	}
	return o;
}

START_TEST(test_rewrite)
{
	const struct hdr_case *c = &cases[_i];
	struct http_msg msg;
	struct http_hdr_opts o = opts_for(c->opts);

	parse(c->kind, c->in, c->req_method, &msg);
	char *got = rewrite(&msg, &o);
	assert_bytes(c->name, got, c->out);
	/* the output is itself a valid head of the same kind */
	size_t head_len = 0;
	struct http_error err = {0, NULL};
	ck_assert_msg(http_head_scan(c->kind, got, strlen(got), &lim, &head_len, &err) ==
			  HTTP_SCAN_DONE,
		      "%s: output does not scan: %s", c->name, err.reason ? err.reason : "more");
	ck_assert_uint_eq(head_len, strlen(got));
	free(got);
	http_msg_fini(&msg);
}
END_TEST

/* ---- http_hdr_is_hop_by_hop ---- */

START_TEST(test_is_hop_by_hop)
{
	static const char raw[] = "GET / HTTP/1.1\r\n"
				  "Host: a\r\n"		     /* 0 */
				  "Connection: X-A, x-b\r\n" /* 1 */
				  "X-A: 1\r\n"		     /* 2 */
				  "X-AA: 1\r\n"		     /* 3 */
				  "X-B: 1\r\n"		     /* 4 */
				  "te: trailers\r\n"	     /* 5 */
				  "Keep-Alive: 1\r\n"	     /* 6 */
				  "Upgrade: x\r\n"	     /* 7 */
				  "Accept: x-a\r\n"	     /* 8 */
				  "Trailers: x\r\n"	     /* 9 (not Trailer) */
				  "Connection: close\r\n"    /* 10 */
				  "Close: 1\r\n"	     /* 11 */
				  "\r\n";
	static const bool want[] = {false, true, true,	false, true, true,
				    true,  true, false, false, true, true};
	struct http_msg msg;
	parse(REQ, raw, HTTP_METHOD_GET, &msg);
	ck_assert_uint_eq(msg.n_headers, N(want));
	for (size_t i = 0; i < N(want); i++)
		ck_assert_msg(http_hdr_is_hop_by_hop(&msg, &msg.headers[i]) == want[i],
			      "field %zu (%.*s)", i, (int)msg.headers[i].name_len,
			      msg.headers[i].name);
	http_msg_fini(&msg);
}
END_TEST

/* ---- fields a Connection option must not be able to strip ---- */

static bool has_line(const char *head, const char *line)
{
	return strstr(head, line) != NULL;
}

/*
 * The proxy frames the body by Content-Length and forwards exactly that many
 * bytes; if "Connection: Content-Length" strips the field, the next hop sees
 * a message without a body and the body bytes as a new message (request
 * smuggling / response desync). Rejecting such a message is also acceptable.
 */
static const struct {
	enum http_msg_kind kind;
	const char *raw;
	const char *must_keep;
} kept[] = {
    {REQ, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n",
     "\r\nContent-Length: 5\r\n"},
    {REQ,
     "POST / HTTP/1.1\r\nHost: a\r\nConnection: close, content-length\r\nContent-Length: 5\r\n\r\n",
     "\r\nContent-Length: 5\r\n"},
    {REQ, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n", "\r\nHost: a\r\n"},
    {RESP, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n",
     "\r\nContent-Length: 5\r\n"},
};

START_TEST(test_nominated_framing_fields_kept)
{
	struct http_error err = {0, NULL};
	size_t head_len = 0, len = strlen(kept[_i].raw);
	struct http_reader *r = http_reader_new(kept[_i].kind);
	struct http_msg msg;
	ck_assert_int_eq(http_head_scan(kept[_i].kind, kept[_i].raw, len, &lim, &head_len, &err),
			 HTTP_SCAN_DONE);
	http_msg_init(&msg, kept[_i].kind);
	int rc = http_reader_head(r, &msg, kept[_i].raw, head_len, HTTP_METHOD_GET, &lim, &err);
	http_reader_free(r);
	if (rc == 0) { /* rejecting the message outright is fine too */
		struct http_hdr_opts o = opts_for(0);
		char *got = rewrite(&msg, &o);
		char g[1024];
		ck_assert_msg(has_line(got, kept[_i].must_keep),
			      "framing/Host field stripped by a Connection option: %s",
			      visible(got, g, sizeof(g)));
		free(got);
	}
	http_msg_fini(&msg);
}
END_TEST

/*
 * An HTTP/1.0 request without Host is forwarded as HTTP/1.1, which requires
 * a Host field (RFC 9112 §3.2: empty when the target has no authority);
 * without one an HTTP/1.1 backend must answer 400.
 */
START_TEST(test_http10_without_host_gets_host)
{
	struct http_msg msg;
	struct http_hdr_opts o = opts_for(0);
	parse(REQ, "GET / HTTP/1.0\r\nAccept: x\r\n\r\n", HTTP_METHOD_GET, &msg);
	char *got = rewrite(&msg, &o);
	char g[1024];
	ck_assert_msg(strncmp(got, "GET / HTTP/1.1\r\n", 16) == 0, "%s",
		      visible(got, g, sizeof(g)));
	ck_assert_msg(strstr(got, "\r\nHost:") != NULL,
		      "HTTP/1.1 request forwarded without Host: %s", visible(got, g, sizeof(g)));
	free(got);
	http_msg_fini(&msg);
}
END_TEST

/* ---- hash keys: cookies and query parameters ---- */

struct pair_case {
	const char *head_or_target; /* a Cookie head, or a request-target */
	const char *name;
	const char *want; /* NULL = absent */
};

static const struct pair_case cookie_cases[] = {
    {"Cookie: io=abc; b=2", "io", "abc"},
    {"Cookie: a=1;io=x y ;b", "io", "x y"},
    {"Cookie: a=1; b", "b", ""},
    {"Cookie: ioo=1; xio=2", "io", NULL},
    {"Cookie: a=1\r\nCookie: io=second", "io", "second"},
    {"X-Other: io=1", "io", NULL},
    {"Cookie: io=", "io", ""},
};

START_TEST(test_cookie)
{
	const struct pair_case *c = &cookie_cases[_i];
	char raw[256];
	struct http_msg msg;
	const char *v = NULL;
	size_t len = 0;
	snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n\r\n", c->head_or_target);
	parse(REQ, raw, HTTP_METHOD_GET, &msg);
	bool found = http_hdr_cookie(&msg, c->name, &v, &len);
	ck_assert_msg(found == (c->want != NULL), "%s: found %d", c->head_or_target, found);
	if (c->want)
		ck_assert_msg(len == strlen(c->want) && memcmp(v, c->want, len) == 0, "%s: %.*s",
			      c->head_or_target, (int)len, v);
	http_msg_fini(&msg);
}
END_TEST

static const struct pair_case query_cases[] = {
    {"/socket.io/?EIO=4&transport=polling&sid=S1", "sid", "S1"},
    {"/p?a=1&b=2", "a", "1"},
    {"/p?a=1&b", "b", ""},
    {"/p?a=1#sid=2", "sid", NULL},
    {"/p?ab=1&a=2", "a", "2"},
    {"/p", "a", NULL},
    {"/p?sid=a%20b", "sid", "a%20b"},
};

START_TEST(test_query_param)
{
	const struct pair_case *c = &query_cases[_i];
	const char *v = NULL;
	size_t len = 0;
	bool found =
	    http_hdr_query_param(c->head_or_target, strlen(c->head_or_target), c->name, &v, &len);
	ck_assert_msg(found == (c->want != NULL), "%s: found %d", c->head_or_target, found);
	if (c->want)
		ck_assert_msg(len == strlen(c->want) && memcmp(v, c->want, len) == 0, "%s: %.*s",
			      c->head_or_target, (int)len, v);
}
END_TEST

static Suite *http_hdr_suite(void)
{
	Suite *s = suite_create("http_hdr");
	TCase *tc = tcase_create("rewrite");
	tcase_add_loop_test(tc, test_rewrite, 0, N(cases));
	tcase_add_test(tc, test_is_hop_by_hop);
	suite_add_tcase(s, tc);

	tc = tcase_create("regressions");
	tcase_add_loop_test(tc, test_nominated_framing_fields_kept, 0, N(kept));
	tcase_add_test(tc, test_http10_without_host_gets_host);
	tcase_add_loop_test(tc, test_cookie, 0, N(cookie_cases));
	tcase_add_loop_test(tc, test_query_param, 0, N(query_cases));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(http_hdr_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
