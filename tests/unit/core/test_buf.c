/* test_buf.c -- pooled byte buffers (src/core/buf.c): blocks taken and given back, compaction, growth up to a
 * maximum, the in-use count and the cap on spare blocks */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/buf.h"

static void put(tt_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    assert_true(tt_buf_space(b) >= n);
    memcpy(tt_buf_tail(b), s, n);
    b->len += (uint32_t)n;
}

static void assert_data(const tt_buf_t *b, const char *s)
{
    assert_int_equal(b->len, strlen(s));
    if (b->len) assert_memory_equal(tt_buf_data(b), s, b->len);
}

static void starts_empty_and_takes_a_block_on_first_reserve(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    assert_int_equal(p.size, 64);
    assert_int_equal(p.in_use, 0);
    tt_buf_t b = {0};
    assert_null(b.base);
    assert_int_equal(tt_buf_space(&b), 0);
    assert_true(tt_buf_reserve(&b, &p, 10, 1024));
    assert_non_null(b.base);
    assert_int_equal(b.cap, 64);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(tt_buf_space(&b), 64);
    assert_int_equal(p.in_use, 1);
    /* a reserve that fits changes nothing */
    char *base = b.base;
    put(&b, "hello");
    assert_true(tt_buf_reserve(&b, &p, 59, 1024));
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.cap, 64);
    assert_int_equal(p.in_use, 1);
    assert_data(&b, "hello");
    tt_buf_release(&b, &p);
    tt_bufpool_dispose(&p);
}

static void consumes_from_the_front_and_resets_when_empty(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    assert_true(tt_buf_reserve(&b, &p, 10, 1024));
    put(&b, "0123456789");
    tt_buf_consume(&b, 4);
    assert_int_equal(b.off, 4);
    assert_data(&b, "456789");
    assert_int_equal(tt_buf_space(&b), 64 - 10);
    tt_buf_consume(&b, 6);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(tt_buf_space(&b), 64);
    tt_buf_release(&b, &p);
    tt_bufpool_dispose(&p);
}

static void compacts_the_data_to_the_front_when_that_makes_room(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    assert_true(tt_buf_reserve(&b, &p, 64, 1024));
    char *base = b.base;
    for (int i = 0; i < 6; i++) put(&b, "abcdefghij"); /* 60 bytes */
    tt_buf_consume(&b, 50);
    assert_data(&b, "abcdefghij");
    assert_int_equal(tt_buf_space(&b), 4);
    /* 54 fit after moving the 10 bytes to the front; no new memory */
    assert_true(tt_buf_reserve(&b, &p, 54, 1024));
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.cap, 64);
    assert_int_equal(b.off, 0);
    assert_data(&b, "abcdefghij");
    assert_int_equal(tt_buf_space(&b), 54);
    assert_int_equal(p.in_use, 1);
    tt_buf_release(&b, &p);
    tt_bufpool_dispose(&p);
}

static void grows_beyond_the_block_size_up_to_max(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    assert_true(tt_buf_reserve(&b, &p, 64, 1024));
    char *block = b.base;
    for (int i = 0; i < 6; i++) put(&b, "abcdefghij");
    tt_buf_consume(&b, 5);
    /* 55 bytes held; 100 more need 155: the next power-of-two multiple of the block is 256 */
    assert_true(tt_buf_reserve(&b, &p, 100, 1024));
    assert_int_equal(b.cap, 256);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 55);
    assert_memory_equal(tt_buf_data(&b), "fghijabcdefghij", 15);
    assert_true(tt_buf_space(&b) >= 100);
    assert_int_equal(p.in_use, 1); /* the grown buffer counts once */
    /* the old block went back to the pool: the next buffer gets it */
    tt_buf_t c = {0};
    assert_true(tt_buf_reserve(&c, &p, 1, 1024));
    assert_ptr_equal(c.base, block);
    assert_int_equal(p.in_use, 2);
    /* up to max exactly */
    assert_true(tt_buf_reserve(&b, &p, 1024 - 55, 1024));
    assert_int_equal(b.cap, 1024);
    assert_int_equal(b.len, 55);
    tt_buf_release(&b, &p);
    tt_buf_release(&c, &p);
    assert_int_equal(p.in_use, 0);
    tt_bufpool_dispose(&p);
}

static void refuses_to_reserve_beyond_max(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    /* nothing is taken for a refused first reserve */
    assert_false(tt_buf_reserve(&b, &p, 101, 100));
    assert_null(b.base);
    assert_int_equal(p.in_use, 0);
    assert_true(tt_buf_reserve(&b, &p, 10, 100));
    put(&b, "0123456789");
    char *base = b.base;
    assert_false(tt_buf_reserve(&b, &p, 91, 100));
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.cap, 64);
    assert_data(&b, "0123456789");
    assert_true(tt_buf_reserve(&b, &p, 90, 100));
    assert_data(&b, "0123456789");
    assert_true(tt_buf_space(&b) >= 90);
    /* consumed bytes do not count against max */
    tt_buf_consume(&b, 5);
    assert_true(tt_buf_reserve(&b, &p, 95, 100));
    assert_false(tt_buf_reserve(&b, &p, 96, 100));
    assert_data(&b, "56789");
    tt_buf_release(&b, &p);
    tt_bufpool_dispose(&p);
}

