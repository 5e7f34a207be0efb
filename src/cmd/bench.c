/* bench.c -- `tether bench URL`: a load generator on tether's own loop and client connection (tt_upconn_t)
 *
 * Closed loop: every connection slot sends its next request as soon as the last one is answered. Open loop
 * (--rate): request k is due at start + k/rate; a free slot sends it, late if need be, and its latency counts
 * from when it was due, so a stalled server cannot hide its stall by slowing the client (no coordinated
 * omission, as in wrk2). A request on a new connection counts its connect in its latency. Each worker thread
 * has its own loop, slots and stats, merged at the end; the main thread only shows progress.
 */
#include "client/upstream.h"
#include "cmd/cli_url.h"
#include "cmd/cmd.h"
#include "conf/units.h"
#include "metrics/loghist.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNS       10
#define DEFAULT_DURATION_MS 10000
#define MAX_CONNS           100000
#define MAX_THREADS         256
#define PROGRESS_MS         250
#define AGENT               "tether-bench/" TETHER_VERSION

static const char bench_usage[] =
    "usage: tether bench URL [options]\n"
    "\n"
    "Load-tests an HTTP/1.1 server with tether's own event loop and client connections and reports\n"
    "requests/s, latency percentiles (log-linear histogram, 1.6 % precision), connections opened,\n"
    "requests per connection and errors by kind.\n"
    "\n"
    "  -c, --connections N    concurrent connections [10]\n"
    "  -d, --duration DUR     run this long [10s]\n"
    "  -n, --requests N       send exactly N requests instead of running for a duration\n"
    "  -t, --threads N        worker threads, each with its own loop and share of connections [1]\n"
    "      --rate RPS         open loop: send RPS requests per second in all, on schedule; latency counts\n"
    "                         from when each request was due (no coordinated omission)\n"
    "      --close            a new connection per request (Connection: close)\n"
    "      --compare          run keep-alive, then a new connection per request, and print their ratios\n"
    "                         (HTTP/1.1 vs HTTP/2 and TLS resumed vs full when the build and origin allow)\n"
    "      --timeout DUR      connect timeout and longest wait for a response [5s]\n"
    "      --json             print one JSON object\n"
    "      --h2               HTTP/2 (no HTTP/2 client in this build yet)\n"
    "  -m, --streams N        concurrent streams per HTTP/2 connection (with --h2)\n"
    "      --tls-resume on|off  resume TLS sessions (https; not in this build yet)\n"
    "  -h, --help             this text\n"
    "\n"
    "Latency of a request sent on a new connection includes its connect. Requests/s counts complete\n"
    "responses of any status; responses with status >= 400 are also counted as bad_status errors.\n"
    "Exit status: 0 after a run, 1 when every request failed, 2 for bad arguments or what this build\n"
    "cannot do (https, --h2, --tls-resume).\n";

/* ---- error kinds ---- */

typedef enum err_kind { EK_CONNECT, EK_RESET, EK_TIMEOUT, EK_BAD_STATUS, EK_INVALID, EK__COUNT } err_kind_t;
static const char *const err_kind_names[EK__COUNT] = {"connect", "reset", "timeout", "bad_status", "invalid"};

static err_kind_t err_kind_of(tt_up_err_t e)
{
    switch (e) {
    case TT_UP_CONNECT_REFUSED:
    case TT_UP_CONNECT_TIMEOUT:
    case TT_UP_CONNECT_ERROR: return EK_CONNECT;
    case TT_UP_RESPONSE_TIMEOUT:
    case TT_UP_READ_TIMEOUT:
    case TT_UP_SEND_TIMEOUT: return EK_TIMEOUT;
    case TT_UP_INVALID: return EK_INVALID;
    default: return EK_RESET; /* reset, or closed before the response was complete */
    }
}

/* ---- configuration and results ---- */

