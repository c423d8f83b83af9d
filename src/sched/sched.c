/* The backup scheduler: boot catch-up, per-schedule workers, the run gate, snapshots. */
#include "sched.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/log.h"
#include "common/util.h"
#include "plan.h"

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
    uint64_t step_mono;         /* when it was seen (cairn_mono_ns), 0 never */
    uint64_t prune_hold_until;  /* no retention before this (cairn_mono_ns), after a jump */

    struct worker *w;
    size_t n;

    struct {
        struct cairn_metric *save_errors, *creation_errors, *saves, *load_fallbacks, *age,
            *last_save, *started, *succeeded, *failed, *existing, *bytes, *duration, *last_success,
            *catchup_runs, *catchup_skipped, *pruned, *prune_errors, *in_flight, *clock_back,
            *clock_fwd, *clock_step;
    } m;
};

void cairn_sched_free(struct cairn_sched *s);

/* ---- clocks ---- */

static int64_t real_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* a / b rounded to the nearest integer (b > 0), halves away from zero. */
static int64_t div_round(int64_t a, int64_t b)
{
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

static int64_t real_offset_ms(void *ctx)
{
    (void)ctx;
    /* The two clocks cannot be read at once: the boot clock is read on both sides of the wall
     * clock and the midpoint taken, retrying while a preemption widened the gap, so a reading
     * is off by at most half the narrowest gap, not by however long the thread was stalled. */
    int64_t best = 0, best_gap = INT64_MAX;
    for (int i = 0; i < 8 && best_gap > 1000000; i++) {
        struct timespec b1, w, b2;
        clock_gettime(CLOCK_BOOTTIME, &b1);
        clock_gettime(CLOCK_REALTIME, &w);
        clock_gettime(CLOCK_BOOTTIME, &b2);
        int64_t gap = ts_ns(&b2) - ts_ns(&b1);
        if (gap < best_gap) {
            best_gap = gap;
            best = ts_ns(&w) - (ts_ns(&b1) + gap / 2);
        }
    }
    return div_round(best, 1000000);
}

void cairn_clock_real(struct cairn_clock *c)
{
    c->now = real_now;
    c->ctx = NULL;
    c->poll_ms = 1000;
    c->offset_ms = real_offset_ms;
}

static int64_t file_now(void *ctx)
{
    const char *path = ctx;
    uint8_t *data = NULL;
    size_t len = 0;
    int64_t v = -1;
    if (cairn_read_file(path, 256, &data, &len, NULL) == CAIRN_OK) {
        char *s = (char *)data, *end;
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' '))
            s[--len] = '\0';
        long ns;
        long long x = strtoll(s, &end, 10);
        if (len > 0 && *end == '\0')
            v = x;
        else if (cairn_parse_rfc3339(s, &v, &ns) != 0)
            v = -1;
    }
    free(data);
    if (v < 0) {
        /* Never guess: a test clock that cannot be read is a broken test setup. */
        cairn_error("sched", "fake clock '%s' is unreadable; using the real time", path);
        v = (int64_t)time(NULL);
    }
    return v;
}

void cairn_clock_file(struct cairn_clock *c, const char *path)
{
    c->now = file_now;
    c->ctx = (void *)path;
    c->poll_ms = 50;
    c->offset_ms = NULL;
}

/* ---- helpers (callers hold s->mu where noted) ---- */

static void fmt_time(int64_t t, char *out, size_t cap)
{
    cairn_format_rfc3339(t, 0, out, cap);
}

/* Record, count and log a wall-clock step from `from` to `to` (clock_mu not held). `saved`
 * names the schedule whose saved last instant showed it (boot), or is NULL. */
