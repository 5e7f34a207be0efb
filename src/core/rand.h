/* rand.h -- a fast per-thread pseudo-random generator (xoshiro256**) seeded from the kernel's entropy
 *
 * Not for secrets: for identifiers that must not repeat or collide (request ids), drawn often enough that a
 * syscall per draw would show. One generator per thread; nothing here locks.
 */
#ifndef TT_CORE_RAND_H
#define TT_CORE_RAND_H

#include "core/compat.h"

/** A generator's state; zeroed means "not seeded yet" (tt_rand_next seeds it at its first draw). */
typedef struct tt_rand {
    uint64_t s[4];
    bool seeded;
} tt_rand_t;

/** Seeds `r` from getrandom(2) (256 bits); falls back to the clocks and the thread's address if that fails. */
void tt_rand_seed(tt_rand_t *r);
/** The next 64 random bits; seeds `r` first when needed. Owning thread only. */
uint64_t tt_rand_next(tt_rand_t *r);

#endif
