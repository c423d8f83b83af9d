/* Internal fixed-size worker pool with a bounded queue (submit blocks when full, so producers
 * never buffer unbounded work). Not installed. */
#ifndef CAIRN_POOL_H
#define CAIRN_POOL_H

#include <stddef.h>

struct pool;

typedef void (*pool_fn)(void *arg);

/* workers 0 means one per online CPU. queue_max bounds pending jobs (0 = 2 * workers). */
struct pool *pool_new(unsigned workers, size_t queue_max);
/* Blocks while the queue is full. */
void pool_submit(struct pool *p, pool_fn fn, void *arg);
/* Wait until every submitted job has finished; the pool stays usable. */
void pool_wait(struct pool *p);
/* Waits for pending jobs, then stops the workers. NULL is fine. */
void pool_free(struct pool *p);
unsigned pool_workers(const struct pool *p);
unsigned cpu_count(void);

#endif
