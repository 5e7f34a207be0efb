/* err.h -- the return vocabulary, the close-reason enum shared by logs/metrics/tests, the one fatal path */
#ifndef TT_CORE_ERR_H
#define TT_CORE_ERR_H

#include "core/compat.h"

/*
 * Return conventions (docs/principles.md):
 *  - syscall-like functions return 0 on success or -errno;
 *  - parsers return >= 0 bytes consumed, TT_INCOMPLETE when more input is needed, TT_BAD on bad input;
 *  - predicates named as questions return bool.
 */
#define TT_OK         0
#define TT_BAD        (-1)
#define TT_INCOMPLETE (-2)

/**
 * Why a connection was closed. Every closed connection records exactly one (DESIGN.md, "The connection
 * lifecycle"); metrics count them and the access log prints tt_close_reason_name().
 */
typedef enum tt_close_reason {
    TT_CLOSE_NONE = 0,                /* still open: the keep-alive decision "keep" */
    TT_CLOSE_CLIENT_CLOSE,            /* peer asked (Connection: close, HTTP/1.0 without keep-alive) or sent FIN */
    TT_CLOSE_IDLE_TIMEOUT,            /* idle timeout between requests expired, or is 0 (keep-alive off) */
    TT_CLOSE_MAX_REQUESTS,            /* served its max requests per connection */
    TT_CLOSE_MAX_LIFETIME,            /* older than the max connection lifetime at a request boundary */
    TT_CLOSE_HEADER_TIMEOUT,          /* request head not complete within the header timeout */
    TT_CLOSE_BODY_TIMEOUT,            /* no request body byte within the body timeout */
    TT_CLOSE_SEND_TIMEOUT,            /* peer did not accept response bytes within the send timeout */
    TT_CLOSE_BAD_REQUEST,             /* malformed or refused request: a 4xx/5xx was sent and the connection closed */
    TT_CLOSE_EVICTED,                 /* idle connection closed to make room at the connection limit */
    TT_CLOSE_SHUTDOWN,                /* graceful drain or hard shutdown */
    TT_CLOSE_RESET,                   /* ECONNRESET, EPIPE or another socket error */
    TT_CLOSE_TLS_ERROR,               /* TLS handshake or record failure */
    TT_CLOSE_H2_GOAWAY,               /* HTTP/2 session ended by GOAWAY */
    TT_CLOSE_PING_TIMEOUT,            /* HTTP/2 PING not acknowledged in time */
    TT_CLOSE_UNREAD_BODY,             /* the response went out before the request's chunked content could be checked */
    TT_CLOSE_TUNNEL_IDLE,             /* a tunnel (after a 101) moved no byte either way for tunnel_idle_timeout */
    TT_CLOSE_TUNNEL_CLOSED_BY_CLIENT, /* a tunnel ended: the client closed (or reset) its side first */
    TT_CLOSE_TUNNEL_CLOSED_BY_UPSTREAM, /* a tunnel ended: the upstream closed (or reset) its side first */
    TT_CLOSE__COUNT
} tt_close_reason_t;

/** Static lower-case name of `r` ("idle_timeout", "keep" for TT_CLOSE_NONE); never NULL. */
const char *tt_close_reason_name(tt_close_reason_t r);

/** Prints "tether: fatal: <msg>" with file:line to stderr and aborts. The only fatal path in libtether. */
TT_NORETURN TT_PRINTF(3, 4) void tt__fatal(const char *file, int line, const char *fmt, ...);
#define tt_fatal(...) tt__fatal(__FILE__, __LINE__, __VA_ARGS__)

/** Aborts with file:line when `cond` holds: for states that are bugs, never for bad input. */
#define TT_BUG_ON(cond)                                                         \
    do {                                                                        \
        if (TT_UNLIKELY(cond)) tt__fatal(__FILE__, __LINE__, "BUG: %s", #cond); \
    } while (0)

/** malloc/calloc/realloc that never return NULL (they call tt_fatal on exhaustion). */
void *tt_malloc(size_t n);
void *tt_calloc(size_t count, size_t size);
void *tt_realloc(void *p, size_t n);
/** Duplicates `n` bytes of `s` into a new NUL-terminated string owned by the caller. */
char *tt_strndup(const char *s, size_t n);

#endif
