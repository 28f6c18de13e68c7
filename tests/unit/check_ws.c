/*
 * check_ws: the RFC 6455 frame codec against tables of wire bytes.
 *
 * Every decode case is fed whole, split in two at every byte boundary and one
 * byte at a time; each way must give the same events, the same verdict and
 * the same byte count, because a TCP peer can cut frames anywhere. Feeding a
 * byte at a time also pins where a violation is reported: at the first byte
 * that proves it, not later. Frames are built by a small encoder local to
 * this file so that decoder tests do not depend on ws_frame_header().
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* A byte-string literal as (pointer, length); NULs inside are kept. */
#define W(s) (const uint8_t *)(s), sizeof(s) - 1

#define X5 "xxxxx"
#define X25 X5 X5 X5 X5 X5
#define X123 X25 X25 X25 X25 X5 X5 X5 X5 "xxx"
#define X125 X123 "xx"
#define X126 X125 "x"

#define MIB (1024 * 1024)

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d}; /* the RFC's example key */

/* ---- recorder: callbacks write a one-line event log ------------------- */

struct rec {
	char log[2048];
	size_t log_len;
	uint8_t *msg; /* the data message in progress, or the last one completed */
	size_t msg_len, msg_cap;
	size_t pieces; /* on_data calls */
	int msg_op;    /* opcode of the message in progress, -1 between messages */
	bool broken;   /* a callback contract was broken */
};

static void rec_log(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_log(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(r->log) - r->log_len;

	va_start(ap, fmt);
	int n = vsnprintf(r->log + r->log_len, room, fmt, ap);
	va_end(ap);
	ck_assert_msg(n >= 0 && (size_t)n < room, "event log overflow");
	r->log_len += (size_t)n;
}

/* Short payloads are logged as text, long ones by length only. */
static void rec_bytes(struct rec *r, const char *tag, const uint8_t *p, size_t len)
{
	if (len > 64)
		rec_log(r, "%s[%zu];", tag, len);
	else
		rec_log(r, "%s:%.*s;", tag, (int)len, (const char *)p);
}

static void rec_append(struct rec *r, const uint8_t *p, size_t len)
{
	if (len == 0)
		return;
	if (r->msg_len + len > r->msg_cap) {
		size_t cap = r->msg_cap ? r->msg_cap : 256;
		while (cap < r->msg_len + len)
			cap *= 2;
		r->msg = realloc(r->msg, cap);
		ck_assert_ptr_nonnull(r->msg);
		r->msg_cap = cap;
	}
	memcpy(r->msg + r->msg_len, p, len);
	r->msg_len += len;
}

static void on_data(void *arg, enum ws_opcode op, const uint8_t *data, size_t len, bool last)
{
	struct rec *r = arg;

	if (r->msg_op < 0) {
		r->msg_op = (int)op;
		r->msg_len = 0;
	}
	if (r->msg_op != (int)op || (op != WS_OP_TEXT && op != WS_OP_BINARY) || (len == 0 && !last))
		r->broken = true;
	r->pieces++;
	rec_append(r, data, len);
	if (last) {
		rec_bytes(r, op == WS_OP_TEXT ? "T" : "B", r->msg, r->msg_len);
		r->msg_op = -1;
	}
}

static void on_ping(void *arg, const uint8_t *data, size_t len)
{
	rec_bytes(arg, "PING", data, len);
}

static void on_pong(void *arg, const uint8_t *data, size_t len)
{
	rec_bytes(arg, "PONG", data, len);
}

static void on_close(void *arg, uint16_t code, const uint8_t *reason, size_t len)
{
	struct rec *r = arg;

	if (len > 0 && reason == NULL)
		r->broken = true;
	rec_log(r, "CLOSE:%u:%.*s;", code, (int)len, reason ? (const char *)reason : "");
}

static const struct ws_callbacks CB = {on_data, on_ping, on_pong, on_close};

/* ---- feeding ---------------------------------------------------------- */

struct run {
	struct rec rec;
	ssize_t consumed; /* total over all feeds, or -1 after a violation */
	uint16_t code;
	const char *reason;
	size_t err_at; /* bytes handed to the reader when the violation was reported */
	bool overfed;  /* a feed consumed more than it was given, or anything after a close */
};

/*
 * Decode a copy of wire (payloads are unmasked in place): a first piece of
 * FIRST bytes, then pieces of STEP bytes (0 = the rest at once). Once the
 * reader has seen a close, every later feed must consume nothing.
 */
static void run_feed(struct run *out, const uint8_t *wire, size_t len, bool require_mask,
		     uint64_t max, size_t first, size_t step)
{
	uint8_t *buf = malloc(len ? len : 1);
	struct ws_reader rd;
	size_t off = 0, piece = first;

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, wire, len);
	memset(out, 0, sizeof(*out));
	out->rec.msg_op = -1;
	ws_reader_init(&rd, require_mask, max);
	for (;;) {
		if (piece > len - off)
			piece = len - off;
		bool was_closed = rd.closed;
		size_t log_len = out->rec.log_len;
		ssize_t rc =
		    ws_reader_feed(&rd, buf + off, piece, &CB, &out->rec, &out->code, &out->reason);
		if (rc < 0) {
			out->consumed = -1;
			out->err_at = off + piece;
			break;
		}
		/* Flags, not assertions: Check marks a point per assertion, which is
		 * slow a million times over. */
		if ((size_t)rc > piece || ((size_t)rc < piece && !rd.closed))
			out->overfed = true;
		if (was_closed && (rc != 0 || out->rec.log_len != log_len))
			out->overfed = true;
		out->consumed += rc;
		off += piece;
		if (off >= len)
			break;
		piece = step ? step : len - off;
	}
	free(buf);
}

static void run_free(struct run *r)
{
	free(r->rec.msg);
	r->rec.msg = NULL;
}

struct expect {
	const char *events;
	uint16_t code; /* 0: no violation */
	const char *reason;
	ssize_t consumed;
	size_t err_at; /* checked when feeding byte by byte; 0 = not checked */
};

static void expect_run(const struct run *got, const struct expect *want, const char *name,
		       const char *how, size_t k)
{
	ck_assert_msg(!got->rec.broken, "%s (%s %zu): callback contract broken", name, how, k);
	ck_assert_msg(!got->overfed, "%s (%s %zu): feed return values wrong", name, how, k);
	ck_assert_msg(strcmp(got->rec.log, want->events) == 0,
		      "%s (%s %zu): events '%s', want '%s'", name, how, k, got->rec.log,
		      want->events);
	ck_assert_msg(got->consumed == want->consumed, "%s (%s %zu): consumed %zd, want %zd", name,
		      how, k, got->consumed, want->consumed);
	ck_assert_msg(got->code == want->code, "%s (%s %zu): code %u, want %u", name, how, k,
		      got->code, want->code);
	if (want->reason != NULL)
		ck_assert_msg(got->reason != NULL && strcmp(got->reason, want->reason) == 0,
			      "%s (%s %zu): reason '%s', want '%s'", name, how, k,
			      got->reason ? got->reason : "(null)", want->reason);
}

