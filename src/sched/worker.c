/* One worker thread per schedule: its boot catch-up, then each due instant in order through
 * the run gate; skips, clock rewinds, and the run itself (check, backup, prune). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cairn/log.h"
#include "common/util.h"
#include "hook.h"
#include "internal.h"

/* The HA leader's fence (sched_set_fence): CAIRN_OK to go on; else the lease was lost, the
 * scheduler is aborted and nothing more is written. */
static int fenced(struct cairn_sched *s, const char *sn, const char *what, const char *name)
{
    if (s->fence == NULL)
        return 0;
    struct cairn_err err;
    if (s->fence(s->fence_ctx, &err) == CAIRN_OK)
        return 0;
    cairn_error("sched", "schedule %s: not %s %s: %s", sn, what, name, err.msg);
    sched_abort(s);
    return 1;
}

/* The chunk collection after a prune's removals: counted and logged, a failure never fatal
 * (the next prune collects again); a lost lease stops the scheduler as before retention. */
static void prune_gc_report(struct cairn_sched *s, const char *sn,
                            const struct cairn_prune_result *res)
{
    if (res->gc_fenced) {
        cairn_error("sched", "schedule %s: not reclaiming chunk space: %s", sn, res->gc_msg);
        sched_abort(s);
    } else if (res->gc_rc != CAIRN_OK) {
        metrics_add(s->m.gc_errors, sn, 1);
        cairn_error("sched", "schedule %s: reclaiming chunk space failed: %s", sn, res->gc_msg);
    } else if (res->gc_ran) {
        metrics_add(s->m.gc_reclaimed, sn, (double)res->gc_freed);
        char freed[32];
        format_bytes(res->gc_freed, freed, sizeof(freed));
        cairn_info("sched",
                   "schedule %s: reclaimed %s of chunk space (%llu pack(s) deleted, %llu "
                   "repacked)",
                   sn, freed, (unsigned long long)res->gc_packs_deleted,
                   (unsigned long long)res->gc_packs_repacked);
    }
}

/* Retention after a successful backup: held after a forward clock step, postponed while
 * another backup holds the location; failures are counted and logged, never fatal. */
static void prune_after(struct cairn_sched *s, const struct cairn_run *run)
{
    const char *sn = run->schedule->name;
    struct cairn_prune_result res = {0};
    int prc;
    struct cairn_err perr;
    if (fenced(s, sn, "pruning after", run->name)) {
        return;
    } else if (sched_prune_held(s)) {
        cairn_warn("sched",
                   "schedule %s: retention held: the wall clock jumped forward less "
                   "than %ds ago",
                   sn, CAIRN_CLOCK_NOTICE_SECONDS);
    } else if ((prc = s->runner->prune(s->runner->ctx, run, &res, &perr)) == CAIRN_E_LOCKED) {
        /* Another backup holds the location: normal when schedules share it. */
        cairn_warn("sched", "schedule %s: retention postponed to the next run: %s", sn, perr.msg);
    } else if (prc != CAIRN_OK) {
        metrics_add(s->m.prune_errors, sn, 1);
        cairn_error("sched", "schedule %s: prune failed: %s", sn, perr.msg);
    } else if (res.removed > 0) {
        metrics_add(s->m.pruned, sn, res.removed);
        cairn_info("sched", "schedule %s: pruned %u old backups", sn, res.removed);
    }
    prune_gc_report(s, sn, &res);
}

/* The environment of a run's hooks (docs/OPERATIONS.md, "Hooks"). */
static void run_env(const struct cairn_run *run, const char *when, struct hook_env *env)
{
    memset(env, 0, sizeof(*env));
    hook_env_set(env, "CAIRN_SCHEDULE", "%s", run->schedule->name);
    hook_env_set(env, "CAIRN_BACKUP", "%s", run->name);
    hook_env_set(env, "CAIRN_SCHEDULED_AT", "%s", when);
    hook_env_set(env, "CAIRN_CATCHUP", "%d", run->catchup ? 1 : 0);
}

/* Run one of a schedule's hooks (kind: "before", "after", "on-failure"); a failure is counted
 * and returned with err naming the hook. */
