/*
 * health: shared server state, passive marking and the active checks
 * (see health.h).
 */
#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "generation.h"
#include "http.h"
#include "log.h"
#include "tls.h"
#include "upgrade.h"
#include "upstream.h"

struct health_server {
	struct health *h;
	unsigned refs; /* under h->lock */
	char *upstream;
	struct config_addr addr;
	atomic_bool down;
	atomic_uint fails;	      /* passive failures in a row */
	atomic_uint_fast64_t down_at; /* monotonic ms of the last fall */
	atomic_uint down_seq;	      /* bumped at every fall */
	pthread_mutex_t state_lock;   /* serialises changes of down (not reads) */
	atomic_int admin;	      /* enum health_admin */
	atomic_int_fast64_t sessions, tunnels;
	atomic_uint_fast64_t checks_passed, checks_failed;
	const char *check;	    /* the active check's type; on h's thread */
	char last_check[200];	    /* ... and its last result */
	struct health_server *next; /* registry, under h->lock */
};

/* The active check of one server; lives on h's thread only. */
struct health_check {
	struct health *h;
	struct health_server *hs;
	const struct config_health *cfg; /* the followed generation's */
	struct tls_client *tls;		 /* ... and its TLS context, NULL = plain */
	const struct config_server *srv; /* ... and the server (name, port) */
	struct event *timer;		 /* next check, or the timeout of this one */
	struct conn *conn;		 /* the check in flight */
	bool closing;			 /* passed; a WebSocket close frame is draining */
	char ws_accept[UPGRADE_WS_ACCEPT_LEN + 1];
	unsigned passes, failures; /* results in a row */
	unsigned seen_seq;	   /* hs->down_seq when passes started counting */
	struct health_check *next;
};

struct health {
	struct event_base *base;
	health_changed_fn changed;
	void *arg;
	pthread_mutex_t lock; /* the registry */
	struct health_server *servers;
	struct health_check *checks;
	struct generation *gen; /* followed: the checks' settings live in it */
	struct http_reader *reader;
	uint64_t rng;
};

static const char *const TYPE_NAMES[] = {[CONFIG_HEALTH_TCP] = "tcp",
					 [CONFIG_HEALTH_HTTP] = "http",
					 [CONFIG_HEALTH_WEBSOCKET] = "websocket",
					 [CONFIG_HEALTH_NONE] = "none"};

/* Checks answer small heads; anything bigger is not a health endpoint. */
static const struct http_limits CHECK_LIMITS = {16384, 100, 8192};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(uint64_t ms)
{
	return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
}

/* ---- state ---- */

/*
 * Change under hs->state_lock: down with its time and sequence number, or
 * up. probation (> 0): only a server still down since before that long
 * (retry_down_after) may come up, with fails set to probation_fails. False
 * when there was nothing to change.
 */
static bool change(struct health_server *hs, bool down, uint64_t probation,
		   unsigned probation_fails)
{
	bool done = false;
	pthread_mutex_lock(&hs->state_lock);
	if (health_server_is_down(hs) != down &&
	    (probation == 0 || now_ms() - atomic_load(&hs->down_at) >= probation)) {
		if (down) {
			atomic_store(&hs->down_at, now_ms());
			atomic_fetch_add(&hs->down_seq, 1);
		}
		if (probation)
			atomic_store(&hs->fails, probation_fails);
		atomic_store(&hs->down, down);
		done = true;
	}
	pthread_mutex_unlock(&hs->state_lock);
	return done;
}

/* Move hs to down or up; only the thread whose change it is logs and reports it. */
static bool mark_probation(struct health_server *hs, bool down, uint64_t probation, unsigned fails,
			   const char *fmt, va_list ap)
{
	char why[256];
	if (!change(hs, down, probation, fails))
		return false;
	vsnprintf(why, sizeof(why), fmt, ap);
	log_msg(down ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, 0, "server %s of %s is %s: %s",
		hs->addr.text, hs->upstream, down ? "down" : "up", why);
	if (hs->h->changed)
		hs->h->changed(hs, down ? HEALTH_WENT_DOWN : HEALTH_WENT_UP, hs->h->arg);
	return true;
}

