/*
 * log: error log and JSON access log. Writes are one write(2) per line so
 * lines from concurrent processes never interleave mid-line.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int error_fd = STDERR_FILENO;
static int access_fd = STDERR_FILENO;
static char *error_path, *access_path; /* files to reopen on SIGUSR1; NULL = not a file */
static char *syslog_path;	       /* access_log = "syslog...": the socket, NULL = not syslog */
static enum log_level max_level = LOG_LEVEL_INFO;

/* Worst case 6 bytes per escaped byte still fits the line buffer. */
#define LOG_JSON_MAX_STR 256

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* A datagram socket connected to the syslog socket at path. -1 with errno. */
static int syslog_connect(const char *path)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* "syslog" is /dev/log; "syslog:unix:/PATH" names the socket. */
static int open_syslog(const char *target, int *fd)
{
	const char *path = strcmp(target, "syslog") == 0 ? "/dev/log" : target + 12;
	if ((*fd = syslog_connect(path)) < 0) {
		fprintf(stderr, "switchyard: cannot open log %s: %s\n", target, strerror(errno));
		return -1;
	}
	syslog_path = strdup(path);
	return 0;
}

static int open_target(const char *target, int *fd)
{
	if (target == NULL || strcmp(target, "stderr") == 0) {
		*fd = STDERR_FILENO;
		return 0;
	}
	if (strcmp(target, "off") == 0) {
		*fd = -1;
		return 0;
	}
	*fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (*fd < 0) {
		fprintf(stderr, "switchyard: cannot open log %s: %s\n", target, strerror(errno));
		return -1;
	}
	return 0;
}

static char *file_path(const char *target)
{
	if (target == NULL || !strcmp(target, "stderr") || !strcmp(target, "off"))
		return NULL;
	return strdup(target);
}

int log_open(const char *error_log, const char *access_log, const char *level)
{
	for (size_t i = 0; level && i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(level, level_names[i]) == 0)
			max_level = (enum log_level)i;
	if (error_log && strcmp(error_log, "off") == 0)
		error_log = "stderr"; /* errors are never silenced */
	if (open_target(error_log, &error_fd) < 0)
		return -1;
	error_path = file_path(error_log);
	if (access_log && strncmp(access_log, "syslog", 6) == 0)
		return open_syslog(access_log, &access_fd);
	access_path = file_path(access_log);
	return open_target(access_log, &access_fd);
}

/*
 * dup2() puts the new file under the old descriptor number in one step, so
 * a thread writing a line at that moment writes it whole to one file or the
 * other.
 */
static int reopen_one(const char *path, int fd)
{
	if (path == NULL || fd <= STDERR_FILENO)
		return 0;
	int nfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (nfd < 0) {
		log_msg(LOG_LEVEL_ERROR, 0, "cannot reopen log %s: %s", path, strerror(errno));
		return -1;
	}
	int rc = dup3(nfd, fd, O_CLOEXEC) < 0 ? -1 : 0;
	close(nfd);
	return rc;
}

/* The syslog daemon restarted: connect again, under the same descriptor number. */
static int syslog_reconnect(void)
{
	int nfd = syslog_connect(syslog_path);
	if (nfd < 0)
		return -1;
	int rc = dup3(nfd, access_fd, O_CLOEXEC) < 0 ? -1 : 0;
	close(nfd);
	return rc;
}

int log_reopen(void)
{
	int a = reopen_one(error_path, error_fd);
	int b = syslog_path ? syslog_reconnect() : reopen_one(access_path, access_fd);
	return a < 0 || b < 0 ? -1 : 0;
}

void log_close(void)
{
	if (error_fd > STDERR_FILENO)
		close(error_fd);
	if (access_fd > STDERR_FILENO && access_fd != error_fd)
		close(access_fd);
	error_fd = access_fd = STDERR_FILENO;
	free(error_path);
	free(access_path);
	free(syslog_path);
	error_path = access_path = syslog_path = NULL;
}

bool log_enabled(enum log_level level)
{
	return level <= max_level;
}

bool log_access_enabled(void)
{
	return access_fd >= 0;
}

