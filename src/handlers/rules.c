/* rules.c -- a proxy route's path rewrite (PCRE2), field rules and redirect rewrite */
#include "handlers/rules.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>

#define MAX_TARGET 8192

void tt_rules_init(tt_route_rules_t *r)
{
    memset(r, 0, sizeof(*r));
    r->proxy_redirect = true;
}

static void free_list(tt_field_rule_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].name);
        free(l[i].lower);
        free(l[i].value);
    }
    free(l);
}

void tt_rules_dispose(tt_route_rules_t *r)
{
    free_list(r->req, r->nreq);
    free_list(r->resp, r->nresp);
    pcre2_code_free(r->rewrite);
    free(r->rewrite_replacement);
    memset(r, 0, sizeof(*r));
}

/* RFC 9110 5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int tt_rules_add_field(tt_route_rules_t *r, bool response, tt_rule_op_t op, const char *value, const char **why)
{
    static const char *const refused[] = {"connection", "keep-alive",        "proxy-connection", "te",
                                          "trailer",    "transfer-encoding", "upgrade",          "content-length"};
    const char *p = value;
    while (*p == ' ' || *p == '\t') p++;
    const char *ns = p;
    while (*p && *p != ' ' && *p != '\t') p++;
    size_t nlen = (size_t)(p - ns);
    while (*p == ' ' || *p == '\t') p++;
    const char *v = p;
    size_t vlen = strlen(v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    if (nlen == 0) {
        *why = op == TT_RULE_REMOVE ? "expected a field name" : "expected NAME VALUE";
        return -1;
    }
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)ns[i])) {
            *why = "the field name must be a token (letters, digits, !#$%&'*+-.^_`|~)";
            return -1;
        }
    char *lower = tt_strndup(ns, nlen);
    for (size_t i = 0; i < nlen; i++) lower[i] = tt_lower(lower[i]);
    for (size_t i = 0; i < TT_ARRAY_SIZE(refused); i++)
        if (strcmp(lower, refused[i]) == 0) {
            *why = "a hop-by-hop or framing field cannot be set or removed (RFC 9110 7.6.1)";
            free(lower);
            return -1;
        }
    if (response && (strcmp(lower, "date") == 0 || strcmp(lower, "server") == 0)) {
        *why = "Date and Server are the client connection's own: tether writes them";
        free(lower);
        return -1;
    }
    if (!response && strcmp(lower, "host") == 0 && op != TT_RULE_SET) {
        *why = "Host can only be replaced (request_set_header Host VALUE): HTTP/1.1 requires it";
        free(lower);
        return -1;
    }
    if (op == TT_RULE_REMOVE && vlen > 0) {
        *why = "expected only a field name";
        free(lower);
        return -1;
    }
    if ((op == TT_RULE_ADD || (!response && strcmp(lower, "host") == 0)) && vlen == 0) {
        *why = "expected NAME VALUE";
        free(lower);
        return -1;
    }
    for (size_t i = 0; i < vlen; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0' || ((unsigned char)v[i] < 0x20 && v[i] != '\t') ||
            v[i] == 0x7f) {
            *why = "the value holds a control character (RFC 9110 5.5)";
            free(lower);
            return -1;
        }
    tt_field_rule_t **list = response ? &r->resp : &r->req;
    size_t *n = response ? &r->nresp : &r->nreq;
    *list = tt_realloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = (tt_field_rule_t){.op = op,
                                        .name = tt_strndup(ns, nlen),
                                        .lower = lower,
                                        .name_len = nlen,
                                        .value = op == TT_RULE_REMOVE ? NULL : tt_strndup(v, vlen),
                                        .value_len = op == TT_RULE_REMOVE ? 0 : vlen};
    return 0;
}

int tt_rules_set_rewrite(tt_route_rules_t *r, const char *value, char *why, size_t whylen)
{
    const char *p = value;
    while (*p == ' ' || *p == '\t') p++;
    const char *rs = p;
    while (*p && *p != ' ' && *p != '\t') p++;
    size_t rlen = (size_t)(p - rs);
    while (*p == ' ' || *p == '\t') p++;
    const char *repl = p;
    size_t repl_len = strlen(repl);
    while (repl_len > 0 && (repl[repl_len - 1] == ' ' || repl[repl_len - 1] == '\t')) repl_len--;
    if (rlen == 0 || repl_len == 0 || memchr(repl, ' ', repl_len) || memchr(repl, '\t', repl_len)) {
        snprintf(why, whylen, "expected REGEX REPLACEMENT, e.g. ^/old/(.*)$ /new/$1");
        return -1;
    }
    if (repl[0] != '/' && repl[0] != '$') {
        snprintf(why, whylen, "the replacement must start with / (a path)");
        return -1;
    }
    for (size_t i = 0; i < repl_len; i++)
        if ((unsigned char)repl[i] < 0x21 || repl[i] == 0x7f) {
            snprintf(why, whylen, "the replacement holds a control character");
            return -1;
        }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)rs, rlen, 0, &code, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(why, whylen, "bad regex %.*s: %s at offset %zu", (int)TT_MIN(rlen, 200), rs, (const char *)msg,
                 (size_t)off);
        return -1;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* an interpreter match where there is no JIT */
    pcre2_code_free(r->rewrite);
    free(r->rewrite_replacement);
    r->rewrite = re;
    r->rewrite_replacement = tt_strndup(repl, repl_len);
    return 0;
}

