/*
 * session: one client connection, from accept to close. Serves keep-alive
 * and pipelined requests one at a time, forwards each to an upstream server,
 * and turns into a tunnel after a valid 101. session_close() is the one
 * teardown path.
 */
#ifndef SY_SESSION_H
#define SY_SESSION_H

#include <sys/socket.h>

struct session;
struct worker;

struct tls_server;

/* Take a freshly accepted socket (closed on failure); tls: the listener's TLS or NULL. */
void session_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t len,
		    struct tls_server *tls);

/* Graceful stop: close when idle, after the current exchange otherwise. */
void session_shutdown(struct session *s);

/* Close now with a reason (tunnels and idle connections at stop). */
void session_close(struct session *s, const char *reason);

/* Intrusive list link, used by worker.c. */
struct session *session_next(const struct session *s);
void session_link(struct session **head, struct session *s);
void session_unlink(struct session **head, struct session *s);

#endif
