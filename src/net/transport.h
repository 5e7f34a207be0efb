/* transport.h -- byte transports under the HTTP connections: plain TCP or TLS, behind one vtable
 *
 * Protocol code (h1, h2, the upstream client) moves bytes through these calls only, so it never includes
 * OpenSSL. Return convention for read/write/sendfile: > 0 bytes moved, 0 end of stream (read only),
 * -EAGAIN when the socket would block (check tt_transport_wants_write for a TLS read that needs the socket
 * writable), any other -errno on failure. Owning worker only.
 */
#ifndef TT_NET_TRANSPORT_H
#define TT_NET_TRANSPORT_H

#include "core/compat.h"

#include <sys/types.h>

typedef struct tt_transport tt_transport_t;

typedef struct tt_transport_ops {
    const char *name; /* "tcp" or "tls" */
    ssize_t (*read)(tt_transport_t *t, int fd, void *buf, size_t len);
    /** `more`: further bytes, or our FIN (a close or shutdown), follow at once (MSG_MORE on TCP: the last partial
     *  segment waits for them, and carries the FIN) */
    ssize_t (*write)(tt_transport_t *t, int fd, const void *buf, size_t len, bool more);
    /** Sends `len` bytes of `file_fd` from `*off` (advanced); TLS reads and encrypts them. */
    ssize_t (*sendfile)(tt_transport_t *t, int fd, int file_fd, off_t *off, size_t len);
    /** Ends our direction: FIN on TCP, close_notify on TLS (best effort, never blocks). */
    void (*shutdown)(tt_transport_t *t, int fd);
    /** Frees the transport's state (not the fd). */
    void (*destroy)(tt_transport_t *t);
} tt_transport_ops_t;

/** A transport; TLS embeds this as its first member. */
struct tt_transport {
    const tt_transport_ops_t *ops;
    bool want_write; /* the last read returned -EAGAIN because TLS must write first */
    bool unread;     /* the last short read stopped before the socket was empty (TLS): read again */
};

/** Plain TCP: stateless, shared by every plain connection. */
extern tt_transport_t tt_transport_tcp;

static inline bool tt_transport_is_tls(const tt_transport_t *t)
{
    return t->ops != tt_transport_tcp.ops;
}
static inline ssize_t tt_transport_read(tt_transport_t *t, int fd, void *buf, size_t len)
{
    return t->ops->read(t, fd, buf, len);
}
static inline ssize_t tt_transport_write(tt_transport_t *t, int fd, const void *buf, size_t len, bool more)
{
    return t->ops->write(t, fd, buf, len, more);
}
static inline ssize_t tt_transport_sendfile(tt_transport_t *t, int fd, int file_fd, off_t *off, size_t len)
{
    return t->ops->sendfile(t, fd, file_fd, off, len);
}
/**
 * True when a read that returned `n` bytes of the `asked` proves the socket empty, so that an edge-triggered
 * reader may wait for the next edge: a short TCP read, or a TLS read that stopped for want of bytes.
 * `peer_hup`: the peer's FIN was reported with the bytes, and the end of stream is still to be read.
 */
static inline bool tt_transport_drained(const tt_transport_t *t, ssize_t n, size_t asked, bool peer_hup)
{
    return n >= 0 && (size_t)n < asked && !t->unread && !peer_hup;
}
static inline void tt_transport_shutdown(tt_transport_t *t, int fd)
{
    t->ops->shutdown(t, fd);
}
/** Frees `*t` (a no-op for the shared TCP transport) and sets it to NULL. */
static inline void tt_transport_free(tt_transport_t **t)
{
    if (*t != NULL && *t != &tt_transport_tcp) (*t)->ops->destroy(*t);
    *t = NULL;
}

#endif
