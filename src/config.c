/*
 * config: the only module that includes libconfig.h. Reads the file, checks
 * every key against a fixed schema and builds a read-only struct config.
 *
 * Validation never stops at the first problem: each one is recorded as
 * "FILE:LINE: message" and loading continues, so `switchyard -t` shows the
 * whole list at once. The struct is built even while errors accumulate (with
 * fields left at their defaults) and thrown away at the end if any occurred.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tls.h"

#define CONFIG_WEIGHT_MAX 1000
#define CONFIG_RESOLVE_DEFAULT (30 * 1000)
#define CONFIG_QUOTE_MAX 80 /* longest user value echoed back in a message */
#define CONFIG_MAX_MESSAGE_DEFAULT (1024 * 1024)
#define CONFIG_PING_INTERVAL_DEFAULT (30 * 1000)
/* sun_path, NUL included: a longer path cannot be connected to at all */
#define CONFIG_UNIX_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path)

struct loader {
	const char *file;
	struct config_errors *errs;
	int lines[CONFIG_MAX_ERRORS]; /* line of each errs->msg, to sort them */
	struct config *cfg;
};

/* What a setting must be; the names feed "'x' must be <name>". */
enum kind { KIND_STRING, KIND_INT, KIND_GROUP, KIND_LIST, KIND_STRINGS, KIND_BOOL };

static const char *const KIND_NAMES[] = {
    [KIND_STRING] = "a string",
    [KIND_INT] = "an integer",
    [KIND_GROUP] = "a group",
    [KIND_LIST] = "a list of groups",
    [KIND_STRINGS] = "an array of strings",
    [KIND_BOOL] = "true or false",
};

static const char *const ROOT_KEYS[] = {
    "listen",	 "timeouts",  "limits",	      "upstreams", "routes",  "access_log",
    "error_log", "log_level", "via",	      "tunnel",	   "workers", "pid_file",
    "resolvers", "admin",     "log_interval", "user",	   "h2",      NULL};
static const char *const ADMIN_KEYS[] = {"address", "allow", NULL};
static const char *const LISTEN_KEYS[] = {"address", "tls", "proxy_protocol", "h2c", NULL};
static const char *const LISTEN_TLS_KEYS[] = {"certificates", "protocols", "alpn", NULL};
static const char *const TLS_CERT_KEYS[] = {"cert", "key", NULL};
static const char *const UPSTREAM_KEYS[] = {
    "name",	      "servers", "tls",	   "keepalive", "balance", "hash_key",
    "proxy_protocol", "retries", "health", "on_down",	"resolve", NULL};
static const char *const HEALTH_KEYS[] = {
    "type",    "interval",    "timeout",	  "rise", "fall", "path", "host", "expect",
    "passive", "passive_5xx", "retry_down_after", NULL};
static const char *const UPSTREAM_TLS_KEYS[] = {"verify", "ca", "sni", NULL};
static const char *const SERVER_KEYS[] = {"address", "weight", NULL};
static const char *const ROUTE_KEYS[] = {"name",	"host",		 "path_prefix",
					 "upstream",	"upgrade",	 "protocols",
					 "bridge",	"subprotocols",	 "require_subprotocol",
					 "max_message", "ping_interval", "origins",
					 "on_remove",	"drain_time",	 NULL};
/* Keys of upgrade = "terminate" only: anywhere else they would silently do nothing. */
static const char *const TERMINATE_KEYS[] = {"bridge",	    "subprotocols",  "require_subprotocol",
					     "max_message", "ping_interval", "origins",
					     NULL};
static const char *const TUNNEL_KEYS[] = {"mode", NULL};

struct duration_key {
	const char *key;
	size_t off;
	uint64_t def;
};

static const struct duration_key TIMEOUT_TABLE[] = {
    {"header", offsetof(struct config_timeouts, header), 10 * 1000},
    {"keepalive", offsetof(struct config_timeouts, keepalive), 60 * 1000},
    {"connect", offsetof(struct config_timeouts, connect), 5 * 1000},
    {"response", offsetof(struct config_timeouts, response), 60 * 1000},
    {"send", offsetof(struct config_timeouts, send), 60 * 1000},
    {"tunnel_idle", offsetof(struct config_timeouts, tunnel_idle), 3600 * 1000},
    {"tunnel_max", offsetof(struct config_timeouts, tunnel_max), 0},
    {"shutdown_grace", offsetof(struct config_timeouts, shutdown_grace), 10 * 1000},
};
static const char *const TIMEOUT_KEYS[] = {"header",	 "keepalive",	   "connect",
					   "response",	 "send",	   "tunnel_idle",
					   "tunnel_max", "shutdown_grace", NULL};

struct limit_key {
	const char *key;
	size_t off;
	size_t def;
	size_t min;
	bool size_string; /* a byte count, so "16k" is accepted too */
	size_t max;	  /* 0: SIZE_MAX */
};

static const struct limit_key LIMIT_TABLE[] = {
    {"header_bytes", offsetof(struct config_limits, header_bytes), 16384, 256, true, 0},
    {"header_fields", offsetof(struct config_limits, header_fields), 100, 1, false, 0},
    {"uri_bytes", offsetof(struct config_limits, uri_bytes), 8192, 1, true, 0},
    {"max_connections", offsetof(struct config_limits, max_connections), 10000, 1, false, 0},
    /* below this the reserve alone would not fit (fdlimit.h) */
    {"nofile", offsetof(struct config_limits, nofile), 0, 64, false, 0},
};
static const char *const LIMIT_KEYS[] = {"header_bytes",    "header_fields", "uri_bytes",
					 "max_connections", "nofile",	     NULL};

/* HTTP/2 caps its windows at 2^31 - 1; a window below one frame would only stall */
static const struct limit_key H2_TABLE[] = {
    {"max_concurrent_streams", offsetof(struct config_h2, max_concurrent_streams), 128, 1, false,
     1u << 20},
    {"initial_window", offsetof(struct config_h2, initial_window), 256 * 1024, 16384, true,
     0x7fffffff},
    {"max_header_list", offsetof(struct config_h2, max_header_list), 16 * 1024, 256, true,
     16u << 20},
};
static const char *const H2_KEYS[] = {"max_concurrent_streams", "initial_window", "max_header_list",
				      NULL};

/* ---- error collection ------------------------------------------------- */

/* line 0 means "no line": the message is "FILE: msg". */
/* Copy in to out with control bytes as \xNN: one message stays one line,
 * whatever a value in it holds (a name with "\n" cannot forge a line). */
static void escape_controls_into(char *out, const char *in)
{
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;
		if (c < 0x20 || c == 0x7f)
			out += sprintf(out, "\\x%02x", c);
		else
			*out++ = (char)c;
	}
	*out = '\0';
}

