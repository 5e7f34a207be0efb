/* advise.c -- reuse gaps, races, pressure and upstream pool counters into settings, with the numbers used */
#include "metrics/advise.h"

#include "metrics/metrics.h"

#include <math.h>
#include <stdarg.h>

typedef struct ctx {
    const tt_snapshot_t *s;
    tt_advice_t *out;
    size_t max, n;
} ctx_t;

const char *tt_advice_level_name(tt_advice_level_t l)
{
    return l == TT_ADVICE_CHANGE ? "change" : l == TT_ADVICE_NOTE ? "note" : "ok";
}

char *tt_advise_fmt_dur(char *buf, size_t n, double s)
{
    if (!(s > 0))
        snprintf(buf, n, "0");
    else if (s < 1)
        snprintf(buf, n, "%.0fms", s * 1000);
    else if (fabs(s - round(s)) < 0.05)
        snprintf(buf, n, "%.0fs", round(s));
    else
        snprintf(buf, n, "%.1fs", s);
    return buf;
}

/* A memory amount for a sentence: "12 KiB", "3.4 MiB". */
static char *fmt_bytes(char *buf, size_t n, double b)
{
    if (b < 1024 * 1024)
        snprintf(buf, n, "%.0f KiB", b / 1024);
    else
        snprintf(buf, n, "%.1f MiB", b / (1024 * 1024));
    return buf;
}

/* Rounds a duration up to a value a person would write: 100 ms steps below 1 s, whole seconds below 10 s, 5 s
 * below 60 s, 10 s below 10 min, whole minutes above. */
static double nice_up(double s)
{
    double step = s < 1 ? 0.1 : s < 10 ? 1 : s < 60 ? 5 : s < 600 ? 10 : 60;
    return ceil(s / step - 1e-9) * step;
}

/* The same steps, rounding down (a value that must stay below `s`). */
static double nice_down(double s)
{
    double step = s < 1 ? 0.1 : s < 10 ? 1 : s < 60 ? 5 : s < 600 ? 10 : 60;
    return floor(s / step + 1e-9) * step;
}

TT_PRINTF(8, 9)
static tt_advice_t *add(ctx_t *c, tt_advice_level_t level, const char *scope, const char *name, const char *section,
                        const char *key, const char *current, const char *fmt, ...)
{
    if (c->n == c->max) return NULL;
    tt_advice_t *a = &c->out[c->n++];
    memset(a, 0, sizeof(*a));
    a->level = level;
    snprintf(a->scope, sizeof(a->scope), "%s", scope);
    snprintf(a->name, sizeof(a->name), "%s", name);
    snprintf(a->section, sizeof(a->section), "%s", section);
    snprintf(a->key, sizeof(a->key), "%s", key);
    snprintf(a->current, sizeof(a->current), "%s", current);
    snprintf(a->suggested, sizeof(a->suggested), "%s", current);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
    va_end(ap);
    return a;
}

static void suggest(tt_advice_t *a, const char *value)
{
    if (a != NULL) snprintf(a->suggested, sizeof(a->suggested), "%s", value);
}

/* "a=3, b=1" for the samples of `name` matching `want` with a non-zero value, by label `by`. */
static void breakdown(const tt_snapshot_t *s, const char *name, tt_snap_filter_t want, const char *by, char *buf,
                      size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n && used < n; i++) {
        const tt_sample_t *smp = &s->samples[i];
        if (strcmp(smp->name, name) != 0 || !tt_sample_matches(smp, want) || !(smp->value > 0)) continue;
        const char *v = tt_sample_label(smp, by);
        int k = snprintf(buf + used, n - used, "%s%s %.0f", used ? ", " : "", v ? v : "?", smp->value);
        if (k < 0) break;
        used += (size_t)k;
    }
}

/* ---- listeners ---- */

typedef struct listener {
    const char *name;
    double idle_timeout; /* seconds; NAN when unknown */
    char section[160];
} listener_t;

