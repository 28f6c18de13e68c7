/* Shared helpers for the benchmark backend and load generator: clock, PRNG,
 * WebSocket accept computation, header lookup and socket setup. Header-only so
 * each tool is a single translation unit built with plain gcc -O2 -lcrypto. */
#ifndef BENCH_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t rng_next(void)
{
	/* xorshift64*: fast, good enough for keys and payload patterns */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* key: 24 base64 chars + NUL; accept: 28 chars + NUL */
static inline void ws_accept(const char *key, size_t keylen, char accept[29])
{
	unsigned char buf[128], md[SHA_DIGEST_LENGTH];
	if (keylen > sizeof(buf) - sizeof(WS_GUID))
		keylen = sizeof(buf) - sizeof(WS_GUID);
	memcpy(buf, key, keylen);
	memcpy(buf + keylen, WS_GUID, sizeof(WS_GUID) - 1);
	SHA1(buf, keylen + sizeof(WS_GUID) - 1, md);
	EVP_EncodeBlock((unsigned char *)accept, md, SHA_DIGEST_LENGTH);
	accept[28] = '\0';
}

static inline void ws_make_key(char key[25])
{
	unsigned char raw[16];
	uint64_t a = rng_next(), b = rng_next();
	memcpy(raw, &a, 8);
	memcpy(raw + 8, &b, 8);
	EVP_EncodeBlock((unsigned char *)key, raw, 16);
	key[24] = '\0';
}

/* Finds header `name` in a head [p, p+len) that ends with CRLFCRLF. Sets
 * val and vlen to the trimmed value of the first occurrence. Returns 1 if found. */
static inline int hdr_find(const char *p, size_t len, const char *name, const char **val,
			   size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *end = p + len;
	const char *line = memchr(p, '\n', len); /* skip start line */
	while (line && line + 1 < end) {
		line++;
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			break;
		size_t l = (size_t)(eol - line);
		if (l > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1, *ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*val = v;
			*vlen = (size_t)(ve - v);
			return 1;
		}
		line = eol;
	}
	return 0;
}

/* 1 if comma-separated header value contains token (case-insensitive) */
static inline int token_has(const char *v, size_t vlen, const char *tok)
{
	size_t tlen = strlen(tok), i = 0;
	while (i < vlen) {
		while (i < vlen && (v[i] == ' ' || v[i] == ',' || v[i] == '\t'))
			i++;
		size_t s = i;
		while (i < vlen && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tlen && strncasecmp(v + s, tok, tlen) == 0)
			return 1;
	}
	return 0;
}

static inline void sock_tune(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static inline void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "out of memory (%zu bytes)\n", n);
		exit(2);
	}
	return p;
}

/* CPU seconds (utime + stime, /proc/PID/stat) of pids[0..npids) */
static inline double proc_cpu_of(const int *pids, int npids)
{
	double tck = (double)sysconf(_SC_CLK_TCK), s = 0;
	for (int i = 0; i < npids; i++) {
		char p[64], buf[1024];
		snprintf(p, sizeof(p), "/proc/%d/stat", pids[i]);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		char *q = strrchr(buf, ')');
		if (!q)
			continue;
		unsigned long long ut = 0, st = 0;
		/* fields after ")": state ppid pgrp session tty tpgid flags minflt
		 * cminflt majflt cmajflt utime stime */
		if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) ==
		    2)
			s += (double)(ut + st) / tck;
	}
	return s;
}

/* busy and total jiffies of one CPU (/proc/stat); 0 on success */
static inline int cpu_jiffies(int cpu, unsigned long long *busy, unsigned long long *total)
{
	char want[16], line[512];
	int wl = snprintf(want, sizeof(want), "cpu%d ", cpu);
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return -1;
	int rc = -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, want, (size_t)wl) != 0)
			continue;
		unsigned long long v[8] = {0};
		if (sscanf(line + wl, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			   &v[3], &v[4], &v[5], &v[6], &v[7]) >= 5) {
			*total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
			*busy = *total - v[3] - v[4]; /* all but idle and iowait */
			rc = 0;
		}
		break;
	}
	fclose(f);
	return rc;
}

#endif
