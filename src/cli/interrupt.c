/* Cancel flag and progress glue for the long-running backup/restore commands. */
#include "interrupt.h"

#include <signal.h>
#include <string.h>

#include "progs/progs.h"

volatile int cli_cancel;

/* Readers in worker threads load the flag atomically; the store must be atomic too (a plain
 * store races with them, and ThreadSanitizer says so). A lock-free int store is
 * async-signal-safe. */
static void on_interrupt(int sig)
{
    (void)sig;
    __atomic_store_n(&cli_cancel, 1, __ATOMIC_RELAXED);
}

void cli_catch_interrupts(void)
{
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    signal(SIGPIPE, SIG_IGN);
}

void cli_engine_progress(void *ctx, const struct cairn_engine_progress *p)
{
    progs_progress_add(ctx, p->bytes);
    progs_progress_total(ctx, p->bytes_total, 0);
    progs_progress_items(ctx, p->items_done, p->items_total,
                         p->phase && strcmp(p->phase, "file") == 0 ? "files" : "items");
}
