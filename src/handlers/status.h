/* status.h -- the admin endpoints: Prometheus metrics (/metrics) and a JSON summary (/status) */
#ifndef TT_HANDLERS_STATUS_H
#define TT_HANDLERS_STATUS_H

#include "http/server.h"

/** Appends more Prometheus text (another subsystem's metrics) to the growable string; any thread. */
typedef void (*tt_status_render_fn)(void *arg, char **out, size_t *len, size_t *cap);

/** Configuration of the status route. */
typedef struct tt_status_conf {
    tt_server_t *srv;          /* the server whose metric shards are reported; not owned */
    const char *metrics_path;  /* "/metrics" */
    tt_status_render_fn extra; /* optional */
    void *extra_arg;
} tt_status_conf_t;

/** The status handler: GET metrics_path (text/plain; version=0.0.4) and GET /status (JSON). */
extern const tt_handler_ops_t tt_status_ops;

#endif
