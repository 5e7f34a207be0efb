/* conf.c -- one key table drives the INI file, the command-line overrides and their error messages */
#include "conf/conf.h"
#include "conf/units.h"
#include "core/log.h"
#include "core/privs.h"
#include "http/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <unistd.h>

enum section {
    S_SERVER = 1 << 0,
    S_LISTEN = 1 << 1,
    S_KEEPALIVE = 1 << 2,
    S_TCPKA = 1 << 3,
    S_LIMITS = 1 << 4,
    S_STATIC = 1 << 5,
    S_LOG = 1 << 6,
    S_METRICS = 1 << 7,
    S_UPSTREAM = 1 << 8,
    S_ROUTE = 1 << 9,
    S_TLS = 1 << 10,
    S_HTTP2 = 1 << 11,
    S_VHOST = 1 << 12,
};

enum kind {
    K_DURATION, /* uint64_t ms */
    K_SECONDS,  /* int, whole seconds (TCP keepalive) */
    K_SIZE,     /* uint32_t, size_t or uint64_t bytes (by the field's size) */
    K_U32,      /* uint32_t */
    K_BOOL,     /* bool */
    K_STRING,   /* char * */
    K_ADDRESS,  /* an address of the current [listen] group, repeatable */
    K_ADDR_OFF, /* bool on + tt_addr_t, or "off" (metrics) */
    K_TCPKA,    /* tt_tcp_keepalive_t: off | IDLE:INTERVAL:COUNT */
    K_LEVEL,    /* int log level */
    K_WORKERS,  /* uint32_t, "auto" = 0 */
    K_SERVER,   /* a server of the current [upstream], repeatable */
    K_BALANCE,  /* tt_balance_t */
    K_REUSE,    /* bool reuse_safe: always | safe */
    K_UPGRADE,  /* int tt_upgrade_policy_t: websocket | any | off */
    K_UP_TCPKA, /* auto | off | IDLE:INTERVAL:COUNT, into the upstream's pool */
    K_TLS_CERT, /* a certificate file of the current [listen] group, repeatable */
    K_TLS_KEY,  /* its key file, paired with the certificates in order */
    K_TLS_VER,  /* 1.2 | 1.3 */
    K_CIDRS,    /* address blocks, space or comma separated, repeatable: [server] trusted_proxies */
    K_LOGFMT,   /* tt_accesslog_fmt_t *: main | combined | json | a template, compiled now */
    K_REQID,    /* int tt_request_id_mode_t: on | off | generate */
    K_ERRLOG,   /* char *: stderr | FILE | syslog[:...] (checked now) */
    K_NAMES,    /* server names of the current [vhost], space separated, repeatable */
    K_REWRITE,  /* REGEX REPLACEMENT of the current [route] */
    K_FIELD,    /* a field rule of the current [route], repeatable; min: tt_rule_op_t, max: 1 for the response */
    K_REDIRECT, /* bool: default | off */
    K_PROTOCOL, /* tt_up_protocol_t: http1 | h2 | auto */
};

/* Which struct a key's offset is into. */
enum base { B_CONF, B_POLICY, B_UPSTREAM, B_ROUTE, B_LISTEN, B_VHOST };

typedef struct key {
    const char *name;
    unsigned sections;
    enum kind kind;
    enum base base; /* B_POLICY keys are recorded in set masks */
    size_t off;
    size_t size;
    uint64_t min, max;
} key_t_;

#define P(field) B_POLICY, offsetof(tt_listen_policy_t, field), sizeof(((tt_listen_policy_t *)0)->field)
#define C(field) B_CONF, offsetof(tt_conf_t, field), sizeof(((tt_conf_t *)0)->field)
#define U(field) B_UPSTREAM, offsetof(tt_upstream_conf_t, field), sizeof(((tt_upstream_conf_t *)0)->field)
#define L(field) B_LISTEN, offsetof(tt_conf_listen_t, field), sizeof(((tt_conf_listen_t *)0)->field)
#define V(field) B_VHOST, offsetof(tt_conf_vhost_t, field), sizeof(((tt_conf_vhost_t *)0)->field)
#define R(field) B_ROUTE, offsetof(tt_conf_route_t, field), sizeof(((tt_conf_route_t *)0)->field)
#define DAY_MS   (24ull * 3600 * 1000)

