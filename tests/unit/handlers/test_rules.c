/* test_rules.c -- a proxy route's rules (src/handlers/rules.c): the forwarded target (strip_prefix, PCRE2 rewrite
 * with captures, query kept), field rule validation and variables, the Location/Refresh rewrite */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "handlers/rules.h"

static tt_bufpool_t bufs;

/* The target for `path` and `query` under `r` with a prefix of `plen` bytes, as a C string (static), or NULL with
 * the reason in *why. */
static const char *target(const tt_route_rules_t *r, size_t plen, const char *path, const char *query, const char **why)
{
    static char out[9000];
    void *md = tt_rules_match_data_new(r);
    tt_buf_t b = {0};
    int rc = tt_rules_target(r, md, plen, tt_str(path, strlen(path)), tt_str(query, strlen(query)), &b, &bufs, why);
    tt_rules_match_data_free(md);
    if (rc != 0) {
        tt_buf_release(&b, &bufs);
        return NULL;
    }
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.len ? tt_buf_data(&b) : "");
    tt_buf_release(&b, &bufs);
    return out;
}

static void strips_the_prefix(void **state)
{
    (void)state;
    tt_route_rules_t r;
    tt_rules_init(&r);
    const char *why = NULL;
    r.strip_prefix = true;
    assert_string_equal(target(&r, 5, "/api/x", "a=1", &why), "/x?a=1");
    assert_string_equal(target(&r, 5, "/api/", "", &why), "/");
    assert_string_equal(target(&r, 4, "/api", "", &why), "/");
    assert_string_equal(target(&r, 4, "/api/v1", "", &why), "/v1");
    assert_string_equal(target(&r, 4, "/apix", "", &why), "/x");
    r.strip_prefix = false;
    assert_string_equal(target(&r, 5, "/api/x", "", &why), "/api/x");
    tt_rules_dispose(&r);
}

static void rewrites_with_captures(void **state)
{
    (void)state;
    tt_route_rules_t r;
    tt_rules_init(&r);
    char why[320];
    const char *w = NULL;
    assert_int_equal(tt_rules_set_rewrite(&r, "^/u/(\\d+)/(?<rest>.*)$   /users/${rest}/$1  ", why, sizeof(why)), 0);
    assert_string_equal(target(&r, 1, "/u/42/profile", "", &w), "/users/profile/42");
    assert_string_equal(target(&r, 1, "/u/42/profile", "x=1", &w), "/users/profile/42?x=1");
    assert_string_equal(target(&r, 1, "/v/42", "x=1", &w), "/v/42?x=1"); /* no match: unchanged */
    assert_int_equal(tt_rules_set_rewrite(&r, "^/q/(.*)$ /search?q=$1", why, sizeof(why)), 0);
    assert_string_equal(target(&r, 1, "/q/cats", "page=2", &w), "/search?q=cats&page=2");
    assert_int_equal(tt_rules_set_rewrite(&r, "^/(.*)$ $1", why, sizeof(why)), 0);
    assert_null(target(&r, 1, "/x", "", &w));
    assert_string_equal(w, "the rewritten path does not start with /");
    assert_int_equal(tt_rules_set_rewrite(&r, "^/(.*)$ /$9", why, sizeof(why)), 0);
    assert_null(target(&r, 1, "/x", "", &w)); /* an unknown group */
    tt_rules_dispose(&r);
}

static void refuses_bad_rewrites(void **state)
{
    (void)state;
    tt_route_rules_t r;
    tt_rules_init(&r);
    char why[320];
    assert_int_equal(tt_rules_set_rewrite(&r, "^/(a /b", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "missing closing parenthesis"));
    assert_int_equal(tt_rules_set_rewrite(&r, "^/a$", why, sizeof(why)), -1);
    assert_int_equal(tt_rules_set_rewrite(&r, "^/a$ b", why, sizeof(why)), -1);
    assert_int_equal(tt_rules_set_rewrite(&r, "^/a$ /b /c", why, sizeof(why)), -1);
    assert_null(r.rewrite);
    tt_rules_dispose(&r);
}

