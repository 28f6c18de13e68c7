/* bench_load: single-threaded epoll load generator for the benchmark.
 *
 * Every WebSocket handshake is checked (status 101, Upgrade: websocket,
 * Connection: upgrade, exact Sec-WebSocket-Accept) and every echoed byte is
 * compared with what was sent. Any failure counts as an error; a run with
 * errors prints "ok": false and exits 1 so the runner reports it as failed.
 *
 * Workloads (-w):
 *   handshake   -c C concurrent slots: connect, upgrade, verify, close, repeat
 *   rtt         -c N tunnels, one 64-byte message in flight on each
 *   throughput  -c N tunnels streaming 64 KiB writes, window -W bytes per tunnel
 *   idle        -c N tunnels opened and held (-H seconds, default 1); RSS of --pids before/after; then
 *               every tunnel must echo 64 bytes
 *   http        -c C keep-alive connections, one GET in flight on each
 *   reload      -c N tunnels, then driven by commands on stdin (one per line) while
 *               the runner reloads the proxy: "go" starts traffic (one 64-byte
 *               message per tunnel every -i MS, paced, echo verified), "pause"
 *               stops it and waits for the echoes in flight, "check" makes every
 *               tunnel echo once more and ends; EOF or "quit" ends too. Prints
 *               "ready N", "going", "paused LOST ECHOES P99_US MAX_US" (this
 *               phase) on stdout as it gets there, then the JSON result. A tunnel
 *               that closes, stalls (no echo within 5 s) or echoes a wrong byte
 *               counts as lost; losses are reported, not fatal. -d caps the
 *               whole run (seconds).
 *
 * -T speaks TLS to the target (any workload; -S NAME sets the SNI name, the
 * certificate is not verified): every connection makes a full handshake (no
 * session resumption), so `-w handshake -T` measures TLS handshakes + upgrade
 * per second and `-w throughput -T` wss tunnel throughput.
 *
 * -N COUNT (handshake, http, throughput): a fixed count of operations for the
 * runner's syscall count (not timed), gated by stdin: after -u seconds of warm-up
 * the generator stops starting operations, waits until none is in flight, prints
 * "warm" and waits for a "go" line; then it starts exactly COUNT operations
 * (handshakes; requests over the -c connections; for throughput COUNT bytes,
 * split over the tunnels, all echoed and verified), waits for all of them, prints
 * "done N" and waits for an "end" line before it closes anything and prints the
 * JSON result. -d caps the counted phase (seconds).
 *
 * Every phase is bounded in time (-d, -s) and operations (-n). The proxy's CPU
 * time (utime+stime of --pids from /proc/PID/stat) is sampled at the start and
 * end of the measured window. Output: one JSON object on stdout. */
#include "bench.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sched.h>
#include <sys/resource.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

enum wl { W_HANDSHAKE, W_RTT, W_THROUGHPUT, W_IDLE, W_HTTP, W_RELOAD };

enum st {
	S_FREE,
	S_CONNECTING, /* waiting for connect() to complete */
	S_TLS,        /* TLS handshake in progress (-T) */
	S_HANDSHAKE,  /* request sent, reading the 101 */
	S_READY,      /* tunnel open, nothing expected */
	S_RTT,        /* message sent, reading the echo */
	S_THR,        /* streaming */
	S_HTTP,       /* GET sent, reading the response */
};

#define RBUF 4096
#define MSG 64
#define CHUNK 65536
#define PAT_LEN (1024 * 1024 + 4093) /* not a multiple of the chunk size */

struct gc {
	int fd, id;
	enum st st;
	uint32_t events;
	char accept[29];
	char *rb; /* heads and 64-byte echoes */
	size_t rlen;
	uint64_t t0;
	unsigned char msg[MSG];
	uint64_t seq;
	uint64_t woff, roff; /* throughput stream offsets */
	size_t want;         /* http: bytes of the full response once the head is parsed */
	int http_close;
	int busy;            /* http: a request is in flight */
	uint64_t wlimit;     /* throughput: write no further than this offset */
	uint64_t next; /* reload: when to send the next message */
	SSL *ssl;      /* -T */
};

static struct {
	enum wl wl;
	const char *host;
	int port;
	int conns;
	double duration, warmup, setup_timeout;
	uint64_t max_ops;
	size_t window;
	int pids[16];
	int npids;
	int setup_conc;
	int tls;
	const char *sni;
	double interval_ms; /* reload: per-tunnel message interval */
	double hold;        /* idle: seconds the tunnels are held before the second RSS sample */
	uint64_t fixed;     /* -N: fixed count (bytes for throughput), gated by stdin */
} o = {.interval_ms = 20,
       .hold = 1,
       .host = "127.0.0.1",
       .conns = 0,
       .duration = 3,
       .warmup = 0.5,
       .setup_timeout = 30,
       .max_ops = 5000000,
       .window = 256 * 1024,
       .setup_conc = 256};

static int ep;
static struct gc *conns;
static struct sockaddr_in dst;
static char req_head[256];
static int req_head_len;
static char http_req[256];
static int http_req_len;

