/* advise.c -- `tether advise`: reads a running tether's metrics and says which settings to change, and why */
#include "client/upstream.h"
#include "cmd/cli_url.h"
#include "cmd/cmd.h"
#include "core/err.h"
#include "metrics/advise.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>

#define FETCH_TIMEOUT_MS 5000
#define MAX_BODY         (64u << 20) /* a scrape larger than this is not a tether's */
#define MAX_ADVICE       128

static const char advise_usage[] =
    "usage: tether advise (--metrics URL | --status URL | --file FILE) [--json]\n"
    "\n"
    "Reads the live counters of a running tether (its admin listener, --metrics ADDR of tether serve) and says, for\n"
    "each listener and upstream, which setting to change, from what to what, and the numbers that say so: reuse gaps\n"
    "against the idle timeout, races a client in front ran against tether's idle close, evictions at\n"
    "max_connections, upstream idle timeouts (hinted, learned) against the pool's, stale reuses, replays and 502\n"
    "causes, pool churn (max_idle), TCP keepalive against NAT idle timeouts.\n"
    "\n"
    "examples:\n"
    "  tether advise --metrics http://127.0.0.1:9901/metrics\n"
    "  tether advise --status http://127.0.0.1:9901/status --json\n"
    "\n"
    "  --metrics URL   the Prometheus text of a tether (its [metrics] path); the advice is computed here\n"
    "  --status URL    the admin listener of a tether (any path on it): prints the advice it computes itself\n"
    "                  (/advice, /advice.json), the same as its status page shows\n"
    "  --file FILE     a saved scrape of /metrics (- for stdin)\n"
    "  --json          a JSON array of {level, scope, name, section, key, current, suggested, reason}\n"
    "  -h, --help      this text\n"
    "\n"
    "exit status: 0 when advice was given (whatever it says), 1 when the metrics could not be read, 2 for bad flags.\n";

/* ---- one GET over the client connection code (src/client/upstream.c) ---- */

typedef struct fetch {
    tt_loop_t *loop;
    tt_bufpool_t bufs;
    tt_h1_response_t res;
    tt_up_timeouts_t to;
    tt_upconn_t *u;
    int status;
    char *body;
    size_t len, cap;
    bool too_big;
    char error[256];
    char head[4096]; /* the request, sent once connected */
    size_t head_len;
} fetch_t;

static void fetch_end(fetch_t *f)
{
    if (f->u != NULL) tt_upconn_close(f->u);
    f->u = NULL;
    tt_loop_stop(f->loop);
}

static void fetch_on_connect(tt_upconn_t *u, tt_up_err_t err)
{
    fetch_t *f = u->data;
    if (err == TT_UP_OK) {
        tt_upconn_begin(u, false);
        (void)tt_upconn_send(u, f->head, f->head_len);
        tt_upconn_end_request(u);
        return;
    }
    f->u = NULL; /* closed and freed by upstream.c */
    snprintf(f->error, sizeof(f->error), "%s", tt_up_err_name(err));
    tt_loop_stop(f->loop);
}

static void fetch_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    fetch_t *f = u->data;
    if (res->status >= 200) f->status = res->status;
}

static void fetch_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    fetch_t *f = u->data;
    if (f->len + len > MAX_BODY) {
        f->too_big = true;
        return;
    }
    if (f->len + len + 1 > f->cap) {
        f->cap = TT_MAX(f->cap * 2, f->len + len + 65536);
        f->body = tt_realloc(f->body, f->cap);
    }
    memcpy(f->body + f->len, data, len);
    f->len += len;
}

static void fetch_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    (void)trailers;
    fetch_end(u->data);
}

static void fetch_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    fetch_t *f = u->data;
    snprintf(f->error, sizeof(f->error), "%s", tt_up_err_name(err));
    fetch_end(f);
}

static void fetch_on_drain(tt_upconn_t *u)
{
    (void)u;
}

static void fetch_on_parked_event(tt_upconn_t *u, tt_up_sock_t what)
{
    (void)what;
    fetch_end(u->data);
}

static const tt_upconn_ops_t fetch_ops = {
    .on_connect = fetch_on_connect,
    .on_head = fetch_on_head,
    .on_body = fetch_on_body,
    .on_done = fetch_on_done,
    .on_error = fetch_on_error,
    .on_drain = fetch_on_drain,
    .on_parked_event = fetch_on_parked_event,
};

/* GETs `target` (NULL: the URL's own) from `url`, http:// or https:// (checked against the system store). Returns 0
 * with the body in `*body` (NUL-terminated, caller frees) and its length, or -1 after printing why. */
