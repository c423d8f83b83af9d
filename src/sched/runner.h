/* Internal: the runner cairnd uses (real backups into the schedule's storage). */
#ifndef CAIRN_SCHED_RUNNER_H
#define CAIRN_SCHED_RUNNER_H

#include "sched.h"

/* Backups wait up to cfg->lock_wait for a prune's (or rm's) lock; cfg outlives r. */
void runner_backup_init(struct cairn_runner *r, const struct cairn_config *cfg);

#endif