static void clock_step(struct cairn_sched *s, int64_t from, int64_t to, const char *saved)
{
    pthread_mutex_lock(&s->clock_mu);
    s->step_from = from;
    s->step_to = to;
    s->step_mono = cairn_mono_ns();
    /* After a jump forward every earlier backup looks older than it is: hold retention until
     * the clock steps back or the notice period ends, rather than remove fresh backups. */
    s->prune_hold_until =
        to > from ? s->step_mono + (uint64_t)CAIRN_CLOCK_NOTICE_SECONDS * 1000000000ull : 0;
    pthread_mutex_unlock(&s->clock_mu);
    long long secs = (long long)(to - from);
    cairn_metric_add(secs < 0 ? s->m.clock_back : s->m.clock_fwd, NULL, 1);
    cairn_metric_set(s->m.clock_step, NULL, (double)secs);
    char a[40], b[40];
    fmt_time(from, a, sizeof(a));
    fmt_time(to, b, sizeof(b));
    if (saved != NULL)
        cairn_warn("sched",
                   "the wall clock is %llds behind the saved state (schedule %s last ran at %s, "
                   "now is %s): schedules continue from the current time",
                   -secs, saved, a, b);
    else if (secs < 0)
        cairn_warn("sched",
                   "the wall clock went back by %llds (from %s to %s): schedules continue from "
                   "the current time",
                   -secs, a, b);
    else
        cairn_warn("sched",
                   "the wall clock jumped forward by %llds (from %s to %s): the runs it skipped "
                   "follow the catch-up policy",
                   secs, a, b);
}

/* Read the clock and watch it for steps. Readings are serialised so that a reader delayed
 * between its reading and its check never reports an older reading as a step back. */
static int64_t now_of(struct cairn_sched *s)
{
    const struct cairn_clock *c = s->clock;
    pthread_mutex_lock(&s->clock_mu);
    int64_t now = c->now(c->ctx);
    int64_t off = c->offset_ms ? c->offset_ms(c->ctx) : 0;
    int64_t step = 0;
    if (s->clock_seen && c->offset_ms)
        step = div_round(off - s->seen_offset_ms, 1000); /* truncating made 2 days 172799s */
    else if (s->clock_seen && now < s->seen_now)
        step = now - s->seen_now;
    s->clock_seen = 1;
    s->seen_now = now;
    s->seen_offset_ms = off;
    pthread_mutex_unlock(&s->clock_mu);
    if (step > CAIRN_CLOCK_STEP_TOLERANCE || step < -CAIRN_CLOCK_STEP_TOLERANCE)
        clock_step(s, now - step, now, NULL);
    return now;
}

/* Wait on s->cond for at most ms milliseconds (mu held). */
static void timed_wait(struct cairn_sched *s, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cond, &s->mu, &ts);
}

/* ---- snapshots ---- */

static int save_snapshot(struct cairn_sched *s, const char *why)
{
    /* Held from the copy to the status: saves from several threads copy, land and report
     * in one order, so an older copy never lands after a newer one and a save that failed
     * later is never hidden by an earlier one that reports late. */
    pthread_mutex_lock(&s->store_mu);
    pthread_mutex_lock(&s->mu);
    struct cairn_state *copy = cairn_state_dup(s->state);
    uint64_t gen = s->gen;
    pthread_mutex_unlock(&s->mu);

    struct cairn_err err;
    uint8_t *buf = NULL;
    size_t len = 0;
    int64_t now = now_of(s);
    int rc = cairn_state_encode(copy, &buf, &len, &err);
    cairn_state_free(copy);
    if (rc != CAIRN_OK) {
        /* Nothing is written when serialisation fails. */
        cairn_metric_add(s->m.creation_errors, NULL, 1);
        cairn_error("sched", "state snapshot (%s) not created: %s", why, err.msg);
    } else {
        rc = cairn_state_store_put(s->store, buf, len, now, &err);
        if (rc != CAIRN_OK) {
            cairn_metric_add(s->m.save_errors, NULL, 1);
            cairn_error("sched", "state snapshot (%s) not saved: %s", why, err.msg);
        }
    }
    free(buf);
    pthread_mutex_lock(&s->mu);
    if (rc == CAIRN_OK) {
        if (gen > s->saved_gen)
            s->saved_gen = gen;
        s->last_save_at = now;
        s->last_save_failed = 0;
    } else {
        s->last_save_failed = 1;
        snprintf(s->last_save_error, sizeof(s->last_save_error), "%s", err.msg);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->store_mu);
    if (rc == CAIRN_OK) {
        cairn_metric_add(s->m.saves, NULL, 1);
        cairn_metric_set(s->m.last_save, NULL, (double)now);
        cairn_debug("sched", "state snapshot saved (%s, %zu bytes)", why, len);
    }
    return rc;
}

/* Record that a schedule's instant was dealt with (ran, was done already, or skipped). */
static void advance(struct cairn_sched *s, const char *name, int64_t at)
{
    pthread_mutex_lock(&s->mu);
    if (cairn_state_update(s->state, name, at, NULL) > 0)
        s->gen++;
    pthread_mutex_unlock(&s->mu);
}

