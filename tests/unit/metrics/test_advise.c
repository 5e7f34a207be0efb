/* test_advise.c -- the advisor (src/metrics/advise.c) on recorded /metrics snapshots (tests/unit/metrics/snapshots)
 * and on small inline ones: each piece of advice names the key, its current and suggested value, with the numbers */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "metrics/advise.h"
#include "metrics/metrics.h"

#define MAX 64

typedef struct run {
    tt_snapshot_t snap;
    tt_advice_t adv[MAX];
    size_t n;
    char *text;
} run_t;

static run_t *advise_text(const char *text)
{
    run_t *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_int_equal(tt_snapshot_parse(&r->snap, text, strlen(text)), 0);
    r->n = tt_advise(&r->snap, r->adv, MAX);
    size_t len = 0, cap = 0;
    tt_advice_render_text(r->adv, r->n, &r->text, &len, &cap);
    print_message("%s", r->text);
    return r;
}

static run_t *advise_file(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/unit/metrics/snapshots/%s", TT_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return advise_text(buf);
}

static void run_free(run_t *r)
{
    tt_snapshot_free(&r->snap);
    free(r->text);
    free(r);
}

/* The advice on `key` for `name` at `level`, failing the test when there is none. */
static const tt_advice_t *must_find(const run_t *r, const char *name, const char *key, tt_advice_level_t level)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->adv[i].name, name) == 0 && strcmp(r->adv[i].key, key) == 0 && r->adv[i].level == level)
            return &r->adv[i];
    fail_msg("no %s advice on %s for '%s'", tt_advice_level_name(level), key, name);
    return NULL;
}

static bool any(const run_t *r, const char *name, const char *key, tt_advice_level_t level)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->adv[i].name, name) == 0 && strcmp(r->adv[i].key, key) == 0 && r->adv[i].level == level)
            return true;
    return false;
}

static void races_behind_a_balancer_raise_the_idle_timeout_above_its_gaps(void **state)
{
    (void)state;
    run_t *r = advise_file("race_balancer.prom");
    const tt_advice_t *a = must_find(r, "default", "idle_timeout", TT_ADVICE_CHANGE);
    assert_string_equal(a->scope, "listener");
    assert_string_equal(a->section, "[keepalive]");
    assert_string_equal(a->current, "5s");
    assert_string_equal(a->suggested, "70s"); /* above the 60 s bucket the gaps reach, with room */
    assert_non_null(strstr(a->reason, "12 races"));
    assert_non_null(strstr(a->reason, "idle_timeout 9"));
    assert_non_null(strstr(a->reason, "up to 59.7s idle")); /* p99 of the race gaps */
    assert_non_null(strstr(a->reason, "your idle timeout is 5s: raise it above 60s"));
    /* the reuse gaps it did keep sit below the timeout, and the page says so with the percentiles */
    const tt_advice_t *g = must_find(r, "default", "idle_timeout", TT_ADVICE_OK);
    assert_non_null(strstr(g->reason, "792 reuses"));
    assert_non_null(strstr(g->reason, "p99"));
    /* nothing evicted: max_connections is fine */
    must_find(r, "", "max_connections", TT_ADVICE_OK);
    run_free(r);
}

static void pressure_says_max_connections_is_too_low(void **state)
{
    (void)state;
    run_t *r = advise_file("busy_proxy.prom");
    const tt_advice_t *a = must_find(r, "", "max_connections", TT_ADVICE_CHANGE);
    assert_string_equal(a->section, "[server]");
    assert_string_equal(a->current, "1000");
    assert_string_equal(a->suggested, "2000");
    assert_non_null(strstr(a->reason, "5093 idle connections evicted, 17 accept pauses and 20411 idle timeouts cut"));
    run_free(r);
}

static void adaptive_cuts_alone_say_max_connections_is_too_low(void **state)
{
    (void)state;
    run_t *r = advise_text("tether_max_connections 100\ntether_idle_timeout_cuts_total 35\n"
                           "tether_connections_closed_total{reason=\"evicted\"} 0\n");
    const tt_advice_t *a = must_find(r, "", "max_connections", TT_ADVICE_CHANGE);
    assert_string_equal(a->suggested, "200");
    assert_non_null(strstr(a->reason, "35 idle timeouts cut under pressure"));
    run_free(r);
}

