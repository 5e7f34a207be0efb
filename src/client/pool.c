/* pool.c -- per-worker upstream pool: MRU reuse, deadline retirement, learning, queueing, passive health */
#include "client/pool.h"
#include "core/log.h"

#define CANARY_INTERVAL_MS 30000 /* at most one learning canary per this period */
#define LEAK_SCAN_MS       1000
#define PEEK_SKIP_MS       250 /* a replayable request skips the peek on a connection parked for less */

struct tt_pool {
    const tt_pool_conf_t *conf;
    tt_addr_t addr;
    char name[TT_ADDR_STRLEN + 64];
    tt_loop_t *loop;
    tt_bufpool_t *bufs;
    tt_h1_response_t *res;
    tt_pool_metrics_t *m;
    tt_list_t idle; /* parked, most recently used first */
    tt_list_t busy; /* checked out */
    tt_list_t connecting;
    uint32_t nidle;
    uint32_t nbusy;
    uint32_t nconnecting;
    tt_tq_t queue; /* waiters, FIFO, one queue timeout */
    uint32_t npending;
    /* passive health */
    uint32_t fails;
    bool down;
    uint64_t backoff_ms;
    tt_timer_t probe_timer;
    tt_upconn_t *probe;
    /* learning */
    uint64_t learned_ms;
    uint64_t last_canary_ms;
    tt_upconn_t *canary;
    tt_timer_t leak_timer;
    tt_tls_client_t *tls;
    void *tls_session; /* latest resumable session, owned */
    uint64_t rng;
    bool stopped;
};

static const char *const retire_names[TT_RETIRE__COUNT] = {
    [TT_RETIRE_NONE] = "none",
    [TT_RETIRE_IDLE_TIMEOUT] = "idle_timeout",
    [TT_RETIRE_HINT_DEADLINE] = "hint_deadline",
    [TT_RETIRE_LEARNED_DEADLINE] = "learned_deadline",
    [TT_RETIRE_MAX_REQUESTS] = "max_requests",
    [TT_RETIRE_MAX_LIFETIME] = "max_lifetime",
    [TT_RETIRE_PEER_CLOSED_IDLE] = "peer_closed_while_idle",
    [TT_RETIRE_STALE_ON_REUSE] = "stale_on_reuse",
    [TT_RETIRE_UPSTREAM_CLOSE] = "upstream_close",
    [TT_RETIRE_ERROR] = "error",
    [TT_RETIRE_MAX_IDLE] = "max_idle",
    [TT_RETIRE_SHUTDOWN] = "shutdown",
    [TT_RETIRE_STRAY_BYTES] = "stray_bytes",
};

const char *tt_pool_retire_name(tt_pool_retire_t r)
{
    return (unsigned)r < TT_RETIRE__COUNT ? retire_names[r] : "unknown";
}

/* ---- the pure decisions ---- */

tt_pool_retire_t tt_pool_can_park(const tt_pool_park_in_t *in)
{
    if (in->sock == TT_UP_SOCK_CLOSED) return TT_RETIRE_UPSTREAM_CLOSE;
    if (in->sock != TT_UP_SOCK_QUIET) return TT_RETIRE_STRAY_BYTES; /* they would become the next client's */
    if (!in->fresh && !in->persistent) return TT_RETIRE_UPSTREAM_CLOSE;
    if (!in->fresh && !in->request_sent) return TT_RETIRE_UPSTREAM_CLOSE; /* answered early: request bytes unsent */
    if (in->stopping) return TT_RETIRE_SHUTDOWN;
    if (in->max_requests != 0 && in->requests >= in->max_requests) return TT_RETIRE_MAX_REQUESTS;
    if (in->hint_max == 0) return TT_RETIRE_MAX_REQUESTS;
    if (in->lifetime_ms != 0 && in->age_ms >= in->lifetime_ms) return TT_RETIRE_MAX_LIFETIME;
    if (in->hint_zero) return TT_RETIRE_HINT_DEADLINE; /* Keep-Alive: timeout=0: it keeps no idle connection */
    if (in->idle_ms == 0) /* a hinted or learned timeout shorter than the margin, or the lifetime's end */
        return in->idle_reason == TT_RETIRE_IDLE_TIMEOUT ? TT_RETIRE_HINT_DEADLINE : in->idle_reason;
    return TT_RETIRE_NONE;
}

