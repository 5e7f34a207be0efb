/* test_h1_parse.c -- the HTTP/1.x request parser and chunked decoder (src/http/h1_parse.c): every accepted
 * form, every refusal with its error and status, and the same outcome for a request split at any byte */
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

static tt_h1_request_t *new_req(void)
{
    tt_h1_request_t *r = test_malloc(sizeof(*r));
    assert_non_null(r);
    memset(r, 0xa5, sizeof(*r)); /* garbage: the parser must reset everything it reports */
    return r;
}

static int parse(const char *buf, size_t len, tt_h1_request_t *req)
{
    return tt_h1_parse_request(buf, len, 0, &tt_h1_default_limits, req);
}

/* Parses `buf` whole, expects TT_BAD with `e`, and checks the status code of `e`. */
static void expect_bad_lim(const char *buf, size_t len, const tt_h1_limits_t *lim, tt_h1_error_t e, int status)
{
    tt_h1_request_t *r = new_req();
    int rc = tt_h1_parse_request(buf, len, 0, lim, r);
    if (rc != TT_BAD || r->error != e)
        print_error("input %.*s: rc %d error %s, expected TT_BAD %s\n", (int)TT_MIN(len, 200), buf, rc,
                    tt_h1_error_name(r->error), tt_h1_error_name(e));
    assert_int_equal(rc, TT_BAD);
    assert_int_equal(r->error, e);
    assert_int_equal(tt_h1_error_status(r->error), status);
    test_free(r);
}

static void expect_bad(const char *buf, size_t len, tt_h1_error_t e, int status)
{
    expect_bad_lim(buf, len, &tt_h1_default_limits, e, status);
}

/* Both parses produced the same result: return value and, for a head, every view and flag; for a refusal,
 * the error. Views are compared by position in the buffer (both parses read the same bytes). */
static void assert_same_result(int rc_a, const tt_h1_request_t *a, int rc_b, const tt_h1_request_t *b)
{
    assert_int_equal(rc_a, rc_b);
    if (rc_a == TT_BAD) {
        assert_int_equal(a->error, b->error);
        return;
    }
    if (rc_a < 0) return;
    assert_ptr_equal(a->method.p, b->method.p);
    assert_int_equal(a->method.n, b->method.n);
    assert_int_equal(a->method_id, b->method_id);
    assert_ptr_equal(a->target.p, b->target.p);
    assert_int_equal(a->target.n, b->target.n);
    assert_int_equal(a->minor_version, b->minor_version);
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->chunked, b->chunked);
    assert_int_equal(a->expect_continue, b->expect_continue);
    assert_int_equal(a->conn_tokens, b->conn_tokens);
    assert_int_equal(a->error, b->error);
    assert_int_equal(a->nfields, b->nfields);
    for (size_t i = 0; i < a->nfields; i++) {
        assert_ptr_equal(a->fields[i].name.p, b->fields[i].name.p);
        assert_int_equal(a->fields[i].name.n, b->fields[i].name.n);
        assert_ptr_equal(a->fields[i].value.p, b->fields[i].value.p);
        assert_int_equal(a->fields[i].value.n, b->fields[i].value.n);
        if (a->fields[i].value.n) assert_memory_equal(a->fields[i].value.p, b->fields[i].value.p, a->fields[i].value.n);
    }
    for (int i = 0; i < TT_H1_F__COUNT; i++) assert_int_equal(a->known[i], b->known[i]);
}

/*
 * For every split point k: the prefix buf[0..k) parses to TT_INCOMPLETE or to the whole-buffer result, and
 * after TT_INCOMPLETE the whole buffer parsed with last_len = k gives the whole-buffer result. Then feeds
 * one byte at a time, passing the previous length as last_len. `stride` > 1 samples split points (for the
 * very large inputs) but always covers the first and last 300 and the ones around `focus`.
 */
static void check_splits_lim(const char *buf, size_t len, const tt_h1_limits_t *lim, size_t stride, size_t focus)
{
    tt_h1_request_t *whole = new_req(), *part = new_req(), *resumed = new_req();
    int rw = tt_h1_parse_request(buf, len, 0, lim, whole);
    assert_int_not_equal(rw, TT_INCOMPLETE); /* samples are complete heads or refusals */
    for (size_t k = 0; k <= len; k++) {
        bool near = k < 300 || len - k < 300 || (k + 300 > focus && k < focus + 300);
        if (!near && k % stride != 0) continue;
        int rp = tt_h1_parse_request(buf, k, 0, lim, part);
        if (rp == TT_INCOMPLETE) {
            int rr = tt_h1_parse_request(buf, len, k, lim, resumed);
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
        rc = tt_h1_parse_request(buf, n, last, lim, part);
        last = n;
    }
    assert_same_result(rw, whole, rc, part);
    test_free(whole);
    test_free(part);
    test_free(resumed);
}

static void check_splits(const char *buf, size_t len)
{
    check_splits_lim(buf, len, &tt_h1_default_limits, 1, 0);
}

/* ---- accepted requests ---- */

static void parses_a_simple_get(void **state)
{
    (void)state;
    static const char in[] = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n"
                             "Accept: */*\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1);
    assert_view(r->method, "GET");
    assert_int_equal(r->method_id, TT_METHOD_GET);
    assert_view(r->target, "/index.html?q=1");
    assert_int_equal(r->minor_version, 1);
    assert_int_equal(r->content_length, -1);
    assert_false(r->chunked);
    assert_false(r->expect_continue);
    assert_int_equal(r->conn_tokens, 0);
    assert_int_equal(r->error, TT_H1_OK);
    assert_int_equal(r->nfields, 3);
    assert_view(r->fields[0].name, "Host");
    assert_view(r->fields[0].value, "example.com");
    assert_view(r->fields[1].name, "User-Agent");
    assert_view(r->fields[1].value, "t/1");
    assert_view(r->fields[2].name, "Accept");
    assert_view(r->fields[2].value, "*/*");
    assert_int_equal(r->known[TT_H1_F_HOST], 0);
    for (int i = 1; i < TT_H1_F__COUNT; i++) assert_int_equal(r->known[i], -1);
    assert_int_equal(tt_h1_find_field(r, TT_LIT("user-agent")), 1);
    assert_int_equal(tt_h1_find_field(r, TT_LIT("accept")), 2);
    assert_int_equal(tt_h1_find_field(r, TT_LIT("cookie")), -1);
    test_free(r);
}

static void recognises_every_known_method(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        tt_method_t id;
    } methods[] = {
        {"GET", TT_METHOD_GET},     {"HEAD", TT_METHOD_HEAD},     {"POST", TT_METHOD_POST},
        {"PUT", TT_METHOD_PUT},     {"DELETE", TT_METHOD_DELETE}, {"OPTIONS", TT_METHOD_OPTIONS},
        {"PATCH", TT_METHOD_PATCH}, {"TRACE", TT_METHOD_TRACE},   {"PROPFIND", TT_METHOD_OTHER},
        {"get", TT_METHOD_OTHER},   {"GETS", TT_METHOD_OTHER},    {"X-CUSTOM!", TT_METHOD_OTHER},
    };
    tt_h1_request_t *r = new_req();
    for (size_t i = 0; i < TT_ARRAY_SIZE(methods); i++) {
        char buf[128];
        int n = snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", methods[i].name);
        assert_int_equal(parse(buf, (size_t)n, r), n);
        assert_view(r->method, methods[i].name);
        assert_int_equal(r->method_id, methods[i].id);
    }
    /* CONNECT takes authority-form only (RFC 9112 3.2.3) */
    static const char connect[] = "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    assert_int_equal(parse(S(connect), r), sizeof(connect) - 1);
    assert_int_equal(r->method_id, TT_METHOD_CONNECT);
    test_free(r);
}

static void trims_optional_whitespace_around_field_values(void **state)
{
    (void)state;
    static const char in[] = "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t \r\nX-Empty:\r\nX-Blank: \t \r\n"
                             "X-Obs: caf\xc3\xa9\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1);
    assert_int_equal(r->nfields, 5);
    assert_view(r->fields[0].value, "a");
    assert_view(r->fields[1].name, "X-A");
    assert_view(r->fields[1].value, "v a l");
    assert_view(r->fields[2].name, "X-Empty");
    assert_view(r->fields[2].value, "");
    assert_view(r->fields[3].value, "");
    assert_view(r->fields[4].value, "caf\xc3\xa9");
    test_free(r);
}

