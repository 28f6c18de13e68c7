/*
 * balance: smooth weighted round robin, the nginx algorithm
 * (ngx_http_upstream_get_peer). Each pick adds every eligible server's
 * weight to its running `current`, takes the largest, and subtracts the sum
 * of eligible weights from the winner. Over W = sum(weights) picks each
 * server wins exactly `weight` times, spread out instead of in bursts.
 *
 * Skipped servers (already tried for this request, or down) sit the round
 * out entirely: their `current` is left alone, so they rejoin the rotation
 * where they left it.
 */
#include "balance.h"

#include <errno.h>
#include <stdlib.h>

/*
 * Far above any configured weight (config allows 1..1000); it only keeps
 * the sums in `long` arithmetic away from overflow.
 */
#define BALANCE_WEIGHT_MAX 1000000u

struct balance_pool *balance_pool_new(const unsigned *weights, size_t n)
{
	struct balance_pool *p;

	for (size_t i = 0; i < n; i++) {
		if (weights[i] == 0 || weights[i] > BALANCE_WEIGHT_MAX) {
			errno = EINVAL;
			return NULL;
		}
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		goto fail_pool;
	if (n > 0) {
		p->servers = calloc(n, sizeof(*p->servers));
		if (p->servers == NULL)
			goto fail_servers;
	}
	for (size_t i = 0; i < n; i++)
		p->servers[i].weight = weights[i];
	p->n = n;
	return p;

fail_servers:
	free(p);
fail_pool:
	return NULL;
}

void balance_pool_free(struct balance_pool *p)
{
	if (p == NULL)
		return;
	free(p->servers);
	free(p);
}

long balance_pick(struct balance_pool *p, const bool *skip)
{
	struct balance_server *best = NULL;
	long total = 0;

	if (p == NULL)
		return -1;
	for (size_t i = 0; i < p->n; i++) {
		struct balance_server *s = &p->servers[i];
		if (skip != NULL && skip[i])
			continue;
		s->current += (long)s->weight;
		total += (long)s->weight;
		/* strict '>' so ties go to the lower index, as in nginx */
		if (best == NULL || s->current > best->current)
			best = s;
	}
	if (best == NULL)
		return -1;
	best->current -= total;
	return (long)(best - p->servers);
}