static void errors_vadd(struct loader *ld, const char *file, int line, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void errors_vadd(struct loader *ld, const char *file, int line, const char *fmt, va_list ap)
{
	struct config_errors *errs = ld->errs;
	char prefix[32] = "";
	va_list ap2;

	if (errs->n >= CONFIG_MAX_ERRORS) {
		errs->dropped++;
		return;
	}
	if (line > 0)
		snprintf(prefix, sizeof(prefix), ":%d", line);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	size_t body = (size_t)(n > 0 ? n : 0) + 1;
	char *text = malloc(body);
	/* 4 bytes per byte at worst: control bytes become \xNN */
	char *msg = text ? malloc((strlen(file) + strlen(prefix) + 2 + body) * 4) : NULL;
	if (msg == NULL) {
		/* Still fail the load; a NULL slot would trip up the caller. */
		free(text);
		errs->dropped++;
		return;
	}
	escape_controls_into(msg, file);
	sprintf(msg + strlen(msg), "%s: ", prefix);
	vsnprintf(text, body, fmt, ap);
	escape_controls_into(msg + strlen(msg), text);
	free(text);
	ld->lines[errs->n] = line;
	errs->msg[errs->n++] = msg;
}

static void errors_addf(struct loader *ld, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void errors_addf(struct loader *ld, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errors_vadd(ld, file, line, fmt, ap);
	va_end(ap);
}

/*
 * Sections are checked in a fixed order, not file order; a stable sort by
 * line lets the user walk the list top to bottom. Line-less errors go first.
 */
static void errors_sort(struct loader *ld)
{
	struct config_errors *errs = ld->errs;

	for (size_t i = 1; i < errs->n; i++) {
		char *msg = errs->msg[i];
		int line = ld->lines[i];
		size_t j = i;
		for (; j > 0 && ld->lines[j - 1] > line; j--) {
			errs->msg[j] = errs->msg[j - 1];
			ld->lines[j] = ld->lines[j - 1];
		}
		errs->msg[j] = msg;
		ld->lines[j] = line;
	}
}

/* Scalars inside arrays carry no line of their own; their container does. */
static int setting_line(const config_setting_t *s)
{
	for (; s != NULL; s = config_setting_parent(s))
		if (config_setting_source_line(s) > 0)
			return config_setting_source_line(s);
	return 0;
}

static void load_err(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The file a setting came from: an @include'd one, or the main file. */
static const char *setting_file(const struct loader *ld, const config_setting_t *s)
{
	for (; s != NULL; s = config_setting_parent(s))
		if (config_setting_source_file(s) != NULL)
			return config_setting_source_file(s);
	return ld->file;
}

static void load_err(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errors_vadd(ld, setting_file(ld, s), setting_line(s), fmt, ap);
	va_end(ap);
}

static void load_oom(struct loader *ld, const config_setting_t *s)
{
	load_err(ld, s, "out of memory");
}

void config_errors_fini(struct config_errors *errs)
{
	if (errs == NULL)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msg[i]);
	memset(errs, 0, sizeof(*errs));
}

/* ---- message helpers -------------------------------------------------- */

/*
 * Echo a user value inside a message: quoted, control bytes and quotes
 * escaped so one error stays one line, long values cut with "...".
 */
static const char *quote(char *buf, size_t size, const char *s)
{
	size_t o = 0;

	buf[o++] = '"';
	for (; *s != '\0' && o + 8 < size && o < CONFIG_QUOTE_MAX; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, size - o, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (*s != '\0')
		o += (size_t)snprintf(buf + o, size - o, "...");
	snprintf(buf + o, size - o, "\"");
	return buf;
}

/*
 * The name a message uses for a setting: dotted from the top level
 * ("timeouts.header"), but only the key itself inside a list entry
 * ("weight"), where the line number already says which entry.
 */
static const char *setting_path(char *buf, size_t size, const config_setting_t *s)
{
	const config_setting_t *chain[8];
	size_t n = 0, o = 0;

	for (; s != NULL && n < 8; s = config_setting_parent(s)) {
		if (config_setting_is_root(s) || config_setting_name(s) == NULL)
			break;
		chain[n++] = s;
	}
	buf[0] = '\0';
	while (n-- > 0 && o < size) {
		int w = snprintf(buf + o, size - o, "%s%s", o ? "." : "",
				 config_setting_name(chain[n]));
		if (w < 0)
			break;
		o += (size_t)w;
	}
	return buf;
}

/* ---- schema helpers --------------------------------------------------- */

static bool key_allowed(const char *const *allowed, const char *name)
{
	for (; *allowed != NULL; allowed++)
		if (strcmp(*allowed, name) == 0)
			return true;
	return false;
}

static void check_keys(struct loader *ld, const config_setting_t *group, const char *const *allowed)
{
	char path[128];

	for (int i = 0; i < config_setting_length(group); i++) {
		const config_setting_t *c = config_setting_get_elem(group, (unsigned)i);
		if (!key_allowed(allowed, config_setting_name(c)))
			load_err(ld, c, "unknown key '%s'", setting_path(path, sizeof(path), c));
	}
}

static bool kind_matches(const config_setting_t *s, enum kind want)
{
	int t = config_setting_type(s);

	switch (want) {
	case KIND_STRING:
		return t == CONFIG_TYPE_STRING;
	case KIND_INT:
		return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
	case KIND_GROUP:
		return t == CONFIG_TYPE_GROUP;
	case KIND_LIST:
		return t == CONFIG_TYPE_LIST;
	case KIND_BOOL:
		return t == CONFIG_TYPE_BOOL;
	case KIND_STRINGS:
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
			return false;
		for (int i = 0; i < config_setting_length(s); i++)
			if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) !=
			    CONFIG_TYPE_STRING)
				return false;
		return true;
	}
	return false;
}

/*
 * Find KEY in PARENT and check its kind. Returns 1 and sets *out when present
 * and right, 0 when absent, -1 when of the wrong kind (already reported).
 */
static int lookup(struct loader *ld, const config_setting_t *parent, const char *key,
		  enum kind want, config_setting_t **out)
{
	char path[128];
	config_setting_t *s = config_setting_get_member(parent, key);

	*out = NULL;
	if (s == NULL)
		return 0;
	if (!kind_matches(s, want)) {
		load_err(ld, s, "'%s' must be %s", setting_path(path, sizeof(path), s),
			 KIND_NAMES[want]);
		return -1;
	}
	*out = s;
	return 1;
}

/* Entries of a list of groups: reports and skips entries that are not groups. */
static config_setting_t *list_entry(struct loader *ld, const config_setting_t *list, int i)
{
	char path[128];
	config_setting_t *e = config_setting_get_elem(list, (unsigned)i);

	if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
		load_err(ld, e, "each '%s' entry must be a group",
			 setting_path(path, sizeof(path), list));
		return NULL;
	}
	return e;
}

/* Copy a string setting; *dst keeps its old value when absent or wrong. */
static int dup_string(struct loader *ld, const config_setting_t *parent, const char *key,
		      char **dst)
{
	config_setting_t *s;
	int rc = lookup(ld, parent, key, KIND_STRING, &s);

	if (rc <= 0)
		return rc;
	char *copy = strdup(config_setting_get_string(s));
	if (copy == NULL) {
		load_oom(ld, s);
		return -1;
	}
	free(*dst);
	*dst = copy;
	return 1;
}

/* RFC 9110 tchar: the only bytes allowed in a token. */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!is_tchar((unsigned char)*s))
			return false;
	return true;
}

static void lower_ascii(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* ---- value parsers ---------------------------------------------------- */

/* Leading decimal digits (at least one) without overflow; *p moves past them. */
static int parse_u64_prefix(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return 0;
}

static int scale_u64(uint64_t v, uint64_t mult, uint64_t *out)
{
	if (mult != 0 && v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int config_parse_duration(const char *text, uint64_t *ms)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}};
	const char *p = text;
	uint64_t v;

	if (text == NULL || parse_u64_prefix(&p, &v) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(p, units[i].unit) == 0)
			return scale_u64(v, units[i].mult, ms);
	return -1;
}

int config_parse_size(const char *text, uint64_t *bytes)
{
	const char *p = text;
	uint64_t v, mult;

	if (text == NULL || parse_u64_prefix(&p, &v) < 0)
		return -1;
	switch (*p) {
	case '\0':
		mult = 1;
		break;
	case 'k':
	case 'K':
		mult = 1024;
		break;
	case 'm':
	case 'M':
		mult = 1024 * 1024;
		break;
	case 'g':
	case 'G':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*p != '\0' && p[1] != '\0')
		return -1;
	return scale_u64(v, mult, bytes);
}

static int parse_port(const char *s, in_port_t *port)
{
	uint64_t v;
	const char *p = s;

	if (strlen(s) > 5 || parse_u64_prefix(&p, &v) < 0 || *p != '\0' || v < 1 || v > 65535)
		return -1;
	*port = htons((uint16_t)v);
	return 0;
}

/*
 * Split "host:port" / "[v6]:port" and fill out. Returns NULL on success or
 * the reason the text is not an address. Numeric only: a proxy that resolved
 * names at load time would pin whatever DNS said at that moment.
 */
static const char NO_DNS_REASON[] = "host must be a numeric IPv4 address (no DNS)";

static const char *address_parse(const char *text, struct config_addr *out)
{
	char host[64];
	const char *colon, *h = text;
	size_t hlen, len = strlen(text);
	in_port_t port;

	if (len >= sizeof(out->text))
		return "address too long";
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL || close[1] != ':')
			return "expected [IPV6]:PORT";
		h = text + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL)
			return "expected HOST:PORT";
		hlen = (size_t)(colon - text);
		if (memchr(text, ':', hlen) != NULL)
			return "IPv6 addresses need brackets: [IPV6]:PORT";
	}
	if (parse_port(colon + 1, &port) < 0)
		return "port must be 1..65535";
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	struct config_addr a;
	memset(&a, 0, sizeof(a));
	if (text[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return "host must be a numeric IPv6 address";
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		a.len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return NO_DNS_REASON;
		sin->sin_family = AF_INET;
		sin->sin_port = port;
		a.len = sizeof(*sin);
	}
	memcpy(a.text, text, len + 1);
	*out = a;
	return NULL;
}

int config_parse_address(const char *text, struct config_addr *out)
{
	if (text == NULL || out == NULL)
		return -1;
	return address_parse(text, out) == NULL ? 0 : -1;
}

/* ---- sections --------------------------------------------------------- */

/* Required address of a listen entry or server; WHERE names it in messages. */
static void load_address(struct loader *ld, const config_setting_t *entry, const char *where,
			 struct config_addr *out)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *s;
	int rc = lookup(ld, entry, "address", KIND_STRING, &s);

	if (rc == 0)
		load_err(ld, entry, "missing 'address' in %s", where);
	if (rc <= 0)
		return;
	const char *text = config_setting_get_string(s);
	const char *why = address_parse(text, out);
	if (why == NO_DNS_REASON && strncmp(where, "upstream ", 9) == 0)
		why = "host must be an IPv4 address or a host name";
	if (why != NULL)
		load_err(ld, s, "bad address %s in %s: %s", quote(q, sizeof(q), text), where, why);
}

