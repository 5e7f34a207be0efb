/* server.c -- workers: listeners, accept with the connection limit, eviction, drain, reload by generations */
#include "http/worker.h"
#include "http/date.h"
#include "core/log.h"
#include "net/tls.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/*
 * A configuration generation, server-wide: what the workers build their tt__wgen_t from. Written by the main
 * thread before it is published (a release store into each worker's `pending`), read-only afterwards, except
 * `fds` (each worker takes its own column) and the release bookkeeping (under srv->gen_lock).
 */
typedef struct tt__gen tt__gen_t;
struct tt__gen {
    uint64_t id;
    tt_listener_conf_t *listeners; /* a copy of the array (the policies and TLS sources are not owned) */
    size_t n;
    const tt_router_t *router;
    uint32_t *uid;    /* per listener: identity across generations */
    tt_addr_t *bound; /* per listener: the address bound (the kernel's port for port 0) */
    int *fds;         /* [n][nworkers]: sockets opened for an added listener, -1 once taken or when kept */
    uint32_t *mslot;  /* per listener: its name's slot in each worker's tt_metrics_shard_t.listeners */
    void (*release)(void *arg);
    void *arg;
    atomic_uint refs; /* the main thread's while current (or previous, until every worker applied the next), and
                         one per worker instance (tt__wgen_t) still alive */
    bool unused;      /* refs reached 0; released once every older generation is (under gen_lock) */
    tt_list_t link;   /* in srv->gens, oldest first */
};

struct tt_server {
    tt_server_conf_t conf;
    tt__gen_t *cur;  /* newest generation (main thread) */
    tt__gen_t *prev; /* the one before, while a reload is being applied */
    tt_list_t gens;  /* every generation not yet released, oldest first; under gen_lock */
    pthread_mutex_t gen_lock;
    uint64_t next_gen;
    uint32_t next_uid;
    int reload_fd; /* eventfd: +1 per worker that applied a reload */
    uint32_t acks;
    bool reloading;
    tt_worker_t *workers;
    uint32_t nworkers;
    tt_metrics_shard_t **shards;
    char *lnames[TT_LISTENER_METRICS_MAX]; /* the listener names metrics have a slot for (owned; main thread) */
    size_t nlnames;
    int done_fd; /* eventfd: +1 per worker thread that finished */
    bool started;
    uint32_t nstarted; /* worker threads created (all of them, unless pthread_create failed) */
};

#define ACCEPT_BATCH    64
#define ACCEPT_RETRY_MS 100
#define LINGER_MS       2000

static void listener_on_io(tt_io_t *io, uint32_t events);

/* ---- generations ---- */

/* Frees `g` itself, closing the sockets no worker took. */
static void gen_free(tt_server_t *srv, tt__gen_t *g)
{
    for (size_t i = 0; i < g->n * srv->nworkers; i++)
        if (g->fds[i] >= 0) close(g->fds[i]);
    free(g->listeners);
    free(g->uid);
    free(g->bound);
    free(g->fds);
    free(g->mslot);
    free(g);
}

/* Drops a use of `g`; the last one releases it, and every newer unused generation after it, in age order (so a
 * pool a newer generation adopted never outlives what an older one it still serves points to). Any thread. */
static void gen_unref(tt_server_t *srv, tt__gen_t *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_lock(&srv->gen_lock);
    g->unused = true;
    while (!tt_list_is_empty(&srv->gens)) {
        tt__gen_t *o = tt_container_of(tt_list_first(&srv->gens), tt__gen_t, link);
        if (!o->unused) break;
        tt_list_remove(&o->link);
        if (o->release) o->release(o->arg);
        gen_free(srv, o);
    }
    pthread_mutex_unlock(&srv->gen_lock);
}

static tt__gen_t *gen_new(tt_server_t *srv, const tt_listener_conf_t *ls, size_t n, const tt_router_t *router)
{
    tt__gen_t *g = tt_calloc(1, sizeof(*g));
    g->id = ++srv->next_gen;
    g->n = n;
    g->listeners = tt_calloc(n ? n : 1, sizeof(*g->listeners));
    if (n) memcpy(g->listeners, ls, n * sizeof(*ls));
    g->router = router;
    g->uid = tt_calloc(n ? n : 1, sizeof(*g->uid));
    g->bound = tt_calloc(n ? n : 1, sizeof(*g->bound));
    g->fds = tt_malloc((n ? n : 1) * srv->nworkers * sizeof(int));
    for (size_t i = 0; i < (n ? n : 1) * srv->nworkers; i++) g->fds[i] = -1;
    g->mslot = tt_calloc(n ? n : 1, sizeof(*g->mslot));
    atomic_init(&g->refs, 1 + srv->nworkers);
    return g;
}

/*
 * Gives each listener of `g` its metrics slot: the slot of its name (listeners of one `[listen NAME]` group, in this
 * generation or an earlier one, share it, so a reload keeps a listener's series), a new one for a new name, and the
 * last slot, named "other", once TT_LISTENER_METRICS_MAX - 1 names were seen. A new slot's name is written into every
 * worker's shard before the shard's count grows (a release store: the thread rendering /metrics reads the count
 * first). Main thread, before `g` reaches the workers.
 */
static void gen_assign_metrics(tt_server_t *srv, tt__gen_t *g)
{
    for (size_t l = 0; l < g->n; l++) {
        const char *name = g->listeners[l].policy->name ? g->listeners[l].policy->name : "default";
        size_t k = 0;
        while (k < srv->nlnames && strcmp(srv->lnames[k], name) != 0) k++;
        if (k == srv->nlnames && k >= TT_LISTENER_METRICS_MAX - 1) {
            name = "other";
            k = TT_LISTENER_METRICS_MAX - 1;
        }
        if (k == srv->nlnames) {
            srv->lnames[k] = tt_strndup(name, strlen(name));
            for (uint32_t i = 0; i < srv->nworkers; i++) {
                srv->workers[i].metrics.listeners[k].name = srv->lnames[k];
                atomic_store_explicit(&srv->workers[i].metrics.nlisteners, k + 1, memory_order_release);
            }
            srv->nlnames = k + 1;
        }
        g->mslot[l] = (uint32_t)k;
    }
}

/* Opens one SO_REUSEPORT socket per worker for listener `l` of `g` (all on the port the kernel chose for the
 * first when 0 is asked) and notes the bound address. 0, or -1 with `err` (the sockets opened are closed). */
static int gen_open_listener(tt_server_t *srv, tt__gen_t *g, size_t l, char *err, size_t errlen)
{
    tt_addr_t a = g->listeners[l].addr;
    const tt_listen_policy_t *p = g->listeners[l].policy;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        int fd = tt_sock_listen(&a, srv->conf.backlog, true, &p->tcp_keepalive);
        int r = fd < 0 ? fd : 0;
        if (r == 0 && i == 0 && (r = tt_sock_local_addr(fd, &g->bound[l])) == 0)
            tt_addr_set_port(&a, tt_addr_port(&g->bound[l])); /* every worker's socket shares the first's port */
        if (r != 0) {
            char as[TT_ADDR_STRLEN];
            tt_addr_format(&a, as, sizeof(as));
            snprintf(err, errlen, "listen on %s: %s%s", as, fd >= 0 ? "getsockname: " : "", strerror(-r));
            if (fd >= 0) close(fd);
            for (uint32_t j = 0; j < i; j++) {
                close(g->fds[l * srv->nworkers + j]);
                g->fds[l * srv->nworkers + j] = -1;
            }
            return -1;
        }
        g->fds[l * srv->nworkers + i] = fd;
    }
    return 0;
}

