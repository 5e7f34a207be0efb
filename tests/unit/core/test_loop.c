/* test_loop.c -- the loop turn (src/core/loop.c, src/core/poller_epoll.c): deferred callbacks (once, FIFO, after
 * the turn's readiness callbacks, never starving I/O), readiness bits on pipes and socketpairs, level and edge
 * reporting, start/modify/stop/transfer, tt_loop_stop and the cached clock */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/loop.h"
#include "core/timer.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A watched fd recording its callbacks. */
typedef struct watcher {
    tt_io_t io;
    int id;
    int calls;
    uint32_t last;    /* TT_EV_* bits of the last call */
    uint32_t seen;    /* union of the bits of every call */
    uint64_t now;     /* tt_loop_now() at the last call */
    int stop_loop_at; /* call tt_loop_stop() on this call */
    bool stop_io;     /* stop watching from the first call */
    tt_defer_t *defer;
    tt_defer_cb defer_cb;
} watcher_t;

/* An owner of a deferred callback. */
typedef struct job {
    tt_defer_t d;
    int id;
    int runs;
    int turn;          /* g_turn when it last ran */
    uint64_t now;      /* tt_loop_now() when it last ran */
    bool requeue;      /* queue itself again from its callback */
    struct job *chain; /* queue this one from its callback */
} job_t;

/* An owner of a timer that queues a job or stops the loop. */
typedef struct ticker {
    tt_timer_t timer;
    int fired;
    uint64_t now;
    job_t *job;
    bool stop_loop;
} ticker_t;

enum { LOG_IO = 100, LOG_DEFER = 200, LOG_TIMER = 300 };

static tt_loop_t *g_loop;
static int g_turn; /* counted by the tests around tt_loop_run_once */
static int g_log[256];
static size_t g_nlog;

static void log_event(int what)
{
    assert_true(g_nlog < TT_ARRAY_SIZE(g_log));
    g_log[g_nlog++] = what;
}

static int setup(void **state)
{
    (void)state;
    g_loop = tt_loop_new();
    g_turn = 0;
    g_nlog = 0;
    alarm(60); /* a turn that blocks for ever fails the test instead of hanging it */
    return g_loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    alarm(0);
    tt_loop_free(&g_loop);
    assert_null(g_loop);
    return 0;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void turn(int max_wait_ms)
{
    g_turn++;
    tt_loop_run_once(g_loop, max_wait_ms);
}

/* Runs turns until `*counter` reaches `target`, for at most `max_ms` of wall time. */
static void turn_until(const int *counter, int target, uint64_t max_ms)
{
    uint64_t start = wall_ms();
    while (*counter < target && wall_ms() - start < max_ms) turn(10);
}

static void on_job(tt_defer_t *d)
{
    job_t *j = tt_container_of(d, job_t, d);
    j->runs++;
    j->turn = g_turn;
    j->now = tt_loop_now(g_loop);
    log_event(LOG_DEFER + j->id);
    if (j->requeue) tt_loop_defer(g_loop, &j->d, on_job);
    if (j->chain != NULL) tt_loop_defer(g_loop, &j->chain->d, on_job);
}

static void on_other_job(tt_defer_t *d)
{
    job_t *j = tt_container_of(d, job_t, d);
    j->runs += 1000; /* must never happen: re-queueing does not replace the callback */
}

static void on_io(tt_io_t *io, uint32_t events)
{
    watcher_t *w = tt_container_of(io, watcher_t, io);
    w->calls++;
    w->last = events;
    w->seen |= events;
    w->now = tt_loop_now(g_loop);
    log_event(LOG_IO + w->id);
    if (w->stop_io) assert_int_equal(tt_io_stop(g_loop, io), 0);
    if (w->defer != NULL) tt_loop_defer(g_loop, w->defer, w->defer_cb);
    if (w->calls == w->stop_loop_at) tt_loop_stop(g_loop);
}

static void on_other_io(tt_io_t *io, uint32_t events)
{
    (void)io;
    (void)events;
    fail_msg("an io whose registration was transferred away got a callback");
}

static void on_tick(tt_timer_t *t)
{
    ticker_t *k = tt_container_of(t, ticker_t, timer);
    k->fired++;
    k->now = tt_loop_now(g_loop);
    log_event(LOG_TIMER);
    if (k->job != NULL) tt_loop_defer(g_loop, &k->job->d, on_job);
    if (k->stop_loop) tt_loop_stop(g_loop);
}

static void init_watcher(watcher_t *w, int id, int fd)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->io.cb = on_io;
    w->io.fd = fd;
}

