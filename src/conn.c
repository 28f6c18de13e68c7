/*
 * conn: a socket with buffers, plain or TLS (see conn.h).
 *
 * Two embedded events on the fd: ev_read is registered while the conn
 * reads (or TLS needs bytes), ev_write only while a write, a connect or
 * TLS waits for the socket. A flush of new output is not a registration:
 * the output's evbuffer callback makes ev_write active, so the write runs
 * from the loop right after the current callback, and only an EAGAIN adds
 * ev_write to epoll. With the changelist, a registration made and undone
 * within one loop turn costs no epoll_ctl at all.
 *
 * TLS: OpenSSL reads ahead (a read buffer that holds several records), so
 * bytes it holds are invisible to epoll: after a read that stopped with
 * bytes still buffered, ev_read is made active instead of waited for.
 *
 * A user callback may free the conn; `busy` defers that free until the
 * handler that called it returns, so no handler touches freed memory.
 *
 * Stream conns (an HTTP/2 stream, h2.c) have no socket: their events carry
 * no fd and serve as a timer plus a way to run from the loop. The owner's
 * bytes wait in `pend` until the conn reads (as OpenSSL's buffered bytes
 * do), so the owner opens its flow-control window only for what was taken;
 * a write hands the output to the owner, which takes what its window allows,
 * and an output it cannot take runs the write timeout as a blocked socket.
 */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define CONN_TLS_RECORD 16384 /* plaintext per TLS record: one SSL_write each */
#define CONN_TLS_ROUNDS 4     /* read_size reads per turn while OpenSSL holds more */

enum conn_state {
	CONN_S_IDLE,	   /* a TLS client before conn_connect */
	CONN_S_CONNECTING, /* TCP connect in progress */
	CONN_S_HANDSHAKE,  /* TLS handshake in progress */
	CONN_S_OPEN,
};

/* A TCP address (listeners are numeric IPv4 / IPv6). */
union conn_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* A stream conn's side (conn_new_stream). */
struct conn_stream {
	const struct conn_stream_ops *ops; /* NULL once conn_free told the owner */
	void *owner;
	struct evbuffer *pend; /* delivered by the owner, not yet in the input */
	bool eof;	       /* the peer ended its side, after pend */
	int fail_err;	       /* conn_stream_fail: reported from the loop */
	const char *tls_version;
	char *sni;
	union conn_addr local; /* the connection's, copied: a stream has no socket */
	socklen_t local_len;
};

struct conn {
	struct event_base *base;
	struct conn_stream *st; /* a stream conn: no fd, no SSL */
	union conn_addr *local; /* conn_local_addr's answer, kept (one getsockname) */
	int fd;
	SSL *ssl;
	enum conn_state state;
	bool reading, writing;	/* enabled by the owner */
	bool read_eof, failed;	/* the peer closed; an error or timeout stopped both ways */
	bool read_on, write_on; /* ev_read / ev_write added to the loop */
	bool write_blocked;	/* the last write met EAGAIN: wait for EV_WRITE */
	bool hs_wants_write;	/* the handshake waits to write (else to read) */
	bool read_wants_write;	/* SSL_read said WANT_WRITE */
	bool write_wants_read;	/* SSL_write said WANT_READ */
	bool tls_buffered;	/* OpenSSL holds read bytes epoll cannot see */
	bool trigger;		/* conn_trigger_read: call read_cb, read nothing */
	bool dead;		/* conn_free from a callback: freed when busy ends */
	bool active;		/* bytes moved since the last conn_tick */
	bool connect_probe;	/* conn_connect: look before waiting for EPOLLOUT */
	bool connected_at_once; /* ... connect() itself returned 0 */
	unsigned busy;		/* user callbacks running */
	size_t read_high, write_low, read_size;
	uint64_t read_ms, write_ms;
	int err;	       /* errno of the failure */
	unsigned long ssl_err; /* the TLS error of the failure */
	struct evbuffer *in, *out;
	struct event ev_read, ev_write;
	conn_data_cb read_cb, write_cb;
	conn_event_cb event_cb;
	void *arg;
};

