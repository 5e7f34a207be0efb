/* tls.c -- OpenSSL 3 behind tt_transport_t: server contexts per worker, SNI, ALPN, tickets, clients */
#include "net/tls.h"
#include "core/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---- */

const char *tt_tls_last_error(void)
{
    static __thread char buf[256];
    unsigned long e = ERR_get_error();
    if (e == 0) return "no OpenSSL error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* ---- certificate material ---- */

typedef struct cert_item {
    X509 *leaf;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
} cert_item_t;

struct tt_tls_material {
    cert_item_t *items;
    size_t n;
    tt_tls_material_t *older; /* the source's list of every material, for freeing at the end */
};

static void material_free(tt_tls_material_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        X509_free(m->items[i].leaf);
        sk_X509_pop_free(m->items[i].chain, X509_free);
        EVP_PKEY_free(m->items[i].key);
    }
    free(m->items);
    free(m);
}

/* Loads `c` into `it`: 0, -1 when the certificate file is at fault, -2 when the key file is (see tls.h). */
static int load_item(const tt_tls_cert_conf_t *c, cert_item_t *it, char *err, size_t errlen)
{
    FILE *f = fopen(c->cert_file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", c->cert_file, strerror(errno));
        return -1;
    }
    it->leaf = PEM_read_X509(f, NULL, NULL, NULL);
    it->chain = sk_X509_new_null();
    X509 *x;
    while (it->leaf != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) sk_X509_push(it->chain, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);
    if (it->leaf == NULL) {
        snprintf(err, errlen, "%s: no PEM certificate in it", c->cert_file);
        return -1;
    }
    f = fopen(c->key_file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", c->key_file, strerror(errno));
        return -2;
    }
    it->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (it->key == NULL) {
        snprintf(err, errlen, "%s: no PEM private key in it (%s)", c->key_file, tt_tls_last_error());
        return -2;
    }
    if (X509_check_private_key(it->leaf, it->key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: does not match the certificate %s", c->key_file, c->cert_file);
        return -2;
    }
    return 0;
}

int tt_tls_material_load(const tt_tls_conf_t *conf, tt_tls_material_t **out, char *err, size_t errlen)
{
    tt_tls_material_t *m = tt_calloc(1, sizeof(*m));
    m->items = tt_calloc(conf->ncerts ? conf->ncerts : 1, sizeof(cert_item_t));
    for (size_t i = 0; i < conf->ncerts; i++) {
        m->n = i + 1;
        if (load_item(&conf->certs[i], &m->items[i], err, errlen) != 0) {
            material_free(m);
            return -1;
        }
    }
    if (conf->ncerts == 0) {
        snprintf(err, errlen, "TLS listener without a certificate (tls_cert and tls_key)");
        material_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int tt_tls_cert_check(const tt_tls_cert_conf_t *c, char *err, size_t errlen)
{
    tt_tls_material_t *m = tt_calloc(1, sizeof(*m));
    m->items = tt_calloc(1, sizeof(cert_item_t));
    m->n = 1;
    int r = load_item(c, &m->items[0], err, errlen);
    material_free(m);
    return r;
}

/* ---- sources (reloadable) ---- */

struct tt_tls_source {
    const tt_tls_conf_t *conf;
    _Atomic(tt_tls_material_t *) current;
    _Atomic uint32_t gen;
    tt_tls_material_t *all; /* main thread only */
};

tt_tls_source_t *tt_tls_source_new(const tt_tls_conf_t *conf, char *err, size_t errlen)
{
    tt_tls_material_t *m;
    if (tt_tls_material_load(conf, &m, err, errlen) != 0) return NULL;
    tt_tls_source_t *s = tt_calloc(1, sizeof(*s));
    s->conf = conf;
    s->all = m;
    atomic_store(&s->current, m);
    atomic_store(&s->gen, 1);
    return s;
}

int tt_tls_source_reload(tt_tls_source_t *s, char *err, size_t errlen)
{
    tt_tls_material_t *m;
    if (tt_tls_material_load(s->conf, &m, err, errlen) != 0) return -1;
    m->older = s->all;
    s->all = m;
    atomic_store_explicit(&s->current, m, memory_order_release);
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
    return 0;
}

void tt_tls_source_free(tt_tls_source_t **sp)
{
    tt_tls_source_t *s = *sp;
    if (s == NULL) return;
    for (tt_tls_material_t *m = s->all, *next; m != NULL; m = next) {
        next = m->older;
        material_free(m);
    }
    free(s);
    *sp = NULL;
}

/* ---- session tickets: keys derived from one process secret, the group's rotation and the time period ----
 *
 * The secret is written once (pthread_once, before any worker starts) and only read after. Everything that
 * changes at run time -- the rotation and the derived keys -- lives in a worker's tt_tls_server_t. */

static unsigned char master_secret[32];
static pthread_once_t master_once = PTHREAD_ONCE_INIT;

static void master_init(void)
{
    if (RAND_bytes(master_secret, sizeof(master_secret)) != 1) tt_fatal("RAND_bytes failed: %s", tt_tls_last_error());
}

typedef struct ticket_keys {
    int64_t period; /* -1: not derived yet */
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
} ticket_keys_t;

/* A key is named by its rotation length and period: listener groups with different rotations never share
 * keys, and one period number never means two time spans. */
static void derive(const char *label, int64_t rotation_s, int64_t period, unsigned char out[32])
{
    unsigned char msg[64];
    size_t n = strlen(label);
    memcpy(msg, label, n);
    memcpy(msg + n, &rotation_s, sizeof(rotation_s));
    memcpy(msg + n + sizeof(rotation_s), &period, sizeof(period));
    unsigned int len = 32;
    HMAC(EVP_sha256(), master_secret, sizeof(master_secret), msg, n + sizeof(rotation_s) + sizeof(period), out, &len);
}

/* The keys of `period` of `rotation_s` seconds, cached in `cache` (the current and the previous period, by
 * parity): a handshake derives nothing in the common case. */
static const ticket_keys_t *keys_for(ticket_keys_t cache[2], int64_t rotation_s, int64_t period)
{
    ticket_keys_t *k = &cache[period & 1];
    if (k->period != period) {
        unsigned char name[32];
        derive("tether ticket name", rotation_s, period, name);
        memcpy(k->name, name, sizeof(k->name));
        derive("tether ticket aes", rotation_s, period, k->aes);
        derive("tether ticket hmac", rotation_s, period, k->hmac);
        k->period = period;
    }
    return k;
}

static int set_keys(EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, const ticket_keys_t *k, unsigned char *iv, int enc)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
    int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)
                 : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv);
    return ok == 1 ? 0 : -1;
}

