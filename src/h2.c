/*
 * h2: HTTP/2 connections and their streams (see h2.h).
 *
 * nghttp2 does the framing, HPACK, flow control and the protocol's state
 * machine, and its HTTP messaging checks (pseudo-headers, connection-specific
 * fields, content-length against DATA: stream errors). Bytes move through
 * nghttp2_session_mem_recv / mem_send on the client conn's buffers; sending
 * runs from the loop (send_ev), never from inside nghttp2's callbacks.
 *
 * A stream lives until nghttp2 has closed it AND its session has let go of
 * the stream conn (or the connection is gone): whichever comes last frees it.
 *
 * Defenses beyond nghttp2's own (its CONTINUATION cap, its RST_STREAM rate
 * limit, its cap on queued SETTINGS/PING acknowledgements):
 * - decoded request heads are counted against max_header_list (431);
 * - frames that cost us work but carry no request (PING, SETTINGS,
 *   PRIORITY, empty DATA, frames nghttp2 found invalid) draw on a token
 *   bucket; an empty bucket is GOAWAY ENHANCE_YOUR_CALM.
 */
#include "h2.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "http_hdr.h"
#include "log.h"
#include "upgrade.h"

#define H2_OUT_HIGH (64 * 1024)	  /* client output before nghttp2 is asked for more */
#define H2_STREAM_BUF (64 * 1024) /* response bytes a stream holds for its DATA frames */
#define H2_FLOOD_BURST 1000	  /* control frames and the like, at once ... */
#define H2_FLOOD_RATE 100	  /* ... and per second after */
#define H2_RESET_BURST 200	  /* client RST_STREAMs at once (rapid reset) ... */
#define H2_RESET_RATE 33	  /* ... and per second after */
#define H2_CONN_WINDOW_STREAMS 4  /* the connection window: this many stream windows */
#define H2_LINGER_MS 2000	  /* after the last GOAWAY: discard what still comes, then close */
#define H2_LINGER_BYTES (64 * 1024) /* ... at most this much after a connection error */
#define H2_ERRORS_LOGGED 5	    /* protocol error lines per connection: a flood logs no more */
#define H2_HEADER_OVERHEAD 32	    /* per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts */

/* Parsing the HTTP/1.1 response a session writes: only until its body is in. */
struct h2_parse {
	struct http_reader *reader;
	struct http_msg msg;
};

struct h2_stream {
	struct h2_conn *h; /* NULL once the connection is gone */
	struct h2_stream *next, *prev;
	int32_t id;
	struct conn *conn; /* the session's side; NULL once it let go */
	bool in_nghttp2;   /* nghttp2 has not closed it yet */

	/* the request head, until it is handed over */
	struct evbuffer *fields; /* regular fields as HTTP/1.1 lines */
	struct evbuffer *cookie; /* cookie crumbs, joined with "; " (RFC 9113 §8.2.3) */
	char *method, *path, *authority, *scheme, *protocol, *host;
	size_t header_list; /* decoded size so far */
	bool too_large;
	bool has_length;

	/* the request body */
	bool chunked_in;  /* no content-length: the body goes up chunked */
	bool tunnel;	  /* an extended CONNECT */
	bool quiet_close; /* its conn is freed on a failure that resets the stream itself */
	size_t owed;	  /* DATA bytes delivered and not yet given back as window */
	enum http_verb verb;

	/* the response */
	struct h2_parse *parse; /* while the session's response is parsed back */
	bool close_delimited;	/* the body ends when the session shuts its side */
	bool head_sent;		/* the final HEADERS (or the tunnel's 200) went to nghttp2 */
	bool switched;		/* the 101 came: the rest are tunnel bytes */
	bool body_eof;		/* everything of the response is in body */
	bool deferred;		/* the data provider said DEFERRED */
	struct evbuffer *body;	/* bytes for DATA frames */
};

/* A token bucket: burst at once, then rate per second. */
struct h2_bucket {
	double tokens;
	struct timespec refilled;
	unsigned burst, rate;
};

struct h2_conn {
	struct h2_params p;
	struct conn *client;
	nghttp2_session *ns;
	struct h2_stream *streams;
	size_t open; /* streams nghttp2 still knows */
	struct event send_ev, idle_ev;
	bool ended;
	bool failing;	/* a connection error: flush what nghttp2 queued (GOAWAY), then end */
	bool lingering; /* after the last GOAWAY: half-closed, discarding, then end */
	enum end_cause linger_cause;
	size_t discarded;	   /* bytes read and dropped after a connection error */
	unsigned errors_logged;	   /* nghttp2's reasons logged (H2_ERRORS_LOGGED at most) */
	const char *linger_detail; /* static */
	struct h2_bucket flood, resets;
	struct http_limits resp_limits;
};

static void h2_end(struct h2_conn *h, enum end_cause cause, const char *detail);
static void send_soon(struct h2_conn *h);
static void linger_start(struct h2_conn *h, enum end_cause cause, const char *detail);
static void idle_arm(struct h2_conn *h);
static void timer_in(struct event *ev, uint64_t ms);

