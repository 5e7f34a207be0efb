/* serve.c -- `tether serve`: flags and config file to a running server; signals; graceful drain */
#include "cmd/cmd.h"
#include "conf/conf.h"
#include "core/log.h"
#include "handlers/proxy.h"
#include "handlers/static.h"
#include "handlers/status.h"
#include "http/accesslog.h"
#include "net/sock.h"
#include "net/tls.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const char serve_usage[] =
    "usage: tether serve [options]\n"
    "\n"
    "Serves static files and reverse-proxies to upstreams (pooled connections, replay-safe keep-alive) over\n"
    "HTTP/1.1 and HTTP/2, in clear text and over TLS (h2 or http/1.1 by ALPN). Flags override the config\n"
    "file. DUR takes ms, s, m or h (a bare number is seconds).\n"
    "\n"
    "example:\n"
    "  tether serve --root /srv/www --route /api/=http://127.0.0.1:3000 --listen 0.0.0.0:8080 \\\n"
    "               --tls-listen 0.0.0.0:8443 --tls-cert fullchain.pem --tls-key key.pem\n"
    "\n"
    "signals: SIGTERM, SIGINT drain and exit; SIGHUP reloads the TLS certificates and reopens the logs;\n"
    "SIGUSR1 reopens the logs (after logrotate moved them).\n"
    "\n"
    "  --config FILE              INI config file (docs/config.md)\n"
    "  -t, --check                check the configuration (syntax, values, static roots, TLS files), open\n"
    "                             no socket and no log, print every error; exit 0 or 2\n"
    "  --root DIR                 serve files from DIR at /\n"
    "  --proxy http://HOST:PORT   proxy every path to this upstream (pooled, race-free keep-alive)\n"
    "  --route PREFIX=http://HOST:PORT   proxy paths under PREFIX; repeatable; longest prefix wins\n"
    "  --listen ADDR:PORT         listen address, repeatable; replaces the file's listeners [127.0.0.1:8080]\n"
    "  --tls-listen ADDR:PORT     TLS listen address (h2 and http/1.1 by ALPN), repeatable, beside --listen\n"
    "  --tls-cert FILE            certificate chain (PEM) of the TLS listeners\n"
    "  --tls-key FILE             its private key (PEM)\n"
    "  --workers N                worker threads [one per CPU]\n"
    "  --idle-timeout DUR         idle timeout between requests; 0 turns keep-alive off [5s]\n"
    "  --max-requests N           requests per connection; 0 = unlimited [1000]\n"
    "  --max-lifetime DUR         connection lifetime, applied between requests; 0 = unlimited [1h]\n"
    "  --header-timeout DUR       first byte of a request head to its end [10s]\n"
    "  --body-timeout DUR         between reads of request content [30s]\n"
    "  --send-timeout DUR         between writes the client accepts [30s]\n"
    "  --max-connections N        per worker; idle connections are evicted near it [10000]\n"
    "  --keepalive-header on|off  send Keep-Alive: timeout=T, max=M [on]\n"
    "  --tcp-keepalive IDLE:INTVL:CNT|off   kernel TCP keepalive probes, e.g. 900s:60s:5 [off]\n"
    "  --drain-timeout DUR        hard deadline of a graceful drain (SIGTERM, SIGINT) [10s]\n"
    "  --access-log FILE|-|off    access log [- (stdout)]\n"
    "  --metrics ADDR:PORT|off    admin listener for /metrics and /status [off]\n"
    "  --log-level LEVEL          error, warn, info or debug [info]\n"
    "  -h, --help                 this text\n";

