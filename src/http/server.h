/* server.h -- the HTTP server: listeners, worker threads, their connections, graceful drain
 *
 * One worker per thread, each with its own event loop and its own SO_REUSEPORT socket per listener
 * (DESIGN.md "Process model"). The functions below are for the thread that created the server.
 */
#ifndef TT_HTTP_SERVER_H
#define TT_HTTP_SERVER_H

#include "core/loop.h"
#include "http/keepalive.h"
#include "http/route.h"
#include "metrics/metrics.h"
#include "net/sock.h"

/** HTTP/2 settings of one listener. */
typedef struct tt_h2_policy {
    bool enabled;                    /* h2 by ALPN, and cleartext with prior knowledge on plain listeners */
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t initial_window;         /* SETTINGS_INITIAL_WINDOW_SIZE, bytes */
    uint32_t header_table_size;      /* SETTINGS_HEADER_TABLE_SIZE (HPACK), bytes */
    uint64_t ping_interval_ms;       /* PING after this long without a frame; 0 = off */
    uint64_t ping_timeout_ms;        /* a PING not acknowledged in this closes the connection (ping_timeout) */
    uint32_t reset_burst;            /* client stream resets allowed at once (rapid reset guard)... */
    uint32_t reset_rate;             /* ...and per second after; beyond: GOAWAY ENHANCE_YOUR_CALM */
} tt_h2_policy_t;

/** Connection policy of one listener (docs/config.md gives each default). */
typedef struct tt_listen_policy {
    tt_ka_policy_t ka;          /* idle timeout (ms), max requests, max lifetime (ms) */
    uint64_t header_timeout_ms; /* first byte of a request head to its end */
    uint64_t body_timeout_ms;   /* between reads of request content */
    uint64_t send_timeout_ms;   /* between writes the peer accepts */
    bool keepalive_header;      /* send `Keep-Alive: timeout=T, max=M` on persistent responses */
    uint64_t race_window_ms;    /* after tether's FIN on an idle close, how long it reads for racing requests;
                                 * 0 = close at once */
    const char *name;           /* the listener's name in metrics (`[listen NAME]`, "default"); NULL = "default";
                                 * not owned */
    tt_tcp_keepalive_t tcp_keepalive;
    uint64_t max_body_bytes; /* request content limit, bytes; larger -> 413 */
    tt_h1_limits_t limits;   /* request head limits */
    tt_h2_policy_t h2;       /* HTTP/2 settings */
} tt_listen_policy_t;

/** One listening address and the policy its connections follow. */
typedef struct tt_tls_source tt_tls_source_t;

typedef struct tt_listener_conf {
    tt_addr_t addr;                   /* port 0: the kernel picks one, shared by all workers */
    const tt_listen_policy_t *policy; /* not owned; must outlive the server */
    tt_tls_source_t *tls;             /* NULL: plain TCP; not owned */
} tt_listener_conf_t;

/** What a request's X-Request-Id becomes ([log] request_id). */
typedef enum tt_request_id_mode {
    TT_REQUEST_ID_OFF = 0, /* none: nothing generated, nothing added upstream, $request_id is "-" */
    TT_REQUEST_ID_ON,      /* the client's when valid, else a generated one; forwarded upstream */
    TT_REQUEST_ID_GENERATE /* always a generated one (the client's is replaced); forwarded upstream */
} tt_request_id_mode_t;

/** Server settings; every pointer must outlive the server. */
typedef struct tt_server_conf {
    uint32_t workers;          /* worker threads, >= 1 */
    bool inline_worker;        /* one worker, run by tt_server_run_inline() on the caller's thread */
    uint32_t max_connections;  /* per worker; 0 = unlimited */
    uint64_t drain_timeout_ms; /* hard deadline of a graceful drain */
    int backlog;               /* listen(2) backlog */
    const tt_listener_conf_t *listeners;
    size_t nlisteners;
    const tt_router_t *router;
    int access_log_fd;                               /* -1: off; not owned; unused when access_log_file is set */
    const struct tt_accesslog_file *access_log_file; /* NULL, or each worker opens this file itself */
    const char *name;                                /* for logs ("tether", "admin") */
    /* optional: called with release_arg once the listeners and router above are no longer used (a reload replaced
     * them and their last connection is gone, or the server is freed); not called when tt_server_new fails */
    void (*release)(void *arg);
    void *release_arg;

    /* [log]: the access log's format, the request ids */
    const struct tt_accesslog_fmt *access_log_format; /* NULL: the main format; not owned */
    tt_request_id_mode_t request_id;                  /* what each request's id is (reqid.c) */
} tt_server_conf_t;

