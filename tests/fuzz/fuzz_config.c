/*
 * libFuzzer driver for the config loader: a generated file through the whole
 * of config_parse() (libconfig's parser, every section loader, every value
 * parser, the TLS certificate check) and its error paths. Any text must give
 * a config or a list of errors, never a crash or a leak, and both must keep
 * the loader's promises. Build and run: make fuzz.
 *
 * Input: the config text, no control byte (a seed is a config file as is).
 * It is loaded as config_parse("fuzz.conf", text, &errs).
 *
 * The filesystem. config_parse() itself reads files in three places: the
 * @include directive (libconfig opens the path, relative to the process's
 * working directory; config.c first stats it and reads it for its own
 * includes), TLS certificate and key paths (tls_check_pair() loads and
 * matches them through OpenSSL at load time), and upstream tls.ca (only
 * access(R_OK)). It writes nothing: pid_file, logs and unix socket paths are
 * only stored. So that fuzzing reads only harmless files:
 * - "@FIXTURES@" anywhere in the text stands for a scratch directory the
 *   driver fills at start (fixture includes, a certificate and its key, a key
 *   that does not match) and removes at exit;
 * - an @include may name a fixture, nothing, or a directory -- on purpose:
 *   libconfig 1.5 exits the process when it includes one, and config.c must
 *   refuse it first. The path is taken both as libconfig reads it (\\ and \"
 *   unescaped, any other backslash dropped) and as config.c's check does (up
 *   to the next quote on the line); for anything else (a FIFO or a device
 *   would block, a regular file elsewhere is nobody's business) the driver
 *   skips the input (returns -1: not added to the corpus);
 * - every string value of the text (as libconfig reads it, escapes and
 *   concatenation applied, includes left out) that names something other
 *   than a regular file of at most 1 MiB or a directory, or anything under
 *   /proc, /sys or /dev, makes the driver skip the input too.
 *
 * Checked beyond "no crash, no leak":
 * - failure: at least one error, at most CONFIG_MAX_ERRORS kept; each is
 *   "fuzz.conf:LINE: message" (LINE >= 1), "fuzz.conf: message" (no line), or
 *   names a fixture include; one line (no control bytes); sorted by line,
 *   line-less ones first;
 * - success: no errors; the config holds together (addresses parsed, every
 *   route names an existing upstream or is a terminate route with a bridge,
 *   upstream names unique and non-empty, 1..CONFIG_MAX_SERVERS servers,
 *   limits at or above their minimums, defaults filled in, the text kept),
 *   and loading its kept text again gives a config of the same shape.
 * FUZZ_VERBOSE=1 in the environment prints each input's outcome and errors.
 * Seeds: tests/fuzz/corpus/fuzz_config/ (tests/fuzz/make_corpus.py);
 * dictionary tests/fuzz/fuzz_config.dict.
 */
#include <ctype.h>
#include <libconfig.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_check.h"

#define FILE_NAME "fuzz.conf"
#define PLACEHOLDER "@FIXTURES@"
#define MAX_READ (1024 * 1024)