enum {
    OPT_CONFIG = 256,
    OPT_ROOT,
    OPT_LISTEN,
    OPT_WORKERS,
    OPT_IDLE,
    OPT_MAXREQ,
    OPT_LIFETIME,
    OPT_HEADER,
    OPT_BODY,
    OPT_SEND,
    OPT_MAXCONN,
    OPT_KAHEADER,
    OPT_TCPKA,
    OPT_DRAIN,
    OPT_ACCESSLOG,
    OPT_METRICS,
    OPT_LOGLEVEL,
    OPT_PROXY,
    OPT_ROUTE,
    OPT_TLS_LISTEN,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"root", required_argument, NULL, OPT_ROOT},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"max-requests", required_argument, NULL, OPT_MAXREQ},
    {"max-lifetime", required_argument, NULL, OPT_LIFETIME},
    {"header-timeout", required_argument, NULL, OPT_HEADER},
    {"body-timeout", required_argument, NULL, OPT_BODY},
    {"send-timeout", required_argument, NULL, OPT_SEND},
    {"max-connections", required_argument, NULL, OPT_MAXCONN},
    {"keepalive-header", required_argument, NULL, OPT_KAHEADER},
    {"tcp-keepalive", required_argument, NULL, OPT_TCPKA},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN},
    {"access-log", required_argument, NULL, OPT_ACCESSLOG},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"log-level", required_argument, NULL, OPT_LOGLEVEL},
    {"proxy", required_argument, NULL, OPT_PROXY},
    {"route", required_argument, NULL, OPT_ROUTE},
    {"tls-listen", required_argument, NULL, OPT_TLS_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"check", no_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Flag -> config key, for the flags that simply set one key. */
static const struct {
    int opt;
    const char *flag;
    const char *key;
} flag_keys[] = {
    {OPT_ROOT, "--root", "root"},
    {OPT_WORKERS, "--workers", "workers"},
    {OPT_IDLE, "--idle-timeout", "idle_timeout"},
    {OPT_MAXREQ, "--max-requests", "max_requests"},
    {OPT_LIFETIME, "--max-lifetime", "max_lifetime"},
    {OPT_HEADER, "--header-timeout", "header_timeout"},
    {OPT_BODY, "--body-timeout", "body_timeout"},
    {OPT_SEND, "--send-timeout", "send_timeout"},
    {OPT_MAXCONN, "--max-connections", "max_connections"},
    {OPT_KAHEADER, "--keepalive-header", "keepalive_header"},
    {OPT_TCPKA, "--tcp-keepalive", "tcp_keepalive"},
    {OPT_DRAIN, "--drain-timeout", "drain_timeout"},
    {OPT_ACCESSLOG, "--access-log", "access_log"},
    {OPT_METRICS, "--metrics", "listen"},
    {OPT_LOGLEVEL, "--log-level", "level"},
};

static uint32_t cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return (uint32_t)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

/* Prints each line of `err` (errors collected by the config loader) as "tether: LINE". */
static void print_errors(const char *err)
{
    for (const char *p = err; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(stderr, "tether: %.*s\n", (int)n, p);
        p += n + (nl != NULL);
    }
}

/* Parses argv into `c`: the config file first, then every flag over it; `*check` for -t/--check. Exit status
 * 0 to go on, else 2. */
static int parse_args(int argc, char **argv, tt_conf_t *c, bool *check)
{
    char err[4096];
    const char *config = NULL;
    int opt;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "ht", long_opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(serve_usage, stdout);
            exit(0);
        }
        if (opt == '?') return 2;
        if (opt == 't') *check = true;
        if (opt == OPT_CONFIG) config = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "tether serve: unexpected argument '%s' (see tether serve --help)\n", argv[optind]);
        return 2;
    }
    if (config != NULL && tt_conf_load(c, config, err, sizeof(err)) != 0) {
        print_errors(err);
        return 2;
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "ht", long_opts, NULL)) != -1) {
        int r = 0;
        if (opt == OPT_LISTEN) {
            r = tt_conf_cli_listen(c, optarg, err, sizeof(err));
        } else if (opt == OPT_PROXY) {
            r = tt_conf_cli_proxy(c, optarg, err, sizeof(err));
        } else if (opt == OPT_ROUTE) {
            r = tt_conf_cli_route(c, optarg, err, sizeof(err));
        } else if (opt == OPT_TLS_LISTEN) {
            r = tt_conf_cli_tls_listen(c, optarg, err, sizeof(err));
        } else if (opt == OPT_TLS_CERT || opt == OPT_TLS_KEY) {
            r = tt_conf_cli_tls_file(c, opt == OPT_TLS_CERT, optarg, err, sizeof(err));
        } else {
            for (size_t i = 0; i < TT_ARRAY_SIZE(flag_keys); i++)
                if (flag_keys[i].opt == opt)
                    r = tt_conf_override(c, flag_keys[i].flag, flag_keys[i].key, optarg, err, sizeof(err));
        }
        if (r != 0) {
            fprintf(stderr, "tether: %s\n", err);
            return 2;
        }
    }
    if (tt_conf_finish(c, err, sizeof(err)) != 0 || tt_conf_check_files(c, err, sizeof(err)) != 0) {
        print_errors(err);
        return 2;
    }
    return 0;
}

/* Opens the access log file `path` once, creating it, and closes it again: the workers open their own
 * descriptors. 0 or -errno. */