bool config_addr_equal(const struct config_addr *a, const struct config_addr *b)
{
	return a->len != 0 && a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* ---- TLS ---- */

/* A certificate path: absolute, or relative to the config file's directory. */
static char *resolve_path(const struct loader *ld, const char *path)
{
	const char *slash = strrchr(ld->file, '/');
	if (path[0] == '/' || slash == NULL)
		return strdup(path);
	size_t dir = (size_t)(slash - ld->file) + 1, len = strlen(path);
	char *out = malloc(dir + len + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, ld->file, dir);
	memcpy(out + dir, path, len + 1);
	return out;
}

static int load_path(struct loader *ld, const config_setting_t *e, const char *key, char **dst)
{
	char *raw = NULL;
	int rc = dup_string(ld, e, key, &raw);
	if (rc == 0)
		load_err(ld, e, "missing '%s' in 'tls.certificates' entry", key);
	if (rc <= 0)
		return -1;
	*dst = resolve_path(ld, raw);
	free(raw);
	if (*dst == NULL)
		load_oom(ld, e);
	return *dst ? 0 : -1;
}

/* Each certificate must load and match its key now, not at the first handshake. */
static void load_tls_cert(struct loader *ld, const config_setting_t *e, struct config_tls_cert *c)
{
	char why[320];
	check_keys(ld, e, TLS_CERT_KEYS);
	c->line = setting_line(e);
	if (load_path(ld, e, "cert", &c->cert) < 0 || load_path(ld, e, "key", &c->key) < 0)
		return;
	if (tls_check_pair(c->cert, c->key, why, sizeof(why)) < 0)
		load_err(ld, e, "%s", why);
}

static void load_tls_protocols(struct loader *ld, const config_setting_t *g,
			       struct config_tls_server *t)
{
	char q[CONFIG_QUOTE_MAX + 16];
	if (dup_string(ld, g, "protocols", &t->protocols) <= 0)
		return;
	if (strcmp(t->protocols, "TLSv1.2+") != 0 && strcmp(t->protocols, "TLSv1.3+") != 0)
		load_err(ld, config_setting_get_member(g, "protocols"),
			 "bad value 'protocols' = %s: expected \"TLSv1.2+\" or \"TLSv1.3+\"",
			 quote(q, sizeof(q), t->protocols));
}

/* alpn = [ "h2", "http/1.1" ]: the protocols offered, in our order of preference. */
static void load_alpn(struct loader *ld, const config_setting_t *g, struct config_tls_server *t)
{
	static const unsigned char http11[] = "\x08http/1.1";
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *list;
	memcpy(t->alpn, http11, sizeof(http11) - 1);
	t->alpn_len = sizeof(http11) - 1;
	if (lookup(ld, g, "alpn", KIND_STRINGS, &list) <= 0)
		return;
	t->alpn_len = 0;
	for (int i = 0; i < config_setting_length(list); i++) {
		const char *name = config_setting_get_string_elem(list, i);
		size_t len = strlen(name);
		bool known = strcmp(name, "h2") == 0 || strcmp(name, "http/1.1") == 0;
		if (!known || memmem(t->alpn, t->alpn_len, name, len) != NULL) {
			load_err(
			    ld, list,
			    "bad value in 'alpn': %s: expected \"h2\" or \"http/1.1\", once each",
			    quote(q, sizeof(q), name));
			return;
		}
		t->alpn[t->alpn_len++] = (unsigned char)len;
		memcpy(t->alpn + t->alpn_len, name, len);
		t->alpn_len += len;
	}
	if (t->alpn_len == 0)
		load_err(ld, list, "'alpn' needs at least one of \"h2\", \"http/1.1\"");
}

static void load_listen_tls(struct loader *ld, const config_setting_t *e, struct config_listen *l)
{
	config_setting_t *g, *list;
	if (lookup(ld, e, "tls", KIND_GROUP, &g) <= 0)
		return;
	check_keys(ld, g, LISTEN_TLS_KEYS);
	if ((l->tls = calloc(1, sizeof(*l->tls))) == NULL) {
		load_oom(ld, g);
		return;
	}
	load_tls_protocols(ld, g, l->tls);
	load_alpn(ld, g, l->tls);
	int rc = lookup(ld, g, "certificates", KIND_LIST, &list);
	if (rc == 0 || (rc > 0 && config_setting_length(list) == 0)) {
		load_err(ld, rc > 0 ? list : g, "'tls' needs at least one entry in 'certificates'");
		return;
	}
	if (rc < 0)
		return;
	int n = config_setting_length(list);
	if ((l->tls->certs = calloc((size_t)n, sizeof(*l->tls->certs))) == NULL) {
		load_oom(ld, list);
		return;
	}
	for (int i = 0; i < n; i++) {
		config_setting_t *c = list_entry(ld, list, i);
		if (c != NULL)
			load_tls_cert(ld, c, &l->tls->certs[l->tls->n_certs++]);
	}
}

static void load_upstream_tls(struct loader *ld, const config_setting_t *e,
			      struct config_upstream *up)
{
	config_setting_t *g, *s;
	if (lookup(ld, e, "tls", KIND_GROUP, &g) <= 0)
		return;
	check_keys(ld, g, UPSTREAM_TLS_KEYS);
	up->tls.enabled = true;
	up->tls.verify = true;
	if (lookup(ld, g, "verify", KIND_BOOL, &s) > 0)
		up->tls.verify = config_setting_get_bool(s) != 0;
	char *ca = NULL;
	if (dup_string(ld, g, "ca", &ca) > 0) {
		up->tls.ca = resolve_path(ld, ca);
		if (up->tls.ca == NULL)
			load_oom(ld, g);
		else if (access(up->tls.ca, R_OK) != 0)
			load_err(ld, config_setting_get_member(g, "ca"), "cannot read 'ca' %s: %s",
				 up->tls.ca, strerror(errno));
	}
	free(ca);
	dup_string(ld, g, "sni", &up->tls.sni);
}

static void free_listen_tls(struct config_tls_server *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n_certs; i++) {
		free(t->certs[i].cert);
		free(t->certs[i].key);
	}
	free(t->certs);
	free(t->protocols);
	free(t);
}

/* A top-level list that must have entries: the list, or NULL (already reported). */
static config_setting_t *required_list(struct loader *ld, const config_setting_t *root,
				       const char *key, const char *missing)
{
	config_setting_t *list;
	int rc = lookup(ld, root, key, KIND_LIST, &list);

	if (rc == 0)
		errors_addf(ld, ld->file, 0, "%s", missing);
	if (rc <= 0)
		return NULL;
	if (config_setting_length(list) == 0) {
		load_err(ld, list, "%s", missing);
		return NULL;
	}
	return list;
}

static void load_listen(struct loader *ld, const config_setting_t *root)
{
	struct config *cfg = ld->cfg;
	config_setting_t *list = required_list(ld, root, "listen", "no 'listen' addresses");

	if (list == NULL)
		return;
	cfg->listens = calloc((size_t)config_setting_length(list), sizeof(*cfg->listens));
	if (cfg->listens == NULL) {
		load_oom(ld, list);
		return;
	}
	for (int i = 0; i < config_setting_length(list); i++) {
		config_setting_t *e = list_entry(ld, list, i);
		if (e == NULL)
			continue;
		struct config_listen *l = &cfg->listens[cfg->n_listens];
		check_keys(ld, e, LISTEN_KEYS);
		l->line = setting_line(e);
		load_address(ld, e, "'listen'", &l->addr);
		load_listen_tls(ld, e, l);
		config_setting_t *pp;
		if (lookup(ld, e, "proxy_protocol", KIND_BOOL, &pp) > 0)
			l->proxy_protocol = config_setting_get_bool(pp) != 0;
		if (lookup(ld, e, "h2c", KIND_BOOL, &pp) > 0)
			l->h2c = config_setting_get_bool(pp) != 0;
		if (l->h2c && l->tls)
			load_err(ld, config_setting_get_member(e, "h2c"),
				 "'h2c' is cleartext HTTP/2: with 'tls', offer \"h2\" in 'alpn'");
		for (size_t j = 0; j < cfg->n_listens; j++)
			if (config_addr_equal(&cfg->listens[j].addr, &l->addr))
				load_err(ld, e, "duplicate address \"%s\" in 'listen'",
					 l->addr.text);
		cfg->n_listens++;
	}
}

static void load_timeouts(struct loader *ld, const config_setting_t *root)
{
	char q[CONFIG_QUOTE_MAX + 16], path[128];
	config_setting_t *group, *s;
	const size_t n = sizeof(TIMEOUT_TABLE) / sizeof(TIMEOUT_TABLE[0]);

	for (size_t i = 0; i < n; i++)
		*(uint64_t *)((char *)&ld->cfg->timeouts + TIMEOUT_TABLE[i].off) =
		    TIMEOUT_TABLE[i].def;
	if (lookup(ld, root, "timeouts", KIND_GROUP, &group) <= 0)
		return;
	check_keys(ld, group, TIMEOUT_KEYS);
	for (size_t i = 0; i < n; i++) {
		uint64_t *dst = (uint64_t *)((char *)&ld->cfg->timeouts + TIMEOUT_TABLE[i].off);
		if (lookup(ld, group, TIMEOUT_TABLE[i].key, KIND_STRING, &s) <= 0)
			continue;
		const char *text = config_setting_get_string(s);
		if (config_parse_duration(text, dst) < 0)
			load_err(ld, s, "bad duration '%s' = %s",
				 setting_path(path, sizeof(path), s), quote(q, sizeof(q), text));
	}
}

/* One limit: an integer, or for byte counts also a size string like "16k". */
static void load_limit(struct loader *ld, const config_setting_t *s, const struct limit_key *k,
		       size_t *dst)
{
	char q[CONFIG_QUOTE_MAX + 16], path[128];
	uint64_t v;

	setting_path(path, sizeof(path), s);
	if (k->size_string && config_setting_type(s) == CONFIG_TYPE_STRING) {
		const char *text = config_setting_get_string(s);
		if (config_parse_size(text, &v) < 0) {
			load_err(ld, s, "bad size '%s' = %s", path, quote(q, sizeof(q), text));
			return;
		}
	} else if (kind_matches(s, KIND_INT)) {
		long long iv = config_setting_get_int64(s);
		if (iv < 0) {
			load_err(ld, s, "bad value '%s' = %lld: must be >= %zu", path, iv, k->min);
			return;
		}
		v = (uint64_t)iv;
	} else {
		load_err(ld, s, "'%s' must be %s", path,
			 k->size_string ? "an integer or a size string" : "an integer");
		return;
	}
	size_t max = k->max ? k->max : SIZE_MAX;
	if (v < k->min)
		load_err(ld, s, "bad value '%s' = %llu: must be >= %zu", path,
			 (unsigned long long)v, k->min);
	else if (v > max)
		load_err(ld, s, "bad value '%s' = %llu: must be <= %zu", path,
			 (unsigned long long)v, max);
	else
		*dst = (size_t)v;
}

