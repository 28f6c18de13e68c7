/*
 * worker: one event loop with its listeners, sessions and per-upstream
 * state (see worker.h). Pauses its listeners at its share of
 * max_connections or when accept runs out of descriptors, resuming as soon
 * as a session ends (or after a short delay when none is left to end), so a
 * full worker never spins on accept. Reloads and stops arrive as messages
 * in the inbox and run on the worker's own thread.
 */
#include "worker.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "generation.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "proxyhdr.h"
#include "session.h"
#include "splice.h"
#include "upstream.h"

#define WORKER_PIPE_POOL 1024 /* idle pipes kept for splice */
#define WORKER_RESUME_MS 250  /* retry accept after EMFILE with no session to wait for */
#define WORKER_CLOSE_MS 3000  /* after the grace: WebSocket close handshakes (2 s bound) */

enum worker_msg_kind { MSG_RELOAD, MSG_STOP, MSG_QUIT, MSG_SERVER_DOWN, MSG_TUNNELS };

struct worker_msg {
	enum worker_msg_kind kind;
	struct health_server *hs;	/* MSG_SERVER_DOWN (a reference) */
	bool force;			/* ... for maint: whatever on_down says */
	struct worker_tunnels *tunnels; /* MSG_TUNNELS (a reference) */
	struct generation *gen;		/* MSG_RELOAD */
	int *fds;			/* MSG_RELOAD: [gen listens], -1 = keep */
	struct worker_limits lim;
	struct worker_msg *next;
};

/* ---- a generation as this worker runs it ---- */

static void worker_gen_free(struct worker_gen *wg)
{
	for (size_t i = 0; wg->ups && i < wg->gen->cfg->n_upstreams; i++)
		upstream_rt_fini(&wg->ups[i], &wg->w->servers);
	free(wg->ups);
	generation_unref(wg->gen);
	free(wg);
}

