/* bench.c -- `tether bench URL`: a load generator on tether's own loop and client connections
 *
 * This file is the command: arguments, the HTTP/2 check and the rows of --compare, text and JSON output.
 * The load itself (worker threads, HTTP/1.1 and HTTP/2 connection slots, open and closed loop) is
 * bench_load.c.
 */
#include "client/h2client.h"
#include "client/upstream.h"
#include "cmd/bench.h"
#include "cmd/cmd.h"
#include "conf/units.h"
#include "net/sock.h"

#include <errno.h>
#include <getopt.h>
#include <unistd.h>

#define DEFAULT_CONNS       10
#define DEFAULT_STREAMS     10
#define DEFAULT_DURATION_MS 10000
#define MAX_CONNS           100000
#define MAX_THREADS         256
#define MAX_STREAMS         10000

static const char bench_usage[] =
    "usage: tether bench URL [options]\n"
    "\n"
    "Load-tests an HTTP/1.1 or HTTP/2 server (http:// or https://) with tether's own event loop and client\n"
    "connections and reports requests/s, latency percentiles (log-linear histogram, 1.6 % precision),\n"
    "connections opened, requests per connection, errors by kind and TLS handshakes (full, resumed).\n"
    "\n"
    "  -c, --connections N    concurrent connections [10]\n"
    "  -d, --duration DUR     run this long [10s]\n"
    "  -n, --requests N       send exactly N requests instead of running for a duration\n"
    "  -t, --threads N        worker threads, each with its own loop and share of connections [1]\n"
    "      --rate RPS         open loop: send RPS requests per second in all, on schedule; latency counts\n"
    "                         from when each request was due (no coordinated omission)\n"
    "      --close            a new connection per request (HTTP/1.1, Connection: close)\n"
    "      --h2               HTTP/2: ALPN h2 over https, prior knowledge (h2c) over http\n"
    "  -m, --streams N        concurrent streams per HTTP/2 connection, with --h2 or --compare [10]\n"
    "      --tls-resume on|off  https: offer the worker's last TLS session on new connections [on]\n"
    "      --insecure         https: do not verify the server's certificate (ignored for http://)\n"
    "      --compare          run keep-alive, then a new connection per request, and print their ratios;\n"
    "                         also HTTP/2 vs HTTP/1.1 when the origin speaks HTTP/2, and for https a new\n"
    "                         connection per request with a resumed vs a full TLS handshake\n"
    "      --timeout DUR      connect (and TLS handshake) timeout and longest wait for a response [5s]\n"
    "      --json             print one JSON object\n"
    "  -h, --help             this text\n"
    "\n"
    "Latency of a request sent on a new connection includes its connect and TLS handshake; an HTTP/2\n"
    "request's latency runs from its stream's start (or due time) to the end of its response. Requests/s\n"
    "counts complete responses of any status; responses with status >= 400 are also counted as bad_status\n"
    "errors. Certificates are checked against the system store (SSL_CERT_FILE and SSL_CERT_DIR apply).\n"
    "Exit status: 0 after a run, 1 when every request failed, 2 for bad arguments.\n";

/* ---- the HTTP/2 check of --compare: does the origin speak HTTP/2? ---- */

typedef struct h2check {
    bool done;
    tt_h2c_err_t err;
    char why[256];
} h2check_t;

static void hc_on_connect(tt_h2c_t *c, tt_h2c_err_t err)
{
    h2check_t *k = tt_h2c_data(c);
    if (err == TT_H2C_OK) return;
    k->done = true;
    k->err = err;
    bool verify = false;
    const char *why = tt_h2c_tls_failure(c, &verify);
    if (err == TT_H2C_NO_H2)
        snprintf(k->why, sizeof(k->why), "%s", why);
    else if (err == TT_H2C_TLS_ERROR)
        tt_cli_tls_failure(k->why, sizeof(k->why), why, verify);
    else
        snprintf(k->why, sizeof(k->why), "cannot connect (%s)", tt_h2c_err_name(err));
}

static void hc_on_head(tt_h2c_t *c, void *sd, int status)
{
    (void)c, (void)sd, (void)status;
}

