/*
 * balance: server selection.
 *
 * Smooth weighted round robin is the nginx algorithm
 * (ngx_http_upstream_get_peer). Each pick adds every eligible server's
 * weight to its running `current`, takes the largest, and subtracts the sum
 * of eligible weights from the winner. Over W = sum(weights) picks each
 * server wins exactly `weight` times, spread out instead of in bursts.
 * Servers that are not eligible (skipped: already tried for this request,
 * or down; for least-conn, not among the least loaded) sit the round out
 * entirely: their `current` is left alone, so they rejoin the rotation
 * where they left it.
 *
 * Consistent hashing is Maglev (Eisenbud et al., NSDI 2016) rather than a
 * ketama ring of virtual nodes. A ring's shares are as uneven as its point
 * count allows: with 160 points per server the worst of 10 equal servers
 * is typically 13 % off its share (up to 20 %, measured over 20 id sets),
 * and points per weight unit would grow with weights up to 1000. A Maglev
 * table gives each server its weighted share of slots to within one slot,
 * in a fixed size, and a lookup is one index instead of a binary search.
 * The price is a little movement beyond the ideal 1/N when the set changes
 * (check_balance measures it: within 0.01 of the ideal for 3..10 servers).
 */
#include "balance.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Far above any configured weight (config allows 1..1000); it keeps the
 * sums in `long` and the products load * weight in uint64_t from overflow.
 */
#define BALANCE_WEIGHT_MAX 1000000u
/* Loads are clamped here so load * weight fits in 64 bits. */
#define BALANCE_LOAD_MAX (UINT64_MAX / BALANCE_WEIGHT_MAX)
/*
 * Maglev table size: a prime, so every server's probe step visits every
 * slot. It is fixed because a key's slot is key mod size: a size that grew
 * with the server count would move nearly every key when a server is added.
 * 65537 keeps at least 100 slots per server (the paper's bound for shares
 * within 1 %) up to BALANCE_RING_MAX_SERVERS and the movement on a change
 * near the ideal 1/N; it costs 128 KiB of 16-bit entries per table.
 */
#define BALANCE_RING_SLOTS 65537u
#define BALANCE_RING_MAX_SERVERS 655u
#define BALANCE_RING_EMPTY UINT16_MAX

struct balance_ring {
	size_t n;
	uint16_t *table; /* [BALANCE_RING_SLOTS]: slot -> server index */
};

/* Whether server i may take part in a round; ctx is the callback's own. */
typedef bool (*balance_eligible_fn)(size_t i, const void *ctx);

static bool not_skipped(size_t i, const void *ctx)
{
	const bool *skip = ctx;

	return skip == NULL || !skip[i];
}

/* One smooth WRR pick among the eligible servers; -1 when there are none. */
static long swrr_round(struct balance_server *servers, size_t n, balance_eligible_fn eligible,
		       const void *ctx)
{
	struct balance_server *best = NULL;
	long total = 0;

	for (size_t i = 0; i < n; i++) {
		struct balance_server *s = &servers[i];
		if (!eligible(i, ctx))
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
	return (long)(best - servers);
}

static bool weights_valid(const unsigned *weights, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (weights[i] == 0 || weights[i] > BALANCE_WEIGHT_MAX)
			return false;
	}
	return true;
}

struct balance_pool *balance_pool_new(const unsigned *weights, size_t n)
{
	struct balance_pool *p;

	if (!weights_valid(weights, n)) {
		errno = EINVAL;
		return NULL;
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
	if (p == NULL)
		return -1;
	return swrr_round(p->servers, p->n, not_skipped, skip);
}

static uint64_t load_at(const size_t *load, size_t i)
{
	if (load == NULL)
		return 0;
	return load[i] > BALANCE_LOAD_MAX ? BALANCE_LOAD_MAX : (uint64_t)load[i];
}

/* load[a] / weight[a] < load[b] / weight[b], cross-multiplied: exact. */
static bool lighter(const struct balance_server *s, const size_t *load, size_t a, size_t b)
{
	return load_at(load, a) * s[b].weight < load_at(load, b) * s[a].weight;
}

struct least_ctx {
	const struct balance_server *servers;
	const size_t *load;
	const bool *skip;
	size_t best; /* one of the least loaded */
};

static bool least_tied(size_t i, const void *ctx)
{
	const struct least_ctx *c = ctx;

	return not_skipped(i, c->skip) && !lighter(c->servers, c->load, c->best, i);
}

long balance_pick_least(struct balance_pool *p, const size_t *load, const bool *skip)
{
	struct least_ctx c = {.load = load, .skip = skip};
	long best = -1;

	if (p == NULL)
		return -1;
	for (size_t i = 0; i < p->n; i++) {
		if (not_skipped(i, skip) &&
		    (best < 0 || lighter(p->servers, load, i, (size_t)best)))
			best = (long)i;
	}
	if (best < 0)
		return -1;
	c.servers = p->servers;
	c.best = (size_t)best;
	return swrr_round(p->servers, p->n, least_tied, &c);
}

/* floor(r * range / 2^32) without a 96-bit product: uniform in [0, range). */
static uint64_t scale32(uint32_t r, uint64_t range)
{
	return (uint64_t)r * (range >> 32) + (((uint64_t)r * (range & UINT32_MAX)) >> 32);
}

/*
 * The eligible server other than `except` in whose weight interval target
 * falls, target being below the sum of those weights.
 */
static size_t weighted_at(const struct balance_pool *p, const bool *skip, size_t except,
			  uint64_t target)
{
	size_t last = 0;

	for (size_t i = 0; i < p->n; i++) {
		if (i == except || !not_skipped(i, skip))
			continue;
		if (target < p->servers[i].weight)
			return i;
		target -= p->servers[i].weight;
		last = i;
	}
	return last; /* not reached when target is in range */
}

long balance_pick_random2(const struct balance_pool *p, const size_t *load, const bool *skip,
			  uint64_t rnd)
{
	uint64_t total = 0;

	if (p == NULL)
		return -1;
	for (size_t i = 0; i < p->n; i++) {
		if (not_skipped(i, skip))
			total += p->servers[i].weight;
	}
	if (total == 0)
		return -1;
	size_t a = weighted_at(p, skip, SIZE_MAX, scale32((uint32_t)(rnd >> 32), total));
	uint64_t rest = total - p->servers[a].weight;
	if (rest == 0)
		return (long)a;
	size_t b = weighted_at(p, skip, a, scale32((uint32_t)rnd, rest));
	return (long)(lighter(p->servers, load, b, a) ? b : a);
}

/* The splitmix64 finalizer: every input bit flips each output bit ~1/2. */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint64_t balance_hash(const void *data, size_t len)
{
	const unsigned char *b = data;
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= UINT64_C(0x100000001b3);
	}
	return mix64(h);
}

