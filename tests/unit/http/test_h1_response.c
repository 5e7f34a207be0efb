/* test_h1_response.c -- the HTTP/1.x response head parser (src/http/h1_parse.c): status-line, field lines,
 * framing (RFC 9112 6.3), connection tokens and Keep-Alive, the same outcome for a head split at any byte,
 * tt_h1_response_has_content() and tt_h1_keepalive_hint() */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http/h1_parse.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* Compares a view with a C string, reporting the failing line of the caller. */
#define assert_view(v, lit)                                \
    do {                                                   \
        tt_str_t v_ = (v);                                 \
        const char *l_ = (lit);                            \
        assert_int_equal(v_.n, strlen(l_));                \
        if (v_.n > 0) assert_memory_equal(v_.p, l_, v_.n); \
    } while (0)

static tt_h1_response_t *new_res(void)
{
    tt_h1_response_t *r = test_malloc(sizeof(*r));
    assert_non_null(r);
    memset(r, 0xa5, sizeof(*r)); /* garbage: the parser must reset everything it reports */
    return r;
}

static int parse_lim(const char *buf, size_t len, const tt_h1_limits_t *lim, tt_h1_response_t *res)
{
    return tt_h1_parse_response(buf, len, 0, lim, res);
}

static int parse(const char *buf, size_t len, tt_h1_response_t *res)
{
    return parse_lim(buf, len, &tt_h1_default_limits, res);
}

/* Parses `buf` whole and expects the head to be all of it; returns the parsed response (test_free it). */
static tt_h1_response_t *expect_ok(const char *buf, size_t len)
{
    tt_h1_response_t *r = new_res();
    int rc = parse(buf, len, r);
    if (rc != (int)len)
        print_error("input %.*s: rc %d error %s, expected %zu\n", (int)TT_MIN(len, 200), buf, rc,
                    tt_h1_error_name(r->error), len);
    assert_int_equal(rc, len);
    assert_int_equal(r->error, TT_H1_OK);
    return r;
}

/* Parses `buf` whole, expects TT_BAD with `e`, and checks the status code of `e`. */
static void expect_bad_lim(const char *buf, size_t len, const tt_h1_limits_t *lim, tt_h1_error_t e)
{
    tt_h1_response_t *r = new_res();
    int rc = parse_lim(buf, len, lim, r);
    if (rc != TT_BAD || r->error != e)
        print_error("input %.*s: rc %d error %s, expected TT_BAD %s\n", (int)TT_MIN(len, 200), buf, rc,
                    tt_h1_error_name(r->error), tt_h1_error_name(e));
    assert_int_equal(rc, TT_BAD);
    assert_int_equal(r->error, e);
    test_free(r);
}

static void expect_bad(const char *buf, size_t len, tt_h1_error_t e)
{
    expect_bad_lim(buf, len, &tt_h1_default_limits, e);
}

/* Refused, whatever the error (for malformations where the choice of error is not part of the contract). */
static void expect_refused(const char *buf, size_t len)
{
    tt_h1_response_t *r = new_res();
    int rc = parse(buf, len, r);
    if (rc != TT_BAD) print_error("input %.*s: rc %d, expected TT_BAD\n", (int)TT_MIN(len, 200), buf, rc);
    assert_int_equal(rc, TT_BAD);
    assert_int_not_equal(r->error, TT_H1_OK);
    test_free(r);
}

/* Both parses produced the same result: return value and, for a head, every view and flag; for a refusal,
 * the error. Views are compared by position in the buffer (both parses read the same bytes). */
static void assert_same_result(int rc_a, const tt_h1_response_t *a, int rc_b, const tt_h1_response_t *b)
{
    assert_int_equal(rc_a, rc_b);
    if (rc_a == TT_BAD) {
        assert_int_equal(a->error, b->error);
        return;
    }
    if (rc_a < 0) return;
    assert_int_equal(a->minor_version, b->minor_version);
    assert_int_equal(a->status, b->status);
    assert_ptr_equal(a->reason.p, b->reason.p);
    assert_int_equal(a->reason.n, b->reason.n);
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->chunked, b->chunked);
    assert_int_equal(a->close_delimited, b->close_delimited);
    assert_int_equal(a->conn_tokens, b->conn_tokens);
    assert_int_equal(a->keep_alive, b->keep_alive);
    assert_int_equal(a->error, b->error);
    assert_int_equal(a->nfields, b->nfields);
    for (size_t i = 0; i < a->nfields; i++) {
        assert_ptr_equal(a->fields[i].name.p, b->fields[i].name.p);
        assert_int_equal(a->fields[i].name.n, b->fields[i].name.n);
        assert_ptr_equal(a->fields[i].value.p, b->fields[i].value.p);
        assert_int_equal(a->fields[i].value.n, b->fields[i].value.n);
    }
}

