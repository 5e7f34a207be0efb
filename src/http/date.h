/* date.h -- HTTP-date (RFC 9110 5.6.7): format IMF-fixdate, parse all three accepted forms */
#ifndef TT_HTTP_DATE_H
#define TT_HTTP_DATE_H

#include "core/str.h"

/** Length of an IMF-fixdate such as "Sun, 06 Nov 1994 08:49:37 GMT". */
#define TT_HTTP_DATE_LEN 29

/** Writes the IMF-fixdate of `t` (seconds since the epoch, UTC) into `buf` (>= 30 bytes, NUL added). */
void tt_http_date_format(int64_t t, char *buf);
/** Parses IMF-fixdate, RFC 850 or asctime form; returns 0 and sets `*t` (epoch seconds) or -1. */
int tt_http_date_parse(tt_str_t s, int64_t *t);

#endif
