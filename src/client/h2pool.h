/* h2pool.h -- one worker's HTTP/2 connections to one upstream server, shared by many streams
 *
 * As few connections as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows (RFC 9113 6.5.2): a stream goes on the
 * oldest connection with a free slot; another connection is opened only when every open one is full (or has
 * received GOAWAY), up to max_connections; beyond, requests wait in a FIFO queue (max_pending, queue_timeout).
 * A connection that received GOAWAY takes no new stream and leaves the pool when its last stream ends; one
 * without streams for idle_timeout is closed with GOAWAY(NO_ERROR); one that misses a PING (h2client.h) fails
 * with TT_H2C_PING_TIMEOUT. Over TLS the pool keeps the newest session its connections received (taken after each
 * connection's first stream, when TLS 1.3 tickets have come) and offers it to every new connection. Which of the
 * ended streams are replayed is the user's decision (proxy.c).
 * Everything here is for the owning worker's thread.
 */
#ifndef TT_CLIENT_H2POOL_H
#define TT_CLIENT_H2POOL_H

#include "client/h2client.h"
#include "client/pool.h"
#include "core/list.h"
#include "core/timer.h"
#include "metrics/metrics.h"

/** RFC 9113 7 error codes 0x0..0xd get their own GOAWAY series; others count as TT_H2POOL_ERR_OTHER. */
#define TT_H2POOL_ERR_OTHER 14

/** What one server's HTTP/2 pool counts in one worker (relaxed atomics, one writer: the worker). */
typedef struct tt_h2pool_metrics {
    tt_gauge_t conns;    /* connections open or connecting */
    tt_gauge_t streams;  /* streams in flight (kept by the user: proxy.c) */
    tt_counter_t opened; /* connections that reached the server's first SETTINGS (a failed connect is not one) */
    tt_counter_t goaways[TT_H2POOL_ERR_OTHER + 1]; /* GOAWAY frames received, by error code */
    tt_counter_t ping_timeouts;                    /* connections closed because a PING went unanswered */
    tt_counter_t idle_closed;                      /* connections closed with GOAWAY after idle_timeout */
    tt_counter_t dns_retired;       /* connections closed with GOAWAY after their address left the server's set */
    tt_gauge_t ping_rtt_us;         /* the last PING round trip, us */
    tt_counter_t tls_handshakes[2]; /* https://: full [0] and resumed [1] TLS handshakes */
} tt_h2pool_metrics_t;

/** Settings of one pool. */
typedef struct tt_h2pool_conf {
    tt_h2c_conf_t h2;          /* per connection (tls, window, PING, connect timeout); copied */
    uint32_t max_connections;  /* 0: no limit */
    uint32_t max_pending;      /* requests waiting for a stream slot */
    uint64_t queue_timeout_ms; /* longest wait for a slot, ms */
    uint64_t idle_timeout_ms;  /* a connection without streams this long (ms) is closed with GOAWAY */
    bool h1_fallback;          /* `protocol = auto`: a server that answers http/1.1 in ALPN is alive (its HTTP/1.1
                                * pool serves it); else that answer is a failed connect */
    uint64_t alpn_recheck_ms;  /* `auto`: how long (ms) an http/1.1 answer holds before ALPN is asked again; 0: for
                                * the pool's life */
} tt_h2pool_conf_t;

typedef struct tt_h2pool tt_h2pool_t;
typedef struct tt_h2pool_stream tt_h2pool_stream_t;

/** What the user of a stream hears (the stream's events, forwarded from h2client.h). */
typedef struct tt_h2pool_stream_ops {
    /** A connection for the stream: submit on `c` now (tt_h2c_submit with the tt_h2pool_stream_t as stream_data);
     *  or NULL with why: a connect error (a connection that ended before the server's first SETTINGS included),
     *  TT_H2C_NO_H2 (the server chose http/1.1 in ALPN), TT_H2C_TIMEOUT (the queue timeout, or max_pending waiting
     *  already), TT_H2C_DOWN (the server is marked down: tt_h2pool_set_health). Called once per tt_h2pool_acquire,
     * possibly before it returns; the stream is out of the queue when it runs. */
    void (*on_conn)(tt_h2pool_stream_t *s, tt_h2c_t *c, tt_h2c_err_t err);
    void (*on_response)(tt_h2pool_stream_t *s, int status, tt_str_t fields);
    void (*on_data)(tt_h2pool_stream_t *s, const char *data, size_t len);
    void (*on_trailers)(tt_h2pool_stream_t *s, tt_str_t fields);
    void (*on_drain)(tt_h2pool_stream_t *s);
    /** The stream ended (as h2client.h's on_stream_end). The slot is free; the pool holds no pointer to `s`. */
    void (*on_end)(tt_h2pool_stream_t *s, tt_h2c_err_t err, uint32_t h2_error);
} tt_h2pool_stream_ops_t;

