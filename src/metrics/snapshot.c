/* snapshot.c -- Prometheus text format 0.0.4 into samples, parsed in place in one copy of the text */
#include "metrics/snapshot.h"

#include "core/err.h"

#include <errno.h>
#include <math.h>

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static char *skip_blanks(char *p, char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    return p;
}

/* Parses a label value at `p` (just after the opening quote) in place: escapes \\, \" and \n are undone and the
 * value NUL-terminated where the closing quote was. Returns the byte after the closing quote, NULL when there is
 * none before `end`. */
static char *parse_label_value(char *p, char *end, const char **value)
{
    char *w = p;
    *value = p;
    while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) {
            p++;
            *w++ = *p == 'n' ? '\n' : *p;
            p++;
            continue;
        }
        *w++ = *p++;
    }
    if (p >= end) return NULL;
    *w = '\0'; /* w <= p: the quote (or an earlier byte) becomes the terminator */
    return p + 1;
}

/* Parses `{a="x",b="y"}` at `p` (on the brace) into `smp`. Returns the byte after `}`, NULL when malformed. */
static char *parse_labels(char *p, char *end, tt_sample_t *smp)
{
    p++;
    for (;;) {
        p = skip_blanks(p, end);
        if (p < end && *p == '}') return p + 1;
        if (p >= end || !is_name_start(*p) || smp->nlabels == TT_SNAP_MAX_LABELS) return NULL;
        char *name = p;
        while (p < end && is_name_char(*p)) p++;
        char *name_end = p;
        p = skip_blanks(p, end);
        if (p + 1 >= end || *p != '=' || p[1] != '"') return NULL;
        *name_end = '\0'; /* the '=' or a blank: already read */
        const char *value;
        if ((p = parse_label_value(p + 2, end, &value)) == NULL) return NULL;
        smp->labels[smp->nlabels++] = (tt_snap_label_t){name, value};
        p = skip_blanks(p, end);
        if (p < end && *p == ',') p++;
    }
}

static bool parse_value(char *p, char *end, double *v)
{
    char *q = p;
    while (q < end && *q != ' ' && *q != '\t') q++;
    if (q == p) return false;
    *q = '\0'; /* a blank before the timestamp, or the line's newline */
    if (strcmp(p, "+Inf") == 0 || strcmp(p, "Inf") == 0) {
        *v = INFINITY;
        return true;
    }
    if (strcmp(p, "-Inf") == 0) {
        *v = -INFINITY;
        return true;
    }
    if (strcmp(p, "NaN") == 0) {
        *v = NAN;
        return true;
    }
    char *e;
    errno = 0;
    *v = strtod(p, &e);
    return e != p && *e == '\0';
}

/* One sample line [p, end): end points at the line's newline (or a NUL the caller added). */
static bool parse_line(char *p, char *end, tt_sample_t *smp)
{
    memset(smp, 0, sizeof(*smp));
    if (!is_name_start(*p)) return false;
    smp->name = p;
    while (p < end && is_name_char(*p)) p++;
    char *name_end = p;
    if (p < end && *p == '{') {
        if ((p = parse_labels(p, end, smp)) == NULL) return false;
    } else if (p < end && *p != ' ' && *p != '\t') {
        return false;
    }
    p = skip_blanks(p, end);
    *name_end = '\0'; /* the brace or a blank: already read */
    return p < end && parse_value(p, end, &smp->value);
}

int tt_snapshot_parse(tt_snapshot_t *s, const char *text, size_t len)
{
    memset(s, 0, sizeof(*s));
    s->_text = tt_malloc(len + 1);
    memcpy(s->_text, text, len);
    s->_text[len] = '\n'; /* every line ends in a newline, the last too */
    char *p = s->_text, *end = s->_text + len + 1;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl;
        if (line_end > p && line_end[-1] == '\r') line_end--;
        char *q = skip_blanks(p, line_end);
        if (q < line_end && *q != '#') {
            if (s->n == s->_cap) {
                s->_cap = s->_cap ? s->_cap * 2 : 256;
                s->samples = tt_realloc(s->samples, s->_cap * sizeof(*s->samples));
            }
            *line_end = '\0';
            if (parse_line(q, line_end, &s->samples[s->n]))
                s->n++;
            else
                s->skipped++;
        }
        p = nl + 1;
    }
    return 0;
}

void tt_snapshot_free(tt_snapshot_t *s)
{
    free(s->samples);
    free(s->_text);
    memset(s, 0, sizeof(*s));
}

const char *tt_sample_label(const tt_sample_t *smp, const char *name)
{
    for (size_t i = 0; i < smp->nlabels; i++)
        if (strcmp(smp->labels[i].name, name) == 0) return smp->labels[i].value;
    return NULL;
}

