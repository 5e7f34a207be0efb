/* fuzz_conf.c -- libFuzzer target for the configuration loader: the input is an INI file
 *
 * The input goes to a memfd and is loaded through "/proc/self/fd/N" exactly as `tether serve --config`
 * loads a file: tt_conf_init, tt_conf_load, tt_conf_finish, tt_conf_dispose. It must never crash nor leak,
 * every error must name the file, and a config that finishes must hold what tt_conf_finish promises.
 *
 * Hermetic: an address value with a host name (server, address, listen) would make tt_addr_parse() call
 * getaddrinfo(). Inputs holding one are skipped before loading; the scan uses inih itself, fed line by
 * line like tt_conf_load feeds it, so it sees exactly the (section, key, value) triples the loader will.
 * getaddrinfo() is replaced by one that aborts, so a hole in the scan is reported rather than resolved.
 */
#include "conf/conf.h"

#include "core/err.h"

#include <arpa/inet.h>
#include <ini.h>
#include <netdb.h>
#include <sys/mman.h>
#include <unistd.h>

#define assert(x) TT_BUG_ON(!(x))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The loader must never resolve a name here (see above). */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    (void)service;
    (void)hints;
    (void)res;
    tt_fatal("fuzz_conf: getaddrinfo(\"%s\") was called: the hermetic scan missed a host name", node);
}

/* ---- the scan ---- */

/* True when tt_addr_parse(s, true, ...) might call getaddrinfo: not "[V6]...", and a host part (before the
 * last ':', or all of it) that is neither empty, "*", nor an IPv4 literal. Conservative. */
static bool may_resolve(const char *s)
{
    if (s[0] == '[') return false;
    const char *colon = strrchr(s, ':');
    size_t hn = colon ? (size_t)(colon - s) : strlen(s);
    if (hn == 0) return false;
    if (hn >= 256) return true; /* refused as too long, but be conservative */
    char host[256];
    memcpy(host, s, hn);
    host[hn] = '\0';
    if (strcmp(host, "*") == 0) return false;
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) != 1;
}

/* The same value after what add_server() does to it: "http://" dropped, one trailing '/' dropped, ":80"
 * appended when there is no ':' or the value ends in ']'. */
static bool server_may_resolve(const char *v)
{
    char buf[512];
    if (strncmp(v, "http://", 7) == 0) v += 7;
    size_t n = strlen(v);
    if (n + 4 >= sizeof(buf)) return true;
    memcpy(buf, v, n + 1);
    if (n > 0 && buf[n - 1] == '/') buf[--n] = '\0';
    if (strchr(buf, ':') == NULL || (n > 0 && buf[n - 1] == ']')) memcpy(buf + n, ":80", 4);
    return may_resolve(buf);
}

typedef struct scan {
    const char *p, *end;
    bool unsafe;
} scan_t;

/* fgets() over the input: up to num-1 bytes, through the first '\n'; NULL at the end. */
static char *scan_reader(char *str, int num, void *stream)
{
    scan_t *s = stream;
    if (s->p >= s->end || num <= 1) return NULL;
    size_t max = (size_t)num - 1, n = 0;
    while (n < max && s->p + n < s->end) {
        str[n] = s->p[n];
        if (s->p[n++] == '\n') break;
    }
    str[n] = '\0';
    s->p += n;
    return str;
}

static int scan_entry(void *user, const char *section, const char *name, const char *value)
{
    scan_t *s = user;
    (void)section;
    /* whatever the section: the loader decides which keys are addresses, the scan need not */
    if (strcmp(name, "server") == 0 || strcmp(name, "address") == 0 || strcmp(name, "listen") == 0)
        if (may_resolve(value) || server_may_resolve(value)) s->unsafe = true;
    return 1;
}

static bool hermetic(const uint8_t *data, size_t size)
{
    scan_t s = {.p = (const char *)data, .end = (const char *)data + size};
    ini_parse_stream(scan_reader, &s, scan_entry, &s);
    return !s.unsafe;
}

/* ---- what a finished config holds ---- */

static void check_finished(const tt_conf_t *c)
{
    assert(c->nlistens >= 1);
    for (size_t i = 0; i < c->nlistens; i++) {
        assert(c->listens[i].name != NULL && c->listens[i].naddrs >= 1);
        const tt_listen_policy_t *p = &c->listens[i].policy;
        assert(p->limits.max_fields >= 1 && p->limits.max_fields <= TT_H1_MAX_FIELDS);
        assert(p->header_timeout_ms >= 1);
    }
    for (size_t i = 0; i < c->nupstreams; i++) {
        const tt_upstream_conf_t *u = &c->upstreams[i];
        assert(u->name != NULL && u->name[0] != '\0');
        assert(u->nservers >= 1 && u->nservers <= 64);
        for (size_t j = 0; j < u->nservers; j++) assert(u->servers[j].name != NULL && u->servers[j].addr.len > 0);
        assert(u->pool.backoff_min_ms <= u->pool.backoff_max_ms);
        assert(u->pool.idle_timeout_ms >= 1);
        const tt_tcp_keepalive_t *ka = &u->pool.tcp_keepalive;
        if (ka->enabled) assert(ka->idle_s >= 1 && ka->interval_s >= 1 && ka->count >= 1 && ka->count <= 127);
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        const tt_conf_route_t *r = &c->routes[i];
        assert(r->prefix != NULL && r->prefix[0] == '/');
        assert((r->upstream == NULL) != (r->root == NULL));
        if (r->upstream) {
            bool found = false;
            for (size_t j = 0; j < c->nupstreams; j++) found |= strcmp(c->upstreams[j].name, r->upstream) == 0;
            assert(found);
        }
    }
    if (c->metrics_on) assert(c->metrics_path != NULL && c->metrics_path[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024 || !hermetic(data, size)) return 0;
    int fd = memfd_create("tether-fuzz-conf", MFD_CLOEXEC);
    assert(fd >= 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        assert(w > 0);
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    tt_conf_t c;
    char err[512];
    tt_conf_init(&c);
    err[0] = '\0';
    int r = tt_conf_load(&c, path, err, sizeof(err));
    assert(r == 0 || r == -1);
    if (r == 0) {
        err[0] = '\0';
        r = tt_conf_finish(&c, err, sizeof(err));
        assert(r == 0 || r == -1);
        if (r == 0) check_finished(&c);
    }
    /* every error names the file: "FILE:LINE: key: reason" or "FILE: reason" */
    if (r != 0) assert(strncmp(err, path, strlen(path)) == 0 && (err[strlen(path)] == ':'));
    tt_conf_dispose(&c);
    close(fd);
    return 0;
}
