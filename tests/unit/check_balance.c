/*
 * check_balance: smooth weighted round robin (exact sequences where nginx
 * documents them, exact counts over every window of W = sum(weights)
 * picks, the skip mask used to retry the next server after a failed
 * connect); weighted least connections and power of two choices (exact
 * picks, then proportions over a seeded generator); the Maglev table
 * (stickiness, shares, keys moved when a server is added or removed,
 * skip); the hash against an independent reference.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
/*
 * For loops over 100k keys. Under CK_FORK every passing ck_assert is
 * reported to the parent through a pipe, a system call each, which made
 * this suite spend most of its time in the kernel; this calls Check only
 * on failure.
 */
#define EXPECT(expr)                                                                               \
	do {                                                                                       \
		if (!(expr))                                                                       \
			ck_abort_msg("Assertion '%s' failed", #expr);                              \
	} while (0)
#define MAX_SERVERS 8

struct seq_case {
	unsigned weights[MAX_SERVERS];
	size_t n;
	const char *want; /* picks as letters, 'a' = server 0 */
};

static const struct seq_case SEQ_CASES[] = {
    /* the sequence from nginx's commit introducing smooth WRR */
    {{5, 1, 1},
     3,
     "aabacaa"
     "aabacaa"},
    {{1, 1, 1}, 3, "abcabc"},
    {{2, 1},
     2,
     "aba"
     "aba"},
    {{1, 2}, 2, "bab"},
    {{3, 2}, 2, "ababa"},
    {{1}, 1, "aaaa"},
};

START_TEST(test_sequence)
{
	const struct seq_case *c = &SEQ_CASES[_i];
	struct balance_pool *p = balance_pool_new(c->weights, c->n);
	char got[64] = "";

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < strlen(c->want); i++) {
		long k = balance_pick(p, NULL);
		ck_assert(k >= 0 && (size_t)k < c->n);
		got[i] = (char)('a' + k);
	}
	ck_assert_str_eq(got, c->want);
	balance_pool_free(p);
}
END_TEST

struct weight_case {
	unsigned weights[MAX_SERVERS];
	size_t n;
};

static const struct weight_case WEIGHT_CASES[] = {
    {{5, 1, 1}, 3},
    {{1}, 1},
    {{1, 1, 1, 1}, 4},
    {{3, 2}, 2},
    {{1, 1000}, 2},
    {{7, 3, 2, 1}, 4},
    {{10, 10, 1}, 3},
    {{1000, 999, 1, 500}, 4},
    {{2, 4, 6, 8, 10, 12, 14, 16}, 8},
};

/*
 * The sequence repeats with period W, so every run of W consecutive picks
 * (not only aligned ones) holds each server exactly `weight` times.
 */
START_TEST(test_window_counts)
{
	const struct weight_case *c = &WEIGHT_CASES[_i];
	struct balance_pool *p = balance_pool_new(c->weights, c->n);
	size_t total = 0;

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < c->n; i++)
		total += c->weights[i];
	size_t n_picks = 5 * total;
	long *picks = calloc(n_picks, sizeof(*picks));
	ck_assert_ptr_nonnull(picks);
	for (size_t i = 0; i < n_picks; i++) {
		picks[i] = balance_pick(p, NULL);
		ck_assert(picks[i] >= 0 && (size_t)picks[i] < c->n);
	}

	/* Slide the window one pick at a time; check counts at every start. */
	size_t count[MAX_SERVERS] = {0};
	for (size_t i = 0; i < total; i++)
		count[picks[i]]++;
	for (size_t start = 0;; start++) {
		for (size_t s = 0; s < c->n; s++)
			if (count[s] != c->weights[s])
				ck_abort_msg(
				    "window at %zu: server %zu picked %zu times, weight %u", start,
				    s, count[s], c->weights[s]);
		if (start + total == n_picks)
			break;
		count[picks[start]]--;
		count[picks[start + total]]++;
	}
	free(picks);
	balance_pool_free(p);
}
END_TEST

