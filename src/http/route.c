/* route.c -- longest-prefix routing */
#include "http/route.h"

void tt_router_add(tt_router_t *r, const char *prefix, const tt_handler_ops_t *ops, const void *conf)
{
    r->routes = tt_realloc(r->routes, (r->n + 1) * sizeof(*r->routes));
    size_t len = strlen(prefix), i = r->n;
    /* keep descending prefix length; equal lengths keep insertion order */
    while (i > 0 && r->routes[i - 1].prefix_len < len) {
        r->routes[i] = r->routes[i - 1];
        i--;
    }
    r->routes[i] = (tt_route_t){.prefix = tt_strndup(prefix, len), .prefix_len = len, .ops = ops, .conf = conf};
    r->n++;
}

int tt_router_match(const tt_router_t *r, tt_str_t path)
{
    for (size_t i = 0; i < r->n; i++) {
        const tt_route_t *rt = &r->routes[i];
        if (rt->prefix_len <= path.n && memcmp(rt->prefix, path.p, rt->prefix_len) == 0) return (int)i;
    }
    return -1;
}

void tt_router_dispose(tt_router_t *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->routes[i].prefix);
    free(r->routes);
    r->routes = NULL;
    r->n = 0;
}