void *tt_rules_match_data_new(const tt_route_rules_t *r)
{
    if (r == NULL || r->rewrite == NULL) return NULL;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->rewrite, NULL);
    if (md == NULL) tt_fatal("out of memory (pcre2 match data)");
    return md;
}

void tt_rules_match_data_free(void *md)
{
    pcre2_match_data_free(md);
}

int tt_rules_target(const tt_route_rules_t *r, void *md, size_t prefix_len, tt_str_t path, tt_str_t query,
                    tt_buf_t *out, tt_bufpool_t *bufs, const char **why)
{
    tt_str_t p = path;
    char subj[MAX_TARGET];
    if (r != NULL && r->strip_prefix && prefix_len <= p.n) {
        p = tt_str(p.p + prefix_len, p.n - prefix_len);
        /* the '/' a prefix "/api/" took is given back; "/apix" under "/api" becomes "/x" */
        if (p.n == 0) {
            p = TT_STR("/");
        } else if (p.p[0] != '/' && prefix_len > 0 && path.p[prefix_len - 1] == '/') {
            p = tt_str(path.p + prefix_len - 1, p.n + 1);
        } else if (p.p[0] != '/') {
            if (p.n + 1 > sizeof(subj)) {
                *why = "the forwarded path is longer than 8 KiB";
                return -1;
            }
            subj[0] = '/';
            memcpy(subj + 1, p.p, p.n);
            p = tt_str(subj, p.n + 1);
        }
    }
    char res[MAX_TARGET];
    bool own_query = false;
    if (r != NULL && r->rewrite != NULL) {
        PCRE2_SIZE n = sizeof(res);
        int rc = pcre2_substitute(r->rewrite, (PCRE2_SPTR)(p.n ? p.p : ""), p.n, 0, 0, md, NULL,
                                  (PCRE2_SPTR)r->rewrite_replacement, PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)res, &n);
        if (rc == PCRE2_ERROR_NOMEMORY) {
            *why = "the rewritten path is longer than 8 KiB";
            return -1;
        }
        if (rc < 0) {
            *why = "the rewrite replacement failed (an unknown group?)";
            return -1;
        }
        if (rc > 0) { /* no match (0): the path stays */
            p = tt_str(res, n);
            if (p.n == 0 || p.p[0] != '/') {
                *why = "the rewritten path does not start with /";
                return -1;
            }
            for (size_t i = 0; i < p.n; i++) {
                if ((unsigned char)p.p[i] <= 0x20 || p.p[i] == 0x7f) {
                    *why = "the rewritten path holds a space or control character";
                    return -1;
                }
                own_query |= p.p[i] == '?';
            }
        }
    }
    tt_buf_append(out, bufs, p.p, p.n);
    if (query.n) {
        tt_buf_append(out, bufs, own_query ? "&" : "?", 1);
        tt_buf_append(out, bufs, query.p, query.n);
    }
    return 0;
}

static bool name_is(const tt_field_rule_t *f, tt_str_t name)
{
    return tt_str_ieq(name, f->lower, f->name_len);
}

bool tt_rules_drops(const tt_field_rule_t *rules, size_t n, tt_str_t name)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].op != TT_RULE_ADD && name_is(&rules[i], name)) return true;
    return false;
}