static struct worker_gen *worker_gen_new(struct worker *w, struct generation *gen)
{
	struct worker_gen *wg = calloc(1, sizeof(*wg));
	if (wg == NULL)
		return NULL;
	wg->refs = 1;
	wg->w = w;
	wg->gen = generation_ref(gen);
	const struct config *cfg = gen->cfg;
	if ((wg->ups = calloc(cfg->n_upstreams + 1, sizeof(*wg->ups))) == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (upstream_rt_init(&wg->ups[i], &cfg->upstreams[i], cfg->timeouts.keepalive,
				     gen->rings[i], gen->health, &w->servers) < 0)
			goto fail;
	return wg;
fail:
	worker_gen_free(wg);
	return NULL;
}

uint64_t worker_random(struct worker *w)
{
	/* xorshift64*: cheap, and good enough to pick two servers */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * UINT64_C(2685821657736338717);
}

struct worker_gen *worker_gen_hold(struct worker_gen *wg)
{
	wg->refs++;
	return wg;
}

void worker_gen_release(struct worker_gen *wg)
{
	if (wg && --wg->refs == 0)
		worker_gen_free(wg);
}

static bool worker_gen_has(const struct worker_gen *wg, const struct upstream_server *srv)
{
	for (size_t i = 0; i < wg->gen->cfg->n_upstreams; i++)
		for (size_t j = 0; j < wg->ups[i].cfg->n_servers; j++)
			if (wg->ups[i].servers[j] == srv)
				return true;
	return false;
}

/*
 * A reload replaced old with next: old parks no more connections, and the
 * idle ones of servers that next does not have are closed now rather than
 * when old's (or an older generation's) last tunnel ends. Servers that stay
 * are the same objects in both, so their idle connections and load carry
 * over.
 */
static void worker_gen_retire(struct worker_gen *old, const struct worker_gen *next)
{
	old->retired = true;
	for (size_t i = 0; i < old->gen->cfg->n_upstreams; i++)
		for (size_t j = 0; j < old->ups[i].cfg->n_servers; j++)
			if (!worker_gen_has(next, old->ups[i].servers[j]))
				upstream_idle_drain(&old->ups[i].servers[j]->idle);
}

/* ---- accepting ---- */

static void worker_pause(struct worker *w)
{
	if (w->paused)
		return;
	w->paused = true;
	for (size_t i = 0; i < w->n_listeners; i++)
		listener_pause(w->listeners[i]->l);
}

static void worker_resume(struct worker *w)
{
	if (!w->paused || w->stopping || w->n_sessions + w->n_pending >= w->max_connections)
		return;
	w->paused = false;
	for (size_t i = 0; i < w->n_listeners; i++)
		listener_resume(w->listeners[i]->l);
}

/* The index of addr in the current generation's listens, or -1 (a reload removed it). */
static long current_listen(const struct worker *w, const struct config_addr *addr)
{
	const struct config *cfg = w->current->gen->cfg;
	for (size_t i = 0; i < cfg->n_listens; i++)
		if (config_addr_equal(&cfg->listens[i].addr, addr))
			return (long)i;
	return -1;
}

struct worker_pending {
	struct worker *w;
	struct config_addr addr; /* the listener it came in on */
};

/* A PROXY header was read (or not): the connection becomes a session now. */
static void worker_proxyhdr_cb(void *arg, int fd, const struct sockaddr *sa, socklen_t len,
			       const char *why)
{
	struct worker_pending *pw = arg;
	struct worker *w = pw->w;
	long i = sa ? current_listen(w, &pw->addr) : -1;
	w->n_pending--;
	if (sa == NULL)
		log_msg(LOG_LEVEL_INFO, 0, "PROXY protocol on %s: %s", pw->addr.text, why);
	else if (i < 0)
		close(fd); /* a reload removed its listener meanwhile */
	else
		session_accept(w, fd, sa, len, (size_t)i);
	free(pw);
	worker_resume(w);
}

static void worker_accept_cb(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct worker_listener *wl = arg;
	struct worker *w = wl->w;
	const struct config *cfg = w->current->gen->cfg;
	if (!cfg->listens[wl->listen].proxy_protocol) {
		session_accept(w, fd, sa, len, wl->listen);
		return;
	}
	struct worker_pending *pw = calloc(1, sizeof(*pw));
	if (pw == NULL) {
		close(fd);
		return;
	}
	*pw = (struct worker_pending){.w = w, .addr = wl->addr};
	if (proxyhdr_start(w->base, fd, sa, len, cfg->timeouts.header, worker_proxyhdr_cb, pw,
			   &w->proxyhdrs) == NULL) {
		free(pw);
		return;
	}
	/* it holds a descriptor like a session: it counts against the limit */
	if (++w->n_pending + w->n_sessions >= w->max_connections)
		worker_pause(w);
}

void worker_out_of_fds(struct worker *w)
{
	struct timeval tv = {0, WORKER_RESUME_MS * 1000};
	worker_pause(w);
	event_add(w->resume_timer, &tv); /* in case no session ends soon */
}

static void worker_full_cb(void *arg)
{
	worker_out_of_fds(((struct worker_listener *)arg)->w);
}

static void worker_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	worker_resume(arg);
}

void worker_session_added(struct worker *w, struct session *s)
{
	session_link(&w->sessions, s);
	if (++w->n_sessions + w->n_pending >= w->max_connections)
		worker_pause(w);
}

static void worker_msg_free(struct worker_msg *m);