/* ---- streams ---- */

static void stream_free_request(struct h2_stream *st)
{
	if (st->fields)
		evbuffer_free(st->fields);
	if (st->cookie)
		evbuffer_free(st->cookie);
	st->fields = st->cookie = NULL;
	free(st->method);
	free(st->path);
	free(st->authority);
	free(st->scheme);
	free(st->protocol);
	free(st->host);
	st->method = st->path = st->authority = st->scheme = st->protocol = st->host = NULL;
}

static void stream_unlink(struct h2_stream *st)
{
	if (st->h == NULL)
		return;
	if (st->prev)
		st->prev->next = st->next;
	else
		st->h->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->next = st->prev = NULL;
}

static void parse_end(struct h2_stream *st)
{
	if (st->parse == NULL)
		return;
	http_reader_free(st->parse->reader);
	http_msg_fini(&st->parse->msg);
	free(st->parse);
	st->parse = NULL;
}

static struct h2_parse *parse_begin(struct h2_stream *st)
{
	if (st->parse)
		return st->parse;
	struct h2_parse *p = calloc(1, sizeof(*p));
	if (p == NULL || (p->reader = http_reader_new(HTTP_MSG_RESPONSE)) == NULL) {
		free(p);
		return NULL;
	}
	http_msg_init(&p->msg, HTTP_MSG_RESPONSE);
	return st->parse = p;
}

static void stream_free(struct h2_stream *st)
{
	stream_unlink(st);
	stream_free_request(st);
	parse_end(st);
	if (st->body)
		evbuffer_free(st->body);
	free(st);
}

/* Free once neither nghttp2 nor a session needs it. */
static void stream_maybe_free(struct h2_stream *st)
{
	if (st->conn == NULL && (!st->in_nghttp2 || st->h == NULL))
		stream_free(st);
}

static struct h2_stream *stream_new(struct h2_conn *h, int32_t id)
{
	struct h2_stream *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->h = h;
	st->id = id;
	st->in_nghttp2 = true;
	if ((st->fields = evbuffer_new()) == NULL || (st->body = evbuffer_new()) == NULL) {
		stream_free(st);
		return NULL;
	}
	st->next = h->streams;
	if (h->streams)
		h->streams->prev = st;
	h->streams = st;
	return st;
}

static struct h2_stream *stream_of(struct h2_conn *h, int32_t id)
{
	return nghttp2_session_get_stream_user_data(h->ns, id);
}

static void stream_reset(struct h2_stream *st, uint32_t code)
{
	if (st->h && st->in_nghttp2) {
		nghttp2_submit_rst_stream(st->h->ns, NGHTTP2_FLAG_NONE, st->id, code);
		send_soon(st->h);
	}
}

/*
 * Give back the window of n bytes (taken by the session, or never to be):
 * the stream's and the connection's, or once nghttp2 has closed the stream
 * the connection's alone, which nghttp2 leaves to us then.
 */
static void stream_give_back(struct h2_stream *st, size_t n)
{
	if (st->h == NULL || n == 0)
		return;
	if (st->in_nghttp2)
		nghttp2_session_consume(st->h->ns, st->id, n);
	else
		nghttp2_session_consume_connection(st->h->ns, n);
	send_soon(st->h);
}

/* ---- the stream conn's owner side (conn_stream_ops) ---- */

static void resume_data(struct h2_stream *st)
{
	if (st->h && st->deferred && (evbuffer_get_length(st->body) > 0 || st->body_eof)) {
		st->deferred = false;
		nghttp2_session_resume_data(st->h->ns, st->id);
		send_soon(st->h);
	}
}

/*
 * The response head as nghttp2 name/value pairs: :status, then the fields
 * lowercased (into names, which must hold them), without hop-by-hop ones;
 * a tunnel's 200 keeps only the WebSocket negotiation fields.
 */
static size_t response_nv(const struct http_msg *m, int status, bool tunnel, char *status_text,
			  char *names, nghttp2_nv *nv)
{
	size_t n = 0, off = 0;
	snprintf(status_text, 4, "%03d", status);
	nv[n++] =
	    (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7, 3, NGHTTP2_NV_FLAG_NONE};
	for (size_t i = 0; i < m->n_headers; i++) {
		const struct http_header *f = &m->headers[i];
		if (http_hdr_is_hop_by_hop(m, f))
			continue;
		if (tunnel && !http_name_is(f, "Sec-WebSocket-Protocol") &&
		    !http_name_is(f, "Sec-WebSocket-Extensions"))
			continue;
		for (size_t k = 0; k < f->name_len; k++)
			names[off + k] = (char)tolower((unsigned char)f->name[k]);
		nv[n++] = (nghttp2_nv){(uint8_t *)names + off, (uint8_t *)f->value, f->name_len,
				       f->value_len, NGHTTP2_NV_FLAG_NONE};
		off += f->name_len;
	}
	return n;
}