static int touch_log(const char *path)
{
    int fd = tt_log_open_append(path);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

/* Refuses addresses another process already listens on: with SO_REUSEPORT, a second server would silently
 * share (split) the connections. Port 0 is always free. Returns 0, or 2 after saying which address. */
static int refuse_taken_addresses(const tt_conf_t *c)
{
    if (c->reuse_port_with_others) return 0;
    for (size_t i = 0; i <= c->nlistens; i++) {
        const tt_addr_t *addrs = i < c->nlistens ? c->listens[i].addrs : &c->metrics_addr;
        size_t n = i < c->nlistens ? c->listens[i].naddrs : c->metrics_on ? 1 : 0;
        for (size_t j = 0; j < n; j++) {
            if (tt_addr_port(&addrs[j]) == 0 || tt_sock_addr_in_use(&addrs[j]) != 1) continue;
            char as[TT_ADDR_STRLEN];
            tt_addr_format(&addrs[j], as, sizeof(as));
            fprintf(stderr,
                    "tether: %s: another process already listens on this address (two servers would split its "
                    "connections): stop it, or set [server] reuse_port_with_others = on to share the port\n",
                    as);
            return 2;
        }
    }
    return 0;
}

typedef struct signal_watch {
    tt_io_t io;
    tt_accesslog_file_t *alog; /* NULL: the access log is not a file */
    tt_tls_source_t **tls;     /* per listen group, NULL for plain ones */
    size_t ntls;
    tt_io_t done; /* the main server's worker-finished eventfd */
    uint64_t finished;
    tt_server_t *main;
    tt_server_t *admin;
    bool draining;
} signal_watch_t;

/* The admin listener (metrics) keeps serving while the workers drain, and stops when the last is done. */
static void done_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    signal_watch_t *sw = tt_container_of(io, signal_watch_t, done);
    uint64_t n;
    if (read(io->fd, &n, sizeof(n)) == (ssize_t)sizeof(n)) sw->finished += n;
    if (sw->finished >= tt_server_workers(sw->main)) tt_server_stop_inline(sw->admin);
}

/* SIGUSR1 and SIGHUP: the access log file is created again now and each worker switches to it at its next
 * line; the error log switches at once. A file that cannot be opened leaves the old one in use. */
static void reopen_logs(signal_watch_t *sw, const char *sig)
{
    int a = 0;
    if (sw->alog != NULL) {
        tt_accesslog_file_reopen(sw->alog);
        if ((a = touch_log(sw->alog->path)) != 0) /* the new file exists once the signal is handled */
            tt_log(TT_LOG_ERROR, "%s: access_log %s: %s", sig, sw->alog->path, strerror(-a));
    }
    int r = tt_log_reopen();
    if (r != 0) tt_log(TT_LOG_ERROR, "%s: error_log not reopened: %s", sig, strerror(-r));
    if (a == 0 && r == 0) tt_log(TT_LOG_INFO, "%s: reopened the logs", sig);
}

static void signal_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    signal_watch_t *sw = tt_container_of(io, signal_watch_t, io);
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR1) {
            reopen_logs(sw, "SIGUSR1");
            continue;
        }
        if (si.ssi_signo == SIGHUP) {
            reopen_logs(sw, "SIGHUP");
            /* New connections get the new certificates; open ones keep theirs; a bad file changes nothing. */
            size_t ok = 0, n = 0;
            for (size_t i = 0; i < sw->ntls; i++) {
                if (sw->tls[i] == NULL) continue;
                char err[512];
                n++;
                if (tt_tls_source_reload(sw->tls[i], err, sizeof(err)) == 0)
                    ok++;
                else
                    tt_log(TT_LOG_ERROR, "SIGHUP: certificates not reloaded, the old ones stay in use: %s", err);
            }
            tt_log(TT_LOG_INFO, "SIGHUP: reloaded the certificates of %zu of %zu TLS listener groups", ok, n);
            continue;
        }
        if (!sw->draining) {
            tt_log(TT_LOG_INFO, "%s: draining (stop accepting, finish in-flight responses)",
                   si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
            sw->draining = true;
            tt_server_drain(sw->main);
        }
    }
}

/* The start-up steps --check leaves out: refuses addresses in use, opens the error log file, creates the access
 * log file. Returns 0, or 2 after saying why. */
