/* pool.c -- per-worker upstream pool: MRU reuse, deadline retirement, learning, queueing, passive health */
#include "client/pool.h"
#include "core/log.h"
#include "net/addrset.h"

#define CANARY_INTERVAL_MS 30000 /* at most one canary per this period once something was learned */
#define LEAK_SCAN_MS       1000
#define DEBT_SLOTS         32 /* connections retired lately that the server would still keep (open reasons) */

const uint64_t tt_pool_above_suspend_ms = 60000;

/* Canary kinds (tt_pool_entry_t.canary): a parked connection kept out of service past its deadline, until the
 * server closes it (or idle_timeout), to see when the server really closes idle connections. */
enum {
    CANARY_NONE = 0,
    CANARY_LEARN,   /* no hint: the learned timeout grew? */
    CANARY_PROBE,   /* a hint, nothing seen above it yet: does the server keep connections longer than it says? */
    CANARY_GROWTH,  /* a hint, something seen: did the server's timeout grow? */
    CANARY_OBSERVE, /* no hint, past the learned deadline (canary_requests): closes lower the learned timeout, and
                     * a replayable request may take it (a request canary) until 1.5 x the learned timeout */
};

/* A connection closed (or kept out of service) while the server would still have kept it: the next new
 * connection opened for a request names it as its reason, until `until_ms`. */
typedef struct debt {
    uint64_t until_ms;
    uint8_t why; /* tt_pool_open_t */
} debt_t;

struct tt_pool {
    const tt_pool_conf_t *conf; /* = &conf_copy: a reload may free the configuration the pool was made from */
    tt_pool_conf_t conf_copy;
    tt_addr_t addr;   /* where new connections go */
    tt_addr_t *addrs; /* what the server's name resolves to, owned (tt_pool_set_addrs); NULL: `addr` alone */
    size_t naddrs;
    char name[TT_ADDR_STRLEN + 64];
    tt_loop_t *loop;
    tt_bufpool_t *bufs;
    tt_h1_response_t *res;
    tt_pool_metrics_t *m;
    tt_list_t idle; /* parked, most recently used first */
    tt_list_t busy; /* checked out */
    tt_list_t connecting;
    tt_list_t canaries; /* parked out of service, oldest first */
    uint32_t ncanaries;
    uint32_t nidle;
    uint32_t nbusy;
    uint32_t nconnecting;
    tt_tq_t queue; /* waiters, FIFO, one queue timeout */
    uint32_t npending;
    tt_tq_t rwait; /* non-replayable waiters for a connection finishing an exchange (tt_pool_reuse_wait_ms) */
    uint32_t nrwait;
    /* passive health */
    uint32_t fails;
    bool down;
    uint64_t backoff_ms;
    tt_timer_t probe_timer;
    tt_upconn_t *probe;
    tt_pool_probe_fn prober; /* the server's HTTP/2 pool probes it (tt_pool_set_prober), or NULL */
    void *prober_data;
    bool probing; /* the prober's probe is under way */
    /* learning */
    tt_pool_rtt_t rtt;
    uint64_t margin_ms; /* tt_pool_margin of rtt */
    uint64_t learned_ms;
    tt_pool_above_t above;
    uint64_t last_hint_ms; /* the hint of the last connection parked with one */
    uint64_t last_canary_ms;
    debt_t debt[DEBT_SLOTS]; /* most recent last */
    uint32_t ndebt;
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
    [TT_RETIRE_ABOVE_HINT] = "above_hint_deadline",
    [TT_RETIRE_MAX_REQUESTS] = "max_requests",
    [TT_RETIRE_MAX_LIFETIME] = "max_lifetime",
    [TT_RETIRE_PEER_CLOSED_IDLE] = "peer_closed_while_idle",
    [TT_RETIRE_STALE_ON_REUSE] = "stale_on_reuse",
    [TT_RETIRE_UPSTREAM_CLOSE] = "upstream_close",
    [TT_RETIRE_ERROR] = "error",
    [TT_RETIRE_MAX_IDLE] = "max_idle",
    [TT_RETIRE_SHUTDOWN] = "shutdown",
    [TT_RETIRE_STRAY_BYTES] = "stray_bytes",
    [TT_RETIRE_TUNNEL] = "tunnel",
    [TT_RETIRE_DNS_CHANGED] = "dns_changed",
};

const char *tt_pool_retire_name(tt_pool_retire_t r)
{
    return (unsigned)r < TT_RETIRE__COUNT ? retire_names[r] : "unknown";
}

static const char *const open_names[TT_OPEN__COUNT] = {
    [TT_OPEN_REUSED] = "-",
    [TT_OPEN_NONE_PARKED] = "none_parked",
    [TT_OPEN_PAST_DEADLINE] = "past_deadline",
    [TT_OPEN_MAX_REACHED] = "max_reached",
    [TT_OPEN_NOT_REPLAYABLE] = "not_replayable",
    [TT_OPEN_STALE] = "stale",
    [TT_OPEN_FRESH_ONLY] = "fresh_only",
    [TT_OPEN_REPLAY] = "replay",
    [TT_OPEN_DNS_CHANGED] = "dns_changed",
};

const char *tt_pool_open_name(tt_pool_open_t o)
{
    return (unsigned)o < TT_OPEN__COUNT ? open_names[o] : "unknown";
}

/* ---- the pure decisions ---- */

tt_pool_retire_t tt_pool_can_park(const tt_pool_park_in_t *in)
{
    if (in->sock == TT_UP_SOCK_CLOSED) return TT_RETIRE_UPSTREAM_CLOSE;
    if (in->sock != TT_UP_SOCK_QUIET) return TT_RETIRE_STRAY_BYTES; /* they would become the next client's */
    if (!in->fresh && !in->persistent) return TT_RETIRE_UPSTREAM_CLOSE;
    if (!in->fresh && !in->request_sent) return TT_RETIRE_UPSTREAM_CLOSE; /* answered early: request bytes unsent */
    if (in->stopping) return TT_RETIRE_SHUTDOWN;
    if (in->addr_gone) return TT_RETIRE_DNS_CHANGED; /* its exchange is over: this is its idle moment */
    if (in->max_requests != 0 && in->requests >= in->max_requests) return TT_RETIRE_MAX_REQUESTS;
    if (in->hint_max == 0) return TT_RETIRE_MAX_REQUESTS;
    if (in->lifetime_ms != 0 && in->age_ms >= in->lifetime_ms) return TT_RETIRE_MAX_LIFETIME;
    if (in->hint_zero) return TT_RETIRE_HINT_DEADLINE; /* Keep-Alive: timeout=0: it keeps no idle connection */
    if (in->idle_ms == 0) /* a hinted or learned timeout shorter than the margin, or the lifetime's end */
        return in->idle_reason == TT_RETIRE_IDLE_TIMEOUT ? TT_RETIRE_HINT_DEADLINE : in->idle_reason;
    return TT_RETIRE_NONE;
}

