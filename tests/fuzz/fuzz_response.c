/*
 * libFuzzer driver for what a backend sends back: response heads (interim 1xx
 * heads, then a final head or a 101), the head the proxy forwards to the
 * client, the response body, and the validation of a 101 against the request
 * it answers. Driven the way src/session.c drives it (read_response_head,
 * relay_interim, relay_final_head, relay_switch, relay_body): any input must
 * end in a clean accept or a clean 502, and what is forwarded must hold
 * together. Build and run: make fuzz.
 *
 * Input: one control byte, then the backend's bytes.
 *   bits 0-2  the client request the response answers (REQUESTS below): plain
 *             GET/HEAD/POST over HTTP/1.1 and HTTP/1.0, a WebSocket upgrade
 *             (valid, with a key and two subprotocols), an upgrade to another
 *             protocol, and one offering both; upgrades go through
 *             upgrade_classify() for a forwarding route
 *   bits 3-5  body bytes are fed in pieces of PIECES[n] bytes
 *   bit 6     the backend closes after its last byte (EOF is fed to the decoder)
 *   bit 7     unused (mutations of it give the same run)
 * Seeds: tests/fuzz/corpus/fuzz_response/ (tests/fuzz/make_corpus.py).
 *
 * Checked beyond "no crash":
 * - the scanner answers a prefix of a complete head with "more"; an error is a
 *   502 with a reason; a head never exceeds header_bytes;
 * - the parsed head has a status in 100..599 and framing that follows the
 *   rules (HEAD, 1xx, 204, 304: no body; one Content-Length; chunked only in
 *   HTTP/1.1, never with Content-Length);
 * - every head the proxy writes (interim, final, 101) is clean: CRLF line ends
 *   only (no bare CR, LF or NUL), one status line, fields "name: value", no
 *   hop-by-hop field of the backend's (Keep-Alive, TE, Trailer,
 *   Proxy-Connection, HTTP2-Settings, Transfer-Encoding, Upgrade, Connection
 *   or a field its Connection nominates) except the proxy's own Connection,
 *   Transfer-Encoding: chunked and, in a 101, Connection: Upgrade + Upgrade;
 *   the backend's other fields in order and byte for byte; one Via last;
 * - a 101 is accepted only for a forwarded upgrade, and then: status 101, an
 *   Upgrade naming only offered protocols, for WebSocket exactly one
 *   Sec-WebSocket-Accept equal to the value for the request's key and at most
 *   one offered subprotocol, no Content-Length or Transfer-Encoding;
 * - the body decoder consumes no more than it is given, hands over only bytes
 *   of the piece it was given, stops early only at the end of the message, and
 *   delivers exactly Content-Length bytes;
 * - what the client receives (forwarded head + body, re-chunked when the
 *   proxy chunks) parses as one response to its request with the same status
 *   and framing, whose body is exactly the payload, ending exactly where the
 *   proxy's bytes end (no desynchronised keep-alive connection).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "config.h"
#include "http.h"
#include "http_hdr.h"
#include "upgrade.h"
#include "fuzz_check.h"

/*
 * The product defaults, as in src/config.c LIMIT_TABLE (header_bytes,
 * header_fields, uri_bytes); keep them in step with config.c.
 */
static const struct http_limits LIM = {
    .header_bytes = 16384,
    .header_fields = 100,
    .uri_bytes = 8192,
};

#define VIA "switchyard"
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* RFC 6455 §1.3 */
#define MAX_HEADS 16				 /* 1xx heads before the final one */

static const char *const REQUESTS[8] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: foo/2\r\n\r\n",
    "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, Foo/2, h2c\r\n"
    "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "HEAD / HTTP/1.0\r\n\r\n",
};

static const size_t PIECES[8] = {1, 2, 3, 7, 16, 100, 1024, 65536};

/* A forwarding route that allows WebSocket and foo/2 (as config.c lower-cases them). */
static char *route_protocols[] = {"websocket", "foo/2"};
static const struct config_route ROUTE = {
    .name = "fuzz",
    .upgrade = CONFIG_UPGRADE_FORWARD,
    .protocols = route_protocols,
    .n_protocols = 2,
};

struct client_req {
	struct http_msg msg;
	struct upgrade_req up;
};

