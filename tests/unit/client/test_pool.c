/* test_pool.c -- the pure decisions of the upstream pool (src/client/pool.c): whether a connection may be
 * parked and why not, how long it may stay parked and which limit decides it, the retire reason names; and
 * the derived TCP keepalive and cause names of the proxy (src/handlers/proxy.c) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "client/pool.h"
#include "handlers/proxy.h"

/* ---- tt_pool_can_park ---- */

/* A connection that may be parked: every input comfortably inside its limit. */
static tt_pool_park_in_t parkable(void)
{
    return (tt_pool_park_in_t){
        .fresh = false,
        .persistent = true,
        .request_sent = true,
        .sock = TT_UP_SOCK_QUIET,
        .stopping = false,
        .requests = 3,
        .max_requests = 100,
        .hint_max = -1,
        .hint_zero = false,
        .age_ms = 1000,
        .lifetime_ms = 60000,
        .idle_ms = 5000,
        .idle_reason = TT_RETIRE_IDLE_TIMEOUT,
    };
}

static void parks_a_healthy_connection(void **state)
{
    (void)state;
    tt_pool_park_in_t in = parkable();
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_NONE);
}

/* Each row changes the parkable inputs; `want` is the one reason, in the documented order of the checks. */
typedef struct {
    const char *what;
    bool fresh, persistent, sent;
    tt_up_sock_t sock;
    bool stopping;
    uint32_t requests, max_requests;
    int64_t hint_max;
    bool hint_zero;
    uint64_t age_ms, lifetime_ms, idle_ms;
    tt_pool_retire_t idle_reason, want;
} park_row_t;

static tt_pool_park_in_t row_in(const park_row_t *r)
{
    return (tt_pool_park_in_t){
        .fresh = r->fresh,
        .persistent = r->persistent,
        .request_sent = r->sent,
        .sock = r->sock,
        .stopping = r->stopping,
        .requests = r->requests,
        .max_requests = r->max_requests,
        .hint_max = r->hint_max,
        .hint_zero = r->hint_zero,
        .age_ms = r->age_ms,
        .lifetime_ms = r->lifetime_ms,
        .idle_ms = r->idle_ms,
        .idle_reason = r->idle_reason,
    };
}

static void check_park_rows(const park_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tt_pool_park_in_t in = row_in(&rows[i]);
        tt_pool_retire_t got = tt_pool_can_park(&in);
        if (got != rows[i].want)
            fail_msg("%s: %s, expected %s", rows[i].what, tt_pool_retire_name(got), tt_pool_retire_name(rows[i].want));
    }
}

#define Q  TT_UP_SOCK_QUIET
#define SB TT_UP_SOCK_STRAY
#define CL TT_UP_SOCK_CLOSED
#define IT TT_RETIRE_IDLE_TIMEOUT

