/*
 * route: pick the first route whose host and path_prefix both match.
 * Pure function over the config; no sockets.
 */
#ifndef SY_ROUTE_H
#define SY_ROUTE_H

#include <stddef.h>

#include "config.h"

/*
 * host: the Host value (or absolute-form authority) as received, possibly with
 * ":port" or "[v6]:port"; may be NULL (HTTP/1.0 without Host). Matching is
 * case-insensitive, the port is ignored, a trailing dot is ignored. A route
 * host "*.example.com" matches "a.example.com" and "a.b.example.com" but not
 * "example.com". path: the request-target (origin-form path or absolute-form
 * URL; for absolute-form the path part is used). Returns the route or NULL.
 */
const struct config_route *route_match(const struct config *cfg, const char *host, size_t host_len,
				       const char *path, size_t path_len);

#endif
