/*
 * log: the error log (human-readable lines) and the access log (one JSON
 * object per line). Process-wide: opened once from the config.
 */
#ifndef SY_LOG_H
#define SY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Open the error and access logs ("stderr", "off" for access, or a path). 0 / -1. */
int log_open(const char *error_log, const char *access_log, const char *level);
void log_close(void);
/* Reopen the log files at their paths (after logrotate renamed them). 0 / -1 (logged). */
int log_reopen(void);

/* "<ISO8601> <level> s=<session> <message>"; session 0 = not tied to a session. */
void log_msg(enum log_level level, uint64_t session, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bool log_enabled(enum log_level level);
bool log_access_enabled(void);

/* Builds one JSON access-log line; strings are escaped, the line is bounded. */
struct log_json {
	char buf[8192];
	size_t len;
	bool truncated;
};

void log_json_begin(struct log_json *j);
void log_json_str(struct log_json *j, const char *key, const char *val, size_t len);
void log_json_cstr(struct log_json *j, const char *key, const char *val);
void log_json_num(struct log_json *j, const char *key, uint64_t val);
void log_json_bool(struct log_json *j, const char *key, bool val);
/* Close the object without writing it anywhere (j->buf, j->len). */
void log_json_end(struct log_json *j);
/* Close the object and write it to the access log. */
void log_json_emit(struct log_json *j);

/* Current UTC time as "2026-11-25T17:30:00.123Z". */
void log_time_iso(char *out, size_t cap);

#endif
