/*
 * splice: a bounded pool of pipes for zero-copy splice(2) between sockets.
 * A pipe is borrowed only while bytes are in flight, so idle tunnels hold
 * no pipe and cost no extra descriptors.
 */
#ifndef SY_SPLICE_H
#define SY_SPLICE_H

#include <stddef.h>
#include <sys/types.h>

struct splice_pool;

/*
 * A pool keeping at most cap idle pipes and lending no more than max pipes
 * in all (idle + lent), so pipes stay within their share of the descriptor
 * budget (fdlimit.h). NULL on failure.
 */
struct splice_pool *splice_pool_new(size_t cap, size_t max);
void splice_pool_free(struct splice_pool *p);

/* Borrow an empty pipe: fds[0] read end, fds[1] write end. 0 / -1 (errno;
 * EMFILE when max pipes are out: the caller copies instead). */
int splice_pool_get(struct splice_pool *p, int fds[2]);
/* Return a pipe; empty is false when bytes remain in it (then it is closed). */
void splice_pool_put(struct splice_pool *p, int fds[2], int empty);

/*
 * Move up to len bytes between fds with splice(2), non-blocking. Returns
 * bytes moved, 0 at EOF of a socket source, -1 with errno (EAGAIN: would block).
 */
ssize_t splice_move(int from, int to, size_t len);

#endif
