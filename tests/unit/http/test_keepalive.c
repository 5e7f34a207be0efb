/* test_keepalive.c -- the persistence policy (src/http/keepalive.c): the decision as a table over every input,
 * its precedence, the Keep-Alive max= value, the idle timeout under pressure and the timeout buckets */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http/keepalive.h"
#include "http/h1_parse.h"

#define CLOSE TT_H1_CONN_CLOSE
#define KA    TT_H1_CONN_KEEP_ALIVE
#define UPG   TT_H1_CONN_UPGRADE

/* ---- tt_keepalive_decide ---- */

typedef struct row {
    int minor;
    unsigned tokens;
    bool close_delimited, error_close, draining;
    uint64_t idle_ms;
    uint32_t max_requests, requests;
    uint64_t max_lifetime_ms, age_ms;
    tt_close_reason_t want;
    bool unread_body; /* last, so that the rows without it need not say false */
} row_t;

/* Each row written out by hand; the exhaustive test below covers the remaining combinations. */
static const row_t rows[] = {
    /* persistent by default in HTTP/1.1 */
    {1, 0, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_NONE},
    {1, KA, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_NONE},
    {1, UPG, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_NONE},
    {1, KA | UPG, false, false, false, 5000, 0, 4000000000u, 0, UINT64_MAX, TT_CLOSE_NONE},
    /* HTTP/1.0 persists only with keep-alive */
    {0, 0, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    {0, UPG, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    {0, KA, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_NONE},
    /* close wins over keep-alive, in either version */
    {1, CLOSE, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    {1, CLOSE | KA, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    {0, CLOSE | KA, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    /* a close-delimited body ends the connection */
    {1, 0, true, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    {0, KA, true, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE},
    /* bad_request first of all */
    {1, 0, false, true, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_BAD_REQUEST},
    {1, CLOSE, true, true, true, 0, 1, 5, 1, 5, TT_CLOSE_BAD_REQUEST},
    {0, 0, false, true, true, 5000, 1000, 1, 3600000, 0, TT_CLOSE_BAD_REQUEST},
    /* shutdown next */
    {1, 0, false, false, true, 5000, 1000, 1, 3600000, 0, TT_CLOSE_SHUTDOWN},
    {1, CLOSE, true, false, true, 0, 1, 5, 1, 5, TT_CLOSE_SHUTDOWN},
    {0, 0, false, false, true, 5000, 1000, 1, 3600000, 0, TT_CLOSE_SHUTDOWN},
    /* client_close before idle_timeout, max_requests and max_lifetime */
    {1, CLOSE, false, false, false, 0, 1, 5, 1, 5, TT_CLOSE_CLIENT_CLOSE},
    {0, 0, false, false, false, 0, 1, 5, 1, 5, TT_CLOSE_CLIENT_CLOSE},
    {1, 0, true, false, false, 0, 1, 5, 1, 5, TT_CLOSE_CLIENT_CLOSE},
    /* idle timeout 0 turns keep-alive off, before the request and lifetime limits */
    {1, 0, false, false, false, 0, 1000, 1, 3600000, 0, TT_CLOSE_IDLE_TIMEOUT},
    {0, KA, false, false, false, 0, 1000, 1, 3600000, 0, TT_CLOSE_IDLE_TIMEOUT},
    {1, 0, false, false, false, 0, 1, 5, 1, 5, TT_CLOSE_IDLE_TIMEOUT},
    /* max_requests: this request included */
    {1, 0, false, false, false, 5000, 10, 9, 3600000, 0, TT_CLOSE_NONE},
    {1, 0, false, false, false, 5000, 10, 10, 3600000, 0, TT_CLOSE_MAX_REQUESTS},
    {1, 0, false, false, false, 5000, 10, 11, 3600000, 0, TT_CLOSE_MAX_REQUESTS},
    {1, 0, false, false, false, 5000, 1, 1, 3600000, 0, TT_CLOSE_MAX_REQUESTS},
    {1, 0, false, false, false, 5000, 0, UINT32_MAX, 3600000, 0, TT_CLOSE_NONE},
    /* max_requests before max_lifetime */
    {1, 0, false, false, false, 5000, 10, 10, 60000, 60000, TT_CLOSE_MAX_REQUESTS},
    /* max_lifetime: at or past it */
    {1, 0, false, false, false, 5000, 10, 9, 60000, 59999, TT_CLOSE_NONE},
    {1, 0, false, false, false, 5000, 10, 9, 60000, 60000, TT_CLOSE_MAX_LIFETIME},
    {1, 0, false, false, false, 5000, 10, 9, 60000, 60001, TT_CLOSE_MAX_LIFETIME},
    {0, KA, false, false, false, 5000, 0, 9, 60000, 60000, TT_CLOSE_MAX_LIFETIME},
    {1, 0, false, false, false, 5000, 10, 9, 0, UINT64_MAX, TT_CLOSE_NONE},
    /* chunked content still unchecked as the response goes out: after the client's own wish, before the limits */
    {1, 0, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_UNREAD_BODY, true},
    {1, KA, false, false, false, 5000, 10, 10, 60000, 60000, TT_CLOSE_UNREAD_BODY, true},
    {1, 0, false, false, false, 0, 1000, 1, 3600000, 0, TT_CLOSE_UNREAD_BODY, true},
    {1, CLOSE, false, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE, true},
    {1, 0, true, false, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_CLIENT_CLOSE, true},
    {1, 0, false, true, false, 5000, 1000, 1, 3600000, 0, TT_CLOSE_BAD_REQUEST, true},
    {1, 0, false, false, true, 5000, 1000, 1, 3600000, 0, TT_CLOSE_SHUTDOWN, true},
};

static tt_close_reason_t decide_row(const row_t *r)
{
    tt_ka_policy_t p = {
        .idle_timeout_ms = r->idle_ms, .max_requests = r->max_requests, .max_lifetime_ms = r->max_lifetime_ms};
    tt_ka_state_t s = {.minor_version = r->minor,
                       .conn_tokens = r->tokens,
                       .close_delimited = r->close_delimited,
                       .unread_body = r->unread_body,
                       .error_close = r->error_close,
                       .draining = r->draining,
                       .requests = r->requests,
                       .age_ms = r->age_ms};
    return tt_keepalive_decide(&p, &s);
}

static void decides_each_row_of_the_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < TT_ARRAY_SIZE(rows); i++) {
        tt_close_reason_t got = decide_row(&rows[i]);
        if (got != rows[i].want)
            print_error("row %zu: got %s, want %s\n", i, tt_close_reason_name(got), tt_close_reason_name(rows[i].want));
        assert_int_equal(got, rows[i].want);
    }
}

/* The documented checklist, in its order (keepalive.h): the oracle for the exhaustive test. */
static tt_close_reason_t documented(const row_t *r)
{
    if (r->error_close) return TT_CLOSE_BAD_REQUEST;
    if (r->draining) return TT_CLOSE_SHUTDOWN;
    if (r->tokens & CLOSE) return TT_CLOSE_CLIENT_CLOSE;
    if (r->minor == 0 && !(r->tokens & KA)) return TT_CLOSE_CLIENT_CLOSE;
    if (r->close_delimited) return TT_CLOSE_CLIENT_CLOSE;
    if (r->unread_body) return TT_CLOSE_UNREAD_BODY;
    if (r->idle_ms == 0) return TT_CLOSE_IDLE_TIMEOUT;
    if (r->max_requests != 0 && r->requests >= r->max_requests) return TT_CLOSE_MAX_REQUESTS;
    if (r->max_lifetime_ms != 0 && r->age_ms >= r->max_lifetime_ms) return TT_CLOSE_MAX_LIFETIME;
    return TT_CLOSE_NONE;
}

static void decides_every_combination_in_the_documented_order(void **state)
{
    (void)state;
    static const int minors[] = {0, 1};
    static const unsigned tokens[] = {0, CLOSE, KA, UPG, CLOSE | KA, KA | UPG, CLOSE | KA | UPG};
    static const uint64_t idles[] = {0, 1, 5000};
    static const uint32_t maxreqs[] = {0, 1, 10};
    static const uint32_t reqs[] = {1, 9, 10, 11};
    static const uint64_t lifetimes[] = {0, 60000};
    static const uint64_t ages[] = {0, 59999, 60000, 60001};
    size_t n = 0, per_reason[TT_CLOSE__COUNT] = {0};
    for (size_t a = 0; a < TT_ARRAY_SIZE(minors); a++)
        for (size_t b = 0; b < TT_ARRAY_SIZE(tokens); b++)
            for (int cd = 0; cd < 2; cd++)
                for (int ec = 0; ec < 4; ec++) /* bit 0: error_close, bit 1: unread_body */
                    for (int dr = 0; dr < 2; dr++)
                        for (size_t c = 0; c < TT_ARRAY_SIZE(idles); c++)
                            for (size_t d = 0; d < TT_ARRAY_SIZE(maxreqs); d++)
                                for (size_t e = 0; e < TT_ARRAY_SIZE(reqs); e++)
                                    for (size_t f = 0; f < TT_ARRAY_SIZE(lifetimes); f++)
                                        for (size_t g = 0; g < TT_ARRAY_SIZE(ages); g++) {
                                            row_t r = {minors[a],     tokens[b],  cd,      ec & 1,       dr,
                                                       idles[c],      maxreqs[d], reqs[e], lifetimes[f], ages[g],
                                                       TT_CLOSE_NONE, ec & 2};
                                            tt_close_reason_t want = documented(&r), got = decide_row(&r);
                                            if (got != want)
                                                print_error("minor %d tokens %u cd %d ec %d dr %d idle %llu max %u "
                                                            "req %u life %llu age %llu: got %s want %s\n",
                                                            r.minor, r.tokens, cd, ec, dr,
                                                            (unsigned long long)r.idle_ms, r.max_requests, r.requests,
                                                            (unsigned long long)r.max_lifetime_ms,
                                                            (unsigned long long)r.age_ms, tt_close_reason_name(got),
                                                            tt_close_reason_name(want));
                                            assert_int_equal(got, want);
                                            per_reason[got]++;
                                            n++;
                                        }
    assert_int_equal(n, 2 * 7 * 2 * 4 * 2 * 3 * 3 * 4 * 2 * 4);
    /* every reason the policy can give was reached */
    assert_true(per_reason[TT_CLOSE_NONE] > 0);
    assert_true(per_reason[TT_CLOSE_BAD_REQUEST] > 0);
    assert_true(per_reason[TT_CLOSE_SHUTDOWN] > 0);
    assert_true(per_reason[TT_CLOSE_CLIENT_CLOSE] > 0);
    assert_true(per_reason[TT_CLOSE_IDLE_TIMEOUT] > 0);
    assert_true(per_reason[TT_CLOSE_MAX_REQUESTS] > 0);
    assert_true(per_reason[TT_CLOSE_MAX_LIFETIME] > 0);
    assert_true(per_reason[TT_CLOSE_UNREAD_BODY] > 0);
    /* and nothing else */
    assert_int_equal(per_reason[TT_CLOSE_HEADER_TIMEOUT] + per_reason[TT_CLOSE_EVICTED] + per_reason[TT_CLOSE_RESET],
                     0);
}

static void names_the_reasons_it_returns(void **state)
{
    (void)state;
    assert_string_equal(tt_close_reason_name(TT_CLOSE_NONE), "keep");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_CLIENT_CLOSE), "client_close");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_IDLE_TIMEOUT), "idle_timeout");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_MAX_REQUESTS), "max_requests");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_MAX_LIFETIME), "max_lifetime");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_BAD_REQUEST), "bad_request");
    assert_string_equal(tt_close_reason_name(TT_CLOSE_SHUTDOWN), "shutdown");
}

