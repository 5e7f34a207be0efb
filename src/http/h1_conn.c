/* h1_conn.c -- the HTTP/1.x server connection: read, parse, dispatch, respond, persist or close
 *
 * A connection is in one state (head, body, linger, closed) and waits on at most one timeout queue:
 * header (first byte of a head to its end, and a new connection's first request), body (between reads
 * of content), send (peer not reading our output), idle (between requests; the bucket that its last
 * response advertised), linger (draining after a close), race (after tether closed an idle connection: reading
 * for requests that crossed its FIN, see begin_race). After a 101 the connection is the client side of a
 * byte tunnel (state tunnel): the tunnel reads and writes its socket and its own idle deadline governs it; the
 * connection only passes its socket's events on, and closes when the tunnel's user says so. Input is processed in
 * batches: everything a read brought is parsed and answered, then all responses go out in one write.
 */
#include "http/h1_conn_types.h"
#include "core/log.h"
#include "http/h2_conn.h"
#include "net/tls.h"

#include <errno.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPELINE_MAX 32    /* responses queued and unsent before reading stops */
#define OUT_HIGH     65536 /* output bytes queued before reading stops */
#define MAX_FILES    4     /* file ranges queued before reading stops */
#define RUN_ROUNDS   16    /* read/answer rounds per wake-up before yielding to other connections */
#define LINGER_BYTES (1u << 20)
#define OUT_LOW      16384 /* a handler told "full" is called back when output falls below this */

/* Order matters: states from ST_LINGER on take no request and write no response. */
enum conn_state { ST_TLS, ST_HEAD, ST_BODY, ST_LINGER, ST_TUNNEL, ST_RACE, ST_CLOSED };
enum tq_kind { TQ_NONE, TQ_HEADER, TQ_BODY, TQ_SEND, TQ_IDLE, TQ_LINGER, TQ_RACE };
enum process_result { P_NEED_INPUT, P_BLOCKED, P_WAIT, P_STOP };

static void conn_run(h1_conn_t *c);
static void conn_close(h1_conn_t *c, tt_close_reason_t reason);
static void log_line(h1_conn_t *c, tt_req_t *rq, int status, uint64_t bytes, uint64_t head_bytes,
                     tt_close_reason_t decision);
static void abort_areq(h1_conn_t *c);
static void tunnel_log(h1_conn_t *c, tt_close_reason_t reason);
static bool tls_step(h1_conn_t *c);
static int check_preface(h1_conn_t *c);

/* ---- small helpers ---- */

static inline bool has_output(const h1_conn_t *c)
{
    return c->act != NULL && (c->act->out.len > 0 || c->act->nfiles > 0);
}

/* tether_request_duration_seconds: a request that began at `start_us` (loop clock) is answered now. */
static void observe_request(h1_conn_t *c, uint64_t start_us)
{
    tt_hist_observe(&c->ls->m->request_us[TT_PROTO_H1], tt_hist_lat_bounds, tt_hist_lat_nbounds,
                    tt_loop_now_us(c->w->loop) - start_us);
}

/* The input buffer's limit while reading a head: above anything the parser accepts (it refuses first),
 * and never below one block, so small configured limits do not starve reads. */
static size_t head_max(const tt_listen_policy_t *p)
{
    return TT_MAX((size_t)32768, p->limits.max_target + p->limits.max_field_bytes + 8192);
}

static void set_tq(h1_conn_t *c, enum tq_kind kind)
{
    tt__lstate_t *ls = c->ls;
    c->tq_kind = (uint8_t)kind;
    switch (kind) {
    case TQ_NONE: tt_tq_remove(&c->base.tq); break;
    case TQ_HEADER: tt_tq_push(&ls->header_q, &c->base.tq); break;
    case TQ_BODY: tt_tq_push(&ls->body_q, &c->base.tq); break;
    case TQ_SEND: tt_tq_push(&ls->send_q, &c->base.tq); break;
    case TQ_IDLE: tt_tq_push(&ls->idle_q[c->idle_bucket], &c->base.tq); break;
    case TQ_LINGER: tt_tq_push(&ls->linger_q, &c->base.tq); break;
    case TQ_RACE: tt_tq_push(&ls->race_q, &c->base.tq); break;
    }
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static void release_file(out_file_t *f)
{
    if (f->f.release) f->f.release(f->f.ref);
    free(f->strs);
    f->strs = NULL;
}

/* ---- the working state ---- */

/* Gives the connection its working state (h1_active_t) if it has none. */
static h1_active_t *take_active(h1_conn_t *c)
{
    if (c->act == NULL) {
        c->act = tt_bufpool_get(&c->w->h1_active);
        memset(c->act, 0, sizeof(*c->act));
        c->act->conn = c;
    }
    return c->act;
}

/* The connection has nothing buffered that matters any more (no output, no file queued, no unparsed input): its
 * buffers go back to the worker's pool, and its working state too unless one of its deferred calls is queued (that
 * keeps it until the call ran; the next put_active returns it). */
static void put_active(h1_conn_t *c)
{
    h1_active_t *a = c->act;
    if (a == NULL) return;
    tt_buf_release(&a->in, &c->w->bufs);
    tt_buf_release(&a->out, &c->w->bufs);
    tt_buf_release(&a->trailers, &c->w->bufs);
    free(a->files);
    a->files = NULL;
    if (a->resume._queued || a->kick._queued || a->free_later._queued) return;
    tt_bufpool_put(&c->w->h1_active, a);
    c->act = NULL;
}

/* ---- idle ---- */

/* Between requests: the connection keeps only its h1_conn_t (its working state goes back to the pool) and waits in
 * the idle queue its last response advertised. */
static void enter_idle(h1_conn_t *c)
{
    put_active(c);
    if (c->idle) return; /* a wake-up that brought nothing: the idle deadline stays where it was */
    c->idle = true;
    c->mark_us = tt_loop_now_us(c->w->loop);
    tt_gauge_add(&c->w->metrics.conn_idle, 1);
    set_tq(c, TQ_IDLE);
    tt__worker_conn_idle(c->w);
}

static void leave_idle(h1_conn_t *c, bool reused)
{
    if (!c->idle) return;
    c->idle = false;
    tt_gauge_add(&c->w->metrics.conn_idle, -1);
    set_tq(c, TQ_NONE);
    if (reused)
        tt_hist_observe(&c->w->metrics.idle_gap_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds,
                        tt_loop_now(c->w->loop) - c->mark_us / 1000);
    c->mark_us = tt_loop_now_us(c->w->loop);
}

/* ---- closing ---- */

static void conn_free_cb(tt_defer_t *d)
{
    h1_active_t *a = tt_container_of(d, h1_active_t, free_later);
    h1_conn_t *c = a->conn;
    free(a->files);
    tt_bufpool_put(&c->w->h1_active, a);
    free(c);
}

/* The close in the metrics: once per connection, when tether's FIN goes out. */
static void count_close(h1_conn_t *c, tt_close_reason_t reason)
{
    tt_worker_t *w = c->w;
    tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H1][tt_transport_is_tls(c->tr)], -1);
    tt_counter_add(&w->metrics.conn_closed[reason], 1);
    tt_gauge_add(&w->metrics.conn_open, -1);
    tt_hist_observe(&w->metrics.reqs_per_conn, tt_hist_reqs_bounds, tt_hist_reqs_nbounds, c->requests);
    tt_metrics_conn_closed(&w->metrics, reason, tt_loop_now(w->loop) - c->accepted_us / 1000, c->requests);
}