static void hc_on_stream_end(tt_h2c_t *c, void *sd, tt_h2c_err_t err, uint32_t code)
{
    (void)c, (void)sd, (void)err, (void)code;
}

static void hc_on_close(tt_h2c_t *c, tt_h2c_err_t err)
{
    h2check_t *k = tt_h2c_data(c);
    k->done = true;
    k->err = err == TT_H2C_OK ? TT_H2C_PROTOCOL : err;
    snprintf(k->why, sizeof(k->why), "no HTTP/2 SETTINGS from the origin (%s)", tt_h2c_err_name(k->err));
}

static const tt_h2c_ops_t hc_ops = {hc_on_connect, hc_on_head, hc_on_stream_end, hc_on_close};

/* Connects with HTTP/2 (ALPN h2, or prior knowledge) and waits for the server's SETTINGS, sending no
 * request (the server's request counts stay the runs' own). NULL when the origin speaks HTTP/2, else why
 * not, in `why`. */
static const char *h2_check(bench_t *b, char *why, size_t n)
{
    tt_loop_t *loop = tt_loop_new();
    if (loop == NULL) tt_fatal("tt_loop_new: %s", strerror(errno));
    tt_bufpool_t bufs;
    tt_bufpool_init(&bufs, 16384, 4);
    h2check_t k = {0};
    tt_h2c_conf_t conf = {.connect_ms = b->o.timeout_ms, .response_ms = b->o.timeout_ms, .tls = b->tls_h2};
    tt_h2c_err_t err = TT_H2C_OK;
    tt_h2c_t *c = tt_h2c_connect(loop, &bufs, &b->url.addr, &conf, &hc_ops, &k, &err);
    bool ok = false;
    if (c == NULL) {
        snprintf(k.why, sizeof(k.why), "cannot connect (%s)", tt_h2c_err_name(err));
    } else {
        tt_loop_update_clock(loop);
        uint64_t deadline = tt_loop_now(loop) + b->o.timeout_ms;
        while (!k.done && !(ok = tt_h2c_peer_settings_seen(c)) && tt_loop_now(loop) < deadline)
            tt_loop_run_once(loop, 20);
        if (!k.done && !ok) snprintf(k.why, sizeof(k.why), "no HTTP/2 SETTINGS from the origin within the timeout");
        if (!k.done) tt_h2c_close(c);
    }
    tt_loop_run_once(loop, 0);
    tt_loop_run_once(loop, 0);
    tt_loop_free(&loop);
    tt_bufpool_dispose(&bufs);
    if (ok) return NULL;
    if (b->url.scheme == TT_CLI_HTTP && k.err != TT_H2C_CONNECT_REFUSED)
        snprintf(why, n, "the origin does not speak HTTP/2 with prior knowledge: %s", k.why);
    else if (k.err == TT_H2C_NO_H2)
        snprintf(why, n, "the origin does not speak HTTP/2: %s", k.why);
    else
        snprintf(why, n, "%s", k.why);
    return why;
}

/* ---- output ---- */

static double rps(const bench_run_t *r)
{
    return r->elapsed_s > 0 ? (double)r->st.responses / r->elapsed_s : 0;
}

static double pct_ms(const bench_run_t *r, double p)
{
    return (double)tt_loghist_percentile(&r->st.lat, p) / 1000.0;
}

static uint64_t total_errors(const bench_run_t *r)
{
    uint64_t n = 0;
    for (int k = 0; k < EK__COUNT; k++) n += r->st.errors[k];
    return n;
}

static bool https(const bench_t *b)
{
    return b->url.scheme == TT_CLI_HTTPS;
}

static void print_settings(const bench_t *b, const bench_run_t *r)
{
    const bench_opts_t *o = &b->o;
    printf("tether bench %s://%s%s (%s): %u connections, %u thread%s, ", tt_cli_url_scheme(&b->url), b->url.authority,
           b->url.target, b->addr, o->conns, o->threads, o->threads == 1 ? "" : "s");
    if (o->requests)
        printf("%llu requests", (unsigned long long)o->requests);
    else
        printf("%.1f s", (double)o->duration_ms / 1000.0);
    if (o->rate > 0)
        printf(", open loop at %.0f req/s", o->rate);
    else
        printf(", closed loop");
    printf(", %s\n", r->m.label);
}

