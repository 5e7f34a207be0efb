/* forward.c -- the request head a proxy sends upstream, the response fields and trailers it sends back */
#include "handlers/forward.h"

#include <stdio.h>

static void put(tt_buf_t *b, tt_bufpool_t *bufs, tt_str_t s)
{
    tt_buf_append(b, bufs, s.p, s.n);
}

static void put_field(tt_buf_t *b, tt_bufpool_t *bufs, tt_str_t name, tt_str_t value)
{
    tt_buf_append_field(b, bufs, name.p, name.n, value.p, value.n);
}

static tt_str_t cstr(const char *s)
{
    return tt_str(s, strlen(s));
}

/* The bytes of `b`; an empty view for an empty buffer, which has no memory to point into. */
static tt_str_t view_of(const tt_buf_t *b)
{
    return b->len ? tt_str(tt_buf_data(b), b->len) : TT_STR_NULL;
}

static bool in_list(tt_str_t n, const tt_str_t *names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (tt_str_ieq(n, names[i].p, names[i].n)) return true; /* lengths first: most names differ there */
    return false;
}

/* Connection-specific fields (RFC 9110 7.6.1), and the framing a proxy redoes itself. */
static const tt_str_t hop_by_hop[] = {
    TT_STR("connection"), TT_STR("keep-alive"), TT_STR("proxy-connection"),  TT_STR("te"),
    TT_STR("trailer"),    TT_STR("upgrade"),    TT_STR("transfer-encoding"), TT_STR("content-length")};

/* The options of a head's Connection fields (RFC 9110 7.6.1), tokenised once per head so that asking
 * named_by_connection() for each forwarded field compares a few lengths (an origin's "Connection: keep-alive" on
 * every response made each field re-read the Connection value). */
typedef struct conn_opts {
    const tt_h1_field_t *fields; /* the head's, for a head with more options than `tok` holds */
    size_t nfields;
    size_t n;  /* options in tok */
    bool many; /* more than TT_ARRAY_SIZE(tok): named_by_connection() reads the fields again */
    tt_str_t tok[8];
} conn_opts_t;

static bool same_name(tt_str_t a, tt_str_t b)
{
    if (a.n != b.n || a.n == 0) return false;
    for (size_t k = 0; k < a.n; k++)
        if (tt_lower(a.p[k]) != tt_lower(b.p[k])) return false;
    return true;
}

/* Calls `each(tok, arg)` for every option of the Connection fields of `fields` until it returns true; returns
 * whether one did. */
static bool each_conn_option(const tt_h1_field_t *fields, size_t nfields, bool (*each)(tt_str_t, void *), void *arg)
{
    for (size_t i = 0; i < nfields; i++) {
        if (!tt_str_ieq(fields[i].name, TT_LIT("connection"))) continue;
        const char *p = fields[i].value.p, *end = p + fields[i].value.n;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t') p++;
            if (p > s && each(tt_str(s, (size_t)(p - s)), arg)) return true;
        }
    }
    return false;
}

static bool keep_option(tt_str_t tok, void *arg)
{
    conn_opts_t *o = arg;
    if (o->n == TT_ARRAY_SIZE(o->tok)) {
        o->many = true;
        return true;
    }
    o->tok[o->n++] = tok;
    return false;
}

static void conn_opts_init(conn_opts_t *o, const tt_h1_field_t *fields, size_t nfields)
{
    o->fields = fields;
    o->nfields = nfields;
    o->n = 0;
    o->many = false;
    each_conn_option(fields, nfields, keep_option, o);
}

static bool is_name(tt_str_t tok, void *arg)
{
    return same_name(tok, *(const tt_str_t *)arg);
}

/* True when `n` is one of the field names listed in the head's Connection field(s). */
static bool named_by_connection(const conn_opts_t *o, tt_str_t n)
{
    if (o->many) return each_conn_option(o->fields, o->nfields, is_name, &n);
    for (size_t i = 0; i < o->n; i++)
        if (same_name(o->tok[i], n)) return true;
    return false;
}

/* Every non-empty value of the request's `lower` fields, in order, as one list "v1, v2" (RFC 9110 5.3); empty when
 * there is none. `sep` joins them (", ", or "; " for cookies). */
static void put_values(tt_buf_t *b, tt_bufpool_t *bufs, const tt_h1_request_t *h, const char *lower, tt_str_t sep,
                       bool *any)
{
    for (size_t i = 0; i < h->nfields; i++) {
        const tt_h1_field_t *f = &h->fields[i];
        if (f->value.n == 0 || !tt_str_ieq(f->name, lower, strlen(lower))) continue;
        if (*any) put(b, bufs, sep);
        put(b, bufs, f->value);
        *any = true;
    }
}