typedef struct bench_opts {
    uint32_t conns;
    uint32_t threads;
    uint64_t duration_ms;
    uint64_t requests; /* 0: run for duration_ms */
    double rate;       /* 0: closed loop */
    bool close;
    bool compare;
    bool json;
    uint64_t timeout_ms;
} bench_opts_t;

/** What one worker (and, merged, one run) counted. */
typedef struct bench_stats {
    tt_loghist_t lat; /* us, complete responses */
    uint64_t responses;
    uint64_t status[6]; /* [0] other, [1..5] 1xx..5xx */
    uint64_t errors[EK__COUNT];
    uint64_t conns_opened;
    uint64_t tls_full, tls_resumed; /* stay 0 until the build has TLS */
    tt_up_err_t first_err;
} bench_stats_t;

/** One run: the settings it used and what it measured. */
typedef struct bench_run {
    const char *label;
    bool close;
    double elapsed_s;
    bool all_failed;
    bench_stats_t st;
} bench_run_t;

typedef struct bench bench_t;
typedef struct worker worker_t;

/** A connection slot: at most one request in flight, on `u` (NULL when it has no connection). */
typedef struct slot {
    worker_t *w;
    tt_upconn_t *u;
    uint64_t start_us; /* when the request in flight started (or was due) */
    bool busy;
    struct slot *next_free;
    tt_defer_t retry; /* restarts a closed-loop slot at the next turn after a failure */
} slot_t;

struct worker {
    bench_t *b;
    pthread_t thread;
    tt_loop_t *loop;
    tt_bufpool_t bufs;
    tt_h1_response_t res;
    tt_up_timeouts_t to;
    slot_t *slots;
    uint32_t nslots;
    uint64_t budget; /* requests this worker may start; UINT64_MAX when running for a duration */
    uint64_t issued;
    uint64_t finished;
    double interval_us; /* open loop: time between due requests of this worker */
    uint64_t next_k;
    slot_t *free_slots;
    tt_io_t rate_io; /* a timerfd: due times are microseconds apart, the loop's timers milliseconds */
    bool rate_armed;
    tt_timer_t stop_timer;
    uint64_t start_us;
    uint64_t end_us;
    bool stopping;
    bench_stats_t st;
    _Atomic uint64_t done_count; /* responses + errors, read by the main thread */
    _Atomic bool exited;
};

