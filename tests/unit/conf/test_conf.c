/* test_conf.c -- the configuration (src/conf/conf.c): defaults, every section and key from a real INI file,
 * per-listener and command-line precedence, and "FILE:LINE: key: reason" errors */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "conf/conf.h"
#include "core/log.h"
#include "net/addr.h"

#include <unistd.h>

/* A temporary INI file and the config loaded from it. */
typedef struct fixture {
    char path[64];
    tt_conf_t c;
    char err[512];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (f == NULL) return -1;
    f->path[0] = '\0';
    tt_conf_init(&f->c);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->path[0]) unlink(f->path);
    tt_conf_dispose(&f->c);
    free(f);
    return 0;
}

/* Writes `text` to a new temporary file, remembered in `f->path`. */
static void write_file(fixture_t *f, const char *text)
{
    if (f->path[0]) unlink(f->path);
    memcpy(f->path, "/tmp/tt_conf_XXXXXX", sizeof("/tmp/tt_conf_XXXXXX"));
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* Loads `text`; returns tt_conf_load's result. */
static int load(fixture_t *f, const char *text)
{
    write_file(f, text);
    f->err[0] = '\0';
    return tt_conf_load(&f->c, f->path, f->err, sizeof(f->err));
}

/* Loads `text`, expecting failure with exactly "PATH<suffix>". */
static void expect_load_error(fixture_t *f, const char *text, const char *suffix)
{
    assert_int_equal(load(f, text), -1);
    char want[600];
    snprintf(want, sizeof(want), "%s%s", f->path, suffix);
    assert_string_equal(f->err, want);
}

static void load_ok(fixture_t *f, const char *text)
{
    int r = load(f, text);
    if (r != 0) print_error("%s\n", f->err);
    assert_int_equal(r, 0);
}

static void finish_ok(fixture_t *f)
{
    f->err[0] = '\0';
    int r = tt_conf_finish(&f->c, f->err, sizeof(f->err));
    if (r != 0) print_error("%s\n", f->err);
    assert_int_equal(r, 0);
}

static void assert_addr(const tt_addr_t *a, const char *want)
{
    char buf[TT_ADDR_STRLEN];
    tt_addr_format(a, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static tt_conf_listen_t *find_listen(tt_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nlistens; i++)
        if (strcmp(c->listens[i].name, name) == 0) return &c->listens[i];
    fail_msg("no [listen %s]", name);
    return NULL;
}

static void assert_default_policy(const tt_listen_policy_t *p)
{
    assert_int_equal(p->ka.idle_timeout_ms, 5000);
    assert_int_equal(p->ka.max_requests, 1000);
    assert_int_equal(p->ka.max_lifetime_ms, 3600000);
    assert_int_equal(p->header_timeout_ms, 10000);
    assert_int_equal(p->body_timeout_ms, 30000);
    assert_int_equal(p->send_timeout_ms, 30000);
    assert_true(p->keepalive_header);
    assert_false(p->tcp_keepalive.enabled);
    assert_int_equal(p->tcp_keepalive.idle_s, 900);
    assert_int_equal(p->tcp_keepalive.interval_s, 60);
    assert_int_equal(p->tcp_keepalive.count, 5);
    assert_int_equal(p->max_body_bytes, 1048576);
    assert_int_equal(p->limits.max_target, 8192);
    assert_int_equal(p->limits.max_field_bytes, 32768);
    assert_int_equal(p->limits.max_fields, 100);
    assert_int_equal(p->limits.max_field_line, 8192);
    assert_true(p->h2.enabled);
    assert_int_equal(p->h2.max_concurrent_streams, 100);
    assert_int_equal(p->h2.initial_window, 65535);
    assert_int_equal(p->h2.header_table_size, 4096);
    assert_int_equal(p->h2.ping_interval_ms, 0); /* off */
    assert_int_equal(p->h2.ping_timeout_ms, 15000);
    assert_int_equal(p->h2.reset_burst, 200);
    assert_int_equal(p->h2.reset_rate, 33);
}

/* ---- defaults ---- */

static void defaults_to_one_listener_on_localhost_8080(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_null(c->path);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_int_equal(c->backlog, 4096);
    assert_default_policy(&c->defaults);
    assert_true(c->tls_tickets);
    assert_int_equal(c->tls_ticket_rotation_ms, 3600000);
    assert_int_equal(c->tls_session_cache, 20000);
    assert_null(c->static_root);
    assert_string_equal(c->static_index, "index.html");
    assert_string_equal(c->access_log, "-");
    assert_int_equal(c->log_level, TT_LOG_INFO);
    assert_false(c->metrics_on);
    assert_string_equal(c->metrics_path, "/metrics");
    assert_int_equal(c->nlistens, 0);
    finish_ok(f);
    assert_int_equal(c->nlistens, 1);
    assert_string_equal(c->listens[0].name, "");
    assert_int_equal(c->listens[0].naddrs, 1);
    assert_addr(&c->listens[0].addrs[0], "127.0.0.1:8080");
    assert_default_policy(&c->listens[0].policy);
}

static void keeps_the_defaults_for_an_empty_file(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "; nothing but comments\n# and blank lines\n\n");
    assert_string_equal(f->c.path, f->path);
    finish_ok(f);
    assert_int_equal(f->c.nlistens, 1);
    assert_addr(&f->c.listens[0].addrs[0], "127.0.0.1:8080");
    assert_default_policy(&f->c.listens[0].policy);
}

/* ---- every section ---- */

static const char full_config[] = "; every section\n"
                                  "[server]\n"
                                  "workers = 4\n"
                                  "max_connections = 20000\n"
                                  "drain_timeout = 2s\n"
                                  "backlog = 128\n"
                                  "\n"
                                  "[keepalive]\n"
                                  "idle_timeout = 10s\n"
                                  "header_timeout = 3s\n"
                                  "body_timeout = 15s\n"
                                  "send_timeout = 20s\n"
                                  "max_requests = 50\n"
                                  "max_lifetime = 10m\n"
                                  "keepalive_header = off\n"
                                  "\n"
                                  "[tcp_keepalive]\n"
                                  "enabled = on\n"
                                  "idle = 300s\n"
                                  "interval = 10\n"
                                  "count = 4\n"
                                  "\n"
                                  "[limits]\n"
                                  "max_body_size = 8m\n"
                                  "max_request_target = 4k\n"
                                  "max_field_section = 16k\n"
                                  "max_fields = 50\n"
                                  "max_field_line = 4k\n"
                                  "\n"
                                  "[listen]\n"
                                  "address = 127.0.0.1:9000\n"
                                  "address = [::1]:9001\n"
                                  "idle_timeout = 7s\n"
                                  "\n"
                                  "[listen admin]\n"
                                  "address = *:9100\n"
                                  "max_requests = 5\n"
                                  "max_body_size = 1k\n"
                                  "max_fields = 20\n"
                                  "keepalive_header = on\n"
                                  "tcp_keepalive = 600s:30s:3\n"
                                  "header_timeout = 250ms\n"
                                  "body_timeout = 1m\n"
                                  "send_timeout = 1.5s\n"
                                  "max_lifetime = 1h\n"
                                  "max_request_target = 1k\n"
                                  "max_field_section = 2k\n"
                                  "max_field_line = 1k\n"
                                  "\n"
                                  "[static]\n"
                                  "root = /srv/www\n"
                                  "index = default.htm\n"
                                  "\n"
                                  "[log]\n"
                                  "access_log = off\n"
                                  "level = debug\n"
                                  "\n"
                                  "[metrics]\n"
                                  "listen = 127.0.0.1:9300\n"
                                  "path = /stats\n";

static void reads_every_section(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, full_config);
    finish_ok(f);
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->max_connections, 20000);
    assert_int_equal(c->drain_timeout_ms, 2000);
    assert_int_equal(c->backlog, 128);

    const tt_listen_policy_t *d = &c->defaults;
    assert_int_equal(d->ka.idle_timeout_ms, 10000);
    assert_int_equal(d->header_timeout_ms, 3000);
    assert_int_equal(d->body_timeout_ms, 15000);
    assert_int_equal(d->send_timeout_ms, 20000);
    assert_int_equal(d->ka.max_requests, 50);
    assert_int_equal(d->ka.max_lifetime_ms, 600000);
    assert_false(d->keepalive_header);
    assert_true(d->tcp_keepalive.enabled);
    assert_int_equal(d->tcp_keepalive.idle_s, 300);
    assert_int_equal(d->tcp_keepalive.interval_s, 10);
    assert_int_equal(d->tcp_keepalive.count, 4);
    assert_int_equal(d->max_body_bytes, 8 << 20);
    assert_int_equal(d->limits.max_target, 4096);
    assert_int_equal(d->limits.max_field_bytes, 16384);
    assert_int_equal(d->limits.max_fields, 50);
    assert_int_equal(d->limits.max_field_line, 4096);

    assert_int_equal(c->nlistens, 2);
    tt_conf_listen_t *plain = find_listen(c, ""), *admin = find_listen(c, "admin");
    assert_int_equal(plain->naddrs, 2);
    assert_addr(&plain->addrs[0], "127.0.0.1:9000");
    assert_addr(&plain->addrs[1], "[::1]:9001");
    /* [listen] overrides only idle_timeout; the rest comes from the sections */
    const tt_listen_policy_t *p = &plain->policy;
    assert_int_equal(p->ka.idle_timeout_ms, 7000);
    assert_int_equal(p->ka.max_requests, 50);
    assert_int_equal(p->ka.max_lifetime_ms, 600000);
    assert_int_equal(p->header_timeout_ms, 3000);
    assert_false(p->keepalive_header);
    assert_true(p->tcp_keepalive.enabled);
    assert_int_equal(p->tcp_keepalive.idle_s, 300);
    assert_int_equal(p->max_body_bytes, 8 << 20);
    assert_int_equal(p->limits.max_fields, 50);
    assert_int_equal(p->limits.max_field_line, 4096);

    assert_int_equal(admin->naddrs, 1);
    assert_addr(&admin->addrs[0], "0.0.0.0:9100");
    const tt_listen_policy_t *a = &admin->policy;
    assert_int_equal(a->ka.idle_timeout_ms, 10000); /* from [keepalive] */
    assert_int_equal(a->ka.max_requests, 5);
    assert_int_equal(a->max_body_bytes, 1024);
    assert_int_equal(a->limits.max_fields, 20);
    assert_int_equal(a->limits.max_target, 1024);
    assert_int_equal(a->limits.max_field_bytes, 2048);
    assert_int_equal(a->limits.max_field_line, 1024);
    assert_true(a->keepalive_header);
    assert_true(a->tcp_keepalive.enabled);
    assert_int_equal(a->tcp_keepalive.idle_s, 600);
    assert_int_equal(a->tcp_keepalive.interval_s, 30);
    assert_int_equal(a->tcp_keepalive.count, 3);
    assert_int_equal(a->header_timeout_ms, 250);
    assert_int_equal(a->body_timeout_ms, 60000);
    assert_int_equal(a->send_timeout_ms, 1500);
    assert_int_equal(a->ka.max_lifetime_ms, 3600000);

    assert_string_equal(c->static_root, "/srv/www");
    assert_string_equal(c->static_index, "default.htm");
    assert_string_equal(c->access_log, "off");
    assert_int_equal(c->log_level, TT_LOG_DEBUG);
    assert_true(c->metrics_on);
    assert_addr(&c->metrics_addr, "127.0.0.1:9300");
    assert_string_equal(c->metrics_path, "/stats");
}

