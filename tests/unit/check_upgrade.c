/*
 * check_upgrade: unit tests for upgrade.c. Heads are parsed by the real
 * http.c (http_head_scan + http_reader_head) so the tests see exactly what a
 * session would hand to upgrade_classify() and upgrade_check_101().
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upgrade.h"

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define WS_FIELDS "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n"
#define WS_UPGRADE "Connection: Upgrade\r\nUpgrade: websocket\r\n"

/* ---- routes ---- */

static char *list_ws[] = {"websocket"};
static char *list_multi[] = {"websocket", "tls/1.0"};
static char *list_any[] = {"*"};

static const struct config_route route_ws = {
    .name = "ws", .upgrade = CONFIG_UPGRADE_FORWARD, .protocols = list_ws, .n_protocols = 1};
static const struct config_route route_multi = {
    .name = "multi", .upgrade = CONFIG_UPGRADE_FORWARD, .protocols = list_multi, .n_protocols = 2};
static const struct config_route route_any = {.name = "any",
					      .upgrade = CONFIG_UPGRADE_FORWARD,
					      .protocols = list_any,
					      .n_protocols = 1,
					      .any_protocol = true};
static const struct config_route route_strip = {
    .name = "strip", .upgrade = CONFIG_UPGRADE_STRIP, .protocols = list_ws, .n_protocols = 1};
static const struct config_route route_deny = {
    .name = "deny", .upgrade = CONFIG_UPGRADE_DENY, .protocols = list_ws, .n_protocols = 1};

/* ---- helpers ---- */

static void parse_msg(enum http_msg_kind kind, const char *text, struct http_msg *msg)
{
	static const struct http_limits lim = {16384, 100, 8192};
	struct http_error err = {0, NULL};
	size_t len = strlen(text), head_len = 0;
	struct http_reader *r = http_reader_new(kind);

	ck_assert_ptr_nonnull(r);
	ck_assert_msg(http_head_scan(kind, text, len, &lim, &head_len, &err) == HTTP_SCAN_DONE,
		      "scan failed (%s): %s", err.reason ? err.reason : "incomplete", text);
	ck_assert_uint_eq(head_len, len);
	http_msg_init(msg, kind);
	ck_assert_msg(http_reader_head(r, msg, text, head_len, HTTP_METHOD_GET, &lim, &err) == 0,
		      "parse failed (%s): %s", err.reason, text);
	http_reader_free(r);
}

/* A request head from a request line (NULL: "GET /chat HTTP/1.1") and fields. */
static void parse_req(const char *line, const char *fields, struct http_msg *msg)
{
	char buf[4096];
	int n = snprintf(buf, sizeof(buf), "%s\r\nHost: a\r\n%s\r\n",
			 line ? line : "GET /chat HTTP/1.1", fields);

	ck_assert(n > 0 && (size_t)n < sizeof(buf));
	parse_msg(HTTP_MSG_REQUEST, buf, msg);
}

static void parse_resp(const char *fields, struct http_msg *msg)
{
	char buf[4096];
	int n = snprintf(buf, sizeof(buf), "HTTP/1.1 101 Switching Protocols\r\n%s\r\n", fields);

	ck_assert(n > 0 && (size_t)n < sizeof(buf));
	parse_msg(HTTP_MSG_RESPONSE, buf, msg);
}

/* The allowed tokens joined with ", " as they would be forwarded. */
static const char *join_tokens(const struct upgrade_req *u, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < u->n_tokens; i++) {
		int n = snprintf(buf + len, cap - len, "%s%.*s", i ? ", " : "",
				 (int)u->tokens[i].len, u->tokens[i].s);
		ck_assert(n > 0 && (size_t)n < cap - len);
		len += (size_t)n;
	}
	return buf;
}

static const char *decision_str(enum upgrade_decision d)
{
	switch (d) {
	case UPGRADE_NONE:
		return "NONE";
	case UPGRADE_FORWARD:
		return "FORWARD";
	case UPGRADE_REJECT:
		return "REJECT";
	}
	return "?";
}

