/* test_tls.c -- server TLS (src/net/tls.c): each listener group keeps its own ticket rotation (issue 9), and
 * workers handshake on their own contexts while the main thread reloads certificates
 *
 * The server side is tether's (tt_tls_accept); the client is plain OpenSSL pinned to one TLS version, over a
 * socketpair. Ticket periods are read with time(2): this file defines time() (the executable's definition
 * wins over libc's for libtether and OpenSSL alike), shifted by an offset the tests move forward.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the clock: time() = real time + offset (seconds) ---- */

static _Atomic int64_t clock_offset_s;

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t v = ts.tv_sec + (time_t)atomic_load_explicit(&clock_offset_s, memory_order_relaxed);
    if (out != NULL) *out = v;
    return v;
}

/* Each test starts at the next whole hour after the last one's clock (a start of both a 1m and a 1h period),
 * so the clock only moves forward. */
static int64_t clock_origin;

static void clock_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec + atomic_load(&clock_offset_s);
    clock_origin = (now / 3600 + 1) * 3600;
}

/* Sets tether's clock to `k` seconds after the origin. */
static void clock_set(int64_t k)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&clock_offset_s, clock_origin + k - (int64_t)ts.tv_sec);
}

/* ---- a throw-away certificate ---- */

typedef struct fixture {
    char dir[64];
    char cert[96], key[96];
    tt_tls_cert_conf_t files;
    tt_tls_conf_t conf[2]; /* [0]: ticket_rotation 1m, [1]: 1h */
    tt_tls_source_t *src[2];
} fixture_t;

static void write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static void make_cert(fixture_t *f)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_gmtime_adj(X509_getm_notAfter(x), 30 * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    write_pem(f->cert, x, NULL);
    write_pem(f->key, NULL, key);
    X509_free(x);
    EVP_PKEY_free(key);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    if (f == NULL) return -1;
    memcpy(f->dir, "/tmp/tt_tls_XXXXXX", sizeof("/tmp/tt_tls_XXXXXX"));
    if (mkdtemp(f->dir) == NULL) return -1;
    snprintf(f->cert, sizeof(f->cert), "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof(f->key), "%s/key.pem", f->dir);
    make_cert(f);
    f->files = (tt_tls_cert_conf_t){.cert_file = f->cert, .key_file = f->key};
    for (int g = 0; g < 2; g++) {
        f->conf[g] = (tt_tls_conf_t){.certs = &f->files,
                                     .ncerts = 1,
                                     .min_version = TLS1_2_VERSION,
                                     .alpn_h2 = false,
                                     .tickets = true,
                                     .ticket_rotation_ms = g == 0 ? 60000 : 3600000,
                                     .cache_size = 0}; /* tickets only: no resumption by session id */
        char err[256];
        f->src[g] = tt_tls_source_new(&f->conf[g], err, sizeof(err));
        if (f->src[g] == NULL) {
            print_error("%s\n", err);
            return -1;
        }
    }
    clock_start();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    for (int g = 0; g < 2; g++) tt_tls_source_free(&f->src[g]);
    unlink(f->cert);
    unlink(f->key);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- one connection ---- */

static SSL_CTX *client_ctx(int version)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c, version);
    SSL_CTX_set_max_proto_version(c, version);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF); /* a cached TLS 1.3 session is single use */
    return c;
}

enum { CONN_FAILED = -1, CONN_FULL = 0, CONN_RESUMED = 1 };

/*
 * One connection to `srv` offering `offer` (may be NULL): the handshake, "ping" up and "pong" down (so a
 * TLS 1.3 client has read its tickets). CONN_RESUMED or CONN_FULL (both sides must agree), CONN_FAILED.
 * `*got`, when not NULL, receives the client's session afterwards (SSL_SESSION_free it). No cmocka asserts:
 * worker threads call it too.
 */