static void conn_destroy(struct conn *c);

/* ---- registrations ---- */

static struct timeval *ms_tv(uint64_t ms, struct timeval *tv)
{
	if (ms == 0)
		return NULL;
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return tv;
}

static bool input_full(const struct conn *c)
{
	return c->read_high && evbuffer_get_length(c->in) >= c->read_high;
}

/* Bytes (or an EOF) wait where epoll cannot see them: in OpenSSL, or a stream's pend. */
static bool buffered(const struct conn *c)
{
	if (c->st)
		return evbuffer_get_length(c->st->pend) > 0 || (c->st->eof && !c->read_eof);
	return c->tls_buffered;
}

/* Does the conn want bytes from the socket now? */
static bool wants_read(const struct conn *c)
{
	if (c->failed || c->dead)
		return false;
	if (c->state == CONN_S_HANDSHAKE)
		return !c->hs_wants_write;
	if (c->state != CONN_S_OPEN)
		return false;
	return c->write_wants_read || (c->reading && !c->read_eof && !input_full(c));
}

static bool wants_write(const struct conn *c)
{
	if (c->failed || c->dead)
		return false;
	switch (c->state) {
	case CONN_S_CONNECTING:
		return !c->connect_probe;
	case CONN_S_HANDSHAKE:
		return c->hs_wants_write;
	case CONN_S_OPEN:
		return c->read_wants_write ||
		       (c->writing && c->write_blocked && evbuffer_get_length(c->out) > 0);
	case CONN_S_IDLE:
		break;
	}
	return false;
}

/* Add ev_read (restarting its timeout) or remove it, as wanted. */
static void read_register(struct conn *c, bool restart_timer)
{
	struct timeval tv;
	bool want = wants_read(c);
	if (want && (!c->read_on || restart_timer)) {
		bool timed = c->state == CONN_S_OPEN && c->reading;
		event_add(&c->ev_read, ms_tv(timed ? c->read_ms : 0, &tv));
		c->read_on = true;
	} else if (!want && c->read_on) {
		event_del(&c->ev_read);
		c->read_on = false;
	}
	/* bytes OpenSSL (or a stream's owner) already holds: no readiness will announce them */
	if (want && buffered(c) && c->reading && !input_full(c))
		event_active(&c->ev_read, EV_READ, 1);
}

static void write_register(struct conn *c, bool restart_timer)
{
	struct timeval tv;
	bool want = wants_write(c);
	if (want && (!c->write_on || restart_timer)) {
		bool timed = c->state == CONN_S_OPEN;
		event_add(&c->ev_write, ms_tv(timed ? c->write_ms : 0, &tv));
		c->write_on = true;
	} else if (!want && c->write_on) {
		event_del(&c->ev_write);
		c->write_on = false;
	}
}

/* New output: write it from the loop, once the current callback is over. */
static void flush_soon(struct conn *c)
{
	if (c->state == CONN_S_OPEN && c->writing && !c->failed && !c->dead && !c->write_on &&
	    evbuffer_get_length(c->out) > 0)
		event_active(&c->ev_write, EV_WRITE, 1);
}

/* ---- calling the owner ---- */

/*
 * Around everything that may call the owner back: busy_begin, then
 * busy_end, which frees a conn the owner freed meanwhile (once no handler
 * of ours is on the stack any more) and returns false when it is gone.
 */
static void busy_begin(struct conn *c)
{
	c->busy++;
}

static bool busy_end(struct conn *c)
{
	c->busy--;
	if (c->dead && c->busy == 0) {
		conn_destroy(c);
		return false;
	}
	return !c->dead;
}

/* Each returns false when the callback freed the conn (it is then gone). */
static bool call_event(struct conn *c, short what)
{
	if (c->event_cb == NULL)
		return true;
	busy_begin(c);
	c->event_cb(c, what, c->arg);
	return busy_end(c);
}

