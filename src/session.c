/*
 * session: the per-connection state machine.
 *
 *   READ_REQ -> CONNECT -> EXCHANGE -> (READ_REQ | TUNNEL | LINGER) -> CLOSED
 *
 * READ_REQ waits for a complete head (header / keepalive timers), routes it
 * and classifies upgrades. CONNECT opens the upstream connection, trying the
 * next server on failure. EXCHANGE streams the request body up and the
 * response down at the same time, with watermarks on both sides. A valid 101
 * hands both sockets to the tunnel module. LINGER flushes a proxy-generated
 * error, half-closes and drains the client briefly so the error is not lost
 * to a reset. Every path ends in session_end(), which defers the free to
 * its own event so no callback ever runs on freed memory.
 *
 * HTTP/2: a connection that chooses h2 (ALPN, or the h2c preface on a
 * listener that allows it) becomes an H2 session holding the h2 module's
 * connection; each of its request streams is a session of its own over a
 * stream conn, going through the same states as an HTTP/1.1 connection
 * that sends one request with "Connection: close".
 */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "balance.h"
#include "config.h"
#include "conn.h"
#include "end.h"
#include "generation.h"
#include "h2.h"
#include "health.h"
#include "http.h"
#include "http_hdr.h"
#include "log.h"
#include "metrics.h"
#include "proxyproto.h"
#include "route.h"
#include "tls.h"
#include "tunnel.h"
#include "upgrade.h"
#include "upstream.h"
#include "worker.h"
#include "wsbridge.h"

#define SESSION_HIGH_WATER (256 * 1024) /* output bytes before the source pauses */
#define SESSION_LINGER_MS 2000		/* drain time after an error response */

enum session_state {
	SESSION_READ_REQ,
	SESSION_CONNECT,
	SESSION_EXCHANGE,
	SESSION_TUNNEL,
	SESSION_WEBSOCKET,
	SESSION_LINGER,
	SESSION_H2, /* an HTTP/2 connection: its streams are sessions of their own */
	SESSION_CLOSED,
};

enum session_timer {
	TIMER_NONE,
	TIMER_KEEPALIVE,
	TIMER_HEADER,
	TIMER_CONNECT,
	TIMER_RESPONSE,
	TIMER_LINGER,
	TIMER_DRAIN, /* a tunnel of a route a reload removed: close it then */
	TIMER_FREE,  /* deferred free after session_end() */
};

/* What only the HTTP phase needs: an idle tunnel keeps none of it. */
struct http_phase {
	struct http_msg req, resp;
	struct upgrade_req up;
	char connect_error[96]; /* why the last connect failed, for the 502 */
};

struct session {
	uint64_t id;
	struct worker *w;
	struct worker_gen *wg;	  /* held from accept to the end */
	const struct config *cfg; /* wg->gen->cfg */
	struct session *next, *prev;
	enum session_state state;
	enum session_timer timer_kind;
	struct event *timer;

	struct conn *client;
	struct conn *backend;
	struct tunnel *tunnel;
	struct wsbridge *wsb;
	struct h2_conn *h2; /* SESSION_H2 */
	int32_t h2_stream;  /* a stream's session: the stream id (0: a connection) */
	bool h2_connect;    /* ... an extended CONNECT (RFC 8441): an upgrade or nothing */
	/* terminate routes: the chosen subprotocol, pointing into req.raw */
	const char *subprotocol;
	size_t subprotocol_len;
	char client_addr[INET6_ADDRSTRLEN + 8];

	struct http_limits limits;
	struct http_reader *req_reader, *resp_reader;
	/* the HTTP phase's state (struct http_phase), freed when the tunnel starts */
	struct http_phase *hp;
	struct http_msg *req, *resp; /* in hp */
	struct upgrade_req *up;	     /* in hp */

	/* the current exchange */
	const struct config_route *route;
	size_t upstream;
	long server;
	struct upstream_server *held; /* counted as a user of this server (least-conn) */
	uint64_t tried;		      /* bit per server index: failed for this request */
	unsigned attempts;	      /* servers tried for this request (retries + 1 at most) */
	bool req_body_done, resp_head_done, resp_body_done;
	bool req_chunk_out, resp_chunk_out;
	bool close_after; /* close the client after this response */
	bool client_eof;
	bool tls_front; /* the client connection is TLS */
	bool h2c;	/* the listener takes the h2c preface (until the first request) */
	bool tls_ready; /* ... and its handshake is done */
	bool backend_eof;
	bool backend_reused; /* taken from the keep-alive pool ... */
	bool backend_spoke;  /* ... and has sent at least one byte since */
	bool shutdown_requested;
	bool stop_after_flush; /* the stop's grace is over: no drain after the flush */
	bool has_request;      /* req holds a parsed head (for the access log) */
	int status;
	const char *reason; /* set when the proxy generated the response */
	uint64_t bytes_in, bytes_out;
	struct timespec started, tunnel_started;
	struct timespec connect_started, request_sent; /* upstream connect and response times */
	bool tunnel_counted;			       /* in the open-tunnel gauges */
	char protocol[32];			       /* a tunnel's: the 101's Upgrade value */
	uint64_t counted_up, counted_down;	       /* tunnel bytes already in the metrics */
	struct timespec progress_logged;	       /* log_interval: the last line */
	size_t head101_len;
};

static void session_read_request(struct session *s);
static void linger_start(struct session *s);
static void exchange_pump(struct session *s);
static void connect_next(struct session *s);
static bool connect_reuse(struct session *s);
static void connect_fresh(struct session *s);
static void backend_connected(struct session *s);
static void terminate_dispatch(struct session *s);
static void terminate_connected(struct session *s);
static void session_tunnel_done_cb(void *arg, enum end_cause cause, const char *detail);
static void client_event_cb(struct conn *conn, short what, void *arg);
static void client_read_cb(struct conn *conn, void *arg);
static void client_write_cb(struct conn *conn, void *arg);
static void backend_event_cb(struct conn *conn, short what, void *arg);
static void backend_read_cb(struct conn *conn, void *arg);
static void backend_write_cb(struct conn *conn, void *arg);

static const char *session_state_str(enum session_state st)
{
	static const char *const names[] = {"read_req",	 "connect", "exchange", "tunnel",
					    "websocket", "linger",  "h2",	"closed"};
	return names[st];
}

static uint64_t elapsed_ms(const struct timespec *since)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
	return ms < 0 ? 0 : (uint64_t)ms;
}

static uint64_t elapsed_us(const struct timespec *since)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t us = (now.tv_sec - since->tv_sec) * 1000000 + (now.tv_nsec - since->tv_nsec) / 1000;
	return us < 0 ? 0 : (uint64_t)us;
}

/* ---- metrics ---- */

static struct metrics *metrics_of(const struct session *s)
{
	return s->wg->gen->metrics;
}

static struct metrics_route *route_metrics(const struct session *s)
{
	const struct generation *g = s->wg->gen;
	return s->route ? g->route_metrics[s->route - s->cfg->routes] : g->unrouted;
}

static void count_upgrade(struct session *s, enum metrics_upgrade result)
{
	metrics_add(&route_metrics(s)->upgrades[result], 1);
}

static void count_response(struct session *s)
{
	int cls = s->status / 100;
	if (cls >= 1 && cls <= 5)
		metrics_add(&route_metrics(s)->requests[cls], 1);
}

static void count_tunnel_open(struct session *s)
{
	s->tunnel_counted = true;
	metrics_gauge(&route_metrics(s)->tunnels_open, 1);
	if (s->held)
		health_server_tunnels(s->held->health, 1);
}

static void tunnel_bytes_of(const struct session *s, uint64_t *up, uint64_t *down);
static const char *tunnel_mode_of(const struct session *s);

/* The bytes a tunnel moved since they were last counted (every second, and
 * at its end), so that rates show while tunnels last hours. */
static void count_tunnel_bytes(struct session *s)
{
	struct metrics_route *r = route_metrics(s);
	uint64_t up, down;
	tunnel_bytes_of(s, &up, &down);
	if (up > s->counted_up)
		metrics_add(&r->bytes_up, up - s->counted_up);
	if (down > s->counted_down)
		metrics_add(&r->bytes_down, down - s->counted_down);
	s->counted_up = up > s->counted_up ? up : s->counted_up;
	s->counted_down = down > s->counted_down ? down : s->counted_down;
}

static void count_tunnel_close(struct session *s, enum end_cause cause)
{
	struct metrics *m = metrics_of(s);
	struct metrics_route *r = route_metrics(s);
	if (!s->tunnel_counted)
		return;
	s->tunnel_counted = false;
	count_tunnel_bytes(s);
	metrics_gauge(&r->tunnels_open, -1);
	metrics_add(&m->tunnel_closes[cause], 1);
	metrics_observe(&m->tunnel_duration, elapsed_us(&s->tunnel_started));
	if (s->held)
		health_server_tunnels(s->held->health, -1);
}