static void conn_close(h1_conn_t *c, tt_close_reason_t reason)
{
    if (c->state == ST_CLOSED) return;
    tt_worker_t *w = c->w;
    if (reason == TT_CLOSE_TLS_ERROR && (c->state == ST_TLS || c->tr == &tt_transport_tcp))
        tt_counter_add(&w->metrics.tls_failures, 1); /* failed, abandoned or never begun (accept failed) */
    if (c->state == ST_TUNNEL) tt_gauge_add(&w->metrics.tunnels_open, -1);
    if (c->areq != NULL && c->tunnel != NULL) {
        tunnel_log(c, reason); /* closed under the tunnel (drain deadline, shutdown): the handler cancels it */
        abort_areq(c);
    } else if (c->areq != NULL) {
        /* Log the request the client will never get a (complete) answer to: 499 as nginx does when no
         * response was started. */
        log_line(c, &c->areq->req, c->resp_open ? c->act->resp_status : 499, c->act->resp_bytes,
                 c->resp_open ? c->act->resp_head : 0, reason);
        c->act->resp_bytes = 0;
        abort_areq(c);
    }
    c->tunnel = NULL;
    c->in_run = false;
    if (c->idle) {
        c->idle = false;
        tt_gauge_add(&w->metrics.conn_idle, -1);
    }
    set_tq(c, TQ_NONE);
    /* An idle connection has no working state: it takes one for its deferred free (below). */
    h1_active_t *a = take_active(c);
    for (uint8_t i = 0; i < a->nfiles; i++) {
        out_file_t *f = &a->files[i];
        f->rec.bytes = f->head_bytes + f->sent;
        f->rec.duration_ms = tt_loop_now(w->loop) - f->start_us / 1000;
        f->rec.decision = tt_close_reason_name(reason);
        tt_accesslog_add(&w->alog, &f->rec);
        release_file(f);
    }
    a->nfiles = 0;
    free(a->files);
    a->files = NULL;
    tt_buf_release(&a->in, &w->bufs);
    tt_buf_release(&a->out, &w->bufs);
    tt_buf_release(&a->trailers, &w->bufs);
    tt_gauge_set(&w->metrics.buffers_in_use, w->bufs.in_use);
    /* A TLS peer gets close_notify, unless the connection failed or never finished its handshake. */
    if (!c->shut && c->state != ST_TLS && reason != TT_CLOSE_RESET && reason != TT_CLOSE_TLS_ERROR)
        if (tt_transport_is_tls(c->tr)) tt_transport_shutdown(c->tr, c->io.fd);
    /* Counted before the socket closes: a peer that saw the close finds it in the metrics. A connection that had a
     * race window was counted when it began (our FIN). */
    if (c->state != ST_RACE)
        count_close(c, reason);
    else
        tt_gauge_add(&w->metrics.conn_racing, -1);
    tt_transport_free(&c->tr);
    close(c->io.fd);
    c->io.fd = -1;
    c->state = ST_CLOSED;
    c->close_reason = (uint8_t)reason;
    tt_list_remove(&c->base.link);
    tt__wgen_unref(c->ls->gen); /* freed at the end of the turn at the earliest */
    /* Freed at the end of the turn: an event for this connection may still be in the current batch. Queued on the
     * working state, after any of its deferred calls (which see the connection closed and do nothing). */
    tt_loop_defer(w->loop, &a->free_later, conn_free_cb);
    tt__worker_conn_closed(w);
}

static void linger_drain(h1_conn_t *c)
{
    char sink[4096];
    for (uint32_t total = 0; total < LINGER_BYTES;) {
        ssize_t n = read(c->io.fd, sink, sizeof(sink));
        if (n > 0) {
            total += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN) return; /* keep waiting for FIN until the linger timeout */
        if (n < 0 && errno == EINTR) continue;
        break; /* FIN or error: the peer has our response */
    }
    conn_close(c, (tt_close_reason_t)c->close_reason);
}

/* ---- the race window ----
 *
 * When tether closes a connection the client may reuse at that very moment (idle timeout, eviction, the close after
 * the last response of max_requests or max_lifetime), it half-closes first and keeps reading for race_window: a
 * request that arrives then crossed our FIN, exactly the request a load balancer turns into a 502. It is counted
 * (tether_close_races_total), its gap since the last response observed, logged with decision `race`, and
 * discarded: the FIN went out, no answer can follow. The client's own FIN ends the window early (the normal end).
 * A connection in its window holds no buffers, is the first to go when a slot is needed, and closes at once on a
 * drain. */

/* The request-line's method, target and minor version as far as `p` holds them, for the race's log line. */
static void race_request_line(const char *p, size_t n, tt_str_t *method, tt_str_t *target, int *minor)
{
    const char *end = memchr(p, '\n', n);
    n = end ? (size_t)(end - p) : n;
    const char *sp1 = memchr(p, ' ', n);
    *method = tt_str(p, sp1 ? (size_t)(sp1 - p) : n);
    *target = TT_STR_NULL;
    *minor = 1;
    if (sp1 == NULL) return;
    const char *t = sp1 + 1, *lim = p + n;
    const char *sp2 = memchr(t, ' ', (size_t)(lim - t));
    *target = tt_str(t, sp2 ? (size_t)(sp2 - t) : (size_t)(lim - t));
    if (sp2 && lim - sp2 > 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0) *minor = 0;
}

/* The first bytes of a request arrived in the race window. */
static void race_count(h1_conn_t *c, const char *p, size_t n)
{
    tt_worker_t *w = c->w;
    tt_close_reason_t reason = (tt_close_reason_t)c->close_reason;
    uint64_t gap_ms = (tt_loop_now_us(w->loop) - c->mark_us) / 1000;
    tt_counter_add(&c->ls->m->races[reason], 1);
    tt_hist_observe(&c->ls->m->race_gap_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, gap_ms);
    if (!tt_accesslog_enabled(&w->alog)) return;
    char extra[64];
    int en = snprintf(extra, sizeof(extra), "race_reason=%s race_gap_ms=%llu", tt_close_reason_name(reason),
                      (unsigned long long)gap_ms);
    tt_accesslog_rec_t rec = {
        .peer = &c->peer,
        .status = 0,
        .conn_id = c->id,
        .req_no = c->requests + 1,
        .decision = "race",
        .extra = tt_str(extra, (size_t)TT_MAX(en, 0)),
    };
    race_request_line(p, n, &rec.method, &rec.target, &rec.minor_version);
    tt_accesslog_add(&w->alog, &rec);
}

/* Reads what arrived in the race window into a scratch on the stack: bytes are a race, counted once and then drained
 * with what follows; the connection closes after them, on EOF or on an error. Returns with the window open when
 * nothing came yet. */
static void race_read(h1_conn_t *c)
{
    char sink[4096];
    uint32_t total = 0;
    while (total < LINGER_BYTES) {
        ssize_t n = tt_transport_read(c->tr, c->io.fd, sink, sizeof(sink));
        if (n > 0) {
            if (total == 0) race_count(c, sink, (size_t)n);
            total += (uint32_t)n;
            continue;
        }
        if (n == -EINTR) continue;
        if (n == -EAGAIN && total == 0) return;
        break;
    }
    conn_close(c, (tt_close_reason_t)c->close_reason);
}

/* Closes our side (close_notify first on TLS, then FIN) and opens the race window; `reason` is the close's. */
static void begin_race(h1_conn_t *c, tt_close_reason_t reason)
{
    tt_worker_t *w = c->w;
    if (c->idle) {
        c->idle = false; /* mark_us stays: when the last response ended */
        tt_gauge_add(&w->metrics.conn_idle, -1);
    } else {
        c->mark_us = tt_loop_now_us(w->loop); /* the last response just went out */
    }
    c->closing = true;
    c->close_reason = (uint8_t)reason;
    put_active(c); /* the window holds no buffers */
    tt_gauge_set(&w->metrics.buffers_in_use, w->bufs.in_use);
    tt_transport_shutdown(c->tr, c->io.fd);
    c->shut = true;
    count_close(c, reason); /* closed for HTTP: the window only watches for requests that crossed the FIN */
    tt_gauge_add(&w->metrics.conn_racing, 1);
    c->state = ST_RACE;
    set_tq(c, TQ_RACE);
    tt__worker_conn_idle(w); /* evictable first: a paused listener may accept again */
    race_read(c);
}

/* Whether a close for `reason` opens a race window on this connection. */
static bool races(const h1_conn_t *c, tt_close_reason_t reason)
{
    if (c->ls->policy->race_window_ms == 0 || c->w->draining) return false;
    return reason == TT_CLOSE_IDLE_TIMEOUT || reason == TT_CLOSE_EVICTED || reason == TT_CLOSE_MAX_REQUESTS ||
           reason == TT_CLOSE_MAX_LIFETIME;
}

/* The response is out and the connection must close: half-close and drain first when unread request
 * bytes may remain, so the peer receives the response rather than an RST (RFC 9112 9.6). */
static void finish_close(h1_conn_t *c)
{
    if (!c->linger && c->act->in.len == 0 && c->state != ST_BODY && !c->rd_ready) {
        if (races(c, (tt_close_reason_t)c->close_reason))
            begin_race(c, (tt_close_reason_t)c->close_reason);
        else
            conn_close(c, (tt_close_reason_t)c->close_reason);
        return;
    }
    tt_transport_shutdown(c->tr, c->io.fd); /* FIN, or close_notify then FIN */
    c->shut = true;
    tt_buf_release(&c->act->in, &c->w->bufs);
    tt_buf_release(&c->act->out, &c->w->bufs);
    c->state = ST_LINGER;
    set_tq(c, TQ_LINGER);
    linger_drain(c);
}

/* ---- output ---- */

static void out_append(h1_conn_t *c, const void *p, size_t n)
{
    tt_buf_append(&c->act->out, &c->w->bufs, p, n);
    c->act->mem_appended += n;
}

/* Whether our FIN follows the queued output at once: the last response said close and is complete (no streamed
 * response, no asynchronous request goes on), so once the output is written, conn_settle's finish_close closes the
 * socket or shuts its sending side in the same call. Such a write goes with MSG_MORE: the kernel holds its last
 * partial segment and sets FIN on it at the close or shutdown (tcp_send_fin), so the response and the FIN leave in
 * one segment instead of two (one transmission less through the stack per connection: 10 % of the CPU of a
 * Connection: close request on loopback). */