/* ---- listeners ---- */

static void lstate_init(tt__lstate_t *ls, tt__wgen_t *g, const tt_listen_policy_t *p, int fd, uint32_t uid,
                        uint32_t mslot)
{
    tt_worker_t *w = g->w;
    ls->policy = p;
    ls->m = &w->metrics.listeners[mslot];
    ls->w = w;
    ls->gen = g;
    ls->uid = uid;
    ls->io.fd = fd;
    ls->io.cb = listener_on_io;
    ls->io._events = 0;
    tt_tq_init(&ls->header_q, w->loop, p->header_timeout_ms, tt__conn_on_timeout);
    tt_tq_init(&ls->body_q, w->loop, p->body_timeout_ms, tt__conn_on_timeout);
    tt_tq_init(&ls->send_q, w->loop, p->send_timeout_ms, tt__conn_on_timeout);
    tt_tq_init(&ls->linger_q, w->loop, LINGER_MS, tt__conn_on_timeout);
    tt_tq_init(&ls->race_q, w->loop, TT_MAX(p->race_window_ms, (uint64_t)1), tt__conn_on_timeout);
    ls->nidle = tt_keepalive_buckets(p->ka.idle_timeout_ms, ls->idle_ms);
    for (size_t i = 0; i < ls->nidle; i++) tt_tq_init(&ls->idle_q[i], w->loop, ls->idle_ms[i], tt__conn_on_timeout);
}

/* Closes the listening socket of `ls` (when it has one) and releases its queues, which must be empty. */
static void lstate_dispose(tt__lstate_t *ls)
{
    if (ls->w == NULL) return; /* never initialized */
    if (ls->io.fd >= 0) {
        if (ls->io._events) tt_io_stop(ls->w->loop, &ls->io);
        close(ls->io.fd);
        ls->io.fd = -1;
    }
    tt_tls_server_free(&ls->tls);
    tt_tq_dispose(&ls->header_q);
    tt_tq_dispose(&ls->body_q);
    tt_tq_dispose(&ls->send_q);
    tt_tq_dispose(&ls->linger_q);
    tt_tq_dispose(&ls->race_q);
    for (size_t i = 0; i < ls->nidle; i++) tt_tq_dispose(&ls->idle_q[i]);
}

