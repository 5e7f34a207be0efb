/* proxy.c -- reverse proxy: forward a request, stream both ways, replay a stale reuse, name every 5xx */
#include "handlers/proxy.h"
#include "client/h2pool.h"
#include "core/log.h"
#include "handlers/forward.h"
#include "handlers/reqbuf.h"
#include "http/worker.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* ---- shared state ---- */

/* What one upstream counts in one worker. */
typedef struct proxy_metrics {
    tt_counter_t requests;
    tt_counter_t replays[TT_CAUSE__COUNT];
    tt_counter_t next_server[TT_CAUSE__COUNT];
    tt_counter_t generated[TT_CAUSE__COUNT];
    tt_counter_t buffered;      /* requests whose content was read whole before an upstream was taken */
    tt_counter_t buffer_files;  /* ... of which the content went to a temporary file */
    tt_counter_t h2_replays[4]; /* HTTP/2 upstreams: streams replayed, by h2_replay_t */
} proxy_metrics_t;

/* Why a stream to an HTTP/2 upstream was replayed on another connection. */
typedef enum h2_replay { H2_REPLAY_GOAWAY, H2_REPLAY_REFUSED, H2_REPLAY_PING, H2_REPLAY_SEND } h2_replay_t;
static const char *const h2_replay_names[] = {"goaway", "refused_stream", "ping_timeout", "send_timeout"};

/* A worker's pool with the number of generations' proxy states that hold it: a reload that keeps a server hands
 * its pool to the new generation, and the old one may still serve requests through it until it is released. */
typedef struct pool_ref {
    tt_pool_t *pool;
    int holders;
    tt_dns_name_t *dns;   /* the name its addresses follow: the newest generation's that holds it; NULL: fixed */
    uint64_t dns_version; /* the version of `dns` the pool has (0: none yet) */
} pool_ref_t;

/* One worker's proxy state, shared by its proxy routes. */
typedef struct proxy_worker {
    tt_worker_t *w;
    tt_proxy_registry_t *reg;
    tt_pool_t **pools;     /* one per server of every upstream */
    tt_h2pool_t **h2pools; /* the same servers' HTTP/2 pools; NULL for a server spoken to with HTTP/1.1 */
    pool_ref_t **prefs;    /* the same pools with their holders */
    proxy_metrics_t **m;   /* per upstream: its row of counters (a newer generation's, once a reload kept it) */
    uint32_t *rr;          /* round-robin position per upstream */
    int refs;              /* routes using it */
    tt_io_t dns_io;        /* eventfd the resolver wakes after a name's addresses changed; fd -1: no name followed */
} proxy_worker_t;

struct tt_proxy_registry {
    tt_proxy_registry_t *prev; /* the generation before, while the workers apply this one (its pools are adopted) */
    tt_upstream_conf_t *ups;
    size_t nups;
    size_t nservers;
    uint32_t nworkers;
    tt_resolver_t *resolver;   /* NULL: no server follows its name (tt_proxy_registry_watch) */
    proxy_worker_t **workers;  /* [nworkers], each touched by its own thread only */
    tt_pool_metrics_t *pool_m; /* [nworkers][nservers] */
    tt_h2pool_metrics_t *h2_m; /* [nworkers][nservers] */
    proxy_metrics_t *proxy_m;  /* [nworkers][nups] */
};

static const char *const cause_names[TT_CAUSE__COUNT] = {
    [TT_CAUSE_NONE] = "-",
    [TT_CAUSE_CONNECT_REFUSED] = "connect_refused",
    [TT_CAUSE_CONNECT_TIMEOUT] = "connect_timeout",
    [TT_CAUSE_CONNECT_ERROR] = "connect_error",
    [TT_CAUSE_RESET_BEFORE_RESPONSE] = "reset_before_response",
    [TT_CAUSE_CLOSED_BEFORE_RESPONSE] = "closed_before_response",
    [TT_CAUSE_RESPONSE_TIMEOUT] = "response_timeout",
    [TT_CAUSE_SEND_TIMEOUT] = "send_timeout",
    [TT_CAUSE_INVALID_RESPONSE] = "invalid_response",
    [TT_CAUSE_TLS_ERROR] = "tls_error",
    [TT_CAUSE_ALL_SERVERS_DOWN] = "all_servers_down",
    [TT_CAUSE_POOL_EXHAUSTED] = "pool_exhausted",
    [TT_CAUSE_PING_TIMEOUT] = "ping_timeout",
    [TT_CAUSE_GRPC_DEADLINE] = "grpc_deadline",
};

static const int cause_status[TT_CAUSE__COUNT] = {
    [TT_CAUSE_CONNECT_REFUSED] = 502,       [TT_CAUSE_CONNECT_TIMEOUT] = 504,        [TT_CAUSE_CONNECT_ERROR] = 502,
    [TT_CAUSE_RESET_BEFORE_RESPONSE] = 502, [TT_CAUSE_CLOSED_BEFORE_RESPONSE] = 502, [TT_CAUSE_RESPONSE_TIMEOUT] = 504,
    [TT_CAUSE_SEND_TIMEOUT] = 504,          [TT_CAUSE_INVALID_RESPONSE] = 502,       [TT_CAUSE_TLS_ERROR] = 502,
    [TT_CAUSE_ALL_SERVERS_DOWN] = 503,      [TT_CAUSE_POOL_EXHAUSTED] = 503,         [TT_CAUSE_PING_TIMEOUT] = 502,
    [TT_CAUSE_GRPC_DEADLINE] = 504,
};

const char *tt_proxy_cause_name(tt_proxy_cause_t c)
{
    return (unsigned)c < TT_CAUSE__COUNT ? cause_names[c] : "unknown";
}

static tt_proxy_cause_t cause_of(tt_up_err_t e)
{
    switch (e) {
    case TT_UP_CONNECT_REFUSED: return TT_CAUSE_CONNECT_REFUSED;
    case TT_UP_CONNECT_TIMEOUT: return TT_CAUSE_CONNECT_TIMEOUT;
    case TT_UP_CONNECT_ERROR: return TT_CAUSE_CONNECT_ERROR;
    case TT_UP_RESET: return TT_CAUSE_RESET_BEFORE_RESPONSE;
    case TT_UP_CLOSED: return TT_CAUSE_CLOSED_BEFORE_RESPONSE;
    case TT_UP_RESPONSE_TIMEOUT: return TT_CAUSE_RESPONSE_TIMEOUT;
    case TT_UP_READ_TIMEOUT: return TT_CAUSE_RESPONSE_TIMEOUT;
    case TT_UP_SEND_TIMEOUT: return TT_CAUSE_SEND_TIMEOUT;
    case TT_UP_INVALID: return TT_CAUSE_INVALID_RESPONSE;
    case TT_UP_TLS_ERROR: return TT_CAUSE_TLS_ERROR;
    default: return TT_CAUSE_CONNECT_ERROR;
    }
}

/* ---- one proxied request ---- */

typedef struct proxy_req {
    tt_req_t *req;
    proxy_worker_t *pw;
    const tt_proxy_conf_t *pc;
    const tt_upstream_conf_t *uc;
    proxy_metrics_t *m;
    tt_pool_waiter_t waiter;
    size_t server; /* index in uc->servers */
    tt_pool_t *pool;
    tt_upconn_t *up;
    tt_buf_t head;       /* the upstream request head, kept for a replay */
    tt_buf_t held;       /* request content held (replay buffer, or waiting for a connection) */
    tt_buf_t trailers;   /* request trailers waiting for the connection */
    uint64_t body_total; /* content bytes received from the client */
    uint64_t tried;      /* bit per server tried */
    tt_proxy_cause_t cause;
    uint32_t replays;
    uint32_t retries;    /* next-server attempts */
    uint64_t up_idle_ms; /* idle time of the connection before this reuse */
    uint32_t up_req_no;
    uint64_t up_age_ms;
    uint64_t up_id;
    tt_addr_t up_addr; /* the address the current connection went to ($upstream_addr) */
    /* Timings of the current exchange, loop clock in us (0: not yet): the request begun on a connection, the
     * response head, the response's end. The connect itself is timed by the connection (tt_upconn_t.handshake_us). */
    uint64_t t_begin_us;
    uint64_t t_first_byte_us;
    uint64_t t_done_us;
    bool replayable; /* idempotent or Idempotency-Key */
    bool held_all;   /* `held` still has every content byte so far */
    bool chunked_up; /* content goes upstream chunked */
    bool body_done;  /* the client's content is complete */
    bool sent_end;   /* the request end went upstream */
    bool reused;
    bool response_started; /* a head went to the client */
    bool is_head;
    bool client_paused; /* client content paused by us */
    bool hold;          /* the request's last byte waits for the client's end of stream (an HTTP/2 client) */
    bool has_tail;      /* `tail` holds that byte */
    char tail;
    bool upgrade;        /* the request asks to switch protocols and the route lets it (Upgrade went upstream) */
    tt_tunnel_t *tunnel; /* after a 101: the tunnel between the client connection and `up` (which left the pool) */
    bool h2_tunnel;      /* an HTTP/2 extended CONNECT (RFC 8441): after the 101 the stream carries the bytes */
    bool streaming;      /* h2_tunnel after the 101: `up` is in stream mode, out of the pool */
    bool done;           /* finished (pr_finish): the client request is answered or gone */
    bool buffering;      /* request_buffering: the content is read whole into `body` before a server is picked */
    tt_reqbuf_t body;    /* with `buffering`: the content (reqbuf.h); always initialised, freed by pr_finish */
    uint64_t body_off;   /* with `buffering`: content bytes sent to the current connection */
    char *client;        /* for the route's response rules: "scheme\0authority\0remote_addr\0", in client_buf or
                            owned when longer; NULL: none */
    char client_buf[160];
    tt_defer_t free_later;
    uint64_t attempt_us;      /* CLOCK_MONOTONIC us when the current attempt began (connect start, or the reuse) */
    tt_accesslog_up_t up_log; /* what the access log shows of the upstream side (req->log_up) */
    /* HTTP/2 upstreams */
    tt_h2pool_t *h2pool;    /* the picked server's HTTP/2 pool, NULL when it is spoken to with HTTP/1.1 */
    tt_h2pool_stream_t h2s; /* the stream's slot and events */
    tt_h2c_t *h2c;          /* the connection of the current stream; NULL when none */
    int32_t h2id;           /* its stream id */
    tt_buf_t resp_trailers; /* the response's trailer fields, filtered, until the stream ends */
    tt_timer_t resp_timer;  /* HTTP/2 upstream: the request sent -> the response head (response_timeout) */
    tt_timer_t deadline;    /* gRPC: grpc-timeout from the request's start */
    bool grpc;              /* content-type: application/grpc: tether's own errors are gRPC-shaped */
    bool h2_content;        /* the current stream carries request content (DATA frames follow its HEADERS) */
    bool on_h2;             /* the last attempt was a stream on an HTTP/2 connection (the log's up_open) */
    char log[320];
} proxy_req_t;

/* Upstream timings are finer than the loop's millisecond clock: a connect or an answer on a LAN takes less than
 * one, and would read 0 like a reused connection. One vDSO clock read per event. */
static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The time since the current attempt began, us. */
static int64_t attempt_elapsed(const proxy_req_t *pr)
{
    return (int64_t)(mono_us() - pr->attempt_us);
}

/* The metrics of the server the request uses, in this worker's row. */
static tt_pool_metrics_t *pool_metrics(const proxy_req_t *pr)
{
    tt_proxy_registry_t *reg = pr->pw->reg;
    return &reg->pool_m[pr->pw->w->id * reg->nservers + pr->uc->_first_server + pr->server];
}

static void pr_free_cb(tt_defer_t *d)
{
    proxy_req_t *pr = tt_container_of(d, proxy_req_t, free_later);
    if (pr->client != pr->client_buf) free(pr->client);
    free(pr);
}

/* Ends the proxied request: its client request is answered (or gone) and its upstream connection is back in
 * the pool (or closed). Nothing waits for a connection any more; the buffers go back now and the struct at
 * the end of the turn, so a caller still on the stack may read it. Idempotent. */
static void pr_finish(proxy_req_t *pr)
{
    if (pr->done) return;
    tt_worker_t *w = pr->pw->w;
    TT_BUG_ON(pr->up != NULL);  /* a connection is always released or discarded first */
    TT_BUG_ON(pr->h2c != NULL); /* a stream always ended or cancelled first */
    pr->done = true;
    tt_pool_cancel(&pr->waiter);
    tt_h2pool_cancel(&pr->h2s);
    tt_timer_disarm(w->loop, &pr->resp_timer);
    tt_timer_disarm(w->loop, &pr->deadline);
    tt_buf_release(&pr->resp_trailers, &w->bufs);
    tt_buf_release(&pr->head, &w->bufs);
    tt_buf_release(&pr->held, &w->bufs);
    tt_buf_release(&pr->trailers, &w->bufs);
    tt_reqbuf_free(&pr->body, &w->bufs); /* the temporary file closes with the exchange, on every path */
    tt_loop_defer(w->loop, &pr->free_later, pr_free_cb);
}

static void update_log(proxy_req_t *pr)
{
    tt_accesslog_up_t *l = &pr->up_log;
    l->addr = pr->up_id ? &pr->up_addr : pr->pool != NULL ? &pr->uc->servers[pr->server].addr : NULL;
    l->reused = pr->reused;
    l->cause = pr->cause != TT_CAUSE_NONE ? tt_proxy_cause_name(pr->cause) : NULL;
    if (!tt_accesslog_wants_extra(&pr->pw->w->alog)) return; /* a formatted line nobody reads costs 4 % of a request */
    char as[TT_ADDR_STRLEN] = "-";
    if (pr->pool != NULL) snprintf(as, sizeof(as), "%s", pr->uc->servers[pr->server].name);
    int n = snprintf(pr->log, sizeof(pr->log),
                     "upstream=%s up_addr=%s up_conn=%llu up_reused=%d up_idle_ms=%llu up_req=%u up_age_ms=%llu "
                     "up_open=%s up_canary=%d up_wait_ms=%llu retries=%u replays=%u cause=%s",
                     pr->uc->name, as, (unsigned long long)pr->up_id, pr->reused ? 1 : 0,
                     (unsigned long long)pr->up_idle_ms, pr->up_req_no, (unsigned long long)pr->up_age_ms,
                     pr->on_h2   ? "h2"
                     : pr->up_id ? tt_pool_open_name(pr->waiter.open_reason)
                                 : "-",
                     pr->waiter.canary ? 1 : 0, (unsigned long long)pr->waiter.waited_ms, pr->retries, pr->replays,
                     tt_proxy_cause_name(pr->cause));
    pr->req->log_extra = tt_str(pr->log, n > 0 ? (size_t)TT_MIN((size_t)n, sizeof(pr->log) - 1) : 0);
}