void log_time_iso(char *out, size_t cap)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
}

/* 0, or the errno of a failed write (a broken log must not stop the proxy). */
static int write_line(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The access log stopped taking lines (a full disk): say so once in the
 * error log, and once more when it takes them again. Lines in between are
 * lost; proxying goes on.
 */
static atomic_bool access_failing;

static void access_written(int err)
{
	bool was = atomic_load_explicit(&access_failing, memory_order_relaxed);
	if ((err != 0) == was || atomic_exchange(&access_failing, err != 0) == (err != 0))
		return;
	if (err)
		log_msg(LOG_LEVEL_ERROR, 0,
			"access log %s: %s; its lines are lost until it "
			"works again",
			access_path ? access_path : "stderr", strerror(err));
	else
		log_msg(LOG_LEVEL_INFO, 0, "access log %s: writing again",
			access_path ? access_path : "stderr");
}

void log_msg(enum log_level level, uint64_t session, const char *fmt, ...)
{
	char line[1024], ts[32];
	if (!log_enabled(level))
		return;
	log_time_iso(ts, sizeof(ts));
	int n = snprintf(line, sizeof(line), "%s %s s=%llu ", ts, level_names[level],
			 (unsigned long long)session);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	write_line(error_fd, line, len);
}

static void json_put(struct log_json *j, const char *s, size_t len)
{
	if (j->len + len + 2 > sizeof(j->buf)) { /* keep room for "}\n" */
		j->truncated = true;
		return;
	}
	memcpy(j->buf + j->len, s, len);
	j->len += len;
}

static void json_key(struct log_json *j, const char *key)
{
	if (j->len > 1)
		json_put(j, ",", 1);
	json_put(j, "\"", 1);
	json_put(j, key, strlen(key));
	json_put(j, "\":", 2);
}

void log_json_begin(struct log_json *j)
{
	j->len = 0;
	j->truncated = false;
	json_put(j, "{", 1);
}

void log_json_str(struct log_json *j, const char *key, const char *val, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	if (len > LOG_JSON_MAX_STR)
		len = LOG_JSON_MAX_STR; /* long targets must not push later keys out */
	json_key(j, key);
	json_put(j, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)val[i];
		char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			json_put(j, e, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			json_put(j, esc, 6); /* bytes from the wire are not trusted as UTF-8 */
		} else {
			json_put(j, (const char *)&val[i], 1);
		}
	}
	json_put(j, "\"", 1);
}

void log_json_cstr(struct log_json *j, const char *key, const char *val)
{
	if (val == NULL) {
		json_key(j, key);
		json_put(j, "null", 4);
		return;
	}
	log_json_str(j, key, val, strlen(val));
}

void log_json_num(struct log_json *j, const char *key, uint64_t val)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)val);
	json_key(j, key);
	json_put(j, num, (size_t)n);
}

void log_json_bool(struct log_json *j, const char *key, bool val)
{
	json_key(j, key);
	json_put(j, val ? "true" : "false", val ? 4 : 5);
}

void log_json_end(struct log_json *j)
{
	j->buf[j->len++] = '}';
}

/* One datagram: "<134>switchyard[PID]: {json}" (local0.info, RFC 3164 without a
 * timestamp, which the daemon adds). Never blocks: a full socket drops the line. */
static void syslog_line(const struct log_json *j)
{
	char head[48];
	int n = snprintf(head, sizeof(head), "<134>switchyard[%d]: ", (int)getpid());
	struct iovec iov[2] = {{head, (size_t)n}, {(void *)j->buf, j->len}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	if (sendmsg(access_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
	    (errno == ECONNREFUSED || errno == ENOTCONN) && syslog_reconnect() == 0)
		sendmsg(access_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void log_json_emit(struct log_json *j)
{
	if (access_fd < 0)
		return;
	if (syslog_path) {
		j->buf[j->len++] = '}';
		syslog_line(j);
		return;
	}
	j->buf[j->len++] = '}';
	j->buf[j->len++] = '\n';
	access_written(write_line(access_fd, j->buf, j->len));
}
