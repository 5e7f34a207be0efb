/* probe.c -- `tether probe URL`: what an origin really does with connections, measured with a bounded number
 * of requests: connect cost, persistence (HTTP/1.1, HTTP/1.0 keep-alive), whether Keep-Alive tells the truth,
 * the idle timeout, max requests per connection, pipelining and what reuse saves; then verdicts in words.
 *
 * One loop drives phases one after another (ALPN, COLD, RESUME, SEQ, H10, PIPE, IDLE), each on its own
 * connections; every connection is a tt_upconn_t, so responses are framed exactly as the proxy frames them.
 * ALPN and RESUME are for https only: the TLS version and whether the server selects h2 (a connection that
 * offers h2 and http/1.1 and sends nothing), and whether sessions resume (new connections offering the newest
 * session). Every other https connection offers http/1.1 only and no session: full handshakes, timed apart
 * from the TCP connect.
 */
#include "client/upstream.h"
#include "cmd/cli_url.h"
#include "cmd/cmd.h"
#include "conf/units.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define COLD_CONNS    5 /* sequential new connections, one request each: connect time, new-connection cost */
#define IDLE_CONNS    8 /* connections held idle in parallel: the earliest close is the idle timeout */
#define PIPE_DEPTH    4 /* requests written at once on one connection */
#define RESUME_CONNS  3 /* https: sequential new connections offering the newest session */
#define BOUND_DEFAULT 1000
#define BOUND_MAX     100000
#define PROGRESS_MS   200
#define AGENT         "tether-probe/" TETHER_VERSION
#define MISSING_PATH  "/.tether-probe-missing"

static const char probe_usage[] =
    "usage: tether probe URL [options]\n"
    "\n"
    "Measures what an HTTP/1.x origin (http:// or https://) does with connections: connect time, persistence\n"
    "(HTTP/1.1, and HTTP/1.0 with Connection: keep-alive), what its Keep-Alive field says and whether that\n"
    "is true, the real idle timeout, max requests per connection, pipelining, and what reusing a connection\n"
    "saves; for https also the TLS version, whether ALPN selects h2, the full handshake time, and whether\n"
    "TLS sessions resume (and the resumed handshake time). Then it says in words how a client or proxy\n"
    "should treat this origin.\n"
    "\n"
    "  --json               print one JSON object instead of the report\n"
    "  --max-wait DUR       longest wait for idle connections to be closed; beyond it the idle timeout\n"
    "                       is reported as \"longer than DUR\" [120s]\n"
    "  --client-idle DUR    your client's or proxy's idle timeout, to compare with the server's\n"
    "  --max-requests N     most requests sent on one connection to find the server's limit [1000]\n"
    "  --timeout DUR        connect timeout, and longest wait for each response [10s]\n"
    "  --insecure           https: do not verify the certificate (by default it is checked against the\n"
    "                       system store; SSL_CERT_FILE and SSL_CERT_DIR apply); ignored for http://\n"
    "  -H, --header 'NAME: VALUE'   send this field with every request, repeatable; 'Host: NAME' probes\n"
    "                       that virtual host (it replaces the URL's; TLS SNI still names the URL's host)\n"
    "  -h, --help           this text\n"
    "\n"
    "Bounds: at most 16 connections (5 new ones one after another, 1 for sequential requests, 1 for\n"
    "HTTP/1.0, 1 for pipelining, 8 held idle in parallel) and --max-requests + 19 requests; https adds 1\n"
    "connection for ALPN (no request) and 3 for resumption (one request each): at most 20 connections and\n"
    "--max-requests + 22 requests. A probe lasts about the idle timeout (at most --max-wait) plus the\n"
    "requests' round trips.\n"
    "Exit status: 0 measured, 1 the origin could not be measured (refused, reset, timeout, TLS handshake or\n"
    "certificate, not HTTP), 2 bad arguments. A 3xx or 4xx answer is measured, with a warning on stderr.\n";

typedef enum phase { PH_ALPN, PH_COLD, PH_RESUME, PH_SEQ, PH_H10, PH_PIPE, PH_IDLE, PH_DONE } phase_t;

/** How the sequential run on one connection ended. */
typedef enum seq_end {
    SEQ_SAID_CLOSE,      /* the n-th response said Connection: close */
    SEQ_NOT_PERSISTENT,  /* the n-th response was HTTP/1.0 without keep-alive, or close-delimited */
    SEQ_CLOSED_SILENTLY, /* request n+1 met a closed or reset connection, no response byte */
    SEQ_FAILED,          /* request n+1 failed otherwise (timeout, invalid response) */
    SEQ_BOUND,           /* --max-requests responses, all persistent */
} seq_end_t;

typedef enum h10_result { H10_PERSISTS, H10_SAYS_CLOSE, H10_CLOSED_SILENTLY, H10_FAILED } h10_result_t;

typedef enum pipe_result {
    PIPE_IN_ORDER,         /* every status matched its request; the missing path's status differs */
    PIPE_IN_ORDER_FRAMING, /* complete and framed right, but statuses cannot tell the requests apart */
    PIPE_WRONG,            /* a status belongs to another request */
    PIPE_CLOSED,           /* the server closed (or said close) before answering all */
    PIPE_FAILED,           /* timeout or a response that did not parse */
} pipe_result_t;

typedef struct pconn pconn_t;
typedef struct probe probe_t;
typedef void (*pconn_cb)(pconn_t *c);
typedef void (*pconn_fail_cb)(pconn_t *c, tt_up_err_t err, bool got_bytes);

/** One probe connection; `u` is NULL once closed. */
struct pconn {
    probe_t *p;
    tt_upconn_t *u;
    pconn_cb connected;
    pconn_cb done;
    pconn_cb peer_closed; /* while parked */
    pconn_fail_cb failed; /* connect or exchange failed; `u` is already closed */
    int idx;
    uint64_t start_us, connected_us, sent_us, done_us, closed_us;
    uint64_t tcp_us;       /* TCP connected, before any TLS handshake */
    const char *tls_error; /* a failed TLS handshake: why (static) */
    bool tls_verify;       /* ... it was the certificate check */
    bool resumed;          /* the TLS handshake resumed a session */
    uint32_t responses;
    int status;
    bool said_close;
    bool persists;  /* the head allows another request: no close, HTTP/1.1 or keep-alive */
    bool reusable;  /* persists and no stray bytes after the response (a FIN that came with it is for the next
                     * request to find: the phases tell a silent close from a said one) */
    bool fin_after; /* the server's FIN came right after the response */
    bool parked;
};

typedef struct probe_opts {
    bool json;
    bool insecure;
    uint64_t max_wait_ms;
    uint64_t client_idle_ms; /* 0: not given */
    uint32_t bound;
    uint64_t timeout_ms;
} probe_opts_t;

struct probe {
    probe_opts_t o;
    tt_cli_url_t url;
    tt_cli_url_t req_url; /* what requests say: url, with the Host of -H 'Host: ...' */
    char host_field[sizeof(((tt_cli_url_t *)0)->authority)]; /* -H 'Host: ...', "" when not given */
    char fields[2048];                                       /* the other -H fields, each line ending in CRLF */
    char addr[TT_ADDR_STRLEN];
    tt_loop_t *loop;
    tt_bufpool_t bufs;
    tt_h1_response_t res;
    tt_up_timeouts_t to;
    phase_t phase;
    uint64_t start_us;
    tt_timer_t progress;
    tt_timer_t deadline;
    bool tty;
    bool https;
    bool failed;
    char error[320];
    unsigned conns_opened;
    unsigned requests_sent;
    /* the first response (COLD) */
    bool have_first;
    int status;
    char reason[64];
    char server[64];
    char location[256];
    char ka_field[96];
    bool ka_timeout_seen;
    uint64_t ka_timeout_ms;
    int64_t ka_max;
    bool first_reusable;
    /* ALPN (https) */
    tt_tls_client_t *tls_alpn; /* offers h2 and http/1.1 */
    tt_tls_client_t *tls_h1;   /* offers http/1.1: every other connection */
    pconn_t alpn;
    char tls_version[16];
    char alpn_selected[16]; /* "h2", "http/1.1", or "" when the server selected none */
    uint64_t alpn_handshake_us;
    /* COLD */
    pconn_t cold;
    uint64_t connect_us[COLD_CONNS];
    uint64_t handshake_us[COLD_CONNS]; /* https: full handshakes */
    uint64_t cold_us[COLD_CONNS];
    /* RESUME (https) */
    void *session;       /* the newest resumable session any connection left (owned) */
    bool session_issued; /* a full handshake left a resumable session */
    pconn_t resc;
    int res_count; /* connections done */
    bool res_resumed[RESUME_CONNS];
    bool res_renewed[RESUME_CONNS]; /* it left a resumable session of its own */
    uint64_t res_handshake_us[RESUME_CONNS];
    uint64_t res_request_us[RESUME_CONNS]; /* connect start to response end */
    /* SEQ */
    pconn_t seq;
    uint64_t *reused_us; /* per request after the first, o.bound - 1 at most */
    uint32_t seq_count;
    seq_end_t seq_end;
    tt_up_err_t seq_err;
    /* H10 */
    pconn_t h10;
    h10_result_t h10_result;
    int h10_status;
    tt_up_err_t h10_err;
    /* PIPE */
    pconn_t pipe;
    pipe_result_t pipe_result;
    int pipe_status[PIPE_DEPTH];
    int pipe_got;
    tt_up_err_t pipe_err;
    /* IDLE */
    pconn_t idle[IDLE_CONNS];
    int idle_answered; /* requests finished (parked or not) */
    int idle_parked;
    int idle_closed;
    bool idle_skipped;
    bool idle_waiting;
    uint64_t idle_wait_start_us;
    uint64_t idle_wait_end_us;
};

