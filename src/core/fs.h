/* fs.h -- opening files under a root directory without escaping it */
#ifndef TT_CORE_FS_H
#define TT_CORE_FS_H

#include "core/compat.h"

/**
 * Opens `rel` (a relative path, NUL-terminated) under the directory `rootfd` read-only, non-blocking
 * and close-on-exec, refusing any resolution that leaves the root: `..`, absolute symlinks and symlinks
 * pointing outside (openat2 RESOLVE_BENEATH, Linux >= 5.6; a realpath check where openat2 is missing).
 * Returns the fd or -errno (-EXDEV when the path escapes the root).
 */
int tt_fs_open_beneath(int rootfd, const char *root_path, const char *rel);

#endif
