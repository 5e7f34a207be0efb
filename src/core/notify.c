/* notify.c -- sd_notify(3) messages to the service manager, through libsystemd; no-ops without NOTIFY_SOCKET */
#include "core/notify.h"

#include <stdarg.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

bool tt_notify_enabled(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    return s != NULL && s[0] != '\0';
}

/* sd_notify() returns > 0 when sent, 0 when there is no socket, -errno on failure. */
static int sent(int r)
{
    return r < 0 ? r : 0;
}

int tt_notify_ready(void)
{
    if (!tt_notify_enabled()) return 0;
    return sent(sd_notifyf(0, "READY=1\nMAINPID=%lu", (unsigned long)getpid()));
}

int tt_notify_reloading(void)
{
    if (!tt_notify_enabled()) return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    return sent(sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", usec));
}

int tt_notify_stopping(void)
{
    if (!tt_notify_enabled()) return 0;
    return sent(sd_notify(0, "STOPPING=1"));
}

int tt_notify_status(const char *fmt, ...)
{
    if (!tt_notify_enabled()) return 0;
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    text[strcspn(text, "\n")] = '\0'; /* one line: a newline would start another assignment */
    return sent(sd_notifyf(0, "STATUS=%s", text));
}