static uint64_t minus_margin(uint64_t t, uint64_t margin)
{
    return t - TT_MIN(margin, t / 2);
}

uint64_t tt_pool_idle_deadline(const tt_pool_conf_t *c, uint64_t hint_ms, uint64_t learned_ms, uint64_t life_left_ms,
                               tt_pool_retire_t *reason)
{
    uint64_t d = c->idle_timeout_ms;
    *reason = TT_RETIRE_IDLE_TIMEOUT;
    if (c->keepalive_hint && hint_ms > 0) {
        uint64_t h = minus_margin(hint_ms, c->hint_margin_ms);
        if (h <= d) {
            d = h;
            *reason = TT_RETIRE_HINT_DEADLINE;
        }
    } else if (c->learn && learned_ms > 0) {
        uint64_t l = minus_margin(learned_ms, c->hint_margin_ms);
        if (l <= d) {
            d = l;
            *reason = TT_RETIRE_LEARNED_DEADLINE;
        }
    }
    if (life_left_ms < d) {
        d = life_left_ms;
        *reason = TT_RETIRE_MAX_LIFETIME;
    }
    return d;
}

/* ---- bookkeeping ---- */

static uint64_t now(const tt_pool_t *p)
{
    return tt_loop_now(p->loop);
}

/* The connection's max lifetime, drawn once per connection: max_lifetime +/- 10 %. */
static uint64_t lifetime_of(tt_pool_t *p, tt_upconn_t *u)
{
    if (p->conf->max_lifetime_ms == 0) return 0;
    if (u->pool.lifetime_ms == 0) {
        p->rng = p->rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t span = p->conf->max_lifetime_ms / 5; /* 20 % wide, centred */
        uint64_t jitter = span ? (p->rng >> 33) % (span + 1) : 0;
        u->pool.lifetime_ms = p->conf->max_lifetime_ms - span / 2 + jitter;
    }
    return u->pool.lifetime_ms;
}

static void retire(tt_pool_t *p, tt_upconn_t *u, tt_pool_retire_t reason)
{
    tt_timer_disarm(p->loop, &u->pool.timer);
    if (u->state == TT_UPCONN_PARKED && !u->pool.canary) {
        tt_list_remove(&u->pool.link);
        p->nidle--;
        tt_gauge_add(&p->m->idle, -1);
    }
    if (u == p->canary) p->canary = NULL;
    tt_counter_add(&p->m->retired[reason], 1);
    tt_upconn_close(u);
}

static void parked_on_timer(tt_timer_t *t);

/* A lower learned timeout applies to connections already parked too: pull their deadlines in. */
static void apply_learned(tt_pool_t *p)
{
    if (p->learned_ms == 0 || !p->conf->learn) return;
    uint64_t span = p->learned_ms - TT_MIN(p->conf->hint_margin_ms, p->learned_ms / 2);
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->idle)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        if (u->hint_seen || u->parked_ms + span >= u->pool.retire_at_ms) continue;
        u->pool.retire_at_ms = u->parked_ms + span;
        u->pool.retire_reason = TT_RETIRE_LEARNED_DEADLINE;
        tt_timer_arm_at(p->loop, &u->pool.timer, u->pool.retire_at_ms); /* fires next turn when past */
    }
}

