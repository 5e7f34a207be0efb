/* sock.h -- non-blocking TCP sockets: listen, accept, options; the only users of setsockopt(2)
 *
 * All functions return 0 (or a file descriptor) on success and -errno on failure.
 */
#ifndef TT_NET_SOCK_H
#define TT_NET_SOCK_H

#include "net/addr.h"

/** TCP keepalive (the kernel's liveness probe; not the HTTP idle timeout). All times in seconds. */
typedef struct tt_tcp_keepalive {
    bool enabled;
    int idle_s;     /* TCP_KEEPIDLE: idle time before the first probe */
    int interval_s; /* TCP_KEEPINTVL: time between unanswered probes */
    int count;      /* TCP_KEEPCNT: unanswered probes before the connection is reset */
} tt_tcp_keepalive_t;

/**
 * Opens a non-blocking, close-on-exec listening socket on `a` with SO_REUSEADDR, SO_REUSEPORT when
 * `reuseport`, IPV6_V6ONLY for IPv6, TCP_NODELAY and `ka` (both inherited by accepted sockets).
 * Returns the fd or -errno.
 */
int tt_sock_listen(const tt_addr_t *a, int backlog, bool reuseport, const tt_tcp_keepalive_t *ka);
/**
 * Whether another socket already listens on `a` (port > 0), found by binding a probe socket WITHOUT
 * SO_REUSEPORT (closed again, never listening): 1 when it is taken (EADDRINUSE), 0 when free, -errno when
 * the probe itself failed (e.g. -EADDRNOTAVAIL). Sockets that are not listening (TIME_WAIT) do not count.
 */
int tt_sock_addr_in_use(const tt_addr_t *a);
/**
 * Opens a non-blocking, close-on-exec TCP socket with TCP_NODELAY and `ka` (NULL: kernel default) and
 * starts connecting to `a`. Returns the fd with `*in_progress` set when the connect continues in the
 * background (EINPROGRESS), or -errno.
 */
int tt_sock_connect(const tt_addr_t *a, const tt_tcp_keepalive_t *ka, bool *in_progress);
/** Accepts one connection as non-blocking, close-on-exec; fills `peer`. Returns the fd or -errno (-EAGAIN). */
int tt_sock_accept(int lfd, tt_addr_t *peer);
/** Applies `ka` to `fd`: SO_KEEPALIVE and, when enabled, TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT. */
int tt_sock_set_keepalive(int fd, const tt_tcp_keepalive_t *ka);
/** Sets TCP_NODELAY on or off. */
int tt_sock_set_nodelay(int fd, bool on);
/** Fills `a` with the local address of `fd`. */
int tt_sock_local_addr(int fd, tt_addr_t *a);
/** Disables lingering on close (SO_LINGER 0), so close(2) sends RST; for tests and hard aborts. */
int tt_sock_set_abortive_close(int fd);
/** Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit or -errno. */
long tt_sock_raise_nofile(void);

#endif