static uint64_t errors;
static char first_err[256];
static int measuring; /* ops and samples count only while set */
static int running;   /* new operations may start */
static uint64_t ops;
static uint64_t bytes;
static double own_core_busy = -1; /* share of the generator's CPU busy while measuring */
static uint32_t *samples;
static size_t nsamples, maxsamples;
static int established, in_setup, setup_started, echoed;
static unsigned char *pat; /* 2 * PAT_LEN */
static unsigned char *iobuf;
static SSL_CTX *tls_ctx;
/* reload workload */
#define MAX_REASONS 4
static int nlost;
static double lost_at[4096]; /* CLOCK_MONOTONIC seconds of each loss */
static char lost_why[MAX_REASONS][224];
static uint64_t max_rtt_ns;
/* operations that may still start (-N: the count; else unlimited) */
static uint64_t budget = UINT64_MAX;

static int take(void)
{
	if (!budget)
		return 0;
	if (budget != UINT64_MAX)
		budget--;
	return 1;
}

static void err(struct gc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gc_close(struct gc *c);

static void err(struct gc *c, const char *fmt, ...)
{
	errors++;
	va_list ap;
	char m[200];
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	if (!first_err[0])
		snprintf(first_err, sizeof(first_err), "conn %d: %s", c ? c->id : -1, m);
	if (o.wl == W_RELOAD && c && c->st != S_FREE) {
		if (nlost < (int)(sizeof(lost_at) / sizeof(lost_at[0])))
			lost_at[nlost] = (double)now_ns() / 1e9;
		if (nlost < MAX_REASONS)
			snprintf(lost_why[nlost], sizeof(lost_why[0]), "conn %d: %s", c->id, m);
		nlost++;
	}
	if (c)
		gc_close(c);
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

/* CPU seconds of --pids so far */
static double proc_cpu(void)
{
	return proc_cpu_of(o.pids, o.npids);
}

static long proc_rss_kb(void)
{
	long total = 0;
	for (int i = 0; i < o.npids; i++) {
		char p[64], line[256];
		long v = -1;
		snprintf(p, sizeof(p), "/proc/%d/smaps_rollup", o.pids[i]);
		FILE *f = fopen(p, "r");
		if (f) {
			while (fgets(line, sizeof(line), f))
				if (sscanf(line, "Rss: %ld kB", &v) == 1)
					break;
			fclose(f);
		}
		if (v < 0) {
			snprintf(p, sizeof(p), "/proc/%d/status", o.pids[i]);
			f = fopen(p, "r");
			if (f) {
				while (fgets(line, sizeof(line), f))
					if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
						break;
				fclose(f);
			}
		}
		if (v > 0)
			total += v;
	}
	return total;
}

/* sum of VmRSS (/proc/PID/status) over --pids, kB */
static long proc_vmrss_kb(void)
{
	long total = 0;
	for (int i = 0; i < o.npids; i++) {
		char p[64], line[256];
		long v = -1;
		snprintf(p, sizeof(p), "/proc/%d/status", o.pids[i]);
		FILE *f = fopen(p, "r");
		if (f) {
			while (fgets(line, sizeof(line), f))
				if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
					break;
			fclose(f);
		}
		if (v > 0)
			total += v;
	}
	return total;
}

static void gc_events(struct gc *c, uint32_t ev)
{
	if (c->events == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

static void gc_close(struct gc *c)
{
	if (c->ssl) {
		SSL_free(c->ssl); /* no close_notify: the connection is dropped */
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd); /* close() also drops the epoll registration */
		c->fd = -1;
	}
	if (c->st == S_READY || c->st == S_RTT || c->st == S_THR)
		established--;
	c->st = S_FREE;
	c->rlen = 0;
}

static int gc_connect(struct gc *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err(NULL, "socket: %s", strerror(errno));
		return -1;
	}
	sock_tune(c->fd);
	c->t0 = now_ns();
	c->rlen = 0;
	c->st = S_CONNECTING;
	if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		err(c, "connect: %s", strerror(errno));
		return -1;
	}
	c->events = EPOLLOUT;
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
	return 0;
}

/* read()/write() semantics over TLS: EAGAIN when the record layer waits, 0 at EOF. */
static ssize_t tls_result(struct gc *c, int r)
{
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
		return 0;
	if (e != SSL_ERROR_SYSCALL) {
		unsigned long le = ERR_get_error();
		if (le && ERR_GET_REASON(le) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return 0;
		errno = EPROTO;
	}
	ERR_clear_error();
	return -1;
}

static ssize_t io_read(struct gc *c, void *b, size_t n)
{
	if (!c->ssl)
		return read(c->fd, b, n);
	int r = SSL_read(c->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
	return r > 0 ? r : tls_result(c, r);
}

static ssize_t io_write(struct gc *c, const void *b, size_t n)
{
	if (!c->ssl)
		return write(c->fd, b, n);
	int r = SSL_write(c->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
	return r > 0 ? r : tls_result(c, r);
}

static int full_write(struct gc *c, const void *d, size_t n)
{
	ssize_t w = io_write(c, d, n);
	if (w == (ssize_t)n)
		return 0;
	if (w < 0)
		err(c, "write: %s", strerror(errno));
	else
		err(c, "short write %zd of %zu", w, n);
	return -1;
}

static void on_connected(struct gc *c)
{
	int e = 0;
	socklen_t l = sizeof(e);
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
	if (e) {
		err(c, "connect: %s", strerror(e));
		return;
	}
	if (o.tls && !c->ssl) {
		c->ssl = SSL_new(tls_ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
			err(c, "SSL_new failed");
			return;
		}
		if (o.sni)
			SSL_set_tlsext_host_name(c->ssl, o.sni);
		SSL_set_connect_state(c->ssl);
		c->st = S_TLS;
	}
	if (c->st == S_TLS) {
		int r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			int se = SSL_get_error(c->ssl, r);
			if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
				gc_events(c, se == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
				return;
			}
			char why[160];
			ERR_error_string_n(ERR_get_error(), why, sizeof(why));
			ERR_clear_error();
			err(c, "TLS handshake: %s", why);
			return;
		}
	}
	if (o.wl == W_HTTP) {
		c->st = S_HTTP;
		c->busy = 0;
		if (running && take()) {
			c->t0 = now_ns();
			c->busy = 1;
			if (full_write(c, http_req, (size_t)http_req_len) < 0)
				return;
		}
		gc_events(c, EPOLLIN);
		return;
	}
	char key[25], buf[512];
	ws_make_key(key);
	ws_accept(key, 24, c->accept);
	int n = snprintf(buf, sizeof(buf), req_head, key);
	c->st = S_HANDSHAKE;
	if (full_write(c, buf, (size_t)n) == 0)
		gc_events(c, EPOLLIN);
}

static const char *head_end(const char *p, size_t n)
{
	for (size_t i = 3; i < n; i++)
		if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
			return p + i + 1;
	return NULL;
}

/* Reads what is available into rb. Returns -1 on error/EOF (conn closed). */
static int read_rb(struct gc *c, const char *what)
{
	if (c->rlen >= RBUF) {
		err(c, "%s: response too large", what);
		return -1;
	}
	ssize_t n = io_read(c, c->rb + c->rlen, RBUF - c->rlen);
	if (n > 0) {
		c->rlen += (size_t)n;
		return 0;
	}
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n == 0)
		err(c, "%s: EOF after %zu bytes", what, c->rlen);
	else
		err(c, "%s: read: %s", what, strerror(errno));
	return -1;
}

static void start_next(void);
static void rtt_send(struct gc *c);
static void thr_pump(struct gc *c);

static void on_upgraded(struct gc *c)
{
	switch (o.wl) {
	case W_HANDSHAKE:
		sample(c->t0);
		gc_close(c);
		if (running && take())
			gc_connect(c);
		return;
	default:
		c->st = S_READY;
		c->rlen = 0;
		established++;
		/* keep EPOLLIN armed: any byte or EOF on an idle tunnel is an error */
		start_next();
		return;
	}
}

static void on_handshake(struct gc *c)
{
	if (read_rb(c, "handshake") < 0)
		return;
	const char *end = head_end(c->rb, c->rlen);
	if (!end)
		return;
	size_t hl = (size_t)(end - c->rb);
	const char *v;
	size_t vl;
	if (c->rlen < 13 || memcmp(c->rb, "HTTP/1.1 101 ", 13) != 0) {
		int sl = (int)(memchr(c->rb, '\r', c->rlen) ? (char *)memchr(c->rb, '\r', c->rlen) - c->rb
							    : 40);
		err(c, "handshake: status line '%.*s'", sl > 80 ? 80 : sl, c->rb);
		return;
	}
	if (!hdr_find(c->rb, hl, "Upgrade", &v, &vl) || !token_has(v, vl, "websocket")) {
		err(c, "handshake: missing Upgrade: websocket");
		return;
	}
	if (!hdr_find(c->rb, hl, "Connection", &v, &vl) || !token_has(v, vl, "upgrade")) {
		err(c, "handshake: missing Connection: upgrade");
		return;
	}
	if (!hdr_find(c->rb, hl, "Sec-WebSocket-Accept", &v, &vl) || vl != 28 ||
	    memcmp(v, c->accept, 28) != 0) {
		err(c, "handshake: bad Sec-WebSocket-Accept");
		return;
	}
	if (c->rlen != hl) {
		err(c, "handshake: %zu unexpected bytes after 101", c->rlen - hl);
		return;
	}
	on_upgraded(c);
}

/* ---- rtt / idle echo: one 64-byte message at a time ---- */

static void rtt_send(struct gc *c)
{
	c->seq++;
	uint64_t x = ((uint64_t)c->id << 40) ^ c->seq;
	for (int i = 0; i < MSG; i += 8) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		memcpy(c->msg + i, &x, 8);
	}
	c->rlen = 0;
	c->st = S_RTT;
	c->t0 = now_ns();
	full_write(c, c->msg, MSG);
}

static void on_rtt(struct gc *c)
{
	ssize_t n = io_read(c, c->rb + c->rlen, MSG - c->rlen);
	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		err(c, "echo: %s after %zu of %d bytes", n == 0 ? "EOF" : strerror(errno), c->rlen,
		    MSG);
		return;
	}
	c->rlen += (size_t)n;
	if (c->rlen < MSG)
		return;
	if (memcmp(c->rb, c->msg, MSG) != 0) {
		err(c, "echo: payload mismatch (seq %llu)", (unsigned long long)c->seq);
		return;
	}
	if (o.wl == W_IDLE) {
		echoed++;
		c->st = S_READY;
		c->rlen = 0;
		return;
	}
	if (o.wl == W_RELOAD) {
		uint64_t now = now_ns();
		if (measuring && now - c->t0 > max_rtt_ns)
			max_rtt_ns = now - c->t0;
		sample(c->t0);
		echoed++;
		c->st = S_READY;
		c->rlen = 0;
		c->next = now + (uint64_t)(o.interval_ms * 1e6);
		return;
	}
	sample(c->t0);
	if (running && ops < o.max_ops)
		rtt_send(c);
	else
		c->st = S_READY;
}

