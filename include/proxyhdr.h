/*
 * proxyhdr: reads the PROXY protocol header (proxyproto.c) off a freshly
 * accepted connection, before it becomes a session, for listeners behind a
 * load balancer (listen[].proxy_protocol). The header is peeked and then
 * exactly its bytes are consumed, so nothing after it is read here: a TLS
 * handshake or an HTTP request that follows is left in the socket.
 */
#ifndef SY_PROXYHDR_H
#define SY_PROXYHDR_H

#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct proxyhdr;

/*
 * Called once: with the client address the header carries (or the
 * connection's own for LOCAL / UNKNOWN) when it was valid, the fd then
 * belongs to the callee; or with sa NULL and why set when it was not (or
 * timed out), the fd is already closed. The reader is freed after the call.
 */
typedef void (*proxyhdr_done_cb)(void *arg, int fd, const struct sockaddr *sa, socklen_t len,
				 const char *why);

/*
 * Start reading the header on fd (a non-blocking socket accepted from peer
 * sa), giving up after timeout_ms. Readers are kept on the list *head so
 * that the owner can drop them all (proxyhdr_free_all). NULL on failure
 * (fd closed).
 */
struct proxyhdr *proxyhdr_start(struct event_base *base, int fd, const struct sockaddr *sa,
				socklen_t len, uint64_t timeout_ms, proxyhdr_done_cb done,
				void *arg, struct proxyhdr **head);

/* Close and free every reader on the list (a stop): each callback is
 * called with sa NULL and why "stopping". */
void proxyhdr_free_all(struct proxyhdr **head);

#endif