static ssize_t data_read_cb(nghttp2_session *ns, int32_t id, uint8_t *buf, size_t len,
			    uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct h2_stream *st = src->ptr;
	int n = evbuffer_remove(st->body, buf, len);
	if (n < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (evbuffer_get_length(st->body) == 0 && st->body_eof)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	else if (n == 0) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (st->conn)
		conn_stream_writable(st->conn); /* room again: take more of the session's output */
	return n;
}

/* Send a response head: with a data provider unless the message ends here. */
static int submit_head(struct h2_stream *st, const struct http_msg *m, int status, bool has_body)
{
	/* nghttp2 copies the pairs: the usual head needs no allocation here */
	nghttp2_nv nv_small[32];
	char names_small[1024], status_text[4];
	bool small = m->n_headers < 32 && m->raw_len < sizeof(names_small);
	nghttp2_nv *nv = small ? nv_small : calloc(m->n_headers + 1, sizeof(*nv));
	char *names = small ? names_small : malloc(m->raw_len + 1);
	int rc = -1;
	if (nv && names) {
		size_t n = response_nv(m, status, st->switched, status_text, names, nv);
		nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read_cb};
		if (status < 200)
			rc = nghttp2_submit_headers(st->h->ns, NGHTTP2_FLAG_NONE, st->id, NULL, nv,
						    n, NULL);
		else
			rc = nghttp2_submit_response(st->h->ns, st->id, nv, n,
						     has_body ? &prd : NULL);
	}
	if (!small) {
		free(nv);
		free(names);
	}
	send_soon(st->h);
	return rc == 0 ? 0 : -1;
}

/* The session's response head, from the stream conn's output: 0 done, 1 more, -1 bad. */
static int take_head(struct h2_stream *st, struct evbuffer *out)
{
	struct http_error err = {502, "malformed response"};
	size_t len = evbuffer_get_length(out), head_len = 0;
	size_t scan =
	    len < st->h->resp_limits.header_bytes + 1 ? len : st->h->resp_limits.header_bytes + 1;
	const char *buf = (const char *)evbuffer_pullup(out, (ssize_t)scan);
	enum http_scan_result r =
	    http_head_scan(HTTP_MSG_RESPONSE, buf, scan, &st->h->resp_limits, &head_len, &err);
	if (r == HTTP_SCAN_MORE)
		return 1;
	struct h2_parse *p = parse_begin(st);
	if (r == HTTP_SCAN_ERROR || p == NULL ||
	    http_reader_head(p->reader, &p->msg, buf, head_len, st->verb, &st->h->resp_limits,
			     &err) < 0)
		return -1;
	evbuffer_drain(out, head_len);
	int status = p->msg.status, rc;
	if (status == 101) {
		if (!st->tunnel)
			return -1;
		st->switched = st->head_sent = true; /* RFC 8441 §5: the 101 becomes a 200 */
		rc = submit_head(st, &p->msg, 200, true);
		parse_end(st); /* raw bytes from now on */
		return rc;
	}
	if (status < 200)
		return submit_head(st, &p->msg, status, false);
	if (st->tunnel && status < 300) {
		/* a 2xx would tell the client its tunnel is open; the backend opened none */
		log_msg(LOG_LEVEL_WARN, st->h->p.session_id,
			"HTTP/2 stream %d: backend answered the upgrade with %d, sent as 502",
			(int)st->id, status);
		status = 502;
		p->msg.body = HTTP_BODY_NONE;
	}
	st->head_sent = true;
	st->body_eof = p->msg.body == HTTP_BODY_NONE;
	st->close_delimited = p->msg.body == HTTP_BODY_CLOSE;
	rc = submit_head(st, &p->msg, status, !st->body_eof);
	if (st->body_eof)
		parse_end(st);
	return rc;
}

static void body_sink(void *arg, const char *data, size_t len)
{
	evbuffer_add(arg, data, len);
}

/* Response body bytes from out into st->body, framing removed: -1 when malformed. */
static int take_body(struct h2_stream *st, struct evbuffer *out)
{
	while (!st->body_eof && evbuffer_get_length(st->body) < H2_STREAM_BUF) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(out, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		if (st->switched) {
			size_t room = H2_STREAM_BUF - evbuffer_get_length(st->body);
			evbuffer_remove_buffer(out, st->body, room);
			continue;
		}
		ssize_t n = http_reader_body(st->parse->reader, v.iov_base, v.iov_len, body_sink,
					     st->body, &st->body_eof);
		if (n < 0)
			return -1;
		evbuffer_drain(out, (size_t)n);
		if (n == 0 && !st->body_eof)
			break;
	}
	if (st->body_eof && !st->switched) {
		evbuffer_drain(out, evbuffer_get_length(out)); /* nothing may follow a response */
		parse_end(st);
	}
	return 0;
}

