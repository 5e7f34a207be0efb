/* test_pool.c -- the upstream pool (src/client/pool.c). The pure decisions: whether a connection may be parked
 * and why not, how long it may stay parked and which limit decides it, the retire reason names; the derived TCP
 * keepalive and cause names of the proxy (src/handlers/proxy.c). The stateful half, on a real loop against a
 * scripted peer on 127.0.0.1: acquire, MRU reuse, the queue and its timeout, cancel, mark down, dispatch with a
 * connect that fails at once, stray bytes after a response and while parked, the check before reuse, retirement
 * at the deadline and over max_idle. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "client/pool.h"
#include "handlers/proxy.h"

#include "../support/peer.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>

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

/* A connection to an address its server's name no longer resolves to is retired when its exchange ends (its idle
 * moment): after what the socket and the response say, after stopping, before the limits. */
static void retires_a_connection_whose_address_left_the_name_when_it_ends(void **state)
{
    (void)state;
    tt_pool_park_in_t in = parkable();
    in.addr_gone = true;
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_DNS_CHANGED);
    in.fresh = true; /* connected for a request that left: never used, retired all the same */
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_DNS_CHANGED);
    in.fresh = false;
    in.requests = in.max_requests; /* used up too: the address goes first */
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_DNS_CHANGED);
    in.stopping = true;
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_SHUTDOWN);
    in.sock = TT_UP_SOCK_STRAY;
    assert_int_equal(tt_pool_can_park(&in), TT_RETIRE_STRAY_BYTES);
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
    if (in->addr_gone) return TT_RETIRE_DNS_CHANGED;
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
    for (unsigned flags = 0; flags < 64; flags++) /* fresh, persistent, sent, stopping, hint_zero, addr_gone */
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
                                            .addr_gone = flags & 32,
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
    assert_true(seen[TT_RETIRE_DNS_CHANGED] > 0);
    assert_int_equal(n, 64 * 3 * 4 * 3 * 4 * 4 * 3 * 3 * 4);
}

/* ---- tt_pool_idle_deadline ---- */

/* The [upstream] defaults that matter here: idle_timeout 60s, hints, learning and learning above hints on, the
 * largest margin 1s. */
static tt_pool_conf_t pool_conf(void)
{
    return (tt_pool_conf_t){
        .idle_timeout_ms = 60000,
        .keepalive_hint = true,
        .hint_margin_ms = 1000,
        .margin_floor_ms = 25,
        .margin_rtts = 3,
        .learn = true,
        .learn_above_hint = true,
        .safe_idle_ms = 250,
    };
}

#define NO_LIFE UINT64_MAX

/* One row: what is known (hint, learned, above, margin, life left) -> the deadline, its reason, the server's
 * timeout it rests on, and whether a request that cannot be replayed may use it up to the deadline. */
typedef struct {
    const char *what;
    uint64_t hint, learned, above, margin, life;
    uint64_t want;
    tt_pool_retire_t reason;
    uint64_t server;
    bool known;
} dl_row_t;

static void check_deadline_rows(const tt_pool_conf_t *c, const dl_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const dl_row_t *r = &rows[i];
        tt_pool_known_t k = {.hint_ms = r->hint,
                             .learned_ms = r->learned,
                             .above_ms = r->above,
                             .margin_ms = r->margin,
                             .life_left_ms = r->life};
        tt_pool_deadline_t d = tt_pool_idle_deadline(c, &k);
        if (d.idle_ms != r->want || d.reason != r->reason || d.server_ms != r->server || d.known != r->known)
            fail_msg("%s: %llu %s server %llu known %d, expected %llu %s server %llu known %d", r->what,
                     (unsigned long long)d.idle_ms, tt_pool_retire_name(d.reason), (unsigned long long)d.server_ms,
                     d.known, (unsigned long long)r->want, tt_pool_retire_name(r->reason),
                     (unsigned long long)r->server, r->known);
    }
}

#define IDL TT_RETIRE_IDLE_TIMEOUT
#define HNT TT_RETIRE_HINT_DEADLINE
#define ABV TT_RETIRE_ABOVE_HINT
#define LRN TT_RETIRE_LEARNED_DEADLINE
#define LIF TT_RETIRE_MAX_LIFETIME

