/* h1_conn_types.h -- the HTTP/1.x server connection's structs, apart from h1_conn.c so that a unit test can bound
 * their sizes (tests/unit/http/test_h1_conn_size.c): an idle keep-alive connection costs its h1_conn_t and its kernel
 * socket, nothing else. Private to h1_conn.c otherwise; owning worker only.
 */
#ifndef TT_HTTP_H1_CONN_TYPES_H
#define TT_HTTP_H1_CONN_TYPES_H

#include "http/worker.h"

/** Upper bound of sizeof(h1_conn_t), bytes: with glibc's 8-byte chunk header an idle connection's allocation is
 *  then at most 208 bytes (issue 15: at most 256 bytes of RSS per idle keep-alive connection). */
#define TT_H1_CONN_MAX_SIZE 200

/* A queued file range and the access-log line it completes. */
typedef struct out_file {
    tt_body_file_t f;
    uint64_t mem_at;     /* output-buffer bytes (ever appended) that precede it */
    uint64_t sent;       /* file bytes sent */
    uint64_t head_bytes; /* its response head */
    uint64_t start_us;   /* loop clock, us */
    tt_accesslog_rec_t rec;
    char *strs; /* owned copy of what `rec` reads: captured fields, method, target, request id */
} out_file_t;

/* What a connection holds only while it has work: its buffers, the request being read, the response being
 * written, its deferred calls. Taken from the worker's pool (w->h1_active) by conn_run, given back by enter_idle when
 * the connection goes idle with nothing buffered and no deferred call queued (nginx's ngx_http_set_keepalive gives
 * its buffers back the same way). A connection without one is idle or in its race window; in every other state it
 * has one. A closed connection's free is queued on its part (after any of its deferred calls) and gives the part
 * back too. Zeroed when taken. */
typedef struct h1_active {
    struct h1_conn *conn;  /* the connection it serves */
    uint64_t mem_appended; /* output-buffer bytes ever appended */
    uint64_t mem_sent;     /* output-buffer bytes ever sent */
    tt_buf_t in;
    tt_buf_t out;
    int64_t body_left;  /* Content-Length bytes still to discard */
    uint64_t body_seen; /* chunked content bytes seen, against the limit */
    tt_h1_chunked_t chunk;
    out_file_t *files;     /* MAX_FILES slots, allocated while in use */
    uint32_t last_len;     /* parser resume point */
    uint8_t nfiles;        /* file ranges queued */
    uint8_t npending;      /* responses queued and unsent */
    uint8_t resp_decision; /* keep-alive decision of the streamed response's head */
    uint8_t cur_minor;     /* HTTP/1.minor of the request being answered */
    unsigned cur_tokens;   /* its Connection tokens */
    int resp_status;
    int64_t resp_left;     /* streamed response: Content-Length bytes still owed, -1 when not counted */
    uint64_t resp_bytes;   /* bytes of the streamed response queued so far (access log) */
    uint64_t resp_head;    /* of which its head */
    uint64_t cur_start_us; /* when the current request's head began (us) */
    tt_buf_t trailers;     /* request trailer section being collected for an asynchronous handler */
    tt_defer_t resume;     /* continue after yielding */
    tt_defer_t kick;       /* flush writes made outside conn_run */
    tt_defer_t free_later; /* the connection's own free (and this part's return) at the end of the turn */
} h1_active_t;

/* The connection: what it keeps for its whole life, idle or not. */
typedef struct h1_conn {
    tt__conn_t base;
    tt_io_t io;
    tt_transport_t *tr; /* tt_transport_tcp, or TLS */
    tt__lstate_t *ls;
    tt_worker_t *w;
    h1_active_t *act; /* NULL only while idle (state head) or in the race window */
    uint64_t id;
    uint64_t accepted_us; /* loop clock, us */
    uint64_t mark_us;     /* idle: when it became idle; reading: when the current head began (us) */
    struct h1_areq *areq; /* the asynchronous request in flight, NULL otherwise */
    tt_tunnel_t *tunnel;  /* ST_TUNNEL: the tunnel its socket's events go to (its user, the handler, owns it) */
    tt_addr_t peer;
    uint32_t requests; /* request heads parsed */
    uint8_t state;
    uint8_t tq_kind;
    uint8_t idle_bucket;
    uint8_t close_reason;
    bool rd_ready : 1;       /* the socket may have unread bytes (edge-triggered) */
    bool wr_blocked : 1;     /* the last write hit EAGAIN */
    bool closing : 1;        /* close once the output is flushed */
    bool peer_eof : 1;       /* the peer sent FIN */
    bool peer_hup : 1;       /* the poller reported the peer's FIN (it may still be unread) */
    bool chunked : 1;        /* the body being read is chunked */
    bool linger : 1;         /* unread request bytes may remain: half-close and drain before closing */
    bool error_close : 1;    /* the current response refuses the request */
    bool idle : 1;           /* between requests, in an idle queue */
    bool shut : 1;           /* our direction is shut (FIN / close_notify sent) */
    bool in_run : 1;         /* inside conn_run: writes need no kick */
    bool body_paused : 1;    /* the asynchronous handler asked to stop content delivery */
    bool want_writable : 1;  /* tt_req_write() said "full": call on_writable once drained */
    bool resp_chunked : 1;   /* the streamed response is chunked */
    bool resp_open : 1;      /* a streamed response head went out and its finish has not */
    bool body_unchecked : 1; /* chunked request content still to come whose framing nothing checked yet */
    bool sent_continue : 1;  /* this request got tether's own 100 Continue */
} h1_conn_t;

/* An asynchronous request: the handler keeps it past handle(), so it lives on the heap with copies of
 * what the access log needs after the request's bytes are gone. The connection owns it (c->areq); once
 * finished it is detached, marked done and freed at the end of the turn (areq_finish). */
typedef struct h1_areq {
    tt_req_t req;
    tt_defer_t free_later;
    tt__wgen_t *gen; /* the generation whose route state handles it, referenced until it is finished */
    tt_str_t method;
    tt_str_t target;
    const tt_str_t *caps;    /* the request fields the log format reads (tt_accesslog_capture), or NULL */
    _Alignas(8) char strs[]; /* the captured fields (views first), method and target */
} h1_areq_t;

#endif
