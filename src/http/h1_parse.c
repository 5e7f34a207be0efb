/* h1_parse.c -- strict HTTP/1.x request head and chunked framing parser (RFC 9112), pure and zero-copy */
#include "http/h1_parse.h"

const tt_h1_limits_t tt_h1_default_limits = {
    .max_target = 8192,
    .max_field_bytes = 32768,
    .max_fields = TT_H1_MAX_FIELDS,
    .max_field_line = 8192,
};

/* Longest method token plus the two spaces and "HTTP/x.y" around the target. */
#define REQUEST_LINE_SLACK 64

static const struct {
    int status;
    const char *name;
} errors[TT_H1_E__COUNT] = {
    [TT_H1_OK] = {200, "ok"},
    [TT_H1_E_REQUEST_LINE] = {400, "bad_request_line"},
    [TT_H1_E_TARGET_TOO_LONG] = {414, "target_too_long"},
    [TT_H1_E_VERSION] = {400, "bad_version"},
    [TT_H1_E_VERSION_UNSUPPORTED] = {505, "version_not_supported"},
    [TT_H1_E_BARE_CR] = {400, "bare_cr"},
    [TT_H1_E_BARE_LF] = {400, "bare_lf"},
    [TT_H1_E_FIELD_NAME] = {400, "bad_field_name"},
    [TT_H1_E_FIELD_NAME_WS] = {400, "space_before_colon"},
    [TT_H1_E_FIELD_VALUE] = {400, "bad_field_value"},
    [TT_H1_E_OBS_FOLD] = {400, "obs_fold"},
    [TT_H1_E_TOO_MANY_FIELDS] = {431, "too_many_fields"},
    [TT_H1_E_FIELDS_TOO_LARGE] = {431, "fields_too_large"},
    [TT_H1_E_CONTENT_LENGTH] = {400, "bad_content_length"},
    [TT_H1_E_CL_AND_TE] = {400, "content_length_and_transfer_encoding"},
    [TT_H1_E_TRANSFER_CODING] = {400, "bad_transfer_coding"},
    [TT_H1_E_HOST] = {400, "bad_host"},
    [TT_H1_E_EXPECT] = {417, "unsupported_expectation"},
    [TT_H1_E_CHUNK_SIZE] = {400, "bad_chunk_size"},
    [TT_H1_E_CHUNK_EXT] = {400, "bad_chunk_extension"},
    [TT_H1_E_CHUNK_DATA] = {400, "bad_chunk_data"},
    [TT_H1_E_TRAILER] = {400, "bad_trailer"},
    [TT_H1_E_TARGET] = {400, "bad_target"},
    [TT_H1_E_FIELD_LINE_TOO_LONG] = {431, "field_line_too_long"},
};

int tt_h1_error_status(tt_h1_error_t e)
{
    return (unsigned)e < TT_H1_E__COUNT ? errors[e].status : 400;
}
const char *tt_h1_error_name(tt_h1_error_t e)
{
    return (unsigned)e < TT_H1_E__COUNT ? errors[e].name : "unknown";
}

/* tchar (RFC 9110 5.6.2): field names, methods, tokens. */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1,  ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,
    ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,  ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1,
};

static inline bool is_tchar(unsigned char c)
{
    return tchar[c] != 0;
}
/* field-vchar / SP / HTAB / obs-text (RFC 9110 5.5): everything but CTLs and DEL. */
static inline bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}
static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}
/* Bytes allowed in a request-target: visible ASCII (RFC 3986 characters and the few that clients leave
 * unencoded); never whitespace, controls or non-ASCII. */
static inline bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static int bad(tt_h1_request_t *req, tt_h1_error_t e)
{
    req->error = e;
    return TT_BAD;
}

/* A CR must be followed by LF and an LF preceded by CR; checks the line ending at `lf`. */
static tt_h1_error_t check_crlf(const char *start, const char *lf)
{
    if (lf == start || lf[-1] != '\r') return TT_H1_E_BARE_LF;
    return TT_H1_OK;
}

static tt_method_t method_id(tt_str_t m)
{
    switch (m.n) {
    case 3:
        if (tt_str_eq(m, TT_LIT("GET"))) return TT_METHOD_GET;
        if (tt_str_eq(m, TT_LIT("PUT"))) return TT_METHOD_PUT;
        break;
    case 4:
        if (tt_str_eq(m, TT_LIT("HEAD"))) return TT_METHOD_HEAD;
        if (tt_str_eq(m, TT_LIT("POST"))) return TT_METHOD_POST;
        break;
    case 5:
        if (tt_str_eq(m, TT_LIT("PATCH"))) return TT_METHOD_PATCH;
        if (tt_str_eq(m, TT_LIT("TRACE"))) return TT_METHOD_TRACE;
        break;
    case 6:
        if (tt_str_eq(m, TT_LIT("DELETE"))) return TT_METHOD_DELETE;
        break;
    case 7:
        if (tt_str_eq(m, TT_LIT("OPTIONS"))) return TT_METHOD_OPTIONS;
        if (tt_str_eq(m, TT_LIT("CONNECT"))) return TT_METHOD_CONNECT;
        break;
    }
    return TT_METHOD_OTHER;
}