static void reads_workers_auto_and_metrics_off(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[server]\nworkers = auto\n[metrics]\nlisten = off\n[log]\nlevel = error\n");
    finish_ok(f);
    assert_int_equal(f->c.workers, 0);
    assert_false(f->c.metrics_on);
    assert_int_equal(f->c.log_level, TT_LOG_ERROR);
}

/* Issue 13: a repeated section or key used to merge silently (last wins): both are errors now. Repeatable
 * keys (address, server, tls_cert, tls_key, trusted_proxies) add a value per line. */
static void refuses_a_repeated_section(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f,
                      "[listen a]\naddress = 127.0.0.1:1\n[listen b]\naddress = 127.0.0.1:2\n[listen a]\n"
                      "address = 127.0.0.1:3\nmax_requests = 9\n",
                      ":5: [listen a]: duplicate section (first on line 1)");
    expect_load_error(f, "[keepalive]\nidle_timeout = 5s\n[server]\nworkers = 1\n[keepalive]\n",
                      ":5: [keepalive]: duplicate section (first on line 1)");
}

static void refuses_a_key_set_twice_in_a_section(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, "[server]\nworkers = 8\nworkers = auto\n",
                      ":3: workers: set twice in [server] (first on line 2)");
    expect_load_error(f, "[metrics]\nlisten = 127.0.0.1:9300\npath = /m\nlisten = off\n",
                      ":4: listen: set twice in [metrics] (first on line 2)");
    /* the same key in two sections is two settings */
    load_ok(f, "[keepalive]\nidle_timeout = 5s\n[listen a]\naddress = 127.0.0.1:1\naddress = 127.0.0.1:2\n"
               "idle_timeout = 3s\n");
    finish_ok(f);
    assert_int_equal(find_listen(&f->c, "a")->naddrs, 2);
}

