/* upstream.c -- a client connection: non-blocking connect, request out, framed response in, parked */
#include "client/upstream.h"
#include "core/err.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_HIGH   65536
#define READ_CHUNK 16384
#define HEAD_MAX   (64 * 1024)
#define ROUNDS     16

static _Atomic uint64_t next_id = 1;

static const char *const err_names[TT_UP__COUNT] = {
    [TT_UP_OK] = "ok",
    [TT_UP_CONNECT_REFUSED] = "connect_refused",
    [TT_UP_CONNECT_TIMEOUT] = "connect_timeout",
    [TT_UP_CONNECT_ERROR] = "connect_error",
    [TT_UP_RESET] = "reset",
    [TT_UP_CLOSED] = "closed",
    [TT_UP_RESPONSE_TIMEOUT] = "response_timeout",
    [TT_UP_READ_TIMEOUT] = "read_timeout",
    [TT_UP_SEND_TIMEOUT] = "send_timeout",
    [TT_UP_INVALID] = "invalid_response",
    [TT_UP_TLS_ERROR] = "tls_error",
};

const char *tt_up_err_name(tt_up_err_t e)
{
    return (unsigned)e < TT_UP__COUNT ? err_names[e] : "unknown";
}

static const tt_h1_limits_t response_limits = {.max_target = 8192, .max_field_bytes = 48 * 1024, .max_fields = 100};

static void upconn_run(tt_upconn_t *u);

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The whole request has left: the round trip to the first response byte starts now (loop clock). */
static void stamp_sent(tt_upconn_t *u)
{
    if (u->_sent_stamped || u->got_bytes) return; /* an answer that came first measures no round trip */
    u->_sent_stamped = true;
    u->_sent_ms = tt_loop_now(u->loop);
}

static inline bool closed(const tt_upconn_t *u)
{
    return u->state == TT_UPCONN_CLOSED;
}

/* ---- lifetime ---- */

static void free_cb(tt_defer_t *d)
{
    tt_upconn_t *u = tt_container_of(d, tt_upconn_t, _free_later);
    if (u->_resume._queued || u->_error_later._queued)
        tt_loop_defer(u->loop, &u->_free_later, free_cb);
    else
        free(u);
}

void tt_upconn_close(tt_upconn_t *u)
{
    if (closed(u)) return;
    /* An exchange whose request was not all written (an early answer, an exchange given up): RST rather than FIN,
     * so the request bytes the kernel still holds are dropped instead of sent on to an origin that is done. */
    bool abort = u->io.fd >= 0 && u->requests > 0 && (u->state == TT_UPCONN_BUSY || u->state == TT_UPCONN_READY) &&
                 !tt_upconn_request_sent(u);
    u->state = TT_UPCONN_CLOSED;
    tt_timer_disarm(u->loop, &u->_timer);
    tt_timer_disarm(u->loop, &u->pool.timer);
    tt_list_remove(&u->pool.link);
    tt_buf_release(&u->_in, u->_bufs);
    tt_buf_release(&u->_out, u->_bufs);
    tt_buf_release(&u->_trailers, u->_bufs);
    if (u->_tls_session != NULL) tt_tls_session_free(u->_tls_session);
    u->_tls_session = NULL;
    if (u->tr != NULL && tt_transport_is_tls(u->tr) && u->io.fd >= 0) tt_transport_shutdown(u->tr, u->io.fd);
    tt_transport_free(&u->tr);
    if (abort) tt_sock_set_abortive_close(u->io.fd);
    if (u->io.fd >= 0) close(u->io.fd);
    u->io.fd = -1;
    tt_loop_defer(u->loop, &u->_free_later, free_cb);
}