static struct client_req reqs[8];

static void setup_requests(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	for (int i = 0; i < 8; i++) {
		struct client_req *c = &reqs[i];
		const char *text = REQUESTS[i];
		size_t len = strlen(text), head_len = 0;
		struct http_error err;
		struct http_reader *r = http_reader_new(HTTP_MSG_REQUEST);
		CHECK(r != NULL);
		http_msg_init(&c->msg, HTTP_MSG_REQUEST);
		CHECK(http_head_scan(HTTP_MSG_REQUEST, text, len, &LIM, &head_len, &err) ==
		      HTTP_SCAN_DONE);
		CHECK(head_len == len);
		CHECK(http_reader_head(r, &c->msg, text, len, HTTP_METHOD_OTHER, &LIM, &err) == 0);
		http_reader_free(r);
		upgrade_classify(&c->msg, &ROUTE, &c->up);
		bool upgrade = strstr(text, "Upgrade:") != NULL;
		CHECK(c->up.decision == (upgrade ? UPGRADE_FORWARD : UPGRADE_NONE));
		CHECK(c->up.websocket == (strstr(text, "websocket") != NULL));
		if (c->up.websocket)
			CHECK(strcmp(c->up.ws_accept, WS_ACCEPT) == 0);
	}
}

/* ---- the head the proxy writes ---------------------------------------- */

static bool name_eq(const char *p, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(p, name, len) == 0;
}

/* Is name (as written) a field the backend's Connection header nominated? */
static bool nominated(const struct http_msg *resp, const char *name, size_t len)
{
	struct http_token_iter it = {0};
	const char *tok;
	size_t tok_len;
	while (http_msg_next_token(resp, "Connection", &it, &tok, &tok_len))
		if (tok_len == len && strncasecmp(tok, name, len) == 0)
			return true;
	return false;
}

/* What the proxy adds of its own to a forwarded response head. */
struct own_fields {
	const char *connection; /* value of its Connection field, or NULL */
	bool chunked;		/* Transfer-Encoding: chunked */
	const char *upgrade;	/* a 101: value of its Upgrade field */
	size_t upgrade_len;
};

static bool hop_by_hop_name(const char *name, size_t len)
{
	static const char *const names[] = {"Connection",	 "Keep-Alive", "Proxy-Connection",
					    "TE",		 "Trailer",    "Transfer-Encoding",
					    "Upgrade",		 "HTTP2-Settings"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_eq(name, len, names[i]))
			return true;
	return false;
}

/*
 * A written head: a status line, then "name: value" fields, then the empty
 * line that ends it, CRLF everywhere and nowhere else; exactly the backend's
 * end-to-end fields in order, then the proxy's own, then Via.
 */