/* ---- throughput ---- */

static void thr_pump(struct gc *c)
{
	size_t base = (size_t)c->id * 7919;
	for (int r = 0; r < (c->ssl ? 64 : 8); r++) { /* TLS: at most one 16 KiB record per read */
		ssize_t n = io_read(c, iobuf, 256 * 1024);
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			err(c, "stream read: %s", strerror(errno));
			return;
		}
		if (n == 0) {
			err(c, "stream: EOF after %llu bytes", (unsigned long long)c->roff);
			return;
		}
		if (c->roff + (uint64_t)n > c->woff) {
			err(c, "stream: %llu bytes echoed but only %llu sent",
			    (unsigned long long)(c->roff + (uint64_t)n), (unsigned long long)c->woff);
			return;
		}
		if (memcmp(iobuf, pat + (c->roff + base) % PAT_LEN, (size_t)n) != 0) {
			err(c, "stream: payload mismatch near offset %llu", (unsigned long long)c->roff);
			return;
		}
		c->roff += (uint64_t)n;
		if (measuring)
			bytes += (uint64_t)n;
	}
	int want_out = 0;
	while (running && c->woff - c->roff < o.window && c->woff < c->wlimit) {
		size_t len = CHUNK - (size_t)(c->woff % CHUNK);
		if (len > o.window - (c->woff - c->roff))
			len = o.window - (c->woff - c->roff);
		if (len > c->wlimit - c->woff)
			len = (size_t)(c->wlimit - c->woff);
		ssize_t w = io_write(c, pat + (c->woff + base) % PAT_LEN, len);
		if (w < 0) {
			if (errno == EAGAIN) {
				want_out = 1;
				break;
			}
			err(c, "stream write: %s", strerror(errno));
			return;
		}
		c->woff += (uint64_t)w;
	}
	gc_events(c, want_out ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

/* ---- http ---- */

static void on_http(struct gc *c)
{
	if (read_rb(c, "http") < 0)
		return;
	if (!c->want) {
		const char *end = head_end(c->rb, c->rlen);
		if (!end)
			return;
		size_t hl = (size_t)(end - c->rb);
		const char *v;
		size_t vl;
		if (c->rlen < 13 || memcmp(c->rb, "HTTP/1.1 200 ", 13) != 0) {
			err(c, "http: status line '%.*s'", 40, c->rb);
			return;
		}
		if (!hdr_find(c->rb, hl, "Content-Length", &v, &vl)) {
			err(c, "http: no Content-Length");
			return;
		}
		c->want = hl + strtoul(v, NULL, 10);
		c->http_close = hdr_find(c->rb, hl, "Connection", &v, &vl) && token_has(v, vl, "close");
		if (c->want > RBUF) {
			err(c, "http: response too large");
			return;
		}
	}
	if (c->rlen < c->want)
		return;
	if (c->rlen > c->want) {
		err(c, "http: %zu unexpected bytes after response", c->rlen - c->want);
		return;
	}
	if (c->want < 13 || memcmp(c->rb + c->want - 13, "hello, world\n", 13) != 0) {
		err(c, "http: wrong body");
		return;
	}
	sample(c->t0);
	c->want = 0;
	c->rlen = 0;
	c->busy = 0;
	if (c->http_close) { /* peer limits requests per connection: reconnect */
		gc_close(c);
		if (running)
			gc_connect(c);
		return;
	}
	if (running && ops < o.max_ops && take()) {
		c->t0 = now_ns();
		c->busy = 1;
		full_write(c, http_req, (size_t)http_req_len);
	}
}

static void on_event(struct gc *c, uint32_t ev)
{
	switch (c->st) {
	case S_CONNECTING:
		if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			on_connected(c);
		break;
	case S_TLS:
		on_connected(c);
		break;
	case S_HANDSHAKE:
		on_handshake(c);
		break;
	case S_READY: {
		char b[64];
		ssize_t n = io_read(c, b, sizeof(b));
		if (n < 0 && errno == EAGAIN)
			break;
		if (o.wl == W_RTT || o.wl == W_THROUGHPUT) {
			/* after the end of the measurement nothing is checked */
			if (running || in_setup)
				err(c, "idle tunnel: %s", n == 0 ? "closed by peer" : "unexpected data");
			else
				gc_close(c);
		} else
			err(c, "idle tunnel: %s", n == 0 ? "closed by peer"
						 : n < 0 ? strerror(errno)
							 : "unexpected data");
		break;
	}
	case S_RTT:
		on_rtt(c);
		break;
	case S_THR:
		thr_pump(c);
		break;
	case S_HTTP:
		on_http(c);
		break;
	default:
		break;
	}
}

static void loop_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(ep, evs, 256, timeout_ms);
	for (int i = 0; i < n; i++)
		on_event(evs[i].data.ptr, evs[i].events);
}