static void reads_content_length(void **state)
{
    (void)state;
    static const char in[] = "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1 - 5);
    assert_int_equal(r->method_id, TT_METHOD_POST);
    assert_int_equal(r->content_length, 5);
    assert_false(r->chunked);

    static const char zero[] = "POST / HTTP/1.1\r\nHost: a\r\ncontent-length:0\r\n\r\n";
    assert_int_equal(parse(S(zero), r), sizeof(zero) - 1);
    assert_int_equal(r->content_length, 0);

    static const char big[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775799\r\n\r\n";
    assert_int_equal(parse(S(big), r), sizeof(big) - 1);
    assert_int_equal(r->content_length, INT64_MAX - 8);
    static const char lead[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\n\r\n";
    assert_int_equal(parse(S(lead), r), sizeof(lead) - 1);
    assert_int_equal(r->content_length, 7);
    test_free(r);
}

/* A list of equal values, or the same value twice, is refused as nginx does (issue 10): RFC 9110 8.6 lets a
 * recipient accept them, and a peer that did would frame the request otherwise than one that did not. */
static void refuses_identical_repeated_content_lengths(void **state)
{
    (void)state;
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), TT_H1_E_CONTENT_LENGTH, 400);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
               TT_H1_E_CONTENT_LENGTH, 400);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 ,7,\t7\r\n\r\n"), TT_H1_E_CONTENT_LENGTH, 400);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n"),
               TT_H1_E_CONTENT_LENGTH, 400);
}

static void reads_chunked_and_expect_continue(void **state)
{
    (void)state;
    static const char in[] = "PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                             "5\r\nhello\r\n0\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), (int)(strstr(in, "\r\n\r\n") + 4 - in));
    assert_int_equal(r->method_id, TT_METHOD_PUT);
    assert_true(r->chunked);
    assert_true(r->expect_continue);
    assert_int_equal(r->content_length, -1);

    static const char upper[] =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\nExpect: 100-Continue\r\n\r\n";
    assert_int_equal(parse(S(upper), r), sizeof(upper) - 1);
    assert_true(r->chunked);
    assert_true(r->expect_continue);

    static const char ows[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked \t\r\n\r\n";
    assert_int_equal(parse(S(ows), r), sizeof(ows) - 1);
    assert_true(r->chunked);
    test_free(r);
}

static void collects_connection_tokens(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        unsigned tokens;
    } cases[] = {
        {"close", TT_H1_CONN_CLOSE},
        {"CLOSE", TT_H1_CONN_CLOSE},
        {"keep-alive", TT_H1_CONN_KEEP_ALIVE},
        {"Keep-Alive", TT_H1_CONN_KEEP_ALIVE},
        {"Upgrade", TT_H1_CONN_UPGRADE},
        {"keep-alive, Upgrade", TT_H1_CONN_KEEP_ALIVE | TT_H1_CONN_UPGRADE},
        {" ,close ,, keep-alive,", TT_H1_CONN_CLOSE | TT_H1_CONN_KEEP_ALIVE},
        {"x-custom, te", 0},
        {"closed", 0},
        {"keep-alive-ish, clos", 0},
        {"", 0},
    };
    tt_h1_request_t *r = new_req();
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nConnection: %s\r\n\r\n", cases[i].value);
        assert_int_equal(parse(buf, (size_t)n, r), n);
        if (r->conn_tokens != cases[i].tokens) print_error("Connection: %s\n", cases[i].value);
        assert_int_equal(r->conn_tokens, cases[i].tokens);
    }
    /* tokens from several Connection lines add up */
    static const char two[] = "GET / HTTP/1.1\r\nConnection: upgrade\r\nHost: a\r\nconnection: close\r\n\r\n";
    assert_int_equal(parse(S(two), r), sizeof(two) - 1);
    assert_int_equal(r->conn_tokens, TT_H1_CONN_UPGRADE | TT_H1_CONN_CLOSE);
    test_free(r);
}