/* A message never handled: the listening sockets of a reload are closed. */
static void worker_msg_drop(struct worker_msg *m)
{
	for (size_t i = 0; m->kind == MSG_RELOAD && i < m->gen->cfg->n_listens; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	worker_msg_free(m);
}

/* The loop is about to end: nothing posted from now on will be handled, so
 * it is answered (or dropped) at once, by worker_post or here. */
static void worker_close_inbox(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	w->inbox_closed = true;
	struct worker_msg *m = w->inbox;
	w->inbox = NULL;
	pthread_mutex_unlock(&w->lock);
	while (m) {
		struct worker_msg *next = m->next;
		worker_msg_drop(m); /* a /tunnels query gets an empty part */
		m = next;
	}
}

static void worker_done(struct worker *w)
{
	if (w->done_called)
		return;
	w->done_called = true;
	worker_close_inbox(w);
	if (w->done)
		w->done(w, w->done_arg);
	else
		event_base_loopexit(w->base, NULL);
}

void worker_session_removed(struct worker *w, struct session *s)
{
	session_unlink(&w->sessions, s);
	w->n_sessions--;
	worker_resume(w);
	if (w->stopping && w->n_sessions == 0 && w->n_pending == 0)
		worker_done(w);
}

/* ---- listeners ---- */

static void worker_listener_free(struct worker_listener *wl)
{
	if (wl == NULL)
		return;
	listener_free(wl->l);
	free(wl);
}

/* Accept on fd (taken) for gen's listen i. NULL on failure. */
static struct worker_listener *worker_listener_new(struct worker *w, const struct config *cfg,
						   size_t i, int fd)
{
	struct worker_listener *wl = calloc(1, sizeof(*wl));
	if (wl == NULL) {
		close(fd);
		return NULL;
	}
	wl->w = w;
	wl->addr = cfg->listens[i].addr;
	wl->listen = i;
	wl->l = listener_new(w->base, fd, wl->addr.text, worker_accept_cb, worker_full_cb, wl);
	if (wl->l == NULL) {
		free(wl);
		return NULL;
	}
	if (w->paused)
		listener_pause(wl->l);
	return wl;
}

static struct worker_listener *take_listener(struct worker *w, const struct config_addr *addr)
{
	for (size_t i = 0; i < w->n_listeners; i++) {
		struct worker_listener *wl = w->listeners[i];
		if (wl && config_addr_equal(&wl->addr, addr)) {
			w->listeners[i] = NULL;
			return wl;
		}
	}
	return NULL;
}

/*
 * Listen as cfg says: keep the sockets of addresses that stay (never
 * closed, so no connect is refused across a reload), add fds[i] for new
 * ones, close the rest. Established connections are not affected.
 */
static void worker_set_listeners(struct worker *w, const struct config *cfg, int *fds)
{
	struct worker_listener **next = calloc(cfg->n_listens + 1, sizeof(*next));
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_listens; i++) {
		struct worker_listener *wl = take_listener(w, &cfg->listens[i].addr);
		if (wl) {
			wl->listen = i;
			if (fds[i] >= 0)
				close(fds[i]);
		} else if (fds[i] >= 0) {
			wl = worker_listener_new(w, cfg, i, fds[i]);
		}
		fds[i] = -1;
		if (wl && next)
			next[n++] = wl;
		else if (wl)
			worker_listener_free(wl);
	}
	for (size_t i = 0; i < w->n_listeners; i++)
		worker_listener_free(w->listeners[i]); /* addresses the config dropped */
	free(w->listeners);
	w->listeners = next;
	w->n_listeners = next ? n : 0;
}

/* ---- stop ---- */

/* The grace is over (or SIGQUIT): end every session now. */
static void worker_quit(struct worker *w)
{
	struct session *next;
	for (struct session *s = w->sessions; s; s = next) {
		next = session_next(s);
		session_stop(s, END_SHUTDOWN, true);
	}
	worker_done(w); /* the closed sessions are freed before the loop ends */
}

/*
 * First expiry: the grace is over; tunnels and exchanges are ended, and
 * terminated WebSockets get close 1001 and at most WORKER_CLOSE_MS to
 * finish their close handshake. Second expiry: whatever is left goes.
 */
static void worker_stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct session *next;
	if (w->grace_over) {
		worker_quit(w);
		return;
	}
	w->grace_over = true;
	for (struct session *s = w->sessions; s; s = next) {
		next = session_next(s);
		session_stop(s, END_SHUTDOWN, false);
	}
	struct timeval tv = {WORKER_CLOSE_MS / 1000, (WORKER_CLOSE_MS % 1000) * 1000};
	event_add(w->stop_timer, &tv);
}