static void timer_arm(struct session *s, enum session_timer kind, uint64_t ms)
{
	s->timer_kind = kind;
	if (ms == 0) {
		event_del(s->timer);
		return;
	}
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	event_add(s->timer, &tv);
}

static void timer_stop(struct session *s)
{
	s->timer_kind = TIMER_NONE;
	event_del(s->timer);
}

/* ---- access log ---- */

static const char *server_text(const struct session *s)
{
	if (s->route && s->route->upgrade == CONFIG_UPGRADE_TERMINATE)
		return s->route->bridge_unix ? s->route->bridge_unix : s->route->bridge.text;
	if (s->route == NULL || s->server < 0)
		return NULL;
	return s->cfg->upstreams[s->upstream].servers[s->server].addr.text;
}

static void log_request_common(struct session *s, struct log_json *j)
{
	char ts[32];
	log_time_iso(ts, sizeof(ts));
	log_json_begin(j);
	log_json_cstr(j, "time", ts);
	log_json_num(j, "session", s->id);
	log_json_num(j, "generation", s->wg->gen->id);
	log_json_num(j, "worker", s->w->index);
	log_json_cstr(j, "client", s->client_addr);
	if (s->h2_stream)
		log_json_num(j, "h2_stream", (uint64_t)s->h2_stream);
	if (s->has_request) {
		const struct http_header *host = http_msg_find(s->req, "Host");
		log_json_str(j, "method", s->req->method_str, s->req->method_len);
		log_json_str(j, "target", s->req->target, s->req->target_len);
		if (s->req->authority)
			log_json_str(j, "host", s->req->authority, s->req->authority_len);
		else if (host)
			log_json_str(j, "host", host->value, host->value_len);
	}
	log_json_cstr(j, "route", s->route ? s->route->name : NULL);
	bool pooled = s->route && s->upstream != CONFIG_NO_UPSTREAM;
	log_json_cstr(j, "upstream", pooled ? s->cfg->upstreams[s->upstream].name : NULL);
	log_json_cstr(j, "server", server_text(s));
	const char *version, *sni;
	if (s->client && conn_tls_info(s->client, &version, &sni)) {
		log_json_cstr(j, "tls", version);
		log_json_cstr(j, "sni", sni);
	}
}

static void log_access(struct session *s)
{
	struct log_json j;
	count_response(s);
	if (!log_access_enabled())
		return;
	log_request_common(s, &j);
	log_json_num(&j, "status", (uint64_t)s->status);
	log_json_num(&j, "bytes_in", s->bytes_in);
	log_json_num(&j, "bytes_out", s->bytes_out);
	log_json_num(&j, "duration_ms", elapsed_ms(&s->started));
	if (s->reason)
		log_json_cstr(&j, "reason", s->reason);
	log_json_emit(&j);
}

/* Bytes each way since the switch (a forwarded 101 head not counted). */
static void tunnel_bytes_of(const struct session *s, uint64_t *up, uint64_t *down)
{
	*up = *down = 0;
	if (s->wsb) {
		wsbridge_bytes(s->wsb, up, down);
		return;
	}
	if (s->tunnel)
		tunnel_bytes(s->tunnel, up, down);
	*down = *down > s->head101_len ? *down - s->head101_len : 0;
}

static void log_tunnel(struct session *s, enum end_cause cause, const char *reason)
{
	struct log_json j;
	uint64_t up = 0, down = 0;
	if (!log_access_enabled())
		return;
	log_request_common(s, &j);
	tunnel_bytes_of(s, &up, &down);
	if (s->wsb) {
		log_json_cstr(&j, "event", "websocket");
	} else {
		log_json_cstr(&j, "event", "tunnel");
		log_json_cstr(&j, "mode", s->tunnel ? tunnel_mode_str(s->tunnel) : "none");
	}
	log_json_num(&j, "bytes_up", up);
	log_json_num(&j, "bytes_down", down);
	log_json_num(&j, "duration_ms", elapsed_ms(&s->tunnel_started));
	log_json_cstr(&j, "closed_by", end_side_str(cause));
	log_json_cstr(&j, "cause", end_label(cause));
	log_json_cstr(&j, "reason", reason);
	log_json_emit(&j);
}

/* "event":"open" when a tunnel starts, "progress" every log_interval while it runs. */
static void log_tunnel_event(struct session *s, const char *event)
{
	struct log_json j;
	uint64_t up, down;
	if (!log_access_enabled())
		return;
	log_request_common(s, &j);
	log_json_cstr(&j, "event", event);
	log_json_cstr(&j, "protocol", s->protocol);
	log_json_cstr(&j, "mode", tunnel_mode_of(s));
	if (strcmp(event, "progress") == 0) {
		tunnel_bytes_of(s, &up, &down);
		log_json_num(&j, "bytes_up", up);
		log_json_num(&j, "bytes_down", down);
		log_json_num(&j, "duration_ms", elapsed_ms(&s->tunnel_started));
	}
	log_json_emit(&j);
}

/* ---- teardown ---- */

static void http_phase_free(struct session *s)
{
	if (s->hp == NULL)
		return;
	http_msg_fini(&s->hp->req);
	http_msg_fini(&s->hp->resp);
	free(s->hp);
	s->hp = NULL;
	s->req = s->resp = NULL;
	s->up = NULL;
}

static void server_let_go(struct session *s);

static void backend_drop(struct session *s)
{
	if (s->backend) {
		conn_free(s->backend); /* closes the socket */
		s->backend = NULL;
	}
	server_let_go(s);
}

static void session_free(struct session *s)
{
	if (s->h2_stream == 0)
		metrics_gauge(&metrics_of(s)->connections_open, -1);
	worker_session_removed(s->w, s);
	if (s->h2) {
		metrics_gauge(&metrics_of(s)->h2_connections_open, -1);
		h2_free(s->h2);
	}
	if (s->tunnel)
		tunnel_free(s->tunnel);
	wsbridge_free(s->wsb);
	backend_drop(s);
	if (s->client)
		conn_free(s->client);
	http_reader_free(s->req_reader);
	http_reader_free(s->resp_reader);
	http_phase_free(s);
	event_free(s->timer);
	worker_gen_release(s->wg);
	free(s);
}

void session_end(struct session *s, enum end_cause cause, const char *detail)
{
	char text[160];
	if (s->state == SESSION_CLOSED)
		return;
	end_text(cause, detail, text, sizeof(text));
	if (s->state == SESSION_TUNNEL || s->state == SESSION_WEBSOCKET) {
		log_tunnel(s, cause, text);
		count_tunnel_close(s, cause);
	}
	log_msg(LOG_LEVEL_DEBUG, s->id, "close in %s: %s", session_state_str(s->state), text);
	s->state = SESSION_CLOSED;
	if (s->client)
		conn_disable(s->client, EV_READ | EV_WRITE);
	if (s->backend)
		conn_disable(s->backend, EV_READ | EV_WRITE);
	/* free from our own event so the callback that called us can return safely */
	event_del(s->timer);
	s->timer_kind = TIMER_FREE;
	event_active(s->timer, EV_TIMEOUT, 0);
}

/* The access line of an exchange that could not finish, with why. */
static void exchange_log_cut(struct session *s, enum end_cause cause)
{
	char text[160];
	end_text(cause, NULL, text, sizeof(text));
	log_msg(LOG_LEVEL_WARN, s->id, "%s", text);
	if (!s->reason)
		s->reason = text;
	log_access(s);
	s->reason = NULL; /* pointed at text */
}

/* Abort an exchange that already sent bytes to the client: nothing can fix it. */
static void exchange_abort(struct session *s, enum end_cause cause)
{
	exchange_log_cut(s, cause);
	session_end(s, cause, NULL);
}

/*
 * The backend failed (or the stop came) in the middle of a response: the
 * client still gets every byte already relayed, then the close tells it the
 * response is cut short. Only a failed client is closed without a flush.
 */
static void exchange_abort_flush(struct session *s, enum end_cause cause)
{
	exchange_log_cut(s, cause);
	backend_drop(s);
	s->close_after = true;
	linger_start(s);
}

/* ---- proxy-generated responses ---- */

static void linger_start(struct session *s)
{
	s->state = SESSION_LINGER;
	conn_setcb(s->client, client_read_cb, client_write_cb, client_event_cb, s);
	conn_enable(s->client, EV_READ | EV_WRITE);
	timer_arm(s, TIMER_LINGER, s->cfg->timeouts.send ? s->cfg->timeouts.send : 60000);
	if (evbuffer_get_length(conn_output(s->client)) == 0)
		client_write_cb(s->client, s);
}

/* Answer with a short text/plain error, log it, then close the connection. */
static void session_error(struct session *s, int status, const char *reason)
{
	struct evbuffer *out = conn_output(s->client);
	const char *extra =
	    status == 426 ? "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n" : "";
	size_t before = evbuffer_get_length(out);

	backend_drop(s);
	s->status = status;
	s->reason = reason;
	if (status >= 400 && status < 600)
		metrics_add(&metrics_of(s)->errors[status], 1);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			    "%sConnection: close\r\n\r\n%s\n",
			    status, http_status_text(status), strlen(reason) + 1, extra, reason);
	s->bytes_out += evbuffer_get_length(out) - before;
	log_msg(status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, s->id, "%d: %s", status, reason);
	log_access(s);
	s->reason = NULL; /* may point into the caller's frame: used up by the log above */
	linger_start(s);
}

