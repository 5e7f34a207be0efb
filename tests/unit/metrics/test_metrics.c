/* test_metrics.c -- the Prometheus renderer (src/metrics/metrics.c): histogram lines with and without labels,
 * summed over shards; listener series summed by name with escaped label values; per-reason histograms only for
 * reasons seen; build info and start time */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "metrics/metrics.h"

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static void text_free(text_t *t)
{
    free(t->p);
    *t = (text_t){0};
}

static const uint64_t bounds3[] = {10, 100, 1000};

static void a_histogram_is_cumulative_and_summed_over_shards(void **state)
{
    (void)state;
    tt_hist_t a = {0}, b = {0};
    tt_hist_observe(&a, bounds3, 3, 5);    /* le 10 */
    tt_hist_observe(&a, bounds3, 3, 100);  /* le 100 (bounds are inclusive) */
    tt_hist_observe(&b, bounds3, 3, 5000); /* +Inf */
    const tt_hist_t *h[2] = {&a, &b};
    text_t t = {0};
    tt_metrics_render_hist(&t.p, &t.len, &t.cap, "x_seconds", "l=\"v\"", h, 2, bounds3, 3, 0.001);
    assert_string_equal(t.p, "x_seconds_bucket{l=\"v\",le=\"0.01\"} 1\n"
                             "x_seconds_bucket{l=\"v\",le=\"0.1\"} 2\n"
                             "x_seconds_bucket{l=\"v\",le=\"1\"} 2\n"
                             "x_seconds_bucket{l=\"v\",le=\"+Inf\"} 3\n"
                             "x_seconds_sum{l=\"v\"} 5.105\n"
                             "x_seconds_count{l=\"v\"} 3\n");
    text_free(&t);
}

static void a_histogram_without_labels_has_no_braces_on_sum_and_count(void **state)
{
    (void)state;
    tt_hist_t a = {0};
    tt_hist_observe(&a, bounds3, 3, 20);
    const tt_hist_t *h[1] = {&a};
    text_t t = {0};
    tt_metrics_render_hist(&t.p, &t.len, &t.cap, "n", "", h, 1, bounds3, 3, 1.0);
    assert_string_equal(t.p, "n_bucket{le=\"10\"} 0\n"
                             "n_bucket{le=\"100\"} 1\n"
                             "n_bucket{le=\"1000\"} 1\n"
                             "n_bucket{le=\"+Inf\"} 1\n"
                             "n_sum 20\n"
                             "n_count 1\n");
    text_free(&t);
}

static void latency_bounds_fit_and_rise(void **state)
{
    (void)state;
    assert_true(tt_hist_lat_nbounds < TT_HIST_MAX_BUCKETS);
    assert_true(tt_hist_life_nbounds < TT_HIST_MAX_BUCKETS);
    for (size_t i = 1; i < tt_hist_lat_nbounds; i++) assert_true(tt_hist_lat_bounds[i] > tt_hist_lat_bounds[i - 1]);
    for (size_t i = 1; i < tt_hist_life_nbounds; i++) assert_true(tt_hist_life_bounds[i] > tt_hist_life_bounds[i - 1]);
    assert_int_equal(tt_hist_lat_bounds[0], 500);                            /* 0.5 ms */
    assert_int_equal(tt_hist_lat_bounds[tt_hist_lat_nbounds - 1], 60000000); /* 60 s */
}

