/* pool.h -- per-worker upstream connection pool: MRU reuse, deadline retirement, learned idle timeouts
 *
 * One tt_pool_t holds the connections of one worker to one upstream server. It reuses every connection that is
 * safe to reuse and no other, curing the keep-alive race (a connection reused just as the upstream closes it)
 * in the layers of DESIGN.md:
 *  - prevent: a parked connection is retired before the upstream would close it: at the pool's idle_timeout,
 *    at the upstream's advertised `Keep-Alive: timeout=` minus a margin (a promise), later when the upstream
 *    was seen to keep connections longer than it says (learned above the hint, confirmed by canaries), or,
 *    when the upstream gives no hint, before the idle age at which it was seen to close connections
 *    (learned). The margin is the time a close needs to reach us: a few smoothed round trips measured on the
 *    pool's own exchanges, between a floor and `hint_margin`. `max=` and the pool's own max_requests and
 *    max_lifetime are honoured the same way;
 *  - detect: a parked connection that becomes readable (FIN, RST, stray bytes) is closed at once, and a
 *    non-blocking read right before reuse discards one that died in between;
 *  - reuse what is past a deadline only where a failure costs nothing: a request that can be replayed may take a
 *    connection kept past its deadline (a request canary, canary_requests), and any request that finds nothing
 *    parked waits a round trip or so for a connection finishing its exchange (reuse_wait) before opening one;
 *  - recover (the caller's part): a request that fails on a reused connection before any response byte
 *    is replayed on a new one when it is replayable. A request that cannot be replayed never goes on a
 *    connection whose server's idle timeout is neither hinted nor learned unless it has been idle less than
 *    `safe_idle`.
 * Reuse takes the most recently used connection first. Owning worker only.
 */
#ifndef TT_CLIENT_POOL_H
#define TT_CLIENT_POOL_H

#include "client/upstream.h"
#include "core/tq.h"
#include "metrics/metrics.h"

/** Settings of the pools of one upstream (docs/config.md `[upstream NAME]` gives defaults). */
typedef struct tt_pool_conf {
    uint32_t max_idle;         /* parked connections per worker */
    uint64_t idle_timeout_ms;  /* longest a connection stays parked */
    uint32_t max_requests;     /* per connection; 0 = unlimited */
    uint64_t max_lifetime_ms;  /* per connection, +/-10 % jitter; 0 = unlimited */
    bool keepalive_hint;       /* honour the upstream's Keep-Alive: timeout=, max= */
    uint64_t hint_margin_ms;   /* the largest margin before a hinted or learned timeout (and at most half of it) */
    uint64_t margin_floor_ms;  /* the smallest margin */
    uint32_t margin_rtts;      /* margin = margin_rtts x smoothed round trip + 4 x its mean deviation */
    bool learn;                /* learn the upstream's idle timeout when it gives no hint */
    bool learn_above_hint;     /* follow an upstream that keeps connections longer than its hint */
    uint64_t safe_idle_ms;     /* idle time every server is assumed to allow (non-replayable requests before the
                                * timeout is known; the check before reuse is skipped below it) */
    bool idle_watch;           /* close a parked connection as soon as it becomes readable (detect, first line) */
    bool peek;                 /* MSG_PEEK a parked connection right before reuse (detect, second line) */
    bool canary_requests;      /* a replayable request may take a connection kept past its deadline (a request
                                * canary): replayed on a new connection if the server closed it */
    uint64_t reuse_wait_ms;    /* longest a non-replayable request with no safe parked connection waits for one
                                * finishing an exchange (bounded lower by the measured round trip); 0 = never */
    uint32_t max_connections;  /* open (busy, connecting, parked) per worker; 0 = unlimited */
    uint32_t max_pending;      /* requests waiting for a connection */
    uint64_t queue_timeout_ms; /* longest a request waits */
    tt_up_timeouts_t timeouts;
    tt_tcp_keepalive_t tcp_keepalive;
    uint32_t max_fails;      /* consecutive connect failures that mark the server down */
    uint64_t backoff_min_ms; /* first down period; doubles per failed probe */
    uint64_t backoff_max_ms;
    uint64_t leak_threshold_ms; /* a connection checked out longer is reported as a leak; 0 = off */
} tt_pool_conf_t;