/* ---- HTTP/2 ---- */

static struct session *session_new(struct worker *w, int fd, struct tls_server *tls,
				   struct conn *stream);
static void session_setup_client(struct session *s);
static void session_wait_request(struct session *s);

static void session_h2_done(void *arg, enum end_cause cause, const char *detail)
{
	session_end(arg, cause, detail);
}

static void session_h2_goaway(void *arg, uint32_t code)
{
	/* RFC 9113 §7 codes: 0 NO_ERROR, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR, 11 ENHANCE_YOUR_CALM
	 */
	enum metrics_goaway i = code == 0    ? METRICS_GOAWAY_NO_ERROR
				: code == 1  ? METRICS_GOAWAY_PROTOCOL_ERROR
				: code == 11 ? METRICS_GOAWAY_ENHANCE_YOUR_CALM
					     : METRICS_GOAWAY_INTERNAL_ERROR;
	metrics_add(&metrics_of(arg)->h2_goaways[i], 1);
}

/* A request stream of s's HTTP/2 connection: a session of its own. */
static int session_h2_stream(void *arg, struct conn *stream, int32_t id, bool tunnel)
{
	struct session *s = arg;
	struct session *st = session_new(s->w, -1, NULL, stream); /* frees stream on failure */
	if (st == NULL)
		return -1;
	st->h2_stream = id;
	metrics_add(&metrics_of(s)->h2_streams_total, 1);
	st->h2_connect = tunnel;
	st->tls_front = s->tls_front;
	st->tls_ready = true; /* the connection's handshake is done */
	memcpy(st->client_addr, s->client_addr, sizeof(st->client_addr));
	worker_session_added(s->w, st);
	session_setup_client(st);
	clock_gettime(CLOCK_MONOTONIC, &st->started);
	session_wait_request(st);
	return 0;
}

/* The connection chose HTTP/2: it becomes an H2 session. */
static void session_start_h2(struct session *s)
{
	struct h2_params p = {
	    .base = s->w->base,
	    .settings = &s->cfg->h2,
	    .header_bytes = s->cfg->limits.header_bytes,
	    .header_fields = s->cfg->limits.header_fields,
	    .idle_ms = s->cfg->timeouts.keepalive,
	    .send_ms = s->cfg->timeouts.send,
	    .open_stream = session_h2_stream,
	    .goaway = session_h2_goaway,
	    .done = session_h2_done,
	    .arg = s,
	    .session_id = s->id,
	};
	timer_stop(s);
	log_msg(LOG_LEVEL_DEBUG, s->id, "HTTP/2 connection");
	s->state = SESSION_H2;
	s->h2 = h2_start(&p, s->client);
	s->client = NULL; /* the h2 connection's now (freed on failure) */
	http_reader_free(s->req_reader);
	http_reader_free(s->resp_reader);
	s->req_reader = s->resp_reader = NULL;
	http_phase_free(s);
	if (s->h2 == NULL) {
		session_end(s, END_INTERNAL, "cannot start HTTP/2");
		return;
	}
	metrics_gauge(&metrics_of(s)->h2_connections_open, 1);
	metrics_add(&metrics_of(s)->h2_connections_total, 1);
}

/*
 * h2c with prior knowledge (RFC 9113 §3.3): a connection that starts with
 * the preface is HTTP/2. True when it did (or may: more bytes needed).
 */
static bool h2c_preface(struct session *s, struct evbuffer *in, size_t len)
{
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	size_t n = len < sizeof(preface) - 1 ? len : sizeof(preface) - 1;
	const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)n);
	if (memcmp(buf, preface, n) != 0) {
		s->h2c = false;
		return false;
	}
	if (n == sizeof(preface) - 1)
		session_start_h2(s);
	return true;
}

/* ---- request phase ---- */

static void exchange_reset(struct session *s)
{
	s->route = NULL;
	s->server = -1;
	s->tried = 0;
	s->attempts = 0;
	s->req_body_done = s->resp_head_done = s->resp_body_done = false;
	s->req_chunk_out = s->resp_chunk_out = false;
	s->backend_eof = false;
	s->backend_reused = s->backend_spoke = false;
	s->has_request = false;
	s->status = 0;
	s->reason = NULL;
	s->bytes_in = s->bytes_out = 0;
	memset(s->up, 0, sizeof(*s->up));
}

/* A reload happened: the next request on this connection follows the new config. */
static void session_follow_reload(struct session *s)
{
	if (s->wg == s->w->current)
		return;
	worker_gen_release(s->wg);
	s->wg = worker_gen_hold(s->w->current);
	s->cfg = s->wg->gen->cfg;
	s->limits = (struct http_limits){s->cfg->limits.header_bytes, s->cfg->limits.header_fields,
					 s->cfg->limits.uri_bytes};
}

static void session_wait_request(struct session *s)
{
	s->state = SESSION_READ_REQ;
	exchange_reset(s);
	conn_setcb(s->client, client_read_cb, client_write_cb, client_event_cb, s);
	conn_enable(s->client, EV_READ);
	timer_arm(s, TIMER_KEEPALIVE, s->cfg->timeouts.keepalive);
	session_read_request(s);
}

static const char *request_host(const struct session *s, size_t *len)
{
	const struct http_header *h = http_msg_find(s->req, "Host");
	if (s->req->authority) {
		*len = s->req->authority_len;
		return s->req->authority;
	}
	*len = h ? h->value_len : 0;
	return h ? h->value : NULL;
}

/* Route and classify a parsed request; connect or answer an error. */
static void session_dispatch(struct session *s)
{
	size_t host_len;
	const char *host = request_host(s, &host_len);

	s->route = route_match(s->cfg, host, host_len, s->req->target, s->req->target_len);
	if (s->route == NULL) {
		session_error(s, 404, "no route for this host and path");
		return;
	}
	s->upstream = s->route->upstream;
	upgrade_classify(s->req, s->route, s->up);
	if (s->up->decision == UPGRADE_REJECT) {
		count_upgrade(s, s->up->status == 403 ? METRICS_UPGRADE_REFUSED_BY_POLICY
						      : METRICS_UPGRADE_INVALID_HANDSHAKE);
		session_error(s, s->up->status, s->up->reason);
		return;
	}
	if (s->route->upgrade == CONFIG_UPGRADE_TERMINATE) {
		terminate_dispatch(s);
		return;
	}
	if (s->h2_connect && s->up->decision != UPGRADE_FORWARD) {
		/* on HTTP/1.1 the Upgrade would just be dropped; a CONNECT cannot be */
		count_upgrade(s, METRICS_UPGRADE_REFUSED_BY_POLICY);
		session_error(s, 403, "protocol not allowed on this route");
		return;
	}
	if (s->up->decision == UPGRADE_FORWARD)
		s->close_after = true; /* either a tunnel or, per RFC 9931, no more HTTP */
	if (!s->req->keep_alive)
		s->close_after = true;
	if (s->shutdown_requested)
		s->close_after = true;
	s->state = SESSION_CONNECT;
	connect_next(s);
}

static void session_read_request(struct session *s)
{
	struct evbuffer *in = conn_input(s->client);
	size_t len = evbuffer_get_length(in), head_len = 0;
	struct http_error err = {400, "malformed request"};

	if (len == 0)
		return;
	if (s->h2c && h2c_preface(s, in, len))
		return;
	session_follow_reload(s); /* a request that starts after a reload sees it */
	if (s->timer_kind == TIMER_KEEPALIVE) {
		clock_gettime(CLOCK_MONOTONIC, &s->started);
		timer_arm(s, TIMER_HEADER, s->cfg->timeouts.header);
	}
	size_t scan = len < s->limits.header_bytes + 1 ? len : s->limits.header_bytes + 1;
	const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)scan);
	switch (http_head_scan(HTTP_MSG_REQUEST, buf, scan, &s->limits, &head_len, &err)) {
	case HTTP_SCAN_MORE:
		return;
	case HTTP_SCAN_ERROR:
		session_error(s, err.status, err.reason);
		return;
	case HTTP_SCAN_DONE:
		break;
	}
	if (http_reader_head(s->req_reader, s->req, buf, head_len, HTTP_METHOD_OTHER, &s->limits,
			     &err) < 0) {
		s->has_request = s->req->method_str != NULL;
		session_error(s, err.status, err.reason);
		return;
	}
	s->has_request = true;
	s->h2c = false; /* the connection spoke HTTP/1.1 */
	evbuffer_drain(in, head_len);
	s->bytes_in += head_len;
	s->req_body_done = s->req->body == HTTP_BODY_NONE;
	timer_stop(s);
	session_dispatch(s);
}

/* ---- connecting ---- */

static struct upstream_server *server_of(const struct session *s);

