/* The scheduler engine with a recording runner and a settable clock: boot catch-up, restart
 * without duplicates, failure isolation, idempotent re-runs, cap, rate, shutdown, save errors,
 * clock steps.
 * The end-to-end tests with real cairnd, real backups, SQLite and PostgreSQL are the scripts
 * next to this file. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "sched/plan.h"
#include "sched/sched.h"
#include "test.h"

static int64_t ts(const char *s)
{
    int64_t sec;
    long ns;
    parse_rfc3339(s, &sec, &ns);
    return sec;
}

/* ---- settable clock ---- */
static int64_t g_now;
static int64_t clock_now(void *ctx)
{
    (void)ctx;
    return __atomic_load_n(&g_now, __ATOMIC_SEQ_CST);
}
static void set_now(const char *t)
{
    __atomic_store_n(&g_now, ts(t), __ATOMIC_SEQ_CST);
}
static const struct cairn_clock k_clock = {clock_now, NULL, 10};

/* ---- recording runner ---- */
struct recorder {
    pthread_mutex_t mu;
    char names[256][CAIRN_RUN_NAME_MAX];
    int catchup[256];
    int n;
    const char *fail_schedule; /* runs of this schedule fail */
    const char *complete_name; /* check() reports this one as complete */
    int block_until_cancel;    /* run() waits for the cancel flag */
    int pruned;
};

static int rec_check(void *ctx, const struct cairn_run *run, int *complete, struct cairn_err *err)
{
    (void)err;
    struct recorder *r = ctx;
    *complete = r->complete_name && strcmp(run->name, r->complete_name) == 0;
    return CAIRN_OK;
}

static int rec_run(void *ctx, const struct cairn_run *run, const volatile int *cancel,
                   struct cairn_run_result *res, struct cairn_err *err)
{
    struct recorder *r = ctx;
    if (r->block_until_cancel) {
        while (!__atomic_load_n((const int *)cancel, __ATOMIC_SEQ_CST))
            usleep(10000);
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    }
    pthread_mutex_lock(&r->mu);
    if (r->n < 256) {
        snprintf(r->names[r->n], CAIRN_RUN_NAME_MAX, "%s", run->name);
        r->catchup[r->n] = run->catchup;
        r->n++;
    }
    pthread_mutex_unlock(&r->mu);
    res->bytes = 1000;
    if (r->fail_schedule && strcmp(run->schedule->name, r->fail_schedule) == 0)
        return cairn_err_set(err, CAIRN_E_NETWORK, "source unreachable");
    return CAIRN_OK;
}

static int rec_prune(void *ctx, const struct cairn_run *run, struct cairn_prune_result *res,
                     struct cairn_err *err)
{
    (void)run, (void)err;
    struct recorder *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->pruned++;
    pthread_mutex_unlock(&r->mu);
    memset(res, 0, sizeof(*res));
    return CAIRN_OK;
}

static int rec_count(struct recorder *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Waits are for conditions; their deadline only bounds a hang, so it is generous: these tests
 * also run under TSan (5-15x slower) on loaded machines. */
#define WAIT_NS (120ull * 1000000000ull)

static int wait_count(struct recorder *r, int n)
{
    uint64_t end = mono_ns() + WAIT_NS;
    while (rec_count(r) < n && mono_ns() < end)
        usleep(10000);
    return rec_count(r);
}

static struct cairn_config *config(const char *extra)
{
    char *text = xasprintf("[cairnd]\nmetrics-listen = off\ncatch-up-rate = 1000/s\n%s\n"
                           "[schedule a]\nsource = /src\nto = file:///dst\nevery = 1h\n"
                           "keep-last = 3\n"
                           "[schedule b]\nsource = /src\nto = file:///dst\n"
                           "cron = 0 * * * *\nkeep-last = 3\n",
                           extra);
    struct cairn_config *c = NULL;
    struct cairn_err err;
    if (config_parse(text, strlen(text), "test.conf", &c, &err) != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(text);
    return c;
}

struct fixture {
    struct cairn_config *cfg;
    struct cairn_state_store *store;
    struct cairn_metrics *m;
    struct cairn_runner runner;
    struct recorder rec;
    struct cairn_sched *s;
    pthread_t waiter;
    int has_waiter;
};

static void fx_open(struct fixture *f, const char *extra, const char *db)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->rec.mu, NULL);
    f->cfg = config(extra);
    struct cairn_err err;
    char *path = path_join(test_tmpdir(), db);
    CHECK_OK(cairn_state_store_open(path, 5, &f->store, &err), &err);
    free(path);
    f->m = metrics_new();
    f->runner = (struct cairn_runner){&f->rec, rec_check, rec_run, rec_prune};
}