static int run_hook(struct cairn_sched *s, const struct cairn_run *run, const char *kind,
                    const char *command, struct hook_env *env, struct cairn_err *err)
{
    if (command == NULL)
        return CAIRN_OK;
    const char *sn = run->schedule->name;
    char what[200];
    snprintf(what, sizeof(what), "%s hook of schedule %s", kind, sn);
    hook_env_set(env, "CAIRN_HOOK", "%s", kind);
    int rc = hook_run(command, env, run->schedule->hooks.timeout, &s->abort, what, NULL, err);
    if (rc != CAIRN_OK && rc != CAIRN_E_CANCELLED)
        metrics_add(s->m.hook_failures, sn, 1);
    return rc;
}

/* After the run: the outcome into the environment, then after (success) or on-failure, and
 * the webhook. A failing after hook is logged and counted; the backup stays complete. */
static void finish_run(struct cairn_sched *s, const struct cairn_run *run, struct hook_env *env,
                       int rc, uint64_t bytes, const char *error, int64_t started)
{
    const struct cairn_hooks_cfg *h = &run->schedule->hooks;
    const char *sn = run->schedule->name;
    int64_t finished = (int64_t)time(NULL);
    char t0[40], t1[40];
    format_rfc3339(started, 0, t0, sizeof(t0));
    format_rfc3339(finished, 0, t1, sizeof(t1));
    const char *status = rc == CAIRN_OK ? "success" : "failure";
    hook_env_set(env, "CAIRN_STATUS", "%s", status);
    hook_env_set(env, "CAIRN_BYTES", "%llu", (unsigned long long)bytes);
    hook_env_set(env, "CAIRN_ERROR", "%s", error ? error : "");
    hook_env_set(env, "CAIRN_STARTED", "%s", t0);
    hook_env_set(env, "CAIRN_FINISHED", "%s", t1);
    hook_env_set(env, "CAIRN_DURATION", "%lld", (long long)(finished - started));
    struct cairn_err herr;
    int hrc = run_hook(s, run, rc == CAIRN_OK ? "after" : "on-failure",
                       rc == CAIRN_OK ? h->after : h->on_failure, env, &herr);
    if (hrc != CAIRN_OK && hrc != CAIRN_E_CANCELLED)
        cairn_error("sched", "schedule %s: %s%s", sn, herr.msg,
                    rc == CAIRN_OK ? " (the backup stays complete)" : "");
    if (h->webhook != NULL && (rc != CAIRN_OK || h->webhook_on == 2)) {
        struct hook_report r = {"backup", sn, run->name, status, bytes, error, started, finished};
        if (hook_webhook(h->webhook, &r, &s->abort, &herr) != CAIRN_OK) {
            metrics_add(s->m.webhook_failures, sn, 1);
            cairn_error("sched", "schedule %s: %s", sn, herr.msg);
        }
    }
}

/* What take_backup leaves for finish_run, which runs after the gate is left. */
struct outcome {
    struct hook_env env;
    int64_t started;
    uint64_t bytes;
    struct cairn_err err;
};

/* Take the backup of run (admitted by the gate, not complete yet): the before hook, the
 * backup, count and log it, prune after a success. Returns the runner's code (a before
 * hook's failure is the run's); out is for finish_run. */
