/* upstream.h -- one HTTP/1.1 client connection on a worker's loop
 *
 * It connects without blocking, sends a request the caller serialised, reads the response with the
 * framing of RFC 9112 6.3 (Content-Length, chunked with trailers, close-delimited, none for HEAD, 1xx,
 * 204, 304) and reports it through callbacks; between exchanges it is parked (buffers given back,
 * still watched so a FIN or RST is seen at once). Whether a parked connection may be reused is the
 * pool's business (pool.h). The proxy, `tether probe` and `tether bench` all use this.
 * Everything here is for the loop's thread.
 */
#ifndef TT_CLIENT_UPSTREAM_H
#define TT_CLIENT_UPSTREAM_H

#include "core/buf.h"
#include "core/list.h"
#include "core/timer.h"
#include "http/h1_parse.h"
#include "net/sock.h"
#include "net/tls.h"
#include "net/tunnel.h"

/** How an exchange or a connect failed. */
typedef enum tt_up_err {
    TT_UP_OK = 0,
    TT_UP_CONNECT_REFUSED,  /* ECONNREFUSED */
    TT_UP_CONNECT_TIMEOUT,  /* no answer within the connect timeout */
    TT_UP_CONNECT_ERROR,    /* any other connect failure (unreachable, no route) */
    TT_UP_RESET,            /* ECONNRESET, EPIPE or another socket error while exchanging */
    TT_UP_CLOSED,           /* EOF before the response was complete */
    TT_UP_RESPONSE_TIMEOUT, /* no response head within the response timeout after the request was sent */
    TT_UP_READ_TIMEOUT,     /* no response byte within the read timeout while reading the content */
    TT_UP_SEND_TIMEOUT,     /* the upstream did not accept request bytes within the send timeout */
    TT_UP_INVALID,          /* not a valid HTTP/1.x response (or a framing a proxy must not guess) */
    TT_UP_TLS_ERROR,        /* the TLS handshake failed (certificate, protocol) */
    TT_UP__COUNT
} tt_up_err_t;

/** Static name ("connect_refused", "reset", ...). */
const char *tt_up_err_name(tt_up_err_t e);

/** Timeouts of one upstream, ms. */
typedef struct tt_up_timeouts {
    uint64_t connect_ms;
    uint64_t response_ms; /* request fully sent -> response head complete */
    uint64_t read_ms;     /* between reads of response content */
    uint64_t send_ms;     /* between writes the upstream accepts */
} tt_up_timeouts_t;

typedef struct tt_upconn tt_upconn_t;

/** What a connection's socket holds when it should hold nothing: after a response's last byte
 *  (tt_upconn_settle) or while parked (tt_upconn_check_parked, on_parked_event). */
typedef enum tt_up_sock {
    TT_UP_SOCK_QUIET = 0, /* nothing (EAGAIN): fit for another exchange */
    TT_UP_SOCK_STRAY,     /* bytes that belong to no exchange: the upstream frames differently (RFC 9112 9.3) */
    TT_UP_SOCK_CLOSED,    /* FIN, RST or another socket error */
} tt_up_sock_t;

/**
 * The pool's bookkeeping of one connection (pool.h). Only pool.c writes it; upstream.c unlinks `link` and
 * disarms `timer` when the connection closes, so a closed connection is in no pool list or timer.
 */
typedef struct tt_pool_entry {
    tt_list_t link;          /* in its pool's idle, busy, connecting or canary list */
    tt_timer_t timer;        /* parked: retirement deadline */
    void *owner;             /* the tt_pool_t it belongs to, NULL for a connection without a pool */
    uint64_t lifetime_ms;    /* jittered max lifetime, drawn once; 0 until drawn */
    uint64_t retire_at_ms;   /* parked: when `timer` retires it */
    uint64_t server_ms;      /* parked: the server's idle timeout its deadline derives from, 0 unknown */
    uint64_t checked_out_ms; /* busy: since when */
    const char *label;       /* busy: the route that holds it (leak reports); static or outliving it */
    uint8_t retire_reason;   /* parked: tt_pool_retire_t of `retire_at_ms` (kept while busy: the last one) */
    uint8_t canary;          /* 0, or the tt_pool canary kind: kept out of service to see when the server closes it */
    bool known;              /* parked: the deadline rests on a hinted or learned server timeout */
    bool took_parked;        /* busy: taken from the parked ones (reused), not opened for this exchange */
    bool request_canary;     /* busy: taken past its deadline by a replayable request (canary_requests) */
    bool leak_warned;
    tt_addr_t addr; /* the server address it was opened to (a name's current set may move on: DNS) */
} tt_pool_entry_t;