bool tt_sample_matches(const tt_sample_t *smp, tt_snap_filter_t want)
{
    for (size_t i = 0; want != NULL && want[i] != NULL && want[i + 1] != NULL; i += 2) {
        const char *v = tt_sample_label(smp, want[i]);
        if (v == NULL || strcmp(v, want[i + 1]) != 0) return false;
    }
    return true;
}

const tt_sample_t *tt_snapshot_find(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->samples[i].name, name) == 0 && tt_sample_matches(&s->samples[i], want)) return &s->samples[i];
    return NULL;
}

bool tt_snapshot_value(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, double *v)
{
    const tt_sample_t *smp = tt_snapshot_find(s, name, want);
    if (smp == NULL) return false;
    *v = smp->value;
    return true;
}

double tt_snapshot_sum(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, size_t *found)
{
    double sum = 0;
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->samples[i].name, name) == 0 && tt_sample_matches(&s->samples[i], want)) {
            sum += s->samples[i].value;
            n++;
        }
    if (found) *found = n;
    return sum;
}

double tt_snapshot_max(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, double dflt)
{
    bool any = false;
    double mx = dflt;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->samples[i].name, name) == 0 && tt_sample_matches(&s->samples[i], want)) {
            mx = any ? fmax(mx, s->samples[i].value) : s->samples[i].value;
            any = true;
        }
    return mx;
}

size_t tt_snapshot_label_values(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, const char *label,
                                const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n && n < max; i++) {
        if (strcmp(s->samples[i].name, name) != 0 || !tt_sample_matches(&s->samples[i], want)) continue;
        const char *v = tt_sample_label(&s->samples[i], label);
        if (v == NULL) continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++) seen = strcmp(out[k], v) == 0;
        if (!seen) out[n++] = v;
    }
    return n;
}

int tt_snapshot_hist(const tt_snapshot_t *s, const char *base, tt_snap_filter_t want, tt_snap_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    char name[256];
    snprintf(name, sizeof(name), "%s_bucket", base);
    for (size_t i = 0; i < s->n; i++) {
        const tt_sample_t *smp = &s->samples[i];
        if (strcmp(smp->name, name) != 0 || !tt_sample_matches(smp, want)) continue;
        const char *les = tt_sample_label(smp, "le");
        if (les == NULL) continue;
        double le = strcmp(les, "+Inf") == 0 ? INFINITY : strtod(les, NULL);
        size_t k = 0;
        while (k < h->n && h->le[k] < le) k++;
        if (k < h->n && h->le[k] == le) {
            h->cum[k] += smp->value;
            continue;
        }
        if (h->n == TT_SNAP_MAX_BUCKETS) return -ENOENT;
        memmove(&h->le[k + 1], &h->le[k], (h->n - k) * sizeof(double));
        memmove(&h->cum[k + 1], &h->cum[k], (h->n - k) * sizeof(double));
        h->le[k] = le;
        h->cum[k] = smp->value;
        h->n++;
    }
    if (h->n == 0) return -ENOENT;
    snprintf(name, sizeof(name), "%s_count", base);
    h->count = tt_snapshot_sum(s, name, want, NULL);
    snprintf(name, sizeof(name), "%s_sum", base);
    h->sum = tt_snapshot_sum(s, name, want, NULL);
    if (h->count == 0) h->count = h->cum[h->n - 1];
    return 0;
}

double tt_snap_hist_quantile(const tt_snap_hist_t *h, double q)
{
    if (h->n == 0 || h->cum[h->n - 1] <= 0) return NAN;
    double total = h->cum[h->n - 1], rank = q * total;
    for (size_t i = 0; i < h->n; i++) {
        if (h->cum[i] < rank) continue;
        if (isinf(h->le[i])) return i > 0 ? h->le[i - 1] : NAN;
        double lo = i > 0 ? h->le[i - 1] : 0, below = i > 0 ? h->cum[i - 1] : 0, in = h->cum[i] - below;
        return in > 0 ? lo + (h->le[i] - lo) * (rank - below) / in : h->le[i];
    }
    return h->le[h->n - 1];
}

double tt_snap_hist_max_bound(const tt_snap_hist_t *h)
{
    if (h->n == 0 || h->cum[h->n - 1] <= 0) return NAN;
    for (size_t i = 0; i < h->n; i++)
        if (h->cum[i] >= h->cum[h->n - 1]) return h->le[i];
    return h->le[h->n - 1];
}

double tt_snap_hist_above(const tt_snap_hist_t *h, double x)
{
    if (h->n == 0) return 0;
    double below = 0;
    for (size_t i = 0; i < h->n && h->le[i] <= x; i++) below = h->cum[i];
    return h->cum[h->n - 1] - below;
}
