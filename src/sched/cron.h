/* Internal: standard 5-field cron expressions and fixed intervals, evaluated in UTC or, for
 * cron, on the wall clock of a time zone loaded from its TZif file (zone.h; the process's TZ
 * plays no part). */
#ifndef CAIRN_SCHED_CRON_H
#define CAIRN_SCHED_CRON_H

#include <stdint.h>

#include "common/util.h"

#include "cairn/err.h"
#include "zone.h"

struct cairn_cron {
    uint64_t minute; /* bit n: minute n (0-59) */
    uint32_t hour;   /* 0-23 */
    uint32_t dom;    /* 1-31 */
    uint16_t month;  /* 1-12 */
    uint8_t dow;     /* 0-6, Sunday = 0 (7 is accepted as Sunday) */
    /* Vixie semantics: when both day fields are restricted (neither starts with '*'), a day
     * matches if EITHER matches; otherwise both must. */
    int dom_star, dow_star;
};

/* "m h dom mon dow" with '*', N, N-M, lists, /step, month and weekday names (jan, mon...),
 * or one of @hourly @daily @midnight @weekly @monthly @yearly @annually. An expression that
 * can never fire (e.g. "0 0 30 2 *") is refused. */
int cron_parse(const char *expr, struct cairn_cron *c, struct cairn_err *err);
/* The first matching minute strictly after `after` (Unix seconds, UTC); -1 when there is
 * none within 100 years. */
int64_t cron_next(const struct cairn_cron *c, int64_t after);
/* The same on zone z's wall clock: the first instant strictly after `after` whose local time
 * matches. A wall-clock time that a DST change skips fires at the
 * end of the gap (02:30 -> the instant clocks jump to 03:00); one that occurs twice fires
 * once, at its first occurrence. -1 when there is none. */
int64_t cron_next_local(const struct cairn_cron *c, const struct cron_zone *z, int64_t after);

/* A schedule's timing: a cron expression or a fixed interval. Intervals fire at multiples of
 * the interval since 1970-01-01T00:00:00Z, so restarts never shift their phase. */
struct cairn_timing {
    int is_cron;
    const struct cron_zone *zone; /* cron on this zone's wall clock; NULL: UTC */
    struct cairn_cron cron;
    int64_t every; /* seconds, when !is_cron */
};

int64_t cron_timing_next(const struct cairn_timing *t, int64_t after);

#endif
