/* poller_epoll.c -- the epoll backend of the loop; the only file that calls epoll_* */
#include "core/loop_int.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

int tt__poller_init(tt_loop_t *loop)
{
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    return loop->epfd < 0 ? -errno : 0;
}

void tt__poller_free(tt_loop_t *loop)
{
    if (loop->epfd >= 0) close(loop->epfd);
    loop->epfd = -1;
}

static uint32_t to_epoll(uint32_t ev)
{
    uint32_t e = 0;
    if (ev & TT_EV_READ) e |= EPOLLIN | EPOLLRDHUP;
    if (ev & TT_EV_WRITE) e |= EPOLLOUT;
    if (ev & TT_EV_EDGE) e |= EPOLLET;
    return e;
}

/* The registered set is kept in io->_events, with a marker bit so that "registered but silent" differs from
 * "not registered". A silent registration is kept out of epoll: epoll reports EPOLLHUP and EPOLLERR whatever
 * was asked for, and a level-triggered hang-up would call a silenced io at every turn. */
#define REGISTERED 0x80000000u

static bool in_epoll(uint32_t events)
{
    return (events & REGISTERED) && (events & (TT_EV_READ | TT_EV_WRITE));
}

int tt__poller_ctl(tt_loop_t *loop, tt_io_t *io, uint32_t events)
{
    struct epoll_event ee = {.events = to_epoll(events), .data.ptr = io};
    bool was = in_epoll(io->_events), want = in_epoll(events);
    int op = want ? (was ? EPOLL_CTL_MOD : EPOLL_CTL_ADD) : EPOLL_CTL_DEL;
    if ((was || want) && epoll_ctl(loop->epfd, op, io->fd, &ee) != 0) return -errno;
    io->_events = events | (io->_events & TT__IO_PENDING);
    return 0;
}

int tt__poller_wait(tt_loop_t *loop, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    tt_loop_update_clock(loop);
    /* Mark the whole batch first, so an owner acting on another io in an earlier callback can tell that an
     * event for it is on its way (tt_io_event_pending: a parked upstream connection about to be reused). */
    for (int i = 0; i < n; i++) ((tt_io_t *)evs[i].data.ptr)->_events |= TT__IO_PENDING;
    for (int i = 0; i < n; i++) {
        tt_io_t *io = evs[i].data.ptr;
        io->_events &= ~TT__IO_PENDING;
        uint32_t e = evs[i].events, ev = 0;
        if (e & EPOLLIN) ev |= TT_EV_READ;
        if (e & EPOLLOUT) ev |= TT_EV_WRITE;
        if (e & (EPOLLHUP | EPOLLRDHUP)) ev |= TT_EV_HUP | TT_EV_READ;
        if (e & EPOLLERR) ev |= TT_EV_ERR | TT_EV_READ | TT_EV_WRITE;
        io->cb(io, ev);
    }
    return n;
}
