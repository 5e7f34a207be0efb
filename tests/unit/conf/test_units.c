/* test_units.c -- values with units (src/conf/units.c): durations, sizes, booleans and bounded counts */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "conf/units.h"

static void expect_duration(const char *s, uint64_t want)
{
    uint64_t ms = 12345;
    const char *why = NULL;
    int r = tt_units_duration(s, &ms, &why);
    if (r != 0) print_error("\"%s\": %s\n", s, why);
    assert_int_equal(r, 0);
    if (ms != want) print_error("\"%s\": %llu ms, want %llu\n", s, (unsigned long long)ms, (unsigned long long)want);
    assert_int_equal(ms, want);
}

static void expect_duration_bad(const char *s, const char *why_want)
{
    uint64_t ms = 12345;
    const char *why = NULL;
    int r = tt_units_duration(s, &ms, &why);
    if (r != -1) print_error("\"%s\" accepted as %llu ms\n", s, (unsigned long long)ms);
    assert_int_equal(r, -1);
    assert_int_equal(ms, 12345); /* untouched */
    assert_non_null(why);
    assert_string_equal(why, why_want);
}

static void parses_durations_with_units(void **state)
{
    (void)state;
    expect_duration("250ms", 250);
    expect_duration("5s", 5000);
    expect_duration("2m", 120000);
    expect_duration("1h", 3600000);
    expect_duration("0", 0);
    expect_duration("0ms", 0);
    expect_duration("0s", 0);
    expect_duration("1ms", 1);
    expect_duration("90s", 90000);
    expect_duration("007s", 7000);
}

static void reads_a_bare_number_as_seconds(void **state)
{
    (void)state;
    expect_duration("5", 5000);
    expect_duration("900", 900000);
    expect_duration("1.5", 1500);
}

static void accepts_fractions_rounding_down_to_the_millisecond(void **state)
{
    (void)state;
    expect_duration("1.5s", 1500);
    expect_duration("0.25s", 250);
    expect_duration("1.5m", 90000);
    expect_duration("0.5h", 1800000);
    expect_duration("2.75h", 9900000);
    expect_duration("1.9ms", 1);
    expect_duration("0.0001s", 0);
    expect_duration("0.0015s", 1);
    expect_duration("1.123456789s", 1123);
}

static void accepts_up_to_30_days(void **state)
{
    (void)state;
    expect_duration("720h", 2592000000ull);
    expect_duration("43200m", 2592000000ull);
    expect_duration("2592000000ms", 2592000000ull);
    expect_duration("2592000", 2592000000ull);
}

static void refuses_bad_durations(void **state)
{
    (void)state;
    const char *days = "longer than 30 days";
    const char *unit = "unknown unit (use ms, s, m or h)";
    const char *form = "expected a duration such as 250ms, 5s, 2m or 1h";
    expect_duration_bad("-1s", "must not be negative");
    expect_duration_bad("-0", "must not be negative");
    expect_duration_bad("", form);
    expect_duration_bad("s", form);
    expect_duration_bad(".5s", form);
    expect_duration_bad(" 5s", form);
    expect_duration_bad("+5s", form);
    expect_duration_bad("5x", unit);
    expect_duration_bad("5d", unit);
    expect_duration_bad("5 s", unit);
    expect_duration_bad("5S", unit);
    expect_duration_bad("5sec", unit);
    expect_duration_bad("5s ", unit);
    expect_duration_bad("5mss", unit);
    expect_duration_bad("1.", "expected digits after the decimal point");
    expect_duration_bad("1.s", "expected digits after the decimal point");
    expect_duration_bad("721h", days);
    expect_duration_bad("2592000001ms", days);
    expect_duration_bad("720.001h", days);
    expect_duration_bad("2592001", days);
    expect_duration_bad("99999999999999999999999999s", days);
}

static void expect_size(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    const char *why = NULL;
    int r = tt_units_size(s, &v, &why);
    if (r != 0) print_error("\"%s\": %s\n", s, why);
    assert_int_equal(r, 0);
    assert_int_equal(v, want);
}

static void expect_size_bad(const char *s, const char *why_want)
{
    uint64_t v = 12345;
    const char *why = NULL;
    int r = tt_units_size(s, &v, &why);
    if (r != -1) print_error("\"%s\" accepted as %llu bytes\n", s, (unsigned long long)v);
    assert_int_equal(r, -1);
    assert_int_equal(v, 12345);
    assert_string_equal(why, why_want);
}

static void parses_sizes(void **state)
{
    (void)state;
    expect_size("0", 0);
    expect_size("512", 512);
    expect_size("64k", 65536);
    expect_size("64K", 65536);
    expect_size("1m", 1048576);
    expect_size("1M", 1048576);
    expect_size("1g", 1073741824ull);
    expect_size("2G", 2147483648ull);
    expect_size("1024g", 1099511627776ull);
    expect_size("1099511627776", 1099511627776ull);
}

static void refuses_bad_sizes(void **state)
{
    (void)state;
    const char *form = "expected a size such as 512, 64k, 1m or 1g";
    const char *unit = "unknown unit (use k, m or g)";
    expect_size_bad("", form);
    expect_size_bad("k", form);
    expect_size_bad("-1", form);
    expect_size_bad(" 1", form);
    expect_size_bad("1x", unit);
    expect_size_bad("1kb", unit);
    expect_size_bad("1.5k", unit);
    expect_size_bad("1 k", unit);
    expect_size_bad("1t", unit);
    expect_size_bad("1099511627777", "too large");
    expect_size_bad("99999999999999999999", "too large");
}