static void worker_stop(struct worker *w, bool now)
{
	struct session *next;
	if (w->stopping) {
		if (now)
			worker_quit(w);
		return; /* a second SIGTERM changes nothing */
	}
	w->stopping = true;
	if (w->count == 1)
		log_msg(LOG_LEVEL_INFO, 0, "stopping: %zu open connections", w->n_sessions);
	else
		log_msg(LOG_LEVEL_INFO, 0, "worker %u stopping: %zu open connections", w->index,
			w->n_sessions);
	for (size_t i = 0; i < w->n_listeners; i++)
		worker_listener_free(w->listeners[i]);
	w->n_listeners = 0;
	proxyhdr_free_all(&w->proxyhdrs); /* not sessions yet: nothing to finish */
	if (now || w->n_sessions == 0) {
		worker_quit(w);
		return;
	}
	for (struct session *s = w->sessions; s; s = next) {
		next = session_next(s);
		session_shutdown(s);
	}
	uint64_t grace = w->current->gen->cfg->timeouts.shutdown_grace;
	struct timeval tv = {(time_t)(grace / 1000), (suseconds_t)(grace % 1000) * 1000};
	if (w->n_sessions > 0 && w->stop_timer)
		event_add(w->stop_timer, &tv); /* 0: the grace is over at the next turn */
}

/* ---- routes a reload removed ---- */

static bool route_removed(const struct config_route *r, const struct config *old,
			  const struct config *next)
{
	const struct config_route *same = NULL;
	for (size_t i = 0; i < next->n_routes && same == NULL; i++)
		if (strcmp(next->routes[i].name, r->name) == 0)
			same = &next->routes[i];
	if (same == NULL)
		return true;
	if (r->upstream == CONFIG_NO_UPSTREAM)
		return false;
	const char *up = old->upstreams[r->upstream].name;
	for (size_t i = 0; i < next->n_upstreams; i++)
		if (strcmp(next->upstreams[i].name, up) == 0)
			return false;
	return true;
}

/* Drain: the k-th of a route's n tunnels closes at (k + 1) / n of drain_time. */
static void worker_drain(struct session **list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (list[i] == NULL)
			continue;
		const struct config_route *r = session_route(list[i]);
		size_t group = 0, k = 0;
		for (size_t j = i; j < n; j++)
			if (list[j] && strcmp(session_route(list[j])->name, r->name) == 0)
				group++;
		for (size_t j = i; j < n; j++) {
			if (list[j] == NULL || strcmp(session_route(list[j])->name, r->name) != 0)
				continue;
			session_drain(list[j], r->drain_time * ++k / group);
			list[j] = NULL;
		}
	}
}

static void worker_on_remove(struct worker *w, const struct config *next)
{
	struct session **drain = calloc(w->n_sessions + 1, sizeof(*drain));
	size_t n = 0;
	struct session *after;
	for (struct session *s = w->sessions; s; s = after) {
		after = session_next(s);
		const struct config_route *r = session_route(s);
		if (!session_is_tunnel(s) || r == NULL || r->on_remove == CONFIG_ON_REMOVE_KEEP ||
		    !route_removed(r, session_config(s), next))
			continue;
		if (r->on_remove == CONFIG_ON_REMOVE_CLOSE || drain == NULL)
			session_stop(s, END_ROUTE_REMOVED, false);
		else
			drain[n++] = s;
	}
	worker_drain(drain, n);
	free(drain);
}

/* ---- reload ---- */

static void worker_set_limits(struct worker *w, const struct worker_limits *lim)
{
	w->max_connections = lim->max_connections > 0 ? lim->max_connections : 1;
	if (w->n_sessions + w->n_pending >= w->max_connections)
		worker_pause(w);
	else
		worker_resume(w);
}