/* A skipped server sits the round out; the others share it by weight. */
START_TEST(test_skip_one)
{
	const unsigned w[] = {5, 1, 1};
	const bool skip_a[] = {true, false, false};
	const bool skip_b[] = {false, true, false};
	struct balance_pool *p = balance_pool_new(w, 3);
	char got[16] = "";

	for (int i = 0; i < 6; i++)
		got[i] = (char)('a' + balance_pick(p, skip_a));
	ck_assert_str_eq(got, "bcbcbc");
	balance_pool_free(p);

	p = balance_pool_new(w, 3);
	memset(got, 0, sizeof(got));
	for (int i = 0; i < 12; i++)
		got[i] = (char)('a' + balance_pick(p, skip_b));
	ck_assert_str_eq(got, "aaacaaaaacaa");
	balance_pool_free(p);
}
END_TEST

/*
 * The retry loop: pick, fail, mark tried, pick again. Every server is
 * offered once, then -1. The first choice is the ordinary next pick.
 */
START_TEST(test_skip_retry)
{
	const unsigned w[] = {5, 1, 1};
	bool tried[3] = {false, false, false};
	struct balance_pool *p = balance_pool_new(w, 3);
	long first = balance_pick(p, tried);

	ck_assert_int_eq(first, 0);
	tried[first] = true;
	long second = balance_pick(p, tried);
	ck_assert(second == 1 || second == 2);
	tried[second] = true;
	long third = balance_pick(p, tried);
	ck_assert_int_eq(third, 3 - second);
	tried[third] = true;
	ck_assert_int_eq(balance_pick(p, tried), -1);
	ck_assert_int_eq(balance_pick(p, tried), -1);

	/* Afterwards the pool still serves every server, none starved. */
	size_t count[3] = {0};
	for (int i = 0; i < 700; i++)
		count[balance_pick(p, NULL)]++;
	ck_assert_uint_ge(count[0], 495);
	ck_assert_uint_le(count[0], 505);
	ck_assert_uint_ge(count[1], 95);
	ck_assert_uint_ge(count[2], 95);
	balance_pool_free(p);
}
END_TEST

/* An all-skipped pick returns -1 and leaves the state untouched. */
START_TEST(test_skip_all)
{
	const unsigned w[] = {5, 1, 1};
	const bool all[] = {true, true, true};
	const bool none[] = {false, false, false};
	struct balance_pool *p = balance_pool_new(w, 3);
	char got[8] = "";

	ck_assert_int_eq(balance_pick(p, all), -1);
	for (int i = 0; i < 7; i++) {
		got[i] = (char)('a' + balance_pick(p, i % 2 ? none : NULL));
		ck_assert_int_eq(balance_pick(p, all), -1);
	}
	ck_assert_str_eq(got, "aabacaa");
	balance_pool_free(p);
}
END_TEST

START_TEST(test_edges)
{
	const unsigned zero[] = {1, 0};
	const unsigned huge[] = {1, 2000000};
	const unsigned one[] = {1};

	ck_assert_ptr_null(balance_pool_new(zero, 2));
	ck_assert_ptr_null(balance_pool_new(huge, 2));

	struct balance_pool *p = balance_pool_new(NULL, 0);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(balance_pick(p, NULL), -1);
	balance_pool_free(p);

	p = balance_pool_new(one, 1);
	ck_assert_int_eq(balance_pick(p, NULL), 0);
	ck_assert_int_eq(balance_pick(p, (const bool[]){true}), -1);
	ck_assert_int_eq(balance_pick(p, NULL), 0);
	balance_pool_free(p);

	ck_assert_int_eq(balance_pick(NULL, NULL), -1);
	balance_pool_free(NULL);
}
END_TEST

/* ---- weighted least connections ---- */

struct least_case {
	unsigned weights[MAX_SERVERS];
	size_t n;
	size_t load[MAX_SERVERS];
	bool skip[MAX_SERVERS];
	const char *want; /* loads held constant */
};

