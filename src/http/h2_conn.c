/* h2_conn.c -- the HTTP/2 server connection: nghttp2 does frames, HPACK and flow control; tether the rest
 *
 * Lifecycle (RFC 9113): the idle timeout runs only while no stream is open; max requests (streams) and
 * max lifetime end the connection with the two-step GOAWAY of 6.8 (first last-stream-id 2^31-1, then the
 * real one after a PING round trip), and streams already accepted complete; a drain does the same. A PING
 * sent after ping_interval without frames must be acknowledged within ping_timeout. A stream error
 * resets the stream only; a connection error closes this connection only.
 */
#include "http/h2_conn.h"
#include "core/log.h"
#include "core/slab_nghttp2.h"
#include "http/date.h"
#include "http/h2_fields.h"
#include "net/tls.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <unistd.h>

#define OUT_HIGH        65536 /* bytes queued for the socket before nghttp2 is asked for more */
#define STREAM_OUT_HIGH 65536 /* response bytes a stream buffers before its writer is told to wait */
#define STREAM_OUT_LOW  16384 /* ...and below which it is called back (on_writable) */
#define GOAWAY_WAIT_MS  1000  /* second GOAWAY at the latest this long after the first */
#define READ_CHUNK      16384
#define MAX_GAPS        16 /* ranges of stream ids a client skipped that are remembered (the oldest are forgotten) */
/* Room inside each stream for a usual request's fields (h2load sends 6 regular fields, curl 2-3; a browser 10-20
 * outgrows it), so that they need no allocation of their own: the regular fields' refs, the head built at dispatch, the
 * names and values. */
#define REFS_INLINE  12
#define HEAD_INLINE  (offsetof(tt_h1_request_t, fields) + 12 * sizeof(tt_h1_field_t))
#define STORE_INLINE 384

static const uint8_t PING_GOAWAY[8] = {'t', 'e', 't', 'h', 'e', 'r', 'G', 'A'};
static const uint8_t PING_LIVE[8] = {'t', 'e', 't', 'h', 'e', 'r', 'P', 'L'};

/* The one deadline a connection waits on: idle (no stream), send (the socket is full), header (a header block
 * begun), body (a stream waits for request content) and window (a response waits for flow-control credit). */
enum tq_kind { TQ_NONE, TQ_IDLE, TQ_SEND, TQ_HEADER, TQ_BODY, TQ_WINDOW };
enum goaway_state { GA_NONE, GA_NOTICE, GA_FINAL };

typedef struct h2_conn h2_conn_t;

/* Where a header's name and value sit in the stream's store (views are built once the block is whole). */
typedef struct hdr_ref {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_ref_t;

typedef struct h2_stream {
    h2_conn_t *c;
    tt_list_t link; /* in c->streams: nghttp2 forgets its streams silently when the session is deleted */
    int32_t id;
    uint64_t start_us; /* loop clock when the request was dispatched (tether_request_duration_seconds) */
    char *store;       /* header names and values: store_inline, or w->slab's once they outgrow it */
    uint32_t store_len, store_cap;
    hdr_ref_t *refs; /* regular fields, :authority becoming "host": refs_inline, or w->slab's */
    uint32_t nrefs, refs_cap;
    uint32_t header_bytes;
    int32_t method_ref, path_ref; /* index into pseudo[] or -1 */
    hdr_ref_t pseudo[5];          /* :method, :path, :authority, :scheme, :protocol (RFC 8441) */
    bool has_protocol;            /* an extended CONNECT: :protocol came */
    bool tunnel;                  /* an extended CONNECT: its DATA is a tunnel's, no body timeout applies */
    bool refused;                 /* over h2_max_concurrent_streams: RST_STREAM REFUSED_STREAM, never served */
    bool bad_header;              /* too many or too large: answered with 431 */
    bool bad_target;              /* :path longer than max_request_target: answered with 414 */
    uint32_t field_bytes;         /* regular fields counted as HTTP/1.1 lines ("name: value\r\n") */
    bool dispatched;
    bool in_trailers; /* headers now arriving are request trailers */
    bool body_done;
    bool paused;
    bool async_done; /* the handler finished (or failed) its response */
    bool head_request;
    tt_h1_request_t *head; /* built at dispatch */
    tt_req_t req;
    int64_t content_length;
    uint64_t body_seen;
    tt_buf_t pending;  /* request content held while the handler paused it */
    tt_buf_t trailers; /* request trailers ("name: value\r\n") */
    /* response */
    bool resp_submitted;
    bool resp_eof;
    bool resp_deferred;
    bool resp_with_data; /* the response has a data source (content may follow the HEADERS) */
    bool resp_eof_sent;  /* the data source returned its last bytes */
    bool want_writable;  /* tt_req_write() said "full": call on_writable once `out` is below STREAM_OUT_LOW */
    int status;
    uint64_t resp_bytes;
    tt_buf_t out;
    char *resp_head; /* the response HEADERS' strings, read by nghttp2 until the stream closes (w->slab) */
    char *body;      /* a response's content given whole to respond() (w->slab): body[body_off..body_len) unsent */
    uint32_t body_len, body_off;
    tt_buf_t resp_trailers;
    tt_body_file_t file;
    tt_defer_t free_later;
    tt__wgen_t *gen; /* an asynchronous stream's generation (its route state), referenced until the stream is freed */
    char *log_extra; /* the handler's access-log text, copied when it finished (it owns req.log_extra until then) */
    tt_accesslog_up_t log_up; /* likewise, a copy of *req.log_up */
    /* Last: not zeroed when the stream is made (on_begin_headers) */
    hdr_ref_t refs_inline[REFS_INLINE];
    _Alignas(max_align_t) char head_inline[HEAD_INLINE];
    char store_inline[STORE_INLINE];
} h2_stream_t;
_Static_assert(sizeof(h2_stream_t) <= 2048, "a stream fits one size class of the slab (2 KiB)");

struct h2_conn {
    tt__conn_t base;
    tt_io_t io;
    tt_transport_t *tr;
    tt__lstate_t *ls;
    tt_worker_t *w;
    uint64_t id;
    uint64_t accepted_ms;
    tt_addr_t peer;
    nghttp2_session *s;
    tt_list_t streams;   /* every stream with our state attached */
    h2_stream_t *hdr_st; /* the stream on_header last found (cleared when it is freed) */
    tt_buf_t in;
    tt_buf_t out;
    uint32_t nstreams;       /* open request streams */
    uint32_t nbegun;         /* request streams with our state, from their first HEADERS to their close */
    uint32_t streams_total;  /* request streams accepted */
    uint32_t nwant_writable; /* streams with want_writable set */
    uint8_t tq_kind;
    uint8_t idle_bucket;
    uint8_t goaway;
    uint8_t end_reason; /* close reason once the GOAWAY sequence ends */
    bool rd_ready;
    bool peer_hup; /* the poller reported the peer's FIN, perhaps with bytes still unread */
    bool wr_blocked;
    bool in_run;
    bool closed;
    bool idle;
    bool ping_outstanding;
    bool client_progress;  /* a frame that moves a stream on (not a PING) arrived since the last settle */
    bool calm;             /* the client reset streams too fast: ENHANCE_YOUR_CALM, nothing more is served */
    double reset_tokens;   /* client RST_STREAMs still allowed (token bucket: reset_burst, reset_rate/s) */
    uint64_t reset_ms;     /* when reset_tokens was last refilled */
    tt_timer_t ga_timer;   /* second GOAWAY fallback */
    tt_timer_t hdr_timer;  /* a header block begun and not ended: header_timeout */
    tt_timer_t ping_timer; /* liveness: interval, then timeout */
    uint64_t ping_sent_ms;
    uint64_t last_frame_ms;
    uint64_t idle_since_ms;       /* when it last became idle (no open stream) */
    int32_t last_opened;          /* highest stream id the client opened */
    uint8_t ngaps;                /* skipped[] in use */
    int32_t skipped[MAX_GAPS][2]; /* ranges of odd ids below last_opened the client never opened, ascending */
    tt_defer_t kick;
    tt_defer_t free_later;
};

static void h2_run(h2_conn_t *c);
static void h2_close(h2_conn_t *c, tt_close_reason_t reason);

/* ---- small helpers ---- */

static uint64_t now(const h2_conn_t *c)
{
    return tt_loop_now(c->w->loop);
}

static void set_tq(h2_conn_t *c, enum tq_kind kind)
{
    tt__lstate_t *ls = c->ls;
    c->tq_kind = (uint8_t)kind;
    switch (kind) {
    case TQ_NONE: tt_tq_remove(&c->base.tq); break;
    case TQ_IDLE: tt_tq_push(&ls->idle_q[c->idle_bucket], &c->base.tq); break;
    case TQ_SEND: tt_tq_push(&ls->send_q, &c->base.tq); break;
    case TQ_HEADER: tt_tq_push(&ls->header_q, &c->base.tq); break;
    case TQ_BODY: tt_tq_push(&ls->body_q, &c->base.tq); break;
    case TQ_WINDOW: tt_tq_push(&ls->send_q, &c->base.tq); break;
    }
}

static void kick_cb(tt_defer_t *d)
{
    h2_conn_t *c = tt_container_of(d, h2_conn_t, kick);
    if (!c->closed) h2_run(c);
}

static void kick(h2_conn_t *c)
{
    if (!c->in_run && !c->closed) tt_loop_defer(c->w->loop, &c->kick, kick_cb);
}

/* Appends to the stream's header store; returns the offset of the bytes appended. */
static uint32_t store_append(h2_stream_t *st, const uint8_t *p, size_t n)
{
    uint32_t off = st->store_len;
    if (st->store_len + n > st->store_cap) {
        size_t cap = st->store_cap;
        while (cap < st->store_len + n) cap *= 2;
        if (st->store == st->store_inline) {
            st->store = tt_slab_alloc(&st->c->w->slab, cap);
            memcpy(st->store, st->store_inline, st->store_len);
        } else {
            st->store = tt_slab_realloc(&st->c->w->slab, st->store, cap);
        }
        st->store_cap = (uint32_t)cap;
    }
    if (n) memcpy(st->store + off, p, n);
    st->store_len += (uint32_t)n;
    return off;
}

static tt_str_t view(const h2_stream_t *st, uint32_t off, uint32_t len)
{
    return tt_str(st->store + off, len);
}

/* ---- GOAWAY and PING ---- */

static void count_goaway(h2_conn_t *c, tt_goaway_reason_t r)
{
    tt_counter_add(&c->w->metrics.h2_goaway_sent[r], 1);
}

static void send_final_goaway(h2_conn_t *c)
{
    if (c->goaway == GA_FINAL) return;
    c->goaway = GA_FINAL;
    tt_timer_disarm(c->w->loop, &c->ga_timer);
    nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR,
                          NULL, 0);
    kick(c);
}

