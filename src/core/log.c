/* log.c -- the error log */
#include "core/log.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

static tt_log_level_t g_level = TT_LOG_INFO;
static int g_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void tt_log_setup(tt_log_level_t level, int fd)
{
    g_level = level;
    g_fd = fd;
}

int tt_log_level_parse(const char *s)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(level_names); i++)
        if (strcmp(s, level_names[i]) == 0) return (int)i;
    return -1;
}

bool tt_log_enabled(tt_log_level_t level)
{
    return level <= g_level;
}

void tt_log(tt_log_level_t level, const char *fmt, ...)
{
    if (level > g_level) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + TT_MIN((size_t)m, sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t w = write(g_fd, line, len);
    (void)w;
}