/* setup phase: open conns with at most setup_conc handshakes in flight */
static void start_next(void)
{
	while (in_setup && setup_started < o.conns &&
	       setup_started - established - (int)errors < o.setup_conc) {
		struct gc *c = &conns[setup_started++];
		gc_connect(c);
	}
}

static int setup_tunnels(void)
{
	uint64_t deadline = now_ns() + (uint64_t)(o.setup_timeout * 1e9);
	in_setup = 1;
	setup_started = 0;
	start_next();
	while (established < o.conns && !errors && now_ns() < deadline)
		loop_once(10);
	in_setup = 0;
	if (established < o.conns && !errors)
		err(NULL, "setup: only %d of %d tunnels after %.0f s", established, o.conns,
		    o.setup_timeout);
	return errors ? -1 : 0;
}

/* runs the event loop through warmup + measurement, sampling proxy CPU */
static void measure(double *secs, double *cpu)
{
	uint64_t t = now_ns();
	uint64_t t_meas = t + (uint64_t)(o.warmup * 1e9);
	uint64_t t_end = t_meas + (uint64_t)(o.duration * 1e9);
	double cpu0 = 0;
	uint64_t t_start = t_meas;
	/* the core this generator runs on (pinned by the runner, shared with the backend) */
	int core = sched_getcpu();
	unsigned long long b0 = 0, j0 = 0, b1, j1;
	running = 1;
	while (running) {
		loop_once(5);
		uint64_t now = now_ns();
		if (!measuring && now >= t_meas && running) {
			cpu0 = proc_cpu();
			if (core < 0 || cpu_jiffies(core, &b0, &j0) < 0)
				core = -1;
			t_start = now_ns();
			measuring = 1;
		}
		if (now >= t_end || errors >= 100 || ops >= o.max_ops)
			running = 0;
	}
	*secs = (double)(now_ns() - t_start) / 1e9;
	*cpu = proc_cpu() - cpu0;
	if (core >= 0 && cpu_jiffies(core, &b1, &j1) == 0 && j1 > j0)
		own_core_busy = (double)(b1 - b0) / (double)(j1 - j0);
	measuring = 0;
}

