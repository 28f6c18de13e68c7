/* bench_h2ws: RFC 8441 (WebSocket over HTTP/2) load client for the benchmark (issue 17).
 *
 * Single-threaded epoll, on nghttp2's client library (framing, HPACK, flow control)
 * over OpenSSL (ALPN h2; the certificate is not verified). -c N connections, each
 * with -m M streams; every stream is an extended CONNECT (:method CONNECT,
 * :protocol websocket, :scheme https, :path /ws, sec-websocket-version 13), sent
 * once the server's SETTINGS carry SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (else the
 * run fails), and must be answered :status 200. Then the stream carries WebSocket
 * frames in its DATA: each message is one masked binary frame with a 64-byte
 * payload (2 + 4 + 64 = 70 bytes, fresh mask and payload per message). The bench
 * backend echoes raw bytes, so the client checks that exactly the 70 bytes it sent
 * come back (a proxy that forwards frames untouched, as RFC 8441 proxies do).
 *
 * Workloads (-w):
 *   rtt   N x M tunnels, one message in flight on each; -u warm-up seconds, then
 *         -d measured seconds: msgs/s, round-trip percentiles, the proxy's CPU
 *         (utime+stime of -P pids) over the window.
 *   idle  one connection + one stream echoes once and closes (lazy one-time
 *         allocations land in "before"); 0.3 s later the proxy's RSS is taken
 *         (Rss of /proc/PID/smaps_rollup and VmRSS of /proc/PID/status, summed over
 *         -P pids); then N x M tunnels are opened and held -H seconds (default 1: switchyard
 *         gives idle TLS buffers back after an idle second), RSS taken again;
 *         then every tunnel must echo one message. rss_per_tunnel_b = growth / (N x M):
 *         a stream's own cost plus 1/M of its connection's (TLS, HPACK, h2 session).
 *
 * Any failure (no ALPN h2, no ENABLE_CONNECT_PROTOCOL, a status other than 200, a
 * stream reset or closed, a wrong echoed byte, an echo stalled 5 s) counts as an
 * error; a run with errors prints "ok": false and exits 1. Every phase is bounded
 * in time (-s setup timeout, -d). Output: one JSON object on stdout, with the
 * keys bench_load uses. */
#include "bench.h"

#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define PAYLOAD 64
#define FRAME (2 + 4 + PAYLOAD)
#define RBUF 16384
#define STALL_NS 5000000000ull

enum { W_RTT, W_IDLE };
enum cst { C_FREE, C_CONNECTING, C_TLS, C_SETTINGS, C_H2 };
enum sst { T_NONE, T_OPENING, T_OPEN, T_WAIT };

struct hconn;

struct hstream {
	struct hconn *c;
	int idx;
	int32_t id;
	enum sst st;
	int status;
	unsigned char msg[FRAME];
	size_t toff;  /* bytes of msg handed to nghttp2 */
	size_t tlen;  /* bytes of msg to send (0: nothing queued) */
	size_t roff;  /* echoed bytes checked */
	uint64_t t0;
	uint64_t seq;
};

struct hconn {
	int fd, id;
	enum cst st;
	uint32_t events;
	SSL *ssl;
	nghttp2_session *h2;
	unsigned char *ob; /* frames from nghttp2 not yet taken by SSL_write */
	size_t olen, ooff, ocap;
	struct hstream *s;
	int nstreams;
	int closing;
	int in_cb; /* inside nghttp2 (mem_recv/mem_send): a close waits until it returns */
	int dead;
};

static struct {
	int wl;
	const char *host, *sni;
	int port, conns, streams;
	double duration, warmup, setup_timeout, hold;
	int pids[16], npids;
	int window;
} o = {.host = "127.0.0.1", .sni = "bench.test", .conns = 10, .streams = 10, .duration = 3,
       .warmup = 0.5, .setup_timeout = 30, .hold = 1, .window = 1 << 20};

static int ep;
static SSL_CTX *tls_ctx;
static struct sockaddr_in dst;
static struct hconn *conns;
static int nconns;
static uint64_t errors;
static char first_err[256];
static int measuring, running;
static uint64_t ops;
static int established, echoed;
static uint32_t *samples;
static size_t nsamples, maxsamples;
static double own_core_busy = -1;
static unsigned char rbuf[RBUF];

static void conn_close(struct hconn *c);