static void init_job(job_t *j, int id)
{
    memset(j, 0, sizeof(*j));
    j->id = id;
}

static void init_ticker(ticker_t *k)
{
    memset(k, 0, sizeof(*k));
    tt_timer_init(&k->timer, on_tick);
}

static void make_socketpair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void make_pipe(int p[2])
{
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void put(int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
}

/* Reads until the fd would block; returns the byte count (-1 never: EOF ends it too). */
static size_t drain(int fd)
{
    char buf[256];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        assert_true(n == 0 || errno == EAGAIN);
        return total;
    }
}

/* ---- deferred callbacks ---- */

static void runs_deferred_callbacks_once_in_fifo_order(void **state)
{
    (void)state;
    job_t j[5];
    for (int i = 0; i < 5; i++) init_job(&j[i], i);
    int order[] = {3, 0, 4, 1, 2};
    for (int k = 0; k < 5; k++) tt_loop_defer(g_loop, &j[order[k]].d, on_job);
    assert_int_equal(j[0].runs, 0); /* queuing runs nothing */
    turn(0);
    assert_int_equal(g_nlog, 5);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(g_log[k], LOG_DEFER + order[k]);
        assert_int_equal(j[k].runs, 1);
    }
    turn(0);
    turn(0);
    assert_int_equal(g_nlog, 5); /* once, not once per turn */
}

static void ignores_deferring_an_entry_that_is_already_queued(void **state)
{
    (void)state;
    job_t j[3];
    for (int i = 0; i < 3; i++) init_job(&j[i], i);
    tt_loop_defer(g_loop, &j[0].d, on_job);
    tt_loop_defer(g_loop, &j[1].d, on_job);
    tt_loop_defer(g_loop, &j[0].d, on_other_job); /* neither moves it to the tail nor replaces its callback */
    tt_loop_defer(g_loop, &j[2].d, on_job);
    tt_loop_defer(g_loop, &j[1].d, on_job);
    turn(0);
    assert_int_equal(g_nlog, 3);
    assert_int_equal(g_log[0], LOG_DEFER + 0);
    assert_int_equal(g_log[1], LOG_DEFER + 1);
    assert_int_equal(g_log[2], LOG_DEFER + 2);
    for (int i = 0; i < 3; i++) assert_int_equal(j[i].runs, 1);
    /* once it has run it may be queued again */
    tt_loop_defer(g_loop, &j[0].d, on_job);
    turn(0);
    assert_int_equal(j[0].runs, 2);
}

static void runs_deferred_callbacks_after_every_readiness_callback_of_the_turn(void **state)
{
    (void)state;
    int a[2], b[2];
    make_socketpair(a);
    make_socketpair(b);
    watcher_t w[2];
    job_t j[2];
    init_watcher(&w[0], 0, a[0]);
    init_watcher(&w[1], 1, b[0]);
    for (int i = 0; i < 2; i++) {
        init_job(&j[i], i);
        w[i].defer = &j[i].d;
        w[i].defer_cb = on_job;
        w[i].stop_io = true;
        assert_int_equal(tt_io_start(g_loop, &w[i].io, TT_EV_READ), 0);
    }
    put(a[1]);
    put(b[1]);
    turn(1000); /* both are ready before the wait: one epoll_wait reports both */
    assert_int_equal(g_nlog, 4);
    assert_true(g_log[0] / 100 * 100 == LOG_IO && g_log[1] / 100 * 100 == LOG_IO);
    assert_int_equal(g_log[2], LOG_DEFER + (g_log[0] - LOG_IO));
    assert_int_equal(g_log[3], LOG_DEFER + (g_log[1] - LOG_IO));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(j[i].runs, 1);
        assert_int_equal(j[i].turn, 1);
        assert_int_equal(j[i].now, w[i].now); /* the same turn: the same now */
    }
    close(a[0]), close(a[1]), close(b[0]), close(b[1]);
}