/* ---- classification table ---- */

struct classify_case {
	const char *name;
	const char *line; /* NULL: GET /chat HTTP/1.1 */
	const char *fields;
	const struct config_route *route;
	enum upgrade_decision decision;
	int status;	    /* REJECT only */
	const char *reason; /* REJECT only */
	const char *tokens; /* allowed tokens as joined by join_tokens() */
	bool websocket;
};

#define NINE_TOKENS "a, b, c, d, e, f, g, h, i"

static const struct classify_case classify_cases[] = {
    {"basic", NULL, WS_UPGRADE WS_FIELDS, &route_ws, UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"lower case names and values", NULL, "connection: upgrade\r\nupgrade: websocket\r\n" WS_FIELDS,
     &route_ws, UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"upper case, token kept as spelled", NULL,
     "CONNECTION: UPGRADE\r\nUPGRADE: WebSocket\r\n" WS_FIELDS, &route_ws, UPGRADE_FORWARD, 0, NULL,
     "WebSocket", true},
    {"firefox keep-alive, Upgrade", NULL,
     "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" WS_FIELDS, &route_ws,
     UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"two Connection lines", NULL,
     "Connection: keep-alive\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" WS_FIELDS, &route_ws,
     UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"Upgrade before Connection", NULL, "Upgrade: websocket\r\nConnection: Upgrade\r\n" WS_FIELDS,
     &route_ws, UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"empty list elements", NULL,
     "Connection: , ,Upgrade, \r\nUpgrade: , websocket ,,\r\n" WS_FIELDS, &route_ws,
     UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"Connection without upgrade token", NULL,
     "Connection: keep-alive\r\nUpgrade: websocket\r\n" WS_FIELDS, &route_ws, UPGRADE_NONE, 0, NULL,
     "", false},
    {"no Connection field", NULL, "Upgrade: websocket\r\n" WS_FIELDS, &route_ws, UPGRADE_NONE, 0,
     NULL, "", false},
    {"upgrade only as a substring", NULL,
     "Connection: upgraded, x-upgrade\r\nUpgrade: websocket\r\n" WS_FIELDS, &route_ws, UPGRADE_NONE,
     0, NULL, "", false},
    {"Connection: Upgrade without Upgrade", NULL, "Connection: Upgrade\r\n" WS_FIELDS, &route_ws,
     UPGRADE_NONE, 0, NULL, "", false},
    {"HTTP/1.0", "GET /chat HTTP/1.0", WS_UPGRADE WS_FIELDS, &route_ws, UPGRADE_NONE, 0, NULL, "",
     false},
    {"h2c alone", NULL,
     "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
     &route_any, UPGRADE_NONE, 0, NULL, "", false},
    {"H2C with a version", NULL, "Connection: Upgrade\r\nUpgrade: H2C/1.0\r\n", &route_any,
     UPGRADE_NONE, 0, NULL, "", false},
    {"h2c with websocket", NULL,
     "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, websocket\r\n"
     "HTTP2-Settings: AAMAAABkAAQAAP__\r\n" WS_FIELDS,
     &route_ws, UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"h2c on a deny route is plain", NULL, "Connection: Upgrade\r\nUpgrade: h2c\r\n", &route_deny,
     UPGRADE_NONE, 0, NULL, "", false},
    {"tokens with versions, any protocol", NULL, "Connection: Upgrade\r\nUpgrade: foo/1.1, Bar\r\n",
     &route_any, UPGRADE_FORWARD, 0, NULL, "foo/1.1, Bar", false},
    {"websocket/13 is not websocket", NULL, "Connection: Upgrade\r\nUpgrade: websocket/13\r\n",
     &route_ws, UPGRADE_NONE, 0, NULL, "", false},
    {"allow-list filtering", NULL,
     "Connection: Upgrade\r\nUpgrade: foo, TLS/1.0, tls/1.1, websocket\r\n" WS_FIELDS, &route_multi,
     UPGRADE_FORWARD, 0, NULL, "TLS/1.0, websocket", true},
    {"allow-list drops everything", NULL, "Connection: Upgrade\r\nUpgrade: foo, tls\r\n",
     &route_multi, UPGRADE_NONE, 0, NULL, "", false},
    {"several Upgrade lines keep order", NULL,
     "Connection: Upgrade\r\nUpgrade: foo\r\nUpgrade: websocket, bar/2\r\n" WS_FIELDS, &route_any,
     UPGRADE_FORWARD, 0, NULL, "foo, websocket, bar/2", true},
    {"malformed tokens dropped", NULL,
     "Connection: Upgrade\r\nUpgrade: foo bar, /1, baz/, a/b/c, \"q\", ok\r\n", &route_any,
     UPGRADE_FORWARD, 0, NULL, "ok", false},
    {"non-websocket needs no Sec-WebSocket-*", "POST /x HTTP/1.1",
     "Connection: Upgrade\r\nUpgrade: foo\r\n", &route_any, UPGRADE_FORWARD, 0, NULL, "foo", false},
    {"eight tokens", NULL, "Connection: Upgrade\r\nUpgrade: a, b, c, d, e, f, g, h\r\n", &route_any,
     UPGRADE_FORWARD, 0, NULL, "a, b, c, d, e, f, g, h", false},
    {"nine tokens", NULL, "Connection: Upgrade\r\nUpgrade: " NINE_TOKENS "\r\n", &route_any,
     UPGRADE_REJECT, 400, "too many Upgrade tokens", NULL, false},
    {"nine tokens over two lines", NULL,
     "Connection: Upgrade\r\nUpgrade: a, b, c, d\r\nUpgrade: e, f, g, h, i\r\n", &route_any,
     UPGRADE_REJECT, 400, "too many Upgrade tokens", NULL, false},
    {"dropped tokens do not count", NULL,
     "Connection: Upgrade\r\nUpgrade: h2c, " NINE_TOKENS ", websocket\r\n" WS_FIELDS, &route_ws,
     UPGRADE_FORWARD, 0, NULL, "websocket", true},
    {"strip route", NULL, WS_UPGRADE WS_FIELDS, &route_strip, UPGRADE_NONE, 0, NULL, "", false},
    {"deny route", NULL, WS_UPGRADE WS_FIELDS, &route_deny, UPGRADE_REJECT, 403,
     "upgrade denied by route", NULL, false},
    {"deny route, token not allowed", NULL, "Connection: Upgrade\r\nUpgrade: foo\r\n", &route_deny,
     UPGRADE_NONE, 0, NULL, "", false},
    {"deny route, HTTP/1.0", "GET / HTTP/1.0", WS_UPGRADE WS_FIELDS, &route_deny, UPGRADE_NONE, 0,
     NULL, "", false},
    {"body with Content-Length", "POST /chat HTTP/1.1",
     WS_UPGRADE WS_FIELDS "Content-Length: 5\r\n", &route_ws, UPGRADE_REJECT, 400,
     "upgrade request with a body", NULL, false},
    {"chunked body", NULL, WS_UPGRADE WS_FIELDS "Transfer-Encoding: chunked\r\n", &route_ws,
     UPGRADE_REJECT, 400, "upgrade request with a body", NULL, false},
    {"body on a strip route is a plain request", "POST /chat HTTP/1.1",
     WS_UPGRADE "Content-Length: 5\r\n", &route_strip, UPGRADE_NONE, 0, NULL, "", false},
    {"Content-Length: 0 is no body", "POST /x HTTP/1.1",
     "Connection: Upgrade\r\nUpgrade: foo\r\nContent-Length: 0\r\n", &route_any, UPGRADE_FORWARD, 0,
     NULL, "foo", false},
};

