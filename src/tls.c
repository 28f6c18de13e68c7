/*
 * tls: OpenSSL behind a small interface (see tls.h).
 *
 * SNI: every certificate gets its own SSL_CTX; the servername callback of
 * the default context moves the connection to the context whose names
 * match, exact names first, then "*.suffix" wildcards (one label). ALPN
 * selects http/1.1 and nothing else, so browsers never try HTTP/2, over
 * which switchyard could not carry their WebSocket upgrades.
 */
#include "tls.h"

#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define TLS_MAX_NAMES 32

struct tls_cert {
	SSL_CTX *ctx;
	char *names[TLS_MAX_NAMES]; /* lower-case DNS names, maybe "*.suffix" */
	size_t n_names;
};

struct tls_server {
	struct tls_cert *certs;
	size_t n_certs;
};

struct tls_client {
	SSL_CTX *ctx;
	char *sni; /* configured name, or NULL to use the host */
	bool verify;
};

static void set_err(char *err, size_t len, const char *file, const char *what)
{
	unsigned long e = ERR_get_error();
	char ssl[160] = "";
	if (e)
		ERR_error_string_n(e, ssl, sizeof(ssl));
	snprintf(err, len, "%s: %s%s%s", file, what, e ? ": " : "", ssl);
	ERR_clear_error();
}

static int min_version(const char *protocols)
{
	if (protocols && strncmp(protocols, "TLSv1.3", 7) == 0)
		return TLS1_3_VERSION;
	return TLS1_2_VERSION; /* 1.0 and 1.1 are never enabled */
}

/*
 * For conn.c's direct TLS pump: read ahead (one read(2) fetches several
 * records, which conn.c drains through SSL_has_pending) into a read buffer
 * that holds TLS_READ_BUFFER bytes of records (conn_new sets the write
 * modes it needs). The buffers go back while a connection idles, by
 * conn_tick: SSL_MODE_RELEASE_BUFFERS would free and fault them in again
 * at every record of a busy one.
 */
#define TLS_READ_BUFFER (64 * 1024)

static void tune_io(SSL_CTX *ctx)
{
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
}

/* The first of the listener's protocols (its alpn, in its order) that the client offers. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct config_tls_server *cfg = arg;
	unsigned char *sel;
	if (SSL_select_next_proto(&sel, outlen, cfg->alpn, (unsigned)cfg->alpn_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* nothing in common: carry on without ALPN (HTTP/1.1)
					      */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static void add_name(struct tls_cert *c, const char *name, size_t len)
{
	if (c->n_names == TLS_MAX_NAMES || len == 0)
		return;
	char *n = strndup(name, len);
	if (n == NULL)
		return;
	for (char *p = n; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	c->names[c->n_names++] = n;
}

/* DNS names of the certificate: subjectAltName, else the subject CN. */
static void read_names(struct tls_cert *c, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type == GEN_DNS)
			add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
				 (size_t)ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (c->n_names == 0) {
		char cn[256];
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
						  sizeof(cn));
		if (n > 0)
			add_name(c, cn, (size_t)n);
	}
}

static bool name_matches(const char *pattern, const char *name)
{
	if (strcasecmp(pattern, name) == 0)
		return true;
	if (strncmp(pattern, "*.", 2) != 0)
		return false;
	const char *dot = strchr(name, '.'); /* the wildcard covers exactly one label */
	return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
}

