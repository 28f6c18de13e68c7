/*
 * config: reads a libconfig file into a read-only struct config.
 *
 * Every semantic error is collected as "FILE:LINE: message" so that `-t`
 * can report all of them at once. A loaded config is never modified; live
 * sessions keep a reference to the generation they started with.
 */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define CONFIG_MAX_ERRORS 64
#define CONFIG_MAX_WORKERS 64
#define CONFIG_MAX_SERVERS 64 /* per upstream; sessions keep a tried[] bitmap this size */

enum config_upgrade_policy {
	CONFIG_UPGRADE_FORWARD = 0, /* default: forward allowed tokens */
	CONFIG_UPGRADE_STRIP,	    /* drop Upgrade, forward a plain request */
	CONFIG_UPGRADE_DENY,	    /* answer 403 without contacting a backend */
	CONFIG_UPGRADE_TERMINATE,   /* answer the WebSocket handshake, bridge to a stream */
};

#define CONFIG_NO_UPSTREAM ((size_t)-1) /* route.upstream of a terminate route */

/* routes[].on_remove: a reload removed the route or its upstream. */
enum config_on_remove {
	CONFIG_ON_REMOVE_KEEP = 0, /* default: its tunnels go on */
	CONFIG_ON_REMOVE_DRAIN,	   /* closed one by one over drain_time */
	CONFIG_ON_REMOVE_CLOSE,	   /* closed at the reload */
};
#define CONFIG_DRAIN_TIME_DEFAULT (5 * 60 * 1000)

enum config_tunnel_mode {
	CONFIG_TUNNEL_SPLICE = 0, /* default on Linux */
	CONFIG_TUNNEL_COPY,
};

struct config_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[64]; /* as written in the config, for logs */
};

struct config_tls_cert {
	char *cert; /* PEM certificate chain */
	char *key;  /* PEM private key */
	int line;
};

/* listen.tls: certificates chosen by SNI; the first is the default. */
struct config_tls_server {
	struct config_tls_cert *certs;
	size_t n_certs;
	char *protocols; /* "TLSv1.2+" (default) or "TLSv1.3+" */
	/* alpn: what is offered, in ALPN wire format (length-prefixed names) in
	 * our order of preference; default "http/1.1" only */
	unsigned char alpn[16];
	size_t alpn_len;
};

/* upstream.tls */
struct config_tls_client {
	bool enabled;
	bool verify; /* default true */
	char *ca;    /* CA bundle; NULL = the system store */
	char *sni;   /* name for SNI and verification; NULL = the server address */
};

struct config_listen {
	struct config_addr addr;
	struct config_tls_server *tls; /* NULL = plain TCP */
	bool proxy_protocol;	       /* a PROXY header (v1 or v2) comes first, required */
	bool h2c;		       /* cleartext HTTP/2 with prior knowledge (the preface) */
	int line;
};

struct config_server {
	struct config_addr addr; /* for a host name: only text ("name:port") until resolved */
	unsigned weight;	 /* >= 1, default 1 */
	char *name;		 /* the host name, NULL for an address; also SNI for TLS */
	in_port_t port;		 /* network order; with name */
};

#define CONFIG_KEEPALIVE_DEFAULT 32 /* idle connections kept per server */
#define CONFIG_KEEPALIVE_MAX 4096
#define CONFIG_RETRIES_DEFAULT 2

/* upstreams[].balance */
enum config_balance {
	CONFIG_BALANCE_ROUND_ROBIN = 0, /* smooth weighted round robin (default) */
	CONFIG_BALANCE_LEAST_CONN,	/* fewest open sessions and tunnels per weight */
	CONFIG_BALANCE_RANDOM,		/* power of two choices over least-conn loads */
	CONFIG_BALANCE_HASH,		/* consistent hashing of hash_key */
};

/* upstreams[].hash_key */
enum config_hash_key {
	CONFIG_HASH_CLIENT = 0, /* the client address (default) */
	CONFIG_HASH_HEADER,	/* a request header field */
	CONFIG_HASH_COOKIE,	/* a cookie */
	CONFIG_HASH_QUERY,	/* a query parameter */
};

/* upstreams[].health.type: the active check, or none (passive marking only) */
enum config_health_type {
	CONFIG_HEALTH_TCP = 0,	 /* default: the connect (and TLS handshake) succeeds */
	CONFIG_HEALTH_HTTP,	 /* GET path answers expect */
	CONFIG_HEALTH_WEBSOCKET, /* a real handshake on path answers a valid 101 */
	CONFIG_HEALTH_NONE,	 /* no active check: retry_down_after brings servers back */
};

/* upstreams[].health; all durations in milliseconds */
struct config_health {
	bool enabled; /* the upstream has a health block */
	enum config_health_type type;
	uint64_t interval, timeout; /* 2 s, 1 s */
	unsigned rise, fall;	    /* 2, 3 consecutive results */
	char *path;		    /* "/" */
	char *host;		    /* Host of the check; NULL = the server address */
	int expect;		    /* http: the status that passes, 200 */
	bool passive;		    /* connect failures and resets count (default true) */
	bool passive_5xx;	    /* ... and 5xx answers (default false) */
	uint64_t retry_down_after;  /* type none: a down server is tried again after this */
};

/* upstreams[].on_down: what a server going down does to its open tunnels */
enum config_on_down {
	CONFIG_ON_DOWN_KEEP = 0, /* default: they go on */
	CONFIG_ON_DOWN_CLOSE,	 /* closed at once */
};