/* Two workers, three listeners: two named "edge" (one per address) and one with a name to escape. */
static void listener_series_are_one_per_name(void **state)
{
    (void)state;
    tt_listener_metrics_t l0[3] = {{.name = "edge"}, {.name = "edge"}, {.name = "q\"b\\"}};
    tt_listener_metrics_t l1[3] = {{.name = "edge"}, {.name = "edge"}, {.name = "q\"b\\"}};
    tt_metrics_shard_t *s0 = calloc(1, sizeof(*s0)), *s1 = calloc(1, sizeof(*s1));
    s0->listeners = l0;
    s1->listeners = l1;
    s0->nlisteners = s1->nlisteners = 3;
    tt_counter_add(&l0[0].races[TT_CLOSE_IDLE_TIMEOUT], 1);
    tt_counter_add(&l0[1].races[TT_CLOSE_IDLE_TIMEOUT], 2);
    tt_counter_add(&l1[1].races[TT_CLOSE_IDLE_TIMEOUT], 4);
    tt_hist_observe(&l1[0].request_us[TT_PROTO_H2], tt_hist_lat_bounds, tt_hist_lat_nbounds, 700);
    tt_hist_observe(&l0[1].race_gap_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, 1001);
    tt_metrics_conn_closed(s0, TT_CLOSE_EVICTED, 2500, 3);
    tt_metrics_set_start_time(1700000000);
    tt_metrics_set_start_time(1800000000); /* the first call wins */
    tt_metrics_shard_t *shards[2] = {s0, s1};
    text_t t = {0};
    tt_metrics_render(shards, 2, &t.p, &t.len, &t.cap);
    assert_non_null(strstr(t.p, "tether_close_races_total{listener=\"edge\",reason=\"idle_timeout\"} 7\n"));
    assert_non_null(strstr(t.p, "tether_close_races_total{listener=\"q\\\"b\\\\\",reason=\"idle_timeout\"} 0\n"));
    const char *first = strstr(t.p, "tether_close_races_total{listener=\"edge\",reason=\"evicted\"}");
    assert_non_null(first);
    assert_null(strstr(first + 1, "tether_close_races_total{listener=\"edge\",reason=\"evicted\"}"));
    assert_non_null(strstr(t.p,
                           "tether_request_duration_seconds_bucket{listener=\"edge\",protocol=\"h2\",le=\"0.0005\"} "
                           "0\ntether_request_duration_seconds_bucket{listener=\"edge\",protocol=\"h2\",le=\"0."
                           "001\"} 1\n"));
    assert_non_null(strstr(t.p, "tether_request_duration_seconds_count{listener=\"edge\",protocol=\"http1\"} 0\n"));
    assert_non_null(strstr(t.p, "tether_close_race_gap_seconds_sum{listener=\"edge\"} 1.001\n"));
    assert_non_null(strstr(t.p, "tether_close_race_gap_seconds_bucket{listener=\"edge\",le=\"1\"} 0\n"));
    assert_non_null(strstr(t.p, "tether_close_race_gap_seconds_bucket{listener=\"edge\",le=\"2.5\"} 1\n"));
    /* per-reason histograms: only the reasons that closed connections */
    assert_non_null(strstr(t.p, "tether_connection_lifetime_seconds_bucket{reason=\"evicted\",le=\"1\"} 0\n"));
    assert_non_null(strstr(t.p, "tether_connection_lifetime_seconds_bucket{reason=\"evicted\",le=\"5\"} 1\n"));
    assert_non_null(strstr(t.p, "tether_connection_requests_sum{reason=\"evicted\"} 3\n"));
    assert_null(strstr(t.p, "tether_connection_requests_count{reason=\"idle_timeout\"}"));
    assert_non_null(strstr(t.p, "# TYPE tether_connection_requests histogram\n"));
    assert_non_null(strstr(t.p, "tether_build_info{version=\"" TETHER_VERSION "\"} 1\n"));
    assert_non_null(strstr(t.p, "tether_start_time_seconds 1700000000\n"));
    assert_non_null(strstr(t.p, "tether_tls_handshake_seconds_count{resumed=\"true\"} 0\n"));
    text_free(&t);
    free(s0);
    free(s1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_histogram_is_cumulative_and_summed_over_shards),
        cmocka_unit_test(a_histogram_without_labels_has_no_braces_on_sum_and_count),
        cmocka_unit_test(latency_bounds_fit_and_rise),
        cmocka_unit_test(listener_series_are_one_per_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