static void ga_on_timer(tt_timer_t *t)
{
    send_final_goaway(tt_container_of(t, h2_conn_t, ga_timer));
}

/* The graceful end of RFC 9113 6.8: GOAWAY(2^31-1) now; once it is on the wire a PING follows it (the ACK
 * proves the client saw the notice) and the real last stream goes out after the ACK (on_frame_send). */
static void begin_goaway(h2_conn_t *c, tt_close_reason_t why, tt_goaway_reason_t metric)
{
    if (c->goaway != GA_NONE) return;
    c->end_reason = (uint8_t)why;
    count_goaway(c, metric);
    c->goaway = GA_NOTICE;
    nghttp2_submit_shutdown_notice(c->s);
    kick(c);
}

/* RFC 9113 5.4.2 and the 2023 "rapid reset" attack: a token bucket of client RST_STREAMs per connection.
 * Over it, GOAWAY ENHANCE_YOUR_CALM ends the connection and no stream is served any more. */
static void count_client_reset(h2_conn_t *c)
{
    const tt_h2_policy_t *p = &c->ls->policy->h2;
    uint64_t t = now(c);
    c->reset_tokens += (double)(t - c->reset_ms) * (double)p->reset_rate / 1000.0;
    if (c->reset_tokens > (double)p->reset_burst) c->reset_tokens = (double)p->reset_burst;
    c->reset_ms = t;
    if (c->reset_tokens >= 1.0) {
        c->reset_tokens -= 1.0;
        return;
    }
    if (c->calm) return;
    c->calm = true;
    tt_log(TT_LOG_DEBUG, "h2 conn %llu: too many streams reset by the client", (unsigned long long)c->id);
    nghttp2_session_terminate_session(c->s, NGHTTP2_ENHANCE_YOUR_CALM);
    kick(c);
}

static void hdr_on_timer(tt_timer_t *t)
{
    h2_close(tt_container_of(t, h2_conn_t, hdr_timer), TT_CLOSE_HEADER_TIMEOUT);
}

static void ping_on_timer(tt_timer_t *t)
{
    h2_conn_t *c = tt_container_of(t, h2_conn_t, ping_timer);
    const tt_h2_policy_t *p = &c->ls->policy->h2;
    if (c->ping_outstanding) {
        h2_close(c, TT_CLOSE_PING_TIMEOUT);
        return;
    }
    uint64_t quiet = now(c) - c->last_frame_ms;
    if (quiet < p->ping_interval_ms) {
        tt_timer_arm(c->w->loop, &c->ping_timer, p->ping_interval_ms - quiet);
        return;
    }
    c->ping_outstanding = true;
    c->ping_sent_ms = now(c);
    nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, PING_LIVE);
    tt_timer_arm(c->w->loop, &c->ping_timer, p->ping_timeout_ms);
    kick(c);
}

/* ---- responses (the tt_req_t ops of a stream) ---- */

static h2_stream_t *stream_of(tt_req_t *rq)
{
    return rq->_conn;
}

/* The handler owns the bytes of req.log_extra only until it finishes (msg.h), and the line is written when
 * the stream closes, later: keep a copy. */
static void keep_log_extra(h2_stream_t *st)
{
    char *copy = st->req.log_extra.n ? tt_strndup(st->req.log_extra.p, st->req.log_extra.n) : NULL;
    st->req.log_extra = copy ? tt_str(copy, st->req.log_extra.n) : TT_STR_NULL;
    free(st->log_extra);
    st->log_extra = copy;
    if (st->req.log_up != NULL && st->req.log_up != &st->log_up) {
        st->log_up = *st->req.log_up; /* its name and addr are the configuration's: they outlive the stream */
        st->req.log_up = &st->log_up;
    }
}

static ssize_t data_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
    (void)s;
    (void)user;
    h2_stream_t *st = src->ptr;
    size_t n = 0;
    if (st->body_off < st->body_len) {
        n = TT_MIN(length, (size_t)(st->body_len - st->body_off));
        memcpy(buf, st->body + st->body_off, n);
        st->body_off += (uint32_t)n;
    } else if (st->out.len > 0) {
        n = TT_MIN(length, (size_t)st->out.len);
        memcpy(buf, tt_buf_data(&st->out), n);
        tt_buf_consume(&st->out, n);
    } else if (st->file.fd >= 0 && st->file.len > 0) {
        ssize_t r = pread(st->file.fd, buf, (size_t)TT_MIN((int64_t)length, st->file.len), st->file.off);
        if (r <= 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the file shrank: reset the stream */
        st->file.off += r;
        st->file.len -= r;
        n = (size_t)r;
    }
    st->resp_bytes += n;
    bool file_done = st->file.fd < 0 || st->file.len == 0;
    if (st->resp_eof && st->body_off == st->body_len && st->out.len == 0 && file_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->resp_eof_sent = true;
        if (st->resp_trailers.len > 0) {
            /* trailer lines "name: value\r\n" to nghttp2 name/value pairs (lower-case names), every one of them */
            nghttp2_nv stack_nv[32];
            size_t k = 0;
            nghttp2_nv *nv = tt_h2_fields_nv(tt_buf_data(&st->resp_trailers), st->resp_trailers.len, stack_nv,
                                             TT_ARRAY_SIZE(stack_nv), 0, 0, &k);
            if (k > 0 && nghttp2_submit_trailer(st->c->s, id, nv, k) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nv != stack_nv) free(nv);
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        st->resp_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* The three digits of a status code (100-999). */
static void format_status(char out[3], int status)
{
    unsigned v = (unsigned)status % 1000;
    out[0] = (char)('0' + v / 100);
    out[1] = (char)('0' + v / 10 % 10);
    out[2] = (char)('0' + v % 10);
}

/* Submits the response HEADERS (with a data source unless there is no content). */
static void submit_head(h2_stream_t *st, const tt_resp_t *resp, bool with_data)
{
    h2_conn_t *c = st->c;
    /* The values and the caller's lines (names lower-cased in the copy) stay with the stream until it is freed:
     * nghttp2 reads them when it serialises the HEADERS (NO_COPY) and never after the stream closed. */
    tt_slab_free(&c->w->slab, st->resp_head);
    char *status = st->resp_head = tt_slab_alloc(&c->w->slab, 3 + TT_HTTP_DATE_LEN + 20 + resp->fields.n);
    char *date = status + 3, *cl = date + TT_HTTP_DATE_LEN, *fields = cl + 20;
    format_status(status, resp->status);
    /* "Date: <IMF-fixdate>\r\n...": formatted once a second for the worker */
    memcpy(date, tt__worker_date_fields(c->w).p + 6, TT_HTTP_DATE_LEN);
    if (resp->fields.n) memcpy(fields, resp->fields.p, resp->fields.n);
    nghttp2_nv stack_nv[48];
    size_t k = 0;
    /* three pairs in front, one more (content-length) behind: tt_h2_fields_nv leaves room for 3 + lines; ask 4 */
    nghttp2_nv *nv = tt_h2_fields_nv(fields, resp->fields.n, stack_nv, TT_ARRAY_SIZE(stack_nv) - 1, 3, 0, &k);
    if (nv != stack_nv) nv = tt_realloc(nv, (k + 1) * sizeof(*nv));
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, 0};
    nv[1] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)date, 4, TT_HTTP_DATE_LEN, 0};
    nv[2] = (nghttp2_nv){(uint8_t *)"server", (uint8_t *)"tether", 6, 6, 0};
    if (resp->content_length >= 0 && !tt_http_status_has_no_content(resp->status)) {
        size_t n = (size_t)(tt_put_u64(cl, (uint64_t)resp->content_length) - cl);
        nv[k++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl, 14, n, 0};
    }
    for (size_t i = 0; i < k; i++) nv[i].flags |= NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    st->status = resp->status;
    st->resp_submitted = true;
    st->resp_with_data = with_data;
    tt_metrics_count_status(&c->w->metrics, resp->status);
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read_cb};
    nghttp2_submit_response(c->s, st->id, nv, k, with_data ? &dp : NULL); /* copies the pairs, not the strings */
    if (nv != stack_nv) free(nv);
    kick(c);
}

