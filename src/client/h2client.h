/* h2client.h -- one HTTP/2 client connection (an nghttp2 client session) on a worker's loop
 *
 * It connects without blocking; over TLS it offers ALPN "h2" and fails when the server does not select
 * it (RFC 9113 3.2), over cleartext it speaks HTTP/2 with prior knowledge (RFC 9113 3.3). Once connected
 * it sends the connection preface and then requests as streams. For `tether bench --h2` and the HTTP/2
 * checks of `--compare` requests carry no content and response content is counted and dropped, its
 * flow-control credit returned at once. For the proxy's HTTP/2 upstreams (h2pool.h) requests carry fields and
 * streamed content with trailers (tt_h2c_submit, tt_h2c_send, tt_h2c_end), the response reaches the user
 * field by field and byte by byte (on_response, on_data, on_trailers) with per-stream flow control as
 * backpressure (tt_h2c_pause), and PING checks an idle connection's liveness (RFC 9113 6.7).
 *
 * Every stream submitted is reported exactly once through on_stream_end, and a connection that ends by
 * itself is reported once through on_close, after its streams. Callbacks may submit requests and may
 * close the connection. Everything here is for the loop's thread.
 */
#ifndef TT_CLIENT_H2CLIENT_H
#define TT_CLIENT_H2CLIENT_H

#include "core/buf.h"
#include "core/loop.h"
#include "core/slab.h"
#include "core/str.h"
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
    TT_H2C_PING_TIMEOUT,    /* a PING went unanswered within the PING timeout: the connection is presumed dead */
    TT_H2C_SEND_TIMEOUT,    /* bytes waited for the socket and it took none within send_ms: the connection is closed */
    TT_H2C_WINDOW_TIMEOUT,  /* stream only: its content waited send_ms for flow-control window (RFC 9113 5.2); the
                             * stream is reset with CANCEL, the connection goes on */
    TT_H2C_DOWN,            /* h2pool.h only: the server is marked down (passive health), no connect was tried */
    TT_H2C__COUNT
} tt_h2c_err_t;

/** Static name ("connect_refused", "rst_stream", ...). */
const char *tt_h2c_err_name(tt_h2c_err_t e);

typedef struct tt_h2c tt_h2c_t;

/** What the user of a connection hears. */
typedef struct tt_h2c_ops {
    /** Connected (TCP, TLS with ALPN h2) and ready for tt_h2c_request, or failed: then the connection is
     *  closed already (freed at the end of the turn) and no other callback follows. The connect timeout goes on
     *  running until the server's first SETTINGS: a server that sends none fails with TT_H2C_CONNECT_TIMEOUT
     *  through on_close. */
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
    /* The calls below are optional (NULL: not heard). */
    /** A response head of the stream, interim (1xx) or final: `fields` are its regular fields as "name: value\r\n"
     *  lines (names lower-case, pseudo-headers left out), valid during the call. Called after on_head. */
    void (*on_response)(tt_h2c_t *c, void *stream_data, int status, tt_str_t fields);
    /** Response content of the stream, as it arrives; valid during the call. With `manual_window` its stream
     *  credit is returned only while the stream is not paused (tt_h2c_pause). */
    void (*on_data)(tt_h2c_t *c, void *stream_data, const char *data, size_t len);
    /** The response's trailer section (RFC 9113 8.1), as on_response's fields; before on_stream_end. */
    void (*on_trailers)(tt_h2c_t *c, void *stream_data, tt_str_t fields);
    /** The stream's queued request content fell below its high-water mark after tt_h2c_send returned false.
     *  Called at the end of the connection's I/O round, never from inside nghttp2. */
    void (*on_drain)(tt_h2c_t *c, void *stream_data);
    /** A GOAWAY arrived (RFC 9113 6.8): no new stream is accepted from now on; streams above `last_id` end with
     *  TT_H2C_GOAWAY, the others go on. */
    void (*on_goaway)(tt_h2c_t *c, uint32_t error_code, int32_t last_id);
    /** The server's SETTINGS frame arrived (the first one, and every change: RFC 9113 6.5), already applied. */
    void (*on_settings)(tt_h2c_t *c);
    /** A liveness PING was answered after `rtt_us` microseconds. */
    void (*on_ping_rtt)(tt_h2c_t *c, uint64_t rtt_us);
} tt_h2c_ops_t;

