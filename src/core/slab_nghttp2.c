/* slab_nghttp2.c -- nghttp2's allocations from a worker's slab */
#include "core/slab_nghttp2.h"

#include <stdint.h>

static void *mem_malloc(size_t n, void *ud)
{
    return tt_slab_alloc(ud, n);
}

static void mem_free(void *p, void *ud)
{
    tt_slab_free(ud, p);
}

static void *mem_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size) return NULL;
    return tt_slab_calloc(ud, nmemb * size);
}

static void *mem_realloc(void *p, size_t n, void *ud)
{
    return tt_slab_realloc(ud, p, n);
}

nghttp2_mem tt_slab_nghttp2_mem(tt_slab_t *s)
{
    return (nghttp2_mem){s, mem_malloc, mem_free, mem_calloc, mem_realloc};
}