static int open_logs_and_check_addresses(const tt_conf_t *c, bool alog_file)
{
    int r = refuse_taken_addresses(c);
    if (r != 0) return r;
    if (strcmp(c->error_log, "stderr") != 0 && (r = tt_log_open_file(c->error_log)) != 0) {
        fprintf(stderr, "tether: error_log %s: %s\n", c->error_log, strerror(-r));
        return 2;
    }
    if (alog_file && (r = touch_log(c->access_log)) != 0) {
        fprintf(stderr, "tether: access_log %s: %s\n", c->access_log, strerror(-r));
        tt_log_close_file();
        return 2;
    }
    return 0;
}

/* Sizes max_connections against the open file limit `nofile` (already raised to the hard limit). Each client
 * connection may hold two descriptors: its socket, and an upstream connection or a file being sent. Besides
 * those: per worker its epoll, eventfd and timer descriptors, access log and one socket per listener (nl + 4),
 * and 64 for the process (stdio, the error log, the signalfd, the admin listener and its connections). A
 * default that does not fit is lowered to what does; a value the user set is kept, with a warning. Says what
 * was chosen at info. */
static void size_connections(tt_conf_t *c, uint32_t workers, size_t nl, long nofile)
{
    if (nofile <= 0 || c->max_connections == 0) return; /* unknown limit, or no limit asked for */
    uint64_t reserved = 64 + (uint64_t)workers * (nl + 4), per_conn = 2 * (uint64_t)workers;
    uint64_t fit = (uint64_t)nofile > reserved ? ((uint64_t)nofile - reserved) / per_conn : 0;
    if (fit >= c->max_connections) {
        tt_log(TT_LOG_INFO, "max_connections %u per worker (open file limit %ld: %u workers x %u x 2 + %llu)",
               c->max_connections, nofile, workers, c->max_connections, (unsigned long long)reserved);
        return;
    }
    if (c->max_connections_line != 0) {
        char where[512] = "--max-connections";
        if (c->max_connections_line > 0) snprintf(where, sizeof(where), "%s:%d", c->path, c->max_connections_line);
        tt_log(TT_LOG_WARN,
               "max_connections %u per worker (%s) does not fit the open file limit %ld: %u workers x %u x 2 "
               "descriptors (client, and upstream or file) + %llu for listeners and logs; at most %llu fit: the "
               "process runs out of file descriptors first",
               c->max_connections, where, nofile, workers, c->max_connections, (unsigned long long)reserved,
               (unsigned long long)fit);
        return;
    }
    c->max_connections = (uint32_t)TT_MAX(fit, 1);
    tt_log(TT_LOG_INFO,
           "max_connections %u per worker, sized to the open file limit %ld: %u workers x %u x 2 descriptors "
           "(client, and upstream or file) + %llu for listeners and logs (set max_connections to choose)",
           c->max_connections, nofile, workers, c->max_connections, (unsigned long long)reserved);
}

/*
 * The [vhost] sections into `router`, in file order; returns the router index of c->vhosts[0]. The default
 * virtual host is the one with default = on, else the routes without a vhost (and [static] root) when there are
 * any, else the first [vhost].
 */
static size_t build_vhosts(tt_router_t *router, const tt_conf_t *c)
{
    size_t base = 0, dflt = 0;
    bool unnamed = c->static_root != NULL;
    for (size_t i = 0; i < c->nroutes; i++) unnamed |= c->routes[i].vhost == NULL;
    for (size_t v = 0; v < c->nvhosts; v++) {
        size_t idx = tt_router_add_vhost(router, c->vhosts[v].name, (const char *const *)c->vhosts[v].names,
                                         c->vhosts[v].nnames);
        if (v == 0) base = idx;
        if (c->vhosts[v].is_default || (v == 0 && !unnamed)) dflt = idx;
    }
    for (size_t v = 0; v < c->nvhosts; v++)
        if (c->vhosts[v].is_default) dflt = base + v;
    if (c->nvhosts) tt_router_set_default(router, dflt);
    return base;
}

/* Frees what tt_cmd_serve() built from the configuration. */
static void free_setup(tt_router_t *router, tt_proxy_registry_t **reg, tt_static_conf_t *static_confs,
                       tt_proxy_conf_t *proxy_confs, tt_listener_conf_t *listeners, tt_tls_source_t **tls, size_t ntls)
{
    tt_router_dispose(router);
    tt_proxy_registry_free(reg);
    free(static_confs);
    free(proxy_confs);
    free(listeners);
    for (size_t i = 0; i < ntls; i++) tt_tls_source_free(&tls[i]);
    free(tls);
}

