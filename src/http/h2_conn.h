/* h2_conn.h -- the HTTP/2 server connection (RFC 9113): nghttp2 frames it, tether runs its lifecycle */
#ifndef TT_HTTP_H2_CONN_H
#define TT_HTTP_H2_CONN_H

#include "http/worker.h"
#include "net/transport.h"

/**
 * Takes over a connection that turned out to speak HTTP/2 (ALPN h2 after a TLS handshake, or the
 * cleartext client preface): the socket registered in `from` (moved, not closed), the transport `tr`
 * (owned from now on), and the `inlen` bytes already read. `id` and `accepted_ms` keep the connection's
 * identity in logs and metrics; it stays one connection in the worker's accounting, and it takes over the caller's
 * reference on `ls->gen` (tt__wgen_ref), dropped when it closes. Owning worker only.
 */
void tt__h2_conn_adopt(tt__lstate_t *ls, tt_io_t *from, tt_transport_t *tr, const tt_addr_t *peer, uint64_t id,
                       uint64_t accepted_ms, const char *in, size_t inlen);

#endif
