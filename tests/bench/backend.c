/* bench_backend: single-threaded epoll server for the benchmark.
 *
 * - GET with "Upgrade: websocket" + Sec-WebSocket-Key: answers 101 with the
 *   correct Sec-WebSocket-Accept, then echoes every raw byte it receives
 *   (no WebSocket framing: the tunnel carries bytes, the generator checks them).
 * - Any other request: a small keep-alive 200 ("hello, world\n"), pipelining ok.
 *
 * Usage: bench_backend -p PORT [-a 127.0.0.1]
 * Prints "ready PORT" on stdout once listening; exits on SIGTERM/SIGINT.
 * Per-connection memory is a small struct; a pending-output buffer is only
 * allocated when a write comes up short (then reading stops: backpressure). */
#include "bench.h"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/epoll.h>

#define HEAD_MAX 16384
#define IOBUF (256 * 1024)

static const char resp_200[] = "HTTP/1.1 200 OK\r\n"
			       "Content-Type: text/plain\r\n"
			       "Content-Length: 13\r\n"
			       "\r\n"
			       "hello, world\n";
static const char resp_400[] = "HTTP/1.1 400 Bad Request\r\n"
			       "Content-Length: 0\r\n"
			       "Connection: close\r\n"
			       "\r\n";

struct conn {
	int fd;
	int echo;       /* 1 once upgraded */
	int close_after; /* close when pending output is flushed */
	int eof;
	uint32_t events;
	char *head; /* HTTP phase input, HEAD_MAX, freed on upgrade */
	size_t hlen;
	size_t body_left; /* request body bytes to skip */
	char *pend;       /* pending output */
	size_t plen, poff, pcap;
};

static int ep;
static volatile sig_atomic_t stop;
static char *iobuf;

static void on_sig(int sig)
{
	(void)sig;
	stop = 1;
}

static void conn_free(struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->head);
	free(c->pend);
	free(c);
}

static void conn_events(struct conn *c, uint32_t ev)
{
	if (ev == c->events)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

/* Writes or queues data. Returns -1 on a fatal write error. */
static int conn_send(struct conn *c, const char *d, size_t n)
{
	if (c->plen == c->poff) {
		c->plen = c->poff = 0;
		while (n > 0) {
			ssize_t w = write(c->fd, d, n);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					break;
				return -1;
			}
			d += w;
			n -= (size_t)w;
		}
		if (n == 0)
			return 0;
	}
	if (c->plen + n > c->pcap) {
		size_t cap = c->pcap ? c->pcap : 65536;
		while (cap < c->plen + n)
			cap *= 2;
		c->pend = realloc(c->pend, cap);
		if (!c->pend)
			return -1;
		c->pcap = cap;
	}
	memcpy(c->pend + c->plen, d, n);
	c->plen += n;
	conn_events(c, EPOLLOUT); /* stop reading until flushed */
	return 0;
}

/* Handles complete request heads in c->head. Returns -1 to close. */
static int http_process(struct conn *c)
{
	for (;;) {
		if (c->body_left) {
			size_t k = c->body_left < c->hlen ? c->body_left : c->hlen;
			memmove(c->head, c->head + k, c->hlen - k);
			c->hlen -= k;
			c->body_left -= k;
			if (c->body_left)
				return 0;
		}
		char *end = NULL;
		for (size_t i = 3; i < c->hlen; i++)
			if (c->head[i] == '\n' && c->head[i - 1] == '\r' && c->head[i - 2] == '\n' &&
			    c->head[i - 3] == '\r') {
				end = c->head + i + 1;
				break;
			}
		if (!end) {
			if (c->hlen >= HEAD_MAX) {
				conn_send(c, resp_400, sizeof(resp_400) - 1);
				c->close_after = 1;
				return c->plen == c->poff ? -1 : 0;
			}
			return 0;
		}
		size_t hl = (size_t)(end - c->head);
		const char *v;
		size_t vl;
		int http10 = 0;
		const char *sp = memchr(c->head, '\n', hl);
		if (sp && sp - c->head >= 9 && memcmp(sp - 9, "HTTP/1.0", 8) == 0)
			http10 = 1;
		int upgrade = hdr_find(c->head, hl, "Upgrade", &v, &vl) && token_has(v, vl, "websocket");
		if (upgrade) {
			const char *key;
			size_t kl;
			if (!hdr_find(c->head, hl, "Sec-WebSocket-Key", &key, &kl) || kl != 24 ||
			    !(hdr_find(c->head, hl, "Connection", &v, &vl) && token_has(v, vl, "upgrade"))) {
				conn_send(c, resp_400, sizeof(resp_400) - 1);
				c->close_after = 1;
				return c->plen == c->poff ? -1 : 0;
			}
			char acc[29], out[256];
			ws_accept(key, kl, acc);
			int n = snprintf(out, sizeof(out),
					 "HTTP/1.1 101 Switching Protocols\r\n"
					 "Upgrade: websocket\r\n"
					 "Connection: Upgrade\r\n"
					 "Sec-WebSocket-Accept: %s\r\n\r\n",
					 acc);
			if (conn_send(c, out, (size_t)n) < 0)
				return -1;
			/* bytes past the head are tunnel data */
			size_t rest = c->hlen - hl;
			c->echo = 1;
			if (rest && conn_send(c, end, rest) < 0)
				return -1;
			free(c->head);
			c->head = NULL;
			c->hlen = 0;
			return 0;
		}
		int close_req = http10;
		if (hdr_find(c->head, hl, "Connection", &v, &vl)) {
			if (token_has(v, vl, "close"))
				close_req = 1;
			else if (token_has(v, vl, "keep-alive"))
				close_req = 0;
		}
		if (hdr_find(c->head, hl, "Content-Length", &v, &vl))
			c->body_left = strtoull(v, NULL, 10);
		if (close_req) {
			static const char r[] = "HTTP/1.1 200 OK\r\n"
						"Content-Type: text/plain\r\n"
						"Content-Length: 13\r\n"
						"Connection: close\r\n"
						"\r\n"
						"hello, world\n";
			if (conn_send(c, r, sizeof(r) - 1) < 0)
				return -1;
			c->close_after = 1;
			return c->plen == c->poff ? -1 : 0;
		}
		if (conn_send(c, resp_200, sizeof(resp_200) - 1) < 0)
			return -1;
		memmove(c->head, end, c->hlen - hl);
		c->hlen -= hl;
	}
}