static void set_learned(tt_pool_t *p, uint64_t ms)
{
    if (p->learned_ms != ms)
        tt_log(TT_LOG_INFO, "upstream %s: learned idle timeout %llu ms%s", p->name, (unsigned long long)ms,
               ms ? "" : " (forgotten: it lives longer than idle_timeout)");
    bool lower = ms != 0 && (p->learned_ms == 0 || ms < p->learned_ms);
    p->learned_ms = ms;
    tt_gauge_set(&p->m->learned_ms, (int64_t)ms);
    if (lower) apply_learned(p);
}

static void dispatch_queue(tt_pool_t *p);

/* ---- parked connections ---- */

static void parked_on_event(tt_upconn_t *u, tt_up_sock_t what);
static void parked_on_timer(tt_timer_t *t);

static const tt_upconn_ops_t parked_ops = {.on_parked_event = parked_on_event};

/* The upstream closed a parked connection (learn from its idle age, then close it), or wrote bytes on it that
 * belong to no exchange (close it, learn nothing: such bytes say nothing about its idle timeout). */
static void parked_on_event(tt_upconn_t *u, tt_up_sock_t what)
{
    tt_pool_t *p = u->pool.owner;
    if (what == TT_UP_SOCK_STRAY) {
        retire(p, u, TT_RETIRE_STRAY_BYTES); /* whatever the settings: they would reach the next client */
        return;
    }
    if (!p->conf->idle_watch && !u->pool.canary) return; /* measured layer off: the check before reuse must catch it */
    uint64_t age = now(p) - u->parked_ms;
    if (p->conf->learn && !u->hint_seen) {
        if (u->pool.canary) {
            if (age > p->learned_ms) set_learned(p, age); /* the upstream's timeout grew */
        } else if (p->learned_ms == 0 || age < p->learned_ms) {
            set_learned(p, age);
        }
    }
    retire(p, u, TT_RETIRE_PEER_CLOSED_IDLE);
}

static void parked_on_timer(tt_timer_t *t)
{
    tt_upconn_t *u = tt_container_of(t, tt_upconn_t, pool.timer);
    tt_pool_t *p = u->pool.owner;
    if (u->pool.canary) {
        /* The canary outlived idle_timeout: nothing short to learn any more. */
        set_learned(p, 0);
        retire(p, u, TT_RETIRE_IDLE_TIMEOUT);
        return;
    }
    tt_pool_retire_t reason = (tt_pool_retire_t)u->pool.retire_reason;
    if (reason == TT_RETIRE_LEARNED_DEADLINE && p->canary == NULL && !p->stopped &&
        now(p) - p->last_canary_ms >= CANARY_INTERVAL_MS) {
        /* Keep this one open but out of service until the upstream closes it (or idle_timeout): if the
         * upstream's idle timeout grew, the estimate follows it; no request ever runs on a canary. */
        tt_list_remove(&u->pool.link);
        p->nidle--;
        tt_gauge_add(&p->m->idle, -1);
        u->pool.canary = true;
        p->canary = u;
        p->last_canary_ms = now(p);
        tt_timer_arm_at(p->loop, &u->pool.timer, u->parked_ms + p->conf->idle_timeout_ms);
        return;
    }
    retire(p, u, reason);
}

/* A connection back from an exchange (or `fresh`, never used): parked when tt_pool_can_park allows, with its
 * retirement deadline; else closed with the one reason. */
