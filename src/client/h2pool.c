/* h2pool.c -- HTTP/2 connections to one upstream server: streams packed onto as few connections as allowed */
#include "client/h2pool.h"
#include "core/err.h"
#include "net/addrset.h"

typedef struct pconn {
    tt_list_t link; /* in p->conns, oldest first */
    tt_h2c_t *c;
    tt_h2pool_t *p;
    tt_addr_t addr; /* where it went */
    bool ready;
    bool took_session;
    bool retired; /* its address left the server's set (tt_h2pool_set_addrs): no new stream, closed once idle */
    bool probe;   /* opened for the health pool's probe (tt_pool_set_prober): reports through tt_pool_probe_done */
    bool settled; /* the server's first SETTINGS arrived: the connect counted as a success */
} pconn_t;

struct tt_h2pool {
    tt_loop_t *loop;
    tt_bufpool_t *bufs;
    tt_h2pool_conf_t conf;
    tt_addr_t addr;   /* where new connections go */
    tt_addr_t *addrs; /* what the server's name resolves to, owned (tt_h2pool_set_addrs); NULL: `addr` alone */
    size_t naddrs;
    uint32_t nretired; /* connections retired with streams still in flight */
    tt_h2pool_metrics_t *m;
    tt_pool_t *health; /* the server's HTTP/1.1 pool, which keeps its passive health (tt_h2pool_set_health) */
    tt_list_t conns;
    uint32_t nconns;
    tt_list_t queue; /* tt_h2pool_stream_t waiting for a slot, FIFO */
    uint32_t nqueue;
    void *session; /* TLS: the newest resumable session, owned; offered to new connections (conf.h2.session) */
    bool no_h2;
    uint64_t no_h2_ms; /* loop time of the last http/1.1 ALPN answer */
    bool freed;        /* tt_h2pool_free ran while `serve_later` was queued: serve_cb frees */
    tt_timer_t idle_timer;
    tt_defer_t serve_later;
};

static const tt_h2c_ops_t conn_ops;

static void serve(tt_h2pool_t *p);

/* True while a connection of the pool has not finished its handshake. */
static bool connecting(const tt_h2pool_t *p)
{
    const tt_list_t *pos;
    for (pos = p->conns.next; pos != &p->conns; pos = pos->next)
        if (!tt_container_of(pos, pconn_t, link)->ready) return true;
    return false;
}

/* Until the server's first SETTINGS frame its stream limit is unknown (RFC 9113 6.5.2: unlimited by default), and a
 * burst would all go on the first connection: streams wait for it (it is the server's first frame). */
static bool has_room(const pconn_t *pc)
{
    return pc->ready && !pc->retired && tt_h2c_peer_settings_seen(pc->c) && tt_h2c_can_request(pc->c) &&
           tt_h2c_open_streams(pc->c) < tt_h2c_peer_max_streams(pc->c);
}

static tt_h2c_t *room(tt_h2pool_t *p)
{
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->conns)
    {
        pconn_t *pc = tt_container_of(pos, pconn_t, link);
        if (has_room(pc)) return pc->c;
    }
    return NULL;
}

static void conn_gone(pconn_t *pc)
{
    tt_h2pool_t *p = pc->p;
    tt_list_remove(&pc->link);
    if (pc->retired) p->nretired--;
    p->nconns--;
    tt_gauge_add(&p->m->conns, -1);
    free(pc);
}

/* Passive health: a connect of `pc` ended, alive (its first SETTINGS) or not. The server's health lives in its
 * HTTP/1.1 pool (pool.c), whose max_fails, backoff and probe apply to both protocols. */
static void report(tt_h2pool_t *p, pconn_t *pc, bool ok)
{
    if (p->health == NULL) return;
    bool verify = false;
    const char *why = ok ? NULL : tt_h2c_tls_failure(pc->c, &verify);
    if (pc->probe)
        tt_pool_probe_done(p->health, p, ok, why, verify);
    else
        tt_pool_health_report(p->health, ok, why, verify);
}

static bool down(const tt_h2pool_t *p)
{
    return p->health != NULL && tt_pool_is_down(p->health);
}