static const struct least_case LEAST_CASES[] = {
    /* equal loads rotate instead of always picking server 0 */
    {{1, 1, 1}, 3, {0, 0, 0}, {0}, "abcabc"},
    {{1, 1, 1}, 3, {2, 1, 1}, {0}, "bcbcbc"},
    /* all tied on load / weight: the smooth WRR order of {2, 1, 1} */
    {{2, 1, 1}, 3, {2, 1, 1}, {0}, "abcaabca"},
    {{3, 1}, 2, {3, 1}, {0}, "aabaaaba"},
    /* 4/3 > 1/1: the weight does not save server a */
    {{3, 1}, 2, {4, 1}, {0}, "bbbb"},
    /* 1/1 < 5/4 < 3/2 */
    {{1, 2, 4}, 3, {1, 3, 5}, {0}, "aaaa"},
    {{1, 2, 4}, 3, {1, 3, 3}, {0}, "cccc"},
    {{1, 1, 1}, 3, {0, 0, 5}, {true, false, false}, "bbbb"},
    {{1, 1, 1}, 3, {7, 0, 0}, {false, false, true}, "bbbb"},
    {{1, 1, 1}, 3, {9, 9, 9}, {false, true, false}, "acac"},
    /* loads past the clamp still compare by weight, without overflow */
    {{1000000, 1}, 2, {SIZE_MAX, SIZE_MAX}, {0}, "aaaa"},
};

START_TEST(test_least_sequence)
{
	const struct least_case *c = &LEAST_CASES[_i];
	struct balance_pool *p = balance_pool_new(c->weights, c->n);
	char got[64] = "";

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < strlen(c->want); i++) {
		long k = balance_pick_least(p, c->load, c->skip);
		ck_assert(k >= 0 && (size_t)k < c->n);
		got[i] = (char)('a' + k);
	}
	ck_assert_str_eq(got, c->want);
	balance_pool_free(p);
}
END_TEST

struct tunnel_case {
	unsigned weights[MAX_SERVERS];
	size_t n;
	const char *script; /* '.': open a tunnel on the pick; 'A'..: close one on a.. */
	const char *want;   /* the picks */
};

static const struct tunnel_case TUNNEL_CASES[] = {
    /*
     * Long tunnels that never close: loads climb to 3:1:1. Server a takes
     * the ties whenever smooth WRR says so, the others only when lighter.
     */
    {{3, 1, 1}, 3, "............", "abcaacabaaab"},
    /* three of a's tunnels end: a is lightest until it is tied again */
    {{3, 1, 1}, 3, "............AAA....", "abcaacabaaabaaac"},
    /* a's and c's first tunnels end, b's stays: b waits for the others */
    {{1, 1, 1}, 3, "...AC......", "abccacbaa"},
    {{1, 1}, 2, "....BB..", "abbabb"},
};

START_TEST(test_least_tunnels)
{
	const struct tunnel_case *c = &TUNNEL_CASES[_i];
	struct balance_pool *p = balance_pool_new(c->weights, c->n);
	size_t load[MAX_SERVERS] = {0};
	char got[64] = "";
	size_t n_got = 0;

	ck_assert_ptr_nonnull(p);
	for (const char *s = c->script; *s; s++) {
		if (*s != '.') {
			ck_assert_uint_gt(load[*s - 'A'], 0);
			load[*s - 'A']--;
			continue;
		}
		long k = balance_pick_least(p, load, NULL);
		ck_assert(k >= 0 && (size_t)k < c->n);
		load[k]++;
		got[n_got++] = (char)('a' + k);
	}
	ck_assert_str_eq(got, c->want);
	balance_pool_free(p);
}
END_TEST

START_TEST(test_least_edges)
{
	const unsigned w[] = {1, 2};
	const bool all[] = {true, true};
	struct balance_pool *p = balance_pool_new(w, 2);

	ck_assert_int_eq(balance_pick_least(p, (size_t[]){0, 0}, all), -1);
	/* NULL load: all zero, so the smooth WRR order of {1, 2} */
	ck_assert_int_eq(balance_pick_least(p, NULL, NULL), 1);
	ck_assert_int_eq(balance_pick_least(p, NULL, NULL), 0);
	ck_assert_int_eq(balance_pick_least(p, NULL, NULL), 1);
	balance_pool_free(p);
	ck_assert_int_eq(balance_pick_least(NULL, NULL, NULL), -1);

	p = balance_pool_new(NULL, 0);
	ck_assert_int_eq(balance_pick_least(p, NULL, NULL), -1);
	balance_pool_free(p);
}
END_TEST