static void next_phase(probe_t *p);
static void probe_fail(probe_t *p, const char *fmt, ...) TT_PRINTF(2, 3);

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- formatting ---- */

/* "0.12 ms", "12.3 ms", "2.00 s" */
static const char *fmt_us(char *buf, size_t n, uint64_t us)
{
    if (us < 10000)
        snprintf(buf, n, "%.2f ms", (double)us / 1000.0);
    else if (us < 1000000)
        snprintf(buf, n, "%.1f ms", (double)us / 1000.0);
    else
        snprintf(buf, n, "%.2f s", (double)us / 1e6);
    return buf;
}

/* Seconds without a trailing ".0": "5 s", "4.5 s", "0.2 s". */
static const char *fmt_secs(char *buf, size_t n, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(buf, n, "%llu s", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, n, "%.1f s", (double)ms / 1000.0);
    return buf;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median of `n` samples (sorts them); 0 when there are none. */
static uint64_t median(uint64_t *v, size_t n)
{
    if (n == 0) return 0;
    qsort(v, n, sizeof(*v), cmp_u64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A sentence for a failure, from the point of view of the probe. */
static const char *err_sentence(tt_up_err_t err, uint64_t timeout_ms)
{
    static char buf[96];
    switch (err) {
    case TT_UP_CONNECT_REFUSED: return "connection refused";
    case TT_UP_CONNECT_TIMEOUT:
        snprintf(buf, sizeof(buf), "no answer to the connect within %.1f s", (double)timeout_ms / 1000.0);
        return buf;
    case TT_UP_CONNECT_ERROR: return "cannot connect (unreachable or no route)";
    case TT_UP_RESET: return "the connection was reset";
    case TT_UP_CLOSED: return "the server closed the connection without a complete response";
    case TT_UP_RESPONSE_TIMEOUT:
    case TT_UP_READ_TIMEOUT:
        snprintf(buf, sizeof(buf), "no response within %.1f s", (double)timeout_ms / 1000.0);
        return buf;
    case TT_UP_SEND_TIMEOUT: return "the server stopped reading the request";
    case TT_UP_INVALID: return "the answer is not a valid HTTP/1.x response";
    case TT_UP_TLS_ERROR: return "the TLS handshake failed";
    default: return tt_up_err_name(err);
    }
}

/* ---- progress on a terminal ---- */

static void progress_line(probe_t *p)
{
    char what[160];
    double el = (double)(now_us() - p->start_us) / 1e6;
    switch (p->phase) {
    case PH_ALPN: snprintf(what, sizeof(what), "TLS handshake offering h2 and http/1.1"); break;
    case PH_COLD: snprintf(what, sizeof(what), "opening %d new connections", COLD_CONNS); break;
    case PH_RESUME: snprintf(what, sizeof(what), "%d new connections resuming the TLS session", RESUME_CONNS); break;
    case PH_SEQ: snprintf(what, sizeof(what), "sequential requests on one connection: %u", p->seq_count); break;
    case PH_H10: snprintf(what, sizeof(what), "HTTP/1.0 with Connection: keep-alive"); break;
    case PH_PIPE: snprintf(what, sizeof(what), "%d pipelined requests", PIPE_DEPTH); break;
    case PH_IDLE:
        if (p->idle_waiting)
            snprintf(what, sizeof(what),
                     "waiting for the server to close %d idle connections: %d closed, %.1f s of at most %.0f s",
                     p->idle_parked, p->idle_closed, (double)(now_us() - p->idle_wait_start_us) / 1e6,
                     (double)p->o.max_wait_ms / 1000.0);
        else
            snprintf(what, sizeof(what), "opening %d connections to hold idle", IDLE_CONNS);
        break;
    default: return;
    }
    fprintf(stderr, "\r\033[Kprobe %.1f s: %s", el, what);
    fflush(stderr);
}

static void progress_on_timer(tt_timer_t *t)
{
    probe_t *p = tt_container_of(t, probe_t, progress);
    if (p->phase == PH_DONE) return;
    progress_line(p);
    tt_timer_arm(p->loop, &p->progress, PROGRESS_MS);
}

/* ---- connections ---- */

static void pconn_close(pconn_t *c)
{
    if (c->u == NULL) return;
    tt_upconn_close(c->u);
    c->u = NULL;
}

static void up_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    pconn_t *c = u->data;
    if (err != TT_UP_OK) {
        c->u = NULL; /* closed and freed by upstream.c */
        c->tls_error = u->tls_error;
        c->tls_verify = u->tls_verify_failed;
        c->failed(c, err, false);
        return;
    }
    c->connected_us = now_us();
    c->tcp_us = u->tcp_done_us ? u->tcp_done_us : c->connected_us;
    c->resumed = u->tls_resumed;
    c->connected(c);
}

static void copy_field(char *dst, size_t n, tt_str_t v)
{
    size_t k = TT_MIN(v.n, n - 1);
    memcpy(dst, v.p, k);
    dst[k] = '\0';
    for (size_t i = 0; i < k; i++)
        if ((unsigned char)dst[i] < 0x20 || (unsigned char)dst[i] == 0x7f) dst[i] = '?';
}

static void keep_first_response(probe_t *p, const tt_upconn_t *u, const tt_h1_response_t *res)
{
    p->have_first = true;
    p->status = res->status;
    copy_field(p->reason, sizeof(p->reason), res->reason);
    for (size_t i = 0; i < res->nfields; i++)
        if (tt_str_ieq(res->fields[i].name, TT_LIT("server")))
            copy_field(p->server, sizeof(p->server), res->fields[i].value);
        else if (tt_str_ieq(res->fields[i].name, TT_LIT("location")))
            copy_field(p->location, sizeof(p->location), res->fields[i].value);
    if (res->keep_alive >= 0) copy_field(p->ka_field, sizeof(p->ka_field), res->fields[res->keep_alive].value);
    p->ka_timeout_seen = u->hint_seen;
    p->ka_timeout_ms = u->hint_timeout_ms;
    p->ka_max = u->hint_max;
}

static void up_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    pconn_t *c = u->data;
    if (res->status < 200) return;
    c->status = res->status;
    c->said_close = (res->conn_tokens & TT_H1_CONN_CLOSE) != 0;
    c->persists = !c->said_close && (res->minor_version >= 1 || (res->conn_tokens & TT_H1_CONN_KEEP_ALIVE));
    if (c->p->phase == PH_COLD && !c->p->have_first) keep_first_response(c->p, u, res);
}

static void up_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    (void)u, (void)data, (void)len;
}

static void up_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    (void)trailers;
    pconn_t *c = u->data;
    c->done_us = now_us();
    c->responses++;
    /* The pipelining phase reads the next responses from the bytes after this one: no settle read there (it
     * would drop them); every other phase sends one request at a time. */
    tt_up_sock_t after = c->p->phase == PH_PIPE ? TT_UP_SOCK_QUIET : tt_upconn_settle(u);
    c->reusable = u->persistent && after != TT_UP_SOCK_STRAY;
    c->fin_after = after == TT_UP_SOCK_CLOSED;
    c->done(c);
}

static void up_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    pconn_t *c = u->data;
    bool got = u->got_bytes;
    pconn_close(c);
    c->failed(c, err, got);
}

static void up_on_drain(tt_upconn_t *u)
{
    (void)u;
}

