/* slab.h -- a per-worker allocator of small blocks in power-of-two size classes, each with a free list
 *
 * For objects that are made and freed by the thousand per second on one worker (HTTP/2 streams, nghttp2's
 * per-stream state): a freed block goes on its class's free list and the next allocation of that class takes
 * it back without the C allocator, whose per-thread cache holds only 7 blocks per size. Blocks larger than the
 * largest class go to malloc. Each class keeps at most TT_SLAB_KEEP_BYTES of spare blocks (beyond that they are
 * freed), so what a burst leaves behind is bounded. Not thread-safe: owning worker only.
 */
#ifndef TT_CORE_SLAB_H
#define TT_CORE_SLAB_H

#include "core/compat.h"

#define TT_SLAB_NCLASS     8                 /* 64, 128, ... 8192 usable bytes */
#define TT_SLAB_KEEP_BYTES ((size_t)2 << 20) /* spare bytes kept per class */

typedef struct tt_slab {
    void *_free[TT_SLAB_NCLASS];     /* spare blocks, linked through their first word */
    uint32_t _nfree[TT_SLAB_NCLASS]; /* how many */
    int64_t in_use;                  /* blocks handed out and not yet freed (for leak checks in tests) */
} tt_slab_t;

/** An empty slab (all zero is one too). */
void tt_slab_init(tt_slab_t *s);
/** Frees the spare blocks. Blocks still handed out stay valid and may be given to tt_slab_free later. */
void tt_slab_dispose(tt_slab_t *s);

/** `n` bytes (n may be 0), aligned for any type; never NULL (tt_fatal on exhaustion). Owned by the caller until
 *  tt_slab_free on the same slab. */
void *tt_slab_alloc(tt_slab_t *s, size_t n);
/** tt_slab_alloc, zero-filled. */
void *tt_slab_calloc(tt_slab_t *s, size_t n);
/** Resizes `p` (from this slab, or NULL: an alloc) to `n` bytes keeping the first min(old, n) bytes; the old
 *  pointer is invalid afterwards unless the same one is returned. Never NULL. */
void *tt_slab_realloc(tt_slab_t *s, void *p, size_t n);
/** Gives `p` back (NULL: nothing). `p` came from this slab. */
void tt_slab_free(tt_slab_t *s, void *p);

#endif