/* Reports an exchange failure once; the user closes the connection. */
static void fail(tt_upconn_t *u, tt_up_err_t err)
{
    if (closed(u)) return;
    u->last_err = (uint8_t)err;
    tt_timer_disarm(u->loop, &u->_timer);
    if (u->state == TT_UPCONN_CONNECTING || u->state == TT_UPCONN_TLS) {
        tt_upconn_close(u);
        u->_ops->on_connect(u, err);
        return;
    }
    if (u->state == TT_UPCONN_PARKED) {
        u->_ops->on_parked_event(u, TT_UP_SOCK_CLOSED);
        return;
    }
    u->persistent = false;
    u->_ops->on_error(u, err);
}

static void on_timer(tt_timer_t *t)
{
    tt_upconn_t *u = tt_container_of(t, tt_upconn_t, _timer);
    if (u->state == TT_UPCONN_TUNNEL) { /* stream mode: idle, re-armed lazily from the last byte moved */
        uint64_t now = tt_loop_now(u->loop);
        if (now - u->_active_ms < u->_idle_ms)
            tt_timer_arm_at(u->loop, &u->_timer, u->_active_ms + u->_idle_ms);
        else
            fail(u, TT_UP_READ_TIMEOUT);
        return;
    }
    if (u->state == TT_UPCONN_CONNECTING || u->state == TT_UPCONN_TLS)
        fail(u, TT_UP_CONNECT_TIMEOUT);
    else if (u->_out.len > 0)
        fail(u, TT_UP_SEND_TIMEOUT);
    else if (!u->_head_done)
        fail(u, TT_UP_RESPONSE_TIMEOUT);
    else
        fail(u, TT_UP_READ_TIMEOUT);
}

/* ---- response ---- */

/* The response is complete. Whether anything follows it (stray bytes, a FIN) is tt_upconn_settle()'s to
 * tell, for whoever wants to reuse the connection; a pipelining user (probe) treats buffered bytes as the
 * next response instead. */
static void exchange_done(tt_upconn_t *u)
{
    tt_timer_disarm(u->loop, &u->_timer);
    u->state = TT_UPCONN_READY;
    tt_str_t tr = u->_trailers.len >= 2 ? tt_str(tt_buf_data(&u->_trailers), u->_trailers.len - 2) : TT_STR_NULL;
    u->_ops->on_done(u, tr);
    if (!closed(u)) tt_buf_release(&u->_trailers, u->_bufs);
}

static void got_final_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    bool content = tt_h1_response_has_content(res->status, u->_head_request);
    u->_chunked = content && res->chunked;
    u->_close_delimited = content && res->close_delimited;
    u->_body_left = content && !res->chunked && !res->close_delimited ? res->content_length : 0;
    /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty; the connection closes after it. */
    bool te10 = res->minor_version == 0 &&
                (res->chunked || (res->close_delimited && res->content_length < 0 && tt_h1_find_resp_te(res)));
    u->persistent = !(res->conn_tokens & TT_H1_CONN_CLOSE) &&
                    (res->minor_version >= 1 || (res->conn_tokens & TT_H1_CONN_KEEP_ALIVE)) && !u->_close_delimited &&
                    !te10;
    u->hint_seen = false;
    u->hint_max = -1;
    if (res->keep_alive >= 0) {
        uint64_t t = 0;
        int64_t m = -1;
        int found = tt_h1_keepalive_hint(res->fields[res->keep_alive].value, &t, &m);
        u->hint_seen = found & 1;
        u->hint_timeout_ms = t;
        if (found & 2) u->hint_max = m;
    }
    if (u->_chunked) tt_h1_chunked_init(&u->_chunk);
    u->_head_done = true;
    tt_timer_arm(u->loop, &u->_timer, u->_to->read_ms);
}

