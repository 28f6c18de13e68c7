/*
 * splice: pipe pool and the splice(2) call. Pipes are recycled because
 * creating one costs two syscalls and two descriptors; only empty pipes go
 * back into the pool so the next borrower never sees stale bytes.
 */
#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

struct splice_pool {
	int (*pipes)[2]; /* idle, empty pipes */
	size_t n, cap;
	size_t open, max; /* pipes in existence (idle + lent) and their bound */
};

struct splice_pool *splice_pool_new(size_t cap, size_t max)
{
	struct splice_pool *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->pipes = calloc(cap ? cap : 1, sizeof(*p->pipes));
	if (p->pipes == NULL) {
		free(p);
		return NULL;
	}
	p->cap = cap < max ? cap : max;
	p->max = max;
	return p;
}

void splice_pool_free(struct splice_pool *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++) {
		close(p->pipes[i][0]);
		close(p->pipes[i][1]);
	}
	free(p->pipes);
	free(p);
}

int splice_pool_get(struct splice_pool *p, int fds[2])
{
	if (p->n > 0) {
		p->n--;
		fds[0] = p->pipes[p->n][0];
		fds[1] = p->pipes[p->n][1];
		return 0;
	}
	if (p->open >= p->max) {
		fds[0] = fds[1] = -1;
		errno = EMFILE; /* the descriptor budget's share for pipes is spent */
		return -1;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		fds[0] = fds[1] = -1;
		return -1;
	}
	p->open++;
	return 0;
}

void splice_pool_put(struct splice_pool *p, int fds[2], int empty)
{
	if (empty && p->n < p->cap) {
		p->pipes[p->n][0] = fds[0];
		p->pipes[p->n][1] = fds[1];
		p->n++;
	} else {
		close(fds[0]);
		close(fds[1]);
		p->open--;
	}
	fds[0] = fds[1] = -1;
}

ssize_t splice_move(int from, int to, size_t len)
{
	ssize_t n;
	do
		n = splice(from, NULL, to, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	while (n < 0 && errno == EINTR);
	return n;
}
