/* bench_load.c -- the load engine of `tether bench`: worker threads, each with its own loop, connection slots
 * and counts, merged at the end; the main thread only shows progress
 *
 * HTTP/1.1: a slot is one connection (tt_upconn_t) with at most one request in flight. HTTP/2: a slot is one
 * connection (tt_h2c_t) with up to -m streams. Closed loop: a slot sends its next request as soon as one
 * is answered. Open loop (--rate): request k is due at start + k/rate; a slot with room sends it, late if
 * need be, and its latency counts from when it was due, so a stalled server cannot hide its stall by
 * slowing the client (no coordinated omission, as in wrk2). A request on a new connection counts the
 * connect (and TLS handshake) in its latency. Over https each worker keeps the newest TLS session and, with
 * --tls-resume on, offers it on every new connection.
 */
#include "client/h2client.h"
#include "client/upstream.h"
#include "cmd/bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_MS 250

const char *const tt__bench_err_kind_names[EK__COUNT] = {"connect", "reset",      "timeout", "bad_status",
                                                         "invalid", "rst_stream", "goaway"};

static bench_err_kind_t kind_of_up(tt_up_err_t e)
{
    switch (e) {
    case TT_UP_CONNECT_REFUSED:
    case TT_UP_CONNECT_TIMEOUT:
    case TT_UP_CONNECT_ERROR:
    case TT_UP_TLS_ERROR: return EK_CONNECT;
    case TT_UP_RESPONSE_TIMEOUT:
    case TT_UP_READ_TIMEOUT:
    case TT_UP_SEND_TIMEOUT: return EK_TIMEOUT;
    case TT_UP_INVALID: return EK_INVALID;
    default: return EK_RESET; /* reset, or closed before the response was complete */
    }
}

static bench_err_kind_t kind_of_h2(tt_h2c_err_t e)
{
    switch (e) {
    case TT_H2C_CONNECT_REFUSED:
    case TT_H2C_CONNECT_TIMEOUT:
    case TT_H2C_CONNECT_ERROR:
    case TT_H2C_TLS_ERROR:
    case TT_H2C_NO_H2: return EK_CONNECT;
    case TT_H2C_TIMEOUT: return EK_TIMEOUT;
    case TT_H2C_PROTOCOL: return EK_INVALID;
    case TT_H2C_RST_STREAM: return EK_RST_STREAM;
    case TT_H2C_GOAWAY: return EK_GOAWAY;
    default: return EK_RESET;
    }
}

/* ---- state ---- */

/** An HTTP/1.1 slot: at most one request in flight, on `u` (NULL when it has no connection). */
typedef struct slot {
    bench_worker_t *w;
    tt_upconn_t *u;
    uint64_t start_us; /* when the request in flight started (or was due) */
    int status;        /* of the response in flight, counted when it is complete */
    bool busy;
    struct slot *next_free;
    void *offered;    /* a reference to the TLS session offered on `u` */
    tt_defer_t retry; /* restarts a closed-loop slot at the next turn after a failure */
} slot_t;

enum hs_state { HS_NONE, HS_CONNECTING, HS_READY, HS_DRAINING /* GOAWAY received: no new streams */ };

typedef struct h2slot h2slot_t;

/** An HTTP/2 request: queued on its slot until the connection is ready, then a stream. */
typedef struct h2req {
    h2slot_t *hs;
    uint64_t start_us;
    int status;
    struct h2req *next_free;
} h2req_t;

/** An HTTP/2 slot: one connection with up to opts.streams streams. */
struct h2slot {
    bench_worker_t *w;
    tt_h2c_t *c;
    uint8_t state; /* enum hs_state */
    bool took_session;
    uint32_t inflight; /* streams submitted and not ended */
    uint32_t npending; /* requests waiting for a connection */
    h2req_t **pending;
    h2req_t *reqs; /* opts.streams records */
    h2req_t *free_reqs;
    void *offered;
    tt_h2c_err_t fail_now; /* a connect that failed at once, reported at the end of the turn */
    tt_defer_t later;
};

