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

const uint64_t tt_hist_lat_bounds[] = {500,    1000,   2500,    5000,    10000,   25000,    50000,    100000,
                                       250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
const size_t tt_hist_lat_nbounds = TT_ARRAY_SIZE(tt_hist_lat_bounds);

const uint64_t tt_hist_life_bounds[] = {10,     100,    1000,    5000,    10000,   30000,    60000,
                                        300000, 600000, 1800000, 3600000, 7200000, 21600000, 86400000};
const size_t tt_hist_life_nbounds = TT_ARRAY_SIZE(tt_hist_life_bounds);

_Static_assert(TT_ARRAY_SIZE(tt_hist_lat_bounds) < TT_HIST_MAX_BUCKETS, "latency bounds fit a tt_hist_t");
_Static_assert(TT_ARRAY_SIZE(tt_hist_life_bounds) < TT_HIST_MAX_BUCKETS, "lifetime bounds fit a tt_hist_t");

static _Atomic int64_t start_time_s;

void tt_metrics_set_start_time(int64_t unix_s)
{
    int64_t zero = 0;
    atomic_compare_exchange_strong(&start_time_s, &zero, unix_s);
}

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

void tt_metrics_conn_closed(tt_metrics_shard_t *m, tt_close_reason_t reason, uint64_t lifetime_ms, uint64_t requests)
{
    tt_hist_observe(&m->conn_lifetime_ms[reason], tt_hist_life_bounds, tt_hist_life_nbounds, lifetime_ms);
    tt_hist_observe(&m->conn_requests[reason], tt_hist_reqs_bounds, tt_hist_reqs_nbounds, requests);
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

void tt_metrics_render_hist(char **out, size_t *len, size_t *cap, const char *name, const char *labels,
                            const tt_hist_t *const *h, size_t n, const uint64_t *bounds, size_t nb, double scale)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t b = 0; b <= nb; b++) {
        for (size_t i = 0; i < n; i++) cum += LOAD(h[i]->bucket[b]);
        if (b < nb)
            tt_metrics_printf(out, len, cap, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                              (double)bounds[b] * scale, (unsigned long long)cum);
        else
            tt_metrics_printf(out, len, cap, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                              (unsigned long long)cum);
    }
    uint64_t count = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        count += LOAD(h[i]->count);
        sum += LOAD(h[i]->sum);
    }
    const char *lb = labels[0] ? "{" : "", *rb = labels[0] ? "}" : "";
    tt_metrics_printf(out, len, cap, "%s_sum%s%s%s %.9g\n%s_count%s%s%s %llu\n", name, lb, labels, rb,
                      (double)sum * scale, name, lb, labels, rb, (unsigned long long)count);
}

/* The histogram at byte offset `off` of each shard, for tt_metrics_render_hist(); the caller frees. */
static const tt_hist_t **shard_hists(tt_metrics_shard_t *const *shards, size_t n, size_t off)
{
    const tt_hist_t **h = tt_malloc((n ? n : 1) * sizeof(*h));
    for (size_t i = 0; i < n; i++) h[i] = (const tt_hist_t *)(const void *)((const char *)shards[i] + off);
    return h;
}

