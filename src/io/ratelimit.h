/* Internal: a token bucket shared by writers, and the writer stage that paces bytes through
 * it (storage uploads under cairnd's rate-limit). The bucket is pure accounting, told the
 * time by its caller, so its decisions are tested without a clock; the stage sleeps the wait
 * it is given, in slices that watch a cancel flag. */
#ifndef CAIRN_IO_RATELIMIT_H
#define CAIRN_IO_RATELIMIT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn/io.h"

struct tbucket {
    pthread_mutex_t mu;
    double rate;   /* bytes per second */
    double burst;  /* bytes that may go at once after an idle time */
    double tokens; /* may go negative: bytes reserved ahead of the rate */
    uint64_t last_ns;
    int started;
    uint64_t granted;   /* bytes reserved so far */
    uint64_t waited_ns; /* waits handed out so far (what the stage sleeps) */
};

/* rate bytes/s; burst: the bucket's size (at least the largest single reservation is not
 * needed: a big write just waits longer). */
void tbucket_init(struct tbucket *b, uint64_t rate, uint64_t burst);
void tbucket_destroy(struct tbucket *b);
/* Reserve n bytes at time now_ns (any monotonic clock); returns how long the caller must
 * wait before sending them (0: at once). Reservations queue: two callers share the rate. */
uint64_t tbucket_reserve(struct tbucket *b, size_t n, uint64_t now_ns);

/* A stage passing bytes to next at most at the bucket's rate (borrowed bucket; cancel may be
 * NULL). Writes larger than a tenth of a second's worth are paced in pieces. */
struct cairn_writer *ratelimit_writer_new(struct cairn_writer *next, struct tbucket *b,
                                          const volatile int *cancel);

#endif