/* The idle timeout of listener `name`: its own gauge, or the only one there is (race metrics may name listeners
 * differently from the configuration gauges). */
static void listener_conf(const tt_snapshot_t *s, listener_t *l)
{
    const tt_sample_t *g =
        tt_snapshot_find(s, "tether_listener_idle_timeout_seconds", (const char *[]){"listener", l->name, NULL});
    if (g == NULL) {
        size_t n;
        tt_snapshot_sum(s, "tether_listener_idle_timeout_seconds", NULL, &n);
        if (n == 1) g = tt_snapshot_find(s, "tether_listener_idle_timeout_seconds", NULL);
    }
    l->idle_timeout = g ? g->value : NAN;
    const char *group = g ? tt_sample_label(g, "group") : NULL;
    if (group != NULL && group[0] != '\0')
        snprintf(l->section, sizeof(l->section), "[listen %s]", group);
    else
        snprintf(l->section, sizeof(l->section), "[keepalive]");
}

static void advise_races(ctx_t *c, const listener_t *l)
{
    size_t found;
    tt_snap_filter_t want = (const char *[]){"listener", l->name, NULL};
    double races = tt_snapshot_sum(c->s, "tether_close_races_total", want, &found);
    if (found == 0 || isnan(l->idle_timeout)) return;
    char cur[48], sug[48], hi_s[48], bound_s[48], why[256];
    tt_advise_fmt_dur(cur, sizeof(cur), l->idle_timeout);
    if (!(races > 0)) {
        add(c, TT_ADVICE_OK, "listener", l->name, l->section, "idle_timeout", cur,
            "no races: no client reused a connection as tether closed it at its idle timeout %s", cur);
        return;
    }
    breakdown(c->s, "tether_close_races_total", want, "reason", why, sizeof(why));
    tt_snap_hist_t h;
    if (tt_snapshot_hist(c->s, "tether_close_race_gap_seconds", want, &h) != 0 || !(h.count > 0)) {
        tt_advice_t *a = add(c, TT_ADVICE_CHANGE, "listener", l->name, l->section, "idle_timeout", cur,
                             "%.0f races (%s): a client in front reuses connections longer than your idle timeout %s; "
                             "raise it above the client's idle timeout",
                             races, why, cur);
        suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_up(l->idle_timeout * 2)));
        return;
    }
    double hi = tt_snap_hist_quantile(&h, 0.99), bound = tt_snap_hist_max_bound(&h);
    if (isinf(bound) || isnan(bound)) bound = hi;
    double target = fmax(hi, bound);
    tt_advise_fmt_dur(hi_s, sizeof(hi_s), hi);
    tt_advise_fmt_dur(bound_s, sizeof(bound_s), target);
    if (l->idle_timeout > target) {
        add(c, TT_ADVICE_NOTE, "listener", l->name, l->section, "idle_timeout", cur,
            "%.0f races (%s) at gaps up to %s, below your idle timeout %s: the client closes its side late or "
            "its clock drifts; look at its idle timeout",
            races, why, hi_s, cur);
        return;
    }
    tt_advice_t *a = add(c, TT_ADVICE_CHANGE, "listener", l->name, l->section, "idle_timeout", cur,
                         "%.0f races (%s): a client in front reuses connections up to %s idle (p99 of %.0f race gaps); "
                         "your idle timeout is %s: raise it above %s so the client always closes first",
                         races, why, hi_s, h.count, cur, bound_s);
    suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_up(target * 1.1)));
}

