/*
 * admin: the operator's HTTP listener (see admin.h).
 */
#include "admin.h"

#include <errno.h>
#include <stdarg.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "health.h"
#include "http.h"
#include "http_hdr.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define ADMIN_MAX_CONNS 64	   /* an operator's tools, not a crowd */
#define ADMIN_TIMEOUT_S 10	   /* a request head must come within this */
#define ADMIN_TUNNELS_DEFAULT 1000 /* /tunnels without limit= */
#define ADMIN_RESUME_MS 250	   /* accepting again after EMFILE */

static const struct http_limits ADMIN_LIMITS = {8192, 50, 4096};

struct admin {
	struct event_base *base;
	const struct admin_env *env;
	struct listener *l;
	char *unix_path;	 /* removed at the end */
	struct config_addr addr; /* or the TCP address */
	struct event *resume;
	struct http_reader *reader;
	struct admin_conn *conns;
	size_t n_conns;
};

struct admin_conn {
	struct admin *a;
	struct conn *conn;
	int family; /* the peer's: AF_UNIX, AF_INET, AF_INET6 */
	unsigned char peer[16];
	struct worker_tunnels *query; /* /tunnels waiting for the workers */
	bool head;		      /* HEAD: the length of the body, not the body */
	struct admin_conn *next, *prev;
};

/* ---- access ---- */

static bool prefix_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;
	if (memcmp(a, b, bytes) != 0)
		return false;
	return rest == 0 || ((a[bytes] ^ b[bytes]) & (0xff << (8 - rest))) == 0;
}

bool admin_peer_allowed(const struct config_admin *cfg, int family, const unsigned char *addr)
{
	static const unsigned char v6_loopback[16] = {[15] = 1};
	static const unsigned char v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
	unsigned char v4[4];

	if (family == AF_UNIX)
		return true;
	if (family == AF_INET6 && memcmp(addr, v4_mapped, 12) == 0) {
		memcpy(v4, addr + 12, 4); /* ::ffff:a.b.c.d is a.b.c.d */
		family = AF_INET;
		addr = v4;
	}
	if ((family == AF_INET && addr[0] == 127) ||
	    (family == AF_INET6 && memcmp(addr, v6_loopback, 16) == 0))
		return true;
	for (size_t i = 0; cfg && i < cfg->n_allow; i++)
		if (cfg->allow[i].family == family &&
		    prefix_match(cfg->allow[i].addr, addr, cfg->allow[i].prefix))
			return true;
	return false;
}

/* ---- responses ---- */

static void admin_conn_free(struct admin_conn *c)
{
	struct admin *a = c->a;
	if (c->query)
		worker_tunnels_cancel(c->query);
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->n_conns--;
	conn_free(c->conn);
	free(c);
}

static void admin_conn_written(struct conn *conn, void *arg)
{
	admin_conn_free(arg);
}

static void admin_conn_event(struct conn *conn, short what, void *arg)
{
	admin_conn_free(arg);
}

/* One whole response, then the connection closes once it is written. */
static void reply(struct admin_conn *c, int status, const char *type, struct evbuffer *body,
		  const char *extra)
{
	struct evbuffer *out = conn_output(c->conn);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			    "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
			    status, http_status_text(status), type, evbuffer_get_length(body),
			    extra ? extra : "");
	if (!c->head)
		evbuffer_add_buffer(out, body);
	conn_disable(c->conn, EV_READ);
	conn_setcb(c->conn, NULL, admin_conn_written, admin_conn_event, c);
	conn_enable(c->conn, EV_WRITE);
}

static void reply_text(struct admin_conn *c, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_text(struct admin_conn *c, int status, const char *extra, const char *fmt, ...)
{
	struct evbuffer *body = evbuffer_new();
	va_list ap;
	if (body == NULL) {
		admin_conn_free(c);
		return;
	}
	va_start(ap, fmt);
	evbuffer_add_vprintf(body, fmt, ap);
	va_end(ap);
	evbuffer_add(body, "\n", 1);
	reply(c, status, "text/plain; charset=utf-8", body, extra);
	evbuffer_free(body);
}

/* ---- the endpoints ---- */

static uint64_t open_fds(void)
{
	uint64_t n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n > 0 ? n - 1 : 0; /* not the directory's own descriptor */
}

static void get_metrics(struct admin_conn *c)
{
	const struct admin_env *env = c->a->env;
	struct rlimit rl = {0, 0};
	struct evbuffer *body = evbuffer_new();
	getrlimit(RLIMIT_NOFILE, &rl);
	struct metrics_process p = {
	    .workers = env->n_workers,
	    .fds_open = open_fds(),
	    .fds_limit = (uint64_t)rl.rlim_cur,
	    .version = env->version,
	    .libevent = event_get_version(),
	    .openssl = env->openssl,
	};
	if (body == NULL) {
		admin_conn_free(c);
		return;
	}
	metrics_render(env->metrics, env->health, &p, body);
	reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, NULL);
	evbuffer_free(body);
}