static void runs_callbacks_deferred_between_turns_before_the_wait(void **state)
{
    (void)state;
    /* docs/loop.md step 3: what was queued since the last turn runs before epoll_wait, so before the
     * readiness callbacks of this turn. */
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    w.stop_io = true;
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(sv[1]);
    job_t j;
    init_job(&j, 0);
    tt_loop_defer(g_loop, &j.d, on_job);
    turn(1000);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[0], LOG_DEFER + 0);
    assert_int_equal(g_log[1], LOG_IO + 0);
    assert_int_equal(j.runs, 1);
    close(sv[0]), close(sv[1]);
}

static void runs_a_callback_deferred_from_a_deferred_callback_at_the_next_turn(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    job_t first, second;
    init_watcher(&w, 0, sv[0]);
    init_job(&first, 1);
    init_job(&second, 2);
    first.chain = &second;
    w.defer = &first.d;
    w.defer_cb = on_job;
    w.stop_io = true;
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(sv[1]);
    turn(1000); /* the readiness callback queues `first` for the end of this turn; `first` queues `second` */
    assert_int_equal(w.calls, 1);
    assert_int_equal(first.runs, 1);
    assert_int_equal(first.turn, 1);
    assert_int_equal(second.runs, 0);
    turn(0);
    assert_int_equal(second.runs, 1);
    assert_int_equal(second.turn, 2);
    assert_int_equal(first.runs, 1);
    close(sv[0]), close(sv[1]);
}

static void runs_a_callback_deferred_by_a_timer_in_the_same_turn(void **state)
{
    (void)state;
    ticker_t k;
    job_t j;
    init_ticker(&k);
    init_job(&j, 0);
    k.job = &j;
    tt_timer_arm_at(g_loop, &k.timer, tt_loop_now(g_loop) - 1);
    turn(0);
    assert_int_equal(k.fired, 1);
    assert_int_equal(j.runs, 1);
    assert_int_equal(j.turn, 1);
    assert_int_equal(g_nlog, 2);
    assert_int_equal(g_log[0], LOG_TIMER);
    assert_int_equal(g_log[1], LOG_DEFER + 0);
}

static void runs_a_self_requeueing_callback_every_turn_without_starving_io(void **state)
{
    (void)state;
    job_t j;
    init_job(&j, 0);
    j.requeue = true;
    tt_loop_defer(g_loop, &j.d, on_job);
    /* Nothing is ready: each unbounded turn returns because the poll does not wait while work is queued. */
    for (int t = 0; t < 5; t++) {
        int before = j.runs;
        turn(-1);
        assert_true(j.runs - before >= 1 && j.runs - before <= 2); /* before the wait and at the end */
    }
    /* A level-triggered readable pipe is dispatched every turn in between. */
    int p[2];
    make_pipe(p);
    watcher_t w;
    init_watcher(&w, 0, p[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(p[1]);
    for (int t = 0; t < 20; t++) {
        int before_io = w.calls, before = j.runs;
        turn(-1);
        assert_int_equal(w.calls, before_io + 1);
        assert_true(j.runs - before >= 1 && j.runs - before <= 2);
    }
    j.requeue = false;
    turn(0);
    int runs = j.runs;
    turn(0);
    assert_int_equal(j.runs, runs);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(p[0]), close(p[1]);
}

/* ---- readiness ---- */

static void reports_read_while_bytes_are_unread(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    turn(0);
    assert_int_equal(w.calls, 0);
    put(sv[1]);
    turn_until(&w.calls, 1, 2000);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last, TT_EV_READ);
    turn(0); /* level-triggered: again while unread */
    assert_int_equal(w.calls, 2);
    assert_int_equal(drain(sv[0]), 1);
    turn(0);
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.seen, TT_EV_READ);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]), close(sv[1]);
}

static void reports_write_when_watched_for_writing(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_WRITE), 0);
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last, TT_EV_WRITE);
    put(sv[1]); /* readable too, but not asked for */
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.last, TT_EV_WRITE);
    assert_int_equal(tt_io_modify(g_loop, &w.io, TT_EV_READ | TT_EV_WRITE), 0);
    turn(0);
    assert_int_equal(w.calls, 3);
    assert_int_equal(w.last, TT_EV_READ | TT_EV_WRITE);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]), close(sv[1]);
}