/* Passive health: the server failed this request (connect, reset, close). */
static void server_failed(struct session *s, const char *why)
{
	if (s->server >= 0 && s->upstream != CONFIG_NO_UPSTREAM)
		health_server_failed(server_of(s)->health, &s->cfg->upstreams[s->upstream].health,
				     why);
}

/* Passive health: the server answered; a 5xx counts as a failure if so configured. */
static void server_answered(struct session *s, int status)
{
	char why[32];
	if (status < 500) {
		health_server_ok(server_of(s)->health);
		return;
	}
	snprintf(why, sizeof(why), "answered %d", status);
	if (s->cfg->upstreams[s->upstream].health.passive_5xx)
		server_failed(s, why);
}

static void connect_failed(struct session *s, const char *why)
{
	log_msg(LOG_LEVEL_WARN, s->id, "connect to %s failed: %s", server_text(s), why);
	server_failed(s, why);
	snprintf(s->hp->connect_error, sizeof(s->hp->connect_error), "%s", why);
	backend_drop(s);
	if (s->server >= 0)
		s->tried |= UINT64_C(1) << s->server;
	connect_next(s);
}

static struct upstream_server *server_of(const struct session *s)
{
	return s->wg->ups[s->upstream].servers[s->server];
}

/* The session counts on s->server from its connect to the end of the
 * exchange, or of the tunnel (least-conn balancing reads the counts). */
static void server_hold(struct session *s)
{
	if (s->held == NULL)
		upstream_acquire(s->held = server_of(s));
}

static void server_let_go(struct session *s)
{
	if (s->held)
		upstream_release(s->held);
	s->held = NULL;
}

static const char *client_ip(const struct session *s, char *buf, size_t cap);

/* The hash of the request's hash_key; false when it has none. */
static bool hash_key_of(const struct session *s, uint64_t *key)
{
	const struct config_upstream *u = &s->cfg->upstreams[s->upstream];
	const struct http_header *h;
	const char *v = NULL;
	size_t len = 0;
	char ip[INET6_ADDRSTRLEN + 2];

	if (u->balance != CONFIG_BALANCE_HASH)
		return false;
	switch (u->hash_key) {
	case CONFIG_HASH_CLIENT:
		v = client_ip(s, ip, sizeof(ip));
		len = strlen(v);
		break;
	case CONFIG_HASH_HEADER:
		if ((h = http_msg_find(s->req, u->hash_name)) != NULL) {
			v = h->value;
			len = h->value_len;
		}
		break;
	case CONFIG_HASH_COOKIE:
		http_hdr_cookie(s->req, u->hash_name, &v, &len);
		break;
	case CONFIG_HASH_QUERY:
		http_hdr_query_param(s->req->target, s->req->target_len, u->hash_name, &v, &len);
		break;
	}
	if (v == NULL)
		return false;
	*key = balance_hash(v, len);
	return true;
}

static void connect_next(struct session *s)
{
	uint64_t key;
	long pick = -1;
	if (s->attempts++ <= s->cfg->upstreams[s->upstream].retries)
		pick = upstream_pick(&s->wg->ups[s->upstream], s->tried,
				     hash_key_of(s, &key) ? &key : NULL, worker_random(s->w));
	if (pick == UPSTREAM_ALL_DOWN) {
		char reason[160];
		snprintf(reason, sizeof(reason), "no server of upstream '%s' is up",
			 s->cfg->upstreams[s->upstream].name);
		s->server = -1;
		session_error(s, 503, reason);
		return;
	}
	if (pick < 0) {
		char reason[160];
		snprintf(reason, sizeof(reason), "no upstream server could be reached (last: %s)",
			 s->hp->connect_error);
		s->server = -1;
		session_error(s, 502, reason); /* logged and written before reason goes away */
		return;
	}
	s->server = pick;
	server_hold(s);
	if (connect_reuse(s))
		return;
	connect_fresh(s);
}

/*
 * Only a request without a body goes on a pooled connection: if the backend
 * closed that connection in the same instant, the request can be sent again
 * on a fresh one (see retry_fresh).
 */
static bool connect_reuse(struct session *s)
{
	if (s->up->decision == UPGRADE_FORWARD || s->req->body != HTTP_BODY_NONE ||
	    s->cfg->upstreams[s->upstream].proxy_protocol)
		return false;
	s->backend = upstream_idle_take(&server_of(s)->idle);
	if (s->backend == NULL)
		return false;
	metrics_add(&metrics_of(s)->pool_reused, 1);
	s->backend_reused = true;
	s->backend_spoke = false;
	conn_setcb(s->backend, backend_read_cb, backend_write_cb, backend_event_cb, s);
	backend_connected(s);
	return true;
}

/*
 * The PROXY protocol header goes first on the new backend connection: the
 * client's address and port (the one a PROXY header in named, if any), and
 * ours it connected to. Written before the connect completes; the conn
 * sends it once it does.
 */
static int proxy_header(struct session *s, unsigned version)
{
	struct config_addr client; /* as logged: a PROXY header in names it too */
	struct sockaddr_storage dst;
	socklen_t dst_len = sizeof(dst);
	uint8_t buf[PROXYPROTO_V1_WRITE_MAX + 1]; /* the larger of the two */
	const struct sockaddr *src = (const struct sockaddr *)&client.ss;
	size_t n = 0;

	if (config_parse_address(s->client_addr, &client) < 0 ||
	    conn_local_addr(s->client, &dst, &dst_len) < 0)
		return -1;
	if (version == 1)
		n = proxyproto_write_v1((char *)buf, sizeof(buf), src, (struct sockaddr *)&dst);
	else
		n = proxyproto_write_v2(buf, sizeof(buf), src, (struct sockaddr *)&dst);
	return n > 0 ? evbuffer_add(conn_output(s->backend), buf, n) : -1;
}

static void connect_fresh(struct session *s)
{
	server_hold(s);
	const struct config_upstream *u = &s->cfg->upstreams[s->upstream];
	const struct config_server *srv = &u->servers[s->server];
	const struct config_addr *addr = &srv->addr;
	s->backend_reused = false;
	metrics_add(&metrics_of(s)->pool_new, 1);
	clock_gettime(CLOCK_MONOTONIC, &s->connect_started);
	/* a server found by name is verified (and named in SNI) by that name */
	s->backend = upstream_connect(s->w->base, (const struct sockaddr *)&addr->ss, addr->len,
				      s->wg->gen->upstream_tls[s->upstream],
				      srv->name ? srv->name : addr->text);
	if (s->backend == NULL && (errno == EMFILE || errno == ENFILE)) {
		/* our own limit, not the server's fault: no other server would do better */
		worker_out_of_fds(s->w);
		session_error(s, 503, "proxy out of file descriptors");
		return;
	}
	if (s->backend == NULL) {
		connect_failed(s, strerror(errno));
		return;
	}
	if (u->proxy_protocol && proxy_header(s, u->proxy_protocol) < 0) {
		session_error(s, 500, "cannot write the PROXY protocol header");
		return;
	}
	conn_setcb(s->backend, backend_read_cb, backend_write_cb, backend_event_cb, s);
	timer_arm(s, TIMER_CONNECT, s->cfg->timeouts.connect);
}

/* ---- forwarding ---- */

/* The address part of client_addr ("1.2.3.4:5" or "[::1]:5"). */
static const char *client_ip(const struct session *s, char *buf, size_t cap)
{
	const char *a = s->client_addr;
	const char *end = a[0] == '[' ? strchr(a, ']') : strrchr(a, ':');
	size_t skip = a[0] == '[', n = end ? (size_t)(end - a) - skip : strlen(a);
	snprintf(buf, cap, "%.*s", (int)n, a + skip);
	return buf;
}

static int write_request_head(struct session *s)
{
	char upgrade_fields[512], ip[INET6_ADDRSTRLEN];
	struct http_hdr_opts o = {
	    .via = s->cfg->via,
	    .client_ip = client_ip(s, ip, sizeof(ip)),
	    .proto = s->tls_front ? "https" : "http",
	    /* HTTP/1.1 keeps the connection open by default; say so only to close it */
	    .connection = s->cfg->upstreams[s->upstream].keepalive ? NULL : "close",
	    .chunked = s->req->body == HTTP_BODY_CHUNKED,
	};
	if (s->up->decision == UPGRADE_FORWARD) {
		o.extra_len =
		    upgrade_format_request_fields(s->up, upgrade_fields, sizeof(upgrade_fields));
		o.extra = upgrade_fields;
		o.connection = NULL;
	}
	s->req_chunk_out = o.chunked;
	return http_hdr_write_request(s->req, &o, conn_output(s->backend));
}

/*
 * A backend that stops taking the request is cut after timeouts.send; one
 * that stops sending the response body (reading) after timeouts.response
 * without a byte. Reading is timed only once the head is in: before, the
 * backend may rightly wait for a slow upload, and the head has its own clock
 * (TIMER_RESPONSE).
 */
static void backend_timeouts(struct session *s, bool reading)
{
	conn_set_timeouts(s->backend, reading ? s->cfg->timeouts.response : 0,
			  s->cfg->timeouts.send);
}