static const char *fields(const tt_route_rules_t *r, const tt_rules_vars_t *v)
{
    static char out[1024];
    tt_buf_t b = {0};
    tt_rules_put_fields(r->req, r->nreq, v, NULL, &b, &bufs);
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.len ? tt_buf_data(&b) : "");
    tt_buf_release(&b, &bufs);
    return out;
}

static void field_rules_and_variables(void **state)
{
    (void)state;
    tt_route_rules_t r;
    tt_rules_init(&r);
    const char *why;
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_SET, "X-A  first", &why), 0);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_SET, "x-a $host:$scheme/$remote_addr $hostname $$ $", &why),
                     0);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_ADD, "X-B b", &why), 0);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_REMOVE, "X-C", &why), 0);
    tt_rules_vars_t v = {.host = TT_STR("h.example"), .remote_addr = TT_STR("192.0.2.1"), .scheme = TT_STR("https")};
    /* the last SET of a name wins; variables are whole words */
    assert_string_equal(fields(&r, &v), "x-a: h.example:https/192.0.2.1 $hostname $$ $\r\nX-B: b\r\n");
    assert_true(tt_rules_drops(r.req, r.nreq, TT_STR("X-C")));
    assert_true(tt_rules_drops(r.req, r.nreq, TT_STR("x-A")));
    assert_false(tt_rules_drops(r.req, r.nreq, TT_STR("X-B")));
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_SET, "Upgrade websocket", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, true, TT_RULE_REMOVE, "TE", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_SET, "X(y) 1", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_SET, "X-D a\rb", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_REMOVE, "X-D extra", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, false, TT_RULE_ADD, "Host x", &why), -1);
    assert_int_equal(tt_rules_add_field(&r, true, TT_RULE_SET, "Date x", &why), -1);
    assert_int_equal(r.nreq, 4);
    tt_rules_dispose(&r);
}

static const char *redirected(const char *value, bool refresh, const tt_redirect_map_t *m)
{
    static char out[1024];
    tt_buf_t b = {0};
    if (!tt_rules_redirect(tt_str(value, strlen(value)), refresh, m, &b, &bufs)) return NULL;
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.len ? tt_buf_data(&b) : "");
    tt_buf_release(&b, &bufs);
    return out;
}

static void rewrites_redirects(void **state)
{
    (void)state;
    tt_str_t origins[] = {TT_STR("http://10.0.0.5:8080"), TT_STR("http://backend")};
    tt_redirect_map_t m = {
        .origins = origins, .norigins = 2, .client_origin = TT_STR("https://www.example"), .prefix = TT_STR("/app/")};
    assert_string_equal(redirected("http://10.0.0.5:8080/login?x=1", false, &m), "https://www.example/app/login?x=1");
    assert_string_equal(redirected("HTTP://Backend/a", false, &m), "https://www.example/app/a");
    assert_string_equal(redirected("http://backend", false, &m), "https://www.example/app/");
    assert_string_equal(redirected("http://backend?q", false, &m), "https://www.example/app/?q");
    assert_null(redirected("http://backend.evil/a", false, &m));
    assert_null(redirected("http://10.0.0.5:80801/a", false, &m));
    assert_null(redirected("/relative", false, &m));
    assert_string_equal(redirected("0; URL=http://backend/x", true, &m), "0; URL=https://www.example/app/x");
    assert_null(redirected("5", true, &m));
    m.prefix = TT_STR_NULL;
    m.client_origin = TT_STR_NULL; /* no Host: a path */
    assert_string_equal(redirected("http://backend/a", false, &m), "/a");
}

int main(void)
{
    tt_bufpool_init(&bufs, 4096, 4);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strips_the_prefix),    cmocka_unit_test(rewrites_with_captures),
        cmocka_unit_test(refuses_bad_rewrites), cmocka_unit_test(field_rules_and_variables),
        cmocka_unit_test(rewrites_redirects),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_bufpool_dispose(&bufs);
    return rc;
}