/* Parses and delivers what the input buffer holds. */
static void process(tt_upconn_t *u)
{
    while (u->state == TT_UPCONN_BUSY && !u->_paused) {
        if (!u->_head_done) {
            if (u->_in.len == 0) return;
            int r = tt_h1_parse_response(tt_buf_data(&u->_in), u->_in.len, u->_last_len, &response_limits, u->_res);
            if (r == TT_INCOMPLETE) {
                u->_last_len = u->_in.len;
                return;
            }
            if (r == TT_BAD || (u->_res->status == 101 && !u->_upgrade)) {
                fail(u, TT_UP_INVALID); /* RFC 9110 15.2.2: no 101 to a request that did not ask for it */
                return;
            }
            u->_last_len = 0;
            if (u->_res->status == 101) {
                /* The exchange is over and what follows the head belongs to the new protocol: it stays in _in
                 * for tt_upconn_to_tunnel. The head's views stay valid: consuming moves no byte. */
                tt_timer_disarm(u->loop, &u->_timer);
                tt_buf_consume(&u->_in, (size_t)r);
                u->persistent = false;
                u->state = TT_UPCONN_TUNNEL;
                u->_ops->on_head(u, u->_res);
                return;
            }
            bool interim = u->_res->status < 200;
            if (!interim) got_final_head(u, u->_res);
            u->_ops->on_head(u, u->_res);
            if (closed(u)) return;
            tt_buf_consume(&u->_in, (size_t)r);
            if (!interim && !u->_chunked && !u->_close_delimited && u->_body_left == 0) {
                exchange_done(u);
                continue; /* on_done may have begun the next exchange (pipelining) */
            }
            continue;
        }
        if (u->_in.len == 0) return;
        const char *p = tt_buf_data(&u->_in);
        if (u->_close_delimited || !u->_chunked) {
            size_t n = u->_close_delimited ? u->_in.len : (size_t)TT_MIN((int64_t)u->_in.len, u->_body_left);
            tt_buf_consume(&u->_in, n);
            if (!u->_close_delimited) u->_body_left -= (int64_t)n;
            u->_ops->on_body(u, p, n);
            if (closed(u)) return;
            if (!u->_close_delimited && u->_body_left == 0) {
                exchange_done(u);
                continue; /* on_done may have begun the next exchange (pipelining) */
            }
            continue;
        }
        tt_str_t data;
        bool in_trailer = tt_h1_chunked_in_trailer(&u->_chunk);
        int64_t n = tt_h1_chunked_decode(&u->_chunk, p, u->_in.len, &data);
        if (n < 0) {
            fail(u, TT_UP_INVALID);
            return;
        }
        if (in_trailer) tt_buf_append(&u->_trailers, u->_bufs, p, (size_t)n);
        tt_buf_consume(&u->_in, (size_t)n);
        if (data.n) {
            u->_ops->on_body(u, data.p, data.n);
            if (closed(u)) return;
        }
        if (u->_chunk.done) {
            exchange_done(u);
            continue; /* on_done may have begun the next exchange (pipelining) */
        }
        if (n == 0) return;
    }
}

/* One read. 1: bytes; 0: nothing now; -1: the connection failed or ended (callbacks ran). */
static int do_read(tt_upconn_t *u)
{
    if (tt_buf_space(&u->_in) < 2048 && !tt_buf_reserve(&u->_in, u->_bufs, READ_CHUNK, HEAD_MAX + READ_CHUNK)) {
        fail(u, TT_UP_INVALID); /* a response head larger than any we accept */
        return -1;
    }
    size_t space = tt_buf_space(&u->_in);
    ssize_t n = tt_transport_read(u->tr, u->io.fd, tt_buf_tail(&u->_in), space);
    if (n > 0) {
        u->_in.len += (uint32_t)n;
        if (!u->got_bytes && u->_sent_stamped && u->state == TT_UPCONN_BUSY)
            u->rtt_ms = (int64_t)(tt_loop_now(u->loop) - u->_sent_ms);
        u->got_bytes = true;
        if (tt_transport_drained(u->tr, n, space, u->_peer_hup)) u->_rd_ready = false;
        if (u->_head_done) tt_timer_arm(u->loop, &u->_timer, u->_to->read_ms);
        return 1;
    }
    if (n == -EAGAIN || n == -EINTR) {
        if (n == -EAGAIN) u->_rd_ready = false;
        return 0;
    }
    if (n == 0 && u->_head_done && u->_close_delimited) {
        process(u); /* deliver what is buffered, then the EOF ends the content */
        if (!closed(u) && u->state == TT_UPCONN_BUSY) {
            exchange_done(u);
        }
        return -1;
    }
    /* -EPROTO: a TLS alert or a bad record after the handshake (a TLS 1.3 server refusing our certificate
     * says so only now) */
    fail(u, n == 0 ? TT_UP_CLOSED : n == -EPROTO ? TT_UP_TLS_ERROR : TT_UP_RESET);
    return -1;
}