static void up_on_parked_event(tt_upconn_t *u, tt_up_sock_t what)
{
    (void)what; /* closed or stray bytes: either way the server is done with it */
    pconn_t *c = u->data;
    c->closed_us = now_us();
    pconn_close(c);
    c->peer_closed(c);
}

static const tt_upconn_ops_t probe_ops = {
    .on_connect = up_on_connect,
    .on_head = up_on_head,
    .on_body = up_on_body,
    .on_done = up_on_done,
    .on_error = up_on_error,
    .on_drain = up_on_drain,
    .on_parked_event = up_on_parked_event,
};

/* Starts connecting `c`, over TLS with context `tls` offering `session` (not owned; may be NULL) when `tls`;
 * a connect that fails at once is reported through c->failed. */
static void pconn_open_tls(probe_t *p, pconn_t *c, int idx, pconn_cb connected, pconn_cb done, pconn_fail_cb failed,
                           tt_tls_client_t *tls, void *session)
{
    memset(c, 0, sizeof(*c));
    c->p = p;
    c->idx = idx;
    c->connected = connected;
    c->done = done;
    c->failed = failed;
    c->start_us = now_us();
    p->conns_opened++;
    tt_up_err_t err = TT_UP_OK;
    c->u = tt_upconn_connect(p->loop, &p->bufs, &p->res, &p->url.addr, NULL, &p->to, &probe_ops, c, &err);
    if (c->u == NULL)
        c->failed(c, err, false);
    else if (tls)
        tt_upconn_set_tls(c->u, tls, session);
}

/* Starts connecting `c` as every phase but ALPN and RESUME does: http/1.1 only, no session (https). */
static void pconn_open(probe_t *p, pconn_t *c, int idx, pconn_cb connected, pconn_cb done, pconn_fail_cb failed)
{
    pconn_open_tls(p, c, idx, connected, done, failed, p->https ? p->tls_h1 : NULL, NULL);
}

/* Keeps `session` (a new reference, or NULL) as the newest resumable session. */
static void keep_session(probe_t *p, void *session)
{
    if (session == NULL) return;
    if (p->session) tt_tls_session_free(p->session);
    p->session = session;
}

/* Sends one request (or several pipelined ones in `head`) and starts the exchange of the first. */
static void pconn_send(pconn_t *c, const char *head, size_t len, unsigned nreq, bool head_request)
{
    c->p->requests_sent += nreq;
    c->sent_us = now_us();
    tt_upconn_begin(c->u, head_request);
    (void)tt_upconn_send(c->u, head, len);
    tt_upconn_end_request(c->u);
}

static void pconn_get(pconn_t *c, int minor, const char *extra)
{
    char head[4096], fields[sizeof(c->p->fields) + 64];
    snprintf(fields, sizeof(fields), "%s%s", c->p->fields, extra ? extra : "");
    size_t n = tt_cli_url_request(&c->p->req_url, "GET", NULL, minor, AGENT, fields, head, sizeof(head));
    pconn_send(c, head, n, 1, false);
}

/* ---- failure ---- */

static void probe_fail(probe_t *p, const char *fmt, ...)
{
    if (p->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof(p->error), fmt, ap);
    va_end(ap);
    p->failed = true;
    p->phase = PH_DONE;
    tt_loop_stop(p->loop);
}

/* A failure in a phase that cannot go on without an answer. */
static void fail_fatal(pconn_t *c, tt_up_err_t err, bool got_bytes)
{
    probe_t *p = c->p;
    (void)got_bytes;
    bool connecting = err == TT_UP_CONNECT_REFUSED || err == TT_UP_CONNECT_TIMEOUT || err == TT_UP_CONNECT_ERROR;
    char who[sizeof(p->url.authority) + TT_ADDR_STRLEN + 4];
    if (strcmp(p->url.authority, p->addr) == 0)
        snprintf(who, sizeof(who), "%s", p->addr);
    else
        snprintf(who, sizeof(who), "%s (%s)", p->url.authority, p->addr);
    if (err == TT_UP_TLS_ERROR) {
        char why[256];
        tt_cli_tls_failure(why, sizeof(why), c->tls_error, c->tls_verify);
        probe_fail(p, "%s: %s", who, why);
    } else if (connecting)
        probe_fail(p, "cannot connect to %s: %s", who, err_sentence(err, p->o.timeout_ms));
    else
        probe_fail(p, "%s, GET %s: %s", who, p->url.target, err_sentence(err, p->o.timeout_ms));
}

/* ---- ALPN (https): the TLS version, and does the server select h2? ---- */

static void alpn_connected(pconn_t *c)
{
    probe_t *p = c->p;
    const char *a = tt_tls_alpn(c->u->tr);
    snprintf(p->alpn_selected, sizeof(p->alpn_selected), "%s", a ? a : "");
    snprintf(p->tls_version, sizeof(p->tls_version), "%s", tt_tls_version(c->u->tr));
    p->alpn_handshake_us = c->connected_us - c->tcp_us;
    pconn_close(c); /* nothing is sent: after h2 was selected, an HTTP/1.1 request would be wrong */
    next_phase(p);
}

static void alpn_done(pconn_t *c)
{
    (void)c; /* no request is ever sent on it */
}

/* ---- COLD: new connections one after another ---- */

static void cold_start(probe_t *p, int i);

static void cold_connected(pconn_t *c)
{
    c->p->connect_us[c->idx] = c->tcp_us - c->start_us;
    c->p->handshake_us[c->idx] = c->connected_us - c->tcp_us;
    pconn_get(c, 1, NULL);
}

static void cold_done(pconn_t *c)
{
    probe_t *p = c->p;
    p->cold_us[c->idx] = c->done_us - c->start_us;
    if (p->https) {
        /* after the response the TLS 1.3 tickets have arrived */
        void *session = tt_tls_take_session(c->u->tr);
        if (session) p->session_issued = true;
        keep_session(p, session);
    }
    if (c->idx == 0) p->first_reusable = c->reusable;
    pconn_close(c);
    if (c->idx + 1 < COLD_CONNS)
        cold_start(p, c->idx + 1);
    else
        next_phase(p);
}

static void cold_start(probe_t *p, int i)
{
    pconn_open(p, &p->cold, i, cold_connected, cold_done, fail_fatal);
}

/* ---- RESUME (https): new connections offering the newest session ---- */

static void res_connected(pconn_t *c)
{
    probe_t *p = c->p;
    p->res_resumed[c->idx] = c->resumed;
    p->res_handshake_us[c->idx] = c->connected_us - c->tcp_us;
    pconn_get(c, 1, NULL);
}

static void res_done(pconn_t *c)
{
    probe_t *p = c->p;
    p->res_request_us[c->idx] = c->done_us - c->start_us;
    /* Did this connection leave a session to resume next? TLS 1.3 clients use each ticket once (RFC 8446
     * C.4), so after a resumed handshake only a new ticket from the server allows the next resumption. */
    void *session = tt_tls_take_session(c->u->tr);
    p->res_renewed[c->idx] = session != NULL;
    keep_session(p, session);
    pconn_close(c);
    if (++p->res_count < RESUME_CONNS)
        pconn_open_tls(p, &p->resc, p->res_count, res_connected, res_done, fail_fatal, p->tls_h1, p->session);
    else
        next_phase(p);
}

static void res_start(probe_t *p)
{
    if (p->session == NULL) {
        next_phase(p); /* the server left no session to resume */
        return;
    }
    pconn_open_tls(p, &p->resc, 0, res_connected, res_done, fail_fatal, p->tls_h1, p->session);
}

/* ---- SEQ: sequential requests on one connection until the server ends it ---- */

static void seq_finish(probe_t *p, seq_end_t end)
{
    p->seq_end = end;
    pconn_close(&p->seq);
    next_phase(p);
}

static void seq_connected(pconn_t *c)
{
    pconn_get(c, 1, NULL);
}

static void seq_done(pconn_t *c)
{
    probe_t *p = c->p;
    p->seq_count = c->responses;
    if (c->responses >= 2) p->reused_us[c->responses - 2] = c->done_us - c->sent_us;
    if (!c->reusable)
        seq_finish(p, c->said_close ? SEQ_SAID_CLOSE : SEQ_NOT_PERSISTENT);
    else if (c->responses >= p->o.bound)
        seq_finish(p, SEQ_BOUND);
    else
        pconn_get(c, 1, NULL);
}

static void seq_failed(pconn_t *c, tt_up_err_t err, bool got_bytes)
{
    probe_t *p = c->p;
    if (c->responses == 0) {
        fail_fatal(c, err, got_bytes);
        return;
    }
    p->seq_err = err;
    bool silent = !got_bytes && (err == TT_UP_CLOSED || err == TT_UP_RESET);
    seq_finish(p, silent ? SEQ_CLOSED_SILENTLY : SEQ_FAILED);
}

