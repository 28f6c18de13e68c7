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

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "balance.h"
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

/* A bufferevent for a plain socket of sa's family, not yet connected. */
static struct bufferevent *plain_bev(struct event_base *base, const struct sockaddr *sa)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		close(fd);
	return bev;
}

struct bufferevent *upstream_connect(struct event_base *base, const struct sockaddr *sa,
				     socklen_t len, struct tls_client *tls, const char *host)
{
	char name[256];
	struct bufferevent *bev;
	if (tls) {
		host_of(host, name, sizeof(name));
		bev = tls_client_bev(tls, base, name);
	} else {
		bev = plain_bev(base, sa);
	}
	if (bev == NULL) {
		errno = errno ? errno : ENOMEM;
		return NULL;
	}
	if (bufferevent_socket_connect(bev, sa, (int)len) < 0) {
		int err = errno;
		bufferevent_free(bev);
		errno = err;
		return NULL;
	}
	int one = 1; /* small heads and tunnel frames must not wait for Nagle */
	if (sa->sa_family != AF_UNIX)
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return bev;
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
	struct bufferevent *bev;
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
	bufferevent_free(c->bev);
	free(c);
}

/* A parked connection must stay silent: anything it says ends it. */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
	idle_drop(arg);
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
	idle_drop(arg);
}

void upstream_idle_park(struct upstream_idle *idle, struct bufferevent *bev)
{
	struct upstream_conn *c = idle->n < idle->max ? calloc(1, sizeof(*c)) : NULL;
	if (c == NULL) {
		bufferevent_free(bev);
		return;
	}
	c->idle = idle;
	c->bev = bev;
	c->next = idle->head;
	if (idle->head)
		idle->head->prev = c;
	idle->head = c;
	idle->n++;
	struct timeval tv = {(time_t)(idle->idle_ms / 1000),
			     (suseconds_t)(idle->idle_ms % 1000) * 1000};
	bufferevent_setcb(bev, idle_read_cb, NULL, idle_event_cb, c);
	bufferevent_setwatermark(bev, EV_READ | EV_WRITE, 0, 0);
	bufferevent_set_timeouts(bev, idle->idle_ms ? &tv : NULL, NULL);
	bufferevent_disable(bev, EV_WRITE);
	bufferevent_enable(bev, EV_READ);
}

struct bufferevent *upstream_idle_take(struct upstream_idle *idle)
{
	struct upstream_conn *c = idle->head;
	if (c == NULL)
		return NULL;
	struct bufferevent *bev = c->bev;
	idle_unlink(c);
	free(c);
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_set_timeouts(bev, NULL, NULL);
	return bev;
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
