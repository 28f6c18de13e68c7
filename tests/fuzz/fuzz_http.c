/*
 * libFuzzer driver for the HTTP head scanner, head parser, header rewrite and
 * body decoder: any input must end in a clean accept or a clean error.
 * Build and run: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#include "http.h"
#include "http_hdr.h"

static void sink(void *arg, const char *data, size_t len)
{
	(void)arg;
	(void)data;
	(void)len;
}

static void fuzz_one(enum http_msg_kind kind, const char *buf, size_t len)
{
	struct http_limits lim = {.header_bytes = 4096, .header_fields = 50, .uri_bytes = 1024};
	struct http_error err;
	size_t head_len = 0;
	if (http_head_scan(kind, buf, len, &lim, &head_len, &err) != HTTP_SCAN_DONE)
		return;
	struct http_msg msg;
	struct http_reader *r = http_reader_new(kind);
	http_msg_init(&msg, kind);
	if (http_reader_head(r, &msg, buf, head_len, HTTP_METHOD_GET, &lim, &err) == 0) {
		struct evbuffer *out = evbuffer_new();
		struct http_hdr_opts o = {.via = "switchyard", .client_ip = "10.0.0.1", .proto = "http"};
		if (kind == HTTP_MSG_REQUEST)
			http_hdr_write_request(&msg, &o, out);
		else
			http_hdr_write_response(&msg, &o, out);
		evbuffer_free(out);
		bool done = false;
		const char *body = buf + head_len;
		size_t left = len - head_len;
		while (left > 0 && !done) { /* feed in small pieces to cross every boundary */
			size_t piece = left < 7 ? left : 7;
			ssize_t n = http_reader_body(r, body, piece, sink, NULL, &done);
			if (n < 0)
				break;
			body += n;
			left -= (size_t)n;
			if (n == 0 && !done)
				break;
		}
		if (!done)
			http_reader_body(r, NULL, 0, sink, NULL, &done);
	}
	http_msg_fini(&msg);
	http_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	/* the first byte picks the side, the rest is the message */
	enum http_msg_kind kind = data[0] & 1 ? HTTP_MSG_RESPONSE : HTTP_MSG_REQUEST;
	fuzz_one(kind, (const char *)data + 1, size - 1);
	return 0;
}
