/*
 * check_admin: who may talk to the admin listener. admin_peer_allowed()
 * over configs parsed from text (so the allow entries are read as an
 * operator writes them): loopback (127/8, ::1, ::ffff:127.x.y.z) and the
 * Unix socket always; anything else only inside an allow prefix, bits
 * compared exactly at the prefix boundary; a v4-mapped peer follows the
 * IPv4 entries. Also the exact errors for bad allow entries.
 */
#include <check.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "admin.h"
#include "config.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define FILE_NAME "/etc/switchyard/admin-test.conf"

/* Lines 1-3; the admin block is line 4 (and on, if it has newlines). */
/* An admin block on line 4 with allow = [ LIST ]. */
#define ALLOW(list) "admin = { address = \"127.0.0.1:9901\"; allow = [ " list " ]; };"

#define BASE                                                                                       \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                                        \
	"upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n"  \
	"routes = ( { upstream = \"app\"; } );\n"

static struct config *parse_admin(const char *admin_block)
{
	char text[2048];
	struct config_errors errs = {0};
	snprintf(text, sizeof(text), BASE "%s\n", admin_block);
	struct config *cfg = config_parse(FILE_NAME, text, &errs);
	ck_assert_msg(cfg != NULL, "config with %s: %s", admin_block,
		      errs.n ? errs.msg[0] : "(no message)");
	config_errors_fini(&errs);
	return cfg;
}

/* Is the peer text (IPv4, IPv6 or "unix") allowed by cfg (NULL: no admin block)? */
static bool allowed(const struct config_admin *cfg, const char *peer)
{
	unsigned char addr[16] = {0};
	if (strcmp(peer, "unix") == 0)
		return admin_peer_allowed(cfg, AF_UNIX, addr);
	if (inet_pton(AF_INET, peer, addr) == 1)
		return admin_peer_allowed(cfg, AF_INET, addr);
	ck_assert_msg(inet_pton(AF_INET6, peer, addr) == 1, "bad peer in the test: %s", peer);
	return admin_peer_allowed(cfg, AF_INET6, addr);
}

struct peer_case {
	const char *admin; /* the admin block; NULL: the allow list absent (cfg NULL too) */
	const char *peer;
	bool want;
};