/* ---- request ---- */

static void error_later_cb(tt_defer_t *d)
{
    tt_upconn_t *u = tt_container_of(d, tt_upconn_t, _error_later);
    if (!closed(u) && u->state != TT_UPCONN_TUNNEL) fail(u, (tt_up_err_t)u->_pending_err); /* a tunnel's own */
}

/* Writes queued bytes. A failure is reported through fail() at once, or, when `from_api` (inside
 * tt_upconn_send, whose caller still holds its state), at the end of the loop turn. */
static bool flush_ex(tt_upconn_t *u, bool from_api)
{
    while (u->_out.len > 0) {
        ssize_t n = tt_transport_write(u->tr, u->io.fd, tt_buf_data(&u->_out), u->_out.len, false);
        if (n > 0) {
            tt_buf_consume(&u->_out, (size_t)n);
            if (u->state == TT_UPCONN_TUNNEL) {
                u->_active_ms = tt_loop_now(u->loop); /* stream mode: the idle timer is lazy */
                continue;
            }
            if (u->_out.len > 0 || !u->_req_ended) tt_timer_arm(u->loop, &u->_timer, u->_to->send_ms);
            continue;
        }
        if (n == -EINTR) continue;
        if (n == -EAGAIN) {
            u->_wr_blocked = true;
            if (!tt_timer_is_armed(&u->_timer) && u->state != TT_UPCONN_TUNNEL)
                tt_timer_arm(u->loop, &u->_timer, u->_to->send_ms);
            return true;
        }
        if (from_api) {
            u->_pending_err = TT_UP_RESET;
            u->_wr_blocked = true; /* nothing more goes out; the error follows this turn */
            tt_loop_defer(u->loop, &u->_error_later, error_later_cb);
        } else {
            fail(u, TT_UP_RESET);
        }
        return false;
    }
    u->_wr_blocked = false;
    if (u->state == TT_UPCONN_TUNNEL) {
        if (u->_shut_pending && !u->_shut) {
            tt_transport_shutdown(u->tr, u->io.fd);
            u->_shut = true;
        }
        return true;
    }
    if (u->_req_ended && u->state == TT_UPCONN_BUSY) stamp_sent(u);
    if (u->_req_ended && !u->_head_done && u->state == TT_UPCONN_BUSY)
        tt_timer_arm(u->loop, &u->_timer, u->_to->response_ms);
    else if (!u->_req_ended && !u->_head_done)
        tt_timer_disarm(u->loop, &u->_timer); /* waiting for the caller's next bytes, not the upstream */
    return true;
}

static bool flush(tt_upconn_t *u)
{
    return flush_ex(u, false);
}

bool tt_upconn_send(tt_upconn_t *u, const void *data, size_t len)
{
    if (closed(u) || u->_pending_err) return false;
    tt_buf_append(&u->_out, u->_bufs, data, len);
    if (!u->_wr_blocked && !flush_ex(u, true)) return false;
    if (u->_out.len >= OUT_HIGH) {
        u->_want_drain = true;
        return false;
    }
    return true;
}

void tt_upconn_end_request(tt_upconn_t *u)
{
    if (closed(u)) return;
    u->_req_ended = true;
    if (u->_out.len == 0 && u->state == TT_UPCONN_BUSY) stamp_sent(u);
    if (u->_out.len == 0 && !u->_head_done) tt_timer_arm(u->loop, &u->_timer, u->_to->response_ms);
}

