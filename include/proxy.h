/*
 * proxy: the running generation: config, per-upstream balancing state,
 * listeners, the list of live sessions and the pipe pool. Sessions reach the
 * config only through their proxy pointer, never through a global, so a
 * later reload can run two generations side by side.
 */
#ifndef SY_PROXY_H
#define SY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct event;
struct balance_pool;
struct fdlimit_plan;
struct listener;
struct session;
struct splice_pool;
struct tls_server;
struct tls_client;

/* A listening socket and what a connection accepted on it needs. */
struct proxy_listener {
	struct proxy *px;
	struct listener *l;
	struct tls_server *tls; /* NULL = plain */
};

struct proxy {
	struct event_base *base;
	const struct config *cfg;
	struct balance_pool **pools;	  /* one per cfg->upstreams[i] */
	struct tls_client **upstream_tls; /* one per upstream; NULL = plain */
	struct upstream_idle **idle;	  /* [upstream][server]: keep-alive connections */
	struct proxy_listener *listeners;
	size_t n_listeners;
	struct session *sessions; /* intrusive list, for graceful stop */
	size_t n_sessions;
	uint64_t next_session_id;
	size_t max_connections; /* the config's, or fewer when descriptors are short */
	bool paused;		/* accepting stopped at max_connections or on EMFILE */
	bool stopping;		/* SIGTERM received: finish exchanges, then exit */
	struct event *stop_timer;
	struct event *resume_timer;
	struct splice_pool *pipes;
};

/* Bind every listener and start accepting, within the connection and pipe
 * limits of fds. NULL on failure (logged). */
struct proxy *proxy_new(struct event_base *base, const struct config *cfg,
			const struct fdlimit_plan *fds);
void proxy_free(struct proxy *px);

/* Stop accepting, close idle connections and tunnels, let exchanges finish. */
void proxy_stop(struct proxy *px);

/* The process ran out of descriptors: stop accepting until a session ends. */
void proxy_out_of_fds(struct proxy *px);

/* Session accounting: called by session.c only. */
void proxy_session_added(struct proxy *px, struct session *s);
void proxy_session_removed(struct proxy *px, struct session *s);

#endif