/*
 * Validates the method token of a request-line prefix `p[0..n)` that may still be incomplete, so that
 * garbage (a TLS ClientHello on a plain port, binary junk) is refused at its first byte instead of
 * waiting for a head terminator that never comes.
 */
static bool method_prefix_ok(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ') return i > 0;
        if (!is_tchar((unsigned char)p[i])) return false;
    }
    return true;
}

/*
 * The form of the request-target and whether the method takes it (RFC 9112 3.2): origin-form for every method
 * but CONNECT, authority-form for CONNECT alone (3.2.3), asterisk-form for OPTIONS alone (3.2.4), and
 * absolute-form with an http or https scheme and an authority without userinfo (3.2.2, RFC 9110 4.2.4).
 */
static int classify_target(tt_h1_request_t *req)
{
    tt_str_t t = req->target, rest;
    const bool connect = req->method_id == TT_METHOD_CONNECT;
    if (t.p[0] == '/') {
        req->target_form = TT_TARGET_ORIGIN;
        return connect ? bad(req, TT_H1_E_TARGET) : 0;
    }
    if (connect) {
        req->target_form = TT_TARGET_AUTHORITY;
        req->authority = t;
        return tt_uri_authority_valid(t, true) ? 0 : bad(req, TT_H1_E_TARGET);
    }
    if (tt_str_eq(t, TT_LIT("*"))) {
        req->target_form = TT_TARGET_ASTERISK;
        return req->method_id == TT_METHOD_OPTIONS ? 0 : bad(req, TT_H1_E_TARGET);
    }
    req->target_form = TT_TARGET_ABSOLUTE;
    return tt_uri_split_absolute(t, &req->authority, &rest) ? 0 : bad(req, TT_H1_E_TARGET);
}

/* Parses "METHOD SP TARGET SP HTTP/x.y" in `line[0..n)` (CRLF excluded). */
static int parse_request_line(const char *line, size_t n, const tt_h1_limits_t *lim, tt_h1_request_t *req)
{
    const char *p = line, *end = line + n;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    if (p == line || p == end || *p != ' ')
        return bad(req, TT_H1_E_REQUEST_LINE); /* the same verdict method_prefix_ok() gives early */
    req->method = tt_str(line, (size_t)(p - line));
    req->method_id = method_id(req->method);
    const char *t = ++p;
    while (p < end && is_target_char((unsigned char)*p)) p++;
    if ((size_t)(p - t) > lim->max_target) return bad(req, TT_H1_E_TARGET_TOO_LONG);
    if (p == t || p == end || *p != ' ')
        return bad(req, (p < end && *p == '\r') ? TT_H1_E_BARE_CR : TT_H1_E_REQUEST_LINE);
    req->target = tt_str(t, (size_t)(p - t));
    p++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3) */
    if (end - p != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' ||
        p[7] > '9') {
        for (const char *q = p; q < end; q++)
            if (*q == '\r') return bad(req, TT_H1_E_BARE_CR);
        return bad(req, TT_H1_E_VERSION);
    }
    if (p[5] != '1') return bad(req, TT_H1_E_VERSION_UNSUPPORTED);
    req->minor_version = p[7] == '0' ? 0 : 1;
    return classify_target(req);
}

/* A request's Content-Length: one field line holding one number (RFC 9110 8.6). A list, even of equal values,
 * or a second line is refused as nginx does: the recipient that tolerates it and the one that does not disagree
 * on the framing, which is what request smuggling needs. */
static bool request_content_length(tt_str_t v, int64_t *cl)
{
    if (*cl >= 0 || v.n == 0) return false;
    int64_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return false;
        int d = v.p[i] - '0';
        if (n > (INT64_MAX - d) / 10) return false;
        n = n * 10 + d;
    }
    *cl = n;
    return true;
}

/* Adds the members of one Content-Length field value; all members must agree (RFC 9110 8.6). */
static bool add_content_length(tt_str_t v, int64_t *cl)
{
    const char *p = v.p, *end = v.p + v.n;
    for (;;) {
        while (p < end && is_ows(*p)) p++;
        if (p == end || *p < '0' || *p > '9') return false;
        int64_t n = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            int d = *p++ - '0';
            if (n > (INT64_MAX - d) / 10) return false;
            n = n * 10 + d;
        }
        if (*cl >= 0 && *cl != n) return false;
        *cl = n;
        while (p < end && is_ows(*p)) p++;
        if (p == end) return true;
        if (*p++ != ',') return false;
    }
}

