/*
 * session: one client connection, from accept to close. Serves keep-alive
 * and pipelined requests one at a time, forwards each to an upstream server,
 * and turns into a tunnel after a valid 101. session_close() is the one
 * teardown path.
 */
#ifndef SY_SESSION_H
#define SY_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "end.h"

struct config_route;
struct session;
struct worker;

struct tls_server;

/* Take a freshly accepted socket (closed on failure) from the current
 * generation's listener number listen (its TLS, its h2c). */
void session_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t len,
		    size_t listen);

/* Graceful stop: close when idle, after the current exchange otherwise;
 * tunnels go on (session_stop ends them when the grace is over). */
void session_shutdown(struct session *s);

/*
 * End now, saying why: a tunnel is closed and logged, a terminated
 * WebSocket gets close 1001 first (unless now), an exchange in flight is cut
 * and logged (what was relayed is still delivered, unless now), anything
 * else closed.
 */
void session_stop(struct session *s, enum end_cause cause, bool now);

/* A reload happened: an HTTP/2 connection sends GOAWAY (its streams finish,
 * new requests come on a new connection, under the new config). */
void session_reload(struct session *s);

/* Is the session a tunnel or a terminated WebSocket? */
bool session_is_tunnel(const struct session *s);
/* Its route, NULL before routing, and the config that route belongs to. */
const struct config_route *session_route(const struct session *s);
const struct config *session_config(const struct session *s);
/* A tunnel of a route a reload removed: stop it after delay_ms ("route
 * removed"); once only. Not a tunnel: nothing. */
void session_drain(struct session *s, uint64_t delay_ms);

/* Every second or log_interval: a tunnel's bytes so far go into the
 * metrics, and a progress line is logged when one is due. */
void session_tick(struct session *s);
/* Is s a tunnel of route (NULL: any) to server ("10.0.0.5:9000", NULL: any)? */
bool session_matches(const struct session *s, const char *route, const char *server);
/* s (a tunnel) as one JSON object for the admin's /tunnels. */
struct evbuffer;
void session_describe(const struct session *s, struct evbuffer *out);

/* hs went down: a tunnel to it ends if its upstream says on_down = "close"
 * or force (the operator's maint). */
struct health_server;
void session_server_down(struct session *s, const struct health_server *hs, bool force);

/*
 * The one end of every session: a tunnel's access line, the debug line,
 * then the teardown (the free is deferred to the session's own event, so
 * the callback that called it may return safely). Once only.
 */
void session_end(struct session *s, enum end_cause cause, const char *detail);

/* Intrusive list link, used by worker.c. */
struct session *session_next(const struct session *s);
void session_link(struct session **head, struct session *s);
void session_unlink(struct session **head, struct session *s);

#endif