/*
 * For every split point k (every `stride`-th one, and always the first and last 300): the prefix
 * buf[0..k) parses to TT_INCOMPLETE or to the whole-buffer result, and after TT_INCOMPLETE the whole buffer
 * parsed with last_len = k gives the whole-buffer result. Then feeds one byte at a time, passing the
 * previous length as last_len.
 */
static void check_splits_lim(const char *buf, size_t len, const tt_h1_limits_t *lim, size_t stride)
{
    tt_h1_response_t *whole = new_res(), *part = new_res(), *resumed = new_res();
    int rw = tt_h1_parse_response(buf, len, 0, lim, whole);
    assert_int_not_equal(rw, TT_INCOMPLETE); /* samples are complete heads or refusals */
    for (size_t k = 0; k <= len; k++) {
        if (k >= 300 && len - k >= 300 && k % stride != 0) continue;
        int rp = tt_h1_parse_response(buf, k, 0, lim, part);
        if (rp == TT_INCOMPLETE) {
            int rr = tt_h1_parse_response(buf, len, k, lim, resumed);
            if (rr != rw || (rw == TT_BAD && resumed->error != whole->error))
                print_error("split at %zu of %zu: resumed %d (%s), whole %d (%s)\n", k, len, rr,
                            tt_h1_error_name(resumed->error), rw, tt_h1_error_name(whole->error));
            assert_same_result(rw, whole, rr, resumed);
        } else {
            if (rp != rw || (rw == TT_BAD && part->error != whole->error))
                print_error("prefix of %zu of %zu: %d (%s), whole %d (%s)\n", k, len, rp, tt_h1_error_name(part->error),
                            rw, tt_h1_error_name(whole->error));
            assert_same_result(rw, whole, rp, part);
        }
    }
    /* one byte at a time, as a connection reading one byte per read(2) would */
    size_t last = 0;
    int rc = TT_INCOMPLETE;
    for (size_t n = 0; n <= len && rc == TT_INCOMPLETE; n++) {
        rc = tt_h1_parse_response(buf, n, last, lim, part);
        last = n;
    }
    assert_same_result(rw, whole, rc, part);
    test_free(whole);
    test_free(part);
    test_free(resumed);
}

static void check_splits(const char *buf, size_t len)
{
    check_splits_lim(buf, len, &tt_h1_default_limits, 1);
}

/* ---- status-line ---- */

static void parses_a_simple_response(void **state)
{
    (void)state;
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    tt_h1_response_t *r = new_res();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1 - 5); /* the head only, not the content */
    assert_int_equal(r->minor_version, 1);
    assert_int_equal(r->status, 200);
    assert_view(r->reason, "OK");
    assert_int_equal(r->content_length, 5);
    assert_false(r->chunked);
    assert_false(r->close_delimited);
    assert_int_equal(r->conn_tokens, 0);
    assert_int_equal(r->keep_alive, -1);
    assert_int_equal(r->error, TT_H1_OK);
    assert_int_equal(r->nfields, 2);
    assert_view(r->fields[0].name, "Content-Length");
    assert_view(r->fields[0].value, "5");
    assert_view(r->fields[1].name, "Content-Type");
    assert_view(r->fields[1].value, "text/plain");
    /* every view points into the buffer */
    assert_ptr_equal(r->reason.p, in + 13);
    assert_ptr_equal(r->fields[0].name.p, in + 17);
    test_free(r);
}

static void parses_http10_responses(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    assert_int_equal(r->minor_version, 0);
    assert_int_equal(r->status, 404);
    assert_view(r->reason, "Not Found");
    assert_int_equal(r->content_length, 0);
    assert_false(r->close_delimited);
    test_free(r);
}