static void backend_connected(struct session *s)
{
	if (!s->backend_reused)
		metrics_observe(&metrics_of(s)->connect_time, elapsed_us(&s->connect_started));
	clock_gettime(CLOCK_MONOTONIC, &s->request_sent);
	s->state = SESSION_EXCHANGE;
	backend_timeouts(s, false);
	if (write_request_head(s) < 0) {
		session_error(s, 500, "out of memory");
		return;
	}
	conn_enable(s->backend, EV_READ | EV_WRITE);
	timer_stop(s);
	exchange_pump(s);
	if (s->state == SESSION_EXCHANGE && s->req_body_done && !s->resp_head_done)
		timer_arm(s, TIMER_RESPONSE, s->cfg->timeouts.response);
}

struct body_sink {
	struct evbuffer *out;
	bool chunk;
	uint64_t bytes;
};

static void body_sink_cb(void *arg, const char *data, size_t len)
{
	struct body_sink *sink = arg;
	if (len == 0)
		return;
	if (sink->chunk)
		evbuffer_add_printf(sink->out, "%zx\r\n", len);
	evbuffer_add(sink->out, data, len);
	if (sink->chunk)
		evbuffer_add(sink->out, "\r\n", 2);
	sink->bytes += len;
}

/*
 * Move body bytes from in to out through reader, until the message ends or
 * out is above the high-water mark. Returns consumed bytes, or -1 on a
 * malformed body. eof: the source has closed (for close-delimited bodies).
 */
static ssize_t relay_body(struct http_reader *r, struct evbuffer *in, struct evbuffer *out,
			  bool chunk, bool eof, bool *done)
{
	struct body_sink sink = {.out = out, .chunk = chunk};
	size_t total = 0;
	*done = http_reader_done(r); /* a message without a body is complete at once */
	while (!*done && evbuffer_get_length(out) < SESSION_HIGH_WATER) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) {
			if (eof && http_reader_body(r, NULL, 0, body_sink_cb, &sink, done) < 0)
				return -1;
			break;
		}
		ssize_t n = http_reader_body(r, v.iov_base, v.iov_len, body_sink_cb, &sink, done);
		if (n < 0)
			return -1;
		evbuffer_drain(in, (size_t)n);
		total += (size_t)n;
		if (n == 0 && !*done)
			break;
	}
	if (*done && chunk)
		evbuffer_add(out, "0\r\n\r\n", 5);
	return (ssize_t)total;
}

/* Pause a source whose destination is full; resume when it drains. */
static void flow_control(struct conn *src, struct conn *dst, bool src_done)
{
	if (src_done)
		return;
	if (evbuffer_get_length(conn_output(dst)) >= SESSION_HIGH_WATER) {
		conn_disable(src, EV_READ);
		conn_set_write_low(dst, SESSION_HIGH_WATER / 2);
	} else {
		conn_enable(src, EV_READ);
	}
}

static void pump_request_body(struct session *s)
{
	bool done;
	if (s->req_body_done || s->backend == NULL)
		return;
	ssize_t n = relay_body(s->req_reader, conn_input(s->client), conn_output(s->backend),
			       s->req_chunk_out, s->client_eof, &done);
	if (n < 0) {
		if (s->resp_head_done)
			exchange_abort(s, END_BAD_REQUEST_BODY);
		else
			session_error(s, 400, "malformed request body");
		return;
	}
	s->bytes_in += (uint64_t)n;
	s->req_body_done = done;
	flow_control(s->client, s->backend, done);
	/* the response clock starts once the whole request is with the backend */
	if (done && !s->resp_head_done)
		timer_arm(s, TIMER_RESPONSE, s->cfg->timeouts.response);
}

/* Can the backend connection carry another request? */
static bool backend_reusable(const struct session *s)
{
	const struct config_upstream *u = &s->cfg->upstreams[s->upstream];
	/* a connection that began with a PROXY header speaks for one client only */
	return s->backend && u->keepalive > 0 && !u->proxy_protocol && !s->wg->retired &&
	       s->up->decision != UPGRADE_FORWARD && s->req_body_done && s->resp->keep_alive &&
	       s->resp->body != HTTP_BODY_CLOSE && !s->backend_eof &&
	       evbuffer_get_length(conn_input(s->backend)) == 0 &&
	       evbuffer_get_length(conn_output(s->backend)) == 0;
}

static void exchange_finish(struct session *s)
{
	log_access(s);
	if (backend_reusable(s)) {
		upstream_idle_park(&server_of(s)->idle, s->backend);
		s->backend = NULL;
	}
	backend_drop(s);
	timer_stop(s);
	if (!s->req_body_done)
		s->close_after = true; /* the rest of the request cannot be framed */
	if (s->close_after || s->client_eof) {
		s->reason = NULL;
		linger_start(s);
		return;
	}
	session_wait_request(s);
}

static void pump_response_body(struct session *s)
{
	bool done;
	if (!s->resp_head_done || s->resp_body_done || s->backend == NULL)
		return;
	struct evbuffer *out = conn_output(s->client);
	size_t before = evbuffer_get_length(out);
	ssize_t n = relay_body(s->resp_reader, conn_input(s->backend), out, s->resp_chunk_out,
			       s->backend_eof, &done);
	s->bytes_out += evbuffer_get_length(out) - before;
	if (n < 0) {
		exchange_abort_flush(s, s->backend_eof ? END_BACKEND_CUT : END_BAD_RESPONSE_BODY);
		return;
	}
	s->resp_body_done = done;
	if (done) {
		exchange_finish(s);
		return;
	}
	flow_control(s->backend, s->client, false);
}

/* ---- the response head ---- */

static void session_tunnel_done_cb(void *arg, enum end_cause cause, const char *detail)
{
	session_end(arg, cause, detail);
}

/* The sockets now belong to a tunnel or bridge: give the HTTP phase's memory back. */
static void http_phase_end(struct session *s, enum session_state next)
{
	s->state = next;
	clock_gettime(CLOCK_MONOTONIC, &s->tunnel_started);
	s->progress_logged = s->tunnel_started;
	count_tunnel_open(s);
	log_tunnel_event(s, "open");
	http_reader_free(s->req_reader);
	http_reader_free(s->resp_reader);
	s->req_reader = s->resp_reader = NULL;
	http_phase_free(s); /* the 101 access line already named the request */
	s->has_request = false;
}

static void session_start_tunnel(struct session *s)
{
	struct evbuffer *client_out = conn_output(s->client);
	struct tunnel_params p = {
	    .base = s->w->base,
	    /* splice needs plain sockets on both ends */
	    .mode = conn_can_splice(s->client) && conn_can_splice(s->backend) ? s->cfg->tunnel_mode
									      : CONFIG_TUNNEL_COPY,
	    .pipes = s->w->pipes,
	    .idle_ms = s->cfg->timeouts.tunnel_idle,
	    .max_ms = s->cfg->timeouts.tunnel_max,
	    .done = session_tunnel_done_cb,
	    .arg = s,
	};
	/* bytes read past either head go first, in order, exactly once */
	evbuffer_add_buffer(client_out, conn_input(s->backend));
	evbuffer_add_buffer(conn_output(s->backend), conn_input(s->client));
	timer_stop(s);
	conn_set_timeouts(s->backend, 0, 0); /* the tunnel has its own */
	log_access(s);
	s->tunnel = tunnel_start(&p, s->client, s->backend);
	s->client = s->backend = NULL; /* owned (or closed) by the tunnel now */
	if (s->tunnel == NULL) {
		session_end(s, END_INTERNAL, "cannot start tunnel");
		return;
	}
	http_phase_end(s, SESSION_TUNNEL);
}

static void relay_switch(struct session *s)
{
	const char *bad = upgrade_check_101(s->up, s->req, s->resp);
	if (bad) {
		count_upgrade(s, METRICS_UPGRADE_INVALID_101);
		session_error(s, 502, bad);
		return;
	}
	const struct http_header *upg = http_msg_find(s->resp, "Upgrade");
	char extra[512];
	int n = snprintf(extra, sizeof(extra), "Connection: Upgrade\r\nUpgrade: %.*s\r\n",
			 (int)upg->value_len, upg->value);
	if (n < 0 || (size_t)n >= sizeof(extra)) {
		count_upgrade(s, METRICS_UPGRADE_INVALID_101);
		session_error(s, 502, "101 Upgrade value too long");
		return;
	}
	count_upgrade(s, METRICS_UPGRADE_FORWARDED);
	snprintf(s->protocol, sizeof(s->protocol), "%.*s", (int)upg->value_len, upg->value);
	struct http_hdr_opts o = {.via = s->cfg->via, .extra = extra, .extra_len = (size_t)n};
	struct evbuffer *out = conn_output(s->client);
	size_t before = evbuffer_get_length(out);
	http_hdr_write_response(s->resp, &o, out);
	s->head101_len = evbuffer_get_length(out) - before;
	s->bytes_out += s->head101_len;
	s->status = 101;
	if (s->shutdown_requested) {
		/* the 101 raced a stop: deliver it, open no tunnel, close both ends */
		log_access(s);
		clock_gettime(CLOCK_MONOTONIC, &s->tunnel_started);
		log_tunnel(s, END_SHUTDOWN, "shutdown");
		backend_drop(s);
		linger_start(s);
		return;
	}
	session_start_tunnel(s);
}