/* One worker's contexts for one listener group; every SSL_CTX of it carries it as app data. */
struct tt_tls_server {
    tt_tls_source_t *src;
    uint32_t gen;
    const tt_tls_material_t *m;
    SSL_CTX **ctx;
    size_t n;
    int64_t rotation_s;      /* ticket key period of this listener group, seconds */
    ticket_keys_t ticket[2]; /* this worker's cache of the group's ticket keys */
};

/* Runs on the worker that owns the connection, hence the server and its key cache: no lock, no global. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                     int enc)
{
    tt_tls_server_t *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int64_t period = (int64_t)time(NULL) / s->rotation_s;
    if (enc) {
        const ticket_keys_t *k = keys_for(s->ticket, s->rotation_s, period);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
        memcpy(key_name, k->name, 16);
        return set_keys(cctx, hctx, k, iv, 1) == 0 ? 1 : -1;
    }
    for (int64_t p = period; p >= period - 1; p--) {
        const ticket_keys_t *k = keys_for(s->ticket, s->rotation_s, p);
        if (memcmp(key_name, k->name, 16) == 0) {
            if (set_keys(cctx, hctx, k, iv, 0) != 0) return -1;
            /* 2: valid, and issue a fresh ticket. Always under TLS 1.3, whose clients use a ticket once
             * (RFC 8446 C.4): without a new one every other connection would need a full handshake. */
            return p == period && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
        }
    }
    return 0; /* unknown or expired key: a full handshake */
}

