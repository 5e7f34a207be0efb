/* accesslog.c -- buffered access log lines, one write(2) per loop turn per worker */
#include "http/accesslog.h"

#include "core/log.h"

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_AT 32768

/* ---- compiled formats ---- */

/* The variables, in the order the json format lists them. */
enum var {
    V_REMOTE_ADDR,
    V_REMOTE_PORT,
    V_REMOTE_USER,
    V_TIME_LOCAL,
    V_TIME_ISO8601,
    V_MSEC,
    V_REQUEST,
    V_REQUEST_METHOD,
    V_REQUEST_URI,
    V_SERVER_PROTOCOL,
    V_STATUS,
    V_BODY_BYTES_SENT,
    V_BYTES_SENT,
    V_REQUEST_TIME,
    V_HOST,
    V_REQUEST_ID,
    V_CONNECTION,
    V_CONNECTION_REQUESTS,
    V_KEEPALIVE,
    V_CLOSE_REASON,
    V_PROTOCOL,
    V_STREAM_ID,
    V_UPSTREAM_NAME,
    V_UPSTREAM_ADDR,
    V_UPSTREAM_STATUS,
    V_UPSTREAM_CONNECT_TIME,
    V_UPSTREAM_HEADER_TIME,
    V_UPSTREAM_RESPONSE_TIME,
    V_UPSTREAM_REUSED,
    V_UPSTREAM_CAUSE,
    V_TUNNEL_UP,
    V_TUNNEL_DOWN,
    V_TUNNEL_TIME,
    V__NAMED,
    V_HTTP_FIELD = V__NAMED, /* $http_NAME: a request field */
};

static const char *const var_names[V__NAMED] = {
    [V_REMOTE_ADDR] = "remote_addr",
    [V_REMOTE_PORT] = "remote_port",
    [V_REMOTE_USER] = "remote_user",
    [V_TIME_LOCAL] = "time_local",
    [V_TIME_ISO8601] = "time_iso8601",
    [V_MSEC] = "msec",
    [V_REQUEST] = "request",
    [V_REQUEST_METHOD] = "request_method",
    [V_REQUEST_URI] = "request_uri",
    [V_SERVER_PROTOCOL] = "server_protocol",
    [V_STATUS] = "status",
    [V_BODY_BYTES_SENT] = "body_bytes_sent",
    [V_BYTES_SENT] = "bytes_sent",
    [V_REQUEST_TIME] = "request_time",
    [V_HOST] = "host",
    [V_REQUEST_ID] = "request_id",
    [V_CONNECTION] = "connection",
    [V_CONNECTION_REQUESTS] = "connection_requests",
    [V_KEEPALIVE] = "keepalive",
    [V_CLOSE_REASON] = "close_reason",
    [V_PROTOCOL] = "protocol",
    [V_STREAM_ID] = "stream_id",
    [V_UPSTREAM_NAME] = "upstream_name",
    [V_UPSTREAM_ADDR] = "upstream_addr",
    [V_UPSTREAM_STATUS] = "upstream_status",
    [V_UPSTREAM_CONNECT_TIME] = "upstream_connect_time",
    [V_UPSTREAM_HEADER_TIME] = "upstream_header_time",
    [V_UPSTREAM_RESPONSE_TIME] = "upstream_response_time",
    [V_UPSTREAM_REUSED] = "upstream_reused",
    [V_UPSTREAM_CAUSE] = "upstream_cause",
    [V_TUNNEL_UP] = "tunnel_up",
    [V_TUNNEL_DOWN] = "tunnel_down",
    [V_TUNNEL_TIME] = "tunnel_time",
};

#define CAP_NAME_MAX 64
#define MAX_OPS      256
#define AUTHORITY    ":authority" /* the capture slot of $host: the request's authority, not a field */

/* One step of a compiled format: literal text, or a variable. */
typedef struct op {
    uint8_t var; /* enum var; unused for a literal */
    uint8_t cap; /* capture slot of V_HTTP_FIELD and V_HOST */
    bool literal;
    uint32_t off, len; /* the literal's bytes in fmt->text */
} op_t;