/** Why a pooled connection was closed (metrics: tether_upstream_retired_total{reason}). */
typedef enum tt_pool_retire {
    TT_RETIRE_NONE = 0,
    TT_RETIRE_IDLE_TIMEOUT,     /* parked for the pool's idle_timeout */
    TT_RETIRE_HINT_DEADLINE,    /* the upstream's Keep-Alive: timeout= minus the margin */
    TT_RETIRE_LEARNED_DEADLINE, /* the learned idle timeout minus the margin */
    TT_RETIRE_ABOVE_HINT,       /* the idle timeout learned above the hint minus the margin */
    TT_RETIRE_MAX_REQUESTS,     /* the pool's max_requests or the upstream's max= */
    TT_RETIRE_MAX_LIFETIME,     /* max_lifetime (jittered) */
    TT_RETIRE_PEER_CLOSED_IDLE, /* the upstream closed (or reset) it while parked */
    TT_RETIRE_STALE_ON_REUSE,   /* found dead by the check before reuse */
    TT_RETIRE_UPSTREAM_CLOSE,   /* the response said Connection: close (or was HTTP/1.0 or close-delimited), came
                                 * before the request was completely sent, or the upstream closed right after it */
    TT_RETIRE_ERROR,            /* the exchange failed */
    TT_RETIRE_MAX_IDLE,         /* more parked connections than max_idle */
    TT_RETIRE_SHUTDOWN,         /* the worker stopped */
    TT_RETIRE_STRAY_BYTES,      /* bytes that belong to no exchange: after a response, or while parked */
    TT_RETIRE_TUNNEL,           /* a 101 made it a tunnel: it left the pool for good (tt_pool_detach) */
    TT_RETIRE_DNS_CHANGED,      /* its address is no longer one the server's name resolves to (tt_pool_set_addrs):
                                 * retired when idle (parked, or back from its exchange), never mid-exchange */
    TT_RETIRE__COUNT
} tt_pool_retire_t;

/** Static name of `r` ("hint_deadline"). */
const char *tt_pool_retire_name(tt_pool_retire_t r);

/** Why a request got a new connection rather than a parked one (metrics: tether_upstream_open_reasons_total,
 *  access log: up_open). */
typedef enum tt_pool_open {
    TT_OPEN_REUSED = 0,     /* not opened: a parked connection carries it */
    TT_OPEN_NONE_PARKED,    /* nothing parked, and nothing retired lately that the server would still keep */
    TT_OPEN_PAST_DEADLINE,  /* parked connections were retired at their deadline (or kept out of service as
                             * canaries) while the server would still have kept them: a reuse declined */
    TT_OPEN_MAX_REACHED,    /* connections were closed for max_requests, the server's max=, max_lifetime or
                             * max_idle while the server would still have kept them */
    TT_OPEN_NOT_REPLAYABLE, /* the request cannot be replayed and the server's idle timeout is not known yet:
                             * the parked connections have been idle longer than safe_idle */
    TT_OPEN_STALE,          /* the parked connection was found closed (or with stray bytes) right before reuse */
    TT_OPEN_FRESH_ONLY,     /* the request asked for a new connection (`reuse = safe`, first request) */
    TT_OPEN_REPLAY,         /* a replay after a reused connection failed: always a new connection */
    TT_OPEN_DNS_CHANGED,    /* parked connections were retired because the server's name moved to other addresses */
    TT_OPEN__COUNT
} tt_pool_open_t;

/** Static name of `o` ("past_deadline"; "-" for TT_OPEN_REUSED; "unknown" out of range). Any thread. */
const char *tt_pool_open_name(tt_pool_open_t o);