/* ---- events ---- */

static void stream_run(tt_upconn_t *u);

static void resume_cb(tt_defer_t *d)
{
    tt_upconn_t *u = tt_container_of(d, tt_upconn_t, _resume);
    if (u->state == TT_UPCONN_BUSY) upconn_run(u);
    if (u->state == TT_UPCONN_TUNNEL && u->_tunnel == NULL) stream_run(u);
}

static void upconn_run(tt_upconn_t *u)
{
    for (int round = 0; u->state == TT_UPCONN_BUSY; round++) {
        if (u->_out.len > 0 && !u->_wr_blocked && !flush(u)) return;
        if (u->_want_drain && u->_out.len < OUT_HIGH / 4) {
            u->_want_drain = false;
            u->_ops->on_drain(u);
            if (closed(u)) return;
        }
        process(u);
        if (u->state != TT_UPCONN_BUSY || u->_paused || !u->_rd_ready) return;
        if (round == ROUNDS) {
            tt_loop_defer(u->loop, &u->_resume, resume_cb);
            return;
        }
        if (do_read(u) < 0) return;
    }
}

/* Stream mode (tt_upconn_to_stream): raw bytes both ways, no framing. */
static void stream_run(tt_upconn_t *u)
{
    for (int round = 0; u->state == TT_UPCONN_TUNNEL; round++) {
        if (u->_out.len > 0 && !u->_wr_blocked && !flush(u)) return;
        if (u->_want_drain && u->_out.len < OUT_HIGH / 4) {
            u->_want_drain = false;
            u->_ops->on_drain(u);
            if (closed(u)) return;
        }
        if (u->_in.len > 0 && !u->_paused) {
            const char *p = tt_buf_data(&u->_in);
            size_t n = u->_in.len;
            tt_buf_consume(&u->_in, n); /* delivered; the memory stays until the next read reuses it */
            u->_ops->on_body(u, p, n);
            if (closed(u) || u->state != TT_UPCONN_TUNNEL) return;
        }
        if (u->_paused || !u->_rd_ready) return;
        if (round == ROUNDS) {
            tt_loop_defer(u->loop, &u->_resume, resume_cb);
            return;
        }
        if (!tt_buf_reserve(&u->_in, u->_bufs, READ_CHUNK, OUT_HIGH)) return;
        size_t space = tt_buf_space(&u->_in);
        ssize_t n = tt_transport_read(u->tr, u->io.fd, tt_buf_tail(&u->_in), space);
        if (n > 0) {
            u->_in.len += (uint32_t)n;
            u->_active_ms = tt_loop_now(u->loop);
            if (tt_transport_drained(u->tr, n, space, u->_peer_hup)) u->_rd_ready = false;
            continue;
        }
        if (n == -EAGAIN) {
            u->_rd_ready = false;
            return;
        }
        if (n == -EINTR) continue;
        if (n == 0) {
            u->_rd_ready = false;
            tt_timer_disarm(u->loop, &u->_timer);
            u->state = TT_UPCONN_READY; /* the exchange is over: only closing is left */
            u->_ops->on_done(u, TT_STR_NULL);
            return;
        }
        fail(u, n == -EPROTO ? TT_UP_TLS_ERROR : TT_UP_RESET);
        return;
    }
}

static void tls_step(tt_upconn_t *u)
{
    int r = tt_tls_handshake(u->tr);
    if (r == 0) return;
    if (r < 0) {
        u->tls_error = tt_tls_failure(u->tr, &u->tls_verify_failed); /* static text: outlives the transport */
        fail(u, TT_UP_TLS_ERROR);
        return;
    }
    tt_timer_disarm(u->loop, &u->_timer);
    u->tls_resumed = tt_tls_resumed(u->tr);
    u->handshake_us = mono_us() - u->_start_us;
    u->state = TT_UPCONN_READY;
    u->_ops->on_connect(u, TT_UP_OK);
}

