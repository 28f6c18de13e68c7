/*
 * ws: RFC 6455 frame codec, used where the proxy terminates WebSocket.
 * Pure functions over buffers: no sockets, no allocation.
 */
#ifndef SY_WS_H
#define SY_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

/* Close codes the codec itself produces. */
#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_PROTOCOL 1002
#define WS_CLOSE_INVALID_DATA 1007
#define WS_CLOSE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL 1011

#define WS_MAX_HEADER 14 /* 2 + 8 (length) + 4 (mask) */
#define WS_MAX_CONTROL 125

/* Incremental UTF-8 validation across fragment boundaries. */
struct ws_utf8 {
	uint32_t state; /* 0 = at a character boundary */
};

void ws_utf8_init(struct ws_utf8 *u);
/* Feed bytes; false as soon as the input cannot be valid UTF-8. */
bool ws_utf8_feed(struct ws_utf8 *u, const uint8_t *p, size_t len);
/* True when the bytes fed so far end on a complete character. */
bool ws_utf8_complete(const struct ws_utf8 *u);

struct ws_callbacks {
	/*
	 * Payload bytes of a data message (already unmasked), opcode TEXT or
	 * BINARY of the message; last is true on the final piece of the message
	 * (which is empty when the final frame is). Any callback may be NULL.
	 */
	void (*on_data)(void *arg, enum ws_opcode msg_opcode, const uint8_t *data, size_t len,
			bool last);
	/* A complete control frame: PING, PONG, or CLOSE (code 1005 when the
	 * frame had no payload; reason not NUL-terminated). */
	void (*on_ping)(void *arg, const uint8_t *data, size_t len);
	void (*on_pong)(void *arg, const uint8_t *data, size_t len);
	void (*on_close)(void *arg, uint16_t code, const uint8_t *reason, size_t len);
};

/* Decoder state for one direction of frames. */
struct ws_reader {
	bool require_mask;    /* frames from a client must be masked */
	uint64_t max_message; /* 0 = unlimited */
	/* current frame */
	uint8_t hdr[WS_MAX_HEADER];
	size_t hdr_len, hdr_need;
	bool fin;
	enum ws_opcode opcode;
	bool masked;
	uint8_t mask[4];
	uint64_t payload_left;
	uint64_t mask_pos;
	uint8_t control[WS_MAX_CONTROL]; /* control frame payload gathered whole */
	size_t control_len;
	/* current message */
	bool in_message;
	enum ws_opcode msg_opcode;
	uint64_t msg_len;
	struct ws_utf8 utf8;
	bool closed; /* a close frame was received (or a violation found): nothing may follow */
};

void ws_reader_init(struct ws_reader *r, bool require_mask, uint64_t max_message);

/*
 * Decode frames from data[0..len) (payloads are unmasked in place, hence not
 * const), calling cb for each event. Returns bytes consumed (all of them
 * unless a close frame ends the stream), or -1 on a protocol violation with
 * *code (1002, 1007, 1009) and *reason (static text) set. After a close frame
 * or a violation the reader is finished: later calls consume nothing.
 */
ssize_t ws_reader_feed(struct ws_reader *r, uint8_t *data, size_t len,
		       const struct ws_callbacks *cb, void *arg, uint16_t *code,
		       const char **reason);

/*
 * Write a frame header into out (>= WS_MAX_HEADER bytes); returns its length.
 * mask NULL: unmasked (server to client). With a mask the caller masks the
 * payload with ws_mask().
 */
size_t ws_frame_header(uint8_t *out, bool fin, enum ws_opcode op, uint64_t payload_len,
		       const uint8_t mask[4]);

/* XOR data with the mask, starting at mask offset pos. */
void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t pos);

/*
 * Close payload into out (>= WS_MAX_CONTROL bytes): 2-byte code + reason
 * (NULL = none), truncated to fit 125 at a UTF-8 character boundary. Returns
 * its length; 0 for a code not valid on the wire (e.g. 1005, to echo a close
 * that carried no code).
 */
size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason);

/* May this code appear in a close frame on the wire (RFC 6455 §7.4)? */
bool ws_close_code_valid(uint16_t code);

#endif