struct bench {
    bench_opts_t o;
    tt_cli_url_t url;
    char addr[TT_ADDR_STRLEN];
    bool tty;
    bool close; /* of the current run */
    char req[4096];
    size_t req_len;
    worker_t *workers;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- stopping ---- */

static void worker_stop(worker_t *w)
{
    if (w->stopping) return;
    w->stopping = true;
    w->end_us = now_us();
    tt_timer_disarm(w->loop, &w->stop_timer);
    for (uint32_t i = 0; i < w->nslots; i++) {
        if (w->slots[i].u) tt_upconn_close(w->slots[i].u);
        w->slots[i].u = NULL;
    }
    tt_loop_stop(w->loop);
}

static void stop_on_timer(tt_timer_t *t)
{
    worker_stop(tt_container_of(t, worker_t, stop_timer));
}

/* ---- requests ---- */

static void slot_next(slot_t *s);
static void dispatch_due(worker_t *w);
static const tt_upconn_ops_t bench_ops;

static void slot_send(slot_t *s)
{
    worker_t *w = s->w;
    tt_upconn_begin(s->u, false);
    (void)tt_upconn_send(s->u, w->b->req, w->b->req_len);
    tt_upconn_end_request(s->u);
}

/* Counts one finished attempt; stops the worker when its budget is spent or nothing ever succeeds. */
static bool attempt_finished(worker_t *w)
{
    w->finished++;
    atomic_store_explicit(&w->done_count, w->finished, memory_order_relaxed);
    uint64_t failed = 0; /* attempts without a response (bad_status ones have one) */
    for (int k = 0; k < EK__COUNT; k++)
        if (k != EK_BAD_STATUS) failed += w->st.errors[k];
    if (w->finished >= w->budget || (w->st.responses == 0 && failed >= w->nslots)) {
        worker_stop(w);
        return false;
    }
    return true;
}

static void retry_cb(tt_defer_t *d)
{
    slot_t *s = tt_container_of(d, slot_t, retry);
    if (!s->w->stopping) slot_next(s);
}

static void slot_failed(slot_t *s, tt_up_err_t err)
{
    worker_t *w = s->w;
    s->busy = false;
    if (w->st.first_err == TT_UP_OK) w->st.first_err = err;
    w->st.errors[err_kind_of(err)]++;
    if (!attempt_finished(w)) return;
    /* Next turn, not now: a connect refused at once must not recurse. */
    tt_loop_defer(w->loop, &s->retry, retry_cb);
}

/* Starts the slot's request: on its connection, or on a new one. */
static void slot_start(slot_t *s, uint64_t start_us)
{
    worker_t *w = s->w;
    w->issued++;
    s->busy = true;
    s->start_us = start_us;
    if (s->u) {
        slot_send(s);
        return;
    }
    tt_up_err_t err = TT_UP_OK;
    w->st.conns_opened++;
    s->u = tt_upconn_connect(w->loop, &w->bufs, &w->res, &w->b->url.addr, NULL, &w->to, &bench_ops, s, &err);
    if (s->u == NULL) slot_failed(s, err);
}

/* Closed loop: the next request at once. Open loop: back to the free list, then whatever is due. */
static void slot_next(slot_t *s)
{
    worker_t *w = s->w;
    if (w->stopping) return;
    if (w->b->o.rate > 0) {
        s->next_free = w->free_slots;
        w->free_slots = s;
        dispatch_due(w);
        return;
    }
    if (w->issued < w->budget) slot_start(s, now_us());
}

static uint64_t due_at(const worker_t *w, uint64_t k)
{
    return w->start_us + (uint64_t)((double)k * w->interval_us);
}

static void rate_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    worker_t *w = tt_container_of(io, worker_t, rate_io);
    uint64_t expirations;
    ssize_t n = read(io->fd, &expirations, sizeof(expirations)); /* EAGAIN when re-armed meanwhile: fine */
    (void)n;
    w->rate_armed = false;
    dispatch_due(w);
}

/* Arms the timerfd for the absolute CLOCK_MONOTONIC time `at_us`. */
static void rate_arm(worker_t *w, uint64_t at_us)
{
    struct itimerspec its = {.it_value = {(time_t)(at_us / 1000000u), (long)(at_us % 1000000u) * 1000L}};
    if (timerfd_settime(w->rate_io.fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        tt_fatal("timerfd_settime: %s", strerror(errno));
    w->rate_armed = true;
}

/* Open loop: hands every due request to a free slot; waits for a slot or for the next due time. */
static void dispatch_due(worker_t *w)
{
    uint64_t now = now_us();
    while (!w->stopping && w->issued < w->budget && w->free_slots && due_at(w, w->next_k) <= now) {
        slot_t *s = w->free_slots;
        w->free_slots = s->next_free;
        slot_start(s, due_at(w, w->next_k++));
    }
    if (w->stopping || w->issued >= w->budget || w->rate_armed) return;
    uint64_t due = due_at(w, w->next_k);
    if (due > now) rate_arm(w, due);
}

/* ---- connection callbacks ---- */

static void b_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    slot_t *s = u->data;
    if (err != TT_UP_OK) {
        s->u = NULL; /* closed and freed by upstream.c */
        slot_failed(s, err);
        return;
    }
    slot_send(s);
}

static void b_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    slot_t *s = u->data;
    if (res->status < 200) return;
    int cls = res->status / 100;
    s->w->st.status[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (res->status >= 400) s->w->st.errors[EK_BAD_STATUS]++;
}

static void b_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    (void)u, (void)data, (void)len;
}

