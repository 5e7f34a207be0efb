/* bench.h -- inside `tether bench`: its settings and counts, and the load engine (bench_load.c) that the
 * command (bench.c: arguments, --compare, output) runs once per row
 */
#ifndef TT_CMD_BENCH_H
#define TT_CMD_BENCH_H

#include "cmd/cli_url.h"
#include "metrics/loghist.h"
#include "net/tls.h"

/** Kinds of failed requests, as reported (text and JSON keys in tt__bench_err_kind_names). */
typedef enum bench_err_kind {
    EK_CONNECT,    /* refused, timeout, unreachable, TLS handshake, no h2 in ALPN */
    EK_RESET,      /* reset, or closed before the response was complete */
    EK_TIMEOUT,    /* no response, or the response stalled */
    EK_BAD_STATUS, /* status >= 400 (the response counts as a request too) */
    EK_INVALID,    /* not HTTP/1.x, or an HTTP/2 protocol error */
    EK_RST_STREAM, /* HTTP/2: the server reset the stream (RFC 9113 6.4) */
    EK_GOAWAY,     /* HTTP/2: the stream was not processed because of a GOAWAY (RFC 9113 6.8) */
    EK__COUNT
} bench_err_kind_t;

extern const char *const tt__bench_err_kind_names[EK__COUNT];

/** The command line. */
typedef struct bench_opts {
    uint32_t conns;
    uint32_t threads;
    uint32_t streams; /* HTTP/2 streams per connection (-m) */
    uint64_t duration_ms;
    uint64_t requests; /* 0: run for duration_ms */
    double rate;       /* requests/s in all; 0: closed loop */
    bool close;
    bool h2;
    bool tls_resume; /* https: offer the worker's last session on new connections */
    bool insecure;
    bool compare;
    bool json;
    uint64_t timeout_ms;
} bench_opts_t;

/** What one run does. */
typedef struct bench_mode {
    const char *label;
    bool close;  /* HTTP/1.1: Connection: close, a new connection per request */
    bool h2;     /* HTTP/2: up to opts.streams streams per connection */
    bool resume; /* https: offer TLS sessions on new connections */
} bench_mode_t;

/** What one worker (and, merged, one run) counted. */
typedef struct bench_stats {
    tt_loghist_t lat; /* us, complete responses */
    uint64_t responses;
    uint64_t status[6]; /* [0] other, [1..5] 1xx..5xx */
    uint64_t errors[EK__COUNT];
    uint64_t conns_opened;
    uint64_t tls_full, tls_resumed; /* completed TLS handshakes */
    const char *first_err;          /* static name of the first failure ("connect_refused"), NULL when none */
    const char *first_detail;       /* static: why that first failure happened (TLS), or NULL */
    bool first_verify;              /* ... and it was the certificate check */
} bench_stats_t;

/** One run: its mode and what it measured. */
typedef struct bench_run {
    bench_mode_t m;
    double elapsed_s;
    bool all_failed;
    bench_stats_t st;
} bench_run_t;

typedef struct bench_worker bench_worker_t;

/** The command's state; read-only for the worker threads during a run. */
typedef struct bench {
    bench_opts_t o;
    tt_cli_url_t url;
    char addr[TT_ADDR_STRLEN];
    bool tty;
    tt_tls_client_t *tls_h1; /* https: ALPN http/1.1 */
    tt_tls_client_t *tls_h2; /* https: ALPN h2, http/1.1 */
    bench_mode_t m;          /* the current run's */
    char req[4096];          /* the HTTP/1.1 request of the current run */
    size_t req_len;
    bench_worker_t *workers;
} bench_t;

/** Runs one load with mode `m` (worker threads, a progress line on a terminal) and fills `r`. Main thread. */
void tt__bench_run(bench_t *b, const bench_mode_t *m, bench_run_t *r);

#endif