static void reports_every_error_in_line_order(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(load(f, "[server]\nworkers = lots\n[keepalive]\nidle_timeout = 5 parsecs\nno equals sign\n"
                             "[bogus]\nx = 1\n[server]\n"),
                     -1);
    char want[1024];
    snprintf(want, sizeof(want),
             "%s:2: workers: expected a whole number (a whole number from 0 to 1024, or auto)\n"
             "%s:4: idle_timeout: unknown unit (use ms, s, m or h)\n"
             "%s:5: syntax error (expected [section], key = value or a comment)\n"
             "%s:6: [bogus]: unknown section\n"
             "%s:8: [server]: duplicate section (first on line 1)",
             f->path, f->path, f->path, f->path, f->path);
    assert_string_equal(f->err, want);
}

/* ---- precedence ---- */

static void lets_a_listen_section_beat_keepalive_and_the_command_line_beat_both(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[keepalive]\nidle_timeout = 10s\nmax_requests = 50\nheader_timeout = 4s\n"
               "[listen x]\naddress = 127.0.0.1:9000\nidle_timeout = 7s\nmax_requests = 70\n"
               "[listen y]\naddress = 127.0.0.1:9001\n");
    assert_int_equal(tt_conf_override(c, "--idle-timeout", "idle_timeout", "3s", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_override(c, "--tcp-keepalive", "tcp_keepalive", "120s:5s:9", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_override(c, "--drain-timeout", "drain_timeout", "750ms", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_override(c, "--root", "root", "/tmp/www", f->err, sizeof(f->err)), 0);
    finish_ok(f);
    const tt_listen_policy_t *x = &find_listen(c, "x")->policy, *y = &find_listen(c, "y")->policy;
    /* idle_timeout: CLI 3s over [listen x] 7s and [keepalive] 10s */
    assert_int_equal(x->ka.idle_timeout_ms, 3000);
    assert_int_equal(y->ka.idle_timeout_ms, 3000);
    /* max_requests: [listen x] over [keepalive]; no CLI */
    assert_int_equal(x->ka.max_requests, 70);
    assert_int_equal(y->ka.max_requests, 50);
    assert_int_equal(x->header_timeout_ms, 4000);
    assert_true(x->tcp_keepalive.enabled);
    assert_int_equal(x->tcp_keepalive.idle_s, 120);
    assert_int_equal(x->tcp_keepalive.interval_s, 5);
    assert_int_equal(y->tcp_keepalive.count, 9);
    assert_int_equal(c->drain_timeout_ms, 750);
    assert_string_equal(c->static_root, "/tmp/www");
    /* the file's defaults are unchanged by the CLI */
    assert_int_equal(c->defaults.ka.idle_timeout_ms, 10000);
}

/* Issue 9: each TLS listener group keeps its own ticket rotation; [tls] gives the default. */
static void lets_each_tls_listen_section_have_its_own_ticket_rotation(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[tls]\nticket_rotation = 2h\n"
               "[listen fast]\naddress = 127.0.0.1:9443\ntls_cert = a.pem\ntls_key = a.key\nticket_rotation = 1m\n"
               "[listen slow]\naddress = 127.0.0.1:9444\ntls_cert = b.pem\ntls_key = b.key\nticket_rotation = 24h\n"
               "[listen default]\naddress = 127.0.0.1:9445\ntls_cert = c.pem\ntls_key = c.key\n"
               "[listen plain]\naddress = 127.0.0.1:9080\n");
    finish_ok(f);
    assert_int_equal(find_listen(c, "fast")->tls.ticket_rotation_ms, 60000);
    assert_int_equal(find_listen(c, "slow")->tls.ticket_rotation_ms, 86400000);
    assert_int_equal(find_listen(c, "default")->tls.ticket_rotation_ms, 7200000);
    assert_false(find_listen(c, "plain")->tls_on);
    assert_int_equal(c->tls_ticket_rotation_ms, 7200000);
}

static void refuses_a_listen_ticket_rotation_out_of_range(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, "[listen]\naddress = 127.0.0.1:0\ntls = on\nticket_rotation = 59s\n",
                      ":4: ticket_rotation: must be between 60000ms and 2592000000ms");
}

