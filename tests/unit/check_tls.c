/*
 * check_tls: certificate selection by SNI (tls_server_pick), certificate/key
 * pair checks (tls_check_pair, tls_server_new, tls_client_new) and the
 * config errors of the tls keys. A throwaway CA and certificates are made
 * with the openssl command in a temporary directory before the suite runs
 * (removed at the end); nothing is committed.
 */
#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "tls.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64]; /* the temporary directory with the certificates */

static const char *path(const char *name)
{
	static char buf[8][256];
	static int n;
	char *p = buf[n++ % 8];
	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* A leaf signed by the test CA: STEM.pem / STEM.key; san may be "" (none). */
static int make_leaf(const char *stem, const char *cn, const char *san)
{
	FILE *f = fopen(path("ext.cnf"), "w");
	if (f == NULL)
		return -1;
	fprintf(f, "basicConstraints=CA:FALSE\n");
	if (san[0])
		fprintf(f, "subjectAltName=%s\n", san);
	fclose(f);
	return sh(
	    "cd '%s' && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	    "-keyout '%s.key' -out '%s.csr' -subj '/CN=%s' >/dev/null 2>&1 && "
	    "openssl x509 -req -in '%s.csr' -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
	    "-out '%s.pem' -extfile ext.cnf >/dev/null 2>&1",
	    dir, stem, stem, cn, stem, stem);
}

static int make_pki(void)
{
	snprintf(dir, sizeof(dir), "/tmp/check_tls_XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	if (sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	       "-nodes "
	       "-keyout ca.key -out ca.pem -days 2 -subj '/CN=check_tls CA' >/dev/null 2>&1",
	       dir) != 0)
		return -1;
	if (make_leaf("default", "default.test", "DNS:default.test") ||
	    make_leaf("wild", "*.b.test", "DNS:*.b.test") ||
	    make_leaf("a", "a.test", "DNS:a.test,DNS:exact.b.test") ||
	    make_leaf("cnonly", "cn.test", "") ||
	    make_leaf("mixed", "ignored-cn.test",
		      "DNS:Mixed.Case.Test,IP:127.0.0.1,DNS:second.test"))
		return -1;
	FILE *f = fopen(path("garbage.pem"), "w");
	if (f == NULL)
		return -1;
	fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
	      f);
	fclose(f);
	return 0;
}

/* ---- tls_server_pick ------------------------------------------------- */

static struct tls_server *server_of(const char *const *stems, size_t n, char *err, size_t errlen)
{
	static struct config_tls_cert certs[8];
	static char names[8][2][256];
	struct config_tls_server cfg = {.certs = certs, .n_certs = n, .protocols = NULL};
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i][0], sizeof(names[i][0]), "%s/%s.pem", dir, stems[i]);
		snprintf(names[i][1], sizeof(names[i][1]), "%s/%s.key", dir, stems[i]);
		certs[i].cert = names[i][0];
		certs[i].key = names[i][1];
		certs[i].line = (int)i + 1;
	}
	return tls_server_new(&cfg, err, errlen);
}

/* Listener order: the wildcard is listed before the cert with the exact name. */
static const char *const ORDER[] = {"default", "wild", "a", "cnonly", "mixed"};

static const struct {
	const char *name;
	size_t want;
} PICKS[] = {
    {NULL, 0},
    {"", 0},
    {"default.test", 0},
    {"a.test", 2},
    {"A.Test", 2},
    {"x.b.test", 1},
    {"X.B.TEST", 1},
    {"exact.b.test", 2}, /* exact beats a wildcard listed earlier */
    {"x.y.b.test", 0},	 /* one label only */
    {"b.test", 0},	 /* not the bare suffix */
    {".b.test", 0},	 /* an empty label is no label */
    {"xb.test", 0},
    {"unknown.example", 0},
    {"cn.test", 3},	    /* no subjectAltName: the CN */
    {"ignored-cn.test", 0}, /* with a subjectAltName the CN is not used */
    {"mixed.case.test", 4}, /* names are compared case-insensitively */
    {"second.test", 4},	    /* every DNS entry counts */
    {"127.0.0.1", 0},	    /* IP entries are no names */
    {"a.test.", 0},
    {"a.tes", 0},
};