static void reads_later_http1_minor_versions_as_1(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_int_equal(r->minor_version, 1);
    test_free(r);
    r = expect_ok(S("HTTP/1.9 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_int_equal(r->minor_version, 1);
    test_free(r);
}

static void accepts_an_empty_or_missing_reason(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 204 \r\n\r\n"));
    assert_int_equal(r->status, 204);
    assert_view(r->reason, "");
    test_free(r);
    /* no SP before the empty reason: tolerated */
    r = expect_ok(S("HTTP/1.1 204\r\n\r\n"));
    assert_int_equal(r->status, 204);
    assert_view(r->reason, "");
    assert_int_equal(r->nfields, 0);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n"));
    assert_int_equal(r->status, 200);
    assert_int_equal(r->content_length, 2);
    test_free(r);
}

static void keeps_spaces_tabs_and_obs_text_in_the_reason(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 200 Very  Fine\tIndeed \xe2\x9c\x93\r\n\r\n"));
    assert_view(r->reason, "Very  Fine\tIndeed \xe2\x9c\x93");
    test_free(r);
    r = expect_ok(S("HTTP/1.1 500 Internal: Server (Error) / 1;2=3\r\n\r\n"));
    assert_view(r->reason, "Internal: Server (Error) / 1;2=3");
    test_free(r);
}

static void accepts_every_status_from_100_to_599(void **state)
{
    (void)state;
    tt_h1_response_t *r = new_res();
    char buf[64];
    for (int s = 100; s <= 599; s++) {
        int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %d X\r\n\r\n", s);
        if (parse(buf, (size_t)n, r) != n) fail_msg("status %d refused (%s)", s, tt_h1_error_name(r->error));
        assert_int_equal(r->status, s);
    }
    test_free(r);
}

static void refuses_statuses_outside_100_to_599(void **state)
{
    (void)state;
    char buf[64];
    for (int s = 0; s <= 999; s++) {
        if (s >= 100 && s <= 599) continue;
        int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %03d X\r\n\r\n", s);
        expect_bad(buf, (size_t)n, TT_H1_E_REQUEST_LINE);
    }
}

static void refuses_malformed_status_codes(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 2000 OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 20 OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 2x0 OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 abc OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 +20 OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1  200 OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 200\tOK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 200OK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    /* too short to hold a status code: refused (which error is not specified) */
    expect_refused(S("HTTP/1.1 20\r\n\r\n"));
    expect_refused(S("HTTP/1.1 \r\n\r\n"));
    expect_refused(S("HTTP/1.1\r\n\r\n"));
}

static void refuses_control_bytes_in_the_reason(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 O\x01K\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 200 O\0K\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 200 O\x7fK\r\n\r\n"), TT_H1_E_REQUEST_LINE);
    expect_bad(S("HTTP/1.1 200 O\rK\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_bad(S("HTTP/1.1 200 OK\r\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_bad(S("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"), TT_H1_E_BARE_LF);
}

static void refuses_malformed_versions(void **state)
{
    (void)state;
    expect_bad(S("http/1.1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("Http/1.1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTPS/1.1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/1.x 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/x.1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/1,1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/11 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/1.10 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTP/1.1\t200 OK\r\n\r\n"), TT_H1_E_VERSION);
    expect_bad(S(" HTTP/1.1 200 OK\r\n\r\n"), TT_H1_E_VERSION);
    /* "HTTP/2" lacks the ".DIGIT": malformed, as in a request-line (RFC 9112 2.3) */
    expect_bad(S("HTTP/2 200 OK\r\n\r\n"), TT_H1_E_VERSION);
}

static void refuses_versions_other_than_http1(void **state)
{
    (void)state;
    expect_bad(S("HTTP/2.0 200 OK\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED);
    expect_bad(S("HTTP/3.0 200 OK\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED);
    expect_bad(S("HTTP/0.9 200 OK\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED);
    expect_bad(S("HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED);
    assert_int_equal(tt_h1_error_status(TT_H1_E_VERSION_UNSUPPORTED), 505);
}

static void refuses_garbage_before_the_head_is_complete(void **state)
{
    (void)state;
    /* what cannot become "HTTP/" is refused at once, without waiting for the end of the head */
    expect_bad(S("\x16\x03\x01\x02\x00"), TT_H1_E_VERSION);
    expect_bad(S("<"), TT_H1_E_VERSION);
    expect_bad(S("<html>"), TT_H1_E_VERSION);
    expect_bad(S("h"), TT_H1_E_VERSION);
    expect_bad(S("http/1.1 200 OK\r\n"), TT_H1_E_VERSION);
    expect_bad(S("HTTX"), TT_H1_E_VERSION);
    expect_bad(S("SSH-2.0-OpenSSH_9.2\r\n"), TT_H1_E_VERSION);
    expect_bad(S("\0\0\0\0"), TT_H1_E_VERSION);
}

static void waits_for_the_rest_of_an_incomplete_head(void **state)
{
    (void)state;
    tt_h1_response_t *r = new_res();
    assert_int_equal(parse(S(""), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("H"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP/"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP/1.1 200 OK"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP/1.1 200 OK\r\n"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r"), r), TT_INCOMPLETE);
    test_free(r);
}

static void returns_only_the_first_of_pipelined_responses(void **state)
{
    (void)state;
    static const char in[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    tt_h1_response_t *r = new_res();
    assert_int_equal(parse(S(in), r), 25);
    assert_int_equal(r->status, 100);
    assert_view(r->reason, "Continue");
    assert_int_equal(parse(in + 25, sizeof(in) - 1 - 25, r), sizeof(in) - 1 - 25);
    assert_int_equal(r->status, 200);
    test_free(r);
}

/* ---- field lines ---- */

static void trims_optional_whitespace_around_field_values(void **state)
{
    (void)state;
    tt_h1_response_t *r =
        expect_ok(S("HTTP/1.1 200 OK\r\nA:b\r\nB: \t c d \t \r\nC:\r\nD:   \r\nContent-Length:0\r\n\r\n"));
    assert_int_equal(r->nfields, 5);
    assert_view(r->fields[0].value, "b");
    assert_view(r->fields[1].value, "c d");
    assert_view(r->fields[2].value, "");
    assert_view(r->fields[3].value, "");
    assert_int_equal(r->content_length, 0);
    test_free(r);
}

static void refuses_obs_fold(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"), TT_H1_E_OBS_FOLD);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n"), TT_H1_E_OBS_FOLD);
    /* whitespace before the first field line (RFC 9112 2.2) */
    expect_bad(S("HTTP/1.1 200 OK\r\n X: a\r\n\r\n"), TT_H1_E_OBS_FOLD);
}

static void refuses_bare_cr_and_bare_lf_in_fields(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\r\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_bad(S("HTTP/1.1 200 OK\r\nX\r: a\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n"), TT_H1_E_BARE_LF);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\r\n\nY: b\r\n\r\n"), TT_H1_E_BARE_LF);
}

/* An upstream that ends its lines with LF alone never sends "\r\n\r\n": its head must be refused as soon
 * as the bare LF is seen (as the request parser does), not awaited until the response timeout. */
static void refuses_lf_only_line_endings_without_waiting(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), TT_H1_E_BARE_LF);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 0\n\n"), TT_H1_E_BARE_LF);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\n\r\n"), TT_H1_E_BARE_LF);
}

static void refuses_whitespace_before_the_colon(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"), TT_H1_E_FIELD_NAME_WS);
    expect_bad(S("HTTP/1.1 200 OK\r\nX\t: a\r\n\r\n"), TT_H1_E_FIELD_NAME_WS);
}

static void refuses_bad_field_names(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\n: a\r\n\r\n"), TT_H1_E_FIELD_NAME);
    expect_bad(S("HTTP/1.1 200 OK\r\nX(: a\r\n\r\n"), TT_H1_E_FIELD_NAME);
    expect_bad(S("HTTP/1.1 200 OK\r\nX\x80: a\r\n\r\n"), TT_H1_E_FIELD_NAME);
    expect_bad(S("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"), TT_H1_E_FIELD_NAME);
}

static void refuses_control_bytes_in_field_values(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n"), TT_H1_E_FIELD_VALUE);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"), TT_H1_E_FIELD_VALUE);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n"), TT_H1_E_FIELD_VALUE);
    expect_bad(S("HTTP/1.1 200 OK\r\nX: \x1b[0m\r\n\r\n"), TT_H1_E_FIELD_VALUE);
    /* obs-text is allowed */
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\n\r\n"));
    assert_view(r->fields[0].value, "caf\xc3\xa9");
    test_free(r);
}

/* A response head with `n` fields "Fk: v". */
static char *many_fields(size_t n, size_t *len)
{
    size_t cap = 32 + n * 16;
    char *b = test_malloc(cap);
    assert_non_null(b);
    size_t o = (size_t)snprintf(b, cap, "HTTP/1.1 200 OK\r\n");
    for (size_t i = 0; i < n; i++) o += (size_t)snprintf(b + o, cap - o, "F%zu: v\r\n", i);
    o += (size_t)snprintf(b + o, cap - o, "\r\n");
    *len = o;
    return b;
}

static void refuses_more_fields_than_the_limit(void **state)
{
    (void)state;
    size_t len;
    char *b = many_fields(TT_H1_MAX_FIELDS, &len);
    tt_h1_response_t *r = expect_ok(b, len);
    assert_int_equal(r->nfields, TT_H1_MAX_FIELDS);
    test_free(r);
    test_free(b);
    b = many_fields(TT_H1_MAX_FIELDS + 1, &len);
    expect_bad(b, len, TT_H1_E_TOO_MANY_FIELDS);
    assert_int_equal(tt_h1_error_status(TT_H1_E_TOO_MANY_FIELDS), 431);
    test_free(b);
    /* a configured count */
    tt_h1_limits_t lim = tt_h1_default_limits;
    lim.max_fields = 3;
    b = many_fields(3, &len);
    r = new_res();
    assert_int_equal(parse_lim(b, len, &lim, r), len);
    test_free(r);
    test_free(b);
    b = many_fields(4, &len);
    expect_bad_lim(b, len, &lim, TT_H1_E_TOO_MANY_FIELDS);
    test_free(b);
}

/* "HTTP/1.1 200 OK", then field lines totalling exactly `fbytes` bytes (CRLFs included), then the end. */
static char *sized_fields(size_t reason_len, size_t fbytes, size_t *len)
{
    char *b = test_malloc(reason_len + fbytes + 64);
    assert_non_null(b);
    memcpy(b, "HTTP/1.1 200 ", 13);
    size_t o = 13;
    memset(b + o, 'r', reason_len);
    o += reason_len;
    memcpy(b + o, "\r\n", 2);
    o += 2;
    size_t left = fbytes;
    while (left > 0) {
        size_t line = left > 1000 + 10 ? 1000 : left; /* never leave a remainder too short for "X:\r\n" */
        TT_BUG_ON(line < 4);
        memcpy(b + o, "X:", 2);
        memset(b + o + 2, 'v', line - 4);
        memcpy(b + o + line - 2, "\r\n", 2);
        o += line;
        left -= line;
    }
    memcpy(b + o, "\r\n", 2);
    *len = o + 2;
    return b;
}

static void refuses_field_sections_larger_than_the_limit(void **state)
{
    (void)state;
    size_t len;
    char *b = sized_fields(2, 32768, &len);
    tt_h1_response_t *r = expect_ok(b, len);
    test_free(r);
    test_free(b);
    b = sized_fields(2, 32769, &len);
    expect_bad(b, len, TT_H1_E_FIELDS_TOO_LARGE);
    assert_int_equal(tt_h1_error_status(TT_H1_E_FIELDS_TOO_LARGE), 431);
    test_free(b);
    /* without an end in sight, a prefix far larger than the limit is refused too */
    b = sized_fields(2, 64 * 1024, &len);
    r = new_res();
    assert_int_equal(parse(b, len - 2, r), TT_BAD);
    assert_int_equal(r->error, TT_H1_E_FIELDS_TOO_LARGE);
    test_free(r);
    test_free(b);
    /* a configured size */
    tt_h1_limits_t lim = tt_h1_default_limits;
    lim.max_field_bytes = 1024;
    b = sized_fields(2, 1024, &len);
    r = new_res();
    assert_int_equal(parse_lim(b, len, &lim, r), len);
    test_free(r);
    test_free(b);
    b = sized_fields(2, 1025, &len);
    expect_bad_lim(b, len, &lim, TT_H1_E_FIELDS_TOO_LARGE);
    test_free(b);
}

/* ---- framing (RFC 9112 6.3) ---- */

static void reads_content_length(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_int_equal(r->content_length, 0);
    assert_false(r->chunked);
    assert_false(r->close_delimited);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\ncontent-LENGTH:  123456789012 \r\n\r\n"));
    assert_int_equal(r->content_length, 123456789012LL);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n"));
    assert_int_equal(r->content_length, INT64_MAX);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n"));
    assert_int_equal(r->content_length, 7);
    test_free(r);
}

static void accepts_identical_repeated_content_lengths(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"));
    assert_int_equal(r->content_length, 5);
    assert_false(r->close_delimited);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 5, 5 ,5\r\n\r\n"));
    assert_int_equal(r->content_length, 5);
    test_free(r);
}

static void refuses_differing_or_malformed_content_lengths(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
    /* checked before the combination with Transfer-Encoding */
    expect_bad(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"), TT_H1_E_CONTENT_LENGTH);
}

static void reads_chunked_when_it_is_the_final_coding(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool chunked;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedx\r\n\r\n", false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", false},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        tt_h1_response_t *r = expect_ok(cases[i].in, strlen(cases[i].in));
        if (r->chunked != cases[i].chunked) fail_msg("%s: chunked %d", cases[i].in, r->chunked);
        /* a Transfer-Encoding that does not end in chunked leaves only the connection's end to delimit */
        assert_int_equal(r->close_delimited, !cases[i].chunked);
        assert_int_equal(r->content_length, -1);
        test_free(r);
    }
}

static void delimits_by_close_without_length_or_chunked(void **state)
{
    (void)state;
    tt_h1_response_t *r = expect_ok(S("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"));
    assert_true(r->close_delimited);
    assert_false(r->chunked);
    assert_int_equal(r->content_length, -1);
    test_free(r);
    r = expect_ok(S("HTTP/1.0 200 OK\r\n\r\n"));
    assert_true(r->close_delimited);
    test_free(r);
    /* the parser does not know the status rules: has_content decides for 204 and 304 */
    r = expect_ok(S("HTTP/1.1 204 No Content\r\n\r\n"));
    assert_true(r->close_delimited);
    assert_false(tt_h1_response_has_content(r->status, false));
    test_free(r);
}

static void refuses_content_length_with_transfer_encoding(void **state)
{
    (void)state;
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), TT_H1_E_CL_AND_TE);
    expect_bad(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), TT_H1_E_CL_AND_TE);
    expect_bad(S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"), TT_H1_E_CL_AND_TE);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
               TT_H1_E_CL_AND_TE);
    expect_bad(S("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"), TT_H1_E_CL_AND_TE);
    expect_bad(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding:\r\n\r\n"), TT_H1_E_CL_AND_TE);
}

static void collects_connection_tokens(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        unsigned tokens;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", TT_H1_CONN_CLOSE},
        {"HTTP/1.1 200 OK\r\nconnection: CLOSE\r\n\r\n", TT_H1_CONN_CLOSE},
        {"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", TT_H1_CONN_KEEP_ALIVE},
        {"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\n\r\n", TT_H1_CONN_UPGRADE},
        {"HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\n\r\n", TT_H1_CONN_KEEP_ALIVE | TT_H1_CONN_UPGRADE},
        {"HTTP/1.1 200 OK\r\nConnection: foo\r\nConnection: ,close,,\r\n\r\n", TT_H1_CONN_CLOSE},
        {"HTTP/1.1 200 OK\r\nConnection: closed, keep-alive2, x-close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nX-Connection: close\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\n\r\n", 0},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        tt_h1_response_t *r = expect_ok(cases[i].in, strlen(cases[i].in));
        if (r->conn_tokens != cases[i].tokens) fail_msg("%s: tokens %#x", cases[i].in, r->conn_tokens);
        test_free(r);
    }
}

static void indexes_the_keep_alive_field(void **state)
{
    (void)state;
    tt_h1_response_t *r =
        expect_ok(S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5, max=100\r\nServer: x\r\n\r\n"));
    assert_int_equal(r->keep_alive, 1);
    assert_view(r->fields[r->keep_alive].value, "timeout=5, max=100");
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\nkeep-alive: max=3\r\n\r\n"));
    assert_int_equal(r->keep_alive, 0);
    test_free(r);
    r = expect_ok(S("HTTP/1.1 200 OK\r\nKeep-Alive-X: max=3\r\nX-Keep-Alive: max=3\r\n\r\n"));
    assert_int_equal(r->keep_alive, -1);
    test_free(r);
    /* with two, it names one of them */
    r = expect_ok(S("HTTP/1.1 200 OK\r\nKeep-Alive: max=3\r\nA: b\r\nKeep-Alive: timeout=2\r\n\r\n"));
    assert_true(r->keep_alive == 0 || r->keep_alive == 2);
    test_free(r);
}

/* ---- split at every byte ---- */

typedef struct {
    const char *s;
    size_t n;
} sample_t;
#define SAMPLE(lit)            \
    {                          \
        (lit), sizeof(lit) - 1 \
    }

static const sample_t valid_samples[] = {
    SAMPLE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"),
    SAMPLE("HTTP/1.0 404 Not Found\r\n\r\n"),
    SAMPLE("HTTP/1.1 204\r\n\r\n"),
    SAMPLE("HTTP/1.1 304 \r\nETag: \"x\"\r\n\r\n"),
    SAMPLE("HTTP/1.1 100 Continue\r\n\r\n"),
    SAMPLE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive\r\n"
           "Keep-Alive: timeout=5, max=100\r\n\r\n"),
    SAMPLE("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"),
    SAMPLE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\nA:\r\nB:  c  \r\n\r\n"),
    SAMPLE("HTTP/1.1 503 Service \xc3\x9cnavailable\r\nRetry-After: 1\r\nX: caf\xc3\xa9\r\n\r\n"),
    SAMPLE("HTTP/1.1 200 OK\r\nX: \r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
};

static const struct {
    sample_t in;
    tt_h1_error_t e;
} bad_samples[] = {
    {SAMPLE("HTTP/2.0 200 OK\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED},
    {SAMPLE("http/1.1 200 OK\r\n\r\n"), TT_H1_E_VERSION},
    {SAMPLE("HTTP/1.x 200 OK\r\n\r\n"), TT_H1_E_VERSION},
    {SAMPLE("HTTP/1.1 600 Nope\r\n\r\n"), TT_H1_E_REQUEST_LINE},
    {SAMPLE("HTTP/1.1 200 O\x01K\r\n\r\n"), TT_H1_E_REQUEST_LINE},
    {SAMPLE("HTTP/1.1 200 O\rK\r\n\r\n"), TT_H1_E_BARE_CR},
    {SAMPLE("HTTP/1.1 200 OK\nX: a\r\n\r\n"), TT_H1_E_BARE_LF},
    {SAMPLE("HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n"), TT_H1_E_BARE_LF},
    {SAMPLE("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"), TT_H1_E_BARE_CR},
    {SAMPLE("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), TT_H1_E_OBS_FOLD},
    {SAMPLE("HTTP/1.1 200 OK\r\nX : a\r\n\r\n"), TT_H1_E_FIELD_NAME_WS},
    {SAMPLE("HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n"), TT_H1_E_FIELD_VALUE},
    {SAMPLE("HTTP/1.1 200 OK\r\n: a\r\n\r\n"), TT_H1_E_FIELD_NAME},
    {SAMPLE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), TT_H1_E_CONTENT_LENGTH},
    {SAMPLE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), TT_H1_E_CL_AND_TE},
    {SAMPLE("<html>\r\n\r\n"), TT_H1_E_VERSION},
};

static void parses_valid_responses_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < TT_ARRAY_SIZE(valid_samples); i++) {
        tt_h1_response_t *r = new_res();
        assert_true(parse(valid_samples[i].s, valid_samples[i].n, r) > 0);
        test_free(r);
        check_splits(valid_samples[i].s, valid_samples[i].n);
    }
}

static void refuses_bad_responses_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad_samples); i++) {
        expect_bad(bad_samples[i].in.s, bad_samples[i].in.n, bad_samples[i].e);
        check_splits(bad_samples[i].in.s, bad_samples[i].in.n);
    }
}

static void refuses_large_field_sections_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    size_t len;
    char *b = sized_fields(2, 32768, &len);
    check_splits_lim(b, len, &tt_h1_default_limits, 97);
    test_free(b);
    b = sized_fields(2, 32769, &len);
    check_splits_lim(b, len, &tt_h1_default_limits, 97);
    test_free(b);
}