/* Appends `v` with $host, $remote_addr and $scheme replaced. */
static void expand(const char *v, size_t n, const tt_rules_vars_t *vars, tt_buf_t *b, tt_bufpool_t *bufs)
{
    static const struct {
        const char *name;
        size_t len;
        size_t off;
    } names[] = {
        {"$host", 5, offsetof(tt_rules_vars_t, host)},
        {"$remote_addr", 12, offsetof(tt_rules_vars_t, remote_addr)},
        {"$scheme", 7, offsetof(tt_rules_vars_t, scheme)},
    };
    size_t i = 0, lit = 0;
    while (i < n) {
        bool hit = false;
        if (v[i] == '$' && vars != NULL)
            for (size_t k = 0; k < TT_ARRAY_SIZE(names) && !hit; k++) {
                size_t len = names[k].len;
                bool word_end = i + len >= n || !(is_tchar((unsigned char)v[i + len]) && v[i + len] != '-' &&
                                                  v[i + len] != '.' && v[i + len] != '$');
                if (i + len <= n && memcmp(v + i, names[k].name, len) == 0 && word_end) {
                    tt_buf_append(b, bufs, v + lit, i - lit);
                    const tt_str_t *s = (const tt_str_t *)((const char *)vars + names[k].off);
                    if (s->n) tt_buf_append(b, bufs, s->p, s->n);
                    i += len;
                    lit = i;
                    hit = true;
                }
            }
        if (!hit) i++;
    }
    tt_buf_append(b, bufs, v + lit, n - lit);
}

bool tt_rules_set_value(const tt_field_rule_t *rules, size_t n, const char *lower_name, const tt_rules_vars_t *vars,
                        tt_buf_t *tmp, tt_bufpool_t *bufs)
{
    for (size_t i = n; i-- > 0;)
        if (rules[i].op == TT_RULE_SET && strcmp(rules[i].lower, lower_name) == 0) {
            expand(rules[i].value, rules[i].value_len, vars, tmp, bufs);
            return true;
        }
    return false;
}

void tt_rules_put_fields(const tt_field_rule_t *rules, size_t n, const tt_rules_vars_t *vars, const char *skip,
                         tt_buf_t *b, tt_bufpool_t *bufs)
{
    for (size_t i = 0; i < n; i++) {
        const tt_field_rule_t *f = &rules[i];
        if (f->op == TT_RULE_REMOVE || (skip != NULL && strcmp(f->lower, skip) == 0)) continue;
        /* a SET written twice keeps the last one */
        bool later = false;
        for (size_t k = i + 1; k < n && f->op == TT_RULE_SET && !later; k++)
            later = rules[k].op == TT_RULE_SET && strcmp(rules[k].lower, f->lower) == 0;
        if (later) continue;
        tt_buf_append(b, bufs, f->name, f->name_len);
        tt_buf_append(b, bufs, ": ", 2);
        expand(f->value, f->value_len, vars, b, bufs);
        tt_buf_append(b, bufs, "\r\n", 2);
    }
}

static bool starts_with_nocase(tt_str_t s, tt_str_t pre)
{
    if (s.n < pre.n) return false;
    for (size_t i = 0; i < pre.n; i++)
        if (tt_lower(s.p[i]) != tt_lower(pre.p[i])) return false;
    return true;
}

bool tt_rules_redirect(tt_str_t value, bool refresh, const tt_redirect_map_t *m, tt_buf_t *out, tt_bufpool_t *bufs)
{
    tt_str_t head = TT_STR_NULL, url = value;
    if (refresh) { /* "5; url=..." (HTML's refresh syntax, which browsers follow) */
        const char *e = value.p + value.n;
        const char *u = NULL;
        for (const char *q = value.p; q + 4 <= e && u == NULL; q++)
            if (tt_lower(q[0]) == 'u' && tt_lower(q[1]) == 'r' && tt_lower(q[2]) == 'l' && q[3] == '=') u = q + 4;
        if (u == NULL) return false;
        head = tt_str(value.p, (size_t)(u - value.p));
        url = tt_str(u, (size_t)(e - u));
    }
    for (size_t i = 0; i < m->norigins; i++) {
        tt_str_t o = m->origins[i];
        if (!starts_with_nocase(url, o)) continue;
        tt_str_t rest = tt_str(url.p + o.n, url.n - o.n);
        if (rest.n && rest.p[0] != '/' && rest.p[0] != '?') continue; /* "http://a:80" is not "http://a:8080" */
        tt_str_t pre = m->prefix;
        if (pre.n && pre.p[pre.n - 1] == '/') pre.n--;
        if (head.n) tt_buf_append(out, bufs, head.p, head.n);
        if (m->client_origin.n) tt_buf_append(out, bufs, m->client_origin.p, m->client_origin.n);
        if (pre.n) tt_buf_append(out, bufs, pre.p, pre.n);
        if (rest.n == 0 || rest.p[0] == '?') tt_buf_append(out, bufs, "/", 1);
        if (rest.n) tt_buf_append(out, bufs, rest.p, rest.n);
        return true;
    }
    return false;
}
