/*
 * check_tunnel: the byte tunnel over real sockets in one process. Two
 * connection pairs stand for client <-> proxy and proxy <-> backend; the
 * proxy-side ends are wrapped in conns as a session hands them over,
 * the test drives the other ends with non-blocking I/O while running the
 * event loop in a bounded loop. Every tunnel test runs in splice and copy
 * mode, over TCP and over AF_UNIX socketpairs.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "splice.h"
#include "conn.h"
#include "tunnel.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define MIB (1024 * 1024)
#define RUN_LIMIT_MS 20000 /* generous: valgrind */

/* ---- helpers: fds and sockets ---- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	ck_assert_ptr_nonnull(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n; /* includes ".", ".." and the DIR's own fd: constant offset */
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	ck_assert_int_ge(fl, 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* A connected TCP pair over 127.0.0.1: *a the connecting end, *b the accepted one. */
static void tcp_pair(int *a, int *b)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l, 0);
	ck_assert_int_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(l, 1), 0);
	ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sin, &sl), 0);
	*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(*a, 0);
	ck_assert_int_eq(connect(*a, (struct sockaddr *)&sin, sizeof(sin)), 0);
	*b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(*b, 0);
	close(l);
	set_nonblock(*a);
	set_nonblock(*b);
}

static void unix_pair(int *a, int *b)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	*a = sv[0];
	*b = sv[1];
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the test-side peers ---- */

struct peer {
	int fd;
	/* to send */
	const char *out;
	size_t out_len, out_off;
	bool shut_after_send; /* shutdown(SHUT_WR) once out is sent ... */
	bool shut_after_eof;  /* ... and only after EOF was seen */
	bool shut_done;
	/* received */
	char *in;
	size_t in_len, in_cap;
	bool eof;
	bool paused; /* a slow reader: reads nothing */
	int err;
};

static bool peer_io(struct peer *p)
{
	bool progress = false;
	if (p->fd < 0)
		return false;
	while (p->out_off < p->out_len) {
		size_t want = p->out_len - p->out_off;
		ssize_t n =
		    send(p->fd, p->out + p->out_off, want > 65536 ? 65536 : want, MSG_NOSIGNAL);
		if (n > 0) {
			p->out_off += (size_t)n;
			progress = true;
			continue;
		}
		if (n < 0 && errno != EAGAIN)
			p->err = errno;
		break;
	}
	if (p->shut_after_send && !p->shut_done && p->out_off == p->out_len &&
	    (!p->shut_after_eof || p->eof)) {
		ck_assert_int_eq(shutdown(p->fd, SHUT_WR), 0);
		p->shut_done = true;
		progress = true;
	}
	while (!p->eof && !p->paused && p->err == 0) {
		if (p->in_cap - p->in_len < 65536) {
			p->in_cap = p->in_cap ? p->in_cap * 2 : 131072;
			p->in = realloc(p->in, p->in_cap);
			ck_assert_ptr_nonnull(p->in);
		}
		ssize_t n = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
		if (n > 0) {
			p->in_len += (size_t)n;
			progress = true;
		} else if (n == 0) {
			p->eof = true;
			progress = true;
		} else {
			if (errno != EAGAIN)
				p->err = errno;
			break;
		}
	}
	return progress;
}

static void peer_send(struct peer *p, const char *data, size_t len, bool shut)
{
	p->out = data;
	p->out_len = len;
	p->out_off = 0;
	p->shut_after_send = shut;
}

/* ---- fixture ---- */

struct variant {
	const char *name;
	bool tcp;
	bool splice;
};

static const struct variant variants[] = {
    {"tcp splice", true, true},
    {"tcp copy", true, false},
    {"unix splice", false, true},
    {"unix copy", false, false},
};

struct fix {
	const struct variant *v;
	int fds_before;
	struct event_base *base;
	struct splice_pool *pool;
	int c_proxy, b_proxy; /* owned by the tunnel */
	struct peer client, backend;
	struct tunnel *t;
	int done_calls;
	char closed_by[32];
	char reason[128];
	uint64_t started_ms, done_ms;
};

