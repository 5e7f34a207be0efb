/* accesslog.h -- one line per request, buffered per worker and written once per loop turn
 *
 * The line's format is chosen by `[log] log_format` (docs/observability.md, "Access log"):
 *   main      tether's own (the default):
 *             ADDR - - [22/Nov/2026:23:17:05 +0000] "GET /x HTTP/1.1" STATUS BYTES SECONDS conn=ID req=N DECISION[
 * EXTRA] DECISION is `keep` or the connection's close reason (tt_close_reason_name()). combined  nginx's combined
 * format, byte for byte. json      one JSON object per line holding every variable (RFC 8259; absent values null).
 *   TEMPLATE  text with $name or ${name} variables (nginx's names where nginx has one), compiled once.
 */
#ifndef TT_HTTP_ACCESSLOG_H
#define TT_HTTP_ACCESSLOG_H

#include "core/buf.h"
#include "core/loop.h"
#include "core/str.h"
#include "http/h1_parse.h"
#include "net/addr.h"

/** Longest X-Request-Id kept from a client (bytes); a longer one is replaced. */
#define TT_REQUEST_ID_MAX 200
/** Most distinct request fields ($http_NAME, $http_user_agent, $host, ...) one format reads. */
#define TT_ACCESSLOG_MAX_CAPS 16

/** What a proxied request adds to its line; the handler owns it (see tt_req_t.log_up). */
typedef struct tt_accesslog_up {
    const char *name;      /* the [upstream NAME]; static or outliving the line */
    const tt_addr_t *addr; /* the server used last, NULL before one was chosen */
    int status;            /* the upstream's final response status, 0 before one came */
    int64_t connect_us;    /* us to connect (TCP and TLS) for this request's connection; 0 when reused; -1 none */
    int64_t header_us;     /* us from the attempt's start (connect, or the reused connection's request) to the
                              response head; -1 none */
    int64_t response_us;   /* us from the attempt's start to the response's end or the failure; -1 none */
    bool reused;           /* the request went on a pooled connection */
    const char *cause;     /* why tether answered 502/503/504 itself (tt_proxy_cause_name), NULL otherwise */
} tt_accesslog_up_t;

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
    tt_str_t extra;       /* main format: appended after a space when non-empty (protocol, upstream fields) */
    /* what the other formats read besides */
    uint64_t head_bytes;         /* of `bytes`, the response head's (0 for HTTP/2: HPACK-compressed) */
    int32_t stream_id;           /* HTTP/2 stream, 0 for HTTP/1 */
    const tt_h1_request_t *head; /* the request's fields while still valid, or NULL (then `caps`) */
    const tt_str_t *caps;        /* tt_accesslog_capture() copies, or NULL: no fields known */
    tt_str_t request_id;         /* empty: none */
    const tt_accesslog_up_t *up; /* NULL: not proxied */
    bool tunnel;                 /* a tunnel's line (after a 101): the three below are set */
    uint64_t tunnel_up;          /* bytes from the client to the upstream through the tunnel */
    uint64_t tunnel_down;        /* bytes from the upstream to the client through the tunnel */
    uint64_t tunnel_ms;          /* how long the tunnel lasted */
} tt_accesslog_rec_t;

/** A compiled log_format: a list of literal and variable steps (opaque). Immutable once compiled, so the
 *  workers share it. */
typedef struct tt_accesslog_fmt tt_accesslog_fmt_t;

/**
 * Compiles `spec`: "main", "combined", "json" or a template ($name, ${name}; "$$" is a '$'). Returns the format
 * (the caller owns it: tt_accesslog_fmt_free) or NULL with the reason in `why` ("unknown variable $foo").
 * Any thread.
 */
