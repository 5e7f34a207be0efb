/* status.c -- /metrics (Prometheus text), /status.json (the metrics parsed back, advice, connections), /status */
#include "handlers/status.h"

#include "core/loop.h"
#include "metrics/advise.h"
#include "metrics/snapshot.h"

#include <math.h>
#include <time.h>

#define MAX_ADVICE 64

static void *status_worker_init(const void *conf, tt_worker_t *w)
{
    (void)w;
    return (void *)conf;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void tt_status_start(tt_status_conf_t *sc)
{
    sc->_started_mono_ms = mono_ms();
    sc->_started_unix_s = (int64_t)time(NULL);
}

static void respond_buf(tt_req_t *rq, const char *type, const char *buf, size_t len)
{
    char f[128];
    int n = snprintf(f, sizeof(f), "Content-Type: %s\r\nCache-Control: no-store\r\n", type);
    tt_resp_t r;
    tt_resp_init(&r, 200);
    r.fields = tt_str(f, (size_t)n);
    r.body = buf;
    r.body_len = len;
    r.content_length = (int64_t)len;
    tt_req_respond(rq, &r);
}

/* The Prometheus text of the server: the workers' shards summed, then the extra renderer's. */
static void render_metrics(const tt_status_conf_t *sc, char **out, size_t *len, size_t *cap)
{
    size_t n;
    tt_metrics_shard_t *const *shards = tt_server_shards(sc->srv, &n);
    tt_metrics_render(shards, n, out, len, cap);
    if (sc->extra) sc->extra(sc->extra_arg, out, len, cap);
}

static void json_num(char **out, size_t *len, size_t *cap, double v)
{
    if (isfinite(v))
        tt_metrics_printf(out, len, cap, "%.10g", v);
    else
        tt_metrics_printf(out, len, cap, "null"); /* JSON has no NaN or Inf */
}

/* Summed over the samples' labels: a later version may split a metric by listener or protocol. */
static double snap_value(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want)
{
    return tt_snapshot_sum(s, name, want, NULL);
}

/* `"value":sum` for each distinct value of label `label` of metric `name`, summed over its other labels (a
 * later version may add some), comma separated. */
static void render_sums_by(const tt_snapshot_t *s, const char *name, const char *label, char **out, size_t *len,
                           size_t *cap)
{
    const char *vals[64];
    size_t n = tt_snapshot_label_values(s, name, NULL, label, vals, TT_ARRAY_SIZE(vals));
    for (size_t i = 0; i < n; i++) {
        tt_metrics_printf(out, len, cap, "%s", i ? "," : "");
        tt_metrics_json_str(out, len, cap, vals[i]);
        tt_metrics_printf(out, len, cap, ":");
        json_num(out, len, cap, tt_snapshot_sum(s, name, (const char *[]){label, vals[i], NULL}, NULL));
    }
}

/* The summary kept from the first /status JSON: connections (accepted, open, idle, closed by reason) and
 * responses by status class. */
static void render_summary(const tt_snapshot_t *s, char **out, size_t *len, size_t *cap)
{
    tt_metrics_printf(out, len, cap, "\"connections\":{\"accepted\":");
    json_num(out, len, cap, snap_value(s, "tether_connections_accepted_total", NULL));
    tt_metrics_printf(out, len, cap, ",\"open\":");
    json_num(out, len, cap, snap_value(s, "tether_connections_open", NULL));
    tt_metrics_printf(out, len, cap, ",\"idle\":");
    json_num(out, len, cap, snap_value(s, "tether_connections_idle", NULL));
    tt_metrics_printf(out, len, cap, ",\"closed\":{");
    render_sums_by(s, "tether_connections_closed_total", "reason", out, len, cap);
    tt_metrics_printf(out, len, cap, "}},\"requests\":{");
    render_sums_by(s, "tether_requests_total", "class", out, len, cap);
    tt_metrics_printf(out, len, cap, "}");
}

/* Every sample as {"n": name, "l": {labels}, "v": value}: the page finds any metric by name. */
static void render_samples(const tt_snapshot_t *s, char **out, size_t *len, size_t *cap)
{
    tt_metrics_printf(out, len, cap, "\"samples\":[");
    for (size_t i = 0; i < s->n; i++) {
        const tt_sample_t *smp = &s->samples[i];
        tt_metrics_printf(out, len, cap, "%s{\"n\":\"%s\",\"l\":{", i ? "," : "", smp->name);
        for (size_t k = 0; k < smp->nlabels; k++) {
            tt_metrics_printf(out, len, cap, "%s\"%s\":", k ? "," : "", smp->labels[k].name);
            tt_metrics_json_str(out, len, cap, smp->labels[k].value);
        }
        tt_metrics_printf(out, len, cap, "},\"v\":");
        json_num(out, len, cap, smp->value);
        tt_metrics_printf(out, len, cap, "}");
    }
    tt_metrics_printf(out, len, cap, "]");
}

static void render_conn_list(const tt_conn_info_t *list, size_t n, char **out, size_t *len, size_t *cap)
{
    tt_metrics_printf(out, len, cap, "[");
    for (size_t i = 0; i < n; i++) {
        const tt_conn_info_t *ci = &list[i];
        char as[TT_ADDR_STRLEN];
        tt_addr_format(&ci->peer, as, sizeof(as));
        tt_metrics_printf(
            out, len, cap,
            "%s{\"id\":%llu,\"peer\":\"%s\",\"age_s\":%.3f,\"idle_s\":%.3f,\"requests\":%u,\"state\":\"%s\","
            "\"protocol\":\"%s\",\"tls\":%s,\"listener\":%u}",
            i ? "," : "", (unsigned long long)ci->id, as, (double)ci->age_ms / 1000.0, (double)ci->idle_ms / 1000.0,
            ci->requests, ci->state < TT_CONN__STATES ? tt_conn_state_names[ci->state] : "?", ci->h2 ? "h2" : "h1",
            ci->tls ? "true" : "false", ci->listener);
    }
    tt_metrics_printf(out, len, cap, "]");
}

/* The workers' published connection reports: per listener (its bound address) the counts by state, and the
 * twenty oldest and longest-idle connections. */
static void render_conns(const tt_status_conf_t *sc, char **out, size_t *len, size_t *cap)
{
    tt_conn_report_t *r = tt_malloc(sizeof(*r));
    tt_server_conn_report(sc->srv, r);
    tt_metrics_printf(out, len, cap, "\"listeners\":[");
    /* the workers' reports may lag a reload the server already published: only listeners both know */
    for (size_t l = 0; l < r->nlisteners && l < tt_server_nlisteners(sc->srv); l++) {
        char as[TT_ADDR_STRLEN];
        tt_addr_format(tt_server_bound_addr(sc->srv, l), as, sizeof(as));
        tt_metrics_printf(out, len, cap, "%s{\"listener\":\"%s\",\"name\":", l ? "," : "", as);
        tt_metrics_json_str(out, len, cap, tt_server_listener_name(sc->srv, l));
        tt_metrics_printf(out, len, cap, ",\"states\":{");
        for (size_t st = 0; st < TT_CONN__STATES; st++)
            tt_metrics_printf(out, len, cap, "%s\"%s\":%u", st ? "," : "", tt_conn_state_names[st], r->by_state[l][st]);
        tt_metrics_printf(out, len, cap, "}}");
    }
    tt_metrics_printf(out, len, cap, "],\"oldest\":");
    render_conn_list(r->oldest, r->noldest, out, len, cap);
    tt_metrics_printf(out, len, cap, ",\"longest_idle\":");
    render_conn_list(r->idlest, r->nidlest, out, len, cap);
    free(r);
}

static void render_json(const tt_status_conf_t *sc, char **out, size_t *len, size_t *cap)
{
    char *text = NULL;
    size_t tlen = 0, tcap = 0;
    render_metrics(sc, &text, &tlen, &tcap);
    tt_snapshot_t snap;
    tt_snapshot_parse(&snap, text, tlen);
    tt_advice_t *adv = tt_calloc(MAX_ADVICE, sizeof(*adv));
    size_t nadv = tt_advise(&snap, adv, MAX_ADVICE);

    tt_metrics_printf(out, len, cap, "{\"version\":\"%s\",\"started\":%lld,\"uptime_s\":%.3f,\"workers\":%u,",
                      TETHER_VERSION, (long long)sc->_started_unix_s,
                      (double)(mono_ms() - sc->_started_mono_ms) / 1000.0, tt_server_workers(sc->srv));
    render_summary(&snap, out, len, cap);
    tt_metrics_printf(out, len, cap, ",");
    render_conns(sc, out, len, cap);
    tt_metrics_printf(out, len, cap, ",\"advice\":");
    tt_advice_render_json(adv, nadv, out, len, cap);
    tt_metrics_printf(out, len, cap, ",");
    render_samples(&snap, out, len, cap);
    tt_metrics_printf(out, len, cap, "}\n");
    free(adv);
    tt_snapshot_free(&snap);
    free(text);
}

/* The advice alone, as text or as a JSON array (`tether advise --status URL`). */
static void render_advice(const tt_status_conf_t *sc, bool json, char **out, size_t *len, size_t *cap)
{
    char *text = NULL;
    size_t tlen = 0, tcap = 0;
    render_metrics(sc, &text, &tlen, &tcap);
    tt_snapshot_t snap;
    tt_snapshot_parse(&snap, text, tlen);
    tt_advice_t *adv = tt_calloc(MAX_ADVICE, sizeof(*adv));
    size_t nadv = tt_advise(&snap, adv, MAX_ADVICE);
    if (json) {
        tt_advice_render_json(adv, nadv, out, len, cap);
        tt_metrics_printf(out, len, cap, "\n");
    } else {
        tt_advice_render_text(adv, nadv, out, len, cap);
    }
    free(adv);
    tt_snapshot_free(&snap);
    free(text);
}

static void status_handle(void *state, tt_req_t *rq)
{
    const tt_status_conf_t *sc = state;
    tt_method_t m = rq->head->method_id;
    if (m != TT_METHOD_GET && m != TT_METHOD_HEAD) {
        tt_req_respond_text(rq, 405, TT_STR("Allow: GET, HEAD\r\n"));
        return;
    }
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (tt_str_eq(rq->path, sc->metrics_path, strlen(sc->metrics_path))) {
        render_metrics(sc, &out, &len, &cap);
        respond_buf(rq, "text/plain; version=0.0.4", out, len);
    } else if (tt_str_eq(rq->path, TT_LIT("/status.json"))) {
        render_json(sc, &out, &len, &cap);
        respond_buf(rq, "application/json", out, len);
    } else if (tt_str_eq(rq->path, TT_LIT("/advice")) || tt_str_eq(rq->path, TT_LIT("/advice.json"))) {
        bool json = tt_str_eq(rq->path, TT_LIT("/advice.json"));
        render_advice(sc, json, &out, &len, &cap);
        respond_buf(rq, json ? "application/json" : "text/plain; charset=utf-8", out, len);
    } else if (tt_str_eq(rq->path, TT_LIT("/status")) || tt_str_eq(rq->path, TT_LIT("/status/"))) {
        respond_buf(rq, "text/html; charset=utf-8", (const char *)tt_status_page_html, tt_status_page_html_len);
    } else {
        tt_req_respond_text(rq, 404, TT_STR_NULL);
    }
    free(out);
}

const tt_handler_ops_t tt_status_ops = {
    .name = "status",
    .worker_init = status_worker_init,
    .handle = status_handle,
    .async = false,
};