static void retires_for_the_first_failing_check_in_order(void **state)
{
    (void)state;
    /* fresh persistent sent sock stopping requests max_req hint_max hint_zero age lifetime idle idle_reason -> */
    static const park_row_t rows[] = {
        {"healthy", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_NONE},
        /* the socket first: a FIN after the response, then bytes after it (issue 9) */
        {"closed after", 0, 1, 1, CL, 0, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"closed, all bad", 0, 0, 0, CL, 1, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"stray bytes", 0, 1, 1, SB, 0, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_STRAY_BYTES},
        {"stray, rest bad", 0, 0, 0, SB, 1, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_STRAY_BYTES},
        {"stray on a fresh one", 1, 0, 0, SB, 0, 0, 100, -1, 0, 0, 60000, 5000, IT, TT_RETIRE_STRAY_BYTES},
        {"closed fresh one", 1, 0, 0, CL, 0, 0, 100, -1, 0, 0, 60000, 5000, IT, TT_RETIRE_UPSTREAM_CLOSE},
        /* then the response: not persistent, or it came before the request was sent */
        {"not persistent", 0, 0, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"not persistent, rest bad", 0, 0, 1, Q, 1, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"answered early", 0, 1, 0, Q, 0, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"answered early, rest bad", 0, 1, 0, Q, 1, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_UPSTREAM_CLOSE},
        {"fresh: no response facts", 1, 0, 0, Q, 0, 0, 100, -1, 0, 0, 60000, 5000, IT, TT_RETIRE_NONE},
        /* then stopping */
        {"stopping", 0, 1, 1, Q, 1, 3, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_SHUTDOWN},
        {"stopping, rest bad", 0, 1, 1, Q, 1, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_SHUTDOWN},
        {"stopping, fresh", 1, 0, 0, Q, 1, 0, 100, -1, 0, 0, 60000, 5000, IT, TT_RETIRE_SHUTDOWN},
        /* then the pool's max_requests */
        {"requests = max", 0, 1, 1, Q, 0, 100, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_MAX_REQUESTS},
        {"requests > max", 0, 1, 1, Q, 0, 101, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_MAX_REQUESTS},
        {"requests = max - 1", 0, 1, 1, Q, 0, 99, 100, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_NONE},
        {"max 1, one done", 0, 1, 1, Q, 0, 1, 1, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_MAX_REQUESTS},
        {"max 0 is unlimited", 0, 1, 1, Q, 0, UINT32_MAX, 0, -1, 0, 1000, 60000, 5000, IT, TT_RETIRE_NONE},
        {"requests = max, rest bad", 0, 1, 1, Q, 0, 100, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_MAX_REQUESTS},
        /* then the upstream's max= */
        {"hint max 0", 0, 1, 1, Q, 0, 3, 100, 0, 0, 1000, 60000, 5000, IT, TT_RETIRE_MAX_REQUESTS},
        {"hint max 0, max unlimited", 0, 1, 1, Q, 0, 3, 0, 0, 0, 1000, 60000, 5000, IT, TT_RETIRE_MAX_REQUESTS},
        {"hint max 1", 0, 1, 1, Q, 0, 3, 100, 1, 0, 1000, 60000, 5000, IT, TT_RETIRE_NONE},
        {"hint max large", 0, 1, 1, Q, 0, 3, 100, INT64_MAX, 0, 1000, 60000, 5000, IT, TT_RETIRE_NONE},
        {"hint max 0, rest bad", 0, 1, 1, Q, 0, 3, 100, 0, 1, 60000, 60000, 0, IT, TT_RETIRE_MAX_REQUESTS},
        /* then the lifetime */
        {"age = lifetime", 0, 1, 1, Q, 0, 3, 100, -1, 0, 60000, 60000, 5000, IT, TT_RETIRE_MAX_LIFETIME},
        {"age > lifetime", 0, 1, 1, Q, 0, 3, 100, -1, 0, 60001, 60000, 5000, IT, TT_RETIRE_MAX_LIFETIME},
        {"age = lifetime - 1", 0, 1, 1, Q, 0, 3, 100, -1, 0, 59999, 60000, 5000, IT, TT_RETIRE_NONE},
        {"lifetime 0 is unlimited", 0, 1, 1, Q, 0, 3, 100, -1, 0, UINT64_MAX, 0, 5000, IT, TT_RETIRE_NONE},
        {"age = lifetime, rest bad", 0, 1, 1, Q, 0, 3, 100, -1, 1, 60000, 60000, 0, IT, TT_RETIRE_MAX_LIFETIME},
        /* then Keep-Alive: timeout=0 */
        {"hint timeout 0", 0, 1, 1, Q, 0, 3, 100, -1, 1, 1000, 60000, 5000, IT, TT_RETIRE_HINT_DEADLINE},
        {"hint timeout 0, idle 0", 0, 1, 1, Q, 0, 3, 100, -1, 1, 1000, 60000, 0, TT_RETIRE_LEARNED_DEADLINE,
         TT_RETIRE_HINT_DEADLINE},
        /* last, no time left to stay parked: the limit that decided it */
        {"idle 0 by the hint", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 0, TT_RETIRE_HINT_DEADLINE,
         TT_RETIRE_HINT_DEADLINE},
        {"idle 0 by learning", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 0, TT_RETIRE_LEARNED_DEADLINE,
         TT_RETIRE_LEARNED_DEADLINE},
        {"idle 0 by the lifetime", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 0, TT_RETIRE_MAX_LIFETIME,
         TT_RETIRE_MAX_LIFETIME},
        {"idle 0 by an idle timeout of 0", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 0, IT, TT_RETIRE_HINT_DEADLINE},
        {"idle 1", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, 1, IT, TT_RETIRE_NONE},
        {"idle huge", 0, 1, 1, Q, 0, 3, 100, -1, 0, 1000, 60000, UINT64_MAX, IT, TT_RETIRE_NONE},
        /* the first exchange and the zero age are fine */
        {"first exchange", 0, 1, 1, Q, 0, 1, 100, -1, 0, 0, 60000, 5000, IT, TT_RETIRE_NONE},
    };
    check_park_rows(rows, TT_ARRAY_SIZE(rows));
}