static void b_on_parked_event(tt_upconn_t *u)
{
    slot_t *s = u->data;
    tt_upconn_close(u);
    s->u = NULL; /* the server closed it while idle: the slot reconnects when next used */
}

static void b_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    (void)trailers;
    slot_t *s = u->data;
    worker_t *w = s->w;
    tt_loghist_record(&w->st.lat, now_us() - s->start_us);
    w->st.responses++;
    s->busy = false;
    if (w->b->close || !u->reusable) {
        tt_upconn_close(u);
        s->u = NULL;
    } else if (w->b->o.rate > 0) {
        tt_upconn_park(u, &bench_ops, s);
    }
    if (attempt_finished(w)) slot_next(s);
}

static void b_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    slot_t *s = u->data;
    tt_upconn_close(u);
    s->u = NULL;
    slot_failed(s, err);
}

static void b_on_drain(tt_upconn_t *u)
{
    (void)u;
}

static const tt_upconn_ops_t bench_ops = {
    .on_connect = b_on_connect,
    .on_head = b_on_head,
    .on_body = b_on_body,
    .on_done = b_on_done,
    .on_error = b_on_error,
    .on_drain = b_on_drain,
    .on_parked_event = b_on_parked_event,
};

/* ---- workers ---- */

static void worker_begin(worker_t *w)
{
    w->start_us = now_us();
    if (w->budget == 0) {
        worker_stop(w);
        return;
    }
    if (w->b->o.requests == 0) tt_timer_arm(w->loop, &w->stop_timer, w->b->o.duration_ms);
    if (w->b->o.rate > 0) {
        for (uint32_t i = w->nslots; i-- > 0;) {
            w->slots[i].next_free = w->free_slots;
            w->free_slots = &w->slots[i];
        }
        dispatch_due(w);
        return;
    }
    for (uint32_t i = 0; i < w->nslots && !w->stopping && w->issued < w->budget; i++)
        slot_start(&w->slots[i], now_us());
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    tt_loop_update_clock(w->loop);
    worker_begin(w);
    if (!w->stopping) tt_loop_run(w->loop);
    /* Two turns free the connections closed by worker_stop (deferred frees). */
    tt_loop_run_once(w->loop, 0);
    tt_loop_run_once(w->loop, 0);
    atomic_store_explicit(&w->exited, true, memory_order_release);
    return NULL;
}

static void worker_init(bench_t *b, worker_t *w, uint32_t idx)
{
    const bench_opts_t *o = &b->o;
    uint32_t t = o->threads;
    w->b = b;
    w->loop = tt_loop_new();
    if (w->loop == NULL) tt_fatal("tt_loop_new: %s", strerror(errno));
    tt_bufpool_init(&w->bufs, 16384, 64);
    w->to = (tt_up_timeouts_t){o->timeout_ms, o->timeout_ms, o->timeout_ms, o->timeout_ms};
    w->nslots = o->conns / t + (idx < o->conns % t);
    w->slots = tt_calloc(w->nslots, sizeof(slot_t));
    for (uint32_t i = 0; i < w->nslots; i++) {
        w->slots[i].w = w;
    }
    w->budget = o->requests ? o->requests / t + (idx < o->requests % t) : UINT64_MAX;
    if (o->rate > 0) w->interval_us = 1e6 * (double)t / o->rate;
    w->rate_io.fd = -1;
    if (o->rate > 0) {
        w->rate_io.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        w->rate_io.cb = rate_on_io;
        if (w->rate_io.fd < 0 || tt_io_start(w->loop, &w->rate_io, TT_EV_READ) != 0)
            tt_fatal("timerfd: %s", strerror(errno));
    }
    tt_timer_init(&w->stop_timer, stop_on_timer);
    tt_loghist_init(&w->st.lat);
}

static void worker_dispose(worker_t *w)
{
    if (w->rate_io.fd >= 0) {
        tt_io_stop(w->loop, &w->rate_io);
        close(w->rate_io.fd);
    }
    tt_loop_free(&w->loop);
    tt_bufpool_dispose(&w->bufs);
    free(w->slots);
}

