/* test_route.c -- virtual hosts and the prefix router (src/http/route.c): exact names before the longest wildcard
 * before the default, port and case ignored; longest prefix inside a vhost, the unnamed routes in the default */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http/route.h"

static const tt_handler_ops_t ops = {.name = "test"};

static size_t vh(const tt_router_t *r, const char *host)
{
    return tt_router_vhost(r, tt_str(host, strlen(host)));
}

static void selects_vhosts(void **state)
{
    (void)state;
    tt_router_t r = {0};
    const char *a[] = {"A.example", "www.a.example"}, *b[] = {"*.b.example"}, *c[] = {"*.x.b.example", "x.b.example"},
               *d[] = {"[::1]", "127.0.0.1"};
    size_t va = tt_router_add_vhost(&r, "a", a, 2), vb = tt_router_add_vhost(&r, "b", b, 1),
           vc = tt_router_add_vhost(&r, "c", c, 2), vd = tt_router_add_vhost(&r, "d", d, 2);
    assert_int_equal(vh(&r, "a.example"), va);
    assert_int_equal(vh(&r, "WWW.A.EXAMPLE:443"), va);
    assert_int_equal(vh(&r, "a.example."), va);
    assert_int_equal(vh(&r, "q.b.example"), vb);
    assert_int_equal(vh(&r, "p.q.b.example"), vb);
    assert_int_equal(vh(&r, "p.x.b.example"), vc); /* longest wildcard */
    assert_int_equal(vh(&r, "x.b.example"), vc);   /* exact before any wildcard */
    assert_int_equal(vh(&r, "b.example"), 0);
    assert_int_equal(vh(&r, "evilb.example"), 0);
    assert_int_equal(vh(&r, "[::1]:8080"), vd);
    assert_int_equal(vh(&r, "127.0.0.1:80"), vd);
    assert_int_equal(vh(&r, ""), 0);
    tt_router_set_default(&r, vb);
    assert_int_equal(vh(&r, "nothing.test"), vb);
    assert_int_equal(vh(&r, ""), vb);
    tt_router_dispose(&r);
}

static int match(const tt_router_t *r, size_t v, const char *path)
{
    int i = tt_router_match_in(r, v, tt_str(path, strlen(path)));
    return i < 0 ? -1 : (int)(intptr_t)r->routes[i].conf;
}

static void routes_inside_a_vhost(void **state)
{
    (void)state;
    tt_router_t r = {0};
    const char *a[] = {"a.example"}, *b[] = {"b.example"};
    size_t va = tt_router_add_vhost(&r, "a", a, 1), vb = tt_router_add_vhost(&r, "b", b, 1);
    tt_router_add(&r, "/", &ops, (void *)1);
    tt_router_add(&r, "/api/", &ops, (void *)2);
    tt_router_add_in(&r, va, "/", &ops, (void *)3);
    tt_router_add_in(&r, vb, "/api/", &ops, (void *)4);
    assert_int_equal(match(&r, 0, "/api/x"), 2);
    assert_int_equal(match(&r, 0, "/x"), 1);
    assert_int_equal(match(&r, va, "/api/x"), 3); /* the unnamed routes are not a.example's */
    assert_int_equal(match(&r, vb, "/api/x"), 4);
    assert_int_equal(match(&r, vb, "/x"), -1);
    tt_router_set_default(&r, vb); /* the unnamed routes join the default; its own win at equal length */
    assert_int_equal(match(&r, vb, "/api/x"), 4);
    assert_int_equal(match(&r, vb, "/x"), 1);
    assert_int_equal(match(&r, va, "/x"), 3);
    tt_router_dispose(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(selects_vhosts),
        cmocka_unit_test(routes_inside_a_vhost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
