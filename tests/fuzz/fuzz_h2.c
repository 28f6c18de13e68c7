/*
 * libFuzzer driver for the HTTP/2 front end: whatever a client sends on a
 * connection that chose h2 (after the connection preface, which the driver
 * supplies), run through src/h2.c and nghttp2 on a real event loop, with a
 * stand-in for the sessions: each request stream's conn is read, its
 * HTTP/1.1 head checked, and answered the way a session would (a 200 with a
 * body, or for an extended CONNECT a 101 and then an echo). Build and run:
 * make fuzz.
 *
 * Input: the client's bytes after the preface (frames, broken or not).
 * Seeds: tests/fuzz/corpus/fuzz_h2/ (tests/fuzz/make_corpus.py).
 *
 * Checked beyond "no crash, no leak":
 * - every request handed to a stream is one complete HTTP/1.1 head that the
 *   proxy's own scanner accepts (no field or line smuggled in by a name, a
 *   value or a pseudo-header), with a Host field when it came with an
 *   :authority, and "Connection: close" (or an Upgrade for a CONNECT);
 * - the connection ends (done) at most once, and never calls back after
 *   h2_free.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "conn.h"
#include "h2.h"
#include "http.h"
#include "log.h"
#include "fuzz_check.h"

#define MAX_STREAMS 64
#define ROUNDS 32 /* loop turns after the input: enough for every answer */

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct stream {
	struct conn *c;
	bool tunnel, answered, head_checked;
};

struct fuzz_conn {
	struct stream streams[MAX_STREAMS];
	size_t n;
	int done;
	bool freed;
};

static const struct http_limits LIMITS = {16384, 100, 8192};

/* Lines end in CRLF and nothing else: no bare CR, LF or NUL from a field. */
static void check_lines(const char *head, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		CHECK(head[i] != '\0');
		if (head[i] == '\r')
			CHECK(i + 1 < len && head[i + 1] == '\n');
		if (head[i] == '\n')
			CHECK(i > 0 && head[i - 1] == '\r');
	}
}

/*
 * The request head a stream carries, delivered whole: clean lines, and one
 * head to the proxy's own scanner (or a 400 / 414 / 431, which a session
 * would answer on the stream), never a head that ends early.
 */
static void check_head(struct stream *st)
{
	struct evbuffer *in = conn_input(st->c);
	size_t len = evbuffer_get_length(in), head_len = 0;
	struct http_error err = {400, "malformed"};
	const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)len);
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	CHECK(end != NULL);
	st->head_checked = true;
	check_lines(buf, (size_t)(end - buf) + 2);
	enum http_scan_result r =
	    http_head_scan(HTTP_MSG_REQUEST, buf, len, &LIMITS, &head_len, &err);
	CHECK(r != HTTP_SCAN_MORE);
	if (r == HTTP_SCAN_ERROR) {
		CHECK(err.status == 400 || err.status == 414 || err.status == 431);
		evbuffer_drain(in, len);
		return;
	}
	CHECK(buf + head_len - 4 == end);
	CHECK(st->tunnel ? memmem(buf, head_len, "\r\nUpgrade: ", 11) != NULL
			 : memmem(buf, head_len, "\r\nConnection: close\r\n", 21) != NULL);
	evbuffer_drain(in, head_len);
}

static void answer(struct stream *st)
{
	struct evbuffer *out = conn_output(st->c);
	st->answered = true;
	if (st->tunnel)
		evbuffer_add_printf(out,
				    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				    "Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n\r\n");
	else
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n"
					 "Connection: close\r\n\r\nhello");
}

static void stream_read(struct conn *c, void *arg)
{
	struct stream *st = arg;
	struct evbuffer *in = conn_input(c);
	if (!st->head_checked) {
		check_head(st);
		if (!st->head_checked)
			return;
		answer(st);
	}
	if (st->tunnel) /* echo, as a WebSocket backend would */
		evbuffer_add_buffer(conn_output(c), in);
	else
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void stream_write(struct conn *c, void *arg)
{
	struct stream *st = arg;
	if (st->answered && !st->tunnel && evbuffer_get_length(conn_output(c)) == 0)
		conn_shutdown_write(c);
}

static void stream_event(struct conn *c, short what, void *arg)
{
	struct stream *st = arg;
	if ((what & CONN_EOF) && st->tunnel)
		conn_shutdown_write(c); /* the half-close goes through */
}

static int open_stream(void *arg, struct conn *stream, int32_t id, bool tunnel)
{
	struct fuzz_conn *f = arg;
	CHECK(!f->freed);
	if (f->n == MAX_STREAMS) {
		conn_free(stream);
		return -1;
	}
	struct stream *st = &f->streams[f->n++];
	st->c = stream;
	st->tunnel = tunnel;
	conn_setcb(stream, stream_read, stream_write, stream_event, st);
	conn_set_read_high(stream, 64 * 1024);
	conn_enable(stream, EV_READ | EV_WRITE);
	return 0;
}

static void done(void *arg, enum end_cause cause, const char *detail)
{
	struct fuzz_conn *f = arg;
	CHECK(!f->freed);
	f->done++;
	CHECK(f->done == 1);
}

static void goaway(void *arg, uint32_t code)
{
	struct fuzz_conn *f = arg;
	CHECK(!f->freed);
	CHECK(code <= 0xd); /* an RFC 9113 error code */
}

static struct event_base *base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_open("stderr", "off", "error");
	base = event_base_new();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct config_h2 settings = {8, 65535, 4096};
	struct fuzz_conn f = {0};
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
		return 0;
	struct conn *client = conn_new(base, sv[0], NULL, CONN_PLAIN);
	CHECK(client != NULL);
	evbuffer_add(conn_input(client), PREFACE, sizeof(PREFACE) - 1);
	evbuffer_add(conn_input(client), data, size);
	struct h2_params p = {
	    .base = base,
	    .settings = &settings,
	    .header_bytes = LIMITS.header_bytes,
	    .header_fields = LIMITS.header_fields,
	    .open_stream = open_stream,
	    .goaway = goaway,
	    .done = done,
	    .arg = &f,
	};
	struct h2_conn *h = h2_start(&p, client);
	CHECK(h != NULL);
	char sink[65536];
	for (int i = 0; i < ROUNDS; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		while (read(sv[1], sink, sizeof(sink)) > 0) /* what the client would get */
			;
	}
	for (size_t i = 0; i < f.n; i++)
		conn_free(f.streams[i].c);
	h2_free(h);
	f.freed = true;
	event_base_loop(base, EVLOOP_NONBLOCK); /* events already active go nowhere */
	close(sv[1]);
	return 0;
}
