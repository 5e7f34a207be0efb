/* test_resolver.c -- the resolver thread (src/net/resolver.c): a watched name is resolved on the thread once it may
 * start, a change of its set bumps its version and wakes every subscribed eventfd, names are shared by host, port and
 * interval, the seed stands until then, and everything is freed with the last release (the ASan build checks) */
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "net/addrset.h"
#include "net/resolver.h"

#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static tt_addr_t A(const char *s)
{
    tt_addr_t a;
    const char *why = NULL;
    if (tt_addr_parse(s, false, &a, &why) != 0) fail_msg("%s: %s", s, why);
    return a;
}

static void resolves_on_its_thread_and_wakes_subscribers_on_a_change(void **state)
{
    (void)state;
    tt_resolver_t *r = tt_resolver_new();
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(fd >= 0);
    tt_resolver_subscribe(r, fd);
    tt_addr_t seed = A("10.9.9.9:8080"); /* what the start-up resolution said: localhost says otherwise */
    tt_dns_name_t *n = tt_resolver_watch(r, "localhost", 8080, 1000, &seed);
    tt_dns_name_t *same = tt_resolver_watch(r, "localhost", 8080, 1000, NULL);
    tt_dns_name_t *other_interval = tt_resolver_watch(r, "localhost", 8080, 2000, NULL);
    tt_dns_name_t *other_port = tt_resolver_watch(r, "localhost", 8081, 1000, NULL);
    assert_ptr_equal(n, same); /* one resolution for every holder */
    assert_ptr_not_equal(n, other_interval);
    assert_ptr_not_equal(n, other_port);
    tt_addr_t got[TT_DNS_MAX_ADDRS];
    uint64_t v = 0;
    assert_int_equal(tt_dns_name_version(n), 1);
    assert_int_equal(tt_dns_name_get(n, got, TT_DNS_MAX_ADDRS, &v), 1); /* the seed, until the thread runs */
    assert_int_equal(v, 1);
    assert_true(tt_addr_equal(&got[0], &seed));

    tt_resolver_start(r);
    /* Woken for each change (the other names, without a seed, change too): until ours did. */
    for (int i = 0; i < 10 && tt_dns_name_version(n) < 2; i++) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        uint64_t wakes;
        assert_int_equal(read(fd, &wakes, sizeof(wakes)), sizeof(wakes));
    }
    assert_true(tt_dns_name_version(n) >= 2);
    size_t k = tt_dns_name_get(n, got, TT_DNS_MAX_ADDRS, &v);
    assert_true(k >= 1);
    assert_int_equal(v, tt_dns_name_version(n));
    tt_addr_t lo4 = A("127.0.0.1:8080"), lo6 = A("[::1]:8080");
    assert_true(tt_addrset_contains(got, k, &lo4) || tt_addrset_contains(got, k, &lo6));
    assert_false(tt_addrset_contains(got, k, &seed));
    tt_dns_stats_t st;
    tt_dns_name_stats(n, &st);
    assert_true(st.resolutions >= 1);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.changes, 1);
    assert_int_equal(st.naddrs, k);

    tt_resolver_unsubscribe(r, fd);
    close(fd);
    tt_dns_name_release(&n);
    assert_null(n);
    tt_dns_name_release(&same);
    tt_dns_name_release(&other_interval);
    tt_dns_name_release(&other_port);
    tt_dns_name_release(&n); /* a no-op on NULL */
    tt_resolver_free(&r);
    assert_null(r);
}

static void frees_a_resolver_that_never_started(void **state)
{
    (void)state;
    tt_resolver_t *r = tt_resolver_new();
    tt_dns_name_t *n = tt_resolver_watch(r, "localhost", 80, 1000, NULL);
    assert_int_equal(tt_dns_name_version(n), 1);
    tt_addr_t got[1];
    uint64_t v;
    assert_int_equal(tt_dns_name_get(n, got, 1, &v), 0); /* no seed, nothing resolved yet */
    tt_dns_name_release(&n);
    tt_resolver_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resolves_on_its_thread_and_wakes_subscribers_on_a_change),
        cmocka_unit_test(frees_a_resolver_that_never_started),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
