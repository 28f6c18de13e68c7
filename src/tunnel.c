/*
 * tunnel: two directions (up: client -> backend, down: backend -> client),
 * each with its own pump, and one timer for idle and lifetime limits.
 *
 * Splice pump: raw fds and plain events. A direction first writes the bytes
 * handed over from the HTTP phase (pending), then loops splice(src -> pipe),
 * splice(pipe -> dst). It reads only when nothing is pending, so a slow
 * destination stops its source without any buffer growing. A pipe is held
 * only while it has bytes in it.
 *
 * Copy pump: the two conns, with a high-water mark on each output; used
 * when splice is off and for TLS.
 *
 * In both, EOF from a source becomes shutdown(SHUT_WR) on its destination
 * once all its bytes are written, and the tunnel ends when both directions
 * have ended or on the first error.
 */
#include "tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "conn.h"
#include "splice.h"

#define TUNNEL_CHUNK (64 * 1024)      /* bytes per splice/read call */
#define TUNNEL_ROUNDS 16	      /* pump rounds before yielding to other events */
#define TUNNEL_COPY_HIGH (256 * 1024) /* copy pump: output bytes before the source pauses */

struct tunnel;

/*
 * Splice pump: one event per socket (embedded, so an idle tunnel costs no
 * extra allocations), registered for the union of what the direction reading
 * from it and the direction writing to it are waiting for.
 */
struct tunnel_end {
	struct tunnel *t;
	int fd;
	short want; /* EV_READ | EV_WRITE as registered now; 0 = not registered */
	struct event ev;
};

struct tunnel_dir {
	struct tunnel *t;
	bool from_client; /* the up direction: the client is the source */
	int src, dst;
	/* splice pump */
	struct tunnel_end *src_end, *dst_end;
	bool want_read, want_write;
	struct evbuffer *pending;
	int pipe[2];
	size_t in_pipe;
	/* copy pump */
	struct conn *src_conn, *dst_conn;
	bool eof;  /* the source said EOF */
	bool done; /* ... and the destination got everything and a FIN */
	uint64_t bytes;
	struct timespec filled, moved;	  /* last bytes read from src, last written to dst */
	struct evbuffer_cb_entry *out_cb; /* copy pump: watches dst's output drain */
};

struct tunnel {
	struct tunnel_params p;
	bool splice;
	bool finished;
	struct tunnel_dir up, down;
	struct conn *client_conn, *backend_conn; /* copy pump only */
	struct tunnel_end ends[2];		 /* splice pump: client, backend */
	struct event timer;
	struct timespec started, last_active;
	struct tunnel_dir *first_eof; /* who half-closed first: names who closed */
};

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static uint64_t ms_since(const struct timespec *ts)
{
	struct timespec n;
	now(&n);
	return (uint64_t)((n.tv_sec - ts->tv_sec) * 1000 + (n.tv_nsec - ts->tv_nsec) / 1000000);
}

uint64_t tunnel_idle_ms(const struct tunnel *t)
{
	return ms_since(&t->last_active);
}

/* Bytes of d read and not yet written? */
static bool dir_has_pending(const struct tunnel_dir *d)
{
	if (d->dst_conn)
		return evbuffer_get_length(conn_output(d->dst_conn)) > 0;
	return d->in_pipe > 0 || (d->pending && evbuffer_get_length(d->pending) > 0);
}

/* How long d's destination has taken none of the bytes waiting for it. */
static uint64_t dir_stalled_ms(const struct tunnel_dir *d)
{
	if (d->done || !dir_has_pending(d))
		return 0;
	uint64_t moved = ms_since(&d->moved), filled = ms_since(&d->filled);
	return moved < filled ? moved : filled;
}

uint64_t tunnel_stalled_ms(const struct tunnel *t, bool *client_side)
{
	uint64_t up = dir_stalled_ms(&t->up), down = dir_stalled_ms(&t->down);
	*client_side = down >= up; /* down's destination is the client */
	return down >= up ? down : up;
}

