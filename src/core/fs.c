/* fs.c -- openat2(RESOLVE_BENEATH), with a realpath fallback for kernels without it */
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_fallback(const char *root_path, const char *rel)
{
    char full[PATH_MAX], real[PATH_MAX], root_real[PATH_MAX];
    if ((size_t)snprintf(full, sizeof(full), "%s/%s", root_path, rel) >= sizeof(full)) return -ENAMETOOLONG;
    if (realpath(root_path, root_real) == NULL || realpath(full, real) == NULL) return -errno;
    size_t n = strlen(root_real);
    if (strncmp(real, root_real, n) != 0 || (real[n] != '/' && real[n] != '\0')) return -EXDEV;
    int fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tt_fs_open_beneath(int rootfd, const char *root_path, const char *rel)
{
    struct open_how how = {
        .flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof(how));
    if (fd >= 0) return (int)fd;
    /* EXDEV: the path escapes, or goes through an absolute symlink, which RESOLVE_BENEATH refuses even
     * when it points inside the root: resolve it fully and check where it lands. ENOSYS: kernel < 5.6. */
    if (errno == EXDEV || errno == ENOSYS) return open_fallback(root_path, rel);
    return -errno;
}