static bool call_data(struct conn *c, conn_data_cb cb)
{
	if (cb == NULL)
		return true;
	busy_begin(c);
	cb(c, c->arg);
	return busy_end(c);
}

/* Stop both ways and tell the owner. */
static void fail(struct conn *c, short what, int err)
{
	c->failed = true;
	c->err = err;
	if (c->ssl && c->ssl_err == 0)
		c->ssl_err = ERR_peek_last_error();
	ERR_clear_error();
	read_register(c, false);
	write_register(c, false);
	call_event(c, what);
}

/* ---- reading ---- */

/*
 * Reads land in a per-thread scratch buffer and are then added to the input
 * at their exact size: reserving read_size in the input instead would pin a
 * read_size chain to every small message (and to every idle keep-alive
 * connection's input). The copy costs little beside the syscall or the
 * decryption.
 */
static _Thread_local char scratch[CONN_READ_MAX];

static ssize_t add_input(struct conn *c, ssize_t n)
{
	if (n > 0 && evbuffer_add(c->in, scratch, (size_t)n) < 0) {
		errno = ENOMEM;
		return -1;
	}
	return n;
}

/* One read of up to want bytes into the input: bytes, 0 at EOF, -1 (errno). */
static ssize_t read_plain(struct conn *c, size_t want)
{
	return add_input(c, read(c->fd, scratch, want));
}

enum read_result { READ_MORE, READ_WAIT, READ_EOF, READ_ERROR };

static enum read_result read_tls(struct conn *c, size_t want, size_t *got)
{
	*got = 0;
	ERR_clear_error();
	int r = SSL_read(c->ssl, scratch, (int)want);
	if (r > 0) {
		if (add_input(c, r) < 0)
			return READ_ERROR;
		*got = (size_t)r;
		return READ_MORE;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return READ_WAIT;
	case SSL_ERROR_WANT_WRITE:
		c->read_wants_write = true;
		return READ_WAIT;
	case SSL_ERROR_ZERO_RETURN: /* close_notify, or a bare TCP close (IGNORE_UNEXPECTED_EOF) */
		return READ_EOF;
	case SSL_ERROR_SYSCALL:
		if (errno == 0 && ERR_peek_error() == 0)
			return READ_EOF;
		c->ssl_err = ERR_peek_last_error();
		return READ_ERROR;
	default:
		c->ssl_err = ERR_peek_last_error();
		errno = 0;
		return READ_ERROR;
	}
}

/* Bytes per read: read_size, but not past the high watermark. */
static size_t read_want(const struct conn *c)
{
	size_t len = evbuffer_get_length(c->in);
	if (c->read_high && len + c->read_size > c->read_high)
		return c->read_high > len ? c->read_high - len : 1;
	return c->read_size;
}

/* A stream: take from what the owner delivered, and tell it how much. */
static enum read_result read_stream(struct conn *c, size_t *total)
{
	struct conn_stream *st = c->st;
	size_t want = read_want(c), have = evbuffer_get_length(st->pend);
	int n = evbuffer_remove_buffer(st->pend, c->in, want < have ? want : have);
	*total = n > 0 ? (size_t)n : 0;
	if (*total > 0 && st->ops)
		st->ops->consumed(c, *total, st->owner);
	if (evbuffer_get_length(st->pend) == 0 && st->eof)
		return READ_EOF;
	return READ_WAIT;
}

static enum read_result read_some(struct conn *c, size_t *total)
{
	*total = 0;
	if (c->st)
		return read_stream(c, total);
	if (c->ssl == NULL) {
		ssize_t r = read_plain(c, read_want(c));
		if (r > 0)
			*total = (size_t)r;
		if (r >= 0)
			return r > 0 ? READ_MORE : READ_EOF;
		return errno == EAGAIN || errno == EINTR ? READ_WAIT : READ_ERROR;
	}
	enum read_result res = READ_MORE;
	c->tls_buffered = false;
	for (int round = 0; round < CONN_TLS_ROUNDS && !input_full(c); round++) {
		size_t got;
		res = read_tls(c, read_want(c), &got);
		*total += got;
		if (res != READ_MORE)
			return res;
		if (!SSL_has_pending(c->ssl))
			return READ_WAIT; /* OpenSSL took all the socket had; epoll says when more
					     come */
	}
	/* stopped with bytes in OpenSSL (rounds used up, input full): come back without epoll */
	c->tls_buffered = SSL_has_pending(c->ssl);
	return READ_WAIT;
}