typedef struct tt_server tt_server_t;

/**
 * Opens every listener for every worker (so start-up errors surface here, before any thread starts)
 * and prepares the workers. Returns NULL and writes a reason into `err` (`errlen` bytes) on failure.
 */
tt_server_t *tt_server_new(const tt_server_conf_t *conf, char *err, size_t errlen);
/** The address listener `i` of the current generation is bound to (with the kernel's port when 0 was asked). */
const tt_addr_t *tt_server_bound_addr(const tt_server_t *srv, size_t i);
/** The name listener `i` carries in metrics: its policy's name, or "default". */
const char *tt_server_listener_name(const tt_server_t *srv, size_t i);
/** Starts the worker threads. 0, or -errno when a thread could not be created: those already started have
 *  then been drained and joined (the server can be freed). */
int tt_server_start(tt_server_t *srv);
/** Loop of worker `i`; for registering extra ios (signals) before tt_server_run_inline(). */
tt_loop_t *tt_server_loop(tt_server_t *srv, uint32_t i);
/** Runs the inline worker on this thread until tt_server_stop_inline(). */
void tt_server_run_inline(tt_server_t *srv);
/** For tests and fuzzers: prepares the inline worker (route state, listeners) without running its loop; the
 *  caller turns it (tt_loop_run_once on tt_server_loop(srv, 0)) and ends with tt_server_finish_inline(). */
void tt_server_start_inline(tt_server_t *srv);
/** Closes every connection of the inline worker, frees its route state and runs its deferred frees. */
void tt_server_finish_inline(tt_server_t *srv);
/** For tests and fuzzers: the inline worker takes over the connected, non-blocking stream socket `fd` (which it
 *  then owns) as if listener `listener` had accepted it from `peer`. */
void tt_server_adopt(tt_server_t *srv, size_t listener, int fd, const tt_addr_t *peer);
/** Connections open in all workers (a snapshot for the owning thread of an inline server, or after join). */
uint32_t tt_server_open_connections(const tt_server_t *srv);
/** Makes tt_server_run_inline() return at the end of the current turn; from the inline worker's thread. */
void tt_server_stop_inline(tt_server_t *srv);
/** Starts a graceful drain on every worker: stop accepting, close idle connections, finish in-flight
 *  responses with `Connection: close`, force-close at the drain deadline. Any thread, async-signal-safe. */
void tt_server_drain(tt_server_t *srv);
/** Waits for every worker thread to finish (after a drain). */
void tt_server_join(tt_server_t *srv);
/** Frees the server; its threads must have been joined. Sets `*srv` to NULL. */
void tt_server_free(tt_server_t **srv);
/** An eventfd that counts worker threads that have finished (read it to add them up); for a loop to watch. */
int tt_server_done_fd(const tt_server_t *srv);
/**
 * A new configuration generation for a running server (SIGHUP): its listeners and router, and `release`, called
 * with `arg` once no worker uses the generation any more (every connection and request that started under it is
 * gone) and every older generation was released, from whichever thread dropped the last use (main or a worker).
 * The listeners, their policies and TLS sources and the router must stay valid until then.
 */
typedef struct tt_server_gen_conf {
    const tt_listener_conf_t *listeners;
    size_t nlisteners;
    const tt_router_t *router;
    void (*release)(void *arg);
    void *arg;
} tt_server_gen_conf_t;

/** What a reload changes in the listeners, for the log line. */
typedef struct tt_server_reload_stats {
    size_t kept, added, removed;
} tt_server_reload_stats_t;

