/* metrics.c -- histogram observation and the Prometheus text renderer */
#include "metrics/metrics.h"

#include <stdarg.h>

const uint64_t tt_hist_reqs_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000};
const size_t tt_hist_reqs_nbounds = TT_ARRAY_SIZE(tt_hist_reqs_bounds);
const char *const tt_goaway_reason_names[TT_GOAWAY__COUNT] = {
    "max_requests", "max_lifetime",      "shutdown",       "idle_timeout",
    "evicted",      "enhance_your_calm", "protocol_error", "other_error",
};

const uint64_t tt_hist_idle_bounds[] = {1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000};
const size_t tt_hist_idle_nbounds = TT_ARRAY_SIZE(tt_hist_idle_bounds);

void tt_hist_observe(tt_hist_t *h, const uint64_t *bounds, size_t nbounds, uint64_t v)
{
    size_t i = 0;
    while (i < nbounds && v > bounds[i]) i++;
    tt_counter_add(&h->bucket[i], 1);
    tt_counter_add(&h->count, 1);
    tt_counter_add(&h->sum, v);
}

void tt_metrics_count_status(tt_metrics_shard_t *m, int status)
{
    int c = status / 100 - 1;
    if (c >= 0 && c < TT_STATUS_CLASSES) tt_counter_add(&m->requests[c], 1);
}

void tt_metrics_printf(char **out, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*out ? *out + *len : NULL, *out ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (*out && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        *cap = TT_MAX(*cap * 2, *len + (size_t)n + 4096);
        *out = tt_realloc(*out, *cap);
    }
}

void tt_metrics_json_str(char **out, size_t *len, size_t *cap, const char *s)
{
    tt_metrics_printf(out, len, cap, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            tt_metrics_printf(out, len, cap, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            tt_metrics_printf(out, len, cap, "\\u%04x", *p);
        else
            tt_metrics_printf(out, len, cap, "%c", *p);
    }
    tt_metrics_printf(out, len, cap, "\"");
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static uint64_t sum_counter(tt_metrics_shard_t *const *s, size_t n, size_t off)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v += LOAD(*(tt_counter_t *)(void *)((char *)s[i] + off));
    return v;
}

static int64_t sum_gauge(tt_metrics_shard_t *const *s, size_t n, size_t off)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) v += LOAD(*(tt_gauge_t *)(void *)((char *)s[i] + off));
    return v;
}

#define SUMC(field) sum_counter(shards, n, offsetof(tt_metrics_shard_t, field))
#define SUMG(field) sum_gauge(shards, n, offsetof(tt_metrics_shard_t, field))

static void render_hist(char **out, size_t *len, size_t *cap, tt_metrics_shard_t *const *shards, size_t n, size_t off,
                        const uint64_t *bounds, size_t nb, const char *name, const char *help, double scale)
{
    tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t b = 0; b <= nb; b++) {
        for (size_t i = 0; i < n; i++) cum += LOAD(((tt_hist_t *)(void *)((char *)shards[i] + off))->bucket[b]);
        if (b < nb)
            tt_metrics_printf(out, len, cap, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds[b] * scale,
                              (unsigned long long)cum);
        else
            tt_metrics_printf(out, len, cap, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    uint64_t count = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        const tt_hist_t *h = (const tt_hist_t *)(const void *)((const char *)shards[i] + off);
        count += LOAD(h->count);
        sum += LOAD(h->sum);
    }
    tt_metrics_printf(out, len, cap, "%s_sum %g\n%s_count %llu\n", name, (double)sum * scale, name,
                      (unsigned long long)count);
}

