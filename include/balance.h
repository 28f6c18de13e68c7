/*
 * balance: server selection, pure functions over per-pool state.
 * Smooth weighted round robin (as in nginx): over any window of W picks
 * (W = sum of weights) each server is picked exactly weight times, and picks
 * are interleaved rather than bursty.
 */
#ifndef SY_BALANCE_H
#define SY_BALANCE_H

#include <stdbool.h>
#include <stddef.h>

struct balance_server {
	unsigned weight;
	long current; /* running state of smooth WRR */
};

struct balance_pool {
	struct balance_server *servers;
	size_t n;
};

/* Allocate state for n servers with the given weights. NULL on failure. */
struct balance_pool *balance_pool_new(const unsigned *weights, size_t n);
void balance_pool_free(struct balance_pool *p);

/*
 * Pick a server index, skipping those with skip[i] true (skip may be NULL).
 * Returns -1 when every server is skipped.
 */
long balance_pick(struct balance_pool *p, const bool *skip);

#endif
