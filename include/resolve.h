/*
 * resolve: upstream servers given by host name, resolved with libevent's
 * evdns (never a blocking getaddrinfo in a loop) at start and every
 * upstreams[].resolve. The only module that uses evdns.
 *
 * The resolver keeps the last good address set of each name; a failed
 * resolution keeps it (and logs). Each change of a set, and each first
 * answer of a new name, is reported through the changed callback; the
 * process then builds a generation whose servers are the new addresses
 * (resolve_expand), exactly as a reload would, so open tunnels are not
 * touched and servers that stay keep their state.
 */
#ifndef SY_RESOLVE_H
#define SY_RESOLVE_H

#include <stddef.h>

#include "config.h"

struct event_base;
struct resolver;

typedef void (*resolve_changed_fn)(void *arg);

/* Queries run on base. NULL on failure (logged). */
struct resolver *resolver_new(struct event_base *base, resolve_changed_fn changed, void *arg);
void resolver_free(struct resolver *r);

/*
 * Resolve the host names of cfg's servers from now on (new names at once),
 * stop those it no longer has, and use cfg->resolvers as the DNS servers
 * (none: /etc/resolv.conf). 0 / -1 (logged).
 */
int resolver_follow(struct resolver *r, const struct config *cfg);

/* Names still waiting for their first answer (an address set or a failure). */
size_t resolver_pending(const struct resolver *r);

/*
 * Replace each server of cfg given by name with one server per address last
 * resolved for the name (none yet: none), at its port and weight. Upstreams
 * without names are left alone. 0 / -1 on OOM.
 */
int resolve_expand(const struct resolver *r, struct config *cfg);

#endif