static bool fin_follows(const h1_conn_t *c)
{
    return c->closing && !c->resp_open && c->areq == NULL && c->state < ST_LINGER;
}

/* Writes queued output until it is all sent or the socket is full. False when the connection closed. */
static bool conn_flush(h1_conn_t *c)
{
    bool progress = false;
    while (has_output(c)) {
        ssize_t n;
        if (c->act->nfiles > 0 && c->act->mem_sent == c->act->files[0].mem_at) {
            out_file_t *f = &c->act->files[0];
            off_t off = (off_t)f->f.off;
            n = tt_transport_sendfile(c->tr, c->io.fd, f->f.fd, &off, (size_t)TT_MIN(f->f.len, (int64_t)1 << 30));
            if (n > 0) {
                f->f.off += n;
                f->f.len -= n;
                f->sent += (uint64_t)n;
                if (f->f.len == 0) {
                    f->rec.bytes = f->head_bytes + f->sent;
                    f->rec.duration_ms = tt_loop_now(c->w->loop) - f->start_us / 1000;
                    observe_request(c, f->start_us);
                    tt_accesslog_add(&c->w->alog, &f->rec);
                    release_file(f);
                    memmove(&c->act->files[0], &c->act->files[1], (size_t)(c->act->nfiles - 1) * sizeof(out_file_t));
                    c->act->nfiles--;
                }
            } else if (n == 0) {
                /* The file shrank under us: the promised length can no longer be honoured. */
                conn_close(c, TT_CLOSE_RESET);
                return false;
            }
        } else {
            size_t len = c->act->out.len;
            /* The last bytes before a close go out with its FIN, in one segment (see fin_follows). */
            bool more = fin_follows(c);
            if (c->act->nfiles > 0) {
                len = (size_t)(c->act->files[0].mem_at - c->act->mem_sent);
                more = true; /* the head goes out with the first file bytes */
            }
            n = tt_transport_write(c->tr, c->io.fd, tt_buf_data(&c->act->out), len, more);
            if (n > 0) {
                tt_buf_consume(&c->act->out, (size_t)n);
                c->act->mem_sent += (uint64_t)n;
            }
        }
        if (n < 0) {
            if (n == -EINTR) continue;
            if (n == -EAGAIN) {
                c->wr_blocked = true;
                if (progress || c->tq_kind != TQ_SEND) set_tq(c, TQ_SEND);
                return true;
            }
            conn_close(c, n == -EPROTO ? TT_CLOSE_TLS_ERROR : TT_CLOSE_RESET);
            return false;
        }
        progress = true;
    }
    c->wr_blocked = false;
    c->act->npending = 0;
    if (c->tq_kind == TQ_SEND) set_tq(c, TQ_NONE);
    return true;
}

/* ---- responses ---- */

static void kick_cb(tt_defer_t *d)
{
    h1_conn_t *c = tt_container_of(d, h1_active_t, kick)->conn;
    if (c->state < ST_LINGER) conn_run(c);
}

/* Output was queued from outside conn_run (an asynchronous handler): flush it at the end of the turn. */
static void conn_kick(h1_conn_t *c)
{
    if (!c->in_run && c->state < ST_LINGER) tt_loop_defer(c->w->loop, &c->act->kick, kick_cb);
}

/* The method and target for the log: the request's bytes while handle() runs, the copies afterwards. */
static void req_names(h1_conn_t *c, const tt_req_t *rq, tt_str_t *method, tt_str_t *target)
{
    if (c->areq != NULL && rq == &c->areq->req) {
        *method = c->areq->method;
        *target = c->areq->target;
    } else {
        *method = rq->head->method;
        *target = rq->head->target;
    }
}

/* The line of request `rq`: its head's fields while handle() runs (the head is valid then), the captured copies of
 * an asynchronous request afterwards. */
static tt_accesslog_rec_t line_of(h1_conn_t *c, tt_req_t *rq, int status, uint64_t bytes, uint64_t head_bytes,
                                  tt_close_reason_t decision)
{
    const bool async = c->areq != NULL && rq == &c->areq->req;
    tt_accesslog_rec_t rec = {
        .peer = &c->peer,
        .minor_version = c->act->cur_minor,
        .status = status,
        .bytes = bytes,
        .duration_ms = tt_loop_now(c->w->loop) - c->act->cur_start_us / 1000,
        .conn_id = c->id,
        .req_no = c->requests,
        .decision = tt_close_reason_name(decision),
        .extra = rq->log_extra,
        .head_bytes = head_bytes,
        .head = async ? NULL : rq->head,
        .caps = async ? c->areq->caps : NULL,
        .request_id = tt_str(rq->request_id, rq->request_id_len),
        .up = rq->log_up,
    };
    req_names(c, rq, &rec.method, &rec.target);
    return rec;
}

static void log_line(h1_conn_t *c, tt_req_t *rq, int status, uint64_t bytes, uint64_t head_bytes,
                     tt_close_reason_t decision)
{
    if (tt_accesslog_enabled(&c->w->alog)) {
        tt_accesslog_rec_t rec = line_of(c, rq, status, bytes, head_bytes, decision);
        tt_accesslog_add(&c->w->alog, &rec);
    }
    if (status != 101) observe_request(c, c->act->cur_start_us); /* a tunnel's line lasts as long as the tunnel */
}

static void areq_free_cb(tt_defer_t *d)
{
    free(tt_container_of(d, h1_areq_t, free_later));
}

/* Ends the asynchronous request `a`: detached from the connection, done (calls on it are no-ops, no hook
 * runs), freed at the end of the turn, so a handler still on the stack may touch it harmlessly. */
static void areq_finish(h1_conn_t *c, h1_areq_t *a)
{
    a->req._done = true;
    a->req.hooks = NULL;
    if (a->gen != NULL) {
        tt__wgen_unref(a->gen);
        a->gen = NULL;
    }
    if (c->areq == a) {
        c->areq = NULL;
        c->resp_open = false;
        c->want_writable = false;
        c->body_paused = false;
    }
    tt_loop_defer(c->w->loop, &a->free_later, areq_free_cb);
}

/* The request is answered: finish it and let the connection move on. */
static void req_done(h1_conn_t *c, tt_req_t *rq)
{
    c->resp_open = false;
    rq->_done = true;
    if (c->areq != NULL && rq == &c->areq->req) {
        areq_finish(c, c->areq);
        conn_kick(c);
    }
}

/* Writes a response head into the output and decides whether the connection persists. */
static size_t put_head(h1_conn_t *c, const tt_resp_t *resp, bool chunked, bool has_content, tt_close_reason_t *out)
{
    tt_worker_t *w = c->w;
    const tt_listen_policy_t *p = c->ls->policy;
    const bool no_content = tt_http_status_has_no_content(resp->status);
    tt_ka_state_t st = {
        .minor_version = c->act->cur_minor,
        .conn_tokens = c->act->cur_tokens,
        .close_delimited = has_content && resp->content_length < 0 && !chunked,
        /* chunked content whose framing nothing checked, or content still to come from the socket that an
         * asynchronous handler answered before it all came (a proxied origin's early 413, 401, redirect): reading
         * megabytes more only to stay persistent is not worth it, the connection closes after the response (RFC
         * 9112 9.6). Content already all in the input buffer is discarded, and the connection stays. */
        .unread_body = c->body_unchecked || (c->state == ST_BODY && c->areq != NULL &&
                                             (c->chunked || c->act->body_left > (int64_t)c->act->in.len)),
        .error_close = c->error_close,
        .draining = w->draining,
        .requests = c->requests,
        .age_ms = tt_loop_now(w->loop) - c->accepted_us / 1000,
    };
    tt_close_reason_t decision = c->closing ? (tt_close_reason_t)c->close_reason : tt_keepalive_decide(&p->ka, &st);

    tt_str_t date = tt__worker_date_fields(w);
    const char *reason = tt_http_reason(resp->status);
    size_t reason_len = strlen(reason);
    if (!tt_buf_reserve(&c->act->out, &w->bufs, 192 + reason_len + date.n + resp->fields.n, SIZE_MAX))
        tt_fatal("output buffer");
    char *o0 = tt_buf_tail(&c->act->out), *o = o0;
    o = put(o, TT_LIT("HTTP/1.1 "));
    o = tt_put_u64(o, (uint64_t)resp->status);
    *o++ = ' ';
    o = put(o, reason, reason_len);
    o = put(o, TT_LIT("\r\n"));
    o = put(o, date.p, date.n);
    if (resp->fields.n) o = put(o, resp->fields.p, resp->fields.n);
    if (!no_content && resp->content_length >= 0) {
        o = put(o, TT_LIT("Content-Length: "));
        o = tt_put_u64(o, (uint64_t)resp->content_length);
        o = put(o, TT_LIT("\r\n"));
    } else if (chunked) {
        o = put(o, TT_LIT("Transfer-Encoding: chunked\r\n"));
    }
    if (decision == TT_CLOSE_NONE) {
        if (c->act->cur_minor == 0) o = put(o, TT_LIT("Connection: keep-alive\r\n"));
        uint64_t idle = tt_keepalive_pressure_idle(p->ka.idle_timeout_ms, w->nconns, w->conf->max_connections);
        if (idle < p->ka.idle_timeout_ms) tt_counter_add(&w->metrics.idle_timeout_cuts, 1);
        c->idle_bucket = (uint8_t)tt_keepalive_pick_bucket(c->ls->idle_ms, c->ls->nidle, idle);
        if (p->keepalive_header) {
            o = put(o, TT_LIT("Keep-Alive: timeout="));
            o = tt_put_u64(o, c->ls->idle_ms[c->idle_bucket] / 1000);
            uint32_t left = tt_keepalive_left(&p->ka, c->requests);
            if (left != UINT32_MAX) {
                o = put(o, TT_LIT(", max="));
                o = tt_put_u64(o, left);
            }
            o = put(o, TT_LIT("\r\n"));
        }
    } else {
        o = put(o, TT_LIT("Connection: close\r\n"));
        c->closing = true;
        c->close_reason = (uint8_t)decision;
    }
    o = put(o, TT_LIT("\r\n"));
    size_t head_len = (size_t)(o - o0);
    c->act->out.len += (uint32_t)head_len;
    c->act->mem_appended += head_len;
    c->act->npending++;
    tt_metrics_count_status(&w->metrics, resp->status);
    *out = decision;
    return head_len;
}