/* ---- power of two choices ---- */

/* rnd's high half draws the first server, the low half the second */
#define RND(hi, lo) (((uint64_t)(hi) << 32) | (uint64_t)(lo))

struct p2c_case {
	unsigned weights[MAX_SERVERS];
	size_t n;
	size_t load[MAX_SERVERS];
	bool skip[MAX_SERVERS];
	uint64_t rnd;
	long want;
};

static const struct p2c_case P2C_CASES[] = {
    /* equal weights: draws a then b (b among the rest), lighter wins */
    {{1, 1, 1, 1}, 4, {4, 3, 2, 1}, {0}, RND(0, 0), 1},
    {{1, 1, 1, 1}, 4, {4, 3, 2, 1}, {0}, RND(0x80000000, 0xffffffff), 3},
    {{1, 1, 1, 1}, 4, {4, 3, 2, 1}, {0}, RND(0xc0000000, 0), 3},
    {{1, 1, 1, 1}, 4, {1, 3, 2, 1}, {0}, RND(0x40000000, 0x55555555), 0},
    {{1, 1, 1, 1}, 4, {1, 3, 2, 1}, {0}, RND(0x40000000, 0x55555556), 2},
    /* {3, 1}: the first draw is a below 3/4 of the range */
    {{3, 1}, 2, {0, 0}, {0}, RND(0xbfffffff, 0), 0},
    {{3, 1}, 2, {0, 0}, {0}, RND(0xc0000000, 0), 1},
    {{3, 1}, 2, {3, 1}, {0}, RND(0, 0), 0},
    {{3, 1}, 2, {3, 1}, {0}, RND(0xffffffff, 0xffffffff), 1},
    /* load / weight, not load: 4/3 > 1/1 but 3/2 > 1/1 > ... */
    {{3, 1}, 2, {4, 1}, {0}, RND(0, 0), 1},
    {{2, 1}, 2, {3, 1}, {0}, RND(0, 0), 1},
    {{1, 4}, 2, {1, 3}, {0}, RND(0, 0), 1},
    {{1, 4}, 2, {1, 5}, {0}, RND(0xffffffff, 0), 0},
    /* skipped servers are never drawn */
    {{1, 1, 1, 1}, 4, {0, 5, 5, 5}, {true, false, false, false}, RND(0, 0), 1},
    {{1, 1, 1, 1}, 4, {0, 5, 4, 5}, {true, false, false, false}, RND(0, 0), 2},
    {{1, 1, 1, 1}, 4, {0, 0, 9, 0}, {true, true, false, true}, RND(0, 0), 2},
    {{1, 1, 1, 1}, 4, {0, 0, 9, 0}, {true, true, true, true}, RND(0, 0), -1},
    {{5}, 1, {3}, {0}, RND(0xffffffff, 0xffffffff), 0},
    /* a heavy weight takes nearly all of the first draw */
    {{1000000, 1, 1}, 3, {0, 0, 0}, {0}, RND(0xfffe0000, 0), 0},
    {{1000000, 1, 1}, 3, {0, 0, 0}, {0}, RND(0xffffffff, 0), 2},
};

START_TEST(test_p2c_exact)
{
	const struct p2c_case *c = &P2C_CASES[_i];
	struct balance_pool *p = balance_pool_new(c->weights, c->n);

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(balance_pick_random2(p, c->load, c->skip, c->rnd), c->want);
	balance_pool_free(p);
}
END_TEST