static void reports_hup_and_read_when_the_peer_closes_a_socket(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    close(sv[1]);
    turn_until(&w.calls, 1, 2000);
    assert_int_equal(w.calls, 1);
    assert_true(w.last & TT_EV_HUP);
    assert_true(w.last & TT_EV_READ);
    assert_false(w.last & TT_EV_ERR);
    assert_false(w.last & TT_EV_WRITE);
    char c;
    assert_int_equal(read(sv[0], &c, 1), 0); /* the READ bit means EOF is pending */
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]);
}

static void reports_hup_when_the_peer_shuts_down_its_side(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(sv[1]);
    assert_int_equal(shutdown(sv[1], SHUT_WR), 0); /* a FIN after one byte */
    turn_until(&w.calls, 1, 2000);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last, TT_EV_READ | TT_EV_HUP);
    assert_int_equal(drain(sv[0]), 1);
    put(sv[0]); /* our side still writes */
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]), close(sv[1]);
}

static void reports_hup_on_a_pipe_whose_writer_closed(void **state)
{
    (void)state;
    int p[2];
    make_pipe(p);
    watcher_t w;
    init_watcher(&w, 0, p[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(p[1]);
    turn_until(&w.calls, 1, 2000);
    assert_int_equal(w.last, TT_EV_READ);
    close(p[1]);
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.last, TT_EV_READ | TT_EV_HUP);
    assert_int_equal(drain(p[0]), 1);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(p[0]);
}

static void reports_an_error_on_a_pipe_whose_reader_closed(void **state)
{
    (void)state;
    int p[2];
    make_pipe(p);
    watcher_t w;
    init_watcher(&w, 0, p[1]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_WRITE), 0);
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last, TT_EV_WRITE);
    close(p[0]);
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_true(w.last & TT_EV_ERR);
    assert_true(w.last & TT_EV_WRITE); /* the writer tries, and learns EPIPE */
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(p[1]);
}

static void reports_one_event_per_edge_when_edge_triggered(void **state)
{
    (void)state;
    int e[2], l[2];
    make_socketpair(e);
    make_socketpair(l);
    watcher_t edge, level;
    init_watcher(&edge, 0, e[0]);
    init_watcher(&level, 1, l[0]);
    assert_int_equal(tt_io_start(g_loop, &edge.io, TT_EV_READ | TT_EV_EDGE), 0);
    assert_int_equal(tt_io_start(g_loop, &level.io, TT_EV_READ), 0);
    put(e[1]);
    put(l[1]);
    turn_until(&edge.calls, 1, 2000);
    for (int t = 0; t < 5; t++) turn(0);
    assert_int_equal(edge.calls, 1); /* the byte is still unread, but there was one edge */
    assert_int_equal(edge.last, TT_EV_READ);
    assert_true(level.calls >= 6); /* one per turn */
    char c;
    assert_int_equal(recv(e[0], &c, 1, MSG_PEEK), 1);

    assert_int_equal(drain(e[0]), 1);
    put(e[1]); /* a new edge */
    turn_until(&edge.calls, 2, 2000);
    for (int t = 0; t < 5; t++) turn(0);
    assert_int_equal(edge.calls, 2);

    /* the request bit is not reported back */
    assert_false(edge.seen & TT_EV_EDGE);
    assert_int_equal(tt_io_stop(g_loop, &edge.io), 0);
    assert_int_equal(tt_io_stop(g_loop, &level.io), 0);
    close(e[0]), close(e[1]), close(l[0]), close(l[1]);
}

/* ---- registration ---- */

static void stops_and_restarts_watching(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0); /* never started: a no-op */
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(sv[1]);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    turn(0);
    turn(0);
    assert_int_equal(w.calls, 0);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0); /* stopped twice */
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0); /* started twice: still one registration */
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]), close(sv[1]);
}

static void silences_an_io_modified_to_no_events(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(sv[1]);
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(tt_io_modify(g_loop, &w.io, 0), 0); /* readable and writable, but silent */
    turn(0);
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(tt_io_modify(g_loop, &w.io, TT_EV_WRITE), 0); /* still registered: a modify works */
    turn(0);
    assert_int_equal(w.calls, 2);
    assert_int_equal(w.last, TT_EV_WRITE);
    assert_int_equal(tt_io_modify(g_loop, &w.io, TT_EV_READ), 0);
    turn(0);
    assert_int_equal(w.calls, 3);
    assert_int_equal(w.last, TT_EV_READ);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(sv[0]), close(sv[1]);
}