static void parks_for_the_idle_timeout_alone(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    static const dl_row_t rows[] = {
        /* what, hint learned above margin life -> want reason server known */
        {"nothing known", 0, 0, 0, 25, NO_LIFE, 60000, IDL, 0, false},
        {"an estimate above no hint is nothing", 0, 0, 90000, 25, NO_LIFE, 60000, IDL, 0, false},
        {"the margin alone is nothing", 0, 0, 0, 1000, NO_LIFE, 60000, IDL, 0, false},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
    c.idle_timeout_ms = 1;
    static const dl_row_t tiny[] = {{"idle timeout 1 ms", 0, 0, 0, 25, NO_LIFE, 1, IDL, 0, false}};
    check_deadline_rows(&c, tiny, 1);
}

/* A hint is a promise: reuse up to it minus the measured margin, never more than half of it off. */
static void retires_before_a_hinted_timeout_by_the_measured_margin(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    static const dl_row_t rows[] = {
        {"5 s, loopback margin", 5000, 0, 0, 25, NO_LIFE, 4975, HNT, 5000, true},
        {"1 s, loopback margin", 1000, 0, 0, 25, NO_LIFE, 975, HNT, 1000, true},
        {"1 s, 40 ms measured", 1000, 0, 0, 40, NO_LIFE, 960, HNT, 1000, true},
        {"1 s, margin at its bound", 1000, 0, 0, 1000, NO_LIFE, 500, HNT, 1000, true},
        {"2 s, margin at its bound", 2000, 0, 0, 1000, NO_LIFE, 1000, HNT, 2000, true},
        {"3 ms", 3, 0, 0, 25, NO_LIFE, 2, HNT, 3, true},
        {"1 ms", 1, 0, 0, 25, NO_LIFE, 1, HNT, 1, true},
        {"margin 0: the hint itself", 5000, 0, 0, 0, NO_LIFE, 5000, HNT, 5000, true},
        {"a hint beats what was learned", 30000, 5000, 0, 25, NO_LIFE, 29975, HNT, 30000, true},
        {"longer than idle_timeout", 70000, 0, 0, 25, NO_LIFE, 60000, IDL, 70000, true},
        {"a tie names the hint", 60025, 0, 0, 25, NO_LIFE, 60000, HNT, 60025, true},
        {"just under", 60024, 0, 0, 25, NO_LIFE, 59999, HNT, 60024, true},
        {"huge", UINT64_MAX, 0, 0, 25, NO_LIFE, 60000, IDL, UINT64_MAX, true},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
}

/* Past the hint only on evidence: the estimate above it (every close seen came after the hint) minus the margin
 * must itself be later than the hint. */
static void follows_closes_seen_above_the_hint_only_past_the_hint(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    static const dl_row_t rows[] = {
        {"Node: hint 1 s, closes at 2 s", 1000, 0, 2000, 25, NO_LIFE, 1975, ABV, 2000, true},
        {"hint 5 s, closes at 7.5 s", 5000, 0, 7500, 40, NO_LIFE, 7460, ABV, 7500, true},
        {"closes within a margin of the hint: the hint", 5000, 0, 5020, 25, NO_LIFE, 4975, HNT, 5000, true},
        {"a margin past the hint exactly: the hint", 5000, 0, 5025, 25, NO_LIFE, 4975, HNT, 5000, true},
        {"a margin and 1 ms past: still the hint", 5000, 0, 5026, 25, NO_LIFE, 4975, HNT, 5000, true},
        {"249 ms past: the hint", 5000, 0, 5249, 25, NO_LIFE, 4975, HNT, 5000, true},
        {"250 ms past: the estimate", 5000, 0, 5250, 25, NO_LIFE, 5225, ABV, 5250, true},
        {"250 ms past, a 300 ms margin: the hint", 5000, 0, 5250, 300, NO_LIFE, 4700, HNT, 5000, true},
        {"closes at the hint: the hint", 1000, 0, 1000, 25, NO_LIFE, 975, HNT, 1000, true},
        {"closes before the hint: the hint", 1000, 0, 900, 25, NO_LIFE, 975, HNT, 1000, true},
        {"half cap: 2 s - 1 s is not past 1 s", 1000, 0, 2000, 1000, NO_LIFE, 500, HNT, 1000, true},
        {"half cap: 3 s - 1 s is", 1000, 0, 3000, 1000, NO_LIFE, 2000, ABV, 3000, true},
        {"no hint: an estimate above is nothing", 0, 0, 2000, 25, NO_LIFE, 60000, IDL, 0, false},
        {"past idle_timeout: idle_timeout", 30000, 0, 90000, 25, NO_LIFE, 60000, IDL, 90000, true},
        {"life left decides", 1000, 0, 2000, 25, 1500, 1500, LIF, 2000, true},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
    c.learn_above_hint = false;
    static const dl_row_t off[] = {{"learn_above_hint off", 1000, 0, 2000, 25, NO_LIFE, 975, HNT, 1000, true}};
    check_deadline_rows(&c, off, 1);
}

static void ignores_the_hint_when_keepalive_hint_is_off(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    c.keepalive_hint = false;
    static const dl_row_t rows[] = {
        {"hint ignored", 5000, 0, 0, 25, NO_LIFE, 60000, IDL, 0, false},
        {"hint and estimate above ignored", 1000, 0, 2000, 25, NO_LIFE, 60000, IDL, 0, false},
        /* an ignored hint is no hint: what was learned applies */
        {"learned applies", 5000, 10000, 0, 25, NO_LIFE, 8975, LRN, 10000, true},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
    c.learn = false;
    static const dl_row_t none[] = {{"learning off too", 5000, 10000, 0, 25, NO_LIFE, 60000, IDL, 0, false}};
    check_deadline_rows(&c, none, 1);
}

/* Without a hint: the learned timeout minus the sweep allowance min(hint_margin, learned / 2) and the margin,
 * never more than half of it. */
static void uses_the_learned_timeout_only_without_a_hint(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    static const dl_row_t rows[] = {
        {"10 s", 0, 10000, 0, 25, NO_LIFE, 8975, LRN, 10000, true},
        {"3 s", 0, 3000, 0, 25, NO_LIFE, 1975, LRN, 3000, true},
        {"2 s: half", 0, 2000, 0, 25, NO_LIFE, 1000, LRN, 2000, true},
        {"1.5 s: half", 0, 1500, 0, 25, NO_LIFE, 750, LRN, 1500, true},
        {"1 s: half", 0, 1000, 0, 25, NO_LIFE, 500, LRN, 1000, true},
        {"1 ms", 0, 1, 0, 25, NO_LIFE, 1, LRN, 1, true},
        {"longer than idle_timeout", 0, 80000, 0, 25, NO_LIFE, 60000, IDL, 80000, true},
        {"a tie names the learned one", 0, 61025, 0, 25, NO_LIFE, 60000, LRN, 61025, true},
        {"the margin adds to the allowance", 0, 10000, 0, 400, NO_LIFE, 8600, LRN, 10000, true},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
    c.learn = false;
    static const dl_row_t off[] = {
        {"learning off", 0, 10000, 0, 25, NO_LIFE, 60000, IDL, 0, false},
        {"learning off, a hint", 5000, 10000, 0, 25, NO_LIFE, 4975, HNT, 5000, true},
    };
    check_deadline_rows(&c, off, TT_ARRAY_SIZE(off));
    c.learn = true;
    c.hint_margin_ms = 3000; /* a larger sweep allowance */
    static const dl_row_t wide[] = {
        {"allowance 3 s", 0, 10000, 0, 25, NO_LIFE, 6975, LRN, 10000, true},
        {"allowance half", 0, 4000, 0, 25, NO_LIFE, 2000, LRN, 4000, true},
    };
    check_deadline_rows(&c, wide, TT_ARRAY_SIZE(wide));
}

static void stops_at_the_end_of_the_lifetime(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    static const dl_row_t rows[] = {
        {"alone", 0, 0, 0, 25, 3000, 3000, LIF, 0, false},
        {"over", 0, 0, 0, 25, 0, 0, LIF, 0, false},
        {"before the hint", 5000, 0, 0, 25, 3000, 3000, LIF, 5000, true},
        {"before the learned one", 0, 10000, 0, 25, 3000, 3000, LIF, 10000, true},
        {"longer: no effect", 0, 0, 0, 25, 60001, 60000, IDL, 0, false},
        {"longer than the hint's", 5000, 0, 0, 25, 4976, 4975, HNT, 5000, true},
        {"longer than the learned", 0, 10000, 0, 25, 8976, 8975, LRN, 10000, true},
        {"a tie keeps the idle timeout", 0, 0, 0, 25, 60000, 60000, IDL, 0, false},
        {"a tie keeps the hint", 5000, 0, 0, 25, 4975, 4975, HNT, 5000, true},
        {"a tie keeps the learned", 0, 10000, 0, 25, 8975, 8975, LRN, 10000, true},
    };
    check_deadline_rows(&c, rows, TT_ARRAY_SIZE(rows));
}

/* Whatever the inputs: never longer than the idle timeout nor the life left; a hinted deadline never reaches
 * the hint, a learned one never the learned timeout (a margin always cuts something off a timeout of 2 ms or
 * more); a deadline past the hint only from an estimate a margin past the hint. */
static void never_parks_past_any_limit(void **state)
{
    (void)state;
    static const uint64_t times[] = {0, 1, 2, 3, 999, 1000, 1001, 2000, 5000, 59999, 60000, 60001, 120000, UINT64_MAX};
    static const uint64_t margins[] = {0, 1, 25, 1000, 30000, UINT64_MAX};
    size_t above_seen = 0;
    for (int flags = 0; flags < 8; flags++)
        for (size_t m = 0; m < TT_ARRAY_SIZE(margins); m++)
            for (size_t h = 0; h < TT_ARRAY_SIZE(times); h++)
                for (size_t l = 0; l < TT_ARRAY_SIZE(times); l++)
                    for (size_t a = 0; a < TT_ARRAY_SIZE(times); a++)
                        for (size_t x = 0; x < TT_ARRAY_SIZE(times); x += 3) {
                            tt_pool_conf_t c = pool_conf();
                            c.keepalive_hint = flags & 1;
                            c.learn = flags & 2;
                            c.learn_above_hint = flags & 4;
                            tt_pool_known_t k = {.hint_ms = times[h],
                                                 .learned_ms = times[l],
                                                 .above_ms = times[a],
                                                 .margin_ms = margins[m],
                                                 .life_left_ms = times[x]};
                            tt_pool_deadline_t d = tt_pool_idle_deadline(&c, &k);
                            bool hinted = c.keepalive_hint && k.hint_ms > 0;
                            assert_true(d.idle_ms <= c.idle_timeout_ms);
                            assert_true(d.idle_ms <= k.life_left_ms);
                            assert_int_equal(d.known, hinted || (c.learn && k.learned_ms > 0));
                            switch (d.reason) {
                            case TT_RETIRE_IDLE_TIMEOUT: assert_int_equal(d.idle_ms, c.idle_timeout_ms); break;
                            case TT_RETIRE_MAX_LIFETIME: assert_int_equal(d.idle_ms, k.life_left_ms); break;
                            case TT_RETIRE_HINT_DEADLINE:
                                assert_true(hinted);
                                assert_true(d.idle_ms <= k.hint_ms && d.idle_ms >= k.hint_ms / 2);
                                if (k.margin_ms > 0 && k.hint_ms >= 2) assert_true(d.idle_ms < k.hint_ms);
                                break;
                            case TT_RETIRE_ABOVE_HINT:
                                above_seen++;
                                assert_true(hinted && c.learn_above_hint);
                                assert_true(k.above_ms >= k.hint_ms + TT_POOL_ABOVE_MIN_MS);
                                assert_true(d.idle_ms > k.hint_ms && d.idle_ms <= k.above_ms);
                                assert_true(d.idle_ms >= k.above_ms / 2);
                                assert_true(d.idle_ms + TT_MIN(k.margin_ms, k.above_ms / 2) == k.above_ms);
                                if (k.margin_ms > 0) assert_true(d.idle_ms < k.above_ms);
                                break;
                            case TT_RETIRE_LEARNED_DEADLINE:
                                assert_true(c.learn && k.learned_ms > 0 && !hinted);
                                assert_true(d.idle_ms <= k.learned_ms && d.idle_ms >= k.learned_ms / 2);
                                if (k.learned_ms >= 2) assert_true(d.idle_ms < k.learned_ms); /* the sweep cuts */
                                break;
                            default: fail_msg("reason %s", tt_pool_retire_name(d.reason));
                            }
                        }
    assert_true(above_seen > 0);
}

/* ---- the margin: measured round trips ---- */

static void smooths_round_trips_as_rfc_6298_does(void **state)
{
    (void)state;
    tt_pool_rtt_t r = {0};
    tt_pool_rtt_observe(&r, 8000); /* the first: srtt = s, rttvar = s / 2 */
    assert_int_equal(r.samples, 1);
    assert_int_equal(r.srtt_us, 8000);
    assert_int_equal(r.rttvar_us, 4000);
    tt_pool_rtt_observe(&r, 16000); /* rttvar = (3 * 4000 + 8000) / 4, srtt = (7 * 8000 + 16000) / 8 */
    assert_int_equal(r.rttvar_us, 5000);
    assert_int_equal(r.srtt_us, 9000);
    tt_pool_rtt_observe(&r, 1000); /* dev 8000: rttvar = (15000 + 8000) / 4, srtt = (63000 + 1000) / 8 */
    assert_int_equal(r.rttvar_us, 5750);
    assert_int_equal(r.srtt_us, 8000);
    /* a steady round trip: the deviation decays, srtt converges on it */
    for (int i = 0; i < 200; i++) tt_pool_rtt_observe(&r, 2000);
    assert_int_equal(r.srtt_us, 2000); /* integer smoothing rounds down onto it */
    assert_true(r.rttvar_us <= 2);
    assert_int_equal(r.samples, 203);
    /* zero samples (loopback within a millisecond of the loop's clock) */
    tt_pool_rtt_t z = {0};
    for (int i = 0; i < 10; i++) tt_pool_rtt_observe(&z, 0);
    assert_int_equal(z.srtt_us, 0);
    assert_int_equal(z.rttvar_us, 0);
}

static void computes_the_margin_from_round_trips_between_floor_and_hint_margin(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf(); /* floor 25, 3 round trips, bound 1000 */
    tt_pool_rtt_t r = {0};
    assert_int_equal(tt_pool_margin(&c, &r), 1000); /* nothing measured: the cautious bound */
    r = (tt_pool_rtt_t){.srtt_us = 0, .rttvar_us = 0, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 25); /* loopback: the floor */
    r = (tt_pool_rtt_t){.srtt_us = 4000, .rttvar_us = 1000, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 25); /* 3 * 4 + 4 * 1 = 16 ms: the floor */
    r = (tt_pool_rtt_t){.srtt_us = 10000, .rttvar_us = 2500, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 40); /* 30 + 10 */
    r = (tt_pool_rtt_t){.srtt_us = 10001, .rttvar_us = 2500, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 41); /* rounded up */
    r = (tt_pool_rtt_t){.srtt_us = 300000, .rttvar_us = 100000, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 1000); /* 1.3 s: the bound */
    /* the multiplier and the floor are settings */
    c.margin_rtts = 1;
    r = (tt_pool_rtt_t){.srtt_us = 50000, .rttvar_us = 5000, .samples = 5};
    assert_int_equal(tt_pool_margin(&c, &r), 70);
    c.margin_rtts = 0;
    assert_int_equal(tt_pool_margin(&c, &r), 25); /* 20 ms of deviation alone, then the floor */
    c.margin_floor_ms = 0;
    assert_int_equal(tt_pool_margin(&c, &r), 20);
    c.margin_floor_ms = 1000;
    assert_int_equal(tt_pool_margin(&c, &r), 1000);
    /* the largest sample the pool passes (hint_margin, at most a day) with the largest multiplier stays exact */
    c = pool_conf();
    c.margin_rtts = 100;
    c.hint_margin_ms = 24ull * 3600 * 1000;
    r = (tt_pool_rtt_t){.srtt_us = c.hint_margin_ms * 1000, .rttvar_us = c.hint_margin_ms * 500, .samples = 9};
    assert_int_equal(tt_pool_margin(&c, &r), c.hint_margin_ms);
}

/* ---- learning above the hint ---- */

static tt_pool_above_close_t canary_close(uint64_t age, bool growth)
{
    return (tt_pool_above_close_t){.age_ms = age, .canary = true, .growth = growth};
}

static tt_pool_above_close_t in_service_close(uint64_t age, uint64_t deadline, bool above_used)
{
    return (tt_pool_above_close_t){.age_ms = age, .deadline_ms = deadline, .above_used = above_used};
}

static void bounds_the_reuse_wait_by_the_measured_round_trip(void **state)
{
    (void)state;
    tt_pool_conf_t c = pool_conf();
    c.reuse_wait_ms = 50;
    tt_pool_rtt_t r = {0};
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), 0); /* nothing measured: no wait */
    r = (tt_pool_rtt_t){.srtt_us = 0, .rttvar_us = 0, .samples = 3};
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), TT_POOL_REUSE_WAIT_MIN_MS); /* loopback: the floor */
    r = (tt_pool_rtt_t){.srtt_us = 10000, .rttvar_us = 2500, .samples = 3};
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), 30); /* 2 x 10 + 4 x 2.5 */
    r = (tt_pool_rtt_t){.srtt_us = 10001, .rttvar_us = 2500, .samples = 3};
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), 31); /* rounded up */
    r = (tt_pool_rtt_t){.srtt_us = 1000000, .rttvar_us = 0, .samples = 3};
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), 50); /* a slow server: the cap */
    c.reuse_wait_ms = 0;
    assert_int_equal(tt_pool_reuse_wait_ms(&c, &r), 0); /* off */
}

