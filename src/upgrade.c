/*
 * upgrade: decides what to do with an Upgrade request (RFC 9110 §7.8), checks
 * the WebSocket opening handshake (RFC 6455 §4.2.1) and validates the backend's
 * 101 before the session turns the connection into a tunnel.
 *
 * Pure functions over parsed heads: no sockets, no allocation except inside
 * libcrypto's digest context. Tokens kept in struct upgrade_req point into the
 * request's raw head, so the request must outlive the upgrade_req.
 */
#include "upgrade.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

/* ASCII-only so the result does not depend on the process locale. */
static int ascii_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static bool span_ieq(const char *a, size_t a_len, const char *b, size_t b_len)
{
	if (a_len != b_len)
		return false;
	for (size_t i = 0; i < a_len; i++)
		if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
			return false;
	return true;
}

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(int c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

/* protocol = protocol-name ["/" protocol-version], both tokens (RFC 9110 §7.8) */
static bool is_protocol(const char *s, size_t len)
{
	const char *slash = memchr(s, '/', len);

	if (slash == NULL)
		return is_token(s, len);
	size_t name_len = (size_t)(slash - s);
	return is_token(s, name_len) && is_token(slash + 1, len - name_len - 1);
}

/*
 * h2c is refused with or without a version: once a backend switches to HTTP/2
 * the client could send requests through the tunnel that no route ever checked
 * ("h2c smuggling").
 */
static bool is_h2c(const char *s, size_t len)
{
	const char *slash = memchr(s, '/', len);
	size_t name_len = slash ? (size_t)(slash - s) : len;

	return http_token_eq(s, name_len, "h2c");
}

static bool route_allows(const struct config_route *route, const char *s, size_t len)
{
	if (route->any_protocol)
		return true;
	for (size_t i = 0; i < route->n_protocols; i++)
		if (http_token_eq(s, len, route->protocols[i]))
			return true;
	return false;
}

static void upgrade_reject(struct upgrade_req *out, int status, const char *reason)
{
	out->decision = UPGRADE_REJECT;
	out->status = status;
	out->reason = reason;
}

/*
 * RFC 9110 §7.8: Upgrade only means something when the sender also lists it in
 * Connection, and HTTP/1.0 intermediaries may have forwarded a stale Upgrade.
 */
static bool upgrade_is_requested(const struct http_msg *req)
{
	if (req->version_major != 1 || req->version_minor != 1)
		return false;
	if (http_msg_find(req, "Upgrade") == NULL)
		return false;
	return http_msg_has_token(req, "Connection", "upgrade");
}

/* Keep the tokens this route forwards, in the client's order. 0, or -1 if too many. */
static int upgrade_collect(const struct http_msg *req, const struct config_route *route,
			   struct upgrade_req *out)
{
	struct http_token_iter it = {0};
	const char *tok;
	size_t len;

	while (http_msg_next_token(req, "Upgrade", &it, &tok, &len)) {
		/* malformed tokens could only confuse the backend */
		if (!is_protocol(tok, len) || is_h2c(tok, len) || !route_allows(route, tok, len))
			continue;
		if (out->n_tokens == UPGRADE_MAX_TOKENS)
			return -1;
		out->tokens[out->n_tokens].s = tok;
		out->tokens[out->n_tokens].len = len;
		out->n_tokens++;
	}
	return 0;
}

static bool upgrade_has_websocket(const struct upgrade_req *u)
{
	for (size_t i = 0; i < u->n_tokens; i++)
		if (http_token_eq(u->tokens[i].s, u->tokens[i].len, "websocket"))
			return true;
	return false;
}

/* RFC 6455 §4.2.1. Returns 0 with ws_accept set, or -1 with out rejected. */
static int upgrade_check_ws_request(const struct http_msg *req, struct upgrade_req *out)
{
	const struct http_header *key = http_msg_find(req, "Sec-WebSocket-Key");
	const struct http_header *ver = http_msg_find(req, "Sec-WebSocket-Version");

	if (req->method != HTTP_METHOD_GET) {
		upgrade_reject(out, 400, "WebSocket handshake requires GET");
		return -1;
	}
	if (key == NULL || http_msg_count(req, "Sec-WebSocket-Key") != 1 ||
	    !upgrade_ws_key_valid(key->value, key->value_len)) {
		upgrade_reject(out, 400, "bad Sec-WebSocket-Key");
		return -1;
	}
	if (ver == NULL) {
		upgrade_reject(out, 400, "missing Sec-WebSocket-Version");
		return -1;
	}
	if (http_msg_count(req, "Sec-WebSocket-Version") != 1) { /* RFC 6455 §11.3.5: one field */
		upgrade_reject(out, 400, "repeated Sec-WebSocket-Version");
		return -1;
	}
	/* exact match: "13, 8" is a list we cannot honour, so 426 advertises 13 */
	if (ver->value_len != 2 || memcmp(ver->value, "13", 2) != 0) {
		upgrade_reject(out, 426, "unsupported Sec-WebSocket-Version");
		return -1;
	}
	if (upgrade_ws_accept(key->value, key->value_len, out->ws_accept) < 0) {
		/* only a libcrypto failure gets here; the client is not at fault */
		upgrade_reject(out, 500, "cannot compute Sec-WebSocket-Accept");
		return -1;
	}
	out->websocket = true;
	return 0;
}

void upgrade_classify(const struct http_msg *req, const struct config_route *route,
		      struct upgrade_req *out)
{
	memset(out, 0, sizeof(*out));
	out->decision = UPGRADE_NONE;

	if (!upgrade_is_requested(req))
		return;
	if (upgrade_collect(req, route, out) < 0) {
		upgrade_reject(out, 400, "too many Upgrade tokens");
		return;
	}
	if (out->n_tokens == 0)
		return;
	if (route->upgrade == CONFIG_UPGRADE_DENY) {
		upgrade_reject(out, 403, "upgrade denied by route");
		return;
	}
	if (route->upgrade == CONFIG_UPGRADE_STRIP) {
		out->n_tokens = 0; /* a plain request carries no tokens */
		return;
	}
	/* after a switch the body bytes would be read as the new protocol */
	if (req->body != HTTP_BODY_NONE) {
		upgrade_reject(out, 400, "upgrade request with a body");
		return;
	}
	if (upgrade_has_websocket(out) && upgrade_check_ws_request(req, out) < 0)
		return;
	out->decision = UPGRADE_FORWARD;
}

/* Append n bytes at *len if they fit in cap; false otherwise. */
static bool buf_put(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
	if (n > cap - *len)
		return false;
	memcpy(buf + *len, s, n);
	*len += n;
	return true;
}

size_t upgrade_format_request_fields(const struct upgrade_req *u, char *buf, size_t cap)
{
	static const char head[] = "Connection: Upgrade\r\nUpgrade: ";
	size_t len = 0;

	if (u->n_tokens == 0 || cap == 0)
		return 0;
	if (!buf_put(buf, cap, &len, head, sizeof(head) - 1))
		return 0;
	for (size_t i = 0; i < u->n_tokens; i++) {
		if (i > 0 && !buf_put(buf, cap, &len, ", ", 2))
			return 0;
		if (!buf_put(buf, cap, &len, u->tokens[i].s, u->tokens[i].len))
			return 0;
	}
	/* the NUL must fit too, though it is not counted */
	if (!buf_put(buf, cap, &len, "\r\n", 2) || len == cap)
		return 0;
	buf[len] = '\0';
	return len;
}

static bool upgrade_was_forwarded(const struct upgrade_req *u, const char *s, size_t len)
{
	for (size_t i = 0; i < u->n_tokens; i++)
		if (span_ieq(s, len, u->tokens[i].s, u->tokens[i].len))
			return true;
	return false;
}

/*
 * Every protocol the backend switches to must be one we forwarded, or the
 * client would be talking a protocol it never asked for.
 */
static const char *upgrade_check_resp_tokens(const struct upgrade_req *u,
					     const struct http_msg *resp, bool *websocket)
{
	struct http_token_iter it = {0};
	const char *tok;
	size_t len, n = 0;

	*websocket = false;
	while (http_msg_next_token(resp, "Upgrade", &it, &tok, &len)) {
		if (!upgrade_was_forwarded(u, tok, len))
			return "101 names a protocol the client did not offer";
		if (http_token_eq(tok, len, "websocket"))
			*websocket = true;
		n++;
	}
	return n == 0 ? "101 without Upgrade" : NULL;
}

/* Subprotocol names are compared byte for byte, as browsers do. */
static bool upgrade_client_offered(const struct http_msg *req, const char *s, size_t len)
{
	struct http_token_iter it = {0};
	const char *tok;
	size_t tok_len;

	while (http_msg_next_token(req, "Sec-WebSocket-Protocol", &it, &tok, &tok_len))
		if (tok_len == len && memcmp(tok, s, len) == 0)
			return true;
	return false;
}

static const char *upgrade_check_ws_101(const struct upgrade_req *u, const struct http_msg *req,
					const struct http_msg *resp)
{
	const struct http_header *acc = http_msg_find(resp, "Sec-WebSocket-Accept");
	const struct http_header *proto = http_msg_find(resp, "Sec-WebSocket-Protocol");

	if (acc == NULL || http_msg_count(resp, "Sec-WebSocket-Accept") != 1 ||
	    acc->value_len != UPGRADE_WS_ACCEPT_LEN ||
	    memcmp(acc->value, u->ws_accept, UPGRADE_WS_ACCEPT_LEN) != 0)
		return "bad Sec-WebSocket-Accept";
	if (proto == NULL)
		return NULL;
	/* the server selects one subprotocol, in one field, or none */
	if (http_msg_count(resp, "Sec-WebSocket-Protocol") != 1 ||
	    !is_token(proto->value, proto->value_len) ||
	    !upgrade_client_offered(req, proto->value, proto->value_len))
		return "101 selects a subprotocol the client did not offer";
	return NULL;
}

const char *upgrade_check_101(const struct upgrade_req *u, const struct http_msg *req,
			      const struct http_msg *resp)
{
	const char *why;
	bool websocket;

	if (u->decision != UPGRADE_FORWARD)
		return "unrequested 101";
	if (http_msg_find(resp, "Upgrade") == NULL)
		return "101 without Upgrade";
	why = upgrade_check_resp_tokens(u, resp, &websocket);
	if (why != NULL)
		return why;
	if (websocket && (why = upgrade_check_ws_101(u, req, resp)) != NULL)
		return why;
	/* a 101 ends at its head; framing fields would make the tunnel start ambiguous */
	if (http_msg_find(resp, "Content-Length") != NULL ||
	    http_msg_find(resp, "Transfer-Encoding") != NULL)
		return "101 with a body";
	return NULL;
}

int upgrade_ws_accept(const char *key, size_t key_len, char out[UPGRADE_WS_ACCEPT_LEN + 1])
{
	static const char guid[] = UPGRADE_WS_GUID;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (ctx == NULL)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, key, key_len) == 1 &&
	     EVP_DigestUpdate(ctx, guid, sizeof(guid) - 1) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok || md_len != 20)
		return -1;
	/* EVP_EncodeBlock writes 4 * ceil(20 / 3) = 28 chars and a NUL */
	if (EVP_EncodeBlock((unsigned char *)out, md, (int)md_len) != UPGRADE_WS_ACCEPT_LEN)
		return -1;
	return 0;
}

int upgrade_ws_new_key(char out[UPGRADE_WS_KEY_LEN + 1])
{
	unsigned char nonce[16];
	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		return -1;
	return EVP_EncodeBlock((unsigned char *)out, nonce, sizeof(nonce)) == UPGRADE_WS_KEY_LEN
		   ? 0
		   : -1;
}

static bool is_base64_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/*
 * 16 bytes encode to 22 significant chars plus "==". The 4 unused bits of the
 * last char are not checked, like common servers: only the length matters.
 */
bool upgrade_ws_key_valid(const char *key, size_t key_len)
{
	if (key_len != UPGRADE_WS_KEY_LEN)
		return false;
	for (size_t i = 0; i < UPGRADE_WS_KEY_LEN - 2; i++)
		if (!is_base64_char((unsigned char)key[i]))
			return false;
	return key[22] == '=' && key[23] == '=';
}
