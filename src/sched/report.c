/* What the scheduler publishes: its metrics (declared at boot, refreshed before each scrape)
 * and the /healthz verdict. */
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

static void collect(void *ctx)
{
    struct cairn_sched *s = ctx;
    pthread_mutex_lock(&s->mu);
    int64_t at = s->last_save_at;
    pthread_mutex_unlock(&s->mu);
    if (at >= 0)
        metrics_set(s->m.age, NULL, (double)(sched_now(s) - at));
}

int sched_health(void *ctx, char *body, size_t cap)
{
    struct cairn_sched *s = ctx;
    pthread_mutex_lock(&s->mu);
    int status = 200;
    if (s->stopping) {
        status = 503;
        snprintf(body, cap, "shutting down\n");
    } else if (s->last_save_failed) {
        status = 503;
        snprintf(body, cap, "degraded: last state snapshot save failed: %s\n", s->last_save_error);
    } else {
        /* A recent clock step is a notice, not a failure: the schedules keep running. */
        char notice[200] = "ok";
        pthread_mutex_lock(&s->clock_mu);
        uint64_t mono = mono_ns();
        if (s->step_mono != 0 &&
            mono - s->step_mono < (uint64_t)CAIRN_CLOCK_NOTICE_SECONDS * 1000000000ull) {
            char a[40], b[40];
            long long secs = (long long)(s->step_to - s->step_from);
            sched_fmt_time(s->step_from, a, sizeof(a));
            sched_fmt_time(s->step_to, b, sizeof(b));
            snprintf(notice, sizeof(notice),
                     "notice: the wall clock went %s by %llds (from %s to %s) %llus ago%s",
                     secs < 0 ? "back" : "forward", secs < 0 ? -secs : secs, a, b,
                     (unsigned long long)((mono - s->step_mono) / 1000000000ull),
                     s->prune_hold_until > mono ? "; retention held" : "");
        }
        pthread_mutex_unlock(&s->clock_mu);
        snprintf(body, cap, "%s\n%u backups running, %u schedules catching up\n", notice,
                 s->running, s->booting);
    }
    pthread_mutex_unlock(&s->mu);
    return status;
}

/* The widest spacing of t's next 16 runs after `from` (an interval's own). */
static int64_t widest_gap(const struct cairn_timing *t, int64_t from)
{
    if (!t->is_cron)
        return t->every;
    int64_t gap = 0, a = cron_timing_next(t, from);
    for (int i = 0; i < 16 && a >= 0; i++) {
        int64_t b = cron_timing_next(t, a);
        if (b >= 0 && b - a > gap)
            gap = b - a;
        a = b;
    }
    return gap;
}

/* cairnd's metrics (docs/OPERATIONS.md), declared in this order. per_schedule: labelled
 * "schedule". zero: exported as 0 from the start (per schedule when labelled), so that rates
 * and alerts work before the first event. */