static void reuse_gaps_far_below_a_long_idle_timeout_suggest_a_shorter_one(void **state)
{
    (void)state;
    run_t *r = advise_file("busy_proxy.prom");
    const tt_advice_t *a = must_find(r, "0.0.0.0:80", "idle_timeout", TT_ADVICE_NOTE);
    assert_string_equal(a->section, "[listen public]");
    assert_string_equal(a->current, "75s");
    assert_string_equal(a->suggested, "5s"); /* p99 is 0.97 s: twice that, but not below 5 s */
    assert_non_null(strstr(a->reason, "100000 reuses"));
    assert_non_null(strstr(a->reason, "1210 connections idle now"));
    run_free(r);
}

static void a_churning_pool_asks_for_more_max_idle(void **state)
{
    (void)state;
    run_t *r = advise_file("busy_proxy.prom");
    const tt_advice_t *a = must_find(r, "api", "max_idle", TT_ADVICE_CHANGE);
    assert_string_equal(a->section, "[upstream api]");
    assert_string_equal(a->current, "32");
    assert_string_equal(a->suggested, "64");
    assert_non_null(strstr(a->reason, "6200 connections opened for 20000 requests (69 % reused); 4100 closed"));
    must_find(r, "auth", "max_idle", TT_ADVICE_OK);
    run_free(r);
}

static void a_remote_upstream_without_tcp_keepalive_gets_one_below_nat_timeouts(void **state)
{
    (void)state;
    run_t *r = advise_file("busy_proxy.prom");
    const tt_advice_t *a = must_find(r, "api", "tcp_keepalive", TT_ADVICE_CHANGE);
    assert_string_equal(a->current, "off");
    assert_string_equal(a->suggested, "25s:5s:3");
    assert_non_null(strstr(a->reason, "10.0.0.5:8080 is not on loopback"));
    /* auth is on loopback: no NAT in between, no advice */
    assert_false(any(r, "auth", "tcp_keepalive", TT_ADVICE_CHANGE));
    assert_false(any(r, "auth", "tcp_keepalive", TT_ADVICE_OK));
    run_free(r);
}

static void a_learned_timeout_below_the_pools_and_a_raced_502_lower_it(void **state)
{
    (void)state;
    run_t *r = advise_file("busy_proxy.prom");
    const tt_advice_t *n = must_find(r, "auth", "idle_timeout", TT_ADVICE_NOTE);
    assert_string_equal(n->current, "60s");
    assert_string_equal(n->suggested, "3s"); /* below the learned 4 s */
    assert_non_null(strstr(n->reason, "after 4s (learned"));
    const tt_advice_t *c = must_find(r, "auth", "idle_timeout", TT_ADVICE_CHANGE);
    assert_string_equal(c->suggested, "3s");
    assert_non_null(strstr(c->reason, "1 answers were 502/503/504"));
    assert_non_null(strstr(c->reason, "4 replays (closed_before_response 4)"));
    /* api: stale reuses and replays absorbed, no generated answer: a note, no change */
    const tt_advice_t *api = must_find(r, "api", "idle_timeout", TT_ADVICE_NOTE);
    assert_non_null(strstr(api->reason, "3 stale reuses caught"));
    run_free(r);
}

static void a_pool_that_retires_what_the_server_would_keep_raises_its_idle_timeout(void **state)
{
    (void)state;
    run_t *r =
        advise_text("tether_upstream_pool_idle_timeout_seconds{upstream=\"u\"} 10\n"
                    "tether_upstream_requests_total{upstream=\"u\"} 1000\n"
                    "tether_upstream_connections_opened_total{upstream=\"u\",server=\"127.0.0.1:1\"} 400\n"
                    "tether_upstream_hinted_idle_timeout_seconds{upstream=\"u\",server=\"127.0.0.1:1\"} 120\n"
                    "tether_upstream_retired_total{upstream=\"u\",server=\"127.0.0.1:1\",reason=\"idle_timeout\"} "
                    "390\n");
    const tt_advice_t *a = must_find(r, "u", "idle_timeout", TT_ADVICE_CHANGE);
    assert_string_equal(a->current, "10s");
    assert_string_equal(a->suggested, "100s"); /* below the hinted 120 s, rounded down */
    assert_non_null(strstr(a->reason, "390 of 400 connections retired"));
    run_free(r);
}

static void reuses_crowding_the_timeout_note_that_clients_want_longer(void **state)
{
    (void)state;
    run_t *r = advise_text("tether_listener_idle_timeout_seconds{listener=\"l\",group=\"\"} 5\n"
                           "tether_idle_gap_seconds_bucket{le=\"1\"} 10\n"
                           "tether_idle_gap_seconds_bucket{le=\"2.5\"} 20\n"
                           "tether_idle_gap_seconds_bucket{le=\"5\"} 100\n"
                           "tether_idle_gap_seconds_bucket{le=\"+Inf\"} 100\n"
                           "tether_idle_gap_seconds_count 100\n");
    const tt_advice_t *a = must_find(r, "l", "idle_timeout", TT_ADVICE_NOTE);
    assert_string_equal(a->suggested, "10s");
    assert_non_null(strstr(a->reason, "80 % of reuses came in the second half"));
    run_free(r);
}

