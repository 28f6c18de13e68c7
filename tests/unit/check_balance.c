/*
 * check_balance: smooth weighted round robin. Exact sequences where nginx
 * documents them, exact counts over every window of W = sum(weights)
 * picks, and the skip mask used to retry the next server after a failed
 * connect.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
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