static int fx_boot(struct fixture *f)
{
    struct cairn_err err;
    /* One registry per scheduler, as in cairnd (one per process). */
    metrics_free(f->m);
    f->m = metrics_new();
    int rc = sched_new(f->cfg, f->store, &f->runner, &k_clock, f->m, &f->s, &err);
    if (rc == CAIRN_OK)
        rc = sched_start(f->s, &err);
    if (rc != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "boot: %s", err.msg);
    return rc;
}

/* Start the scheduler loop in a thread, as cairnd's main thread would. */
static void *waiter(void *arg)
{
    struct fixture *f = arg;
    struct cairn_err err;
    sched_wait(f->s, &err);
    return NULL;
}

static void fx_run(struct fixture *f)
{
    if (fx_boot(f) == CAIRN_OK) {
        pthread_create(&f->waiter, NULL, waiter, f);
        f->has_waiter = 1;
    }
}

/* Stop (as SIGTERM would) and free the scheduler; the store and recorder stay. */
static void fx_halt(struct fixture *f)
{
    struct cairn_err err;
    if (f->s == NULL)
        return;
    sched_stop(f->s);
    if (f->has_waiter)
        pthread_join(f->waiter, NULL);
    else
        CHECK_OK(sched_wait(f->s, &err), &err);
    f->has_waiter = 0;
    sched_free(f->s);
    f->s = NULL;
}

/* Boot once at `when` and stop: the schedules get their baseline in the store. */
static void fx_baseline(struct fixture *f, const char *when)
{
    set_now(when);
    if (fx_boot(f) == CAIRN_OK)
        fx_halt(f);
}

static void fx_close(struct fixture *f)
{
    fx_halt(f);
    metrics_free(f->m);
    cairn_state_store_free(f->store);
    config_free(f->cfg);
    pthread_mutex_destroy(&f->rec.mu);
}

static double metric(struct fixture *f, const char *name, const char *label)
{
    char *text = metrics_render(f->m);
    char key[256];
    if (label)
        snprintf(key, sizeof(key), "\n%s{schedule=\"%s\"} ", name, label);
    else
        snprintf(key, sizeof(key), "\n%s ", name);
    char *p = strstr(text, key);
    double v = p ? strtod(p + strlen(key), NULL) : -1;
    free(text);
    return v;
}

/* Wait until the metric reaches at least want (or the deadline passes); returns its value. */
static double wait_metric(struct fixture *f, const char *name, const char *label, double want)
{
    uint64_t end = mono_ns() + WAIT_NS;
    double v;
    while ((v = metric(f, name, label)) < want && mono_ns() < end)
        usleep(10000);
    return v;
}

/* Wait until every schedule has finished its boot catch-up (each run's outcome counted), as
 * /healthz reports it. The first state snapshot is no such sign: one is saved after every run. */
static int wait_caught_up(struct fixture *f)
{
    uint64_t end = mono_ns() + WAIT_NS;
    char body[512];
    for (;;) {
        sched_health(f->s, body, sizeof(body));
        if (strstr(body, " 0 schedules catching up") != NULL)
            return 1;
        if (mono_ns() >= end) {
            test_fail(__FILE__, __LINE__, "catch-up not over: %s", body);
            return 0;
        }
        usleep(10000);
    }
}

