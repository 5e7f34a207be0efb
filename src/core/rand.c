/* rand.c -- xoshiro256** (Blackman and Vigna, public domain algorithm) seeded by getrandom(2) */
#include "core/rand.h"

#include <sys/random.h>
#include <time.h>

/* splitmix64: spreads a weak seed over the 256 bits of state when getrandom(2) is not available. */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tt_rand_seed(tt_rand_t *r)
{
    ssize_t n = getrandom(r->s, sizeof(r->s), 0);
    if (n != (ssize_t)sizeof(r->s)) {
        struct timespec a, b;
        clock_gettime(CLOCK_REALTIME, &a);
        clock_gettime(CLOCK_MONOTONIC, &b);
        uint64_t x = (uint64_t)a.tv_sec * 1000000000ull + (uint64_t)a.tv_nsec;
        x ^= ((uint64_t)b.tv_nsec << 20) ^ (uint64_t)(uintptr_t)r;
        for (int i = 0; i < 4; i++) r->s[i] = splitmix(&x);
    }
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; /* the one state xoshiro never leaves */
    r->seeded = true;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t tt_rand_next(tt_rand_t *r)
{
    if (!r->seeded) tt_rand_seed(r);
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}
