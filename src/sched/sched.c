/* The backup scheduler's life: boot (state load, baselines, catch-up plans), start, the
 * periodic snapshot loop and shutdown, free. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

/* A schedule's boot baseline: its saved last instant; now for a new schedule (it has no
 * history to replay, Flyte #4285) or for one saved by a clock that was ahead (it continues
 * from now, not from the future). Returns how far ahead the saved instant was, else 0. */
static int64_t boot_baseline(struct cairn_sched *s, struct worker *w,
                             const struct cairn_state *loaded)
{
    w->had_entry = cairn_state_get(loaded, w->cfg->name, &w->boot_last);
    if (!w->had_entry) {
        w->boot_last = s->boot_now;
        return 0;
    }
    if (w->boot_last <= s->boot_now + CAIRN_CLOCK_STEP_TOLERANCE)
        return 0;
    int64_t lead = w->boot_last - s->boot_now;
    char a[40];
    sched_fmt_time(w->boot_last, a, sizeof(a));
    cairn_info("sched",
               "schedule %s: saved last instant %s is after the current time: continuing from "
               "the current time",
               w->cfg->name, a);
    w->boot_last = s->boot_now;
    return lead;
}

/* The newest good state snapshot into *loaded (empty when there is none), logged and counted;
 * schedules no longer configured are named (the boot state drops them). */
static int load_state(struct cairn_sched *s, struct cairn_state **loaded, struct cairn_err *err)
{
    const struct cairn_config *cfg = s->cfg;
    struct cairn_state_load_report rep;
    int rc = cairn_state_store_load(s->store, loaded, &rep, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "loading scheduler state");
    if (rep.skipped > 0)
        metrics_add(s->m.load_fallbacks, NULL, rep.skipped);
    if (rep.found) {
        char when[40];
        sched_fmt_time(rep.created_at, when, sizeof(when));
        cairn_info("sched", "loaded state snapshot %lld from %s (%s, payload v%u, %zu schedules%s)",
                   (long long)rep.row_id, when, cairn_state_store_kind(s->store),
                   rep.payload_version, cairn_state_count(*loaded),
                   rep.skipped ? ", after skipping corrupt newer rows" : "");
        s->last_save_at = rep.created_at;
    } else {
        cairn_info("sched", "no state snapshot in the %s store yet: starting fresh",
                   cairn_state_store_kind(s->store));
    }
    for (size_t i = 0; i < cairn_state_count(*loaded); i++) {
        const char *name = cairn_state_entry(*loaded, i, NULL);
        int known = 0;
        for (size_t j = 0; j < cfg->n_schedules; j++) {
            char key[CAIRN_STATE_NAME_MAX + 8];
            sched_drill_key(cfg->schedules[j].name, key, sizeof(key));
            known |= strcmp(cfg->schedules[j].name, name) == 0 ||
                     (cfg->schedules[j].drill_every > 0 && strcmp(key, name) == 0);
        }
        if (!known)
            cairn_info("sched", "forgetting the state of schedule %s (no longer configured)", name);
    }
    return CAIRN_OK;
}

int sched_new(const struct cairn_config *cfg, struct cairn_state_store *store,
              const struct cairn_runner *runner, const struct cairn_clock *clock,
              struct cairn_metrics *m, struct cairn_sched **out, struct cairn_err *err)
{
    *out = NULL;
    struct cairn_sched *s = xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    s->store = store;
    s->runner = runner;
    s->clock = clock;
    s->metrics = m;
    s->last_save_at = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->store_mu, NULL);
    pthread_mutex_init(&s->clock_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    plan_ratelimit_init(&s->rl, cfg->catchup_rate);
    sched_declare_metrics(s, m);

    struct cairn_state *loaded = NULL;
    int rc = load_state(s, &loaded, err);
    if (rc != CAIRN_OK) {
        sched_free(s);
        return rc;
    }

    s->boot_now = sched_now(s);
    s->state = cairn_state_new();
    s->n = cfg->n_schedules;
    s->w = xcalloc(s->n, sizeof(*s->w));
    struct worker *ahead = NULL; /* the schedule saved furthest ahead of the clock */
    int64_t ahead_lead = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct worker *w = &s->w[i];
        w->s = s;
        w->cfg = &cfg->schedules[i];
        int64_t lead = boot_baseline(s, w, loaded);
        if (lead > ahead_lead) {
            ahead = w;
            ahead_lead = lead;
        }
        cairn_state_update(s->state, w->cfg->name, w->boot_last, NULL);
        if (w->cfg->drill_every > 0) { /* the last drill, or now: the first one comes later */
            char key[CAIRN_STATE_NAME_MAX + 8];
            int64_t last = s->boot_now;
            sched_drill_key(w->cfg->name, key, sizeof(key));
            cairn_state_get(loaded, key, &last);
            cairn_state_update(s->state, key, last, NULL);
        }
        plan_build(&w->cfg->timing, w->boot_last, s->boot_now, w->cfg->catchup, cfg->catchup_max,
                   &w->boot_plan);
    }
    cairn_state_free(loaded);
    if (ahead != NULL)
        sched_clock_step(s, s->boot_now + ahead_lead, s->boot_now, ahead->cfg->name);
    s->gen = 1; /* the boot state (baselines, dropped schedules) is not saved yet */
    *out = s;
    return CAIRN_OK;
}