static tt__wgen_t *wgen_new(tt_worker_t *w, tt__gen_t *g)
{
    tt__wgen_t *wg = tt_calloc(1, sizeof(*wg));
    wg->w = w;
    wg->gen = g;
    wg->nls = g->n;
    wg->ls = tt_calloc(g->n ? g->n : 1, sizeof(*wg->ls));
    for (size_t l = 0; l < g->n; l++) wg->ls[l].io.fd = -1;
    wg->router = g->router;
    tt_list_push_tail(&w->gens, &wg->link);
    return wg;
}

/* Builds the handler states of every route of `wg` (on the worker's thread). */
static void wgen_init_routes(tt__wgen_t *wg)
{
    const tt_router_t *r = wg->router;
    wg->route_state = tt_calloc(r ? r->n + 1 : 1, sizeof(void *));
    for (size_t i = 0; r && i < r->n; i++) {
        const tt_route_t *rt = &r->routes[i];
        wg->route_state[i] = rt->ops->worker_init ? rt->ops->worker_init(rt->conf, wg->w) : NULL;
    }
}

/* Frees `wg`: its handler states, listeners (sockets, TLS contexts, queues), and its use of the generation. */
static void wgen_destroy(tt__wgen_t *wg)
{
    tt_worker_t *w = wg->w;
    if (wg->route_state != NULL)
        for (size_t i = 0; wg->router && i < wg->router->n; i++) {
            const tt_route_t *rt = &wg->router->routes[i];
            if (rt->ops->worker_free) rt->ops->worker_free(wg->route_state[i]);
        }
    free(wg->route_state);
    for (size_t l = 0; l < wg->nls; l++) lstate_dispose(&wg->ls[l]);
    free(wg->ls);
    tt_list_remove(&wg->link);
    if (w->cur == wg) w->cur = NULL;
    tt__gen_t *g = wg->gen;
    free(wg);
    gen_unref(w->srv, g);
}

static void wgen_free_cb(tt_defer_t *d)
{
    tt__wgen_t *wg = tt_container_of(d, tt__wgen_t, free_later);
    if (wg->refs == 0) wgen_destroy(wg);
}

void tt__wgen_unref(tt__wgen_t *wg)
{
    TT_BUG_ON(wg->refs == 0);
    if (--wg->refs == 0) tt_loop_defer(wg->w->loop, &wg->free_later, wgen_free_cb);
}

uint16_t tt__lstate_index(const tt__lstate_t *ls)
{
    const tt__wgen_t *cur = ls->w->cur;
    if (cur == NULL || ls->gen == cur) return (uint16_t)(ls - ls->gen->ls);
    for (size_t l = 0; l < cur->nls; l++)
        if (cur->ls[l].uid == ls->uid) return (uint16_t)l;
    return UINT16_MAX;
}

tt__lstate_t *tt__lstate_follow(tt__lstate_t *ls)
{
    tt__wgen_t *cur = ls->w->cur;
    if (cur == NULL || ls->gen == cur) return ls;
    for (size_t l = 0; l < cur->nls; l++)
        if (cur->ls[l].uid == ls->uid && cur->ls[l].w != NULL) {
            tt__wgen_ref(cur);
            tt__wgen_unref(ls->gen);
            return &cur->ls[l];
        }
    return ls;
}

static void close_listeners(tt_worker_t *w)
{
    if (w->cur == NULL) return;
    for (size_t i = 0; i < w->cur->nls; i++) {
        tt__lstate_t *ls = &w->cur->ls[i];
        if (ls->io.fd >= 0) {
            tt_io_stop(w->loop, &ls->io);
            close(ls->io.fd);
            ls->io.fd = -1;
        }
    }
}

static void set_accepting(tt_worker_t *w, bool on)
{
    for (size_t i = 0; w->cur && i < w->cur->nls; i++)
        if (w->cur->ls[i].io.fd >= 0) tt_io_modify(w->loop, &w->cur->ls[i].io, on ? TT_EV_READ : 0);
    if (w->accept_paused == !on) return;
    w->accept_paused = !on;
    tt_gauge_set(&w->metrics.accept_paused, on ? 0 : 1);
    if (!on) tt_counter_add(&w->metrics.accept_pauses, 1);
}

static void accept_retry_on_timer(tt_timer_t *t)
{
    tt_worker_t *w = tt_container_of(t, tt_worker_t, accept_retry);
    if (!w->draining && (w->conf->max_connections == 0 || w->nconns < w->conf->max_connections)) set_accepting(w, true);
}

