/* worker.h -- one worker thread's state: its loop, listeners, connections, pools and metric shard
 *
 * The struct is shared by server.c and h1_conn.c only; handlers use the accessors at the end. Everything
 * here belongs to the worker's thread.
 */
#ifndef TT_HTTP_WORKER_H
#define TT_HTTP_WORKER_H

#include "core/buf.h"
#include "core/rand.h"
#include "core/slab.h"
#include "core/tq.h"
#include "http/accesslog.h"
#include "http/server.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct tt__wgen tt__wgen_t;

/** A listener as one worker runs it in one configuration generation: its socket and the timeout queues of its
 *  connections. A listener kept by a reload gets a new lstate in the new generation (same socket, new policy and
 *  queues, same `uid`); connections move to it at their next request boundary (tt__lstate_follow). */
typedef struct tt__lstate {
    const tt_listen_policy_t *policy;
    struct tt_tls_server *tls; /* this worker's TLS contexts, NULL for plain TCP */
    tt_worker_t *w;
    tt__wgen_t *gen;  /* the generation it belongs to */
    uint32_t uid;     /* the listener's identity across generations (address and TLS-ness) */
    tt_io_t io;       /* listening socket; fd -1 once closed */
    tt_tq_t header_q; /* reading a request head (or waiting for the first one) */
    tt_tq_t body_q;   /* reading request content */
    tt_tq_t send_q;   /* output blocked on the peer */
    tt_tq_t linger_q; /* lingering close */
    tt_tq_t race_q;   /* race window: half-closed after an idle close, reading for requests that cross the FIN */
    tt_listener_metrics_t *m; /* this listener's part of the worker's shard */
    size_t nidle;             /* idle timeout buckets (tt_keepalive_buckets) */
    uint64_t idle_ms[TT_KA_MAX_BUCKETS];
    tt_tq_t idle_q[TT_KA_MAX_BUCKETS];
} tt__lstate_t;

/**
 * One worker's instance of a configuration generation (docs/design.md "Reload"): its listeners' states and its
 * routes' handler states. Counted references: one while it is the worker's current generation, one per connection
 * whose `ls` is one of its lstates, one per asynchronous request (h1) or stream (h2) dispatched through its router.
 * At zero it is freed at the end of the loop turn (its handlers' worker_free, its TLS contexts and queues), which
 * also releases the server-wide generation. Owning worker only.
 */
struct tt__wgen {
    tt_list_t link; /* in w->gens, oldest first */
    tt_worker_t *w;
    struct tt__gen *gen; /* server-wide: listener confs, router; released when this is freed */
    tt__lstate_t *ls;    /* one per listener of the generation */
    size_t nls;
    const tt_router_t *router; /* NULL: no route */
    void **route_state;        /* per route: what its handler's worker_init returned */
    uint32_t refs;
    tt_defer_t free_later;
};

struct tt_worker {
    uint32_t id;
    uint32_t nworkers; /* in the server: connection ids are seq * nworkers + id */
    tt_server_t *srv;
    const tt_server_conf_t *conf;
    tt_loop_t *loop;
    pthread_t thread;
    tt_metrics_shard_t metrics;
    tt_bufpool_t bufs;      /* connection read/write blocks */
    tt_bufpool_t h1_active; /* the working state of HTTP/1 connections that are not idle (h1_conn.c) */
    tt_slab_t slab;         /* HTTP/2 streams and nghttp2's allocations (h2_conn.c) */
    tt__wgen_t *cur;        /* the current generation: new connections and new requests use it */
    tt_list_t gens;         /* every generation still referenced, oldest first (cur is the last) */
    tt_list_t conns;        /* every open connection */
    uint32_t nconns;
    uint64_t conn_seq;
    bool accept_paused;
    bool draining;
    int wake_fd;                       /* eventfd: drain and reload requests from other threads */
    _Atomic(struct tt__gen *) pending; /* a generation the main thread published, applied at the next wake-up */
    _Atomic(bool) drain_asked;
    tt_io_t wake_io;
    tt_timer_t accept_retry; /* after EMFILE/ENFILE */
    tt_timer_t drain_deadline;
    int64_t date_s;
    char date_fields[64]; /* "Date: <IMF-fixdate>\r\nServer: tether\r\n" */
    size_t date_fields_len;
    tt_accesslog_t alog;
    tt_h1_request_t req; /* parse target, reused for every request head */
    tt_rand_t rng;       /* request ids (tt__req_set_id) */
    char *path_buf;      /* normalized request path of the request being dispatched (tt__worker_path_buf) */
    size_t path_cap;
    tt_h1_response_t up_res;   /* upstream response parse target, shared by every pool of the worker (one call) */
    tt_timer_t report_timer;   /* once per second: walk conns, publish `report` (conn_report.c) */
    pthread_mutex_t report_mu; /* guards `report`: written by this worker, read by the admin thread */
    tt_conn_report_t report;
};

