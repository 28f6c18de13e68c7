/*
 * upstream: opening connections to upstream servers and bridge backends.
 * Selection among a pool's servers is balance.c's job; this module connects.
 */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#include <stdbool.h>

struct event_base;
struct conn;
struct tls_client;

/*
 * Start a non-blocking connect to sa (TCP or AF_UNIX). Returns a conn that
 * owns the socket; the caller sets callbacks and gets CONN_CONNECTED (after
 * the TLS handshake with tls) or an error. NULL with errno set on immediate
 * failure. tls: NULL for plain TCP; host: the name for SNI / verification
 * with TLS.
 */
struct conn *upstream_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len,
			      struct tls_client *tls, const char *host);

/*
 * Idle keep-alive connections to one server. A parked connection is watched:
 * data, EOF, an error or idle_ms without use drops it, so a connection taken
 * from here was alive a moment ago (the backend can still close it in the
 * same instant: callers retry a request that got no answer on it).
 */
struct upstream_conn;
struct upstream_idle {
	struct upstream_conn *head;
	size_t n, max;
	uint64_t idle_ms;
};

/* Park conn (takes ownership; freed when the list is full). */
void upstream_idle_park(struct upstream_idle *idle, struct conn *conn);
/* Take the most recently parked connection, callbacks cleared; NULL if none. */
struct conn *upstream_idle_take(struct upstream_idle *idle);
/* Close every parked connection. */
void upstream_idle_drain(struct upstream_idle *idle);

/*
 * A server as one worker runs it. Shared by every generation that has the
 * same server (upstream name and address), so its load and its idle
 * connections carry over a reload. Kept in a registry per worker.
 */
struct upstream_server {
	unsigned refs;	/* the upstream_rts that have it */
	char *upstream; /* upstream name: with addr, its identity */
	struct config_addr addr;
	size_t active;		      /* sessions using it now, tunnels included */
	struct health_server *health; /* up or down: shared by the workers */
	struct upstream_idle idle;
	struct upstream_server *next; /* registry */
};

/* An upstream of one generation as one worker runs it. */
struct balance_pool;
struct balance_ring;
struct health;
struct health_server;
struct upstream_rt {
	const struct config_upstream *cfg;
	struct balance_pool *pool;	  /* smooth WRR state */
	const struct balance_ring *ring;  /* balance = hash: the generation's; else NULL */
	struct upstream_server **servers; /* [cfg->n_servers], same order */
};

/*
 * Set up u for cfg, taking its servers from *registry (adding those it
 * lacks, with their state in health); idle_ms is timeouts.keepalive; ring:
 * the generation's hash table for balance = "hash" (borrowed). 0 / -1 (then
 * upstream_rt_fini).
 */
int upstream_rt_init(struct upstream_rt *u, const struct config_upstream *cfg, uint64_t idle_ms,
		     const struct balance_ring *ring, struct health *health,
		     struct upstream_server **registry);
/* Release u's servers; one nobody has any more is closed and freed. */
void upstream_rt_fini(struct upstream_rt *u, struct upstream_server **registry);

#define UPSTREAM_ALL_DOWN (-2)

/*
 * The server for a request: skipping those in tried (bit i = server i) and
 * those that are down, by cfg->balance; key is the hash of the request's
 * hash_key (NULL: none, then round robin), rnd fresh randomness for
 * "random". -1 when every server that is up was tried, UPSTREAM_ALL_DOWN
 * when none is up.
 */
long upstream_pick(struct upstream_rt *u, uint64_t tried, const uint64_t *key, uint64_t rnd);

/* A session starts or stops using a server (connect to end, tunnels included). */
void upstream_acquire(struct upstream_server *srv);
void upstream_release(struct upstream_server *srv);

/* The stream backend of a terminate route as a sockaddr. 0 / -1. */
int upstream_bridge_addr(const struct config_route *route, struct sockaddr_storage *ss,
			 socklen_t *len);

#endif