/* ---- -N: a fixed count of operations, gated by stdin (syscall counts) ---- */

/* 1 when no operation is in flight */
static int quiet(void)
{
	for (int i = 0; i < o.conns; i++) {
		struct gc *c = &conns[i];
		switch (o.wl) {
		case W_HANDSHAKE:
			if (c->st != S_FREE)
				return 0;
			break;
		case W_HTTP:
			if (c->st != S_HTTP || c->busy)
				return 0;
			break;
		default:
			if (c->st == S_THR && c->roff != c->woff)
				return 0;
		}
	}
	return 1;
}

/* waits for a line "want" on stdin (blocking: nothing is in flight meanwhile) */
static int await_line(const char *want)
{
	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = 0;
		if (!strcmp(line, want))
			return 0;
		fprintf(stderr, "bench_load: expected '%s', got '%s'\n", want, line);
	}
	err(NULL, "stdin closed while waiting for '%s'", want);
	return -1;
}

static int fixed_done(void)
{
	if (o.wl != W_THROUGHPUT)
		return ops >= o.fixed;
	for (int i = 0; i < o.conns; i++)
		if (conns[i].roff < conns[i].wlimit)
			return 0;
	return 1;
}

static void fixed_main(double *secs, double *cpu)
{
	/* warm-up: the workload as usual, then let everything in flight finish */
	uint64_t t = now_ns(), dl = t + (uint64_t)(o.warmup * 1e9);
	running = 1;
	if (o.wl == W_HANDSHAKE || o.wl == W_HTTP)
		for (int i = 0; i < o.conns; i++)
			gc_connect(&conns[i]);
	else
		for (int i = 0; i < o.conns; i++) {
			conns[i].st = S_THR;
			thr_pump(&conns[i]);
		}
	while (now_ns() < dl && !errors)
		loop_once(5);
	running = 0;
	dl = now_ns() + 20000000000ull;
	while (!quiet() && !errors && now_ns() < dl)
		loop_once(5);
	if (!errors && !quiet())
		err(NULL, "fixed: operations still in flight 20 s after the warm-up");
	/* let the server finish its side (closes after the last handshakes) */
	dl = now_ns() + 200000000ull;
	while (now_ns() < dl && !errors)
		loop_once(5);
	if (errors)
		return;
	printf("warm\n");
	fflush(stdout);
	if (await_line("go") < 0)
		return;
	ops = bytes = 0;
	nsamples = 0;
	measuring = 1;
	running = 1;
	double cpu0 = proc_cpu();
	uint64_t t0 = now_ns();
	dl = t0 + (uint64_t)(o.duration * 1e9);
	if (o.wl == W_THROUGHPUT) {
		uint64_t share = o.fixed / (uint64_t)o.conns;
		for (int i = 0; i < o.conns; i++) {
			struct gc *c = &conns[i];
			c->wlimit = c->woff + share + (i == 0 ? o.fixed % (uint64_t)o.conns : 0);
			thr_pump(c);
		}
	} else {
		budget = o.fixed;
		for (int i = 0; i < o.conns && budget; i++) {
			struct gc *c = &conns[i];
			if (o.wl == W_HANDSHAKE) {
				take();
				gc_connect(c);
			} else if (take()) {
				c->t0 = now_ns();
				c->busy = 1;
				full_write(c, http_req, (size_t)http_req_len);
			}
		}
	}
	while (!fixed_done() && !errors && now_ns() < dl)
		loop_once(5);
	*secs = (double)(now_ns() - t0) / 1e9;
	*cpu = proc_cpu() - cpu0;
	running = 0;
	measuring = 0;
	if (!errors && !fixed_done())
		err(NULL, "fixed: %llu of %llu %s done after %.0f s", (unsigned long long)(
		    o.wl == W_THROUGHPUT ? bytes : ops), (unsigned long long)o.fixed,
		    o.wl == W_THROUGHPUT ? "bytes" : "operations", o.duration);
	/* a few more ms for the server's side of the last operation */
	dl = now_ns() + 50000000ull;
	while (now_ns() < dl && !errors)
		loop_once(5);
	printf("done %llu\n", (unsigned long long)(o.wl == W_THROUGHPUT ? bytes : ops));
	fflush(stdout);
	await_line("end");
}