void tt_pool_rtt_observe(tt_pool_rtt_t *r, uint64_t sample_us)
{
    if (r->samples++ == 0) {
        r->srtt_us = sample_us;
        r->rttvar_us = sample_us / 2;
        return;
    }
    uint64_t dev = sample_us > r->srtt_us ? sample_us - r->srtt_us : r->srtt_us - sample_us;
    r->rttvar_us = (3 * r->rttvar_us + dev) / 4;
    r->srtt_us = (7 * r->srtt_us + sample_us) / 8;
}

uint64_t tt_pool_margin(const tt_pool_conf_t *c, const tt_pool_rtt_t *r)
{
    if (r->samples == 0) return c->hint_margin_ms; /* nothing measured yet: the cautious bound */
    /* samples are capped by the caller, so this cannot overflow for any margin_rtts the configuration allows */
    uint64_t us = (uint64_t)c->margin_rtts * r->srtt_us + 4 * r->rttvar_us;
    uint64_t m = (us + 999) / 1000;
    if (m < c->margin_floor_ms) m = c->margin_floor_ms;
    return TT_MIN(m, c->hint_margin_ms);
}

uint64_t tt_pool_reuse_wait_ms(const tt_pool_conf_t *c, const tt_pool_rtt_t *r)
{
    if (c->reuse_wait_ms == 0 || r->samples == 0) return 0;
    uint64_t us = 2 * r->srtt_us + 4 * r->rttvar_us; /* samples are capped by the caller: no overflow */
    uint64_t ms = TT_MAX((us + 999) / 1000, (uint64_t)TT_POOL_REUSE_WAIT_MIN_MS);
    return TT_MIN(ms, c->reuse_wait_ms);
}

/* `t` minus `cut`, but never below half of `t`. */
static uint64_t minus_margin(uint64_t t, uint64_t cut)
{
    return t - TT_MIN(cut, t / 2);
}

tt_pool_deadline_t tt_pool_idle_deadline(const tt_pool_conf_t *c, const tt_pool_known_t *k)
{
    tt_pool_deadline_t d = {.idle_ms = c->idle_timeout_ms, .reason = TT_RETIRE_IDLE_TIMEOUT};
    uint64_t t = 0;
    tt_pool_retire_t r = TT_RETIRE_NONE;
    if (c->keepalive_hint && k->hint_ms > 0) {
        /* A hint is a promise: reuse up to it, minus the time a close needs to reach us. Past it only on
         * evidence: every close seen came well after the hint (TT_POOL_ABOVE_MIN_MS), and the deadline the
         * youngest of them gives is later than the hint itself. */
        d.known = true;
        d.server_ms = k->hint_ms;
        t = minus_margin(k->hint_ms, k->margin_ms);
        r = TT_RETIRE_HINT_DEADLINE;
        if (c->learn_above_hint && k->above_ms >= k->hint_ms && k->above_ms - k->hint_ms >= TT_POOL_ABOVE_MIN_MS) {
            uint64_t a = minus_margin(k->above_ms, k->margin_ms);
            if (a > k->hint_ms) {
                t = a;
                r = TT_RETIRE_ABOVE_HINT;
                d.server_ms = k->above_ms;
            }
        }
    } else if (c->learn && k->learned_ms > 0) {
        /* A learned timeout is the youngest close seen: the server's own may be up to one sweep period
         * earlier (Tomcat, gunicorn close idle connections once a second), so on top of the margin the
         * sweep allowance min(hint_margin, learned / 2) is taken off; never more than half of it. */
        d.known = true;
        d.server_ms = k->learned_ms;
        uint64_t sweep = TT_MIN(c->hint_margin_ms, k->learned_ms / 2);
        t = minus_margin(k->learned_ms, k->margin_ms > UINT64_MAX - sweep ? UINT64_MAX : sweep + k->margin_ms);
        r = TT_RETIRE_LEARNED_DEADLINE;
    }
    if (r != TT_RETIRE_NONE && t <= d.idle_ms) {
        d.idle_ms = t;
        d.reason = r;
    }
    if (k->life_left_ms < d.idle_ms) {
        d.idle_ms = k->life_left_ms;
        d.reason = TT_RETIRE_MAX_LIFETIME;
    }
    return d;
}