/** A pool's metrics shard (one per worker per server; summed when scraped). */
typedef struct tt_pool_metrics {
    tt_gauge_t idle;
    tt_gauge_t active;               /* checked out or connecting */
    tt_gauge_t pending;              /* requests queued */
    tt_gauge_t down;                 /* 1 while marked down */
    tt_gauge_t learned_ms;           /* learned idle timeout, 0 when none */
    tt_gauge_t hint_ms;              /* the server's last Keep-Alive: timeout= (honoured), 0 when none seen */
    tt_gauge_t above_ms;             /* idle timeout learned above the hint and in use, 0 when none */
    tt_gauge_t margin_ms;            /* the margin now (tt_pool_margin) */
    tt_gauge_t rtt_us;               /* smoothed round trip, us (0 before the first sample) */
    tt_gauge_t canaries;             /* connections kept out of service to see when the server closes them */
    tt_counter_t learn_fallbacks;    /* a close earlier than a deadline learned above the hint: back to the hint */
    tt_counter_t canary_requests[2]; /* requests sent on a connection past its deadline: [0 answered, 1 found it
                                      * closed (replayed)] */
    tt_counter_t reuse_waits[2];     /* non-replayable requests that waited for a connection finishing an exchange:
                                      * [0 got it, 1 the wait ran out (then a new connection)] */
    tt_counter_t opened;
    tt_counter_t handshake_us;          /* connect (and TLS handshake) time of the connections opened, us */
    tt_counter_t opens[TT_OPEN__COUNT]; /* why requests got new connections ([TT_OPEN_REUSED] unused) */
    tt_counter_t reused;                /* requests sent on a reused connection */
    tt_counter_t connect_failures;
    tt_counter_t leaks;
    tt_counter_t queue_timeouts;
    tt_counter_t tls_handshakes[2]; /* [0 full, 1 resumed] */
    tt_counter_t retired[TT_RETIRE__COUNT];
    tt_hist_t queue_wait_ms;
    tt_hist_t connect_us;    /* connect (and TLS handshake) of each connection opened, us (tt_hist_lat_bounds) */
    tt_hist_t first_byte_us; /* proxied exchange: request begun upstream to the response head, us */
    tt_hist_t exchange_us;   /* proxied exchange: request begun upstream to the response's end, us */
} tt_pool_metrics_t;

/**
 * Inputs of the parking decision: "may this connection be parked?" has this one home (tt_pool_can_park).
 * The connection reports facts (upstream.h: `persistent`, tt_upconn_request_sent, tt_upconn_settle); the
 * pool adds its limits. Nobody else decides whether a connection is reused.
 */
typedef struct tt_pool_park_in {
    bool fresh;                   /* no exchange yet (connected for a request that left, or a health probe): the
                                   * response facts below do not apply */
    bool persistent;              /* the response allows another exchange (tt_upconn_t.persistent, RFC 9112 9.3) */
    bool request_sent;            /* the whole request went out before the response ended */
    tt_up_sock_t sock;            /* what the socket held after the response (tt_upconn_settle) */
    bool stopping;                /* the worker is shutting down */
    bool addr_gone;               /* its address is no longer among the server's (its name resolves elsewhere) */
    uint32_t requests;            /* exchanges done on the connection */
    uint32_t max_requests;        /* 0 = unlimited */
    int64_t hint_max;             /* upstream's Keep-Alive: max= on the last response, -1 absent (or ignored) */
    bool hint_zero;               /* upstream's Keep-Alive: timeout=0 on the last response (and hints are honoured) */
    uint64_t age_ms;              /* since the connect started */
    uint64_t lifetime_ms;         /* its jittered max lifetime, 0 = unlimited */
    uint64_t idle_ms;             /* how long it may stay parked, after hint/learned cuts (tt_pool_idle_deadline) */
    tt_pool_retire_t idle_reason; /* the limit that decided idle_ms (tt_pool_idle_deadline's `reason`) */
} tt_pool_park_in_t;

