/* test_date.c -- HTTP-date (src/http/date.c): IMF-fixdate output, the three accepted input forms, refusals */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <time.h>

#include "http/date.h"

/* Parses a C string; returns the parser's result and the time in `*t` (left at -42 when untouched). */
static int parse(const char *s, int64_t *t)
{
    *t = -42;
    return tt_http_date_parse(tt_str(s, strlen(s)), t);
}

static void expect_format(int64_t t, const char *want)
{
    char buf[TT_HTTP_DATE_LEN + 8];
    memset(buf, 'x', sizeof(buf));
    tt_http_date_format(t, buf);
    assert_string_equal(buf, want);
    assert_int_equal(strlen(buf), TT_HTTP_DATE_LEN);
    assert_int_equal(buf[TT_HTTP_DATE_LEN + 1], 'x'); /* nothing written past the NUL */
}

static void formats_imf_fixdate(void **state)
{
    (void)state;
    expect_format(0, "Thu, 01 Jan 1970 00:00:00 GMT");
    expect_format(784111777, "Sun, 06 Nov 1994 08:49:37 GMT");
    expect_format(951782400, "Tue, 29 Feb 2000 00:00:00 GMT");
    expect_format(1700000000, "Tue, 14 Nov 2023 22:13:20 GMT");
    expect_format(4102444799, "Thu, 31 Dec 2099 23:59:59 GMT");
    expect_format(86399, "Thu, 01 Jan 1970 23:59:59 GMT");
}

static void parses_the_three_forms_of_one_instant(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(parse("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(parse("Sun Nov  6 08:49:37 1994", &t), 0);
    assert_int_equal(t, 784111777);
}

static void parses_asctime_with_two_digit_days(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(parse("Wed Nov 16 08:49:37 1994", &t), 0);
    assert_int_equal(t, 784111777 + 10 * 86400);
    assert_int_equal(parse("Thu Jan  1 00:00:00 1970", &t), 0);
    assert_int_equal(t, 0);
}

/* RFC 9110 5.6.7: a two-digit year more than 50 years ahead of now is the most recent past one. */
static void parses_rfc850_years_relative_to_now(void **state)
{
    (void)state;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int this_year = tm.tm_year + 1900;
    const struct {
        int ahead;    /* years from now the two digits could mean */
        int expected; /* the year they must mean */
    } cases[] = {
        {0, this_year}, {10, this_year + 10}, {49, this_year + 49}, {60, this_year + 60 - 100}, {99, this_year - 1}};
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        char s[64], want[TT_HTTP_DATE_LEN + 1];
        snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", (this_year + cases[i].ahead) % 100);
        int64_t t;
        assert_int_equal(parse(s, &t), 0);
        tt_http_date_format(t, want);
        char year[8];
        snprintf(year, sizeof(year), "%04d", cases[i].expected);
        assert_non_null(strstr(want, year));
    }
    int64_t t;
    assert_int_equal(parse("Tuesday, 14-Nov-23 22:13:20 GMT", &t), 0);
    assert_int_equal(t, 1700000000);
}

static void round_trips_what_it_formats(void **state)
{
    (void)state;
    static const int64_t times[] = {
        0, 1, 59, 86399, 86400, 784111777, 951782400, 951868799, 1700000000, 1709164800 /* 2024-02-29 */, 4102444799};
    for (size_t i = 0; i < TT_ARRAY_SIZE(times); i++) {
        char buf[TT_HTTP_DATE_LEN + 1];
        int64_t t;
        tt_http_date_format(times[i], buf);
        assert_int_equal(tt_http_date_parse(tt_str(buf, TT_HTTP_DATE_LEN), &t), 0);
        assert_int_equal(t, times[i]);
    }
}

static void parses_only_the_given_bytes(void **state)
{
    (void)state;
    /* the view ends before the trailing junk: accepted; with it: refused */
    static const char s[] = "Sun, 06 Nov 1994 08:49:37 GMTjunk";
    int64_t t = 0;
    assert_int_equal(tt_http_date_parse(tt_str(s, 29), &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(tt_http_date_parse(tt_str(s, sizeof(s) - 1), &t), -1);
    assert_int_equal(tt_http_date_parse(tt_str(s, 28), &t), -1);
}

static void refuses_malformed_dates(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT ",
        " Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sunday, 06 Nov 94 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun Nov 6  08:49:37 1994",
        "Sun Nov  6 08:49:37",
        "Sun Foo  6 08:49:37 1994",
        "Sun",
        "1994-11-06T08:49:37Z",
        "784111777",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        int64_t t;
        int r = parse(bad[i], &t);
        if (r != -1) print_error("accepted \"%s\" as %lld\n", bad[i], (long long)t);
        assert_int_equal(r, -1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(formats_imf_fixdate),
        cmocka_unit_test(parses_the_three_forms_of_one_instant),
        cmocka_unit_test(parses_asctime_with_two_digit_days),
        cmocka_unit_test(parses_rfc850_years_relative_to_now),
        cmocka_unit_test(round_trips_what_it_formats),
        cmocka_unit_test(parses_only_the_given_bytes),
        cmocka_unit_test(refuses_malformed_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