static int connect_once(tt_tls_server_t *srv, SSL_CTX *cctx, SSL_SESSION *offer, SSL_SESSION **got)
{
    int sv[2], res = CONN_FAILED;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return CONN_FAILED;
    tt_transport_t *st = tt_tls_accept(srv, sv[0]);
    SSL *c = SSL_new(cctx);
    if (st == NULL || c == NULL || SSL_set_fd(c, sv[1]) != 1) goto out;
    if (offer != NULL) SSL_set_session(c, offer);
    SSL_set_connect_state(c);
    bool sdone = false, cdone = false;
    for (int i = 0; i < 100 && !(sdone && cdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c), e = r == 1 ? 0 : SSL_get_error(c, r);
            if (e != 0 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) goto out;
            cdone = r == 1;
        }
        if (!sdone) {
            int r = tt_tls_handshake(st);
            if (r < 0) goto out;
            sdone = r == 1;
        }
    }
    if (!sdone || !cdone || SSL_write(c, "ping", 4) != 4) goto out;
    char buf[16];
    ssize_t n = -EAGAIN;
    for (int i = 0; i < 100 && n == -EAGAIN; i++) n = tt_transport_read(st, sv[0], buf, sizeof(buf));
    if (n != 4 || memcmp(buf, "ping", 4) != 0 || tt_transport_write(st, sv[0], "pong", 4, false) != 4) goto out;
    int m = -1;
    for (int i = 0; i < 100 && m <= 0; i++) {
        m = SSL_read(c, buf, sizeof(buf));
        if (m <= 0 && SSL_get_error(c, m) != SSL_ERROR_WANT_READ) goto out;
    }
    if (m != 4 || memcmp(buf, "pong", 4) != 0) goto out;
    bool resumed = SSL_session_reused(c) == 1;
    if (resumed != tt_tls_resumed(st)) goto out;
    res = resumed ? CONN_RESUMED : CONN_FULL;
    SSL_shutdown(c); /* a session freed without close_notify is marked not resumable */
    if (got != NULL) *got = SSL_get1_session(c);
out:
    ERR_clear_error();
    SSL_free(c);
    tt_transport_free(&st);
    close(sv[0]);
    close(sv[1]);
    return res;
}

static SSL_SESSION *full_handshake(tt_tls_server_t *srv, SSL_CTX *cctx)
{
    SSL_SESSION *s = NULL;
    assert_int_equal(connect_once(srv, cctx, NULL, &s), CONN_FULL);
    assert_non_null(s);
    return s;
}

static bool resumes(tt_tls_server_t *srv, SSL_CTX *cctx, SSL_SESSION *offer, SSL_SESSION **got)
{
    int r = connect_once(srv, cctx, offer, got);
    assert_int_not_equal(r, CONN_FAILED);
    return r == CONN_RESUMED;
}

/* ---- each group keeps its own rotation ---- */

/* Group 0 rotates every minute, group 1 every hour; both built in one thread, as one worker builds all its
 * listeners. Before issue 9 the last group built set a process-wide period for both. */
static void keeps_each_listener_groups_ticket_rotation(fixture_t *f, int version)
{
    char err[256];
    tt_tls_server_t *fast = tt_tls_server_new(f->src[0], err, sizeof(err));
    tt_tls_server_t *slow = tt_tls_server_new(f->src[1], err, sizeof(err));
    assert_non_null(fast);
    assert_non_null(slow);
    SSL_CTX *cctx = client_ctx(version);

    clock_set(5); /* 5 s into minute M of hour H */
    SSL_SESSION *f0 = full_handshake(fast, cctx), *s0 = full_handshake(slow, cctx), *f1 = NULL;
    assert_true(resumes(fast, cctx, f0, NULL));
    assert_true(resumes(slow, cctx, s0, NULL));

    clock_set(65); /* minute M+1: the fast group's previous period, still accepted (and renewed) */
    assert_true(resumes(fast, cctx, f0, &f1));

    clock_set(125); /* minute M+2: M's key is gone for the fast group; the slow one is still in hour H */
    assert_false(resumes(fast, cctx, f0, NULL));
    assert_true(resumes(fast, cctx, f1, NULL));
    assert_true(resumes(slow, cctx, s0, NULL));

    /* different rotations, different keys: neither group decrypts the other's tickets */
    assert_false(resumes(fast, cctx, s0, NULL));
    assert_false(resumes(slow, cctx, f1, NULL));

    SSL_SESSION_free(f0);
    SSL_SESSION_free(f1);
    SSL_SESSION_free(s0);
    SSL_CTX_free(cctx);
    tt_tls_server_free(&fast);
    tt_tls_server_free(&slow);
    assert_null(fast);
}