/**
 * TT_RETIRE_NONE when the connection may be parked, else the one reason it must close, from the first check
 * that fails in this order: the socket closed after the response (upstream_close); bytes after it
 * (stray_bytes); a non-persistent response or one that came before the request was sent (upstream_close);
 * stopping (shutdown); max_requests or the upstream's max=0 (max_requests); lifetime (max_lifetime); the
 * upstream's timeout=0 (hint_deadline); no idle time left (`idle_reason`: the hint, the learned timeout, the
 * lifetime; hint_deadline when the pool's own idle timeout is 0). Pure; owning worker or any thread.
 * Right after stopping: an address the server's name no longer resolves to (`addr_gone`: dns_changed).
 */
tt_pool_retire_t tt_pool_can_park(const tt_pool_park_in_t *in);

/** The measured round trip of one server's exchanges (per pool): RFC 6298 smoothing of loop-clock samples. */
typedef struct tt_pool_rtt {
    uint64_t srtt_us;   /* smoothed round trip */
    uint64_t rttvar_us; /* smoothed mean deviation */
    uint32_t samples;
} tt_pool_rtt_t;

/**
 * Adds one round-trip sample (us; the caller caps it, see tt_pool_margin) to `r`, which the caller owns: the first
 * sets srtt to it and rttvar to half of it; later ones move srtt by 1/8 and rttvar by 1/4 of the difference.
 * Pure: no clock, no I/O; any thread.
 */
void tt_pool_rtt_observe(tt_pool_rtt_t *r, uint64_t sample_us);

/**
 * The margin (ms) by which a connection is retired before a hinted or learned idle timeout: the time a close
 * needs to reach us, margin_rtts x srtt + 4 x rttvar rounded up, at least margin_floor and at most hint_margin;
 * hint_margin before the first sample. Cannot fail. Pure; any thread.
 */
uint64_t tt_pool_margin(const tt_pool_conf_t *c, const tt_pool_rtt_t *r);

/** What the pool knows of a server's idle timeout when it parks a connection (ms; 0 = none). */
typedef struct tt_pool_known {
    uint64_t hint_ms;      /* the last response's Keep-Alive: timeout= (0: none, or ignored) */
    uint64_t learned_ms;   /* learned from closes, for a server that sends no hint */
    uint64_t above_ms;     /* learned above the hint: the youngest close seen, when every one came after it */
    uint64_t margin_ms;    /* tt_pool_margin() */
    uint64_t life_left_ms; /* what is left of the connection's lifetime, UINT64_MAX = none */
} tt_pool_known_t;

/** A parked connection's deadline (tt_pool_idle_deadline). */
typedef struct tt_pool_deadline {
    uint64_t idle_ms;        /* how long it may stay parked */
    tt_pool_retire_t reason; /* the limit that decides it: idle_timeout, hint_deadline, above_hint_deadline,
                              * learned_deadline or max_lifetime */
    uint64_t server_ms;      /* the server's idle timeout it derives from (hinted, learned above, learned), 0 when
                              * none: until then a connection retired at the deadline would still be open */
    bool known;              /* the server's idle timeout is hinted or learned: a request that cannot be replayed
                              * may use the connection up to the deadline (else only below safe_idle) */
} tt_pool_deadline_t;

/** How far past its hint a server must have been seen to close connections before deadlines follow it, ms: a
 *  server that closes at its hint but is seen late (a busy machine wakes up late) must not look like one that
 *  keeps connections longer. */
#define TT_POOL_ABOVE_MIN_MS 250

/**
 * How long a connection may stay parked, and why. The smallest of: the pool's idle timeout; the hint minus
 * the margin (at most half the hint), or, when learn_above_hint is on, `above_ms` is at least
 * TT_POOL_ABOVE_MIN_MS past the hint and `above_ms` minus the margin is later than the hint itself, `above_ms`
 * minus the margin; without a hint, the learned timeout minus the sweep allowance (min(hint_margin,
 * learned / 2): a server may close anywhere up to one sweep period after its timeout) plus the margin, at most
 * half of it; what is left of the lifetime. All in ms; cannot fail. Pure; any thread.
 */
