/* privs.h -- running as an unprivileged user: look the user up, then drop root for good after start-up
 *
 * `tether serve` started as root (to bind ports below 1024, to open log files in root's directories) switches
 * to `[server] user` (and `group`) once every listener is bound and every log file is open, before any worker
 * thread starts, the way nginx's worker processes do. The switch cannot be undone: a later reload runs as that
 * user and cannot bind a port below 1024 unless the service manager gave the process CAP_NET_BIND_SERVICE
 * (docs/config.md, contrib/tether.service).
 */
#ifndef TT_CORE_PRIVS_H
#define TT_CORE_PRIVS_H

#include "core/compat.h"

#include <sys/types.h>

/** Who to become: a user, and the group it runs with (its primary group unless `group` named another). */
typedef struct tt_privs {
    char user[64];
    uid_t uid;
    gid_t gid;
} tt_privs_t;

/**
 * Looks up `user` in the user database (getpwnam_r) and `group` (getgrnam_r; NULL: the user's primary group)
 * into `*p`. Returns 0, or -1 with `*why` (a static string: "no such user", "no such group", "name too long", or
 * the lookup's error). Main thread at start-up (the NSS lookup may be slow or open files).
 */
int tt_privs_lookup(const char *user, const char *group, tt_privs_t *p, const char **why);
/** True when every id of the process (real, effective, saved; user and group) is already `p`'s. Any thread. */
bool tt_privs_is_current(const tt_privs_t *p);
/** True when this process can become `p`: it runs as root, or already is `p`. Any thread. */
bool tt_privs_can_drop(const tt_privs_t *p);
/**
 * Becomes `p` for good: the supplementary groups of the user (initgroups), then group and user ids, real,
 * effective and saved (setresgid, setresuid), and checks that the switch is irreversible (setuid(0) fails and
 * every id is the new one). A process that is not root may only already be `p` (0, nothing done): anything
 * else is refused. Returns 0, or -1 with the reason in `err`. Call before any thread starts: the ids of
 * threads started earlier are changed too by glibc, but not atomically with this call.
 */
int tt_privs_drop(const tt_privs_t *p, char *err, size_t errlen);

#endif