static void json_string(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, "\"", 1);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(out, "\\%c", ch);
		else if (ch < 0x20)
			evbuffer_add_printf(out, "\\u%04x", ch);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
}

struct servers_json {
	struct evbuffer *out;
	size_t n;
};

static void server_json(const struct health_server_view *v, void *arg)
{
	struct servers_json *sj = arg;
	struct evbuffer *out = sj->out;
	if (sj->n++)
		evbuffer_add(out, ",\n", 2);
	evbuffer_add(out, "{", 1);
	evbuffer_add(out, "\"upstream\":", 11);
	json_string(out, v->upstream);
	evbuffer_add(out, ",\"server\":", 10);
	json_string(out, v->addr);
	evbuffer_add_printf(out,
			    ",\"state\":\"%s\",\"admin\":\"%s\",\"sessions\":%lld,\"tunnels\":%lld,"
			    "\"checks_passed\":%llu,\"checks_failed\":%llu,\"check\":",
			    v->down ? "down" : "up", health_admin_label(v->admin),
			    (long long)v->sessions, (long long)v->tunnels,
			    (unsigned long long)v->checks_passed,
			    (unsigned long long)v->checks_failed);
	if (v->check)
		json_string(out, v->check);
	else
		evbuffer_add(out, "null", 4);
	evbuffer_add(out, ",\"last_check\":", 14);
	if (v->check && v->last_check[0])
		json_string(out, v->last_check);
	else
		evbuffer_add(out, "null", 4);
	evbuffer_add(out, "}", 1);
}

static void get_servers(struct admin_conn *c)
{
	struct servers_json sj = {.out = evbuffer_new()};
	if (sj.out == NULL) {
		admin_conn_free(c);
		return;
	}
	evbuffer_add(sj.out, "[", 1);
	health_foreach(c->a->env->health, server_json, &sj);
	evbuffer_add(sj.out, "]\n", 2);
	reply(c, 200, "application/json", sj.out, NULL);
	evbuffer_free(sj.out);
}

static void tunnels_done(struct evbuffer *json, size_t count, void *arg)
{
	struct admin_conn *c = arg;
	struct evbuffer *body = evbuffer_new();
	c->query = NULL;
	if (body == NULL) {
		admin_conn_free(c);
		return;
	}
	evbuffer_add(body, "[", 1);
	evbuffer_add_buffer(body, json);
	evbuffer_add(body, "]\n", 2);
	reply(c, 200, "application/json", body, NULL);
	evbuffer_free(body);
	(void)count;
}