tt_pool_deadline_t tt_pool_idle_deadline(const tt_pool_conf_t *c, const tt_pool_known_t *k);

/** Learning above the hint: one per pool (tt_pool_above_observe). */
typedef struct tt_pool_above {
    uint64_t ms;                 /* the youngest close seen from hinted connections this epoch, 0 none */
    uint32_t observed;           /* closes seen this epoch (0: canaries may be made freely to learn) */
    uint64_t suspended_until_ms; /* after a fallback: nothing is learned before this */
} tt_pool_above_t;

/** One close by the server of a parked connection that carried a hint, as the learner above the hint sees it. */
typedef struct tt_pool_above_close {
    uint64_t age_ms;      /* its idle age when the close was seen (for a canary that outlived idle_timeout: that) */
    uint64_t deadline_ms; /* an in-service connection: its parked deadline (idle span) */
    bool canary;          /* kept out of service past its deadline to see when the server closes it */
    bool growth;          /* a canary made while the estimate was in use: a later close raises the estimate */
    bool above_used;      /* an in-service connection whose deadline came from the estimate */
} tt_pool_above_close_t;

/** What a close did to the learner above the hint. */
typedef enum tt_pool_above_outcome {
    TT_ABOVE_NOTHING = 0, /* nothing changed */
    TT_ABOVE_LEARNED,     /* the estimate changed: deadlines follow it */
    TT_ABOVE_FALLBACK,    /* a close earlier than a deadline that came from the estimate: back to the hint, and
                           * nothing learned for LEARN_SUSPEND (tt_pool_above_suspend_ms) */
} tt_pool_above_outcome_t;

/** How long learning above the hint stays off after a fallback, ms. */
extern const uint64_t tt_pool_above_suspend_ms;

/**
 * Applies one close to `a` (the caller's) at `now_ms` (the caller's clock, ms): ignored while suspended; an
 * in-service connection that used the estimate and closed before its deadline is a fallback (estimate dropped,
 * learning suspended, `observed` reset); a canary's close is an observation: the estimate becomes the youngest
 * close seen, except that a growth canary closing later than the estimate raises it. Returns what changed.
 * Pure; any thread.
 */
tt_pool_above_outcome_t tt_pool_above_observe(tt_pool_above_t *a, const tt_pool_above_close_t *cl, uint64_t now_ms);

typedef struct tt_pool tt_pool_t;
typedef struct tt_pool_waiter tt_pool_waiter_t;

/** Outcome of tt_pool_acquire() or of a waiter's callback. */
typedef enum tt_pool_status {
    TT_POOL_READY,     /* here is a connection (u->requests > 0: reused) */
    TT_POOL_PENDING,   /* the waiter's callback will be called */
    TT_POOL_FAILED,    /* a new connection could not be opened (err says why) */
    TT_POOL_EXHAUSTED, /* max_connections reached and the queue is full, or the queue timeout passed */
    TT_POOL_DOWN,      /* the server is marked down */
} tt_pool_status_t;

/** Called once for a PENDING acquire: READY with `u`, or FAILED / EXHAUSTED / DOWN with u NULL. The waiter is
 *  already unlinked from every pool structure when this runs, so the callee may free it, acquire again (on this
 *  pool or another) or do anything else; the pool never calls it twice. */
typedef void (*tt_pool_cb)(tt_pool_waiter_t *w, tt_upconn_t *u, tt_pool_status_t st, tt_up_err_t err);

/** A request waiting for (or asking for) a connection; embed it in the request's state. Its owner keeps it alive
 *  until the callback ran or tt_pool_cancel() returned (both leave the pool holding no pointer to it). */