/* A number small enough to pass the digit check but whose product with the unit overflows 64 bits must be
 * refused, not wrapped (2^34 g = 2^64 would wrap to 0; 2^40 g = 2^70 to 0 too). */
static void refuses_sizes_that_overflow_with_their_unit(void **state)
{
    (void)state;
    expect_size_bad("17179869184g", "too large");
    expect_size_bad("1099511627776g", "too large");
}

static void parses_booleans(void **state)
{
    (void)state;
    static const char *const on[] = {"on", "true", "yes", "1"}, *const off[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(on); i++) {
        bool v = false;
        const char *why = NULL;
        assert_int_equal(tt_units_bool(on[i], &v, &why), 0);
        assert_true(v);
        v = true;
        assert_int_equal(tt_units_bool(off[i], &v, &why), 0);
        assert_false(v);
    }
    static const char *const bad[] = {"", "2", "enable", "onn", " on", "of", "y", "n"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        bool v = true;
        const char *why = NULL;
        assert_int_equal(tt_units_bool(bad[i], &v, &why), -1);
        assert_true(v);
        assert_string_equal(why, "expected on or off");
    }
}

static void expect_uint(const char *s, uint64_t min, uint64_t max, int rc, uint64_t want, const char *why_want)
{
    uint64_t v = 12345;
    const char *why = NULL;
    int r = tt_units_uint(s, min, max, &v, &why);
    if (r != rc)
        print_error("\"%s\" in [%llu, %llu]: %d, v %llu\n", s, (unsigned long long)min, (unsigned long long)max, r,
                    (unsigned long long)v);
    assert_int_equal(r, rc);
    assert_int_equal(v, want);
    if (rc != 0) assert_string_equal(why, why_want);
}

static void parses_counts_within_their_range(void **state)
{
    (void)state;
    const char *range = "out of range", *form = "expected a whole number";
    expect_uint("0", 0, 10, 0, 0, NULL);
    expect_uint("10", 0, 10, 0, 10, NULL);
    expect_uint("1", 1, 10, 0, 1, NULL);
    expect_uint("0", 1, 10, -1, 12345, range);
    expect_uint("11", 1, 10, -1, 12345, range);
    expect_uint("65535", 1, 65535, 0, 65535, NULL);
    expect_uint("65536", 1, 65535, -1, 12345, range);
    expect_uint("0000000000000000000000010", 1, 10, 0, 10, NULL);
    expect_uint("4294967295", 0, UINT32_MAX, 0, 4294967295ull, NULL);
    expect_uint("4294967296", 0, UINT32_MAX, -1, 12345, range);
    expect_uint("18446744073709551615", 0, UINT64_MAX, 0, UINT64_MAX, NULL);
    expect_uint("", 0, 10, -1, 12345, form);
    expect_uint("-1", 0, 10, -1, 12345, form);
    expect_uint("1x", 0, 10, -1, 12345, form);
    expect_uint("1 ", 0, 10, -1, 12345, form);
    expect_uint(" 1", 0, 10, -1, 12345, form);
    expect_uint("1.0", 0, 10, -1, 12345, form);
}

/* With a maximum near UINT64_MAX the digit loop must still notice a value that does not fit in 64 bits. */
static void refuses_counts_that_overflow_64_bits(void **state)
{
    (void)state;
    expect_uint("18446744073709551616", 0, UINT64_MAX, -1, 12345, "out of range");
    expect_uint("99999999999999999999", 0, UINT64_MAX, -1, 12345, "out of range");
}

/* Issue 9: a single digit above the maximum (7 with max 5) made `max - d` wrap, so the guard let it through. */
static void refuses_a_single_digit_above_a_small_maximum(void **state)
{
    (void)state;
    for (uint64_t max = 0; max <= 9; max++)
        for (char d = '0'; d <= '9'; d++) {
            char s[2] = {d, 0};
            uint64_t want = (uint64_t)(d - '0');
            if (want <= max)
                expect_uint(s, 0, max, 0, want, NULL);
            else
                expect_uint(s, 0, max, -1, 12345, "out of range");
        }
    expect_uint("7", 1, 5, -1, 12345, "out of range");
    expect_uint("15", 1, 5, -1, 12345, "out of range");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_durations_with_units),
        cmocka_unit_test(reads_a_bare_number_as_seconds),
        cmocka_unit_test(accepts_fractions_rounding_down_to_the_millisecond),
        cmocka_unit_test(accepts_up_to_30_days),
        cmocka_unit_test(refuses_bad_durations),
        cmocka_unit_test(parses_sizes),
        cmocka_unit_test(refuses_bad_sizes),
        cmocka_unit_test(refuses_sizes_that_overflow_with_their_unit),
        cmocka_unit_test(parses_booleans),
        cmocka_unit_test(parses_counts_within_their_range),
        cmocka_unit_test(refuses_counts_that_overflow_64_bits),
        cmocka_unit_test(refuses_a_single_digit_above_a_small_maximum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