static int take_backup(struct cairn_sched *s, struct cairn_run *run, const char *when,
                       struct outcome *out)
{
    const char *sn = run->schedule->name;
    metrics_add(s->m.started, sn, 1);
    if (run->catchup)
        metrics_add(s->m.catchup_runs, sn, 1);
    struct hook_env *env = &out->env;
    struct cairn_err *errp = &out->err;
    run_env(run, when, env);
    out->started = (int64_t)time(NULL);
    struct cairn_run_result res = {0};
    uint64_t t0 = mono_ns();
    int rc = run_hook(s, run, "before", run->schedule->hooks.before, env, errp);
    if (rc != CAIRN_OK && rc != CAIRN_E_CANCELLED) {
        cairn_err_wrap(errp, rc, "backup not started");
    } else if (rc == CAIRN_OK) {
        cairn_info("sched", "schedule %s: backup %s started (%s run for %s)", sn, run->name,
                   run->catchup ? "catch-up" : "scheduled", when);
        rc = s->runner->run(s->runner->ctx, run, &s->abort, &res, errp);
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    if (rc == CAIRN_OK) {
        metrics_add(s->m.succeeded, sn, 1);
        metrics_add(s->m.bytes, sn, (double)res.bytes);
        metrics_observe(s->m.duration, sn, secs);
        run->wall_now = (int64_t)time(NULL); /* before sched_now: see struct cairn_run */
        metrics_set(s->m.last_success, sn, (double)sched_now(s));
        char size[32];
        format_bytes(res.bytes, size, sizeof(size));
        char skipped[96] = "";
        if (res.unchanged_files > 0) {
            char ub[32];
            format_bytes(res.unchanged_bytes, ub, sizeof(ub));
            snprintf(skipped, sizeof(skipped), " (%llu unchanged files, %s, not read)",
                     (unsigned long long)res.unchanged_files, ub);
        }
        cairn_info("sched", "schedule %s: backup %s complete: %s in %.1fs%s", sn, run->name, size,
                   secs, skipped);
        prune_after(s, run);
    } else if (rc == CAIRN_E_CANCELLED) {
        cairn_warn("sched",
                   "schedule %s: backup %s aborted by shutdown; it runs again after "
                   "restart",
                   sn, run->name);
    } else {
        metrics_add(s->m.failed, sn, 1);
        cairn_error("sched", "schedule %s: backup %s failed after %.1fs: %s", sn, run->name, secs,
                    errp->msg);
    }
    out->bytes = res.bytes;
    return rc;
}

static int execute(struct worker *w, int64_t at, int catchup)
{
    struct cairn_sched *s = w->s;
    const char *sn = w->cfg->name;
    struct cairn_run run = {.schedule = w->cfg,
                            .at = at,
                            .catchup = catchup,
                            .commit_check = s->fence,
                            .commit_ctx = s->fence_ctx};
    plan_run_name(sn, at, run.name, sizeof(run.name));
    char when[40];
    sched_fmt_time(at, when, sizeof(when));

    if (!sched_gate_enter(s, w, at))
        return CAIRN_E_CANCELLED;
    if (fenced(s, sn, "starting backup", run.name)) {
        sched_gate_leave(s);
        return CAIRN_E_CANCELLED;
    }
    metrics_add(s->m.in_flight, NULL, 1);
    struct cairn_err err;
    struct outcome out = {0};
    int complete = 0, took = 0;
    int rc = s->runner->check(s->runner->ctx, &run, &complete, &err);
    if (rc != CAIRN_OK) {
        cairn_warn("sched", "schedule %s: checking for backup %s failed: %s; running it", sn,
                   run.name, err.msg);
        complete = 0;
    }
    if (complete) {
        metrics_add(s->m.existing, sn, 1);
        cairn_info("sched", "schedule %s: backup %s for %s is already complete, counted as done",
                   sn, run.name, when);
        rc = CAIRN_OK;
    } else {
        rc = take_backup(s, &run, when, &out);
        took = 1;
    }
    metrics_add(s->m.in_flight, NULL, -1);
    sched_gate_leave(s);
    /* Outside the gate: a slow hook or webhook receiver holds no max-concurrent slot. */
    if (took && rc != CAIRN_E_CANCELLED)
        finish_run(s, &run, &out.env, rc, out.bytes, rc == CAIRN_OK ? NULL : out.err.msg,
                   out.started);
    hook_env_free(&out.env);
    if (rc == CAIRN_E_CANCELLED)
        return rc;
    /* A failed run is not retried: it is counted and logged, and the next instant tries again
     * (retrying forever would starve the schedule). */
    sched_advance(s, sn, at);
    sched_save(s, "after run");
    return CAIRN_OK;
}

void sched_apply_skips(struct worker *w, const struct cairn_plan *p)
{
    if (p->skipped == 0)
        return;
    struct cairn_sched *s = w->s;
    char until[40];
    sched_fmt_time(p->skipped_until, until, sizeof(until));
    cairn_warn("sched",
               "schedule %s: skipping %llu missed runs up to %s (catch-up = %s, catch-up-max = %u)",
               w->cfg->name, (unsigned long long)p->skipped, until,
               w->cfg->catchup == CAIRN_CATCHUP_ALL      ? "all"
               : w->cfg->catchup == CAIRN_CATCHUP_LATEST ? "latest"
                                                         : "none",
               s->cfg->catchup_max);
    metrics_add(s->m.catchup_skipped, w->cfg->name, (double)p->skipped);
    sched_advance(s, w->cfg->name, p->skipped_until);
}

/* Run a plan's instants in order; catch-up runs go through the rate limiter. */
static int run_plan(struct worker *w, const int64_t *runs, size_t n, int all_catchup)
{
    for (size_t i = 0; i < n; i++) {
        int catchup = all_catchup || i + 1 < n;
        if (catchup && !sched_rate_wait(w->s))
            return CAIRN_E_CANCELLED;
        if (execute(w, runs[i], catchup) == CAIRN_E_CANCELLED)
            return CAIRN_E_CANCELLED;
    }
    return CAIRN_OK;
}

/* The schedule's last instant is in the future of a clock that went back: continue from the
 * current time (the instants in between run again unless their backup is complete already)
 * rather than wait for the clock to catch up. */
static void rewind_schedule(struct worker *w, int64_t cursor, int64_t now)
{
    struct cairn_sched *s = w->s;
    pthread_mutex_lock(&s->mu);
    sched_state_rewind(s, w->cfg->name, now - 1); /* an instant due right now still runs */
    pthread_mutex_unlock(&s->mu);
    char a[40], b[40];
    sched_fmt_time(cursor, a, sizeof(a));
    sched_fmt_time(now, b, sizeof(b));
    cairn_info("sched",
               "schedule %s: last instant %s is after the current time %s: continuing "
               "from the current time",
               w->cfg->name, a, b);
}

/* The schedule's drill, when one is due and no backup is: through the gate (a drill is a
 * restore and counts against max-concurrent), then its instant recorded. Returns 1 when it
 * ran (or shutdown cut it: *rc says), 0 when none was due. */
static int drill_if_due(struct worker *w, int64_t now, int *rc)
{
    struct cairn_sched *s = w->s;
    const struct cairn_schedule_cfg *c = w->cfg;
    if (c->drill_every <= 0)
        return 0;
    char key[CAIRN_STATE_NAME_MAX + 8];
    sched_drill_key(c->name, key, sizeof(key));
    int64_t last = now;
    pthread_mutex_lock(&s->mu);
    cairn_state_get(s->state, key, &last);
    pthread_mutex_unlock(&s->mu);
    struct cairn_timing t = {.every = c->drill_every};
    int64_t due = cron_timing_next(&t, last);
    if (due < 0 || due > now)
        return 0;
    if (!sched_gate_enter(s, w, due)) {
        *rc = CAIRN_E_CANCELLED;
        return 1;
    }
    struct drill_note note;
    *rc = sched_drill(s, c, &note);
    sched_gate_leave(s);
    if (*rc == CAIRN_E_CANCELLED)
        return 1;
    sched_drill_notify(s, c, &note);
    sched_advance(s, key, now - now % c->drill_every); /* missed drills are not caught up */
    sched_save(s, "after drill");
    return 1;
}

void *sched_worker_main(void *arg)
{
    struct worker *w = arg;
    struct cairn_sched *s = w->s;
    const struct cairn_schedule_cfg *c = w->cfg;
    int rc = run_plan(w, w->boot_plan.runs, w->boot_plan.n, 1);

    pthread_mutex_lock(&s->mu);
    s->booting--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);