static void park(tt_pool_t *p, tt_upconn_t *u, bool fresh)
{
    uint64_t t = now(p), life = lifetime_of(p, u);
    uint64_t age = t - u->created_ms;
    uint64_t life_left = life == 0 ? UINT64_MAX : (life > age ? life - age : 0);
    tt_pool_retire_t deadline_reason;
    uint64_t idle = tt_pool_idle_deadline(p->conf, u->hint_seen ? u->hint_timeout_ms : 0, p->learned_ms, life_left,
                                          &deadline_reason);
    tt_pool_park_in_t in = {
        .fresh = fresh,
        .persistent = u->persistent,
        .request_sent = tt_upconn_request_sent(u),
        .sock = tt_upconn_settle(u), /* a syscall only when the last read filled the buffer */
        .stopping = p->stopped,
        .requests = u->requests,
        .max_requests = p->conf->max_requests,
        .hint_max = p->conf->keepalive_hint ? u->hint_max : -1,
        .hint_zero = p->conf->keepalive_hint && u->hint_seen && u->hint_timeout_ms == 0,
        .age_ms = age,
        .lifetime_ms = life,
        .idle_ms = idle,
        .idle_reason = deadline_reason,
    };
    tt_pool_retire_t r = tt_pool_can_park(&in);
    if (p->tls && r != TT_RETIRE_STRAY_BYTES) {
        /* after an exchange the TLS 1.3 tickets have arrived: keep the newest session for reconnects,
         * also from a connection about to be retired (max_requests, Connection: close...) */
        void *s = tt_tls_take_session(u->tr);
        if (s != NULL) {
            if (p->tls_session) tt_tls_session_free(p->tls_session);
            p->tls_session = s;
        }
    }
    if (r != TT_RETIRE_NONE) {
        tt_counter_add(&p->m->retired[r], 1);
        tt_upconn_close(u);
        return;
    }
    tt_upconn_park(u, &parked_ops, NULL);
    u->pool.retire_at_ms = t + idle;
    u->pool.retire_reason = (uint8_t)deadline_reason;
    tt_timer_init(&u->pool.timer, parked_on_timer);
    tt_timer_arm_at(p->loop, &u->pool.timer, u->pool.retire_at_ms);
    tt_list_push_head(&p->idle, &u->pool.link);
    p->nidle++;
    tt_gauge_add(&p->m->idle, 1);
    if (p->nidle > p->conf->max_idle) {
        tt_upconn_t *lru = tt_container_of(p->idle.prev, tt_upconn_t, pool.link);
        retire(p, lru, TT_RETIRE_MAX_IDLE);
    }
}

/* ---- checking out ---- */

static void leak_scan(tt_timer_t *t)
{
    tt_pool_t *p = tt_container_of(t, tt_pool_t, leak_timer);
    tt_list_t *pos, *tmp;
    uint64_t n = now(p);
    tt_list_foreach_safe(pos, tmp, &p->busy)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        if (!u->pool.leak_warned && n - u->pool.checked_out_ms >= p->conf->leak_threshold_ms) {
            u->pool.leak_warned = true;
            tt_counter_add(&p->m->leaks, 1);
            tt_log(TT_LOG_WARN,
                   "upstream %s: connection %llu checked out for %llu ms by route %s and not returned (leak?)", p->name,
                   (unsigned long long)u->id, (unsigned long long)(n - u->pool.checked_out_ms),
                   u->pool.label ? u->pool.label : "-");
        }
    }
    if (p->nbusy > 0) tt_timer_arm(p->loop, &p->leak_timer, LEAK_SCAN_MS);
}

static void check_out(tt_pool_t *p, tt_upconn_t *u, const tt_pool_waiter_t *w)
{
    tt_list_push_tail(&p->busy, &u->pool.link);
    p->nbusy++;
    tt_gauge_add(&p->m->active, 1);
    u->pool.checked_out_ms = now(p);
    u->pool.label = w ? w->label : NULL;
    u->pool.leak_warned = false;
    if (p->conf->leak_threshold_ms && !tt_timer_is_armed(&p->leak_timer))
        tt_timer_arm(p->loop, &p->leak_timer, LEAK_SCAN_MS);
}

static void check_in(tt_pool_t *p, tt_upconn_t *u)
{
    tt_list_remove(&u->pool.link);
    p->nbusy--;
    tt_gauge_add(&p->m->active, -1);
}

