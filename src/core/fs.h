/* fs.h -- opening files under a root directory without escaping it */
#ifndef TT_CORE_FS_H
#define TT_CORE_FS_H

#include "core/compat.h"

/**
 * Opens `rel` (a relative path, NUL-terminated) under the directory `rootfd` (the directory `root_path`)
 * read-only, non-blocking and close-on-exec, refusing any resolution that leaves the root: `..` and
 * symlinks pointing outside. openat2(RESOLVE_BENEATH) does it in the kernel (Linux >= 5.6); a path it
 * refuses only for an absolute symlink, or an older kernel, gets a realpath() check of where the path
 * lands (racy against a concurrent rename inside the root, which a static root does not expect).
 * Returns the fd or -errno (-EXDEV when the path escapes the root).
 */
int tt_fs_open_beneath(int rootfd, const char *root_path, const char *rel);

#endif
