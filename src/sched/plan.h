/* Internal: catch-up planning and the catch-up rate limiter (pure functions, unit tested). */
#ifndef CAIRN_SCHED_PLAN_H
#define CAIRN_SCHED_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The scheduled instants in (last, now] of one schedule, split by policy and cap. */
struct cairn_plan {
    int64_t *runs; /* to run, oldest first */
    size_t n;
    uint64_t skipped;      /* older instants dropped by the policy or the cap */
    int64_t skipped_until; /* newest dropped instant (valid when skipped > 0) */
};

/* cap bounds the runs kept (the newest ones); CAIRN_CATCHUP_LATEST keeps one, _NONE none. */
void plan_build(const struct cairn_timing *t, int64_t last, int64_t now,
                enum cairn_catchup_policy policy, unsigned cap, struct cairn_plan *out);
void plan_free(struct cairn_plan *p);

/* Spacing limiter for catch-up runs: at most `rate` starts per second, no burst. */
struct cairn_ratelimit {
    double interval_ns;
    uint64_t next_ns; /* earliest start of the next run (monotonic ns) */
};

void plan_ratelimit_init(struct cairn_ratelimit *rl, double rate);
/* Reserve the next start slot: returns how long to wait (ns) from now_ns. */
uint64_t plan_ratelimit_reserve(struct cairn_ratelimit *rl, uint64_t now_ns);

/* Deterministic backup name for a schedule's instant: "YYYYMMDDTHHMMSSZ-NAME" (the project's
 * time-first convention, so a shared location lists in time order). */
void plan_run_name(const char *schedule, int64_t at, char *out, size_t cap);

#endif
