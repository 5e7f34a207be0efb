/* transport.c -- the plain TCP transport: the syscalls, nothing more */
#include "net/transport.h"

#include <errno.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t tcp_read(tt_transport_t *t, int fd, void *buf, size_t len)
{
    (void)t;
    ssize_t n = read(fd, buf, len);
    return n >= 0 ? n : -errno;
}

static ssize_t tcp_write(tt_transport_t *t, int fd, const void *buf, size_t len, bool more)
{
    (void)t;
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    return n >= 0 ? n : -errno;
}

static ssize_t tcp_sendfile(tt_transport_t *t, int fd, int file_fd, off_t *off, size_t len)
{
    (void)t;
    ssize_t n = sendfile(fd, file_fd, off, len);
    return n >= 0 ? n : -errno;
}

static void tcp_shutdown(tt_transport_t *t, int fd)
{
    (void)t;
    shutdown(fd, SHUT_WR);
}

static void tcp_destroy(tt_transport_t *t)
{
    (void)t;
}

static const tt_transport_ops_t tcp_ops = {
    .name = "tcp",
    .read = tcp_read,
    .write = tcp_write,
    .sendfile = tcp_sendfile,
    .shutdown = tcp_shutdown,
    .destroy = tcp_destroy,
};

tt_transport_t tt_transport_tcp = {.ops = &tcp_ops};
