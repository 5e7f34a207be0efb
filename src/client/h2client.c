/* h2client.c -- an HTTP/2 client connection: nghttp2 does frames, HPACK and flow control; tether the I/O
 *
 * Like the server side (h2_conn.c), bytes move between the transport and nghttp2's mem_recv/mem_send
 * through the connection's buffers, edge-triggered. Our own stream records (recycled per connection)
 * exist because nghttp2 forgets its streams silently when a session is deleted: when a connection fails,
 * its open streams are ended from that list, each reported once.
 */
#include "client/h2client.h"
#include "core/err.h"
#include "core/slab_nghttp2.h"
#include "core/list.h"
#include "core/timer.h"
#include "http/h2_fields.h"
#include "net/sock.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define OUT_HIGH       65536 /* bytes queued for the socket before nghttp2 is asked for more */
#define READ_CHUNK     16384
#define ROUNDS         16 /* read/write rounds per event before yielding to the loop */
#define DEFAULT_WINDOW (1u << 20)
#define BODY_HIGH      (128u * 1024) /* request content queued per stream before tt_h2c_send says "full" */

enum h2c_state { H2C_CONNECTING, H2C_TLS, H2C_READY, H2C_CLOSED };

typedef struct h2c_stream {
    tt_list_t link; /* in c->streams while open, c->spare when recycled */
    int32_t id;
    void *user; /* NULL once cancelled */
    bool head_seen;
    bool block_trailers; /* the header block now arriving is the trailer section */
    bool paused;         /* manual_window: stream credit held back */
    bool body_end;       /* tt_h2c_end: the request content is complete */
    bool deferred;       /* the data provider said NGHTTP2_ERR_DEFERRED: resume when content comes */
    bool want_drain;     /* tt_h2c_send returned false */
    bool drain_due;      /* ... and the queue fell below the mark: on_drain after the round */
    int status;          /* :status of the header block now arriving */
    uint64_t unconsumed; /* manual_window: bytes received while paused, credit not yet returned */
    uint64_t sent_ms;    /* loop time content waiting in `out` last moved on (send_ms) */
    tt_buf_t fields;     /* the response header block (or trailers) being collected */
    tt_buf_t out;        /* request content queued */
    tt_buf_t trailers;   /* request trailer lines */
} h2c_stream_t;

struct tt_h2c {
    tt_io_t io;
    tt_timer_t timer; /* connect deadline, then response deadline (re-armed lazily from last_frame_ms) */
    tt_loop_t *loop;
    tt_bufpool_t *bufs;
    const tt_h2c_ops_t *ops;
    void *data;
    tt_h2c_conf_t conf;
    tt_transport_t *tr;
    nghttp2_session *s;
    tt_list_t streams; /* open, in submission order */
    tt_list_t spare;
    uint32_t nstreams;
    tt_buf_t in;
    tt_buf_t out;
    uint8_t state;
    bool rd_ready;
    bool wr_blocked;
    bool peer_hup;
    bool in_run;
    bool goaway;
    bool drain_due; /* some stream's drain_due is set */
    bool ping_out;  /* a liveness PING awaits its ACK */
    bool settings_seen;
    bool sent_error; /* nghttp2 ended the session with a GOAWAY carrying an error: the server broke the protocol */
    bool tls_resumed;
    bool tls_verify_failed;
    const char *tls_error;
    int32_t goaway_last_id;
    uint64_t last_frame_ms;
    uint64_t ping_sent_ms;
    uint64_t idle_since_ms;
    uint64_t id;
    uint32_t requests;
    tt_timer_t ping_timer; /* PING liveness: next PING, or the deadline of the one sent */
    tt_timer_t send_timer; /* send_ms: the next deadline of bytes waiting (re-armed lazily) */
    uint64_t wrote_ms;     /* loop time the socket last took bytes, or the write began to wait */
    tt_defer_t kick;
    tt_defer_t free_later;
};

static const char *const err_names[TT_H2C__COUNT] = {
    [TT_H2C_OK] = "ok",
    [TT_H2C_CONNECT_REFUSED] = "connect_refused",
    [TT_H2C_CONNECT_TIMEOUT] = "connect_timeout",
    [TT_H2C_CONNECT_ERROR] = "connect_error",
    [TT_H2C_TLS_ERROR] = "tls_error",
    [TT_H2C_NO_H2] = "no_h2",
    [TT_H2C_CLOSED] = "closed",
    [TT_H2C_RESET] = "reset",
    [TT_H2C_TIMEOUT] = "timeout",
    [TT_H2C_PROTOCOL] = "protocol_error",
    [TT_H2C_RST_STREAM] = "rst_stream",
    [TT_H2C_GOAWAY] = "goaway",
    [TT_H2C_PING_TIMEOUT] = "ping_timeout",
    [TT_H2C_SEND_TIMEOUT] = "send_timeout",
    [TT_H2C_WINDOW_TIMEOUT] = "window_timeout",
    [TT_H2C_DOWN] = "server_down",
};