static void keeps_a_silenced_io_silent_when_the_peer_hangs_up(void **state)
{
    (void)state;
    /* epoll reports EPOLLHUP and EPOLLERR whatever was asked for; a silenced io must not hear them either, or a
     * level-triggered hang-up calls it every turn */
    int sv[2];
    make_socketpair(sv);
    watcher_t w;
    init_watcher(&w, 0, sv[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ | TT_EV_EDGE), 0);
    assert_int_equal(tt_io_modify(g_loop, &w.io, 0), 0);
    close(sv[1]);
    for (int t = 0; t < 5; t++) turn(0);
    assert_int_equal(w.calls, 0);
    assert_int_equal(tt_io_modify(g_loop, &w.io, TT_EV_READ | TT_EV_EDGE), 0); /* heard again, hang-up included */
    turn(0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last, TT_EV_READ | TT_EV_HUP);
    assert_int_equal(tt_io_modify(g_loop, &w.io, 0), 0);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    turn(0);
    assert_int_equal(w.calls, 1);
    close(sv[0]);
}

static void hands_events_to_the_io_a_registration_was_transferred_to(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    watcher_t from, to;
    init_watcher(&from, 0, sv[0]);
    init_watcher(&to, 1, -1);
    assert_int_equal(tt_io_start(g_loop, &from.io, TT_EV_READ | TT_EV_EDGE), 0);
    put(sv[1]);
    turn(0);
    assert_int_equal(from.calls, 1);
    from.io.cb = on_other_io;
    assert_int_equal(tt_io_transfer(g_loop, &from.io, &to.io), 0);
    assert_int_equal(to.io.fd, sv[0]);
    assert_int_equal(tt_io_stop(g_loop, &from.io), 0); /* no longer registered: does not touch `to` */
    put(sv[1]); /* a new edge: the transferred registration keeps its edge-triggered mode */
    turn_until(&to.calls, 1, 2000);
    turn(0);
    assert_int_equal(to.calls, 1);
    assert_int_equal(to.last, TT_EV_READ);
    assert_int_equal(tt_io_modify(g_loop, &to.io, TT_EV_WRITE), 0); /* `to` owns it now */
    turn(0);
    assert_int_equal(to.calls, 2);
    assert_int_equal(to.last, TT_EV_WRITE);

    /* a silenced registration moves back just as well, and stays silent until asked */
    assert_int_equal(tt_io_modify(g_loop, &to.io, 0), 0);
    from.io.cb = on_io;
    to.io.cb = on_other_io;
    assert_int_equal(tt_io_transfer(g_loop, &to.io, &from.io), 0);
    turn(0);
    assert_int_equal(from.calls, 1);
    assert_int_equal(tt_io_modify(g_loop, &from.io, TT_EV_WRITE), 0);
    turn(0);
    assert_int_equal(from.calls, 2);
    assert_int_equal(from.last, TT_EV_WRITE);
    assert_int_equal(tt_io_stop(g_loop, &to.io), 0);
    assert_int_equal(tt_io_stop(g_loop, &from.io), 0);
    turn(0);
    assert_int_equal(from.calls, 2);
    assert_int_equal(to.calls, 2);
    close(sv[0]), close(sv[1]);
}

static void returns_minus_errno_for_fds_epoll_refuses(void **state)
{
    (void)state;
    watcher_t w;
    init_watcher(&w, 0, -1);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), -EBADF);
    char path[] = "/tmp/tt-test-loop-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    w.io.fd = fd;
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), -EPERM); /* regular files are always ready */
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);                   /* never registered */
    close(fd);
}

/* ---- run, stop and the clock ---- */

static void returns_from_run_after_the_turn_in_which_a_timer_stops_it(void **state)
{
    (void)state;
    int p[2];
    make_pipe(p);
    watcher_t w;
    init_watcher(&w, 0, p[0]);
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(p[1]);
    ticker_t k;
    job_t j;
    init_ticker(&k);
    init_job(&j, 0);
    k.stop_loop = true;
    k.job = &j;
    tt_timer_arm_at(g_loop, &k.timer, tt_loop_now(g_loop) - 1);
    tt_loop_run(g_loop);
    /* The stopping turn finished: its deferred job ran and its readiness was dispatched, once. */
    assert_int_equal(k.fired, 1);
    assert_int_equal(j.runs, 1);
    assert_int_equal(w.calls, 1);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(p[0]), close(p[1]);
}