static void check_written(const struct http_msg *resp, const struct own_fields *own,
			  const char *head, size_t len)
{
	size_t pos = 0, line_no = 0, next_field = 0;
	bool ended = false;
	struct evbuffer *want = evbuffer_new();
	CHECK(want != NULL);

	CHECK(len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0);
	CHECK(memchr(head, '\0', len) == NULL);
	while (pos < len) {
		const char *line = head + pos;
		const char *lf = memchr(line, '\n', len - pos);
		CHECK(lf != NULL && lf > line && lf[-1] == '\r');
		size_t n = (size_t)(lf - line) - 1; /* without CRLF */
		CHECK(memchr(line, '\r', n) == NULL);
		pos += n + 2;
		if (line_no++ == 0) {
			char status[4];
			snprintf(status, sizeof(status), "%03d", resp->status);
			CHECK(n >= 13 && memcmp(line, "HTTP/1.1 ", 9) == 0 &&
			      memcmp(line + 9, status, 3) == 0 && line[12] == ' ');
			CHECK(n - 13 == resp->reason_len &&
			      memcmp(line + 13, resp->reason, resp->reason_len) == 0);
			continue;
		}
		if (n == 0) {
			ended = true;
			CHECK(pos == len);
			break;
		}
		const char *colon = memchr(line, ':', n);
		CHECK(colon != NULL && colon > line && colon + 1 < line + n && colon[1] == ' ');
		size_t name_len = (size_t)(colon - line);
		if (next_field == SIZE_MAX)
			continue; /* the proxy's own fields, compared below */
		/* the backend's fields: never a hop-by-hop one */
		while (next_field < resp->n_headers &&
		       http_hdr_is_hop_by_hop(resp, &resp->headers[next_field]))
			next_field++;
		if (next_field == resp->n_headers) {
			next_field = SIZE_MAX;
			continue;
		}
		const struct http_header *h = &resp->headers[next_field++];
		CHECK(h->name_len == name_len && memcmp(h->name, line, name_len) == 0);
		CHECK(h->value_len == n - name_len - 2 && memcmp(h->value, colon + 2, h->value_len) == 0);
		CHECK(!hop_by_hop_name(line, name_len));
		CHECK(!nominated(resp, line, name_len) || name_eq(line, name_len, "Content-Length") ||
		      name_eq(line, name_len, "Host"));
	}
	CHECK(ended);

	/* the tail the proxy adds, exactly */
	if (next_field != SIZE_MAX) {
		while (next_field < resp->n_headers &&
		       http_hdr_is_hop_by_hop(resp, &resp->headers[next_field]))
			next_field++;
		CHECK(next_field == resp->n_headers);
	}
	size_t e2e = 0;
	for (size_t i = 0; i < resp->n_headers; i++)
		if (!http_hdr_is_hop_by_hop(resp, &resp->headers[i]))
			e2e += resp->headers[i].name_len + resp->headers[i].value_len + 4;
	if (own->chunked)
		evbuffer_add_printf(want, "Transfer-Encoding: chunked\r\n");
	if (own->connection)
		evbuffer_add_printf(want, "Connection: %s\r\n", own->connection);
	if (own->upgrade)
		evbuffer_add_printf(want, "Connection: Upgrade\r\nUpgrade: %.*s\r\n",
				    (int)own->upgrade_len, own->upgrade);
	evbuffer_add_printf(want, "Via: 1.%d " VIA "\r\n\r\n", resp->version_minor);
	size_t status_len = 13 + resp->reason_len + 2, tail = evbuffer_get_length(want);
	CHECK(len == status_len + e2e + tail);
	CHECK(memcmp(head + len - tail, evbuffer_pullup(want, -1), tail) == 0);
	evbuffer_free(want);
}

/* Write resp as the session would with these options; check it; leave it in out. */
static void write_head(const struct http_msg *resp, const struct http_hdr_opts *o,
		       const struct own_fields *own, struct evbuffer *out)
{
	size_t before = evbuffer_get_length(out);
	CHECK(http_hdr_write_response(resp, o, out) == 0);
	size_t len = evbuffer_get_length(out) - before;
	const char *all = (const char *)evbuffer_pullup(out, -1);
	CHECK(all != NULL);
	check_written(resp, own, all + before, len);
}

/* ---- the parsed head -------------------------------------------------- */

static void check_framing(const struct http_msg *resp, enum http_verb method)
{
	size_t n_cl = http_msg_count(resp, "Content-Length");
	size_t n_te = http_msg_count(resp, "Transfer-Encoding");
	CHECK(resp->status >= 100 && resp->status <= 599); /* RFC 9110 §15 */
	CHECK(resp->version_major == 1 && (resp->version_minor == 0 || resp->version_minor == 1));
	CHECK(resp->n_headers <= LIM.header_fields);
	CHECK(n_cl <= 1 && n_te <= 1 && !(n_cl && n_te));
	bool bodiless = resp->status < 200 || resp->status == 204 || resp->status == 304 ||
			method == HTTP_METHOD_HEAD;
	if (bodiless)
		CHECK(resp->body == HTTP_BODY_NONE);
	switch (resp->body) {
	case HTTP_BODY_NONE:
		CHECK(bodiless || (n_cl == 1 && resp->content_length == 0));
		break;
	case HTTP_BODY_LENGTH:
		CHECK(n_cl == 1 && resp->content_length > 0);
		break;
	case HTTP_BODY_CHUNKED:
		CHECK(n_te == 1 && resp->version_minor == 1);
		break;
	case HTTP_BODY_CLOSE:
		CHECK(n_cl == 0);
		break;
	}
}

/* ---- 101 --------------------------------------------------------------- */

