/* err.c -- close-reason names, the fatal path and the allocation wrappers */
#include "core/err.h"

#include <stdarg.h>

static const char *const reason_names[TT_CLOSE__COUNT] = {
    [TT_CLOSE_NONE] = "keep",
    [TT_CLOSE_CLIENT_CLOSE] = "client_close",
    [TT_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
    [TT_CLOSE_MAX_REQUESTS] = "max_requests",
    [TT_CLOSE_MAX_LIFETIME] = "max_lifetime",
    [TT_CLOSE_HEADER_TIMEOUT] = "header_timeout",
    [TT_CLOSE_BODY_TIMEOUT] = "body_timeout",
    [TT_CLOSE_SEND_TIMEOUT] = "send_timeout",
    [TT_CLOSE_BAD_REQUEST] = "bad_request",
    [TT_CLOSE_EVICTED] = "evicted",
    [TT_CLOSE_SHUTDOWN] = "shutdown",
    [TT_CLOSE_RESET] = "reset",
    [TT_CLOSE_TLS_ERROR] = "tls_error",
    [TT_CLOSE_H2_GOAWAY] = "h2_goaway",
    [TT_CLOSE_PING_TIMEOUT] = "ping_timeout",
    [TT_CLOSE_UNREAD_BODY] = "unread_body",
    [TT_CLOSE_TUNNEL_IDLE] = "tunnel_idle",
    [TT_CLOSE_TUNNEL_CLOSED_BY_CLIENT] = "tunnel_closed_by_client",
    [TT_CLOSE_TUNNEL_CLOSED_BY_UPSTREAM] = "tunnel_closed_by_upstream",
};

const char *tt_close_reason_name(tt_close_reason_t r)
{
    if ((unsigned)r >= TT_CLOSE__COUNT) return "unknown";
    return reason_names[r];
}

void tt__fatal(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "tether: fatal: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (%s:%d)\n", file, line);
    abort();
}

void *tt_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) tt_fatal("out of memory (%zu bytes)", n);
    return p;
}

void *tt_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL) tt_fatal("out of memory (%zu x %zu bytes)", count, size);
    return p;
}

void *tt_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) tt_fatal("out of memory (%zu bytes)", n);
    return q;
}

char *tt_strndup(const char *s, size_t n)
{
    char *p = tt_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
