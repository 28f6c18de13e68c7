/*
 * fdlimit: descriptor arithmetic for a config and RLIMIT_NOFILE (see
 * fdlimit.h). The arithmetic is pure so unit tests can drive it with any
 * limit; only fdlimit_apply() touches the process.
 */
#include "fdlimit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static bool log_is_file(const char *target)
{
	return target != NULL && strcmp(target, "stderr") != 0 && strcmp(target, "off") != 0;
}

static size_t idle_pool_fds(const struct config *cfg)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		n += cfg->upstreams[i].keepalive * cfg->upstreams[i].n_servers;
	return n;
}

static bool splice_mode(const struct config *cfg)
{
	return cfg->tunnel_mode == CONFIG_TUNNEL_SPLICE;
}

size_t fdlimit_needed(const struct config *cfg, size_t *fixed)
{
	size_t f = FDLIMIT_RESERVE + cfg->n_listens + idle_pool_fds(cfg) +
		   log_is_file(cfg->error_log) + log_is_file(cfg->access_log);
	size_t conns = cfg->limits.max_connections;
	size_t pipes = splice_mode(cfg) ? conns / FDLIMIT_PIPE_SHARE : 0;
	if (fixed)
		*fixed = f;
	return f + 2 * conns + 2 * pipes;
}

void fdlimit_fit(const struct config *cfg, size_t limit, size_t hard, bool requested,
		 struct fdlimit_plan *plan)
{
	size_t conns = cfg->limits.max_connections;
	size_t pipes = splice_mode(cfg) ? conns / FDLIMIT_PIPE_SHARE : 0;

	*plan = (struct fdlimit_plan){.limit = limit, .hard = hard, .requested = requested};
	plan->needed = fdlimit_needed(cfg, &plan->fixed);
	if (limit < plan->needed) {
		/* connections first, after a small floor of pipes so that a
		 * splice config still splices; pipes get what is left */
		size_t avail = limit > plan->fixed ? limit - plan->fixed : 0;
		size_t floor = pipes < FDLIMIT_MIN_PIPES ? pipes : FDLIMIT_MIN_PIPES;
		size_t fit = avail > 2 * floor ? (avail - 2 * floor) / 2 : 0;
		if (fit < conns)
			conns = fit > 0 ? fit : 1; /* one, so the proxy still answers */
		size_t left = avail > 2 * conns ? avail - 2 * conns : 0;
		if (pipes > left / 2)
			pipes = left / 2;
	}
	plan->max_connections = conns;
	plan->max_pipes = pipes;
}

/* The soft (and, for limits.nofile, hard) limit to ask for. */
static void fdlimit_target(const struct config *cfg, const struct rlimit *now, size_t needed,
			   struct rlimit *want)
{
	*want = *now;
	if (cfg->limits.nofile > 0) {
		want->rlim_cur = cfg->limits.nofile;
		if (want->rlim_max != RLIM_INFINITY && want->rlim_cur > want->rlim_max)
			want->rlim_max = want->rlim_cur; /* allowed with CAP_SYS_RESOURCE */
		return;
	}
	if (now->rlim_cur != RLIM_INFINITY && now->rlim_cur < needed)
		want->rlim_cur = now->rlim_max == RLIM_INFINITY || needed < now->rlim_max
				     ? needed
				     : now->rlim_max;
}

static size_t rlim_size(rlim_t v)
{
	return v == RLIM_INFINITY ? (size_t)-1 : (size_t)v;
}

/* Set want; when a raise of the hard limit is refused, settle for the hard
 * limit as it is (fdlimit_warning says so). note: what changed, or "". */
static void fdlimit_set(const struct rlimit *now, struct rlimit *want, char *note, size_t cap)
{
	if (setrlimit(RLIMIT_NOFILE, want) < 0) {
		if (want->rlim_max == now->rlim_max)
			return; /* not expected: a soft limit within the hard one */
		*want = (struct rlimit){now->rlim_max, now->rlim_max};
		if (want->rlim_cur == now->rlim_cur || setrlimit(RLIMIT_NOFILE, want) < 0)
			return;
	}
	snprintf(note, cap, "descriptor limit %s from %zu to %zu (hard limit %zu)",
		 want->rlim_cur > now->rlim_cur ? "raised" : "lowered", rlim_size(now->rlim_cur),
		 rlim_size(want->rlim_cur), rlim_size(want->rlim_max));
}

int fdlimit_apply(const struct config *cfg, struct fdlimit_plan *plan, char *note, size_t cap)
{
	struct rlimit now, want;
	size_t needed = fdlimit_needed(cfg, NULL);

	note[0] = '\0';
	if (getrlimit(RLIMIT_NOFILE, &now) < 0) {
		fdlimit_fit(cfg, needed, needed, false, plan);
		return -1;
	}
	fdlimit_target(cfg, &now, needed, &want);
	if (want.rlim_cur != now.rlim_cur || want.rlim_max != now.rlim_max)
		fdlimit_set(&now, &want, note, cap);
	if (getrlimit(RLIMIT_NOFILE, &now) < 0)
		now = want;
	fdlimit_fit(cfg, rlim_size(now.rlim_cur), rlim_size(now.rlim_max), cfg->limits.nofile > 0,
		    plan);
	return 0;
}

bool fdlimit_warning(const struct config *cfg, const struct fdlimit_plan *plan, char *out,
		     size_t cap)
{
	int n = 0;
	out[0] = '\0';
	if (plan->requested && plan->limit < cfg->limits.nofile)
		n = snprintf(
		    out, cap,
		    "limits.nofile %zu is above the hard limit %zu, which this process may "
		    "not raise: using %zu; ",
		    cfg->limits.nofile, plan->hard, plan->limit);
	if (n < 0 || (size_t)n >= cap)
		return n > 0;
	if (plan->max_connections < cfg->limits.max_connections)
		snprintf(out + n, cap - (size_t)n,
			 "max_connections %zu needs about %zu descriptors; %s %zu: serving at most "
			 "%zu connections; raise %s",
			 cfg->limits.max_connections, plan->needed,
			 plan->requested ? "the descriptor limit is" : "the hard limit is",
			 plan->requested ? plan->limit : plan->hard, plan->max_connections,
			 plan->requested ? "limits.nofile (and the hard limit)"
					 : "LimitNOFILE= or ulimit -Hn");
	else if (n > 2)
		out[n - 2] = '\0'; /* drop the "; " */
	return out[0] != '\0';
}