/* At most 64 keys: sections record the policy keys they set in a 64-bit mask. */
static const key_t_ keys[] = {
    {"workers", S_SERVER, K_WORKERS, C(workers), 0, 1024},
    {"max_connections", S_SERVER, K_U32, C(max_connections), 0, 10000000},
    {"drain_timeout", S_SERVER, K_DURATION, C(drain_timeout_ms), 0, DAY_MS},
    {"backlog", S_SERVER, K_U32, C(backlog), 1, 65535},
    {"trusted_proxies", S_SERVER, K_CIDRS, B_CONF, 0, 0, 0, 0},
    {"reuse_port_with_others", S_SERVER, K_BOOL, C(reuse_port_with_others), 0, 1},
    {"pid_file", S_SERVER, K_STRING, C(pid_file), 0, 0},
    {"user", S_SERVER, K_STRING, C(user), 0, 0},
    {"group", S_SERVER, K_STRING, C(group), 0, 0},
    {"address", S_LISTEN, K_ADDRESS, B_CONF, 0, 0, 0, 0},
    {"idle_timeout", S_KEEPALIVE | S_LISTEN, K_DURATION, P(ka.idle_timeout_ms), 0, DAY_MS},
    {"header_timeout", S_KEEPALIVE | S_LISTEN, K_DURATION, P(header_timeout_ms), 1, DAY_MS},
    {"body_timeout", S_KEEPALIVE | S_LISTEN, K_DURATION, P(body_timeout_ms), 1, DAY_MS},
    {"send_timeout", S_KEEPALIVE | S_LISTEN, K_DURATION, P(send_timeout_ms), 1, DAY_MS},
    {"max_requests", S_KEEPALIVE | S_LISTEN, K_U32, P(ka.max_requests), 0, 2147483647},
    {"max_lifetime", S_KEEPALIVE | S_LISTEN, K_DURATION, P(ka.max_lifetime_ms), 0, 30 * DAY_MS},
    {"keepalive_header", S_KEEPALIVE | S_LISTEN, K_BOOL, P(keepalive_header), 0, 1},
    {"race_window", S_KEEPALIVE | S_LISTEN, K_DURATION, P(race_window_ms), 0, 60000},
    {"enabled", S_TCPKA, K_BOOL, P(tcp_keepalive.enabled), 0, 1},
    {"idle", S_TCPKA, K_SECONDS, P(tcp_keepalive.idle_s), 1, 32767},
    {"interval", S_TCPKA, K_SECONDS, P(tcp_keepalive.interval_s), 1, 32767},
    {"count", S_TCPKA, K_U32, P(tcp_keepalive.count), 1, 127},
    {"tcp_keepalive", S_LISTEN, K_TCPKA, P(tcp_keepalive), 0, 0},
    {"max_body_size", S_LIMITS | S_LISTEN, K_SIZE, P(max_body_bytes), 0, 1ull << 40},
    {"max_request_target", S_LIMITS | S_LISTEN, K_SIZE, P(limits.max_target), 64, 1 << 20},
    {"max_field_section", S_LIMITS | S_LISTEN, K_SIZE, P(limits.max_field_bytes), 1024, 1 << 20},
    {"max_fields", S_LIMITS | S_LISTEN, K_U32, P(limits.max_fields), 1, TT_H1_MAX_FIELDS},
    {"max_field_line", S_LIMITS | S_LISTEN, K_SIZE, P(limits.max_field_line), 256, 1 << 20},
    {"h2", S_HTTP2 | S_LISTEN, K_BOOL, P(h2.enabled), 0, 1},
    {"h2_max_concurrent_streams", S_HTTP2 | S_LISTEN, K_U32, P(h2.max_concurrent_streams), 1, 100000},
    {"h2_initial_window", S_HTTP2 | S_LISTEN, K_SIZE, P(h2.initial_window), 1024, 2147483647},
    {"h2_header_table_size", S_HTTP2 | S_LISTEN, K_SIZE, P(h2.header_table_size), 0, 1 << 20},
    {"h2_ping_interval", S_HTTP2 | S_LISTEN, K_DURATION, P(h2.ping_interval_ms), 0, DAY_MS},
    {"h2_ping_timeout", S_HTTP2 | S_LISTEN, K_DURATION, P(h2.ping_timeout_ms), 1, DAY_MS},
    {"h2_reset_burst", S_HTTP2 | S_LISTEN, K_U32, P(h2.reset_burst), 1, 1000000},
    {"h2_reset_rate", S_HTTP2 | S_LISTEN, K_U32, P(h2.reset_rate), 1, 1000000},
    {"tls", S_LISTEN, K_BOOL, L(tls_on), 0, 1},
    {"tls_cert", S_LISTEN, K_TLS_CERT, B_LISTEN, 0, 0, 0, 0},
    {"tls_key", S_LISTEN, K_TLS_KEY, B_LISTEN, 0, 0, 0, 0},
    {"tls_min_version", S_LISTEN, K_TLS_VER, L(tls.min_version), 0, 0},
    {"ticket_rotation", S_LISTEN, K_DURATION, L(tls.ticket_rotation_ms), 60000, 30 * DAY_MS}, /* 0: [tls]'s */
    {"tickets", S_TLS, K_BOOL, C(tls_tickets), 0, 1},
    {"ticket_rotation", S_TLS, K_DURATION, C(tls_ticket_rotation_ms), 60000, 30 * DAY_MS},
    {"session_cache", S_TLS, K_U32, C(tls_session_cache), 0, 10000000},
    {"root", S_STATIC, K_STRING, C(static_root), 0, 0},
    {"index", S_STATIC, K_STRING, C(static_index), 0, 0},
    {"access_log", S_LOG, K_STRING, C(access_log), 0, 0},
    {"error_log", S_LOG, K_ERRLOG, C(error_log), 0, 0},
    {"log_format", S_LOG, K_LOGFMT, C(log_format), 0, 0},
    {"request_id", S_LOG, K_REQID, C(request_id), 0, 0},
    {"level", S_LOG, K_LEVEL, C(log_level), 0, 3},
    {"listen", S_METRICS, K_ADDR_OFF, C(metrics_addr), 0, 0},
    {"path", S_METRICS, K_STRING, C(metrics_path), 0, 0},
    {"server", S_UPSTREAM, K_SERVER, B_UPSTREAM, 0, 0, 0, 0},
    {"balance", S_UPSTREAM, K_BALANCE, U(balance), 0, 0},
    {"reuse", S_UPSTREAM, K_REUSE, U(reuse_safe), 0, 0},
    {"max_idle", S_UPSTREAM, K_U32, U(pool.max_idle), 0, 100000},
    {"idle_timeout", S_UPSTREAM, K_DURATION, U(pool.idle_timeout_ms), 1, DAY_MS},
    {"max_requests", S_UPSTREAM, K_U32, U(pool.max_requests), 0, 2147483647},
    {"max_lifetime", S_UPSTREAM, K_DURATION, U(pool.max_lifetime_ms), 0, 30 * DAY_MS},
    {"keepalive_hint", S_UPSTREAM, K_BOOL, U(pool.keepalive_hint), 0, 1},
    {"hint_margin", S_UPSTREAM, K_DURATION, U(pool.hint_margin_ms), 0, DAY_MS},
    {"margin_floor", S_UPSTREAM, K_DURATION, U(pool.margin_floor_ms), 0, DAY_MS},
    {"margin_rtts", S_UPSTREAM, K_U32, U(pool.margin_rtts), 0, 100},
    {"learn", S_UPSTREAM, K_BOOL, U(pool.learn), 0, 1},
    {"learn_above_hint", S_UPSTREAM, K_BOOL, U(pool.learn_above_hint), 0, 1},
    {"safe_idle", S_UPSTREAM, K_DURATION, U(pool.safe_idle_ms), 0, DAY_MS},
    {"idle_watch", S_UPSTREAM, K_BOOL, U(pool.idle_watch), 0, 1},
    {"peek", S_UPSTREAM, K_BOOL, U(pool.peek), 0, 1},
    {"canary_requests", S_UPSTREAM, K_BOOL, U(pool.canary_requests), 0, 1},
    {"reuse_wait", S_UPSTREAM, K_DURATION, U(pool.reuse_wait_ms), 0, 60000},
    {"replay", S_UPSTREAM, K_BOOL, U(replay), 0, 1},
    {"connect_timeout", S_UPSTREAM, K_DURATION, U(pool.timeouts.connect_ms), 1, DAY_MS},
    {"response_timeout", S_UPSTREAM, K_DURATION, U(pool.timeouts.response_ms), 1, DAY_MS},
    {"read_timeout", S_UPSTREAM, K_DURATION, U(pool.timeouts.read_ms), 1, DAY_MS},
    {"send_timeout", S_UPSTREAM, K_DURATION, U(pool.timeouts.send_ms), 1, DAY_MS},
    {"max_connections", S_UPSTREAM, K_U32, U(pool.max_connections), 0, 10000000},
    {"max_pending", S_UPSTREAM, K_U32, U(pool.max_pending), 0, 10000000},
    {"queue_timeout", S_UPSTREAM, K_DURATION, U(pool.queue_timeout_ms), 1, DAY_MS},
    {"max_fails", S_UPSTREAM, K_U32, U(pool.max_fails), 1, 1000},
    {"fail_backoff", S_UPSTREAM, K_DURATION, U(pool.backoff_min_ms), 1, DAY_MS},
    {"fail_backoff_max", S_UPSTREAM, K_DURATION, U(pool.backoff_max_ms), 1, DAY_MS},
    {"leak_threshold", S_UPSTREAM, K_DURATION, U(pool.leak_threshold_ms), 0, DAY_MS},
    {"resolve_interval", S_UPSTREAM, K_DURATION, U(resolve_interval_ms), 0, DAY_MS}, /* 0, or 1s and more: below */
    {"replay_buffer", S_UPSTREAM, K_SIZE, U(replay_buffer), 0, 1 << 30},
    {"forwarded", S_UPSTREAM, K_BOOL, U(forwarded), 0, 1},
    {"expose_cause", S_UPSTREAM, K_BOOL, U(expose_cause), 0, 1},
    {"host", S_UPSTREAM, K_STRING, U(host), 0, 0},
    {"tcp_keepalive", S_UPSTREAM, K_UP_TCPKA, U(pool.tcp_keepalive), 0, 0},
    {"tls_ca", S_UPSTREAM, K_STRING, U(tls_ca), 0, 0},
    {"tls_verify", S_UPSTREAM, K_BOOL, U(tls_verify), 0, 1},
    {"tls_cert", S_UPSTREAM, K_STRING, U(tls_cert), 0, 0},
    {"tls_key", S_UPSTREAM, K_STRING, U(tls_key), 0, 0},
    {"tls_sni", S_UPSTREAM, K_STRING, U(tls_sni), 0, 0},
    {"protocol", S_UPSTREAM, K_PROTOCOL, U(protocol), 0, 0},
    {"h2_upstream_window", S_UPSTREAM, K_SIZE, U(h2_window), 65535, 2147483647},
    {"h2_ping_interval", S_UPSTREAM, K_DURATION, U(h2_ping_ms), 0, DAY_MS},
    {"h2_ping_timeout", S_UPSTREAM, K_DURATION, U(h2_ping_timeout_ms), 1, DAY_MS},
    {"h2_alpn_recheck", S_UPSTREAM, K_DURATION, U(h2_alpn_recheck_ms), 0, DAY_MS},
    {"upstream", S_ROUTE, K_STRING, R(upstream), 0, 0},
    {"root", S_ROUTE, K_STRING, R(root), 0, 0},
    {"index", S_ROUTE, K_STRING, R(index), 0, 0},
    {"upgrade", S_ROUTE, K_UPGRADE, R(upgrade), 0, 0},
    {"tunnel_idle_timeout", S_ROUTE, K_DURATION, R(tunnel_idle_timeout_ms), 1, 30 * DAY_MS},
    {"strip_prefix", S_ROUTE, K_BOOL, R(rules.strip_prefix), 0, 1},
    {"request_buffering", S_ROUTE, K_BOOL, R(request_buffering), 0, 1},
    {"request_buffer_memory", S_ROUTE, K_SIZE, R(request_buffer_memory), 0, 1 << 30},
    {"temp_dir", S_ROUTE, K_STRING, R(temp_dir), 0, 0},
    {"rewrite", S_ROUTE, K_REWRITE, B_ROUTE, 0, 0, 0, 0},
    {"proxy_redirect", S_ROUTE, K_REDIRECT, R(rules.proxy_redirect), 0, 0},
    {"request_set_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_SET, 0},
    {"request_add_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_ADD, 0},
    {"request_remove_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_REMOVE, 0},
    {"response_set_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_SET, 1},
    {"response_add_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_ADD, 1},
    {"response_remove_header", S_ROUTE, K_FIELD, B_ROUTE, 0, 0, TT_RULE_REMOVE, 1},
    {"server_name", S_VHOST, K_NAMES, B_VHOST, 0, 0, 0, 0},
    {"default", S_VHOST, K_BOOL, V(is_default), 0, 1},
};

static const struct {
    const char *name;
    unsigned bit;
} section_names[] = {
    {"tls", S_TLS},
    {"http2", S_HTTP2},
    {"server", S_SERVER},
    {"keepalive", S_KEEPALIVE},
    {"tcp_keepalive", S_TCPKA},
    {"limits", S_LIMITS},
    {"static", S_STATIC},
    {"log", S_LOG},
    {"metrics", S_METRICS},
};

_Static_assert(TT_ARRAY_SIZE(keys) <= 128, "set masks cover keys 0..63 (policy keys come first)");

static int key_index(const key_t_ *k)
{
    return (int)(k - keys);
}

static const key_t_ *find_key(unsigned section, const char *name)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(keys); i++)
        if ((keys[i].sections & section) && strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

/* Parses "off" or "IDLE:INTERVAL:COUNT" (durations; whole seconds). */
static int parse_tcpka(const char *s, tt_tcp_keepalive_t *ka, const char **why)
{
    bool on;
    if (tt_units_bool(s, &on, why) == 0 && !on) {
        ka->enabled = false;
        return 0;
    }
    char buf[96];
    if (strlen(s) >= sizeof(buf)) {
        *why = "expected off or IDLE:INTERVAL:COUNT, e.g. 900s:60s:5";
        return -1;
    }
    memcpy(buf, s, strlen(s) + 1);
    char *a = buf, *b = strchr(a, ':'), *c = b ? strchr(b + 1, ':') : NULL;
    if (b == NULL || c == NULL) {
        *why = "expected off or IDLE:INTERVAL:COUNT, e.g. 900s:60s:5";
        return -1;
    }
    *b++ = '\0';
    *c++ = '\0';
    uint64_t idle, intvl, cnt;
    if (tt_units_duration(a, &idle, why) || tt_units_duration(b, &intvl, why) || tt_units_uint(c, 1, 127, &cnt, why))
        return -1;
    if (idle < 1000 || idle > 32767000 || intvl < 1000 || intvl > 32767000 || idle % 1000 || intvl % 1000) {
        *why = "IDLE and INTERVAL must be whole seconds from 1s to 32767s";
        return -1;
    }
    *ka = (tt_tcp_keepalive_t){
        .enabled = true, .idle_s = (int)(idle / 1000), .interval_s = (int)(intvl / 1000), .count = (int)cnt};
    return 0;
}

/* Parses `value` for key `k` into `base + k->off`. Returns 0, or -1 with `why` (maybe in `whybuf`). */
static int parse_value(const key_t_ *k, const char *value, void *base, const char **why, char *whybuf, size_t wn)
{
    void *dst = (char *)base + k->off;
    uint64_t v;
    switch (k->kind) {
    case K_DURATION:
        if (tt_units_duration(value, &v, why)) return -1;
        if (v < k->min || v > k->max) {
            snprintf(whybuf, wn, "must be between %llums and %llums", (unsigned long long)k->min,
                     (unsigned long long)k->max);
            *why = whybuf;
            return -1;
        }
        *(uint64_t *)dst = v;
        return 0;
    case K_SECONDS:
        if (tt_units_duration(value, &v, why)) return -1;
        if (v % 1000 || v / 1000 < k->min || v / 1000 > k->max) {
            snprintf(whybuf, wn, "must be whole seconds from %llus to %llus", (unsigned long long)k->min,
                     (unsigned long long)k->max);
            *why = whybuf;
            return -1;
        }
        *(int *)dst = (int)(v / 1000);
        return 0;
    case K_SIZE:
        if (tt_units_size(value, &v, why)) return -1;
        if (v < k->min || v > k->max) {
            snprintf(whybuf, wn, "must be between %llu and %llu bytes", (unsigned long long)k->min,
                     (unsigned long long)k->max);
            *why = whybuf;
            return -1;
        }
        if (k->size == sizeof(uint32_t)) /* the HTTP/2 settings: their maxima fit */
            *(uint32_t *)dst = (uint32_t)v;
        else if (k->size == sizeof(size_t))
            *(size_t *)dst = (size_t)v;
        else
            *(uint64_t *)dst = v;
        return 0;
    case K_WORKERS:
        if (strcmp(value, "auto") == 0) {
            *(uint32_t *)dst = 0;
            return 0;
        }
        /* fall through */
    case K_U32:
        if (tt_units_uint(value, k->min, k->max, &v, why)) {
            snprintf(whybuf, wn, "%s (a whole number from %llu to %llu%s)", *why, (unsigned long long)k->min,
                     (unsigned long long)k->max, k->kind == K_WORKERS ? ", or auto" : "");
            *why = whybuf;
            return -1;
        }
        if (k->size == sizeof(uint32_t))
            *(uint32_t *)dst = (uint32_t)v;
        else
            *(uint64_t *)dst = v;
        return 0;
    case K_BOOL: return tt_units_bool(value, (bool *)dst, why);
    case K_STRING:
        if (*value == '\0') {
            *why = "must not be empty";
            return -1;
        }
        free(*(char **)dst);
        *(char **)dst = tt_strndup(value, strlen(value));
        return 0;
    case K_ERRLOG:
        if (tt_log_is_syslog(value)) {
            tt_log_syslog_t sl;
            if (tt_log_syslog_parse(value, &sl, why) != 0) return -1;
        }
        if (*value == '\0') {
            *why = "must not be empty";
            return -1;
        }
        free(*(char **)dst);
        *(char **)dst = tt_strndup(value, strlen(value));
        return 0;
    case K_LOGFMT: {
        tt_accesslog_fmt_t *f = tt_accesslog_fmt_compile(value, whybuf, wn);
        if (f == NULL) {
            *why = whybuf;
            return -1;
        }
        tt_accesslog_fmt_free((tt_accesslog_fmt_t **)dst);
        *(tt_accesslog_fmt_t **)dst = f;
        return 0;
    }
    case K_REQID:
        if (strcmp(value, "on") == 0) {
            *(int *)dst = TT_REQUEST_ID_ON;
        } else if (strcmp(value, "off") == 0) {
            *(int *)dst = TT_REQUEST_ID_OFF;
        } else if (strcmp(value, "generate") == 0) {
            *(int *)dst = TT_REQUEST_ID_GENERATE;
        } else {
            *why = "expected on, off or generate";
            return -1;
        }
        return 0;
    case K_LEVEL: {
        int l = tt_log_level_parse(value);
        if (l < 0) {
            *why = "expected error, warn, info or debug";
            return -1;
        }
        *(int *)dst = l;
        return 0;
    }
    case K_ADDR_OFF: {
        bool on;
        tt_conf_t *c = base;
        if (tt_units_bool(value, &on, why) == 0 && !on) {
            c->metrics_on = false;
            return 0;
        }
        if (tt_addr_parse(value, true, &c->metrics_addr, why) != 0) return -1;
        c->metrics_on = true;
        return 0;
    }
    case K_TCPKA: return parse_tcpka(value, (tt_tcp_keepalive_t *)dst, why);
    case K_UP_TCPKA: {
        tt_upstream_conf_t *uc = base;
        uc->_tcpka_auto = strcmp(value, "auto") == 0;
        return uc->_tcpka_auto ? 0 : parse_tcpka(value, (tt_tcp_keepalive_t *)dst, why);
    }
    case K_BALANCE:
        if (strcmp(value, "round_robin") == 0) {
            *(tt_balance_t *)dst = TT_BALANCE_ROUND_ROBIN;
        } else if (strcmp(value, "least_conn") == 0) {
            *(tt_balance_t *)dst = TT_BALANCE_LEAST_CONN;
        } else {
            *why = "expected round_robin or least_conn";
            return -1;
        }
        return 0;
    case K_UPGRADE:
        if (strcmp(value, "websocket") == 0) {
            *(int *)dst = TT_UPGRADE_WEBSOCKET;
        } else if (strcmp(value, "any") == 0) {
            *(int *)dst = TT_UPGRADE_ANY;
        } else if (strcmp(value, "off") == 0) {
            *(int *)dst = TT_UPGRADE_OFF;
        } else {
            *why = "expected websocket, any or off";
            return -1;
        }
        return 0;
    case K_REUSE:
        if (strcmp(value, "always") != 0 && strcmp(value, "safe") != 0) {
            *why = "expected always or safe";
            return -1;
        }
        *(bool *)dst = strcmp(value, "safe") == 0;
        return 0;
    case K_TLS_VER:
        if (strcmp(value, "1.2") == 0) {
            *(int *)dst = 0x0303; /* TLS1_2_VERSION */
        } else if (strcmp(value, "1.3") == 0) {
            *(int *)dst = 0x0304; /* TLS1_3_VERSION */
        } else {
            *why = "expected 1.2 or 1.3";
            return -1;
        }
        return 0;
    case K_PROTOCOL:
        if (strcmp(value, "http1") == 0) {
            *(tt_up_protocol_t *)dst = TT_UP_PROTO_HTTP1;
        } else if (strcmp(value, "h2") == 0) {
            *(tt_up_protocol_t *)dst = TT_UP_PROTO_H2;
        } else if (strcmp(value, "auto") == 0) {
            *(tt_up_protocol_t *)dst = TT_UP_PROTO_AUTO;
        } else {
            *why = "expected http1, h2 or auto";
            return -1;
        }
        return 0;
    case K_REDIRECT:
        if (strcmp(value, "default") == 0) {
            *(bool *)dst = true;
        } else if (strcmp(value, "off") == 0) {
            *(bool *)dst = false;
        } else {
            *why = "expected default or off";
            return -1;
        }
        return 0;
    case K_ADDRESS:
    case K_SERVER:
    case K_TLS_CERT:
    case K_TLS_KEY:
    case K_CIDRS:
    case K_NAMES:
    case K_REWRITE:
    case K_FIELD: break;
    }
    *why = "internal: unhandled key kind";
    return -1;
}

static tt_conf_listen_t *listen_group(tt_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nlistens; i++)
        if (strcmp(c->listens[i].name, name) == 0) return &c->listens[i];
    c->listens = tt_realloc(c->listens, (c->nlistens + 1) * sizeof(*c->listens));
    tt_conf_listen_t *g = &c->listens[c->nlistens++];
    memset(g, 0, sizeof(*g));
    g->name = tt_strndup(name, strlen(name));
    return g;
}

static int add_address(tt_conf_listen_t *g, const char *value, const char **why)
{
    tt_addr_t a;
    if (tt_addr_parse(value, true, &a, why) != 0) return -1;
    g->addrs = tt_realloc(g->addrs, (g->naddrs + 1) * sizeof(*g->addrs));
    g->addrs[g->naddrs++] = a;
    return 0;
}

static void upstream_defaults(tt_upstream_conf_t *u)
{
    u->balance = TT_BALANCE_ROUND_ROBIN;
    u->reuse_safe = false;
    u->replay_buffer = 64 * 1024;
    u->forwarded = false;
    u->expose_cause = true;
    u->_tcpka_auto = true;
    u->protocol = TT_UP_PROTO_HTTP1;
    u->h2_window = 16 * 1024 * 1024;
    u->h2_ping_ms = 30000;
    u->h2_ping_timeout_ms = 5000;
    u->h2_alpn_recheck_ms = 60000;
    tt_pool_conf_t *p = &u->pool;
    p->max_idle = 128;
    p->idle_timeout_ms = 60000;
    p->max_requests = 1000;
    p->max_lifetime_ms = 3600000;
    p->keepalive_hint = true;
    p->hint_margin_ms = 1000;
    p->margin_floor_ms = 25;
    p->margin_rtts = 3;
    p->learn = true;
    p->learn_above_hint = true;
    p->safe_idle_ms = 250;
    p->idle_watch = true;
    p->peek = true;
    p->canary_requests = true;
    p->reuse_wait_ms = 50;
    u->replay = true;
    u->tls_verify = true;
    p->max_connections = 0; /* set per worker by tt_proxy_registry_new() unless the section sets it */
    u->_max_conns_default = true;
    p->max_pending = 1024;
    p->queue_timeout_ms = 5000;
    p->timeouts = (tt_up_timeouts_t){.connect_ms = 3000, .response_ms = 30000, .read_ms = 30000, .send_ms = 30000};
    p->max_fails = 3;
    p->backoff_min_ms = 1000;
    p->backoff_max_ms = 30000;
    p->leak_threshold_ms = 60000;
    u->resolve_interval_ms = 30000;
}

static tt_upstream_conf_t *upstream_named(tt_conf_t *c, const char *name, bool create)
{
    for (size_t i = 0; i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0) return &c->upstreams[i];
    if (!create) return NULL;
    c->upstreams = tt_realloc(c->upstreams, (c->nupstreams + 1) * sizeof(*c->upstreams));
    tt_upstream_conf_t *u = &c->upstreams[c->nupstreams++];
    memset(u, 0, sizeof(*u));
    u->name = tt_strndup(name, strlen(name));
    upstream_defaults(u);
    return u;
}

/* The route of `vhost` (NULL: none) with `prefix`, created when new. */
static tt_conf_route_t *route_in(tt_conf_t *c, const char *vhost, const char *prefix)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const tt_conf_route_t *r = &c->routes[i];
        if (strcmp(r->prefix, prefix) == 0 && (r->vhost == NULL) == (vhost == NULL) &&
            (vhost == NULL || strcmp(r->vhost, vhost) == 0))
            return &c->routes[i];
    }
    c->routes = tt_realloc(c->routes, (c->nroutes + 1) * sizeof(*c->routes));
    tt_conf_route_t *r = &c->routes[c->nroutes++];
    memset(r, 0, sizeof(*r));
    r->prefix = tt_strndup(prefix, strlen(prefix));
    r->upgrade = TT_UPGRADE_WEBSOCKET;
    r->tunnel_idle_timeout_ms = 3600 * 1000; /* HAProxy's timeout tunnel is often set to 1h */
    r->request_buffer_memory = 64 * 1024;
    r->vhost = vhost ? tt_strndup(vhost, strlen(vhost)) : NULL;
    tt_rules_init(&r->rules);
    return r;
}

static tt_conf_route_t *route_for(tt_conf_t *c, const char *prefix)
{
    return route_in(c, NULL, prefix);
}

/* The route of a section name after "route ": "/prefix" or "VHOST /prefix". */
static tt_conf_route_t *route_of_section(tt_conf_t *c, const char *rest)
{
    if (rest[0] == '/') return route_for(c, rest);
    const char *sp = strchr(rest, ' ');
    if (sp == NULL) return route_for(c, rest); /* not a known section (on_header refused it): a placeholder */
    char vh[128];
    snprintf(vh, sizeof(vh), "%.*s", (int)TT_MIN((size_t)(sp - rest), sizeof(vh) - 1), rest);
    return route_in(c, vh, sp + 1);
}

static tt_conf_vhost_t *vhost_named(tt_conf_t *c, const char *name, bool create)
{
    for (size_t i = 0; i < c->nvhosts; i++)
        if (strcmp(c->vhosts[i].name, name) == 0) return &c->vhosts[i];
    if (!create) return NULL;
    c->vhosts = tt_realloc(c->vhosts, (c->nvhosts + 1) * sizeof(*c->vhosts));
    tt_conf_vhost_t *v = &c->vhosts[c->nvhosts++];
    memset(v, 0, sizeof(*v));
    v->name = tt_strndup(name, strlen(name));
    return v;
}

/* server_name = NAME [NAME...]: exact names or "*.suffix" wildcards, without a port; appended. */
static int add_names(tt_conf_vhost_t *v, const char *value, const char **why)
{
    const char *p = value;
    size_t added = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '\0') break;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        size_t n = (size_t)(p - s);
        bool wild = n > 2 && s[0] == '*' && s[1] == '.';
        for (size_t i = wild ? 2 : 0; i < n; i++) {
            char ch = tt_lower(s[i]);
            if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
                  ch == '[' || ch == ']' || (ch == ':' && s[0] == '['))) {
                *why = "expected host names such as www.example.com or *.example.com (no port, no other wildcard)";
                return -1;
            }
        }
        if (n >= 256 || s[n - 1] == '.') {
            *why = "a server name is at most 255 characters and does not end with a dot";
            return -1;
        }
        v->names = tt_realloc(v->names, (v->nnames + 1) * sizeof(*v->names));
        char *nm = tt_strndup(s, n);
        for (char *q = nm; *q; q++) *q = tt_lower(*q);
        v->names[v->nnames++] = nm;
        added++;
    }
    if (added == 0) {
        *why = "expected one or more host names";
        return -1;
    }
    return 0;
}