/* ---- tt_keepalive_left ---- */

static void counts_the_requests_left(void **state)
{
    (void)state;
    tt_ka_policy_t p = {.idle_timeout_ms = 5000, .max_requests = 10};
    assert_int_equal(tt_keepalive_left(&p, 1), 9);
    assert_int_equal(tt_keepalive_left(&p, 3), 7);
    assert_int_equal(tt_keepalive_left(&p, 9), 1);
    assert_int_equal(tt_keepalive_left(&p, 10), 0);
    assert_int_equal(tt_keepalive_left(&p, 11), 0);
    assert_int_equal(tt_keepalive_left(&p, UINT32_MAX), 0);
    p.max_requests = 1;
    assert_int_equal(tt_keepalive_left(&p, 1), 0);
    p.max_requests = 0;
    assert_int_equal(tt_keepalive_left(&p, 1), UINT32_MAX);
    assert_int_equal(tt_keepalive_left(&p, 5000000), UINT32_MAX);
}

/* ---- tt_keepalive_pressure_idle ---- */

static void keeps_the_idle_timeout_up_to_75_percent(void **state)
{
    (void)state;
    assert_int_equal(tt_keepalive_pressure_idle(5000, 0, 100), 5000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 50, 100), 5000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 75, 100), 5000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 3, 4), 5000);
    assert_int_equal(tt_keepalive_pressure_idle(60000, 7500, 10000), 60000);
}