tt_pool_above_outcome_t tt_pool_above_observe(tt_pool_above_t *a, const tt_pool_above_close_t *cl, uint64_t now_ms)
{
    if (now_ms < a->suspended_until_ms) return TT_ABOVE_NOTHING;
    if (!cl->canary) {
        /* In service: only a close earlier than a deadline the estimate gave says anything, and it says the
         * estimate was wrong (a restart, a changed configuration): back to the hint at once. */
        if (!cl->above_used || cl->age_ms >= cl->deadline_ms) return TT_ABOVE_NOTHING;
        a->ms = 0;
        a->observed = 0;
        a->suspended_until_ms = now_ms + tt_pool_above_suspend_ms;
        return TT_ABOVE_FALLBACK;
    }
    a->observed++;
    uint64_t before = a->ms;
    if (a->ms == 0 || cl->age_ms < a->ms || (cl->growth && cl->age_ms > a->ms)) a->ms = cl->age_ms;
    return a->ms != before ? TT_ABOVE_LEARNED : TT_ABOVE_NOTHING;
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

/* The hint this pool honours on `u`'s last response, 0 for none. */
static uint64_t hint_of(const tt_pool_t *p, const tt_upconn_t *u)
{
    return p->conf->keepalive_hint && u->hint_seen ? u->hint_timeout_ms : 0;
}

/* The deadline of `u` parked (or to be parked) at `from_ms`. */
static tt_pool_deadline_t deadline_of(tt_pool_t *p, tt_upconn_t *u, uint64_t from_ms)
{
    uint64_t life = lifetime_of(p, u), age = from_ms - u->created_ms;
    tt_pool_known_t k = {
        .hint_ms = hint_of(p, u),
        .learned_ms = p->learned_ms,
        .above_ms = p->above.ms,
        .margin_ms = p->margin_ms,
        .life_left_ms = life == 0 ? UINT64_MAX : (life > age ? life - age : 0),
    };
    return tt_pool_idle_deadline(p->conf, &k);
}

/* The estimate above the hint, when it moves deadlines past the hint (for the gauge). */
static uint64_t above_in_use(const tt_pool_t *p)
{
    if (p->last_hint_ms == 0) return 0;
    tt_pool_known_t k = {
        .hint_ms = p->last_hint_ms, .above_ms = p->above.ms, .margin_ms = p->margin_ms, .life_left_ms = UINT64_MAX};
    tt_pool_conf_t c = *p->conf;
    c.idle_timeout_ms = UINT64_MAX; /* the estimate is in use even where idle_timeout comes first */
    return tt_pool_idle_deadline(&c, &k).reason == TT_RETIRE_ABOVE_HINT ? p->above.ms : 0;
}

static void observe_rtt(tt_pool_t *p, uint64_t ms)
{
    /* A sample longer than the largest margin is capped there: one slow answer must not hold the margin at its
     * bound for long (the server's time to answer is in every sample, on the safe side). */
    tt_pool_rtt_observe(&p->rtt, TT_MIN(ms, p->conf->hint_margin_ms) * 1000);
    p->margin_ms = tt_pool_margin(p->conf, &p->rtt);
    tt_gauge_set(&p->m->margin_ms, (int64_t)p->margin_ms);
    tt_gauge_set(&p->m->rtt_us, (int64_t)p->rtt.srtt_us);
}

/* Remembers that a connection the server would keep until `until_ms` left service (open reasons). */
static void owe(tt_pool_t *p, uint64_t until_ms, tt_pool_open_t why)
{
    if (until_ms <= now(p)) return;
    if (p->ndebt == DEBT_SLOTS) {
        memmove(&p->debt[0], &p->debt[1], (DEBT_SLOTS - 1) * sizeof(p->debt[0]));
        p->ndebt--;
    }
    p->debt[p->ndebt++] = (debt_t){.until_ms = until_ms, .why = (uint8_t)why};
}

/* Takes back the most recent debt still due: why a new connection is opened when nothing parked could serve. */
static tt_pool_open_t pay_debt(tt_pool_t *p)
{
    while (p->ndebt > 0) {
        debt_t d = p->debt[--p->ndebt];
        if (d.until_ms > now(p)) return (tt_pool_open_t)d.why;
    }
    return TT_OPEN_NONE_PARKED;
}

/* Takes a parked connection out of the idle list or the canary list (not out of its timer). */
static void unpark(tt_pool_t *p, tt_upconn_t *u)
{
    tt_list_remove(&u->pool.link);
    if (u->pool.canary) {
        u->pool.canary = CANARY_NONE;
        p->ncanaries--;
        tt_gauge_add(&p->m->canaries, -1);
    } else {
        p->nidle--;
        tt_gauge_add(&p->m->idle, -1);
    }
}

static void retire(tt_pool_t *p, tt_upconn_t *u, tt_pool_retire_t reason)
{
    tt_timer_disarm(p->loop, &u->pool.timer);
    if (u->state == TT_UPCONN_PARKED) unpark(p, u);
    tt_counter_add(&p->m->retired[reason], 1);
    tt_upconn_close(u);
}

/* Retires a parked connection at its deadline: the server would still have kept it until server_ms. */
static void retire_at_deadline(tt_pool_t *p, tt_upconn_t *u)
{
    if (u->pool.server_ms) owe(p, u->parked_ms + u->pool.server_ms, TT_OPEN_PAST_DEADLINE);
    retire(p, u, (tt_pool_retire_t)u->pool.retire_reason);
}

/* Gives a parked connection its deadline `d`, counted from when it was parked. */
static void set_deadline(tt_pool_t *p, tt_upconn_t *u, tt_pool_deadline_t d)
{
    u->pool.retire_at_ms = u->parked_ms + d.idle_ms;
    u->pool.retire_reason = (uint8_t)d.reason;
    u->pool.server_ms = d.server_ms;
    u->pool.known = d.known;
    tt_timer_arm_at(p->loop, &u->pool.timer, u->pool.retire_at_ms); /* fires next turn when past */
}

/* Puts a parked connection in service with its deadline: in the idle list, which stays in MRU order (most
 * recently parked first), so that the head is always the youngest. */
static void serve_parked(tt_pool_t *p, tt_upconn_t *u, tt_pool_deadline_t d)
{
    tt_list_t *pos = &p->idle;
    while (pos->next != &p->idle && tt_container_of(pos->next, tt_upconn_t, pool.link)->parked_ms > u->parked_ms)
        pos = pos->next;
    tt_list_push_head(pos, &u->pool.link); /* after `pos` */
    p->nidle++;
    tt_gauge_add(&p->m->idle, 1);
    set_deadline(p, u, d);
}

/* What the pool knows changed (a learned timeout, the estimate above the hint): every parked connection gets
 * its deadline again, earlier or later, and a canary whose new deadline is still ahead goes back in service
 * (a later close seen from another connection proved its age safe). */
static void reapply_deadlines(tt_pool_t *p)
{
    tt_gauge_set(&p->m->above_ms, (int64_t)above_in_use(p));
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->idle)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        set_deadline(p, u, deadline_of(p, u, u->parked_ms));
    }
    tt_list_foreach_safe(pos, tmp, &p->canaries)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        tt_pool_deadline_t d = deadline_of(p, u, u->parked_ms);
        if (u->parked_ms + d.idle_ms <= now(p)) continue;
        unpark(p, u);
        serve_parked(p, u, d);
    }
}

static void set_learned(tt_pool_t *p, uint64_t ms)
{
    if (p->learned_ms == ms) return;
    tt_log(TT_LOG_INFO, "upstream %s: learned idle timeout %llu ms%s", p->name, (unsigned long long)ms,
           ms ? "" : " (forgotten: it lives longer than idle_timeout)");
    p->learned_ms = ms;
    tt_gauge_set(&p->m->learned_ms, (int64_t)ms);
    reapply_deadlines(p);
}

