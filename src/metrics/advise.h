/* advise.h -- the advisor: live counters (a parsed /metrics snapshot) into concrete settings
 *
 * `tether advise` and the status page's panel both call tt_advise() on a snapshot of the Prometheus text
 * (snapshot.h), so they say the same thing. Each piece of advice names the configuration key, the section it
 * lives in, its current value and the suggested one, and a reason that quotes the numbers it rests on. A
 * metric that is absent (an older tether, a feature not built) gives no advice rather than a guess.
 *
 * What it reads (docs/observability.md): per listener tether_listener_idle_timeout_seconds{listener,group},
 * tether_idle_gap_seconds (reuse gaps), tether_close_races_total{listener,reason} and
 * tether_close_race_gap_seconds{listener} (races a client in front ran against our idle close),
 * tether_connections_closed_total{reason="evicted"}, tether_accept_pauses_total, tether_max_connections,
 * tether_connections_idle; per upstream the pool's configuration gauges (tether_upstream_pool_idle_timeout_seconds,
 * tether_upstream_max_idle, tether_upstream_tcp_keepalive_seconds), the hinted and learned idle timeouts,
 * retirements, open reasons, replays and generated 502/503/504s.
 */
#ifndef TT_METRICS_ADVISE_H
#define TT_METRICS_ADVISE_H

#include "metrics/snapshot.h"

/** How much a piece of advice asks for. */
typedef enum tt_advice_level {
    TT_ADVICE_OK = 0,     /* the numbers agree with the setting: said so, with the numbers */
    TT_ADVICE_NOTE = 1,   /* worth knowing; the setting may stay (suggested = current) */
    TT_ADVICE_CHANGE = 2, /* change `key` from `current` to `suggested` */
} tt_advice_level_t;

/** Static name of `l` ("ok", "note", "change"). */
const char *tt_advice_level_name(tt_advice_level_t l);

/** One piece of advice; every string is NUL-terminated (cut to fit). */
typedef struct tt_advice {
    tt_advice_level_t level;
    char scope[16];     /* "listener", "upstream", "server" */
    char name[128];     /* the listener's address, the upstream's name, "" for the server */
    char section[160];  /* where `key` is set: "[keepalive]", "[listen NAME]", "[upstream api]", "[server]" */
    char key[32];       /* "idle_timeout", "max_connections", "max_idle", "tcp_keepalive", ... */
    char current[48];   /* in config syntax: "5s", "128", "off", "15s:5s:3" */
    char suggested[48]; /* likewise; equal to `current` for ok and note */
    char reason[640];   /* one or two sentences with the numbers used */
} tt_advice_t;

/** Fewer observations than this in a histogram give no percentile advice (too few to mean anything). */
#define TT_ADVISE_MIN_SAMPLES 20
/** What one idle client connection costs, bytes (tether's struct, the kernel socket and its minimal buffers):
 *  the unit of the memory estimates. Idle connections hold no tether buffers (docs/design.md). */
#define TT_ADVISE_IDLE_CONN_BYTES 4096
/** The shortest client idle timeout the advisor suggests when reuse gaps are far below the configured one, s. */
#define TT_ADVISE_MIN_IDLE_S 5
/** NAT and firewall entries typically forget idle flows after 30 to 120 s; TCP keepalive should probe sooner. */
#define TT_ADVISE_NAT_IDLE_S 30

/**
 * Reads snapshot `s` and writes up to `max` pieces of advice into `out`, listeners first (in the order their
 * idle timeout gauges appear), then upstreams, then the server. Returns how many were written. Pure: no I/O, no
 * clock, no allocation; any thread.
 */
size_t tt_advise(const tt_snapshot_t *s, tt_advice_t *out, size_t max);

/** Appends `n` pieces of advice as text for a terminal (one block per scope) to a growable string (as in
 *  tt_metrics_printf; the caller frees). */
void tt_advice_render_text(const tt_advice_t *a, size_t n, char **out, size_t *len, size_t *cap);
/** Appends them as a JSON array of objects {level, scope, name, section, key, current, suggested, reason}. */
void tt_advice_render_json(const tt_advice_t *a, size_t n, char **out, size_t *len, size_t *cap);

/** Formats a duration in seconds as a config value: "250ms", "5s", "65s", "1.5s"; "0" for 0. Returns `buf`. */
char *tt_advise_fmt_dur(char *buf, size_t n, double seconds);

#endif
