/* test_h1_conn_size.c -- what one connection costs in memory (src/http/h1_conn_types.h): prints the size of every
 * per-connection struct and bounds the one an idle keep-alive connection keeps (issue 15: at most 256 bytes of RSS
 * per idle keep-alive connection; bench/static.sh measures the RSS). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "client/upstream.h"
#include "http/h1_conn_types.h"

static void prints_the_size_of_each_per_connection_struct(void **state)
{
    (void)state;
    printf("h1_conn_t (every h1 connection, idle or not) %zu bytes\n", sizeof(h1_conn_t));
    printf("h1_active_t (working state, pooled; none while idle) %zu bytes\n", sizeof(h1_active_t));
    printf("h1_areq_t (an asynchronous request, + its captured strings) %zu bytes\n", sizeof(h1_areq_t));
    printf("out_file_t (a queued file range, 4 slots while in use) %zu bytes\n", sizeof(out_file_t));
    printf("tt_upconn_t (an upstream connection) %zu bytes\n", sizeof(tt_upconn_t));
    printf("of which: tt__conn_t %zu, tt_io_t %zu, tt_addr_t %zu, tt_buf_t %zu, tt_defer_t %zu\n", sizeof(tt__conn_t),
           sizeof(tt_io_t), sizeof(tt_addr_t), sizeof(tt_buf_t), sizeof(tt_defer_t));
}

/* An idle connection keeps its h1_conn_t and nothing else of its own (its working state, buffers included, went back
 * to the worker's pools): the struct, with glibc's chunk header and 16-byte rounding, stays within 208 bytes. */
static void an_idle_connection_keeps_at_most_its_bounded_struct(void **state)
{
    (void)state;
    assert_true(sizeof(h1_conn_t) <= TT_H1_CONN_MAX_SIZE);
    size_t chunk = (sizeof(h1_conn_t) + sizeof(size_t) + 15) & ~(size_t)15; /* glibc: size + header, 16-aligned */
    assert_true(chunk <= 208);
    h1_conn_t *c = calloc(1, sizeof(h1_conn_t));
    assert_non_null(c);
    assert_true(malloc_usable_size(c) + sizeof(size_t) <= 208); /* what the allocator really gave */
    free(c);
}

/* The working state is pooled per worker (at most 256 spares), not kept per idle connection; still, it is bounded
 * so that a change that grows it is seen. */
static void the_working_state_stays_small(void **state)
{
    (void)state;
    assert_true(sizeof(h1_active_t) <= 320);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prints_the_size_of_each_per_connection_struct),
        cmocka_unit_test(an_idle_connection_keeps_at_most_its_bounded_struct),
        cmocka_unit_test(the_working_state_stays_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
