/*
 * wsbridge: a terminated WebSocket bridged to a plain byte stream (TCP or
 * Unix socket), as websockify does for VNC. Client messages become raw bytes
 * toward the backend; backend bytes become binary frames (or base64 text
 * frames for the "base64" subprotocol). Uses the ws codec for framing.
 */
#ifndef SY_WSBRIDGE_H
#define SY_WSBRIDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "end.h"

struct event_base;
struct conn;
struct wsbridge;

/* Why it ended (end.h); detail (a close code, what broke, or NULL) is valid during the call. */
typedef void (*wsbridge_done_cb)(void *arg, enum end_cause cause, const char *detail);

struct wsbridge_params {
	struct event_base *base;
	bool base64;	      /* the "base64" subprotocol was chosen */
	uint64_t max_message; /* bytes; larger client messages close with 1009 */
	uint64_t ping_ms;     /* 0 = never ping */
	wsbridge_done_cb done;
	void *arg;
};

/*
 * Start bridging. The client's output already holds the 101; its input may
 * hold frames sent right after the handshake. Takes ownership of both
 * conns (also on failure, when it returns NULL after closing them).
 */
struct wsbridge *wsbridge_start(const struct wsbridge_params *p, struct conn *client,
				struct conn *backend);
void wsbridge_free(struct wsbridge *b);
/* Once a second: idle TLS buffers go back (conn_tick). */
void wsbridge_tick(struct wsbridge *b);

/* Send close 1001 "going away" and finish once it is written (graceful stop,
 * drain); cause is what done() reports. */
void wsbridge_going_away(struct wsbridge *b, enum end_cause cause);

/* Payload bytes delivered toward the backend (up) and toward the client (down). */
void wsbridge_bytes(const struct wsbridge *b, uint64_t *up, uint64_t *down);

#endif