static void returns_from_run_after_the_turn_in_which_a_callback_stops_it(void **state)
{
    (void)state;
    int p[2];
    make_pipe(p);
    watcher_t w;
    job_t j;
    init_watcher(&w, 0, p[0]);
    init_job(&j, 0);
    w.stop_loop_at = 3;
    w.defer = &j.d;
    w.defer_cb = on_job;
    assert_int_equal(tt_io_start(g_loop, &w.io, TT_EV_READ), 0);
    put(p[1]);
    tt_loop_run(g_loop);
    assert_int_equal(w.calls, 3);
    assert_int_equal(j.runs, 3); /* the job queued by the stopping callback ran before run returned */

    /* run can be entered again; it runs until the next stop */
    w.stop_loop_at = 5;
    tt_loop_run(g_loop);
    assert_int_equal(w.calls, 5);
    assert_int_equal(j.runs, 5);
    assert_int_equal(tt_io_stop(g_loop, &w.io), 0);
    close(p[0]), close(p[1]);
}

static void keeps_now_still_between_clock_reads_and_monotonic_across_turns(void **state)
{
    (void)state;
    /* now is cached: time passing does not move it until a turn or tt_loop_update_clock reads the clock */
    uint64_t now = tt_loop_now(g_loop);
    usleep(3000);
    assert_int_equal(tt_loop_now(g_loop), now);
    tt_loop_update_clock(g_loop);
    assert_true(tt_loop_now(g_loop) >= now + 3);

    /* every timer of a turn sees the same now; every readiness callback and the deferred jobs after them too */
    enum { N = 4 };
    ticker_t k[N];
    int sv[N][2];
    watcher_t w[N];
    job_t j[N];
    uint64_t prev = 0;
    for (int t = 0; t < 10; t++) {
        for (int i = 0; i < N; i++) {
            init_ticker(&k[i]);
            tt_timer_arm_at(g_loop, &k[i].timer, tt_loop_now(g_loop) - 1);
            make_socketpair(sv[i]);
            init_watcher(&w[i], i, sv[i][0]);
            init_job(&j[i], i);
            w[i].defer = &j[i].d;
            w[i].defer_cb = on_job;
            w[i].stop_io = true;
            assert_int_equal(tt_io_start(g_loop, &w[i].io, TT_EV_READ), 0);
            put(sv[i][1]);
        }
        usleep(1000);
        turn(1000);
        for (int i = 0; i < N; i++) {
            assert_int_equal(k[i].fired, 1);
            assert_int_equal(w[i].calls, 1);
            assert_int_equal(j[i].runs, 1);
            assert_int_equal(k[i].now, k[0].now);
            assert_int_equal(w[i].now, w[0].now);
            assert_int_equal(j[i].now, w[0].now);
            close(sv[i][0]), close(sv[i][1]);
        }
        assert_true(k[0].now <= w[0].now);
        assert_true(k[0].now > prev); /* a millisecond slept between turns */
        prev = w[0].now;
        assert_int_equal(tt_loop_now(g_loop), prev);
    }
}

static void caches_the_wall_clock_in_seconds(void **state)
{
    (void)state;
    time_t before = time(NULL);
    tt_loop_update_clock(g_loop);
    time_t after = time(NULL);
    /* a coarse clock may lag the fine one by a tick */
    assert_true(tt_loop_wall(g_loop) >= (int64_t)before - 1);
    assert_true(tt_loop_wall(g_loop) <= (int64_t)after);
    int64_t wall = tt_loop_wall(g_loop);
    turn(0);
    assert_true(tt_loop_wall(g_loop) >= wall);
}

static void waits_for_max_wait_ms_when_nothing_is_due(void **state)
{
    (void)state;
    ticker_t k;
    init_ticker(&k);
    tt_timer_arm(g_loop, &k.timer, 3600000); /* an hour out: the bound decides */
    uint64_t start = wall_ms();
    turn(20);
    uint64_t took = wall_ms() - start;
    assert_true(took >= 15); /* it did wait (a lower bound holds on a loaded machine) */
    assert_true(took < 20000);
    assert_int_equal(k.fired, 0);
    tt_timer_disarm(g_loop, &k.timer);
}

