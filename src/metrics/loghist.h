/* loghist.h -- log-linear latency histogram (HdrHistogram-like): exact to 1/64, fixed size, no allocation
 *
 * Values are unsigned integers (tether bench records microseconds). Values below 64 have a bucket each;
 * above, every power of two [2^k, 2^(k+1)) is split into 64 equal sub-buckets, so a value is known to
 * within 1/64 (1.6 %) of itself over the whole uint64_t range. A histogram is a plain struct of counts
 * (about 30 KiB): embed it or allocate it, zero it with tt_loghist_init(), add two with
 * tt_loghist_merge(). Not thread-safe: one writer, and merge after the writers are done.
 */
#ifndef TT_METRICS_LOGHIST_H
#define TT_METRICS_LOGHIST_H

#include "core/compat.h"

/** Linear sub-buckets per power of two (and the count of exact values at the bottom). */
#define TT_LOGHIST_SUB 64
/** Buckets in all: 64 exact values, then 64 per power of two from 2^6 to 2^63. */
#define TT_LOGHIST_BUCKETS (TT_LOGHIST_SUB * 59)

typedef struct tt_loghist {
    uint64_t count; /* values recorded */
    uint64_t min;   /* smallest value recorded; UINT64_MAX when empty */
    uint64_t max;   /* largest value recorded; 0 when empty */
    double sum;     /* sum of the values (for the mean) */
    uint64_t counts[TT_LOGHIST_BUCKETS];
} tt_loghist_t;

/** Empties `h`. */
void tt_loghist_init(tt_loghist_t *h);
/** Records `n` occurrences of `value`. */
void tt_loghist_record_n(tt_loghist_t *h, uint64_t value, uint64_t n);
/** Records one occurrence of `value`. */
static inline void tt_loghist_record(tt_loghist_t *h, uint64_t value);
/** Adds every count of `src` to `dst`. */
void tt_loghist_merge(tt_loghist_t *dst, const tt_loghist_t *src);

/**
 * The value at percentile `p` (0..100): the highest value equivalent to the bucket holding the
 * ceil(p/100 * count)-th smallest recorded value, never above the recorded max (p 0 gives the min,
 * p 100 the max). 0 for an empty histogram.
 */
uint64_t tt_loghist_percentile(const tt_loghist_t *h, double p);
/** Mean of the recorded values; 0 for an empty histogram. */
double tt_loghist_mean(const tt_loghist_t *h);

/** Index of the bucket holding `value`. */
size_t tt_loghist_index(uint64_t value);
/** Smallest and largest values that fall in bucket `idx` (idx < TT_LOGHIST_BUCKETS). */
uint64_t tt_loghist_bucket_low(size_t idx);
uint64_t tt_loghist_bucket_high(size_t idx);

/* inline definitions */
static inline void tt_loghist_record(tt_loghist_t *h, uint64_t value)
{
    tt_loghist_record_n(h, value, 1);
}

#endif