static void h2_respond(tt_req_t *rq, const tt_resp_t *resp)
{
    h2_stream_t *st = stream_of(rq);
    if (st->resp_submitted || st->c->closed) return;
    bool content = !tt_http_status_has_no_content(resp->status) && !rq->is_head;
    if (content && resp->body_len) {
        /* the content is whole: sized to it, not a 16 KiB pool block per stream */
        if (resp->body_len > UINT32_MAX) tt_fatal("h2: %zu bytes of content in one respond()", resp->body_len);
        st->body = tt_slab_alloc(&st->c->w->slab, resp->body_len);
        memcpy(st->body, resp->body, resp->body_len);
        st->body_len = (uint32_t)resp->body_len;
    }
    if (resp->file.fd >= 0) {
        if (content)
            st->file = resp->file;
        else if (resp->file.release)
            resp->file.release(resp->file.ref);
    }
    st->resp_eof = true;
    st->async_done = true;
    rq->_done = true;
    keep_log_extra(st);
    submit_head(st, resp, content);
}

static void h2_respond_head(tt_req_t *rq, const tt_resp_t *head)
{
    h2_stream_t *st = stream_of(rq);
    if (st->resp_submitted || st->c->closed) return;
    bool content = !tt_http_status_has_no_content(head->status) && !rq->is_head;
    if (!content) {
        st->resp_eof = true;
    }
    submit_head(st, head, content);
}

static bool h2_write(tt_req_t *rq, const void *data, size_t len)
{
    h2_stream_t *st = stream_of(rq);
    if (st->c->closed || !st->resp_submitted || st->resp_eof) return false;
    tt_buf_append(&st->out, &st->c->w->bufs, data, len);
    if (st->resp_deferred) {
        st->resp_deferred = false;
        nghttp2_session_resume_data(st->c->s, st->id);
    }
    kick(st->c);
    if (st->out.len < STREAM_OUT_HIGH) return true;
    if (!st->want_writable) st->c->nwant_writable++;
    st->want_writable = true;
    return false;
}

static void h2_finish(tt_req_t *rq, tt_str_t trailers)
{
    h2_stream_t *st = stream_of(rq);
    if (st->c->closed || st->async_done) return;
    st->async_done = true;
    rq->_done = true;
    st->resp_eof = true;
    keep_log_extra(st);
    if (trailers.n) tt_buf_append(&st->resp_trailers, &st->c->w->bufs, trailers.p, trailers.n);
    if (st->resp_deferred) {
        st->resp_deferred = false;
        nghttp2_session_resume_data(st->c->s, st->id);
    }
    kick(st->c);
}

static void h2_fail(tt_req_t *rq)
{
    h2_stream_t *st = stream_of(rq);
    if (st->c->closed || st->async_done) return;
    st->async_done = true;
    rq->_done = true;
    keep_log_extra(st);
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    kick(st->c);
}

/* An interim response (RFC 9110 15.2, RFC 9113 8.1): a HEADERS frame with a 1xx :status before the response's. */
static void h2_interim(tt_req_t *rq, int status, tt_str_t fields)
{
    h2_stream_t *st = stream_of(rq);
    h2_conn_t *c = st->c;
    if (st->resp_submitted || c->closed || status < 100 || status > 199 || status == 101) return;
    char code[8];
    snprintf(code, sizeof(code), "%03d", status);
    char stack_fields[2048];
    char *f = fields.n <= sizeof(stack_fields) ? stack_fields : tt_malloc(fields.n);
    if (fields.n) memcpy(f, fields.p, fields.n);
    nghttp2_nv stack_nv[32];
    size_t k = 0;
    nghttp2_nv *nv = tt_h2_fields_nv(f, fields.n, stack_nv, TT_ARRAY_SIZE(stack_nv), 1, 0, &k);
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3, 0};
    nghttp2_submit_headers(c->s, NGHTTP2_FLAG_NONE, st->id, NULL, nv, k, NULL); /* copies the pairs */
    if (nv != stack_nv) free(nv);
    if (f != stack_fields) free(f);
    kick(c);
}

static void deliver_pending(h2_stream_t *st);

static void h2_pause_body(tt_req_t *rq, bool pause)
{
    h2_stream_t *st = stream_of(rq);
    st->paused = pause;
    if (!pause) {
        deliver_pending(st);
        kick(st->c);
    }
}

static const tt_req_ops_t h2_req_ops = {
    .respond = h2_respond,
    .respond_head = h2_respond_head,
    .write = h2_write,
    .finish = h2_finish,
    .fail_response = h2_fail,
    .pause_body = h2_pause_body,
    .interim = h2_interim,
};

/* ---- requests ---- */

static bool async_live(const h2_stream_t *st)
{
    return st->req.hooks != NULL && !st->async_done;
}

static void body_end(h2_stream_t *st)
{
    if (!async_live(st) || st->req.hooks->on_body_end == NULL) return;
    tt_str_t tr = st->trailers.len ? tt_str(tt_buf_data(&st->trailers), st->trailers.len) : TT_STR_NULL;
    st->req.hooks->on_body_end(&st->req, tr);
}

/* Hands held content to the handler (after a pause), and gives the flow-control credit back. */
static void deliver_pending(h2_stream_t *st)
{
    if (st->paused || st->pending.len == 0) return;
    size_t n = st->pending.len;
    if (async_live(st) && st->req.hooks->on_body) st->req.hooks->on_body(&st->req, tt_buf_data(&st->pending), n);
    tt_buf_release(&st->pending, &st->c->w->bufs);
    nghttp2_session_consume(st->c->s, st->id, n);
    if (st->body_done) body_end(st);
}

static void respond_error(h2_stream_t *st, int status)
{
    tt_req_respond_text(&st->req, status, TT_STR_NULL);
}