/* The reference model: the documented order of the checks. */
static tt_pool_retire_t model_can_park(const tt_pool_park_in_t *in)
{
    if (in->sock == TT_UP_SOCK_CLOSED) return TT_RETIRE_UPSTREAM_CLOSE;
    if (in->sock == TT_UP_SOCK_STRAY) return TT_RETIRE_STRAY_BYTES;
    if (!in->fresh && (!in->persistent || !in->request_sent)) return TT_RETIRE_UPSTREAM_CLOSE;
    if (in->stopping) return TT_RETIRE_SHUTDOWN;
    if (in->max_requests != 0 && in->requests >= in->max_requests) return TT_RETIRE_MAX_REQUESTS;
    if (in->hint_max == 0) return TT_RETIRE_MAX_REQUESTS;
    if (in->lifetime_ms != 0 && in->age_ms >= in->lifetime_ms) return TT_RETIRE_MAX_LIFETIME;
    if (in->hint_zero) return TT_RETIRE_HINT_DEADLINE;
    if (in->idle_ms == 0) return in->idle_reason == TT_RETIRE_IDLE_TIMEOUT ? TT_RETIRE_HINT_DEADLINE : in->idle_reason;
    return TT_RETIRE_NONE;
}

/* Every combination of the boundary values of every input agrees with the model. */
static void agrees_with_the_order_for_every_combination(void **state)
{
    (void)state;
    static const tt_up_sock_t socks[] = {TT_UP_SOCK_QUIET, TT_UP_SOCK_STRAY, TT_UP_SOCK_CLOSED};
    static const uint32_t requests[] = {0, 1, 10, UINT32_MAX};
    static const uint32_t max_requests[] = {0, 1, 10};
    static const int64_t hint_max[] = {-1, 0, 1, INT64_MAX};
    static const uint64_t age[] = {0, 999, 1000, UINT64_MAX};
    static const uint64_t lifetime[] = {0, 1000, UINT64_MAX};
    static const uint64_t idle[] = {0, 1, UINT64_MAX};
    static const tt_pool_retire_t idle_reasons[] = {TT_RETIRE_IDLE_TIMEOUT, TT_RETIRE_HINT_DEADLINE,
                                                    TT_RETIRE_LEARNED_DEADLINE, TT_RETIRE_MAX_LIFETIME};
    size_t n = 0, parked = 0;
    size_t seen[TT_RETIRE__COUNT] = {0};
    for (unsigned flags = 0; flags < 32; flags++) /* fresh, persistent, sent, stopping, hint_zero */
        for (size_t k = 0; k < TT_ARRAY_SIZE(socks); k++)
            for (size_t a = 0; a < TT_ARRAY_SIZE(requests); a++)
                for (size_t b = 0; b < TT_ARRAY_SIZE(max_requests); b++)
                    for (size_t c = 0; c < TT_ARRAY_SIZE(hint_max); c++)
                        for (size_t d = 0; d < TT_ARRAY_SIZE(age); d++)
                            for (size_t e = 0; e < TT_ARRAY_SIZE(lifetime); e++)
                                for (size_t f = 0; f < TT_ARRAY_SIZE(idle); f++)
                                    for (size_t g = 0; g < TT_ARRAY_SIZE(idle_reasons); g++) {
                                        tt_pool_park_in_t in = {
                                            .fresh = flags & 1,
                                            .persistent = flags & 2,
                                            .request_sent = flags & 4,
                                            .stopping = flags & 8,
                                            .hint_zero = flags & 16,
                                            .sock = socks[k],
                                            .requests = requests[a],
                                            .max_requests = max_requests[b],
                                            .hint_max = hint_max[c],
                                            .age_ms = age[d],
                                            .lifetime_ms = lifetime[e],
                                            .idle_ms = idle[f],
                                            .idle_reason = idle_reasons[g],
                                        };
                                        tt_pool_retire_t got = tt_pool_can_park(&in), want = model_can_park(&in);
                                        if (got != want)
                                            fail_msg("flags %#x sock %d requests %u/%u hint_max %lld age %llu/%llu "
                                                     "idle %llu (%s): %s, expected %s",
                                                     flags, (int)in.sock, in.requests, in.max_requests,
                                                     (long long)in.hint_max, (unsigned long long)in.age_ms,
                                                     (unsigned long long)in.lifetime_ms, (unsigned long long)in.idle_ms,
                                                     tt_pool_retire_name(in.idle_reason), tt_pool_retire_name(got),
                                                     tt_pool_retire_name(want));
                                        seen[got]++;
                                        parked += got == TT_RETIRE_NONE;
                                        n++;
                                    }
    /* the table reached every outcome */
    assert_true(parked > 0);
    assert_true(seen[TT_RETIRE_UPSTREAM_CLOSE] > 0);
    assert_true(seen[TT_RETIRE_STRAY_BYTES] > 0);
    assert_true(seen[TT_RETIRE_SHUTDOWN] > 0);
    assert_true(seen[TT_RETIRE_MAX_REQUESTS] > 0);
    assert_true(seen[TT_RETIRE_MAX_LIFETIME] > 0);
    assert_true(seen[TT_RETIRE_HINT_DEADLINE] > 0);
    assert_true(seen[TT_RETIRE_LEARNED_DEADLINE] > 0);
    assert_int_equal(n, 32 * 3 * 4 * 3 * 4 * 4 * 3 * 3 * 4);
}

