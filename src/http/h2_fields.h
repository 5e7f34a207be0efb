/* h2_fields.h -- HTTP/1.1-shaped field lines ("Name: value\r\n") to HTTP/2 name/value pairs (RFC 9113 8.2)
 *
 * tether builds the fields it sends as HTTP/1.1 lines (forward.c, the handlers' responses) and turns them into
 * nghttp2's pairs here, for the server side (h2_conn.c: responses, interim responses, trailers) and the upstream
 * side (h2client.c: requests and request trailers) alike. Pure functions: any thread.
 */
#ifndef TT_HTTP_H2_FIELDS_H
#define TT_HTTP_H2_FIELDS_H

#include "core/compat.h"

#include <nghttp2/nghttp2.h>

/** How tt_h2_fields_nv treats the lines. */
enum {
    /** A request head or request trailers: also drops `Host` (the caller sends :authority, RFC 9113 8.3.1) and a
     *  `TE` whose value is not "trailers" (8.2.2). Without it only the connection-specific fields go. */
    TT_H2_FIELDS_REQUEST = 1,
};

/**
 * Converts the field lines in `p[0..len)` into pairs after `extra` slots left at the front for the caller's
 * (pseudo-headers). Names are lower-cased in place (RFC 9113 8.2.1, so `p` must be writable and the pairs point
 * into it: keep it until nghttp2 has copied or sent them); values are trimmed of surrounding blanks; the
 * connection-specific fields (`Connection`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`,
 * 8.2.2) are dropped; a line without a colon is skipped; the last line may lack its line feed. `X-Request-Id`
 * is marked NGHTTP2_NV_FLAG_NO_INDEX: its value is new for every message and would only churn the HPACK
 * dynamic table (RFC 7541 6.2.2). Other flags are 0.
 *
 * Returns `stack` when `extra` + the lines fit in its `stack_n` pairs, else an array from tt_malloc the caller
 * frees; no field is dropped for lack of room. `*count` gets `extra` + the pairs written.
 */
nghttp2_nv *tt_h2_fields_nv(char *p, size_t len, nghttp2_nv *stack, size_t stack_n, size_t extra, unsigned flags,
                            size_t *count);

#endif
