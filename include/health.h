/*
 * health: whether each upstream server is up, for the whole process.
 *
 * One struct health_server per server identity (upstream name and address),
 * shared by every worker and every generation that has the server, so its
 * state carries over a reload and all workers agree on it. The state is
 * atomic: workers read it when picking and mark failures from their own
 * threads (passive marking); the active checks run on the thread that owns
 * struct health (worker 0's loop, the main thread).
 *
 * Every change of state is logged ("server 127.0.0.1:9000 of app is down:
 * http check: got 503, not 200") and reported through the changed callback,
 * from whichever thread made it.
 */
#ifndef SY_HEALTH_H
#define SY_HEALTH_H

#include <stdbool.h>

#include "config.h"

struct event_base;
struct generation;
struct health;
struct health_server;

/* What happened to a server, for the changed callback. */
enum health_event {
	HEALTH_WENT_UP,
	HEALTH_WENT_DOWN,  /* on_down applies to its tunnels */
	HEALTH_WENT_MAINT, /* the operator's maint: its tunnels end whatever on_down says */
};

typedef void (*health_changed_fn)(struct health_server *hs, enum health_event ev, void *arg);

/* The operator's say over a server (admin POST /servers/...), kept across reloads. */
enum health_admin {
	HEALTH_ADMIN_READY = 0, /* takes sessions when up */
	HEALTH_ADMIN_DRAIN,	/* no new sessions; open tunnels go on */
	HEALTH_ADMIN_MAINT,	/* no new sessions, open tunnels closed */
};

/* Checks run on base; changed (may be NULL) hears every change. NULL on OOM. */
struct health *health_new(struct event_base *base, health_changed_fn changed, void *arg);
/* Stops every check; every health_server must have been put back. */
void health_free(struct health *h);

/*
 * Run the checks of gen (a reference is kept until the next call): start
 * those of its servers, stop those of servers it no longer has. A server
 * whose upstream lost its health block is up again. On h's thread.
 */
void health_follow(struct health *h, struct generation *gen);

/* The shared state of a server, created up; any thread. NULL on OOM. */
struct health_server *health_server_get(struct health *h, const char *upstream,
					const struct config_addr *addr);
struct health_server *health_server_ref(struct health_server *hs);
void health_server_put(struct health_server *hs);

/*
 * May the server get a new session? A server marked down passively under
 * type = "none" comes back here once retry_down_after has passed, one
 * failure away from down again. Any thread.
 */
bool health_server_usable(struct health_server *hs, const struct config_health *cfg);
bool health_server_is_down(const struct health_server *hs);

/*
 * Passive marking from traffic: a connect failure, a reset before the
 * response (or a 5xx with passive_5xx) counts; fall in a row mark the server
 * down. A good answer clears the count. Nothing happens without cfg->passive.
 */
void health_server_failed(struct health_server *hs, const struct config_health *cfg,
			  const char *why);
void health_server_ok(struct health_server *hs);

/* Sessions (tunnels included) and tunnels using the server now, process-wide. */
void health_server_sessions(struct health_server *hs, int delta);
void health_server_tunnels(struct health_server *hs, int delta);

/* A server as /servers and /metrics show it; strings valid during the call. */
struct health_server_view {
	const char *upstream, *addr;
	bool down;
	enum health_admin admin;
	int64_t sessions, tunnels;
	uint64_t checks_passed, checks_failed;
	const char *check;	/* the active check's type, NULL without one */
	const char *last_check; /* "passed" or why it failed; "" before the first */
};

/* Every server the process has now, in no particular order. On h's thread. */
void health_foreach(struct health *h, void (*fn)(const struct health_server_view *v, void *arg),
		    void *arg);

/* Set the operator's state of server addr ("10.0.0.5:9000") of upstream.
 * 0, or -1 when the process has no such server. On h's thread. */
int health_set_admin(struct health *h, const char *upstream, const char *addr,
		     enum health_admin admin);
const char *health_admin_label(enum health_admin a);

/* "127.0.0.1:9000" and "app", for logs. */
const char *health_server_addr(const struct health_server *hs);
const char *health_server_upstream(const struct health_server *hs);

#endif
