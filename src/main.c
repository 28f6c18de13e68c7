/*
 * main: command line, signals, workers and reloads. switchyard runs in the
 * foreground (container-friendly). Worker 0 runs on the main thread, which
 * also handles the signals; workers 1..N-1 run on threads of their own.
 *
 *   SIGHUP          reload: check the file completely, then hand the new
 *                   generation to every worker; a bad file changes nothing
 *   SIGTERM/SIGINT  stop accepting, finish exchanges, close tunnels, exit 0
 *   SIGQUIT         close everything at once, exit 0
 *   SIGUSR1         reopen the log files (after logrotate moved them)
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <http_parser.h>
#include <libconfig.h>
#include <openssl/opensslv.h>

#include "config.h"
#include "fdlimit.h"
#include "generation.h"
#include "admin.h"
#include "health.h"
#include "metrics.h"
#include "resolve.h"
#include "user.h"
#include "listener.h"
#include "log.h"
#include "pidfile.h"
#include "worker.h"

#define SWITCHYARD_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out, "usage: switchyard -c FILE [-t]\n"
		     "       switchyard -c FILE -s reload|stop|quit\n"
		     "       switchyard -V | -h\n"
		     "  -c FILE  configuration file (libconfig syntax)\n"
		     "  -t       check the configuration and exit (0 = valid)\n"
		     "  -s SIG   signal the running switchyard named by pid_file:\n"
		     "           reload (SIGHUP), stop (SIGTERM), quit (SIGQUIT)\n"
		     "  -V       print version and build features\n"
		     "  -h       this help\n");
}

static void print_version(void)
{
	printf("switchyard %s\n", SWITCHYARD_VERSION);
	printf("built with: libevent %s, http-parser %d.%d.%d, libconfig %d.%d.%d, %s\n",
	       event_get_version(), HTTP_PARSER_VERSION_MAJOR, HTTP_PARSER_VERSION_MINOR,
	       HTTP_PARSER_VERSION_PATCH, LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
	       LIBCONFIG_VER_REVISION, OPENSSL_VERSION_TEXT);
	printf("features: splice tunnels, websocket handshake checks, websocket termination, "
	       "tls, worker threads, reload without dropping tunnels\n");
}

/* Load file; errors go to stderr at start, to the error log on reload. */
static struct config *load_config(const char *file, bool to_log)
{
	struct config_errors errs = {0};
	struct config *cfg = config_load(file, &errs);
	for (size_t i = 0; cfg == NULL && i < errs.n; i++) {
		if (to_log)
			log_msg(LOG_LEVEL_ERROR, 0, "%s", errs.msg[i]);
		else
			fprintf(stderr, "%s\n", errs.msg[i]);
	}
	if (cfg == NULL && errs.dropped) {
		if (to_log)
			log_msg(LOG_LEVEL_ERROR, 0, "%s: %zu more errors not shown", file,
				errs.dropped);
		else
			fprintf(stderr, "%s: %zu more errors not shown\n", file, errs.dropped);
	}
	config_errors_fini(&errs);
	return cfg;
}

/* ---- the running process ---- */

struct app {
	const char *file;
	struct generation *gen;	   /* the current one; workers hold their own references */
	struct health *health;	   /* server states; its checks run on bases[0] */
	struct resolver *resolver; /* host names of servers, on bases[0] */
	struct metrics *metrics;   /* counters, for the admin listener */
	struct admin *admin;	   /* NULL without admin.address */
	struct admin_env admin_env;
	struct config *deferred; /* a reload waiting for its host names */
	const char *switch_what; /* "reload" or "new addresses": for the announcement */
	int early_signal;	 /* a signal that came before the first generation */
	struct worker **workers;
	struct event_base **bases;
	unsigned n;
	atomic_uint stopped; /* workers whose stop has finished */
	uint64_t announced;  /* the last generation said to be running */
	struct event *all_done, *all_switched;
	struct event *signals[5];
};

