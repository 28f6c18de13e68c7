/*
 * wsbridge: a terminated WebSocket bridged to a byte-stream backend.
 *
 * Client frames are decoded by ws_reader; message payloads (decoded from
 * base64 for the "base64" subprotocol) are written to the backend as they
 * arrive, never gathered whole. Backend bytes are sent as one binary (or
 * base64 text) message per read. Each side pauses the other above a
 * high-water mark. The close handshake: whoever ends first, the proxy sends a
 * close frame, waits (bounded) for the client's close frame, then closes TCP.
 */
#include "wsbridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "ws.h"

#define WSB_HIGH_WATER (256 * 1024) /* output bytes before the other side pauses */
#define WSB_CHUNK (16 * 1024)	    /* backend bytes per message */
#define WSB_CLOSE_WAIT_MS 2000	    /* wait for the client's close frame */

struct wsbridge {
	struct wsbridge_params p;
	struct conn *client, *backend;
	struct ws_reader reader;
	struct event *timer;
	bool awaiting_pong;
	bool close_sent;    /* our close frame is queued */
	bool client_closed; /* the client's close frame arrived */
	bool backend_shut;  /* the backend got its EOF (after all bytes owed to it) */
	bool finished;
	enum end_cause cause;
	char detail[96];
	/* base64 text carried between pieces of a message */
	uint8_t b64[4];
	size_t b64_len;
	/* set by a codec callback to stop decoding with a close code */
	uint16_t fail_code;
	const char *fail_reason;
	uint64_t up, down;
};

static void bridge_finish(struct wsbridge *b)
{
	if (b->finished)
		return;
	b->finished = true;
	event_del(b->timer);
	conn_disable(b->client, EV_READ | EV_WRITE);
	conn_disable(b->backend, EV_READ | EV_WRITE);
	b->p.done(b->p.arg, b->cause, b->detail[0] ? b->detail : NULL);
}

static void send_frame(struct wsbridge *b, enum ws_opcode op, const void *data, size_t len)
{
	uint8_t hdr[WS_MAX_HEADER];
	size_t n = ws_frame_header(hdr, true, op, len, NULL);
	struct evbuffer *out = conn_output(b->client);
	evbuffer_add(out, hdr, n);
	evbuffer_add(out, data, len);
}

static void arm_timer(struct wsbridge *b, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_add(b->timer, &tv);
}

/* EOF to the backend, but only after the bytes still owed to it. */
static void shut_backend_when_flushed(struct wsbridge *b)
{
	if (b->backend_shut || evbuffer_get_length(conn_output(b->backend)) > 0)
		return; /* backend_write_cb calls again once the output drains */
	conn_shutdown_write(b->backend);
	b->backend_shut = true;
}

/* The close handshake is over and both sides have everything: finish. */
static void finish_when_flushed(struct wsbridge *b)
{
	if (b->close_sent && b->client_closed && b->backend_shut &&
	    evbuffer_get_length(conn_output(b->client)) == 0)
		bridge_finish(b);
}

/* Start (or answer) the close handshake; finish once it is complete. */
static void bridge_close(struct wsbridge *b, uint16_t code, const char *text, enum end_cause cause,
			 const char *detail)
{
	if (b->close_sent)
		return;
	uint8_t payload[WS_MAX_CONTROL];
	size_t n = code == 1005 ? 0 : ws_close_payload(payload, code, text);
	send_frame(b, WS_OP_CLOSE, payload, n);
	b->close_sent = true;
	b->cause = cause;
	snprintf(b->detail, sizeof(b->detail), "%s", detail ? detail : "");
	conn_disable(b->backend, EV_READ);
	shut_backend_when_flushed(b);
	conn_enable(b->client, EV_WRITE);
	arm_timer(b, WSB_CLOSE_WAIT_MS);
}

/* ---- client -> backend ---- */

