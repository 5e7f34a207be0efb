/* fuzz_worker.c -- libFuzzer target: the connection state machines of one worker, driven by a script of events
 *
 * One inline worker (the real server, h1 and h2 connection, proxy, pool and upstream code) serves a static route
 * (/s) and a proxy route (/p) whose upstream is an origin this fuzzer plays itself on 127.0.0.1. Its clients are
 * socketpairs the worker adopts as accepted connections, each with its own peer address (10.0.0.N), which the
 * proxy forwards in X-Forwarded-For: that is how the origin knows, unforgeably, whose request it answers. The
 * loop's clock is manual. The fuzz input is a script of events:
 *   clients: connect, send a canned request (tagged with its number) whole or cut anywhere, send raw bytes,
 *            stop or resume reading (with small socket buffers: backpressure), half-close, close, reset;
 *   origin:  accept, answer the oldest request (every framing, sizes on read-buffer boundaries, 1xx, HEAD,
 *            204 and 304 with content, extra bytes after the response, a second response nobody asked for, cut
 *            anywhere), write stray bytes while idle, stop reading, close, reset;
 *   the clock moves (idle, header, body, send, linger, response, queue and pool deadlines fire); a drain starts;
 *   events may share one poll batch (an op with its high bit set runs no loop turn after it).
 * Every response body of the origin carries "TAG:<client>:<request>;" of the request it answers, and stray bytes
 * the tag of the exchange they came after (or of no one). After every event, every byte a client received is
 * checked:
 *   - no client ever sees another client's tag, and a response to request n of a client carries only n's tag
 *     (bytes from one exchange never reach another);
 *   - every response answers a request (never more final responses than requests), and is valid HTTP/1.1;
 * and at the end, after the clock moved far past every deadline without traffic, every client and upstream
 * connection is closed (none lives without a deadline) and every request got its response or a close. ASan and
 * UBSan watch for use after free. Clients that sent raw bytes are checked for other clients' tags only.
 */
#include "conf/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "handlers/proxy.h"
#include "handlers/static.h"
#include "http/server.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CLIENTS 6
#define MAX_ORIGIN  12
#define MAX_REQS    48
#define TURNS       4
#define NO_ONE      99 /* the client id of bytes that belong to no exchange */
#define BODY_KEEP   (1u << 20)

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_worker: invariant violated: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ---- the script ---- */

typedef struct script {
    const uint8_t *p;
    size_t n, off;
} script_t;

static bool more(const script_t *s)
{
    return s->off < s->n;
}
static uint8_t next(script_t *s)
{
    return s->off < s->n ? s->p[s->off++] : 0;
}

/* ---- a growable byte buffer ---- */

typedef struct bytes {
    char *p;
    size_t len, cap;
} bytes_t;