static void indexes_the_known_fields(void **state)
{
    (void)state;
    static const char in[] = "GET /f HTTP/1.1\r\nX-First: 1\r\nidempotency-key: k1\r\nRange: bytes=0-9\r\n"
                             "IF-RANGE: \"x\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                             "If-None-Match: \"a\", \"b\"\r\nhOsT: example.com\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1);
    assert_int_equal(r->nfields, 7);
    assert_int_equal(r->known[TT_H1_F_IDEMPOTENCY_KEY], 1);
    assert_int_equal(r->known[TT_H1_F_RANGE], 2);
    assert_int_equal(r->known[TT_H1_F_IF_RANGE], 3);
    assert_int_equal(r->known[TT_H1_F_IF_MODIFIED_SINCE], 4);
    assert_int_equal(r->known[TT_H1_F_IF_NONE_MATCH], 5);
    assert_int_equal(r->known[TT_H1_F_HOST], 6);
    assert_view(r->fields[r->known[TT_H1_F_HOST]].value, "example.com");
    assert_view(r->fields[r->known[TT_H1_F_IF_NONE_MATCH]].value, "\"a\", \"b\"");
    assert_view(r->fields[r->known[TT_H1_F_IF_MODIFIED_SINCE]].value, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_int_equal(tt_h1_find_field(r, TT_LIT("host")), 6);

    /* a field whose name merely starts like a known one is not indexed */
    static const char near[] = "GET / HTTP/1.1\r\nHost: a\r\nRanges: x\r\nIf-None-Matches: y\r\n\r\n";
    assert_int_equal(parse(S(near), r), sizeof(near) - 1);
    assert_int_equal(r->known[TT_H1_F_RANGE], -1);
    assert_int_equal(r->known[TT_H1_F_IF_NONE_MATCH], -1);
    test_free(r);
}

static void skips_empty_lines_before_the_request_line(void **state)
{
    (void)state;
    static const char in[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1);
    assert_ptr_equal(r->method.p, in + 4);
    assert_view(r->target, "/");
    assert_int_equal(parse(S("\r\n"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("\r"), r), TT_INCOMPLETE);
    test_free(r);
}

/* Issue 9: empty lines before the request-line were skipped without bound, so ~64 KB of CRLFs held the
 * connection's buffer (and reached the 431 path). A request-line's worth (max_target + 64) is the limit. */
static void bounds_the_empty_lines_before_the_request_line(void **state)
{
    (void)state;
    const tt_h1_limits_t lim = {.max_target = 100, .max_field_bytes = 1000, .max_fields = 10};
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    char buf[1024];
    size_t n = 0;
    while (n + 2 <= 164) { /* exactly max_target + 64 bytes of empty lines: still accepted */
        memcpy(buf + n, "\r\n", 2);
        n += 2;
    }
    memcpy(buf + n, req, sizeof(req) - 1);
    tt_h1_request_t *r = new_req();
    assert_int_equal(tt_h1_parse_request(buf, n + sizeof(req) - 1, 0, &lim, r), (int)(n + sizeof(req) - 1));
    test_free(r);
    memcpy(buf + n, "\r\n", 2); /* one empty line more */
    memcpy(buf + n + 2, req, sizeof(req) - 1);
    expect_bad_lim(buf, n + 2 + sizeof(req) - 1, &lim, TT_H1_E_REQUEST_LINE, 400);
    expect_bad_lim(buf, n + 2, &lim, TT_H1_E_REQUEST_LINE, 400); /* before any request-line byte */
    check_splits_lim(buf, n + 2 + sizeof(req) - 1, &lim, 7, n);
    /* 64 KB of them with the default limits: refused long before the buffer fills */
    size_t big = 65536;
    char *flood = test_malloc(big);
    for (size_t i = 0; i < big; i += 2) memcpy(flood + i, "\r\n", 2);
    expect_bad(flood, big, TT_H1_E_REQUEST_LINE, 400);
    test_free(flood);
}

static void accepts_absolute_and_asterisk_form_targets(void **state)
{
    (void)state;
    static const char abs[] = "GET http://example.com:8080/a/b?c=%20 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
    static const char star[] = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char auth[] = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    static const char origin[] = "GET /x HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n";
    /* the target's authority replaces Host (RFC 9112 3.2.2), which may be empty or different */
    static const char other[] = "GET HTTP://Example.COM?q HTTP/1.1\r\nHost: other.test\r\n\r\n";
    static const char empty[] = "GET http://example.com/ HTTP/1.1\r\nHost:\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(abs), r), sizeof(abs) - 1);
    assert_view(r->target, "http://example.com:8080/a/b?c=%20");
    assert_int_equal(r->target_form, TT_TARGET_ABSOLUTE);
    assert_view(r->authority, "example.com:8080");
    assert_int_equal(parse(S(star), r), sizeof(star) - 1);
    assert_int_equal(r->method_id, TT_METHOD_OPTIONS);
    assert_view(r->target, "*");
    assert_int_equal(r->target_form, TT_TARGET_ASTERISK);
    assert_view(r->authority, "a");
    assert_int_equal(parse(S(auth), r), sizeof(auth) - 1);
    assert_int_equal(r->method_id, TT_METHOD_CONNECT);
    assert_view(r->target, "example.com:443");
    assert_int_equal(r->target_form, TT_TARGET_AUTHORITY);
    assert_view(r->authority, "example.com:443");
    assert_int_equal(parse(S(origin), r), sizeof(origin) - 1);
    assert_int_equal(r->target_form, TT_TARGET_ORIGIN);
    assert_view(r->authority, "www.example.com:8080");
    assert_int_equal(parse(S(other), r), sizeof(other) - 1);
    assert_view(r->authority, "Example.COM");
    assert_int_equal(parse(S(empty), r), sizeof(empty) - 1);
    assert_view(r->authority, "example.com");
    test_free(r);
}

/* RFC 9112 3.2: each form with the method that takes it; absolute-form only for http and https without
 * userinfo (RFC 9110 4.2.4). */
static void refuses_targets_the_method_does_not_take(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "CONNECT / HTTP/1.1",           /* CONNECT in origin-form */
        "CONNECT * HTTP/1.1",           /* ...asterisk-form */
        "CONNECT http://a/ HTTP/1.1",   /* ...absolute-form */
        "CONNECT a HTTP/1.1",           /* authority-form needs a port */
        "CONNECT a: HTTP/1.1",          /* ...a non-empty one */
        "CONNECT u@a:443 HTTP/1.1",     /* ...and no userinfo */
        "GET a:443 HTTP/1.1",           /* authority-form without CONNECT */
        "GET * HTTP/1.1",               /* asterisk-form without OPTIONS */
        "GET ftp://a/x HTTP/1.1",       /* another scheme */
        "GET ws://a/x HTTP/1.1",        /* another scheme */
        "GET http:/a/x HTTP/1.1",       /* not "://" */
        "GET http://u@a/x HTTP/1.1",    /* userinfo */
        "GET http://u:p@a/x HTTP/1.1",  /* userinfo */
        "GET http:///x HTTP/1.1",       /* empty host */
        "GET http://a b/ HTTP/1.1",     /* (a space ends the target: request-line error instead) */
        "GET http://a:99999/ HTTP/1.1", /* port out of range */
        "GET http://a,b/ HTTP/1.1",     /* ',' in a host */
        "GET x HTTP/1.1",               /* relative */
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(lines); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%s\r\nHost: a\r\n\r\n", lines[i]);
        expect_bad(buf, (size_t)n, strstr(lines[i], "a b") ? TT_H1_E_VERSION : TT_H1_E_TARGET, 400);
    }
}

/* Host is uri-host [ ":" port ] (RFC 9110 7.2): the request is refused when it could not be one. */
static void checks_the_host_field(void **state)
{
    (void)state;
    static const char *const good[] = {
        "a",
        "example.com",
        "EXAMPLE.com:80",
        "a:",
        "a:0",
        "a:65535",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:443",
        "[2001:db8::1.2.3.4]",
        "xn--caf-dma.test",
        "a-b_c~d.e",
        "%41b",
        "a!$&'()*+;=b",
    };
    static const char *const bad_hosts[] = {
        "a b",
        "a\tb",
        "a\"b",
        "a,b",
        "a/b",
        "u@a",
        "a\\b",
        "a:65536",
        "a:123456",
        "a:8x",
        "a:-1",
        ":80",
        "[::1",
        "[::1]x",
        "[::1]:x",
        "[v1.x]",
        "[fe80::1%25eth0]",
        "a%zz",
        "a%4",
        "a<b",
        "a]",
        "a\", for=6.6.6.6;host=\"b",
    };
    tt_h1_request_t *r = new_req();
    for (size_t i = 0; i < TT_ARRAY_SIZE(good); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        if (parse(buf, (size_t)n, r) != n) print_error("Host: %s refused\n", good[i]);
        assert_int_equal(parse(buf, (size_t)n, r), n);
        assert_view(r->authority, good[i]);
    }
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad_hosts); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad_hosts[i]);
        expect_bad(buf, (size_t)n, TT_H1_E_HOST, 400);
        n = snprintf(buf, sizeof(buf), "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", bad_hosts[i]);
        expect_bad(buf, (size_t)n, TT_H1_E_HOST, 400);
    }
    /* empty: refused unless the target carries the authority (absolute-form) */
    expect_bad(S("GET / HTTP/1.1\r\nHost:\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("GET / HTTP/1.0\r\nHost: \r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("CONNECT a:1 HTTP/1.1\r\nHost:\r\n\r\n"), TT_H1_E_HOST, 400);
    /* a bad Host is refused even when absolute-form makes it unused (nginx does the same) */
    expect_bad(S("GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n"), TT_H1_E_HOST, 400);
    test_free(r);
}

/* One field line over max_field_line is 431 (nginx: 400), the limit counted as "name: value" without CRLF. */
static void refuses_field_lines_over_the_line_limit(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    static char buf[9000];
    int head = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ");
    /* "X-Long: " is 8 bytes: a value of 8184 makes a line of exactly 8192 */
    memset(buf + head, 'v', 8184);
    memcpy(buf + head + 8184, "\r\n\r\n", 4);
    assert_int_equal(parse(buf, (size_t)head + 8188, r), head + 8188);
    memset(buf + head, 'v', 8185);
    memcpy(buf + head + 8185, "\r\n\r\n", 4);
    expect_bad(buf, (size_t)head + 8189, TT_H1_E_FIELD_LINE_TOO_LONG, 431);
    check_splits_lim(buf, (size_t)head + 8189, &tt_h1_default_limits, 13, (size_t)head + 8185);
    /* a custom limit; 0 leaves only the section limit */
    const tt_h1_limits_t lim = {.max_target = 64, .max_field_bytes = 1024, .max_fields = 10, .max_field_line = 10};
    expect_bad_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678\r\n\r\n"), &lim, TT_H1_E_FIELD_LINE_TOO_LONG, 431);
    static const char fits[] = "GET / HTTP/1.1\r\nHost: a\r\nX: 1234567\r\n\r\n";
    static const char over[] = "GET / HTTP/1.1\r\nHost: a\r\nX: 12345678\r\n\r\n";
    assert_int_equal(tt_h1_parse_request(S(fits), 0, &lim, r), sizeof(fits) - 1);
    const tt_h1_limits_t none = {.max_target = 64, .max_field_bytes = 1024, .max_fields = 10};
    assert_int_equal(tt_h1_parse_request(S(over), 0, &none, r), sizeof(over) - 1);
    /* the first proof in byte order wins, whole or split: a long line, then a bare LF... */
    check_splits_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678\r\nY: b\nZ: c\r\n\r\n"), &lim, 1, 0);
    expect_bad_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678\r\nY: b\nZ: c\r\n\r\n"), &lim,
                   TT_H1_E_FIELD_LINE_TOO_LONG, 431);
    /* ...a bare LF, then a long line */
    check_splits_lim(S("GET / HTTP/1.1\r\nHost: a\r\nY: b\nX: 12345678\r\n\r\n"), &lim, 1, 0);
    expect_bad_lim(S("GET / HTTP/1.1\r\nHost: a\r\nY: b\nX: 12345678\r\n\r\n"), &lim, TT_H1_E_BARE_LF, 400);
    /* ...a long line inside a section that then outgrows its limit */
    const tt_h1_limits_t small = {.max_target = 64, .max_field_bytes = 40, .max_fields = 10, .max_field_line = 12};
    check_splits_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 1234567890123\r\nY: 123456789012345678901234\r\n\r\n"), &small,
                     1, 0);
    expect_bad_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 1234567890123\r\nY: 123456789012345678901234\r\n\r\n"), &small,
                   TT_H1_E_FIELD_LINE_TOO_LONG, 431);
    check_splits_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 12\r\nY: 1234\r\nZ: 1234\r\nW: 12345678901234567\r\n\r\n"),
                     &small, 1, 0);
    test_free(r);
}

