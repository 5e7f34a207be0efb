/* test_static_path.c -- request path decoding of the static handler (tt_static_decode_path in
 * src/handlers/static.c): percent-decoding, dropped segments, the directory flag and every refusal */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "handlers/static.h"

/* Decodes `in` into a `size`-byte buffer; checks the result is `want` (NULL: refused with `refusal`, -1 for a
 * bad path, -2 for one too long) and the dir flag. */
static void expect_result(const char *in, size_t size, const char *want, bool want_dir, int refusal)
{
    char out[512];
    assert_true(size <= sizeof(out) - 8);
    memset(out, '#', sizeof(out));
    bool dir = !want_dir;
    int n = tt_static_decode_path(tt_str(in, strlen(in)), out, size, &dir);
    if (want == NULL) {
        if (n != refusal) print_error("\"%s\" gave %d (\"%.*s\")\n", in, n, n > 0 ? n : 0, out);
        assert_int_equal(n, refusal);
        assert_int_equal(out[size], '#'); /* nothing written past the buffer */
        return;
    }
    if (n < 0) print_error("\"%s\" refused\n", in);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
    assert_int_equal(dir, want_dir);
    assert_int_equal(out[size], '#');
}

static void expect_sized(const char *in, size_t size, const char *want, bool want_dir)
{
    expect_result(in, size, want, want_dir, -2);
}

static void expect_path(const char *in, const char *want, bool want_dir)
{
    expect_sized(in, 256, want, want_dir);
}

static void expect_refused(const char *in)
{
    expect_result(in, 256, NULL, false, -1);
}

static void decodes_plain_paths(void **state)
{
    (void)state;
    expect_path("/index.html", "index.html", false);
    expect_path("/a/b/c.txt", "a/b/c.txt", false);
    expect_path("a/b", "a/b", false);
    expect_path("/a-b_c~d.e!$&'()*+,;=:@", "a-b_c~d.e!$&'()*+,;=:@", false);
    expect_path("/...", "...", false);
    expect_path("/.hidden", ".hidden", false);
    expect_path("/a..b", "a..b", false);
}

static void percent_decodes_with_either_case_of_hex(void **state)
{
    (void)state;
    expect_path("/a%20b", "a b", false);
    expect_path("/%41%42%43", "ABC", false);
    expect_path("/caf%c3%A9", "caf\xc3\xa9", false);
    expect_path("/%7e%7E", "~~", false);
    expect_path("/%25", "%", false);
    expect_path("/%2541", "%41", false); /* decoded once */
    expect_path("/a%3fb", "a?b", false);
}

static void drops_empty_and_dot_segments(void **state)
{
    (void)state;
    expect_path("/", "", true);
    expect_path("", "", false);
    expect_path("//a//b", "a/b", false);
    expect_path("/./a/./b/.", "a/b", false);
    expect_path("/a/./", "a", true);
    expect_path("/%2e/a", "a", false);
    expect_path("/a/%2E", "a", false);
    expect_path("/./", "", true);
    expect_path("/.//.", "", false);
}

static void sets_dir_for_a_trailing_slash(void **state)
{
    (void)state;
    expect_path("/docs/", "docs", true);
    expect_path("/docs//", "docs", true);
    expect_path("/docs", "docs", false);
    expect_path("/a/b/", "a/b", true);
    expect_path("/a%20b/", "a b", true);
}

static void refuses_dot_dot_segments_raw_or_encoded(void **state)
{
    (void)state;
    expect_refused("..");
    expect_refused("/..");
    expect_refused("/../etc/passwd");
    expect_refused("/a/../b");
    expect_refused("/a/..");
    expect_refused("/a/../");
    expect_refused("/%2e%2e");
    expect_refused("/%2E%2e/");
    expect_refused("/a/%2e%2E/b");
    expect_refused("/.%2e/x");
    expect_refused("/%2e./x");
}

static void refuses_encoded_slash_and_nul(void **state)
{
    (void)state;
    expect_refused("/a%2fb");
    expect_refused("/a%2Fb");
    expect_refused("/%2F");
    expect_refused("/a%00b");
    expect_refused("/%00");
}

static void refuses_bad_escapes(void **state)
{
    (void)state;
    expect_refused("/%");
    expect_refused("/a%");
    expect_refused("/%4");
    expect_refused("/a%4/b");
    expect_refused("/%zz");
    expect_refused("/%g0");
    expect_refused("/%0g");
    expect_refused("/% 1");
    expect_refused("/%%41");
}

static void refuses_paths_longer_than_the_output(void **state)
{
    (void)state;
    /* `size` includes the NUL: 4 bytes hold 3 characters */
    expect_sized("/abc", 4, "abc", false);
    expect_sized("/abcd", 4, NULL, false);
    expect_sized("/a/b", 4, "a/b", false);
    expect_sized("/a/bc", 4, NULL, false);
    expect_sized("/%41%42%43", 4, "ABC", false);
    expect_sized("/%41%42%43%44", 4, NULL, false);
    expect_sized("/./a/./b", 4, "a/b", false);
    expect_sized("/x", 2, "x", false);
    expect_sized("/xy", 2, NULL, false);
    expect_sized("/", 1, "", true);
    char longp[300];
    longp[0] = '/';
    memset(longp + 1, 'a', 298);
    longp[299] = '\0';
    expect_sized(longp, 256, NULL, false);
    expect_sized(longp, 299, longp + 1, false);
    expect_sized(longp, 298, NULL, false);
}

/* The separator before a segment that is then dropped (a trailing '/', ".", "") is not part of the result,
 * so it must not make a path that fits look too long. */
static void fits_a_path_whose_trailing_separator_is_dropped(void **state)
{
    (void)state;
    expect_sized("/abc/", 4, "abc", true);
    expect_sized("/./a/./", 2, "a", true);
    expect_sized("/a/b/.", 4, "a/b", false);
    expect_sized("/./a/./b/./", 4, "a/b", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_plain_paths),
        cmocka_unit_test(percent_decodes_with_either_case_of_hex),
        cmocka_unit_test(drops_empty_and_dot_segments),
        cmocka_unit_test(sets_dir_for_a_trailing_slash),
        cmocka_unit_test(refuses_dot_dot_segments_raw_or_encoded),
        cmocka_unit_test(refuses_encoded_slash_and_nul),
        cmocka_unit_test(refuses_bad_escapes),
        cmocka_unit_test(refuses_paths_longer_than_the_output),
        cmocka_unit_test(fits_a_path_whose_trailing_separator_is_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