/* Answers the client with tether's own error and ends the request. */
/* gRPC status codes (grpc/doc/statuscodes.md) tether answers with. */
#define GRPC_DEADLINE_EXCEEDED  4
#define GRPC_RESOURCE_EXHAUSTED 8
#define GRPC_UNAVAILABLE        14

/* A gRPC request's error: HTTP 200, content-type application/grpc, no message, and grpc-status and grpc-message as
 * trailers (gRPC over HTTP/2), so that a gRPC client reads the cause instead of a transport error. */
static void respond_grpc(tt_req_t *req, int code, const char *message)
{
    char f[256];
    int n = snprintf(f, sizeof(f), "grpc-status: %d\r\ngrpc-message: %s\r\n", code, message);
    tt_resp_t r;
    tt_resp_init(&r, 200);
    r.fields = TT_STR("Content-Type: application/grpc\r\n");
    tt_req_respond_head(req, &r);
    tt_req_finish(req, tt_str(f, (size_t)TT_MIN((size_t)n, sizeof(f) - 1)));
}

static void generate_error(proxy_req_t *pr, tt_proxy_cause_t cause)
{
    pr->cause = cause;
    tt_counter_add(&pr->m->generated[cause], 1);
    update_log(pr);
    if (pr->grpc) {
        int code = cause == TT_CAUSE_GRPC_DEADLINE    ? GRPC_DEADLINE_EXCEEDED
                   : cause == TT_CAUSE_POOL_EXHAUSTED ? GRPC_RESOURCE_EXHAUSTED
                                                      : GRPC_UNAVAILABLE;
        char msg[96];
        snprintf(msg, sizeof(msg), "tether: upstream %s", tt_proxy_cause_name(cause));
        respond_grpc(pr->req, code, msg);
        pr_finish(pr);
        return;
    }
    char f[96];
    int n = pr->uc->expose_cause ? snprintf(f, sizeof(f), "X-Tether-Cause: %s\r\n", tt_proxy_cause_name(cause)) : 0;
    tt_req_respond_text(pr->req, cause_status[cause], tt_str(f, (size_t)n));
    pr_finish(pr);
}

/* ---- choosing a server ---- */

static bool pick_server(proxy_req_t *pr, bool *all_down)
{
    const tt_upstream_conf_t *uc = pr->uc;
    size_t n = uc->nservers, best = SIZE_MAX;
    uint32_t best_active = UINT32_MAX;
    uint32_t start = pr->pw->rr[uc->_index]++;
    *all_down = true;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        tt_pool_t *p = pr->pw->pools[uc->_first_server + i];
        if (tt_pool_is_down(p)) continue;
        *all_down = false;
        if (pr->tried & (1ull << (i % 64))) continue;
        if (uc->balance == TT_BALANCE_ROUND_ROBIN) {
            best = i;
            break;
        }
        tt_h2pool_t *hp = pr->pw->h2pools[uc->_first_server + i];
        const tt_proxy_registry_t *reg = pr->pw->reg;
        uint32_t a = hp != NULL && !tt_h2pool_no_h2(hp) /* HTTP/2: the streams in flight, this worker's */
                         ? (uint32_t)LOAD(reg->h2_m[pr->pw->w->id * reg->nservers + uc->_first_server + i].streams)
                         : tt_pool_active(p);
        if (a < best_active) {
            best_active = a;
            best = i;
        }
    }
    if (best == SIZE_MAX) return false;
    pr->server = best;
    pr->pool = pr->pw->pools[uc->_first_server + best];
    pr->h2pool = pr->pw->h2pools[uc->_first_server + best];
    pr->tried |= 1ull << (best % 64);
    return true;
}

static void acquire(proxy_req_t *pr, bool fresh_only);
static void begin_exchange(proxy_req_t *pr, tt_upconn_t *u);

/* The current server cannot take the request: the next one, or the error. */
static void next_server(proxy_req_t *pr, tt_proxy_cause_t cause)
{
    bool all_down;
    if (pick_server(pr, &all_down)) {
        pr->retries++;
        tt_counter_add(&pr->m->next_server[cause], 1);
        acquire(pr, false);
        return;
    }
    generate_error(pr, all_down ? TT_CAUSE_ALL_SERVERS_DOWN : cause);
}

static void waiter_cb(tt_pool_waiter_t *w, tt_upconn_t *u, tt_pool_status_t st, tt_up_err_t err)
{
    proxy_req_t *pr = tt_container_of(w, proxy_req_t, waiter);
    switch (st) {
    case TT_POOL_READY: begin_exchange(pr, u); return;
    case TT_POOL_FAILED: next_server(pr, cause_of(err)); return; /* nothing was sent: safe for any method */
    case TT_POOL_DOWN: next_server(pr, TT_CAUSE_ALL_SERVERS_DOWN); return;
    case TT_POOL_EXHAUSTED: generate_error(pr, TT_CAUSE_POOL_EXHAUSTED); return;
    case TT_POOL_PENDING: return;
    }
}

static void h2_acquire(proxy_req_t *pr);

static void acquire(proxy_req_t *pr, bool fresh_only)
{
    /* a request to switch protocols needs HTTP/1.1 (RFC 9113 8.6): protocol = h2 refused it, auto takes HTTP/1.1 */
    if (pr->h2pool != NULL && !pr->upgrade && (pr->uc->protocol == TT_UP_PROTO_H2 || !tt_h2pool_no_h2(pr->h2pool))) {
        h2_acquire(pr);
        return;
    }
    pr->up_log.connect_us = pr->up_log.header_us = pr->up_log.response_us = -1; /* the log shows the last attempt */
    pr->waiter.cb = waiter_cb;
    /* reuse = safe: a new client connection's first request opens its own upstream connection, so the
     * client's own retry covers any residual race (HAProxy's http-reuse safe). */
    pr->waiter.fresh_only = fresh_only || (pr->uc->reuse_safe && pr->req->req_no == 1);
    pr->waiter.replay = fresh_only;
    pr->waiter.not_replayable = !(pr->replayable && pr->held_all);
    /* a request canary must be replayable when it meets a closed connection: see up_on_error */
    pr->waiter.may_probe = !pr->waiter.not_replayable && pr->uc->replay && pr->replays == 0;
    pr->waiter.label = pr->pc->route;
    tt_upconn_t *u;
    tt_up_err_t err;
    tt_pool_status_t st = tt_pool_acquire(pr->pool, &pr->waiter, &u, &err);
    waiter_cb(&pr->waiter, u, st, err);
}

/* ---- request upstream ---- */

/*
 * Sends request bytes upstream. An HTTP/2 client's content is framed by DATA frames and END_STREAM, which may still
 * contradict the Content-Length sent upstream (content-length: 0 and then DATA, or more DATA than announced: the
 * stream is reset, RFC 9113 8.1.1). So the last byte of the request so far is held back until the stream has
 * ended (send_end): an upstream never holds a complete request whose client framing was refused.
 */
static void up_send(proxy_req_t *pr, const char *data, size_t len, bool *full)
{
    if (len == 0) return;
    if (pr->hold && !pr->body_done) {
        if (pr->has_tail) *full |= !tt_upconn_send(pr->up, &pr->tail, 1);
        pr->tail = data[len - 1];
        pr->has_tail = true;
        len--;
    }
    if (len) *full |= !tt_upconn_send(pr->up, data, len);
}

static void send_chunk(proxy_req_t *pr, const char *data, size_t len, bool *full)
{
    if (pr->chunked_up) {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        *full |= !tt_upconn_send(pr->up, size, (size_t)n);
        *full |= !tt_upconn_send(pr->up, data, len);
        *full |= !tt_upconn_send(pr->up, TT_LIT("\r\n"));
    } else {
        up_send(pr, data, len, full);
    }
}

static void h2_send_end(proxy_req_t *pr);

static void send_end(proxy_req_t *pr)
{
    if (pr->h2c != NULL) {
        h2_send_end(pr);
        return;
    }
    if (pr->sent_end || !pr->body_done || pr->up == NULL) return;
    if (pr->has_tail) tt_upconn_send(pr->up, &pr->tail, 1);
    pr->has_tail = false;
    if (pr->chunked_up) {
        tt_upconn_send(pr->up, TT_LIT("0\r\n"));
        if (pr->trailers.len) tt_upconn_send(pr->up, tt_buf_data(&pr->trailers), pr->trailers.len);
        tt_upconn_send(pr->up, TT_LIT("\r\n"));
    }
    pr->sent_end = true;
    tt_upconn_end_request(pr->up);
}

static void pause_client(proxy_req_t *pr, bool pause)
{
    if (pr->client_paused != pause) {
        pr->client_paused = pause;
        tt_req_pause_body(pr->req, pause);
    }
}

static const tt_upconn_ops_t up_ops;

/* The buffered request content could not be read back from its file (`err`, -errno): the exchange is over. The
 * caller has let go of the upstream side; the client gets a 500, or a cut response when one began. */
static void content_file_failed(proxy_req_t *pr, int64_t err)
{
    tt_log(TT_LOG_ERROR, "route %s: request content file: %s: 500", pr->pc->route, strerror((int)-err));
    if (pr->response_started)
        tt_req_fail(pr->req);
    else
        tt_req_respond_text(pr->req, 500, TT_STR_NULL);
    pr_finish(pr);
}

/* Request buffering: sends the held content from body_off until the connection's output is full (on_drain calls
 * again) or all is out, then the request's end. A content file that cannot be read back is tether's own failure:
 * the connection goes (its request incomplete) and the client gets a 500, logged. */
static void send_buffered(proxy_req_t *pr)
{
    char scratch[16384];
    while (pr->up != NULL && !pr->sent_end) {
        const char *p = NULL;
        int64_t n = tt_reqbuf_read(&pr->body, pr->body_off, scratch, sizeof(scratch), &p);
        if (n < 0) {
            tt_pool_discard(pr->pool, pr->up, TT_RETIRE_ERROR);
            pr->up = NULL;
            content_file_failed(pr, n);
            return;
        }
        if (n == 0) {
            send_end(pr);
            return;
        }
        pr->body_off += (uint64_t)n;
        if (!tt_upconn_send(pr->up, p, (size_t)n)) return; /* full: on_drain goes on */
    }
}

static void begin_exchange(proxy_req_t *pr, tt_upconn_t *u)
{
    tt_loop_t *loop = pr->pw->w->loop;
    pr->up = u;
    /* Reused: it comes from the park, whether an earlier request ran on it or it was opened for a request that left
     * (or by a health probe) and parked unused. Either way it sat idle, so a close that crosses this request is the
     * keep-alive race and a replayable request is replayed (a connection opened for this request has parked_ms 0). */
    pr->reused = u->requests > 0 || u->parked_ms != 0;
    pr->up_idle_ms = pr->reused ? tt_loop_now(loop) - u->parked_ms : 0;
    pr->up_req_no = u->requests + 1;
    pr->up_age_ms = tt_loop_now(loop) - u->created_ms;
    pr->up_id = u->id;
    pr->up_addr = u->pool.addr;
    /* nginx's $upstream_*_time: from the attempt's start (the connect, when it was opened for this request). */
    uint64_t now_us = mono_us();
    pr->up_log.connect_us = pr->reused ? 0 : (int64_t)u->handshake_us;
    pr->attempt_us = now_us - (uint64_t)pr->up_log.connect_us;
    pr->up_log.header_us = pr->up_log.response_us = -1;
    pr->up_log.status = 0;
    pr->t_begin_us = tt_loop_now_us(loop);
    pr->t_first_byte_us = pr->t_done_us = 0;
    pr->sent_end = false;
    pr->has_tail = false;
    tt_upconn_set_user(u, &up_ops, pr);
    tt_upconn_begin(u, pr->is_head);
    if (pr->upgrade) tt_upconn_expect_upgrade(u);
    update_log(pr);
    bool full = false;
    up_send(pr, tt_buf_data(&pr->head), pr->head.len, &full);
    if (pr->buffering) { /* the whole content is held: from its start (again, for a replay) */
        pr->body_off = 0;
        send_buffered(pr);
        return;
    }
    if (pr->held.len) send_chunk(pr, tt_buf_data(&pr->held), pr->held.len, &full);
    if (!pr->held_all) tt_buf_release(&pr->held, &pr->pw->w->bufs); /* only waiting for the connection: sent now */
    send_end(pr);
    pause_client(pr, full);
}

/* ---- client hooks ---- */

static void h2_cancel(proxy_req_t *pr);

/* The client's content contradicts the Content-Length sent upstream (an HTTP/2 client's DATA, RFC 9113 8.1.1; the
 * stream is reset too): the upstream connection goes, with the request incomplete (its last byte was held), and the
 * client gets a 400 if nothing was answered yet. */
static void refuse_framing(proxy_req_t *pr)
{
    h2_cancel(pr);
    if (pr->up != NULL) tt_pool_discard(pr->pool, pr->up, TT_RETIRE_ERROR);
    pr->up = NULL;
    if (pr->response_started)
        tt_req_fail(pr->req);
    else
        tt_req_respond_text(pr->req, 400, TT_STR_NULL);
    pr_finish(pr);
}

/* Request buffering: holds content as it comes, in memory and then in a temporary file. */
static void buffer_content(proxy_req_t *pr, const char *data, size_t len)
{
    int r = tt_reqbuf_append(&pr->body, &pr->pw->w->bufs, data, len);
    if (r == 1) tt_counter_add(&pr->m->buffer_files, 1);
    if (r >= 0) return;
    tt_log(TT_LOG_ERROR, "route %s: request content to a temporary file in %s: %s: 500", pr->pc->route, pr->body.dir,
           strerror(-r));
    pr->req->log_extra = TT_STR_NULL;
    tt_req_respond_text(pr->req, 500, TT_STR_NULL);
    pr_finish(pr);
}

/* Request buffering: the content is complete and held. It goes upstream with its length (a chunked request is
 * de-chunked: the head got no framing field), so a server is picked and a connection taken only now. */
static void buffered_complete(proxy_req_t *pr)
{
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    if (pr->req->content_length < 0) {
        char line[64];
        int n = snprintf(line, sizeof(line), "Content-Length: %llu\r\n\r\n", (unsigned long long)pr->body.len);
        pr->head.len -= 2; /* before the empty line that ends the head */
        tt_buf_append(&pr->head, bufs, line, (size_t)n);
    }
    bool all_down;
    if (!pick_server(pr, &all_down)) {
        generate_error(pr, TT_CAUSE_ALL_SERVERS_DOWN);
        return;
    }
    update_log(pr);
    acquire(pr, false);
}

