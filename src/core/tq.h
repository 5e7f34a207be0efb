/* tq.h -- timeout queues: every entry of a queue shares one timeout, so FIFO order is deadline order
 *
 * Entering (or re-entering) a queue is O(1) at the tail; expiry pops from the head; each queue arms
 * one timer in the loop's heap, re-armed lazily when it fires (DESIGN.md "Timers without a timer per
 * connection"). Owning worker only.
 */
#ifndef TT_CORE_TQ_H
#define TT_CORE_TQ_H

#include "core/list.h"
#include "core/timer.h"

typedef struct tt_tq tt_tq_t;
typedef struct tt_tq_entry tt_tq_entry_t;

/** Called for an entry whose deadline passed; the entry is already removed from its queue. */
typedef void (*tt_tq_cb)(tt_tq_entry_t *e);

/** An entry; embed it in its owner. `since_ms` is when it (re)entered its queue. */
struct tt_tq_entry {
    tt_list_t _link;
    uint64_t since_ms;
    tt_tq_t *q; /* the queue it is in, NULL when in none */
};

/** A queue; embed it or allocate it. */
struct tt_tq {
    tt_list_t _entries;
    tt_timer_t _timer;
    tt_loop_t *_loop;
    tt_tq_cb _cb;
    uint64_t timeout_ms; /* the shared timeout, ms */
};

/** Prepares `q` for entries that expire `timeout_ms` after entering; `cb` is called for each one. */
void tt_tq_init(tt_tq_t *q, tt_loop_t *loop, uint64_t timeout_ms, tt_tq_cb cb);
/** Releases `q`'s timer; the queue must be empty. */
void tt_tq_dispose(tt_tq_t *q);
/** Prepares an entry that is in no queue. */
static inline void tt_tq_entry_init(tt_tq_entry_t *e);
/** Puts `e` at the tail of `q` with since = now, leaving whatever queue it was in. Never allocates. */
void tt_tq_push(tt_tq_t *q, tt_tq_entry_t *e);
/** Puts `e` back at the head of `q` as having entered at `since_ms`, which must be no later than the head's
 *  (it was the oldest when it was taken out): for an entry taken out to be served and found unservable. */
void tt_tq_push_head(tt_tq_t *q, tt_tq_entry_t *e, uint64_t since_ms);
/** Removes `e` from its queue; a no-op when it is in none. */
static inline void tt_tq_remove(tt_tq_entry_t *e);
/** The oldest entry of `q` (the next to expire), or NULL when empty. */
static inline tt_tq_entry_t *tt_tq_oldest(tt_tq_t *q);
/** Absolute deadline of `e` in ms; `e` must be in a queue. */
static inline uint64_t tt_tq_deadline(const tt_tq_entry_t *e);

/* inline definitions */
static inline void tt_tq_entry_init(tt_tq_entry_t *e)
{
    tt_list_init(&e->_link);
    e->since_ms = 0;
    e->q = NULL;
}
static inline void tt_tq_remove(tt_tq_entry_t *e)
{
    tt_list_remove(&e->_link);
    e->q = NULL;
}
static inline tt_tq_entry_t *tt_tq_oldest(tt_tq_t *q)
{
    if (tt_list_is_empty(&q->_entries)) return NULL;
    return tt_container_of(tt_list_first(&q->_entries), tt_tq_entry_t, _link);
}
static inline uint64_t tt_tq_deadline(const tt_tq_entry_t *e)
{
    return e->since_ms + e->q->timeout_ms;
}

#endif
