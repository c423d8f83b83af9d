/* Internal: the runner cairnd uses (real backups into the schedule's storage). */
#ifndef CAIRN_SCHED_RUNNER_H
#define CAIRN_SCHED_RUNNER_H

#include "config.h"
#include "sched.h"

struct cairn_storage;

/* Backups wait up to cfg->lock_wait for a prune's (or rm's) lock; cfg outlives r. */
void runner_backup_init(struct cairn_runner *r, const struct cairn_config *cfg);

/* Open the schedule's storage with its repository key (key-file), if any. */
int runner_storage_open(const struct cairn_schedule_cfg *c, struct cairn_storage **st,
                        struct cairn_err *err);

#endif