static void lets_the_first_listen_flag_replace_the_files_listeners(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[keepalive]\nmax_requests = 50\n[listen]\naddress = 127.0.0.1:9000\nmax_requests = 7\n"
               "[listen admin]\naddress = 127.0.0.1:9100\n");
    assert_int_equal(tt_conf_cli_listen(c, "127.0.0.1:7000", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_cli_listen(c, "[::1]:7001", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_override(c, "--max-requests", "max_requests", "3", f->err, sizeof(f->err)), 0);
    finish_ok(f);
    assert_int_equal(c->nlistens, 1);
    assert_string_equal(c->listens[0].name, "");
    assert_int_equal(c->listens[0].naddrs, 2);
    assert_addr(&c->listens[0].addrs[0], "127.0.0.1:7000");
    assert_addr(&c->listens[0].addrs[1], "[::1]:7001");
    assert_int_equal(c->listens[0].policy.ka.max_requests, 3);

    /* without the override the replacement listener follows [keepalive], not the dropped [listen] */
    tt_conf_dispose(c);
    tt_conf_init(c);
    load_ok(f, "[keepalive]\nmax_requests = 50\n[listen]\naddress = 127.0.0.1:9000\nmax_requests = 7\n");
    assert_int_equal(tt_conf_cli_listen(c, "127.0.0.1:7000", f->err, sizeof(f->err)), 0);
    finish_ok(f);
    assert_int_equal(c->nlistens, 1);
    assert_int_equal(c->listens[0].naddrs, 1);
    assert_int_equal(c->listens[0].policy.ka.max_requests, 50);
}

static void reports_command_line_errors_with_the_flag(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_int_equal(tt_conf_override(c, "--idle-timeout", "idle_timeout", "3x", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--idle-timeout: unknown unit (use ms, s, m or h)");
    assert_int_equal(tt_conf_override(c, "--idle-timeout", "idle_timeout", "2d", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--idle-timeout: unknown unit (use ms, s, m or h)");
    assert_int_equal(tt_conf_override(c, "--idle-timeout", "idle_timeout", "25h", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--idle-timeout: must be between 0ms and 86400000ms");
    assert_int_equal(tt_conf_override(c, "--workers", "workers", "2000", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--workers: out of range (a whole number from 0 to 1024, or auto)");
    assert_int_equal(tt_conf_override(c, "--keepalive-header", "keepalive_header", "maybe", f->err, sizeof(f->err)),
                     -1);
    assert_string_equal(f->err, "--keepalive-header: expected on or off");
    /* nothing was changed by the refused values */
    finish_ok(f);
    assert_int_equal(c->listens[0].policy.ka.idle_timeout_ms, 5000);
    assert_true(c->listens[0].policy.keepalive_header);
    assert_int_equal(c->workers, 0);

    assert_int_equal(tt_conf_cli_listen(c, "nope", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--listen nope: expected HOST:PORT");
    assert_int_equal(tt_conf_cli_listen(c, "127.0.0.1:65536", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--listen 127.0.0.1:65536: port must be a number from 0 to 65535");
    assert_int_equal(tt_conf_cli_listen(c, "[::1:80", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--listen [::1:80: expected [IPV6]:PORT");
}

/* ---- errors in the file ---- */

/* Five lines of comments and blank lines, then a section header on line 6: the bad line is line 7. */
#define PREAMBLE "; tether test config\n# comment\n\n;\n\n"

static void reports_an_unknown_key_with_its_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[keepalive]\nidle_timeot = 5s\nmax_requests = 5\n", ":7: idle_timeot: unknown key");
    /* a key of another section is unknown here */
    expect_load_error(f, PREAMBLE "[server]\nidle_timeout = 5s\n", ":7: idle_timeout: unknown key");
    expect_load_error(f, PREAMBLE "[keepalive]\naddress = 127.0.0.1:80\n", ":7: address: unknown key");
    expect_load_error(f, PREAMBLE "[tcp_keepalive]\ntcp_keepalive = off\n", ":7: tcp_keepalive: unknown key");
}

static void reports_an_unknown_section_with_its_line(void **state)
{
    fixture_t *f = *state;
    /* reported on the section's own line, even when the section has no keys */
    expect_load_error(f, PREAMBLE "[keepalivee]\nidle_timeout = 5s\n", ":6: [keepalivee]: unknown section");
    expect_load_error(f, PREAMBLE "[listener x]\naddress = 127.0.0.1:80\n", ":6: [listener x]: unknown section");
    expect_load_error(f, PREAMBLE "[keepalivee]\n", ":6: [keepalivee]: unknown section");
}

static void reports_a_bad_duration_with_its_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[keepalive]\nidle_timeout = 5x\n",
                      ":7: idle_timeout: unknown unit (use ms, s, m or h)");
    expect_load_error(f, PREAMBLE "[keepalive]\nidle_timeout = -5s\n", ":7: idle_timeout: must not be negative");
    expect_load_error(f, PREAMBLE "[listen]\nheader_timeout = soon\n",
                      ":7: header_timeout: expected a duration such as 250ms, 5s, 2m or 1h");
}

static void reports_an_out_of_range_value_with_its_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[server]\nbacklog = 0\n",
                      ":7: backlog: out of range (a whole number from 1 to 65535)");
    expect_load_error(f, PREAMBLE "[server]\nbacklog = 65536\n",
                      ":7: backlog: out of range (a whole number from 1 to 65535)");
    expect_load_error(f, PREAMBLE "[keepalive]\nidle_timeout = 25h\n",
                      ":7: idle_timeout: must be between 0ms and 86400000ms");
    expect_load_error(f, PREAMBLE "[keepalive]\nheader_timeout = 0\n",
                      ":7: header_timeout: must be between 1ms and 86400000ms");
    expect_load_error(f, PREAMBLE "[limits]\nmax_fields = 101\n",
                      ":7: max_fields: out of range (a whole number from 1 to 100)");
    expect_load_error(f, PREAMBLE "[limits]\nmax_field_line = 100\n",
                      ":7: max_field_line: must be between 256 and 1048576 bytes");
    expect_load_error(f, PREAMBLE "[limits]\nmax_request_target = 32\n",
                      ":7: max_request_target: must be between 64 and 1048576 bytes");
    expect_load_error(f, PREAMBLE "[tcp_keepalive]\nidle = 1.5s\n",
                      ":7: idle: must be whole seconds from 1s to 32767s");
    expect_load_error(f, PREAMBLE "[tcp_keepalive]\ncount = 128\n",
                      ":7: count: out of range (a whole number from 1 to 127)");
    expect_load_error(f, PREAMBLE "[server]\nworkers = many\n",
                      ":7: workers: expected a whole number (a whole number from 0 to 1024, or auto)");
}

static void reports_other_bad_values_with_their_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[listen]\naddress = localhost\n", ":7: address: expected HOST:PORT");
    expect_load_error(f, PREAMBLE "[listen]\ntcp_keepalive = 600s:30s\n",
                      ":7: tcp_keepalive: expected off or IDLE:INTERVAL:COUNT, e.g. 900s:60s:5");
    expect_load_error(f, PREAMBLE "[listen]\ntcp_keepalive = 600ms:30s:3\n",
                      ":7: tcp_keepalive: IDLE and INTERVAL must be whole seconds from 1s to 32767s");
    expect_load_error(f, PREAMBLE "[log]\nlevel = loud\n", ":7: level: expected error, warn, info or debug");
    expect_load_error(f, PREAMBLE "[static]\nroot =\n", ":7: root: must not be empty");
    expect_load_error(f, PREAMBLE "[keepalive]\nkeepalive_header = sometimes\n",
                      ":7: keepalive_header: expected on or off");
    expect_load_error(f, PREAMBLE "[limits]\nmax_body_size = 1q\n", ":7: max_body_size: unknown unit (use k, m or g)");
}

static void counts_lines_after_earlier_valid_keys(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f,
                      "[server]\nworkers = 2\n\n; x\n[keepalive]\nidle_timeout = 5s\nmax_lifetime = 1h\n"
                      "max_requests = lots\n",
                      ":8: max_requests: expected a whole number (a whole number from 0 to 2147483647)");
}

static void reports_a_syntax_error_with_its_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[server]\nthis line has no equals sign\n",
                      ":7: syntax error (expected [section], key = value or a comment)");
    expect_load_error(f, PREAMBLE "[server]\n[keepalive\n",
                      ":7: syntax error (expected [section], key = value or a comment)");
}

/* Issue 13: a static root that cannot be served from is a start-up error with its line (it used to start and
 * answer 500 to every request). */
static void checks_every_static_root_on_disk(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[static]\nroot = /nonexistent/www\n[route /a/]\nroot = /tmp\n[route /b/]\nroot = /etc/hostname\n");
    finish_ok(f);
    assert_int_equal(tt_conf_check_files(&f->c, f->err, sizeof(f->err)), -1);
    char want[600];
    snprintf(want, sizeof(want),
             "%s:2: root: /nonexistent/www: No such file or directory\n%s:6: root: /etc/hostname: Not a directory",
             f->path, f->path);
    assert_string_equal(f->err, want);
    /* --root replaces the file's root and names itself */
    assert_int_equal(tt_conf_override(&f->c, "--root", "root", "/nonexistent/cli", f->err, sizeof(f->err)), 0);
    free(f->c.routes[1].root);
    f->c.routes[1].root = NULL;
    assert_int_equal(tt_conf_check_files(&f->c, f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--root /nonexistent/cli: No such file or directory");
    assert_int_equal(tt_conf_override(&f->c, "--root", "root", "/tmp", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_check_files(&f->c, f->err, sizeof(f->err)), 0);
}

static void reports_a_missing_file(void **state)
{
    fixture_t *f = *state;
    const char *path = "/nonexistent/tether.ini";
    assert_int_equal(tt_conf_load(&f->c, path, f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "/nonexistent/tether.ini: No such file or directory");
}

static void refuses_a_listen_section_without_an_address(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[listen]\naddress = 127.0.0.1:9000\n[listen admin]\nmax_requests = 3\n");
    assert_int_equal(tt_conf_finish(&f->c, f->err, sizeof(f->err)), -1);
    char want[600];
    snprintf(want, sizeof(want), "%s: [listen admin] has no address", f->path);
    assert_string_equal(f->err, want);
}

static void refuses_a_metrics_path_without_a_slash(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[metrics]\nlisten = 127.0.0.1:9300\npath = metrics\n");
    assert_int_equal(tt_conf_finish(&f->c, f->err, sizeof(f->err)), -1);
    char want[600];
    snprintf(want, sizeof(want), "%s: path: must start with /", f->path);
    assert_string_equal(f->err, want);
}

/* race_window: 1 s by default, per listener, 0 allowed, at most 60 s; a listener carries its name for metrics. */
static void reads_race_window_and_names_listeners(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[keepalive]\nrace_window = 250ms\n[listen]\naddress = 127.0.0.1:1\n"
               "[listen edge]\naddress = 127.0.0.1:2\nrace_window = 0\n");
    finish_ok(f);
    assert_int_equal(f->c.defaults.race_window_ms, 250);
    assert_int_equal(find_listen(&f->c, "")->policy.race_window_ms, 250);
    assert_int_equal(find_listen(&f->c, "edge")->policy.race_window_ms, 0);
    assert_string_equal(find_listen(&f->c, "")->policy.name, "default");
    assert_string_equal(find_listen(&f->c, "edge")->policy.name, "edge");
    tt_conf_t d;
    tt_conf_init(&d);
    assert_int_equal(d.defaults.race_window_ms, 1000);
    tt_conf_dispose(&d);
    expect_load_error(f, "[keepalive]\nrace_window = 61s\n", ":2: race_window: must be between 0ms and 60000ms");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(defaults_to_one_listener_on_localhost_8080),
        T(reads_race_window_and_names_listeners),
        T(keeps_the_defaults_for_an_empty_file),
        T(reads_every_section),
        T(reads_workers_auto_and_metrics_off),
        T(refuses_a_repeated_section),
        T(refuses_a_key_set_twice_in_a_section),
        T(reports_every_error_in_line_order),
        T(lets_a_listen_section_beat_keepalive_and_the_command_line_beat_both),
        T(lets_each_tls_listen_section_have_its_own_ticket_rotation),
        T(refuses_a_listen_ticket_rotation_out_of_range),
        T(lets_the_first_listen_flag_replace_the_files_listeners),
        T(reports_command_line_errors_with_the_flag),
        T(reports_an_unknown_key_with_its_line),
        T(reports_an_unknown_section_with_its_line),
        T(reports_a_bad_duration_with_its_line),
        T(reports_an_out_of_range_value_with_its_line),
        T(reports_other_bad_values_with_their_line),
        T(counts_lines_after_earlier_valid_keys),
        T(reports_a_syntax_error_with_its_line),
        T(checks_every_static_root_on_disk),
        T(reports_a_missing_file),
        T(refuses_a_listen_section_without_an_address),
        T(refuses_a_metrics_path_without_a_slash),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
