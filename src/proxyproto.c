/*
 * proxyproto: parse and write PROXY protocol headers (v1 text, v2 binary).
 *
 * The parser keeps no state: each call reads from the first byte again, which
 * costs nothing at these sizes and lets a listener hand over whatever it has
 * buffered. Every step answers "valid", "valid so far, need more" or
 * "invalid", and a byte that cannot belong to a valid header is reported as
 * soon as it is seen, so a listener that requires the header drops a plain
 * HTTP or TLS client at once instead of at its header timeout.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyproto.h"

#define PP_MORE 0
#define PP_OK 1
#define PP_BAD -1

static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
#define V2_FIXED 16 /* signature, version/command, family/protocol, length */
#define V2_VERSION 0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_INET 0x1
#define V2_FAM_INET6 0x2
#define V2_FAM_UNIX 0x3
#define V2_PROTO_UNSPEC 0x0
#define V2_PROTO_STREAM 0x1
#define V2_PROTO_DGRAM 0x2
#define V2_TCP4 (V2_FAM_INET << 4 | V2_PROTO_STREAM)
#define V2_TCP6 (V2_FAM_INET6 << 4 | V2_PROTO_STREAM)
#define V2_TLV_HEAD 3 /* type, 16-bit length */

/* The longest IPv6 text inet_pton(3) reads (a dotted tail included). */
#define V1_IPV6_TEXT_MAX (INET6_ADDRSTRLEN - 1)

static const uint8_t V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int pp_bad(const char **why, const char *reason)
{
	*why = reason;
	return PP_BAD;
}

/* ---- v1: "PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n" ---- */

/* A cursor over the bytes a v1 line may occupy (at most PROXYPROTO_V1_MAX). */
struct v1_cur {
	const uint8_t *buf;
	size_t pos, end;
	const char *why;
};

static int v1_bad(struct v1_cur *c, const char *why)
{
	c->why = why;
	return PP_BAD;
}

/* The literal lit[0..n) at the cursor, compared as far as the bytes go. */
static int v1_expect(struct v1_cur *c, const char *lit, size_t n, const char *why)
{
	for (size_t i = 0; i < n; i++) {
		if (c->pos + i >= c->end)
			return PP_MORE;
		if (c->buf[c->pos + i] != (uint8_t)lit[i])
			return v1_bad(c, why);
	}
	c->pos += n;
	return PP_OK;
}

/*
 * Dotted-quad IPv4 in s[0..n). Checked byte by byte rather than with
 * inet_pton() so that a prefix is judged too (complete false: PP_MORE while
 * it can still become an address). Leading zeros are refused: some readers
 * take them for octal.
 */
static int v1_ipv4(const uint8_t *s, size_t n, bool complete, struct in_addr *a)
{
	uint32_t addr = 0, octet = 0;
	size_t dots = 0, digits = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (digits == 0 || dots == 3)
				return PP_BAD;
			addr = addr << 8 | octet;
			dots++;
			octet = 0;
			digits = 0;
		} else if (s[i] >= '0' && s[i] <= '9') {
			if (digits == 1 && octet == 0)
				return PP_BAD;
			octet = octet * 10 + (uint32_t)(s[i] - '0');
			if (octet > 255)
				return PP_BAD;
			digits++;
		} else {
			return PP_BAD;
		}
	}
	if (!complete)
		return PP_MORE;
	if (dots != 3 || digits == 0)
		return PP_BAD;
	a->s_addr = htonl(addr << 8 | octet);
	return PP_OK;
}

static bool v1_ipv6_char(uint8_t ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
	       ch == ':' || ch == '.';
}

/* IPv6 text in s[0..n): a prefix is judged by its characters and length
 * only, a complete text by inet_pton(). */
static int v1_ipv6(const uint8_t *s, size_t n, bool complete, struct in6_addr *a)
{
	char text[V1_IPV6_TEXT_MAX + 1];

	if (n > V1_IPV6_TEXT_MAX)
		return PP_BAD;
	for (size_t i = 0; i < n; i++)
		if (!v1_ipv6_char(s[i]))
			return PP_BAD;
	if (!complete)
		return PP_MORE;
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, a) == 1 ? PP_OK : PP_BAD;
}

