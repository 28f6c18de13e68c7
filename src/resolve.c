/*
 * resolve: host names of upstream servers through evdns (see resolve.h).
 */
#include "resolve.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"

#define RESOLVE_MAX_ADDRS CONFIG_MAX_SERVERS
#define RESOLVE_RETRY_MS 5000 /* after a failure, at most this long until the next try */

struct resolve_name {
	struct resolver *r;
	char *name;
	uint64_t interval;
	struct sockaddr_storage addrs[RESOLVE_MAX_ADDRS]; /* sorted, port 0 */
	size_t n;
	bool answered; /* the first answer (or failure) has come */
	bool dead;     /* dropped while its query was in flight: freed when it ends */
	bool followed; /* marked by resolver_follow */
	struct evdns_getaddrinfo_request *req;
	bool in_flight;
	struct event *timer;
	struct resolve_name *next;
};

struct resolver {
	struct event_base *base;
	struct evdns_base *dns;
	char **servers; /* the DNS servers in use, NULL = resolv.conf */
	size_t n_servers;
	bool configured;
	resolve_changed_fn changed;
	void *arg;
	struct resolve_name *names;
};

static void name_query(struct resolve_name *rn);

static bool has_names(const struct config_upstream *u)
{
	for (size_t j = 0; j < u->n_servers; j++)
		if (u->servers[j].name)
			return true;
	return false;
}

static bool cfg_has_names(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (has_names(&cfg->upstreams[i]))
			return true;
	return false;
}

static int addr_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct sockaddr_storage));
}

/* "127.0.0.2, ::1" into out. */
static void addrs_text(const struct resolve_name *rn, char *out, size_t cap)
{
	size_t len = 0;
	out[0] = '\0';
	for (size_t i = 0; i < rn->n && len < cap; i++) {
		char ip[INET6_ADDRSTRLEN];
		const struct sockaddr *sa = (const struct sockaddr *)&rn->addrs[i];
		const void *raw = sa->sa_family == AF_INET
				      ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
				      : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		inet_ntop(sa->sa_family, raw, ip, sizeof(ip));
		len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? ", " : "", ip);
	}
	if (rn->n == 0)
		snprintf(out, cap, "no addresses");
}

