/*
 * upstream: non-blocking connects to upstream servers.
 */
#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>

struct bufferevent *upstream_connect(struct event_base *base, const struct config_server *srv)
{
	int one = 1;
	int fd = socket(srv->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	if (bufferevent_socket_connect(bev, (const struct sockaddr *)&srv->addr.ss,
				       (int)srv->addr.len) < 0) {
		int err = errno;
		bufferevent_free(bev);
		errno = err;
		return NULL;
	}
	return bev;
}