static void tunnel_finish(struct tunnel *t, enum end_cause cause, const char *detail)
{
	if (t->finished)
		return;
	t->finished = true;
	event_del(&t->timer);
	for (int i = 0; i < 2; i++)
		if (t->ends[i].want)
			event_del(&t->ends[i].ev);
	if (t->client_conn)
		conn_disable(t->client_conn, EV_READ | EV_WRITE);
	if (t->backend_conn)
		conn_disable(t->backend_conn, EV_READ | EV_WRITE);
	t->p.done(t->p.arg, cause, detail);
}

/* A direction has delivered its EOF: the tunnel ends when both have. */
static void dir_done(struct tunnel_dir *d)
{
	struct tunnel *t = d->t;
	d->done = true;
	if (t->first_eof == NULL)
		t->first_eof = d;
	if (t->up.done && t->down.done)
		tunnel_finish(t, t->first_eof->from_client ? END_CLIENT_EOF : END_BACKEND_EOF,
			      NULL);
}

/* A socket failed: client_side says which one. */
static void dir_error(struct tunnel_dir *d, bool client_side, int err)
{
	tunnel_finish(d->t, client_side ? END_CLIENT_ERROR : END_BACKEND_ERROR, strerror(err));
}

static void touch(struct tunnel *t)
{
	now(&t->last_active);
}

/* ---- splice pump ---- */

static void dir_pump(struct tunnel_dir *d);

static void end_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tunnel_end *e = arg;
	struct tunnel *t = e->t;
	bool client = e == &t->ends[0];
	if ((what & EV_READ) && !t->finished)
		dir_pump(client ? &t->up : &t->down); /* this socket is its source */
	if ((what & EV_WRITE) && !t->finished)
		dir_pump(client ? &t->down : &t->up); /* ... and its destination */
}

/* Register the socket for what its two directions now wait for. */
static void end_update(struct tunnel_end *e)
{
	struct tunnel *t = e->t;
	bool client = e == &t->ends[0];
	const struct tunnel_dir *reader = client ? &t->up : &t->down;
	const struct tunnel_dir *writer = client ? &t->down : &t->up;
	short want =
	    (short)((reader->want_read ? EV_READ : 0) | (writer->want_write ? EV_WRITE : 0));
	if (want == e->want)
		return;
	if (e->want)
		event_del(&e->ev);
	e->want = want;
	if (want == 0)
		return;
	event_assign(&e->ev, t->p.base, e->fd, (short)(want | EV_PERSIST), end_event_cb, e);
	event_add(&e->ev, NULL);
}

static void dir_set_wait(struct tunnel_dir *d, bool read, bool write)
{
	d->want_read = read;
	d->want_write = write;
	end_update(d->src_end);
	end_update(d->dst_end);
}

/* Wait until the destination takes more (for_write) or the source has more. */
static void dir_wait(struct tunnel_dir *d, bool for_write)
{
	dir_set_wait(d, !for_write, for_write);
}

/* Write what is queued (handed-over bytes, then the pipe). 1 all out, 0 blocked, -1 error. */
static int dir_flush(struct tunnel_dir *d)
{
	while (d->pending && evbuffer_get_length(d->pending) > 0) {
		int n = evbuffer_write(d->pending, d->dst);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		d->bytes += (uint64_t)n;
		now(&d->moved);
	}
	if (d->pending) { /* all out: idle tunnels keep no buffer */
		evbuffer_free(d->pending);
		d->pending = NULL;
	}
	while (d->in_pipe > 0) {
		ssize_t n = splice_move(d->pipe[0], d->dst, d->in_pipe);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		d->in_pipe -= (size_t)n;
		d->bytes += (uint64_t)n;
		now(&d->moved);
	}
	return 1;
}

