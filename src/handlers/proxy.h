/* proxy.h -- reverse proxy routes: HTTP/1.1 to upstream servers through per-worker pools
 *
 * Forwarding follows RFC 9110 7.6: hop-by-hop fields (Connection and every field it names, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Upgrade, Transfer-Encoding) are dropped -- except Upgrade and Connection: upgrade
 * on a request the route lets through (tt_upgrade_policy_t), whose 101 turns both connections into a byte tunnel
 * (RFC 9110 7.8, net/tunnel.h); interim responses (100, 103, RFC 9110 15.2) pass to the client before the final
 * one; Via and X-Forwarded-* (and
 * Forwarded when configured) are added, bodies stream both ways with backpressure. A request that fails
 * on a reused connection before any response byte is replayed once on a new connection when it is
 * replayable (an idempotent method, RFC 9110 9.2.2, or an Idempotency-Key field, with its content still
 * held). Every 502/503/504 tether generates names its cause in metrics and in the access log.
 *
 * With request buffering (a route's request_buffering = on) the whole request content is read first (reqbuf.h:
 * memory, then an unlinked temporary file), and only then is a server picked and a connection taken: a slow upload
 * holds no upstream connection, the content goes upstream with Content-Length (a chunked request is de-chunked), and
 * the request is replayable whatever its size, since its content is held whole. An origin's final response that
 * comes while the content is still going out (an early 413, 401, redirect) is forwarded; the rest of the content is
 * not sent, and the upstream connection is closed (reset: request bytes are left unsent), never parked.
 */
#ifndef TT_HANDLERS_PROXY_H
#define TT_HANDLERS_PROXY_H

#include "client/pool.h"
#include "net/resolver.h"
#include "net/tls.h"
#include "http/route.h"
#include "handlers/rules.h"

/** How requests are spread over an upstream's servers. */
typedef enum tt_balance { TT_BALANCE_ROUND_ROBIN, TT_BALANCE_LEAST_CONN } tt_balance_t;

/** Why tether answered 502/503/504 itself (metrics: tether_upstream_generated_total{cause}). */
typedef enum tt_proxy_cause {
    TT_CAUSE_NONE = 0,
    TT_CAUSE_CONNECT_REFUSED,        /* 502 */
    TT_CAUSE_CONNECT_TIMEOUT,        /* 504 */
    TT_CAUSE_CONNECT_ERROR,          /* 502 */
    TT_CAUSE_RESET_BEFORE_RESPONSE,  /* 502 */
    TT_CAUSE_CLOSED_BEFORE_RESPONSE, /* 502 */
    TT_CAUSE_RESPONSE_TIMEOUT,       /* 504 */
    TT_CAUSE_SEND_TIMEOUT,           /* 504 */
    TT_CAUSE_INVALID_RESPONSE,       /* 502 */
    TT_CAUSE_TLS_ERROR,              /* 502: the TLS handshake with the upstream failed */
    TT_CAUSE_ALL_SERVERS_DOWN,       /* 503 */
    TT_CAUSE_POOL_EXHAUSTED,         /* 503 */
    TT_CAUSE_PING_TIMEOUT,           /* 502: an HTTP/2 upstream connection missed its PING under the stream */
    TT_CAUSE_GRPC_DEADLINE,          /* 504: a gRPC request's grpc-timeout passed (gRPC status 4) */
    TT_CAUSE__COUNT
} tt_proxy_cause_t;

/** Static name of `c` ("pool_exhausted"). */
const char *tt_proxy_cause_name(tt_proxy_cause_t c);

/** What an upstream's servers are spoken to with (`protocol`). */
typedef enum tt_up_protocol {
    TT_UP_PROTO_HTTP1 = 0, /* HTTP/1.1 (the default) */
    TT_UP_PROTO_H2,        /* HTTP/2: prior knowledge on http:// (RFC 9113 3.3), ALPN h2 on https:// (3.2) */
    TT_UP_PROTO_AUTO,      /* https://: whatever ALPN selects (h2 or http/1.1); http://: HTTP/1.1 */
} tt_up_protocol_t;

/** One server of an upstream. */
typedef struct tt_upstream_server {
    tt_addr_t addr;
    char *name;               /* as configured ("127.0.0.1:8081", "backend:80"), owned */
    bool tls;                 /* https:// */
    char *host;               /* the host name for SNI and certificate checks; NULL for an IP literal; owned */
    tt_tls_client_t *_tls;    /* set by tt_proxy_registry_new */
    tt_tls_client_t *_tls_h2; /* protocol h2 or auto over https://: a context offering h2 in ALPN */
    tt_dns_name_t *_dns;      /* set by tt_proxy_registry_watch: the name it follows; NULL for an IP literal or when
                               * resolve_interval is 0 (the start-up address stays) */
} tt_upstream_server_t;