static void advise_gaps(ctx_t *c, const listener_t *l)
{
    tt_snap_hist_t h;
    if (isnan(l->idle_timeout) || tt_snapshot_hist(c->s, "tether_idle_gap_seconds", NULL, &h) != 0 ||
        h.count < TT_ADVISE_MIN_SAMPLES)
        return;
    double t = l->idle_timeout, p95 = tt_snap_hist_quantile(&h, 0.95), p99 = tt_snap_hist_quantile(&h, 0.99);
    double k95 = nice_up(p95), k99 = nice_up(p99), idle = 0;
    idle = tt_snapshot_sum(c->s, "tether_connections_idle", NULL, NULL); /* summed: labels may be added */
    /* A shorter timeout worth suggesting keeps the 99th percentile twice over, and never goes below the
     * default 5 s: below that, a client's think time or a retry costs a new connection for little saved. */
    double shorter = fmax(nice_up(p99 * 2), TT_ADVISE_MIN_IDLE_S);
    double idle_at = t > 0 ? idle * fmin(1, shorter / t) : idle;
    char cur[48], s95[48], s99[48], k95s[48], k99s[48], mem[32], mem_at[32], sug[48], shorter_s[48];
    tt_advise_fmt_dur(shorter_s, sizeof(shorter_s), shorter);
    tt_advise_fmt_dur(cur, sizeof(cur), t);
    tt_advise_fmt_dur(s95, sizeof(s95), p95);
    tt_advise_fmt_dur(s99, sizeof(s99), p99);
    tt_advise_fmt_dur(k95s, sizeof(k95s), k95);
    tt_advise_fmt_dur(k99s, sizeof(k99s), k99);
    fmt_bytes(mem, sizeof(mem), idle * TT_ADVISE_IDLE_CONN_BYTES);
    fmt_bytes(mem_at, sizeof(mem_at), idle_at * TT_ADVISE_IDLE_CONN_BYTES);
    char head[320];
    snprintf(head, sizeof(head),
             "%.0f reuses: p95 %s, p99 %s idle before the next request; an idle timeout of %s keeps 95 %% of them, "
             "%s keeps 99 %%",
             h.count, s95, s99, k95s, k99s);
    double crowd = t > 0 ? tt_snap_hist_above(&h, 0.5 * t) / h.count : 0;
    if (t > 0 && p99 >= 0.8 * t && crowd >= 0.1) {
        tt_advice_t *a = add(c, TT_ADVICE_NOTE, "listener", l->name, l->section, "idle_timeout", cur,
                             "%s; %.0f %% of reuses came in the second half of your idle timeout %s: clients would "
                             "likely reuse later than it allows (a longer timeout keeps them; races, when counted, "
                             "tell for sure). %.0f connections idle now (~%s)",
                             head, crowd * 100, cur, idle, mem);
        suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_up(t * 2)));
    } else if (t >= 4 * shorter) {
        tt_advice_t *a = add(c, TT_ADVICE_NOTE, "listener", l->name, l->section, "idle_timeout", cur,
                             "%s, far below your idle timeout %s: %.0f connections idle now (~%s); at %s about %.0f "
                             "(~%s) at the current rate, for the same reuse",
                             head, cur, idle, mem, shorter_s, ceil(idle_at), mem_at);
        suggest(a, shorter_s);
    } else {
        add(c, TT_ADVICE_OK, "listener", l->name, l->section, "idle_timeout", cur,
            "%s, within your idle timeout %s; %.0f connections idle now (~%s)", head, cur, idle, mem);
    }
}