static void check_classify_case(const struct classify_case *c)
{
	struct http_msg req;
	struct upgrade_req u;
	char joined[512];

	parse_req(c->line, c->fields, &req);
	memset(&u, 0xa5, sizeof(u)); /* classify must not rely on a zeroed out */
	upgrade_classify(&req, c->route, &u);

	ck_assert_msg(u.decision == c->decision, "%s: decision %s, want %s", c->name,
		      decision_str(u.decision), decision_str(c->decision));
	if (c->decision == UPGRADE_REJECT) {
		ck_assert_msg(u.status == c->status, "%s: status %d", c->name, u.status);
		ck_assert_msg(u.reason && strcmp(u.reason, c->reason) == 0, "%s: reason %s",
			      c->name, u.reason ? u.reason : "(null)");
	}
	if (c->tokens != NULL)
		ck_assert_msg(strcmp(join_tokens(&u, joined, sizeof(joined)), c->tokens) == 0,
			      "%s: tokens \"%s\", want \"%s\"", c->name, joined, c->tokens);
	ck_assert_msg(u.websocket == c->websocket, "%s: websocket %d", c->name, u.websocket);
	if (u.websocket)
		ck_assert_str_eq(u.ws_accept, RFC_ACCEPT);
	http_msg_fini(&req);
}