/* Large inputs are split near both ends and at a stride, not everywhere. */
static bool split_wanted(size_t k, size_t len)
{
	return len <= 4096 || k < 32 || k + 32 > len || k % 4099 == 0;
}

/* Whole, split in two at every boundary, and byte by byte: all must agree. */
static void check_every_split(const uint8_t *wire, size_t len, bool require_mask, uint64_t max,
			      const struct expect *want, const char *name)
{
	struct run got;

	run_feed(&got, wire, len, require_mask, max, len, 0);
	ck_assert(!got.overfed);
	expect_run(&got, want, name, "whole", len);
	run_free(&got);
	for (size_t k = 0; k <= len; k++) {
		if (!split_wanted(k, len))
			continue;
		run_feed(&got, wire, len, require_mask, max, k, 0);
		ck_assert(!got.overfed);
		expect_run(&got, want, name, "split at", k);
		run_free(&got);
	}
	run_feed(&got, wire, len, require_mask, max, 1, 1);
	ck_assert(!got.overfed);
	expect_run(&got, want, name, "bytewise", 1);
	if (want->err_at != 0)
		ck_assert_msg(got.err_at == want->err_at,
			      "%s: violation reported after %zu bytes, "
			      "want %zu",
			      name, got.err_at, want->err_at);
	run_free(&got);
}