    while (rc == CAIRN_OK) {
        pthread_mutex_lock(&s->mu);
        int64_t cursor = 0;
        cairn_state_get(s->state, c->name, &cursor);
        int stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        int64_t next = cron_timing_next(&c->timing, cursor);
        int64_t now = sched_now(s);
        if (cursor > now + CAIRN_CLOCK_STEP_TOLERANCE) {
            rewind_schedule(w, cursor, now);
            continue;
        }
        if ((next < 0 || next > now) && drill_if_due(w, now, &rc))
            continue;
        if (next < 0 || next > now) {
            pthread_mutex_lock(&s->mu);
            if (!s->stopping) {
                uint64_t ms = s->clock->poll_ms;
                if (next >= 0 && (uint64_t)(next - now) * 1000 < ms)
                    ms = (uint64_t)(next - now) * 1000;
                sched_timed_wait(s, ms);
            }
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        /* The newest due instant runs on time; older ones were missed while busy or while
         * the clock jumped (suspend), and follow the catch-up policy, cap and rate. */
        struct cairn_plan newest, missed;
        plan_build(&c->timing, cursor, now, CAIRN_CATCHUP_ALL, 1, &newest);
        if (newest.n == 0) {
            plan_free(&newest);
            continue;
        }
        int64_t due = newest.runs[0];
        plan_build(&c->timing, cursor, due - 1, c->catchup, s->cfg->catchup_max, &missed);
        sched_apply_skips(w, &missed);
        rc = run_plan(w, missed.runs, missed.n, 1);
        if (rc == CAIRN_OK)
            rc = run_plan(w, &due, 1, 0);
        plan_free(&missed);
        plan_free(&newest);
    }

    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