/* EC P-256, CN and SAN fuzz.example, valid until 2126; made with openssl req -x509. */
static const char CERT_PEM[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBrjCCAVSgAwIBAgIUY1ITwADTJR8BN+JZYxljq4VMsHEwCgYIKoZIzj0EAwIw\n"
    "FzEVMBMGA1UEAwwMZnV6ei5leGFtcGxlMCAXDTI2MTIwMjA4MjMxNloYDzIxMjYx\n"
    "MTA4MDgyMzE2WjAXMRUwEwYDVQQDDAxmdXp6LmV4YW1wbGUwWTATBgcqhkjOPQIB\n"
    "BggqhkjOPQMBBwNCAATwWrvTQtkQPrpvYGlsqAbkEfP9v0vcMsO1wAREueTaeGE2\n"
    "tOE4pWAFzTIqvPkgs7/4aFFILEUnAlRsPuxeYNAGo3wwejAdBgNVHQ4EFgQUqqgv\n"
    "z8Z0wmGTOmIzQRjmyS4vytgwHwYDVR0jBBgwFoAUqqgvz8Z0wmGTOmIzQRjmyS4v\n"
    "ytgwDwYDVR0TAQH/BAUwAwEB/zAnBgNVHREEIDAeggxmdXp6LmV4YW1wbGWCDiou\n"
    "ZnV6ei5leGFtcGxlMAoGCCqGSM49BAMCA0gAMEUCIQD+9qB/gNUhI43zR0DZoJAK\n"
    "msUiWjQupKmC80Q7LHeqgQIgXjra6l9AKYEjQFCmL6AyfmCsegJg8Srk4rvXykYf\n"
    "4XM=\n"
    "-----END CERTIFICATE-----\n";
static const char KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPerHUAapRWDaw0Ws\n"
    "UlNQKML2mBtz4TGFn+ggYWM0WB+hRANCAATwWrvTQtkQPrpvYGlsqAbkEfP9v0vc\n"
    "MsO1wAREueTaeGE2tOE4pWAFzTIqvPkgs7/4aFFILEUnAlRsPuxeYNAG\n"
    "-----END PRIVATE KEY-----\n";
static const char OTHER_KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHHh6Q+MbvuBOeLF/\n"
    "F6XtTs/7KvaqKJRljHXQsOHwQwuhRANCAATSDaoVAs0e2uR3WB/XDCoB4POTe96t\n"
    "jAogBspMuO/q2FBF7oJXyJk6/Eweun7/i8krdLdFlZDzksnChiuShQCp\n"
    "-----END PRIVATE KEY-----\n";

/* The fixture directory's files (the first five are configs to include). */
static const struct {
	const char *name, *text;
} FIXTURES[] = {
    {"timeouts.conf", "timeouts = { header = \"5s\"; send = \"1m\"; };\n"},
    {"upstreams.conf",
     "upstreams = (\n  { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); }\n);\n"},
    {"routes.conf", "routes = ( { upstream = \"app\"; } );\n"},
    {"bad.conf", "limits = {\n  header_bytes = ;\n};\n"},
    {"self.conf", "@include \"" PLACEHOLDER "/self.conf\"\n"},
    {"cert.pem", CERT_PEM},
    {"key.pem", KEY_PEM},
    {"other-key.pem", OTHER_KEY_PEM},
};
#define N_FIXTURES (sizeof(FIXTURES) / sizeof(FIXTURES[0]))

static char fixture_dir[64];

static void fixtures_remove(void)
{
	char path[128];
	for (size_t i = 0; i < N_FIXTURES; i++) {
		snprintf(path, sizeof(path), "%s/%s", fixture_dir, FIXTURES[i].name);
		unlink(path);
	}
	rmdir(fixture_dir);
}

static char *expand(const char *text, size_t len, size_t *out_len);

static void fixtures_make(void)
{
	char path[128];
	snprintf(fixture_dir, sizeof(fixture_dir), "/tmp/fuzz_config.XXXXXX");
	CHECK(mkdtemp(fixture_dir) != NULL);
	for (size_t i = 0; i < N_FIXTURES; i++) {
		size_t n;
		char *body = expand(FIXTURES[i].text, strlen(FIXTURES[i].text), &n);
		snprintf(path, sizeof(path), "%s/%s", fixture_dir, FIXTURES[i].name);
		FILE *fp = fopen(path, "w");
		CHECK(fp != NULL && body != NULL);
		CHECK(fwrite(body, 1, n, fp) == n);
		CHECK(fclose(fp) == 0);
		free(body);
	}
	atexit(fixtures_remove);
}

/* A NUL-terminated copy of text with PLACEHOLDER replaced by the fixture directory. */
static char *expand(const char *text, size_t len, size_t *out_len)
{
	size_t plen = strlen(PLACEHOLDER), dlen = strlen(fixture_dir), n = 0;
	for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), PLACEHOLDER, plen));
	     p += plen)
		n++;
	char *out = malloc(len + n * dlen + 1), *o = out;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len;) {
		if (len - i >= plen && memcmp(text + i, PLACEHOLDER, plen) == 0) {
			memcpy(o, fixture_dir, dlen);
			o += dlen;
			i += plen;
		} else {
			*o++ = text[i++];
		}
	}
	*o = '\0';
	*out_len = (size_t)(o - out);
	return out;
}

/* Does path name something inside the fixture directory? */
static bool in_fixtures(const char *path)
{
	char *real = realpath(path, NULL), *dir = realpath(fixture_dir, NULL);
	size_t n = dir ? strlen(dir) : 0;
	bool in = real != NULL && dir != NULL && strncmp(real, dir, n) == 0 && real[n] == '/';
	free(real);
	free(dir);
	return in;
}