/* Test-local encoder: minimal lengths, optional mask. Returns bytes written. */
static size_t put_frame(uint8_t *out, uint8_t b0, const uint8_t *mask, const uint8_t *p, size_t len)
{
	uint8_t mbit = mask ? 0x80 : 0;
	size_t n = 0;

	out[n++] = b0;
	if (len < 126) {
		out[n++] = (uint8_t)(mbit | len);
	} else if (len < 65536) {
		out[n++] = mbit | 126;
		out[n++] = (uint8_t)(len >> 8);
		out[n++] = (uint8_t)len;
	} else {
		out[n++] = mbit | 127;
		for (int i = 7; i >= 0; i--)
			out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	if (mask != NULL) {
		memcpy(out + n, mask, 4);
		n += 4;
	}
	for (size_t i = 0; i < len; i++)
		out[n + i] = p[i] ^ (mask ? mask[i & 3] : 0);
	return n + len;
}

/* ---- raw wire cases --------------------------------------------------- */

struct raw_case {
	const char *name;
	const uint8_t *wire;
	size_t len;
	bool require_mask;
	uint64_t max;
	uint16_t code;
	const char *reason;
	const char *events;
	size_t tail;   /* bytes left unconsumed after a close */
	size_t err_at; /* see struct expect */
};

#define RFC_MASKED_HELLO "\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
#define UNMASKED "unmasked client frame"
#define NONMIN "length not minimally encoded"
#define HIGHBIT "64-bit length with the high bit set"

static const struct raw_case RAW_CASES[] = {
    /* RFC 6455 §5.7, read as a client (no mask required) and as a server */
    {"rfc unmasked text", W("\x81\x05Hello"), false, 0, 0, NULL, "T:Hello;", 0, 0},
    {"rfc unmasked text at a server", W("\x81\x05Hello"), true, 0, 1002, UNMASKED, "", 0, 2},
    {"rfc masked text at a server", W("\x81" RFC_MASKED_HELLO), true, 0, 0, NULL, "T:Hello;", 0, 0},
    {"rfc masked text at a client", W("\x81" RFC_MASKED_HELLO), false, 0, 0, NULL, "T:Hello;", 0,
     0},
    {"rfc fragmented unmasked text", W("\x01\x03Hel\x80\x02lo"), false, 0, 0, NULL, "T:Hello;", 0,
     0},
    {"rfc fragmented unmasked text at a server", W("\x01\x03Hel\x80\x02lo"), true, 0, 1002,
     UNMASKED, "", 0, 2},
    {"rfc unmasked ping", W("\x89\x05Hello"), false, 0, 0, NULL, "PING:Hello;", 0, 0},
    {"rfc unmasked ping at a server", W("\x89\x05Hello"), true, 0, 1002, UNMASKED, "", 0, 2},
    {"rfc masked pong at a server", W("\x8a" RFC_MASKED_HELLO), true, 0, 0, NULL, "PONG:Hello;", 0,
     0},
    {"rfc masked pong at a client", W("\x8a" RFC_MASKED_HELLO), false, 0, 0, NULL, "PONG:Hello;", 0,
     0},
    /* a masked first frame does not excuse an unmasked continuation */
    {"unmasked continuation at a server", W("\x01\x83\x37\xfa\x21\x3d\x7f\x9f\x4d\x80\x02lo"), true,
     0, 1002, UNMASKED, "", 0, 11},

    /* lengths must use the fewest bytes; 64-bit lengths have the top bit clear */
    {"16-bit length 125", W("\x82\x7e\x00\x7d"), false, 0, 1002, NONMIN, "", 0, 4},
    {"16-bit length 0", W("\x82\x7e\x00\x00"), false, 0, 1002, NONMIN, "", 0, 4},
    {"16-bit length 125 masked", W("\x82\xfe\x00\x7d\x37\xfa\x21\x3d"), true, 0, 1002, NONMIN, "",
     0, 8},
    {"64-bit length 65535", W("\x82\x7f\x00\x00\x00\x00\x00\x00\xff\xff"), false, 0, 1002, NONMIN,
     "", 0, 10},
    {"64-bit length 5", W("\x81\x7f\x00\x00\x00\x00\x00\x00\x00\x05"), false, 0, 1002, NONMIN, "",
     0, 10},
    {"64-bit length 0", W("\x81\x7f\x00\x00\x00\x00\x00\x00\x00\x00"), false, 0, 1002, NONMIN, "",
     0, 10},
    {"64-bit length 2^63", W("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00"), false, 0, 1002, HIGHBIT,
     "", 0, 10},
    {"64-bit length all ones", W("\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff"), false, 0, 1002,
     HIGHBIT, "", 0, 10},
    {"16-bit length 126 is minimal", W("\x82\x7e\x00\x7e"), false, 0, 0, NULL, "", 0, 0},
    {"64-bit length 65536 is minimal", W("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"), false, 0, 0,
     NULL, "", 0, 0},
    {"64-bit length 2^63-1 is minimal", W("\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"), false, 0, 0,
     NULL, "", 0, 0},

    /* control frames: at most 125 bytes, so never an extended length */
    {"ping with a 16-bit length", W("\x89\x7e\x00\x05"), false, 0, 1002, "control frame too long",
     "", 0, 2},
    {"close with a 64-bit length", W("\x88\x7f\x00\x00\x00\x00\x00\x00\x00\x05"), false, 0, 1002,
     "control frame too long", "", 0, 2},

    /* max_message is enforced on the announced length, before any payload */
    {"64-bit length over max_message", W("\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00"), false, MIB,
     1009, "message too big", "", 0, 10},
    {"16-bit length over max_message", W("\x82\x7e\x01\x00"), false, 255, 1009, "message too big",
     "", 0, 4},
    {"16-bit length at max_message", W("\x82\x7e\x01\x00"), false, 256, 0, NULL, "", 0, 0},
    {"masked length over max_message", W("\x81\x86\x37\xfa\x21\x3d"), true, 5, 1009,
     "message too big", "", 0, 6},

    /* partial input is consumed and kept */
    {"empty input", W(""), false, 0, 0, NULL, "", 0, 0},
    {"one header byte", W("\x81"), false, 0, 0, NULL, "", 0, 0},
    {"masked header without payload", W("\x81\x85\x37\xfa\x21\x3d"), true, 0, 0, NULL, "", 0, 0},
    {"part of a masked payload", W("\x81\x85\x37\xfa\x21\x3d\x7f\x9f"), true, 0, 0, NULL, "", 0, 0},

    /* nothing after a close frame is read */
    {"close then garbage", W("\x88\x02\x03\xe8\xff\xff\xff"), false, 0, 0, NULL, "CLOSE:1000:;", 3,
     0},
    {"close then a frame", W("\x88\x00\x81\x05Hello"), false, 0, 0, NULL, "CLOSE:1005:;", 7, 0},
    {"close inside a fragmented message", W("\x01\x02He\x88\x00\x80\x03llo"), false, 0, 0, NULL,
     "CLOSE:1005:;", 5, 0},
};

START_TEST(test_raw)
{
	const struct raw_case *c = &RAW_CASES[_i];
	struct expect want = {c->events, c->code, c->reason,
			      c->code ? -1 : (ssize_t)(c->len - c->tail), c->err_at};

	check_every_split(c->wire, c->len, c->require_mask, c->max, &want, c->name);
}
END_TEST

/* ---- frame scripts, run unmasked, masked at a server, masked at a client */

struct fr {
	uint8_t b0;
	const char *p; /* NULL ends the script */
	size_t len;
};
#define F(b0, s)                                                                                   \
	{                                                                                          \
		b0, s, sizeof(s) - 1                                                               \
	}

struct script_case {
	const char *name;
	struct fr f[6];
	uint64_t max;
	uint16_t code;
	const char *reason;
	const char *events;
};

#define UTF8 "invalid UTF-8 in text message"
#define UTF8_END "text message ends inside a UTF-8 character"
#define PROTO_RSV "reserved bits set"

static const struct script_case SCRIPTS[] = {
    {"text", {F(0x81, "Hello")}, 0, 0, NULL, "T:Hello;"},
    {"binary", {F(0x82, "abc")}, 0, 0, NULL, "B:abc;"},
    {"empty text", {F(0x81, "")}, 0, 0, NULL, "T:;"},
    {"empty binary", {F(0x82, "")}, 0, 0, NULL, "B:;"},
    {"two messages", {F(0x81, "a"), F(0x82, "b"), F(0x81, "c")}, 0, 0, NULL, "T:a;B:b;T:c;"},
    {"three fragments", {F(0x01, "Hel"), F(0x00, "l"), F(0x80, "o")}, 0, 0, NULL, "T:Hello;"},
    {"binary fragments", {F(0x02, "ab"), F(0x80, "cd")}, 0, 0, NULL, "B:abcd;"},
    {"empty fragments", {F(0x01, ""), F(0x00, ""), F(0x80, "")}, 0, 0, NULL, "T:;"},
    {"empty last fragment", {F(0x01, "Hello"), F(0x80, "")}, 0, 0, NULL, "T:Hello;"},
    {"controls inside a message",
     {F(0x01, "Hel"), F(0x89, "p"), F(0x00, "l"), F(0x8a, "q"), F(0x80, "o")},
     0,
     0,
     NULL,
     "PING:p;PONG:q;T:Hello;"},
    {"empty ping and pong", {F(0x89, ""), F(0x8a, "")}, 0, 0, NULL, "PING:;PONG:;"},
    {"ping of 125 bytes", {F(0x89, X125)}, 0, 0, NULL, "PING[125];"},
    {"ping of 126 bytes", {F(0x89, X126)}, 0, 1002, "control frame too long", ""},
    {"pong of 126 bytes", {F(0x8a, X126)}, 0, 1002, "control frame too long", ""},
    {"binary of 126 bytes", {F(0x82, X126)}, 0, 0, NULL, "B[126];"},

    /* fragmentation rules */
    {"fragmented ping", {F(0x09, "x")}, 0, 1002, "fragmented control frame", ""},
    {"fragmented pong", {F(0x0a, "")}, 0, 1002, "fragmented control frame", ""},
    {"fragmented close", {F(0x08, "\x03\xe8")}, 0, 1002, "fragmented control frame", ""},
    {"fragmented ping in a message",
     {F(0x01, "a"), F(0x09, "")},
     0,
     1002,
     "fragmented control frame",
     ""},
    {"final continuation alone", {F(0x80, "a")}, 0, 1002, "continuation without a message", ""},
    {"continuation alone", {F(0x00, "a")}, 0, 1002, "continuation without a message", ""},
    {"continuation after a whole message",
     {F(0x81, "a"), F(0x80, "b")},
     0,
     1002,
     "continuation without a message",
     "T:a;"},
    {"text inside a text message",
     {F(0x01, "a"), F(0x81, "b")},
     0,
     1002,
     "new message inside a fragmented message",
     ""},
    {"text inside a binary message",
     {F(0x02, "a"), F(0x01, "b")},
     0,
     1002,
     "new message inside a fragmented message",
     ""},
    {"binary inside a text message",
     {F(0x01, "a"), F(0x89, ""), F(0x82, "b")},
     0,
     1002,
     "new message inside a fragmented message",
     "PING:;"},

    /* reserved bits: no extension is ever negotiated */
    {"rsv1", {F(0xc1, "a")}, 0, 1002, PROTO_RSV, ""},
    {"rsv2", {F(0xa1, "a")}, 0, 1002, PROTO_RSV, ""},
    {"rsv3", {F(0x91, "a")}, 0, 1002, PROTO_RSV, ""},
    {"all rsv", {F(0xf2, "a")}, 0, 1002, PROTO_RSV, ""},
    {"rsv1 on a continuation", {F(0x01, "a"), F(0xc0, "b")}, 0, 1002, PROTO_RSV, ""},
    {"rsv1 on a ping", {F(0x81, "a"), F(0xc9, "")}, 0, 1002, PROTO_RSV, "T:a;"},

    /* UTF-8 in text: checked across fragments, binary is never checked */
    {"euro split over fragments",
     {F(0x01, "a\xe2"), F(0x00, "\x82"),
      F(0x80, "\xac"
	      "b")},
     0,
     0,
     NULL,
     "T:a\xe2\x82\xac"
     "b;"},
    {"4-byte char split with a ping",
     {F(0x01, "\xf0"), F(0x00, "\x9d"), F(0x89, "x"), F(0x00, "\x84"), F(0x80, "\x9e")},
     0,
     0,
     NULL,
     "PING:x;T:\xf0\x9d\x84\x9e;"},
    {"binary is not UTF-8 checked", {F(0x82, "\xff\xfe\xc0")}, 0, 0, NULL, "B:\xff\xfe\xc0;"},
    {"invalid byte", {F(0x81, "ab\xff")}, 0, 1007, UTF8, ""},
    {"overlong slash", {F(0x81, "\xc0\xaf")}, 0, 1007, UTF8, ""},
    {"overlong 3-byte", {F(0x81, "\xe0\x80\xaf")}, 0, 1007, UTF8, ""},
    {"surrogate", {F(0x81, "\xed\xa0\x80")}, 0, 1007, UTF8, ""},
    {"above U+10FFFF", {F(0x81, "\xf4\x90\x80\x80")}, 0, 1007, UTF8, ""},
    {"second fragment ends inside a character",
     {F(0x01, "\xce\xba"), F(0x80, "\xe1\xbd")},
     0,
     1007,
     UTF8_END,
     ""},
    {"ends inside a character", {F(0x81, "a\xe2\x82")}, 0, 1007, UTF8_END, ""},
    {"ends inside a character, empty last fragment",
     {F(0x01, "a\xe2"), F(0x80, "")},
     0,
     1007,
     UTF8_END,
     ""},
    {"lead byte then new lead across fragments",
     {F(0x01, "\xe2"), F(0x80, "\xe2\x82\xac")},
     0,
     1007,
     UTF8,
     ""},
    {"each message starts fresh", {F(0x82, "\xe2"), F(0x81, "\x82\xac")}, 0, 1007, UTF8, "B:\xe2;"},

    /* close frames */
    {"close without payload", {F(0x88, "")}, 0, 0, NULL, "CLOSE:1005:;"},
    {"close 1000", {F(0x88, "\x03\xe8")}, 0, 0, NULL, "CLOSE:1000:;"},
    {"close with a reason",
     {F(0x88, "\x03\xe8"
	      "bye")},
     0,
     0,
     NULL,
     "CLOSE:1000:bye;"},
    {"close with a UTF-8 reason",
     {F(0x88, "\x0f\xa0\xe2\x82\xac")},
     0,
     0,
     NULL,
     "CLOSE:4000:\xe2\x82\xac;"},
    {"close with a 123-byte reason",
     {F(0x88, "\x03\xe8" X123)},
     0,
     0,
     NULL,
     "CLOSE:1000:" X123 ";"},
    {"close with a 124-byte reason",
     {F(0x88, "\x03\xe8" X123 "x")},
     0,
     1002,
     "control frame too long",
     ""},
    {"close with 1 byte", {F(0x88, "\x03")}, 0, 1002, "close frame with a 1-byte payload", ""},
    {"close with code 1005", {F(0x88, "\x03\xed")}, 0, 1002, "invalid close code", ""},
    {"close reason invalid", {F(0x88, "\x03\xe8\xff")}, 0, 1007, "close reason not UTF-8", ""},
    {"close reason cut mid-character",
     {F(0x88, "\x03\xe8\xe2\x82")},
     0,
     1007,
     "close reason not UTF-8",
     ""},
    {"close reason surrogate",
     {F(0x88, "\x03\xe8\xed\xbf\xbf")},
     0,
     1007,
     "close reason not UTF-8",
     ""},
    {"frames after close are not read",
     {F(0x81, "a"), F(0x88, "\x03\xe9"), F(0x81, "b"), F(0xff, "")},
     0,
     0,
     NULL,
     "T:a;CLOSE:1001:;"},
    {"close between fragments",
     {F(0x01, "a"), F(0x88, ""), F(0x80, "b")},
     0,
     0,
     NULL,
     "CLOSE:1005:;"},

    /* max_message: whole messages, across fragments, controls not counted */
    {"max: exactly at the limit", {F(0x81, "Hello")}, 5, 0, NULL, "T:Hello;"},
    {"max: one over", {F(0x81, "Hello!")}, 5, 1009, "message too big", ""},
    {"max: fragments at the limit",
     {F(0x01, "He"), F(0x00, "l"), F(0x80, "lo")},
     5,
     0,
     NULL,
     "T:Hello;"},
    {"max: fragments one over",
     {F(0x01, "He"), F(0x00, "ll"), F(0x80, "o!")},
     5,
     1009,
     "message too big",
     ""},
    {"max: empty fragment after the limit",
     {F(0x01, "Hello"), F(0x00, ""), F(0x80, "")},
     5,
     0,
     NULL,
     "T:Hello;"},
    {"max: each message counts alone",
     {F(0x81, "Hello"), F(0x82, "World"), F(0x81, "Again")},
     5,
     0,
     NULL,
     "T:Hello;B:World;T:Again;"},
    {"max: control frames not counted",
     {F(0x01, "Hell"), F(0x89, "ping!!"), F(0x80, "o")},
     5,
     0,
     NULL,
     "PING:ping!!;T:Hello;"},
};

/* Expected bytes consumed: through the first close, else everything. */
static size_t script_build(const struct script_case *c, const uint8_t *mask, uint8_t *out,
			   size_t *through_close)
{
	size_t n = 0;

	*through_close = 0;
	for (size_t i = 0; i < N_ELEMS(c->f) && c->f[i].p != NULL; i++) {
		n += put_frame(out + n, c->f[i].b0, mask, (const uint8_t *)c->f[i].p, c->f[i].len);
		if ((c->f[i].b0 & 0x0f) == WS_OP_CLOSE && *through_close == 0 &&
		    (c->f[i].b0 & 0x80))
			*through_close = n;
	}
	return n;
}

START_TEST(test_script)
{
	static const struct {
		bool masked, require_mask;
		const char *how;
	} modes[] = {{false, false, "unmasked"}, {true, true, "server"}, {true, false, "client"}};
	const struct script_case *c = &SCRIPTS[_i];
	uint8_t wire[1024];
	char name[160];

	for (size_t m = 0; m < N_ELEMS(modes); m++) {
		size_t through_close;
		size_t len = script_build(c, modes[m].masked ? MASK : NULL, wire, &through_close);
		struct expect want = {c->events, c->code, c->reason, -1, 0};
		if (c->code == 0)
			want.consumed = (ssize_t)(through_close ? through_close : len);
		snprintf(name, sizeof(name), "%s [%s]", c->name, modes[m].how);
		check_every_split(wire, len, modes[m].require_mask, c->max, &want, name);
	}
}
END_TEST

/* Every opcode in a final empty frame: six are defined, the rest reserved. */
START_TEST(test_opcodes)
{
	static const char *const events[16] = {
	    [WS_OP_TEXT] = "T:;",    [WS_OP_BINARY] = "B:;",  [WS_OP_CLOSE] = "CLOSE:1005:;",
	    [WS_OP_PING] = "PING:;", [WS_OP_PONG] = "PONG:;",
	};
	uint8_t wire[2] = {(uint8_t)(0x80 | _i), 0x00};
	struct expect want = {"", 1002, "reserved opcode", -1, 2};
	char name[32];

	if (_i == WS_OP_CONT)
		want.reason = "continuation without a message";
	if (events[_i] != NULL) {
		want = (struct expect){events[_i], 0, NULL, 2, 0};
	}
	snprintf(name, sizeof(name), "opcode %d", _i);
	check_every_split(wire, sizeof(wire), false, 0, &want, name);
}
END_TEST

/* ---- the RFC's 256-byte and 64 KiB binary examples, and 1 MiB ---------- */

static uint8_t *pattern(size_t len)
{
	uint8_t *p = malloc(len);

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + 3);
	return p;
}

