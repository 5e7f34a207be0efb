/* loop.h -- the per-worker event loop: cached clock, fd readiness, deferred work at the end of a turn
 *
 * One loop turn (docs/loop.md): read the clock -> run expired timers -> epoll_wait until the next timer ->
 * read the clock -> dispatch readiness callbacks -> run deferred callbacks (frees, log flushes).
 * Every function here is for the loop's owning thread only, unless it says otherwise.
 */
#ifndef TT_CORE_LOOP_H
#define TT_CORE_LOOP_H

#include "core/compat.h"

typedef struct tt_loop tt_loop_t;
typedef struct tt_io tt_io_t;
typedef struct tt_defer tt_defer_t;

/** Readiness bits, in requests (tt_io_start) and in callbacks. */
#define TT_EV_READ  0x1u  /* readable, or EOF pending */
#define TT_EV_WRITE 0x2u  /* writable */
#define TT_EV_HUP   0x4u  /* peer shut down its side (FIN) or the socket hung up; only in callbacks */
#define TT_EV_ERR   0x8u  /* socket error pending; only in callbacks */
#define TT_EV_EDGE  0x10u /* request edge-triggered reporting; only in tt_io_start/tt_io_modify */

/** Called with the TT_EV_* bits that are ready. May close and stop `io` (but must defer freeing it). */
typedef void (*tt_io_cb)(tt_io_t *io, uint32_t events);

/** A file descriptor watched by a loop; embed it in its owner and find the owner with tt_container_of. */
struct tt_io {
    tt_io_cb cb;
    int fd;
    uint32_t _events; /* private: what is registered (0 when not watched), and TT__IO_PENDING */
};

/** A one-shot callback run at the end of the current loop turn; embed it in its owner. */
typedef void (*tt_defer_cb)(tt_defer_t *d);
struct tt_defer {
    tt_defer_cb cb;
    tt_defer_t *_next;
    bool _queued;
};

/** Creates a loop (its epoll instance and timer heap). Returns NULL with errno set on failure. */
tt_loop_t *tt_loop_new(void);
/** Frees the loop; its ios must already be stopped. Sets `*loop` to NULL. */
void tt_loop_free(tt_loop_t **loop);

/** Milliseconds of CLOCK_MONOTONIC, read at the start of each turn and again after its poll wait (and by
 *  tt_loop_update_clock); the same value for every timer callback of a turn, and for every readiness and
 *  end-of-turn deferred callback of a turn. */
uint64_t tt_loop_now(const tt_loop_t *loop);
/** The same reading of CLOCK_MONOTONIC as tt_loop_now(), in microseconds (tt_loop_now() == this / 1000): for
 *  latency metrics finer than a millisecond. Under tt_loop_set_clock() it is now_ms * 1000. */
uint64_t tt_loop_now_us(const tt_loop_t *loop);
/** Wall-clock seconds since the epoch, read with the monotonic clock once per turn (for Date fields). */
int64_t tt_loop_wall(const tt_loop_t *loop);
/** Re-reads both clocks now; for callers that block, such as start-up code. */
void tt_loop_update_clock(tt_loop_t *loop);
/** For tests and fuzzers: stops reading the system clocks; from now on the loop's time is `now_ms` and
 *  `wall_s` until the next call (time may only move forward). Owning thread only. */
void tt_loop_set_clock(tt_loop_t *loop, uint64_t now_ms, int64_t wall_s);

/** Watches `io->fd` for `events` (TT_EV_READ|TT_EV_WRITE, optionally TT_EV_EDGE). 0 or -errno. */
int tt_io_start(tt_loop_t *loop, tt_io_t *io, uint32_t events);
/** Changes what `io` is watched for; `events` 0 keeps it registered but silent, hang-ups and errors included.
 *  0 or -errno. */
int tt_io_modify(tt_loop_t *loop, tt_io_t *io, uint32_t events);
/** Moves the registration of `from` (watched) to `to` (same fd, not watched): events now reach `to`.
 *  For handing a connection to another protocol. 0 or -errno. */
int tt_io_transfer(tt_loop_t *loop, tt_io_t *from, tt_io_t *to);
/** Stops watching `io` (before close(2) is not required: close removes it too). 0 or -errno. */
int tt_io_stop(tt_loop_t *loop, tt_io_t *io);
/** True while this turn's poll reported an event for `io` that its callback has not received yet (the
 *  callback comes later in the same batch). Lets an owner that acts on `io` from another callback know
 *  that news about it is already waiting. */
static inline bool tt_io_event_pending(const tt_io_t *io);

/** Queues `d` to run once at the next deferred pass: before the poll wait when queued by a timer callback
 *  or between turns, at the end of the turn when queued by a readiness callback; queued by a deferred
 *  callback, at the pass after (docs/loop.md steps 3 and 6). A no-op if already queued. Never allocates. */
void tt_loop_defer(tt_loop_t *loop, tt_defer_t *d, tt_defer_cb cb);

/** Runs turns until tt_loop_stop() is called. */
void tt_loop_run(tt_loop_t *loop);
/** Runs one turn, waiting at most `max_wait_ms` (-1: until the next timer or event). */
void tt_loop_run_once(tt_loop_t *loop, int max_wait_ms);
/** Makes tt_loop_run() return after the current turn. */
void tt_loop_stop(tt_loop_t *loop);

/* inline definitions */
#define TT__IO_PENDING 0x40000000u /* in tt_io._events: reported by this turn's poll, not yet dispatched */
static inline bool tt_io_event_pending(const tt_io_t *io)
{
    return (io->_events & TT__IO_PENDING) != 0;
}

#endif