/* A whole response: head, content, file range, log line. */
static void h1_respond(tt_req_t *rq, const tt_resp_t *resp)
{
    h1_conn_t *c = rq->_conn;
    if (c->state >= ST_LINGER || c->resp_open) return;
    tt_worker_t *w = c->w;
    const bool send_content = !tt_http_status_has_no_content(resp->status) && !rq->is_head;
    tt_close_reason_t decision;
    size_t head_len = put_head(c, resp, false, send_content, &decision);
    uint64_t content = 0;
    if (send_content && resp->body_len) {
        out_append(c, resp->body, resp->body_len);
        content += resp->body_len;
    }
    tt_str_t method, target;
    req_names(c, rq, &method, &target);
    if (resp->file.fd >= 0) {
        if (!send_content || resp->file.len == 0) {
            if (resp->file.release) resp->file.release(resp->file.ref);
        } else {
            if (c->act->files == NULL) c->act->files = tt_malloc(MAX_FILES * sizeof(out_file_t));
            TT_BUG_ON(c->act->nfiles >= MAX_FILES);
            out_file_t *f = &c->act->files[c->act->nfiles++];
            f->f = resp->file;
            f->mem_at = c->act->mem_appended;
            f->sent = 0;
            f->head_bytes = head_len + content;
            f->start_us = c->act->cur_start_us;
            f->strs = NULL;
            f->rec = (tt_accesslog_rec_t){
                .peer = &c->peer,
                .minor_version = c->act->cur_minor,
                .status = resp->status,
                .conn_id = c->id,
                .req_no = c->requests,
                .decision = tt_close_reason_name(decision),
                .head_bytes = head_len,
            };
            if (tt_accesslog_enabled(&w->alog)) {
                /* The line is written when the file is sent; the request's bytes will be gone by then. */
                const bool async = c->areq != NULL && rq == &c->areq->req;
                size_t capsz = async ? 0 : tt_accesslog_capture_size(&w->alog, rq->head);
                f->strs = tt_malloc(capsz + method.n + target.n + rq->request_id_len + 1);
                char *s = f->strs + capsz;
                f->rec.caps = async ? c->areq->caps : tt_accesslog_capture(&w->alog, rq->head, f->strs);
                memcpy(s, method.p, method.n);
                memcpy(s + method.n, target.p, target.n);
                memcpy(s + method.n + target.n, rq->request_id, rq->request_id_len);
                f->rec.method = tt_str(s, method.n);
                f->rec.target = tt_str(s + method.n, target.n);
                f->rec.request_id = tt_str(s + method.n + target.n, rq->request_id_len);
            }
            req_done(c, rq);
            return;
        }
    }
    log_line(c, rq, resp->status, head_len + content, head_len, decision);
    req_done(c, rq);
}

static void h1_respond_head(tt_req_t *rq, const tt_resp_t *head)
{
    h1_conn_t *c = rq->_conn;
    if (c->state >= ST_LINGER || c->resp_open) return;
    const bool content = !tt_http_status_has_no_content(head->status) && !rq->is_head;
    const bool chunked = content && head->content_length < 0 && c->act->cur_minor >= 1;
    tt_close_reason_t decision;
    c->act->resp_bytes = c->act->resp_head = put_head(c, head, chunked, content, &decision);
    c->resp_open = true;
    c->resp_chunked = chunked;
    c->act->resp_left = !content ? 0 : head->content_length;
    c->act->resp_status = head->status;
    c->act->resp_decision = (uint8_t)decision;
    conn_kick(c);
}

static bool h1_write(tt_req_t *rq, const void *data, size_t len)
{
    h1_conn_t *c = rq->_conn;
    if (c->state >= ST_LINGER || !c->resp_open) return false;
    if (c->act->resp_left >= 0) {
        /* Never more than the Content-Length promised (nothing at all for HEAD, 204, 304). */
        len = (size_t)TT_MIN((int64_t)len, c->act->resp_left);
        c->act->resp_left -= (int64_t)len;
    }
    if (len > 0) {
        if (c->resp_chunked) {
            char size[24];
            int n = snprintf(size, sizeof(size), "%zx\r\n", len);
            out_append(c, size, (size_t)n);
            out_append(c, data, len);
            out_append(c, TT_LIT("\r\n"));
            c->act->resp_bytes += (size_t)n + len + 2;
        } else {
            out_append(c, data, len);
            c->act->resp_bytes += len;
        }
        conn_kick(c);
    }
    if (c->act->out.len >= OUT_HIGH) {
        c->want_writable = true;
        return false;
    }
    return true;
}

/* Ends a streamed response; `failed`: it could not be completed, so the connection must close to show
 * the truncation (no terminating chunk, fewer bytes than Content-Length). */
static void finish_streamed(tt_req_t *rq, tt_str_t trailers, bool failed)
{
    h1_conn_t *c = rq->_conn;
    if (c->state >= ST_LINGER || !c->resp_open) return;
    if (c->resp_chunked && !failed) {
        out_append(c, TT_LIT("0\r\n"));
        out_append(c, trailers.p, trailers.n);
        out_append(c, TT_LIT("\r\n"));
        c->act->resp_bytes += 5 + trailers.n;
    }
    tt_close_reason_t decision = (tt_close_reason_t)c->act->resp_decision;
    if (failed || c->act->resp_left > 0) {
        c->closing = true;
        c->close_reason = TT_CLOSE_RESET;
        decision = TT_CLOSE_RESET;
    }
    log_line(c, rq, c->act->resp_status, c->act->resp_bytes, c->act->resp_head, decision);
    req_done(c, rq);
    conn_kick(c);
}

static void h1_finish(tt_req_t *rq, tt_str_t trailers)
{
    finish_streamed(rq, trailers, false);
}
static void h1_fail(tt_req_t *rq)
{
    finish_streamed(rq, TT_STR_NULL, true);
}

static void h1_pause_body(tt_req_t *rq, bool pause)
{
    h1_conn_t *c = rq->_conn;
    c->body_paused = pause;
    if (!pause) conn_kick(c);
}

/* An interim response (RFC 9110 15.2) goes out ahead of the final head; never to an HTTP/1.0 client, and a 100 only
 * when tether did not send its own for this request. */
static void h1_interim(tt_req_t *rq, int status, tt_str_t fields)
{
    h1_conn_t *c = rq->_conn;
    if (c->state >= ST_LINGER || c->resp_open || c->act->cur_minor == 0 || status < 100 || status > 199 ||
        status == 101)
        return;
    if (status == 100 && c->sent_continue) return;
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, tt_http_reason(status));
    out_append(c, line, (size_t)n);
    out_append(c, fields.p, fields.n);
    out_append(c, TT_LIT("\r\n"));
    if (status == 100) c->sent_continue = true;
    conn_kick(c);
}

/* The access-log line of a tunnel that ends: status 101, the bytes sent to the client (the head included), and the
 * handler's fields followed by the bytes each way and the tunnel's duration. */
