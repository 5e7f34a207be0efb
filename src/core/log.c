/* log.c -- the error log */
#include "core/log.h"
#include "core/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static tt_log_level_t g_level = TT_LOG_INFO;
static int g_fd = 2;
/* The error log is rare and written from every thread: a reopen swaps the file under `g_lock`, with dup3() onto
 * the same descriptor number. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_path;  /* NULL: g_fd is the caller's (stderr) */
static bool g_syslog; /* g_fd is a unix datagram socket connected to g_sys.path */
static tt_log_syslog_t g_sys;

static int syslog_reconnect_locked(void);

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
    if (g_syslog) {
        r = syslog_reconnect_locked();
    } else if (g_path != NULL) {
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
    if (g_path != NULL || g_syslog) {
        close(g_fd);
        free(g_path);
        g_path = NULL;
        g_syslog = false;
        g_fd = 2;
    }
    pthread_mutex_unlock(&g_lock);
}

/* ---- syslog ---- */

static const struct {
    const char *name;
    int code;
} facilities[] = {
    {"kern", 0},    {"user", 1},    {"mail", 2},    {"daemon", 3},    {"auth", 4},    {"syslog", 5},  {"lpr", 6},
    {"news", 7},    {"uucp", 8},    {"cron", 9},    {"authpriv", 10}, {"ftp", 11},    {"local0", 16}, {"local1", 17},
    {"local2", 18}, {"local3", 19}, {"local4", 20}, {"local5", 21},   {"local6", 22}, {"local7", 23},
};

bool tt_log_is_syslog(const char *spec)
{
    return strcmp(spec, "syslog") == 0 || strncmp(spec, "syslog:", 7) == 0;
}

static bool tag_ok(const char *t, size_t n)
{
    if (n == 0 || n > 32) return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

int tt_log_syslog_parse(const char *spec, tt_log_syslog_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->path, "/dev/log", sizeof("/dev/log"));
    out->facility = 3;
    memcpy(out->tag, "tether", sizeof("tether"));
    if (!tt_log_is_syslog(spec)) {
        *why = "expected syslog or syslog:ITEM,... (a socket path, facility=NAME, tag=NAME)";
        return -1;
    }
    const char *p = spec[6] == ':' ? spec + 7 : spec + 6;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 9 && strncmp(p, "facility=", 9) == 0) {
            size_t i;
            for (i = 0; i < TT_ARRAY_SIZE(facilities); i++)
                if (strlen(facilities[i].name) == n - 9 && memcmp(facilities[i].name, p + 9, n - 9) == 0) break;
            if (i == TT_ARRAY_SIZE(facilities)) {
                *why = "unknown syslog facility (kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, "
                       "authpriv, ftp, local0..local7)";
                return -1;
            }
            out->facility = facilities[i].code;
        } else if (n > 4 && strncmp(p, "tag=", 4) == 0) {
            if (!tag_ok(p + 4, n - 4)) {
                *why = "a syslog tag is 1 to 32 of A-Z a-z 0-9 _ . -";
                return -1;
            }
            memcpy(out->tag, p + 4, n - 4);
            out->tag[n - 4] = '\0';
        } else if (n > 1 && p[0] == '/') {
            if (n >= sizeof(out->path)) {
                *why = "syslog socket path too long (at most 107 bytes)";
                return -1;
            }
            memcpy(out->path, p, n);
            out->path[n] = '\0';
        } else {
            *why = "expected an absolute socket path, facility=NAME or tag=NAME after syslog:";
            return -1;
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

/* A datagram socket connected to `path`, or -errno. */
static int syslog_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int tt_log_open_syslog(const tt_log_syslog_t *s)
{
    int fd = syslog_connect(s->path);
    if (fd < 0) return fd;
    pthread_mutex_lock(&g_lock);
    if (g_path != NULL || g_syslog) close(g_fd);
    free(g_path);
    g_path = NULL;
    g_sys = *s;
    g_syslog = true;
    g_fd = fd;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* Connects the syslog socket again onto the same descriptor number. Under g_lock. */
static int syslog_reconnect_locked(void)
{
    int fd = syslog_connect(g_sys.path);
    if (fd < 0) return fd;
    int r = dup3(fd, g_fd, O_CLOEXEC) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static const int severities[] = {3, 4, 6, 7}; /* err, warning, info, debug (RFC 5424 6.2.1) */

/* Sends `msg` as one RFC 3164 datagram. Under g_lock. */
static void syslog_send_locked(tt_log_level_t level, const char *msg, size_t n)
{
    char d[1200];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    int h = snprintf(d, sizeof(d), "<%d>", g_sys.facility * 8 + severities[level]);
    h += (int)strftime(d + h, sizeof(d) - (size_t)h, "%b %e %H:%M:%S ", &tm);
    h += snprintf(d + h, sizeof(d) - (size_t)h, "%s[%d]: ", g_sys.tag, (int)getpid());
    n = TT_MIN(n, sizeof(d) - (size_t)h);
    memcpy(d + h, msg, n);
    size_t len = (size_t)h + n;
    if (send(g_fd, d, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
    if ((errno == ECONNREFUSED || errno == ENOTCONN || errno == ENOENT) && syslog_reconnect_locked() == 0)
        (void)send(g_fd, d, len, MSG_DONTWAIT | MSG_NOSIGNAL); /* the daemon restarted: once more, else dropped */
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
    pthread_mutex_lock(&g_lock);
    if (g_syslog) {
        syslog_send_locked(level, line + n, len - (size_t)n); /* syslog stamps and ranks it itself */
    } else {
        line[len++] = '\n';
        ssize_t w = write(g_fd, line, len);
        (void)w;
    }
    pthread_mutex_unlock(&g_lock);
}
