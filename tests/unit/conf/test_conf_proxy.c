/* test_conf_proxy.c -- the proxy configuration (src/conf/conf.c): [upstream NAME] sections with every key,
 * their servers, [route PREFIX] sections, tcp_keepalive = auto on upstreams, --proxy and --route, and the
 * "FILE:LINE: key: reason" errors. Only IP literals are used: nothing here may resolve a name. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "conf/conf.h"
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

/* Starts over with a fresh config (the file stays). */
static void reset(fixture_t *f)
{
    tt_conf_dispose(&f->c);
    tt_conf_init(&f->c);
}

/* Writes `text` to a new temporary file, remembered in `f->path`. */
static void write_file(fixture_t *f, const char *text)
{
    if (f->path[0]) unlink(f->path);
    memcpy(f->path, "/tmp/tt_confp_XXXXXX", sizeof("/tmp/tt_confp_XXXXXX"));
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* Loads `text` into a fresh config; returns tt_conf_load's result. */
static int load(fixture_t *f, const char *text)
{
    reset(f);
    write_file(f, text);
    f->err[0] = '\0';
    return tt_conf_load(&f->c, f->path, f->err, sizeof(f->err));
}

/* Loads `text`, expecting failure with exactly "PATH<suffix>". */
static void expect_load_error(fixture_t *f, const char *text, const char *suffix)
{
    int r = load(f, text);
    char want[600];
    snprintf(want, sizeof(want), "%s%s", f->path, suffix);
    if (r != -1 || strcmp(f->err, want) != 0)
        fail_msg("config:\n%s\nloaded %d with \"%s\", expected -1 with \"%s\"", text, r, f->err, want);
}

static void load_ok(fixture_t *f, const char *text)
{
    int r = load(f, text);
    if (r != 0) fail_msg("config:\n%s\nrefused: %s", text, f->err);
}

static void finish_ok(fixture_t *f)
{
    f->err[0] = '\0';
    int r = tt_conf_finish(&f->c, f->err, sizeof(f->err));
    if (r != 0) fail_msg("finish refused: %s", f->err);
}

/* tt_conf_finish fails with exactly "PATH<suffix>". */
static void expect_finish_error(fixture_t *f, const char *suffix)
{
    f->err[0] = '\0';
    int r = tt_conf_finish(&f->c, f->err, sizeof(f->err));
    char want[600];
    snprintf(want, sizeof(want), "%s%s", f->path, suffix);
    if (r != -1 || strcmp(f->err, want) != 0)
        fail_msg("finish returned %d with \"%s\", expected -1 with \"%s\"", r, f->err, want);
}

static void assert_addr(const tt_addr_t *a, const char *want)
{
    char buf[TT_ADDR_STRLEN];
    tt_addr_format(a, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static tt_upstream_conf_t *find_upstream(tt_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0) return &c->upstreams[i];
    fail_msg("no [upstream %s]", name);
    return NULL;
}

static tt_conf_route_t *find_route(tt_conf_t *c, const char *prefix)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i].prefix, prefix) == 0) return &c->routes[i];
    fail_msg("no [route %s]", prefix);
    return NULL;
}

/* Five lines of comments and blank lines, a section header on line 6, a server on line 7: a bad key in
 * the upstream is on line 8. */
#define PREAMBLE "; tether proxy test config\n# comment\n\n;\n\n"
#define UPSTREAM PREAMBLE "[upstream u]\nserver = 127.0.0.1:9000\n"

/* ---- [upstream NAME] ---- */

static void fills_an_upstream_with_the_defaults(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream app]\nserver = 127.0.0.1:9000\n");
    finish_ok(f);
    assert_int_equal(f->c.nupstreams, 1);
    tt_upstream_conf_t *u = find_upstream(&f->c, "app");
    assert_int_equal(u->nservers, 1);
    assert_addr(&u->servers[0].addr, "127.0.0.1:9000");
    assert_string_equal(u->servers[0].name, "127.0.0.1:9000");
    assert_int_equal(u->balance, TT_BALANCE_ROUND_ROBIN);
    assert_false(u->reuse_safe);
    assert_int_equal(u->replay_buffer, 64 * 1024);
    assert_false(u->forwarded);
    assert_true(u->expose_cause);
    assert_int_equal(u->ntrusted, 0); /* no trusted proxies: forwarding fields from clients are replaced */
    assert_true(u->replay);
    assert_null(u->host);
    const tt_pool_conf_t *p = &u->pool;
    assert_int_equal(p->max_idle, 128);
    assert_int_equal(p->idle_timeout_ms, 60000);
    assert_int_equal(p->max_requests, 1000);
    assert_int_equal(p->max_lifetime_ms, 3600000);
    assert_true(p->keepalive_hint);
    assert_int_equal(p->hint_margin_ms, 1000);
    assert_int_equal(p->margin_floor_ms, 25);
    assert_int_equal(p->margin_rtts, 3);
    assert_true(p->learn);
    assert_true(p->learn_above_hint);
    assert_int_equal(p->safe_idle_ms, 250);
    assert_true(p->idle_watch);
    assert_true(p->peek);
    assert_int_equal(p->max_connections, 0);
    assert_int_equal(p->max_pending, 1024);
    assert_int_equal(p->queue_timeout_ms, 5000);
    assert_int_equal(p->timeouts.connect_ms, 3000);
    assert_int_equal(p->timeouts.response_ms, 30000);
    assert_int_equal(p->timeouts.read_ms, 30000);
    assert_int_equal(p->timeouts.send_ms, 30000);
    assert_int_equal(p->max_fails, 3);
    assert_int_equal(p->backoff_min_ms, 1000);
    assert_int_equal(p->backoff_max_ms, 30000);
    assert_int_equal(p->leak_threshold_ms, 60000);
    /* tcp_keepalive = auto: derived from idle_timeout 60s */
    assert_true(p->tcp_keepalive.enabled);
    assert_int_equal(p->tcp_keepalive.idle_s, 15);
    assert_int_equal(p->tcp_keepalive.interval_s, 5);
    assert_int_equal(p->tcp_keepalive.count, 3);
}