static void err(struct hconn *c, struct hstream *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void err(struct hconn *c, struct hstream *s, const char *fmt, ...)
{
	errors++;
	va_list ap;
	char m[200];
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (!first_err[0]) {
		if (s)
			snprintf(first_err, sizeof(first_err), "conn %d stream %d: %s", c->id, s->id, m);
		else
			snprintf(first_err, sizeof(first_err), "conn %d: %s", c ? c->id : -1, m);
	}
	if (c && !s)
		conn_close(c);
}

/* ---- /proc sampling (as bench_load) ---- */

/* CPU seconds of -P's processes so far */
static double proc_cpu(void)
{
	return proc_cpu_of(o.pids, o.npids);
}

/* sum over -P pids of the first line of FILE that matches FMT (kB) */
static long proc_sum_kb(const char *file, const char *fmt)
{
	long total = 0;
	for (int i = 0; i < o.npids; i++) {
		char p[64], line[256];
		long v = -1;
		snprintf(p, sizeof(p), "/proc/%d/%s", o.pids[i], file);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, fmt, &v) == 1)
				break;
		fclose(f);
		if (v > 0)
			total += v;
	}
	return total;
}

/* ---- connections ---- */

static void set_events(struct hconn *c, uint32_t ev)
{
	if (c->events == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

static void conn_close(struct hconn *c)
{
	if (c->st == C_FREE)
		return;
	if (c->in_cb) {
		c->dead = 1;
		return;
	}
	c->closing = 1;
	for (int i = 0; i < c->nstreams; i++)
		if (c->s[i].st >= T_OPEN)
			established--;
	if (c->h2) {
		nghttp2_session_del(c->h2);
		c->h2 = NULL;
	}
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->st = C_FREE;
	c->olen = c->ooff = 0;
	c->closing = 0;
	c->dead = 0;
}

/* nghttp2 -> out buffer -> SSL_write, until nghttp2 has nothing more or TLS blocks */
static void conn_flush(struct hconn *c)
{
	if (c->st < C_SETTINGS)
		return;
	for (;;) {
		/* gather frames: one TLS record carries many small frames */
		while (c->olen < 16384) {
			const uint8_t *d;
			c->in_cb = 1;
			ssize_t n = nghttp2_session_mem_send(c->h2, &d);
			c->in_cb = 0;
			if (c->dead) {
				conn_close(c);
				return;
			}
			if (n < 0) {
				err(c, NULL, "nghttp2_session_mem_send: %s", nghttp2_strerror((int)n));
				return;
			}
			if (n == 0)
				break;
			if (c->olen + (size_t)n > c->ocap) {
				size_t cap = c->ocap ? c->ocap : 32768;
				while (cap < c->olen + (size_t)n)
					cap *= 2;
				c->ob = realloc(c->ob, cap);
				if (!c->ob) {
					fprintf(stderr, "out of memory\n");
					exit(2);
				}
				c->ocap = cap;
			}
			memcpy(c->ob + c->olen, d, (size_t)n);
			c->olen += (size_t)n;
		}
		if (c->ooff == c->olen) {
			c->olen = c->ooff = 0;
			set_events(c, EPOLLIN);
			return;
		}
		int r = SSL_write(c->ssl, c->ob + c->ooff, (int)(c->olen - c->ooff));
		if (r > 0) {
			c->ooff += (size_t)r;
			if (c->ooff == c->olen)
				c->olen = c->ooff = 0;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_WRITE) {
			set_events(c, EPOLLIN | EPOLLOUT);
			return;
		}
		if (e == SSL_ERROR_WANT_READ)
			return;
		err(c, NULL, "SSL_write failed (%d, %s)", e, strerror(errno));
		return;
	}
}

static void msg_new(struct hstream *s)
{
	s->seq++;
	uint64_t x = ((uint64_t)s->c->id << 48) ^ ((uint64_t)s->idx << 32) ^ s->seq ^ rng_next();
	unsigned char pay[PAYLOAD], mask[4];
	for (int i = 0; i < PAYLOAD; i += 8) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		memcpy(pay + i, &x, 8);
	}
	uint32_t m = (uint32_t)rng_next();
	memcpy(mask, &m, 4);
	s->msg[0] = 0x82;                  /* FIN, binary */
	s->msg[1] = 0x80 | PAYLOAD;        /* masked, 7-bit length */
	memcpy(s->msg + 2, mask, 4);
	for (int i = 0; i < PAYLOAD; i++)
		s->msg[6 + i] = pay[i] ^ mask[i & 3];
}

/* queues one message on the stream (the caller flushes the connection) */
static void stream_send(struct hstream *s)
{
	msg_new(s);
	s->toff = 0;
	s->tlen = FRAME;
	s->roff = 0;
	s->st = T_WAIT;
	s->t0 = now_ns();
	int rv = nghttp2_session_resume_data(s->c->h2, s->id);
	if (rv != 0 && rv != NGHTTP2_ERR_INVALID_ARGUMENT)
		err(s->c, s, "nghttp2_session_resume_data: %s", nghttp2_strerror(rv));
}

static ssize_t data_read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
			    uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	(void)h2, (void)id, (void)flags, (void)ud;
	struct hstream *s = src->ptr;
	if (s->toff >= s->tlen)
		return NGHTTP2_ERR_DEFERRED; /* the tunnel stays open; resumed at the next message */
	size_t n = s->tlen - s->toff;
	if (n > len)
		n = len;
	memcpy(buf, s->msg + s->toff, n);
	s->toff += n;
	return (ssize_t)n;
}

