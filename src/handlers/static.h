/* static.h -- static files: GET/HEAD, index.html, conditional requests, one byte range (RFC 9110 13, 14)
 *
 * Paths are percent-decoded and resolved under the root with openat2(RESOLVE_BENEATH): `..` segments
 * (raw or encoded), an encoded '/' and NUL are refused with 400; a symlink leaving the root is 404.
 * Each worker keeps an open-file cache: small files (<= TT_STATIC_SMALL bytes) are answered from memory in
 * the same write as the head, larger ones with sendfile(2); entries are re-validated with one stat(2)
 * when older than TT_STATIC_REVALIDATE_MS.
 */
#ifndef TT_HANDLERS_STATIC_H
#define TT_HANDLERS_STATIC_H

#include "http/route.h"

/** Largest file served from memory, bytes. */
#define TT_STATIC_SMALL 16384
/** Age after which a cached entry is checked against the file system again, ms. */
#define TT_STATIC_REVALIDATE_MS 1000
/** Entries per worker before the least recently used are dropped. */
#define TT_STATIC_CACHE_MAX 1024

/** Configuration of a static route. */
typedef struct tt_static_conf {
    char *root;  /* directory served, owned */
    char *index; /* file tried for a directory ("index.html"), owned */
} tt_static_conf_t;

/** The static file handler (takes no request content). */
extern const tt_handler_ops_t tt_static_ops;

/**
 * Percent-decodes the path part of a request-target into a relative path in `out` (`size` bytes, NUL
 * terminated, no leading '/'), dropping empty and "." segments. `*dir` is set when the path ends in '/'.
 * Returns its length, -1 for a path to refuse (bad escape, NUL, encoded '/', a ".." segment), or -2 when
 * it does not fit in `size` bytes (the handler answers 414).
 */
int tt_static_decode_path(tt_str_t path, char *out, size_t size, bool *dir);

#endif