static const char every_upstream_key[] = "[upstream app]\n"
                                         "server = 127.0.0.1:9000\n"
                                         "server = http://127.0.0.2:9001/\n"
                                         "balance = least_conn\n"
                                         "reuse = safe\n"
                                         "max_idle = 7\n"
                                         "idle_timeout = 30s\n"
                                         "max_requests = 0\n"
                                         "max_lifetime = 10m\n"
                                         "keepalive_hint = off\n"
                                         "hint_margin = 250ms\n"
                                         "margin_floor = 5ms\n"
                                         "margin_rtts = 8\n"
                                         "learn = no\n"
                                         "learn_above_hint = off\n"
                                         "safe_idle = 1s\n"
                                         "idle_watch = false\n"
                                         "peek = 0\n"
                                         "replay = off\n"
                                         "connect_timeout = 1.5s\n"
                                         "response_timeout = 2m\n"
                                         "read_timeout = 45s\n"
                                         "send_timeout = 1h\n"
                                         "max_connections = 64\n"
                                         "max_pending = 0\n"
                                         "queue_timeout = 100ms\n"
                                         "max_fails = 5\n"
                                         "fail_backoff = 500ms\n"
                                         "fail_backoff_max = 2m\n"
                                         "leak_threshold = 0\n"
                                         "replay_buffer = 1m\n"
                                         "forwarded = on\n"
                                         "expose_cause = off\n"
                                         "host = api.example.com\n"
                                         "tcp_keepalive = 600s:30s:4\n";

static void reads_every_upstream_key(void **state)
{
    fixture_t *f = *state;
    load_ok(f, every_upstream_key);
    finish_ok(f);
    tt_upstream_conf_t *u = find_upstream(&f->c, "app");
    assert_int_equal(u->nservers, 2);
    assert_addr(&u->servers[0].addr, "127.0.0.1:9000");
    assert_addr(&u->servers[1].addr, "127.0.0.2:9001");
    assert_string_equal(u->servers[1].name, "127.0.0.2:9001");
    assert_int_equal(u->balance, TT_BALANCE_LEAST_CONN);
    assert_true(u->reuse_safe);
    assert_false(u->replay);
    assert_true(u->forwarded);
    assert_false(u->expose_cause);
    assert_int_equal(u->replay_buffer, 1 << 20);
    assert_string_equal(u->host, "api.example.com");
    const tt_pool_conf_t *p = &u->pool;
    assert_int_equal(p->max_idle, 7);
    assert_int_equal(p->idle_timeout_ms, 30000);
    assert_int_equal(p->max_requests, 0);
    assert_int_equal(p->max_lifetime_ms, 600000);
    assert_false(p->keepalive_hint);
    assert_int_equal(p->hint_margin_ms, 250);
    assert_int_equal(p->margin_floor_ms, 5);
    assert_int_equal(p->margin_rtts, 8);
    assert_false(p->learn);
    assert_false(p->learn_above_hint);
    assert_int_equal(p->safe_idle_ms, 1000);
    assert_false(p->idle_watch);
    assert_false(p->peek);
    assert_int_equal(p->timeouts.connect_ms, 1500);
    assert_int_equal(p->timeouts.response_ms, 120000);
    assert_int_equal(p->timeouts.read_ms, 45000);
    assert_int_equal(p->timeouts.send_ms, 3600000);
    assert_int_equal(p->max_connections, 64);
    assert_int_equal(p->max_pending, 0);
    assert_int_equal(p->queue_timeout_ms, 100);
    assert_int_equal(p->max_fails, 5);
    assert_int_equal(p->backoff_min_ms, 500);
    assert_int_equal(p->backoff_max_ms, 120000);
    assert_int_equal(p->leak_threshold_ms, 0);
    assert_true(p->tcp_keepalive.enabled);
    assert_int_equal(p->tcp_keepalive.idle_s, 600);
    assert_int_equal(p->tcp_keepalive.interval_s, 30);
    assert_int_equal(p->tcp_keepalive.count, 4);
    /* the listeners' policy is not touched by upstream keys of the same name */
    assert_int_equal(f->c.listens[0].policy.ka.idle_timeout_ms, 5000);
    assert_int_equal(f->c.listens[0].policy.ka.max_requests, 1000);
    assert_int_equal(f->c.listens[0].policy.send_timeout_ms, 30000);
    assert_int_equal(f->c.max_connections, 10000);
}