/* A group of limits (limits, h2) into the struct at base: defaults, then what is set. */
static void load_limit_group(struct loader *ld, const config_setting_t *root, const char *name,
			     const struct limit_key *table, size_t n, const char *const *keys,
			     void *base)
{
	config_setting_t *group;

	for (size_t i = 0; i < n; i++)
		*(size_t *)((char *)base + table[i].off) = table[i].def;
	if (lookup(ld, root, name, KIND_GROUP, &group) <= 0)
		return;
	check_keys(ld, group, keys);
	for (size_t i = 0; i < n; i++) {
		config_setting_t *s = config_setting_get_member(group, table[i].key);
		if (s != NULL)
			load_limit(ld, s, &table[i], (size_t *)((char *)base + table[i].off));
	}
}

static void load_limits(struct loader *ld, const config_setting_t *root)
{
	load_limit_group(ld, root, "limits", LIMIT_TABLE,
			 sizeof(LIMIT_TABLE) / sizeof(LIMIT_TABLE[0]), LIMIT_KEYS,
			 &ld->cfg->limits);
	load_limit_group(ld, root, "h2", H2_TABLE, sizeof(H2_TABLE) / sizeof(H2_TABLE[0]), H2_KEYS,
			 &ld->cfg->h2);
}

/* An optional integer key within min..max: true with *out set when present and valid. */
static bool load_int_range(struct loader *ld, const config_setting_t *e, const char *key,
			   long long min, long long max, long long *out)
{
	config_setting_t *s;
	if (lookup(ld, e, key, KIND_INT, &s) <= 0)
		return false;
	long long v = config_setting_get_int64(s);
	if (v < min || v > max) {
		load_err(ld, s, "bad value '%s' = %lld: must be %lld..%lld", key, v, min, max);
		return false;
	}
	*out = v;
	return true;
}

static void load_duration(struct loader *ld, const config_setting_t *e, const char *key,
			  uint64_t *ms)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *s;

	if (lookup(ld, e, key, KIND_STRING, &s) <= 0)
		return;
	const char *text = config_setting_get_string(s);
	if (config_parse_duration(text, ms) < 0)
		load_err(ld, s, "bad duration '%s' = %s", key, quote(q, sizeof(q), text));
}

/* RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
static bool host_name_ok(const char *h, size_t len)
{
	size_t label = 0;
	bool digits_only = true;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		if (c == '.') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && !(c == '-' && label > 0))
			return false;
		digits_only = digits_only && isdigit(c);
		if (++label > 63)
			return false;
	}
	return h[len - 1] != '-' && h[len - 1] != '.' && !digits_only; /* 1.2.3.999 is no name */
}

/* A server given as "name:port": resolved later (resolve.c), text kept for logs. */
static bool load_server_name(struct loader *ld, const config_setting_t *s,
			     struct config_server *srv)
{
	const char *text = config_setting_get_string(s);
	const char *colon = strrchr(text, ':');
	size_t len = strlen(text);
	in_port_t port;

	if (colon == NULL || text[0] == '[' || len >= sizeof(srv->addr.text) ||
	    !host_name_ok(text, (size_t)(colon - text)) || parse_port(colon + 1, &port) < 0)
		return false;
	if ((srv->name = strndup(text, (size_t)(colon - text))) == NULL) {
		load_oom(ld, s);
		return true;
	}
	srv->port = port;
	memcpy(srv->addr.text, text, len + 1);
	return true;
}

static void load_server(struct loader *ld, const config_setting_t *e, const char *where,
			struct config_server *srv)
{
	config_setting_t *a = config_setting_get_member(e, "address");
	long long v;

	check_keys(ld, e, SERVER_KEYS);
	srv->weight = 1;
	if (a == NULL || config_setting_type(a) != CONFIG_TYPE_STRING ||
	    !load_server_name(ld, a, srv))
		load_address(ld, e, where, &srv->addr);
	if (load_int_range(ld, e, "weight", 1, CONFIG_WEIGHT_MAX, &v))
		srv->weight = (unsigned)v;
}

static void load_servers(struct loader *ld, const config_setting_t *e, struct config_upstream *up)
{
	char where[CONFIG_QUOTE_MAX + 32];
	config_setting_t *list;
	int rc = lookup(ld, e, "servers", KIND_LIST, &list);

	if (rc < 0)
		return;
	if (rc == 0 || config_setting_length(list) == 0) {
		load_err(ld, rc ? list : e, "upstream '%s' has no servers",
			 up->name ? up->name : "?");
		return;
	}
	if (config_setting_length(list) > CONFIG_MAX_SERVERS) {
		load_err(ld, list, "upstream '%s' has %d servers: at most %d",
			 up->name ? up->name : "?", config_setting_length(list),
			 CONFIG_MAX_SERVERS);
		return;
	}
	snprintf(where, sizeof(where), "upstream '%s'", up->name ? up->name : "?");
	up->servers = calloc((size_t)config_setting_length(list), sizeof(*up->servers));
	if (up->servers == NULL) {
		load_oom(ld, list);
		return;
	}
	for (int i = 0; i < config_setting_length(list); i++) {
		config_setting_t *s = list_entry(ld, list, i);
		if (s != NULL)
			load_server(ld, s, where, &up->servers[up->n_servers++]);
	}
}

static ptrdiff_t upstream_find(const struct config *cfg, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (cfg->upstreams[i].name != NULL && strcmp(cfg->upstreams[i].name, name) == 0)
			return (ptrdiff_t)i;
	return -1;
}

static void load_upstream_retries(struct loader *ld, const config_setting_t *e,
				  struct config_upstream *up)
{
	long long v;
	up->retries = CONFIG_RETRIES_DEFAULT;
	if (load_int_range(ld, e, "retries", 0, CONFIG_MAX_SERVERS - 1, &v))
		up->retries = (unsigned)v;
}

static void load_upstream_keepalive(struct loader *ld, const config_setting_t *e,
				    struct config_upstream *up)
{
	long long v;
	up->keepalive = CONFIG_KEEPALIVE_DEFAULT;
	if (load_int_range(ld, e, "keepalive", 0, CONFIG_KEEPALIVE_MAX, &v))
		up->keepalive = (size_t)v;
}

/* Match VALUE against NAMES (NULL-terminated); the index is the enum value. */
static void load_enum(struct loader *ld, const config_setting_t *parent, const char *key,
		      const char *const *names, const char *expected, int *dst)
{
	char q[CONFIG_QUOTE_MAX + 16], path[128];
	config_setting_t *s;

	if (lookup(ld, parent, key, KIND_STRING, &s) <= 0)
		return;
	const char *v = config_setting_get_string(s);
	for (int i = 0; names[i] != NULL; i++) {
		if (strcmp(names[i], v) == 0) {
			*dst = i;
			return;
		}
	}
	load_err(ld, s, "bad value '%s' = %s: expected %s", setting_path(path, sizeof(path), s),
		 quote(q, sizeof(q), v), expected);
}

/* hash_key: "client", or "header:NAME" / "cookie:NAME" / "query:NAME". */
static void load_upstream_hash_key(struct loader *ld, const config_setting_t *e,
				   struct config_upstream *up)
{
	static const struct {
		const char *prefix;
		enum config_hash_key kind;
	} kinds[] = {{"header:", CONFIG_HASH_HEADER},
		     {"cookie:", CONFIG_HASH_COOKIE},
		     {"query:", CONFIG_HASH_QUERY}};
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *s;

	if (lookup(ld, e, "hash_key", KIND_STRING, &s) <= 0)
		return;
	const char *v = config_setting_get_string(s);
	if (up->balance != CONFIG_BALANCE_HASH) {
		load_err(ld, s, "'hash_key' is only valid with balance = \"hash\"");
		return;
	}
	if (strcmp(v, "client") == 0)
		return;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t n = strlen(kinds[i].prefix);
		if (strncmp(v, kinds[i].prefix, n) != 0 || !is_token(v + n))
			continue;
		up->hash_key = kinds[i].kind;
		if ((up->hash_name = strdup(v + n)) == NULL)
			load_oom(ld, s);
		return;
	}
	load_err(ld, s,
		 "bad value 'hash_key' = %s: expected \"client\", \"header:NAME\", "
		 "\"cookie:NAME\" or \"query:NAME\"",
		 quote(q, sizeof(q), v));
}

/* balance, hash_key and proxy_protocol: how servers are picked and spoken to. */
static void load_upstream_policy(struct loader *ld, const config_setting_t *e,
				 struct config_upstream *up)
{
	static const char *const balances[] = {[CONFIG_BALANCE_ROUND_ROBIN] = "round-robin",
					       [CONFIG_BALANCE_LEAST_CONN] = "least-conn",
					       [CONFIG_BALANCE_RANDOM] = "random",
					       [CONFIG_BALANCE_HASH] = "hash",
					       NULL};
	static const char *const versions[] = {"none", "v1", "v2", NULL};
	int b = CONFIG_BALANCE_ROUND_ROBIN, v = 0;

	load_enum(ld, e, "balance", balances, "round-robin, least-conn, random or hash", &b);
	up->balance = (enum config_balance)b;
	load_upstream_hash_key(ld, e, up);
	load_enum(ld, e, "proxy_protocol", versions, "v1 or v2", &v);
	up->proxy_protocol = (unsigned)v;
	/* the header would precede the TLS handshake, which conn.c does not
	 * put anything before */
	if (v && up->tls.enabled)
		load_err(ld, config_setting_get_member(e, "proxy_protocol"),
			 "'proxy_protocol' with 'tls' is not supported");
}

