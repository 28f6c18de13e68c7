/*
 * http: strict HTTP/1.1 heads and body decoding; the only user of http-parser.
 *
 * Heads are checked by our own line scanner, which is stricter than
 * http-parser (bare LF, obs-fold, whitespace before the colon, control
 * characters) and accepts any method token, as a proxy must forward unknown
 * methods. The framing decision (Content-Length, chunked, close) is made here
 * from the parsed fields, and chunked bodies are decoded by a strict state
 * machine below. http-parser validates absolute-form request-targets.
 */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

enum chunk_state {
	CHUNK_SIZE,
	CHUNK_SIZE_BWS, /* whitespace after the size: only ';' (an extension) or CR may follow */
	CHUNK_EXT,
	CHUNK_SIZE_LF,
	CHUNK_DATA,
	CHUNK_DATA_CR,
	CHUNK_DATA_LF,
	CHUNK_TRAILER_START,
	CHUNK_TRAILER,
	CHUNK_TRAILER_LF,
	CHUNK_END_LF,
};

struct http_reader {
	enum http_msg_kind kind;
	enum http_body_kind body;
	uint64_t remaining; /* LENGTH: bytes left; CHUNKED: bytes left in the chunk */
	bool done;
	enum chunk_state chunk_state;
	unsigned chunk_digits;
	size_t trailer_bytes, trailer_limit;
	/* set for the duration of one http_reader_body call */
	http_body_cb cb;
	void *cb_arg;
};

/* tchar per RFC 9110 §5.6.2 */
static bool is_tchar(unsigned char c)
{
	if (isalnum(c))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP, HTAB, obs-text */
static bool is_field_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static enum http_scan_result scan_fail(struct http_error *err, int status, const char *reason)
{
	err->status = status;
	err->reason = reason;
	return HTTP_SCAN_ERROR;
}

/* Length of the line at p (without CRLF), or -1 if incomplete; -2 bare LF/CR. */
static long line_length(const char *p, size_t avail)
{
	for (size_t i = 0; i < avail; i++) {
		if (p[i] == '\n')
			return (i > 0 && p[i - 1] == '\r') ? (long)i - 1 : -2;
		if (p[i] == '\r' && i + 1 < avail && p[i + 1] != '\n')
			return -2;
	}
	return -1;
}

static int check_version(const char *v, size_t len, struct http_error *err)
{
	if (len != 8 || memcmp(v, "HTTP/", 5) != 0 || !isdigit((unsigned char)v[5]) ||
	    v[6] != '.' || !isdigit((unsigned char)v[7])) {
		err->status = 400;
		err->reason = "malformed HTTP version";
		return -1;
	}
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
		err->status = 505;
		err->reason = "unsupported HTTP version";
		return -1;
	}
	return 0;
}