/* ---- H10: HTTP/1.0 with Connection: keep-alive ---- */

static void h10_finish(probe_t *p, h10_result_t r)
{
    p->h10_result = r;
    pconn_close(&p->h10);
    next_phase(p);
}

static void h10_connected(pconn_t *c)
{
    pconn_get(c, 0, "Connection: keep-alive\r\n");
}

static void h10_done(pconn_t *c)
{
    probe_t *p = c->p;
    if (c->responses == 1) p->h10_status = c->status;
    if (c->responses >= 2)
        h10_finish(p, H10_PERSISTS);
    else if (!c->reusable)
        h10_finish(p, H10_SAYS_CLOSE);
    else
        pconn_get(c, 0, "Connection: keep-alive\r\n");
}

static void h10_failed(pconn_t *c, tt_up_err_t err, bool got_bytes)
{
    probe_t *p = c->p;
    p->h10_err = err;
    if (c->responses == 1 && !got_bytes && (err == TT_UP_CLOSED || err == TT_UP_RESET))
        h10_finish(p, H10_CLOSED_SILENTLY);
    else
        h10_finish(p, H10_FAILED);
}

/* ---- PIPE: PIPE_DEPTH requests in one write, answered in order? ---- */

/* Requests in the batch: the URL, a path that should not exist, HEAD of the URL, the URL again. */
static bool pipe_is_head(int k)
{
    return k == 2;
}

static void pipe_finish(probe_t *p, pipe_result_t r)
{
    p->pipe_result = r;
    pconn_close(&p->pipe);
    next_phase(p);
}

static void pipe_connected(pconn_t *c)
{
    char head[4 * 4096];
    size_t n = 0;
    for (int k = 0; k < PIPE_DEPTH; k++) {
        const char *target = k == 1 ? MISSING_PATH : NULL;
        size_t m = tt_cli_url_request(&c->p->req_url, pipe_is_head(k) ? "HEAD" : "GET", target, 1, AGENT, c->p->fields,
                                      head + n, sizeof(head) - n);
        n += m;
    }
    pconn_send(c, head, n, PIPE_DEPTH, pipe_is_head(0));
}

static pipe_result_t pipe_judge(const probe_t *p)
{
    int want = p->status;
    for (int k = 0; k < PIPE_DEPTH; k++)
        if (k != 1 && p->pipe_status[k] != want) return PIPE_WRONG;
    return p->pipe_status[1] != want ? PIPE_IN_ORDER : PIPE_IN_ORDER_FRAMING;
}

static void pipe_done(pconn_t *c)
{
    probe_t *p = c->p;
    int k = p->pipe_got++;
    p->pipe_status[k] = c->status;
    if (p->pipe_got == PIPE_DEPTH) {
        pipe_finish(p, pipe_judge(p));
        return;
    }
    /* Not c->reusable: upstream.c never reuses a connection with bytes after the response, and here the
     * next responses are exactly those bytes. */
    if (!c->persists) {
        pipe_finish(p, PIPE_CLOSED);
        return;
    }
    /* The next response is already on its way, maybe already read (tt_upconn_begin() processes bytes
     * already buffered): expect it without sending anything. */
    tt_upconn_begin(c->u, pipe_is_head(p->pipe_got));
    tt_upconn_end_request(c->u);
}

static void pipe_failed(pconn_t *c, tt_up_err_t err, bool got_bytes)
{
    probe_t *p = c->p;
    p->pipe_err = err;
    pipe_finish(p, !got_bytes && (err == TT_UP_CLOSED || err == TT_UP_RESET) ? PIPE_CLOSED : PIPE_FAILED);
}

/* ---- IDLE: connections parked as their responses end; the server's closes give the idle timeout ---- */

static void idle_finish(probe_t *p)
{
    tt_timer_disarm(p->loop, &p->deadline);
    p->idle_wait_end_us = now_us();
    for (int i = 0; i < IDLE_CONNS; i++) pconn_close(&p->idle[i]);
    next_phase(p);
}

static void idle_on_deadline(tt_timer_t *t)
{
    idle_finish(tt_container_of(t, probe_t, deadline));
}

static void idle_all_answered(probe_t *p)
{
    if (p->idle_parked == 0) {
        idle_finish(p);
        return;
    }
    p->idle_waiting = true;
    p->idle_wait_start_us = now_us();
    tt_timer_init(&p->deadline, idle_on_deadline);
    tt_timer_arm(p->loop, &p->deadline, p->o.max_wait_ms);
    if (p->idle_closed == p->idle_parked) idle_finish(p);
}

static void idle_peer_closed(pconn_t *c)
{
    probe_t *p = c->p;
    p->idle_closed++;
    if (p->idle_waiting && p->idle_closed == p->idle_parked) idle_finish(p);
}

static void idle_connected(pconn_t *c)
{
    pconn_get(c, 1, NULL);
}

static void idle_done(pconn_t *c)
{
    probe_t *p = c->p;
    if (c->reusable && c->fin_after) {
        /* Closed with the response: an idle timeout of nothing (parking it would wait for a FIN already seen). */
        c->parked = true;
        p->idle_parked++;
        c->closed_us = c->done_us;
        pconn_close(c);
        idle_peer_closed(c);
    } else if (c->reusable) {
        /* Parked from the moment its response ended: the server's idle clock started about then too. */
        c->parked = true;
        c->peer_closed = idle_peer_closed;
        p->idle_parked++;
        tt_upconn_park(c->u, &probe_ops, c);
    } else {
        pconn_close(c);
    }
    if (++p->idle_answered == IDLE_CONNS) idle_all_answered(p);
}

static void idle_start(probe_t *p)
{
    if (!p->first_reusable || p->seq_count < 2) {
        p->idle_skipped = true; /* the server does not keep connections: nothing to time */
        next_phase(p);
        return;
    }
    for (int i = 0; i < IDLE_CONNS && !p->failed; i++)
        pconn_open(p, &p->idle[i], i, idle_connected, idle_done, fail_fatal);
}

/* ---- driver ---- */

static void next_phase(probe_t *p)
{
    if (p->failed) return;
    p->phase++;
    if (p->phase == PH_RESUME && !p->https) p->phase++;
    switch (p->phase) {
    case PH_COLD: cold_start(p, 0); break;
    case PH_RESUME: res_start(p); break;
    case PH_SEQ: pconn_open(p, &p->seq, 0, seq_connected, seq_done, seq_failed); break;
    case PH_H10: pconn_open(p, &p->h10, 0, h10_connected, h10_done, h10_failed); break;
    case PH_PIPE: pconn_open(p, &p->pipe, 0, pipe_connected, pipe_done, pipe_failed); break;
    case PH_IDLE: idle_start(p); break;
    default:
        p->phase = PH_DONE;
        tt_loop_stop(p->loop);
        break;
    }
}

/* ---- results ---- */

/** What the measurements come to; computed once, printed as text or JSON. */
typedef struct summary {
    uint64_t connect_med_us;
    uint64_t handshake_med_us;                     /* https: full handshakes */
    int resumed;                                   /* https: resumed handshakes of RESUME_CONNS */
    uint64_t res_handshake_med_us, res_new_med_us; /* of the resumed ones */
    bool renewed;                                  /* every resumed connection left a session of its own */
    bool tls_saves;                                /* every full handshake took longer than the resumed median */
    uint64_t new_med_us;
    uint64_t reused_med_us;
    size_t reused_n;
    bool reuse_saves;   /* every new-connection request took longer than the reused median */
    bool idle_measured; /* at least one parked connection was closed by the server */
    bool idle_longer;   /* some stayed open up to --max-wait */
    uint64_t idle_min_us, idle_med_us, idle_max_us;
    uint64_t recommend_ms;        /* retire idle connections within this */
    const char *ka_timeout_truth; /* NULL when not advertised */
    const char *ka_max_truth;
    int verdicts;
    char verdict[12][320];
} summary_t;

static void add_verdict(summary_t *s, const char *fmt, ...) TT_PRINTF(2, 3);
static void add_verdict(summary_t *s, const char *fmt, ...)
{
    if (s->verdicts == (int)TT_ARRAY_SIZE(s->verdict)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->verdict[s->verdicts++], sizeof(s->verdict[0]), fmt, ap);
    va_end(ap);
}