/* Adds a server written as HOST:PORT or http://HOST:PORT[/] (names resolved now, at start-up). */
static int add_server(tt_upstream_conf_t *u, const char *value, const char **why)
{
    const char *hp = value;
    bool tls = false;
    if (strncasecmp(hp, "http://", 7) == 0) {
        hp += 7;
    } else if (strncasecmp(hp, "h2c://", 6) == 0) { /* HTTP/2 with prior knowledge: the upstream's protocol */
        hp += 6;
        u->protocol = TT_UP_PROTO_H2;
        u->_h2c = true;
    } else if (strncasecmp(hp, "https://", 8) == 0) {
        hp += 8;
        tls = true;
    } else if (strstr(hp, "://") != NULL) {
        *why = "only http://, https:// and h2c:// upstreams are supported";
        return -1;
    }
    char buf[300];
    size_t n = strlen(hp);
    if (n >= sizeof(buf)) {
        *why = "too long";
        return -1;
    }
    memcpy(buf, hp, n + 1);
    if (n > 0 && buf[n - 1] == '/') buf[--n] = '\0';
    if (n == 0 || buf[0] == ':' || buf[0] == '*') {
        *why = "expected HOST:PORT (a host is required; no wildcard)";
        return -1;
    }
    if (strchr(buf, '/') != NULL) {
        *why = "an upstream is HOST:PORT, without a path";
        return -1;
    }
    if (strchr(buf, ':') == NULL || buf[n - 1] == ']') {
        if (n + 3 >= sizeof(buf)) {
            *why = "too long";
            return -1;
        }
        memcpy(buf + n, tls ? ":443" : ":80", tls ? 5 : 4); /* the scheme's default port */
        n += tls ? 4 : 3;
    }
    tt_addr_t a;
    if (tt_addr_parse(buf, true, &a, why) != 0) return -1;
    if (u->nservers >= 64) {
        *why = "at most 64 servers per upstream";
        return -1;
    }
    /* The host part names the server for SNI and certificate checks, unless it is an IP literal. */
    char *host = NULL;
    const char *colon = strrchr(buf, ':');
    tt_addr_t lit;
    const char *why2;
    char hbuf[300];
    snprintf(hbuf, sizeof(hbuf), "%.*s", (int)(colon - buf), buf);
    if (tls && hbuf[0] != '[' && tt_addr_parse(buf, false, &lit, &why2) != 0) host = tt_strndup(hbuf, strlen(hbuf));
    u->servers = tt_realloc(u->servers, (u->nservers + 1) * sizeof(*u->servers));
    u->servers[u->nservers++] = (tt_upstream_server_t){.addr = a, .name = tt_strndup(buf, n), .tls = tls, .host = host};
    return 0;
}