struct tt_accesslog_fmt {
    bool is_main;
    bool json; /* variables write JSON values (quoted strings, numbers, null) */
    size_t nops;
    op_t ops[MAX_OPS];
    char *text;            /* the literals */
    char *spec;            /* what it was compiled from (tt_accesslog_fmt_spec) */
    bool reads_request_id; /* a step is $request_id (json has every variable) */
    size_t ncaps;
    uint8_t caplen[TT_ACCESSLOG_MAX_CAPS];
    char capname[TT_ACCESSLOG_MAX_CAPS][CAP_NAME_MAX]; /* lower-case field name, or AUTHORITY */
};

static const char combined_spec[] =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" "
    "\"$http_user_agent\"";

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
    log->iso_s = -1;
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

void tt_accesslog_set_format(tt_accesslog_t *log, const tt_accesslog_fmt_t *fmt)
{
    log->fmt = fmt != NULL && !fmt->is_main ? fmt : NULL;
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

/* ---- escaping ---- */

static const char hexdig[] = "0123456789ABCDEF";

size_t tt_accesslog_text_escape(char *o, tt_str_t s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = 'x';
            o[n++] = hexdig[c >> 4];
            o[n++] = hexdig[c & 15];
        } else {
            o[n++] = (char)c;
        }
    }
    return n;
}

/* Length of the well-formed UTF-8 sequence at p[0..left) (RFC 3629 4: no overlong forms, no surrogates, nothing
 * above U+10FFFF), or 0 when the byte at p does not start one. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0; /* overlong */
        if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90; /* overlong */
        if (c == 0xf4) hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (left < n || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return n;
}

size_t tt_accesslog_json_escape(char *o, tt_str_t s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t n = 0;
    for (size_t i = 0; i < s.n;) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x7f) {
            if (c == '"' || c == '\\') o[n++] = '\\';
            o[n++] = (char)c;
            i++;
            continue;
        }
        size_t u = c >= 0x80 ? utf8_len(p + i, s.n - i) : 0;
        if (u > 0) {
            memcpy(o + n, p + i, u);
            n += u;
            i += u;
            continue;
        }
        /* A control character, DEL, or a byte outside valid UTF-8: \u00XX keeps the line valid JSON. */
        memcpy(o + n, "\\u00", 4);
        o[n + 4] = hexdig[c >> 4];
        o[n + 5] = hexdig[c & 15];
        n += 6;
        i++;
    }
    return n;
}

/* ---- compiling ---- */

