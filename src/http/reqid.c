/* reqid.c -- the request id: the client's X-Request-Id when it is acceptable, else 128 random bits in hex; made when
 * something first reads it (an access-log format with $request_id, the X-Request-Id forwarded upstream) */
#include "http/worker.h"

/* A client's id is kept when it could not break a log line or a field: visible ASCII, not too long. */
static bool acceptable(tt_str_t v)
{
    if (v.n == 0 || v.n > TT_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < v.n; i++)
        if ((unsigned char)v.p[i] <= 0x20 || (unsigned char)v.p[i] >= 0x7f) return false;
    return true;
}

static void make_id(tt_req_t *rq, tt_worker_t *w, const tt_h1_request_t *h)
{
    static const char hex[] = "0123456789abcdef";
    tt_request_id_mode_t mode = w->conf->request_id;
    if (mode == TT_REQUEST_ID_OFF) return;
    if (mode == TT_REQUEST_ID_ON && h != NULL && h->nfields > 0) {
        int i = tt_h1_find_field(h, TT_LIT("x-request-id"));
        if (i >= 0 && acceptable(h->fields[i].value)) {
            memcpy(rq->request_id, h->fields[i].value.p, h->fields[i].value.n);
            rq->request_id_len = (uint8_t)h->fields[i].value.n;
            return;
        }
    }
    for (int k = 0; k < 2; k++) {
        uint64_t r = tt_rand_next(&w->rng);
        for (int j = 0; j < 16; j++, r >>= 4) rq->request_id[k * 16 + j] = hex[r & 15];
    }
    rq->request_id_len = 32;
}

void tt__req_set_id(tt_req_t *rq, tt_worker_t *w, const tt_h1_request_t *h)
{
    rq->request_id_len = 0;
    rq->_id_pending = false;
    if (w->conf->request_id == TT_REQUEST_ID_OFF) return;
    if (tt_accesslog_reads_request_id(&w->alog))
        make_id(rq, w, h); /* every line needs it, and an asynchronous request's line comes after its head is gone */
    else
        rq->_id_pending = true;
}

tt_str_t tt_req_id(const tt_req_t *req)
{
    /* The id is decided once, at the first read: filling it in is not a change the caller can see, and no tt_req_t
     * is defined const (they live in connections and streams), so writing through this pointer is sound. */
    tt_req_t *rq = (tt_req_t *)req;
    if (rq->_id_pending) {
        rq->_id_pending = false;
        make_id(rq, rq->worker, rq->head);
    }
    return tt_str(rq->request_id, rq->request_id_len);
}
