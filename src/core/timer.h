/* timer.h -- per-worker general deadlines (connect, drain, ticks); a binary heap of embedded nodes
 *
 * Uniform deadlines (every idle connection of one policy) belong in tq.h instead: one ordered list and
 * one timer here per list. Owning worker only.
 */
#ifndef TT_CORE_TIMER_H
#define TT_CORE_TIMER_H

#include "core/loop.h"

typedef struct tt_timer tt_timer_t;
/** Called once when `t` expires; `t` is disarmed before the call and may be re-armed inside it. */
typedef void (*tt_timer_cb)(tt_timer_t *t);

/** A deadline; embed it in its owner. */
struct tt_timer {
    tt_timer_cb cb;
    uint64_t at_ms;     /* absolute deadline, ms of tt_loop_now() */
    uint32_t _heap_idx; /* private: heap slot + 1, 0 when not armed */
};

/** Prepares an unarmed timer. */
static inline void tt_timer_init(tt_timer_t *t, tt_timer_cb cb);
/** True when `t` is armed. */
static inline bool tt_timer_is_armed(const tt_timer_t *t);
/** Arms or re-arms `t` for the absolute time `at_ms`. Allocates only when the heap outgrows its past maximum. */
void tt_timer_arm_at(tt_loop_t *loop, tt_timer_t *t, uint64_t at_ms);
/** Arms or re-arms `t` to fire `delay_ms` after tt_loop_now(loop). */
void tt_timer_arm(tt_loop_t *loop, tt_timer_t *t, uint64_t delay_ms);
/** Disarms `t`; a no-op when it is not armed. */
void tt_timer_disarm(tt_loop_t *loop, tt_timer_t *t);

/* inline definitions */
static inline void tt_timer_init(tt_timer_t *t, tt_timer_cb cb)
{
    t->cb = cb;
    t->at_ms = 0;
    t->_heap_idx = 0;
}
static inline bool tt_timer_is_armed(const tt_timer_t *t)
{
    return t->_heap_idx != 0;
}

#endif