static int add_cap(tt_accesslog_fmt_t *f, const char *name, size_t n, char *why, size_t whylen)
{
    for (size_t i = 0; i < f->ncaps; i++)
        if (f->caplen[i] == n && memcmp(f->capname[i], name, n) == 0) return (int)i;
    if (n >= CAP_NAME_MAX) {
        snprintf(why, whylen, "field name longer than %d bytes in $http_%.*s", CAP_NAME_MAX - 1, (int)n, name);
        return -1;
    }
    if (f->ncaps == TT_ACCESSLOG_MAX_CAPS) {
        snprintf(why, whylen, "more than %d distinct request fields", TT_ACCESSLOG_MAX_CAPS);
        return -1;
    }
    memcpy(f->capname[f->ncaps], name, n);
    f->caplen[f->ncaps] = (uint8_t)n;
    return (int)f->ncaps++;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Appends the variable `name` (n bytes) as a step. 0, or -1 with `why`. */
static int add_var(tt_accesslog_fmt_t *f, const char *name, size_t n, char *why, size_t whylen)
{
    op_t op = {0};
    bool found = false;
    for (int v = 0; v < V__NAMED && !found; v++)
        if (strlen(var_names[v]) == n && memcmp(var_names[v], name, n) == 0) {
            op.var = (uint8_t)v;
            found = true;
        }
    if (found && op.var == V_HOST) {
        int cap = add_cap(f, TT_LIT(AUTHORITY), why, whylen);
        if (cap < 0) return -1;
        op.cap = (uint8_t)cap;
    } else if (!found && n > 5 && memcmp(name, "http_", 5) == 0) {
        char field[CAP_NAME_MAX];
        size_t fn = n - 5;
        if (fn >= CAP_NAME_MAX) {
            snprintf(why, whylen, "field name longer than %d bytes in $%.*s", CAP_NAME_MAX - 1, (int)TT_MIN(n, 80),
                     name);
            return -1;
        }
        for (size_t i = 0; i < fn; i++) field[i] = name[5 + i] == '_' ? '-' : tt_lower(name[5 + i]);
        int cap = add_cap(f, field, fn, why, whylen);
        if (cap < 0) return -1;
        op.var = V_HTTP_FIELD;
        op.cap = (uint8_t)cap;
        found = true;
    }
    if (!found) {
        snprintf(why, whylen, "unknown variable $%.*s", (int)TT_MIN(n, 64), name);
        return -1;
    }
    if (f->nops == MAX_OPS) {
        snprintf(why, whylen, "more than %d variables and literals", MAX_OPS);
        return -1;
    }
    f->ops[f->nops++] = op;
    return 0;
}

static int add_literal(tt_accesslog_fmt_t *f, size_t *tlen, const char *s, size_t n, char *why, size_t whylen)
{
    if (n == 0) return 0;
    if (f->nops > 0 && f->ops[f->nops - 1].literal && f->ops[f->nops - 1].off + f->ops[f->nops - 1].len == *tlen) {
        f->ops[f->nops - 1].len += (uint32_t)n; /* joins the literal before it */
    } else {
        if (f->nops == MAX_OPS) {
            snprintf(why, whylen, "more than %d variables and literals", MAX_OPS);
            return -1;
        }
        f->ops[f->nops++] = (op_t){.literal = true, .off = (uint32_t)*tlen, .len = (uint32_t)n};
    }
    memcpy(f->text + *tlen, s, n);
    *tlen += n;
    return 0;
}

/* Compiles a template; `json`: its variables write JSON values. */
static tt_accesslog_fmt_t *compile_template(const char *spec, bool json, char *why, size_t whylen)
{
    tt_accesslog_fmt_t *f = tt_calloc(1, sizeof(*f));
    size_t n = strlen(spec), tlen = 0;
    f->json = json;
    f->text = tt_malloc(n + 1);
    for (size_t i = 0; i < n;) {
        if (spec[i] != '$') {
            size_t j = i;
            while (j < n && spec[j] != '$') j++;
            if (add_literal(f, &tlen, spec + i, j - i, why, whylen) != 0) goto fail;
            i = j;
            continue;
        }
        if (i + 1 < n && spec[i + 1] == '$') { /* "$$": one dollar sign */
            if (add_literal(f, &tlen, "$", 1, why, whylen) != 0) goto fail;
            i += 2;
            continue;
        }
        size_t s = i + 1, e;
        bool braced = s < n && spec[s] == '{';
        if (braced) s++;
        for (e = s; e < n && name_char(spec[e]); e++) {
        }
        if (e == s || (braced && (e >= n || spec[e] != '}'))) {
            snprintf(why, whylen,
                     braced ? "a ${ without a name and its } (write $$ for a dollar sign)"
                            : "a $ without a variable name (write $$ for a dollar sign)");
            goto fail;
        }
        if (add_var(f, spec + s, e - s, why, whylen) != 0) goto fail;
        i = braced ? e + 1 : e;
    }
    return f;
fail:
    tt_accesslog_fmt_free(&f);
    return NULL;
}

/* The json format: every variable, named as in templates, with the common request fields. */
static tt_accesslog_fmt_t *compile_json(char *why, size_t whylen)
{
    char spec[2048];
    size_t n = 0;
    spec[n++] = '{';
    for (int v = 0; v < V__NAMED; v++)
        n += (size_t)snprintf(spec + n, sizeof(spec) - n, "%s\"%s\":${%s}", v ? "," : "", var_names[v], var_names[v]);
    n += (size_t)snprintf(spec + n, sizeof(spec) - n,
                          ",\"http_user_agent\":$http_user_agent,\"http_referer\":$http_referer}");
    TT_BUG_ON(n >= sizeof(spec) - 1);
    return compile_template(spec, true, why, whylen);
}

static tt_accesslog_fmt_t *compile_spec(const char *spec, char *why, size_t whylen)
{
    if (strcmp(spec, "main") == 0) {
        tt_accesslog_fmt_t *f = tt_calloc(1, sizeof(*f));
        f->is_main = true;
        return f;
    }
    if (strcmp(spec, "combined") == 0) return compile_template(combined_spec, false, why, whylen);
    if (strcmp(spec, "json") == 0) return compile_json(why, whylen);
    if (*spec == '\0') {
        snprintf(why, whylen, "expected main, combined, json or a template with $variables");
        return NULL;
    }
    return compile_template(spec, false, why, whylen);
}

tt_accesslog_fmt_t *tt_accesslog_fmt_compile(const char *spec, char *why, size_t whylen)
{
    tt_accesslog_fmt_t *f = compile_spec(spec, why, whylen);
    if (f == NULL) return NULL;
    f->spec = tt_strndup(spec, strlen(spec));
    for (size_t i = 0; i < f->nops; i++)
        if (!f->ops[i].literal && f->ops[i].var == V_REQUEST_ID) f->reads_request_id = true;
    return f;
}

bool tt_accesslog_reads_request_id(const tt_accesslog_t *log)
{
    return tt_accesslog_enabled(log) && log->fmt != NULL && log->fmt->reads_request_id;
}

const char *tt_accesslog_fmt_spec(const tt_accesslog_fmt_t *f)
{
    return f != NULL && f->spec != NULL ? f->spec : "main";
}

void tt_accesslog_fmt_free(tt_accesslog_fmt_t **f)
{
    if (*f == NULL) return;
    free((*f)->text);
    free((*f)->spec);
    free(*f);
    *f = NULL;
}

/* ---- capturing request fields ---- */

static tt_str_t head_cap(const tt_accesslog_fmt_t *f, size_t i, const tt_h1_request_t *h)
{
    if (f->caplen[i] == sizeof(AUTHORITY) - 1 && memcmp(f->capname[i], AUTHORITY, f->caplen[i]) == 0)
        return h->authority.n ? h->authority : TT_STR_NULL;
    int k = tt_h1_find_field(h, f->capname[i], f->caplen[i]);
    return k >= 0 ? h->fields[k].value : TT_STR_NULL;
}

size_t tt_accesslog_capture_size(const tt_accesslog_t *log, const tt_h1_request_t *h)
{
    const tt_accesslog_fmt_t *f = log->fmt;
    if (!tt_accesslog_enabled(log) || f == NULL || f->ncaps == 0 || h == NULL) return 0;
    size_t n = f->ncaps * sizeof(tt_str_t);
    for (size_t i = 0; i < f->ncaps; i++) n += head_cap(f, i, h).n;
    return n;
}

const tt_str_t *tt_accesslog_capture(const tt_accesslog_t *log, const tt_h1_request_t *h, void *store)
{
    const tt_accesslog_fmt_t *f = log->fmt;
    if (!tt_accesslog_enabled(log) || f == NULL || f->ncaps == 0 || h == NULL) return NULL;
    tt_str_t *caps = store;
    char *bytes = (char *)(caps + f->ncaps);
    for (size_t i = 0; i < f->ncaps; i++) {
        tt_str_t v = head_cap(f, i, h);
        if (v.p == NULL) {
            caps[i] = TT_STR_NULL;
            continue;
        }
        memcpy(bytes, v.p, v.n);
        caps[i] = tt_str(bytes, v.n);
        bytes += v.n;
    }
    return caps;
}

/* ---- writing a line ---- */

/* What a variable is worth for one line. */
enum vkind {
    VK_NONE,    /* absent: "-" in text, null in JSON */
    VK_STR,     /* bytes to escape */
    VK_NUMSTR,  /* a number already formatted: bare in JSON */
    VK_U64,     /* integer */
    VK_MS,      /* milliseconds, written as seconds with 3 decimals */
    VK_US,      /* microseconds, written as seconds with 6 decimals */
    VK_REQUEST, /* the request-line: method, target, protocol */
};

typedef struct val {
    uint8_t k;
    tt_str_t s;
    uint64_t u;
} val_t;

/* Per-line scratch for values that are formatted before they are written. */
typedef struct scratch {
    char addr[TT_ADDR_STRLEN];
    char upaddr[TT_ADDR_STRLEN];
    char msec[32];
    tt_str_t proto;
    char protobuf[12];
} scratch_t;

static val_t vstr(tt_str_t s)
{
    return s.p == NULL ? (val_t){VK_NONE} : (val_t){VK_STR, s, 0};
}

static val_t vcstr(const char *s)
{
    return s == NULL ? (val_t){VK_NONE} : (val_t){VK_STR, tt_str(s, strlen(s)), 0};
}

static val_t vnum(uint64_t u)
{
    return (val_t){VK_U64, TT_STR_NULL, u};
}

static tt_str_t cap_value(const tt_accesslog_fmt_t *f, const tt_accesslog_rec_t *r, uint8_t cap)
{
    if (r->caps != NULL) return r->caps[cap];
    if (r->head != NULL) return head_cap(f, cap, r->head);
    return TT_STR_NULL;
}

/* $host: the authority without its port (nginx strips it too). */
static tt_str_t strip_port(tt_str_t a)
{
    size_t n = a.n;
    if (n && a.p[0] == '[') { /* IP-literal */
        const char *end = memchr(a.p, ']', n);
        return end ? tt_str(a.p, (size_t)(end - a.p) + 1) : a;
    }
    const char *colon = memchr(a.p, ':', n);
    return colon ? tt_str(a.p, (size_t)(colon - a.p)) : a;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static val_t eval(const tt_accesslog_t *log, const op_t *op, const tt_accesslog_rec_t *r, scratch_t *sc)
{
    const tt_accesslog_up_t *up = r->up;
    switch ((enum var)op->var) {
    case V_REMOTE_ADDR:
        if (sc->addr[0] == '\0') tt_addr_format_host(r->peer, sc->addr, sizeof(sc->addr));
        return vcstr(sc->addr);
    case V_REMOTE_PORT: return vnum(tt_addr_port(r->peer));
    case V_REMOTE_USER: return (val_t){VK_NONE};
    case V_TIME_LOCAL: return vcstr(log->stamp);
    case V_TIME_ISO8601: return vcstr(log->iso);
    case V_MSEC:
        if (sc->msec[0] == '\0') {
            int64_t ms = wall_ms();
            snprintf(sc->msec, sizeof(sc->msec), "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
        }
        return (val_t){VK_NUMSTR, tt_str(sc->msec, strlen(sc->msec)), 0};
    case V_REQUEST:
        return r->method.n == 0 && r->target.n == 0 ? (val_t){VK_NONE} : (val_t){VK_REQUEST, TT_STR_NULL, 0};
    case V_REQUEST_METHOD: return r->method.n ? vstr(r->method) : (val_t){VK_NONE};
    case V_REQUEST_URI: return r->target.n ? vstr(r->target) : (val_t){VK_NONE};
    case V_SERVER_PROTOCOL: return vstr(sc->proto);
    case V_STATUS: return vnum((uint64_t)r->status);
    case V_BODY_BYTES_SENT: return vnum(r->bytes >= r->head_bytes ? r->bytes - r->head_bytes : 0);
    case V_BYTES_SENT: return vnum(r->bytes);
    case V_REQUEST_TIME: return (val_t){VK_MS, TT_STR_NULL, r->duration_ms};
    case V_HOST: {
        tt_str_t a = cap_value(log->fmt, r, op->cap);
        return a.p && a.n ? vstr(strip_port(a)) : (val_t){VK_NONE};
    }
    case V_REQUEST_ID: return r->request_id.n ? vstr(r->request_id) : (val_t){VK_NONE};
    case V_CONNECTION: return vnum(r->conn_id);
    case V_CONNECTION_REQUESTS: return vnum(r->req_no);
    case V_KEEPALIVE: return vcstr(strcmp(r->decision, "keep") == 0 ? "keep" : "close");
    case V_CLOSE_REASON: return strcmp(r->decision, "keep") == 0 ? (val_t){VK_NONE} : vcstr(r->decision);
    case V_PROTOCOL: return vcstr(r->proto ? "h2" : "h1");
    case V_STREAM_ID: return r->stream_id > 0 ? vnum((uint64_t)r->stream_id) : (val_t){VK_NONE};
    case V_UPSTREAM_NAME: return up ? vcstr(up->name) : (val_t){VK_NONE};
    case V_UPSTREAM_ADDR:
        if (up == NULL || up->addr == NULL) return (val_t){VK_NONE};
        tt_addr_format(up->addr, sc->upaddr, sizeof(sc->upaddr));
        return vcstr(sc->upaddr);
    case V_UPSTREAM_STATUS: return up && up->status > 0 ? vnum((uint64_t)up->status) : (val_t){VK_NONE};
    case V_UPSTREAM_CONNECT_TIME:
        return up && up->connect_us >= 0 ? (val_t){VK_US, TT_STR_NULL, (uint64_t)up->connect_us} : (val_t){VK_NONE};
    case V_UPSTREAM_HEADER_TIME:
        return up && up->header_us >= 0 ? (val_t){VK_US, TT_STR_NULL, (uint64_t)up->header_us} : (val_t){VK_NONE};
    case V_UPSTREAM_RESPONSE_TIME:
        return up && up->response_us >= 0 ? (val_t){VK_US, TT_STR_NULL, (uint64_t)up->response_us} : (val_t){VK_NONE};
    case V_UPSTREAM_REUSED: return up && up->addr ? vnum(up->reused ? 1 : 0) : (val_t){VK_NONE};
    case V_UPSTREAM_CAUSE: return up ? vcstr(up->cause) : (val_t){VK_NONE};
    case V_TUNNEL_UP: return r->tunnel ? vnum(r->tunnel_up) : (val_t){VK_NONE};
    case V_TUNNEL_DOWN: return r->tunnel ? vnum(r->tunnel_down) : (val_t){VK_NONE};
    case V_TUNNEL_TIME: return r->tunnel ? (val_t){VK_MS, TT_STR_NULL, r->tunnel_ms} : (val_t){VK_NONE};
    case V_HTTP_FIELD: return vstr(cap_value(log->fmt, r, op->cap));
    }
    return (val_t){VK_NONE};
}

/* Most bytes `v` takes once written. */
static size_t bound(const val_t *v, const tt_accesslog_rec_t *r, bool json)
{
    size_t k = json ? 6 : 4;
    switch ((enum vkind)v->k) {
    case VK_STR:
    case VK_NUMSTR: return k * v->s.n + 2;
    case VK_REQUEST: return k * (r->method.n + r->target.n) + 24;
    default: return 32;
    }
}

/* `v` in units of 1/`scale` s, as seconds with `digits` decimals. */
static char *put_fixed(char *o, uint64_t v, uint64_t scale, int digits)
{
    o = tt_put_u64(o, v / scale);
    *o++ = '.';
    uint64_t frac = v % scale;
    for (int d = digits - 1; d >= 0; d--) {
        o[d] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return o + digits;
}

static char *put_str(char *o, tt_str_t s, bool json)
{
    return o + (json ? tt_accesslog_json_escape(o, s) : tt_accesslog_text_escape(o, s));
}

static char *put_val(char *o, const val_t *v, const tt_accesslog_rec_t *r, const scratch_t *sc, bool json)
{
    switch ((enum vkind)v->k) {
    case VK_NONE:
        if (json) {
            memcpy(o, "null", 4);
            return o + 4;
        }
        *o++ = '-';
        return o;
    case VK_STR:
        if (json) *o++ = '"';
        o = put_str(o, v->s, json);
        if (json) *o++ = '"';
        return o;
    case VK_NUMSTR: memcpy(o, v->s.p, v->s.n); return o + v->s.n;
    case VK_U64: return tt_put_u64(o, v->u);
    case VK_MS: return put_fixed(o, v->u, 1000, 3);
    case VK_US: return put_fixed(o, v->u, 1000000, 6);
    case VK_REQUEST:
        if (json) *o++ = '"';
        o = put_str(o, r->method, json);
        *o++ = ' ';
        o = put_str(o, r->target, json);
        *o++ = ' ';
        memcpy(o, sc->proto.p, sc->proto.n);
        o += sc->proto.n;
        if (json) *o++ = '"';
        return o;
    }
    return o;
}

static void stamp_times(tt_accesslog_t *log, bool iso)
{
    int64_t now = tt_loop_wall(log->loop);
    struct tm tm;
    time_t t = (time_t)now;
    if (now != log->stamp_s) {
        gmtime_r(&t, &tm);
        strftime(log->stamp, sizeof(log->stamp), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        log->stamp_s = now;
    }
    if (iso && now != log->iso_s) {
        gmtime_r(&t, &tm);
        strftime(log->iso, sizeof(log->iso), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
        log->iso_s = now;
    }
}

static void line_done(tt_accesslog_t *log, size_t n)
{
    log->buf.len += (uint32_t)n;
    if (log->buf.len >= FLUSH_AT)
        tt_accesslog_flush(log);
    else
        tt_loop_defer(log->loop, &log->flush, on_flush);
}

/* A compiled format: every value found once, their room reserved at once, then written. */
static void add_formatted(tt_accesslog_t *log, const tt_accesslog_rec_t *r)
{
    const tt_accesslog_fmt_t *f = log->fmt;
    stamp_times(log, true);
    scratch_t sc;
    sc.addr[0] = sc.upaddr[0] = sc.msec[0] = '\0';
    if (r->proto) {
        sc.proto = tt_str(r->proto, strlen(r->proto));
    } else {
        snprintf(sc.protobuf, sizeof(sc.protobuf), "HTTP/1.%d", r->minor_version);
        sc.proto = tt_str(sc.protobuf, strlen(sc.protobuf));
    }
    val_t vals[MAX_OPS];
    size_t need = 2;
    for (size_t i = 0; i < f->nops; i++) {
        const op_t *op = &f->ops[i];
        if (op->literal) {
            need += op->len;
            continue;
        }
        vals[i] = eval(log, op, r, &sc);
        need += bound(&vals[i], r, f->json);
    }
    if (!tt_buf_reserve(&log->buf, &log->pool, need, SIZE_MAX)) return;
    char *o0 = tt_buf_tail(&log->buf), *o = o0;
    for (size_t i = 0; i < f->nops; i++) {
        const op_t *op = &f->ops[i];
        if (op->literal) {
            memcpy(o, f->text + op->off, op->len);
            o += op->len;
        } else {
            o = put_val(o, &vals[i], r, &sc, f->json);
        }
    }
    *o++ = '\n';
    line_done(log, (size_t)(o - o0));
}

void tt_accesslog_add(tt_accesslog_t *log, const tt_accesslog_rec_t *r)
{
    if (!tt_accesslog_enabled(log)) return;
    if (log->fmt != NULL) {
        add_formatted(log, r);
        return;
    }
    stamp_times(log, false);
    size_t need = 256 + 4 * (r->method.n + r->target.n) + r->extra.n;
    if (!tt_buf_reserve(&log->buf, &log->pool, need, SIZE_MAX)) return;
    char *o = tt_buf_tail(&log->buf), host[TT_ADDR_STRLEN];
    tt_addr_format_host(r->peer, host, sizeof(host));
    size_t n = (size_t)snprintf(o, need, "%s - - [%s] \"", host, log->stamp);
    n += tt_accesslog_text_escape(o + n, r->method);
    o[n++] = ' ';
    n += tt_accesslog_text_escape(o + n, r->target);
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
    line_done(log, n);
}
