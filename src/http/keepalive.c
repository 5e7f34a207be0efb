/* keepalive.c -- persistence decision, Keep-Alive values and the pressure rule; pure */
#include "http/keepalive.h"
#include "http/h1_parse.h"

tt_close_reason_t tt_keepalive_decide(const tt_ka_policy_t *p, const tt_ka_state_t *s)
{
    if (s->error_close) return TT_CLOSE_BAD_REQUEST;
    if (s->draining) return TT_CLOSE_SHUTDOWN;
    if (s->conn_tokens & TT_H1_CONN_CLOSE) return TT_CLOSE_CLIENT_CLOSE;
    if (s->minor_version == 0 && !(s->conn_tokens & TT_H1_CONN_KEEP_ALIVE)) return TT_CLOSE_CLIENT_CLOSE;
    if (s->close_delimited) return TT_CLOSE_CLIENT_CLOSE;
    if (s->unread_body) return TT_CLOSE_UNREAD_BODY;
    if (p->idle_timeout_ms == 0) return TT_CLOSE_IDLE_TIMEOUT;
    if (p->max_requests != 0 && s->requests >= p->max_requests) return TT_CLOSE_MAX_REQUESTS;
    if (p->max_lifetime_ms != 0 && s->age_ms >= p->max_lifetime_ms) return TT_CLOSE_MAX_LIFETIME;
    return TT_CLOSE_NONE;
}

uint32_t tt_keepalive_left(const tt_ka_policy_t *p, uint32_t requests)
{
    if (p->max_requests == 0) return UINT32_MAX;
    return requests >= p->max_requests ? 0 : p->max_requests - requests;
}

uint64_t tt_keepalive_pressure_idle(uint64_t idle_ms, uint32_t open, uint32_t max)
{
    if (max == 0 || idle_ms <= 1000 || (uint64_t)open * 4 <= (uint64_t)max * 3) return idle_ms;
    if (open >= max) return 1000;
    /* fraction above 75 %, in [0, 1): (open/max - 0.75) / 0.25 = (4*open - 3*max) / max */
    uint64_t num = (uint64_t)open * 4 - (uint64_t)max * 3, den = max;
    uint64_t cut = (idle_ms - 1000) * num / den;
    return idle_ms - cut;
}

size_t tt_keepalive_buckets(uint64_t idle_ms, uint64_t *out)
{
    size_t n = 0;
    if (idle_ms > 1000) {
        uint64_t whole = (idle_ms - 1) / 1000; /* whole seconds strictly below idle_ms */
        uint64_t steps = TT_MIN(whole, (uint64_t)TT_KA_MAX_BUCKETS - 1);
        for (uint64_t i = 0; i < steps; i++) {
            uint64_t s = steps == 1 ? 1 : 1 + (i * (whole - 1) + (steps - 1) / 2) / (steps - 1);
            if (n == 0 || out[n - 1] != s * 1000) out[n++] = s * 1000;
        }
    }
    out[n++] = idle_ms;
    return n;
}

size_t tt_keepalive_pick_bucket(const uint64_t *buckets, size_t n, uint64_t want_ms)
{
    size_t best = 0;
    for (size_t i = 0; i < n; i++)
        if (buckets[i] <= want_ms) best = i;
    return best;
}