static void h2_client_body(proxy_req_t *pr, const char *data, size_t len);

static void client_on_body(tt_req_t *req, const char *data, size_t len)
{
    proxy_req_t *pr = req->ctx;
    if (pr->h2pool != NULL && !pr->buffering && !pr->upgrade && (pr->h2c != NULL || pr->up == NULL)) {
        h2_client_body(pr, data, len);
        return;
    }
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    pr->body_total += len;
    if (pr->hold && pr->body_total > (uint64_t)req->content_length) {
        refuse_framing(pr);
        return;
    }
    if (pr->buffering) {
        buffer_content(pr, data, len);
        return;
    }
    if (pr->held_all && pr->body_total > pr->uc->replay_buffer && pr->up != NULL) {
        pr->held_all = false; /* too large to replay: from now on it only streams */
        tt_buf_release(&pr->held, bufs);
    }
    if (pr->up == NULL) {
        /* No connection yet: hold it, and stop reading once a replay buffer's worth waits. */
        tt_buf_append(&pr->held, bufs, data, len);
        if (pr->held.len >= pr->uc->replay_buffer) pause_client(pr, true);
        if (pr->body_total > pr->uc->replay_buffer) pr->held_all = false;
        return;
    }
    if (pr->held_all) tt_buf_append(&pr->held, bufs, data, len);
    bool full = false;
    send_chunk(pr, data, len, &full);
    if (full) pause_client(pr, true);
}

static void client_on_body_end(tt_req_t *req, tt_str_t trailers)
{
    proxy_req_t *pr = req->ctx;
    if (pr->hold && pr->body_total != (uint64_t)req->content_length) {
        refuse_framing(pr);
        return;
    }
    pr->body_done = true;
    if (pr->buffering) { /* trailers have no place in a Content-Length request: dropped (RFC 9110 6.5.1 allows it) */
        buffered_complete(pr);
        return;
    }
    if (pr->streaming) { /* the client ended its side of the tunnel: the upstream gets FIN after the bytes */
        tt_upconn_shutdown_write(pr->up);
        return;
    }
    if (trailers.n) tt_forward_trailers(trailers, &pr->trailers, &pr->pw->w->bufs); /* RFC 9110 6.5.1 */
    send_end(pr);
}

static void client_on_writable(tt_req_t *req)
{
    proxy_req_t *pr = req->ctx;
    if (pr->up != NULL) tt_upconn_pause(pr->up, false);
    if (pr->h2c != NULL) tt_h2c_pause(pr->h2c, pr->h2id, false);
}

static void client_on_abort(tt_req_t *req)
{
    proxy_req_t *pr = req->ctx;
    if (pr->tunnel != NULL) { /* the client connection closed under the tunnel (drain deadline, shutdown) */
        tt_tunnel_cancel(pr->tunnel);
        pr->tunnel = NULL;
        tt_upconn_close(pr->up); /* out of the pool since its 101 */
    } else if (pr->streaming) {
        tt_upconn_close(pr->up); /* the stream was reset or its connection closed */
    } else if (pr->up != NULL) {
        tt_pool_discard(pr->pool, pr->up, TT_RETIRE_ERROR); /* mid-exchange: never reusable */
    }
    h2_cancel(pr); /* an HTTP/2 upstream's stream is reset; its connection goes on */
    pr->up = NULL;
    req->log_extra = TT_STR_NULL; /* the request is the client connection's from now on (a refusal's log line) */
    req->log_up = NULL;
    pr_finish(pr);
}

static const tt_req_hooks_t client_hooks = {
    .on_body = client_on_body,
    .on_body_end = client_on_body_end,
    .on_writable = client_on_writable,
    .on_abort = client_on_abort,
};

/* ---- upstream callbacks ---- */

/* The tunnel ended: both connections close, the client's with the reason and its access-log line. */
static void tunnel_on_done(tt_tunnel_t *t, tt_tunnel_why_t why, void *data)
{
    proxy_req_t *pr = data;
    (void)t;
    tt_upconn_close(pr->up);
    pr->up = NULL;
    pr->tunnel = NULL;
    static const tt_close_reason_t reasons[] = {
        [TT_TUNNEL_IDLE] = TT_CLOSE_TUNNEL_IDLE,
        [TT_TUNNEL_CLOSED_BY_CLIENT] = TT_CLOSE_TUNNEL_CLOSED_BY_CLIENT,
        [TT_TUNNEL_CLOSED_BY_UPSTREAM] = TT_CLOSE_TUNNEL_CLOSED_BY_UPSTREAM,
    };
    tt_req_close_tunnel(pr->req, reasons[why]);
    pr_finish(pr);
}

/* True when `res` names a protocol to switch to (RFC 9110 15.2.2: a 101 must). */
static bool names_upgrade(const tt_h1_response_t *res)
{
    for (size_t i = 0; i < res->nfields; i++)
        if (tt_str_ieq(res->fields[i].name, TT_LIT("upgrade")) && res->fields[i].value.n > 0) return true;
    return false;
}

/* ---- HTTP/2 extended CONNECT after its 101: the stream's DATA and the upstream connection's bytes ---- */

static void up_on_body(tt_upconn_t *u, const char *data, size_t len);
static void up_on_drain(tt_upconn_t *u);

static void stream_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    proxy_req_t *pr = u->data;
    (void)trailers;
    pr->up = NULL;
    tt_upconn_close(u);
    tt_req_finish(pr->req, TT_STR_NULL); /* END_STREAM after the bytes: the upstream ended the tunnel */
    pr_finish(pr);
}

static void stream_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    proxy_req_t *pr = u->data;
    pr->up = NULL;
    tt_upconn_close(u);
    snprintf(pr->log + strlen(pr->log), sizeof(pr->log) - strlen(pr->log), " tunnel_end=%s",
             err == TT_UP_READ_TIMEOUT ? "tunnel_idle" : "tunnel_closed_by_upstream");
    pr->req->log_extra = tt_str(pr->log, strlen(pr->log));
    tt_req_fail(pr->req); /* RST_STREAM: the tunnel did not end cleanly (or went idle) */
    pr_finish(pr);
}

static const tt_upconn_ops_t stream_ops = {
    .on_body = up_on_body,
    .on_done = stream_on_done,
    .on_error = stream_on_error,
    .on_drain = up_on_drain,
};

/* The fields of a 101 that an HTTP/2 client gets with its 200 (RFC 8441 5): not Sec-WebSocket-Accept, which
 * answers the key tether made up. */
static void h2_switch_fields(const tt_h1_response_t *res, tt_buf_t *f, tt_bufpool_t *bufs)
{
    tt_buf_t all = {0};
    tt_forward_response_fields(res, &all, bufs);
    const char *p = all.len ? tt_buf_data(&all) : NULL, *end = p + all.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!tt_str_ieq(tt_str(p, TT_MIN((size_t)(next - p), (size_t)21)), TT_LIT("sec-websocket-accept:")))
            tt_buf_append(f, bufs, p, (size_t)(next - p));
        p = next;
    }
    tt_buf_release(&all, bufs);
}

static void up_on_switch_h2(proxy_req_t *pr, tt_upconn_t *u, const tt_h1_response_t *res)
{
    tt_worker_t *w = pr->pw->w;
    if (!names_upgrade(res)) {
        tt_pool_discard(pr->pool, u, TT_RETIRE_ERROR);
        pr->up = NULL;
        generate_error(pr, TT_CAUSE_INVALID_RESPONSE);
        return;
    }
    tt_buf_t f = {0};
    h2_switch_fields(res, &f, &w->bufs);
    tt_resp_t r;
    tt_resp_init(&r, 200);
    r.fields = f.len ? tt_str(tt_buf_data(&f), f.len) : TT_STR_NULL;
    r.content_length = -1; /* the stream stays open: its DATA are the tunnel's */
    tt_pool_detach(pr->pool, u);
    pr->streaming = true;
    pr->response_started = true;
    update_log(pr);
    tt_req_respond_head(pr->req, &r);
    tt_buf_release(&f, &w->bufs);
    tt_upconn_set_user(u, &stream_ops, pr);
    tt_upconn_to_stream(u, pr->pc->tunnel_idle_ms);
    if (pr->body_done) tt_upconn_shutdown_write(u); /* the client already ended its side */
}

/* A 101 to a request that asked for it: the connection left the exchange (TT_UPCONN_TUNNEL). It becomes a tunnel
 * with the client connection, and leaves the pool for good; or, when that cannot be (the 101 came before the whole
 * request was sent, names no protocol, or the client connection cannot switch), it is closed and the client gets a
 * 502 invalid_response. */
static void up_on_switch(proxy_req_t *pr, tt_upconn_t *u, const tt_h1_response_t *res)
{
    tt_worker_t *w = pr->pw->w;
    tt_buf_t f = {0};
    pr->tunnel = NULL;
    if (pr->body_done && tt_upconn_request_sent(u) && names_upgrade(res)) {
        tt_forward_upgrade_response_fields(res, &f, &w->bufs);
        pr->tunnel = tt_tunnel_new(w->loop, &w->bufs, pr->pc->tunnel_idle_ms, tunnel_on_done, pr);
        pr->response_started = true;
        update_log(pr);
        if (!tt_req_upgrade(pr->req, tt_str(tt_buf_data(&f), f.len), pr->tunnel)) {
            tt_tunnel_cancel(pr->tunnel);
            pr->tunnel = NULL;
            pr->response_started = false;
        }
    }
    tt_buf_release(&f, &w->bufs);
    if (pr->tunnel == NULL) {
        tt_pool_discard(pr->pool, u, TT_RETIRE_ERROR);
        pr->up = NULL;
        generate_error(pr, TT_CAUSE_INVALID_RESPONSE);
        return;
    }
    tt_pool_detach(pr->pool, u); /* never back to the pool: its bytes are the tunnel's now */
    /* The request went out whole and a tunnel is never replayed: its head (a pool block) is not kept for the tunnel's
     * life (bench/README.md, RSS per idle tunnel) */
    tt_buf_release(&pr->head, &w->bufs);
    tt_upconn_to_tunnel(u, pr->tunnel);
    tt_tunnel_start(pr->tunnel);
}

/* The Host name without its port ($host). */
static tt_str_t host_only(tt_str_t a)
{
    if (a.n == 0) return a;
    if (a.p[0] == '[') {
        const char *e = memchr(a.p, ']', a.n);
        return e ? tt_str(a.p, (size_t)(e - a.p) + 1) : a;
    }
    const char *c = memchr(a.p, ':', a.n);
    return c ? tt_str(a.p, (size_t)(c - a.p)) : a;
}

/* The response fields for the client, through the route's response rules and redirect rewrite (rules.h). */
static void response_fields(proxy_req_t *pr, const tt_h1_response_t *res, tt_buf_t *f, tt_bufpool_t *bufs)
{
    const tt_route_rules_t *rules = pr->pc->rules;
    bool redirect = tt_forward_status_redirects(res->status);
    if (pr->client == NULL || rules == NULL || (rules->nresp == 0 && !redirect)) { /* nothing to rewrite or add */
        tt_forward_response_fields(res, f, bufs);
        return;
    }
    const char *scheme = pr->client, *auth = scheme + strlen(scheme) + 1, *raddr = auth + strlen(auth) + 1;
    tt_forward_route_t fr = {.rules = rules,
                             .vars = {.host = host_only(tt_str(auth, strlen(auth))),
                                      .remote_addr = tt_str(raddr, strlen(raddr)),
                                      .scheme = tt_str(scheme, strlen(scheme))}};
    /* nginx's proxy_redirect default: the upstream's origin (the server's as configured, with or without its
     * default port, and the Host the upstream was sent when `host` is set) becomes the client's */
    const tt_upstream_server_t *sv = &pr->uc->servers[pr->server];
    char o[3][320], co[320];
    tt_str_t origins[3];
    size_t no = 0;
    const char *us = sv->tls ? "https://" : "http://";
    origins[no] = tt_str(o[no], (size_t)snprintf(o[no], sizeof(o[no]), "%s%s", us, sv->name));
    no++;
    const char *port = strrchr(sv->name, ':');
    if (port && strcmp(port, sv->tls ? ":443" : ":80") == 0) {
        origins[no] =
            tt_str(o[no], (size_t)snprintf(o[no], sizeof(o[no]), "%s%.*s", us, (int)(port - sv->name), sv->name));
        no++;
    }
    if (pr->uc->host) {
        origins[no] = tt_str(o[no], (size_t)snprintf(o[no], sizeof(o[no]), "%s%s", us, pr->uc->host));
        no++;
    }
    for (size_t i = 0; i < no; i++) origins[i].n = TT_MIN(origins[i].n, sizeof(o[i]) - 1);
    size_t con = auth[0] ? (size_t)snprintf(co, sizeof(co), "%s://%s", scheme, auth) : 0;
    tt_redirect_map_t m = {
        .origins = origins,
        .norigins = no,
        .client_origin = tt_str(co, TT_MIN(con, sizeof(co) - 1)),
        .prefix = rules->strip_prefix && !rules->rewrite ? tt_str(pr->pc->route, strlen(pr->pc->route)) : TT_STR_NULL};
    if (rules->proxy_redirect && con < sizeof(co)) fr.redirect = &m;
    tt_forward_response_fields_routed(res, &fr, f, bufs);
}

static void up_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    proxy_req_t *pr = u->data;
    if (pr->t_first_byte_us == 0) {
        pr->t_first_byte_us = tt_loop_now_us(pr->pw->w->loop);
        tt_hist_observe(&pool_metrics(pr)->first_byte_us, tt_hist_lat_bounds, tt_hist_lat_nbounds,
                        pr->t_first_byte_us - pr->t_begin_us);
    }
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    if (res->status == 101) {
        if (pr->h2_tunnel)
            up_on_switch_h2(pr, u, res);
        else
            up_on_switch(pr, u, res);
        return;
    }
    if (res->status < 200) {
        /* An interim response (100, 103 Early Hints, ...) goes on before the final one (RFC 9110 15.2); the client
         * connection drops what its client must not get (HTTP/1.0, a second 100). */
        tt_buf_t f = {0};
        tt_forward_response_fields(res, &f, bufs);
        tt_req_interim(pr->req, res->status, f.len ? tt_str(tt_buf_data(&f), f.len) : TT_STR_NULL);
        tt_buf_release(&f, bufs);
        return;
    }
    tt_buf_t f = {0};
    response_fields(pr, res, &f, bufs);
    tt_resp_t r;
    tt_resp_init(&r, res->status);
    r.fields = tt_str(tt_buf_data(&f), f.len);
    /* Content-Length passes through (HEAD included); chunked and close-delimited become "unknown", which
     * the client connection frames as chunked, so the client connection stays persistent. */
    r.content_length = res->chunked || res->close_delimited ? -1 : res->content_length;
    if (tt_http_status_has_no_content(res->status)) r.content_length = -1;
    pr->response_started = true;
    pr->up_log.status = res->status;
    pr->up_log.header_us = attempt_elapsed(pr);
    update_log(pr);
    tt_req_respond_head(pr->req, &r);
    tt_buf_release(&f, bufs);
}