static void summarize_idle(const probe_t *p, summary_t *s)
{
    uint64_t v[IDLE_CONNS];
    size_t n = 0;
    for (int i = 0; i < IDLE_CONNS; i++) {
        const pconn_t *c = &p->idle[i];
        if (!c->parked) continue;
        if (c->closed_us)
            v[n++] = c->closed_us - c->done_us;
        else
            s->idle_longer = true;
    }
    s->idle_measured = n > 0;
    if (n == 0) return;
    s->idle_med_us = median(v, n);
    s->idle_min_us = v[0];
    s->idle_max_us = v[n - 1];
    /* Retire at the timeout (to the nearest 100 ms: the measurement's resolution) minus max(1 s, 20 %),
     * never below half of it. */
    uint64_t t = (s->idle_min_us / 1000 + 50) / 100 * 100, margin = TT_MAX(1000, t / 5);
    s->recommend_ms = t > margin ? t - margin : 0;
    if (s->recommend_ms < t / 2) s->recommend_ms = t / 2;
    s->recommend_ms = s->recommend_ms / 100 * 100;
}

static void summarize_truth(const probe_t *p, summary_t *s)
{
    if (p->ka_timeout_seen && s->idle_measured) {
        uint64_t said = p->ka_timeout_ms, got = s->idle_min_us / 1000, tol = TT_MAX(100, got / 20);
        if (got + tol < said)
            s->ka_timeout_truth = "false: the server closes idle connections before the advertised timeout";
        else if (got > said + 1000 + tol)
            s->ka_timeout_truth = "understated: the server waits longer than it says (harmless)";
        else
            s->ka_timeout_truth = "true";
    } else if (p->ka_timeout_seen && s->idle_longer) {
        s->ka_timeout_truth = p->ka_timeout_ms <= p->o.max_wait_ms
                                  ? "understated: the server waits longer than it says (harmless)"
                                  : "not contradicted within --max-wait";
    }
    if (p->ka_max >= 0) {
        uint64_t total = (uint64_t)p->ka_max + 1; /* max= counts the requests left after this one */
        if (p->seq_end == SEQ_BOUND)
            s->ka_max_truth = total > p->seq_count ? "not contradicted (the probe stopped at --max-requests)"
                                                   : "understated: the server allowed more requests than it says";
        else if (total == p->seq_count)
            s->ka_max_truth = "true";
        else
            s->ka_max_truth = total > p->seq_count ? "false: the server ended the connection sooner"
                                                   : "understated: the server allowed more requests than it says";
    }
}

static void verdict_idle(const probe_t *p, summary_t *s)
{
    char a[32], b[32], c[32];
    if (p->idle_skipped) {
        add_verdict(s,
                    "the server closes every connection after one response: every request pays for a new connection");
        return;
    }
    if (s->idle_measured) {
        add_verdict(s, "a client or proxy must retire idle connections to this origin within %.1f s",
                    (double)s->recommend_ms / 1000.0);
    } else {
        add_verdict(s,
                    "the server kept idle connections open longer than %s (--max-wait): measure longer to size a "
                    "client's idle timeout",
                    fmt_secs(a, sizeof(a), p->o.max_wait_ms));
    }
    if (p->o.client_idle_ms == 0) return;
    uint64_t ci = p->o.client_idle_ms;
    fmt_secs(a, sizeof(a), ci);
    if (!s->idle_measured) {
        if (ci <= p->o.max_wait_ms)
            add_verdict(
                s, "your client keeps idle connections for %s, within the %s the server was seen to keep them: fine", a,
                fmt_secs(b, sizeof(b), p->o.max_wait_ms));
        else
            add_verdict(s,
                        "your client keeps idle connections for %s; the server kept them at least %s: probe with "
                        "--max-wait %s to be sure",
                        a, fmt_secs(b, sizeof(b), p->o.max_wait_ms), a);
        return;
    }
    uint64_t server = s->idle_min_us / 1000;
    fmt_secs(b, sizeof(b), (server + 50) / 100 * 100);
    fmt_secs(c, sizeof(c), s->recommend_ms);
    if (ci >= server)
        add_verdict(s,
                    "your client keeps idle connections for %s, longer than the server's %s: expect stale-connection "
                    "failures (502, ECONNRESET); set it to at most %s",
                    a, b, c);
    else if (ci > s->recommend_ms)
        add_verdict(s,
                    "your client keeps idle connections for %s, just under the server's %s: a request sent as the "
                    "server closes can still fail; set it to at most %s",
                    a, b, c);
    else
        add_verdict(s, "your client keeps idle connections for %s, safely under the server's %s", a, b);
}

static void verdict_requests(const probe_t *p, summary_t *s)
{
    switch (p->seq_end) {
    case SEQ_SAID_CLOSE:
        if (p->seq_count > 1)
            add_verdict(s,
                        "the server ends a connection after %u requests and says so (Connection: close): clients that "
                        "honour it never fail on it",
                        p->seq_count);
        break;
    case SEQ_CLOSED_SILENTLY:
        add_verdict(s,
                    "the server closes a connection after %u requests without saying so: a client reusing it sees a "
                    "failed request; cap requests per connection at %u",
                    p->seq_count, p->seq_count > 1 ? p->seq_count - 1 : 1);
        break;
    case SEQ_FAILED:
        add_verdict(s, "request %u on one connection failed (%s): the server may limit requests per connection to %u",
                    p->seq_count + 1, tt_up_err_name(p->seq_err), p->seq_count);
        break;
    case SEQ_BOUND: add_verdict(s, "the server allowed at least %u requests on one connection", p->seq_count); break;
    default: break;
    }
    if (s->ka_timeout_truth && strncmp(s->ka_timeout_truth, "false", 5) == 0)
        add_verdict(s, "do not trust this server's Keep-Alive: timeout=%llu: it closed idle connections after %.2f s",
                    (unsigned long long)(p->ka_timeout_ms / 1000), (double)s->idle_min_us / 1e6);
    if (p->h10_result != H10_PERSISTS && p->first_reusable)
        add_verdict(s, "HTTP/1.0 clients asking for keep-alive get a new connection per request");
    if (p->pipe_result == PIPE_WRONG || p->pipe_result == PIPE_FAILED)
        add_verdict(s, "do not pipeline requests to this origin: the answers did not match the requests");
    else if (p->pipe_result == PIPE_CLOSED && p->first_reusable)
        add_verdict(s, "do not pipeline requests to this origin: it closed the connection before answering all");
}

/* A saving is claimed only when it was measured: every sample of the dearer way (`dear`, `n` of them) took
 * longer than the median of the cheaper one. On a loaded machine the samples overlap, and comparing medians
 * alone would report noise as a saving (or a negative one). */