static void above_changed(tt_pool_t *p, tt_pool_above_outcome_t o)
{
    if (o == TT_ABOVE_NOTHING) return;
    if (o == TT_ABOVE_FALLBACK) {
        tt_counter_add(&p->m->learn_fallbacks, 1);
        tt_log(TT_LOG_WARN,
               "upstream %s: closed a connection before the idle timeout learned above its hint; "
               "back to the hint",
               p->name);
    } else if (above_in_use(p)) {
        tt_log(TT_LOG_INFO, "upstream %s: keeps idle connections %llu ms, longer than its hint of %llu ms", p->name,
               (unsigned long long)p->above.ms, (unsigned long long)p->last_hint_ms);
    }
    reapply_deadlines(p);
}

static void dispatch_queue(tt_pool_t *p);

/* ---- parked connections ---- */

static void parked_on_event(tt_upconn_t *u, tt_up_sock_t what);
static void parked_on_timer(tt_timer_t *t);

static const tt_upconn_ops_t parked_ops = {.on_parked_event = parked_on_event};

/* A close by the server of a connection with a hint, seen at idle age `age`: what it teaches above the hint. */
static tt_pool_above_outcome_t learn_above(tt_pool_t *p, const tt_upconn_t *u, uint64_t age)
{
    if (!p->conf->learn_above_hint) return TT_ABOVE_NOTHING;
    tt_pool_above_close_t cl = {
        .age_ms = age,
        .deadline_ms = u->pool.retire_at_ms - u->parked_ms,
        .canary = u->pool.canary != CANARY_NONE,
        .growth = u->pool.canary == CANARY_GROWTH,
        .above_used = u->pool.retire_reason == TT_RETIRE_ABOVE_HINT,
    };
    return tt_pool_above_observe(&p->above, &cl, now(p));
}

/* A close by the server of a connection without a hint, seen at idle age `age`: the learned estimate is the
 * youngest close seen; a canary's later close raises it (the server's timeout grew). */
static void learn_below(tt_pool_t *p, const tt_upconn_t *u, uint64_t age)
{
    if (!p->conf->learn) return;
    if (u->pool.canary == CANARY_LEARN) {
        if (age > p->learned_ms) set_learned(p, age);
    } else if (p->learned_ms == 0 || age < p->learned_ms) {
        set_learned(p, age);
    }
}

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
    tt_pool_above_outcome_t o = TT_ABOVE_NOTHING;
    if (hint_of(p, u) > 0)
        o = learn_above(p, u, age);
    else
        learn_below(p, u, age);
    retire(p, u, TT_RETIRE_PEER_CLOSED_IDLE);
    above_changed(p, o);
}

/* Which canary a connection reaching its deadline for `reason` becomes, or CANARY_NONE (it is retired). */
static int canary_kind(const tt_pool_t *p, tt_pool_retire_t reason)
{
    if (p->stopped) return CANARY_NONE;
    bool due = p->ncanaries == 0 && now(p) - p->last_canary_ms >= CANARY_INTERVAL_MS;
    switch (reason) {
    case TT_RETIRE_HINT_DEADLINE:
        if (!p->conf->learn_above_hint || now(p) < p->above.suspended_until_ms) return CANARY_NONE;
        /* Nothing seen above the hint yet: every connection reaching it waits out of service (as many as
         * max_idle), so that all of them go back in service at once if the server keeps them longer. */
        if (p->above.observed == 0) return p->ncanaries < p->conf->max_idle ? CANARY_PROBE : CANARY_NONE;
        return due ? CANARY_GROWTH : CANARY_NONE;
    case TT_RETIRE_ABOVE_HINT: return p->conf->learn_above_hint && due ? CANARY_GROWTH : CANARY_NONE;
    case TT_RETIRE_LEARNED_DEADLINE:
        if (p->conf->learn && due) return CANARY_LEARN;
        /* A server that sweeps closes connections anywhere from its timeout to one sweep later, and the learned
         * deadline takes a whole sweep off: most connections retired there would still be open. Kept as observers
         * (as many as max_idle), they go on serving requests that can be replayed. */
        return p->conf->canary_requests && p->ncanaries < p->conf->max_idle ? CANARY_OBSERVE : CANARY_NONE;
    default: return CANARY_NONE;
    }
}

/* The oldest idle age at which a request canary may take `u` (ms): 1.5 x the server's timeout its deadline came
 * from (a hint nothing has been seen above, or a learned timeout). Past it a request would mostly find the
 * connection closed (or closing: a replay), and the connection would have taught what it can. */
static uint64_t request_canary_limit(const tt_upconn_t *u)
{
    return u->pool.server_ms + u->pool.server_ms / 2;
}

static void parked_on_timer(tt_timer_t *t)
{
    tt_upconn_t *u = tt_container_of(t, tt_upconn_t, pool.timer);
    tt_pool_t *p = u->pool.owner;
    if (u->pool.canary == CANARY_OBSERVE) {
        retire(p, u, TT_RETIRE_LEARNED_DEADLINE); /* too old even for a request canary; it says nothing new */
        return;
    }
    if (u->pool.canary) {
        /* The canary outlived idle_timeout: the server keeps connections at least as long as the pool does. */
        tt_pool_above_outcome_t o = TT_ABOVE_NOTHING;
        if (u->pool.canary == CANARY_LEARN)
            set_learned(p, 0); /* nothing short to learn any more */
        else
            o = learn_above(p, u, now(p) - u->parked_ms);
        retire(p, u, TT_RETIRE_IDLE_TIMEOUT);
        above_changed(p, o);
        return;
    }
    int kind = canary_kind(p, (tt_pool_retire_t)u->pool.retire_reason);
    if (kind != CANARY_NONE) {
        /* Keep this one open but out of service until the upstream closes it (or idle_timeout): the age at which
         * it does is what the learners learn from; no request ever runs on a canary unless what they learn
         * brings its deadline back ahead of it (reapply_deadlines). */
        if (u->pool.server_ms) owe(p, u->parked_ms + u->pool.server_ms, TT_OPEN_PAST_DEADLINE);
        unpark(p, u);
        tt_list_push_tail(&p->canaries, &u->pool.link);
        u->pool.canary = (uint8_t)kind;
        p->ncanaries++;
        tt_gauge_add(&p->m->canaries, 1);
        uint64_t until = p->conf->idle_timeout_ms;
        if (kind == CANARY_OBSERVE)
            until = TT_MIN(until, request_canary_limit(u));
        else
            p->last_canary_ms = now(p); /* observers are not the rare learning canaries */
        tt_timer_arm_at(p->loop, &u->pool.timer, u->parked_ms + until);
        return;
    }
    retire_at_deadline(p, u);
}

