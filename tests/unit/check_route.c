/*
 * check_route: route_match over hand-built configs, one table row per
 * host/target pair, plus one config read through config_load to pin the
 * contract between the two (hosts stored lower-case, trailing dot dropped).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "route.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static struct config_route ROUTES[] = {
    {.name = "ws-wild", .host = "*.example.com", .path_prefix = "/ws"},
    {.name = "exact", .host = "example.com", .path_prefix = "/api"},
    {.name = "v6", .host = "[::1]"},
    {.name = "ws-any", .path_prefix = "/ws"},
    {.name = "catch"},
};
static const struct config CFG = {.routes = ROUTES, .n_routes = N_ELEMS(ROUTES)};

static struct config_route WILD_ONLY[] = {
    {.name = "ws-wild", .host = "*.example.com", .path_prefix = "/ws"},
};
static const struct config CFG_WILD = {.routes = WILD_ONLY, .n_routes = 1};

static struct config_route ROOT_ONLY[] = {
    {.name = "root", .path_prefix = "/"},
};
static const struct config CFG_ROOT = {.routes = ROOT_ONLY, .n_routes = 1};

struct route_case {
	const struct config *cfg;
	const char *host; /* NULL = no Host */
	const char *path;
	const char *want; /* route name, NULL = no match */
};

static const struct route_case CASES[] = {
    /* wildcard: subdomains at any depth, never the apex */
    {&CFG, "a.example.com", "/ws/chat", "ws-wild"},
    {&CFG, "a.b.example.com", "/ws", "ws-wild"},
    {&CFG, "A.EXAMPLE.COM:8080", "/ws", "ws-wild"},
    {&CFG, "a.example.com.", "/ws", "ws-wild"},
    {&CFG, "a.example.com.:443", "/ws", "ws-wild"},
    {&CFG, "example.com", "/ws", "ws-any"},
    {&CFG, ".example.com", "/ws", "ws-any"},
    {&CFG, "aexample.com", "/ws", "ws-any"},
    {&CFG, "a.example.com.evil", "/ws", "ws-any"},
    {&CFG, "a.example.co", "/ws", "ws-any"},
    /* exact host, case-insensitive, port and trailing dot ignored */
    {&CFG, "example.com", "/api/v1", "exact"},
    {&CFG, "Example.Com:80", "/api", "exact"},
    {&CFG, "example.com.", "/apix", "exact"}, /* plain byte prefix */
    {&CFG, "EXAMPLE.COM.:8443", "/api?q=1", "exact"},
    {&CFG, "www.example.com", "/api", "catch"},
    {&CFG, "example.com.evil", "/api", "catch"},
    {&CFG, "example.comx", "/api", "catch"},
    {&CFG, "example.co", "/api", "catch"},
    /* path compare is case-sensitive and needs the whole prefix */
    {&CFG, "example.com", "/Api", "catch"},
    {&CFG, "example.com", "/ap", "catch"},
    {&CFG, "example.com", "/", "catch"},
    {&CFG, "example.com", "api", "catch"},
    /* IPv6 literal hosts keep their brackets; the port goes */
    {&CFG, "[::1]:8080", "/x", "v6"},
    {&CFG, "[::1]", "/x", "v6"},
    {&CFG, "[::2]:8080", "/x", "catch"},
    {&CFG, "[::1", "/x", "catch"},
    /* missing or empty host: only host-less routes */
    {&CFG, NULL, "/ws", "ws-any"},
    {&CFG, NULL, "/", "catch"},
    {&CFG, "", "/ws", "ws-any"},
    {&CFG, ":8080", "/x", "catch"},
    /* absolute-form targets: the path part is matched */
    {&CFG, "example.com", "http://example.com/api/x?y", "exact"},
    {&CFG, "a.example.com", "HTTP://a.example.com:80/ws?x=1", "ws-wild"},
    {&CFG, "a.example.com", "ws+x-1.y://a.example.com/ws", "ws-wild"},
    {&CFG, "a.example.com", "http://a.example.com", "catch"},
    {&CFG, "a.example.com", "http://a.example.com?ws", "catch"},
    {&CFG, "x", "http://x/wsocket", "ws-any"},
    {&CFG, "x", "http:/ws", "catch"}, /* not absolute-form */
    {&CFG, "x", "1http://x/ws", "catch"},
    /* other request-target forms */
    {&CFG, "x", "*", "catch"},
    {&CFG, "x", "example.com:443", "catch"},
    {&CFG, "x", "", "catch"},
    /* no catch-all: NULL */
    {&CFG_WILD, NULL, "/ws", NULL},
    {&CFG_WILD, "example.com", "/ws", NULL},
    {&CFG_WILD, "a.example.com", "/w", NULL},
    {&CFG_WILD, "a.example.com", "/ws", "ws-wild"},
    /* prefix "/": every origin-form and absolute-form target, via the implicit "/" */
    {&CFG_ROOT, "x", "/", "root"},
    {&CFG_ROOT, "x", "http://x", "root"},
    {&CFG_ROOT, "x", "http://x?q", "root"},
    {&CFG_ROOT, "x", "*", NULL},
    {&CFG_ROOT, "x", "x:443", NULL},
};