static int fetch_get(const char *url, const char *target, char **body, size_t *len)
{
    tt_cli_url_t u;
    const char *why;
    if (tt_cli_url_parse(url, &u, &why) != 0) {
        fprintf(stderr, "tether advise: %s: %s\n", url, why);
        return -1;
    }
    if (tt_cli_url_resolve(&u, &why) != 0) {
        fprintf(stderr, "tether advise: %s: %s\n", u.host, why);
        return -1;
    }
    char err[512];
    tt_tls_client_t *tls = NULL;
    if (u.scheme == TT_CLI_HTTPS && (tls = tt_cli_url_tls_client(&u, false, false, err, sizeof(err))) == NULL) {
        fprintf(stderr, "tether advise: %s\n", err);
        return -1;
    }
    fetch_t f = {.to = {FETCH_TIMEOUT_MS, FETCH_TIMEOUT_MS, FETCH_TIMEOUT_MS, FETCH_TIMEOUT_MS}};
    f.loop = tt_loop_new();
    if (f.loop == NULL) tt_fatal("tt_loop_new: %s", strerror(errno));
    tt_bufpool_init(&f.bufs, 16384, 4);
    f.head_len = tt_cli_url_request(&u, "GET", target, 1, "advise", "Connection: close\r\n", f.head, sizeof(f.head));
    tt_up_err_t e = TT_UP_OK;
    f.u = tt_upconn_connect(f.loop, &f.bufs, &f.res, &u.addr, NULL, &f.to, &fetch_ops, &f, &e);
    if (f.u == NULL) {
        snprintf(f.error, sizeof(f.error), "%s", tt_up_err_name(e));
    } else {
        if (tls != NULL) tt_upconn_set_tls(f.u, tls, NULL);
        tt_loop_run(f.loop);
        if (f.u != NULL) tt_upconn_close(f.u);
        tt_loop_run_once(f.loop, 0);
    }
    tt_loop_free(&f.loop);
    tt_bufpool_dispose(&f.bufs);
    tt_tls_client_free(&tls);
    int rc = 0;
    if (f.error[0] != '\0' || f.status != 200 || f.too_big) {
        if (f.error[0] != '\0')
            fprintf(stderr, "tether advise: %s://%s%s: %s\n", tt_cli_url_scheme(&u), u.authority,
                    target ? target : u.target, f.error);
        else if (f.too_big)
            fprintf(stderr, "tether advise: %s://%s%s: more than %u bytes: not a tether's metrics\n",
                    tt_cli_url_scheme(&u), u.authority, target ? target : u.target, MAX_BODY);
        else
            fprintf(stderr, "tether advise: %s://%s%s answered %d (is it tether's admin listener, --metrics ADDR?)\n",
                    tt_cli_url_scheme(&u), u.authority, target ? target : u.target, f.status);
        free(f.body);
        return -1;
    }
    if (f.body == NULL) f.body = tt_calloc(1, 1);
    f.body[f.len] = '\0';
    *body = f.body;
    *len = f.len;
    return rc;
}

static int read_file(const char *path, char **body, size_t *len)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "tether advise: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 65536, n = 0;
    char *b = tt_malloc(cap);
    size_t k;
    while ((k = fread(b + n, 1, cap - n - 1, fp)) > 0) {
        n += k;
        if (n + 1 == cap) b = tt_realloc(b, cap *= 2);
    }
    bool bad = ferror(fp);
    if (fp != stdin) fclose(fp);
    if (bad) {
        fprintf(stderr, "tether advise: %s: read error\n", path);
        free(b);
        return -1;
    }
    b[n] = '\0';
    *body = b;
    *len = n;
    return 0;
}

int tt_cmd_advise(int argc, char **argv)
{
    static const struct option opts[] = {
        {"metrics", required_argument, NULL, 'm'}, {"status", required_argument, NULL, 's'},
        {"file", required_argument, NULL, 'f'},    {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *metrics = NULL, *status = NULL, *file = NULL;
    bool json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': metrics = optarg; break;
        case 's': status = optarg; break;
        case 'f': file = optarg; break;
        case 'j': json = true; break;
        case 'h': fputs(advise_usage, stdout); return 0;
        default: return 2;
        }
    }
    if (optind < argc || (metrics != NULL) + (status != NULL) + (file != NULL) != 1) {
        fprintf(stderr, "tether advise: give one of --metrics URL, --status URL or --file FILE (see --help)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char *body = NULL;
    size_t len = 0;
    if (status != NULL) {
        /* The server computed it: print what its status page shows. */
        if (fetch_get(status, json ? "/advice.json" : "/advice", &body, &len) != 0) return 1;
        fwrite(body, 1, len, stdout);
        free(body);
        return 0;
    }
    if ((metrics != NULL ? fetch_get(metrics, NULL, &body, &len) : read_file(file, &body, &len)) != 0) return 1;
    tt_snapshot_t snap;
    tt_snapshot_parse(&snap, body, len);
    free(body);
    if (tt_snapshot_find(&snap, "tether_connections_accepted_total", NULL) == NULL) {
        fprintf(stderr, "tether advise: %s holds no tether metrics (tether_connections_accepted_total)\n",
                metrics ? metrics : file);
        tt_snapshot_free(&snap);
        return 1;
    }
    tt_advice_t *adv = tt_calloc(MAX_ADVICE, sizeof(*adv));
    size_t n = tt_advise(&snap, adv, MAX_ADVICE);
    char *out = NULL;
    size_t olen = 0, ocap = 0;
    if (json) {
        tt_advice_render_json(adv, n, &out, &olen, &ocap);
        tt_metrics_printf(&out, &olen, &ocap, "\n");
    } else {
        tt_advice_render_text(adv, n, &out, &olen, &ocap);
    }
    fwrite(out, 1, olen, stdout);
    free(out);
    free(adv);
    tt_snapshot_free(&snap);
    return 0;
}