START_TEST(test_classify)
{
	check_classify_case(&classify_cases[_i]);
}
END_TEST

/* ---- WebSocket key / version table (route_ws, Connection/Upgrade valid) ---- */

struct ws_case {
	const char *name;
	const char *line;
	const char *fields; /* appended to WS_UPGRADE */
	enum upgrade_decision decision;
	int status;
	const char *reason;
};

#define VER13 "Sec-WebSocket-Version: 13\r\n"
#define KEY(k) "Sec-WebSocket-Key: " k "\r\n"

static const struct ws_case ws_cases[] = {
    {"valid", NULL, KEY(RFC_KEY) VER13, UPGRADE_FORWARD, 0, NULL},
    {"field names in odd case", NULL,
     "sec-websocket-key: " RFC_KEY "\r\nSEC-WEBSOCKET-VERSION: 13\r\n", UPGRADE_FORWARD, 0, NULL},
    {"version with OWS", NULL, KEY(RFC_KEY) "Sec-WebSocket-Version:   13  \r\n", UPGRADE_FORWARD, 0,
     NULL},
    {"POST", "POST /chat HTTP/1.1", KEY(RFC_KEY) VER13, UPGRADE_REJECT, 400,
     "WebSocket handshake requires GET"},
    {"HEAD", "HEAD /chat HTTP/1.1", KEY(RFC_KEY) VER13, UPGRADE_REJECT, 400,
     "WebSocket handshake requires GET"},
    {"15-byte key", NULL, KEY("AAAAAAAAAAAAAAAAAAAA") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"17-byte key", NULL, KEY("AAAAAAAAAAAAAAAAAAAAAAA=") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"18-byte key", NULL, KEY("AAAAAAAAAAAAAAAAAAAAAAAA") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"url-safe alphabet", NULL, KEY("dGhlIHNhbXBsZSBub25j-_==") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"bad char", NULL, KEY("dGhlIHNhbXBsZSBub25jZ.==") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"missing padding", NULL, KEY("dGhlIHNhbXBsZSBub25jZQ") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"padding in the middle", NULL, KEY("dGhlIHNhbXBsZSBub25j=Q==") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"space inside", NULL, KEY("dGhlIHNhbXBs ZSBub25jZQ==") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"empty key", NULL, "Sec-WebSocket-Key:\r\n" VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"missing key", NULL, VER13, UPGRADE_REJECT, 400, "bad Sec-WebSocket-Key"},
    {"two keys", NULL, KEY(RFC_KEY) KEY("x3JJHMbDL1EzLkh9GBhXDw==") VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"same key twice", NULL, KEY(RFC_KEY) KEY(RFC_KEY) VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"key as a list", NULL, KEY(RFC_KEY ", " RFC_KEY) VER13, UPGRADE_REJECT, 400,
     "bad Sec-WebSocket-Key"},
    {"version 8", NULL, KEY(RFC_KEY) "Sec-WebSocket-Version: 8\r\n", UPGRADE_REJECT, 426,
     "unsupported Sec-WebSocket-Version"},
    {"version 13, 8", NULL, KEY(RFC_KEY) "Sec-WebSocket-Version: 13, 8\r\n", UPGRADE_REJECT, 426,
     "unsupported Sec-WebSocket-Version"},
    {"version 013", NULL, KEY(RFC_KEY) "Sec-WebSocket-Version: 013\r\n", UPGRADE_REJECT, 426,
     "unsupported Sec-WebSocket-Version"},
    {"empty version", NULL, KEY(RFC_KEY) "Sec-WebSocket-Version:\r\n", UPGRADE_REJECT, 426,
     "unsupported Sec-WebSocket-Version"},
    {"missing version", NULL, KEY(RFC_KEY), UPGRADE_REJECT, 400, "missing Sec-WebSocket-Version"},
    {"two versions", NULL, KEY(RFC_KEY) VER13 VER13, UPGRADE_REJECT, 400,
     "repeated Sec-WebSocket-Version"},
    {"two versions, one of them empty", NULL, KEY(RFC_KEY) VER13 "Sec-WebSocket-Version:\r\n",
     UPGRADE_REJECT, 400, "repeated Sec-WebSocket-Version"},
    {"bad key wins over bad version", NULL, KEY("AAAA") "Sec-WebSocket-Version: 8\r\n",
     UPGRADE_REJECT, 400, "bad Sec-WebSocket-Key"},
};