START_TEST(test_route_case)
{
	const struct route_case *c = &CASES[_i];
	const struct config_route *r =
	    route_match(c->cfg, c->host, c->host ? strlen(c->host) : 0, c->path, strlen(c->path));

	if (c->want == NULL)
		ck_assert_msg(r == NULL, "host '%s' path '%s': got '%s', want no match",
			      c->host ? c->host : "(null)", c->path, r ? r->name : "");
	else
		ck_assert_msg(r != NULL && strcmp(r->name, c->want) == 0,
			      "host '%s' path '%s': got '%s', want '%s'",
			      c->host ? c->host : "(null)", c->path, r ? r->name : "(none)",
			      c->want);
}
END_TEST

/* Inputs are buffers, not strings: bytes past the given lengths never count. */
START_TEST(test_lengths)
{
	const char *host = "a.example.comXYZ";
	const char *path = "/wsXYZ";

	ck_assert_str_eq(route_match(&CFG, host, 13, path, 3)->name, "ws-wild");
	ck_assert_str_eq(route_match(&CFG, host, 13, path, 2)->name, "catch");
	ck_assert_str_eq(route_match(&CFG, host, 12, path, 3)->name, "ws-any");
	ck_assert_str_eq(route_match(&CFG, NULL, 0, NULL, 0)->name, "catch");
	ck_assert_ptr_null(route_match(&CFG_WILD, NULL, 0, NULL, 0));
	ck_assert_ptr_null(route_match(NULL, "x", 1, "/", 1));
}
END_TEST

START_TEST(test_loaded_config)
{
	static const char text[] =
	    "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
	    "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); } "
	    ");\n"
	    "routes = ( { name = \"ws\"; host = \"*.Example.COM.\"; path_prefix = \"/ws\";\n"
	    "             upstream = \"app\"; },\n"
	    "           { host = \"API.example.com\"; upstream = \"app\"; },\n"
	    "           { upstream = \"app\"; } );\n";
	char path[] = "/tmp/check_route_XXXXXX";
	struct config_errors errs;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	struct config *cfg = config_load(path, &errs);
	unlink(path);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(route_match(cfg, "chat.example.com:443", 20, "/ws", 3)->name, "ws");
	ck_assert_str_eq(route_match(cfg, "api.EXAMPLE.com", 15, "/x", 2)->name, "#2");
	ck_assert_str_eq(route_match(cfg, "example.com", 11, "/ws", 3)->name, "#3");
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

static Suite *route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *tc = tcase_create("match");

	tcase_add_loop_test(tc, test_route_case, 0, (int)N_ELEMS(CASES));
	tcase_add_test(tc, test_lengths);
	tcase_add_test(tc, test_loaded_config);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(route_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