/* The answer as a sorted set without duplicates, ports zeroed. */
static size_t answer_set(const struct evutil_addrinfo *ai, struct sockaddr_storage *out)
{
	size_t n = 0;
	for (; ai && n < RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			sin->sin_family = AF_INET;
			sin->sin_addr = ((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
		} else if (ai->ai_family == AF_INET6 &&
			   ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = ((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		} else {
			continue;
		}
		out[n++] = ss;
	}
	qsort(out, n, sizeof(*out), addr_cmp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (k == 0 || addr_cmp(&out[k - 1], &out[i]) != 0)
			out[k++] = out[i];
	return k;
}

static void name_free(struct resolve_name *rn)
{
	if (rn->timer)
		event_free(rn->timer);
	free(rn->name);
	free(rn);
}

static void name_schedule(struct resolve_name *rn, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(rn->timer, &tv);
}

/* Did the set change? Then take it and say so. */
static bool name_update(struct resolve_name *rn, const struct sockaddr_storage *set, size_t n)
{
	char was[256], now[256];
	if (rn->answered && n == rn->n && memcmp(set, rn->addrs, n * sizeof(*set)) == 0)
		return false;
	addrs_text(rn, was, sizeof(was));
	memcpy(rn->addrs, set, n * sizeof(*set));
	rn->n = n;
	addrs_text(rn, now, sizeof(now));
	if (rn->answered)
		log_msg(LOG_LEVEL_INFO, 0, "resolved %s: %s (was %s)", rn->name, now, was);
	else
		log_msg(LOG_LEVEL_INFO, 0, "resolved %s: %s", rn->name, now);
	return true;
}

static void name_answer(int result, struct evutil_addrinfo *res, void *arg)
{
	struct resolve_name *rn = arg;
	struct sockaddr_storage set[RESOLVE_MAX_ADDRS];
	bool changed = false, first = !rn->answered;

	rn->in_flight = false;
	rn->req = NULL;
	if (rn->dead) {
		if (res)
			evutil_freeaddrinfo(res);
		name_free(rn);
		return;
	}
	if (result == 0) {
		changed = name_update(rn, set, answer_set(res, set));
		name_schedule(rn, rn->interval);
	} else {
		char have[256];
		addrs_text(rn, have, sizeof(have));
		log_msg(LOG_LEVEL_WARN, 0, "cannot resolve %s: %s; keeping %s", rn->name,
			evutil_gai_strerror(result), have);
		name_schedule(rn,
			      rn->interval < RESOLVE_RETRY_MS ? rn->interval : RESOLVE_RETRY_MS);
	}
	if (res)
		evutil_freeaddrinfo(res);
	rn->answered = true;
	if ((changed || first) && rn->r->changed)
		rn->r->changed(rn->r->arg);
}

static void name_query(struct resolve_name *rn)
{
	struct evutil_addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	rn->in_flight = true;
	/* the answer may come before this returns (hosts file): then req is done */
	struct evdns_getaddrinfo_request *req =
	    evdns_getaddrinfo(rn->r->dns, rn->name, NULL, &hints, name_answer, rn);
	if (rn->in_flight && req == NULL) { /* could not even start: try again later */
		rn->in_flight = false;
		log_msg(LOG_LEVEL_WARN, 0, "cannot resolve %s: the query did not start", rn->name);
		name_schedule(rn, RESOLVE_RETRY_MS);
	}
	if (rn->in_flight)
		rn->req = req;
}

static void name_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	name_query(arg);
}

/* Drop a name; one with a query in flight goes when the query ends. */
static void name_drop(struct resolve_name *rn)
{
	evtimer_del(rn->timer);
	if (!rn->in_flight) {
		name_free(rn);
		return;
	}
	rn->dead = true;
	evdns_getaddrinfo_cancel(rn->req);
}

static struct resolve_name *name_find(struct resolver *r, const char *name)
{
	for (struct resolve_name *rn = r->names; rn; rn = rn->next)
		if (strcmp(rn->name, name) == 0)
			return rn;
	return NULL;
}

static int name_follow(struct resolver *r, const char *name, uint64_t interval)
{
	struct resolve_name *rn = name_find(r, name);
	if (rn) {
		if (!rn->followed || interval < rn->interval)
			rn->interval = interval;
		rn->followed = true;
		return 0;
	}
	if ((rn = calloc(1, sizeof(*rn))) == NULL || (rn->name = strdup(name)) == NULL ||
	    (rn->timer = evtimer_new(r->base, name_timer_cb, rn)) == NULL) {
		if (rn)
			free(rn->name);
		free(rn);
		return -1;
	}
	rn->r = r;
	rn->interval = interval;
	rn->followed = true;
	rn->next = r->names;
	r->names = rn;
	name_query(rn);
	return 0;
}

static bool same_servers(const struct resolver *r, const struct config *cfg)
{
	if (!r->configured || r->n_servers != cfg->n_resolvers)
		return false;
	for (size_t i = 0; i < r->n_servers; i++)
		if (strcmp(r->servers[i], cfg->resolvers[i]) != 0)
			return false;
	return true;
}

static void servers_free(struct resolver *r)
{
	for (size_t i = 0; i < r->n_servers; i++)
		free(r->servers[i]);
	free(r->servers);
	r->servers = NULL;
	r->n_servers = 0;
}

/* The DNS servers of cfg (resolv.conf without any), and /etc/hosts. */
static int use_servers(struct resolver *r, const struct config *cfg)
{
	if (same_servers(r, cfg))
		return 0;
	evdns_base_clear_nameservers_and_suspend(r->dns);
	servers_free(r);
	if (cfg->n_resolvers == 0) {
		evdns_base_resolv_conf_parse(r->dns, DNS_OPTION_NAMESERVERS | DNS_OPTION_MISC,
					     "/etc/resolv.conf");
	}
	for (size_t i = 0; i < cfg->n_resolvers; i++)
		if (evdns_base_nameserver_ip_add(r->dns, cfg->resolvers[i]) != 0) {
			log_msg(LOG_LEVEL_ERROR, 0, "resolver %s cannot be used",
				cfg->resolvers[i]);
			evdns_base_resume(r->dns);
			return -1;
		}
	r->servers = calloc(cfg->n_resolvers + 1, sizeof(*r->servers));
	for (size_t i = 0; r->servers && i < cfg->n_resolvers; i++)
		if ((r->servers[r->n_servers++] = strdup(cfg->resolvers[i])) == NULL)
			break;
	r->configured = true;
	evdns_base_resume(r->dns);
	return 0;
}

/* evdns's own messages ("Nameserver ... has failed") go to our log, at debug:
 * what matters is logged per name by name_answer. */
static void evdns_log(int is_warn, const char *msg)
{
	if (is_warn)
		log_msg(LOG_LEVEL_DEBUG, 0, "evdns: %s", msg);
}

/* The evdns base, made when the first host name needs it. */
static int dns_start(struct resolver *r)
{
	if (r->dns)
		return 0;
	if ((r->dns = evdns_base_new(r->base, 0)) == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "cannot set up the DNS resolver");
		return -1;
	}
	/* answers for names from /etc/hosts too ("localhost", container links) */
	evdns_base_load_hosts(r->dns, "/etc/hosts"); /* NULL would mean localhost only */
	evdns_base_set_option(r->dns, "timeout:", "2");
	evdns_base_set_option(r->dns, "attempts:", "2");
	return 0;
}

int resolver_follow(struct resolver *r, const struct config *cfg)
{
	if (r->dns == NULL && !cfg_has_names(cfg))
		return 0; /* nothing to resolve: no DNS traffic, no resolv.conf */
	if (dns_start(r) < 0)
		return -1;
	int rc = use_servers(r, cfg);
	for (struct resolve_name *rn = r->names; rn; rn = rn->next)
		rn->followed = false;
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		for (size_t j = 0; j < u->n_servers; j++)
			if (u->servers[j].name &&
			    name_follow(r, u->servers[j].name, u->resolve) < 0)
				rc = -1;
	}
	for (struct resolve_name **p = &r->names; *p;) {
		struct resolve_name *rn = *p;
		if (rn->followed) {
			p = &rn->next;
			continue;
		}
		*p = rn->next;
		name_drop(rn);
	}
	if (rc < 0)
		log_msg(LOG_LEVEL_ERROR, 0, "host names: out of memory");
	return rc;
}

size_t resolver_pending(const struct resolver *r)
{
	size_t n = 0;
	for (const struct resolve_name *rn = r->names; rn; rn = rn->next)
		n += !rn->answered;
	return n;
}

/* addr at port as a server address with its text ("10.0.0.5:9000", "[::1]:9000"). */
static void server_addr(const struct sockaddr_storage *ss, in_port_t port, struct config_addr *a)
{
	char ip[INET6_ADDRSTRLEN];
	memset(a, 0, sizeof(*a));
	a->ss = *ss;
	if (ss->ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
		sin->sin_port = port;
		a->len = sizeof(*sin);
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(a->text, sizeof(a->text), "%s:%u", ip, ntohs(port));
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
		sin6->sin6_port = port;
		a->len = sizeof(*sin6);
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(a->text, sizeof(a->text), "[%s]:%u", ip, ntohs(port));
	}
}

/* Add srv to out[*n] (a copy owning its name). -1 on OOM. */
static int add_server(struct config_server *out, size_t *n, const struct config_server *srv)
{
	out[*n] = *srv;
	if (srv->name && (out[*n].name = strdup(srv->name)) == NULL)
		return -1;
	(*n)++;
	return 0;
}

static int expand_upstream(const struct resolver *r, struct config_upstream *u)
{
	struct config_server *out = calloc(CONFIG_MAX_SERVERS + 1, sizeof(*out));
	size_t n = 0, dropped = 0;
	int rc = out ? 0 : -1;

	for (size_t j = 0; rc == 0 && j < u->n_servers; j++) {
		const struct config_server *srv = &u->servers[j];
		const struct resolve_name *rn =
		    srv->name ? name_find((struct resolver *)r, srv->name) : NULL;
		size_t count = srv->name ? (rn ? rn->n : 0) : 1;
		for (size_t k = 0; rc == 0 && k < count; k++) {
			struct config_server s = *srv;
			if (n == CONFIG_MAX_SERVERS) {
				dropped++;
				continue;
			}
			if (srv->name)
				server_addr(&rn->addrs[k], srv->port, &s.addr);
			rc = add_server(out, &n, &s);
		}
	}
	if (dropped)
		log_msg(LOG_LEVEL_WARN, 0, "upstream '%s': %zu addresses over the %d servers kept",
			u->name, dropped, CONFIG_MAX_SERVERS);
	if (rc < 0) {
		for (size_t k = 0; out && k < n; k++)
			free(out[k].name);
		free(out);
		return -1;
	}
	for (size_t j = 0; j < u->n_servers; j++)
		free(u->servers[j].name);
	free(u->servers);
	u->servers = out;
	u->n_servers = n;
	return 0;
}

int resolve_expand(const struct resolver *r, struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (has_names(&cfg->upstreams[i]) && expand_upstream(r, &cfg->upstreams[i]) < 0)
			return -1;
	return 0;
}

struct resolver *resolver_new(struct event_base *base, resolve_changed_fn changed, void *arg)
{
	evdns_set_log_fn(evdns_log);
	struct resolver *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		log_msg(LOG_LEVEL_ERROR, 0, "cannot set up the DNS resolver");
		return NULL;
	}
	r->base = base;
	r->changed = changed;
	r->arg = arg;
	return r;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	bool waiting = false;
	while (r->names) {
		struct resolve_name *rn = r->names;
		r->names = rn->next;
		waiting |= rn->in_flight;
		name_drop(rn);
	}
	/* cancelled queries end in a deferred callback, which frees their name */
	for (int i = 0; waiting && i < 10; i++)
		event_base_loop(r->base, EVLOOP_NONBLOCK);
	if (r->dns)
		evdns_base_free(r->dns, 0);
	servers_free(r);
	free(r);
}