static void shrinks_the_idle_timeout_linearly_to_one_second(void **state)
{
    (void)state;
    assert_int_equal(tt_keepalive_pressure_idle(5000, 76, 100), 4840);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 80, 100), 4200);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 90, 100), 2600);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 99, 100), 1160);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 100, 100), 1000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 150, 100), 1000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, UINT32_MAX, 100), 1000);
    assert_int_equal(tt_keepalive_pressure_idle(61000, 8750, 10000), 31000);
    /* monotonic and bounded over the whole range */
    uint64_t prev = 5000;
    for (uint32_t open = 0; open <= 120; open++) {
        uint64_t v = tt_keepalive_pressure_idle(5000, open, 100);
        assert_true(v <= prev);
        assert_true(v >= 1000 && v <= 5000);
        prev = v;
    }
}

static void never_changes_short_idle_timeouts_or_unlimited_servers(void **state)
{
    (void)state;
    assert_int_equal(tt_keepalive_pressure_idle(1000, 100, 100), 1000);
    assert_int_equal(tt_keepalive_pressure_idle(1000, 90, 100), 1000);
    assert_int_equal(tt_keepalive_pressure_idle(500, 100, 100), 500);
    assert_int_equal(tt_keepalive_pressure_idle(0, 100, 100), 0);
    assert_int_equal(tt_keepalive_pressure_idle(5000, 100, 0), 5000);
    assert_int_equal(tt_keepalive_pressure_idle(5000, UINT32_MAX, 0), 5000);
}