/* ---- tt_pool_idle_deadline ---- */

/* The [upstream] defaults that matter here: idle_timeout 60s, hints and learning on, margin 1s. */
static tt_pool_conf_t pool_conf(void)
{
    return (tt_pool_conf_t){
        .idle_timeout_ms = 60000,
        .keepalive_hint = true,
        .hint_margin_ms = 1000,
        .learn = true,
    };
}

#define NO_LIFE UINT64_MAX

static void expect_deadline(const tt_pool_conf_t *c, uint64_t hint, uint64_t learned, uint64_t life_left, uint64_t want,
                            tt_pool_retire_t want_reason)
{
    tt_pool_retire_t reason = (tt_pool_retire_t)-1;
    uint64_t got = tt_pool_idle_deadline(c, hint, learned, life_left, &reason);
    if (got != want || reason != want_reason)
        fail_msg("idle %llu margin %llu hint %llu (%s) learned %llu (%s) life %llu: %llu %s, expected %llu %s",
                 (unsigned long long)c->idle_timeout_ms, (unsigned long long)c->hint_margin_ms,
                 (unsigned long long)hint, c->keepalive_hint ? "on" : "off", (unsigned long long)learned,
                 c->learn ? "on" : "off", (unsigned long long)life_left, (unsigned long long)got,
                 tt_pool_retire_name(reason), (unsigned long long)want, tt_pool_retire_name(want_reason));
}