/* An address of the family, then the space after it. */
static int v1_addr(struct v1_cur *c, int family, struct sockaddr_storage *ss, socklen_t *len)
{
	size_t stop = c->pos;
	int r;

	while (stop < c->end && c->buf[stop] != ' ')
		stop++;
	bool complete = stop < c->end;
	const uint8_t *s = c->buf + c->pos;
	size_t n = stop - c->pos;

	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		r = v1_ipv4(s, n, complete, &in->sin_addr);
		in->sin_family = AF_INET;
		*len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		r = v1_ipv6(s, n, complete, &in6->sin6_addr);
		in6->sin6_family = AF_INET6;
		*len = sizeof(*in6);
	}
	if (r == PP_BAD)
		return v1_bad(c, "bad v1 address");
	if (r == PP_OK)
		c->pos = stop + 1;
	return r;
}

/* A decimal port 0..65535 without leading zeros, then the byte term. */
static int v1_port(struct v1_cur *c, uint8_t term, uint16_t *port)
{
	uint32_t v = 0;
	size_t digits = 0;

	for (;; c->pos++) {
		if (c->pos >= c->end)
			return PP_MORE;
		uint8_t ch = c->buf[c->pos];
		if (ch == term && digits > 0)
			break;
		if (ch == '\n' && term == '\r')
			return v1_bad(c, "v1 line not ended by CRLF");
		if (ch < '0' || ch > '9' || (digits == 1 && v == 0))
			return v1_bad(c, "bad v1 port");
		v = v * 10 + (uint32_t)(ch - '0');
		if (v > 65535)
			return v1_bad(c, "bad v1 port");
		digits++;
	}
	c->pos++;
	*port = htons((uint16_t)v);
	return PP_OK;
}

/* "UNKNOWN", then CRLF, or a space and printable ASCII up to CRLF: the spec
 * has the receiver ignore whatever comes before the CRLF. */
static int v1_unknown(struct v1_cur *c)
{
	int r = v1_expect(c, "UNKNOWN", 7, "bad v1 protocol");

	if (r != PP_OK)
		return r;
	if (c->pos >= c->end)
		return PP_MORE;
	if (c->buf[c->pos] == ' ') {
		for (c->pos++; c->pos < c->end && c->buf[c->pos] != '\r'; c->pos++) {
			uint8_t ch = c->buf[c->pos];
			if (ch == '\n')
				return v1_bad(c, "v1 line not ended by CRLF");
			if (ch < 0x20 || ch > 0x7E)
				return v1_bad(c, "bad v1 character");
		}
	} else if (c->buf[c->pos] == '\n') {
		return v1_bad(c, "v1 line not ended by CRLF");
	} else if (c->buf[c->pos] != '\r') {
		return v1_bad(c, "bad v1 protocol");
	}
	return v1_expect(c, "\r\n", 2, "v1 line not ended by CRLF");
}

/* "TCP4 " or "TCP6 ": the address family. */
static int v1_family(struct v1_cur *c, int *family)
{
	int r = v1_expect(c, "TCP", 3, "bad v1 protocol");

	if (r != PP_OK)
		return r;
	if (c->pos >= c->end)
		return PP_MORE;
	if (c->buf[c->pos] == '4')
		*family = AF_INET;
	else if (c->buf[c->pos] == '6')
		*family = AF_INET6;
	else
		return v1_bad(c, "bad v1 protocol");
	c->pos++;
	return v1_expect(c, " ", 1, "bad v1 protocol");
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = port;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = port;
}

static int v1_line(struct v1_cur *c, struct proxyproto_result *res)
{
	uint16_t sport, dport;
	int family, r = v1_expect(c, "PROXY ", 6, "not a PROXY header");

	if (r != PP_OK)
		return r;
	if (c->pos < c->end && c->buf[c->pos] == 'U') {
		res->local = true;
		return v1_unknown(c);
	}
	if ((r = v1_family(c, &family)) != PP_OK ||
	    (r = v1_addr(c, family, &res->src, &res->src_len)) != PP_OK ||
	    (r = v1_addr(c, family, &res->dst, &res->dst_len)) != PP_OK ||
	    (r = v1_port(c, ' ', &sport)) != PP_OK || (r = v1_port(c, '\r', &dport)) != PP_OK ||
	    (r = v1_expect(c, "\n", 1, "v1 line not ended by CRLF")) != PP_OK)
		return r;
	set_port(&res->src, sport);
	set_port(&res->dst, dport);
	return PP_OK;
}

static int v1_parse(const uint8_t *buf, size_t len, struct proxyproto_result *res, const char **why)
{
	struct v1_cur c = {buf, 0, len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX, NULL};
	int r = v1_line(&c, res);

	/* out of bytes with all the spec allows in hand: no CRLF will come in time */
	if (r == PP_MORE && len >= PROXYPROTO_V1_MAX)
		return pp_bad(why, "v1 line too long");
	if (r == PP_BAD)
		*why = c.why;
	res->version = 1;
	res->header_len = c.pos;
	return r;
}

