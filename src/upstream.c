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

static struct bufferevent *tls_connect(struct event_base *base, const struct sockaddr *sa,
				       socklen_t len, struct tls_client *tls, const char *addr)
{
	char host[256];
	host_of(addr, host, sizeof(host));
	struct bufferevent *bev = tls_client_bev(tls, base, host);
	if (bev == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	if (bufferevent_socket_connect(bev, sa, (int)len) < 0) {
		int err = errno;
		bufferevent_free(bev);
		errno = err;
		return NULL;
	}
	int one = 1;
	setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return bev;
}

struct bufferevent *upstream_connect(struct event_base *base, const struct sockaddr *sa,
				     socklen_t len, struct tls_client *tls, const char *host)
{
	int one = 1;
	if (tls)
		return tls_connect(base, sa, len, tls, host);
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
