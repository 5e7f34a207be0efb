/* addr.c -- parsing and printing IPv4/IPv6 socket addresses */
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>

static int parse_port(const char *s, uint16_t *port)
{
    if (*s == '\0') return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535) return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int tt_addr_parse(const char *s, bool resolve, tt_addr_t *out, const char **why)
{
    char host[256];
    const char *colon, *hs = s;
    size_t hn;
    uint16_t port;
    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':') {
            *why = "expected [IPV6]:PORT";
            return -EINVAL;
        }
        hs = s + 1;
        hn = (size_t)(end - hs);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            *why = "expected HOST:PORT";
            return -EINVAL;
        }
        hn = (size_t)(colon - s);
    }
    if (hn >= sizeof(host)) {
        *why = "host name too long";
        return -EINVAL;
    }
    memcpy(host, hs, hn);
    host[hn] = '\0';
    if (parse_port(colon + 1, &port) != 0) {
        *why = "port must be a number from 0 to 65535";
        return -EINVAL;
    }
    struct sockaddr_in *v4 = &out->ss.in;
    struct sockaddr_in6 *v6 = &out->ss.in6;
    if (hn == 0 || strcmp(host, "*") == 0) {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        v4->sin_port = htons(port);
        out->len = sizeof(*v4);
        return 0;
    }
    if (s[0] != '[' && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        out->len = sizeof(*v4);
        return 0;
    }
    if (s[0] == '[') {
        if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1) {
            *why = "not an IPv6 address";
            return -EINVAL;
        }
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        out->len = sizeof(*v6);
        return 0;
    }
    if (!resolve) {
        *why = "not an IP address (write IPv6 as [ADDR]:PORT)";
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        *why = "host name does not resolve";
        return -ENOENT;
    }
    if (res->ai_addrlen > sizeof(out->ss)) {
        freeaddrinfo(res);
        *why = "unsupported address family";
        return -EINVAL;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    tt_addr_set_port(out, port);
    return 0;
}

/* Dotted-quad of an IPv4 address (RFC 791's four octets in network order) into `buf` (at least 16 bytes): what
 * inet_ntop writes, without its trip through sprintf (a proxied request formats its client's address). */
static size_t format_ipv4(const struct in_addr *in, char *buf)
{
    const unsigned char *o = (const unsigned char *)&in->s_addr;
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        unsigned v = o[i];
        if (v >= 100) buf[n++] = (char)('0' + v / 100);
        if (v >= 10) buf[n++] = (char)('0' + v / 10 % 10);
        buf[n++] = (char)('0' + v % 10);
        if (i < 3) buf[n++] = '.';
    }
    buf[n] = '\0';
    return n;
}

size_t tt_addr_format_host(const tt_addr_t *a, char *buf, size_t size)
{
    if (a->len != 0 && a->ss.sa.sa_family == AF_INET && size >= INET_ADDRSTRLEN)
        return format_ipv4(&a->ss.in.sin_addr, buf);
    const void *src =
        a->ss.sa.sa_family == AF_INET6 ? (const void *)&a->ss.in6.sin6_addr : (const void *)&a->ss.in.sin_addr;
    if (a->len == 0 || inet_ntop(a->ss.sa.sa_family, src, buf, (socklen_t)size) == NULL) {
        snprintf(buf, size, "-");
    }
    return strlen(buf);
}

size_t tt_addr_format(const tt_addr_t *a, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN + 1];
    tt_addr_format_host(a, host, sizeof(host));
    int n = a->ss.sa.sa_family == AF_INET6 ? snprintf(buf, size, "[%s]:%u", host, tt_addr_port(a))
                                           : snprintf(buf, size, "%s:%u", host, tt_addr_port(a));
    return n < 0 ? 0 : TT_MIN((size_t)n, size - 1);
}

uint16_t tt_addr_port(const tt_addr_t *a)
{
    if (a->ss.sa.sa_family == AF_INET6) return ntohs(a->ss.in6.sin6_port);
    return ntohs(a->ss.in.sin_port);
}

void tt_addr_set_port(tt_addr_t *a, uint16_t port)
{
    if (a->ss.sa.sa_family == AF_INET6)
        a->ss.in6.sin6_port = htons(port);
    else
        a->ss.in.sin_port = htons(port);
}

