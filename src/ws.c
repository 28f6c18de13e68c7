/*
 * ws: RFC 6455 frame codec for the routes where the proxy terminates
 * WebSocket itself (the bridge in wsbridge.c drives it).
 *
 * Pure functions over caller buffers: no sockets, no allocation. The reader
 * is a byte-driven state machine so that it accepts input cut at any point
 * (mid-header, mid-payload, mid-UTF-8 character). Data payloads are streamed
 * to the caller as they arrive instead of buffered, so a 1 MiB message costs
 * the proxy no more memory than a 1-byte one; only control frames (at most
 * 125 bytes) are gathered whole because their meaning needs all of them.
 */
#include "ws.h"

#include <string.h>

/* A protocol violation: the close code to send and a static reason. */
struct ws_err {
	uint16_t code;
	const char *reason;
};

static const struct ws_err ERR_RSV = {WS_CLOSE_PROTOCOL, "reserved bits set"};
static const struct ws_err ERR_OPCODE = {WS_CLOSE_PROTOCOL, "reserved opcode"};
static const struct ws_err ERR_UNMASKED = {WS_CLOSE_PROTOCOL, "unmasked client frame"};
static const struct ws_err ERR_CTL_FRAG = {WS_CLOSE_PROTOCOL, "fragmented control frame"};
static const struct ws_err ERR_CTL_LONG = {WS_CLOSE_PROTOCOL, "control frame too long"};
static const struct ws_err ERR_CONT = {WS_CLOSE_PROTOCOL, "continuation without a message"};
static const struct ws_err ERR_INTERLEAVE = {WS_CLOSE_PROTOCOL,
					     "new message inside a fragmented message"};
static const struct ws_err ERR_LEN_MIN = {WS_CLOSE_PROTOCOL, "length not minimally encoded"};
static const struct ws_err ERR_LEN_HIGH = {WS_CLOSE_PROTOCOL,
					   "64-bit length with the high bit set"};