static unsigned worker_count(const struct config *cfg)
{
	if (cfg->workers > 0)
		return cfg->workers;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus < 1 ? 1 : cpus > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (unsigned)cpus;
}

/* Each worker's share of the process limits: connections rounded up. */
static struct worker_limits worker_share(const struct fdlimit_plan *plan, unsigned n)
{
	return (struct worker_limits){.max_connections = (plan->max_connections + n - 1) / n,
				      .max_pipes = plan->max_pipes / n};
}

/* Apply cfg's descriptor limit; notes and warnings are logged when they change
 * (a new generation for new addresses must not repeat them every time). */
static void log_fdlimit(const struct config *cfg, struct fdlimit_plan *plan)
{
	static char last_note[256], last_warning[512];
	char note[256], warning[512];
	fdlimit_apply(cfg, plan, note, sizeof(note));
	if (note[0] && strcmp(note, last_note) != 0)
		log_msg(LOG_LEVEL_INFO, 0, "%s", note);
	if (!fdlimit_warning(cfg, plan, warning, sizeof(warning)))
		warning[0] = '\0';
	if (warning[0] && strcmp(warning, last_warning) != 0)
		log_msg(LOG_LEVEL_WARN, 0, "%s", warning);
	memcpy(last_note, note, sizeof(note));
	memcpy(last_warning, warning, sizeof(warning));
}

static bool listened_before(const struct config *old, const struct config_addr *addr)
{
	for (size_t i = 0; old && i < old->n_listens; i++)
		if (config_addr_equal(&old->listens[i].addr, addr))
			return true;
	return false;
}

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * Listening sockets for cfg, n_listens per worker, worker-major. Addresses
 * in old are kept by the workers (-1 here). NULL when a bind fails: then
 * nothing stays open.
 */
static int *bind_all(const struct config *cfg, const struct config *old, unsigned n)
{
	size_t nl = cfg->n_listens;
	int *fds = malloc((n * nl + 1) * sizeof(*fds));
	if (fds == NULL)
		return NULL;
	for (size_t k = 0; k < n * nl; k++)
		fds[k] = -1;
	for (size_t i = 0; i < nl; i++) {
		if (listened_before(old, &cfg->listens[i].addr))
			continue;
		for (unsigned w = 0; w < n; w++) {
			fds[w * nl + i] = listener_bind(&cfg->listens[i].addr, n > 1);
			if (fds[w * nl + i] < 0) {
				close_fds(fds, n * nl);
				free(fds);
				return NULL;
			}
		}
	}
	return fds;
}

/* The admin listener follows the new generation's allow list; its address
 * is bound once, at start. */
static void admin_follow(struct app *app, const struct config *cfg)
{
	const struct config_admin *now = &cfg->admin;
	bool moved = app->admin ? !admin_listens_on(app->admin, now) : now->enabled;
	if (moved)
		log_msg(LOG_LEVEL_WARN, 0,
			"a changed admin address takes effect at the next start; keeping the "
			"listener");
	app->admin_env.cfg = now;
}

/*
 * Run cfg (taken) from now on: its host names expanded to the addresses
 * known now, as a new generation handed to every worker. what says why,
 * for the line that announces it.
 */