static int check_request_line(const char *p, size_t len, const struct http_limits *lim,
			      struct http_error *err)
{
	size_t i = 0;
	while (i < len && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i == len || p[i] != ' ')
		return err->status = 400, err->reason = "malformed method", -1;
	size_t t = ++i;
	while (i < len && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
		i++;
	if (i - t > lim->uri_bytes)
		return err->status = 414, err->reason = "request-target too long", -1;
	if (i == t || i == len || p[i] != ' ')
		return err->status = 400, err->reason = "malformed request-target", -1;
	return check_version(p + i + 1, len - i - 1, err);
}

static int check_status_line(const char *p, size_t len, struct http_error *err)
{
	err->status = 502;
	err->reason = "malformed status line";
	if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return -1;
	for (int i = 9; i < 12; i++)
		if (!isdigit((unsigned char)p[i]))
			return -1;
	if (p[9] < '1' || p[9] > '5') /* 100..599 (RFC 9110 §15): 000 or 099 is no answer */
		return -1;
	if (len > 12 && p[12] != ' ')
		return -1;
	for (size_t i = 13; i < len; i++)
		if (!is_field_char((unsigned char)p[i]))
			return -1;
	return 0;
}

static int check_field_line(const char *p, size_t len, struct http_error *err)
{
	size_t i = 0;
	if (len > 0 && (p[0] == ' ' || p[0] == '\t'))
		return err->reason = "obs-fold or leading whitespace in field line", -1;
	while (i < len && is_tchar((unsigned char)p[i]))
		i++;
	if (i < len && (p[i] == ' ' || p[i] == '\t'))
		return err->reason = "whitespace between field name and colon", -1;
	if (i == len)
		return err->reason = "field line without colon", -1;
	if (p[i] != ':')
		return err->reason = "invalid character in field name", -1;
	if (i == 0)
		return err->reason = "empty field name", -1;
	for (i++; i < len; i++)
		if (!is_field_char((unsigned char)p[i]))
			return err->reason = "control character in field value", -1;
	return 0;
}

/* A request-line prefix without its LF yet: is the target already too long? */
static bool partial_target_too_long(const char *p, size_t len, const struct http_limits *lim)
{
	const char *sp = memchr(p, ' ', len);
	if (sp == NULL)
		return false;
	size_t rest = len - (size_t)(sp + 1 - p);
	const char *sp2 = memchr(sp + 1, ' ', rest);
	size_t target = sp2 ? (size_t)(sp2 - sp - 1) : rest;
	return target > lim->uri_bytes;
}

enum http_scan_result http_head_scan(enum http_msg_kind kind, const char *buf, size_t len,
				     const struct http_limits *lim, size_t *head_len,
				     struct http_error *err)
{
	int bad = kind == HTTP_MSG_REQUEST ? 400 : 502;
	size_t pos = 0, fields = 0;

	if (len == 0)
		return HTTP_SCAN_MORE;
	for (;;) {
		long n = line_length(buf + pos, len - pos);
		if (n == -2)
			return scan_fail(err, bad, "bare CR or LF in head");
		if (n == -1) {
			if (pos == 0 && kind == HTTP_MSG_REQUEST &&
			    partial_target_too_long(buf, len, lim))
				return scan_fail(err, 414, "request-target too long");
			if (len > lim->header_bytes)
				return scan_fail(err, kind == HTTP_MSG_REQUEST ? 431 : 502,
						 "header section too large");
			return HTTP_SCAN_MORE;
		}
		const char *line = buf + pos;
		pos += (size_t)n + 2;
		if (pos > lim->header_bytes)
			return scan_fail(err, kind == HTTP_MSG_REQUEST ? 431 : 502,
					 "header section too large");
		if (line == buf) {
			int rc = kind == HTTP_MSG_REQUEST
				     ? check_request_line(line, (size_t)n, lim, err)
				     : check_status_line(line, (size_t)n, err);
			if (rc < 0)
				return HTTP_SCAN_ERROR;
			continue;
		}
		if (n == 0) {
			*head_len = pos;
			return HTTP_SCAN_DONE;
		}
		err->status = bad;
		if (check_field_line(line, (size_t)n, err) < 0)
			return HTTP_SCAN_ERROR;
		if (++fields > lim->header_fields)
			return scan_fail(err, kind == HTTP_MSG_REQUEST ? 431 : 502,
					 "too many header fields");
	}
}

void http_msg_init(struct http_msg *msg, enum http_msg_kind kind)
{
	memset(msg, 0, sizeof(*msg));
	msg->kind = kind;
}

void http_msg_fini(struct http_msg *msg)
{
	free(msg->raw);
	free(msg->headers);
	memset(msg, 0, sizeof(*msg));
}

bool http_name_is(const struct http_header *h, const char *name)
{
	return strlen(name) == h->name_len && strncasecmp(h->name, name, h->name_len) == 0;
}

const struct http_header *http_msg_find(const struct http_msg *msg, const char *name)
{
	for (size_t i = 0; i < msg->n_headers; i++)
		if (http_name_is(&msg->headers[i], name))
			return &msg->headers[i];
	return NULL;
}

size_t http_msg_count(const struct http_msg *msg, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < msg->n_headers; i++)
		n += http_name_is(&msg->headers[i], name);
	return n;
}