START_TEST(test_ws_request)
{
	const struct ws_case *c = &ws_cases[_i];
	struct http_msg req;
	struct upgrade_req u;
	char fields[1024];
	int n = snprintf(fields, sizeof(fields), "%s%s", WS_UPGRADE, c->fields);

	ck_assert(n > 0 && (size_t)n < sizeof(fields));
	parse_req(c->line, fields, &req);
	upgrade_classify(&req, &route_ws, &u);
	ck_assert_msg(u.decision == c->decision, "%s: decision %s (%s)", c->name,
		      decision_str(u.decision), u.reason ? u.reason : "-");
	if (c->decision == UPGRADE_REJECT) {
		ck_assert_msg(u.status == c->status, "%s: status %d", c->name, u.status);
		ck_assert_str_eq(u.reason, c->reason);
		ck_assert(!u.websocket);
	} else {
		ck_assert(u.websocket);
		ck_assert_str_eq(u.ws_accept, RFC_ACCEPT);
	}
	http_msg_fini(&req);
}
END_TEST

/* ---- key syntax and Accept ---- */

static const struct {
	const char *key;
	bool valid;
} key_cases[] = {
    {RFC_KEY, true},
    {"x3JJHMbDL1EzLkh9GBhXDw==", true},
    {"AAAAAAAAAAAAAAAAAAAAAA==", true},
    {"++++++++++++++++++++//==", true},
    {"", false},
    {"AAAAAAAAAAAAAAAAAAAA", false},	 /* 15 bytes */
    {"AAAAAAAAAAAAAAAAAAAAAAA=", false}, /* 17 bytes */
    {"AAAAAAAAAAAAAAAAAAAAAAAA", false}, /* 18 bytes */
    {"AAAAAAAAAAAAAAAAAAAAAA=", false},
    {"AAAAAAAAAAAAAAAAAAAAAA===", false},
    {"AAAAAAAAAAAAAAAAAAAAAA= ", false},
    {"AAAAAAAAAAAAAAAAAAAA-_==", false},
    {"AAAAAAAAAAAAAAAAAAAA\x80\x80==", false},
};

START_TEST(test_key_valid)
{
	const char *k = key_cases[_i].key;

	ck_assert_msg(upgrade_ws_key_valid(k, strlen(k)) == key_cases[_i].valid, "key \"%s\"", k);
}
END_TEST