static void stream_output(struct conn *c, void *owner)
{
	struct h2_stream *st = owner;
	struct evbuffer *out = conn_output(c);
	if (st->h == NULL || !st->in_nghttp2) {
		evbuffer_drain(out, evbuffer_get_length(out)); /* nobody to send to: discard */
		return;
	}
	int rc = 0;
	while (rc == 0 && !st->head_sent && evbuffer_get_length(out) > 0)
		rc = take_head(st, out);
	if (rc >= 0 && st->head_sent)
		rc = take_body(st, out);
	if (rc < 0) {
		log_msg(LOG_LEVEL_WARN, st->h->p.session_id,
			"HTTP/2 stream %d: cannot re-frame the response", (int)st->id);
		evbuffer_drain(out, evbuffer_get_length(out));
		stream_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	resume_data(st);
}

static void stream_consumed(struct conn *c, size_t n, void *owner)
{
	struct h2_stream *st = owner;
	size_t k = n < st->owed ? n : st->owed; /* chunk framing we added is not DATA */
	st->owed -= k;
	stream_give_back(st, k);
}

/* The session said all: END_STREAM after the body, or a reset for a cut response. */
static void stream_shutdown(struct conn *c, void *owner)
{
	struct h2_stream *st = owner;
	if (st->switched || (st->head_sent && st->close_delimited))
		st->body_eof = true;
	if (!st->body_eof) {
		stream_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	resume_data(st);
}

static void stream_closed(struct conn *c, void *owner)
{
	struct h2_stream *st = owner;
	st->conn = NULL;
	stream_give_back(st, st->owed); /* bytes it never took */
	st->owed = 0;
	if (st->switched) {
		/* a tunnel's close is its FIN: END_STREAM after every byte written to it,
		 * also those the window had not let us take yet */
		evbuffer_add_buffer(st->body, conn_output(c));
		st->body_eof = true;
		resume_data(st);
	}
	if (!st->quiet_close && (!st->body_eof || !st->head_sent))
		stream_reset(st, st->head_sent ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_CANCEL);
	stream_maybe_free(st);
}

static const struct conn_stream_ops STREAM_OPS = {
    .output = stream_output,
    .consumed = stream_consumed,
    .shutdown = stream_shutdown,
    .closed = stream_closed,
};

/* ---- requests ---- */

static bool name_is(const uint8_t *name, size_t nlen, const char *lit)
{
	return nlen == strlen(lit) && memcmp(name, lit, nlen) == 0;
}

static int dup_field(char **dst, const uint8_t *v, size_t len)
{
	if (*dst) /* nghttp2 refuses repeated pseudo-headers; be safe */
		return -1;
	*dst = strndup((const char *)v, len);
	return *dst ? 0 : -1;
}

static int pseudo_field(struct h2_stream *st, const uint8_t *name, size_t nlen, const uint8_t *v,
			size_t vlen)
{
	if (name_is(name, nlen, ":method"))
		return dup_field(&st->method, v, vlen);
	if (name_is(name, nlen, ":path"))
		return dup_field(&st->path, v, vlen);
	if (name_is(name, nlen, ":authority"))
		return dup_field(&st->authority, v, vlen);
	if (name_is(name, nlen, ":scheme"))
		return dup_field(&st->scheme, v, vlen);
	if (name_is(name, nlen, ":protocol"))
		return dup_field(&st->protocol, v, vlen);
	return -1;
}

/* One request field: into the pieces the HTTP/1.1 head is built from. */
static int request_field(struct h2_stream *st, const uint8_t *name, size_t nlen, const uint8_t *v,
			 size_t vlen)
{
	if (nlen > 0 && name[0] == ':')
		return pseudo_field(st, name, nlen, v, vlen);
	if (name_is(name, nlen, "te")) /* "trailers" (nghttp2 refuses anything else): hop-by-hop */
		return 0;
	if (name_is(name, nlen, "host"))
		return st->host ? -1 : dup_field(&st->host, v, vlen);
	if (name_is(name, nlen, "sec-websocket-key") &&
	    st->protocol) /* RFC 8441: we make our own */
		return 0;
	if (name_is(name, nlen, "cookie")) {
		if (st->cookie == NULL && (st->cookie = evbuffer_new()) == NULL)
			return -1;
		if (evbuffer_get_length(st->cookie) > 0)
			evbuffer_add(st->cookie, "; ", 2);
		return evbuffer_add(st->cookie, v, vlen);
	}
	if (name_is(name, nlen, "content-length"))
		st->has_length = true;
	if (evbuffer_add(st->fields, name, nlen) < 0 || evbuffer_add(st->fields, ": ", 2) < 0 ||
	    evbuffer_add(st->fields, v, vlen) < 0 || evbuffer_add(st->fields, "\r\n", 2) < 0)
		return -1;
	return 0;
}

/* The request as HTTP/1.1 into buf. -1: out of memory. */
static int build_request(struct h2_stream *st, bool end_stream, struct evbuffer *buf)
{
	const char *method = st->method ? st->method : "GET";
	const char *target = st->path ? st->path : st->authority ? st->authority : "/";
	const char *host = st->authority ? st->authority : st->host;
	char key[UPGRADE_WS_KEY_LEN + 1];
	int rc = 0;

	st->tunnel = strcmp(method, "CONNECT") == 0 && st->protocol != NULL;
	if (st->tunnel)
		method = "GET"; /* RFC 8441 §5: the extended CONNECT is an Upgrade handshake */
	st->verb = strcmp(method, "HEAD") == 0 ? HTTP_METHOD_HEAD : HTTP_METHOD_OTHER;
	rc |= evbuffer_add_printf(buf, "%s %s HTTP/1.1\r\n", method, target) < 0;
	if (host)
		rc |= evbuffer_add_printf(buf, "Host: %s\r\n", host) < 0;
	if (st->tunnel) {
		rc |= evbuffer_add_printf(buf, "Connection: Upgrade\r\nUpgrade: %s\r\n",
					  st->protocol) < 0;
		if (strcasecmp(st->protocol, "websocket") == 0) {
			rc |= upgrade_ws_new_key(key) < 0;
			rc |= evbuffer_add_printf(buf, "Sec-WebSocket-Key: %s\r\n", key) < 0;
		}
	} else {
		/* one request per stream: the session closes its side after the answer */
		rc |= evbuffer_add(buf, "Connection: close\r\n", 19) < 0;
		st->chunked_in = !end_stream && !st->has_length;
	}
	if (st->cookie && evbuffer_get_length(st->cookie) > 0) {
		rc |= evbuffer_add(buf, "Cookie: ", 8) < 0;
		rc |= evbuffer_add_buffer(buf, st->cookie) < 0;
		rc |= evbuffer_add(buf, "\r\n", 2) < 0;
	}
	rc |= evbuffer_add_buffer(buf, st->fields) < 0;
	if (st->chunked_in)
		rc |= evbuffer_add(buf, "Transfer-Encoding: chunked\r\n", 28) < 0;
	rc |= evbuffer_add(buf, "\r\n", 2) < 0;
	return rc ? -1 : 0;
}

/* A short text/plain answer from the front end itself (431 and the like). */
static void answer_error(struct h2_stream *st, int status, const char *reason)
{
	char status_text[4], len_text[24];
	snprintf(status_text, sizeof(status_text), "%03d", status);
	snprintf(len_text, sizeof(len_text), "%zu", strlen(reason) + 1);
	nghttp2_nv nv[] = {
	    {(uint8_t *)":status", (uint8_t *)status_text, 7, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"content-length", (uint8_t *)len_text, 14, strlen(len_text),
	     NGHTTP2_NV_FLAG_NONE},
	};
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read_cb};
	log_msg(LOG_LEVEL_INFO, st->h->p.session_id, "HTTP/2 stream %d: %d: %s", (int)st->id,
		status, reason);
	evbuffer_add_printf(st->body, "%s\n", reason);
	st->head_sent = st->body_eof = true;
	nghttp2_submit_response(st->h->ns, st->id, nv, 3, &prd);
	send_soon(st->h);
}

/* The request head is complete: hand it to a new session on a stream conn. */
static void request_ready(struct h2_stream *st, bool end_stream)
{
	struct h2_conn *h = st->h;
	if (st->too_large) {
		answer_error(st, 431, "request header list too large");
		stream_free_request(st);
		return;
	}
	struct conn *c = conn_new_stream(h->p.base, &STREAM_OPS, st, h->client);
	struct evbuffer *head = evbuffer_new();
	if (c == NULL || head == NULL || build_request(st, end_stream, head) < 0) {
		if (head)
			evbuffer_free(head);
		st->quiet_close = true; /* the reset below says why */
		conn_free(c);
		stream_reset(st, NGHTTP2_INTERNAL_ERROR);
		stream_free_request(st);
		return;
	}
	stream_free_request(st);
	st->conn = c;
	conn_stream_deliver_buffer(c, head);
	evbuffer_free(head);
	if (end_stream)
		conn_stream_eof(c);
	st->quiet_close = true; /* a refusal frees c: REFUSED_STREAM, not a CANCEL */
	int rc = h->p.open_stream(h->p.arg, c, st->id, st->tunnel);
	st->quiet_close = false;
	if (rc < 0) {
		st->conn = NULL;			  /* freed by open_stream */
		stream_reset(st, NGHTTP2_REFUSED_STREAM); /* not processed: the client may retry */
	}
}

/* The client's END_STREAM: the chunked body's last chunk, then EOF. */
static void request_ended(struct h2_stream *st)
{
	if (st->conn == NULL)
		return;
	if (st->chunked_in)
		conn_stream_deliver(st->conn, "0\r\n\r\n", 5);
	conn_stream_eof(st->conn);
}

/* ---- nghttp2 callbacks ---- */

static void bucket_init(struct h2_bucket *b, unsigned burst, unsigned rate)
{
	b->tokens = b->burst = burst;
	b->rate = rate;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &b->refilled);
}

