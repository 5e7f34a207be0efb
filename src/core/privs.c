/* privs.c -- the user database lookups and the one-way switch from root to the configured user */
#include "core/privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

int tt_privs_lookup(const char *user, const char *group, tt_privs_t *p, const char **why)
{
    char buf[16384];
    memset(p, 0, sizeof(*p));
    if (strlen(user) >= sizeof(p->user)) {
        *why = "name too long";
        return -1;
    }
    struct passwd pw, *pwr = NULL;
    int r = getpwnam_r(user, &pw, buf, sizeof(buf), &pwr);
    if (pwr == NULL) {
        *why = r == 0 || r == ENOENT || r == ESRCH ? "no such user" : strerror(r);
        return -1;
    }
    memcpy(p->user, user, strlen(user) + 1);
    p->uid = pw.pw_uid;
    p->gid = pw.pw_gid;
    if (group == NULL) return 0;
    struct group gr, *grr = NULL;
    r = getgrnam_r(group, &gr, buf, sizeof(buf), &grr);
    if (grr == NULL) {
        *why = r == 0 || r == ENOENT || r == ESRCH ? "no such group" : strerror(r);
        return -1;
    }
    p->gid = gr.gr_gid;
    return 0;
}

bool tt_privs_is_current(const tt_privs_t *p)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) return false;
    return ru == p->uid && eu == p->uid && su == p->uid && rg == p->gid && eg == p->gid && sg == p->gid;
}

bool tt_privs_can_drop(const tt_privs_t *p)
{
    return geteuid() == 0 || tt_privs_is_current(p);
}

int tt_privs_drop(const tt_privs_t *p, char *err, size_t errlen)
{
    if (geteuid() != 0) {
        if (tt_privs_is_current(p)) return 0; /* started as that user already (systemd's User=, su): nothing to drop */
        snprintf(err, errlen, "not root: cannot switch to user %s", p->user);
        return -1;
    }
    if (p->uid == 0 && p->gid == 0) return 0; /* user = root: nothing to drop */
    if (initgroups(p->user, p->gid) != 0) {
        snprintf(err, errlen, "user: %s: initgroups: %s", p->user, strerror(errno));
        return -1;
    }
    if (setresgid(p->gid, p->gid, p->gid) != 0) {
        snprintf(err, errlen, "group: gid %u: setresgid: %s", (unsigned)p->gid, strerror(errno));
        return -1;
    }
    if (setresuid(p->uid, p->uid, p->uid) != 0) {
        snprintf(err, errlen, "user: %s: setresuid: %s", p->user, strerror(errno));
        return -1;
    }
    /* The switch must be one-way: with the saved set-user-ID or a capability left, a bug could undo it. */
    if (p->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, errlen, "user: %s: root could be regained after the switch", p->user);
        return -1;
    }
    if (!tt_privs_is_current(p)) {
        snprintf(err, errlen, "user: %s: the user and group ids did not all change", p->user);
        return -1;
    }
    return 0;
}
