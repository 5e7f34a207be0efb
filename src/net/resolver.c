/* resolver.c -- one helper thread re-resolving upstream server names with getaddrinfo, publishing set changes */
#include "net/resolver.h"
#include "core/err.h"
#include "core/log.h"
#include "net/addrset.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

struct tt_dns_name {
    tt_dns_name_t *next; /* in r->names */
    tt_resolver_t *r;
    char *host;
    uint16_t port;
    uint64_t interval_ms;
    char label[300]; /* "host:port" */
    /* guarded by r->mu */
    int refs;         /* holders, plus one while the thread resolves it */
    uint64_t next_ms; /* when it is resolved next (CLOCK_MONOTONIC ms) */
    bool failing;     /* the last resolution failed (logged once per change of state) */
    tt_addr_t addrs[TT_DNS_MAX_ADDRS];
    size_t naddrs;
    /* read without the lock */
    _Atomic uint64_t version;
    _Atomic uint64_t resolutions, failures, changes;
    _Atomic uint32_t count;
};

struct tt_resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC: a name is due, a name was added, or stop */
    tt_dns_name_t *names;
    int *subs; /* subscribed eventfds */
    size_t nsubs, capsubs;
    bool may_start, started, stopping;
    bool resolving; /* the thread is in getaddrinfo, without the lock */
    bool orphaned;  /* tt_resolver_free did not wait for that: the thread frees the resolver when it returns */
    pthread_t thread;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

tt_resolver_t *tt_resolver_new(void)
{
    tt_resolver_t *r = tt_calloc(1, sizeof(*r));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void name_free(tt_dns_name_t *n)
{
    free(n->host);
    free(n);
}

/* Takes `n` out of r->names and frees it. Under r->mu. */
static void name_unlink(tt_resolver_t *r, tt_dns_name_t *n)
{
    for (tt_dns_name_t **pp = &r->names; *pp != NULL; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    name_free(n);
}

/* Resolves `host` into `out` (port `port`): the count, or 0 with a static reason in `*why`. Blocks: thread only. */
static size_t resolve(const char *host, uint16_t port, tt_addr_t *out, size_t cap, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        *why = gai_strerror(rc);
        return 0;
    }
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai != NULL && n < cap; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof(out[n].ss)) continue;
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        tt_addr_set_port(&out[n], port);
        n++;
    }
    freeaddrinfo(res);
    n = tt_addrset_dedup(out, n);
    if (n == 0) *why = "no IPv4 or IPv6 address";
    return n;
}

/* Publishes one resolution of `n` (`got` addresses, 0: failed with `why`). True when the set changed. Under r->mu. */
static bool publish(tt_dns_name_t *n, const tt_addr_t *got, size_t ngot, const char *why)
{
    char was[512], now[512];
    atomic_fetch_add_explicit(&n->resolutions, 1, memory_order_relaxed);
    if (ngot == 0) {
        atomic_fetch_add_explicit(&n->failures, 1, memory_order_relaxed);
        if (!n->failing) {
            tt_addrset_format(n->addrs, n->naddrs, was, sizeof(was));
            tt_log(TT_LOG_WARN, "dns: resolving %s failed (%s); keeping the last addresses: %s", n->label, why, was);
        }
        n->failing = true;
        return false;
    }
    bool same = tt_addrset_same(n->addrs, n->naddrs, got, ngot);
    if (n->failing) {
        tt_addrset_format(got, ngot, now, sizeof(now));
        tt_log(TT_LOG_INFO, "dns: %s resolves again: %s", n->label, now);
        n->failing = false;
    }
    if (same) {
        /* The same set, perhaps in another order (DNS round-robin): keep ours, so nothing moves. */
        return false;
    }
    tt_addrset_format(n->addrs, n->naddrs, was, sizeof(was));
    tt_addrset_format(got, ngot, now, sizeof(now));
    tt_log(TT_LOG_INFO, "dns: %s now resolves to %s (was %s)", n->label, now, was);
    memcpy(n->addrs, got, ngot * sizeof(*got));
    n->naddrs = ngot;
    atomic_store_explicit(&n->count, (uint32_t)ngot, memory_order_relaxed);
    atomic_fetch_add_explicit(&n->changes, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&n->version, 1, memory_order_release);
    return true;
}

static void wake_subscribers(tt_resolver_t *r)
{
    for (size_t i = 0; i < r->nsubs; i++) {
        uint64_t one = 1;
        ssize_t w = write(r->subs[i], &one, sizeof(one)); /* EAGAIN: the counter is full, a wake-up is pending */
        (void)w;
    }
}

/* Frees what is left of the resolver once no thread uses it. */
static void resolver_dispose(tt_resolver_t *r)
{
    while (r->names != NULL) name_unlink(r, r->names); /* none should be left: a holder outlived the resolver */
    free(r->subs);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void *resolver_main(void *arg)
{
    tt_resolver_t *r = arg;
    tt_addr_t *got = tt_calloc(TT_DNS_MAX_ADDRS, sizeof(*got));
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        tt_dns_name_t *due = NULL;
        for (tt_dns_name_t *n = r->names; n != NULL; n = n->next)
            if (due == NULL || n->next_ms < due->next_ms) due = n;
        uint64_t t = mono_ms();
        if (due == NULL || due->next_ms > t) {
            if (due == NULL) {
                pthread_cond_wait(&r->cv, &r->mu);
            } else {
                struct timespec ts = {.tv_sec = (time_t)(due->next_ms / 1000),
                                      .tv_nsec = (long)(due->next_ms % 1000) * 1000000};
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            }
            continue;
        }
        due->refs++; /* alive while resolved without the lock */
        r->resolving = true;
        pthread_mutex_unlock(&r->mu);
        const char *why = NULL;
        size_t ngot = resolve(due->host, due->port, got, TT_DNS_MAX_ADDRS, &why);
        pthread_mutex_lock(&r->mu);
        r->resolving = false;
        due->next_ms = mono_ms() + due->interval_ms;
        if (--due->refs == 0) {
            name_unlink(r, due); /* released meanwhile: nobody wants the answer */
            continue;
        }
        if (!r->stopping && publish(due, got, ngot, why)) wake_subscribers(r);
    }
    bool orphaned = r->orphaned;
    pthread_mutex_unlock(&r->mu);
    free(got);
    if (orphaned) resolver_dispose(r);
    return NULL;
}