/* A path or Host value for a check request: printable, no spaces. */
static bool check_text_ok(const char *p)
{
	if (*p == '\0')
		return false;
	for (; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return false;
	return true;
}

/* Keys that only some check types use are refused elsewhere: they would do nothing. */
static void check_health_keys(struct loader *ld, const config_setting_t *g,
			      const struct config_health *h)
{
	bool request = h->type == CONFIG_HEALTH_HTTP || h->type == CONFIG_HEALTH_WEBSOCKET;
	const struct {
		const char *key;
		bool applies;
		const char *where;
	} rules[] = {
	    {"path", request, "http and websocket checks"},
	    {"host", request, "http and websocket checks"},
	    {"expect", h->type == CONFIG_HEALTH_HTTP,
	     "http checks (a websocket check expects 101)"},
	    {"retry_down_after", h->type == CONFIG_HEALTH_NONE,
	     "type = \"none\" (otherwise the check brings servers back)"},
	};
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		config_setting_t *s = config_setting_get_member(g, rules[i].key);
		if (s != NULL && !rules[i].applies)
			load_err(ld, s, "'%s' is only valid with %s", rules[i].key, rules[i].where);
	}
}

static void load_health_request(struct loader *ld, const config_setting_t *g,
				struct config_health *h)
{
	char q[CONFIG_QUOTE_MAX + 16];
	long long v;

	if (dup_string(ld, g, "path", &h->path) > 0 &&
	    (h->path[0] != '/' || !check_text_ok(h->path)))
		load_err(ld, config_setting_get_member(g, "path"),
			 "bad value 'path' = %s: must start with '/' and have no spaces",
			 quote(q, sizeof(q), h->path));
	if (dup_string(ld, g, "host", &h->host) > 0 && !check_text_ok(h->host))
		load_err(ld, config_setting_get_member(g, "host"),
			 "bad value 'host' = %s: must not be empty or have spaces",
			 quote(q, sizeof(q), h->host));
	if (load_int_range(ld, g, "expect", 200, 599, &v))
		h->expect = (int)v;
}

static void load_health_bool(struct loader *ld, const config_setting_t *g, const char *key,
			     bool *dst)
{
	config_setting_t *s;
	if (lookup(ld, g, key, KIND_BOOL, &s) > 0)
		*dst = config_setting_get_bool(s) != 0;
}

/* upstreams[].health: the active check and passive marking. */
static void load_upstream_health(struct loader *ld, const config_setting_t *e,
				 struct config_upstream *up)
{
	static const char *const types[] = {[CONFIG_HEALTH_TCP] = "tcp",
					    [CONFIG_HEALTH_HTTP] = "http",
					    [CONFIG_HEALTH_WEBSOCKET] = "websocket",
					    [CONFIG_HEALTH_NONE] = "none",
					    NULL};
	struct config_health *h = &up->health;
	config_setting_t *g;
	long long v;
	int type = CONFIG_HEALTH_TCP;

	if (lookup(ld, e, "health", KIND_GROUP, &g) <= 0)
		return;
	check_keys(ld, g, HEALTH_KEYS);
	*h = (struct config_health){.enabled = true,
				    .interval = 2000,
				    .timeout = 1000,
				    .rise = 2,
				    .fall = 3,
				    .expect = 200,
				    .passive = true,
				    .retry_down_after = 10000};
	load_enum(ld, g, "type", types, "tcp, http, websocket or none", &type);
	h->type = (enum config_health_type)type;
	load_duration(ld, g, "interval", &h->interval);
	load_duration(ld, g, "timeout", &h->timeout);
	load_duration(ld, g, "retry_down_after", &h->retry_down_after);
	if (h->interval == 0 || h->timeout == 0 || h->retry_down_after == 0)
		load_err(ld, g, "health 'interval', 'timeout' and 'retry_down_after' must be > 0");
	if (load_int_range(ld, g, "rise", 1, 100, &v))
		h->rise = (unsigned)v;
	if (load_int_range(ld, g, "fall", 1, 100, &v))
		h->fall = (unsigned)v;
	load_health_request(ld, g, h);
	load_health_bool(ld, g, "passive", &h->passive);
	load_health_bool(ld, g, "passive_5xx", &h->passive_5xx);
	check_health_keys(ld, g, h);
	if (h->path == NULL && (h->path = strdup("/")) == NULL)
		load_oom(ld, g);
}

static void load_upstream_on_down(struct loader *ld, const config_setting_t *e,
				  struct config_upstream *up)
{
	static const char *const names[] = {
	    [CONFIG_ON_DOWN_KEEP] = "keep", [CONFIG_ON_DOWN_CLOSE] = "close", NULL};
	int v = CONFIG_ON_DOWN_KEEP;

	load_enum(ld, e, "on_down", names, "keep or close", &v);
	up->on_down = (enum config_on_down)v;
	if (config_setting_get_member(e, "on_down") != NULL && !up->health.enabled)
		load_err(ld, config_setting_get_member(e, "on_down"),
			 "'on_down' needs a 'health' block (servers are never down without one)");
}

static void load_upstream(struct loader *ld, const config_setting_t *e, struct config_upstream *up)
{
	config_setting_t *name;
	int rc;

	check_keys(ld, e, UPSTREAM_KEYS);
	rc = dup_string(ld, e, "name", &up->name);
	if (rc == 0)
		load_err(ld, e, "missing 'name' in upstream");
	if (rc > 0 && up->name[0] == '\0') {
		name = config_setting_get_member(e, "name");
		load_err(ld, name, "bad value 'name' = \"\": must not be empty");
	}
	load_servers(ld, e, up);
	load_upstream_tls(ld, e, up);
	load_upstream_keepalive(ld, e, up);
	load_upstream_retries(ld, e, up);
	load_upstream_policy(ld, e, up);
	load_upstream_health(ld, e, up);
	load_upstream_on_down(ld, e, up);
	up->resolve = CONFIG_RESOLVE_DEFAULT;
	load_duration(ld, e, "resolve", &up->resolve);
	if (up->resolve == 0)
		load_err(ld, config_setting_get_member(e, "resolve"),
			 "bad value 'resolve': must be > 0");
}

static void load_upstreams(struct loader *ld, const config_setting_t *root)
{
	struct config *cfg = ld->cfg;
	config_setting_t *list;

	if (lookup(ld, root, "upstreams", KIND_LIST, &list) <= 0)
		return;
	if (config_setting_length(list) == 0)
		return; /* reported as undefined upstreams by the routes */
	cfg->upstreams = calloc((size_t)config_setting_length(list), sizeof(*cfg->upstreams));
	if (cfg->upstreams == NULL) {
		load_oom(ld, list);
		return;
	}
	for (int i = 0; i < config_setting_length(list); i++) {
		config_setting_t *e = list_entry(ld, list, i);
		if (e == NULL)
			continue;
		struct config_upstream *up = &cfg->upstreams[cfg->n_upstreams];
		load_upstream(ld, e, up);
		if (up->name != NULL && upstream_find(cfg, cfg->n_upstreams, up->name) >= 0)
			load_err(ld, e, "duplicate upstream '%s'", up->name);
		cfg->n_upstreams++;
	}
}

/* "name" or "*.suffix": hostname bytes only, a wildcard only as the first label. */
static bool host_pattern_ok(const char *h)
{
	if (h[0] == '[') { /* IPv6 literal, matched as written in Host */
		size_t n = strspn(h + 1, "0123456789abcdefABCDEF:.");
		return n > 0 && h[1 + n] == ']' && h[2 + n] == '\0';
	}
	if (h[0] == '*') {
		if (h[1] != '.')
			return false;
		h += 2;
	}
	if (*h == '\0' || *h == '.' || h[strlen(h) - 1] == '.' || strstr(h, "..") != NULL)
		return false;
	for (; *h != '\0'; h++)
		if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
			return false;
	return true;
}

static void load_route_host(struct loader *ld, const config_setting_t *e, struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];

	if (dup_string(ld, e, "host", &r->host) <= 0)
		return;
	const config_setting_t *s = config_setting_get_member(e, "host");
	lower_ascii(r->host);
	size_t len = strlen(r->host);
	/* "example.com." is the same name; route_match drops the dot too. */
	if (len > 1 && r->host[len - 1] == '.' && r->host[len - 2] != '.')
		r->host[len - 1] = '\0';
	if (!host_pattern_ok(r->host))
		load_err(ld, s, "bad value 'host' = %s: expected NAME or *.SUFFIX",
			 quote(q, sizeof(q), config_setting_get_string(s)));
}

static void load_route_path(struct loader *ld, const config_setting_t *e, struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];

	if (dup_string(ld, e, "path_prefix", &r->path_prefix) <= 0)
		return;
	if (r->path_prefix[0] != '/')
		load_err(ld, config_setting_get_member(e, "path_prefix"),
			 "bad value 'path_prefix' = %s: must start with \"/\"",
			 quote(q, sizeof(q), r->path_prefix));
}

/*
 * Read ahead whether a route terminates WebSocket: that decides which other
 * keys it needs. A bad 'upgrade' value is reported by load_route_upgrade.
 */
static bool route_terminates(const config_setting_t *e)
{
	const config_setting_t *s = config_setting_get_member(e, "upgrade");

	return s != NULL && config_setting_type(s) == CONFIG_TYPE_STRING &&
	       strcmp(config_setting_get_string(s), "terminate") == 0;
}

static void load_route_upstream(struct loader *ld, const config_setting_t *e,
				struct config_route *r)
{
	config_setting_t *s;
	int rc;

	if (route_terminates(e)) {
		/* The bridge is the backend; an upstream would never be used. */
		r->upstream = CONFIG_NO_UPSTREAM;
		s = config_setting_get_member(e, "upstream");
		if (s != NULL)
			load_err(ld, s,
				 "route '%s': 'upstream' is not valid with upgrade = "
				 "\"terminate\" (the backend is 'bridge')",
				 r->name ? r->name : "?");
		return;
	}
	rc = lookup(ld, e, "upstream", KIND_STRING, &s);
	if (rc == 0)
		load_err(ld, e, "missing 'upstream' in route '%s'", r->name);
	if (rc <= 0)
		return;
	const char *name = config_setting_get_string(s);
	ptrdiff_t idx = upstream_find(ld->cfg, ld->cfg->n_upstreams, name);
	if (idx < 0)
		load_err(ld, s, "undefined upstream '%s'", name);
	else
		r->upstream = (size_t)idx;
}

