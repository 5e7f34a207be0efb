/* tunnel.h -- a byte tunnel between two sockets: what an HTTP/1.1 exchange becomes after a 101 (RFC 9110 7.8)
 *
 * A tunnel moves bytes both ways between a client side and an upstream side, each a socket and its transport
 * (plain TCP or TLS). It owns neither: each side belongs to its connection (the client connection, the upstream
 * connection), which keeps watching its socket and hands every event to tt_tunnel_on_io(). Bytes are read into one
 * buffer per direction and written to the other side; a side is not read while its buffer is full (the other side
 * is not taking bytes), so memory stays bounded by one buffer per direction whatever the peers do (backpressure).
 * An end of stream from one side is passed on as a half-close of the other (FIN, or TLS close_notify then FIN)
 * once the bytes before it are written. The tunnel ends, and calls its done callback once, when both directions
 * are closed, when either side fails (reset, TLS error), or when no byte moved either way for the idle timeout.
 *
 * Lifetime: created by its user (the proxy), who owns it until it ends: after the done callback returns, or after
 * tt_tunnel_cancel(), it is freed at the end of the loop turn and touches neither socket again. Owning worker only.
 */
#ifndef TT_NET_TUNNEL_H
#define TT_NET_TUNNEL_H

#include "core/buf.h"
#include "core/loop.h"
#include "net/transport.h"

typedef struct tt_tunnel tt_tunnel_t;

/** The two sides. */
typedef enum tt_tunnel_side { TT_TUNNEL_CLIENT = 0, TT_TUNNEL_UPSTREAM = 1 } tt_tunnel_side_t;

/** Why a tunnel ended. */
typedef enum tt_tunnel_why {
    TT_TUNNEL_IDLE,               /* no byte either way for the idle timeout */
    TT_TUNNEL_CLOSED_BY_CLIENT,   /* the client side ended first (end of stream, reset or error) */
    TT_TUNNEL_CLOSED_BY_UPSTREAM, /* the upstream side ended first */
} tt_tunnel_why_t;

/** Called once when the tunnel ends; the callee closes both sides' connections (the tunnel has stopped using
 *  their sockets) and must not call the tunnel again. */
typedef void (*tt_tunnel_done_cb)(tt_tunnel_t *t, tt_tunnel_why_t why, void *data);

/**
 * Creates a tunnel that ends after `idle_ms` (> 0) without a byte moved either way; `bufs` gives its two buffers
 * (they go back when it ends). `done` and `data` are its user's. Nothing moves until both sides are attached and
 * tt_tunnel_start() is called.
 */
tt_tunnel_t *tt_tunnel_new(tt_loop_t *loop, tt_bufpool_t *bufs, uint64_t idle_ms, tt_tunnel_done_cb done, void *data);
/**
 * Attaches a side: its socket `fd` and transport `tr` (both still owned by the side's connection, which must keep
 * them open until the tunnel ends); `peer_hup`: the poller already reported the peer's FIN (edge-triggered: no
 * new edge will say so); and `ahead`, `n` bytes already read from that side which go to the other side first
 * (copied).
 */
void tt_tunnel_attach(tt_tunnel_t *t, tt_tunnel_side_t side, int fd, tt_transport_t *tr, bool peer_hup,
                      const void *ahead, size_t n);
/** Queues `n` bytes (copied) to be written to `side` before anything read from the other side after this call. */
void tt_tunnel_queue(tt_tunnel_t *t, tt_tunnel_side_t side, const void *data, size_t n);
/** Starts moving bytes, at the end of the loop turn (so that no callback runs under the caller). */
void tt_tunnel_start(tt_tunnel_t *t);
/** The side's connection got `events` (TT_EV_*) on its socket. */
void tt_tunnel_on_io(tt_tunnel_t *t, tt_tunnel_side_t side, uint32_t events);
/** Ends the tunnel without its done callback (its user closes the connections itself); a no-op on an ended one.
 *  Freed at the end of the loop turn. */
void tt_tunnel_cancel(tt_tunnel_t *t);
/** Bytes read from `side` and written to the other so far. */
uint64_t tt_tunnel_bytes_from(const tt_tunnel_t *t, tt_tunnel_side_t side);
/** Loop time (ms) the tunnel was created. */
uint64_t tt_tunnel_start_ms(const tt_tunnel_t *t);
/** Static name of `why` ("tunnel_idle", "tunnel_closed_by_client", "tunnel_closed_by_upstream"). */
const char *tt_tunnel_why_name(tt_tunnel_why_t why);

#endif