static bool saving_measured(const uint64_t *dear, size_t n, uint64_t cheap_med_us)
{
    if (n == 0 || cheap_med_us == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (dear[i] <= cheap_med_us) return false;
    return true;
}

static void verdict_reuse(const probe_t *p, summary_t *s)
{
    (void)p;
    if (s->reused_n == 0 || s->reused_med_us == 0) return;
    char a[32], b[32];
    if (s->reuse_saves)
        add_verdict(s, "reusing a connection saves %s per request (%.1fx faster than a new connection)",
                    fmt_us(a, sizeof(a), s->new_med_us - s->reused_med_us),
                    (double)s->new_med_us / (double)s->reused_med_us);
    else
        add_verdict(s,
                    "reusing a connection saved no measurable time here (median request times: new connection %s, "
                    "reused %s)",
                    fmt_us(a, sizeof(a), s->new_med_us), fmt_us(b, sizeof(b), s->reused_med_us));
}

static void summarize_tls(const probe_t *p, summary_t *s)
{
    uint64_t tmp[COLD_CONNS], hs[RESUME_CONNS], req[RESUME_CONNS];
    memcpy(tmp, p->handshake_us, sizeof(tmp));
    s->handshake_med_us = median(tmp, COLD_CONNS);
    s->renewed = true;
    for (int i = 0; i < p->res_count; i++) {
        if (!p->res_resumed[i]) continue;
        hs[s->resumed] = p->res_handshake_us[i];
        req[s->resumed++] = p->res_request_us[i];
        if (!p->res_renewed[i]) s->renewed = false;
    }
    s->res_handshake_med_us = median(hs, (size_t)s->resumed);
    s->res_new_med_us = median(req, (size_t)s->resumed);
    s->tls_saves = s->resumed > 0 && saving_measured(p->handshake_us, COLD_CONNS, s->res_handshake_med_us);
}

static void verdict_tls(const probe_t *p, summary_t *s)
{
    char a[32], b[32], c[32];
    if (strcmp(p->alpn_selected, "h2") == 0)
        add_verdict(s, "the server speaks HTTP/2 (ALPN selected h2): clients that offer h2 share one connection");
    else
        add_verdict(s, "the server does not speak HTTP/2 over TLS (ALPN selected %s)",
                    p->alpn_selected[0] ? p->alpn_selected : "nothing");
    fmt_us(a, sizeof(a), s->handshake_med_us);
    if (!p->session_issued) {
        add_verdict(s, "the server issues no resumable TLS session: every new connection pays a full handshake (%s)",
                    a);
        return;
    }
    if (s->resumed == 0) {
        add_verdict(s, "the server does not resume TLS sessions: every new connection pays a full handshake (%s)", a);
        return;
    }
    if (s->tls_saves)
        add_verdict(s, "resuming a TLS session saves %s per new connection (full handshake %s, resumed %s)",
                    fmt_us(b, sizeof(b), s->handshake_med_us - s->res_handshake_med_us), a,
                    fmt_us(c, sizeof(c), s->res_handshake_med_us));
    else
        add_verdict(s,
                    "resuming a TLS session saved no measurable handshake time here (medians: full handshake %s, "
                    "resumed %s)",
                    a, fmt_us(c, sizeof(c), s->res_handshake_med_us));
    if (!s->renewed)
        add_verdict(s,
                    "after a resumed handshake the server issues no new session: clients that use each TLS 1.3 "
                    "ticket once (RFC 8446 C.4) resume only every other new connection (%d of %d resumed)",
                    s->resumed, p->res_count);
}

static void summarize(probe_t *p, summary_t *s)
{
    memset(s, 0, sizeof(*s));
    uint64_t tmp[COLD_CONNS];
    memcpy(tmp, p->connect_us, sizeof(tmp));
    s->connect_med_us = median(tmp, COLD_CONNS);
    if (p->https) summarize_tls(p, s);
    memcpy(tmp, p->cold_us, sizeof(tmp));
    s->new_med_us = median(tmp, COLD_CONNS);
    s->reused_n = p->seq_count > 1 ? p->seq_count - 1 : 0;
    s->reused_med_us = median(p->reused_us, s->reused_n);
    s->reuse_saves = saving_measured(p->cold_us, COLD_CONNS, s->reused_med_us);
    summarize_idle(p, s);
    summarize_truth(p, s);
    verdict_idle(p, s);
    verdict_requests(p, s);
    verdict_reuse(p, s);
    if (p->https) verdict_tls(p, s);
}

static const char *seq_end_text(seq_end_t e)
{
    switch (e) {
    case SEQ_SAID_CLOSE: return "the last response said Connection: close";
    case SEQ_NOT_PERSISTENT: return "the last response did not allow another (HTTP/1.0 or close-delimited)";
    case SEQ_CLOSED_SILENTLY: return "then the server closed the connection without saying so";
    case SEQ_FAILED: return "then the next request failed";
    case SEQ_BOUND: return "stopped at --max-requests; the server may allow more";
    }
    return "";
}

static const char *seq_end_name(seq_end_t e)
{
    static const char *const names[] = {"said_close", "not_persistent", "closed_silently", "failed", "bound"};
    return names[e];
}

static const char *h10_text(h10_result_t r)
{
    switch (r) {
    case H10_PERSISTS: return "persists";
    case H10_SAYS_CLOSE: return "does not persist (the response does not keep the connection)";
    case H10_CLOSED_SILENTLY: return "does not persist (closed after the response without saying so)";
    case H10_FAILED: return "failed";
    }
    return "";
}

static const char *h10_name(h10_result_t r)
{
    static const char *const names[] = {"persists", "says_close", "closed_silently", "failed"};
    return names[r];
}

static const char *pipe_text(pipe_result_t r)
{
    switch (r) {
    case PIPE_IN_ORDER: return "answered in order";
    case PIPE_IN_ORDER_FRAMING: return "answered completely (in order as far as status and framing tell)";
    case PIPE_WRONG: return "answers do not match the requests";
    case PIPE_CLOSED: return "not all answered: the server closed the connection";
    case PIPE_FAILED: return "not all answered";
    }
    return "";
}

static const char *pipe_name(pipe_result_t r)
{
    static const char *const names[] = {"in_order", "in_order_by_framing", "wrong", "closed", "failed"};
    return names[r];
}

static void print_text_tls(const probe_t *p, const summary_t *s)
{
    char a[32], b[32];
    printf("  tls                    %s, ALPN %s (offered h2, http/1.1), certificate %s\n", p->tls_version,
           p->alpn_selected[0] ? p->alpn_selected : "none", p->o.insecure ? "not verified (--insecure)" : "verified");
    printf("  tls handshake          full %s median of %d\n", fmt_us(a, sizeof(a), s->handshake_med_us), COLD_CONNS);
    if (!p->session_issued)
        printf("  tls resumption         not possible (the server issued no resumable session)\n");
    else if (s->resumed == 0)
        printf("  tls resumption         not resumed (%d tries, every one a full handshake)\n", p->res_count);
    else
        printf("  tls resumption         Reused: %d of %d resumed, handshake %s median%s\n", s->resumed, p->res_count,
               fmt_us(b, sizeof(b), s->res_handshake_med_us),
               s->renewed ? "" : "; no new session after a resumed handshake");
}

static void print_text_head(const probe_t *p, const summary_t *s)
{
    char a[32];
    printf("tether probe %s://%s%s (%s)\n", tt_cli_url_scheme(&p->url), p->url.authority, p->url.target, p->addr);
    printf("  response               %d %s%s%s\n", p->status, p->reason, p->server[0] ? ", server: " : "", p->server);
    printf("  connect time           %s median of %d%s\n", fmt_us(a, sizeof(a), s->connect_med_us), COLD_CONNS,
           p->https ? " (TCP)" : "");
    if (p->https)
        print_text_tls(p, s);
    else
        printf("  tls                    not used (http)\n");
    printf("persistence\n");
    printf("  HTTP/1.1               %s\n", p->seq_count >= 2 ? "persists" : "does not persist");
    printf("  HTTP/1.0 keep-alive    %s", h10_text(p->h10_result));
    if (p->h10_result == H10_FAILED) printf(": %s", err_sentence(p->h10_err, p->o.timeout_ms));
    if (p->h10_status && p->h10_status != p->status) printf(" (status %d)", p->h10_status);
    printf("\n  Keep-Alive field       %s\n", p->ka_field[0] ? p->ka_field : "not sent");
    if (s->ka_timeout_truth) printf("    timeout              %s\n", s->ka_timeout_truth);
    if (s->ka_max_truth) printf("    max                  %s\n", s->ka_max_truth);
}

static void print_text_idle(const probe_t *p, const summary_t *s)
{
    char a[32], b[32], c[32];
    int open = p->idle_parked - p->idle_closed;
    if (p->idle_skipped)
        printf("idle timeout             not applicable (no connection is kept after a response)\n");
    else if (s->idle_measured)
        printf("idle timeout             %s (earliest close of %d idle connections; median %s, latest %s%s)\n",
               fmt_us(a, sizeof(a), s->idle_min_us), p->idle_parked, fmt_us(b, sizeof(b), s->idle_med_us),
               fmt_us(c, sizeof(c), s->idle_max_us), open > 0 ? "; some stayed open up to --max-wait" : "");
    else
        printf("idle timeout             longer than %s (%d idle connections, none closed)\n",
               fmt_secs(a, sizeof(a), p->o.max_wait_ms), p->idle_parked);
}

static void print_text(const probe_t *p, const summary_t *s)
{
    char a[32], b[32];
    print_text_head(p, s);
    print_text_idle(p, s);
    printf("max requests             %s%u per connection (%s)\n", p->seq_end == SEQ_BOUND ? "at least " : "",
           p->seq_count, seq_end_text(p->seq_end));
    printf("pipelining               %s (%d requests in one write; statuses", pipe_text(p->pipe_result), PIPE_DEPTH);
    for (int k = 0; k < p->pipe_got; k++) printf(" %d", p->pipe_status[k]);
    printf(")\n");
    printf("reuse                    new connection %s", fmt_us(a, sizeof(a), s->new_med_us));
    if (p->https && s->resumed) printf(" (TLS resumed %s)", fmt_us(b, sizeof(b), s->res_new_med_us));
    printf(", reused %s (median request time; %zu reused samples)\n",
           s->reused_n ? fmt_us(b, sizeof(b), s->reused_med_us) : "-", s->reused_n);
    if (p->https && s->resumed)
        printf("                         TLS handshake full %s, resumed %s\n",
               fmt_us(a, sizeof(a), s->handshake_med_us), fmt_us(b, sizeof(b), s->res_handshake_med_us));
    printf("verdicts\n");
    for (int i = 0; i < s->verdicts; i++) printf("  - %s\n", s->verdict[i]);
    printf("sent %u requests on %u connections in %.1f s\n", p->requests_sent, p->conns_opened,
           (double)(now_us() - p->start_us) / 1e6);
}

static void json_ms(const char *key, uint64_t us, bool comma)
{
    printf("\"%s\":%.3f%s", key, (double)us / 1000.0, comma ? "," : "");
}

static void print_json_idle(const probe_t *p, const summary_t *s)
{
    printf("\"idle_timeout\":{\"applicable\":%s,\"measured\":%s,\"longer_than_max_wait\":%s,",
           p->idle_skipped ? "false" : "true", s->idle_measured ? "true" : "false",
           !s->idle_measured && !p->idle_skipped ? "true" : "false");
    if (s->idle_measured) {
        json_ms("ms", s->idle_min_us, true);
        json_ms("median_ms", s->idle_med_us, true);
        json_ms("max_ms", s->idle_max_us, true);
    }
    printf("\"connections\":%d,\"closed\":%d,\"max_wait_ms\":%llu},", p->idle_parked, p->idle_closed,
           (unsigned long long)p->o.max_wait_ms);
    if (s->idle_measured)
        printf("\"recommended_client_idle_ms\":%llu,", (unsigned long long)s->recommend_ms);
    else
        printf("\"recommended_client_idle_ms\":null,");
    if (p->o.client_idle_ms) printf("\"client_idle_ms\":%llu,", (unsigned long long)p->o.client_idle_ms);
}

static void print_json_ka(const probe_t *p, const summary_t *s)
{
    printf("\"keep_alive\":{\"field\":");
    if (p->ka_field[0])
        json_str(stdout, p->ka_field);
    else
        printf("null");
    if (p->ka_timeout_seen) printf(",\"timeout_s\":%llu", (unsigned long long)(p->ka_timeout_ms / 1000));
    if (p->ka_max >= 0) printf(",\"max\":%lld", (long long)p->ka_max);
    if (s->ka_timeout_truth) {
        printf(",\"timeout_true\":%s,\"timeout_verdict\":",
               strcmp(s->ka_timeout_truth, "true") == 0 ? "true" : "false");
        json_str(stdout, s->ka_timeout_truth);
    }
    if (s->ka_max_truth) {
        printf(",\"max_true\":%s,\"max_verdict\":", strcmp(s->ka_max_truth, "true") == 0 ? "true" : "false");
        json_str(stdout, s->ka_max_truth);
    }
    printf("},");
}

static void print_json_tls(const probe_t *p, const summary_t *s)
{
    if (!p->https) {
        printf("\"tls\":null,");
        return;
    }
    printf("\"tls\":{\"version\":");
    json_str(stdout, p->tls_version);
    printf(",\"alpn\":");
    if (p->alpn_selected[0])
        json_str(stdout, p->alpn_selected);
    else
        printf("null");
    printf(",\"h2\":%s,\"verified\":%s,", strcmp(p->alpn_selected, "h2") == 0 ? "true" : "false",
           p->o.insecure ? "false" : "true");
    json_ms("handshake_ms", s->handshake_med_us, true);
    json_ms("alpn_handshake_ms", p->alpn_handshake_us, true);
    printf("\"resumption\":{\"session_issued\":%s,\"attempts\":%d,\"resumed\":%d,\"reused\":%s,",
           p->session_issued ? "true" : "false", p->res_count, s->resumed, s->resumed ? "true" : "false");
    if (s->resumed) {
        json_ms("handshake_ms", s->res_handshake_med_us, true);
        json_ms("new_connection_ms", s->res_new_med_us, true);
        if (s->tls_saves)
            json_ms("saving_ms", s->handshake_med_us - s->res_handshake_med_us, true);
        else
            printf("\"saving_ms\":null,");
        printf("\"renewed_after_resumption\":%s,", s->renewed ? "true" : "false");
    }
    printf("\"handshakes\":[");
    for (int i = 0; i < p->res_count; i++)
        printf("%s{\"resumed\":%s,\"ms\":%.3f}", i ? "," : "", p->res_resumed[i] ? "true" : "false",
               (double)p->res_handshake_us[i] / 1000.0);
    printf("]}},");
}

static void print_json(const probe_t *p, const summary_t *s)
{
    char url[sizeof(p->url.authority) + sizeof(p->url.target) + 16];
    snprintf(url, sizeof(url), "%s://%s%s", tt_cli_url_scheme(&p->url), p->url.authority, p->url.target);
    printf("{\"url\":");
    json_str(stdout, url);
    printf(",\"origin\":");
    json_str(stdout, p->url.authority);
    printf(",\"address\":\"%s\",\"status\":%d,\"reason\":", p->addr, p->status);
    json_str(stdout, p->reason);
    printf(",\"server\":");
    json_str(stdout, p->server);
    printf(",");
    json_ms("connect_ms", s->connect_med_us, true);
    print_json_tls(p, s);
    printf("\"http11_persists\":%s,\"http10_keepalive\":\"%s\",", p->seq_count >= 2 ? "true" : "false",
           h10_name(p->h10_result));
    print_json_ka(p, s);
    print_json_idle(p, s);
    printf("\"max_requests\":{\"count\":%u,\"end\":\"%s\",\"at_least\":%s,\"bound\":%u},", p->seq_count,
           seq_end_name(p->seq_end), p->seq_end == SEQ_BOUND ? "true" : "false", p->o.bound);
    printf("\"pipelining\":{\"result\":\"%s\",\"in_order\":%s,\"statuses\":[", pipe_name(p->pipe_result),
           p->pipe_result <= PIPE_IN_ORDER_FRAMING ? "true" : "false");
    for (int k = 0; k < p->pipe_got; k++) printf("%s%d", k ? "," : "", p->pipe_status[k]);
    printf("]},\"reuse\":{");
    json_ms("new_connection_ms", s->new_med_us, true);
    if (s->reused_n) {
        json_ms("reused_ms", s->reused_med_us, true);
        if (s->reuse_saves)
            json_ms("saving_ms", s->new_med_us - s->reused_med_us, true);
        else
            printf("\"saving_ms\":null,");
    }
    printf("\"reused_samples\":%zu},\"verdicts\":[", s->reused_n);
    for (int i = 0; i < s->verdicts; i++) {
        if (i) printf(",");
        json_str(stdout, s->verdict[i]);
    }
    printf("],\"requests_sent\":%u,\"connections_opened\":%u,\"elapsed_s\":%.3f}\n", p->requests_sent, p->conns_opened,
           (double)(now_us() - p->start_us) / 1e6);
}

static void print_error(const probe_t *p)
{
    fprintf(stderr, "tether probe: %s\n", p->error);
    if (!p->o.json) return;
    printf("{\"error\":");
    json_str(stdout, p->error);
    printf(",\"origin\":");
    json_str(stdout, p->url.authority);
    printf("}\n");
}

/* ---- arguments ---- */

enum { OPT_JSON = 256, OPT_MAXWAIT, OPT_CLIENTIDLE, OPT_INSECURE, OPT_MAXREQ, OPT_TIMEOUT };

static const struct option probe_opts[] = {
    {"json", no_argument, NULL, OPT_JSON},
    {"max-wait", required_argument, NULL, OPT_MAXWAIT},
    {"client-idle", required_argument, NULL, OPT_CLIENTIDLE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"max-requests", required_argument, NULL, OPT_MAXREQ},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"header", required_argument, NULL, 'H'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int duration_arg(const char *flag, const char *s, uint64_t *ms, bool zero_ok)
{
    const char *why = NULL;
    if (tt_units_duration(s, ms, &why) != 0 || (!zero_ok && *ms == 0)) {
        fprintf(stderr, "tether probe: %s %s: %s\n", flag, s, why ? why : "must be more than 0");
        return -1;
    }
    return 0;
}

static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* -H 'NAME: VALUE': a Host replaces the URL's authority; the fields probe sets itself (framing, persistence,
 * its name) are refused, since a probe that sends them measures something else. 0, or -1 after saying why. */
static int add_header(probe_t *p, const char *arg)
{
    static const char *const own[] = {"connection", "keep-alive", "content-length", "transfer-encoding",
                                      "te",         "upgrade",    "user-agent"};
    const char *colon = strchr(arg, ':');
    size_t nlen = colon ? (size_t)(colon - arg) : 0;
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)arg[i])) nlen = 0;
    const char *v = colon ? colon + 1 : "";
    while (*v == ' ' || *v == '\t') v++;
    size_t vlen = strlen(v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    for (size_t i = 0; i < vlen; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f) nlen = 0;
    if (nlen == 0) {
        fprintf(stderr, "tether probe: --header %s: expected 'NAME: VALUE' (a token, a colon, visible text)\n", arg);
        return -1;
    }
    for (size_t i = 0; i < TT_ARRAY_SIZE(own); i++)
        if (strlen(own[i]) == nlen && strncasecmp(arg, own[i], nlen) == 0) {
            fprintf(stderr, "tether probe: --header %s: probe sets %.*s itself\n", arg, (int)nlen, arg);
            return -1;
        }
    if (nlen == 4 && strncasecmp(arg, "host", 4) == 0) {
        if (vlen == 0 || vlen >= sizeof(p->host_field)) {
            fprintf(stderr, "tether probe: --header %s: a Host of 1 to %zu characters\n", arg,
                    sizeof(p->host_field) - 1);
            return -1;
        }
        snprintf(p->host_field, sizeof(p->host_field), "%.*s", (int)vlen, v);
        return 0;
    }
    size_t have = strlen(p->fields);
    int n = snprintf(p->fields + have, sizeof(p->fields) - have, "%.*s: %.*s\r\n", (int)nlen, arg, (int)vlen, v);
    if (n < 0 || (size_t)n >= sizeof(p->fields) - have) {
        p->fields[have] = '\0';
        fprintf(stderr, "tether probe: --header: more than %zu bytes of fields\n", sizeof(p->fields) - 1);
        return -1;
    }
    return 0;
}