static void load_route_upgrade(struct loader *ld, const config_setting_t *e, struct config_route *r)
{
	static const char *const names[] = {[CONFIG_UPGRADE_FORWARD] = "forward",
					    [CONFIG_UPGRADE_STRIP] = "strip",
					    [CONFIG_UPGRADE_DENY] = "deny",
					    [CONFIG_UPGRADE_TERMINATE] = "terminate",
					    NULL};
	int v = CONFIG_UPGRADE_FORWARD;

	load_enum(ld, e, "upgrade", names, "forward, strip, deny or terminate", &v);
	r->upgrade = (enum config_upgrade_policy)v;
}

static int protocols_default(struct config_route *r)
{
	r->protocols = calloc(1, sizeof(*r->protocols));
	if (r->protocols == NULL)
		return -1;
	r->protocols[0] = strdup("websocket");
	if (r->protocols[0] == NULL)
		return -1;
	r->n_protocols = 1;
	return 0;
}

/* A protocol is "name" or "name/version", both tokens (RFC 9110 7.8). */
static bool protocol_ok(const char *p)
{
	char buf[256];
	const char *slash = strchr(p, '/');

	if (slash == NULL)
		return is_token(p);
	size_t n = (size_t)(slash - p);
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return is_token(buf) && is_token(slash + 1);
}

/* Checks one entry; returns true when it belongs in the allow-list. */
static bool protocol_entry(struct loader *ld, const config_setting_t *el, struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];
	const char *v = config_setting_get_string(el);

	if (strcmp(v, "*") == 0) {
		r->any_protocol = true;
		return false;
	}
	if (strncasecmp(v, "h2c", 3) == 0 && (v[3] == '\0' || v[3] == '/')) {
		load_err(ld, el, "h2c cannot be allowed: HTTP/2 forbids Upgrade");
		return false;
	}
	if (!protocol_ok(v)) {
		load_err(ld, el, "bad value in 'protocols': %s is not a protocol token",
			 quote(q, sizeof(q), v));
		return false;
	}
	return true;
}

static void load_route_protocols(struct loader *ld, const config_setting_t *e,
				 struct config_route *r)
{
	config_setting_t *arr;
	int rc;

	if (r->upgrade == CONFIG_UPGRADE_TERMINATE) {
		/* The handshake is answered here, so the protocol is WebSocket. */
		arr = config_setting_get_member(e, "protocols");
		if (arr != NULL)
			load_err(ld, arr,
				 "'protocols' is not valid with upgrade = \"terminate\" "
				 "(WebSocket only)");
		if (protocols_default(r) < 0)
			load_oom(ld, e);
		return;
	}
	rc = lookup(ld, e, "protocols", KIND_STRINGS, &arr);
	if (rc <= 0) {
		if (protocols_default(r) < 0)
			load_oom(ld, e);
		return;
	}
	int n = config_setting_length(arr);
	r->protocols = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->protocols));
	if (r->protocols == NULL) {
		load_oom(ld, arr);
		return;
	}
	for (int i = 0; i < n; i++) {
		config_setting_t *el = config_setting_get_elem(arr, (unsigned)i);
		if (!protocol_entry(ld, el, r))
			continue;
		char *p = strdup(config_setting_get_string(el));
		if (p == NULL) {
			load_oom(ld, el);
			return;
		}
		lower_ascii(p);
		r->protocols[r->n_protocols++] = p;
	}
}

/* ---- upgrade = "terminate" ------------------------------------------- */

/* "unix:/path": absolute, and short enough for sockaddr_un. */
/* "unix:PATH" of setting s (named key in messages): absolute, short enough. */
static void load_unix_path(struct loader *ld, const config_setting_t *s, const char *key,
			   const char *path, char **dst)
{
	char q[CONFIG_QUOTE_MAX + 16];

	if (path[0] != '/') {
		load_err(ld, s, "bad value '%s' = %s: a unix socket path must be absolute", key,
			 quote(q, sizeof(q), config_setting_get_string(s)));
		return;
	}
	if (strlen(path) >= CONFIG_UNIX_PATH_MAX) {
		load_err(ld, s,
			 "bad value '%s' = %s: a unix socket path must be shorter than %zu "
			 "bytes",
			 key, quote(q, sizeof(q), config_setting_get_string(s)),
			 CONFIG_UNIX_PATH_MAX);
		return;
	}
	*dst = strdup(path);
	if (*dst == NULL)
		load_oom(ld, s);
}

static void load_route_bridge(struct loader *ld, const config_setting_t *e, struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *s;
	int rc = lookup(ld, e, "bridge", KIND_STRING, &s);

	if (rc == 0)
		load_err(ld, e, "route '%s': upgrade = \"terminate\" requires 'bridge'",
			 r->name ? r->name : "?");
	if (rc <= 0)
		return;
	const char *text = config_setting_get_string(s);
	if (strncmp(text, "unix:", 5) == 0) {
		load_unix_path(ld, s, "bridge", text + 5, &r->bridge_unix);
		return;
	}
	const char *why = address_parse(text, &r->bridge);
	if (why != NULL)
		load_err(ld, s, "bad value 'bridge' = %s: %s", quote(q, sizeof(q), text), why);
}

/* Copy an array of strings into a NULL-free list of n heap strings. */
static int dup_strings(struct loader *ld, const config_setting_t *arr, char ***list, size_t *n)
{
	int len = config_setting_length(arr);

	*list = calloc(len > 0 ? (size_t)len : 1, sizeof(**list));
	if (*list == NULL) {
		load_oom(ld, arr);
		return -1;
	}
	for (int i = 0; i < len; i++) {
		char *copy = strdup(config_setting_get_string_elem(arr, i));
		if (copy == NULL) {
			load_oom(ld, arr);
			return -1;
		}
		(*list)[(*n)++] = copy;
	}
	return 0;
}

/*
 * Offered to clients in order of preference. Compared case-sensitively, as
 * browsers do (RFC 6455 §4.1 treats them as opaque tokens).
 */
static void load_route_subprotocols(struct loader *ld, const config_setting_t *e,
				    struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *arr;

	if (lookup(ld, e, "subprotocols", KIND_STRINGS, &arr) <= 0 ||
	    dup_strings(ld, arr, &r->subprotocols, &r->n_subprotocols) < 0)
		return;
	for (size_t i = 0; i < r->n_subprotocols; i++) {
		const char *p = r->subprotocols[i];
		if (!is_token(p))
			load_err(ld, arr, "bad value in 'subprotocols': %s is not a token",
				 quote(q, sizeof(q), p));
		for (size_t j = 0; j < i; j++)
			if (strcmp(r->subprotocols[j], p) == 0)
				load_err(ld, arr, "duplicate subprotocol %s",
					 quote(q, sizeof(q), p));
	}
}

/*
 * An Origin as browsers serialise it (RFC 6454 §6.2): "null", or
 * scheme "://" host [":" port] with nothing after. A trailing "/" or a path
 * would never match, so it is refused rather than silently useless.
 */
static bool origin_ok(const char *o)
{
	const char *sep = strstr(o, "://");

	if (strcmp(o, "null") == 0)
		return true;
	if (sep == NULL || !isalpha((unsigned char)o[0]) || sep[3] == '\0')
		return false;
	for (const char *p = o; p < sep; p++)
		if (!isalnum((unsigned char)*p) && strchr("+-.", *p) == NULL)
			return false;
	for (const char *p = sep + 3; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("/?#@\\", *p) != NULL)
			return false;
	return true;
}

/* Lower-cased: scheme and host are case-insensitive and browsers send them so. */
static void load_route_origins(struct loader *ld, const config_setting_t *e, struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *arr;

	if (lookup(ld, e, "origins", KIND_STRINGS, &arr) <= 0 ||
	    dup_strings(ld, arr, &r->origins, &r->n_origins) < 0)
		return;
	for (size_t i = 0; i < r->n_origins; i++) {
		lower_ascii(r->origins[i]);
		if (!origin_ok(r->origins[i]))
			load_err(ld, arr,
				 "bad value in 'origins': %s: expected SCHEME://HOST[:PORT] or "
				 "\"null\"",
				 quote(q, sizeof(q), config_setting_get_string_elem(arr, (int)i)));
	}
}

/* A byte count: an integer or a size string such as "1m"; never 0. */
static void load_route_max_message(struct loader *ld, const config_setting_t *e,
				   struct config_route *r)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *s = config_setting_get_member(e, "max_message");
	uint64_t v;

	if (s == NULL)
		return;
	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		const char *text = config_setting_get_string(s);
		if (config_parse_size(text, &v) < 0) {
			load_err(ld, s, "bad size 'max_message' = %s", quote(q, sizeof(q), text));
			return;
		}
		snprintf(q, sizeof(q), "\"%s\"", text);
	} else if (kind_matches(s, KIND_INT)) {
		long long iv = config_setting_get_int64(s);
		v = iv < 0 ? 0 : (uint64_t)iv;
		snprintf(q, sizeof(q), "%lld", iv);
	} else {
		load_err(ld, s, "'max_message' must be an integer or a size string");
		return;
	}
	if (v == 0)
		load_err(ld, s, "bad value 'max_message' = %s: must be > 0", q);
	else
		r->max_message = v;
}