static void collect(void *ctx)
{
    struct cairn_sched *s = ctx;
    pthread_mutex_lock(&s->mu);
    int64_t at = s->last_save_at;
    pthread_mutex_unlock(&s->mu);
    if (at >= 0)
        cairn_metric_set(s->m.age, NULL, (double)(now_of(s) - at));
}

int cairn_sched_health(void *ctx, char *body, size_t cap)
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
        uint64_t mono = cairn_mono_ns();
        if (s->step_mono != 0 &&
            mono - s->step_mono < (uint64_t)CAIRN_CLOCK_NOTICE_SECONDS * 1000000000ull) {
            char a[40], b[40];
            long long secs = (long long)(s->step_to - s->step_from);
            fmt_time(s->step_from, a, sizeof(a));
            fmt_time(s->step_to, b, sizeof(b));
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

/* ---- the run gate: at most max_concurrent, oldest instant first ---- */

static int gate_is_next(struct cairn_sched *s, struct worker *me)
{
    for (size_t i = 0; i < s->n; i++) {
        struct worker *o = &s->w[i];
        if (o == me || !o->waiting)
            continue;
        if (o->wait_at < me->wait_at ||
            (o->wait_at == me->wait_at && strcmp(o->cfg->name, me->cfg->name) < 0))
            return 0;
    }
    return 1;
}

static int gate_enter(struct cairn_sched *s, struct worker *w, int64_t at)
{
    pthread_mutex_lock(&s->mu);
    w->waiting = 1;
    w->wait_at = at;
    while (!s->stopping && !(s->running < s->cfg->max_concurrent && gate_is_next(s, w)))
        pthread_cond_wait(&s->cond, &s->mu);
    w->waiting = 0;
    int ok = !s->stopping;
    if (ok)
        s->running++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void gate_leave(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->running--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Sleep until the catch-up rate limiter allows another start; 0 when stopped meanwhile. */
static int rate_wait(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t deadline = cairn_mono_ns() + cairn_ratelimit_reserve(&s->rl, cairn_mono_ns());
    while (!s->stopping) {
        uint64_t now = cairn_mono_ns();
        if (now >= deadline)
            break;
        timed_wait(s, (deadline - now) / 1000000 + 1);
    }
    int ok = !s->stopping;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* ---- one run ---- */

static int prune_held(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->clock_mu);
    int held = s->prune_hold_until != 0 && cairn_mono_ns() < s->prune_hold_until;
    pthread_mutex_unlock(&s->clock_mu);
    return held;
}

static int execute(struct worker *w, int64_t at, int catchup)
{
    struct cairn_sched *s = w->s;
    const char *sn = w->cfg->name;
    struct cairn_run run = {.schedule = w->cfg, .at = at, .catchup = catchup};
    cairn_run_name(sn, at, run.name, sizeof(run.name));
    char when[40];
    fmt_time(at, when, sizeof(when));

    if (!gate_enter(s, w, at))
        return CAIRN_E_CANCELLED;
    cairn_metric_add(s->m.in_flight, NULL, 1);
    struct cairn_err err;
    int complete = 0;
    int rc = s->runner->check(s->runner->ctx, &run, &complete, &err);
    if (rc != CAIRN_OK) {
        cairn_warn("sched", "schedule %s: checking for backup %s failed: %s; running it", sn,
                   run.name, err.msg);
        complete = 0;
    }
    if (complete) {
        cairn_metric_add(s->m.existing, sn, 1);
        cairn_info("sched", "schedule %s: backup %s for %s is already complete, counted as done",
                   sn, run.name, when);
        rc = CAIRN_OK;
    } else {
        cairn_metric_add(s->m.started, sn, 1);
        if (catchup)
            cairn_metric_add(s->m.catchup_runs, sn, 1);
        cairn_info("sched", "schedule %s: backup %s started (%s run for %s)", sn, run.name,
                   catchup ? "catch-up" : "scheduled", when);
        struct cairn_run_result res = {0};
        uint64_t t0 = cairn_mono_ns();
        rc = s->runner->run(s->runner->ctx, &run, &s->abort, &res, &err);
        double secs = (double)(cairn_mono_ns() - t0) / 1e9;
        if (rc == CAIRN_OK) {
            cairn_metric_add(s->m.succeeded, sn, 1);
            cairn_metric_add(s->m.bytes, sn, (double)res.bytes);
            cairn_metric_observe(s->m.duration, sn, secs);
            run.wall_now = (int64_t)time(NULL); /* before now_of: see struct cairn_run */
            cairn_metric_set(s->m.last_success, sn, (double)now_of(s));
            char size[32];
            cairn_format_bytes(res.bytes, size, sizeof(size));
            cairn_info("sched", "schedule %s: backup %s complete: %s in %.1fs", sn, run.name, size,
                       secs);
            unsigned removed = 0;
            int prc;
            struct cairn_err perr;
            if (prune_held(s)) {
                cairn_warn("sched",
                           "schedule %s: retention held: the wall clock jumped forward less "
                           "than %ds ago",
                           sn, CAIRN_CLOCK_NOTICE_SECONDS);
            } else if ((prc = s->runner->prune(s->runner->ctx, &run, &removed, &perr)) ==
                       CAIRN_E_LOCKED) {
                /* Another backup holds the location: normal when schedules share it. */
                cairn_warn("sched", "schedule %s: retention postponed to the next run: %s", sn,
                           perr.msg);
            } else if (prc != CAIRN_OK) {
                cairn_metric_add(s->m.prune_errors, sn, 1);
                cairn_error("sched", "schedule %s: prune failed: %s", sn, perr.msg);
            } else if (removed > 0) {
                cairn_metric_add(s->m.pruned, sn, removed);
                cairn_info("sched", "schedule %s: pruned %u old backups", sn, removed);
            }
        } else if (rc == CAIRN_E_CANCELLED) {
            cairn_warn("sched",
                       "schedule %s: backup %s aborted by shutdown; it runs again after "
                       "restart",
                       sn, run.name);
        } else {
            cairn_metric_add(s->m.failed, sn, 1);
            cairn_error("sched", "schedule %s: backup %s failed after %.1fs: %s", sn, run.name,
                        secs, err.msg);
        }
    }
    cairn_metric_add(s->m.in_flight, NULL, -1);
    gate_leave(s);
    if (rc == CAIRN_E_CANCELLED)
        return rc;
    /* A failed run is not retried: it is counted and logged, and the next instant tries again
     * (retrying forever would starve the schedule). */
    advance(s, sn, at);
    save_snapshot(s, "after run");
    return CAIRN_OK;
}

static void apply_skips(struct worker *w, const struct cairn_plan *p)
{
    if (p->skipped == 0)
        return;
    struct cairn_sched *s = w->s;
    char until[40];
    fmt_time(p->skipped_until, until, sizeof(until));
    cairn_warn("sched",
               "schedule %s: skipping %llu missed runs up to %s (catch-up = %s, catch-up-max = %u)",
               w->cfg->name, (unsigned long long)p->skipped, until,
               w->cfg->catchup == CAIRN_CATCHUP_ALL      ? "all"
               : w->cfg->catchup == CAIRN_CATCHUP_LATEST ? "latest"
                                                         : "none",
               s->cfg->catchup_max);
    cairn_metric_add(s->m.catchup_skipped, w->cfg->name, (double)p->skipped);
    advance(s, w->cfg->name, p->skipped_until);
}

/* Run a plan's instants in order; catch-up runs go through the rate limiter. */
static int run_plan(struct worker *w, const int64_t *runs, size_t n, int all_catchup)
{
    for (size_t i = 0; i < n; i++) {
        int catchup = all_catchup || i + 1 < n;
        if (catchup && !rate_wait(w->s))
            return CAIRN_E_CANCELLED;
        if (execute(w, runs[i], catchup) == CAIRN_E_CANCELLED)
            return CAIRN_E_CANCELLED;
    }
    return CAIRN_OK;
}

/* Move a schedule's entry back to `to` (mu held). cairn_state_update only moves forward, on
 * purpose; a wall clock that went back is the one reason to go back, so the state is rebuilt. */
static void state_rewind(struct cairn_sched *s, const char *name, int64_t to)
{
    struct cairn_state *st = cairn_state_new();
    for (size_t i = 0; i < cairn_state_count(s->state); i++) {
        int64_t sec = 0;
        const char *n = cairn_state_entry(s->state, i, &sec);
        cairn_state_update(st, n, strcmp(n, name) == 0 ? to : sec, NULL);
    }
    cairn_state_free(s->state);
    s->state = st;
    s->gen++;
}

/* The schedule's last instant is in the future of a clock that went back: continue from the
 * current time (the instants in between run again unless their backup is complete already)
 * rather than wait for the clock to catch up. */
static void rewind_schedule(struct worker *w, int64_t cursor, int64_t now)
{
    struct cairn_sched *s = w->s;
    pthread_mutex_lock(&s->mu);
    state_rewind(s, w->cfg->name, now - 1); /* an instant due right now still runs */
    pthread_mutex_unlock(&s->mu);
    char a[40], b[40];
    fmt_time(cursor, a, sizeof(a));
    fmt_time(now, b, sizeof(b));
    cairn_info("sched",
               "schedule %s: last instant %s is after the current time %s: continuing "
               "from the current time",
               w->cfg->name, a, b);
}

static void *worker_main(void *arg)
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
        int64_t next = cairn_timing_next(&c->timing, cursor);
        int64_t now = now_of(s);
        if (cursor > now + CAIRN_CLOCK_STEP_TOLERANCE) {
            rewind_schedule(w, cursor, now);
            continue;
        }
        if (next < 0 || next > now) {
            pthread_mutex_lock(&s->mu);
            if (!s->stopping) {
                uint64_t ms = s->clock->poll_ms;
                if (next >= 0 && (uint64_t)(next - now) * 1000 < ms)
                    ms = (uint64_t)(next - now) * 1000;
                timed_wait(s, ms);
            }
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        /* The newest due instant runs on time; older ones were missed while busy or while
         * the clock jumped (suspend), and follow the catch-up policy, cap and rate. */
        struct cairn_plan newest, missed;
        cairn_plan_build(&c->timing, cursor, now, CAIRN_CATCHUP_ALL, 1, &newest);
        if (newest.n == 0) {
            cairn_plan_free(&newest);
            continue;
        }
        int64_t due = newest.runs[0];
        cairn_plan_build(&c->timing, cursor, due - 1, c->catchup, s->cfg->catchup_max, &missed);
        apply_skips(w, &missed);
        rc = run_plan(w, missed.runs, missed.n, 1);
        if (rc == CAIRN_OK)
            rc = run_plan(w, &due, 1, 0);
        cairn_plan_free(&missed);
        cairn_plan_free(&newest);
    }

    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- lifecycle ---- */

static void declare_metrics(struct cairn_sched *s, struct cairn_metrics *m)
{
    static const double buckets[] = {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400};
    const size_t nb = sizeof(buckets) / sizeof(buckets[0]);
#define D(field, name, type, help, label)                                                          \
    s->m.field = cairn_metrics_declare(m, name, type, help, label, buckets, nb)
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
    D(in_flight, "cairn_backups_in_flight", CAIRN_GAUGE, "Backups running now.", NULL);
    D(clock_back, "cairn_clock_backwards_total", CAIRN_COUNTER,
      "Wall-clock steps back seen (schedules then continue from the current time).", NULL);
    D(clock_fwd, "cairn_clock_forwards_total", CAIRN_COUNTER,
      "Wall-clock steps forward seen (not counting suspend).", NULL);
    D(clock_step, "cairn_clock_last_step_seconds", CAIRN_GAUGE,
      "Size of the last wall-clock step, negative when back; 0 before any.", NULL);
#undef D
    /* Export every series from the start, so rates and alerts work before the first event. */
    struct cairn_metric *unlabelled[] = {s->m.save_errors,    s->m.creation_errors, s->m.saves,
                                         s->m.load_fallbacks, s->m.in_flight,       s->m.clock_back,
                                         s->m.clock_fwd,      s->m.clock_step};
    for (size_t i = 0; i < sizeof(unlabelled) / sizeof(unlabelled[0]); i++)
        cairn_metric_add(unlabelled[i], NULL, 0);
    struct cairn_metric *per[] = {s->m.started,         s->m.succeeded, s->m.failed,
                                  s->m.existing,        s->m.bytes,     s->m.catchup_runs,
                                  s->m.catchup_skipped, s->m.pruned,    s->m.prune_errors};
    for (size_t j = 0; j < s->cfg->n_schedules; j++)
        for (size_t i = 0; i < sizeof(per) / sizeof(per[0]); i++)
            cairn_metric_add(per[i], s->cfg->schedules[j].name, 0);
    cairn_metrics_on_collect(m, collect, s);
}

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
    fmt_time(w->boot_last, a, sizeof(a));
    cairn_info("sched",
               "schedule %s: saved last instant %s is after the current time: continuing from "
               "the current time",
               w->cfg->name, a);
    w->boot_last = s->boot_now;
    return lead;
}

int cairn_sched_new(const struct cairn_config *cfg, struct cairn_state_store *store,
                    const struct cairn_runner *runner, const struct cairn_clock *clock,
                    struct cairn_metrics *m, struct cairn_sched **out, struct cairn_err *err)
{
    *out = NULL;
    struct cairn_sched *s = cairn_xcalloc(1, sizeof(*s));
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
    cairn_ratelimit_init(&s->rl, cfg->catchup_rate);
    declare_metrics(s, m);

    struct cairn_state *loaded = NULL;
    struct cairn_state_load_report rep;
    int rc = cairn_state_store_load(store, &loaded, &rep, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "loading scheduler state");
        cairn_sched_free(s);
        return rc;
    }
    if (rep.skipped > 0)
        cairn_metric_add(s->m.load_fallbacks, NULL, rep.skipped);
    if (rep.found) {
        char when[40];
        fmt_time(rep.created_at, when, sizeof(when));
        cairn_info("sched", "loaded state snapshot %lld from %s (%s, payload v%u, %zu schedules%s)",
                   (long long)rep.row_id, when, cairn_state_store_kind(store), rep.payload_version,
                   cairn_state_count(loaded),
                   rep.skipped ? ", after skipping corrupt newer rows" : "");
        s->last_save_at = rep.created_at;
    } else {
        cairn_info("sched", "no state snapshot in the %s store yet: starting fresh",
                   cairn_state_store_kind(store));
    }
    for (size_t i = 0; i < cairn_state_count(loaded); i++) {
        const char *name = cairn_state_entry(loaded, i, NULL);
        int known = 0;
        for (size_t j = 0; j < cfg->n_schedules; j++)
            known |= strcmp(cfg->schedules[j].name, name) == 0;
        if (!known)
            cairn_info("sched", "forgetting the state of schedule %s (no longer configured)", name);
    }

    s->boot_now = now_of(s);
    s->state = cairn_state_new();
    s->n = cfg->n_schedules;
    s->w = cairn_xcalloc(s->n, sizeof(*s->w));
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
        cairn_plan_build(&w->cfg->timing, w->boot_last, s->boot_now, w->cfg->catchup,
                         cfg->catchup_max, &w->boot_plan);
    }
    cairn_state_free(loaded);
    if (ahead != NULL)
        clock_step(s, s->boot_now + ahead_lead, s->boot_now, ahead->cfg->name);
    s->gen = 1; /* the boot state (baselines, dropped schedules) is not saved yet */
    *out = s;
    return CAIRN_OK;
}