/* Read into a pipe; without a pipe (pool exhausted) read into pending. */
static ssize_t dir_fill(struct tunnel_dir *d)
{
	if (d->pipe[0] < 0 && splice_pool_get(d->t->p.pipes, d->pipe) < 0) {
		if (d->pending == NULL && (d->pending = evbuffer_new()) == NULL)
			return -1;
		return evbuffer_read(d->pending, d->src, TUNNEL_CHUNK);
	}
	ssize_t n = splice_move(d->src, d->pipe[1], TUNNEL_CHUNK);
	if (n > 0)
		d->in_pipe += (size_t)n;
	return n;
}

static void dir_release_pipe(struct tunnel_dir *d)
{
	if (d->pipe[0] >= 0)
		splice_pool_put(d->t->p.pipes, d->pipe, d->in_pipe == 0);
	d->in_pipe = 0;
}

static void dir_pump(struct tunnel_dir *d)
{
	bool drained = false;
	for (int round = 0; round < TUNNEL_ROUNDS && !d->t->finished; round++) {
		int f = dir_flush(d);
		if (f < 0) {
			dir_error(d, !d->from_client, errno);
			return;
		}
		if (f == 0) {
			dir_wait(d, true);
			return;
		}
		if (d->eof) {
			dir_release_pipe(d);
			dir_set_wait(d, false, false);
			shutdown(d->dst, SHUT_WR);
			dir_done(d);
			return;
		}
		if (drained) { /* a short read emptied the socket: no EAGAIN round trip */
			dir_release_pipe(d);
			dir_wait(d, false);
			return;
		}
		ssize_t n = dir_fill(d);
		if (n == 0) {
			d->eof = true;
		} else if (n < 0 && errno == EAGAIN) {
			dir_release_pipe(d); /* idle: give the pipe back */
			dir_wait(d, false);
			return;
		} else if (n < 0) {
			dir_error(d, d->from_client, errno);
			return;
		} else {
			drained = n < TUNNEL_CHUNK;
			touch(d->t);
			d->filled = d->t->last_active;
		}
	}
	/* yield to other tunnels; level-triggered readiness brings us back */
	if (!d->t->finished)
		dir_wait(d, d->in_pipe > 0 || (d->pending && evbuffer_get_length(d->pending) > 0));
}

static int dir_init_splice(struct tunnel_dir *d, struct evbuffer *out)
{
	if (evbuffer_get_length(out) > 0) {
		d->pending = evbuffer_new();
		if (d->pending == NULL)
			return -1;
		evbuffer_add_buffer(d->pending, out);
	}
	return 0;
}

/*
 * Write the handed-over bytes (the 101) now if the socket takes them, then
 * wait for what the direction needs next: no EPOLLOUT round trip. A failed
 * write waits for EV_WRITE too, so that the pump meets the error from the
 * loop: done() must not run before tunnel_start returns.
 */
static void dir_start(struct tunnel_dir *d)
{
	int flushed = d->pending ? dir_flush(d) : 1;
	dir_wait(d, flushed != 1);
}

/* Take the fds out of the HTTP-phase conns and free those. */
static int tunnel_start_splice(struct tunnel *t, struct conn *client, struct conn *backend)
{
	/* the bytes due to each side sit in the output of the side they go to */
	int rc = dir_init_splice(&t->up, conn_output(backend));
	if (rc == 0)
		rc = dir_init_splice(&t->down, conn_output(client));
	if (rc == 0) {
		for (int i = 0; i < 2; i++)
			t->ends[i] = (struct tunnel_end){.t = t, .fd = i ? t->up.dst : t->up.src};
		t->up.src_end = t->down.dst_end = &t->ends[0];
		t->up.dst_end = t->down.src_end = &t->ends[1];
		dir_start(&t->up);
		dir_start(&t->down);
	}
	/*
	 * Only now let the conns go: a socket that stays registered for the same
	 * events throughout costs no epoll_ctl (libevent changes the kernel's set
	 * only when the last event on an fd goes, or the first comes).
	 */
	conn_release_fd(client); /* the fds are t->up.src and t->up.dst */
	conn_release_fd(backend);
	return rc;
}

