/* log.c -- the error log */
#include "core/log.h"
#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

static tt_log_level_t g_level = TT_LOG_INFO;
static int g_fd = 2;
/* The error log is rare and written from every thread: a reopen swaps the file under `g_lock`, with dup3() onto
 * the same descriptor number. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_path; /* NULL: g_fd is the caller's (stderr) */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void tt_log_setup(tt_log_level_t level, int fd)
{
    g_level = level;
    g_fd = fd;
}

int tt_log_open_append(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd >= 0 ? fd : -errno;
}

int tt_log_open_file(const char *path)
{
    int fd = tt_log_open_append(path);
    if (fd < 0) return fd;
    pthread_mutex_lock(&g_lock);
    free(g_path);
    g_path = tt_strndup(path, strlen(path));
    g_fd = fd;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

int tt_log_reopen(void)
{
    int r = 0;
    pthread_mutex_lock(&g_lock);
    if (g_path != NULL) {
        int fd = tt_log_open_append(g_path);
        if (fd < 0)
            r = fd;
        else if (dup3(fd, g_fd, O_CLOEXEC) < 0)
            r = -errno;
        if (fd >= 0) close(fd);
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

void tt_log_close_file(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_path != NULL) {
        close(g_fd);
        free(g_path);
        g_path = NULL;
        g_fd = 2;
    }
    pthread_mutex_unlock(&g_lock);
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
    pthread_mutex_lock(&g_lock);
    ssize_t w = write(g_fd, line, len);
    pthread_mutex_unlock(&g_lock);
    (void)w;
}