static size_t fix_pool_cap = 4; /* idle pipes a fixture's pool keeps */

static void done_cb(void *arg, enum end_cause cause, const char *detail)
{
	struct fix *f = arg;
	f->done_calls++;
	f->done_ms = now_ms();
	/* as the access log says it; detail may be a stack buffer of the caller: copy now */
	snprintf(f->closed_by, sizeof(f->closed_by), "%s", end_side_str(cause));
	end_text(cause, detail, f->reason, sizeof(f->reason));
}

static struct conn *wrap(struct fix *f, int fd, const char *handed_over)
{
	struct conn *c = conn_new(f->base, fd, NULL, CONN_PLAIN);
	ck_assert_ptr_nonnull(c);
	conn_enable(c, EV_READ | EV_WRITE); /* as during the HTTP phase */
	if (handed_over)
		ck_assert_int_eq(evbuffer_add(conn_output(c), handed_over, strlen(handed_over)), 0);
	return c;
}

/* to_client / to_backend: bytes already due to that side (the 101, early data). */
static void fix_start(struct fix *f, int variant, const char *to_client, const char *to_backend,
		      uint64_t idle_ms, uint64_t max_ms)
{
	memset(f, 0, sizeof(*f));
	f->v = &variants[variant];
	f->fds_before = count_fds();
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
	f->pool = splice_pool_new(fix_pool_cap, 64);
	ck_assert_ptr_nonnull(f->pool);
	if (f->v->tcp) {
		tcp_pair(&f->client.fd, &f->c_proxy);
		tcp_pair(&f->b_proxy, &f->backend.fd);
	} else {
		unix_pair(&f->client.fd, &f->c_proxy);
		unix_pair(&f->b_proxy, &f->backend.fd);
	}
	struct conn *c = wrap(f, f->c_proxy, to_client);
	struct conn *b = wrap(f, f->b_proxy, to_backend);
	struct tunnel_params p = {
	    .base = f->base,
	    .mode = f->v->splice ? CONFIG_TUNNEL_SPLICE : CONFIG_TUNNEL_COPY,
	    .pipes = f->v->splice ? f->pool : NULL,
	    .idle_ms = idle_ms,
	    .max_ms = max_ms,
	    .done = done_cb,
	    .arg = f,
	};
	f->started_ms = now_ms();
	f->t = tunnel_start(&p, c, b);
	ck_assert_ptr_nonnull(f->t);
	ck_assert_str_eq(tunnel_mode_str(f->t), f->v->splice ? "splice" : "copy");
}

/* Run loop and peers until pred holds (true) or the limit passes (false). */
static bool fix_run(struct fix *f, bool (*pred)(struct fix *), uint64_t limit_ms)
{
	uint64_t end = now_ms() + limit_ms;
	while (!pred(f)) {
		if (now_ms() > end)
			return false;
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		bool progress = peer_io(&f->client);
		progress |= peer_io(&f->backend);
		if (!progress)
			usleep(200);
	}
	return true;
}

static bool never(struct fix *f)
{
	return false;
}

static bool is_done(struct fix *f)
{
	return f->done_calls > 0;
}

static bool both_eof_and_done(struct fix *f)
{
	return f->client.eof && f->backend.eof && f->done_calls > 0;
}

static bool backend_eof(struct fix *f)
{
	return f->backend.eof;
}

static bool client_eof(struct fix *f)
{
	return f->client.eof;
}

static void fix_end(struct fix *f)
{
	tunnel_free(f->t);
	event_base_loop(f->base, EVLOOP_NONBLOCK); /* nothing of the tunnel may run any more */
	/* the tunnel closed both proxy-side sockets */
	ck_assert_msg(!fd_is_open(f->c_proxy), "client socket left open");
	ck_assert_msg(!fd_is_open(f->b_proxy), "backend socket left open");
	if (f->client.fd >= 0)
		close(f->client.fd);
	if (f->backend.fd >= 0)
		close(f->backend.fd);
	free(f->client.in);
	free(f->backend.in);
	splice_pool_free(f->pool);
	event_base_free(f->base);
	ck_assert_int_eq(count_fds(), f->fds_before);
}