static bool mark(struct health_server *hs, bool down, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool mark(struct health_server *hs, bool down, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool done = mark_probation(hs, down, 0, 0, fmt, ap);
	va_end(ap);
	return done;
}

static bool mark_up_after(struct health_server *hs, uint64_t probation, unsigned fails,
			  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool mark_up_after(struct health_server *hs, uint64_t probation, unsigned fails,
			  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool done = mark_probation(hs, false, probation, fails, fmt, ap);
	va_end(ap);
	return done;
}

bool health_server_is_down(const struct health_server *hs)
{
	return atomic_load_explicit(&hs->down, memory_order_relaxed);
}

bool health_server_usable(struct health_server *hs, const struct config_health *cfg)
{
	if (atomic_load_explicit(&hs->admin, memory_order_relaxed) != HEALTH_ADMIN_READY)
		return false;
	if (!health_server_is_down(hs))
		return true;
	if (cfg->type != CONFIG_HEALTH_NONE ||
	    now_ms() - atomic_load(&hs->down_at) < cfg->retry_down_after)
		return false;
	/* on probation: the next failure takes it down again. Decided under the
	 * lock, so that a fall another worker made meanwhile is not undone. */
	mark_up_after(hs, cfg->retry_down_after, cfg->fall - 1, "retry_down_after %llu ms passed",
		      (unsigned long long)cfg->retry_down_after);
	return !health_server_is_down(hs);
}

void health_server_failed(struct health_server *hs, const struct config_health *cfg,
			  const char *why)
{
	if (!cfg->enabled || !cfg->passive || health_server_is_down(hs))
		return;
	unsigned n = atomic_fetch_add(&hs->fails, 1) + 1;
	if (n >= cfg->fall && mark(hs, true, "%u failures in a row (last: %s)", n, why))
		atomic_store(&hs->fails, 0);
}

void health_server_ok(struct health_server *hs)
{
	/* a load before the store: most answers find nothing to clear, and the
	 * line stays shared between workers */
	if (atomic_load_explicit(&hs->fails, memory_order_relaxed) != 0)
		atomic_store_explicit(&hs->fails, 0, memory_order_relaxed);
}

void health_server_sessions(struct health_server *hs, int delta)
{
	atomic_fetch_add_explicit(&hs->sessions, delta, memory_order_relaxed);
}

void health_server_tunnels(struct health_server *hs, int delta)
{
	atomic_fetch_add_explicit(&hs->tunnels, delta, memory_order_relaxed);
}

const char *health_admin_label(enum health_admin a)
{
	static const char *const labels[] = {[HEALTH_ADMIN_READY] = "ready",
					     [HEALTH_ADMIN_DRAIN] = "drain",
					     [HEALTH_ADMIN_MAINT] = "maint"};
	return labels[a];
}

void health_foreach(struct health *h, void (*fn)(const struct health_server_view *v, void *arg),
		    void *arg)
{
	pthread_mutex_lock(&h->lock);
	for (struct health_server *hs = h->servers; hs; hs = hs->next) {
		struct health_server_view v = {
		    .upstream = hs->upstream,
		    .addr = hs->addr.text,
		    .down = health_server_is_down(hs),
		    .admin = (enum health_admin)atomic_load(&hs->admin),
		    .sessions = atomic_load(&hs->sessions),
		    .tunnels = atomic_load(&hs->tunnels),
		    .checks_passed = atomic_load(&hs->checks_passed),
		    .checks_failed = atomic_load(&hs->checks_failed),
		    .check = hs->check,
		    .last_check = hs->last_check,
		};
		fn(&v, arg);
	}
	pthread_mutex_unlock(&h->lock);
}

int health_set_admin(struct health *h, const char *upstream, const char *addr,
		     enum health_admin admin)
{
	struct health_server *found = NULL;
	pthread_mutex_lock(&h->lock);
	for (struct health_server *hs = h->servers; hs && !found; hs = hs->next)
		if (strcmp(hs->upstream, upstream) == 0 && strcmp(hs->addr.text, addr) == 0)
			found = hs;
	if (found)
		found->refs++;
	pthread_mutex_unlock(&h->lock);
	if (found == NULL)
		return -1;
	int was = atomic_exchange(&found->admin, (int)admin);
	if (was != (int)admin)
		log_msg(LOG_LEVEL_INFO, 0, "server %s of %s set to %s (was %s)", addr, upstream,
			health_admin_label(admin), health_admin_label((enum health_admin)was));
	if (admin == HEALTH_ADMIN_MAINT && h->changed)
		h->changed(found, HEALTH_WENT_MAINT, h->arg);
	health_server_put(found);
	return 0;
}

const char *health_server_addr(const struct health_server *hs)
{
	return hs->addr.text;
}

const char *health_server_upstream(const struct health_server *hs)
{
	return hs->upstream;
}

/* ---- registry ---- */

struct health_server *health_server_get(struct health *h, const char *upstream,
					const struct config_addr *addr)
{
	struct health_server *hs;

	pthread_mutex_lock(&h->lock);
	for (hs = h->servers; hs; hs = hs->next)
		if (strcmp(hs->upstream, upstream) == 0 && config_addr_equal(&hs->addr, addr))
			break;
	if (hs == NULL && (hs = calloc(1, sizeof(*hs))) != NULL) {
		if ((hs->upstream = strdup(upstream)) == NULL) {
			free(hs);
			hs = NULL;
		} else {
			hs->h = h;
			hs->addr = *addr;
			pthread_mutex_init(&hs->state_lock, NULL);
			hs->next = h->servers;
			h->servers = hs;
		}
	}
	if (hs)
		hs->refs++;
	pthread_mutex_unlock(&h->lock);
	return hs;
}

struct health_server *health_server_ref(struct health_server *hs)
{
	pthread_mutex_lock(&hs->h->lock);
	hs->refs++;
	pthread_mutex_unlock(&hs->h->lock);
	return hs;
}

void health_server_put(struct health_server *hs)
{
	if (hs == NULL)
		return;
	struct health *h = hs->h;
	pthread_mutex_lock(&h->lock);
	if (--hs->refs == 0) {
		for (struct health_server **p = &h->servers; *p; p = &(*p)->next)
			if (*p == hs) {
				*p = hs->next;
				break;
			}
		free(hs->upstream);
		pthread_mutex_destroy(&hs->state_lock);
		free(hs);
	}
	pthread_mutex_unlock(&h->lock);
}

/* ---- active checks ---- */

/* The result for /servers and /metrics (both read on this thread). */
static void note_check(struct health_server *hs, bool pass, const char *why)
{
	atomic_fetch_add_explicit(pass ? &hs->checks_passed : &hs->checks_failed, 1,
				  memory_order_relaxed);
	snprintf(hs->last_check, sizeof(hs->last_check), "%s", pass ? "passed" : why);
}

static uint64_t check_random(struct health *h)
{
	h->rng ^= h->rng << 13; /* xorshift: jitter, nothing secret */
	h->rng ^= h->rng >> 7;
	h->rng ^= h->rng << 17;
	return h->rng;
}

static void check_drop_conn(struct health_check *c)
{
	if (c->conn)
		conn_free(c->conn);
	c->conn = NULL;
	c->closing = false;
}

/*
 * The first check of a server comes at a random point of the interval so
 * that the checks of many servers spread out; later ones every interval,
 * +/- 10 % so that they do not fall into step again.
 */
static void check_schedule(struct health_check *c, bool first)
{
	uint64_t iv = c->cfg->interval;
	uint64_t r = check_random(c->h);
	uint64_t ms = first ? r % iv : iv - iv / 10 + r % (iv / 5 + 1);
	struct timeval tv = ms_tv(ms);
	evtimer_add(c->timer, &tv);
}

static void check_result(struct health_check *c, bool pass, const char *why)
{
	struct health_server *hs = c->hs;
	const char *type = TYPE_NAMES[c->cfg->type];
	unsigned seq = atomic_load(&hs->down_seq);

	if (!c->closing)
		check_drop_conn(c);
	if (seq != c->seen_seq) { /* fell (passively) since: count passes anew */
		c->seen_seq = seq;
		c->passes = 0;
	}
	log_msg(LOG_LEVEL_DEBUG, 0, "%s check of %s (%s): %s", type, hs->addr.text, hs->upstream,
		pass ? "passed" : why);
	note_check(hs, pass, why);
	if (pass) {
		c->failures = 0;
		if (++c->passes >= c->cfg->rise && health_server_is_down(hs) &&
		    mark(hs, false, "%s check passed %u times", type, c->passes))
			atomic_store(&hs->fails, 0);
	} else {
		c->passes = 0;
		if (++c->failures >= c->cfg->fall && !health_server_is_down(hs))
			mark(hs, true, "%s check: %s", type, why);
	}
	if (!c->closing)
		check_schedule(c, false);
}

static void check_fail(struct health_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void check_fail(struct health_check *c, const char *fmt, ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	check_result(c, false, why);
}

/* A passed WebSocket check says goodbye with a close frame before closing. */
static void check_close_written(struct conn *conn, void *arg)
{
	struct health_check *c = arg;
	check_drop_conn(c);
	check_schedule(c, false);
}

static void check_close_event(struct conn *conn, short what, void *arg)
{
	check_close_written(conn, arg);
}

static void check_ws_goodbye(struct health_check *c)
{
	/* FIN + close, masked (RFC 6455 §5.3: a fresh mask), 2-byte payload 1000 */
	uint64_t mask = check_random(c->h);
	unsigned char frame[8] = {0x88, 0x82};
	struct timeval tv = ms_tv(c->cfg->timeout);
	memcpy(frame + 2, &mask, 4);
	frame[6] = 0x03 ^ frame[2];
	frame[7] = 0xe8 ^ frame[3];
	c->closing = true;
	conn_setcb(c->conn, NULL, check_close_written, check_close_event, c);
	evbuffer_add(conn_output(c->conn), frame, sizeof(frame));
	evtimer_add(c->timer, &tv);
}

static const char *ws_101_problem(const struct health_check *c, const struct http_msg *resp)
{
	const struct http_header *accept = http_msg_find(resp, "Sec-WebSocket-Accept");
	if (!http_msg_has_token(resp, "Upgrade", "websocket"))
		return "101 without Upgrade: websocket";
	if (!http_msg_has_token(resp, "Connection", "upgrade"))
		return "101 without Connection: upgrade";
	if (accept == NULL || accept->value_len != UPGRADE_WS_ACCEPT_LEN ||
	    memcmp(accept->value, c->ws_accept, UPGRADE_WS_ACCEPT_LEN) != 0)
		return "wrong Sec-WebSocket-Accept";
	return NULL;
}

static void check_judge(struct health_check *c, const struct http_msg *resp)
{
	const char *problem;
	if (c->cfg->type == CONFIG_HEALTH_HTTP) {
		if (resp->status == c->cfg->expect)
			check_result(c, true, NULL);
		else
			check_fail(c, "got %d, not %d", resp->status, c->cfg->expect);
		return;
	}
	if (resp->status != 101)
		check_fail(c, "got %d, not 101", resp->status);
	else if ((problem = ws_101_problem(c, resp)) != NULL)
		check_fail(c, "%s", problem);
	else {
		check_ws_goodbye(c);
		check_result(c, true, NULL);
	}
}

/*
 * Read one head; interim answers (100, 103 ...) are skipped: the final one
 * (or a 101) is judged. False when more bytes are needed or the check ended.
 */
static bool check_read_head(struct health_check *c, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in), head_len = 0;
	const char *buf = (const char *)evbuffer_pullup(in, -1);
	struct http_error err;
	struct http_msg resp;
	bool interim = false;

	switch (http_head_scan(HTTP_MSG_RESPONSE, buf, len, &CHECK_LIMITS, &head_len, &err)) {
	case HTTP_SCAN_MORE:
		return false;
	case HTTP_SCAN_ERROR:
		check_fail(c, "malformed response: %s", err.reason);
		return false;
	case HTTP_SCAN_DONE:
		break;
	}
	http_msg_init(&resp, HTTP_MSG_RESPONSE);
	if (http_reader_head(c->h->reader, &resp, buf, head_len, HTTP_METHOD_GET, &CHECK_LIMITS,
			     &err) < 0)
		check_fail(c, "malformed response: %s", err.reason);
	else if ((interim = resp.status < 200 && resp.status != 101))
		evbuffer_drain(in, head_len);
	else
		check_judge(c, &resp);
	http_msg_fini(&resp);
	return interim;
}

static void check_read_cb(struct conn *conn, void *arg)
{
	struct evbuffer *in = conn_input(conn);
	while (check_read_head(arg, in))
		;
}

static int check_send_request(struct health_check *c)
{
	const struct config_health *cfg = c->cfg;
	struct evbuffer *out = conn_output(c->conn);
	char key[UPGRADE_WS_KEY_LEN + 1], named[300];
	const char *host = cfg->host ? cfg->host : c->hs->addr.text;

	if (cfg->host == NULL && c->srv->name) { /* found by name: asked for by name */
		snprintf(named, sizeof(named), "%s:%u", c->srv->name, ntohs(c->srv->port));
		host = named;
	}

	if (cfg->type == CONFIG_HEALTH_HTTP)
		return evbuffer_add_printf(out,
					   "GET %s HTTP/1.1\r\nHost: %s\r\n"
					   "User-Agent: switchyard-health\r\n"
					   "Connection: close\r\n\r\n",
					   cfg->path, host) < 0
			   ? -1
			   : 0;
	if (upgrade_ws_new_key(key) < 0 || upgrade_ws_accept(key, strlen(key), c->ws_accept) < 0)
		return -1;
	return evbuffer_add_printf(out,
				   "GET %s HTTP/1.1\r\nHost: %s\r\n"
				   "User-Agent: switchyard-health\r\n"
				   "Connection: Upgrade\r\nUpgrade: websocket\r\n"
				   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n",
				   cfg->path, host, key) < 0
		   ? -1
		   : 0;
}

static void check_event_cb(struct conn *conn, short what, void *arg)
{
	struct health_check *c = arg;
	char why[200];

	if (what & CONN_CONNECTED) {
		if (c->cfg->type == CONFIG_HEALTH_TCP)
			check_result(c, true, NULL);
		else if (check_send_request(c) < 0)
			check_fail(c, "cannot write the request");
		return;
	}
	if (what & CONN_EOF)
		check_fail(c, "connection closed before a complete response");
	else
		check_fail(c, "%s", conn_error(conn, why, sizeof(why)));
}

static void check_start(struct health_check *c)
{
	const struct config_addr *a = &c->hs->addr;
	struct timeval tv = ms_tv(c->cfg->timeout);

	c->conn = upstream_connect(c->h->base, (const struct sockaddr *)&a->ss, a->len, c->tls,
				   c->srv->name ? c->srv->name : a->text);
	if (c->conn == NULL) {
		check_fail(c, "connect: %s", strerror(errno));
		return;
	}
	conn_setcb(c->conn, check_read_cb, NULL, check_event_cb, c);
	conn_enable(c->conn, EV_READ | EV_WRITE);
	evtimer_add(c->timer, &tv);
}

static void check_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct health_check *c = arg;
	if (c->closing) { /* the close frame did not drain in time: enough */
		check_close_written(c->conn, c);
		return;
	}
	if (c->conn) {
		check_fail(c, "no answer within %llu ms", (unsigned long long)c->cfg->timeout);
		return;
	}
	check_start(c);
}

static void check_free(struct health_check *c)
{
	check_drop_conn(c);
	if (c->timer)
		event_free(c->timer);
	c->hs->check = NULL;
	health_server_put(c->hs);
	free(c);
}

/* Take the check of hs out of *list, or make one. NULL on OOM. */
static struct health_check *check_for(struct health *h, struct health_check **list,
				      struct health_server *hs)
{
	for (struct health_check **p = list; *p; p = &(*p)->next) {
		struct health_check *c = *p;
		if (c->hs == hs) {
			*p = c->next;
			health_server_put(hs); /* the check has its own reference */
			return c;
		}
	}
	struct health_check *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->timer = evtimer_new(h->base, check_timer_cb, c)) == NULL) {
		free(c);
		health_server_put(hs);
		return NULL;
	}
	c->h = h;
	c->hs = hs;
	c->seen_seq = atomic_load(&hs->down_seq);
	return c;
}

