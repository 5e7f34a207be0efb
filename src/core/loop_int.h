/* loop_int.h -- private layout of tt_loop_t shared by loop.c, timer.c and poller_epoll.c; never include elsewhere */
#ifndef TT_CORE_LOOP_INT_H
#define TT_CORE_LOOP_INT_H

#include "core/timer.h"

struct tt_loop {
    uint64_t now_ms;
    uint64_t now_us; /* the same reading as now_ms, in microseconds */
    int64_t wall_s;
    bool stop;
    bool in_timers;    /* inside tt__timer_run_expired */
    bool manual_clock; /* tt_loop_set_clock: the caller moves time */
    int epfd;
    /* timer heap */
    tt_timer_t **heap;
    uint32_t heap_len;
    uint32_t heap_cap;
    /* deferred callbacks, FIFO */
    tt_defer_t *defer_head;
    tt_defer_t *defer_tail;
};

/* poller_epoll.c: the only caller of epoll_* */
int tt__poller_init(tt_loop_t *loop);
void tt__poller_free(tt_loop_t *loop);
int tt__poller_ctl(tt_loop_t *loop, tt_io_t *io, uint32_t events);
int tt__poller_wait(tt_loop_t *loop, int timeout_ms); /* dispatches callbacks; returns events handled */

/* timer.c */
void tt__timer_run_expired(tt_loop_t *loop);
int tt__timer_wait_ms(const tt_loop_t *loop); /* -1 when no timer is armed */
void tt__timer_free(tt_loop_t *loop);

#endif
