/* h1_parse.h -- strict, incremental, zero-copy HTTP/1.x request parser (RFC 9112); no I/O, no allocation
 *
 * The parser never copies: every tt_str_t it returns points into the caller's buffer, which must stay
 * unchanged while the views are used. It keeps no state between calls except what the caller passes
 * back (`last_len`), so a request split at any byte boundary parses exactly like the whole request.
 */
#ifndef TT_HTTP_H1_PARSE_H
#define TT_HTTP_H1_PARSE_H

#include "core/err.h"
#include "core/str.h"
#include "http/uri.h"

/** Most fields a request head may carry before it is refused with 431. */
#define TT_H1_MAX_FIELDS 100

/** Why a request was refused; tt_h1_error_status() maps each to its status code. */
typedef enum tt_h1_error {
    TT_H1_OK = 0,
    TT_H1_E_REQUEST_LINE,        /* 400: malformed request-line (method, spacing, target bytes) */
    TT_H1_E_TARGET_TOO_LONG,     /* 414: request-target longer than the limit */
    TT_H1_E_VERSION,             /* 400: malformed HTTP-version */
    TT_H1_E_VERSION_UNSUPPORTED, /* 505: well-formed version other than HTTP/1.x */
    TT_H1_E_BARE_CR,             /* 400: CR not followed by LF */
    TT_H1_E_BARE_LF,             /* 400: LF not preceded by CR */
    TT_H1_E_FIELD_NAME,          /* 400: empty field name or a byte that is not a tchar */
    TT_H1_E_FIELD_NAME_WS,       /* 400: whitespace between field name and colon (RFC 9112 5.1) */
    TT_H1_E_FIELD_VALUE,         /* 400: NUL, CR, LF or another CTL in a field value */
    TT_H1_E_OBS_FOLD,            /* 400: line folding (RFC 9112 5.2) */
    TT_H1_E_TOO_MANY_FIELDS,     /* 431: more than TT_H1_MAX_FIELDS (or the configured count) */
    TT_H1_E_FIELDS_TOO_LARGE,    /* 431: field section larger than the limit */
    TT_H1_E_CONTENT_LENGTH,      /* 400: non-numeric, differing or repeated-differing Content-Length */
    TT_H1_E_CL_AND_TE,           /* 400: Content-Length together with Transfer-Encoding (RFC 9112 6.3) */
    TT_H1_E_TRANSFER_CODING,     /* 400: a transfer coding other than one final chunked, or TE in HTTP/1.0 */
    TT_H1_E_HOST,                /* 400: HTTP/1.1 without exactly one Host (RFC 9112 3.2) */
    TT_H1_E_EXPECT,              /* 417: an expectation other than 100-continue */
    TT_H1_E_CHUNK_SIZE,          /* 400: bad chunk-size line */
    TT_H1_E_CHUNK_EXT,           /* 400: bad or oversized chunk extension */
    TT_H1_E_CHUNK_DATA,          /* 400: chunk data not followed by CRLF */
    TT_H1_E_TRAILER,             /* 400: bad or oversized trailer section */
    TT_H1_E_TARGET,              /* 400: a request-target form the method does not take, or a bad absolute-form */
    TT_H1_E_FIELD_LINE_TOO_LONG, /* 431: one field line longer than the limit */
    TT_H1_E__COUNT
} tt_h1_error_t;

/** Status code for `e` (400, 414, 417, 431 or 505). */
int tt_h1_error_status(tt_h1_error_t e);
/** Static name of `e` for logs ("bare_cr"). */
const char *tt_h1_error_name(tt_h1_error_t e);

/** Methods the server knows by name; anything else is TT_METHOD_OTHER with its token in `method`. */
typedef enum tt_method {
    TT_METHOD_OTHER = 0,
    TT_METHOD_GET,
    TT_METHOD_HEAD,
    TT_METHOD_POST,
    TT_METHOD_PUT,
    TT_METHOD_DELETE,
    TT_METHOD_OPTIONS,
    TT_METHOD_PATCH,
    TT_METHOD_CONNECT,
    TT_METHOD_TRACE,
} tt_method_t;