/* A head whose status-line is long (a 2000-byte reason) and whose field section is within the limit is
 * accepted whole; it must be accepted the same when it arrives in pieces. */
static void agrees_on_a_long_status_line_split_at_every_byte(void **state)
{
    (void)state;
    size_t len;
    char *b = sized_fields(2000, 32000, &len);
    tt_h1_response_t *r = new_res();
    int rw = parse(b, len, r);
    test_free(r);
    assert_true(rw == (int)len || rw == TT_BAD);
    check_splits_lim(b, len, &tt_h1_default_limits, 101);
    test_free(b);
}

/* A bare LF at the very start is refused whole; its one-byte prefix must be refused for the same reason. */
static void agrees_on_a_leading_bare_lf_split_at_every_byte(void **state)
{
    (void)state;
    check_splits(S("\nHTTP/1.1 200 OK\r\n\r\n"));
    check_splits(S("H\r\n\r\n"));
}

/* ---- tt_h1_response_has_content ---- */

static void knows_which_responses_have_no_content(void **state)
{
    (void)state;
    for (int s = 100; s <= 199; s++) assert_false(tt_h1_response_has_content(s, false));
    assert_false(tt_h1_response_has_content(204, false));
    assert_false(tt_h1_response_has_content(304, false));
    static const int with[] = {200, 201, 202, 203, 205, 206, 299, 300, 301,
                               302, 303, 307, 308, 400, 404, 500, 503, 599};
    for (size_t i = 0; i < TT_ARRAY_SIZE(with); i++) {
        if (!tt_h1_response_has_content(with[i], false)) fail_msg("status %d has content", with[i]);
        /* a response to HEAD never has any */
        assert_false(tt_h1_response_has_content(with[i], true));
    }
    assert_false(tt_h1_response_has_content(204, true));
    assert_false(tt_h1_response_has_content(100, true));
}

