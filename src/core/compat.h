/* compat.h -- compiler helpers shared by every tether file, and the banned-call list (STYLE 25) */
#ifndef TT_CORE_COMPAT_H
#define TT_CORE_COMPAT_H

/* The headers that declare the banned functions are pulled in here, before the poison pragma, so that
 * a later include of them is a no-op and any use of a banned name fails to compile. */
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TT_LIKELY(x)     __builtin_expect(!!(x), 1)
#define TT_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#define TT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TT_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define TT_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define TT_UNUSED        __attribute__((unused))
#define TT_PRINTF(f, a)  __attribute__((format(printf, f, a)))
#define TT_MUST_CHECK    __attribute__((warn_unused_result))
#define TT_NORETURN      __attribute__((noreturn))

/** Pointer to the structure of type `type` whose member `member` is at `ptr` (intrusive nodes). */
#define tt_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/** Literal string and its length, for (ptr, len) APIs. */
#define TT_LIT(s) (s), (sizeof(s) - 1)

#pragma GCC poison strcpy strcat sprintf vsprintf gets strtok

#endif