static void learns_the_youngest_close_canaries_see(void **state)
{
    (void)state;
    tt_pool_above_t a = {0};
    tt_pool_above_close_t cl = canary_close(2030, false);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 100000), TT_ABOVE_LEARNED);
    assert_int_equal(a.ms, 2030);
    assert_int_equal(a.observed, 1);
    cl = canary_close(2010, false); /* younger: the estimate follows it down */
    assert_int_equal(tt_pool_above_observe(&a, &cl, 100010), TT_ABOVE_LEARNED);
    assert_int_equal(a.ms, 2010);
    cl = canary_close(2050, false); /* older: a probe canary never raises it */
    assert_int_equal(tt_pool_above_observe(&a, &cl, 100020), TT_ABOVE_NOTHING);
    assert_int_equal(a.ms, 2010);
    cl = canary_close(2010, false);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 100030), TT_ABOVE_NOTHING);
    assert_int_equal(a.observed, 4);
    /* a growth canary (made while the estimate was in use) closing later: the server's timeout grew */
    cl = canary_close(3000, true);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 200000), TT_ABOVE_LEARNED);
    assert_int_equal(a.ms, 3000);
    cl = canary_close(2500, true); /* ... or shrank */
    assert_int_equal(tt_pool_above_observe(&a, &cl, 300000), TT_ABOVE_LEARNED);
    assert_int_equal(a.ms, 2500);
    /* a close at or before the hint is an observation too (the deadline function keeps the hint then) */
    tt_pool_above_t b = {0};
    cl = canary_close(990, false);
    assert_int_equal(tt_pool_above_observe(&b, &cl, 1000), TT_ABOVE_LEARNED);
    assert_int_equal(b.ms, 990);
    assert_int_equal(b.observed, 1);
}

static void falls_back_at_the_first_close_earlier_than_a_learned_deadline(void **state)
{
    (void)state;
    tt_pool_above_t a = {.ms = 2000, .observed = 3};
    /* in service, its deadline from the hint: says nothing about the estimate */
    tt_pool_above_close_t cl = in_service_close(500, 975, false);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 50000), TT_ABOVE_NOTHING);
    assert_int_equal(a.ms, 2000);
    /* in service, its deadline from the estimate, closed after that deadline (cannot be, but harmless) */
    cl = in_service_close(1975, 1975, true);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 50000), TT_ABOVE_NOTHING);
    assert_int_equal(a.ms, 2000);
    /* closed before it: back to the hint, and nothing learned for a while */
    cl = in_service_close(1500, 1975, true);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 50000), TT_ABOVE_FALLBACK);
    assert_int_equal(a.ms, 0);
    assert_int_equal(a.observed, 0);
    assert_int_equal(a.suspended_until_ms, 50000 + tt_pool_above_suspend_ms);
    cl = canary_close(2000, false);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 50000 + tt_pool_above_suspend_ms - 1), TT_ABOVE_NOTHING);
    assert_int_equal(a.ms, 0);
    assert_int_equal(tt_pool_above_observe(&a, &cl, 50000 + tt_pool_above_suspend_ms), TT_ABOVE_LEARNED);
    assert_int_equal(a.ms, 2000);
    assert_int_equal(a.observed, 1);
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
        {TT_RETIRE_ABOVE_HINT, "above_hint_deadline"},
        {TT_RETIRE_MAX_REQUESTS, "max_requests"},
        {TT_RETIRE_MAX_LIFETIME, "max_lifetime"},
        {TT_RETIRE_PEER_CLOSED_IDLE, "peer_closed_while_idle"},
        {TT_RETIRE_STALE_ON_REUSE, "stale_on_reuse"},
        {TT_RETIRE_UPSTREAM_CLOSE, "upstream_close"},
        {TT_RETIRE_ERROR, "error"},
        {TT_RETIRE_MAX_IDLE, "max_idle"},
        {TT_RETIRE_SHUTDOWN, "shutdown"},
        {TT_RETIRE_STRAY_BYTES, "stray_bytes"},
        {TT_RETIRE_TUNNEL, "tunnel"},
        {TT_RETIRE_DNS_CHANGED, "dns_changed"},
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
        {TT_CAUSE_PING_TIMEOUT, "ping_timeout"},
        {TT_CAUSE_GRPC_DEADLINE, "grpc_deadline"},
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

/* ---- the stateful half, on a real loop ---- */

static tt_loop_t *g_loop;
static tt_bufpool_t g_bufs;
static tt_h1_response_t g_res;
static int g_lfd = -1;
static tt_addr_t g_addr;
static tt_pool_metrics_t g_m;
static tt_pool_conf_t g_conf;

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static tt_pool_conf_t live_conf(void)
{
    return (tt_pool_conf_t){
        .max_idle = 16,
        .idle_timeout_ms = 60000,
        .keepalive_hint = true,
        .hint_margin_ms = 1000,
        .margin_floor_ms = 25,
        .margin_rtts = 3,
        .learn = true,
        .learn_above_hint = true,
        .safe_idle_ms = 250,
        .idle_watch = true,
        .peek = true,
        .max_pending = 16,
        .queue_timeout_ms = 5000,
        .timeouts = {.connect_ms = 5000, .response_ms = 5000, .read_ms = 5000, .send_ms = 5000},
        .max_fails = 3,
        .backoff_min_ms = 1000,
        .backoff_max_ms = 10000,
    };
}

static int live_setup(void **state)
{
    (void)state;
    g_loop = tt_loop_new();
    tt_bufpool_init(&g_bufs, 16384, 16);
    memset(&g_m, 0, sizeof(g_m));
    g_conf = live_conf();
    g_lfd = peer_listen(&g_addr);
    return g_loop && g_lfd >= 0 ? 0 : -1;
}

static int live_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++) tt_loop_run_once(g_loop, 0); /* deferred frees */
    assert_int_equal(g_bufs.in_use, 0);
    tt_bufpool_dispose(&g_bufs);
    tt_loop_free(&g_loop);
    if (g_lfd >= 0) close(g_lfd);
    return 0;
}

/* Stops the loop's clock at its current reading, returned: from now on time moves only by tt_loop_set_clock. */
static uint64_t manual_clock(void)
{
    uint64_t t0 = tt_loop_now(g_loop);
    tt_loop_set_clock(g_loop, t0, 0);
    return t0;
}

static tt_pool_t *new_pool(const tt_addr_t *a)
{
    return tt_pool_new(g_loop, &g_bufs, &g_res, &g_conf, a, "test", &g_m);
}

/* A request waiting for a connection, and every callback it got. */
typedef struct wrec {
    tt_pool_waiter_t w;
    int calls;
    bool called;
    tt_pool_status_t st;
    tt_upconn_t *u;
    tt_up_err_t err;
} wrec_t;

static void wrec_cb(tt_pool_waiter_t *w, tt_upconn_t *u, tt_pool_status_t st, tt_up_err_t err)
{
    wrec_t *r = tt_container_of(w, wrec_t, w);
    r->calls++;
    r->called = true;
    r->st = st;
    r->u = u;
    r->err = err;
}

/* Asks `p` for a connection for `r`; returns what tt_pool_acquire said (READY fills r->u, not a callback). */
#define AS_NOT_REPLAYABLE 1u
#define AS_FRESH_ONLY     2u
#define AS_REPLAY         4u /* with AS_FRESH_ONLY */
#define AS_PROBE          8u /* replayable on a closed connection: may be a request canary */

