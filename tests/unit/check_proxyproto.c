/*
 * check_proxyproto: the PROXY protocol parser and writers against tables of
 * exact bytes.
 *
 * Every valid header is also fed as each of its prefixes, which must all ask
 * for more, because a load balancer's header can arrive cut anywhere. Every
 * malformed one names the shortest prefix that already proves it wrong: all
 * shorter ones must ask for more and that one must fail with the same reason
 * as the whole input, so a listener drops a client at the first bad byte.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxyproto.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* A byte-string literal as (pointer, length); NULs inside are kept. */
#define W(s) (const uint8_t *)(s), sizeof(s) - 1

/* ---- v2 building blocks ---- */

#define SIG "\r\n\r\n\0\r\nQUIT\n"
/* 192.0.2.1:53764 -> 198.51.100.2:443 */
#define V4_BLOCK                                                                                   \
	"\xc0\x00\x02\x01"                                                                         \
	"\xc6\x33\x64\x02"                                                                         \
	"\xd2\x04"                                                                                 \
	"\x01\xbb"
/* [2001:db8::1]:1234 -> [2001:db8::2]:443 */
#define V6_BLOCK                                                                                   \
	"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"                                               \
	"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02"                                               \
	"\x04\xd2\x01\xbb"
/* ALPN "h2", NOOP (empty), AUTHORITY "example.com": 5 + 3 + 14 bytes */
#define TLVS                                                                                       \
	"\x01\x00\x02"                                                                             \
	"h2"                                                                                       \
	"\x04\x00\x00"                                                                             \
	"\x02\x00\x0b"                                                                             \
	"example.com"
#define Z8 "\0\0\0\0\0\0\0\0"
#define Z216 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8

#define FFFF6 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
#define X10 "xxxxxxxxxx"
#define D46 "0000000000000000000000000000000000000000000000"
#define X92 X10 X10 X10 X10 X10 X10 X10 X10 X10 "xx"
#define V4_LINE "PROXY TCP4 192.0.2.1 198.51.100.2 53764 443\r\n"
#define HTTP_REQ "GET / HTTP/1.1\r\nHost: a\r\n\r\n"

/* ---- helpers ---- */

/* The address of a parsed sockaddr as text, and its port. */
static const char *addr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf,
			     size_t cap, unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		ck_assert_uint_eq(len, sizeof(*in));
		*port = ntohs(in->sin_port);
		return inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)cap);
	}
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	ck_assert_int_eq(ss->ss_family, AF_INET6);
	ck_assert_uint_eq(len, sizeof(*in6));
	ck_assert_uint_eq(in6->sin6_scope_id, 0);
	ck_assert_uint_eq(in6->sin6_flowinfo, 0);
	*port = ntohs(in6->sin6_port);
	return inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)cap);
}

static void check_addr(const char *name, const char *side, const struct sockaddr_storage *ss,
		       socklen_t len, const char *want, unsigned want_port)
{
	char buf[INET6_ADDRSTRLEN];
	unsigned port = 0;
	const char *got = addr_text(ss, len, buf, sizeof(buf), &port);

	ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: %s %s, want %s", name, side,
		      got ? got : "?", want);
	ck_assert_msg(port == want_port, "%s: %s port %u, want %u", name, side, port, want_port);
}

/* A sockaddr from text: IPv6 if it holds a colon. */
static const struct sockaddr *make_addr(const char *text, unsigned port,
					struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		ck_assert_int_eq(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		ck_assert_int_eq(inet_pton(AF_INET, text, &in->sin_addr), 1);
	}
	return (const struct sockaddr *)ss;
}

/* ---- valid headers ---- */

struct ok_case {
	const char *name;
	const uint8_t *in;
	size_t len;
	size_t payload; /* bytes after the header */
	int version;
	const char *src; /* NULL: local */
	unsigned sport;
	const char *dst;
	unsigned dport;
	size_t tlv_off, tlv_len;
};