struct config_upstream {
	char *name;
	enum config_balance balance;
	enum config_hash_key hash_key;
	char *hash_name;	 /* the header, cookie or parameter name; NULL for client */
	unsigned proxy_protocol; /* 0 = none, 1 or 2: the PROXY header sent to servers */
	struct config_tls_client tls;
	size_t keepalive; /* idle keep-alive connections per server; 0 = close after each */
	unsigned retries; /* other servers tried after a failure; default 2 */
	struct config_health health;
	enum config_on_down on_down;
	struct config_server *servers; /* after resolve_expand(): one per address */
	size_t n_servers;
	uint64_t resolve; /* ms between resolutions of its host names; default 30 s */
};

struct config_route {
	char *name;	   /* for logs; default "#N" (1-based position) */
	char *host;	   /* NULL = any; "*.suffix" = wildcard; lower-cased */
	char *path_prefix; /* NULL = any */
	size_t upstream;   /* index into config.upstreams */
	enum config_upgrade_policy upgrade;
	char **protocols; /* lower-cased allow-list; default { "websocket" } */
	size_t n_protocols;
	bool any_protocol; /* protocols contains "*" (h2c still refused) */
	/* upgrade = "terminate" only: */
	struct config_addr bridge; /* TCP backend stream ("host:port") */
	char *bridge_unix;	   /* or a Unix socket path ("unix:/path"); NULL = TCP */
	char **subprotocols;	   /* offered to clients, in order of preference */
	size_t n_subprotocols;
	bool require_subprotocol; /* default true: offered but none matching -> 400 */
	uint64_t max_message;	  /* bytes, default 1 MiB */
	uint64_t ping_interval;	  /* ms, default 30 s; 0 = off */
	char **origins;		  /* allowed Origin values; none = any origin */
	size_t n_origins;
	enum config_on_remove on_remove;
	uint64_t drain_time; /* ms, on_remove = drain: closes spread over this long */
	int line;
};

/* h2: the HTTP/2 front end's SETTINGS (src/h2.c) */
struct config_h2 {
	size_t max_concurrent_streams; /* default 128 */
	size_t initial_window;	       /* per stream, default 256 KiB */
	size_t max_header_list;	       /* decoded request head, default 16 KiB */
};

struct config_timeouts { /* all in milliseconds; 0 = disabled */
	uint64_t header, keepalive, connect, response, send;
	uint64_t tunnel_idle, tunnel_max;
	uint64_t shutdown_grace; /* SIGTERM: tunnels and exchanges get this long; 0 = none */
};

struct config_limits {
	size_t header_bytes;	/* whole head incl. request line; default 16384 */
	size_t header_fields;	/* default 100 */
	size_t uri_bytes;	/* request-target; default 8192 */
	size_t max_connections; /* client connections; default 10000 */
	size_t nofile;		/* RLIMIT_NOFILE to set; 0 (default) = what the config needs */
};

/* admin.allow entries: "10.0.0.0/8", "fd00::/8", or one address */
struct config_cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned prefix;
};

/* admin: the operator's HTTP listener (metrics, health, tunnels, servers) */
struct config_admin {
	bool enabled;
	struct config_addr addr;   /* TCP, or: */
	char *unix_path;	   /* "unix:/run/switchyard.sock" */
	struct config_cidr *allow; /* besides loopback and the Unix socket */
	size_t n_allow;
};

struct config {
	char *file;
	struct config_listen *listens;
	size_t n_listens;
	struct config_timeouts timeouts;
	struct config_limits limits;
	struct config_h2 h2;
	struct config_upstream *upstreams;
	size_t n_upstreams;
	struct config_route *routes;
	size_t n_routes;
	char *access_log;      /* "stderr" (default), "off", "syslog[:unix:/PATH]", or a path */
	uint64_t log_interval; /* ms between progress lines of a long tunnel; 0 (default) = none */
	char *error_log;       /* "stderr" (default) or a path */
	char *log_level;       /* "error", "warn", "info" (default), "debug" */
	char *via;	       /* pseudonym in Via, default "switchyard" */
	enum config_tunnel_mode tunnel_mode;
	unsigned workers; /* event loops (threads); 0 = one per CPU */
	char *pid_file;	  /* NULL = none */
	char *user;	  /* started as root: run as this user once bound; NULL = refuse root */
	char **resolvers; /* DNS servers "IP" or "IP:PORT"; none = /etc/resolv.conf */
	size_t n_resolvers;
	char *text; /* the file as loaded, to build the config again on a DNS change */
	struct config_admin admin;
};

struct config_errors {
	char *msg[CONFIG_MAX_ERRORS]; /* each "FILE:LINE: message" */
	size_t n;
	size_t dropped; /* errors beyond CONFIG_MAX_ERRORS */
};

/*
 * Load and validate FILE. On success returns a config the caller frees with
 * config_free(). On failure returns NULL and fills errs (free with
 * config_errors_fini()).
 */
struct config *config_load(const char *file, struct config_errors *errs);
/* The same from text already read (FILE names it in errors and resolves relative paths). */
struct config *config_parse(const char *file, const char *text, struct config_errors *errs);
void config_free(struct config *cfg);
void config_errors_fini(struct config_errors *errs);

/* "10s", "250ms", "5m", "1h" (a bare integer is seconds) -> milliseconds. 0 / -1. */
int config_parse_duration(const char *text, uint64_t *ms);
/* "127.0.0.1:8080" or "[::1]:8080" -> sockaddr. Port required. 0 / -1. */
int config_parse_address(const char *text, struct config_addr *out);
/* Same address and port (as parsed: both were zeroed first). */
bool config_addr_equal(const struct config_addr *a, const struct config_addr *b);
/* "1m", "64k", "512" -> bytes. 0 / -1. */
int config_parse_size(const char *text, uint64_t *bytes);

#endif