/* The most recently parked connection that may carry this request, or NULL. */
static tt_upconn_t *take_parked(tt_pool_t *p, const tt_pool_waiter_t *w)
{
    while (!tt_list_is_empty(&p->idle)) {
        tt_upconn_t *u = tt_container_of(tt_list_first(&p->idle), tt_upconn_t, pool.link);
        if (now(p) >= u->pool.retire_at_ms) {
            /* Past its deadline, its timer not yet run (timers run at the start of a turn; this one is late):
             * retired now, never reused a moment after the upstream may have closed it. */
            retire(p, u, (tt_pool_retire_t)u->pool.retire_reason);
            continue;
        }
        uint64_t age = now(p) - u->parked_ms, span = u->pool.retire_at_ms - u->parked_ms;
        if (w->half_deadline && age * 2 > span)
            return NULL; /* the others are older still: a non-replayable request gets a fresh one */
        tt_list_remove(&u->pool.link);
        p->nidle--;
        tt_gauge_add(&p->m->idle, -1);
        tt_timer_disarm(p->loop, &u->pool.timer);
        /* The check costs a syscall per request. It is skipped only where it cannot matter: the idle watch is
         * on (a FIN or stray bytes seen by the last poll have already retired the connection), the request can
         * be replayed if the connection proves dead anyway, it was parked so recently that an idle close is
         * not plausible (a busy pool reuses its connections within milliseconds), and this turn's poll has no
         * news about it still waiting to be handled. Stray bytes that news may carry are checked whatever the
         * settings: they would become this request's response. */
        bool news = tt_io_event_pending(&u->io);
        bool young = p->conf->idle_watch && !w->half_deadline && age < PEEK_SKIP_MS && !news;
        if ((p->conf->peek || news) && !young) {
            tt_up_sock_t s = tt_upconn_check_parked(u);
            if (s != TT_UP_SOCK_QUIET) {
                tt_counter_add(&p->m->retired[s == TT_UP_SOCK_STRAY ? TT_RETIRE_STRAY_BYTES : TT_RETIRE_STALE_ON_REUSE],
                               1);
                tt_upconn_close(u);
                continue;
            }
        }
        return u;
    }
    return NULL;
}

/* ---- the queue of waiters ---- */

/* Takes a queued waiter out of the queue (and the counts): always before it is called back. */
static void unlink_waiter(tt_pool_t *p, tt_pool_waiter_t *w)
{
    TT_BUG_ON(!w->_waiting);
    tt_tq_remove(&w->_q);
    w->_waiting = false;
    p->npending--;
    tt_gauge_add(&p->m->pending, -1);
}

/* Queues `w` as having waited since `since_ms`: at the tail (a new waiter), or back at the head (a waiter that
 * dispatch_queue took out and could not serve; it was the oldest, so deadline order holds). */
static void link_waiter(tt_pool_t *p, tt_pool_waiter_t *w, uint64_t since_ms, bool head)
{
    TT_BUG_ON(w->_waiting);
    if (head)
        tt_tq_push_head(&p->queue, &w->_q, since_ms);
    else
        tt_tq_push(&p->queue, &w->_q);
    w->_waiting = true;
    p->npending++;
    tt_gauge_add(&p->m->pending, 1);
}

/* ---- health ---- */

static void probe_on_connect(tt_upconn_t *u, tt_up_err_t err);
static const tt_upconn_ops_t probe_ops = {.on_connect = probe_on_connect};

static void mark_down(tt_pool_t *p)
{
    if (!p->down) {
        p->down = true;
        tt_gauge_set(&p->m->down, 1);
    }
    p->backoff_ms = p->backoff_ms ? TT_MIN(p->backoff_ms * 2, p->conf->backoff_max_ms) : p->conf->backoff_min_ms;
    tt_log(TT_LOG_WARN, "upstream %s: down after %u failed connects; probing again in %llu ms", p->name, p->fails,
           (unsigned long long)p->backoff_ms);
    tt_timer_arm(p->loop, &p->probe_timer, p->backoff_ms);
    /* Queued requests can go elsewhere (or get 503) instead of waiting for the queue timeout. Each is unlinked
     * before its callback, which may queue or free anything. */
    tt_tq_entry_t *e;
    while ((e = tt_tq_oldest(&p->queue)) != NULL) {
        tt_pool_waiter_t *w = tt_container_of(e, tt_pool_waiter_t, _q);
        unlink_waiter(p, w);
        w->cb(w, NULL, TT_POOL_DOWN, TT_UP_OK);
    }
}