static struct hstream *stream_of(nghttp2_session *h2, int32_t id)
{
	return nghttp2_session_get_stream_user_data(h2, id);
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		     const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
	(void)flags, (void)ud;
	if (f->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct hstream *s = stream_of(h2, f->hd.stream_id);
	if (s && nl == 7 && !memcmp(name, ":status", 7) && vl == 3)
		s->status = (val[0] - '0') * 100 + (val[1] - '0') * 10 + (val[2] - '0');
	return 0;
}

static void submit_streams(struct hconn *c);

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
	struct hconn *c = ud;
	if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) &&
	    c->st == C_SETTINGS) {
		if (nghttp2_session_get_remote_settings(h2, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) !=
		    1) {
			err(c, NULL, "server SETTINGS without ENABLE_CONNECT_PROTOCOL = 1 (no RFC 8441)");
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		uint32_t mcs =
			nghttp2_session_get_remote_settings(h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
		if ((uint32_t)c->nstreams > mcs) {
			err(c, NULL, "server allows %u concurrent streams, %d asked (-m)", mcs,
			    c->nstreams);
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		c->st = C_H2;
		submit_streams(c);
		return 0;
	}
	if (f->hd.type == NGHTTP2_GOAWAY) {
		err(c, NULL, "GOAWAY from the server (error %u)", f->goaway.error_code);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_RESPONSE)
		return 0;
	struct hstream *s = stream_of(h2, f->hd.stream_id);
	if (!s || s->st != T_OPENING)
		return 0;
	if (s->status != 200) {
		err(c, s, "extended CONNECT answered :status %d, not 200", s->status);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
		err(c, s, "200 with END_STREAM");
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	s->st = T_OPEN;
	established++;
	return 0;
}

static void sample(uint64_t t0)
{
	if (!measuring)
		return;
	ops++;
	if (nsamples < maxsamples) {
		uint64_t d = now_ns() - t0;
		samples[nsamples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	}
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
		   void *ud)
{
	(void)flags;
	struct hconn *c = ud;
	struct hstream *s = stream_of(h2, id);
	if (!s)
		return 0;
	if (s->st != T_WAIT || s->roff + len > FRAME) {
		err(c, s, "%zu unexpected bytes on the tunnel", len);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if (memcmp(d, s->msg + s->roff, len) != 0) {
		err(c, s, "echo mismatch (message %llu, offset %zu)", (unsigned long long)s->seq,
		    s->roff);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	s->roff += len;
	if (s->roff < FRAME)
		return 0;
	s->st = T_OPEN;
	s->tlen = s->toff = 0;
	if (o.wl == W_IDLE) {
		echoed++;
		return 0;
	}
	sample(s->t0);
	if (running)
		stream_send(s);
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t code, void *ud)
{
	struct hconn *c = ud;
	struct hstream *s = stream_of(h2, id);
	if (!s || c->closing)
		return 0;
	if (s->st >= T_OPEN)
		established--;
	if (s->st != T_NONE)
		err(c, s, "stream closed by the server (error code %u, status %d)", code, s->status);
	s->st = T_NONE;
	return 0;
}

static nghttp2_session_callbacks *cbs;

static void submit_streams(struct hconn *c)
{
	char auth[64];
	snprintf(auth, sizeof(auth), "%s:%d", o.sni, o.port);
#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}
	nghttp2_nv nva[] = {NV(":method", "CONNECT"), NV(":protocol", "websocket"),
			    NV(":scheme", "https"),   NV(":path", "/ws"),
			    NV(":authority", auth),   NV("sec-websocket-version", "13")};
	for (int i = 0; i < c->nstreams; i++) {
		struct hstream *s = &c->s[i];
		nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
		s->tlen = s->toff = 0;
		s->status = 0;
		int32_t id = nghttp2_submit_request(c->h2, NULL, nva, sizeof(nva) / sizeof(nva[0]),
						    &prd, s);
		if (id < 0) {
			err(c, NULL, "nghttp2_submit_request: %s", nghttp2_strerror(id));
			return;
		}
		s->id = id;
		s->st = T_OPENING;
	}
}

static void h2_start(struct hconn *c)
{
	const unsigned char *alpn = NULL;
	unsigned int alen = 0;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
	if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
		err(c, NULL, "ALPN did not select h2 (got '%.*s')", (int)alen, alpn ? (char *)alpn : "");
		return;
	}
	if (nghttp2_session_client_new(&c->h2, cbs, c) != 0) {
		err(c, NULL, "nghttp2_session_client_new failed");
		return;
	}
	nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
				       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)o.window}};
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 4 * o.window);
	c->st = C_SETTINGS;
	conn_flush(c);
}

static void conn_tls(struct hconn *c)
{
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		h2_start(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		set_events(c, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
		return;
	}
	char why[160];
	ERR_error_string_n(ERR_get_error(), why, sizeof(why));
	ERR_clear_error();
	err(c, NULL, "TLS handshake: %s", why);
}

static void conn_read(struct hconn *c)
{
	for (;;) {
		int r = SSL_read(c->ssl, rbuf, RBUF);
		if (r > 0) {
			c->in_cb = 1;
			ssize_t n = nghttp2_session_mem_recv(c->h2, rbuf, (size_t)r);
			c->in_cb = 0;
			if (c->dead) {
				conn_close(c);
				return;
			}
			if (n < 0) {
				err(c, NULL, "nghttp2_session_mem_recv: %s", nghttp2_strerror((int)n));
				return;
			}
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		err(c, NULL, "connection closed by the server (%s)",
		    e == SSL_ERROR_ZERO_RETURN ? "close_notify"
		    : e == SSL_ERROR_SYSCALL   ? (errno ? strerror(errno) : "EOF")
					       : "TLS error");
		ERR_clear_error();
		return;
	}
	conn_flush(c);
}

static void on_event(struct hconn *c, uint32_t ev)
{
	if (c->st == C_FREE)
		return;
	if (c->st == C_CONNECTING) {
		int e = 0;
		socklen_t l = sizeof(e);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
		if (e) {
			err(c, NULL, "connect: %s", strerror(e));
			return;
		}
		c->ssl = SSL_new(tls_ctx);
		SSL_set_fd(c->ssl, c->fd);
		SSL_set_tlsext_host_name(c->ssl, o.sni);
		SSL_set_connect_state(c->ssl);
		c->st = C_TLS;
	}
	if (c->st == C_TLS) {
		conn_tls(c);
		return;
	}
	if (ev & EPOLLOUT)
		conn_flush(c);
	if (c->st != C_FREE && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		conn_read(c);
}

static int conn_open(struct hconn *c, int nstreams)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err(NULL, NULL, "socket: %s", strerror(errno));
		return -1;
	}
	sock_tune(c->fd);
	c->nstreams = nstreams;
	memset(c->s, 0, sizeof(*c->s) * (size_t)nstreams);
	for (int i = 0; i < nstreams; i++) {
		c->s[i].c = c;
		c->s[i].idx = i;
	}
	c->st = C_CONNECTING;
	if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		err(c, NULL, "connect: %s", strerror(errno));
		return -1;
	}
	c->events = EPOLLOUT;
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
	return 0;
}

static void loop_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(ep, evs, 256, timeout_ms);
	for (int i = 0; i < n; i++)
		on_event(evs[i].data.ptr, evs[i].events);
}