/* trusted_proxies = BLOCK [BLOCK...]: appended to those of earlier lines. */
static int add_cidrs(tt_conf_t *c, const char *value, const char **why)
{
    const char *p = value;
    size_t added = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (*p == '\0') break;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',') p++;
        tt_cidr_t block;
        if (tt_cidr_parse(s, (size_t)(p - s), &block, why) != 0) return -1;
        c->trusted_proxies = tt_realloc(c->trusted_proxies, (c->ntrusted_proxies + 1) * sizeof(block));
        c->trusted_proxies[c->ntrusted_proxies++] = block;
        added++;
    }
    if (added == 0) {
        *why = "expected address blocks such as 10.0.0.0/8 192.0.2.7 2001:db8::/32";
        return -1;
    }
    return 0;
}

/* tls_cert and tls_key lines pair up in order: the Nth key belongs to the Nth certificate. */
static int add_tls_file(tt_conf_listen_t *g, bool cert, const char *value, int line)
{
    tt_tls_conf_t *t = &g->tls;
    size_t have = cert ? g->_ncert_files : g->_nkey_files;
    if (have >= t->ncerts) {
        t->certs = tt_realloc(t->certs, (t->ncerts + 1) * sizeof(*t->certs));
        memset(&t->certs[t->ncerts], 0, sizeof(*t->certs));
        t->ncerts++;
    }
    char **slot = cert ? &t->certs[have].cert_file : &t->certs[have].key_file;
    free(*slot);
    *slot = tt_strndup(value, strlen(value));
    *(cert ? &t->certs[have].cert_line : &t->certs[have].key_line) = line;
    if (cert)
        g->_ncert_files++;
    else
        g->_nkey_files++;
    g->tls_on = true;
    return 0;
}