/** An upstream: `[upstream NAME]`. */
typedef struct tt_upstream_conf {
    char *name; /* owned */
    tt_upstream_server_t *servers;
    size_t nservers;
    tt_balance_t balance;
    bool reuse_safe;        /* the first request of a client connection goes to a new upstream connection */
    uint64_t replay_buffer; /* request content bytes held for a replay */
    bool forwarded;         /* add an RFC 7239 Forwarded field */
    bool expose_cause; /* name the cause of tether's own 502/503/504 in X-Tether-Cause (metrics and log always do) */
    const tt_cidr_t *trusted; /* peers whose X-Forwarded-For, X-Real-IP, X-Forwarded-Proto/-Host and Forwarded are
                                 kept (appended to); not owned ([server] trusted_proxies) */
    size_t ntrusted;
    bool replay;     /* replay a replayable request that failed on a reused connection (recover) */
    char *host;      /* replaces the Host field when set, owned */
    char *tls_ca;    /* CA file for https:// servers; NULL: the system store */
    bool tls_verify; /* check their certificate chain and name */
    char *tls_cert;  /* client certificate (PEM), optional */
    char *tls_key;
    char *tls_sni; /* server name to send instead of the host's */
    tt_pool_conf_t pool;
    uint64_t resolve_interval_ms; /* a server given by name is resolved again this often; 0: never */
    tt_up_protocol_t protocol;
    bool _h2c;                         /* conf: a server was written h2c:// (it needs protocol = h2) */
    uint64_t h2_window;                /* h2_upstream_window: receive window per stream and connection, bytes */
    uint64_t h2_ping_ms;               /* h2_ping_interval: PING an h2 connection after this long without a frame */
    uint64_t h2_ping_timeout_ms;       /* h2_ping_timeout: an unanswered PING closes the connection */
    uint64_t h2_alpn_recheck_ms;       /* h2_alpn_recheck: `auto` offers h2 again this long after http/1.1; 0: never */
    bool _tcpka_auto;                  /* conf: derive TCP keepalive from the pool settings */
    bool _max_conns_default;           /* conf: max_connections not set: TT_PROXY_MAX_CONNECTIONS split by workers */
    bool _cli;                         /* conf: created by --proxy/--route */
    int _tls_cert_line, _tls_key_line; /* conf: where the file set tls_cert and tls_key, for errors */
    /* filled by tt_proxy_registry_new */
    size_t _index;
    size_t _first_server; /* index of servers[0] among all upstreams' servers */
} tt_upstream_conf_t;

typedef struct tt_proxy_registry tt_proxy_registry_t;

/** Which requests carrying Upgrade (RFC 9110 7.8) a route passes on to become tunnels after a 101. */
typedef enum tt_upgrade_policy {
    TT_UPGRADE_WEBSOCKET = 0, /* only Upgrade: websocket (RFC 6455); the default */
    TT_UPGRADE_ANY,           /* any protocol but h2c (tether speaks h2c itself) */
    TT_UPGRADE_OFF,           /* none: such a request is answered 501, never silently downgraded */
} tt_upgrade_policy_t;
/** The default limit of open connections to one upstream server from the whole process, split over the workers
 *  (each gets ceil(1024 / workers)): what an origin sized for a few hundred busy clients takes without falling
 *  over, far above what keep-alive reuse needs (docs/config.md, "max_connections"). */
#define TT_PROXY_MAX_CONNECTIONS 1024

/** Configuration of one proxy route. */
typedef struct tt_proxy_conf {
    const tt_upstream_conf_t *up;
    const char *route; /* the route prefix, for logs and leak reports */
    tt_proxy_registry_t *reg;
    tt_upgrade_policy_t upgrade;
    uint64_t tunnel_idle_ms;       /* a tunnel that moves no byte either way this long is closed */
    const tt_route_rules_t *rules; /* the route's path and field rules (rules.h); NULL: none; not owned */
    bool buffering;                /* request_buffering: read the whole request content before taking a connection */
    uint64_t buffer_memory;        /* request_buffer_memory: content bytes kept in memory; beyond, a temporary file */
    const char *temp_dir;          /* where those files go (reqbuf.h); NULL: /tmp; not owned */
} tt_proxy_conf_t;

/** The reverse proxy handler (asynchronous; takes request content). */
extern const tt_handler_ops_t tt_proxy_ops;

/**
 * Creates the shared state of all proxy routes: per-worker pools and metric shards for `n` upstreams
 * (not owned; they must outlive it) served by `nworkers` workers, and a TLS client context per https://
 * server. An upstream without its own max_connections gets ceil(TT_PROXY_MAX_CONNECTIONS / nworkers) per worker. NULL
 * with `err` when a TLS setting cannot be loaded (CA file, client certificate).
 * `prev` (NULL at start-up) is the registry of the generation a reload replaces: as each worker builds its state
 * for the new one, the pools of the servers that remain (same upstream name, same `server` as written, http://)
 * are carried over with their parked connections and metric series, and follow the new settings
 * (tt_pool_rebind); the old generation keeps using them until it is released, and the pools of removed servers
 * drain with it. `prev` must stay alive until every worker applied the new generation. Main thread.
 */
tt_proxy_registry_t *tt_proxy_registry_new(tt_upstream_conf_t *ups, size_t n, uint32_t nworkers,
                                           tt_proxy_registry_t *prev, char *err, size_t errlen);
/**
 * Makes every server of the registry given by name (not an IP literal) follow what it resolves to, every
 * resolve_interval of its upstream (0: not at all), through `res` (not owned; it must outlive the registry). Each
 * worker's pools learn of a change through an eventfd on their loop and retire connections to addresses that left
 * the set at their next idle moment (tt_pool_set_addrs). Before the registry is used by any worker; main thread.
 */
void tt_proxy_registry_watch(tt_proxy_registry_t *reg, tt_resolver_t *res);
/** Frees the registry (after the workers stopped). Any thread (a generation is released where its last use ends). */
void tt_proxy_registry_free(tt_proxy_registry_t **reg);
/** Appends the upstream metrics (Prometheus text) to a growable string; a tt_status_render_fn. Any thread. */
void tt_proxy_render_metrics(void *reg, char **out, size_t *len, size_t *cap);

/**
 * Derives TCP keepalive for upstream sockets from the pool settings (docs/config.md): probes start after
 * a quarter of idle_timeout (1 s..300 s), every third of that (1 s..75 s), 3 of them, so a peer that
 * vanished while a connection is parked is found before the connection would be reused.
 */
void tt_proxy_default_tcp_keepalive(const tt_pool_conf_t *pc, tt_tcp_keepalive_t *ka);

#endif