/* ---- tt_h1_keepalive_hint ---- */

#define UNSET_T 777777u
#define UNSET_M (-7)

/* Reads `in`; checks the mask and, when set, the values (untouched when unset). */
static void expect_hint(const char *in, int mask, uint64_t timeout_ms, int64_t max)
{
    uint64_t t = UNSET_T;
    int64_t m = UNSET_M;
    int got = tt_h1_keepalive_hint(tt_str(in, strlen(in)), &t, &m);
    if (got != mask) fail_msg("\"%s\": mask %d, expected %d", in, got, mask);
    if (mask & 1) {
        if (t != timeout_ms) fail_msg("\"%s\": timeout %llu ms", in, (unsigned long long)t);
    } else {
        assert_int_equal(t, UNSET_T);
    }
    if (mask & 2) {
        if (m != max) fail_msg("\"%s\": max %lld", in, (long long)m);
    } else {
        assert_int_equal(m, UNSET_M);
    }
}

static void reads_keep_alive_timeout_and_max(void **state)
{
    (void)state;
    expect_hint("timeout=5, max=100", 3, 5000, 100);
    expect_hint("max=100, timeout=5", 3, 5000, 100);
    expect_hint("max=3", 2, 0, 3);
    expect_hint("timeout=5", 1, 5000, 0);
    expect_hint("timeout=0", 1, 0, 0);
    expect_hint("max=0", 2, 0, 0);
    expect_hint("timeout=300,max=1", 3, 300000, 1);
}