/* acquire(), for a request that cannot be replayed, or wants a new connection, or is a replay (AS_*). */
static tt_pool_status_t acquire_as(tt_pool_t *p, wrec_t *r, unsigned as)
{
    memset(r, 0, sizeof(*r));
    r->w.cb = wrec_cb;
    r->w.not_replayable = as & AS_NOT_REPLAYABLE;
    r->w.fresh_only = as & AS_FRESH_ONLY;
    r->w.replay = as & AS_REPLAY;
    r->w.may_probe = as & AS_PROBE;
    tt_upconn_t *u = NULL;
    tt_up_err_t err = TT_UP_OK;
    tt_pool_status_t st = tt_pool_acquire(p, &r->w, &u, &err);
    if (st == TT_POOL_READY) r->u = u;
    r->st = st;
    r->err = err;
    return st;
}

static tt_pool_status_t acquire(tt_pool_t *p, wrec_t *r)
{
    return acquire_as(p, r, 0);
}

/* Acquires and waits for the connection; accepts the peer's end when it is a new one (`*peer`, else -1). */
static tt_upconn_t *get_conn(tt_pool_t *p, wrec_t *r, int *peer)
{
    tt_pool_status_t st = acquire(p, r);
    *peer = -1;
    if (st == TT_POOL_PENDING) {
        assert_true(peer_run_until(g_loop, &r->called, 5000));
        assert_int_equal(r->calls, 1);
        assert_int_equal(r->st, TT_POOL_READY);
        *peer = peer_accept(g_lfd, 5000);
        assert_true(*peer >= 0);
    } else {
        assert_int_equal(st, TT_POOL_READY);
    }
    assert_non_null(r->u);
    return r->u;
}

/* One exchange on a checked-out connection, released (or discarded) to `p` as the proxy does. */
typedef struct ex {
    tt_pool_t *p;
    bool done, failed;
} ex_t;

static void ex_on_head(tt_upconn_t *u, const tt_h1_response_t *res)
{
    (void)u, (void)res;
}
static void ex_on_body(tt_upconn_t *u, const char *data, size_t len)
{
    (void)u, (void)data, (void)len;
}
static void ex_on_done(tt_upconn_t *u, tt_str_t trailers)
{
    (void)trailers;
    ex_t *e = u->data;
    e->done = true;
    tt_pool_release(e->p, u);
}
static void ex_on_error(tt_upconn_t *u, tt_up_err_t err)
{
    (void)err;
    ex_t *e = u->data;
    e->failed = true;
    tt_pool_discard(e->p, u, TT_RETIRE_ERROR);
}
static void ex_on_drain(tt_upconn_t *u)
{
    (void)u;
}
static const tt_upconn_ops_t ex_ops = {.on_head = ex_on_head,
                                       .on_body = ex_on_body,
                                       .on_done = ex_on_done,
                                       .on_error = ex_on_error,
                                       .on_drain = ex_on_drain};

/* Sends a GET on `u` (peer `peer` reads it) and answers with `resp` (n bytes, one send); `partial`: the request
 * end is never queued (an early answer). Runs until the exchange ended. */
static void exchange(tt_pool_t *p, tt_upconn_t *u, int peer, const char *resp, size_t n, bool partial)
{
    ex_t e = {.p = p};
    tt_upconn_set_user(u, &ex_ops, &e);
    tt_upconn_begin(u, false);
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_true(tt_upconn_send(u, req, sizeof(req) - 1));
    if (!partial) tt_upconn_end_request(u);
    char head[1024];
    assert_true(peer_recv_head(peer, head, sizeof(head), 5000) > 0);
    assert_true(peer_send(peer, resp, n));
    uint64_t start = peer_ms();
    while (!e.done && !e.failed && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_true(e.done);
}

#define OK2 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 40

static void opens_a_connection_and_parks_it_after_the_exchange(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    assert_int_equal(u->requests, 0);
    assert_int_equal(LOAD(g_m.opened), 1);
    assert_int_equal(LOAD(g_m.active), 1);
    exchange(p, u, peer, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    assert_int_equal(LOAD(g_m.active), 0);
    assert_int_equal(u->state, TT_UPCONN_PARKED);
    /* the next request reuses it, without a connect */
    wrec_t r2;
    assert_int_equal(acquire(p, &r2), TT_POOL_READY);
    assert_ptr_equal(r2.u, u);
    assert_int_equal(r2.calls, 0);
    assert_int_equal(LOAD(g_m.reused), 1);
    exchange(p, u, peer, OK2, false);
    tt_pool_free(&p);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_SHUTDOWN]), 1);
    close(peer);
}

static void reuses_the_most_recently_parked_connection_first(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t ra, rb;
    int pa, pb;
    tt_upconn_t *a = get_conn(p, &ra, &pa);
    tt_upconn_t *b = get_conn(p, &rb, &pb);
    assert_ptr_not_equal(a, b);
    exchange(p, a, pa, OK2, false);
    exchange(p, b, pb, OK2, false); /* parked last */
    assert_int_equal(LOAD(g_m.idle), 2);
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_READY);
    assert_ptr_equal(r.u, b);
    exchange(p, b, pb, OK2, false);
    tt_pool_free(&p);
    close(pa), close(pb);
}

static void queues_at_max_connections_and_serves_the_oldest_waiter_once(void **state)
{
    (void)state;
    g_conf.max_connections = 1;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r1, r2, r3;
    int peer;
    tt_upconn_t *u = get_conn(p, &r1, &peer);
    assert_int_equal(acquire(p, &r2), TT_POOL_PENDING);
    assert_int_equal(acquire(p, &r3), TT_POOL_PENDING);
    assert_int_equal(LOAD(g_m.pending), 2);
    exchange(p, u, peer, OK2, false); /* released: straight to the oldest waiter */
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.st, TT_POOL_READY);
    assert_ptr_equal(r2.u, u);
    assert_int_equal(r3.calls, 0);
    assert_int_equal(LOAD(g_m.pending), 1);
    assert_int_equal(LOAD(g_m.idle), 0);
    /* the last one leaves: never called, nothing pending */
    tt_pool_cancel(&r3.w);
    assert_int_equal(LOAD(g_m.pending), 0);
    exchange(p, u, peer, OK2, false);
    peer_run_for(g_loop, 10);
    assert_int_equal(r3.calls, 0);
    tt_pool_free(&p);
    close(peer);
}

static void times_out_a_queued_request_on_the_loops_clock(void **state)
{
    (void)state;
    g_conf.max_connections = 1;
    g_conf.queue_timeout_ms = 1000;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r1, r2;
    int peer;
    tt_upconn_t *u = get_conn(p, &r1, &peer);
    uint64_t t0 = manual_clock();
    assert_int_equal(acquire(p, &r2), TT_POOL_PENDING);
    tt_loop_set_clock(g_loop, t0 + 999, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(r2.calls, 0);
    tt_loop_set_clock(g_loop, t0 + 1000, 0);
    assert_true(peer_run_until(g_loop, &r2.called, 5000));
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.st, TT_POOL_EXHAUSTED);
    assert_int_equal(LOAD(g_m.queue_timeouts), 1);
    assert_int_equal(LOAD(g_m.pending), 0);
    exchange(p, u, peer, OK2, false);
    tt_pool_free(&p);
    close(peer);
}

static void marks_the_server_down_after_max_fails(void **state)
{
    (void)state;
    tt_addr_t closed;
    int cfd = peer_closed_port(&closed);
    g_conf.max_fails = 2;
    tt_pool_t *p = new_pool(&closed);
    for (int i = 0; i < 2; i++) {
        wrec_t r;
        tt_pool_status_t st = acquire(p, &r);
        if (st == TT_POOL_PENDING) {
            assert_true(peer_run_until(g_loop, &r.called, 5000));
            assert_int_equal(r.calls, 1);
            st = r.st;
        }
        assert_int_equal(st, TT_POOL_FAILED);
        assert_int_equal(r.err, TT_UP_CONNECT_REFUSED);
    }
    assert_true(tt_pool_is_down(p));
    assert_int_equal(LOAD(g_m.down), 1);
    assert_int_equal(LOAD(g_m.connect_failures), 2);
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_DOWN);
    tt_pool_free(&p);
    close(cfd);
}

/* Lowers the soft limit to `limit` and fills every free descriptor below it, so that the next socket() fails with
 * EMFILE even after a descriptor at or above `limit` is closed. Keeps the fillers (to close) and the old limit. */
static int g_filler[4096];
static size_t g_nfiller;
static struct rlimit g_old_rl;

static void exhaust_fds(int limit)
{
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &g_old_rl), 0);
    struct rlimit rl = g_old_rl;
    rl.rlim_cur = (rlim_t)limit;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    g_nfiller = 0;
    for (int fd; (fd = dup(0)) >= 0;) {
        assert_true(g_nfiller < TT_ARRAY_SIZE(g_filler));
        g_filler[g_nfiller++] = fd;
    }
    assert_int_equal(errno, EMFILE);
}

static void restore_fds(void)
{
    for (size_t i = 0; i < g_nfiller; i++) close(g_filler[i]);
    g_nfiller = 0;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &g_old_rl), 0);
}

/* Issue 9, defect 4: a queued waiter served when room appears, whose connect fails at once (EMFILE) and marks
 * the server down, was called back twice (once by mark_down, once by dispatch) and npending wrapped, so the
 * pool answered 503 for ever. Each waiter gets exactly one callback; nothing stays pending. */
