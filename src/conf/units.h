/* units.h -- values with units: durations (250ms, 5s, 2m, 1h), sizes (64k, 1m), booleans, counts */
#ifndef TT_CONF_UNITS_H
#define TT_CONF_UNITS_H

#include "core/compat.h"

/**
 * Parses a duration: a decimal number (fractions allowed) with `ms`, `s`, `m` or `h`; a bare number is
 * seconds. Stores milliseconds (fractions of a ms round down). Returns 0, or -1 with a static reason in
 * `*why` (empty, negative, unknown unit, larger than 30 days).
 */
int tt_units_duration(const char *s, uint64_t *ms, const char **why);
/** Parses a size: digits with an optional `k`, `m` or `g` (x1024, x1024^2, x1024^3); stores bytes. 0 or -1. */
int tt_units_size(const char *s, uint64_t *bytes, const char **why);
/** Parses on/off, true/false, yes/no, 1/0. 0 or -1. */
int tt_units_bool(const char *s, bool *v, const char **why);
/** Parses a decimal integer in [min, max]. 0 or -1. */
int tt_units_uint(const char *s, uint64_t min, uint64_t max, uint64_t *v, const char **why);

#endif