static void up_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    proxy_req_t *pr = u->data;
    if (!tt_req_write(pr->req, data, len))
        tt_upconn_pause(u, true); /* the client reads slower than the upstream sends */
}

static void up_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    proxy_req_t *pr = u->data;
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    pr->up = NULL;
    pr->t_done_us = tt_loop_now_us(pr->pw->w->loop);
    tt_hist_observe(&pool_metrics(pr)->exchange_us, tt_hist_lat_bounds, tt_hist_lat_nbounds,
                    pr->t_done_us - pr->t_begin_us);
    /* The request ends first (the trailers live in u), then the pool decides whether u may be parked: an
     * answer that came before the request was completely sent makes it unparkable (tt_pool_can_park). The
     * client connection resumes its content, if it was paused, by itself: the request is finished. Only the
     * trailer fields that may be trailers pass (RFC 9110 6.5.1): a Content-Length one would break the stream. */
    pr->up_log.response_us = attempt_elapsed(pr);
    tt_buf_t tr = {0};
    if (trailers.n) tt_forward_trailers(trailers, &tr, bufs);
    tt_req_finish(pr->req, tr.len ? tt_str(tt_buf_data(&tr), tr.len) : TT_STR_NULL);
    tt_buf_release(&tr, bufs);
    tt_pool_release(pr->pool, u);
    pr_finish(pr);
}

static void up_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    proxy_req_t *pr = u->data;
    bool before_response = !u->got_bytes;
    bool reused = pr->reused;
    pr->up_log.response_us = attempt_elapsed(pr);
    tt_pool_discard(pr->pool, u, TT_RETIRE_ERROR);
    pr->up = NULL;
    if (pr->response_started) {
        tt_req_fail(pr->req); /* cut mid-content: the client must see the truncation */
        pr_finish(pr);
        return;
    }
    tt_proxy_cause_t cause = cause_of(err);
    bool replayable = pr->replayable && pr->held_all;
    if (before_response && (err == TT_UP_RESET || err == TT_UP_CLOSED) && replayable) {
        if (reused && pr->replays == 0 && pr->uc->replay) {
            /* The keep-alive race: the upstream closed the connection as we reused it. Once, on a new one. */
            pr->replays++;
            tt_counter_add(&pr->m->replays[cause], 1);
            acquire(pr, true);
            return;
        }
        next_server(pr, cause);
        return;
    }
    generate_error(pr, cause);
}

static void up_on_drain(tt_upconn_t *u)
{
    proxy_req_t *pr = u->data;
    if (pr->buffering)
        send_buffered(pr);
    else
        pause_client(pr, false);
}

static const tt_upconn_ops_t up_ops = {
    .on_head = up_on_head,
    .on_body = up_on_body,
    .on_done = up_on_done,
    .on_error = up_on_error,
    .on_drain = up_on_drain,
};

/* ---- HTTP/2 upstreams: one stream per exchange on a shared connection (h2pool.h) ---- */

static const tt_h2pool_stream_ops_t h2_stream_ops;

static tt_h2pool_metrics_t *h2_metrics(const proxy_req_t *pr)
{
    tt_proxy_registry_t *reg = pr->pw->reg;
    return &reg->h2_m[pr->pw->w->id * reg->nservers + pr->uc->_first_server + pr->server];
}

/* Gives up the exchange's stream (the client left, a timeout): RST_STREAM CANCEL, the connection goes on. */
static void h2_cancel(proxy_req_t *pr)
{
    tt_h2pool_cancel(&pr->h2s);
    tt_timer_disarm(pr->pw->w->loop, &pr->resp_timer);
    if (pr->h2c == NULL) return;
    tt_h2c_cancel(pr->h2c, pr->h2id);
    tt_gauge_add(&h2_metrics(pr)->streams, -1);
    pr->h2c = NULL;
}

static void h2_acquire(proxy_req_t *pr)
{
    pr->up_log.connect_us = pr->up_log.header_us = pr->up_log.response_us = -1;
    pr->h2s.ops = &h2_stream_ops;
    tt_h2pool_acquire(pr->h2pool, &pr->h2s);
}

/* The request's end went upstream (or there is no content): END_STREAM with its trailers; the response timeout
 * starts, as for HTTP/1.1. */
static void h2_send_end(proxy_req_t *pr)
{
    if (pr->sent_end || !pr->body_done || pr->h2c == NULL) return;
    if (pr->h2_content) /* else HEADERS carried END_STREAM */
        tt_h2c_end(pr->h2c, pr->h2id,
                   pr->trailers.len ? tt_str(tt_buf_data(&pr->trailers), pr->trailers.len) : TT_STR_NULL);
    pr->sent_end = true;
    if (!pr->response_started) tt_timer_arm(pr->pw->w->loop, &pr->resp_timer, pr->uc->pool.timeouts.response_ms);
}

/* Request buffering: the held content from body_off until the stream's queue is full (on_drain goes on). */
static void h2_send_buffered(proxy_req_t *pr)
{
    char scratch[16384];
    while (pr->h2c != NULL && !pr->sent_end) {
        const char *p = NULL;
        int64_t n = tt_reqbuf_read(&pr->body, pr->body_off, scratch, sizeof(scratch), &p);
        if (n < 0) {
            h2_cancel(pr);
            content_file_failed(pr, n);
            return;
        }
        if (n == 0) {
            h2_send_end(pr);
            return;
        }
        pr->body_off += (uint64_t)n;
        if (!tt_h2c_send(pr->h2c, pr->h2id, p, (size_t)n)) return;
    }
}

/* Starts the exchange as a stream on `c`: the upstream head (forward.c's, HTTP/1.1-shaped) becomes the
 * pseudo-headers and fields (h2client.c drops the connection-specific ones), the held content follows. */
static void h2_begin(proxy_req_t *pr, tt_h2c_t *c)
{
    tt_loop_t *loop = pr->pw->w->loop;
    char *h = tt_buf_data(&pr->head), *end = h + pr->head.len;
    char *eol = memchr(h, '\n', pr->head.len);
    char *sp1 = eol ? memchr(h, ' ', (size_t)(eol - h)) : NULL;
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp2 == NULL || (size_t)(sp1 - h) >= 32) { /* forward.c always writes a request-line: never */
        generate_error(pr, TT_CAUSE_INVALID_RESPONSE);
        return;
    }
    char method[32];
    memcpy(method, h, (size_t)(sp1 - h));
    method[sp1 - h] = '\0';
    tt_str_t target = tt_str(sp1 + 1, (size_t)(sp2 - sp1 - 1)), authority = TT_STR_NULL;
    char *fields = eol + 1;
    size_t flen = end - fields >= 2 ? (size_t)(end - fields) - 2 : 0; /* without the empty line */
    for (char *p = fields; p < fields + flen;) {
        char *e = memchr(p, '\n', (size_t)(fields + flen - p));
        if (e == NULL) break;
        if (e - p > 5 && strncasecmp(p, "host:", 5) == 0) {
            char *v = p + 5, *ve = e;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            authority = tt_str(v, (size_t)(ve - v));
            break;
        }
        p = e + 1;
    }
    bool content = pr->buffering ? pr->body.len > 0 : pr->req->has_body;
    const char *scheme = pr->uc->servers[pr->server].tls ? "https" : "http";
    int32_t id = tt_h2c_submit(c, method, scheme, authority, target, fields, flen, content, &pr->h2s);
    if (id < 0) {
        generate_error(pr, TT_CAUSE_CONNECT_ERROR);
        return;
    }
    pr->h2c = c;
    pr->h2id = id;
    pr->h2_content = content;
    tt_gauge_add(&h2_metrics(pr)->streams, 1);
    pr->reused = tt_h2c_requests(c) > 1;
    pr->up_id = tt_h2c_id(c);
    pr->on_h2 = true;
    pr->up_req_no = tt_h2c_requests(c);
    pr->up_idle_ms = 0;
    pr->up_age_ms = 0;
    pr->up_log.connect_us = 0;
    pr->attempt_us = mono_us();
    pr->up_log.header_us = pr->up_log.response_us = -1;
    pr->up_log.status = 0;
    pr->t_begin_us = tt_loop_now_us(loop);
    pr->t_first_byte_us = pr->t_done_us = 0;
    pr->sent_end = false;
    update_log(pr);
    if (!content) {
        pr->body_done = true; /* nothing to send: HEADERS carried END_STREAM */
        h2_send_end(pr);
        return;
    }
    if (pr->buffering) {
        pr->body_off = 0;
        h2_send_buffered(pr);
        return;
    }
    bool full = false;
    if (pr->held.len) full = !tt_h2c_send(c, id, tt_buf_data(&pr->held), pr->held.len);
    if (!pr->held_all) tt_buf_release(&pr->held, &pr->pw->w->bufs); /* only waiting for the stream: sent now */
    h2_send_end(pr);
    pause_client(pr, full);
}

/* Client content for an HTTP/2 upstream: as it comes, unframed (DATA frames are the framing). */
static void h2_client_body(proxy_req_t *pr, const char *data, size_t len)
{
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    pr->body_total += len;
    if (pr->held_all && pr->body_total > pr->uc->replay_buffer && pr->h2c != NULL) {
        pr->held_all = false; /* too large to replay: from now on it only streams */
        tt_buf_release(&pr->held, bufs);
    }
    if (pr->h2c == NULL) { /* no stream yet: hold it, and stop reading once a replay buffer's worth waits */
        tt_buf_append(&pr->held, bufs, data, len);
        if (pr->held.len >= pr->uc->replay_buffer) pause_client(pr, true);
        if (pr->body_total > pr->uc->replay_buffer) pr->held_all = false;
        return;
    }
    if (pr->held_all) tt_buf_append(&pr->held, bufs, data, len);
    if (!tt_h2c_send(pr->h2c, pr->h2id, data, len)) pause_client(pr, true);
}

static void h2_on_conn(tt_h2pool_stream_t *s, tt_h2c_t *c, tt_h2c_err_t err)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    if (c != NULL) {
        h2_begin(pr, c);
        return;
    }
    switch (err) {     /* nothing was sent: safe for any method */
    case TT_H2C_NO_H2: /* the server chose http/1.1 in ALPN: for protocol = auto its pool, for h2 a TLS failure */
        if (pr->uc->protocol == TT_UP_PROTO_AUTO)
            acquire(pr, false);
        else
            next_server(pr, TT_CAUSE_TLS_ERROR);
        return;
    case TT_H2C_TIMEOUT: generate_error(pr, TT_CAUSE_POOL_EXHAUSTED); return;
    case TT_H2C_DOWN: next_server(pr, TT_CAUSE_ALL_SERVERS_DOWN); return;
    case TT_H2C_CONNECT_REFUSED: next_server(pr, TT_CAUSE_CONNECT_REFUSED); return;
    case TT_H2C_CONNECT_TIMEOUT: next_server(pr, TT_CAUSE_CONNECT_TIMEOUT); return;
    case TT_H2C_TLS_ERROR: next_server(pr, TT_CAUSE_TLS_ERROR); return;
    default: next_server(pr, TT_CAUSE_CONNECT_ERROR); return;
    }
}

/* Response field lines into the worker's response scratch, for the field rules (forward.c). */
static tt_h1_response_t *h2_response_view(proxy_req_t *pr, int status, tt_str_t fields)
{
    tt_h1_response_t *res = &pr->pw->w->up_res; /* field by field: zeroing its 100 field slots costs more */
    res->major_version = 2;                     /* Via names the protocol received (RFC 9110 7.6.3) */
    res->minor_version = 1;
    res->status = status;
    res->reason = TT_STR_NULL;
    res->content_length = -1;
    res->chunked = res->close_delimited = false;
    res->conn_tokens = 0;
    res->keep_alive = -1;
    res->error = 0;
    res->nfields = 0;
    const char *p = fields.p, *end = fields.p + fields.n;
    while (p < end && res->nfields < TT_H1_MAX_FIELDS) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *next = e ? e + 1 : end;
        const char *le = e ? e : end;
        if (le > p && le[-1] == '\r') le--;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL) {
            const char *v = colon + 1;
            while (v < le && *v == ' ') v++;
            tt_h1_field_t *f = &res->fields[res->nfields++];
            f->name = tt_str(p, (size_t)(colon - p));
            f->value = tt_str(v, (size_t)(le - v));
            if (tt_str_ieq(f->name, TT_LIT("content-length"))) {
                int64_t n = 0;
                size_t i = 0;
                for (; i < f->value.n && f->value.p[i] >= '0' && f->value.p[i] <= '9' && n < (INT64_MAX / 10 - 10); i++)
                    n = n * 10 + (f->value.p[i] - '0');
                res->content_length = i == f->value.n && i > 0 ? n : -1;
            }
        }
        p = next;
    }
    return res;
}

static void h2_on_response(tt_h2pool_stream_t *s, int status, tt_str_t fields)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    if (pr->t_first_byte_us == 0) {
        pr->t_first_byte_us = tt_loop_now_us(pr->pw->w->loop);
        tt_hist_observe(&pool_metrics(pr)->first_byte_us, tt_hist_lat_bounds, tt_hist_lat_nbounds,
                        pr->t_first_byte_us - pr->t_begin_us);
    }
    const tt_h1_response_t *res = h2_response_view(pr, status, fields);
    tt_buf_t f = {0};
    if (status < 200) { /* interim (RFC 9110 15.2); 101 does not exist in HTTP/2 (RFC 9113 8.6) */
        if (status == 101) return;
        tt_forward_response_fields(res, &f, bufs);
        tt_req_interim(pr->req, status, f.len ? tt_str(tt_buf_data(&f), f.len) : TT_STR_NULL);
        tt_buf_release(&f, bufs);
        return;
    }
    tt_timer_disarm(pr->pw->w->loop, &pr->resp_timer);
    if (pr->grpc) /* a Trailers-Only answer (gRPC over HTTP/2): its status goes to the client as trailers too */
        for (size_t i = 0; i < res->nfields; i++)
            if (tt_str_ieq(res->fields[i].name, TT_LIT("grpc-status")) ||
                tt_str_ieq(res->fields[i].name, TT_LIT("grpc-message"))) {
                tt_buf_append(&pr->resp_trailers, bufs, res->fields[i].name.p, res->fields[i].name.n);
                tt_buf_append(&pr->resp_trailers, bufs, TT_LIT(": "));
                tt_buf_append(&pr->resp_trailers, bufs, res->fields[i].value.p, res->fields[i].value.n);
                tt_buf_append(&pr->resp_trailers, bufs, TT_LIT("\r\n"));
            }
    response_fields(pr, res, &f, bufs);
    tt_resp_t r;
    tt_resp_init(&r, status);
    r.fields = f.len ? tt_str(tt_buf_data(&f), f.len) : TT_STR_NULL;
    r.content_length = tt_http_status_has_no_content(status) ? -1 : res->content_length;
    pr->response_started = true;
    pr->up_log.status = status;
    pr->up_log.header_us = attempt_elapsed(pr);
    update_log(pr);
    tt_req_respond_head(pr->req, &r);
    tt_buf_release(&f, bufs);
}