static void tolerates_spaces_and_case_in_keep_alive(void **state)
{
    (void)state;
    expect_hint("  timeout = 5 ,  max = 7  ", 3, 5000, 7);
    expect_hint("timeout=5 ,max=7", 3, 5000, 7);
    expect_hint("\ttimeout=5\t,\tmax=7\t", 3, 5000, 7);
    expect_hint("TIMEOUT=5, Max=7", 3, 5000, 7);
    expect_hint("TimeOut=9", 1, 9000, 0);
    expect_hint(",,timeout=5,,", 1, 5000, 0);
}

static void skips_unknown_keep_alive_parameters(void **state)
{
    (void)state;
    expect_hint("foo=bar, timeout=2, baz", 1, 2000, 0);
    expect_hint("foo, max=4, bar=1", 2, 0, 4);
    expect_hint("xtimeout=5, timeoutx=5, max_=1, mmax=2", 0, 0, 0);
    expect_hint("timeout", 0, 0, 0);
    expect_hint("max", 0, 0, 0);
}

static void ignores_keep_alive_garbage(void **state)
{
    (void)state;
    expect_hint("", 0, 0, 0);
    expect_hint(",,,", 0, 0, 0);
    expect_hint("garbage", 0, 0, 0);
    expect_hint("timeout=abc", 0, 0, 0);
    expect_hint("timeout=, max=", 0, 0, 0);
    expect_hint("timeout=-1, max=-1", 0, 0, 0);
    expect_hint("=5, ==, =", 0, 0, 0);
    expect_hint("timeout=abc, max=2", 2, 0, 2);
    /* a bad value does not hide the next parameter */
    expect_hint("max=x, timeout=3", 1, 3000, 0);
}