static void app_install(struct app *app, struct config *cfg, const char *what)
{
	if (cfg && resolve_expand(app->resolver, cfg) < 0) {
		config_free(cfg);
		cfg = NULL;
	}
	struct generation *gen =
	    cfg ? generation_new(cfg, app->gen->id + 1, app->health, app->metrics) : NULL;
	int *fds = gen ? bind_all(gen->cfg, app->gen->cfg, app->n) : NULL;
	if (fds == NULL) {
		generation_unref(gen);
		metrics_add(&app->metrics->reloads_failed, 1);
		log_msg(LOG_LEVEL_ERROR, 0, "%s failed: keeping generation %llu", what,
			(unsigned long long)app->gen->id);
		return;
	}
	admin_follow(app, gen->cfg);
	if (worker_count(gen->cfg) != app->n)
		log_msg(LOG_LEVEL_WARN, 0,
			"workers = %u takes effect at the next start; keeping %u",
			worker_count(gen->cfg), app->n);
	struct fdlimit_plan plan;
	log_fdlimit(gen->cfg, &plan);
	struct worker_limits share = worker_share(&plan, app->n);
	for (unsigned w = 0; w < app->n; w++)
		worker_post_reload(app->workers[w], gen, fds + w * gen->cfg->n_listens, &share);
	free(fds);
	generation_unref(app->gen);
	app->gen = gen;
	app->switch_what = what;
	health_follow(app->health, gen);
	metrics_add(strcmp(what, "reload") == 0 ? &app->metrics->reloads_ok
						: &app->metrics->address_changes,
		    1);
	atomic_store(&app->metrics->generation, gen->id);
}

/* SIGHUP. A config with new host names waits for their first answers. */
static void app_reload(struct app *app)
{
	struct config *cfg = load_config(app->file, true);
	if (cfg == NULL) {
		metrics_add(&app->metrics->reloads_failed, 1);
		log_msg(LOG_LEVEL_ERROR, 0, "reload failed: keeping generation %llu",
			(unsigned long long)app->gen->id);
		return;
	}
	resolver_follow(app->resolver, cfg);
	config_free(app->deferred);
	app->deferred = NULL;
	if (resolver_pending(app->resolver) > 0) {
		log_msg(LOG_LEVEL_INFO, 0, "reload waits for its host names to resolve");
		app->deferred = cfg;
		return;
	}
	app_install(app, cfg, "reload");
}

/* A host name resolved differently, or for the first time (on bases[0]). */
static void app_names_changed(void *arg)
{
	struct app *app = arg;
	if (app->gen == NULL) /* still starting: app_init expands the first config */
		return;
	if (app->deferred) {
		if (resolver_pending(app->resolver) == 0) {
			struct config *cfg = app->deferred;
			app->deferred = NULL;
			app_install(app, cfg, "reload");
		}
		return;
	}
	/* the running config again, from the text it was loaded from */
	struct config *cfg = config_parse(app->gen->cfg->file, app->gen->cfg->text, NULL);
	if (cfg)
		resolver_follow(app->resolver, cfg);
	app_install(app, cfg, "new addresses");
}

/* A server went down or into maint (on any thread): its tunnels may have to end. */
static void app_server_changed(struct health_server *hs, enum health_event ev, void *arg)
{
	struct app *app = arg;
	for (unsigned w = 0; ev != HEALTH_WENT_UP && w < app->n; w++)
		if (app->workers[w])
			worker_post_server_down(app->workers[w], hs, ev == HEALTH_WENT_MAINT);
}

/* A worker switched to a new generation (on its thread). */
static void app_worker_reloaded(struct worker *w, void *arg)
{
	struct app *app = arg;
	event_active(app->all_switched, EV_READ, 0);
}

/* Said once every worker runs the new generation: from then on, new
 * connections see only the new config. */
static void app_all_switched_cb(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;
	uint64_t id = app->gen->id;
	for (unsigned w = 0; w < app->n; w++)
		if (atomic_load(&app->workers[w]->running) != id)
			return;
	if (app->announced == id)
		return;
	app->announced = id;
	if (strcmp(app->switch_what, "reload") == 0)
		log_msg(LOG_LEVEL_INFO, 0, "reloaded %s: generation %llu", app->file,
			(unsigned long long)id);
	else
		log_msg(LOG_LEVEL_INFO, 0, "switched to generation %llu: %s",
			(unsigned long long)id, app->switch_what);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct app *app = arg;
	if (app->gen == NULL) { /* still starting (waiting for host names) */
		app->early_signal = sig;
		return;
	}
	switch (sig) {
	case SIGHUP:
		app_reload(app);
		break;
	case SIGUSR1:
		if (log_reopen() == 0)
			log_msg(LOG_LEVEL_INFO, 0, "log files reopened");
		break;
	default: /* SIGTERM, SIGINT, SIGQUIT */
		app->admin_env.stopping = true;
		for (unsigned w = 0; w < app->n; w++)
			worker_post_stop(app->workers[w], sig == SIGQUIT);
		break;
	}
}

