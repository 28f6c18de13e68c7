/*
 * check_config: config_load over temporary files, and the three value
 * parsers. Every error message is asserted byte for byte (after the file
 * name, which mkstemp chooses), including its line number. TLS listeners
 * name a self-signed certificate written into a temporary directory by main().
 */
#include <check.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Lines 1-3 of most cases; a case's own text starts on line 4. */
#define LISTEN "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
#define UPS                                                                                        \
	"upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n"
#define ROUTES "routes = ( { upstream = \"app\"; } );\n"
#define BASE LISTEN UPS ROUTES
/* Line 2: upstream "app" with one server, open for its health keys on line 3
 * (and "} );\n"). */
#define UPS_OPEN                                                                                   \
	"upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } );\n"
/* Lines 1-3 with a health group holding KEYS on line 3; routes on line 4. */
#define HEALTH(keys) LISTEN UPS_OPEN "  health = { " keys " }; } );\n" ROUTES
/* Line 3: a valid terminate route, open for one more key (and "} );\n"). */
#define TERM_NO_BRIDGE "routes = ( { name = \"vnc\"; upgrade = \"terminate\"; "
#define TERM TERM_NO_BRIDGE "bridge = \"127.0.0.1:5900\"; "

static char tmp_path[64];

/* Write TEXT to a fresh temporary file, load it, remove the file. */
static struct config *load_text(const char *text, struct config_errors *errs)
{
	snprintf(tmp_path, sizeof(tmp_path), "/tmp/check_config_XXXXXX");
	int fd = mkstemp(tmp_path);
	ck_assert_int_ge(fd, 0);
	size_t len = strlen(text);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	struct config *cfg = config_load(tmp_path, errs);
	unlink(tmp_path);
	return cfg;
}

/* errs->msg[i] must be tmp_path followed by expected[i] exactly. */
static void assert_errors(const struct config_errors *errs, const char *const *expected,
			  size_t n_expected)
{
	size_t plen = strlen(tmp_path);

	bool same = errs->n == n_expected;
	for (size_t i = 0; same && i < n_expected; i++)
		same = strncmp(errs->msg[i], tmp_path, plen) == 0 &&
		       strcmp(errs->msg[i] + plen, expected[i]) == 0;
	for (size_t i = 0; !same && i < errs->n; i++)
		fprintf(stderr, "  got: %s\n", errs->msg[i]);
	ck_assert_uint_eq(errs->n, n_expected);
	for (size_t i = 0; i < n_expected; i++) {
		ck_assert_msg(strncmp(errs->msg[i], tmp_path, plen) == 0, "no file in '%s'",
			      errs->msg[i]);
		ck_assert_str_eq(errs->msg[i] + plen, expected[i]);
	}
	ck_assert_uint_eq(errs->dropped, 0);
}

/* ---- a full valid config, every value read back ----------------------- */

/* Line numbers asserted below: routes start on lines 13, 15 and 17. */
static const char FULL[] =
    "listen = ( { address = \"127.0.0.1:8080\"; },\n"
    "           { address = \"[::1]:8443\"; } );\n"
    "timeouts = { header = \"250ms\"; keepalive = \"2m\"; connect = \"3\";\n"
    "             response = \"1h\"; send = \"0\"; tunnel_idle = \"90s\"; tunnel_max = \"2h\"; };\n"
    "limits = { header_bytes = \"32k\"; header_fields = 50; uri_bytes = 4096;\n"
    "           max_connections = 20; nofile = 4096; };\n"
    "upstreams = (\n"
    "  { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; weight = 5; },\n"
    "                               { address = \"127.0.0.1:9001\"; } ); },\n"
    "  { name = \"chat\"; servers = ( { address = \"[::1]:9100\"; weight = 1000; } ); }\n"
    ");\n"
    "routes = (\n"
    "  { name = \"ws\"; host = \"*.Example.COM\"; path_prefix = \"/ws\"; upstream = \"chat\";\n"
    "    upgrade = \"strip\"; protocols = [ \"WebSocket\", \"*\", \"foo/2\" ]; },\n"
    "  { host = \"api.example.com.\"; upstream = \"app\"; upgrade = \"deny\";\n"
    "    protocols = [ ]; },\n"
    "  { upstream = \"app\"; }\n"
    ");\n"
    "access_log = \"/var/log/sy/access.log\";\n"
    "error_log = \"/var/log/sy/error.log\";\n"
    "log_level = \"debug\";\n"
    "via = \"edge-1\";\n"
    "tunnel = { mode = \"copy\"; };\n";

START_TEST(test_full)
{
	struct config_errors errs;
	struct config *cfg = load_text(FULL, &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->file, tmp_path);

	ck_assert_uint_eq(cfg->n_listens, 2);
	ck_assert_str_eq(cfg->listens[0].addr.text, "127.0.0.1:8080");
	ck_assert_int_eq(cfg->listens[0].addr.ss.ss_family, AF_INET);
	ck_assert_uint_eq(cfg->listens[0].addr.len, sizeof(struct sockaddr_in));
	ck_assert_int_eq(cfg->listens[0].line, 1);
	ck_assert_str_eq(cfg->listens[1].addr.text, "[::1]:8443");
	ck_assert_int_eq(cfg->listens[1].addr.ss.ss_family, AF_INET6);
	ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&cfg->listens[1].addr.ss)->sin6_port),
			  8443);
	ck_assert_int_eq(cfg->listens[1].line, 2);

	ck_assert_uint_eq(cfg->timeouts.header, 250);
	ck_assert_uint_eq(cfg->timeouts.keepalive, 120000);
	ck_assert_uint_eq(cfg->timeouts.connect, 3000);
	ck_assert_uint_eq(cfg->timeouts.response, 3600000);
	ck_assert_uint_eq(cfg->timeouts.send, 0);
	ck_assert_uint_eq(cfg->timeouts.tunnel_idle, 90000);
	ck_assert_uint_eq(cfg->timeouts.tunnel_max, 7200000);

	ck_assert_uint_eq(cfg->limits.header_bytes, 32768);
	ck_assert_uint_eq(cfg->limits.header_fields, 50);
	ck_assert_uint_eq(cfg->limits.uri_bytes, 4096);
	ck_assert_uint_eq(cfg->limits.max_connections, 20);
	ck_assert_uint_eq(cfg->limits.nofile, 4096);

	ck_assert_uint_eq(cfg->n_upstreams, 2);
	ck_assert_str_eq(cfg->upstreams[0].name, "app");
	ck_assert_uint_eq(cfg->upstreams[0].n_servers, 2);
	ck_assert_str_eq(cfg->upstreams[0].servers[0].addr.text, "127.0.0.1:9000");
	ck_assert_uint_eq(cfg->upstreams[0].servers[0].weight, 5);
	ck_assert_str_eq(cfg->upstreams[0].servers[1].addr.text, "127.0.0.1:9001");
	ck_assert_uint_eq(cfg->upstreams[0].servers[1].weight, 1);
	ck_assert_str_eq(cfg->upstreams[1].name, "chat");
	ck_assert_uint_eq(cfg->upstreams[1].n_servers, 1);
	ck_assert_uint_eq(cfg->upstreams[1].servers[0].weight, 1000);

	ck_assert_uint_eq(cfg->n_routes, 3);
	const struct config_route *r = &cfg->routes[0];
	ck_assert_str_eq(r->name, "ws");
	ck_assert_str_eq(r->host, "*.example.com");
	ck_assert_str_eq(r->path_prefix, "/ws");
	ck_assert_uint_eq(r->upstream, 1);
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_STRIP);
	ck_assert(r->any_protocol);
	ck_assert_uint_eq(r->n_protocols, 2); /* "*" is the flag, not a list entry */
	ck_assert_str_eq(r->protocols[0], "websocket");
	ck_assert_str_eq(r->protocols[1], "foo/2");
	ck_assert_int_eq(r->line, 13);

	r = &cfg->routes[1];
	ck_assert_str_eq(r->name, "#2");
	ck_assert_str_eq(r->host, "api.example.com"); /* trailing dot dropped */
	ck_assert_ptr_null(r->path_prefix);
	ck_assert_uint_eq(r->upstream, 0);
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_DENY);
	ck_assert(!r->any_protocol);
	ck_assert_uint_eq(r->n_protocols, 0);
	ck_assert_int_eq(r->line, 15);

	r = &cfg->routes[2];
	ck_assert_str_eq(r->name, "#3");
	ck_assert_ptr_null(r->host);
	ck_assert_int_eq(r->line, 17);

	ck_assert_str_eq(cfg->access_log, "/var/log/sy/access.log");
	ck_assert_str_eq(cfg->error_log, "/var/log/sy/error.log");
	ck_assert_str_eq(cfg->log_level, "debug");
	ck_assert_str_eq(cfg->via, "edge-1");
	ck_assert_int_eq(cfg->tunnel_mode, CONFIG_TUNNEL_COPY);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

START_TEST(test_defaults)
{
	struct config_errors errs;
	struct config *cfg = load_text(BASE, &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->timeouts.header, 10000);
	ck_assert_uint_eq(cfg->timeouts.keepalive, 60000);
	ck_assert_uint_eq(cfg->timeouts.connect, 5000);
	ck_assert_uint_eq(cfg->timeouts.response, 60000);
	ck_assert_uint_eq(cfg->timeouts.send, 60000);
	ck_assert_uint_eq(cfg->timeouts.tunnel_idle, 3600000);
	ck_assert_uint_eq(cfg->timeouts.tunnel_max, 0);
	ck_assert_uint_eq(cfg->limits.header_bytes, 16384);
	ck_assert_uint_eq(cfg->limits.header_fields, 100);
	ck_assert_uint_eq(cfg->limits.uri_bytes, 8192);
	ck_assert_uint_eq(cfg->limits.max_connections, 10000);
	ck_assert_uint_eq(cfg->limits.nofile, 0); /* 0 = what the config needs */
	ck_assert_uint_eq(cfg->upstreams[0].servers[0].weight, 1);
	const struct config_route *r = &cfg->routes[0];
	ck_assert_str_eq(r->name, "#1");
	ck_assert_ptr_null(r->host);
	ck_assert_ptr_null(r->path_prefix);
	ck_assert_uint_eq(r->upstream, 0);
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_FORWARD);
	ck_assert_uint_eq(r->n_protocols, 1);
	ck_assert_str_eq(r->protocols[0], "websocket");
	ck_assert(!r->any_protocol);
	ck_assert_str_eq(cfg->access_log, "stderr");
	ck_assert_str_eq(cfg->error_log, "stderr");
	ck_assert_str_eq(cfg->log_level, "info");
	ck_assert_str_eq(cfg->via, "switchyard");
	ck_assert_int_eq(cfg->tunnel_mode, CONFIG_TUNNEL_SPLICE);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Empty groups are allowed and leave every default in place. */