static const struct ok_case OK_CASES[] = {
    {"v1 tcp4", W(V4_LINE), 0, 1, "192.0.2.1", 53764, "198.51.100.2", 443, 0, 0},
    {"v1 tcp4 zeros", W("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"), 0, 1, "0.0.0.0", 0, "0.0.0.0", 0, 0,
     0},
    {"v1 tcp4 longest (56 bytes)", W("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
     0, 1, "255.255.255.255", 65535, "255.255.255.255", 65535, 0, 0},
    {"v1 tcp4 then a request", W(V4_LINE HTTP_REQ), sizeof(HTTP_REQ) - 1, 1, "192.0.2.1", 53764,
     "198.51.100.2", 443, 0, 0},
    {"v1 tcp4 then another header", W(V4_LINE V4_LINE), sizeof(V4_LINE) - 1, 1, "192.0.2.1", 53764,
     "198.51.100.2", 443, 0, 0},
    {"v1 tcp6", W("PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n"), 0, 1, "2001:db8::1", 1234,
     "2001:db8::2", 443, 0, 0},
    {"v1 tcp6 longest (104 bytes), upper case",
     W("PROXY TCP6 FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF " FFFF6 " 65535 65535\r\n"), 0, 1, FFFF6,
     65535, FFFF6, 65535, 0, 0},
    {"v1 tcp6 uncompressed zeros",
     W("PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0001 :: 1 2\r\n"), 0, 1, "::1", 1, "::", 2, 0,
     0},
    {"v1 tcp6 mapped, dotted tail", W("PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 80 8080\r\n"), 0,
     1, "::ffff:10.0.0.1", 80, "::ffff:10.0.0.2", 8080, 0, 0},
    {"v1 tcp6 45-character text",
     W("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ::1 1 2\r\n"), 0, 1, FFFF6, 1,
     "::1", 2, 0, 0},
    {"v1 unknown", W("PROXY UNKNOWN\r\n"), 0, 1, NULL, 0, NULL, 0, 0, 0},
    {"v1 unknown then a request", W("PROXY UNKNOWN\r\n" HTTP_REQ), sizeof(HTTP_REQ) - 1, 1, NULL, 0,
     NULL, 0, 0, 0},
    {"v1 unknown with addresses", W("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"), 0, 1, NULL, 0, NULL,
     0, 0, 0},
    {"v1 unknown, any text", W("PROXY UNKNOWN  what ~ever: 01 \r\n"), 0, 1, NULL, 0, NULL, 0, 0, 0},
    {"v1 unknown worst case (107 bytes)", W("PROXY UNKNOWN " FFFF6 " " FFFF6 " 65535 65535\r\n"), 0,
     1, NULL, 0, NULL, 0, 0, 0},
    {"v2 tcp4", W(SIG "\x21\x11\x00\x0c" V4_BLOCK), 0, 2, "192.0.2.1", 53764, "198.51.100.2", 443,
     0, 0},
    {"v2 tcp4 then a request", W(SIG "\x21\x11\x00\x0c" V4_BLOCK HTTP_REQ), sizeof(HTTP_REQ) - 1, 2,
     "192.0.2.1", 53764, "198.51.100.2", 443, 0, 0},
    {"v2 tcp4 tlvs", W(SIG "\x21\x11\x00\x22" V4_BLOCK TLVS), 0, 2, "192.0.2.1", 53764,
     "198.51.100.2", 443, 28, 22},
    {"v2 tcp4 tlvs then a request", W(SIG "\x21\x11\x00\x22" V4_BLOCK TLVS HTTP_REQ),
     sizeof(HTTP_REQ) - 1, 2, "192.0.2.1", 53764, "198.51.100.2", 443, 28, 22},
    {"v2 tcp6", W(SIG "\x21\x21\x00\x24" V6_BLOCK), 0, 2, "2001:db8::1", 1234, "2001:db8::2", 443,
     0, 0},
    {"v2 tcp6 tlvs then payload", W(SIG "\x21\x21\x00\x3a" V6_BLOCK TLVS "\x16\x03\x01"), 3, 2,
     "2001:db8::1", 1234, "2001:db8::2", 443, 52, 22},
    {"v2 tcp6 one empty tlv", W(SIG "\x21\x21\x00\x27" V6_BLOCK "\xee\x00\x00"), 0, 2,
     "2001:db8::1", 1234, "2001:db8::2", 443, 52, 3},
    {"v2 local", W(SIG "\x20\x00\x00\x00"), 0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 local then a request", W(SIG "\x20\x00\x00\x00" HTTP_REQ), sizeof(HTTP_REQ) - 1, 2, NULL,
     0, NULL, 0, 0, 0},
    {"v2 local with tcp4 addresses (skipped)", W(SIG "\x20\x11\x00\x0c" V4_BLOCK), 0, 2, NULL, 0,
     NULL, 0, 0, 0},
    {"v2 local, block not read",
     W(SIG "\x20\x11\x00\x05"
	   "\x01\x00\x09zz"),
     0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy unspec", W(SIG "\x21\x00\x00\x00"), 0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy unspec, block not read",
     W(SIG "\x21\x00\x00\x03"
	   "abc"),
     0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy inet, protocol unspec",
     W(SIG "\x21\x10\x00\x02"
	   "ab"),
     0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy udp4", W(SIG "\x21\x12\x00\x0c" V4_BLOCK), 0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy udp6 tlvs", W(SIG "\x21\x22\x00\x3a" V6_BLOCK TLVS), 0, 2, NULL, 0, NULL, 0, 52, 22},
    {"v2 proxy unix stream", W(SIG "\x21\x31\x00\xd8" Z216), 0, 2, NULL, 0, NULL, 0, 0, 0},
    {"v2 proxy unix dgram tlvs", W(SIG "\x21\x32\x00\xee" Z216 TLVS), 0, 2, NULL, 0, NULL, 0, 232,
     22},
};

START_TEST(test_ok)
{
	const struct ok_case *c = &OK_CASES[_i];
	struct proxyproto_result res;
	const char *why = NULL;
	size_t hlen = c->len - c->payload;

	memset(&res, 0xa5, sizeof(res));
	int r = proxyproto_parse(c->in, c->len, &res, &why);
	ck_assert_msg(r == 1, "%s: %d (%s)", c->name, r, why ? why : "-");
	ck_assert_int_eq(res.version, c->version);
	ck_assert_msg(res.header_len == hlen, "%s: header_len %zu, want %zu", c->name,
		      res.header_len, hlen);
	ck_assert_uint_eq(res.tlv_off, c->tlv_off);
	ck_assert_uint_eq(res.tlv_len, c->tlv_len);
	ck_assert_msg(res.local == (c->src == NULL), "%s: local %d", c->name, res.local);
	if (c->src == NULL) {
		ck_assert_int_eq(res.src.ss_family, AF_UNSPEC);
		ck_assert_uint_eq(res.src_len, 0);
		ck_assert_uint_eq(res.dst_len, 0);
		return;
	}
	check_addr(c->name, "src", &res.src, res.src_len, c->src, c->sport);
	check_addr(c->name, "dst", &res.dst, res.dst_len, c->dst, c->dport);
}
END_TEST

/* Every prefix of the header asks for more; the header alone is enough. */
START_TEST(test_ok_prefixes)
{
	const struct ok_case *c = &OK_CASES[_i];
	size_t hlen = c->len - c->payload;
	struct proxyproto_result res, full;
	const char *why = NULL;

	for (size_t k = 0; k < hlen; k++) {
		memset(&res, 0x5a, sizeof(res));
		int r = proxyproto_parse(c->in, k, &res, &why);
		ck_assert_msg(r == 0, "%s: prefix %zu: %d (%s)", c->name, k, r, why ? why : "-");
		ck_assert_uint_eq(res.header_len, (size_t)0x5a5a5a5a5a5a5a5aULL); /* untouched */
	}
	memset(&res, 0, sizeof(res)); /* padding compared below */
	memset(&full, 0, sizeof(full));
	ck_assert_int_eq(proxyproto_parse(c->in, hlen, &res, &why), 1);
	ck_assert_int_eq(proxyproto_parse(c->in, c->len, &full, &why), 1);
	ck_assert(memcmp(&res, &full, sizeof(res)) == 0);
	/* the bytes after the header never matter, however many there are */
	for (size_t k = hlen; k <= c->len; k++) {
		ck_assert_int_eq(proxyproto_parse(c->in, k, &res, NULL), 1);
		ck_assert_uint_eq(res.header_len, hlen);
	}
}
END_TEST

/* ---- malformed headers ---- */

struct bad_case {
	const char *name;
	const uint8_t *in;
	size_t len;
	size_t at; /* the shortest prefix that fails */
	const char *why;
};

#define NOT_PP "not a PROXY header"
#define BAD_PROTO "bad v1 protocol"
#define BAD_ADDR "bad v1 address"
#define BAD_PORT "bad v1 port"
#define NO_CRLF "v1 line not ended by CRLF"
#define TOO_SHORT "v2 length too short for family"

static const struct bad_case BAD_CASES[] = {
    /* other protocols, on the byte that shows it */
    {"http GET", W(HTTP_REQ), 1, NOT_PP},
    {"http POST", W("POST / HTTP/1.1\r\n"), 2, NOT_PP},
    {"http PUT", W("PUT / HTTP/1.1\r\n"), 2, NOT_PP},
    {"http/2 preface", W("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 3, NOT_PP},
    {"tls client hello", W("\x16\x03\x01\x02\x00\x01"), 1, NOT_PP},
    {"blank lines then GET", W("\r\n\r\nGET / HTTP/1.1\r\n"), 5, NOT_PP},
    {"lower case proxy", W("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 1, NOT_PP},
    {"PROXY without space", W("PROXY\r\n"), 6, NOT_PP},
    /* v1 protocol */
    {"v1 TCP5", W("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), 10, BAD_PROTO},
    {"v1 lower case tcp4", W("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), 7, BAD_PROTO},
    {"v1 UDP4", W("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), 8, BAD_PROTO},
    {"v1 two spaces before protocol", W("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 7, BAD_PROTO},
    {"v1 TCP4 without space", W("PROXY TCP41.2.3.4 5.6.7.8 1 2\r\n"), 11, BAD_PROTO},
    {"v1 tab separator", W("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), 11, BAD_PROTO},
    {"v1 UNKNOWNX", W("PROXY UNKNOWNX\r\n"), 14, BAD_PROTO},
    {"v1 UNKNOWN\\n", W("PROXY UNKNOWN\n"), 14, NO_CRLF},
    {"v1 UNKNOWN\\r\\r\\n", W("PROXY UNKNOWN\r\r\n"), 15, NO_CRLF},
    {"v1 UNKNOWN tail with a tab", W("PROXY UNKNOWN a\tb\r\n"), 16, "bad v1 character"},
    {"v1 UNKNOWN tail with 8-bit", W("PROXY UNKNOWN a\xc3\xa9\r\n"), 16, "bad v1 character"},
    {"v1 UNKNOWN tail with LF", W("PROXY UNKNOWN a\nb\r\n"), 16, NO_CRLF},
    {"v1 UNKNOWN 108 bytes", W("PROXY UNKNOWN " X92 "\r\n"), 107, "v1 line too long"},
    {"v1 UNKNOWN 109 bytes", W("PROXY UNKNOWN x" X92 "\r\n"), 107, "v1 line too long"},
    /* v1 addresses */
    {"v1 empty source", W("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), 12, BAD_ADDR},
    {"v1 empty destination", W("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), 20, BAD_ADDR},
    {"v1 leading zero", W("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), 13, BAD_ADDR},
    {"v1 leading zero, last octet", W("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n"), 19, BAD_ADDR},
    {"v1 octet 256", W("PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n"), 14, BAD_ADDR},
    {"v1 octet 1000", W("PROXY TCP4 1.2.3.4 5.6.7.1000 1 2\r\n"), 29, BAD_ADDR},
    {"v1 three octets", W("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), 17, BAD_ADDR},
    {"v1 five octets", W("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), 19, BAD_ADDR},
    {"v1 trailing dot", W("PROXY TCP4 1.2.3. 5.6.7.8 1 2\r\n"), 18, BAD_ADDR},
    {"v1 two dots", W("PROXY TCP4 1..2.3 5.6.7.8 1 2\r\n"), 14, BAD_ADDR},
    {"v1 leading dot", W("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n"), 12, BAD_ADDR},
    {"v1 hex ipv4", W("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"), 13, BAD_ADDR},
    {"v1 ipv4 as one number", W("PROXY TCP4 16909060 5.6.7.8 1 2\r\n"), 15, BAD_ADDR},
    {"v1 ipv6 in TCP4", W("PROXY TCP4 ::1 ::1 1 2\r\n"), 12, BAD_ADDR},
    {"v1 ipv4 in TCP6", W("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), 19, BAD_ADDR},
    {"v1 ipv4 destination in TCP6", W("PROXY TCP6 ::1 1.2.3.4 1 2\r\n"), 23, BAD_ADDR},
    {"v1 ipv6 in TCP4 destination", W("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), 20, BAD_ADDR},
    {"v1 two ::", W("PROXY TCP6 1::2::3 ::1 1 2\r\n"), 19, BAD_ADDR},
    {"v1 ipv6 group of 5 digits", W("PROXY TCP6 12345::1 ::1 1 2\r\n"), 20, BAD_ADDR},
    {"v1 ipv6 nine groups", W("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), 29, BAD_ADDR},
    {"v1 ipv6 non-hex", W("PROXY TCP6 fe80::g ::1 1 2\r\n"), 18, BAD_ADDR},
    {"v1 ipv6 zone id", W("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), 19, BAD_ADDR},
    {"v1 ipv6 in brackets", W("PROXY TCP6 [::1] ::1 1 2\r\n"), 12, BAD_ADDR},
    {"v1 ipv6 text over 45", W("PROXY TCP6 " D46 " ::1 1 2\r\n"), 57, BAD_ADDR},
    {"v1 address then CRLF", W("PROXY TCP4 1.2.3.4 5.6.7.8\r\n"), 27, BAD_ADDR},
    {"v1 NUL in address", W("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), 19, BAD_ADDR},
    {"v1 tcp6 line over 107",
     W("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
       "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"),
     107, "v1 line too long"},
    /* v1 ports */
    {"v1 port 65536", W("PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n"), 32, BAD_PORT},
    {"v1 port 99999", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"), 34, BAD_PORT},
    {"v1 port 6 digits", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n"), 35, BAD_PORT},
    {"v1 port leading zero", W("PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n"), 29, BAD_PORT},
    {"v1 port 00", W("PROXY TCP4 1.2.3.4 5.6.7.8 00 80\r\n"), 29, BAD_PORT},
    {"v1 destination port leading zero", W("PROXY TCP4 1.2.3.4 5.6.7.8 80 08\r\n"), 32, BAD_PORT},
    {"v1 port with sign", W("PROXY TCP4 1.2.3.4 5.6.7.8 +80 80\r\n"), 28, BAD_PORT},
    {"v1 port in hex", W("PROXY TCP4 1.2.3.4 5.6.7.8 0x50 80\r\n"), 29, BAD_PORT},
    {"v1 empty port", W("PROXY TCP4 1.2.3.4 5.6.7.8  80\r\n"), 28, BAD_PORT},
    {"v1 empty destination port", W("PROXY TCP4 1.2.3.4 5.6.7.8 80 \r\n"), 31, BAD_PORT},
    {"v1 missing destination port", W("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), 29, BAD_PORT},
    {"v1 space before CRLF", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), 31, BAD_PORT},
    {"v1 extra field", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), 31, BAD_PORT},
    /* v1 line end */
    {"v1 LF only", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), 31, NO_CRLF},
    {"v1 CR then not LF", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), 32, NO_CRLF},
    {"v1 CR CR LF", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), 32, NO_CRLF},
    {"v1 LF CR", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r"), 31, NO_CRLF},
    /* v2 fixed part */
    {"v2 signature, bad 8th byte", W("\r\n\r\n\0\r\nXUIT\n\x21\x11\x00\x0c" V4_BLOCK), 8, NOT_PP},
    {"v2 signature, bad last byte", W("\r\n\r\n\0\r\nQUIT\r\x21\x11\x00\x0c" V4_BLOCK), 12, NOT_PP},
    {"v2 signature without NUL", W("\r\n\r\n\r\nQUIT\n"), 5, NOT_PP},
    {"v2 version 1", W(SIG "\x11\x11\x00\x0c" V4_BLOCK), 13, "bad v2 version"},
    {"v2 version 3", W(SIG "\x31\x11\x00\x0c" V4_BLOCK), 13, "bad v2 version"},
    {"v2 version 0", W(SIG "\x01\x11\x00\x0c" V4_BLOCK), 13, "bad v2 version"},
    {"v2 command 2", W(SIG "\x22\x11\x00\x0c" V4_BLOCK), 13, "bad v2 command"},
    {"v2 command 15", W(SIG "\x2f\x11\x00\x0c" V4_BLOCK), 13, "bad v2 command"},
    {"v2 family 4", W(SIG "\x21\x41\x00\x0c" V4_BLOCK), 14, "bad v2 family"},
    {"v2 family 15, LOCAL too", W(SIG "\x20\xf0\x00\x00"), 14, "bad v2 family"},
    {"v2 protocol 3", W(SIG "\x21\x13\x00\x0c" V4_BLOCK), 14, "bad v2 protocol"},
    {"v2 protocol 15", W(SIG "\x21\x1f\x00\x0c" V4_BLOCK), 14, "bad v2 protocol"},
    {"v2 length 2033 (2049 in all)", W(SIG "\x21\x11\x07\xf1" V4_BLOCK), 16, "v2 length too long"},
    {"v2 length 65535", W(SIG "\x21\x11\xff\xff" V4_BLOCK), 16, "v2 length too long"},
    {"v2 local length 65535", W(SIG "\x20\x00\xff\xff"), 16, "v2 length too long"},
    /* v2 family and length */
    {"v2 tcp4 length 11", W(SIG "\x21\x11\x00\x0b" V4_BLOCK), 16, TOO_SHORT},
    {"v2 tcp4 length 0", W(SIG "\x21\x11\x00\x00"), 16, TOO_SHORT},
    {"v2 tcp6 with tcp4 length", W(SIG "\x21\x21\x00\x0c" V4_BLOCK), 16, TOO_SHORT},
    {"v2 tcp6 length 35", W(SIG "\x21\x21\x00\x23" V6_BLOCK), 16, TOO_SHORT},
    {"v2 udp4 length 0", W(SIG "\x21\x12\x00\x00"), 16, TOO_SHORT},
    {"v2 unix with tcp6 length", W(SIG "\x21\x31\x00\x24" V6_BLOCK), 16, TOO_SHORT},
    /* v2 TLVs */
    {"v2 tlv value past the end", W(SIG "\x21\x11\x00\x0f" V4_BLOCK "\x01\x00\x01"), 31,
     "v2 TLV overrun"},
    {"v2 tlv length 65535",
     W(SIG "\x21\x11\x00\x10" V4_BLOCK "\x01\xff\xff"
	   "a"),
     32, "v2 TLV overrun"},
    {"v2 two stray bytes", W(SIG "\x21\x11\x00\x0e" V4_BLOCK "\x04\x00"), 30, "v2 TLV overrun"},
    {"v2 one stray byte after tlvs", W(SIG "\x21\x11\x00\x23" V4_BLOCK TLVS "\x04"), 51,
     "v2 TLV overrun"},
    {"v2 second tlv past the end",
     W(SIG "\x21\x21\x00\x2c" V6_BLOCK "\x04\x00\x00\x01\x00\x03"
	   "ab"),
     60, "v2 TLV overrun"},
    {"v2 udp6 tlv past the end", W(SIG "\x21\x22\x00\x27" V6_BLOCK "\x04\x00\x01"), 55,
     "v2 TLV overrun"},
};

START_TEST(test_bad)
{
	const struct bad_case *c = &BAD_CASES[_i];
	struct proxyproto_result res;
	const char *why = NULL;

	memset(&res, 0x5a, sizeof(res));
	int r = proxyproto_parse(c->in, c->len, &res, &why);
	ck_assert_msg(r == -1, "%s: %d", c->name, r);
	ck_assert_msg(why != NULL && strcmp(why, c->why) == 0, "%s: why \"%s\", want \"%s\"",
		      c->name, why ? why : "(null)", c->why);
	ck_assert_uint_eq(res.header_len, (size_t)0x5a5a5a5a5a5a5a5aULL); /* untouched */
	ck_assert_int_eq(proxyproto_parse(c->in, c->len, &res, NULL), -1);
}
END_TEST

/* Shorter than `at`: more is needed; from `at` on: the same failure. */
START_TEST(test_bad_earliest)
{
	const struct bad_case *c = &BAD_CASES[_i];
	const char *why = NULL;
	struct proxyproto_result res;

	ck_assert_msg(c->at <= c->len, "%s: at %zu past %zu", c->name, c->at, c->len);
	for (size_t k = 0; k < c->at; k++) {
		int r = proxyproto_parse(c->in, k, &res, &why);
		ck_assert_msg(r == 0, "%s: prefix %zu: %d (%s)", c->name, k, r, why ? why : "-");
	}
	for (size_t k = c->at; k <= c->len; k++) {
		why = NULL;
		int r = proxyproto_parse(c->in, k, &res, &why);
		ck_assert_msg(r == -1, "%s: prefix %zu: %d", c->name, k, r);
		ck_assert_msg(why != NULL && strcmp(why, c->why) == 0, "%s: prefix %zu: why \"%s\"",
			      c->name, k, why ? why : "(null)");
	}
}
END_TEST

/* ---- incomplete input ---- */

static const struct {
	const char *name;
	const uint8_t *in;
	size_t len;
} MORE_CASES[] = {
    {"nothing", W("")},
    {"P", W("P")},
    {"PROXY", W("PROXY")},
    {"v1 up to CR", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")},
    {"v1 port that may grow", W("PROXY TCP4 1.2.3.4 5.6.7.8 1 6553")},
    {"v1 octet that may grow", W("PROXY TCP4 1.2.3.25")},
    {"v1 UNKNOWN 106 bytes, no CRLF", W("PROXY UNKNOWN " X92)},
    {"v1 UNKNOWN 106 bytes and CR", W("PROXY UNKNOWN " X10 X10 X10 X10 X10 X10 X10 X10 X10 "x\r")},
    {"v2 CR", W("\r")},
    {"v2 signature to the NUL", W("\r\n\r\n\0")},
    {"v2 fixed part", W(SIG "\x21\x11\x00\x0c")},
    {"v2 address block cut", W(SIG "\x21\x11\x00\x0c"
				   "\xc0\x00\x02")},
    {"v2 tlv cut", W(SIG "\x21\x11\x00\x22" V4_BLOCK "\x01\x00\x02"
			 "h")},
    {"v2 longest length, nothing after", W(SIG "\x21\x11\x07\xf0")},
};

START_TEST(test_more)
{
	struct proxyproto_result res;
	const char *why = "unset";

	memset(&res, 0x5a, sizeof(res));
	ck_assert_msg(proxyproto_parse(MORE_CASES[_i].in, MORE_CASES[_i].len, &res, &why) == 0,
		      "%s", MORE_CASES[_i].name);
	ck_assert_str_eq(why, "unset");
	ck_assert_uint_eq(res.header_len, (size_t)0x5a5a5a5a5a5a5a5aULL);
}
END_TEST

/* The largest v2 header: 2048 bytes with one NOOP TLV; one byte more fails. */
START_TEST(test_v2_max)
{
	static uint8_t buf[PROXYPROTO_V2_MAX + 1];
	static const uint8_t head[] = SIG "\x21\x11\x07\xf0" V4_BLOCK;
	size_t tlv = PROXYPROTO_V2_MAX - (sizeof(head) - 1) - 3;
	struct proxyproto_result res;
	const char *why = NULL;

	memset(buf, 'n', sizeof(buf));
	memcpy(buf, head, sizeof(head) - 1);
	buf[28] = 0x04;
	buf[29] = (uint8_t)(tlv >> 8);
	buf[30] = (uint8_t)tlv;
	ck_assert_int_eq(proxyproto_parse(buf, PROXYPROTO_V2_MAX - 1, &res, &why), 0);
	ck_assert_int_eq(proxyproto_parse(buf, sizeof(buf), &res, &why), 1);
	ck_assert_uint_eq(res.header_len, PROXYPROTO_V2_MAX);
	ck_assert_uint_eq(res.tlv_off, 28);
	ck_assert_uint_eq(res.tlv_len, PROXYPROTO_V2_MAX - 28);
	buf[15]++;
	buf[30]++;
	ck_assert_int_eq(proxyproto_parse(buf, sizeof(buf), &res, &why), -1);
	ck_assert_str_eq(why, "v2 length too long");
}
END_TEST

/* ---- writers ---- */

struct write_case {
	const char *name;
	const char *src; /* NULL: no addresses */
	unsigned sport;
	const char *dst;
	unsigned dport;
	const char *v1;
	const uint8_t *v2;
	size_t v2_len;
	const char *psrc, *pdst; /* as parsed back: NULL when local */
};

static const struct write_case WRITE_CASES[] = {
    {"ipv4", "192.0.2.1", 53764, "198.51.100.2", 443, V4_LINE, W(SIG "\x21\x11\x00\x0c" V4_BLOCK),
     "192.0.2.1", "198.51.100.2"},
    {"ipv4 ports 0 and 65535", "0.0.0.0", 0, "255.255.255.255", 65535,
     "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
     W(SIG "\x21\x11\x00\x0c"
	   "\0\0\0\0\xff\xff\xff\xff\0\0\xff\xff"),
     "0.0.0.0", "255.255.255.255"},
    {"ipv6", "2001:db8::1", 1234, "2001:db8::2", 443,
     "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n", W(SIG "\x21\x21\x00\x24" V6_BLOCK),
     "2001:db8::1", "2001:db8::2"},
    {"ipv6 longest", FFFF6, 65535, FFFF6, 65535, "PROXY TCP6 " FFFF6 " " FFFF6 " 65535 65535\r\n",
     W(SIG "\x21\x21\x00\x24"
	   "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
	   "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
	   "\xff\xff\xff\xff"),
     FFFF6, FFFF6},
    {"both ipv4-mapped: written as ipv4", "::ffff:192.0.2.1", 53764, "::ffff:198.51.100.2", 443,
     V4_LINE, W(SIG "\x21\x11\x00\x0c" V4_BLOCK), "192.0.2.1", "198.51.100.2"},
    {"ipv4 and ipv4-mapped: ipv4", "192.0.2.1", 53764, "::ffff:198.51.100.2", 443, V4_LINE,
     W(SIG "\x21\x11\x00\x0c" V4_BLOCK), "192.0.2.1", "198.51.100.2"},
    {"ipv4 and ipv6: ipv4 mapped", "192.0.2.1", 80, "2001:db8::2", 443,
     "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 80 443\r\n",
     W(SIG "\x21\x21\x00\x24"
	   "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc0\x00\x02\x01"
	   "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02"
	   "\x00\x50\x01\xbb"),
     "::ffff:192.0.2.1", "2001:db8::2"},
    {"ipv6 and ipv4-mapped: stays ipv6", "2001:db8::1", 1234, "::ffff:198.51.100.2", 443,
     "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 1234 443\r\n",
     W(SIG "\x21\x21\x00\x24"
	   "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"
	   "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc6\x33\x64\x02"
	   "\x04\xd2\x01\xbb"),
     "2001:db8::1", "::ffff:198.51.100.2"},
    {"no source: UNKNOWN / LOCAL", NULL, 0, NULL, 0, "PROXY UNKNOWN\r\n", W(SIG "\x20\x00\x00\x00"),
     NULL, NULL},
};

static void write_case_addrs(const struct write_case *c, struct sockaddr_storage *s,
			     struct sockaddr_storage *d, const struct sockaddr **src,
			     const struct sockaddr **dst)
{
	*src = c->src ? make_addr(c->src, c->sport, s) : NULL;
	*dst = c->dst ? make_addr(c->dst, c->dport, d) : NULL;
}

static void check_parsed_back(const struct write_case *c, const uint8_t *buf, size_t len,
			      int version)
{
	struct proxyproto_result res;
	const char *why = NULL;

	ck_assert_msg(proxyproto_parse(buf, len, &res, &why) == 1, "%s v%d: %s", c->name, version,
		      why ? why : "incomplete");
	ck_assert_int_eq(res.version, version);
	ck_assert_uint_eq(res.header_len, len);
	ck_assert(res.local == (c->psrc == NULL));
	if (c->psrc == NULL)
		return;
	check_addr(c->name, "src", &res.src, res.src_len, c->psrc, c->sport);
	check_addr(c->name, "dst", &res.dst, res.dst_len, c->pdst, c->dport);
}

START_TEST(test_write_v1)
{
	const struct write_case *c = &WRITE_CASES[_i];
	struct sockaddr_storage s, d;
	const struct sockaddr *src, *dst;
	char out[PROXYPROTO_V1_WRITE_MAX + 16];
	size_t want = strlen(c->v1);

	write_case_addrs(c, &s, &d, &src, &dst);
	ck_assert_uint_le(want, PROXYPROTO_V1_WRITE_MAX);
	memset(out, '#', sizeof(out));
	size_t n = proxyproto_write_v1(out, sizeof(out), src, dst);
	ck_assert_msg(n == want && memcmp(out, c->v1, want) == 0, "%s: \"%.*s\"", c->name, (int)n,
		      out);
	ck_assert_int_eq(out[n], '#');
	check_parsed_back(c, (const uint8_t *)out, n, 1);
	/* exactly enough room is enough; any less writes nothing */
	ck_assert_uint_eq(proxyproto_write_v1(out, want, src, dst), want);
	for (size_t cap = 0; cap < want; cap++)
		ck_assert_uint_eq(proxyproto_write_v1(out, cap, src, dst), 0);
}
END_TEST

START_TEST(test_write_v2)
{
	const struct write_case *c = &WRITE_CASES[_i];
	struct sockaddr_storage s, d;
	const struct sockaddr *src, *dst;
	uint8_t out[PROXYPROTO_V2_WRITE_MAX + 16];

	write_case_addrs(c, &s, &d, &src, &dst);
	ck_assert_uint_le(c->v2_len, PROXYPROTO_V2_WRITE_MAX);
	memset(out, '#', sizeof(out));
	size_t n = proxyproto_write_v2(out, sizeof(out), src, dst);
	ck_assert_msg(n == c->v2_len, "%s: %zu bytes, want %zu", c->name, n, c->v2_len);
	ck_assert_mem_eq(out, c->v2, n);
	ck_assert_int_eq(out[n], '#');
	check_parsed_back(c, out, n, 2);
	ck_assert_uint_eq(proxyproto_write_v2(out, c->v2_len, src, dst), c->v2_len);
	for (size_t cap = 0; cap < c->v2_len; cap++)
		ck_assert_uint_eq(proxyproto_write_v2(out, cap, src, dst), 0);
}
END_TEST

START_TEST(test_write_unsupported)
{
	struct sockaddr_storage s;
	const struct sockaddr *in4 = make_addr("192.0.2.1", 1, &s);
	struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/tmp/x"};
	const struct sockaddr *unix_sa = (const struct sockaddr *)&un;
	char text[PROXYPROTO_V1_WRITE_MAX];
	uint8_t bin[PROXYPROTO_V2_WRITE_MAX];

	ck_assert_uint_eq(proxyproto_write_v1(text, sizeof(text), unix_sa, in4), 0);
	ck_assert_uint_eq(proxyproto_write_v1(text, sizeof(text), in4, unix_sa), 0);
	ck_assert_uint_eq(proxyproto_write_v1(text, sizeof(text), in4, NULL), 0);
	ck_assert_uint_eq(proxyproto_write_v2(bin, sizeof(bin), unix_sa, in4), 0);
	ck_assert_uint_eq(proxyproto_write_v2(bin, sizeof(bin), in4, unix_sa), 0);
	ck_assert_uint_eq(proxyproto_write_v2(bin, sizeof(bin), in4, NULL), 0);
	/* a NULL source writes UNKNOWN / LOCAL whatever dst is */
	ck_assert_uint_eq(proxyproto_write_v1(text, sizeof(text), NULL, unix_sa), 15);
	ck_assert_uint_eq(proxyproto_write_v2(bin, sizeof(bin), NULL, unix_sa), 16);
}
END_TEST

/* Scope ids and flow labels are not carried: the parsed side has neither. */
START_TEST(test_write_scope_dropped)
{
	struct sockaddr_storage s, d;
	const struct sockaddr *src = make_addr("fe80::1", 5, &s);
	const struct sockaddr *dst = make_addr("fe80::2", 6, &d);
	struct proxyproto_result res;
	char text[PROXYPROTO_V1_WRITE_MAX];
	uint8_t bin[PROXYPROTO_V2_WRITE_MAX];

	((struct sockaddr_in6 *)&s)->sin6_scope_id = 3;
	((struct sockaddr_in6 *)&s)->sin6_flowinfo = htonl(0x12345);
	size_t n = proxyproto_write_v1(text, sizeof(text), src, dst);
	ck_assert_int_eq(proxyproto_parse((const uint8_t *)text, n, &res, NULL), 1);
	check_addr("v1 scope", "src", &res.src, res.src_len, "fe80::1", 5);
	n = proxyproto_write_v2(bin, sizeof(bin), src, dst);
	ck_assert_int_eq(proxyproto_parse(bin, n, &res, NULL), 1);
	check_addr("v2 scope", "src", &res.src, res.src_len, "fe80::1", 5);
}
END_TEST

static Suite *proxyproto_suite(void)
{
	Suite *s = suite_create("proxyproto");
	TCase *tc = tcase_create("parse");

	tcase_add_loop_test(tc, test_ok, 0, (int)N_ELEMS(OK_CASES));
	tcase_add_loop_test(tc, test_ok_prefixes, 0, (int)N_ELEMS(OK_CASES));
	tcase_add_loop_test(tc, test_bad, 0, (int)N_ELEMS(BAD_CASES));
	tcase_add_loop_test(tc, test_bad_earliest, 0, (int)N_ELEMS(BAD_CASES));
	tcase_add_loop_test(tc, test_more, 0, (int)N_ELEMS(MORE_CASES));
	tcase_add_test(tc, test_v2_max);
	suite_add_tcase(s, tc);

	tc = tcase_create("write");
	tcase_add_loop_test(tc, test_write_v1, 0, (int)N_ELEMS(WRITE_CASES));
	tcase_add_loop_test(tc, test_write_v2, 0, (int)N_ELEMS(WRITE_CASES));
	tcase_add_test(tc, test_write_unsupported);
	tcase_add_test(tc, test_write_scope_dropped);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proxyproto_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