/* ---- tt_keepalive_buckets / tt_keepalive_pick_bucket ---- */

static void expect_buckets(uint64_t idle, const uint64_t *want, size_t nwant)
{
    uint64_t out[TT_KA_MAX_BUCKETS + 1];
    out[TT_KA_MAX_BUCKETS] = 0xdeadbeef; /* must not be written */
    size_t n = tt_keepalive_buckets(idle, out);
    if (n != nwant) print_error("idle %llu: %zu buckets, want %zu\n", (unsigned long long)idle, n, nwant);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) assert_int_equal(out[i], want[i]);
    assert_int_equal(out[TT_KA_MAX_BUCKETS], 0xdeadbeef);
}

static void lists_whole_seconds_below_the_idle_timeout(void **state)
{
    (void)state;
    expect_buckets(5000, (const uint64_t[]){1000, 2000, 3000, 4000, 5000}, 5);
    expect_buckets(2500, (const uint64_t[]){1000, 2000, 2500}, 3);
    expect_buckets(2000, (const uint64_t[]){1000, 2000}, 2);
    expect_buckets(1001, (const uint64_t[]){1000, 1001}, 2);
    expect_buckets(1000, (const uint64_t[]){1000}, 1);
    expect_buckets(500, (const uint64_t[]){500}, 1);
    expect_buckets(0, (const uint64_t[]){0}, 1);
    expect_buckets(32000,
                   (const uint64_t[]){1000,  2000,  3000,  4000,  5000,  6000,  7000,  8000,  9000,  10000, 11000,
                                      12000, 13000, 14000, 15000, 16000, 17000, 18000, 19000, 20000, 21000, 22000,
                                      23000, 24000, 25000, 26000, 27000, 28000, 29000, 30000, 31000, 32000},
                   32);
}

