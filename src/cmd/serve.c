/* serve.c -- `tether serve`: flags and config file to a running server; signals; graceful drain */
#include "cmd/cmd.h"
#include "conf/conf.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/privs.h"
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
    "signals: SIGTERM, SIGINT drain and exit. SIGHUP (or `tether reload`) re-reads the whole configuration\n"
    "(the file, then the same flags) and applies it without closing any connection: each one takes the new\n"
    "policy at its next request, listeners are added and removed, upstream pools of the servers that remain\n"
    "keep their idle connections; a configuration with errors is refused (logged with FILE:LINE) and the\n"
    "running one stays. SIGHUP also reloads the TLS certificates and reopens the logs. SIGUSR1 reopens the\n"
    "logs only (after logrotate moved them). [server] pid_file names a file for `tether reload`.\n"
    "\n"
    "  -c, --config FILE          INI config file (docs/config.md)\n"
    "  -t, --check                check the configuration (syntax, values, static roots, TLS files), open\n"
    "                             no socket and no log, print every error; exit 0 or 2\n"
    "  --root DIR                 serve files from DIR at /\n"
    "  --proxy http://HOST:PORT   proxy every path to this upstream (pooled, race-free keep-alive);\n"
    "                             h2c://HOST:PORT speaks HTTP/2 to it (one multiplexed connection)\n"
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
    "  --metrics ADDR:PORT|off    admin listener: /metrics, /status (live page), /status.json [off]\n"
    "  --log-level LEVEL          error, warn, info or debug [info]\n"
    "  --log-format FORMAT        access log: main, combined, json or a template with $variables [main]\n"
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
    OPT_LOGFORMAT,
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
    {"log-format", required_argument, NULL, OPT_LOGFORMAT},
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
    {OPT_LOGFORMAT, "--log-format", "log_format"},
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

/* Logs each line of `err` at error, after `what`. */
static void log_errors(const char *what, const char *err)
{
    for (const char *p = err; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        tt_log(TT_LOG_ERROR, "%s: %.*s", what, (int)n, p);
        p += n + (nl != NULL);
    }
}

/*
 * Parses argv into `c`: the config file first, then every flag over it; `*check` for -t/--check. Exit status 0 to
 * go on, else 2 with the errors in `err` (one per line). A reload runs it again on the same argv (`reload`: no
 * help, no getopt messages; argv was accepted at start-up), so the flags override the new file as they did the old.
 */
