/*
 * libFuzzer driver for the HTTP head scanner, head parser, header rewrite and
 * body decoder, driven the way a session drives them: any input must end in a
 * clean accept or a clean error, and what is accepted must hold together.
 * Build and run: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 *
 * Input: one control byte, then the bytes of one connection direction.
 *   bit 0     0: client bytes (requests), 1: backend bytes (responses)
 *   bits 1-2  responses: the method of the request they answer
 *             (GET, HEAD, CONNECT, other), so HEAD/CONNECT framing is reached
 *   bits 3-7  body bytes are fed in pieces of 1..32 bytes
 * The bytes are read as up to MAX_MESSAGES messages on one connection (keep-
 * alive, pipelining, interim 1xx answers), with one reader and one message
 * reused as a session reuses them. Seeds: tests/fuzz/corpus/fuzz_http/
 * (tests/fuzz/make_corpus.py).
 *
 * Checked beyond "no crash": a forwarded head (http_hdr_write_*) parses again
 * with the same framing; body pieces lie inside the bytes fed; the decoder
 * consumes no more than it is given and stops early only at the end of the
 * message; a Content-Length body delivers exactly that many bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http.h"
#include "http_hdr.h"
#include "fuzz_check.h"

/*
 * The product defaults, as in src/config.c LIMIT_TABLE (header_bytes,
 * header_fields, uri_bytes). Hard-coded until include/ has a shared constant:
 * keep them in step with config.c.
 */
static const struct http_limits LIM = {
    .header_bytes = 16384,
    .header_fields = 100,
    .uri_bytes = 8192,
};

#define MAX_MESSAGES 8

static const enum http_verb METHODS[4] = {HTTP_METHOD_GET, HTTP_METHOD_HEAD, HTTP_METHOD_CONNECT,
					  HTTP_METHOD_OTHER};

struct sink {
	const char *lo, *hi; /* the piece being fed */
	uint64_t total;
	unsigned sum;
};

static void sink(void *arg, const char *data, size_t len)
{
	struct sink *s = arg;
	CHECK(len > 0 ? data >= s->lo && data + len <= s->hi : 1);
	for (size_t i = 0; i < len; i++) /* touch every byte: ASan checks the range */
		s->sum += (unsigned char)data[i];
	s->total += len;
}

/* The forwarded head must be a head the next hop reads with the same framing. */
static void check_forwarded(const struct http_msg *msg, enum http_verb method, bool chunked)
{
	struct evbuffer *out = evbuffer_new();
	if (out == NULL)
		return;
	struct http_hdr_opts o = {.via = "switchyard",
				  .client_ip = "10.0.0.1",
				  .proto = "http",
				  .connection = msg->keep_alive ? NULL : "close",
				  .chunked = chunked};
	int rc = msg->kind == HTTP_MSG_REQUEST ? http_hdr_write_request(msg, &o, out)
					       : http_hdr_write_response(msg, &o, out);
	size_t len = evbuffer_get_length(out);
	const char *head = (const char *)evbuffer_pullup(out, -1);
	if (rc == 0 && head != NULL) {
		/* what the proxy adds may exceed the limits it applies to input */
		struct http_limits big = {len + 1, msg->n_headers + 16, LIM.uri_bytes};
		struct http_error err;
		size_t head_len = 0;
		enum http_scan_result sr =
		    http_head_scan(msg->kind, head, len, &big, &head_len, &err);
		CHECK(sr == HTTP_SCAN_DONE && head_len == len);
		struct http_msg again;
		struct http_reader *r = http_reader_new(msg->kind);
		http_msg_init(&again, msg->kind);
		if (r != NULL) {
			CHECK(http_reader_head(r, &again, head, len, method, &big, &err) == 0);
			CHECK(again.body == msg->body || (chunked && msg->body == HTTP_BODY_CLOSE &&
							  again.body == HTTP_BODY_CHUNKED));
			CHECK(again.body != HTTP_BODY_LENGTH ||
			      again.content_length == msg->content_length);
			if (msg->kind == HTTP_MSG_REQUEST)
				CHECK(again.method == msg->method &&
				      again.target_len == msg->target_len &&
				      memcmp(again.target, msg->target, msg->target_len) == 0);
			else
				CHECK(again.status == msg->status);
		}
		http_msg_fini(&again);
		http_reader_free(r);
	}
	evbuffer_free(out);
}

