/* test_addrset.c -- sets of socket addresses (src/net/addrset.c): equality of one address (family, address, port,
 * scope), membership, set comparison that ignores order and repeats (DNS round-robin rotates answers), dedup that
 * keeps the resolver's order, and the printed form of the log lines */
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "net/addrset.h"

#include <stdio.h>
#include <string.h>

static tt_addr_t A(const char *s)
{
    tt_addr_t a;
    const char *why = NULL;
    if (tt_addr_parse(s, false, &a, &why) != 0) fail_msg("%s: %s", s, why);
    return a;
}

static void compares_one_address_by_family_address_port_and_scope(void **state)
{
    (void)state;
    tt_addr_t a = A("127.0.0.2:80"), b = A("127.0.0.2:80");
    assert_true(tt_addr_equal(&a, &b));
    b = A("127.0.0.3:80");
    assert_false(tt_addr_equal(&a, &b));
    b = A("127.0.0.2:81");
    assert_false(tt_addr_equal(&a, &b));
    tt_addr_t v6 = A("[::1]:80"), v6b = A("[::1]:80"), mapped = A("[::ffff:127.0.0.2]:80");
    assert_true(tt_addr_equal(&v6, &v6b));
    assert_false(tt_addr_equal(&v6, &a));
    assert_false(tt_addr_equal(&mapped, &a)); /* another family is another address to connect to */
    v6b.ss.in6.sin6_scope_id = 2;
    assert_false(tt_addr_equal(&v6, &v6b));
    tt_addr_t unset1, unset2;
    memset(&unset1, 0, sizeof(unset1));
    memset(&unset2, 0xff, sizeof(unset2));
    unset2.len = 0;
    assert_true(tt_addr_equal(&unset1, &unset2));
    assert_false(tt_addr_equal(&unset1, &a));
    /* bytes beyond the address (padding, sin_zero) do not matter */
    tt_addr_t c = A("10.0.0.1:443"), d = A("10.0.0.1:443");
    memset(d.ss.in.sin_zero, 0x5a, sizeof(d.ss.in.sin_zero));
    assert_true(tt_addr_equal(&c, &d));
}

static void tells_whether_an_address_is_in_a_set(void **state)
{
    (void)state;
    tt_addr_t set[] = {A("10.0.0.1:80"), A("10.0.0.2:80"), A("[2001:db8::1]:80")};
    tt_addr_t in = A("10.0.0.2:80"), v6 = A("[2001:db8::1]:80"), out = A("10.0.0.3:80"), port = A("10.0.0.1:8080");
    assert_true(tt_addrset_contains(set, 3, &in));
    assert_true(tt_addrset_contains(set, 3, &v6));
    assert_false(tt_addrset_contains(set, 3, &out));
    assert_false(tt_addrset_contains(set, 3, &port));
    assert_false(tt_addrset_contains(set, 0, &in)); /* the empty set holds nothing */
    assert_false(tt_addrset_contains(set, 1, &in)); /* only the first n count */
}

static void compares_sets_whatever_their_order_and_repeats(void **state)
{
    (void)state;
    tt_addr_t x[] = {A("10.0.0.1:80"), A("10.0.0.2:80"), A("10.0.0.3:80")};
    tt_addr_t rotated[] = {A("10.0.0.3:80"), A("10.0.0.1:80"), A("10.0.0.2:80")};
    tt_addr_t repeated[] = {A("10.0.0.2:80"), A("10.0.0.1:80"), A("10.0.0.2:80"), A("10.0.0.3:80")};
    tt_addr_t fewer[] = {A("10.0.0.1:80"), A("10.0.0.2:80")};
    tt_addr_t other[] = {A("10.0.0.1:80"), A("10.0.0.2:80"), A("10.0.0.4:80")};
    tt_addr_t moved[] = {A("10.0.0.9:80")};
    assert_true(tt_addrset_same(x, 3, x, 3));
    assert_true(tt_addrset_same(x, 3, rotated, 3)); /* DNS round-robin: the same set */
    assert_true(tt_addrset_same(rotated, 3, x, 3));
    assert_true(tt_addrset_same(x, 3, repeated, 4));
    assert_false(tt_addrset_same(x, 3, fewer, 2)); /* an address left */
    assert_false(tt_addrset_same(fewer, 2, x, 3)); /* an address came */
    assert_false(tt_addrset_same(x, 3, other, 3)); /* one replaced, same count */
    assert_false(tt_addrset_same(x, 3, moved, 1));
    assert_true(tt_addrset_same(x, 0, moved, 0));
    assert_false(tt_addrset_same(x, 0, moved, 1));
    assert_false(tt_addrset_same(moved, 1, x, 0));
}