static int parse_args(int argc, char **argv, tt_conf_t *c, bool *check, bool reload, char *err, size_t errlen)
{
    const char *config = NULL;
    int opt;
    optind = 0; /* 0: a full re-initialization of getopt (glibc), for a reload's second run */
    opterr = !reload;
    *err = '\0';
    while ((opt = getopt_long(argc, argv, "htc:", long_opts, NULL)) != -1) {
        if (opt == 'h' && !reload) {
            fputs(serve_usage, stdout);
            exit(0);
        }
        if (opt == '?') {
            snprintf(err, errlen, "bad arguments (see tether serve --help)");
            return 2;
        }
        if (opt == 't') *check = true;
        if (opt == OPT_CONFIG || opt == 'c') config = optarg;
    }
    if (optind < argc) {
        snprintf(err, errlen, "serve: unexpected argument '%s' (see tether serve --help)", argv[optind]);
        return 2;
    }
    if (config != NULL && tt_conf_load(c, config, err, errlen) != 0) return 2;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "htc:", long_opts, NULL)) != -1) {
        int r = 0;
        if (opt == OPT_LISTEN) {
            r = tt_conf_cli_listen(c, optarg, err, errlen);
        } else if (opt == OPT_PROXY) {
            r = tt_conf_cli_proxy(c, optarg, err, errlen);
        } else if (opt == OPT_ROUTE) {
            r = tt_conf_cli_route(c, optarg, err, errlen);
        } else if (opt == OPT_TLS_LISTEN) {
            r = tt_conf_cli_tls_listen(c, optarg, err, errlen);
        } else if (opt == OPT_TLS_CERT || opt == OPT_TLS_KEY) {
            r = tt_conf_cli_tls_file(c, opt == OPT_TLS_CERT, optarg, err, errlen);
        } else {
            for (size_t i = 0; i < TT_ARRAY_SIZE(flag_keys); i++)
                if (flag_keys[i].opt == opt)
                    r = tt_conf_override(c, flag_keys[i].flag, flag_keys[i].key, optarg, err, errlen);
        }
        if (r != 0) return 2;
    }
    if (tt_conf_finish(c, err, errlen) != 0 || tt_conf_check_files(c, err, errlen) != 0) return 2;
    if (c->static_root == NULL && c->nroutes == 0) {
        snprintf(err, errlen,
                 "nothing to serve: give --root DIR, --proxy URL, --route PREFIX=URL, or a [static] root or [route] in "
                 "the config file");
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

/* The start-up steps --check leaves out: refuses addresses in use, opens the error log file, creates the access
 * log file. Returns 0, or 2 after saying why. */
static int open_logs_and_check_addresses(const tt_conf_t *c, bool alog_file)
{
    int r = refuse_taken_addresses(c);
    if (r != 0) return r;
    if (tt_log_is_syslog(c->error_log)) {
        tt_log_syslog_t sl;
        const char *why;
        if (tt_log_syslog_parse(c->error_log, &sl, &why) != 0 || (r = tt_log_open_syslog(&sl)) != 0) {
            fprintf(stderr, "tether: error_log %s: %s\n", c->error_log, r ? strerror(-r) : why);
            return 2;
        }
    } else if (strcmp(c->error_log, "stderr") != 0 && (r = tt_log_open_file(c->error_log)) != 0) {
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

/* [server] user, at start-up before anything is opened: looked up into `ids` (tt_conf_check_files() said it
 * exists), and refused when this process cannot become it (only root can switch users). 0, or 2 after saying why. */
static int check_user(const tt_conf_t *c, tt_privs_t *ids)
{
    const char *why, *file = c->path ? c->path : "config";
    if (tt_privs_lookup(c->user, c->group, ids, &why) != 0) { /* the user database changed since the check */
        fprintf(stderr, "tether: %s:%d: user: %s: %s\n", file, c->user_line, c->user, why);
        return 2;
    }
    if (tt_privs_can_drop(ids)) return 0;
    fprintf(stderr,
            "tether: %s:%d: user: tether runs as uid %u, not as root, and cannot switch to user %s (uid %u, gid %u): "
            "start it as root, or as that user\n",
            file, c->user_line, (unsigned)geteuid(), c->user, (unsigned)ids->uid, (unsigned)ids->gid);
    return 2;
}

/* [server] user: once every listener is bound and every log file open, and before any worker starts, becomes
 * that user for good. Log files created as root are given to it first, so that a reopen (SIGUSR1) can open them
 * again, as nginx does; then what the workers will read is checked again as the new user, so that a static root
 * it cannot read is said now rather than found as a 403 on every request. check_user() said it can be done. */
static void drop_privileges(const tt_conf_t *c, const tt_privs_t *ids, bool alog_file)
{
    char err[1024];
    if (geteuid() == 0 && ids->uid != 0) {
        bool elog_file = strcmp(c->error_log, "stderr") != 0 && !tt_log_is_syslog(c->error_log);
        const char *logs[] = {elog_file ? c->error_log : NULL, alog_file ? c->access_log : NULL};
        for (size_t i = 0; i < TT_ARRAY_SIZE(logs); i++)
            if (logs[i] != NULL && chown(logs[i], ids->uid, ids->gid) != 0)
                tt_log(TT_LOG_WARN, "user: cannot give the log file %s to %s: %s (a reopen may fail)", logs[i], c->user,
                       strerror(errno));
    }
    if (tt_privs_drop(ids, err, sizeof(err)) != 0) tt_fatal("%s", err); /* as root, setres[ug]id do not fail */
    tt_log(TT_LOG_INFO, "running as user %s (uid %u, gid %u)", c->user, (unsigned)ids->uid, (unsigned)ids->gid);
    if (tt_conf_check_files(c, err, sizeof(err)) != 0)
        for (char *line = err, *nl; line != NULL && *line != '\0'; line = nl ? nl + 1 : NULL) {
            if ((nl = strchr(line, '\n')) != NULL) *nl = '\0';
            tt_log(TT_LOG_WARN, "as user %s: %s (files are served, and SIGHUP reloads run, as this user)", c->user,
                   line);
        }
}

/*
 * One configuration generation: the parsed configuration and everything built from it (routes, the proxy registry
 * and its pools' settings, TLS sources, listener settings). The server holds it while any connection or request
 * uses it and releases it (serve_gen_release) from whichever thread drops the last use.
 */
typedef struct serve_gen {
    tt_conf_t c;
    tt_router_t router;
    tt_proxy_registry_t *reg;
    tt_static_conf_t *static_confs;
    tt_proxy_conf_t *proxy_confs;
    tt_listener_conf_t *listeners;
    size_t nl;
    tt_tls_source_t **tls; /* per listen group, NULL for plain ones */
} serve_gen_t;

static serve_gen_t *serve_gen_new(void)
{
    serve_gen_t *g = tt_calloc(1, sizeof(*g));
    tt_conf_init(&g->c);
    return g;
}

static void serve_gen_free(serve_gen_t *g)
{
    tt_router_dispose(&g->router);
    tt_proxy_registry_free(&g->reg);
    free(g->static_confs);
    free(g->proxy_confs);
    free(g->listeners);
    for (size_t i = 0; g->tls && i < g->c.nlistens; i++) tt_tls_source_free(&g->tls[i]);
    free(g->tls);
    tt_conf_dispose(&g->c);
    free(g);
}

static void serve_gen_release(void *arg)
{
    serve_gen_free(arg);
}

/* Builds the routes, the proxy registry (adopting `prev`'s pools, see tt_proxy_registry_new), the TLS sources and
 * the listener settings of a finished configuration. 0, or 2 with `err`. */
static int serve_gen_build(serve_gen_t *g, uint32_t workers, tt_proxy_registry_t *prev, char *err, size_t errlen)
{
    tt_conf_t *c = &g->c;
    /* Routes: every [route] (and --proxy/--route), then [static] root at "/" unless a route took it. */
    char rerr[512];
    g->reg = tt_proxy_registry_new(c->upstreams, c->nupstreams, workers, prev, rerr, sizeof(rerr));
    if (g->reg == NULL) {
        snprintf(err, errlen, "%s", rerr);
        return 2;
    }
    g->static_confs = tt_calloc(c->nroutes + 1, sizeof(*g->static_confs));
    g->proxy_confs = tt_calloc(c->nroutes + 1, sizeof(*g->proxy_confs));
    bool root_taken = false;
    size_t vhost_base = build_vhosts(&g->router, c);
    for (size_t i = 0; i < c->nroutes; i++) {
        tt_conf_route_t *r = &c->routes[i];
        size_t vh = 0;
        for (size_t v = 0; r->vhost != NULL && v < c->nvhosts; v++)
            if (strcmp(c->vhosts[v].name, r->vhost) == 0) vh = vhost_base + v;
        root_taken |= vh == 0 && strcmp(r->prefix, "/") == 0;
        if (r->root != NULL) {
            g->static_confs[i] = (tt_static_conf_t){.root = r->root, .index = r->index ? r->index : c->static_index};
            tt_router_add_in(&g->router, vh, r->prefix, &tt_static_ops, &g->static_confs[i]);
            continue;
        }
        for (size_t u = 0; u < c->nupstreams; u++)
            if (strcmp(c->upstreams[u].name, r->upstream) == 0) g->proxy_confs[i].up = &c->upstreams[u];
        g->proxy_confs[i].route = r->prefix;
        g->proxy_confs[i].reg = g->reg;
        g->proxy_confs[i].upgrade = (tt_upgrade_policy_t)r->upgrade;
        g->proxy_confs[i].tunnel_idle_ms = r->tunnel_idle_timeout_ms;
        g->proxy_confs[i].rules = &r->rules;
        g->proxy_confs[i].buffering = r->request_buffering;
        g->proxy_confs[i].buffer_memory = r->request_buffer_memory;
        g->proxy_confs[i].temp_dir = r->temp_dir;
        tt_router_add_in(&g->router, vh, r->prefix, &tt_proxy_ops, &g->proxy_confs[i]);
    }
    if (c->static_root != NULL && !root_taken) {
        g->static_confs[c->nroutes] = (tt_static_conf_t){.root = c->static_root, .index = c->static_index};
        tt_router_add(&g->router, "/", &tt_static_ops, &g->static_confs[c->nroutes]);
    }
    size_t nl = 0;
    g->tls = tt_calloc(c->nlistens ? c->nlistens : 1, sizeof(*g->tls));
    for (size_t i = 0; i < c->nlistens; i++) {
        nl += c->listens[i].naddrs;
        if (!c->listens[i].tls_on) continue;
        char terr[512];
        g->tls[i] = tt_tls_source_new(&c->listens[i].tls, terr, sizeof(terr));
        if (g->tls[i] == NULL) {
            snprintf(err, errlen, "TLS: %s", terr);
            return 2;
        }
    }
    g->listeners = tt_calloc(nl ? nl : 1, sizeof(*g->listeners));
    for (size_t i = 0; i < c->nlistens; i++)
        for (size_t j = 0; j < c->listens[i].naddrs; j++)
            g->listeners[g->nl++] =
                (tt_listener_conf_t){.addr = c->listens[i].addrs[j], .policy = &c->listens[i].policy, .tls = g->tls[i]};
    return 0;
}

/* What a reload cannot change (docs/config.md, "Reload"), as the running process has it. */
typedef struct serve_fixed {
    uint32_t workers; /* as configured: 0 = auto */
    uint32_t max_connections;
    int max_connections_line;
    uint64_t drain_timeout_ms;
    uint32_t backlog;
    bool reuse_port_with_others;
    char *access_log, *error_log, *pid_file, *metrics_path;
    struct tt_accesslog_fmt *log_format; /* the first configuration's, taken from it (owned) */
    int request_id;
    char *user, *group; /* the process switched to them at start-up for good */
    int log_level;
    bool metrics_on;
    char metrics_addr[TT_ADDR_STRLEN];
} serve_fixed_t;

static char *dup_or_null(const char *s)
{
    return s ? tt_strndup(s, strlen(s)) : NULL;
}

static void fixed_take(serve_fixed_t *f, const tt_conf_t *c)
{
    *f = (serve_fixed_t){.workers = c->workers,
                         .max_connections = c->max_connections,
                         .max_connections_line = c->max_connections_line,
                         .drain_timeout_ms = c->drain_timeout_ms,
                         .backlog = c->backlog,
                         .reuse_port_with_others = c->reuse_port_with_others,
                         .access_log = dup_or_null(c->access_log),
                         .error_log = dup_or_null(c->error_log),
                         .pid_file = dup_or_null(c->pid_file),
                         .user = dup_or_null(c->user),
                         .group = dup_or_null(c->group),
                         .metrics_path = dup_or_null(c->metrics_path),
                         .log_level = c->log_level,
                         .metrics_on = c->metrics_on};
    if (c->metrics_on) tt_addr_format(&c->metrics_addr, f->metrics_addr, sizeof(f->metrics_addr));
}

static void fixed_dispose(serve_fixed_t *f)
{
    tt_accesslog_fmt_free(&f->log_format);
    free(f->access_log);
    free(f->error_log);
    free(f->pid_file);
    free(f->metrics_path);
    free(f->user);
    free(f->group);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Logs at warning every key `c` changes that only a restart applies; the running values stay. */
static void warn_restart_needed(const serve_fixed_t *f, const tt_conf_t *c)
{
    char ma[TT_ADDR_STRLEN] = "";
    if (c->metrics_on) tt_addr_format(&c->metrics_addr, ma, sizeof(ma));
    const struct {
        bool changed;
        const char *key;
    } keys[] = {
        {f->workers != c->workers, "[server] workers"},
        {f->max_connections_line != c->max_connections_line ||
             (c->max_connections_line != 0 && f->max_connections != c->max_connections),
         "[server] max_connections"},
        {f->drain_timeout_ms != c->drain_timeout_ms, "[server] drain_timeout"},
        {f->backlog != c->backlog, "[server] backlog"},
        {f->reuse_port_with_others != c->reuse_port_with_others, "[server] reuse_port_with_others"},
        {str_differs(f->pid_file, c->pid_file), "[server] pid_file"},
        {str_differs(f->user, c->user), "[server] user"},
        {str_differs(f->group, c->group), "[server] group"},
        {str_differs(f->access_log, c->access_log), "[log] access_log"},
        {str_differs(f->error_log, c->error_log), "[log] error_log"},
        {f->log_level != c->log_level, "[log] level"},
        {strcmp(tt_accesslog_fmt_spec(f->log_format), tt_accesslog_fmt_spec(c->log_format)) != 0, "[log] log_format"},
        {f->request_id != c->request_id, "[log] request_id"},
        {f->metrics_on != c->metrics_on || strcmp(f->metrics_addr, ma) != 0, "[metrics] listen"},
        {str_differs(f->metrics_path, c->metrics_path), "[metrics] path"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(keys); i++)
        if (keys[i].changed)
            tt_log(TT_LOG_WARN, "reload: %s changed: it takes a restart, the running value stays", keys[i].key);
}

/* Writes this process's id into `path` ("PID\n", mode 0644) through a temporary file and a rename, so a reader
 * never sees it half written. 0 or -errno. */
static int write_pid_file(const char *path)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "we");
    if (f == NULL) return -errno;
    fprintf(f, "%ld\n", (long)getpid());
    int r = fclose(f) != 0 ? -errno : rename(tmp, path) != 0 ? -errno : 0;
    if (r != 0) unlink(tmp);
    return r;
}

typedef struct signal_watch {
    tt_io_t io;
    tt_accesslog_file_t *alog; /* NULL: the access log is not a file */
    tt_io_t done;              /* the main server's worker-finished eventfd */
    tt_io_t reloaded;          /* the main server's reload eventfd */
    uint64_t finished;
    tt_server_t *main;
    tt_server_t *admin;
    bool draining;
    int argc; /* argv of `tether serve`, replayed by a reload */
    char **argv;
    uint32_t workers;
    serve_fixed_t fixed;
    serve_gen_t *cur;     /* the generation the workers run (or the last one they all applied) */
    serve_gen_t *pending; /* handed to the workers, not yet applied by all */
    tt_server_reload_stats_t stats;
    char (*before)[TT_ADDR_STRLEN + 8]; /* "scheme addr" of each listener before the pending reload */
    size_t nbefore;
    bool again;  /* a SIGHUP came while a reload was being applied */
    uint64_t ok; /* reloads applied, refused */
    uint64_t failed;
    uint32_t max_connections; /* per worker, as sized at start-up (a restart changes it) */
    tt_resolver_t *resolver;  /* re-resolves server names for every generation; outlives them all */
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

/* A refused reload still reloads the running generation's certificates, as SIGHUP always did: new connections get
 * the new ones, open ones keep theirs, a bad file changes nothing. */
static void reload_certificates(signal_watch_t *sw)
{
    size_t ok = 0, n = 0;
    for (size_t i = 0; i < sw->cur->c.nlistens; i++) {
        if (sw->cur->tls[i] == NULL) continue;
        char err[512];
        n++;
        if (tt_tls_source_reload(sw->cur->tls[i], err, sizeof(err)) == 0)
            ok++;
        else
            tt_log(TT_LOG_ERROR, "SIGHUP: certificates not reloaded, the old ones stay in use: %s", err);
    }
    if (n > 0) tt_log(TT_LOG_INFO, "SIGHUP: reloaded the certificates of %zu of %zu TLS listener groups", ok, n);
}

/* A listener the reload adds on an address another process listens on: refused as at start-up (two servers
 * would split its connections). Addresses this server already listens on are not probed. 0, or 2 with `err`. */
static int refuse_taken_added(signal_watch_t *sw, const serve_gen_t *g, char *err, size_t errlen)
{
    if (g->c.reuse_port_with_others) return 0;
    size_t nl = tt_server_nlisteners(sw->main);
    for (size_t i = 0; i < g->nl; i++) {
        char want[TT_ADDR_STRLEN], have[TT_ADDR_STRLEN];
        const tt_addr_t *a = &g->listeners[i].addr;
        if (tt_addr_port(a) == 0) continue;
        tt_addr_format(a, want, sizeof(want));
        bool ours = false;
        for (size_t j = 0; j < nl && !ours; j++) {
            tt_addr_format(tt_server_bound_addr(sw->main, j), have, sizeof(have));
            ours = strcmp(want, have) == 0;
        }
        if (ours || tt_sock_addr_in_use(a) != 1) continue;
        snprintf(err, errlen,
                 "%s: another process already listens on this address (two servers would split its connections)", want);
        return 2;
    }
    return 0;
}

/* SIGHUP: re-reads the configuration (file, then the same flags), validates it as --check does, builds it and
 * hands it to the workers; reload_on_io() says when every worker applied it. */
static void start_reload(signal_watch_t *sw)
{
    if (sw->pending != NULL) {
        sw->again = true; /* after the one being applied */
        return;
    }
    char err[8192];
    bool check = false;
    serve_gen_t *g = serve_gen_new();
    int rc = parse_args(sw->argc, sw->argv, &g->c, &check, true, err, sizeof(err));
    if (rc == 0) rc = serve_gen_build(g, sw->workers, sw->cur->reg, err, sizeof(err));
    if (rc == 0) tt_proxy_registry_watch(g->reg, sw->resolver); /* a kept name goes on with its set and counters */
    if (rc == 0) rc = refuse_taken_added(sw, g, err, sizeof(err));
    tt_server_reload_stats_t st;
    if (rc == 0) {
        warn_restart_needed(&sw->fixed, &g->c);
        tt_server_gen_conf_t gc = {.listeners = g->listeners,
                                   .nlisteners = g->nl,
                                   .router = &g->router,
                                   .release = serve_gen_release,
                                   .arg = g};
        /* What listened before, to name the listeners the reload adds once it is applied. */
        free(sw->before);
        sw->nbefore = tt_server_nlisteners(sw->main);
        sw->before = tt_calloc(sw->nbefore ? sw->nbefore : 1, sizeof(*sw->before));
        for (size_t i = 0; i < sw->nbefore; i++) {
            char as[TT_ADDR_STRLEN];
            tt_addr_format(tt_server_bound_addr(sw->main, i), as, sizeof(as));
            snprintf(sw->before[i], sizeof(sw->before[i]), "%s %s", sw->cur->listeners[i].tls ? "https" : "http", as);
        }
        if (tt_server_reload(sw->main, &gc, &st, err, sizeof(err)) != 0) rc = 1;
    }
    if (rc != 0) {
        log_errors("reload: refused, the running configuration stays", err);
        serve_gen_free(g);
        sw->failed++;
        reload_certificates(sw);
        tt_notify_ready();
        return;
    }
    sw->pending = g;
    sw->stats = st;
}

/* Every worker applied the pending generation: it is current; the previous one is released once its last
 * connection or request is gone. */
static void reload_on_io(tt_io_t *io, uint32_t events)
{
    (void)events;
    signal_watch_t *sw = tt_container_of(io, signal_watch_t, reloaded);
    if (!tt_server_reload_collect(sw->main)) return;
    sw->cur = sw->pending; /* before anything renders: the previous registry may be gone */
    sw->pending = NULL;
    sw->ok++;
    tt_server_t *srv = sw->main;
    size_t nl = tt_server_nlisteners(srv);
    for (size_t i = 0; i < nl; i++) {
        char as[TT_ADDR_STRLEN], key[TT_ADDR_STRLEN + 8];
        tt_addr_format(tt_server_bound_addr(srv, i), as, sizeof(as));
        const char *scheme = sw->cur->listeners[i].tls ? "https" : "http";
        snprintf(key, sizeof(key), "%s %s", scheme, as);
        bool added = true;
        for (size_t j = 0; j < sw->nbefore && added; j++) added = strcmp(sw->before[j], key) != 0;
        tt_log(added ? TT_LOG_INFO : TT_LOG_DEBUG, "reload: %s on %s://%s (idle_timeout=%llums, max_requests=%u)",
               added ? "listening" : "still listening", scheme, as,
               (unsigned long long)sw->cur->listeners[i].policy->ka.idle_timeout_ms,
               sw->cur->listeners[i].policy->ka.max_requests);
    }
    for (size_t j = 0; j < sw->nbefore; j++) {
        bool kept = false;
        for (size_t i = 0; i < nl && !kept; i++) {
            char as[TT_ADDR_STRLEN], key[TT_ADDR_STRLEN + 8];
            tt_addr_format(tt_server_bound_addr(srv, i), as, sizeof(as));
            snprintf(key, sizeof(key), "%s %s", sw->cur->listeners[i].tls ? "https" : "http", as);
            kept = strcmp(sw->before[j], key) == 0;
        }
        if (!kept)
            tt_log(TT_LOG_INFO, "reload: stopped listening on %s (its open connections finish under the old policy)",
                   sw->before[j]);
    }
    size_t ntls = 0;
    for (size_t i = 0; i < sw->cur->c.nlistens; i++) ntls += sw->cur->tls[i] != NULL;
    if (ntls > 0) /* the new generation loaded every certificate from its files */
        tt_log(TT_LOG_INFO, "SIGHUP: reloaded the certificates of %zu of %zu TLS listener groups", ntls, ntls);
    size_t nservers = 0;
    for (size_t u = 0; u < sw->cur->c.nupstreams; u++) nservers += sw->cur->c.upstreams[u].nservers;
    tt_log(TT_LOG_INFO,
           "reload: applied (generation %llu): %zu listeners (%zu kept, %zu added, %zu removed), %zu routes, %zu "
           "upstreams (%zu servers); open connections keep going and take the new policy at their next request",
           (unsigned long long)tt_server_generation(srv), nl, sw->stats.kept, sw->stats.added, sw->stats.removed,
           sw->cur->router.n, sw->cur->c.nupstreams, nservers);
    tt_notify_ready();
    if (sw->again) {
        sw->again = false;
        start_reload(sw);
    }
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
            if (sw->draining)
                tt_log(TT_LOG_WARN, "SIGHUP: draining, the configuration is not reloaded");
            else {
                tt_notify_reloading(); /* systemd: reloading until READY=1, sent when it is applied or refused */
                start_reload(sw);
            }
            continue;
        }
        if (!sw->draining) {
            tt_log(TT_LOG_INFO, "%s: draining (stop accepting, finish in-flight responses)",
                   si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
            sw->draining = true;
            tt_notify_stopping();
            tt_server_drain(sw->main);
        }
    }
}

/* Prometheus text for the admin listener: reloads, then the current generation's upstream metrics. */
/* What the admin listener appends to the workers' metrics: reloads, the upstreams', then the configuration values
 * the advisor compares the counters with (it may run in another process: `tether advise`). Main thread. */
static void render_metrics(void *arg, char **out, size_t *len, size_t *cap)
{
    signal_watch_t *sw = arg;
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_reloads_total Configuration reloads (SIGHUP), applied or refused.\n"
                      "# TYPE tether_reloads_total counter\n"
                      "tether_reloads_total{result=\"ok\"} %llu\ntether_reloads_total{result=\"failed\"} %llu\n"
                      "# HELP tether_config_generation The configuration generation in use (1 at start, +1 per "
                      "applied reload).\n"
                      "# TYPE tether_config_generation gauge\ntether_config_generation %llu\n",
                      (unsigned long long)sw->ok, (unsigned long long)sw->failed, (unsigned long long)(sw->ok + 1));
    tt_proxy_render_metrics(sw->cur->reg, out, len, cap);
    /* The settings the advisor compares its counters with (tether advise, /status.json). */
    tt_metrics_printf(out, len, cap,
                      "# HELP tether_listener_idle_timeout_seconds The idle timeout of each listener (by its name in "
                      "metrics; group: its [listen NAME], empty for [listen]; address: its first address).\n"
                      "# TYPE tether_listener_idle_timeout_seconds gauge\n");
    const serve_gen_t *g = sw->cur;
    size_t i = 0;
    for (size_t gi = 0; gi < g->c.nlistens; gi++) {
        const tt_conf_listen_t *lg = &g->c.listens[gi];
        size_t first = i;
        i += lg->naddrs;
        bool seen = false; /* one series per listener name, as the per-listener metrics are labelled */
        for (size_t k = 0; k < gi && !seen; k++) seen = strcmp(g->c.listens[k].policy.name, lg->policy.name) == 0;
        if (seen || lg->naddrs == 0) continue;
        char as[TT_ADDR_STRLEN];
        /* the kernel's port while no reload is in flight (listener indexes then match the server's) */
        tt_addr_format(sw->pending == NULL ? tt_server_bound_addr(sw->main, first) : &g->listeners[first].addr, as,
                       sizeof(as));
        tt_metrics_printf(out, len, cap,
                          "tether_listener_idle_timeout_seconds{listener=\"%s\",group=\"%s\",address=\"%s\"} %g\n",
                          lg->policy.name ? lg->policy.name : "default", lg->name ? lg->name : "", as,
                          (double)lg->policy.ka.idle_timeout_ms / 1000.0);
    }
    tt_metrics_printf(
        out, len, cap,
        "# HELP tether_max_connections max_connections: open client connections allowed per worker (0: no "
        "limit).\n# TYPE tether_max_connections gauge\ntether_max_connections %u\n"
        "# HELP tether_workers Worker threads.\n# TYPE tether_workers gauge\ntether_workers %u\n",
        sw->max_connections, sw->workers);
}

int tt_cmd_serve(int argc, char **argv)
{
    serve_gen_t *g = serve_gen_new();
    tt_conf_t *c = &g->c;
    bool check = false;
    char err[8192];
    int rc = parse_args(argc, argv, c, &check, false, err, sizeof(err));
    if (rc != 0) {
        print_errors(err);
        serve_gen_free(g);
        return rc;
    }
    tt_log_setup((tt_log_level_t)c->log_level, STDERR_FILENO);
    tt_privs_t ids;
    if (!check && c->user != NULL && (rc = check_user(c, &ids)) != 0) {
        serve_gen_free(g);
        return rc;
    }
    /* What a start opens besides its listeners, checked before anything else is built (--check opens none). */
    bool alog_file = strcmp(c->access_log, "off") != 0 && strcmp(c->access_log, "-") != 0;
    if (!check && (rc = open_logs_and_check_addresses(c, alog_file)) != 0) {
        serve_gen_free(g);
        return rc;
    }
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

    uint32_t workers = c->workers ? c->workers : cpu_count();
    if ((rc = serve_gen_build(g, workers, NULL, err, sizeof(err))) != 0) {
        print_errors(err);
        serve_gen_free(g);
        return rc;
    }
    if (check) {
        /* Everything above built what a start would (routes, upstreams, TLS contexts) without opening a socket. */
        fprintf(stderr, "tether: configuration OK%s%s\n", c->path ? ": " : "", c->path ? c->path : "");
        serve_gen_free(g);
        return 0;
    }
    /* What outlives the first generation (a reload may release it): the running values of what needs a restart, and
     * the resolver that every generation's server names follow (freed after the last generation). */
    signal_watch_t sw = {.argc = argc, .argv = argv, .workers = workers, .cur = g, .resolver = tt_resolver_new()};
    tt_proxy_registry_watch(g->reg, sw.resolver);
    fixed_take(&sw.fixed, c);
    sw.fixed.log_format = c->log_format; /* the server uses it for its whole life */
    c->log_format = NULL;
    sw.fixed.request_id = c->request_id;
    tt_accesslog_file_t afile = {.path = sw.fixed.access_log}; /* a file access log is opened by each worker */
    tt_listen_policy_t admin_policy = c->defaults;
    size_connections(c, workers, g->nl, nofile);
    sw.max_connections = c->max_connections;
    int alog = strcmp(c->access_log, "-") == 0 ? STDOUT_FILENO : -1;
    tt_server_conf_t sc = {
        .workers = workers,
        .max_connections = c->max_connections,
        .drain_timeout_ms = c->drain_timeout_ms,
        .backlog = (int)c->backlog,
        .listeners = g->listeners,
        .nlisteners = g->nl,
        .router = &g->router,
        .access_log_fd = alog,
        .access_log_file = alog_file ? &afile : NULL,
        .access_log_format = sw.fixed.log_format,
        .request_id = (tt_request_id_mode_t)sw.fixed.request_id,
        .name = "tether",
        .release = serve_gen_release, /* the server owns the first generation from now on */
        .release_arg = g,
    };
    tt_server_t *srv = tt_server_new(&sc, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "tether: %s\n", err);
        fixed_dispose(&sw.fixed);
        serve_gen_free(g);
        tt_resolver_free(&sw.resolver);
        return 2;
    }

    /* The admin listener (metrics) runs on this thread, beside the signal watch. */
    tt_status_conf_t status_conf = {
        .srv = srv, .metrics_path = sw.fixed.metrics_path, .extra = render_metrics, .extra_arg = &sw};
    tt_status_start(&status_conf);
    tt_router_t admin_router = {0};
    tt_router_add(&admin_router, "/", &tt_status_ops, &status_conf);
    tt_listener_conf_t admin_listener = {.addr = c->metrics_addr, .policy = &admin_policy};
    tt_server_conf_t ac = {
        .inline_worker = true,
        .workers = 1,
        .max_connections = 1000,
        .drain_timeout_ms = 1000,
        .backlog = 128,
        .listeners = &admin_listener,
        .nlisteners = c->metrics_on ? 1 : 0,
        .router = &admin_router,
        .access_log_fd = -1,
        .name = "admin",
    };
    tt_server_t *admin = tt_server_new(&ac, err, sizeof(err));
    if (admin == NULL) {
        fprintf(stderr, "tether: metrics: %s\n", err);
        tt_server_free(&srv);
        fixed_dispose(&sw.fixed);
        tt_resolver_free(&sw.resolver);
        return 2;
    }

    /* The pid file names a process whose listeners are open (`tether reload` reads it), written before they are
     * announced. */
    if (sw.fixed.pid_file != NULL && (rc = write_pid_file(sw.fixed.pid_file)) != 0) {
        fprintf(stderr, "tether: pid_file %s: %s\n", sw.fixed.pid_file, strerror(-rc));
        tt_server_free(&admin);
        tt_server_free(&srv);
        tt_resolver_free(&sw.resolver);
        tt_router_dispose(&admin_router);
        tt_log_close_file();
        fixed_dispose(&sw.fixed);
        return 2;
    }
    for (size_t i = 0; i < g->nl; i++) {
        char as[TT_ADDR_STRLEN];
        tt_addr_format(tt_server_bound_addr(srv, i), as, sizeof(as));
        tt_log(TT_LOG_INFO, "listening on %s://%s (workers=%u, idle_timeout=%llums, max_requests=%u)",
               g->listeners[i].tls ? "https" : "http", as, workers,
               (unsigned long long)g->listeners[i].policy->ka.idle_timeout_ms, g->listeners[i].policy->ka.max_requests);
    }
    if (c->metrics_on) {
        char as[TT_ADDR_STRLEN];
        tt_addr_format(tt_server_bound_addr(admin, 0), as, sizeof(as));
        tt_log(TT_LOG_INFO, "metrics on http://%s%s", as, sw.fixed.metrics_path);
    }

    sw.main = srv;
    sw.admin = admin;
    sw.alog = alog_file ? &afile : NULL;
    sw.io.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    sw.io.cb = signal_on_io;
    if (sw.io.fd < 0 || tt_io_start(tt_server_loop(admin, 0), &sw.io, TT_EV_READ) != 0)
        tt_fatal("signalfd: %s", strerror(errno));
    sw.done.fd = tt_server_done_fd(srv);
    sw.done.cb = done_on_io;
    tt_io_start(tt_server_loop(admin, 0), &sw.done, TT_EV_READ);
    sw.reloaded.fd = tt_server_reload_fd(srv);
    sw.reloaded.cb = reload_on_io;
    tt_io_start(tt_server_loop(admin, 0), &sw.reloaded, TT_EV_READ);

    if (c->user != NULL) drop_privileges(c, &ids, alog_file);
    tt_resolver_start(sw.resolver); /* as the user the process keeps */
    if ((rc = tt_server_start(srv)) != 0) {
        fprintf(stderr, "tether: starting workers: %s\n", strerror(-rc));
        rc = 1;
    }
    if (rc == 0) {
        tt_notify_ready();
        tt_notify_status("serving %zu listening address%s with %u workers", g->nl, g->nl == 1 ? "" : "es", workers);
        tt_server_run_inline(admin);
        tt_server_join(srv);
        tt_log(TT_LOG_INFO, "stopped");
    }
    /* written before [server] user took effect: that user may not be allowed to remove it (say so, never silently) */
    if (sw.fixed.pid_file != NULL && unlink(sw.fixed.pid_file) != 0 && errno != ENOENT)
        tt_log(TT_LOG_WARN, "pid_file %s: not removed: %s", sw.fixed.pid_file, strerror(errno));

    tt_io_stop(tt_server_loop(admin, 0), &sw.io);
    tt_io_stop(tt_server_loop(admin, 0), &sw.done);
    tt_io_stop(tt_server_loop(admin, 0), &sw.reloaded);
    close(sw.io.fd);
    tt_server_free(&admin);
    tt_server_free(&srv);           /* releases every generation still held, the pending one included */
    tt_resolver_free(&sw.resolver); /* after them: they held its names */
    tt_router_dispose(&admin_router);
    tt_log_close_file();
    fixed_dispose(&sw.fixed);
    free(sw.before);
    return rc;
}