/* Returns -1 when the connection should be freed. */
static int on_read(struct conn *c)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		if (c->plen != c->poff)
			return 0; /* backpressure: wait for EPOLLOUT */
		ssize_t n;
		if (c->echo)
			n = read(c->fd, iobuf, IOBUF);
		else
			n = read(c->fd, c->head + c->hlen, HEAD_MAX - c->hlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		if (n == 0) {
			c->eof = 1;
			if (c->plen == c->poff)
				return -1;
			c->close_after = 1;
			return 0;
		}
		if (c->echo) {
			if (conn_send(c, iobuf, (size_t)n) < 0)
				return -1;
			if ((size_t)n < IOBUF)
				return 0;
		} else {
			c->hlen += (size_t)n;
			if (http_process(c) < 0)
				return -1;
			if (c->close_after || c->echo)
				return 0;
		}
	}
	return 0;
}

static int on_write(struct conn *c)
{
	while (c->poff < c->plen) {
		ssize_t w = write(c->fd, c->pend + c->poff, c->plen - c->poff);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->poff += (size_t)w;
	}
	c->plen = c->poff = 0;
	if (c->close_after)
		return -1;
	if (c->pcap > 1024 * 1024) { /* don't keep big buffers around */
		free(c->pend);
		c->pend = NULL;
		c->pcap = 0;
	}
	conn_events(c, EPOLLIN);
	/* input may already be queued (head remainder) */
	if (!c->echo && c->hlen && http_process(c) < 0)
		return -1;
	return on_read(c);
}

int main(int argc, char **argv)
{
	int port = 0;
	const char *addr = "127.0.0.1";
	int opt;
	while ((opt = getopt(argc, argv, "p:a:")) != -1) {
		if (opt == 'p')
			port = atoi(optarg);
		else if (opt == 'a')
			addr = optarg;
		else {
			fprintf(stderr, "usage: %s -p PORT [-a ADDR]\n", argv[0]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_sig};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	iobuf = xmalloc(IOBUF);

	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, addr, &sin.sin_addr);
	if (bind(ls, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(ls, 4096) < 0) {
		perror("bench_backend: bind/listen");
		return 1;
	}
	socklen_t sl = sizeof(sin);
	getsockname(ls, (struct sockaddr *)&sin, &sl);
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &le);
	printf("ready %d\n", ntohs(sin.sin_port));
	fflush(stdout);

	struct epoll_event evs[512];
	while (!stop) {
		int n = epoll_wait(ep, evs, 512, 500);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				for (int k = 0; k < 256; k++) {
					int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (fd < 0)
						break;
					sock_tune(fd);
					c = calloc(1, sizeof(*c));
					c->fd = fd;
					c->head = xmalloc(HEAD_MAX);
					c->events = EPOLLIN;
					struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
				}
				continue;
			}
			int r = 0;
			if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
				/* still try to read pending data / EOF */
				r = (c->events & EPOLLOUT) ? on_write(c) : on_read(c);
				if (r == 0 && (evs[i].events & EPOLLERR))
					r = -1;
			} else if (evs[i].events & EPOLLOUT)
				r = on_write(c);
			else if (evs[i].events & EPOLLIN)
				r = on_read(c);
			if (r < 0)
				conn_free(c);
		}
	}
	return 0;
}
