/* cli_url.c -- URL arguments of probe and bench: parse, resolve, format a request head */
#include "cmd/cli_url.h"

#include <errno.h>
#include <strings.h>

/* Bytes allowed in a request-target as we send it: visible ASCII (RFC 9112 3.2; the server judges the rest). */
static bool target_byte_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static int parse_scheme(const char **s, tt_cli_url_t *u, const char **why)
{
    if (strncasecmp(*s, "http://", 7) == 0) {
        u->scheme = TT_CLI_HTTP;
        u->port = 80;
        *s += 7;
        return 0;
    }
    if (strncasecmp(*s, "https://", 8) == 0) {
        u->scheme = TT_CLI_HTTPS;
        u->port = 443;
        *s += 8;
        return 0;
    }
    *why = "a URL must start with http:// or https://";
    return -EINVAL;
}

/* Host up to the port, path, query or end; IPv6 literals in brackets. Leaves `*s` after the host. */
static int parse_host(const char **s, tt_cli_url_t *u, const char **why)
{
    const char *p = *s, *start = p, *end;
    if (*p == '[') {
        end = strchr(p, ']');
        if (end == NULL) {
            *why = "unterminated [IPv6] host";
            return -EINVAL;
        }
        start = p + 1;
        *s = end + 1;
    } else {
        end = p + strcspn(p, ":/?#");
        *s = end;
    }
    size_t n = (size_t)(end - start);
    if (n == 0) {
        *why = "the URL has no host";
        return -EINVAL;
    }
    if (n >= sizeof(u->host)) {
        *why = "host name too long";
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!target_byte_ok((unsigned char)start[i])) {
            *why = "the host has a space or control byte";
            return -EINVAL;
        }
    memcpy(u->host, start, n);
    u->host[n] = '\0';
    return 0;
}

static int parse_port(const char **s, tt_cli_url_t *u, bool *explicit_port, const char **why)
{
    *explicit_port = false;
    if (**s != ':') return 0;
    const char *p = *s + 1;
    unsigned long v = 0;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned long)(*p++ - '0');
        if (++digits > 5) break;
    }
    if (digits == 0 || digits > 5 || v == 0 || v > 65535 || (*p != '\0' && *p != '/' && *p != '?' && *p != '#')) {
        *why = "the port must be a number from 1 to 65535";
        return -EINVAL;
    }
    u->port = (uint16_t)v;
    *explicit_port = true;
    *s = p;
    return 0;
}

static int parse_target(const char *p, tt_cli_url_t *u, const char **why)
{
    size_t n = strcspn(p, "#");
    bool slash = n > 0 && p[0] == '/';
    size_t need = n + (slash ? 0 : 1);
    if (need >= sizeof(u->target)) {
        *why = "path too long";
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!target_byte_ok((unsigned char)p[i])) {
            *why = "the path has a space or control byte (percent-encode it)";
            return -EINVAL;
        }
    size_t o = 0;
    if (!slash) u->target[o++] = '/'; /* "" -> "/", "?q" -> "/?q" (RFC 9112 3.2.1) */
    memcpy(u->target + o, p, n);
    u->target[o + n] = '\0';
    return 0;
}

int tt_cli_url_parse(const char *s, tt_cli_url_t *u, const char **why)
{
    memset(u, 0, sizeof(*u));
    bool explicit_port;
    int r;
    if ((r = parse_scheme(&s, u, why)) != 0) return r;
    if (memchr(s, '@', strcspn(s, "/?#")) != NULL) {
        *why = "user:password@ in URLs is not supported";
        return -EINVAL;
    }
    bool v6 = *s == '[';
    if ((r = parse_host(&s, u, why)) != 0) return r;
    if ((r = parse_port(&s, u, &explicit_port, why)) != 0) return r;
    if ((r = parse_target(s, u, why)) != 0) return r;
    int n = snprintf(u->authority, sizeof(u->authority), "%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "");
    if (explicit_port && n >= 0 && (size_t)n < sizeof(u->authority))
        snprintf(u->authority + n, sizeof(u->authority) - (size_t)n, ":%u", u->port);
    return 0;
}

int tt_cli_url_resolve(tt_cli_url_t *u, const char **why)
{
    char hp[sizeof(u->host) + 16];
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(hp, sizeof(hp), "%s%s%s:%u", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
    return tt_addr_parse(hp, true, &u->addr, why);
}

const char *tt_cli_url_unsupported(const tt_cli_url_t *u)
{
    (void)u;
    return NULL;
}

tt_tls_client_t *tt_cli_url_tls_client(const tt_cli_url_t *u, bool insecure, bool alpn_h2, char *err, size_t errlen)
{
    tt_tls_client_conf_t conf = {.verify = !insecure, .sni = (char *)u->host, .alpn_h2 = alpn_h2};
    return tt_tls_client_new(&conf, err, errlen);
}

void tt_cli_tls_failure(char *buf, size_t size, const char *reason, bool verify)
{
    if (verify)
        snprintf(buf, size, "certificate verification failed: %s (use --insecure to skip it)",
                 reason ? reason : "unknown reason");
    else
        snprintf(buf, size, "TLS handshake failed: %s", reason ? reason : "unknown reason");
}

size_t tt_cli_url_request(const tt_cli_url_t *u, const char *method, const char *target, int minor, const char *agent,
                          const char *extra, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s %s HTTP/1.%d\r\nHost: %s\r\nUser-Agent: %s\r\n%s\r\n", method,
                     target ? target : u->target, minor, u->authority, agent, extra ? extra : "");
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}
