/* test_snapshot.c -- the Prometheus text parser (src/metrics/snapshot.c): samples, labels with escapes, comments,
 * malformed lines, timestamps, lookups by labels, histograms read back and their quantiles */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>

#include "metrics/metrics.h"
#include "metrics/snapshot.h"

static void parse(tt_snapshot_t *s, const char *text)
{
    assert_int_equal(tt_snapshot_parse(s, text, strlen(text)), 0);
}

static void samples_labels_and_values(void **state)
{
    (void)state;
    tt_snapshot_t s;
    parse(&s, "# HELP a_total Things.\n# TYPE a_total counter\n"
              "a_total 3\n"
              "b{x=\"1\",y=\"two words\"} -2.5\n"
              "c{} 1e3 1700000000000\n" /* a timestamp is ignored */
              "\n   \n"
              "d{q=\"a\\\"b\\\\c\\nd\"} +Inf\r\n"
              "e NaN");
    assert_int_equal(s.n, 5);
    assert_int_equal(s.skipped, 0);
    assert_string_equal(s.samples[0].name, "a_total");
    assert_true(s.samples[0].value == 3);
    assert_int_equal(s.samples[1].nlabels, 2);
    assert_string_equal(tt_sample_label(&s.samples[1], "y"), "two words");
    assert_true(s.samples[1].value == -2.5);
    assert_true(s.samples[2].value == 1000);
    assert_int_equal(s.samples[2].nlabels, 0);
    assert_string_equal(tt_sample_label(&s.samples[3], "q"), "a\"b\\c\nd");
    assert_true(isinf(s.samples[3].value));
    assert_true(isnan(s.samples[4].value));
    tt_snapshot_free(&s);
    assert_null(s.samples);
}

static void malformed_lines_are_skipped_not_fatal(void **state)
{
    (void)state;
    tt_snapshot_t s;
    parse(&s, "ok 1\n"
              "9bad 1\n"
              "nolabelend{a=\"1\" 2\n"
              "unquoted{a=1} 2\n"
              "novalue\n"
              "novalue2{a=\"x\"}\n"
              "junkvalue 12abc\n"
              "ok2{a=\"x\",} 2\n");
    assert_int_equal(s.n, 2);
    assert_int_equal(s.skipped, 6);
    assert_string_equal(s.samples[1].name, "ok2");
    tt_snapshot_free(&s);
    parse(&s, ""); /* empty text */
    assert_int_equal(s.n, 0);
    tt_snapshot_free(&s);
}

static void lookups_by_name_and_labels(void **state)
{
    (void)state;
    tt_snapshot_t s;
    parse(&s, "r{upstream=\"a\",reason=\"x\"} 1\n"
              "r{upstream=\"a\",reason=\"y\"} 2\n"
              "r{upstream=\"b\",reason=\"x\"} 4\n"
              "g 7\n");
    double v = -1;
    assert_true(tt_snapshot_value(&s, "g", NULL, &v));
    assert_true(v == 7);
    assert_false(tt_snapshot_value(&s, "missing", NULL, &v));
    size_t found;
    assert_true(tt_snapshot_sum(&s, "r", NULL, &found) == 7);
    assert_int_equal(found, 3);
    assert_true(tt_snapshot_sum(&s, "r", (const char *[]){"upstream", "a", NULL}, NULL) == 3);
    assert_true(tt_snapshot_sum(&s, "r", (const char *[]){"upstream", "a", "reason", "y", NULL}, NULL) == 2);
    assert_true(tt_snapshot_sum(&s, "r", (const char *[]){"upstream", "c", NULL}, &found) == 0);
    assert_int_equal(found, 0);
    assert_true(tt_snapshot_max(&s, "r", NULL, -1) == 4);
    assert_true(tt_snapshot_max(&s, "nothing", NULL, -1) == -1);
    const char *vals[4];
    assert_int_equal(tt_snapshot_label_values(&s, "r", NULL, "upstream", vals, 4), 2);
    assert_string_equal(vals[0], "a");
    assert_string_equal(vals[1], "b");
    assert_int_equal(tt_snapshot_label_values(&s, "r", NULL, "upstream", vals, 1), 1);
    tt_snapshot_free(&s);
}

