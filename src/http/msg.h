/* msg.h -- what a handler sees of a request and gives back as a response, whatever the protocol
 *
 * A handler is called with a tt_req_t. A synchronous handler answers with tt_req_respond() before it
 * returns. An asynchronous one sets hooks (tt_req_set_hooks) to receive the request content and client
 * events, and answers later from the same worker, whole (tt_req_respond) or streamed (tt_req_respond_head,
 * tt_req_write, tt_req_finish). The views in the request (head, path, query) are valid only until
 * handle() returns: a handler that answers later copies what it needs.
 *
 * Lifetime (docs/design.md, "Lifetimes"): the protocol connection owns every tt_req_t. A request is
 * finished when its response is complete (tt_req_respond, tt_req_finish, tt_req_fail) or when the client is
 * gone (hooks->on_abort). Finishing marks it done and queues its free for the end of the loop turn; every
 * call below on a finished request is a no-op (tt_req_write returns false), so a handler that finishes
 * the request and then touches it in the same turn does no harm. After the turn it must not use it at all.
 */
#ifndef TT_HTTP_MSG_H
#define TT_HTTP_MSG_H

#include "http/accesslog.h"
#include "http/h1_parse.h"
#include "net/addr.h"
#include "net/tunnel.h"

typedef struct tt_worker tt_worker_t;
typedef struct tt_req tt_req_t;

/** A byte range of an open file sent with sendfile(2); `release(ref)` runs once when it is sent or dropped. */
typedef struct tt_body_file {
    int fd; /* -1: no file body */
    int64_t off;
    int64_t len;
    void (*release)(void *ref);
    void *ref;
} tt_body_file_t;

/** A response. Everything it points to is copied or referenced (file) by tt_req_respond(). */
typedef struct tt_resp {
    int status;
    tt_str_t fields;        /* extra field lines, each "Name: value\r\n"; copied */
    int64_t content_length; /* content bytes (the GET size for HEAD); -1: none sent (1xx, 204, 304) */
    const void *body;       /* in-memory content of `body_len` bytes, copied; not sent for HEAD */
    size_t body_len;
    tt_body_file_t file; /* file content when file.fd >= 0, after `body`; released for HEAD */
} tt_resp_t;

/** Initialises `r` as an empty response with `status` and no body. */
static inline void tt_resp_init(tt_resp_t *r, int status)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->content_length = -1;
    r->file.fd = -1;
}

/** Callbacks an asynchronous handler sets on its request (tt_req_set_hooks); all on the owning worker. */
typedef struct tt_req_hooks {
    /** Request content, decoded from its framing, in order; at most one call per read. */
    void (*on_body)(tt_req_t *req, const char *data, size_t len);
    /** The request content is complete (also called, at once, for a request without content); `trailers`
     *  are the trailer field lines of a chunked request ("Name: value\r\n" each), valid during the call. */
    void (*on_body_end)(tt_req_t *req, tt_str_t trailers);
    /** The response output drained after tt_req_write() returned false. */
    void (*on_writable)(tt_req_t *req);
    /** The client connection is gone (reset, timeout, shutdown deadline), or the request was refused mid-way
     *  (bad content framing, too large: tether answers it itself). The handler drops its own state here and
     *  must not answer; no hook is called afterwards, and calls on the request after this returns are
     *  no-ops. The request is freed at the end of the turn. */
    void (*on_abort)(tt_req_t *req);
} tt_req_hooks_t;

/** How a protocol connection implements the response calls below (private to src/http). */
typedef struct tt_req_ops {
    void (*respond)(tt_req_t *req, const tt_resp_t *resp);
    void (*respond_head)(tt_req_t *req, const tt_resp_t *head);
    bool (*write)(tt_req_t *req, const void *data, size_t len);
    void (*finish)(tt_req_t *req, tt_str_t trailers);
    void (*fail_response)(tt_req_t *req);
    void (*pause_body)(tt_req_t *req, bool pause);
    void (*interim)(tt_req_t *req, int status, tt_str_t fields);
    bool (*upgrade)(tt_req_t *req, tt_str_t fields, tt_tunnel_t *t); /* NULL: the protocol has no Upgrade */
    void (*close_tunnel)(tt_req_t *req, tt_close_reason_t reason);
} tt_req_ops_t;