struct tt_pool_waiter {
    tt_pool_cb cb;
    bool fresh_only;            /* never a parked connection (`reuse = safe` first requests, replays) */
    bool replay;                /* with fresh_only: it is a replay (for the open reason) */
    bool not_replayable;        /* only a connection whose server's idle timeout is known, or one idle < safe_idle */
    bool may_probe;             /* replayed on a new connection if its connection was closed before any response
                                 * byte: it may go on one kept past its deadline (canary_requests) */
    const char *label;          /* route prefix, for leak reports; static or outliving the checkout */
    tt_pool_open_t open_reason; /* out: TT_OPEN_REUSED, or why a new connection was opened (set with READY,
                                 * PENDING or the callback) */
    bool canary;                /* out: the connection was past its deadline (a request canary) */
    uint64_t waited_ms;         /* out: how long it waited for a connection finishing an exchange (reuse_wait) */
    /* private */
    tt_tq_entry_t _q;
    tt_pool_t *_pool;
    tt_upconn_t *_connecting;
    uint64_t _since_ms;
    bool _waiting;       /* in the queue of waiters for room (max_connections) */
    bool _reuse_waiting; /* in the queue of waiters for a connection finishing an exchange (reuse_wait) */
};

/** Creates the pool of server `addr` (its text `name`) for one worker; metrics go to `m`. `conf` is copied. */
tt_pool_t *tt_pool_new(tt_loop_t *loop, tt_bufpool_t *bufs, tt_h1_response_t *res, const tt_pool_conf_t *conf,
                       const tt_addr_t *addr, const char *name, tt_pool_metrics_t *m);
/**
 * A reload kept this pool's server: from now on the pool follows `conf` (copied: parked connections stay, their
 * deadlines follow the new settings from their next park; the queue timeout applies to requests queued from now on)
 * and counts into `m`, which starts from the values of the old shard (the caller's worker is the only writer of
 * both). Owning worker only.
 */
void tt_pool_rebind(tt_pool_t *p, const tt_pool_conf_t *conf, tt_pool_metrics_t *m);
/**
 * The server's name now resolves to the `n` addresses of `addrs` (copied; n > 0, else nothing changes). New
 * connections keep going to the address they went to while it is still in the set (as HAProxy does), else to the
 * first of `addrs`, and a server marked down is given its new address at once (health starts again). Connections to
 * addresses not in the set are retired at their next idle moment, reason dns_changed: parked ones (and canaries)
 * now, busy ones when their exchange ends (tt_pool_can_park), never mid-exchange. Without a call the pool uses the
 * one address it was made with. Owning worker only.
 */
void tt_pool_set_addrs(tt_pool_t *p, const tt_addr_t *addrs, size_t n);
/**
 * Makes the pool's new connections speak TLS with `tls` (not owned). The pool keeps the latest resumable
 * session and offers it to every new connection, so that reconnects cost a resumed handshake.
 */
void tt_pool_set_tls(tt_pool_t *p, tt_tls_client_t *tls);
/** Closes every connection (reason shutdown) and frees the pool; no waiter may remain. */
void tt_pool_free(tt_pool_t **p);

/**
 * Gets a connection for one exchange. READY: `*out` is checked out to the caller (reused: the most
 * recently parked one that passed the deadline, half-deadline and peek checks; for a `may_probe` request with
 * none in service, the youngest kept past its deadline, see canary_requests). PENDING: a connect started,
 * the request was queued for room, or (a `not_replayable` request with no safe parked connection while
 * others are busy) it waits at most tt_pool_reuse_wait_ms for one finishing an exchange, then a connect
 * starts; `w->cb` will be called. FAILED / EXHAUSTED / DOWN: nothing to wait for. A checked-out connection
 * must come back through tt_pool_release or tt_pool_discard.
 */
tt_pool_status_t tt_pool_acquire(tt_pool_t *p, tt_pool_waiter_t *w, tt_upconn_t **out, tt_up_err_t *err);
/**
 * How long a non-replayable request waits for a connection finishing an exchange (ms): min(reuse_wait,
 * max(TT_POOL_REUSE_WAIT_MIN_MS, 2 x srtt + 4 x rttvar)), reuse_wait itself before the first sample, 0 when
 * reuse_wait is 0. An exchange already under way ends within about one round trip; waiting longer than that
 * for it buys nothing a new connection would not. Pure; any thread.
 */