static void dispatch(h2_stream_t *st)
{
    h2_conn_t *c = st->c;
    tt_worker_t *w = c->w;
    const tt_listen_policy_t *p = c->ls->policy;
    st->dispatched = true;
    c->nstreams++;
    c->streams_total++;
    if (c->idle) {
        c->idle = false;
        tt_gauge_add(&w->metrics.conn_idle, -1);
        set_tq(c, TQ_NONE);
    }
    /* Build the head the handlers know: the fields, with :authority as Host. */
    /* Sized to its fields: the field array is the head's last member and nothing reads past nfields (the parse
     * target of HTTP/1.1 has room for TT_H1_MAX_FIELDS; a stream's head holds the fields it has, a few hundred
     * bytes instead of 3 KiB per stream in flight). */
    size_t nf = TT_MIN((size_t)st->nrefs + (st->pseudo[2].value_len ? 1 : 0), (size_t)TT_H1_MAX_FIELDS);
    size_t hsize = offsetof(tt_h1_request_t, fields) + nf * sizeof(tt_h1_field_t);
    tt_h1_request_t *h = st->head =
        hsize <= sizeof(st->head_inline) ? (tt_h1_request_t *)st->head_inline : tt_slab_alloc(&w->slab, hsize);
    memset(h, 0, hsize);
    h->minor_version = 1;
    h->method = st->method_ref >= 0 ? view(st, st->pseudo[0].value_off, st->pseudo[0].value_len) : TT_STR("GET");
    h->target = st->path_ref >= 0 ? view(st, st->pseudo[1].value_off, st->pseudo[1].value_len) : TT_STR("/");
    static const struct {
        const char *m;
        size_t n;
        tt_method_t id;
    } methods[] = {{"GET", 3, TT_METHOD_GET},     {"HEAD", 4, TT_METHOD_HEAD},       {"POST", 4, TT_METHOD_POST},
                   {"PUT", 3, TT_METHOD_PUT},     {"DELETE", 6, TT_METHOD_DELETE},   {"OPTIONS", 7, TT_METHOD_OPTIONS},
                   {"PATCH", 5, TT_METHOD_PATCH}, {"CONNECT", 7, TT_METHOD_CONNECT}, {"TRACE", 5, TT_METHOD_TRACE}};
    for (size_t i = 0; i < TT_ARRAY_SIZE(methods); i++)
        if (tt_str_eq(h->method, methods[i].m, methods[i].n)) {
            h->method_id = methods[i].id;
            break;
        }
    if (h->method_id == TT_METHOD_CONNECT && st->path_ref < 0) { /* its target is the authority (RFC 9113 8.5) */
        h->target = view(st, st->pseudo[2].value_off, st->pseudo[2].value_len);
    }
    if (st->pseudo[2].value_len) {
        h->fields[h->nfields++] =
            (tt_h1_field_t){TT_STR("host"), view(st, st->pseudo[2].value_off, st->pseudo[2].value_len)};
    }
    for (uint32_t i = 0; i < st->nrefs && h->nfields < TT_H1_MAX_FIELDS; i++)
        h->fields[h->nfields++] = (tt_h1_field_t){view(st, st->refs[i].name_off, st->refs[i].name_len),
                                                  view(st, st->refs[i].value_off, st->refs[i].value_len)};
    bool bad_semantics = tt_h1_request_semantics(h) != 0;
    tt_req_t *rq = &st->req;
    memset(rq, 0, sizeof(*rq));
    rq->head = h;
    rq->is_head = h->method_id == TT_METHOD_HEAD;
    st->head_request = rq->is_head;
    rq->has_body = !st->body_done;
    rq->content_length = h->content_length;
    st->content_length = h->content_length;
    rq->minor_version = 1;
    rq->major_version = 2;
    rq->authority = h->authority;
    rq->tls = tt_transport_is_tls(c->tr);
    rq->conn_id = c->id;
    rq->req_no = c->streams_total;
    rq->start_ms = now(c);
    st->start_us = tt_loop_now_us(w->loop);
    rq->peer = &c->peer;
    rq->worker = w;
    rq->_conn = st;
    rq->_ops = &h2_req_ops;
    tt__req_set_id(rq, w, h);
    /* RFC 8441 4: an extended CONNECT (:protocol, allowed by our SETTINGS_ENABLE_CONNECT_PROTOCOL; nghttp2 checked
     * that :scheme and :path came with it) names a resource like any request, and its DATA are a tunnel's */
    const bool extended = h->method_id == TT_METHOD_CONNECT && st->has_protocol;
    const bool connect = h->method_id == TT_METHOD_CONNECT && !extended;
    if (extended) {
        rq->protocol = view(st, st->pseudo[4].value_off, st->pseudo[4].value_len);
        st->tunnel = true;
    }
    /* :path is origin-form (RFC 9113 8.3.1; nghttp2 checked its syntax); CONNECT has none */
    bool bad_path = !connect && (h->target.n == 0 || h->target.p[0] != '/' || !tt__req_set_path(rq, h->target));

    /* Lifecycle at a request boundary: this stream is served; the connection ends after it. */
    if (p->ka.max_requests && c->streams_total >= p->ka.max_requests)
        begin_goaway(c, TT_CLOSE_MAX_REQUESTS, TT_GOAWAY_MAX_REQUESTS);
    else if (p->ka.max_lifetime_ms && now(c) - c->accepted_ms >= p->ka.max_lifetime_ms)
        begin_goaway(c, TT_CLOSE_MAX_LIFETIME, TT_GOAWAY_MAX_LIFETIME);

    if (st->bad_target) {
        respond_error(st, 414);
        return;
    }
    if (st->bad_header) {
        respond_error(st, 431);
        return;
    }
    if (bad_semantics || bad_path) {
        respond_error(st, 400);
        return;
    }
    if (connect) {
        /* No route takes a tunnel (RFC 9113 8.5); the authority names no resource here (RFC 9110 10.2.1) */
        tt_req_respond_text(rq, 405, TT_STR("Allow: \r\n"));
        return;
    }
    if (h->content_length > 0 && (uint64_t)h->content_length > p->max_body_bytes) {
        respond_error(st, 413);
        return;
    }
    /* New streams use the newest router; a stream keeps the generation it started with until it is freed. */
    tt__wgen_t *g = w->cur;
    if (g->router == NULL) {
        tt_req_respond_text(rq, 404, TT_STR_NULL);
        return;
    }
    int r = tt_router_route(g->router, rq, tt_tls_sni(c->tr)); /* < 0: answered (404, 421, 301) */
    if (r < 0) return;
    const tt_route_t *rt = &g->router->routes[r];
    if (rt->ops->async) {
        st->gen = g;
        tt__wgen_ref(g);
    }
    rt->ops->handle(g->route_state[r], rq);
    /* The path may be in the worker's scratch, reused by the next request: nothing reads it after handle() */
    rq->path = rq->query = rq->authority = rq->protocol = TT_STR_NULL;
    if (st->body_done && async_live(st) && rq->hooks->on_body_end) rq->hooks->on_body_end(rq, TT_STR_NULL);
}

/* ---- nghttp2 callbacks ---- */

/* A client opens stream `id`: the odd ids it jumped over are closed for good (RFC 9113 5.1.1); remember them. */
static void note_opened(h2_conn_t *c, int32_t id)
{
    if (id <= c->last_opened) return;
    int32_t lo = c->last_opened + 2, hi = id - 2;
    if (c->last_opened == 0) lo = 1;
    c->last_opened = id;
    if (lo > hi) return;
    if (c->ngaps == MAX_GAPS) { /* forget the oldest range: a frame on it is then ignored, never a false error */
        memmove(c->skipped[0], c->skipped[1], (MAX_GAPS - 1) * sizeof(c->skipped[0]));
        c->ngaps--;
    }
    c->skipped[c->ngaps][0] = lo;
    c->skipped[c->ngaps][1] = hi;
    c->ngaps++;
}