static void advise_pressure(ctx_t *c)
{
    double maxc, evicted = 0, pauses = 0, open = 0, workers = 0, cuts = 0;
    if (!tt_snapshot_value(c->s, "tether_max_connections", NULL, &maxc) || !(maxc > 0)) return;
    /* summed over whatever labels a later version adds (per listener, per protocol) */
    evicted =
        tt_snapshot_sum(c->s, "tether_connections_closed_total", (const char *[]){"reason", "evicted", NULL}, NULL);
    pauses = tt_snapshot_sum(c->s, "tether_accept_pauses_total", NULL, NULL);
    open = tt_snapshot_sum(c->s, "tether_connections_open", NULL, NULL);
    cuts = tt_snapshot_sum(c->s, "tether_idle_timeout_cuts_total", NULL, NULL);
    tt_snapshot_value(c->s, "tether_workers", NULL, &workers);
    char cur[48], sug[48];
    snprintf(cur, sizeof(cur), "%.0f", maxc);
    if (!(evicted > 0) && !(pauses > 0) && !(cuts > 0)) {
        add(c, TT_ADVICE_OK, "server", "", "[server]", "max_connections", cur,
            "no idle connection evicted, no accept pause and no idle timeout cut under pressure at max_connections %s "
            "per worker (%.0f open now)",
            cur, open);
        return;
    }
    tt_advice_t *a =
        add(c, TT_ADVICE_CHANGE, "server", "", "[server]", "max_connections", cur,
            "%.0f idle connections evicted, %.0f accept pauses and %.0f idle timeouts cut under pressure "
            "(above 75 %% of the limit) at max_connections %s per worker (%.0f workers, %.0f open now): too "
            "low for this traffic; each idle connection costs about %d KiB",
            evicted, pauses, cuts, cur, workers, open, TT_ADVISE_IDLE_CONN_BYTES / 1024);
    snprintf(sug, sizeof(sug), "%.0f", maxc * 2);
    suggest(a, sug);
}

/* ---- upstreams ---- */

static bool is_loopback(const char *server)
{
    const char *p = server;
    if (strncmp(p, "http://", 7) == 0) p += 7;
    if (strncmp(p, "https://", 8) == 0) p += 8;
    return strncmp(p, "127.", 4) == 0 || strncmp(p, "localhost", 9) == 0 || strncmp(p, "[::1]", 5) == 0 ||
           strncmp(p, "::1", 3) == 0;
}

typedef struct upstream {
    const char *name;
    char section[160];
    double pool_idle; /* NAN when unknown */
    double server_to; /* the server's idle timeout as hinted or learned, 0 unknown */
    const char *server_how;
    double opened, requests, reused;
} upstream_t;

static double up_sum(const tt_snapshot_t *s, const upstream_t *u, const char *name, const char *reason)
{
    if (reason == NULL) return tt_snapshot_sum(s, name, (const char *[]){"upstream", u->name, NULL}, NULL);
    return tt_snapshot_sum(s, name, (const char *[]){"upstream", u->name, "reason", reason, NULL}, NULL);
}

static void advise_up_timeouts(ctx_t *c, upstream_t *u)
{
    tt_snap_filter_t want = (const char *[]){"upstream", u->name, NULL};
    double hint = tt_snapshot_max(c->s, "tether_upstream_hinted_idle_timeout_seconds", want, 0);
    double learned = tt_snapshot_max(c->s, "tether_upstream_learned_idle_timeout_seconds", want, 0);
    double above = tt_snapshot_max(c->s, "tether_upstream_learned_above_hint_seconds", want, 0);
    u->server_to = above > 0 ? above : hint > 0 ? hint : learned;
    u->server_how = above > 0 ? "learned above its hint" : hint > 0 ? "hinted (Keep-Alive: timeout)" : "learned";
    if (isnan(u->pool_idle)) return;
    char cur[48], sug[48], st[48], hs[48], ls[48];
    tt_advise_fmt_dur(cur, sizeof(cur), u->pool_idle);
    if (hint > 0)
        tt_advise_fmt_dur(hs, sizeof(hs), hint);
    else
        snprintf(hs, sizeof(hs), "none");
    if (learned > 0)
        tt_advise_fmt_dur(ls, sizeof(ls), learned);
    else
        snprintf(ls, sizeof(ls), "none");
    if (!(u->server_to > 0)) {
        add(c, TT_ADVICE_OK, "upstream", u->name, u->section, "idle_timeout", cur,
            "the servers sent no Keep-Alive: timeout= hint and no idle timeout was learned yet; the pool's idle "
            "timeout %s applies",
            cur);
        return;
    }
    tt_advise_fmt_dur(st, sizeof(st), u->server_to);
    double retired_idle = up_sum(c->s, u, "tether_upstream_retired_total", "idle_timeout");
    if (u->server_to < u->pool_idle) {
        tt_advice_t *a =
            add(c, TT_ADVICE_NOTE, "upstream", u->name, u->section, "idle_timeout", cur,
                "the server closes idle connections after %s (%s; hinted %s, learned %s), below the "
                "pool's idle timeout %s: the pool already retires them that much earlier, minus the "
                "margin; setting idle_timeout below %s makes it explicit, and keeps it if hints or learning stop",
                st, u->server_how, hs, ls, cur, st);
        suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_down(u->server_to * 0.9)));
    } else if (u->server_to >= 1.5 * u->pool_idle && retired_idle > 0.1 * u->opened && u->opened >= 10) {
        tt_advice_t *a = add(c, TT_ADVICE_CHANGE, "upstream", u->name, u->section, "idle_timeout", cur,
                             "%.0f of %.0f connections retired at the pool's idle timeout %s while the server keeps "
                             "them %s (%s): raise idle_timeout to reuse them instead of opening new ones",
                             retired_idle, u->opened, cur, st, u->server_how);
        suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_down(u->server_to * 0.9)));
    } else {
        add(c, TT_ADVICE_OK, "upstream", u->name, u->section, "idle_timeout", cur,
            "the server keeps idle connections %s (%s), the pool %s: consistent", st, u->server_how, cur);
    }
}