static const struct ws_err ERR_CLOSE_LEN = {WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload"};
static const struct ws_err ERR_CLOSE_CODE = {WS_CLOSE_PROTOCOL, "invalid close code"};
static const struct ws_err ERR_CLOSE_UTF8 = {WS_CLOSE_INVALID_DATA, "close reason not UTF-8"};
static const struct ws_err ERR_UTF8 = {WS_CLOSE_INVALID_DATA, "invalid UTF-8 in text message"};
static const struct ws_err ERR_UTF8_END = {WS_CLOSE_INVALID_DATA,
					   "text message ends inside a UTF-8 character"};
static const struct ws_err ERR_TOO_BIG = {WS_CLOSE_TOO_BIG, "message too big"};

#define WS_CLOSE_NO_STATUS 1005 /* reported for a close frame without a code */

/* ---- UTF-8 -------------------------------------------------------------- */

/*
 * A DFA over byte classes. The classes split the continuation range where
 * some lead bytes restrict their first continuation: E0 (A0-BF, no
 * overlongs), ED (80-9F, no surrogates), F0 (90-BF, no overlongs) and F4
 * (80-8F, nothing above U+10FFFF). C0, C1 and F5-FF never appear.
 */
enum utf8_class {
	U8_ASCII, /* 00-7F */
	U8_C80,	  /* 80-8F */
	U8_C90,	  /* 90-9F */
	U8_CA0,	  /* A0-BF */
	U8_BAD,	  /* C0-C1, F5-FF */
	U8_L2,	  /* C2-DF */
	U8_E0,
	U8_L3, /* E1-EC, EE-EF */
	U8_ED,
	U8_F0,
	U8_L4, /* F1-F3 */
	U8_F4,
	U8_N_CLASSES
};

enum utf8_state {
	U8_OK,	  /* at a character boundary */
	U8_NEED1, /* one more continuation byte */
	U8_NEED2, /* two more */
	U8_NEED3, /* three more */
	U8_AFTER_E0,
	U8_AFTER_ED,
	U8_AFTER_F0,
	U8_AFTER_F4,
	U8_REJECT, /* sticky: no input can make this valid again */
	U8_N_STATES
};

#define R U8_REJECT
static const uint8_t UTF8_NEXT[U8_N_STATES][U8_N_CLASSES] = {
    /* columns in enum utf8_class order: ASCII 80 90 A0 BAD L2 E0 L3 ED F0 L4 F4 */
    [U8_OK] = {U8_OK, R, R, R, R, U8_NEED1, U8_AFTER_E0, U8_NEED2, U8_AFTER_ED, U8_AFTER_F0,
	       U8_NEED3, U8_AFTER_F4},
    [U8_NEED1] = {R, U8_OK, U8_OK, U8_OK, R, R, R, R, R, R, R, R},
    [U8_NEED2] = {R, U8_NEED1, U8_NEED1, U8_NEED1, R, R, R, R, R, R, R, R},
    [U8_NEED3] = {R, U8_NEED2, U8_NEED2, U8_NEED2, R, R, R, R, R, R, R, R},
    [U8_AFTER_E0] = {R, R, R, U8_NEED1, R, R, R, R, R, R, R, R},
    [U8_AFTER_ED] = {R, U8_NEED1, U8_NEED1, R, R, R, R, R, R, R, R, R},
    [U8_AFTER_F0] = {R, R, U8_NEED2, U8_NEED2, R, R, R, R, R, R, R, R},
    [U8_AFTER_F4] = {R, U8_NEED2, R, R, R, R, R, R, R, R, R, R},
    [U8_REJECT] = {R, R, R, R, R, R, R, R, R, R, R, R},
};
#undef R

static enum utf8_class utf8_class(uint8_t b)
{
	if (b < 0x80)
		return U8_ASCII;
	if (b < 0x90)
		return U8_C80;
	if (b < 0xA0)
		return U8_C90;
	if (b < 0xC0)
		return U8_CA0;
	if (b < 0xC2 || b > 0xF4)
		return U8_BAD;
	if (b < 0xE0)
		return U8_L2;
	if (b == 0xE0)
		return U8_E0;
	if (b == 0xED)
		return U8_ED;
	if (b < 0xF0)
		return U8_L3;
	if (b == 0xF0)
		return U8_F0;
	return b == 0xF4 ? U8_F4 : U8_L4;
}

void ws_utf8_init(struct ws_utf8 *u)
{
	u->state = U8_OK;
}

bool ws_utf8_feed(struct ws_utf8 *u, const uint8_t *p, size_t len)
{
	uint32_t st = u->state;

	for (size_t i = 0; i < len; i++) {
		/* Text is mostly ASCII: skip the table while between characters. */
		if (st == U8_OK && p[i] < 0x80)
			continue;
		st = UTF8_NEXT[st][utf8_class(p[i])];
		if (st == U8_REJECT)
			break;
	}
	u->state = st;
	return st != U8_REJECT;
}

bool ws_utf8_complete(const struct ws_utf8 *u)
{
	return u->state == U8_OK;
}

/* ---- encoder ------------------------------------------------------------ */

size_t ws_frame_header(uint8_t *out, bool fin, enum ws_opcode op, uint64_t payload_len,
		       const uint8_t mask[4])
{
	size_t n = 2;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | ((unsigned)op & 0x0f));
	if (payload_len < 126) {
		out[1] = (uint8_t)payload_len;
	} else if (payload_len <= 0xffff) {
		out[1] = 126;
		out[n++] = (uint8_t)(payload_len >> 8);
		out[n++] = (uint8_t)payload_len;
	} else {
		out[1] = 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			out[n++] = (uint8_t)(payload_len >> shift);
	}
	if (mask != NULL) {
		out[1] |= 0x80;
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t pos)
{
	uint8_t m[4];

	/* Rotate once so the loop indexes by i alone and can be vectorised. */
	for (unsigned i = 0; i < 4; i++)
		m[i] = mask[(pos + i) & 3];
	for (size_t i = 0; i < len; i++)
		data[i] ^= m[i & 3];
}

bool ws_close_code_valid(uint16_t code)
{
	/* 1004-1006 and 1015 are reserved for local use: never sent. */
	if (code >= 1000 && code <= 1003)
		return true;
	if (code >= 1007 && code <= 1014)
		return true;
	return code >= 3000 && code <= 4999;
}

size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason)
{
	size_t len = reason != NULL ? strlen(reason) : 0;

	/* 1005 "no status" and the like can only be echoed as an empty close. */
	if (!ws_close_code_valid(code))
		return 0;
	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	if (len > WS_MAX_CONTROL - 2) {
		len = WS_MAX_CONTROL - 2;
		/* Cut before a continuation byte would leave the peer invalid UTF-8 (1007). */
		while (len > 0 && ((uint8_t)reason[len] & 0xC0) == 0x80)
			len--;
	}
	memcpy(out + 2, reason != NULL ? reason : "", len);
	return len + 2;
}