bool tt__worker_evict_oldest(tt_worker_t *w)
{
    tt_tq_entry_t *oldest = NULL;
    /* A connection in its race window has already been closed on our side: it goes first. */
    for (int pass = 0; pass < 2 && oldest == NULL; pass++)
        for (tt_list_t *pos = w->gens.next; pos != &w->gens; pos = pos->next) {
            tt__wgen_t *wg = tt_container_of(pos, tt__wgen_t, link);
            for (size_t i = 0; i < wg->nls; i++) {
                tt__lstate_t *ls = &wg->ls[i];
                if (ls->w == NULL) continue; /* never initialized */
                tt_tq_t *qs = pass == 0 ? &ls->race_q : ls->idle_q;
                size_t nq = pass == 0 ? 1 : ls->nidle;
                for (size_t b = 0; b < nq; b++) {
                    tt_tq_entry_t *e = tt_tq_oldest(&qs[b]);
                    if (e != NULL && (oldest == NULL || e->since_ms < oldest->since_ms)) oldest = e;
                }
            }
        }
    if (oldest == NULL) return false;
    tt__conn_t *c = tt_container_of(oldest, tt__conn_t, tq);
    c->ops->close(c, TT_CLOSE_EVICTED);
    return true;
}

/* True when an idle (or racing) connection exists that eviction could close. */
static bool has_idle(tt_worker_t *w)
{
    for (tt_list_t *pos = w->gens.next; pos != &w->gens; pos = pos->next) {
        tt__wgen_t *wg = tt_container_of(pos, tt__wgen_t, link);
        for (size_t i = 0; i < wg->nls; i++) {
            if (wg->ls[i].w == NULL) continue; /* never initialized */
            if (tt_tq_oldest(&wg->ls[i].race_q) != NULL) return true;
            for (size_t b = 0; b < wg->ls[i].nidle; b++)
                if (tt_tq_oldest(&wg->ls[i].idle_q[b]) != NULL) return true;
        }
    }
    return false;
}

static void listener_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    tt__lstate_t *ls = tt_container_of(io, tt__lstate_t, io);
    tt_worker_t *w = ls->w;
    for (int i = 0; i < ACCEPT_BATCH && io->fd >= 0; i++) {
        bool full = w->conf->max_connections && w->nconns >= w->conf->max_connections;
        if (full && !has_idle(w)) {
            /* Nothing idle to make room: stop accepting until a connection closes or goes idle. Only when a
             * connection is known to wait (the listener was reported readable for this very check): after an accept
             * the listener may be empty, and the connection just accepted may go idle as soon as its request is
             * read (the listener is level-triggered: one still waiting is reported again at the next poll). */
            if (i == 0) set_accepting(w, false);
            return;
        }
        tt_addr_t peer;
        int fd = tt_sock_accept(io->fd, &peer);
        if (fd == -EAGAIN || fd == -EWOULDBLOCK) return;
        if (fd == -EINTR || fd == -ECONNABORTED) continue;
        if (fd < 0) {
            /* EMFILE, ENFILE, ENOBUFS: back off instead of spinning on a readable listener */
            tt_log(TT_LOG_WARN, "accept: %s; pausing accepts for %d ms", strerror(-fd), ACCEPT_RETRY_MS);
            set_accepting(w, false);
            tt_timer_arm(w->loop, &w->accept_retry, ACCEPT_RETRY_MS);
            return;
        }
        /* Only a connection that really arrived evicts the oldest idle one. */
        if (full) tt__worker_evict_oldest(w);
        tt__h1_conn_accept(ls, fd, &peer);
    }
}

/* ---- connection accounting ---- */

void tt__conn_on_timeout(tt_tq_entry_t *e)
{
    tt__conn_t *c = tt_container_of(e, tt__conn_t, tq);
    c->ops->on_timeout(c);
}

void tt__worker_conn_closed(tt_worker_t *w)
{
    w->nconns--;
    if (w->draining) {
        if (w->nconns == 0) tt_loop_stop(w->loop);
        return;
    }
    if (w->accept_paused && !tt_timer_is_armed(&w->accept_retry) &&
        (w->conf->max_connections == 0 || w->nconns < w->conf->max_connections))
        set_accepting(w, true);
}

void tt__worker_conn_idle(tt_worker_t *w)
{
    /* A paused listener waits for room; an idle connection is room (it can be evicted). */
    if (w->accept_paused && !w->draining && !tt_timer_is_armed(&w->accept_retry)) set_accepting(w, true);
}

tt_str_t tt__worker_date_fields(tt_worker_t *w)
{
    int64_t now = tt_loop_wall(w->loop);
    if (now != w->date_s) {
        char d[TT_HTTP_DATE_LEN + 1];
        tt_http_date_format(now, d);
        w->date_fields_len =
            (size_t)snprintf(w->date_fields, sizeof(w->date_fields), "Date: %s\r\nServer: tether\r\n", d);
        w->date_s = now;
    }
    return tt_str(w->date_fields, w->date_fields_len);
}

char *tt__worker_path_buf(tt_worker_t *w, size_t n)
{
    if (n > w->path_cap) {
        w->path_cap = TT_MAX(n, (size_t)1024);
        free(w->path_buf);
        w->path_buf = tt_malloc(w->path_cap);
    }
    return w->path_buf;
}