static int64_t stored(struct cairn_state_store *store, const char *name)
{
    struct cairn_state *st = NULL;
    struct cairn_state_load_report rep;
    struct cairn_err err;
    int64_t t = -1;
    if (cairn_state_store_load(store, &st, &rep, &err) == CAIRN_OK)
        cairn_state_get(st, name, &t);
    cairn_state_free(st);
    return t;
}

TEST(restart_after_three_missed_runs_runs_exactly_those)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    set_now("2026-01-01T10:30:00Z");
    fx_run(&f);
    /* New schedules do not replay history: nothing ran by the end of the boot catch-up. */
    wait_caught_up(&f);
    CHECK_EQ_INT(rec_count(&f.rec), 0);
    set_now("2026-01-01T11:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    fx_halt(&f);
    CHECK_EQ_INT(stored(f.store, "a"), ts("2026-01-01T11:00:00Z"));
    CHECK_EQ_INT(f.rec.catchup[0] + f.rec.catchup[1], 0);

    /* Down for three instants. */
    set_now("2026-01-01T14:10:00Z");
    f.rec.n = 0;
    fx_run(&f);
    CHECK_EQ_INT(wait_count(&f.rec, 6), 6);
    /* The catch-up is over: no seventh run came. */
    wait_caught_up(&f);
    CHECK_EQ_INT(rec_count(&f.rec), 6);
    int a = 0, b = 0;
    const char *want_a[] = {"20260101T120000Z-a", "20260101T130000Z-a", "20260101T140000Z-a"};
    const char *want_b[] = {"20260101T120000Z-b", "20260101T130000Z-b", "20260101T140000Z-b"};
    for (int i = 0; i < 6; i++) {
        if (f.rec.names[i][17] == 'a' && a < 3)
            CHECK_EQ_STR(f.rec.names[i], want_a[a++]); /* oldest first, no duplicates */
        else if (b < 3)
            CHECK_EQ_STR(f.rec.names[i], want_b[b++]);
        CHECK_EQ_INT(f.rec.catchup[i], 1);
    }
    CHECK(a == 3 && b == 3);
    CHECK_EQ_INT(metric(&f, "cairn_catchup_runs_total", "a"), 3);
    CHECK_EQ_INT(metric(&f, "cairn_backups_succeeded_total", "b"), 3);
    CHECK_EQ_INT(metric(&f, "cairn_snapshot_save_errors_total", NULL), 0);
    /* The next live tick is a normal run. */
    set_now("2026-01-01T15:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 8), 8);
    CHECK_EQ_INT(f.rec.catchup[6] + f.rec.catchup[7], 0);
    fx_halt(&f);
    CHECK_EQ_INT(stored(f.store, "b"), ts("2026-01-01T15:00:00Z"));
    CHECK_EQ_INT(f.rec.pruned, 10); /* 2 before the restart, 8 after */
    fx_close(&f);
}

TEST(one_failing_schedule_does_not_stop_the_others)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    fx_baseline(&f, "2026-01-01T10:30:00Z");

    f.rec.fail_schedule = "a";
    set_now("2026-01-01T13:30:00Z");
    fx_run(&f);
    CHECK_EQ_INT(wait_count(&f.rec, 6), 6);
    /* A run is recorded before its outcome is counted: wait for the counts. */
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_failed_total", "a", 3), 3);
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_succeeded_total", "b", 3), 3);
    CHECK_EQ_INT(metric(&f, "cairn_backups_started_total", "a"), 3);
    fx_halt(&f);
    /* Failed runs are not retried forever: the cursor moved on. */
    CHECK_EQ_INT(stored(f.store, "a"), ts("2026-01-01T13:00:00Z"));
    fx_close(&f);
}

