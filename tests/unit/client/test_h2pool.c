/* test_h2pool.c -- the HTTP/2 upstream pool (src/client/h2pool.c): the pure decision of `protocol = auto`, whether
 * an http/1.1 ALPN answer still holds or ALPN is asked again (h2_alpn_recheck). The pool itself runs against real
 * origins in tests/integration/test_h2_upstream.py and test_h2_upstream_health.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "client/h2pool.h"

static void an_http1_answer_holds_for_the_recheck_time_then_alpn_is_asked_again(void **state)
{
    (void)state;
    assert_true(tt_h2pool_alpn_fresh(1000, 1000, 60000));
    assert_true(tt_h2pool_alpn_fresh(1000, 60999, 60000));
    assert_false(tt_h2pool_alpn_fresh(1000, 61000, 60000));
    assert_false(tt_h2pool_alpn_fresh(0, UINT64_C(1) << 40, 1));
}

static void a_recheck_time_of_zero_keeps_the_answer_for_good(void **state)
{
    (void)state;
    assert_true(tt_h2pool_alpn_fresh(1000, 1000, 0));
    assert_true(tt_h2pool_alpn_fresh(1000, UINT64_C(1) << 40, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_http1_answer_holds_for_the_recheck_time_then_alpn_is_asked_again),
        cmocka_unit_test(a_recheck_time_of_zero_keeps_the_answer_for_good),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
