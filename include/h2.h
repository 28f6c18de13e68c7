/*
 * h2: the HTTP/2 front end (RFC 9113) on nghttp2, with WebSockets over
 * HTTP/2 (RFC 8441). The only module that includes nghttp2.h, as http.c is
 * for http_parser.
 *
 * One h2_conn per client connection that chose HTTP/2 (ALPN "h2", or the
 * h2c preface). Each request stream becomes a stream conn (conn.h) carrying
 * the request as HTTP/1.1 bytes, and a session on top of it routes, limits,
 * logs and forwards it like any HTTP/1.1 request; what the session writes
 * back (an HTTP/1.1 response, a 101 and then tunnel bytes) is re-framed as
 * HEADERS and DATA. An extended CONNECT (:protocol) becomes a GET with
 * Upgrade (and a fresh Sec-WebSocket-Key), and its 101 a 200.
 *
 * Flow control: a stream's window opens only for bytes its session has
 * taken; response bytes are taken from the session only while the stream
 * holds less than H2_STREAM_BUF, so memory per stream stays bounded and a
 * reader that opens no window stops its backend through the watermarks.
 */
#ifndef SY_H2_H
#define SY_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "end.h"

struct config_h2;
struct conn;
struct event_base;
struct h2_conn;

struct h2_params {
	struct event_base *base;
	const struct config_h2 *settings;
	size_t header_bytes, header_fields; /* limits.*: bound the response heads parsed */
	uint64_t idle_ms; /* no stream open that long: GOAWAY and close (0: never) */
	uint64_t send_ms; /* the client takes no bytes that long: close (0: never) */
	/*
	 * A new request stream: stream's input will hold the request as
	 * HTTP/1.1. The callee owns stream from now on; -1 refuses it (stream	 * already freed:
	 * the peer gets REFUSED_STREAM). tunnel: an extended CONNECT, whose request carries
	 * Upgrade: its :protocol.
	 */
	int (*open_stream)(void *arg, struct conn *stream, int32_t id, bool tunnel);
	/* A GOAWAY with code (an HTTP/2 error code) is on its way (for the metrics). */
	void (*goaway)(void *arg, uint32_t code);
	/* The connection is over (called once, from the loop); then h2_free. */
	void (*done)(void *arg, enum end_cause cause, const char *detail);
	void *arg;
	uint64_t session_id; /* for log lines */
};

/* Take over client (its input may already hold the first bytes, e.g. the h2c
 * preface). NULL on failure (client freed). */
struct h2_conn *h2_start(const struct h2_params *p, struct conn *client);

/* Graceful: GOAWAY, no new streams; the streams in flight finish, then done. */
void h2_goaway(struct h2_conn *h);

/* Once a second: the client's idle TLS buffers go back (conn_tick). */
void h2_tick(struct h2_conn *h);

/* Close the connection; streams still open see their conn fail. */
void h2_free(struct h2_conn *h);

#endif
