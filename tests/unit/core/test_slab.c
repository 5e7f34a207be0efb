/* test_slab.c -- the per-worker slab (src/core/slab.c): a freed block is taken back by the next allocation of its
 * size class, realloc keeps the bytes, large blocks bypass the classes, the spare blocks kept are bounded */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/slab.h"

static void a_freed_block_is_reused_by_its_class(void **state)
{
    (void)state;
    tt_slab_t s;
    tt_slab_init(&s);
    void *a = tt_slab_alloc(&s, 100);
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % _Alignof(max_align_t), 0);
    assert_int_equal(s.in_use, 1);
    tt_slab_free(&s, a);
    assert_int_equal(s.in_use, 0);
    void *b = tt_slab_alloc(&s, 120); /* the same class (128) */
#if !defined(__SANITIZE_ADDRESS__)
    assert_ptr_equal(a, b);
#endif
    void *c = tt_slab_alloc(&s, 129); /* the next class: never the block still in use */
    assert_ptr_not_equal(b, c);
    tt_slab_free(&s, b);
    tt_slab_free(&s, c);
    tt_slab_dispose(&s);
}

static void calloc_zeroes_a_reused_block(void **state)
{
    (void)state;
    tt_slab_t s;
    tt_slab_init(&s);
    char *a = tt_slab_alloc(&s, 64);
    memset(a, 0xab, 64);
    tt_slab_free(&s, a);
    char *b = tt_slab_calloc(&s, 64);
    for (int i = 0; i < 64; i++) assert_int_equal(b[i], 0);
    tt_slab_free(&s, b);
    tt_slab_dispose(&s);
}

static void realloc_keeps_the_bytes_across_classes_and_to_large(void **state)
{
    (void)state;
    tt_slab_t s;
    tt_slab_init(&s);
    char *p = tt_slab_realloc(&s, NULL, 10);
    memcpy(p, "0123456789", 10);
    assert_ptr_equal(tt_slab_realloc(&s, p, 60), p); /* still fits its 64-byte class */
    p = tt_slab_realloc(&s, p, 1000);
    assert_memory_equal(p, "0123456789", 10);
    p = tt_slab_realloc(&s, p, 100000); /* beyond the largest class: malloc's */
    assert_memory_equal(p, "0123456789", 10);
    p[99999] = 'x';
    p = tt_slab_realloc(&s, p, 20);
    assert_memory_equal(p, "0123456789", 10);
    assert_int_equal(s.in_use, 1);
    tt_slab_free(&s, p);
    tt_slab_free(&s, NULL);
    assert_int_equal(s.in_use, 0);
    tt_slab_dispose(&s);
}

static void spare_blocks_are_bounded_per_class(void **state)
{
    (void)state;
    tt_slab_t s;
    tt_slab_init(&s);
    enum { N = 600 }; /* 8 KiB class: at most TT_SLAB_KEEP_BYTES / 8192 = 256 kept */
    void *p[N];
    for (int i = 0; i < N; i++) p[i] = tt_slab_alloc(&s, 8000);
    for (int i = 0; i < N; i++) tt_slab_free(&s, p[i]);
    uint32_t kept = s._nfree[TT_SLAB_NCLASS - 1];
#if defined(__SANITIZE_ADDRESS__)
    assert_int_equal(kept, 0);
#else
    assert_int_equal(kept, TT_SLAB_KEEP_BYTES / 8192);
#endif
    assert_int_equal(s.in_use, 0);
    tt_slab_dispose(&s);
    assert_int_equal(s._nfree[TT_SLAB_NCLASS - 1], 0);
}

/* A request gets the smallest class that holds it (64 bytes and up by powers of two), and past 8 KiB a block of
 * its own size: realloc within the usable size keeps the block, one byte more moves it. */
static void sizes_map_to_the_smallest_class_that_holds_them(void **state)
{
    (void)state;
    tt_slab_t s;
    tt_slab_init(&s);
    static const size_t asks[] = {0, 1, 64, 65, 127, 128, 129, 4097, 8191, 8192};
    static const size_t usable[] = {64, 64, 64, 128, 128, 128, 256, 8192, 8192, 8192};
    for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
        void *p = tt_slab_alloc(&s, asks[i]);
        assert_ptr_equal(tt_slab_realloc(&s, p, usable[i]), p);
        void *q = tt_slab_realloc(&s, p, usable[i] + 1);
        assert_ptr_not_equal(q, p);
        tt_slab_free(&s, q);
    }
    void *big = tt_slab_alloc(&s, 8193); /* its own size, not a class */
    assert_ptr_equal(tt_slab_realloc(&s, big, 8193), big);
    void *bigger = tt_slab_realloc(&s, big, 8194);
    assert_ptr_not_equal(bigger, big);
    tt_slab_free(&s, bigger);
    assert_int_equal(s.in_use, 0);
    tt_slab_dispose(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_freed_block_is_reused_by_its_class),
        cmocka_unit_test(calloc_zeroes_a_reused_block),
        cmocka_unit_test(realloc_keeps_the_bytes_across_classes_and_to_large),
        cmocka_unit_test(spare_blocks_are_bounded_per_class),
        cmocka_unit_test(sizes_map_to_the_smallest_class_that_holds_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
