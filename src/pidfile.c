/*
 * pidfile: write, remove and read the pid file. Written after the listeners
 * are up, so a pid file names a process that serves; removed at a clean exit
 * only while it still names us (a newer instance may have taken it over).
 */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int pidfile_write(const char *path)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, (size_t)n) != n) {
		log_msg(LOG_LEVEL_ERROR, 0, "cannot write pid_file %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* The pid in path: > 0, or 0 with a reason in why. */
static long pidfile_read(const char *path, char *why, size_t cap)
{
	char buf[32] = "";
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		snprintf(why, cap, "cannot read pid_file %s: %s", path, strerror(errno));
		return 0;
	}
	bool ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	char *end = NULL;
	long pid = ok ? strtol(buf, &end, 10) : 0;
	if (pid <= 0 || end == buf || (*end != '\n' && *end != '\0')) {
		snprintf(why, cap, "pid_file %s does not hold a pid", path);
		return 0;
	}
	return pid;
}

void pidfile_remove(const char *path)
{
	char why[256];
	if (pidfile_read(path, why, sizeof(why)) == (long)getpid())
		unlink(path);
}

int pidfile_signal(const char *file, const char *path, int sig)
{
	char why[320];
	if (path == NULL) {
		fprintf(stderr, "%s: no pid_file set: cannot find the running switchyard\n", file);
		return 1;
	}
	long pid = pidfile_read(path, why, sizeof(why));
	if (pid == 0) {
		fprintf(stderr, "switchyard: %s\n", why);
		return 1;
	}
	if (kill((pid_t)pid, sig) < 0) {
		fprintf(stderr, "switchyard: cannot signal pid %ld from %s: %s\n", pid, path,
			errno == ESRCH ? "no such process" : strerror(errno));
		return 1;
	}
	return 0;
}