/* A server in fill order: its identity hash and its walk through the slots. */
struct ring_fill {
	uint64_t hash;
	const char *id;
	size_t index;
	uint32_t pos, step;
};

static int ring_fill_cmp(const void *a, const void *b)
{
	const struct ring_fill *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	int c = strcmp(x->id, y->id);
	if (c != 0)
		return c;
	return x->index < y->index ? -1 : x->index > y->index;
}

static bool always(size_t i, const void *ctx)
{
	return true;
}

/*
 * Maglev's population: servers take turns (smooth WRR by weight, so a
 * server with twice the weight takes twice the slots, interleaved), each
 * taking the next still empty slot of its own permutation
 * pos, pos + step, pos + 2 step ... (mod the prime size). Turns go in order
 * of identity hash, not of the arrays, so the table depends on the set of
 * ids only.
 */
static int ring_populate(struct balance_ring *r, const char *const *ids, const unsigned *weights)
{
	struct ring_fill *f = calloc(r->n, sizeof(*f));
	struct balance_server *turn = calloc(r->n, sizeof(*turn));

	if (f == NULL || turn == NULL)
		goto fail;
	for (size_t i = 0; i < r->n; i++) {
		f[i].hash = balance_hash(ids[i], strlen(ids[i]));
		f[i].id = ids[i];
		f[i].index = i;
	}
	qsort(f, r->n, sizeof(*f), ring_fill_cmp);
	for (size_t k = 0; k < r->n; k++) {
		f[k].pos = (uint32_t)((f[k].hash >> 32) % BALANCE_RING_SLOTS);
		f[k].step = (uint32_t)((f[k].hash & UINT32_MAX) % (BALANCE_RING_SLOTS - 1)) + 1;
		turn[k].weight = weights[f[k].index];
	}
	memset(r->table, 0xff, BALANCE_RING_SLOTS * sizeof(*r->table));
	for (uint32_t filled = 0; filled < BALANCE_RING_SLOTS; filled++) {
		struct ring_fill *s = &f[swrr_round(turn, r->n, always, NULL)];
		while (r->table[s->pos] != BALANCE_RING_EMPTY)
			s->pos = (uint32_t)(((uint64_t)s->pos + s->step) % BALANCE_RING_SLOTS);
		r->table[s->pos] = (uint16_t)s->index;
	}
	free(turn);
	free(f);
	return 0;

fail:
	free(turn);
	free(f);
	return -1;
}

static bool ids_valid(const char *const *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ids[i] == NULL)
			return false;
	}
	return true;
}

struct balance_ring *balance_ring_new(const char *const *ids, const unsigned *weights, size_t n)
{
	struct balance_ring *r;

	if (n > BALANCE_RING_MAX_SERVERS || !weights_valid(weights, n) || !ids_valid(ids, n)) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		goto fail_ring;
	r->n = n;
	if (n == 0)
		return r;
	r->table = malloc(BALANCE_RING_SLOTS * sizeof(*r->table));
	if (r->table == NULL)
		goto fail_table;
	if (ring_populate(r, ids, weights) < 0)
		goto fail_populate;
	return r;

fail_populate:
	free(r->table);
fail_table:
	free(r);
fail_ring:
	return NULL;
}

void balance_ring_free(struct balance_ring *r)
{
	if (r == NULL)
		return;
	free(r->table);
	free(r);
}

long balance_ring_pick(const struct balance_ring *r, uint64_t key, const bool *skip)
{
	size_t first_live = 0;

	if (r == NULL)
		return -1;
	while (first_live < r->n && !not_skipped(first_live, skip))
		first_live++;
	if (first_live == r->n)
		return -1; /* else the walk below would never end */
	/* mixed again so that keys which are not hashes still spread */
	uint32_t slot = (uint32_t)(mix64(key) % BALANCE_RING_SLOTS);
	while (!not_skipped(r->table[slot], skip))
		slot = slot + 1 == BALANCE_RING_SLOTS ? 0 : slot + 1;
	return (long)r->table[slot];
}
