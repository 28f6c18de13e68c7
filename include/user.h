/*
 * user: who the proxy runs as. Started as root, it binds its listeners and
 * reads its keys, then becomes the configured user (uid, primary group and
 * supplementary groups) before serving; without a `user` key it refuses to
 * serve as root, and `user = "root"` says staying root is meant.
 */
#ifndef SY_USER_H
#define SY_USER_H

#include <stddef.h>

/*
 * Become name (NULL: no user key). 0 with note set to what happened ("" when
 * nothing needed saying), 1 when note is a warning (the key has no effect),
 * or -1 with note set to why not (then do not serve).
 */
int user_become(const char *name, char *note, size_t cap);

#endif
