/*
 * upstream: non-blocking connects to upstream servers and bridge backends.
 */
#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>

struct bufferevent *upstream_connect(struct event_base *base, const struct sockaddr *sa,
				     socklen_t len)
{
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	if (bufferevent_socket_connect(bev, sa, (int)len) < 0) {
		int err = errno;
		bufferevent_free(bev);
		errno = err;
		return NULL;
	}
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