/* Exit status to stop with (0 for --help), or -1 to go on. */
static int parse_args(int argc, char **argv, probe_t *p, const char **url)
{
    uint64_t v;
    int opt;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "hH:", probe_opts, NULL)) != -1) {
        const char *why;
        switch (opt) {
        case 'h': fputs(probe_usage, stdout); return 0;
        case 'H':
            if (add_header(p, optarg) != 0) return 2;
            break;
        case OPT_JSON: p->o.json = true; break;
        case OPT_MAXWAIT:
            if (duration_arg("--max-wait", optarg, &p->o.max_wait_ms, false) != 0) return 2;
            break;
        case OPT_CLIENTIDLE:
            if (duration_arg("--client-idle", optarg, &p->o.client_idle_ms, false) != 0) return 2;
            break;
        case OPT_TIMEOUT:
            if (duration_arg("--timeout", optarg, &p->o.timeout_ms, false) != 0) return 2;
            break;
        case OPT_INSECURE: p->o.insecure = true; break;
        case OPT_MAXREQ:
            if (tt_units_uint(optarg, 2, BOUND_MAX, &v, &why) != 0) {
                fprintf(stderr, "tether probe: --max-requests %s: %s (2 to %d)\n", optarg, why, BOUND_MAX);
                return 2;
            }
            p->o.bound = (uint32_t)v;
            break;
        default: return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "tether probe: expected one URL (see tether probe --help)\n");
        return 2;
    }
    *url = argv[optind];
    return -1;
}