/* Every waiting stream hears `err` (a connect failure: nothing was sent). */
static void fail_queue(tt_h2pool_t *p, tt_h2c_err_t err)
{
    while (!tt_list_is_empty(&p->queue)) {
        tt_h2pool_stream_t *s = tt_container_of(tt_list_first(&p->queue), tt_h2pool_stream_t, _q);
        tt_list_remove(&s->_q);
        p->nqueue--;
        s->_waiting = false;
        tt_timer_disarm(p->loop, &s->_qt);
        s->ops->on_conn(s, NULL, err); /* unlinked first: it may acquire again */
    }
}

/* A new connection to the server, listed; NULL with `*err` when the connect failed at once. */
static pconn_t *open_conn(tt_h2pool_t *p, tt_h2c_err_t *err)
{
    pconn_t *pc = tt_calloc(1, sizeof(*pc));
    pc->p = p;
    pc->addr = p->addr;
    pc->c = tt_h2c_connect(p->loop, p->bufs, &p->addr, &p->conf.h2, &conn_ops, pc, err);
    if (pc->c == NULL) {
        free(pc);
        return NULL;
    }
    tt_list_push_tail(&p->conns, &pc->link);
    p->nconns++;
    tt_gauge_add(&p->m->conns, 1);
    return pc;
}

/* Opens a connection when streams wait, none is connecting, and the limit allows. */
static void maybe_open(tt_h2pool_t *p)
{
    if (p->nqueue == 0) return;
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->conns)
    {
        pconn_t *pc = tt_container_of(pos, pconn_t, link);
        if (pc->retired) continue;                                   /* takes no stream whatever its SETTINGS say */
        if (!pc->ready || !tt_h2c_peer_settings_seen(pc->c)) return; /* its SETTINGS will tell how many it takes */
    }
    if (p->conf.max_connections && p->nconns >= p->conf.max_connections) return; /* a slot will free */
    if (down(p)) { /* the probe alone connects to a server marked down (pool.c) */
        fail_queue(p, TT_H2C_DOWN);
        return;
    }
    tt_h2c_err_t err = TT_H2C_OK;
    if (open_conn(p, &err) == NULL) {
        if (p->health != NULL) tt_pool_health_report(p->health, false, NULL, false); /* down before re-routing */
        fail_queue(p, err);
    }
}

/* Retired connections whose streams have all ended are closed with GOAWAY(NO_ERROR), counted as dns_changed. */
static void reap_retired(tt_h2pool_t *p)
{
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->conns)
    {
        if (p->nretired == 0) break;
        pconn_t *pc = tt_container_of(pos, pconn_t, link);
        /* one not settled yet ends by its SETTINGS or its connect timeout, and reports it (health, a probe) */
        if (!pc->retired || !pc->settled || tt_h2c_open_streams(pc->c) > 0) continue;
        tt_counter_add(&p->m->dns_retired, 1);
        tt_h2c_goaway(pc->c);
        conn_gone(pc);
    }
}

static void serve(tt_h2pool_t *p)
{
    reap_retired(p);
    while (!tt_list_is_empty(&p->queue)) {
        tt_h2c_t *c = room(p);
        if (c == NULL) break;
        tt_h2pool_stream_t *s = tt_container_of(tt_list_first(&p->queue), tt_h2pool_stream_t, _q);
        tt_list_remove(&s->_q);
        p->nqueue--;
        s->_waiting = false;
        tt_timer_disarm(p->loop, &s->_qt);
        s->ops->on_conn(s, c, TT_H2C_OK);
    }
    maybe_open(p);
}

static void serve_cb(tt_defer_t *d)
{
    tt_h2pool_t *p = tt_container_of(d, tt_h2pool_t, serve_later);
    if (p->freed) {
        free(p);
        return;
    }
    serve(p);
}

static void serve_soon(tt_h2pool_t *p)
{
    if (!p->serve_later._queued) tt_loop_defer(p->loop, &p->serve_later, serve_cb);
}