static void advise_up_failures(ctx_t *c, const upstream_t *u)
{
    tt_snap_filter_t want = (const char *[]){"upstream", u->name, NULL};
    double stale = up_sum(c->s, u, "tether_upstream_retired_total", "stale_on_reuse");
    double closed_idle = up_sum(c->s, u, "tether_upstream_retired_total", "peer_closed_while_idle");
    double replays = tt_snapshot_sum(c->s, "tether_upstream_replays_total", want, NULL);
    double gen = tt_snapshot_sum(c->s, "tether_upstream_generated_total", want, NULL);
    double raced =
        tt_snapshot_sum(c->s, "tether_upstream_generated_total",
                        (const char *[]){"upstream", u->name, "cause", "reset_before_response", NULL}, NULL) +
        tt_snapshot_sum(c->s, "tether_upstream_generated_total",
                        (const char *[]){"upstream", u->name, "cause", "closed_before_response", NULL}, NULL);
    if (!(stale + replays + gen > 0) || isnan(u->pool_idle)) return;
    char rep[256], gens[320], cur[48], sug[48];
    breakdown(c->s, "tether_upstream_replays_total", want, "cause", rep, sizeof(rep));
    breakdown(c->s, "tether_upstream_generated_total", want, "cause", gens, sizeof(gens));
    tt_advise_fmt_dur(cur, sizeof(cur), u->pool_idle);
    if (raced > 0) {
        double to = u->server_to > 0 ? fmin(u->server_to * 0.9, u->pool_idle) : u->pool_idle / 2;
        tt_advice_t *a = add(c, TT_ADVICE_CHANGE, "upstream", u->name, u->section, "idle_timeout", cur,
                             "%.0f answers were 502/503/504 from tether (%s), %.0f of them a pooled connection the "
                             "server closed under a request; %.0f stale reuses caught, %.0f closed while parked, "
                             "%.0f replays (%s): park connections for less than the server keeps them",
                             gen, gens, raced, stale, closed_idle, replays, rep[0] ? rep : "none");
        suggest(a, tt_advise_fmt_dur(sug, sizeof(sug), nice_down(to)));
        return;
    }
    add(c, TT_ADVICE_NOTE, "upstream", u->name, u->section, "idle_timeout", cur,
        "%.0f stale reuses caught before use, %.0f closed while parked, %.0f replays (%s), %.0f generated answers "
        "(%s): the checks and replays absorbed them, no race reached a client",
        stale, closed_idle, replays, rep[0] ? rep : "none", gen, gens[0] ? gens : "none");
}