static void do_read(struct conn *c)
{
	size_t got;
	enum read_result res = read_some(c, &got);
	int err = errno;
	if (res == READ_EOF)
		c->read_eof = true;
	c->active |= got > 0;
	read_register(c, got > 0);
	write_register(c, false); /* SSL_read may want to write */
	if (got > 0 && !call_data(c, c->read_cb))
		return;
	if (c->failed)
		return;
	if (res == READ_EOF)
		call_event(c, CONN_EOF | CONN_READING);
	else if (res == READ_ERROR)
		fail(c, CONN_ERROR | CONN_READING, err);
}

/* ---- writing ---- */

/* Write what the output holds: 1 all out, 0 blocked, -1 error (errno / ssl_err). */
static int write_plain(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		size_t before = evbuffer_get_length(c->out);
		int n = evbuffer_write_atmost(c->out, c->fd, -1);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if ((size_t)n < before && evbuffer_get_length(c->out) > 0)
			return 0; /* a short write: the socket is full, no EAGAIN round trip */
	}
	return 1;
}

static int write_tls(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		size_t len = evbuffer_get_length(c->out);
		if (len > CONN_TLS_RECORD)
			len = CONN_TLS_RECORD;
		const void *p = evbuffer_pullup(c->out, (ev_ssize_t)len);
		ERR_clear_error();
		int r = SSL_write(c->ssl, p, (int)len);
		if (r > 0) {
			evbuffer_drain(c->out, (size_t)r);
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_WRITE:
			return 0;
		case SSL_ERROR_WANT_READ:
			c->write_wants_read = true;
			return 0;
		default:
			c->ssl_err = ERR_peek_last_error();
			if (errno == 0)
				errno = EPIPE;
			return -1;
		}
	}
	return 1;
}

/* A stream: the owner takes what its window allows. */
static int write_stream(struct conn *c)
{
	if (c->st->ops)
		c->st->ops->output(c, c->st->owner);
	return evbuffer_get_length(c->out) == 0 ? 1 : 0;
}

static void do_write(struct conn *c)
{
	size_t before = evbuffer_get_length(c->out);
	if (!c->writing || before == 0) {
		c->write_blocked = false;
		write_register(c, false);
		return;
	}
	int rc = c->st ? write_stream(c) : c->ssl ? write_tls(c) : write_plain(c);
	int err = errno;
	size_t after = evbuffer_get_length(c->out);
	/* blocked on the socket; a TLS write that wants to read waits for EV_READ */
	c->write_blocked = rc == 0 && !c->write_wants_read;
	c->active |= after < before;
	write_register(c, after < before);
	read_register(c, false); /* SSL_write may want to read */
	if (rc < 0) {
		fail(c, CONN_ERROR | CONN_WRITING, err);
		return;
	}
	if (after < before && after <= c->write_low)
		call_data(c, c->write_cb);
}

/* ---- connect and handshake ---- */

static void now_open(struct conn *c)
{
	c->state = CONN_S_OPEN;
	c->tls_buffered = c->ssl && SSL_has_pending(c->ssl); /* data that came with the handshake */
	read_register(c, true); /* added untimed during the handshake: now with the read timeout */
	write_register(c, false);
	flush_soon(c);
	call_event(c, CONN_CONNECTED);
}