/* "Name: <the request's values>, <own>\r\n"; `own` may be empty (then the field is left out if nothing came). */
static void put_list(tt_buf_t *b, tt_bufpool_t *bufs, const tt_h1_request_t *h, const conn_opts_t *conn,
                     const char *name, bool keep_theirs, tt_str_t own)
{
    char lower[32];
    size_t n = strlen(name), ln = TT_MIN(n, sizeof(lower) - 1);
    bool theirs = false;
    if (keep_theirs && !named_by_connection(conn, cstr(name))) {
        for (size_t i = 0; i < ln; i++) lower[i] = tt_lower(name[i]);
        lower[ln] = '\0';
        for (size_t i = 0; i < h->nfields && !theirs; i++)
            theirs = h->fields[i].value.n && tt_str_ieq(h->fields[i].name, lower, ln);
    }
    if (!theirs) { /* the usual case: our value alone, written without the list buffer */
        if (own.n) put_field(b, bufs, tt_str(name, n), own);
        return;
    }
    tt_buf_t v = {0};
    bool any = false;
    put_values(&v, bufs, h, lower, TT_STR(", "), &any);
    if (own.n) {
        if (any) tt_buf_append(&v, bufs, TT_LIT(", "));
        put(&v, bufs, own);
        any = true;
    }
    if (any) put_field(b, bufs, cstr(name), view_of(&v));
    tt_buf_release(&v, bufs);
}

/* A quoted-string (RFC 9110 5.6.4): '"' and '\' escaped. Validated hosts hold neither; escaped all the same. */
static void put_quoted(tt_buf_t *b, tt_bufpool_t *bufs, tt_str_t s)
{
    tt_buf_append(b, bufs, TT_LIT("\""));
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] == '"' || s.p[i] == '\\') tt_buf_append(b, bufs, TT_LIT("\\"));
        tt_buf_append(b, bufs, s.p + i, 1);
    }
    tt_buf_append(b, bufs, TT_LIT("\""));
}

/*
 * The client address to name in X-Real-IP for a trusted peer: X-Forwarded-For read from the right, every address
 * in uc->trusted skipped; the first one that is not is the client (nginx's real_ip_recursive). A member that is not
 * an address ends the walk at the last one that was. Without X-Forwarded-For, the peer's X-Real-IP when it is an
 * address, else the peer.
 */
static tt_str_t real_ip(const tt_h1_request_t *h, const tt_upstream_conf_t *uc, tt_str_t peer)
{
    tt_str_t last = peer;
    bool any = false;
    for (size_t i = h->nfields; i-- > 0;) {
        if (!tt_str_ieq(h->fields[i].name, TT_LIT("x-forwarded-for"))) continue;
        any = true;
        const char *s = h->fields[i].value.p, *e = s + h->fields[i].value.n;
        while (e > s) {
            const char *m = e;
            while (m > s && m[-1] != ',') m--;
            tt_str_t mem = tt_str(m, (size_t)(e - m));
            while (mem.n && (mem.p[0] == ' ' || mem.p[0] == '\t')) mem = tt_str(mem.p + 1, mem.n - 1);
            while (mem.n && (mem.p[mem.n - 1] == ' ' || mem.p[mem.n - 1] == '\t')) mem.n--;
            e = m > s ? m - 1 : s;
            if (mem.n == 0) continue;
            tt_addr_t a;
            if (!tt_addr_parse_ip(mem.p, mem.n, &a)) return last;
            if (!tt_cidr_set_match(uc->trusted, uc->ntrusted, &a)) return mem;
            last = mem;
        }
    }
    if (!any) {
        int i = tt_h1_find_field(h, TT_LIT("x-real-ip"));
        tt_addr_t a;
        if (i >= 0 && tt_addr_parse_ip(h->fields[i].value.p, h->fields[i].value.n, &a)) return h->fields[i].value;
    }
    return last;
}

/* Request fields tether writes itself, from what it knows and what a trusted peer told it. */
static const tt_str_t generated[] = {TT_STR("host"),
                                     TT_STR("via"),
                                     TT_STR("x-forwarded-for"),
                                     TT_STR("x-forwarded-proto"),
                                     TT_STR("x-forwarded-host"),
                                     TT_STR("x-real-ip"),
                                     TT_STR("forwarded")};