/*
 * RFC 9113 5.1.1: the client's stream ids only grow; HEADERS on an odd id below the highest it opened, that it
 * never opened, is a connection error PROTOCOL_ERROR. nghttp2 ignores such a frame without a callback (it cannot
 * tell a skipped id from a stream it forgot, and trailers may still come on a stream the server reset), so tether
 * keeps the skipped ids and ends the connection itself. HEADERS on a stream that was opened stays nghttp2's to judge.
 */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user)
{
    h2_conn_t *c = user;
    int32_t id = hd->stream_id;
    if (hd->type != NGHTTP2_HEADERS || (id & 1) == 0 || id >= c->last_opened) return 0;
    for (uint8_t i = 0; i < c->ngaps; i++)
        if (id >= c->skipped[i][0] && id <= c->skipped[i][1]) {
            tt_log(TT_LOG_DEBUG, "h2 conn %llu: HEADERS on stream %d, below %d and never opened",
                   (unsigned long long)c->id, id, c->last_opened);
            nghttp2_session_terminate_session(s, NGHTTP2_PROTOCOL_ERROR);
            kick(c);
            break;
        }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    h2_conn_t *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    /* A header block (with its CONTINUATIONs) must end within the header timeout, like an HTTP/1.1 head. */
    tt_timer_arm(c->w->loop, &c->hdr_timer, c->ls->policy->header_timeout_ms);
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2_stream_t *st = tt_slab_alloc(&c->w->slab, sizeof(*st));
    memset(st, 0, offsetof(h2_stream_t, refs_inline));
    st->refs = st->refs_inline;
    st->refs_cap = REFS_INLINE;
    st->store = st->store_inline;
    st->store_cap = STORE_INLINE;
    st->c = c;
    st->id = frame->hd.stream_id;
    note_opened(c, st->id);
    /* RFC 9113 5.1.2: a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS is a stream error; tether counts
     * and refuses it itself (nghttp2 would end the whole connection: see send_settings) */
    st->refused = c->nbegun >= c->ls->policy->h2.max_concurrent_streams;
    c->nbegun++;
    if (st->refused) {
        tt_counter_add(&c->w->metrics.h2_refused_streams, 1);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
    }
    st->method_ref = st->path_ref = -1;
    st->content_length = -1;
    st->file.fd = -1;
    tt_list_push_tail(&c->streams, &st->link);
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)flags;
    h2_conn_t *c = user;
    h2_stream_t *st = c->hdr_st; /* the stream of the header block being decoded, not looked up per field */
    if (st == NULL || st->id != frame->hd.stream_id)
        st = c->hdr_st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL) return 0;
    tt_bufpool_t *bufs = &c->w->bufs;
    const tt_h1_limits_t *lim = &c->ls->policy->limits;
    if (st->dispatched) {
        /* trailers after the content, bounded like the fields */
        if (st->trailers.len + namelen + valuelen + 4 > lim->max_field_bytes) return 0;
        tt_buf_append(&st->trailers, bufs, name, namelen);
        tt_buf_append(&st->trailers, bufs, TT_LIT(": "));
        tt_buf_append(&st->trailers, bufs, value, valuelen);
        tt_buf_append(&st->trailers, bufs, TT_LIT("\r\n"));
        return 0;
    }
    st->header_bytes += (uint32_t)(namelen + valuelen + 32); /* RFC 9113 6.5.2 accounting */
    bool is_pseudo = namelen > 0 && name[0] == ':';
    /* The HTTP/1.1 limits, counted the same way: the target against max_request_target, the regular
     * fields as "name: value\r\n" lines against max_field_section. */
    if (is_pseudo && valuelen > lim->max_target) {
        if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            st->bad_target = true;
        else
            st->bad_header = true;
    }
    if (!is_pseudo) st->field_bytes += (uint32_t)(namelen + valuelen + 4);
    if (st->field_bytes > lim->max_field_bytes) st->bad_header = true;
    /* one field line, "name: value", against max_field_line (":authority" is the Host line) */
    bool authority = namelen == 10 && memcmp(name, ":authority", 10) == 0;
    if ((!is_pseudo || authority) && lim->max_field_line &&
        (authority ? 4 : namelen) + 2 + valuelen > lim->max_field_line)
        st->bad_header = true;
    if (st->bad_header || st->bad_target) return 0;
    uint32_t noff = store_append(st, name, namelen);
    uint32_t voff = store_append(st, value, valuelen);
    hdr_ref_t ref = {noff, (uint32_t)namelen, voff, (uint32_t)valuelen};
    if (is_pseudo) {
        static const struct {
            const char *name;
            size_t len;
        } pseudo[5] = {{":method", 7}, {":path", 5}, {":authority", 10}, {":scheme", 7}, {":protocol", 9}};
        for (int i = 0; i < 5; i++)
            if (namelen == pseudo[i].len && memcmp(name, pseudo[i].name, namelen) == 0) {
                st->pseudo[i] = ref;
                if (i == 0) st->method_ref = 0;
                if (i == 1) st->path_ref = 1;
                if (i == 4) st->has_protocol = true;
            }
        return 0;
    }
    if (st->nrefs >= lim->max_fields) {
        st->bad_header = true;
        return 0;
    }
    if (st->nrefs == st->refs_cap) {
        st->refs_cap *= 2;
        if (st->refs == st->refs_inline) {
            st->refs = tt_slab_alloc(&c->w->slab, st->refs_cap * sizeof(*st->refs));
            memcpy(st->refs, st->refs_inline, sizeof(st->refs_inline));
        } else {
            st->refs = tt_slab_realloc(&c->w->slab, st->refs, st->refs_cap * sizeof(*st->refs));
        }
    }
    st->refs[st->nrefs++] = ref;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    h2_conn_t *c = user;
    c->last_frame_ms = now(c);
    if (frame->hd.type != NGHTTP2_PING && frame->hd.type != NGHTTP2_GOAWAY) c->client_progress = true;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        tt_timer_disarm(c->w->loop, &c->hdr_timer); /* the block is whole */
        h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st == NULL || c->calm) break;
        if (st->refused) break; /* reset at its first HEADERS (on_begin_headers); never served */
        bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (!st->dispatched) {
            st->body_done = end;
            dispatch(st);
        } else if (end) {
            st->body_done = true;
            if (st->pending.len == 0) body_end(st);
        }
        break;
    }
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            h2_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
            if (st != NULL && !st->body_done) {
                st->body_done = true;
                if (st->pending.len == 0) body_end(st);
            }
        }
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            if (memcmp(frame->ping.opaque_data, PING_GOAWAY, 8) == 0 && c->goaway == GA_NOTICE) send_final_goaway(c);
            if (memcmp(frame->ping.opaque_data, PING_LIVE, 8) == 0 && c->ping_outstanding) {
                c->ping_outstanding = false;
                tt_hist_observe(&c->w->metrics.h2_ping_rtt_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds,
                                now(c) - c->ping_sent_ms);
                tt_timer_arm(c->w->loop, &c->ping_timer, c->ls->policy->h2.ping_interval_ms);
            }
        }
        break;
    case NGHTTP2_GOAWAY:
        if (c->goaway == GA_NONE) c->end_reason = TT_CLOSE_H2_GOAWAY;
        break;
    case NGHTTP2_RST_STREAM: count_client_reset(c); break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    h2_conn_t *c = user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL) {
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    st->body_seen += len;
    if (st->body_seen > c->ls->policy->max_body_bytes) {
        nghttp2_session_consume(s, id, len);
        if (!st->resp_submitted && !async_live(st)) {
            respond_error(st, 413);
        } else if (async_live(st)) {
            if (st->req.hooks->on_abort) st->req.hooks->on_abort(&st->req);
            st->req.hooks = NULL;
            if (!st->resp_submitted) respond_error(st, 413);
        }
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (async_live(st) && st->req.hooks->on_body) {
        if (st->paused || st->pending.len) {
            tt_buf_append(&st->pending, &c->w->bufs, data, len); /* credit returned when delivered */
            return 0;
        }
        st->req.hooks->on_body(&st->req, (const char *)data, len);
    }
    nghttp2_session_consume(s, id, len);
    return 0;
}

static void log_stream(h2_stream_t *st, tt_close_reason_t decision)
{
    h2_conn_t *c = st->c;
    if (st->head == NULL) return;
    char extra[64 + 320];
    int n = 0;
    if (tt_accesslog_wants_extra(&c->w->alog))
        n = snprintf(extra, sizeof(extra), "stream=%d%s%.*s", st->id, st->req.log_extra.n ? " " : "",
                     (int)TT_MIN(st->req.log_extra.n, 320), st->req.log_extra.p ? st->req.log_extra.p : "");
    tt_accesslog_rec_t rec = {
        .peer = &c->peer,
        .method = st->head->method,
        .target = st->head->target,
        .proto = "HTTP/2.0",
        .status = st->resp_submitted ? st->status : 499,
        .bytes = st->resp_bytes,
        .duration_ms = now(c) - st->req.start_ms,
        .conn_id = c->id,
        .req_no = st->req.req_no,
        .decision = tt_close_reason_name(decision),
        .extra = tt_str(extra, (size_t)TT_MAX(n, 0)),
        .stream_id = st->id,
        .head = st->head,
        .request_id = tt_str(st->req.request_id, st->req.request_id_len),
        .up = st->req.log_up,
    };
    tt_accesslog_add(&c->w->alog, &rec);
    if (!st->tunnel) /* a tunnel's line lasts as long as the tunnel: not a request's duration */
        tt_hist_observe(&c->ls->m->request_us[TT_PROTO_H2], tt_hist_lat_bounds, tt_hist_lat_nbounds,
                        tt_loop_now_us(c->w->loop) - st->start_us);
}

static void stream_free_cb(tt_defer_t *d)
{
    h2_stream_t *st = tt_container_of(d, h2_stream_t, free_later);
    tt_slab_t *slab = &st->c->w->slab;
    free(st->log_extra);
    if (st->refs != st->refs_inline) tt_slab_free(slab, st->refs);
    if (st->head != (tt_h1_request_t *)st->head_inline) tt_slab_free(slab, st->head);
    if (st->store != st->store_inline) tt_slab_free(slab, st->store); /* the head's views point into it */
    tt_slab_free(slab, st->resp_head);
    tt_slab_free(slab, st);
}

/* The stream is over: its buffers and file go back now; the request is done (calls on it are no-ops) and
 * its memory is freed at the end of the turn, so a handler still on the stack may touch it harmlessly. */
static void stream_free(h2_stream_t *st)
{
    tt_bufpool_t *bufs = &st->c->w->bufs;
    st->c->nbegun--;
    if (st->c->hdr_st == st) st->c->hdr_st = NULL;
    tt_list_remove(&st->link);
    if (st->file.fd >= 0 && st->file.release) st->file.release(st->file.ref);
    st->file.fd = -1;
    tt_slab_free(&st->c->w->slab, st->body);
    st->body = NULL;
    tt_buf_release(&st->pending, bufs);
    tt_buf_release(&st->trailers, bufs);
    tt_buf_release(&st->out, bufs);
    tt_buf_release(&st->resp_trailers, bufs);
    if (st->want_writable) st->c->nwant_writable--;
    st->req._done = true;
    st->req.hooks = NULL;
    st->async_done = true;
    if (st->gen != NULL) {
        tt__wgen_unref(st->gen);
        st->gen = NULL;
    }
    tt_loop_defer(st->c->w->loop, &st->free_later, stream_free_cb);
}

/* A stream ends: the handler drops its side if it had not finished, the line is logged, state freed. */
static void stream_end(h2_stream_t *st, tt_close_reason_t decision)
{
    log_stream(st, decision); /* first: log_extra belongs to the handler, which on_abort frees */
    if (async_live(st) && st->req.hooks->on_abort) {
        const tt_req_hooks_t *hooks = st->req.hooks;
        st->req.hooks = NULL;
        hooks->on_abort(&st->req);
    }
    if (st->dispatched) st->c->nstreams--;
    stream_free(st);
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user)
{
    (void)user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL) return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    stream_end(st, error_code == NGHTTP2_NO_ERROR ? TT_CLOSE_NONE : TT_CLOSE_RESET);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    h2_conn_t *c = user;
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(s, frame->hd.stream_id) == 0) {
        /* The response is complete before the request (a proxied origin's early 413, 401, redirect): the client
         * is asked to stop sending its content, without error (RFC 9113 8.1). */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code == NGHTTP2_NO_ERROR &&
        frame->goaway.last_stream_id == INT32_MAX && c->goaway == GA_NOTICE) {
        /* the notice is out: the PING behind it, and the real GOAWAY after its ACK or GOAWAY_WAIT_MS */
        nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, PING_GOAWAY);
        tt_timer_arm(c->w->loop, &c->ga_timer, GOAWAY_WAIT_MS);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        /* nghttp2 itself ended the session: the rapid-reset limit, or a protocol error */
        tt_goaway_reason_t r = frame->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM ? TT_GOAWAY_ENHANCE_YOUR_CALM
                               : frame->goaway.error_code == NGHTTP2_PROTOCOL_ERROR  ? TT_GOAWAY_PROTOCOL_ERROR
                                                                                     : TT_GOAWAY_OTHER_ERROR;
        count_goaway(c, r);
        c->end_reason = TT_CLOSE_BAD_REQUEST;
        c->goaway = GA_FINAL;
    }
    return 0;
}

