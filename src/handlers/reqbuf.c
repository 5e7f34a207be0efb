/* reqbuf.c -- a proxied request's whole content: memory first, then an unlinked temporary file */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_TMPFILE */
#endif
#include "handlers/reqbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tt_reqbuf_init(tt_reqbuf_t *b, uint64_t mem_limit, const char *dir)
{
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    b->mem_limit = mem_limit;
    b->dir = dir ? dir : "/tmp";
}

/* A file nobody else can open: O_TMPFILE has no name at all; without it, a name removed at once. */
static int open_temp(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd >= 0 ? fd : -errno;
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/tether-body-XXXXXX", dir) >= (int)sizeof(path)) return -ENAMETOOLONG;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) return -errno;
    unlink(path);
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tt_reqbuf_append(tt_reqbuf_t *b, tt_bufpool_t *bufs, const char *data, size_t n)
{
    if (n == 0) return 0;
    int made = 0;
    if (b->fd < 0 && b->len + n > b->mem_limit) {
        int fd = open_temp(b->dir);
        if (fd < 0) return fd;
        int r = b->mem.len ? write_all(fd, tt_buf_data(&b->mem), b->mem.len) : 0;
        if (r < 0) {
            close(fd);
            return r;
        }
        b->fd = fd;
        tt_buf_release(&b->mem, bufs);
        made = 1;
    }
    if (b->fd >= 0) {
        int r = write_all(b->fd, data, n);
        if (r < 0) return r;
    } else {
        tt_buf_append(&b->mem, bufs, data, n);
    }
    b->len += n;
    return made;
}

int64_t tt_reqbuf_read(tt_reqbuf_t *b, uint64_t off, char *scratch, size_t cap, const char **out)
{
    if (off >= b->len) return 0;
    size_t n = (size_t)(b->len - off < cap ? b->len - off : cap);
    if (b->fd < 0) {
        *out = tt_buf_data(&b->mem) + off;
        return (int64_t)n;
    }
    for (;;) {
        ssize_t r = pread(b->fd, scratch, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -EIO; /* the file is shorter than what was written to it */
        *out = scratch;
        return r;
    }
}

void tt_reqbuf_free(tt_reqbuf_t *b, tt_bufpool_t *bufs)
{
    tt_buf_release(&b->mem, bufs);
    if (b->fd >= 0) close(b->fd);
    b->fd = -1;
    b->len = 0;
}