/* tt_io_event_pending (issue 9): while a batch is dispatched, an io whose event comes later in the same batch
 * says so; after its own callback, and outside a batch, nothing is pending. */
static watcher_t *g_peeked;
static bool g_pending_seen, g_pending_after;

static void on_io_peeking(tt_io_t *io, uint32_t events)
{
    on_io(io, events);
    if (g_peeked->calls == 0)
        g_pending_seen = tt_io_event_pending(&g_peeked->io);
    else
        g_pending_after = tt_io_event_pending(&g_peeked->io);
}

static void tells_an_io_that_its_event_is_on_its_way_in_this_batch(void **state)
{
    (void)state;
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    watcher_t wa, wb;
    init_watcher(&wa, 1, a[0]);
    init_watcher(&wb, 2, b[0]);
    wa.io.cb = on_io_peeking;
    g_peeked = &wb;
    g_pending_seen = g_pending_after = false;
    assert_int_equal(tt_io_start(g_loop, &wa.io, TT_EV_READ | TT_EV_EDGE), 0);
    assert_int_equal(tt_io_start(g_loop, &wb.io, TT_EV_READ | TT_EV_EDGE), 0);
    assert_false(tt_io_event_pending(&wa.io));
    /* a first, then b: epoll reports them in the order they became ready */
    put(a[1]);
    put(b[1]);
    turn(0);
    assert_int_equal(wa.calls, 1);
    assert_int_equal(wb.calls, 1);
    assert_true(g_pending_seen); /* a's callback ran before b's, and knew b's event was coming */
    assert_false(tt_io_event_pending(&wa.io));
    assert_false(tt_io_event_pending(&wb.io));
    /* a later batch without b marks nothing */
    drain(a[0]);
    drain(b[0]);
    put(a[1]);
    turn(0);
    assert_int_equal(wa.calls, 2);
    assert_false(g_pending_after);
    tt_io_stop(g_loop, &wa.io);
    tt_io_stop(g_loop, &wb.io);
    close(a[0]), close(a[1]), close(b[0]), close(b[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(runs_deferred_callbacks_once_in_fifo_order, setup, teardown),
        cmocka_unit_test_setup_teardown(ignores_deferring_an_entry_that_is_already_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(runs_deferred_callbacks_after_every_readiness_callback_of_the_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(runs_callbacks_deferred_between_turns_before_the_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(runs_a_callback_deferred_from_a_deferred_callback_at_the_next_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(runs_a_callback_deferred_by_a_timer_in_the_same_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(runs_a_self_requeueing_callback_every_turn_without_starving_io, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reports_read_while_bytes_are_unread, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_write_when_watched_for_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_hup_and_read_when_the_peer_closes_a_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_hup_when_the_peer_shuts_down_its_side, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_hup_on_a_pipe_whose_writer_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_an_error_on_a_pipe_whose_reader_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(reports_one_event_per_edge_when_edge_triggered, setup, teardown),
        cmocka_unit_test_setup_teardown(stops_and_restarts_watching, setup, teardown),
        cmocka_unit_test_setup_teardown(silences_an_io_modified_to_no_events, setup, teardown),
        cmocka_unit_test_setup_teardown(keeps_a_silenced_io_silent_when_the_peer_hangs_up, setup, teardown),
        cmocka_unit_test_setup_teardown(hands_events_to_the_io_a_registration_was_transferred_to, setup, teardown),
        cmocka_unit_test_setup_teardown(returns_minus_errno_for_fds_epoll_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(returns_from_run_after_the_turn_in_which_a_timer_stops_it, setup, teardown),
        cmocka_unit_test_setup_teardown(returns_from_run_after_the_turn_in_which_a_callback_stops_it, setup, teardown),
        cmocka_unit_test_setup_teardown(keeps_now_still_between_clock_reads_and_monotonic_across_turns, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(caches_the_wall_clock_in_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(waits_for_max_wait_ms_when_nothing_is_due, setup, teardown),
        cmocka_unit_test_setup_teardown(tells_an_io_that_its_event_is_on_its_way_in_this_batch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
