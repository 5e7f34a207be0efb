/* test_keepalive.c -- placeholder replaced by the full table test */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http/keepalive.h"

static void keeps_a_plain_http11_connection(void **state)
{
    (void)state;
    tt_ka_policy_t p = {.idle_timeout_ms = 5000, .max_requests = 10, .max_lifetime_ms = 0};
    tt_ka_state_t s = {.minor_version = 1, .requests = 1};
    assert_int_equal(tt_keepalive_decide(&p, &s), TT_CLOSE_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(keeps_a_plain_http11_connection)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