static void free_tls_files(tt_conf_listen_t *g)
{
    for (size_t i = 0; i < g->tls.ncerts; i++) {
        free(g->tls.certs[i].cert_file);
        free(g->tls.certs[i].key_file);
    }
    free(g->tls.certs);
    g->tls.certs = NULL;
    g->tls.ncerts = 0;
    g->_ncert_files = g->_nkey_files = 0;
}

/* ---- defaults ---- */

void tt_conf_init(tt_conf_t *c)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(keys); i++) TT_BUG_ON(keys[i].base == B_POLICY && i >= 64);
    memset(c, 0, sizeof(*c));
    c->workers = 0;
    c->max_connections = 10000;
    c->drain_timeout_ms = 10000;
    c->backlog = 4096;
    tt_listen_policy_t *p = &c->defaults;
    p->ka.idle_timeout_ms = 5000;
    p->ka.max_requests = 1000;
    p->ka.max_lifetime_ms = 3600000;
    p->header_timeout_ms = 10000;
    p->body_timeout_ms = 30000;
    p->send_timeout_ms = 30000;
    p->keepalive_header = true;
    p->race_window_ms = 1000;
    p->tcp_keepalive = (tt_tcp_keepalive_t){.enabled = false, .idle_s = 900, .interval_s = 60, .count = 5};
    p->max_body_bytes = 1 << 20;
    p->limits = tt_h1_default_limits;
    p->h2 = (tt_h2_policy_t){.enabled = true,
                             .max_concurrent_streams = 100,
                             .initial_window = 65535,
                             .header_table_size = 4096,
                             .ping_interval_ms = 0,
                             .ping_timeout_ms = 15000,
                             .reset_burst = 200,
                             .reset_rate = 33};
    c->tls_tickets = true;
    c->tls_ticket_rotation_ms = 3600000;
    c->tls_session_cache = 20000;
    c->static_index = tt_strndup(TT_LIT("index.html"));
    c->access_log = tt_strndup(TT_LIT("-"));
    c->error_log = tt_strndup(TT_LIT("stderr"));
    c->log_level = TT_LOG_INFO;
    c->request_id = TT_REQUEST_ID_ON;
    c->metrics_path = tt_strndup(TT_LIT("/metrics"));
}

void tt_conf_dispose(tt_conf_t *c)
{
    for (size_t i = 0; i < c->nlistens; i++) {
        free(c->listens[i].name);
        free(c->listens[i].addrs);
        free_tls_files(&c->listens[i]);
    }
    free(c->listens);
    for (size_t i = 0; i < c->nupstreams; i++) {
        tt_upstream_conf_t *u = &c->upstreams[i];
        for (size_t j = 0; j < u->nservers; j++) {
            free(u->servers[j].name);
            free(u->servers[j].host);
        }
        free(u->tls_ca);
        free(u->tls_cert);
        free(u->tls_key);
        free(u->tls_sni);
        free(u->servers);
        free(u->name);
        free(u->host);
    }
    free(c->upstreams);
    for (size_t i = 0; i < c->nvhosts; i++) {
        for (size_t k = 0; k < c->vhosts[i].nnames; k++) free(c->vhosts[i].names[k]);
        free(c->vhosts[i].names);
        free(c->vhosts[i].name);
    }
    free(c->vhosts);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].prefix);
        free(c->routes[i].vhost);
        tt_rules_dispose(&c->routes[i].rules);
        free(c->routes[i].upstream);
        free(c->routes[i].root);
        free(c->routes[i].index);
        free(c->routes[i].temp_dir);
    }
    free(c->routes);
    free(c->trusted_proxies);
    free(c->path);
    free(c->_cli_tls_cert);
    free(c->_cli_tls_key);
    free(c->static_root);
    free(c->static_index);
    free(c->access_log);
    free(c->error_log);
    free(c->pid_file);
    tt_accesslog_fmt_free(&c->log_format);
    free(c->metrics_path);
    free(c->user);
    free(c->group);
    memset(c, 0, sizeof(*c));
}

/* ---- errors, collected ---- */

/* Appends `msg` as one more line of `err` (newline separated), cut at `errlen`. */
static void err_append(char *err, size_t errlen, const char *msg)
{
    size_t used = strnlen(err, errlen);
    if (used + 1 >= errlen) return;
    snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", msg);
}

TT_PRINTF(3, 4) static void err_addf(char *err, size_t errlen, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_append(err, errlen, msg);
}

/* ---- the file ---- */

typedef struct load_err {
    int line;
    size_t seq; /* order found, within a line */
    char msg[400];
} load_err_t;

typedef struct loader {
    tt_conf_t *c;
    FILE *f;
    int line;
    load_err_t *errs; /* every error, reported in line order */
    size_t nerrs;
    bool section_bad;                  /* the current header was refused: its keys are not reported again */
    int key_line[TT_ARRAY_SIZE(keys)]; /* line where each key was set in the current section; 0: not yet */
    struct seen_section {
        char *name;
        int line;
    } * sections;
    size_t nsections;
} loader_t;

