/* str.h -- (pointer, length) string views and the few comparisons HTTP needs on them */
#ifndef TT_CORE_STR_H
#define TT_CORE_STR_H

#include "core/compat.h"

/** A view of `n` bytes at `p`; owns nothing and is not NUL-terminated. */
typedef struct tt_str {
    const char *p;
    size_t n;
} tt_str_t;

#define TT_STR(lit) ((tt_str_t){(lit), sizeof(lit) - 1})
#define TT_STR_NULL ((tt_str_t){NULL, 0})

static inline tt_str_t tt_str(const char *p, size_t n)
{
    return (tt_str_t){p, n};
}
/** Writes `v` in decimal at `o` (no terminator; at most 20 bytes, the caller's room) and returns the end. */
static inline char *tt_put_u64(char *o, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *o++ = tmp[--n];
    return o;
}

static inline char tt_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/** True when `a` equals `b` byte for byte. */
static inline bool tt_str_eq(tt_str_t a, const char *b, size_t bn)
{
    return a.n == bn && memcmp(a.p, b, bn) == 0;
}

/** True when `a` equals the lower-case literal `lower` ignoring ASCII case (field names, tokens). */
static inline bool tt_str_ieq(tt_str_t a, const char *lower, size_t n)
{
    if (a.n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (tt_lower(a.p[i]) != lower[i]) return false;
    return true;
}

#endif
