/* test_privs.c -- the user database lookups of [server] user/group (src/core/privs.c) and the refusal to switch
 * users without root; the switch itself is tested on the real server (tests/integration/test_service.py) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/privs.h"

#include <unistd.h>

static void root_is_found_with_its_primary_group(void **state)
{
    (void)state;
    tt_privs_t p;
    const char *why = NULL;
    assert_int_equal(tt_privs_lookup("root", NULL, &p, &why), 0);
    assert_string_equal(p.user, "root");
    assert_int_equal(p.uid, 0);
    assert_int_equal(p.gid, 0);
}

static void a_group_replaces_the_primary_one(void **state)
{
    (void)state;
    tt_privs_t p;
    const char *why = NULL;
    if (tt_privs_lookup("root", "daemon", &p, &why) != 0) skip(); /* no group daemon here */
    assert_int_equal(p.uid, 0);
    assert_int_not_equal(p.gid, 0);
}

static void unknown_names_say_which(void **state)
{
    (void)state;
    tt_privs_t p;
    const char *why = NULL;
    assert_int_equal(tt_privs_lookup("no-such-user-tt", NULL, &p, &why), -1);
    assert_string_equal(why, "no such user");
    assert_int_equal(tt_privs_lookup("root", "no-such-group-tt", &p, &why), -1);
    assert_string_equal(why, "no such group");
    char longname[100];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(tt_privs_lookup(longname, NULL, &p, &why), -1);
    assert_string_equal(why, "name too long");
}

static void the_current_ids_need_no_switch(void **state)
{
    (void)state;
    tt_privs_t me = {.uid = getuid(), .gid = getgid()};
    memcpy(me.user, "me", 3);
    assert_true(tt_privs_is_current(&me));
    assert_true(tt_privs_can_drop(&me));
    char err[256];
    if (geteuid() != 0) assert_int_equal(tt_privs_drop(&me, err, sizeof(err)), 0); /* as root it would switch */
    tt_privs_t other = me;
    other.uid = me.uid + 1;
    assert_false(tt_privs_is_current(&other));
    assert_int_equal(tt_privs_can_drop(&other), geteuid() == 0);
    if (geteuid() != 0) {
        assert_int_equal(tt_privs_drop(&other, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "not root"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(root_is_found_with_its_primary_group),
        cmocka_unit_test(a_group_replaces_the_primary_one),
        cmocka_unit_test(unknown_names_say_which),
        cmocka_unit_test(the_current_ids_need_no_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
