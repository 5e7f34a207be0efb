/* notify.h -- telling the service manager (systemd, Type=notify) where the process is: ready, reloading,
 * stopping, and a one-line status
 *
 * The messages are systemd's sd_notify(3) protocol, sent with libsystemd. Each call is a no-op returning 0
 * when NOTIFY_SOCKET is not set (started by hand, by a test, or by a unit that is not Type=notify), so callers
 * never need to know how the process was started. A message that cannot be sent changes nothing in tether:
 * the service manager times the start out, which is what it should see. Main thread only (libsystemd reads
 * the environment, which the main thread owns).
 */
#ifndef TT_CORE_NOTIFY_H
#define TT_CORE_NOTIFY_H

#include "core/compat.h"

/** True when NOTIFY_SOCKET is set: a service manager listens for these messages. */
bool tt_notify_enabled(void);
/**
 * READY=1 (with MAINPID): start-up is complete. Call once every listener is open and the workers run, and again
 * at the end of each reload. Returns 0 (also when disabled) or -errno from sending.
 */
int tt_notify_ready(void);
/**
 * RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC now, in microseconds), which systemd >= 253 requires to tell
 * this reload from an earlier one; older managers ignore the extra field. Follow it with tt_notify_ready() when
 * the reload is done, whether it succeeded or kept the old configuration. 0 or -errno.
 */
int tt_notify_reloading(void);
/** STOPPING=1: a drain started; the service manager stops waiting for READY and waits for the exit. 0 or -errno. */
int tt_notify_stopping(void);
/** STATUS=<text>: one line shown by `systemctl status` (cut at 256 bytes; a newline ends it). 0 or -errno. */
TT_PRINTF(1, 2) int tt_notify_status(const char *fmt, ...);

#endif
