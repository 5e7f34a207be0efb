/* tunnel.c -- a byte tunnel: read from one side into a bounded buffer, write it to the other, half-close through */
#include "net/tunnel.h"
#include "core/err.h"
#include "core/timer.h"

#include <errno.h>

#define READ_NEED 16384 /* room wanted before a read */
#define BUF_MAX   65536 /* bytes one direction holds at most: the backpressure bound */
#define ROUNDS    16    /* read/write rounds per wake-up before yielding to other connections */

typedef struct tunnel_end {
    int fd;
    tt_transport_t *tr; /* the connection's */
    tt_buf_t buf;       /* read from this side, not yet written to the other */
    uint64_t bytes;     /* read from this side and written to the other */
    bool attached;
    bool rd_ready; /* may have unread bytes (edge-triggered) */
    bool peer_hup; /* the poller reported the peer's FIN: read on until it is read, no new edge will come */
    bool wr_blocked;
    bool eof;  /* this side ended its stream */
    bool shut; /* our writing to this side is shut (the other side's end of stream passed on) */
} tunnel_end_t;

struct tt_tunnel {
    tt_loop_t *loop;
    tt_bufpool_t *bufs;
    tunnel_end_t end[2];
    uint64_t idle_ms;
    uint64_t start_ms;
    uint64_t active_ms; /* last byte moved */
    tt_timer_t timer;   /* idle deadline, re-armed lazily from active_ms */
    tt_tunnel_done_cb done_cb;
    void *data;
    int first_eof; /* side that ended its stream first, -1 */
    bool done;
    tt_defer_t resume;
    tt_defer_t free_later;
};

static const char *const why_names[] = {
    [TT_TUNNEL_IDLE] = "tunnel_idle",
    [TT_TUNNEL_CLOSED_BY_CLIENT] = "tunnel_closed_by_client",
    [TT_TUNNEL_CLOSED_BY_UPSTREAM] = "tunnel_closed_by_upstream",
};

const char *tt_tunnel_why_name(tt_tunnel_why_t why)
{
    return (unsigned)why < TT_ARRAY_SIZE(why_names) ? why_names[why] : "unknown";
}

static void free_cb(tt_defer_t *d)
{
    tt_tunnel_t *t = tt_container_of(d, tt_tunnel_t, free_later);
    if (t->resume._queued) /* a resume queued in the same turn runs first (and sees `done`) */
        tt_loop_defer(t->loop, &t->free_later, free_cb);
    else
        free(t);
}

/* Stops everything; the memory goes at the end of the turn. */
static void stop(tt_tunnel_t *t)
{
    t->done = true;
    tt_timer_disarm(t->loop, &t->timer);
    for (int s = 0; s < 2; s++) tt_buf_release(&t->end[s].buf, t->bufs);
    tt_loop_defer(t->loop, &t->free_later, free_cb);
}

static void finish(tt_tunnel_t *t, tt_tunnel_why_t why)
{
    if (t->done) return;
    stop(t);
    t->done_cb(t, why, t->data);
}

static tt_tunnel_why_t closed_by(int side)
{
    return side == TT_TUNNEL_CLIENT ? TT_TUNNEL_CLOSED_BY_CLIENT : TT_TUNNEL_CLOSED_BY_UPSTREAM;
}

static void on_timer(tt_timer_t *tm)
{
    tt_tunnel_t *t = tt_container_of(tm, tt_tunnel_t, timer);
    uint64_t now = tt_loop_now(t->loop);
    if (now - t->active_ms < t->idle_ms) {
        tt_timer_arm_at(t->loop, &t->timer, t->active_ms + t->idle_ms); /* bytes moved since: lazy re-arm */
        return;
    }
    finish(t, TT_TUNNEL_IDLE);
}

/* Moves bytes from side `s` to the other side. 1: progress; 0: none; -1: the tunnel ended. */
static int pump(tt_tunnel_t *t, int s)
{
    tunnel_end_t *src = &t->end[s], *dst = &t->end[1 - s];
    int progress = 0;
    for (;;) {
        while (src->buf.len > 0 && !dst->wr_blocked) {
            ssize_t n = tt_transport_write(dst->tr, dst->fd, tt_buf_data(&src->buf), src->buf.len, false);
            if (n > 0) {
                tt_buf_consume(&src->buf, (size_t)n);
                src->bytes += (uint64_t)n;
                t->active_ms = tt_loop_now(t->loop);
                progress = 1;
                continue;
            }
            if (n == -EINTR) continue;
            if (n == -EAGAIN) {
                dst->wr_blocked = true;
                break;
            }
            finish(t, closed_by(1 - s)); /* the side we write to reset or failed */
            return -1;
        }
        if (src->buf.len == 0) tt_buf_release(&src->buf, t->bufs); /* an idle tunnel holds no buffer */
        if (src->eof && src->buf.len == 0 && !dst->shut) {
            tt_transport_shutdown(dst->tr, dst->fd); /* the half-close passes through */
            dst->shut = true;
            progress = 1;
        }
        if (src->eof || !src->rd_ready) break;
        if (!tt_buf_reserve(&src->buf, t->bufs, READ_NEED, BUF_MAX)) break; /* full: wait for the other side */
        size_t space = tt_buf_space(&src->buf);
        ssize_t n = tt_transport_read(src->tr, src->fd, tt_buf_tail(&src->buf), space);
        if (n > 0) {
            src->buf.len += (uint32_t)n;
            t->active_ms = tt_loop_now(t->loop);
            if (tt_transport_drained(src->tr, n, space, src->peer_hup)) src->rd_ready = false;
            progress = 1;
            continue;
        }
        if (n == 0) {
            src->eof = true;
            src->rd_ready = false;
            if (t->first_eof < 0) t->first_eof = s;
            continue; /* pass the half-close on once the buffer is written */
        }
        if (n == -EINTR) continue;
        if (n == -EAGAIN) {
            src->rd_ready = false;
            break;
        }
        finish(t, closed_by(s)); /* reset or TLS error on the side we read */
        return -1;
    }
    return progress;
}

