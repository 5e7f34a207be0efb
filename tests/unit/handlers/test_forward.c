/* test_forward.c -- what the proxy passes on (src/handlers/forward.c): the exact request head sent upstream for
 * HTTP/1.0, HTTP/1.1 and HTTP/2 requests from trusted and untrusted peers, the response fields, the trailer filter */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "handlers/forward.h"

#include <arpa/inet.h>

typedef struct fixture {
    tt_bufpool_t bufs;
    tt_buf_t out;
    tt_h1_request_t head;
    tt_req_t rq;
    tt_addr_t peer;
    tt_upstream_server_t server;
    tt_upstream_conf_t uc;
    tt_cidr_t trusted[2];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = test_calloc(1, sizeof(*f));
    tt_bufpool_init(&f->bufs, 4096, 4);
    f->server.name = "10.0.0.5:8080";
    f->uc.servers = &f->server;
    f->uc.nservers = 1;
    const char *why;
    assert_int_equal(tt_cidr_parse(TT_LIT("10.0.0.0/8"), &f->trusted[0], &why), 0);
    assert_int_equal(tt_cidr_parse(TT_LIT("2001:db8::/32"), &f->trusted[1], &why), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tt_buf_release(&f->out, &f->bufs);
    tt_bufpool_dispose(&f->bufs);
    test_free(f);
    return 0;
}

static void set_peer(fixture_t *f, const char *ip)
{
    assert_true(tt_addr_parse_ip(ip, strlen(ip), &f->peer));
}

/* Parses `raw` (an HTTP/1.x head) into the request the proxy would see from `peer`. */
static void request(fixture_t *f, const char *raw, const char *peer)
{
    size_t n = strlen(raw);
    assert_int_equal(tt_h1_parse_request(raw, n, 0, &tt_h1_default_limits, &f->head), (int)n);
    set_peer(f, peer);
    memset(&f->rq, 0, sizeof(f->rq));
    f->rq.head = &f->head;
    f->rq.major_version = 1;
    f->rq.minor_version = f->head.minor_version;
    f->rq.authority = f->head.authority;
    f->rq.content_length = f->head.chunked ? -1 : f->head.content_length;
    f->rq.has_body = f->head.chunked || f->head.content_length > 0;
    f->rq.peer = &f->peer;
    const char *t = f->head.target.p, *q = memchr(t, '?', f->head.target.n);
    if (f->head.target_form == TT_TARGET_ABSOLUTE) t = f->head.authority.p + f->head.authority.n;
    f->rq.path = tt_str(t, q ? (size_t)(q - t) : (size_t)(f->head.target.p + f->head.target.n - t));
    if (f->rq.path.n == 0) f->rq.path = TT_STR("/");
    f->rq.query = q ? tt_str(q + 1, (size_t)(f->head.target.p + f->head.target.n - q - 1)) : TT_STR_NULL;
}

static void expect_head(fixture_t *f, bool chunked_up, const char *want)
{
    tt_buf_release(&f->out, &f->bufs);
    tt_forward_request_head(&f->rq, &f->uc, chunked_up, &f->out, &f->bufs);
    tt_str_t got = tt_str(tt_buf_data(&f->out), f->out.len);
    if (got.n != strlen(want) || memcmp(got.p, want, got.n) != 0)
        print_error("got:\n%.*s\nwant:\n%s\n", (int)got.n, got.p, want);
    assert_int_equal(got.n, strlen(want));
    assert_memory_equal(got.p, want, got.n);
}

static void writes_host_first_whatever_connection_names(void **state)
{
    fixture_t *f = *state;
    request(f,
            "GET /a?b HTTP/1.1\r\nX-A: 1\r\nHost: www.example.test\r\nConnection: Host, X-A, Via, X-Forwarded-For\r\n"
            "Keep-Alive: timeout=5\r\nX-B: 2\r\n\r\n",
            "192.0.2.7");
    expect_head(
        f, false,
        "GET /a?b HTTP/1.1\r\nHost: www.example.test\r\nX-B: 2\r\nVia: 1.1 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
        "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: www.example.test\r\n\r\n");
}

static void takes_the_absolute_form_authority_as_host(void **state)
{
    fixture_t *f = *state;
    request(f, "GET http://real.test:81/p?q HTTP/1.1\r\nHost: other.test\r\n\r\n", "192.0.2.7");
    expect_head(f, false,
                "GET /p?q HTTP/1.1\r\nHost: real.test:81\r\nVia: 1.1 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
                "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: real.test:81\r\n\r\n");
    /* an HTTP/1.0 request without Host names the server; the upstream's `host` wins over both */
    request(f, "POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\n", "192.0.2.7");
    expect_head(f, false,
                "POST /x HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nVia: 1.0 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
                "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nContent-Length: 3\r\n\r\n");
    f->uc.host = "backend.internal";
    request(f, "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n", "192.0.2.7");
    expect_head(f, true,
                "GET / HTTP/1.1\r\nHost: backend.internal\r\nVia: 1.1 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
                "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test\r\n"
                "Transfer-Encoding: chunked\r\n\r\n");
}

static void replaces_what_an_untrusted_peer_claims(void **state)
{
    fixture_t *f = *state;
    f->uc.forwarded = true;
    f->uc.trusted = f->trusted;
    f->uc.ntrusted = 2;
    static const char claims[] = "GET / HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
                                 "X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoof.test\r\n"
                                 "Forwarded: for=6.6.6.6\r\nVia: 1.1 edge\r\n\r\n";
    request(f, claims, "192.0.2.7");
    expect_head(f, false,
                "GET / HTTP/1.1\r\nHost: h.test\r\nVia: 1.1 edge, 1.1 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
                "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h.test\r\n"
                "Forwarded: for=192.0.2.7;proto=http;host=\"h.test\"\r\n\r\n");
    /* from a trusted peer the same claims are kept and appended to */
    request(f, claims, "10.1.2.3");
    expect_head(f, false,
                "GET / HTTP/1.1\r\nHost: h.test\r\nVia: 1.1 edge, 1.1 tether\r\nX-Forwarded-For: 6.6.6.6, 10.1.2.3\r\n"
                "X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: spoof.test\r\n"
                "Forwarded: for=6.6.6.6, for=10.1.2.3;proto=http;host=\"h.test\"\r\n\r\n");
}

static void finds_the_real_ip_through_trusted_hops(void **state)
{
    fixture_t *f = *state;
    f->uc.trusted = f->trusted;
    f->uc.ntrusted = 2;
    static const struct {
        const char *fields, *real;
    } cases[] = {
        {"X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\nX-Forwarded-For: 10.9.9.9\r\n", "203.0.113.9"},
        {"X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.0.0.1\r\n", "203.0.113.9"},
        {"X-Forwarded-For: 10.0.0.2,10.0.0.1\r\n", "10.0.0.2"}, /* all trusted: the farthest */
        {"X-Forwarded-For: unknown, 10.0.0.1\r\n", "10.0.0.1"}, /* not an address: the last that was */
        {"X-Forwarded-For: 2001:db8::1, 2001:db9::5\r\n", "2001:db9::5"},
        {"X-Real-IP: 203.0.113.50\r\n", "203.0.113.50"}, /* no X-Forwarded-For: the peer's */
        {"X-Real-IP: nonsense\r\n", "10.1.2.3"},
        {"", "10.1.2.3"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        char raw[512];
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n", cases[i].fields);
        request(f, raw, "10.1.2.3");
        tt_buf_release(&f->out, &f->bufs);
        tt_forward_request_head(&f->rq, &f->uc, false, &f->out, &f->bufs);
        char want[128];
        snprintf(want, sizeof(want), "\r\nX-Real-IP: %s\r\n", cases[i].real);
        tt_str_t got = tt_str(tt_buf_data(&f->out), f->out.len);
        if (memmem(got.p, got.n, want, strlen(want)) == NULL) print_error("case %zu:\n%.*s\n", i, (int)got.n, got.p);
        assert_non_null(memmem(got.p, got.n, want, strlen(want)));
    }
}

static void joins_http2_cookies_and_names_version_2(void **state)
{
    fixture_t *f = *state;
    f->uc.forwarded = true;
    request(f, "GET / HTTP/1.1\r\nhost: h2.test\r\ncookie: a=1\r\nx-a: b\r\ncookie: b=2\r\ncookie:\r\n\r\n",
            "2001:db8::7");
    f->rq.major_version = 2;
    f->rq.tls = true;
    expect_head(f, false,
                "GET / HTTP/1.1\r\nHost: h2.test\r\nx-a: b\r\nCookie: a=1; b=2\r\nVia: 2 tether\r\n"
                "X-Forwarded-For: 2001:db8::7\r\nX-Real-IP: 2001:db8::7\r\nX-Forwarded-Proto: https\r\n"
                "X-Forwarded-Host: h2.test\r\nForwarded: for=\"[2001:db8::7]\";proto=https;host=\"h2.test\"\r\n\r\n");
    /* HTTP/1.1 cookie lines pass as they came (as nginx passes them) */
    request(f, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n", "192.0.2.7");
    f->uc.forwarded = false;
    expect_head(
        f, false,
        "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\nVia: 1.1 tether\r\nX-Forwarded-For: 192.0.2.7\r\n"
        "X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n");
}

static void filters_trailers(void **state)
{
    fixture_t *f = *state;
    static const char in[] = "Content-Length: 5\r\nX-Checksum:abc\r\nTransfer-Encoding: chunked\nHost: evil\r\n"
                             "Authorization: Bearer x\r\nset-cookie: s=1\r\nServer-Timing: db;dur=53  \r\n"
                             "Content-Type: text/html\r\nTrailer: X\r\nGrpc-Status: 0\r\n";
    tt_buf_release(&f->out, &f->bufs);
    tt_forward_trailers(tt_str(in, sizeof(in) - 1), &f->out, &f->bufs);
    static const char want[] = "X-Checksum: abc\r\nServer-Timing: db;dur=53\r\nGrpc-Status: 0\r\n";
    assert_int_equal(f->out.len, sizeof(want) - 1);
    assert_memory_equal(tt_buf_data(&f->out), want, sizeof(want) - 1);
    assert_false(tt_forward_trailer_allowed(TT_STR("CONTENT-LENGTH")));
    assert_false(tt_forward_trailer_allowed(TT_STR(":status")));
    assert_false(tt_forward_trailer_allowed(TT_STR("")));
    assert_true(tt_forward_trailer_allowed(TT_STR("x-trailer")));
}

static void passes_response_fields_with_its_via(void **state)
{
    fixture_t *f = *state;
    static const char raw[] = "HTTP/1.0 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nDate: x\r\nServer: o\r\n"
                              "Content-Length: 3\r\nX-Kept: 2\r\nVia: 1.1 cache\r\n\r\n";
    tt_h1_response_t *res = test_malloc(sizeof(*res));
    assert_int_equal(tt_h1_parse_response(raw, sizeof(raw) - 1, 0, &tt_h1_default_limits, res), sizeof(raw) - 1);
    tt_buf_release(&f->out, &f->bufs);
    tt_forward_response_fields(res, &f->out, &f->bufs);
    static const char want[] = "X-Kept: 2\r\nVia: 1.1 cache\r\nVia: 1.0 tether\r\n";
    assert_int_equal(f->out.len, sizeof(want) - 1);
    assert_memory_equal(tt_buf_data(&f->out), want, sizeof(want) - 1);
    test_free(res);
}

/* Connection options are read once per head (up to eight kept; a head with more is read again per field): every
 * field any of them names is dropped, whichever Connection field lists it and however it is cased */
static void drops_every_field_the_connection_options_name(void **state)
{
    fixture_t *f = *state;
    static const char few[] = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nX-B: 2\r\n"
                              "connection: x-b\r\nX-C: 3\r\n\r\n";
    static const char many[] = "HTTP/1.1 200 OK\r\nConnection: o1, o2, o3, o4, o5, o6, o7, o8, o9\r\n"
                               "Connection: ,X-Ten ,\r\nO9: 1\r\nO1: 1\r\nX-TEN: 1\r\nX-C: 3\r\n\r\n";
    const char *heads[] = {few, many};
    const size_t lens[] = {sizeof(few) - 1, sizeof(many) - 1};
    tt_h1_response_t *res = test_malloc(sizeof(*res));
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(tt_h1_parse_response(heads[i], lens[i], 0, &tt_h1_default_limits, res), (int)lens[i]);
        tt_buf_release(&f->out, &f->bufs);
        tt_forward_response_fields(res, &f->out, &f->bufs);
        static const char want[] = "X-C: 3\r\nVia: 1.1 tether\r\n";
        assert_int_equal(f->out.len, sizeof(want) - 1);
        assert_memory_equal(tt_buf_data(&f->out), want, sizeof(want) - 1);
    }
    test_free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writes_host_first_whatever_connection_names, setup, teardown),
        cmocka_unit_test_setup_teardown(takes_the_absolute_form_authority_as_host, setup, teardown),
        cmocka_unit_test_setup_teardown(replaces_what_an_untrusted_peer_claims, setup, teardown),
        cmocka_unit_test_setup_teardown(finds_the_real_ip_through_trusted_hops, setup, teardown),
        cmocka_unit_test_setup_teardown(joins_http2_cookies_and_names_version_2, setup, teardown),
        cmocka_unit_test_setup_teardown(filters_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(passes_response_fields_with_its_via, setup, teardown),
        cmocka_unit_test_setup_teardown(drops_every_field_the_connection_options_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
