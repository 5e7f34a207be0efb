/* date.c -- HTTP-date formatting and parsing without locale or time zone state */
#include "http/date.h"

#include <time.h>

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void tt_http_date_format(int64_t t, char *buf)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(buf, tmp, TT_HTTP_DATE_LEN);
    buf[TT_HTTP_DATE_LEN] = '\0';
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int num(const char **p, const char *end, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (*p >= end || **p < '0' || **p > '9') return -1;
        v = v * 10 + (*(*p)++ - '0');
    }
    *out = v;
    return 0;
}

static int lit(const char **p, const char *end, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(end - *p) < n || memcmp(*p, s, n) != 0) return -1;
    *p += n;
    return 0;
}

static int month(const char **p, const char *end, int *m)
{
    for (int i = 0; i < 12; i++)
        if (lit(p, end, months[i]) == 0) {
            *m = i + 1;
            return 0;
        }
    return -1;
}

static int hms(const char **p, const char *end, int *h, int *mi, int *s)
{
    if (num(p, end, 2, h) || lit(p, end, ":") || num(p, end, 2, mi) || lit(p, end, ":") || num(p, end, 2, s)) return -1;
    return (*h > 23 || *mi > 59 || *s > 60) ? -1 : 0;
}

int tt_http_date_parse(tt_str_t str, int64_t *t)
{
    const char *p = str.p, *end = str.p + str.n, *comma = memchr(p, ',', str.n);
    int d = 0, m = 0, y = 0, h = 0, mi = 0, s = 0;
    if (comma != NULL && comma - p == 3) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        p = comma + 1;
        if (lit(&p, end, " ") || num(&p, end, 2, &d) || lit(&p, end, " ") || month(&p, end, &m) || lit(&p, end, " ") ||
            num(&p, end, 4, &y) || lit(&p, end, " ") || hms(&p, end, &h, &mi, &s) || lit(&p, end, " GMT") || p != end)
            return -1;
    } else if (comma != NULL) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        p = comma + 1;
        if (lit(&p, end, " ") || num(&p, end, 2, &d) || lit(&p, end, "-") || month(&p, end, &m) || lit(&p, end, "-") ||
            num(&p, end, 2, &y) || lit(&p, end, " ") || hms(&p, end, &h, &mi, &s) || lit(&p, end, " GMT") || p != end)
            return -1;
        /* RFC 9110 5.6.7: a two-digit year that looks more than 50 years ahead is the most recent past
         * year with those digits. */
        struct tm now_tm;
        time_t now = time(NULL);
        gmtime_r(&now, &now_tm);
        int this_year = now_tm.tm_year + 1900;
        y += this_year - this_year % 100;
        if (y > this_year + 50) y -= 100;
    } else {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        if (end - p < 4) return -1;
        p += 4;
        if (month(&p, end, &m) || lit(&p, end, " ")) return -1;
        if (p < end && *p == ' ') p++;
        if (p < end && p + 1 < end && p[1] >= '0' && p[1] <= '9') {
            if (num(&p, end, 2, &d)) return -1;
        } else if (num(&p, end, 1, &d)) {
            return -1;
        }
        if (lit(&p, end, " ") || hms(&p, end, &h, &mi, &s) || lit(&p, end, " ") || num(&p, end, 4, &y) || p != end)
            return -1;
    }
    if (d < 1 || d > 31) return -1;
    *t = days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s;
    return 0;
}
