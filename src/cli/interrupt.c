/* Cancel flag and progress glue for the long-running backup/restore commands. */
#include "interrupt.h"

#include <signal.h>

#include "cli.h"

volatile int cli_cancel;

static void on_interrupt(int sig)
{
    (void)sig;
    cli_cancel = 1;
}

void cli_catch_interrupts(void)
{
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    signal(SIGPIPE, SIG_IGN);
}

void cli_backup_progress(void *ctx, const struct cairn_backup_progress *p)
{
    cli_progress_add(ctx, p->bytes);
}
