/* buf.h -- byte buffers backed by a per-worker pool of fixed-size blocks
 *
 * A connection takes blocks only while it has bytes to hold; an idle connection gives them back, so a
 * parked connection costs its struct and its kernel socket only (DESIGN.md). Owning worker only.
 */
#ifndef TT_CORE_BUF_H
#define TT_CORE_BUF_H

#include "core/compat.h"

/** A pool of blocks of `size` bytes; keeps at most `max_free` spare blocks, frees the rest. */
typedef struct tt_bufpool {
    void **_free;
    uint32_t _nfree;
    uint32_t _max_free;
    size_t size;    /* block size, bytes */
    int64_t in_use; /* blocks and grown buffers handed out and not yet released */
} tt_bufpool_t;

/** Bytes in [base + off, base + off + len); memory owned by the buffer, NULL base when it holds none. */
typedef struct tt_buf {
    char *base;
    uint32_t cap; /* bytes at base */
    uint32_t off; /* start of unconsumed data */
    uint32_t len; /* unconsumed bytes */
} tt_buf_t;

/** Prepares `p` for blocks of `size` bytes, keeping up to `max_free` spares. */
void tt_bufpool_init(tt_bufpool_t *p, size_t size, uint32_t max_free);
/** Frees the spare blocks; every buffer must have been released. */
void tt_bufpool_dispose(tt_bufpool_t *p);
/** Takes a block of `p->size` bytes (uninitialised): a spare, else a new one; aborts the process if memory runs out.
 *  For fixed-size objects that come and go often (a connection's working state); give it back with
 *  tt_bufpool_put(). */
void *tt_bufpool_get(tt_bufpool_t *p);
/** Gives back a block that tt_bufpool_get() returned: kept as a spare, or freed when `max_free` are kept. */
void tt_bufpool_put(tt_bufpool_t *p, void *block);

/**
 * Makes room for `need` more bytes after the data of `b`, taking a block from `p` when `b` holds none,
 * moving the data to the front, or growing beyond the block size up to `max` bytes in all.
 * Returns false (and changes nothing) when `len + need` would exceed `max`.
 */
TT_MUST_CHECK bool tt_buf_reserve(tt_buf_t *b, tt_bufpool_t *p, size_t need, size_t max);
/** Gives the memory of `b` back to `p` (or frees a grown buffer) and empties `b`. */
void tt_buf_release(tt_buf_t *b, tt_bufpool_t *p);
/* tt_buf_append's way when the bytes do not fit after the data already there (or `b` holds no memory). */
void tt__buf_append_grow(tt_buf_t *b, tt_bufpool_t *p, const void *data, size_t n);
/** Appends `n` bytes (copied; `data` may be NULL when `n` is 0), growing without bound; for output whose size
 *  the caller already limits. Aborts the process if memory runs out. Inline: a head is built from many small
 *  appends, and most fit in the block already taken. */
static inline void tt_buf_append(tt_buf_t *b, tt_bufpool_t *p, const void *data, size_t n)
{
    if (b->base != NULL && b->cap - b->off - b->len >= n) {
        if (n) memcpy(b->base + b->off + b->len, data, n); /* data may be NULL when n is 0 */
        b->len += (uint32_t)n;
        return;
    }
    tt__buf_append_grow(b, p, data, n);
}

/** Appends the field line "`name`: `value`\r\n" (RFC 9112 5; `nn` and `vn` bytes, either pointer may be NULL when
 *  its length is 0) in one reservation: the heads tether forwards are built a field at a time. Aborts the
 *  process if memory runs out. */
void tt_buf_append_field(tt_buf_t *b, tt_bufpool_t *p, const char *name, size_t nn, const char *value, size_t vn);

static inline char *tt_buf_data(const tt_buf_t *b)
{
    return b->base + b->off;
}
static inline char *tt_buf_tail(const tt_buf_t *b)
{
    return b->base + b->off + b->len;
}
static inline size_t tt_buf_space(const tt_buf_t *b)
{
    return b->base ? b->cap - b->off - b->len : 0;
}
/** Drops `n` bytes from the front; resets the offset when the buffer empties. */
static inline void tt_buf_consume(tt_buf_t *b, size_t n)
{
    b->off += (uint32_t)n;
    b->len -= (uint32_t)n;
    if (b->len == 0) b->off = 0;
}

#endif
