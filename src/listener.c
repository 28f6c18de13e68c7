/*
 * listener: bound sockets over libevent's evconnlistener.
 */
#include "listener.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <event2/listener.h>

#include "log.h"

#define LISTENER_BACKLOG 1024

struct listener {
	struct evconnlistener *ev;
	listener_accept_cb on_accept;
	listener_full_cb on_full;
	void *arg;
	char name[64];
};

static void listener_accept_ev_cb(struct evconnlistener *ev, evutil_socket_t fd,
				  struct sockaddr *sa, int len, void *arg)
{
	struct listener *l = arg;
	l->on_accept(l->arg, fd, sa, (socklen_t)len);
}

static void listener_error_cb(struct evconnlistener *ev, void *arg)
{
	struct listener *l = arg;
	int err = errno;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		log_msg(LOG_LEVEL_WARN, 0, "accept on %s: %s; pausing", l->name, strerror(err));
		l->on_full(l->arg);
		return;
	}
	log_msg(LOG_LEVEL_WARN, 0, "accept on %s: %s", l->name, strerror(err));
}

int listener_bind(const struct config_addr *addr, bool reuseport)
{
	const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* SO_REUSEADDR: rebind at once after a restart despite TIME_WAIT */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(fd, sa, addr->len) < 0 || listen(fd, LISTENER_BACKLOG) < 0)
		goto fail;
	/* small heads and tunnel frames must not wait for Nagle; accepted sockets
	 * inherit it from here (one syscall less per connection) */
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:;
	int err = errno;
	log_msg(LOG_LEVEL_ERROR, 0, "cannot listen on %s: %s", addr->text, strerror(err));
	if (fd >= 0)
		close(fd);
	errno = err;
	return -1;
}

struct listener *listener_new(struct event_base *base, int fd, const char *name,
			      listener_accept_cb on_accept, listener_full_cb on_full, void *arg)
{
	struct listener *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		close(fd);
		return NULL;
	}
	l->on_accept = on_accept;
	l->on_full = on_full;
	l->arg = arg;
	snprintf(l->name, sizeof(l->name), "%s", name);
	/* backlog 0: the socket is listening already */
	l->ev = evconnlistener_new(base, listener_accept_ev_cb, l,
				   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l->ev == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "cannot accept on %s: %s", name, strerror(errno));
		close(fd);
		free(l);
		return NULL;
	}
	evconnlistener_set_error_cb(l->ev, listener_error_cb);
	return l;
}

void listener_free(struct listener *l)
{
	if (l == NULL)
		return;
	evconnlistener_free(l->ev);
	free(l);
}

void listener_pause(struct listener *l)
{
	if (l)
		evconnlistener_disable(l->ev);
}

void listener_resume(struct listener *l)
{
	if (l)
		evconnlistener_enable(l->ev);
}