/* Parses and resolves the URL; exit status to stop with, or -1 to go on. */
static int setup_url(probe_t *p, const char *arg)
{
    const char *why = NULL;
    if (tt_cli_url_parse(arg, &p->url, &why) != 0) {
        fprintf(stderr, "tether probe: %s: %s\n", arg, why);
        return 2;
    }
    const char *unsupported = tt_cli_url_unsupported(&p->url);
    if (unsupported) {
        fprintf(stderr, "tether probe: %s\n", unsupported);
        return 2;
    }
    p->https = p->url.scheme == TT_CLI_HTTPS; /* --insecure with http:// is accepted and means nothing */
    p->req_url = p->url;
    if (p->host_field[0]) snprintf(p->req_url.authority, sizeof(p->req_url.authority), "%s", p->host_field);
    if (tt_cli_url_resolve(&p->url, &why) != 0) {
        snprintf(p->error, sizeof(p->error), "%s: %s", p->url.host, why);
        print_error(p);
        return 1;
    }
    tt_addr_format(&p->url.addr, p->addr, sizeof(p->addr));
    if (p->https) {
        p->tls_alpn = tt_cli_url_tls_client(&p->url, p->o.insecure, true, p->error, sizeof(p->error));
        p->tls_h1 =
            p->tls_alpn ? tt_cli_url_tls_client(&p->url, p->o.insecure, false, p->error, sizeof(p->error)) : NULL;
        if (p->tls_h1 == NULL) {
            print_error(p);
            return 1;
        }
    }
    return -1;
}

static void probe_run(probe_t *p)
{
    p->loop = tt_loop_new();
    if (p->loop == NULL) tt_fatal("tt_loop_new: %s", strerror(errno));
    tt_bufpool_init(&p->bufs, 16384, 16);
    p->to = (tt_up_timeouts_t){p->o.timeout_ms, p->o.timeout_ms, p->o.timeout_ms, p->o.timeout_ms};
    p->reused_us = tt_calloc(p->o.bound, sizeof(uint64_t));
    p->tty = isatty(STDERR_FILENO) == 1;
    p->start_us = now_us();
    tt_timer_init(&p->progress, progress_on_timer);
    tt_timer_init(&p->deadline, idle_on_deadline);
    if (p->tty) tt_timer_arm(p->loop, &p->progress, PROGRESS_MS);
    if (p->https) {
        p->phase = PH_ALPN;
        pconn_open_tls(p, &p->alpn, 0, alpn_connected, alpn_done, fail_fatal, p->tls_alpn, NULL);
    } else {
        p->phase = PH_COLD;
        cold_start(p, 0);
    }
    if (!p->failed) tt_loop_run(p->loop);
    if (p->tty) fprintf(stderr, "\r\033[K");
    /* Close what a failure left open, then one more turn frees the connections. */
    pconn_t *all[] = {&p->alpn, &p->cold, &p->resc, &p->seq, &p->h10, &p->pipe};
    for (size_t i = 0; i < TT_ARRAY_SIZE(all); i++) pconn_close(all[i]);
    for (int i = 0; i < IDLE_CONNS; i++) pconn_close(&p->idle[i]);
    tt_timer_disarm(p->loop, &p->progress);
    tt_timer_disarm(p->loop, &p->deadline);
    tt_loop_run_once(p->loop, 0);
    tt_loop_run_once(p->loop, 0);
}

/* A 3xx or 4xx answer is measured like any other, but it is rarely what the user meant to measure. */
static void warn_status(const probe_t *p)
{
    if (p->status < 300 || p->status >= 500) return;
    if (p->status < 400)
        fprintf(stderr,
                "tether probe: warning: %s://%s%s answered %d %s, a redirect%s%s: you are measuring the redirect, "
                "not the page it points to\n",
                tt_cli_url_scheme(&p->url), p->req_url.authority, p->url.target, p->status, p->reason,
                p->location[0] ? " to " : "", p->location);
    else
        fprintf(stderr,
                "tether probe: warning: %s://%s%s answered %d %s: you are measuring an error page (check the path, "
                "and the Host with -H 'Host: NAME')\n",
                tt_cli_url_scheme(&p->url), p->req_url.authority, p->url.target, p->status, p->reason);
}

static void probe_dispose(probe_t *p)
{
    if (p->loop) tt_loop_free(&p->loop);
    tt_bufpool_dispose(&p->bufs);
    free(p->reused_us);
    if (p->session) tt_tls_session_free(p->session);
    tt_tls_client_free(&p->tls_alpn);
    tt_tls_client_free(&p->tls_h1);
    free(p);
}

int tt_cmd_probe(int argc, char **argv)
{
    probe_t *p = tt_calloc(1, sizeof(*p));
    p->o = (probe_opts_t){.max_wait_ms = 120000, .bound = BOUND_DEFAULT, .timeout_ms = 10000};
    const char *url = NULL;
    int rc = parse_args(argc, argv, p, &url);
    if (rc < 0) rc = setup_url(p, url);
    if (rc >= 0) {
        tt_tls_client_free(&p->tls_alpn);
        tt_tls_client_free(&p->tls_h1);
        free(p);
        return rc;
    }
    probe_run(p);
    if (p->failed) {
        print_error(p);
        rc = 1;
    } else {
        warn_status(p);
        summary_t *s = tt_calloc(1, sizeof(*s));
        summarize(p, s);
        if (p->o.json)
            print_json(p, s);
        else
            print_text(p, s);
        free(s);
        rc = 0;
    }
    probe_dispose(p);
    return rc;
}