/* ---- copy pump ---- */

static struct tunnel_dir *dir_from_src(struct tunnel *t, struct conn *conn)
{
	return conn == t->client_conn ? &t->up : &t->down;
}

static struct tunnel_dir *dir_from_dst(struct tunnel *t, struct conn *conn)
{
	return conn == t->client_conn ? &t->down : &t->up;
}

/* The destination took bytes: progress for the send timeout. */
static void copy_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	if (info->n_deleted > 0)
		now(&((struct tunnel_dir *)arg)->moved);
}

static void copy_try_finish(struct tunnel_dir *d)
{
	if (d->eof && !d->done && evbuffer_get_length(conn_output(d->dst_conn)) == 0) {
		conn_shutdown_write(d->dst_conn); /* FIN, or close_notify over TLS */
		dir_done(d);
	}
}

static void copy_read_cb(struct conn *conn, void *arg)
{
	struct tunnel *t = arg;
	struct tunnel_dir *d = dir_from_src(t, conn);
	struct evbuffer *in = conn_input(conn);
	struct evbuffer *out = conn_output(d->dst_conn);
	if (t->finished)
		return;
	d->bytes += evbuffer_get_length(in);
	evbuffer_add_buffer(out, in);
	touch(t);
	d->filled = t->last_active;
	if (evbuffer_get_length(out) >= TUNNEL_COPY_HIGH) {
		conn_disable(conn, EV_READ);
		conn_set_write_low(d->dst_conn, TUNNEL_COPY_HIGH / 2);
	}
}

static void copy_write_cb(struct conn *conn, void *arg)
{
	struct tunnel *t = arg;
	struct tunnel_dir *d = dir_from_dst(t, conn);
	if (t->finished)
		return;
	if (d->eof) {
		conn_set_write_low(conn, 0);
		copy_try_finish(d);
		return;
	}
	conn_set_write_low(conn, 0);
	conn_enable(d->src_conn, EV_READ);
}

static void copy_event_cb(struct conn *conn, short what, void *arg)
{
	struct tunnel *t = arg;
	struct tunnel_dir *d = dir_from_src(t, conn);
	if (t->finished)
		return;
	if (what & CONN_EOF) {
		d->eof = true;
		conn_set_write_low(d->dst_conn, 0);
		copy_try_finish(d);
		return;
	}
	/* reading or writing, the error is on this socket */
	char why[160];
	tunnel_finish(t, conn == t->client_conn ? END_CLIENT_ERROR : END_BACKEND_ERROR,
		      conn_error(conn, why, sizeof(why)));
}

static int tunnel_start_copy(struct tunnel *t, struct conn *client, struct conn *backend)
{
	t->client_conn = client;
	t->backend_conn = backend;
	t->up.src_conn = t->down.dst_conn = client;
	t->up.dst_conn = t->down.src_conn = backend;
	t->up.bytes = evbuffer_get_length(conn_output(backend));
	t->down.bytes = evbuffer_get_length(conn_output(client));
	for (int i = 0; i < 2; i++) {
		struct conn *conn = i ? backend : client;
		conn_setcb(conn, copy_read_cb, copy_write_cb, copy_event_cb, t);
		conn_set_read_high(conn, TUNNEL_CHUNK);
		conn_set_write_low(conn, 0);
		conn_set_timeouts(conn, 0, 0);
		conn_set_read_size(conn, TUNNEL_CHUNK);
		conn_enable(conn, EV_READ | EV_WRITE);
	}
	t->up.out_cb = evbuffer_add_cb(conn_output(backend), copy_out_cb, &t->up);
	t->down.out_cb = evbuffer_add_cb(conn_output(client), copy_out_cb, &t->down);
	return t->up.out_cb && t->down.out_cb ? 0 : -1;
}