/*
 * The path libconfig 1.5 opens for an "@include" at p (its INCLUDE rules:
 * \\ and \" unescape, any other backslash is dropped by flex's default rule),
 * or NULL when none follows. Whether p stands at a line start outside strings
 * and comments is not looked at: an "@include" libconfig would not take is
 * checked all the same, which only makes the driver stricter.
 */
static char *libconfig_include_path(const char *p, const char *end)
{
	const char *q = p + 8;
	if (q >= end || (*q != ' ' && *q != '\t'))
		return NULL;
	while (q < end && (*q == ' ' || *q == '\t'))
		q++;
	if (q >= end || *q != '"')
		return NULL;
	char *out = malloc((size_t)(end - q)), *o = out;
	CHECK(out != NULL);
	for (q++; q < end && *q != '"'; q++) {
		if (*q == '\\') {
			if (q + 1 < end && (q[1] == '\\' || q[1] == '"'))
				*o++ = *++q;
			continue;
		}
		*o++ = *q;
	}
	if (q >= end) { /* never closed: nothing is opened */
		free(out);
		return NULL;
	}
	*o = '\0';
	return out;
}

/* The path config.c's check takes: from the first quote after it to the next, on its line. */
static char *check_include_path(const char *p, const char *end)
{
	const char *eol = memchr(p, '\n', (size_t)(end - p));
	if (eol == NULL)
		eol = end;
	const char *open = memchr(p + 8, '"', (size_t)(eol - p - 8));
	const char *close = open ? memchr(open + 1, '"', (size_t)(eol - open - 1)) : NULL;
	return close ? strndup(open + 1, (size_t)(close - open - 1)) : NULL;
}

/* A fixture, nothing at all, or a directory (which config.c must refuse). */
static bool include_harmless(const char *path)
{
	struct stat st;
	if (path == NULL || stat(path, &st) != 0 || S_ISDIR(st.st_mode))
		return true;
	return S_ISREG(st.st_mode) && in_fixtures(path);
}

/* Every "@include" of the text: may both readings of its path be opened? */
static bool includes_harmless(const char *text, size_t len)
{
	const char *end = text + len;
	for (const char *p = text; (p = memmem(p, (size_t)(end - p), "@include", 8)); p += 8) {
		char *a = libconfig_include_path(p, end), *b = check_include_path(p, end);
		bool ok = include_harmless(a) && include_harmless(b);
		free(a);
		free(b);
		if (!ok)
			return false;
	}
	return true;
}

/* May the loader open path (as the loader resolves it: relative to the cwd)? */
static bool path_harmless(const char *path)
{
	struct stat st;
	if (path[0] == '\0' || stat(path, &st) != 0)
		return true; /* nothing there: opening it fails */
	if (S_ISDIR(st.st_mode))
		return true; /* OpenSSL fails to read it; includes are filtered above */
	if (!S_ISREG(st.st_mode) || st.st_size > MAX_READ)
		return false; /* a device, FIFO or socket may block or never end */
	char *real = realpath(path, NULL);
	bool ok = real != NULL && strncmp(real, "/proc/", 6) != 0 &&
		  strncmp(real, "/sys/", 5) != 0 && strncmp(real, "/dev/", 5) != 0;
	free(real);
	return ok;
}

static bool strings_harmless(const config_setting_t *s, int depth)
{
	if (depth > 64)
		return false;
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_STRING:
		return path_harmless(config_setting_get_string(s));
	case CONFIG_TYPE_GROUP:
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST:
		for (int i = 0; i < config_setting_length(s); i++)
			if (!strings_harmless(config_setting_get_elem(s, (unsigned)i), depth + 1))
				return false;
		return true;
	default:
		return true;
	}
}

/*
 * Parse the text with libconfig alone, its includes made comments (a
 * directory would end the process here), and look at every string. When
 * that fails, so does the loader's parse before it opens any path: included
 * fixtures are whole settings and cannot mend the main text.
 */
static bool text_harmless(const char *text, size_t len)
{
	config_t lc;
	bool ok = true;
	char *copy = strdup(text);
	CHECK(copy != NULL);
	for (char *p = copy; (p = memmem(p, len - (size_t)(p - copy), "@include", 8)); p += 8)
		*p = '#';
	config_init(&lc);
	if (config_read_string(&lc, copy) == CONFIG_TRUE)
		ok = strings_harmless(config_root_setting(&lc), 0);
	config_destroy(&lc);
	free(copy);
	return ok;
}

