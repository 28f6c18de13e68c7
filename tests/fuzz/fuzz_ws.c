/*
 * libFuzzer driver for the RFC 6455 frame decoder: arbitrary bytes, fed in
 * pieces whose sizes come from the input, must decode or fail cleanly, and the
 * events must keep the decoder's promises.
 *
 * Input: two control bytes, then frame bytes.
 *   byte 0, bit 0     frames must be masked (a server reading a client)
 *   byte 0, bits 1-3  max_message, from MAX_MESSAGE below
 *   byte 1            the bytes are fed in pieces of 1..17 bytes (% 17 + 1)
 * Seeds: tests/fuzz/corpus/fuzz_ws/ (tests/fuzz/make_corpus.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"
#include "fuzz_check.h"

/* [0] is the product default, CONFIG_MAX_MESSAGE_DEFAULT in src/config.c (1 MiB);
 * 0 is unlimited; the rest are small enough for short inputs to cross. */
static const uint64_t MAX_MESSAGE[8] = {1024 * 1024, 0, 5, 125, 255, 256, 1000, 65536};

struct state {
	const uint8_t *lo, *hi; /* the piece being fed */
	uint64_t max;
	int msg_op; /* opcode of the message in progress, -1 between messages */
	uint64_t msg_len;
	unsigned sum;
	bool closed;
};

static void touch(struct state *s, const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++) /* ASan checks every byte handed out */
		s->sum += d[i];
}

static void on_data(void *arg, enum ws_opcode op, const uint8_t *d, size_t n, bool last)
{
	struct state *s = arg;
	CHECK(!s->closed);
	CHECK(op == WS_OP_TEXT || op == WS_OP_BINARY);
	CHECK(s->msg_op < 0 || s->msg_op == (int)op);
	CHECK(n > 0 || last);
	CHECK(n == 0 || (d >= s->lo && d + n <= s->hi)); /* payload is unmasked in place */
	touch(s, d, n);
	s->msg_op = (int)op;
	s->msg_len += n;
	CHECK(s->max == 0 || s->msg_len <= s->max);
	if (last) {
		s->msg_op = -1;
		s->msg_len = 0;
	}
}

static void on_ctl(void *arg, const uint8_t *d, size_t n)
{
	struct state *s = arg;
	CHECK(!s->closed);
	CHECK(n <= WS_MAX_CONTROL);
	CHECK(n == 0 || d != NULL);
	touch(s, d, n);
}

static void on_close(void *arg, uint16_t code, const uint8_t *r, size_t n)
{
	struct state *s = arg;
	CHECK(!s->closed);
	CHECK(code == 1005 ? n == 0 : ws_close_code_valid(code));
	CHECK(n <= WS_MAX_CONTROL - 2);
	CHECK(n == 0 || r != NULL);
	touch(s, r, n);
	s->closed = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct ws_callbacks cb = {on_data, on_ctl, on_ctl, on_close};
	if (size < 2)
		return 0;
	struct ws_reader r;
	struct state st = {.max = MAX_MESSAGE[(data[0] >> 1) & 7], .msg_op = -1};
	ws_reader_init(&r, data[0] & 1, st.max);
	size_t piece = (size_t)data[1] % 17 + 1;
	size_t len = size - 2;
	uint8_t *copy = malloc(len ? len : 1); /* the decoder unmasks in place */
	if (copy == NULL)
		return 0;
	memcpy(copy, data + 2, len);
	bool finished = false; /* a close or a violation: nothing more is read */
	for (size_t off = 0; off < len;) {
		size_t n = len - off < piece ? len - off : piece;
		uint16_t code = 0;
		const char *why = NULL;
		st.lo = copy + off;
		st.hi = copy + off + n;
		ssize_t used = ws_reader_feed(&r, copy + off, n, &cb, &st, &code, &why);
		if (finished) {
			CHECK(used == 0);
			break;
		}
		if (used < 0) {
			CHECK(code == WS_CLOSE_PROTOCOL || code == WS_CLOSE_INVALID_DATA ||
			      code == WS_CLOSE_TOO_BIG);
			CHECK(why != NULL);
			finished = true;
			off += n; /* one more feed: it must take nothing */
			continue;
		}
		CHECK((size_t)used <= n);
		CHECK((size_t)used == n || st.closed);
		if (st.closed) {
			finished = true;
			off += (size_t)used;
			if (off >= len) /* still check that a closed reader takes nothing */
				CHECK(ws_reader_feed(&r, copy, 0, &cb, &st, &code, &why) == 0);
			continue;
		}
		off += n;
	}
	free(copy);
	return 0;
}
