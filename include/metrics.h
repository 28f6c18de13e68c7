/*
 * metrics: the process's counters, gauges and histograms, and their
 * Prometheus text exposition (format 0.0.4) for the admin listener.
 *
 * Process-wide and atomic (relaxed): any worker adds, the admin reads at
 * any time; nothing is ever reset, so counters run on across reloads.
 * Per-route series are kept by route name in a registry that only grows
 * (a route a reload removed keeps its last values); per-server series live
 * in health.c's struct health_server and are rendered through it.
 */
#ifndef SY_METRICS_H
#define SY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "end.h"

struct evbuffer;
struct health;

/* What became of an upgrade request (labels of switchyard_upgrades_total). */
enum metrics_upgrade {
	METRICS_UPGRADE_FORWARDED,	   /* the backend's 101 was relayed */
	METRICS_UPGRADE_REFUSED_BY_POLICY, /* route: deny, or a protocol not allowed */
	METRICS_UPGRADE_INVALID_HANDSHAKE, /* the client's request was not a valid one */
	METRICS_UPGRADE_BACKEND_NON_101,   /* the backend answered something else */
	METRICS_UPGRADE_INVALID_101,	   /* the backend's 101 failed validation */
	METRICS_UPGRADE_TERMINATED,	   /* answered here (upgrade = "terminate") */
	METRICS_UPGRADE_RESULTS
};

/* GOAWAYs the HTTP/2 front end sent, by code (switchyard_h2_goaways_total). */
enum metrics_goaway {
	METRICS_GOAWAY_NO_ERROR,	  /* stop, reload, idle */
	METRICS_GOAWAY_PROTOCOL_ERROR,	  /* the client broke HTTP/2 */
	METRICS_GOAWAY_INTERNAL_ERROR,	  /* out of memory and the like */
	METRICS_GOAWAY_ENHANCE_YOUR_CALM, /* floods: rapid reset, CONTINUATION, PING ... */
	METRICS_GOAWAY_CODES
};

#define METRICS_BUCKETS 14

struct metrics_histogram {
	atomic_uint_fast64_t bucket[METRICS_BUCKETS + 1]; /* the last: +Inf */
	atomic_uint_fast64_t sum_us;
};

struct metrics_route {
	char *name;
	atomic_uint_fast64_t requests[6]; /* by status class 1..5 */
	atomic_uint_fast64_t upgrades[METRICS_UPGRADE_RESULTS];
	atomic_int_fast64_t tunnels_open;
	atomic_uint_fast64_t bytes_up, bytes_down; /* tunnels: client to backend, back */
	struct metrics_route *next;
};

struct metrics {
	struct metrics_route *routes; /* grows only; under lock */
	void *lock;		      /* pthread_mutex_t */
	atomic_int_fast64_t connections_open;
	atomic_uint_fast64_t connections_total;
	atomic_int_fast64_t h2_connections_open;
	atomic_uint_fast64_t h2_connections_total, h2_streams_total;
	atomic_uint_fast64_t h2_goaways[METRICS_GOAWAY_CODES];
	atomic_uint_fast64_t errors[600]; /* proxy-generated responses by status */
	atomic_uint_fast64_t tunnel_closes[END_CAUSES];
	struct metrics_histogram tunnel_duration, connect_time, response_time;
	atomic_uint_fast64_t pool_reused, pool_new; /* backend connections for requests */
	atomic_uint_fast64_t reloads_ok, reloads_failed, address_changes;
	atomic_uint_fast64_t generation;
	atomic_uint_fast64_t started_unix;
};

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* The series of route name (made on first use; never freed before m). NULL on OOM. */
struct metrics_route *metrics_route(struct metrics *m, const char *name);

static inline void metrics_add(atomic_uint_fast64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline void metrics_gauge(atomic_int_fast64_t *g, int64_t delta)
{
	atomic_fetch_add_explicit(g, delta, memory_order_relaxed);
}

/* Record one observation of us microseconds. */
void metrics_observe(struct metrics_histogram *h, uint64_t us);

/* What the process knows at scrape time, besides the counters. */
struct metrics_process {
	unsigned workers;
	uint64_t fds_open, fds_limit;
	const char *version, *libevent, *openssl;
};

/* The whole exposition: counters, the servers of h, the process. */
void metrics_render(const struct metrics *m, struct health *h, const struct metrics_process *p,
		    struct evbuffer *out);

/* Stable label of an upgrade result ("refused_by_policy"). */
const char *metrics_upgrade_label(enum metrics_upgrade r);

#endif