/* ---- progress ---- */

static uint64_t total_done(const bench_t *b)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < b->o.threads; i++)
        n += atomic_load_explicit(&b->workers[i].done_count, memory_order_relaxed);
    return n;
}

static bool all_exited(const bench_t *b)
{
    for (uint32_t i = 0; i < b->o.threads; i++)
        if (!atomic_load_explicit(&b->workers[i].exited, memory_order_acquire)) return false;
    return true;
}

/* The main thread's part: a progress line on a terminal until every worker has finished. */
static void watch_progress(const bench_t *b, const char *label)
{
    uint64_t t0 = now_us(), last_t = t0, last_n = 0;
    uint64_t wait_ms = b->tty ? PROGRESS_MS : 20;
    while (!all_exited(b)) {
        struct timespec ts = {0, (long)wait_ms * 1000000L};
        nanosleep(&ts, NULL);
        if (!b->tty) continue;
        uint64_t t = now_us(), n = total_done(b);
        double rate = t > last_t ? (double)(n - last_n) * 1e6 / (double)(t - last_t) : 0;
        if (b->o.requests)
            fprintf(stderr, "\r\033[Kbench %s: %.1f s, %llu of %llu requests, %.0f req/s now", label,
                    (double)(t - t0) / 1e6, (unsigned long long)n, (unsigned long long)b->o.requests, rate);
        else
            fprintf(stderr, "\r\033[Kbench %s: %.1f s of %.1f s, %llu requests, %.0f req/s now", label,
                    (double)(t - t0) / 1e6, (double)b->o.duration_ms / 1000.0, (unsigned long long)n, rate);
        fflush(stderr);
        last_t = t;
        last_n = n;
    }
    if (b->tty) fprintf(stderr, "\r\033[K");
}

static void stats_merge(bench_stats_t *dst, const bench_stats_t *src)
{
    tt_loghist_merge(&dst->lat, &src->lat);
    dst->responses += src->responses;
    for (int k = 0; k < 6; k++) dst->status[k] += src->status[k];
    for (int k = 0; k < EK__COUNT; k++) dst->errors[k] += src->errors[k];
    dst->conns_opened += src->conns_opened;
    dst->tls_full += src->tls_full;
    dst->tls_resumed += src->tls_resumed;
    if (dst->first_err == TT_UP_OK) dst->first_err = src->first_err;
}