/** Fields the server acts on, found during the parse; `known[]` holds their index in `fields` or -1. */
typedef enum tt_h1_known {
    TT_H1_F_HOST = 0,
    TT_H1_F_IF_NONE_MATCH,
    TT_H1_F_IF_MODIFIED_SINCE,
    TT_H1_F_RANGE,
    TT_H1_F_IF_RANGE,
    TT_H1_F_IDEMPOTENCY_KEY,
    TT_H1_F__COUNT
} tt_h1_known_t;

/** Connection option tokens seen (RFC 9110 7.6.1). */
#define TT_H1_CONN_CLOSE      0x1u
#define TT_H1_CONN_KEEP_ALIVE 0x2u
#define TT_H1_CONN_UPGRADE    0x4u

/** One field line: name and value (value without surrounding whitespace). */
typedef struct tt_h1_field {
    tt_str_t name;
    tt_str_t value;
} tt_h1_field_t;

/** A parsed request head; every view points into the parsed buffer. */
typedef struct tt_h1_request {
    tt_str_t method;
    tt_method_t method_id;
    tt_str_t target;              /* request-target as sent */
    tt_target_form_t target_form; /* which of the four forms it has (RFC 9112 3.2) */
    tt_str_t authority;           /* the target's authority (absolute- and authority-form), else the Host field's
                                     value; empty when there is neither (RFC 9112 3.2.2: it replaces Host) */
    int minor_version;            /* 0 for HTTP/1.0, 1 for HTTP/1.1 and later 1.x */
    int64_t content_length;       /* -1 when absent */
    bool chunked;                 /* Transfer-Encoding: chunked */
    bool expect_continue;         /* Expect: 100-continue */
    unsigned conn_tokens;         /* TT_H1_CONN_* */
    tt_h1_error_t error;          /* set when the parse returns TT_BAD */
    size_t nfields;
    int16_t known[TT_H1_F__COUNT];
    tt_h1_field_t fields[TT_H1_MAX_FIELDS];
} tt_h1_request_t;

/** Size limits, in bytes and fields. */
typedef struct tt_h1_limits {
    size_t max_target;      /* request-target bytes [8192]; longer -> 414 */
    size_t max_field_bytes; /* field section bytes [32768]; larger -> 431 */
    size_t max_fields;      /* field lines [100, at most TT_H1_MAX_FIELDS]; more -> 431 */
    size_t max_field_line;  /* bytes of one field line, "name: value" without its CRLF [8192]; longer -> 431;
                               0: only the field-section limit applies */
} tt_h1_limits_t;

/** The defaults above. */
extern const tt_h1_limits_t tt_h1_default_limits;

/**
 * Parses the request head at the start of `buf[0..len)`, skipping empty lines before the request-line
 * (RFC 9112 2.2; more than max_target + 64 bytes of them is TT_H1_E_REQUEST_LINE). `last_len` is the `len` of the
 * previous call on the same head that returned TT_INCOMPLETE, or 0. Returns the bytes the head occupies (skipped lines
 * included) when complete, TT_INCOMPLETE when more bytes are needed, or TT_BAD with `req->error` set. Pure; RFC 9112
 * 2-6. Beyond the grammar it refuses (docs/security.md): a Content-Length that is a list or repeated (even with equal
 * values), a Transfer-Encoding list with an empty element, a Host that is not uri-host [":" port] or is empty on a
 * request that is not absolute-form (RFC 9110 7.2), an absolute-form target with userinfo or a scheme other than http
 * and https, CONNECT without authority-form (and authority-form without CONNECT, asterisk-form without OPTIONS), and a
 * field line longer than `lim->max_field_line` (431).
 */
int tt_h1_parse_request(const char *buf, size_t len, size_t last_len, const tt_h1_limits_t *lim, tt_h1_request_t *req);

/**
 * Fills the semantic members of `req` (known[], content_length, conn_tokens, expect_continue, authority) from its
 * `fields`, for a request that did not come as HTTP/1 text (an HTTP/2 stream, whose :authority the caller put first
 * as "host"). Returns 0, or TT_BAD with `req->error` for a Content-Length that is not one number, two Host fields or
 * a Host that is not a valid uri-host [":" port] (RFC 9110 7.2, 8.6). Pure.
 */