bool tt_addr_equal(const tt_addr_t *a, const tt_addr_t *b)
{
    if (a->len != b->len) return false;
    if (a->len == 0) return true;
    if (a->ss.sa.sa_family != b->ss.sa.sa_family) return false;
    if (a->ss.sa.sa_family == AF_INET)
        return a->ss.in.sin_port == b->ss.in.sin_port && a->ss.in.sin_addr.s_addr == b->ss.in.sin_addr.s_addr;
    if (a->ss.sa.sa_family == AF_INET6)
        return a->ss.in6.sin6_port == b->ss.in6.sin6_port && a->ss.in6.sin6_scope_id == b->ss.in6.sin6_scope_id &&
               memcmp(&a->ss.in6.sin6_addr, &b->ss.in6.sin6_addr, sizeof(a->ss.in6.sin6_addr)) == 0;
    return memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* ---- address blocks ---- */

/* The raw bytes of `a`, IPv4-mapped IPv6 as IPv4: 4 or 16 bytes (0 when unset). */
static size_t addr_bytes(const tt_addr_t *a, const uint8_t **p)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->ss.sa.sa_family == AF_INET) {
        *p = (const uint8_t *)&a->ss.in.sin_addr;
        return 4;
    }
    if (a->ss.sa.sa_family != AF_INET6) return 0;
    *p = a->ss.in6.sin6_addr.s6_addr;
    if (memcmp(*p, mapped, sizeof(mapped)) == 0) {
        *p += 12;
        return 4;
    }
    return 16;
}

bool tt_addr_parse_ip(const char *s, size_t n, tt_addr_t *out)
{
    char buf[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(buf)) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, &out->ss.in.sin_addr) == 1) {
        out->ss.in.sin_family = AF_INET;
        out->len = sizeof(out->ss.in);
        return true;
    }
    if (inet_pton(AF_INET6, buf, &out->ss.in6.sin6_addr) == 1) {
        out->ss.in6.sin6_family = AF_INET6;
        out->len = sizeof(out->ss.in6);
        return true;
    }
    return false;
}

int tt_cidr_parse(const char *s, size_t n, tt_cidr_t *out, const char **why)
{
    const char *slash = memchr(s, '/', n);
    size_t an = slash ? (size_t)(slash - s) : n;
    tt_addr_t a;
    const uint8_t *bytes;
    if (!tt_addr_parse_ip(s, an, &a)) {
        *why = "expected an IP address or a block such as 10.0.0.0/8 or 2001:db8::/32";
        return -EINVAL;
    }
    size_t len = a.ss.sa.sa_family == AF_INET ? 4 : 16;
    bytes = len == 4 ? (const uint8_t *)&a.ss.in.sin_addr : a.ss.in6.sin6_addr.s6_addr;
    unsigned long bits = len * 8;
    if (slash != NULL) {
        const char *p = slash + 1, *end = s + n;
        if (p == end || end - p > 3) {
            *why = "the prefix length after '/' must be a number of bits";
            return -EINVAL;
        }
        bits = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9') {
                *why = "the prefix length after '/' must be a number of bits";
                return -EINVAL;
            }
            bits = bits * 10 + (unsigned long)(*p - '0');
        }
        if (bits > len * 8) {
            *why = len == 4 ? "an IPv4 prefix is at most /32" : "an IPv6 prefix is at most /128";
            return -EINVAL;
        }
    }
    memset(out, 0, sizeof(*out));
    out->family = a.ss.sa.sa_family;
    out->bits = (uint8_t)bits;
    for (size_t i = 0; i < len; i++) {
        size_t keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
        out->addr[i] = (uint8_t)(bytes[i] & (uint8_t)(0xff00u >> keep));
    }
    return 0;
}

bool tt_cidr_set_match(const tt_cidr_t *set, size_t n, const tt_addr_t *a)
{
    const uint8_t *p;
    size_t len = addr_bytes(a, &p);
    if (len == 0) return false;
    for (size_t k = 0; k < n; k++) {
        const tt_cidr_t *c = &set[k];
        if ((c->family == AF_INET) != (len == 4)) continue;
        size_t full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(p, c->addr, full) != 0) continue;
        if (rest && (p[full] & (uint8_t)(0xff00u >> rest)) != c->addr[full]) continue;
        return true;
    }
    return false;
}