static void tunnel_log(h1_conn_t *c, tt_close_reason_t reason)
{
    if (!tt_accesslog_enabled(&c->w->alog)) return;
    h1_areq_t *a = c->areq;
    uint64_t up = tt_tunnel_bytes_from(c->tunnel, TT_TUNNEL_CLIENT);
    uint64_t down = tt_tunnel_bytes_from(c->tunnel, TT_TUNNEL_UPSTREAM);
    uint64_t ms = tt_loop_now(c->w->loop) - tt_tunnel_start_ms(c->tunnel);
    tt_accesslog_rec_t rec = line_of(c, &a->req, 101, down, TT_MIN(c->act->resp_bytes, down), reason);
    rec.tunnel = true;
    rec.tunnel_up = up;
    rec.tunnel_down = down - rec.head_bytes;
    rec.tunnel_ms = ms;
    char extra[640];
    if (tt_accesslog_wants_extra(&c->w->alog)) {
        tt_str_t px = a->req.log_extra;
        int n = snprintf(extra, sizeof(extra), "%.*s%stunnel_up=%llu tunnel_down=%llu tunnel_ms=%llu", (int)px.n,
                         px.n ? px.p : "", px.n ? " " : "", (unsigned long long)up, (unsigned long long)rec.tunnel_down,
                         (unsigned long long)ms);
        rec.extra = tt_str(extra, n > 0 ? TT_MIN((size_t)n, sizeof(extra) - 1) : 0);
    }
    tt_accesslog_add(&c->w->alog, &rec);
}

/* 101: the head, then the socket belongs to the tunnel. The output still queued (an interim response, the head) and
 * the bytes the client sent after its request go through the tunnel, in order. */
static bool h1_upgrade(tt_req_t *rq, tt_str_t fields, tt_tunnel_t *t)
{
    h1_conn_t *c = rq->_conn;
    tt_worker_t *w = c->w;
    if (c->state != ST_HEAD || c->resp_open || c->closing || c->act->nfiles > 0 || c->areq == NULL ||
        rq != &c->areq->req)
        return false;
    size_t before = c->act->out.len;
    out_append(c, TT_LIT("HTTP/1.1 101 Switching Protocols\r\n"));
    tt_str_t date = tt__worker_date_fields(w);
    out_append(c, date.p, date.n);
    out_append(c, fields.p, fields.n);
    out_append(c, TT_LIT("\r\n"));
    tt_metrics_count_status(&w->metrics, 101);
    c->act->resp_bytes = c->act->out.len - before;
    c->act->resp_status = 101;
    c->resp_open = true;
    c->state = ST_TUNNEL;
    c->tunnel = t;
    set_tq(c, TQ_NONE);
    tt_gauge_add(&w->metrics.tunnels_open, 1);
    /* toward the client: queued output first (the upstream side's bytes follow it) */
    tt_tunnel_attach(t, TT_TUNNEL_CLIENT, c->io.fd, c->tr, c->peer_hup,
                     c->act->in.len ? tt_buf_data(&c->act->in) : NULL, c->act->in.len);
    tt_tunnel_queue(t, TT_TUNNEL_CLIENT, tt_buf_data(&c->act->out), c->act->out.len);
    tt_buf_release(&c->act->in, &w->bufs);
    tt_buf_release(&c->act->out, &w->bufs);
    c->act->npending = 0;
    c->wr_blocked = false;
    return true;
}

static void h1_close_tunnel(tt_req_t *rq, tt_close_reason_t reason)
{
    h1_conn_t *c = rq->_conn;
    if (c->state != ST_TUNNEL || c->areq == NULL || rq != &c->areq->req) return;
    tunnel_log(c, reason);
    areq_finish(c, c->areq);
    conn_close(c, reason);
}

static const tt_req_ops_t h1_req_ops = {
    .respond = h1_respond,
    .respond_head = h1_respond_head,
    .write = h1_write,
    .finish = h1_finish,
    .fail_response = h1_fail,
    .pause_body = h1_pause_body,
    .interim = h1_interim,
    .upgrade = h1_upgrade,
    .close_tunnel = h1_close_tunnel,
};

/* The head of a request refused before any of it could be parsed: no method, no target, no fields. */
static const tt_h1_request_t no_head = {.minor_version = 1, .content_length = -1, .known = {-1, -1, -1, -1, -1, -1}};
_Static_assert(TT_H1_F__COUNT == 6, "no_head.known lists every known field");

/* Builds the handler's view of a parsed head. False when the request-target form is not acceptable. */
static bool make_req(h1_conn_t *c, const tt_h1_request_t *h, tt_req_t *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->head = h;
    rq->is_head = h->method_id == TT_METHOD_HEAD;
    rq->has_body = h->chunked || h->content_length > 0;
    rq->content_length = h->chunked ? -1 : h->content_length;
    rq->minor_version = h->minor_version;
    rq->major_version = 1;
    rq->authority = h->authority;
    rq->tls = tt_transport_is_tls(c->tr);
    rq->conn_id = c->id;
    rq->req_no = c->requests;
    rq->start_ms = c->mark_us / 1000;
    rq->peer = &c->peer;
    rq->worker = c->w;
    rq->_conn = c;
    rq->_ops = &h1_req_ops;
    tt__req_set_id(rq, c->w, h);
    c->act->cur_minor = (uint8_t)h->minor_version;
    c->act->cur_tokens = h->conn_tokens;
    c->act->cur_start_us = c->mark_us;
    tt_str_t t = h->target;
    if (t.n == 0 || h->error != TT_H1_OK) return false; /* the refusal of a head the parser did not accept */
    switch (h->target_form) {
    case TT_TARGET_ASTERISK: rq->path = t; return true; /* OPTIONS * (the parser allows nothing else) */
    case TT_TARGET_AUTHORITY: return true;              /* CONNECT: answered before routing */
    case TT_TARGET_ABSOLUTE: {
        /* RFC 9112 3.2.2: the authority replaces Host (h->authority); the path and query follow it */
        const char *ps = h->authority.p + h->authority.n;
        t = tt_str(ps, (size_t)(t.p + t.n - ps)); /* an empty path is "/" (below) */
        break;
    }
    case TT_TARGET_ORIGIN: break;
    }
    return tt__req_set_path(rq, t);
}

/* Refuses the request with `status` and closes after the response. */
static void respond_error(h1_conn_t *c, tt_req_t *rq, int status)
{
    c->error_close = true;
    c->linger = true;
    tt_req_respond_text(rq, status, TT_STR_NULL);
    c->error_close = false;
}

/* Tells the asynchronous handler that its request is abandoned (its hooks are cleared first, so none runs
 * again). */
static void tell_abort(h1_areq_t *a)
{
    const tt_req_hooks_t *hooks = a->req.hooks;
    a->req.hooks = NULL;
    if (hooks && hooks->on_abort) hooks->on_abort(&a->req);
}

/* The client is gone: tell the asynchronous handler, then finish the request. */
static void abort_areq(h1_conn_t *c)
{
    h1_areq_t *a = c->areq;
    if (a == NULL) return;
    tell_abort(a);
    if (!a->req._done) areq_finish(c, a);
}

/* Copies a request the handler will answer later. */
static tt_req_t *make_areq(h1_conn_t *c, const tt_req_t *rq)
{
    const tt_h1_request_t *h = rq->head;
    size_t capsz = tt_accesslog_capture_size(&c->w->alog, h);
    h1_areq_t *a = tt_malloc(sizeof(*a) + capsz + h->method.n + h->target.n);
    a->req = *rq;
    a->free_later = (tt_defer_t){0};
    a->gen = c->w->cur;
    tt__wgen_ref(a->gen);
    a->caps = tt_accesslog_capture(&c->w->alog, h, a->strs);
    char *s = a->strs + capsz;
    memcpy(s, h->method.p, h->method.n);
    memcpy(s + h->method.n, h->target.p, h->target.n);
    a->method = tt_str(s, h->method.n);
    a->target = tt_str(s + h->method.n, h->target.n);
    c->areq = a;
    return &a->req;
}

/* ---- request dispatch ---- */

/*
 * Checks the chunked framing of the content that came with the head (the input after `head_len`) before any
 * response can be committed (RFC 9112 7.1): 200 when it is all there and well formed, 0 when more must come, 400
 * (bad framing) or 413 (over max_body_size) to refuse it. A copy of the decoder reads it: the content itself is
 * consumed later, as usual.
 */
static int check_buffered_chunked(const h1_conn_t *c, size_t head_len)
{
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    const char *p = tt_buf_data(&c->act->in) + head_len;
    size_t left = c->act->in.len - head_len;
    uint64_t seen = 0;
    while (left > 0 && !d.done) {
        tt_str_t data;
        int64_t n = tt_h1_chunked_decode(&d, p, left, &data);
        if (n < 0) return 400;
        if ((seen += data.n) > c->ls->policy->max_body_bytes) return 413;
        if (n == 0) break;
        p += n;
        left -= (size_t)n;
    }
    return d.done ? 200 : 0;
}