TT_PRINTF(3, 4) static void load_fail(loader_t *L, int line, const char *fmt, ...)
{
    L->errs = tt_realloc(L->errs, (L->nerrs + 1) * sizeof(*L->errs));
    load_err_t *e = &L->errs[L->nerrs++];
    e->line = line;
    e->seq = L->nerrs;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

static int cmp_err_line(const void *a, const void *b)
{
    const load_err_t *x = a, *y = b;
    if (x->line != y->line) return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq; /* qsort is not stable */
}

static bool known_section(const char *name, size_t n)
{
    if ((n == 6 && memcmp(name, "listen", 6) == 0) || (n > 7 && memcmp(name, "listen ", 7) == 0)) return true;
    if ((n > 9 && memcmp(name, "upstream ", 9) == 0) || (n >= 7 && memcmp(name, "route /", 7) == 0)) return true;
    if (n > 6 && memcmp(name, "vhost ", 6) == 0 && memchr(name + 6, ' ', n - 6) == NULL) return true;
    if (n > 6 && memcmp(name, "route ", 6) == 0) { /* [route VHOST /prefix] */
        const char *sp = memchr(name + 6, ' ', n - 6);
        return sp != NULL && sp > name + 6 && (size_t)(sp - name) + 1 < n && sp[1] == '/';
    }
    for (size_t i = 0; i < TT_ARRAY_SIZE(section_names); i++)
        if (strlen(section_names[i].name) == n && memcmp(section_names[i].name, name, n) == 0) return true;
    return false;
}

/* A section header: every section name may appear once (a second [upstream api] or [keepalive] would
 * silently merge into the first, or replace its keys). */
static void on_header(loader_t *L, const char *p)
{
    memset(L->key_line, 0, sizeof(L->key_line));
    L->section_bad = true;
    const char *close = strchr(p, ']');
    if (close == NULL) return; /* inih reports the syntax error */
    size_t n = (size_t)(close - p - 1);
    if (!known_section(p + 1, n)) {
        load_fail(L, L->line, "%s:%d: [%.*s]: unknown section", L->c->path, L->line, (int)TT_MIN(n, 64), p + 1);
        return;
    }
    char name[256];
    if (n >= sizeof(name)) { /* checked whole above; a cut copy could lose what made it known (a route's " /") */
        load_fail(L, L->line, "%s:%d: [%.*s...]: section name longer than %zu bytes", L->c->path, L->line, 64, p + 1,
                  sizeof(name) - 1);
        return;
    }
    snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
    for (size_t i = 0; i < L->nsections; i++)
        if (strcmp(L->sections[i].name, name) == 0) {
            load_fail(L, L->line, "%s:%d: [%s]: duplicate section (first on line %d)", L->c->path, L->line, name,
                      L->sections[i].line);
            return;
        }
    L->sections = tt_realloc(L->sections, (L->nsections + 1) * sizeof(*L->sections));
    L->sections[L->nsections++] = (struct seen_section){.name = tt_strndup(name, strlen(name)), .line = L->line};
    L->section_bad = false;
    /* A section exists as soon as its header does, so an empty one is checked like a full one
     * (an [upstream] without a server, a [route] without a target). */
    if (strcmp(name, "listen") == 0 || strncmp(name, "listen ", 7) == 0)
        listen_group(L->c, name[6] ? name + 7 : "");
    else if (strncmp(name, "upstream ", 9) == 0)
        upstream_named(L->c, name + 9, true);
    else if (strncmp(name, "vhost ", 6) == 0)
        vhost_named(L->c, name + 6, true)->line = L->line;
    else if (strncmp(name, "route ", 6) == 0)
        route_of_section(L->c, name + 6)->line = L->line;
}

/* Reads one line for inih, counting lines, and checks section headers itself: inih reports a section
 * only through its keys, so an unknown section without keys would otherwise pass unnoticed. */
static char *count_lines(char *str, int num, void *stream)
{
    loader_t *L = stream;
    char *s = fgets(str, num, L->f);
    if (s == NULL) return s;
    L->line++;
    const char *p = s;
    while (*p == ' ' || *p == '\t') p++;
    size_t len = strlen(s);
    if (len == (size_t)num - 1 && s[len - 1] != '\n' && !feof(L->f)) {
        const char *k = p, *ke = k;
        while (*ke && *ke != '=' && *ke != ':' && *ke != ' ' && *ke != '\t') ke++;
        load_fail(L, L->line, "%s:%d: %.*s: line longer than %d characters", L->c->path, L->line,
                  (int)TT_MIN((size_t)(ke - k), 64), k, num - 2);
    }
    if (*p == '[') on_header(L, p);
    return s;
}

/* Remembers where the keys that tt_conf_finish() and tt_conf_check_files() judge later were set. */
static void note_line(loader_t *L, const char *name, tt_conf_route_t *route, tt_upstream_conf_t *up)
{
    if (strcmp(name, "root") == 0)
        *(route ? &route->root_line : &L->c->static_root_line) = L->line;
    else if (route != NULL && strcmp(name, "upstream") == 0)
        route->upstream_line = L->line;
    else if (route != NULL && strcmp(name, "temp_dir") == 0)
        route->temp_dir_line = L->line;
    else if (up != NULL && strcmp(name, "tls_cert") == 0)
        up->_tls_cert_line = L->line;
    else if (up != NULL && strcmp(name, "tls_key") == 0)
        up->_tls_key_line = L->line;
    else if (up == NULL && strcmp(name, "max_connections") == 0)
        L->c->max_connections_line = L->line;
    else if (up != NULL && strcmp(name, "max_connections") == 0)
        up->_max_conns_default = false;
    else if (strcmp(name, "user") == 0)
        L->c->user_line = L->line;
    else if (strcmp(name, "group") == 0)
        L->c->group_line = L->line;
}

/* Keys that may be given several times in one section: each line adds one more. */
static bool key_repeats(const key_t_ *k)
{
    return k->kind == K_ADDRESS || k->kind == K_SERVER || k->kind == K_TLS_CERT || k->kind == K_TLS_KEY ||
           k->kind == K_CIDRS || k->kind == K_NAMES || k->kind == K_FIELD;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    loader_t *L = user;
    const char *why = NULL;
    char whybuf[320];
    unsigned sec = 0;
    tt_conf_listen_t *g = NULL;
    tt_upstream_conf_t *up = NULL;
    tt_conf_route_t *route = NULL;
    tt_conf_vhost_t *vh = NULL;
    if (L->section_bad) return 1; /* its header was reported */
    if (strcmp(section, "listen") == 0 || strncmp(section, "listen ", 7) == 0) {
        sec = S_LISTEN;
        g = listen_group(L->c, section[6] ? section + 7 : "");
    } else if (strncmp(section, "upstream ", 9) == 0 && section[9]) {
        sec = S_UPSTREAM;
        up = upstream_named(L->c, section + 9, true);
    } else if (strncmp(section, "route ", 6) == 0 && section[6]) {
        sec = S_ROUTE;
        route = route_of_section(L->c, section + 6);
    } else if (strncmp(section, "vhost ", 6) == 0 && section[6]) {
        sec = S_VHOST;
        vh = vhost_named(L->c, section + 6, true);
    } else {
        for (size_t i = 0; i < TT_ARRAY_SIZE(section_names); i++)
            if (strcmp(section, section_names[i].name) == 0) sec = section_names[i].bit;
    }
    if (sec == 0) {
        load_fail(L, L->line, "%s:%d: %s: unknown section [%s]", L->c->path, L->line, name, section);
        return 1;
    }
    const key_t_ *k = find_key(sec, name);
    int r;
    if (k == NULL) {
        why = "unknown key";
        r = -1;
    } else if (!key_repeats(k) && L->key_line[key_index(k)] != 0) {
        snprintf(whybuf, sizeof(whybuf), "set twice in [%s] (first on line %d)", section, L->key_line[key_index(k)]);
        why = whybuf;
        r = -1;
    } else if (k->kind == K_ADDRESS) {
        r = add_address(g, value, &why);
    } else if (k->kind == K_SERVER) {
        r = add_server(up, value, &why);
    } else if (k->kind == K_TLS_CERT || k->kind == K_TLS_KEY) {
        r = add_tls_file(g, k->kind == K_TLS_CERT, value, L->line);
    } else if (k->kind == K_CIDRS) {
        r = add_cidrs(L->c, value, &why);
    } else if (k->kind == K_NAMES) {
        r = add_names(vh, value, &why);
    } else if (k->kind == K_REWRITE) {
        r = tt_rules_set_rewrite(&route->rules, value, whybuf, sizeof(whybuf));
        why = whybuf;
    } else if (k->kind == K_FIELD) {
        r = tt_rules_add_field(&route->rules, k->max == 1, (tt_rule_op_t)k->min, value, &why);
    } else {
        void *base = k->base == B_POLICY     ? (g ? (void *)&g->policy : (void *)&L->c->defaults)
                     : k->base == B_UPSTREAM ? (void *)up
                     : k->base == B_ROUTE    ? (void *)route
                     : k->base == B_LISTEN   ? (void *)g
                     : k->base == B_VHOST    ? (void *)vh
                                             : (void *)L->c;
        r = parse_value(k, value, base, &why, whybuf, sizeof(whybuf));
        if (r == 0 && up != NULL && k->base == B_UPSTREAM &&
            k->off == offsetof(tt_upstream_conf_t, resolve_interval_ms) && up->resolve_interval_ms > 0 &&
            up->resolve_interval_ms < 1000) {
            why = "must be 0 (never resolve again) or at least 1s"; /* a resolver loop, not a resolver */
            r = -1;
        }
        if (r == 0 && g != NULL && k->base == B_POLICY) g->set |= 1ull << key_index(k);
        if (r == 0) note_line(L, name, route, up);
    }
    if (k != NULL && L->key_line[key_index(k)] == 0) L->key_line[key_index(k)] = L->line;
    if (r == 0 && route != NULL && k != NULL && strcmp(name, "upstream") != 0 && strcmp(name, "root") != 0 &&
        strcmp(name, "index") != 0)
        route->_rules_set = route->_rules_set ? route->_rules_set : (uint64_t)L->line; /* first rule's line */
    if (r != 0) load_fail(L, L->line, "%s:%d: %s: %s", L->c->path, L->line, name, why);
    return 1;
}

int tt_conf_load(tt_conf_t *c, const char *path, char *err, size_t errlen)
{
    free(c->path);
    c->path = tt_strndup(path, strlen(path));
    if (errlen > 0) err[0] = '\0';
    loader_t L = {.c = c};
    L.f = fopen(path, "r");
    if (L.f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int r = ini_parse_stream(count_lines, &L, on_entry, &L);
    fclose(L.f);
    /* inih keeps going after a syntax error and returns the first one's line: reported with the others. */
    if (r > 0) load_fail(&L, r, "%s:%d: syntax error (expected [section], key = value or a comment)", path, r);
    if (r < 0) load_fail(&L, 0, "%s: cannot be read", path);
    if (L.nerrs > 1) qsort(L.errs, L.nerrs, sizeof(*L.errs), cmp_err_line);
    for (size_t i = 0; i < L.nerrs; i++) err_append(err, errlen, L.errs[i].msg);
    size_t nerrs = L.nerrs;
    free(L.errs);
    for (size_t i = 0; i < L.nsections; i++) free(L.sections[i].name);
    free(L.sections);
    return nerrs ? -1 : 0;
}

/* ---- the command line ---- */

int tt_conf_override(tt_conf_t *c, const char *flag, const char *key, const char *value, char *err, size_t errlen)
{
    const char *why = NULL;
    char whybuf[160];
    const key_t_ *k = find_key(~0u, key);
    TT_BUG_ON(k == NULL || k->kind == K_ADDRESS);
    TT_BUG_ON(k->base == B_UPSTREAM || k->base == B_ROUTE);
    void *base = k->base == B_POLICY ? (void *)&c->_cli : (void *)c;
    if (parse_value(k, value, base, &why, whybuf, sizeof(whybuf)) != 0) {
        snprintf(err, errlen, "%s: %s", flag, why);
        return -1;
    }
    if (k->base == B_POLICY) c->_cli_set |= 1ull << key_index(k);
    if (k->base == B_CONF && k->off == offsetof(tt_conf_t, static_root)) c->static_root_line = 0;
    if (k->base == B_CONF && k->off == offsetof(tt_conf_t, max_connections)) c->max_connections_line = -1;
    return 0;
}

/* The first --listen or --tls-listen replaces every listener of the file (their policies fall back to
 * the defaults); later ones add. Returns the group to add `addr` to, or NULL with `err`. */
static tt_conf_listen_t *cli_group(tt_conf_t *c, const char *flag, const char *addr, const char *name, char *err,
                                   size_t errlen)
{
    const char *why;
    tt_addr_t probe;
    if (tt_addr_parse(addr, true, &probe, &why) != 0) {
        snprintf(err, errlen, "%s %s: %s", flag, addr, why);
        return NULL;
    }
    if (!c->_cli_listen) {
        for (size_t i = 0; i < c->nlistens; i++) {
            free(c->listens[i].name);
            free(c->listens[i].addrs);
            free_tls_files(&c->listens[i]);
        }
        c->nlistens = 0;
        c->_cli_listen = true;
    }
    return listen_group(c, name);
}

int tt_conf_cli_listen(tt_conf_t *c, const char *addr, char *err, size_t errlen)
{
    const char *why;
    tt_conf_listen_t *g = cli_group(c, "--listen", addr, "", err, errlen);
    if (g == NULL) return -1;
    if (add_address(g, addr, &why) != 0) {
        snprintf(err, errlen, "--listen %s: %s", addr, why);
        return -1;
    }
    return 0;
}

int tt_conf_cli_tls_listen(tt_conf_t *c, const char *addr, char *err, size_t errlen)
{
    const char *why;
    tt_conf_listen_t *g = cli_group(c, "--tls-listen", addr, "tls", err, errlen);
    if (g == NULL) return -1;
    g->tls_on = true;
    if (add_address(g, addr, &why) != 0) {
        snprintf(err, errlen, "--tls-listen %s: %s", addr, why);
        return -1;
    }
    return 0;
}

int tt_conf_cli_tls_file(tt_conf_t *c, bool cert, const char *file, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    char **slot = cert ? &c->_cli_tls_cert : &c->_cli_tls_key;
    free(*slot);
    *slot = tt_strndup(file, strlen(file));
    return 0;
}

/* The upstream of a --proxy/--route URL: one per URL, shared by the flags that name it, never a file's
 * [upstream] that happens to have the same name. NULL with `err` when the URL is not usable. */
static tt_upstream_conf_t *cli_upstream(tt_conf_t *c, const char *flag, const char *arg, const char *url, char *err,
                                        size_t errlen)
{
    const char *why;
    tt_upstream_conf_t probe = {0};
    if (add_server(&probe, url, &why) != 0) { /* check first: a refused flag changes nothing */
        snprintf(err, errlen, "%s %s: %s", flag, arg, why);
        return NULL;
    }
    char name[320];
    snprintf(name, sizeof(name), "%s", probe.servers[0].name);
    free(probe.servers[0].name);
    free(probe.servers[0].host);
    free(probe.servers);
    for (size_t i = 0; i < c->nupstreams; i++)
        if (c->upstreams[i]._cli && strcmp(c->upstreams[i].name, name) == 0) return &c->upstreams[i];
    if (upstream_named(c, name, false) != NULL)
        snprintf(name + strlen(name), sizeof(name) - strlen(name), " (%s)", flag);
    tt_upstream_conf_t *u = upstream_named(c, name, true);
    u->_cli = true;
    if (add_server(u, url, &why) != 0) tt_fatal("server accepted once, refused again: %s", why);
    return u;
}

static void route_to(tt_conf_t *c, const char *prefix, const tt_upstream_conf_t *u)
{
    tt_conf_route_t *r = route_for(c, prefix);
    free(r->upstream);
    free(r->root);
    r->root = NULL;
    r->upstream = tt_strndup(u->name, strlen(u->name));
}

int tt_conf_cli_proxy(tt_conf_t *c, const char *url, char *err, size_t errlen)
{
    tt_upstream_conf_t *u = cli_upstream(c, "--proxy", url, url, err, errlen);
    if (u == NULL) return -1;
    route_to(c, "/", u);
    return 0;
}

int tt_conf_cli_route(tt_conf_t *c, const char *spec, char *err, size_t errlen)
{
    const char *eq = strchr(spec, '=');
    if (spec[0] != '/' || eq == NULL || eq[1] == '\0') {
        snprintf(err, errlen, "--route %s: expected PREFIX=http://HOST:PORT, e.g. /api/=http://127.0.0.1:9000", spec);
        return -1;
    }
    tt_upstream_conf_t *u = cli_upstream(c, "--route", spec, eq + 1, err, errlen);
    if (u == NULL) return -1;
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%.*s", (int)TT_MIN((size_t)(eq - spec), sizeof(prefix) - 1), spec);
    route_to(c, prefix, u);
    return 0;
}

static void copy_set(tt_listen_policy_t *dst, const tt_listen_policy_t *src, uint64_t set)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(keys); i++)
        if (i < 64 && (set & (1ull << i)) && keys[i].base == B_POLICY)
            memcpy((char *)dst + keys[i].off, (const char *)src + keys[i].off, keys[i].size);
}