TEST(existing_complete_backup_counts_as_done_and_cap_keeps_newest)
{
    struct fixture f;
    fx_open(&f, "catch-up-max = 2", "state.db");
    fx_baseline(&f, "2026-01-01T10:00:00Z");

    f.rec.complete_name = "20260101T150000Z-a";
    set_now("2026-01-01T15:00:00Z"); /* 5 missed each, cap 2: 14:00 and 15:00 */
    fx_run(&f);
    CHECK_EQ_INT(wait_count(&f.rec, 3), 3);
    /* The catch-up is over: no fourth run came. */
    wait_caught_up(&f);
    CHECK_EQ_INT(rec_count(&f.rec), 3);
    CHECK_EQ_INT(metric(&f, "cairn_catchup_skipped_total", "a"), 3);
    CHECK_EQ_INT(metric(&f, "cairn_backups_already_complete_total", "a"), 1);
    CHECK_EQ_INT(metric(&f, "cairn_backups_started_total", "a"), 1);
    CHECK_EQ_INT(metric(&f, "cairn_backups_started_total", "b"), 2);
    fx_halt(&f);
    CHECK_EQ_INT(stored(f.store, "a"), ts("2026-01-01T15:00:00Z"));
    fx_close(&f);
}

TEST(catchup_rate_limit_spaces_runs)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    config_free(f.cfg);
    const char *text = "[cairnd]\ncatch-up-rate = 5/s\n[schedule a]\nsource=/s\nto=file:///d\n"
                       "every=1m\nkeep-last=1\n";
    struct cairn_err err;
    CHECK_OK(config_parse(text, strlen(text), "t", &f.cfg, &err), &err);
    fx_baseline(&f, "2026-01-01T10:00:00Z");
    set_now("2026-01-01T10:05:00Z");
    uint64_t t0 = mono_ns();
    fx_run(&f);
    CHECK_EQ_INT(wait_count(&f.rec, 5), 5);
    double secs = (double)(mono_ns() - t0) / 1e9;
    CHECK(secs >= 0.75); /* 5 starts at 5/s: 4 gaps of 200 ms */
    CHECK(secs < 30);    /* a limiter in the wrong unit (5/min) would need 48 s */
    fx_halt(&f);
    fx_close(&f);
}

TEST(shutdown_cancels_stuck_backup_without_advancing)
{
    struct fixture f;
    fx_open(&f, "shutdown-timeout = 1s", "state.db");
    set_now("2026-01-01T10:30:00Z");
    fx_boot(&f);
    f.rec.block_until_cancel = 1;
    struct cairn_err err;
    set_now("2026-01-01T11:00:00Z");
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_in_flight", NULL, 2), 2);
    uint64_t t0 = mono_ns();
    sched_stop(f.s);
    CHECK_OK(sched_wait(f.s, &err), &err);
    double secs = (double)(mono_ns() - t0) / 1e9;
    /* It waits the 1 s shutdown-timeout, not the default 60 s, then cancels. */
    CHECK(secs >= 0.9 && secs < 30);
    sched_free(f.s);
    f.s = NULL;
    /* Cancelled runs are not recorded as done: they run again after restart. */
    CHECK_EQ_INT(stored(f.store, "a"), ts("2026-01-01T10:30:00Z"));
    CHECK_EQ_INT(metric(&f, "cairn_backups_failed_total", "a"), 0);
    f.rec.block_until_cancel = 0;
    set_now("2026-01-01T11:10:00Z");
    fx_run(&f);
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    CHECK_EQ_STR(f.rec.names[0][17] == 'a' ? f.rec.names[0] : f.rec.names[1], "20260101T110000Z-a");
    fx_halt(&f);
    fx_close(&f);
}

TEST(save_errors_are_counted_and_reported_by_health)
{
    struct fixture f;
    struct cairn_err err;
    char *dir = path_join(test_tmpdir(), "db");
    CHECK_OK(mkdir_p(dir, 0700, &err), &err);
    fx_open(&f, "", "db/state.db");
    set_now("2026-01-01T10:30:00Z");
    fx_run(&f);
    CHECK_EQ_INT(wait_metric(&f, "cairn_snapshot_saves_total", NULL, 1), 1); /* after catch-up */
    char body[512];
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK_OK(rmtree(dir, &err), &err);
    set_now("2026-01-01T11:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    CHECK_EQ_INT(wait_metric(&f, "cairn_snapshot_save_errors_total", NULL, 2), 2);
    CHECK_EQ_INT(metric(&f, "cairn_snapshot_creation_errors_total", NULL), 0);
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_succeeded_total", "a", 1), 1);
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 503);
    CHECK(strstr(body, "last state snapshot save failed") != NULL);
    fx_halt(&f);
    free(dir);
    fx_close(&f);
}