int tt_cmd_serve(int argc, char **argv)
{
    tt_conf_t c;
    tt_conf_init(&c);
    bool check = false;
    int rc = parse_args(argc, argv, &c, &check);
    if (rc != 0) {
        tt_conf_dispose(&c);
        return rc;
    }
    tt_log_setup((tt_log_level_t)c.log_level, STDERR_FILENO);
    if (c.static_root == NULL && c.nroutes == 0) {
        fprintf(stderr, "tether: nothing to serve: give --root DIR, --proxy URL, --route PREFIX=URL, or a [static]"
                        " root or [route] in the config file\n");
        tt_conf_dispose(&c);
        return 2;
    }
    /* What a start opens besides its listeners, checked before anything else is built (--check opens none). */
    bool alog_file = strcmp(c.access_log, "off") != 0 && strcmp(c.access_log, "-") != 0;
    if (!check && (rc = open_logs_and_check_addresses(&c, alog_file)) != 0) {
        tt_conf_dispose(&c);
        return rc;
    }
    tt_accesslog_file_t afile = {.path = c.access_log}; /* a file access log is opened by each worker */
    long nofile = check ? 0 : tt_sock_raise_nofile();

    /* Signals go to the main thread only, through a signalfd; the workers inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    uint32_t workers = c.workers ? c.workers : cpu_count();
    /* Routes: every [route] (and --proxy/--route), then [static] root at "/" unless a route took it. */
    tt_router_t router = {0};
    char rerr[512];
    tt_proxy_registry_t *reg = tt_proxy_registry_new(c.upstreams, c.nupstreams, workers, rerr, sizeof(rerr));
    if (reg == NULL) {
        fprintf(stderr, "tether: %s\n", rerr);
        return 2;
    }
    tt_static_conf_t *static_confs = tt_calloc(c.nroutes + 1, sizeof(*static_confs));
    tt_proxy_conf_t *proxy_confs = tt_calloc(c.nroutes + 1, sizeof(*proxy_confs));
    bool root_taken = false;
    size_t vhost_base = build_vhosts(&router, &c);
    for (size_t i = 0; i < c.nroutes; i++) {
        tt_conf_route_t *r = &c.routes[i];
        size_t vh = 0;
        for (size_t v = 0; r->vhost != NULL && v < c.nvhosts; v++)
            if (strcmp(c.vhosts[v].name, r->vhost) == 0) vh = vhost_base + v;
        root_taken |= vh == 0 && strcmp(r->prefix, "/") == 0;
        if (r->root != NULL) {
            static_confs[i] = (tt_static_conf_t){.root = r->root, .index = r->index ? r->index : c.static_index};
            tt_router_add_in(&router, vh, r->prefix, &tt_static_ops, &static_confs[i]);
            continue;
        }
        for (size_t u = 0; u < c.nupstreams; u++)
            if (strcmp(c.upstreams[u].name, r->upstream) == 0) proxy_confs[i].up = &c.upstreams[u];
        proxy_confs[i].route = r->prefix;
        proxy_confs[i].reg = reg;
        proxy_confs[i].upgrade = (tt_upgrade_policy_t)r->upgrade;
        proxy_confs[i].tunnel_idle_ms = r->tunnel_idle_timeout_ms;
        proxy_confs[i].rules = &r->rules;
        proxy_confs[i].buffering = r->request_buffering;
        proxy_confs[i].buffer_memory = r->request_buffer_memory;
        proxy_confs[i].temp_dir = r->temp_dir;
        tt_router_add_in(&router, vh, r->prefix, &tt_proxy_ops, &proxy_confs[i]);
    }
    if (c.static_root != NULL && !root_taken) {
        static_confs[c.nroutes] = (tt_static_conf_t){.root = c.static_root, .index = c.static_index};
        tt_router_add(&router, "/", &tt_static_ops, &static_confs[c.nroutes]);
    }

    size_t nl = 0;
    tt_tls_source_t **tls = tt_calloc(c.nlistens, sizeof(*tls));
    for (size_t i = 0; i < c.nlistens; i++) {
        nl += c.listens[i].naddrs;
        if (!c.listens[i].tls_on) continue;
        char err[512];
        tls[i] = tt_tls_source_new(&c.listens[i].tls, err, sizeof(err));
        if (tls[i] == NULL) {
            fprintf(stderr, "tether: TLS: %s\n", err);
            return 2;
        }
    }
    tt_listener_conf_t *listeners = tt_calloc(nl, sizeof(*listeners));
    nl = 0;
    for (size_t i = 0; i < c.nlistens; i++)
        for (size_t j = 0; j < c.listens[i].naddrs; j++)
            listeners[nl++] =
                (tt_listener_conf_t){.addr = c.listens[i].addrs[j], .policy = &c.listens[i].policy, .tls = tls[i]};

    if (check) {
        /* Everything above built what a start would (routes, upstreams, TLS contexts) without opening a socket. */
        fprintf(stderr, "tether: configuration OK%s%s\n", c.path ? ": " : "", c.path ? c.path : "");
        free_setup(&router, &reg, static_confs, proxy_confs, listeners, tls, c.nlistens);
        tt_conf_dispose(&c);
        return 0;
    }
    size_connections(&c, workers, nl, nofile);
    int alog = strcmp(c.access_log, "-") == 0 ? STDOUT_FILENO : -1;
    tt_server_conf_t sc = {
        .workers = workers,
        .max_connections = c.max_connections,
        .drain_timeout_ms = c.drain_timeout_ms,
        .backlog = (int)c.backlog,
        .listeners = listeners,
        .nlisteners = nl,
        .router = &router,
        .access_log_fd = alog,
        .access_log_file = alog_file ? &afile : NULL,
        .name = "tether",
    };
    char err[512];
    tt_server_t *srv = tt_server_new(&sc, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "tether: %s\n", err);
        return 2;
    }

    /* The admin listener (metrics) runs on this thread, beside the signal watch. */
    tt_status_conf_t status_conf = {
        .srv = srv, .metrics_path = c.metrics_path, .extra = tt_proxy_render_metrics, .extra_arg = reg};
    tt_router_t admin_router = {0};
    tt_router_add(&admin_router, "/", &tt_status_ops, &status_conf);
    tt_listener_conf_t admin_listener = {.addr = c.metrics_addr, .policy = &c.defaults};
    tt_server_conf_t ac = {
        .inline_worker = true,
        .workers = 1,
        .max_connections = 1000,
        .drain_timeout_ms = 1000,
        .backlog = 128,
        .listeners = &admin_listener,
        .nlisteners = c.metrics_on ? 1 : 0,
        .router = &admin_router,
        .access_log_fd = -1,
        .name = "admin",
    };
    tt_server_t *admin = tt_server_new(&ac, err, sizeof(err));
    if (admin == NULL) {
        fprintf(stderr, "tether: metrics: %s\n", err);
        tt_server_free(&srv);
        return 2;
    }

    for (size_t i = 0; i < nl; i++) {
        char as[TT_ADDR_STRLEN];
        tt_addr_format(tt_server_bound_addr(srv, i), as, sizeof(as));
        tt_log(TT_LOG_INFO, "listening on %s://%s (workers=%u, idle_timeout=%llums, max_requests=%u)",
               listeners[i].tls ? "https" : "http", as, workers,
               (unsigned long long)listeners[i].policy->ka.idle_timeout_ms, listeners[i].policy->ka.max_requests);
    }
    if (c.metrics_on) {
        char as[TT_ADDR_STRLEN];
        tt_addr_format(tt_server_bound_addr(admin, 0), as, sizeof(as));
        tt_log(TT_LOG_INFO, "metrics on http://%s%s", as, c.metrics_path);
    }

    signal_watch_t sw = {
        .main = srv, .admin = admin, .tls = tls, .ntls = c.nlistens, .alog = alog_file ? &afile : NULL};
    sw.io.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    sw.io.cb = signal_on_io;
    if (sw.io.fd < 0 || tt_io_start(tt_server_loop(admin, 0), &sw.io, TT_EV_READ) != 0)
        tt_fatal("signalfd: %s", strerror(errno));
    sw.done.fd = tt_server_done_fd(srv);
    sw.done.cb = done_on_io;
    tt_io_start(tt_server_loop(admin, 0), &sw.done, TT_EV_READ);

    if ((rc = tt_server_start(srv)) != 0) {
        fprintf(stderr, "tether: starting workers: %s\n", strerror(-rc));
        return 1;
    }
    tt_server_run_inline(admin);
    tt_server_join(srv);
    tt_log(TT_LOG_INFO, "stopped");

    tt_io_stop(tt_server_loop(admin, 0), &sw.io);
    tt_io_stop(tt_server_loop(admin, 0), &sw.done);
    close(sw.io.fd);
    tt_server_free(&admin);
    tt_server_free(&srv);
    tt_router_dispose(&admin_router);
    free_setup(&router, &reg, static_confs, proxy_confs, listeners, tls, c.nlistens);
    tt_log_close_file();
    tt_conf_dispose(&c);
    return 0;
}