/* Starts the thread when it may run and has a name to resolve. Under r->mu. */
static void maybe_start(tt_resolver_t *r)
{
    if (r->started || !r->may_start || r->names == NULL) return;
    r->started = true;
    int rc = pthread_create(&r->thread, NULL, resolver_main, r);
    if (rc != 0) tt_fatal("resolver thread: %s", strerror(rc));
}

void tt_resolver_start(tt_resolver_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->may_start = true;
    maybe_start(r);
    pthread_mutex_unlock(&r->mu);
}

tt_dns_name_t *tt_resolver_watch(tt_resolver_t *r, const char *host, uint16_t port, uint64_t interval_ms,
                                 const tt_addr_t *seed)
{
    pthread_mutex_lock(&r->mu);
    tt_dns_name_t *n;
    for (n = r->names; n != NULL; n = n->next)
        if (n->port == port && n->interval_ms == interval_ms && strcmp(n->host, host) == 0) break;
    if (n == NULL) {
        n = tt_calloc(1, sizeof(*n));
        n->r = r;
        n->host = tt_strndup(host, strlen(host));
        n->port = port;
        n->interval_ms = interval_ms;
        snprintf(n->label, sizeof(n->label), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
        if (seed != NULL && seed->len != 0) {
            n->addrs[0] = *seed;
            n->naddrs = 1;
        }
        atomic_init(&n->version, 1);
        atomic_init(&n->resolutions, 0);
        atomic_init(&n->failures, 0);
        atomic_init(&n->changes, 0);
        atomic_init(&n->count, (uint32_t)n->naddrs);
        n->next_ms = 0; /* the whole set at once: the start-up resolution kept only its first address */
        n->next = r->names;
        r->names = n;
        pthread_cond_signal(&r->cv);
    }
    n->refs++;
    maybe_start(r);
    pthread_mutex_unlock(&r->mu);
    return n;
}

void tt_dns_name_release(tt_dns_name_t **np)
{
    tt_dns_name_t *n = *np;
    if (n == NULL) return;
    *np = NULL;
    tt_resolver_t *r = n->r;
    pthread_mutex_lock(&r->mu);
    if (--n->refs == 0) name_unlink(r, n);
    pthread_mutex_unlock(&r->mu);
}

uint64_t tt_dns_name_version(const tt_dns_name_t *n)
{
    return atomic_load_explicit(&n->version, memory_order_acquire);
}

size_t tt_dns_name_get(tt_dns_name_t *n, tt_addr_t *out, size_t cap, uint64_t *version)
{
    pthread_mutex_lock(&n->r->mu);
    size_t k = TT_MIN(n->naddrs, cap);
    memcpy(out, n->addrs, k * sizeof(*out));
    *version = atomic_load_explicit(&n->version, memory_order_relaxed);
    pthread_mutex_unlock(&n->r->mu);
    return k;
}

void tt_dns_name_stats(const tt_dns_name_t *n, tt_dns_stats_t *out)
{
    out->resolutions = atomic_load_explicit(&n->resolutions, memory_order_relaxed);
    out->failures = atomic_load_explicit(&n->failures, memory_order_relaxed);
    out->changes = atomic_load_explicit(&n->changes, memory_order_relaxed);
    out->naddrs = atomic_load_explicit(&n->count, memory_order_relaxed);
}

void tt_resolver_subscribe(tt_resolver_t *r, int fd)
{
    pthread_mutex_lock(&r->mu);
    if (r->nsubs == r->capsubs) {
        r->capsubs = r->capsubs ? 2 * r->capsubs : 8;
        r->subs = tt_realloc(r->subs, r->capsubs * sizeof(*r->subs));
    }
    r->subs[r->nsubs++] = fd;
    pthread_mutex_unlock(&r->mu);
}

void tt_resolver_unsubscribe(tt_resolver_t *r, int fd)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->nsubs; i++)
        if (r->subs[i] == fd) {
            r->subs[i] = r->subs[--r->nsubs];
            break;
        }
    pthread_mutex_unlock(&r->mu);
}

void tt_resolver_free(tt_resolver_t **rp)
{
    tt_resolver_t *r = *rp;
    if (r == NULL) return;
    *rp = NULL;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    /* A getaddrinfo that waits for a DNS server that does not answer must not hold the exit up (resolv.conf timeouts
     * add up to many seconds): the thread is left to finish it and free the resolver itself. */
    r->orphaned = r->started && r->resolving;
    bool orphaned = r->orphaned, started = r->started;
    pthread_t th = r->thread;
    pthread_mutex_unlock(&r->mu);
    if (orphaned) {
        pthread_detach(th);
        return;
    }
    if (started) pthread_join(th, NULL);
    resolver_dispose(r);
}