/** Settings of a connection; times in ms. */
typedef struct tt_h2c_conf {
    uint64_t connect_ms;      /* TCP connect, TLS handshake and the server's first SETTINGS */
    uint64_t response_ms;     /* longest wait for a frame while streams are open */
    tt_tls_client_t *tls;     /* NULL: cleartext with prior knowledge; else a client context offering h2 (alpn_h2) */
    void *session;            /* TLS session to offer (tt_tls_take_session), not owned, read once TCP is up; or NULL */
    uint32_t window;          /* stream and connection receive window, bytes (0: 1 MiB) */
    bool manual_window;       /* stream credit is returned as content is consumed (tt_h2c_pause), not on arrival */
    uint64_t ping_ms;         /* send a PING after this long without a frame from the server (0: never) */
    uint64_t ping_timeout_ms; /* an unanswered PING fails the connection with TT_H2C_PING_TIMEOUT after this */
    uint64_t send_ms;         /* longest the server accepts nothing while request bytes wait: the socket (then the
                               * connection fails with TT_H2C_SEND_TIMEOUT), or a stream's or the connection's send
                               * window while the stream's content waits (that stream ends with TT_H2C_WINDOW_TIMEOUT,
                               * reset with CANCEL); 0: no limit */
    tt_slab_t *slab; /* nghttp2's allocations for the session (the worker's slab, not owned, outlives the connection
                      * like `bufs`); NULL: the C allocator */
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

/**
 * Submits a request for the proxy: pseudo-headers `method`, `scheme`, `authority`, `path` (copied) and the
 * field lines `fields` ("Name: value\r\n" each; names are lower-cased in place, RFC 9113 8.2.1, and the
 * connection-specific ones are dropped, 8.2.2: Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding,
 * Upgrade, Host, and TE unless it is "trailers"). With `has_content` the content follows through tt_h2c_send
 * and tt_h2c_end; else HEADERS carries END_STREAM. Returns the stream id (> 0), or -1 as tt_h2c_request.
 */
int32_t tt_h2c_submit(tt_h2c_t *c, const char *method, const char *scheme, tt_str_t authority, tt_str_t path,
                      char *fields, size_t fields_len, bool has_content, void *stream_data);
/** Queues request content (copied) on stream `id`. False when its queue is above the high-water mark: wait for
 *  on_drain. A stream that already ended takes nothing (and returns true). Never calls back. */
bool tt_h2c_send(tt_h2c_t *c, int32_t id, const void *data, size_t len);
/** Ends the request content of stream `id`, with `trailers` ("Name: value\r\n" lines, copied; may be empty). */
void tt_h2c_end(tt_h2c_t *c, int32_t id, tt_str_t trailers);
/** With manual_window: stops (true) or resumes (false) returning stream `id`'s flow-control credit, so that the
 *  server stops sending once the window is used up (the connection's credit is always returned). */
void tt_h2c_pause(tt_h2c_t *c, int32_t id, bool pause);
/** Resets stream `id` (RST_STREAM CANCEL, RFC 9113 8.7): its user is forgotten at once; its slot frees when the
 *  stream closes, and on_stream_end then reports it with a NULL stream_data. */
void tt_h2c_cancel(tt_h2c_t *c, int32_t id);
/** Ends the connection gracefully: GOAWAY(NO_ERROR) is written as far as the socket takes it, then the
 *  connection closes as tt_h2c_close (no callback). */
void tt_h2c_goaway(tt_h2c_t *c);
/** Streams submitted on the connection so far (tt_h2c_request, tt_h2c_submit). */
uint32_t tt_h2c_requests(const tt_h2c_t *c);
/** A number unique to the connection in the process (for logs). */
uint64_t tt_h2c_id(const tt_h2c_t *c);
/** Loop time (ms) of the last stream end, or of the connect when no stream ran yet. */
uint64_t tt_h2c_idle_since(const tt_h2c_t *c);

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
