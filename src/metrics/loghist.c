/* loghist.c -- log-linear histogram: 64 exact values, then 64 linear sub-buckets per power of two */
#include "metrics/loghist.h"

void tt_loghist_init(tt_loghist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

/* A value v >= 64 with its top bit at position msb (6..63) keeps its 7 top bits: v >> (msb - 6) lies in
 * [64, 128). Each power of two so adds 64 buckets after the 64 exact ones. */
size_t tt_loghist_index(uint64_t value)
{
    if (value < TT_LOGHIST_SUB) return (size_t)value;
    unsigned shift = (unsigned)(63 - __builtin_clzll(value)) - 6;
    return (size_t)TT_LOGHIST_SUB * shift + (size_t)(value >> shift);
}

uint64_t tt_loghist_bucket_low(size_t idx)
{
    if (idx < TT_LOGHIST_SUB) return idx;
    unsigned shift = (unsigned)(idx / TT_LOGHIST_SUB) - 1;
    uint64_t top = idx - (size_t)TT_LOGHIST_SUB * shift;
    return top << shift;
}

uint64_t tt_loghist_bucket_high(size_t idx)
{
    if (idx < TT_LOGHIST_SUB) return idx;
    unsigned shift = (unsigned)(idx / TT_LOGHIST_SUB) - 1;
    return tt_loghist_bucket_low(idx) + ((UINT64_C(1) << shift) - 1);
}

void tt_loghist_record_n(tt_loghist_t *h, uint64_t value, uint64_t n)
{
    if (n == 0) return;
    h->counts[tt_loghist_index(value)] += n;
    h->count += n;
    h->sum += (double)value * (double)n;
    if (value < h->min) h->min = value;
    if (value > h->max) h->max = value;
}

void tt_loghist_merge(tt_loghist_t *dst, const tt_loghist_t *src)
{
    if (src->count == 0) return;
    for (size_t i = 0; i < TT_LOGHIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

uint64_t tt_loghist_percentile(const tt_loghist_t *h, double p)
{
    if (h->count == 0) return 0;
    if (p <= 0) return h->min;
    if (p >= 100) return h->max;
    double want = p / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want; /* ceil without libm */
    if ((double)rank < want || rank == 0) rank++;
    uint64_t seen = 0;
    for (size_t i = 0; i < TT_LOGHIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = tt_loghist_bucket_high(i);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}

double tt_loghist_mean(const tt_loghist_t *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