static void spreads_at_most_32_buckets_over_long_timeouts(void **state)
{
    (void)state;
    uint64_t out[TT_KA_MAX_BUCKETS];
    size_t n = tt_keepalive_buckets(3600000, out);
    assert_int_equal(n, 32);
    assert_int_equal(out[0], 1000);
    assert_int_equal(out[31], 3600000);
    assert_int_equal(out[30], 3599000);
    for (size_t i = 1; i < n; i++) {
        assert_true(out[i] > out[i - 1]);
        if (i < n - 1) assert_int_equal(out[i] % 1000, 0);
    }
    /* for any timeout: ascending, unique, whole seconds below it, ending with it */
    static const uint64_t idles[] = {1500, 3000, 7777, 31000, 33000, 33001, 60000, 86400000};
    for (size_t k = 0; k < TT_ARRAY_SIZE(idles); k++) {
        n = tt_keepalive_buckets(idles[k], out);
        assert_true(n >= 2 && n <= TT_KA_MAX_BUCKETS);
        assert_int_equal(out[0], 1000);
        assert_int_equal(out[n - 1], idles[k]);
        for (size_t i = 1; i < n; i++) assert_true(out[i] > out[i - 1]);
        for (size_t i = 0; i + 1 < n; i++) assert_int_equal(out[i] % 1000, 0);
    }
}

static void picks_the_largest_bucket_not_above_the_wanted_timeout(void **state)
{
    (void)state;
    static const uint64_t b[] = {1000, 2000, 2500};
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 0), 0);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 999), 0);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 1000), 0);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 1999), 0);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 2000), 1);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 2400), 1);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, 2500), 2);
    assert_int_equal(tt_keepalive_pick_bucket(b, 3, UINT64_MAX), 2);
    assert_int_equal(tt_keepalive_pick_bucket(b, 1, 5000), 0);

    /* the pressure value lands in the bucket just below it */
    uint64_t out[TT_KA_MAX_BUCKETS];
    size_t n = tt_keepalive_buckets(5000, out);
    assert_int_equal(out[tt_keepalive_pick_bucket(out, n, tt_keepalive_pressure_idle(5000, 80, 100))], 4000);
    assert_int_equal(out[tt_keepalive_pick_bucket(out, n, tt_keepalive_pressure_idle(5000, 90, 100))], 2000);
    assert_int_equal(out[tt_keepalive_pick_bucket(out, n, tt_keepalive_pressure_idle(5000, 100, 100))], 1000);
    assert_int_equal(out[tt_keepalive_pick_bucket(out, n, tt_keepalive_pressure_idle(5000, 10, 100))], 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decides_each_row_of_the_table),
        cmocka_unit_test(decides_every_combination_in_the_documented_order),
        cmocka_unit_test(names_the_reasons_it_returns),
        cmocka_unit_test(counts_the_requests_left),
        cmocka_unit_test(keeps_the_idle_timeout_up_to_75_percent),
        cmocka_unit_test(shrinks_the_idle_timeout_linearly_to_one_second),
        cmocka_unit_test(never_changes_short_idle_timeouts_or_unlimited_servers),
        cmocka_unit_test(lists_whole_seconds_below_the_idle_timeout),
        cmocka_unit_test(spreads_at_most_32_buckets_over_long_timeouts),
        cmocka_unit_test(picks_the_largest_bucket_not_above_the_wanted_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