bool http_token_eq(const char *tok, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(tok, word, len) == 0;
}

bool http_list_next(const char *value, size_t len, size_t *pos, const char **tok, size_t *tok_len)
{
	while (*pos < len) {
		size_t start = *pos, end;
		const char *comma = memchr(value + start, ',', len - start);
		end = comma ? (size_t)(comma - value) : len;
		*pos = comma ? end + 1 : len;
		while (start < end && (value[start] == ' ' || value[start] == '\t'))
			start++;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end > start) {
			*tok = value + start;
			*tok_len = end - start;
			return true;
		}
	}
	return false;
}

bool http_msg_next_token(const struct http_msg *msg, const char *name, struct http_token_iter *it,
			 const char **tok, size_t *len)
{
	for (; it->field < msg->n_headers; it->field++, it->pos = 0) {
		const struct http_header *h = &msg->headers[it->field];
		if (http_name_is(h, name) &&
		    http_list_next(h->value, h->value_len, &it->pos, tok, len))
			return true;
	}
	return false;
}

bool http_msg_has_token(const struct http_msg *msg, const char *name, const char *token)
{
	struct http_token_iter it = {0};
	const char *tok;
	size_t len;
	while (http_msg_next_token(msg, name, &it, &tok, &len))
		if (http_token_eq(tok, len, token))
			return true;
	return false;
}

static int msg_copy_raw(struct http_msg *msg, const char *head, size_t len)
{
	if (msg->raw_cap < len) {
		char *raw = realloc(msg->raw, len);
		if (raw == NULL)
			return -1;
		msg->raw = raw;
		msg->raw_cap = len;
	}
	memcpy(msg->raw, head, len);
	msg->raw_len = len;
	return 0;
}

static int msg_add_header(struct http_msg *msg, const char *line, size_t len)
{
	if (msg->n_headers == msg->cap_headers) {
		size_t cap = msg->cap_headers ? msg->cap_headers * 2 : 16;
		struct http_header *h = realloc(msg->headers, cap * sizeof(*h));
		if (h == NULL)
			return -1;
		msg->headers = h;
		msg->cap_headers = cap;
	}
	const char *colon = memchr(line, ':', len);
	const char *v = colon + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	msg->headers[msg->n_headers++] = (struct http_header){
	    .name = line,
	    .name_len = (size_t)(colon - line),
	    .value = v,
	    .value_len = (size_t)(end - v),
	};
	return 0;
}

static enum http_verb method_of(const char *m, size_t len)
{
	if (len == 3 && memcmp(m, "GET", 3) == 0)
		return HTTP_METHOD_GET;
	if (len == 4 && memcmp(m, "HEAD", 4) == 0)
		return HTTP_METHOD_HEAD;
	if (len == 7 && memcmp(m, "CONNECT", 7) == 0)
		return HTTP_METHOD_CONNECT;
	return HTTP_METHOD_OTHER;
}

/* Split the (already validated) start line into msg fields. */
static void msg_split_start_line(struct http_msg *msg, const char *line, size_t len)
{
	const char *sp1 = memchr(line, ' ', len);
	if (msg->kind == HTTP_MSG_REQUEST) {
		const char *sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line));
		msg->method_str = line;
		msg->method_len = (size_t)(sp1 - line);
		msg->method = method_of(line, msg->method_len);
		msg->target = sp1 + 1;
		msg->target_len = (size_t)(sp2 - sp1 - 1);
		msg->version_minor = sp2[8] - '0';
	} else {
		msg->version_minor = line[7] - '0';
		msg->status = atoi(sp1 + 1);
		msg->reason = len > 13 ? line + 13 : line + len;
		msg->reason_len = len > 13 ? len - 13 : 0;
	}
	msg->version_major = 1;
}