/* A connection back from an exchange (or `fresh`, never used): parked when tt_pool_can_park allows, with its
 * retirement deadline; else closed with the one reason. */
static void park(tt_pool_t *p, tt_upconn_t *u, bool fresh)
{
    uint64_t t = now(p), life = lifetime_of(p, u);
    uint64_t age = t - u->created_ms;
    if (!fresh && u->rtt_ms >= 0) observe_rtt(p, (uint64_t)u->rtt_ms);
    if (hint_of(p, u) > 0 && hint_of(p, u) != p->last_hint_ms) {
        p->last_hint_ms = hint_of(p, u);
        tt_gauge_set(&p->m->hint_ms, (int64_t)p->last_hint_ms);
        tt_gauge_set(&p->m->above_ms, (int64_t)above_in_use(p));
    }
    tt_pool_deadline_t d = deadline_of(p, u, t);
    tt_pool_park_in_t in = {
        .fresh = fresh,
        .persistent = u->persistent,
        .request_sent = tt_upconn_request_sent(u),
        .sock = tt_upconn_settle(u), /* a syscall only when the last read filled the buffer */
        .stopping = p->stopped,
        .addr_gone = p->naddrs > 0 && !tt_addrset_contains(p->addrs, p->naddrs, &u->pool.addr),
        .requests = u->requests,
        .max_requests = p->conf->max_requests,
        .hint_max = p->conf->keepalive_hint ? u->hint_max : -1,
        .hint_zero = p->conf->keepalive_hint && u->hint_seen && u->hint_timeout_ms == 0,
        .age_ms = age,
        .lifetime_ms = life,
        .idle_ms = d.idle_ms,
        .idle_reason = d.reason,
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
        if (r == TT_RETIRE_MAX_REQUESTS || r == TT_RETIRE_MAX_LIFETIME) /* healthy, but used up */
            owe(p, t + (d.server_ms ? d.server_ms : p->conf->idle_timeout_ms), TT_OPEN_MAX_REACHED);
        if (r == TT_RETIRE_DNS_CHANGED) owe(p, t + d.idle_ms, TT_OPEN_DNS_CHANGED);
        tt_counter_add(&p->m->retired[r], 1);
        tt_upconn_close(u);
        return;
    }
    tt_upconn_park(u, &parked_ops, NULL);
    tt_timer_init(&u->pool.timer, parked_on_timer);
    serve_parked(p, u, d);
    if (p->nidle > p->conf->max_idle) {
        tt_upconn_t *lru = tt_container_of(p->idle.prev, tt_upconn_t, pool.link);
        owe(p, lru->pool.retire_at_ms, TT_OPEN_MAX_REACHED);
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

/* Right before reuse: true when `u` (already out of the parked lists and its timer) is fit to carry the request;
 * else it is closed and `*why` says so. */
static bool fit_for_reuse(tt_pool_t *p, tt_upconn_t *u, const tt_pool_waiter_t *w, uint64_t age, tt_pool_open_t *why)
{
    /* The check costs a syscall per request. It is skipped only where it cannot matter: the idle watch is
     * on (a FIN or stray bytes seen by the last poll have already retired the connection), the request can
     * be replayed if the connection proves dead anyway, it was parked so recently that an idle close is
     * not plausible (safe_idle: a busy pool reuses its connections within milliseconds), and this turn's
     * poll has no news about it still waiting to be handled. Stray bytes that news may carry are checked
     * whatever the settings: they would become this request's response. */
    bool news = tt_io_event_pending(&u->io);
    bool young = p->conf->idle_watch && !w->not_replayable && age < p->conf->safe_idle_ms && !news;
    if ((p->conf->peek || news) && !young) {
        tt_up_sock_t s = tt_upconn_check_parked(u);
        if (s != TT_UP_SOCK_QUIET) {
            tt_counter_add(&p->m->retired[s == TT_UP_SOCK_STRAY ? TT_RETIRE_STRAY_BYTES : TT_RETIRE_STALE_ON_REUSE], 1);
            tt_upconn_close(u);
            *why = TT_OPEN_STALE;
            return false;
        }
    }
    return true;
}

/* A request canary: the youngest connection kept past its deadline that a request which can be replayed may take
 * (canary_requests): a probe canary (a hint nothing has been seen above yet) or an observer (past a learned
 * deadline); younger than request_canary_limit. Against a server that closes at its hint, a request sent within
 * the margin of the hint may cross the close and be replayed: probe canaries are made only until the first close
 * of one is seen, so that costs a round at most. If the server closed it, the request is
 * replayed on a new connection; if it answers, the connection is parked again as any other, its idle time starting
 * anew. The learning canaries (learn, growth) are left to learn. NULL when there is none. */
static tt_upconn_t *take_canary(tt_pool_t *p, const tt_pool_waiter_t *w, tt_pool_open_t *why)
{
    tt_list_t *pos = p->canaries.prev;
    while (pos != &p->canaries) {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        pos = pos->prev; /* before `u` may be closed */
        uint64_t age = now(p) - u->parked_ms;
        if ((u->pool.canary != CANARY_PROBE && u->pool.canary != CANARY_OBSERVE) || age >= request_canary_limit(u))
            continue;
        if (u->requests == 0) continue; /* never used: it carries no evidence of the server keeping a used connection */
        unpark(p, u);
        tt_timer_disarm(p->loop, &u->pool.timer);
        if (!fit_for_reuse(p, u, w, age, why)) continue;
        return u;
    }
    return NULL;
}

/* The most recently parked connection that may carry this request, or NULL with `*why` saying why none could. */
static tt_upconn_t *take_parked(tt_pool_t *p, const tt_pool_waiter_t *w, tt_pool_open_t *why, bool *canary)
{
    *why = TT_OPEN_NONE_PARKED;
    *canary = false;
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &p->idle)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        if (now(p) >= u->pool.retire_at_ms) {
            /* Past its deadline, its timer not yet run (timers run at the start of a turn; this one is late):
             * retired now, never reused a moment after the upstream may have closed it. */
            retire_at_deadline(p, u);
            continue;
        }
        uint64_t age = now(p) - u->parked_ms;
        if (w->not_replayable && !u->pool.known && age >= p->conf->safe_idle_ms) {
            /* Nothing says how long this server keeps idle connections: a request that cannot be replayed goes
             * only on one idle for less than what every server allows. The older ones after it are no better,
             * but one whose timeout is known may be. */
            *why = TT_OPEN_NOT_REPLAYABLE;
            continue;
        }
        unpark(p, u);
        tt_timer_disarm(p->loop, &u->pool.timer);
        if (!fit_for_reuse(p, u, w, age, why)) continue;
        return u;
    }
    if (!p->conf->canary_requests || !w->may_probe || w->not_replayable) return NULL;
    tt_upconn_t *u = take_canary(p, w, why);
    *canary = u != NULL;
    return u;
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

static void count_open(tt_pool_t *p, const tt_upconn_t *u)
{
    tt_counter_add(&p->m->opened, 1);
    tt_counter_add(&p->m->handshake_us, u->handshake_us);
    tt_hist_observe(&p->m->connect_us, tt_hist_lat_bounds, tt_hist_lat_nbounds, u->handshake_us);
    if (p->tls) tt_counter_add(&p->m->tls_handshakes[u->tls_resumed ? 1 : 0], 1);
}

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

/* A failed connect or TLS handshake (both count toward max_fails), of an HTTP/1.1 connection or of the server's
 * HTTP/2 pool (tt_pool_health_report). The first TLS failure of a streak is logged with OpenSSL's reason: a
 * certificate problem is otherwise visible only as 502 tls_error. */
static void connect_failed(tt_pool_t *p, const char *tls_error, bool tls_verify_failed)
{
    if (tls_error != NULL && p->fails == 0)
        tt_log(TT_LOG_WARN, "upstream %s: TLS handshake failed: %s%s", p->name, tls_error,
               tls_verify_failed ? " (certificate verification; see tls_ca, tls_sni, tls_verify)" : "");
    tt_counter_add(&p->m->connect_failures, 1);
    if (++p->fails >= p->conf->max_fails) mark_down(p);
}

static void upconn_failed(tt_pool_t *p, const tt_upconn_t *u)
{
    connect_failed(p, u != NULL ? u->tls_error : NULL, u != NULL && u->tls_verify_failed);
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
        upconn_failed(p, u);
        if (!p->down) mark_down(p);
        return;
    }
    count_open(p, u);
    connect_succeeded(p);
    park(p, u, true); /* a fresh connection: parked for the next request */
    dispatch_queue(p);
}

