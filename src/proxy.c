/*
 * proxy: one generation of the running proxy (see proxy.h). Owns the
 * listeners and pauses them at max_connections or when accept runs out of
 * descriptors, resuming as soon as a session ends (or after a short delay
 * when none is left to end), so a full process never spins on accept.
 */
#include "proxy.h"

#include <stdlib.h>

#include <event2/event.h>

#include "balance.h"
#include "fdlimit.h"
#include "listener.h"
#include "log.h"
#include "session.h"
#include "splice.h"
#include "tls.h"
#include "upstream.h"

#define PROXY_PIPE_POOL 1024	 /* idle pipes kept for splice */
#define PROXY_RESUME_MS 250	 /* retry accept after EMFILE with no session to wait for */
#define PROXY_STOP_GRACE_MS 3000 /* in-flight exchanges get this long at stop */

static void proxy_pause(struct proxy *px)
{
	if (px->paused)
		return;
	px->paused = true;
	for (size_t i = 0; i < px->n_listeners; i++)
		listener_pause(px->listeners[i].l);
}

static void proxy_resume(struct proxy *px)
{
	if (!px->paused || px->stopping || px->n_sessions >= px->max_connections)
		return;
	px->paused = false;
	for (size_t i = 0; i < px->n_listeners; i++)
		listener_resume(px->listeners[i].l);
}

static void proxy_accept_cb(void *arg, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct proxy_listener *pl = arg;
	session_accept(pl->px, fd, sa, len, pl->tls);
}

void proxy_out_of_fds(struct proxy *px)
{
	struct timeval tv = {0, PROXY_RESUME_MS * 1000};
	proxy_pause(px);
	event_add(px->resume_timer, &tv); /* in case no session ends soon */
}

static void proxy_full_cb(void *arg)
{
	proxy_out_of_fds(((struct proxy_listener *)arg)->px);
}

static void proxy_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	proxy_resume(arg);
}

void proxy_session_added(struct proxy *px, struct session *s)
{
	session_link(&px->sessions, s);
	if (++px->n_sessions >= px->max_connections)
		proxy_pause(px);
}

void proxy_session_removed(struct proxy *px, struct session *s)
{
	session_unlink(&px->sessions, s);
	px->n_sessions--;
	proxy_resume(px);
	if (px->stopping && px->n_sessions == 0)
		event_base_loopexit(px->base, NULL);
}

static int proxy_make_pools(struct proxy *px)
{
	const struct config *cfg = px->cfg;
	px->pools = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*px->pools));
	if (px->pools == NULL)
		return -1;
	px->upstream_tls =
	    calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*px->upstream_tls));
	px->idle = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof(*px->idle));
	if (px->upstream_tls == NULL || px->idle == NULL)
		return -1;
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		char err[256];
		if (u->tls.enabled &&
		    (px->upstream_tls[i] = tls_client_new(&u->tls, err, sizeof(err))) == NULL) {
			log_msg(LOG_LEVEL_ERROR, 0, "upstream '%s': %s", u->name, err);
			return -1;
		}
		unsigned weights[CONFIG_MAX_SERVERS];
		for (size_t j = 0; j < u->n_servers; j++)
			weights[j] = u->servers[j].weight;
		px->pools[i] = balance_pool_new(weights, u->n_servers);
		px->idle[i] = calloc(u->n_servers, sizeof(*px->idle[i]));
		if (px->pools[i] == NULL || px->idle[i] == NULL)
			return -1;
		for (size_t j = 0; j < u->n_servers; j++)
			px->idle[i][j] = (struct upstream_idle){.max = u->keepalive,
								.idle_ms = cfg->timeouts.keepalive};
	}
	return 0;
}

