/*
 * check_fdlimit: the descriptor arithmetic. What a config needs, what fits
 * a given limit (connections first, pipes keeping their quarter share), and
 * the exact warning an operator reads.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fdlimit.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct fit_case {
	const char *name;
	size_t max_connections;
	enum config_tunnel_mode mode;
	size_t n_listens;
	size_t keepalive, n_servers; /* one upstream */
	const char *error_log, *access_log;
	size_t limit;
	/* want */
	size_t fixed, needed, conns, pipes;
};

static const struct fit_case FIT_CASES[] = {
    /* fixed = 32 reserve + 1 listener + 32 idle pool; 2 per connection + 2 per pipe */
    {"defaults, roomy", 10000, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 30000, 65, 25065,
     10000, 2500},
    {"exactly enough", 10000, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 25065, 65, 25065,
     10000, 2500},
    /* one short: the connections still fit, a pipe goes */
    {"one short", 10000, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 25064, 65, 25065,
     10000, 2499},
    /* 959 available; a floor of 32 pipes first: (959 - 64) / 2 = 447 connections,
     * the 65 left make 32 pipes */
    {"1024, splice", 10000, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 1024, 65, 25065,
     447, 32},
    /* copy mode: no pipes, 2 per connection: (1024 - 65) / 2 */
    {"1024, copy", 10000, CONFIG_TUNNEL_COPY, 1, 32, 1, "stderr", "stderr", 1024, 65, 20065, 479,
     0},
    /* 256 with max_connections 1000: (191 - 64) / 2 = 63 */
    {"256, splice", 1000, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 256, 65, 2565, 63,
     32},
    /* the floor is never more than the share: 40 connections want 10 pipes */
    {"small floor", 40, CONFIG_TUNNEL_SPLICE, 1, 0, 1, "stderr", "stderr", 100, 33, 133, 23, 10},
    /* log files and listeners are counted; "off" and stderr are not */
    {"two log files, three listeners", 100, CONFIG_TUNNEL_COPY, 3, 0, 1, "/var/log/e.log",
     "/var/log/a.log", 100000, 37, 237, 100, 0},
    {"access log off", 100, CONFIG_TUNNEL_COPY, 1, 0, 1, "stderr", "off", 100000, 33, 233, 100, 0},
    /* idle pools: keepalive per server */
    {"idle pools", 100, CONFIG_TUNNEL_COPY, 1, 10, 4, "stderr", "stderr", 100000, 73, 273, 100, 0},
    /* below the fixed part: still one connection, so errors can be answered */
    {"below fixed", 100, CONFIG_TUNNEL_SPLICE, 1, 32, 1, "stderr", "stderr", 40, 65, 315, 1, 0},
};

static void fill_config(struct config *cfg, struct config_upstream *up, const struct fit_case *c)
{
	memset(cfg, 0, sizeof(*cfg));
	memset(up, 0, sizeof(*up));
	cfg->limits.max_connections = c->max_connections;
	cfg->tunnel_mode = c->mode;
	cfg->n_listens = c->n_listens;
	up->keepalive = c->keepalive;
	up->n_servers = c->n_servers;
	cfg->upstreams = up;
	cfg->n_upstreams = 1;
	cfg->error_log = (char *)c->error_log;
	cfg->access_log = (char *)c->access_log;
}

START_TEST(test_fit)
{
	const struct fit_case *c = &FIT_CASES[_i];
	struct config cfg;
	struct config_upstream up;
	struct fdlimit_plan plan;
	size_t fixed = 0;

	fill_config(&cfg, &up, c);
	ck_assert_msg(fdlimit_needed(&cfg, &fixed) == c->needed, "%s: needed %zu", c->name,
		      fdlimit_needed(&cfg, NULL));
	ck_assert_msg(fixed == c->fixed, "%s: fixed %zu", c->name, fixed);
	fdlimit_fit(&cfg, c->limit, c->limit, false, &plan);
	ck_assert_msg(plan.max_connections == c->conns, "%s: connections %zu", c->name,
		      plan.max_connections);
	ck_assert_msg(plan.max_pipes == c->pipes, "%s: pipes %zu", c->name, plan.max_pipes);
	ck_assert_uint_eq(plan.needed, c->needed);
	ck_assert_uint_eq(plan.limit, c->limit);
	/* whatever was cut, the plan fits the limit (or serves one connection) */
	ck_assert(plan.fixed + 2 * plan.max_connections + 2 * plan.max_pipes <= c->limit ||
		  plan.max_connections == 1);
}
END_TEST