static void b_add(bytes_t *b, const void *d, size_t n)
{
    if (n == 0) return;
    if (b->len + n > b->cap) {
        b->cap = TT_MAX(b->cap * 2, b->len + n + 256);
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) abort();
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}
static void b_drop(bytes_t *b, size_t n)
{
    if (n == 0) return;
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}
static void b_free(bytes_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- the world ---- */

typedef struct creq {
    bool head; /* HEAD: the response has no content */
    int tag;   /* the request's number, -1 when the origin never sees it (static, 404, OPTIONS *) */
} creq_t;

enum { R_HEAD, R_LENGTH, R_CHUNKED, R_UNTIL_EOF };

typedef struct client {
    int fd;
    int id;
    bool open;    /* we hold our end */
    bool eof;     /* tether closed (EOF or reset seen) */
    bool reading; /* we read what tether sends */
    bool tainted; /* raw bytes were sent: only other clients' tags are checked */
    bool shut;    /* we half-closed */
    uint32_t next_tag;
    creq_t reqs[MAX_REQS];
    uint32_t nsent, nresp; /* requests queued to send; final responses parsed */
    bytes_t out;           /* request bytes not yet written */
    bytes_t in;            /* received, not yet parsed */
    bytes_t body;          /* content of the response being parsed */
    char tail[16];         /* last bytes seen (tainted: tags across reads) */
    size_t ntail;
    int rstate;
    int64_t rleft;
    tt_h1_chunked_t chunk;
    creq_t cur;
} client_t;

typedef struct oreq {
    int client, tag;
    bool head;
} oreq_t;

enum { O_HEAD, O_LENGTH, O_CHUNKED, O_LOST };

typedef struct oconn {
    int fd;
    bool open;
    bool reading;
    bool eof;   /* tether closed it */
    bytes_t in; /* request bytes not yet parsed */
    int state;  /* parsing: a head, content by length, chunked content, or lost (unparsable) */
    int64_t left;
    tt_h1_chunked_t chunk;
    oreq_t pending[MAX_REQS];
    uint32_t npending; /* requests whose head arrived, not answered */
    bool partial;      /* bytes of an unanswered request are here (its head may be incomplete) */
    oreq_t last;       /* the last request answered (whose exchange stray bytes come after) */
    bool answered;
    bytes_t out; /* response bytes not yet written */
} oconn_t;

static struct {
    bool ready;
    char root[64];
    char ini[96];
    int lfd; /* the origin's listener */
    tt_addr_t origin;
    tt_conf_t conf;
} g;

static bool trace; /* FUZZ_WORKER_TRACE=1: print the events and what clients receive */
static client_t clients[MAX_CLIENTS];
static size_t nclients;
static oconn_t origin[MAX_ORIGIN];
static size_t norigin;
static tt_server_t *srv;
static tt_loop_t *loop;
static uint64_t clock_ms;

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, n, f) != n) tt_fatal("writing %s", path);
    fclose(f);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    trace = getenv("FUZZ_WORKER_TRACE") != NULL;
    tt_log_setup(trace ? TT_LOG_DEBUG : TT_LOG_ERROR, STDERR_FILENO);
    snprintf(g.root, sizeof(g.root), "/tmp/tt_fuzz_worker_XXXXXX");
    if (mkdtemp(g.root) == NULL) tt_fatal("mkdtemp");
    char path[256];
    snprintf(path, sizeof(path), "%s/s", g.root);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/s/index.html", g.root);
    write_file(path, "<html>static, no tags here</html>\n", 34);
    static char big[40000];
    memset(big, 's', sizeof(big));
    snprintf(path, sizeof(path), "%s/s/big.bin", g.root);
    write_file(path, big, sizeof(big));

    g.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    if (bind(g.lfd, (struct sockaddr *)&in, sizeof(in)) != 0 || listen(g.lfd, 128) != 0 ||
        getsockname(g.lfd, (struct sockaddr *)&in, &len) != 0)
        tt_fatal("origin listener");

    char ini[2048];
    int n = snprintf(ini, sizeof(ini),
                     "[server]\nmax_connections = 16\ndrain_timeout = 5s\n"
                     "[keepalive]\nidle_timeout = 5s\nheader_timeout = 10s\nbody_timeout = 10s\nsend_timeout = 10s\n"
                     "max_requests = 6\nmax_lifetime = 120s\n"
                     "[limits]\nmax_body_size = 1m\n"
                     "[upstream o]\nserver = 127.0.0.1:%u\nmax_idle = 2\nmax_connections = 4\nmax_pending = 4\n"
                     "queue_timeout = 5s\nidle_timeout = 20s\nhint_margin = 1s\nmax_requests = 5\n"
                     "connect_timeout = 3s\nresponse_timeout = 30s\nread_timeout = 30s\nsend_timeout = 30s\n"
                     "replay_buffer = 64k\nmax_fails = 3\nfail_backoff = 1s\n"
                     "[route /p]\nupstream = o\n[route /s]\nroot = %s\n",
                     ntohs(in.sin_port), g.root);
    snprintf(g.ini, sizeof(g.ini), "%s/tether.ini", g.root);
    write_file(g.ini, ini, (size_t)n);
    char err[512];
    tt_conf_init(&g.conf);
    if (tt_conf_load(&g.conf, g.ini, err, sizeof(err)) != 0 || tt_conf_finish(&g.conf, err, sizeof(err)) != 0)
        tt_fatal("config: %s", err);
    g.ready = true;
}

/* ---- clients ---- */

