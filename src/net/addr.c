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

size_t tt_addr_format_host(const tt_addr_t *a, char *buf, size_t size)
{
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