/* Every upstream key with a value it refuses, and the exact reason. */
static void reports_a_bad_value_of_every_upstream_key(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *line, *error;
    } bad[] = {
        {"balance = random", "balance: expected round_robin or least_conn"},
        {"balance = ROUND_ROBIN", "balance: expected round_robin or least_conn"},
        {"reuse = never", "reuse: expected always or safe"},
        {"max_idle = 100001", "max_idle: out of range (a whole number from 0 to 100000)"},
        {"idle_timeout = 0", "idle_timeout: must be between 1ms and 86400000ms"},
        {"idle_timeout = 25h", "idle_timeout: must be between 1ms and 86400000ms"},
        {"max_requests = x", "max_requests: expected a whole number (a whole number from 0 to 2147483647)"},
        {"max_requests = 2147483648", "max_requests: out of range (a whole number from 0 to 2147483647)"},
        {"max_lifetime = -1s", "max_lifetime: must not be negative"},
        {"max_lifetime = 721h", "max_lifetime: longer than 30 days"},
        {"keepalive_hint = maybe", "keepalive_hint: expected on or off"},
        {"hint_margin = 25h", "hint_margin: must be between 0ms and 86400000ms"},
        {"margin_floor = 25h", "margin_floor: must be between 0ms and 86400000ms"},
        {"margin_rtts = 101", "margin_rtts: out of range (a whole number from 0 to 100)"},
        {"margin_rtts = 2.5", "margin_rtts: expected a whole number (a whole number from 0 to 100)"},
        {"learn = 2", "learn: expected on or off"},
        {"learn_above_hint = sometimes", "learn_above_hint: expected on or off"},
        {"safe_idle = 1q", "safe_idle: unknown unit (use ms, s, m or h)"},
        {"idle_watch = onn", "idle_watch: expected on or off"},
        {"peek = yes please", "peek: expected on or off"},
        {"replay = x", "replay: expected on or off"},
        {"connect_timeout = 0ms", "connect_timeout: must be between 1ms and 86400000ms"},
        {"response_timeout = 5x", "response_timeout: unknown unit (use ms, s, m or h)"},
        {"read_timeout = soon", "read_timeout: expected a duration such as 250ms, 5s, 2m or 1h"},
        {"send_timeout = 1.s", "send_timeout: expected digits after the decimal point"},
        {"max_connections = 10000001", "max_connections: out of range (a whole number from 0 to 10000000)"},
        {"max_pending = -1", "max_pending: expected a whole number (a whole number from 0 to 10000000)"},
        {"queue_timeout = 0", "queue_timeout: must be between 1ms and 86400000ms"},
        {"max_fails = 0", "max_fails: out of range (a whole number from 1 to 1000)"},
        {"max_fails = 1001", "max_fails: out of range (a whole number from 1 to 1000)"},
        {"fail_backoff = 0", "fail_backoff: must be between 1ms and 86400000ms"},
        {"fail_backoff_max = 25h", "fail_backoff_max: must be between 1ms and 86400000ms"},
        {"leak_threshold = later", "leak_threshold: expected a duration such as 250ms, 5s, 2m or 1h"},
        {"replay_buffer = 2g", "replay_buffer: must be between 0 and 1073741824 bytes"},
        {"replay_buffer = 1q", "replay_buffer: unknown unit (use k, m or g)"},
        {"forwarded = y", "forwarded: expected on or off"},
        {"expose_cause = hidden", "expose_cause: expected on or off"},
        {"trusted_proxies = 10.0.0.0/8", "trusted_proxies: unknown key"}, /* a [server] key */
        {"host =", "host: must not be empty"},
        {"tcp_keepalive = 600s:30s", "tcp_keepalive: expected off or IDLE:INTERVAL:COUNT, e.g. 900s:60s:5"},
        {"tcp_keepalive = on", "tcp_keepalive: expected off or IDLE:INTERVAL:COUNT, e.g. 900s:60s:5"},
        {"tcp_keepalive = 600ms:30s:3", "tcp_keepalive: IDLE and INTERVAL must be whole seconds from 1s to 32767s"},
        {"tcp_keepalive = 600s:0s:3", "tcp_keepalive: IDLE and INTERVAL must be whole seconds from 1s to 32767s"},
        {"server = ftp://127.0.0.1:21", "server: only http://, https:// and h2c:// upstreams are supported"},
        {"tls_verify = maybe", "tls_verify: expected on or off"},
        {"tls_ca =", "tls_ca: must not be empty"},
        {"weight = 5", "weight: unknown key"},
        {"address = 127.0.0.1:80", "address: unknown key"},
        {"root = /srv", "root: unknown key"},
        {"upstream = u", "upstream: unknown key"},
        {"keepalive_header = on", "keepalive_header: unknown key"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        char text[512], suffix[256];
        snprintf(text, sizeof(text), UPSTREAM "%s\nserver = 127.0.0.1:9001\n", bad[i].line);
        snprintf(suffix, sizeof(suffix), ":8: %s", bad[i].error);
        expect_load_error(f, text, suffix);
    }
}

/* ---- [server] trusted_proxies ---- */

