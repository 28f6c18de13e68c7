/*
 * tunnel: the raw byte tunnel after a 101. Two directions, each a pump from
 * one socket to the other: splice(2) through a pipe borrowed from the pool
 * when both ends are plain TCP, else a copy pump over conns with
 * watermarks. EOF on one side becomes shutdown(SHUT_WR) on the other once
 * everything read from it has been written; the tunnel ends when both
 * directions are done, on an error, or on the idle / lifetime timer.
 */
#ifndef SY_TUNNEL_H
#define SY_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "end.h"

struct event_base;
struct conn;
struct splice_pool;
struct tunnel;

/* Why it ended (end.h); detail (an errno text or NULL) is valid only during the call. */
typedef void (*tunnel_done_cb)(void *arg, enum end_cause cause, const char *detail);

struct tunnel_params {
	struct event_base *base;
	enum config_tunnel_mode mode;
	struct splice_pool *pipes;
	uint64_t idle_ms; /* 0 = no idle timeout */
	uint64_t max_ms;  /* 0 = no lifetime limit */
	tunnel_done_cb done;
	void *arg;
};

/*
 * Start a tunnel over two connected conns. Their output buffers may
 * already hold bytes due to that side (the relayed 101, early data); those go
 * first. Input buffers must be empty. Takes ownership of both conns and
 * their sockets, also on failure (NULL: both are closed). done is called once,
 * from an event callback; the owner then calls tunnel_free().
 */
struct tunnel *tunnel_start(const struct tunnel_params *p, struct conn *client,
			    struct conn *backend);

/* Once a second: a copy tunnel's idle TLS buffers go back (conn_tick). */
void tunnel_tick(struct tunnel *t);

/* Close both sockets and free everything. */
void tunnel_free(struct tunnel *t);

/* Bytes written toward the backend (up) and toward the client (down). */
void tunnel_bytes(const struct tunnel *t, uint64_t *up, uint64_t *down);

/* Is the tunnel using splice(2)? (for the log line) */
const char *tunnel_mode_str(const struct tunnel *t);
/* Milliseconds since a byte last moved either way. */
uint64_t tunnel_idle_ms(const struct tunnel *t);
/* How long a side has taken none of the bytes waiting for it (0: none wait);
 * *client_side says whether that side is the client. */
uint64_t tunnel_stalled_ms(const struct tunnel *t, bool *client_side);

#endif