static void probe_on_timer(tt_timer_t *t)
{
    tt_pool_t *p = tt_container_of(t, tt_pool_t, probe_timer);
    if (p->stopped || p->probe != NULL || p->probing) return;
    if (p->prober != NULL) {
        tt_pool_probe_t st = p->prober(p->prober_data);
        if (st == TT_PROBE_STARTED) {
            p->probing = true;
            return;
        }
        if (st == TT_PROBE_FAILED) {
            connect_failed(p, NULL, false);
            if (!p->down) mark_down(p);
            return;
        }
    }
    tt_up_err_t err;
    tt_upconn_t *u = tt_upconn_connect(p->loop, p->bufs, p->res, &p->addr, &p->conf->tcp_keepalive, &p->conf->timeouts,
                                       &probe_ops, NULL, &err);
    if (u == NULL) {
        connect_failed(p, NULL, false); /* marks it down again (a longer backoff, the next probe armed) */
        if (!p->down) mark_down(p);
        return;
    }
    if (p->tls) tt_upconn_set_tls(u, p->tls, p->tls_session);
    u->pool.owner = p;
    u->pool.addr = p->addr;
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
        upconn_failed(p, u);
        if (w != NULL) w->cb(w, NULL, TT_POOL_FAILED, err);
        dispatch_queue(p);
        return;
    }
    count_open(p, u);
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
        connect_failed(p, NULL, false);
        return TT_POOL_FAILED;
    }
    if (p->tls) tt_upconn_set_tls(u, p->tls, p->tls_session);
    u->pool.owner = p;
    u->pool.addr = p->addr;
    w->_connecting = u;
    tt_list_push_tail(&p->connecting, &u->pool.link);
    p->nconnecting++;
    tt_gauge_add(&p->m->active, 1);
    return TT_POOL_PENDING;
}

static bool at_capacity(const tt_pool_t *p)
{
    return p->conf->max_connections != 0 &&
           p->nbusy + p->nconnecting + p->nidle + p->ncanaries >= p->conf->max_connections;
}

/* May `w`, which found no parked connection it may use, wait for one finishing an exchange (reuse_wait)? Not a
 * request that wants a new connection, only once, only while the round trip has been measured (the bound), and
 * only while more connections are busy (or kept for request canaries, which a replayable request may take and
 * bring back) than requests already wait for them: each busy one parks again, most likely, and the connection
 * parked a moment ago is safe for any request. */
static bool may_wait_for_reuse(const tt_pool_t *p, const tt_pool_waiter_t *w)
{
    uint32_t coming = p->nbusy + (p->conf->canary_requests ? p->ncanaries : 0);
    return !w->fresh_only && w->waited_ms == 0 && p->nrwait < coming && tt_pool_reuse_wait_ms(p->conf, &p->rtt) > 0 &&
           !p->stopped;
}

/* One attempt for `w`: a parked connection, a wait for a busy one to come back (may_wait), a new one, or nothing
 * (queue for room). */