static void calls_a_queued_waiter_back_once_when_its_connect_fails_at_once(void **state)
{
    (void)state;
    g_conf.max_connections = 1;
    g_conf.max_fails = 1;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r1, r2, r3;
    int peer;
    tt_upconn_t *u = get_conn(p, &r1, &peer);
    assert_int_equal(acquire(p, &r2), TT_POOL_PENDING);
    assert_int_equal(acquire(p, &r3), TT_POOL_PENDING);
    assert_int_equal(LOAD(g_m.pending), 2);
    exhaust_fds(u->io.fd);                  /* closing u frees a descriptor the limit forbids */
    tt_pool_discard(p, u, TT_RETIRE_ERROR); /* room: r2 is served, its connect fails, the server goes down */
    restore_fds();
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.st, TT_POOL_FAILED);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.st, TT_POOL_DOWN);
    assert_int_equal(LOAD(g_m.pending), 0);
    assert_true(tt_pool_is_down(p));
    peer_run_for(g_loop, 10);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r3.calls, 1);
    tt_pool_free(&p); /* no waiter left behind (it checks) */
    close(peer);
}

/* Issue 9, defect 1: a response that ends exactly where a read fills the 16 KiB buffer, followed by another
 * response in the same send: the connection is retired (stray_bytes), never parked, and the next request gets a
 * new connection. */
static void retires_a_connection_with_bytes_after_the_response(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    static const char stray[] = "HTTP/1.1 200 OK\r\nContent-Length: 19\r\nX-Poison: 1\r\n\r\nPOISONED-RESPONSE!\n";
    char *resp = test_malloc(16384 + sizeof(stray));
    size_t head = (size_t)snprintf(resp, 128, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 16384 - 42);
    assert_int_equal(head, 42); /* head and content: exactly 16384 bytes */
    memset(resp + head, 'x', 16384 - head);
    memcpy(resp + 16384, stray, sizeof(stray) - 1);
    exchange(p, u, peer, resp, 16384 + sizeof(stray) - 1, false);
    test_free(resp);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_STRAY_BYTES]), 1);
    assert_int_equal(LOAD(g_m.idle), 0);
    wrec_t r2;
    int peer2;
    tt_upconn_t *u2 = get_conn(p, &r2, &peer2);
    assert_true(peer2 >= 0); /* a new connection */
    assert_int_equal(u2->requests, 0);
    exchange(p, u2, peer2, OK2, false);
    tt_pool_free(&p);
    close(peer), close(peer2);
}

static void retires_a_connection_answered_before_its_request_was_sent(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    exchange(p, u, peer, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\nno", 55, true);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_UPSTREAM_CLOSE]), 1);
    assert_int_equal(LOAD(g_m.idle), 0);
    tt_pool_free(&p);
    close(peer);
}

/* Stray bytes on a parked connection retire it (stray_bytes) and teach the learner nothing; a close teaches it. */
static void retires_a_parked_connection_on_stray_bytes_and_learns_only_from_closes(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    exchange(p, u, peer, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    assert_true(peer_send(peer, "HTTP/1.1 200 OK\r\n\r\n", 19));
    uint64_t start = peer_ms();
    while (LOAD(g_m.idle) == 1 && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_STRAY_BYTES]), 1);
    assert_int_equal(LOAD(g_m.learned_ms), 0);
    /* a close on a parked connection is what the learner learns from */
    wrec_t r2;
    int peer2;
    tt_upconn_t *u2 = get_conn(p, &r2, &peer2);
    uint64_t t0 = manual_clock();
    exchange(p, u2, peer2, OK2, false);
    tt_loop_set_clock(g_loop, t0 + 700, 0); /* the server closes it after 700 ms of idleness */
    close(peer2);
    start = peer_ms();
    while (LOAD(g_m.idle) == 1 && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_PEER_CLOSED_IDLE]), 1);
    assert_int_equal(LOAD(g_m.learned_ms), 700);
    tt_pool_free(&p);
    close(peer);
}

/* The check before reuse: a connection parked a moment ago is reused without a syscall, unless this turn's poll
 * has an event for it that is still to be dispatched: then it is checked, and stray bytes retire it. The event
 * source that asks first is a pipe made readable before the stray bytes arrive, so it comes first in the batch. */
typedef struct asker {
    tt_io_t io;
    tt_pool_t *p;
    wrec_t r;
    bool asked;
} asker_t;

static void asker_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    asker_t *a = tt_container_of(io, asker_t, io);
    if (a->asked) return;
    a->asked = true;
    acquire(a->p, &a->r);
}

static void checks_a_connection_with_news_in_this_batch_before_reusing_it(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    exchange(p, u, peer, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    int pipefd[2];
    assert_int_equal(pipe2(pipefd, O_NONBLOCK | O_CLOEXEC), 0);
    asker_t a = {.p = p};
    a.io.fd = pipefd[0];
    a.io.cb = asker_on_io;
    assert_int_equal(tt_io_start(g_loop, &a.io, TT_EV_READ | TT_EV_EDGE), 0);
    assert_int_equal(write(pipefd[1], "x", 1), 1);
    assert_true(peer_send(peer, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison", 44));
    usleep(20000); /* both are ready before the next poll */
    uint64_t start = peer_ms();
    while (!a.asked && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_true(a.asked);
    assert_int_not_equal(a.r.st, TT_POOL_READY); /* never the poisoned connection */
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_STRAY_BYTES]), 1);
    assert_int_equal(LOAD(g_m.reused), 0);
    /* the new connection it opened instead */
    assert_int_equal(a.r.st, TT_POOL_PENDING);
    assert_true(peer_run_until(g_loop, &a.r.called, 5000));
    int peer2 = peer_accept(g_lfd, 5000);
    assert_true(peer2 >= 0);
    exchange(p, a.r.u, peer2, OK2, false);
    tt_io_stop(g_loop, &a.io);
    close(pipefd[0]), close(pipefd[1]);
    tt_pool_free(&p);
    close(peer), close(peer2);
}

static void retires_at_the_parked_deadline_on_the_loops_clock(void **state)
{
    (void)state;
    g_conf.idle_timeout_ms = 5000;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    uint64_t t0 = manual_clock();
    exchange(p, u, peer, OK2, false);
    tt_loop_set_clock(g_loop, t0 + 4999, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_loop_set_clock(g_loop, t0 + 5000, 0);
    uint64_t start = peer_ms();
    while (LOAD(g_m.idle) == 1 && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_IDLE_TIMEOUT]), 1);
    tt_pool_free(&p);
    close(peer);
}

/* A loop running late: the parked connection's deadline passed but its timer has not run yet (timers run at
 * the start of a turn). The next request must not get it. */
static void never_reuses_a_connection_past_its_deadline_when_the_loop_is_late(void **state)
{
    (void)state;
    g_conf.idle_timeout_ms = 5000;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    uint64_t t0 = manual_clock();
    exchange(p, u, peer, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_loop_set_clock(g_loop, t0 + 6000, 0); /* no turn: the retirement timer is still armed */
    wrec_t r2;
    assert_int_equal(acquire(p, &r2), TT_POOL_PENDING); /* a new connection, not the expired one */
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_IDLE_TIMEOUT]), 1);
    assert_int_equal(LOAD(g_m.reused), 0);
    assert_true(peer_run_until(g_loop, &r2.called, 5000));
    int peer2 = peer_accept(g_lfd, 5000);
    exchange(p, r2.u, peer2, OK2, false);
    tt_pool_free(&p);
    close(peer), close(peer2);
}

/* A probe whose connect fails at once (EMFILE) marked the server down twice: the backoff doubled twice and the
 * next probe came twice as late. Down at 1 s backoff, the failed probe makes it 2 s: a probe runs 2 s later. */