static void keeps_each_listener_groups_ticket_rotation_tls12(void **state)
{
    keeps_each_listener_groups_ticket_rotation(*state, TLS1_2_VERSION);
}

static void keeps_each_listener_groups_ticket_rotation_tls13(void **state)
{
    keeps_each_listener_groups_ticket_rotation(*state, TLS1_3_VERSION);
}

/* ---- workers and reloads at once ---- */

#define WORKERS    2
#define ROUNDS     25
#define RELOADS    6
#define RELOAD_GAP 3000 /* us */

typedef struct worker {
    pthread_t thread;
    tt_tls_server_t *srv[2]; /* built by the main thread before the worker starts, as tt_server_new does */
    int full, resumed, failed;
} worker_t;

/* A worker: ROUNDS connections to each group, each offering the ticket of the one before. */
static void *worker_main(void *arg)
{
    worker_t *w = arg;
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION);
    SSL_SESSION *last[2] = {NULL, NULL};
    for (int i = 0; i < ROUNDS; i++) {
        for (int g = 0; g < 2; g++) {
            SSL_SESSION *got = NULL;
            int r = connect_once(w->srv[g], cctx, last[g], &got);
            w->failed += r == CONN_FAILED;
            w->full += r == CONN_FULL;
            w->resumed += r == CONN_RESUMED;
            if (got != NULL) {
                SSL_SESSION_free(last[g]);
                last[g] = got;
            }
        }
    }
    SSL_SESSION_free(last[0]);
    SSL_SESSION_free(last[1]);
    SSL_CTX_free(cctx);
    return NULL;
}

/* Every connection succeeds and every ticket but the first of each group resumes, while certificates are
 * reloaded under the workers (each rebuilds its contexts at its next accept). A data race here fails the
 * ThreadSanitizer build (make test-tsan). */
static void handshakes_on_several_workers_while_the_main_thread_reloads(void **state)
{
    fixture_t *f = *state;
    worker_t w[WORKERS] = {0};
    char err[256];
    clock_set(5);
    for (int i = 0; i < WORKERS; i++)
        for (int g = 0; g < 2; g++) {
            w[i].srv[g] = tt_tls_server_new(f->src[g], err, sizeof(err));
            assert_non_null(w[i].srv[g]);
        }
    for (int i = 0; i < WORKERS; i++) assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    int reloaded = 0;
    for (int r = 0; r < RELOADS; r++) {
        for (int g = 0; g < 2; g++) reloaded += tt_tls_source_reload(f->src[g], err, sizeof(err)) == 0;
        usleep(RELOAD_GAP);
    }
    for (int i = 0; i < WORKERS; i++) pthread_join(w[i].thread, NULL);
    assert_int_equal(reloaded, 2 * RELOADS);
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(w[i].failed, 0);
        assert_int_equal(w[i].full, 2);
        assert_int_equal(w[i].resumed, 2 * ROUNDS - 2);
        for (int g = 0; g < 2; g++) tt_tls_server_free(&w[i].srv[g]);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(keeps_each_listener_groups_ticket_rotation_tls12),
        T(keeps_each_listener_groups_ticket_rotation_tls13),
        T(handshakes_on_several_workers_while_the_main_thread_reloads),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
