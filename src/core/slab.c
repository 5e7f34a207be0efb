/* slab.c -- per-worker size-class free lists in front of malloc */
#include "core/slab.h"
#include "core/err.h"

#include <stdlib.h>
#include <string.h>

#define MIN_SHIFT 6 /* the smallest class: 64 bytes */
#define LARGE     UINT32_MAX

/* Under AddressSanitizer nothing is kept, so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define KEEP_NONE 1
#else
#define KEEP_NONE 0
#endif

/* Every block starts with this header; the caller's bytes follow it, 16-byte aligned as malloc's are. */
typedef union hdr {
    struct {
        uint32_t cls;  /* size class, or LARGE */
        uint32_t size; /* usable bytes (LARGE blocks: what was asked) */
    } h;
    max_align_t align;
} hdr_t;

static uint32_t class_of(size_t n)
{
    if (n <= ((size_t)1 << MIN_SHIFT)) return 0;
    /* the smallest power of two >= n is 2^(bits of n - 1); one bit-scan instead of a loop over the classes */
    uint32_t c = (uint32_t)(64 - __builtin_clzll((unsigned long long)(n - 1))) - MIN_SHIFT;
    return c < TT_SLAB_NCLASS ? c : LARGE;
}

void tt_slab_init(tt_slab_t *s)
{
    memset(s, 0, sizeof(*s));
}

void tt_slab_dispose(tt_slab_t *s)
{
    for (int c = 0; c < TT_SLAB_NCLASS; c++) {
        while (s->_free[c] != NULL) {
            void *p = s->_free[c];
            s->_free[c] = *(void **)p;
            free((hdr_t *)p - 1);
        }
        s->_nfree[c] = 0;
    }
}

void *tt_slab_alloc(tt_slab_t *s, size_t n)
{
    uint32_t c = class_of(n);
    s->in_use++;
    if (c != LARGE && s->_free[c] != NULL) {
        void *p = s->_free[c];
        s->_free[c] = *(void **)p;
        s->_nfree[c]--;
        return p;
    }
    if (c == LARGE && n > UINT32_MAX - sizeof(hdr_t)) tt_fatal("slab: %zu bytes", n);
    size_t size = c == LARGE ? n : (size_t)1 << (c + MIN_SHIFT);
    hdr_t *h = tt_malloc(sizeof(hdr_t) + size);
    h->h.cls = c;
    h->h.size = (uint32_t)size;
    return h + 1;
}

void *tt_slab_calloc(tt_slab_t *s, size_t n)
{
    void *p = tt_slab_alloc(s, n);
    memset(p, 0, n);
    return p;
}

void tt_slab_free(tt_slab_t *s, void *p)
{
    if (p == NULL) return;
    hdr_t *h = (hdr_t *)p - 1;
    uint32_t c = h->h.cls;
    s->in_use--;
    if (c == LARGE || s->_nfree[c] >= (TT_SLAB_KEEP_BYTES >> (c + MIN_SHIFT)) || KEEP_NONE) {
        free(h);
        return;
    }
    *(void **)p = s->_free[c];
    s->_free[c] = p;
    s->_nfree[c]++;
}

void *tt_slab_realloc(tt_slab_t *s, void *p, size_t n)
{
    if (p == NULL) return tt_slab_alloc(s, n);
    hdr_t *h = (hdr_t *)p - 1;
    if (n <= h->h.size) return p;
    void *q = tt_slab_alloc(s, n);
    memcpy(q, p, TT_MIN((size_t)h->h.size, n));
    tt_slab_free(s, p);
    return q;
}
