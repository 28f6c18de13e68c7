/*
 * main: command line, signals and the event loop. switchyard runs in the
 * foreground (container-friendly) and stops cleanly on SIGTERM / SIGINT.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <http_parser.h>
#include <libconfig.h>
#include <openssl/opensslv.h>

#include "config.h"
#include "fdlimit.h"
#include "log.h"
#include "proxy.h"
#include "session.h"

#define SWITCHYARD_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out, "usage: switchyard -c FILE [-t]\n"
		     "       switchyard -V | -h\n"
		     "  -c FILE  configuration file (libconfig syntax)\n"
		     "  -t       check the configuration and exit (0 = valid)\n"
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
	printf("features: splice tunnels, websocket handshake checks\n");
}

static struct config *load_config(const char *file)
{
	struct config_errors errs = {0};
	struct config *cfg = config_load(file, &errs);
	if (cfg == NULL) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msg[i]);
		if (errs.dropped)
			fprintf(stderr, "%s: %zu more errors not shown\n", file, errs.dropped);
	}
	config_errors_fini(&errs);
	return cfg;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct proxy **px = arg;
	if (*px)
		proxy_stop(*px);
}

/*
 * epoll with a changelist: a socket whose interest changes several times in
 * one loop iteration (common when a session switches phase) costs one
 * epoll_ctl instead of one per change.
 */
static struct event_base *base_new(void)
{
	struct event_config *ec = event_config_new();
	if (ec == NULL)
		return NULL;
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	struct event_base *base = event_base_new_with_config(ec);
	event_config_free(ec);
	return base;
}

static int run(struct config *cfg, const struct fdlimit_plan *fds)
{
	int rc = 1;
	struct event_base *base = base_new();
	struct proxy *px = NULL;
	struct event *sigterm = NULL, *sigint = NULL;

	if (base == NULL)
		goto out;
	/* handlers first: a SIGTERM right after the port opens must stop us cleanly */
	sigterm = evsignal_new(base, SIGTERM, signal_cb, &px);
	sigint = evsignal_new(base, SIGINT, signal_cb, &px);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) < 0 ||
	    evsignal_add(sigint, NULL) < 0)
		goto out;
	px = proxy_new(base, cfg, fds);
	if (px == NULL)
		goto out;
	log_msg(LOG_LEVEL_INFO, 0, "switchyard %s started with %s", SWITCHYARD_VERSION, cfg->file);
	event_base_dispatch(base);
	log_msg(LOG_LEVEL_INFO, 0, "stopped");
	rc = 0;
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	proxy_free(px);
	if (base)
		event_base_free(base);
	return rc;
}

int main(int argc, char **argv)
{
	const char *file = NULL;
	int opt, check_only = 0;

	while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
		switch (opt) {
		case 'c':
			file = optarg;
			break;
		case 't':
			check_only = 1;
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
	if (file == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	struct config *cfg = load_config(file);
	if (cfg == NULL)
		return 1;
	/* -t too: a limit too low is a property of where it runs, not of the
	 * file, so it warns but still exits 0 */
	struct fdlimit_plan fds;
	char note[256], warning[512];
	fdlimit_apply(cfg, &fds, note, sizeof(note));
	fdlimit_warning(cfg, &fds, warning, sizeof(warning));
	if (check_only) {
		if (warning[0])
			fprintf(stderr, "%s: warning: %s\n", file, warning);
		printf("%s: configuration is valid\n", file);
		config_free(cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error code, not a signal */
	int rc = 1;
	if (log_open(cfg->error_log, cfg->access_log, cfg->log_level) == 0) {
		if (note[0])
			log_msg(LOG_LEVEL_INFO, 0, "%s", note);
		if (warning[0])
			log_msg(LOG_LEVEL_WARN, 0, "%s", warning);
		rc = run(cfg, &fds);
	}
	log_close();
	config_free(cfg);
	return rc;
}
