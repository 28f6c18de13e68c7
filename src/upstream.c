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

void upstream_idle_move(struct upstream_idle *to, struct upstream_idle *from)
{
	while (from->head) {
		struct upstream_conn *c = from->head;
		if (to->n >= to->max) {
			idle_drop(c);
			continue;
		}
		idle_unlink(c);
		c->idle = to;
		c->prev = NULL;
		c->next = to->head;
		if (to->head)
			to->head->prev = c;
		to->head = c;
		to->n++;
	}
}

void upstream_idle_drain(struct upstream_idle *idle)
{
	while (idle->head)
		idle_drop(idle->head);
}