struct bench_worker {
    bench_t *b;
    pthread_t thread;
    tt_loop_t *loop;
    tt_bufpool_t bufs;
    tt_h1_response_t res;
    tt_up_timeouts_t to;
    tt_h2c_conf_t h2conf;
    slot_t *slots;     /* HTTP/1.1 */
    h2slot_t *h2slots; /* HTTP/2 */
    uint32_t nslots;
    uint32_t rr;     /* open loop, HTTP/2: where the search for a slot with room starts */
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
    void *session; /* the newest TLS session of this worker (owned) */
    bench_stats_t st;
    _Atomic uint64_t done_count; /* responses + errors, read by the main thread */
    _Atomic bool exited;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void dispatch_due(bench_worker_t *w);

/* ---- counting ---- */

static void note_error(bench_worker_t *w, bench_err_kind_t k, const char *name, const char *detail, bool verify)
{
    w->st.errors[k]++;
    if (w->st.first_err != NULL) return;
    w->st.first_err = name;
    w->st.first_detail = detail;
    w->st.first_verify = verify;
}

static void note_status(bench_worker_t *w, int status)
{
    int cls = status / 100;
    w->st.status[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (status >= 400) w->st.errors[EK_BAD_STATUS]++;
}

static void note_handshake(bench_worker_t *w, bool resumed)
{
    if (resumed)
        w->st.tls_resumed++;
    else
        w->st.tls_full++;
}

/* Keeps `session` (a new reference, or NULL) as the worker's newest. */
static void keep_session(bench_worker_t *w, void *session)
{
    if (session == NULL) return;
    if (w->session) tt_tls_session_free(w->session);
    w->session = session;
}

/* What a new connection offers: a reference of its own to the worker's session (the worker may replace
 * its session while this connection is still connecting), or NULL. */
static void *offer_session(bench_worker_t *w, void **offered)
{
    if (*offered) tt_tls_session_free(*offered);
    *offered = w->b->m.resume && w->session ? tt_tls_session_ref(w->session) : NULL;
    return *offered;
}

/* ---- stopping ---- */

static void worker_stop(bench_worker_t *w)
{
    if (w->stopping) return;
    w->stopping = true;
    w->end_us = now_us();
    tt_timer_disarm(w->loop, &w->stop_timer);
    for (uint32_t i = 0; i < w->nslots; i++) {
        if (w->slots && w->slots[i].u) tt_upconn_close(w->slots[i].u);
        if (w->slots) w->slots[i].u = NULL;
        if (w->h2slots && w->h2slots[i].c) tt_h2c_close(w->h2slots[i].c);
        if (w->h2slots) w->h2slots[i].c = NULL;
    }
    tt_loop_stop(w->loop);
}

static void stop_on_timer(tt_timer_t *t)
{
    worker_stop(tt_container_of(t, bench_worker_t, stop_timer));
}

/* Counts one finished attempt; stops the worker when its budget is spent or nothing ever succeeds. */
static bool attempt_finished(bench_worker_t *w)
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

/* ---- HTTP/1.1 slots ---- */

static void slot_next(slot_t *s);
static const tt_upconn_ops_t bench_ops;

static void slot_send(slot_t *s)
{
    bench_worker_t *w = s->w;
    tt_upconn_begin(s->u, false);
    (void)tt_upconn_send(s->u, w->b->req, w->b->req_len);
    tt_upconn_end_request(s->u);
}

static void retry_cb(tt_defer_t *d)
{
    slot_t *s = tt_container_of(d, slot_t, retry);
    if (!s->w->stopping) slot_next(s);
}

static void slot_failed(slot_t *s, tt_up_err_t err, const char *detail, bool verify)
{
    bench_worker_t *w = s->w;
    s->busy = false;
    note_error(w, kind_of_up(err), tt_up_err_name(err), detail, verify);
    if (!attempt_finished(w)) return;
    /* Next turn, not now: a connect refused at once must not recurse. */
    tt_loop_defer(w->loop, &s->retry, retry_cb);
}

/* Starts the slot's request: on its connection, or on a new one. */
static void slot_start(slot_t *s, uint64_t start_us)
{
    bench_worker_t *w = s->w;
    bench_t *b = w->b;
    w->issued++;
    s->busy = true;
    s->start_us = start_us;
    if (s->u) {
        slot_send(s);
        return;
    }
    tt_up_err_t err = TT_UP_OK;
    w->st.conns_opened++;
    s->u = tt_upconn_connect(w->loop, &w->bufs, &w->res, &b->url.addr, NULL, &w->to, &bench_ops, s, &err);
    if (s->u == NULL)
        slot_failed(s, err, NULL, false);
    else if (b->tls_h1)
        tt_upconn_set_tls(s->u, b->tls_h1, offer_session(w, &s->offered));
}

/* Closed loop: the next request at once. Open loop: back to the free list, then whatever is due. */
static void slot_next(slot_t *s)
{
    bench_worker_t *w = s->w;
    if (w->stopping) return;
    if (w->b->o.rate > 0) {
        s->next_free = w->free_slots;
        w->free_slots = s;
        dispatch_due(w);
        return;
    }
    if (w->issued < w->budget) slot_start(s, now_us());
}

static void b_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    slot_t *s = u->data;
    if (err != TT_UP_OK) {
        s->u = NULL; /* closed and freed by upstream.c */
        slot_failed(s, err, u->tls_error, u->tls_verify_failed);
        return;
    }
    if (s->w->b->tls_h1) note_handshake(s->w, u->tls_resumed);
    slot_send(s);
}

static void b_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    slot_t *s = u->data;
    if (res->status >= 200) s->status = res->status;
}

