/* static.c -- static files with a per-worker open-file cache, conditionals and single byte ranges */
#include "handlers/static.h"
#include "core/fs.h"
#include "core/list.h"
#include "core/log.h"
#include "http/date.h"
#include "http/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#define HASH_BUCKETS 2048 /* power of two, > TT_STATIC_CACHE_MAX */

/* A file as the cache knows it; shared by the cache and by responses still sending it. */
typedef struct fentry {
    struct fentry *next; /* hash chain */
    tt_list_t lru;       /* most recently used at the tail */
    uint32_t hash;
    uint32_t refs; /* 1 for the cache while cached, +1 per response sending it */
    bool cached;
    char *key; /* decoded path as requested (a directory keeps its '/') */
    size_t key_len;
    char *rel; /* path of the file actually opened */
    int fd;
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime;
    uint64_t checked_ms;
    char *content; /* whole file when size <= TT_STATIC_SMALL */
    char etag[48];
    size_t etag_len;
    char last_modified[TT_HTTP_DATE_LEN + 1];
    char *fields; /* Content-Type, Last-Modified, ETag, Accept-Ranges lines */
    size_t fields_len;
} fentry_t;

typedef struct static_worker {
    const tt_static_conf_t *conf;
    tt_worker_t *w;
    int rootfd;
    fentry_t *buckets[HASH_BUCKETS];
    tt_list_t lru;
    size_t count;
    char path[PATH_MAX];
} static_worker_t;

