/* Internal: the cairnd backup scheduler.
 *
 * One worker thread per schedule runs that schedule's instants strictly in order; a gate
 * admits at most max-concurrent backups at once, oldest scheduled instant first across all
 * schedules. The state (schedule -> last instant dealt with) is guarded by one mutex and
 * saved to the state store after every run, right after boot catch-up, periodically when it
 * changed, and at shutdown.
 *
 * Boot: the newest good snapshot is loaded (corrupt rows fall back, a newer version refuses
 * to start). A schedule with an entry catches up the instants in (last, now] per its policy,
 * the catch-up-max cap (newest kept) and the catch-up-rate limiter; a schedule without one
 * starts from now (no replay of history it never had). Failures are per run: they are logged
 * and counted and never stop the other runs or schedules.
 *
 * Clock steps: a wall clock that went back (earlier than the previous reading, or than a
 * schedule's last instant, also the saved one at boot) is logged once per step, counted in
 * cairn_clock_backwards_total and named by /healthz (still 200); each schedule whose last
 * instant is now in the future continues from the current time instead of waiting for the
 * clock to catch up. A forward step (seen with offset_ms) is logged and counted too; the runs
 * it skipped follow the catch-up policy like any missed runs, and retention is held until the
 * clock steps back or CAIRN_CLOCK_NOTICE_SECONDS pass (every earlier backup looks older than
 * it is).
 *
 * Runs are idempotent: the backup name is derived from (schedule, instant), and a complete
 * backup of that name already in the storage counts as done. A run cancelled by shutdown does
 * not advance the state, so it is run again after the restart.
 */
#ifndef CAIRN_SCHED_SCHED_H
#define CAIRN_SCHED_SCHED_H

#include <stdint.h>
#include <stdio.h>

#include "cairn/state.h"
#include "config.h"
#include "metrics/metrics.h"

/* Where "now" comes from (Unix seconds). Waiting threads re-read it every poll_ms.
 *
 * offset_ms, when set, returns the wall clock minus a steady clock that also counts suspend
 * (CLOCK_BOOTTIME), in ms: a change of it between two readings is a step of the wall clock
 * (NTP, an operator, a VM restored), forward or back, told apart from time passing or a
 * suspend. Without it only backward steps are seen (now earlier than the last reading). */
struct cairn_clock {
    int64_t (*now)(void *ctx);
    void *ctx;
    unsigned poll_ms;
    int64_t (*offset_ms)(void *ctx);
};

/* A wall-clock step larger than this (seconds) is reported; smaller ones are noise. */
#define CAIRN_CLOCK_STEP_TOLERANCE 5
/* How long /healthz names the last clock step (seconds of steady time). */
#define CAIRN_CLOCK_NOTICE_SECONDS 3600

/* The real clock (poll 1000 ms, with offset_ms), or a file holding Unix seconds or RFC 3339
 * (poll 50 ms, no offset_ms: tests move time by rewriting it). */
void sched_clock_real(struct cairn_clock *c);
void sched_clock_file(struct cairn_clock *c, const char *path);

#define CAIRN_RUN_NAME_MAX 128

struct cairn_run {
    const struct cairn_schedule_cfg *schedule;
    int64_t at;  /* scheduled instant */
    int catchup; /* missed while cairnd was down or busy */
    char name[CAIRN_RUN_NAME_MAX];
    /* For prune: the real wall clock (Unix s, the one stamping MANIFESTs), read before the
     * scheduler last looked for a clock step, so a step after that look cannot reach
     * retention unheld. 0: the runner reads it. */
    int64_t wall_now;
    /* Checked right before the backup's MANIFEST is written (the HA leader's fence); NULL:
     * none. */
    int (*commit_check)(void *ctx, struct cairn_err *err);
    void *commit_ctx;
};

struct cairn_run_result {
    uint64_t bytes;
    /* A local path: files not read because unchanged since the parent, and their bytes. */
    uint64_t unchanged_files, unchanged_bytes;
};

/* What a prune did: the backups removed, then (after at least one removal) the garbage
 * collection of a deduplicating repository's chunks under the same lock. */
struct cairn_prune_result {
    unsigned removed;
    int gc_ran;        /* the location has a chunk store and it was collected */
    int gc_rc;         /* CAIRN_OK, or why the collection failed (gc_msg) */
    int gc_fenced;     /* gc_rc is the HA fence's: the lease was lost, nothing collected */
    uint64_t gc_freed; /* bytes of packs deleted or shrunk */
    uint64_t gc_packs_deleted, gc_packs_repacked;
    char gc_msg[CAIRN_ERR_MSG_MAX];
};

/* What a run does; the daemon plugs in backups to storage (runner.c), tests a recorder. All
 * callbacks may be called from several worker threads at once. */
struct cairn_runner {
    void *ctx;
    /* Is there already a complete backup named run->name? Leftovers of an incomplete one are
     * cleared so the run can start again. */
    int (*check)(void *ctx, const struct cairn_run *run, int *complete, struct cairn_err *err);
    /* Take the backup; a nonzero *cancel asks it to stop (CAIRN_E_CANCELLED), leaving nothing
     * that looks complete. */
    int (*run)(void *ctx, const struct cairn_run *run, const volatile int *cancel,
               struct cairn_run_result *res, struct cairn_err *err);
    /* Apply the schedule's keep-* rules after a successful backup, then reclaim the chunks
     * of what was removed (res->gc_*). The return code is the removals'. */
    int (*prune)(void *ctx, const struct cairn_run *run, struct cairn_prune_result *res,
                 struct cairn_err *err);
};

struct cairn_sched;

/* Declare metrics, load the newest good snapshot and plan boot catch-up. The config, store,
 * runner, clock and metrics must outlive the scheduler. */
int sched_new(const struct cairn_config *cfg, struct cairn_state_store *store,
              const struct cairn_runner *runner, const struct cairn_clock *clock,
              struct cairn_metrics *m, struct cairn_sched **out, struct cairn_err *err);
/* Print the loaded state and the boot plan (plain text, or one JSON object). */
void sched_describe(const struct cairn_sched *s, FILE *out, int json);
/* Start the workers (catch-up first). */
int sched_start(struct cairn_sched *s, struct cairn_err *err);
/* Ask for a clean shutdown; callable from any thread (not from a signal handler). */
void sched_stop(struct cairn_sched *s);
/* Stop for a reload: no new runs; running backups finish however long they take (a later
 * sched_stop gives them shutdown-timeout from then). */
void sched_stop_reload(struct cairn_sched *s);
/* Stop now and cancel running backups (the leader lost its lease). */
void sched_abort(struct cairn_sched *s);
/* High availability: fence is called before each backup starts, before its MANIFEST is
 * written and before retention; an error (the lease token is stale) stops the scheduler with
 * sched_abort and nothing is written. Set before sched_start. */
void sched_set_fence(struct cairn_sched *s, int (*fence)(void *ctx, struct cairn_err *err),
                     void *ctx);
/* Run the periodic snapshot loop until stopped, then shut down: wait up to shutdown-timeout
 * for in-flight backups, cancel the rest, wait briefly, save a final snapshot. Returns
 * CAIRN_E_TIMEOUT when some backup would not stop (its threads are left running; the caller
 * should exit, the backup stays incomplete). */
int sched_wait(struct cairn_sched *s, struct cairn_err *err);
/* HTTP status and body for /healthz. */
int sched_health(void *s, char *body, size_t cap);
/* Frees a scheduler whose wait returned CAIRN_OK (or that was never started). */
void sched_free(struct cairn_sched *s);

#endif
