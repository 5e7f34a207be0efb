/* buf.c -- pooled byte buffers */
#include "core/buf.h"
#include "core/err.h"

void tt_bufpool_init(tt_bufpool_t *p, size_t size, uint32_t max_free)
{
    p->_free = tt_calloc(max_free ? max_free : 1, sizeof(void *));
    p->_nfree = 0;
    p->_max_free = max_free;
    p->size = size;
    p->in_use = 0;
}

void tt_bufpool_dispose(tt_bufpool_t *p)
{
    for (uint32_t i = 0; i < p->_nfree; i++) free(p->_free[i]);
    free(p->_free);
    p->_free = NULL;
    p->_nfree = 0;
}

static char *pool_get(tt_bufpool_t *p)
{
    p->in_use++;
    if (p->_nfree > 0) return p->_free[--p->_nfree];
    return tt_malloc(p->size);
}

void *tt_bufpool_get(tt_bufpool_t *p)
{
    return pool_get(p);
}

void tt_bufpool_put(tt_bufpool_t *p, void *block)
{
    p->in_use--;
    if (p->_nfree < p->_max_free)
        p->_free[p->_nfree++] = block;
    else
        free(block);
}

bool tt_buf_reserve(tt_buf_t *b, tt_bufpool_t *p, size_t need, size_t max)
{
    if ((size_t)b->len + need > max) return false;
    if (b->base == NULL) {
        if (need <= p->size) {
            b->base = pool_get(p);
            b->cap = (uint32_t)p->size;
        } else {
            size_t cap = p->size;
            while (cap < need) cap *= 2;
            b->base = tt_malloc(cap);
            b->cap = (uint32_t)cap;
            p->in_use++;
        }
        b->off = b->len = 0;
        return true;
    }
    if (b->cap - b->off - b->len >= need) return true;
    if (b->cap - b->len >= need) {
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        return true;
    }
    size_t cap = b->cap;
    while (cap - b->len < need) cap *= 2;
    char *nb = tt_malloc(cap);
    memcpy(nb, b->base + b->off, b->len);
    if (b->cap == p->size && p->_nfree < p->_max_free)
        p->_free[p->_nfree++] = b->base;
    else
        free(b->base);
    b->base = nb;
    b->cap = (uint32_t)cap;
    b->off = 0;
    return true;
}

void tt_buf_release(tt_buf_t *b, tt_bufpool_t *p)
{
    if (b->base == NULL) return;
    p->in_use--;
    if (b->cap == p->size && p->_nfree < p->_max_free)
        p->_free[p->_nfree++] = b->base;
    else
        free(b->base);
    b->base = NULL;
    b->cap = b->off = b->len = 0;
}

void tt__buf_append_grow(tt_buf_t *b, tt_bufpool_t *p, const void *data, size_t n)
{
    if (n == 0) return; /* data may be NULL then (an empty tt_str_t), and memcpy must not see it */
    if (!tt_buf_reserve(b, p, n, SIZE_MAX)) tt_fatal("buffer overflow");
    memcpy(tt_buf_tail(b), data, n);
    b->len += (uint32_t)n;
}

void tt_buf_append_field(tt_buf_t *b, tt_bufpool_t *p, const char *name, size_t nn, const char *value, size_t vn)
{
    if (!tt_buf_reserve(b, p, nn + vn + 4, SIZE_MAX)) tt_fatal("buffer overflow");
    char *o = tt_buf_tail(b);
    if (nn) memcpy(o, name, nn);
    o[nn] = ':';
    o[nn + 1] = ' ';
    if (vn) memcpy(o + nn + 2, value, vn);
    o[nn + 2 + vn] = '\r';
    o[nn + 3 + vn] = '\n';
    b->len += (uint32_t)(nn + vn + 4);
}