static int b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decode one complete 4-char group; returns bytes written to out, -1 if bad. */
static int b64_group(const uint8_t in[4], uint8_t out[3])
{
	int v[4], pad = (in[3] == '=') + (in[2] == '=' && in[3] == '=');
	for (int i = 0; i < 4 - pad; i++)
		if ((v[i] = b64_value(in[i])) < 0)
			return -1;
	for (int i = 4 - pad; i < 4; i++)
		v[i] = 0;
	uint32_t w =
	    (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
	out[0] = (uint8_t)(w >> 16);
	out[1] = (uint8_t)(w >> 8);
	out[2] = (uint8_t)w;
	return 3 - pad;
}

static void data_base64(struct wsbridge *b, const uint8_t *data, size_t len, bool last)
{
	struct evbuffer *out = conn_output(b->backend);
	for (size_t i = 0; i < len; i++) {
		b->b64[b->b64_len++] = data[i];
		if (b->b64_len < 4)
			continue;
		uint8_t bytes[3];
		int n = b64_group(b->b64, bytes);
		b->b64_len = 0;
		if (n < 0 || (n < 3 && (i + 1 < len || !last))) {
			b->fail_code = WS_CLOSE_INVALID_DATA;
			b->fail_reason = "invalid base64 message";
			return;
		}
		evbuffer_add(out, bytes, (size_t)n);
		b->up += (uint64_t)n;
	}
	if (last && b->b64_len != 0) {
		b->fail_code = WS_CLOSE_INVALID_DATA;
		b->fail_reason = "invalid base64 message";
	}
}

static void on_data(void *arg, enum ws_opcode op, const uint8_t *data, size_t len, bool last)
{
	struct wsbridge *b = arg;
	if (b->close_sent || b->fail_code)
		return; /* closing: late data is dropped */
	if (b->p.base64) {
		data_base64(b, data, len, last);
		return;
	}
	evbuffer_add(conn_output(b->backend), data, len);
	b->up += len;
}

static void on_ping(void *arg, const uint8_t *data, size_t len)
{
	struct wsbridge *b = arg;
	if (!b->close_sent)
		send_frame(b, WS_OP_PONG, data, len);
}

static void on_pong(void *arg, const uint8_t *data, size_t len)
{
	struct wsbridge *b = arg;
	b->awaiting_pong = false;
}

static void on_close(void *arg, uint16_t code, const uint8_t *reason, size_t len)
{
	struct wsbridge *b = arg;
	char code_text[8];
	b->client_closed = true;
	snprintf(code_text, sizeof(code_text), "%u", code);
	bridge_close(b, code, "", END_CLIENT_CLOSE,
		     code_text); /* echo the code (none stays none) */
	finish_when_flushed(b);
}

static const struct ws_callbacks bridge_ws_callbacks = {
    .on_data = on_data,
    .on_ping = on_ping,
    .on_pong = on_pong,
    .on_close = on_close,
};

static void protocol_error(struct wsbridge *b, uint16_t code, const char *what)
{
	char why[96];
	snprintf(why, sizeof(why), "%s (%u)", what, code);
	b->client_closed = true; /* a broken peer gets no handshake wait */
	bridge_close(b, code, what, END_PROTOCOL_ERROR, why);
}

static void client_read_cb(struct conn *conn, void *arg)
{
	struct wsbridge *b = arg;
	struct evbuffer *in = conn_input(conn);
	while (!b->finished && !b->client_closed && evbuffer_get_length(in) > 0) {
		if (evbuffer_get_length(conn_output(b->backend)) >= WSB_HIGH_WATER) {
			conn_disable(conn, EV_READ);
			conn_set_write_low(b->backend, WSB_HIGH_WATER / 2);
			return;
		}
		struct evbuffer_iovec v;
		uint16_t code;
		const char *why;
		evbuffer_peek(in, -1, NULL, &v, 1);
		ssize_t used = ws_reader_feed(&b->reader, v.iov_base, v.iov_len,
					      &bridge_ws_callbacks, b, &code, &why);
		if (used < 0 || b->fail_code) {
			protocol_error(b, used < 0 ? code : b->fail_code,
				       used < 0 ? why : b->fail_reason);
			return;
		}
		evbuffer_drain(in, (size_t)used);
		if ((size_t)used < v.iov_len)
			break;
	}
	if (b->client_closed)
		evbuffer_drain(in, evbuffer_get_length(in));
}

/* ---- backend -> client ---- */

static void send_base64(struct wsbridge *b, struct evbuffer *in, size_t n)
{
	static const char tbl[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t raw[WSB_CHUNK];
	char text[(WSB_CHUNK + 2) / 3 * 4];
	size_t t = 0;
	evbuffer_remove(in, raw, n);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t w = (uint32_t)raw[i] << 16;
		if (i + 1 < n)
			w |= (uint32_t)raw[i + 1] << 8;
		if (i + 2 < n)
			w |= raw[i + 2];
		text[t++] = tbl[w >> 18 & 63];
		text[t++] = tbl[w >> 12 & 63];
		text[t++] = i + 1 < n ? tbl[w >> 6 & 63] : '=';
		text[t++] = i + 2 < n ? tbl[w & 63] : '=';
	}
	send_frame(b, WS_OP_TEXT, text, t);
}

static void forward_backend(struct wsbridge *b, bool ignore_water)
{
	struct evbuffer *in = conn_input(b->backend);
	struct evbuffer *out = conn_output(b->client);
	while (evbuffer_get_length(in) > 0) {
		if (!ignore_water && evbuffer_get_length(out) >= WSB_HIGH_WATER) {
			conn_disable(b->backend, EV_READ);
			conn_set_write_low(b->client, WSB_HIGH_WATER / 2);
			return;
		}
		size_t n = evbuffer_get_length(in);
		if (n > WSB_CHUNK)
			n = WSB_CHUNK;
		b->down += n;
		if (b->p.base64) {
			send_base64(b, in, n);
			continue;
		}
		uint8_t hdr[WS_MAX_HEADER];
		evbuffer_add(out, hdr, ws_frame_header(hdr, true, WS_OP_BINARY, n, NULL));
		evbuffer_remove_buffer(in, out, n);
	}
}

static void backend_read_cb(struct conn *conn, void *arg)
{
	struct wsbridge *b = arg;
	if (!b->finished && !b->close_sent)
		forward_backend(b, false);
}

static void backend_write_cb(struct conn *conn, void *arg)
{
	struct wsbridge *b = arg;
	conn_set_write_low(conn, 0);
	if (b->finished)
		return;
	if (b->close_sent) {
		shut_backend_when_flushed(b);
		finish_when_flushed(b);
		return;
	}
	conn_enable(b->client, EV_READ);
	client_read_cb(b->client, b);
}

static void client_write_cb(struct conn *conn, void *arg)
{
	struct wsbridge *b = arg;
	conn_set_write_low(conn, 0);
	if (b->finished)
		return;
	if (b->close_sent) {
		finish_when_flushed(b);
		return;
	}
	conn_enable(b->backend, EV_READ);
	forward_backend(b, false);
}

static void backend_event_cb(struct conn *conn, short what, void *arg)
{
	struct wsbridge *b = arg;
	if (b->finished || b->close_sent)
		return;
	if (what & CONN_EOF) {
		forward_backend(b, true); /* what the backend said before EOF still goes out */
		bridge_close(b, WS_CLOSE_NORMAL, "", END_BACKEND_EOF, NULL);
		return;
	}
	bridge_close(b, WS_CLOSE_INTERNAL, "backend error", END_BACKEND_CONN_ERROR, NULL);
}

static void client_event_cb(struct conn *conn, short what, void *arg)
{
	struct wsbridge *b = arg;
	if (b->finished)
		return;
	if (!b->close_sent)
		b->cause = (what & CONN_EOF) ? END_CLIENT_NO_CLOSE : END_CLIENT_CONN_ERROR;
	bridge_finish(b);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct wsbridge *b = arg;
	if (b->finished)
		return;
	if (b->close_sent) {
		bridge_finish(b); /* the client did not answer our close in time */
		return;
	}
	if (b->awaiting_pong) {
		bridge_close(b, WS_CLOSE_INTERNAL, "ping timeout", END_PING_TIMEOUT, NULL);
		return;
	}
	send_frame(b, WS_OP_PING, "switchyard", 10);
	b->awaiting_pong = true;
	arm_timer(b, b->p.ping_ms);
}

struct wsbridge *wsbridge_start(const struct wsbridge_params *p, struct conn *client,
				struct conn *backend)
{
	struct wsbridge *b = calloc(1, sizeof(*b));
	if (b == NULL || (b->timer = evtimer_new(p->base, timer_cb, b)) == NULL) {
		free(b);
		conn_free(client);
		conn_free(backend);
		return NULL;
	}
	b->p = *p;
	b->client = client;
	b->backend = backend;
	ws_reader_init(&b->reader, true, p->max_message);
	conn_setcb(client, client_read_cb, client_write_cb, client_event_cb, b);
	conn_setcb(backend, backend_read_cb, backend_write_cb, backend_event_cb, b);
	conn_set_timeouts(client, 0, 0);
	conn_enable(client, EV_READ | EV_WRITE);
	conn_enable(backend, EV_READ | EV_WRITE);
	if (p->ping_ms)
		arm_timer(b, p->ping_ms);
	/* frames that came with the handshake, decoded from the loop (done() must not
	 * run before we return) */
	conn_trigger_read(client);
	return b;
}

void wsbridge_going_away(struct wsbridge *b, enum end_cause cause)
{
	bridge_close(b, WS_CLOSE_GOING_AWAY, "going away", cause, NULL);
}

void wsbridge_free(struct wsbridge *b)
{
	if (b == NULL)
		return;
	event_free(b->timer);
	conn_free(b->client);
	conn_free(b->backend);
	free(b);
}

void wsbridge_tick(struct wsbridge *b)
{
	conn_tick(b->client);
	conn_tick(b->backend);
}

void wsbridge_bytes(const struct wsbridge *b, uint64_t *up, uint64_t *down)
{
	*up = b->up;
	*down = b->down;
}