bool tt__req_set_path(tt_req_t *rq, tt_str_t t)
{
    const char *q = memchr(t.p, '?', t.n);
    tt_str_t path = q ? tt_str(t.p, (size_t)(q - t.p)) : t;
    rq->query = q ? tt_str(q + 1, (size_t)(t.p + t.n - q - 1)) : TT_STR_NULL;
    if (path.n == 0) {
        rq->path = TT_STR("/");
        return true;
    }
    if (tt_uri_path_is_normal(path)) {
        rq->path = path;
        return path.p[0] == '/';
    }
    char *buf = tt__worker_path_buf(rq->worker, path.n);
    int n = tt_uri_normalize_path(path, buf);
    rq->path = n >= 0 ? tt_str(buf, (size_t)n) : TT_STR_NULL;
    return n >= 0;
}

/* ---- drain ---- */

static void drain_deadline_on_timer(tt_timer_t *t)
{
    tt_worker_t *w = tt_container_of(t, tt_worker_t, drain_deadline);
    tt_list_t *pos, *tmp;
    tt_log(TT_LOG_WARN, "%s worker %u: drain deadline reached, closing %u connections", w->conf->name, w->id,
           w->nconns);
    tt_list_foreach_safe(pos, tmp, &w->conns)
    {
        tt__conn_t *conn = tt_container_of(pos, tt__conn_t, link);
        conn->ops->abort(conn);
    }
}

static void worker_start_drain(tt_worker_t *w)
{
    if (w->draining) return;
    w->draining = true;
    close_listeners(w);
    tt_timer_disarm(w->loop, &w->accept_retry);
    tt_timer_arm(w->loop, &w->drain_deadline, w->conf->drain_timeout_ms);
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &w->conns)
    {
        tt__conn_t *conn = tt_container_of(pos, tt__conn_t, link);
        conn->ops->drain(conn);
    }
    if (w->nconns == 0) tt_loop_stop(w->loop);
}

/* ---- reload ---- */

/* Applies generation `g` on the worker's thread, between two events: kept listeners move their socket into the new
 * lstate, added ones take the socket opened for this worker, removed ones close theirs; the routes' handler states
 * are built (a proxy adopts the pools of the servers that remain); then `g` becomes current and the old generation
 * lives on while connections and requests use it. */
static void worker_apply(tt_worker_t *w, tt__gen_t *g)
{
    tt__wgen_t *old = w->cur;
    tt__wgen_t *wg = wgen_new(w, g);
    for (size_t l = 0; l < g->n; l++) {
        int fd = g->fds[l * w->nworkers + w->id];
        g->fds[l * w->nworkers + w->id] = -1;
        for (size_t j = 0; fd < 0 && old && j < old->nls; j++)
            if (old->ls[j].uid == g->uid[l] && old->ls[j].io.fd >= 0) {
                fd = old->ls[j].io.fd;
                tt_io_stop(w->loop, &old->ls[j].io);
                old->ls[j].io.fd = -1;
            }
        lstate_init(&wg->ls[l], wg, g->listeners[l].policy, fd, g->uid[l], g->mslot[l]);
        if (g->listeners[l].tls != NULL && fd >= 0) {
            char err[512];
            wg->ls[l].tls = tt_tls_server_new(g->listeners[l].tls, err, sizeof(err));
            if (wg->ls[l].tls == NULL) {
                tt_log(TT_LOG_ERROR, "reload: worker %u: TLS listener not served: %s", w->id, err);
                close(fd);
                wg->ls[l].io.fd = fd = -1;
            }
        }
        if (fd < 0) continue;
        if (tt_io_start(w->loop, &wg->ls[l].io, TT_EV_READ) != 0) tt_fatal("epoll_ctl on a listener failed");
        if (w->accept_paused) tt_io_modify(w->loop, &wg->ls[l].io, 0);
    }
    /* Listeners the new generation does not have: stop accepting; their connections finish as they are. */
    for (size_t j = 0; old && j < old->nls; j++)
        if (old->ls[j].io.fd >= 0) {
            tt_io_stop(w->loop, &old->ls[j].io);
            close(old->ls[j].io.fd);
            old->ls[j].io.fd = -1;
        }
    wgen_init_routes(wg);
    w->cur = wg;
    tt__wgen_ref(wg);
    if (old) tt__wgen_unref(old);
    uint64_t one = 1;
    ssize_t n = write(w->srv->reload_fd, &one, sizeof(one));
    (void)n;
}

static void wake_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    tt_worker_t *w = tt_container_of(io, tt_worker_t, wake_io);
    uint64_t v;
    if (read(w->wake_fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) return;
    tt__gen_t *g = atomic_exchange_explicit(&w->pending, NULL, memory_order_acq_rel);
    if (g != NULL && !w->draining) worker_apply(w, g);
    if (atomic_load_explicit(&w->drain_asked, memory_order_acquire)) worker_start_drain(w);
}