/* A worker's stop finished (on its thread); the process ends with the last. */
static void app_worker_done(struct worker *w, void *arg)
{
	struct app *app = arg;
	if (w->threaded)
		event_base_loopexit(w->base, NULL);
	atomic_fetch_add(&app->stopped, 1);
	event_active(app->all_done, EV_READ, 0);
}

static void app_all_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct app *app = arg;
	if (atomic_load(&app->stopped) == app->n)
		event_base_loopexit(app->bases[0], NULL);
}

/*
 * epoll with a changelist: a socket whose interest changes several times in
 * one loop iteration (common when a session switches phase) costs one
 * epoll_ctl instead of one per change. Only with one worker: the changes
 * are applied at the next turn, and by then a closed descriptor's number
 * may belong to another worker's socket (ThreadSanitizer reported the
 * deferred epoll_ctl on such a number).
 */
static struct event_base *base_new(bool changelist)
{
	struct event_config *ec = event_config_new();
	if (ec == NULL)
		return NULL;
	if (changelist)
		event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	struct event_base *base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

static int app_signals(struct app *app)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		app->signals[i] = evsignal_new(app->bases[0], sigs[i], signal_cb, app);
		if (app->signals[i] == NULL || evsignal_add(app->signals[i], NULL) < 0)
			return -1;
	}
	return 0;
}

static int app_start_workers(struct app *app, const struct fdlimit_plan *plan)
{
	const struct config *cfg = app->gen->cfg;
	health_follow(app->health, app->gen);
	struct worker_limits share = worker_share(plan, app->n);
	int *fds = bind_all(cfg, NULL, app->n);
	if (fds == NULL)
		return -1;
	for (unsigned w = 0; w < app->n; w++) {
		app->workers[w] = worker_new(w, app->n, app->bases[w], app->gen,
					     fds + w * cfg->n_listens, &share);
		if (app->workers[w] == NULL) {
			for (unsigned k = w + 1; k < app->n; k++)
				close_fds(fds + k * cfg->n_listens, cfg->n_listens);
			free(fds);
			return -1;
		}
		app->workers[w]->done = app_worker_done;
		app->workers[w]->reloaded = app_worker_reloaded;
		app->workers[w]->done_arg = app;
	}
	free(fds);
	return 0;
}

static int app_start_admin(struct app *app)
{
	app->admin_env = (struct admin_env){
	    .cfg = &app->gen->cfg->admin,
	    .metrics = app->metrics,
	    .health = app->health,
	    .workers = app->workers,
	    .n_workers = app->n,
	    .version = SWITCHYARD_VERSION,
	    .openssl = OPENSSL_VERSION_TEXT,
	};
	if (!app->gen->cfg->admin.enabled)
		return 0;
	app->admin = admin_new(app->bases[0], &app->admin_env);
	return app->admin ? 0 : -1;
}

/* A SIGTERM, SIGINT or SIGQUIT came while starting: nothing to drain. */
static bool app_stopped_early(const struct app *app)
{
	return app->early_signal && app->early_signal != SIGHUP && app->early_signal != SIGUSR1;
}