static void connected(tt_upconn_t *u)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(u->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
        fail(u, err == ECONNREFUSED ? TT_UP_CONNECT_REFUSED : TT_UP_CONNECT_ERROR);
        return;
    }
    u->tcp_done_us = mono_us();
    u->handshake_us = u->tcp_done_us - u->_start_us;
    if (u->_tls != NULL) {
        u->tr = tt_tls_connect(u->_tls, u->io.fd, u->_tls_session); /* SSL_set_session takes its own ref */
        if (u->_tls_session != NULL) tt_tls_session_free(u->_tls_session);
        u->_tls_session = NULL;
        if (u->tr == NULL) {
            u->tr = &tt_transport_tcp;
            fail(u, TT_UP_TLS_ERROR);
            return;
        }
        u->state = TT_UPCONN_TLS; /* the connect timer keeps running: it bounds the handshake too */
        tls_step(u);
        return;
    }
    tt_timer_disarm(u->loop, &u->_timer);
    u->state = TT_UPCONN_READY;
    u->_ops->on_connect(u, TT_UP_OK);
}

/* One non-blocking read of a socket that should have nothing to say (after a response, while parked). What it
 * reads is dropped: such bytes belong to no exchange. */
static tt_up_sock_t read_check(tt_upconn_t *u)
{
    char sink[512];
    for (;;) {
        ssize_t n = tt_transport_read(u->tr, u->io.fd, sink, sizeof(sink));
        if (n == -EINTR) continue;
        if (n == -EAGAIN) return TT_UP_SOCK_QUIET; /* also a TLS record without application data */
        return n > 0 ? TT_UP_SOCK_STRAY : TT_UP_SOCK_CLOSED;
    }
}

static void parked_event(tt_upconn_t *u)
{
    tt_up_sock_t what = read_check(u);
    if (what != TT_UP_SOCK_QUIET) u->_ops->on_parked_event(u, what);
}

static void on_io(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *u = tt_container_of(io, tt_upconn_t, io);
    switch (u->state) {
    case TT_UPCONN_CONNECTING:
        /* Bytes (or a FIN) may come with the connect: noted, so that a settle before any exchange reads them. */
        if (events & TT_EV_READ) u->_rd_ready = true;
        if (events & TT_EV_HUP) u->_peer_hup = true;
        if (events & (TT_EV_WRITE | TT_EV_ERR | TT_EV_HUP)) connected(u);
        return;
    case TT_UPCONN_TLS:
        if (events & TT_EV_ERR)
            fail(u, TT_UP_TLS_ERROR);
        else
            tls_step(u);
        return;
    case TT_UPCONN_PARKED:
        if (events & (TT_EV_READ | TT_EV_HUP | TT_EV_ERR)) parked_event(u);
        return;
    case TT_UPCONN_TUNNEL:
        if (u->_tunnel != NULL) {
            tt_tunnel_on_io(u->_tunnel, TT_TUNNEL_UPSTREAM, events);
            return;
        }
        if (events & TT_EV_ERR) {
            fail(u, TT_UP_RESET);
            return;
        }
        if (events & TT_EV_READ) u->_rd_ready = true;
        if (events & TT_EV_HUP) {
            u->_peer_hup = true;
            u->_rd_ready = true;
        }
        if (events & TT_EV_WRITE) {
            u->_wr_blocked = false;
            if (u->tr->want_write) u->_rd_ready = true;
        }
        stream_run(u);
        return;
    case TT_UPCONN_READY:
        if (events & TT_EV_READ) u->_rd_ready = true;
        if (events & TT_EV_HUP) u->_peer_hup = true;
        return;
    case TT_UPCONN_BUSY:
        if (events & TT_EV_READ) u->_rd_ready = true;
        if (events & TT_EV_HUP) u->_peer_hup = true; /* the FIN may have come with the last bytes */
        if (events & TT_EV_WRITE) {
            u->_wr_blocked = false;
            if (u->tr->want_write) u->_rd_ready = true; /* a TLS read that had to write first */
        }
        upconn_run(u);
        return;
    default: return;
    }
}