static bool offered(const struct upgrade_req *up, const char *tok, size_t len)
{
	for (size_t i = 0; i < up->n_tokens; i++)
		if (up->tokens[i].len == len && strncasecmp(up->tokens[i].s, tok, len) == 0)
			return true;
	return false;
}

/* relay_switch: validate, then forward the 101 with our Connection/Upgrade. */
static void switch_101(const struct client_req *c, const struct http_msg *resp,
		       struct evbuffer *client)
{
	const char *bad = upgrade_check_101(&c->up, &c->msg, resp);
	if (c->up.decision != UPGRADE_FORWARD)
		CHECK(bad != NULL);
	if (bad != NULL)
		return; /* 502 */
	/* what the tunnel relies on */
	CHECK(resp->status == 101 && c->up.decision == UPGRADE_FORWARD);
	CHECK(http_msg_count(resp, "Content-Length") == 0 &&
	      http_msg_count(resp, "Transfer-Encoding") == 0);
	struct http_token_iter it = {0};
	const char *tok;
	size_t len, n = 0;
	bool websocket = false;
	while (http_msg_next_token(resp, "Upgrade", &it, &tok, &len)) {
		CHECK(offered(&c->up, tok, len));
		websocket |= http_token_eq(tok, len, "websocket");
		n++;
	}
	CHECK(n > 0);
	if (websocket) {
		CHECK(c->up.websocket);
		const struct http_header *acc = http_msg_find(resp, "Sec-WebSocket-Accept");
		CHECK(http_msg_count(resp, "Sec-WebSocket-Accept") == 1);
		CHECK(acc->value_len == strlen(WS_ACCEPT) &&
		      memcmp(acc->value, WS_ACCEPT, acc->value_len) == 0);
		const struct http_header *proto = http_msg_find(resp, "Sec-WebSocket-Protocol");
		if (proto != NULL) {
			CHECK(http_msg_count(resp, "Sec-WebSocket-Protocol") == 1);
			/* compared byte for byte, as browsers do */
			CHECK((proto->value_len == 4 && memcmp(proto->value, "chat", 4) == 0) ||
			      (proto->value_len == 9 && memcmp(proto->value, "superchat", 9) == 0));
		}
	}
	/* as relay_switch builds it */
	const struct http_header *upg = http_msg_find(resp, "Upgrade");
	CHECK(upg != NULL);
	char extra[512];
	int w = snprintf(extra, sizeof(extra), "Connection: Upgrade\r\nUpgrade: %.*s\r\n",
			 (int)upg->value_len, upg->value);
	if (w < 0 || (size_t)w >= sizeof(extra))
		return; /* 502 "101 Upgrade value too long" */
	struct http_hdr_opts o = {.via = VIA, .extra = extra, .extra_len = (size_t)w};
	struct own_fields own = {.upgrade = upg->value, .upgrade_len = upg->value_len};
	write_head(resp, &o, &own, client);
}

/* ---- the body ----------------------------------------------------------- */

struct sink {
	const char *lo, *hi; /* the piece being fed */
	struct evbuffer *payload;
	struct evbuffer *client; /* what the session writes to the client */
	bool chunk;
};

static void sink_cb(void *arg, const char *data, size_t len)
{
	struct sink *s = arg;
	CHECK(len > 0 ? s->lo != NULL && data >= s->lo && data + len <= s->hi : 1);
	if (len == 0)
		return;
	CHECK(evbuffer_add(s->payload, data, len) == 0); /* ASan checks the range */
	/* body_sink_cb in session.c */
	if (s->chunk)
		evbuffer_add_printf(s->client, "%zx\r\n", len);
	evbuffer_add(s->client, data, len);
	if (s->chunk)
		evbuffer_add(s->client, "\r\n", 2);
}

/*
 * relay_body over the backend's bytes in pieces. Returns 1 when the message
 * ended, 0 when it waits for more, -1 when the body is malformed or cut.
 */