START_TEST(test_empty_groups)
{
	struct config_errors errs;
	struct config *cfg =
	    load_text(BASE "timeouts = { };\nlimits = { };\ntunnel = { };\n", &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->timeouts.header, 10000);
	ck_assert_uint_eq(cfg->limits.header_bytes, 16384);
	ck_assert_int_eq(cfg->tunnel_mode, CONFIG_TUNNEL_SPLICE);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

START_TEST(test_example_file)
{
	struct config_errors errs;
	struct config *cfg = config_load("etc/switchyard.conf", &errs);

	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "  got: %s\n", errs.msg[i]);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->listens[0].addr.text, "127.0.0.1:8080");
	ck_assert_str_eq(cfg->upstreams[0].name, "app");
	ck_assert_str_eq(cfg->upstreams[0].servers[0].addr.text, "127.0.0.1:9000");
	ck_assert_uint_eq(cfg->n_routes, 2);
	ck_assert_str_eq(cfg->routes[0].name, "ws");
	ck_assert_str_eq(cfg->routes[0].path_prefix, "/ws");
	ck_assert_ptr_null(cfg->routes[1].path_prefix);
	ck_assert_ptr_null(cfg->routes[1].host);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* ---- upgrade = "terminate" routes, every value read back --------------- */

/* Routes start on lines 4, 9, 10 and 13. */
static const char TERMINATE[] = LISTEN UPS
    "routes = (\n"
    "  { name = \"vnc\"; path_prefix = \"/vnc\"; upgrade = \"terminate\";\n"
    "    bridge = \"127.0.0.1:5900\"; subprotocols = [ \"binary\", \"base64\", \"Binary\" ];\n"
    "    require_subprotocol = false; max_message = \"64k\"; ping_interval = \"10s\";\n"
    "    origins = [ \"https://App.Example.COM\", \"http://127.0.0.1:8080\", \"null\",\n"
    "                \"http://[::1]:8080\" ]; },\n"
    "  { name = \"sock\"; upgrade = \"terminate\"; bridge = \"unix:/run/vnc.sock\"; },\n"
    "  { name = \"v6\"; upgrade = \"terminate\"; bridge = \"[::1]:5901\"; max_message = 1000;\n"
    "    ping_interval = \"0\"; subprotocols = [ ]; origins = [ ];\n"
    "    require_subprotocol = true; },\n"
    "  { upstream = \"app\"; }\n"
    ");\n";

START_TEST(test_terminate)
{
	struct config_errors errs;
	struct config *cfg = load_text(TERMINATE, &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->n_routes, 4);

	const struct config_route *r = &cfg->routes[0];
	ck_assert_str_eq(r->name, "vnc");
	ck_assert_str_eq(r->path_prefix, "/vnc");
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_TERMINATE);
	ck_assert_uint_eq(r->upstream, CONFIG_NO_UPSTREAM);
	ck_assert_str_eq(r->bridge.text, "127.0.0.1:5900");
	ck_assert_int_eq(r->bridge.ss.ss_family, AF_INET);
	ck_assert_uint_eq(r->bridge.len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&r->bridge.ss)->sin_port), 5900);
	ck_assert_ptr_null(r->bridge_unix);
	ck_assert_uint_eq(r->n_subprotocols, 3); /* case-sensitive: "Binary" is another one */
	ck_assert_str_eq(r->subprotocols[0], "binary");
	ck_assert_str_eq(r->subprotocols[1], "base64");
	ck_assert_str_eq(r->subprotocols[2], "Binary");
	ck_assert(!r->require_subprotocol);
	ck_assert_uint_eq(r->max_message, 65536);
	ck_assert_uint_eq(r->ping_interval, 10000);
	ck_assert_uint_eq(r->n_origins, 4);
	ck_assert_str_eq(r->origins[0], "https://app.example.com"); /* as browsers send it */
	ck_assert_str_eq(r->origins[1], "http://127.0.0.1:8080");
	ck_assert_str_eq(r->origins[2], "null");
	ck_assert_str_eq(r->origins[3], "http://[::1]:8080");
	ck_assert_uint_eq(r->n_protocols, 1); /* WebSocket only */
	ck_assert_str_eq(r->protocols[0], "websocket");
	ck_assert(!r->any_protocol);
	ck_assert_int_eq(r->line, 4);

	r = &cfg->routes[1]; /* defaults */
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_TERMINATE);
	ck_assert_uint_eq(r->upstream, CONFIG_NO_UPSTREAM);
	ck_assert_str_eq(r->bridge_unix, "/run/vnc.sock");
	ck_assert_uint_eq(r->bridge.len, 0);
	ck_assert_uint_eq(r->n_subprotocols, 0);
	ck_assert(r->require_subprotocol);
	ck_assert_uint_eq(r->max_message, 1048576);
	ck_assert_uint_eq(r->ping_interval, 30000);
	ck_assert_uint_eq(r->n_origins, 0);
	ck_assert_int_eq(r->line, 9);

	r = &cfg->routes[2];
	ck_assert_int_eq(r->bridge.ss.ss_family, AF_INET6);
	ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&r->bridge.ss)->sin6_port), 5901);
	ck_assert_uint_eq(r->max_message, 1000);
	ck_assert_uint_eq(r->ping_interval, 0); /* off */
	ck_assert_uint_eq(r->n_subprotocols, 0);
	ck_assert_uint_eq(r->n_origins, 0);
	ck_assert(r->require_subprotocol);
	ck_assert_int_eq(r->line, 10);

	r = &cfg->routes[3]; /* other routes keep their upstream */
	ck_assert_int_eq(r->upgrade, CONFIG_UPGRADE_FORWARD);
	ck_assert_uint_eq(r->upstream, 0);
	ck_assert_ptr_null(r->bridge_unix);
	ck_assert_uint_eq(r->n_subprotocols, 0);
	ck_assert_int_eq(r->line, 13);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* A config of terminate routes only needs no upstreams at all. */
