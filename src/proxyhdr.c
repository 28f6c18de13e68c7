/*
 * proxyhdr: the PROXY header of a new connection (see proxyhdr.h). The
 * bytes are looked at with MSG_PEEK until the parser says the header is
 * complete, then exactly header_len bytes are read: what follows stays in
 * the socket for the TLS or HTTP code, which reads it as if nothing came
 * before.
 */
#include "proxyhdr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "proxyproto.h"

struct proxyhdr {
	int fd;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	struct event *ev;
	proxyhdr_done_cb done;
	void *arg;
	struct proxyhdr **head, *next, *prev;
};

static void proxyhdr_unlink_free(struct proxyhdr *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		*p->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	event_free(p->ev);
	free(p);
}

static void proxyhdr_finish(struct proxyhdr *p, const struct sockaddr *sa, socklen_t len,
			    const char *why)
{
	proxyhdr_done_cb done = p->done;
	void *arg = p->arg;
	int fd = p->fd;
	struct sockaddr_storage addr; /* sa may point into p */
	if (sa)
		memcpy(&addr, sa, len);
	else
		close(fd);
	proxyhdr_unlink_free(p);
	done(arg, fd, sa ? (struct sockaddr *)&addr : NULL, len, why);
}

/* 1 complete (consumed), 0 wait for more, -1 invalid or closed (why set). */
static int proxyhdr_try(struct proxyhdr *p, struct proxyproto_result *r, const char **why)
{
	uint8_t buf[PROXYPROTO_MAX];
	ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		*why = n == 0 ? "closed before a PROXY header" : strerror(errno);
		return -1;
	}
	/* buf holds PROXYPROTO_MAX bytes: with that many the parser never
	 * asks for more, so a peer cannot make us wait on a full buffer */
	int rc = proxyproto_parse(buf, (size_t)n, r, why);
	if (rc != 1)
		return rc;
	/* the header only: what follows is the client's */
	if (recv(p->fd, buf, r->header_len, 0) != (ssize_t)r->header_len) {
		*why = "cannot consume the PROXY header";
		return -1;
	}
	return 1;
}

static void proxyhdr_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxyhdr *p = arg;
	struct proxyproto_result r;
	const char *why = NULL;

	if (what & EV_TIMEOUT) {
		proxyhdr_finish(p, NULL, 0, "no PROXY header in time");
		return;
	}
	int rc = proxyhdr_try(p, &r, &why);
	if (rc == 0)
		return; /* called again when more bytes arrive */
	if (rc < 0) {
		proxyhdr_finish(p, NULL, 0, why);
		return;
	}
	if (r.local) /* the balancer's own connection (health check): its address */
		proxyhdr_finish(p, (struct sockaddr *)&p->peer, p->peer_len, NULL);
	else
		proxyhdr_finish(p, (struct sockaddr *)&r.src, r.src_len, NULL);
}

struct proxyhdr *proxyhdr_start(struct event_base *base, int fd, const struct sockaddr *sa,
				socklen_t len, uint64_t timeout_ms, proxyhdr_done_cb done,
				void *arg, struct proxyhdr **head)
{
	struct proxyhdr *p = calloc(1, sizeof(*p));
	if (p == NULL || len > sizeof(p->peer)) {
		free(p);
		close(fd);
		return NULL;
	}
	p->fd = fd;
	memcpy(&p->peer, sa, len);
	p->peer_len = len;
	p->done = done;
	p->arg = arg;
	/* edge-triggered: a peek leaves the bytes in the socket, so a level
	 * trigger would call again at once until more arrive */
	p->ev = event_new(base, fd, EV_READ | EV_PERSIST | EV_ET, proxyhdr_cb, p);
	struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
	if (p->ev == NULL || event_add(p->ev, timeout_ms ? &tv : NULL) < 0) {
		if (p->ev)
			event_free(p->ev);
		free(p);
		close(fd);
		return NULL;
	}
	p->head = head;
	p->next = *head;
	if (*head)
		(*head)->prev = p;
	*head = p;
	return p;
}

void proxyhdr_free_all(struct proxyhdr **head)
{
	while (*head)
		proxyhdr_finish(*head, NULL, 0, "stopping");
}