static int relay(struct http_reader *r, const struct http_msg *resp, const char **buf,
		 size_t *left, size_t piece_max, bool eof, struct sink *s)
{
	bool done = http_reader_done(r);
	while (*left > 0 && !done) {
		size_t piece = *left < piece_max ? *left : piece_max;
		s->lo = *buf;
		s->hi = *buf + piece;
		ssize_t n = http_reader_body(r, *buf, piece, sink_cb, s, &done);
		if (n < 0)
			return -1;
		CHECK((size_t)n <= piece);
		CHECK((size_t)n == piece || done);
		CHECK(done == http_reader_done(r));
		*buf += n;
		*left -= (size_t)n;
	}
	if (!done && eof) {
		s->lo = s->hi = NULL;
		ssize_t n = http_reader_body(r, NULL, 0, sink_cb, s, &done);
		if (n < 0)
			return -1;
		CHECK(n == 0 && done);
		CHECK(resp->body == HTTP_BODY_CLOSE);
	}
	if (!done)
		return 0;
	if (resp->body == HTTP_BODY_LENGTH)
		CHECK(evbuffer_get_length(s->payload) == resp->content_length);
	if (resp->body == HTTP_BODY_NONE)
		CHECK(evbuffer_get_length(s->payload) == 0);
	if (s->chunk)
		evbuffer_add(s->client, "0\r\n\r\n", 5);
	return 1;
}

/* The client reads what the proxy wrote as one response to its request. */
static void client_reads(const struct client_req *c, const struct http_msg *resp,
			 struct evbuffer *client, struct evbuffer *payload, bool chunked_out,
			 bool complete)
{
	size_t len = evbuffer_get_length(client);
	const char *buf = (const char *)evbuffer_pullup(client, -1);
	struct http_limits big = {len + 1, resp->n_headers + 16, LIM.uri_bytes};
	struct http_error err;
	size_t head_len = 0;
	CHECK(buf != NULL);
	CHECK(http_head_scan(HTTP_MSG_RESPONSE, buf, len, &big, &head_len, &err) ==
	      HTTP_SCAN_DONE);
	struct http_reader *r = http_reader_new(HTTP_MSG_RESPONSE);
	struct http_msg again;
	CHECK(r != NULL);
	http_msg_init(&again, HTTP_MSG_RESPONSE);
	CHECK(http_reader_head(r, &again, buf, head_len, c->msg.method, &big, &err) == 0);
	CHECK(again.status == resp->status);
	/* the proxy re-chunks an open-ended body for HTTP/1.1 clients; HTTP/1.0 ones read to close */
	if (chunked_out)
		CHECK(again.body == HTTP_BODY_CHUNKED);
	else if (resp->body == HTTP_BODY_CHUNKED)
		CHECK(again.body == HTTP_BODY_CLOSE);
	else
		CHECK(again.body == resp->body);
	if (again.body == HTTP_BODY_LENGTH)
		CHECK(again.content_length == resp->content_length);
	/* a client that keeps the connection must find the message's end */
	CHECK(!again.keep_alive || again.body != HTTP_BODY_CLOSE);
	if (c->msg.version_minor == 0 && again.body == HTTP_BODY_CLOSE)
		CHECK(!again.keep_alive);

	struct evbuffer *got = evbuffer_new();
	CHECK(got != NULL);
	struct sink s = {.lo = buf + head_len, .hi = buf + len, .payload = got, .client = NULL};
	struct evbuffer *discard = evbuffer_new();
	CHECK(discard != NULL);
	s.client = discard;
	bool done = http_reader_done(r);
	size_t off = head_len;
	if (!done && off < len) {
		ssize_t n = http_reader_body(r, buf + off, len - off, sink_cb, &s, &done);
		CHECK(n >= 0); /* what the proxy writes is well-formed */
		off += (size_t)n;
	}
	if (complete && !done && again.body == HTTP_BODY_CLOSE) {
		s.lo = s.hi = NULL;
		CHECK(http_reader_body(r, NULL, 0, sink_cb, &s, &done) == 0);
	}
	if (complete) {
		/* the message ends exactly where the proxy's bytes end */
		CHECK(done && off == len);
	} else {
		CHECK(!done && off == len);
	}
	/* the client sees the backend's payload byte for byte */
	size_t plen = evbuffer_get_length(payload);
	CHECK(evbuffer_get_length(got) == plen);
	if (plen > 0)
		CHECK(memcmp(evbuffer_pullup(got, -1), evbuffer_pullup(payload, -1), plen) == 0);
	evbuffer_free(discard);
	evbuffer_free(got);
	http_msg_fini(&again);
	http_reader_free(r);
}

