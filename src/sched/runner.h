/* Internal: the runner cairnd uses (real backups into the schedule's storage). */
#ifndef CAIRN_SCHED_RUNNER_H
#define CAIRN_SCHED_RUNNER_H

#include "sched.h"

void cairn_backup_runner(struct cairn_runner *r);

#endif