int tt_conf_finish(tt_conf_t *c, char *err, size_t errlen)
{
    if (errlen > 0) err[0] = '\0';
    if (c->nlistens == 0) {
        const char *why;
        if (add_address(listen_group(c, ""), "127.0.0.1:8080", &why) != 0) tt_fatal("default address");
    }
    for (size_t i = 0; i < c->nlistens; i++) {
        tt_conf_listen_t *g = &c->listens[i];
        tt_listen_policy_t own = g->policy;
        g->policy = c->defaults;
        copy_set(&g->policy, &own, g->set);
        copy_set(&g->policy, &c->_cli, c->_cli_set);
        g->policy.name = g->name[0] ? g->name : "default";
        if (g->naddrs == 0) {
            err_addf(err, errlen, "%s: [listen%s%s] has no address", c->path ? c->path : "config",
                     g->name[0] ? " " : "", g->name);
        }
    }
    const char *file = c->path ? c->path : "config";
    for (size_t i = 0; i < c->nlistens; i++) {
        tt_conf_listen_t *g = &c->listens[i];
        if (!g->tls_on) continue;
        if (c->_cli_tls_cert != NULL || c->_cli_tls_key != NULL) {
            /* --tls-cert / --tls-key replace the certificates of every TLS listener */
            free_tls_files(g);
            if (c->_cli_tls_cert) add_tls_file(g, true, c->_cli_tls_cert, 0);
            if (c->_cli_tls_key) add_tls_file(g, false, c->_cli_tls_key, 0);
        }
        if (g->tls.ncerts == 0) {
            err_addf(err, errlen, "%s: [listen%s%s] is TLS but has no tls_cert and tls_key (--tls-cert, --tls-key)",
                     file, g->name[0] ? " " : "", g->name);
            continue;
        }
        for (size_t k = 0; k < g->tls.ncerts; k++)
            if (g->tls.certs[k].cert_file == NULL || g->tls.certs[k].key_file == NULL) {
                err_addf(err, errlen, "%s: [listen%s%s] every tls_cert needs its tls_key (and the other way round)",
                         file, g->name[0] ? " " : "", g->name);
                break;
            }
        if (g->tls.min_version == 0) g->tls.min_version = 0x0303;
        g->tls.alpn_h2 = g->policy.h2.enabled;
        g->tls.tickets = c->tls_tickets;
        if (g->tls.ticket_rotation_ms == 0) g->tls.ticket_rotation_ms = c->tls_ticket_rotation_ms;
        g->tls.cache_size = c->tls_session_cache;
    }
    for (size_t i = 0; i < c->nupstreams; i++) {
        tt_upstream_conf_t *u = &c->upstreams[i];
        if (u->nservers == 0) {
            err_addf(err, errlen, "%s: [upstream %s] has no server", file, u->name);
        }
        if (u->pool.backoff_min_ms > u->pool.backoff_max_ms) {
            err_addf(err, errlen, "%s: [upstream %s] fail_backoff is longer than fail_backoff_max", file, u->name);
        }
        if (u->pool.margin_floor_ms > u->pool.hint_margin_ms) {
            err_addf(err, errlen, "%s: [upstream %s] margin_floor is longer than hint_margin (the largest margin)",
                     file, u->name);
        }
        if (u->_h2c && u->protocol != TT_UP_PROTO_H2)
            err_addf(err, errlen, "%s: [upstream %s] an h2c:// server needs protocol = h2 (the section sets %s)", file,
                     u->name, u->protocol == TT_UP_PROTO_AUTO ? "auto" : "http1");
        if (u->_tcpka_auto) tt_proxy_default_tcp_keepalive(&u->pool, &u->pool.tcp_keepalive);
        u->trusted = c->trusted_proxies;
        u->ntrusted = c->ntrusted_proxies;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        tt_conf_route_t *r = &c->routes[i];
        if ((r->upstream == NULL) == (r->root == NULL)) {
            err_addf(err, errlen, "%s: [route %s] needs exactly one of upstream = NAME or root = DIR", file, r->prefix);
            continue;
        }
        if (r->upstream && upstream_named(c, r->upstream, false) == NULL) {
            err_addf(err, errlen, "%s:%d: upstream: no [upstream %s] section (in [route %s])", file, r->upstream_line,
                     r->upstream, r->prefix);
        }
        if (r->vhost && vhost_named(c, r->vhost, false) == NULL) {
            err_addf(err, errlen, "%s:%d: [route %s %s]: no [vhost %s] section", file, r->line, r->vhost, r->prefix,
                     r->vhost);
        }
        if (r->root && r->_rules_set) {
            err_addf(err, errlen,
                     "%s:%d: [route %s]: strip_prefix, rewrite, proxy_redirect and the header rules are for "
                     "upstream routes, not root",
                     file, (int)r->_rules_set, r->prefix);
        }
    }
    const tt_conf_vhost_t *dflt = NULL;
    for (size_t i = 0; i < c->nvhosts; i++) {
        const tt_conf_vhost_t *v = &c->vhosts[i];
        if (v->is_default && dflt != NULL) {
            err_addf(err, errlen, "%s:%d: [vhost %s]: default = on, but [vhost %s] (line %d) is the default already",
                     file, v->line, v->name, dflt->name, dflt->line);
        } else if (v->is_default) {
            dflt = v;
        }
        if (v->nnames == 0 && !v->is_default) {
            err_addf(err, errlen, "%s:%d: [vhost %s]: needs server_name = NAME... (or default = on)", file, v->line,
                     v->name);
        }
        for (size_t k = 0; k < v->nnames; k++)
            for (size_t j = 0; j <= i; j++)
                for (size_t m = 0; m < (j == i ? k : c->vhosts[j].nnames); m++)
                    if (strcmp(c->vhosts[j].names[m], v->names[k]) == 0) {
                        err_addf(err, errlen, "%s:%d: [vhost %s]: server_name %s is also in [vhost %s]", file, v->line,
                                 v->name, v->names[k], c->vhosts[j].name);
                    }
    }
    if (c->metrics_on && (c->metrics_path == NULL || c->metrics_path[0] != '/')) {
        err_addf(err, errlen, "%s: path: must start with /", c->path ? c->path : "[metrics]");
    }
    return errlen > 0 && err[0] != '\0' ? -1 : 0;
}

