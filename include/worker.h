/*
 * worker: one event loop and everything that runs on it: its listening
 * sockets (its own, with SO_REUSEPORT when there are several workers), its
 * sessions, pipe pool, per-upstream balancing state and idle connections,
 * and its pause state. Only the worker's own thread touches it; other
 * threads hand it work with worker_post_*().
 *
 * A worker runs a generation through a struct worker_gen, which adds the
 * worker's mutable per-upstream state to the shared read-only generation.
 * Sessions hold the worker_gen they started with, so a reload swaps
 * `current` for new connections while old exchanges and tunnels go on.
 */
#ifndef SY_WORKER_H
#define SY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_base;
struct event;
struct generation;
struct listener;
struct proxyhdr;
struct session;
struct splice_pool;
struct upstream_rt;
struct upstream_server;

struct worker_gen {
	unsigned refs; /* the worker while current, plus one per session */
	bool retired;  /* a reload replaced it: connections are no longer parked */
	struct worker *w;
	struct generation *gen;
	struct upstream_rt *ups; /* [gen->cfg->n_upstreams] */
};

struct worker_listener {
	struct worker *w;
	struct listener *l;
	struct config_addr addr; /* matched across reloads */
	size_t listen;		 /* index in the current generation's listens (TLS) */
};

struct worker_msg;

/* How the worker's share of the process limits is set (fdlimit.h). */
struct worker_limits {
	size_t max_connections;
	size_t max_pipes;
};

struct worker {
	unsigned index, count; /* this worker, and how many there are */
	struct event_base *base;
	struct worker_gen *current;
	_Atomic uint64_t running; /* current->gen->id, readable from any thread */
	struct worker_listener **listeners;
	size_t n_listeners;
	struct session *sessions; /* intrusive list */
	size_t n_sessions;
	struct proxyhdr *proxyhdrs; /* connections still sending their PROXY header */
	size_t n_pending;
	uint64_t next_session_id;
	size_t max_connections; /* this worker's share */
	bool paused;		/* accepting stopped at max_connections or on EMFILE */
	bool stopping;		/* finish exchanges, then exit */
	bool grace_over;	/* timeouts.shutdown_grace passed: ending everything */
	struct event *stop_timer;
	struct event *resume_timer;
	struct event *progress_timer; /* tunnel bytes into the metrics, log_interval lines */
	struct splice_pool *pipes;
	struct upstream_server *servers; /* registry: the servers its generations have */
	uint64_t rng;			 /* xorshift state for balance = "random" */
	/* messages from other threads */
	pthread_mutex_t lock;
	struct worker_msg *inbox;
	bool inbox_closed; /* the loop has ended (or is ending): posts are answered at once */
	struct event *inbox_ev;
	pthread_t thread;
	bool threaded;
	/* called on the worker's thread when a stop has finished (once), and
	 * when it has switched to a reloaded generation */
	void (*done)(struct worker *w, void *arg);
	void (*reloaded)(struct worker *w, void *arg);
	void *done_arg;
	bool done_called;
};

/*
 * A worker on base running gen (one reference taken) with listening fds
 * (one per gen listen, taken, also on failure). NULL on failure (logged).
 */
struct worker *worker_new(unsigned index, unsigned count, struct event_base *base,
			  struct generation *gen, int *fds, const struct worker_limits *lim);
void worker_free(struct worker *w);

/* Run the loop on a thread of its own (workers 1..N-1). 0 / -1. */
int worker_start_thread(struct worker *w);
void worker_join(struct worker *w);

/*
 * Hand over a new generation (a reference is taken) with the listening fds
 * for the addresses it adds (fds[i] for gen's listen i, -1 where the worker
 * keeps its socket; taken). Any thread.
 */
void worker_post_reload(struct worker *w, struct generation *gen, int *fds,
			const struct worker_limits *lim);
/* hs went down: end the tunnels to it where the upstream says on_down = "close",
 * or all of them with force (maint). Any thread. */
struct health_server;
void worker_post_server_down(struct worker *w, struct health_server *hs, bool force);
/* Graceful stop (SIGTERM) or immediate (SIGQUIT). Any thread. */
void worker_post_stop(struct worker *w, bool now);

/*
 * The admin's /tunnels: every worker describes its live tunnels matching
 * route and server (NULL: any), at most limit each, on its own thread; cb
 * runs on base once all have answered, with the JSON objects separated by
 * commas. worker_tunnels_cancel() before then: cb never runs.
 */
struct evbuffer;
struct worker_tunnels;
typedef void (*worker_tunnels_cb)(struct evbuffer *json, size_t count, void *arg);
struct worker_tunnels *worker_tunnels_query(struct worker **workers, unsigned n, const char *route,
					    const char *server, size_t limit,
					    struct event_base *base, worker_tunnels_cb cb,
					    void *arg);
void worker_tunnels_cancel(struct worker_tunnels *q);

/* The worker ran out of descriptors: stop accepting until a session ends. */
void worker_out_of_fds(struct worker *w);

/* Fresh randomness for balancing (not for anything secret). */
uint64_t worker_random(struct worker *w);

/* Session accounting and generation holds: called by session.c only. */
void worker_session_added(struct worker *w, struct session *s);
void worker_session_removed(struct worker *w, struct session *s);
struct worker_gen *worker_gen_hold(struct worker_gen *wg);
void worker_gen_release(struct worker_gen *wg);

#endif
