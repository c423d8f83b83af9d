/* Internal fixed-size worker pool with a bounded queue (submit blocks when full, so producers
 * never buffer unbounded work). Not installed. */
#ifndef CAIRN_POOL_H
#define CAIRN_POOL_H

#include <stddef.h>

struct cairn_pool;

typedef void (*cairn_pool_fn)(void *arg);

/* workers 0 means one per online CPU. queue_max bounds pending jobs (0 = 2 * workers). */
struct cairn_pool *cairn_pool_new(unsigned workers, size_t queue_max);
/* Blocks while the queue is full. */
void cairn_pool_submit(struct cairn_pool *p, cairn_pool_fn fn, void *arg);
/* Wait until every submitted job has finished; the pool stays usable. */
void cairn_pool_wait(struct cairn_pool *p);
/* Waits for pending jobs, then stops the workers. NULL is fine. */
void cairn_pool_free(struct cairn_pool *p);
unsigned cairn_pool_workers(const struct cairn_pool *p);
unsigned cairn_cpu_count(void);

#endif