static void do_handshake(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		now_open(c);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->hs_wants_write = false;
		break;
	case SSL_ERROR_WANT_WRITE:
		c->hs_wants_write = true;
		break;
	case SSL_ERROR_SYSCALL:
		fail(c, CONN_ERROR, errno); /* errno 0: the peer closed */
		return;
	default:
		c->ssl_err = ERR_peek_last_error();
		fail(c, CONN_ERROR, 0);
		return;
	}
	read_register(c, false);
	write_register(c, false);
}

static void connected(struct conn *c)
{
	if (c->ssl == NULL) {
		now_open(c);
		return;
	}
	c->state = CONN_S_HANDSHAKE;
	do_handshake(c);
}

/* The socket became writable: the connect is over, one way or the other. */
static void connect_done(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err)
		fail(c, CONN_ERROR, err);
	else
		connected(c);
}

/*
 * First look, from the loop right after conn_connect: on loopback (and
 * often on a LAN) the TCP handshake is over by the time connect() returns.
 * Then the request goes out in this turn, with no EPOLLOUT registration and
 * round trip; only a handshake still in SYN_SENT waits for EPOLLOUT.
 */
static void connect_probe(struct conn *c)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	c->connect_probe = false;
	if (c->connected_at_once) {
		connected(c);
		return;
	}
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
		connect_done(c); /* not TCP: SO_ERROR says */
		return;
	}
	if (ti.tcpi_state == TCP_ESTABLISHED)
		connected(c);
	else if (ti.tcpi_state == TCP_SYN_SENT)
		write_register(c, false);
	else
		connect_done(c); /* refused or reset: SO_ERROR says why */
}

/* ---- event handlers ---- */

static void on_timeout(struct conn *c, short side)
{
	if (side == CONN_READING)
		c->reading = false;
	fail(c, CONN_TIMEOUT | side, ETIMEDOUT);
}

/*
 * TLS: the read that waited for EV_WRITE, or the write that waited for
 * EV_READ. False when it ended the conn (failed, or freed by a callback).
 */
static bool run_other_side(struct conn *c, void (*side)(struct conn *))
{
	busy_begin(c);
	side(c);
	return busy_end(c) && !c->failed;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (what & EV_TIMEOUT) { /* persistent: still added, until fail() removes it */
		on_timeout(c, CONN_READING);
		return;
	}
	if (c->trigger) {
		c->trigger = false;
		if (!call_data(c, c->read_cb) || c->st == NULL)
			return;
		/* a stream's pending bytes, EOF or failure have no readiness to come back */
		if (c->st->fail_err && !c->failed)
			event_active(&c->ev_read, EV_READ, 1);
		else
			read_register(c, false);
		return;
	}
	if (c->st && c->st->fail_err && !c->failed) {
		fail(c, CONN_ERROR | CONN_READING, c->st->fail_err);
		return;
	}
	if (c->state == CONN_S_HANDSHAKE) {
		do_handshake(c);
		return;
	}
	if (c->state != CONN_S_OPEN || c->failed)
		return;
	if (c->write_wants_read) {
		c->write_wants_read = false;
		if (!run_other_side(c, do_write))
			return;
	}
	if (c->reading && !c->read_eof)
		do_read(c);
	else
		read_register(c, false);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (what & EV_TIMEOUT) {
		on_timeout(c, CONN_WRITING);
		return;
	}
	switch (c->state) {
	case CONN_S_CONNECTING:
		if (c->connect_probe)
			connect_probe(c);
		else
			connect_done(c);
		return;
	case CONN_S_HANDSHAKE:
		do_handshake(c);
		return;
	case CONN_S_OPEN:
		break;
	case CONN_S_IDLE:
		return;
	}
	if (c->failed)
		return;
	if (c->read_wants_write) {
		c->read_wants_write = false;
		if (!run_other_side(c, do_read))
			return;
	}
	do_write(c);
}

/* The owner drained the input (reading may resume) or filled the output. */
static void input_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	if (info->n_deleted > 0)
		read_register(c, false);
}

static void output_changed(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	if (info->n_added > 0)
		flush_soon(c);
}

