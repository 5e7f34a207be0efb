/* rules.h -- what a proxy route changes on the way: the forwarded path (strip_prefix, rewrite with PCRE2), field
 * rules for the request and the response, and the Location/Refresh rewrite of upstream redirects
 *
 * A tt_route_rules_t is plain data built from the configuration at load (main thread) and read-only afterwards:
 * every worker reads it at once without a lock. The only per-worker state is the PCRE2 match data
 * (tt_rules_match_data_new), owned by the worker's route state. docs/config.md lists the keys.
 */
#ifndef TT_HANDLERS_RULES_H
#define TT_HANDLERS_RULES_H

#include "core/buf.h"
#include "core/err.h"
#include "core/str.h"

/** What a field rule does (nginx: proxy_set_header, add_header, proxy_hide_header). */
typedef enum tt_rule_op {
    TT_RULE_SET,    /* every field of that name is dropped, then `Name: value` added (replace) */
    TT_RULE_ADD,    /* `Name: value` added after what passes (append) */
    TT_RULE_REMOVE, /* every field of that name is dropped */
} tt_rule_op_t;

/** One field rule; the strings are owned. */
typedef struct tt_field_rule {
    tt_rule_op_t op;
    char *name;  /* as configured, for the field line */
    char *lower; /* lower-case, for comparisons */
    size_t name_len;
    char *value; /* NULL for TT_RULE_REMOVE; may hold $host, $remote_addr, $scheme */
    size_t value_len;
} tt_field_rule_t;

/** The rules of one route; all owned. A zeroed struct (plus proxy_redirect) means "no change". */
typedef struct tt_route_rules {
    bool strip_prefix;   /* the route prefix is removed from the forwarded path ("/api/x" -> "/x") */
    bool proxy_redirect; /* rewrite Location and Refresh of upstream redirects (nginx proxy_redirect default) */
    void *rewrite;       /* pcre2_code (8-bit), compiled at load; NULL: no rewrite */
    char *rewrite_replacement;
    tt_field_rule_t *req; /* request rules, in configuration order */
    size_t nreq;
    tt_field_rule_t *resp; /* response rules, in configuration order */
    size_t nresp;
} tt_route_rules_t;

/** The request facts a rule value may name ($host, $remote_addr, $scheme); views valid during the call. */
typedef struct tt_rules_vars {
    tt_str_t host;        /* the Host the client used, without the port */
    tt_str_t remote_addr; /* the client's address, without the port */
    tt_str_t scheme;      /* "http" or "https" */
} tt_rules_vars_t;

/** Sets the defaults (proxy_redirect on). */
void tt_rules_init(tt_route_rules_t *r);
/** Frees what `r` owns and zeroes it. */
void tt_rules_dispose(tt_route_rules_t *r);

/**
 * Adds a field rule from a configuration value: "NAME VALUE" for TT_RULE_SET and TT_RULE_ADD (the value is the
 * rest of the line, possibly empty only for SET), "NAME" for TT_RULE_REMOVE. The name must be a token (RFC 9110
 * 5.1), the value free of CR, LF and NUL (RFC 9110 5.5); hop-by-hop fields and the framing (Connection, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Upgrade, Transfer-Encoding, Content-Length) are refused, and for the request
 * removing or adding Host in the request, Date and Server in the response (the client
 * connection writes them). Returns 0, or -1 with a static reason in `*why`. Main thread (configuration load).
 */
int tt_rules_add_field(tt_route_rules_t *r, bool response, tt_rule_op_t op, const char *value, const char **why);

/**
 * Sets the rewrite from "REGEX REPLACEMENT" (separated by white space; the replacement takes $1..$9, ${name},
 * $$ as pcre2_substitute does). The regex is compiled (and JIT-compiled where PCRE2 has a JIT). Returns 0, or -1
 * with the reason in `why` (`whylen` bytes), e.g. PCRE2's message and offset. Main thread.
 */
int tt_rules_set_rewrite(tt_route_rules_t *r, const char *value, char *why, size_t whylen);

/** Match data for `r`'s rewrite (NULL when it has none), owned by one worker: tt_rules_match_data_free. */
void *tt_rules_match_data_new(const tt_route_rules_t *r);
void tt_rules_match_data_free(void *md);

/**
 * Appends the request-target the upstream gets for normalized `path` and `query` (without '?') on a route with
 * prefix length `prefix_len`: the prefix removed when strip_prefix (what is left gets a leading '/'), then the
 * rewrite applied to that path when its regex matches (first match, replaced; no match: unchanged), then the
 * query: "?query" appended, or "&query" when the replacement made a query of its own. `md` is the worker's match
 * data. Returns 0, or -1 with a static reason in `*why` when the rewritten path does not start with '/', holds a
 * byte a request-target may not (RFC 9112 3.2: controls, space, DEL), or does not fit 8 KiB: the caller answers
 * 500 and logs it. Owning worker.
 */
int tt_rules_target(const tt_route_rules_t *r, void *md, size_t prefix_len, tt_str_t path, tt_str_t query,
                    tt_buf_t *out, tt_bufpool_t *bufs, const char **why);

/** True when a field named `name` is dropped by one of `rules` (a SET or REMOVE of that name). */
bool tt_rules_drops(const tt_field_rule_t *rules, size_t n, tt_str_t name);

/** The value of the last SET rule for `lower_name` (lower-case), expanded into `tmp`, or false when none. */
bool tt_rules_set_value(const tt_field_rule_t *rules, size_t n, const char *lower_name, const tt_rules_vars_t *vars,
                        tt_buf_t *tmp, tt_bufpool_t *bufs);

/**
 * Appends "Name: value\r\n" for every SET and ADD rule of `rules` in order, `$host`, `$remote_addr` and `$scheme`
 * in values replaced from `vars` (any other '$' is kept). A rule whose lower-case name is in `skip` (NULL: none)
 * is left out: the caller wrote it already. Owning worker.
 */
void tt_rules_put_fields(const tt_field_rule_t *rules, size_t n, const tt_rules_vars_t *vars, const char *skip,
                         tt_buf_t *b, tt_bufpool_t *bufs);

/** Where an upstream redirect points and what the client should see instead (nginx proxy_redirect default). */
typedef struct tt_redirect_map {
    const tt_str_t *origins; /* the upstream's origins as tether names them: "http://127.0.0.1:8081", ... */
    size_t norigins;
    tt_str_t client_origin; /* "https://www.example" from the client's scheme and Host; empty: write a path only */
    tt_str_t prefix;        /* the route prefix, put back in front when strip_prefix removed it; else empty */
} tt_redirect_map_t;

/**
 * Rewrites one Location value (RFC 9110 10.2.2) or the URL of one Refresh value ("5; url=..."): when it starts
 * with one of m->origins (ASCII case ignored) followed by '/', '?' or its end, that origin is replaced by
 * m->client_origin and the path gets m->prefix (without its final '/') in front. Appends the new value and returns
 * true, or appends nothing and returns false when the value points elsewhere. Owning worker.
 */
bool tt_rules_redirect(tt_str_t value, bool refresh, const tt_redirect_map_t *m, tt_buf_t *out, tt_bufpool_t *bufs);

#endif