/* ---- v2: signature, ver/cmd, fam/proto, length, addresses, TLVs ---- */

/* The address block of a PROXY header for fam/proto; 0 when it is not read
 * (family or protocol UNSPEC: the spec has the receiver ignore it). */
static size_t v2_addr_len(uint8_t fam)
{
	static const size_t len[4] = {0, 12, 36, 216};

	return (fam & 0x0F) == V2_PROTO_UNSPEC ? 0 : len[fam >> 4];
}

/* The 16 fixed bytes, judged as far as they have come. */
static int v2_fixed(const uint8_t *buf, size_t len, const char **why)
{
	for (size_t i = 0; i < sizeof(V2_SIG) && i < len; i++)
		if (buf[i] != V2_SIG[i])
			return pp_bad(why, "not a PROXY header");
	if (len > 12 && buf[12] >> 4 != V2_VERSION)
		return pp_bad(why, "bad v2 version");
	if (len > 12 && (buf[12] & 0x0F) > V2_CMD_PROXY)
		return pp_bad(why, "bad v2 command");
	if (len > 13 && buf[13] >> 4 > V2_FAM_UNIX)
		return pp_bad(why, "bad v2 family");
	if (len > 13 && (buf[13] & 0x0F) > V2_PROTO_DGRAM)
		return pp_bad(why, "bad v2 protocol");
	if (len < V2_FIXED)
		return PP_MORE;
	size_t body = (size_t)buf[14] << 8 | buf[15];
	if (body > PROXYPROTO_V2_MAX - V2_FIXED)
		return pp_bad(why, "v2 length too long");
	if ((buf[12] & 0x0F) == V2_CMD_PROXY && body < v2_addr_len(buf[13]))
		return pp_bad(why, "v2 length too short for family");
	return PP_OK;
}

/* TLVs must tile p[0..n) exactly: none may run past the header. */
static bool v2_tlvs_valid(const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (n < V2_TLV_HEAD)
			return false;
		size_t step = V2_TLV_HEAD + ((size_t)p[1] << 8 | p[2]);
		if (step > n)
			return false;
		p += step;
		n -= step;
	}
	return true;
}

/* TCP over IPv4 or IPv6: addresses, then ports, all in network order. */
static void v2_addrs(const uint8_t *p, uint8_t fam, struct proxyproto_result *res)
{
	if (fam == V2_TCP4) {
		struct sockaddr_in *s = (struct sockaddr_in *)&res->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&res->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, p, 4);
		memcpy(&d->sin_addr, p + 4, 4);
		memcpy(&s->sin_port, p + 8, 2);
		memcpy(&d->sin_port, p + 10, 2);
		res->src_len = res->dst_len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&res->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&res->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p, 16);
		memcpy(&d->sin6_addr, p + 16, 16);
		memcpy(&s->sin6_port, p + 32, 2);
		memcpy(&d->sin6_port, p + 34, 2);
		res->src_len = res->dst_len = sizeof(*s);
	}
	res->local = false;
}

static int v2_parse(const uint8_t *buf, size_t len, struct proxyproto_result *res, const char **why)
{
	int r = v2_fixed(buf, len, why);

	if (r != PP_OK)
		return r;
	size_t total = V2_FIXED + ((size_t)buf[14] << 8 | buf[15]);
	if (len < total)
		return PP_MORE;
	res->version = 2;
	res->header_len = total;
	res->local = true;
	size_t alen = v2_addr_len(buf[13]);
	/* LOCAL: "discard the protocol block including the family" (the spec) */
	if ((buf[12] & 0x0F) == V2_CMD_LOCAL || alen == 0)
		return PP_OK;
	if (total > V2_FIXED + alen) {
		res->tlv_off = V2_FIXED + alen;
		res->tlv_len = total - res->tlv_off;
	}
	if (!v2_tlvs_valid(buf + V2_FIXED + alen, total - V2_FIXED - alen))
		return pp_bad(why, "v2 TLV overrun");
	/* UDP and AF_UNIX stay local: the spec's fallback to UNSPEC */
	if (buf[13] == V2_TCP4 || buf[13] == V2_TCP6)
		v2_addrs(buf + V2_FIXED, buf[13], res);
	return PP_OK;
}

int proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_result *out,
		     const char **why)
{
	struct proxyproto_result res;
	const char *reason = NULL;
	int r;

	if (len == 0)
		return PP_MORE;
	memset(&res, 0, sizeof(res));
	if (buf[0] == 'P')
		r = v1_parse(buf, len, &res, &reason);
	else if (buf[0] == V2_SIG[0])
		r = v2_parse(buf, len, &res, &reason);
	else
		r = pp_bad(&reason, "not a PROXY header");
	if (r == PP_OK)
		*out = res;
	else if (r == PP_BAD && why != NULL)
		*why = reason;
	return r;
}

/* ---- writers ---- */

/* One side of a pair to write, held as IPv6 (IPv4 mapped). */
struct pp_end {
	uint8_t addr[16];
	uint16_t port; /* network order */
	bool v4;       /* IPv4, or IPv4-mapped IPv6 */
};

static int pp_end_get(const struct sockaddr *sa, struct pp_end *e)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		memcpy(e->addr, V4_MAPPED, sizeof(V4_MAPPED));
		memcpy(e->addr + 12, &in->sin_addr, 4);
		e->port = in->sin_port;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		memcpy(e->addr, &in6->sin6_addr, 16);
		e->port = in6->sin6_port;
	} else {
		return -1;
	}
	e->v4 = memcmp(e->addr, V4_MAPPED, sizeof(V4_MAPPED)) == 0;
	return 0;
}

/* Bounded output: once a write does not fit, nothing more is written. */
struct pp_out {
	uint8_t *p;
	size_t cap, len;
	bool full;
};

static void out_put(struct pp_out *o, const void *d, size_t n)
{
	if (o->full || n > o->cap - o->len) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->len, d, n);
	o->len += n;
}

static void out_str(struct pp_out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static size_t out_done(const struct pp_out *o)
{
	return o->full ? 0 : o->len;
}

static void out_addr_text(struct pp_out *o, const struct pp_end *e, bool v4)
{
	char text[INET6_ADDRSTRLEN];

	if (inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? e->addr + 12 : e->addr, text, sizeof(text)) ==
	    NULL) {
		o->full = true;
		return;
	}
	out_str(o, text);
}

static void out_port_text(struct pp_out *o, uint16_t port)
{
	char digits[5];
	size_t n = 0;
	unsigned v = ntohs(port);

	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	out_put(o, digits + sizeof(digits) - n, n);
}

size_t proxyproto_write_v1(char *out, size_t cap, const struct sockaddr *src,
			   const struct sockaddr *dst)
{
	/* never a line longer than a receiver has to take */
	struct pp_out o = {(uint8_t *)out, cap < PROXYPROTO_V1_MAX ? cap : PROXYPROTO_V1_MAX, 0,
			   false};
	struct pp_end s, d;

	if (src == NULL) {
		out_str(&o, "PROXY UNKNOWN\r\n");
		return out_done(&o);
	}
	if (dst == NULL || pp_end_get(src, &s) < 0 || pp_end_get(dst, &d) < 0)
		return 0;
	bool v4 = s.v4 && d.v4;
	out_str(&o, v4 ? "PROXY TCP4 " : "PROXY TCP6 ");
	out_addr_text(&o, &s, v4);
	out_str(&o, " ");
	out_addr_text(&o, &d, v4);
	out_str(&o, " ");
	out_port_text(&o, s.port);
	out_str(&o, " ");
	out_port_text(&o, d.port);
	out_str(&o, "\r\n");
	return out_done(&o);
}

size_t proxyproto_write_v2(uint8_t *out, size_t cap, const struct sockaddr *src,
			   const struct sockaddr *dst)
{
	struct pp_out o = {out, cap, 0, false};
	struct pp_end s, d;

	out_put(&o, V2_SIG, sizeof(V2_SIG));
	if (src == NULL) {
		static const uint8_t local[4] = {V2_VERSION << 4 | V2_CMD_LOCAL, 0, 0, 0};
		out_put(&o, local, sizeof(local));
		return out_done(&o);
	}
	if (dst == NULL || pp_end_get(src, &s) < 0 || pp_end_get(dst, &d) < 0)
		return 0;
	bool v4 = s.v4 && d.v4;
	size_t alen = v4 ? 4 : 16;
	const uint8_t fixed[4] = {V2_VERSION << 4 | V2_CMD_PROXY, v4 ? V2_TCP4 : V2_TCP6, 0,
				  (uint8_t)(2 * alen + 4)};
	out_put(&o, fixed, sizeof(fixed));
	out_put(&o, s.addr + 16 - alen, alen);
	out_put(&o, d.addr + 16 - alen, alen);
	out_put(&o, &s.port, 2);
	out_put(&o, &d.port, 2);
	return out_done(&o);
}