static void removes_repeats_keeping_the_first_of_each_in_order(void **state)
{
    (void)state;
    tt_addr_t s[] = {A("10.0.0.2:80"), A("10.0.0.1:80"), A("10.0.0.2:80"), A("[::1]:80"), A("10.0.0.1:80")};
    size_t n = tt_addrset_dedup(s, 5);
    assert_int_equal(n, 3);
    tt_addr_t want[] = {A("10.0.0.2:80"), A("10.0.0.1:80"), A("[::1]:80")};
    for (size_t i = 0; i < n; i++) assert_true(tt_addr_equal(&s[i], &want[i]));
    assert_int_equal(tt_addrset_dedup(s, 0), 0);
    assert_int_equal(tt_addrset_dedup(s, 1), 1);
}

static void prints_a_set_for_the_log(void **state)
{
    (void)state;
    char buf[128];
    tt_addr_t s[] = {A("127.0.0.3:8080"), A("[::1]:8080")};
    assert_int_equal(tt_addrset_format(s, 2, buf, sizeof(buf)), strlen("127.0.0.3:8080, [::1]:8080"));
    assert_string_equal(buf, "127.0.0.3:8080, [::1]:8080");
    tt_addrset_format(s, 0, buf, sizeof(buf));
    assert_string_equal(buf, "(none)");
    char small[20];
    size_t n = tt_addrset_format(s, 2, small, sizeof(small)); /* cut, never overrun */
    assert_true(n < sizeof(small));
    assert_string_equal(small, "127.0.0.3:8080...");
    assert_int_equal(tt_addrset_format(s, 2, small, 0), 0);
}

/* tt_addr_format_host writes IPv4 itself (no inet_ntop): every octet width, and what inet_ntop writes for IPv6 */
static void formats_the_host_part_as_inet_ntop_does(void **state)
{
    (void)state;
    static const char *const v4[] = {"0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "255.255.255.255", "10.200.0.9"};
    char buf[64];
    for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
        char spec[40];
        snprintf(spec, sizeof(spec), "%s:80", v4[i]);
        tt_addr_t a = A(spec);
        size_t n = tt_addr_format_host(&a, buf, sizeof(buf));
        assert_string_equal(buf, v4[i]);
        assert_int_equal(n, strlen(v4[i]));
    }
    tt_addr_t a = A("[2001:db8::1]:443");
    assert_int_equal(tt_addr_format_host(&a, buf, sizeof(buf)), strlen("2001:db8::1"));
    assert_string_equal(buf, "2001:db8::1");
    tt_addr_t unset;
    memset(&unset, 0, sizeof(unset));
    tt_addr_format_host(&unset, buf, sizeof(buf));
    assert_string_equal(buf, "-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compares_one_address_by_family_address_port_and_scope),
        cmocka_unit_test(tells_whether_an_address_is_in_a_set),
        cmocka_unit_test(compares_sets_whatever_their_order_and_repeats),
        cmocka_unit_test(removes_repeats_keeping_the_first_of_each_in_order),
        cmocka_unit_test(prints_a_set_for_the_log),
        cmocka_unit_test(formats_the_host_part_as_inet_ntop_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
