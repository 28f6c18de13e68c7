/*
 * user: dropping root once bound (see user.h).
 */
#include "user.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int drop_to(const struct passwd *pw, char *note, size_t cap)
{
	/* groups first: once the uid is gone, so is the right to change them */
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		snprintf(note, cap, "cannot become user %s: %s", pw->pw_name, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
		snprintf(note, cap, "cannot become user %s: root could be regained", pw->pw_name);
		return -1;
	}
	snprintf(note, cap, "running as user %s (uid %u, gid %u)", pw->pw_name,
		 (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
	return 0;
}

int user_become(const char *name, char *note, size_t cap)
{
	note[0] = '\0';
	if (geteuid() != 0) {
		if (name == NULL || strcmp(name, "root") == 0)
			return 0;
		snprintf(note, cap, "not started as root: user = \"%s\" has no effect", name);
		return 1;
	}
	if (name == NULL) {
		snprintf(
		    note, cap,
		    "refusing to serve as root: set user = \"NAME\" to run as NAME once bound, "
		    "or user = \"root\" to stay root");
		return -1;
	}
	if (strcmp(name, "root") == 0)
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(name);
	if (pw == NULL) {
		snprintf(note, cap, "user \"%s\": %s", name,
			 errno ? strerror(errno) : "no such user");
		return -1;
	}
	return drop_to(pw, note, cap);
}