static void dispatch(h1_conn_t *c, tt_h1_request_t *h, size_t head_len)
{
    tt_worker_t *w = c->w;
    tt_req_t rq;
    set_tq(c, TQ_NONE);
    /* A request boundary: after a reload, the connection takes its listener's new policy from this request on. */
    c->ls = tt__lstate_follow(c->ls);
    const tt_listen_policy_t *p = c->ls->policy;
    bool ok = make_req(c, h, &rq);
    c->chunked = h->chunked;
    c->act->body_left = h->content_length > 0 ? h->content_length : 0;
    c->act->body_seen = 0;
    if (h->chunked) tt_h1_chunked_init(&c->act->chunk);
    bool has_body = rq.has_body;
    int framing = ok && h->chunked ? check_buffered_chunked(c, head_len) : 200;
    c->body_unchecked = framing == 0; /* the response is committed before the framing is known: it says close */

    if (!ok) {
        respond_error(c, &rq, 400);
    } else if (h->method_id == TT_METHOD_CONNECT) {
        /* No route takes a tunnel: the authority-form target names no resource here, which allows no method
         * (RFC 9110 10.2.1: an empty Allow). Closed after: a client may already be sending tunnel bytes. */
        c->error_close = true;
        c->linger = true;
        tt_req_respond_text(&rq, 405, TT_STR("Allow: \r\n"));
        c->error_close = false;
    } else if (h->content_length > 0 && (uint64_t)h->content_length > p->max_body_bytes) {
        respond_error(c, &rq, 413);
    } else if (framing > 200) {
        respond_error(c, &rq, framing); /* never handed to a handler (or an upstream) */
    } else {
        c->sent_continue = has_body && h->expect_continue && h->minor_version >= 1;
        if (c->sent_continue) out_append(c, TT_LIT("HTTP/1.1 100 Continue\r\n\r\n"));
        if (tt_str_eq(rq.path, TT_LIT("*"))) {
            tt_req_respond_text(&rq, 200, TT_STR("Allow: GET, HEAD, OPTIONS\r\n"));
        } else {
            tt__wgen_t *g = w->cur; /* the newest router; an asynchronous request keeps its generation */
            int r = -1;             /* < 0: answered (404, 421, 301) */
            if (g->router != NULL)
                r = tt_router_route(g->router, &rq, tt_tls_sni(c->tr));
            else
                tt_req_respond_text(&rq, 404, TT_STR_NULL);
            if (r >= 0) {
                const tt_route_t *rt = &g->router->routes[r];
                if (rt->ops->async) {
                    tt_req_t *ar = make_areq(c, &rq);
                    rt->ops->handle(g->route_state[r], ar);
                    /* The views end with handle(): the head is the worker's parse target, the path is in the
                     * worker's path scratch or the read buffer, the query and authority point into the read
                     * buffer, all reused for the next request. Nothing may read them later. */
                    ar->head = NULL;
                    ar->path = ar->query = ar->authority = TT_STR_NULL;
                    if (c->areq != NULL && &c->areq->req == ar && !has_body && ar->hooks && ar->hooks->on_body_end)
                        ar->hooks->on_body_end(ar, TT_STR_NULL);
                } else {
                    rt->ops->handle(g->route_state[r], &rq);
                }
            }
        }
    }
    tt_buf_consume(&c->act->in, head_len);
    c->act->last_len = 0;
    if (has_body && !c->closing)
        c->state = ST_BODY;
    else if (has_body)
        c->linger = true; /* the content stays unread: drain it while lingering */
    c->mark_us = tt_loop_now_us(w->loop);
}

/* Request content: to the asynchronous handler that wants it, else discarded. */
static void body_data(h1_conn_t *c, const char *p, size_t n)
{
    h1_areq_t *a = c->areq;
    if (n > 0 && a != NULL && a->req.hooks && a->req.hooks->on_body) a->req.hooks->on_body(&a->req, p, n);
}

static void body_end(h1_conn_t *c)
{
    c->state = ST_HEAD;
    c->body_unchecked = false;
    h1_areq_t *a = c->areq;
    /* The collected trailer section ends with the empty line's CRLF, which is not a field line. */
    tt_str_t tr =
        c->act->trailers.len >= 2 ? tt_str(tt_buf_data(&c->act->trailers), c->act->trailers.len - 2) : TT_STR_NULL;
    if (a != NULL && a->req.hooks && a->req.hooks->on_body_end) a->req.hooks->on_body_end(&a->req, tr);
    tt_buf_release(&c->act->trailers, &c->w->bufs);
}

/* Content that cannot be read on (bad chunk framing, over the limit): answer if nothing was, then close. */
static void body_refuse(h1_conn_t *c, int status)
{
    h1_areq_t *a = c->areq;
    c->closing = true;
    c->linger = true;
    c->close_reason = TT_CLOSE_BAD_REQUEST;
    c->state = ST_HEAD;
    c->body_unchecked = false;
    if (a != NULL && !c->resp_open) {
        tell_abort(a);
        c->error_close = true;
        tt_req_respond_text(&a->req, status, TT_STR_NULL);
        c->error_close = false;
    } else {
        abort_areq(c);
    }
}

/* Consumes request content from the input buffer. False when the connection must close. */
static bool consume_body(h1_conn_t *c)
{
    const tt_listen_policy_t *p = c->ls->policy;
    bool progress = false;
    while (c->act->in.len > 0 && c->state == ST_BODY && !(c->areq && c->body_paused)) {
        if (!c->chunked) {
            size_t n = (size_t)TT_MIN((int64_t)c->act->in.len, c->act->body_left);
            const char *data = tt_buf_data(&c->act->in);
            tt_buf_consume(&c->act->in, n); /* the bytes stay in place until the next read */
            c->act->body_left -= (int64_t)n;
            progress = true;
            body_data(c, data, n);
            if (c->act->body_left == 0) body_end(c);
            continue;
        }
        tt_str_t data;
        bool in_trailer = tt_h1_chunked_in_trailer(&c->act->chunk);
        int64_t n = tt_h1_chunked_decode(&c->act->chunk, tt_buf_data(&c->act->in), c->act->in.len, &data);
        if (n < 0 || (c->act->body_seen += data.n) > p->max_body_bytes) {
            body_refuse(c, n < 0 ? 400 : 413);
            return false;
        }
        if (in_trailer && c->areq != NULL)
            tt_buf_append(&c->act->trailers, &c->w->bufs, tt_buf_data(&c->act->in), (size_t)n);
        tt_buf_consume(&c->act->in, (size_t)n);
        progress = progress || n > 0;
        body_data(c, data.p, data.n);
        if (c->act->chunk.done)
            body_end(c);
        else if (n == 0)
            break;
    }
    if (progress && c->state == ST_BODY) set_tq(c, TQ_BODY);
    return true;
}

static enum process_result conn_process(h1_conn_t *c)
{
    tt_worker_t *w = c->w;
    const tt_listen_policy_t *p = c->ls->policy;
    while (!c->closing) {
        if (c->state == ST_BODY) {
            if (!consume_body(c)) return P_STOP;
            if (c->state == ST_BODY) return P_NEED_INPUT;
            continue;
        }
        if (c->areq != NULL) return P_WAIT; /* pipelined requests wait for the one in flight */
        if (c->act->in.len == 0) return P_NEED_INPUT;
        if (c->act->npending >= PIPELINE_MAX || c->act->out.len >= OUT_HIGH || c->act->nfiles >= MAX_FILES)
            return P_BLOCKED;
        if (c->requests == 0 && p->h2.enabled && !tt_transport_is_tls(c->tr)) {
            int h2 = check_preface(c); /* HTTP/2 with prior knowledge (RFC 9113 3.3) */
            if (h2 > 0) return P_STOP;
            if (h2 < 0) return P_NEED_INPUT;
        }
        tt_h1_request_t *h = &w->req;
        int r = tt_h1_parse_request(tt_buf_data(&c->act->in), c->act->in.len, c->act->last_len, &p->limits, h);
        if (r == TT_INCOMPLETE) {
            c->act->last_len = c->act->in.len;
            return P_NEED_INPUT;
        }
        c->requests++;
        if (r == TT_BAD) {
            tt_req_t rq;
            make_req(c, h, &rq);
            respond_error(c, &rq, tt_h1_error_status(h->error));
            tt_log(TT_LOG_DEBUG, "conn %llu: request refused: %s", (unsigned long long)c->id,
                   tt_h1_error_name(h->error));
            return P_STOP;
        }
        dispatch(c, h, (size_t)r);
    }
    return P_STOP;
}

/* ---- reading ---- */