/* ---- worker lifecycle ---- */

static void worker_prepare(tt_worker_t *w)
{
    wgen_init_routes(w->cur);
    for (size_t i = 0; i < w->cur->nls; i++)
        if (tt_io_start(w->loop, &w->cur->ls[i].io, TT_EV_READ) != 0) tt_fatal("epoll_ctl on a listener failed");
    w->wake_io.fd = w->wake_fd;
    w->wake_io.cb = wake_on_io;
    /* Without it the worker never hears a drain request and the process never stops. */
    if (tt_io_start(w->loop, &w->wake_io, TT_EV_READ) != 0) tt_fatal("epoll_ctl on the worker's wake eventfd failed");
}

static void worker_finish(tt_worker_t *w)
{
    close_listeners(w);
    w->draining = true;
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &w->conns)
    {
        tt__conn_t *conn = tt_container_of(pos, tt__conn_t, link);
        conn->ops->abort(conn);
    }
    tt_timer_disarm(w->loop, &w->drain_deadline);
    tt_timer_disarm(w->loop, &w->accept_retry);

    /* The current generation loses its "current" use; with every connection closed it is freed (its handlers'
     * worker_free) with the other generations still here at the end of this turn. */
    if (w->cur != NULL) {
        tt__wgen_t *cur = w->cur;
        w->cur = NULL;
        tt__wgen_unref(cur);
    }
    /* Deferred frees last: the connections closed above and by the handlers' worker_free (pools); a free
     * that waits behind another deferred callback re-queues itself, hence a few turns. */
    for (int i = 0; i < 8; i++) tt_loop_run_once(w->loop, 0);
    tt_accesslog_flush(&w->alog);
}

static void *worker_main(void *arg)
{
    tt_worker_t *w = arg;
    worker_prepare(w);
    tt__worker_report_start(w);
    tt_loop_run(w->loop);
    tt__worker_report_stop(w);
    worker_finish(w);
    uint64_t one = 1;
    ssize_t n = write(w->srv->done_fd, &one, sizeof(one));
    (void)n;
    return NULL;
}

tt_server_t *tt_server_new(const tt_server_conf_t *conf, char *err, size_t errlen)
{
    tt_server_t *srv = tt_calloc(1, sizeof(*srv));
    srv->conf = *conf;
    srv->nworkers = conf->inline_worker ? 1 : TT_MAX(conf->workers, 1u);
    srv->workers = tt_calloc(srv->nworkers, sizeof(tt_worker_t));
    srv->shards = tt_calloc(srv->nworkers, sizeof(*srv->shards));
    tt_list_init(&srv->gens);
    pthread_mutex_init(&srv->gen_lock, NULL);
    srv->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    srv->reload_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->done_fd < 0 || srv->reload_fd < 0) tt_fatal("eventfd: %s", strerror(errno));
    tt__gen_t *g = gen_new(srv, conf->listeners, conf->nlisteners, conf->router);
    tt_list_push_tail(&srv->gens, &g->link);
    g->release = conf->release;
    g->arg = conf->release_arg;
    srv->cur = g;
    tt_metrics_set_start_time((int64_t)time(NULL));
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        tt_worker_t *w = &srv->workers[i];
        w->id = i;
        w->nworkers = srv->nworkers;
        w->srv = srv;
        w->conf = &srv->conf;
        w->loop = tt_loop_new();
        if (w->loop == NULL) tt_fatal("epoll_create1: %s", strerror(errno));
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd < 0) tt_fatal("eventfd: %s", strerror(errno));
        atomic_init(&w->pending, NULL);
        atomic_init(&w->drain_asked, false);
        tt_list_init(&w->conns);
        tt_list_init(&w->gens);
        tt_bufpool_init(&w->bufs, 16384, 256);
        tt_slab_init(&w->slab);
        tt__h1_worker_init(w);
        tt_timer_init(&w->accept_retry, accept_retry_on_timer);
        tt_timer_init(&w->drain_deadline, drain_deadline_on_timer);
        tt__worker_report_init(w);
        if (conf->access_log_file != NULL)
            tt_accesslog_init_file(&w->alog, w->loop, conf->access_log_file);
        else
            tt_accesslog_init(&w->alog, w->loop, conf->access_log_fd);
        tt_accesslog_set_format(&w->alog, conf->access_log_format);
        w->date_s = -1;
        w->metrics.listeners = tt_calloc(TT_LISTENER_METRICS_MAX, sizeof(tt_listener_metrics_t));
        w->cur = wgen_new(w, g);
        tt__wgen_ref(w->cur);
        srv->shards[i] = &w->metrics;
    }
    gen_assign_metrics(srv, g);
    for (size_t l = 0; l < conf->nlisteners; l++) {
        g->uid[l] = srv->next_uid++;
        if (gen_open_listener(srv, g, l, err, errlen) != 0) {
            g->release = NULL; /* the caller still owns what it passed */
            tt_server_free(&srv);
            return NULL;
        }
        for (uint32_t i = 0; i < srv->nworkers; i++) {
            tt_worker_t *w = &srv->workers[i];
            int *fd = &g->fds[l * srv->nworkers + i];
            lstate_init(&w->cur->ls[l], w->cur, conf->listeners[l].policy, *fd, g->uid[l], g->mslot[l]);
            *fd = -1;
            if (conf->listeners[l].tls != NULL) {
                w->cur->ls[l].tls = tt_tls_server_new(conf->listeners[l].tls, err, errlen);
                if (w->cur->ls[l].tls == NULL) {
                    g->release = NULL;
                    tt_server_free(&srv);
                    return NULL;
                }
            }
        }
    }
    return srv;
}