/** A request's stream, embedded in the user's exchange (which owns it). */
struct tt_h2pool_stream {
    const tt_h2pool_stream_ops_t *ops;
    /* private */
    tt_list_t _q; /* in the pool's queue while waiting for a slot */
    tt_timer_t _qt;
    tt_h2pool_t *_pool;
    bool _waiting;
};

/** A pool for server `addr` on `loop`; `conf` is copied, `m` (not owned) outlives it. */
tt_h2pool_t *tt_h2pool_new(tt_loop_t *loop, tt_bufpool_t *bufs, const tt_h2pool_conf_t *conf, const tt_addr_t *addr,
                           tt_h2pool_metrics_t *m);
/** Closes every connection at once with GOAWAY(NO_ERROR) (no callback: no stream may be in flight, no request
 *  waiting) and frees the pool (at the end of the turn when a deferred call is queued). */
void tt_h2pool_free(tt_h2pool_t **p);
/** Asks for a stream slot for `s` (its `ops` set): on_conn is called now or later, exactly once, unless
 *  tt_h2pool_cancel comes first. */
void tt_h2pool_acquire(tt_h2pool_t *p, tt_h2pool_stream_t *s);
/** Gives up a waiting acquire; a no-op when `s` is not waiting. */
void tt_h2pool_cancel(tt_h2pool_stream_t *s);
/** The server's name now resolves to the `n` addresses of `addrs` (copied; n > 0, else nothing changes), as
 *  tt_pool_set_addrs does for HTTP/1.1: new connections keep going to the address they went to while it is still in
 *  the set, else to the first of `addrs`. A connection to an address not in the set is retired: it takes no new
 *  stream, and once its last stream has ended it is closed with GOAWAY(NO_ERROR) (RFC 9113 6.8), counted in
 *  dns_retired; a stream in flight is never cut. Waiting streams go to a connection to the new set. Without a call
 *  the pool uses the one address it was made with. Never from inside a callback of this pool. */
void tt_h2pool_set_addrs(tt_h2pool_t *p, const tt_addr_t *addrs, size_t n);
/**
 * The server's passive health is kept by `health`, its HTTP/1.1 pool (not owned; it outlives this pool): every
 * connect counts there (a failure: TCP, TLS, or a connection that ends before the server's first SETTINGS; a
 * success: that first SETTINGS), while it is marked down no connection is opened and acquires end with TT_H2C_DOWN,
 * and its probe is an HTTP/2 connection of this pool (tt_pool_set_prober; removed by tt_h2pool_free). Without a call
 * the pool keeps no health. Owning worker only.
 */
void tt_h2pool_set_health(tt_h2pool_t *p, tt_pool_t *health);
/** True while the server (an `auto` upstream over TLS) is taken to speak HTTP/1.1: its last ALPN answer was
 *  http/1.1, less than alpn_recheck_ms ago (tt_h2pool_alpn_fresh). Requests take the HTTP/1.1 pool meanwhile; after
 *  it the next request comes here and a new connection offers h2 again: an origin upgraded to HTTP/2 is followed,
 *  one that answers http/1.1 again holds for another alpn_recheck_ms. Owning worker only. */
bool tt_h2pool_no_h2(const tt_h2pool_t *p);
/** Does an http/1.1 ALPN answer received at `answered_ms` still hold at `now_ms` (loop times, ms), with
 *  `recheck_ms` as alpn_recheck_ms (0: always)? Pure; any thread. */
bool tt_h2pool_alpn_fresh(uint64_t answered_ms, uint64_t now_ms, uint64_t recheck_ms);
/** Connections open or connecting. */
uint32_t tt_h2pool_conns(const tt_h2pool_t *p);

#endif
