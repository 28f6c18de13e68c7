/*
 * balance: server selection, pure functions over per-pool state, no I/O.
 *
 * - balance_pick(): smooth weighted round robin (as in nginx): over any
 *   window of W picks (W = sum of weights) each server is picked exactly
 *   weight times, and picks are interleaved rather than bursty.
 * - balance_pick_least(): weighted least connections, ties in smooth WRR
 *   order.
 * - balance_pick_random2(): power of two choices by weight over the same
 *   load counts.
 * - balance_ring_*(): consistent hashing (a Maglev lookup table) on stable
 *   server identities, so adding or removing a server moves about 1/N of
 *   the keys.
 *
 * Weights are 1..1000000; a weight of 0 is refused (EINVAL) by both
 * constructors rather than clamped, so a config error cannot silently turn
 * into traffic.
 */
#ifndef SY_BALANCE_H
#define SY_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/*
 * Weighted least connections: the non-skipped server with the smallest
 * load[i] / weight[i] (load may be NULL: all zero). Servers tied on that
 * ratio take turns in smooth WRR order, sharing the state balance_pick()
 * uses. -1 when every server is skipped.
 */
long balance_pick_least(struct balance_pool *p, const size_t *load, const bool *skip);

/*
 * Power of two choices: draws two distinct non-skipped servers, each with
 * probability proportional to its weight (the high 32 bits of rnd draw the
 * first, the low 32 bits the second among the rest), and returns the one
 * with the smaller load / weight, the first on a tie. rnd must be 64 fresh
 * random bits. With one server left, that server; -1 when all are skipped.
 * Does not change p.
 */
long balance_pick_random2(const struct balance_pool *p, const size_t *load, const bool *skip,
			  uint64_t rnd);

/* A consistent-hash table over n servers; read-only once built. */
struct balance_ring;

/*
 * Build the table for n servers. ids[i] is server i's stable identity (its
 * address text, "10.0.0.5:9000"): a key's server depends on the ids and
 * weights only, not on their order in the arrays nor on the process, so
 * every worker and every reload agree. Ids should be distinct. NULL with
 * errno EINVAL for a weight of 0 or above 1000000, a NULL id or more than
 * 655 servers (the table keeps 100 slots per server); ENOMEM. The table is
 * 128 KiB whatever n (n = 0 is allowed: every pick is -1) and takes a few
 * ms to build. The caller frees with balance_ring_free(); ids are not kept.
 */
struct balance_ring *balance_ring_new(const char *const *ids, const unsigned *weights, size_t n);
void balance_ring_free(struct balance_ring *r);

/*
 * The server index for key (any 64 bits; balance_hash() of the request's
 * hash key). The same key gives the same server while the table and skip
 * mask stay the same. A key whose server is skipped goes to the next
 * non-skipped server in the table, so only that server's keys move, spread
 * over the others by weight. -1 when every server is skipped or n is 0.
 */
long balance_ring_pick(const struct balance_ring *r, uint64_t key, const bool *skip);

/*
 * A 64-bit non-cryptographic hash: FNV-1a then the splitmix64 finalizer,
 * which gives FNV's short-input output full avalanche. Stable across
 * builds and hosts (it is part of which server a key goes to).
 */
uint64_t balance_hash(const void *data, size_t len);

#endif