static void render_help(char **out, size_t *len, size_t *cap, const char *name, const char *type, const char *help)
{
    tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_hist(char **out, size_t *len, size_t *cap, tt_metrics_shard_t *const *shards, size_t n, size_t off,
                        const uint64_t *bounds, size_t nb, const char *name, const char *help, double scale)
{
    render_help(out, len, cap, name, "histogram", help);
    const tt_hist_t **h = shard_hists(shards, n, off);
    tt_metrics_render_hist(out, len, cap, name, "", h, n, bounds, nb, scale);
    free(h);
}

/* A per-reason histogram: a series for each close reason that closed a connection. */
static void render_hist_by_reason(char **out, size_t *len, size_t *cap, tt_metrics_shard_t *const *shards, size_t n,
                                  size_t off0, const uint64_t *bounds, size_t nb, const char *name, const char *help,
                                  double scale)
{
    render_help(out, len, cap, name, "histogram", help);
    for (int r = 1; r < TT_CLOSE__COUNT; r++) {
        const tt_hist_t **h = shard_hists(shards, n, off0 + (size_t)r * sizeof(tt_hist_t));
        uint64_t count = 0;
        for (size_t i = 0; i < n; i++) count += LOAD(h[i]->count);
        if (count > 0) {
            char labels[64];
            snprintf(labels, sizeof(labels), "reason=\"%s\"", tt_close_reason_name((tt_close_reason_t)r));
            tt_metrics_render_hist(out, len, cap, name, labels, h, n, bounds, nb, scale);
        }
        free(h);
    }
}

/* `s` as a label value: backslash, double quote and newline escaped (Prometheus text format 0.0.4). */
static void label_value(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            dst[o++] = '\\';
            dst[o++] = *s == '\n' ? 'n' : *s;
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = '\0';
}

static const char *listener_name(const tt_listener_metrics_t *l)
{
    return l->name ? l->name : "default";
}

/* The first index of each listener name: listeners of one [listen NAME] (one per address) are summed under it. */
static bool first_of_name(const tt_metrics_shard_t *s0, size_t l)
{
    for (size_t j = 0; j < l; j++)
        if (strcmp(listener_name(&s0->listeners[j]), listener_name(&s0->listeners[l])) == 0) return false;
    return true;
}

/* Collects into `h` the histogram at byte offset `off` of every listener named like listener `l`, in every shard. */
static size_t listener_hists(tt_metrics_shard_t *const *shards, size_t n, size_t l, size_t off, const tt_hist_t **h)
{
    const char *name = listener_name(&shards[0]->listeners[l]);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = l; j < shards[i]->nlisteners; j++)
            if (strcmp(listener_name(&shards[i]->listeners[j]), name) == 0)
                h[k++] = (const tt_hist_t *)(const void *)((const char *)&shards[i]->listeners[j] + off);
    return k;
}