/* Calls `fn` for each comma-separated list member (OWS trimmed, empty members skipped). */
static bool foreach_member(tt_str_t v, bool (*fn)(tt_str_t m, void *ctx), void *ctx)
{
    const char *p = v.p, *end = v.p + v.n;
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ',')) p++;
        const char *s = p;
        while (p < end && *p != ',') p++;
        const char *e = p;
        while (e > s && is_ows(e[-1])) e--;
        if (e > s && !fn(tt_str(s, (size_t)(e - s)), ctx)) return false;
    }
    return true;
}

static bool conn_token(tt_str_t m, void *ctx)
{
    unsigned *tokens = ctx;
    if (tt_str_ieq(m, TT_LIT("close")))
        *tokens |= TT_H1_CONN_CLOSE;
    else if (tt_str_ieq(m, TT_LIT("keep-alive")))
        *tokens |= TT_H1_CONN_KEEP_ALIVE;
    else if (tt_str_ieq(m, TT_LIT("upgrade")))
        *tokens |= TT_H1_CONN_UPGRADE;
    return true;
}

/* Transfer-Encoding members: exactly one, "chunked" (RFC 9112 6.1; any other coding is refused), and no empty
 * element (", chunked", "chunked,"): RFC 9110 5.6.1 asks recipients to skip those, but a peer that does not
 * would read another framing, so they are refused as nginx does. Adds the members to `*count`; false when a
 * member is empty or not chunked. */
static bool te_members(tt_str_t v, int *count)
{
    const char *p = v.p, *end = v.p + v.n;
    for (;;) {
        const char *s = p;
        while (p < end && *p != ',') p++;
        const char *e = p;
        while (s < e && is_ows(*s)) s++;
        while (e > s && is_ows(e[-1])) e--;
        if (!tt_str_ieq(tt_str(s, (size_t)(e - s)), TT_LIT("chunked"))) return false;
        (*count)++;
        if (p == end) return true;
        p++;
    }
}

typedef struct {
    int host;
    int te;
    bool has_te;
    bool bad_cl;
    bool bad_expect;
} semantics_t;

static void classify(tt_h1_request_t *req, size_t idx, semantics_t *s)
{
    tt_str_t n = req->fields[idx].name, v = req->fields[idx].value;
    switch (n.n) {
    case 4:
        if (tt_str_ieq(n, TT_LIT("host"))) {
            s->host++;
            req->known[TT_H1_F_HOST] = (int16_t)idx;
        }
        break;
    case 5:
        if (tt_str_ieq(n, TT_LIT("range"))) req->known[TT_H1_F_RANGE] = (int16_t)idx;
        break;
    case 6:
        if (tt_str_ieq(n, TT_LIT("expect"))) {
            if (tt_str_ieq(v, TT_LIT("100-continue")))
                req->expect_continue = true;
            else
                s->bad_expect = true;
        }
        break;
    case 8:
        if (tt_str_ieq(n, TT_LIT("if-range"))) req->known[TT_H1_F_IF_RANGE] = (int16_t)idx;
        break;
    case 10:
        if (tt_str_ieq(n, TT_LIT("connection"))) foreach_member(v, conn_token, &req->conn_tokens);
        break;
    case 13:
        if (tt_str_ieq(n, TT_LIT("if-none-match"))) req->known[TT_H1_F_IF_NONE_MATCH] = (int16_t)idx;
        break;
    case 14:
        if (tt_str_ieq(n, TT_LIT("content-length")) && !request_content_length(v, &req->content_length))
            s->bad_cl = true;
        break;
    case 15:
        if (tt_str_ieq(n, TT_LIT("idempotency-key"))) req->known[TT_H1_F_IDEMPOTENCY_KEY] = (int16_t)idx;
        break;
    case 17:
        if (tt_str_ieq(n, TT_LIT("transfer-encoding"))) {
            s->has_te = true;
            if (!te_members(v, &s->te)) s->te = -1000;
        } else if (tt_str_ieq(n, TT_LIT("if-modified-since"))) {
            req->known[TT_H1_F_IF_MODIFIED_SINCE] = (int16_t)idx;
        }
        break;
    }
}

/*
 * Parses the field lines in `p[0..end)`, each ending in CRLF (the empty line excluded), into `fields`
 * (`*n` of them). Shared by requests, responses and nothing else: message semantics come afterwards.
 */