/** What the current user of a connection hears; every callback may close the connection. */
typedef struct tt_upconn_ops {
    /** The connect finished: TT_UP_OK or a connect error (the connection is then closed and freed). */
    void (*on_connect)(tt_upconn_t *u, tt_up_err_t err);
    /** A response head: interim (1xx) or final. `res` and its views are valid during the call only. */
    void (*on_head)(tt_upconn_t *u, const tt_h1_response_t *res);
    /** Response content, decoded from its framing; valid during the call. */
    void (*on_body)(tt_upconn_t *u, const char *data, size_t len);
    /** The response is complete; `trailers` are its trailer field lines (chunked), valid during the call. */
    void (*on_done)(tt_upconn_t *u, tt_str_t trailers);
    /** The exchange failed; the connection must be closed (tt_upconn_close) by the callee. */
    void (*on_error)(tt_upconn_t *u, tt_up_err_t err);
    /** Request output fell below its high-water mark after tt_upconn_send() returned false. */
    void (*on_drain)(tt_upconn_t *u);
    /** While parked: the peer sent bytes that belong to no exchange (TT_UP_SOCK_STRAY, already read and
     *  dropped) or closed or reset the connection (TT_UP_SOCK_CLOSED). Never called with TT_UP_SOCK_QUIET: a
     *  wake-up that brings nothing (a TLS session ticket) stays inside. */
    void (*on_parked_event)(tt_upconn_t *u, tt_up_sock_t what);
} tt_upconn_ops_t;

/** Connection states. */
enum tt_upconn_state {
    TT_UPCONN_CONNECTING,
    TT_UPCONN_TLS, /* TCP connected, TLS handshake under way */
    TT_UPCONN_READY,
    TT_UPCONN_BUSY,
    TT_UPCONN_PARKED,
    TT_UPCONN_TUNNEL, /* after a 101: a side of a byte tunnel (tt_upconn_to_tunnel) */
    TT_UPCONN_CLOSED
};

