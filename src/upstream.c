/*
 * upstream: non-blocking connects to upstream servers and bridge backends.
 */
#include "upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "balance.h"
#include "conn.h"
#include "health.h"
#include "tls.h"

/* The host part of "host:port" or "[v6]:port", for SNI and verification. */
static void host_of(const char *addr, char *out, size_t cap)
{
	const char *start = addr[0] == '[' ? addr + 1 : addr;
	const char *end = addr[0] == '[' ? strchr(start, ']') : strrchr(start, ':');
	size_t n = end ? (size_t)(end - start) : strlen(start);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, start, n);
	out[n] = 0;
}

struct conn *upstream_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len,
			      struct tls_client *tls, const char *host)
{
	char name[256];
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	int one = 1; /* small heads and tunnel frames must not wait for Nagle */
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c;
	if (tls) {
		host_of(host, name, sizeof(name));
		c = tls_client_conn(tls, base, fd, name);
	} else {
		c = conn_new(base, fd, NULL, CONN_PLAIN);
	}
	if (c == NULL) {
		errno = errno ? errno : ENOMEM;
		return NULL;
	}
	if (conn_connect(c, sa, len) < 0) {
		int err = errno;
		conn_free(c);
		errno = err;
		return NULL;
	}
	return c;
}

int upstream_bridge_addr(const struct config_route *route, struct sockaddr_storage *ss,
			 socklen_t *len)
{
	if (route->bridge_unix == NULL) {
		memcpy(ss, &route->bridge.ss, sizeof(*ss));
		*len = route->bridge.len;
		return 0;
	}
	struct sockaddr_un *un = (struct sockaddr_un *)ss;
	size_t n = strlen(route->bridge_unix);
	if (n >= sizeof(un->sun_path))
		return -1;
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, route->bridge_unix, n + 1);
	*len = (socklen_t)sizeof(*un);
	return 0;
}

struct upstream_conn {
	struct upstream_idle *idle;
	struct conn *conn;
	struct upstream_conn *next, *prev;
};

static void idle_unlink(struct upstream_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		c->idle->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->idle->n--;
}

static void idle_drop(struct upstream_conn *c)
{
	idle_unlink(c);
	conn_free(c->conn);
	free(c);
}

/* A parked connection must stay silent: anything it says ends it. */
static void idle_read_cb(struct conn *conn, void *arg)
{
	idle_drop(arg);
}

static void idle_event_cb(struct conn *conn, short what, void *arg)
{
	idle_drop(arg);
}

void upstream_idle_park(struct upstream_idle *idle, struct conn *conn)
{
	struct upstream_conn *c = idle->n < idle->max ? calloc(1, sizeof(*c)) : NULL;
	if (c == NULL) {
		conn_free(conn);
		return;
	}
	c->idle = idle;
	c->conn = conn;
	c->next = idle->head;
	if (idle->head)
		idle->head->prev = c;
	idle->head = c;
	idle->n++;
	conn_setcb(conn, idle_read_cb, NULL, idle_event_cb, c);
	conn_set_read_high(conn, 0);
	conn_set_write_low(conn, 0);
	conn_set_timeouts(conn, idle->idle_ms, 0);
	conn_disable(conn, EV_WRITE);
	conn_enable(conn, EV_READ);
	conn_release_buffers(conn);
}

struct conn *upstream_idle_take(struct upstream_idle *idle)
{
	struct upstream_conn *c = idle->head;
	if (c == NULL)
		return NULL;
	struct conn *conn = c->conn;
	idle_unlink(c);
	free(c);
	conn_setcb(conn, NULL, NULL, NULL, NULL);
	conn_set_timeouts(conn, 0, 0);
	return conn;
}

void upstream_idle_drain(struct upstream_idle *idle)
{
	while (idle->head)
		idle_drop(idle->head);
}

/* ---- servers and picking ---- */

