/* loop.c -- the loop turn: clock, timers, poll, deferred callbacks */
#include "core/loop_int.h"
#include "core/err.h"

#include <errno.h>
#include <time.h>

#define REGISTERED 0x80000000u /* same marker as poller_epoll.c */

tt_loop_t *tt_loop_new(void)
{
    tt_loop_t *loop = tt_calloc(1, sizeof(*loop));
    int r = tt__poller_init(loop);
    if (r != 0) {
        free(loop);
        errno = -r;
        return NULL;
    }
    tt_loop_update_clock(loop);
    return loop;
}

void tt_loop_free(tt_loop_t **loopp)
{
    tt_loop_t *loop = *loopp;
    if (loop == NULL) return;
    tt__poller_free(loop);
    tt__timer_free(loop);
    free(loop);
    *loopp = NULL;
}

uint64_t tt_loop_now(const tt_loop_t *loop)
{
    return loop->now_ms;
}
uint64_t tt_loop_now_us(const tt_loop_t *loop)
{
    return loop->now_us;
}
int64_t tt_loop_wall(const tt_loop_t *loop)
{
    return loop->wall_s;
}

void tt_loop_update_clock(tt_loop_t *loop)
{
    if (loop->manual_clock) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    loop->now_ms = loop->now_us / 1000u;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    loop->wall_s = ts.tv_sec;
}

void tt_loop_set_clock(tt_loop_t *loop, uint64_t now_ms, int64_t wall_s)
{
    loop->manual_clock = true;
    if (now_ms > loop->now_ms) {
        loop->now_ms = now_ms;
        loop->now_us = now_ms * 1000u;
    }
    if (wall_s > loop->wall_s) loop->wall_s = wall_s;
}

int tt_io_start(tt_loop_t *loop, tt_io_t *io, uint32_t events)
{
    return tt__poller_ctl(loop, io, events | REGISTERED);
}

int tt_io_modify(tt_loop_t *loop, tt_io_t *io, uint32_t events)
{
    return tt__poller_ctl(loop, io, events | REGISTERED);
}

int tt_io_transfer(tt_loop_t *loop, tt_io_t *from, tt_io_t *to)
{
    uint32_t ev = from->_events & ~TT__IO_PENDING;
    to->fd = from->fd;
    to->_events = ev; /* registered: the next ctl is a MOD that repoints the event data */
    int r = tt__poller_ctl(loop, to, ev);
    from->_events = 0;
    return r;
}

int tt_io_stop(tt_loop_t *loop, tt_io_t *io)
{
    return tt__poller_ctl(loop, io, 0);
}

void tt_loop_defer(tt_loop_t *loop, tt_defer_t *d, tt_defer_cb cb)
{
    if (d->_queued) return;
    d->cb = cb;
    d->_next = NULL;
    d->_queued = true;
    if (loop->defer_tail)
        loop->defer_tail->_next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
}

static void run_deferred(tt_loop_t *loop)
{
    /* Only what was queued before this point runs now; what the callbacks queue runs at the next
     * turn, which then polls without waiting, so a callback that re-queues itself cannot starve I/O. */
    tt_defer_t *d = loop->defer_head;
    loop->defer_head = loop->defer_tail = NULL;
    while (d) {
        tt_defer_t *next = d->_next;
        d->_queued = false;
        d->cb(d);
        d = next;
    }
}

void tt_loop_run_once(tt_loop_t *loop, int max_wait_ms)
{
    tt_loop_update_clock(loop);
    tt__timer_run_expired(loop);
    run_deferred(loop);
    int wait = tt__timer_wait_ms(loop);
    if (max_wait_ms >= 0 && (wait < 0 || wait > max_wait_ms)) wait = max_wait_ms;
    if (loop->stop || loop->defer_head != NULL) wait = 0;
    tt__poller_wait(loop, wait);
    run_deferred(loop);
}

void tt_loop_run(tt_loop_t *loop)
{
    loop->stop = false;
    while (!loop->stop) tt_loop_run_once(loop, -1);
}

void tt_loop_stop(tt_loop_t *loop)
{
    loop->stop = true;
}
