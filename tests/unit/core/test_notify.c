/* test_notify.c -- sd_notify messages (src/core/notify.c): nothing without NOTIFY_SOCKET; each message as the
 * service manager receives it on its datagram socket; a status cut at its first newline */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/notify.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char dir[64];
static char path[128];
static int manager = -1;

/* The manager's end: a datagram socket bound in a fresh directory, named by NOTIFY_SOCKET. */
static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/tt-notify.XXXXXX");
    if (mkdtemp(dir) == NULL) return -1;
    snprintf(path, sizeof(path), "%s/notify", dir);
    manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (manager < 0 || bind(manager, (struct sockaddr *)&sa, sizeof(sa)) != 0) return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(manager, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(manager);
    unlink(path);
    rmdir(dir);
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

/* The next datagram, NUL-terminated. */
static const char *received(void)
{
    static char msg[1024];
    ssize_t n = recv(manager, msg, sizeof(msg) - 1, 0);
    assert_true(n > 0);
    msg[n] = '\0';
    return msg;
}

static void nothing_is_sent_without_notify_socket(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_false(tt_notify_enabled());
    assert_int_equal(tt_notify_ready(), 0);
    assert_int_equal(tt_notify_stopping(), 0);
    assert_int_equal(tt_notify_status("x"), 0);
    char b;
    assert_int_equal(recv(manager, &b, 1, MSG_DONTWAIT), -1);
}

static void each_message_reaches_the_manager(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", path, 1);
    assert_true(tt_notify_enabled());
    char want[64];
    snprintf(want, sizeof(want), "READY=1\nMAINPID=%lu", (unsigned long)getpid());
    assert_int_equal(tt_notify_ready(), 0);
    assert_string_equal(received(), want);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long before = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    assert_int_equal(tt_notify_reloading(), 0);
    const char *m = received();
    assert_true(strncmp(m, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
    unsigned long long usec = strtoull(m + 27, NULL, 10);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    assert_true(usec >= before);
    assert_true(usec <= (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);

    assert_int_equal(tt_notify_stopping(), 0);
    assert_string_equal(received(), "STOPPING=1");
}

static void a_status_is_one_line(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(tt_notify_status("serving %d\nREADY=1", 2), 0); /* the newline must not add an assignment */
    assert_string_equal(received(), "STATUS=serving 2");
}

static void a_missing_socket_is_an_error_not_a_crash(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "/nonexistent/tt-notify", 1);
    assert_true(tt_notify_ready() < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(nothing_is_sent_without_notify_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(each_message_reaches_the_manager, setup, teardown),
        cmocka_unit_test_setup_teardown(a_status_is_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(a_missing_socket_is_an_error_not_a_crash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