/* ---- the interface ---- */

struct conn *conn_new(struct event_base *base, int fd, SSL *ssl, enum conn_role role)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->in = evbuffer_new()) == NULL || (c->out = evbuffer_new()) == NULL)
		goto fail;
	c->base = base;
	c->fd = fd;
	c->ssl = ssl;
	c->reading = c->writing = true;
	c->read_size = CONN_READ_SIZE;
	if (ssl && SSL_set_fd(ssl, fd) != 1)
		goto fail;
	/* write_tls retries with evbuffer_pullup()'s pointer of the moment, and may
	 * stop between records */
	if (ssl)
		SSL_set_mode(ssl,
			     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (role == CONN_TLS_ACCEPT) {
		SSL_set_accept_state(ssl);
		c->state = CONN_S_HANDSHAKE; /* the client speaks first */
	} else {
		c->state = role == CONN_TLS_CONNECT ? CONN_S_IDLE : CONN_S_OPEN;
		if (role == CONN_TLS_CONNECT)
			SSL_set_connect_state(ssl);
	}
	event_assign(&c->ev_read, base, fd, EV_READ | EV_PERSIST, on_readable, c);
	event_assign(&c->ev_write, base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	if (evbuffer_add_cb(c->in, input_changed, c) == NULL ||
	    evbuffer_add_cb(c->out, output_changed, c) == NULL)
		goto fail;
	read_register(c, false);
	return c;
fail:
	if (c && c->in)
		evbuffer_free(c->in);
	if (c && c->out)
		evbuffer_free(c->out);
	free(c);
	SSL_free(ssl);
	close(fd);
	return NULL;
}

int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
	int r = connect(c->fd, sa, len);
	if (r < 0 && errno != EINPROGRESS && errno != EINTR)
		return -1;
	c->state = CONN_S_CONNECTING;
	c->connect_probe = true;
	c->connected_at_once = r == 0;
	read_register(c, false);
	write_register(c, false);
	event_active(&c->ev_write, EV_WRITE, 1); /* connect_probe */
	return 0;
}

/* Stop every event and the buffers' callbacks. */
static void conn_quiet(struct conn *c)
{
	event_del(&c->ev_read);
	event_del(&c->ev_write);
	c->read_on = c->write_on = false;
	evbuffer_remove_cb(c->in, input_changed, c);
	evbuffer_remove_cb(c->out, output_changed, c);
}

/* A stream conn's owner hears that the session let go: it sends no more here. */
static void stream_detach(struct conn *c)
{
	if (c->st && c->st->ops) {
		const struct conn_stream_ops *ops = c->st->ops;
		c->st->ops = NULL;
		ops->closed(c, c->st->owner);
	}
}

static void stream_free(struct conn_stream *st)
{
	if (st == NULL)
		return;
	evbuffer_free(st->pend);
	free(st->sni);
	free(st);
}

static void conn_destroy(struct conn *c)
{
	conn_quiet(c);
	stream_detach(c);
	stream_free(c->st);
	free(c->local);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

void conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	stream_detach(c);
	if (c->busy) { /* a callback of ours is on the stack: it frees on return */
		c->dead = true;
		conn_quiet(c);
		return;
	}
	conn_destroy(c);
}

int conn_release_fd(struct conn *c)
{
	int fd = c->fd;
	c->fd = -1;
	conn_free(c);
	return fd;
}

struct evbuffer *conn_input(struct conn *c)
{
	return c->in;
}

struct evbuffer *conn_output(struct conn *c)
{
	return c->out;
}

int conn_fd(const struct conn *c)
{
	return c->fd;
}

void conn_setcb(struct conn *c, conn_data_cb read_cb, conn_data_cb write_cb, conn_event_cb event_cb,
		void *arg)
{
	c->read_cb = read_cb;
	c->write_cb = write_cb;
	c->event_cb = event_cb;
	c->arg = arg;
}