static void check_big(const uint8_t *hdr, size_t hdr_len, size_t len, const char *events)
{
	uint8_t *payload = pattern(len);
	uint8_t *wire = malloc(len + 14);
	struct expect want = {events, 0, NULL, (ssize_t)(len + hdr_len), 0};
	struct run got;

	ck_assert_ptr_nonnull(wire);
	/* the RFC's literal header, unmasked: a client reading a server */
	memcpy(wire, hdr, hdr_len);
	memcpy(wire + hdr_len, payload, len);
	check_every_split(wire, len + hdr_len, false, 0, &want, "rfc binary");
	run_feed(&got, wire, len + hdr_len, false, 0, 3, 0);
	ck_assert(!got.overfed);
	ck_assert_uint_eq(got.rec.msg_len, len);
	ck_assert(memcmp(got.rec.msg, payload, len) == 0);
	run_free(&got);
	/* a server requires the mask */
	want = (struct expect){"", 1002, UNMASKED, -1, 2};
	check_every_split(wire, len + hdr_len, true, 0, &want, "rfc binary at a server");

	/* the same frame masked, read by a server, payload unmasked in place */
	size_t n = put_frame(wire, 0x82, MASK, payload, len);
	ck_assert_uint_eq(n, hdr_len + 4 + len);
	ck_assert(memcmp(wire, hdr, 1) == 0 && wire[1] == (hdr[1] | 0x80));
	want = (struct expect){events, 0, NULL, (ssize_t)n, 0};
	check_every_split(wire, n, true, 0, &want, "masked binary at a server");
	run_feed(&got, wire, n, true, 0, 5, 4093);
	ck_assert(!got.overfed);
	ck_assert_uint_eq(got.rec.msg_len, len);
	ck_assert(memcmp(got.rec.msg, payload, len) == 0);
	run_free(&got);
	free(wire);
	free(payload);
}