static void accepts_http10_without_host(void **state)
{
    (void)state;
    static const char in[] = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    static const char bare[] = "GET / HTTP/1.0\r\n\r\n";
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(in), r), sizeof(in) - 1);
    assert_int_equal(r->minor_version, 0);
    assert_int_equal(r->known[TT_H1_F_HOST], -1);
    assert_int_equal(r->conn_tokens, TT_H1_CONN_KEEP_ALIVE);
    assert_int_equal(parse(S(bare), r), sizeof(bare) - 1);
    assert_int_equal(r->minor_version, 0);
    assert_int_equal(r->nfields, 0);
    /* a later HTTP/1.x minor is HTTP/1.1 */
    static const char later[] = "GET / HTTP/1.9\r\nHost: a\r\n\r\n";
    assert_int_equal(parse(S(later), r), sizeof(later) - 1);
    assert_int_equal(r->minor_version, 1);
    test_free(r);
}

static void returns_only_the_first_of_pipelined_requests(void **state)
{
    (void)state;
    static const char in[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    tt_h1_request_t *r = new_req();
    int n = parse(S(in), r);
    assert_int_equal(n, (int)(strstr(in, "GET /2") - in));
    assert_view(r->target, "/1");
    assert_int_equal(parse(in + n, sizeof(in) - 1 - (size_t)n, r), (int)(sizeof(in) - 1 - (size_t)n));
    assert_view(r->target, "/2");
    test_free(r);
}

static void waits_for_the_rest_of_an_incomplete_head(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    assert_int_equal(parse(S(""), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("GET"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("GET / HTTP/1.1"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("GET / HTTP/1.1\r\n"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("GET / HTTP/1.1\r\nHost: a\r\n"), r), TT_INCOMPLETE);
    assert_int_equal(parse(S("GET / HTTP/1.1\r\nHost: a\r\n\r"), r), TT_INCOMPLETE);
    test_free(r);
}

/* ---- refusals ---- */

static void maps_every_error_to_its_status_and_name(void **state)
{
    (void)state;
    static const int status[TT_H1_E__COUNT] = {
        [TT_H1_OK] = 200,
        [TT_H1_E_REQUEST_LINE] = 400,
        [TT_H1_E_TARGET_TOO_LONG] = 414,
        [TT_H1_E_VERSION] = 400,
        [TT_H1_E_VERSION_UNSUPPORTED] = 505,
        [TT_H1_E_BARE_CR] = 400,
        [TT_H1_E_BARE_LF] = 400,
        [TT_H1_E_FIELD_NAME] = 400,
        [TT_H1_E_FIELD_NAME_WS] = 400,
        [TT_H1_E_FIELD_VALUE] = 400,
        [TT_H1_E_OBS_FOLD] = 400,
        [TT_H1_E_TOO_MANY_FIELDS] = 431,
        [TT_H1_E_FIELDS_TOO_LARGE] = 431,
        [TT_H1_E_CONTENT_LENGTH] = 400,
        [TT_H1_E_CL_AND_TE] = 400,
        [TT_H1_E_TRANSFER_CODING] = 400,
        [TT_H1_E_HOST] = 400,
        [TT_H1_E_EXPECT] = 417,
        [TT_H1_E_CHUNK_SIZE] = 400,
        [TT_H1_E_CHUNK_EXT] = 400,
        [TT_H1_E_CHUNK_DATA] = 400,
        [TT_H1_E_TRAILER] = 400,
        [TT_H1_E_TARGET] = 400,
        [TT_H1_E_FIELD_LINE_TOO_LONG] = 431,
    };
    for (int e = 0; e < TT_H1_E__COUNT; e++) {
        assert_int_equal(tt_h1_error_status((tt_h1_error_t)e), status[e]);
        const char *name = tt_h1_error_name((tt_h1_error_t)e);
        assert_non_null(name);
        assert_true(strlen(name) > 0);
        for (int f = 0; f < e; f++) assert_string_not_equal(name, tt_h1_error_name((tt_h1_error_t)f));
    }
    assert_string_equal(tt_h1_error_name(TT_H1_E_BARE_CR), "bare_cr");
    assert_int_equal(tt_h1_error_status(TT_H1_E__COUNT), 400);
    assert_string_equal(tt_h1_error_name(TT_H1_E__COUNT), "unknown");
}

static void refuses_content_length_with_transfer_encoding(void **state)
{
    (void)state;
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
               TT_H1_E_CL_AND_TE, 400);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"),
               TT_H1_E_CL_AND_TE, 400);
    expect_bad(S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), TT_H1_E_CL_AND_TE, 400);
}

static void refuses_transfer_codings_other_than_one_chunked(void **state)
{
    (void)state;
    static const char *const codings[] = {
        "gzip",
        "gzip, chunked",
        "chunked, chunked",
        "identity",
        "chunked, gzip",
        "chunkedx",
        "",
        "chunked;q=1",
        /* empty list elements: RFC 9110 5.6.1 would skip them, nginx refuses them (501), so does tether (400) */
        ", chunked",
        "chunked,",
        "chunked, ",
        " , chunked",
        ",",
        "chunked,,",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(codings); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n", codings[i]);
        expect_bad(buf, (size_t)n, TT_H1_E_TRANSFER_CODING, 400);
    }
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
               TT_H1_E_TRANSFER_CODING, 400);
    /* HTTP/1.0 has no transfer codings (RFC 9112 6.1) */
    expect_bad(S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), TT_H1_E_TRANSFER_CODING, 400);
}

static void refuses_bad_content_lengths(void **state)
{
    (void)state;
    static const char *const values[] = {
        "5, 6", "abc", "-1", "5a", "", "+5", "5,", ",5", "1 2", "0x10", "99999999999999999999",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(values); i++) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n", values[i]);
        expect_bad(buf, (size_t)n, TT_H1_E_CONTENT_LENGTH, 400);
    }
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
               TT_H1_E_CONTENT_LENGTH, 400);
}

static void refuses_obs_fold(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"), TT_H1_E_OBS_FOLD, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"), TT_H1_E_OBS_FOLD, 400);
    /* whitespace before the first field line is refused the same way */
    expect_bad(S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), TT_H1_E_OBS_FOLD, 400);
}

static void refuses_bare_cr(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), TT_H1_E_BARE_CR, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\r\n\r\n"), TT_H1_E_BARE_CR, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n"), TT_H1_E_BARE_CR, 400);
    expect_bad(S("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_CR, 400);
    expect_bad(S("GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_CR, 400);
    expect_bad(S("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_CR, 400);
}

static void refuses_bare_lf(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\nHost: a\n\n"), TT_H1_E_BARE_LF, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), TT_H1_E_BARE_LF, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\n\n"), TT_H1_E_BARE_LF, 400);
    expect_bad(S("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_LF, 400);
    /* refused as soon as it arrives, before the head is complete */
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\n"), TT_H1_E_BARE_LF, 400);
    expect_bad(S("GET / HTTP/1.1\n"), TT_H1_E_BARE_LF, 400);
}

static void refuses_whitespace_before_the_colon(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), TT_H1_E_FIELD_NAME_WS, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), TT_H1_E_FIELD_NAME_WS, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"), TT_H1_E_FIELD_NAME_WS, 400);
}

static void refuses_control_bytes_in_field_values(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"), TT_H1_E_FIELD_VALUE, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"), TT_H1_E_FIELD_VALUE, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n"), TT_H1_E_FIELD_VALUE, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n"), TT_H1_E_FIELD_VALUE, 400);
}

static void refuses_bad_field_names(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nH\xc3\xa9: a\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX/Y: a\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n"), TT_H1_E_FIELD_NAME, 400);
}