static int msg_split(struct http_msg *msg, const char *head, size_t len)
{
	if (msg_copy_raw(msg, head, len) < 0)
		return -1;
	msg->n_headers = 0;
	msg->authority = NULL;
	msg->authority_len = 0;
	const char *p = msg->raw, *end = msg->raw + len - 2; /* before the empty line */
	bool first = true;
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(lf - p) - 1;
		if (first)
			msg_split_start_line(msg, p, n);
		else if (msg_add_header(msg, p, n) < 0)
			return -1;
		first = false;
		p = lf + 1;
	}
	return 0;
}

/* 1*DIGIT without overflow. */
static int parse_length(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0 || len > 19)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static bool host_chars_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && !strchr("-._~!$&'()*+,;=:[]%", c))
			return false;
	}
	return true;
}

/* Is an absolute-form target a well-formed http(s) URL with a host and no userinfo? */
static bool absolute_url_valid(const char *t, size_t len)
{
	struct http_parser_url u;
	http_parser_url_init(&u);
	if (http_parser_parse_url(t, len, 0, &u) != 0)
		return false;
	return (u.field_set & (1 << UF_HOST)) && !(u.field_set & (1 << UF_USERINFO)) &&
	       u.field_data[UF_HOST].len > 0;
}

/* Request-target forms (RFC 9112 §3.2); absolute-form sets authority. */
static int check_target(struct http_msg *msg, struct http_error *err)
{
	const char *t = msg->target;
	size_t len = msg->target_len;
	if (t[0] == '/')
		return 0;
	if (len == 1 && t[0] == '*' && msg->method_len == 7 &&
	    memcmp(msg->method_str, "OPTIONS", 7) == 0)
		return 0;
	size_t skip = 0;
	if (len > 7 && strncasecmp(t, "http://", 7) == 0)
		skip = 7;
	else if (len > 8 && strncasecmp(t, "https://", 8) == 0)
		skip = 8;
	if (skip == 0)
		return err->reason = "invalid request-target", -1;
	size_t end = skip;
	while (end < len && t[end] != '/' && t[end] != '?' && t[end] != '#')
		end++;
	if (!absolute_url_valid(t, len) || !host_chars_valid(t + skip, end - skip))
		return err->reason = "invalid authority in request-target", -1;
	msg->authority = t + skip;
	msg->authority_len = end - skip;
	return 0;
}

static int check_host(const struct http_msg *msg, struct http_error *err)
{
	size_t hosts = http_msg_count(msg, "Host");
	if (hosts > 1)
		return err->reason = "repeated Host", -1;
	if (hosts == 0 && msg->version_minor == 1)
		return err->reason = "missing Host", -1;
	const struct http_header *h = http_msg_find(msg, "Host");
	if (h && !host_chars_valid(h->value, h->value_len))
		return err->reason = "invalid Host", -1;
	return 0;
}

/* Content-Length: one field of 1*DIGIT. */
static int frame_content_length(struct http_msg *msg, const char **reason)
{
	size_t n = http_msg_count(msg, "Content-Length");
	if (n == 0)
		return 0;
	if (n > 1)
		return *reason = "repeated Content-Length", -1;
	const struct http_header *h = http_msg_find(msg, "Content-Length");
	if (parse_length(h->value, h->value_len, &msg->content_length) < 0)
		return *reason = "invalid Content-Length", -1;
	msg->body = HTTP_BODY_LENGTH;
	return 0;
}

/* Transfer-Encoding: exactly one field whose value is "chunked". */
static int frame_transfer_encoding(struct http_msg *msg, const char **reason)
{
	size_t n = http_msg_count(msg, "Transfer-Encoding");
	if (n == 0)
		return 0;
	const struct http_header *h = http_msg_find(msg, "Transfer-Encoding");
	if (n > 1 || !http_token_eq(h->value, h->value_len, "chunked"))
		return *reason = "unsupported Transfer-Encoding", -1;
	if (msg->version_minor == 0)
		return *reason = "Transfer-Encoding in HTTP/1.0", -1;
	if (msg->body == HTTP_BODY_LENGTH)
		return *reason = "both Content-Length and Transfer-Encoding", -1;
	msg->body = HTTP_BODY_CHUNKED;
	return 0;
}