/* One run with `close` (a new connection per request or not); fills `r`. */
static void bench_run(bench_t *b, bool close, const char *label, bench_run_t *r)
{
    const bench_opts_t *o = &b->o;
    memset(r, 0, sizeof(*r));
    tt_loghist_init(&r->st.lat);
    r->label = label;
    r->close = close;
    b->close = close;
    b->req_len = tt_cli_url_request(&b->url, "GET", NULL, 1, AGENT, close ? "Connection: close\r\n" : NULL, b->req,
                                    sizeof(b->req));
    b->workers = tt_calloc(o->threads, sizeof(worker_t));
    for (uint32_t i = 0; i < o->threads; i++) worker_init(b, &b->workers[i], i);
    uint64_t start = now_us();
    for (uint32_t i = 0; i < o->threads; i++)
        if (pthread_create(&b->workers[i].thread, NULL, worker_main, &b->workers[i]) != 0)
            tt_fatal("pthread_create failed");
    watch_progress(b, label);
    uint64_t end = start;
    for (uint32_t i = 0; i < o->threads; i++) {
        worker_t *w = &b->workers[i];
        pthread_join(w->thread, NULL);
        if (w->end_us > end) end = w->end_us;
        stats_merge(&r->st, &w->st);
        worker_dispose(w);
    }
    free(b->workers);
    b->workers = NULL;
    r->elapsed_s = (double)(end - start) / 1e6;
    r->all_failed = r->st.responses == 0;
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

static void print_settings(const bench_t *b, const char *mode)
{
    const bench_opts_t *o = &b->o;
    printf("tether bench http://%s%s (%s): %u connections, %u thread%s, ", b->url.authority, b->url.target, b->addr,
           o->conns, o->threads, o->threads == 1 ? "" : "s");
    if (o->requests)
        printf("%llu requests", (unsigned long long)o->requests);
    else
        printf("%.1f s", (double)o->duration_ms / 1000.0);
    if (o->rate > 0)
        printf(", open loop at %.0f req/s", o->rate);
    else
        printf(", closed loop");
    printf(", %s\n", mode);
}

static void print_run(const bench_t *b, const bench_run_t *r)
{
    const bench_stats_t *st = &r->st;
    printf("  requests       %llu in %.2f s: %.1f req/s", (unsigned long long)st->responses, r->elapsed_s, rps(r));
    if (b->o.rate > 0) printf(" (target %.0f)", b->o.rate);
    printf("\n  latency        p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (mean %.3f ms)\n",
           pct_ms(r, 50), pct_ms(r, 90), pct_ms(r, 99), pct_ms(r, 99.9), pct_ms(r, 100),
           tt_loghist_mean(&st->lat) / 1000.0);
    printf("  connections    %llu opened, %.1f requests per connection\n", (unsigned long long)st->conns_opened,
           st->conns_opened ? (double)st->responses / (double)st->conns_opened : 0.0);
    printf("  responses     ");
    for (int k = 1; k <= 5; k++)
        if (st->status[k]) printf(" %dxx %llu", k, (unsigned long long)st->status[k]);
    if (st->status[0]) printf(" other %llu", (unsigned long long)st->status[0]);
    printf("\n  errors        ");
    for (int k = 0; k < EK__COUNT; k++) printf(" %s %llu", err_kind_names[k], (unsigned long long)st->errors[k]);
    if (st->first_err != TT_UP_OK) printf("  (first: %s)", tt_up_err_name(st->first_err));
    printf("\n  tls handshakes none (http)\n");
}

static void json_run(const bench_t *b, const bench_run_t *r)
{
    const bench_stats_t *st = &r->st;
    printf("{\"url\":\"http://%s%s\",\"label\":\"%s\",\"mode\":\"%s\",\"connections\":%u,\"threads\":%u,",
           b->url.authority, b->url.target, r->label, r->close ? "close" : "keep-alive", b->o.conns, b->o.threads);
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
        printf("%s\"%s\":%llu", k ? "," : "", err_kind_names[k], (unsigned long long)st->errors[k]);
    printf("},\"tls\":{\"full\":%llu,\"resumed\":%llu}}", (unsigned long long)st->tls_full,
           (unsigned long long)st->tls_resumed);
}

/* Rows --compare cannot run, and why. */
static const struct {
    const char *row;
    const char *reason;
} skipped_rows[] = {
    {"HTTP/1.1 vs HTTP/2", "HTTP/2 is not in this build yet (no HTTP/2 client)"},
    {"TLS resumed vs full handshake", "the origin is http://"},
};

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void print_compare(const bench_t *b, const bench_run_t *ka, const bench_run_t *cl)
{
    const bench_run_t *rows[] = {ka, cl};
    printf("\n%-34s %12s %10s %10s %10s %9s %7s\n", "compare", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "conns",
           "errors");
    for (int i = 0; i < 2; i++)
        printf("  %-32s %12.1f %10.3f %10.3f %10.3f %9llu %7llu\n", rows[i]->label, rps(rows[i]), pct_ms(rows[i], 50),
               pct_ms(rows[i], 99), pct_ms(rows[i], 99.9), (unsigned long long)rows[i]->st.conns_opened,
               (unsigned long long)total_errors(rows[i]));
    printf("  %-32s %11.2fx %9.2fx %9.2fx %9.2fx\n", "keep-alive advantage", ratio(rps(ka), rps(cl)),
           ratio(pct_ms(cl, 50), pct_ms(ka, 50)), ratio(pct_ms(cl, 99), pct_ms(ka, 99)),
           ratio(pct_ms(cl, 99.9), pct_ms(ka, 99.9)));
    printf("  (req/s: keep-alive / new connection; latency: new connection / keep-alive)\n");
    for (size_t i = 0; i < TT_ARRAY_SIZE(skipped_rows); i++)
        printf("skipped: %s: %s\n", skipped_rows[i].row, skipped_rows[i].reason);
    (void)b;
}

static void json_compare(const bench_t *b, const bench_run_t *ka, const bench_run_t *cl)
{
    printf("{\"url\":\"http://%s%s\",\"runs\":[", b->url.authority, b->url.target);
    json_run(b, ka);
    printf(",");
    json_run(b, cl);
    printf(
        "],\"ratios\":{\"keepalive_vs_close\":{\"rps\":%.4f,\"p50\":%.4f,\"p99\":%.4f,\"p99_9\":%.4f}},\"skipped\":[",
        ratio(rps(ka), rps(cl)), ratio(pct_ms(cl, 50), pct_ms(ka, 50)), ratio(pct_ms(cl, 99), pct_ms(ka, 99)),
        ratio(pct_ms(cl, 99.9), pct_ms(ka, 99.9)));
    for (size_t i = 0; i < TT_ARRAY_SIZE(skipped_rows); i++)
        printf("%s{\"row\":\"%s\",\"reason\":\"%s\"}", i ? "," : "", skipped_rows[i].row, skipped_rows[i].reason);
    printf("]}\n");
}

static int report_failure(const bench_t *b, const bench_run_t *r)
{
    const char *err = r->st.first_err != TT_UP_OK ? tt_up_err_name(r->st.first_err) : "no response";
    fprintf(stderr, "tether bench: every request to %s (%s) failed: %s\n", b->url.authority, b->addr, err);
    if (b->o.json) printf("{\"error\":\"every request failed: %s\",\"origin\":\"%s\"}\n", err, b->url.authority);
    return 1;
}

/* ---- arguments ---- */

enum { OPT_RATE = 256, OPT_CLOSE, OPT_H2, OPT_TLSRESUME, OPT_COMPARE, OPT_JSON, OPT_TIMEOUT };

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
    {"compare", no_argument, NULL, OPT_COMPARE},
    {"json", no_argument, NULL, OPT_JSON},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

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
static int apply_opt(int opt, bench_opts_t *o, bool *h2, bool *streams, bool *tls_resume, bool *dur_given)
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
    case 'm': *streams = true; return 0;
    case 'd':
        *dur_given = true;
        if (tt_units_duration(optarg, &o->duration_ms, &why) != 0) return bad_arg("-d", optarg, why);
        return o->duration_ms ? 0 : bad_arg("-d", optarg, "must be more than 0");
    case OPT_TIMEOUT:
        if (tt_units_duration(optarg, &o->timeout_ms, &why) != 0) return bad_arg("--timeout", optarg, why);
        return o->timeout_ms ? 0 : bad_arg("--timeout", optarg, "must be more than 0");
    case OPT_RATE: return parse_rate(optarg, &o->rate) ? 2 : 0;
    case OPT_CLOSE: o->close = true; return 0;
    case OPT_H2: *h2 = true; return 0;
    case OPT_TLSRESUME: *tls_resume = true; return 0;
    case OPT_COMPARE: o->compare = true; return 0;
    case OPT_JSON: o->json = true; return 0;
    default: return 2;
    }
}

