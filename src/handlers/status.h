/* status.h -- the admin endpoints: Prometheus metrics, the JSON status, the live HTML status page
 *
 * GET metrics_path  Prometheus text 0.0.4: the workers' shards summed, then `extra` (upstreams, configuration).
 * GET /status.json  the same metrics parsed back (metrics/snapshot.h) as JSON samples, a summary, the advisor's
 *                   advice (metrics/advise.h) and the oldest and longest-idle connections of every worker.
 * GET /status       one self-contained HTML page (inline CSS and script, nothing fetched from elsewhere) that
 *                   polls /status.json every second.
 * The admin listener runs on the main thread; it reads the shards and the workers' published connection lists,
 * never a worker's own lists.
 */
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
    /* private: set by tt_status_start() */
    uint64_t _started_mono_ms;
    int64_t _started_unix_s;
} tt_status_conf_t;

/** Records the start time that /status.json reports uptime from; call once before serving. Any thread. */
void tt_status_start(tt_status_conf_t *sc);

/** The status handler: GET metrics_path, /status.json and /status (HEAD too); 405 for other methods. */
extern const tt_handler_ops_t tt_status_ops;

/** The status page (src/handlers/status_page.html, compiled in by CMake) and its length in bytes. */
extern const unsigned char tt_status_page_html[];
extern const size_t tt_status_page_html_len;

#endif