const char *tt_h2c_err_name(tt_h2c_err_t e)
{
    return (unsigned)e < TT_H2C__COUNT ? err_names[e] : "unknown";
}

static void h2c_run(tt_h2c_t *c);

/* ---- lifetime ---- */

static void free_cb(tt_defer_t *d)
{
    tt_h2c_t *c = tt_container_of(d, tt_h2c_t, free_later);
    if (c->kick._queued) {
        tt_loop_defer(c->loop, &c->free_later, free_cb);
        return;
    }
    /* The session is deleted here, never under one of its own callbacks. */
    if (c->s != NULL) nghttp2_session_del(c->s);
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &c->spare) free(tt_container_of(pos, h2c_stream_t, link));
    tt_list_foreach_safe(pos, tmp, &c->streams) free(tt_container_of(pos, h2c_stream_t, link));
    free(c);
}

/* Marks the connection closed and gives back its socket and buffers; streams stay listed for the caller. */
static void shut(tt_h2c_t *c)
{
    c->state = H2C_CLOSED;
    tt_timer_disarm(c->loop, &c->timer);
    tt_timer_disarm(c->loop, &c->ping_timer);
    tt_timer_disarm(c->loop, &c->send_timer);
    tt_buf_release(&c->in, c->bufs);
    tt_buf_release(&c->out, c->bufs);
    if (c->tr != NULL && tt_transport_is_tls(c->tr) && c->io.fd >= 0) tt_transport_shutdown(c->tr, c->io.fd);
    tt_transport_free(&c->tr);
    if (c->io.fd >= 0) close(c->io.fd);
    c->io.fd = -1;
    tt_loop_defer(c->loop, &c->free_later, free_cb);
}

void tt_h2c_close(tt_h2c_t *c)
{
    if (c->state == H2C_CLOSED) return;
    shut(c);
}

static void stream_recycle(tt_h2c_t *c, h2c_stream_t *st)
{
    tt_buf_release(&st->fields, c->bufs);
    tt_buf_release(&st->out, c->bufs);
    tt_buf_release(&st->trailers, c->bufs);
    c->idle_since_ms = tt_loop_now(c->loop);
    tt_list_remove(&st->link);
    tt_list_push_head(&c->spare, &st->link);
    c->nstreams--;
}

