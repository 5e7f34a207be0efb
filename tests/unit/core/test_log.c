/* test_log.c -- the error log (src/core/log.c): the syslog spec ("syslog:PATH,facility=,tag="), and lines sent
 * as RFC 3164 datagrams to a unix socket */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <regex.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"

static void parses_syslog_specs(void **state)
{
    (void)state;
    tt_log_syslog_t s;
    const char *why = NULL;
    assert_true(tt_log_is_syslog("syslog"));
    assert_true(tt_log_is_syslog("syslog:/x"));
    assert_false(tt_log_is_syslog("syslog.txt"));
    assert_false(tt_log_is_syslog("/var/log/syslog"));
    assert_int_equal(tt_log_syslog_parse("syslog", &s, &why), 0);
    assert_string_equal(s.path, "/dev/log");
    assert_int_equal(s.facility, 3);
    assert_string_equal(s.tag, "tether");
    assert_int_equal(tt_log_syslog_parse("syslog:/run/x.sock,facility=local7,tag=edge-1", &s, &why), 0);
    assert_string_equal(s.path, "/run/x.sock");
    assert_int_equal(s.facility, 23);
    assert_string_equal(s.tag, "edge-1");
    assert_int_equal(tt_log_syslog_parse("syslog:facility=kern", &s, &why), 0);
    assert_int_equal(s.facility, 0);
    assert_int_equal(tt_log_syslog_parse("syslog:facility=local8", &s, &why), -1);
    assert_non_null(strstr(why, "unknown syslog facility"));
    assert_int_equal(tt_log_syslog_parse("syslog:tag=has space", &s, &why), -1);
    assert_int_equal(tt_log_syslog_parse("syslog:tag=", &s, &why), -1);
    assert_int_equal(tt_log_syslog_parse("syslog:relative.sock", &s, &why), -1);
    char longp[200] = "syslog:/";
    memset(longp + 8, 'a', 150);
    longp[158] = '\0';
    assert_int_equal(tt_log_syslog_parse(longp, &s, &why), -1);
}

static void lines_go_to_the_socket_as_rfc3164(void **state)
{
    (void)state;
    char dir[] = "/tmp/tt-log-XXXXXX";
    assert_non_null(mkdtemp(dir));
    tt_log_syslog_t s;
    const char *why;
    char spec[200];
    snprintf(spec, sizeof(spec), "syslog:%s/s,facility=user,tag=tt", dir);
    assert_int_equal(tt_log_syslog_parse(spec, &s, &why), 0);
    int sink = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
    assert_int_equal(bind(sink, (struct sockaddr *)&sa, sizeof(sa)), 0);
    tt_log_setup(TT_LOG_INFO, 2);
    assert_int_equal(tt_log_open_syslog(&s), 0);
    tt_log(TT_LOG_WARN, "hello %d", 42);
    tt_log(TT_LOG_DEBUG, "not sent");
    char d[512];
    ssize_t n = recv(sink, d, sizeof(d) - 1, 0);
    assert_true(n > 0);
    d[n] = '\0';
    regex_t re;
    char want[128];
    snprintf(want, sizeof(want), "^<12>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} tt\\[%d\\]: hello 42$",
             (int)getpid());
    assert_int_equal(regcomp(&re, want, REG_EXTENDED), 0);
    assert_int_equal(regexec(&re, d, 0, NULL, 0), 0);
    regfree(&re);
    assert_int_equal(recv(sink, d, sizeof(d), MSG_DONTWAIT), -1); /* debug is above the level */
    assert_int_equal(tt_log_reopen(), 0);                         /* connects again */
    tt_log(TT_LOG_ERROR, "after");
    n = recv(sink, d, sizeof(d) - 1, 0);
    assert_true(n > 0);
    assert_int_equal(strncmp(d, "<11>", 4), 0);
    tt_log_close_file();
    close(sink);
    unlink(sa.sun_path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_syslog_specs),
        cmocka_unit_test(lines_go_to_the_socket_as_rfc3164),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