static int hex_value(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20;
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

enum query_result { QUERY_ABSENT, QUERY_FOUND, QUERY_BAD };

/* Query parameter name of target, percent-decoded into out. */
static enum query_result query_value(const struct http_msg *req, const char *name, char *out,
				     size_t cap)
{
	const char *v;
	size_t len, n = 0;
	if (!http_hdr_query_param(req->target, req->target_len, name, &v, &len))
		return QUERY_ABSENT;
	for (size_t i = 0; i < len; i++) {
		int ch = (unsigned char)v[i];
		if (ch == '%') {
			int hi = i + 2 < len ? hex_value(v[i + 1]) : -1;
			int lo = i + 2 < len ? hex_value(v[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return QUERY_BAD;
			ch = hi * 16 + lo;
			i += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (n + 1 >= cap || ch == 0)
			return QUERY_BAD;
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	return QUERY_FOUND;
}

/* The query's filters and limit; false when one is malformed (answered 400). */
static bool tunnel_filters(struct admin_conn *c, const struct http_msg *req, char *route,
			   char *server, size_t cap, unsigned long long *limit)
{
	char text[24], *end = NULL;
	enum query_result r = query_value(req, "route", route, cap);
	enum query_result s = query_value(req, "server", server, cap);
	enum query_result l = query_value(req, "limit", text, sizeof(text));

	if (r == QUERY_ABSENT)
		route[0] = '\0';
	if (s == QUERY_ABSENT)
		server[0] = '\0';
	*limit = ADMIN_TUNNELS_DEFAULT;
	if (l == QUERY_FOUND && text[0] >= '0' && text[0] <= '9')
		*limit = strtoull(text, &end, 10);
	if (r == QUERY_BAD || s == QUERY_BAD || l == QUERY_BAD ||
	    (l == QUERY_FOUND && (end == NULL || *end != '\0'))) {
		reply_text(c, 400, NULL, "bad route=, server= or limit= (limit: a number)");
		return false;
	}
	return true;
}

static void get_tunnels(struct admin_conn *c, const struct http_msg *req)
{
	const struct admin_env *env = c->a->env;
	char route[256], server[256];
	unsigned long long limit;

	if (!tunnel_filters(c, req, route, server, sizeof(route), &limit))
		return;
	c->query = worker_tunnels_query(env->workers, env->n_workers, route[0] ? route : NULL,
					server[0] ? server : NULL, (size_t)limit, c->a->base,
					tunnels_done, c);
	if (c->query == NULL)
		reply_text(c, 500, NULL, "out of memory");
}

static void post_server_state(struct admin_conn *c, const struct http_msg *req,
			      enum health_admin state)
{
	char upstream[256], server[128];
	if (query_value(req, "upstream", upstream, sizeof(upstream)) != QUERY_FOUND ||
	    query_value(req, "server", server, sizeof(server)) != QUERY_FOUND) {
		reply_text(c, 400, NULL, "upstream= and server= are required");
		return;
	}
	if (health_set_admin(c->a->env->health, upstream, server, state) < 0) {
		reply_text(c, 404, NULL, "no server %s in upstream '%s'", server, upstream);
		return;
	}
	reply_text(c, 200, NULL, "server %s of %s: %s", server, upstream,
		   health_admin_label(state));
}

static bool path_is(const struct http_msg *req, const char *path)
{
	size_t n = strlen(path);
	return req->target_len >= n && memcmp(req->target, path, n) == 0 &&
	       (req->target_len == n || req->target[n] == '?');
}

static bool method_is(const struct http_msg *req, const char *m)
{
	return req->method_len == strlen(m) && memcmp(req->method_str, m, req->method_len) == 0;
}

static void dispatch(struct admin_conn *c, const struct http_msg *req)
{
	static const struct {
		const char *path;
		enum health_admin state;
	} posts[] = {{"/servers/drain", HEALTH_ADMIN_DRAIN},
		     {"/servers/ready", HEALTH_ADMIN_READY},
		     {"/servers/maint", HEALTH_ADMIN_MAINT}};
	bool get = method_is(req, "GET") || method_is(req, "HEAD");
	c->head = method_is(req, "HEAD");

	for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++)
		if (path_is(req, posts[i].path)) {
			if (method_is(req, "POST"))
				post_server_state(c, req, posts[i].state);
			else
				reply_text(c, 405, "Allow: POST\r\n",
					   "this changes state: use POST");
			return;
		}
	if (!path_is(req, "/metrics") && !path_is(req, "/healthz") && !path_is(req, "/tunnels") &&
	    !path_is(req, "/servers")) {
		reply_text(c, 404, NULL, "no such admin resource");
		return;
	}
	if (!get) {
		reply_text(c, 405, "Allow: GET\r\n", "use GET");
		return;
	}
	if (path_is(req, "/metrics"))
		get_metrics(c);
	else if (path_is(req, "/healthz"))
		c->a->env->stopping ? reply_text(c, 503, NULL, "stopping")
				    : reply_text(c, 200, NULL, "ok");
	else if (path_is(req, "/tunnels"))
		get_tunnels(c, req);
	else
		get_servers(c);
}

static void admin_conn_read(struct conn *conn, void *arg)
{
	struct admin_conn *c = arg;
	struct evbuffer *in = conn_input(conn);
	size_t len = evbuffer_get_length(in), head_len = 0;
	const char *buf = (const char *)evbuffer_pullup(in, -1);
	struct http_error err;
	struct http_msg req;

	if (c->query)
		return; /* answered when the workers are */
	switch (http_head_scan(HTTP_MSG_REQUEST, buf, len, &ADMIN_LIMITS, &head_len, &err)) {
	case HTTP_SCAN_MORE:
		return;
	case HTTP_SCAN_ERROR:
		reply_text(c, err.status, NULL, "%s", err.reason);
		return;
	case HTTP_SCAN_DONE:
		break;
	}
	http_msg_init(&req, HTTP_MSG_REQUEST);
	if (http_reader_head(c->a->reader, &req, buf, head_len, HTTP_METHOD_OTHER, &ADMIN_LIMITS,
			     &err) < 0)
		reply_text(c, err.status, NULL, "%s", err.reason);
	else if (!admin_peer_allowed(c->a->env->cfg, c->family, c->peer))
		reply_text(c, 403, NULL, "admin access from this address is not allowed");
	else
		dispatch(c, &req);
	http_msg_fini(&req);
}

static void admin_resume(evutil_socket_t fd, short what, void *arg)
{
	listener_resume(((struct admin *)arg)->l);
}

/* Out of descriptors: pause (a failing accept would spin) and try again soon. */
static void admin_full(void *arg)
{
	struct admin *a = arg;
	struct timeval tv = {0, ADMIN_RESUME_MS * 1000};
	listener_pause(a->l);
	evtimer_add(a->resume, &tv);
}

static void admin_accept(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct admin *a = arg;
	struct admin_conn *c = a->n_conns < ADMIN_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
	if (c == NULL) {
		close(fd);
		return;
	}
	if ((c->conn = conn_new(a->base, fd, NULL, CONN_PLAIN)) == NULL) { /* fd closed */
		free(c);
		return;
	}
	c->a = a;
	c->family = sa->sa_family;
	if (sa->sa_family == AF_INET)
		memcpy(c->peer, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(c->peer, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->n_conns++;
	(void)len;
	conn_setcb(c->conn, admin_conn_read, NULL, admin_conn_event, c);
	conn_set_timeouts(c->conn, ADMIN_TIMEOUT_S * 1000, ADMIN_TIMEOUT_S * 1000);
	conn_enable(c->conn, EV_READ);
}

/* ---- the listener ---- */

static int bind_unix(const char *path)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct stat st;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	/* a socket left by an earlier run (never another kind of file) */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || chmod(path, 0660) < 0 ||
	    listen(fd, 64) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

struct admin *admin_new(struct event_base *base, const struct admin_env *env)
{
	const struct config_admin *cfg = env->cfg;
	struct admin *a = calloc(1, sizeof(*a));
	int fd;

	if (a == NULL || (a->reader = http_reader_new(HTTP_MSG_REQUEST)) == NULL) {
		free(a);
		return NULL;
	}
	a->base = base;
	a->env = env;
	if ((a->resume = evtimer_new(base, admin_resume, a)) == NULL) {
		admin_free(a);
		return NULL;
	}
	if (cfg->unix_path) {
		if ((fd = bind_unix(cfg->unix_path)) < 0)
			log_msg(LOG_LEVEL_ERROR, 0, "cannot listen on unix:%s: %s", cfg->unix_path,
				strerror(errno));
		else
			a->unix_path = strdup(cfg->unix_path);
	} else {
		fd = listener_bind(&cfg->addr, false); /* logs why it failed */
		a->addr = cfg->addr;
	}
	if (fd < 0 ||
	    (a->l = listener_new(base, fd, "admin", admin_accept, admin_full, a)) == NULL) {
		admin_free(a);
		return NULL;
	}
	log_msg(LOG_LEVEL_INFO, 0, "admin listening on %s%s", cfg->unix_path ? "unix:" : "",
		cfg->unix_path ? cfg->unix_path : cfg->addr.text);
	return a;
}

bool admin_listens_on(const struct admin *a, const struct config_admin *cfg)
{
	if (!cfg->enabled)
		return false;
	if (a->unix_path || cfg->unix_path)
		return a->unix_path && cfg->unix_path && strcmp(a->unix_path, cfg->unix_path) == 0;
	return config_addr_equal(&a->addr, &cfg->addr);
}

void admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	while (a->conns)
		admin_conn_free(a->conns);
	if (a->l)
		listener_free(a->l);
	if (a->resume)
		event_free(a->resume);
	if (a->unix_path)
		unlink(a->unix_path);
	free(a->unix_path);
	http_reader_free(a->reader);
	free(a);
}