/* Ends the connection by itself: a connect failure, or every open stream ends with `err`, then on_close. */
static void h2c_fail(tt_h2c_t *c, tt_h2c_err_t err)
{
    if (c->state == H2C_CLOSED) return;
    bool connecting = c->state != H2C_READY;
    shut(c);
    if (connecting) {
        c->ops->on_connect(c, err);
        return;
    }
    tt_h2c_err_t stream_err = c->goaway && err != TT_H2C_OK ? TT_H2C_GOAWAY : err;
    if (stream_err == TT_H2C_OK) stream_err = TT_H2C_CLOSED;
    while (!tt_list_is_empty(&c->streams)) {
        h2c_stream_t *st = tt_container_of(tt_list_first(&c->streams), h2c_stream_t, link);
        void *user = st->user;
        stream_recycle(c, st);
        c->ops->on_stream_end(c, user, stream_err, 0);
    }
    c->ops->on_close(c, err);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    (void)user;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL) return 0;
    st->block_trailers = st->head_seen;
    st->status = 0;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)flags;
    tt_h2c_t *c = user;
    if (c->state == H2C_CLOSED || frame->hd.type != NGHTTP2_HEADERS) return 0;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL) return 0;
    if (namelen > 0 && name[0] == ':') {
        if (st->block_trailers || namelen != 7 || memcmp(name, ":status", 7) != 0) return 0;
        int status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++) status = status * 10 + (value[i] - '0');
        if (valuelen != 3 || status < 100 || status > 999) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets */
        st->status = status;
        return 0;
    }
    if (c->ops->on_response == NULL && !st->block_trailers) return 0;
    if (c->ops->on_trailers == NULL && st->block_trailers) return 0;
    /* nghttp2 checked: lower-case, no CR, LF or NUL */
    tt_buf_append_field(&st->fields, c->bufs, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

/* A whole header block of stream `st`: an interim or final response head, or the trailers. */
static void headers_done(tt_h2c_t *c, h2c_stream_t *st)
{
    tt_str_t f = st->fields.len ? tt_str(tt_buf_data(&st->fields), st->fields.len) : TT_STR_NULL;
    void *u = st->user;
    if (st->block_trailers) {
        if (u != NULL && c->ops->on_trailers) c->ops->on_trailers(c, u, f);
    } else if (st->status >= 200) {
        st->head_seen = true;
        if (u != NULL && c->ops->on_head) c->ops->on_head(c, u, st->status);
        if (u != NULL && c->state != H2C_CLOSED && c->ops->on_response) c->ops->on_response(c, u, st->status, f);
    } else if (st->status >= 100) {
        if (u != NULL && c->ops->on_response) c->ops->on_response(c, u, st->status, f);
    }
    if (c->state != H2C_CLOSED) tt_buf_release(&st->fields, c->bufs);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    (void)s;
    tt_h2c_t *c = user;
    c->last_frame_ms = tt_loop_now(c->loop);
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->settings_seen = true;
        if (c->ops->on_settings) c->ops->on_settings(c);
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* Streams above last_stream_id are closed by nghttp2 with REFUSED_STREAM: see on_stream_close. */
        c->goaway = true;
        c->goaway_last_id = frame->goaway.last_stream_id;
        if (c->ops->on_goaway) c->ops->on_goaway(c, frame->goaway.error_code, frame->goaway.last_stream_id);
    } else if (frame->hd.type == NGHTTP2_HEADERS) {
        h2c_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st != NULL) headers_done(c, st);
    } else if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) && c->ping_out) {
        uint64_t sent;
        memcpy(&sent, frame->ping.opaque_data, sizeof(sent));
        c->ping_out = false;
        uint64_t now = tt_loop_now_us(c->loop);
        if (c->ops->on_ping_rtt && now >= sent) c->ops->on_ping_rtt(c, now - sent);
        if (c->state == H2C_READY) tt_timer_arm(c->loop, &c->ping_timer, c->conf.ping_ms);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    tt_h2c_t *c = user;
    if (c->state == H2C_CLOSED) return 0;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (c->conf.manual_window) nghttp2_session_consume_connection(s, len); /* one stream never stalls the others */
    if (st == NULL) return 0;
    if (st->user != NULL && c->ops->on_data) c->ops->on_data(c, st->user, (const char *)data, len);
    if (c->state == H2C_CLOSED || !c->conf.manual_window) return 0; /* else nghttp2 returns the credit itself */
    if (st->paused && st->user != NULL)
        st->unconsumed += len;
    else
        nghttp2_session_consume_stream(s, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user)
{
    tt_h2c_t *c = user;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL || c->state == H2C_CLOSED) return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    void *u = st->user;
    bool head = st->head_seen;
    stream_recycle(c, st);
    tt_h2c_err_t err = TT_H2C_OK;
    if (error_code == NGHTTP2_REFUSED_STREAM && c->goaway && id > c->goaway_last_id)
        err = TT_H2C_GOAWAY;
    else if (error_code != NGHTTP2_NO_ERROR || !head)
        err = TT_H2C_RST_STREAM; /* a reset, or the stream ended without a final response */
    c->ops->on_stream_end(c, u, err, error_code);
    return 0;
}

/* A request nghttp2 did not send (a GOAWAY arrived after it was submitted). nghttp2 then closes the stream
 * with REFUSED_STREAM, and on_stream_close reports it; only a stream nghttp2 does not know is reported here. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *frame, int lib_error, void *user)
{
    (void)lib_error;
    tt_h2c_t *c = user;
    if (c->state == H2C_CLOSED || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        nghttp2_session_get_stream_user_data(s, frame->hd.stream_id) != NULL)
        return 0;
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &c->streams)
    {
        h2c_stream_t *st = tt_container_of(pos, h2c_stream_t, link);
        if (st->id != frame->hd.stream_id) continue;
        void *u = st->user;
        stream_recycle(c, st);
        c->ops->on_stream_end(c, u, c->goaway ? TT_H2C_GOAWAY : TT_H2C_RST_STREAM, 0);
        break;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    (void)s;
    tt_h2c_t *c = user;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) c->sent_error = true;
    return 0;
}

/* One set for every thread: nghttp2 copies it into each session, and never writes to it. */
static nghttp2_session_callbacks *shared_callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void callbacks_init(void)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) tt_fatal("nghttp2_session_callbacks_new: out of memory");
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    shared_callbacks = cb;
}

static const nghttp2_session_callbacks *callbacks(void)
{
    pthread_once(&callbacks_once, callbacks_init);
    return shared_callbacks;
}