/* ---- the loader's promises -------------------------------------------- */

/* "FILE:LINE: msg" or "FILE: msg"; returns the line (0 for none). */
static long check_message(const char *msg)
{
	size_t flen = strlen(FILE_NAME);
	const char *p;
	if (strncmp(msg, FILE_NAME, flen) == 0) {
		p = msg + flen;
	} else {
		/* an error in an included file names it, as the include wrote it */
		p = strchr(msg, ':');
		CHECK(p != NULL && p > msg);
		char *file = strndup(msg, (size_t)(p - msg));
		CHECK(file != NULL && in_fixtures(file));
		free(file);
	}
	long line = 0;
	CHECK(*p == ':');
	p++;
	if (*p != ' ') {
		CHECK(*p >= '1' && *p <= '9');
		for (; isdigit((unsigned char)*p); p++) {
			CHECK(line < INT_MAX / 10);
			line = line * 10 + (*p - '0');
		}
		CHECK(*p == ':');
		p++;
	}
	CHECK(p[0] == ' ' && p[1] != '\0');
	/* one error, one line: control bytes are escaped (check_config.c test_errors_one_line) */
	for (const char *c = msg; *c; c++)
		CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
	return line;
}

static void check_errors(const struct config_errors *errs)
{
	long prev = 0;
	CHECK(errs->n > 0 || errs->dropped > 0);
	CHECK(errs->n <= CONFIG_MAX_ERRORS);
	CHECK(errs->dropped == 0 || errs->n == CONFIG_MAX_ERRORS);
	for (size_t i = 0; i < errs->n; i++) {
		CHECK(errs->msg[i] != NULL);
		long line = check_message(errs->msg[i]);
		CHECK(line >= prev); /* sorted by line, line-less first */
		prev = line;
	}
}

static bool is_lower_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f || isupper((unsigned char)*s))
			return false;
	return true;
}

static bool addr_ok(const struct config_addr *a)
{
	return (a->ss.ss_family == AF_INET && a->len == sizeof(struct sockaddr_in)) ||
	       (a->ss.ss_family == AF_INET6 && a->len == sizeof(struct sockaddr_in6));
}

