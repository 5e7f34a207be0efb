/* tls.h -- TLS with OpenSSL 3: server contexts (SNI, ALPN, tickets, session cache, reload), client contexts
 *
 * Certificates are loaded once into a tt_tls_material_t (main thread, start-up and SIGHUP). Each worker
 * builds its own SSL_CTX set from the current material (so each has its own session cache, and no lock is
 * shared on the handshake path) and rebuilds it when the material changes; connections keep the context
 * they started with. Session tickets are encrypted with keys derived from one random process secret, the
 * listener group's own rotation length (tt_tls_conf_t.ticket_rotation_ms) and the current period of that
 * length, so every worker accepts every worker's tickets and keys rotate without any coordination (the
 * previous period's key still decrypts, and its tickets are renewed). Groups with different rotations use
 * different keys. Nothing here is a mutable process global: a worker's tt_tls_server_t holds its group's
 * rotation and its cache of derived keys, and a reload publishes new material with atomics.
 */
#ifndef TT_NET_TLS_H
#define TT_NET_TLS_H

#include "net/transport.h"

/** One certificate chain and its key, PEM files. */
typedef struct tt_tls_cert_conf {
    char *cert_file; /* leaf first, then intermediates (a chain file works) */
    char *key_file;
    int cert_line, key_line; /* config file lines of tls_cert and tls_key, for errors; 0: a flag set them */
} tt_tls_cert_conf_t;

/** TLS settings of one listener. */
typedef struct tt_tls_conf {
    tt_tls_cert_conf_t *certs; /* the first is the default; the others are chosen by SNI against their names */
    size_t ncerts;
    int min_version;             /* TLS1_2_VERSION or TLS1_3_VERSION */
    bool alpn_h2;                /* offer h2 (before http/1.1) in ALPN */
    bool tickets;                /* issue and accept session tickets */
    uint64_t ticket_rotation_ms; /* ticket key period of this listener group, ms (< 1 s: 1 h) */
    uint32_t cache_size;         /* per-worker server session cache entries (0: no cache) */
} tt_tls_conf_t;

typedef struct tt_tls_material tt_tls_material_t;

/** Reads every certificate and key of `conf` and checks that each key matches. 0, or -1 with `err`. */
int tt_tls_material_load(const tt_tls_conf_t *conf, tt_tls_material_t **out, char *err, size_t errlen);
/**
 * Reads one certificate chain and its key as tt_tls_material_load() would, checks that the key matches, and
 * frees them again. Returns 0; -1 when the certificate file is at fault (cannot be read, no PEM certificate);
 * -2 when the key file is (cannot be read, no PEM private key, does not match): with "FILE: reason" in `err`.
 * Any thread.
 */
int tt_tls_cert_check(const tt_tls_cert_conf_t *c, char *err, size_t errlen);

/**
 * A listener group's certificates as every worker sees them: tt_tls_source_reload (one reloading thread)
 * publishes new material with a release store, workers pick it up with acquire loads; old material is kept
 * until tt_tls_source_free, because a worker may still build from it.
 */
typedef struct tt_tls_source tt_tls_source_t;
/** Loads `conf` (kept by pointer; must outlive the source). NULL with `err` on failure. */
tt_tls_source_t *tt_tls_source_new(const tt_tls_conf_t *conf, char *err, size_t errlen);
/** Reloads the files; on failure the old material stays in use. 0, or -1 with `err`. Main thread. */
int tt_tls_source_reload(tt_tls_source_t *src, char *err, size_t errlen);
/** Frees the source and every material it ever held (after the workers stopped). */
void tt_tls_source_free(tt_tls_source_t **src);

/** One worker's server contexts for one listener group, with the group's ticket rotation and key cache. */
typedef struct tt_tls_server tt_tls_server_t;
/**
 * Builds the contexts from the source's current material. NULL with `err` on failure. From then on it belongs
 * to one thread (its worker's): contexts, tickets and rebuilds happen there. Created by the thread that
 * starts that worker, or by the worker itself.
 */
tt_tls_server_t *tt_tls_server_new(tt_tls_source_t *src, char *err, size_t errlen);
void tt_tls_server_free(tt_tls_server_t **s);

/**
 * Starts a server-side TLS connection on accepted socket `fd`, rebuilding the worker's contexts first if
 * the source was reloaded. Returns the transport (owned by the caller: tt_transport_free), NULL on
 * allocation failure.
 */
tt_transport_t *tt_tls_accept(tt_tls_server_t *s, int fd);

/** Drives the handshake: 1 done, 0 in progress (wait for the socket; t->want_write tells which way), -1 failed. */
int tt_tls_handshake(tt_transport_t *t);
/** The ALPN protocol agreed ("h2", "http/1.1") or NULL. After the handshake. */
const char *tt_tls_alpn(const tt_transport_t *t);
/** The server name the client sent in SNI (RFC 6066 3), owned by the connection; NULL when it sent none or `t` is
 *  not TLS. After the handshake; the connection's thread. */
const char *tt_tls_sni(const tt_transport_t *t);
/** True when the handshake resumed a session (ticket or cache). After the handshake. */
bool tt_tls_resumed(const tt_transport_t *t);
/** "TLSv1.3" etc. */
const char *tt_tls_version(const tt_transport_t *t);
/** The last OpenSSL error of this thread as text (for logs); static or thread-local storage. */
const char *tt_tls_last_error(void);

/** Settings of TLS to one upstream. */
typedef struct tt_tls_client_conf {
    char *ca_file;   /* NULL: the system store */
    bool verify;     /* check the certificate chain and the name */
    char *cert_file; /* client certificate, optional */
    char *key_file;
    /* the server's name: sent as SNI unless it is an IP literal (RFC 6066 3), and checked against the
     * certificate's DNS names or IP addresses (RFC 6125); NULL: nothing sent, the name not checked */
    char *sni;
    /* offer "h2" before "http/1.1" in ALPN (RFC 7301); false: "http/1.1" only */
    bool alpn_h2;
} tt_tls_client_conf_t;

typedef struct tt_tls_client tt_tls_client_t;
/** Builds a client context (any thread, at start-up). NULL with `err` on failure. */
tt_tls_client_t *tt_tls_client_new(const tt_tls_client_conf_t *conf, char *err, size_t errlen);
void tt_tls_client_free(tt_tls_client_t **c);
/**
 * Starts a client-side TLS connection on connected socket `fd`, offering `session` (from
 * tt_tls_take_session, may be NULL) for resumption. The transport is owned by the caller.
 */
tt_transport_t *tt_tls_connect(tt_tls_client_t *c, int fd, void *session);
/** A reference to the connection's session for a later resumption (free with tt_tls_session_free), or NULL. */
void *tt_tls_take_session(tt_transport_t *t);
/** Another reference to `session` (not NULL) for a holder with a lifetime of its own; tt_tls_session_free each. */
void *tt_tls_session_ref(void *session);
void tt_tls_session_free(void *session);
/**
 * Why the last tt_tls_handshake() on `t` failed, as static text: with `*verify` set, the certificate check's
 * reason ("self-signed certificate in certificate chain", "hostname mismatch"; RFC 5280 6, RFC 6125); else
 * OpenSSL's reason ("wrong version number") or "the peer closed the connection during the handshake"; NULL
 * when no handshake failed. Client or server transports; the text outlives `t`.
 */
const char *tt_tls_failure(const tt_transport_t *t, bool *verify);

#endif