static void resume_cb(tt_defer_t *d);

static void run(tt_tunnel_t *t)
{
    for (int round = 0; !t->done; round++) {
        int a = pump(t, TT_TUNNEL_CLIENT);
        if (a < 0) return;
        int b = pump(t, TT_TUNNEL_UPSTREAM);
        if (b < 0) return;
        tunnel_end_t *c = &t->end[0], *u = &t->end[1];
        if (c->eof && u->eof && c->shut && u->shut) {
            finish(t, closed_by(t->first_eof)); /* both directions closed: the tunnel is over */
            return;
        }
        if (!a && !b) return;
        if (round + 1 == ROUNDS) {
            tt_loop_defer(t->loop, &t->resume, resume_cb); /* fairness: go on next turn */
            return;
        }
    }
}

static void resume_cb(tt_defer_t *d)
{
    tt_tunnel_t *t = tt_container_of(d, tt_tunnel_t, resume);
    if (!t->done) run(t);
}

tt_tunnel_t *tt_tunnel_new(tt_loop_t *loop, tt_bufpool_t *bufs, uint64_t idle_ms, tt_tunnel_done_cb done, void *data)
{
    tt_tunnel_t *t = tt_calloc(1, sizeof(*t));
    t->loop = loop;
    t->bufs = bufs;
    t->idle_ms = TT_MAX(idle_ms, 1);
    t->start_ms = t->active_ms = tt_loop_now(loop);
    t->done_cb = done;
    t->data = data;
    t->first_eof = -1;
    tt_timer_init(&t->timer, on_timer);
    for (int s = 0; s < 2; s++) t->end[s].fd = -1;
    return t;
}

void tt_tunnel_attach(tt_tunnel_t *t, tt_tunnel_side_t side, int fd, tt_transport_t *tr, bool peer_hup,
                      const void *ahead, size_t n)
{
    tunnel_end_t *e = &t->end[side];
    e->fd = fd;
    e->tr = tr;
    e->attached = true;
    e->peer_hup = peer_hup;
    e->rd_ready = true; /* edge-triggered: bytes may wait that raised their edge before the tunnel existed */
    if (n > 0) tt_buf_append(&e->buf, t->bufs, ahead, n);
}

void tt_tunnel_queue(tt_tunnel_t *t, tt_tunnel_side_t side, const void *data, size_t n)
{
    if (n > 0) tt_buf_append(&t->end[1 - side].buf, t->bufs, data, n);
}

void tt_tunnel_start(tt_tunnel_t *t)
{
    TT_BUG_ON(!t->end[0].attached || !t->end[1].attached);
    tt_timer_arm(t->loop, &t->timer, t->idle_ms);
    tt_loop_defer(t->loop, &t->resume, resume_cb);
}

void tt_tunnel_on_io(tt_tunnel_t *t, tt_tunnel_side_t side, uint32_t events)
{
    if (t == NULL || t->done) return;
    tunnel_end_t *e = &t->end[side];
    if (events & TT_EV_ERR) {
        finish(t, closed_by(side));
        return;
    }
    if (events & TT_EV_HUP) e->peer_hup = true;
    if (events & (TT_EV_READ | TT_EV_HUP)) e->rd_ready = true;
    if (events & TT_EV_WRITE) {
        e->wr_blocked = false;
        if (e->tr->want_write) e->rd_ready = true; /* a TLS read that had to write first */
    }
    run(t);
}

void tt_tunnel_cancel(tt_tunnel_t *t)
{
    if (t != NULL && !t->done) stop(t);
}

uint64_t tt_tunnel_bytes_from(const tt_tunnel_t *t, tt_tunnel_side_t side)
{
    return t->end[side].bytes;
}

uint64_t tt_tunnel_start_ms(const tt_tunnel_t *t)
{
    return t->start_ms;
}
