/* What the scheduler publishes: its metrics (declared at boot, refreshed before each scrape)
 * and the /healthz verdict. */
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

void sched_declare_metrics(struct cairn_sched *s, struct cairn_metrics *m)
{
    static const double buckets[] = {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400};
    const size_t nb = sizeof(buckets) / sizeof(buckets[0]);
#define D(field, name, type, help, label)                                                          \
    s->m.field = metrics_declare(m, name, type, help, label, buckets, nb)
    D(save_errors, "cairn_snapshot_save_errors_total", CAIRN_COUNTER,
      "State snapshots that could not be written to the state store.", NULL);
    D(creation_errors, "cairn_snapshot_creation_errors_total", CAIRN_COUNTER,
      "State snapshots that could not be serialised (nothing was written).", NULL);
    D(saves, "cairn_snapshot_saves_total", CAIRN_COUNTER, "State snapshots saved.", NULL);
    D(load_fallbacks, "cairn_snapshot_load_fallbacks_total", CAIRN_COUNTER,
      "Corrupt stored snapshots skipped at boot in favour of an older good one.", NULL);
    D(age, "cairn_snapshot_age_seconds", CAIRN_GAUGE,
      "Seconds since the last state snapshot was saved.", NULL);
    D(last_save, "cairn_snapshot_last_save_timestamp_seconds", CAIRN_GAUGE,
      "Unix time of the last saved state snapshot.", NULL);
    D(started, "cairn_backups_started_total", CAIRN_COUNTER, "Backups started.", "schedule");
    D(succeeded, "cairn_backups_succeeded_total", CAIRN_COUNTER, "Backups completed.", "schedule");
    D(failed, "cairn_backups_failed_total", CAIRN_COUNTER, "Backups that failed.", "schedule");
    D(existing, "cairn_backups_already_complete_total", CAIRN_COUNTER,
      "Runs skipped because their backup already existed complete (idempotent re-runs).",
      "schedule");
    D(bytes, "cairn_backup_bytes_total", CAIRN_COUNTER,
      "Logical bytes (before compression) stored by completed backups.", "schedule");
    D(duration, "cairn_backup_duration_seconds", CAIRN_HISTOGRAM, "Wall time of completed backups.",
      "schedule");
    D(last_success, "cairn_backup_last_success_timestamp_seconds", CAIRN_GAUGE,
      "Unix time the last backup of the schedule completed.", "schedule");
    D(catchup_runs, "cairn_catchup_runs_total", CAIRN_COUNTER,
      "Catch-up runs started for missed instants.", "schedule");
    D(catchup_skipped, "cairn_catchup_skipped_total", CAIRN_COUNTER,
      "Missed instants skipped by the catch-up policy or cap.", "schedule");
    D(pruned, "cairn_prune_removed_total", CAIRN_COUNTER,
      "Old backups removed by the keep-* rules.", "schedule");
    D(prune_errors, "cairn_prune_errors_total", CAIRN_COUNTER, "Prune passes that failed.",
      "schedule");
    D(gc_reclaimed, "cairn_gc_reclaimed_bytes_total", CAIRN_COUNTER,
      "Bytes of chunk packs deleted or shrunk by the garbage collection after a prune "
      "(deduplicating repositories).",
      "schedule");
    D(gc_errors, "cairn_gc_errors_total", CAIRN_COUNTER,
      "Garbage collections after a prune that failed (the next prune collects again).", "schedule");
    D(in_flight, "cairn_backups_in_flight", CAIRN_GAUGE, "Backups running now.", NULL);
    D(clock_back, "cairn_clock_backwards_total", CAIRN_COUNTER,
      "Wall-clock steps back seen (schedules then continue from the current time).", NULL);
    D(clock_fwd, "cairn_clock_forwards_total", CAIRN_COUNTER,
      "Wall-clock steps forward seen (not counting suspend).", NULL);
    D(clock_step, "cairn_clock_last_step_seconds", CAIRN_GAUGE,
      "Size of the last wall-clock step, negative when back; 0 before any.", NULL);
    D(hook_failures, "cairn_hook_failures_total", CAIRN_COUNTER,
      "Hooks (before, after, on-failure) that failed or timed out.", "schedule");
    D(webhook_failures, "cairn_webhook_failures_total", CAIRN_COUNTER,
      "Webhook notifications not delivered after every retry.", "schedule");
    D(drill_last, "cairn_drill_last_timestamp_seconds", CAIRN_GAUGE,
      "Unix time the last restore drill of the schedule finished.", "schedule");
    D(drill_ok, "cairn_drill_last_success", CAIRN_GAUGE,
      "1 when the last restore drill restored and probed the backup, 0 when it failed.",
      "schedule");
    D(drill_secs, "cairn_drill_duration_seconds", CAIRN_GAUGE,
      "Wall time of the last restore drill (restore and probe).", "schedule");
    D(drill_failures, "cairn_drill_failures_total", CAIRN_COUNTER, "Restore drills that failed.",
      "schedule");
    D(interval, "cairn_schedule_interval_seconds", CAIRN_GAUGE,
      "Longest spacing of the schedule's runs (every; for cron the widest gap of the next 16), "
      "for alerts on missing backups.",
      "schedule");
    D(drill_interval, "cairn_drill_interval_seconds", CAIRN_GAUGE,
      "Spacing of the schedule's restore drills (drill = every D).", "schedule");
    D(start_time, "cairn_start_time_seconds", CAIRN_GAUGE, "Unix time cairnd run started.", NULL);
#undef D
    metrics_set(s->m.start_time, NULL, (double)time(NULL));
    for (size_t j = 0; j < s->cfg->n_schedules; j++) {
        const struct cairn_schedule_cfg *c = &s->cfg->schedules[j];
        metrics_set(s->m.interval, c->name, (double)widest_gap(&c->timing, time(NULL)));
        if (c->drill_every > 0)
            metrics_set(s->m.drill_interval, c->name, (double)c->drill_every);
    }
    /* Export every series from the start, so rates and alerts work before the first event. */
    struct cairn_metric *unlabelled[] = {s->m.save_errors,    s->m.creation_errors, s->m.saves,
                                         s->m.load_fallbacks, s->m.in_flight,       s->m.clock_back,
                                         s->m.clock_fwd,      s->m.clock_step};
    for (size_t i = 0; i < sizeof(unlabelled) / sizeof(unlabelled[0]); i++)
        metrics_add(unlabelled[i], NULL, 0);
    struct cairn_metric *per[] = {s->m.started,         s->m.succeeded, s->m.failed,
                                  s->m.existing,        s->m.bytes,     s->m.catchup_runs,
                                  s->m.catchup_skipped, s->m.pruned,    s->m.prune_errors,
                                  s->m.gc_reclaimed,    s->m.gc_errors, s->m.hook_failures,
                                  s->m.webhook_failures};
    for (size_t j = 0; j < s->cfg->n_schedules; j++)
        for (size_t i = 0; i < sizeof(per) / sizeof(per[0]); i++)
            metrics_add(per[i], s->cfg->schedules[j].name, 0);
    for (size_t j = 0; j < s->cfg->n_schedules; j++)
        if (s->cfg->schedules[j].drill_every > 0)
            metrics_add(s->m.drill_failures, s->cfg->schedules[j].name, 0);
    metrics_on_collect(m, collect, s);
}