static tt_h1_error_t parse_field_lines(const char *p, const char *end, size_t max_fields, tt_h1_field_t *fields,
                                       size_t *n)
{
    *n = 0;
    while (p < end) {
        if (is_ows(*p)) return TT_H1_E_OBS_FOLD;
        if (*n >= max_fields || *n >= TT_H1_MAX_FIELDS) return TT_H1_E_TOO_MANY_FIELDS;
        const char *name = p;
        while (p < end && is_tchar((unsigned char)*p)) p++;
        if (p == end) return TT_H1_E_FIELD_NAME;
        if (*p != ':') {
            if (p > name && is_ows(*p)) return TT_H1_E_FIELD_NAME_WS;
            if (*p == '\r' && p + 1 < end && p[1] != '\n') return TT_H1_E_BARE_CR;
            return TT_H1_E_FIELD_NAME;
        }
        if (p == name) return TT_H1_E_FIELD_NAME;
        tt_h1_field_t *f = &fields[*n];
        f->name = tt_str(name, (size_t)(p - name));
        p++;
        while (p < end && is_ows(*p)) p++;
        const char *v = p;
        while (p < end && is_value_char((unsigned char)*p)) p++;
        /* The line ends at CR LF; any other stop is a control byte or a lone CR/LF. */
        if (p + 1 >= end || p[0] != '\r' || p[1] != '\n') {
            if (p < end && *p == '\r') return TT_H1_E_BARE_CR;
            if (p < end && *p == '\n') return TT_H1_E_BARE_LF;
            return TT_H1_E_FIELD_VALUE;
        }
        const char *ve = p;
        while (ve > v && is_ows(ve[-1])) ve--;
        f->value = tt_str(v, (size_t)(ve - v));
        (*n)++;
        p += 2;
    }
    return TT_H1_OK;
}

/*
 * The Host field (RFC 9110 7.2, RFC 9112 3.2): at most one (exactly one in HTTP/1.1), a valid uri-host [":" port],
 * empty only on an absolute-form request, whose target's authority replaces it (3.2.2). Sets req->authority.
 */
static int check_host(tt_h1_request_t *req, int hosts)
{
    if (hosts > 1) return bad(req, TT_H1_E_HOST);
    if (hosts == 0) return 0;
    tt_str_t v = req->fields[req->known[TT_H1_F_HOST]].value;
    if (v.n == 0 ? req->target_form != TT_TARGET_ABSOLUTE : !tt_uri_authority_valid(v, false))
        return bad(req, TT_H1_E_HOST);
    if (req->target_form != TT_TARGET_ABSOLUTE && req->target_form != TT_TARGET_AUTHORITY) req->authority = v;
    return 0;
}

/* Parses the field lines of a request and applies request semantics (RFC 9112 3.2, 6). */
static int parse_fields(const char *p, const char *end, const tt_h1_limits_t *lim, tt_h1_request_t *req)
{
    tt_h1_error_t e = parse_field_lines(p, end, lim->max_fields, req->fields, &req->nfields);
    if (e != TT_H1_OK) return bad(req, e);
    semantics_t s = {0};
    for (size_t i = 0; i < req->nfields; i++) classify(req, i, &s);
    if (s.bad_cl) return bad(req, TT_H1_E_CONTENT_LENGTH);
    if (s.has_te) {
        if (req->content_length >= 0) return bad(req, TT_H1_E_CL_AND_TE);
        if (s.te != 1 || req->minor_version == 0) return bad(req, TT_H1_E_TRANSFER_CODING);
        req->chunked = true;
    }
    if (req->minor_version >= 1 && s.host != 1) return bad(req, TT_H1_E_HOST);
    if (check_host(req, s.host) != 0) return TT_BAD;
    if (s.bad_expect) return bad(req, TT_H1_E_EXPECT);
    return 0;
}

int tt_h1_request_semantics(tt_h1_request_t *req)
{
    req->content_length = -1;
    req->chunked = false;
    req->expect_continue = false;
    req->conn_tokens = 0;
    req->error = TT_H1_OK;
    req->authority = TT_STR_NULL;
    for (int i = 0; i < TT_H1_F__COUNT; i++) req->known[i] = -1;
    semantics_t s = {0};
    for (size_t i = 0; i < req->nfields; i++) classify(req, i, &s);
    if (s.bad_cl) return bad(req, TT_H1_E_CONTENT_LENGTH);
    return check_host(req, s.host);
}

static void reset_request(tt_h1_request_t *req)
{
    req->method = req->target = req->authority = TT_STR_NULL;
    req->target_form = TT_TARGET_ORIGIN;
    req->method_id = TT_METHOD_OTHER;
    req->minor_version = 1;
    req->content_length = -1;
    req->chunked = false;
    req->expect_continue = false;
    req->conn_tokens = 0;
    req->error = TT_H1_OK;
    req->nfields = 0;
    for (int i = 0; i < TT_H1_F__COUNT; i++) req->known[i] = -1;
}

/* Finds the "\r\n\r\n" that ends the head; returns a pointer past it or NULL. `from` is where to resume. */
static const char *find_head_end(const char *start, const char *from, const char *end)
{
    const char *p = from;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL) return NULL;
        if (lf - start >= 3 && lf[-1] == '\r' && lf[-2] == '\n' && lf[-3] == '\r') return lf + 1;
        p = lf + 1;
    }
    return NULL;
}