static void relay_interim(struct session *s)
{
	/* 1xx is never sent to an HTTP/1.0 client (RFC 9110 §15.2) */
	if (s->req->version_minor == 0)
		return;
	struct http_hdr_opts o = {.via = s->cfg->via};
	struct evbuffer *out = conn_output(s->client);
	size_t before = evbuffer_get_length(out);
	http_hdr_write_response(s->resp, &o, out);
	s->bytes_out += evbuffer_get_length(out) - before;
}

static void relay_final_head(struct session *s)
{
	if (s->up->decision == UPGRADE_FORWARD)
		count_upgrade(s, METRICS_UPGRADE_BACKEND_NON_101);
	struct http_hdr_opts o = {.via = s->cfg->via};
	bool open_ended = s->resp->body == HTTP_BODY_CHUNKED || s->resp->body == HTTP_BODY_CLOSE;
	if (s->up->decision == UPGRADE_FORWARD || !s->req_body_done)
		s->close_after = true;
	if (open_ended && s->req->version_minor == 0)
		s->close_after = true; /* an HTTP/1.0 client only knows close-delimiting */
	s->resp_chunk_out = open_ended && s->req->version_minor == 1;
	o.chunked = s->resp_chunk_out;
	if (s->close_after)
		o.connection = "close";
	else if (s->req->version_minor == 0)
		o.connection = "keep-alive";
	struct evbuffer *out = conn_output(s->client);
	size_t before = evbuffer_get_length(out);
	http_hdr_write_response(s->resp, &o, out);
	s->bytes_out += evbuffer_get_length(out) - before;
	s->status = s->resp->status;
	s->resp_head_done = true;
	timer_stop(s);
	backend_timeouts(s, true);
	if (s->up->decision == UPGRADE_FORWARD)
		evbuffer_drain(conn_input(s->client), (size_t)-1); /* RFC 9931 */
}

/* Parse response heads until a final one (or a 101) has been relayed. */
static void read_response_head(struct session *s)
{
	struct evbuffer *in = conn_input(s->backend);
	while (!s->resp_head_done && s->state == SESSION_EXCHANGE) {
		size_t len = evbuffer_get_length(in), head_len = 0;
		struct http_error err = {502, "malformed response"};
		size_t scan = len < s->limits.header_bytes + 1 ? len : s->limits.header_bytes + 1;
		const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)scan);
		enum http_scan_result r =
		    http_head_scan(HTTP_MSG_RESPONSE, buf, scan, &s->limits, &head_len, &err);
		if (r == HTTP_SCAN_MORE)
			return;
		if (r == HTTP_SCAN_ERROR ||
		    http_reader_head(s->resp_reader, s->resp, buf, head_len, s->req->method,
				     &s->limits, &err) < 0) {
			session_error(s, 502, err.reason);
			return;
		}
		evbuffer_drain(in, head_len);
		if (s->resp->status == 101 || s->resp->status >= 200) {
			server_answered(s, s->resp->status);
			metrics_observe(&metrics_of(s)->response_time,
					elapsed_us(&s->request_sent));
		}
		if (s->resp->status == 101) {
			relay_switch(s);
			return;
		}
		if (s->resp->status >= 200) {
			relay_final_head(s);
			continue;
		}
		relay_interim(s);
		/* a client that does not read the 1xx flood stops our reading */
		flow_control(s->backend, s->client, false);
		if (evbuffer_get_length(conn_output(s->client)) >= SESSION_HIGH_WATER)
			return;
	}
}

static void exchange_pump(struct session *s)
{
	pump_request_body(s);
	if (s->state != SESSION_EXCHANGE || s->backend == NULL)
		return;
	read_response_head(s);
	if (s->state != SESSION_EXCHANGE)
		return;
	pump_response_body(s);
}

/* ---- terminated WebSocket ---- */

static bool subprotocol_listed(const struct config_route *r, const char *tok, size_t len)
{
	for (size_t i = 0; i < r->n_subprotocols; i++)
		if (strlen(r->subprotocols[i]) == len && memcmp(r->subprotocols[i], tok, len) == 0)
			return true;
	return false;
}

/* The first subprotocol the client offers that the route lists. 0, or -1 (400). */
static int choose_subprotocol(struct session *s)
{
	bool offered = false;
	const struct config_route *r = s->route;
	struct http_token_iter it = {0};
	const char *tok;
	size_t len;
	if (r->n_subprotocols == 0)
		return 0; /* none configured: the client's offer is simply not taken up */
	while (http_msg_next_token(s->req, "Sec-WebSocket-Protocol", &it, &tok, &len)) {
		offered = true;
		if (subprotocol_listed(r, tok, len)) {
			s->subprotocol = tok;
			s->subprotocol_len = len;
			return 0;
		}
	}
	return offered && r->require_subprotocol ? -1 : 0;
}

/* Browsers always send Origin; other clients may not, and are not refused for it. */
static bool origin_allowed(const struct session *s)
{
	const struct http_header *o = http_msg_find(s->req, "Origin");
	if (s->route->n_origins == 0 || o == NULL)
		return true;
	for (size_t i = 0; i < s->route->n_origins; i++)
		if (http_token_eq(o->value, o->value_len, s->route->origins[i]))
			return true;
	return false;
}

/* Answer the handshake ourselves: check, then connect the stream backend. */
static void terminate_dispatch(struct session *s)
{
	struct sockaddr_storage ss;
	socklen_t len;
	s->subprotocol = NULL;
	s->subprotocol_len = 0;
	if (s->up->decision != UPGRADE_FORWARD || !s->up->websocket) {
		count_upgrade(s, METRICS_UPGRADE_INVALID_HANDSHAKE);
		session_error(s, 426, "this route only accepts WebSocket");
		return;
	}
	if (!origin_allowed(s)) {
		count_upgrade(s, METRICS_UPGRADE_REFUSED_BY_POLICY);
		session_error(s, 403, "Origin not allowed");
		return;
	}
	if (choose_subprotocol(s) < 0) {
		count_upgrade(s, METRICS_UPGRADE_INVALID_HANDSHAKE);
		session_error(s, 400, "no acceptable WebSocket subprotocol");
		return;
	}
	if (upstream_bridge_addr(s->route, &ss, &len) < 0 ||
	    (s->backend = upstream_connect(s->w->base, (struct sockaddr *)&ss, len, NULL, NULL)) ==
		NULL) {
		session_error(s, 502, "WebSocket bridge backend unreachable");
		return;
	}
	conn_setcb(s->backend, backend_read_cb, backend_write_cb, backend_event_cb, s);
	s->state = SESSION_CONNECT;
	timer_arm(s, TIMER_CONNECT, s->cfg->timeouts.connect);
}

static void write_handshake_101(struct session *s)
{
	struct evbuffer *out = conn_output(s->client);
	size_t before = evbuffer_get_length(out);
	evbuffer_add_printf(out,
			    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
			    s->up->ws_accept);
	if (s->subprotocol)
		evbuffer_add_printf(out, "Sec-WebSocket-Protocol: %.*s\r\n",
				    (int)s->subprotocol_len, s->subprotocol);
	evbuffer_add(out, "\r\n", 2);
	s->bytes_out += evbuffer_get_length(out) - before;
	s->status = 101;
	count_upgrade(s, METRICS_UPGRADE_TERMINATED);
	snprintf(s->protocol, sizeof(s->protocol), "websocket");
}

static void terminate_connected(struct session *s)
{
	struct wsbridge_params p = {
	    .base = s->w->base,
	    .base64 = s->subprotocol && http_token_eq(s->subprotocol, s->subprotocol_len, "base64"),
	    .max_message = s->route->max_message,
	    .ping_ms = s->route->ping_interval,
	    .done = session_tunnel_done_cb,
	    .arg = s,
	};
	timer_stop(s);
	write_handshake_101(s);
	log_access(s);
	s->wsb = wsbridge_start(&p, s->client, s->backend);
	s->client = s->backend = NULL; /* owned (or closed) by the bridge now */
	if (s->wsb == NULL) {
		session_end(s, END_INTERNAL, "cannot start WebSocket bridge");
		return;
	}
	http_phase_end(s, SESSION_WEBSOCKET);
}

/* ---- callbacks ---- */

static void client_read_cb(struct conn *conn, void *arg)
{
	struct session *s = arg;
	switch (s->state) {
	case SESSION_READ_REQ:
		session_read_request(s);
		break;
	case SESSION_EXCHANGE:
		pump_request_body(s);
		break;
	case SESSION_LINGER:
		evbuffer_drain(conn_input(conn), (size_t)-1);
		break;
	default:
		break; /* CONNECT: keep the bytes until the request can be forwarded */
	}
}