/* ---- public ---- */

tt_upconn_t *tt_upconn_connect(tt_loop_t *loop, tt_bufpool_t *bufs, tt_h1_response_t *res, const tt_addr_t *addr,
                               const tt_tcp_keepalive_t *ka, const tt_up_timeouts_t *to, const tt_upconn_ops_t *ops,
                               void *data, tt_up_err_t *err)
{
    bool in_progress = false;
    int fd = tt_sock_connect(addr, ka, &in_progress);
    if (fd < 0) {
        *err = fd == -ECONNREFUSED ? TT_UP_CONNECT_REFUSED : TT_UP_CONNECT_ERROR;
        return NULL;
    }
    tt_upconn_t *u = tt_calloc(1, sizeof(*u));
    u->io.fd = fd;
    u->io.cb = on_io;
    u->tr = &tt_transport_tcp;
    tt_timer_init(&u->_timer, on_timer);
    u->loop = loop;
    u->_bufs = bufs;
    u->_res = res;
    u->_to = to;
    u->_ops = ops;
    u->data = data;
    u->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    tt_timer_init(&u->pool.timer, NULL);
    tt_list_init(&u->pool.link);
    u->created_ms = tt_loop_now(loop);
    u->_start_us = mono_us();
    u->hint_max = -1;
    u->rtt_ms = -1;
    u->state = TT_UPCONN_CONNECTING;
    if (tt_io_start(loop, &u->io, TT_EV_READ | TT_EV_WRITE | TT_EV_EDGE) != 0) {
        close(fd);
        free(u);
        *err = TT_UP_CONNECT_ERROR;
        return NULL;
    }
    if (in_progress)
        tt_timer_arm(loop, &u->_timer, to->connect_ms);
    else
        u->state = TT_UPCONN_CONNECTING; /* loopback may finish at once; the EPOLLOUT edge reports it */
    return u;
}

void tt_upconn_set_tls(tt_upconn_t *u, tt_tls_client_t *tls, void *session)
{
    u->_tls = tls;
    /* Our own reference: the pool may replace (and free) its newest session before TCP is up. */
    if (u->_tls_session != NULL) tt_tls_session_free(u->_tls_session);
    u->_tls_session = session != NULL ? tt_tls_session_ref(session) : NULL;
}

void tt_upconn_set_user(tt_upconn_t *u, const tt_upconn_ops_t *ops, void *data)
{
    u->_ops = ops;
    u->data = data;
}

void tt_upconn_begin(tt_upconn_t *u, bool head_request)
{
    TT_BUG_ON(u->state != TT_UPCONN_READY && u->state != TT_UPCONN_PARKED);
    u->state = TT_UPCONN_BUSY;
    u->requests++;
    u->got_bytes = false;
    u->persistent = false;
    u->_head_request = head_request;
    u->_upgrade = false;
    u->_head_done = false;
    u->_close_delimited = false;
    u->_chunked = false;
    u->_paused = false;
    u->_req_ended = false;
    u->_want_drain = false;
    u->_pending_err = 0;
    u->_sent_stamped = false;
    u->rtt_ms = -1;
    u->_found = TT_UP_SOCK_QUIET;
    u->_body_left = 0;
    u->_last_len = 0;
    tt_timer_disarm(u->loop, &u->_timer);
    /* Nothing is expected before the request goes out, and what a parked connection received was handled
     * (idle watch, peek): the response's EPOLLIN edge starts the reading, saving a read() per request.
     * Bytes already buffered (a pipelining client's next response) get no new edge: process them. */
    u->_rd_ready = u->_peer_hup; /* a FIN already reported gets no new edge either: read it */
    if (u->_in.len > 0 || u->_peer_hup) tt_loop_defer(u->loop, &u->_resume, resume_cb);
}

