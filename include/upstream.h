/*
 * upstream: opening connections to upstream servers. Selection among a
 * pool's servers is balance.c's job; this module only connects.
 */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include "config.h"

struct event_base;
struct bufferevent;

/*
 * Start a non-blocking connect to srv. Returns a bufferevent that owns the
 * socket (BEV_OPT_CLOSE_ON_FREE); the caller sets callbacks and gets
 * BEV_EVENT_CONNECTED or an error. NULL with errno set on immediate failure.
 */
struct bufferevent *upstream_connect(struct event_base *base, const struct config_server *srv);

#endif
