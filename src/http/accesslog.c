/* accesslog.c -- buffered access log lines, one write(2) per loop turn per worker */
#include "http/accesslog.h"

#include "core/log.h"

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_AT 32768

static void on_flush(tt_defer_t *d)
{
    tt_accesslog_flush(tt_container_of(d, tt_accesslog_t, flush));
}

void tt_accesslog_init(tt_accesslog_t *log, tt_loop_t *loop, int fd)
{
    memset(log, 0, sizeof(*log));
    log->fd = fd;
    log->loop = loop;
    log->stamp_s = -1;
    tt_bufpool_init(&log->pool, 65536, 1);
}

void tt_accesslog_file_reopen(tt_accesslog_file_t *f)
{
    atomic_fetch_add_explicit(&f->gen, 1, memory_order_release);
}

/* Opens log->file's path again; the old descriptor stays when that fails (a full or read-only disk must
 * not stop the lines). */
static void reopen(tt_accesslog_t *log, uint32_t gen)
{
    log->gen = gen;
    int fd = tt_log_open_append(log->file->path);
    if (fd < 0) {
        tt_log(TT_LOG_ERROR, "access_log %s: %s%s", log->file->path, strerror(-fd),
               log->fd >= 0 ? " (lines still go to the file open before)" : "");
        return;
    }
    if (log->fd >= 0) close(log->fd);
    log->fd = fd;
}

void tt_accesslog_init_file(tt_accesslog_t *log, tt_loop_t *loop, const tt_accesslog_file_t *file)
{
    tt_accesslog_init(log, loop, -1);
    log->file = file;
    reopen(log, atomic_load_explicit(&file->gen, memory_order_acquire));
}

void tt_accesslog_dispose(tt_accesslog_t *log)
{
    tt_accesslog_flush(log);
    tt_buf_release(&log->buf, &log->pool);
    tt_bufpool_dispose(&log->pool);
    if (log->file != NULL && log->fd >= 0) close(log->fd);
    log->fd = -1;
}

void tt_accesslog_flush(tt_accesslog_t *log)
{
    if (log->file != NULL && log->buf.len > 0) {
        uint32_t gen = atomic_load_explicit(&log->file->gen, memory_order_acquire);
        if (gen != log->gen) reopen(log, gen);
    }
    while (log->buf.len > 0) {
        ssize_t n = write(log->fd, tt_buf_data(&log->buf), log->buf.len);
        if (n <= 0) break; /* a full disk or closed pipe must not stop the server: the lines are dropped */
        tt_buf_consume(&log->buf, (size_t)n);
    }
    log->buf.len = log->buf.off = 0;
}

/* Appends `s`, escaping '"', '\\' and anything outside printable ASCII as \xHH. */
static size_t put_escaped(char *o, tt_str_t s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = 'x';
            o[n++] = hex[c >> 4];
            o[n++] = hex[c & 15];
        } else {
            o[n++] = (char)c;
        }
    }
    return n;
}

void tt_accesslog_add(tt_accesslog_t *log, const tt_accesslog_rec_t *r)
{
    if (!tt_accesslog_enabled(log)) return;
    int64_t now = tt_loop_wall(log->loop);
    if (now != log->stamp_s) {
        struct tm tm;
        time_t t = (time_t)now;
        gmtime_r(&t, &tm);
        strftime(log->stamp, sizeof(log->stamp), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        log->stamp_s = now;
    }
    size_t need = 256 + 4 * (r->method.n + r->target.n) + r->extra.n;
    if (!tt_buf_reserve(&log->buf, &log->pool, need, SIZE_MAX)) return;
    char *o = tt_buf_tail(&log->buf), host[TT_ADDR_STRLEN];
    tt_addr_format_host(r->peer, host, sizeof(host));
    size_t n = (size_t)snprintf(o, need, "%s - - [%s] \"", host, log->stamp);
    n += put_escaped(o + n, r->method);
    o[n++] = ' ';
    n += put_escaped(o + n, r->target);
    n += r->proto ? (size_t)snprintf(o + n, need - n, " %s", r->proto)
                  : (size_t)snprintf(o + n, need - n, " HTTP/1.%d", r->minor_version);
    n += (size_t)snprintf(o + n, need - n, "\" %d %llu %llu.%03llu conn=%llu req=%u %s", r->status,
                          (unsigned long long)r->bytes, (unsigned long long)(r->duration_ms / 1000),
                          (unsigned long long)(r->duration_ms % 1000), (unsigned long long)r->conn_id, r->req_no,
                          r->decision);
    if (r->extra.n) {
        o[n++] = ' ';
        memcpy(o + n, r->extra.p, r->extra.n);
        n += r->extra.n;
    }
    o[n++] = '\n';
    log->buf.len += (uint32_t)n;
    if (log->buf.len >= FLUSH_AT)
        tt_accesslog_flush(log);
    else
        tt_loop_defer(log->loop, &log->flush, on_flush);
}