static void worker_progress_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	for (struct session *s = w->sessions; s; s = session_next(s))
		session_tick(s);
}

/* Tunnels are looked at every second (their bytes into the metrics), or
 * every log_interval when that is shorter (their progress lines). */
static void worker_set_progress(struct worker *w, const struct config *cfg)
{
	uint64_t ms = cfg->log_interval && cfg->log_interval < 1000 ? cfg->log_interval : 1000;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_del(w->progress_timer);
	event_add(w->progress_timer, &tv);
}

static void worker_reload(struct worker *w, struct worker_msg *m)
{
	struct worker_gen *wg = worker_gen_new(w, m->gen);
	if (wg == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "worker %u: out of memory: keeping generation %llu",
			w->index, (unsigned long long)w->current->gen->id);
		return; /* the caller closes the fds */
	}
	worker_gen_retire(w->current, wg);
	worker_gen_release(w->current);
	w->current = wg;
	worker_set_listeners(w, wg->gen->cfg, m->fds);
	worker_set_limits(w, &m->lim);
	worker_set_progress(w, wg->gen->cfg);
	worker_on_remove(w, wg->gen->cfg);
	for (struct session *s = w->sessions; s; s = session_next(s))
		session_reload(s); /* HTTP/2 connections: GOAWAY */
	atomic_store(&w->running, wg->gen->id);
	if (w->reloaded)
		w->reloaded(w, w->done_arg);
}

/* A server went down: the tunnels of upstreams with on_down = "close" end. */
static void worker_server_down(struct worker *w, const struct health_server *hs, bool force)
{
	struct session *s = w->sessions;
	while (s) {
		struct session *next = session_next(s); /* s may be freed */
		session_server_down(s, hs, force);
		s = next;
	}
}

/* ---- the admin's /tunnels ---- */

struct worker_tunnels {
	pthread_mutex_t lock;
	unsigned refs, pending; /* the admin + every worker; workers still to answer */
	char *route, *server;	/* filters, NULL = any */
	size_t limit;
	struct evbuffer *json;
	size_t count;
	bool cancelled;
	struct event *done;
	worker_tunnels_cb cb;
	void *arg;
};

static void tunnels_put(struct worker_tunnels *q)
{
	pthread_mutex_lock(&q->lock);
	bool last = --q->refs == 0;
	pthread_mutex_unlock(&q->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&q->lock);
	free(q->route);
	free(q->server);
	if (q->json)
		evbuffer_free(q->json);
	if (q->done)
		event_free(q->done);
	free(q);
}

/* One worker's part (NULL: none); the last one wakes the admin. */
static void tunnels_answer(struct worker_tunnels *q, struct evbuffer *part, size_t n)
{
	pthread_mutex_lock(&q->lock);
	if (part && n) {
		if (q->count)
			evbuffer_add(q->json, ",", 1);
		evbuffer_add_buffer(q->json, part);
		q->count += n;
	}
	bool last = --q->pending == 0;
	pthread_mutex_unlock(&q->lock);
	if (last)
		event_active(q->done, EV_READ, 0);
	tunnels_put(q);
}

static void worker_tunnels(struct worker *w, struct worker_msg *m)
{
	struct worker_tunnels *q = m->tunnels;
	struct evbuffer *part = evbuffer_new();
	size_t n = 0;
	m->tunnels = NULL;
	for (struct session *s = w->sessions; part && s && n < q->limit; s = session_next(s)) {
		if (!session_matches(s, q->route, q->server))
			continue;
		if (n++)
			evbuffer_add(part, ",", 1);
		session_describe(s, part);
	}
	tunnels_answer(q, part, part ? n : 0);
	if (part)
		evbuffer_free(part);
}

static void tunnels_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker_tunnels *q = arg;
	if (!q->cancelled)
		q->cb(q->json, q->count, q->arg);
	tunnels_put(q);
}

static void worker_post(struct worker *w, struct worker_msg *m);

