/* msg.h -- what a handler sees of a request and gives back as a response, whatever the protocol
 *
 * A handler is called with a tt_req_t and answers by calling tt_req_respond() exactly once, either
 * before it returns or later from the same worker. The views in the request (head, path, query) are
 * valid only until handle() returns: a handler that answers later copies what it needs.
 */
#ifndef TT_HTTP_MSG_H
#define TT_HTTP_MSG_H

#include "http/h1_parse.h"
#include "net/addr.h"

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

/** A request as handlers see it. */
struct tt_req {
    const tt_h1_request_t *head; /* method, target, version, fields: views valid until the response */
    tt_str_t path;               /* request-target path, still percent-encoded (absolute-form reduced) */
    tt_str_t query;              /* after '?', without it; empty when absent */
    bool is_head;                /* HEAD: the response carries no content */
    uint64_t conn_id;            /* the connection's id, unique in the process */
    uint32_t req_no;             /* 1 for the first request on the connection */
    const tt_addr_t *peer;       /* client address */
    tt_worker_t *worker;         /* the worker serving it */
    void *_conn;                 /* private: the protocol connection */
    void (*_respond)(tt_req_t *req, const tt_resp_t *resp); /* private: the protocol's writer */
};

/** Sends `resp` for `req`; call exactly once per request. Owning worker only. */
static inline void tt_req_respond(tt_req_t *req, const tt_resp_t *resp)
{
    req->_respond(req, resp);
}

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
