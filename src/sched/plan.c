/* Catch-up planning: which missed instants run, which are skipped. */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/storage.h"
#include "common/util.h"

void plan_build(const struct cairn_timing *t, int64_t last, int64_t now,
                enum cairn_catchup_policy policy, unsigned cap, struct cairn_plan *out)
{
    memset(out, 0, sizeof(*out));
    unsigned keep = policy == CAIRN_CATCHUP_NONE ? 0 : policy == CAIRN_CATCHUP_LATEST ? 1 : cap;
    uint64_t total = 0;
    size_t n = 0;
    if (!t->is_cron) {
        /* Intervals are arithmetic: no need to walk a long window. */
        int64_t first = cron_timing_next(t, last);
        int64_t lastat = now - (((now % t->every) + t->every) % t->every);
        if (lastat >= first)
            total = (uint64_t)((lastat - first) / t->every) + 1;
        n = total < keep ? (size_t)total : keep;
        if (n > 0) {
            out->runs = xmalloc(n * sizeof(*out->runs));
            for (size_t i = 0; i < n; i++)
                out->runs[i] = lastat - (int64_t)(n - 1 - i) * t->every;
        }
        if (total > n)
            out->skipped_until = lastat - (int64_t)n * t->every;
    } else {
        /* A ring of the newest `keep` instants: the window may hold far more than we run. */
        int64_t *ring = keep ? xmalloc(keep * sizeof(*ring)) : NULL;
        int64_t newest_dropped = 0;
        for (int64_t at = cron_timing_next(t, last); at >= 0 && at <= now;
             at = cron_timing_next(t, at)) {
            if (keep == 0) {
                newest_dropped = at;
            } else {
                if (total >= keep)
                    newest_dropped = ring[total % keep];
                ring[total % keep] = at;
            }
            total++;
        }
        n = total < keep ? (size_t)total : keep;
        if (n > 0) {
            out->runs = xmalloc(n * sizeof(*out->runs));
            for (size_t i = 0; i < n; i++)
                out->runs[i] = ring[(total - n + i) % keep];
        }
        if (total > n)
            out->skipped_until = newest_dropped;
        free(ring);
    }
    out->n = n;
    out->skipped = total - n;
}

void plan_free(struct cairn_plan *p)
{
    free(p->runs);
    memset(p, 0, sizeof(*p));
}

void plan_ratelimit_init(struct cairn_ratelimit *rl, double rate)
{
    rl->interval_ns = rate > 0 ? 1e9 / rate : 0;
    rl->next_ns = 0;
}

uint64_t plan_ratelimit_reserve(struct cairn_ratelimit *rl, uint64_t now_ns)
{
    uint64_t slot = rl->next_ns > now_ns ? rl->next_ns : now_ns;
    rl->next_ns = slot + (uint64_t)rl->interval_ns;
    return slot - now_ns;
}

void plan_run_name(const char *schedule, int64_t at, char *out, size_t cap)
{
    /* Schedule names are checked at config load, so the result fits and is valid. */
    if (cairn_backup_name_make(at * 1000, 0, schedule, out, cap, NULL) != CAIRN_OK && cap > 0)
        out[0] = '\0';
}