/* A failed connect or TLS handshake (both count toward max_fails). The first TLS failure of a streak is
 * logged with OpenSSL's reason: a certificate problem is otherwise visible only as 502 tls_error. */
static void connect_failed(tt_pool_t *p, const tt_upconn_t *u)
{
    if (u != NULL && u->tls_error != NULL && p->fails == 0)
        tt_log(TT_LOG_WARN, "upstream %s: TLS handshake failed: %s%s", p->name, u->tls_error,
               u->tls_verify_failed ? " (certificate verification; see tls_ca, tls_sni, tls_verify)" : "");
    tt_counter_add(&p->m->connect_failures, 1);
    if (++p->fails >= p->conf->max_fails) mark_down(p);
}

static void connect_succeeded(tt_pool_t *p)
{
    p->fails = 0;
    if (p->down) {
        tt_log(TT_LOG_INFO, "upstream %s: up again", p->name);
        p->down = false;
        p->backoff_ms = 0;
        tt_gauge_set(&p->m->down, 0);
        tt_timer_disarm(p->loop, &p->probe_timer);
    }
}

static void probe_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    tt_pool_t *p = u->pool.owner;
    p->probe = NULL;
    p->nconnecting--;
    if (err != TT_UP_OK) {
        connect_failed(p, u);
        if (!p->down) mark_down(p);
        return;
    }
    tt_counter_add(&p->m->opened, 1);
    if (p->tls) tt_counter_add(&p->m->tls_handshakes[u->tls_resumed ? 1 : 0], 1);
    connect_succeeded(p);
    park(p, u, true); /* a fresh connection: parked for the next request */
    dispatch_queue(p);
}

static void probe_on_timer(tt_timer_t *t)
{
    tt_pool_t *p = tt_container_of(t, tt_pool_t, probe_timer);
    if (p->stopped || p->probe != NULL) return;
    tt_up_err_t err;
    tt_upconn_t *u = tt_upconn_connect(p->loop, p->bufs, p->res, &p->addr, &p->conf->tcp_keepalive, &p->conf->timeouts,
                                       &probe_ops, NULL, &err);
    if (u == NULL) {
        connect_failed(p, NULL); /* marks it down again (a longer backoff, the next probe armed) */
        if (!p->down) mark_down(p);
        return;
    }
    if (p->tls) tt_upconn_set_tls(u, p->tls, p->tls_session);
    u->pool.owner = p;
    p->probe = u;
    p->nconnecting++;
}

/* ---- connecting for a waiter ---- */

static void new_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    tt_pool_t *p = u->pool.owner;
    tt_pool_waiter_t *w = u->data;
    tt_list_remove(&u->pool.link);
    p->nconnecting--;
    tt_gauge_add(&p->m->active, -1);
    if (w != NULL) w->_connecting = NULL;
    if (err != TT_UP_OK) {
        connect_failed(p, u);
        if (w != NULL) w->cb(w, NULL, TT_POOL_FAILED, err);
        dispatch_queue(p);
        return;
    }
    tt_counter_add(&p->m->opened, 1);
    if (p->tls) tt_counter_add(&p->m->tls_handshakes[u->tls_resumed ? 1 : 0], 1);
    connect_succeeded(p);
    if (w == NULL) {
        park(p, u, true); /* its request left: parked for the next one */
        dispatch_queue(p);
        return;
    }
    check_out(p, u, w);
    w->cb(w, u, TT_POOL_READY, TT_UP_OK);
}

static const tt_upconn_ops_t connecting_ops = {.on_connect = new_on_connect};

