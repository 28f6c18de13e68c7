/*
 * upgrade: pure logic of HTTP/1.1 protocol upgrades (RFC 9110 §7.8) and the
 * WebSocket opening handshake (RFC 6455 §4). No sockets: everything works on
 * parsed struct http_msg heads so unit tests can drive it with plain buffers.
 */
#ifndef SY_UPGRADE_H
#define SY_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "http.h"

#define UPGRADE_MAX_TOKENS 8
#define UPGRADE_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */
#define UPGRADE_WS_KEY_LEN 24	 /* base64 of 16 bytes, with "==" padding */
#define UPGRADE_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum upgrade_decision {
	UPGRADE_NONE,	 /* plain request: strip Upgrade, forward normally */
	UPGRADE_FORWARD, /* forward as an upgrade with the allowed tokens */
	UPGRADE_REJECT,	 /* answer status/reason without contacting a backend */
};

/* What the proxy decided about one request, kept until the answer arrives. */
struct upgrade_req {
	enum upgrade_decision decision;
	int status;	    /* for UPGRADE_REJECT: 400, 403, 426 (500 if libcrypto fails) */
	const char *reason; /* for logs; static string */
	/* allowed tokens in the client's order; point into the request's raw head */
	struct {
		const char *s;
		size_t len;
	} tokens[UPGRADE_MAX_TOKENS];
	size_t n_tokens;
	bool websocket; /* forwarded as a WebSocket handshake; ws_accept is set */
	char ws_accept[UPGRADE_WS_ACCEPT_LEN + 1]; /* expected Sec-WebSocket-Accept */
};

/*
 * Classify a request head for the given route policy. Never fails: the
 * outcome (including rejections) is in out. A request is an upgrade only when
 * it is HTTP/1.1, has Upgrade, and "upgrade" is a token of some Connection
 * field. h2c is always dropped; tokens outside the route's allow-list are
 * dropped; with nothing left the request is plain.
 */
void upgrade_classify(const struct http_msg *req, const struct config_route *route,
		      struct upgrade_req *out);

/*
 * Write "Connection: Upgrade\r\nUpgrade: tok, tok\r\n" for the allowed tokens into
 * buf, NUL-terminated. Returns the length without the NUL, or 0 if it does not
 * fit or there are no tokens (UPGRADE_NONE never has any).
 */
size_t upgrade_format_request_fields(const struct upgrade_req *u, char *buf, size_t cap);

/*
 * Check a 101 response against the request. Returns NULL when the switch is
 * acceptable, else a static reason ("unrequested 101", "101 names a protocol
 * the client did not offer", "bad Sec-WebSocket-Accept", ...).
 */
const char *upgrade_check_101(const struct upgrade_req *u, const struct http_msg *req,
			      const struct http_msg *resp);

/* Sec-WebSocket-Accept for a key: out receives 28 chars + NUL. 0 / -1. */
int upgrade_ws_accept(const char *key, size_t key_len, char out[UPGRADE_WS_ACCEPT_LEN + 1]);

/* A fresh Sec-WebSocket-Key (16 random bytes, base64) + NUL. 0 / -1. */
int upgrade_ws_new_key(char out[UPGRADE_WS_KEY_LEN + 1]);

/* Does key base64-decode to exactly 16 bytes (strict padding, no spaces)? */
bool upgrade_ws_key_valid(const char *key, size_t key_len);

#endif