static void check_config(const struct config *cfg, const char *text)
{
	CHECK(strcmp(cfg->file, FILE_NAME) == 0 && strcmp(cfg->text, text) == 0);
	CHECK(cfg->n_listens >= 1);
	for (size_t i = 0; i < cfg->n_listens; i++) {
		const struct config_listen *l = &cfg->listens[i];
		CHECK(addr_ok(&l->addr) && l->line >= 1);
		for (size_t j = 0; j < i; j++)
			CHECK(!config_addr_equal(&l->addr, &cfg->listens[j].addr));
		if (l->tls != NULL) {
			CHECK(l->tls->n_certs >= 1);
			for (size_t j = 0; j < l->tls->n_certs; j++)
				CHECK(l->tls->certs[j].cert != NULL && l->tls->certs[j].key != NULL);
			CHECK(l->tls->protocols == NULL ||
			      strcmp(l->tls->protocols, "TLSv1.2+") == 0 ||
			      strcmp(l->tls->protocols, "TLSv1.3+") == 0);
		}
	}
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		CHECK(u->name != NULL && u->name[0] != '\0');
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(u->name, cfg->upstreams[j].name) != 0);
		CHECK(u->n_servers >= 1 && u->n_servers <= CONFIG_MAX_SERVERS);
		for (size_t j = 0; j < u->n_servers; j++) {
			const struct config_server *s = &u->servers[j];
			CHECK(s->weight >= 1);
			CHECK(s->name != NULL ? s->name[0] != '\0' && s->port != 0 : addr_ok(&s->addr));
		}
		CHECK(u->keepalive <= CONFIG_KEEPALIVE_MAX && u->retries < CONFIG_MAX_SERVERS);
		CHECK(u->proxy_protocol <= 2 && !(u->proxy_protocol && u->tls.enabled));
		CHECK((u->hash_name != NULL) ==
		      (u->balance == CONFIG_BALANCE_HASH && u->hash_key != CONFIG_HASH_CLIENT));
		CHECK(u->resolve > 0);
		if (u->health.enabled) {
			CHECK(u->health.path != NULL && u->health.path[0] == '/');
			CHECK(u->health.interval > 0 && u->health.timeout > 0);
			CHECK(u->health.rise >= 1 && u->health.fall >= 1);
		}
	}
	CHECK(cfg->n_routes >= 1);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct config_route *r = &cfg->routes[i];
		CHECK(r->name != NULL && r->name[0] != '\0' && r->line >= 1);
		if (r->upgrade == CONFIG_UPGRADE_TERMINATE) {
			CHECK(r->upstream == CONFIG_NO_UPSTREAM);
			CHECK((r->bridge_unix != NULL) != addr_ok(&r->bridge));
			CHECK(r->bridge_unix == NULL || r->bridge_unix[0] == '/');
			CHECK(r->max_message > 0);
		} else {
			CHECK(r->upstream < cfg->n_upstreams);
		}
		CHECK(r->host == NULL || r->host[0] != '\0');
		CHECK(r->path_prefix == NULL || r->path_prefix[0] == '/');
		for (size_t j = 0; j < r->n_protocols; j++)
			CHECK(is_lower_token(r->protocols[j]) && strcmp(r->protocols[j], "h2c") != 0 &&
			      strncmp(r->protocols[j], "h2c/", 4) != 0);
	}
	CHECK(cfg->limits.header_bytes >= 256 && cfg->limits.header_fields >= 1 &&
	      cfg->limits.uri_bytes >= 1 && cfg->limits.max_connections >= 1);
	CHECK(cfg->limits.nofile == 0 || cfg->limits.nofile >= 64);
	CHECK(cfg->workers <= CONFIG_MAX_WORKERS);
	CHECK(cfg->access_log != NULL && cfg->access_log[0] != '\0');
	CHECK(cfg->error_log != NULL && cfg->error_log[0] != '\0');
	CHECK(cfg->via != NULL && cfg->via[0] != '\0' && cfg->log_level != NULL);
	CHECK(cfg->pid_file == NULL || cfg->pid_file[0] != '\0');
	CHECK(cfg->user == NULL || cfg->user[0] != '\0');
	if (cfg->admin.enabled)
		CHECK((cfg->admin.unix_path != NULL) != addr_ok(&cfg->admin.addr));
}

/*
 * libconfig 1.5 (Debian 12's) leaks the string token that a syntax error
 * follows (e.g. `nofile = 4k"";`): bison drops it without a destructor. The
 * token's bytes come from the scanner (strbuf_append, or libconfig_yylex for
 * an empty string), never from a setting config_destroy() would own. Fixed upstream in 1.7.3
 * (hyperrealm/libconfig f2e951c "Fix memory leak when parsing invalid
 * syntax"); not switchyard's to fix, so LeakSanitizer is told to ignore it.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

/* ... without a "Suppressions used" table after every leak check */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
	return "print_suppressions=0";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	if (fixture_dir[0] == '\0')
		fixtures_make();
	/* libconfig reads a C string: the text ends at its first NUL */
	const char *nul = memchr(data, '\0', size);
	char *text = expand((const char *)data, nul ? (size_t)(nul - (const char *)data) : size, &len);
	CHECK(text != NULL);
	if (!includes_harmless(text, len) || !text_harmless(text, len)) {
		free(text);
		return -1;
	}

	struct config_errors errs;
	struct config *cfg = config_parse(FILE_NAME, text, &errs);
	if (getenv("FUZZ_VERBOSE") != NULL) { /* what an input gives, for seeds and reports */
		fprintf(stderr, "%s\n", cfg ? "config loaded" : "config refused:");
		for (size_t i = 0; cfg == NULL && i < errs.n; i++)
			fprintf(stderr, "  %s\n", errs.msg[i]);
	}
	if (cfg != NULL) {
		CHECK(errs.n == 0 && errs.dropped == 0);
		check_config(cfg, text);
		/* what a reload of the kept text gives */
		struct config_errors errs2;
		struct config *again = config_parse(FILE_NAME, cfg->text, &errs2);
		CHECK(again != NULL);
		CHECK(again->n_listens == cfg->n_listens && again->n_routes == cfg->n_routes &&
		      again->n_upstreams == cfg->n_upstreams);
		config_free(again);
		config_free(cfg);
	} else {
		check_errors(&errs);
		config_errors_fini(&errs);
	}
	free(text);
	return 0;
}