static void refuses_malformed_request_lines(void **state)
{
    (void)state;
    expect_bad(S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GET /\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GET\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S(" / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE, 400);
    /* garbage is refused at its first bytes, without waiting for a line end */
    expect_bad(S("\x16\x03\x01\x02\x00"), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S(" "), TT_H1_E_REQUEST_LINE, 400);
    expect_bad(S("GE\x01"), TT_H1_E_REQUEST_LINE, 400);
}

static void refuses_malformed_versions(void **state)
{
    (void)state;
    expect_bad(S("GET / \r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / http/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/1\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/11\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/1.x\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
    expect_bad(S("GET / HTTP/1.1\tX\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION, 400);
}

static void refuses_versions_other_than_http1_with_505(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED, 505);
    expect_bad(S("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED, 505);
    expect_bad(S("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED, 505);
}

/* A request whose target is `tlen` bytes ("/aaa..."), followed by "HTTP/1.1", Host and the end. */
static char *long_target_request(size_t tlen, size_t *len)
{
    char *b = test_malloc(tlen + 64);
    assert_non_null(b);
    size_t n = 0;
    memcpy(b, "GET /", 5);
    n = 5;
    memset(b + n, 'a', tlen - 1);
    n += tlen - 1;
    static const char tail[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
    memcpy(b + n, tail, sizeof(tail) - 1);
    *len = n + sizeof(tail) - 1;
    return b;
}

static void refuses_targets_longer_than_8192_bytes_with_414(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    size_t len;
    char *ok = long_target_request(8192, &len);
    assert_int_equal(parse(ok, len, r), (int)len);
    assert_int_equal(r->target.n, 8192);
    test_free(ok);

    char *b = long_target_request(8193, &len);
    expect_bad(b, len, TT_H1_E_TARGET_TOO_LONG, 414);
    test_free(b);

    /* only part of a long target has arrived: refused without waiting for the line end */
    b = long_target_request(20000, &len);
    expect_bad(b, 9000, TT_H1_E_TARGET_TOO_LONG, 414);
    expect_bad(b, len, TT_H1_E_TARGET_TOO_LONG, 414);
    test_free(b);
    test_free(r);
}

/* A request with `nfields` fields after Host, each `vlen` bytes of value; the field section is then
 * 9 + nfields * (vlen + 11) bytes ("Host: a\r\n", then "X-%05zu: " value "\r\n" each). */
static char *many_fields_request(size_t nfields, size_t vlen, size_t *len)
{
    size_t cap = 64 + nfields * (vlen + 16);
    char *b = test_malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 0; i < nfields; i++) {
        n += (size_t)snprintf(b + n, cap - n, "X-%05zu: ", i);
        memset(b + n, 'v', vlen);
        n += vlen;
        b[n++] = '\r';
        b[n++] = '\n';
    }
    b[n++] = '\r';
    b[n++] = '\n';
    *len = n;
    return b;
}

/* A request whose field section (after the request-line, before the empty line) is exactly `section`
 * bytes (>= 14): Host, lines of 1005 bytes, and one last line to make up the rest. */
static char *sized_fields_request(size_t section, size_t *len)
{
    char *b = test_malloc(section + 64);
    assert_non_null(b);
    size_t n = 0;
    memcpy(b, "GET / HTTP/1.1\r\nHost: a\r\n", 25);
    n = 25;
    const size_t start = 16;
    while (section - (n - start) > 1005 + 5) {
        memcpy(b + n, "X: ", 3);
        memset(b + n + 3, 'v', 1000);
        memcpy(b + n + 1003, "\r\n", 2);
        n += 1005;
    }
    size_t rest = section - (n - start);
    assert_true(rest >= 5);
    memcpy(b + n, "Y:", 2);
    memset(b + n + 2, 'w', rest - 4);
    memcpy(b + n + rest - 2, "\r\n", 2);
    n += rest;
    memcpy(b + n, "\r\n", 2);
    n += 2;
    *len = n;
    return b;
}

static void refuses_field_sections_over_32768_bytes_with_431(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    size_t len;
    char *b = sized_fields_request(32768, &len);
    assert_int_equal(parse(b, len, r), (int)len);
    assert_view(r->fields[r->nfields - 1].name, "Y");
    assert_int_equal(r->fields[r->nfields - 1].value.n, 32768 - 9 - (r->nfields - 2) * 1005 - 4);
    test_free(b);

    b = sized_fields_request(32769, &len);
    expect_bad(b, len, TT_H1_E_FIELDS_TOO_LARGE, 431);
    test_free(b);

    /* a field section growing past the limit is refused before its end arrives */
    b = many_fields_request(40, 1000, &len);
    expect_bad(b, 33500, TT_H1_E_FIELDS_TOO_LARGE, 431);
    expect_bad(b, len, TT_H1_E_FIELDS_TOO_LARGE, 431);
    test_free(b);
    test_free(r);
}

static void refuses_more_than_100_fields_with_431(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    size_t len;
    char *b = many_fields_request(99, 1, &len); /* Host + 99 = 100 */
    assert_int_equal(parse(b, len, r), (int)len);
    assert_int_equal(r->nfields, 100);
    assert_view(r->fields[99].name, "X-00098");
    test_free(b);
    b = many_fields_request(100, 1, &len); /* 101 */
    expect_bad(b, len, TT_H1_E_TOO_MANY_FIELDS, 431);
    test_free(b);
    test_free(r);
}

static void refuses_http11_without_exactly_one_host(void **state)
{
    (void)state;
    expect_bad(S("GET / HTTP/1.1\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("GET / HTTP/1.1\r\nX: a\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), TT_H1_E_HOST, 400);
    expect_bad(S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), TT_H1_E_HOST, 400);
}

static void refuses_expectations_other_than_100_continue_with_417(void **state)
{
    (void)state;
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n"), TT_H1_E_EXPECT, 417);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n"), TT_H1_E_EXPECT, 417);
    expect_bad(S("POST / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n"), TT_H1_E_EXPECT, 417);
}

static void honours_custom_limits(void **state)
{
    (void)state;
    tt_h1_request_t *r = new_req();
    const tt_h1_limits_t lim = {.max_target = 16, .max_field_bytes = 64, .max_fields = 3};

    static const char t16[] = "GET /aaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char t17[] = "GET /aaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(tt_h1_parse_request(S(t16), 0, &lim, r), sizeof(t16) - 1);
    expect_bad_lim(S(t17), &lim, TT_H1_E_TARGET_TOO_LONG, 414);
    /* a 200-byte prefix of a long request-line is already over 16 + the request-line slack */
    char longline[300];
    memcpy(longline, "GET /", 5);
    memset(longline + 5, 'a', sizeof(longline) - 5);
    expect_bad_lim(longline, sizeof(longline), &lim, TT_H1_E_TARGET_TOO_LONG, 414);

    /* field section of exactly 64 bytes: "Host: a\r\n" (9) + "X: " + 50 + "\r\n" (55) */
    char f[200];
    int n = snprintf(f, sizeof(f), "GET / HTTP/1.1\r\nHost: a\r\nX: %050d\r\n\r\n", 0);
    assert_int_equal(tt_h1_parse_request(f, (size_t)n, 0, &lim, r), n);
    n = snprintf(f, sizeof(f), "GET / HTTP/1.1\r\nHost: a\r\nX: %051d\r\n\r\n", 0);
    expect_bad_lim(f, (size_t)n, &lim, TT_H1_E_FIELDS_TOO_LARGE, 431);

    static const char three[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    static const char four[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_int_equal(tt_h1_parse_request(S(three), 0, &lim, r), sizeof(three) - 1);
    expect_bad_lim(S(four), &lim, TT_H1_E_TOO_MANY_FIELDS, 431);

    /* max_fields above TT_H1_MAX_FIELDS is capped by the array */
    const tt_h1_limits_t wide = {.max_target = 8192, .max_field_bytes = 1 << 20, .max_fields = 1000};
    size_t len;
    char *b = many_fields_request(100, 1, &len);
    expect_bad_lim(b, len, &wide, TT_H1_E_TOO_MANY_FIELDS, 431);
    test_free(b);
    test_free(r);
}

/* ---- split at every byte ---- */

typedef struct sample {
    const char *s;
    size_t n;
} sample_t;

#define SAMPLE(lit)            \
    {                          \
        (lit), sizeof(lit) - 1 \
    }

static const sample_t valid_samples[] = {
    SAMPLE("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n"),
    SAMPLE("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"),
    SAMPLE("PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0"
           "\r\n\r\n"),
    SAMPLE("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    SAMPLE("GET / HTTP/1.0\r\n\r\n"),
    SAMPLE("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    SAMPLE("GET http://example.com:8080/a/b?c HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"),
    SAMPLE("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    SAMPLE(
        "GET /f HTTP/1.1\r\nhost:a\r\nIf-None-Match: \t\"x\" \t\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 "
        "GMT\r\nRange: bytes=0-9\r\nIf-Range: \"x\"\r\nIdempotency-Key: k1\r\nConnection: Keep-Alive, Upgrade\r\n\r\n"),
    SAMPLE("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n"),
    SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Empty:\r\nX-B: \t \r\n\r\n"),
    SAMPLE("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    SAMPLE("GET HTTPS://[::1]:8443 HTTP/1.1\r\nHost:\r\n\r\n"),
    SAMPLE("GET / HTTP/1.1\r\nHost: xn--caf-dma.example:80\r\n\r\n"),
    SAMPLE("GET /x HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\nConnection: close\r\n\r\n"),
    SAMPLE("PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n"),
};

static const struct {
    sample_t in;
    tt_h1_error_t e;
} bad_samples[] = {
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
     TT_H1_E_CL_AND_TE},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), TT_H1_E_TRANSFER_CODING},
    {SAMPLE("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), TT_H1_E_TRANSFER_CODING},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"), TT_H1_E_CONTENT_LENGTH},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), TT_H1_E_CONTENT_LENGTH},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"), TT_H1_E_OBS_FOLD},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), TT_H1_E_BARE_CR},
    {SAMPLE("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_CR},
    {SAMPLE("\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_BARE_CR},
    {SAMPLE("GET / HTTP/1.1\nHost: a\n\n"), TT_H1_E_BARE_LF},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), TT_H1_E_BARE_LF},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\r\n\n\r\n\r\n"), TT_H1_E_BARE_LF},
    {SAMPLE("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), TT_H1_E_FIELD_NAME_WS},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"), TT_H1_E_FIELD_VALUE},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n"), TT_H1_E_FIELD_VALUE},
    {SAMPLE("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"), TT_H1_E_FIELD_NAME},
    {SAMPLE("GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n"), TT_H1_E_FIELD_NAME},
    {SAMPLE("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE},
    {SAMPLE("GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE},
    {SAMPLE(" / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_REQUEST_LINE},
    {SAMPLE("GET / http/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION},
    {SAMPLE("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION},
    {SAMPLE("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), TT_H1_E_VERSION_UNSUPPORTED},
    {SAMPLE("GET / HTTP/1.1\r\n\r\n"), TT_H1_E_HOST},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), TT_H1_E_HOST},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"), TT_H1_E_EXPECT},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), TT_H1_E_CONTENT_LENGTH},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), TT_H1_E_CONTENT_LENGTH},
    {SAMPLE("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n"), TT_H1_E_TRANSFER_CODING},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), TT_H1_E_HOST},
    {SAMPLE("GET / HTTP/1.1\r\nHost: a\", for=6.6.6.6;host=\"b\r\n\r\n"), TT_H1_E_HOST},
    {SAMPLE("GET / HTTP/1.1\r\nHost:\r\n\r\n"), TT_H1_E_HOST},
    {SAMPLE("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_TARGET},
    {SAMPLE("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_TARGET},
    {SAMPLE("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_TARGET},
    {SAMPLE("GET a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_TARGET},
    {SAMPLE("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), TT_H1_E_TARGET},
    /* found by fuzz_h1_parse: a bad method byte before a lone LF is a bad request-line, whole or split */
    {SAMPLE("G\x06"
            "ET / HTTP/1.1\nHost: a\r\n\r\n"),
     TT_H1_E_REQUEST_LINE},
};

static void parses_valid_requests_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < TT_ARRAY_SIZE(valid_samples); i++) {
        tt_h1_request_t *r = new_req();
        assert_true(parse(valid_samples[i].s, valid_samples[i].n, r) > 0);
        test_free(r);
        check_splits(valid_samples[i].s, valid_samples[i].n);
    }
}

static void refuses_bad_requests_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad_samples); i++) {
        expect_bad(bad_samples[i].in.s, bad_samples[i].in.n, bad_samples[i].e, tt_h1_error_status(bad_samples[i].e));
        check_splits(bad_samples[i].in.s, bad_samples[i].in.n);
    }
}

static void refuses_long_targets_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    size_t len;
    char *b = long_target_request(8193, &len);
    check_splits(b, len);
    test_free(b);
    b = long_target_request(9000, &len);
    check_splits(b, len);
    test_free(b);
    b = long_target_request(8192, &len);
    check_splits(b, len);
    test_free(b);
}

static void refuses_large_field_sections_split_at_every_byte_like_whole(void **state)
{
    (void)state;
    size_t len;
    char *b = many_fields_request(40, 1000, &len);
    check_splits_lim(b, len, &tt_h1_default_limits, 7, 32768);
    test_free(b);
    b = many_fields_request(100, 1, &len);
    check_splits(b, len);
    test_free(b);
}

/* A bare LF that arrives after the field section has outgrown the limit: the whole buffer and every
 * prefix must agree on one verdict (the header promises splits never change the outcome). */
static void agrees_on_a_bare_lf_after_an_oversized_field_section(void **state)
{
    (void)state;
    size_t cap = 34000, n;
    char *b = test_malloc(cap);
    n = (size_t)snprintf(b, cap, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(b + n, 'v', 33000);
    n += 33000;
    memcpy(b + n, "\nY: b\r\n\r\n", 9);
    n += 9;
    check_splits_lim(b, n, &tt_h1_default_limits, 97, 32768);
    test_free(b);
}

static void honours_custom_limits_split_at_every_byte(void **state)
{
    (void)state;
    const tt_h1_limits_t lim = {.max_target = 16, .max_field_bytes = 64, .max_fields = 3};
    static const char t17[] = "GET /aaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char four[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    char big[200];
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: %051d\r\n\r\n", 0);
    check_splits_lim(S(t17), &lim, 1, 0);
    check_splits_lim(S(four), &lim, 1, 0);
    check_splits_lim(big, (size_t)n, &lim, 1, 0);
}

/* ---- chunked content ---- */

typedef struct decoded {
    int64_t rc; /* last return value: >= 0 or TT_BAD */
    tt_h1_error_t error;
    bool done;
    size_t consumed;
    size_t ndata;
    char data[65536];
} decoded_t;

/* Decodes `buf` arriving `step` bytes at a time, each call on the bytes not yet consumed. */
static void decode(const char *buf, size_t len, size_t step, decoded_t *out)
{
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    size_t pos = 0, avail = TT_MIN(step, len);
    out->rc = 0;
    out->ndata = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        tt_str_t data;
        int64_t r = tt_h1_chunked_decode(&d, buf + pos, avail - pos, &data);
        out->rc = r;
        if (r < 0) break;
        assert_true((size_t)r <= avail - pos);
        if (data.n) {
            assert_true(data.p >= buf + pos && data.p + data.n <= buf + pos + (size_t)r);
            assert_true(out->ndata + data.n <= sizeof(out->data));
            memcpy(out->data + out->ndata, data.p, data.n);
            out->ndata += data.n;
        }
        pos += (size_t)r;
        if (d.done) break;
        assert_true(r > 0 || pos == avail); /* 0 only when out of input */
        if (pos == avail) {
            if (avail == len) break;
            avail = TT_MIN(avail + step, len);
        }
    }
    out->error = d.error;
    out->done = d.done;
    out->consumed = pos;
}

static decoded_t *decode_new(void)
{
    decoded_t *d = test_malloc(sizeof(*d));
    assert_non_null(d);
    return d;
}

/* Decodes `in` whole, 1 byte and 3 bytes at a time; all must agree and give `content` and `consumed`. */
static void expect_chunked(const char *in, size_t len, const char *content, size_t clen, size_t consumed)
{
    decoded_t *d = decode_new();
    static const size_t steps[] = {SIZE_MAX, 1, 2, 3, 7};
    for (size_t i = 0; i < TT_ARRAY_SIZE(steps); i++) {
        decode(in, len, TT_MIN(steps[i], len), d);
        if (d->rc < 0) print_error("step %zu: error %s\n", steps[i], tt_h1_error_name(d->error));
        assert_true(d->rc >= 0);
        assert_true(d->done);
        assert_int_equal(d->consumed, consumed);
        assert_int_equal(d->ndata, clen);
        if (clen) assert_memory_equal(d->data, content, clen);
    }
    test_free(d);
}

static void expect_chunked_bad(const char *in, size_t len, tt_h1_error_t e)
{
    decoded_t *d = decode_new();
    static const size_t steps[] = {SIZE_MAX, 1, 5};
    for (size_t i = 0; i < TT_ARRAY_SIZE(steps); i++) {
        decode(in, len, TT_MIN(steps[i], len), d);
        if (d->rc != TT_BAD || d->error != e)
            print_error("input %.*s step %zu: rc %lld error %s, expected %s\n", (int)TT_MIN(len, 60), in, steps[i],
                        (long long)d->rc, tt_h1_error_name(d->error), tt_h1_error_name(e));
        assert_int_equal(d->rc, TT_BAD);
        assert_int_equal(d->error, e);
        assert_false(d->done);
    }
    test_free(d);
}

#define EXPECT_CHUNKED(in, content) expect_chunked(S(in), S(content), sizeof(in) - 1)

static void decodes_chunks_with_upper_and_lower_case_sizes(void **state)
{
    (void)state;
    EXPECT_CHUNKED("5\r\nhello\r\n0\r\n\r\n", "hello");
    EXPECT_CHUNKED("a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
    EXPECT_CHUNKED("1B\r\nabcdefghijklmnopqrstuvwxyz!\r\n1\r\n?\r\n0\r\n\r\n", "abcdefghijklmnopqrstuvwxyz!?");
    EXPECT_CHUNKED("00000000000000f\r\n123456789abcdef\r\n000\r\n\r\n", "123456789abcdef");
    EXPECT_CHUNKED("0\r\n\r\n", "");
}

static void decodes_chunk_extensions(void **state)
{
    (void)state;
    EXPECT_CHUNKED("5;name\r\nhello\r\n0\r\n\r\n", "hello");
    EXPECT_CHUNKED("5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello");
    EXPECT_CHUNKED("5 ; name = value ;x\t=\ty\r\nhello\r\n0\r\n\r\n", "hello");
    EXPECT_CHUNKED("5;a=\"quoted value; \\\"with\\\" escapes\\\\\"\r\nhello\r\n0\r\n\r\n", "hello");
    EXPECT_CHUNKED("5;a=\"\";b=\"x\" ; c\r\nhello\r\n0\r\n\r\n", "hello");
    EXPECT_CHUNKED("5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", "hello");
}

static void decodes_trailers(void **state)
{
    (void)state;
    EXPECT_CHUNKED("5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-Other:\t v \r\n\r\n", "hello");
    EXPECT_CHUNKED("0\r\nA:\r\n\r\n", "");
}

static void stops_at_the_end_of_the_chunked_content(void **state)
{
    (void)state;
    static const char in[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    expect_chunked(S(in), S("abc"), strlen("3\r\nabc\r\n0\r\n\r\n"));

    /* a finished decoder consumes nothing more; the last-chunk line is returned on its own, so that the
     * bytes consumed while tt_h1_chunked_in_trailer() holds are exactly the trailer section */
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    tt_str_t data;
    assert_int_equal(tt_h1_chunked_decode(&d, S("0\r\n\r\n"), &data), 3);
    assert_true(tt_h1_chunked_in_trailer(&d));
    assert_false(d.done);
    assert_int_equal(tt_h1_chunked_decode(&d, S("\r\n"), &data), 2);
    assert_false(tt_h1_chunked_in_trailer(&d));
    assert_true(d.done);
    assert_int_equal(tt_h1_chunked_decode(&d, S("1\r\nx\r\n"), &data), 0);
    assert_int_equal(data.n, 0);
}

/* The bytes consumed while tt_h1_chunked_in_trailer() holds are the trailer section, whatever the feed. */
static void collects_the_trailer_section(void **state)
{
    (void)state;
    static const char in[] = "3\r\nabc\r\n0\r\nA: 1\r\nB: 2\r\n\r\n";
    static const size_t steps[] = {sizeof(in), 1, 2, 5};
    for (size_t s = 0; s < TT_ARRAY_SIZE(steps); s++) {
        tt_h1_chunked_t d;
        tt_h1_chunked_init(&d);
        char tr[64];
        size_t ntr = 0, off = 0;
        while (!d.done && off < sizeof(in) - 1) {
            size_t len = TT_MIN(steps[s], sizeof(in) - 1 - off);
            tt_str_t data;
            bool in_trailer = tt_h1_chunked_in_trailer(&d);
            int64_t n = tt_h1_chunked_decode(&d, in + off, len, &data);
            assert_true(n >= 0);
            if (in_trailer) {
                memcpy(tr + ntr, in + off, (size_t)n);
                ntr += (size_t)n;
            }
            off += (size_t)n;
        }
        assert_true(d.done);
        assert_int_equal(ntr, strlen("A: 1\r\nB: 2\r\n\r\n"));
        assert_memory_equal(tr, "A: 1\r\nB: 2\r\n\r\n", ntr);
    }
}

static void returns_chunk_data_across_calls(void **state)
{
    (void)state;
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    tt_str_t data;
    static const char a[] = "a\r\n01234";
    static const char b[] = "56789\r\n0\r\n\r\n";
    assert_int_equal(tt_h1_chunked_decode(&d, S(a), &data), 8);
    assert_view(data, "01234");
    assert_int_equal(d.remaining, 5);
    assert_false(d.done);
    assert_int_equal(tt_h1_chunked_decode(&d, S(""), &data), 0);
    assert_int_equal(data.n, 0);
    /* one data run per call: the rest comes on the next call */
    assert_int_equal(tt_h1_chunked_decode(&d, S(b), &data), 5);
    assert_view(data, "56789");
    assert_false(d.done);
    assert_int_equal(tt_h1_chunked_decode(&d, b + 5, sizeof(b) - 1 - 5, &data), 5); /* CRLF and "0\r\n" */
    assert_int_equal(data.n, 0);
    assert_false(d.done);
    assert_int_equal(tt_h1_chunked_decode(&d, b + 10, sizeof(b) - 1 - 10, &data), 2);
    assert_true(d.done);
    assert_int_equal(d.error, TT_H1_OK);
}

static void decodes_one_byte_at_a_time_like_whole(void **state)
{
    (void)state;
    static const char in[] = "4;ext=\"v\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: x\r\n\r\n";
    decoded_t *whole = decode_new(), *one = decode_new();
    decode(S(in), sizeof(in) - 1, whole);
    decode(S(in), 1, one);
    assert_true(whole->done);
    assert_true(one->done);
    assert_int_equal(whole->consumed, sizeof(in) - 1);
    assert_int_equal(one->consumed, whole->consumed);
    assert_int_equal(one->ndata, whole->ndata);
    assert_int_equal(whole->ndata, 23);
    assert_memory_equal(one->data, whole->data, whole->ndata);
    assert_memory_equal(whole->data, "Wikipedia in\r\n\r\nchunks.", 23);
    test_free(whole);
    test_free(one);
}

static void refuses_bad_chunk_sizes(void **state)
{
    (void)state;
    expect_chunked_bad(S("\r\nhello\r\n0\r\n\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("g\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("5g\r\nhello\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("-5\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("0x5\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S(" 5\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("5\nhello\r\n"), TT_H1_E_CHUNK_SIZE);
    /* 16 hex digits, even with leading zeros, could overflow: refused */
    expect_chunked_bad(S("0000000000000005\r\nhello\r\n0\r\n\r\n"), TT_H1_E_CHUNK_SIZE);
    expect_chunked_bad(S("ffffffffffffffff\r\n"), TT_H1_E_CHUNK_SIZE);
    /* the size of the next chunk is validated too */
    expect_chunked_bad(S("1\r\nx\r\nz\r\n"), TT_H1_E_CHUNK_SIZE);
}

static void refuses_bad_chunk_extensions(void **state)
{
    (void)state;
    expect_chunked_bad(S("5 \r\nhello\r\n0\r\n\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5\t\r\nhello\r\n0\r\n\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;=v\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a \r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=b \r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=b c\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=\"x\"y\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=\"unterminated\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=\"x\x01\"\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a=\"\\\x01\"\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5;a(b\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
    expect_chunked_bad(S("5 x\r\nhello\r\n"), TT_H1_E_CHUNK_EXT);
}

static void refuses_chunk_data_without_crlf(void **state)
{
    (void)state;
    expect_chunked_bad(S("5\r\nhelloX\r\n0\r\n\r\n"), TT_H1_E_CHUNK_DATA);
    expect_chunked_bad(S("5\r\nhello\rX0\r\n\r\n"), TT_H1_E_CHUNK_DATA);
    expect_chunked_bad(S("5\r\nhello\n0\r\n\r\n"), TT_H1_E_CHUNK_DATA);
    expect_chunked_bad(S("3\r\nhello\r\n0\r\n\r\n"), TT_H1_E_CHUNK_DATA);
}

static void refuses_bare_cr_in_chunk_framing(void **state)
{
    (void)state;
    expect_chunked_bad(S("5\rhello\r\n0\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_chunked_bad(S("5;a=b\rX"), TT_H1_E_BARE_CR);
    expect_chunked_bad(S("0\r\nX: a\rb\r\n\r\n"), TT_H1_E_BARE_CR);
    expect_chunked_bad(S("0\r\n\rX"), TT_H1_E_BARE_CR);
}

static void refuses_oversized_chunk_size_lines(void **state)
{
    (void)state;
    char *b = test_malloc(8192);
    /* 4000-byte extension: accepted */
    size_t n = 0;
    memcpy(b, "5;x=", 4);
    n = 4;
    memset(b + n, 'v', 3990);
    n += 3990;
    memcpy(b + n, "\r\nhello\r\n0\r\n\r\n", 14);
    n += 14;
    expect_chunked(b, n, S("hello"), n);
    /* 5000 bytes: refused */
    n = 4;
    memset(b + n, 'v', 5000);
    n += 5000;
    memcpy(b + n, "\r\nhello\r\n0\r\n\r\n", 14);
    n += 14;
    expect_chunked_bad(b, n, TT_H1_E_CHUNK_EXT);
    /* refused before the line end arrives */
    expect_chunked_bad(b, TT_H1_MAX_CHUNK_LINE + 10, TT_H1_E_CHUNK_EXT);
    /* the limit is per line: many lines under it are fine */
    n = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(b + n, "1;x=", 4);
        memset(b + n + 4, 'v', 1500);
        memcpy(b + n + 1504, "\r\nz\r\n", 5);
        n += 1509;
    }
    memcpy(b + n, "0\r\n\r\n", 5);
    n += 5;
    expect_chunked(b, n, S("zzzz"), n);
    test_free(b);
}

static void refuses_oversized_trailer_sections(void **state)
{
    (void)state;
    size_t cap = 40000, n;
    char *b = test_malloc(cap);
    /* 30 lines of 1002 bytes: 30060 bytes, accepted */
    memcpy(b, "0\r\n", 3);
    n = 3;
    for (int i = 0; i < 30; i++) {
        memcpy(b + n, "T:", 2);
        memset(b + n + 2, 'v', 998);
        memcpy(b + n + 1000, "\r\n", 2);
        n += 1002;
    }
    memcpy(b + n, "\r\n", 2);
    n += 2;
    expect_chunked(b, n, S(""), n);
    /* 34 lines: 34068 bytes, refused */
    n = 3;
    for (int i = 0; i < 34; i++) {
        memcpy(b + n, "T:", 2);
        memset(b + n + 2, 'v', 998);
        memcpy(b + n + 1000, "\r\n", 2);
        n += 1002;
    }
    memcpy(b + n, "\r\n", 2);
    n += 2;
    expect_chunked_bad(b, n, TT_H1_E_TRAILER);
    test_free(b);
}

static void refuses_bad_trailer_fields(void **state)
{
    (void)state;
    expect_chunked_bad(S("0\r\nX Sum: a\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\n: a\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\nX(: a\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\nNoColon\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\n folded: a\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\nX: a\x01\r\n\r\n"), TT_H1_E_TRAILER);
    expect_chunked_bad(S("0\r\nX: a\0\r\n\r\n"), TT_H1_E_TRAILER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_simple_get),
        cmocka_unit_test(recognises_every_known_method),
        cmocka_unit_test(trims_optional_whitespace_around_field_values),
        cmocka_unit_test(reads_content_length),
        cmocka_unit_test(refuses_identical_repeated_content_lengths),
        cmocka_unit_test(reads_chunked_and_expect_continue),
        cmocka_unit_test(collects_connection_tokens),
        cmocka_unit_test(indexes_the_known_fields),
        cmocka_unit_test(skips_empty_lines_before_the_request_line),
        cmocka_unit_test(bounds_the_empty_lines_before_the_request_line),
        cmocka_unit_test(accepts_absolute_and_asterisk_form_targets),
        cmocka_unit_test(refuses_targets_the_method_does_not_take),
        cmocka_unit_test(checks_the_host_field),
        cmocka_unit_test(refuses_field_lines_over_the_line_limit),
        cmocka_unit_test(accepts_http10_without_host),
        cmocka_unit_test(returns_only_the_first_of_pipelined_requests),
        cmocka_unit_test(waits_for_the_rest_of_an_incomplete_head),
        cmocka_unit_test(maps_every_error_to_its_status_and_name),
        cmocka_unit_test(refuses_content_length_with_transfer_encoding),
        cmocka_unit_test(refuses_transfer_codings_other_than_one_chunked),
        cmocka_unit_test(refuses_bad_content_lengths),
        cmocka_unit_test(refuses_obs_fold),
        cmocka_unit_test(refuses_bare_cr),
        cmocka_unit_test(refuses_bare_lf),
        cmocka_unit_test(refuses_whitespace_before_the_colon),
        cmocka_unit_test(refuses_control_bytes_in_field_values),
        cmocka_unit_test(refuses_bad_field_names),
        cmocka_unit_test(refuses_malformed_request_lines),
        cmocka_unit_test(refuses_malformed_versions),
        cmocka_unit_test(refuses_versions_other_than_http1_with_505),
        cmocka_unit_test(refuses_targets_longer_than_8192_bytes_with_414),
        cmocka_unit_test(refuses_field_sections_over_32768_bytes_with_431),
        cmocka_unit_test(refuses_more_than_100_fields_with_431),
        cmocka_unit_test(refuses_http11_without_exactly_one_host),
        cmocka_unit_test(refuses_expectations_other_than_100_continue_with_417),
        cmocka_unit_test(honours_custom_limits),
        cmocka_unit_test(parses_valid_requests_split_at_every_byte_like_whole),
        cmocka_unit_test(refuses_bad_requests_split_at_every_byte_like_whole),
        cmocka_unit_test(refuses_long_targets_split_at_every_byte_like_whole),
        cmocka_unit_test(refuses_large_field_sections_split_at_every_byte_like_whole),
        cmocka_unit_test(agrees_on_a_bare_lf_after_an_oversized_field_section),
        cmocka_unit_test(honours_custom_limits_split_at_every_byte),
        cmocka_unit_test(decodes_chunks_with_upper_and_lower_case_sizes),
        cmocka_unit_test(decodes_chunk_extensions),
        cmocka_unit_test(decodes_trailers),
        cmocka_unit_test(stops_at_the_end_of_the_chunked_content),
        cmocka_unit_test(returns_chunk_data_across_calls),
        cmocka_unit_test(collects_the_trailer_section),
        cmocka_unit_test(decodes_one_byte_at_a_time_like_whole),
        cmocka_unit_test(refuses_bad_chunk_sizes),
        cmocka_unit_test(refuses_bad_chunk_extensions),
        cmocka_unit_test(refuses_chunk_data_without_crlf),
        cmocka_unit_test(refuses_bare_cr_in_chunk_framing),
        cmocka_unit_test(refuses_oversized_chunk_size_lines),
        cmocka_unit_test(refuses_oversized_trailer_sections),
        cmocka_unit_test(refuses_bad_trailer_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