static void client_write_cb(struct conn *conn, void *arg)
{
	struct session *s = arg;
	if (s->state == SESSION_LINGER) {
		if (evbuffer_get_length(conn_output(conn)) > 0)
			return;
		if (s->client_eof || s->stop_after_flush) {
			session_end(s, END_RESPONSE_DONE, NULL);
			return;
		}
		/* everything was said: half-close, then drain until the client closes */
		conn_shutdown_write(conn);
		timer_arm(s, TIMER_LINGER, SESSION_LINGER_MS);
		return;
	}
	if (s->state == SESSION_EXCHANGE && s->backend) {
		conn_set_write_low(conn, 0);
		if (!s->resp_head_done) { /* interim answers drained: on to the rest */
			conn_enable(s->backend, EV_READ);
			read_response_head(s);
		}
		pump_response_body(s);
	}
}

static void client_event_cb(struct conn *conn, short what, void *arg)
{
	struct session *s = arg;
	bool in_exchange = s->state == SESSION_EXCHANGE || s->state == SESSION_CONNECT;
	if (what & CONN_CONNECTED) {
		s->tls_ready = true; /* TLS handshake done */
		if (conn_alpn_is(conn, "h2"))
			session_start_h2(s);
		return;
	}
	if (s->tls_front && !s->tls_ready) {
		char why[256];
		log_msg(LOG_LEVEL_INFO, s->id, "TLS handshake failed: %s",
			conn_error(conn, why, sizeof(why)));
		session_end(s, END_TLS_HANDSHAKE, NULL);
		return;
	}
	/* an "EOF" while writing (TLS peer gone) means nothing more can be delivered */
	if (what & (CONN_TIMEOUT | CONN_ERROR | CONN_WRITING)) {
		enum end_cause why =
		    (what & CONN_TIMEOUT) ? END_SEND_TIMEOUT : END_CLIENT_CONN_ERROR;
		if (in_exchange)
			exchange_abort(s, why);
		else
			session_end(s, why, NULL);
		return;
	}
	/* EOF */
	s->client_eof = true;
	if (s->state == SESSION_EXCHANGE && !s->req_body_done) {
		pump_request_body(s);
		if (s->state == SESSION_EXCHANGE && !s->req_body_done)
			exchange_abort(s, END_CLIENT_CUT);
		return;
	}
	if (in_exchange ||
	    (s->state == SESSION_LINGER && evbuffer_get_length(conn_output(conn)) > 0)) {
		/* a half-closed client still gets its answer */
		conn_disable(conn, EV_READ);
		conn_enable(conn, EV_WRITE);
		return;
	}
	session_end(s, END_CLIENT_CLOSED, NULL);
}

static void backend_read_cb(struct conn *conn, void *arg)
{
	struct session *s = arg;
	s->backend_spoke = true;
	if (s->state == SESSION_EXCHANGE)
		exchange_pump(s);
}

/*
 * A pooled connection that fails before saying anything was most likely
 * closed by the backend as we reused it: send the (body-less) request again
 * on a fresh connection to the same server. Returns false if not applicable.
 */
static bool retry_fresh(struct session *s)
{
	if (!s->backend_reused || s->backend_spoke || s->resp_head_done)
		return false;
	log_msg(LOG_LEVEL_DEBUG, s->id, "pooled connection to %s closed; retrying", server_text(s));
	backend_drop(s);
	s->backend_eof = false;
	s->state = SESSION_CONNECT;
	connect_fresh(s);
	return true;
}

/* Methods whose request can be sent again (RFC 9110 §9.2.2). */
static bool method_idempotent(const struct http_msg *req)
{
	static const char *const names[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (req->method_len == strlen(names[i]) &&
		    memcmp(req->method_str, names[i], req->method_len) == 0)
			return true;
	return false;
}

/*
 * The server closed or reset the connection before a byte of its answer:
 * an idempotent request without a body lost nothing, so it goes to another
 * server (never the same one twice), within upstreams[].retries.
 */
static bool retry_other(struct session *s, const char *what)
{
	const struct config_upstream *u = &s->cfg->upstreams[s->upstream];
	uint64_t tried = s->tried | UINT64_C(1) << s->server;
	if (s->resp_head_done || s->backend_spoke || s->req->body != HTTP_BODY_NONE ||
	    !method_idempotent(s->req) || s->attempts > u->retries ||
	    (size_t)__builtin_popcountll(tried) >= u->n_servers)
		return false; /* then the 502 says what this server did */
	log_msg(LOG_LEVEL_WARN, s->id, "%s %s before answering; trying another server",
		server_text(s), what);
	snprintf(s->hp->connect_error, sizeof(s->hp->connect_error), "%s %s", server_text(s), what);
	backend_drop(s);
	s->backend_eof = false;
	s->tried = tried;
	s->state = SESSION_CONNECT;
	connect_next(s);
	return true;
}

static void backend_write_cb(struct conn *conn, void *arg)
{
	struct session *s = arg;
	if (s->state != SESSION_EXCHANGE)
		return;
	conn_set_write_low(conn, 0);
	pump_request_body(s);
}

/* The backend closed or failed: a retry, or a failure it is marked with. */
static bool backend_gone(struct session *s, const char *what)
{
	char why[64];
	if (retry_fresh(s))
		return true;
	if (!s->resp_head_done && !s->backend_spoke) {
		snprintf(why, sizeof(why), "%s before answering", what);
		server_failed(s, why);
	}
	return retry_other(s, what);
}

static void backend_eof(struct session *s)
{
	if (backend_gone(s, "closed"))
		return;
	s->backend_eof = true;
	if (!s->resp_head_done)
		session_error(s, 502, "backend closed before a complete response head");
	else
		pump_response_body(s);
}

/* The backend took no request bytes for timeouts.send, or sent no body
 * bytes for timeouts.response (see backend_timeouts). */
static void backend_stalled(struct session *s, bool writing)
{
	log_msg(LOG_LEVEL_WARN, s->id, "%s %s", server_text(s),
		writing ? "did not read the request in time" : "stalled in the response body");
	if (!s->resp_head_done)
		session_error(s, 504, "backend did not read the request in time");
	else
		exchange_abort_flush(s, END_BACKEND_TIMEOUT);
}

static void backend_event_cb(struct conn *conn, short what, void *arg)
{
	struct session *s = arg;
	if (s->state == SESSION_CONNECT) {
		bool terminate = s->route->upgrade == CONFIG_UPGRADE_TERMINATE;
		if (what & CONN_CONNECTED)
			terminate ? terminate_connected(s) : backend_connected(s);
		else if (terminate)
			session_error(s, 502, "WebSocket bridge backend unreachable");
		else {
			char why[256];
			connect_failed(s, conn_error(conn, why, sizeof(why)));
		}
		return;
	}
	if (s->state != SESSION_EXCHANGE)
		return;
	if (what & CONN_EOF) {
		backend_eof(s);
		return;
	}
	if (what & CONN_TIMEOUT) {
		backend_stalled(s, what & CONN_WRITING);
		return;
	}
	if (backend_gone(s, "failed"))
		return;
	if (!s->resp_head_done)
		session_error(s, 502, "backend connection error");
	else
		exchange_abort_flush(s, END_BACKEND_FAILED);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	switch (s->timer_kind) {
	case TIMER_FREE:
		session_free(s);
		return;
	case TIMER_KEEPALIVE:
		session_end(s, END_KEEPALIVE_TIMEOUT, NULL);
		return;
	case TIMER_HEADER:
		if (s->tls_front && !s->tls_ready) {
			log_msg(LOG_LEVEL_INFO, s->id, "TLS handshake not finished in time");
			session_end(s, END_TLS_TIMEOUT, NULL);
			return;
		}
		session_error(s, 408, "request head not received in time");
		return;
	case TIMER_CONNECT:
		if (s->route->upgrade == CONFIG_UPGRADE_TERMINATE)
			session_error(s, 504, "WebSocket bridge backend: connect timeout");
		else
			connect_failed(s, "connect timeout");
		return;
	case TIMER_RESPONSE:
		session_error(s, 504, "no response head from the backend in time");
		return;
	case TIMER_LINGER:
		session_end(s, END_LINGER_DONE, NULL);
		return;
	case TIMER_DRAIN:
		session_stop(s, END_ROUTE_REMOVED, false);
		return;
	case TIMER_NONE:
		return;
	}
}

/* ---- lifecycle ---- */

static void format_peer(struct session *s, const struct sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN];
	int port = 0;
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		port = ntohs(in6->sin6_port);
		snprintf(s->client_addr, sizeof(s->client_addr), "[%s]:%d", ip, port);
		return;
	}
	const struct sockaddr_in *in = (const void *)sa;
	inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
	port = ntohs(in->sin_port);
	snprintf(s->client_addr, sizeof(s->client_addr), "%s:%d", ip, port);
}