/* What a reload that removes the route (or its upstream) does to its tunnels. */
static void load_route_on_remove(struct loader *ld, const config_setting_t *e,
				 struct config_route *r)
{
	static const char *const names[] = {[CONFIG_ON_REMOVE_KEEP] = "keep",
					    [CONFIG_ON_REMOVE_DRAIN] = "drain",
					    [CONFIG_ON_REMOVE_CLOSE] = "close",
					    NULL};
	int v = CONFIG_ON_REMOVE_KEEP;

	load_enum(ld, e, "on_remove", names, "keep, drain or close", &v);
	r->on_remove = (enum config_on_remove)v;
	r->drain_time = CONFIG_DRAIN_TIME_DEFAULT;
	load_duration(ld, e, "drain_time", &r->drain_time);
}

static void load_route_terminate(struct loader *ld, const config_setting_t *e,
				 struct config_route *r)
{
	config_setting_t *s;

	r->require_subprotocol = true;
	r->max_message = CONFIG_MAX_MESSAGE_DEFAULT;
	r->ping_interval = CONFIG_PING_INTERVAL_DEFAULT;
	if (r->upgrade != CONFIG_UPGRADE_TERMINATE) {
		for (const char *const *k = TERMINATE_KEYS; *k != NULL; k++)
			if ((s = config_setting_get_member(e, *k)) != NULL)
				load_err(ld, s, "'%s' is only valid with upgrade = \"terminate\"",
					 *k);
		return;
	}
	load_route_bridge(ld, e, r);
	load_route_subprotocols(ld, e, r);
	if (lookup(ld, e, "require_subprotocol", KIND_BOOL, &s) > 0)
		r->require_subprotocol = config_setting_get_bool(s) != 0;
	load_route_max_message(ld, e, r);
	load_duration(ld, e, "ping_interval", &r->ping_interval);
	load_route_origins(ld, e, r);
}

static void load_route_name(struct loader *ld, const config_setting_t *e, struct config_route *r,
			    size_t pos)
{
	char buf[32];

	if (dup_string(ld, e, "name", &r->name) > 0) {
		if (r->name[0] == '\0')
			load_err(ld, config_setting_get_member(e, "name"),
				 "bad value 'name' = \"\": must not be empty");
		for (size_t i = 0; i < pos; i++)
			if (ld->cfg->routes[i].name != NULL &&
			    strcmp(ld->cfg->routes[i].name, r->name) == 0)
				load_err(ld, config_setting_get_member(e, "name"),
					 "duplicate route '%s'", r->name);
		return;
	}
	snprintf(buf, sizeof(buf), "#%zu", pos + 1);
	r->name = strdup(buf);
	if (r->name == NULL)
		load_oom(ld, e);
}

static void load_route(struct loader *ld, const config_setting_t *e, struct config_route *r,
		       size_t pos)
{
	check_keys(ld, e, ROUTE_KEYS);
	r->line = setting_line(e);
	load_route_name(ld, e, r, pos);
	load_route_host(ld, e, r);
	load_route_path(ld, e, r);
	load_route_upstream(ld, e, r);
	load_route_upgrade(ld, e, r);
	load_route_protocols(ld, e, r);
	load_route_terminate(ld, e, r);
	load_route_on_remove(ld, e, r);
}

static void load_routes(struct loader *ld, const config_setting_t *root)
{
	struct config *cfg = ld->cfg;
	config_setting_t *list = required_list(ld, root, "routes", "no 'routes'");

	if (list == NULL)
		return;
	cfg->routes = calloc((size_t)config_setting_length(list), sizeof(*cfg->routes));
	if (cfg->routes == NULL) {
		load_oom(ld, list);
		return;
	}
	for (int i = 0; i < config_setting_length(list); i++) {
		config_setting_t *e = list_entry(ld, list, i);
		if (e == NULL)
			continue;
		load_route(ld, e, &cfg->routes[cfg->n_routes], (size_t)i);
		cfg->n_routes++;
	}
}

static void load_string_default(struct loader *ld, const config_setting_t *root, const char *key,
				const char *def, char **dst)
{
	*dst = strdup(def);
	if (*dst == NULL) {
		load_oom(ld, root);
		return;
	}
	dup_string(ld, root, key, dst);
}

static void load_logging(struct loader *ld, const config_setting_t *root)
{
	static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
	char q[CONFIG_QUOTE_MAX + 16];
	struct config *cfg = ld->cfg;
	int level = 2;

	load_string_default(ld, root, "access_log", "stderr", &cfg->access_log);
	load_string_default(ld, root, "error_log", "stderr", &cfg->error_log);
	load_string_default(ld, root, "via", "switchyard", &cfg->via);
	if (cfg->access_log != NULL &&
	    (cfg->access_log[0] == '\0' || (strncmp(cfg->access_log, "syslog", 6) == 0 &&
					    strcmp(cfg->access_log, "syslog") != 0 &&
					    strncmp(cfg->access_log, "syslog:unix:/", 13) != 0)))
		load_err(ld, config_setting_get_member(root, "access_log"),
			 "bad value 'access_log' = %s: expected \"stderr\", \"off\", \"syslog\", "
			 "\"syslog:unix:/PATH\" or a path",
			 quote(q, sizeof(q), cfg->access_log));
	load_duration(ld, root, "log_interval", &cfg->log_interval);
	/* An error log cannot be switched off; "off" would silently be a file name. */
	if (cfg->error_log != NULL && (cfg->error_log[0] == '\0' || !strcmp(cfg->error_log, "off")))
		load_err(ld, config_setting_get_member(root, "error_log"),
			 "bad value 'error_log' = %s: expected \"stderr\" or a path",
			 quote(q, sizeof(q), cfg->error_log));
	if (cfg->via != NULL && !is_token(cfg->via))
		load_err(ld, config_setting_get_member(root, "via"),
			 "bad value 'via' = %s: must be a token", quote(q, sizeof(q), cfg->via));
	load_enum(ld, root, "log_level", levels, "error, warn, info or debug", &level);
	cfg->log_level = strdup(levels[level]);
	if (cfg->log_level == NULL)
		load_oom(ld, root);
}

/* workers: 1..CONFIG_MAX_WORKERS; absent = 0, one per CPU (resolved at start). */
/* resolvers = [ "127.0.0.1:5353", "::1" ]: DNS servers by address, port optional. */
static void load_resolvers(struct loader *ld, const config_setting_t *root)
{
	char q[CONFIG_QUOTE_MAX + 16];
	struct config_addr a;
	unsigned char raw[sizeof(struct in6_addr)];
	config_setting_t *arr;

	if (lookup(ld, root, "resolvers", KIND_STRINGS, &arr) <= 0 ||
	    dup_strings(ld, arr, &ld->cfg->resolvers, &ld->cfg->n_resolvers) < 0)
		return;
	for (size_t i = 0; i < ld->cfg->n_resolvers; i++) {
		const char *r = ld->cfg->resolvers[i];
		if (inet_pton(AF_INET, r, raw) != 1 && inet_pton(AF_INET6, r, raw) != 1 &&
		    address_parse(r, &a) != NULL)
			load_err(ld, config_setting_get_elem(arr, (unsigned)i),
				 "bad resolver %s: expected IP or IP:PORT", quote(q, sizeof(q), r));
	}
}

/* "10.0.0.0/8", "fd00::/8" or a single address. */
static bool parse_cidr(const char *text, struct config_cidr *out)
{
	char ip[INET6_ADDRSTRLEN];
	const char *slash = strchr(text, '/');
	size_t n = slash ? (size_t)(slash - text) : strlen(text);
	long prefix = -1;

	if (n >= sizeof(ip))
		return false;
	memcpy(ip, text, n);
	ip[n] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, ip, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, ip, out->addr) == 1)
		out->family = AF_INET6;
	else
		return false;
	unsigned max = out->family == AF_INET ? 32 : 128;
	if (slash) {
		char *end;
		if (!isdigit((unsigned char)slash[1]))
			return false;
		prefix = strtol(slash + 1, &end, 10);
		if (*end != '\0' || prefix > (long)max)
			return false;
	}
	out->prefix = prefix < 0 ? max : (unsigned)prefix;
	return true;
}

static void load_admin_allow(struct loader *ld, const config_setting_t *g, struct config_admin *a)
{
	char q[CONFIG_QUOTE_MAX + 16];
	config_setting_t *arr;

	if (lookup(ld, g, "allow", KIND_STRINGS, &arr) <= 0)
		return;
	int n = config_setting_length(arr);
	if ((a->allow = calloc((size_t)n + 1, sizeof(*a->allow))) == NULL) {
		load_oom(ld, arr);
		return;
	}
	for (int i = 0; i < n; i++) {
		const char *v = config_setting_get_string_elem(arr, i);
		if (parse_cidr(v, &a->allow[a->n_allow]))
			a->n_allow++;
		else
			load_err(ld, config_setting_get_elem(arr, (unsigned)i),
				 "bad value in 'allow': %s: expected ADDRESS/PREFIX",
				 quote(q, sizeof(q), v));
	}
}

/* admin = { address = "127.0.0.1:9901" | "unix:/path"; allow = [ CIDR, ... ]; } */
static void load_admin(struct loader *ld, const config_setting_t *root)
{
	struct config_admin *a = &ld->cfg->admin;
	config_setting_t *g, *s;

	if (lookup(ld, root, "admin", KIND_GROUP, &g) <= 0)
		return;
	check_keys(ld, g, ADMIN_KEYS);
	a->enabled = true;
	int rc = lookup(ld, g, "address", KIND_STRING, &s);
	if (rc == 0)
		load_err(ld, g, "missing 'address' in 'admin'");
	else if (rc > 0 && strncmp(config_setting_get_string(s), "unix:", 5) == 0)
		load_unix_path(ld, s, "address", config_setting_get_string(s) + 5, &a->unix_path);
	else if (rc > 0)
		load_address(ld, g, "'admin'", &a->addr);
	load_admin_allow(ld, g, a);
}