/* Flags that ask for what this build lacks, and combinations that make no sense. 0 or an exit status. */
static int check_combination(const bench_opts_t *o, bool h2, bool streams, bool tls_resume, bool dur_given)
{
    if (h2) {
        fprintf(stderr, "tether bench: --h2 needs HTTP/2 support, not in this build yet (no HTTP/2 client)\n");
        return 2;
    }
    if (streams) {
        fprintf(stderr, "tether bench: -m sets HTTP/2 streams and needs --h2 (HTTP/2 is not in this build yet)\n");
        return 2;
    }
    if (tls_resume) {
        fprintf(stderr, "tether bench: --tls-resume needs https, which is not supported by this build yet\n");
        return 2;
    }
    if (dur_given && o->requests) {
        fprintf(stderr, "tether bench: give -d or -n, not both\n");
        return 2;
    }
    if (o->compare && o->close) {
        fprintf(stderr, "tether bench: --compare runs with and without --close itself; drop --close\n");
        return 2;
    }
    if (o->threads > o->conns) {
        fprintf(stderr, "tether bench: -t %u needs at least as many connections (-c)\n", o->threads);
        return 2;
    }
    return 0;
}

/* Exit status to stop with (0 after --help), or -1 to go on. */
static int parse_args(int argc, char **argv, bench_t *b, const char **url)
{
    bool h2 = false, streams = false, tls_resume = false, dur_given = false;
    int opt, r;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "hc:d:n:t:m:", bench_long_opts, NULL)) != -1)
        if ((r = apply_opt(opt, &b->o, &h2, &streams, &tls_resume, &dur_given)) != 0) return r < 0 ? 0 : r;
    if (optind != argc - 1) {
        fprintf(stderr, "tether bench: expected one URL (see tether bench --help)\n");
        return 2;
    }
    *url = argv[optind];
    if ((r = check_combination(&b->o, h2, streams, tls_resume, dur_given)) != 0) return r;
    return -1;
}