const tt_addr_t *tt_server_bound_addr(const tt_server_t *srv, size_t i)
{
    return &srv->cur->bound[i];
}

size_t tt_server_nlisteners(const tt_server_t *srv)
{
    return srv->cur->n;
}

uint64_t tt_server_generation(const tt_server_t *srv)
{
    return srv->cur->id;
}

/* The current listener of `cur` that `l` (of a new generation) keeps: same TLS-ness, and the same address as
 * asked or as bound (a port-0 listener keeps its port). -1 when it is new. */
static long find_kept(const tt__gen_t *cur, const bool *taken, const tt_listener_conf_t *l)
{
    char want[TT_ADDR_STRLEN], asked[TT_ADDR_STRLEN], bound[TT_ADDR_STRLEN];
    tt_addr_format(&l->addr, want, sizeof(want));
    for (size_t j = 0; j < cur->n; j++) {
        if (taken[j] || (cur->listeners[j].tls != NULL) != (l->tls != NULL)) continue;
        tt_addr_format(&cur->listeners[j].addr, asked, sizeof(asked));
        tt_addr_format(&cur->bound[j], bound, sizeof(bound));
        if (strcmp(want, asked) == 0 || strcmp(want, bound) == 0) return (long)j;
    }
    return -1;
}

int tt_server_reload(tt_server_t *srv, const tt_server_gen_conf_t *gc, tt_server_reload_stats_t *stats, char *err,
                     size_t errlen)
{
    if (srv->conf.inline_worker || !srv->started) {
        snprintf(err, errlen, "the server is not running");
        return -1;
    }
    if (srv->reloading) {
        snprintf(err, errlen, "the previous reload is still being applied by the workers");
        return -1;
    }
    if (atomic_load_explicit(&srv->workers[0].drain_asked, memory_order_relaxed)) {
        snprintf(err, errlen, "the server is draining");
        return -1;
    }
    tt__gen_t *cur = srv->cur;
    tt__gen_t *g = gen_new(srv, gc->listeners, gc->nlisteners, gc->router);
    bool *taken = tt_calloc(cur->n ? cur->n : 1, sizeof(bool));
    *stats = (tt_server_reload_stats_t){0};
    for (size_t l = 0; l < g->n; l++) {
        long j = find_kept(cur, taken, &g->listeners[l]);
        if (j >= 0) {
            taken[j] = true;
            g->uid[l] = cur->uid[j];
            g->bound[l] = cur->bound[j];
            stats->kept++;
            continue;
        }
        g->uid[l] = srv->next_uid++;
        if (gen_open_listener(srv, g, l, err, errlen) != 0) {
            /* Refused as a whole: the sockets opened for it close now, the caller keeps what it built. */
            free(taken);
            gen_free(srv, g);
            srv->next_gen--;
            return -1;
        }
        stats->added++;
    }
    stats->removed = cur->n - stats->kept;
    free(taken);
    gen_assign_metrics(srv, g);
    g->release = gc->release;
    g->arg = gc->arg;
    pthread_mutex_lock(&srv->gen_lock);
    tt_list_push_tail(&srv->gens, &g->link);
    pthread_mutex_unlock(&srv->gen_lock);
    srv->prev = cur;
    srv->cur = g;
    srv->reloading = true;
    srv->acks = 0;
    for (uint32_t i = 0; i < srv->nstarted; i++) {
        tt_worker_t *w = &srv->workers[i];
        atomic_store_explicit(&w->pending, g, memory_order_release);
        uint64_t one = 1;
        ssize_t n = write(w->wake_fd, &one, sizeof(one));
        (void)n;
    }
    return 0;
}

int tt_server_reload_fd(const tt_server_t *srv)
{
    return srv->reload_fd;
}

bool tt_server_reload_collect(tt_server_t *srv)
{
    uint64_t n;
    if (read(srv->reload_fd, &n, sizeof(n)) == (ssize_t)sizeof(n)) srv->acks += (uint32_t)n;
    if (!srv->reloading || srv->acks < srv->nstarted) return false;
    srv->reloading = false;
    tt__gen_t *prev = srv->prev;
    srv->prev = NULL;
    gen_unref(srv, prev); /* the main thread's use; connections still on it keep it */
    return true;
}