static bool can_read(const h1_conn_t *c)
{
    if (c->closing || c->peer_eof || c->state > ST_BODY) return false;
    if (c->state == ST_BODY) return !(c->areq && c->body_paused);
    if (c->areq != NULL) return false; /* no pipelined reading while a request is in flight */
    return c->act->npending < PIPELINE_MAX && c->act->out.len < OUT_HIGH && c->act->nfiles < MAX_FILES;
}

/* One read. 1: bytes arrived; 0: none (EAGAIN, EOF noted); -1: the connection closed. */
static int conn_read(h1_conn_t *c)
{
    tt_worker_t *w = c->w;
    if (tt_buf_space(&c->act->in) < 2048 && !tt_buf_reserve(&c->act->in, &w->bufs, 4096, head_max(c->ls->policy))) {
        /* Complete requests wait in the buffer (reading ran ahead of answering a pipelined burst): parse
         * them first; only a head that is still incomplete when the buffer is full is too large. */
        if (c->state == ST_HEAD && c->act->last_len < c->act->in.len) return 0;
        /* A head that does not fit is larger than any limit allows. The refusal is built from an empty head:
         * the worker's parse target holds another call's views (perhaps into another connection's freed
         * buffer), never this head's. */
        tt_req_t rq;
        make_req(c, &no_head, &rq);
        c->requests++;
        respond_error(c, &rq, 431);
        return 0;
    }
    size_t space = tt_buf_space(&c->act->in);
    ssize_t n = tt_transport_read(c->tr, c->io.fd, tt_buf_tail(&c->act->in), space);
    if (n > 0) {
        if (c->idle)
            leave_idle(c, true);
        else if (c->act->in.len == 0 && c->state == ST_HEAD && c->requests > 0 && c->tq_kind != TQ_HEADER)
            c->mark_us = tt_loop_now_us(w->loop);
        c->act->in.len += (uint32_t)n;
        if (tt_transport_drained(c->tr, n, space, c->peer_hup)) c->rd_ready = false; /* next bytes: new edge */
        return 1;
    }
    if (n == 0) {
        c->peer_eof = true;
        c->rd_ready = false;
        return 0;
    }
    if (n == -EAGAIN) {
        c->rd_ready = false;
        return 0;
    }
    if (n == -EINTR) return 0;
    conn_close(c, n == -EPROTO ? TT_CLOSE_TLS_ERROR : TT_CLOSE_RESET);
    return -1;
}

/* ---- the state machine ---- */

/* After a round of I/O: pick the one deadline the connection now waits on, or go idle, or close. */
static void conn_settle(h1_conn_t *c)
{
    if (c->state >= ST_LINGER) return;
    if (has_output(c)) return; /* waiting for EPOLLOUT, in the send queue */
    if (c->closing) {
        if (c->resp_open) return; /* a streamed response is still coming: close after its end */
        finish_close(c);
        return;
    }
    if (c->peer_eof) {
        /* Everything complete was answered; a partial request can never finish (an asynchronous one is
         * abandoned, as nginx does when the client goes away). */
        conn_close(c, TT_CLOSE_CLIENT_CLOSE);
        return;
    }
    if (c->state == ST_BODY) {
        /* Paused by the handler's backpressure: the client is not the slow one, so no body timeout. */
        if (c->areq && c->body_paused)
            set_tq(c, TQ_NONE);
        else if (c->tq_kind != TQ_BODY)
            set_tq(c, TQ_BODY);
        return;
    }
    if (c->areq != NULL) {
        set_tq(c, TQ_NONE); /* the handler's own deadlines govern the wait */
        return;
    }
    if (c->act->in.len > 0 || c->requests == 0) {
        if (c->tq_kind != TQ_HEADER) set_tq(c, TQ_HEADER);
        return;
    }
    if (c->w->draining) {
        conn_close(c, TT_CLOSE_SHUTDOWN);
        return;
    }
    enter_idle(c);
}

static void resume_cb(tt_defer_t *d)
{
    h1_conn_t *c = tt_container_of(d, h1_active_t, resume)->conn;
    if (c->state < ST_LINGER) conn_run(c);
}

static void conn_run(h1_conn_t *c)
{
    c->in_run = true;
    for (int round = 0;; round++) {
        if (c->rd_ready && can_read(c) && conn_read(c) < 0) return;
        enum process_result pr = conn_process(c);
        if (c->state == ST_CLOSED) return;
        if (has_output(c) && !c->wr_blocked && !conn_flush(c)) return;
        bool more = (c->rd_ready && can_read(c)) || (pr == P_BLOCKED && !has_output(c));
        if (c->want_writable && c->act->out.len < OUT_LOW && c->areq != NULL) {
            /* The handler was told to stop producing; let it go on (it may queue more output now). */
            c->want_writable = false;
            if (c->areq->req.hooks && c->areq->req.hooks->on_writable) c->areq->req.hooks->on_writable(&c->areq->req);
            if (c->state == ST_CLOSED) return;
            more = more || (has_output(c) && !c->wr_blocked);
        }
        if (!more) break;
        if (round + 1 == RUN_ROUNDS) {
            /* Fairness: let other connections run; continue next turn (edge-triggered: no new event). */
            tt_loop_defer(c->w->loop, &c->act->resume, resume_cb);
            break;
        }
    }
    c->in_run = false;
    conn_settle(c);
    /* `c` may be closed here, but its memory lives until the end of the turn. */
    tt_gauge_set(&c->w->metrics.buffers_in_use, c->w->bufs.in_use);
}

static void conn_on_io(tt_io_t *io, uint32_t events)
{
    h1_conn_t *c = tt_container_of(io, h1_conn_t, io);
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_LINGER) {
        if (events & TT_EV_READ) linger_drain(c);
        return;
    }
    if (c->state == ST_RACE) {
        if (events & (TT_EV_READ | TT_EV_HUP | TT_EV_ERR)) race_read(c);
        return;
    }
    if (c->state == ST_TUNNEL) {
        tt_tunnel_on_io(c->tunnel, TT_TUNNEL_CLIENT, events);
        return;
    }
    take_active(c); /* an idle connection wakes up: it is given back when it is idle again */
    if (events & TT_EV_READ) c->rd_ready = true;
    if (events & TT_EV_HUP) c->peer_hup = true;
    if (events & TT_EV_WRITE) {
        c->wr_blocked = false;
        if (c->tr->want_write) c->rd_ready = true; /* a TLS read that had to write first */
    }
    if (events & TT_EV_ERR) {
        conn_close(c, c->state == ST_TLS ? TT_CLOSE_TLS_ERROR : TT_CLOSE_RESET);
        return;
    }
    if ((events & TT_EV_HUP) && c->areq != NULL && c->state == ST_HEAD) {
        /* The client left while its request waits (for a pooled connection, for the upstream): drop it
         * now instead of when the answer comes (nginx does the same, status 499). */
        conn_close(c, TT_CLOSE_CLIENT_CLOSE);
        return;
    }
    if (c->state == ST_TLS && !tls_step(c)) return;
    conn_run(c);
}

/* ---- TLS and HTTP/2 ---- */

/* The connection speaks HTTP/2 (ALPN h2, or the cleartext preface): the h2 code takes the socket, the
 * transport and the bytes already read; this struct goes away without closing anything. */
static void hand_to_h2(h1_conn_t *c)
{
    tt_worker_t *w = c->w;
    set_tq(c, TQ_NONE);
    tt_list_remove(&c->base.link);
    tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H1][tt_transport_is_tls(c->tr)], -1);
    c->ls = tt__lstate_follow(c->ls); /* its reference goes with it */
    tt__h2_conn_adopt(c->ls, &c->io, c->tr, &c->peer, c->id, c->accepted_us / 1000, tt_buf_data(&c->act->in),
                      c->act->in.len);
    c->tr = NULL;
    tt_buf_release(&c->act->in, &w->bufs);
    tt_buf_release(&c->act->out, &w->bufs);
    c->io.fd = -1;
    c->state = ST_CLOSED;
    tt_loop_defer(w->loop, &c->act->free_later, conn_free_cb);
}

/* Drives the TLS handshake. True when HTTP/1.1 can go on; false when the connection closed or moved. */
static bool tls_step(h1_conn_t *c)
{
    tt_worker_t *w = c->w;
    int r = tt_tls_handshake(c->tr);
    if (r == 0) return false; /* waiting; the header timeout (from accept) bounds it */
    if (r < 0) {
        tt_log(TT_LOG_DEBUG, "conn %llu: TLS handshake failed: %s", (unsigned long long)c->id, tt_tls_last_error());
        conn_close(c, TT_CLOSE_TLS_ERROR);
        return false;
    }
    int resumed = tt_tls_resumed(c->tr) ? 1 : 0;
    tt_counter_add(&w->metrics.tls_handshakes[resumed], 1);
    tt_hist_observe(&w->metrics.tls_handshake_us[resumed], tt_hist_lat_bounds, tt_hist_lat_nbounds,
                    tt_loop_now_us(w->loop) - c->accepted_us);
    const char *alpn = tt_tls_alpn(c->tr);
    if (alpn != NULL && strcmp(alpn, "h2") == 0) {
        hand_to_h2(c);
        return false;
    }
    c->state = ST_HEAD;
    c->rd_ready = true; /* TLS may hold decrypted bytes already */
    return true;
}