static int frame_message(struct http_msg *msg, enum http_verb request_method,
			 struct http_error *err)
{
	msg->body = HTTP_BODY_NONE;
	msg->content_length = 0;
	if (frame_content_length(msg, &err->reason) < 0 ||
	    frame_transfer_encoding(msg, &err->reason) < 0)
		return -1;
	if (msg->body == HTTP_BODY_LENGTH && msg->content_length == 0)
		msg->body = HTTP_BODY_NONE;
	if (msg->kind == HTTP_MSG_RESPONSE) {
		int s = msg->status;
		if (s < 200 || s == 204 || s == 304 || request_method == HTTP_METHOD_HEAD)
			msg->body = HTTP_BODY_NONE;
		else if (msg->body == HTTP_BODY_NONE && http_msg_count(msg, "Content-Length") == 0)
			msg->body = HTTP_BODY_CLOSE;
	}
	return 0;
}

static bool msg_keep_alive(const struct http_msg *msg)
{
	if (msg->version_minor == 1)
		return !http_msg_has_token(msg, "Connection", "close");
	return http_msg_has_token(msg, "Connection", "keep-alive");
}

struct http_reader *http_reader_new(enum http_msg_kind kind)
{
	struct http_reader *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->kind = kind;
	return r;
}

void http_reader_free(struct http_reader *r)
{
	free(r);
}