void conn_enable(struct conn *c, short what)
{
	if (what & EV_READ) { /* after an EOF too: a closed socket says so again */
		c->reading = true;
		c->read_eof = false;
	}
	if (what & EV_WRITE)
		c->writing = true;
	read_register(c, false);
	write_register(c, false);
	flush_soon(c);
}

void conn_disable(struct conn *c, short what)
{
	if (what & EV_READ)
		c->reading = false;
	if (what & EV_WRITE) {
		c->writing = false;
		if (!c->write_on && c->state == CONN_S_OPEN)
			event_del(&c->ev_write); /* cancels a flush already scheduled */
	}
	read_register(c, false);
	write_register(c, false);
}

void conn_set_read_high(struct conn *c, size_t high)
{
	c->read_high = high;
	read_register(c, false);
}

void conn_set_write_low(struct conn *c, size_t low)
{
	c->write_low = low;
}

void conn_set_read_size(struct conn *c, size_t size)
{
	c->read_size = size == 0 ? CONN_READ_SIZE : size < CONN_READ_MAX ? size : CONN_READ_MAX;
}

void conn_set_timeouts(struct conn *c, uint64_t read_ms, uint64_t write_ms)
{
	bool changed = c->read_ms != read_ms || c->write_ms != write_ms;
	c->read_ms = read_ms;
	c->write_ms = write_ms;
	if (changed) {
		read_register(c, c->read_on);
		write_register(c, c->write_on);
	}
}

void conn_release_buffers(struct conn *c)
{
	if (c && c->ssl && c->state == CONN_S_OPEN)
		SSL_free_buffers(c->ssl); /* refused while they hold bytes: then they stay */
}

void conn_tick(struct conn *c)
{
	if (c == NULL)
		return;
	if (!c->active)
		conn_release_buffers(c);
	c->active = false;
}

void conn_trigger_read(struct conn *c)
{
	c->trigger = true;
	event_active(&c->ev_read, EV_READ, 1);
}

void conn_shutdown_write(struct conn *c)
{
	if (c->st) {
		if (c->st->ops)
			c->st->ops->shutdown(c, c->st->owner);
		return;
	}
	if (c->ssl) {
		/* non-blocking: a close_notify that cannot be sent now is lost, as a FIN would be
		 */
		SSL_set_quiet_shutdown(c->ssl, 0);
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		ERR_clear_error();
		return;
	}
	shutdown(c->fd, SHUT_WR);
}

bool conn_alpn_is(const struct conn *c, const char *proto)
{
	const unsigned char *sel = NULL;
	unsigned len = 0;
	if (c == NULL || c->ssl == NULL)
		return false;
	SSL_get0_alpn_selected(c->ssl, &sel, &len);
	return sel && len == strlen(proto) && memcmp(sel, proto, len) == 0;
}

bool conn_can_splice(const struct conn *c)
{
	return c->fd >= 0 && c->ssl == NULL && c->st == NULL;
}

bool conn_tls_info(const struct conn *c, const char **version, const char **sni)
{
	if (c && c->st && c->st->tls_version) {
		*version = c->st->tls_version;
		*sni = c->st->sni;
		return true;
	}
	if (c == NULL || c->ssl == NULL)
		return false;
	*version = SSL_get_version(c->ssl);
	*sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
	return true;
}

const char *conn_error(const struct conn *c, char *buf, size_t len)
{
	long v = c && c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	if (v != X509_V_OK) { /* says why, where the error queue says only "verify failed" */
		snprintf(buf, len, "certificate verify failed: %s",
			 X509_verify_cert_error_string(v));
		return buf;
	}
	if (c && c->ssl_err) {
		snprintf(buf, len, "TLS: %s", ERR_reason_error_string(c->ssl_err));
		return buf;
	}
	int err = c ? c->err : errno;
	snprintf(buf, len, "%s", err ? strerror(err) : "connection closed");
	return buf;
}

/* ---- stream conns ---- */