/* The first LF in [from, end) not preceded by CR, or NULL; `fields` is the earliest byte that may be read. */
static const char *first_bare_lf(const char *fields, const char *from, const char *end)
{
    for (const char *p = from; p < end;) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL) return NULL;
        if (lf == fields || lf[-1] != '\r') return lf;
        p = lf + 1;
    }
    return NULL;
}

/*
 * The byte that proves a field line longer than `max` (the line's bytes before its CRLF, RFC 9112 5), or NULL:
 * the byte at line start + max + 1 of a line with no LF up to it. `from` is where the bytes not yet checked
 * begin; the line holding it is scanned from its start. Each line costs at most max + 2 bytes of scanning.
 */
static const char *first_long_line(const char *fields, const char *from, const char *end, size_t max)
{
    const char *s = TT_MIN(from, end);
    while (s > fields && s[-1] != '\n') s--;
    while (s < end) {
        size_t avail = (size_t)(end - s);
        const char *lf = memchr(s, '\n', TT_MIN(avail, max + 2));
        if (lf == NULL) return avail > max + 1 ? s + max + 1 : NULL;
        s = lf + 1;
    }
    return NULL;
}

int tt_h1_parse_request(const char *buf, size_t len, size_t last_len, const tt_h1_limits_t *lim, tt_h1_request_t *req)
{
    reset_request(req);
    size_t skip = 0;
    const size_t max_line = lim->max_target + REQUEST_LINE_SLACK;
    /* RFC 9112 2.2: ignore empty lines (CRLF) received before the request-line, but not without bound: they
     * would hold the connection's buffer and header timeout for nothing. More than a request-line's worth
     * is refused. */
    while (skip < len && buf[skip] == '\r') {
        if (skip >= max_line) return bad(req, TT_H1_E_REQUEST_LINE);
        if (skip + 1 == len) return TT_INCOMPLETE;
        if (buf[skip + 1] != '\n') return bad(req, TT_H1_E_BARE_CR);
        skip += 2;
    }
    const char *start = buf + skip, *end = buf + len;
    size_t avail = len - skip;

    /* Order of checks, the same whether the head is whole or a prefix (so splits never change the
     * outcome): request-line too long, request-line malformed, field section too large, fields. */
    const char *rl_lf = memchr(start, '\n', TT_MIN(avail, max_line + 2));
    if (rl_lf == NULL) {
        if (avail > max_line + 1) return bad(req, TT_H1_E_TARGET_TOO_LONG);
        if (!method_prefix_ok(start, avail)) return bad(req, TT_H1_E_REQUEST_LINE);
        return TT_INCOMPLETE;
    }
    /* a bad method byte before the line's end is what a prefix without the LF would see: the same verdict */
    if (!method_prefix_ok(start, (size_t)(rl_lf - start))) return bad(req, TT_H1_E_REQUEST_LINE);
    if (check_crlf(start, rl_lf) != TT_H1_OK) return bad(req, TT_H1_E_BARE_LF);
    if (parse_request_line(start, (size_t)(rl_lf - 1 - start), lim, req) != 0) return TT_BAD;

    const char *fields = rl_lf + 1;
    size_t from_off = last_len > skip + 3 ? last_len - 3 : skip;
    const char *from = TT_MAX(buf + from_off, rl_lf - 1);
    const char *head_end = find_head_end(start, from, end);
    /* Three refusals can race here: a lone LF, an oversized field section and an overlong field line. Whichever
     * comes first in byte order wins, the same in a whole head and in any prefix of it (only new bytes are
     * scanned on a resumed parse): each limit "happens" at the byte that proves it (field-section offset max+1,
     * line offset max_field_line+1) even if the terminator follows; at the same byte the section limit wins. */
    const char *fields_end = head_end ? TT_MAX(head_end - 2, fields) : end;
    const char *resume = TT_MAX(fields, buf + TT_MIN(last_len, len));
    bool too_large = head_end ? (size_t)(fields_end - fields) > lim->max_field_bytes
                              : (size_t)(end - fields) > lim->max_field_bytes + 1;
    const char *first = too_large ? fields + lim->max_field_bytes + 1 : NULL;
    tt_h1_error_t why = TT_H1_E_FIELDS_TOO_LARGE;
    const char *lng = lim->max_field_line ? first_long_line(fields, resume, fields_end, lim->max_field_line) : NULL;
    if (lng != NULL && (first == NULL || lng < first)) {
        first = lng;
        why = TT_H1_E_FIELD_LINE_TOO_LONG;
    }
    const char *blf = first_bare_lf(fields, resume, first ? first : fields_end);
    if (blf != NULL) return bad(req, TT_H1_E_BARE_LF);
    if (first != NULL) return bad(req, why);
    if (head_end == NULL) return TT_INCOMPLETE;
    if (parse_fields(fields, fields_end, lim, req) != 0) return TT_BAD;
    return (int)(head_end - buf);
}