static void reads_trusted_proxies_for_every_upstream(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[server]\ntrusted_proxies = 10.0.0.0/8, 192.0.2.7\ntrusted_proxies = 2001:db8::/32\n"
               "[upstream a]\nserver = 127.0.0.1:1\n[upstream b]\nserver = 127.0.0.1:2\n");
    finish_ok(f);
    assert_int_equal(f->c.ntrusted_proxies, 3);
    for (size_t i = 0; i < f->c.nupstreams; i++) {
        const tt_upstream_conf_t *u = &f->c.upstreams[i];
        assert_ptr_equal(u->trusted, f->c.trusted_proxies);
        assert_int_equal(u->ntrusted, 3);
    }
    tt_addr_t a;
    assert_true(tt_addr_parse_ip(TT_LIT("10.200.0.1"), &a));
    assert_true(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
    assert_true(tt_addr_parse_ip(TT_LIT("192.0.2.7"), &a));
    assert_true(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
    assert_true(tt_addr_parse_ip(TT_LIT("192.0.2.8"), &a));
    assert_false(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
    assert_true(tt_addr_parse_ip(TT_LIT("2001:db8:ffff::1"), &a));
    assert_true(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
    assert_true(tt_addr_parse_ip(TT_LIT("::ffff:10.1.2.3"), &a)); /* a dual-stack listener's IPv4 peer */
    assert_true(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
    assert_true(tt_addr_parse_ip(TT_LIT("2001:db9::1"), &a));
    assert_false(tt_cidr_set_match(f->c.trusted_proxies, 3, &a));
}

static void refuses_bad_trusted_proxies(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *value, *error;
    } bad[] = {
        {"10.0.0.0/33", "an IPv4 prefix is at most /32"},
        {"::/129", "an IPv6 prefix is at most /128"},
        {"10.0.0.0/", "the prefix length after '/' must be a number of bits"},
        {"10.0.0.0/8x", "the prefix length after '/' must be a number of bits"},
        {"10.0.0.0/8 lb.example.com", "expected an IP address or a block such as 10.0.0.0/8 or 2001:db8::/32"},
        {"10.0.0.256", "expected an IP address or a block such as 10.0.0.0/8 or 2001:db8::/32"},
        {", ,", "expected address blocks such as 10.0.0.0/8 192.0.2.7 2001:db8::/32"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        char text[256], suffix[256];
        snprintf(text, sizeof(text), PREAMBLE "[server]\ntrusted_proxies = %s\n", bad[i].value);
        snprintf(suffix, sizeof(suffix), ":7: trusted_proxies: %s", bad[i].error);
        expect_load_error(f, text, suffix);
    }
}

/* ---- servers ---- */

static void expect_server(fixture_t *f, const char *value, const char *addr, const char *name)
{
    char text[512];
    snprintf(text, sizeof(text), "[upstream u]\nserver = %s\n", value);
    load_ok(f, text);
    tt_upstream_conf_t *u = find_upstream(&f->c, "u");
    assert_int_equal(u->nservers, 1);
    assert_addr(&u->servers[0].addr, addr);
    if (strcmp(u->servers[0].name, name) != 0)
        fail_msg("server %s: name %s, expected %s", value, u->servers[0].name, name);
}

static void accepts_every_server_form(void **state)
{
    fixture_t *f = *state;
    expect_server(f, "127.0.0.1:8081", "127.0.0.1:8081", "127.0.0.1:8081");
    expect_server(f, "http://127.0.0.1:8081", "127.0.0.1:8081", "127.0.0.1:8081");
    expect_server(f, "http://127.0.0.1:8081/", "127.0.0.1:8081", "127.0.0.1:8081");
    /* no port: the http default */
    expect_server(f, "http://127.0.0.1", "127.0.0.1:80", "127.0.0.1:80");
    expect_server(f, "http://127.0.0.1/", "127.0.0.1:80", "127.0.0.1:80");
    expect_server(f, "10.1.2.3", "10.1.2.3:80", "10.1.2.3:80");
    /* IPv6 */
    expect_server(f, "[::1]:8081", "[::1]:8081", "[::1]:8081");
    expect_server(f, "http://[::1]:8081/", "[::1]:8081", "[::1]:8081");
    expect_server(f, "http://[::1]", "[::1]:80", "[::1]:80");
    expect_server(f, "[2001:db8::7]", "[2001:db8::7]:80", "[2001:db8::7]:80");
    /* port 0 and 65535 are ports */
    expect_server(f, "127.0.0.1:65535", "127.0.0.1:65535", "127.0.0.1:65535");
}

/* https:// servers: port 443 by default, the host name kept for SNI and certificate checks (not for IPs). */
static void reads_https_servers(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_int_equal(tt_conf_cli_proxy(c, "https://localhost", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_cli_route(c, "/a/=https://127.0.0.1:8443", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nupstreams, 2);
    assert_true(c->upstreams[0].servers[0].tls);
    assert_int_equal(tt_addr_port(&c->upstreams[0].servers[0].addr), 443);
    assert_string_equal(c->upstreams[0].servers[0].host, "localhost");
    assert_true(c->upstreams[1].servers[0].tls);
    assert_null(c->upstreams[1].servers[0].host);
    assert_true(c->upstreams[0].tls_verify);
}

static void refuses_bad_servers(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *value, *error;
    } bad[] = {
        {"ftp://127.0.0.1:21", "only http://, https:// and h2c:// upstreams are supported"},
        {"unix:///run/app.sock", "only http://, https:// and h2c:// upstreams are supported"},
        {"https://127.0.0.1:8443/api", "an upstream is HOST:PORT, without a path"},
        {"http://127.0.0.1:8081/api", "an upstream is HOST:PORT, without a path"},
        {"http://127.0.0.1:8081/api/", "an upstream is HOST:PORT, without a path"},
        {"http://127.0.0.1//", "an upstream is HOST:PORT, without a path"},
        {"127.0.0.1:8081/x", "an upstream is HOST:PORT, without a path"},
        {"127.0.0.1:65536", "port must be a number from 0 to 65535"},
        {"127.0.0.1:http", "port must be a number from 0 to 65535"},
        {"127.0.0.1:", "port must be a number from 0 to 65535"},
        {"http://127.0.0.1:-1", "port must be a number from 0 to 65535"},
        {"[::1:8081", "expected [IPV6]:PORT"},
        {"[::g]:8081", "not an IPv6 address"},
        {"[127.0.0.1]:80", "not an IPv6 address"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        char text[512], suffix[256];
        snprintf(text, sizeof(text), PREAMBLE "[upstream u]\nserver = %s\n", bad[i].value);
        snprintf(suffix, sizeof(suffix), ":7: server: %s", bad[i].error);
        expect_load_error(f, text, suffix);
    }
}

/* An empty server value names no server: it must not become 0.0.0.0:80. */
static void refuses_an_empty_server(void **state)
{
    fixture_t *f = *state;
    static const char *const empty[] = {"", "http://", "http:///"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(empty); i++) {
        char text[256];
        snprintf(text, sizeof(text), PREAMBLE "[upstream u]\nserver = %s\n", empty[i]);
        int r = load(f, text);
        char want[128];
        snprintf(want, sizeof(want), "%s:7: server: ", f->path);
        if (r != -1 || strncmp(f->err, want, strlen(want)) != 0) {
            tt_upstream_conf_t *u = r == 0 && f->c.nupstreams == 1 ? &f->c.upstreams[0] : NULL;
            char addr[TT_ADDR_STRLEN] = "-";
            if (u && u->nservers) tt_addr_format(&u->servers[0].addr, addr, sizeof(addr));
            fail_msg("server = \"%s\": loaded %d (\"%s\", server %s), expected \"%s...\"", empty[i], r, f->err, addr,
                     want);
        }
    }
}

static void allows_64_servers_and_refuses_the_65th(void **state)
{
    fixture_t *f = *state;
    char *text = malloc(65 * 40 + 64);
    assert_non_null(text);
    size_t n = (size_t)snprintf(text, 64, "[upstream many]\n");
    for (int i = 0; i < 64; i++) n += (size_t)snprintf(text + n, 40, "server = 127.0.0.1:%d\n", 10000 + i);
    load_ok(f, text);
    finish_ok(f);
    tt_upstream_conf_t *u = find_upstream(&f->c, "many");
    assert_int_equal(u->nservers, 64);
    assert_addr(&u->servers[63].addr, "127.0.0.1:10063");
    /* the 65th, on line 66 */
    snprintf(text + n, 40, "server = 127.0.0.1:20000\n");
    expect_load_error(f, text, ":66: server: at most 64 servers per upstream");
    free(text);
}

/* Issue 13: a second [upstream a] used to merge into the first (last key wins): now an error. */
static void refuses_a_repeated_upstream_section(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f,
                      "[upstream a]\nserver = 127.0.0.1:1\n[upstream b]\nserver = 127.0.0.1:2\n[upstream a]\n"
                      "server = 127.0.0.1:3\nmax_idle = 9\n",
                      ":5: [upstream a]: duplicate section (first on line 1)");
    expect_load_error(f, "[route /a]\nroot = /tmp\n[route /b]\nroot = /tmp\n[route /a]\nroot = /srv\n",
                      ":5: [route /a]: duplicate section (first on line 1)");
}

static void refuses_an_upstream_key_set_twice(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, "[upstream a]\nserver = 127.0.0.1:1\nmax_idle = 9\nserver = 127.0.0.1:2\nmax_idle = 8\n",
                      ":5: max_idle: set twice in [upstream a] (first on line 3)");
}

static void refuses_an_upstream_without_a_server_at_finish(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream empty]\nmax_idle = 3\n");
    expect_finish_error(f, ": [upstream empty] has no server");
}

static void refuses_a_backoff_longer_than_its_maximum_at_finish(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\nfail_backoff = 1m\nfail_backoff_max = 30s\n");
    expect_finish_error(f, ": [upstream u] fail_backoff is longer than fail_backoff_max");
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\nfail_backoff = 30s\nfail_backoff_max = 30s\n");
    finish_ok(f);
}

static void refuses_a_margin_floor_above_hint_margin_at_finish(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\nmargin_floor = 2s\n");
    expect_finish_error(f, ": [upstream u] margin_floor is longer than hint_margin (the largest margin)");
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\nmargin_floor = 1s\nhint_margin = 1s\n");
    finish_ok(f);
}

static void refuses_an_upstream_section_without_a_name(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[upstream ]\nserver = 127.0.0.1:1\n", ":6: [upstream ]: unknown section");
    expect_load_error(f, PREAMBLE "[upstream]\nserver = 127.0.0.1:1\n", ":6: [upstream]: unknown section");
    expect_load_error(f, PREAMBLE "[upstreams x]\nserver = 127.0.0.1:1\n", ":6: [upstreams x]: unknown section");
}

/* A line longer than the INI reader's buffer is still one line: its value is read whole or the line is
 * refused with its own number, never cut in two with the tail read as another line or a continuation. */
static void reads_a_long_line_as_one_line(void **state)
{
    fixture_t *f = *state;
    char host[301], text[600];
    memset(host, 'h', 300);
    host[300] = '\0';
    /* the tail after the cut starts with a space: it would continue the value */
    memcpy(host + 192, " server = 127.0.0.1:2", 21);
    snprintf(text, sizeof(text), "[upstream u]\nhost = %s\nserver = 127.0.0.1:1\n", host);
    int r = load(f, text);
    char want[128];
    snprintf(want, sizeof(want), "%s:2: host: ", f->path);
    if (r == 0) {
        tt_upstream_conf_t *u = find_upstream(&f->c, "u");
        if (u->host == NULL || strcmp(u->host, host) != 0 || u->nservers != 1)
            fail_msg("a 307-byte line: host \"%s\" and %zu server(s)", u->host ? u->host : "(null)", u->nservers);
    } else if (strncmp(f->err, want, strlen(want)) != 0) {
        fail_msg("a 307-byte line on line 2: \"%s\", expected \"%s...\"", f->err, want);
    }
    /* a long path: read whole, or refused on its own line */
    char root[301];
    memset(root, 'a', 300);
    root[0] = '/';
    root[300] = '\0';
    snprintf(text, sizeof(text), "[route /x]\nroot = %s\n", root);
    r = load(f, text);
    snprintf(want, sizeof(want), "%s:2: root: ", f->path);
    if (r == 0) {
        tt_conf_route_t *rt = find_route(&f->c, "/x");
        if (rt->root == NULL || strcmp(rt->root, root) != 0)
            fail_msg("a 307-byte root: read %zu bytes", rt->root ? strlen(rt->root) : 0);
    } else if (strncmp(f->err, want, strlen(want)) != 0) {
        fail_msg("a 307-byte line on line 2: \"%s\", expected \"%s...\"", f->err, want);
    }
}

/* ---- tcp_keepalive on upstreams ---- */

static void derives_tcp_keepalive_after_finish_when_auto(void **state)
{
    fixture_t *f = *state;
    /* auto, then an idle_timeout below it: the derivation uses the final idle_timeout */
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\ntcp_keepalive = auto\nidle_timeout = 8s\n");
    finish_ok(f);
    tt_tcp_keepalive_t *ka = &find_upstream(&f->c, "u")->pool.tcp_keepalive;
    assert_true(ka->enabled);
    assert_int_equal(ka->idle_s, 2);
    assert_int_equal(ka->interval_s, 1);
    assert_int_equal(ka->count, 3);
    /* auto written out, after the idle_timeout it derives from */
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\nidle_timeout = 1h\ntcp_keepalive = auto\n");
    finish_ok(f);
    ka = &find_upstream(&f->c, "u")->pool.tcp_keepalive;
    assert_true(ka->enabled);
    assert_int_equal(ka->idle_s, 300);
    assert_int_equal(ka->interval_s, 75);
    assert_int_equal(ka->count, 3);
}

static void keeps_an_explicit_tcp_keepalive(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\ntcp_keepalive = off\n");
    finish_ok(f);
    assert_false(find_upstream(&f->c, "u")->pool.tcp_keepalive.enabled);
    load_ok(f, "[upstream u]\nserver = 127.0.0.1:1\ntcp_keepalive = 120s:7s:9\nidle_timeout = 4s\n");
    finish_ok(f);
    tt_tcp_keepalive_t *ka = &find_upstream(&f->c, "u")->pool.tcp_keepalive;
    assert_true(ka->enabled);
    assert_int_equal(ka->idle_s, 120);
    assert_int_equal(ka->interval_s, 7);
    assert_int_equal(ka->count, 9);
    /* each upstream its own */
    load_ok(f, "[upstream a]\nserver = 127.0.0.1:1\ntcp_keepalive = off\n[upstream b]\nserver = 127.0.0.1:2\n"
               "idle_timeout = 20s\n");
    finish_ok(f);
    assert_false(find_upstream(&f->c, "a")->pool.tcp_keepalive.enabled);
    assert_true(find_upstream(&f->c, "b")->pool.tcp_keepalive.enabled);
    assert_int_equal(find_upstream(&f->c, "b")->pool.tcp_keepalive.idle_s, 5);
}

/* ---- [route PREFIX] ---- */

static void reads_proxy_and_static_routes(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[route /api/]\nupstream = app\n"
               "[upstream app]\nserver = 127.0.0.1:9000\n"
               "[route /files]\nroot = /srv/files\nindex = home.html\n"
               "[route /]\nroot = /srv/www\n");
    finish_ok(f);
    assert_int_equal(f->c.nroutes, 3);
    tt_conf_route_t *api = find_route(&f->c, "/api/"), *files = find_route(&f->c, "/files"),
                    *root = find_route(&f->c, "/");
    assert_string_equal(api->upstream, "app");
    assert_null(api->root);
    assert_null(files->upstream);
    assert_string_equal(files->root, "/srv/files");
    assert_string_equal(files->index, "home.html");
    assert_string_equal(root->root, "/srv/www");
    assert_null(root->index);
}

static void needs_exactly_one_of_upstream_and_root(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[upstream app]\nserver = 127.0.0.1:9000\n[route /x]\nupstream = app\nroot = /srv\n");
    expect_finish_error(f, ": [route /x] needs exactly one of upstream = NAME or root = DIR");
    load_ok(f, "[route /x]\nindex = a.html\n");
    expect_finish_error(f, ": [route /x] needs exactly one of upstream = NAME or root = DIR");
}

/* A [route] header with no keys at all is a route with neither upstream nor root. */
static void refuses_an_empty_route_section(void **state)
{
    fixture_t *f = *state;
    load_ok(f, "[route /x]\n[upstream app]\nserver = 127.0.0.1:9000\n");
    expect_finish_error(f, ": [route /x] needs exactly one of upstream = NAME or root = DIR");
}

static void refuses_a_route_to_an_unknown_upstream_at_finish(void **state)
{
    fixture_t *f = *state;
    /* the file loads: the upstream could come later */
    load_ok(f, "[upstream app]\nserver = 127.0.0.1:9000\n[route /x]\nupstream = nope\n");
    expect_finish_error(f, ":4: upstream: no [upstream nope] section (in [route /x])");
    /* names are compared exactly; the line is the `upstream` key's, wherever it is in its section */
    load_ok(f, "[upstream app]\nserver = 127.0.0.1:9000\n[route /x]\n; comment\nindex = i.html\nupstream = App\n");
    expect_finish_error(f, ":6: upstream: no [upstream App] section (in [route /x])");
}

static void reports_bad_route_lines_with_their_line(void **state)
{
    fixture_t *f = *state;
    expect_load_error(f, PREAMBLE "[route x]\nupstream = app\n", ":6: [route x]: unknown section");
    expect_load_error(f, PREAMBLE "[route]\nupstream = app\n", ":6: [route]: unknown section");
    expect_load_error(f, PREAMBLE "[route /x]\nupstream =\n", ":7: upstream: must not be empty");
    expect_load_error(f, PREAMBLE "[route /x]\nroot =\n", ":7: root: must not be empty");
    expect_load_error(f, PREAMBLE "[route /x]\nserver = 127.0.0.1:1\n", ":7: server: unknown key");
    expect_load_error(f, PREAMBLE "[route /x]\nidle_timeout = 5s\n", ":7: idle_timeout: unknown key");
}

/* ---- --proxy and --route ---- */

static void proxies_every_path_with_the_proxy_flag(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nupstreams, 1);
    assert_int_equal(c->upstreams[0].nservers, 1);
    assert_addr(&c->upstreams[0].servers[0].addr, "127.0.0.1:9000");
    assert_int_equal(c->nroutes, 1);
    tt_conf_route_t *r = find_route(c, "/");
    assert_non_null(r->upstream);
    assert_string_equal(r->upstream, c->upstreams[0].name);
    assert_null(r->root);
    f->err[0] = '\0';
    assert_int_equal(tt_conf_finish(c, f->err, sizeof(f->err)), 0);
    /* the upstream has the [upstream] defaults, tcp_keepalive auto included */
    assert_int_equal(c->upstreams[0].pool.max_idle, 128);
    assert_true(c->upstreams[0].pool.tcp_keepalive.enabled);
    assert_int_equal(c->upstreams[0].pool.tcp_keepalive.idle_s, 15);
}

static void shares_one_upstream_for_the_same_url(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_cli_route(c, "/api/=http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(tt_conf_cli_route(c, "/v2=http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nupstreams, 1);
    assert_int_equal(c->upstreams[0].nservers, 1);
    assert_int_equal(c->nroutes, 3);
    assert_string_equal(find_route(c, "/api/")->upstream, c->upstreams[0].name);
    assert_string_equal(find_route(c, "/v2")->upstream, c->upstreams[0].name);
    /* another URL, another upstream */
    assert_int_equal(tt_conf_cli_route(c, "/other=http://127.0.0.1:9001", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nupstreams, 2);
    assert_string_not_equal(find_route(c, "/other")->upstream, find_route(c, "/api/")->upstream);
    assert_int_equal(tt_conf_finish(c, f->err, sizeof(f->err)), 0);
}

static void lets_the_proxy_flag_claim_the_root_route(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[route /]\nroot = /srv/www\n[route /files]\nroot = /srv/files\n");
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nroutes, 2);
    tt_conf_route_t *r = find_route(c, "/");
    assert_non_null(r->upstream);
    assert_null(r->root);
    assert_string_equal(find_route(c, "/files")->root, "/srv/files");
    finish_ok(f);
    /* a later --proxy takes "/" over again */
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9001", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nroutes, 2);
    tt_upstream_conf_t *u = find_upstream(c, find_route(c, "/")->upstream);
    assert_addr(&u->servers[0].addr, "127.0.0.1:9001");
}

static void lets_the_route_flag_replace_a_files_route(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[route /api]\nroot = /srv/api\n");
    assert_int_equal(tt_conf_cli_route(c, "/api=http://127.0.0.1:9000/", f->err, sizeof(f->err)), 0);
    assert_int_equal(c->nroutes, 1);
    tt_conf_route_t *r = find_route(c, "/api");
    assert_null(r->root);
    tt_upstream_conf_t *u = find_upstream(c, r->upstream);
    assert_addr(&u->servers[0].addr, "127.0.0.1:9000");
    finish_ok(f);
}

/* The URL of --proxy is where requests go, even when a [upstream] section happens to have its name. */
static void proxies_to_the_url_even_when_a_section_has_its_name(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    load_ok(f, "[upstream 127.0.0.1:9000]\nserver = 10.0.0.1:80\n");
    assert_int_equal(tt_conf_cli_proxy(c, "http://127.0.0.1:9000", f->err, sizeof(f->err)), 0);
    finish_ok(f);
    tt_upstream_conf_t *u = find_upstream(c, find_route(c, "/")->upstream);
    char got[TT_ADDR_STRLEN];
    tt_addr_format(&u->servers[0].addr, got, sizeof(got));
    if (u->nservers != 1 || strcmp(got, "127.0.0.1:9000") != 0)
        fail_msg("--proxy http://127.0.0.1:9000 goes to [upstream %s] with %zu server(s), the first %s", u->name,
                 u->nservers, got);
}

static void refuses_bad_proxy_urls(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    static const struct {
        const char *url, *error;
    } bad[] = {
        {"ftp://127.0.0.1:9000",
         "--proxy ftp://127.0.0.1:9000: only http://, https:// and h2c:// upstreams are supported"},
        {"http://127.0.0.1:9000/api", "--proxy http://127.0.0.1:9000/api: an upstream is HOST:PORT, without a path"},
        {"http://127.0.0.1:99999", "--proxy http://127.0.0.1:99999: port must be a number from 0 to 65535"},
        {"http://[::1:80", "--proxy http://[::1:80: expected [IPV6]:PORT"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        f->err[0] = '\0';
        assert_int_equal(tt_conf_cli_proxy(c, bad[i].url, f->err, sizeof(f->err)), -1);
        assert_string_equal(f->err, bad[i].error);
    }
}

static void refuses_bad_route_specs(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    static const char usage[] = "expected PREFIX=http://HOST:PORT, e.g. /api/=http://127.0.0.1:9000";
    static const char *const malformed[] = {"api=http://127.0.0.1:9000", "/api", "/api=", "", "=http://127.0.0.1:1"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(malformed); i++) {
        char want[256];
        snprintf(want, sizeof(want), "--route %s: %s", malformed[i], usage);
        f->err[0] = '\0';
        assert_int_equal(tt_conf_cli_route(c, malformed[i], f->err, sizeof(f->err)), -1);
        assert_string_equal(f->err, want);
    }
    assert_int_equal(tt_conf_cli_route(c, "/api=ftp://127.0.0.1:1", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err,
                        "--route /api=ftp://127.0.0.1:1: only http://, https:// and h2c:// upstreams are supported");
    assert_int_equal(tt_conf_cli_route(c, "/api=http://127.0.0.1:1/x", f->err, sizeof(f->err)), -1);
    assert_string_equal(f->err, "--route /api=http://127.0.0.1:1/x: an upstream is HOST:PORT, without a path");
    assert_int_equal(c->nroutes, 0);
}

/* A refused flag changes nothing: the config finishes as if it had not been given. */
static void changes_nothing_for_a_refused_flag(void **state)
{
    fixture_t *f = *state;
    tt_conf_t *c = &f->c;
    assert_int_equal(tt_conf_cli_proxy(c, "ftp://127.0.0.1:9000", f->err, sizeof(f->err)), -1);
    assert_int_equal(tt_conf_cli_route(c, "/a=http://127.0.0.1:1/x", f->err, sizeof(f->err)), -1);
    assert_int_equal(c->nroutes, 0);
    assert_int_equal(c->nupstreams, 0);
    f->err[0] = '\0';
    int r = tt_conf_finish(c, f->err, sizeof(f->err));
    if (r != 0) fail_msg("finish after refused flags: %s", f->err);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(fills_an_upstream_with_the_defaults),
        T(reads_every_upstream_key),
        T(reports_a_bad_value_of_every_upstream_key),
        T(reads_trusted_proxies_for_every_upstream),
        T(refuses_bad_trusted_proxies),
        T(accepts_every_server_form),
        T(reads_https_servers),
        T(refuses_bad_servers),
        T(refuses_an_empty_server),
        T(allows_64_servers_and_refuses_the_65th),
        T(refuses_a_repeated_upstream_section),
        T(refuses_an_upstream_key_set_twice),
        T(refuses_an_upstream_without_a_server_at_finish),
        T(refuses_a_backoff_longer_than_its_maximum_at_finish),
        T(refuses_a_margin_floor_above_hint_margin_at_finish),
        T(refuses_an_upstream_section_without_a_name),
        T(reads_a_long_line_as_one_line),
        T(derives_tcp_keepalive_after_finish_when_auto),
        T(keeps_an_explicit_tcp_keepalive),
        T(reads_proxy_and_static_routes),
        T(needs_exactly_one_of_upstream_and_root),
        T(refuses_an_empty_route_section),
        T(refuses_a_route_to_an_unknown_upstream_at_finish),
        T(reports_bad_route_lines_with_their_line),
        T(proxies_every_path_with_the_proxy_flag),
        T(shares_one_upstream_for_the_same_url),
        T(lets_the_proxy_flag_claim_the_root_route),
        T(lets_the_route_flag_replace_a_files_route),
        T(proxies_to_the_url_even_when_a_section_has_its_name),
        T(refuses_bad_proxy_urls),
        T(refuses_bad_route_specs),
        T(changes_nothing_for_a_refused_flag),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