/** A client connection. Fields without '_' may be read by users; the pool uses the `pool_*` ones. */
struct tt_upconn {
    tt_io_t io;
    tt_timer_t _timer;
    tt_loop_t *loop;
    tt_bufpool_t *_bufs;
    const tt_upconn_ops_t *_ops;
    void *data; /* the current user's pointer */
    const tt_up_timeouts_t *_to;
    tt_h1_response_t *_res; /* parse target, shared per worker */
    tt_buf_t _in;
    tt_buf_t _out;
    tt_buf_t _trailers;
    tt_transport_t *tr;       /* tt_transport_tcp, or TLS once connected */
    tt_tls_client_t *_tls;    /* TLS to the upstream, NULL for plain */
    void *_tls_session;       /* session to offer for resumption: a reference of ours until the handshake */
    bool tls_resumed;         /* the TLS handshake resumed a session */
    bool tls_verify_failed;   /* the TLS handshake failed on the certificate check (see tls_error) */
    const char *tls_error;    /* static: why the TLS handshake failed (tt_tls_failure), else NULL */
    uint64_t tcp_done_us;     /* CLOCK_MONOTONIC us when TCP connected, before any TLS handshake; 0 until then */
    uint64_t handshake_us;    /* connect (and TLS handshake) duration, us; 0 until the connection is ready */
    int64_t rtt_ms;           /* this exchange: loop-clock ms from the whole request written to the first response
                               * byte (a round trip plus the server's time to answer); -1 until known */
    uint8_t last_err;         /* tt_up_err_t of the last failure (on_error, on_connect), TT_UP_OK before any */
    uint64_t id;              /* unique per process */
    uint64_t created_ms;      /* when the connect started */
    uint64_t parked_ms;       /* when it last became idle (loop clock, ms); 0 until it is first parked */
    uint32_t requests;        /* exchanges started on it */
    uint8_t state;            /* enum tt_upconn_state */
    bool got_bytes;           /* the current exchange received at least one response byte */
    bool persistent;          /* the last final response's version, Connection field and framing allow another
                                 exchange (RFC 9112 9.3): a fact of the response, not a decision to reuse */
    bool hint_seen;           /* the last response carried Keep-Alive: timeout= */
    uint64_t hint_timeout_ms; /* its value */
    int64_t hint_max;         /* Keep-Alive: max= of the last response, -1 when absent */
    /* private exchange state */
    bool _head_request;
    bool _upgrade;        /* the request asked to switch protocols: a 101 is the start of a tunnel */
    tt_tunnel_t *_tunnel; /* TT_UPCONN_TUNNEL: the tunnel its socket's events go to; NULL in stream mode */
    bool _shut_pending;   /* stream mode: shut our direction once _out is written */
    bool _shut;
    uint64_t _idle_ms;   /* stream mode: idle timeout */
    uint64_t _active_ms; /* stream mode: last byte moved either way */
    bool _head_done;
    bool _close_delimited;
    bool _chunked;
    bool _paused;
    bool _req_ended;
    bool _rd_ready;
    bool _peer_hup; /* the poller reported the upstream's FIN, perhaps with bytes still unread */
    uint8_t _found; /* tt_up_sock_t: stray bytes or a close found (and consumed) by a settle read; sticky */
    bool _wr_blocked;
    bool _want_drain;
    uint8_t _pending_err; /* a send failed inside tt_upconn_send: reported at the end of the turn */
    bool _sent_stamped;   /* _sent_ms holds when the whole request was written */
    uint64_t _sent_ms;
    uint64_t _start_us; /* CLOCK_MONOTONIC us when the connect started */
    int64_t _body_left;
    uint32_t _last_len;
    tt_h1_chunked_t _chunk;
    tt_defer_t _free_later;
    tt_defer_t _resume;
    tt_defer_t _error_later;
    tt_pool_entry_t pool; /* written by pool.c only */
};

/**
 * Allocates a connection and starts a non-blocking connect to `addr` with TCP_NODELAY and TCP keepalive
 * `ka` (NULL: off); `ops->on_connect` reports the outcome. `res` is the response parse target (a worker
 * scratch, not owned). Returns the connection, or NULL with `*err` set when the connect failed at once.
 */
tt_upconn_t *tt_upconn_connect(tt_loop_t *loop, tt_bufpool_t *bufs, tt_h1_response_t *res, const tt_addr_t *addr,
                               const tt_tcp_keepalive_t *ka, const tt_up_timeouts_t *to, const tt_upconn_ops_t *ops,
                               void *data, tt_up_err_t *err);
/**
 * Makes a connection that is still connecting speak TLS once TCP is up: client context `tls`, offering
 * `session` (from tt_tls_take_session, may be NULL): the connection takes its own reference, so the caller
 * may free its own at any time. The connect timeout covers the handshake; a failed handshake reports
 * TT_UP_TLS_ERROR to on_connect.
 */
void tt_upconn_set_tls(tt_upconn_t *u, tt_tls_client_t *tls, void *session);
/** Hands the connection to a new user (`ops`, `data`) without changing its state. */
void tt_upconn_set_user(tt_upconn_t *u, const tt_upconn_ops_t *ops, void *data);
/** Starts an exchange on a ready or parked connection; `head_request`: the response has no content. */
void tt_upconn_begin(tt_upconn_t *u, bool head_request);
/** Queues request bytes (copied) and writes what the socket takes. False: above the high-water mark,
 *  wait for on_drain -- or the send failed, which on_error reports at the end of the loop turn: this call
 *  never runs a callback, so the caller's state survives it. */
