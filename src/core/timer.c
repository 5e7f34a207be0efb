/* timer.c -- binary min-heap of embedded timer nodes, ordered by absolute deadline */
#include "core/loop_int.h"
#include "core/err.h"

static inline void heap_set(tt_loop_t *loop, uint32_t i, tt_timer_t *t)
{
    loop->heap[i] = t;
    t->_heap_idx = i + 1;
}

static void sift_up(tt_loop_t *loop, uint32_t i)
{
    tt_timer_t *t = loop->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (loop->heap[parent]->at_ms <= t->at_ms) break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void sift_down(tt_loop_t *loop, uint32_t i)
{
    tt_timer_t *t = loop->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= loop->heap_len) break;
        if (c + 1 < loop->heap_len && loop->heap[c + 1]->at_ms < loop->heap[c]->at_ms) c++;
        if (loop->heap[c]->at_ms >= t->at_ms) break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

void tt_timer_arm_at(tt_loop_t *loop, tt_timer_t *t, uint64_t at_ms)
{
    /* Armed from a timer callback for now or earlier: fire next turn, or the expiry loop never ends. */
    if (loop->in_timers && at_ms <= loop->now_ms) at_ms = loop->now_ms + 1;
    if (t->_heap_idx) {
        uint64_t old = t->at_ms;
        t->at_ms = at_ms;
        if (at_ms < old)
            sift_up(loop, t->_heap_idx - 1);
        else
            sift_down(loop, t->_heap_idx - 1);
        return;
    }
    if (loop->heap_len == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        loop->heap = tt_realloc(loop->heap, loop->heap_cap * sizeof(*loop->heap));
    }
    t->at_ms = at_ms;
    loop->heap[loop->heap_len] = t;
    t->_heap_idx = loop->heap_len + 1;
    loop->heap_len++;
    sift_up(loop, loop->heap_len - 1);
}

void tt_timer_arm(tt_loop_t *loop, tt_timer_t *t, uint64_t delay_ms)
{
    tt_timer_arm_at(loop, t, tt_loop_now(loop) + delay_ms);
}

void tt_timer_disarm(tt_loop_t *loop, tt_timer_t *t)
{
    if (!t->_heap_idx) return;
    uint32_t i = t->_heap_idx - 1;
    t->_heap_idx = 0;
    loop->heap_len--;
    if (i == loop->heap_len) return;
    tt_timer_t *last = loop->heap[loop->heap_len];
    heap_set(loop, i, last);
    if (i > 0 && loop->heap[(i - 1) / 2]->at_ms > last->at_ms)
        sift_up(loop, i);
    else
        sift_down(loop, i);
}

void tt__timer_run_expired(tt_loop_t *loop)
{
    loop->in_timers = true;
    while (loop->heap_len > 0 && loop->heap[0]->at_ms <= loop->now_ms) {
        tt_timer_t *t = loop->heap[0];
        tt_timer_disarm(loop, t);
        t->cb(t);
    }
    loop->in_timers = false;
}

int tt__timer_wait_ms(const tt_loop_t *loop)
{
    if (loop->heap_len == 0) return -1;
    uint64_t at = loop->heap[0]->at_ms;
    if (at <= loop->now_ms) return 0;
    uint64_t d = at - loop->now_ms;
    return d > 3600000u ? 3600000 : (int)d;
}

void tt__timer_free(tt_loop_t *loop)
{
    free(loop->heap);
    loop->heap = NULL;
    loop->heap_len = loop->heap_cap = 0;
}
