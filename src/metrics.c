/*
 * metrics: counters and the Prometheus text exposition (see metrics.h).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "health.h"

/* Upper bounds in microseconds: 1 ms .. 1 h, for connects as for tunnels. */
static const uint64_t BUCKET_US[METRICS_BUCKETS] = {
    1000,     5000,	25000,	  100000,    250000,	1000000,    2500000,
    10000000, 30000000, 60000000, 300000000, 900000000, 1800000000, 3600000000ULL};

static const char *const UPGRADE_LABELS[METRICS_UPGRADE_RESULTS] = {
    [METRICS_UPGRADE_FORWARDED] = "forwarded",
    [METRICS_UPGRADE_REFUSED_BY_POLICY] = "refused_by_policy",
    [METRICS_UPGRADE_INVALID_HANDSHAKE] = "invalid_handshake",
    [METRICS_UPGRADE_BACKEND_NON_101] = "backend_non_101",
    [METRICS_UPGRADE_INVALID_101] = "invalid_101",
    [METRICS_UPGRADE_TERMINATED] = "terminated",
};

const char *metrics_upgrade_label(enum metrics_upgrade r)
{
	return UPGRADE_LABELS[r];
}

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));
	pthread_mutex_t *lock = malloc(sizeof(*lock));
	if (m == NULL || lock == NULL) {
		free(m);
		free(lock);
		return NULL;
	}
	pthread_mutex_init(lock, NULL);
	m->lock = lock;
	atomic_store(&m->started_unix, (uint64_t)time(NULL));
	return m;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	while (m->routes) {
		struct metrics_route *r = m->routes;
		m->routes = r->next;
		free(r->name);
		free(r);
	}
	pthread_mutex_destroy(m->lock);
	free(m->lock);
	free(m);
}

struct metrics_route *metrics_route(struct metrics *m, const char *name)
{
	struct metrics_route *r;
	pthread_mutex_lock(m->lock);
	for (r = m->routes; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			break;
	if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL) {
		if ((r->name = strdup(name)) == NULL) {
			free(r);
			r = NULL;
		} else {
			r->next = m->routes;
			m->routes = r;
		}
	}
	pthread_mutex_unlock(m->lock);
	return r;
}

void metrics_observe(struct metrics_histogram *h, uint64_t us)
{
	size_t i = 0;
	while (i < METRICS_BUCKETS && us > BUCKET_US[i])
		i++;
	metrics_add(&h->bucket[i], 1);
	metrics_add(&h->sum_us, us);
}

/* ---- exposition ---- */

/* A label value with \ " and newline escaped, as the format wants. */
static void put_label(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(out, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP switchyard_%s %s\n# TYPE switchyard_%s %s\n", name, help,
			    name, type);
}

/* switchyard_NAME{k1="v1",k2="v2"} value; keys/values NULL-terminated pairs. */
static void sample(struct evbuffer *out, const char *name, const char *const *labels,
		   const char *value)
{
	evbuffer_add_printf(out, "switchyard_%s", name);
	for (size_t i = 0; labels && labels[i]; i += 2) {
		evbuffer_add_printf(out, "%s%s=\"", i ? "," : "{", labels[i]);
		put_label(out, labels[i + 1]);
		evbuffer_add(out, "\"", 1);
	}
	evbuffer_add_printf(out, "%s %s\n", labels && labels[0] ? "}" : "", value);
}

static void sample_u(struct evbuffer *out, const char *name, const char *const *labels, uint64_t v)
{
	char num[32];
	snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	sample(out, name, labels, num);
}

static void sample_i(struct evbuffer *out, const char *name, const char *const *labels, int64_t v)
{
	char num[32];
	snprintf(num, sizeof(num), "%lld", (long long)v);
	sample(out, name, labels, num);
}

static void histogram(struct evbuffer *out, const char *name, const char *help,
		      const struct metrics_histogram *h)
{
	char bucket[64], le[32], sum[48];
	uint64_t total = 0;
	family(out, name, "histogram", help);
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	for (size_t i = 0; i <= METRICS_BUCKETS; i++) {
		total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		if (i < METRICS_BUCKETS)
			snprintf(le, sizeof(le), "%g", (double)BUCKET_US[i] / 1e6);
		else
			snprintf(le, sizeof(le), "+Inf");
		const char *labels[] = {"le", le, NULL};
		sample_u(out, bucket, labels, total);
	}
	snprintf(sum, sizeof(sum), "%.6f", (double)atomic_load(&h->sum_us) / 1e6);
	snprintf(bucket, sizeof(bucket), "%s_sum", name);
	sample(out, bucket, NULL, sum);
	snprintf(bucket, sizeof(bucket), "%s_count", name);
	sample_u(out, bucket, NULL, total);
}

