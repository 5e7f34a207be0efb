/* metrics.h -- per-worker metric shards, written lock-free by their worker, summed when scraped
 *
 * Each worker owns one shard and is its only writer; the scraping thread only reads. Counters are
 * relaxed atomics updated with load+store (no read-modify-write: one writer), so an update costs what a
 * plain increment costs and a scrape never sees a torn value.
 */
#ifndef TT_METRICS_METRICS_H
#define TT_METRICS_METRICS_H

#include "core/err.h"

#include <stdatomic.h>

typedef _Atomic uint64_t tt_counter_t;
typedef _Atomic int64_t tt_gauge_t;

/** Adds `n` to a counter or gauge; owning worker only. */
static inline void tt_counter_add(tt_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void tt_gauge_add(tt_gauge_t *g, int64_t n)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void tt_gauge_set(tt_gauge_t *g, int64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

/** Bucket upper bounds of the histograms (the last bucket is +Inf). */
#define TT_HIST_MAX_BUCKETS 17
typedef struct tt_hist {
    tt_counter_t bucket[TT_HIST_MAX_BUCKETS]; /* non-cumulative counts; index nbounds is +Inf */
    tt_counter_t count;
    tt_counter_t sum; /* in the histogram's unit (requests, ms) */
} tt_hist_t;

/** Requests served per connection, observed at close: 1 2 5 10 20 50 100 200 500 1000 5000 +Inf. */
extern const uint64_t tt_hist_reqs_bounds[];
extern const size_t tt_hist_reqs_nbounds;
/** Idle gap before a connection was reused, ms: 1 5 10 50 100 250 500 1000 2500 5000 10000 30000 60000 120000 +Inf. */
extern const uint64_t tt_hist_idle_bounds[];
extern const size_t tt_hist_idle_nbounds;

/** Latencies, us: 500 1000 2500 5000 10000 25000 50000 100000 250000 500000 1e6 2.5e6 5e6 1e7 3e7 6e7 +Inf
 *  (0.5 ms to 60 s, about x2.5 a step): request durations, upstream timings, TLS handshakes. */
extern const uint64_t tt_hist_lat_bounds[];
extern const size_t tt_hist_lat_nbounds;
/** Connection lifetimes, ms: 10 100 1000 5000 10000 30000 60000 300000 600000 1800000 3600000 7200000 21600000
 *  86400000 +Inf (10 ms to a day). */
extern const uint64_t tt_hist_life_bounds[];
extern const size_t tt_hist_life_nbounds;

/** Protocols and transports of open connections (tether_connections_open_by). */
enum { TT_PROTO_H1 = 0, TT_PROTO_H2 = 1 };

/** Why tether sent a GOAWAY (tether_h2_goaway_sent_total{reason}). */
typedef enum tt_goaway_reason {
    TT_GOAWAY_MAX_REQUESTS = 0,
    TT_GOAWAY_MAX_LIFETIME,
    TT_GOAWAY_SHUTDOWN,
    TT_GOAWAY_IDLE_TIMEOUT,
    TT_GOAWAY_EVICTED,
    TT_GOAWAY_ENHANCE_YOUR_CALM,
    TT_GOAWAY_PROTOCOL_ERROR,
    TT_GOAWAY_OTHER_ERROR,
    TT_GOAWAY__COUNT
} tt_goaway_reason_t;
extern const char *const tt_goaway_reason_names[TT_GOAWAY__COUNT];

/** HTTP/2 streams per connection: 1 2 5 10 20 50 100 200 500 1000 5000 +Inf (same bounds as requests). */
/** PING round trips, ms: 1 5 10 50 100 250 500 1000 ... (the idle bounds). */

/** Status classes counted: 1xx..5xx. */
#define TT_STATUS_CLASSES 5

/** Listener names a server keeps metrics for (the last slot, "other", takes every name past them). */
#define TT_LISTENER_METRICS_MAX 64

/** What one worker counts for one listener (tt_listener_conf_t); listeners of one `[listen NAME]` group share
 *  the name and are summed under it. */
typedef struct tt_listener_metrics {
    const char *name;        /* "default" for [listen]; owned by the server, set before the slot is counted */
    tt_hist_t request_us[2]; /* request duration by TT_PROTO_*, us (tt_hist_lat_bounds) */
    tt_counter_t races[TT_CLOSE__COUNT]; /* requests that arrived in the race window, by the close that began it */
    tt_hist_t race_gap_ms;               /* last response's end to the racing request's first byte, ms (idle bounds) */
} tt_listener_metrics_t;

/** One worker's metrics. Zero-initialise it. */
typedef struct tt_metrics_shard {
    tt_counter_t conn_accepted;
    tt_gauge_t conn_open;
    tt_gauge_t conn_idle;
    tt_gauge_t conn_racing; /* closed by tether, in their race window (still holding a descriptor) */
    tt_counter_t conn_closed[TT_CLOSE__COUNT];
    tt_counter_t requests[TT_STATUS_CLASSES];
    tt_counter_t accept_pauses;
    tt_gauge_t accept_paused;
    tt_gauge_t buffers_in_use;
    tt_hist_t reqs_per_conn;
    tt_hist_t idle_gap_ms;
    tt_gauge_t conn_open_by[2][2];  /* [TT_PROTO_*][0 tcp, 1 tls] */
    tt_counter_t tls_handshakes[2]; /* [0 full, 1 resumed] */
    tt_counter_t tls_failures;
    tt_hist_t h2_streams_per_conn;
    tt_counter_t h2_goaway_sent[TT_GOAWAY__COUNT];
    tt_counter_t h2_refused_streams; /* streams over h2_max_concurrent_streams, reset with REFUSED_STREAM */
    tt_hist_t h2_ping_rtt_ms;
    tt_counter_t idle_timeout_cuts;              /* idle timeouts armed below idle_timeout under connection pressure */
    tt_hist_t tls_handshake_us[2];               /* accept to handshake done, us: [0 full, 1 resumed] */
    tt_hist_t conn_lifetime_ms[TT_CLOSE__COUNT]; /* accept to close, by close reason (tt_hist_life_bounds) */
    tt_hist_t conn_requests[TT_CLOSE__COUNT];    /* requests (h2: streams) served, by close reason */
    tt_listener_metrics_t *listeners; /* [TT_LISTENER_METRICS_MAX], one per listener name: owned by the server */
    _Atomic size_t nlisteners;        /* slots in use; grows when a reload adds a listener name (release store) */
    tt_gauge_t tunnels_open;          /* client connections that are byte tunnels now (after a 101) */
} tt_metrics_shard_t;

/** Adds `v` to histogram `h` with the given bounds; owning worker only. */
void tt_hist_observe(tt_hist_t *h, const uint64_t *bounds, size_t nbounds, uint64_t v);
/** Counts a response of `status` by class. */
void tt_metrics_count_status(tt_metrics_shard_t *m, int status);

/** Counts a closed connection's lifetime and requests under its close reason; owning worker only. */
void tt_metrics_conn_closed(tt_metrics_shard_t *m, tt_close_reason_t reason, uint64_t lifetime_ms, uint64_t requests);

/** Records the process start (wall-clock seconds since the epoch) for tether_start_time_seconds; the first call
 *  wins, later ones are ignored. Any thread. */
void tt_metrics_set_start_time(int64_t unix_s);

/**
 * Appends the `_bucket`, `_sum` and `_count` lines of histogram `name` (no # HELP or # TYPE) summed over the `n`
 * histograms `h` (each from its own shard), with the label pairs `labels` (`a="x",b="y"`, or "" for none) before
 * `le`. Values are multiplied by `scale` (e.g. 1e-6 for us to seconds). Any thread. Grows `*out` as
 * tt_metrics_printf() does.
 */
void tt_metrics_render_hist(char **out, size_t *len, size_t *cap, const char *name, const char *labels,
                            const tt_hist_t *const *h, size_t n, const uint64_t *bounds, size_t nbounds, double scale);

/**
 * Appends the Prometheus text exposition (format 0.0.4) of the sum of `n` shards to the growable string
 * `*out` (`*len` bytes used, `*cap` allocated; realloc'd as needed, caller frees). Any thread.
 */
void tt_metrics_render(tt_metrics_shard_t *const *shards, size_t n, char **out, size_t *len, size_t *cap);

/** printf-append to a growable string (as in tt_metrics_render); for other renderers of metrics. */
TT_PRINTF(4, 5) void tt_metrics_printf(char **out, size_t *len, size_t *cap, const char *fmt, ...);
/** Appends `s` as a JSON string (RFC 8259 7: quotes, backslash and control bytes escaped) to a growable string. */
void tt_metrics_json_str(char **out, size_t *len, size_t *cap, const char *s);

#endif