static void print_run(const bench_t *b, const bench_run_t *r)
{
    const bench_stats_t *st = &r->st;
    printf("  requests       %llu in %.2f s: %.1f req/s", (unsigned long long)st->responses, r->elapsed_s, rps(r));
    if (b->o.rate > 0) printf(" (target %.0f)", b->o.rate);
    printf("\n  latency        p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (mean %.3f ms)\n",
           pct_ms(r, 50), pct_ms(r, 90), pct_ms(r, 99), pct_ms(r, 99.9), pct_ms(r, 100),
           tt_loghist_mean(&st->lat) / 1000.0);
    printf("  connections    %llu opened, %.1f requests per connection", (unsigned long long)st->conns_opened,
           st->conns_opened ? (double)st->responses / (double)st->conns_opened : 0.0);
    if (r->m.h2) printf(" (HTTP/2, up to %u streams each)", b->o.streams);
    printf("\n  responses     ");
    for (int k = 1; k <= 5; k++)
        if (st->status[k]) printf(" %dxx %llu", k, (unsigned long long)st->status[k]);
    if (st->status[0]) printf(" other %llu", (unsigned long long)st->status[0]);
    printf("\n  errors        ");
    for (int k = 0; k < EK__COUNT; k++) {
        if ((k == EK_RST_STREAM || k == EK_GOAWAY) && !r->m.h2 && st->errors[k] == 0) continue;
        printf(" %s %llu", tt__bench_err_kind_names[k], (unsigned long long)st->errors[k]);
    }
    if (st->first_err) printf("  (first: %s)", st->first_err);
    if (https(b))
        printf("\n  tls handshakes full %llu, resumed %llu (session resumption %s)\n", (unsigned long long)st->tls_full,
               (unsigned long long)st->tls_resumed, r->m.resume ? "offered" : "off");
    else
        printf("\n  tls handshakes none (http)\n");
}

static void json_run(const bench_t *b, const bench_run_t *r)
{
    const bench_stats_t *st = &r->st;
    printf("{\"url\":\"%s://%s%s\",\"label\":\"%s\",\"mode\":\"%s\",\"protocol\":\"%s\",\"connections\":%u,"
           "\"threads\":%u,",
           tt_cli_url_scheme(&b->url), b->url.authority, b->url.target, r->m.label,
           r->m.h2      ? "h2"
           : r->m.close ? "close"
                        : "keep-alive",
           r->m.h2 ? "h2" : "http/1.1", b->o.conns, b->o.threads);
    if (r->m.h2) printf("\"streams\":%u,", b->o.streams);
    if (https(b)) printf("\"tls_resume\":%s,", r->m.resume ? "true" : "false");
    if (b->o.rate > 0) printf("\"target_rate\":%.3f,", b->o.rate);
    printf("\"elapsed_s\":%.6f,\"requests\":%llu,\"rps\":%.3f,", r->elapsed_s, (unsigned long long)st->responses,
           rps(r));
    printf("\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p99_9\":%llu,\"max\":%llu,\"mean\":%.1f},",
           (unsigned long long)tt_loghist_percentile(&st->lat, 50),
           (unsigned long long)tt_loghist_percentile(&st->lat, 90),
           (unsigned long long)tt_loghist_percentile(&st->lat, 99),
           (unsigned long long)tt_loghist_percentile(&st->lat, 99.9),
           (unsigned long long)tt_loghist_percentile(&st->lat, 100), tt_loghist_mean(&st->lat));
    printf("\"connections_opened\":%llu,\"requests_per_connection\":%.3f,", (unsigned long long)st->conns_opened,
           st->conns_opened ? (double)st->responses / (double)st->conns_opened : 0.0);
    printf("\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%llu,\"other\":%llu},\"errors\":{",
           (unsigned long long)st->status[1], (unsigned long long)st->status[2], (unsigned long long)st->status[3],
           (unsigned long long)st->status[4], (unsigned long long)st->status[5], (unsigned long long)st->status[0]);
    for (int k = 0; k < EK__COUNT; k++)
        printf("%s\"%s\":%llu", k ? "," : "", tt__bench_err_kind_names[k], (unsigned long long)st->errors[k]);
    printf("},\"tls\":{\"full\":%llu,\"resumed\":%llu}}", (unsigned long long)st->tls_full,
           (unsigned long long)st->tls_resumed);
}