static tt_pool_status_t try_serve(tt_pool_t *p, tt_pool_waiter_t *w, tt_upconn_t **out, tt_up_err_t *err, bool may_wait)
{
    tt_pool_open_t why = w->replay ? TT_OPEN_REPLAY : TT_OPEN_FRESH_ONLY;
    w->open_reason = TT_OPEN_REUSED;
    if (!w->fresh_only) {
        bool canary;
        tt_upconn_t *u = take_parked(p, w, &why, &canary);
        if (u != NULL) {
            u->pool.took_parked = true;
            u->pool.request_canary = canary;
            w->canary = canary;
            check_out(p, u, w);
            tt_counter_add(&p->m->reused, 1);
            *out = u;
            return TT_POOL_READY;
        }
        if (may_wait && may_wait_for_reuse(p, w)) {
            p->rwait.timeout_ms = tt_pool_reuse_wait_ms(p->conf, &p->rtt); /* moves slowly: order holds, nearly */
            tt_tq_push(&p->rwait, &w->_q);
            w->_reuse_waiting = true;
            w->_since_ms = now(p);
            p->nrwait++;
            return TT_POOL_PENDING;
        }
    }
    /* Connections this request cannot use hold the room it needs: close one, canaries (out of service) first,
     * then the oldest parked. */
    if (at_capacity(p) && p->ncanaries > 0)
        retire(p, tt_container_of(tt_list_first(&p->canaries), tt_upconn_t, pool.link), TT_RETIRE_MAX_IDLE);
    if (at_capacity(p) && p->nidle > 0)
        retire(p, tt_container_of(p->idle.prev, tt_upconn_t, pool.link), TT_RETIRE_MAX_IDLE);
    if (at_capacity(p)) return TT_POOL_EXHAUSTED;
    tt_pool_status_t st = open_new(p, w, err);
    if (st == TT_POOL_PENDING) {
        tt_pool_open_t owed = pay_debt(p); /* one new connection settles one debt, whatever it is named after */
        if (why == TT_OPEN_NONE_PARKED) why = owed;
        w->open_reason = why;
        tt_counter_add(&p->m->opens[why], 1);
    }
    return st;
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
        tt_pool_status_t st = try_serve(p, w, &u, &err, true);
        if (st == TT_POOL_EXHAUSTED) {
            link_waiter(p, w, since, true);
            return;
        }
        tt_hist_observe(&p->m->queue_wait_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, now(p) - w->_since_ms);
        if (st != TT_POOL_PENDING) w->cb(w, u, st, err);
    }
}

/* Counts a reuse waiter out (its entry is out of the queue): always before it is called back. */
static void reuse_waiter_left(tt_pool_t *p, tt_pool_waiter_t *w)
{
    TT_BUG_ON(!w->_reuse_waiting);
    w->_reuse_waiting = false;
    p->nrwait--;
    w->waited_ms = TT_MAX(now(p) - w->_since_ms, 1); /* nonzero: it never waits twice */
}

/* Takes a reuse waiter out of its queue (and the count): always before it is called back. */
static void unlink_reuse_waiter(tt_pool_t *p, tt_pool_waiter_t *w)
{
    tt_tq_remove(&w->_q);
    reuse_waiter_left(p, w);
}

/* A connection was parked (its exchange ended): the oldest reuse waiters take what is parked and safe for them. */
static void dispatch_reuse(tt_pool_t *p)
{
    tt_tq_entry_t *e;
    while (p->nidle > 0 && (e = tt_tq_oldest(&p->rwait)) != NULL) {
        tt_pool_waiter_t *w = tt_container_of(e, tt_pool_waiter_t, _q);
        bool canary;
        tt_pool_open_t why;
        tt_upconn_t *u = take_parked(p, w, &why, &canary);
        if (u == NULL) return; /* nothing it may take; the ones behind it wait out their own bound */
        unlink_reuse_waiter(p, w);
        u->pool.took_parked = true;
        u->pool.request_canary = canary;
        w->canary = canary;
        check_out(p, u, w);
        tt_counter_add(&p->m->reused, 1);
        tt_counter_add(&p->m->reuse_waits[0], 1);
        w->cb(w, u, TT_POOL_READY, TT_UP_OK);
    }
}

/* A reuse waiter's wait ran out (the busy connections did not come back in time: slow exchanges, or a server that
 * answers only once more requests arrived): a new connection, as if it had not waited. */
static void reuse_wait_on_timeout(tt_tq_entry_t *e)
{
    tt_pool_waiter_t *w = tt_container_of(e, tt_pool_waiter_t, _q);
    tt_pool_t *p = w->_pool;
    reuse_waiter_left(p, w); /* tt_tq took it out of the queue */
    tt_counter_add(&p->m->reuse_waits[1], 1);
    tt_upconn_t *u = NULL;
    tt_up_err_t err = TT_UP_OK;
    tt_pool_status_t st = p->down ? TT_POOL_DOWN : try_serve(p, w, &u, &err, false);
    if (st == TT_POOL_EXHAUSTED && p->npending < p->conf->max_pending) {
        w->_since_ms = now(p);
        link_waiter(p, w, w->_since_ms, false);
        return;
    }
    if (st != TT_POOL_PENDING) w->cb(w, u, st, err);
}

/* ---- public ---- */

tt_pool_status_t tt_pool_acquire(tt_pool_t *p, tt_pool_waiter_t *w, tt_upconn_t **out, tt_up_err_t *err)
{
    *out = NULL;
    *err = TT_UP_OK;
    w->_pool = p;
    w->_connecting = NULL;
    w->_waiting = false;
    w->_reuse_waiting = false;
    w->canary = false;
    w->waited_ms = 0;
    tt_tq_entry_init(&w->_q);
    if (p->down) return TT_POOL_DOWN;
    tt_pool_status_t st = try_serve(p, w, out, err, true);
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
    if (w->_reuse_waiting) unlink_reuse_waiter(p, w);
    if (w->_connecting != NULL) {
        w->_connecting->data = NULL; /* new_on_connect parks it */
        w->_connecting = NULL;
    }
}

void tt_pool_release(tt_pool_t *p, tt_upconn_t *u)
{
    check_in(p, u);
    if (u->pool.request_canary) {
        /* answered past its deadline: the server kept it that long. Parked again as any other, its idle time
         * starting anew; the learners keep learning from closes only (a sweep may still come). */
        tt_counter_add(&p->m->canary_requests[0], 1);
        u->pool.request_canary = false;
    }
    park(p, u, false);
    dispatch_queue(p);
    dispatch_reuse(p);
}

/* A reused connection whose request met a close (or reset) before any response byte: the server closed it
 * while it was parked, younger than its deadline. That is a close seen like any other: it lowers the learned
 * timeout, and when the deadline came from the estimate above the hint, falls back to the hint. */
static tt_pool_above_outcome_t learn_from_failed_reuse(tt_pool_t *p, tt_upconn_t *u)
{
    if (!u->pool.took_parked || u->got_bytes || (u->last_err != TT_UP_CLOSED && u->last_err != TT_UP_RESET))
        return TT_ABOVE_NOTHING;
    uint64_t age = u->pool.checked_out_ms - u->parked_ms;
    if (hint_of(p, u) > 0) return learn_above(p, u, age);
    learn_below(p, u, age);
    return TT_ABOVE_NOTHING;
}