static tt_pool_status_t open_new(tt_pool_t *p, tt_pool_waiter_t *w, tt_up_err_t *err)
{
    tt_upconn_t *u = tt_upconn_connect(p->loop, p->bufs, p->res, &p->addr, &p->conf->tcp_keepalive, &p->conf->timeouts,
                                       &connecting_ops, w, err);
    if (u == NULL) {
        connect_failed(p, NULL);
        return TT_POOL_FAILED;
    }
    if (p->tls) tt_upconn_set_tls(u, p->tls, p->tls_session);
    u->pool.owner = p;
    w->_connecting = u;
    tt_list_push_tail(&p->connecting, &u->pool.link);
    p->nconnecting++;
    tt_gauge_add(&p->m->active, 1);
    return TT_POOL_PENDING;
}

static bool at_capacity(const tt_pool_t *p)
{
    return p->conf->max_connections != 0 && p->nbusy + p->nconnecting + p->nidle >= p->conf->max_connections;
}

/* One attempt for `w`: a parked connection, a new one, or nothing (queue). */
static tt_pool_status_t try_serve(tt_pool_t *p, tt_pool_waiter_t *w, tt_upconn_t **out, tt_up_err_t *err)
{
    if (!w->fresh_only) {
        tt_upconn_t *u = take_parked(p, w);
        if (u != NULL) {
            check_out(p, u, w);
            tt_counter_add(&p->m->reused, 1);
            *out = u;
            return TT_POOL_READY;
        }
    }
    if (at_capacity(p) && p->nidle > 0) {
        /* Parked connections this request cannot use hold the room it needs: close the oldest. */
        retire(p, tt_container_of(p->idle.prev, tt_upconn_t, pool.link), TT_RETIRE_MAX_IDLE);
    }
    if (at_capacity(p)) return TT_POOL_EXHAUSTED;
    return open_new(p, w, err);
}

static void queue_on_timeout(tt_tq_entry_t *e)
{
    tt_pool_waiter_t *w = tt_container_of(e, tt_pool_waiter_t, _q);
    tt_pool_t *p = w->_pool;
    w->_waiting = false;
    p->npending--;
    tt_gauge_add(&p->m->pending, -1);
    tt_counter_add(&p->m->queue_timeouts, 1);
    tt_hist_observe(&p->m->queue_wait_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, now(p) - w->_since_ms);
    w->cb(w, NULL, TT_POOL_EXHAUSTED, TT_UP_OK);
}

/* Room appeared (a release, a close): serve queued waiters in order while possible. Each is unlinked before
 * anything can call it back: serving it may fail a connect synchronously, which can mark the server down and
 * call back every waiter still queued (mark_down); this one is then no longer among them, and gets exactly one
 * callback, below. When there is no room after all it goes back to the head of the queue, its wait intact. */
static void dispatch_queue(tt_pool_t *p)
{
    tt_tq_entry_t *e;
    while (!p->stopped && !p->down && (e = tt_tq_oldest(&p->queue)) != NULL) {
        tt_pool_waiter_t *w = tt_container_of(e, tt_pool_waiter_t, _q);
        uint64_t since = e->since_ms;
        unlink_waiter(p, w);
        tt_upconn_t *u = NULL;
        tt_up_err_t err = TT_UP_OK;
        tt_pool_status_t st = try_serve(p, w, &u, &err);
        if (st == TT_POOL_EXHAUSTED) {
            link_waiter(p, w, since, true);
            return;
        }
        tt_hist_observe(&p->m->queue_wait_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, now(p) - w->_since_ms);
        if (st != TT_POOL_PENDING) w->cb(w, u, st, err);
    }
}

/* ---- public ---- */