int tt_h1_find_field(const tt_h1_request_t *req, const char *lower_name, size_t n)
{
    for (size_t i = 0; i < req->nfields; i++)
        if (tt_str_ieq(req->fields[i].name, lower_name, n)) return (int)i;
    return -1;
}

/* ---- responses (RFC 9112 4, 6.3) ---- */

/* Transfer-Encoding of a response: chunked only when it is the final coding (RFC 9112 6.3 item 4). */
static bool te_last_is_chunked(tt_str_t m, void *ctx)
{
    int *last = ctx;
    *last = tt_str_ieq(m, TT_LIT("chunked")) ? 1 : 0;
    return true;
}

static int resp_bad(tt_h1_response_t *res, tt_h1_error_t e)
{
    res->error = e;
    return TT_BAD;
}

/* Longest status-line accepted, bytes (a reason phrase is free text, but not a megabyte of it). */
#define STATUS_LINE_MAX 2048

int tt_h1_parse_response(const char *buf, size_t len, size_t last_len, const tt_h1_limits_t *lim, tt_h1_response_t *res)
{
    memset(res, 0, offsetof(tt_h1_response_t, fields));
    res->content_length = -1;
    res->keep_alive = -1;
    const char *end = buf + len;
    /* The same byte-order rule as requests (so a split never changes the verdict): the status-line's end,
     * then lone LFs and the field-section size in the order they occur, then the fields. */
    /* Refuse what cannot become a status-line at its first byte, so a non-HTTP peer is caught at once. */
    if (memcmp(buf, "HTTP/", TT_MIN(len, (size_t)5)) != 0) return resp_bad(res, TT_H1_E_VERSION);
    const char *lf = memchr(buf, '\n', TT_MIN(len, (size_t)STATUS_LINE_MAX + 2));
    if (lf == NULL) {
        if (len > STATUS_LINE_MAX + 1) return resp_bad(res, TT_H1_E_REQUEST_LINE);
        return TT_INCOMPLETE;
    }
    if (lf == buf || lf[-1] != '\r') return resp_bad(res, TT_H1_E_BARE_LF);
    const char *fields = lf + 1;
    const char *from = TT_MAX(buf + (last_len > 3 ? last_len - 3 : 0), lf - 1);
    const char *head_end = find_head_end(buf, from, end);
    const char *scan_end = head_end ? TT_MAX(head_end - 2, fields) : end;
    const char *blf = first_bare_lf(fields, TT_MAX(fields, buf + TT_MIN(last_len, len)), scan_end);
    bool too_large = head_end ? (size_t)(scan_end - fields) > lim->max_field_bytes
                              : (size_t)(end - fields) > lim->max_field_bytes + 1;
    if (blf != NULL && (!too_large || (size_t)(blf - fields) < lim->max_field_bytes + 1))
        return resp_bad(res, TT_H1_E_BARE_LF);
    if (too_large) return resp_bad(res, TT_H1_E_FIELDS_TOO_LARGE);
    if (head_end == NULL) return TT_INCOMPLETE;
    const char *p = buf, *le = lf - 1;
    /* status-line = HTTP-version SP status-code SP [ reason-phrase ]; a missing SP before an empty
     * reason is tolerated, as every client does. */
    if (le - p < 12 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' ||
        p[7] > '9' || p[8] != ' ')
        return resp_bad(res, TT_H1_E_VERSION);
    if (p[5] != '1') return resp_bad(res, TT_H1_E_VERSION_UNSUPPORTED);
    res->major_version = 1;
    res->minor_version = p[7] == '0' ? 0 : 1;
    p += 9;
    if (p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
        return resp_bad(res, TT_H1_E_REQUEST_LINE);
    res->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 3;
    if (p < le) {
        if (*p != ' ') return resp_bad(res, TT_H1_E_REQUEST_LINE);
        p++;
        for (const char *q = p; q < le; q++)
            if (!is_value_char((unsigned char)*q))
                return resp_bad(res, *q == '\r' ? TT_H1_E_BARE_CR : TT_H1_E_REQUEST_LINE);
    }
    res->reason = tt_str(p, (size_t)(le - p));
    const char *fields_end = scan_end;
    tt_h1_error_t e = parse_field_lines(fields, fields_end, lim->max_fields, res->fields, &res->nfields);
    if (e != TT_H1_OK) return resp_bad(res, e);
    bool bad_cl = false;
    int te_chunked = -1;
    for (size_t i = 0; i < res->nfields; i++) {
        tt_str_t n = res->fields[i].name, v = res->fields[i].value;
        if (tt_str_ieq(n, TT_LIT("content-length"))) {
            if (!add_content_length(v, &res->content_length)) bad_cl = true;
        } else if (tt_str_ieq(n, TT_LIT("transfer-encoding"))) {
            foreach_member(v, te_last_is_chunked, &te_chunked);
            if (te_chunked < 0) te_chunked = 0;
        } else if (tt_str_ieq(n, TT_LIT("connection"))) {
            foreach_member(v, conn_token, &res->conn_tokens);
        } else if (tt_str_ieq(n, TT_LIT("keep-alive"))) {
            res->keep_alive = (int)i;
        }
    }
    /* A proxy must not guess between two framings (response splitting): refuse the ambiguous ones. */
    if (bad_cl) return resp_bad(res, TT_H1_E_CONTENT_LENGTH);
    if (te_chunked >= 0 && res->content_length >= 0) return resp_bad(res, TT_H1_E_CL_AND_TE);
    if (te_chunked == 1) {
        res->chunked = true;
    } else if (te_chunked == 0) {
        res->close_delimited = true;
    } else if (res->content_length < 0) {
        res->close_delimited = true;
    }
    return (int)(head_end - buf);
}

bool tt_h1_find_resp_te(const tt_h1_response_t *res)
{
    for (size_t i = 0; i < res->nfields; i++)
        if (tt_str_ieq(res->fields[i].name, TT_LIT("transfer-encoding"))) return true;
    return false;
}

bool tt_h1_response_has_content(int status, bool head_request)
{
    return !(head_request || status < 200 || status == 204 || status == 304);
}

int tt_h1_keepalive_hint(tt_str_t value, uint64_t *timeout_ms, int64_t *max)
{
    const char *p = value.p, *end = value.p + value.n;
    int found = 0;
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ',')) p++;
        const char *k = p;
        while (p < end && *p != '=' && *p != ',') p++;
        tt_str_t key = tt_str(k, (size_t)(p - k));
        while (key.n && is_ows(key.p[key.n - 1])) key.n--;
        if (p == end || *p != '=') continue;
        p++;
        while (p < end && is_ows(*p)) p++;
        uint64_t v = 0;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9' && v < (1ull << 40)) v = v * 10 + (uint64_t)(*p++ - '0');
        bool num = p > d;
        while (p < end && *p != ',') p++;
        if (!num) continue;
        if (tt_str_ieq(key, TT_LIT("timeout"))) {
            *timeout_ms = v * 1000;
            found |= 1;
        } else if (tt_str_ieq(key, TT_LIT("max"))) {
            *max = (int64_t)v;
            found |= 2;
        }
    }
    return found;
}

