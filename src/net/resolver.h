/* resolver.h -- upstream server names re-resolved periodically on a helper thread (getaddrinfo)
 *
 * A server given by name (`server = backend.internal:8080`) follows what the name resolves to: one helper thread per
 * process runs getaddrinfo(3) for each watched name every `interval_ms` (so /etc/hosts, nsswitch and DNS are honoured
 * as by every other program), and publishes each change of the address set. A worker's loop never blocks on a
 * resolution: it learns of a change through an eventfd it subscribed (tt_resolver_subscribe), then copies the new set
 * (tt_dns_name_get) into state of its own. A failed resolution keeps the last good set; the error log says so once
 * per change of state (failing, resolving again), and once per change of the set.
 *
 * Threads: the resolver and its names are shared. tt_resolver_new, tt_resolver_free and tt_resolver_watch are for the
 * main thread; everything else is safe from any thread. The set of a name and the subscriber list are guarded by one
 * mutex, taken by a worker only when a name's version moved (never per request); versions and counters are atomics.
 */
#ifndef TT_NET_RESOLVER_H
#define TT_NET_RESOLVER_H

#include "net/addr.h"

typedef struct tt_resolver tt_resolver_t;
typedef struct tt_dns_name tt_dns_name_t;

/** Most addresses kept per name; further ones are ignored. */
#define TT_DNS_MAX_ADDRS 64

/** Creates a resolver; no thread runs before tt_resolver_start(). Main thread. */
tt_resolver_t *tt_resolver_new(void);
/** Lets the resolver run its thread: now when a name is watched, else with the first one (a reload may add names). Call
 *  it once the process runs as the user it keeps (after a privilege switch), so the thread is created as that user.
 *  Main thread. */
void tt_resolver_start(tt_resolver_t *r);
/** Stops the thread and frees the resolver; every name must have been released. A thread still waiting in
 *  getaddrinfo is not waited for: it frees the resolver when that returns (the process may exit first). Sets `*r` to
 *  NULL. Main thread. */
void tt_resolver_free(tt_resolver_t **r);
/**
 * Watches `host` (a name, not an IP literal) for port `port` (host byte order), re-resolved every `interval_ms`
 * (> 0), and returns a reference to it: the same name with the same port and interval is shared (one resolution for
 * every upstream and configuration generation that uses it, its counters carried on). A new name starts from
 * `seed` (the start-up resolution; may be NULL) as version 1 and is first resolved again on the thread as soon as it
 * runs.
 * Main thread; never blocks on the network.
 */
tt_dns_name_t *tt_resolver_watch(tt_resolver_t *r, const char *host, uint16_t port, uint64_t interval_ms,
                                 const tt_addr_t *seed);
/** Drops the reference `*n` (NULL: nothing); the last one stops its resolutions. Sets `*n` to NULL. Any thread. */
void tt_dns_name_release(tt_dns_name_t **n);
/** The version of `n`'s set: 1 at first, +1 each time a resolution changed the set (an acquire load). Any thread. */
uint64_t tt_dns_name_version(const tt_dns_name_t *n);
/** Copies `n`'s current set (at most `cap` addresses, in the resolver's order, RFC 6724 preference first) into
 *  `out`; `*version` gets the version copied. Returns the count (never 0 after a seed or a success). Any thread. */
size_t tt_dns_name_get(tt_dns_name_t *n, tt_addr_t *out, size_t cap, uint64_t *version);

/** What the resolver did for one name (metrics). */
typedef struct tt_dns_stats {
    uint64_t resolutions; /* getaddrinfo calls made (successes and failures) */
    uint64_t failures;    /* those that failed (the last good set was kept) */
    uint64_t changes;     /* resolutions that changed the set */
    uint64_t naddrs;      /* addresses in the current set */
} tt_dns_stats_t;

/** Reads `n`'s counters (relaxed atomics). Any thread. */
void tt_dns_name_stats(const tt_dns_name_t *n, tt_dns_stats_t *out);

/** After every change of any name's set, the resolver adds 1 to the eventfd `fd` (not owned) until
 *  tt_resolver_unsubscribe(); the subscriber then compares versions. Any thread. */
void tt_resolver_subscribe(tt_resolver_t *r, int fd);
/** Stops waking `fd`; once this returns the resolver never writes to it again (the caller may close it). Any
 *  thread. */
void tt_resolver_unsubscribe(tt_resolver_t *r, int fd);

#endif
