/* status.c -- Prometheus text and a JSON summary, summed from the workers' shards at request time */
#include "handlers/status.h"

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void *status_worker_init(const void *conf, tt_worker_t *w)
{
    (void)w;
    return (void *)conf;
}

static void respond_buf(tt_req_t *rq, const char *type, char *buf, size_t len)
{
    char f[96];
    int n = snprintf(f, sizeof(f), "Content-Type: %s\r\nCache-Control: no-store\r\n", type);
    tt_resp_t r;
    tt_resp_init(&r, 200);
    r.fields = tt_str(f, (size_t)n);
    r.body = buf;
    r.body_len = len;
    r.content_length = (int64_t)len;
    tt_req_respond(rq, &r);
}

static void render_json(const tt_status_conf_t *sc, char **out, size_t *len, size_t *cap)
{
    size_t n;
    tt_metrics_shard_t *const *s = tt_server_shards(sc->srv, &n);
    uint64_t accepted = 0, closed[TT_CLOSE__COUNT] = {0}, req[TT_STATUS_CLASSES] = {0};
    int64_t open = 0, idle = 0;
    for (size_t i = 0; i < n; i++) {
        accepted += LOAD(s[i]->conn_accepted);
        open += LOAD(s[i]->conn_open);
        idle += LOAD(s[i]->conn_idle);
        for (int r = 0; r < TT_CLOSE__COUNT; r++) closed[r] += LOAD(s[i]->conn_closed[r]);
        for (int c = 0; c < TT_STATUS_CLASSES; c++) req[c] += LOAD(s[i]->requests[c]);
    }
    tt_metrics_printf(out, len, cap,
                      "{\"workers\":%zu,\"connections\":{\"accepted\":%llu,\"open\":%lld,\"idle\":%lld,\"closed\":{", n,
                      (unsigned long long)accepted, (long long)open, (long long)idle);
    for (int r = 1; r < TT_CLOSE__COUNT; r++)
        tt_metrics_printf(out, len, cap, "%s\"%s\":%llu", r > 1 ? "," : "", tt_close_reason_name((tt_close_reason_t)r),
                          (unsigned long long)closed[r]);
    tt_metrics_printf(out, len, cap, "}},\"requests\":{");
    for (int c = 0; c < TT_STATUS_CLASSES; c++)
        tt_metrics_printf(out, len, cap, "%s\"%dxx\":%llu", c ? "," : "", c + 1, (unsigned long long)req[c]);
    tt_metrics_printf(out, len, cap, "}}\n");
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
        size_t n;
        tt_metrics_shard_t *const *shards = tt_server_shards(sc->srv, &n);
        tt_metrics_render(shards, n, &out, &len, &cap);
        if (sc->extra) sc->extra(sc->extra_arg, &out, &len, &cap);
        respond_buf(rq, "text/plain; version=0.0.4", out, len);
    } else if (tt_str_eq(rq->path, TT_LIT("/status"))) {
        render_json(sc, &out, &len, &cap);
        respond_buf(rq, "application/json", out, len);
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
