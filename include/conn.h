/*
 * conn: one socket, plain or TLS, with an input and an output evbuffer. The
 * HTTP phase, the upstream pool, the terminate bridge, TLS tunnels, health
 * checks and the admin listener use it (libevent bufferevents are not used).
 *
 * - Writes are optimistic: bytes added to the output are written from the
 *   loop as soon as the current callback returns, with no epoll change;
 *   EV_WRITE is registered only after the kernel (or TLS) says "later".
 * - Reads go into the input at their exact size, a fixed read size at a
 *   time (no FIONREAD), and stop while the input holds the read high
 *   watermark; they resume by themselves once the owner drains it below.
 * - TLS runs SSL_read / SSL_write on the socket itself, with read-ahead: bytes
 *   OpenSSL has buffered are read without waiting for the socket.
 * - Callbacks run only from the event loop, never from inside a conn_* call
 *   (conn_free included: nothing runs after it).
 */
#ifndef SY_CONN_H
#define SY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct conn;
struct event_base;
struct evbuffer;
struct ssl_st;

enum conn_role {
	CONN_PLAIN,
	CONN_TLS_ACCEPT,  /* the server side: the handshake starts with the first bytes */
	CONN_TLS_CONNECT, /* the client side: the handshake follows conn_connect */
};

/* Event bits given to the event callback (the same values as libevent's
 * BEV_EVENT_*): which side failed, and how. */
#define CONN_READING 0x01
#define CONN_WRITING 0x02
#define CONN_EOF 0x10	    /* the peer closed (or sent close_notify) */
#define CONN_ERROR 0x20	    /* errno or the TLS error: see conn_error() */
#define CONN_TIMEOUT 0x40   /* conn_set_timeouts */
#define CONN_CONNECTED 0x80 /* conn_connect done, and the TLS handshake (both roles) */

#define CONN_READ_SIZE (16 * 1024) /* default bytes per read */
#define CONN_READ_MAX (64 * 1024)  /* the most conn_set_read_size allows */

typedef void (*conn_data_cb)(struct conn *c, void *arg);
typedef void (*conn_event_cb)(struct conn *c, short what, void *arg);

/*
 * A conn over fd (non-blocking; owned from now on, closed by conn_free).
 * ssl: with a TLS role, the SSL object to run on fd (owned too); NULL for
 * CONN_PLAIN. Reading and writing start enabled. NULL on failure, with fd
 * closed and ssl freed.
 */
struct conn *conn_new(struct event_base *base, int fd, struct ssl_st *ssl, enum conn_role role);

/*
 * Start a non-blocking connect of c's socket to sa. The event callback gets
 * CONN_CONNECTED once connected (and, for CONN_TLS_CONNECT, once the TLS
 * handshake is done), or CONN_ERROR. Output queued before is sent then.
 * -1 with errno on an immediate failure.
 */
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);

/* Close the socket, free the SSL and both buffers. */
void conn_free(struct conn *c);

/*
 * Free c but keep its socket, which is returned (plain conns only: a
 * splice tunnel takes the fds over). The buffers are freed: move what they
 * hold out first.
 */
int conn_release_fd(struct conn *c);

struct evbuffer *conn_input(struct conn *c);
struct evbuffer *conn_output(struct conn *c);
int conn_fd(const struct conn *c);

/*
 * read_cb: bytes were added to the input. write_cb: a write left the output
 * at or below the write low watermark (0 by default: empty). event_cb: see
 * the CONN_* bits; after CONN_EOF reading stops, after CONN_ERROR or
 * CONN_TIMEOUT both directions stop.
 */
void conn_setcb(struct conn *c, conn_data_cb read_cb, conn_data_cb write_cb, conn_event_cb event_cb,
		void *arg);

/* EV_READ and/or EV_WRITE: whether the conn reads and writes at all.
 * Enabling EV_READ after CONN_EOF reads again (and meets the EOF again). */
void conn_enable(struct conn *c, short what);
void conn_disable(struct conn *c, short what);