static void backs_off_once_when_a_probe_connect_fails_at_once(void **state)
{
    (void)state;
    tt_addr_t closed;
    int cfd = peer_closed_port(&closed);
    g_conf.max_fails = 1;
    g_conf.backoff_min_ms = 1000;
    g_conf.backoff_max_ms = 60000;
    tt_pool_t *p = new_pool(&closed);
    uint64_t t0 = manual_clock();
    wrec_t r;
    if (acquire(p, &r) == TT_POOL_PENDING) assert_true(peer_run_until(g_loop, &r.called, 5000));
    assert_true(tt_pool_is_down(p)); /* backoff 1 s: a probe at t0 + 1000 */
    exhaust_fds(0);                  /* no new descriptor at all */
    tt_loop_set_clock(g_loop, t0 + 1000, 0);
    tt_loop_run_once(g_loop, 0); /* the probe's socket() fails: down again, backoff 2 s */
    restore_fds();
    assert_int_equal(LOAD(g_m.connect_failures), 2);
    tt_loop_set_clock(g_loop, t0 + 2999, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(LOAD(g_m.connect_failures), 2);
    tt_loop_set_clock(g_loop, t0 + 3000, 0); /* the next probe: refused, as the server is still gone */
    uint64_t start = peer_ms();
    while (LOAD(g_m.connect_failures) == 2 && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(g_m.connect_failures), 3);
    tt_pool_free(&p);
    close(cfd);
}

/* A prober that records its calls and answers as told (the server's HTTP/2 pool, for tt_pool_set_prober). */
typedef struct fake_prober {
    int calls;
    tt_pool_probe_t answer;
} fake_prober_t;

static tt_pool_probe_t fake_probe(void *data)
{
    fake_prober_t *f = data;
    f->calls++;
    return f->answer;
}

/* One server, one health: connects reported by another client of the server (its HTTP/2 pool) count toward
 * max_fails as the pool's own; while it is down the probe is asked of the prober, whose outcome backs off or brings
 * the server back; a result from a prober that is not the one set is ignored; a prober removed under its probe
 * leaves the next probe armed. */
static void shares_its_health_with_the_servers_http2_pool(void **state)
{
    (void)state;
    g_conf.max_fails = 2;
    g_conf.backoff_min_ms = 1000;
    g_conf.backoff_max_ms = 60000;
    tt_pool_t *p = new_pool(&g_addr);
    fake_prober_t f = {.answer = TT_PROBE_STARTED}, other = {0};
    tt_pool_set_prober(p, fake_probe, &f);
    uint64_t t0 = manual_clock();
    tt_pool_health_report(p, false, NULL, false);
    tt_pool_health_report(p, true, NULL, false); /* a success in between: the streak starts again */
    tt_pool_health_report(p, false, NULL, false);
    assert_false(tt_pool_is_down(p));
    tt_pool_health_report(p, false, "certificate verify failed", true);
    assert_true(tt_pool_is_down(p));
    assert_int_equal(LOAD(g_m.down), 1);
    assert_int_equal(LOAD(g_m.connect_failures), 3);
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_DOWN);
    tt_loop_set_clock(g_loop, t0 + 999, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(f.calls, 0);
    tt_loop_set_clock(g_loop, t0 + 1000, 0);
    tt_loop_run_once(g_loop, 0); /* the probe: asked of the prober, no connect of the pool's own */
    assert_int_equal(f.calls, 1);
    assert_int_equal(LOAD(g_m.opened), 0);
    tt_pool_probe_done(p, &other, true, NULL, false); /* not the prober set: ignored */
    assert_true(tt_pool_is_down(p));
    tt_pool_probe_done(p, &f, false, NULL, false); /* failed: backoff 2 s */
    assert_int_equal(LOAD(g_m.connect_failures), 4);
    f.answer = TT_PROBE_FAILED;
    tt_loop_set_clock(g_loop, t0 + 2999, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(f.calls, 1);
    tt_loop_set_clock(g_loop, t0 + 3000, 0);
    tt_loop_run_once(g_loop, 0); /* failed at once: backoff 4 s */
    assert_int_equal(f.calls, 2);
    assert_int_equal(LOAD(g_m.connect_failures), 5);
    f.answer = TT_PROBE_STARTED;
    tt_loop_set_clock(g_loop, t0 + 7000, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(f.calls, 3);
    tt_pool_clear_prober(p, &other); /* not the prober set: a no-op */
    tt_pool_clear_prober(p, &f);     /* its probe is forgotten: the next one comes after the backoff, the pool's */
    tt_pool_set_prober(p, fake_probe, &f);
    tt_loop_set_clock(g_loop, t0 + 7000 + 4000, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(f.calls, 4);
    other.answer = TT_PROBE_STARTED;
    tt_pool_set_prober(p, fake_probe, &other);    /* a reload's new HTTP/2 pool takes over under the probe */
    tt_pool_probe_done(p, &f, true, NULL, false); /* the old prober's answer: ignored */
    assert_true(tt_pool_is_down(p));
    tt_loop_set_clock(g_loop, t0 + 11000 + 4000, 0);
    tt_loop_run_once(g_loop, 0);
    assert_int_equal(other.calls, 1);
    tt_pool_probe_done(p, &other, true, NULL, false); /* alive: up again */
    assert_false(tt_pool_is_down(p));
    assert_int_equal(LOAD(g_m.down), 0);
    assert_int_equal(LOAD(g_m.connect_failures), 5);
    tt_pool_free(&p);
}

static void closes_the_least_recently_used_over_max_idle(void **state)
{
    (void)state;
    g_conf.max_idle = 1;
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t ra, rb;
    int pa, pb;
    tt_upconn_t *a = get_conn(p, &ra, &pa);
    tt_upconn_t *b = get_conn(p, &rb, &pb);
    exchange(p, a, pa, OK2, false);
    exchange(p, b, pb, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_MAX_IDLE]), 1);
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_READY);
    assert_ptr_equal(r.u, b);
    exchange(p, b, pb, OK2, false);
    tt_pool_free(&p);
    close(pa), close(pb);
}

/* ---- reuse everything that is safe (issue 16) ---- */

#define RESP(s)   s, sizeof(s) - 1
#define OK2_HINT1 RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1\r\n\r\nok")
#define OK2_HINT2 RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=2\r\n\r\nok")

/* exchange(), with the loop's clock moved `rtt_ms` forward between the request leaving and the response arriving:
 * the pool measures that round trip. The clock must be manual already. */
static void exchange_timed(tt_pool_t *p, tt_upconn_t *u, int peer, const char *resp, size_t n, uint64_t rtt_ms)
{
    ex_t e = {.p = p};
    tt_upconn_set_user(u, &ex_ops, &e);
    tt_upconn_begin(u, false);
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_true(tt_upconn_send(u, req, sizeof(req) - 1));
    tt_upconn_end_request(u);
    char head[1024];
    assert_true(peer_recv_head(peer, head, sizeof(head), 5000) > 0);
    tt_loop_set_clock(g_loop, tt_loop_now(g_loop) + rtt_ms, 0);
    assert_true(peer_send(peer, resp, n));
    uint64_t start = peer_ms();
    while (!e.done && !e.failed && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_true(e.done);
}

/* Moves the loop's clock to `at` and runs turns until `*v` equals `want` (bounded). */
static void run_at_until(uint64_t at, tt_gauge_t *v, int64_t want)
{
    tt_loop_set_clock(g_loop, at, 0);
    uint64_t start = peer_ms();
    while (LOAD(*v) != want && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(*v), want);
}

/* Keep-Alive: timeout=2 and a measured round trip of 10 ms: margin 3 x 10 + 4 x 5 = 50 ms, so the connection
 * parked at t0 + 10 leaves service at t0 + 10 + 1950, not at the fixed hint_margin (2 s - 1 s). */
static void retires_a_hinted_connection_a_measured_margin_before_the_hint(void **state)
{
    (void)state;
    g_conf.learn_above_hint = false; /* no canary: it is retired at the deadline */
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    assert_true(u->handshake_us > 0);
    assert_int_equal(LOAD(g_m.handshake_us), u->handshake_us);
    assert_int_equal(LOAD(g_m.margin_ms), 0); /* nothing measured yet */
    exchange_timed(p, u, peer, OK2_HINT2, 10);
    assert_int_equal(LOAD(g_m.rtt_us), 10000);
    assert_int_equal(LOAD(g_m.margin_ms), 50);
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_loop_set_clock(g_loop, t0 + 10 + 1949, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(LOAD(g_m.idle), 1);
    run_at_until(t0 + 10 + 1950, &g_m.idle, 0);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_HINT_DEADLINE]), 1);
    tt_pool_free(&p);
    close(peer);
}

/* Two connections with Keep-Alive: timeout=1, parked at t0 (A) and t0 + 500 (B). Nothing is known above the hint:
 * each leaves service at its hint deadline but stays open as a canary. The server closes A at 2 s: every close seen
 * came after the hint, so the deadline follows it (2 s - 25 ms), and B (1.5 s old) goes back in service. Returns
 * B, parked; `peer_b` is its server end. */
static tt_upconn_t *learn_above_a_hint_of_one_second(tt_pool_t *p, uint64_t t0, int *peer_b)
{
    wrec_t ra, rb;
    int peer_a;
    tt_upconn_t *a = get_conn(p, &ra, &peer_a);
    tt_upconn_t *b = get_conn(p, &rb, peer_b);
    exchange_timed(p, a, peer_a, OK2_HINT1, 0); /* margin: the floor, 25 ms */
    tt_loop_set_clock(g_loop, t0 + 500, 0);
    exchange_timed(p, b, *peer_b, OK2_HINT1, 0);
    assert_int_equal(LOAD(g_m.idle), 2);
    run_at_until(t0 + 975, &g_m.canaries, 1); /* A at its hint deadline */
    assert_int_equal(LOAD(g_m.idle), 1);
    run_at_until(t0 + 500 + 975, &g_m.canaries, 2); /* B too: nothing is known yet, several may learn */
    assert_int_equal(LOAD(g_m.idle), 0);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_HINT_DEADLINE]), 0);
    assert_int_equal(LOAD(g_m.above_ms), 0);
    tt_loop_set_clock(g_loop, t0 + 2000, 0);
    close(peer_a); /* the server keeps connections 2 s, not the 1 s it says */
    run_at_until(t0 + 2000, &g_m.canaries, 0);
    assert_int_equal(LOAD(g_m.above_ms), 2000);
    assert_int_equal(LOAD(g_m.idle), 1); /* B, back in service */
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_PEER_CLOSED_IDLE]), 1);
    return b;
}

/* Keep-Alive: timeout=1, nothing known above it: at its deadline (975 ms) the connection leaves service as a probe
 * canary. A request that can be replayed takes it (a request canary) until 1.5 x the hint; one that cannot never
 * does; answered, it is parked again with its idle time starting anew. */
static void lets_only_a_replayable_request_take_a_connection_past_its_deadline(void **state)
{
    (void)state;
    g_conf.canary_requests = true;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t r, rn, ro;
    int peer, peer_n, peer_o;
    tt_upconn_t *a = get_conn(p, &r, &peer);
    exchange_timed(p, a, peer, OK2_HINT1, 0);
    run_at_until(t0 + 975, &g_m.canaries, 1);
    tt_loop_set_clock(g_loop, t0 + 1200, 0);
    assert_int_equal(acquire_as(p, &r, AS_PROBE), TT_POOL_READY);
    assert_ptr_equal(r.u, a);
    assert_true(r.w.canary);
    assert_int_equal(r.w.open_reason, TT_OPEN_REUSED);
    assert_int_equal(LOAD(g_m.canaries), 0);
    exchange_timed(p, a, peer, OK2_HINT1, 0); /* answered: parked again at t0 + 1200, in service */
    assert_int_equal(LOAD(g_m.canary_requests[0]), 1);
    assert_int_equal(LOAD(g_m.idle), 1);
    run_at_until(t0 + 1200 + 975, &g_m.canaries, 1);
    /* a request that cannot be replayed never takes it: a new connection (kept busy) */
    tt_loop_set_clock(g_loop, t0 + 1200 + 1400, 0);
    assert_int_equal(acquire_as(p, &rn, AS_NOT_REPLAYABLE | AS_PROBE), TT_POOL_PENDING);
    assert_true(peer_run_until(g_loop, &rn.called, 5000));
    assert_int_equal(rn.st, TT_POOL_READY);
    assert_ptr_not_equal(rn.u, a);
    assert_false(rn.w.canary);
    peer_n = peer_accept(g_lfd, 5000);
    assert_true(peer_n >= 0);
    assert_int_equal(LOAD(g_m.canaries), 1);
    /* 1.5 x the hint idle: too old even for a request canary */
    tt_loop_set_clock(g_loop, t0 + 1200 + 1500, 0);
    assert_int_equal(acquire_as(p, &ro, AS_PROBE), TT_POOL_PENDING);
    assert_true(peer_run_until(g_loop, &ro.called, 5000));
    assert_ptr_not_equal(ro.u, a);
    assert_false(ro.w.canary);
    peer_o = peer_accept(g_lfd, 5000);
    assert_true(peer_o >= 0);
    assert_int_equal(LOAD(g_m.canaries), 1);
    exchange_timed(p, rn.u, peer_n, OK2, 0);
    exchange_timed(p, ro.u, peer_o, OK2, 0);
    tt_pool_free(&p);
    close(peer), close(peer_n), close(peer_o);
}

