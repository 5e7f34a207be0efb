/* addr.h -- socket addresses: parse "HOST:PORT", "[V6]:PORT", "*:PORT"; print them back */
#ifndef TT_NET_ADDR_H
#define TT_NET_ADDR_H

#include "core/compat.h"

#include <netinet/in.h>
#include <sys/socket.h>

/** An IPv4 or IPv6 socket address (32 bytes: connections keep their peer's). */
typedef struct tt_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } ss;
    socklen_t len; /* 0 when unset */
} tt_addr_t;

/** Longest string tt_addr_format() writes, with its NUL. */
#define TT_ADDR_STRLEN 64

/**
 * Parses `s`: "1.2.3.4:80", "[::1]:80", "*:80" or ":80" (all IPv4 addresses), or "NAME:80" when
 * `resolve` is true (getaddrinfo, first result; blocking, for start-up only). Port 0 is allowed.
 * Returns 0, or -EINVAL / -ENOENT with a static reason in `*why`.
 */
int tt_addr_parse(const char *s, bool resolve, tt_addr_t *out, const char **why);
/** Writes "1.2.3.4:80" or "[::1]:80" into `buf` (TT_ADDR_STRLEN bytes suffice); returns its length. */
size_t tt_addr_format(const tt_addr_t *a, char *buf, size_t size);
/** Writes only the host part ("1.2.3.4", "::1"); returns its length. */
size_t tt_addr_format_host(const tt_addr_t *a, char *buf, size_t size);
/** The port in host byte order. */
uint16_t tt_addr_port(const tt_addr_t *a);
/** Sets the port (host byte order). */
void tt_addr_set_port(tt_addr_t *a, uint16_t port);
/** True when `a` and `b` are the same socket address: family, address, port (and IPv6 scope id). Unset addresses
 *  (len 0) equal only each other. */
bool tt_addr_equal(const tt_addr_t *a, const tt_addr_t *b);

/** An address block: "10.0.0.0/8", "2001:db8::/32", or one address ("192.0.2.7" is /32). */
typedef struct tt_cidr {
    sa_family_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;       /* prefix length */
    uint8_t addr[16];   /* network byte order; the bits past the prefix are zero */
} tt_cidr_t;

/** Parses `s` (`n` bytes) as ADDRESS[/BITS]. Returns 0, or -EINVAL with a static reason in `*why`. */
int tt_cidr_parse(const char *s, size_t n, tt_cidr_t *out, const char **why);
/** True when `a` lies in one of the `n` blocks of `set`; an IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack
 *  listener's peers) matches IPv4 blocks. */
bool tt_cidr_set_match(const tt_cidr_t *set, size_t n, const tt_addr_t *a);
/** Parses `s` (`n` bytes) as a bare IPv4 or IPv6 address (no port, no brackets) into `out` (port 0). True on
 *  success; for addresses named in fields such as X-Forwarded-For. */
bool tt_addr_parse_ip(const char *s, size_t n, tt_addr_t *out);

#endif