/* True when a request rule of `fr` drops the field named `name`. */
static bool rule_drops(const tt_forward_route_t *fr, tt_str_t name)
{
    return fr && fr->rules && tt_rules_drops(fr->rules->req, fr->rules->nreq, name);
}

void tt_forward_request_head(const tt_req_t *rq, const tt_upstream_conf_t *uc, bool chunked_up, tt_buf_t *b,
                             tt_bufpool_t *bufs)
{
    tt_forward_request_head_routed(rq, uc, NULL, chunked_up, b, bufs);
}

void tt_forward_request_head_routed(const tt_req_t *rq, const tt_upstream_conf_t *uc, const tt_forward_route_t *fr,
                                    bool chunked_up, tt_buf_t *b, tt_bufpool_t *bufs)
{
    const tt_h1_request_t *h = rq->head;
    (void)tt_req_id(rq); /* made at its first use (reqid.c): here, while the head is valid; read below */
    const bool h2 = rq->major_version == 2;
    const bool trusted = uc->ntrusted && tt_cidr_set_match(uc->trusted, uc->ntrusted, rq->peer);
    conn_opts_t conn_opts, *conn = &conn_opts;
    conn_opts_init(conn, h->fields, h->nfields);
    char ipbuf[TT_ADDR_STRLEN];
    tt_str_t ip = tt_str(ipbuf, tt_addr_format_host(rq->peer, ipbuf, sizeof(ipbuf)));

    /* RFC 8441 5: an HTTP/2 extended CONNECT is an HTTP/1.1 GET with Upgrade to the origin */
    put(b, bufs, h2 && fr && fr->upgrade.n && h->method_id == TT_METHOD_CONNECT ? TT_STR("GET") : h->method);
    tt_buf_append(b, bufs, TT_LIT(" "));
    if (fr && fr->target.n) {
        put(b, bufs, fr->target);
    } else {
        put(b, bufs, rq->path);
        if (rq->query.n) {
            tt_buf_append(b, bufs, TT_LIT("?"));
            put(b, bufs, rq->query);
        }
    }
    tt_buf_append(b, bufs, TT_LIT(" HTTP/1.1\r\n"));
    /* RFC 9112 3.2: HTTP/1.1 requires Host; what the client asked for, or (HTTP/1.0 without one) the server's
     * name, as nginx's $proxy_host */
    tt_str_t host = uc->host ? cstr(uc->host) : rq->authority.n ? rq->authority : cstr(uc->servers[0].name);
    tt_buf_t set_host = {0};
    if (fr && fr->rules && tt_rules_set_value(fr->rules->req, fr->rules->nreq, "host", &fr->vars, &set_host, bufs))
        host = view_of(&set_host);
    put_field(b, bufs, TT_STR("Host"), host);
    tt_buf_release(&set_host, bufs);
    for (size_t i = 0; i < h->nfields; i++) {
        const tt_h1_field_t *f = &h->fields[i];
        if (in_list(f->name, generated, TT_ARRAY_SIZE(generated)) || (h2 && tt_str_ieq(f->name, TT_LIT("cookie"))))
            continue;
        if (rq->request_id_len && tt_str_ieq(f->name, TT_LIT("x-request-id"))) continue; /* the one below */
        if (in_list(f->name, hop_by_hop, TT_ARRAY_SIZE(hop_by_hop)) || tt_str_ieq(f->name, TT_LIT("expect")) ||
            named_by_connection(conn, f->name) || rule_drops(fr, f->name))
            continue;
        put_field(b, bufs, f->name, f->value);
    }
    if (h2 &&
        !rule_drops(fr, TT_STR("cookie"))) { /* RFC 9113 8.2.3: the cookie fields of HTTP/2 are one field in HTTP/1.1 */
        tt_buf_t v = {0};
        bool any = false;
        put_values(&v, bufs, h, "cookie", TT_STR("; "), &any);
        if (any) put_field(b, bufs, TT_STR("Cookie"), view_of(&v));
        tt_buf_release(&v, bufs);
    }
    if (rq->request_id_len && !rule_drops(fr, TT_STR("x-request-id"))) /* the client's when kept, else tether's */
        put_field(b, bufs, TT_STR("X-Request-Id"), tt_str(rq->request_id, rq->request_id_len));
    if (!rule_drops(fr, TT_STR("via")))
        put_list(b, bufs, h, conn, "Via", true,
                 h2                 ? TT_STR("2 tether")
                 : h->minor_version ? TT_STR("1.1 tether")
                                    : TT_STR("1.0 tether"));
    if (!rule_drops(fr, TT_STR("x-forwarded-for"))) put_list(b, bufs, h, conn, "X-Forwarded-For", trusted, ip);
    if (!rule_drops(fr, TT_STR("x-real-ip")))
        put_field(b, bufs, TT_STR("X-Real-IP"), trusted ? real_ip(h, uc, ip) : ip);
    tt_str_t proto = rq->tls ? TT_STR("https") : TT_STR("http");
    bool theirs = trusted && tt_h1_find_field(h, TT_LIT("x-forwarded-proto")) >= 0;
    if (!rule_drops(fr, TT_STR("x-forwarded-proto")))
        put_list(b, bufs, h, conn, "X-Forwarded-Proto", theirs, theirs ? TT_STR_NULL : proto);
    theirs = trusted && tt_h1_find_field(h, TT_LIT("x-forwarded-host")) >= 0;
    if (!rule_drops(fr, TT_STR("x-forwarded-host")))
        put_list(b, bufs, h, conn, "X-Forwarded-Host", theirs, theirs ? TT_STR_NULL : rq->authority);
    tt_buf_t own = {0};
    if (uc->forwarded) { /* RFC 7239 4: for=, proto=, host= */
        bool v6 = rq->peer->ss.sa.sa_family == AF_INET6;
        tt_buf_append(&own, bufs, TT_LIT("for="));
        if (v6) tt_buf_append(&own, bufs, TT_LIT("\"["));
        put(&own, bufs, ip);
        if (v6) tt_buf_append(&own, bufs, TT_LIT("]\""));
        tt_buf_append(&own, bufs, TT_LIT(";proto="));
        put(&own, bufs, proto);
        if (rq->authority.n) {
            tt_buf_append(&own, bufs, TT_LIT(";host="));
            put_quoted(&own, bufs, rq->authority);
        }
    }
    if (!rule_drops(fr, TT_STR("forwarded"))) put_list(b, bufs, h, conn, "Forwarded", trusted, view_of(&own));
    tt_buf_release(&own, bufs);
    if (fr &&
        fr->upgrade.n) { /* RFC 9110 7.8: the upgrade asked for goes on, with the option that makes it hop-by-hop */
        put_field(b, bufs, TT_STR("Upgrade"), fr->upgrade);
        tt_buf_append(b, bufs, TT_LIT("Connection: Upgrade\r\n"));
        if (fr->ws_key.n && tt_h1_find_field(h, TT_LIT("sec-websocket-key")) < 0)
            put_field(b, bufs, TT_STR("Sec-WebSocket-Key"), fr->ws_key);
    }
    if (fr && fr->rules) tt_rules_put_fields(fr->rules->req, fr->rules->nreq, &fr->vars, "host", b, bufs);
    char line[64];
    if (chunked_up) {
        tt_buf_append(b, bufs, TT_LIT("Transfer-Encoding: chunked\r\n"));
    } else if (rq->content_length >= 0 && (rq->has_body || h->method_id == TT_METHOD_POST ||
                                           h->method_id == TT_METHOD_PUT || h->method_id == TT_METHOD_PATCH)) {
        int n = snprintf(line, sizeof(line), "Content-Length: %lld\r\n", (long long)TT_MAX(rq->content_length, 0));
        tt_buf_append(b, bufs, line, (size_t)n);
    }
    tt_buf_append(b, bufs, TT_LIT("\r\n"));
}