/* The report: a clock 1h50m behind the last run left the schedules waiting for it to
 * catch up, /healthz "ok" and nothing logged. Now the step is counted and named by /healthz
 * (still 200), and the next instant of the current clock runs. */
TEST(clock_step_back_keeps_schedules_running_and_is_reported)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    set_now("2026-01-01T10:30:00Z");
    fx_run(&f);
    wait_caught_up(&f);
    set_now("2026-01-01T11:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    CHECK_EQ_INT(metric(&f, "cairn_clock_backwards_total", NULL), 0);

    set_now("2026-01-01T09:10:00Z");
    CHECK_EQ_INT(wait_metric(&f, "cairn_clock_backwards_total", NULL, 1), 1);
    CHECK_EQ_INT(metric(&f, "cairn_clock_last_step_seconds", NULL), -6600);
    char body[512];
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK(strstr(body, "notice: the wall clock went back by 6600s (from 2026-01-01T11:00:00Z to "
                       "2026-01-01T09:10:00Z)") != NULL);
    CHECK(strstr(body, " 0 schedules catching up") != NULL);
    /* Not 12:00, the instant after the old cursor: 10:00, the next one of the current clock. */
    set_now("2026-01-01T10:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 4), 4);
    CHECK(strncmp(f.rec.names[2], "20260101T100000Z-", 17) == 0);
    CHECK(strncmp(f.rec.names[3], "20260101T100000Z-", 17) == 0);
    CHECK_EQ_INT(f.rec.catchup[2] + f.rec.catchup[3], 0);
    fx_halt(&f);
    /* The saved state follows the clock back, so a restart does not wait either. */
    CHECK_EQ_INT(stored(f.store, "a"), ts("2026-01-01T10:00:00Z"));
    CHECK_EQ_INT(metric(&f, "cairn_clock_backwards_total", NULL), 1); /* once per step */
    fx_close(&f);
}

/* cairnd restarted with its clock an hour behind the saved state. */
TEST(saved_state_ahead_of_the_clock_is_reported_and_not_waited_for)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    fx_baseline(&f, "2026-01-01T12:00:00Z");
    set_now("2026-01-01T10:50:00Z");
    fx_run(&f);
    wait_caught_up(&f);
    CHECK_EQ_INT(metric(&f, "cairn_clock_backwards_total", NULL), 1);
    CHECK_EQ_INT(metric(&f, "cairn_clock_last_step_seconds", NULL), -4200);
    char body[512];
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK(strstr(body, "went back by 4200s") != NULL);
    CHECK_EQ_INT(rec_count(&f.rec), 0); /* nothing replayed */
    set_now("2026-01-01T11:00:00Z");
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    CHECK(strncmp(f.rec.names[0], "20260101T110000Z-", 17) == 0);
    fx_halt(&f);
    fx_close(&f);
}

/* With a steady reference (offset_ms), time passing is not a step and a forward step is seen;
 * the runs it skipped follow the catch-up policy (cap 2 here), not a burst, and retention is
 * held. */
static int64_t g_offset_ms;
static int64_t clock_offset(void *ctx)
{
    (void)ctx;
    return __atomic_load_n(&g_offset_ms, __ATOMIC_SEQ_CST);
}

/* Start f's scheduler at 10:30 on a clock whose wall-minus-boot offset the test sets
 * (g_offset_ms), then wait for its boot catch-up. */
