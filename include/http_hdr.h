/*
 * http_hdr: writes a forwarded head. Removes hop-by-hop fields (RFC 9110
 * §7.6.1: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade, HTTP2-Settings and every field a Connection
 * header nominates), keeps end-to-end fields byte-exact and in order, and
 * adds Via and X-Forwarded-*. Pure: works on a parsed head and an evbuffer.
 */
#ifndef SY_HTTP_HDR_H
#define SY_HTTP_HDR_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

struct evbuffer;

struct http_hdr_opts {
	const char *via;	/* pseudonym for "Via: 1.x <via>" */
	const char *client_ip;	/* requests: appended to X-Forwarded-For */
	const char *proto;	/* requests: X-Forwarded-Proto value */
	const char *connection; /* value of the Connection field to send, or NULL */
	bool chunked;		/* add "Transfer-Encoding: chunked" */
	/* extra raw field lines ("Name: value\r\n"...) appended after the rest */
	const char *extra;
	size_t extra_len;
};

/* Is h a hop-by-hop field of msg (by name or nominated by Connection)? */
bool http_hdr_is_hop_by_hop(const struct http_msg *msg, const struct http_header *h);

/*
 * Append "METHOD target HTTP/1.1" and the rewritten fields of req to out.
 * An absolute-form authority replaces Host. 0 / -1 (out of memory).
 */
int http_hdr_write_request(const struct http_msg *req, const struct http_hdr_opts *o,
			   struct evbuffer *out);

/*
 * The value of cookie name in req's Cookie fields (RFC 6265 §4.2.1:
 * "a=1; b=2"), or of query parameter name in a request-target ("/p?a=1&b"),
 * as raw bytes (no decoding). true with val and len set (may be empty), false
 * when absent. For balance = "hash".
 */
bool http_hdr_cookie(const struct http_msg *req, const char *name, const char **val, size_t *len);
bool http_hdr_query_param(const char *target, size_t target_len, const char *name, const char **val,
			  size_t *len);

/* Append "HTTP/1.1 status reason" and the rewritten fields of resp. 0 / -1. */
int http_hdr_write_response(const struct http_msg *resp, const struct http_hdr_opts *o,
			    struct evbuffer *out);

#endif
