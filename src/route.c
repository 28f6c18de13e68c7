/*
 * route: map a request's host and target to the first matching route.
 *
 * Pure function over a loaded config: no allocation, no sockets, and the
 * inputs are length-delimited buffers straight from the parsed head (not
 * NUL-terminated), so a fuzzer can drive it directly.
 */
#include "route.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* A host reduced to the bytes that are compared: no port, no trailing dot. */
struct route_host {
	const char *p;
	size_t len;
};

/*
 * "example.com:8080" -> "example.com", "[::1]:8080" -> "[::1]" (brackets kept,
 * as config hosts are written that way), "example.com." -> "example.com".
 */
static struct route_host route_host_norm(const char *host, size_t len)
{
	struct route_host h = {host, 0};
	const char *end;

	if (host == NULL || len == 0)
		return h;
	if (host[0] == '[') {
		end = memchr(host, ']', len);
		h.len = end != NULL ? (size_t)(end - host) + 1 : len;
		return h;
	}
	end = memchr(host, ':', len);
	h.len = end != NULL ? (size_t)(end - host) : len;
	if (h.len > 0 && host[h.len - 1] == '.')
		h.len--;
	return h;
}

static bool route_host_match(const char *pattern, struct route_host h)
{
	size_t plen = strlen(pattern);

	if (h.len == 0)
		return false;
	if (pattern[0] == '*') {
		/* "*.example.com": suffix ".example.com" after at least one byte. */
		const char *suffix = pattern + 1;
		size_t slen = plen - 1;
		return h.len > slen && strncasecmp(h.p + h.len - slen, suffix, slen) == 0;
	}
	return h.len == plen && strncasecmp(h.p, pattern, plen) == 0;
}

/* Length of a URI scheme followed by "://", or 0 when TARGET has none. */
static size_t route_scheme_len(const char *t, size_t len)
{
	size_t i = 0;

	if (len == 0 || !((t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z'))
		return 0;
	for (i = 1; i < len; i++) {
		char c = t[i];
		bool alpha = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
		if (!alpha && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.')
			break;
	}
	if (len - i >= 3 && memcmp(t + i, "://", 3) == 0)
		return i + 3;
	return 0;
}

/*
 * Does the path of TARGET start with PREFIX? For "http://h/x?y" the path is
 * "/x?y"; for "http://h" or "http://h?y" it is "/" (or "/?y") per RFC 9112
 * 3.2.2, so the leading "/" of the prefix is matched implicitly.
 */
static bool route_path_match(const char *prefix, const char *t, size_t len)
{
	size_t plen = strlen(prefix);
	size_t skip = route_scheme_len(t, len);

	if (skip > 0) {
		size_t i = skip;
		while (i < len && t[i] != '/' && t[i] != '?' && t[i] != '#')
			i++;
		t += i;
		len -= i;
		if (len == 0 || t[0] != '/') {
			if (prefix[0] != '/')
				return false;
			prefix++; /* matched by the implicit "/" */
			plen--;
		}
	}
	return t != NULL && len >= plen && memcmp(t, prefix, plen) == 0;
}

const struct config_route *route_match(const struct config *cfg, const char *host, size_t host_len,
				       const char *path, size_t path_len)
{
	struct route_host h = route_host_norm(host, host_len);

	if (cfg == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct config_route *r = &cfg->routes[i];
		if (r->host != NULL && !route_host_match(r->host, h))
			continue;
		if (r->path_prefix != NULL && !route_path_match(r->path_prefix, path, path_len))
			continue;
		return r;
	}
	return NULL;
}