/* Connections without streams for idle_timeout close with GOAWAY(NO_ERROR); the timer is re-armed for the next. */
static void on_idle_timer(tt_timer_t *t)
{
    tt_h2pool_t *p = tt_container_of(t, tt_h2pool_t, idle_timer);
    uint64_t now = tt_loop_now(p->loop), next = UINT64_MAX;
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->conns)
    {
        pconn_t *pc = tt_container_of(pos, pconn_t, link);
        if (!pc->settled || tt_h2c_open_streams(pc->c) > 0) continue; /* not settled: see reap_retired */
        uint64_t at = tt_h2c_idle_since(pc->c) + p->conf.idle_timeout_ms;
        if (at <= now) {
            tt_counter_add(&p->m->idle_closed, 1);
            tt_h2c_goaway(pc->c);
            conn_gone(pc);
        } else {
            next = TT_MIN(next, at);
        }
    }
    if (next != UINT64_MAX) tt_timer_arm_at(p->loop, &p->idle_timer, next);
}

static void arm_idle(tt_h2pool_t *p)
{
    if (!tt_timer_is_armed(&p->idle_timer)) tt_timer_arm(p->loop, &p->idle_timer, p->conf.idle_timeout_ms);
}

/* ---- connection events ---- */

static void c_on_connect(tt_h2c_t *c, tt_h2c_err_t err)
{
    pconn_t *pc = tt_h2c_data(c);
    tt_h2pool_t *p = pc->p;
    if (err != TT_H2C_OK) {
        /* a server that answers http/1.1 in ALPN is alive for `auto` (its HTTP/1.1 pool takes over), and a TLS
         * failure for `h2` */
        bool alive = err == TT_H2C_NO_H2 && p->conf.h1_fallback;
        if (err == TT_H2C_NO_H2) {
            p->no_h2 = true;
            p->no_h2_ms = tt_loop_now(p->loop);
        }
        report(p, pc, alive);
        conn_gone(pc);
        fail_queue(p, err);
        return;
    }
    pc->ready = true;
    p->no_h2 = false; /* it selected h2 (asked again after alpn_recheck_ms, or first) */
    if (p->conf.h2.tls) tt_counter_add(&p->m->tls_handshakes[tt_h2c_tls_resumed(c) ? 1 : 0], 1);
    arm_idle(p); /* streams wait for its SETTINGS (on_settings) */
}

static void c_on_settings(tt_h2c_t *c)
{
    pconn_t *pc = tt_h2c_data(c);
    if (!pc->settled) { /* it speaks HTTP/2 (RFC 9113 3.4): the connect succeeded */
        pc->settled = true;
        tt_counter_add(&pc->p->m->opened, 1); /* opened: a connect that failed before this is not counted */
        report(pc->p, pc, true);
        pc->probe = false;
        arm_idle(pc->p); /* from now on the idle timer may close it */
    }
    serve_soon(pc->p); /* the first SETTINGS, or a raised limit: waiting streams fit now (never inside nghttp2) */
}

static void c_on_response(tt_h2c_t *c, void *sd, int status, tt_str_t fields)
{
    (void)c;
    tt_h2pool_stream_t *s = sd;
    s->ops->on_response(s, status, fields);
}

static void c_on_data(tt_h2c_t *c, void *sd, const char *data, size_t len)
{
    (void)c;
    tt_h2pool_stream_t *s = sd;
    s->ops->on_data(s, data, len);
}

static void c_on_trailers(tt_h2c_t *c, void *sd, tt_str_t fields)
{
    (void)c;
    tt_h2pool_stream_t *s = sd;
    s->ops->on_trailers(s, fields);
}

static void c_on_drain(tt_h2c_t *c, void *sd)
{
    (void)c;
    tt_h2pool_stream_t *s = sd;
    s->ops->on_drain(s);
}