/* Follow one server of gen's upstream i: its check, or up again without health. */
static void follow_server(struct health *h, struct health_check **old, struct generation *gen,
			  size_t i, const struct config_server *srv)
{
	const struct config_upstream *u = &gen->cfg->upstreams[i];
	struct health_server *hs = health_server_get(h, u->name, &srv->addr);
	if (hs == NULL)
		return;
	for (struct health_check *c = h->checks; c; c = c->next)
		if (c->hs == hs) { /* listed twice: one check is enough */
			health_server_put(hs);
			return;
		}
	if (!u->health.enabled) {
		mark(hs, false, "no health block any more");
		health_server_put(hs);
		return;
	}
	if (u->health.type == CONFIG_HEALTH_NONE) {
		health_server_put(hs);
		return;
	}
	struct health_check *c = check_for(h, old, hs);
	if (c == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "server %s of %s: out of memory for its check",
			srv->addr.text, u->name);
		return;
	}
	/* settings may have changed: start over within the new interval */
	check_drop_conn(c);
	evtimer_del(c->timer);
	c->cfg = &u->health;
	c->tls = gen->upstream_tls[i];
	c->srv = srv;
	hs->check = TYPE_NAMES[u->health.type];
	c->next = h->checks;
	h->checks = c;
	check_schedule(c, true);
}

void health_follow(struct health *h, struct generation *gen)
{
	struct health_check *old = h->checks;
	const struct config *cfg = gen->cfg;

	h->checks = NULL;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		for (size_t j = 0; j < cfg->upstreams[i].n_servers; j++)
			follow_server(h, &old, gen, i, &cfg->upstreams[i].servers[j]);
	while (old) {
		struct health_check *c = old;
		old = c->next;
		check_free(c);
	}
	generation_ref(gen);
	generation_unref(h->gen);
	h->gen = gen;
}

struct health *health_new(struct event_base *base, health_changed_fn changed, void *arg)
{
	struct health *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	if ((h->reader = http_reader_new(HTTP_MSG_RESPONSE)) == NULL) {
		free(h);
		return NULL;
	}
	h->base = base;
	h->changed = changed;
	h->arg = arg;
	h->rng = (uint64_t)now_ms() * 0x9e3779b97f4a7c15u | 1;
	pthread_mutex_init(&h->lock, NULL);
	return h;
}

void health_free(struct health *h)
{
	if (h == NULL)
		return;
	while (h->checks) {
		struct health_check *c = h->checks;
		h->checks = c->next;
		check_free(c);
	}
	generation_unref(h->gen);
	http_reader_free(h->reader);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