static void session_free_partial(struct session *s)
{
	if (s->client)
		conn_free(s->client);
	http_reader_free(s->req_reader);
	http_reader_free(s->resp_reader);
	http_phase_free(s);
	if (s->timer)
		event_free(s->timer);
	worker_gen_release(s->wg);
	free(s);
}

/* Allocate a session around fd (or an HTTP/2 stream's conn); NULL (fd closed,
 * stream freed) on failure. */
static struct session *session_new(struct worker *w, int fd, struct tls_server *tls,
				   struct conn *stream)
{
	struct session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		if (stream)
			conn_free(stream);
		else
			close(fd);
		return NULL;
	}
	s->w = w;
	s->wg = worker_gen_hold(w->current);
	s->cfg = s->wg->gen->cfg;
	s->server = -1;
	s->limits = (struct http_limits){s->cfg->limits.header_bytes, s->cfg->limits.header_fields,
					 s->cfg->limits.uri_bytes};
	if ((s->hp = calloc(1, sizeof(*s->hp))) != NULL) {
		s->req = &s->hp->req;
		s->resp = &s->hp->resp;
		s->up = &s->hp->up;
		http_msg_init(s->req, HTTP_MSG_REQUEST);
		http_msg_init(s->resp, HTTP_MSG_RESPONSE);
	}
	s->timer = evtimer_new(w->base, timer_cb, s);
	s->req_reader = http_reader_new(HTTP_MSG_REQUEST);
	s->resp_reader = http_reader_new(HTTP_MSG_RESPONSE);
	s->tls_front = tls != NULL;
	/* on failure both close fd */
	if (stream)
		s->client = stream;
	else
		s->client = tls ? tls_server_accept(tls, w->base, fd)
				: conn_new(w->base, fd, NULL, CONN_PLAIN);
	if (!s->timer || !s->req_reader || !s->resp_reader || !s->hp || !s->client) {
		session_free_partial(s);
		return NULL;
	}
	s->id = w->next_session_id += w->count;
	return s;
}

/* The client side's watermark and send timeout. */
static void session_setup_client(struct session *s)
{
	/* bound what one client can make us buffer while a response is in flight */
	size_t high = s->limits.header_bytes + 1 > SESSION_HIGH_WATER ? s->limits.header_bytes + 1
								      : SESSION_HIGH_WATER;
	conn_set_read_high(s->client, high);
	conn_set_timeouts(s->client, 0, s->cfg->timeouts.send);
}

void session_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t len,
		    size_t listen)
{
	const struct worker_gen *wg = w->current;
	struct session *s = session_new(w, fd, wg->gen->listen_tls[listen], NULL);
	if (s == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "out of memory accepting a connection");
		return;
	}
	(void)len;
	s->h2c = wg->gen->cfg->listens[listen].h2c;
	format_peer(s, sa);
	worker_session_added(w, s);
	metrics_gauge(&metrics_of(s)->connections_open, 1);
	metrics_add(&metrics_of(s)->connections_total, 1);
	session_setup_client(s);
	clock_gettime(CLOCK_MONOTONIC, &s->started);
	session_wait_request(s);
	/* a new connection has no keep-alive grace: the header clock runs now */
	if (s->state == SESSION_READ_REQ)
		timer_arm(s, TIMER_HEADER, s->cfg->timeouts.header);
}

void session_shutdown(struct session *s)
{
	s->shutdown_requested = true;
	s->close_after = true;
	if (s->state == SESSION_H2) {
		h2_goaway(s->h2); /* its streams finish (they are shut down on their own) */
		return;
	}
	if (s->state == SESSION_READ_REQ && evbuffer_get_length(conn_input(s->client)) == 0)
		session_end(s, END_SHUTDOWN, NULL);
}

void session_stop(struct session *s, enum end_cause cause, bool now)
{
	switch (s->state) {
	case SESSION_WEBSOCKET:
		if (!now) {
			wsbridge_going_away(s->wsb, cause); /* the bridge ends it after 1001 */
			break;
		}
		session_end(s, cause, NULL);
		break;
	case SESSION_CONNECT:
	case SESSION_EXCHANGE:
		if (now) {
			exchange_abort(s, cause);
			break;
		}
		s->stop_after_flush = true;
		exchange_abort_flush(s, cause);
		break;
	case SESSION_LINGER: /* an answer is on its way: deliver it, then close */
		s->stop_after_flush = true;
		if (now || evbuffer_get_length(conn_output(s->client)) == 0)
			session_end(s, cause, NULL);
		break;
	default: /* a tunnel is logged by session_end */
		session_end(s, cause, NULL);
		break;
	}
}

void session_server_down(struct session *s, const struct health_server *hs, bool force)
{
	if (s->held == NULL || s->held->health != hs || !session_is_tunnel(s) ||
	    (!force && s->cfg->upstreams[s->upstream].on_down != CONFIG_ON_DOWN_CLOSE))
		return;
	session_stop(s, END_SERVER_DOWN, false);
}

bool session_is_tunnel(const struct session *s)
{
	return s->state == SESSION_TUNNEL || s->state == SESSION_WEBSOCKET;
}

const struct config_route *session_route(const struct session *s)
{
	return s->route;
}

const struct config *session_config(const struct session *s)
{
	return s->cfg;
}

void session_drain(struct session *s, uint64_t delay_ms)
{
	if (!session_is_tunnel(s) || s->timer_kind == TIMER_DRAIN)
		return;
	if (delay_ms == 0)
		session_stop(s, END_ROUTE_REMOVED, false);
	else
		timer_arm(s, TIMER_DRAIN, delay_ms);
}

/* splice / copy, "tls" when either side is TLS, "terminate" for a bridge. */
static const char *tunnel_mode_of(const struct session *s)
{
	if (s->wsb)
		return "terminate";
	if (s->tls_front ||
	    (s->upstream != CONFIG_NO_UPSTREAM && s->cfg->upstreams[s->upstream].tls.enabled))
		return "tls";
	return s->tunnel ? tunnel_mode_str(s->tunnel) : "none";
}

void session_reload(struct session *s)
{
	/* new settings and listeners apply to new connections: clients reconnect */
	if (s->state == SESSION_H2)
		h2_goaway(s->h2);
}

void session_tick(struct session *s)
{
	bool client_side;
	if (s->h2)
		h2_tick(s->h2);
	conn_tick(s->client); /* the HTTP phase's TLS buffers, while idle */
	conn_tick(s->backend);
	if (s->tunnel)
		tunnel_tick(s->tunnel);
	if (s->wsb)
		wsbridge_tick(s->wsb);
	if (!s->tunnel_counted)
		return;
	count_tunnel_bytes(s);
	/* a side that takes no bytes for timeouts.send ends the tunnel, as it would
	 * end an exchange (checked each second: the bound is send + 1 s) */
	if (s->tunnel && s->cfg->timeouts.send &&
	    tunnel_stalled_ms(s->tunnel, &client_side) >= s->cfg->timeouts.send) {
		session_end(s, client_side ? END_SEND_TIMEOUT : END_BACKEND_TIMEOUT, NULL);
		return;
	}
	if (s->cfg->log_interval == 0 || elapsed_ms(&s->progress_logged) < s->cfg->log_interval)
		return;
	clock_gettime(CLOCK_MONOTONIC, &s->progress_logged);
	log_tunnel_event(s, "progress");
}

bool session_matches(const struct session *s, const char *route, const char *server)
{
	const char *srv = server_text(s);
	return session_is_tunnel(s) &&
	       (!route || (s->route && strcmp(s->route->name, route) == 0)) &&
	       (!server || (srv && strcmp(srv, server) == 0));
}

void session_describe(const struct session *s, struct evbuffer *out)
{
	struct log_json j;
	uint64_t up, down;
	bool pooled = s->upstream != CONFIG_NO_UPSTREAM;

	tunnel_bytes_of(s, &up, &down);
	log_json_begin(&j);
	log_json_num(&j, "id", s->id);
	log_json_num(&j, "worker", s->w->index);
	log_json_cstr(&j, "route", s->route->name);
	log_json_cstr(&j, "upstream", pooled ? s->cfg->upstreams[s->upstream].name : NULL);
	log_json_cstr(&j, "server", server_text(s));
	log_json_cstr(&j, "client", s->client_addr);
	log_json_cstr(&j, "protocol", s->protocol);
	log_json_cstr(&j, "mode", tunnel_mode_of(s));
	log_json_num(&j, "age_ms", elapsed_ms(&s->tunnel_started));
	if (s->tunnel)
		log_json_num(&j, "idle_ms", tunnel_idle_ms(s->tunnel));
	log_json_num(&j, "bytes_up", up);
	log_json_num(&j, "bytes_down", down);
	log_json_num(&j, "generation", s->wg->gen->id);
	log_json_end(&j);
	evbuffer_add(out, j.buf, j.len);
}

struct session *session_next(const struct session *s)
{
	return s->next;
}

void session_link(struct session **head, struct session *s)
{
	s->prev = NULL;
	s->next = *head;
	if (*head)
		(*head)->prev = s;
	*head = s;
}

void session_unlink(struct session **head, struct session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		*head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
}