void tt_pool_discard(tt_pool_t *p, tt_upconn_t *u, tt_pool_retire_t reason)
{
    check_in(p, u);
    if (u->pool.request_canary && !u->got_bytes && (u->last_err == TT_UP_CLOSED || u->last_err == TT_UP_RESET))
        tt_counter_add(&p->m->canary_requests[1], 1); /* found closed: the caller replays the request */
    u->pool.request_canary = false;
    tt_pool_above_outcome_t o = learn_from_failed_reuse(p, u);
    tt_counter_add(&p->m->retired[reason], 1);
    tt_upconn_close(u);
    above_changed(p, o);
    dispatch_queue(p);
}

void tt_pool_detach(tt_pool_t *p, tt_upconn_t *u)
{
    check_in(p, u);
    tt_counter_add(&p->m->retired[TT_RETIRE_TUNNEL], 1);
    u->pool.owner = NULL;
    dispatch_queue(p); /* a waiter may take the place it held */
}

/* Retires the parked connections (canaries included) of `list` whose address left the set. */
static void retire_moved(tt_pool_t *p, tt_list_t *list)
{
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, list)
    {
        tt_upconn_t *u = tt_container_of(pos, tt_upconn_t, pool.link);
        if (tt_addrset_contains(p->addrs, p->naddrs, &u->pool.addr)) continue;
        owe(p, u->pool.retire_at_ms, TT_OPEN_DNS_CHANGED);
        retire(p, u, TT_RETIRE_DNS_CHANGED);
    }
}

void tt_pool_set_addrs(tt_pool_t *p, const tt_addr_t *addrs, size_t n)
{
    if (n == 0 || (p->naddrs == n && tt_addrset_same(p->addrs, p->naddrs, addrs, n))) return;
    p->addrs = tt_realloc(p->addrs, n * sizeof(*addrs));
    memcpy(p->addrs, addrs, n * sizeof(*addrs));
    p->naddrs = n;
    if (!tt_addrset_contains(addrs, n, &p->addr)) {
        p->addr = addrs[0];
        /* Failed connects to the old address say nothing about the new one: health starts again. */
        p->fails = 0;
        if (p->down) {
            p->down = false;
            p->backoff_ms = 0;
            tt_gauge_set(&p->m->down, 0);
            tt_timer_disarm(p->loop, &p->probe_timer);
        }
    }
    retire_moved(p, &p->idle);
    retire_moved(p, &p->canaries);
    dispatch_queue(p); /* the room they held */
}

void tt_pool_set_tls(tt_pool_t *p, tt_tls_client_t *tls)
{
    p->tls = tls;
}

void tt_pool_health_report(tt_pool_t *p, bool ok, const char *tls_error, bool tls_verify_failed)
{
    if (p->stopped) return;
    if (ok)
        connect_succeeded(p);
    else
        connect_failed(p, tls_error, tls_verify_failed);
}

void tt_pool_set_prober(tt_pool_t *p, tt_pool_probe_fn fn, void *data)
{
    bool lost = p->probing; /* a probe of the previous prober is forgotten with it: the next one is armed */
    p->prober = fn;
    p->prober_data = data;
    p->probing = false;
    if (lost && p->down && !p->stopped) tt_timer_arm(p->loop, &p->probe_timer, p->backoff_ms);
}

void tt_pool_clear_prober(tt_pool_t *p, void *data)
{
    if (p->prober_data == data) tt_pool_set_prober(p, NULL, NULL); /* else another prober took over */
}

void tt_pool_probe_done(tt_pool_t *p, void *data, bool ok, const char *tls_error, bool tls_verify_failed)
{
    if (!p->probing || p->prober_data != data || p->stopped) return;
    p->probing = false;
    if (!ok) {
        connect_failed(p, tls_error, tls_verify_failed);
        if (!p->down) mark_down(p); /* a failed probe marks it down again: a longer backoff, the next probe armed */
        return;
    }
    connect_succeeded(p);
    dispatch_queue(p);
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
    p->conf_copy = *conf;
    p->conf = &p->conf_copy;
    conf = p->conf;
    p->addr = *addr;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->loop = loop;
    p->bufs = bufs;
    p->res = res;
    p->m = m;
    tt_list_init(&p->idle);
    tt_list_init(&p->busy);
    tt_list_init(&p->connecting);
    tt_list_init(&p->canaries);
    p->margin_ms = tt_pool_margin(conf, &p->rtt); /* hint_margin until measured; the gauge stays 0 until then */
    tt_tq_init(&p->queue, loop, conf->queue_timeout_ms, queue_on_timeout);
    tt_tq_init(&p->rwait, loop, TT_MAX(conf->reuse_wait_ms, 1), reuse_wait_on_timeout);
    tt_timer_init(&p->probe_timer, probe_on_timer);
    tt_timer_init(&p->leak_timer, leak_scan);
    p->rng = (uint64_t)(uintptr_t)p ^ tt_loop_now(loop);
    return p;
}

void tt_pool_rebind(tt_pool_t *p, const tt_pool_conf_t *conf, tt_pool_metrics_t *m)
{
    p->conf_copy = *conf;
    p->queue.timeout_ms = conf->queue_timeout_ms;
    p->margin_ms = tt_pool_margin(p->conf, &p->rtt);
    if (m != p->m) {
        /* This worker is the only writer of both shards: carry the series over so they stay monotonic. */
        _Static_assert(sizeof(tt_pool_metrics_t) % sizeof(tt_counter_t) == 0, "metrics are 8-byte atomics");
        tt_counter_t *from = (tt_counter_t *)(void *)p->m, *to = (tt_counter_t *)(void *)m;
        for (size_t i = 0; i < sizeof(tt_pool_metrics_t) / sizeof(tt_counter_t); i++)
            atomic_store_explicit(&to[i], atomic_load_explicit(&from[i], memory_order_relaxed), memory_order_relaxed);
        p->m = m;
    }
}

void tt_pool_stop(tt_pool_t *p)
{
    p->stopped = true;
    while (!tt_list_is_empty(&p->idle))
        retire(p, tt_container_of(tt_list_first(&p->idle), tt_upconn_t, pool.link), TT_RETIRE_SHUTDOWN);
    while (!tt_list_is_empty(&p->canaries))
        retire(p, tt_container_of(tt_list_first(&p->canaries), tt_upconn_t, pool.link), TT_RETIRE_SHUTDOWN);
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
    TT_BUG_ON(p->npending != 0 || p->nrwait != 0);
    if (p->tls_session) tt_tls_session_free(p->tls_session);
    tt_tq_dispose(&p->queue);
    free(p->addrs);
    tt_tq_dispose(&p->rwait);
    free(p);
    *pp = NULL;
}