/* ---- I/O ---- */

static void kick_cb(tt_defer_t *d)
{
    tt_h2c_t *c = tt_container_of(d, tt_h2c_t, kick);
    if (c->state == H2C_READY) h2c_run(c);
}

/* Feeds what the socket has to nghttp2. False when the connection ended. */
static bool h2c_read(tt_h2c_t *c)
{
    if (!tt_buf_reserve(&c->in, c->bufs, READ_CHUNK, READ_CHUNK)) tt_fatal("h2 client: read buffer");
    size_t space = tt_buf_space(&c->in);
    ssize_t n = tt_transport_read(c->tr, c->io.fd, tt_buf_tail(&c->in), space);
    if (n == -EAGAIN) {
        c->rd_ready = false;
        return true;
    }
    if (n == -EINTR) return true;
    if (n <= 0) {
        h2c_fail(c, n == 0 && c->nstreams == 0 ? TT_H2C_OK : n == 0 ? TT_H2C_CLOSED : TT_H2C_RESET);
        return false;
    }
    if (tt_transport_drained(c->tr, n, space, c->peer_hup)) c->rd_ready = false;
    ssize_t r = nghttp2_session_mem_recv(c->s, (const uint8_t *)tt_buf_tail(&c->in), (size_t)n);
    if (c->state == H2C_CLOSED) return false;
    if (r < 0) {
        h2c_fail(c, TT_H2C_PROTOCOL);
        return false;
    }
    return true;
}

/* send_ms: the timer runs while bytes wait (for the socket, or for a stream's window); it is re-armed lazily. */
static void arm_send(tt_h2c_t *c)
{
    if (c->conf.send_ms && !tt_timer_is_armed(&c->send_timer)) tt_timer_arm(c->loop, &c->send_timer, c->conf.send_ms);
}

/* Pulls frames from nghttp2 and writes them. False when the connection ended. */
static bool h2c_write(tt_h2c_t *c)
{
    for (;;) {
        while (c->out.len < OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (c->state == H2C_CLOSED) return false;
            if (n < 0) {
                h2c_fail(c, TT_H2C_PROTOCOL);
                return false;
            }
            if (n == 0) break;
            tt_buf_append(&c->out, c->bufs, data, (size_t)n);
        }
        if (c->out.len == 0) break;
        ssize_t n = tt_transport_write(c->tr, c->io.fd, tt_buf_data(&c->out), c->out.len, false);
        if (n == -EAGAIN) {
            if (!c->wr_blocked) c->wrote_ms = tt_loop_now(c->loop); /* the wait for the socket begins */
            c->wr_blocked = true;
            arm_send(c);
            return true;
        }
        if (n == -EINTR) continue;
        if (n < 0) {
            h2c_fail(c, TT_H2C_RESET);
            return false;
        }
        c->wrote_ms = tt_loop_now(c->loop);
        tt_buf_consume(&c->out, (size_t)n);
    }
    c->wr_blocked = false;
    tt_buf_release(&c->out, c->bufs);
    return true;
}

static void h2c_run(tt_h2c_t *c)
{
    c->in_run = true;
    for (int round = 0; round < ROUNDS && c->state == H2C_READY; round++) {
        if (c->rd_ready && !h2c_read(c)) return;
        if (!c->wr_blocked && !h2c_write(c)) return;
        if (!c->rd_ready) break;
    }
    c->in_run = false;
    if (c->state != H2C_READY) return;
    if (c->drain_due) {
        c->drain_due = false;
        tt_list_t *pos, *tmp;
        tt_list_foreach_safe(pos, tmp, &c->streams)
        {
            h2c_stream_t *st = tt_container_of(pos, h2c_stream_t, link);
            if (!st->drain_due) continue;
            st->drain_due = st->want_drain = false;
            if (st->user != NULL && c->ops->on_drain) c->ops->on_drain(c, st->user);
            if (c->state != H2C_READY) return;
        }
    }
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) && c->out.len == 0) {
        /* GOAWAY received and no stream left, or nghttp2 ended a session the server broke */
        h2c_fail(c, c->sent_error ? TT_H2C_PROTOCOL : TT_H2C_OK);
        return;
    }
    if (c->rd_ready) tt_loop_defer(c->loop, &c->kick, kick_cb); /* fairness: more next turn */
    if (c->in.len == 0) tt_buf_release(&c->in, c->bufs);
}

static void kick(tt_h2c_t *c)
{
    if (!c->in_run && c->state == H2C_READY) tt_loop_defer(c->loop, &c->kick, kick_cb);
}

/* ---- connecting ---- */

