/*
 * upstream: opening connections to upstream servers and bridge backends.
 * Selection among a pool's servers is balance.c's job; this module connects.
 */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

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

/* The stream backend of a terminate route as a sockaddr. 0 / -1. */
int upstream_bridge_addr(const struct config_route *route, struct sockaddr_storage *ss,
			 socklen_t *len);

#endif