static void never_wraps_huge_keep_alive_values(void **state)
{
    (void)state;
    uint64_t t = 0;
    int64_t m = 0;
    int got = tt_h1_keepalive_hint(
        tt_str(TT_LIT("timeout=999999999999999999999999999, max=99999999999999999999999999")), &t, &m);
    /* whatever the parser does with them, a huge value must stay huge (never wrap to a short timeout) */
    if (got & 1) assert_true(t >= 24ull * 3600 * 1000);
    if (got & 2) assert_true(m > 1000000);
}

/* The parser only looks at the bytes of the view, never past it. */
static void reads_only_the_view(void **state)
{
    (void)state;
    static const char in[] = "timeout=5, max=100";
    uint64_t t = UNSET_T;
    int64_t m = UNSET_M;
    /* "timeout=5, max=1" */
    assert_int_equal(tt_h1_keepalive_hint(tt_str(in, 16), &t, &m), 3);
    assert_int_equal(t, 5000);
    assert_int_equal(m, 1);
    /* "timeout=" */
    t = UNSET_T;
    assert_int_equal(tt_h1_keepalive_hint(tt_str(in, 8), &t, &m), 0);
    assert_int_equal(t, UNSET_T);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_simple_response),
        cmocka_unit_test(parses_http10_responses),
        cmocka_unit_test(reads_later_http1_minor_versions_as_1),
        cmocka_unit_test(accepts_an_empty_or_missing_reason),
        cmocka_unit_test(keeps_spaces_tabs_and_obs_text_in_the_reason),
        cmocka_unit_test(accepts_every_status_from_100_to_599),
        cmocka_unit_test(refuses_statuses_outside_100_to_599),
        cmocka_unit_test(refuses_malformed_status_codes),
        cmocka_unit_test(refuses_control_bytes_in_the_reason),
        cmocka_unit_test(refuses_malformed_versions),
        cmocka_unit_test(refuses_versions_other_than_http1),
        cmocka_unit_test(refuses_garbage_before_the_head_is_complete),
        cmocka_unit_test(waits_for_the_rest_of_an_incomplete_head),
        cmocka_unit_test(returns_only_the_first_of_pipelined_responses),
        cmocka_unit_test(trims_optional_whitespace_around_field_values),
        cmocka_unit_test(refuses_obs_fold),
        cmocka_unit_test(refuses_bare_cr_and_bare_lf_in_fields),
        cmocka_unit_test(refuses_lf_only_line_endings_without_waiting),
        cmocka_unit_test(refuses_whitespace_before_the_colon),
        cmocka_unit_test(refuses_bad_field_names),
        cmocka_unit_test(refuses_control_bytes_in_field_values),
        cmocka_unit_test(refuses_more_fields_than_the_limit),
        cmocka_unit_test(refuses_field_sections_larger_than_the_limit),
        cmocka_unit_test(reads_content_length),
        cmocka_unit_test(accepts_identical_repeated_content_lengths),
        cmocka_unit_test(refuses_differing_or_malformed_content_lengths),
        cmocka_unit_test(reads_chunked_when_it_is_the_final_coding),
        cmocka_unit_test(delimits_by_close_without_length_or_chunked),
        cmocka_unit_test(refuses_content_length_with_transfer_encoding),
        cmocka_unit_test(collects_connection_tokens),
        cmocka_unit_test(indexes_the_keep_alive_field),
        cmocka_unit_test(parses_valid_responses_split_at_every_byte_like_whole),
        cmocka_unit_test(refuses_bad_responses_split_at_every_byte_like_whole),
        cmocka_unit_test(refuses_large_field_sections_split_at_every_byte_like_whole),
        cmocka_unit_test(agrees_on_a_long_status_line_split_at_every_byte),
        cmocka_unit_test(agrees_on_a_leading_bare_lf_split_at_every_byte),
        cmocka_unit_test(knows_which_responses_have_no_content),
        cmocka_unit_test(reads_keep_alive_timeout_and_max),
        cmocka_unit_test(tolerates_spaces_and_case_in_keep_alive),
        cmocka_unit_test(skips_unknown_keep_alive_parameters),
        cmocka_unit_test(ignores_keep_alive_garbage),
        cmocka_unit_test(never_wraps_huge_keep_alive_values),
        cmocka_unit_test(reads_only_the_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