static void ready(tt_h2c_t *c)
{
    /* the connect timer goes on: it bounds the wait for the server's first SETTINGS too (on_timer) */
    nghttp2_option *opt = NULL;
    if (c->conf.manual_window) {
        if (nghttp2_option_new(&opt) != 0) tt_fatal("nghttp2_option_new: out of memory");
        nghttp2_option_set_no_auto_window_update(opt, 1);
    }
    nghttp2_mem mem = tt_slab_nghttp2_mem(c->conf.slab); /* the session lives and dies on the worker */
    if (nghttp2_session_client_new3(&c->s, callbacks(), c, opt, c->conf.slab ? &mem : NULL) != 0)
        tt_fatal("nghttp2_session_client_new");
    if (opt != NULL) nghttp2_option_del(opt);
    uint32_t window = c->conf.window ? c->conf.window : DEFAULT_WINDOW;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, settings, TT_ARRAY_SIZE(settings));
    nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, (int32_t)window);
    c->state = H2C_READY;
    c->rd_ready = true; /* TLS may hold decrypted bytes already; a read tells */
    c->last_frame_ms = c->idle_since_ms = tt_loop_now(c->loop);
    if (c->conf.ping_ms) tt_timer_arm(c->loop, &c->ping_timer, c->conf.ping_ms);
    c->ops->on_connect(c, TT_H2C_OK);
    if (c->state == H2C_READY) h2c_run(c); /* the preface, SETTINGS and whatever was submitted */
}

static void tls_step(tt_h2c_t *c)
{
    int r = tt_tls_handshake(c->tr);
    if (r == 0) return;
    if (r < 0) {
        c->tls_error = tt_tls_failure(c->tr, &c->tls_verify_failed);
        h2c_fail(c, TT_H2C_TLS_ERROR);
        return;
    }
    c->tls_resumed = tt_tls_resumed(c->tr);
    const char *alpn = tt_tls_alpn(c->tr);
    if (alpn == NULL || strcmp(alpn, "h2") != 0) {
        c->tls_error = alpn ? "the server selected http/1.1 in ALPN" : "the server selected no protocol in ALPN";
        h2c_fail(c, TT_H2C_NO_H2);
        return;
    }
    ready(c);
}

static void connected(tt_h2c_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
        h2c_fail(c, err == ECONNREFUSED ? TT_H2C_CONNECT_REFUSED : TT_H2C_CONNECT_ERROR);
        return;
    }
    if (c->conf.tls == NULL) {
        ready(c);
        return;
    }
    c->tr = tt_tls_connect(c->conf.tls, c->io.fd, c->conf.session);
    if (c->tr == NULL) {
        c->tr = &tt_transport_tcp;
        h2c_fail(c, TT_H2C_TLS_ERROR);
        return;
    }
    c->state = H2C_TLS; /* the connect timer keeps running: it bounds the handshake too */
    tls_step(c);
}

static void on_io(tt_io_t *io, uint32_t events)
{
    tt_h2c_t *c = tt_container_of(io, tt_h2c_t, io);
    switch (c->state) {
    case H2C_CONNECTING:
        if (events & (TT_EV_WRITE | TT_EV_ERR | TT_EV_HUP)) connected(c);
        return;
    case H2C_TLS:
        if (events & TT_EV_ERR)
            h2c_fail(c, TT_H2C_TLS_ERROR);
        else
            tls_step(c);
        return;
    case H2C_READY:
        if (events & TT_EV_READ) c->rd_ready = true;
        if (events & (TT_EV_HUP | TT_EV_ERR)) {
            c->peer_hup = true;
            c->rd_ready = true; /* the read reports the end or the error */
        }
        if (events & TT_EV_WRITE) {
            c->wr_blocked = false;
            if (c->tr->want_write) c->rd_ready = true; /* a TLS read that had to write first */
        }
        h2c_run(c);
        return;
    default: return;
    }
}

static void on_timer(tt_timer_t *t)
{
    tt_h2c_t *c = tt_container_of(t, tt_h2c_t, timer);
    if (c->state != H2C_READY || !c->settings_seen) {
        h2c_fail(c, TT_H2C_CONNECT_TIMEOUT);
        return;
    }
    if (c->nstreams == 0 || c->conf.response_ms == 0) return; /* nothing awaited; a new stream re-arms */
    uint64_t quiet = tt_loop_now(c->loop) - c->last_frame_ms;
    if (quiet >= c->conf.response_ms)
        h2c_fail(c, TT_H2C_TIMEOUT);
    else
        tt_timer_arm(c->loop, &c->timer, c->conf.response_ms - quiet);
}