/* ---- --compare ---- */

#define MAX_ROWS 4

/** The runs of --compare, the ratios between pairs of them and the rows that could not run. */
typedef struct compare {
    bench_run_t *runs[MAX_ROWS];
    int nruns;
    const bench_run_t *ka, *close, *h2, *resumed, *full;
    const char *skip_row[2];
    char skip_reason[2][320];
    int nskipped;
} compare_t;

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

/* "fast" over "slow": req/s fast / slow, latencies slow / fast. */
static void print_ratio(const char *label, const bench_run_t *fast, const bench_run_t *slow)
{
    printf("  %-32s %11.2fx %9.2fx %9.2fx %9.2fx\n", label, ratio(rps(fast), rps(slow)),
           ratio(pct_ms(slow, 50), pct_ms(fast, 50)), ratio(pct_ms(slow, 99), pct_ms(fast, 99)),
           ratio(pct_ms(slow, 99.9), pct_ms(fast, 99.9)));
}

static void print_row(const bench_run_t *r)
{
    printf("  %-32s %12.1f %10.3f %10.3f %10.3f %9llu %7llu\n", r->m.label, rps(r), pct_ms(r, 50), pct_ms(r, 99),
           pct_ms(r, 99.9), (unsigned long long)r->st.conns_opened, (unsigned long long)total_errors(r));
}

static void print_compare(const compare_t *k)
{
    printf("\n%-34s %12s %10s %10s %10s %9s %7s\n", "compare", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "conns",
           "errors");
    print_row(k->ka);
    print_row(k->close);
    print_ratio("keep-alive advantage", k->ka, k->close);
    if (k->full) {
        print_row(k->resumed == k->close ? k->full : k->resumed);
        print_ratio("TLS resumption advantage", k->resumed, k->full);
    }
    if (k->h2) {
        print_row(k->h2);
        print_ratio("HTTP/2 vs HTTP/1.1 keep-alive", k->h2, k->ka);
    }
    printf("  (ratios: req/s of the faster row over the slower; latencies of the slower over the faster)\n");
    if (k->full && k->resumed->st.tls_resumed == 0)
        printf(
            "note: the origin resumed no TLS session (no session tickets or cache): both rows did full handshakes\n");
    for (int i = 0; i < k->nskipped; i++) printf("skipped: %s: %s\n", k->skip_row[i], k->skip_reason[i]);
}