static void c_on_stream_end(tt_h2c_t *c, void *sd, tt_h2c_err_t err, uint32_t h2_error)
{
    pconn_t *pc = tt_h2c_data(c);
    tt_h2pool_t *p = pc->p;
    tt_h2pool_stream_t *s = sd;
    if (s != NULL) s->ops->on_end(s, err, h2_error);
    if (p->conf.h2.tls && !pc->took_session && err == TT_H2C_OK && !connecting(p)) {
        /* the tickets have come by now; a connect under way may still read the session it was given */
        pc->took_session = true;
        void *sess = tt_h2c_take_session(c);
        if (sess != NULL) {
            if (p->session) tt_tls_session_free(p->session);
            p->session = p->conf.h2.session = sess;
        }
    }
    if (tt_h2c_open_streams(c) == 0) arm_idle(p);
    serve_soon(p); /* a slot is free: never from inside nghttp2's callback */
}

static void c_on_close(tt_h2c_t *c, tt_h2c_err_t err)
{
    pconn_t *pc = tt_h2c_data(c);
    tt_h2pool_t *p = pc->p;
    if (err == TT_H2C_PING_TIMEOUT) tt_counter_add(&p->m->ping_timeouts, 1);
    if (!pc->settled) {
        /* closed, reset or not HTTP/2 before the server's first SETTINGS: a failed connect, for health as for the
         * streams waiting for it (else each new connection would fail the same way until the queue timeout) */
        report(p, pc, false);
        conn_gone(pc);
        fail_queue(p, err == TT_H2C_OK ? TT_H2C_CLOSED : err);
        serve_soon(p);
        return;
    }
    conn_gone(pc);
    serve_soon(p);
}

static void c_on_goaway(tt_h2c_t *c, uint32_t error_code, int32_t last_id)
{
    (void)last_id;
    pconn_t *pc = tt_h2c_data(c);
    tt_counter_add(&pc->p->m->goaways[TT_MIN(error_code, (uint32_t)TT_H2POOL_ERR_OTHER)], 1);
    serve_soon(pc->p); /* waiting streams may need another connection */
}

static void c_on_ping_rtt(tt_h2c_t *c, uint64_t rtt_us)
{
    pconn_t *pc = tt_h2c_data(c);
    tt_gauge_set(&pc->p->m->ping_rtt_us, (int64_t)rtt_us);
}

static const tt_h2c_ops_t conn_ops = {
    .on_connect = c_on_connect,
    .on_stream_end = c_on_stream_end,
    .on_close = c_on_close,
    .on_response = c_on_response,
    .on_data = c_on_data,
    .on_trailers = c_on_trailers,
    .on_drain = c_on_drain,
    .on_goaway = c_on_goaway,
    .on_settings = c_on_settings,
    .on_ping_rtt = c_on_ping_rtt,
};

/* ---- public ---- */

static void on_queue_timer(tt_timer_t *t)
{
    tt_h2pool_stream_t *s = tt_container_of(t, tt_h2pool_stream_t, _qt);
    tt_h2pool_t *p = s->_pool;
    tt_list_remove(&s->_q);
    p->nqueue--;
    s->_waiting = false;
    s->ops->on_conn(s, NULL, TT_H2C_TIMEOUT);
}

tt_h2pool_t *tt_h2pool_new(tt_loop_t *loop, tt_bufpool_t *bufs, const tt_h2pool_conf_t *conf, const tt_addr_t *addr,
                           tt_h2pool_metrics_t *m)
{
    tt_h2pool_t *p = tt_calloc(1, sizeof(*p));
    p->loop = loop;
    p->bufs = bufs;
    p->conf = *conf;
    p->addr = *addr;
    p->m = m;
    tt_list_init(&p->conns);
    tt_list_init(&p->queue);
    tt_timer_init(&p->idle_timer, on_idle_timer);
    return p;
}

void tt_h2pool_free(tt_h2pool_t **pp)
{
    tt_h2pool_t *p = *pp;
    if (p == NULL) return;
    *pp = NULL;
    TT_BUG_ON(p->nqueue != 0);
    if (p->health != NULL) tt_pool_clear_prober(p->health, p);
    while (!tt_list_is_empty(&p->conns)) {
        pconn_t *pc = tt_container_of(tt_list_first(&p->conns), pconn_t, link);
        tt_h2c_goaway(pc->c); /* the server hears GOAWAY(NO_ERROR), not a bare close */
        conn_gone(pc);
    }
    tt_timer_disarm(p->loop, &p->idle_timer);
    free(p->addrs);
    p->addrs = NULL;
    if (p->session) tt_tls_session_free(p->session);
    p->session = NULL;
    if (p->serve_later._queued)
        p->freed = true;
    else
        free(p);
}

