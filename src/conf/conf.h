/* conf.h -- the configuration: INI file (inih) and command-line overrides into one typed struct
 *
 * docs/config.md lists every section and key with its default. Errors name their origin:
 * "FILE:LINE: key: reason" for the file, "--flag: reason" for the command line.
 */
#ifndef TT_CONF_CONF_H
#define TT_CONF_CONF_H

#include "handlers/proxy.h"
#include "handlers/rules.h"
#include "net/tls.h"
#include "http/server.h"

/** A group of listening addresses sharing one policy: `[listen]` or `[listen NAME]`. */
typedef struct tt_conf_listen {
    char *name; /* "" for [listen] */
    tt_addr_t *addrs;
    size_t naddrs;
    tt_listen_policy_t policy; /* final after tt_conf_finish() */
    bool tls_on;               /* a TLS listener (tls = on, or a tls_cert) */
    tt_tls_conf_t tls;         /* its certificates and settings, final after tt_conf_finish() */
    size_t _ncert_files, _nkey_files;
    uint64_t set; /* private: policy keys this section set */
} tt_conf_listen_t;

/** A `[vhost NAME]`: routes selected by the name the client asked for (Host, :authority, SNI). */
typedef struct tt_conf_vhost {
    char *name;   /* NAME of the section */
    char **names; /* server_name values, lower-case: "www.example", "*.example" */
    size_t nnames;
    bool is_default; /* default = on: names no vhost lists come here */
    int line;        /* line of the section header */
} tt_conf_vhost_t;

/** A `[route PREFIX]` or `[route VHOST PREFIX]`: requests under `prefix` go to `upstream` (a [upstream NAME]) or
 *  files in `root`. */
typedef struct tt_conf_route {
    char *prefix;           /* starts with '/' */
    char *vhost;            /* the [vhost NAME] it belongs to; NULL: the routes without a vhost (the default's) */
    int line;               /* line of the section header; 0: --proxy/--route */
    tt_route_rules_t rules; /* strip_prefix, rewrite, field rules, proxy_redirect (proxy routes only) */
    uint64_t _rules_set;    /* private: which rule keys the section set (for the static-route check) */
    char *upstream;         /* NULL for a static route */
    char *root;             /* NULL for a proxy route */
    int root_line;          /* line of `root` in the file */
    int upstream_line;      /* line of `upstream` in the file; 0: --proxy/--route */
    char *index;            /* static: the directory index file, NULL = "index.html" */
    int upgrade;            /* proxy: tt_upgrade_policy_t, which Upgrade requests become tunnels [websocket] */
    uint64_t tunnel_idle_timeout_ms; /* proxy: a tunnel that moves no byte either way this long is closed [1h] */
    bool request_buffering;          /* proxy: the whole request content is read before an upstream is taken [off] */
    uint64_t request_buffer_memory;  /* proxy, buffering: bytes held in memory before a temporary file [64k] */
    char *temp_dir;                  /* proxy, buffering: where the temporary files go; NULL: /tmp */
    int temp_dir_line;               /* line of `temp_dir` in the file */
} tt_conf_route_t;