static const struct {
    const char *ext;
    const char *type;
} mime_types[] = {
    {"html", "text/html"},
    {"htm", "text/html"},
    {"css", "text/css"},
    {"js", "application/javascript"},
    {"mjs", "application/javascript"},
    {"json", "application/json"},
    {"txt", "text/plain"},
    {"md", "text/markdown"},
    {"csv", "text/csv"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"pdf", "application/pdf"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
};

static const char *mime_type(const char *rel)
{
    const char *slash = strrchr(rel, '/'), *dot = strrchr(rel, '.');
    if (dot != NULL && (slash == NULL || dot > slash)) {
        char ext[8];
        size_t n = strlen(dot + 1);
        if (n < sizeof(ext)) {
            for (size_t i = 0; i <= n; i++) ext[i] = tt_lower(dot[1 + i]);
            for (size_t i = 0; i < TT_ARRAY_SIZE(mime_types); i++)
                if (strcmp(ext, mime_types[i].ext) == 0) return mime_types[i].type;
        }
    }
    return "application/octet-stream";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tt_lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int tt_static_decode_path(tt_str_t path, char *out, size_t size, bool *dir)
{
    /* Each segment is decoded after a tentative '/' and committed at its end, unless it is empty or ".";
     * bytes that do not fit are only counted, so a dropped segment never makes a fitting path fail. */
    size_t o = 0;
    *dir = path.n > 0 && path.p[path.n - 1] == '/';
    for (size_t i = 0; i <= path.n; i++) {
        size_t start = o + (o > 0), len = 0;
        char first = 0, second = 0;
        bool overflow = false;
        for (; i < path.n && path.p[i] != '/'; i++) {
            char c = path.p[i];
            if (c == '%') {
                if (i + 2 >= path.n) return -1;
                int hi = hexval(path.p[i + 1]), lo = hexval(path.p[i + 2]);
                if (hi < 0 || lo < 0) return -1;
                c = (char)(hi * 16 + lo);
                if (c == '\0' || c == '/') return -1;
                i += 2;
            }
            if (len == 0) first = c;
            if (len == 1) second = c;
            if (start + len + 1 < size)
                out[start + len] = c;
            else
                overflow = true;
            len++;
        }
        if (len == 0 || (len == 1 && first == '.')) continue; /* empty and "." segments */
        if (len == 2 && first == '.' && second == '.') return -1;
        if (overflow) return -2;
        if (o > 0) out[o] = '/';
        o = start + len;
    }
    if (size == 0) return -2;
    out[o] = '\0';
    return (int)o;
}

static uint32_t hash_key(const char *k, size_t n, bool dir)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 16777619u;
    return dir ? h ^ 0x9e3779b9u : h;
}

/* ---- cache entries ---- */

static void fentry_unref(void *ref)
{
    fentry_t *e = ref;
    if (--e->refs > 0) return;
    if (e->fd >= 0) close(e->fd);
    free(e->content);
    free(e->fields);
    free(e->key);
    free(e->rel);
    free(e);
}

static void cache_remove(static_worker_t *sw, fentry_t *e)
{
    fentry_t **pp = &sw->buckets[e->hash & (HASH_BUCKETS - 1)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    tt_list_remove(&e->lru);
    e->cached = false;
    sw->count--;
    fentry_unref(e);
}

static fentry_t *cache_find(static_worker_t *sw, const char *key, size_t n, uint32_t hash)
{
    for (fentry_t *e = sw->buckets[hash & (HASH_BUCKETS - 1)]; e; e = e->next)
        if (e->hash == hash && e->key_len == n && memcmp(e->key, key, n) == 0) return e;
    return NULL;
}

/* Reads the whole small file; false when the file changed size under us. */
static bool read_content(fentry_t *e)
{
    e->content = tt_malloc((size_t)e->size + 1);
    off_t done = 0;
    while (done < e->size) {
        ssize_t n = pread(e->fd, e->content + done, (size_t)(e->size - done), done);
        if (n <= 0) return false;
        done += n;
    }
    return true;
}

static void fill_fields(fentry_t *e)
{
    tt_http_date_format(e->mtime, e->last_modified);
    e->etag_len = (size_t)snprintf(e->etag, sizeof(e->etag), "\"%llx-%llx\"", (unsigned long long)e->mtime,
                                   (unsigned long long)e->size);
    const char *type = mime_type(e->rel);
    size_t cap = 160 + strlen(type);
    e->fields = tt_malloc(cap);
    e->fields_len = (size_t)snprintf(e->fields, cap,
                                     "Content-Type: %s\r\nLast-Modified: %s\r\nETag: %s\r\nAccept-Ranges: bytes\r\n",
                                     type, e->last_modified, e->etag);
}

/* Outcome of opening a path. */
enum open_result { OPEN_OK, OPEN_NOT_FOUND, OPEN_FORBIDDEN, OPEN_REDIRECT, OPEN_ERROR };

static enum open_result open_entry(static_worker_t *sw, const char *rel, bool dir, fentry_t **out)
{
    int fd = tt_fs_open_beneath(sw->rootfd, sw->conf->root, rel);
    if (fd < 0)
        return fd == -EACCES ? OPEN_FORBIDDEN
               : (fd == -ENOENT || fd == -ENOTDIR || fd == -EXDEV || fd == -ELOOP || fd == -ENAMETOOLONG)
                   ? OPEN_NOT_FOUND
                   : OPEN_ERROR;
    struct stat st;
    char relbuf[PATH_MAX];
    size_t rn = strlen(rel);
    memcpy(relbuf, rel, rn + 1);
    if (fstat(fd, &st) != 0) {
        close(fd);
        return OPEN_ERROR;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        if (!dir && rn > 0) return OPEN_REDIRECT;
        int n = snprintf(relbuf, sizeof(relbuf), "%s%s%s", rel, rn ? "/" : "", sw->conf->index);
        if (n < 0 || (size_t)n >= sizeof(relbuf)) return OPEN_NOT_FOUND;
        fd = tt_fs_open_beneath(sw->rootfd, sw->conf->root, relbuf);
        if (fd < 0) /* a directory without an index: no listings (nginx answers 403 too) */
            return fd == -ENOENT ? OPEN_FORBIDDEN : OPEN_NOT_FOUND;
        if (fstat(fd, &st) != 0) {
            close(fd);
            return OPEN_ERROR;
        }
    } else if (dir) {
        close(fd);
        return OPEN_NOT_FOUND; /* "file.txt/" */
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return OPEN_NOT_FOUND;
    }
    fentry_t *e = tt_calloc(1, sizeof(*e));
    e->fd = fd;
    e->refs = 1;
    e->rel = tt_strndup(relbuf, strlen(relbuf));
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->size = st.st_size;
    e->mtime = (int64_t)st.st_mtim.tv_sec;
    tt_list_init(&e->lru);
    if (e->size <= TT_STATIC_SMALL && !read_content(e)) {
        fentry_unref(e);
        return OPEN_ERROR;
    }
    fill_fields(e);
    *out = e;
    return OPEN_OK;
}

/* True when the cached entry still describes the file at its path. */
static bool still_valid(static_worker_t *sw, fentry_t *e)
{
    struct stat st;
    if (fstatat(sw->rootfd, e->rel, &st, 0) != 0) return false;
    return st.st_ino == e->ino && st.st_dev == e->dev && st.st_size == e->size &&
           (int64_t)st.st_mtim.tv_sec == e->mtime;
}

/* ---- conditional requests and ranges ---- */

/* Weak comparison of `tag` against the members of an If-None-Match list (RFC 9110 13.1.2). */
static bool etag_list_matches(tt_str_t list, const fentry_t *e)
{
    const char *p = list.p, *end = list.p + list.n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        if (p < end && *p == '*') return true;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/') p += 2;
        if (p >= end || *p != '"') return false;
        const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (q == NULL) return false;
        if ((size_t)(q + 1 - p) == e->etag_len && memcmp(p, e->etag, e->etag_len) == 0) return true;
        p = q + 1;
    }
    return false;
}

static tt_str_t field(const tt_req_t *rq, tt_h1_known_t k)
{
    int i = rq->head->known[k];
    return i < 0 ? TT_STR_NULL : rq->head->fields[i].value;
}

/* 304 when a precondition says the client's copy is current (RFC 9110 13.2.2 order). */
static bool not_modified(const tt_req_t *rq, const fentry_t *e)
{
    tt_str_t inm = field(rq, TT_H1_F_IF_NONE_MATCH);
    if (inm.p != NULL) return etag_list_matches(inm, e);
    tt_str_t ims = field(rq, TT_H1_F_IF_MODIFIED_SINCE);
    int64_t t;
    return ims.p != NULL && tt_http_date_parse(ims, &t) == 0 && e->mtime <= t;
}

enum range_result { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

static bool parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (n > (UINT64_MAX - 9) / 10) return false;
        n = n * 10 + (uint64_t)(*(*p)++ - '0');
    }
    *v = n;
    return *p > s;
}

