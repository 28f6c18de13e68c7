/*
 * generation: a config and its TLS contexts, shared read-only between
 * workers (see generation.h). OpenSSL contexts and the hash tables may be
 * used from several threads at once; nothing here is written after
 * generation_new().
 */
#include "generation.h"

#include <stdlib.h>

#include "balance.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"

static int generation_tls(struct generation *g)
{
	const struct config *cfg = g->cfg;
	char err[256];

	for (size_t i = 0; i < cfg->n_listens; i++) {
		if (cfg->listens[i].tls == NULL)
			continue;
		g->listen_tls[i] = tls_server_new(cfg->listens[i].tls, err, sizeof(err));
		if (g->listen_tls[i] == NULL) {
			log_msg(LOG_LEVEL_ERROR, 0, "listen %s: %s", cfg->listens[i].addr.text,
				err);
			return -1;
		}
	}
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		if (!cfg->upstreams[i].tls.enabled)
			continue;
		g->upstream_tls[i] = tls_client_new(&cfg->upstreams[i].tls, err, sizeof(err));
		if (g->upstream_tls[i] == NULL) {
			log_msg(LOG_LEVEL_ERROR, 0, "upstream '%s': %s", cfg->upstreams[i].name,
				err);
			return -1;
		}
	}
	return 0;
}

/* One Maglev table per hash upstream, shared by every worker (read-only). */
static int generation_rings(struct generation *g)
{
	const struct config *cfg = g->cfg;
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		unsigned weights[CONFIG_MAX_SERVERS];
		const char *ids[CONFIG_MAX_SERVERS];
		if (u->balance != CONFIG_BALANCE_HASH)
			continue;
		for (size_t j = 0; j < u->n_servers; j++) {
			weights[j] = u->servers[j].weight;
			ids[j] = u->servers[j].addr.text;
		}
		if ((g->rings[i] = balance_ring_new(ids, weights, u->n_servers)) == NULL) {
			log_msg(LOG_LEVEL_ERROR, 0, "upstream '%s': out of memory", u->name);
			return -1;
		}
	}
	return 0;
}

static void generation_free(struct generation *g)
{
	for (size_t i = 0; g->rings && i < g->cfg->n_upstreams; i++)
		balance_ring_free(g->rings[i]);
	free(g->rings);
	free(g->route_metrics);
	for (size_t i = 0; g->listen_tls && i < g->cfg->n_listens; i++)
		tls_server_free(g->listen_tls[i]);
	for (size_t i = 0; g->upstream_tls && i < g->cfg->n_upstreams; i++)
		tls_client_free(g->upstream_tls[i]);
	free(g->listen_tls);
	free(g->upstream_tls);
	config_free(g->cfg);
	free(g);
}

/* The counters of each route, found by name so they run on across reloads. */
static int generation_metrics(struct generation *g)
{
	g->route_metrics = calloc(g->cfg->n_routes + 1, sizeof(*g->route_metrics));
	if (g->route_metrics == NULL || (g->unrouted = metrics_route(g->metrics, "-")) == NULL)
		return -1;
	for (size_t i = 0; i < g->cfg->n_routes; i++)
		if ((g->route_metrics[i] = metrics_route(g->metrics, g->cfg->routes[i].name)) ==
		    NULL)
			return -1;
	return 0;
}

struct generation *generation_new(struct config *cfg, uint64_t id, struct health *health,
				  struct metrics *metrics)
{
	struct generation *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		config_free(cfg);
		return NULL;
	}
	atomic_init(&g->refs, 1);
	g->id = id;
	g->cfg = cfg;
	g->health = health;
	g->metrics = metrics;
	g->listen_tls = calloc(cfg->n_listens + 1, sizeof(*g->listen_tls));
	g->upstream_tls = calloc(cfg->n_upstreams + 1, sizeof(*g->upstream_tls));
	g->rings = calloc(cfg->n_upstreams + 1, sizeof(*g->rings));
	if (g->listen_tls == NULL || g->upstream_tls == NULL || g->rings == NULL ||
	    generation_tls(g) < 0 || generation_rings(g) < 0 || generation_metrics(g) < 0) {
		generation_free(g);
		return NULL;
	}
	return g;
}

struct generation *generation_ref(struct generation *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return g;
}

void generation_unref(struct generation *g)
{
	if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		generation_free(g);
}