START_TEST(test_rfc_256)
{
	check_big((const uint8_t *)"\x82\x7e\x01\x00", 4, 256, "B[256];");
}
END_TEST

START_TEST(test_rfc_64k)
{
	check_big((const uint8_t *)"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10, 65536,
		  "B[65536];");
}
END_TEST

/* Payload is streamed: a 1 MiB frame fed a byte at a time arrives a byte at a time. */
START_TEST(test_streaming)
{
	uint8_t *payload = pattern(MIB);
	uint8_t *wire = malloc(MIB + 14);
	struct run got;

	ck_assert_ptr_nonnull(wire);
	size_t n = put_frame(wire, 0x82, MASK, payload, MIB);
	run_feed(&got, wire, n, true, MIB, 1, 1);
	ck_assert(!got.overfed);
	ck_assert_str_eq(got.rec.log, "B[1048576];");
	ck_assert_uint_eq(got.rec.pieces, MIB);
	ck_assert(memcmp(got.rec.msg, payload, MIB) == 0);
	run_free(&got);

	run_feed(&got, wire, n, true, MIB, 4096, 4096);
	ck_assert(!got.overfed);
	ck_assert_str_eq(got.rec.log, "B[1048576];");
	ck_assert_uint_eq(got.rec.pieces, MIB / 4096 + 1); /* the header shifts every piece */
	ck_assert(memcmp(got.rec.msg, payload, MIB) == 0);
	run_free(&got);

	/* one byte over the limit: refused on the header, nothing delivered */
	run_feed(&got, wire, n, true, MIB - 1, 1, 1);
	ck_assert(!got.overfed);
	ck_assert_int_eq(got.code, 1009);
	ck_assert_uint_eq(got.err_at, 14);
	ck_assert_uint_eq(got.rec.pieces, 0);
	run_free(&got);
	free(wire);
	free(payload);
}
END_TEST

/* ---- UTF-8 ------------------------------------------------------------ */