static void parks_for_the_idle_timeout_alone(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    expect_deadline(&c, 0, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    c.idle_timeout_ms = 1;
    expect_deadline(&c, 0, 0, NO_LIFE, 1, TT_RETIRE_IDLE_TIMEOUT);
    c.idle_timeout_ms = 24ull * 3600 * 1000;
    expect_deadline(&c, 0, 0, NO_LIFE, 24ull * 3600 * 1000, TT_RETIRE_IDLE_TIMEOUT);
}

static void retires_before_a_hinted_timeout_by_the_margin(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    /* hint - min(margin, hint / 2) */
    expect_deadline(&c, 5000, 0, NO_LIFE, 4000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 2000, 0, NO_LIFE, 1000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 1500, 0, NO_LIFE, 750, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 1000, 0, NO_LIFE, 500, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 3, 0, NO_LIFE, 2, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 1, 0, NO_LIFE, 1, TT_RETIRE_HINT_DEADLINE);
    /* the margin is 0: the hint itself */
    c.hint_margin_ms = 0;
    expect_deadline(&c, 5000, 0, NO_LIFE, 5000, TT_RETIRE_HINT_DEADLINE);
    /* a margin larger than the hint takes half of it */
    c.hint_margin_ms = 10000;
    expect_deadline(&c, 5000, 0, NO_LIFE, 2500, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 5001, 0, NO_LIFE, 2501, TT_RETIRE_HINT_DEADLINE);
}

static void keeps_the_idle_timeout_when_the_hint_is_longer(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    expect_deadline(&c, 70000, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, 61001, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, UINT64_MAX, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    /* a tie between the hinted deadline and the idle timeout names the hint */
    expect_deadline(&c, 61000, 0, NO_LIFE, 60000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 60999, 0, NO_LIFE, 59999, TT_RETIRE_HINT_DEADLINE);
}

static void ignores_the_hint_when_keepalive_hint_is_off(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    c.keepalive_hint = false;
    expect_deadline(&c, 5000, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    c.learn = false;
    expect_deadline(&c, 5000, 0, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    /* an ignored hint is no hint: what was learned applies */
    c.learn = true;
    expect_deadline(&c, 5000, 10000, NO_LIFE, 9000, TT_RETIRE_LEARNED_DEADLINE);
}

static void uses_the_learned_timeout_only_without_a_hint(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    expect_deadline(&c, 0, 10000, NO_LIFE, 9000, TT_RETIRE_LEARNED_DEADLINE);
    expect_deadline(&c, 0, 1000, NO_LIFE, 500, TT_RETIRE_LEARNED_DEADLINE);
    expect_deadline(&c, 0, 1, NO_LIFE, 1, TT_RETIRE_LEARNED_DEADLINE);
    /* longer than the idle timeout: the idle timeout; a tie names the learned one */
    expect_deadline(&c, 0, 80000, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, 0, 61000, NO_LIFE, 60000, TT_RETIRE_LEARNED_DEADLINE);
    /* a hint beats what was learned, even a shorter learned timeout */
    expect_deadline(&c, 30000, 5000, NO_LIFE, 29000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 70000, 5000, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    /* learning off */
    c.learn = false;
    expect_deadline(&c, 0, 10000, NO_LIFE, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, 5000, 10000, NO_LIFE, 4000, TT_RETIRE_HINT_DEADLINE);
    /* the margin applies the same way */
    c.learn = true;
    c.hint_margin_ms = 3000;
    expect_deadline(&c, 0, 10000, NO_LIFE, 7000, TT_RETIRE_LEARNED_DEADLINE);
    expect_deadline(&c, 0, 4000, NO_LIFE, 2000, TT_RETIRE_LEARNED_DEADLINE);
}

static void stops_at_the_end_of_the_lifetime(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    expect_deadline(&c, 0, 0, 3000, 3000, TT_RETIRE_MAX_LIFETIME);
    expect_deadline(&c, 0, 0, 0, 0, TT_RETIRE_MAX_LIFETIME);
    expect_deadline(&c, 5000, 0, 3000, 3000, TT_RETIRE_MAX_LIFETIME);
    expect_deadline(&c, 0, 10000, 3000, 3000, TT_RETIRE_MAX_LIFETIME);
    /* longer than the deadline: no effect */
    expect_deadline(&c, 0, 0, 60001, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, 5000, 0, 4001, 4000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 0, 10000, 9001, 9000, TT_RETIRE_LEARNED_DEADLINE);
    /* a tie keeps the other reason */
    expect_deadline(&c, 0, 0, 60000, 60000, TT_RETIRE_IDLE_TIMEOUT);
    expect_deadline(&c, 5000, 0, 4000, 4000, TT_RETIRE_HINT_DEADLINE);
    expect_deadline(&c, 0, 10000, 9000, 9000, TT_RETIRE_LEARNED_DEADLINE);
}

/* Whatever the inputs: never longer than the idle timeout nor the life left, and a hinted or learned
 * deadline never reaches the hinted or learned timeout itself (the margin always cuts something off a
 * timeout of 2 ms or more). */
static void never_parks_past_any_limit(void **state)
{
    (void)state;
    static const uint64_t times[] = {0, 1, 2, 3, 999, 1000, 1001, 2000, 5000, 59999, 60000, 60001, 120000, UINT64_MAX};
    static const uint64_t margins[] = {0, 1, 1000, 30000, UINT64_MAX};
    for (int hint_on = 0; hint_on < 2; hint_on++)
        for (int learn_on = 0; learn_on < 2; learn_on++)
            for (size_t m = 0; m < TT_ARRAY_SIZE(margins); m++)
                for (size_t h = 0; h < TT_ARRAY_SIZE(times); h++)
                    for (size_t l = 0; l < TT_ARRAY_SIZE(times); l++)
                        for (size_t x = 0; x < TT_ARRAY_SIZE(times); x++) {
                            tt_pool_conf_t c = pool_conf();
                            c.keepalive_hint = hint_on;
                            c.learn = learn_on;
                            c.hint_margin_ms = margins[m];
                            tt_pool_retire_t reason;
                            uint64_t d = tt_pool_idle_deadline(&c, times[h], times[l], times[x], &reason);
                            assert_true(d <= c.idle_timeout_ms);
                            assert_true(d <= times[x]);
                            switch (reason) {
                            case TT_RETIRE_IDLE_TIMEOUT: assert_int_equal(d, c.idle_timeout_ms); break;
                            case TT_RETIRE_MAX_LIFETIME: assert_int_equal(d, times[x]); break;
                            case TT_RETIRE_HINT_DEADLINE:
                                assert_true(hint_on && times[h] > 0);
                                assert_true(d <= times[h] && d >= times[h] / 2);
                                if (margins[m] > 0 && times[h] >= 2) assert_true(d < times[h]);
                                break;
                            case TT_RETIRE_LEARNED_DEADLINE:
                                assert_true(learn_on && times[l] > 0 && !(hint_on && times[h] > 0));
                                assert_true(d <= times[l] && d >= times[l] / 2);
                                if (margins[m] > 0 && times[l] >= 2) assert_true(d < times[l]);
                                break;
                            default: fail_msg("reason %s", tt_pool_retire_name(reason));
                            }
                        }
}

/* ---- names ---- */

static void names_every_retire_reason(void **state)
{
    (void)state;
    static const struct {
        tt_pool_retire_t r;
        const char *name;
    } names[] = {
        {TT_RETIRE_NONE, "none"},
        {TT_RETIRE_IDLE_TIMEOUT, "idle_timeout"},
        {TT_RETIRE_HINT_DEADLINE, "hint_deadline"},
        {TT_RETIRE_LEARNED_DEADLINE, "learned_deadline"},
        {TT_RETIRE_MAX_REQUESTS, "max_requests"},
        {TT_RETIRE_MAX_LIFETIME, "max_lifetime"},
        {TT_RETIRE_PEER_CLOSED_IDLE, "peer_closed_while_idle"},
        {TT_RETIRE_STALE_ON_REUSE, "stale_on_reuse"},
        {TT_RETIRE_UPSTREAM_CLOSE, "upstream_close"},
        {TT_RETIRE_ERROR, "error"},
        {TT_RETIRE_MAX_IDLE, "max_idle"},
        {TT_RETIRE_SHUTDOWN, "shutdown"},
        {TT_RETIRE_STRAY_BYTES, "stray_bytes"},
    };
    assert_int_equal(TT_ARRAY_SIZE(names), TT_RETIRE__COUNT);
    for (size_t i = 0; i < TT_ARRAY_SIZE(names); i++)
        assert_string_equal(tt_pool_retire_name(names[i].r), names[i].name);
    /* metric label values: non-empty, lower case, distinct */
    for (int i = 0; i < TT_RETIRE__COUNT; i++) {
        const char *a = tt_pool_retire_name((tt_pool_retire_t)i);
        assert_non_null(a);
        assert_true(a[0] != '\0');
        for (const char *p = a; *p; p++) assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (int j = 0; j < i; j++) assert_string_not_equal(a, tt_pool_retire_name((tt_pool_retire_t)j));
    }
    /* out of range: a name all the same, never NULL */
    assert_non_null(tt_pool_retire_name(TT_RETIRE__COUNT));
    assert_non_null(tt_pool_retire_name((tt_pool_retire_t)-1));
    assert_non_null(tt_pool_retire_name((tt_pool_retire_t)1000));
}

static void names_every_proxy_cause(void **state)
{
    (void)state;
    static const struct {
        tt_proxy_cause_t c;
        const char *name;
    } names[] = {
        {TT_CAUSE_CONNECT_REFUSED, "connect_refused"},
        {TT_CAUSE_CONNECT_TIMEOUT, "connect_timeout"},
        {TT_CAUSE_CONNECT_ERROR, "connect_error"},
        {TT_CAUSE_RESET_BEFORE_RESPONSE, "reset_before_response"},
        {TT_CAUSE_CLOSED_BEFORE_RESPONSE, "closed_before_response"},
        {TT_CAUSE_RESPONSE_TIMEOUT, "response_timeout"},
        {TT_CAUSE_SEND_TIMEOUT, "send_timeout"},
        {TT_CAUSE_INVALID_RESPONSE, "invalid_response"},
        {TT_CAUSE_TLS_ERROR, "tls_error"},
        {TT_CAUSE_ALL_SERVERS_DOWN, "all_servers_down"},
        {TT_CAUSE_POOL_EXHAUSTED, "pool_exhausted"},
    };
    assert_int_equal(TT_ARRAY_SIZE(names), TT_CAUSE__COUNT - 1);
    for (size_t i = 0; i < TT_ARRAY_SIZE(names); i++)
        assert_string_equal(tt_proxy_cause_name(names[i].c), names[i].name);
    assert_non_null(tt_proxy_cause_name(TT_CAUSE_NONE));
    for (int i = 0; i < TT_CAUSE__COUNT; i++)
        for (int j = 0; j < i; j++)
            assert_string_not_equal(tt_proxy_cause_name((tt_proxy_cause_t)i), tt_proxy_cause_name((tt_proxy_cause_t)j));
    assert_non_null(tt_proxy_cause_name(TT_CAUSE__COUNT));
    assert_non_null(tt_proxy_cause_name((tt_proxy_cause_t)-1));
}

/* ---- tt_proxy_default_tcp_keepalive ---- */

static void expect_tcpka(uint64_t idle_timeout_ms, int idle_s, int interval_s)
{
    tt_pool_conf_t c = pool_conf();
    c.idle_timeout_ms = idle_timeout_ms;
    tt_tcp_keepalive_t ka;
    memset(&ka, 0xa5, sizeof(ka));
    tt_proxy_default_tcp_keepalive(&c, &ka);
    if (!ka.enabled || ka.idle_s != idle_s || ka.interval_s != interval_s || ka.count != 3)
        fail_msg("idle_timeout %llu ms: %s %d:%d:%d, expected on %d:%d:3", (unsigned long long)idle_timeout_ms,
                 ka.enabled ? "on" : "off", ka.idle_s, ka.interval_s, ka.count, idle_s, interval_s);
}

static void derives_tcp_keepalive_from_the_idle_timeout(void **state)
{
    (void)state;
    /* a quarter of idle_timeout (1 s..300 s), a third of that (1 s..75 s), 3 probes */
    expect_tcpka(60000, 15, 5);
    expect_tcpka(1000, 1, 1);
    expect_tcpka(3600000, 300, 75);
    expect_tcpka(1, 1, 1);
    expect_tcpka(4000, 1, 1);
    expect_tcpka(12000, 3, 1);
    expect_tcpka(24000, 6, 2);
    expect_tcpka(1200000, 300, 75);
    expect_tcpka(900000, 225, 75);
    expect_tcpka(24ull * 3600 * 1000, 300, 75);
    /* the bounds hold for every idle timeout, and the first probe comes within a quarter of it */
    for (uint64_t ms = 1000; ms <= 3600000; ms += 997) {
        tt_pool_conf_t c = pool_conf();
        c.idle_timeout_ms = ms;
        tt_tcp_keepalive_t ka;
        tt_proxy_default_tcp_keepalive(&c, &ka);
        assert_true(ka.idle_s >= 1 && ka.idle_s <= 300);
        assert_true(ka.interval_s >= 1 && ka.interval_s <= 75);
        if (ms >= 4000) assert_true((uint64_t)ka.idle_s * 1000 <= ms / 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parks_a_healthy_connection),
        cmocka_unit_test(retires_for_the_first_failing_check_in_order),
        cmocka_unit_test(agrees_with_the_order_for_every_combination),
        cmocka_unit_test(parks_for_the_idle_timeout_alone),
        cmocka_unit_test(retires_before_a_hinted_timeout_by_the_margin),
        cmocka_unit_test(keeps_the_idle_timeout_when_the_hint_is_longer),
        cmocka_unit_test(ignores_the_hint_when_keepalive_hint_is_off),
        cmocka_unit_test(uses_the_learned_timeout_only_without_a_hint),
        cmocka_unit_test(stops_at_the_end_of_the_lifetime),
        cmocka_unit_test(never_parks_past_any_limit),
        cmocka_unit_test(names_every_retire_reason),
        cmocka_unit_test(names_every_proxy_cause),
        cmocka_unit_test(derives_tcp_keepalive_from_the_idle_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