/* ---- reader ------------------------------------------------------------- */

void ws_reader_init(struct ws_reader *r, bool require_mask, uint64_t max_message)
{
	memset(r, 0, sizeof(*r));
	r->require_mask = require_mask;
	r->max_message = max_message;
	r->hdr_need = 2;
	ws_utf8_init(&r->utf8);
}

static bool opcode_is_control(enum ws_opcode op)
{
	return ((unsigned)op & 0x08) != 0;
}

static bool opcode_known(unsigned op)
{
	return op <= WS_OP_BINARY || (op >= WS_OP_CLOSE && op <= WS_OP_PONG);
}

/*
 * The first two header bytes decide almost every rule, so check them before
 * waiting for the extended length and mask: a peer is cut off at the first
 * byte that proves it wrong.
 */
static const struct ws_err *reader_frame_start(struct ws_reader *r)
{
	uint8_t b0 = r->hdr[0], b1 = r->hdr[1], len7 = b1 & 0x7f;
	unsigned op = b0 & 0x0f;

	if (b0 & 0x70)
		return &ERR_RSV; /* no extension was negotiated */
	if (!opcode_known(op))
		return &ERR_OPCODE;
	r->fin = (b0 & 0x80) != 0;
	r->opcode = (enum ws_opcode)op;
	r->masked = (b1 & 0x80) != 0;
	if (r->require_mask && !r->masked)
		return &ERR_UNMASKED;
	if (opcode_is_control(r->opcode)) {
		if (!r->fin)
			return &ERR_CTL_FRAG;
		if (len7 > WS_MAX_CONTROL)
			return &ERR_CTL_LONG;
	} else if (r->opcode == WS_OP_CONT && !r->in_message) {
		return &ERR_CONT;
	} else if (r->opcode != WS_OP_CONT && r->in_message) {
		return &ERR_INTERLEAVE;
	}
	r->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (r->masked ? 4 : 0);
	return NULL;
}

/* A data frame's length is known: enforce max_message before any payload. */
static const struct ws_err *reader_data_frame(struct ws_reader *r, uint64_t plen)
{
	uint64_t before = r->opcode == WS_OP_CONT ? r->msg_len : 0;

	if (r->max_message != 0 && plen > r->max_message - before)
		return &ERR_TOO_BIG;
	if (r->opcode != WS_OP_CONT) {
		r->in_message = true;
		r->msg_opcode = r->opcode;
		ws_utf8_init(&r->utf8);
	}
	/* Saturate: with no limit a peer may send more than 2^64 bytes in total. */
	r->msg_len = plen > UINT64_MAX - before ? UINT64_MAX : before + plen;
	return NULL;
}

static const struct ws_err *reader_header_done(struct ws_reader *r)
{
	const uint8_t *p = r->hdr + 2;
	uint64_t plen = r->hdr[1] & 0x7f;

	if (plen == 126) {
		plen = (uint64_t)p[0] << 8 | p[1];
		p += 2;
		if (plen < 126)
			return &ERR_LEN_MIN;
	} else if (plen == 127) {
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | p[i];
		p += 8;
		if (plen >> 63)
			return &ERR_LEN_HIGH;
		if (plen <= 0xffff)
			return &ERR_LEN_MIN;
	}
	if (r->masked)
		memcpy(r->mask, p, 4);
	r->hdr_need = 0; /* now in the payload */
	r->payload_left = plen;
	r->mask_pos = 0;
	r->control_len = 0;
	return opcode_is_control(r->opcode) ? NULL : reader_data_frame(r, plen);
}

/* Gather header bytes; *used is how many of data were taken. */
static const struct ws_err *reader_header(struct ws_reader *r, const uint8_t *data, size_t len,
					  size_t *used)
{
	const struct ws_err *err;
	size_t take = r->hdr_need - r->hdr_len;

	if (take > len)
		take = len;
	memcpy(r->hdr + r->hdr_len, data, take);
	r->hdr_len += take;
	*used = take;
	if (r->hdr_len < r->hdr_need)
		return NULL;
	if (r->hdr_len == 2) {
		err = reader_frame_start(r);
		if (err != NULL || r->hdr_len < r->hdr_need)
			return err;
	}
	return reader_header_done(r);
}