bool tt_upconn_send(tt_upconn_t *u, const void *data, size_t len);
/** The whole request is queued: the response timeout starts once it is sent. */
void tt_upconn_end_request(tt_upconn_t *u);
/** After tt_upconn_begin(): the request carries Upgrade (RFC 9110 7.8), so a 101 is a valid answer. Without it a
 *  101 fails the exchange with TT_UP_INVALID. On a 101, on_head reports it with the connection already out of the
 *  exchange (state TT_UPCONN_TUNNEL, no timer armed): the user either hands it to a tunnel (tt_upconn_to_tunnel)
 *  or closes it. */
void tt_upconn_expect_upgrade(tt_upconn_t *u);
/** Makes the connection, after its 101, the upstream side of tunnel `t`: the bytes read after the 101 head go to
 *  the tunnel, the buffers go back, every later event on the socket goes to tt_tunnel_on_io(). The connection still
 *  owns its socket: the user closes it (tt_upconn_close) when the tunnel ends. */
void tt_upconn_to_tunnel(tt_upconn_t *u, tt_tunnel_t *t);
/**
 * Stream mode, after a 101 (instead of tt_upconn_to_tunnel, for a client side that is not a socket: an HTTP/2
 * stream, RFC 8441): every byte read after the 101 head reaches on_body as it comes (tt_upconn_pause holds it
 * back), tt_upconn_send writes raw bytes (on_drain as usual), the upstream's end of stream reaches on_done, a
 * failure on_error; no byte either way for `idle_ms` is on_error(TT_UP_READ_TIMEOUT). Bytes already read are
 * delivered at the end of the loop turn.
 */
void tt_upconn_to_stream(tt_upconn_t *u, uint64_t idle_ms);
/** Stream mode: ends our direction (FIN, or TLS close_notify then FIN) once the queued bytes are written. */
void tt_upconn_shutdown_write(tt_upconn_t *u);
/** Stops (true) or resumes (false) reading and delivering response content: backpressure. */
void tt_upconn_pause(tt_upconn_t *u, bool pause);
/** True when the whole request was queued (tt_upconn_end_request) and written before now: false for a
 *  response that came while the request was still going out (an early 413, 401, redirect). */
bool tt_upconn_request_sent(const tt_upconn_t *u);
/**
 * After on_done (or on a connection that never had an exchange): what the socket holds after the response.
 * Known without a syscall when the last read came back short (the socket was empty and any later byte raises
 * a new edge) or bytes after the response are already buffered; otherwise (the last read filled the buffer,
 * or readiness was reported) one non-blocking read tells, and whatever it reads is dropped: such bytes can
 * belong to no exchange. Only a QUIET connection may be parked.
 */
tt_up_sock_t tt_upconn_settle(tt_upconn_t *u);
/** The exchange left the connection fit for another, as far as the connection can tell: `persistent`, the
 *  request sent, and tt_upconn_settle() QUIET. For users without a pool (probe, bench); the pool adds its
 *  limits (tt_pool_can_park). May read the socket once (tt_upconn_settle). */
bool tt_upconn_reusable(tt_upconn_t *u);
/** Parks a connection whose exchange completed (and was settled QUIET): buffers go back, the socket stays
 *  watched; what arrives on it reaches ops->on_parked_event. */
void tt_upconn_park(tt_upconn_t *u, const tt_upconn_ops_t *ops, void *data);
/** A parked connection, right before reuse: one non-blocking read tells whether the peer already sent FIN,
 *  RST or stray bytes (RFC 9112 9.3.1). Stray bytes read are dropped (the connection must then be closed).
 *  Works for TLS too: a TLS record that carries no application data (a session ticket) reads as QUIET. */
tt_up_sock_t tt_upconn_check_parked(tt_upconn_t *u);
/** Closes the socket now and frees the connection at the end of the loop turn. */
void tt_upconn_close(tt_upconn_t *u);

#endif