START_TEST(test_pick)
{
	char err[512] = "";
	struct tls_server *srv = server_of(ORDER, N_ELEMS(ORDER), err, sizeof(err));
	ck_assert_msg(srv != NULL, "tls_server_new: %s", err);
	size_t got = tls_server_pick(srv, PICKS[_i].name);
	ck_assert_msg(got == PICKS[_i].want, "pick(%s) = %zu, want %zu",
		      PICKS[_i].name ? PICKS[_i].name : "NULL", got, PICKS[_i].want);
	tls_server_free(srv);
}
END_TEST

START_TEST(test_pick_wildcard_default)
{
	/* the default may itself be the wildcard; the exact name still wins */
	static const char *const order[] = {"wild", "a"};
	char err[512] = "";
	struct tls_server *srv = server_of(order, 2, err, sizeof(err));
	ck_assert_msg(srv != NULL, "tls_server_new: %s", err);
	ck_assert_uint_eq(tls_server_pick(srv, "q.b.test"), 0);
	ck_assert_uint_eq(tls_server_pick(srv, "exact.b.test"), 1);
	ck_assert_uint_eq(tls_server_pick(srv, "a.test"), 1);
	ck_assert_uint_eq(tls_server_pick(srv, "nothing.test"), 0);
	ck_assert_uint_eq(tls_server_pick(srv, NULL), 0);
	tls_server_free(srv);
}
END_TEST

START_TEST(test_pick_single)
{
	static const char *const order[] = {"a"};
	char err[512] = "";
	struct tls_server *srv = server_of(order, 1, err, sizeof(err));
	ck_assert_msg(srv != NULL, "tls_server_new: %s", err);
	ck_assert_uint_eq(tls_server_pick(srv, "a.test"), 0);
	ck_assert_uint_eq(tls_server_pick(srv, "other.test"), 0);
	ck_assert_uint_eq(tls_server_pick(srv, NULL), 0);
	tls_server_free(srv);
}
END_TEST

/* ---- pairs ------------------------------------------------------------ */

START_TEST(test_check_pair_ok)
{
	char err[512] = "";
	ck_assert_msg(tls_check_pair(path("a.pem"), path("a.key"), err, sizeof(err)) == 0, "%s",
		      err);
	ck_assert_msg(tls_check_pair(path("cnonly.pem"), path("cnonly.key"), err, sizeof(err)) == 0,
		      "%s", err);
}
END_TEST

static void assert_starts(const char *s, const char *prefix)
{
	ck_assert_msg(strncmp(s, prefix, strlen(prefix)) == 0, "'%s' does not start with '%s'", s,
		      prefix);
}

static void assert_has(const char *s, const char *needle)
{
	ck_assert_msg(strstr(s, needle) != NULL, "'%s' does not contain '%s'", s, needle);
}

START_TEST(test_check_pair_missing_cert)
{
	char err[512] = "";
	const char *p = path("missing.pem");
	ck_assert_int_eq(tls_check_pair(p, path("a.key"), err, sizeof(err)), -1);
	char want[300];
	snprintf(want, sizeof(want), "%s: cannot load certificate", p);
	assert_starts(err, want);
}
END_TEST

START_TEST(test_check_pair_missing_key)
{
	char err[512] = "";
	const char *p = path("missing.key");
	ck_assert_int_eq(tls_check_pair(path("a.pem"), p, err, sizeof(err)), -1);
	char want[300];
	snprintf(want, sizeof(want), "%s: cannot load private key", p);
	assert_starts(err, want);
}
END_TEST

START_TEST(test_check_pair_mismatch)
{
	char err[512] = "";
	const char *k = path("wild.key");
	ck_assert_int_eq(tls_check_pair(path("a.pem"), k, err, sizeof(err)), -1);
	char want[300];
	snprintf(want, sizeof(want), "%s: ", k);
	assert_starts(err, want);
	assert_has(err, "match"); /* "key values mismatch" or "does not match the certificate" */
}
END_TEST