/* PING liveness (RFC 9113 6.7): after ping_ms without a frame from the server a PING goes out carrying its send
 * time; no ACK within ping_timeout_ms fails the connection. Any frame re-arms lazily (last_frame_ms). */
static void on_ping_timer(tt_timer_t *t)
{
    tt_h2c_t *c = tt_container_of(t, tt_h2c_t, ping_timer);
    if (c->state != H2C_READY) return;
    uint64_t now = tt_loop_now(c->loop);
    if (c->ping_out) {
        if (now - c->ping_sent_ms >= c->conf.ping_timeout_ms) {
            h2c_fail(c, TT_H2C_PING_TIMEOUT);
            return;
        }
        tt_timer_arm(c->loop, &c->ping_timer, c->conf.ping_timeout_ms - (now - c->ping_sent_ms));
        return;
    }
    uint64_t quiet = now - c->last_frame_ms;
    if (quiet < c->conf.ping_ms) {
        tt_timer_arm(c->loop, &c->ping_timer, c->conf.ping_ms - quiet);
        return;
    }
    uint64_t stamp = tt_loop_now_us(c->loop);
    uint8_t opaque[8];
    memcpy(opaque, &stamp, sizeof(opaque));
    if (nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, opaque) != 0) return;
    c->ping_out = true;
    c->ping_sent_ms = now;
    tt_timer_arm(c->loop, &c->ping_timer, TT_MAX(c->conf.ping_timeout_ms, 1));
    kick(c);
}

/* The stream with content waiting whose send window has stayed closed for send_ms, or NULL. A stream whose content
 * waits with its windows open waits for the socket, which the connection's own deadline covers: its clock starts
 * again. `*next` gets the earliest deadline still to come. */
static h2c_stream_t *window_expired(tt_h2c_t *c, uint64_t now, uint64_t *next)
{
    int32_t cwin = nghttp2_session_get_remote_window_size(c->s);
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &c->streams)
    {
        h2c_stream_t *st = tt_container_of(pos, h2c_stream_t, link);
        if (st->user == NULL || st->out.len == 0) continue;
        int32_t swin = nghttp2_session_get_stream_remote_window_size(c->s, st->id); /* -1: not opened yet */
        if (swin < 0 || (swin > 0 && cwin > 0)) st->sent_ms = now;
        uint64_t at = st->sent_ms + c->conf.send_ms;
        if (at <= now) return st;
        *next = TT_MIN(*next, at);
    }
    return NULL;
}

/* send_ms passed for bytes that wait: a socket that took nothing closes the connection (TT_H2C_SEND_TIMEOUT, every
 * stream ends with it); a stream whose window stayed closed is reset alone (TT_H2C_WINDOW_TIMEOUT). */
static void on_send_timer(tt_timer_t *t)
{
    tt_h2c_t *c = tt_container_of(t, tt_h2c_t, send_timer);
    if (c->state != H2C_READY) return;
    uint64_t now = tt_loop_now(c->loop), next = UINT64_MAX;
    if (c->wr_blocked && c->out.len > 0) {
        if (now - c->wrote_ms >= c->conf.send_ms) {
            h2c_fail(c, TT_H2C_SEND_TIMEOUT);
            return;
        }
        next = c->wrote_ms + c->conf.send_ms;
    }
    h2c_stream_t *st;
    while ((st = window_expired(c, now, &next)) != NULL) {
        void *u = st->user;
        st->user = NULL; /* its slot frees when nghttp2 closes it: reported again then, with no user */
        tt_buf_release(&st->out, c->bufs);
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
        kick(c);
        c->ops->on_stream_end(c, u, TT_H2C_WINDOW_TIMEOUT, 0);
        if (c->state != H2C_READY) return; /* the user closed the connection */
    }
    if (next != UINT64_MAX) tt_timer_arm_at(c->loop, &c->send_timer, next);
}

/* ---- public ---- */