size_t tls_server_pick(const struct tls_server *srv, const char *name)
{
	if (name == NULL)
		return 0;
	for (int wild = 0; wild < 2; wild++)
		for (size_t i = 0; i < srv->n_certs; i++)
			for (size_t j = 0; j < srv->certs[i].n_names; j++) {
				const char *p = srv->certs[i].names[j];
				bool is_wild = p[0] == '*';
				if (is_wild == (wild == 1) && name_matches(p, name))
					return i;
			}
	return 0;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *srv = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	size_t i = tls_server_pick(srv, name);
	if (i != 0)
		SSL_set_SSL_CTX(ssl, srv->certs[i].ctx);
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx_new(const struct config_tls_server *cfg, const struct config_tls_cert *c,
			       struct tls_cert *out, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		set_err(err, errlen, c->cert, "cannot create TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min_version(cfg->protocols));
	/* a peer that closes TCP without close_notify has ended, not failed (OpenSSL 3) */
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	tune_io(ctx);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, (void *)cfg);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
		set_err(err, errlen, c->cert, "cannot load certificate");
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
		set_err(err, errlen, c->key, "cannot load private key");
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		set_err(err, errlen, c->key, "private key does not match the certificate");
		goto fail;
	}
	read_names(out, SSL_CTX_get0_certificate(ctx));
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_server *tls_server_new(const struct config_tls_server *cfg, char *err, size_t errlen)
{
	struct tls_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL || (srv->certs = calloc(cfg->n_certs, sizeof(*srv->certs))) == NULL) {
		free(srv);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_certs; i++) {
		srv->certs[i].ctx =
		    server_ctx_new(cfg, &cfg->certs[i], &srv->certs[i], err, errlen);
		srv->n_certs++;
		if (srv->certs[i].ctx == NULL) {
			tls_server_free(srv);
			return NULL;
		}
	}
	SSL_CTX_set_tlsext_servername_callback(srv->certs[0].ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(srv->certs[0].ctx, srv);
	return srv;
}

void tls_server_free(struct tls_server *srv)
{
	if (srv == NULL)
		return;
	for (size_t i = 0; i < srv->n_certs; i++) {
		SSL_CTX_free(srv->certs[i].ctx);
		for (size_t j = 0; j < srv->certs[i].n_names; j++)
			free(srv->certs[i].names[j]);
	}
	free(srv->certs);
	free(srv);
}

struct conn *tls_server_accept(struct tls_server *srv, struct event_base *base, int fd)
{
	SSL *ssl = SSL_new(srv->certs[0].ctx);
	if (ssl == NULL) {
		close(fd);
		return NULL;
	}
	return conn_new(base, fd, ssl, CONN_TLS_ACCEPT);
}

struct tls_client *tls_client_new(const struct config_tls_client *cfg, char *err, size_t errlen)
{
	struct tls_client *cli = calloc(1, sizeof(*cli));
	if (cli == NULL || (cli->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		free(cli);
		snprintf(err, errlen, "cannot create TLS client context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(cli->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(cli->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
	tune_io(cli->ctx);
	cli->verify = cfg->verify;
	if (cfg->verify) {
		int ok = cfg->ca ? SSL_CTX_load_verify_locations(cli->ctx, cfg->ca, NULL)
				 : SSL_CTX_set_default_verify_paths(cli->ctx);
		if (ok != 1) {
			set_err(err, errlen, cfg->ca ? cfg->ca : "system CA store",
				"cannot load CA certificates");
			tls_client_free(cli);
			return NULL;
		}
		SSL_CTX_set_verify(cli->ctx, SSL_VERIFY_PEER, NULL);
	}
	if (cfg->sni && (cli->sni = strdup(cfg->sni)) == NULL) {
		tls_client_free(cli);
		return NULL;
	}
	return cli;
}

void tls_client_free(struct tls_client *cli)
{
	if (cli == NULL)
		return;
	SSL_CTX_free(cli->ctx);
	free(cli->sni);
	free(cli);
}

struct conn *tls_client_conn(struct tls_client *cli, struct event_base *base, int fd,
			     const char *host)
{
	const char *name = cli->sni ? cli->sni : host;
	SSL *ssl = SSL_new(cli->ctx);
	if (ssl == NULL) {
		close(fd);
		return NULL;
	}
	SSL_set_tlsext_host_name(ssl, name);
	if (cli->verify) /* checks the name (or IP address) against the certificate */
		SSL_set1_host(ssl, name);
	return conn_new(base, fd, ssl, CONN_TLS_CONNECT);
}

int tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
	struct config_tls_server cfg = {0};
	struct config_tls_cert c = {.cert = (char *)cert, .key = (char *)key};
	struct tls_cert out = {0};
	SSL_CTX *ctx = server_ctx_new(&cfg, &c, &out, err, errlen);
	for (size_t j = 0; j < out.n_names; j++)
		free(out.names[j]);
	if (ctx == NULL)
		return -1;
	SSL_CTX_free(ctx);
	return 0;
}