static void without_the_race_and_config_metrics_there_is_no_advice_from_them(void **state)
{
    (void)state;
    /* what a build without race detection and configuration gauges serves: no guess is made */
    tt_metrics_shard_t shard;
    memset(&shard, 0, sizeof(shard));
    tt_metrics_shard_t *shards[1] = {&shard};
    tt_counter_add(&shard.conn_closed[TT_CLOSE_EVICTED], 50);
    for (int i = 0; i < 100; i++) tt_hist_observe(&shard.idle_gap_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, 4900);
    char *out = NULL;
    size_t len = 0, cap = 0;
    tt_metrics_render(shards, 1, &out, &len, &cap);
    run_t *r = advise_text(out);
    assert_int_equal(r->n, 0);
    assert_non_null(strstr(r->text, "no advice"));
    run_free(r);
    free(out);
    /* races counted, but no idle timeout gauge to compare with: silent too */
    r = advise_text("tether_close_races_total{listener=\"a\",reason=\"x\"} 3\n");
    assert_int_equal(r->n, 0);
    run_free(r);
}

static void races_without_their_gap_histogram_still_name_the_key(void **state)
{
    (void)state;
    run_t *r = advise_text("tether_listener_idle_timeout_seconds{listener=\"l\",group=\"edge\"} 5\n"
                           "tether_close_races_total{listener=\"other-name\",reason=\"x\"} 4\n");
    /* the race counter names its listener differently: the only idle timeout there is applies */
    const tt_advice_t *a = must_find(r, "other-name", "idle_timeout", TT_ADVICE_CHANGE);
    assert_string_equal(a->section, "[listen edge]");
    assert_string_equal(a->current, "5s");
    assert_string_equal(a->suggested, "10s");
    assert_non_null(strstr(a->reason, "4 races (x 4)"));
    run_free(r);
}

static void json_output_is_one_array_of_objects(void **state)
{
    (void)state;
    run_t *r = advise_file("race_balancer.prom");
    char *out = NULL;
    size_t len = 0, cap = 0;
    tt_advice_render_json(r->adv, r->n, &out, &len, &cap);
    assert_true(len > 2 && out[0] == '[' && out[len - 1] == ']');
    assert_non_null(strstr(out, "{\"level\":\"change\",\"scope\":\"listener\",\"name\":\"default\","
                                "\"section\":\"[keepalive]\",\"key\":\"idle_timeout\",\"current\":\"5s\","
                                "\"suggested\":\"70s\",\"reason\":\"12 races"));
    free(out);
    run_free(r);
}

static void durations_are_written_as_config_values(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(tt_advise_fmt_dur(b, sizeof(b), 0), "0");
    assert_string_equal(tt_advise_fmt_dur(b, sizeof(b), 0.25), "250ms");
    assert_string_equal(tt_advise_fmt_dur(b, sizeof(b), 5), "5s");
    assert_string_equal(tt_advise_fmt_dur(b, sizeof(b), 59.67), "59.7s");
    assert_string_equal(tt_advise_fmt_dur(b, sizeof(b), 65), "65s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(races_behind_a_balancer_raise_the_idle_timeout_above_its_gaps),
        cmocka_unit_test(pressure_says_max_connections_is_too_low),
        cmocka_unit_test(adaptive_cuts_alone_say_max_connections_is_too_low),
        cmocka_unit_test(reuse_gaps_far_below_a_long_idle_timeout_suggest_a_shorter_one),
        cmocka_unit_test(a_churning_pool_asks_for_more_max_idle),
        cmocka_unit_test(a_remote_upstream_without_tcp_keepalive_gets_one_below_nat_timeouts),
        cmocka_unit_test(a_learned_timeout_below_the_pools_and_a_raced_502_lower_it),
        cmocka_unit_test(a_pool_that_retires_what_the_server_would_keep_raises_its_idle_timeout),
        cmocka_unit_test(reuses_crowding_the_timeout_note_that_clients_want_longer),
        cmocka_unit_test(without_the_race_and_config_metrics_there_is_no_advice_from_them),
        cmocka_unit_test(races_without_their_gap_histogram_still_name_the_key),
        cmocka_unit_test(json_output_is_one_array_of_objects),
        cmocka_unit_test(durations_are_written_as_config_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