/* A request that cannot be replayed and finds nothing parked while a connection is busy waits for it, at most
 * 2 x srtt + 4 x rttvar (here 2 x 10 + 4 x 5 = 40 ms): the connection released takes it at once; when the wait
 * runs out a new one is opened. */
static void waits_for_a_connection_finishing_its_exchange_and_opens_when_the_wait_runs_out(void **state)
{
    (void)state;
    g_conf.reuse_wait_ms = 50;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t r1, r2, r3;
    int peer, peer3;
    tt_upconn_t *a = get_conn(p, &r1, &peer);
    exchange_timed(p, a, peer, OK2, 10); /* one round trip measured: 10 ms */
    assert_int_equal(acquire(p, &r1), TT_POOL_READY);
    assert_int_equal(acquire_as(p, &r2, AS_NOT_REPLAYABLE), TT_POOL_PENDING);
    assert_int_equal(LOAD(g_m.active), 1); /* no connect started */
    exchange_timed(p, a, peer, OK2, 10);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.st, TT_POOL_READY);
    assert_ptr_equal(r2.u, a);
    assert_int_equal(r2.w.open_reason, TT_OPEN_REUSED);
    assert_true(r2.w.waited_ms >= 1);
    assert_int_equal(LOAD(g_m.reuse_waits[0]), 1);
    assert_int_equal(LOAD(g_m.opened), 1);
    /* a is busy again (r2): the next one waits, and when its wait runs out, opens */
    uint64_t t1 = tt_loop_now(g_loop);
    assert_int_equal(acquire_as(p, &r3, AS_NOT_REPLAYABLE), TT_POOL_PENDING);
    tt_loop_set_clock(g_loop, t1 + 30, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(r3.calls, 0);
    assert_int_equal(LOAD(g_m.opened), 1);
    tt_loop_set_clock(g_loop, t1 + 60, 0);
    assert_true(peer_run_until(g_loop, &r3.called, 5000));
    assert_int_equal(r3.st, TT_POOL_READY);
    assert_ptr_not_equal(r3.u, a);
    assert_int_equal(r3.w.open_reason, TT_OPEN_NONE_PARKED);
    assert_int_equal(LOAD(g_m.reuse_waits[1]), 1);
    assert_int_equal(LOAD(g_m.opened), 2);
    peer3 = peer_accept(g_lfd, 5000);
    assert_true(peer3 >= 0);
    exchange_timed(p, a, peer, OK2, 0);
    exchange_timed(p, r3.u, peer3, OK2, 0);
    (void)t0;
    tt_pool_free(&p);
    close(peer), close(peer3);
}

static void learns_above_a_hint_from_canaries_and_puts_them_back_in_service(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    int peer_b;
    tt_upconn_t *b = learn_above_a_hint_of_one_second(p, t0, &peer_b);
    /* B, 1.5 s idle with a 1 s hint, carries the next request */
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_READY);
    assert_ptr_equal(r.u, b);
    assert_int_equal(r.w.open_reason, TT_OPEN_REUSED);
    assert_int_equal(LOAD(g_m.opened), 2);
    exchange_timed(p, b, peer_b, OK2_HINT1, 0); /* parked at t0 + 2000, deadline 2000 - 25 ms later */
    tt_loop_set_clock(g_loop, t0 + 2000 + 1974, 0);
    peer_run_for(g_loop, 10);
    assert_int_equal(LOAD(g_m.idle), 1);
    /* at its deadline: retired (a canary to follow growth comes at most every 30 s, and one just ran) */
    run_at_until(t0 + 2000 + 1975, &g_m.idle, 0);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_ABOVE_HINT]), 1);
    assert_int_equal(LOAD(g_m.canaries), 0);
    tt_pool_free(&p);
    close(peer_b);
}

/* After learning above the hint, B is parked with the learned deadline (2 s - 25 ms); the server closes it at
 * 1.2 s: the first close earlier than the deadline goes back to the hint at once, and is counted. */
static void falls_back_to_the_hint_at_the_first_close_before_the_learned_deadline(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    int peer_b;
    tt_upconn_t *b = learn_above_a_hint_of_one_second(p, t0, &peer_b);
    wrec_t r;
    assert_int_equal(acquire(p, &r), TT_POOL_READY);
    exchange_timed(p, b, peer_b, OK2_HINT1, 0); /* parked at t0 + 2000 */
    /* a second connection, parked at t0 + 2100 with the learned deadline */
    wrec_t rc;
    int peer_c;
    wrec_t rd;
    assert_int_equal(acquire(p, &rd), TT_POOL_READY); /* B again */
    tt_upconn_t *c = get_conn(p, &rc, &peer_c);
    tt_loop_set_clock(g_loop, t0 + 2100, 0);
    exchange_timed(p, c, peer_c, OK2_HINT1, 0);
    exchange_timed(p, b, peer_b, OK2_HINT1, 0);
    assert_int_equal(LOAD(g_m.idle), 2);
    tt_loop_set_clock(g_loop, t0 + 2100 + 1200, 0);
    close(peer_b); /* 1.2 s: before the learned 1975 ms */
    run_at_until(t0 + 2100 + 1200, &g_m.idle, 0);
    /* back to the hint: C, 1.2 s old, is past its hint deadline now and leaves service, not as a canary
     * (learning is suspended after a fallback) */
    assert_int_equal(LOAD(g_m.learn_fallbacks), 1);
    assert_int_equal(LOAD(g_m.above_ms), 0);
    assert_int_equal(LOAD(g_m.canaries), 0);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_HINT_DEADLINE]), 1);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_PEER_CLOSED_IDLE]), 2);
    tt_pool_free(&p);
    close(peer_c);
}

/* The server sends no hint and nothing is learned yet: a request that cannot be replayed takes a parked
 * connection only while it has been idle less than safe_idle (250 ms); a replayable one takes it whatever its
 * age. Once a close teaches the pool the server's timeout, the deadline is known and binds both. */
static void holds_non_replayable_requests_to_safe_idle_until_the_timeout_is_known(void **state)
{
    (void)state;
    g_conf.safe_idle_ms = 250;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t ra;
    int peer_a;
    tt_upconn_t *a = get_conn(p, &ra, &peer_a);
    exchange_timed(p, a, peer_a, OK2, 0); /* parked at t0 */
    tt_loop_set_clock(g_loop, t0 + 249, 0);
    wrec_t r;
    assert_int_equal(acquire_as(p, &r, AS_NOT_REPLAYABLE), TT_POOL_READY);
    assert_ptr_equal(r.u, a);
    exchange(p, a, peer_a, OK2, false); /* parked at t0 + 249 */
    tt_loop_set_clock(g_loop, t0 + 249 + 250, 0);
    assert_int_equal(acquire_as(p, &r, AS_NOT_REPLAYABLE), TT_POOL_PENDING); /* 250 ms idle: a new one */
    assert_int_equal(r.w.open_reason, TT_OPEN_NOT_REPLAYABLE);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_NOT_REPLAYABLE]), 1);
    assert_true(peer_run_until(g_loop, &r.called, 5000));
    int peer_c = peer_accept(g_lfd, 5000);
    assert_true(peer_c >= 0);
    tt_upconn_t *c = r.u;
    /* a replayable request takes A, older still */
    wrec_t rr;
    assert_int_equal(acquire(p, &rr), TT_POOL_READY);
    assert_ptr_equal(rr.u, a);
    exchange(p, a, peer_a, OK2, false); /* parked at t0 + 499 */
    exchange(p, c, peer_c, OK2, false); /* parked at t0 + 499 */
    /* the server closes A after 700 ms: learned 700 ms, deadline 350 ms (the sweep allowance, half) */
    tt_loop_set_clock(g_loop, t0 + 499 + 700, 0);
    close(peer_a);
    uint64_t start = peer_ms();
    while (LOAD(g_m.learned_ms) == 0 && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_int_equal(LOAD(g_m.learned_ms), 700);
    /* C (700 ms old) is past its new deadline: retired next turn; a new C' parked now is known */
    run_at_until(t0 + 499 + 700, &g_m.idle, 0);
    wrec_t rn;
    int peer_n;
    tt_upconn_t *n = get_conn(p, &rn, &peer_n);
    exchange(p, n, peer_n, OK2, false); /* parked at t0 + 1199, deadline 350 ms */
    tt_loop_set_clock(g_loop, t0 + 1199 + 300, 0);
    assert_int_equal(acquire_as(p, &r, AS_NOT_REPLAYABLE), TT_POOL_READY); /* 300 ms > safe_idle, but known */
    assert_ptr_equal(r.u, n);
    exchange(p, n, peer_n, OK2, false);
    tt_pool_free(&p);
    close(peer_c), close(peer_n);
}

/* Why a new connection was opened: past_deadline while the server would still keep the connection retired at its
 * hint deadline, none_parked after that; max_reached after a connection was used up; fresh_only and replay as the
 * request asked. */
