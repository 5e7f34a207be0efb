/* h2_fields.c -- HTTP/1.1-shaped field lines to HTTP/2 name/value pairs (RFC 9113 8.2) */
#include "http/h2_fields.h"

#include "core/err.h"
#include "core/str.h"

/* Connection-specific fields (RFC 9113 8.2.2), and for a request Host and a TE other than "trailers"; by length
 * first, names already lower-cased. */
static bool dropped(const char *name, size_t n, const char *v, size_t vn, unsigned flags)
{
    switch (n) {
    case 2:
        return (flags & TT_H2_FIELDS_REQUEST) && memcmp(name, "te", 2) == 0 &&
               !tt_str_ieq(tt_str(v, vn), TT_LIT("trailers"));
    case 4: return (flags & TT_H2_FIELDS_REQUEST) && memcmp(name, "host", 4) == 0;
    case 7: return memcmp(name, "upgrade", 7) == 0;
    case 10: return memcmp(name, "connection", 10) == 0 || memcmp(name, "keep-alive", 10) == 0;
    case 16: return memcmp(name, "proxy-connection", 16) == 0;
    case 17: return memcmp(name, "transfer-encoding", 17) == 0;
    default: return false;
    }
}

static size_t lines_to_nv(char *p, size_t len, nghttp2_nv *nv, size_t max, unsigned flags)
{
    size_t k = 0;
    char *end = p + len;
    while (p < end && k < max) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *le = eol ? eol : end, *colon = p;
        for (; colon < le && *colon != ':'; colon++) *colon = tt_lower(*colon); /* the name, lower-cased */
        if (colon < le && colon > p) {
            char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
            if (!dropped(p, nl, v, vl, flags)) {
                uint8_t f = nl == 12 && memcmp(p, "x-request-id", 12) == 0 ? NGHTTP2_NV_FLAG_NO_INDEX : 0;
                nv[k++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, nl, vl, f};
            }
        }
        p = eol ? eol + 1 : end;
    }
    return k;
}

nghttp2_nv *tt_h2_fields_nv(char *p, size_t len, nghttp2_nv *stack, size_t stack_n, size_t extra, unsigned flags,
                            size_t *count)
{
    /* a line is at least "n:" and a line feed (the last may lack it): (len + 1) / 3 bounds the lines; they are
     * counted only when that bound does not fit the stack */
    size_t lines = (len + 1) / 3 + 1;
    if (extra + lines > stack_n) {
        lines = 1;
        for (const char *q = p, *end = p + len; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
            lines++;
    }
    size_t need = extra + lines;
    nghttp2_nv *nv = need <= stack_n ? stack : tt_malloc(need * sizeof(*nv));
    *count = extra + lines_to_nv(p, len, nv + extra, lines, flags);
    return nv;
}