/* Decode the body in pieces; false when the connection cannot go on. */
static bool feed_body(struct http_reader *r, const struct http_msg *msg, const char **buf,
		      size_t *left, size_t piece_max)
{
	struct sink s = {0};
	bool done = http_reader_done(r);
	while (*left > 0 && !done) {
		size_t piece = *left < piece_max ? *left : piece_max;
		s.lo = *buf;
		s.hi = *buf + piece;
		ssize_t n = http_reader_body(r, *buf, piece, sink, &s, &done);
		if (n < 0)
			return false;
		CHECK((size_t)n <= piece);
		CHECK((size_t)n == piece || done);
		*buf += n;
		*left -= (size_t)n;
	}
	if (!done) { /* the peer closed */
		s.lo = s.hi = NULL;
		if (http_reader_body(r, NULL, 0, sink, &s, &done) < 0)
			return false;
		CHECK(done);
		return false;
	}
	CHECK(msg->body != HTTP_BODY_LENGTH || s.total == msg->content_length);
	return true;
}

static void fuzz_conn(enum http_msg_kind kind, enum http_verb method, size_t piece_max,
		      const char *buf, size_t len)
{
	struct http_reader *r = http_reader_new(kind);
	struct http_msg msg;
	if (r == NULL)
		return;
	http_msg_init(&msg, kind);
	/* a session parses requests without a request method, as here */
	enum http_verb verb = kind == HTTP_MSG_RESPONSE ? method : HTTP_METHOD_OTHER;
	for (int i = 0; i < MAX_MESSAGES && len > 0; i++) {
		struct http_error err = {0, NULL};
		size_t head_len = 0;
		/* a session never offers more than header_bytes + 1 bytes to the scanner */
		size_t scan = len < LIM.header_bytes + 1 ? len : LIM.header_bytes + 1;
		enum http_scan_result sr = http_head_scan(kind, buf, scan, &LIM, &head_len, &err);
		if (sr == HTTP_SCAN_ERROR)
			CHECK(err.status >= 400 && err.status <= 599 && err.reason != NULL);
		if (sr != HTTP_SCAN_DONE)
			break;
		CHECK(head_len > 0 && head_len <= scan && head_len <= LIM.header_bytes);
		if (http_reader_head(r, &msg, buf, head_len, verb, &LIM, &err) < 0) {
			CHECK(err.status >= 400 && err.status <= 599 && err.reason != NULL);
			break;
		}
		CHECK(msg.n_headers <= LIM.header_fields);
		/* as a session: chunked out when the length is open (responses to 1.1 clients) */
		bool open_ended = msg.body == HTTP_BODY_CHUNKED ||
				  (kind == HTTP_MSG_RESPONSE && msg.body == HTTP_BODY_CLOSE);
		check_forwarded(&msg, verb, open_ended);
		buf += head_len;
		len -= head_len;
		if (kind == HTTP_MSG_RESPONSE && msg.status == 101)
			break; /* a tunnel from here on */
		if (!feed_body(r, &msg, &buf, &len, piece_max))
			break;
	}
	http_msg_fini(&msg);
	http_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	enum http_msg_kind kind = data[0] & 1 ? HTTP_MSG_RESPONSE : HTTP_MSG_REQUEST;
	enum http_verb method = METHODS[(data[0] >> 1) & 3];
	size_t piece_max = (size_t)(data[0] >> 3) + 1;
	/* libFuzzer's buffer ends exactly at size: ASan sees any read past the end */
	fuzz_conn(kind, method, piece_max, (const char *)data + 1, size - 1);
	return 0;
}