/* ---- I/O ---- */

/* nghttp2 refused the input for good. A client preface that is not one (RFC 9113 3.4: "PRI * HTTP/2.0" then
 * anything but "SM") is answered with GOAWAY(PROTOCOL_ERROR) like any connection error; nghttp2 sends its own
 * GOAWAY for the errors it finds in frames. The connection closes once that is out (h2_settle). */
static void recv_failed(h2_conn_t *c, int err)
{
    tt_log(TT_LOG_DEBUG, "h2 conn %llu: %s", (unsigned long long)c->id, nghttp2_strerror(err));
    if (err == NGHTTP2_ERR_BAD_CLIENT_MAGIC) nghttp2_session_terminate_session(c->s, NGHTTP2_PROTOCOL_ERROR);
    if (c->end_reason == TT_CLOSE_NONE) c->end_reason = TT_CLOSE_BAD_REQUEST;
    c->goaway = GA_FINAL;
}

/* Feeds what the socket has to nghttp2. False when the connection closed. */
static bool h2_read(h2_conn_t *c)
{
    tt_worker_t *w = c->w;
    for (int i = 0; i < 16 && c->rd_ready && !c->calm; i++) {
        if (!tt_buf_reserve(&c->in, &w->bufs, READ_CHUNK, 1 << 20)) return true;
        size_t space = tt_buf_space(&c->in);
        ssize_t n = tt_transport_read(c->tr, c->io.fd, tt_buf_tail(&c->in), space);
        if (n == -EAGAIN) {
            c->rd_ready = false;
            break;
        }
        if (n == -EINTR) continue;
        if (n <= 0) {
            h2_close(c, n == 0 ? TT_CLOSE_CLIENT_CLOSE : n == -EPROTO ? TT_CLOSE_TLS_ERROR : TT_CLOSE_RESET);
            return false;
        }
        if (tt_transport_drained(c->tr, n, space, c->peer_hup)) c->rd_ready = false;
        ssize_t r = nghttp2_session_mem_recv(c->s, (const uint8_t *)tt_buf_tail(&c->in), (size_t)n);
        if (r < 0) {
            recv_failed(c, (int)r);
            return !c->closed;
        }
        if (c->closed) return false;
    }
    tt_buf_release(&c->in, &w->bufs);
    return true;
}

/* Pulls frames from nghttp2 and writes them. False when the connection closed. */
static bool h2_write_out(h2_conn_t *c)
{
    tt_worker_t *w = c->w;
    for (;;) {
        while (c->out.len < OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                h2_close(c, TT_CLOSE_RESET);
                return false;
            }
            if (n == 0) break;
            tt_buf_append(&c->out, &w->bufs, data, (size_t)n);
        }
        if (c->out.len == 0) break;
        ssize_t n = tt_transport_write(c->tr, c->io.fd, tt_buf_data(&c->out), c->out.len, false);
        if (n == -EAGAIN) {
            c->wr_blocked = true;
            if (c->tq_kind != TQ_SEND) set_tq(c, TQ_SEND);
            return true;
        }
        if (n == -EINTR) continue;
        if (n < 0) {
            h2_close(c, n == -EPROTO ? TT_CLOSE_TLS_ERROR : TT_CLOSE_RESET);
            return false;
        }
        tt_buf_consume(&c->out, (size_t)n);
        if (c->tq_kind == TQ_SEND) set_tq(c, TQ_SEND); /* progress: the send timeout starts over */
    }
    c->wr_blocked = false;
    tt_buf_release(&c->out, &w->bufs);
    if (c->tq_kind == TQ_SEND) set_tq(c, TQ_NONE);
    return true;
}

/* A response with content ready to go that the client's flow-control windows hold back (RFC 9113 6.9). */
static bool held_by_window(const h2_conn_t *c, const h2_stream_t *st)
{
    if (!st->resp_submitted || !st->resp_with_data || st->resp_eof_sent || st->resp_deferred) return false;
    if (st->out.len == 0 && !(st->file.fd >= 0 && st->file.len > 0) && !st->resp_eof) return false;
    return nghttp2_session_get_stream_remote_window_size(c->s, st->id) <= 0 ||
           nghttp2_session_get_remote_window_size(c->s) <= 0;
}