static void plan_for(struct config *cfg, struct config_upstream *up, size_t max_connections,
		     size_t nofile, size_t limit, size_t hard, struct fdlimit_plan *plan)
{
	struct fit_case c = {.max_connections = max_connections,
			     .mode = CONFIG_TUNNEL_SPLICE,
			     .n_listens = 1,
			     .keepalive = 32,
			     .n_servers = 1,
			     .error_log = "stderr",
			     .access_log = "stderr"};
	fill_config(cfg, up, &c);
	cfg->limits.nofile = nofile;
	fdlimit_fit(cfg, limit, hard, nofile > 0, plan);
}

START_TEST(test_warning_hard_limit)
{
	struct config cfg;
	struct config_upstream up;
	struct fdlimit_plan plan;
	char w[512];

	plan_for(&cfg, &up, 10000, 0, 1024, 1024, &plan);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_str_eq(w, "max_connections 10000 needs about 25065 descriptors; the hard limit "
			    "is 1024: serving at most 447 connections; raise LimitNOFILE= or "
			    "ulimit -Hn");
}
END_TEST

START_TEST(test_warning_none_when_it_fits)
{
	struct config cfg;
	struct config_upstream up;
	struct fdlimit_plan plan;
	char w[512] = "x";

	plan_for(&cfg, &up, 10000, 0, 25065, 25065, &plan);
	ck_assert(!fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_str_eq(w, "");
	/* pipes down to their floor but every connection fits: no warning */
	plan_for(&cfg, &up, 10000, 0, 20129, 20129, &plan);
	ck_assert_uint_eq(plan.max_connections, 10000);
	ck_assert_uint_eq(plan.max_pipes, 32);
	ck_assert(!fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	/* one less: a connection goes, the floor stays */
	plan_for(&cfg, &up, 10000, 0, 20128, 20128, &plan);
	ck_assert_uint_eq(plan.max_connections, 9999);
	ck_assert_uint_eq(plan.max_pipes, 32);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
}
END_TEST

START_TEST(test_warning_nofile)
{
	struct config cfg;
	struct config_upstream up;
	struct fdlimit_plan plan;
	char w[512];

	/* limits.nofile below what max_connections needs */
	plan_for(&cfg, &up, 1000, 500, 500, 20000, &plan);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_str_eq(w, "max_connections 1000 needs about 2565 descriptors; the descriptor "
			    "limit is 500: serving at most 185 connections; raise limits.nofile "
			    "(and the hard limit)");
	/* limits.nofile above a hard limit the process may not raise, still enough */
	plan_for(&cfg, &up, 100, 40000, 20000, 20000, &plan);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_str_eq(w, "limits.nofile 40000 is above the hard limit 20000, which this "
			    "process may not raise: using 20000");
	/* both */
	plan_for(&cfg, &up, 10000, 40000, 20000, 20000, &plan);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_str_eq(w, "limits.nofile 40000 is above the hard limit 20000, which this "
			    "process may not raise: using 20000; max_connections 10000 needs "
			    "about 25065 descriptors; the descriptor limit is 20000: serving at "
			    "most 9935 connections; raise limits.nofile (and the hard limit)");
	/* granted: nothing to say */
	plan_for(&cfg, &up, 100, 4096, 4096, 4096, &plan);
	ck_assert(!fdlimit_warning(&cfg, &plan, w, sizeof(w)));
}
END_TEST

START_TEST(test_warning_truncates_safely)
{
	struct config cfg;
	struct config_upstream up;
	struct fdlimit_plan plan;
	char w[16];

	plan_for(&cfg, &up, 10000, 40000, 20000, 20000, &plan);
	ck_assert(fdlimit_warning(&cfg, &plan, w, sizeof(w)));
	ck_assert_uint_eq(strlen(w), sizeof(w) - 1);
}
END_TEST

static Suite *fdlimit_suite(void)
{
	Suite *s = suite_create("fdlimit");
	TCase *tc = tcase_create("arithmetic");

	tcase_add_loop_test(tc, test_fit, 0, (int)N_ELEMS(FIT_CASES));
	tcase_add_test(tc, test_warning_hard_limit);
	tcase_add_test(tc, test_warning_none_when_it_fits);
	tcase_add_test(tc, test_warning_nofile);
	tcase_add_test(tc, test_warning_truncates_safely);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fdlimit_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
