/* server.c -- workers: listeners, accept with the connection limit, eviction, drain */
#include "http/worker.h"
#include "http/date.h"
#include "core/log.h"
#include "net/tls.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct tt_server {
    tt_server_conf_t conf;
    tt_addr_t *bound; /* per listener */
    tt_worker_t *workers;
    uint32_t nworkers;
    tt_metrics_shard_t **shards;
    int done_fd; /* eventfd: +1 per worker thread that finished */
    bool started;
    uint32_t nstarted; /* worker threads created (all of them, unless pthread_create failed) */
};

#define ACCEPT_BATCH    64
#define ACCEPT_RETRY_MS 100
#define LINGER_MS       2000

static void listener_on_io(tt_io_t *io, uint32_t events);

/* ---- listeners ---- */

static void lstate_init(tt__lstate_t *ls, tt_worker_t *w, const tt_listen_policy_t *p, int fd)
{
    ls->policy = p;
    ls->w = w;
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

static void lstate_dispose(tt__lstate_t *ls)
{
    tt_tls_server_free(&ls->tls);
    tt_tq_dispose(&ls->header_q);
    tt_tq_dispose(&ls->body_q);
    tt_tq_dispose(&ls->send_q);
    tt_tq_dispose(&ls->linger_q);
    tt_tq_dispose(&ls->race_q);
    for (size_t i = 0; i < ls->nidle; i++) tt_tq_dispose(&ls->idle_q[i]);
}

static void close_listeners(tt_worker_t *w)
{
    for (size_t i = 0; i < w->conf->nlisteners; i++) {
        tt__lstate_t *ls = &w->ls[i];
        if (ls->io.fd >= 0) {
            tt_io_stop(w->loop, &ls->io);
            close(ls->io.fd);
            ls->io.fd = -1;
        }
    }
}

static void set_accepting(tt_worker_t *w, bool on)
{
    for (size_t i = 0; i < w->conf->nlisteners; i++)
        if (w->ls[i].io.fd >= 0) tt_io_modify(w->loop, &w->ls[i].io, on ? TT_EV_READ : 0);
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
    for (size_t i = 0; i < w->conf->nlisteners; i++) {
        tt_tq_entry_t *e = tt_tq_oldest(&w->ls[i].race_q);
        if (e != NULL && (oldest == NULL || e->since_ms < oldest->since_ms)) oldest = e;
    }
    for (size_t i = 0; oldest == NULL && i < w->conf->nlisteners; i++) {
        tt__lstate_t *ls = &w->ls[i];
        for (size_t b = 0; b < ls->nidle; b++) {
            tt_tq_entry_t *e = tt_tq_oldest(&ls->idle_q[b]);
            if (e != NULL && (oldest == NULL || e->since_ms < oldest->since_ms)) oldest = e;
        }
    }
    if (oldest == NULL) return false;
    tt__conn_t *c = tt_container_of(oldest, tt__conn_t, tq);
    c->ops->close(c, TT_CLOSE_EVICTED);
    return true;
}

/* True when an idle (or racing) connection exists that eviction could close. */
static bool has_idle(const tt_worker_t *w)
{
    for (size_t i = 0; i < w->conf->nlisteners; i++)
        if (tt_tq_oldest(&w->ls[i].race_q) != NULL) return true;
    for (size_t i = 0; i < w->conf->nlisteners; i++)
        for (size_t b = 0; b < w->ls[i].nidle; b++)
            if (tt_tq_oldest(&w->ls[i].idle_q[b]) != NULL) return true;
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
            /* Nothing idle to make room: stop accepting until a connection closes or goes idle. */
            set_accepting(w, false);
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

static void wake_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    tt_worker_t *w = tt_container_of(io, tt_worker_t, wake_io);
    uint64_t v;
    if (read(w->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v)) worker_start_drain(w);
}

/* ---- worker lifecycle ---- */

static void worker_prepare(tt_worker_t *w)
{
    const tt_server_conf_t *c = w->conf;
    w->route_state = tt_calloc(c->router ? c->router->n + 1 : 1, sizeof(void *));
    for (size_t i = 0; c->router && i < c->router->n; i++) {
        const tt_route_t *rt = &c->router->routes[i];
        w->route_state[i] = rt->ops->worker_init ? rt->ops->worker_init(rt->conf, w) : NULL;
    }
    for (size_t i = 0; i < c->nlisteners; i++)
        if (tt_io_start(w->loop, &w->ls[i].io, TT_EV_READ) != 0) tt_fatal("epoll_ctl on a listener failed");
    w->wake_io.fd = w->wake_fd;
    w->wake_io.cb = wake_on_io;
    /* Without it the worker never hears a drain request and the process never stops. */
    if (tt_io_start(w->loop, &w->wake_io, TT_EV_READ) != 0) tt_fatal("epoll_ctl on the worker's wake eventfd failed");
}

static void worker_finish(tt_worker_t *w)
{
    const tt_server_conf_t *c = w->conf;
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

    for (size_t i = 0; c->router && i < c->router->n; i++) {
        const tt_route_t *rt = &c->router->routes[i];
        if (rt->ops->worker_free) rt->ops->worker_free(w->route_state[i]);
    }
    free(w->route_state);
    w->route_state = NULL;
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
    srv->bound = tt_calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(tt_addr_t));
    srv->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->done_fd < 0) tt_fatal("eventfd: %s", strerror(errno));
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
        tt_list_init(&w->conns);
        tt_bufpool_init(&w->bufs, 16384, 256);
        tt_timer_init(&w->accept_retry, accept_retry_on_timer);
        tt_timer_init(&w->drain_deadline, drain_deadline_on_timer);
        tt__worker_report_init(w);
        if (conf->access_log_file != NULL)
            tt_accesslog_init_file(&w->alog, w->loop, conf->access_log_file);
        else
            tt_accesslog_init(&w->alog, w->loop, conf->access_log_fd);
        w->date_s = -1;
        w->ls = tt_calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(tt__lstate_t));
        w->metrics.listeners = tt_calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(tt_listener_metrics_t));
        w->metrics.nlisteners = conf->nlisteners;
        for (size_t l = 0; l < conf->nlisteners; l++) {
            w->ls[l].io.fd = -1;
            w->ls[l].m = &w->metrics.listeners[l];
            w->metrics.listeners[l].name = conf->listeners[l].policy->name;
        }
        srv->shards[i] = &w->metrics;
    }
    for (size_t l = 0; l < conf->nlisteners; l++) {
        tt_addr_t a = conf->listeners[l].addr;
        const tt_listen_policy_t *p = conf->listeners[l].policy;
        for (uint32_t i = 0; i < srv->nworkers; i++) {
            int fd = tt_sock_listen(&a, conf->backlog, true, &p->tcp_keepalive);
            if (fd < 0) {
                char as[TT_ADDR_STRLEN];
                tt_addr_format(&a, as, sizeof(as));
                snprintf(err, errlen, "listen on %s: %s", as, strerror(-fd));
                tt_server_free(&srv);
                return NULL;
            }
            if (i == 0) {
                /* Port 0: every worker's socket must share the port the kernel chose for the first. */
                int r = tt_sock_local_addr(fd, &srv->bound[l]);
                if (r != 0) {
                    char as[TT_ADDR_STRLEN];
                    tt_addr_format(&a, as, sizeof(as));
                    snprintf(err, errlen, "listen on %s: getsockname: %s", as, strerror(-r));
                    close(fd);
                    tt_server_free(&srv);
                    return NULL;
                }
                tt_addr_set_port(&a, tt_addr_port(&srv->bound[l]));
            }
            lstate_init(&srv->workers[i].ls[l], &srv->workers[i], p, fd);
            if (conf->listeners[l].tls != NULL) {
                srv->workers[i].ls[l].tls = tt_tls_server_new(conf->listeners[l].tls, err, errlen);
                if (srv->workers[i].ls[l].tls == NULL) {
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
    return &srv->bound[i];
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
    tt__h1_conn_accept(&srv->workers[0].ls[listener], fd, peer);
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
        close_listeners(w);
        for (size_t l = 0; l < srv->conf.nlisteners; l++)
            if (w->ls[l].w != NULL) lstate_dispose(&w->ls[l]);
        free(w->ls);
        free(w->metrics.listeners);
        if (w->wake_fd >= 0) close(w->wake_fd);
        tt_accesslog_dispose(&w->alog);
        tt_bufpool_dispose(&w->bufs);
        free(w->path_buf);
        tt__worker_report_dispose(w);
        tt_loop_free(&w->loop);
    }
    free(srv->workers);
    free(srv->shards);
    free(srv->bound);
    close(srv->done_fd);
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
    const char *name = srv->conf.listeners[i].policy->name;
    return name != NULL && name[0] != '\0' ? name : "default";
}
