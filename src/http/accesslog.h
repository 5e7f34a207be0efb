/* accesslog.h -- one line per request, buffered per worker and written once per loop turn
 *
 * Line format (docs/observability.md):
 *   ADDR - - [22/Nov/2026:23:17:05 +0000] "GET /x HTTP/1.1" STATUS BYTES SECONDS conn=ID req=N DECISION[ EXTRA]
 * DECISION is `keep` or the connection's close reason (tt_close_reason_name()).
 */
#ifndef TT_HTTP_ACCESSLOG_H
#define TT_HTTP_ACCESSLOG_H

#include "core/buf.h"
#include "core/loop.h"
#include "core/str.h"
#include "net/addr.h"

/** One request's line. Views need only live for the call. */
typedef struct tt_accesslog_rec {
    const tt_addr_t *peer;
    tt_str_t method;
    tt_str_t target;
    int minor_version;
    const char *proto; /* "HTTP/2.0"; NULL: HTTP/1.<minor_version> */
    int status;
    uint64_t bytes;       /* response bytes handed to the socket (head and content) */
    uint64_t duration_ms; /* first request byte to the response being complete */
    uint64_t conn_id;
    uint32_t req_no;
    const char *decision; /* "keep" or a close reason */
    tt_str_t extra;       /* appended after a space when non-empty (protocol, upstream fields) */
} tt_accesslog_rec_t;

/**
 * An access log file shared by the workers, reopened without a lock: each worker writes through a descriptor
 * of its own and opens `path` again at its first flush after tt_accesslog_file_reopen() (SIGUSR1, SIGHUP),
 * so lines written after the reopen go to a file moved away (logrotate) only if they were buffered before it.
 */
typedef struct tt_accesslog_file {
    const char *path;     /* not owned; must outlive the workers */
    _Atomic uint32_t gen; /* bumped by each reopen */
} tt_accesslog_file_t;

/** Asks every worker writing to `f` to reopen its path at its next flush. Any thread; returns at once. */
void tt_accesslog_file_reopen(tt_accesslog_file_t *f);

/** A worker's log buffer. */
typedef struct tt_accesslog {
    int fd;                          /* -1: logging off */
    const tt_accesslog_file_t *file; /* NULL: `fd` is the caller's */
    uint32_t gen;                    /* file->gen when `fd` was opened */
    tt_loop_t *loop;
    tt_buf_t buf;
    tt_bufpool_t pool;
    tt_defer_t flush;
    int64_t stamp_s; /* second of `stamp` */
    char stamp[32];  /* "22/Nov/2026:23:17:05 +0000" */
} tt_accesslog_t;

/** Prepares `log` to write to `fd` (-1: off; not owned). */
void tt_accesslog_init(tt_accesslog_t *log, tt_loop_t *loop, int fd);
/** Prepares `log` to write to `file` through a descriptor of its own, opened now (on failure the error is
 *  logged and `log` is off until a reopen succeeds). Call on any thread before the worker runs. */
void tt_accesslog_init_file(tt_accesslog_t *log, tt_loop_t *loop, const tt_accesslog_file_t *file);
/** Flushes, frees the buffer and closes a descriptor opened by tt_accesslog_init_file(). */
void tt_accesslog_dispose(tt_accesslog_t *log);
/** True when lines are written at all. */
static inline bool tt_accesslog_enabled(const tt_accesslog_t *log)
{
    return log->fd >= 0 || log->file != NULL;
}
/** Appends one line; it is written at the end of the loop turn (or sooner when 32 KiB are buffered). */
void tt_accesslog_add(tt_accesslog_t *log, const tt_accesslog_rec_t *rec);
/** Writes what is buffered now (first reopening the file when tt_accesslog_file_reopen() asked to). */
void tt_accesslog_flush(tt_accesslog_t *log);

#endif
