/* units.c -- durations, sizes, booleans and counts as written in config files and flags */
#include "conf/units.h"

#define MAX_DURATION_MS (30ull * 24 * 3600 * 1000)

int tt_units_duration(const char *s, uint64_t *ms, const char **why)
{
    const char *p = s;
    uint64_t whole = 0, frac = 0, frac_div = 1;
    if (*p == '-') {
        *why = "must not be negative";
        return -1;
    }
    if (!(*p >= '0' && *p <= '9')) {
        *why = "expected a duration such as 250ms, 5s, 2m or 1h";
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        whole = whole * 10 + (uint64_t)(*p++ - '0');
        if (whole > MAX_DURATION_MS) {
            *why = "longer than 30 days";
            return -1;
        }
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) {
            *why = "expected digits after the decimal point";
            return -1;
        }
        while (*p >= '0' && *p <= '9') {
            if (frac_div < 1000000) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_div *= 10;
            }
            p++;
        }
    }
    uint64_t unit;
    if (strcmp(p, "ms") == 0)
        unit = 1;
    else if (strcmp(p, "s") == 0 || *p == '\0')
        unit = 1000;
    else if (strcmp(p, "m") == 0)
        unit = 60000;
    else if (strcmp(p, "h") == 0)
        unit = 3600000;
    else {
        *why = "unknown unit (use ms, s, m or h)";
        return -1;
    }
    uint64_t v = whole * unit + frac * unit / frac_div;
    if (v > MAX_DURATION_MS) {
        *why = "longer than 30 days";
        return -1;
    }
    *ms = v;
    return 0;
}

int tt_units_size(const char *s, uint64_t *bytes, const char **why)
{
    const char *p = s;
    uint64_t v = 0;
    if (!(*p >= '0' && *p <= '9')) {
        *why = "expected a size such as 512, 64k, 1m or 1g";
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > (1ull << 40)) {
            *why = "too large";
            return -1;
        }
    }
    uint64_t mul = 1;
    switch (*p) {
    case '\0': break;
    case 'k':
    case 'K':
        mul = 1024;
        p++;
        break;
    case 'm':
    case 'M':
        mul = 1024 * 1024;
        p++;
        break;
    case 'g':
    case 'G':
        mul = 1024 * 1024 * 1024;
        p++;
        break;
    default: *why = "unknown unit (use k, m or g)"; return -1;
    }
    if (*p != '\0') {
        *why = "unknown unit (use k, m or g)";
        return -1;
    }
    if (v > (1ull << 40) / mul) {
        *why = "too large";
        return -1;
    }
    *bytes = v * mul;
    return 0;
}

int tt_units_bool(const char *s, bool *v, const char **why)
{
    static const char *const on[] = {"on", "true", "yes", "1"}, *const off[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(on); i++) {
        if (strcmp(s, on[i]) == 0) {
            *v = true;
            return 0;
        }
        if (strcmp(s, off[i]) == 0) {
            *v = false;
            return 0;
        }
    }
    *why = "expected on or off";
    return -1;
}

int tt_units_uint(const char *s, uint64_t min, uint64_t max, uint64_t *v, const char **why)
{
    uint64_t n = 0;
    const char *p = s;
    if (!(*p >= '0' && *p <= '9')) {
        *why = "expected a whole number";
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p++ - '0');
        if (d > max || n > (max - d) / 10) { /* d > max: max - d would wrap */
            *why = "out of range";
            return -1;
        }
        n = n * 10 + d;
    }
    if (*p != '\0') {
        *why = "expected a whole number";
        return -1;
    }
    if (n < min) {
        *why = "out of range";
        return -1;
    }
    *v = n;
    return 0;
}