static const char *const canned[] = {
    "GET /p/%u HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD /p/%u HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST /p/%u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
    "POST /p/%u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    "GET /p/%u HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET /p/%u HTTP/1.0\r\n\r\n",
    "GET /p/%u HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "PUT /p/%u HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\nExpect: 100-continue\r\n\r\n",
    "GET /s/index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /s/big.bin HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD /s/big.bin HTTP/1.1\r\nHost: a\r\n\r\n",
    "DELETE /p/%u HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST /p/%u HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n",
    "GET /p/%u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
};
/* Content that follows the head of some canned requests (sent from the same outbox). */
static size_t canned_body(size_t k)
{
    return k == 7 ? 40000 : k == 14 ? 300000 : 0;
}

static void client_open(uint8_t opt)
{
    if (nclients == MAX_CLIENTS) return;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return;
    if (opt & 1) { /* small buffers: backpressure with small bodies */
        int sz = 4096;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    }
    client_t *c = &clients[nclients];
    memset(c, 0, sizeof(*c));
    c->id = (int)nclients++;
    c->fd = sv[1];
    c->open = true;
    c->reading = true;
    tt_addr_t peer;
    char a[32];
    snprintf(a, sizeof(a), "10.0.0.%d:%d", c->id, 40000 + c->id);
    const char *why;
    tt_addr_parse(a, false, &peer, &why);
    tt_server_adopt(srv, 0, sv[0], &peer);
}