/* A plain connection whose first bytes are the HTTP/2 preface (prior knowledge, RFC 9113 3.3, 3.4). 1: it is
 * HTTP/2 (moved); 0: not; -1: too few bytes to tell yet. A client that sends "PRI * HTTP/2.0" and its empty line
 * speaks HTTP/2, however badly: the h2 connection answers what follows (anything but "SM\r\n\r\n" is a
 * GOAWAY(PROTOCOL_ERROR)), never an HTTP/1.1 505. */
static int check_preface(h1_conn_t *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\n";
    size_t n = TT_MIN((size_t)c->act->in.len, sizeof(preface) - 1);
    if (memcmp(tt_buf_data(&c->act->in), preface, n) != 0) return 0;
    if (n < sizeof(preface) - 1) return -1;
    hand_to_h2(c);
    return 1;
}

/* ---- the connection's ops for the worker ---- */

/* A head that did not arrive in time: tell the client why (best effort, one non-blocking write) and log it like any
 * response, with its request-line when that much came (parsed again here: the worker's parse target lives for one
 * call). The connection closes right after. */
static void respond_timeout(h1_conn_t *c)
{
    static const char msg[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    ssize_t n = tt_transport_write(c->tr, c->io.fd, msg, sizeof(msg) - 1, false);
    tt_metrics_count_status(&c->w->metrics, 408);
    tt_h1_request_t *h = &c->w->req;
    tt_h1_parse_request(tt_buf_data(&c->act->in), c->act->in.len, 0, &c->ls->policy->limits, h);
    c->act->cur_minor = (uint8_t)h->minor_version;
    c->act->cur_start_us = c->mark_us;
    c->requests++; /* the line numbers the request that timed out */
    tt_req_t rq;
    memset(&rq, 0, offsetof(tt_req_t, request_id));
    rq.head = h;
    rq.worker = c->w;
    tt__req_set_id(&rq, c->w, NULL);
    log_line(c, &rq, 408, n > 0 ? (uint64_t)n : 0, n > 0 ? (uint64_t)n : 0, TT_CLOSE_HEADER_TIMEOUT);
}

static void op_on_timeout(tt__conn_t *base)
{
    h1_conn_t *c = tt_container_of(base, h1_conn_t, base);
    enum tq_kind kind = (enum tq_kind)c->tq_kind;
    c->tq_kind = TQ_NONE;
    switch (kind) {
    case TQ_IDLE:
        if (races(c, TT_CLOSE_IDLE_TIMEOUT))
            begin_race(c, TT_CLOSE_IDLE_TIMEOUT);
        else
            conn_close(c, TT_CLOSE_IDLE_TIMEOUT);
        break;
    case TQ_RACE: conn_close(c, (tt_close_reason_t)c->close_reason); break;
    case TQ_BODY: conn_close(c, TT_CLOSE_BODY_TIMEOUT); break;
    case TQ_SEND: conn_close(c, TT_CLOSE_SEND_TIMEOUT); break;
    case TQ_LINGER: conn_close(c, (tt_close_reason_t)c->close_reason); break;
    case TQ_HEADER:
        if (c->state == ST_TLS) {
            conn_close(c, TT_CLOSE_TLS_ERROR); /* an abandoned handshake */
            break;
        }
        if (c->act->in.len > 0 && !has_output(c)) respond_timeout(c);
        conn_close(c, TT_CLOSE_HEADER_TIMEOUT);
        break;
    case TQ_NONE: break;
    }
}

static void op_close(tt__conn_t *base, tt_close_reason_t reason)
{
    h1_conn_t *c = tt_container_of(base, h1_conn_t, base);
    if (c->state == ST_RACE)
        conn_close(c, (tt_close_reason_t)c->close_reason); /* its window is cut, its reason stays */
    else if (c->idle && races(c, reason))
        begin_race(c, reason);
    else
        conn_close(c, reason);
}

static void op_drain(tt__conn_t *base)
{
    h1_conn_t *c = tt_container_of(base, h1_conn_t, base);
    if (c->state == ST_RACE) {
        conn_close(c, (tt_close_reason_t)c->close_reason);
        return;
    }
    if (c->idle || c->state == ST_TLS ||
        (c->state == ST_HEAD && c->act->in.len == 0 && !has_output(c) && c->areq == NULL))
        conn_close(c, TT_CLOSE_SHUTDOWN);
    /* Otherwise the next response says Connection: close (w->draining) and the connection ends after it. */
}

static void op_abort(tt__conn_t *base)
{
    h1_conn_t *c = tt_container_of(base, h1_conn_t, base);
    conn_close(c, c->closing ? (tt_close_reason_t)c->close_reason : TT_CLOSE_SHUTDOWN);
}

/* What the status page shows of this connection (conn_report.c); on the owning worker. */
static void op_info(const tt__conn_t *base, uint64_t now_ms, tt_conn_info_t *out)
{
    const h1_conn_t *c = tt_container_of(base, h1_conn_t, base);
    out->id = c->id;
    uint64_t now_us = tt_loop_now_us(c->w->loop);
    (void)now_ms; /* this connection keeps microsecond stamps */
    out->age_ms = (now_us - c->accepted_us) / 1000;
    out->idle_ms = c->idle ? (now_us - c->mark_us) / 1000 : 0;
    out->requests = c->requests;
    out->listener = tt__lstate_index(c->ls);
    out->tls = c->ls->tls != NULL;
    out->peer = c->peer;
    if (c->idle)
        out->state = TT_CONN_IDLE;
    else if (c->state == ST_TLS)
        out->state = TT_CONN_HANDSHAKE;
    else if (c->state == ST_TUNNEL)
        out->state = TT_CONN_TUNNEL;
    else if (c->state == ST_LINGER || c->state == ST_RACE || c->state == ST_CLOSED)
        out->state = TT_CONN_CLOSING;
    else if (c->areq != NULL || has_output(c) || c->resp_open)
        out->state = TT_CONN_WRITING;
    else
        out->state = TT_CONN_READING;
}

static const tt__conn_ops_t h1_ops = {
    .on_timeout = op_on_timeout,
    .close = op_close,
    .drain = op_drain,
    .abort = op_abort,
    .info = op_info,
};

/* ---- entry points from the worker ---- */

void tt__h1_worker_init(tt_worker_t *w)
{
    tt_bufpool_init(&w->h1_active, sizeof(h1_active_t), 256);
}

void tt__h1_conn_accept(tt__lstate_t *ls, int fd, const tt_addr_t *peer)
{
    tt_worker_t *w = ls->w;
    h1_conn_t *c = tt_calloc(1, sizeof(*c));
    c->base.ops = &h1_ops;
    c->io.fd = fd;
    c->io.cb = conn_on_io;
    tt_tq_entry_init(&c->base.tq);
    c->ls = ls;
    tt__wgen_ref(ls->gen);
    c->w = w;
    take_active(c); /* the first request usually came with the handshake */
    c->id = ++w->conn_seq * w->nworkers + w->id;
    c->accepted_us = c->mark_us = tt_loop_now_us(w->loop);
    c->peer = *peer;
    c->state = ST_HEAD;
    c->tr = &tt_transport_tcp;
    tt_list_push_tail(&w->conns, &c->base.link);
    w->nconns++;
    tt_counter_add(&w->metrics.conn_accepted, 1);
    tt_gauge_add(&w->metrics.conn_open, 1);
    if (ls->tls != NULL) {
        c->tr = tt_tls_accept(ls->tls, fd);
        if (c->tr == NULL) {
            c->tr = &tt_transport_tcp;
            tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H1][0], 1);
            conn_close(c, TT_CLOSE_TLS_ERROR);
            return;
        }
        c->state = ST_TLS;
    }
    tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H1][tt_transport_is_tls(c->tr)], 1);
    if (tt_io_start(w->loop, &c->io, TT_EV_READ | TT_EV_WRITE | TT_EV_EDGE) != 0) {
        conn_close(c, TT_CLOSE_RESET);
        return;
    }
    set_tq(c, TQ_HEADER); /* the header timeout runs from accept (a TLS handshake counts as the first head) */
    if (c->state != ST_TLS) {
        /* No read now: the listener is ready at the client's ACK, and its request mostly comes a little later (with
         * wrk on loopback, a read here found nothing for 97 % of connections: one wasted read(2) per connection).
         * The registration above reports bytes already there at the next poll, so nothing waits for them. */
        return;
    }
    c->rd_ready = true; /* the ClientHello may be there: OpenSSL reads it or asks for more */
    if (!tls_step(c)) return;
    conn_run(c);
}