/** A request as handlers see it. */
struct tt_req {
    const tt_h1_request_t *head; /* method, target, version, fields: valid only during handle() */
    tt_str_t path;               /* request-target path, normalized (uri.h: dot-segments removed, unreserved characters
                                    decoded, the rest still percent-encoded; absolute-form reduced); as head */
    tt_str_t query;              /* after '?', without it, as sent; empty when absent; as head */
    tt_str_t protocol;      /* HTTP/2 extended CONNECT (RFC 8441 4): the :protocol pseudo-header ("websocket"); empty
                               otherwise; as head */
    tt_str_t authority;     /* the target's authority (absolute-form) or Host (HTTP/2: :authority); empty when none;
                               as head (RFC 9112 3.2.2: it replaces Host) */
    bool is_head;           /* HEAD: the response carries no content */
    bool has_body;          /* the request has content (Content-Length > 0 or chunked) */
    int64_t content_length; /* -1 when chunked or absent */
    int minor_version;      /* HTTP/1.minor of the request (1 for HTTP/2) */
    int major_version;      /* 1, or 2 for HTTP/2 */
    bool tls;               /* the client connection is TLS (https) */
    uint64_t conn_id;       /* the connection's id, unique in the process */
    uint32_t req_no;        /* 1 for the first request on the connection */
    uint64_t start_ms;      /* loop time the request head began */
    const tt_addr_t *peer;  /* client address */
    tt_worker_t *worker;    /* the worker serving it */
    const tt_req_hooks_t *hooks; /* set by an asynchronous handler, NULL otherwise */
    void *ctx;                   /* the handler's, with the hooks */
    tt_str_t log_extra;          /* appended to the access-log line; the handler owns the bytes until finish,
                                    or clears it in on_abort when it frees them */
    void *_conn;                 /* private: the protocol connection */
    const tt_req_ops_t *_ops;    /* private: the protocol's writer */
    bool _done;                  /* private: finished; every call below is a no-op (see "Lifetime" above) */

    /* the log's view of the request */
    const tt_accesslog_up_t *log_up;    /* a proxied request's upstream side for the log line; as log_extra */
    bool _id_pending;                   /* private: the id is made at its first use (tt_req_id) */
    uint8_t request_id_len;             /* bytes of request_id; 0: none ([log] request_id = off), or not made yet */
    char request_id[TT_REQUEST_ID_MAX]; /* X-Request-Id: the client's when kept, else generated (32 hex digits);
                                           read it through tt_req_id(); logged as $request_id, forwarded upstream */
};

/**
 * Sends a whole response: head, in-memory content and/or a file range. Call exactly once per request,
 * instead of the three calls below. Owning worker only.
 */
static inline void tt_req_respond(tt_req_t *req, const tt_resp_t *resp)
{
    if (req->_done) {
        if (resp->file.fd >= 0 && resp->file.release) resp->file.release(resp->file.ref); /* ours to drop */
        return;
    }
    req->_ops->respond(req, resp);
}

/**
 * Starts a streamed response: `head` gives status, fields and content_length (-1: unknown, sent chunked
 * to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones); its body/file members are ignored.
 */
static inline void tt_req_respond_head(tt_req_t *req, const tt_resp_t *head)
{
    if (!req->_done) req->_ops->respond_head(req, head);
}
/** Queues content bytes (copied). Returns false when the output is above its high-water mark: stop
 *  producing until hooks->on_writable. */