/* ---- chunked transfer coding (RFC 9112 7.1) ---- */

enum {
    CH_SIZE_START = 0, /* first hex digit */
    CH_SIZE,           /* more hex digits, then ';', BWS or CR */
    CH_EXT_WS,         /* BWS that must be followed by ';' */
    CH_EXT_NAME_START, /* after ';': BWS then a token */
    CH_EXT_NAME,
    CH_EXT_NAME_WS, /* BWS after a name: ';' or '=' follows */
    CH_EXT_VAL_START,
    CH_EXT_TVAL,
    CH_EXT_QVAL,
    CH_EXT_QESC,
    CH_EXT_AFTER_Q,
    CH_SIZE_LF, /* CR seen, LF expected */
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_LINE, /* start of a trailer line or the final empty line */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_TR_END_LF,
    CH_DONE,
};

static int64_t chunk_bad(tt_h1_chunked_t *d, tt_h1_error_t e)
{
    d->error = e;
    return TT_BAD;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* qdtext / quoted-pair bytes inside a quoted chunk-ext-val (RFC 9110 5.6.4). */
static inline bool is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c != 0x5c && c != 0x7f);
}

/*
 * One byte of a chunk-size line: chunk-size [ chunk-ext ] CRLF with
 * chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) (RFC 9112 7.1.1). Whitespace is only
 * accepted where BWS stands, i.e. before ';' or '=' and after them; never right before the CRLF.
 * Returns the next state, or -1 (with d->error set) on a bad byte.
 */