/* Deterministic payload, different per direction and position. */
static char *pattern(size_t len, unsigned seed)
{
	char *p = malloc(len);
	ck_assert_ptr_nonnull(p);
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (char)x;
	}
	return p;
}

static void assert_received(const struct peer *p, const char *prefix, const char *body,
			    size_t body_len, const char *who)
{
	size_t pl = prefix ? strlen(prefix) : 0;
	ck_assert_msg(p->in_len == pl + body_len, "%s received %zu bytes, want %zu", who, p->in_len,
		      pl + body_len);
	ck_assert_msg(pl == 0 || memcmp(p->in, prefix, pl) == 0, "%s: handed-over bytes not first",
		      who);
	ck_assert_msg(body_len == 0 || memcmp(p->in + pl, body, body_len) == 0,
		      "%s: payload corrupted", who);
}

/* ---- tunnel tests ---- */

#define TO_CLIENT "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"
#define TO_BACKEND                                                                                 \
	"\x81\x85\x01\x02\x03\x04"                                                                 \
	"early"

/* 1 MiB each way at once after the handed-over bytes; client closes first. */
START_TEST(test_bulk_both_ways)
{
	struct fix f;
	char *up = pattern(MIB, 1), *down = pattern(MIB, 2);
	fix_start(&f, _i, TO_CLIENT, TO_BACKEND, 0, 0);
	peer_send(&f.client, up, MIB, true);
	peer_send(&f.backend, down, MIB, true);
	f.backend.shut_after_eof = true; /* makes the client the first to close */
	ck_assert_msg(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS), "%s: stuck: up %zu down %zu",
		      f.v->name, f.backend.in_len, f.client.in_len);
	ck_assert_int_eq(f.client.err, 0);
	ck_assert_int_eq(f.backend.err, 0);
	assert_received(&f.backend, TO_BACKEND, up, MIB, "backend");
	assert_received(&f.client, TO_CLIENT, down, MIB, "client");
	ck_assert_str_eq(f.closed_by, "client");
	ck_assert_str_eq(f.reason, "client EOF");
	uint64_t nu, nd;
	tunnel_bytes(f.t, &nu, &nd);
	ck_assert_uint_eq(nu, strlen(TO_BACKEND) + MIB);
	ck_assert_uint_eq(nd, strlen(TO_CLIENT) + MIB);
	/* once only, even with the loop running on */
	fix_run(&f, never, 50);
	ck_assert_int_eq(f.done_calls, 1);
	fix_end(&f);
	free(up);
	free(down);
}
END_TEST

/* Handed-over bytes arrive first and exactly once, also with nothing after them. */
START_TEST(test_handover_only)
{
	struct fix f;
	fix_start(&f, _i, TO_CLIENT, TO_BACKEND, 0, 0);
	ck_assert(fix_run(&f, never, 100) == false);
	ck_assert_int_eq(f.done_calls, 0);
	assert_received(&f.client, TO_CLIENT, "", 0, "client");
	assert_received(&f.backend, TO_BACKEND, "", 0, "backend");
	peer_send(&f.client, "after", 5, true);
	peer_send(&f.backend, "AFTER", 5, true);
	f.backend.shut_after_eof = true;
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	assert_received(&f.client, TO_CLIENT, "AFTER", 5, "client");
	assert_received(&f.backend, TO_BACKEND, "after", 5, "backend");
	uint64_t nu, nd;
	tunnel_bytes(f.t, &nu, &nd);
	ck_assert_uint_eq(nu, strlen(TO_BACKEND) + 5);
	ck_assert_uint_eq(nd, strlen(TO_CLIENT) + 5);
	fix_end(&f);
}
END_TEST