static void render_routes(const struct metrics *m, struct evbuffer *out)
{
	static const char *const classes[] = {NULL, "1xx", "2xx", "3xx", "4xx", "5xx"};

	family(out, "requests_total", "counter", "Responses to clients by route and status class.");
	for (const struct metrics_route *r = m->routes; r; r = r->next)
		for (int c = 1; c <= 5; c++) {
			const char *labels[] = {"route", r->name, "code", classes[c], NULL};
			sample_u(out, "requests_total", labels, atomic_load(&r->requests[c]));
		}
	family(out, "upgrades_total", "counter", "Upgrade requests by route and result.");
	for (const struct metrics_route *r = m->routes; r; r = r->next)
		for (int u = 0; u < METRICS_UPGRADE_RESULTS; u++) {
			const char *labels[] = {"route", r->name, "result", UPGRADE_LABELS[u],
						NULL};
			sample_u(out, "upgrades_total", labels, atomic_load(&r->upgrades[u]));
		}
	family(out, "tunnels_open", "gauge", "Open tunnels and terminated WebSockets by route.");
	for (const struct metrics_route *r = m->routes; r; r = r->next) {
		const char *labels[] = {"route", r->name, NULL};
		sample_i(out, "tunnels_open", labels, atomic_load(&r->tunnels_open));
	}
	family(out, "tunnel_bytes_total", "counter",
	       "Bytes moved by tunnels by route and direction (up: client to backend).");
	for (const struct metrics_route *r = m->routes; r; r = r->next) {
		const char *up[] = {"route", r->name, "direction", "up", NULL};
		const char *down[] = {"route", r->name, "direction", "down", NULL};
		sample_u(out, "tunnel_bytes_total", up, atomic_load(&r->bytes_up));
		sample_u(out, "tunnel_bytes_total", down, atomic_load(&r->bytes_down));
	}
}

static void render_errors(const struct metrics *m, struct evbuffer *out)
{
	char code[12];
	family(out, "proxy_errors_total", "counter",
	       "Responses the proxy generated itself, by status.");
	for (int s = 400; s < 600; s++) {
		uint64_t n = atomic_load(&m->errors[s]);
		if (n == 0)
			continue;
		snprintf(code, sizeof(code), "%d", s);
		const char *labels[] = {"code", code, NULL};
		sample_u(out, "proxy_errors_total", labels, n);
	}
	family(out, "tunnel_closes_total", "counter", "Tunnels ended, by cause.");
	for (int c = 0; c < END_CAUSES; c++) {
		const char *labels[] = {"cause", end_label((enum end_cause)c), NULL};
		sample_u(out, "tunnel_closes_total", labels, atomic_load(&m->tunnel_closes[c]));
	}
}

struct server_render {
	struct evbuffer *out;
	int pass; /* which family is being written */
};

static void render_server(const struct health_server_view *v, void *arg)
{
	struct server_render *sr = arg;
	const char *labels[] = {"upstream", v->upstream, "server", v->addr, NULL};
	switch (sr->pass) {
	case 0:
		sample_u(sr->out, "server_up", labels, !v->down);
		break;
	case 1:
		sample_i(sr->out, "server_sessions_open", labels, v->sessions);
		break;
	case 2:
		sample_i(sr->out, "server_tunnels_open", labels, v->tunnels);
		break;
	case 3: {
		const char *pass[] = {"upstream", v->upstream, "server", v->addr,
				      "result",	  "pass",      NULL};
		const char *fail[] = {"upstream", v->upstream, "server", v->addr,
				      "result",	  "fail",      NULL};
		sample_u(sr->out, "health_checks_total", pass, v->checks_passed);
		sample_u(sr->out, "health_checks_total", fail, v->checks_failed);
		break;
	}
	case 4: {
		const char *admin[] = {"upstream", v->upstream, "server",
				       v->addr,	   "state",	health_admin_label(v->admin),
				       NULL};
		sample_u(sr->out, "server_admin_state", admin, 1);
		break;
	}
	}
}

static void render_servers(struct health *h, struct evbuffer *out)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
	    {"server_up", "gauge", "1 while the server is up (health), 0 while down."},
	    {"server_sessions_open", "gauge", "Sessions using the server, tunnels included."},
	    {"server_tunnels_open", "gauge", "Open tunnels to the server."},
	    {"health_checks_total", "counter", "Active health checks by result."},
	    {"server_admin_state", "gauge", "The operator's state: ready, drain or maint."},
	};
	struct server_render sr = {.out = out};
	for (sr.pass = 0; sr.pass < (int)(sizeof(fams) / sizeof(fams[0])); sr.pass++) {
		family(out, fams[sr.pass].name, fams[sr.pass].type, fams[sr.pass].help);
		health_foreach(h, render_server, &sr);
	}
}