/* opens n connections x m streams; 0 once all are open */
static int setup(int n, int m)
{
	uint64_t deadline = now_ns() + (uint64_t)(o.setup_timeout * 1e9);
	for (int i = 0; i < n; i++)
		if (conn_open(&conns[i], m) < 0)
			return -1;
	while (established < n * m && !errors && now_ns() < deadline)
		loop_once(10);
	if (established < n * m && !errors)
		err(NULL, NULL, "setup: only %d of %d tunnels after %.0f s", established, n * m,
		    o.setup_timeout);
	return errors ? -1 : 0;
}

/* every open tunnel sends one message; runs until all echoed (or errors/timeout) */
static void echo_all(int n, double timeout)
{
	echoed = 0;
	int want = 0;
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < conns[i].nstreams; k++)
			if (conns[i].s[k].st == T_OPEN) {
				stream_send(&conns[i].s[k]);
				want++;
			}
		conn_flush(&conns[i]);
	}
	uint64_t dl = now_ns() + (uint64_t)(timeout * 1e9);
	while (echoed < want && !errors && now_ns() < dl)
		loop_once(10);
	if (echoed < want && !errors)
		err(NULL, NULL, "only %d of %d tunnels echoed within %.0f s", echoed, want, timeout);
}

static void stall_check(int n)
{
	uint64_t now = now_ns();
	for (int i = 0; i < n; i++)
		for (int k = 0; k < conns[i].nstreams; k++) {
			struct hstream *s = &conns[i].s[k];
			if (s->st == T_WAIT && now - s->t0 > STALL_NS) {
				err(&conns[i], s, "echo stalled for %.1f s", (double)(now - s->t0) / 1e9);
				return;
			}
		}
}