/* Take a token: false when the bucket is empty. */
static bool bucket_take(struct h2_bucket *b)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	double dt = (double)(now.tv_sec - b->refilled.tv_sec) +
		    (double)(now.tv_nsec - b->refilled.tv_nsec) / 1e9;
	b->refilled = now;
	b->tokens += dt * b->rate;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	return --b->tokens >= 0;
}

/* The connection is beyond repair: GOAWAY with code, flushed before the close. */
static void fail_conn(struct h2_conn *h, uint32_t code)
{
	if (h->failing)
		return;
	nghttp2_session_terminate_session(h->ns, code);
	h->p.goaway(h->p.arg, code);
	h->failing = true;
}

/* A frame that costs work and carries no request draws on b; empty: calm down. */
static void flood_check(struct h2_conn *h, struct h2_bucket *b, const char *what)
{
	if (bucket_take(b) || h->failing)
		return;
	log_msg(LOG_LEVEL_WARN, h->p.session_id, "HTTP/2 flood of %s frames: GOAWAY", what);
	fail_conn(h, NGHTTP2_ENHANCE_YOUR_CALM);
}

static int on_begin_headers(nghttp2_session *ns, const nghttp2_frame *frame, void *user)
{
	struct h2_conn *h = user;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2_stream *st = stream_new(h, frame->hd.stream_id);
	if (st == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
	h->open++;
	event_del(&h->idle_ev);
	nghttp2_session_set_stream_user_data(ns, frame->hd.stream_id, st);
	return 0;
}

static int on_header(nghttp2_session *ns, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct h2_conn *h = user;
	struct h2_stream *st = stream_of(h, frame->hd.stream_id);
	if (st == NULL || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* trailers: dropped, as on HTTP/1.1 */
	st->header_list += nlen + vlen + H2_HEADER_OVERHEAD;
	if (st->header_list > h->p.settings->max_header_list)
		st->too_large = true; /* decoding goes on (HPACK state); the answer is 431 */
	if (st->too_large)
		return 0;
	return request_field(st, name, nlen, value, vlen) < 0
		   ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
		   : 0;
}

static int on_frame_recv(nghttp2_session *ns, const nghttp2_frame *frame, void *user)
{
	struct h2_conn *h = user;
	struct h2_stream *st = frame->hd.stream_id ? stream_of(h, frame->hd.stream_id) : NULL;
	bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
	switch (frame->hd.type) {
	case NGHTTP2_PING:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			flood_check(h, &h->flood, "PING");
		return 0;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			flood_check(h, &h->flood, "SETTINGS");
		return 0;
	case NGHTTP2_PRIORITY:
		flood_check(h, &h->flood, "PRIORITY");
		return 0;
	case NGHTTP2_RST_STREAM: /* rapid reset (CVE-2023-44487): each one cost us a session */
		flood_check(h, &h->resets, "RST_STREAM");
		return 0;
	case NGHTTP2_DATA:
		if (frame->hd.length == 0 && !end_stream)
			flood_check(h, &h->flood, "empty DATA");
		break;
	case NGHTTP2_HEADERS:
		if (st && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			request_ready(st, end_stream);
			return 0;
		}
		break;
	default:
		return 0;
	}
	if (st && end_stream)
		request_ended(st);
	return 0;
}

/*
 * A frame nghttp2 refused: it costs like a flood frame. Why is logged by
 * on_error, except for a request's missing or wrong pseudo-headers, which
 * nghttp2 reports only here.
 */
static int on_invalid_frame(nghttp2_session *ns, const nghttp2_frame *frame, int err, void *user)
{
	struct h2_conn *h = user;
	if (err == NGHTTP2_ERR_HTTP_MESSAGING && h->errors_logged++ < H2_ERRORS_LOGGED)
		log_msg(LOG_LEVEL_INFO, h->p.session_id, "HTTP/2: %s (frame type: %d, stream: %d)",
			nghttp2_strerror(err), (int)frame->hd.type, (int)frame->hd.stream_id);
	flood_check(h, &h->flood, "invalid");
	return 0;
}

static int on_data_chunk(nghttp2_session *ns, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *user)
{
	struct h2_conn *h = user;
	struct h2_stream *st = stream_of(h, id);
	if (st == NULL || st->conn == NULL) {
		nghttp2_session_consume(ns, id, len); /* nobody takes it: the window reopens now */
		send_soon(h);
		return 0;
	}
	if (st->chunked_in) {
		char size[24];
		int n = snprintf(size, sizeof(size), "%zx\r\n", len);
		conn_stream_deliver(st->conn, size, (size_t)n);
	}
	conn_stream_deliver(st->conn, data, len);
	if (st->chunked_in)
		conn_stream_deliver(st->conn, "\r\n", 2);
	st->owed += len;
	return 0;
}

/* nghttp2 says why it refused a frame or a field (a stream or connection
 * error): the reason for the log, for the first few of a connection. */
static int on_error(nghttp2_session *ns, int code, const char *msg, size_t len, void *user)
{
	struct h2_conn *h = user;
	if (h->errors_logged++ < H2_ERRORS_LOGGED)
		log_msg(LOG_LEVEL_INFO, h->p.session_id, "HTTP/2: %.*s", (int)len, msg);
	return 0;
}

static int on_stream_close(nghttp2_session *ns, int32_t id, uint32_t code, void *user)
{
	struct h2_conn *h = user;
	struct h2_stream *st = stream_of(h, id);
	if (st == NULL)
		return 0;
	st->in_nghttp2 = false;
	nghttp2_session_set_stream_user_data(ns, id, NULL);
	if (--h->open == 0)
		idle_arm(h);
	/* a reset (either side), or closed before the response was all sent */
	if (st->conn && (code != NGHTTP2_NO_ERROR || !st->body_eof))
		conn_stream_fail(st->conn, ECONNRESET);
	stream_maybe_free(st);
	return 0;
}

/* ---- the client connection ---- */

static void send_soon(struct h2_conn *h)
{
	if (!h->ended)
		event_active(&h->send_ev, EV_WRITE, 1);
}

/* What nghttp2 has to send, into the client's output (up to H2_OUT_HIGH). */
static void flush(struct h2_conn *h)
{
	struct evbuffer *out = conn_output(h->client);
	if (h->lingering)
		return; /* half-closed: nothing more can go */
	while (!h->ended && evbuffer_get_length(out) < H2_OUT_HIGH) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(h->ns, &data);
		if (n < 0) {
			h2_end(h, END_INTERNAL, nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		evbuffer_add(out, data, (size_t)n);
	}
	if (h->ended || h->lingering || evbuffer_get_length(out) > 0)
		return;
	if (h->failing)
		linger_start(h, END_PROTOCOL_ERROR, "HTTP/2 connection error");
	else if (!nghttp2_session_want_read(h->ns) && !nghttp2_session_want_write(h->ns))
		linger_start(h, END_RESPONSE_DONE, NULL); /* after GOAWAY, the last stream ended */
}

/*
 * The GOAWAY is out: half-close, then read and discard until the client
 * closes (or H2_LINGER_MS). Closing at once with the client's frames still
 * arriving would reset the connection, and a reset can destroy the GOAWAY
 * before the client reads it.
 */
static void linger_start(struct h2_conn *h, enum end_cause cause, const char *detail)
{
	h->lingering = true;
	h->linger_cause = cause;
	h->linger_detail = detail;
	timer_in(&h->idle_ev, H2_LINGER_MS);
	conn_shutdown_write(h->client);
	conn_enable(h->client, EV_READ);
}

static void send_cb(evutil_socket_t fd, short what, void *arg)
{
	flush(arg);
}

/* (Re)start ev to fire in ms. */
static void timer_in(struct event *ev, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_del(ev);
	event_add(ev, &tv);
}

static void idle_arm(struct h2_conn *h)
{
	if (h->p.idle_ms && !h->lingering) /* the linger's own clock runs then */
		timer_in(&h->idle_ev, h->p.idle_ms);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_conn *h = arg;
	if (h->lingering) {
		h2_end(h, h->linger_cause, h->linger_detail);
		return;
	}
	if (h->open > 0)
		return;
	log_msg(LOG_LEVEL_DEBUG, h->p.session_id, "HTTP/2 connection idle: GOAWAY");
	nghttp2_session_terminate_session(h->ns, NGHTTP2_NO_ERROR);
	h->p.goaway(h->p.arg, NGHTTP2_NO_ERROR);
	send_soon(h);
}

/* The GOAWAY code for a fatal nghttp2_session_mem_recv error. */
static uint32_t recv_error_code(int err)
{
	switch (err) {
	case NGHTTP2_ERR_FLOODED:
	case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
		return NGHTTP2_ENHANCE_YOUR_CALM;
	case NGHTTP2_ERR_NOMEM:
	case NGHTTP2_ERR_CALLBACK_FAILURE:
		return NGHTTP2_INTERNAL_ERROR;
	default:
		return NGHTTP2_PROTOCOL_ERROR;
	}
}

static void client_read(struct conn *c, void *arg)
{
	struct h2_conn *h = arg;
	struct evbuffer *in = conn_input(c);
	while (!h->failing && !h->lingering && !h->ended && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		evbuffer_peek(in, -1, NULL, &v, 1);
		ssize_t n = nghttp2_session_mem_recv(h->ns, v.iov_base, v.iov_len);
		if (n < 0) {
			log_msg(LOG_LEVEL_INFO, h->p.session_id, "HTTP/2: %s",
				nghttp2_strerror((int)n));
			fail_conn(h, recv_error_code((int)n));
			break;
		}
		evbuffer_drain(in, (size_t)n);
	}
	if (h->failing || h->lingering) { /* nothing more goes to nghttp2 */
		h->discarded += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	/* a client we told to calm down gets a short linger only */
	if (h->lingering && h->failing && h->discarded > H2_LINGER_BYTES) {
		h2_end(h, h->linger_cause, h->linger_detail);
		return;
	}
	send_soon(h);
}

static void client_write(struct conn *c, void *arg)
{
	flush(arg);
}

static void client_event(struct conn *c, short what, void *arg)
{
	struct h2_conn *h = arg;
	char why[256];
	if (what & CONN_TIMEOUT)
		h2_end(h, END_SEND_TIMEOUT, NULL);
	else if (what & CONN_ERROR)
		h2_end(h, END_CLIENT_ERROR, conn_error(c, why, sizeof(why)));
	else if (what & CONN_EOF && h->lingering)
		h2_end(h, h->linger_cause, h->linger_detail);
	else if (what & CONN_EOF)
		h2_end(h, END_CLIENT_CLOSED, NULL);
}

/* Every stream still with a session sees its conn fail; the rest go now. */
static void orphan_streams(struct h2_conn *h)
{
	struct h2_stream *next;
	for (struct h2_stream *st = h->streams; st; st = next) {
		next = st->next;
		st->next = st->prev = NULL;
		st->h = NULL; /* freed when its session lets go */
		if (st->conn)
			conn_stream_fail(st->conn, ECONNRESET);
		else
			stream_free(st);
	}
	h->streams = NULL;
}

/* The connection is over: the streams are orphaned, the owner told. */
static void h2_end(struct h2_conn *h, enum end_cause cause, const char *detail)
{
	if (h->ended)
		return;
	h->ended = true;
	event_del(&h->send_ev);
	event_del(&h->idle_ev);
	conn_disable(h->client, EV_READ | EV_WRITE);
	orphan_streams(h);
	h->p.done(h->p.arg, cause, detail);
}

static nghttp2_session_callbacks *callbacks(void)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	return cb;
}

static int session_new(struct h2_conn *h)
{
	nghttp2_session_callbacks *cb = callbacks();
	nghttp2_option *opt = NULL;
	int rc = -1;
	if (cb == NULL || nghttp2_option_new(&opt) != 0)
		goto out;
	/* windows open as sessions take the bytes (stream_consumed), not on receipt */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/*
	 * nghttp2's own limits stay behind our buckets, as backstops: its reset
	 * limit, and its cap on queued PING / SETTINGS acknowledgements, which
	 * otherwise races our flood bucket and, when it wins, fails the session
	 * (NGHTTP2_ERR_FLOODED) before our GOAWAY can be sent.
	 */
	nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST * 2, H2_RESET_RATE);
	nghttp2_option_set_max_outbound_ack(opt, H2_FLOOD_BURST * 2);
	rc = nghttp2_session_server_new2(&h->ns, cb, h, opt);
out:
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	return rc == 0 ? 0 : -1;
}

static int submit_settings(struct h2_conn *h)
{
	const struct config_h2 *s = h->p.settings;
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)s->max_concurrent_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)s->initial_window},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->max_header_list},
	    {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
	};
	uint64_t window = (uint64_t)s->initial_window * H2_CONN_WINDOW_STREAMS;
	if (window > 0x7fffffff)
		window = 0x7fffffff;
	if (nghttp2_submit_settings(h->ns, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0)
		return -1;
	return nghttp2_session_set_local_window_size(h->ns, NGHTTP2_FLAG_NONE, 0, (int32_t)window);
}

