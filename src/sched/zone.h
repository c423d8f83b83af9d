/* Internal: an IANA time zone read from its TZif file (RFC 8536), for cron schedules on a
 * local wall clock.
 *
 * The offset of any instant is computed from the zone's own data (its transitions, then the
 * POSIX TZ rule in the file's footer for later years), never through localtime() or mktime():
 * nothing here reads or changes the process's TZ, and a loaded zone is immutable, so any
 * thread may use it without a lock. Leap-second records ("right/" zones) are ignored: the
 * scheduler counts POSIX seconds. */
#ifndef CAIRN_SCHED_ZONE_H
#define CAIRN_SCHED_ZONE_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"

/* Offsets beyond this (seconds either side of UTC) are refused as corrupt (RFC 8536 advises
 * -25:59:59 to +25:59:59); wall-clock searches look this far either side of an instant. */
#define CRON_ZONE_MAX_OFFSET (26 * 3600)

struct cron_zone;

/* Load the zone `name` (for example "Europe/Berlin") from the TZif file at path. Errors:
 * CAIRN_E_NOTFOUND and friends from reading it, CAIRN_E_INVALID for a file that is not a
 * well-formed TZif file. */
int cron_zone_load(const char *path, struct cron_zone **out, struct cairn_err *err);
/* Parse TZif data already in memory (path names it in messages). */
int cron_zone_parse(const uint8_t *data, size_t len, const char *path, struct cron_zone **out,
                    struct cairn_err *err);
void cron_zone_free(struct cron_zone *z);

/* Seconds east of UTC in effect at instant t (Unix seconds): local wall clock = t + offset. */
int32_t cron_zone_offset(const struct cron_zone *z, int64_t t);
/* The first instant strictly after t at which the zone's offset may change (a transition of
 * its file, which may keep the offset, or a change of its rule); INT64_MAX when none follows. */
int64_t cron_zone_next_change(const struct cron_zone *z, int64_t t);

/* The instants whose wall clock reads `wall` (seconds that read as that wall clock in UTC),
 * earliest first, into out[0..3]: none when a forward change skips it, two when a backward one
 * repeats it. When there is none and gap_end is not NULL, *gap_end is the instant the skipped
 * span ends (the change that skipped it). Returns the count. */
size_t cron_zone_instants(const struct cron_zone *z, int64_t wall, int64_t out[4],
                          int64_t *gap_end);

#endif