/* ---- one exchange ------------------------------------------------------- */

static void exchange(const struct client_req *c, size_t piece_max, bool eof, const char *buf,
		     size_t len)
{
	struct http_reader *r = http_reader_new(HTTP_MSG_RESPONSE);
	struct http_msg resp;
	struct evbuffer *client = evbuffer_new(), *payload = evbuffer_new();
	CHECK(r != NULL && client != NULL && payload != NULL);
	http_msg_init(&resp, HTTP_MSG_RESPONSE);

	for (int heads = 0; heads < MAX_HEADS && len > 0; heads++) {
		struct http_error err = {502, "malformed response"};
		size_t head_len = 0;
		size_t scan = len < LIM.header_bytes + 1 ? len : LIM.header_bytes + 1;
		enum http_scan_result sr =
		    http_head_scan(HTTP_MSG_RESPONSE, buf, scan, &LIM, &head_len, &err);
		if (sr == HTTP_SCAN_ERROR) {
			CHECK(err.status == 502 && err.reason != NULL);
			break;
		}
		if (sr == HTTP_SCAN_MORE) {
			CHECK(scan <= LIM.header_bytes);
			break;
		}
		CHECK(head_len >= 16 && head_len <= scan && head_len <= LIM.header_bytes);
		CHECK(memcmp(buf + head_len - 4, "\r\n\r\n", 4) == 0);
		/* bytes arriving one read at a time: every prefix asks for more */
		size_t cuts[2] = {head_len - 1, head_len / 2};
		for (int i = 0; i < 2; i++) {
			size_t hl = 0;
			struct http_error e2 = {0, NULL};
			CHECK(http_head_scan(HTTP_MSG_RESPONSE, buf, cuts[i], &LIM, &hl, &e2) ==
			      HTTP_SCAN_MORE);
		}
		if (http_reader_head(r, &resp, buf, head_len, c->msg.method, &LIM, &err) < 0) {
			CHECK(err.status == 502 && err.reason != NULL);
			break;
		}
		check_framing(&resp, c->msg.method);
		buf += head_len;
		len -= head_len;

		if (resp.status == 101) {
			switch_101(c, &resp, client);
			break; /* a tunnel (or a 502) from here on */
		}
		if (resp.status < 200) {
			/* relay_interim: never to an HTTP/1.0 client */
			if (c->msg.version_minor == 0)
				continue;
			struct http_hdr_opts o = {.via = VIA};
			struct own_fields own = {0};
			struct evbuffer *head = evbuffer_new();
			CHECK(head != NULL);
			write_head(&resp, &o, &own, head);
			evbuffer_free(head);
			continue;
		}
		/* relay_final_head */
		bool open_ended = resp.body == HTTP_BODY_CHUNKED || resp.body == HTTP_BODY_CLOSE;
		bool close_after = c->up.decision == UPGRADE_FORWARD;
		if (open_ended && c->msg.version_minor == 0)
			close_after = true;
		bool chunk_out = open_ended && c->msg.version_minor == 1;
		struct http_hdr_opts o = {.via = VIA, .chunked = chunk_out};
		if (close_after)
			o.connection = "close";
		else if (c->msg.version_minor == 0)
			o.connection = "keep-alive";
		struct own_fields own = {.connection = o.connection, .chunked = chunk_out};
		write_head(&resp, &o, &own, client);

		struct sink s = {.payload = payload, .client = client, .chunk = chunk_out};
		int rc = relay(r, &resp, &buf, &len, piece_max, eof, &s);
		if (rc >= 0)
			client_reads(c, &resp, client, payload, chunk_out, rc == 1);
		break;
	}
	evbuffer_free(payload);
	evbuffer_free(client);
	http_msg_fini(&resp);
	http_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	setup_requests();
	const struct client_req *c = &reqs[data[0] & 7];
	size_t piece_max = PIECES[(data[0] >> 3) & 7];
	bool eof = (data[0] >> 6) & 1;
	/* libFuzzer's buffer ends exactly at size: ASan sees any read past the end */
	exchange(c, piece_max, eof, (const char *)data + 1, size - 1);
	return 0;
}