static void render_h2(const struct metrics *m, struct evbuffer *out)
{
	static const char *const codes[METRICS_GOAWAY_CODES] = {
	    "no_error", "protocol_error", "internal_error", "enhance_your_calm"};
	family(out, "h2_connections_open", "gauge", "Client connections speaking HTTP/2 now.");
	sample_i(out, "h2_connections_open", NULL, atomic_load(&m->h2_connections_open));
	family(out, "h2_connections_total", "counter",
	       "Client connections that chose HTTP/2 (ALPN h2 or the h2c preface).");
	sample_u(out, "h2_connections_total", NULL, atomic_load(&m->h2_connections_total));
	family(out, "h2_streams_total", "counter",
	       "HTTP/2 request streams handed to a session (RFC 8441 WebSockets included).");
	sample_u(out, "h2_streams_total", NULL, atomic_load(&m->h2_streams_total));
	family(out, "h2_goaways_total", "counter", "GOAWAY frames sent, by error code.");
	for (size_t i = 0; i < METRICS_GOAWAY_CODES; i++) {
		const char *labels[] = {"code", codes[i], NULL};
		sample_u(out, "h2_goaways_total", labels, atomic_load(&m->h2_goaways[i]));
	}
}

static void render_process(const struct metrics *m, const struct metrics_process *p,
			   struct evbuffer *out)
{
	const char *ok[] = {"result", "ok", NULL}, *failed[] = {"result", "failed", NULL};
	const char *build[] = {"version", p->version, "libevent", p->libevent,
			       "openssl", p->openssl, NULL};

	family(out, "connections_open", "gauge", "Client connections open now.");
	sample_i(out, "connections_open", NULL, atomic_load(&m->connections_open));
	family(out, "connections_total", "counter", "Client connections accepted.");
	sample_u(out, "connections_total", NULL, atomic_load(&m->connections_total));
	render_h2(m, out);
	family(out, "upstream_connections_total", "counter",
	       "Backend connections for requests: new ones opened (connect attempts, failed "
	       "ones too), or reused from the idle pool.");
	const char *reused[] = {"kind", "reused", NULL}, *fresh[] = {"kind", "new", NULL};
	sample_u(out, "upstream_connections_total", reused, atomic_load(&m->pool_reused));
	sample_u(out, "upstream_connections_total", fresh, atomic_load(&m->pool_new));
	family(out, "reloads_total", "counter", "Config reloads by result.");
	sample_u(out, "reloads_total", ok, atomic_load(&m->reloads_ok));
	sample_u(out, "reloads_total", failed, atomic_load(&m->reloads_failed));
	family(out, "address_changes_total", "counter",
	       "New generations because host names resolved to other addresses.");
	sample_u(out, "address_changes_total", NULL, atomic_load(&m->address_changes));
	family(out, "config_generation", "gauge", "The generation new connections get.");
	sample_u(out, "config_generation", NULL, atomic_load(&m->generation));
	family(out, "workers", "gauge", "Event loops (threads).");
	sample_u(out, "workers", NULL, p->workers);
	family(out, "open_fds", "gauge", "File descriptors open in the process.");
	sample_u(out, "open_fds", NULL, p->fds_open);
	family(out, "max_fds", "gauge", "The descriptor limit (RLIMIT_NOFILE).");
	sample_u(out, "max_fds", NULL, p->fds_limit);
	family(out, "start_time_seconds", "gauge", "When the process started (Unix time).");
	sample_u(out, "start_time_seconds", NULL, atomic_load(&m->started_unix));
	family(out, "build_info", "gauge", "Versions of switchyard and its libraries.");
	sample_u(out, "build_info", build, 1);
}

void metrics_render(const struct metrics *m, struct health *h, const struct metrics_process *p,
		    struct evbuffer *out)
{
	pthread_mutex_lock(m->lock); /* the route list, not the values */
	render_routes(m, out);
	pthread_mutex_unlock(m->lock);
	render_errors(m, out);
	histogram(out, "tunnel_duration_seconds", "How long tunnels lasted.", &m->tunnel_duration);
	histogram(out, "upstream_connect_seconds",
		  "Time to connect to a backend (new connections).", &m->connect_time);
	histogram(out, "upstream_response_seconds",
		  "Time from the request to the backend's response head.", &m->response_time);
	render_servers(h, out);
	render_process(m, p, out);
}