static void h2_on_data(tt_h2pool_stream_t *s, const char *data, size_t len)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    if (!tt_req_write(pr->req, data, len) && pr->h2c != NULL)
        tt_h2c_pause(pr->h2c, pr->h2id, true); /* the client reads slower: the stream's window closes */
}

static void h2_on_trailers(tt_h2pool_stream_t *s, tt_str_t fields)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    pr->resp_trailers.len = 0; /* the real trailers replace a Trailers-Only head's status */
    tt_forward_trailers(fields, &pr->resp_trailers, &pr->pw->w->bufs); /* RFC 9110 6.5.1 */
}

static void h2_on_drain(tt_h2pool_stream_t *s)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    if (pr->buffering)
        h2_send_buffered(pr);
    else
        pause_client(pr, false);
}

static void h2_on_end(tt_h2pool_stream_t *s, tt_h2c_err_t err, uint32_t h2_error)
{
    proxy_req_t *pr = tt_container_of(s, proxy_req_t, h2s);
    tt_bufpool_t *bufs = &pr->pw->w->bufs;
    pr->h2c = NULL;
    tt_gauge_add(&h2_metrics(pr)->streams, -1);
    tt_timer_disarm(pr->pw->w->loop, &pr->resp_timer);
    pr->up_log.response_us = attempt_elapsed(pr);
    if (err == TT_H2C_OK) {
        pr->t_done_us = tt_loop_now_us(pr->pw->w->loop);
        tt_hist_observe(&pool_metrics(pr)->exchange_us, tt_hist_lat_bounds, tt_hist_lat_nbounds,
                        pr->t_done_us - pr->t_begin_us);
        tt_req_finish(pr->req, pr->resp_trailers.len ? tt_str(tt_buf_data(&pr->resp_trailers), pr->resp_trailers.len)
                                                     : TT_STR_NULL);
        pr_finish(pr);
        return;
    }
    /* Not processed by the origin: streams above a GOAWAY's last-stream-id (RFC 9113 6.8) and REFUSED_STREAM (8.7)
     * are replayed whatever their method; a connection that missed its PING only fails over idempotent ones. */
    int why = -1;
    if (err == TT_H2C_GOAWAY)
        why = H2_REPLAY_GOAWAY;
    else if (err == TT_H2C_RST_STREAM && h2_error == 0x7) /* REFUSED_STREAM */
        why = H2_REPLAY_REFUSED;
    else if (err == TT_H2C_PING_TIMEOUT && pr->replayable)
        why = H2_REPLAY_PING;
    else if (err == TT_H2C_SEND_TIMEOUT && pr->replayable) /* the socket stuck: the connection is gone */
        why = H2_REPLAY_SEND;
    bool held = pr->buffering || pr->held_all;
    if (why >= 0 && held && !pr->response_started && pr->uc->replay && pr->replays < 3) {
        pr->replays++;
        tt_counter_add(&pr->m->h2_replays[why], 1);
        pr->sent_end = false;
        pr->resp_trailers.len = 0;
        h2_acquire(pr);
        return;
    }
    if (pr->response_started) {
        tt_req_fail(pr->req); /* cut mid-content: the client must see the truncation */
        pr_finish(pr);
        return;
    }
    (void)bufs;
    tt_proxy_cause_t cause = err == TT_H2C_CLOSED         ? TT_CAUSE_CLOSED_BEFORE_RESPONSE
                             : err == TT_H2C_TIMEOUT      ? TT_CAUSE_RESPONSE_TIMEOUT
                             : err == TT_H2C_PROTOCOL     ? TT_CAUSE_INVALID_RESPONSE
                             : err == TT_H2C_PING_TIMEOUT ? TT_CAUSE_PING_TIMEOUT
                             : err == TT_H2C_SEND_TIMEOUT || err == TT_H2C_WINDOW_TIMEOUT
                                 ? TT_CAUSE_SEND_TIMEOUT
                                 : TT_CAUSE_RESET_BEFORE_RESPONSE;
    generate_error(pr, cause);
}

static const tt_h2pool_stream_ops_t h2_stream_ops = {
    .on_conn = h2_on_conn,
    .on_response = h2_on_response,
    .on_data = h2_on_data,
    .on_trailers = h2_on_trailers,
    .on_drain = h2_on_drain,
    .on_end = h2_on_end,
};

/* No response head within response_timeout of the request's end: 504, the stream reset. */
static void on_resp_timer(tt_timer_t *t)
{
    proxy_req_t *pr = tt_container_of(t, proxy_req_t, resp_timer);
    h2_cancel(pr);
    if (pr->response_started) {
        tt_req_fail(pr->req);
        pr_finish(pr);
        return;
    }
    generate_error(pr, TT_CAUSE_RESPONSE_TIMEOUT);
}

/* A gRPC request's grpc-timeout passed: the upstream exchange goes, the client gets DEADLINE_EXCEEDED (as trailers
 * when the response already began). */
static void on_deadline(tt_timer_t *t)
{
    proxy_req_t *pr = tt_container_of(t, proxy_req_t, deadline);
    h2_cancel(pr);
    tt_pool_cancel(&pr->waiter);
    if (pr->up != NULL) {
        tt_pool_discard(pr->pool, pr->up, TT_RETIRE_ERROR);
        pr->up = NULL;
    }
    if (pr->response_started) {
        pr->cause = TT_CAUSE_GRPC_DEADLINE;
        tt_counter_add(&pr->m->generated[TT_CAUSE_GRPC_DEADLINE], 1);
        update_log(pr);
        tt_req_finish(pr->req, TT_STR("grpc-status: 4\r\ngrpc-message: tether: deadline exceeded\r\n"));
        pr_finish(pr);
        return;
    }
    generate_error(pr, TT_CAUSE_GRPC_DEADLINE);
}

/* grpc-timeout (gRPC over HTTP/2: 1 to 8 digits and a unit H M S m u n) in ms, rounded up; 0 when absent or bad. */
static uint64_t grpc_timeout_ms(tt_str_t v)
{
    if (v.n < 2 || v.n > 9) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return 0;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    switch (v.p[v.n - 1]) {
    case 'H': return n * 3600000;
    case 'M': return n * 60000;
    case 'S': return n * 1000;
    case 'm': return n;
    case 'u': return (n + 999) / 1000;
    case 'n': return (n + 999999) / 1000000;
    default: return 0;
    }
}

/* ---- the handler ---- */

static bool idempotent(tt_method_t m)
{
    return m == TT_METHOD_GET || m == TT_METHOD_HEAD || m == TT_METHOD_PUT || m == TT_METHOD_DELETE ||
           m == TT_METHOD_OPTIONS || m == TT_METHOD_TRACE;
}

/* What a proxy route keeps per worker: the shared pools and its own configuration. */
typedef struct proxy_route {
    proxy_worker_t *pw;
    const tt_proxy_conf_t *pc;
    void *md; /* the rewrite's PCRE2 match data, this worker's; NULL without a rewrite */
} proxy_route_t;

/* Whether `req` asks to switch protocols (RFC 9110 7.8) in a way the route passes on: 1 yes (`*proto` the Upgrade
 * value), 0 no (an ordinary request: Upgrade is dropped as hop-by-hop), -1 refused (the route does not allow that
 * protocol: 501). Only an HTTP/1.1 request with Upgrade named in Connection asks (a server ignores Upgrade in an
 * HTTP/1.0 request); h2c is tether's own business, never forwarded. */
static int upgrade_asked(const tt_req_t *req, const tt_proxy_conf_t *pc, tt_str_t *proto)
{
    const tt_h1_request_t *h = req->head;
    if (req->major_version == 2) { /* RFC 8441 4: an extended CONNECT names its protocol in :protocol */
        if (h->method_id != TT_METHOD_CONNECT || req->protocol.n == 0) return 0;
        *proto = req->protocol;
    } else {
        if (req->minor_version < 1 || !(h->conn_tokens & TT_H1_CONN_UPGRADE)) return 0;
        int i = tt_h1_find_field(h, TT_LIT("upgrade"));
        if (i < 0 || h->fields[i].value.n == 0) return 0;
        *proto = h->fields[i].value;
    }
    if (tt_str_ieq(*proto, TT_LIT("h2c"))) return 0;
    switch (pc->upgrade) {
    case TT_UPGRADE_ANY: return 1;
    case TT_UPGRADE_WEBSOCKET: return tt_str_ieq(*proto, TT_LIT("websocket")) ? 1 : -1;
    case TT_UPGRADE_OFF: return -1;
    }
    return -1;
}

/* A Sec-WebSocket-Key for an HTTP/2 client's WebSocket (RFC 8441 5: it sends none; RFC 6455 4.1: 16 random bytes,
 * base64) into `out` (at least 25 bytes), drawn from the worker's generator (the one request ids use). */
static tt_str_t make_ws_key(tt_rand_t *rng, char *out)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char r[18] = {0};
    uint64_t a = tt_rand_next(rng), b = tt_rand_next(rng);
    memcpy(r, &a, 8);
    memcpy(r + 8, &b, 8);
    size_t n = 0;
    for (size_t i = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        for (int k = 3; k >= 0; k--) out[n++] = b64[(v >> (6 * k)) & 63];
    }
    out[22] = out[23] = '='; /* 16 bytes: 22 characters and "==" */
    return tt_str(out, 24);
}

/* 501 for an upgrade the route does not pass, with the cause in the content: never a silent downgrade. */
static void refuse_upgrade(tt_req_t *req, const tt_proxy_conf_t *pc, tt_str_t proto)
{
    char body[200];
    int n =
        snprintf(body, sizeof(body), "501 Not Implemented: Upgrade to \"%.*s\" is %s on this route (upgrade = %s)\n",
                 (int)TT_MIN(proto.n, (size_t)64), proto.p, pc->upgrade == TT_UPGRADE_OFF ? "off" : "not allowed",
                 pc->upgrade == TT_UPGRADE_OFF ? "off" : "websocket");
    tt_resp_t r;
    tt_resp_init(&r, 501);
    r.fields = TT_STR("Content-Type: text/plain; charset=utf-8\r\n");
    r.body = body;
    r.body_len = (size_t)TT_MIN((size_t)n, sizeof(body) - 1);
    r.content_length = (int64_t)r.body_len;
    req->log_extra = TT_STR("cause=upgrade_refused");
    tt_req_respond(req, &r);
}

/*
 * The upstream request head through the route's rules (rules.h): the forwarded target (strip_prefix, rewrite), the
 * request field rules with their variables, and what the response rules will need kept in pr->client. -1 when the
 * rewrite made an unusable path (logged; the caller answers 500).
 */
static int routed_head(proxy_route_t *route, proxy_req_t *pr, tt_req_t *req, tt_str_t upgrade, tt_str_t ws_key,
                       tt_bufpool_t *bufs)
{
    const tt_route_rules_t *rules = route->pc->rules;
    bool has_rules =
        rules && (rules->strip_prefix || rules->rewrite || rules->nreq || rules->nresp || rules->proxy_redirect);
    if (!has_rules) {
        if (upgrade.n) {
            tt_forward_route_t fr = {.upgrade = upgrade, .ws_key = ws_key};
            tt_forward_request_head_routed(req, pr->uc, &fr, pr->chunked_up, &pr->head, bufs);
        } else {
            tt_forward_request_head(req, pr->uc, pr->chunked_up, &pr->head, bufs);
        }
        return 0;
    }
    tt_buf_t target = {0};
    const char *why = NULL;
    if ((rules->strip_prefix || rules->rewrite) &&
        tt_rules_target(rules, route->md, strlen(route->pc->route), req->path, req->query, &target, bufs, &why) != 0) {
        tt_log(TT_LOG_ERROR, "route %s: %s (request path %.*s): 500", route->pc->route, why,
               (int)TT_MIN(req->path.n, 512), req->path.p);
        tt_buf_release(&target, bufs);
        return -1;
    }
    char ip[TT_ADDR_STRLEN];
    size_t ipn = rules->nreq || rules->nresp ? tt_addr_format_host(req->peer, ip, sizeof(ip)) : 0; /* $remote_addr */
    ip[ipn] = '\0';
    const char *scheme = req->tls ? "https" : "http";
    tt_forward_route_t fr = {.target = target.len ? tt_str(tt_buf_data(&target), target.len) : TT_STR_NULL,
                             .rules = rules,
                             .vars = {.host = host_only(req->authority),
                                      .remote_addr = tt_str(ip, ipn),
                                      .scheme = tt_str(scheme, strlen(scheme))},
                             .upgrade = upgrade,
                             .ws_key = ws_key};
    tt_forward_request_head_routed(req, pr->uc, &fr, pr->chunked_up, &pr->head, bufs);
    tt_buf_release(&target, bufs);
    if (rules->nresp || rules->proxy_redirect) { /* the request's views end with handle(): copied */
        size_t sn = strlen(scheme), an = req->authority.n;
        pr->client = sn + an + ipn + 3 <= sizeof(pr->client_buf) ? pr->client_buf : tt_malloc(sn + an + ipn + 3);
        memcpy(pr->client, scheme, sn + 1);
        if (an) memcpy(pr->client + sn + 1, req->authority.p, an);
        pr->client[sn + 1 + an] = '\0';
        memcpy(pr->client + sn + an + 2, ip, ipn);
        pr->client[sn + an + 2 + ipn] = '\0';
    }
    return 0;
}