/* N payload bytes of the current frame, unmasked in place and passed on. */
static const struct ws_err *reader_payload(struct ws_reader *r, uint8_t *data, size_t n,
					   const struct ws_callbacks *cb, void *arg)
{
	if (r->masked)
		ws_mask(data, n, r->mask, r->mask_pos);
	r->mask_pos += n;
	r->payload_left -= n;
	if (opcode_is_control(r->opcode)) {
		memcpy(r->control + r->control_len, data, n);
		r->control_len += n;
		return NULL;
	}
	bool last = r->fin && r->payload_left == 0;
	if (r->msg_opcode == WS_OP_TEXT) {
		if (!ws_utf8_feed(&r->utf8, data, n))
			return &ERR_UTF8;
		if (last && !ws_utf8_complete(&r->utf8))
			return &ERR_UTF8_END;
	}
	/* An empty piece is only worth a call when it ends the message. */
	if ((n > 0 || last) && cb != NULL && cb->on_data != NULL)
		cb->on_data(arg, r->msg_opcode, data, n, last);
	return NULL;
}

static const struct ws_err *reader_close(struct ws_reader *r, const struct ws_callbacks *cb,
					 void *arg)
{
	uint16_t code = WS_CLOSE_NO_STATUS;
	const uint8_t *reason = NULL;
	size_t len = 0;
	struct ws_utf8 u;

	if (r->control_len == 1)
		return &ERR_CLOSE_LEN;
	if (r->control_len >= 2) {
		code = (uint16_t)(r->control[0] << 8 | r->control[1]);
		if (!ws_close_code_valid(code))
			return &ERR_CLOSE_CODE;
		reason = r->control + 2;
		len = r->control_len - 2;
		ws_utf8_init(&u);
		if (!ws_utf8_feed(&u, reason, len) || !ws_utf8_complete(&u))
			return &ERR_CLOSE_UTF8;
	}
	r->closed = true;
	if (cb != NULL && cb->on_close != NULL)
		cb->on_close(arg, code, reason, len);
	return NULL;
}

/* The current frame's payload is complete: dispatch it and expect a header. */
static const struct ws_err *reader_frame_end(struct ws_reader *r, const struct ws_callbacks *cb,
					     void *arg)
{
	r->hdr_len = 0;
	r->hdr_need = 2;
	switch (r->opcode) {
	case WS_OP_PING:
		if (cb != NULL && cb->on_ping != NULL)
			cb->on_ping(arg, r->control, r->control_len);
		break;
	case WS_OP_PONG:
		if (cb != NULL && cb->on_pong != NULL)
			cb->on_pong(arg, r->control, r->control_len);
		break;
	case WS_OP_CLOSE:
		return reader_close(r, cb, arg);
	default:
		if (r->fin)
			r->in_message = false;
		break;
	}
	return NULL;
}

ssize_t ws_reader_feed(struct ws_reader *r, uint8_t *data, size_t len,
		       const struct ws_callbacks *cb, void *arg, uint16_t *code,
		       const char **reason)
{
	const struct ws_err *err = NULL;
	size_t pos = 0, n;

	while (err == NULL && !r->closed) {
		if (r->hdr_need > 0) {
			if (pos == len)
				break;
			err = reader_header(r, data + pos, len - pos, &n);
			pos += n;
			continue;
		}
		n = len - pos < r->payload_left ? len - pos : (size_t)r->payload_left;
		if (n == 0 && r->payload_left > 0)
			break; /* mid-payload, input exhausted */
		err = reader_payload(r, data + pos, n, cb, arg);
		pos += n;
		if (err == NULL && r->payload_left == 0)
			err = reader_frame_end(r, cb, arg);
	}
	if (err == NULL)
		return (ssize_t)pos;
	/* The connection is being failed: whatever follows is not decoded. */
	r->closed = true;
	if (code != NULL)
		*code = err->code;
	if (reason != NULL)
		*reason = err->reason;
	return -1;
}