static const struct peer_case PEER_CASES[] = {
    /* no allow list: loopback and unix only */
    {NULL, "unix", true},
    {NULL, "127.0.0.1", true},
    {NULL, "127.255.255.254", true},
    {NULL, "127.1.2.3", true},
    {NULL, "::1", true},
    {NULL, "::ffff:127.0.0.1", true},
    {NULL, "::ffff:127.9.9.9", true},
    {NULL, "128.0.0.1", false},
    {NULL, "126.255.255.255", false},
    {NULL, "0.0.0.0", false},
    {NULL, "10.1.2.3", false},
    {NULL, "192.0.2.2", false},
    {NULL, "::", false},
    {NULL, "::2", false},
    {NULL, "::127.0.0.1", false}, /* IPv4-compatible, not mapped: not loopback */
    {NULL, "fe80::1", false},
    {NULL, "::ffff:10.1.2.3", false},
    {NULL, "::1:0:0:1", false},
    {ALLOW(""), "10.1.2.3", false},
    {ALLOW(""), "127.0.0.1", true},
    /* 10.0.0.0/8 */
    {ALLOW("\"10.0.0.0/8\""), "10.1.2.3", true},
    {ALLOW("\"10.0.0.0/8\""), "10.0.0.0", true},
    {ALLOW("\"10.0.0.0/8\""), "10.255.255.255", true},
    {ALLOW("\"10.0.0.0/8\""), "11.0.0.0", false},
    {ALLOW("\"10.0.0.0/8\""), "9.255.255.255", false},
    {ALLOW("\"10.0.0.0/8\""), "::ffff:10.9.8.7", true},
    {ALLOW("\"10.0.0.0/8\""), "a00::1", false},
    {ALLOW("\"10.0.0.0/8\""), "::10.1.2.3", false},
    {ALLOW("\"10.0.0.0/8\""), "127.0.0.1", true},
    {ALLOW("\"10.0.0.0/8\""), "unix", true},
    /* /31: two addresses, the boundary in the last bit */
    {ALLOW("\"192.0.2.2/31\""), "192.0.2.2", true},
    {ALLOW("\"192.0.2.2/31\""), "192.0.2.3", true},
    {ALLOW("\"192.0.2.2/31\""), "192.0.2.1", false},
    {ALLOW("\"192.0.2.2/31\""), "192.0.2.4", false},
    /* a prefix not on a byte boundary: /12 and /7 */
    {ALLOW("\"172.16.0.0/12\""), "172.31.255.255", true},
    {ALLOW("\"172.16.0.0/12\""), "172.32.0.0", false},
    {ALLOW("\"172.16.0.0/12\""), "172.15.255.255", false},
    {ALLOW("\"254.0.0.0/7\""), "255.1.1.1", true},
    {ALLOW("\"254.0.0.0/7\""), "253.255.255.255", false},
    /* a single address is /32; /32 written out the same */
    {ALLOW("\"10.1.2.3\""), "10.1.2.3", true},
    {ALLOW("\"10.1.2.3\""), "10.1.2.4", false},
    {ALLOW("\"10.1.2.3/32\""), "10.1.2.2", false},
    {ALLOW("\"10.1.2.3/32\""), "10.1.2.3", true},
    /* host bits in the entry: the prefix decides */
    {ALLOW("\"10.1.2.3/8\""), "10.200.0.1", true},
    {ALLOW("\"10.1.2.3/8\""), "11.1.2.3", false},
    /* /0: every IPv4 address (and v4-mapped ones), no IPv6 */
    {ALLOW("\"0.0.0.0/0\""), "8.8.8.8", true},
    {ALLOW("\"0.0.0.0/0\""), "255.255.255.255", true},
    {ALLOW("\"0.0.0.0/0\""), "::ffff:8.8.8.8", true},
    {ALLOW("\"0.0.0.0/0\""), "2001:db8::1", false},
    /* ::/0: every IPv6 address; a v4-mapped peer is IPv4 and not in it */
    {ALLOW("\"::/0\""), "2001:db8::1", true},
    {ALLOW("\"::/0\""), "fe80::1", true},
    {ALLOW("\"::/0\""), "8.8.8.8", false},
    {ALLOW("\"::/0\""), "::ffff:8.8.8.8", false},
    /* IPv6 prefixes: /64, /33 (a boundary inside a byte), /128 */
    {ALLOW("\"fd00::/64\""), "fd00::2", true},
    {ALLOW("\"fd00::/64\""), "fd00::ffff:ffff:ffff:ffff", true},
    {ALLOW("\"fd00::/64\""), "fd00:0:0:1::2", false},
    {ALLOW("\"fd00::/64\""), "fd01::2", false},
    {ALLOW("\"2001:db8::/33\""), "2001:db8:7fff:ffff::1", true},
    {ALLOW("\"2001:db8::/33\""), "2001:db8:8000::1", false},
    {ALLOW("\"2001:db8::5/128\""), "2001:db8::5", true},
    {ALLOW("\"2001:db8::5/128\""), "2001:db8::4", false},
    {ALLOW("\"2001:db8::5\""), "2001:db8::6", false},
    /* an IPv6 entry never admits an IPv4 peer, even as the same bytes */
    {ALLOW("\"::ffff:10.0.0.0/104\""), "10.1.1.1", false},
    {ALLOW("\"::ffff:10.0.0.0/104\""), "::ffff:10.1.1.1", false},
    /* several entries: any one is enough */
    {ALLOW("\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\""), "192.0.2.7", true},
    {ALLOW("\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\""), "fdff::1", true},
    {ALLOW("\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\""), "192.0.2.8", false},
    /* a unix admin socket with an allow list: unix peers still allowed */
    {"admin = { address = \"unix:/run/sy.sock\"; allow = [ \"10.0.0.0/8\" ]; };", "unix", true},
};

START_TEST(test_peer)
{
	const struct peer_case *c = &PEER_CASES[_i];
	struct config *cfg = c->admin ? parse_admin(c->admin) : NULL;
	bool got = allowed(cfg ? &cfg->admin : NULL, c->peer);
	ck_assert_msg(got == c->want, "%s with %s: got %s", c->peer, c->admin ? c->admin : "(none)",
		      got ? "allowed" : "refused");
	config_free(cfg);
}
END_TEST

/* A config with no admin block at all: admin not enabled, nothing allowed but loopback. */
START_TEST(test_no_admin_block)
{
	struct config *cfg = parse_admin("");
	ck_assert(!cfg->admin.enabled);
	ck_assert_uint_eq(cfg->admin.n_allow, 0);
	ck_assert(allowed(&cfg->admin, "127.0.0.1"));
	ck_assert(allowed(&cfg->admin, "::1"));
	ck_assert(!allowed(&cfg->admin, "10.0.0.1"));
	config_free(cfg);
}
END_TEST