tt_h2c_t *tt_h2c_connect(tt_loop_t *loop, tt_bufpool_t *bufs, const tt_addr_t *addr, const tt_h2c_conf_t *conf,
                         const tt_h2c_ops_t *ops, void *data, tt_h2c_err_t *err)
{
    bool in_progress = false;
    int fd = tt_sock_connect(addr, NULL, &in_progress);
    if (fd < 0) {
        *err = fd == -ECONNREFUSED ? TT_H2C_CONNECT_REFUSED : TT_H2C_CONNECT_ERROR;
        return NULL;
    }
    tt_h2c_t *c = tt_calloc(1, sizeof(*c));
    c->io.fd = fd;
    c->io.cb = on_io;
    c->tr = &tt_transport_tcp;
    c->loop = loop;
    c->bufs = bufs;
    c->ops = ops;
    c->data = data;
    c->conf = *conf;
    c->state = H2C_CONNECTING;
    static _Atomic uint64_t next_id = 1;
    c->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    tt_list_init(&c->streams);
    tt_list_init(&c->spare);
    tt_timer_init(&c->timer, on_timer);
    tt_timer_init(&c->ping_timer, on_ping_timer);
    tt_timer_init(&c->send_timer, on_send_timer);
    if (tt_io_start(loop, &c->io, TT_EV_READ | TT_EV_WRITE | TT_EV_EDGE) != 0) {
        close(fd);
        free(c);
        *err = TT_H2C_CONNECT_ERROR;
        return NULL;
    }
    tt_timer_arm(loop, &c->timer, conf->connect_ms); /* a loopback connect that finished at once reports by edge */
    return c;
}

bool tt_h2c_can_request(const tt_h2c_t *c)
{
    return c->state == H2C_READY && !c->goaway;
}

static h2c_stream_t *stream_new(tt_h2c_t *c, void *stream_data)
{
    h2c_stream_t *st;
    if (!tt_list_is_empty(&c->spare)) {
        st = tt_container_of(tt_list_first(&c->spare), h2c_stream_t, link);
        tt_list_remove(&st->link);
    } else {
        st = tt_calloc(1, sizeof(*st));
        tt_list_init(&st->link);
    }
    st->user = stream_data;
    st->head_seen = st->block_trailers = st->paused = st->body_end = st->deferred = st->want_drain = false;
    st->drain_due = false;
    st->unconsumed = 0;
    st->status = 0;
    return st;
}

static void stream_opened(tt_h2c_t *c)
{
    c->requests++;
    if (c->nstreams++ == 0) {
        c->last_frame_ms = tt_loop_now(c->loop); /* the response clock starts with the first open stream */
        if (c->conf.response_ms && !tt_timer_is_armed(&c->timer)) tt_timer_arm(c->loop, &c->timer, c->conf.response_ms);
    }
    kick(c);
}

int32_t tt_h2c_request(tt_h2c_t *c, const char *method, const char *scheme, const char *authority, const char *path,
                       void *stream_data)
{
    if (!tt_h2c_can_request(c)) return -1;
    h2c_stream_t *st = stream_new(c, stream_data);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {NV(":method", method), NV(":scheme", scheme), NV(":authority", authority), NV(":path", path)};
#undef NV
    int32_t id = nghttp2_submit_request(c->s, NULL, nv, TT_ARRAY_SIZE(nv), NULL, st);
    if (id < 0) {
        tt_list_push_head(&c->spare, &st->link);
        return -1;
    }
    st->id = id;
    tt_list_push_tail(&c->streams, &st->link);
    stream_opened(c);
    return id;
}

uint32_t tt_h2c_open_streams(const tt_h2c_t *c)
{
    return c->nstreams;
}

bool tt_h2c_peer_settings_seen(const tt_h2c_t *c)
{
    return c->settings_seen;
}

uint32_t tt_h2c_peer_max_streams(const tt_h2c_t *c)
{
    return c->s ? nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) : UINT32_MAX;
}

void *tt_h2c_data(const tt_h2c_t *c)
{
    return c->data;
}

bool tt_h2c_tls_resumed(const tt_h2c_t *c)
{
    return c->tls_resumed;
}

void *tt_h2c_take_session(tt_h2c_t *c)
{
    return c->tr != NULL && c->state != H2C_CLOSED ? tt_tls_take_session(c->tr) : NULL;
}

const char *tt_h2c_tls_failure(const tt_h2c_t *c, bool *verify)
{
    if (verify) *verify = c->tls_verify_failed;
    return c->tls_error;
}

/* ---- the proxy's streams: fields, content, trailers ---- */