void tt_forward_upgrade_response_fields(const tt_h1_response_t *res, tt_buf_t *b, tt_bufpool_t *bufs)
{
    tt_forward_response_fields(res, b, bufs);
    for (size_t i = 0; i < res->nfields; i++)
        if (tt_str_ieq(res->fields[i].name, TT_LIT("upgrade")))
            put_field(b, bufs, TT_STR("Upgrade"), res->fields[i].value);
    tt_buf_append(b, bufs, TT_LIT("Connection: Upgrade\r\n"));
}

void tt_forward_response_fields(const tt_h1_response_t *res, tt_buf_t *b, tt_bufpool_t *bufs)
{
    tt_forward_response_fields_routed(res, NULL, b, bufs);
}

/* True when a response rule of `fr` drops the field named `name`. */
static bool resp_rule_drops(const tt_forward_route_t *fr, tt_str_t name)
{
    return fr && fr->rules && tt_rules_drops(fr->rules->resp, fr->rules->nresp, name);
}

/* Puts a Location or Refresh field, rewritten when it points at the upstream (nginx proxy_redirect default). */
static void put_redirect(tt_buf_t *b, tt_bufpool_t *bufs, const tt_h1_field_t *f, bool refresh,
                         const tt_redirect_map_t *m)
{
    tt_buf_t v = {0};
    if (tt_rules_redirect(f->value, refresh, m, &v, bufs))
        put_field(b, bufs, f->name, view_of(&v));
    else
        put_field(b, bufs, f->name, f->value);
    tt_buf_release(&v, bufs);
}