/* A large handed-over buffer (more than a socket takes at once) still goes first. */
START_TEST(test_handover_large)
{
	struct fix f;
	size_t n = 4 * MIB;
	char *big = pattern(n + 1, 3);
	big[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (big[i] == '\0')
			big[i] = 'z';
	fix_start(&f, _i, big, NULL, 0, 0);
	peer_send(&f.backend, "tail", 4, true);
	peer_send(&f.client, "", 0, true);
	f.client.shut_after_eof = true;
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	assert_received(&f.client, big, "tail", 4, "client");
	ck_assert_str_eq(f.closed_by, "backend");
	ck_assert_str_eq(f.reason, "backend EOF");
	fix_end(&f);
	free(big);
}
END_TEST

/* Client half-closes; the backend sees EOF and can still send for a while. */
START_TEST(test_half_close_client_first)
{
	struct fix f;
	char *down = pattern(256 * 1024, 4);
	fix_start(&f, _i, NULL, NULL, 0, 0);
	peer_send(&f.client, "ping", 4, true);
	ck_assert(fix_run(&f, backend_eof, RUN_LIMIT_MS));
	assert_received(&f.backend, NULL, "ping", 4, "backend");
	ck_assert_int_eq(f.done_calls, 0);
	ck_assert(!f.client.eof);
	peer_send(&f.backend, down, 256 * 1024, false);
	ck_assert(fix_run(&f, never, 50) == false);
	ck_assert_int_eq(f.done_calls, 0);
	f.backend.shut_after_send = true;
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	assert_received(&f.client, NULL, down, 256 * 1024, "client");
	ck_assert_int_eq(f.done_calls, 1);
	ck_assert_str_eq(f.closed_by, "client");
	ck_assert_str_eq(f.reason, "client EOF");
	fix_end(&f);
	free(down);
}
END_TEST

START_TEST(test_half_close_backend_first)
{
	struct fix f;
	char *up = pattern(256 * 1024, 5);
	fix_start(&f, _i, NULL, NULL, 0, 0);
	peer_send(&f.backend, "bye", 3, true);
	ck_assert(fix_run(&f, client_eof, RUN_LIMIT_MS));
	assert_received(&f.client, NULL, "bye", 3, "client");
	ck_assert_int_eq(f.done_calls, 0);
	peer_send(&f.client, up, 256 * 1024, true);
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	assert_received(&f.backend, NULL, up, 256 * 1024, "backend");
	ck_assert_int_eq(f.done_calls, 1);
	ck_assert_str_eq(f.closed_by, "backend");
	ck_assert_str_eq(f.reason, "backend EOF");
	fix_end(&f);
	free(up);
}
END_TEST

START_TEST(test_idle_timeout)
{
	struct fix f;
	fix_start(&f, _i, NULL, NULL, 100, 0);
	ck_assert(fix_run(&f, is_done, RUN_LIMIT_MS));
	ck_assert_str_eq(f.closed_by, "proxy");
	ck_assert_str_eq(f.reason, "idle timeout");
	ck_assert_uint_ge(f.done_ms - f.started_ms, 95);
	fix_run(&f, never, 30);
	ck_assert_int_eq(f.done_calls, 1);
	fix_end(&f);
}
END_TEST

/* Traffic in either direction restarts the idle clock. */
START_TEST(test_idle_reset_by_traffic)
{
	struct fix f;
	fix_start(&f, _i, NULL, NULL, 150, 0);
	for (int i = 0; i < 12; i++) {
		struct peer *p = i % 2 ? &f.backend : &f.client;
		peer_send(p, "x", 1, false);
		fix_run(&f, never, 40);
		ck_assert_msg(f.done_calls == 0, "idle timeout despite traffic (round %d): %s", i,
			      f.reason);
	}
	ck_assert_uint_eq(f.client.in_len + f.backend.in_len, 12);
	uint64_t quiet = now_ms();
	ck_assert(fix_run(&f, is_done, RUN_LIMIT_MS));
	ck_assert_str_eq(f.reason, "idle timeout");
	ck_assert_uint_ge(f.done_ms - quiet, 100);
	fix_end(&f);
}
END_TEST

START_TEST(test_lifetime_limit)
{
	struct fix f;
	fix_start(&f, _i, NULL, NULL, 1000, 150);
	while (!f.done_calls && now_ms() - f.started_ms < RUN_LIMIT_MS) {
		peer_send(&f.client, "x", 1, false);
		fix_run(&f, is_done, 20);
	}
	ck_assert_str_eq(f.closed_by, "proxy");
	ck_assert_str_eq(f.reason, "lifetime limit");
	ck_assert_uint_ge(f.done_ms - f.started_ms, 145);
	fix_end(&f);
}
END_TEST

/* Abortive close (RST) by one side: an error naming that side. */
static void rst_case(int variant, bool client_side)
{
	struct fix f;
	char want[128];
	fix_start(&f, variant, NULL, NULL, 0, 0);
	if (!f.v->tcp) { /* no RST on AF_UNIX */
		fix_end(&f);
		return;
	}
	/* some traffic first, so both directions are established */
	peer_send(&f.client, "a", 1, false);
	peer_send(&f.backend, "b", 1, false);
	fix_run(&f, never, 30);
	struct peer *p = client_side ? &f.client : &f.backend;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	ck_assert_int_eq(setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(p->fd);
	p->fd = -1;
	ck_assert(fix_run(&f, is_done, RUN_LIMIT_MS));
	ck_assert_int_eq(f.done_calls, 1);
	ck_assert_str_eq(f.closed_by, client_side ? "client" : "backend");
	snprintf(want, sizeof(want), "error: %s", strerror(ECONNRESET));
	ck_assert_str_eq(f.reason, want);
	fix_run(&f, never, 30);
	ck_assert_int_eq(f.done_calls, 1);
	fix_end(&f);
}

START_TEST(test_rst_client)
{
	rst_case(_i, true);
}
END_TEST

START_TEST(test_rst_backend)
{
	rst_case(_i, false);
}
END_TEST

/* Freed before it finished (the session shutting down): nothing leaks. */
START_TEST(test_free_while_open)
{
	struct fix f;
	char *up = pattern(MIB, 6);
	fix_start(&f, _i, TO_CLIENT, TO_BACKEND, 0, 0);
	peer_send(&f.client, up, MIB, false);
	fix_run(&f, never, 20);
	ck_assert_int_eq(f.done_calls, 0);
	fix_end(&f);
	free(up);
}
END_TEST

/* Both ends close at once, with nothing in flight. */
START_TEST(test_both_close_at_once)
{
	struct fix f;
	fix_start(&f, _i, NULL, NULL, 0, 0);
	peer_send(&f.client, "", 0, true);
	peer_send(&f.backend, "", 0, true);
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	ck_assert_int_eq(f.done_calls, 1);
	ck_assert(strcmp(f.closed_by, "client") == 0 || strcmp(f.closed_by, "backend") == 0);
	ck_assert(strcmp(f.reason, "client EOF") == 0 || strcmp(f.reason, "backend EOF") == 0);
	ck_assert_int_eq(strncmp(f.reason, f.closed_by, strlen(f.closed_by)), 0);
	uint64_t nu, nd;
	tunnel_bytes(f.t, &nu, &nd);
	ck_assert_uint_eq(nu, 0);
	ck_assert_uint_eq(nd, 0);
	fix_end(&f);
}
END_TEST

/*
 * A reader that stops: the other side's EOF must wait until every byte before
 * it was written, and the tunnel must not end early.
 */
START_TEST(test_slow_reader)
{
	struct fix f;
	size_t n = 8 * MIB;
	char *down = pattern(n, 7);
	fix_start(&f, _i, TO_CLIENT, NULL, 0, 0);
	f.client.paused = true;
	peer_send(&f.backend, down, n, true);
	peer_send(&f.client, "", 0, true);
	f.client.shut_after_eof = true;
	fix_run(&f, never, 200);
	ck_assert_int_eq(f.done_calls, 0);
	ck_assert(!f.client.eof);
	f.client.paused = false;
	ck_assert(fix_run(&f, both_eof_and_done, RUN_LIMIT_MS));
	assert_received(&f.client, TO_CLIENT, down, n, "client");
	ck_assert_str_eq(f.closed_by, "backend");
	ck_assert_str_eq(f.reason, "backend EOF");
	fix_end(&f);
	free(down);
}
END_TEST

/* No pipe to be had (EMFILE): the splice pump falls back to a buffer. */
START_TEST(test_splice_without_pipes)
{
	struct fix f;
	struct rlimit old, low;
	int hold[64], n_hold = 0;
	char *up = pattern(MIB, 8), *down = pattern(MIB, 9);
	/*
	 * Under valgrind too: it emulates the lowered RLIMIT_NOFILE, its pipe2
	 * fails with EMFILE (leaving closed fd numbers in the array, which
	 * splice_pool_get overwrites with -1), and the fallback runs the same.
	 */
	fix_pool_cap = 0; /* the pool keeps no pipe: every fill asks for a new one */
	fix_start(&f, _i, TO_CLIENT, TO_BACKEND, 0, 0);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 64;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (int fd; n_hold < 64 && (fd = dup(0)) >= 0;)
		hold[n_hold++] = fd; /* take every free slot */
	int probe[2];
	ck_assert_int_eq(pipe(probe), -1);
	ck_assert_int_eq(errno, EMFILE);
	peer_send(&f.client, up, MIB, true);
	peer_send(&f.backend, down, MIB, true);
	f.backend.shut_after_eof = true;
	bool ok = fix_run(&f, both_eof_and_done, RUN_LIMIT_MS);
	while (n_hold > 0)
		close(hold[--n_hold]);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	fix_pool_cap = 4;
	ck_assert_msg(ok, "stuck without pipes: up %zu down %zu, done %d %s", f.backend.in_len,
		      f.client.in_len, f.done_calls, f.reason);
	assert_received(&f.backend, TO_BACKEND, up, MIB, "backend");
	assert_received(&f.client, TO_CLIENT, down, MIB, "client");
	ck_assert_str_eq(f.reason, "client EOF");
	fix_end(&f);
	free(up);
	free(down);
}
END_TEST

START_TEST(test_mode_selection)
{
	static const struct {
		enum config_tunnel_mode mode;
		bool with_pool;
		const char *want;
	} cases[] = {
	    {CONFIG_TUNNEL_SPLICE, true, "splice"},
	    {CONFIG_TUNNEL_SPLICE, false, "copy"},
	    {CONFIG_TUNNEL_COPY, true, "copy"},
	    {CONFIG_TUNNEL_COPY, false, "copy"},
	};
	for (size_t i = 0; i < N(cases); i++) {
		int before = count_fds(), a, b, c, d;
		struct event_base *base = event_base_new();
		struct splice_pool *pool = splice_pool_new(2, 64);
		tcp_pair(&a, &b);
		tcp_pair(&c, &d);
		struct tunnel_params p = {.base = base,
					  .mode = cases[i].mode,
					  .pipes = cases[i].with_pool ? pool : NULL,
					  .done = done_cb};
		struct tunnel *t = tunnel_start(&p, conn_new(base, b, NULL, CONN_PLAIN),
						conn_new(base, c, NULL, CONN_PLAIN));
		ck_assert_ptr_nonnull(t);
		ck_assert_str_eq(tunnel_mode_str(t), cases[i].want);
		tunnel_free(t);
		close(a);
		close(d);
		splice_pool_free(pool);
		event_base_free(base);
		ck_assert_int_eq(count_fds(), before);
	}
}
END_TEST

/* ---- splice pool ---- */

START_TEST(test_pool_reuse)
{
	int before = count_fds();
	struct splice_pool *p = splice_pool_new(2, 64);
	int a[2], b[2], c[2], d[2];
	ck_assert_ptr_nonnull(p);

	ck_assert_int_eq(splice_pool_get(p, a), 0);
	ck_assert_int_eq(count_fds(), before + 2);
	ck_assert(fcntl(a[0], F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(a[1], F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(a[0], F_GETFD) & FD_CLOEXEC);
	int a0 = a[0], a1 = a[1];

	/* an empty pipe goes back and is handed out again */
	splice_pool_put(p, a, 1);
	ck_assert_int_eq(a[0], -1);
	ck_assert_int_eq(a[1], -1);
	ck_assert(fd_is_open(a0));
	ck_assert_int_eq(splice_pool_get(p, b), 0);
	ck_assert_int_eq(b[0], a0);
	ck_assert_int_eq(b[1], a1);
	ck_assert_int_eq(count_fds(), before + 2);

	/* a pipe with bytes in it is closed, never reused */
	ck_assert_int_eq(write(b[1], "x", 1), 1);
	splice_pool_put(p, b, 0);
	ck_assert(!fd_is_open(a0));
	ck_assert(!fd_is_open(a1));
	ck_assert_int_eq(count_fds(), before);

	/* the pool keeps at most cap pipes */
	ck_assert_int_eq(splice_pool_get(p, a), 0);
	ck_assert_int_eq(splice_pool_get(p, b), 0);
	ck_assert_int_eq(splice_pool_get(p, c), 0);
	ck_assert_int_eq(count_fds(), before + 6);
	int c0 = c[0];
	splice_pool_put(p, a, 1);
	splice_pool_put(p, b, 1);
	splice_pool_put(p, c, 1); /* over cap: closed */
	ck_assert(!fd_is_open(c0));
	ck_assert_int_eq(count_fds(), before + 4);
	/* a pooled pipe is empty */
	ck_assert_int_eq(splice_pool_get(p, d), 0);
	char ch;
	ck_assert_int_eq(read(d[0], &ch, 1), -1);
	ck_assert_int_eq(errno, EAGAIN);
	splice_pool_put(p, d, 1);

	splice_pool_free(p);
	ck_assert_int_eq(count_fds(), before);
	splice_pool_free(NULL);
}
END_TEST

START_TEST(test_pool_cap_zero)
{
	int before = count_fds();
	struct splice_pool *p = splice_pool_new(0, 64);
	int a[2];
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(splice_pool_get(p, a), 0);
	splice_pool_put(p, a, 1);
	ck_assert_int_eq(count_fds(), before);
	splice_pool_free(p);
}
END_TEST

/* At most max pipes exist at once (idle + lent); past that get fails with
 * EMFILE and the tunnel copies, so pipes never eat a connection's descriptors. */
START_TEST(test_pool_max)
{
	int before = count_fds();
	struct splice_pool *p = splice_pool_new(4, 2);
	int a[2], b[2], c[2];
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(splice_pool_get(p, a), 0);
	ck_assert_int_eq(splice_pool_get(p, b), 0);
	errno = 0;
	ck_assert_int_eq(splice_pool_get(p, c), -1);
	ck_assert_int_eq(errno, EMFILE);
	ck_assert_int_eq(c[0], -1);
	ck_assert_int_eq(c[1], -1);
	ck_assert_int_eq(count_fds(), before + 4);
	/* an idle pipe counts too: returned empty, it is handed out again */
	int a0 = a[0];
	splice_pool_put(p, a, 1);
	ck_assert_int_eq(splice_pool_get(p, c), 0);
	ck_assert_int_eq(c[0], a0);
	/* a closed pipe frees its place */
	ck_assert_int_eq(write(b[1], "x", 1), 1);
	splice_pool_put(p, b, 0);
	ck_assert_int_eq(splice_pool_get(p, b), 0);
	ck_assert_int_eq(count_fds(), before + 4);
	errno = 0;
	ck_assert_int_eq(splice_pool_get(p, a), -1);
	ck_assert_int_eq(errno, EMFILE);
	splice_pool_put(p, b, 1);
	splice_pool_put(p, c, 1);
	splice_pool_free(p);
	ck_assert_int_eq(count_fds(), before);

	/* max 0: no pipe at all, nothing opened */
	p = splice_pool_new(8, 0);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(splice_pool_get(p, a), -1);
	ck_assert_int_eq(count_fds(), before);
	splice_pool_free(p);
}
END_TEST

/* splice_move: socket -> pipe -> socket, EAGAIN when empty, 0 at EOF. */
START_TEST(test_splice_move)
{
	int a, b, c, d, pfd[2];
	struct splice_pool *p = splice_pool_new(1, 64);
	tcp_pair(&a, &b);
	tcp_pair(&c, &d);
	ck_assert_int_eq(splice_pool_get(p, pfd), 0);
	errno = 0;
	ck_assert_int_eq(splice_move(b, pfd[1], 4096), -1);
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(write(a, "hello", 5), 5);
	ssize_t n = -1;
	for (int i = 0; i < 1000 && n < 0; i++) {
		n = splice_move(b, pfd[1], 4096);
		if (n < 0)
			usleep(1000);
	}
	ck_assert_int_eq(n, 5);
	ck_assert_int_eq(splice_move(pfd[0], c, 4096), 5);
	char buf[8];
	n = -1;
	for (int i = 0; i < 1000 && n < 0; i++) {
		n = read(d, buf, sizeof(buf));
		if (n < 0)
			usleep(1000);
	}
	ck_assert_int_eq(n, 5);
	ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
	shutdown(a, SHUT_WR);
	n = -1;
	for (int i = 0; i < 1000 && n < 0; i++) {
		n = splice_move(b, pfd[1], 4096);
		if (n < 0)
			usleep(1000);
	}
	ck_assert_int_eq(n, 0);
	splice_pool_put(p, pfd, 1);
	splice_pool_free(p);
	close(a);
	close(b);
	close(c);
	close(d);
}
END_TEST

static Suite *tunnel_suite(void)
{
	Suite *s = suite_create("tunnel");
	TCase *tc = tcase_create("tunnel");
	int nv = (int)N(variants);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_bulk_both_ways, 0, nv);
	tcase_add_loop_test(tc, test_handover_only, 0, nv);
	tcase_add_loop_test(tc, test_handover_large, 0, nv);
	tcase_add_loop_test(tc, test_half_close_client_first, 0, nv);
	tcase_add_loop_test(tc, test_half_close_backend_first, 0, nv);
	tcase_add_loop_test(tc, test_idle_timeout, 0, nv);
	tcase_add_loop_test(tc, test_idle_reset_by_traffic, 0, nv);
	tcase_add_loop_test(tc, test_lifetime_limit, 0, nv);
	tcase_add_loop_test(tc, test_rst_client, 0, nv);
	tcase_add_loop_test(tc, test_rst_backend, 0, nv);
	tcase_add_loop_test(tc, test_free_while_open, 0, nv);
	tcase_add_loop_test(tc, test_both_close_at_once, 0, nv);
	tcase_add_loop_test(tc, test_slow_reader, 0, nv);
	tcase_add_loop_test(tc, test_splice_without_pipes, 0, nv);
	tcase_add_test(tc, test_mode_selection);
	suite_add_tcase(s, tc);

	tc = tcase_create("splice_pool");
	tcase_add_test(tc, test_pool_reuse);
	tcase_add_test(tc, test_pool_cap_zero);
	tcase_add_test(tc, test_pool_max);
	tcase_add_test(tc, test_splice_move);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tunnel_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN); /* as main.c: a vanished peer is an error code */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
