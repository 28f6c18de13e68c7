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

struct event_base;
struct bufferevent;

/*
 * Start a non-blocking connect to sa (TCP or AF_UNIX). Returns a bufferevent
 * that owns the socket (BEV_OPT_CLOSE_ON_FREE); the caller sets callbacks and
 * gets BEV_EVENT_CONNECTED or an error. NULL with errno set on immediate failure.
 */
struct tls_client;

/* tls: NULL for plain TCP; host: the name for SNI / verification with TLS. */
struct bufferevent *upstream_connect(struct event_base *base, const struct sockaddr *sa,
				     socklen_t len, struct tls_client *tls, const char *host);

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

/* Park bev (takes ownership; freed when the list is full). */
void upstream_idle_park(struct upstream_idle *idle, struct bufferevent *bev);
/* Take the most recently parked connection, callbacks cleared; NULL if none. */
struct bufferevent *upstream_idle_take(struct upstream_idle *idle);
/* Move every parked connection of from to to (a reload keeping the server);
 * beyond to->max they are closed. */
void upstream_idle_move(struct upstream_idle *to, struct upstream_idle *from);
/* Close every parked connection. */
void upstream_idle_drain(struct upstream_idle *idle);

/* The stream backend of a terminate route as a sockaddr. 0 / -1. */
int upstream_bridge_addr(const struct config_route *route, struct sockaddr_storage *ss,
			 socklen_t *len);

#endif