void tt_forward_response_fields_routed(const tt_h1_response_t *res, const tt_forward_route_t *fr, tt_buf_t *b,
                                       tt_bufpool_t *bufs)
{
    conn_opts_t conn;
    conn_opts_init(&conn, res->fields, res->nfields);
    const bool redirect = fr && fr->redirect && tt_forward_status_redirects(res->status);
    for (size_t i = 0; i < res->nfields; i++) {
        const tt_h1_field_t *f = &res->fields[i];
        if (in_list(f->name, hop_by_hop, TT_ARRAY_SIZE(hop_by_hop)) || tt_str_ieq(f->name, TT_LIT("date")) ||
            tt_str_ieq(f->name, TT_LIT("server")) || named_by_connection(&conn, f->name) ||
            resp_rule_drops(fr, f->name))
            continue;
        bool loc = redirect && tt_str_ieq(f->name, TT_LIT("location"));
        bool refresh = redirect && tt_str_ieq(f->name, TT_LIT("refresh"));
        if (loc || refresh)
            put_redirect(b, bufs, f, refresh, fr->redirect);
        else
            put_field(b, bufs, f->name, f->value);
    }
    if (!resp_rule_drops(fr, TT_STR("via"))) {
        if (res->major_version == 2)
            tt_buf_append(b, bufs, TT_LIT("Via: 2 tether\r\n"));
        else if (res->minor_version)
            tt_buf_append(b, bufs, TT_LIT("Via: 1.1 tether\r\n"));
        else
            tt_buf_append(b, bufs, TT_LIT("Via: 1.0 tether\r\n"));
    }
    if (fr && fr->rules) tt_rules_put_fields(fr->rules->resp, fr->rules->nresp, &fr->vars, NULL, b, bufs);
}

bool tt_forward_trailer_allowed(tt_str_t name)
{
    static const tt_str_t denied[] = {
        /* framing and connection */
        TT_STR("content-length"), TT_STR("transfer-encoding"), TT_STR("trailer"), TT_STR("te"), TT_STR("connection"),
        TT_STR("keep-alive"), TT_STR("proxy-connection"), TT_STR("upgrade"),
        /* routing and forwarding */
        TT_STR("host"), TT_STR("via"), TT_STR("forwarded"), TT_STR("x-forwarded-for"), TT_STR("x-forwarded-host"),
        TT_STR("x-forwarded-proto"), TT_STR("x-real-ip"), TT_STR("max-forwards"),
        /* request modifiers: controls and conditionals */
        TT_STR("cache-control"), TT_STR("expect"), TT_STR("pragma"), TT_STR("range"), TT_STR("if-match"),
        TT_STR("if-none-match"), TT_STR("if-modified-since"), TT_STR("if-unmodified-since"), TT_STR("if-range"),
        /* authentication */
        TT_STR("authorization"), TT_STR("proxy-authorization"), TT_STR("www-authenticate"),
        TT_STR("proxy-authenticate"), TT_STR("authentication-info"), TT_STR("proxy-authentication-info"),
        TT_STR("cookie"), TT_STR("set-cookie"),
        /* response control data */
        TT_STR("age"), TT_STR("expires"), TT_STR("date"), TT_STR("location"), TT_STR("retry-after"), TT_STR("vary"),
        TT_STR("warning"),
        /* how to process the content */
        TT_STR("content-encoding"), TT_STR("content-type"), TT_STR("content-range")};
    return name.n > 0 && name.p[0] != ':' && !in_list(name, denied, TT_ARRAY_SIZE(denied));
}

void tt_forward_trailers(tt_str_t in, tt_buf_t *out, tt_bufpool_t *bufs)
{
    const char *p = in.p, *end = in.p + in.n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL) {
            tt_str_t name = tt_str(p, (size_t)(colon - p));
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            if (tt_forward_trailer_allowed(name)) put_field(out, bufs, name, tt_str(v, (size_t)(ve - v)));
        }
        p = eol ? eol + 1 : end;
    }
}