static ssize_t body_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
    tt_h2c_t *c = user;
    h2c_stream_t *st = src->ptr;
    size_t n = TT_MIN(length, st->out.len);
    if (n) {
        memcpy(buf, tt_buf_data(&st->out), n);
        tt_buf_consume(&st->out, n);
        st->sent_ms = tt_loop_now(c->loop);
    }
    if (st->want_drain && !st->drain_due && st->out.len < BODY_HIGH / 2) st->drain_due = c->drain_due = true;
    if (st->body_end && st->out.len == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers.len) {
            nghttp2_nv stack[32];
            size_t k = 0;
            nghttp2_nv *nv = tt_h2_fields_nv(tt_buf_data(&st->trailers), st->trailers.len, stack, TT_ARRAY_SIZE(stack),
                                             0, TT_H2_FIELDS_REQUEST, &k);
            if (k > 0 && nghttp2_submit_trailer(s, id, nv, k) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nv != stack) free(nv);
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

int32_t tt_h2c_submit(tt_h2c_t *c, const char *method, const char *scheme, tt_str_t authority, tt_str_t path,
                      char *fields, size_t fields_len, bool has_content, void *stream_data)
{
    if (!tt_h2c_can_request(c)) return -1;
    nghttp2_nv stack[64];
    size_t k = 0;
    nghttp2_nv *nv = tt_h2_fields_nv(fields, fields_len, stack, TT_ARRAY_SIZE(stack), 4, TT_H2_FIELDS_REQUEST, &k);
    nv[0] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), NGHTTP2_NV_FLAG_NONE};
    nv[1] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme), NGHTTP2_NV_FLAG_NONE};
    nv[2] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)authority.p, 10, authority.n, NGHTTP2_NV_FLAG_NONE};
    nv[3] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)path.p, 5, path.n, NGHTTP2_NV_FLAG_NONE};
    h2c_stream_t *st = stream_new(c, stream_data);
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = body_read_cb};
    int32_t id = nghttp2_submit_request(c->s, NULL, nv, k, has_content ? &dp : NULL, st);
    if (nv != stack) free(nv);
    if (id < 0) {
        tt_list_push_head(&c->spare, &st->link);
        return -1;
    }
    st->id = id;
    tt_list_push_tail(&c->streams, &st->link);
    stream_opened(c);
    return id;
}

/* The open stream `id` with a user, or NULL. */
static h2c_stream_t *stream_of(tt_h2c_t *c, int32_t id)
{
    if (c->state != H2C_READY) return NULL;
    h2c_stream_t *st = nghttp2_session_get_stream_user_data(c->s, id); /* once nghttp2 has the stream */
    if (st != NULL && st->id == id) return st->user != NULL ? st : NULL;
    tt_list_t *pos, *tmp; /* submitted, not opened yet: look in our list */
    tt_list_foreach_safe(pos, tmp, &c->streams)
    {
        st = tt_container_of(pos, h2c_stream_t, link);
        if (st->id == id) return st->user != NULL ? st : NULL;
    }
    return NULL;
}

bool tt_h2c_send(tt_h2c_t *c, int32_t id, const void *data, size_t len)
{
    h2c_stream_t *st = stream_of(c, id);
    if (st == NULL || st->body_end) return true;
    if (st->out.len == 0) st->sent_ms = tt_loop_now(c->loop); /* content begins to wait */
    tt_buf_append(&st->out, c->bufs, data, len);
    arm_send(c);
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(c->s, id);
    }
    kick(c);
    if (st->out.len < BODY_HIGH) return true;
    st->want_drain = true;
    return false;
}

void tt_h2c_end(tt_h2c_t *c, int32_t id, tt_str_t trailers)
{
    h2c_stream_t *st = stream_of(c, id);
    if (st == NULL || st->body_end) return;
    st->body_end = true;
    if (trailers.n) tt_buf_append(&st->trailers, c->bufs, trailers.p, trailers.n);
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(c->s, id);
    }
    kick(c);
}

void tt_h2c_pause(tt_h2c_t *c, int32_t id, bool pause)
{
    h2c_stream_t *st = stream_of(c, id);
    if (st == NULL || st->paused == pause) return;
    st->paused = pause;
    if (!pause && st->unconsumed) {
        nghttp2_session_consume_stream(c->s, id, st->unconsumed);
        st->unconsumed = 0;
        kick(c);
    }
}

void tt_h2c_cancel(tt_h2c_t *c, int32_t id)
{
    h2c_stream_t *st = stream_of(c, id);
    if (st == NULL) return;
    st->user = NULL;
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    kick(c);
}

void tt_h2c_goaway(tt_h2c_t *c)
{
    if (c->state == H2C_CLOSED) return;
    if (c->state == H2C_READY && nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR) == 0) {
        for (int i = 0; i < 4; i++) { /* a best effort: the frame is small, the socket idle */
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n <= 0) break;
            tt_buf_append(&c->out, c->bufs, data, (size_t)n);
        }
        if (c->out.len) (void)tt_transport_write(c->tr, c->io.fd, tt_buf_data(&c->out), c->out.len, false);
    }
    shut(c);
}

uint32_t tt_h2c_requests(const tt_h2c_t *c)
{
    return c->requests;
}

uint64_t tt_h2c_id(const tt_h2c_t *c)
{
    return c->id;
}

uint64_t tt_h2c_idle_since(const tt_h2c_t *c)
{
    return c->idle_since_ms;
}