static void render_listeners(char **out, size_t *len, size_t *cap, tt_metrics_shard_t *const *shards, size_t n)
{
    static const char *const protos[2] = {"http1", "h2"};
    static const tt_close_reason_t race_reasons[] = {TT_CLOSE_IDLE_TIMEOUT, TT_CLOSE_EVICTED, TT_CLOSE_MAX_REQUESTS,
                                                     TT_CLOSE_MAX_LIFETIME};
    size_t nl = n ? shards[0]->nlisteners : 0;
    const tt_hist_t **h = tt_malloc(TT_MAX(n * nl, (size_t)1) * sizeof(*h));
    char lv[128], labels[192];
    render_help(out, len, cap, "tether_request_duration_seconds", "histogram",
                "Time from a request's first byte to its response being complete, by listener and protocol.");
    for (size_t l = 0; l < nl; l++) {
        if (!first_of_name(shards[0], l)) continue;
        label_value(lv, sizeof(lv), listener_name(&shards[0]->listeners[l]));
        for (int p = 0; p < 2; p++) {
            size_t k = listener_hists(shards, n, l, offsetof(tt_listener_metrics_t, request_us[p]), h);
            snprintf(labels, sizeof(labels), "listener=\"%s\",protocol=\"%s\"", lv, protos[p]);
            tt_metrics_render_hist(out, len, cap, "tether_request_duration_seconds", labels, h, k, tt_hist_lat_bounds,
                                   tt_hist_lat_nbounds, 1e-6);
        }
    }
    render_help(out, len, cap, "tether_close_races_total", "counter",
                "Requests that arrived on a connection tether was closing (in the race window after its FIN), by "
                "listener and the reason of the close.");
    for (size_t l = 0; l < nl; l++) {
        if (!first_of_name(shards[0], l)) continue;
        const char *name = listener_name(&shards[0]->listeners[l]);
        label_value(lv, sizeof(lv), name);
        for (size_t r = 0; r < TT_ARRAY_SIZE(race_reasons); r++) {
            uint64_t v = 0;
            for (size_t i = 0; i < n; i++)
                for (size_t j = l; j < shards[i]->nlisteners; j++)
                    if (strcmp(listener_name(&shards[i]->listeners[j]), name) == 0)
                        v += LOAD(shards[i]->listeners[j].races[race_reasons[r]]);
            tt_metrics_printf(out, len, cap, "tether_close_races_total{listener=\"%s\",reason=\"%s\"} %llu\n", lv,
                              tt_close_reason_name(race_reasons[r]), (unsigned long long)v);
        }
    }
    render_help(out, len, cap, "tether_close_race_gap_seconds", "histogram",
                "Time from the last response's end to the first byte of a request that raced tether's close.");
    for (size_t l = 0; l < nl; l++) {
        if (!first_of_name(shards[0], l)) continue;
        label_value(lv, sizeof(lv), listener_name(&shards[0]->listeners[l]));
        size_t k = listener_hists(shards, n, l, offsetof(tt_listener_metrics_t, race_gap_ms), h);
        snprintf(labels, sizeof(labels), "listener=\"%s\"", lv);
        tt_metrics_render_hist(out, len, cap, "tether_close_race_gap_seconds", labels, h, k, tt_hist_idle_bounds,
                               tt_hist_idle_nbounds, 0.001);
    }
    free(h);
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
                      "tether_connections_idle %lld\n"
                      "# HELP tether_connections_racing Client connections tether closed that are in their race window "
                      "now.\n"
                      "# TYPE tether_connections_racing gauge\n"
                      "tether_connections_racing %lld\n",
                      (unsigned long long)SUMC(conn_accepted), (long long)SUMG(conn_open), (long long)SUMG(conn_idle),
                      (long long)SUMG(conn_racing));
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
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_tunnels_open Client connections that are byte tunnels now (after a 101).\n"
                      "# TYPE tether_tunnels_open gauge\n"
                      "tether_tunnels_open %lld\n",
                      (long long)SUMG(tunnels_open));
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
    render_listeners(out, len, cap, shards, n);
    static const char *const hs_labels[2] = {"resumed=\"false\"", "resumed=\"true\""};
    render_help(out, len, cap, "tether_tls_handshake_seconds", "histogram",
                "Client TLS handshakes, from accept to the handshake done, full or resumed.");
    for (int k = 0; k < 2; k++) {
        const tt_hist_t **h = shard_hists(shards, n, offsetof(tt_metrics_shard_t, tls_handshake_us[k]));
        tt_metrics_render_hist(out, len, cap, "tether_tls_handshake_seconds", hs_labels[k], h, n, tt_hist_lat_bounds,
                               tt_hist_lat_nbounds, 1e-6);
        free(h);
    }
    render_hist_by_reason(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, conn_lifetime_ms), tt_hist_life_bounds,
                          tt_hist_life_nbounds, "tether_connection_lifetime_seconds",
                          "Client connection lifetime, accept to close, by close reason.", 0.001);
    render_hist_by_reason(out, len, cap, shards, n, offsetof(tt_metrics_shard_t, conn_requests), tt_hist_reqs_bounds,
                          tt_hist_reqs_nbounds, "tether_connection_requests",
                          "Requests (HTTP/2: streams) served per client connection, by close reason.", 1.0);
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_build_info Version of the running tether (always 1).\n"
                      "# TYPE tether_build_info gauge\n"
                      "tether_build_info{version=\"%s\"} 1\n"
                      "# HELP tether_start_time_seconds Start time of the process since the Unix epoch.\n"
                      "# TYPE tether_start_time_seconds gauge\n"
                      "tether_start_time_seconds %lld\n",
                      TETHER_VERSION, (long long)atomic_load(&start_time_s));
}
