/*
 * pidfile: the pid_file of a running switchyard, and `-s` signalling it.
 */
#ifndef SY_PIDFILE_H
#define SY_PIDFILE_H

/* Write our pid to path ("1234\n"). 0, or -1 with the reason logged. */
int pidfile_write(const char *path);
/* Remove path if it still names this process. */
void pidfile_remove(const char *path);
/*
 * Send sig to the process named in path (the pid_file of config file
 * `file`, NULL when the config sets none). Returns the exit status: 0 sent,
 * 1 with the reason on stderr.
 */
int pidfile_signal(const char *file, const char *path, int sig);

#endif
