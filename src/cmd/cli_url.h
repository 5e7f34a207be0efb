/* cli_url.h -- the URL argument of `tether probe` and `tether bench`: http[s]://host[:port][/path[?query]]
 *
 * Parsing is pure; resolving the host blocks (getaddrinfo) and is for start-up only. For https URLs,
 * tt_cli_url_tls_client builds the client TLS context both commands use.
 */
#ifndef TT_CMD_CLI_URL_H
#define TT_CMD_CLI_URL_H

#include "net/addr.h"
#include "net/tls.h"

typedef enum tt_cli_scheme { TT_CLI_HTTP = 0, TT_CLI_HTTPS } tt_cli_scheme_t;

/** A parsed URL; every string is NUL-terminated and owned by the struct. */
typedef struct tt_cli_url {
    tt_cli_scheme_t scheme;
    char host[256];      /* host as written, without the brackets of an IPv6 literal */
    uint16_t port;       /* the explicit port, or 80 / 443 */
    char authority[272]; /* Host field value: host, bracketed when IPv6, with ":port" when written */
    char target[2048];   /* origin-form request-target: path and query, "/" when absent; no fragment */
    tt_addr_t addr;      /* filled by tt_cli_url_resolve() */
} tt_cli_url_t;

/**
 * Parses `s` into `u`. Returns 0, or -EINVAL with a static reason in `*why` (no http:// or https://,
 * userinfo, empty or over-long host, bad port, bytes a request-target cannot carry).
 */
int tt_cli_url_parse(const char *s, tt_cli_url_t *u, const char **why);

/** Resolves `u->host` into `u->addr` (first address; blocking). Returns 0, or -ENOENT/-EINVAL with `*why`. */
int tt_cli_url_resolve(tt_cli_url_t *u, const char **why);

/** NULL when this build can speak to `u`'s scheme, else a static sentence saying why not (both schemes work now). */
const char *tt_cli_url_unsupported(const tt_cli_url_t *u);

/** "http" or "https". */
static inline const char *tt_cli_url_scheme(const tt_cli_url_t *u)
{
    return u->scheme == TT_CLI_HTTPS ? "https" : "http";
}

/**
 * A client TLS context for `u` (https): TLS 1.2 or later, SNI and the name check from u->host (an IP literal
 * is checked against the certificate's IP addresses), the chain checked against the system store (OpenSSL's
 * default paths, which honour SSL_CERT_FILE and SSL_CERT_DIR) unless `insecure`. ALPN offers "h2" and
 * "http/1.1" when `alpn_h2`, else "http/1.1" only. Returns the context (tt_tls_client_free), or NULL with
 * `err` filled.
 */
tt_tls_client_t *tt_cli_url_tls_client(const tt_cli_url_t *u, bool insecure, bool alpn_h2, char *err, size_t errlen);

/**
 * Writes a sentence for a failed TLS handshake into `buf`: "certificate verification failed: REASON (use
 * --insecure to skip it)" when `verify`, else "TLS handshake failed: REASON". `reason` may be NULL.
 */
void tt_cli_tls_failure(char *buf, size_t size, const char *reason, bool verify);

/**
 * Writes a request head for `u` into `buf` (`size` bytes): "METHOD TARGET HTTP/1.<minor>", Host, a
 * User-Agent naming `agent`, then `extra` (complete field lines, each ending in CRLF, or NULL) and the
 * empty line. `target` NULL means u->target. Returns the head's length, or 0 when it does not fit.
 */
size_t tt_cli_url_request(const tt_cli_url_t *u, const char *method, const char *target, int minor, const char *agent,
                          const char *extra, char *buf, size_t size);

#endif