/* Stop reading while the input holds high bytes or more (0: no limit). */
void conn_set_read_high(struct conn *c, size_t high);
/* Call write_cb when a write leaves at most low bytes in the output. */
void conn_set_write_low(struct conn *c, size_t low);
/* Bytes asked of the kernel (or TLS) per read; CONN_READ_SIZE by default,
 * CONN_READ_MAX at most. */
void conn_set_read_size(struct conn *c, size_t size);

/*
 * read_ms: CONN_TIMEOUT|CONN_READING when reading is on and nothing arrives
 * for that long; write_ms: CONN_TIMEOUT|CONN_WRITING when the output waits
 * that long without progress. 0: none. Restarted by each read / write.
 */
void conn_set_timeouts(struct conn *c, uint64_t read_ms, uint64_t write_ms);

/*
 * OpenSSL's buffers (the read-ahead buffer and the record buffer, about
 * 80 KiB) stay while a TLS conn moves bytes, and go back to the heap when it
 * idles: conn_release_buffers now (a conn parked in a pool), conn_tick once a
 * second (releases them when no byte moved since the last tick). They come
 * back with the next bytes. Plain conns: nothing.
 */
void conn_release_buffers(struct conn *c);
void conn_tick(struct conn *c);

/* Call read_cb from the loop, without reading (bytes already in the input). */
void conn_trigger_read(struct conn *c);

/*
 * Half-close the sending side: close_notify over TLS, shutdown(SHUT_WR) on a
 * plain socket. Call with the output empty.
 */
void conn_shutdown_write(struct conn *c);

/* c's TLS version ("TLSv1.3") and SNI name (NULL if none); false if not TLS.
 * A stream conn answers for the TLS connection it was opened on. */
/* Did the TLS handshake select proto by ALPN? */
bool conn_alpn_is(const struct conn *c, const char *proto);
/* A plain socket, whose fd a splice tunnel may take over? */
bool conn_can_splice(const struct conn *c);
/* The local address the client connected to (a stream: its connection's). -1 if none. */
struct sockaddr_storage;
int conn_local_addr(struct conn *c, struct sockaddr_storage *ss, socklen_t *len);
bool conn_tls_info(const struct conn *c, const char **version, const char **sni);

/* Why c failed, for logs: a certificate verify error, the TLS error, errno. */
const char *conn_error(const struct conn *c, char *buf, size_t len);

/*
 * Stream conns: a conn with no socket, for one HTTP/2 stream (h2.c is the
 * owner). The session on top uses it like any conn. The owner:
 * - delivers the peer's bytes (conn_stream_deliver) and its end
 *   (conn_stream_eof); they enter the input as the conn reads, and
 *   ops->consumed says how many did (the owner opens its window by that);
 * - is asked by ops->output to take bytes from the output, and takes what
 *   it can send; the rest stays, running the write timeout, until
 *   conn_stream_writable says more can go;
 * - hears conn_shutdown_write as ops->shutdown and conn_free as ops->closed
 *   (after which it must not touch the conn);
 * - ends the stream from its side with conn_stream_fail (a reset, or its
 *   connection gone): the session gets CONN_ERROR from the loop.
 * The ops run from conn's handlers or conn_* calls, never from inside the
 * owner's own calls into conn.
 */
struct conn_stream_ops {
	void (*output)(struct conn *c, void *owner);
	void (*consumed)(struct conn *c, size_t n, void *owner);
	void (*shutdown)(struct conn *c, void *owner);
	void (*closed)(struct conn *c, void *owner);
};

/* parent: the client connection the stream runs on (its TLS details and
 * local address are copied). NULL on failure. */
struct conn *conn_new_stream(struct event_base *base, const struct conn_stream_ops *ops,
			     void *owner, struct conn *parent);
void conn_stream_deliver(struct conn *c, const void *data, size_t len);
void conn_stream_deliver_buffer(struct conn *c, struct evbuffer *buf); /* moves buf's bytes */
void conn_stream_eof(struct conn *c);
void conn_stream_fail(struct conn *c, int err);
void conn_stream_writable(struct conn *c);

#endif
