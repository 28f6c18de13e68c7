/*
 * http: HTTP/1.1 message heads and bodies. The only module that includes
 * http_parser.h.
 *
 * A head is first found and checked line by line by http_head_scan() (strict
 * CRLF, limits, obs-fold, whitespace before the colon, control characters),
 * then parsed by http_reader_head() into a struct http_msg whose fields point
 * into the message's own copy of the head. Bodies are decoded by
 * http_reader_body(), which stops exactly at the end of the message.
 */
#ifndef SY_HTTP_H
#define SY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum http_msg_kind { HTTP_MSG_REQUEST, HTTP_MSG_RESPONSE };

enum http_verb {
	HTTP_METHOD_OTHER = 0,
	HTTP_METHOD_GET,
	HTTP_METHOD_HEAD,
	HTTP_METHOD_CONNECT,
};

enum http_body_kind {
	HTTP_BODY_NONE,	   /* no body bytes follow the head */
	HTTP_BODY_LENGTH,  /* Content-Length */
	HTTP_BODY_CHUNKED, /* Transfer-Encoding: chunked */
	HTTP_BODY_CLOSE,   /* response delimited by connection close */
};

struct http_limits {
	size_t header_bytes;
	size_t header_fields;
	size_t uri_bytes;
};

/* A field as received: name and value (OWS trimmed) point into msg->raw. */
struct http_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct http_msg {
	enum http_msg_kind kind;
	char *raw; /* private copy of the head bytes */
	size_t raw_len, raw_cap;

	/* request line */
	enum http_verb method;
	const char *method_str;
	size_t method_len;
	const char *target;
	size_t target_len;
	/* status line */
	int status;
	const char *reason;
	size_t reason_len;

	int version_major, version_minor;

	struct http_header *headers;
	size_t n_headers, cap_headers;

	enum http_body_kind body;
	uint64_t content_length; /* valid when body == HTTP_BODY_LENGTH */
	bool keep_alive;	 /* the sender allows another message after this one */
	/* request target was absolute-form: authority (host[:port]) from it */
	const char *authority;
	size_t authority_len;
};

/* A parse failure: the status to answer (400, 414, 431, 501, 502) and why. */
struct http_error {
	int status;
	const char *reason;
};

enum http_scan_result { HTTP_SCAN_MORE, HTTP_SCAN_DONE, HTTP_SCAN_ERROR };

/*
 * Look for a complete head in buf[0..len). On HTTP_SCAN_DONE, *head_len is
 * the length including the final empty line. HTTP_SCAN_ERROR fills err.
 * Limits are checked even while more bytes are needed.
 */
enum http_scan_result http_head_scan(enum http_msg_kind kind, const char *buf, size_t len,
				     const struct http_limits *lim, size_t *head_len,
				     struct http_error *err);

void http_msg_init(struct http_msg *msg, enum http_msg_kind kind);
void http_msg_fini(struct http_msg *msg);

/* First field named name (case-insensitive), or NULL. */
const struct http_header *http_msg_find(const struct http_msg *msg, const char *name);
/* Number of fields named name. */
size_t http_msg_count(const struct http_msg *msg, const char *name);
/* Case-insensitive compare of a header name with a NUL-terminated name. */
bool http_name_is(const struct http_header *h, const char *name);

/*
 * Iterate over the comma-separated tokens of a list value: *pos starts at 0;
 * returns true and sets *tok and *tok_len (OWS trimmed, empty elements skipped)
 * while tokens remain.
 */
bool http_list_next(const char *value, size_t len, size_t *pos, const char **tok, size_t *tok_len);
/* Position in the list tokens of every field with one name; start zeroed. */
struct http_token_iter {
	size_t field, pos;
};

/*
 * The next token of the comma lists of all fields named name (case-insensitive),
 * in order across repeated fields: true with *tok and *len set, or false at the end.
 */
bool http_msg_next_token(const struct http_msg *msg, const char *name, struct http_token_iter *it,
			 const char **tok, size_t *len);

/* Does any field named name contain token (case-insensitive) in its list? */
bool http_msg_has_token(const struct http_msg *msg, const char *name, const char *token);

bool http_token_eq(const char *tok, size_t len, const char *word);

struct http_reader;

struct http_reader *http_reader_new(enum http_msg_kind kind);
void http_reader_free(struct http_reader *r);

/*
 * Parse exactly one scanned head into msg (previous content is replaced).
 * For responses, request_method says whether the request was HEAD (no body)
 * and must be set. Applies semantic checks (Content-Length/Transfer-Encoding,
 * Host). Returns 0, or -1 with err filled.
 */
int http_reader_head(struct http_reader *r, struct http_msg *msg, const char *head, size_t len,
		     enum http_verb request_method, const struct http_limits *lim,
		     struct http_error *err);

typedef void (*http_body_cb)(void *arg, const char *data, size_t len);

/*
 * Decode body bytes of the message whose head was just parsed. Calls cb for
 * every piece of payload (chunk framing removed). Returns the number of bytes
 * consumed, which stops at the end of the message (then *done is true), or -1
 * when the body is malformed. len == 0 signals EOF from the peer; for a
 * close-delimited body that ends the message.
 */
ssize_t http_reader_body(struct http_reader *r, const char *data, size_t len, http_body_cb cb,
			 void *arg, bool *done);

/* Has the body of the current message been read completely? */
bool http_reader_done(const struct http_reader *r);

const char *http_status_text(int status);

#endif
