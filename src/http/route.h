/* route.h -- handlers, virtual hosts and the prefix router that picks one per request
 *
 * A router is plain data built from the configuration (main thread) and read-only while workers serve: every
 * worker reads it at once without a lock, and a reload builds a new one. Virtual hosts group routes by the name
 * the client asked for (Host, the absolute-form authority or HTTP/2 :authority, and on TLS the SNI name, RFC 6066
 * 3); routes without a virtual host belong to vhost 0, which also serves the default virtual host.
 */
#ifndef TT_HTTP_ROUTE_H
#define TT_HTTP_ROUTE_H

#include "http/msg.h"

/** A kind of handler (static files, status, proxy). */
typedef struct tt_handler_ops {
    const char *name;
    /** Per-worker state for route configuration `conf`; called on the worker's thread before it serves.
     *  Returns the state (NULL is allowed) owned by the worker until worker_free. */
    void *(*worker_init)(const void *conf, tt_worker_t *w);
    /** Frees what worker_init returned; on the worker's thread. May be NULL. */
    void (*worker_free)(void *state);
    /** Handles one request; must lead to exactly one tt_req_respond(). */
    void (*handle)(void *state, tt_req_t *req);
    /** True: handle() may answer later (it sets hooks with tt_req_set_hooks) and receives the request
     *  content through them. False: it answers before returning; the server discards any content. */
    bool async;
    /** True: a request for a route's prefix without its final '/' ("/app" for "/app/") is answered 301 to the
     *  prefix, as nginx does for proxy_pass locations; false: it is routed like any other path (static files). */
    bool slash_redirect;
} tt_handler_ops_t;

/** A route: requests of virtual host `vhost` whose path starts with `prefix` go to `ops` with `conf`. */
typedef struct tt_route {
    char *prefix; /* owned */
    size_t prefix_len;
    size_t vhost; /* index in the router's vhosts; 0: no virtual host of its own (the default's) */
    const tt_handler_ops_t *ops;
    const void *conf; /* handler configuration, owned by whoever built the router */
} tt_route_t;

/** A virtual host: its names, lower-case, exact ("www.example") or wildcard ("*.example": any name ending in
 *  ".example", not "example" itself). */
typedef struct tt_vhost {
    char *name; /* as configured, for logs; owned */
    char **names;
    size_t nnames;
} tt_vhost_t;

/** Routes ordered by descending prefix length, so the first match is the longest; and the virtual hosts. */
typedef struct tt_router {
    tt_route_t *routes;
    size_t n;
    tt_vhost_t *vhosts; /* vhosts[0] is the unnamed one of the routes without a vhost (created on first use) */
    size_t nvhosts;
    size_t default_vhost; /* where a name no vhost lists goes; 0 unless tt_router_set_default() */
} tt_router_t;

/** Adds a route to the routes without a virtual host (copies `prefix`). */
void tt_router_add(tt_router_t *r, const char *prefix, const tt_handler_ops_t *ops, const void *conf);
/** Adds a route to virtual host `vhost` (an index from tt_router_add_vhost(), or 0). */
void tt_router_add_in(tt_router_t *r, size_t vhost, const char *prefix, const tt_handler_ops_t *ops, const void *conf);
/** Adds a virtual host named `name` answering to `names` (copied, lower-cased); returns its index (>= 1). */
size_t tt_router_add_vhost(tt_router_t *r, const char *name, const char *const *names, size_t nnames);
/** Makes `vhost` the default: it serves names no vhost lists, and the routes without a vhost join it. */
void tt_router_set_default(tt_router_t *r, size_t vhost);
/**
 * The virtual host for `host` (a Host value: "Name", "name:port", "[v6]:port"; the port and a final dot are
 * ignored, ASCII case too): the vhost listing it exactly, else the one with the longest matching wildcard, else
 * the default. An empty `host` gets the default.
 */
size_t tt_router_vhost(const tt_router_t *r, tt_str_t host);
/** Index of the longest route of virtual host `vhost` whose prefix starts `path`, or -1. The default vhost also
 *  has the routes without a vhost; at equal length its own route wins. */
int tt_router_match_in(const tt_router_t *r, size_t vhost, tt_str_t path);
/** tt_router_match_in() for the default virtual host. */
int tt_router_match(const tt_router_t *r, tt_str_t path);
/**
 * Picks the route for `req` (during handle's caller, its views valid): the virtual host from req->authority; on
 * TLS, when the client sent SNI `sni` (NULL: none) and it selects another virtual host than the authority does,
 * 421 Misdirected Request (RFC 9110 15.5.20); then the longest prefix. When no route is exactly the path but one
 * is the path followed by '/' and its handler asks for it (slash_redirect), a 301 to that path with '/' (query kept),
 * as nginx does for such locations; no route at all: 404. Returns the route's index, or -1 when it answered the request
 * itself. Owning worker.
 */
int tt_router_route(const tt_router_t *r, tt_req_t *req, const char *sni);
/** Frees the routes (not their conf) and the virtual hosts. */
void tt_router_dispose(tt_router_t *r);

#endif