/** Everything `tether serve` needs. Strings are owned. */
typedef struct tt_conf {
    char *path;       /* config file, NULL when none */
    uint32_t workers; /* 0 = one per CPU */
    uint32_t max_connections;
    int max_connections_line; /* where it was set: its line in the file, -1 --max-connections, 0 the default */
    uint64_t drain_timeout_ms;
    uint32_t backlog;
    tt_listen_policy_t defaults; /* [keepalive], [tcp_keepalive], [limits] */
    tt_conf_listen_t *listens;
    size_t nlistens;
    char *static_root;    /* NULL: no static route */
    int static_root_line; /* line of [static] root in the file; 0: --root or none */
    char *static_index;
    char *access_log; /* "-" stdout, "off", or a path */
    char *error_log;  /* "stderr", a path, or "syslog[:...]" (tt_log_syslog_parse) */
    int log_level;    /* tt_log_level_t */

    struct tt_accesslog_fmt *log_format; /* [log] log_format compiled; NULL: main */
    int request_id;                      /* tt_request_id_mode_t, [log] request_id */

    bool metrics_on;
    tt_addr_t metrics_addr;
    char *metrics_path;
    bool tls_tickets;                /* [tls] tickets */
    uint64_t tls_ticket_rotation_ms; /* [tls] ticket_rotation */
    uint32_t tls_session_cache;      /* [tls] session_cache, per worker */
    tt_upstream_conf_t *upstreams;   /* [upstream NAME] sections and --proxy/--route targets */
    size_t nupstreams;
    tt_conf_route_t *routes; /* [route PREFIX] sections and --proxy/--route */
    size_t nroutes;
    tt_conf_vhost_t *vhosts; /* [vhost NAME] sections, in file order */
    size_t nvhosts;
    tt_cidr_t *trusted_proxies; /* [server] trusted_proxies: peers whose X-Forwarded-* fields are believed */
    size_t ntrusted_proxies;
    bool reuse_port_with_others; /* [server]: start even when another process listens on our addresses */
    char *pid_file;              /* [server]: written after start-up, removed at exit; NULL: none */
    char *user;                  /* [server] user: switch to it after start-up (core/privs.h); NULL: stay */
    char *group;                 /* [server] group: its group instead of the user's primary one; NULL */
    int user_line, group_line;   /* their lines in the file */
    /* private */
    tt_listen_policy_t _cli;
    uint64_t _cli_set;
    bool _cli_listen;
    char *_cli_tls_cert;
    char *_cli_tls_key;
} tt_conf_t;

/** Fills `c` with the defaults. */
void tt_conf_init(tt_conf_t *c);
/** Frees what `c` owns. */
void tt_conf_dispose(tt_conf_t *c);
/**
 * Reads the INI file `path` into `c`. Returns 0, or -1 with every error found, one "FILE:LINE: key: reason"
 * per line in file order (newline separated, no final newline; cut at `errlen`). A key set twice in one
 * section and a section header seen twice are errors. Main thread only.
 */
int tt_conf_load(tt_conf_t *c, const char *path, char *err, size_t errlen);
/**
 * Applies a command-line value for a key of [server], [keepalive], [tcp_keepalive], [limits], [static],
 * [log] or [metrics] (e.g. "idle_timeout", "5s"); policy keys override every listener. `flag` names the
 * flag in errors. Returns 0, or -1 with "FLAG: reason" in `err`.
 */
int tt_conf_override(tt_conf_t *c, const char *flag, const char *key, const char *value, char *err, size_t errlen);
/** A --listen flag: the first one replaces the file's listeners; later ones add. 0 or -1 with `err`. */
int tt_conf_cli_listen(tt_conf_t *c, const char *addr, char *err, size_t errlen);
/** `--tls-listen ADDR`: a TLS listener (in the group "tls"). 0 or -1 with `err`. */
int tt_conf_cli_tls_listen(tt_conf_t *c, const char *addr, char *err, size_t errlen);
/** `--tls-cert FILE` / `--tls-key FILE`: the certificate of every TLS listener (replacing the file's). */
int tt_conf_cli_tls_file(tt_conf_t *c, bool cert, const char *file, char *err, size_t errlen);
/** `--proxy URL`: every path to the upstream at URL (http://HOST:PORT). 0 or -1 with `err`. */
int tt_conf_cli_proxy(tt_conf_t *c, const char *url, char *err, size_t errlen);
/** `--route PREFIX=URL`: paths under PREFIX to the upstream at URL. 0 or -1 with `err`. */
int tt_conf_cli_route(tt_conf_t *c, const char *spec, char *err, size_t errlen);
/** Merges defaults, sections and overrides into each listener's policy and validates. 0, or -1 with every
 *  error found in `err`, one per line. */
int tt_conf_finish(tt_conf_t *c, char *err, size_t errlen);
/**
 * Checks what a finished `c` names on disk, opening nothing that stays open: every static root (the [static]
 * one, --root, each [route] root) must be a directory this process can read and search; every tls_cert and
 * tls_key of a [listen] or an [upstream] must be a readable PEM certificate chain and a PEM private key that
 * matches it; `user` and `group` must exist in the user database. Returns 0, or -1 with one "FILE:LINE: key: reason"
 * (or "--root DIR: reason", "--tls-cert: reason") per problem in `err`, newline separated. Main thread only.
 */
int tt_conf_check_files(const tt_conf_t *c, char *err, size_t errlen);

#endif