void tt_h2pool_acquire(tt_h2pool_t *p, tt_h2pool_stream_t *s)
{
    s->_pool = p;
    if (tt_list_is_empty(&p->queue)) {
        tt_h2c_t *c = room(p);
        if (c != NULL) {
            s->ops->on_conn(s, c, TT_H2C_OK);
            return;
        }
    }
    if (down(p)) { /* as the HTTP/1.1 pool: no request for a server marked down (a replay, say) */
        s->ops->on_conn(s, NULL, TT_H2C_DOWN);
        return;
    }
    if (p->nqueue >= p->conf.max_pending) {
        s->ops->on_conn(s, NULL, TT_H2C_TIMEOUT);
        return;
    }
    tt_list_push_tail(&p->queue, &s->_q);
    p->nqueue++;
    s->_waiting = true;
    tt_timer_init(&s->_qt, on_queue_timer);
    tt_timer_arm(p->loop, &s->_qt, p->conf.queue_timeout_ms);
    maybe_open(p);
}

void tt_h2pool_cancel(tt_h2pool_stream_t *s)
{
    if (!s->_waiting) return;
    tt_list_remove(&s->_q);
    s->_pool->nqueue--;
    s->_waiting = false;
    tt_timer_disarm(s->_pool->loop, &s->_qt);
}

/* The health pool's probe of a server marked down: an HTTP/2 connection, alive at its first SETTINGS. */
static tt_pool_probe_t probe(void *data)
{
    tt_h2pool_t *p = data;
    if (p->conf.h1_fallback && tt_h2pool_no_h2(p)) /* `auto` and it answers http/1.1: the HTTP/1.1 pool's connect */
        return TT_PROBE_DECLINED;
    tt_h2c_err_t err = TT_H2C_OK;
    pconn_t *pc = open_conn(p, &err);
    if (pc == NULL) return TT_PROBE_FAILED;
    pc->probe = true;
    return TT_PROBE_STARTED;
}

void tt_h2pool_set_health(tt_h2pool_t *p, tt_pool_t *health)
{
    p->health = health;
    tt_pool_set_prober(health, probe, p);
}

bool tt_h2pool_alpn_fresh(uint64_t answered_ms, uint64_t now_ms, uint64_t recheck_ms)
{
    return recheck_ms == 0 || now_ms < answered_ms + recheck_ms;
}

bool tt_h2pool_no_h2(const tt_h2pool_t *p)
{
    return p->no_h2 && tt_h2pool_alpn_fresh(p->no_h2_ms, tt_loop_now(p->loop), p->conf.alpn_recheck_ms);
}

uint32_t tt_h2pool_conns(const tt_h2pool_t *p)
{
    return p->nconns;
}

void tt_h2pool_set_addrs(tt_h2pool_t *p, const tt_addr_t *addrs, size_t n)
{
    if (n == 0 || (p->naddrs == n && tt_addrset_same(p->addrs, p->naddrs, addrs, n))) return;
    p->addrs = tt_realloc(p->addrs, n * sizeof(*addrs));
    memcpy(p->addrs, addrs, n * sizeof(*addrs));
    p->naddrs = n;
    if (!tt_addrset_contains(addrs, n, &p->addr)) p->addr = addrs[0];
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->conns)
    {
        pconn_t *pc = tt_container_of(pos, pconn_t, link);
        if (pc->retired || tt_addrset_contains(addrs, n, &pc->addr)) continue;
        pc->retired = true;
        p->nretired++;
    }
    reap_retired(p); /* those without streams now (never inside nghttp2: the caller is the worker's loop) */
    serve_soon(p);   /* waiting streams may need a connection to the new address */
}
