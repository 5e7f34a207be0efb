/* h2client.h -- one HTTP/2 client connection (an nghttp2 client session) on a worker's loop
 *
 * It connects without blocking; over TLS it offers ALPN "h2" and fails when the server does not select
 * it (RFC 9113 3.2), over cleartext it speaks HTTP/2 with prior knowledge (RFC 9113 3.3). Once connected
 * it sends the connection preface and then requests as streams; response content is counted and dropped,
 * its flow-control credit returned at once. It is the client of `tether bench --h2` and of the HTTP/2
 * checks of `--compare`: requests carry no content.
 *
 * Every stream submitted is reported exactly once through on_stream_end, and a connection that ends by
 * itself is reported once through on_close, after its streams. Callbacks may submit requests and may
 * close the connection. Everything here is for the loop's thread.
 */
#ifndef TT_CLIENT_H2CLIENT_H
#define TT_CLIENT_H2CLIENT_H

#include "core/buf.h"
#include "core/loop.h"
#include "net/addr.h"
#include "net/tls.h"

/** How a connection or a stream ended. */
typedef enum tt_h2c_err {
    TT_H2C_OK = 0,
    TT_H2C_CONNECT_REFUSED, /* ECONNREFUSED */
    TT_H2C_CONNECT_TIMEOUT, /* TCP and TLS not done within the connect timeout */
    TT_H2C_CONNECT_ERROR,   /* any other connect failure */
    TT_H2C_TLS_ERROR,       /* the TLS handshake failed (tt_h2c_tls_failure says why) */
    TT_H2C_NO_H2,           /* TLS: the server did not select "h2" in ALPN */
    TT_H2C_CLOSED,          /* the server closed the connection with streams open */
    TT_H2C_RESET,           /* ECONNRESET or another socket error */
    TT_H2C_TIMEOUT,         /* streams open and no frame from the server within the response timeout */
    TT_H2C_PROTOCOL,        /* not HTTP/2, or a connection error (RFC 9113 5.4.1) */
    TT_H2C_RST_STREAM,      /* stream only: the server reset it (RST_STREAM, RFC 9113 6.4) */
    TT_H2C_GOAWAY,          /* stream only: not processed because the server sent GOAWAY (RFC 9113 6.8) */
    TT_H2C__COUNT
} tt_h2c_err_t;

/** Static name ("connect_refused", "rst_stream", ...). */
const char *tt_h2c_err_name(tt_h2c_err_t e);

typedef struct tt_h2c tt_h2c_t;

/** What the user of a connection hears. */
typedef struct tt_h2c_ops {
    /** Connected (TCP, TLS with ALPN h2) and ready for tt_h2c_request, or failed: then the connection is
     *  closed already (freed at the end of the turn) and no other callback follows. */
    void (*on_connect)(tt_h2c_t *c, tt_h2c_err_t err);
    /** The final response head (status 200..599) of the stream submitted with `stream_data`. */
    void (*on_head)(tt_h2c_t *c, void *stream_data, int status);
    /** The stream ended: TT_H2C_OK when the response is complete, TT_H2C_RST_STREAM with the peer's error
     *  code in `h2_error`, TT_H2C_GOAWAY, or the connection's error when the connection failed. */
    void (*on_stream_end)(tt_h2c_t *c, void *stream_data, tt_h2c_err_t err, uint32_t h2_error);
    /** The connection ended by itself, after every open stream was reported: TT_H2C_OK when the session was
     *  over (GOAWAY received, no stream left) or the server closed it with no stream open, else the error.
     *  The connection is freed at the end of the turn. */
    void (*on_close)(tt_h2c_t *c, tt_h2c_err_t err);
} tt_h2c_ops_t;

/** Settings of a connection; times in ms. */
typedef struct tt_h2c_conf {
    uint64_t connect_ms;  /* TCP connect and TLS handshake */
    uint64_t response_ms; /* longest wait for a frame while streams are open */
    tt_tls_client_t *tls; /* NULL: cleartext with prior knowledge; else a client context offering h2 (alpn_h2) */
    void *session;        /* TLS session to offer (tt_tls_take_session), not owned, read once TCP is up; or NULL */
    uint32_t window;      /* stream and connection receive window, bytes (0: 1 MiB) */
} tt_h2c_conf_t;

/**
 * Allocates a connection and starts a non-blocking connect to `addr`; `ops->on_connect` reports the
 * outcome. `conf` is copied; `bufs` (a worker's pool) must outlive the connection. Returns the
 * connection, or NULL with `*err` set when the connect failed at once.
 */
tt_h2c_t *tt_h2c_connect(tt_loop_t *loop, tt_bufpool_t *bufs, const tt_addr_t *addr, const tt_h2c_conf_t *conf,
                         const tt_h2c_ops_t *ops, void *data, tt_h2c_err_t *err);

/**
 * Submits a request without content (END_STREAM on HEADERS): `method`, `scheme` ("http" or "https"),
 * `authority` and `path` (copied). `stream_data` comes back in on_head and on_stream_end. Returns the
 * stream id (> 0), or -1 when the connection cannot take a new stream (not connected yet, GOAWAY received,
 * closed). The request is written at the end of the loop turn at the latest.
 */
int32_t tt_h2c_request(tt_h2c_t *c, const char *method, const char *scheme, const char *authority, const char *path,
                       void *stream_data);

/** True when tt_h2c_request would accept a stream: connected, no GOAWAY received, not closed. */
bool tt_h2c_can_request(const tt_h2c_t *c);
/** Streams submitted and not yet ended. */
uint32_t tt_h2c_open_streams(const tt_h2c_t *c);
/** True once the server's first SETTINGS frame arrived: it speaks HTTP/2 (RFC 9113 3.4). */
bool tt_h2c_peer_settings_seen(const tt_h2c_t *c);
/** The server's SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 6.5.2); UINT32_MAX until its SETTINGS arrive. */
uint32_t tt_h2c_peer_max_streams(const tt_h2c_t *c);
/** The user pointer given to tt_h2c_connect. */
void *tt_h2c_data(const tt_h2c_t *c);
/** True when the TLS handshake resumed a session (after on_connect). */
bool tt_h2c_tls_resumed(const tt_h2c_t *c);
/** A reference to the TLS session for a later resumption (tt_tls_session_free), or NULL (cleartext, none). */
void *tt_h2c_take_session(tt_h2c_t *c);
/** Why the TLS handshake failed (static text, `*verify` set when it was the certificate check), or NULL;
 *  valid in on_connect with TT_H2C_TLS_ERROR. For TT_H2C_NO_H2, the protocol the server chose instead. */
const char *tt_h2c_tls_failure(const tt_h2c_t *c, bool *verify);

/**
 * Closes the connection now, without callbacks: streams still open are dropped (the caller accounts for
 * them). Safe inside any callback of this connection; a no-op on a closed one. Freed at the end of the turn.
 */
void tt_h2c_close(tt_h2c_t *c);

#endif