START_TEST(test_key_valid_length_carried)
{
	/* the length, not a NUL, ends the key: a valid prefix of a longer buffer */
	static const char buf[] = RFC_KEY "garbage";

	ck_assert(upgrade_ws_key_valid(buf, 24));
	ck_assert(!upgrade_ws_key_valid(buf, 25));
	ck_assert(!upgrade_ws_key_valid(buf, 23));
}
END_TEST

START_TEST(test_accept)
{
	static const struct {
		const char *key, *accept;
	} v[] = {
	    {RFC_KEY, RFC_ACCEPT}, /* RFC 6455 §1.3 */
	    {"x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="},
	};
	char out[UPGRADE_WS_ACCEPT_LEN + 1];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		memset(out, 'x', sizeof(out));
		ck_assert_int_eq(upgrade_ws_accept(v[i].key, strlen(v[i].key), out), 0);
		ck_assert_str_eq(out, v[i].accept);
	}
	/* key_len bounds the input; trailing bytes are not hashed */
	ck_assert_int_eq(upgrade_ws_accept(RFC_KEY "zz", 24, out), 0);
	ck_assert_str_eq(out, RFC_ACCEPT);
}
END_TEST

/* ---- request field formatting ---- */

static const struct {
	const char *fields;
	const struct config_route *route;
	const char *want;
} format_cases[] = {
    {WS_UPGRADE WS_FIELDS, &route_ws, "Connection: Upgrade\r\nUpgrade: websocket\r\n"},
    {"Connection: upgrade\r\nUpgrade: WebSocket,Foo/1\r\n" WS_FIELDS, &route_any,
     "Connection: Upgrade\r\nUpgrade: WebSocket, Foo/1\r\n"},
    {"Connection: upgrade\r\nUpgrade: h2c, b\r\nUpgrade:  a/2 ,\r\n", &route_any,
     "Connection: Upgrade\r\nUpgrade: b, a/2\r\n"},
    {"Connection: Upgrade\r\nUpgrade: foo, TLS/1.0, websocket\r\n" WS_FIELDS, &route_multi,
     "Connection: Upgrade\r\nUpgrade: TLS/1.0, websocket\r\n"},
};

START_TEST(test_format)
{
	struct http_msg req;
	struct upgrade_req u;
	char buf[256];
	const char *want = format_cases[_i].want;
	size_t want_len = strlen(want);

	parse_req(NULL, format_cases[_i].fields, &req);
	upgrade_classify(&req, format_cases[_i].route, &u);
	ck_assert_int_eq(u.decision, UPGRADE_FORWARD);
	ck_assert_uint_eq(upgrade_format_request_fields(&u, buf, sizeof(buf)), want_len);
	ck_assert_str_eq(buf, want);
	/* exact fit needs room for the NUL */
	ck_assert_uint_eq(upgrade_format_request_fields(&u, buf, want_len + 1), want_len);
	ck_assert_str_eq(buf, want);
	for (size_t cap = 0; cap <= want_len; cap++)
		ck_assert_uint_eq(upgrade_format_request_fields(&u, buf, cap), 0);
	http_msg_fini(&req);
}
END_TEST

START_TEST(test_format_no_tokens)
{
	struct http_msg req;
	struct upgrade_req u;
	char buf[128];

	parse_req(NULL, WS_UPGRADE WS_FIELDS, &req);
	upgrade_classify(&req, &route_strip, &u);
	ck_assert_int_eq(u.decision, UPGRADE_NONE);
	ck_assert_uint_eq(upgrade_format_request_fields(&u, buf, sizeof(buf)), 0);
	http_msg_fini(&req);
}
END_TEST

START_TEST(test_format_max_tokens)
{
	struct http_msg req;
	struct upgrade_req u;
	char buf[256];
	static const char want[] =
	    "Connection: Upgrade\r\nUpgrade: a/1, b/2, c/3, d/4, e/5, f/6, g/7, h/8\r\n";

	parse_req(NULL, "Connection: Upgrade\r\nUpgrade: a/1,b/2,c/3,d/4,e/5,f/6,g/7,h/8\r\n",
		  &req);
	upgrade_classify(&req, &route_any, &u);
	ck_assert_uint_eq(u.n_tokens, UPGRADE_MAX_TOKENS);
	ck_assert_uint_eq(upgrade_format_request_fields(&u, buf, sizeof(buf)), sizeof(want) - 1);
	ck_assert_str_eq(buf, want);
	http_msg_fini(&req);
}
END_TEST

