/* log.h -- the error log: one line per event on stderr (or a file), with time and level */
#ifndef TT_CORE_LOG_H
#define TT_CORE_LOG_H

#include "core/compat.h"

typedef enum tt_log_level { TT_LOG_ERROR = 0, TT_LOG_WARN, TT_LOG_INFO, TT_LOG_DEBUG } tt_log_level_t;

/** Sets the most verbose level printed [info] and the fd written to [2]. Call before threads start. */
void tt_log_setup(tt_log_level_t level, int fd);
/** Opens `path` for appending (created 0644, close-on-exec), as every log file is opened. Returns the descriptor
 *  (the caller owns it) or -errno. Any thread. */
int tt_log_open_append(const char *path);
/** Makes the file `path` (opened for appending, created 0644) the error log instead of the fd of
 *  tt_log_setup(). Returns 0 or -errno (the log is unchanged). Any thread. */
int tt_log_open_file(const char *path);
/** Opens the error log file's path again (after a rotation) onto the same descriptor, so no writer sees a
 *  closed one. 0 (also when the log is not a file) or -errno (the old file stays in use). Any thread. */
int tt_log_reopen(void);
/** Closes the error log file, if any; lines go to stderr again. Call after the other threads stopped. */
void tt_log_close_file(void);
/** Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int tt_log_level_parse(const char *s);
/** True when `level` would be printed. */
bool tt_log_enabled(tt_log_level_t level);
/** Writes one line "<UTC time> [level] message" with a single write(2); safe from any thread. */
TT_PRINTF(2, 3) void tt_log(tt_log_level_t level, const char *fmt, ...);

#endif