/* ---- common ---- */

static void timer_arm(struct tunnel *t)
{
	uint64_t wait = 0;
	if (t->p.idle_ms) {
		uint64_t idle = ms_since(&t->last_active);
		wait = idle >= t->p.idle_ms ? 1 : t->p.idle_ms - idle;
	}
	if (t->p.max_ms) {
		uint64_t age = ms_since(&t->started);
		uint64_t left = age >= t->p.max_ms ? 1 : t->p.max_ms - age;
		if (wait == 0 || left < wait)
			wait = left;
	}
	if (wait == 0)
		return;
	struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
	event_add(&t->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tunnel *t = arg;
	if (t->finished)
		return;
	if (t->p.max_ms && ms_since(&t->started) >= t->p.max_ms) {
		tunnel_finish(t, END_LIFETIME, NULL);
		return;
	}
	if (t->p.idle_ms && ms_since(&t->last_active) >= t->p.idle_ms) {
		tunnel_finish(t, END_IDLE_TIMEOUT, NULL);
		return;
	}
	timer_arm(t); /* there was traffic: sleep until the new deadline */
}

static void dir_setup(struct tunnel_dir *d, struct tunnel *t, bool from_client, int src, int dst)
{
	d->t = t;
	d->from_client = from_client;
	d->src = src;
	d->dst = dst;
	d->pipe[0] = d->pipe[1] = -1;
	now(&d->filled);
	d->moved = d->filled;
}

struct tunnel *tunnel_start(const struct tunnel_params *p, struct conn *client,
			    struct conn *backend)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->p = *p;
	t->splice = p->mode == CONFIG_TUNNEL_SPLICE && p->pipes != NULL;
	int cfd = conn_fd(client), bfd = conn_fd(backend);
	dir_setup(&t->up, t, true, cfd, bfd);
	dir_setup(&t->down, t, false, bfd, cfd);
	now(&t->started);
	t->last_active = t->started;
	evtimer_assign(&t->timer, p->base, timer_cb, t);
	int rc = t->splice ? tunnel_start_splice(t, client, backend)
			   : tunnel_start_copy(t, client, backend);
	if (rc < 0)
		goto fail;
	timer_arm(t);
	return t;
fail:
	/* only the splice start can fail, after freeing the conns; tunnel_free closes the fds */
	tunnel_free(t);
	return NULL;
}

static void dir_free(struct tunnel_dir *d)
{
	if (d->pending)
		evbuffer_free(d->pending);
	if (d->pipe[0] >= 0)
		splice_pool_put(d->t->p.pipes, d->pipe, d->in_pipe == 0);
}

void tunnel_free(struct tunnel *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < 2; i++)
		if (t->ends[i].want)
			event_del(&t->ends[i].ev);
	event_del(&t->timer);
	dir_free(&t->up);
	dir_free(&t->down);
	if (t->client_conn) {
		/* the buffers may outlive t (a deferred free): stop watching them */
		if (t->up.out_cb)
			evbuffer_remove_cb_entry(conn_output(t->backend_conn), t->up.out_cb);
		if (t->down.out_cb)
			evbuffer_remove_cb_entry(conn_output(t->client_conn), t->down.out_cb);
		conn_free(t->client_conn); /* closes its socket */
		conn_free(t->backend_conn);
	} else if (t->splice && t->up.src >= 0) {
		close(t->up.src);
		close(t->up.dst);
	}
	free(t);
}

void tunnel_tick(struct tunnel *t)
{
	if (t->client_conn) {
		conn_tick(t->client_conn);
		conn_tick(t->backend_conn);
	}
}

void tunnel_bytes(const struct tunnel *t, uint64_t *up, uint64_t *down)
{
	*up = t->up.bytes;
	*down = t->down.bytes;
}

const char *tunnel_mode_str(const struct tunnel *t)
{
	return t->splice ? "splice" : "copy";
}