START_TEST(test_parsed_entries)
{
	struct config *cfg =
	    parse_admin("admin = { address = \"unix:/run/sy.sock\"; allow = [ "
			"\"10.0.0.0/8\", \"fd00::/64\", \"192.0.2.7\", \"::1\" ]; };");
	unsigned char want[16];
	ck_assert(cfg->admin.enabled);
	ck_assert_str_eq(cfg->admin.unix_path, "/run/sy.sock");
	ck_assert_uint_eq(cfg->admin.n_allow, 4);
	ck_assert_int_eq(cfg->admin.allow[0].family, AF_INET);
	ck_assert_uint_eq(cfg->admin.allow[0].prefix, 8);
	inet_pton(AF_INET, "10.0.0.0", want);
	ck_assert_mem_eq(cfg->admin.allow[0].addr, want, 4);
	ck_assert_int_eq(cfg->admin.allow[1].family, AF_INET6);
	ck_assert_uint_eq(cfg->admin.allow[1].prefix, 64);
	inet_pton(AF_INET6, "fd00::", want);
	ck_assert_mem_eq(cfg->admin.allow[1].addr, want, 16);
	ck_assert_int_eq(cfg->admin.allow[2].family, AF_INET);
	ck_assert_uint_eq(cfg->admin.allow[2].prefix, 32);
	ck_assert_int_eq(cfg->admin.allow[3].family, AF_INET6);
	ck_assert_uint_eq(cfg->admin.allow[3].prefix, 128);
	config_free(cfg);
}
END_TEST

struct bad_case {
	const char *admin;
	const char *want; /* the one error, after FILE_NAME */
};

static const struct bad_case BAD_CASES[] = {
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0.0/99\" ]; };",
     ":4: bad value in 'allow': \"10.0.0.0/99\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0.0/33\" ]; };",
     ":4: bad value in 'allow': \"10.0.0.0/33\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"fd00::/129\" ]; };",
     ":4: bad value in 'allow': \"fd00::/129\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0.0/\" ]; };",
     ":4: bad value in 'allow': \"10.0.0.0/\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0.0/+8\" ]; };",
     ":4: bad value in 'allow': \"10.0.0.0/+8\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0.0/8x\" ]; };",
     ":4: bad value in 'allow': \"10.0.0.0/8x\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"10.0.0/8\" ]; };",
     ":4: bad value in 'allow': \"10.0.0/8\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"\" ]; };",
     ":4: bad value in 'allow': \"\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = [ \"localhost\" ]; };",
     ":4: bad value in 'allow': \"localhost\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\";\n allow = [ \"10.0.0.0/8\",\n \"x/1\" ]; };",
     ":6: bad value in 'allow': \"x/1\": expected ADDRESS/PREFIX"},
    {"admin = { address = \"127.0.0.1:9901\"; allow = \"10.0.0.0/8\"; };",
     ":4: 'admin.allow' must be an array of strings"},
    {"admin = { allow = [ \"10.0.0.0/8\" ]; };", ":4: missing 'address' in 'admin'"},
};

START_TEST(test_bad)
{
	const struct bad_case *c = &BAD_CASES[_i];
	char text[2048], want[512];
	struct config_errors errs = {0};
	snprintf(text, sizeof(text), BASE "%s\n", c->admin);
	snprintf(want, sizeof(want), "%s%s", FILE_NAME, c->want);
	struct config *cfg = config_parse(FILE_NAME, text, &errs);
	ck_assert_msg(cfg == NULL, "accepted: %s", c->admin);
	ck_assert_msg(errs.n == 1, "%s: %zu errors (first: %s)", c->admin, errs.n,
		      errs.n ? errs.msg[0] : "-");
	ck_assert_str_eq(errs.msg[0], want);
	config_errors_fini(&errs);
}
END_TEST

static Suite *admin_suite(void)
{
	Suite *s = suite_create("admin");
	TCase *tc = tcase_create("access");

	tcase_add_loop_test(tc, test_peer, 0, (int)N_ELEMS(PEER_CASES));
	tcase_add_test(tc, test_no_admin_block);
	tcase_add_test(tc, test_parsed_entries);
	tcase_add_loop_test(tc, test_bad, 0, (int)N_ELEMS(BAD_CASES));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(admin_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
