/* sock.c -- socket creation and options; the only file that calls setsockopt(2) */
#include "net/sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <unistd.h>

static int setopt(int fd, int level, int name, int v)
{
    return setsockopt(fd, level, name, &v, sizeof(v)) == 0 ? 0 : -errno;
}

int tt_sock_set_keepalive(int fd, const tt_tcp_keepalive_t *ka)
{
    int r = setopt(fd, SOL_SOCKET, SO_KEEPALIVE, ka->enabled ? 1 : 0);
    if (r != 0 || !ka->enabled) return r;
    if ((r = setopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, ka->idle_s)) != 0) return r;
    if ((r = setopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, ka->interval_s)) != 0) return r;
    return setopt(fd, IPPROTO_TCP, TCP_KEEPCNT, ka->count);
}

int tt_sock_set_nodelay(int fd, bool on)
{
    return setopt(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

int tt_sock_set_abortive_close(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) == 0 ? 0 : -errno;
}

int tt_sock_listen(const tt_addr_t *a, int backlog, bool reuseport, const tt_tcp_keepalive_t *ka)
{
    int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int r = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (r == 0 && reuseport) r = setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (r == 0 && a->ss.sa.sa_family == AF_INET6) r = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    if (r == 0) r = tt_sock_set_nodelay(fd, true);
    if (r == 0 && ka != NULL) r = tt_sock_set_keepalive(fd, ka);
    if (r == 0 && bind(fd, &a->ss.sa, a->len) != 0) r = -errno;
    if (r == 0 && listen(fd, backlog) != 0) r = -errno;
    if (r != 0) {
        close(fd);
        return r;
    }
    return fd;
}

int tt_sock_addr_in_use(const tt_addr_t *a)
{
    int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int r = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (r == 0 && a->ss.sa.sa_family == AF_INET6) r = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    if (r == 0 && bind(fd, &a->ss.sa, a->len) != 0) r = -errno;
    close(fd);
    return r == -EADDRINUSE ? 1 : r;
}

int tt_sock_connect(const tt_addr_t *a, const tt_tcp_keepalive_t *ka, bool *in_progress)
{
    int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int r = tt_sock_set_nodelay(fd, true);
    if (r == 0 && ka != NULL) r = tt_sock_set_keepalive(fd, ka);
    if (r != 0) {
        close(fd);
        return r;
    }
    *in_progress = false;
    if (connect(fd, &a->ss.sa, a->len) != 0) {
        if (errno != EINPROGRESS) {
            r = -errno;
            close(fd);
            return r;
        }
        *in_progress = true;
    }
    return fd;
}

int tt_sock_accept(int lfd, tt_addr_t *peer)
{
    peer->len = sizeof(peer->ss);
    int fd = accept4(lfd, &peer->ss.sa, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tt_sock_local_addr(int fd, tt_addr_t *a)
{
    a->len = sizeof(a->ss);
    return getsockname(fd, &a->ss.sa, &a->len) == 0 ? 0 : -errno;
}

long tt_sock_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
    }
    return (long)rl.rlim_cur;
}
