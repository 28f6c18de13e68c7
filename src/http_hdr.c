/*
 * http_hdr: header hygiene for forwarded heads, in both directions.
 */
#include "http_hdr.h"

#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",	       "Proxy-Connection", "TE",
    "Trailer",	  "Transfer-Encoding", "Upgrade",	   "HTTP2-Settings",
};

/* Fields the proxy writes itself; the client's copies are replaced. */
static const char *const replaced_request[] = {
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
};

static bool name_in(const struct http_header *h, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (http_name_is(h, names[i]))
			return true;
	return false;
}

/* Fields that frame or address the message: a Connection option cannot remove them. */
static const char *const never_nominated[] = {"Content-Length", "Host"};

static bool nominated_by_connection(const struct http_msg *msg, const struct http_header *h)
{
	if (name_in(h, never_nominated, 2))
		return false;
	struct http_token_iter it = {0};
	const char *tok;
	size_t len;
	while (http_msg_next_token(msg, "Connection", &it, &tok, &len))
		if (len == h->name_len && strncasecmp(tok, h->name, len) == 0)
			return true;
	return false;
}

bool http_hdr_is_hop_by_hop(const struct http_msg *msg, const struct http_header *h)
{
	return name_in(h, hop_by_hop, sizeof(hop_by_hop) / sizeof(hop_by_hop[0])) ||
	       nominated_by_connection(msg, h);
}

static int add_field(struct evbuffer *out, const char *name, const char *v, size_t len)
{
	if (evbuffer_add(out, name, strlen(name)) < 0 || evbuffer_add(out, ": ", 2) < 0 ||
	    evbuffer_add(out, v, len) < 0 || evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

static int add_raw_field(struct evbuffer *out, const struct http_header *h)
{
	/* byte-exact: the name as received and the value as received (OWS trimmed) */
	if (evbuffer_add(out, h->name, h->name_len) < 0 || evbuffer_add(out, ": ", 2) < 0 ||
	    evbuffer_add(out, h->value, h->value_len) < 0 || evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

/* Copy end-to-end fields in order, skipping hop-by-hop and those in skip[]. */
static int copy_fields(const struct http_msg *msg, struct evbuffer *out, const char *const *skip,
		       size_t n_skip, const char *host, size_t host_len)
{
	for (size_t i = 0; i < msg->n_headers; i++) {
		const struct http_header *h = &msg->headers[i];
		if (http_hdr_is_hop_by_hop(msg, h) || name_in(h, skip, n_skip))
			continue;
		if (host && http_name_is(h, "Host")) {
			if (add_field(out, "Host", host, host_len) < 0)
				return -1;
			host = NULL;
			continue;
		}
		if (add_raw_field(out, h) < 0)
			return -1;
	}
	if (host && add_field(out, "Host", host, host_len) < 0)
		return -1; /* absolute-form without a Host field */
	return 0;
}

/* HTTP/1.1 requires Host; an HTTP/1.0 client may have sent none (RFC 9112 §3.2). */
static int ensure_host(const struct http_msg *req, struct evbuffer *out)
{
	if (req->authority || http_msg_find(req, "Host"))
		return 0;
	return evbuffer_add(out, "Host: \r\n", 8);
}

static int add_forwarded_for(const struct http_msg *req, const char *client_ip,
			     struct evbuffer *out)
{
	bool first = true;
	if (evbuffer_add(out, "X-Forwarded-For: ", 17) < 0)
		return -1;
	for (size_t i = 0; i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (!http_name_is(h, "X-Forwarded-For") || h->value_len == 0)
			continue;
		if ((!first && evbuffer_add(out, ", ", 2) < 0) ||
		    evbuffer_add(out, h->value, h->value_len) < 0)
			return -1;
		first = false;
	}
	if ((!first && evbuffer_add(out, ", ", 2) < 0) ||
	    evbuffer_add(out, client_ip, strlen(client_ip)) < 0 || evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

static int add_common(const struct http_msg *msg, const struct http_hdr_opts *o,
		      struct evbuffer *out)
{
	if (o->chunked && evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28) < 0)
		return -1;
	if (o->connection && add_field(out, "Connection", o->connection, strlen(o->connection)) < 0)
		return -1;
	if (o->extra_len && evbuffer_add(out, o->extra, o->extra_len) < 0)
		return -1;
	if (evbuffer_add_printf(out, "Via: 1.%d %s\r\n", msg->version_minor, o->via) < 0)
		return -1;
	return evbuffer_add(out, "\r\n", 2);
}

int http_hdr_write_request(const struct http_msg *req, const struct http_hdr_opts *o,
			   struct evbuffer *out)
{
	const struct http_header *host = http_msg_find(req, "Host");
	const char *host_value = req->authority ? req->authority : host ? host->value : NULL;
	size_t host_len = req->authority ? req->authority_len : host ? host->value_len : 0;

	if (evbuffer_add(out, req->method_str, req->method_len) < 0 ||
	    evbuffer_add(out, " ", 1) < 0 || evbuffer_add(out, req->target, req->target_len) < 0 ||
	    evbuffer_add(out, " HTTP/1.1\r\n", 11) < 0)
		return -1;
	if (copy_fields(req, out, replaced_request, 3, req->authority, req->authority_len) < 0 ||
	    ensure_host(req, out) < 0)
		return -1;
	if (add_forwarded_for(req, o->client_ip, out) < 0 ||
	    add_field(out, "X-Forwarded-Proto", o->proto, strlen(o->proto)) < 0)
		return -1;
	if (host_value && add_field(out, "X-Forwarded-Host", host_value, host_len) < 0)
		return -1;
	return add_common(req, o, out);
}

int http_hdr_write_response(const struct http_msg *resp, const struct http_hdr_opts *o,
			    struct evbuffer *out)
{
	if (evbuffer_add_printf(out, "HTTP/1.1 %03d ", resp->status) < 0 ||
	    evbuffer_add(out, resp->reason, resp->reason_len) < 0 ||
	    evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	if (copy_fields(resp, out, NULL, 0, NULL, 0) < 0)
		return -1;
	return add_common(resp, o, out);
}

/*
 * In "k1=v1<sep>k2=v2...", the value of key name (pairs split on sep,
 * optional spaces around them; a pair without '=' has an empty value).
 */
static bool pair_value(const char *p, const char *end, char sep, const char *name, const char **val,
		       size_t *len)
{
	size_t name_len = strlen(name);
	while (p < end) {
		const char *next = memchr(p, sep, (size_t)(end - p));
		const char *stop = next ? next : end;
		while (p < stop && *p == ' ')
			p++;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		const char *key_end = eq ? eq : stop;
		if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
			const char *v = eq ? eq + 1 : stop, *v_end = stop;
			while (v_end > v && v_end[-1] == ' ')
				v_end--;
			*val = v;
			*len = (size_t)(v_end - v);
			return true;
		}
		p = next ? next + 1 : end;
	}
	return false;
}

bool http_hdr_cookie(const struct http_msg *req, const char *name, const char **val, size_t *len)
{
	for (size_t i = 0; i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		if (http_name_is(h, "Cookie") &&
		    pair_value(h->value, h->value + h->value_len, ';', name, val, len))
			return true;
	}
	return false;
}

bool http_hdr_query_param(const char *target, size_t target_len, const char *name, const char **val,
			  size_t *len)
{
	const char *q = memchr(target, '?', target_len);
	if (q == NULL)
		return false;
	const char *end = target + target_len, *hash = memchr(q, '#', (size_t)(end - q));
	return pair_value(q + 1, hash ? hash : end, '&', name, val, len);
}