int tt_h1_request_semantics(tt_h1_request_t *req);

/** Index of the first field named `lower_name` (lower case), or -1. */
int tt_h1_find_field(const tt_h1_request_t *req, const char *lower_name, size_t n);

/** A parsed response head; every view points into the parsed buffer. */
typedef struct tt_h1_response {
    int major_version; /* 1; 2 for a response received over HTTP/2 and viewed as this struct (proxy.c) */
    int minor_version; /* 0 or 1 */
    int status;        /* 100..599 */
    tt_str_t reason;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding ends in chunked */
    bool close_delimited;   /* no length: the content ends when the connection does (RFC 9112 6.3) */
    unsigned conn_tokens;   /* TT_H1_CONN_* */
    int keep_alive;         /* index of the Keep-Alive field, -1 when absent */
    tt_h1_error_t error;    /* set when the parse returns TT_BAD */
    size_t nfields;
    tt_h1_field_t fields[TT_H1_MAX_FIELDS];
} tt_h1_response_t;

/**
 * Parses a response head at the start of `buf[0..len)` (status-line and fields, RFC 9112 4-5). `last_len`
 * as in tt_h1_parse_request(). Returns the head's length, TT_INCOMPLETE, or TT_BAD with `res->error`.
 * Framing (RFC 9112 6.3) is decided here, except what depends on the request (HEAD) and the status
 * (1xx, 204, 304): see tt_h1_response_has_content(). Content-Length together with Transfer-Encoding,
 * and differing Content-Length values, are refused: a proxy must never guess the framing. Pure.
 */
int tt_h1_parse_response(const char *buf, size_t len, size_t last_len, const tt_h1_limits_t *lim,
                         tt_h1_response_t *res);

/** True when the response has a Transfer-Encoding field. */
bool tt_h1_find_resp_te(const tt_h1_response_t *res);

/** False when a response to the request has no content whatever its fields say (HEAD, 1xx, 204, 304). */
bool tt_h1_response_has_content(int status, bool head_request);

/**
 * Reads `timeout=` (seconds, stored as ms) and `max=` from a Keep-Alive field value (the de facto
 * extension: RFC 2068 19.7.1.1, Apache, nginx). Returns a mask: 1 when timeout was found, 2 when max was.
 */
int tt_h1_keepalive_hint(tt_str_t value, uint64_t *timeout_ms, int64_t *max);

/** State of a chunked content decoder (RFC 9112 7.1); zero it (or tt_h1_chunked_init) before use. */
typedef struct tt_h1_chunked {
    uint8_t state;
    bool done;           /* the last chunk and the trailer section have been consumed */
    tt_h1_error_t error; /* set when decode returns TT_BAD */
    uint64_t remaining;  /* bytes left in the current chunk */
    uint32_t line_bytes; /* bytes of the current chunk-size line (extension limit) */
    uint32_t trailer_bytes;
    uint32_t hexdigits;
} tt_h1_chunked_t;

/** Longest chunk-size line (size and extensions) accepted, bytes. */
#define TT_H1_MAX_CHUNK_LINE 4096
/** Largest trailer section accepted, bytes. */
#define TT_H1_MAX_TRAILER 32768

static inline void tt_h1_chunked_init(tt_h1_chunked_t *d)
{
    memset(d, 0, sizeof(*d));
}

/**
 * Decodes chunked framing from `buf[0..len)`. Returns the bytes consumed (>= 0) and sets `*data` to the
 * content bytes among them (a view into `buf`, possibly empty): call again with the rest until it returns
 * 0 or sets `d->done`. Returns TT_BAD with `d->error` set on bad syntax or oversized lines. Pure.
 */
int64_t tt_h1_chunked_decode(tt_h1_chunked_t *d, const char *buf, size_t len, tt_str_t *data);

/**
 * True between the last chunk and the end of the trailer section. The decoder returns right after the
 * last-chunk line, so every byte consumed while this holds belongs to the trailer section (its final
 * CRLF included): a proxy collects them to forward the trailers.
 */
bool tt_h1_chunked_in_trailer(const tt_h1_chunked_t *d);

#endif
