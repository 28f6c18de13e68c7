/*
 * generation: one loaded config with everything derived from it that is
 * read-only afterwards (TLS contexts for listeners and upstreams, the hash
 * tables of balance = "hash" upstreams). Shared by
 * every worker, reference-counted: a session holds its generation from
 * accept to its end, so a reload never pulls a config away from a request
 * in flight or a tunnel. The last reference frees it.
 */
#ifndef SY_GENERATION_H
#define SY_GENERATION_H

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"

struct tls_server;
struct tls_client;
struct balance_ring;
struct health;
struct metrics;
struct metrics_route;

struct generation {
	atomic_uint refs;
	uint64_t id; /* 1 for the config read at start, +1 per reload */
	struct config *cfg;
	struct tls_server **listen_tls;	      /* [cfg->n_listens]; NULL = plain */
	struct tls_client **upstream_tls;     /* [cfg->n_upstreams]; NULL = plain */
	struct balance_ring **rings;	      /* [cfg->n_upstreams]; balance = hash only */
	struct health *health;		      /* the process's server states (borrowed) */
	struct metrics *metrics;	      /* the process's counters (borrowed) */
	struct metrics_route **route_metrics; /* [cfg->n_routes], by route name */
	struct metrics_route *unrouted;	      /* requests no route matched: route "-" */
};

/* Build a generation around cfg (taking it, also on failure), for a process
 * whose server states are health and counters metrics. One reference for the
 * caller; NULL on failure, each reason logged. */
struct generation *generation_new(struct config *cfg, uint64_t id, struct health *health,
				  struct metrics *metrics);

struct generation *generation_ref(struct generation *g);
/* Drop a reference (NULL is fine); frees at the last one. Any thread. */
void generation_unref(struct generation *g);

#endif