static void json_ratio(const char *key, const bench_run_t *fast, const bench_run_t *slow, bool comma)
{
    printf("\"%s\":{\"rps\":%.4f,\"p50\":%.4f,\"p99\":%.4f,\"p99_9\":%.4f}%s", key, ratio(rps(fast), rps(slow)),
           ratio(pct_ms(slow, 50), pct_ms(fast, 50)), ratio(pct_ms(slow, 99), pct_ms(fast, 99)),
           ratio(pct_ms(slow, 99.9), pct_ms(fast, 99.9)), comma ? "," : "");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_compare(const bench_t *b, const compare_t *k)
{
    printf("{\"url\":\"%s://%s%s\",\"runs\":[", tt_cli_url_scheme(&b->url), b->url.authority, b->url.target);
    for (int i = 0; i < k->nruns; i++) {
        if (i) printf(",");
        json_run(b, k->runs[i]);
    }
    printf("],\"ratios\":{");
    json_ratio("keepalive_vs_close", k->ka, k->close, k->h2 || k->full);
    if (k->h2) json_ratio("h2_vs_h1", k->h2, k->ka, k->full != NULL);
    if (k->full) json_ratio("tls_resumed_vs_full", k->resumed, k->full, false);
    printf("},\"skipped\":[");
    for (int i = 0; i < k->nskipped; i++) {
        printf("%s{\"row\":\"%s\",\"reason\":", i ? "," : "", k->skip_row[i]);
        json_str(k->skip_reason[i]);
        printf("}");
    }
    printf("]}\n");
}

/* ---- failures ---- */

static int report_failure(const bench_t *b, const bench_run_t *r)
{
    char why[384];
    if (r->st.first_detail && (r->st.first_verify || strcmp(r->st.first_err, "tls_error") == 0))
        tt_cli_tls_failure(why, sizeof(why), r->st.first_detail, r->st.first_verify);
    else if (r->st.first_detail)
        snprintf(why, sizeof(why), "%s: %s", r->st.first_err, r->st.first_detail);
    else
        snprintf(why, sizeof(why), "%s",
                 r->st.first_err ? r->st.first_err : "no response before the run ended (requests in flight dropped)");
    fprintf(stderr, "tether bench: every request to %s (%s) failed: %s\n", b->url.authority, b->addr, why);
    if (b->o.json) {
        printf("{\"error\":");
        char msg[448];
        snprintf(msg, sizeof(msg), "every request failed: %s", why);
        json_str(msg);
        printf(",\"origin\":");
        json_str(b->url.authority);
        printf("}\n");
    }
    return 1;
}

/* ---- running ---- */

static bench_mode_t mode_of(const bench_t *b, const char *label, bool close, bool h2, bool resume)
{
    return (bench_mode_t){.label = label, .close = close, .h2 = h2, .resume = https(b) && resume};
}

static int run_single(bench_t *b)
{
    const bench_opts_t *o = &b->o;
    const char *label = o->h2 ? "HTTP/2" : o->close ? "new connection per request" : "keep-alive";
    bench_mode_t m = mode_of(b, label, o->close, o->h2, o->tls_resume);
    bench_run_t *r = tt_calloc(1, sizeof(*r));
    tt__bench_run(b, &m, r);
    int rc = 0;
    if (r->all_failed) {
        rc = report_failure(b, r);
    } else if (o->json) {
        json_run(b, r);
        printf("\n");
    } else {
        print_settings(b, r);
        print_run(b, r);
    }
    free(r);
    return rc;
}

static bench_run_t *compare_add(bench_t *b, compare_t *k, bench_mode_t m)
{
    bench_run_t *r = tt_calloc(1, sizeof(*r));
    k->runs[k->nruns++] = r;
    tt__bench_run(b, &m, r);
    return r->all_failed ? NULL : r;
}

static void compare_skip(compare_t *k, const char *row, const char *reason)
{
    k->skip_row[k->nskipped] = row;
    snprintf(k->skip_reason[k->nskipped], sizeof(k->skip_reason[0]), "%s", reason);
    k->nskipped++;
}

static int run_compare(bench_t *b)
{
    compare_t k = {0};
    char why[320];
    const char *no_h2 = h2_check(b, why, sizeof(why));
    const bench_run_t *failed = NULL;
    char h2_label[64]; /* the runs point at it until they are printed and freed below */
    snprintf(h2_label, sizeof(h2_label), "HTTP/2, %u streams per connection", b->o.streams);
    const char *close_label = !https(b)         ? "new connection per request"
                              : b->o.tls_resume ? "new connection, TLS resumed"
                                                : "new connection, TLS full handshake";
    if (!(k.ka = compare_add(b, &k, mode_of(b, "keep-alive", false, false, b->o.tls_resume))))
        failed = k.runs[0];
    else if (!(k.close = compare_add(b, &k, mode_of(b, close_label, true, false, b->o.tls_resume))))
        failed = k.runs[1];
    if (!failed && https(b)) {
        const char *other = b->o.tls_resume ? "new connection, TLS full handshake" : "new connection, TLS resumed";
        const bench_run_t *r = compare_add(b, &k, mode_of(b, other, true, false, !b->o.tls_resume));
        if (r) {
            k.resumed = b->o.tls_resume ? k.close : r;
            k.full = b->o.tls_resume ? r : k.close;
        } else {
            compare_skip(&k, "TLS resumed vs full handshake", "every request of the second run failed");
        }
    } else if (!failed) {
        compare_skip(&k, "TLS resumed vs full handshake", "the origin is http://");
    }
    if (!failed && no_h2 == NULL) {
        if (!(k.h2 = compare_add(b, &k, mode_of(b, h2_label, false, true, b->o.tls_resume))))
            compare_skip(&k, "HTTP/1.1 vs HTTP/2", "every HTTP/2 request failed");
    } else if (!failed) {
        compare_skip(&k, "HTTP/1.1 vs HTTP/2", no_h2);
    }
    int rc = 0;
    if (failed) {
        rc = report_failure(b, failed);
    } else if (b->o.json) {
        json_compare(b, &k);
    } else {
        for (int i = 0; i < k.nruns; i++) {
            if (k.runs[i]->all_failed) continue;
            print_settings(b, k.runs[i]);
            print_run(b, k.runs[i]);
        }
        print_compare(&k);
    }
    for (int i = 0; i < k.nruns; i++) free(k.runs[i]);
    return rc;
}

/* ---- arguments ---- */

enum { OPT_RATE = 256, OPT_CLOSE, OPT_H2, OPT_TLSRESUME, OPT_INSECURE, OPT_COMPARE, OPT_JSON, OPT_TIMEOUT };

static const struct option bench_long_opts[] = {
    {"connections", required_argument, NULL, 'c'},
    {"duration", required_argument, NULL, 'd'},
    {"requests", required_argument, NULL, 'n'},
    {"threads", required_argument, NULL, 't'},
    {"streams", required_argument, NULL, 'm'},
    {"rate", required_argument, NULL, OPT_RATE},
    {"close", no_argument, NULL, OPT_CLOSE},
    {"h2", no_argument, NULL, OPT_H2},
    {"tls-resume", required_argument, NULL, OPT_TLSRESUME},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"compare", no_argument, NULL, OPT_COMPARE},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/** Flags given, for the checks that need the URL too. */
typedef struct given {
    bool duration, streams, tls_resume;
} given_t;

static int bad_arg(const char *flag, const char *val, const char *why)
{
    fprintf(stderr, "tether bench: %s %s: %s\n", flag, val, why);
    return 2;
}

static int parse_uint_arg(const char *flag, const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
    const char *why;
    return tt_units_uint(s, min, max, v, &why) == 0 ? 0 : bad_arg(flag, s, why);
}

static int parse_rate(const char *s, double *rate)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e8)
        return bad_arg("--rate", s, "expected requests per second > 0");
    *rate = v;
    return 0;
}

