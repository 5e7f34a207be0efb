/* reqbuf.h -- a proxied request's whole content, held before an upstream is taken (request_buffering = on)
 *
 * The first `mem_limit` bytes stay in memory; the content beyond goes, with what memory held, to an unlinked temporary
 * file (O_TMPFILE in `dir`, or mkstemp() and unlink() where the file system has no O_TMPFILE), so a slow upload holds
 * no upstream connection and a large one no memory. The content is then read back from offset 0 as many times as the
 * exchange is tried (a replay starts over). One owner: the proxy exchange (proxy.c), which frees it at its end, on
 * every path. Owning worker only. File I/O blocks the loop (as nginx's client_body_temp_path does): keep `dir` on a
 * local disk or tmpfs.
 */
#ifndef TT_HANDLERS_REQBUF_H
#define TT_HANDLERS_REQBUF_H

#include "core/buf.h"

#include <stdbool.h>
#include <stdint.h>

/** The content held; zero-initialised plus tt_reqbuf_init(). */
typedef struct tt_reqbuf {
    tt_buf_t mem;       /* the content while it fits in mem_limit */
    int fd;             /* the temporary file (unlinked), -1 while in memory */
    uint64_t len;       /* content bytes held, in memory or in the file */
    uint64_t mem_limit; /* bytes kept in memory at most */
    const char *dir;    /* directory of the temporary file; not owned (the configuration's) */
} tt_reqbuf_t;

/** Prepares `b`: empty, in memory, spilling beyond `mem_limit` bytes to a file in `dir` (NULL: "/tmp"). */
void tt_reqbuf_init(tt_reqbuf_t *b, uint64_t mem_limit, const char *dir);
/** Appends `n` bytes (copied). 1 when this append moved the content to a new temporary file, 0 otherwise, -errno
 *  when the file cannot be made or written (the content is then incomplete: the caller answers 500). */
int tt_reqbuf_append(tt_reqbuf_t *b, tt_bufpool_t *bufs, const char *data, size_t n);
/** Up to `cap` bytes of content from offset `off`: a view into memory (`*out` points into `b`, valid until the next
 *  append or free) or read from the file into `scratch`. Returns the bytes (0 at the end), or -errno. */
int64_t tt_reqbuf_read(tt_reqbuf_t *b, uint64_t off, char *scratch, size_t cap, const char **out);
/** Releases the memory and closes the file (its storage goes with it); `b` is empty afterwards. Idempotent. */
void tt_reqbuf_free(tt_reqbuf_t *b, tt_bufpool_t *bufs);

#endif