/**
 * Hands the generation `gc` to every worker, which applies it on its own thread at its next loop turn: listeners
 * are matched with the current ones by requested address (or bound address) and TLS-ness; a kept one keeps its
 * socket and takes the new policy, an added one is opened here (one SO_REUSEPORT socket per worker), a removed one
 * stops accepting and its connections finish under their old policy. New connections and new requests use the
 * new router and policies; a connection moves to the new policy at its next request boundary (h1); an h2
 * connection keeps its policy (SETTINGS) and routes new streams by the new router. Nothing open is closed.
 * Returns 0 (tt_server_reload_collect() tells when every worker applied it), or -1 with `err` when an added
 * listener cannot be opened, a previous reload is still being applied, or the server drains: nothing changed then
 * and `release` is not called. From the thread that created the server (not for an inline server).
 */
int tt_server_reload(tt_server_t *srv, const tt_server_gen_conf_t *gc, tt_server_reload_stats_t *stats, char *err,
                     size_t errlen);
/** An eventfd that becomes readable as workers apply a reload; for the main loop to watch. */
int tt_server_reload_fd(const tt_server_t *srv);
/** Reads the reload eventfd: true once every worker applied the pending generation. The previous generation is
 *  then released as soon as its last connection or request is gone. Main thread. */
bool tt_server_reload_collect(tt_server_t *srv);
/** The current generation's number: 1 at start, +1 per reload handed to the workers. */
uint64_t tt_server_generation(const tt_server_t *srv);
/** Number of listeners of the current generation (tt_server_bound_addr's range). */
size_t tt_server_nlisteners(const tt_server_t *srv);

/** Number of workers. */
uint32_t tt_server_workers(const tt_server_t *srv);
/** The workers' metric shards, for tt_metrics_render(); `*n` gets their count. */
tt_metrics_shard_t *const *tt_server_shards(const tt_server_t *srv, size_t *n);

/** What a client connection is doing, as the status page shows it. */
typedef enum tt_conn_state {
    TT_CONN_READING = 0, /* waiting for or reading a request (head or content) */
    TT_CONN_WRITING,     /* a request is being answered (handler, upstream, or output queued) */
    TT_CONN_IDLE,        /* between requests (keep-alive) */
    TT_CONN_TUNNEL,      /* bytes relayed both ways after a 101 or CONNECT */
    TT_CONN_HANDSHAKE,   /* TLS handshake */
    TT_CONN_CLOSING,     /* lingering close */
    TT_CONN__STATES
} tt_conn_state_t;
/** Static names: "reading", "writing", "idle", "tunnel", "handshake", "closing". */
extern const char *const tt_conn_state_names[TT_CONN__STATES];

/** One client connection as a worker last published it. */
typedef struct tt_conn_info {
    uint64_t id;
    uint64_t age_ms;  /* since accept */
    uint64_t idle_ms; /* since it became idle; 0 when not idle */
    uint32_t requests;
    uint16_t listener; /* index in tt_server_conf_t.listeners */
    uint8_t state;     /* tt_conn_state_t */
    bool h2, tls;
    tt_addr_t peer;
} tt_conn_info_t;

#define TT_CONN_REPORT_TOP       20 /* connections kept per list */
#define TT_CONN_REPORT_LISTENERS 16 /* listeners counted by state (later ones are added to the last) */

/** The oldest and the longest-idle connections, and the open connections per listener by state. */
typedef struct tt_conn_report {
    tt_conn_info_t oldest[TT_CONN_REPORT_TOP]; /* by age, oldest first */
    size_t noldest;
    tt_conn_info_t idlest[TT_CONN_REPORT_TOP]; /* idle ones by idle time, longest first */
    size_t nidlest;
    uint32_t by_state[TT_CONN_REPORT_LISTENERS][TT_CONN__STATES];
    size_t nlisteners;
} tt_conn_report_t;

/**
 * Merges what every worker published into `out`. Each worker walks its own connections once per second (a timer
 * on its loop) and publishes the result under a per-worker mutex, so the figures are up to a second old; this
 * reads only those published copies, never a worker's lists. Any thread; takes each worker's report lock briefly.
 */
void tt_server_conn_report(tt_server_t *srv, tt_conn_report_t *out);

#endif