/* ---- server contexts ---- */

static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_h1[] = "\x08http/1.1";
static const unsigned char alpn_h2_h1[] = "\x02h2\x08http/1.1"; /* a client's offer, most preferred first */

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    (void)ssl;
    const tt_tls_conf_t *conf = arg;
    unsigned char *sel;
    if (conf->alpn_h2 &&
        SSL_select_next_proto(&sel, outlen, alpn_h2, sizeof(alpn_h2) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    if (SSL_select_next_proto(&sel, outlen, alpn_h1, sizeof(alpn_h1) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* SNI: switch to the context whose certificate names the requested host (the first one otherwise). */
static int sni_cb(SSL *ssl, int *al, void *arg)
{
    (void)al;
    tt_tls_server_t *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || s->n < 2) return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < s->n; i++) {
        if (X509_check_host(s->m->items[i].leaf, name, 0, 0, NULL) == 1) {
            if (i > 0) SSL_set_SSL_CTX(ssl, s->ctx[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static void server_release(tt_tls_server_t *s)
{
    for (size_t i = 0; i < s->n; i++) SSL_CTX_free(s->ctx[i]);
    free(s->ctx);
    s->ctx = NULL;
    s->n = 0;
}

static int server_build(tt_tls_server_t *s, char *err, size_t errlen)
{
    const tt_tls_conf_t *conf = s->src->conf;
    uint32_t gen = atomic_load_explicit(&s->src->gen, memory_order_acquire);
    const tt_tls_material_t *m = atomic_load_explicit(&s->src->current, memory_order_acquire);
    SSL_CTX **ctx = tt_calloc(m->n, sizeof(*ctx));
    for (size_t i = 0; i < m->n; i++) {
        SSL_CTX *c = SSL_CTX_new(TLS_server_method());
        ctx[i] = c;
        if (c == NULL || SSL_CTX_set_min_proto_version(c, conf->min_version) != 1 ||
            SSL_CTX_use_cert_and_key(c, m->items[i].leaf, m->items[i].key, m->items[i].chain, 1) != 1) {
            snprintf(err, errlen, "TLS context: %s", tt_tls_last_error());
            for (size_t j = 0; j <= i; j++) SSL_CTX_free(ctx[j]);
            free(ctx);
            return -1;
        }
        /* IGNORE_UNEXPECTED_EOF: a client that closes without close_notify (curl, most browsers) ends the
         * stream like a FIN does (read returns 0, client_close), not with an error; HTTP framing, not TLS,
         * tells a complete message from a truncated one. */
        SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                   SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_app_data(c, s); /* for ticket_cb */
        SSL_CTX_set_alpn_select_cb(c, alpn_cb, (void *)conf);
        SSL_CTX_set_session_id_context(c, (const unsigned char *)"tether", 6);
        if (conf->cache_size > 0) {
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
            SSL_CTX_sess_set_cache_size(c, conf->cache_size);
        } else {
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
        }
        if (conf->tickets)
            SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticket_cb);
        else
            SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx[0], sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx[0], s);
    server_release(s);
    s->ctx = ctx;
    s->n = m->n;
    s->m = m;
    s->gen = gen;
    return 0;
}

tt_tls_server_t *tt_tls_server_new(tt_tls_source_t *src, char *err, size_t errlen)
{
    pthread_once(&master_once, master_init);
    tt_tls_server_t *s = tt_calloc(1, sizeof(*s));
    s->src = src;
    uint64_t rot_ms = src->conf->ticket_rotation_ms;
    s->rotation_s = rot_ms >= 1000 ? (int64_t)(rot_ms / 1000) : 3600;
    s->ticket[0].period = s->ticket[1].period = -1;
    if (server_build(s, err, errlen) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void tt_tls_server_free(tt_tls_server_t **sp)
{
    if (*sp == NULL) return;
    server_release(*sp);
    free(*sp);
    *sp = NULL;
}

/* ---- the TLS transport ---- */

typedef struct tls_transport {
    tt_transport_t base;
    SSL *ssl;
    const char *fail; /* static: why the handshake failed (tt_tls_failure) */
    bool fail_verify;
    bool has_pending;    /* a read stopped at an end or error after returning bytes: report it next */
    bool sock_drained;   /* server side: OpenSSL's last read(2) returned fewer bytes than it asked (bio_on_read) */
    ssize_t pending_res; /* 0 (end of stream) or -errno */
} tls_transport_t;

static ssize_t ssl_result(tls_transport_t *t, int r, size_t n)
{
    if (r == 1) return (ssize_t)n;
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ: return -EAGAIN;
    case SSL_ERROR_WANT_WRITE: t->base.want_write = true; return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: return 0; /* close_notify */
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno ? -errno : 0; /* EOF without close_notify: the peer is gone all the same */
    default: ERR_clear_error(); return -EPROTO;
    }
}

/* SSL_read_ex returns at most one record: read records until `len` is full or the socket is empty, so
 * that a short read means what it means on TCP (the edge-triggered caller waits for the next edge). A
 * read that stops for another reason after some bytes (end of stream, error, a write first) returns the
 * bytes and sets `unread`: the next call reports the condition (kept in has_pending). */
static ssize_t tls_read(tt_transport_t *tr, int fd, void *buf, size_t len)
{
    (void)fd;
    tls_transport_t *t = (tls_transport_t *)tr;
    size_t total = 0;
    t->base.want_write = false;
    t->base.unread = false;
    if (t->has_pending) {
        t->has_pending = false;
        return t->pending_res;
    }
    for (;;) {
        size_t n = 0;
        errno = 0;
        int r = SSL_read_ex(t->ssl, (char *)buf + total, len - total, &n); /* n is read after the call */
        if (r == 1) {
            total += n;
            if (total == len) return (ssize_t)total;
            /* OpenSSL emptied the socket and holds nothing: a short read, without the read(2) that says EAGAIN */
            if (t->sock_drained && !SSL_has_pending(t->ssl)) return (ssize_t)total;
            continue;
        }
        if (total == 0) return ssl_result(t, r, n);
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) return (ssize_t)total; /* the socket is empty */
        t->base.unread = true;
        if (e == SSL_ERROR_WANT_WRITE) {
            ERR_clear_error(); /* the next read meets it again and reports it */
            return (ssize_t)total;
        }
        /* End of stream or a fatal error: OpenSSL would not repeat it (after a fatal alert it reports a bare
         * SYSCALL with errno 0, which reads as a clean end), so keep the verdict for the next call. */
        t->pending_res = ssl_result(t, r, n);
        t->has_pending = true;
        return (ssize_t)total;
    }
}

static ssize_t tls_write(tt_transport_t *tr, int fd, const void *buf, size_t len, bool more)
{
    (void)fd;
    (void)more;
    tls_transport_t *t = (tls_transport_t *)tr;
    size_t n = 0;
    errno = 0;
    int r = SSL_write_ex(t->ssl, buf, len, &n);
    ssize_t res = ssl_result(t, r, n);
    /* A write never returns 0 (the transport contract): the peer's close_notify or a bare EOF seen while
     * writing means the peer is gone, as EPIPE does on TCP. A 0 made the writers loop forever. */
    return res == 0 ? -EPIPE : res;
}

/* TLS cannot use sendfile(2): read the range and encrypt it. A retried write re-reads the same bytes
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows the new buffer). */
static ssize_t tls_sendfile(tt_transport_t *tr, int fd, int file_fd, off_t *off, size_t len)
{
    char buf[16384];
    ssize_t r = pread(file_fd, buf, TT_MIN(len, sizeof(buf)), *off);
    if (r <= 0) return r < 0 ? -errno : 0;
    ssize_t w = tls_write(tr, fd, buf, (size_t)r, false);
    if (w > 0) *off += w;
    return w;
}

static void tls_shutdown(tt_transport_t *tr, int fd)
{
    tls_transport_t *t = (tls_transport_t *)tr;
    if (SSL_is_init_finished(t->ssl) && SSL_shutdown(t->ssl) < 0)
        ERR_clear_error(); /* best effort: a peer that reset is past caring */
    shutdown(fd, SHUT_WR);
}

static void tls_destroy(tt_transport_t *tr)
{
    tls_transport_t *t = (tls_transport_t *)tr;
    SSL_free(t->ssl);
    free(t);
}

static const tt_transport_ops_t tls_ops = {
    .name = "tls",
    .read = tls_read,
    .write = tls_write,
    .sendfile = tls_sendfile,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
};

static tt_transport_t *wrap(SSL *ssl, int fd)
{
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    tls_transport_t *t = tt_calloc(1, sizeof(*t));
    t->base.ops = &tls_ops;
    t->ssl = ssl;
    return &t->base;
}

/* The socket BIO's reads, seen as they return (server side, with read-ahead): a read(2) that returned fewer bytes
 * than OpenSSL asked for left the socket empty, as a short read does on TCP; new bytes then raise a new edge. */
static long bio_on_read(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret, size_t *processed)
{
    (void)argp;
    (void)argi;
    (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        tls_transport_t *t = (tls_transport_t *)BIO_get_callback_arg(b);
        t->sock_drained = ret > 0 && processed != NULL && *processed < len;
    }
    return ret;
}

tt_transport_t *tt_tls_accept(tt_tls_server_t *s, int fd)
{
    if (atomic_load_explicit(&s->src->gen, memory_order_acquire) != s->gen) {
        char err[256];
        if (server_build(s, err, sizeof(err)) != 0)
            ERR_clear_error(); /* keep serving with the contexts we have; the reload was checked in main */
    }
    tt_transport_t *t = wrap(SSL_new(s->ctx[0]), fd);
    if (t == NULL) return NULL;
    tls_transport_t *tt = (tls_transport_t *)t;
    SSL_set_accept_state(tt->ssl);
    /* Read-ahead: what the socket holds, up to OpenSSL's buffer, in one read(2), not a record header and then its
     * body; tls_read stops once that read came back short and nothing is buffered (bio_on_read). */
    SSL_set_read_ahead(tt->ssl, 1);
    BIO *rb = SSL_get_rbio(tt->ssl);
    BIO_set_callback_arg(rb, (char *)tt);
    BIO_set_callback_ex(rb, bio_on_read);
    return t;
}

/* Notes why a handshake failed, before the error queue is cleared: the certificate check's reason when that
 * was the failure (with SSL_VERIFY_NONE the chain is still checked, so the verify result alone says nothing). */
static void note_failure(tls_transport_t *t, int ssl_err)
{
    unsigned long e = ERR_peek_last_error();
    long v = SSL_get_verify_result(t->ssl);
    t->fail_verify = false;
    if (e != 0 && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && v != X509_V_OK) {
        t->fail = X509_verify_cert_error_string(v);
        t->fail_verify = true;
    } else if (e != 0 && ERR_reason_error_string(e) != NULL) {
        t->fail = ERR_reason_error_string(e);
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno == ECONNRESET) {
        t->fail = "the connection was reset during the handshake";
    } else if (ssl_err == SSL_ERROR_SYSCALL) {
        t->fail = "the peer closed the connection during the handshake";
    } else {
        t->fail = "the handshake failed";
    }
}

int tt_tls_handshake(tt_transport_t *tr)
{
    tls_transport_t *t = (tls_transport_t *)tr;
    t->base.want_write = false;
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ: return 0;
    case SSL_ERROR_WANT_WRITE: t->base.want_write = true; return 0;
    default:
        note_failure(t, e);
        ERR_clear_error();
        return -1;
    }
}

const char *tt_tls_failure(const tt_transport_t *tr, bool *verify)
{
    const tls_transport_t *t = (const tls_transport_t *)tr;
    if (!tt_transport_is_tls(tr)) return NULL;
    if (verify) *verify = t->fail_verify;
    return t->fail;
}

const char *tt_tls_sni(const tt_transport_t *tr)
{
    if (!tt_transport_is_tls(tr)) return NULL;
    const tls_transport_t *t = (const tls_transport_t *)tr;
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *tt_tls_alpn(const tt_transport_t *tr)
{
    const tls_transport_t *t = (const tls_transport_t *)tr;
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0) return "h2";
    if (n == 8 && memcmp(p, "http/1.1", 8) == 0) return "http/1.1";
    return NULL;
}

bool tt_tls_resumed(const tt_transport_t *tr)
{
    return SSL_session_reused(((const tls_transport_t *)tr)->ssl) == 1;
}
const char *tt_tls_version(const tt_transport_t *tr)
{
    return SSL_get_version(((const tls_transport_t *)tr)->ssl);
}

/* ---- clients (upstreams) ---- */

struct tt_tls_client {
    SSL_CTX *ctx;
    char *sni;
    bool verify;
};

tt_tls_client_t *tt_tls_client_new(const tt_tls_client_conf_t *conf, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (c == NULL) {
        snprintf(err, errlen, "TLS client context: %s", tt_tls_last_error());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF); /* an EOF ends a close-delimited response */
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (conf->alpn_h2)
        SSL_CTX_set_alpn_protos(c, alpn_h2_h1, sizeof(alpn_h2_h1) - 1);
    else
        SSL_CTX_set_alpn_protos(c, alpn_h1, sizeof(alpn_h1) - 1);
    if (conf->verify) {
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
        int ok =
            conf->ca_file ? SSL_CTX_load_verify_locations(c, conf->ca_file, NULL) : SSL_CTX_set_default_verify_paths(c);
        if (ok != 1) {
            snprintf(err, errlen, "%s: %s", conf->ca_file ? conf->ca_file : "system CA store", tt_tls_last_error());
            SSL_CTX_free(c);
            return NULL;
        }
    }
    if (conf->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(c, conf->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(c, conf->key_file ? conf->key_file : conf->cert_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(c) != 1) {
            snprintf(err, errlen, "client certificate %s: %s", conf->cert_file, tt_tls_last_error());
            SSL_CTX_free(c);
            return NULL;
        }
    }
    tt_tls_client_t *cl = tt_calloc(1, sizeof(*cl));
    cl->ctx = c;
    cl->verify = conf->verify;
    cl->sni = conf->sni ? tt_strndup(conf->sni, strlen(conf->sni)) : NULL;
    return cl;
}

void tt_tls_client_free(tt_tls_client_t **cp)
{
    tt_tls_client_t *c = *cp;
    if (c == NULL) return;
    SSL_CTX_free(c->ctx);
    free(c->sni);
    free(c);
    *cp = NULL;
}

tt_transport_t *tt_tls_connect(tt_tls_client_t *c, int fd, void *session)
{
    SSL *ssl = SSL_new(c->ctx);
    if (ssl == NULL) return NULL;
    if (c->sni != NULL) {
        unsigned char ip[16];
        bool literal = inet_pton(AF_INET, c->sni, ip) == 1 || inet_pton(AF_INET6, c->sni, ip) == 1;
        if (!literal) SSL_set_tlsext_host_name(ssl, c->sni); /* RFC 6066 3: no IP literals in SNI */
        if (c->verify) SSL_set1_host(ssl, c->sni);           /* OpenSSL 3 checks an IP literal as an address */
    }
    if (session != NULL) SSL_set_session(ssl, session);
    tt_transport_t *t = wrap(ssl, fd);
    if (t != NULL) SSL_set_connect_state(ssl);
    return t;
}

void *tt_tls_take_session(tt_transport_t *tr)
{
    if (!tt_transport_is_tls(tr)) return NULL;
    SSL_SESSION *s = SSL_get1_session(((tls_transport_t *)tr)->ssl);
    if (s != NULL && !SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

void *tt_tls_session_ref(void *session)
{
    SSL_SESSION_up_ref(session);
    return session;
}

void tt_tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}