int http_reader_head(struct http_reader *r, struct http_msg *msg, const char *head, size_t len,
		     enum http_verb request_method, const struct http_limits *lim,
		     struct http_error *err)
{
	bool request = msg->kind == HTTP_MSG_REQUEST;
	err->status = request ? 400 : 502;
	err->reason = "out of memory";
	if (msg_split(msg, head, len) < 0) {
		err->status = 500;
		return -1;
	}
	if (request && msg->method == HTTP_METHOD_CONNECT) {
		err->status = 405;
		err->reason = "CONNECT is not supported";
		return -1;
	}
	if (request && (check_target(msg, err) < 0 || check_host(msg, err) < 0))
		return -1;
	if (frame_message(msg, request_method, err) < 0)
		return -1;
	msg->keep_alive = msg_keep_alive(msg);
	r->body = msg->body;
	r->remaining = msg->content_length;
	r->done = msg->body == HTTP_BODY_NONE;
	r->chunk_state = CHUNK_SIZE;
	r->chunk_digits = 0;
	r->trailer_bytes = 0;
	r->trailer_limit = lim->header_bytes;
	return 0;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (unsigned char)tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One byte of chunk framing (everything but payload). 0 ok, -1 malformed. */
static int chunk_framing_byte(struct http_reader *r, unsigned char c)
{
	switch (r->chunk_state) {
	case CHUNK_SIZE: {
		int v = hex_value(c);
		if (v >= 0) {
			if (++r->chunk_digits > 15) /* < 2^60: no overflow */
				return -1;
			r->remaining = r->remaining * 16 + (uint64_t)v;
			return 0;
		}
		if (r->chunk_digits == 0)
			return -1;
		if (c == '\r')
			r->chunk_state = CHUNK_SIZE_LF;
		else if (c == ';')
			r->chunk_state = CHUNK_EXT; /* extensions are ignored, as RFC 9112 allows */
		else if (c == ' ' || c == '\t')
			r->chunk_state = CHUNK_SIZE_BWS;
		else
			return -1;
		return 0;
	}
	case CHUNK_SIZE_BWS: /* "5 a" is no chunk size: a reader that took "a" would desync */
		if (c == '\r')
			r->chunk_state = CHUNK_SIZE_LF;
		else if (c == ';')
			r->chunk_state = CHUNK_EXT;
		else if (c != ' ' && c != '\t')
			return -1;
		return 0;
	case CHUNK_EXT:
		if (c == '\r')
			r->chunk_state = CHUNK_SIZE_LF;
		else if (!is_field_char(c))
			return -1;
		return 0;
	case CHUNK_SIZE_LF:
		if (c != '\n')
			return -1;
		r->chunk_state = r->remaining ? CHUNK_DATA : CHUNK_TRAILER_START;
		return 0;
	case CHUNK_DATA_CR:
		if (c != '\r')
			return -1;
		r->chunk_state = CHUNK_DATA_LF;
		return 0;
	case CHUNK_DATA_LF:
		if (c != '\n')
			return -1;
		r->chunk_state = CHUNK_SIZE;
		r->chunk_digits = 0;
		r->remaining = 0;
		return 0;
	case CHUNK_TRAILER_START: /* trailer fields are read, checked loosely and dropped */
		if (c == '\r') {
			r->chunk_state = CHUNK_END_LF;
			return 0;
		}
		if (c == ' ' || c == '\t' || c == ':')
			return -1;
		r->chunk_state = CHUNK_TRAILER;
		/* fall through */
	case CHUNK_TRAILER:
		if (++r->trailer_bytes > r->trailer_limit)
			return -1;
		if (c == '\r')
			r->chunk_state = CHUNK_TRAILER_LF;
		else if (!is_field_char(c))
			return -1;
		return 0;
	case CHUNK_TRAILER_LF:
		if (c != '\n')
			return -1;
		r->chunk_state = CHUNK_TRAILER_START;
		return 0;
	case CHUNK_END_LF:
		if (c != '\n')
			return -1;
		r->done = true;
		return 0;
	case CHUNK_DATA:
		break;
	}
	return -1;
}

/*
 * Strict chunked decoding (RFC 9112 §7.1): exact CRLFs, hex sizes without
 * overflow. Our own state machine because http-parser, as Debian builds it
 * (non-strict), accepts any byte where chunk framing requires CR or LF: a
 * request smuggling path.
 */
static ssize_t reader_chunked(struct http_reader *r, const char *data, size_t len)
{
	size_t i = 0;
	if (len == 0)
		return r->done ? 0 : -1; /* EOF inside the body */
	while (i < len && !r->done) {
		if (r->chunk_state == CHUNK_DATA) {
			size_t n = len - i < r->remaining ? len - i : (size_t)r->remaining;
			r->cb(r->cb_arg, data + i, n);
			r->remaining -= n;
			i += n;
			if (r->remaining == 0)
				r->chunk_state = CHUNK_DATA_CR;
			continue;
		}
		if (chunk_framing_byte(r, (unsigned char)data[i++]) < 0)
			return -1;
	}
	return (ssize_t)i;
}

ssize_t http_reader_body(struct http_reader *r, const char *data, size_t len, http_body_cb cb,
			 void *arg, bool *done)
{
	ssize_t used = 0;
	r->cb = cb;
	r->cb_arg = arg;
	switch (r->body) {
	case HTTP_BODY_NONE:
		break;
	case HTTP_BODY_LENGTH:
		if (len == 0 && r->remaining > 0)
			return -1; /* EOF before the announced length */
		used = (ssize_t)(len < r->remaining ? len : r->remaining);
		if (used > 0)
			cb(arg, data, (size_t)used);
		r->remaining -= (uint64_t)used;
		r->done = r->remaining == 0;
		break;
	case HTTP_BODY_CHUNKED:
		if (!r->done)
			used = reader_chunked(r, data, len);
		break;
	case HTTP_BODY_CLOSE:
		if (len > 0)
			cb(arg, data, len);
		used = (ssize_t)len;
		r->done = len == 0;
		break;
	}
	*done = r->done;
	return used;
}

bool http_reader_done(const struct http_reader *r)
{
	return r->done;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 426:
		return "Upgrade Required";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}