struct worker_tunnels *worker_tunnels_query(struct worker **workers, unsigned n, const char *route,
					    const char *server, size_t limit,
					    struct event_base *base, worker_tunnels_cb cb,
					    void *arg)
{
	struct worker_tunnels *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	pthread_mutex_init(&q->lock, NULL);
	q->refs = 1 + n;
	q->pending = n;
	q->limit = limit;
	q->cb = cb;
	q->arg = arg;
	q->json = evbuffer_new();
	q->done = event_new(base, -1, 0, tunnels_done_cb, q);
	if ((route && (q->route = strdup(route)) == NULL) ||
	    (server && (q->server = strdup(server)) == NULL) || q->json == NULL ||
	    q->done == NULL) {
		q->refs = 1;
		tunnels_put(q);
		return NULL;
	}
	for (unsigned i = 0; i < n; i++) {
		struct worker_msg *m = calloc(1, sizeof(*m));
		if (m == NULL) {
			tunnels_answer(q, NULL, 0);
			continue;
		}
		*m = (struct worker_msg){.kind = MSG_TUNNELS, .tunnels = q};
		worker_post(workers[i], m);
	}
	return q;
}

void worker_tunnels_cancel(struct worker_tunnels *q)
{
	/* on base's thread, before cb: the answer may be complete but not yet delivered */
	pthread_mutex_lock(&q->lock);
	q->cancelled = true;
	bool answered = q->pending == 0;
	pthread_mutex_unlock(&q->lock);
	if (answered && event_pending(q->done, EV_READ, NULL) == 0) {
		event_del(q->done);
		tunnels_put(q);
	}
}

/* ---- inbox ---- */

static void tunnels_answer(struct worker_tunnels *q, struct evbuffer *part, size_t n);

static void worker_msg_free(struct worker_msg *m)
{
	if (m->tunnels) /* never handled (the worker is going away): an empty answer */
		tunnels_answer(m->tunnels, NULL, 0);
	health_server_put(m->hs);
	generation_unref(m->gen);
	free(m->fds);
	free(m);
}

static void worker_inbox_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	pthread_mutex_lock(&w->lock);
	struct worker_msg *m = w->inbox;
	w->inbox = NULL;
	pthread_mutex_unlock(&w->lock);
	/* the list was pushed at the head: reverse to handle in order */
	struct worker_msg *ordered = NULL;
	while (m) {
		struct worker_msg *next = m->next;
		m->next = ordered;
		ordered = m;
		m = next;
	}
	for (m = ordered; m; m = ordered) {
		ordered = m->next;
		if (m->kind == MSG_RELOAD && !w->stopping)
			worker_reload(w, m);
		else if (m->kind == MSG_TUNNELS)
			worker_tunnels(w, m);
		else if (m->kind == MSG_SERVER_DOWN)
			worker_server_down(w, m->hs, m->force);
		else if (m->kind != MSG_RELOAD)
			worker_stop(w, m->kind == MSG_QUIT);
		worker_msg_drop(m); /* the fds a reload did not take */
	}
}

static void worker_post(struct worker *w, struct worker_msg *m)
{
	pthread_mutex_lock(&w->lock);
	bool closed = w->inbox_closed;
	if (!closed) {
		m->next = w->inbox;
		w->inbox = m;
	}
	pthread_mutex_unlock(&w->lock);
	if (!closed) {
		event_active(w->inbox_ev, EV_READ, 0);
		return;
	}
	worker_msg_drop(m);
}

void worker_post_reload(struct worker *w, struct generation *gen, int *fds,
			const struct worker_limits *lim)
{
	struct worker_msg *m = calloc(1, sizeof(*m));
	size_t n = gen->cfg->n_listens;
	int *copy = m ? malloc((n + 1) * sizeof(*copy)) : NULL;
	if (m == NULL || copy == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "worker %u: out of memory: reload not delivered",
			w->index);
		for (size_t i = 0; i < n; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		free(m);
		free(copy);
		return;
	}
	memcpy(copy, fds, n * sizeof(*copy));
	*m = (struct worker_msg){
	    .kind = MSG_RELOAD, .gen = generation_ref(gen), .fds = copy, .lim = *lim};
	worker_post(w, m);
}