/* One option; 0 to go on, else an exit status (-1 for --help's 0). */
static int apply_opt(int opt, bench_opts_t *o, given_t *g)
{
    uint64_t v;
    const char *why;
    switch (opt) {
    case 'h': fputs(bench_usage, stdout); return -1;
    case 'c':
        if (parse_uint_arg("-c", optarg, 1, MAX_CONNS, &v)) return 2;
        o->conns = (uint32_t)v;
        return 0;
    case 't':
        if (parse_uint_arg("-t", optarg, 1, MAX_THREADS, &v)) return 2;
        o->threads = (uint32_t)v;
        return 0;
    case 'n': return parse_uint_arg("-n", optarg, 1, UINT64_C(1) << 40, &o->requests) ? 2 : 0;
    case 'm':
        g->streams = true;
        if (parse_uint_arg("-m", optarg, 1, MAX_STREAMS, &v)) return 2;
        o->streams = (uint32_t)v;
        return 0;
    case 'd':
        g->duration = true;
        if (tt_units_duration(optarg, &o->duration_ms, &why) != 0) return bad_arg("-d", optarg, why);
        return o->duration_ms ? 0 : bad_arg("-d", optarg, "must be more than 0");
    case OPT_TIMEOUT:
        if (tt_units_duration(optarg, &o->timeout_ms, &why) != 0) return bad_arg("--timeout", optarg, why);
        return o->timeout_ms ? 0 : bad_arg("--timeout", optarg, "must be more than 0");
    case OPT_RATE: return parse_rate(optarg, &o->rate) ? 2 : 0;
    case OPT_CLOSE: o->close = true; return 0;
    case OPT_H2: o->h2 = true; return 0;
    case OPT_TLSRESUME:
        g->tls_resume = true;
        if (strcmp(optarg, "on") == 0 || strcmp(optarg, "off") == 0) {
            o->tls_resume = strcmp(optarg, "on") == 0;
            return 0;
        }
        return bad_arg("--tls-resume", optarg, "expected on or off");
    case OPT_INSECURE: o->insecure = true; return 0;
    case OPT_COMPARE: o->compare = true; return 0;
    case OPT_JSON: o->json = true; return 0;
    default: return 2;
    }
}