static int proxy_listen(struct proxy *px)
{
	const struct config *cfg = px->cfg;
	px->listeners = calloc(cfg->n_listens, sizeof(*px->listeners));
	if (px->listeners == NULL)
		return -1;
	for (size_t i = 0; i < cfg->n_listens; i++) {
		struct proxy_listener *pl = &px->listeners[px->n_listeners++];
		char err[256];
		pl->px = px;
		if (cfg->listens[i].tls &&
		    (pl->tls = tls_server_new(cfg->listens[i].tls, err, sizeof(err))) == NULL) {
			log_msg(LOG_LEVEL_ERROR, 0, "listen %s: %s", cfg->listens[i].addr.text,
				err);
			return -1;
		}
		pl->l = listener_new(px->base, &cfg->listens[i].addr, proxy_accept_cb,
				     proxy_full_cb, pl);
		if (pl->l == NULL)
			return -1;
	}
	return 0;
}

struct proxy *proxy_new(struct event_base *base, const struct config *cfg,
			const struct fdlimit_plan *fds)
{
	struct proxy *px = calloc(1, sizeof(*px));
	if (px == NULL)
		return NULL;
	px->base = base;
	px->cfg = cfg;
	px->max_connections = fds->max_connections;
	px->resume_timer = evtimer_new(base, proxy_resume_cb, px);
	size_t idle_pipes = fds->max_pipes < PROXY_PIPE_POOL ? fds->max_pipes : PROXY_PIPE_POOL;
	px->pipes = splice_pool_new(idle_pipes, fds->max_pipes);
	if (px->resume_timer == NULL || px->pipes == NULL || proxy_make_pools(px) < 0 ||
	    proxy_listen(px) < 0) {
		proxy_free(px);
		return NULL;
	}
	return px;
}

static void proxy_stop_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy *px = arg;
	for (struct session *s = px->sessions; s; s = session_next(s))
		session_close(s, "shutdown");
	event_base_loopexit(px->base, NULL);
}

void proxy_stop(struct proxy *px)
{
	if (px->stopping)
		return;
	px->stopping = true;
	log_msg(LOG_LEVEL_INFO, 0, "stopping: %zu open connections", px->n_sessions);
	for (size_t i = 0; i < px->n_listeners; i++) {
		listener_free(px->listeners[i].l); /* TLS contexts stay: sessions use them */
		px->listeners[i].l = NULL;
	}
	if (px->n_sessions == 0) {
		event_base_loopexit(px->base, NULL);
		return;
	}
	struct session *next;
	for (struct session *s = px->sessions; s; s = next) {
		next = session_next(s);
		session_shutdown(s);
	}
	struct timeval tv = {PROXY_STOP_GRACE_MS / 1000, (PROXY_STOP_GRACE_MS % 1000) * 1000};
	px->stop_timer = evtimer_new(px->base, proxy_stop_timeout_cb, px);
	if (px->stop_timer)
		event_add(px->stop_timer, &tv);
}

void proxy_free(struct proxy *px)
{
	if (px == NULL)
		return;
	for (size_t i = 0; i < px->n_listeners; i++) {
		listener_free(px->listeners[i].l);
		tls_server_free(px->listeners[i].tls);
	}
	free(px->listeners);
	for (size_t i = 0; px->pools && i < px->cfg->n_upstreams; i++)
		balance_pool_free(px->pools[i]);
	free(px->pools);
	for (size_t i = 0; px->upstream_tls && i < px->cfg->n_upstreams; i++)
		tls_client_free(px->upstream_tls[i]);
	free(px->upstream_tls);
	for (size_t i = 0; px->idle && i < px->cfg->n_upstreams; i++) {
		for (size_t j = 0; px->idle[i] && j < px->cfg->upstreams[i].n_servers; j++)
			upstream_idle_drain(&px->idle[i][j]);
		free(px->idle[i]);
	}
	free(px->idle);
	if (px->resume_timer)
		event_free(px->resume_timer);
	if (px->stop_timer)
		event_free(px->stop_timer);
	splice_pool_free(px->pipes);
	free(px);
}