uint64_t tt_pool_reuse_wait_ms(const tt_pool_conf_t *c, const tt_pool_rtt_t *r);
#define TT_POOL_REUSE_WAIT_MIN_MS 2

/** Gives up a PENDING acquire (the client left): no callback follows; a connect in progress goes on and parks
 *  its connection. A no-op for a waiter that is not pending (never acquired, or already called back). */
void tt_pool_cancel(tt_pool_waiter_t *w);
/** Returns a connection after its exchange completed: parked when tt_pool_can_park allows, else closed. */
void tt_pool_release(tt_pool_t *p, tt_upconn_t *u);
/** Closes a checked-out connection (its exchange failed) with `reason`. */
void tt_pool_discard(tt_pool_t *p, tt_upconn_t *u, tt_pool_retire_t reason);
/** Takes a checked-out connection out of the pool for good (counted as retired, reason TT_RETIRE_TUNNEL): a 101
 *  turned it into a tunnel (RFC 9110 7.8), which can never carry another exchange. The caller owns it from now
 *  on and closes it with tt_upconn_close(); it no longer counts against max_connections. */
void tt_pool_detach(tt_pool_t *p, tt_upconn_t *u);
/** True while the server is marked down (consecutive connect failures, until a probe connect succeeds). */
bool tt_pool_is_down(const tt_pool_t *p);
/**
 * Passive health shared with another client of the same server (its HTTP/2 pool, h2pool.c), so that one server has
 * one health whatever the protocol: a connect of that client succeeded (`ok`: its fails go back to 0, a server marked
 * down is up again) or failed (`tls_error`, static text or NULL, is logged for the first failure of a streak; it
 * counts toward max_fails like a failed HTTP/1.1 connect, with the same metrics and log lines). Owning worker only.
 */
void tt_pool_health_report(tt_pool_t *p, bool ok, const char *tls_error, bool tls_verify_failed);

/** What a prober did when asked for a probe (tt_pool_probe_fn). */
typedef enum tt_pool_probe {
    TT_PROBE_DECLINED, /* not its server now (an `auto` server that answers http/1.1): the pool connects itself */
    TT_PROBE_STARTED,  /* under way: tt_pool_probe_done tells the outcome */
    TT_PROBE_FAILED,   /* the connect failed at once: counted as a failed probe */
} tt_pool_probe_t;

/** Starts a probe connect of a server marked down, on behalf of `data`'s client of it; never calls back into the
 *  pool before it returns. */
typedef tt_pool_probe_t (*tt_pool_probe_fn)(void *data);

/** While the server is marked down, the probe connect is asked of `fn` (a server spoken to over HTTP/2 is probed
 *  with an HTTP/2 connection, which counts as alive at the server's first SETTINGS) rather than made by the pool.
 *  Replaces the prober set before (a reload's new HTTP/2 pool): its probe under way is forgotten and the next one
 *  armed after the current backoff. Owning worker only. */
void tt_pool_set_prober(tt_pool_t *p, tt_pool_probe_fn fn, void *data);
/** Removes the prober `data` when it is the one set (its client is freed); a probe of it under way is forgotten
 *  and the next one armed after the current backoff. A no-op when another prober took over. Owning worker only. */
void tt_pool_clear_prober(tt_pool_t *p, void *data);
/** The probe started by prober `data` ended: alive (`ok`, the server is up again and the pool's queue is served) or
 *  not (a failed probe: a longer backoff, `tls_error` as tt_pool_health_report). Ignored when no probe of `data` is
 *  under way. Owning worker only. */
void tt_pool_probe_done(tt_pool_t *p, void *data, bool ok, const char *tls_error, bool tls_verify_failed);
/** Connections checked out or connecting now (least_conn balancing). */
uint32_t tt_pool_active(const tt_pool_t *p);
/** Stops the pool: closes parked connections; busy ones close when released. */
void tt_pool_stop(tt_pool_t *p);

#endif