/* Loops, server states, the first generation (taking cfg) and the workers. */
static int app_init(struct app *app, struct config *cfg, const struct fdlimit_plan *plan)
{
	app->workers = calloc(app->n, sizeof(*app->workers));
	app->bases = calloc(app->n, sizeof(*app->bases));
	if (app->workers == NULL || app->bases == NULL)
		goto fail;
	/* locking only when another thread can touch a base */
	if (app->n > 1 && evthread_use_pthreads() < 0)
		goto fail;
	for (unsigned w = 0; w < app->n; w++)
		if ((app->bases[w] = base_new(app->n == 1)) == NULL)
			goto fail;
	app->all_done = event_new(app->bases[0], -1, 0, app_all_done_cb, app);
	app->all_switched = event_new(app->bases[0], -1, 0, app_all_switched_cb, app);
	/* handlers first: a SIGTERM right after the port opens must stop us cleanly */
	if (app->all_done == NULL || app->all_switched == NULL || app_signals(app) < 0)
		goto fail;
	app->health = health_new(app->bases[0], app_server_changed, app);
	app->metrics = metrics_new();
	app->resolver = resolver_new(app->bases[0], app_names_changed, app);
	if (app->health == NULL || app->resolver == NULL || app->metrics == NULL ||
	    resolver_follow(app->resolver, cfg) < 0)
		goto fail;
	/* the first answers (or failures) before serving: no 503 for a name at start */
	while (resolver_pending(app->resolver) > 0 && !app_stopped_early(app))
		event_base_loop(app->bases[0], EVLOOP_ONCE);
	if (app_stopped_early(app)) {
		log_msg(LOG_LEVEL_INFO, 0, "stopped before serving");
		goto fail;
	}
	if (resolve_expand(app->resolver, cfg) < 0)
		goto fail;
	if ((app->gen = generation_new(cfg, 1, app->health, app->metrics)) == NULL)
		return -1; /* cfg went with it */
	atomic_store(&app->metrics->generation, 1);
	if (app_start_workers(app, plan) < 0)
		return -1;
	return app_start_admin(app);
fail:
	config_free(cfg);
	return -1;
}

static void app_fini(struct app *app)
{
	for (unsigned w = 1; app->workers && w < app->n; w++)
		worker_join(app->workers[w]);
	admin_free(app->admin); /* its /tunnels queries are the workers' messages */
	for (unsigned w = 0; app->workers && w < app->n; w++)
		worker_free(app->workers[w]);
	generation_unref(app->gen);
	health_free(app->health); /* its events are on bases[0] */
	resolver_free(app->resolver);
	config_free(app->deferred);
	metrics_free(app->metrics);
	for (size_t i = 0; i < sizeof(app->signals) / sizeof(app->signals[0]); i++)
		if (app->signals[i]) {
			int sig = event_get_signal(app->signals[i]);
			event_free(app->signals[i]); /* restores the default action ... */
			signal(sig, SIG_IGN);	     /* ... which a second SIGTERM must not get */
		}
	if (app->all_done)
		event_free(app->all_done);
	if (app->all_switched)
		event_free(app->all_switched);
	for (unsigned w = 0; app->bases && w < app->n; w++)
		if (app->bases[w])
			event_base_free(app->bases[w]);
	free(app->workers);
	free(app->bases);
}

/* Bound, keys read, pid file written: now the configured user, before any
 * worker thread exists (so that every thread has the same credentials). */
static int app_become_user(const struct config *cfg)
{
	char note[256];
	int rc = user_become(cfg->user, note, sizeof(note));
	if (note[0])
		log_msg(rc < 0	 ? LOG_LEVEL_ERROR
			: rc > 0 ? LOG_LEVEL_WARN
				 : LOG_LEVEL_INFO,
			0, "%s", note);
	return rc < 0 ? -1 : 0;
}

