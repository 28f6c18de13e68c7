/*
 * libFuzzer driver for the PROXY protocol parser: arbitrary bytes, as a
 * listener would have them buffered, must parse, ask for more or fail
 * cleanly, and what parses must keep the parser's promises.
 *
 * Input: the bytes, no control byte.
 * Checked for every input: the answer for the first half agrees with the
 * answer for the whole (a failure stays the same failure, a header the same
 * header, "more" only after "more"). For a header: it fits the input and the
 * version's limits, the header alone parses to the same result and one byte
 * less asks for more; its addresses written again with either version parse
 * back to the same addresses (an IPv4-mapped IPv6 address and its IPv4
 * address count as equal: the writers unmap), and a canonical header (v1
 * TCP4, v2 TCP4 or TCP6 without TLVs) comes back byte for byte.
 * Seeds: tests/fuzz/corpus/fuzz_proxyproto/.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "fuzz_check.h"

static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const uint8_t V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An address as IPv6 bytes (IPv4 mapped) and its port, for comparing. */
struct norm {
	uint8_t addr[16];
	uint16_t port;
};

static struct norm norm_get(const struct sockaddr_storage *ss, socklen_t len)
{
	struct norm n;

	memset(&n, 0, sizeof(n));
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		CHECK(len == sizeof(*in));
		memcpy(n.addr, V4_MAPPED, sizeof(V4_MAPPED));
		memcpy(n.addr + 12, &in->sin_addr, 4);
		n.port = in->sin_port;
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		CHECK(ss->ss_family == AF_INET6);
		CHECK(len == sizeof(*in6));
		CHECK(in6->sin6_scope_id == 0 && in6->sin6_flowinfo == 0);
		memcpy(n.addr, &in6->sin6_addr, 16);
		n.port = in6->sin6_port;
	}
	return n;
}

static bool norm_eq(const struct norm *a, const struct norm *b)
{
	return memcmp(a->addr, b->addr, 16) == 0 && a->port == b->port;
}

/* The promises of one parsed header, on its own terms. */
static void check_result(const uint8_t *data, size_t size, const struct proxyproto_result *res)
{
	CHECK(res->header_len <= size);
	if (res->version == 1) {
		CHECK(res->header_len >= 15 && res->header_len <= PROXYPROTO_V1_MAX);
		CHECK(memcmp(data, "PROXY ", 6) == 0);
		CHECK(memcmp(data + res->header_len - 2, "\r\n", 2) == 0);
		CHECK(memchr(data, '\n', res->header_len - 1) == NULL);
		CHECK(res->tlv_off == 0 && res->tlv_len == 0);
	} else {
		CHECK(res->version == 2);
		CHECK(res->header_len >= 16 && res->header_len <= PROXYPROTO_V2_MAX);
		CHECK(memcmp(data, V2_SIG, sizeof(V2_SIG)) == 0);
		CHECK(res->header_len == 16 + ((size_t)data[14] << 8 | data[15]));
		CHECK((res->tlv_off == 0) == (res->tlv_len == 0));
		CHECK(res->tlv_len == 0 || res->tlv_off + res->tlv_len == res->header_len);
	}
	if (res->local) {
		CHECK(res->src_len == 0 && res->dst_len == 0);
		CHECK(res->src.ss_family == AF_UNSPEC && res->dst.ss_family == AF_UNSPEC);
	} else {
		CHECK(res->src.ss_family == res->dst.ss_family);
		CHECK(res->src.ss_family == AF_INET || res->src.ss_family == AF_INET6);
	}
}

/* The header written again with `version` parses back to the same ends. */
static void check_rewrite(const uint8_t *data, const struct proxyproto_result *res, int version)
{
	uint8_t out[PROXYPROTO_V1_WRITE_MAX > PROXYPROTO_V2_WRITE_MAX ? PROXYPROTO_V1_WRITE_MAX
								      : PROXYPROTO_V2_WRITE_MAX];
	const struct sockaddr *src = res->local ? NULL : (const struct sockaddr *)&res->src;
	const struct sockaddr *dst = res->local ? NULL : (const struct sockaddr *)&res->dst;
	struct proxyproto_result back;
	const char *why = NULL;
	size_t n = version == 1
		       ? proxyproto_write_v1((char *)out, PROXYPROTO_V1_WRITE_MAX, src, dst)
		       : proxyproto_write_v2(out, PROXYPROTO_V2_WRITE_MAX, src, dst);

	CHECK(n > 0);
	CHECK(proxyproto_parse(out, n, &back, &why) == 1);
	CHECK(back.version == version && back.header_len == n && back.local == res->local);
	if (res->local)
		return;
	struct norm s0 = norm_get(&res->src, res->src_len), d0 = norm_get(&res->dst, res->dst_len);
	struct norm s1 = norm_get(&back.src, back.src_len), d1 = norm_get(&back.dst, back.dst_len);
	CHECK(norm_eq(&s0, &s1) && norm_eq(&d0, &d1));
	/* both IPv4 (or mapped) go out as TCP4, anything else as TCP6 */
	bool v4 = memcmp(s0.addr, V4_MAPPED, 12) == 0 && memcmp(d0.addr, V4_MAPPED, 12) == 0;
	CHECK(back.src.ss_family == (v4 ? AF_INET : AF_INET6));
	if (version != res->version)
		return;
	bool canonical = version == 1 ? memcmp(data, "PROXY TCP4 ", 11) == 0
				      : data[12] == 0x21 && res->tlv_len == 0 &&
					    ((data[13] == 0x11 && res->header_len == 28) ||
					     (data[13] == 0x21 && res->header_len == 52 && !v4));
	if (canonical)
		CHECK(n == res->header_len && memcmp(out, data, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto_result res, half_res, again;
	const char *why = NULL, *half_why = NULL;

	/* compared with memcmp: padding zeroed */
	memset(&res, 0, sizeof(res));
	memset(&half_res, 0, sizeof(half_res));
	memset(&again, 0, sizeof(again));
	int r = proxyproto_parse(data, size, &res, &why);
	int half = proxyproto_parse(data, size / 2, &half_res, &half_why);

	CHECK(r == -1 || r == 0 || r == 1);
	CHECK(r != -1 || why != NULL);
	CHECK(r != 0 || size < PROXYPROTO_MAX);
	if (half == -1)
		CHECK(r == -1 && strcmp(why, half_why) == 0);
	if (half == 1)
		CHECK(r == 1 && memcmp(&res, &half_res, sizeof(res)) == 0);
	if (r == 0)
		CHECK(half == 0);
	if (r != 1)
		return 0;
	check_result(data, size, &res);
	CHECK(proxyproto_parse(data, res.header_len, &again, NULL) == 1);
	CHECK(memcmp(&res, &again, sizeof(res)) == 0);
	CHECK(proxyproto_parse(data, res.header_len - 1, &again, NULL) == 0);
	check_rewrite(data, &res, 1);
	check_rewrite(data, &res, 2);
	return 0;
}