tt_accesslog_fmt_t *tt_accesslog_fmt_compile(const char *spec, char *why, size_t whylen);
/** The spec `f` was compiled from, as written ("main" for NULL); owned by `f`. Any thread. */
const char *tt_accesslog_fmt_spec(const tt_accesslog_fmt_t *f);
/** Frees `*f` (NULL is fine) and sets it to NULL. */
void tt_accesslog_fmt_free(tt_accesslog_fmt_t **f);

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
    const tt_accesslog_fmt_t *fmt;   /* NULL: main; not owned */
    uint32_t gen;                    /* file->gen when `fd` was opened */
    tt_loop_t *loop;
    tt_buf_t buf;
    tt_bufpool_t pool;
    tt_defer_t flush;
    int64_t stamp_s; /* second of `stamp` */
    char stamp[32];  /* "22/Nov/2026:23:17:05 +0000" */
    int64_t iso_s;   /* second of `iso` */
    char iso[32];    /* "2026-11-22T23:17:05+00:00" */
} tt_accesslog_t;

/** Prepares `log` to write to `fd` (-1: off; not owned) in the main format. */
void tt_accesslog_init(tt_accesslog_t *log, tt_loop_t *loop, int fd);
/** Prepares `log` to write to `file` through a descriptor of its own, opened now (on failure the error is
 *  logged and `log` is off until a reopen succeeds). Call on any thread before the worker runs. */
void tt_accesslog_init_file(tt_accesslog_t *log, tt_loop_t *loop, const tt_accesslog_file_t *file);
/** Makes `log` write its lines in format `fmt` (NULL: main; not owned, must outlive `log`). */
void tt_accesslog_set_format(tt_accesslog_t *log, const tt_accesslog_fmt_t *fmt);
/** Flushes, frees the buffer and closes a descriptor opened by tt_accesslog_init_file(). */
void tt_accesslog_dispose(tt_accesslog_t *log);
/** True when lines are written at all. */
static inline bool tt_accesslog_enabled(const tt_accesslog_t *log)
{
    return log->fd >= 0 || log->file != NULL;
}
/** True when lines are written in the main format, which reads rec.extra (a handler formats it only then). */
static inline bool tt_accesslog_wants_extra(const tt_accesslog_t *log)
{
    return tt_accesslog_enabled(log) && log->fmt == NULL;
}
/** True when lines are written and their format reads $request_id (json, or a template naming it; main and
 *  combined do not), so every request needs its id, possibly after its head is gone. Owning worker only. */
bool tt_accesslog_reads_request_id(const tt_accesslog_t *log);
/** Appends one line; it is written at the end of the loop turn (or sooner when 32 KiB are buffered). Never
 *  allocates beyond the worker's log buffer. Owning worker only. */
void tt_accesslog_add(tt_accesslog_t *log, const tt_accesslog_rec_t *rec);
/** Writes what is buffered now (first reopening the file when tt_accesslog_file_reopen() asked to). */
void tt_accesslog_flush(tt_accesslog_t *log);

/**
 * The request fields the format reads (user agent, referer, $host's authority, $http_NAME), for a line written
 * after the head `h` is gone (an asynchronous request, a file still being sent). tt_accesslog_capture_size() says
 * how many bytes tt_accesslog_capture() writes into `store` (0 when the format reads none or the log is off);
 * capture copies the views (an array of tt_str_t first, `store` must be aligned for it) and their bytes, and
 * returns the array for rec.caps (NULL when it captured nothing). Owning worker only.
 */
size_t tt_accesslog_capture_size(const tt_accesslog_t *log, const tt_h1_request_t *h);
const tt_str_t *tt_accesslog_capture(const tt_accesslog_t *log, const tt_h1_request_t *h, void *store);

/** Writes `s` into `o` as the body of a JSON string (RFC 8259 7): '"' and '\' escaped, control characters and
 *  every byte that is not part of valid UTF-8 as \u00XX. `o` needs 6 * s.n bytes; returns the bytes written. */
size_t tt_accesslog_json_escape(char *o, tt_str_t s);
/** Writes `s` into `o` as nginx escapes log text: '"', '\' and bytes outside printable ASCII as \xHH. `o` needs
 *  4 * s.n bytes; returns the bytes written. */
size_t tt_accesslog_text_escape(char *o, tt_str_t s);

#endif