int sched_start(struct cairn_sched *s, struct cairn_err *err)
{
    /* Skips decided at boot are applied before any run, so the first snapshot has them. */
    for (size_t i = 0; i < s->n; i++)
        sched_apply_skips(&s->w[i], &s->w[i].boot_plan);
    pthread_mutex_lock(&s->mu);
    s->booting = (unsigned)s->n;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        struct worker *w = &s->w[i];
        if (w->boot_plan.n > 0)
            cairn_info("sched", "schedule %s: catching up %zu missed runs", w->cfg->name,
                       w->boot_plan.n);
        pthread_mutex_lock(&s->mu);
        s->active++;
        pthread_mutex_unlock(&s->mu);
        int e = pthread_create(&w->thread, NULL, sched_worker_main, w);
        if (e != 0) {
            pthread_mutex_lock(&s->mu);
            s->active--;
            s->booting -= (unsigned)(s->n - i);
            pthread_mutex_unlock(&s->mu);
            sched_stop(s);
            return cairn_err_sys(err, CAIRN_E_INTERNAL, e, "starting the worker of schedule %s",
                                 w->cfg->name);
        }
        w->started = 1;
    }
    return CAIRN_OK;
}

void sched_stop(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->stopping || s->reloading)
        s->stop_mono = mono_ns();
    s->stopping = 1;
    s->reloading = 0;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void sched_stop_reload(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->stopping)
        s->reloading = 1;
    s->stopping = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void sched_abort(struct cairn_sched *s)
{
    __atomic_store_n(&s->abort, 1, __ATOMIC_SEQ_CST);
    sched_stop(s);
}

void sched_set_fence(struct cairn_sched *s, int (*fence)(void *ctx, struct cairn_err *err),
                     void *ctx)
{
    s->fence = fence;
    s->fence_ctx = ctx;
}

/* Wait (mu held) until no worker is active or timeout_ns passed since the hard stop; a reload
 * waits for as long as they run (the timeout counts from a hard stop, should one come). */
static void wait_workers(struct cairn_sched *s, uint64_t timeout_ns)
{
    while (s->active > 0) {
        uint64_t now = mono_ns();
        if (!s->reloading && now >= s->stop_mono + timeout_ns)
            break;
        sched_timed_wait(s, 200); /* workers signal cond when they finish */
    }
}

int sched_wait(struct cairn_sched *s, struct cairn_err *err)
{
    uint64_t interval_ns = (uint64_t)s->cfg->snapshot_interval * 1000000000ull;
    uint64_t next_periodic = mono_ns() + interval_ns;
    int boot_saved = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (!boot_saved && s->booting == 0) {
            boot_saved = 1;
            pthread_mutex_unlock(&s->mu);
            cairn_info("sched", "catch-up finished");
            sched_save(s, "after catch-up");
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (mono_ns() >= next_periodic) {
            next_periodic += interval_ns;
            if (s->gen != s->saved_gen) {
                pthread_mutex_unlock(&s->mu);
                sched_save(s, "periodic");
                pthread_mutex_lock(&s->mu);
            }
            continue;
        }
        sched_timed_wait(s, s->clock->poll_ms);
    }
    /* Shutdown: workers stop taking new runs; in-flight backups get shutdown-timeout to
     * finish, then are cancelled (their backups stay incomplete, never complete-looking). */
    unsigned inflight = s->running;
    if (inflight > 0)
        cairn_info("sched", "shutting down: waiting up to %llds for %u running backups",
                   (long long)s->cfg->shutdown_timeout, inflight);
    wait_workers(s, (uint64_t)s->cfg->shutdown_timeout * 1000000000ull);
    if (s->active > 0) {
        cairn_warn("sched", "shutdown timeout: cancelling %u running backups", s->running);
        __atomic_store_n(&s->abort, 1, __ATOMIC_SEQ_CST);
        s->stop_mono = mono_ns();
        wait_workers(s, 10ull * 1000000000ull);
    }
    unsigned stuck = s->active;
    pthread_mutex_unlock(&s->mu);
    int rc = sched_save(s, "shutdown");
    if (stuck > 0)
        return cairn_err_set(err, CAIRN_E_TIMEOUT,
                             "%u backups did not stop after cancellation; exiting anyway (they "
                             "stay incomplete and run again after restart)",
                             stuck);
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i].started) {
            pthread_join(s->w[i].thread, NULL);
            s->w[i].started = 0;
        }
    if (rc != CAIRN_OK)
        return cairn_err_set(err, CAIRN_E_IO, "final state snapshot not saved: %s",
                             s->last_save_error);
    return CAIRN_OK;
}

void sched_free(struct cairn_sched *s)
{
    if (s == NULL)
        return;
    /* The registry may outlive us: stop it calling back into freed memory. */
    metrics_on_collect(s->metrics, NULL, NULL);
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i].started) /* never started or already joined in the normal path */
            pthread_join(s->w[i].thread, NULL);
        plan_free(&s->w[i].boot_plan);
    }
    free(s->w);
    cairn_state_free(s->state);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->clock_mu);
    free(s);
}