START_TEST(test_terminate_only)
{
	struct config_errors errs;
	struct config *cfg = load_text(
	    LISTEN "routes = ( { upgrade = \"terminate\"; bridge = \"127.0.0.1:1\"; } );\n", &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->n_upstreams, 0);
	ck_assert_uint_eq(cfg->routes[0].upstream, CONFIG_NO_UPSTREAM);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

START_TEST(test_upstream_policy)
{
	struct config_errors errs;
	struct config *cfg = load_text(
	    "listen = ( { address = \"127.0.0.1:8080\"; proxy_protocol = true; },\n"
	    "  { address = \"127.0.0.1:8081\"; } );\n"
	    "upstreams = ( { name = \"a\"; balance = \"hash\"; hash_key = \"cookie:io\"; "
	    "proxy_protocol = \"v2\"; servers = ( { address = \"127.0.0.1:9000\"; } ); },\n"
	    "  { name = \"b\"; balance = \"least-conn\"; proxy_protocol = \"v1\"; "
	    "servers = ( { address = \"127.0.0.1:9001\"; } ); },\n"
	    "  { name = \"c\"; balance = \"hash\"; "
	    "servers = ( { address = \"127.0.0.1:9002\"; } ); },\n"
	    "  { name = \"d\"; balance = \"random\"; "
	    "servers = ( { address = \"127.0.0.1:9003\"; } ); } );\n"
	    "routes = ( { upstream = \"a\"; } );\n",
	    &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(cfg->upstreams[0].balance, CONFIG_BALANCE_HASH);
	ck_assert_int_eq(cfg->upstreams[0].hash_key, CONFIG_HASH_COOKIE);
	ck_assert_str_eq(cfg->upstreams[0].hash_name, "io");
	ck_assert_uint_eq(cfg->upstreams[0].proxy_protocol, 2);
	ck_assert_int_eq(cfg->upstreams[1].balance, CONFIG_BALANCE_LEAST_CONN);
	ck_assert_uint_eq(cfg->upstreams[1].proxy_protocol, 1);
	ck_assert_int_eq(cfg->upstreams[2].hash_key, CONFIG_HASH_CLIENT); /* the default */
	ck_assert_ptr_null(cfg->upstreams[2].hash_name);
	ck_assert_int_eq(cfg->upstreams[3].balance, CONFIG_BALANCE_RANDOM);
	ck_assert(cfg->listens[0].proxy_protocol);
	ck_assert(!cfg->listens[1].proxy_protocol);
	ck_assert_uint_eq(cfg->upstreams[3].proxy_protocol, 0);
	ck_assert_uint_eq(cfg->upstreams[3].retries, 2); /* the default */
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Without a health block nothing is checked or marked; an empty one has every default. */
START_TEST(test_health_defaults)
{
	struct config_errors errs;
	struct config *cfg = load_text(BASE, &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert(!cfg->upstreams[0].health.enabled);
	ck_assert_ptr_null(cfg->upstreams[0].health.path);
	ck_assert_int_eq(cfg->upstreams[0].on_down, CONFIG_ON_DOWN_KEEP);
	config_free(cfg);

	cfg = load_text(HEALTH(""), &errs);
	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	const struct config_health *h = &cfg->upstreams[0].health;
	ck_assert(h->enabled);
	ck_assert_int_eq(h->type, CONFIG_HEALTH_TCP);
	ck_assert_uint_eq(h->interval, 2000);
	ck_assert_uint_eq(h->timeout, 1000);
	ck_assert_uint_eq(h->rise, 2);
	ck_assert_uint_eq(h->fall, 3);
	ck_assert_str_eq(h->path, "/");
	ck_assert_ptr_null(h->host); /* the server address */
	ck_assert_int_eq(h->expect, 200);
	ck_assert(h->passive);
	ck_assert(!h->passive_5xx);
	ck_assert_uint_eq(h->retry_down_after, 10000);
	ck_assert_int_eq(cfg->upstreams[0].on_down, CONFIG_ON_DOWN_KEEP);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Every health key and on_down, read back; each check type with its own keys. */
START_TEST(test_health_full)
{
	struct config_errors errs;
	struct config *cfg = load_text(
	    LISTEN
	    "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:9001\"; } );\n"
	    "  health = { type = \"http\"; interval = \"250ms\"; timeout = \"1m\"; rise = 1;\n"
	    "    fall = 100; path = \"/healthz?full=1\"; host = \"a.test:8080\"; expect = 599;\n"
	    "    passive = false; passive_5xx = true; }; on_down = \"close\"; },\n"
	    "  { name = \"b\"; servers = ( { address = \"127.0.0.1:9002\"; } );\n"
	    "    health = { type = \"websocket\"; path = \"/ws\"; host = \"b.test\"; };\n"
	    "    on_down = \"keep\"; },\n"
	    "  { name = \"c\"; servers = ( { address = \"127.0.0.1:9003\"; } );\n"
	    "    health = { type = \"none\"; retry_down_after = \"2h\"; rise = 100; fall = 1; }; "
	    "},\n"
	    "  { name = \"d\"; servers = ( { address = \"127.0.0.1:9004\"; } );\n"
	    "    health = { type = \"tcp\"; interval = \"1\"; timeout = \"1ms\"; }; } );\n"
	    "routes = ( { upstream = \"a\"; } );\n",
	    &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	const struct config_health *h = &cfg->upstreams[0].health;
	ck_assert(h->enabled);
	ck_assert_int_eq(h->type, CONFIG_HEALTH_HTTP);
	ck_assert_uint_eq(h->interval, 250);
	ck_assert_uint_eq(h->timeout, 60000);
	ck_assert_uint_eq(h->rise, 1);
	ck_assert_uint_eq(h->fall, 100);
	ck_assert_str_eq(h->path, "/healthz?full=1");
	ck_assert_str_eq(h->host, "a.test:8080");
	ck_assert_int_eq(h->expect, 599);
	ck_assert(!h->passive);
	ck_assert(h->passive_5xx);
	ck_assert_int_eq(cfg->upstreams[0].on_down, CONFIG_ON_DOWN_CLOSE);

	h = &cfg->upstreams[1].health;
	ck_assert_int_eq(h->type, CONFIG_HEALTH_WEBSOCKET);
	ck_assert_str_eq(h->path, "/ws");
	ck_assert_str_eq(h->host, "b.test");
	ck_assert_int_eq(h->expect, 200); /* unused: a websocket check expects 101 */
	ck_assert_uint_eq(h->interval, 2000);
	ck_assert(h->passive);
	ck_assert_int_eq(cfg->upstreams[1].on_down, CONFIG_ON_DOWN_KEEP);

	h = &cfg->upstreams[2].health;
	ck_assert_int_eq(h->type, CONFIG_HEALTH_NONE);
	ck_assert_uint_eq(h->retry_down_after, 7200000);
	ck_assert_uint_eq(h->rise, 100);
	ck_assert_uint_eq(h->fall, 1);
	ck_assert_str_eq(h->path, "/");
	ck_assert_ptr_null(h->host);
	ck_assert_int_eq(cfg->upstreams[2].on_down, CONFIG_ON_DOWN_KEEP);

	h = &cfg->upstreams[3].health;
	ck_assert_int_eq(h->type, CONFIG_HEALTH_TCP);
	ck_assert_uint_eq(h->interval, 1000); /* a bare number is seconds */
	ck_assert_uint_eq(h->timeout, 1);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Every health problem of one upstream, reported together in line order. */
START_TEST(test_health_many_errors)
{
	static const char text[] =
	    LISTEN UPS_OPEN "  health = { type = \"websocket\";\n"
			    "    interval = \"0\"; rise = 0;\n"
			    "    expect = 200; retry_down_after = \"1s\";\n"
			    "    path = \"x\"; host = \"a b\"; passive = 1;\n"
			    "    bogus = true; };\n"
			    "  on_down = \"sometimes\"; } );\n" ROUTES;
	static const char *const want[] = {
	    ":3: health 'interval', 'timeout' and 'retry_down_after' must be > 0",
	    ":4: bad value 'rise' = 0: must be 1..100",
	    ":5: 'expect' is only valid with http checks (a websocket check expects 101)",
	    ":5: 'retry_down_after' is only valid with type = \"none\" (otherwise the check brings "
	    "servers back)",
	    ":6: bad value 'path' = \"x\": must start with '/' and have no spaces",
	    ":6: bad value 'host' = \"a b\": must not be empty or have spaces",
	    ":6: 'health.passive' must be true or false",
	    ":7: unknown key 'health.bogus'",
	    ":8: bad value 'on_down' = \"sometimes\": expected keep or close",
	};
	struct config_errors errs;

	ck_assert_ptr_null(load_text(text, &errs));
	assert_errors(&errs, want, N_ELEMS(want));
	config_errors_fini(&errs);
}
END_TEST

/* sun_path holds 108 bytes with the NUL: a 107-byte path fits, 108 does not. */
START_TEST(test_bridge_unix_length)
{
	char text[512], path[128], want[256];
	struct config_errors errs;

	for (size_t len = 107; len <= 108; len++) {
		memset(path, 'a', len);
		path[0] = '/';
		path[len] = '\0';
		snprintf(text, sizeof(text),
			 LISTEN UPS TERM_NO_BRIDGE "bridge = \"unix:%s\"; } );\n", path);
		struct config *cfg = load_text(text, &errs);
		if (len == 107) {
			assert_errors(&errs, NULL, 0);
			ck_assert_ptr_nonnull(cfg);
			ck_assert_str_eq(cfg->routes[0].bridge_unix, path);
			config_free(cfg);
			continue;
		}
		/* the echoed value is cut at 79 bytes */
		snprintf(want, sizeof(want),
			 ":3: bad value 'bridge' = \"unix:%.74s...\": a unix socket path must be "
			 "shorter than 108 bytes",
			 path);
		const char *w[] = {want};
		ck_assert_ptr_null(cfg);
		assert_errors(&errs, w, 1);
		config_errors_fini(&errs);
	}
}
END_TEST

/* Every terminate problem of one route, reported together in line order. */
START_TEST(test_terminate_many_errors)
{
	static const char text[] =
	    LISTEN UPS "routes = ( { name = \"t\"; upgrade = \"terminate\"; upstream = \"app\";\n"
		       "  subprotocols = [ \"a b\" ];\n"
		       "  max_message = \"0\"; ping_interval = \"1d\";\n"
		       "  origins = [ \"x\" ]; protocols = [ \"websocket\" ]; } );\n";
	static const char *const want[] = {
	    (":3: route 't': 'upstream' is not valid with upgrade = \"terminate\" (the backend is "
	     "'bridge')"),
	    ":3: route 't': upgrade = \"terminate\" requires 'bridge'",
	    ":4: bad value in 'subprotocols': \"a b\" is not a token",
	    ":5: bad value 'max_message' = \"0\": must be > 0",
	    ":5: bad duration 'ping_interval' = \"1d\"",
	    ":6: 'protocols' is not valid with upgrade = \"terminate\" (WebSocket only)",
	    ":6: bad value in 'origins': \"x\": expected SCHEME://HOST[:PORT] or \"null\"",
	};
	struct config_errors errs;

	ck_assert_ptr_null(load_text(text, &errs));
	assert_errors(&errs, want, N_ELEMS(want));
	config_errors_fini(&errs);
}
END_TEST

/* ---- one error each --------------------------------------------------- */

struct err_case {
	const char *text;
	const char *want[3]; /* after the file name; NULL-terminated */
};

static const struct err_case ERR_CASES[] = {
    /* unknown keys, top level and in every nested group */
    {BASE "bogus = 1;\n", {":4: unknown key 'bogus'"}},
    {BASE "timeouts = { header = \"1s\";\n hedaer = \"2s\"; };\n",
     {":5: unknown key 'timeouts.hedaer'"}},
    {BASE "limits = { foo = 1; };\n", {":4: unknown key 'limits.foo'"}},
    {BASE "tunnel = { mode = \"copy\"; speed = 1; };\n", {":4: unknown key 'tunnel.speed'"}},
    {"listen = ( { address = \"127.0.0.1:8080\"; backlog = 5; } );\n" UPS ROUTES,
     {":1: unknown key 'backlog'"}},
    {LISTEN "upstreams = ( { name = \"app\"; balancing = \"rr\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: unknown key 'balancing'"}},
    {LISTEN "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; wieght = 2; } ); } );\n" ROUTES,
     {":3: unknown key 'wieght'"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; hots = \"x\"; } );\n",
     {":3: unknown key 'hots'"}},

    /* wrong types */
    {BASE "timeouts = { header = 10; };\n", {":4: 'timeouts.header' must be a string"}},
    {BASE "timeouts = \"10s\";\n", {":4: 'timeouts' must be a group"}},
    {BASE "limits = \"big\";\n", {":4: 'limits' must be a group"}},
    {BASE "tunnel = \"copy\";\n", {":4: 'tunnel' must be a group"}},
    {BASE "limits = { header_fields = \"100\"; };\n",
     {":4: 'limits.header_fields' must be an integer"}},
    {BASE "limits = { header_bytes = 1.5; };\n",
     {":4: 'limits.header_bytes' must be an integer or a size string"}},
    {LISTEN "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; weight = \"2\"; } ); } );\n" ROUTES,
     {":3: 'weight' must be an integer"}},
    {"listen = \"127.0.0.1:8080\";\n" UPS ROUTES, {":1: 'listen' must be a list of groups"}},
    {"listen = ( \"127.0.0.1:8080\" );\n" UPS ROUTES, {":1: each 'listen' entry must be a group"}},
    {"listen = ( { address = 8080; } );\n" UPS ROUTES, {":1: 'address' must be a string"}},
    {LISTEN "upstreams = { name = \"app\"; };\n" ROUTES,
     {":2: 'upstreams' must be a list of groups", ":3: undefined upstream 'app'"}},
    {LISTEN UPS "routes = { upstream = \"app\"; };\n", {":3: 'routes' must be a list of groups"}},
    {LISTEN UPS "routes = ( { upstream = 1; } );\n", {":3: 'upstream' must be a string"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; protocols = \"websocket\"; } );\n",
     {":3: 'protocols' must be an array of strings"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; protocols = [ 1, 2 ]; } );\n",
     {":3: 'protocols' must be an array of strings"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = true; } );\n",
     {":3: 'upgrade' must be a string"}},
    {BASE "via = true;\n", {":4: 'via' must be a string"}},
    {BASE "access_log = 1;\n", {":4: 'access_log' must be a string"}},
    {BASE "log_level = 3;\n", {":4: 'log_level' must be a string"}},

    /* durations */
    {BASE "timeouts = { header = \"10x\"; };\n", {":4: bad duration 'timeouts.header' = \"10x\""}},
    {BASE "timeouts = { tunnel_idle = \"-1s\"; };\n",
     {":4: bad duration 'timeouts.tunnel_idle' = \"-1s\""}},
    {BASE "timeouts = { connect = \"\"; };\n", {":4: bad duration 'timeouts.connect' = \"\""}},
    {BASE "timeouts = { send = \"99999999999999999999s\"; };\n",
     {":4: bad duration 'timeouts.send' = \"99999999999999999999s\""}},
    /* control bytes are escaped so one error stays one line */
    {BASE "timeouts = { keepalive = \"1\\n0s\"; };\n",
     {":4: bad duration 'timeouts.keepalive' = \"1\\x0a0s\""}},

    /* addresses */
    {"listen = ( { address = \"127.0.0.1\"; } );\n" UPS ROUTES,
     {":1: bad address \"127.0.0.1\" in 'listen': expected HOST:PORT"}},
    {"listen = ( { address = \"127.0.0.1:0\"; } );\n" UPS ROUTES,
     {":1: bad address \"127.0.0.1:0\" in 'listen': port must be 1..65535"}},
    {"listen = ( { address = \"localhost:80\"; } );\n" UPS ROUTES,
     {":1: bad address \"localhost:80\" in 'listen': host must be a numeric IPv4 address (no "
      "DNS)"}},
    {"listen = ( { address = \"::1:80\"; } );\n" UPS ROUTES,
     {":1: bad address \"::1:80\" in 'listen': IPv6 addresses need brackets: [IPV6]:PORT"}},
    {"listen = ( { address = \"[::1]80\"; } );\n" UPS ROUTES,
     {":1: bad address \"[::1]80\" in 'listen': expected [IPV6]:PORT"}},
    {"listen = ( { address = \"[fe80::zz]:80\"; } );\n" UPS ROUTES,
     {":1: bad address \"[fe80::zz]:80\" in 'listen': host must be a numeric IPv6 address"}},
    {LISTEN "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"app_local:9000\"; } ); } );\n" ROUTES,
     {":3: bad address \"app_local:9000\" in upstream 'app': host must be an IPv4 address "
      "or a host name"}},
    {"listen = ( { } );\n" UPS ROUTES, {":1: missing 'address' in 'listen'"}},
    {LISTEN "upstreams = ( { name = \"app\"; servers = ( { weight = 2; } ); } );\n" ROUTES,
     {":2: missing 'address' in upstream 'app'"}},
    {"listen = ( { address = \"127.0.0.1:8080\"; },\n { address = \"127.0.0.1:8080\"; } );\n" UPS
	 ROUTES,
     {":2: duplicate address \"127.0.0.1:8080\" in 'listen'"}},

    /* sizes and limits */
    {BASE "limits = { header_bytes = \"16x\"; };\n",
     {":4: bad size 'limits.header_bytes' = \"16x\""}},
    {BASE "limits = { uri_bytes = \"k\"; };\n", {":4: bad size 'limits.uri_bytes' = \"k\""}},
    {BASE "limits = { header_bytes = 100; };\n",
     {":4: bad value 'limits.header_bytes' = 100: must be >= 256"}},
    {BASE "limits = { header_fields = 0; };\n",
     {":4: bad value 'limits.header_fields' = 0: must be >= 1"}},
    {BASE "limits = { max_connections = -5; };\n",
     {":4: bad value 'limits.max_connections' = -5: must be >= 1"}},
    {BASE "limits = { nofile = 63; };\n", {":4: bad value 'limits.nofile' = 63: must be >= 64"}},
    /* balancing and the PROXY protocol towards servers */
    {LISTEN "upstreams = ( { name = \"app\"; balance = \"fastest\"; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: bad value 'balance' = \"fastest\": expected round-robin, least-conn, random or hash"}},
    {LISTEN "upstreams = ( { name = \"app\"; hash_key = \"client\"; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: 'hash_key' is only valid with balance = \"hash\""}},
    {LISTEN "upstreams = ( { name = \"app\"; balance = \"hash\"; hash_key = \"cookie:\"; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: bad value 'hash_key' = \"cookie:\": expected \"client\", \"header:NAME\", "
      "\"cookie:NAME\" or \"query:NAME\""}},
    {LISTEN "upstreams = ( { name = \"app\"; balance = \"hash\"; hash_key = \"path\"; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: bad value 'hash_key' = \"path\": expected \"client\", \"header:NAME\", "
      "\"cookie:NAME\" or \"query:NAME\""}},
    {LISTEN "upstreams = ( { name = \"app\"; proxy_protocol = \"v3\"; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: bad value 'proxy_protocol' = \"v3\": expected v1 or v2"}},
    {LISTEN "upstreams = ( { name = \"app\"; proxy_protocol = \"v1\"; tls = { verify = false; }; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: 'proxy_protocol' with 'tls' is not supported"}},
    {LISTEN "upstreams = ( { name = \"app\"; retries = 64; "
	    "servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
     {":2: bad value 'retries' = 64: must be 0..63"}},
    {"listen = ( { address = \"127.0.0.1:8080\"; proxy_protocol = \"v1\"; } );\n" UPS ROUTES,
     {":1: 'proxy_protocol' must be true or false"}},
    {BASE "limits = { nofile = \"4k\"; };\n", {":4: 'limits.nofile' must be an integer"}},

    /* health checks and on_down */
    {LISTEN UPS_OPEN "  health = 1; } );\n" ROUTES, {":3: 'health' must be a group"}},
    {HEALTH("type = \"icmp\";"),
     {":3: bad value 'health.type' = \"icmp\": expected tcp, http, websocket or none"}},
    {HEALTH("type = \"HTTP\";"),
     {":3: bad value 'health.type' = \"HTTP\": expected tcp, http, websocket or none"}},
    {HEALTH("type = 1;"), {":3: 'health.type' must be a string"}},
    {HEALTH("frob = 1;"), {":3: unknown key 'health.frob'"}},
    {HEALTH("interval = \"fast\";"), {":3: bad duration 'interval' = \"fast\""}},
    {HEALTH("timeout = 5;"), {":3: 'health.timeout' must be a string"}},
    {HEALTH("interval = \"0\";"),
     {":3: health 'interval', 'timeout' and 'retry_down_after' must be > 0"}},
    {HEALTH("timeout = \"0ms\";"),
     {":3: health 'interval', 'timeout' and 'retry_down_after' must be > 0"}},
    {HEALTH("type = \"none\"; retry_down_after = \"0\";"),
     {":3: health 'interval', 'timeout' and 'retry_down_after' must be > 0"}},
    {HEALTH("type = \"none\"; retry_down_after = \"later\";"),
     {":3: bad duration 'retry_down_after' = \"later\""}},
    {HEALTH("rise = 0;"), {":3: bad value 'rise' = 0: must be 1..100"}},
    {HEALTH("rise = 101;"), {":3: bad value 'rise' = 101: must be 1..100"}},
    {HEALTH("fall = 0;"), {":3: bad value 'fall' = 0: must be 1..100"}},
    {HEALTH("fall = -1;"), {":3: bad value 'fall' = -1: must be 1..100"}},
    {HEALTH("rise = \"2\";"), {":3: 'health.rise' must be an integer"}},
    {HEALTH("type = \"http\"; expect = 199;"), {":3: bad value 'expect' = 199: must be 200..599"}},
    {HEALTH("type = \"http\"; expect = 600;"), {":3: bad value 'expect' = 600: must be 200..599"}},
    {HEALTH("type = \"http\"; expect = \"200\";"), {":3: 'health.expect' must be an integer"}},
    {HEALTH("type = \"websocket\"; expect = 101;"),
     {":3: bad value 'expect' = 101: must be 200..599",
      ":3: 'expect' is only valid with http checks (a websocket check expects 101)"}},
    {HEALTH("type = \"websocket\"; expect = 200;"),
     {":3: 'expect' is only valid with http checks (a websocket check expects 101)"}},
    {HEALTH("expect = 200;"),
     {":3: 'expect' is only valid with http checks (a websocket check expects 101)"}},
    {HEALTH("type = \"http\"; path = \"healthz\";"),
     {":3: bad value 'path' = \"healthz\": must start with '/' and have no spaces"}},
    {HEALTH("type = \"http\"; path = \"\";"),
     {":3: bad value 'path' = \"\": must start with '/' and have no spaces"}},
    {HEALTH("type = \"websocket\"; path = \"/a b\";"),
     {":3: bad value 'path' = \"/a b\": must start with '/' and have no spaces"}},
    {HEALTH("type = \"http\"; path = \"/a\\tb\";"),
     {":3: bad value 'path' = \"/a\\x09b\": must start with '/' and have no spaces"}},
    {HEALTH("type = \"http\"; host = \"\";"),
     {":3: bad value 'host' = \"\": must not be empty or have spaces"}},
    {HEALTH("type = \"websocket\"; host = \"a b\";"),
     {":3: bad value 'host' = \"a b\": must not be empty or have spaces"}},
    {HEALTH("path = \"/x\";"), {":3: 'path' is only valid with http and websocket checks"}},
    {HEALTH("type = \"none\"; host = \"x\";"),
     {":3: 'host' is only valid with http and websocket checks"}},
    {HEALTH("type = \"http\"; retry_down_after = \"1s\";"),
     {":3: 'retry_down_after' is only valid with type = \"none\" (otherwise the check brings "
      "servers back)"}},
    {HEALTH("retry_down_after = \"1s\";"),
     {":3: 'retry_down_after' is only valid with type = \"none\" (otherwise the check brings "
      "servers back)"}},
    {HEALTH("passive = \"yes\";"), {":3: 'health.passive' must be true or false"}},
    {HEALTH("passive_5xx = 1;"), {":3: 'health.passive_5xx' must be true or false"}},
    {LISTEN UPS_OPEN "  on_down = \"close\"; } );\n" ROUTES,
     {":3: 'on_down' needs a 'health' block (servers are never down without one)"}},
    {LISTEN UPS_OPEN "  on_down = \"keep\"; } );\n" ROUTES,
     {":3: 'on_down' needs a 'health' block (servers are never down without one)"}},
    {LISTEN UPS_OPEN "  health = { };\n  on_down = \"drain\"; } );\n" ROUTES,
     {":4: bad value 'on_down' = \"drain\": expected keep or close"}},
    {LISTEN UPS_OPEN "  health = { };\n  on_down = 1; } );\n" ROUTES,
     {":4: 'on_down' must be a string"}},

    /* upstreams */
    {LISTEN "upstreams = ( );\n" ROUTES, {":3: undefined upstream 'app'"}},
    {LISTEN "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); },\n"
	    "  { name = \"app\"; servers = ( { address = \"127.0.0.1:9001\"; } ); } );\n" ROUTES,
     {":3: duplicate upstream 'app'"}},
    {LISTEN "upstreams = ( { name = \"app\"; servers = ( ); } );\n" ROUTES,
     {":2: upstream 'app' has no servers"}},
    {LISTEN "upstreams = ( { name = \"app\"; } );\n" ROUTES, {":2: upstream 'app' has no servers"}},
    {LISTEN "upstreams = ( { name = \"\"; servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
	    "  { name = \"app\"; servers = ( { address = \"127.0.0.1:2\"; } ); } );\n" ROUTES,
     {":2: bad value 'name' = \"\": must not be empty"}},
    {LISTEN "upstreams = ( { servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
	    "  { name = \"app\"; servers = ( { address = \"127.0.0.1:2\"; } ); } );\n" ROUTES,
     {":2: missing 'name' in upstream"}},
    {LISTEN "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; weight = 0; } ); } );\n" ROUTES,
     {":3: bad value 'weight' = 0: must be 1..1000"}},
    {LISTEN "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; weight = 1001; } ); } );\n" ROUTES,
     {":3: bad value 'weight' = 1001: must be 1..1000"}},

    /* listen and routes required */
    {UPS ROUTES, {": no 'listen' addresses"}},
    {"listen = ( );\n" UPS ROUTES, {":1: no 'listen' addresses"}},
    {LISTEN UPS, {": no 'routes'"}},
    {LISTEN UPS "routes = ( );\n", {":3: no 'routes'"}},

    /* routes */
    {LISTEN UPS "routes = ( { upstream = \"nope\"; } );\n", {":3: undefined upstream 'nope'"}},
    {LISTEN ROUTES, {":2: undefined upstream 'app'"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; },\n { name = \"x\"; } );\n",
     {":4: missing 'upstream' in route 'x'"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; },\n { host = \"a.b\"; } );\n",
     {":4: missing 'upstream' in route '#2'"}},
    {LISTEN UPS "routes = ( { upstream = \"app\";\n protocols = [ \"websocket\", \"h2c\" ]; } );\n",
     {":4: h2c cannot be allowed: HTTP/2 forbids Upgrade"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; protocols = [ \"*\", \"H2C\" ]; } );\n",
     {":3: h2c cannot be allowed: HTTP/2 forbids Upgrade"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; protocols = [ \"web socket\" ]; } );\n",
     {":3: bad value in 'protocols': \"web socket\" is not a protocol token"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = \"sideways\"; } );\n",
     {":3: bad value 'upgrade' = \"sideways\": expected forward, strip, deny or terminate"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; path_prefix = \"ws\"; } );\n",
     {":3: bad value 'path_prefix' = \"ws\": must start with \"/\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; host = \"a b\"; } );\n",
     {":3: bad value 'host' = \"a b\": expected NAME or *.SUFFIX"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; host = \"*\"; } );\n",
     {":3: bad value 'host' = \"*\": expected NAME or *.SUFFIX"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; host = \"a..example.com\"; } );\n",
     {":3: bad value 'host' = \"a..example.com\": expected NAME or *.SUFFIX"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; host = \"example.com:80\"; } );\n",
     {":3: bad value 'host' = \"example.com:80\": expected NAME or *.SUFFIX"}},
    {LISTEN UPS "routes = ( { name = \"a\"; upstream = \"app\"; },\n"
		"  { name = \"a\"; upstream = \"app\"; } );\n",
     {":4: duplicate route 'a'"}},
    {LISTEN UPS "routes = ( { name = \"\"; upstream = \"app\"; } );\n",
     {":3: bad value 'name' = \"\": must not be empty"}},

    /* upgrade = "terminate": the bridge replaces the upstream */
    {LISTEN UPS "routes = ( { name = \"x\"; upgrade = \"terminate\"; } );\n",
     {":3: route 'x': upgrade = \"terminate\" requires 'bridge'"}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; },\n"
		"  { upgrade = \"terminate\"; path_prefix = \"/vnc\"; } );\n",
     {":4: route '#2': upgrade = \"terminate\" requires 'bridge'"}},
    {LISTEN UPS "routes = ( { name = \"x\"; upgrade = \"terminate\"; bridge = \"127.0.0.1:5900\";\n"
		"  upstream = \"app\"; } );\n",
     {":4: route 'x': 'upstream' is not valid with upgrade = \"terminate\" (the backend is "
      "'bridge')"}},
    {LISTEN UPS TERM "\n  protocols = [ \"websocket\" ]; } );\n",
     {":4: 'protocols' is not valid with upgrade = \"terminate\" (WebSocket only)"}},
    /* terminate-only keys anywhere else would silently do nothing */
    {LISTEN UPS "routes = ( { upstream = \"app\";\n bridge = \"127.0.0.1:5900\"; } );\n",
     {":4: 'bridge' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = \"forward\";\n"
		" subprotocols = [ \"binary\" ]; } );\n",
     {":4: 'subprotocols' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = \"strip\";\n"
		" require_subprotocol = false; } );\n",
     {":4: 'require_subprotocol' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = \"deny\";\n"
		" max_message = \"1m\"; } );\n",
     {":4: 'max_message' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\";\n ping_interval = \"30s\"; } );\n",
     {":4: 'ping_interval' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\";\n origins = [ ]; } );\n",
     {":4: 'origins' is only valid with upgrade = \"terminate\""}},
    {LISTEN UPS "routes = ( { upstream = \"app\"; upgrade = \"sideways\";\n"
		" bridge = \"127.0.0.1:1\"; } );\n",
     {":3: bad value 'upgrade' = \"sideways\": expected forward, strip, deny or terminate",
      ":4: 'bridge' is only valid with upgrade = \"terminate\""}},
    /* bridge */
    {LISTEN UPS TERM_NO_BRIDGE "bridge = 5900; } );\n", {":3: 'bridge' must be a string"}},
    {LISTEN UPS TERM_NO_BRIDGE "bridge = \"5900\"; } );\n",
     {":3: bad value 'bridge' = \"5900\": expected HOST:PORT"}},
    {LISTEN UPS TERM_NO_BRIDGE "bridge = \"localhost:5900\"; } );\n",
     {":3: bad value 'bridge' = \"localhost:5900\": host must be a numeric IPv4 address (no "
      "DNS)"}},
    {LISTEN UPS TERM_NO_BRIDGE "bridge = \"127.0.0.1:0\"; } );\n",
     {":3: bad value 'bridge' = \"127.0.0.1:0\": port must be 1..65535"}},
    {LISTEN UPS TERM_NO_BRIDGE "bridge = \"unix:vnc.sock\"; } );\n",
     {":3: bad value 'bridge' = \"unix:vnc.sock\": a unix socket path must be absolute"}},
    {LISTEN UPS TERM_NO_BRIDGE "bridge = \"unix:\"; } );\n",
     {":3: bad value 'bridge' = \"unix:\": a unix socket path must be absolute"}},
    /* subprotocols: tokens, compared case-sensitively */
    {LISTEN UPS TERM "subprotocols = \"binary\"; } );\n",
     {":3: 'subprotocols' must be an array of strings"}},
    {LISTEN UPS TERM "subprotocols = ( \"binary\", 64 ); } );\n",
     {":3: 'subprotocols' must be an array of strings"}},
    {LISTEN UPS TERM "subprotocols = [ \"bin ary\" ]; } );\n",
     {":3: bad value in 'subprotocols': \"bin ary\" is not a token"}},
    {LISTEN UPS TERM "subprotocols = [ \"\" ]; } );\n",
     {":3: bad value in 'subprotocols': \"\" is not a token"}},
    {LISTEN UPS TERM "subprotocols = [ \"binary\", \"base64\", \"binary\" ]; } );\n",
     {":3: duplicate subprotocol \"binary\""}},
    {LISTEN UPS TERM "require_subprotocol = \"no\"; } );\n",
     {":3: 'require_subprotocol' must be true or false"}},
    {LISTEN UPS TERM "require_subprotocol = 0; } );\n",
     {":3: 'require_subprotocol' must be true or false"}},
    /* max_message: a size, never 0 */
    {LISTEN UPS TERM "max_message = \"0\"; } );\n",
     {":3: bad value 'max_message' = \"0\": must be > 0"}},
    {LISTEN UPS TERM "max_message = 0; } );\n", {":3: bad value 'max_message' = 0: must be > 0"}},
    {LISTEN UPS TERM "max_message = -1; } );\n", {":3: bad value 'max_message' = -1: must be > 0"}},
    {LISTEN UPS TERM "max_message = \"1mb\"; } );\n", {":3: bad size 'max_message' = \"1mb\""}},
    {LISTEN UPS TERM "max_message = 1.5; } );\n",
     {":3: 'max_message' must be an integer or a size string"}},
    /* ping_interval: a duration string */
    {LISTEN UPS TERM "ping_interval = \"soon\"; } );\n",
     {":3: bad duration 'ping_interval' = \"soon\""}},
    {LISTEN UPS TERM "ping_interval = 30; } );\n", {":3: 'ping_interval' must be a string"}},
    /* origins: serialised origins, so no path and no trailing slash */
    {LISTEN UPS TERM "origins = \"https://a.example\"; } );\n",
     {":3: 'origins' must be an array of strings"}},
    {LISTEN UPS TERM "origins = [ \"https://a.example/\" ]; } );\n",
     {":3: bad value in 'origins': \"https://a.example/\": expected SCHEME://HOST[:PORT] or "
      "\"null\""}},
    {LISTEN UPS TERM "origins = [ \"https://ok.example\", \"a.example\" ]; } );\n",
     {":3: bad value in 'origins': \"a.example\": expected SCHEME://HOST[:PORT] or \"null\""}},
    {LISTEN UPS TERM "origins = [ \"https://\" ]; } );\n",
     {":3: bad value in 'origins': \"https://\": expected SCHEME://HOST[:PORT] or \"null\""}},
    {LISTEN UPS TERM "origins = [ \"*\" ]; } );\n",
     {":3: bad value in 'origins': \"*\": expected SCHEME://HOST[:PORT] or \"null\""}},
    {LISTEN UPS TERM "origins = [ \"https://u@a.example\" ]; } );\n",
     {":3: bad value in 'origins': \"https://u@a.example\": expected SCHEME://HOST[:PORT] or "
      "\"null\""}},
    {LISTEN UPS TERM "origins = [ \"https://a.example?x\" ]; } );\n",
     {":3: bad value in 'origins': \"https://a.example?x\": expected SCHEME://HOST[:PORT] or "
      "\"null\""}},
    {LISTEN UPS TERM "origins = [ \"1http://a.example\" ]; } );\n",
     {":3: bad value in 'origins': \"1http://a.example\": expected SCHEME://HOST[:PORT] or "
      "\"null\""}},
    {LISTEN UPS TERM "origins = [ \"https://a b\" ]; } );\n",
     {":3: bad value in 'origins': \"https://a b\": expected SCHEME://HOST[:PORT] or "
      "\"null\""}},

    /* top-level scalars */
    {BASE "tunnel = { mode = \"zerocopy\"; };\n",
     {":4: bad value 'tunnel.mode' = \"zerocopy\": expected splice or copy"}},
    {BASE "log_level = \"loud\";\n",
     {":4: bad value 'log_level' = \"loud\": expected error, warn, info or debug"}},
    {BASE "via = \"my proxy\";\n", {":4: bad value 'via' = \"my proxy\": must be a token"}},
    {BASE "via = \"\";\n", {":4: bad value 'via' = \"\": must be a token"}},
    {BASE "error_log = \"off\";\n",
     {":4: bad value 'error_log' = \"off\": expected \"stderr\" or a path"}},
    {BASE "access_log = \"\";\n",
     {":4: bad value 'access_log' = \"\": expected \"stderr\", \"off\", \"syslog\", "
      "\"syslog:unix:/PATH\" or a path"}},
    {BASE "access_log = \"syslog:udp:1.2.3.4\";\n",
     {":4: bad value 'access_log' = \"syslog:udp:1.2.3.4\": expected \"stderr\", \"off\", "
      "\"syslog\", \"syslog:unix:/PATH\" or a path"}},

    /* h2 (the HTTP/2 front end's SETTINGS) and listen h2c */
    /* (libconfig 1.5 keeps an integer past 32 bits only with the L suffix) */
    {BASE "h2 = { initial_window = 2147483648L; };\n",
     {":4: bad value 'h2.initial_window' = 2147483648: must be <= 2147483647"}},
    {BASE "h2 = { initial_window = \"2g\"; };\n",
     {":4: bad value 'h2.initial_window' = 2147483648: must be <= 2147483647"}},
    {BASE "h2 = { initial_window = 16383; };\n",
     {":4: bad value 'h2.initial_window' = 16383: must be >= 16384"}},
    {BASE "h2 = { max_concurrent_streams = 0; };\n",
     {":4: bad value 'h2.max_concurrent_streams' = 0: must be >= 1"}},
    {BASE "h2 = { max_concurrent_streams = -1; };\n",
     {":4: bad value 'h2.max_concurrent_streams' = -1: must be >= 1"}},
    {BASE "h2 = { max_concurrent_streams = 1048577; };\n",
     {":4: bad value 'h2.max_concurrent_streams' = 1048577: must be <= 1048576"}},
    {BASE "h2 = { max_concurrent_streams = \"128\"; };\n",
     {":4: 'h2.max_concurrent_streams' must be an integer"}},
    {BASE "h2 = { max_header_list = 255; };\n",
     {":4: bad value 'h2.max_header_list' = 255: must be >= 256"}},
    {BASE "h2 = { max_header_list = 16777217; };\n",
     {":4: bad value 'h2.max_header_list' = 16777217: must be <= 16777216"}},
    {BASE "h2 = { max_header_list = \"lots\"; };\n",
     {":4: bad size 'h2.max_header_list' = \"lots\""}},
    {BASE "h2 = { max_header_list = 1.5; };\n",
     {":4: 'h2.max_header_list' must be an integer or a size string"}},
    {BASE "h2 = { max_streams = 10; };\n", {":4: unknown key 'h2.max_streams'"}},
    {BASE "h2 = 128;\n", {":4: 'h2' must be a group"}},
    {"listen = ( { address = \"127.0.0.1:8080\"; h2c = \"yes\"; } );\n" UPS ROUTES,
     {":1: 'h2c' must be true or false"}},

    /* libconfig parse errors: FILE:LINE: text, nothing else checked */
    {LISTEN "upstreams = ( { name = \"app\"\n  servers = ( ; ) } );\n" ROUTES,
     {":3: syntax error"}},
    {LISTEN UPS ROUTES "via = \"a\";\nvia = \"b\";\n", {":5: duplicate setting name"}},
};

START_TEST(test_error_case)
{
	const struct err_case *c = &ERR_CASES[_i];
	struct config_errors errs;
	size_t n = 0;

	while (n < N_ELEMS(c->want) && c->want[n] != NULL)
		n++;
	struct config *cfg = load_text(c->text, &errs);
	ck_assert_ptr_null(cfg);
	assert_errors(&errs, c->want, n);
	config_errors_fini(&errs);
	ck_assert_uint_eq(errs.n, 0);
}
END_TEST

/* A session remembers tried servers in a fixed bitmap: the pool size is capped. */
START_TEST(test_too_many_servers)
{
	char text[8192];
	size_t len = (size_t)snprintf(text, sizeof(text),
				      LISTEN "upstreams = ( { name = \"app\";\n"
					     "  servers = (");
	for (int i = 0; i <= CONFIG_MAX_SERVERS; i++)
		len +=
		    (size_t)snprintf(text + len, sizeof(text) - len,
				     "%s{ address = \"127.0.0.1:%d\"; }", i ? ", " : "", 1000 + i);
	snprintf(text + len, sizeof(text) - len, "); } );\n" ROUTES);
	struct config_errors errs;
	const char *want[] = {":3: upstream 'app' has 65 servers: at most 64"};
	ck_assert_ptr_null(load_text(text, &errs));
	assert_errors(&errs, want, 1);
	config_errors_fini(&errs);
}
END_TEST

/* Every error in one file, reported together in line order. */
START_TEST(test_many_errors)
{
	static const char text[] =
	    "listen = ( { address = \"1.2.3.4\"; } );\n"
	    "bogus = 1;\n"
	    "timeouts = { header = \"x\"; };\n"
	    "upstreams = ( { name = \"app\";\n"
	    "  servers = ( { address = \"127.0.0.1:9000\"; weight = 0; } ); } );\n"
	    "routes = ( { upstream = \"nope\"; upgrade = \"maybe\"; },\n"
	    "  { upstream = \"app\"; protocols = [ \"h2c\" ]; path_prefix = \"x\"; } );\n"
	    "tunnel = { mode = \"fast\"; };\n"
	    "limits = { header_bytes = 1; };\n";
	static const char *const want[] = {
	    ":1: bad address \"1.2.3.4\" in 'listen': expected HOST:PORT",
	    ":2: unknown key 'bogus'",
	    ":3: bad duration 'timeouts.header' = \"x\"",
	    ":5: bad value 'weight' = 0: must be 1..1000",
	    ":6: undefined upstream 'nope'",
	    ":6: bad value 'upgrade' = \"maybe\": expected forward, strip, deny or terminate",
	    ":7: bad value 'path_prefix' = \"x\": must start with \"/\"",
	    ":7: h2c cannot be allowed: HTTP/2 forbids Upgrade",
	    ":8: bad value 'tunnel.mode' = \"fast\": expected splice or copy",
	    ":9: bad value 'limits.header_bytes' = 1: must be >= 256",
	};
	struct config_errors errs;

	ck_assert_ptr_null(load_text(text, &errs));
	assert_errors(&errs, want, N_ELEMS(want));
	config_errors_fini(&errs);
}
END_TEST

/* Beyond CONFIG_MAX_ERRORS the rest are counted, not kept. */
START_TEST(test_error_overflow)
{
	char text[8192];
	size_t o = (size_t)snprintf(text, sizeof(text), "%s", BASE);
	struct config_errors errs;

	for (int i = 0; i < CONFIG_MAX_ERRORS + 6; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "bad%d = 1;\n", i);
	ck_assert_ptr_null(load_text(text, &errs));
	ck_assert_uint_eq(errs.n, CONFIG_MAX_ERRORS);
	ck_assert_uint_eq(errs.dropped, 6);
	ck_assert_str_eq(errs.msg[0] + strlen(tmp_path), ":4: unknown key 'bad0'");
	config_errors_fini(&errs);
}
END_TEST

START_TEST(test_missing_file)
{
	struct config_errors errs;

	ck_assert_ptr_null(config_load("/nonexistent/switchyard.conf", &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_str_eq(errs.msg[0],
			 "/nonexistent/switchyard.conf: cannot read: No such file or directory");
	config_errors_fini(&errs);

	ck_assert_ptr_null(config_load("/tmp", &errs));
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_str_eq(errs.msg[0], "/tmp: cannot read: Is a directory");
	config_errors_fini(&errs);

	/* errs is optional */
	ck_assert_ptr_null(config_load("/nonexistent/switchyard.conf", NULL));
	config_free(NULL);
	config_errors_fini(NULL);
}
END_TEST

/* ---- found by tests/fuzz/fuzz_config (issue 16) ------------------------ */

/*
 * One error, one line: a user value inside a message is quoted with control
 * bytes escaped (quote()), so that a value holding "\n" cannot forge a second
 * "FILE:LINE: ..." line in `switchyard -t` output or the log. Upstream and
 * route names, the 'ca' path and certificate paths were echoed raw.
 */
static const char *const ONE_LINE_CASES[] = {
    /* the fuzzer's input, minimized: a route naming an undefined upstream */
    LISTEN "routes = ( { upstream = \"a\\nb\"; } );\n",
    LISTEN "upstreams = ( { name = \"a\\nb\"; servers = ( ); } );\n" ROUTES,
    LISTEN "upstreams = ( { name = \"a\\x01b\"; servers = ( { address = \"x\"; } ); } );\n" ROUTES,
    LISTEN "upstreams = ( { name = \"a\\rb\"; servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
	   "  { name = \"a\\rb\"; servers = ( { address = \"127.0.0.1:2\"; } ); } );\n"
	   "routes = ( { upstream = \"a\\rb\"; } );\n",
    LISTEN UPS "routes = ( { name = \"r\\n1\"; } );\n",
    LISTEN UPS "routes = ( { name = \"r\\n1\"; upgrade = \"terminate\"; } );\n",
    LISTEN UPS "routes = ( { name = \"r\\n1\"; upgrade = \"terminate\"; upstream = \"app\";\n"
	       "  bridge = \"127.0.0.1:1\"; } );\n",
    "listen = ( { address = \"127.0.0.1:8080\"; tls = { certificates = (\n"
    "  { cert = \"/nonexistent/a\\nb.pem\"; key = \"/nonexistent/k.pem\"; } ); }; } );\n" UPS
	ROUTES,
    LISTEN "upstreams = ( { name = \"app\"; tls = { ca = \"/nonexistent/a\\nb.pem\"; };\n"
	   "  servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n" ROUTES,
};

START_TEST(test_errors_one_line)
{
	struct config_errors errs;
	struct config *cfg = config_parse("one.conf", ONE_LINE_CASES[_i], &errs);

	ck_assert_ptr_null(cfg);
	ck_assert_uint_gt(errs.n, 0);
	for (size_t i = 0; i < errs.n; i++) {
		ck_assert_msg(strncmp(errs.msg[i], "one.conf:", 9) == 0, "no file in '%s'",
			      errs.msg[i]);
		for (const char *c = errs.msg[i]; *c != '\0'; c++)
			ck_assert_msg((unsigned char)*c >= 0x20 && *c != 0x7f,
				      "case %d: control byte 0x%02x in '%s'", _i, (unsigned char)*c,
				      errs.msg[i]);
	}
	config_errors_fini(&errs);
}
END_TEST

/*
 * @include of a directory: libconfig 1.5's scanner fails read(2) on it and
 * exits the process ("input in flex scanner failed", status 2) -- at `-t`, at
 * start, and at a SIGHUP reload, which kills the running proxy. The loader
 * must refuse it as an error like any other, however the path is written:
 * libconfig drops a backslash before anything but '\\' or '"' ("/t\mp" opens
 * /tmp), which a check of the raw text misses.
 */
static const char *const INCLUDE_DIRECTORY_CASES[] = {
    BASE "@include \"/tmp\"\n",
    BASE "@include \"/t\\mp\"\n",
    BASE "@include \"\\/\"\n",
    BASE "  @include\t\"/tmp/\\.\"\n",
};

START_TEST(test_include_directory)
{
	struct config_errors errs;
	struct config *cfg = config_parse("inc.conf", INCLUDE_DIRECTORY_CASES[_i], &errs);

	ck_assert_ptr_null(cfg);
	ck_assert_uint_eq(errs.n, 1);
	ck_assert_msg(strncmp(errs.msg[0], "inc.conf:4: ", 12) == 0, "got '%s'", errs.msg[0]);
	config_errors_fini(&errs);
}
END_TEST

/*
 * An error about a setting read from an @include'd file names that file and
 * its line there, as libconfig's own syntax errors do; it named the main file
 * with the included file's line number (a line the main file may not have).
 */
START_TEST(test_include_error_names_included_file)
{
	char inc[] = "/tmp/check_config_inc_XXXXXX", text[256];
	struct config_errors errs;
	int fd = mkstemp(inc);
	static const char part[] = "\n\n\n\n\nroutes = ( { upstream = \"nope\"; } );\n";

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, part, sizeof(part) - 1), (ssize_t)(sizeof(part) - 1));
	close(fd);
	snprintf(text, sizeof(text), LISTEN UPS "@include \"%s\"\n", inc);
	struct config *cfg = config_parse("main.conf", text, &errs);
	unlink(inc);
	ck_assert_ptr_null(cfg);
	ck_assert_uint_eq(errs.n, 1);
	char want[128];
	snprintf(want, sizeof(want), "%s:6: undefined upstream 'nope'", inc);
	ck_assert_str_eq(errs.msg[0], want);
	config_errors_fini(&errs);
}
END_TEST

/* ---- value parsers ---------------------------------------------------- */

static const struct {
	const char *text;
	int rc;
	uint64_t ms;
} DURATIONS[] = {
    {"10s", 0, 10000},
    {"250ms", 0, 250},
    {"5m", 0, 300000},
    {"1h", 0, 3600000},
    {"0", 0, 0},
    {"0s", 0, 0},
    {"7", 0, 7000},
    {"007ms", 0, 7},
    {"18446744073709551615ms", 0, UINT64_MAX},
    {"18446744073709551616ms", -1, 0}, /* digits overflow */
    {"18446744073709552s", -1, 0},     /* unit overflow */
    {"", -1, 0},
    {"s", -1, 0},
    {"-1s", -1, 0},
    {"+1s", -1, 0},
    {" 1s", -1, 0},
    {"1 s", -1, 0},
    {"1s ", -1, 0},
    {"1.5s", -1, 0},
    {"10x", -1, 0},
    {"10ss", -1, 0},
    {"10S", -1, 0},
    {"1h30m", -1, 0},
    {"1d", -1, 0},
};

START_TEST(test_parse_duration)
{
	uint64_t ms = 12345;
	int rc = config_parse_duration(DURATIONS[_i].text, &ms);

	ck_assert_msg(rc == DURATIONS[_i].rc, "'%s': rc %d", DURATIONS[_i].text, rc);
	ck_assert_uint_eq(ms, rc == 0 ? DURATIONS[_i].ms : 12345); /* untouched on failure */
}
END_TEST

static const struct {
	const char *text;
	int rc;
	uint64_t bytes;
} SIZES[] = {
    {"512", 0, 512},
    {"0", 0, 0},
    {"64k", 0, 65536},
    {"64K", 0, 65536},
    {"1m", 0, 1048576},
    {"1M", 0, 1048576},
    {"2g", 0, 2147483648ULL},
    {"17179869183g", 0, 17179869183ULL << 30},
    {"17179869184g", -1, 0}, /* 2^64 */
    {"", -1, 0},
    {"k", -1, 0},
    {"-1", -1, 0},
    {"1kb", -1, 0},
    {"1t", -1, 0},
    {"1.5k", -1, 0},
    {" 1", -1, 0},
};

START_TEST(test_parse_size)
{
	uint64_t bytes = 777;
	int rc = config_parse_size(SIZES[_i].text, &bytes);

	ck_assert_msg(rc == SIZES[_i].rc, "'%s': rc %d", SIZES[_i].text, rc);
	ck_assert_uint_eq(bytes, rc == 0 ? SIZES[_i].bytes : 777);
}
END_TEST

static const struct {
	const char *text;
	int family; /* 0 = must fail */
	const char *host;
	unsigned port;
} ADDRESSES[] = {
    {"127.0.0.1:8080", AF_INET, "127.0.0.1", 8080},
    {"0.0.0.0:1", AF_INET, "0.0.0.0", 1},
    {"10.1.2.3:65535", AF_INET, "10.1.2.3", 65535},
    {"[::1]:443", AF_INET6, "::1", 443},
    {"[::]:80", AF_INET6, "::", 80},
    {"[2001:db8::1]:8080", AF_INET6, "2001:db8::1", 8080},
    {"[::ffff:127.0.0.1]:80", AF_INET6, "::ffff:127.0.0.1", 80},
    {"127.0.0.1", 0, NULL, 0},
    {"127.0.0.1:", 0, NULL, 0},
    {"127.0.0.1:0", 0, NULL, 0},
    {"127.0.0.1:65536", 0, NULL, 0},
    {"127.0.0.1:008080", 0, NULL, 0},
    {"127.0.0.1:+80", 0, NULL, 0},
    {"127.0.0.1:-80", 0, NULL, 0},
    {"127.0.0.1:80x", 0, NULL, 0},
    {"127.0.0.1: 80", 0, NULL, 0},
    {"256.0.0.1:80", 0, NULL, 0},
    {"127.1:80", 0, NULL, 0},
    {"localhost:80", 0, NULL, 0},
    {":80", 0, NULL, 0},
    {"::1:80", 0, NULL, 0},
    {"[::1]", 0, NULL, 0},
    {"[::1]:", 0, NULL, 0},
    {"[::1:80", 0, NULL, 0},
    {"[127.0.0.1]:80", 0, NULL, 0},
    {"[fe80::1%lo]:80", 0, NULL, 0},
    {"", 0, NULL, 0},
    {"[0000:0000:0000:0000:0000:0000:0000:0001]:65535xxxxxxxxxxxxxxxxxxxxxxxx", 0, NULL, 0},
};

START_TEST(test_parse_address)
{
	struct config_addr a;
	char buf[INET6_ADDRSTRLEN];
	int rc = config_parse_address(ADDRESSES[_i].text, &a);

	if (ADDRESSES[_i].family == 0) {
		ck_assert_msg(rc == -1, "'%s' accepted", ADDRESSES[_i].text);
		return;
	}
	ck_assert_msg(rc == 0, "'%s' rejected", ADDRESSES[_i].text);
	ck_assert_int_eq(a.ss.ss_family, ADDRESSES[_i].family);
	ck_assert_str_eq(a.text, ADDRESSES[_i].text);
	if (a.ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
		ck_assert_uint_eq(a.len, sizeof(*sin));
		ck_assert_uint_eq(ntohs(sin->sin_port), ADDRESSES[_i].port);
		inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
		ck_assert_uint_eq(a.len, sizeof(*sin6));
		ck_assert_uint_eq(ntohs(sin6->sin6_port), ADDRESSES[_i].port);
		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
	}
	ck_assert_str_eq(buf, ADDRESSES[_i].host);
}
END_TEST

/* ---- HTTP/2: listen tls.alpn, listen h2c, the h2 group ----------------- */

/*
 * A certificate and key for the TLS listeners below (a listener's 'tls' must
 * name a pair that loads): a self-signed P-256 leaf written by main() into a
 * temporary directory, removed at the end.
 */
static char pki_dir[64], cert_file[96], key_file[96];

static int make_pki(void)
{
	snprintf(pki_dir, sizeof(pki_dir), "/tmp/check_config_pki_XXXXXX");
	if (mkdtemp(pki_dir) == NULL)
		return -1;
	snprintf(cert_file, sizeof(cert_file), "%s/leaf.pem", pki_dir);
	snprintf(key_file, sizeof(key_file), "%s/leaf.key", pki_dir);
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	int rc = -1;
	if (key && cert && X509_set_version(cert, 2) &&
	    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
	    X509_gmtime_adj(X509_getm_notBefore(cert), -3600) &&
	    X509_gmtime_adj(X509_getm_notAfter(cert), 2 * 86400) && X509_set_pubkey(cert, key) &&
	    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
				       (const unsigned char *)"config.test", -1, -1, 0) &&
	    X509_set_issuer_name(cert, X509_get_subject_name(cert)) &&
	    X509_sign(cert, key, EVP_sha256())) {
		FILE *c = fopen(cert_file, "w"), *k = fopen(key_file, "w");
		if (c && k && PEM_write_X509(c, cert) &&
		    PEM_write_PrivateKey(k, key, NULL, NULL, 0, NULL, NULL))
			rc = 0;
		if (c)
			fclose(c);
		if (k)
			fclose(k);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

static void remove_pki(void)
{
	unlink(cert_file);
	unlink(key_file);
	rmdir(pki_dir);
}

/*
 * A TLS listener on lines 1-3 (upstreams and routes on 4-5): line 3 holds
 * TLS_KEYS inside its 'tls' group, then LISTEN_KEYS in the listen entry.
 */
static const char *tls_listen(char *buf, size_t size, const char *tls_keys, const char *listen_keys)
{
	int n = snprintf(buf, size,
			 "listen = ( { address = \"127.0.0.1:8443\";\n"
			 "  tls = { certificates = ( { cert = \"%s\"; key = \"%s\"; } );\n"
			 "  %s }; %s } );\n" UPS ROUTES,
			 cert_file, key_file, tls_keys, listen_keys);
	ck_assert(n > 0 && (size_t)n < size);
	return buf;
}

/* The ALPN list a TLS listener offers: "http/1.1" alone unless 'alpn' says, in its order. */
static const struct {
	const char *keys;
	const char *wire;
	size_t len;
} ALPNS[] = {
    {"", "\x08http/1.1", 9},
    {"alpn = [ \"h2\", \"http/1.1\" ];", "\x02h2\x08http/1.1", 12},
    {"alpn = [ \"http/1.1\", \"h2\" ];", "\x08http/1.1\x02h2", 12},
    {"alpn = [ \"h2\" ];", "\x02h2", 3},
    {"alpn = ( \"http/1.1\" );", "\x08http/1.1", 9}, /* a list of strings does too */
};

START_TEST(test_alpn)
{
	char text[1024];
	struct config_errors errs;
	struct config *cfg = load_text(tls_listen(text, sizeof(text), ALPNS[_i].keys, ""), &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	const struct config_tls_server *t = cfg->listens[0].tls;
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->alpn_len, ALPNS[_i].len);
	ck_assert_int_eq(memcmp(t->alpn, ALPNS[_i].wire, ALPNS[_i].len), 0);
	ck_assert(!cfg->listens[0].h2c);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Each a single error at FILE:3 (the line of 'alpn' or 'h2c'). */
static const struct {
	const char *tls_keys, *listen_keys, *want;
} TLS_H2_ERRORS[] = {
    {"alpn = [ \"h2\", \"h3\" ];", "",
     ":3: bad value in 'alpn': \"h3\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ \"HTTP/1.1\" ];", "", /* names are exact, as on the wire */
     ":3: bad value in 'alpn': \"HTTP/1.1\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ \"http/1.0\" ];", "",
     ":3: bad value in 'alpn': \"http/1.0\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ \"\" ];", "",
     ":3: bad value in 'alpn': \"\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ \"h2\", \"http/1.1\", \"h2\" ];", "",
     ":3: bad value in 'alpn': \"h2\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ \"http/1.1\", \"http/1.1\" ];", "",
     ":3: bad value in 'alpn': \"http/1.1\": expected \"h2\" or \"http/1.1\", once each"},
    {"alpn = [ ];", "", ":3: 'alpn' needs at least one of \"h2\", \"http/1.1\""},
    {"alpn = \"h2\";", "", ":3: 'tls.alpn' must be an array of strings"},
    {"alpn = [ 2 ];", "", ":3: 'tls.alpn' must be an array of strings"},
    {"", "h2c = true;", ":3: 'h2c' is cleartext HTTP/2: with 'tls', offer \"h2\" in 'alpn'"},
    {"alpn = [ \"h2\" ];", "h2c = true;",
     ":3: 'h2c' is cleartext HTTP/2: with 'tls', offer \"h2\" in 'alpn'"},
};

START_TEST(test_tls_h2_errors)
{
	char text[1024];
	struct config_errors errs;
	const char *want[] = {TLS_H2_ERRORS[_i].want};
	struct config *cfg = load_text(tls_listen(text, sizeof(text), TLS_H2_ERRORS[_i].tls_keys,
						  TLS_H2_ERRORS[_i].listen_keys),
				       &errs);

	ck_assert_ptr_null(cfg);
	assert_errors(&errs, want, 1);
	config_errors_fini(&errs);
}
END_TEST

/* h2c on a plain listener; off by default; false allowed next to tls. */
START_TEST(test_h2c)
{
	char text[1024];
	struct config_errors errs;
	struct config *cfg = load_text("listen = ( { address = \"127.0.0.1:8080\"; h2c = true; },\n"
				       "  { address = \"127.0.0.1:8081\"; h2c = false; },\n"
				       "  { address = \"127.0.0.1:8082\"; } );\n" UPS ROUTES,
				       &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->n_listens, 3);
	ck_assert(cfg->listens[0].h2c);
	ck_assert(!cfg->listens[1].h2c);
	ck_assert(!cfg->listens[2].h2c);
	ck_assert_ptr_null(cfg->listens[0].tls);
	config_free(cfg);
	config_errors_fini(&errs);

	cfg = load_text(tls_listen(text, sizeof(text), "", "h2c = false;"), &errs);
	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert(!cfg->listens[0].h2c);
	ck_assert_ptr_nonnull(cfg->listens[0].tls);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* h2: SETTINGS defaults 128 / 256 KiB / 16 KiB; set values, size strings and the bounds. */
static const struct {
	const char *text;
	size_t streams, window, header_list;
} H2_VALUES[] = {
    {"", 128, 262144, 16384},
    {"h2 = { };\n", 128, 262144, 16384},
    {"h2 = { initial_window = \"256k\"; max_header_list = \"64k\"; };\n", 128, 262144, 65536},
    {"h2 = { max_concurrent_streams = 100; initial_window = 65535; max_header_list = 8192; };\n",
     100, 65535, 8192},
    /* the bounds themselves */
    {"h2 = { max_concurrent_streams = 1; initial_window = 16384; max_header_list = 256; };\n", 1,
     16384, 256},
    {"h2 = { max_concurrent_streams = 1048576; initial_window = 2147483647;\n"
     "  max_header_list = \"16m\"; };\n",
     1048576, 2147483647, 16777216},
    {"h2 = { initial_window = \"16k\"; max_header_list = \"1K\"; };\n", 128, 16384, 1024},
    {"h2 = { initial_window = \"1M\"; };\n", 128, 1048576, 16384},
};

START_TEST(test_h2_values)
{
	struct config_errors errs;
	char text[1024];
	snprintf(text, sizeof(text), BASE "%s", H2_VALUES[_i].text);
	struct config *cfg = load_text(text, &errs);

	assert_errors(&errs, NULL, 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->h2.max_concurrent_streams, H2_VALUES[_i].streams);
	ck_assert_uint_eq(cfg->h2.initial_window, H2_VALUES[_i].window);
	ck_assert_uint_eq(cfg->h2.max_header_list, H2_VALUES[_i].header_list);
	config_free(cfg);
	config_errors_fini(&errs);
}
END_TEST

/* Several h2 errors at once, each on the line of its key. */
START_TEST(test_h2_many_errors)
{
	static const char text[] = BASE "h2 = {\n"
					"  max_concurrent_streams = 0;\n"
					"  initial_window = \"2g\";\n"
					"  max_header_list = 255;\n"
					"};\n";
	static const char *const want[] = {
	    ":5: bad value 'h2.max_concurrent_streams' = 0: must be >= 1",
	    ":6: bad value 'h2.initial_window' = 2147483648: must be <= 2147483647",
	    ":7: bad value 'h2.max_header_list' = 255: must be >= 256",
	};
	struct config_errors errs;

	ck_assert_ptr_null(load_text(text, &errs));
	assert_errors(&errs, want, N_ELEMS(want));
	config_errors_fini(&errs);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("load");

	tcase_add_test(tc, test_full);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_groups);
	tcase_add_test(tc, test_example_file);
	tcase_add_test(tc, test_terminate);
	tcase_add_test(tc, test_terminate_only);
	tcase_add_test(tc, test_upstream_policy);
	tcase_add_test(tc, test_health_defaults);
	tcase_add_test(tc, test_health_full);
	tcase_add_test(tc, test_health_many_errors);
	tcase_add_test(tc, test_bridge_unix_length);
	tcase_add_test(tc, test_terminate_many_errors);
	tcase_add_loop_test(tc, test_error_case, 0, (int)N_ELEMS(ERR_CASES));
	tcase_add_test(tc, test_many_errors);
	tcase_add_test(tc, test_too_many_servers);
	tcase_add_test(tc, test_error_overflow);
	tcase_add_test(tc, test_missing_file);
	suite_add_tcase(s, tc);

	/* HTTP/2: listen tls.alpn and h2c, the h2 group */
	tc = tcase_create("h2");
	tcase_add_loop_test(tc, test_alpn, 0, (int)N_ELEMS(ALPNS));
	tcase_add_loop_test(tc, test_tls_h2_errors, 0, (int)N_ELEMS(TLS_H2_ERRORS));
	tcase_add_test(tc, test_h2c);
	tcase_add_loop_test(tc, test_h2_values, 0, (int)N_ELEMS(H2_VALUES));
	tcase_add_test(tc, test_h2_many_errors);
	suite_add_tcase(s, tc);

	/* regressions from fuzz_config (issue 16) */
	tc = tcase_create("fuzz");
	tcase_add_loop_test(tc, test_errors_one_line, 0, (int)N_ELEMS(ONE_LINE_CASES));
	tcase_add_loop_test(tc, test_include_directory, 0, (int)N_ELEMS(INCLUDE_DIRECTORY_CASES));
	tcase_add_test(tc, test_include_error_names_included_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse_duration, 0, (int)N_ELEMS(DURATIONS));
	tcase_add_loop_test(tc, test_parse_size, 0, (int)N_ELEMS(SIZES));
	tcase_add_loop_test(tc, test_parse_address, 0, (int)N_ELEMS(ADDRESSES));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (make_pki() < 0) {
		fprintf(stderr, "check_config: cannot write a test certificate in %s\n", pki_dir);
		remove_pki();
		return EXIT_FAILURE;
	}
	SRunner *sr = srunner_create(config_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	remove_pki();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