static void fx_run_offset(struct fixture *f)
{
    static struct cairn_clock steady; /* the scheduler keeps a pointer to it */
    steady = k_clock;
    steady.offset_ms = clock_offset;
    set_now("2026-01-01T10:30:00Z");
    struct cairn_err err;
    metrics_free(f->m);
    f->m = metrics_new();
    CHECK_OK(sched_new(f->cfg, f->store, &f->runner, &steady, f->m, &f->s, &err), &err);
    CHECK_OK(sched_start(f->s, &err), &err);
    pthread_create(&f->waiter, NULL, waiter, f);
    f->has_waiter = 1;
    wait_caught_up(f);
}

TEST(forward_step_is_counted_and_catch_up_stays_capped)
{
    struct fixture f;
    fx_open(&f, "catch-up-max = 2", "state.db");
    fx_run_offset(&f);
    set_now("2026-01-01T11:00:00Z"); /* time passing: the offset stays */
    CHECK_EQ_INT(wait_count(&f.rec, 2), 2);
    CHECK_EQ_INT(metric(&f, "cairn_clock_forwards_total", NULL), 0);

    __atomic_store_n(&g_offset_ms, 2 * 86400 * 1000, __ATOMIC_SEQ_CST);
    set_now("2026-01-03T11:00:00Z");
    CHECK_EQ_INT(wait_metric(&f, "cairn_clock_forwards_total", NULL, 1), 1);
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_succeeded_total", "a", 4), 4);
    CHECK_EQ_INT(wait_metric(&f, "cairn_backups_succeeded_total", "b", 4), 4);
    CHECK_EQ_INT(metric(&f, "cairn_clock_backwards_total", NULL), 0);
    CHECK_EQ_INT(metric(&f, "cairn_clock_last_step_seconds", NULL), 2 * 86400);
    CHECK_EQ_INT(metric(&f, "cairn_catchup_runs_total", "a"), 2);
    CHECK_EQ_INT(metric(&f, "cairn_catchup_skipped_total", "a"), 45);
    char body[512];
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK(strstr(body, "went forward by 172800s") != NULL);
    CHECK(strstr(body, "retention held") != NULL);
    fx_halt(&f);
    /* Retention is held after the jump: the earlier backups only look 2 days old. */
    CHECK_EQ_INT(f.rec.pruned, 2);
    __atomic_store_n(&g_offset_ms, 0, __ATOMIC_SEQ_CST);
    fx_close(&f);
}

/* The offset is read in ms, and two readings of one exact step differ by a few ms of jitter
 * (the wall and boot clocks cannot be read at once): the step is reported rounded to the
 * second, both ways. Truncating reported 2 days as 172799s (cairnd under faketime, 1 run in 5). */
TEST(step_size_is_rounded_not_truncated)
{
    struct fixture f;
    fx_open(&f, "", "state.db");
    fx_run_offset(&f);

    __atomic_store_n(&g_offset_ms, 2 * 86400 * 1000 - 1, __ATOMIC_SEQ_CST);
    set_now("2026-01-03T10:30:00Z");
    CHECK_EQ_INT(wait_metric(&f, "cairn_clock_forwards_total", NULL, 1), 1);
    CHECK_EQ_INT(metric(&f, "cairn_clock_last_step_seconds", NULL), 2 * 86400);
    char body[512];
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK(strstr(body, "went forward by 172800s") != NULL);

    __atomic_store_n(&g_offset_ms, 1, __ATOMIC_SEQ_CST);
    set_now("2026-01-01T10:30:00Z");
    CHECK_EQ_INT(wait_metric(&f, "cairn_clock_backwards_total", NULL, 1), 1);
    CHECK_EQ_INT(metric(&f, "cairn_clock_last_step_seconds", NULL), -2 * 86400);
    CHECK_EQ_INT(sched_health(f.s, body, sizeof(body)), 200);
    CHECK(strstr(body, "went back by 172800s") != NULL);
    fx_halt(&f);
    __atomic_store_n(&g_offset_ms, 0, __ATOMIC_SEQ_CST);
    fx_close(&f);
}

int main(int argc, char **argv)
{
    cairn_log_setup(CAIRN_LOG_WARN, 0, NULL);
    return test_main(argc, argv);
}