/* Combinations that make no sense. 0 or an exit status. */
static int check_combination(const bench_opts_t *o, const given_t *g)
{
    const char *why = NULL;
    if (g->duration && o->requests)
        why = "give -d or -n, not both";
    else if (o->compare && o->close)
        why = "--compare runs with and without --close itself; drop --close";
    else if (o->compare && o->h2)
        why = "--compare runs HTTP/2 itself when the origin speaks it; drop --h2 (-m still sets its streams)";
    else if (o->h2 && o->close)
        why = "--close is HTTP/1.1's new connection per request; give --h2 or --close, not both";
    else if (g->streams && !o->h2 && !o->compare)
        why = "-m sets HTTP/2 streams per connection and needs --h2 (or --compare)";
    if (why == NULL && o->threads > o->conns) {
        fprintf(stderr, "tether bench: -t %u needs at least as many connections (-c)\n", o->threads);
        return 2;
    }
    if (why) fprintf(stderr, "tether bench: %s\n", why);
    return why ? 2 : 0;
}

/* Exit status to stop with (0 after --help), or -1 to go on. */
static int parse_args(int argc, char **argv, bench_t *b, given_t *g, const char **url)
{
    int opt, r;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "hc:d:n:t:m:", bench_long_opts, NULL)) != -1)
        if ((r = apply_opt(opt, &b->o, g)) != 0) return r < 0 ? 0 : r;
    if (optind != argc - 1) {
        fprintf(stderr, "tether bench: expected one URL (see tether bench --help)\n");
        return 2;
    }
    *url = argv[optind];
    if ((r = check_combination(&b->o, g)) != 0) return r;
    return -1;
}

static int setup_url(bench_t *b, const given_t *g, const char *arg)
{
    const char *why = NULL;
    if (tt_cli_url_parse(arg, &b->url, &why) != 0) {
        fprintf(stderr, "tether bench: %s: %s\n", arg, why);
        return 2;
    }
    const char *unsupported = tt_cli_url_unsupported(&b->url);
    if (unsupported) {
        fprintf(stderr, "tether bench: %s\n", unsupported);
        return 2;
    }
    /* --insecure with http:// is accepted and means nothing (as curl, and as `tether probe`); --tls-resume asks
     * for something an http:// run cannot measure, so it stays an error */
    if (!https(b) && g->tls_resume) {
        fprintf(stderr, "tether bench: --tls-resume applies to https:// URLs only\n");
        return 2;
    }
    if (tt_cli_url_resolve(&b->url, &why) != 0) {
        fprintf(stderr, "tether bench: %s: %s\n", b->url.host, why);
        return 1;
    }
    tt_addr_format(&b->url.addr, b->addr, sizeof(b->addr));
    if (https(b)) {
        char err[384];
        b->tls_h1 = tt_cli_url_tls_client(&b->url, b->o.insecure, false, err, sizeof(err));
        b->tls_h2 = b->tls_h1 ? tt_cli_url_tls_client(&b->url, b->o.insecure, true, err, sizeof(err)) : NULL;
        if (b->tls_h2 == NULL) {
            fprintf(stderr, "tether bench: %s\n", err);
            return 1;
        }
    }
    return -1;
}

int tt_cmd_bench(int argc, char **argv)
{
    bench_t *b = tt_calloc(1, sizeof(*b));
    b->o = (bench_opts_t){.conns = DEFAULT_CONNS,
                          .threads = 1,
                          .streams = DEFAULT_STREAMS,
                          .duration_ms = DEFAULT_DURATION_MS,
                          .tls_resume = true,
                          .timeout_ms = 5000};
    given_t g = {0};
    const char *url = NULL;
    int rc = parse_args(argc, argv, b, &g, &url);
    if (rc < 0) rc = setup_url(b, &g, url);
    if (rc < 0) {
        b->tty = isatty(STDERR_FILENO) == 1;
        tt_sock_raise_nofile();
        rc = b->o.compare ? run_compare(b) : run_single(b);
    }
    tt_tls_client_free(&b->tls_h1);
    tt_tls_client_free(&b->tls_h2);
    free(b);
    return rc;
}