static void client_flush(client_t *c, size_t max)
{
    if (!c->open || c->shut) return;
    size_t n = TT_MIN(max, c->out.len);
    while (n > 0) {
        ssize_t w = send(c->fd, c->out.p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        b_drop(&c->out, (size_t)w);
        n -= (size_t)w;
    }
}

static void client_send_canned(client_t *c, uint8_t which, uint8_t cut)
{
    size_t k = which % TT_ARRAY_SIZE(canned);
    if (!c->open || c->shut || c->nsent == MAX_REQS) return;
    char req[256];
    uint32_t tag = c->next_tag++;
    int n = snprintf(req, sizeof(req), canned[k], tag);
    bool tagged = strstr(canned[k], "%u") != NULL;
    c->reqs[c->nsent++] = (creq_t){.head = strncmp(req, "HEAD", 4) == 0, .tag = tagged ? (int)tag : -1};
    b_add(&c->out, req, (size_t)n);
    for (size_t left = canned_body(k); left > 0;) {
        static char pat[4096];
        if (pat[0] == 0) memset(pat, 'b', sizeof(pat));
        size_t m = TT_MIN(left, sizeof(pat));
        b_add(&c->out, pat, m);
        left -= m;
    }
    /* cut: 0 sends everything the socket takes, else only that many bytes for now */
    client_flush(c, cut == 0 ? SIZE_MAX : cut);
}

static void client_send_raw(client_t *c, script_t *s, size_t n)
{
    if (c == NULL || !c->open || c->shut) {
        s->off = TT_MIN(s->n, s->off + n);
        return;
    }
    c->tainted = true;
    size_t avail = TT_MIN(n, s->n - s->off);
    b_add(&c->out, s->p + s->off, avail);
    s->off += avail;
    client_flush(c, SIZE_MAX);
}

/* Scans `p[0..n)` for "TAG:<a>:<b>;" and checks each against the client and (when `want` >= -1) the request. */
static void check_tags(const client_t *c, const char *p, size_t n, bool exact, int want)
{
    for (const char *q = p, *end = p + n; (q = memmem(q, (size_t)(end - q), "TAG:", 4)) != NULL; q += 4) {
        int a = -1, b = -2;
        char tmp[32];
        size_t m = TT_MIN((size_t)(end - q), sizeof(tmp) - 1);
        memcpy(tmp, q, m);
        tmp[m] = 0;
        if (sscanf(tmp, "TAG:%d:%d;", &a, &b) < 1) continue;
        if (a != c->id) violation("client %d received bytes of client %d's exchange %d (\"%.20s\")", c->id, a, b, tmp);
        if (exact && b != want)
            violation("client %d: the response to its request %d carries bytes of its request %d", c->id, want, b);
    }
}

static void response_done(client_t *c)
{
    if (trace) fprintf(stderr, "  client %d: response %u done (request tag %d)\n", c->id, c->nresp, c->cur.tag);
    check_tags(c, c->body.p ? c->body.p : "", c->body.len, true, c->cur.tag);
    c->body.len = 0;
    c->nresp++;
    c->rstate = R_HEAD;
}

/* Parses what a clean client received: heads, framing, one response per request. */
static void client_parse(client_t *c)
{
    static tt_h1_response_t res;
    static const tt_h1_limits_t lim = {.max_target = 8192, .max_field_bytes = 64 * 1024, .max_fields = 100};
    for (;;) {
        if (c->rstate == R_HEAD) {
            if (c->in.len == 0) return;
            int r = tt_h1_parse_response(c->in.p, c->in.len, 0, &lim, &res);
            if (r == TT_INCOMPLETE) return;
            if (r == TT_BAD) violation("client %d received an invalid response head: %.60s", c->id, c->in.p);
            b_drop(&c->in, (size_t)r);
            if (res.status < 200) continue; /* 100 Continue */
            if (c->nresp >= c->nsent)
                violation("client %d received a final response (%d) to no request (%u sent)", c->id, res.status,
                          c->nsent);
            c->cur = c->reqs[c->nresp];
            c->body.len = 0;
            if (!tt_h1_response_has_content(res.status, c->cur.head)) {
                response_done(c);
            } else if (res.chunked) {
                tt_h1_chunked_init(&c->chunk);
                c->rstate = R_CHUNKED;
            } else if (res.content_length >= 0) {
                c->rleft = res.content_length;
                c->rstate = R_LENGTH;
                if (c->rleft == 0) response_done(c);
            } else {
                c->rstate = R_UNTIL_EOF;
            }
            continue;
        }
        if (c->rstate == R_LENGTH) {
            size_t m = (size_t)TT_MIN((int64_t)c->in.len, c->rleft);
            if (m == 0) return;
            if (c->body.len < BODY_KEEP) b_add(&c->body, c->in.p, m);
            b_drop(&c->in, m);
            c->rleft -= (int64_t)m;
            if (c->rleft == 0) response_done(c);
            continue;
        }
        if (c->rstate == R_CHUNKED) {
            if (c->in.len == 0) return;
            tt_str_t d;
            int64_t m = tt_h1_chunked_decode(&c->chunk, c->in.p, c->in.len, &d);
            if (m < 0) violation("client %d received bad chunked framing", c->id);
            if (d.n && c->body.len < BODY_KEEP) b_add(&c->body, d.p, d.n);
            b_drop(&c->in, (size_t)m);
            if (c->chunk.done)
                response_done(c);
            else if (m == 0)
                return;
            continue;
        }
        /* R_UNTIL_EOF: everything is content until tether closes */
        if (c->in.len == 0) return;
        if (c->body.len < BODY_KEEP) b_add(&c->body, c->in.p, c->in.len);
        c->in.len = 0;
        return;
    }
}

static void client_read(client_t *c)
{
    if (!c->open || c->eof || !c->reading) return;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0 && trace) fprintf(stderr, "  client %d got %zd bytes: %.*s\n", c->id, n, (int)TT_MIN(n, 120), buf);
        if (n > 0) {
            if (c->tainted) {
                /* only other clients' tags: scan with the tail of the previous read */
                char win[sizeof(buf) + sizeof(c->tail)];
                memcpy(win, c->tail, c->ntail);
                memcpy(win + c->ntail, buf, (size_t)n);
                check_tags(c, win, c->ntail + (size_t)n, false, 0);
                size_t t = TT_MIN((size_t)n + c->ntail, sizeof(c->tail));
                memcpy(c->tail, win + c->ntail + (size_t)n - t, t);
                c->ntail = t;
            } else {
                b_add(&c->in, buf, (size_t)n);
                client_parse(c);
            }
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->eof = true;
            if (!c->tainted && c->rstate == R_UNTIL_EOF) response_done(c);
            return;
        }
        if (errno == EAGAIN) return;
    }
}

static void client_close(client_t *c, uint8_t how)
{
    if (!c->open) return;
    if (how % 3 == 0 && !c->shut) {
        shutdown(c->fd, SHUT_WR);
        c->shut = true;
        return;
    }
    if (how % 3 == 1) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd);
    c->open = false;
}

/* ---- the origin ---- */