static void histograms_sum_label_sets_and_give_quantiles(void **state)
{
    (void)state;
    tt_snapshot_t s;
    /* two protocols of one histogram; buckets listed out of order on purpose */
    parse(&s, "h_bucket{p=\"h1\",le=\"1\"} 10\n"
              "h_bucket{p=\"h1\",le=\"+Inf\"} 100\n"
              "h_bucket{p=\"h1\",le=\"10\"} 100\n"
              "h_bucket{p=\"h2\",le=\"1\"} 0\n"
              "h_bucket{p=\"h2\",le=\"10\"} 0\n"
              "h_bucket{p=\"h2\",le=\"+Inf\"} 0\n"
              "h_sum{p=\"h1\"} 420\n"
              "h_count{p=\"h1\"} 100\n");
    tt_snap_hist_t h;
    assert_int_equal(tt_snapshot_hist(&s, "h", NULL, &h), 0);
    assert_int_equal(h.n, 3);
    assert_true(h.le[0] == 1 && h.le[1] == 10 && isinf(h.le[2]));
    assert_true(h.cum[1] == 100 && h.count == 100 && h.sum == 420);
    /* rank 50 lies in (1, 10]: 1 + 9 * (50 - 10) / 90 = 5 */
    assert_true(fabs(tt_snap_hist_quantile(&h, 0.5) - 5) < 1e-9);
    assert_true(fabs(tt_snap_hist_quantile(&h, 0.1) - 1) < 1e-9);
    assert_true(tt_snap_hist_max_bound(&h) == 10);
    assert_true(tt_snap_hist_above(&h, 1) == 90);
    assert_true(tt_snap_hist_above(&h, 5) == 90); /* inside a bucket: never counts too many */
    assert_int_equal(tt_snapshot_hist(&s, "h", (const char *[]){"p", "h2", NULL}, &h), 0);
    assert_true(isnan(tt_snap_hist_quantile(&h, 0.5)));
    assert_true(isnan(tt_snap_hist_max_bound(&h)));
    assert_int_equal(tt_snapshot_hist(&s, "nothing", NULL, &h), -ENOENT);
    tt_snapshot_free(&s);
}

static void quantile_in_the_inf_bucket_is_the_largest_bound(void **state)
{
    (void)state;
    tt_snapshot_t s;
    parse(&s, "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 10\nh_count 10\n");
    tt_snap_hist_t h;
    assert_int_equal(tt_snapshot_hist(&s, "h", NULL, &h), 0);
    assert_true(tt_snap_hist_quantile(&h, 0.99) == 1);
    assert_true(isinf(tt_snap_hist_max_bound(&h)));
    tt_snapshot_free(&s);
}

static void the_renderer_output_parses_back(void **state)
{
    (void)state;
    tt_metrics_shard_t shard;
    memset(&shard, 0, sizeof(shard));
    tt_metrics_shard_t *shards[1] = {&shard};
    tt_counter_add(&shard.conn_accepted, 5);
    tt_counter_add(&shard.conn_closed[TT_CLOSE_EVICTED], 2);
    for (int i = 0; i < 10; i++) tt_hist_observe(&shard.idle_gap_ms, tt_hist_idle_bounds, tt_hist_idle_nbounds, 700);
    char *out = NULL;
    size_t len = 0, cap = 0;
    tt_metrics_render(shards, 1, &out, &len, &cap);
    tt_snapshot_t s;
    assert_int_equal(tt_snapshot_parse(&s, out, len), 0);
    assert_int_equal(s.skipped, 0);
    double v = 0;
    assert_true(tt_snapshot_value(&s, "tether_connections_accepted_total", NULL, &v) && v == 5);
    assert_true(
        tt_snapshot_value(&s, "tether_connections_closed_total", (const char *[]){"reason", "evicted", NULL}, &v) &&
        v == 2);
    tt_snap_hist_t h;
    assert_int_equal(tt_snapshot_hist(&s, "tether_idle_gap_seconds", NULL, &h), 0);
    assert_true(h.count == 10);
    assert_true(tt_snap_hist_max_bound(&h) == 1); /* 700 ms falls in (0.5 s, 1 s] */
    tt_snapshot_free(&s);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(samples_labels_and_values),
        cmocka_unit_test(malformed_lines_are_skipped_not_fatal),
        cmocka_unit_test(lookups_by_name_and_labels),
        cmocka_unit_test(histograms_sum_label_sets_and_give_quantiles),
        cmocka_unit_test(quantile_in_the_inf_bucket_is_the_largest_bound),
        cmocka_unit_test(the_renderer_output_parses_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
