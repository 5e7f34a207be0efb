/* snapshot.h -- a parsed Prometheus text exposition (format 0.0.4): samples by name and labels, with lookups
 *
 * The advisor (`tether advise`, the status page's panel) and /status.json read the metrics through this, from
 * the text /metrics serves, so a metric added anywhere shows up by name without code here. Parsing copies the
 * text once and points every name, label and value into that copy; nothing else is allocated per sample.
 * A snapshot is owned by its caller and used by one thread at a time.
 */
#ifndef TT_METRICS_SNAPSHOT_H
#define TT_METRICS_SNAPSHOT_H

#include "core/compat.h"

/** The most labels one sample may carry; a line with more is skipped. */
#define TT_SNAP_MAX_LABELS 8
/** The most buckets tt_snapshot_hist() keeps (finite bounds and +Inf). */
#define TT_SNAP_MAX_BUCKETS 40

typedef struct tt_snap_label {
    const char *name, *value; /* NUL-terminated, unescaped, inside the snapshot's copy */
} tt_snap_label_t;

/** One sample line: `name{labels} value`. */
typedef struct tt_sample {
    const char *name;
    tt_snap_label_t labels[TT_SNAP_MAX_LABELS];
    size_t nlabels;
    double value; /* NaN, +Inf and -Inf as written */
} tt_sample_t;

typedef struct tt_snapshot {
    tt_sample_t *samples; /* in text order */
    size_t n;
    size_t skipped; /* lines that were not comments and could not be parsed */
    /* private */
    char *_text;
    size_t _cap;
} tt_snapshot_t;

/**
 * Parses `len` bytes of Prometheus text into `s` (zeroed or freed before). Comment lines (`# HELP`, `# TYPE`)
 * and blank lines are ignored; a malformed line is counted in `skipped` and skipped; an optional timestamp
 * after the value is ignored. Returns 0 (even with skipped lines); `s` owns its memory until
 * tt_snapshot_free(). Never fails on input; aborts only when memory runs out (tt_malloc).
 */
int tt_snapshot_parse(tt_snapshot_t *s, const char *text, size_t len);
/** Frees what `s` owns and zeroes it; a no-op on a zeroed snapshot. */
void tt_snapshot_free(tt_snapshot_t *s);

/**
 * A label filter: a NULL-terminated array of name, value pairs, e.g. `(const char *[]){"upstream", "api", NULL}`;
 * NULL matches every sample. A sample matches when it carries every pair (other labels are free).
 */
typedef const char *const *tt_snap_filter_t;

/** True when `smp` carries every pair of `want`. */
bool tt_sample_matches(const tt_sample_t *smp, tt_snap_filter_t want);
/** The value of label `name` of `smp`, NULL when absent. */
const char *tt_sample_label(const tt_sample_t *smp, const char *name);

/** The first sample named `name` matching `want`, NULL when none. */
const tt_sample_t *tt_snapshot_find(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want);
/** True and `*v` set to the first match's value; false (and `*v` untouched) when no sample matches. */
bool tt_snapshot_value(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, double *v);
/** The sum of every matching sample's value (0 when none). `*found` (may be NULL) counts the matches. */
double tt_snapshot_sum(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, size_t *found);
/** The largest matching value, or `dflt` when none matches. */
double tt_snapshot_max(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, double dflt);
/**
 * The distinct values of label `label` over the samples named `name` matching `want`, in first-seen order, into
 * `out` (pointers into the snapshot, at most `max`). Returns how many were stored.
 */
size_t tt_snapshot_label_values(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, const char *label,
                                const char **out, size_t max);

/** A histogram read back from `NAME_bucket{le}`, `NAME_sum`, `NAME_count` (cumulative, as exposed). */
typedef struct tt_snap_hist {
    double le[TT_SNAP_MAX_BUCKETS];  /* ascending upper bounds; the last is +Inf */
    double cum[TT_SNAP_MAX_BUCKETS]; /* observations <= le[i] */
    size_t n;
    double count, sum;
} tt_snap_hist_t;

/**
 * Reads histogram `base` (without the _bucket suffix): every `base_bucket` matching `want` is added by its `le`
 * (so several label sets, e.g. protocols, sum into one histogram), and likewise _sum and _count. Returns 0, or
 * -ENOENT when no bucket matches (or the buckets do not fit TT_SNAP_MAX_BUCKETS).
 */
int tt_snapshot_hist(const tt_snapshot_t *s, const char *base, tt_snap_filter_t want, tt_snap_hist_t *h);
/**
 * The q-quantile (0 < q <= 1) as Prometheus' histogram_quantile() computes it: linear inside the bucket that
 * holds rank q x count, from the previous bound (0 for the first). A rank in the +Inf bucket gives the largest
 * finite bound. NaN for an empty histogram.
 */
double tt_snap_hist_quantile(const tt_snap_hist_t *h, double q);
/** The upper bound of the highest bucket holding an observation (+Inf possible); NaN when empty. */
double tt_snap_hist_max_bound(const tt_snap_hist_t *h);
/** Observations above `x`: the count minus the cumulative count of the largest bound <= x (so an estimate that
 *  never counts too many when x falls inside a bucket). */
double tt_snap_hist_above(const tt_snap_hist_t *h, double x);

#endif
