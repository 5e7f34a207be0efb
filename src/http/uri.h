/* uri.h -- request-target forms, authority syntax and path normalization (RFC 9112 3.2, RFC 3986); pure
 *
 * Nothing here allocates or keeps state: the request parser (h1_parse.c) classifies and checks request-targets
 * and Host fields with it, and the connections normalize a path before routing. docs/security.md lists each
 * rule with its RFC section.
 */
#ifndef TT_HTTP_URI_H
#define TT_HTTP_URI_H

#include "core/err.h"
#include "core/str.h"

/** The four forms of request-target (RFC 9112 3.2). */
typedef enum tt_target_form {
    TT_TARGET_ORIGIN = 0, /* "/path?query" (3.2.1) */
    TT_TARGET_ABSOLUTE,   /* "http://authority/path?query" (3.2.2) */
    TT_TARGET_AUTHORITY,  /* "host:port", CONNECT only (3.2.3) */
    TT_TARGET_ASTERISK,   /* "*", OPTIONS only (3.2.4) */
} tt_target_form_t;

/**
 * True when `a` is uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2-3.2.3): a non-empty reg-name of
 * unreserved characters, percent-encodings and the sub-delims other than ',' (so no whitespace, '"', ',', '/',
 * '@', '\\' or controls), or an IPv6 literal in brackets; then an optional port of at most five digits, at most
 * 65535. `need_port`: the port must be there and not empty (authority-form, RFC 9112 3.2.3).
 */
bool tt_uri_authority_valid(tt_str_t a, bool need_port);

/**
 * Splits an absolute-form request-target (RFC 9112 3.2.2) "scheme://authority[path-abempty][?query]".
 * True when the scheme is http or https (any case), the authority has no userinfo and is valid
 * (tt_uri_authority_valid); then `*authority` is it and `*rest` the path and query that follow (possibly empty,
 * or starting with '?': the path is then "/"). Views into `target`.
 */
bool tt_uri_split_absolute(tt_str_t target, tt_str_t *authority, tt_str_t *rest);

/**
 * True when the absolute path `path` is already normal for tt_uri_normalize_path() (no '%', no '\\', no
 * segment starting with '.'): the common case, checked without copying.
 */
bool tt_uri_path_is_normal(tt_str_t path);

/**
 * Normalizes an absolute path (it starts with '/') into `out`, which holds at least `path.n` bytes (the result
 * is never longer): percent-encoded unreserved characters are decoded (RFC 3986 6.2.2.2), "." and ".."
 * segments removed, ".%2e" and the like included (5.2.4); every other byte and percent-encoding is kept as it
 * came ("%2F" stays encoded: it is not a separator). Returns the length written, or TT_BAD for a path to
 * refuse: a ".." that climbs above "/", a bad or NUL percent-encoding, or a segment that holds a dot-segment
 * once "%2F", "%5C" or '\\' are read as separators (a path other servers would resolve differently).
 */
int tt_uri_normalize_path(tt_str_t path, char *out);

#endif