static int size_line_next(tt_h1_chunked_t *d, char c)
{
    const unsigned char u = (unsigned char)c;
    int h;
    switch (d->state) {
    case CH_SIZE_START:
    case CH_SIZE:
        if ((h = hexval(c)) >= 0) {
            if (++d->hexdigits > 15) break;
            d->remaining = d->remaining * 16 + (uint64_t)h;
            return CH_SIZE;
        }
        if (d->state == CH_SIZE_START) break;
        if (c == ';') return CH_EXT_NAME_START;
        if (is_ows(c)) return CH_EXT_WS;
        if (c == '\r') return CH_SIZE_LF;
        break;
    case CH_EXT_WS:
        if (is_ows(c)) return CH_EXT_WS;
        if (c == ';') return CH_EXT_NAME_START;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_NAME_START:
        if (is_ows(c)) return CH_EXT_NAME_START;
        if (is_tchar(u)) return CH_EXT_NAME;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_NAME:
        if (is_tchar(u)) return CH_EXT_NAME;
        /* fall through */
    case CH_EXT_NAME_WS:
        if (is_ows(c)) return CH_EXT_NAME_WS;
        if (c == ';') return CH_EXT_NAME_START;
        if (c == '=') return CH_EXT_VAL_START;
        if (c == '\r' && d->state == CH_EXT_NAME) return CH_SIZE_LF;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_VAL_START:
        if (is_ows(c)) return CH_EXT_VAL_START;
        if (c == '"') return CH_EXT_QVAL;
        if (is_tchar(u)) return CH_EXT_TVAL;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_TVAL:
        if (is_tchar(u)) return CH_EXT_TVAL;
        /* fall through */
    case CH_EXT_AFTER_Q:
        if (c == ';') return CH_EXT_NAME_START;
        if (is_ows(c)) return CH_EXT_WS;
        if (c == '\r') return CH_SIZE_LF;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_QVAL:
        if (c == '"') return CH_EXT_AFTER_Q;
        if (c == '\\') return CH_EXT_QESC;
        if (is_qdtext(u)) return CH_EXT_QVAL;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_EXT_QESC:
        if (is_value_char(u)) return CH_EXT_QVAL;
        d->error = TT_H1_E_CHUNK_EXT;
        return -1;
    case CH_SIZE_LF:
        if (c != '\n') {
            d->error = TT_H1_E_BARE_CR;
            return -1;
        }
        d->line_bytes = 0;
        d->hexdigits = 0;
        return d->remaining ? CH_DATA : CH_TR_LINE;
    }
    d->error = TT_H1_E_CHUNK_SIZE;
    return -1;
}

/* One byte of the trailer section. */
static int trailer_byte(tt_h1_chunked_t *d, char c)
{
    if (++d->trailer_bytes > TT_H1_MAX_TRAILER) return (int)chunk_bad(d, TT_H1_E_TRAILER);
    switch (d->state) {
    case CH_TR_LINE:
        if (c == '\r') {
            d->state = CH_TR_END_LF;
            return TT_OK;
        }
        if (!is_tchar((unsigned char)c)) return (int)chunk_bad(d, TT_H1_E_TRAILER);
        d->state = CH_TR_NAME;
        return TT_OK;
    case CH_TR_NAME:
        if (c == ':')
            d->state = CH_TR_VALUE;
        else if (!is_tchar((unsigned char)c))
            return (int)chunk_bad(d, TT_H1_E_TRAILER);
        return TT_OK;
    case CH_TR_VALUE:
        if (c == '\r')
            d->state = CH_TR_LF;
        else if (!is_value_char((unsigned char)c))
            return (int)chunk_bad(d, TT_H1_E_TRAILER);
        return TT_OK;
    case CH_TR_LF:
        if (c != '\n') return (int)chunk_bad(d, TT_H1_E_BARE_CR);
        d->state = CH_TR_LINE;
        return TT_OK;
    case CH_TR_END_LF:
        if (c != '\n') return (int)chunk_bad(d, TT_H1_E_BARE_CR);
        d->state = CH_DONE;
        d->done = true;
        return TT_OK;
    }
    return (int)chunk_bad(d, TT_H1_E_TRAILER);
}

bool tt_h1_chunked_in_trailer(const tt_h1_chunked_t *d)
{
    return d->state >= CH_TR_LINE && d->state < CH_DONE;
}

int64_t tt_h1_chunked_decode(tt_h1_chunked_t *d, const char *buf, size_t len, tt_str_t *data)
{
    size_t i = 0;
    *data = tt_str(buf, 0);
    while (i < len && d->state != CH_DONE) {
        char c = buf[i];
        switch (d->state) {
        case CH_DATA: {
            size_t n = (size_t)TT_MIN((uint64_t)(len - i), d->remaining);
            *data = tt_str(buf + i, n);
            d->remaining -= n;
            i += n;
            if (d->remaining == 0) d->state = CH_DATA_CR;
            return (int64_t)i; /* one data run per call */
        }
        case CH_DATA_CR:
            if (c != '\r') return chunk_bad(d, TT_H1_E_CHUNK_DATA);
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n') return chunk_bad(d, TT_H1_E_CHUNK_DATA);
            d->state = CH_SIZE_START;
            break;
        case CH_TR_LINE:
        case CH_TR_NAME:
        case CH_TR_VALUE:
        case CH_TR_LF:
        case CH_TR_END_LF:
            if (trailer_byte(d, c) != TT_OK) return TT_BAD;
            break;
        default: {
            if (++d->line_bytes > TT_H1_MAX_CHUNK_LINE) return chunk_bad(d, TT_H1_E_CHUNK_EXT);
            int next = size_line_next(d, c);
            if (next < 0) return TT_BAD;
            d->state = (uint8_t)next;
            if (next == CH_TR_LINE) return (int64_t)i + 1; /* stop where the trailer section begins */
            break;
        }
        }
        i++;
    }
    return (int64_t)i;
}