START_TEST(test_check_pair_garbage)
{
	char err[512] = "";
	const char *p = path("garbage.pem");
	ck_assert_int_eq(tls_check_pair(p, path("a.key"), err, sizeof(err)), -1);
	char want[300];
	snprintf(want, sizeof(want), "%s: cannot load certificate", p);
	assert_starts(err, want);
	/* a key given as the certificate, a certificate as the key */
	ck_assert_int_eq(tls_check_pair(path("a.key"), path("a.key"), err, sizeof(err)), -1);
	ck_assert_int_eq(tls_check_pair(path("a.pem"), path("a.pem"), err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_server_new_errors)
{
	static const char *const order[] = {"default", "nosuch"};
	char err[512] = "";
	ck_assert_ptr_null(server_of(order, 2, err, sizeof(err)));
	char want[300];
	snprintf(want, sizeof(want), "%s/nosuch.pem: ", dir);
	assert_starts(err, want);
}
END_TEST

START_TEST(test_client_new)
{
	char err[512] = "";
	struct config_tls_client c = {
	    .enabled = true, .verify = true, .ca = (char *)path("ca.pem"), .sni = (char *)"a.test"};
	struct tls_client *cli = tls_client_new(&c, err, sizeof(err));
	ck_assert_msg(cli != NULL, "%s", err);
	tls_client_free(cli);

	struct config_tls_client off = {.enabled = true, .verify = false};
	cli = tls_client_new(&off, err, sizeof(err));
	ck_assert_msg(cli != NULL, "%s", err);
	tls_client_free(cli);

	struct config_tls_client bad = {
	    .enabled = true, .verify = true, .ca = (char *)path("no-such-ca.pem")};
	ck_assert_ptr_null(tls_client_new(&bad, err, sizeof(err)));
	assert_has(err, "no-such-ca.pem");
}
END_TEST

/* ---- config ----------------------------------------------------------- */

#define UPS                                                                                        \
	"upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n"
#define ROUTES "routes = ( { upstream = \"app\"; } );\n"

static char conf_path[300];

/* Write TEXT as DIR/test.conf (so relative names resolve against DIR) and load it. */
static struct config *load_text(const char *text, struct config_errors *errs)
{
	snprintf(conf_path, sizeof(conf_path), "%s/test.conf", dir);
	FILE *f = fopen(conf_path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	memset(errs, 0, sizeof(*errs));
	return config_load(conf_path, errs);
}

static void dump(const struct config_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		fprintf(stderr, "  got: %s\n", errs->msg[i]);
}

/* Exactly one error, "CONF:LINE: " then text containing each needle. */
static void expect_error(const char *text, int line, const char *needle1, const char *needle2)
{
	struct config_errors errs;
	struct config *cfg = load_text(text, &errs);
	if (cfg != NULL || errs.n != 1)
		dump(&errs);
	ck_assert_ptr_null(cfg);
	ck_assert_uint_eq(errs.n, 1);
	char want[400];
	snprintf(want, sizeof(want), "%s:%d: ", conf_path, line);
	assert_starts(errs.msg[0], want);
	if (needle1)
		assert_has(errs.msg[0], needle1);
	if (needle2)
		assert_has(errs.msg[0], needle2);
	config_errors_fini(&errs);
}

START_TEST(test_config_good)
{
	struct config_errors errs;
	struct config *cfg = load_text(
	    "listen = ( { address = \"127.0.0.1:8443\"; tls = { certificates = (\n"
	    "  { cert = \"a.pem\"; key = \"a.key\"; },\n"
	    "  { cert = \"wild.pem\"; key = \"wild.key\"; } ); protocols = \"TLSv1.3+\"; }; },\n"
	    "  { address = \"127.0.0.1:8080\"; } );\n"
	    "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } );\n"
	    "  tls = { ca = \"ca.pem\"; sni = \"backend.test\"; }; },\n"
	    "  { name = \"off\"; servers = ( { address = \"127.0.0.1:9001\"; } ); tls = { verify = "
	    "false; }; },\n"
	    "  { name = \"plain\"; servers = ( { address = \"127.0.0.1:9002\"; } ); } );\n" ROUTES,
	    &errs);
	if (cfg == NULL)
		dump(&errs);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->n_listens, 2);
	struct config_tls_server *t = cfg->listens[0].tls;
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_null(cfg->listens[1].tls);
	ck_assert_uint_eq(t->n_certs, 2);
	ck_assert_str_eq(t->certs[0].cert, path("a.pem")); /* relative to the config file */
	ck_assert_str_eq(t->certs[0].key, path("a.key"));
	ck_assert_str_eq(t->certs[1].cert, path("wild.pem"));
	ck_assert_int_eq(t->certs[0].line, 2);
	ck_assert_int_eq(t->certs[1].line, 3);
	ck_assert_str_eq(t->protocols, "TLSv1.3+");
	ck_assert(cfg->upstreams[0].tls.enabled);
	ck_assert(cfg->upstreams[0].tls.verify);
	ck_assert_str_eq(cfg->upstreams[0].tls.ca, path("ca.pem"));
	ck_assert_str_eq(cfg->upstreams[0].tls.sni, "backend.test");
	ck_assert(cfg->upstreams[1].tls.enabled);
	ck_assert(!cfg->upstreams[1].tls.verify);
	ck_assert_ptr_null(cfg->upstreams[1].tls.ca);
	ck_assert_ptr_null(cfg->upstreams[1].tls.sni);
	ck_assert(!cfg->upstreams[2].tls.enabled);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_absolute_paths)
{
	char text[2048];
	snprintf(text, sizeof(text),
		 "listen = ( { address = \"127.0.0.1:8443\"; tls = { certificates = ( { cert = "
		 "\"%s\"; key = \"%s\"; } ); }; } );\n" UPS ROUTES,
		 path("a.pem"), path("a.key"));
	struct config_errors errs;
	struct config *cfg = load_text(text, &errs);
	if (cfg == NULL)
		dump(&errs);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->listens[0].tls->certs[0].cert, path("a.pem"));
	ck_assert(cfg->listens[0].tls->protocols == NULL ||
		  strcmp(cfg->listens[0].tls->protocols, "TLSv1.2+") == 0);
	config_free(cfg);
}
END_TEST

#define L1 "listen = ( { address = \"127.0.0.1:8443\";\n"
#define CERT_A "{ cert = \"a.pem\"; key = \"a.key\"; }"

static const struct {
	const char *name, *text;
	int line;
	const char *needle1, *needle2;
} ERRS[] = {
    {"unknown key in tls",
     L1 "  tls = { certificates = ( " CERT_A " );\n  ciphers = \"HIGH\"; }; } );\n" UPS ROUTES, 3,
     "unknown key", "ciphers"},
    {"bad protocols",
     L1 "  tls = { certificates = ( " CERT_A
	" );\n  protocols = \"TLSv1.1+\"; }; } );\n" UPS ROUTES,
     3, "bad value 'protocols' = \"TLSv1.1+\"", "expected \"TLSv1.2+\" or \"TLSv1.3+\""},
    {"protocols without plus",
     L1 "  tls = { certificates = ( " CERT_A " );\n  protocols = \"TLSv1.2\"; }; } );\n" UPS ROUTES,
     3, "protocols", NULL},
    {"protocols not a string",
     L1 "  tls = { certificates = ( " CERT_A " );\n  protocols = 12; }; } );\n" UPS ROUTES, 3,
     "protocols", NULL},
    {"empty certificates", L1 "  tls = { certificates = (\n ); }; } );\n" UPS ROUTES, 2,
     "'tls' needs at least one entry in 'certificates'", NULL},
    {"no certificates", L1 "  tls = { protocols = \"TLSv1.2+\"; }; } );\n" UPS ROUTES, 2,
     "'tls' needs at least one entry in 'certificates'", NULL},
    {"tls not a group", L1 "  tls = true; } );\n" UPS ROUTES, 2, "tls", NULL},
    {"missing key", L1 "  tls = { certificates = (\n { cert = \"a.pem\"; } ); }; } );\n" UPS ROUTES,
     3, "missing 'key' in 'tls.certificates' entry", NULL},
    {"missing cert", L1 "  tls = { certificates = (\n { key = \"a.key\"; } ); }; } );\n" UPS ROUTES,
     3, "missing 'cert' in 'tls.certificates' entry", NULL},
    {"unknown key in a certificate",
     L1 "  tls = { certificates = (\n { cert = \"a.pem\"; key = \"a.key\"; chain = \"x\"; } ); }; "
	"} );\n" UPS ROUTES,
     3, "unknown key", "chain"},
    {"cert file missing",
     L1 "  tls = { certificates = ( " CERT_A ",\n { cert = \"nope.pem\"; key = \"a.key\"; } ); }; "
	"} );\n" UPS ROUTES,
     3, "nope.pem: cannot load certificate", NULL},
    {"key does not match",
     L1 "  tls = { certificates = (\n { cert = \"a.pem\"; key = \"wild.key\"; } ); }; } );\n" UPS
	 ROUTES,
     3, "wild.key: ", "match"},
    {"unknown key in upstream tls",
     "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
     "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } );\n"
     "  tls = { verify = true; alpn = \"h2\"; }; } );\n" ROUTES,
     3, "unknown key", "alpn"},
    {"upstream ca missing",
     "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
     "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } );\n"
     "  tls = { ca = \"no-ca.pem\"; }; } );\n" ROUTES,
     3, "cannot read 'ca'", "no-ca.pem"},
    {"upstream verify not a bool",
     "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
     "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } );\n"
     "  tls = { verify = \"yes\"; }; } );\n" ROUTES,
     3, "verify", NULL},
};

START_TEST(test_config_error)
{
	expect_error(ERRS[_i].text, ERRS[_i].line, ERRS[_i].needle1, ERRS[_i].needle2);
}
END_TEST

START_TEST(test_config_errors_each_reported)
{
	/* two bad certificates and a bad protocols: every one is reported */
	struct config_errors errs;
	struct config *cfg = load_text(L1 "  tls = { certificates = (\n"
					  "  { cert = \"x1.pem\"; key = \"a.key\"; },\n"
					  "  { cert = \"a.pem\"; key = \"cnonly.key\"; } );\n"
					  "  protocols = \"SSLv3\"; }; } );\n" UPS ROUTES,
				       &errs);
	ck_assert_ptr_null(cfg);
	if (errs.n != 3)
		dump(&errs);
	ck_assert_uint_eq(errs.n, 3);
	int seen[6] = {0};
	for (size_t i = 0; i < errs.n; i++) {
		int line = atoi(errs.msg[i] + strlen(conf_path) + 1);
		if (line >= 0 && line < 6)
			seen[line]++;
	}
	ck_assert_int_eq(seen[3], 1);
	ck_assert_int_eq(seen[4], 1);
	ck_assert_int_eq(seen[5], 1);
	config_errors_fini(&errs);
}
END_TEST

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("pick");
	tcase_add_loop_test(tc, test_pick, 0, (int)N_ELEMS(PICKS));
	tcase_add_test(tc, test_pick_wildcard_default);
	tcase_add_test(tc, test_pick_single);
	suite_add_tcase(s, tc);

	tc = tcase_create("pairs");
	tcase_add_test(tc, test_check_pair_ok);
	tcase_add_test(tc, test_check_pair_missing_cert);
	tcase_add_test(tc, test_check_pair_missing_key);
	tcase_add_test(tc, test_check_pair_mismatch);
	tcase_add_test(tc, test_check_pair_garbage);
	tcase_add_test(tc, test_server_new_errors);
	tcase_add_test(tc, test_client_new);
	suite_add_tcase(s, tc);

	tc = tcase_create("config");
	tcase_add_test(tc, test_config_good);
	tcase_add_test(tc, test_config_absolute_paths);
	tcase_add_loop_test(tc, test_config_error, 0, (int)N_ELEMS(ERRS));
	tcase_add_test(tc, test_config_errors_each_reported);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (make_pki() != 0) {
		fprintf(stderr, "check_tls: cannot make test certificates with openssl in %s\n",
			dir);
		return EXIT_FAILURE;
	}
	SRunner *sr = srunner_create(tls_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	sh("rm -rf '%s'", dir);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