void worker_post_server_down(struct worker *w, struct health_server *hs, bool force)
{
	struct worker_msg *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "worker %u: out of memory: server down not delivered",
			w->index);
		return;
	}
	*m = (struct worker_msg){
	    .kind = MSG_SERVER_DOWN, .hs = health_server_ref(hs), .force = force};
	worker_post(w, m);
}

void worker_post_stop(struct worker *w, bool now)
{
	struct worker_msg *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "worker %u: out of memory: stop not delivered",
			w->index);
		return;
	}
	m->kind = now ? MSG_QUIT : MSG_STOP;
	worker_post(w, m);
}

/* ---- life ---- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t all;
	sigfillset(&all); /* signals are the main thread's business */
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	event_base_dispatch(w->base);
	return NULL;
}

int worker_start_thread(struct worker *w)
{
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return -1;
	w->threaded = true;
	return 0;
}

void worker_join(struct worker *w)
{
	if (w && w->threaded) {
		pthread_join(w->thread, NULL);
		w->threaded = false;
	}
}

struct worker *worker_new(unsigned index, unsigned count, struct event_base *base,
			  struct generation *gen, int *fds, const struct worker_limits *lim)
{
	struct worker *w = calloc(1, sizeof(*w));
	if (w == NULL)
		goto fail_fds;
	w->index = index;
	w->count = count;
	w->base = base;
	w->next_session_id = index; /* ids index+1, index+1+count, ...: unique in the process */
	w->rng = ((uint64_t)time(NULL) << 16) ^ ((uint64_t)getpid() << 8) ^ (index + 1);
	pthread_mutex_init(&w->lock, NULL);
	w->resume_timer = evtimer_new(base, worker_resume_cb, w);
	w->stop_timer = evtimer_new(base, worker_stop_timer_cb, w);
	w->inbox_ev = event_new(base, -1, 0, worker_inbox_cb, w);
	w->progress_timer = event_new(base, -1, EV_PERSIST, worker_progress_cb, w);
	size_t idle_pipes = lim->max_pipes < WORKER_PIPE_POOL ? lim->max_pipes : WORKER_PIPE_POOL;
	w->pipes = splice_pool_new(idle_pipes, lim->max_pipes);
	w->current = worker_gen_new(w, gen);
	atomic_init(&w->running, gen->id);
	if (w->resume_timer == NULL || w->stop_timer == NULL || w->inbox_ev == NULL ||
	    w->progress_timer == NULL || w->pipes == NULL || w->current == NULL) {
		worker_free(w);
		goto fail_fds;
	}
	w->max_connections = lim->max_connections > 0 ? lim->max_connections : 1;
	worker_set_progress(w, gen->cfg);
	worker_set_listeners(w, gen->cfg, fds);
	if (w->n_listeners != gen->cfg->n_listens) {
		worker_free(w);
		return NULL;
	}
	return w;
fail_fds:
	for (size_t i = 0; i < gen->cfg->n_listens; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return NULL;
}

void worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n_listeners; i++)
		worker_listener_free(w->listeners[i]);
	free(w->listeners);
	proxyhdr_free_all(&w->proxyhdrs);
	struct worker_msg *m = w->inbox;
	while (m) {
		struct worker_msg *next = m->next;
		worker_msg_drop(m);
		m = next;
	}
	worker_gen_release(w->current);
	if (w->resume_timer)
		event_free(w->resume_timer);
	if (w->stop_timer)
		event_free(w->stop_timer);
	if (w->progress_timer)
		event_free(w->progress_timer);
	if (w->inbox_ev)
		event_free(w->inbox_ev);
	splice_pool_free(w->pipes);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