/* ---- 101 validation table ---- */

#define REQ_WS WS_UPGRADE WS_FIELDS
#define REQ_WS_PROTO                                                                               \
	REQ_WS "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: v2\r\n"
#define REQ_ANY "Connection: Upgrade\r\nUpgrade: foo/1, websocket\r\n" WS_FIELDS
#define ACCEPT "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
#define RESP_WS "Connection: Upgrade\r\nUpgrade: websocket\r\n" ACCEPT

struct resp_case {
	const char *name;
	const char *req; /* fields of a GET /chat HTTP/1.1 */
	const struct config_route *route;
	const char *resp;   /* fields of a 101 */
	const char *reason; /* NULL: acceptable */
};

static const char R_UNREQ[] = "unrequested 101";
static const char R_NOUPG[] = "101 without Upgrade";
static const char R_PROTO[] = "101 names a protocol the client did not offer";
static const char R_ACCEPT[] = "bad Sec-WebSocket-Accept";
static const char R_SUB[] = "101 selects a subprotocol the client did not offer";
static const char R_BODY[] = "101 with a body";

static const struct resp_case resp_cases[] = {
    {"valid", REQ_WS, &route_ws, RESP_WS, NULL},
    {"valid, token in other case", REQ_WS, &route_ws,
     "Connection: upgrade\r\nUpgrade: WebSocket\r\n" ACCEPT, NULL},
    {"valid subprotocol", REQ_WS_PROTO, &route_ws, RESP_WS "Sec-WebSocket-Protocol: chat\r\n",
     NULL},
    {"valid subprotocol, second offer", REQ_WS_PROTO, &route_ws,
     RESP_WS "Sec-WebSocket-Protocol: superchat\r\n", NULL},
    {"valid subprotocol, second field", REQ_WS_PROTO, &route_ws,
     RESP_WS "Sec-WebSocket-Protocol: v2\r\n", NULL},
    {"valid non-websocket switch", REQ_ANY, &route_any, "Connection: Upgrade\r\nUpgrade: FOO/1\r\n",
     NULL},
    {"unrequested: plain request", "Connection: keep-alive\r\n", &route_ws, RESP_WS, R_UNREQ},
    {"unrequested: stripped", REQ_WS, &route_strip, RESP_WS, R_UNREQ},
    {"unrequested: rejected", REQ_WS, &route_deny, RESP_WS, R_UNREQ},
    {"no Upgrade", REQ_WS, &route_ws, "Connection: Upgrade\r\n" ACCEPT, R_NOUPG},
    {"empty Upgrade", REQ_WS, &route_ws, "Connection: Upgrade\r\nUpgrade: , \r\n" ACCEPT, R_NOUPG},
    {"wrong token", REQ_WS, &route_ws, "Connection: Upgrade\r\nUpgrade: foo\r\n", R_PROTO},
    {"websocket plus h2c", REQ_WS, &route_ws,
     "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n" ACCEPT, R_PROTO},
    {"dropped token chosen", "Connection: Upgrade\r\nUpgrade: foo, websocket\r\n" WS_FIELDS,
     &route_ws, "Connection: Upgrade\r\nUpgrade: foo\r\n", R_PROTO},
    {"version differs", REQ_ANY, &route_any, "Connection: Upgrade\r\nUpgrade: foo/2\r\n", R_PROTO},
    {"version missing", REQ_ANY, &route_any, "Connection: Upgrade\r\nUpgrade: foo\r\n", R_PROTO},
    {"bad Accept", REQ_WS, &route_ws,
     "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n",
     R_ACCEPT},
    {"Accept differs in case", REQ_WS, &route_ws,
     "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
     "S3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
     R_ACCEPT},
    {"Accept of another key", REQ_WS, &route_ws,
     "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
     "HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n",
     R_ACCEPT},
    {"missing Accept", REQ_WS, &route_ws, "Connection: Upgrade\r\nUpgrade: websocket\r\n",
     R_ACCEPT},
    {"duplicate Accept", REQ_WS, &route_ws, RESP_WS ACCEPT, R_ACCEPT},
    {"websocket chosen among several", REQ_ANY, &route_any,
     "Connection: Upgrade\r\nUpgrade: websocket\r\n", R_ACCEPT},
    {"wrong subprotocol", REQ_WS_PROTO, &route_ws, RESP_WS "Sec-WebSocket-Protocol: mqtt\r\n",
     R_SUB},
    {"subprotocol differs in case", REQ_WS_PROTO, &route_ws,
     RESP_WS "Sec-WebSocket-Protocol: Chat\r\n", R_SUB},
    {"subprotocol list", REQ_WS_PROTO, &route_ws,
     RESP_WS "Sec-WebSocket-Protocol: chat, superchat\r\n", R_SUB},
    {"two subprotocol fields", REQ_WS_PROTO, &route_ws,
     RESP_WS "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n", R_SUB},
    {"empty subprotocol", REQ_WS_PROTO, &route_ws, RESP_WS "Sec-WebSocket-Protocol:\r\n", R_SUB},
    {"subprotocol not offered", REQ_WS, &route_ws, RESP_WS "Sec-WebSocket-Protocol: chat\r\n",
     R_SUB},
    {"with Content-Length", REQ_WS, &route_ws, RESP_WS "Content-Length: 0\r\n", R_BODY},
    {"with Transfer-Encoding", REQ_WS, &route_ws, RESP_WS "Transfer-Encoding: chunked\r\n", R_BODY},
    {"non-websocket with a body", REQ_ANY, &route_any,
     "Connection: Upgrade\r\nUpgrade: foo/1\r\nContent-Length: 3\r\n", R_BODY},
};