tt_loop_t *tt_server_loop(tt_server_t *srv, uint32_t i)
{
    return srv->workers[i].loop;
}

int tt_server_start(tt_server_t *srv)
{
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        int r = pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
        if (r != 0) {
            /* The workers already running drain (they hold no connection yet) and are joined, so the caller
             * gets the error and a server it can free, not threads left running on memory it frees. */
            srv->nstarted = i;
            srv->started = true;
            tt_server_drain(srv);
            tt_server_join(srv);
            return -r;
        }
    }
    srv->nstarted = srv->nworkers;
    srv->started = true;
    return 0;
}

void tt_server_run_inline(tt_server_t *srv)
{
    tt_server_start_inline(srv);
    tt_loop_run(srv->workers[0].loop);
    tt_server_finish_inline(srv);
}

void tt_server_start_inline(tt_server_t *srv)
{
    worker_prepare(&srv->workers[0]);
}

void tt_server_finish_inline(tt_server_t *srv)
{
    worker_finish(&srv->workers[0]);
}

void tt_server_adopt(tt_server_t *srv, size_t listener, int fd, const tt_addr_t *peer)
{
    tt__h1_conn_accept(&srv->workers[0].cur->ls[listener], fd, peer);
}

uint32_t tt_server_open_connections(const tt_server_t *srv)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++) n += srv->workers[i].nconns;
    return n;
}

void tt_server_stop_inline(tt_server_t *srv)
{
    tt_loop_stop(srv->workers[0].loop);
}

void tt_server_drain(tt_server_t *srv)
{
    uint64_t one = 1;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        atomic_store_explicit(&srv->workers[i].drain_asked, true, memory_order_release);
        ssize_t n = write(srv->workers[i].wake_fd, &one, sizeof(one));
        (void)n;
    }
}

void tt_server_join(tt_server_t *srv)
{
    if (!srv->started) return;
    for (uint32_t i = 0; i < srv->nstarted; i++) pthread_join(srv->workers[i].thread, NULL);
    srv->started = false;
}

void tt_server_free(tt_server_t **srvp)
{
    tt_server_t *srv = *srvp;
    if (srv == NULL) return;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        tt_worker_t *w = &srv->workers[i];
        /* A worker that ran has freed its generations (worker_finish); one that never ran still holds its first. */
        while (!tt_list_is_empty(&w->gens)) {
            tt__wgen_t *wg = tt_container_of(tt_list_first(&w->gens), tt__wgen_t, link);
            wgen_destroy(wg);
        }
        /* A generation published to a worker that stopped before applying it: that worker's use ends here. */
        tt__gen_t *pending = atomic_exchange(&w->pending, NULL);
        if (pending != NULL) gen_unref(srv, pending);
        free(w->metrics.listeners);
        if (w->wake_fd >= 0) close(w->wake_fd);
        tt_accesslog_dispose(&w->alog);
        tt_bufpool_dispose(&w->bufs);
        tt_slab_dispose(&w->slab);
        tt_bufpool_dispose(&w->h1_active);
        free(w->path_buf);
        tt__worker_report_dispose(w);
        tt_loop_free(&w->loop);
    }
    /* The main thread's uses (current, and previous during a reload), then whatever never reached a worker. */
    if (srv->prev != NULL) gen_unref(srv, srv->prev);
    if (srv->cur != NULL) gen_unref(srv, srv->cur);
    while (!tt_list_is_empty(&srv->gens)) {
        tt__gen_t *g = tt_container_of(tt_list_first(&srv->gens), tt__gen_t, link);
        atomic_store(&g->refs, 1);
        gen_unref(srv, g);
    }
    pthread_mutex_destroy(&srv->gen_lock);
    for (size_t k = 0; k < srv->nlnames; k++) free(srv->lnames[k]);
    free(srv->workers);
    free(srv->shards);
    close(srv->done_fd);
    close(srv->reload_fd);
    free(srv);
    *srvp = NULL;
}

int tt_server_done_fd(const tt_server_t *srv)
{
    return srv->done_fd;
}
uint32_t tt_server_workers(const tt_server_t *srv)
{
    return srv->nworkers;
}

tt_metrics_shard_t *const *tt_server_shards(const tt_server_t *srv, size_t *n)
{
    *n = srv->nworkers;
    return srv->shards;
}

void tt_server_conn_report(tt_server_t *srv, tt_conn_report_t *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < srv->nworkers; i++) tt__worker_report_merge(&srv->workers[i], out);
}

const char *tt_server_listener_name(const tt_server_t *srv, size_t i)
{
    const char *name = srv->cur->listeners[i].policy->name; /* the newest generation's listener `i` */
    return name != NULL && name[0] != '\0' ? name : "default";
}
