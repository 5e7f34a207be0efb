/* keepalive.h -- the persistence policy: may this connection serve another request? Pure functions.
 *
 * RFC 9112 9.3 (persistence), 9.6 (tear-down); the `Keep-Alive` field is the de facto extension
 * documented in RFC 2068 19.7.1.1 and by Apache/nginx: `timeout=` seconds, `max=` requests left.
 */
#ifndef TT_HTTP_KEEPALIVE_H
#define TT_HTTP_KEEPALIVE_H

#include "core/err.h"

/** The limits of one listener. */
typedef struct tt_ka_policy {
    uint64_t idle_timeout_ms; /* ms between requests; 0 turns keep-alive off */
    uint32_t max_requests;    /* requests per connection; 0 = unlimited */
    uint64_t max_lifetime_ms; /* ms from accept; 0 = unlimited; checked at request boundaries */
} tt_ka_policy_t;

/** What is known about a connection when a response head is about to be written. */
typedef struct tt_ka_state {
    int minor_version;    /* request HTTP/1.minor */
    unsigned conn_tokens; /* TT_H1_CONN_* of the request */
    bool close_delimited; /* the response body ends with the connection */
    bool unread_body;     /* request content is still to come as the response is committed: chunked content
                             unchecked, or content an asynchronous handler (the proxy) answered early */
    bool error_close;     /* the request was refused in a way that loses framing (400, 413, ...) */
    bool draining;        /* the server is shutting down gracefully */
    uint32_t requests;    /* requests on this connection, this one included (>= 1) */
    uint64_t age_ms;      /* ms since accept */
} tt_ka_state_t;

/**
 * Decides whether the connection stays open after this response: TT_CLOSE_NONE to keep it, otherwise
 * the single reason it closes, checked in this order: bad_request, shutdown, client_close (HTTP/1.1
 * `Connection: close`, HTTP/1.0 without `keep-alive`, close-delimited body), unread_body (the framing of the
 * content still to come cannot be checked before this response: a response must never advertise a persistence
 * the connection may not have, RFC 9112 9.3), idle_timeout (keep-alive off), max_requests, max_lifetime.
 */
tt_close_reason_t tt_keepalive_decide(const tt_ka_policy_t *p, const tt_ka_state_t *s);

/** Requests the connection may still serve after this one (the `max=` value); UINT32_MAX when unlimited. */
uint32_t tt_keepalive_left(const tt_ka_policy_t *p, uint32_t requests);

/**
 * The idle timeout under connection pressure, ms: `idle_ms` while `open` <= 75 % of `max`; above, it falls
 * linearly to 1000 ms at 100 % (never below 1000 ms, never above `idle_ms`). `max` 0 means no limit.
 */
uint64_t tt_keepalive_pressure_idle(uint64_t idle_ms, uint32_t open, uint32_t max);

/** Most idle timeout values one policy arms (the configured one and the shrunk steps). */
#define TT_KA_MAX_BUCKETS 32

/**
 * Fills `out` (TT_KA_MAX_BUCKETS entries) with the ascending idle timeouts, ms, that a connection of this
 * policy may be armed with: `idle_ms` itself and whole seconds from 1 s below it (at most 31, evenly
 * spread). Returns how many. Each value gets its own timeout queue, so every connection in a queue
 * shares one timeout and the value advertised in `Keep-Alive: timeout=` is exactly the one armed.
 */
size_t tt_keepalive_buckets(uint64_t idle_ms, uint64_t *out);

/** Index of the largest bucket <= `want_ms` (0 when all are larger). */
size_t tt_keepalive_pick_bucket(const uint64_t *buckets, size_t n, uint64_t want_ms);

#endif
