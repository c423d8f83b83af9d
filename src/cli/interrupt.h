/* Shared by cairn backup and cairn restore: SIGINT/SIGTERM set a cancel flag the library
 * polls, and progress events feed the TTY progress line. */
#ifndef CAIRN_CLI_INTERRUPT_H
#define CAIRN_CLI_INTERRUPT_H

#include "cairn/engine.h"

extern volatile int cli_cancel;
/* Route SIGINT and SIGTERM to cli_cancel and ignore SIGPIPE. */
void cli_catch_interrupts(void);
/* cairn_engine_progress_fn feeding a struct progs_progress (ctx). */
void cli_engine_progress(void *ctx, const struct cairn_engine_progress *p);

#endif