/* Every connection kind (h1, h2) starts with this: the worker's list, its one timeout entry, its ops. */
typedef struct tt__conn tt__conn_t;
typedef struct tt__conn_ops {
    void (*on_timeout)(tt__conn_t *c);                                       /* its timeout queue entry expired */
    void (*close)(tt__conn_t *c, tt_close_reason_t reason);                  /* close at once (eviction) */
    void (*drain)(tt__conn_t *c);                                            /* a graceful drain began */
    void (*abort)(tt__conn_t *c);                                            /* the drain deadline passed */
    void (*info)(const tt__conn_t *c, uint64_t now_ms, tt_conn_info_t *out); /* for the status page */
} tt__conn_ops_t;
struct tt__conn {
    tt_list_t link;   /* in w->conns */
    tt_tq_entry_t tq; /* in at most one of its listener's timeout queues */
    const tt__conn_ops_t *ops;
};

/* server.c, for the connections */
/** Accounts for a closed connection and resumes accepting if that was waiting. */
void tt__worker_conn_closed(tt_worker_t *w);
/** A connection became idle: resumes accepting if that was paused at the limit (it can now be evicted). */
void tt__worker_conn_idle(tt_worker_t *w);
/** Makes room for one connection: closes at once the oldest connection in a race window (it keeps its own close
 *  reason), else the oldest idle connection (reason evicted; it enters its race window, so the worker may hold one
 *  connection above max_connections until that window ends or the next eviction cuts it). False when there is
 *  neither. */
bool tt__worker_evict_oldest(tt_worker_t *w);
/** "Date: ...\r\nServer: tether\r\n", refreshed once per second. */
tt_str_t tt__worker_date_fields(tt_worker_t *w);
/** A scratch of at least `n` bytes for the normalized path of the request being dispatched. Like the parse target
 *  (w->req) it lives for one call: views into it are valid during handle() only, and the next request reuses it. */
char *tt__worker_path_buf(tt_worker_t *w, size_t n);
/** Sets rq->path and rq->query from the path and query of a request-target `t` (origin-form, or what follows the
 *  authority of an absolute-form one): the path normalized (tt_uri_normalize_path) into the worker's path scratch
 *  when it is not normal already, "/" when empty. False when the path must be refused (400). rq->worker is set. */
bool tt__req_set_path(tt_req_t *rq, tt_str_t t);

/** Takes a reference on `g` (a connection on one of its listeners, or a request dispatched through its router). */
static inline void tt__wgen_ref(tt__wgen_t *g)
{
    g->refs++;
}
/** Drops a reference; at zero `g` is freed at the end of the loop turn. */
void tt__wgen_unref(tt__wgen_t *g);
/**
 * The lstate a connection on `ls` should use from its next request on: the current generation's lstate of the same
 * listener (its reference moved there from `ls`'s generation), or `ls` itself when it is current or its listener
 * was removed by a reload (the connection then finishes under its old policy). At a request boundary only: the
 * connection must be in none of `ls`'s timeout queues.
 */
tt__lstate_t *tt__lstate_follow(tt__lstate_t *ls);
/** The index of `ls`'s listener in the worker's current generation (what tt_server_bound_addr() and the status page
 *  number listeners by), or UINT16_MAX when a reload removed it. Owning worker only. */
uint16_t tt__lstate_index(const tt__lstate_t *ls);
/* reqid.c */
/** Prepares `rq`'s request id as w->conf->request_id says: the first X-Request-Id of `h` (may be NULL) when it is
 *  1 to TT_REQUEST_ID_MAX visible ASCII bytes and the mode keeps it, else 32 random hex digits; none when off. Made
 *  now when the access log reads $request_id (its line may be written after `h` is gone), else at the first
 *  tt_req_id() (rq->head and rq->worker must then be set). Call before handle(). */
void tt__req_set_id(tt_req_t *rq, tt_worker_t *w, const tt_h1_request_t *h);

/** Timeout callback of every connection queue: dispatches to the connection's on_timeout. */
void tt__conn_on_timeout(tt_tq_entry_t *e);

/* conn_report.c, for server.c */
/** Initialises the worker's report (lock, timer); before the worker runs. */
void tt__worker_report_init(tt_worker_t *w);
/** Publishes a first report and arms the once-a-second timer; on the worker's thread (not for inline servers). */
void tt__worker_report_start(tt_worker_t *w);
/** Disarms the timer; on the worker's thread. */
void tt__worker_report_stop(tt_worker_t *w);
/** Merges the worker's published report into `out`; any thread. */
void tt__worker_report_merge(tt_worker_t *w, tt_conn_report_t *out);
/** Frees the lock; after the worker's thread ended. */
void tt__worker_report_dispose(tt_worker_t *w);

/* h1_conn.c, for server.c */
/** Prepares the worker's pool of HTTP/1 working states (w->h1_active); before the worker runs. Freed with
 *  tt_bufpool_dispose() once every connection is freed. */
void tt__h1_worker_init(tt_worker_t *w);
/** Takes over an accepted socket `fd` from listener `ls` (a TLS listener starts with the handshake). */
void tt__h1_conn_accept(tt__lstate_t *ls, int fd, const tt_addr_t *peer);

/* accessors for handlers */
static inline tt_loop_t *tt_worker_loop(tt_worker_t *w)
{
    return w->loop;
}
static inline uint32_t tt_worker_id(const tt_worker_t *w)
{
    return w->id;
}
static inline tt_metrics_shard_t *tt_worker_metrics(tt_worker_t *w)
{
    return &w->metrics;
}

#endif
