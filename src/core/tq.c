/* tq.c -- timeout queues: O(1) push to tail, expiry from the head, one lazily re-armed timer per queue */
#include "core/tq.h"
#include "core/err.h"

static void tq_on_timer(tt_timer_t *t)
{
    tt_tq_t *q = tt_container_of(t, tt_tq_t, _timer);
    uint64_t now = tt_loop_now(q->_loop);
    tt_tq_entry_t *e;
    /* Entries that were touched since the timer was armed sit further back; the head is always the
     * earliest deadline, so stop at the first one still in the future and re-arm for it. */
    while ((e = tt_tq_oldest(q)) != NULL) {
        uint64_t at = e->since_ms + q->timeout_ms;
        /* An entry (re)pushed during this expiry (only possible with a zero timeout) waits a turn. */
        if (at > now || (q->timeout_ms == 0 && e->since_ms == now)) {
            tt_timer_arm_at(q->_loop, &q->_timer, at);
            return;
        }
        tt_tq_remove(e);
        q->_cb(e);
    }
}

void tt_tq_init(tt_tq_t *q, tt_loop_t *loop, uint64_t timeout_ms, tt_tq_cb cb)
{
    tt_list_init(&q->_entries);
    tt_timer_init(&q->_timer, tq_on_timer);
    q->_loop = loop;
    q->_cb = cb;
    q->timeout_ms = timeout_ms;
}

void tt_tq_dispose(tt_tq_t *q)
{
    TT_BUG_ON(!tt_list_is_empty(&q->_entries));
    tt_timer_disarm(q->_loop, &q->_timer);
}

void tt_tq_push(tt_tq_t *q, tt_tq_entry_t *e)
{
    tt_list_remove(&e->_link);
    e->q = q;
    e->since_ms = tt_loop_now(q->_loop);
    tt_list_push_tail(&q->_entries, &e->_link);
    /* Lazy: an armed timer fires no later than the new tail's deadline, and re-arms itself then. */
    if (!tt_timer_is_armed(&q->_timer)) tt_timer_arm_at(q->_loop, &q->_timer, e->since_ms + q->timeout_ms);
}

void tt_tq_push_head(tt_tq_t *q, tt_tq_entry_t *e, uint64_t since_ms)
{
    tt_tq_entry_t *head = tt_tq_oldest(q);
    TT_BUG_ON(head != NULL && head != e && head->since_ms < since_ms);
    tt_list_remove(&e->_link);
    e->q = q;
    e->since_ms = since_ms;
    tt_list_push_head(&q->_entries, &e->_link);
    /* Its deadline may be the earliest: arm for it (an armed timer for a later head fires late otherwise). */
    if (!tt_timer_is_armed(&q->_timer) || q->_timer.at_ms > since_ms + q->timeout_ms)
        tt_timer_arm_at(q->_loop, &q->_timer, since_ms + q->timeout_ms);
}