#define M(field) offsetof(struct cairn_sched, m.field)
static const struct metric_def {
    size_t off; /* the handle in struct cairn_sched's m */
    const char *name;
    enum cairn_metric_type type;
    int per_schedule, zero;
    const char *help;
} k_metrics[] = {
    {M(save_errors), "cairn_snapshot_save_errors_total", CAIRN_COUNTER, 0, 1,
     "State snapshots that could not be written to the state store."},
    {M(creation_errors), "cairn_snapshot_creation_errors_total", CAIRN_COUNTER, 0, 1,
     "State snapshots that could not be serialised (nothing was written)."},
    {M(saves), "cairn_snapshot_saves_total", CAIRN_COUNTER, 0, 1, "State snapshots saved."},
    {M(load_fallbacks), "cairn_snapshot_load_fallbacks_total", CAIRN_COUNTER, 0, 1,
     "Corrupt stored snapshots skipped at boot in favour of an older good one."},
    {M(age), "cairn_snapshot_age_seconds", CAIRN_GAUGE, 0, 0,
     "Seconds since the last state snapshot was saved."},
    {M(last_save), "cairn_snapshot_last_save_timestamp_seconds", CAIRN_GAUGE, 0, 0,
     "Unix time of the last saved state snapshot."},
    {M(started), "cairn_backups_started_total", CAIRN_COUNTER, 1, 1, "Backups started."},
    {M(succeeded), "cairn_backups_succeeded_total", CAIRN_COUNTER, 1, 1, "Backups completed."},
    {M(failed), "cairn_backups_failed_total", CAIRN_COUNTER, 1, 1, "Backups that failed."},
    {M(existing), "cairn_backups_already_complete_total", CAIRN_COUNTER, 1, 1,
     "Runs skipped because their backup already existed complete (idempotent re-runs)."},
    {M(bytes), "cairn_backup_bytes_total", CAIRN_COUNTER, 1, 1,
     "Logical bytes (before compression) stored by completed backups."},
    {M(duration), "cairn_backup_duration_seconds", CAIRN_HISTOGRAM, 1, 0,
     "Wall time of completed backups."},
    {M(last_success), "cairn_backup_last_success_timestamp_seconds", CAIRN_GAUGE, 1, 0,
     "Unix time the last backup of the schedule completed."},
    {M(catchup_runs), "cairn_catchup_runs_total", CAIRN_COUNTER, 1, 1,
     "Catch-up runs started for missed instants."},
    {M(catchup_skipped), "cairn_catchup_skipped_total", CAIRN_COUNTER, 1, 1,
     "Missed instants skipped by the catch-up policy or cap."},
    {M(pruned), "cairn_prune_removed_total", CAIRN_COUNTER, 1, 1,
     "Old backups removed by the keep-* rules."},
    {M(prune_errors), "cairn_prune_errors_total", CAIRN_COUNTER, 1, 1, "Prune passes that failed."},
    {M(gc_reclaimed), "cairn_gc_reclaimed_bytes_total", CAIRN_COUNTER, 1, 1,
     "Bytes of chunk packs deleted or shrunk by the garbage collection after a prune "
     "(deduplicating repositories)."},
    {M(gc_errors), "cairn_gc_errors_total", CAIRN_COUNTER, 1, 1,
     "Garbage collections after a prune that failed (the next prune collects again)."},
    {M(in_flight), "cairn_backups_in_flight", CAIRN_GAUGE, 0, 1, "Backups running now."},
    {M(clock_back), "cairn_clock_backwards_total", CAIRN_COUNTER, 0, 1,
     "Wall-clock steps back seen (schedules then continue from the current time)."},
    {M(clock_fwd), "cairn_clock_forwards_total", CAIRN_COUNTER, 0, 1,
     "Wall-clock steps forward seen (not counting suspend)."},
    {M(clock_step), "cairn_clock_last_step_seconds", CAIRN_GAUGE, 0, 1,
     "Size of the last wall-clock step, negative when back; 0 before any."},
    {M(hook_failures), "cairn_hook_failures_total", CAIRN_COUNTER, 1, 1,
     "Hooks (before, after, on-failure) that failed or timed out."},
    {M(webhook_failures), "cairn_webhook_failures_total", CAIRN_COUNTER, 1, 1,
     "Webhook notifications not delivered after every retry."},
    {M(drill_last), "cairn_drill_last_timestamp_seconds", CAIRN_GAUGE, 1, 0,
     "Unix time the last restore drill of the schedule finished."},
    {M(drill_ok), "cairn_drill_last_success", CAIRN_GAUGE, 1, 0,
     "1 when the last restore drill restored and probed the backup, 0 when it failed."},
    {M(drill_secs), "cairn_drill_duration_seconds", CAIRN_GAUGE, 1, 0,
     "Wall time of the last restore drill (restore and probe)."},
    {M(drill_failures), "cairn_drill_failures_total", CAIRN_COUNTER, 1, 0,
     "Restore drills that failed."},
    {M(interval), "cairn_schedule_interval_seconds", CAIRN_GAUGE, 1, 0,
     "Longest spacing of the schedule's runs (every; for cron the widest gap of the next 16), for "
     "alerts on missing backups."},
    {M(drill_interval), "cairn_drill_interval_seconds", CAIRN_GAUGE, 1, 0,
     "Spacing of the schedule's restore drills (drill = every D)."},
    {M(start_time), "cairn_start_time_seconds", CAIRN_GAUGE, 0, 0, "Unix time cairnd run started."},
};
#undef M

void sched_declare_metrics(struct cairn_sched *s, struct cairn_metrics *m)
{
    static const double buckets[] = {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400};
    const size_t nb = sizeof(buckets) / sizeof(buckets[0]);
    for (size_t i = 0; i < sizeof(k_metrics) / sizeof(k_metrics[0]); i++) {
        const struct metric_def *d = &k_metrics[i];
        struct cairn_metric *f = metrics_declare(m, d->name, d->type, d->help,
                                                 d->per_schedule ? "schedule" : NULL, buckets, nb);
        *(struct cairn_metric **)(void *)((char *)s + d->off) = f;
        if (d->zero && !d->per_schedule)
            metrics_add(f, NULL, 0);
        for (size_t j = 0; d->zero && d->per_schedule && j < s->cfg->n_schedules; j++)
            metrics_add(f, s->cfg->schedules[j].name, 0);
    }
    metrics_set(s->m.start_time, NULL, (double)time(NULL));
    for (size_t j = 0; j < s->cfg->n_schedules; j++) {
        const struct cairn_schedule_cfg *c = &s->cfg->schedules[j];
        metrics_set(s->m.interval, c->name, (double)widest_gap(&c->timing, time(NULL)));
        if (c->drill_every > 0) {
            metrics_set(s->m.drill_interval, c->name, (double)c->drill_every);
            metrics_add(s->m.drill_failures, c->name, 0);
        }
    }
    metrics_on_collect(m, collect, s);
}