/* ---- reload: commands on stdin ---- */

static char ctl_tag; /* epoll data.ptr of stdin */
static char ctl_buf[256];
static size_t ctl_len;
static int ctl_eof;

/* one loop pass; returns a complete command line from stdin (in ctl_cmd) or "" */
static void reload_loop_once(int timeout_ms, char *cmd, size_t cap)
{
	struct epoll_event evs[256];
	cmd[0] = 0;
	int n = epoll_wait(ep, evs, 256, timeout_ms);
	for (int i = 0; i < n; i++) {
		if (evs[i].data.ptr != &ctl_tag) {
			on_event(evs[i].data.ptr, evs[i].events);
			continue;
		}
		ssize_t r = read(0, ctl_buf + ctl_len, sizeof(ctl_buf) - 1 - ctl_len);
		if (r <= 0) {
			if (r == 0 || errno != EAGAIN) {
				ctl_eof = 1;
				epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
			}
			continue;
		}
		ctl_len += (size_t)r;
	}
	char *nl = memchr(ctl_buf, '\n', ctl_len);
	if (!nl) {
		if (ctl_len == sizeof(ctl_buf) - 1)
			ctl_len = 0; /* overlong line: drop it */
		return;
	}
	size_t l = (size_t)(nl - ctl_buf);
	snprintf(cmd, cap, "%.*s", (int)l, ctl_buf);
	memmove(ctl_buf, nl + 1, ctl_len - l - 1);
	ctl_len -= l + 1;
}

static int count_state(enum st s)
{
	int k = 0;
	for (int i = 0; i < o.conns; i++)
		k += conns[i].st == s;
	return k;
}

/* waits up to secs for every echo in flight; a tunnel still waiting is lost */
static void reload_drain(double secs, const char *what)
{
	uint64_t dl = now_ns() + (uint64_t)(secs * 1e9);
	char cmd[64];
	while (count_state(S_RTT) && now_ns() < dl && !ctl_eof) {
		reload_loop_once(5, cmd, sizeof(cmd));
		if (cmd[0]) /* the runner waits for our answer: nothing should come */
			fprintf(stderr, "bench_load: command '%s' ignored while draining\n", cmd);
	}
	for (int i = 0; i < o.conns; i++)
		if (conns[i].st == S_RTT)
			err(&conns[i], "%s: no echo within %.0f s (%zu of %d bytes)", what, secs,
			    conns[i].rlen, MSG);
}

static int cmp_u32(const void *a, const void *b);

/* p99 and max (µs) of the echo latencies sampled since index from */
static void phase_stats(size_t from, double *p99, double *max)
{
	size_t n = nsamples - from;
	*p99 = *max = 0;
	if (!n)
		return;
	uint32_t *v = xmalloc(n * sizeof(*v));
	memcpy(v, samples + from, n * sizeof(*v));
	qsort(v, n, sizeof(*v), cmp_u32);
	size_t i = (size_t)(0.99 * (double)n);
	*p99 = v[i < n ? i : n - 1] / 1000.0;
	*max = v[n - 1] / 1000.0;
	free(v);
}

/* returns 1 once "check" ran */
static int reload_main(void)
{
	uint64_t hard_end = now_ns() + (uint64_t)(o.duration * 1e9);
	uint64_t ival = (uint64_t)(o.interval_ms * 1e6);
	int sending = 0, checked = 0;
	size_t phase = 0; /* first sample of the current "go" */
	char cmd[64];
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	struct epoll_event e = {.events = EPOLLIN, .data.ptr = &ctl_tag};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e) < 0) {
		err(NULL, "stdin: epoll_ctl: %s", strerror(errno));
		return 0;
	}
	printf("ready %d\n", established);
	fflush(stdout);
	while (!ctl_eof && !checked && now_ns() < hard_end) {
		reload_loop_once(sending ? 2 : 20, cmd, sizeof(cmd));
		uint64_t now = now_ns();
		if (sending)
			for (int i = 0; i < o.conns; i++)
				if (conns[i].st == S_READY && conns[i].next <= now)
					rtt_send(&conns[i]);
		if (!cmd[0])
			continue;
		if (!strcmp(cmd, "go")) {
			for (int i = 0; i < o.conns; i++) /* spread over one interval */
				conns[i].next = now + (ival ? rng_next() % ival : 0);
			sending = measuring = 1;
			phase = nsamples;
			printf("going\n");
		} else if (!strcmp(cmd, "pause")) {
			sending = 0;
			reload_drain(5, "echo stalled");
			measuring = 0;
			double p99, mx;
			phase_stats(phase, &p99, &mx);
			/* tunnels gone, echoes in this phase, their p99 and max latency (µs) */
			printf("paused %d %zu %.0f %.0f\n", o.conns - count_state(S_READY),
			       nsamples - phase, p99, mx);
		} else if (!strcmp(cmd, "check")) {
			sending = 0;
			reload_drain(5, "echo stalled");
			measuring = 0;
			for (int i = 0; i < o.conns; i++)
				if (conns[i].st == S_READY)
					rtt_send(&conns[i]);
			reload_drain(10, "final check");
			checked = 1;
		} else if (!strcmp(cmd, "quit")) {
			break;
		} else {
			printf("unknown command %s\n", cmd);
		}
		fflush(stdout);
	}
	if (!checked)
		err(NULL, "reload: ended before \"check\" (%s)", ctl_eof ? "stdin closed" : "time cap");
	return checked;
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
	return samples[i] / 1000.0; /* us */
}