/* splitmix64: a seeded generator, so the statistics below never vary */
static uint64_t test_rand(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* With equal loads the first draw decides: shares follow the weights. */
START_TEST(test_p2c_weights)
{
	const unsigned w[] = {1, 2, 3, 4};
	size_t load[4] = {0};
	size_t count[4] = {0};
	uint64_t seed = 12;
	struct balance_pool *p = balance_pool_new(w, 4);
	const size_t picks = 100000;

	for (size_t i = 0; i < picks; i++) {
		long k = balance_pick_random2(p, load, NULL, test_rand(&seed));
		EXPECT(k >= 0 && k < 4);
		count[k]++;
	}
	for (size_t s = 0; s < 4; s++) {
		double share = (double)count[s] / (double)picks;
		double want = w[s] / 10.0;
		printf("p2c equal loads: server %zu weight %u share %.4f (want %.4f)\n", s, w[s],
		       share, want);
		ck_assert(share > want * 0.95 && share < want * 1.05);
	}
	balance_pool_free(p);
}
END_TEST

/*
 * Long-lived sessions: each pick opens one, a random one closes one pick
 * in four. Loads settle in proportion to the weights.
 */
START_TEST(test_p2c_sessions)
{
	const unsigned w[] = {1, 2, 3, 4, 10};
	size_t load[5] = {0};
	size_t open = 0;
	uint64_t seed = 34;
	struct balance_pool *p = balance_pool_new(w, 5);

	for (int i = 0; i < 20000; i++) {
		long k = balance_pick_random2(p, load, NULL, test_rand(&seed));
		EXPECT(k >= 0 && k < 5);
		load[k]++;
		open++;
		if (i % 4 == 3) {
			/* close a session chosen uniformly among the open ones */
			uint64_t victim = test_rand(&seed) % open;
			size_t s = 0;
			while (victim >= load[s])
				victim -= load[s++];
			load[s]--;
			open--;
		}
	}
	for (size_t s = 0; s < 5; s++) {
		double per_weight = (double)load[s] / w[s];
		double mean = (double)open / 20;
		printf("p2c sessions: server %zu weight %u load %zu (%.1f per weight, mean %.1f)\n",
		       s, w[s], load[s], per_weight, mean);
		ck_assert(per_weight > mean * 0.9 && per_weight < mean * 1.1);
	}
	balance_pool_free(p);
}
END_TEST

/* ---- hash ---- */

struct hash_case {
	const char *in;
	uint64_t want; /* FNV-1a 64 then the splitmix64 finalizer, by a Python reference */
};

static const struct hash_case HASH_CASES[] = {
    {"", UINT64_C(0xf52a15e9a9b5e89b)},
    {"a", UINT64_C(0x02c0bdbf481420f8)},
    {"foobar", UINT64_C(0x404da9e3b74078c2)},
    {"10.0.0.5:9000", UINT64_C(0x29d696ed9ef391ca)},
};

START_TEST(test_hash_values)
{
	const struct hash_case *c = &HASH_CASES[_i];

	ck_assert_uint_eq(balance_hash(c->in, strlen(c->in)), c->want);
}
END_TEST

static unsigned bits_set(uint64_t v)
{
	unsigned n = 0;

	for (; v != 0; v &= v - 1)
		n++;
	return n;
}

/* Flipping any one input bit flips about half of the output bits. */
START_TEST(test_hash_avalanche)
{
	uint64_t seed = 56;
	unsigned long flipped = 0, trials = 0;

	for (int i = 0; i < 2000; i++) {
		unsigned char buf[8];
		uint64_t v = test_rand(&seed);
		memcpy(buf, &v, sizeof(buf));
		size_t len = 1 + (size_t)(v >> 61);
		uint64_t h = balance_hash(buf, len);
		for (size_t bit = 0; bit < len * 8; bit++) {
			buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			flipped += bits_set(h ^ balance_hash(buf, len));
			buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
			trials++;
		}
	}
	double mean = (double)flipped / (double)trials;
	printf("hash avalanche: %.2f of 64 output bits flip per input bit\n", mean);
	ck_assert(mean > 31.0 && mean < 33.0);
}
END_TEST

/* ---- Maglev table ---- */

#define RING_KEYS 100000
#define RING_MAX 16

static char ring_id_buf[RING_MAX + 1][24];

/* "10.0.0.1:9000", "10.0.0.2:9000" ...; ids[RING_MAX] is "10.0.1.1:9000" */
static const char *ring_id(size_t i)
{
	char *b = ring_id_buf[i];

	if (b[0] == '\0') {
		if (i == RING_MAX)
			snprintf(b, sizeof(ring_id_buf[i]), "10.0.1.1:9000");
		else
			snprintf(b, sizeof(ring_id_buf[i]), "10.0.0.%zu:9000", i + 1);
	}
	return b;
}

/* the hash of client key k, as a hash_key = "cookie:io" value could be */
static uint64_t ring_key(unsigned k)
{
	char b[32];
	int len = snprintf(b, sizeof(b), "sid-%u", k);

	return balance_hash(b, (size_t)len);
}

/* the id of the server for key k */
static const char *ring_pick_id(const struct balance_ring *r, const char *const *ids, unsigned k,
				const bool *skip)
{
	long s = balance_ring_pick(r, ring_key(k), skip);

	EXPECT(s >= 0);
	return ids[s];
}

START_TEST(test_ring_sticky)
{
	const char *ids[5], *rev[5];
	const unsigned w[] = {1, 2, 3, 1, 1}, wrev[] = {1, 1, 3, 2, 1};

	for (size_t i = 0; i < 5; i++) {
		ids[i] = ring_id(i);
		rev[4 - i] = ring_id(i);
	}
	struct balance_ring *a = balance_ring_new(ids, w, 5);
	struct balance_ring *b = balance_ring_new(ids, w, 5);
	struct balance_ring *c = balance_ring_new(rev, wrev, 5);
	ck_assert(a && b && c);
	for (unsigned k = 0; k < RING_KEYS; k++) {
		const char *id = ring_pick_id(a, ids, k, NULL);
		EXPECT(strcmp(ring_pick_id(a, ids, k, NULL), id) == 0);
		EXPECT(strcmp(ring_pick_id(b, ids, k, NULL), id) == 0);
		/* the same servers listed in another order: same table */
		EXPECT(strcmp(ring_pick_id(c, rev, k, NULL), id) == 0);
	}
	balance_ring_free(a);
	balance_ring_free(b);
	balance_ring_free(c);
}
END_TEST

/*
 * A change to the hash or to the table moves every sticky client when the
 * proxy is upgraded, so it must be deliberate: pinned for a few keys.
 */
START_TEST(test_ring_pinned)
{
	const char *ids[] = {"10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"};
	const unsigned w[] = {1, 1, 1};
	const char *want = "bccabcaabbbcaacc";
	struct balance_ring *r = balance_ring_new(ids, w, 3);
	char got[32] = "";

	for (unsigned k = 0; k < strlen(want); k++)
		got[k] = (char)('a' + balance_ring_pick(r, ring_key(k), NULL));
	ck_assert_str_eq(got, want);
	balance_ring_free(r);
}
END_TEST

struct share_case {
	unsigned weights[RING_MAX];
	size_t n;
};

static const struct share_case SHARE_CASES[] = {
    {{1, 1, 1}, 3},
    {{1, 2, 3}, 3},
    {{2, 2, 1, 1}, 4},
    {{1, 1, 1, 1, 1}, 5},
    {{1, 2, 1, 2, 1, 2}, 6},
    {{3, 1, 1, 1, 1, 1, 1}, 7},
    {{1, 1, 1, 1, 1, 1, 1, 1}, 8},
    {{1, 1, 1, 1, 1, 1, 1, 1, 1}, 9},
    {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 10},
    {{2, 1, 2, 1, 2, 1, 2, 1, 2, 1}, 10},
    {{100, 200, 300, 400, 500, 600, 700, 800, 900, 1000}, 10},
};

/* 100k keys: every server within 10 % of its weight share. */
START_TEST(test_ring_shares)
{
	const struct share_case *c = &SHARE_CASES[_i];
	const char *ids[RING_MAX];
	size_t count[RING_MAX] = {0};
	unsigned total = 0;
	double worst = 0;

	for (size_t i = 0; i < c->n; i++) {
		ids[i] = ring_id(i);
		total += c->weights[i];
	}
	struct balance_ring *r = balance_ring_new(ids, c->weights, c->n);
	ck_assert_ptr_nonnull(r);
	for (unsigned k = 0; k < RING_KEYS; k++) {
		long s = balance_ring_pick(r, ring_key(k), NULL);
		EXPECT(s >= 0 && (size_t)s < c->n);
		count[s]++;
	}
	for (size_t i = 0; i < c->n; i++) {
		double want = (double)RING_KEYS * c->weights[i] / total;
		double err = ((double)count[i] - want) / want;
		if (err < 0)
			err = -err;
		if (err > worst)
			worst = err;
		ck_assert_msg(err <= 0.10, "server %zu: %zu keys, want %.0f", i, count[i], want);
	}
	printf("ring shares, %zu servers, weights from %u: worst error %.2f %%\n", c->n,
	       c->weights[0], worst * 100);
	balance_ring_free(r);
}
END_TEST

/* Fraction of RING_KEYS whose server (by id) differs between a and b. */
static double ring_moved(const struct balance_ring *a, const char *const *ids_a,
			 const struct balance_ring *b, const char *const *ids_b)
{
	unsigned moved = 0;

	for (unsigned k = 0; k < RING_KEYS; k++)
		moved +=
		    strcmp(ring_pick_id(a, ids_a, k, NULL), ring_pick_id(b, ids_b, k, NULL)) != 0;
	return (double)moved / RING_KEYS;
}

/*
 * N servers, then one added (ideal: 1/(N+1) of the keys move, all to it),
 * then each one removed in turn (ideal: its 1/N): at most 1.5/N.
 */
START_TEST(test_ring_movement)
{
	const size_t n = (size_t)_i;
	const char *ids[RING_MAX + 1], *less[RING_MAX];
	unsigned w[RING_MAX + 1];
	double worst_remove = 0;

	for (size_t i = 0; i < n; i++) {
		ids[i] = ring_id(i);
		w[i] = 1;
	}
	ids[n] = ring_id(RING_MAX);
	w[n] = 1;
	struct balance_ring *base = balance_ring_new(ids, w, n);
	struct balance_ring *more = balance_ring_new(ids, w, n + 1);
	ck_assert(base && more);
	double added = ring_moved(base, ids, more, ids);
	for (size_t gone = 0; gone < n; gone++) {
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (i != gone)
				less[m++] = ids[i];
		struct balance_ring *r = balance_ring_new(less, w, n - 1);
		ck_assert_ptr_nonnull(r);
		double removed = ring_moved(base, ids, r, less);
		if (removed > worst_remove)
			worst_remove = removed;
		balance_ring_free(r);
	}
	printf("ring movement N=%zu: add one %.4f (ideal %.4f), remove one worst %.4f "
	       "(ideal %.4f), bound %.4f\n",
	       n, added, 1.0 / (double)(n + 1), worst_remove, 1.0 / (double)n, 1.5 / (double)n);
	ck_assert(added <= 1.5 / (double)n);
	ck_assert(worst_remove <= 1.5 / (double)n);
	balance_ring_free(base);
	balance_ring_free(more);
}
END_TEST

/*
 * A skipped server's keys go elsewhere, spread over the others by weight;
 * every other key stays; the detour is as sticky as the first choice.
 */
START_TEST(test_ring_skip)
{
	const char *ids[5];
	const unsigned w[] = {1, 2, 1, 1, 3};
	const bool skip[] = {false, false, true, false, false};
	size_t moved_to[5] = {0}, moved = 0;

	for (size_t i = 0; i < 5; i++)
		ids[i] = ring_id(i);
	struct balance_ring *r = balance_ring_new(ids, w, 5);
	ck_assert_ptr_nonnull(r);
	for (unsigned k = 0; k < RING_KEYS; k++) {
		long first = balance_ring_pick(r, ring_key(k), NULL);
		long s = balance_ring_pick(r, ring_key(k), skip);
		EXPECT(s >= 0 && s != 2);
		EXPECT(balance_ring_pick(r, ring_key(k), skip) == s);
		if (first != 2) {
			EXPECT(s == first);
			continue;
		}
		moved_to[s]++;
		moved++;
	}
	for (size_t i = 0; i < 5; i++) {
		if (i == 2)
			continue;
		double share = (double)moved_to[i] / (double)moved, want = w[i] / 7.0;
		printf("ring skip: server %zu weight %u takes %.3f of the skipped keys (weight "
		       "share %.3f)\n",
		       i, w[i], share, want);
		ck_assert(share > want * 0.5 && share < want * 1.5);
	}
	const bool one_left[] = {true, true, true, false, true};
	const bool none_left[] = {true, true, true, true, true};
	for (unsigned k = 0; k < 1000; k++) {
		EXPECT(balance_ring_pick(r, ring_key(k), one_left) == 3);
		EXPECT(balance_ring_pick(r, ring_key(k), none_left) == -1);
	}
	balance_ring_free(r);
}
END_TEST

START_TEST(test_ring_edges)
{
	const char *ids[] = {"10.0.0.1:9000", "10.0.0.2:9000"};
	const char *null_id[] = {"10.0.0.1:9000", NULL};

	/* weight 0 is refused, not clamped: a config mistake must not route */
	errno = 0;
	ck_assert_ptr_null(balance_ring_new(ids, (const unsigned[]){1, 0}, 2));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(balance_ring_new(ids, (const unsigned[]){1, 1000001}, 2));
	ck_assert_ptr_null(balance_ring_new(null_id, (const unsigned[]){1, 1}, 2));

	/* more servers than the table has 100 slots for */
	static char many_buf[656][24];
	static const char *many[656];
	static unsigned w[656];
	for (size_t i = 0; i < 656; i++) {
		snprintf(many_buf[i], sizeof(many_buf[i]), "10.0.%zu.%zu:9000", i / 256, i % 256);
		many[i] = many_buf[i];
		w[i] = 1;
	}
	ck_assert_ptr_null(balance_ring_new(many, w, 656));
	struct balance_ring *r = balance_ring_new(many, w, 655);
	ck_assert_ptr_nonnull(r);
	balance_ring_free(r);

	r = balance_ring_new(NULL, NULL, 0);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(balance_ring_pick(r, 42, NULL), -1);
	balance_ring_free(r);

	r = balance_ring_new(ids, (const unsigned[]){1000000, 1000000}, 1);
	ck_assert_ptr_nonnull(r);
	for (uint64_t k = 0; k < 1000; k++)
		EXPECT(balance_ring_pick(r, k, NULL) == 0);
	ck_assert_int_eq(balance_ring_pick(r, 7, (const bool[]){true}), -1);
	balance_ring_free(r);

	ck_assert_int_eq(balance_ring_pick(NULL, 1, NULL), -1);
	balance_ring_free(NULL);
	ck_assert_int_eq(balance_pick_random2(NULL, NULL, NULL, 0), -1);
}
END_TEST

static Suite *balance_suite(void)
{
	Suite *s = suite_create("balance");
	TCase *tc = tcase_create("swrr");

	tcase_add_loop_test(tc, test_sequence, 0, (int)N_ELEMS(SEQ_CASES));
	tcase_add_loop_test(tc, test_window_counts, 0, (int)N_ELEMS(WEIGHT_CASES));
	tcase_add_test(tc, test_skip_one);
	tcase_add_test(tc, test_skip_retry);
	tcase_add_test(tc, test_skip_all);
	tcase_add_test(tc, test_edges);
	suite_add_tcase(s, tc);

	tc = tcase_create("least_conn");
	tcase_add_loop_test(tc, test_least_sequence, 0, (int)N_ELEMS(LEAST_CASES));
	tcase_add_loop_test(tc, test_least_tunnels, 0, (int)N_ELEMS(TUNNEL_CASES));
	tcase_add_test(tc, test_least_edges);
	suite_add_tcase(s, tc);

	tc = tcase_create("random2");
	tcase_add_loop_test(tc, test_p2c_exact, 0, (int)N_ELEMS(P2C_CASES));
	tcase_add_test(tc, test_p2c_weights);
	tcase_add_test(tc, test_p2c_sessions);
	suite_add_tcase(s, tc);

	tc = tcase_create("hash");
	tcase_add_loop_test(tc, test_hash_values, 0, (int)N_ELEMS(HASH_CASES));
	tcase_add_test(tc, test_hash_avalanche);
	suite_add_tcase(s, tc);

	tc = tcase_create("ring");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_ring_sticky);
	tcase_add_test(tc, test_ring_pinned);
	tcase_add_loop_test(tc, test_ring_shares, 0, (int)N_ELEMS(SHARE_CASES));
	tcase_add_loop_test(tc, test_ring_movement, 3, 11);
	tcase_add_test(tc, test_ring_skip);
	tcase_add_test(tc, test_ring_edges);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(balance_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
