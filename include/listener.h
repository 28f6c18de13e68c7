/*
 * listener: one bound listening socket. Accepts in a batch and hands each
 * connection to the callback; can be paused without closing the socket.
 */
#ifndef SY_LISTENER_H
#define SY_LISTENER_H

#include <sys/socket.h>

#include "config.h"

struct event_base;
struct listener;

typedef void (*listener_accept_cb)(void *arg, int fd, const struct sockaddr *sa, socklen_t len);
/* Called when accept fails for lack of fds (EMFILE/ENFILE). */
typedef void (*listener_full_cb)(void *arg);

struct listener *listener_new(struct event_base *base, const struct config_addr *addr,
			      listener_accept_cb on_accept, listener_full_cb on_full, void *arg);
void listener_free(struct listener *l);
void listener_pause(struct listener *l);
void listener_resume(struct listener *l);

#endif