static void proxy_handle(void *state, tt_req_t *req)
{
    proxy_route_t *route = state;
    proxy_worker_t *pw = route->pw;
    const tt_proxy_conf_t *pc = route->pc;
    tt_str_t proto = TT_STR_NULL;
    int upgrade = upgrade_asked(req, pc, &proto);
    if (upgrade < 0) {
        refuse_upgrade(req, pc, proto);
        return;
    }
    if (upgrade > 0 && pc->up->protocol == TT_UP_PROTO_H2) { /* a byte tunnel needs HTTP/1.1 (RFC 9113 8.6) */
        refuse_upgrade(req, pc, proto);
        return;
    }
    proxy_req_t *pr = tt_calloc(1, sizeof(*pr));
    tt_reqbuf_init(&pr->body, pc->buffer_memory, pc->temp_dir);
    tt_timer_init(&pr->resp_timer, on_resp_timer);
    tt_timer_init(&pr->deadline, on_deadline);
    pr->req = req;
    pr->pw = pw;
    pr->pc = pc;
    pr->uc = pc->up;
    pr->m = pw->m[pc->up->_index];
    pr->is_head = req->is_head;
    pr->chunked_up = req->has_body && req->content_length < 0;
    pr->hold = req->major_version == 2 && req->has_body && !pr->chunked_up && pc->up->protocol != TT_UP_PROTO_H2;
    int ct = tt_h1_find_field(req->head, TT_LIT("content-type"));
    pr->grpc = ct >= 0 && req->head->fields[ct].value.n >= 16 &&
               tt_str_ieq(tt_str(req->head->fields[ct].value.p, 16), TT_LIT("application/grpc"));
    pr->replayable = idempotent(req->head->method_id) || req->head->known[TT_H1_F_IDEMPOTENCY_KEY] >= 0;
    /* A body announced larger than the replay buffer can never be replayed: say so before the connection is
     * chosen, so that it gets no connection idle past half its deadline (a chunked body is judged as it comes). */
    pr->held_all = !(req->content_length > (int64_t)pr->uc->replay_buffer);
    tt_counter_add(&pr->m->requests, 1);
    pr->upgrade = upgrade > 0;
    pr->h2_tunnel = pr->upgrade && req->major_version == 2;
    char key[32];
    tt_str_t ws_key = TT_STR_NULL;
    if (pr->h2_tunnel) { /* no request content: the stream's DATA will be the tunnel's, sent as they come */
        pr->chunked_up = pr->hold = pr->held_all = pr->replayable = false;
        if (tt_str_ieq(proto, TT_LIT("websocket"))) ws_key = make_ws_key(&pw->w->rng, key);
    } else if (pc->buffering && req->has_body && !pr->upgrade) {
        /* Content first, whole (a chunked one then goes with Content-Length), and held whole: replayable. */
        pr->buffering = true;
        pr->chunked_up = false;
        pr->held_all = true;
        tt_counter_add(&pr->m->buffered, 1);
    }
    if (routed_head(route, pr, req, pr->upgrade ? proto : TT_STR_NULL, ws_key, &pw->w->bufs) != 0) {
        tt_req_respond_text(req, 500, TT_STR_NULL);
        tt_buf_release(&pr->head, &pw->w->bufs);
        if (pr->client != pr->client_buf) free(pr->client);
        free(pr);
        return;
    }
    if (pr->uc->protocol != TT_UP_PROTO_HTTP1 && !pr->upgrade) {
        /* HTTP/2 upstreams: TE: trailers passes (RFC 9113 8.2.2, gRPC needs it); the rest of TE is hop-by-hop */
        int te = tt_h1_find_field(req->head, TT_LIT("te"));
        if (te >= 0 && memmem(req->head->fields[te].value.p, req->head->fields[te].value.n, "trailers", 8) != NULL &&
            pr->head.len >= 2) {
            pr->head.len -= 2; /* before the empty line that ends the head */
            tt_buf_append(&pr->head, &pw->w->bufs, TT_LIT("TE: trailers\r\n\r\n"));
        }
    }
    if (pr->grpc && !pr->upgrade) { /* grpc-timeout bounds the whole exchange */
        int gt = tt_h1_find_field(req->head, TT_LIT("grpc-timeout"));
        uint64_t ms = gt >= 0 ? grpc_timeout_ms(req->head->fields[gt].value) : 0;
        if (ms > 0) tt_timer_arm(pw->w->loop, &pr->deadline, ms);
    }
    pr->up_log = (tt_accesslog_up_t){.name = pr->uc->name, .connect_us = -1, .header_us = -1, .response_us = -1};
    req->log_up = &pr->up_log;
    tt_req_set_hooks(req, &client_hooks, pr);
    if (pr->buffering) {
        update_log(pr);
        return; /* buffered_complete() goes on once the content is in */
    }
    bool all_down;
    if (!pick_server(pr, &all_down)) {
        generate_error(pr, TT_CAUSE_ALL_SERVERS_DOWN);
        return;
    }
    update_log(pr);
    acquire(pr, false);
}

/* ---- per-worker state and the registry ---- */

/* Copies `n` bytes of relaxed atomic counters from `from` to `to` (one writer: the calling worker). */
static void copy_counters(void *to, const void *from, size_t n)
{
    tt_counter_t *t = to;
    const tt_counter_t *f = from;
    for (size_t i = 0; i < n / sizeof(tt_counter_t); i++)
        atomic_store_explicit(&t[i], atomic_load_explicit(&f[i], memory_order_relaxed), memory_order_relaxed);
}

/* True when servers `a` of `ua` and `b` of `ub` are the same pool's: same upstream name, server (address as
 * written) and scheme. Pools of https:// servers are not carried over (their TLS client context belongs to the old
 * generation): a reload gives them a new pool and the old one drains. */
static bool same_pool(const tt_upstream_conf_t *ua, const tt_upstream_server_t *a, const tt_upstream_conf_t *ub,
                      const tt_upstream_server_t *b)
{
    return !a->tls && !b->tls && strcmp(ua->name, ub->name) == 0 && strcmp(a->name, b->name) == 0;
}

/* The pool of server `s` of `uc` held by the previous generation's state of this worker, or NULL. */
static pool_ref_t *adoptable(const proxy_worker_t *old, const tt_upstream_conf_t *uc, const tt_upstream_server_t *sv)
{
    if (old == NULL) return NULL;
    for (size_t u = 0; u < old->reg->nups; u++) {
        const tt_upstream_conf_t *ou = &old->reg->ups[u];
        for (size_t s = 0; s < ou->nservers; s++)
            if (same_pool(ou, &ou->servers[s], uc, sv)) return old->prefs[ou->_first_server + s];
    }
    return NULL;
}

/* Gives the pool of `ref` its name's current addresses when they moved since it last had them. The lock inside
 * tt_dns_name_get is taken only then: once per change, never per request. */
static void dns_sync(proxy_worker_t *pw, size_t i)
{
    pool_ref_t *ref = pw->prefs[i];
    if (ref->dns == NULL || tt_dns_name_version(ref->dns) == ref->dns_version) return;
    tt_addr_t addrs[TT_DNS_MAX_ADDRS];
    size_t n = tt_dns_name_get(ref->dns, addrs, TT_DNS_MAX_ADDRS, &ref->dns_version);
    tt_pool_set_addrs(ref->pool, addrs, n);
    if (pw->h2pools[i] != NULL) tt_h2pool_set_addrs(pw->h2pools[i], addrs, n);
}

static void dns_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    proxy_worker_t *pw = tt_container_of(io, proxy_worker_t, dns_io);
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) return;
    for (size_t i = 0; i < pw->reg->nservers; i++) dns_sync(pw, i);
}

static void *proxy_worker_init(const void *conf, tt_worker_t *w)
{
    const tt_proxy_conf_t *pc = conf;
    tt_proxy_registry_t *reg = pc->reg;
    proxy_worker_t *pw = reg->workers[w->id];
    if (pw == NULL) {
        /* After a reload the previous generation's state of this worker is still alive (it is current until the
         * worker finishes applying this one): the servers that remain keep their pools and parked connections. */
        proxy_worker_t *old = reg->prev ? reg->prev->workers[w->id] : NULL;
        pw = tt_calloc(1, sizeof(*pw));
        pw->w = w;
        pw->reg = reg;
        pw->pools = tt_calloc(reg->nservers ? reg->nservers : 1, sizeof(*pw->pools));
        pw->prefs = tt_calloc(reg->nservers ? reg->nservers : 1, sizeof(*pw->prefs));
        pw->h2pools = tt_calloc(reg->nservers ? reg->nservers : 1, sizeof(*pw->h2pools));
        pw->rr = tt_calloc(reg->nups ? reg->nups : 1, sizeof(*pw->rr));
        pw->m = tt_calloc(reg->nups ? reg->nups : 1, sizeof(*pw->m));
        for (size_t u = 0; u < reg->nups; u++) {
            tt_upstream_conf_t *uc = &reg->ups[u];
            pw->rr[u] = w->id; /* workers start at different servers */
            pw->m[u] = &reg->proxy_m[w->id * reg->nups + u];
            for (size_t ou = 0; old && ou < old->reg->nups; ou++) {
                if (strcmp(old->reg->ups[ou].name, uc->name) != 0) continue;
                /* A kept upstream's series go on: this worker is the only writer of both rows, and the old
                 * generation's new requests count into the new row from now on. */
                copy_counters(pw->m[u], old->m[ou], sizeof(proxy_metrics_t));
                old->m[ou] = pw->m[u];
            }
            for (size_t s = 0; s < uc->nservers; s++) {
                size_t i = uc->_first_server + s;
                tt_pool_metrics_t *m = &reg->pool_m[w->id * reg->nservers + i];
                pool_ref_t *ref = adoptable(old, uc, &uc->servers[s]);
                if (ref != NULL && ref->pool != NULL) {
                    tt_pool_rebind(ref->pool, &uc->pool, m);
                    ref->holders++;
                } else {
                    char name[256];
                    snprintf(name, sizeof(name), "%s/%s", uc->name, uc->servers[s].name);
                    ref = tt_calloc(1, sizeof(*ref));
                    ref->pool = tt_pool_new(w->loop, &w->bufs, &w->up_res, &uc->pool, &uc->servers[s].addr, name, m);
                    ref->holders = 1;
                    if (uc->servers[s]._tls) tt_pool_set_tls(ref->pool, uc->servers[s]._tls);
                }
                if (ref->dns != uc->servers[s]._dns) { /* the newest generation's name (or none) leads */
                    ref->dns = uc->servers[s]._dns;
                    ref->dns_version = 0;
                }
                pw->prefs[i] = ref;
                pw->pools[i] = ref->pool;
                const tt_upstream_server_t *sv = &uc->servers[s];
                if (uc->protocol == TT_UP_PROTO_H2 || (uc->protocol == TT_UP_PROTO_AUTO && sv->tls)) {
                    tt_h2pool_conf_t hc = {
                        .h2 = {.connect_ms = uc->pool.timeouts.connect_ms,
                               .response_ms = 0, /* the exchange's own timers: a gRPC stream may be quiet long */
                               .tls = sv->tls ? sv->_tls_h2 : NULL,
                               .window = (uint32_t)uc->h2_window,
                               .manual_window = true,
                               .ping_ms = uc->h2_ping_ms,
                               .ping_timeout_ms = uc->h2_ping_timeout_ms,
                               .send_ms = uc->pool.timeouts.send_ms,
                               .slab = &w->slab},
                        .h1_fallback = uc->protocol == TT_UP_PROTO_AUTO,
                        .alpn_recheck_ms = uc->h2_alpn_recheck_ms,
                        .max_connections = uc->pool.max_connections,
                        .max_pending = uc->pool.max_pending,
                        .queue_timeout_ms = uc->pool.queue_timeout_ms,
                        .idle_timeout_ms = uc->pool.idle_timeout_ms};
                    pw->h2pools[i] =
                        tt_h2pool_new(w->loop, &w->bufs, &hc, &sv->addr, &reg->h2_m[w->id * reg->nservers + i]);
                    tt_h2pool_set_health(pw->h2pools[i], ref->pool); /* one server, one health (pool.h) */
                    if (ref->dns != NULL && ref->dns_version != 0) { /* an adopted pool's version: not synced again */
                        tt_addr_t addrs[TT_DNS_MAX_ADDRS];
                        uint64_t version;
                        size_t n = tt_dns_name_get(ref->dns, addrs, TT_DNS_MAX_ADDRS, &version);
                        tt_h2pool_set_addrs(pw->h2pools[i], addrs, n);
                    }
                }
            }
        }
        pw->dns_io.fd = -1;
        bool follows = false;
        for (size_t i = 0; i < reg->nservers; i++) follows |= pw->prefs[i]->dns != NULL;
        if (follows) {
            pw->dns_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            pw->dns_io.cb = dns_on_io;
            if (pw->dns_io.fd < 0 || tt_io_start(w->loop, &pw->dns_io, TT_EV_READ) != 0)
                tt_fatal("eventfd for the resolver: %s", strerror(errno));
            tt_resolver_subscribe(reg->resolver, pw->dns_io.fd);
            for (size_t i = 0; i < reg->nservers; i++) dns_sync(pw, i); /* what moved before we listened */
        }
        reg->workers[w->id] = pw;
    }
    pw->refs++;
    proxy_route_t *route = tt_calloc(1, sizeof(*route));
    route->pw = pw;
    route->pc = pc;
    route->md = tt_rules_match_data_new(pc->rules);
    return route;
}

static void proxy_worker_free(void *state)
{
    proxy_route_t *route = state;
    proxy_worker_t *pw = route->pw;
    tt_rules_match_data_free(route->md);
    free(route);
    if (--pw->refs > 0) return;
    tt_proxy_registry_t *reg = pw->reg;
    if (pw->dns_io.fd >= 0) {
        tt_resolver_unsubscribe(reg->resolver, pw->dns_io.fd); /* no write to it after this */
        tt_io_stop(pw->w->loop, &pw->dns_io);
        close(pw->dns_io.fd);
    }
    for (size_t i = 0; i < reg->nservers; i++) {
        pool_ref_t *ref = pw->prefs[i];
        tt_h2pool_free(&pw->h2pools[i]);  /* never carried over by a reload: the new generation opens its own */
        if (--ref->holders > 0) continue; /* a newer generation serves with it */
        tt_pool_free(&ref->pool);
        free(ref);
    }
    reg->workers[pw->w->id] = NULL;
    free(pw->pools);
    free(pw->h2pools);
    free(pw->prefs);
    free(pw->m);
    free(pw->rr);
    free(pw);
}

const tt_handler_ops_t tt_proxy_ops = {
    .name = "proxy",
    .worker_init = proxy_worker_init,
    .worker_free = proxy_worker_free,
    .handle = proxy_handle,
    .async = true,
    .slash_redirect = true,
};