static void json_str(const char *k, const char *v)
{
	printf("\"%s\": \"", k);
	for (; *v; v++)
		if (*v == '"' || *v == '\\')
			printf("\\%c", *v);
		else if ((unsigned char)*v < 0x20)
			printf(" ");
		else
			putchar(*v);
	printf("\", ");
}

static void usage(const char *a0)
{
	fprintf(stderr,
		"usage: %s -w handshake|rtt|throughput|idle|http|reload -p PORT [-a ADDR] [-c N]\n"
		"       [-d SECS] [-u WARMUP] [-n MAXOPS] [-W WINDOW] [-s SETUP_TIMEOUT] [-P pid,pid]\n"
		"       [-T [-S SNI]] [-i INTERVAL_MS] [-N FIXED_COUNT] [-H HOLD_SECS]\n",
		a0);
	exit(2);
}

int main(int argc, char **argv)
{
	int opt;
	const char *w = NULL;
	while ((opt = getopt(argc, argv, "w:p:a:c:d:u:n:W:s:P:TS:i:N:H:")) != -1) {
		switch (opt) {
		case 'w': w = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 'a': o.host = optarg; break;
		case 'c': o.conns = atoi(optarg); break;
		case 'd': o.duration = atof(optarg); break;
		case 'u': o.warmup = atof(optarg); break;
		case 'n': o.max_ops = strtoull(optarg, NULL, 10); break;
		case 'W': o.window = strtoull(optarg, NULL, 10); break;
		case 's': o.setup_timeout = atof(optarg); break;
		case 'T': o.tls = 1; break;
		case 'S': o.sni = optarg; break;
		case 'i': o.interval_ms = atof(optarg); break;
		case 'N': o.fixed = strtoull(optarg, NULL, 10); break;
		case 'H': o.hold = atof(optarg); break;
		case 'P':
			for (char *s = strtok(optarg, ","); s && o.npids < 16; s = strtok(NULL, ","))
				o.pids[o.npids++] = atoi(s);
			break;
		default: usage(argv[0]);
		}
	}
	if (!w || !o.port)
		usage(argv[0]);
	if (!strcmp(w, "handshake"))
		o.wl = W_HANDSHAKE;
	else if (!strcmp(w, "rtt"))
		o.wl = W_RTT;
	else if (!strcmp(w, "throughput"))
		o.wl = W_THROUGHPUT;
	else if (!strcmp(w, "idle"))
		o.wl = W_IDLE;
	else if (!strcmp(w, "http"))
		o.wl = W_HTTP;
	else if (!strcmp(w, "reload"))
		o.wl = W_RELOAD;
	else
		usage(argv[0]);
	if (o.conns <= 0)
		o.conns = o.wl == W_HANDSHAKE ? 64 : o.wl == W_RTT ? 1 : o.wl == W_THROUGHPUT ? 10
					  : o.wl == W_IDLE ? 5000 : o.wl == W_RELOAD ? 200 : 50;
	if (o.fixed && o.wl != W_HANDSHAKE && o.wl != W_HTTP && o.wl != W_THROUGHPUT) {
		fprintf(stderr, "bench_load: -N works with handshake, http and throughput\n");
		return 2;
	}
	if (o.window < CHUNK)
		o.window = CHUNK;
	if (o.window > 1024 * 1024)
		o.window = 1024 * 1024;

	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if ((rlim_t)o.conns + 64 > rl.rlim_cur) {
		fprintf(stderr, "bench_load: %d connections need more than %llu fds\n", o.conns,
			(unsigned long long)rl.rlim_cur);
		return 2;
	}
	rng_state ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);

	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)o.port);
	if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1)
		usage(argv[0]);
	req_head_len = snprintf(req_head, sizeof(req_head),
				"GET /ws HTTP/1.1\r\n"
				"Host: %s:%d\r\n"
				"Upgrade: websocket\r\n"
				"Connection: Upgrade\r\n"
				"Sec-WebSocket-Key: %%s\r\n"
				"Sec-WebSocket-Version: 13\r\n"
				"\r\n",
				o.host, o.port);
	http_req_len = snprintf(http_req, sizeof(http_req),
				"GET /bench HTTP/1.1\r\nHost: %s:%d\r\n\r\n", o.host, o.port);

	if (o.tls) {
		tls_ctx = SSL_CTX_new(TLS_client_method());
		if (!tls_ctx) {
			fprintf(stderr, "bench_load: cannot create a TLS context\n");
			return 2;
		}
		SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF); /* full handshakes */
		SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
						  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		static const unsigned char alpn[] = "\x08http/1.1";
		SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof(alpn) - 1);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)o.conns, sizeof(*conns));
	for (int i = 0; i < o.conns; i++) {
		conns[i].id = i;
		conns[i].fd = -1;
		conns[i].rb = xmalloc(RBUF);
		conns[i].wlimit = UINT64_MAX;
	}
	maxsamples = o.max_ops < 20000000 ? o.max_ops : 20000000;
	samples = xmalloc(maxsamples * sizeof(*samples));
	iobuf = xmalloc(256 * 1024);

	double secs = 0, cpu = 0;
	long rss0 = 0, rss1 = 0, vm0 = 0, vm1 = 0;
	int ntun = o.conns;
	int ok = 0;

	if (o.fixed) {
		if (o.wl == W_THROUGHPUT) {
			pat = xmalloc(2 * PAT_LEN);
			for (size_t i = 0; i < PAT_LEN; i += 8) {
				uint64_t x = rng_next();
				memcpy(pat + i, &x, PAT_LEN - i < 8 ? PAT_LEN - i : 8);
			}
			memcpy(pat + PAT_LEN, pat, PAT_LEN);
			if (setup_tunnels() == 0)
				fixed_main(&secs, &cpu);
		} else
			fixed_main(&secs, &cpu);
	} else
	switch (o.wl) {
	case W_HANDSHAKE:
	case W_HTTP: {
		/* slots start connecting at once; the warmup absorbs the ramp */
		running = 1;
		for (int i = 0; i < o.conns; i++)
			gc_connect(&conns[i]);
		measure(&secs, &cpu);
		break;
	}
	case W_RTT:
		if (setup_tunnels() == 0) {
			for (int i = 0; i < o.conns; i++)
				rtt_send(&conns[i]);
			measure(&secs, &cpu);
		}
		break;
	case W_THROUGHPUT:
		pat = xmalloc(2 * PAT_LEN);
		for (size_t i = 0; i < PAT_LEN; i += 8) {
			uint64_t x = rng_next();
			memcpy(pat + i, &x, PAT_LEN - i < 8 ? PAT_LEN - i : 8);
		}
		memcpy(pat + PAT_LEN, pat, PAT_LEN);
		if (setup_tunnels() == 0) {
			running = 1; /* thr_pump only writes while running */
			for (int i = 0; i < o.conns; i++) {
				conns[i].st = S_THR;
				thr_pump(&conns[i]);
			}
			measure(&secs, &cpu);
		}
		break;
	case W_IDLE: {
		/* warm the proxy with one tunnel so lazy one-time allocations are
		 * in "before", then open N and hold them */
		int n = o.conns;
		o.conns = 1;
		if (setup_tunnels() == 0) {
			rtt_send(&conns[0]);
			uint64_t dl = now_ns() + 5000000000ull;
			while (!echoed && !errors && now_ns() < dl)
				loop_once(10);
			if (!echoed && !errors)
				err(&conns[0], "warm-up echo timed out");
			gc_close(&conns[0]);
		}
		if (errors)
			break;
		established = 0;
		echoed = 0;
		uint64_t dl = now_ns() + 300000000ull;
		while (now_ns() < dl)
			loop_once(10);
		rss0 = proc_rss_kb();
		vm0 = proc_vmrss_kb();
		o.conns = n;
		double c0 = proc_cpu();
		uint64_t t0 = now_ns();
		if (setup_tunnels() < 0)
			break;
		secs = (double)(now_ns() - t0) / 1e9;
		cpu = proc_cpu() - c0;
		/* settle: the proxy finishes its side; idle tunnels must stay quiet */
		dl = now_ns() + (uint64_t)(o.hold * 1e9);
		while (now_ns() < dl && !errors)
			loop_once(10);
		rss1 = proc_rss_kb();
		vm1 = proc_vmrss_kb();
		if (errors)
			break;
		for (int i = 0; i < o.conns; i++)
			rtt_send(&conns[i]);
		dl = now_ns() + (uint64_t)(o.setup_timeout * 1e9);
		while (echoed + (int)errors < o.conns && now_ns() < dl)
			loop_once(10);
		if (echoed < o.conns && !errors)
			err(NULL, "idle: only %d of %d tunnels echoed in time", echoed, o.conns);
		ops = (uint64_t)echoed;
		break;
	}
	case W_RELOAD: {
		if (setup_tunnels() < 0)
			break;
		uint64_t t0 = now_ns();
		ok = reload_main();
		secs = (double)(now_ns() - t0) / 1e9;
		ops = (uint64_t)echoed;
		break;
	}
	}
	if (o.wl != W_RELOAD)
		ok = !errors;

	qsort(samples, nsamples, sizeof(*samples), cmp_u32);
	printf("{\"workload\": \"%s\", \"ok\": %s, \"errors\": %llu, ", w, ok ? "true" : "false",
	       (unsigned long long)errors);
	if (o.wl == W_RELOAD) {
		printf("\"lost\": %d, \"max_rtt_us\": %.1f, \"lost_at\": [", nlost,
		       (double)max_rtt_ns / 1e3);
		for (int i = 0; i < nlost && i < (int)(sizeof(lost_at) / sizeof(lost_at[0])); i++)
			printf("%s%.3f", i ? ", " : "", lost_at[i]);
		printf("], \"lost_why\": [");
		for (int i = 0; i < nlost && i < MAX_REASONS; i++) {
			printf("%s\"", i ? ", " : "");
			for (const char *v = lost_why[i]; *v; v++)
				if (*v == '"' || *v == '\\')
					printf("\\%c", *v);
				else if ((unsigned char)*v >= 0x20)
					putchar(*v);
			printf("\"");
		}
		printf("], ");
	}
	json_str("first_error", first_err);
	printf("\"conns\": %d, \"secs\": %.4f, \"ops\": %llu, \"rate\": %.1f, ", ntun, secs,
	       (unsigned long long)ops, secs > 0 ? (double)ops / secs : 0.0);
	printf("\"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, ", pct(0.5),
	       pct(0.99), pct(0.999), nsamples ? samples[nsamples - 1] / 1000.0 : 0.0);
	printf("\"bytes\": %llu, \"mbps\": %.1f, ", (unsigned long long)bytes,
	       secs > 0 ? (double)bytes / secs / 1e6 : 0.0);
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