struct conn *conn_new_stream(struct event_base *base, const struct conn_stream_ops *ops,
			     void *owner, struct conn *parent)
{
	struct conn *c = calloc(1, sizeof(*c));
	const char *version, *sni;
	if (c == NULL || (c->st = calloc(1, sizeof(*c->st))) == NULL ||
	    (c->st->pend = evbuffer_new()) == NULL || (c->in = evbuffer_new()) == NULL ||
	    (c->out = evbuffer_new()) == NULL)
		goto fail;
	c->base = base;
	c->fd = -1;
	c->state = CONN_S_OPEN;
	c->reading = c->writing = true;
	c->read_size = CONN_READ_MAX;
	c->st->ops = ops;
	c->st->owner = owner;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (conn_local_addr(parent, &ss, &len) == 0 && len <= sizeof(c->st->local)) {
		memcpy(&c->st->local, &ss, len);
		c->st->local_len = len;
	}
	if (conn_tls_info(parent, &version, &sni)) {
		c->st->tls_version = version; /* OpenSSL's static strings */
		if (sni && (c->st->sni = strdup(sni)) == NULL)
			goto fail;
	}
	/* no fd: the events are timers (the I/O timeouts) and run-from-the-loop hooks */
	event_assign(&c->ev_read, base, -1, EV_PERSIST, on_readable, c);
	event_assign(&c->ev_write, base, -1, EV_PERSIST, on_writable, c);
	if (evbuffer_add_cb(c->in, input_changed, c) == NULL ||
	    evbuffer_add_cb(c->out, output_changed, c) == NULL)
		goto fail;
	return c;
fail:
	if (c) {
		c->st->ops = NULL;
		stream_free(c->st);
		if (c->in)
			evbuffer_free(c->in);
		if (c->out)
			evbuffer_free(c->out);
	}
	free(c);
	return NULL;
}

void conn_stream_deliver(struct conn *c, const void *data, size_t len)
{
	evbuffer_add(c->st->pend, data, len);
	read_register(c, true);
}

void conn_stream_deliver_buffer(struct conn *c, struct evbuffer *buf)
{
	evbuffer_add_buffer(c->st->pend, buf);
	read_register(c, true);
}

void conn_stream_eof(struct conn *c)
{
	c->st->eof = true;
	read_register(c, false);
}

void conn_stream_fail(struct conn *c, int err)
{
	if (c->st->fail_err == 0)
		c->st->fail_err = err ? err : ECONNRESET;
	event_active(&c->ev_read, EV_READ, 1);
}

void conn_stream_writable(struct conn *c)
{
	if (c->writing && !c->failed && !c->dead && evbuffer_get_length(c->out) > 0)
		event_active(&c->ev_write, EV_WRITE, 1);
}

/* A socket's local address, asked of the kernel once (every stream of an
 * HTTP/2 connection copies it). */
static int socket_local_addr(struct conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
	if (c->local == NULL) {
		struct sockaddr_storage got;
		socklen_t got_len = sizeof(got);
		if (getsockname(c->fd, (struct sockaddr *)&got, &got_len) < 0)
			return -1;
		if (got_len > sizeof(*c->local) || (c->local = malloc(sizeof(*c->local))) == NULL) {
			memcpy(ss, &got, got_len < *len ? got_len : *len); /* not kept: not TCP */
			*len = got_len;
			return 0;
		}
		memset(c->local, 0, sizeof(*c->local));
		memcpy(c->local, &got, got_len);
	}
	socklen_t n =
	    c->local->sa.sa_family == AF_INET6 ? sizeof(c->local->in6) : sizeof(c->local->in);
	if (*len < n)
		return -1;
	memcpy(ss, c->local, n);
	*len = n;
	return 0;
}

int conn_local_addr(struct conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
	if (c == NULL)
		return -1;
	if (c->st == NULL)
		return socket_local_addr(c, ss, len);
	if (c->st->local_len == 0 || *len < c->st->local_len)
		return -1;
	memcpy(ss, &c->st->local, c->st->local_len);
	*len = c->st->local_len;
	return 0;
}
