/* test_accesslog.c -- access-log formats (src/http/accesslog.c): the template compiler, JSON and text escaping,
 * lines written through a pipe in each format, captured fields */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <unistd.h>

#include "http/accesslog.h"

static const char *compile_error(const char *spec)
{
    static char why[256];
    why[0] = '\0';
    tt_accesslog_fmt_t *f = tt_accesslog_fmt_compile(spec, why, sizeof(why));
    if (f != NULL) {
        tt_accesslog_fmt_free(&f);
        return NULL;
    }
    return why;
}

static void compiles_known_formats_and_variables(void **state)
{
    (void)state;
    assert_null(compile_error("main"));
    assert_null(compile_error("combined"));
    assert_null(compile_error("json"));
    assert_null(compile_error("$remote_addr ${status}x $http_x_forwarded_for $$ $upstream_response_time"));
    assert_null(compile_error("no variables at all"));
}

static void refuses_unknown_and_malformed_variables(void **state)
{
    (void)state;
    assert_string_equal(compile_error("$status $foo"), "unknown variable $foo");
    assert_string_equal(compile_error("${nope}"), "unknown variable $nope");
    assert_non_null(strstr(compile_error("x $"), "a $ without a variable name"));
    assert_non_null(strstr(compile_error("${status"), "a ${ without a name"));
    assert_non_null(strstr(compile_error("${}"), "a ${ without a name"));
    assert_non_null(strstr(compile_error(""), "expected main, combined, json"));
    assert_string_equal(compile_error("$http_"), "unknown variable $http_");
    char many[2048] = "";
    for (int i = 0; i < 17; i++) snprintf(many + strlen(many), sizeof(many) - strlen(many), "$http_f%d ", i);
    assert_non_null(strstr(compile_error(many), "more than 16 distinct request fields"));
}

static size_t json(char *o, const char *s, size_t n)
{
    size_t k = tt_accesslog_json_escape(o, tt_str(s, n));
    o[k] = '\0';
    return k;
}