void tt_upconn_expect_upgrade(tt_upconn_t *u)
{
    u->_upgrade = true;
}

void tt_upconn_to_tunnel(tt_upconn_t *u, tt_tunnel_t *t)
{
    TT_BUG_ON(u->state != TT_UPCONN_TUNNEL);
    u->_tunnel = t;
    tt_tunnel_attach(t, TT_TUNNEL_UPSTREAM, u->io.fd, u->tr, u->_peer_hup, u->_in.len ? tt_buf_data(&u->_in) : NULL,
                     u->_in.len);
    tt_buf_release(&u->_in, u->_bufs);
    tt_buf_release(&u->_out, u->_bufs);
    tt_buf_release(&u->_trailers, u->_bufs);
}

void tt_upconn_to_stream(tt_upconn_t *u, uint64_t idle_ms)
{
    TT_BUG_ON(u->state != TT_UPCONN_TUNNEL);
    u->_tunnel = NULL;
    u->_idle_ms = TT_MAX(idle_ms, 1);
    u->_active_ms = tt_loop_now(u->loop);
    u->_rd_ready = true; /* edge-triggered: bytes may wait that raised their edge already */
    tt_timer_arm(u->loop, &u->_timer, u->_idle_ms);
    tt_loop_defer(u->loop, &u->_resume, resume_cb);
}

void tt_upconn_shutdown_write(tt_upconn_t *u)
{
    if (closed(u) || u->state != TT_UPCONN_TUNNEL || u->_shut) return;
    u->_shut_pending = true;
    if (u->_out.len == 0) {
        tt_transport_shutdown(u->tr, u->io.fd);
        u->_shut = true;
    }
}

void tt_upconn_pause(tt_upconn_t *u, bool pause)
{
    if (closed(u) || u->_paused == pause) return;
    u->_paused = pause;
    if (!pause && (u->state == TT_UPCONN_BUSY || u->state == TT_UPCONN_TUNNEL))
        tt_loop_defer(u->loop, &u->_resume, resume_cb);
}

bool tt_upconn_request_sent(const tt_upconn_t *u)
{
    return u->_req_ended && u->_out.len == 0 && !u->_pending_err;
}

tt_up_sock_t tt_upconn_settle(tt_upconn_t *u)
{
    if (closed(u)) return TT_UP_SOCK_CLOSED;
    if (u->_found != TT_UP_SOCK_QUIET) return (tt_up_sock_t)u->_found; /* what an earlier read consumed */
    if (u->_in.len > 0) return TT_UP_SOCK_STRAY;                       /* read along with the response's end */
    if (u->_peer_hup) return TT_UP_SOCK_CLOSED;
    if (!u->_rd_ready) return TT_UP_SOCK_QUIET; /* the last read came back short: the socket was empty */
    tt_up_sock_t s = read_check(u);
    if (s == TT_UP_SOCK_QUIET) u->_rd_ready = false;
    u->_found = (uint8_t)s;
    return s;
}

bool tt_upconn_reusable(tt_upconn_t *u)
{
    return u->persistent && tt_upconn_request_sent(u) && tt_upconn_settle(u) == TT_UP_SOCK_QUIET;
}

tt_up_sock_t tt_upconn_check_parked(tt_upconn_t *u)
{
    TT_BUG_ON(u->state != TT_UPCONN_PARKED);
    return read_check(u);
}

void tt_upconn_park(tt_upconn_t *u, const tt_upconn_ops_t *ops, void *data)
{
    TT_BUG_ON(u->state != TT_UPCONN_READY);
    u->_ops = ops;
    u->data = data;
    u->state = TT_UPCONN_PARKED;
    u->parked_ms = tt_loop_now(u->loop);
    tt_timer_disarm(u->loop, &u->_timer);
    tt_buf_release(&u->_in, u->_bufs);
    tt_buf_release(&u->_out, u->_bufs);
    tt_buf_release(&u->_trailers, u->_bufs);
}