static void advise_up_churn(ctx_t *c, const upstream_t *u)
{
    double max_idle;
    if (!tt_snapshot_value(c->s, "tether_upstream_max_idle", (const char *[]){"upstream", u->name, NULL}, &max_idle) ||
        !(u->opened > 0))
        return;
    double dropped = up_sum(c->s, u, "tether_upstream_retired_total", "max_idle");
    double reuse = u->requests > 0 ? 100 * u->reused / u->requests : 0;
    char cur[48], sug[48];
    snprintf(cur, sizeof(cur), "%.0f", max_idle);
    if (u->opened >= 20 && dropped > 0.1 * u->opened) {
        tt_advice_t *a = add(c, TT_ADVICE_CHANGE, "upstream", u->name, u->section, "max_idle", cur,
                             "%.0f connections opened for %.0f requests (%.0f %% reused); %.0f closed because more "
                             "than max_idle %s were parked: each burst closes them and the next opens them again",
                             u->opened, u->requests, reuse, dropped, cur);
        snprintf(sug, sizeof(sug), "%.0f", fmax(max_idle * 2, 8));
        suggest(a, sug);
        return;
    }
    add(c, TT_ADVICE_OK, "upstream", u->name, u->section, "max_idle", cur,
        "%.0f connections opened for %.0f requests (%.0f %% reused), %.0f closed for max_idle %s", u->opened,
        u->requests, reuse, dropped, cur);
}

static void advise_up_tcp_keepalive(ctx_t *c, const upstream_t *u)
{
    double ka;
    tt_snap_filter_t want = (const char *[]){"upstream", u->name, NULL};
    if (!tt_snapshot_value(c->s, "tether_upstream_tcp_keepalive_seconds", want, &ka) || isnan(u->pool_idle)) return;
    const char *servers[16], *remote = NULL;
    size_t n = tt_snapshot_label_values(c->s, "tether_upstream_connections_opened_total", want, "server", servers, 16);
    for (size_t i = 0; i < n && remote == NULL; i++)
        if (!is_loopback(servers[i])) remote = servers[i];
    if (remote == NULL) return; /* on loopback no NAT forgets a flow */
    char cur[48], idle[48];
    if (ka > 0)
        tt_advise_fmt_dur(cur, sizeof(cur), ka);
    else
        snprintf(cur, sizeof(cur), "off");
    tt_advise_fmt_dur(idle, sizeof(idle), u->pool_idle);
    if (u->pool_idle <= TT_ADVISE_NAT_IDLE_S || (ka > 0 && ka < TT_ADVISE_NAT_IDLE_S)) {
        add(c, TT_ADVICE_OK, "upstream", u->name, u->section, "tcp_keepalive", cur,
            "server %s is not on loopback; parked connections idle at most %s and TCP keepalive probes after %s: a "
            "NAT that forgets idle flows after 30-120 s cannot drop one unseen",
            remote, idle, cur);
        return;
    }
    tt_advice_t *a =
        add(c, TT_ADVICE_CHANGE, "upstream", u->name, u->section, "tcp_keepalive", cur,
            "server %s is not on loopback and parked connections may idle %s: a NAT or firewall between "
            "typically forgets idle flows after 30-120 s, and with TCP keepalive %s the pool learns it only "
            "when a request fails; probe before %d s",
            remote, idle, ka > 0 ? cur : "off", TT_ADVISE_NAT_IDLE_S);
    suggest(a, "25s:5s:3");
}