static void takes_a_large_buffer_for_a_large_first_reserve(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    assert_true(tt_buf_reserve(&b, &p, 200, 1024));
    assert_int_equal(b.cap, 256);
    assert_int_equal(p.in_use, 1);
    tt_buf_release(&b, &p);
    assert_int_equal(p.in_use, 0);
    assert_int_equal(p._nfree, 0); /* not block-sized: freed, not pooled */
    tt_bufpool_dispose(&p);
}

static void gives_the_block_back_on_release(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 64, 4);
    tt_buf_t b = {0};
    assert_true(tt_buf_reserve(&b, &p, 1, 64));
    put(&b, "x");
    char *block = b.base;
    tt_buf_release(&b, &p);
    assert_null(b.base);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(p.in_use, 0);
    assert_int_equal(p._nfree, 1);
    /* released twice: the second is a no-op */
    tt_buf_release(&b, &p);
    assert_int_equal(p.in_use, 0);
    assert_int_equal(p._nfree, 1);
    /* the spare is reused */
    assert_true(tt_buf_reserve(&b, &p, 1, 64));
    assert_ptr_equal(b.base, block);
    assert_int_equal(p._nfree, 0);
    assert_int_equal(p.in_use, 1);
    tt_buf_release(&b, &p);
    tt_bufpool_dispose(&p);
}

static void keeps_at_most_max_free_spare_blocks(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 32, 2);
    tt_buf_t b[5] = {{0}};
    for (int i = 0; i < 5; i++) assert_true(tt_buf_reserve(&b[i], &p, 8, 32));
    assert_int_equal(p.in_use, 5);
    for (int i = 0; i < 5; i++) tt_buf_release(&b[i], &p);
    assert_int_equal(p.in_use, 0);
    assert_int_equal(p._nfree, 2);

    /* max_free 0 keeps none */
    tt_bufpool_t none;
    tt_bufpool_init(&none, 32, 0);
    tt_buf_t c = {0};
    assert_true(tt_buf_reserve(&c, &none, 8, 32));
    tt_buf_release(&c, &none);
    assert_int_equal(none._nfree, 0);
    assert_int_equal(none.in_use, 0);
    tt_bufpool_dispose(&none);
    tt_bufpool_dispose(&p);
    assert_int_equal(p._nfree, 0);
}

static void appends_without_a_limit(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 16, 2);
    tt_buf_t b = {0};
    char expect[1000];
    for (int i = 0; i < 100; i++) {
        tt_buf_append(&b, &p, "0123456789", 10);
        memcpy(expect + i * 10, "0123456789", 10);
    }
    assert_int_equal(b.len, 1000);
    assert_true(b.cap >= 1000);
    assert_memory_equal(tt_buf_data(&b), expect, 1000);
    assert_int_equal(p.in_use, 1);
    tt_buf_release(&b, &p);
    assert_int_equal(p.in_use, 0);
    tt_bufpool_dispose(&p);
}

/* the inline fast path (room in the block) and the slow one (no block yet, growing past it) write the same bytes;
 * a field line goes in one piece, an empty value included */
static void appends_field_lines_and_grows_across_blocks(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 16, 2);
    tt_buf_t b = {0};
    tt_buf_append(&b, &p, NULL, 0); /* nothing, and no block taken */
    assert_null(b.base);
    tt_buf_append_field(&b, &p, "Via", 3, "2 tether", 8); /* 15 bytes: the first block */
    tt_buf_append_field(&b, &p, "x-empty", 7, NULL, 0);   /* grows */
    tt_buf_append(&b, &p, "!", 1);
    static const char want[] = "Via: 2 tether\r\nx-empty: \r\n!";
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(tt_buf_data(&b), want, sizeof(want) - 1);
    tt_buf_release(&b, &p);
    assert_int_equal(p.in_use, 0);
    tt_bufpool_dispose(&p);
}

static void lends_fixed_size_objects_and_keeps_max_free_spares(void **state)
{
    (void)state;
    tt_bufpool_t p;
    tt_bufpool_init(&p, 272, 2);
    void *a = tt_bufpool_get(&p), *b = tt_bufpool_get(&p), *c = tt_bufpool_get(&p);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    memset(a, 1, 272); /* the whole size is usable (an overflow would show under ASan) */
    assert_int_equal(p.in_use, 3);
    tt_bufpool_put(&p, a);
    tt_bufpool_put(&p, b);
    tt_bufpool_put(&p, c); /* beyond max_free: freed */
    assert_int_equal(p.in_use, 0);
    assert_int_equal(p._nfree, 2);
    assert_ptr_equal(tt_bufpool_get(&p), b); /* the last spare given back comes first */
    assert_int_equal(p._nfree, 1);
    tt_bufpool_put(&p, b);
    tt_bufpool_dispose(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_empty_and_takes_a_block_on_first_reserve),
        cmocka_unit_test(consumes_from_the_front_and_resets_when_empty),
        cmocka_unit_test(compacts_the_data_to_the_front_when_that_makes_room),
        cmocka_unit_test(grows_beyond_the_block_size_up_to_max),
        cmocka_unit_test(refuses_to_reserve_beyond_max),
        cmocka_unit_test(takes_a_large_buffer_for_a_large_first_reserve),
        cmocka_unit_test(gives_the_block_back_on_release),
        cmocka_unit_test(keeps_at_most_max_free_spare_blocks),
        cmocka_unit_test(appends_without_a_limit),
        cmocka_unit_test(appends_field_lines_and_grows_across_blocks),
        cmocka_unit_test(lends_fixed_size_objects_and_keeps_max_free_spares),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