static void b_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    (void)u, (void)data, (void)len;
}

static void b_on_parked_event(tt_upconn_t *u, tt_up_sock_t what)
{
    (void)what;
    slot_t *s = u->data;
    tt_upconn_close(u);
    s->u = NULL; /* the server closed it while idle: the slot reconnects when next used */
}

static void b_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    (void)trailers;
    slot_t *s = u->data;
    bench_worker_t *w = s->w;
    tt_loghist_record(&w->st.lat, now_us() - s->start_us);
    w->st.responses++;
    note_status(w, s->status);
    s->busy = false;
    /* after the first exchange the TLS 1.3 tickets have arrived: keep the newest session */
    if (w->b->tls_h1 && w->b->m.resume && u->requests == 1) keep_session(w, tt_tls_take_session(u->tr));
    if (w->b->m.close || !tt_upconn_reusable(u)) {
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
    slot_failed(s, err, NULL, false);
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

/* ---- HTTP/2 slots ---- */

static const tt_h2c_ops_t h2_ops;
static void hs_kick(h2slot_t *hs);

static uint32_t hs_limit(const h2slot_t *hs)
{
    uint32_t m = hs->w->b->o.streams;
    if (hs->state == HS_READY) {
        uint32_t peer = tt_h2c_peer_max_streams(hs->c);
        if (peer < m) m = peer ? peer : 1;
    }
    return m;
}

static bool hs_has_room(const h2slot_t *hs)
{
    return hs->state != HS_DRAINING && hs->inflight + hs->npending < hs_limit(hs);
}

/* Closed loop: as many requests as the slot has room for. */
static void hs_fill(h2slot_t *hs)
{
    bench_worker_t *w = hs->w;
    while (!w->stopping && w->issued < w->budget && hs_has_room(hs)) {
        w->issued++;
        h2req_t *r = hs->free_reqs;
        hs->free_reqs = r->next_free;
        r->start_us = now_us();
        hs->pending[hs->npending++] = r;
        hs_kick(hs);
    }
}

/* Open loop: one request, due at `due_us`. */
static void hs_add(h2slot_t *hs, uint64_t due_us)
{
    hs->w->issued++;
    h2req_t *r = hs->free_reqs;
    hs->free_reqs = r->next_free;
    r->start_us = due_us;
    hs->pending[hs->npending++] = r;
    hs_kick(hs);
}

static void hs_release(h2slot_t *hs, h2req_t *r)
{
    r->next_free = hs->free_reqs;
    hs->free_reqs = r;
}

static void hs_connect_failed(h2slot_t *hs, tt_h2c_err_t err, const char *detail, bool verify);

static void hs_later_cb(tt_defer_t *d)
{
    h2slot_t *hs = tt_container_of(d, h2slot_t, later);
    if (hs->w->stopping) return;
    if (hs->fail_now != TT_H2C_OK) {
        tt_h2c_err_t err = hs->fail_now;
        hs->fail_now = TT_H2C_OK;
        hs_connect_failed(hs, err, NULL, false);
        return;
    }
    if (hs->w->b->o.rate > 0)
        dispatch_due(hs->w);
    else
        hs_fill(hs);
}

static void hs_connect(h2slot_t *hs)
{
    bench_worker_t *w = hs->w;
    w->st.conns_opened++;
    hs->state = HS_CONNECTING;
    hs->took_session = false;
    tt_h2c_conf_t conf = w->h2conf;
    if (conf.tls) conf.session = offer_session(w, &hs->offered);
    tt_h2c_err_t err = TT_H2C_OK;
    hs->c = tt_h2c_connect(w->loop, &w->bufs, &w->b->url.addr, &conf, &h2_ops, hs, &err);
    if (hs->c == NULL) {
        hs->fail_now = err; /* reported next turn, like an asynchronous failure: never recurse */
        tt_loop_defer(w->loop, &hs->later, hs_later_cb);
    }
}

/* Moves the slot on: connect for queued requests, or send them as streams. */
static void hs_kick(h2slot_t *hs)
{
    bench_t *b = hs->w->b;
    if (hs->state == HS_READY && !tt_h2c_can_request(hs->c)) hs->state = HS_DRAINING;
    if (hs->state == HS_NONE && hs->npending > 0) hs_connect(hs);
    if (hs->state != HS_READY) return;
    while (hs->npending > 0) {
        h2req_t *r = hs->pending[0];
        if (tt_h2c_request(hs->c, "GET", tt_cli_url_scheme(&b->url), b->url.authority, b->url.target, r) < 0) {
            hs->state = HS_DRAINING; /* queued requests wait for the next connection */
            return;
        }
        hs->inflight++;
        memmove(hs->pending, hs->pending + 1, --hs->npending * sizeof(*hs->pending));
    }
}

static void hs_connect_failed(h2slot_t *hs, tt_h2c_err_t err, const char *detail, bool verify)
{
    bench_worker_t *w = hs->w;
    hs->c = NULL;
    hs->state = HS_NONE;
    /* Every request queued for this connection fails with it. */
    while (hs->npending > 0) {
        hs_release(hs, hs->pending[--hs->npending]);
        note_error(w, kind_of_h2(err), tt_h2c_err_name(err), detail, verify);
        if (!attempt_finished(w)) return;
    }
    if (w->b->o.rate == 0) tt_loop_defer(w->loop, &hs->later, hs_later_cb); /* retry next turn */
}

static void h2_on_connect(tt_h2c_t *c, tt_h2c_err_t err)
{
    h2slot_t *hs = tt_h2c_data(c);
    bench_worker_t *w = hs->w;
    if (err != TT_H2C_OK) {
        bool verify = false;
        const char *detail = tt_h2c_tls_failure(c, &verify);
        hs_connect_failed(hs, err, detail, verify);
        return;
    }
    hs->state = HS_READY;
    if (w->h2conf.tls) note_handshake(w, tt_h2c_tls_resumed(c));
    hs_kick(hs);
    if (w->b->o.rate == 0) hs_fill(hs);
}

static void h2_on_head(tt_h2c_t *c, void *stream_data, int status)
{
    (void)c;
    h2req_t *r = stream_data;
    r->status = status;
}

static void h2_on_stream_end(tt_h2c_t *c, void *stream_data, tt_h2c_err_t err, uint32_t h2_error)
{
    (void)h2_error;
    h2req_t *r = stream_data;
    h2slot_t *hs = r->hs;
    bench_worker_t *w = hs->w;
    hs->inflight--;
    if (err == TT_H2C_OK) {
        tt_loghist_record(&w->st.lat, now_us() - r->start_us);
        w->st.responses++;
        note_status(w, r->status);
        if (w->h2conf.tls && w->b->m.resume && !hs->took_session) {
            hs->took_session = true;
            keep_session(w, tt_h2c_take_session(c));
        }
    } else {
        note_error(w, kind_of_h2(err), tt_h2c_err_name(err), NULL, false);
    }
    hs_release(hs, r);
    if (!attempt_finished(w)) return;
    if (w->b->o.rate > 0)
        dispatch_due(w);
    else
        hs_fill(hs);
}

static void h2_on_close(tt_h2c_t *c, tt_h2c_err_t err)
{
    (void)c, (void)err; /* its streams were counted as they ended; a close with none open is no error */
    h2slot_t *hs = tt_h2c_data(c);
    hs->c = NULL;
    hs->state = HS_NONE;
    if (hs->w->stopping) return;
    if (hs->npending > 0)
        hs_kick(hs);
    else
        tt_loop_defer(hs->w->loop, &hs->later, hs_later_cb);
}

static const tt_h2c_ops_t h2_ops = {
    .on_connect = h2_on_connect,
    .on_head = h2_on_head,
    .on_stream_end = h2_on_stream_end,
    .on_close = h2_on_close,
};

/* ---- open loop ---- */

static uint64_t due_at(const bench_worker_t *w, uint64_t k)
{
    return w->start_us + (uint64_t)((double)k * w->interval_us);
}

static void rate_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    bench_worker_t *w = tt_container_of(io, bench_worker_t, rate_io);
    uint64_t expirations;
    ssize_t n = read(io->fd, &expirations, sizeof(expirations)); /* EAGAIN when re-armed meanwhile: fine */
    (void)n;
    w->rate_armed = false;
    dispatch_due(w);
}