/* ---- the registry ---- */

tt_proxy_registry_t *tt_proxy_registry_new(tt_upstream_conf_t *ups, size_t n, uint32_t nworkers,
                                           tt_proxy_registry_t *prev, char *err, size_t errlen)
{
    for (size_t u = 0; u < n; u++)
        for (size_t s = 0; s < ups[u].nservers; s++) {
            tt_upstream_server_t *sv = &ups[u].servers[s];
            if (!sv->tls || sv->_tls != NULL) continue;
            char ip[TT_ADDR_STRLEN]; /* an IP literal server is still checked: against the certificate's addresses */
            tt_addr_format_host(&sv->addr, ip, sizeof(ip));
            tt_tls_client_conf_t tc = {.ca_file = ups[u].tls_ca,
                                       .verify = ups[u].tls_verify,
                                       .cert_file = ups[u].tls_cert,
                                       .key_file = ups[u].tls_key,
                                       .sni = ups[u].tls_sni ? ups[u].tls_sni
                                              : sv->host     ? sv->host
                                                             : ip};
            char why[384];
            sv->_tls = tt_tls_client_new(&tc, why, sizeof(why));
            if (sv->_tls == NULL) {
                snprintf(err, errlen, "[upstream %s] %s: %s", ups[u].name, sv->name, why);
                return NULL;
            }
            if (ups[u].protocol != TT_UP_PROTO_HTTP1) { /* ALPN h2 (and http/1.1 for auto's answer) */
                tc.alpn_h2 = true;
                sv->_tls_h2 = tt_tls_client_new(&tc, why, sizeof(why));
                if (sv->_tls_h2 == NULL) {
                    snprintf(err, errlen, "[upstream %s] %s: %s", ups[u].name, sv->name, why);
                    return NULL;
                }
            }
        }
    tt_proxy_registry_t *reg = tt_calloc(1, sizeof(*reg));
    reg->prev = prev;
    reg->ups = ups;
    reg->nups = n;
    reg->nworkers = nworkers;
    for (size_t u = 0; u < n; u++) {
        if (ups[u]._max_conns_default)
            ups[u].pool.max_connections = (TT_PROXY_MAX_CONNECTIONS + nworkers - 1) / TT_MAX(nworkers, 1);
        ups[u]._index = u;
        ups[u]._first_server = reg->nservers;
        reg->nservers += ups[u].nservers;
    }
    reg->workers = tt_calloc(nworkers, sizeof(*reg->workers));
    reg->pool_m = tt_calloc((size_t)nworkers * TT_MAX(reg->nservers, 1), sizeof(*reg->pool_m));
    reg->h2_m = tt_calloc((size_t)nworkers * TT_MAX(reg->nservers, 1), sizeof(*reg->h2_m));
    reg->proxy_m = tt_calloc((size_t)nworkers * TT_MAX(n, 1), sizeof(*reg->proxy_m));
    return reg;
}

void tt_proxy_registry_watch(tt_proxy_registry_t *reg, tt_resolver_t *res)
{
    reg->resolver = res;
    for (size_t u = 0; u < reg->nups; u++) {
        if (reg->ups[u].resolve_interval_ms == 0) continue;
        for (size_t s = 0; s < reg->ups[u].nservers; s++) {
            tt_upstream_server_t *sv = &reg->ups[u].servers[s];
            /* sv->name is HOST:PORT (the scheme's port added); an IP literal is never resolved again */
            tt_addr_t lit;
            const char *why;
            const char *colon = strrchr(sv->name, ':');
            if (colon == NULL || sv->name[0] == '[' || tt_addr_parse(sv->name, false, &lit, &why) == 0) continue;
            char host[256];
            snprintf(host, sizeof(host), "%.*s", (int)(colon - sv->name), sv->name);
            sv->_dns =
                tt_resolver_watch(res, host, tt_addr_port(&sv->addr), reg->ups[u].resolve_interval_ms, &sv->addr);
        }
    }
}

void tt_proxy_registry_free(tt_proxy_registry_t **regp)
{
    tt_proxy_registry_t *reg = *regp;
    if (reg == NULL) return;
    for (size_t u = 0; u < reg->nups; u++)
        for (size_t s = 0; s < reg->ups[u].nservers; s++) {
            tt_tls_client_free(&reg->ups[u].servers[s]._tls);
            tt_dns_name_release(&reg->ups[u].servers[s]._dns);
            tt_tls_client_free(&reg->ups[u].servers[s]._tls_h2);
        }
    free(reg->workers);
    free(reg->pool_m);
    free(reg->h2_m);
    free(reg->proxy_m);
    free(reg);
    *regp = NULL;
}

void tt_proxy_default_tcp_keepalive(const tt_pool_conf_t *pc, tt_tcp_keepalive_t *ka)
{
    uint64_t idle = TT_MIN(TT_MAX(pc->idle_timeout_ms / 4 / 1000, 1), 300);
    uint64_t intvl = TT_MIN(TT_MAX(idle / 3, 1), 75);
    *ka = (tt_tcp_keepalive_t){.enabled = true, .idle_s = (int)idle, .interval_s = (int)intvl, .count = 3};
}

/* Sums one counter over the workers: `base` is worker 0's struct, `stride` the size of one worker's row. */
static uint64_t sum_u(const void *base, size_t field_off, size_t stride, uint32_t nworkers)
{
    uint64_t v = 0;
    for (uint32_t w = 0; w < nworkers; w++)
        v += LOAD(*(const tt_counter_t *)(const void *)((const char *)base + w * stride + field_off));
    return v;
}

static int64_t sum_g(const void *base, size_t field_off, size_t stride, uint32_t nworkers)
{
    int64_t v = 0;
    for (uint32_t w = 0; w < nworkers; w++)
        v += LOAD(*(const tt_gauge_t *)(const void *)((const char *)base + w * stride + field_off));
    return v;
}

#define PM(field) offsetof(tt_pool_metrics_t, field)
#define XM(field) offsetof(proxy_metrics_t, field)

static const char *retire_name(int r)
{
    return tt_pool_retire_name((tt_pool_retire_t)r);
}

static const char *open_name(int r)
{
    return tt_pool_open_name((tt_pool_open_t)r);
}

/* One counter series per server and reason: the array of `count` counters at `off` in each pool's shard, reason 0
 * (none) left out. */
static void render_by_reason(char **out, size_t *len, size_t *cap, const tt_proxy_registry_t *reg, const char *name,
                             const char *help, size_t off, int count, const char *(*reason)(int), int h2_dns)
{
    size_t pstride = reg->nservers * sizeof(tt_pool_metrics_t);
    size_t hstride = reg->nservers * sizeof(tt_h2pool_metrics_t);
    tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t u = 0; u < reg->nups; u++)
        for (size_t s = 0; s < reg->ups[u].nservers; s++)
            for (int r = 1; r < count; r++) {
                size_t i = reg->ups[u]._first_server + s;
                uint64_t v = sum_u(&reg->pool_m[i], off + (size_t)r * sizeof(tt_counter_t), pstride, reg->nworkers);
                if (r == h2_dns) /* the server's HTTP/2 connections retired for the same reason count here too */
                    v += sum_u(&reg->h2_m[i], offsetof(tt_h2pool_metrics_t, dns_retired), hstride, reg->nworkers);
                tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\",reason=\"%s\"} %llu\n", name,
                                  reg->ups[u].name, reg->ups[u].servers[s].name, reason(r), (unsigned long long)v);
            }
}

/* The latency histograms per server, summed over the workers. */
static void render_latency(char **out, size_t *len, size_t *cap, const tt_proxy_registry_t *reg)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } series[] = {
        {"tether_upstream_connect_seconds", "Connect (TCP, and TLS for https://) of each upstream connection opened.",
         PM(connect_us)},
        {"tether_upstream_first_byte_seconds",
         "Proxied exchanges: from the request begun on a connection to the response head.", PM(first_byte_us)},
        {"tether_upstream_exchange_seconds",
         "Proxied exchanges: from the request begun on a connection to the response's end.", PM(exchange_us)},
    };
    const tt_hist_t **h = tt_malloc(TT_MAX(reg->nworkers, 1u) * sizeof(*h));
    for (size_t k = 0; k < TT_ARRAY_SIZE(series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s histogram\n", series[k].name, series[k].help,
                          series[k].name);
        for (size_t u = 0; u < reg->nups; u++)
            for (size_t s = 0; s < reg->ups[u].nservers; s++) {
                for (uint32_t w = 0; w < reg->nworkers; w++)
                    h[w] = (const tt_hist_t *)(const void *)((const char *)&reg->pool_m[w * reg->nservers +
                                                                                        reg->ups[u]._first_server + s] +
                                                             series[k].off);
                char labels[512];
                snprintf(labels, sizeof(labels), "upstream=\"%s\",server=\"%s\"", reg->ups[u].name,
                         reg->ups[u].servers[s].name);
                tt_metrics_render_hist(out, len, cap, series[k].name, labels, h, reg->nworkers, tt_hist_lat_bounds,
                                       tt_hist_lat_nbounds, 1e-6);
            }
    }
    free(h);
}

/* What the resolver did for each server that follows its name (none for IP literals and resolve_interval = 0). */
static void render_dns(char **out, size_t *len, size_t *cap, const tt_proxy_registry_t *reg)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } series[] = {
        {"tether_upstream_dns_resolutions_total", "counter",
         "Resolutions of the server's name (every resolve_interval).", offsetof(tt_dns_stats_t, resolutions)},
        {"tether_upstream_dns_failures_total", "counter",
         "Resolutions that failed (the last good addresses were kept).", offsetof(tt_dns_stats_t, failures)},
        {"tether_upstream_dns_changes_total", "counter", "Resolutions that changed the server's set of addresses.",
         offsetof(tt_dns_stats_t, changes)},
        {"tether_upstream_dns_addresses", "gauge", "Addresses the server's name resolves to now.",
         offsetof(tt_dns_stats_t, naddrs)},
    };
    for (size_t k = 0; k < TT_ARRAY_SIZE(series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s %s\n", series[k].name, series[k].help, series[k].name,
                          series[k].type);
        for (size_t u = 0; u < reg->nups; u++)
            for (size_t s = 0; s < reg->ups[u].nservers; s++) {
                const tt_dns_name_t *n = reg->ups[u].servers[s]._dns;
                if (n == NULL) continue;
                tt_dns_stats_t st;
                tt_dns_name_stats(n, &st);
                uint64_t v = *(const uint64_t *)(const void *)((const char *)&st + series[k].off);
                tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %llu\n", series[k].name,
                                  reg->ups[u].name, reg->ups[u].servers[s].name, (unsigned long long)v);
            }
    }
}

#define HM(field) offsetof(tt_h2pool_metrics_t, field)

/* The HTTP/2 upstreams' series, for upstreams with protocol h2 or auto only. */
static void render_h2(char **out, size_t *len, size_t *cap, const tt_proxy_registry_t *reg)
{
    static const char *const codes[TT_H2POOL_ERR_OTHER + 1] = {"NO_ERROR",
                                                               "PROTOCOL_ERROR",
                                                               "INTERNAL_ERROR",
                                                               "FLOW_CONTROL_ERROR",
                                                               "SETTINGS_TIMEOUT",
                                                               "STREAM_CLOSED",
                                                               "FRAME_SIZE_ERROR",
                                                               "REFUSED_STREAM",
                                                               "CANCEL",
                                                               "COMPRESSION_ERROR",
                                                               "CONNECT_ERROR",
                                                               "ENHANCE_YOUR_CALM",
                                                               "INADEQUATE_SECURITY",
                                                               "HTTP_1_1_REQUIRED",
                                                               "other"};
    size_t hstride = reg->nservers * sizeof(tt_h2pool_metrics_t), xstride = reg->nups * sizeof(proxy_metrics_t);
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool gauge;
    } series[] = {
        {"tether_upstream_h2_connections", "gauge", "HTTP/2 upstream connections open or connecting.", HM(conns), true},
        {"tether_upstream_h2_streams", "gauge", "Streams in flight on HTTP/2 upstream connections.", HM(streams), true},
        {"tether_upstream_h2_connections_opened_total", "counter",
         "HTTP/2 upstream connections opened (the server's first SETTINGS received).", HM(opened), false},
        {"tether_upstream_h2_ping_timeouts_total", "counter",
         "HTTP/2 upstream connections closed because a PING went unanswered within h2_ping_timeout.", HM(ping_timeouts),
         false},
        {"tether_upstream_h2_idle_closed_total", "counter",
         "HTTP/2 upstream connections closed with GOAWAY after idle_timeout without streams.", HM(idle_closed), false},
        {"tether_upstream_h2_tls_full_handshakes_total", "counter",
         "Full TLS handshakes of HTTP/2 upstream connections.", HM(tls_handshakes[0]), false},
        {"tether_upstream_h2_tls_resumed_handshakes_total", "counter",
         "Resumed TLS handshakes of HTTP/2 upstream connections.", HM(tls_handshakes[1]), false},
    };
    for (size_t k = 0; k < TT_ARRAY_SIZE(series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s %s\n", series[k].name, series[k].help, series[k].name,
                          series[k].type);
        for (size_t u = 0; u < reg->nups; u++) {
            if (reg->ups[u].protocol == TT_UP_PROTO_HTTP1) continue;
            for (size_t s = 0; s < reg->ups[u].nservers; s++) {
                const void *base = &reg->h2_m[reg->ups[u]._first_server + s];
                if (series[k].gauge)
                    tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %lld\n", series[k].name,
                                      reg->ups[u].name, reg->ups[u].servers[s].name,
                                      (long long)sum_g(base, series[k].off, hstride, reg->nworkers));
                else
                    tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %llu\n", series[k].name,
                                      reg->ups[u].name, reg->ups[u].servers[s].name,
                                      (unsigned long long)sum_u(base, series[k].off, hstride, reg->nworkers));
            }
        }
    }
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_h2_goaways_total GOAWAY frames received from HTTP/2 upstreams, by error "
                      "code.\n# TYPE tether_upstream_h2_goaways_total counter\n");
    for (size_t u = 0; u < reg->nups; u++) {
        if (reg->ups[u].protocol == TT_UP_PROTO_HTTP1) continue;
        for (size_t s = 0; s < reg->ups[u].nservers; s++)
            for (int c = 0; c <= TT_H2POOL_ERR_OTHER; c++)
                tt_metrics_printf(
                    out, len, cap, "tether_upstream_h2_goaways_total{upstream=\"%s\",server=\"%s\",code=\"%s\"} %llu\n",
                    reg->ups[u].name, reg->ups[u].servers[s].name, codes[c],
                    (unsigned long long)sum_u(&reg->h2_m[reg->ups[u]._first_server + s],
                                              HM(goaways) + (size_t)c * sizeof(tt_counter_t), hstride, reg->nworkers));
    }
    tt_metrics_printf(
        out, len, cap,
        "# HELP tether_upstream_h2_ping_rtt_seconds The last PING round trip on an HTTP/2 upstream "
        "connection (max over workers; 0: none yet).\n# TYPE tether_upstream_h2_ping_rtt_seconds gauge\n");
    for (size_t u = 0; u < reg->nups; u++) {
        if (reg->ups[u].protocol == TT_UP_PROTO_HTTP1) continue;
        for (size_t s = 0; s < reg->ups[u].nservers; s++) {
            int64_t mx = 0;
            for (uint32_t w = 0; w < reg->nworkers; w++)
                mx = TT_MAX(mx, LOAD(reg->h2_m[w * reg->nservers + reg->ups[u]._first_server + s].ping_rtt_us));
            tt_metrics_printf(out, len, cap, "tether_upstream_h2_ping_rtt_seconds{upstream=\"%s\",server=\"%s\"} %g\n",
                              reg->ups[u].name, reg->ups[u].servers[s].name, (double)mx * 1e-6);
        }
    }
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_h2_replays_total Streams replayed on another HTTP/2 upstream connection, "
                      "by reason.\n# TYPE tether_upstream_h2_replays_total counter\n");
    for (size_t u = 0; u < reg->nups; u++) {
        if (reg->ups[u].protocol == TT_UP_PROTO_HTTP1) continue;
        for (size_t r = 0; r < TT_ARRAY_SIZE(h2_replay_names); r++)
            tt_metrics_printf(out, len, cap, "tether_upstream_h2_replays_total{upstream=\"%s\",reason=\"%s\"} %llu\n",
                              reg->ups[u].name, h2_replay_names[r],
                              (unsigned long long)sum_u(&reg->proxy_m[u], XM(h2_replays) + r * sizeof(tt_counter_t),
                                                        xstride, reg->nworkers));
    }
}