START_TEST(test_check_101)
{
	const struct resp_case *c = &resp_cases[_i];
	struct http_msg req, resp;
	struct upgrade_req u;
	const char *why;

	parse_req(NULL, c->req, &req);
	upgrade_classify(&req, c->route, &u);
	if (c->reason != R_UNREQ)
		ck_assert_msg(u.decision == UPGRADE_FORWARD, "%s: request not forwarded: %s",
			      c->name, u.reason ? u.reason : "-");
	parse_resp(c->resp, &resp);
	ck_assert_int_eq(resp.status, 101);
	why = upgrade_check_101(&u, &req, &resp);
	if (c->reason == NULL)
		ck_assert_msg(why == NULL, "%s: rejected: %s", c->name, why);
	else
		ck_assert_msg(why != NULL && strcmp(why, c->reason) == 0, "%s: got \"%s\"", c->name,
			      why ? why : "(accepted)");
	http_msg_fini(&resp);
	http_msg_fini(&req);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *upgrade_suite(void)
{
	Suite *s = suite_create("upgrade");
	TCase *tc;

	tc = tcase_create("classify");
	tcase_add_loop_test(tc, test_classify, 0, N(classify_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("websocket_request");
	tcase_add_loop_test(tc, test_ws_request, 0, N(ws_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("key_accept");
	tcase_add_loop_test(tc, test_key_valid, 0, N(key_cases));
	tcase_add_test(tc, test_key_valid_length_carried);
	tcase_add_test(tc, test_accept);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_loop_test(tc, test_format, 0, N(format_cases));
	tcase_add_test(tc, test_format_no_tokens);
	tcase_add_test(tc, test_format_max_tokens);
	suite_add_tcase(s, tc);

	tc = tcase_create("check_101");
	tcase_add_loop_test(tc, test_check_101, 0, N(resp_cases));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(upgrade_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
