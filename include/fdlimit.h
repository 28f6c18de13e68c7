/*
 * fdlimit: how many file descriptors a config needs, and fitting the
 * process's RLIMIT_NOFILE to it.
 *
 * A connection costs two descriptors (client + backend, or client + bridge).
 * In splice mode the pipe pool may hold one pipe pair per four connections
 * (HAProxy's maxpipes = maxconn / 4); a tunnel that finds no pipe copies
 * instead, so pipes never take a descriptor a connection needs. On top come
 * the listeners, log files, the idle upstream pools and a fixed reserve for
 * stdio, the event loop and files read at run time.
 *
 * When the limit cannot hold all that, connections come first: the plan
 * keeps a floor of FDLIMIT_MIN_PIPES pipes, lowers the connection limit to
 * what fits (so accept pauses cleanly instead of a tunnel setup failing
 * halfway with EMFILE), and gives pipes what is left.
 */
#ifndef SY_FDLIMIT_H
#define SY_FDLIMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define FDLIMIT_RESERVE 32   /* stdio, epoll, libevent's signal pair, files opened at run time */
#define FDLIMIT_PIPE_SHARE 4 /* connections per splice pipe pair */
/* Pipes kept when connections must be cut: bytes are in flight on only a
 * few tunnels at any instant, and with none a splice config would copy. */
#define FDLIMIT_MIN_PIPES 32

struct fdlimit_plan {
	size_t needed;		/* descriptors the config needs at its max_connections */
	size_t fixed;		/* of which: listeners, log files, idle upstream pools, reserve */
	size_t limit;		/* descriptors available (the soft limit once raised) */
	size_t hard;		/* the hard limit, for messages */
	bool requested;		/* limit comes from limits.nofile, not from the hard limit */
	size_t max_connections; /* what fits: the config's max_connections or fewer */
	size_t max_pipes;	/* splice pipe pairs the pool may hold at once (0 in copy mode) */
};

/* Descriptors cfg needs at its max_connections; *fixed gets the part that
 * does not grow with connections. Pure. */
size_t fdlimit_needed(const struct config *cfg, size_t *fixed);

/*
 * Pure: the plan for a process allowed `limit` descriptors (hard limit
 * `hard`, for messages). requested: the limit is limits.nofile.
 */
void fdlimit_fit(const struct config *cfg, size_t limit, size_t hard, bool requested,
		 struct fdlimit_plan *plan);

/*
 * Raise the soft RLIMIT_NOFILE towards what cfg needs (or to limits.nofile,
 * raising the hard limit too when privileged), never above the hard limit
 * otherwise, and fill plan. note receives a line for the log when something
 * worth saying happened (limit raised, limits.nofile not granted), else "".
 * Returns 0, or -1 when getrlimit fails (plan then assumes what cfg asks).
 */
int fdlimit_apply(const struct config *cfg, struct fdlimit_plan *plan, char *note, size_t cap);

/* The warning for a plan that serves fewer connections than configured:
 * true with out filled, false (out = "") when max_connections fits. */
bool fdlimit_warning(const struct config *cfg, const struct fdlimit_plan *plan, char *out,
		     size_t cap);

#endif