tt_pool_status_t tt_pool_acquire(tt_pool_t *p, tt_pool_waiter_t *w, tt_upconn_t **out, tt_up_err_t *err)
{
    *out = NULL;
    *err = TT_UP_OK;
    w->_pool = p;
    w->_connecting = NULL;
    w->_waiting = false;
    if (p->down) return TT_POOL_DOWN;
    tt_pool_status_t st = try_serve(p, w, out, err);
    if (st != TT_POOL_EXHAUSTED) return st;
    if (p->npending >= p->conf->max_pending) return TT_POOL_EXHAUSTED;
    tt_tq_entry_init(&w->_q);
    w->_since_ms = now(p);
    link_waiter(p, w, w->_since_ms, false);
    return TT_POOL_PENDING;
}

void tt_pool_cancel(tt_pool_waiter_t *w)
{
    tt_pool_t *p = w->_pool;
    if (p == NULL) return;
    if (w->_waiting) unlink_waiter(p, w);
    if (w->_connecting != NULL) {
        w->_connecting->data = NULL; /* new_on_connect parks it */
        w->_connecting = NULL;
    }
}

void tt_pool_release(tt_pool_t *p, tt_upconn_t *u)
{
    check_in(p, u);
    park(p, u, false);
    dispatch_queue(p);
}

void tt_pool_discard(tt_pool_t *p, tt_upconn_t *u, tt_pool_retire_t reason)
{
    check_in(p, u);
    tt_counter_add(&p->m->retired[reason], 1);
    tt_upconn_close(u);
    dispatch_queue(p);
}

void tt_pool_set_tls(tt_pool_t *p, tt_tls_client_t *tls)
{
    p->tls = tls;
}

bool tt_pool_is_down(const tt_pool_t *p)
{
    return p->down;
}
uint32_t tt_pool_active(const tt_pool_t *p)
{
    return p->nbusy + p->nconnecting;
}

tt_pool_t *tt_pool_new(tt_loop_t *loop, tt_bufpool_t *bufs, tt_h1_response_t *res, const tt_pool_conf_t *conf,
                       const tt_addr_t *addr, const char *name, tt_pool_metrics_t *m)
{
    tt_pool_t *p = tt_calloc(1, sizeof(*p));
    p->conf = conf;
    p->addr = *addr;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->loop = loop;
    p->bufs = bufs;
    p->res = res;
    p->m = m;
    tt_list_init(&p->idle);
    tt_list_init(&p->busy);
    tt_list_init(&p->connecting);
    tt_tq_init(&p->queue, loop, conf->queue_timeout_ms, queue_on_timeout);
    tt_timer_init(&p->probe_timer, probe_on_timer);
    tt_timer_init(&p->leak_timer, leak_scan);
    p->rng = (uint64_t)(uintptr_t)p ^ tt_loop_now(loop);
    return p;
}

void tt_pool_stop(tt_pool_t *p)
{
    p->stopped = true;
    while (!tt_list_is_empty(&p->idle))
        retire(p, tt_container_of(tt_list_first(&p->idle), tt_upconn_t, pool.link), TT_RETIRE_SHUTDOWN);
    if (p->canary != NULL) retire(p, p->canary, TT_RETIRE_SHUTDOWN);
    tt_timer_disarm(p->loop, &p->probe_timer);
}

void tt_pool_free(tt_pool_t **pp)
{
    tt_pool_t *p = *pp;
    if (p == NULL) return;
    tt_pool_stop(p);
    while (!tt_list_is_empty(&p->busy)) {
        tt_upconn_t *u = tt_container_of(tt_list_first(&p->busy), tt_upconn_t, pool.link);
        check_in(p, u);
        tt_upconn_close(u);
    }
    while (!tt_list_is_empty(&p->connecting))
        tt_upconn_close(tt_container_of(tt_list_first(&p->connecting), tt_upconn_t, pool.link));
    if (p->probe != NULL) tt_upconn_close(p->probe);
    tt_timer_disarm(p->loop, &p->leak_timer);
    TT_BUG_ON(p->npending != 0);
    if (p->tls_session) tt_tls_session_free(p->tls_session);
    tt_tq_dispose(&p->queue);
    free(p);
    *pp = NULL;
}
