/* log.h -- the error log: one line per event on stderr, a file, or syslog (RFC 3164 over a unix datagram socket) */
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
 *  closed one; connects a syslog socket again. 0 (also when the log is stderr) or -errno (the old file or socket
 *  stays in use). Any thread. */
int tt_log_reopen(void);
/** Where `error_log = syslog...` sends: a unix datagram socket, a facility and a tag. */
typedef struct tt_log_syslog {
    char path[108]; /* the socket [/dev/log] */
    int facility;   /* RFC 5424 6.2.1 code [3, daemon] */
    char tag[33];   /* the program name before [PID] [tether] */
} tt_log_syslog_t;

/** True when an error_log value names syslog: "syslog" or "syslog:..." (a file named so is "./syslog"). */
bool tt_log_is_syslog(const char *spec);
/**
 * Parses "syslog[:ITEM[,ITEM...]]", each ITEM an absolute socket path, facility=NAME (kern, user, mail, daemon,
 * auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0..local7) or tag=NAME (1-32 of [A-Za-z0-9_.-]).
 * Returns 0, or -1 with a static reason in `*why`. Pure.
 */
int tt_log_syslog_parse(const char *spec, tt_log_syslog_t *out, const char **why);
/**
 * Makes syslog the error log: each line becomes one datagram "<PRI>Mmm dd hh:mm:ss TAG[PID]: message" (RFC 3164
 * 4.1, local time, as syslog(3) sends it; PRI = facility * 8 + severity: error 3, warn 4, info 6, debug 7) sent
 * without blocking (a full socket drops the line). Connects now: 0, or -errno (the log is unchanged). A send that
 * finds the socket gone (the syslog daemon restarted) connects once again. Any thread.
 */
int tt_log_open_syslog(const tt_log_syslog_t *s);
/** Closes the error log file or syslog socket, if any; lines go to stderr again. Call after the other threads
 *  stopped. */
void tt_log_close_file(void);
/** Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int tt_log_level_parse(const char *s);
/** True when `level` would be printed. */
bool tt_log_enabled(tt_log_level_t level);
/** Writes one line "<UTC time> [level] message" with a single write(2) (one datagram to syslog); safe from any
 *  thread. */
TT_PRINTF(2, 3) void tt_log(tt_log_level_t level, const char *fmt, ...);

#endif
