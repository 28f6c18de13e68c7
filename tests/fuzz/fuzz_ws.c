/*
 * libFuzzer driver for the RFC 6455 frame decoder: arbitrary bytes, fed in
 * pieces whose sizes come from the input, must decode or fail cleanly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

static void on_data(void *arg, enum ws_opcode op, const uint8_t *d, size_t n, bool last)
{
	(void)arg, (void)op, (void)d, (void)n, (void)last;
}

static void on_ctl(void *arg, const uint8_t *d, size_t n)
{
	(void)arg, (void)d, (void)n;
}

static void on_close(void *arg, uint16_t code, const uint8_t *r, size_t n)
{
	(void)arg, (void)code, (void)r, (void)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct ws_callbacks cb = {on_data, on_ctl, on_ctl, on_close};
	if (size < 2)
		return 0;
	struct ws_reader r;
	ws_reader_init(&r, data[0] & 1, data[0] & 2 ? 1000 : 0);
	size_t piece = (size_t)data[1] % 17 + 1;
	uint8_t *copy = malloc(size - 2 + 1); /* the decoder unmasks in place */
	if (copy == NULL)
		return 0;
	memcpy(copy, data + 2, size - 2);
	for (size_t off = 0; off < size - 2;) {
		size_t n = size - 2 - off < piece ? size - 2 - off : piece;
		uint16_t code;
		const char *why;
		ssize_t used = ws_reader_feed(&r, copy + off, n, &cb, NULL, &code, &why);
		if (used <= 0)
			break;
		off += (size_t)used;
	}
	free(copy);
	return 0;
}