static void load_process(struct loader *ld, const config_setting_t *root)
{
	long long v;

	if (dup_string(ld, root, "pid_file", &ld->cfg->pid_file) > 0 &&
	    ld->cfg->pid_file[0] == '\0')
		load_err(ld, config_setting_get_member(root, "pid_file"),
			 "bad value 'pid_file' = \"\": expected a path");
	if (load_int_range(ld, root, "workers", 1, CONFIG_MAX_WORKERS, &v))
		ld->cfg->workers = (unsigned)v;
	if (dup_string(ld, root, "user", &ld->cfg->user) > 0 && ld->cfg->user[0] == '\0')
		load_err(ld, config_setting_get_member(root, "user"),
			 "bad value 'user' = \"\": expected a user name");
}

static void load_tunnel(struct loader *ld, const config_setting_t *root)
{
	static const char *const modes[] = {
	    [CONFIG_TUNNEL_SPLICE] = "splice", [CONFIG_TUNNEL_COPY] = "copy", NULL};
	config_setting_t *group;
	int mode = CONFIG_TUNNEL_SPLICE;

	if (lookup(ld, root, "tunnel", KIND_GROUP, &group) > 0) {
		check_keys(ld, group, TUNNEL_KEYS);
		load_enum(ld, group, "mode", modes, "splice or copy", &mode);
	}
	ld->cfg->tunnel_mode = (enum config_tunnel_mode)mode;
}

/* ---- entry points ----------------------------------------------------- */

void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		free(cfg->upstreams[i].name);
		for (size_t j = 0; j < cfg->upstreams[i].n_servers; j++)
			free(cfg->upstreams[i].servers[j].name);
		free(cfg->upstreams[i].servers);
		free(cfg->upstreams[i].tls.ca);
		free(cfg->upstreams[i].tls.sni);
		free(cfg->upstreams[i].hash_name);
		free(cfg->upstreams[i].health.path);
		free(cfg->upstreams[i].health.host);
	}
	for (size_t i = 0; i < cfg->n_listens; i++)
		free_listen_tls(cfg->listens[i].tls);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		struct config_route *r = &cfg->routes[i];
		for (size_t j = 0; j < r->n_protocols; j++)
			free(r->protocols[j]);
		free(r->protocols);
		for (size_t j = 0; j < r->n_subprotocols; j++)
			free(r->subprotocols[j]);
		free(r->subprotocols);
		for (size_t j = 0; j < r->n_origins; j++)
			free(r->origins[j]);
		free(r->origins);
		free(r->bridge_unix);
		free(r->name);
		free(r->host);
		free(r->path_prefix);
	}
	free(cfg->upstreams);
	free(cfg->routes);
	free(cfg->pid_file);
	free(cfg->user);
	for (size_t i = 0; i < cfg->n_resolvers; i++)
		free(cfg->resolvers[i]);
	free(cfg->resolvers);
	free(cfg->text);
	free(cfg->admin.unix_path);
	free(cfg->admin.allow);
	free(cfg->listens);
	free(cfg->access_log);
	free(cfg->error_log);
	free(cfg->log_level);
	free(cfg->via);
	free(cfg->file);
	free(cfg);
}

/*
 * Check up front that FILE can be read: libconfig reports only "file I/O
 * error" without errno, and its scanner exits the process when read(2)
 * fails on a directory.
 */
/* The whole file at path, NUL-terminated; NULL with *errp set. */
static char *slurp(const char *path, int *errp)
{
	struct stat st;
	FILE *fp = fopen(path, "r");
	char *text = NULL;
	int err = 0;

	if (fp == NULL)
		err = errno;
	else if (fstat(fileno(fp), &st) < 0)
		err = errno;
	else if (S_ISDIR(st.st_mode))
		err = EISDIR;
	else if ((text = malloc((size_t)st.st_size + 1)) == NULL)
		err = ENOMEM;
	else if (fread(text, 1, (size_t)st.st_size, fp) != (size_t)st.st_size || ferror(fp))
		err = errno ? errno : EIO;
	if (fp)
		fclose(fp);
	*errp = err;
	if (err) {
		free(text);
		return NULL;
	}
	text[st.st_size] = '\0';
	return text;
}

/* The main file; NULL with the reason in errs. */
static char *read_text(struct loader *ld)
{
	int err = 0;
	char *text = slurp(ld->file, &err);
	if (text == NULL)
		errors_addf(ld, ld->file, 0, "cannot read: %s", strerror(err));
	return text;
}

#define CONFIG_INCLUDE_DEPTH 10 /* libconfig's own limit */

static int check_includes(struct loader *ld, const char *text, const char *file, int depth);

/*
 * The path of an @include as libconfig 1.5 reads it, from after the opening
 * quote up to the closing one: a backslash drops out and keeps the next byte
 * ("/t\mp" is /tmp, "\\" a backslash, "\"" a quote). NULL when unclosed.
 */
static char *include_path(const char *p, const char *end)
{
	char *path = malloc((size_t)(end - p) + 1);
	size_t n = 0;
	for (; path && p < end && *p != '"'; p++) {
		if (*p == '\\' && p + 1 < end)
			p++;
		path[n++] = *p;
	}
	if (path == NULL || p >= end) {
		free(path);
		return NULL;
	}
	path[n] = '\0';
	return path;
}

/* One @include target: a regular file (whose own includes are checked), or
 * missing (libconfig says so); anything else is refused here. */
static int check_include_target(struct loader *ld, const char *file, int line, const char *path,
				int depth)
{
	char q[CONFIG_QUOTE_MAX + 16];
	struct stat st;
	int err = 0;

	if (stat(path, &st) < 0)
		return 0;
	if (!S_ISREG(st.st_mode)) {
		errors_addf(ld, file, line, "cannot include %s: not a regular file",
			    quote(q, sizeof(q), path));
		return -1;
	}
	if (depth + 1 >= CONFIG_INCLUDE_DEPTH)
		return 0;
	char *text = slurp(path, &err);
	int rc = text ? check_includes(ld, text, path, depth + 1) : 0;
	free(text);
	return rc;
}

/*
 * libconfig 1.5 ends the whole process (its scanner's fatal error, exit
 * status 2) when an @include names something read(2) fails on, such as a
 * directory: at -t, at start and at a reload. Such targets are refused first,
 * in included files too. 0 / -1 (the error added).
 */
static int check_includes(struct loader *ld, const char *text, const char *file, int depth)
{
	int line = 1;
	for (const char *p = text; *p != '\0'; line++) {
		const char *eol = strchr(p, '\n');
		const char *end = eol ? eol : p + strlen(p);
		const char *q = p;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if (end - q > 8 && strncmp(q, "@include", 8) == 0) {
			const char *open = memchr(q + 8, '"', (size_t)(end - q - 8));
			char *path = open ? include_path(open + 1, end) : NULL;
			int rc = path ? check_include_target(ld, file, line, path, depth) : 0;
			free(path);
			if (rc < 0)
				return -1;
		}
		p = eol ? eol + 1 : end;
	}
	return 0;
}

static int config_read_checked(config_t *lc, struct loader *ld, const char *text)
{
	if (config_read_string(lc, text) == CONFIG_TRUE)
		return 0;
	/* For an error inside an @include, libconfig names that file. */
	const char *efile = config_error_file(lc) ? config_error_file(lc) : ld->file;
	errors_addf(ld, efile, config_error_line(lc), "%s", config_error_text(lc));
	return -1;
}

static void load_root(struct loader *ld, const config_setting_t *root)
{
	check_keys(ld, root, ROOT_KEYS);
	load_listen(ld, root);
	load_timeouts(ld, root);
	load_limits(ld, root);
	load_upstreams(ld, root);
	load_routes(ld, root);
	load_logging(ld, root);
	load_tunnel(ld, root);
	load_process(ld, root);
	load_resolvers(ld, root);
	load_admin(ld, root);
}

struct config *config_parse(const char *file, const char *text, struct config_errors *errs)
{
	struct config_errors scratch;
	struct loader ld;
	config_t lc;

	if (errs == NULL)
		errs = &scratch;
	memset(errs, 0, sizeof(*errs));
	memset(&ld, 0, sizeof(ld));
	ld.file = file;
	ld.errs = errs;
	ld.cfg = calloc(1, sizeof(*ld.cfg));
	if (ld.cfg == NULL || (ld.cfg->file = strdup(file)) == NULL ||
	    (ld.cfg->text = strdup(text)) == NULL) {
		errors_addf(&ld, file, 0, "out of memory");
		goto fail_cfg;
	}
	config_init(&lc);
	if (check_includes(&ld, text, file, 0) == 0 && config_read_checked(&lc, &ld, text) == 0)
		load_root(&ld, config_root_setting(&lc));
	config_destroy(&lc);
	errors_sort(&ld);
	if (errs->n > 0 || errs->dropped > 0)
		goto fail_cfg;
	return ld.cfg;

fail_cfg:
	config_free(ld.cfg);
	if (errs == &scratch)
		config_errors_fini(&scratch);
	return NULL;
}

struct config *config_load(const char *file, struct config_errors *errs)
{
	struct config_errors scratch;
	struct loader ld = {.file = file, .errs = errs ? errs : &scratch};

	memset(ld.errs, 0, sizeof(*ld.errs));
	char *text = read_text(&ld);
	if (text == NULL) {
		if (ld.errs == &scratch)
			config_errors_fini(&scratch);
		return NULL;
	}
	struct config *cfg = config_parse(file, text, errs);
	free(text);
	return cfg;
}
