/*
 * admin: the operator's HTTP listener (admin.address, TCP or a Unix
 * socket), never a client listener. Requests are read with the proxy's own
 * head parser (http.c), one per connection:
 *
 *   GET  /metrics    Prometheus text format 0.0.4 (metrics.c)
 *   GET  /healthz    200 while accepting, 503 while stopping
 *   GET  /tunnels    live tunnels as JSON (?route=&server=&limit=), asked
 *                    of every worker on its own thread
 *   GET  /servers    every server's state, counts and last check, as JSON
 *   POST /servers/drain|ready|maint?upstream=&server=   the operator's state
 *
 * Loopback peers and the Unix socket are allowed; others only when an
 * admin.allow prefix matches, else 403. Runs on worker 0's loop.
 */
#ifndef SY_ADMIN_H
#define SY_ADMIN_H

#include <stdbool.h>

#include "config.h"

struct event_base;
struct health;
struct metrics;
struct worker;
struct admin;

/* What the admin reads from the process; main keeps it current. */
struct admin_env {
	const struct config_admin *cfg; /* the current generation's (allow list) */
	bool stopping;			/* SIGTERM / SIGQUIT came: /healthz says 503 */
	struct metrics *metrics;
	struct health *health;
	struct worker **workers;
	unsigned n_workers;
	const char *version, *openssl; /* for switchyard_build_info */
};

/* Listen on env->cfg's address. NULL on failure (logged). */
struct admin *admin_new(struct event_base *base, const struct admin_env *env);
void admin_free(struct admin *a);

/* Is a bound to cfg's address (what a reload would want)? */
bool admin_listens_on(const struct admin *a, const struct config_admin *cfg);

/* Is addr (family, 4 or 16 bytes) loopback or inside one of cfg's prefixes? */
bool admin_peer_allowed(const struct config_admin *cfg, int family, const unsigned char *addr);

#endif