void tt_metrics_render(tt_metrics_shard_t *const *shards, size_t n, char **out, size_t *len, size_t *cap)
{
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_connections_accepted_total Client connections accepted.\n"
                      "# TYPE tether_connections_accepted_total counter\n"
                      "tether_connections_accepted_total %llu\n"
                      "# HELP tether_connections_open Client connections open now.\n"
                      "# TYPE tether_connections_open gauge\n"
                      "tether_connections_open %lld\n"
                      "# HELP tether_connections_idle Client connections idle between requests now.\n"
                      "# TYPE tether_connections_idle gauge\n"
                      "tether_connections_idle %lld\n",
                      (unsigned long long)SUMC(conn_accepted), (long long)SUMG(conn_open), (long long)SUMG(conn_idle));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_connections_closed_total Client connections closed, by reason.\n"
                      "# TYPE tether_connections_closed_total counter\n");
    for (int r = 1; r < TT_CLOSE__COUNT; r++)
        tt_metrics_printf(out, len, cap, "tether_connections_closed_total{reason=\"%s\"} %llu\n",
                          tt_close_reason_name((tt_close_reason_t)r), (unsigned long long)SUMC(conn_closed[r]));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_requests_total Responses sent, by status class.\n"
                      "# TYPE tether_requests_total counter\n");
    for (int c = 0; c < TT_STATUS_CLASSES; c++)
        tt_metrics_printf(out, len, cap, "tether_requests_total{class=\"%dxx\"} %llu\n", c + 1,
                          (unsigned long long)SUMC(requests[c]));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_accept_pauses_total Times accepting paused at the connection limit.\n"
                      "# TYPE tether_accept_pauses_total counter\n"
                      "tether_accept_pauses_total %llu\n"
                      "# HELP tether_accept_paused Workers not accepting now (at the limit, nothing idle to evict).\n"
                      "# TYPE tether_accept_paused gauge\n"
                      "tether_accept_paused %lld\n"
                      "# HELP tether_buffers_in_use Connection buffers checked out of the worker pools.\n"
                      "# TYPE tether_buffers_in_use gauge\n"
                      "tether_buffers_in_use %lld\n"
                      "# HELP tether_idle_timeout_cuts_total Idle timeouts armed below idle_timeout under connection "
                      "pressure (above 75 %% of max_connections).\n"
                      "# TYPE tether_idle_timeout_cuts_total counter\n"
                      "tether_idle_timeout_cuts_total %llu\n",
                      (unsigned long long)SUMC(accept_pauses), (long long)SUMG(accept_paused),
                      (long long)SUMG(buffers_in_use), (unsigned long long)SUMC(idle_timeout_cuts));
    static const char *const protos[2] = {"h1", "h2"}, *const transports[2] = {"tcp", "tls"};
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_connections_open_by Client connections open now, by protocol and transport.\n"
                      "# TYPE tether_connections_open_by gauge\n");
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < 2; t++)
            tt_metrics_printf(out, len, cap, "tether_connections_open_by{protocol=\"%s\",transport=\"%s\"} %lld\n",
                              protos[p], transports[t], (long long)SUMG(conn_open_by[p][t]));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_tls_handshakes_total Completed TLS handshakes, full or resumed.\n"
                      "# TYPE tether_tls_handshakes_total counter\n"
                      "tether_tls_handshakes_total{kind=\"full\"} %llu\n"
                      "tether_tls_handshakes_total{kind=\"resumed\"} %llu\n"
                      "# HELP tether_tls_handshake_failures_total Failed or abandoned TLS handshakes.\n"
                      "# TYPE tether_tls_handshake_failures_total counter\n"
                      "tether_tls_handshake_failures_total %llu\n",
                      (unsigned long long)SUMC(tls_handshakes[0]), (unsigned long long)SUMC(tls_handshakes[1]),
                      (unsigned long long)SUMC(tls_failures));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_h2_goaway_sent_total GOAWAY frames tether sent, by reason.\n"
                      "# TYPE tether_h2_goaway_sent_total counter\n");
    for (int r = 0; r < TT_GOAWAY__COUNT; r++)
        tt_metrics_printf(out, len, cap, "tether_h2_goaway_sent_total{reason=\"%s\"} %llu\n", tt_goaway_reason_names[r],
                          (unsigned long long)SUMC(h2_goaway_sent[r]));
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_h2_refused_streams_total Streams beyond SETTINGS_MAX_CONCURRENT_STREAMS, reset "
                      "with REFUSED_STREAM.\n"
                      "# TYPE tether_h2_refused_streams_total counter\n"
                      "tether_h2_refused_streams_total %llu\n",
                      (unsigned long long)SUMC(h2_refused_streams));
    render_hist(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, h2_streams_per_conn), tt_hist_reqs_bounds,
                tt_hist_reqs_nbounds, "tether_h2_streams_per_connection",
                "Requests (streams) served per HTTP/2 connection, observed at close.", 1.0);
    render_hist(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, h2_ping_rtt_ms), tt_hist_idle_bounds,
                tt_hist_idle_nbounds, "tether_h2_ping_rtt_seconds", "Round trip of tether's HTTP/2 PINGs.", 0.001);
    render_hist(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, reqs_per_conn), tt_hist_reqs_bounds,
                tt_hist_reqs_nbounds, "tether_requests_per_connection",
                "Requests served per client connection, observed at close.", 1.0);
    render_hist(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, idle_gap_ms), tt_hist_idle_bounds,
                tt_hist_idle_nbounds, "tether_idle_gap_seconds",
                "Idle time of a persistent connection before its next request arrived.", 0.001);
}
