/*
 * listener: one bound listening socket. Binding is separate from accepting
 * so that a reload can bind every new address (for every worker) before it
 * commits to anything. Accepts in a batch and hands each connection to the
 * callback; can be paused without closing the socket.
 */
#ifndef SY_LISTENER_H
#define SY_LISTENER_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

struct event_base;
struct listener;

typedef void (*listener_accept_cb)(void *arg, int fd, const struct sockaddr *sa, socklen_t len);
/* Called when accept fails for lack of fds (EMFILE/ENFILE). */
typedef void (*listener_full_cb)(void *arg);

/*
 * A bound, listening, non-blocking socket for addr (SO_REUSEPORT when
 * several workers each listen on it). fd, or -1 with errno and the reason
 * logged as "cannot listen on ADDR: ...".
 */
int listener_bind(const struct config_addr *addr, bool reuseport);

/* Accept on a listening fd from listener_bind() (taken, also on failure)
 * in base; name is for logs. NULL on failure. */
struct listener *listener_new(struct event_base *base, int fd, const char *name,
			      listener_accept_cb on_accept, listener_full_cb on_full, void *arg);
void listener_free(struct listener *l);
void listener_pause(struct listener *l);
void listener_resume(struct listener *l);

#endif