static struct upstream_server *server_find(struct upstream_server *reg, const char *upstream,
					   const struct config_addr *addr)
{
	for (; reg; reg = reg->next)
		if (strcmp(reg->upstream, upstream) == 0 && config_addr_equal(&reg->addr, addr))
			return reg;
	return NULL;
}

static struct upstream_server *server_get(struct upstream_server **reg,
					  const struct config_upstream *cfg,
					  const struct config_server *srv, uint64_t idle_ms,
					  struct health *health)
{
	struct upstream_server *s = server_find(*reg, cfg->name, &srv->addr);
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL ||
		    (s->upstream = strdup(cfg->name)) == NULL ||
		    (s->health = health_server_get(health, cfg->name, &srv->addr)) == NULL) {
			if (s)
				free(s->upstream);
			free(s);
			return NULL;
		}
		s->addr = srv->addr;
		s->next = *reg;
		*reg = s;
	}
	/* the newest generation's pool settings apply from now on */
	s->idle.max = cfg->keepalive;
	s->idle.idle_ms = idle_ms;
	s->refs++;
	return s;
}

static void server_put(struct upstream_server **reg, struct upstream_server *s)
{
	if (s == NULL || --s->refs > 0)
		return;
	upstream_idle_drain(&s->idle);
	health_server_put(s->health);
	for (struct upstream_server **p = reg; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	free(s->upstream);
	free(s);
}

int upstream_rt_init(struct upstream_rt *u, const struct config_upstream *cfg, uint64_t idle_ms,
		     const struct balance_ring *ring, struct health *health,
		     struct upstream_server **registry)
{
	unsigned weights[CONFIG_MAX_SERVERS];

	memset(u, 0, sizeof(*u));
	u->cfg = cfg;
	u->ring = ring;
	u->servers = calloc(cfg->n_servers + 1, sizeof(*u->servers));
	if (u->servers == NULL)
		return -1;
	for (size_t j = 0; j < cfg->n_servers; j++) {
		weights[j] = cfg->servers[j].weight;
		if ((u->servers[j] =
			 server_get(registry, cfg, &cfg->servers[j], idle_ms, health)) == NULL)
			return -1;
	}
	u->pool = balance_pool_new(weights, cfg->n_servers);
	return u->pool ? 0 : -1;
}

void upstream_rt_fini(struct upstream_rt *u, struct upstream_server **registry)
{
	for (size_t j = 0; u->servers && j < u->cfg->n_servers; j++)
		server_put(registry, u->servers[j]);
	free(u->servers);
	balance_pool_free(u->pool);
	memset(u, 0, sizeof(*u));
}

long upstream_pick(struct upstream_rt *u, uint64_t tried, const uint64_t *key, uint64_t rnd)
{
	bool skip[CONFIG_MAX_SERVERS];
	size_t load[CONFIG_MAX_SERVERS];
	size_t n = u->cfg->n_servers, up = 0, untried = 0;

	for (size_t i = 0; i < n; i++) {
		bool usable = health_server_usable(u->servers[i]->health, &u->cfg->health);
		up += usable;
		skip[i] = !usable || ((tried >> i) & 1);
		untried += !skip[i];
		load[i] = u->servers[i]->active;
	}
	if (up == 0)
		return UPSTREAM_ALL_DOWN;
	if (untried == 0)
		return -1;
	switch (u->cfg->balance) {
	case CONFIG_BALANCE_LEAST_CONN:
		return balance_pick_least(u->pool, load, skip);
	case CONFIG_BALANCE_RANDOM:
		return balance_pick_random2(u->pool, load, skip, rnd);
	case CONFIG_BALANCE_HASH:
		if (key && u->ring)
			return balance_ring_pick(u->ring, *key, skip);
		break; /* no key in this request: round robin */
	case CONFIG_BALANCE_ROUND_ROBIN:
		break;
	}
	return balance_pick(u->pool, skip);
}

void upstream_acquire(struct upstream_server *srv)
{
	srv->active++;
	health_server_sessions(srv->health, 1);
}

void upstream_release(struct upstream_server *srv)
{
	srv->active--;
	health_server_sessions(srv->health, -1);
}