static void json_escapes_quotes_controls_and_bad_utf8(void **state)
{
    (void)state;
    char o[256];
    json(o, TT_LIT("a\"b\\c"));
    assert_string_equal(o, "a\\\"b\\\\c");
    json(o, TT_LIT("\t\n\x01\x7f"));
    assert_string_equal(o, "\\u0009\\u000A\\u0001\\u007F");
    json(o, TT_LIT("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80")); /* valid: e-acute, euro, an emoji */
    assert_string_equal(o, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    json(o, TT_LIT("\xff\xc3")); /* not UTF-8; a cut sequence */
    assert_string_equal(o, "\\u00FF\\u00C3");
    json(o, TT_LIT("\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80\x80")); /* overlong, surrogate, > U+10FFFF */
    assert_string_equal(o, "\\u00C0\\u00AF\\u00E0\\u0080\\u00AF\\u00ED\\u00A0\\u0080\\u00F4\\u0090\\u0080\\u0080");
    json(o, TT_LIT("\xe2\x82x")); /* a sequence cut by an ASCII byte */
    assert_string_equal(o, "\\u00E2\\u0082x");
}

static void text_escapes_as_nginx(void **state)
{
    (void)state;
    char o[64];
    size_t n = tt_accesslog_text_escape(o, tt_str(TT_LIT("a\"\\\x01\xff b")));
    o[n] = '\0';
    assert_string_equal(o, "a\\x22\\x5C\\x01\\xFF b");
}

/* Writes one line for `rec` in format `spec` and returns it (without its newline). */
static char *line_for(const char *spec, tt_accesslog_rec_t *rec)
{
    static char out[8192];
    int p[2];
    assert_int_equal(pipe(p), 0);
    tt_loop_t *loop = tt_loop_new();
    tt_accesslog_t log;
    tt_accesslog_init(&log, loop, p[1]);
    char why[128];
    tt_accesslog_fmt_t *f = tt_accesslog_fmt_compile(spec, why, sizeof(why));
    assert_non_null(f);
    tt_accesslog_set_format(&log, f);
    tt_accesslog_add(&log, rec);
    tt_accesslog_dispose(&log);
    ssize_t n = read(p[0], out, sizeof(out) - 1);
    assert_true(n > 0);
    out[n - 1] = '\0';
    close(p[0]);
    close(p[1]);
    tt_accesslog_fmt_free(&f);
    tt_loop_free(&loop);
    return out;
}

static tt_h1_request_t head;
static tt_addr_t peer;

static tt_accesslog_rec_t sample(void)
{
    const char *why;
    assert_int_equal(tt_addr_parse("192.0.2.7:4242", false, &peer, &why), 0);
    memset(&head, 0, sizeof(head));
    head.authority = TT_STR("Example.org:8080");
    head.fields[0] = (tt_h1_field_t){TT_STR("User-Agent"), TT_STR("ua \"1\"")};
    head.fields[1] = (tt_h1_field_t){TT_STR("X-Thing"), TT_STR("t")};
    head.nfields = 2;
    return (tt_accesslog_rec_t){
        .peer = &peer,
        .method = TT_STR("GET"),
        .target = TT_STR("/p?q"),
        .minor_version = 1,
        .status = 200,
        .bytes = 1150,
        .head_bytes = 150,
        .duration_ms = 1234,
        .conn_id = 7,
        .req_no = 3,
        .decision = "keep",
        .head = &head,
        .request_id = TT_STR("rid"),
    };
}

static void template_line_reads_every_kind_of_value(void **state)
{
    (void)state;
    tt_accesslog_rec_t r = sample();
    assert_string_equal(line_for("$remote_addr:$remote_port \"$request\" $status $body_bytes_sent/$bytes_sent "
                                 "$request_time $connection/$connection_requests $keepalive $close_reason "
                                 "$protocol $stream_id $host $http_x_thing $http_referer $request_id $upstream_name",
                                 &r),
                        "192.0.2.7:4242 \"GET /p?q HTTP/1.1\" 200 1000/1150 1.234 7/3 keep - h1 - Example.org t - rid "
                        "-");
    tt_accesslog_up_t up = {.name = "api",
                            .addr = &peer,
                            .status = 503,
                            .connect_us = 1500,
                            .header_us = 2000001,
                            .response_us = -1,
                            .cause = "connect_refused"};
    r.up = &up;
    r.decision = "max_requests";
    assert_string_equal(line_for("$upstream_name $upstream_addr $upstream_status $upstream_connect_time "
                                 "$upstream_header_time $upstream_response_time $upstream_reused $upstream_cause "
                                 "$keepalive $close_reason",
                                 &r),
                        "api 192.0.2.7:4242 503 0.001500 2.000001 - 0 connect_refused close max_requests");
}

static void combined_line_is_nginx_combined(void **state)
{
    (void)state;
    tt_accesslog_rec_t r = sample();
    char *l = line_for("combined", &r);
    const char *rest = strchr(l, ']');
    assert_non_null(rest);
    assert_int_equal(strncmp(l, "192.0.2.7 - - [", 15), 0);
    assert_string_equal(rest, "] \"GET /p?q HTTP/1.1\" 200 1000 \"-\" \"ua \\x221\\x22\"");
}

static void json_line_has_numbers_strings_and_nulls(void **state)
{
    (void)state;
    tt_accesslog_rec_t r = sample();
    r.proto = "HTTP/2.0";
    r.stream_id = 5;
    char *l = line_for("json", &r);
    assert_non_null(strstr(l, "\"remote_port\":4242,"));
    assert_non_null(strstr(l, "\"request\":\"GET /p?q HTTP/2.0\","));
    assert_non_null(strstr(l, "\"request_time\":1.234,"));
    assert_non_null(strstr(l, "\"stream_id\":5,"));
    assert_non_null(strstr(l, "\"protocol\":\"h2\","));
    assert_non_null(strstr(l, "\"remote_user\":null,"));
    assert_non_null(strstr(l, "\"upstream_connect_time\":null,"));
    assert_non_null(strstr(l, "\"http_user_agent\":\"ua \\\"1\\\"\","));
    assert_non_null(strstr(l, "\"http_referer\":null}"));
    assert_int_equal(l[0], '{');
}

static void captured_fields_outlive_the_head(void **state)
{
    (void)state;
    tt_loop_t *loop = tt_loop_new();
    tt_accesslog_t log;
    tt_accesslog_init(&log, loop, 1);
    char why[128];
    tt_accesslog_fmt_t *f = tt_accesslog_fmt_compile("$http_user_agent $host $http_x_absent", why, sizeof(why));
    tt_accesslog_set_format(&log, f);
    tt_accesslog_rec_t r = sample();
    size_t n = tt_accesslog_capture_size(&log, &head);
    assert_int_equal(n, 3 * sizeof(tt_str_t) + strlen("ua \"1\"") + strlen("Example.org:8080"));
    tt_str_t *store = malloc(n);
    const tt_str_t *caps = tt_accesslog_capture(&log, &head, store);
    memset(&head, 0, sizeof(head)); /* the head is gone */
    assert_ptr_equal(caps, store);
    assert_int_equal(caps[0].n, 6);
    assert_memory_equal(caps[0].p, "ua \"1\"", 6);
    assert_null(caps[2].p);
    tt_accesslog_dispose(&log);
    r.head = NULL;
    r.caps = caps;
    assert_string_equal(line_for("$http_user_agent $host $http_x_absent", &r), "ua \\x221\\x22 Example.org -");
    free(store);
    tt_accesslog_fmt_free(&f);
    tt_loop_free(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compiles_known_formats_and_variables),
        cmocka_unit_test(refuses_unknown_and_malformed_variables),
        cmocka_unit_test(json_escapes_quotes_controls_and_bad_utf8),
        cmocka_unit_test(text_escapes_as_nginx),
        cmocka_unit_test(template_line_reads_every_kind_of_value),
        cmocka_unit_test(combined_line_is_nginx_combined),
        cmocka_unit_test(json_line_has_numbers_strings_and_nulls),
        cmocka_unit_test(captured_fields_outlive_the_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
