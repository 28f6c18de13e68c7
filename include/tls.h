/*
 * tls: TLS contexts (with conn.c, the only modules that include OpenSSL's
 * SSL headers). Server contexts for TLS listeners (certificates chosen by
 * SNI, ALPN http/1.1 only, tickets on, TLS 1.2+ by default) and client
 * contexts for TLS upstreams (verified by default). Connections run on
 * conn.c, which does the TLS reads and writes.
 */
#ifndef SY_TLS_H
#define SY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct event_base;
struct conn;
struct tls_server;
struct tls_client;

/*
 * Contexts for a listener: one per certificate, with the names read from
 * each certificate (subjectAltName DNS entries, else the CN). NULL on
 * failure with "FILE: reason" in err.
 */
struct tls_server *tls_server_new(const struct config_tls_server *cfg, char *err, size_t errlen);
void tls_server_free(struct tls_server *srv);

/* Index of the certificate serving name (NULL/unknown: 0, the default). */
size_t tls_server_pick(const struct tls_server *srv, const char *name);

/* A conn that accepts TLS on fd (owns fd). NULL on failure (fd closed). */
struct conn *tls_server_accept(struct tls_server *srv, struct event_base *base, int fd);

/* Context for an upstream. NULL on failure with a reason in err. */
struct tls_client *tls_client_new(const struct config_tls_client *cfg, char *err, size_t errlen);
void tls_client_free(struct tls_client *cli);

/*
 * A conn for a TLS connection to an upstream over fd (owned; not yet
 * connected: call conn_connect). host names the server for SNI and
 * verification unless the config names one. NULL on failure (fd closed).
 */
struct conn *tls_client_conn(struct tls_client *cli, struct event_base *base, int fd,
			     const char *host);

/* Does the certificate file load and match the key? 0, or -1 with a reason. */
int tls_check_pair(const char *cert, const char *key, char *err, size_t errlen);

#endif
