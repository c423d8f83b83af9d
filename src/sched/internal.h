/* Internal to the scheduler: its state and the functions its files share. sched.h is the
 * scheduler's interface; the work is cut by job:
 *
 *   sched.c     boot (state load, baselines, catch-up plans), start, the snapshot loop and
 *               shutdown, free
 *   clock.c     the real and the file clock, steps of the wall clock
 *   gate.c      waiting: the run gate (max-concurrent, oldest instant first), the catch-up rate
 *   worker.c    a schedule's worker thread and its runs (check, backup, prune)
 *   save.c      the state and its snapshots in the state store
 *   report.c    metrics and /healthz
 *   describe.c  the --dry-run description
 *
 * Locks: mu guards the state, the gate and the counters; store_mu serialises saves (taken
 * before mu); clock_mu guards the clock readings and the last step (taken alone).
 */
#ifndef CAIRN_SCHED_INTERNAL_H
#define CAIRN_SCHED_INTERNAL_H

#include <pthread.h>

#include "common/util.h"
#include "plan.h"
#include "sched.h"

struct worker {
    struct cairn_sched *s;
    const struct cairn_schedule_cfg *cfg;
    pthread_t thread;
    int started;
    /* Boot facts, for describe() and the catch-up phase. */
    int had_entry;
    int64_t boot_last;
    struct cairn_plan boot_plan;
    /* Gate bookkeeping (under s->mu). */
    int waiting;
    int64_t wait_at;
};

struct cairn_sched {
    const struct cairn_config *cfg;
    struct cairn_state_store *store;
    const struct cairn_runner *runner;
    const struct cairn_clock *clock;
    struct cairn_metrics *metrics;

    pthread_mutex_t mu; /* state, gate, flags, counters below */
    pthread_cond_t cond;
    struct cairn_state *state;
    uint64_t gen, saved_gen; /* state changes made / covered by the last good save */
    int stopping;
    int reloading;      /* sched_stop_reload: running backups are not cancelled */
    uint64_t stop_mono; /* when a hard stop was asked (mono_ns) */
    int (*fence)(void *ctx, struct cairn_err *err); /* sched_set_fence; NULL: none */
    void *fence_ctx;
    volatile int abort; /* cancel flag handed to runners; written with __atomic */
    unsigned running;   /* backups admitted by the gate */
    unsigned active;    /* worker threads not yet finished */
    unsigned booting;   /* workers still in their boot catch-up */
    int64_t boot_now;
    int64_t last_save_at; /* scheduler clock of the last good save, -1 never */
    int last_save_failed;
    char last_save_error[256];
    struct cairn_ratelimit rl;

    pthread_mutex_t store_mu; /* one save at a time, copy to status (taken before mu) */

    pthread_mutex_t clock_mu; /* clock readings and the last step, below */
    int clock_seen;
    int64_t seen_now, seen_offset_ms;
    int64_t step_from, step_to; /* the last wall-clock step */
    uint64_t step_mono;         /* when it was seen (mono_ns), 0 never */
    uint64_t prune_hold_until;  /* no retention before this (mono_ns), after a jump */

    struct worker *w;
    size_t n;

    struct {
        struct cairn_metric *save_errors, *creation_errors, *saves, *load_fallbacks, *age,
            *last_save, *started, *succeeded, *failed, *existing, *bytes, *duration, *last_success,
            *catchup_runs, *catchup_skipped, *pruned, *prune_errors, *in_flight, *clock_back,
            *clock_fwd, *clock_step, *gc_reclaimed, *gc_errors;
        /* Hooks, webhooks and restore drills (docs/OPERATIONS.md). */
        struct cairn_metric *hook_failures, *webhook_failures, *drill_last, *drill_ok, *drill_secs,
            *drill_failures, *interval, *drill_interval, *start_time;
    } m;
};

static inline void sched_fmt_time(int64_t t, char *out, size_t cap)
{
    format_rfc3339(t, 0, out, cap);
}

/* clock.c. Read the clock and watch it for steps. */
int64_t sched_now(struct cairn_sched *s);
/* Record, count and log a wall-clock step from `from` to `to` (clock_mu not held). `saved`
 * names the schedule whose saved last instant showed it (boot), or is NULL. */
void sched_clock_step(struct cairn_sched *s, int64_t from, int64_t to, const char *saved);
/* Is retention held after a forward step? */
int sched_prune_held(struct cairn_sched *s);

/* gate.c. Wait on s->cond for at most ms milliseconds (mu held). */
void sched_timed_wait(struct cairn_sched *s, uint64_t ms);
/* Wait for the gate to admit a run of w's instant `at`; 0 when stopped meanwhile. */
int sched_gate_enter(struct cairn_sched *s, struct worker *w, int64_t at);
void sched_gate_leave(struct cairn_sched *s);
/* Sleep until the catch-up rate limiter allows another start; 0 when stopped meanwhile. */
int sched_rate_wait(struct cairn_sched *s);

/* save.c. Save a snapshot of the state (why: for the log); CAIRN_OK or the failure's code,
 * also kept for /healthz. */
int sched_save(struct cairn_sched *s, const char *why);
/* Record that a schedule's instant was dealt with (ran, was done already, or skipped). */
void sched_advance(struct cairn_sched *s, const char *name, int64_t at);
/* Move a schedule's entry back to `to` (mu held). */
void sched_state_rewind(struct cairn_sched *s, const char *name, int64_t to);

/* report.c. Declare the metrics (every series exported from the start) and the collector. */
void sched_declare_metrics(struct cairn_sched *s, struct cairn_metrics *m);

/* worker.c. The worker thread of one schedule (arg: its struct worker). */
void *sched_worker_main(void *arg);
/* Log, count and record the instants a plan skips. */
void sched_apply_skips(struct worker *w, const struct cairn_plan *p);

/* drill.c. A drill's outcome, for its webhook. */
struct drill_note {
    int ran, ok;
    char backup[CAIRN_RUN_NAME_MAX];
    char error[CAIRN_ERR_MSG_MAX];
    int64_t started, finished;
};
/* Run the restore drill of schedule c now (admitted by the gate): the outcome is logged,
 * counted and kept in note; CAIRN_E_CANCELLED when shutdown cut it, else CAIRN_OK. */
int sched_drill(struct cairn_sched *s, const struct cairn_schedule_cfg *c, struct drill_note *note);
/* The webhook of a drill (after the gate was left). */
void sched_drill_notify(struct cairn_sched *s, const struct cairn_schedule_cfg *c,
                        const struct drill_note *note);
/* The state entry of a schedule's drills ("drill.<schedule>"; config.c keeps schedule names
 * out of that prefix). */
void sched_drill_key(const char *schedule, char *out, size_t cap);

#endif
