/* test_uri.c -- authority syntax, absolute-form targets and path normalization (src/http/uri.c) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http/uri.h"

static tt_str_t cs(const char *s)
{
    return tt_str(s, strlen(s));
}

static void expect_path(const char *in, const char *want)
{
    char out[256];
    int n = tt_uri_normalize_path(cs(in), out);
    if (n < 0 || (size_t)n != strlen(want) || memcmp(out, want, (size_t)n) != 0)
        print_error("%s -> %.*s (%d), expected %s\n", in, n > 0 ? n : 0, out, n, want);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, (size_t)n);
    assert_true((size_t)n <= strlen(in)); /* never longer than what came */
    /* a normal path is its own normal form, and the fast check agrees with the slow one */
    char again[256];
    assert_int_equal(tt_uri_normalize_path(tt_str(out, (size_t)n), again), n);
    assert_memory_equal(again, out, (size_t)n);
    if (tt_uri_path_is_normal(cs(in))) assert_string_equal(in, want);
}

static void expect_refused(const char *in)
{
    char out[256];
    int n = tt_uri_normalize_path(cs(in), out);
    if (n != TT_BAD) print_error("%s accepted as %.*s\n", in, n > 0 ? n : 0, out);
    assert_int_equal(n, TT_BAD);
}

static void leaves_normal_paths_alone(void **state)
{
    (void)state;
    expect_path("/", "/");
    expect_path("/a/b/c", "/a/b/c");
    expect_path("/a/b/", "/a/b/");
    expect_path("//a//b", "//a//b"); /* empty segments are kept (tether does not merge slashes) */
    expect_path("/a..b/.c/c.", "/a..b/.c/c.");
    expect_path("/...", "/...");
    expect_path("/a%20b/%2F/%C3%A9", "/a%20b/%2F/%C3%A9"); /* reserved and non-ASCII stay encoded, as sent */
    expect_path("/a;p=1/b@c:d", "/a;p=1/b@c:d");
    assert_true(tt_uri_path_is_normal(cs("/api/v1/x")));
    assert_false(tt_uri_path_is_normal(cs("/api/./x")));
    assert_false(tt_uri_path_is_normal(cs("/api/%41")));
}

static void decodes_unreserved_characters(void **state)
{
    (void)state;
    expect_path("/%61pi/x", "/api/x"); /* RFC 3986 6.2.2.2 */
    expect_path("/%41%5a%7e%2D%5F%2e%30", "/AZ~-_.0");
    expect_path("/%7E%7e", "/~~");
}

static void removes_dot_segments(void **state)
{
    (void)state;
    expect_path("/.", "/");
    expect_path("/./", "/");
    expect_path("/a/.", "/a/");
    expect_path("/a/./b", "/a/b");
    expect_path("/a/..", "/");
    expect_path("/a/../", "/");
    expect_path("/a/b/..", "/a/");
    expect_path("/a/b/../c", "/a/c");
    expect_path("/api/../admin", "/admin");
    expect_path("/x/../api/x", "/api/x");
    expect_path("/a/b/c/../../d", "/a/d");
    expect_path("//..", "/");        /* removes the empty segment before it */
    expect_path("/a//../b", "/a/b"); /* likewise */
    /* encoded dots are dots */
    expect_path("/api/%2e%2e/admin", "/admin");
    expect_path("/api/.%2E/admin", "/admin");
    expect_path("/api/%2E./admin", "/admin");
    expect_path("/a/%2e/b", "/a/b");
}

static void refuses_what_climbs_or_is_ambiguous(void **state)
{
    (void)state;
    expect_refused("/..");
    expect_refused("/../x");
    expect_refused("/a/../../x");
    expect_refused("/%2e%2e/x");
    expect_refused("/a/%2E%2E/%2e%2E");
    /* bad percent-encodings, and NUL */
    expect_refused("/a%zz");
    expect_refused("/a%2");
    expect_refused("/a%");
    expect_refused("/a%00b");
    /* a dot-segment hidden behind an encoded slash or a backslash: other servers read those as separators */
    expect_refused("/api/..%2fadmin");
    expect_refused("/api/..%2Fadmin");
    expect_refused("/api/%2e%2e%2fadmin");
    expect_refused("/api/x%2f..");
    expect_refused("/api/..%5cadmin");
    expect_refused("/api/..\\admin");
    expect_refused("/api/a\\..\\b");
    expect_refused("/api/.%2Fx");
    expect_refused("");
    expect_refused("a/b");
    /* ...but an encoded slash next to ordinary names is kept */
    expect_path("/pkg/@scope%2fname", "/pkg/@scope%2fname");
    expect_path("/a\\b", "/a\\b");
    expect_path("/a%2f.b", "/a%2f.b");
}

static void checks_authorities(void **state)
{
    (void)state;
    assert_true(tt_uri_authority_valid(cs("a"), false));
    assert_true(tt_uri_authority_valid(cs("a:1"), true));
    assert_false(tt_uri_authority_valid(cs("a"), true));
    assert_false(tt_uri_authority_valid(cs("a:"), true));
    assert_true(tt_uri_authority_valid(cs("a:"), false));
    assert_true(tt_uri_authority_valid(cs("[::1]:65535"), true));
    assert_false(tt_uri_authority_valid(cs("[::1]:65536"), true));
    assert_false(tt_uri_authority_valid(cs(""), false));
    assert_false(tt_uri_authority_valid(cs("[]"), false));
    assert_false(tt_uri_authority_valid(cs("[:]"), false));
    assert_false(tt_uri_authority_valid(cs("a,b"), false));
    assert_false(tt_uri_authority_valid(cs("a@b"), false));
}

static void splits_absolute_form(void **state)
{
    (void)state;
    tt_str_t a, rest;
    assert_true(tt_uri_split_absolute(cs("http://h:8/p?q"), &a, &rest));
    assert_int_equal(a.n, 3);
    assert_memory_equal(a.p, "h:8", 3);
    assert_int_equal(rest.n, 4);
    assert_memory_equal(rest.p, "/p?q", 4);
    assert_true(tt_uri_split_absolute(cs("HTTPS://h"), &a, &rest));
    assert_int_equal(rest.n, 0);
    assert_true(tt_uri_split_absolute(cs("http://h?x"), &a, &rest));
    assert_memory_equal(rest.p, "?x", 2);
    assert_false(tt_uri_split_absolute(cs("ftp://h/"), &a, &rest));
    assert_false(tt_uri_split_absolute(cs("httpx://h/"), &a, &rest));
    assert_false(tt_uri_split_absolute(cs("http:/h/"), &a, &rest));
    assert_false(tt_uri_split_absolute(cs("http://u@h/"), &a, &rest));
    assert_false(tt_uri_split_absolute(cs("http:///p"), &a, &rest));
    assert_false(tt_uri_split_absolute(cs("//h/p"), &a, &rest));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(leaves_normal_paths_alone), cmocka_unit_test(decodes_unreserved_characters),
        cmocka_unit_test(removes_dot_segments),      cmocka_unit_test(refuses_what_climbs_or_is_ambiguous),
        cmocka_unit_test(checks_authorities),        cmocka_unit_test(splits_absolute_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