static void names_why_a_new_connection_was_opened(void **state)
{
    (void)state;
    g_conf.learn_above_hint = false;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    assert_int_equal(r.w.open_reason, TT_OPEN_NONE_PARKED);
    exchange_timed(p, u, peer, OK2_HINT1, 0); /* parked at t0: deadline 975 ms, the server keeps it 1000 */
    run_at_until(t0 + 975, &g_m.idle, 0);
    tt_loop_set_clock(g_loop, t0 + 990, 0);
    wrec_t r2;
    int peer2;
    tt_upconn_t *u2 = get_conn(p, &r2, &peer2);
    assert_int_equal(r2.w.open_reason, TT_OPEN_PAST_DEADLINE);
    exchange_timed(p, u2, peer2, OK2_HINT1, 0); /* parked at t0 + 990 */
    run_at_until(t0 + 990 + 975, &g_m.idle, 0);
    tt_loop_set_clock(g_loop, t0 + 990 + 1000, 0); /* the server would have closed it by now */
    wrec_t r3;
    int peer3;
    tt_upconn_t *u3 = get_conn(p, &r3, &peer3);
    assert_int_equal(r3.w.open_reason, TT_OPEN_NONE_PARKED);
    /* used up: max= 0 from the server */
    exchange(p, u3, peer3, RESP("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max=0\r\n\r\nok"),
             false);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_MAX_REQUESTS]), 1);
    wrec_t r4;
    int peer4;
    tt_upconn_t *u4 = get_conn(p, &r4, &peer4);
    assert_int_equal(r4.w.open_reason, TT_OPEN_MAX_REACHED);
    exchange(p, u4, peer4, OK2, false);
    /* parked, but the request wants a new one */
    assert_int_equal(acquire_as(p, &r, AS_FRESH_ONLY), TT_POOL_PENDING);
    assert_int_equal(r.w.open_reason, TT_OPEN_FRESH_ONLY);
    tt_pool_cancel(&r.w); /* its connection parks when it connects */
    wrec_t r5;
    assert_int_equal(acquire_as(p, &r5, AS_FRESH_ONLY | AS_REPLAY), TT_POOL_PENDING);
    assert_int_equal(r5.w.open_reason, TT_OPEN_REPLAY);
    assert_true(peer_run_until(g_loop, &r5.called, 5000));
    int peer5 = peer_accept(g_lfd, 5000), peer6 = peer_accept(g_lfd, 5000);
    assert_true(peer5 >= 0 && peer6 >= 0);
    tt_pool_discard(p, r5.u, TT_RETIRE_ERROR);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_NONE_PARKED]), 2);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_PAST_DEADLINE]), 1);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_MAX_REACHED]), 1);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_FRESH_ONLY]), 1);
    assert_int_equal(LOAD(g_m.opens[TT_OPEN_REPLAY]), 1);
    tt_pool_free(&p);
    close(peer), close(peer2), close(peer3), close(peer4), close(peer5), close(peer6);
}

/* A reused connection whose request meets the server's close before any response byte: the server closed it at
 * (about) that idle age, which the learner takes as a close seen. */
static void learns_from_a_reused_connection_closed_under_its_request(void **state)
{
    (void)state;
    tt_pool_t *p = new_pool(&g_addr);
    uint64_t t0 = manual_clock();
    wrec_t r;
    int peer;
    tt_upconn_t *u = get_conn(p, &r, &peer);
    exchange_timed(p, u, peer, OK2, 0); /* parked at t0 */
    tt_loop_set_clock(g_loop, t0 + 800, 0);
    wrec_t r2;
    assert_int_equal(acquire(p, &r2), TT_POOL_READY);
    ex_t e = {.p = p};
    tt_upconn_set_user(u, &ex_ops, &e);
    tt_upconn_begin(u, false);
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    tt_upconn_send(u, req, sizeof(req) - 1);
    tt_upconn_end_request(u);
    peer_reset(peer); /* the server's idle close crosses the request */
    uint64_t start = peer_ms();
    while (!e.done && !e.failed && peer_ms() - start < 5000) tt_loop_run_once(g_loop, 5);
    assert_true(e.failed);
    assert_int_equal(LOAD(g_m.learned_ms), 800);
    tt_pool_free(&p);
}

/* The server's name moved (tt_pool_set_addrs): a parked connection to the old address is retired at once, a busy one
 * when its exchange ends (never under it), and new connections go to the new address, naming why. The same set in
 * another order changes nothing. */
static void follows_the_addresses_of_its_name_and_retires_the_others_when_idle(void **state)
{
    (void)state;
    tt_addr_t other;
    int lfd2 = peer_listen(&other);
    assert_true(lfd2 >= 0);
    tt_pool_t *p = new_pool(&g_addr);
    wrec_t ra, rb;
    int pa, pb;
    tt_upconn_t *a = get_conn(p, &ra, &pa);
    tt_upconn_t *b = get_conn(p, &rb, &pb);
    exchange(p, a, pa, OK2, false); /* parked; b stays checked out */
    tt_addr_t both[2] = {other, g_addr};
    tt_pool_set_addrs(p, both, 2); /* the old address is still in the set: nothing moves */
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_DNS_CHANGED]), 0);
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_pool_set_addrs(p, &other, 1);
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_DNS_CHANGED]), 1); /* the parked one */
    assert_int_equal(LOAD(g_m.idle), 0);
    assert_int_equal(b->state, TT_UPCONN_READY);                   /* the busy one is left alone... */
    exchange(p, b, pb, OK2, false);                                /* ...its exchange completes... */
    assert_int_equal(LOAD(g_m.retired[TT_RETIRE_DNS_CHANGED]), 2); /* ...and then it goes */
    assert_int_equal(LOAD(g_m.idle), 0);
    wrec_t rc;
    assert_int_equal(acquire(p, &rc), TT_POOL_PENDING); /* a new connection, to the new address */
    assert_int_equal(rc.w.open_reason, TT_OPEN_DNS_CHANGED);
    assert_true(peer_run_until(g_loop, &rc.called, 5000));
    assert_int_equal(rc.st, TT_POOL_READY);
    int pc = peer_accept(lfd2, 5000);
    assert_true(pc >= 0);
    exchange(p, rc.u, pc, OK2, false);
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_addr_t same[2] = {other, other};
    tt_pool_set_addrs(p, same, 1); /* the same set again */
    assert_int_equal(LOAD(g_m.idle), 1);
    tt_pool_free(&p);
    close(pa), close(pb), close(pc), close(lfd2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parks_a_healthy_connection),
        cmocka_unit_test(retires_a_connection_whose_address_left_the_name_when_it_ends),
        cmocka_unit_test(retires_for_the_first_failing_check_in_order),
        cmocka_unit_test(agrees_with_the_order_for_every_combination),
        cmocka_unit_test(parks_for_the_idle_timeout_alone),
        cmocka_unit_test(retires_before_a_hinted_timeout_by_the_measured_margin),
        cmocka_unit_test(follows_closes_seen_above_the_hint_only_past_the_hint),
        cmocka_unit_test(ignores_the_hint_when_keepalive_hint_is_off),
        cmocka_unit_test(uses_the_learned_timeout_only_without_a_hint),
        cmocka_unit_test(stops_at_the_end_of_the_lifetime),
        cmocka_unit_test(never_parks_past_any_limit),
        cmocka_unit_test(smooths_round_trips_as_rfc_6298_does),
        cmocka_unit_test(computes_the_margin_from_round_trips_between_floor_and_hint_margin),
        cmocka_unit_test(bounds_the_reuse_wait_by_the_measured_round_trip),
        cmocka_unit_test(learns_the_youngest_close_canaries_see),
        cmocka_unit_test(falls_back_at_the_first_close_earlier_than_a_learned_deadline),
        cmocka_unit_test(names_every_retire_reason),
        cmocka_unit_test(names_every_proxy_cause),
        cmocka_unit_test(derives_tcp_keepalive_from_the_idle_timeout),
#define LIVE(f) cmocka_unit_test_setup_teardown(f, live_setup, live_teardown)
        LIVE(opens_a_connection_and_parks_it_after_the_exchange),
        LIVE(reuses_the_most_recently_parked_connection_first),
        LIVE(queues_at_max_connections_and_serves_the_oldest_waiter_once),
        LIVE(times_out_a_queued_request_on_the_loops_clock),
        LIVE(marks_the_server_down_after_max_fails),
        LIVE(calls_a_queued_waiter_back_once_when_its_connect_fails_at_once),
        LIVE(retires_a_connection_with_bytes_after_the_response),
        LIVE(retires_a_connection_answered_before_its_request_was_sent),
        LIVE(retires_a_parked_connection_on_stray_bytes_and_learns_only_from_closes),
        LIVE(checks_a_connection_with_news_in_this_batch_before_reusing_it),
        LIVE(retires_at_the_parked_deadline_on_the_loops_clock),
        LIVE(closes_the_least_recently_used_over_max_idle),
        LIVE(never_reuses_a_connection_past_its_deadline_when_the_loop_is_late),
        LIVE(backs_off_once_when_a_probe_connect_fails_at_once),
        LIVE(shares_its_health_with_the_servers_http2_pool),
        LIVE(retires_a_hinted_connection_a_measured_margin_before_the_hint),
        LIVE(lets_only_a_replayable_request_take_a_connection_past_its_deadline),
        LIVE(waits_for_a_connection_finishing_its_exchange_and_opens_when_the_wait_runs_out),
        LIVE(learns_above_a_hint_from_canaries_and_puts_them_back_in_service),
        LIVE(falls_back_to_the_hint_at_the_first_close_before_the_learned_deadline),
        LIVE(holds_non_replayable_requests_to_safe_idle_until_the_timeout_is_known),
        LIVE(names_why_a_new_connection_was_opened),
        LIVE(learns_from_a_reused_connection_closed_under_its_request),
        LIVE(follows_the_addresses_of_its_name_and_retires_the_others_when_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
