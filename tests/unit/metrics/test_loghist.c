/* test_loghist.c -- the log-linear histogram (src/metrics/loghist.c): bucket edges, 1/64 precision over the
 * whole range, percentiles against a sorted reference, merge, min/max/mean, empty histograms */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "metrics/loghist.h"

static tt_loghist_t *new_hist(void)
{
    tt_loghist_t *h = malloc(sizeof(*h));
    assert_non_null(h);
    tt_loghist_init(h);
    return h;
}

static void small_values_have_a_bucket_each(void **state)
{
    (void)state;
    for (uint64_t v = 0; v < 128; v++) {
        size_t i = tt_loghist_index(v);
        assert_int_equal(i, v);
        assert_int_equal(tt_loghist_bucket_low(i), v);
        assert_int_equal(tt_loghist_bucket_high(i), v);
    }
}

static void buckets_tile_the_range_without_gaps(void **state)
{
    (void)state;
    for (size_t i = 1; i < TT_LOGHIST_BUCKETS; i++) {
        assert_int_equal(tt_loghist_bucket_low(i), tt_loghist_bucket_high(i - 1) + 1);
        assert_true(tt_loghist_bucket_high(i) >= tt_loghist_bucket_low(i));
    }
    assert_int_equal(tt_loghist_bucket_low(0), 0);
    assert_int_equal(tt_loghist_bucket_high(TT_LOGHIST_BUCKETS - 1), UINT64_MAX);
    assert_int_equal(tt_loghist_index(UINT64_MAX), TT_LOGHIST_BUCKETS - 1);
}

static void every_value_lands_in_a_bucket_within_one_64th(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int n = 0; n < 200000; n++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x >> (x % 64); /* spread over all magnitudes */
        size_t i = tt_loghist_index(v);
        uint64_t lo = tt_loghist_bucket_low(i), hi = tt_loghist_bucket_high(i);
        assert_true(lo <= v && v <= hi);
        assert_true((double)(hi - lo) <= (double)lo / 64.0);
    }
    /* powers of two start a bucket */
    for (unsigned k = 6; k < 64; k++) assert_int_equal(tt_loghist_bucket_low(tt_loghist_index(1ull << k)), 1ull << k);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void percentiles_match_a_sorted_reference_within_precision(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint64_t *vals = malloc(N * sizeof(*vals));
    tt_loghist_t *h = new_hist();
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        vals[i] = 50 + (x >> 40) % 200000; /* 50 us .. 200 ms */
        tt_loghist_record(h, vals[i]);
    }
    qsort(vals, N, sizeof(*vals), cmp_u64);
    const double ps[] = {1, 10, 50, 90, 99, 99.9, 99.99};
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        size_t rank = (size_t)(ps[k] / 100.0 * N + 0.999999);
        uint64_t exact = vals[rank - 1];
        uint64_t got = tt_loghist_percentile(h, ps[k]);
        assert_true(got >= exact);
        assert_true((double)(got - exact) <= (double)exact / 64.0 + 1);
    }
    assert_int_equal(tt_loghist_percentile(h, 0), vals[0]);
    assert_int_equal(tt_loghist_percentile(h, 100), vals[N - 1]);
    assert_int_equal(h->count, N);
    free(vals);
    free(h);
}

static void percentile_never_exceeds_the_max_or_goes_below_the_min(void **state)
{
    (void)state;
    tt_loghist_t *h = new_hist();
    tt_loghist_record(h, 1000001); /* its bucket reaches 1015807 */
    for (double p = 0; p <= 100; p += 12.5) assert_int_equal(tt_loghist_percentile(h, p), 1000001);
    free(h);
}

static void exact_counts_give_exact_percentiles(void **state)
{
    (void)state;
    tt_loghist_t *h = new_hist();
    tt_loghist_record_n(h, 10, 90);
    tt_loghist_record_n(h, 20, 9);
    tt_loghist_record_n(h, 30, 1);
    assert_int_equal(tt_loghist_percentile(h, 50), 10);
    assert_int_equal(tt_loghist_percentile(h, 90), 10);
    assert_int_equal(tt_loghist_percentile(h, 90.5), 20);
    assert_int_equal(tt_loghist_percentile(h, 99), 20);
    assert_int_equal(tt_loghist_percentile(h, 99.9), 30);
    assert_int_equal(h->min, 10);
    assert_int_equal(h->max, 30);
    assert_true(tt_loghist_mean(h) > 11.09 && tt_loghist_mean(h) < 11.11);
    tt_loghist_record_n(h, 5, 0); /* n 0 records nothing */
    assert_int_equal(h->count, 100);
    assert_int_equal(h->min, 10);
    free(h);
}

static void merge_equals_recording_everything_in_one(void **state)
{
    (void)state;
    tt_loghist_t *a = new_hist(), *b = new_hist(), *all = new_hist();
    for (uint64_t v = 1; v < 50000; v += 7) {
        tt_loghist_record(v % 3 ? a : b, v);
        tt_loghist_record(all, v);
    }
    tt_loghist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    assert_memory_equal(a->counts, all->counts, sizeof(a->counts));
    for (double p = 0; p <= 100; p += 0.5) assert_int_equal(tt_loghist_percentile(a, p), tt_loghist_percentile(all, p));
    tt_loghist_t *empty = new_hist();
    tt_loghist_merge(a, empty);
    assert_int_equal(a->count, all->count);
    tt_loghist_merge(empty, all);
    assert_int_equal(empty->min, all->min);
    free(a);
    free(b);
    free(all);
    free(empty);
}

static void an_empty_histogram_reports_zero(void **state)
{
    (void)state;
    tt_loghist_t *h = new_hist();
    assert_int_equal(h->count, 0);
    assert_int_equal(tt_loghist_percentile(h, 50), 0);
    assert_int_equal(tt_loghist_percentile(h, 100), 0);
    assert_true(tt_loghist_mean(h) == 0.0);
    free(h);
}

static void huge_values_are_kept(void **state)
{
    (void)state;
    tt_loghist_t *h = new_hist();
    tt_loghist_record(h, UINT64_MAX);
    tt_loghist_record(h, 0);
    assert_int_equal(h->min, 0);
    assert_int_equal(h->max, UINT64_MAX);
    assert_int_equal(tt_loghist_percentile(h, 50), 0);
    assert_int_equal(tt_loghist_percentile(h, 99), UINT64_MAX);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_values_have_a_bucket_each),
        cmocka_unit_test(buckets_tile_the_range_without_gaps),
        cmocka_unit_test(every_value_lands_in_a_bucket_within_one_64th),
        cmocka_unit_test(percentiles_match_a_sorted_reference_within_precision),
        cmocka_unit_test(percentile_never_exceeds_the_max_or_goes_below_the_min),
        cmocka_unit_test(exact_counts_give_exact_percentiles),
        cmocka_unit_test(merge_equals_recording_everything_in_one),
        cmocka_unit_test(an_empty_histogram_reports_zero),
        cmocka_unit_test(huge_values_are_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