/* Serve cfg (taken) until stopped. The exit status. */
static int run(struct app *app, struct config *cfg, const struct fdlimit_plan *plan)
{
	char *pid_file = cfg->pid_file ? strdup(cfg->pid_file) : NULL;
	bool pid_written = false, pid_oom = cfg->pid_file && pid_file == NULL;
	int rc = 1;
	app->n = worker_count(cfg);
	if (app_init(app, cfg, plan) < 0 || pid_oom) {
		rc = app_stopped_early(app) ? 0 : 1;
		goto out;
	}
	cfg = app->gen->cfg; /* until the first reload */
	if (pid_file && pidfile_write(pid_file) < 0)
		goto out;
	pid_written = pid_file != NULL;
	if (app_become_user(cfg) < 0)
		goto out;
	for (unsigned w = 1; w < app->n; w++)
		if (worker_start_thread(app->workers[w]) < 0) {
			log_msg(LOG_LEVEL_ERROR, 0, "cannot start worker %u: %s", w,
				strerror(errno));
			for (unsigned k = 0; k < app->n; k++)
				worker_post_stop(app->workers[k], true);
			break;
		}
	log_msg(LOG_LEVEL_INFO, 0, "switchyard %s started with %s: %u worker%s, generation 1",
		SWITCHYARD_VERSION, cfg->file, app->n, app->n == 1 ? "" : "s");
	if (app->early_signal == SIGHUP) /* came while the first names resolved */
		app_reload(app);
	event_base_dispatch(app->bases[0]);
	log_msg(LOG_LEVEL_INFO, 0, "stopped");
	rc = 0;
out:
	app_fini(app);
	if (pid_written)
		pidfile_remove(pid_file);
	free(pid_file);
	return rc;
}

/* -s reload|stop|quit: signal the process named by the config's pid_file. */
static int send_signal(const char *file, const char *name)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {{"reload", SIGHUP}, {"stop", SIGTERM}, {"quit", SIGQUIT}};
	int sig = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i].name) == 0)
			sig = names[i].sig;
	if (sig == 0) {
		fprintf(stderr, "switchyard: unknown signal name '%s' (reload, stop, quit)\n",
			name);
		return 2;
	}
	struct config *cfg = load_config(file, false);
	if (cfg == NULL)
		return 1;
	int rc = pidfile_signal(file, cfg->pid_file, sig);
	config_free(cfg);
	return rc;
}

/*
 * Buffers come and go at every read of a busy connection (evbuffer chains,
 * 16-64 KiB). glibc's defaults give the top of a heap back once 128 KiB are
 * free there and move the mmap threshold around, so a stream of such
 * buffers faulted fresh pages in at every turn (a quarter of the proxy's CPU
 * in the wss benchmark). Keep up to 4 MiB free per heap instead.
 */
static void tune_malloc(void)
{
	mallopt(M_TRIM_THRESHOLD, 4 << 20);
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
}

int main(int argc, char **argv)
{
	const char *file = NULL, *sig = NULL;
	int opt, check_only = 0;

	tune_malloc();

	while ((opt = getopt(argc, argv, "c:ts:Vh")) != -1) {
		switch (opt) {
		case 'c':
			file = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 's':
			sig = optarg;
			break;
		case 'V':
			print_version();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (file == NULL || optind != argc || (sig && check_only)) {
		usage(stderr);
		return 2;
	}
	if (sig)
		return send_signal(file, sig);
	struct config *cfg = load_config(file, false);
	if (cfg == NULL)
		return 1;
	/* -t too: a limit too low is a property of where it runs, not of the
	 * file, so it warns but still exits 0 */
	struct fdlimit_plan plan;
	char note[256], warning[512];
	fdlimit_apply(cfg, &plan, note, sizeof(note));
	fdlimit_warning(cfg, &plan, warning, sizeof(warning));
	if (check_only) {
		if (warning[0])
			fprintf(stderr, "%s: warning: %s\n", file, warning);
		printf("%s: configuration is valid\n", file);
		config_free(cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error code, not a signal */
	if (log_open(cfg->error_log, cfg->access_log, cfg->log_level) < 0) {
		config_free(cfg);
		return 1;
	}
	if (note[0])
		log_msg(LOG_LEVEL_INFO, 0, "%s", note);
	if (warning[0])
		log_msg(LOG_LEVEL_WARN, 0, "%s", warning);
	struct app app = {.file = file, .switch_what = "reload"};
	int rc = run(&app, cfg, &plan);
	log_close();
	return rc;
}