static int setup_url(bench_t *b, const char *arg)
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
    if (tt_cli_url_resolve(&b->url, &why) != 0) {
        fprintf(stderr, "tether bench: %s: %s\n", b->url.host, why);
        return 1;
    }
    tt_addr_format(&b->url.addr, b->addr, sizeof(b->addr));
    return -1;
}

static int run_single(bench_t *b)
{
    bench_run_t *r = tt_calloc(1, sizeof(*r));
    const char *mode = b->o.close ? "new connection per request" : "keep-alive";
    bench_run(b, b->o.close, mode, r);
    int rc = 0;
    if (r->all_failed) {
        rc = report_failure(b, r);
    } else if (b->o.json) {
        json_run(b, r);
        printf("\n");
    } else {
        print_settings(b, mode);
        print_run(b, r);
    }
    free(r);
    return rc;
}

static int run_compare(bench_t *b)
{
    bench_run_t *ka = tt_calloc(1, sizeof(*ka)), *cl = tt_calloc(1, sizeof(*cl));
    int rc = 0;
    bench_run(b, false, "keep-alive", ka);
    if (!ka->all_failed) bench_run(b, true, "new connection per request", cl);
    if (ka->all_failed || cl->all_failed) {
        rc = report_failure(b, ka->all_failed ? ka : cl);
    } else if (b->o.json) {
        json_compare(b, ka, cl);
    } else {
        print_settings(b, "keep-alive");
        print_run(b, ka);
        print_settings(b, "new connection per request");
        print_run(b, cl);
        print_compare(b, ka, cl);
    }
    free(ka);
    free(cl);
    return rc;
}

int tt_cmd_bench(int argc, char **argv)
{
    bench_t *b = tt_calloc(1, sizeof(*b));
    b->o = (bench_opts_t){.conns = DEFAULT_CONNS, .threads = 1, .duration_ms = DEFAULT_DURATION_MS, .timeout_ms = 5000};
    const char *url = NULL;
    int rc = parse_args(argc, argv, b, &url);
    if (rc < 0) rc = setup_url(b, url);
    if (rc < 0) {
        b->tty = isatty(STDERR_FILENO) == 1;
        tt_sock_raise_nofile();
        rc = b->o.compare ? run_compare(b) : run_single(b);
    }
    free(b);
    return rc;
}