void tt_proxy_render_metrics(void *arg, char **out, size_t *len, size_t *cap)
{
    tt_proxy_registry_t *reg = arg;
    size_t pstride = reg->nservers * sizeof(tt_pool_metrics_t), xstride = reg->nups * sizeof(proxy_metrics_t);
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool gauge;
    } pool_series[] = {
        {"tether_upstream_idle_connections", "gauge", "Parked upstream connections.", PM(idle), true},
        {"tether_upstream_active_connections", "gauge", "Upstream connections checked out or connecting.", PM(active),
         true},
        {"tether_upstream_queue_length", "gauge", "Requests waiting for an upstream connection.", PM(pending), true},
        {"tether_upstream_down", "gauge", "Workers that have the server marked down.", PM(down), true},
        {"tether_upstream_connections_opened_total", "counter", "Upstream connections opened.", PM(opened), false},
        {"tether_upstream_requests_reused_total", "counter", "Requests sent on a reused upstream connection.",
         PM(reused), false},
        {"tether_upstream_connect_failures_total", "counter", "Failed connects.", PM(connect_failures), false},
        {"tether_upstream_queue_timeouts_total", "counter", "Requests that waited the whole queue timeout.",
         PM(queue_timeouts), false},
        {"tether_upstream_leaks_total", "counter", "Connections checked out longer than the leak threshold.", PM(leaks),
         false},
        {"tether_upstream_tls_full_handshakes_total", "counter", "Full TLS handshakes to the server.",
         PM(tls_handshakes[0]), false},
        {"tether_upstream_tls_resumed_handshakes_total", "counter", "Resumed TLS handshakes to the server.",
         PM(tls_handshakes[1]), false},
        {"tether_upstream_canary_connections", "gauge",
         "Connections kept out of service past their deadline to see when the server closes them.", PM(canaries), true},
        {"tether_upstream_canary_requests_answered_total", "counter",
         "Requests sent on a connection past its deadline (canary_requests) that it answered.", PM(canary_requests[0]),
         false},
        {"tether_upstream_canary_requests_closed_total", "counter",
         "Requests sent on a connection past its deadline that the server had closed (replayed on a new one).",
         PM(canary_requests[1]), false},
        {"tether_upstream_reuse_waits_served_total", "counter",
         "Requests that cannot be replayed that waited for a connection finishing an exchange (reuse_wait) and got it.",
         PM(reuse_waits[0]), false},
        {"tether_upstream_reuse_waits_timed_out_total", "counter",
         "Requests that cannot be replayed whose wait for a connection finishing an exchange ran out (a new one then).",
         PM(reuse_waits[1]), false},
        {"tether_upstream_learn_fallbacks_total", "counter",
         "Closes earlier than a deadline learned above the hint (the pool went back to the hint).", PM(learn_fallbacks),
         false},
    };
    for (size_t k = 0; k < TT_ARRAY_SIZE(pool_series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s %s\n", pool_series[k].name, pool_series[k].help,
                          pool_series[k].name, pool_series[k].type);
        for (size_t u = 0; u < reg->nups; u++)
            for (size_t s = 0; s < reg->ups[u].nservers; s++) {
                const void *base = &reg->pool_m[reg->ups[u]._first_server + s];
                if (pool_series[k].gauge)
                    tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %lld\n", pool_series[k].name,
                                      reg->ups[u].name, reg->ups[u].servers[s].name,
                                      (long long)sum_g(base, pool_series[k].off, pstride, reg->nworkers));
                else
                    tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %llu\n", pool_series[k].name,
                                      reg->ups[u].name, reg->ups[u].servers[s].name,
                                      (unsigned long long)sum_u(base, pool_series[k].off, pstride, reg->nworkers));
            }
    }
    render_by_reason(out, len, cap, reg, "tether_upstream_retired_total",
                     "Upstream connections closed by the pool, by reason.", PM(retired), TT_RETIRE__COUNT, retire_name,
                     TT_RETIRE_DNS_CHANGED);
    render_by_reason(out, len, cap, reg, "tether_upstream_open_reasons_total",
                     "Why requests got a new upstream connection rather than a parked one.", PM(opens), TT_OPEN__COUNT,
                     open_name, -1);
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_handshake_seconds_total Time spent connecting (TCP and TLS handshakes) "
                      "on the connections opened.\n# TYPE tether_upstream_handshake_seconds_total counter\n");
    for (size_t u = 0; u < reg->nups; u++)
        for (size_t s = 0; s < reg->ups[u].nservers; s++)
            tt_metrics_printf(
                out, len, cap, "tether_upstream_handshake_seconds_total{upstream=\"%s\",server=\"%s\"} %.6f\n",
                reg->ups[u].name, reg->ups[u].servers[s].name,
                (double)sum_u(&reg->pool_m[reg->ups[u]._first_server + s], PM(handshake_us), pstride, reg->nworkers) /
                    1e6);
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_max_connections Open connections allowed to the server, all workers "
                      "together (0: no limit).\n# TYPE tether_upstream_max_connections gauge\n");
    for (size_t u = 0; u < reg->nups; u++)
        for (size_t s = 0; s < reg->ups[u].nservers; s++)
            tt_metrics_printf(out, len, cap, "tether_upstream_max_connections{upstream=\"%s\",server=\"%s\"} %llu\n",
                              reg->ups[u].name, reg->ups[u].servers[s].name,
                              (unsigned long long)reg->ups[u].pool.max_connections * reg->nworkers);
    /* What each worker measured or learned on its own: the largest is shown. */
    static const struct {
        const char *name, *help;
        size_t off;
        double scale; /* to seconds */
    } max_series[] = {
        {"tether_upstream_hinted_idle_timeout_seconds",
         "The server's last Keep-Alive: timeout= hint, when honoured (max over workers; 0: none seen).", PM(hint_ms),
         1e-3},
        {"tether_upstream_learned_idle_timeout_seconds",
         "Idle timeout learned from upstream closes, for a server that sends no hint (max over workers; 0: none).",
         PM(learned_ms), 1e-3},
        {"tether_upstream_learned_above_hint_seconds",
         "Idle timeout learned above the server's hint, when deadlines follow it (max over workers; 0: none).",
         PM(above_ms), 1e-3},
        {"tether_upstream_margin_seconds",
         "How long before a hinted or learned idle timeout parked connections leave service (max over workers).",
         PM(margin_ms), 1e-3},
        {"tether_upstream_rtt_seconds",
         "Smoothed round trip from a request to its first response byte (max over workers; 0: none yet).", PM(rtt_us),
         1e-6},
    };
    for (size_t k = 0; k < TT_ARRAY_SIZE(max_series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s gauge\n", max_series[k].name, max_series[k].help,
                          max_series[k].name);
        for (size_t u = 0; u < reg->nups; u++)
            for (size_t s = 0; s < reg->ups[u].nservers; s++) {
                int64_t mx = 0;
                for (uint32_t w = 0; w < reg->nworkers; w++) {
                    const tt_pool_metrics_t *m = &reg->pool_m[w * reg->nservers + reg->ups[u]._first_server + s];
                    mx = TT_MAX(mx, LOAD(*(const tt_gauge_t *)(const void *)((const char *)m + max_series[k].off)));
                }
                tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",server=\"%s\"} %g\n", max_series[k].name,
                                  reg->ups[u].name, reg->ups[u].servers[s].name, (double)mx * max_series[k].scale);
            }
    }
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_queue_wait_seconds Time requests waited for an upstream connection.\n"
                      "# TYPE tether_upstream_queue_wait_seconds summary\n");
    for (size_t u = 0; u < reg->nups; u++)
        for (size_t s = 0; s < reg->ups[u].nservers; s++) {
            const void *base = &reg->pool_m[reg->ups[u]._first_server + s];
            tt_metrics_printf(out, len, cap,
                              "tether_upstream_queue_wait_seconds_sum{upstream=\"%s\",server=\"%s\"} %g\n"
                              "tether_upstream_queue_wait_seconds_count{upstream=\"%s\",server=\"%s\"} %llu\n",
                              reg->ups[u].name, reg->ups[u].servers[s].name,
                              (double)sum_u(base, PM(queue_wait_ms.sum), pstride, reg->nworkers) / 1000.0,
                              reg->ups[u].name, reg->ups[u].servers[s].name,
                              (unsigned long long)sum_u(base, PM(queue_wait_ms.count), pstride, reg->nworkers));
        }
    render_latency(out, len, cap, reg);
    render_dns(out, len, cap, reg);
    render_h2(out, len, cap, reg);
    /* The configuration the advisor compares the counters with (tether advise runs in another process). */
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_pool_idle_timeout_seconds The pool's idle_timeout.\n"
                      "# TYPE tether_upstream_pool_idle_timeout_seconds gauge\n");
    for (size_t u = 0; u < reg->nups; u++)
        tt_metrics_printf(out, len, cap, "tether_upstream_pool_idle_timeout_seconds{upstream=\"%s\"} %g\n",
                          reg->ups[u].name, (double)reg->ups[u].pool.idle_timeout_ms / 1000.0);
    tt_metrics_printf(
        out, len, cap,
        "# HELP tether_upstream_max_idle The pool's max_idle (parked connections per worker per server).\n"
        "# TYPE tether_upstream_max_idle gauge\n");
    for (size_t u = 0; u < reg->nups; u++)
        tt_metrics_printf(out, len, cap, "tether_upstream_max_idle{upstream=\"%s\"} %u\n", reg->ups[u].name,
                          reg->ups[u].pool.max_idle);
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_tcp_keepalive_seconds TCP keepalive idle time before the first probe on "
                      "upstream sockets (0: off).\n"
                      "# TYPE tether_upstream_tcp_keepalive_seconds gauge\n");
    for (size_t u = 0; u < reg->nups; u++) {
        const tt_tcp_keepalive_t *ka = &reg->ups[u].pool.tcp_keepalive;
        tt_metrics_printf(out, len, cap, "tether_upstream_tcp_keepalive_seconds{upstream=\"%s\"} %d\n",
                          reg->ups[u].name, ka->enabled ? ka->idle_s : 0);
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } cause_series[] = {
        {"tether_upstream_generated_total", "Responses tether generated itself (502/503/504), by cause.",
         XM(generated)},
        {"tether_upstream_replays_total", "Requests replayed on a new connection after a stale reuse, by cause.",
         XM(replays)},
        {"tether_upstream_next_server_total", "Requests sent to the next server after a failure, by cause.",
         XM(next_server)},
    };
    static const struct {
        const char *name, *help;
        size_t off;
    } buffer_series[] = {
        {"tether_request_buffered_total",
         "Requests whose content was read whole before an upstream connection was taken (request_buffering).",
         XM(buffered)},
        {"tether_request_buffer_files_total",
         "Buffered requests whose content went past request_buffer_memory to a temporary file.", XM(buffer_files)},
    };
    for (size_t k = 0; k < TT_ARRAY_SIZE(buffer_series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s counter\n", buffer_series[k].name,
                          buffer_series[k].help, buffer_series[k].name);
        for (size_t u = 0; u < reg->nups; u++)
            tt_metrics_printf(
                out, len, cap, "%s{upstream=\"%s\"} %llu\n", buffer_series[k].name, reg->ups[u].name,
                (unsigned long long)sum_u(&reg->proxy_m[u], buffer_series[k].off, xstride, reg->nworkers));
    }
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_upstream_requests_total Requests proxied, by upstream.\n"
                      "# TYPE tether_upstream_requests_total counter\n");
    for (size_t u = 0; u < reg->nups; u++)
        tt_metrics_printf(out, len, cap, "tether_upstream_requests_total{upstream=\"%s\"} %llu\n", reg->ups[u].name,
                          (unsigned long long)sum_u(&reg->proxy_m[u], XM(requests), xstride, reg->nworkers));
    for (size_t k = 0; k < TT_ARRAY_SIZE(cause_series); k++) {
        tt_metrics_printf(out, len, cap, "# HELP %s %s\n# TYPE %s counter\n", cause_series[k].name,
                          cause_series[k].help, cause_series[k].name);
        for (size_t u = 0; u < reg->nups; u++)
            for (int c = 1; c < TT_CAUSE__COUNT; c++)
                tt_metrics_printf(out, len, cap, "%s{upstream=\"%s\",cause=\"%s\"} %llu\n", cause_series[k].name,
                                  reg->ups[u].name, tt_proxy_cause_name((tt_proxy_cause_t)c),
                                  (unsigned long long)sum_u(&reg->proxy_m[u],
                                                            cause_series[k].off + (size_t)c * sizeof(tt_counter_t),
                                                            xstride, reg->nworkers));
    }
}