/* One "bytes=first-last" / "bytes=first-" / "bytes=-suffix" range (RFC 9110 14.1.2); anything else is
 * ignored (full content), as RFC 9110 14.2 allows. */
static enum range_result parse_range(const tt_req_t *rq, const fentry_t *e, uint64_t *first, uint64_t *last)
{
    tt_str_t r = field(rq, TT_H1_F_RANGE);
    if (r.p == NULL || rq->head->method_id != TT_METHOD_GET) return RANGE_NONE;
    tt_str_t ir = field(rq, TT_H1_F_IF_RANGE);
    if (ir.p != NULL) {
        int64_t t;
        bool match = ir.n > 0 && ir.p[0] == '"' ? tt_str_eq(ir, e->etag, e->etag_len)
                                                : tt_http_date_parse(ir, &t) == 0 && t == e->mtime;
        if (!match) return RANGE_NONE;
    }
    const char *p = r.p, *end = r.p + r.n;
    if (r.n < 6 || memcmp(p, "bytes=", 6) != 0 || memchr(p, ',', r.n) != NULL) return RANGE_NONE;
    p += 6;
    uint64_t size = (uint64_t)e->size, a, b;
    if (p < end && *p == '-') {
        p++;
        if (!parse_u64(&p, end, &b) || p != end) return RANGE_NONE;
        if (b == 0 || size == 0) return RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return RANGE_OK;
    }
    if (!parse_u64(&p, end, &a) || p == end || *p++ != '-') return RANGE_NONE;
    if (p == end) {
        b = UINT64_MAX;
    } else if (!parse_u64(&p, end, &b) || p != end || b < a) {
        return RANGE_NONE;
    }
    if (a >= size) return RANGE_UNSATISFIABLE;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return RANGE_OK;
}

/* ---- the handler ---- */

static void respond_file(tt_req_t *rq, fentry_t *e)
{
    tt_resp_t r;
    if (not_modified(rq, e)) {
        char f[128];
        int n = snprintf(f, sizeof(f), "Last-Modified: %s\r\nETag: %s\r\n", e->last_modified, e->etag);
        tt_resp_init(&r, 304);
        r.fields = tt_str(f, (size_t)n);
        tt_req_respond(rq, &r);
        return;
    }
    uint64_t first = 0, last = 0;
    enum range_result rr = parse_range(rq, e, &first, &last);
    if (rr == RANGE_UNSATISFIABLE) {
        char f[64];
        int n = snprintf(f, sizeof(f), "Content-Range: bytes */%llu\r\n", (unsigned long long)e->size);
        tt_req_respond_text(rq, 416, tt_str(f, (size_t)n));
        return;
    }
    char fields[512];
    tt_resp_init(&r, 200);
    r.fields = tt_str(e->fields, e->fields_len);
    uint64_t off = 0, len = (uint64_t)e->size;
    if (rr == RANGE_OK) {
        off = first;
        len = last - first + 1;
        int n = snprintf(fields, sizeof(fields), "%.*sContent-Range: bytes %llu-%llu/%llu\r\n", (int)e->fields_len,
                         e->fields, (unsigned long long)first, (unsigned long long)last, (unsigned long long)e->size);
        r.status = 206;
        r.fields = tt_str(fields, (size_t)n);
    }
    r.content_length = (int64_t)len;
    if (e->content != NULL) {
        r.body = e->content + off;
        r.body_len = (size_t)len;
    } else {
        e->refs++; /* released by the connection once the range is sent */
        r.file =
            (tt_body_file_t){.fd = e->fd, .off = (int64_t)off, .len = (int64_t)len, .release = fentry_unref, .ref = e};
    }
    tt_req_respond(rq, &r);
}

/* 301 to the directory with a trailing '/'. The Location is built from the normalised path (never the raw
 * target), so "//host" can never become a protocol-relative redirect to another site. */