void cairn_sched_describe(const struct cairn_sched *s, FILE *out, int json)
{
    json_t *root = json ? json_object() : NULL;
    json_t *arr = json ? json_array() : NULL;
    char now[40];
    fmt_time(s->boot_now, now, sizeof(now));
    if (!json)
        fprintf(out, "now %s, state store %s\n", now, cairn_state_store_kind(s->store));
    for (size_t i = 0; i < s->n; i++) {
        const struct worker *w = &s->w[i];
        char last[40], next[40];
        fmt_time(w->boot_last, last, sizeof(last));
        int64_t after = w->boot_plan.n         ? w->boot_plan.runs[w->boot_plan.n - 1]
                        : w->boot_plan.skipped ? w->boot_plan.skipped_until
                                               : w->boot_last;
        fmt_time(cairn_timing_next(&w->cfg->timing, after), next, sizeof(next));
        json_t *runs = json ? json_array() : NULL;
        if (!json)
            fprintf(out, "schedule %s (%s): last %s%s, catch-up %zu, skip %llu, next %s\n",
                    w->cfg->name, w->cfg->timing_text, last, w->had_entry ? "" : " (new)",
                    w->boot_plan.n, (unsigned long long)w->boot_plan.skipped, next);
        for (size_t k = 0; k < w->boot_plan.n; k++) {
            char at[40], name[CAIRN_RUN_NAME_MAX];
            fmt_time(w->boot_plan.runs[k], at, sizeof(at));
            cairn_run_name(w->cfg->name, w->boot_plan.runs[k], name, sizeof(name));
            if (json)
                json_array_append_new(runs, json_pack("{s:s, s:s}", "at", at, "name", name));
            else
                fprintf(out, "  catch-up %s -> %s\n", at, name);
        }
        if (json)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:s, s:s, s:b, s:o, s:I, s:s}", "schedule",
                                            w->cfg->name, "timing", w->cfg->timing_text, "last",
                                            last, "new", !w->had_entry, "catchup", runs, "skipped",
                                            (json_int_t)w->boot_plan.skipped, "next", next));
    }
    if (json) {
        json_object_set_new(root, "now", json_string(now));
        json_object_set_new(root, "store", json_string(cairn_state_store_kind(s->store)));
        json_object_set_new(root, "schedules", arr);
        json_dumpf(root, out, JSON_COMPACT);
        fputc('\n', out);
        json_decref(root);
    }
}