static inline bool tt_req_write(tt_req_t *req, const void *data, size_t len)
{
    return !req->_done && req->_ops->write(req, data, len);
}
/** Ends the response; `trailers` ("Name: value\r\n" lines, copied) are sent when the response is chunked.
 *  The request is finished afterwards: the handler must not touch it again. */
static inline void tt_req_finish(tt_req_t *req, tt_str_t trailers)
{
    if (!req->_done) req->_ops->finish(req, trailers);
}
/** Ends a streamed response that cannot be completed (the upstream failed mid-content): what is queued is
 *  sent, then the connection closes so the client sees the truncation. The request is finished. */
static inline void tt_req_fail(tt_req_t *req)
{
    if (!req->_done) req->_ops->fail_response(req);
}
/** Stops (true) or resumes (false) the delivery of request content to hooks->on_body: backpressure. */
static inline void tt_req_pause_body(tt_req_t *req, bool pause)
{
    if (!req->_done) req->_ops->pause_body(req, pause);
}
/**
 * Sends an interim response (RFC 9110 15.2): `status` 100 or 102..199 and its `fields` (copied), before the final
 * response. Dropped for an HTTP/1.0 client (RFC 9110 15.2: a server must not send it one), once the final head
 * began, and for a 100 when the connection already sent its own 100 Continue (a client gets one 100, not two).
 */
static inline void tt_req_interim(tt_req_t *req, int status, tt_str_t fields)
{
    if (!req->_done) req->_ops->interim(req, status, fields);
}
/**
 * Answers 101 Switching Protocols with `fields` (copied; they carry Upgrade and Connection: upgrade) and makes the
 * client connection the client side of tunnel `t` (RFC 9110 7.8): the head and everything queued before it go out
 * through the tunnel, and bytes the client sent after its request become the tunnel's. The connection keeps its
 * socket and state "tunnel" until tt_req_close_tunnel() (or it closes itself: drain deadline, shutdown, which
 * hooks->on_abort reports). False, with nothing sent, when the connection cannot (HTTP/2, request content still
 * coming, output of an earlier response still queued): the caller answers otherwise.
 */
static inline bool tt_req_upgrade(tt_req_t *req, tt_str_t fields, tt_tunnel_t *t)
{
    return !req->_done && req->_ops->upgrade != NULL && req->_ops->upgrade(req, fields, t);
}
/** Ends a tunnelled request: writes its access-log line (status 101, bytes each way, duration) and closes the
 *  client connection with `reason`. The request is finished (no on_abort follows). */
static inline void tt_req_close_tunnel(tt_req_t *req, tt_close_reason_t reason)
{
    if (!req->_done && req->_ops->close_tunnel != NULL) req->_ops->close_tunnel(req, reason);
}
/** Makes the handler asynchronous: `hooks` (static storage) and `ctx` are used until finish or abort. */
static inline void tt_req_set_hooks(tt_req_t *req, const tt_req_hooks_t *hooks, void *ctx)
{
    req->hooks = hooks;
    req->ctx = ctx;
}

/**
 * The request id ([log] request_id, docs/observability.md "Request ids"): the client's X-Request-Id when the mode
 * keeps it, else 32 random hex digits; empty with request_id = off. Made at the first call, not for every request
 * (most are never asked: no access log reading $request_id, no upstream), so call it while the head is valid (during
 * handle()) to see the client's field; the same id every call after. The view points into `req`. Owning worker only
 * (reqid.c).
 */
tt_str_t tt_req_id(const tt_req_t *req);

/** Responds with `status`, its reason phrase as text/plain content, and `fields` (may be empty). */
void tt_req_respond_text(tt_req_t *req, int status, tt_str_t fields);

/** Standard reason phrase for `status` (RFC 9110 15), "Unknown" for others. */
const char *tt_http_reason(int status);

/** True when a response with `status` to a request carries no content by definition (1xx, 204, 304). */
static inline bool tt_http_status_has_no_content(int status)
{
    return status < 200 || status == 204 || status == 304;
}

#endif
