/* route.c -- virtual hosts by name, then longest-prefix routing */
#include "http/route.h"

#include <stdio.h>

static void ensure_vhost0(tt_router_t *r)
{
    if (r->nvhosts > 0) return;
    r->vhosts = tt_calloc(1, sizeof(*r->vhosts));
    r->nvhosts = 1;
}

void tt_router_add_in(tt_router_t *r, size_t vhost, const char *prefix, const tt_handler_ops_t *ops, const void *conf)
{
    ensure_vhost0(r);
    TT_BUG_ON(vhost >= r->nvhosts);
    r->routes = tt_realloc(r->routes, (r->n + 1) * sizeof(*r->routes));
    size_t len = strlen(prefix), i = r->n;
    /* keep descending prefix length; equal lengths keep insertion order */
    while (i > 0 && r->routes[i - 1].prefix_len < len) {
        r->routes[i] = r->routes[i - 1];
        i--;
    }
    r->routes[i] =
        (tt_route_t){.prefix = tt_strndup(prefix, len), .prefix_len = len, .vhost = vhost, .ops = ops, .conf = conf};
    r->n++;
}

void tt_router_add(tt_router_t *r, const char *prefix, const tt_handler_ops_t *ops, const void *conf)
{
    tt_router_add_in(r, 0, prefix, ops, conf);
}

size_t tt_router_add_vhost(tt_router_t *r, const char *name, const char *const *names, size_t nnames)
{
    ensure_vhost0(r);
    r->vhosts = tt_realloc(r->vhosts, (r->nvhosts + 1) * sizeof(*r->vhosts));
    tt_vhost_t *v = &r->vhosts[r->nvhosts];
    v->name = tt_strndup(name, strlen(name));
    v->names = tt_calloc(nnames ? nnames : 1, sizeof(char *));
    v->nnames = nnames;
    for (size_t i = 0; i < nnames; i++) {
        v->names[i] = tt_strndup(names[i], strlen(names[i]));
        for (char *p = v->names[i]; *p; p++) *p = tt_lower(*p);
    }
    return r->nvhosts++;
}

void tt_router_set_default(tt_router_t *r, size_t vhost)
{
    ensure_vhost0(r);
    TT_BUG_ON(vhost >= r->nvhosts);
    r->default_vhost = vhost;
}

/* The name part of a Host value: no port, no final dot. */
static tt_str_t host_name(tt_str_t h)
{
    if (h.n && h.p[0] == '[') {
        const char *e = memchr(h.p, ']', h.n);
        return e ? tt_str(h.p, (size_t)(e - h.p) + 1) : h;
    }
    const char *c = memchr(h.p, ':', h.n);
    if (c) h.n = (size_t)(c - h.p);
    if (h.n && h.p[h.n - 1] == '.') h.n--;
    return h;
}

static bool ieq(tt_str_t a, const char *lower, size_t n)
{
    return tt_str_ieq(a, lower, n);
}

size_t tt_router_vhost(const tt_router_t *r, tt_str_t host)
{
    tt_str_t h = host.n ? host_name(host) : host;
    if (h.n == 0) return r->default_vhost;
    size_t best = r->default_vhost, best_len = 0;
    for (size_t v = 1; v < r->nvhosts; v++)
        for (size_t i = 0; i < r->vhosts[v].nnames; i++) {
            const char *nm = r->vhosts[v].names[i];
            size_t n = strlen(nm);
            if (nm[0] != '*') {
                if (ieq(h, nm, n)) return v; /* exact names first */
                continue;
            }
            size_t sfx = n - 1; /* ".example" */
            if (h.n > sfx && sfx > best_len && ieq(tt_str(h.p + h.n - sfx, sfx), nm + 1, sfx)) {
                best = v;
                best_len = sfx;
            }
        }
    return best;
}

int tt_router_match_in(const tt_router_t *r, size_t vhost, tt_str_t path)
{
    int found = -1;
    for (size_t i = 0; i < r->n; i++) {
        const tt_route_t *rt = &r->routes[i];
        if (found >= 0 && rt->prefix_len < r->routes[found].prefix_len) break;
        if (rt->vhost != vhost && !(rt->vhost == 0 && vhost == r->default_vhost)) continue;
        if (rt->prefix_len <= path.n && memcmp(rt->prefix, path.p, rt->prefix_len) == 0) {
            if (found < 0) found = (int)i;
            if (rt->vhost == vhost) return (int)i; /* the vhost's own before the unnamed one's, at equal length */
        }
    }
    return found;
}

int tt_router_match(const tt_router_t *r, tt_str_t path)
{
    return tt_router_match_in(r, r->default_vhost, path);
}

/* True when vhost `vhost` has a route that redirects to its prefix, which is exactly `path` followed by '/'. */
static bool has_slash_route(const tt_router_t *r, size_t vhost, tt_str_t path)
{
    for (size_t i = 0; i < r->n; i++) {
        const tt_route_t *rt = &r->routes[i];
        if (rt->vhost != vhost && !(rt->vhost == 0 && vhost == r->default_vhost)) continue;
        if (rt->ops->slash_redirect && rt->prefix_len == path.n + 1 && rt->prefix[path.n] == '/' &&
            memcmp(rt->prefix, path.p, path.n) == 0)
            return true;
    }
    return false;
}

int tt_router_route(const tt_router_t *r, tt_req_t *req, const char *sni)
{
    size_t v = tt_router_vhost(r, req->authority);
    if (req->tls && sni != NULL && sni[0] != '\0' && r->nvhosts > 1) {
        size_t vs = tt_router_vhost(r, tt_str(sni, strlen(sni)));
        if (req->authority.n == 0)
            v = vs;
        else if (vs != v) {
            tt_req_respond_text(req, 421, TT_STR_NULL); /* RFC 9110 15.5.20: another connection may serve it */
            return -1;
        }
    }
    int i = tt_router_match_in(r, v, req->path);
    bool exact = i >= 0 && r->routes[i].prefix_len == req->path.n;
    if (!exact && req->path.n > 0 && has_slash_route(r, v, req->path)) {
        tt_resp_t resp;
        tt_resp_init(&resp, 301);
        size_t need = req->path.n + req->query.n + 32;
        char *f = tt_malloc(need);
        int n = snprintf(f, need, "Location: %.*s/%s%.*s\r\n", (int)req->path.n, req->path.p, req->query.n ? "?" : "",
                         (int)req->query.n, req->query.p ? req->query.p : "");
        resp.fields = tt_str(f, (size_t)n);
        static const char body[] = "301 Moved Permanently\n";
        resp.body = body;
        resp.body_len = sizeof(body) - 1;
        resp.content_length = (int64_t)resp.body_len;
        tt_req_respond(req, &resp);
        free(f);
        return -1;
    }
    if (i < 0) tt_req_respond_text(req, 404, TT_STR_NULL);
    return i;
}

void tt_router_dispose(tt_router_t *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->routes[i].prefix);
    free(r->routes);
    for (size_t v = 0; v < r->nvhosts; v++) {
        for (size_t i = 0; i < r->vhosts[v].nnames; i++) free(r->vhosts[v].names[i]);
        free(r->vhosts[v].names);
        free(r->vhosts[v].name);
    }
    free(r->vhosts);
    memset(r, 0, sizeof(*r));
}