/* Whether the open streams wait on the client, and for what: flow-control credit for a response (the send
 * timeout, as nginx's send_timeout covers a stalled window) or request content (the body timeout). Streams
 * that wait on their handler (an upstream) are the handler's deadlines' business. Without these a client
 * that never grants window, or never sends the content it announced, held the connection for ever. */
static enum tq_kind waiting_on_client(const h2_conn_t *c)
{
    enum tq_kind kind = TQ_NONE;
    const tt_list_t *pos;
    for (pos = c->streams.next; pos != &c->streams; pos = pos->next) {
        const h2_stream_t *st = tt_container_of(pos, h2_stream_t, link);
        if (!st->dispatched || st->refused) continue;
        if (held_by_window(c, st)) return TQ_WINDOW;
        if (!st->body_done && !st->tunnel) kind = TQ_BODY; /* a tunnel's idle deadline is its handler's */
    }
    return kind;
}

/* After I/O: close when the session is over, idle when no stream is open, else wait. */
static void h2_settle(h2_conn_t *c)
{
    if (c->closed || c->wr_blocked) return;
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s)) {
        h2_close(c, c->end_reason ? (tt_close_reason_t)c->end_reason : TT_CLOSE_CLIENT_CLOSE);
        return;
    }
    if (c->goaway == GA_FINAL && c->nstreams == 0) {
        h2_close(c, c->end_reason ? (tt_close_reason_t)c->end_reason : TT_CLOSE_H2_GOAWAY);
        return;
    }
    if (c->nstreams > 0 || c->goaway != GA_NONE) {
        /* The deadline starts when the wait does and starts over whenever the client moves a stream on. */
        enum tq_kind want = c->nstreams > 0 ? waiting_on_client(c) : TQ_NONE;
        if (want != TQ_NONE && (want != c->tq_kind || c->client_progress))
            set_tq(c, want);
        else if (want == TQ_NONE && c->tq_kind != TQ_NONE && c->tq_kind != TQ_SEND)
            set_tq(c, TQ_NONE);
        c->client_progress = false;
        return;
    }
    c->client_progress = false;
    if (c->w->draining) {
        begin_goaway(c, TT_CLOSE_SHUTDOWN, TT_GOAWAY_SHUTDOWN);
        return;
    }
    if (!c->idle) {
        /* the idle timeout runs only while no stream is open; PINGs do not restart it */
        const tt_listen_policy_t *p = c->ls->policy;
        uint64_t idle = tt_keepalive_pressure_idle(p->ka.idle_timeout_ms, c->w->nconns, c->w->conf->max_connections);
        if (idle < p->ka.idle_timeout_ms) tt_counter_add(&c->w->metrics.idle_timeout_cuts, 1);
        c->idle_bucket = (uint8_t)tt_keepalive_pick_bucket(c->ls->idle_ms, c->ls->nidle, idle);
        c->idle = true;
        c->idle_since_ms = now(c);
        tt_gauge_add(&c->w->metrics.conn_idle, 1);
        set_tq(c, TQ_IDLE);
        tt__worker_conn_idle(c->w);
    }
}

/* Calls on_writable on the streams whose writer was told to wait and whose output went below the low-water
 * mark (nghttp2 took it as the flow-control windows allowed). Outside the session's callbacks, so a hook may
 * write again at once. False when the connection closed. */
static bool notify_writable(h2_conn_t *c)
{
    tt_list_t *pos, *tmp;
    tt_list_foreach_safe(pos, tmp, &c->streams)
    {
        if (c->nwant_writable == 0) break;
        h2_stream_t *st = tt_container_of(pos, h2_stream_t, link);
        if (!st->want_writable || st->out.len >= STREAM_OUT_LOW) continue;
        st->want_writable = false;
        c->nwant_writable--;
        if (async_live(st) && st->req.hooks->on_writable) st->req.hooks->on_writable(&st->req);
        if (c->closed) return false;
    }
    return true;
}

static void h2_run(h2_conn_t *c)
{
    c->in_run = true;
    for (int round = 0; round < 4 && !c->closed; round++) {
        if (c->rd_ready && !h2_read(c)) return;
        if (!c->wr_blocked && !h2_write_out(c)) return;
        if (!c->rd_ready) break;
    }
    c->in_run = false;
    if (c->nwant_writable > 0 && !notify_writable(c)) return;
    h2_settle(c);
    if (!c->closed && c->rd_ready) tt_loop_defer(c->w->loop, &c->kick, kick_cb); /* fairness: more next turn */
}

static void h2_on_io(tt_io_t *io, uint32_t events)
{
    h2_conn_t *c = tt_container_of(io, h2_conn_t, io);
    if (c->closed) return;
    if (events & TT_EV_ERR) {
        h2_close(c, TT_CLOSE_RESET);
        return;
    }
    if (events & TT_EV_READ) c->rd_ready = true;
    if (events & TT_EV_HUP) c->peer_hup = true;
    if (events & TT_EV_WRITE) {
        c->wr_blocked = false;
        if (c->tr->want_write) c->rd_ready = true;
    }
    h2_run(c);
}

/* ---- closing ---- */

static void free_cb(tt_defer_t *d)
{
    h2_conn_t *c = tt_container_of(d, h2_conn_t, free_later);
    if (c->kick._queued)
        tt_loop_defer(c->w->loop, &c->free_later, free_cb);
    else
        free(c);
}

static void h2_close(h2_conn_t *c, tt_close_reason_t reason)
{
    if (c->closed) return;
    tt_worker_t *w = c->w;
    c->closed = true;
    if (c->idle) tt_gauge_add(&w->metrics.conn_idle, -1);
    c->idle = false;
    set_tq(c, TQ_NONE);
    tt_timer_disarm(w->loop, &c->ga_timer);
    tt_timer_disarm(w->loop, &c->ping_timer);
    tt_timer_disarm(w->loop, &c->hdr_timer);
    /* Streams still open end with the connection (nghttp2_session_del frees its own without callbacks). */
    while (!tt_list_is_empty(&c->streams)) {
        h2_stream_t *st = tt_container_of(tt_list_first(&c->streams), h2_stream_t, link);
        nghttp2_session_set_stream_user_data(c->s, st->id, NULL);
        stream_end(st, reason);
    }
    if (c->s != NULL) nghttp2_session_del(c->s);
    c->s = NULL;
    if (reason != TT_CLOSE_RESET && reason != TT_CLOSE_TLS_ERROR && tt_transport_is_tls(c->tr))
        tt_transport_shutdown(c->tr, c->io.fd);
    /* Counted before the socket closes: a peer that saw the close finds it in the metrics. */
    tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H2][tt_transport_is_tls(c->tr)], -1);
    tt_counter_add(&w->metrics.conn_closed[reason], 1);
    tt_gauge_add(&w->metrics.conn_open, -1);
    tt_hist_observe(&w->metrics.reqs_per_conn, tt_hist_reqs_bounds, tt_hist_reqs_nbounds, c->streams_total);
    tt_hist_observe(&w->metrics.h2_streams_per_conn, tt_hist_reqs_bounds, tt_hist_reqs_nbounds, c->streams_total);
    tt_metrics_conn_closed(&w->metrics, reason, now(c) - c->accepted_ms, c->streams_total);
    tt_transport_free(&c->tr);
    tt_buf_release(&c->in, &w->bufs);
    tt_buf_release(&c->out, &w->bufs);
    close(c->io.fd);
    c->io.fd = -1;
    tt_list_remove(&c->base.link);
    tt__wgen_unref(c->ls->gen);
    tt_loop_defer(w->loop, &c->free_later, free_cb);
    tt__worker_conn_closed(w);
}

/* ---- the worker's ops ---- */

static void op_on_timeout(tt__conn_t *base)
{
    h2_conn_t *c = tt_container_of(base, h2_conn_t, base);
    enum tq_kind kind = (enum tq_kind)c->tq_kind;
    c->tq_kind = TQ_NONE;
    switch (kind) {
    case TQ_IDLE:
        c->idle = false;
        tt_gauge_add(&c->w->metrics.conn_idle, -1);
        count_goaway(c, TT_GOAWAY_IDLE_TIMEOUT);
        c->end_reason = TT_CLOSE_IDLE_TIMEOUT;
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR,
                              NULL, 0);
        c->goaway = GA_FINAL;
        h2_write_out(c); /* best effort; the close follows */
        h2_close(c, TT_CLOSE_IDLE_TIMEOUT);
        break;
    case TQ_SEND:
    case TQ_WINDOW: h2_close(c, TT_CLOSE_SEND_TIMEOUT); break;
    case TQ_BODY: h2_close(c, TT_CLOSE_BODY_TIMEOUT); break;
    case TQ_HEADER: h2_close(c, TT_CLOSE_HEADER_TIMEOUT); break;
    case TQ_NONE: break;
    }
}