struct h2_conn *h2_start(const struct h2_params *p, struct conn *client)
{
	struct h2_conn *h = calloc(1, sizeof(*h));
	if (h == NULL) {
		conn_free(client);
		return NULL;
	}
	h->p = *p;
	h->client = client;
	bucket_init(&h->flood, H2_FLOOD_BURST, H2_FLOOD_RATE);
	bucket_init(&h->resets, H2_RESET_BURST, H2_RESET_RATE);
	/* heads the sessions write: theirs, plus what the proxy adds (Via, ...) */
	h->resp_limits = (struct http_limits){p->header_bytes * 2 + 1024, p->header_fields * 2 + 16,
					      p->header_bytes};
	event_assign(&h->send_ev, p->base, -1, 0, send_cb, h);
	event_assign(&h->idle_ev, p->base, -1, 0, idle_cb, h);
	if (session_new(h) < 0 || submit_settings(h) < 0) {
		h2_free(h);
		return NULL;
	}
	conn_setcb(client, client_read, client_write, client_event, h);
	conn_set_write_low(client, H2_OUT_HIGH / 2);
	conn_set_timeouts(client, 0, p->send_ms);
	conn_set_read_high(client, 0);
	conn_enable(client, EV_READ | EV_WRITE);
	if (evbuffer_get_length(conn_input(client)) > 0)
		conn_trigger_read(client); /* the preface came with the first bytes */
	idle_arm(h);
	send_soon(h);
	return h;
}

void h2_goaway(struct h2_conn *h)
{
	if (h->ended || h->failing || h->lingering)
		return; /* its last GOAWAY is already out */
	if (nghttp2_submit_goaway(h->ns, NGHTTP2_FLAG_NONE,
				  nghttp2_session_get_last_proc_stream_id(h->ns), NGHTTP2_NO_ERROR,
				  NULL, 0) == 0)
		h->p.goaway(h->p.arg, NGHTTP2_NO_ERROR);
	send_soon(h);
}

void h2_tick(struct h2_conn *h)
{
	conn_tick(h->client);
}

void h2_free(struct h2_conn *h)
{
	if (h == NULL)
		return;
	h->ended = true;
	orphan_streams(h);
	event_del(&h->send_ev);
	event_del(&h->idle_ev);
	nghttp2_session_del(h->ns);
	conn_free(h->client);
	free(h);
}
