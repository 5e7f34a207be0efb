/* log.h -- the error log: one line per event on stderr (or a file), with time and level */
#ifndef TT_CORE_LOG_H
#define TT_CORE_LOG_H

#include "core/compat.h"

typedef enum tt_log_level { TT_LOG_ERROR = 0, TT_LOG_WARN, TT_LOG_INFO, TT_LOG_DEBUG } tt_log_level_t;

/** Sets the most verbose level printed [info] and the fd written to [2]. Call before threads start. */
void tt_log_setup(tt_log_level_t level, int fd);
/** Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int tt_log_level_parse(const char *s);
/** True when `level` would be printed. */
bool tt_log_enabled(tt_log_level_t level);
/** Writes one line "<UTC time> [level] message" with a single write(2); safe from any thread. */
TT_PRINTF(2, 3) void tt_log(tt_log_level_t level, const char *fmt, ...);

#endif
