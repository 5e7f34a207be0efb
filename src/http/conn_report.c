/* conn_report.c -- each worker's once-a-second summary of its connections, published for the status page
 *
 * The worker walks its own connection list on its own loop (nothing else may read it), keeps the twenty oldest
 * and the twenty longest idle, counts every connection by listener and state, and copies the result under a
 * per-worker mutex that the admin thread takes to read it. The request path never takes the lock.
 */
#include "http/worker.h"

const char *const tt_conn_state_names[TT_CONN__STATES] = {"reading", "writing",   "idle",
                                                          "tunnel",  "handshake", "closing"};

#define REPORT_MS 1000

/* Inserts `ci` into `list` (n entries, at most TT_CONN_REPORT_TOP) ordered by `key` descending. */
static void top_insert(tt_conn_info_t *list, size_t *n, const tt_conn_info_t *ci, bool by_idle)
{
    uint64_t k = by_idle ? ci->idle_ms : ci->age_ms;
    size_t i = *n;
    while (i > 0 && (by_idle ? list[i - 1].idle_ms : list[i - 1].age_ms) < k) i--;
    if (i >= TT_CONN_REPORT_TOP) return;
    size_t last = *n < TT_CONN_REPORT_TOP ? *n : TT_CONN_REPORT_TOP - 1;
    memmove(&list[i + 1], &list[i], (last - i) * sizeof(*list));
    list[i] = *ci;
    if (*n < TT_CONN_REPORT_TOP) (*n)++;
}

static void report_add(tt_conn_report_t *r, const tt_conn_info_t *ci)
{
    size_t l = TT_MIN((size_t)ci->listener, (size_t)TT_CONN_REPORT_LISTENERS - 1);
    /* a connection on a listener a reload removed finishes uncounted by state (its listener is gone) */
    if (ci->listener != UINT16_MAX && ci->state < TT_CONN__STATES) r->by_state[l][ci->state]++;
    top_insert(r->oldest, &r->noldest, ci, false);
    if (ci->state == TT_CONN_IDLE) top_insert(r->idlest, &r->nidlest, ci, true);
}

static void report_publish(tt_worker_t *w)
{
    tt_conn_report_t r;
    memset(&r, 0, sizeof(r));
    r.nlisteners = TT_MIN(w->cur ? w->cur->nls : 0, (size_t)TT_CONN_REPORT_LISTENERS);
    uint64_t now = tt_loop_now(w->loop);
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &w->conns)
    {
        const tt__conn_t *conn = tt_container_of(pos, tt__conn_t, link);
        if (conn->ops->info == NULL) continue;
        tt_conn_info_t ci;
        memset(&ci, 0, sizeof(ci));
        conn->ops->info(conn, now, &ci);
        report_add(&r, &ci);
    }
    pthread_mutex_lock(&w->report_mu);
    w->report = r;
    pthread_mutex_unlock(&w->report_mu);
}

static void report_on_timer(tt_timer_t *t)
{
    tt_worker_t *w = tt_container_of(t, tt_worker_t, report_timer);
    report_publish(w);
    tt_timer_arm(w->loop, &w->report_timer, REPORT_MS);
}

void tt__worker_report_init(tt_worker_t *w)
{
    pthread_mutex_init(&w->report_mu, NULL);
    tt_timer_init(&w->report_timer, report_on_timer);
}

void tt__worker_report_start(tt_worker_t *w)
{
    report_publish(w);
    tt_timer_arm(w->loop, &w->report_timer, REPORT_MS);
}

void tt__worker_report_stop(tt_worker_t *w)
{
    tt_timer_disarm(w->loop, &w->report_timer);
}

void tt__worker_report_merge(tt_worker_t *w, tt_conn_report_t *out)
{
    pthread_mutex_lock(&w->report_mu);
    const tt_conn_report_t *r = &w->report;
    for (size_t i = 0; i < r->noldest; i++) top_insert(out->oldest, &out->noldest, &r->oldest[i], false);
    for (size_t i = 0; i < r->nidlest; i++) top_insert(out->idlest, &out->nidlest, &r->idlest[i], true);
    for (size_t l = 0; l < TT_CONN_REPORT_LISTENERS; l++)
        for (size_t s = 0; s < TT_CONN__STATES; s++) out->by_state[l][s] += r->by_state[l][s];
    out->nlisteners = TT_MAX(out->nlisteners, r->nlisteners);
    pthread_mutex_unlock(&w->report_mu);
}

void tt__worker_report_dispose(tt_worker_t *w)
{
    pthread_mutex_destroy(&w->report_mu);
}