static void redirect_to_dir(tt_req_t *rq, const char *rel)
{
    static const char hex[] = "0123456789ABCDEF";
    char f[PATH_MAX * 3 + 64];
    size_t n = (size_t)snprintf(f, sizeof(f), "Location: /");
    for (const char *p = rel; *p && n + 4 < sizeof(f); p++) {
        unsigned char ch = (unsigned char)*p;
        /* unreserved and sub-delims stay, as do ':' '@' '/'; everything else is percent-encoded */
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~!$&'()*+,;=:@/", ch) != NULL) {
            f[n++] = (char)ch;
        } else {
            f[n++] = '%';
            f[n++] = hex[ch >> 4];
            f[n++] = hex[ch & 15];
        }
    }
    int m = snprintf(f + n, sizeof(f) - n, "/%s%.*s\r\n", rq->query.n ? "?" : "", (int)rq->query.n,
                     rq->query.p ? rq->query.p : "");
    if (m < 0 || n + (size_t)m >= sizeof(f)) {
        tt_req_respond_text(rq, 414, TT_STR_NULL);
        return;
    }
    tt_req_respond_text(rq, 301, tt_str(f, n + (size_t)m));
}

static void static_handle(void *state, tt_req_t *rq)
{
    static_worker_t *sw = state;
    tt_method_t m = rq->head->method_id;
    if (m == TT_METHOD_OPTIONS) {
        tt_req_respond_text(rq, 200, TT_STR("Allow: GET, HEAD, OPTIONS\r\n"));
        return;
    }
    if (m != TT_METHOD_GET && m != TT_METHOD_HEAD) {
        tt_req_respond_text(rq, 405, TT_STR("Allow: GET, HEAD, OPTIONS\r\n"));
        return;
    }
    bool dir;
    int n = tt_static_decode_path(rq->path, sw->path, sizeof(sw->path), &dir);
    if (n < 0) {
        tt_req_respond_text(rq, n == -2 ? 414 : 400, TT_STR_NULL);
        return;
    }
    uint32_t hash = hash_key(sw->path, (size_t)n, dir);
    uint64_t now = tt_loop_now(sw->w->loop);
    fentry_t *e = cache_find(sw, sw->path, (size_t)n, hash);
    if (e != NULL && now - e->checked_ms >= TT_STATIC_REVALIDATE_MS) {
        if (still_valid(sw, e)) {
            e->checked_ms = now;
        } else {
            cache_remove(sw, e);
            e = NULL;
        }
    }
    if (e == NULL) {
        switch (open_entry(sw, sw->path, dir, &e)) {
        case OPEN_OK: break;
        case OPEN_NOT_FOUND: tt_req_respond_text(rq, 404, TT_STR_NULL); return;
        case OPEN_FORBIDDEN: tt_req_respond_text(rq, 403, TT_STR_NULL); return;
        case OPEN_REDIRECT: redirect_to_dir(rq, sw->path); return;
        case OPEN_ERROR: tt_req_respond_text(rq, 500, TT_STR_NULL); return;
        }
        if (sw->count >= TT_STATIC_CACHE_MAX) cache_remove(sw, tt_container_of(tt_list_first(&sw->lru), fentry_t, lru));
        e->key = tt_strndup(sw->path, (size_t)n);
        e->key_len = (size_t)n;
        e->hash = hash;
        e->checked_ms = now;
        e->cached = true;
        e->next = sw->buckets[hash & (HASH_BUCKETS - 1)];
        sw->buckets[hash & (HASH_BUCKETS - 1)] = e;
        sw->count++;
    } else {
        tt_list_remove(&e->lru);
    }
    tt_list_push_tail(&sw->lru, &e->lru);
    respond_file(rq, e);
}

static void *static_worker_init(const void *conf, tt_worker_t *w)
{
    const tt_static_conf_t *sc = conf;
    static_worker_t *sw = tt_calloc(1, sizeof(*sw));
    sw->conf = sc;
    sw->w = w;
    tt_list_init(&sw->lru);
    sw->rootfd = open(sc->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sw->rootfd < 0) tt_log(TT_LOG_ERROR, "static root %s: %s", sc->root, strerror(errno));
    return sw;
}

static void static_worker_free(void *state)
{
    static_worker_t *sw = state;
    while (!tt_list_is_empty(&sw->lru)) cache_remove(sw, tt_container_of(tt_list_first(&sw->lru), fentry_t, lru));
    if (sw->rootfd >= 0) close(sw->rootfd);
    free(sw);
}

const tt_handler_ops_t tt_static_ops = {
    .name = "static",
    .worker_init = static_worker_init,
    .worker_free = static_worker_free,
    .handle = static_handle,
    .async = false,
};