static const struct {
	const uint8_t *s;
	size_t len;
	int reject_at; /* index of the first byte that proves it invalid; -1 = none */
	bool complete; /* when not rejected */
} UTF8_CASES[] = {
    {W(""), -1, true},
    {W("Hello"), -1, true},
    {W("\x7f"), -1, true},
    {W("\xc2\x80"), -1, true},	       /* U+0080 */
    {W("\xdf\xbf"), -1, true},	       /* U+07FF */
    {W("\xe0\xa0\x80"), -1, true},     /* U+0800 */
    {W("\xed\x9f\xbf"), -1, true},     /* U+D7FF */
    {W("\xee\x80\x80"), -1, true},     /* U+E000 */
    {W("\xef\xbf\xbe"), -1, true},     /* U+FFFE: a noncharacter, still valid */
    {W("\xef\xbf\xbf"), -1, true},     /* U+FFFF */
    {W("\xf0\x90\x80\x80"), -1, true}, /* U+10000 */
    {W("\xf3\xbf\xbf\xbf"), -1, true}, /* U+FFFFF */
    {W("\xf4\x8f\xbf\xbf"), -1, true}, /* U+10FFFF */
    {W("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), -1, true}, /* kosme */
    {W("\xc2"), -1, false},
    {W("\xe2\x82"), -1, false},
    {W("\xf0\x9d\x84"), -1, false},
    {W("a\xf4"), -1, false},
    {W("\x80"), 0, false},
    {W("\xbf"), 0, false},
    {W("\xc0\x80"), 0, false}, /* overlong NUL */
    {W("\xc1\xbf"), 0, false},
    {W("\xe0\x80\x80"), 1, false}, /* overlong */
    {W("\xe0\x9f\xbf"), 1, false},
    {W("\xed\xa0\x80"), 1, false}, /* U+D800 */
    {W("\xed\xbf\xbf"), 1, false}, /* U+DFFF */
    {W("\xf0\x80\x80\x80"), 1, false},
    {W("\xf0\x8f\xbf\xbf"), 1, false}, /* overlong U+FFFF */
    {W("\xf4\x90\x80\x80"), 1, false}, /* U+110000 */
    {W("\xf5\x80\x80\x80"), 0, false},
    {W("\xf8\x88\x80\x80\x80"), 0, false},
    {W("\xfe"), 0, false},
    {W("\xff"), 0, false},
    {W("\xc2\x41"), 1, false},
    {W("\xe2\x82\x41"), 2, false},
    {W("\xf0\x9d\x84\xc2"), 3, false},
    {W("a\xc2\xc2"), 2, false},
    {W("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"), 12,
     false},
    {W("\xf4\x8f\xbf\xbf\xf4\x90"), 5, false},
};

START_TEST(test_utf8)
{
	const uint8_t *p = UTF8_CASES[_i].s;
	size_t len = UTF8_CASES[_i].len;
	int want = UTF8_CASES[_i].reject_at;
	struct ws_utf8 u;

	ws_utf8_init(&u);
	ck_assert(ws_utf8_complete(&u));
	bool ok = ws_utf8_feed(&u, p, len);
	ck_assert_msg(ok == (want < 0), "case %d: whole feed %d", _i, ok);
	if (ok)
		ck_assert_msg(ws_utf8_complete(&u) == UTF8_CASES[_i].complete, "case %d", _i);

	/* a byte at a time: false exactly at the first bad byte, and it sticks */
	ws_utf8_init(&u);
	int at = -1;
	for (size_t i = 0; i < len && at < 0; i++)
		if (!ws_utf8_feed(&u, p + i, 1))
			at = (int)i;
	ck_assert_msg(at == want, "case %d: rejected at %d, want %d", _i, at, want);
	if (at >= 0) {
		ck_assert(!ws_utf8_feed(&u, (const uint8_t *)"a", 1));
		ck_assert(!ws_utf8_complete(&u));
	}
}
END_TEST

/*
 * Text "a€b𝄞c" with a bad byte inserted at every position, cut into two
 * fragments at every position, with and without a ping between them: the
 * violation (1007) is reported on the very byte that is bad.
 */
static const uint8_t UTF8_TEXT[] = "a\xe2\x82\xac"
				   "b\xf0\x9d\x84\x9e"
				   "c";

static void check_utf8_frames(const uint8_t *q, size_t qlen, size_t bad, bool ping)
{
	uint8_t wire[128];
	struct run got;

	for (size_t s = 0; s <= qlen; s++) {
		size_t n = put_frame(wire, 0x01, MASK, q, s);
		size_t frag2 = n + (ping ? 6 : 0);
		if (ping)
			n += put_frame(wire + n, 0x89, MASK, (const uint8_t *)"", 0);
		n += put_frame(wire + n, 0x80, MASK, q + s, qlen - s);
		/* each fragment's header is 2 + 4 (mask) bytes */
		size_t at = bad < s ? 6 + bad + 1 : frag2 + 6 + (bad - s) + 1;
		run_feed(&got, wire, n, true, 0, 1, 1);
		ck_assert(!got.overfed);
		ck_assert_msg(
		    got.code == 1007 && got.err_at == at,
		    "bad byte %zu, split %zu: code %u after %zu bytes, want 1007 after %zu", bad, s,
		    got.code, got.err_at, at);
		/* everything before the bad byte was already passed on */
		ck_assert_uint_eq(got.rec.msg_len, bad);
		ck_assert(memcmp(got.rec.msg ? got.rec.msg : q, q, bad) == 0);
		run_free(&got);
	}
}

START_TEST(test_utf8_positions)
{
	static const uint8_t bad_bytes[] = {0xff, 0xc0, 0xf5};
	const size_t len = sizeof(UTF8_TEXT) - 1;
	uint8_t q[64];

	for (size_t b = 0; b < sizeof(bad_bytes); b++) {
		for (size_t i = 0; i <= len; i++) {
			memcpy(q, UTF8_TEXT, i);
			q[i] = bad_bytes[b];
			memcpy(q + i + 1, UTF8_TEXT + i, len - i);
			check_utf8_frames(q, len + 1, i, false);
			check_utf8_frames(q, len + 1, i, true);
		}
	}
}
END_TEST

/* The valid text arrives whole whatever the fragment boundary. */
START_TEST(test_utf8_fragments_valid)
{
	const size_t len = sizeof(UTF8_TEXT) - 1;
	uint8_t wire[128];
	char events[64];

	snprintf(events, sizeof(events), "T:%s;", (const char *)UTF8_TEXT);
	for (size_t s = 0; s <= len; s++) {
		for (size_t t = s; t <= len; t++) {
			size_t n = put_frame(wire, 0x01, MASK, UTF8_TEXT, s);
			n += put_frame(wire + n, 0x00, MASK, UTF8_TEXT + s, t - s);
			n += put_frame(wire + n, 0x89, MASK, (const uint8_t *)"p", 1);
			n += put_frame(wire + n, 0x80, MASK, UTF8_TEXT + t, len - t);
			char pe[80];
			snprintf(pe, sizeof(pe), "PING:p;%s", events);
			struct expect want = {pe, 0, NULL, (ssize_t)n, 0};
			check_every_split(wire, n, true, 0, &want, "utf8 fragments");
		}
	}
}
END_TEST

/* A message may not end inside a character: caught on its last byte. */
START_TEST(test_utf8_truncated_end)
{
	/* every proper prefix of a multi-byte character as the whole message */
	static const char *const chars[] = {"\xc2\x80", "\xe2\x82\xac", "\xf0\x9d\x84\x9e"};
	uint8_t wire[64];

	for (size_t c = 0; c < N_ELEMS(chars); c++) {
		size_t clen = strlen(chars[c]);
		for (size_t k = 1; k < clen; k++) {
			size_t n = put_frame(wire, 0x81, MASK, (const uint8_t *)chars[c], k);
			struct expect want = {"", 1007, UTF8_END, -1, n};
			check_every_split(wire, n, true, 0, &want, "truncated character");
		}
	}
}
END_TEST

/* ---- max_message reported on the header of the frame that exceeds it -- */

START_TEST(test_max_position)
{
	uint8_t wire[64];
	struct run got;
	size_t n = put_frame(wire, 0x01, MASK, (const uint8_t *)"Hello", 5);
	size_t second = n;

	n += put_frame(wire + n, 0x80, MASK, (const uint8_t *)"World!", 6);
	run_feed(&got, wire, n, true, 10, 1, 1);
	ck_assert(!got.overfed);
	ck_assert_int_eq(got.code, 1009);
	ck_assert_str_eq(got.reason, "message too big");
	ck_assert_uint_eq(got.err_at, second + 6); /* the mask ends the header */
	ck_assert_uint_eq(got.rec.msg_len, 5);	   /* the first fragment was delivered */
	run_free(&got);

	run_feed(&got, wire, n, true, 11, 1, 1);
	ck_assert(!got.overfed);
	ck_assert_int_eq(got.code, 0);
	ck_assert_str_eq(got.rec.log, "T:HelloWorld!;");
	run_free(&got);
}
END_TEST

/* ---- close codes ------------------------------------------------------ */

static const struct {
	uint16_t code;
	bool valid;
} CLOSE_CODES[] = {
    {0, false},	   {1, false},	  {999, false},	 {1000, true},	{1001, true},	{1002, true},
    {1003, true},  {1004, false}, {1005, false}, {1006, false}, {1007, true},	{1008, true},
    {1009, true},  {1010, true},  {1011, true},	 {1012, true},	{1013, true},	{1014, true},
    {1015, false}, {1016, false}, {1100, false}, {2000, false}, {2999, false},	{3000, true},
    {3999, true},  {4000, true},  {4999, true},	 {5000, false}, {65535, false},
};

START_TEST(test_close_codes)
{
	uint16_t code = CLOSE_CODES[_i].code;
	uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code}, wire[16];
	char events[32], name[32];

	ck_assert_msg(ws_close_code_valid(code) == CLOSE_CODES[_i].valid, "code %u", code);
	size_t n = put_frame(wire, 0x88, MASK, payload, 2);
	snprintf(events, sizeof(events), "CLOSE:%u:;", code);
	snprintf(name, sizeof(name), "close %u", code);
	struct expect want = {events, 0, NULL, (ssize_t)n, 0};
	if (!CLOSE_CODES[_i].valid)
		want = (struct expect){"", 1002, "invalid close code", -1, n};
	check_every_split(wire, n, true, 0, &want, name);
}
END_TEST

START_TEST(test_close_payload)
{
	uint8_t out[WS_MAX_CONTROL + 8];
	char reason[256];

	memset(out, 0xee, sizeof(out));
	ck_assert_uint_eq(ws_close_payload(out, 1000, "bye"), 5);
	ck_assert(memcmp(out,
			 "\x03\xe8"
			 "bye",
			 5) == 0);
	ck_assert_uint_eq(ws_close_payload(out, 4999, NULL), 2);
	ck_assert(memcmp(out, "\x13\x87", 2) == 0);
	ck_assert_uint_eq(ws_close_payload(out, 1001, ""), 2);
	/* codes that never go on the wire: an empty close */
	ck_assert_uint_eq(ws_close_payload(out, 1005, "x"), 0);
	ck_assert_uint_eq(ws_close_payload(out, 1006, NULL), 0);

	/* truncated to 125 bytes in all */
	memset(reason, 'a', 200);
	reason[200] = '\0';
	memset(out, 0xee, sizeof(out));
	ck_assert_uint_eq(ws_close_payload(out, 1000, reason), WS_MAX_CONTROL);
	ck_assert(memcmp(out + 2, reason, 123) == 0);
	ck_assert_uint_eq(out[WS_MAX_CONTROL], 0xee); /* nothing written past 125 */

	/* never inside a character: "€" is 3 bytes */
	static const struct {
		size_t as;
		size_t want;
	} cuts[] = {{120, 125}, {121, 123}, {122, 124}, {123, 125}};
	for (size_t i = 0; i < N_ELEMS(cuts); i++) {
		memset(reason, 'a', cuts[i].as);
		memcpy(reason + cuts[i].as, "\xe2\x82\xac", 4);
		size_t n = ws_close_payload(out, 1000, reason);
		ck_assert_msg(n == cuts[i].want, "%zu a's + euro: %zu, want %zu", cuts[i].as, n,
			      cuts[i].want);
		struct ws_utf8 u;
		ws_utf8_init(&u);
		ck_assert(ws_utf8_feed(&u, out + 2, n - 2) && ws_utf8_complete(&u));

		/* and the payload is accepted by the reader */
		uint8_t wire[WS_MAX_CONTROL + 8];
		size_t wlen = put_frame(wire, 0x88, MASK, out, n);
		struct run got;
		run_feed(&got, wire, wlen, true, 0, wlen, 0);
		ck_assert(!got.overfed);
		ck_assert_int_eq(got.code, 0);
		ck_assert_int_eq(got.consumed, (ssize_t)wlen);
		ck_assert(strncmp(got.rec.log, "CLOSE:1000:aaa", 14) == 0);
		run_free(&got);
	}
}
END_TEST

/* ---- encoder ---------------------------------------------------------- */

static const struct {
	uint64_t len;
	size_t hdr_len; /* unmasked */
	const char *hdr;
} ENC_CASES[] = {
    {0, 2, "\x82\x00"},
    {125, 2, "\x82\x7d"},
    {126, 4, "\x82\x7e\x00\x7e"},
    {65535, 4, "\x82\x7e\xff\xff"},
    {65536, 10, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"},
};

START_TEST(test_encode_roundtrip)
{
	uint64_t len = ENC_CASES[_i].len;
	uint8_t hdr[WS_MAX_HEADER];
	uint8_t *payload = pattern(len + 1);
	uint8_t *wire = malloc(len + WS_MAX_HEADER);
	char events[32];

	ck_assert_ptr_nonnull(wire);
	snprintf(events, sizeof(events), "B[%zu];", (size_t)len);
	for (int masked = 0; masked <= 1; masked++) {
		size_t n = ws_frame_header(hdr, true, WS_OP_BINARY, len, masked ? MASK : NULL);
		ck_assert_uint_eq(n, ENC_CASES[_i].hdr_len + (masked ? 4 : 0));
		ck_assert_uint_eq(hdr[0], 0x82);
		ck_assert_uint_eq(hdr[1], (uint8_t)ENC_CASES[_i].hdr[1] | (masked ? 0x80 : 0));
		ck_assert(memcmp(hdr + 2, ENC_CASES[_i].hdr + 2, ENC_CASES[_i].hdr_len - 2) == 0);
		if (masked)
			ck_assert(memcmp(hdr + n - 4, MASK, 4) == 0);

		memcpy(wire, hdr, n);
		memcpy(wire + n, payload, len);
		if (masked)
			ws_mask(wire + n, len, MASK, 0);
		struct run got;
		run_feed(&got, wire, n + len, masked, 0, n + len, 0);
		ck_assert(!got.overfed);
		ck_assert_int_eq(got.code, 0);
		ck_assert_int_eq(got.consumed, (ssize_t)(n + len));
		if (len <= 64)
			ck_assert_str_eq(got.rec.log, "B:;");
		else
			ck_assert_str_eq(got.rec.log, events);
		ck_assert_uint_eq(got.rec.msg_len, len);
		ck_assert(len == 0 || memcmp(got.rec.msg, payload, len) == 0);
		run_free(&got);
	}
	free(wire);
	free(payload);
}
END_TEST

START_TEST(test_encode_flags)
{
	uint8_t hdr[WS_MAX_HEADER];

	ck_assert_uint_eq(ws_frame_header(hdr, false, WS_OP_TEXT, 3, NULL), 2);
	ck_assert(memcmp(hdr, "\x01\x03", 2) == 0);
	ck_assert_uint_eq(ws_frame_header(hdr, true, WS_OP_CONT, 0, NULL), 2);
	ck_assert(memcmp(hdr, "\x80\x00", 2) == 0);
	ck_assert_uint_eq(ws_frame_header(hdr, true, WS_OP_CLOSE, 2, NULL), 2);
	ck_assert(memcmp(hdr, "\x88\x02", 2) == 0);
	ck_assert_uint_eq(ws_frame_header(hdr, true, WS_OP_PONG, 5, MASK), 6);
	ck_assert(memcmp(hdr, "\x8a\x85\x37\xfa\x21\x3d", 6) == 0);
	ck_assert_uint_eq(ws_frame_header(hdr, true, WS_OP_BINARY, UINT64_C(1) << 62, NULL), 10);
	ck_assert(memcmp(hdr, "\x82\x7f\x40\x00\x00\x00\x00\x00\x00\x00", 10) == 0);
}
END_TEST

/* The RFC's masked "Hello", and masking resumed at any offset. */
START_TEST(test_mask)
{
	uint8_t buf[5];
	uint8_t whole[64], parts[64];

	memcpy(buf, "Hello", 5);
	ws_mask(buf, 5, MASK, 0);
	ck_assert(memcmp(buf, "\x7f\x9f\x4d\x51\x58", 5) == 0);
	ws_mask(buf, 5, MASK, 0);
	ck_assert(memcmp(buf, "Hello", 5) == 0);

	for (size_t i = 0; i < sizeof(whole); i++)
		whole[i] = (uint8_t)i;
	memcpy(parts, whole, sizeof(parts));
	ws_mask(whole, sizeof(whole), MASK, 0);
	for (size_t cut = 0; cut <= sizeof(parts); cut++) {
		uint8_t p[64];
		memcpy(p, parts, sizeof(p));
		ws_mask(p, cut, MASK, 0);
		ws_mask(p + cut, sizeof(p) - cut, MASK, cut);
		ck_assert_msg(memcmp(p, whole, sizeof(p)) == 0, "cut %zu", cut);
	}
	/* positions beyond 32 bits keep their phase */
	memcpy(buf, "Hello", 5);
	ws_mask(buf, 5, MASK, (UINT64_C(1) << 40) + 1);
	ck_assert_uint_eq(buf[0], 'H' ^ MASK[1]);
}
END_TEST

/* ---- reader lifecycle ------------------------------------------------- */

START_TEST(test_after_close)
{
	uint8_t wire[] = "\x88\x00\x81\x05Hello";
	struct ws_reader rd;
	struct rec rec = {.msg_op = -1};
	uint16_t code = 0;
	const char *reason = NULL;

	ws_reader_init(&rd, false, 0);
	ck_assert_int_eq(ws_reader_feed(&rd, wire, sizeof(wire) - 1, &CB, &rec, &code, &reason), 2);
	ck_assert(rd.closed);
	ck_assert_int_eq(ws_reader_feed(&rd, wire + 2, 7, &CB, &rec, &code, &reason), 0);
	ck_assert_str_eq(rec.log, "CLOSE:1005:;");
	ck_assert_int_eq(code, 0);
	free(rec.msg);
}
END_TEST

/* After a violation the reader is finished too; NULL callbacks and outputs are fine. */
START_TEST(test_after_error)
{
	uint8_t wire[] = "\xc1\x00\x81\x00";
	struct ws_reader rd;
	uint16_t code = 0;
	const char *reason = NULL;

	ws_reader_init(&rd, false, 0);
	ck_assert_int_eq(ws_reader_feed(&rd, wire, 4, NULL, NULL, &code, &reason), -1);
	ck_assert_int_eq(code, 1002);
	ck_assert_str_eq(reason, "reserved bits set");
	ck_assert_int_eq(ws_reader_feed(&rd, wire + 2, 2, NULL, NULL, NULL, NULL), 0);

	uint8_t ok[] = "\x81\x01x\x89\x00\x88\x00";
	ws_reader_init(&rd, false, 0);
	ck_assert_int_eq(ws_reader_feed(&rd, ok, 7, NULL, NULL, NULL, NULL), 7);
	ck_assert(rd.closed);
}
END_TEST

static Suite *ws_suite(void)
{
	Suite *s = suite_create("ws");
	TCase *tc = tcase_create("decode");

	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_raw, 0, (int)N_ELEMS(RAW_CASES));
	tcase_add_loop_test(tc, test_script, 0, (int)N_ELEMS(SCRIPTS));
	tcase_add_loop_test(tc, test_opcodes, 0, 16);
	tcase_add_test(tc, test_rfc_256);
	tcase_add_test(tc, test_rfc_64k);
	tcase_add_test(tc, test_streaming);
	tcase_add_test(tc, test_max_position);
	tcase_add_test(tc, test_after_close);
	tcase_add_test(tc, test_after_error);
	suite_add_tcase(s, tc);

	tc = tcase_create("utf8");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_utf8, 0, (int)N_ELEMS(UTF8_CASES));
	tcase_add_test(tc, test_utf8_positions);
	tcase_add_test(tc, test_utf8_fragments_valid);
	tcase_add_test(tc, test_utf8_truncated_end);
	suite_add_tcase(s, tc);

	tc = tcase_create("close");
	tcase_add_loop_test(tc, test_close_codes, 0, (int)N_ELEMS(CLOSE_CODES));
	tcase_add_test(tc, test_close_payload);
	suite_add_tcase(s, tc);

	tc = tcase_create("encode");
	tcase_add_loop_test(tc, test_encode_roundtrip, 0, (int)N_ELEMS(ENC_CASES));
	tcase_add_test(tc, test_encode_flags);
	tcase_add_test(tc, test_mask);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ws_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