static void advise_upstreams(ctx_t *c)
{
    const char *names[64];
    size_t n = tt_snapshot_label_values(c->s, "tether_upstream_pool_idle_timeout_seconds", NULL, "upstream", names, 64);
    n += tt_snapshot_label_values(c->s, "tether_upstream_requests_total", NULL, "upstream", names + n, 64 - n);
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = strcmp(names[k], names[i]) == 0;
        if (dup) continue;
        upstream_t u = {.name = names[i], .pool_idle = NAN};
        snprintf(u.section, sizeof(u.section), "[upstream %s]", u.name);
        tt_snapshot_value(c->s, "tether_upstream_pool_idle_timeout_seconds", (const char *[]){"upstream", u.name, NULL},
                          &u.pool_idle);
        u.opened = up_sum(c->s, &u, "tether_upstream_connections_opened_total", NULL);
        u.reused = up_sum(c->s, &u, "tether_upstream_requests_reused_total", NULL);
        u.requests = up_sum(c->s, &u, "tether_upstream_requests_total", NULL);
        advise_up_timeouts(c, &u);
        advise_up_failures(c, &u);
        advise_up_churn(c, &u);
        advise_up_tcp_keepalive(c, &u);
    }
}

size_t tt_advise(const tt_snapshot_t *s, tt_advice_t *out, size_t max)
{
    ctx_t c = {.s = s, .out = out, .max = max};
    const char *names[32];
    size_t n = tt_snapshot_label_values(s, "tether_listener_idle_timeout_seconds", NULL, "listener", names, 32);
    n += tt_snapshot_label_values(s, "tether_close_races_total", NULL, "listener", names + n, 32 - n);
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = strcmp(names[k], names[i]) == 0;
        if (dup) continue;
        listener_t l = {.name = names[i]};
        listener_conf(s, &l);
        advise_races(&c, &l);
        advise_gaps(&c, &l);
    }
    advise_pressure(&c);
    advise_upstreams(&c);
    return c.n;
}

void tt_advice_render_text(const tt_advice_t *a, size_t n, char **out, size_t *len, size_t *cap)
{
    if (n == 0) tt_metrics_printf(out, len, cap, "no advice: the metrics hold nothing to judge yet\n");
    for (size_t i = 0; i < n; i++) {
        bool head = i == 0 || strcmp(a[i].scope, a[i - 1].scope) != 0 || strcmp(a[i].name, a[i - 1].name) != 0;
        if (head)
            tt_metrics_printf(out, len, cap, "%s%s%s%s\n", i ? "\n" : "", a[i].scope, a[i].name[0] ? " " : "",
                              a[i].name);
        if (a[i].level == TT_ADVICE_CHANGE)
            tt_metrics_printf(out, len, cap, "  [change] %s %s: %s -> %s\n", a[i].section, a[i].key, a[i].current,
                              a[i].suggested);
        else if (strcmp(a[i].current, a[i].suggested) != 0)
            tt_metrics_printf(out, len, cap, "  [%s] %s %s: %s (could be %s)\n", tt_advice_level_name(a[i].level),
                              a[i].section, a[i].key, a[i].current, a[i].suggested);
        else
            tt_metrics_printf(out, len, cap, "  [%s] %s %s: %s\n", tt_advice_level_name(a[i].level), a[i].section,
                              a[i].key, a[i].current);
        tt_metrics_printf(out, len, cap, "      %s\n", a[i].reason);
    }
}

void tt_advice_render_json(const tt_advice_t *a, size_t n, char **out, size_t *len, size_t *cap)
{
    tt_metrics_printf(out, len, cap, "[");
    for (size_t i = 0; i < n; i++) {
        const char *keys[] = {"scope", "name", "section", "key", "current", "suggested", "reason"};
        const char *vals[] = {a[i].scope, a[i].name, a[i].section, a[i].key, a[i].current, a[i].suggested, a[i].reason};
        tt_metrics_printf(out, len, cap, "%s{\"level\":\"%s\"", i ? "," : "", tt_advice_level_name(a[i].level));
        for (size_t k = 0; k < TT_ARRAY_SIZE(keys); k++) {
            tt_metrics_printf(out, len, cap, ",\"%s\":", keys[k]);
            tt_metrics_json_str(out, len, cap, vals[k]);
        }
        tt_metrics_printf(out, len, cap, "}");
    }
    tt_metrics_printf(out, len, cap, "]");
}