/* Arms the timerfd for the absolute CLOCK_MONOTONIC time `at_us`. */
static void rate_arm(bench_worker_t *w, uint64_t at_us)
{
    struct itimerspec its = {.it_value = {(time_t)(at_us / 1000000u), (long)(at_us % 1000000u) * 1000L}};
    if (timerfd_settime(w->rate_io.fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        tt_fatal("timerfd_settime: %s", strerror(errno));
    w->rate_armed = true;
}

/* An HTTP/2 slot with room, round robin over the worker's connections; NULL when all are full. */
static h2slot_t *h2_pick(bench_worker_t *w)
{
    for (uint32_t i = 0; i < w->nslots; i++) {
        uint32_t k = (w->rr + i) % w->nslots;
        if (hs_has_room(&w->h2slots[k])) {
            w->rr = (k + 1) % w->nslots;
            return &w->h2slots[k];
        }
    }
    return NULL;
}

/* Open loop: hands every due request to a slot with room; waits for room or for the next due time. */
static void dispatch_due(bench_worker_t *w)
{
    uint64_t now = now_us();
    while (!w->stopping && w->issued < w->budget && due_at(w, w->next_k) <= now) {
        if (w->h2slots) {
            h2slot_t *hs = h2_pick(w);
            if (hs == NULL) break;
            hs_add(hs, due_at(w, w->next_k++));
            continue;
        }
        if (w->free_slots == NULL) break;
        slot_t *s = w->free_slots;
        w->free_slots = s->next_free;
        slot_start(s, due_at(w, w->next_k++));
    }
    if (w->stopping || w->issued >= w->budget || w->rate_armed) return;
    uint64_t due = due_at(w, w->next_k);
    if (due > now) rate_arm(w, due);
}

/* ---- workers ---- */

static void worker_begin(bench_worker_t *w)
{
    w->start_us = now_us();
    if (w->budget == 0) {
        worker_stop(w);
        return;
    }
    if (w->b->o.requests == 0) tt_timer_arm(w->loop, &w->stop_timer, w->b->o.duration_ms);
    if (w->b->o.rate > 0) {
        if (w->slots)
            for (uint32_t i = w->nslots; i-- > 0;) {
                w->slots[i].next_free = w->free_slots;
                w->free_slots = &w->slots[i];
            }
        dispatch_due(w);
        return;
    }
    for (uint32_t i = 0; i < w->nslots && !w->stopping && w->issued < w->budget; i++) {
        if (w->h2slots)
            hs_fill(&w->h2slots[i]);
        else
            slot_start(&w->slots[i], now_us());
    }
}

static void *worker_main(void *arg)
{
    bench_worker_t *w = arg;
    tt_loop_update_clock(w->loop);
    worker_begin(w);
    if (!w->stopping) tt_loop_run(w->loop);
    /* Two turns free the connections closed by worker_stop (deferred frees). */
    tt_loop_run_once(w->loop, 0);
    tt_loop_run_once(w->loop, 0);
    atomic_store_explicit(&w->exited, true, memory_order_release);
    return NULL;
}

static void h2slots_init(bench_worker_t *w)
{
    uint32_t m = w->b->o.streams;
    w->h2slots = tt_calloc(w->nslots, sizeof(h2slot_t));
    for (uint32_t i = 0; i < w->nslots; i++) {
        h2slot_t *hs = &w->h2slots[i];
        hs->w = w;
        hs->reqs = tt_calloc(m, sizeof(h2req_t));
        hs->pending = tt_calloc(m, sizeof(h2req_t *));
        for (uint32_t k = m; k-- > 0;) {
            hs->reqs[k].hs = hs;
            hs_release(hs, &hs->reqs[k]);
        }
    }
}

static void worker_init(bench_t *b, bench_worker_t *w, uint32_t idx)
{
    const bench_opts_t *o = &b->o;
    uint32_t t = o->threads;
    w->b = b;
    w->loop = tt_loop_new();
    if (w->loop == NULL) tt_fatal("tt_loop_new: %s", strerror(errno));
    tt_bufpool_init(&w->bufs, 16384, 64);
    w->to = (tt_up_timeouts_t){o->timeout_ms, o->timeout_ms, o->timeout_ms, o->timeout_ms};
    w->h2conf = (tt_h2c_conf_t){.connect_ms = o->timeout_ms, .response_ms = o->timeout_ms, .tls = b->tls_h2};
    w->nslots = o->conns / t + (idx < o->conns % t);
    if (b->m.h2) {
        h2slots_init(w);
    } else {
        w->slots = tt_calloc(w->nslots, sizeof(slot_t));
        for (uint32_t i = 0; i < w->nslots; i++) w->slots[i].w = w;
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

static void worker_dispose(bench_worker_t *w)
{
    if (w->rate_io.fd >= 0) {
        tt_io_stop(w->loop, &w->rate_io);
        close(w->rate_io.fd);
    }
    tt_loop_free(&w->loop);
    tt_bufpool_dispose(&w->bufs);
    for (uint32_t i = 0; w->slots && i < w->nslots; i++)
        if (w->slots[i].offered) tt_tls_session_free(w->slots[i].offered);
    for (uint32_t i = 0; w->h2slots && i < w->nslots; i++) {
        if (w->h2slots[i].offered) tt_tls_session_free(w->h2slots[i].offered);
        free(w->h2slots[i].reqs);
        free(w->h2slots[i].pending);
    }
    if (w->session) tt_tls_session_free(w->session);
    free(w->slots);
    free(w->h2slots);
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
    if (dst->first_err == NULL) {
        dst->first_err = src->first_err;
        dst->first_detail = src->first_detail;
        dst->first_verify = src->first_verify;
    }
}

void tt__bench_run(bench_t *b, const bench_mode_t *m, bench_run_t *r)
{
    const bench_opts_t *o = &b->o;
    memset(r, 0, sizeof(*r));
    tt_loghist_init(&r->st.lat);
    r->m = *m;
    b->m = *m;
    b->req_len = tt_cli_url_request(&b->url, "GET", NULL, 1, "tether-bench/" TETHER_VERSION,
                                    m->close ? "Connection: close\r\n" : NULL, b->req, sizeof(b->req));
    b->workers = tt_calloc(o->threads, sizeof(bench_worker_t));
    for (uint32_t i = 0; i < o->threads; i++) worker_init(b, &b->workers[i], i);
    uint64_t start = now_us();
    for (uint32_t i = 0; i < o->threads; i++)
        if (pthread_create(&b->workers[i].thread, NULL, worker_main, &b->workers[i]) != 0)
            tt_fatal("pthread_create failed");
    watch_progress(b, m->label);
    uint64_t end = start;
    for (uint32_t i = 0; i < o->threads; i++) {
        bench_worker_t *w = &b->workers[i];
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