int cairn_sched_start(struct cairn_sched *s, struct cairn_err *err)
{
    /* Skips decided at boot are applied before any run, so the first snapshot has them. */
    for (size_t i = 0; i < s->n; i++)
        apply_skips(&s->w[i], &s->w[i].boot_plan);
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
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e != 0) {
            pthread_mutex_lock(&s->mu);
            s->active--;
            s->booting -= (unsigned)(s->n - i);
            pthread_mutex_unlock(&s->mu);
            cairn_sched_stop(s);
            return cairn_err_sys(err, CAIRN_E_INTERNAL, e, "starting the worker of schedule %s",
                                 w->cfg->name);
        }
        w->started = 1;
    }
    return CAIRN_OK;
}

void cairn_sched_stop(struct cairn_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Wait (mu held) until no worker is active or the monotonic deadline passes. */
static void wait_workers(struct cairn_sched *s, uint64_t deadline_ns)
{
    while (s->active > 0) {
        uint64_t now = cairn_mono_ns();
        if (now >= deadline_ns)
            break;
        uint64_t ms = (deadline_ns - now) / 1000000 + 1;
        timed_wait(s, ms < 200 ? ms : 200);
    }
}

int cairn_sched_wait(struct cairn_sched *s, struct cairn_err *err)
{
    uint64_t interval_ns = (uint64_t)s->cfg->snapshot_interval * 1000000000ull;
    uint64_t next_periodic = cairn_mono_ns() + interval_ns;
    int boot_saved = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (!boot_saved && s->booting == 0) {
            boot_saved = 1;
            pthread_mutex_unlock(&s->mu);
            cairn_info("sched", "catch-up finished");
            save_snapshot(s, "after catch-up");
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (cairn_mono_ns() >= next_periodic) {
            next_periodic += interval_ns;
            if (s->gen != s->saved_gen) {
                pthread_mutex_unlock(&s->mu);
                save_snapshot(s, "periodic");
                pthread_mutex_lock(&s->mu);
            }
            continue;
        }
        timed_wait(s, s->clock->poll_ms);
    }
    /* Shutdown: workers stop taking new runs; in-flight backups get shutdown-timeout to
     * finish, then are cancelled (their backups stay incomplete, never complete-looking). */
    unsigned inflight = s->running;
    if (inflight > 0)
        cairn_info("sched", "shutting down: waiting up to %llds for %u running backups",
                   (long long)s->cfg->shutdown_timeout, inflight);
    wait_workers(s, cairn_mono_ns() + (uint64_t)s->cfg->shutdown_timeout * 1000000000ull);
    if (s->active > 0) {
        cairn_warn("sched", "shutdown timeout: cancelling %u running backups", s->running);
        __atomic_store_n(&s->abort, 1, __ATOMIC_SEQ_CST);
        wait_workers(s, cairn_mono_ns() + 10ull * 1000000000ull);
    }
    unsigned stuck = s->active;
    pthread_mutex_unlock(&s->mu);
    int rc = save_snapshot(s, "shutdown");
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

void cairn_sched_free(struct cairn_sched *s)
{
    if (s == NULL)
        return;
    /* The registry may outlive us: stop it calling back into freed memory. */
    cairn_metrics_on_collect(s->metrics, NULL, NULL);
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i].started) /* never started or already joined in the normal path */
            pthread_join(s->w[i].thread, NULL);
        cairn_plan_free(&s->w[i].boot_plan);
    }
    free(s->w);
    cairn_state_free(s->state);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->clock_mu);
    free(s);
}
