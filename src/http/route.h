/* route.h -- handlers and the prefix router that picks one per request */
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
} tt_handler_ops_t;

/** A route: requests whose path starts with `prefix` go to `ops` with `conf`. */
typedef struct tt_route {
    char *prefix; /* owned */
    size_t prefix_len;
    const tt_handler_ops_t *ops;
    const void *conf; /* handler configuration, owned by whoever built the router */
} tt_route_t;

/** Routes ordered by descending prefix length, so the first match is the longest. */
typedef struct tt_router {
    tt_route_t *routes;
    size_t n;
} tt_router_t;

/** Adds a route (copies `prefix`). */
void tt_router_add(tt_router_t *r, const char *prefix, const tt_handler_ops_t *ops, const void *conf);
/** Index of the longest route whose prefix starts `path`, or -1. */
int tt_router_match(const tt_router_t *r, tt_str_t path);
/** Frees the routes (not their conf). */
void tt_router_dispose(tt_router_t *r);

#endif
