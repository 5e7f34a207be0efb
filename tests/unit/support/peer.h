/* peer.h -- a scripted TCP peer on 127.0.0.1 for unit tests that drive a real tether loop
 *
 * The test owns a listening socket; the code under test connects to it without blocking; the test accepts
 * and reads and writes with blocking calls bounded by poll(2) timeouts. Every wait is bounded: a test that
 * waits in vain fails, it never hangs. Header-only (static inline) so each test executable takes what it uses.
 */
#ifndef TT_TESTS_UNIT_SUPPORT_PEER_H
#define TT_TESTS_UNIT_SUPPORT_PEER_H

#include "core/loop.h"
#include "net/addr.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/** Milliseconds of CLOCK_MONOTONIC (wall time bounds of waits; never compared with another timing). */
static inline uint64_t peer_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/** A blocking listening socket on 127.0.0.1 with a port the kernel chose; its address in `*a`. -1 on error. */
static inline int peer_listen(tt_addr_t *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    if (bind(fd, (struct sockaddr *)&in, sizeof(in)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&in, &len) != 0) {
        close(fd);
        return -1;
    }
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss.in, &in, sizeof(in));
    a->len = sizeof(in);
    return fd;
}

/** A closed port on 127.0.0.1 (bound, never listened on): connects to it are refused. Keep the fd open. */
static inline int peer_closed_port(tt_addr_t *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(in);
    if (fd < 0 || bind(fd, (struct sockaddr *)&in, sizeof(in)) != 0 ||
        getsockname(fd, (struct sockaddr *)&in, &len) != 0)
        return -1;
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss.in, &in, sizeof(in));
    a->len = sizeof(in);
    return fd;
}

/** True when `fd` becomes readable within `timeout_ms`. */
static inline bool peer_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

/** Accepts one connection within `timeout_ms` (blocking socket, TCP_NODELAY), or -1. */
static inline int peer_accept(int lfd, int timeout_ms)
{
    if (!peer_readable(lfd, timeout_ms)) return -1;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/** Writes all of `p[0..n)` in one send(2) when the socket takes it (loopback does up to its buffer size). */
static inline bool peer_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/** Reads until `want` bytes arrived, EOF, or `timeout_ms` without progress; returns the bytes read. */
static inline size_t peer_recv(int fd, char *buf, size_t want, int timeout_ms)
{
    size_t got = 0;
    while (got < want && peer_readable(fd, timeout_ms)) {
        ssize_t r = recv(fd, buf + got, want - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/** Reads one request head (up to and including the empty line) into `buf`; its length, 0 on timeout/EOF. */
static inline size_t peer_recv_head(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    while (got + 1 < cap && peer_readable(fd, timeout_ms)) {
        ssize_t r = recv(fd, buf + got, 1, 0);
        if (r <= 0) return 0;
        got++;
        if (got >= 4 && memcmp(buf + got - 4, "\r\n\r\n", 4) == 0) {
            buf[got] = '\0';
            return got;
        }
    }
    return 0;
}

/** Closes with an RST instead of a FIN. */
static inline void peer_reset(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

/** Runs loop turns (each waiting at most 5 ms) until `*flag` is true or `max_ms` of wall time passed. */
static inline bool peer_run_until(tt_loop_t *loop, const volatile bool *flag, uint64_t max_ms)
{
    uint64_t start = peer_ms();
    while (!*flag && peer_ms() - start < max_ms) tt_loop_run_once(loop, 5);
    return *flag;
}

/** Runs loop turns for `ms` of wall time (to let events that should not come have their chance). */
static inline void peer_run_for(tt_loop_t *loop, uint64_t ms)
{
    uint64_t start = peer_ms();
    while (peer_ms() - start < ms) tt_loop_run_once(loop, 2);
}

#endif