static void origin_accept(void)
{
    if (norigin == MAX_ORIGIN) return;
    int fd = accept4(g.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    oconn_t *o = &origin[norigin++];
    memset(o, 0, sizeof(*o));
    o->fd = fd;
    o->open = true;
    o->reading = true;
    o->last = (oreq_t){.client = NO_ONE, .tag = 0};
}

/* The client a request is from: the last element of X-Forwarded-For, which tether appends (10.0.0.N). */
static int request_client(const tt_h1_request_t *h)
{
    int xff = tt_h1_find_field(h, TT_LIT("x-forwarded-for"));
    if (xff < 0) return NO_ONE;
    tt_str_t v = h->fields[xff].value;
    const char *dot = NULL;
    for (size_t i = 0; i < v.n; i++)
        if (v.p[i] == '.') dot = v.p + i;
    if (dot == NULL) return NO_ONE;
    int id = 0;
    for (const char *q = dot + 1; q < v.p + v.n && *q >= '0' && *q <= '9'; q++) id = id * 10 + (*q - '0');
    return id;
}

/* Parses the requests tether sent: heads (with their client and tag), then content by its framing. */
static void origin_parse(oconn_t *o)
{
    static tt_h1_request_t h;
    static const tt_h1_limits_t lim = {.max_target = 65536, .max_field_bytes = 1 << 20, .max_fields = 100};
    while (o->in.len > 0 && o->state != O_LOST) {
        if (o->state == O_HEAD) {
            o->partial = true;
            int r = tt_h1_parse_request(o->in.p, o->in.len, 0, &lim, &h);
            if (r == TT_INCOMPLETE) return;
            if (r == TT_BAD) { /* e.g. a client's 100 fields plus tether's: beyond this parser; stop tracking */
                o->state = O_LOST;
                return;
            }
            int tag = -1;
            if (h.target.n > 3 && memcmp(h.target.p, "/p/", 3) == 0) {
                tag = 0;
                for (size_t i = 3; i < h.target.n && h.target.p[i] >= '0' && h.target.p[i] <= '9'; i++)
                    tag = tag * 10 + (h.target.p[i] - '0');
            }
            if (trace)
                fprintf(stderr, "  origin %d got %.*s\n", (int)(o - origin), (int)TT_MIN(h.target.n, 40), h.target.p);
            if (o->npending < MAX_REQS)
                o->pending[o->npending++] =
                    (oreq_t){.client = request_client(&h), .tag = tag, .head = h.method_id == TT_METHOD_HEAD};
            bool chunked = h.chunked;
            int64_t cl = h.content_length;
            b_drop(&o->in, (size_t)r);
            if (chunked) {
                tt_h1_chunked_init(&o->chunk);
                o->state = O_CHUNKED;
            } else if (cl > 0) {
                o->left = cl;
                o->state = O_LENGTH;
            } else {
                o->partial = false;
            }
            continue;
        }
        if (o->state == O_LENGTH) {
            size_t m = (size_t)TT_MIN((int64_t)o->in.len, o->left);
            b_drop(&o->in, m);
            o->left -= (int64_t)m;
            if (o->left == 0) {
                o->state = O_HEAD;
                o->partial = false;
            }
            continue;
        }
        tt_str_t d;
        int64_t m = tt_h1_chunked_decode(&o->chunk, o->in.p, o->in.len, &d);
        if (m < 0) {
            o->state = O_LOST;
            return;
        }
        b_drop(&o->in, (size_t)m);
        if (o->chunk.done) {
            o->state = O_HEAD;
            o->partial = false;
        } else if (m == 0) {
            return;
        }
    }
}

static void origin_read(oconn_t *o)
{
    if (!o->open || !o->reading || o->eof) return;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(o->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            if (o->state != O_LOST) b_add(&o->in, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) o->eof = true;
        break;
    }
    origin_parse(o);
}

static void origin_flush(oconn_t *o, size_t max)
{
    if (!o->open) return;
    size_t n = TT_MIN(max, o->out.len);
    while (n > 0) {
        ssize_t w = send(o->fd, o->out.p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        b_drop(&o->out, (size_t)w);
        n -= (size_t)w;
    }
}

/* Content of `len` bytes that starts with the tag (when it fits) and is padded with dots. */
static void add_content(bytes_t *b, const oreq_t *r, size_t len)
{
    char tag[32];
    int t = snprintf(tag, sizeof(tag), "TAG:%d:%d;", r->client, r->tag);
    size_t k = 0;
    if ((size_t)t <= len) {
        b_add(b, tag, (size_t)t);
        k = (size_t)t;
    }
    static char dots[4096];
    if (dots[0] == 0) memset(dots, '.', sizeof(dots));
    while (k < len) {
        size_t m = TT_MIN(len - k, sizeof(dots));
        b_add(b, dots, m);
        k += m;
    }
}

/* A head and content whose total is `total` bytes (when that is at least the head's size). */
static void add_sized(bytes_t *b, const oreq_t *r, const char *extra_fields, size_t total)
{
    char head[512];
    size_t hl = 0, cl = 0;
    for (int i = 0; i < 4; i++) { /* the length's digits change the head's size: settle in a few steps */
        hl = (size_t)snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\n%sContent-Length: %zu\r\n\r\n", extra_fields, cl);
        cl = total > hl ? total - hl : 0;
    }
    hl = (size_t)snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\n%sContent-Length: %zu\r\n\r\n", extra_fields, cl);
    b_add(b, head, hl);
    if (!r->head) add_content(b, r, cl);
}

static size_t size_class(uint8_t k, uint8_t fine)
{
    switch (k % 8) {
    case 0: return 80 + fine % 200;
    case 1: return 16384;
    case 2: return 32768;
    case 3: return 65536;
    case 4: return 16384 + (size_t)(fine % 3) - 1;
    case 5: return 4096 * (1 + fine % 16);
    case 6: return 100000 + (size_t)fine * 400;
    default: return (size_t)fine * 7;
    }
}

/* Answers the oldest request of an origin connection in one of many ways. */
static void origin_respond(oconn_t *o, uint8_t kind, uint8_t sz, uint8_t fine, uint8_t flags)
{
    origin_read(o);
    if (!o->open || o->npending == 0 || o->state == O_LOST) return;
    oreq_t r = o->pending[0];
    memmove(&o->pending[0], &o->pending[1], (o->npending - 1) * sizeof(oreq_t));
    o->npending--;
    bytes_t *b = &o->out;
    bool close_after = false;
    char tmp[256];
    switch (kind % 13) {
    case 0: add_sized(b, &r, "", size_class(sz, fine)); break;
    case 1: { /* chunked, maybe with trailers */
        b_add(b, TT_LIT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
        size_t total = size_class(sz, fine);
        if (!r.head) {
            bytes_t c = {0};
            add_content(&c, &r, total);
            for (size_t off = 0; off < c.len;) {
                size_t m = TT_MIN(c.len - off, (size_t)(fine % 5 + 1) * 1000);
                int n = snprintf(tmp, sizeof(tmp), "%zx\r\n", m);
                b_add(b, tmp, (size_t)n);
                b_add(b, c.p + off, m);
                b_add(b, TT_LIT("\r\n"));
                off += m;
            }
            b_free(&c);
            b_add(b, TT_LIT("0\r\n"));
            if (flags & 4) b_add(b, TT_LIT("X-Trailer: 1\r\n"));
            b_add(b, TT_LIT("\r\n"));
        }
        break;
    }
    case 2: /* close-delimited */
        b_add(b, TT_LIT("HTTP/1.1 200 OK\r\n\r\n"));
        if (!r.head) add_content(b, &r, size_class(sz, fine));
        close_after = true;
        break;
    case 3: /* 204, maybe with content it must not have */
        b_add(b, TT_LIT("HTTP/1.1 204 No Content\r\n\r\n"));
        if (flags & 4) add_content(b, &r, 20);
        break;
    case 4: /* 304, maybe with content */
        b_add(b, TT_LIT("HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\n\r\n"));
        if (flags & 4) add_content(b, &r, 20);
        break;
    case 5: /* interim responses first */
        b_add(b, TT_LIT("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"));
        add_sized(b, &r, "", size_class(sz, fine));
        break;
    case 6:
        add_sized(b, &r, "Connection: close\r\n", size_class(sz, fine));
        close_after = true;
        break;
    case 7: b_add(b, TT_LIT("SSH-2.0-not-http\r\n\r\n")); break;
    case 8: /* HTTP/1.0 without keep-alive: closes after */
        b_add(b, TT_LIT("HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n"));
        if (!r.head) add_content(b, &r, 12);
        close_after = true;
        break;
    case 9: { /* a Keep-Alive hint */
        int n = snprintf(tmp, sizeof(tmp), "Keep-Alive: timeout=%u, max=%u\r\n", fine % 8, flags % 4);
        (void)n;
        add_sized(b, &r, tmp, size_class(sz, fine));
        break;
    }
    case 10:
        b_add(b, TT_LIT("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
        break;
    case 11: b_add(b, TT_LIT("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")); break;
    default: /* a HEAD answered with content, or an early answer */
        add_sized(b, &r, "", size_class(sz, fine));
        if (r.head) add_content(b, &r, 30);
        break;
    }
    if (flags & 1) { /* a second response nobody asked for, in the same write */
        bytes_t x = {0};
        add_sized(&x, &r, "X-Poison: 1\r\n", 60 + fine);
        b_add(b, x.p, x.len);
        b_free(&x);
    }
    o->last = r;
    o->answered = true;
    /* cut: flags bit 1 writes only part now (the rest with ORIGIN_FLUSH) */
    origin_flush(o, (flags & 2) ? (size_t)fine * 97 + 1 : SIZE_MAX);
    if (close_after && o->out.len == 0) {
        shutdown(o->fd, SHUT_WR);
    }
}

/* Bytes nobody asked for, on a connection with no request waiting: the tag of the exchange they follow. */
static void origin_stray(oconn_t *o, uint8_t n)
{
    /* Only when the origin knows nothing is on its way: it must have read all there is. Bytes written after a
     * request went out cannot be told from its answer (HTTP/1.1 has no request ids): not tether's to catch. */
    if (!o->reading) return;
    origin_read(o);
    if (!o->open || o->npending > 0 || o->partial || o->state == O_LOST || o->out.len > 0) return;
    bytes_t *b = &o->out;
    if (n & 1) {
        add_sized(b, &o->last, "X-Stray: 1\r\n", 100 + n); /* content enough for the tag */
    } else {
        char tag[32];
        int t = snprintf(tag, sizeof(tag), "TAG:%d:%d;", o->last.client, o->last.tag);
        b_add(b, tag, (size_t)t);
    }
    origin_flush(o, SIZE_MAX);
}

static void origin_close(oconn_t *o, uint8_t how)
{
    if (!o->open) return;
    if (how % 3 == 0) {
        shutdown(o->fd, SHUT_WR);
        return;
    }
    if (how % 3 == 1) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(o->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(o->fd);
    o->open = false;
}

/* ---- running ---- */

static void turns(int n)
{
    for (int i = 0; i < n; i++) tt_loop_run_once(loop, 0);
    for (size_t i = 0; i < nclients; i++) client_read(&clients[i]);
    for (size_t i = 0; i < norigin; i++)
        if (origin[i].reading) origin_read(&origin[i]);
}

static void advance(uint64_t ms)
{
    clock_ms += ms;
    tt_loop_set_clock(loop, clock_ms, (int64_t)(clock_ms / 1000));
}

static void run_script(script_t *s)
{
    for (int steps = 0; more(s) && steps < 400; steps++) {
        /* every event: [op][client][origin][a][b][c][d], and for raw bytes `a` more bytes */
        uint8_t op = next(s), cs = next(s), os = next(s), a = next(s), b = next(s), x = next(s), d = next(s);
        client_t *c = nclients ? &clients[cs % nclients] : NULL;
        oconn_t *o = norigin ? &origin[os % norigin] : NULL;
        int what = (op & 0x7f) % 17;
        if (trace) fprintf(stderr, "op %d client %d origin %d\n", what, c ? c->id : -1, o ? (int)(o - origin) : -1);
        switch (what) {
        case 0: client_open(a); break;
        case 1:
        case 2:
            if (c) client_send_canned(c, a, b);
            break;
        case 3: client_send_raw(c, s, a); break;
        case 4:
            if (c) client_flush(c, a ? (size_t)b * 64 : SIZE_MAX);
            break;
        case 5:
            if (c) c->reading = !c->reading;
            break;
        case 6:
            if (c) client_close(c, a);
            break;
        case 7:
        case 8: origin_accept(); break;
        case 9:
        case 10:
            if (o) origin_respond(o, a, b, x, d);
            break;
        case 11:
            if (o) origin_flush(o, a ? (size_t)b * 128 : SIZE_MAX);
            break;
        case 12:
            if (o) origin_stray(o, a);
            break;
        case 13:
            if (o) o->reading = !o->reading;
            break;
        case 14:
            if (o) origin_close(o, a);
            break;
        case 15: advance((uint64_t)(a << 8 | b) % 40000); break;
        default:
            if ((a & 63) == 0) tt_server_drain(srv);
            break;
        }
        /* op's high bit: no loop turn yet, so that the next event lands in the same poll batch */
        if (!(op & 0x80)) turns(TURNS);
    }
}

/* After the script: no traffic, the clock far past every deadline. Everything must be closed. */
static void finish_and_check(void)
{
    for (size_t i = 0; i < nclients; i++) clients[i].reading = true;
    for (int step = 0; step < 40; step++) {
        while (norigin < MAX_ORIGIN) {
            size_t before = norigin;
            origin_accept();
            if (norigin == before) break;
        }
        for (size_t i = 0; i < norigin; i++) origin[i].reading = true;
        advance(10000);
        turns(TURNS);
    }
    for (size_t i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (c->open && !c->eof)
            violation("client %d is still connected after 400 s without traffic (%u requests, %u responses)", c->id,
                      c->nsent, c->nresp);
        /* every request got its response or a close: nothing more to check once closed, but never more responses */
        if (!c->tainted && c->nresp > c->nsent) violation("client %d: more responses than requests", c->id);
    }
    for (size_t i = 0; i < norigin; i++)
        if (origin[i].open && !origin[i].eof)
            violation("an upstream connection is still open after 400 s without traffic");
    if (tt_server_open_connections(srv) != 0)
        violation("%u client connections still open in the worker", tt_server_open_connections(srv));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g.ready) setup();
    tt_router_t router = {0};
    char err[512];
    tt_proxy_registry_t *reg = tt_proxy_registry_new(g.conf.upstreams, g.conf.nupstreams, 1, NULL, err, sizeof(err));
    if (reg == NULL) tt_fatal("registry: %s", err);
    tt_static_conf_t sconf = {.root = g.conf.routes[1].root, .index = "index.html"};
    tt_proxy_conf_t pconf = {.up = &g.conf.upstreams[0], .route = "/p", .reg = reg};
    tt_router_add(&router, "/p", &tt_proxy_ops, &pconf);
    tt_router_add(&router, "/s", &tt_static_ops, &sconf);
    tt_listener_conf_t listener = {.policy = &g.conf.listens[0].policy};
    const char *why;
    tt_addr_parse("127.0.0.1:0", false, &listener.addr, &why);
    tt_server_conf_t sc = {.inline_worker = true,
                           .workers = 1,
                           .max_connections = g.conf.max_connections,
                           .drain_timeout_ms = g.conf.drain_timeout_ms,
                           .backlog = 16,
                           .listeners = &listener,
                           .nlisteners = 1,
                           .router = &router,
                           .access_log_fd = -1,
                           .name = "fuzz"};
    srv = tt_server_new(&sc, err, sizeof(err));
    if (srv == NULL) tt_fatal("server: %s", err);
    loop = tt_server_loop(srv, 0);
    clock_ms = tt_loop_now(loop);
    advance(0);
    tt_server_start_inline(srv);
    nclients = norigin = 0;

    script_t s = {.p = data, .n = size};
    run_script(&s);
    finish_and_check();

    tt_server_finish_inline(srv);
    tt_server_free(&srv);
    tt_proxy_registry_free(&reg);
    tt_router_dispose(&router);
    for (size_t i = 0; i < nclients; i++) {
        if (clients[i].open) close(clients[i].fd);
        b_free(&clients[i].out);
        b_free(&clients[i].in);
        b_free(&clients[i].body);
    }
    for (size_t i = 0; i < norigin; i++) {
        if (origin[i].open) close(origin[i].fd);
        b_free(&origin[i].in);
        b_free(&origin[i].out);
    }
    for (int fd; (fd = accept4(g.lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0;) close(fd); /* connects never accepted */
    return 0;
}