static void measure(double *secs, double *cpu)
{
	uint64_t t = now_ns();
	uint64_t t_meas = t + (uint64_t)(o.warmup * 1e9);
	uint64_t t_end = t_meas + (uint64_t)(o.duration * 1e9);
	uint64_t t_start = t_meas, last_check = t;
	double cpu0 = 0;
	int core = sched_getcpu();
	unsigned long long b0 = 0, j0 = 0, b1, j1;
	running = 1;
	for (int i = 0; i < nconns; i++) {
		for (int k = 0; k < conns[i].nstreams; k++)
			stream_send(&conns[i].s[k]);
		conn_flush(&conns[i]);
	}
	while (running) {
		loop_once(5);
		uint64_t now = now_ns();
		if (!measuring && now >= t_meas) {
			cpu0 = proc_cpu();
			if (core < 0 || cpu_jiffies(core, &b0, &j0) < 0)
				core = -1;
			t_start = now_ns();
			measuring = 1;
		}
		if (now - last_check > 1000000000ull) {
			stall_check(nconns);
			last_check = now;
		}
		if (now >= t_end || errors)
			running = 0;
	}
	*secs = (double)(now_ns() - t_start) / 1e9;
	*cpu = proc_cpu() - cpu0;
	if (core >= 0 && cpu_jiffies(core, &b1, &j1) == 0 && j1 > j0)
		own_core_busy = (double)(b1 - b0) / (double)(j1 - j0);
	measuring = 0;
	stall_check(nconns);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(double q)
{
	if (!nsamples)
		return 0;
	size_t i = (size_t)(q * (double)nsamples);
	if (i >= nsamples)
		i = nsamples - 1;
	return samples[i] / 1000.0;
}

static void usage(const char *a0)
{
	fprintf(stderr,
		"usage: %s -w rtt|idle -p PORT [-a ADDR] [-S SNI] [-c CONNS] [-m STREAMS_PER_CONN]\n"
		"       [-d SECS] [-u WARMUP] [-s SETUP_TIMEOUT] [-H HOLD_SECS] [-P pid,pid]\n",
		a0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *w = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "w:p:a:S:c:m:d:u:s:H:P:")) != -1) {
		switch (opt) {
		case 'w': w = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 'a': o.host = optarg; break;
		case 'S': o.sni = optarg; break;
		case 'c': o.conns = atoi(optarg); break;
		case 'm': o.streams = atoi(optarg); break;
		case 'd': o.duration = atof(optarg); break;
		case 'u': o.warmup = atof(optarg); break;
		case 's': o.setup_timeout = atof(optarg); break;
		case 'H': o.hold = atof(optarg); break;
		case 'P':
			for (char *p = strtok(optarg, ","); p && o.npids < 16; p = strtok(NULL, ","))
				o.pids[o.npids++] = atoi(p);
			break;
		default: usage(argv[0]);
		}
	}
	if (!w || !o.port || o.conns < 1 || o.streams < 1)
		usage(argv[0]);
	if (!strcmp(w, "rtt"))
		o.wl = W_RTT;
	else if (!strcmp(w, "idle"))
		o.wl = W_IDLE;
	else
		usage(argv[0]);

	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	rng_state ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)o.port);
	if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1)
		usage(argv[0]);

	tls_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	static const unsigned char alpn[] = "\x02h2";
	SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof(alpn) - 1);

	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);

	ep = epoll_create1(EPOLL_CLOEXEC);
	nconns = o.conns;
	conns = calloc((size_t)nconns, sizeof(*conns));
	for (int i = 0; i < nconns; i++) {
		conns[i].id = i;
		conns[i].fd = -1;
		conns[i].s = calloc((size_t)o.streams, sizeof(struct hstream));
	}
	maxsamples = 20000000;
	samples = xmalloc(maxsamples * sizeof(*samples));

	double secs = 0, cpu = 0;
	long rss0 = 0, rss1 = 0, vm0 = 0, vm1 = 0;
	int ntun = o.conns * o.streams;
	if (o.wl == W_RTT) {
		if (setup(nconns, o.streams) == 0)
			measure(&secs, &cpu);
	} else {
		/* warm the proxy with one connection and one tunnel, then close it */
		if (setup(1, 1) == 0) {
			echo_all(1, 5);
			conn_close(&conns[0]);
			established = 0;
		}
		if (!errors) {
			uint64_t dl = now_ns() + 300000000ull;
			while (now_ns() < dl)
				loop_once(10);
			rss0 = proc_sum_kb("smaps_rollup", "Rss: %ld kB");
			vm0 = proc_sum_kb("status", "VmRSS: %ld kB");
			double c0 = proc_cpu();
			uint64_t t0 = now_ns();
			if (setup(nconns, o.streams) == 0) {
				secs = (double)(now_ns() - t0) / 1e9;
				cpu = proc_cpu() - c0;
				dl = now_ns() + (uint64_t)(o.hold * 1e9);
				while (now_ns() < dl && !errors)
					loop_once(10);
				rss1 = proc_sum_kb("smaps_rollup", "Rss: %ld kB");
				vm1 = proc_sum_kb("status", "VmRSS: %ld kB");
				if (!errors)
					echo_all(nconns, o.setup_timeout);
				ops = (uint64_t)echoed;
			}
		}
	}
	int ok = !errors;
	qsort(samples, nsamples, sizeof(*samples), cmp_u32);
	printf("{\"workload\": \"h2ws-%s\", \"ok\": %s, \"errors\": %llu, \"first_error\": \"", w,
	       ok ? "true" : "false", (unsigned long long)errors);
	for (const char *v = first_err; *v; v++)
		if (*v == '"' || *v == '\\')
			printf("\\%c", *v);
		else
			putchar((unsigned char)*v < 0x20 ? ' ' : *v);
	printf("\", \"conns\": %d, \"connections\": %d, \"streams_per_conn\": %d, ", ntun, o.conns,
	       o.streams);
	printf("\"secs\": %.4f, \"ops\": %llu, \"rate\": %.1f, ", secs, (unsigned long long)ops,
	       o.wl == W_RTT && secs > 0 ? (double)ops / secs : 0.0);
	printf("\"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, ", pct(0.5),
	       pct(0.99), pct(0.999), nsamples ? samples[nsamples - 1] / 1000.0 : 0.0);
	printf("\"proxy_cpu_s\": %.3f, \"npids\": %d, ", cpu, o.npids);
	if (own_core_busy >= 0)
		printf("\"gen_core_busy\": %.3f, ", own_core_busy);
	printf("\"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"rss_per_tunnel_b\": %.1f, ", rss0,
	       rss1, o.wl == W_IDLE && ntun ? (double)(rss1 - rss0) * 1024.0 / ntun : 0.0);
	printf("\"vmrss_before_kb\": %ld, \"vmrss_after_kb\": %ld, \"vmrss_per_tunnel_b\": %.1f}\n",
	       vm0, vm1, o.wl == W_IDLE && ntun ? (double)(vm1 - vm0) * 1024.0 / ntun : 0.0);
	fflush(stdout);
	return ok ? 0 : 1;
}