/* Why `root` cannot be served from, or NULL. */
static const char *root_problem(const char *root)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return strerror(errno);
    close(fd);
    if (access(root, X_OK) != 0) return strerror(errno);
    return NULL;
}

/* Checks one certificate and its key; a problem goes to `err` at the line of the file at fault ("--tls-cert" or
 * "--tls-key" when a flag named it). */
static void check_tls_pair(const char *file, const tt_tls_cert_conf_t *tc, char *err, size_t errlen)
{
    char why[512];
    if (tc->cert_file == NULL || tc->key_file == NULL) return; /* unpaired: tt_conf_finish() said so */
    int r = tt_tls_cert_check(tc, why, sizeof(why));
    if (r == 0) return;
    int line = r == -1 ? tc->cert_line : tc->key_line;
    const char *key = r == -1 ? "tls_cert" : "tls_key";
    if (line > 0)
        err_addf(err, errlen, "%s:%d: %s: %s", file, line, key, why);
    else
        err_addf(err, errlen, "%s: %s", r == -1 ? "--tls-cert" : "--tls-key", why);
}

int tt_conf_check_files(const tt_conf_t *c, char *err, size_t errlen)
{
    if (errlen > 0) err[0] = '\0';
    const char *file = c->path ? c->path : "config";
    const char *why;
    if (c->static_root != NULL && (why = root_problem(c->static_root)) != NULL) {
        if (c->static_root_line > 0)
            err_addf(err, errlen, "%s:%d: root: %s: %s", file, c->static_root_line, c->static_root, why);
        else
            err_addf(err, errlen, "--root %s: %s", c->static_root, why);
    }
    for (size_t i = 0; i < c->nroutes; i++)
        if (c->routes[i].root != NULL && (why = root_problem(c->routes[i].root)) != NULL)
            err_addf(err, errlen, "%s:%d: root: %s: %s", file, c->routes[i].root_line, c->routes[i].root, why);
    for (size_t i = 0; i < c->nroutes; i++) /* the request buffer's temporary files are made there */
        if (c->routes[i].temp_dir != NULL && ((why = root_problem(c->routes[i].temp_dir)) != NULL ||
                                              (access(c->routes[i].temp_dir, W_OK) != 0 && (why = strerror(errno)))))
            err_addf(err, errlen, "%s:%d: temp_dir: %s: %s", file, c->routes[i].temp_dir_line, c->routes[i].temp_dir,
                     why);
    for (size_t i = 0; i < c->nlistens; i++)
        for (size_t k = 0; c->listens[i].tls_on && k < c->listens[i].tls.ncerts; k++)
            check_tls_pair(file, &c->listens[i].tls.certs[k], err, errlen);
    for (size_t i = 0; i < c->nupstreams; i++) {
        const tt_upstream_conf_t *u = &c->upstreams[i];
        if (u->tls_cert == NULL) continue;
        /* as the client context loads it: without tls_key, the key is in the certificate file */
        tt_tls_cert_conf_t tc = {.cert_file = u->tls_cert,
                                 .key_file = u->tls_key ? u->tls_key : u->tls_cert,
                                 .cert_line = u->_tls_cert_line,
                                 .key_line = u->tls_key ? u->_tls_key_line : u->_tls_cert_line};
        check_tls_pair(file, &tc, err, errlen);
    }
    tt_privs_t ids;
    if (c->group != NULL && c->user == NULL)
        err_addf(err, errlen, "%s:%d: group: needs user (the group is the one to run with after leaving root)", file,
                 c->group_line);
    else if (c->user != NULL && tt_privs_lookup(c->user, NULL, &ids, &why) != 0)
        err_addf(err, errlen, "%s:%d: user: %s: %s", file, c->user_line, c->user, why);
    else if (c->group != NULL && tt_privs_lookup(c->user, c->group, &ids, &why) != 0)
        err_addf(err, errlen, "%s:%d: group: %s: %s", file, c->group_line, c->group, why);
    return errlen > 0 && err[0] != '\0' ? -1 : 0;
}
