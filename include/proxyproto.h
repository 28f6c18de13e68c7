/*
 * proxyproto: the PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions
 * 1 and 2) that a load balancer puts in front of a connection to say who the
 * client is. Pure functions over buffers: no sockets, no allocation, no
 * state kept between calls, so a listener can call the parser again each time
 * more bytes arrive.
 */
#ifndef SY_PROXYPROTO_H
#define SY_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest v1 line, CRLF included ("PROXY UNKNOWN" + two full IPv6
 * addresses and ports, the spec's worst case). */
#define PROXYPROTO_V1_MAX 107
/*
 * The longest v2 header accepted, the 16 fixed bytes included. The largest
 * address block is 216 bytes (AF_UNIX); the TLVs a real sender adds (HAProxy's
 * ALPN, authority <= 255, unique id <= 128, CRC32C, SSL with version, CN, cipher
 * and algorithms; a cloud balancer's endpoint id) come to well under 1 KiB.
 * Twice that leaves room while bounding what a peer can make a listener hold
 * before it is rejected: a larger length is refused as soon as the 16 fixed
 * bytes are in.
 */
#define PROXYPROTO_V2_MAX 2048
/* What a listener must be able to hold to see any acceptable header whole. */
#define PROXYPROTO_MAX PROXYPROTO_V2_MAX

/* Room the writers need at most. v1: never more than a receiver must take
 * (a TCP6 line is at most 104 bytes with glibc's inet_ntop); v2: 16 bytes and
 * 36 of IPv6 addresses and ports. */
#define PROXYPROTO_V1_WRITE_MAX PROXYPROTO_V1_MAX
#define PROXYPROTO_V2_WRITE_MAX 52

struct proxyproto_result {
	int version; /* 1 or 2 */
	/* No addresses: use the connection's own. v1 UNKNOWN; v2 LOCAL; v2 PROXY
	 * for UNSPEC, UDP or AF_UNIX, which a proxy for TCP does not use (the spec
	 * lets a receiver fall back to UNSPEC for combinations it does not
	 * support). */
	bool local;
	/* AF_INET or AF_INET6, both the same family, ports in network order,
	 * zero scope id and flow info; zeroed when local. */
	struct sockaddr_storage src, dst;
	socklen_t src_len, dst_len;
	size_t header_len; /* bytes of the header: consume these, the rest is payload */
	/* v2 TLVs (offset into the parsed buffer, length; 0 and 0 when none or
	 * not walked): checked to tile their area exactly, not interpreted. */
	size_t tlv_off, tlv_len;
};

/*
 * Parses a PROXY header (v1 or v2, told apart by the first byte) at the start
 * of buf[0..len). Returns 1 for a complete valid header (*out filled,
 * out->header_len <= len bytes to consume), 0 when buf is a valid header's
 * prefix and more bytes are needed, -1 when no more bytes can make it valid
 * (*why, if why is not NULL, is a short static reason). Input that is not a
 * PROXY header at all fails on its first byte that shows it ("GET " on the
 * first, "POST" on the second), so a listener can refuse plain traffic at
 * once. *out is written only when 1 is returned.
 *
 * Strict: v1 is "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" with single spaces,
 * dotted-quad IPv4 without leading zeros, IPv6 as inet_pton(3) reads it (hex
 * groups, "::", a dotted tail as inet_ntop(3) writes for mapped addresses),
 * ports 0..65535 without leading zeros, <= PROXYPROTO_V1_MAX bytes; or
 * "PROXY UNKNOWN\r\n", or "PROXY UNKNOWN " followed by printable ASCII and
 * CRLF (ignored, as the spec says). v2 needs version 2, command LOCAL or
 * PROXY, valid family and protocol nibbles, a length that holds the family's
 * addresses, <= PROXYPROTO_V2_MAX bytes in all, and TLVs that tile the rest
 * exactly. A LOCAL header's block is skipped without being read.
 */
int proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_result *out,
		     const char **why);

/*
 * Write a v1 line ("PROXY TCP4 ...\r\n", not NUL-terminated) or a v2 header
 * (command PROXY, TCP) for the pair src -> dst into out[0..cap). Returns the
 * length written, or 0 when cap is too small or a family is neither AF_INET
 * nor AF_INET6 (out may then hold a partial write). When both sides are IPv4
 * or IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 client) the
 * header is TCP4 with the IPv4 addresses; otherwise TCP6, an IPv4 side
 * written as ::ffff:a.b.c.d. A NULL src writes "PROXY UNKNOWN\r\n" (v1) or a
 * LOCAL header with family UNSPEC and no addresses (v2); dst is then unused.
 */
size_t proxyproto_write_v1(char *out, size_t cap, const struct sockaddr *src,
			   const struct sockaddr *dst);
size_t proxyproto_write_v2(uint8_t *out, size_t cap, const struct sockaddr *src,
			   const struct sockaddr *dst);

#endif