static void op_close(tt__conn_t *base, tt_close_reason_t reason)
{
    h2_conn_t *c = tt_container_of(base, h2_conn_t, base);
    if (reason == TT_CLOSE_EVICTED && c->s != NULL) {
        count_goaway(c, TT_GOAWAY_EVICTED);
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR,
                              NULL, 0);
        h2_write_out(c);
    }
    h2_close(c, reason);
}

static void op_drain(tt__conn_t *base)
{
    h2_conn_t *c = tt_container_of(base, h2_conn_t, base);
    begin_goaway(c, TT_CLOSE_SHUTDOWN, TT_GOAWAY_SHUTDOWN);
}

static void op_abort(tt__conn_t *base)
{
    h2_close(tt_container_of(base, h2_conn_t, base), TT_CLOSE_SHUTDOWN);
}

/* What the status page shows of this connection (conn_report.c); on the owning worker. */
static void op_info(const tt__conn_t *base, uint64_t now_ms, tt_conn_info_t *out)
{
    const h2_conn_t *c = tt_container_of(base, h2_conn_t, base);
    out->id = c->id;
    out->age_ms = now_ms - c->accepted_ms;
    out->idle_ms = c->idle ? now_ms - c->idle_since_ms : 0;
    out->requests = c->streams_total;
    out->listener = tt__lstate_index(c->ls);
    out->tls = c->ls->tls != NULL;
    out->h2 = true;
    out->peer = c->peer;
    out->state = c->idle           ? TT_CONN_IDLE
                 : c->closed       ? TT_CONN_CLOSING
                 : c->nstreams > 0 ? TT_CONN_WRITING
                                   : TT_CONN_READING;
}

static const tt__conn_ops_t h2_ops = {
    .on_timeout = op_on_timeout,
    .close = op_close,
    .drain = op_drain,
    .abort = op_abort,
    .info = op_info,
};

/* ---- adoption ---- */

/* A new callbacks object; nghttp2 copies it into the session, so the caller frees it after session_new. */
static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cb = NULL;
    if (nghttp2_session_callbacks_new(&cb) == 0) {
        nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    }
    return cb;
}

/* The server's first SETTINGS (RFC 9113 3.4). SETTINGS_MAX_CONCURRENT_STREAMS is added to the frame after
 * nghttp2 serialised it, so that nghttp2 never learns the limit: past an acknowledged limit nghttp2 ends the
 * whole connection with PROTOCOL_ERROR, where RFC 9113 5.1.2 asks for a stream error. tether enforces the
 * limit itself (on_begin_headers: RST_STREAM REFUSED_STREAM). The client acknowledges the one frame, which
 * is the one nghttp2 expects an ACK for. */
static void send_settings(h2_conn_t *c)
{
    const tt_listen_policy_t *lp = c->ls->policy;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lp->h2.initial_window},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, lp->h2.header_table_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)(lp->limits.max_field_bytes + lp->limits.max_target)},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441 3: WebSockets over HTTP/2 */
        /* RFC 9218 2.1: tether serves streams in the order they are ready and never used the RFC 7540 dependency
         * tree; without it nghttp2 keeps no tree per stream (a simpler scheduler per urgency). */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, settings, TT_ARRAY_SIZE(settings));
    const uint8_t *d;
    ssize_t n = nghttp2_session_mem_send(c->s, &d);
    if (n <= 0) return;
    size_t len = (size_t)d[0] << 16 | (size_t)d[1] << 8 | d[2];
    bool settings_frame = n >= 9 && d[3] == NGHTTP2_SETTINGS && d[4] == 0 && (size_t)n >= 9 + len;
    if (!settings_frame) { /* not what nghttp2 sends first: send it as it is; the limit is still enforced */
        tt_buf_append(&c->out, &c->w->bufs, d, (size_t)n);
        return;
    }
    uint32_t v = lp->h2.max_concurrent_streams;
    uint8_t hd[9], entry[6] = {0,
                               NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                               (uint8_t)(v >> 24),
                               (uint8_t)(v >> 16),
                               (uint8_t)(v >> 8),
                               (uint8_t)v};
    memcpy(hd, d, 9);
    hd[0] = (uint8_t)((len + 6) >> 16);
    hd[1] = (uint8_t)((len + 6) >> 8);
    hd[2] = (uint8_t)(len + 6);
    tt_buf_append(&c->out, &c->w->bufs, hd, 9);
    tt_buf_append(&c->out, &c->w->bufs, d + 9, len);
    tt_buf_append(&c->out, &c->w->bufs, entry, sizeof(entry));
    tt_buf_append(&c->out, &c->w->bufs, d + 9 + len, (size_t)n - 9 - len);
}

void tt__h2_conn_adopt(tt__lstate_t *ls, tt_io_t *from, tt_transport_t *tr, const tt_addr_t *peer, uint64_t id,
                       uint64_t accepted_ms, const char *in, size_t inlen)
{
    tt_worker_t *w = ls->w;
    const tt_h2_policy_t *p = &ls->policy->h2;
    h2_conn_t *c = tt_calloc(1, sizeof(*c));
    c->base.ops = &h2_ops;
    tt_tq_entry_init(&c->base.tq);
    c->ls = ls;
    c->w = w;
    c->tr = tr;
    c->id = id;
    c->accepted_ms = accepted_ms;
    c->peer = *peer;
    c->last_frame_ms = tt_loop_now(w->loop);
    c->io.cb = h2_on_io;
    tt_list_init(&c->streams);
    tt_timer_init(&c->ga_timer, ga_on_timer);
    tt_timer_init(&c->ping_timer, ping_on_timer);
    tt_timer_init(&c->hdr_timer, hdr_on_timer);
    c->reset_tokens = (double)p->reset_burst;
    c->reset_ms = tt_loop_now(w->loop);
    tt_list_push_tail(&w->conns, &c->base.link);
    tt_gauge_add(&w->metrics.conn_open_by[TT_PROTO_H2][tt_transport_is_tls(tr)], 1);
    tt_io_transfer(w->loop, from, &c->io);

    nghttp2_option *opt = NULL;
    nghttp2_session_callbacks *cb = callbacks();
    int rv = cb == NULL ? NGHTTP2_ERR_NOMEM : nghttp2_option_new(&opt);
    if (rv == 0) {
        nghttp2_option_set_no_auto_window_update(opt, 1);
        /* tether counts client resets itself (count_client_reset: ENHANCE_YOUR_CALM, and nothing more served);
         * nghttp2's own limiter would answer INTERNAL_ERROR and keep serving until its GOAWAY is out. */
        nghttp2_option_set_stream_reset_rate_limit(opt, UINT32_MAX, UINT32_MAX);
        nghttp2_option_set_max_deflate_dynamic_table_size(opt, p->header_table_size);
        /* closed streams are kept by nghttp2 only for the RFC 7540 priority tree, which tether does not use */
        nghttp2_option_set_no_closed_streams(opt, 1);
        nghttp2_mem mem = tt_slab_nghttp2_mem(&w->slab);
        rv = nghttp2_session_server_new3(&c->s, cb, c, opt, &mem);
    }
    if (cb != NULL) nghttp2_session_callbacks_del(cb);
    if (opt != NULL) nghttp2_option_del(opt);
    if (rv != 0) {
        /* Out of memory: this connection ends (reset), the worker goes on. */
        tt_log(TT_LOG_WARN, "h2 conn %llu: %s", (unsigned long long)id, nghttp2_strerror(rv));
        c->s = NULL;
        h2_close(c, TT_CLOSE_RESET);
        return;
    }
    send_settings(c);
    if (p->ping_interval_ms) tt_timer_arm(w->loop, &c->ping_timer, p->ping_interval_ms);
    ssize_t r = inlen > 0 ? nghttp2_session_mem_recv(c->s, (const uint8_t *)in, inlen) : 0;
    if (r < 0) recv_failed(c, (int)r);
    c->rd_ready = true; /* TLS may hold decrypted bytes already; a read tells */
    h2_run(c);
}
