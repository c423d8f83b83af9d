/* cairnd run: the backup scheduler daemon. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/state.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "metrics/metrics.h"
#include "progs/progs.h"
#include "sched/config.h"
#include "sched/plan.h"
#include "sched/runner.h"
#include "sched/sched.h"
#include "ha.h"
#ifdef CAIRN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static const char k_help[] =
    "usage: cairnd run --config FILE [--dry-run [--json]] [--log-format plain|json]\n"
    "                  [--log-level debug|info|warn|error]\n"
    "\n"
    "Run scheduled backups until SIGTERM/SIGINT. Each [schedule NAME] section of the config\n"
    "backs up a source (etcd://, redis://, exec:COMMAND, HOST:PORT of cairnd serve or\n"
    "influxd, or a local file/directory; docs/SOURCES.md) into\n"
    "a storage URL (file:///dir or s3://bucket/prefix) and keeps the newest keep-last backups\n"
    "(plus keep-daily / keep-weekly). Example (docs/cairnd.conf.example has every key):\n"
    "\n"
    "  [cairnd]\n"
    "  state-dir = /var/lib/cairnd          # state.db (SQLite) lives here\n"
    "  # state = postgresql://cairn@db/cairn  # or keep the state in PostgreSQL\n"
    "  metrics-listen = 127.0.0.1:9469      # GET /metrics (Prometheus), GET /healthz; or off\n"
    "  log-format = json                    # plain (default) or json lines\n"
    "  catch-up-max = 24                    # missed runs replayed per schedule at boot\n"
    "  catch-up-rate = 1/s                  # how fast catch-up runs start\n"
    "  timezone = Europe/Berlin             # cron schedules on this wall clock (default UTC)\n"
    "\n"
    "  [schedule influx-hourly]\n"
    "  source = 127.0.0.1:8088\n"
    "  to = file:///srv/backups/influx\n"
    "  every = 1h                           # or: cron = 15 */6 * * mon-fri\n"
    "  keep-last = 48\n"
    "  keep-daily = 14\n"
    "\n"
    "Backups are named YYYYMMDDTHHMMSSZ-<schedule> after their scheduled time (UTC), so a\n"
    "run is never duplicated: an existing complete backup of that name counts as done.\n"
    "After a restart cairnd runs the instants it missed in (last run, now], oldest first,\n"
    "at most catch-up-max per schedule (the newest ones) and catch-up-rate fast; set\n"
    "catch-up = latest or none in a schedule to replay less. A new schedule starts now.\n"
    "The state (last instant per schedule) is saved after every run, after catch-up,\n"
    "every snapshot-interval when it changed, and at shutdown; the newest state-keep\n"
    "snapshots are kept and a corrupt one falls back to the previous good one.\n"
    "A damaged SQLite state database (PRAGMA quick_check at start, every\n"
    "state-check-interval and after any corruption error) is moved aside to\n"
    "state.db.corrupt-<time>, replaced by a fresh one, and each schedule's last run is taken\n"
    "from its complete backups in storage; /healthz then says degraded (503) until restart.\n"
    "\n"
    "A wall clock that steps (NTP, by hand) is logged, counted in cairn_clock_*_total and named\n"
    "by /healthz (still 200). After a step back, a schedule whose last run is now in the future\n"
    "continues from the current time; after a jump forward, retention is held until the clock\n"
    "steps back or an hour passes (docs/RELIABILITY.md).\n"
    "\n"
    "State written by a newer cairnd (snapshot payload or schema version) is refused with\n"
    "exit status 2 rather than guessed at; run the newer cairnd or move the state away.\n"
    "A state store that cannot be reached at start (PostgreSQL down) is waited for: tried\n"
    "again 1 s, 2 s ... 30 s apart, logged each time, with /healthz 503 and\n"
    "cairn_state_store_up 0 meanwhile; SIGTERM then stops cairnd (exit 0).\n"
    "One cairnd per state: a second `cairnd run` on a state a live one holds exits with\n"
    "status 10 naming it (SQLite: flock on <state>.lock; PostgreSQL: an advisory lock).\n"
    "With `lease = 15s` and a PostgreSQL state, several cairnd share it instead: the holder\n"
    "of the leader lease runs the schedules, the others follow and take over when it\n"
    "expires; a fencing token stops a deposed leader from writing (docs/OPERATIONS.md).\n"
    "SIGHUP reloads the config: an invalid one is logged and the running one kept; a valid\n"
    "one takes effect once running backups have finished (state, metrics-listen and lease\n"
    "need a restart). Under systemd: sd_notify READY/RELOADING/STOPPING/WATCHDOG and\n"
    "journald priorities; dist/cairnd.service is the hardened unit.\n"
    "Backups hold a shared lock on their storage location, retention an exclusive one; a\n"
    "backup waits up to lock-wait (default 10m) for a retention pass to end, and retention\n"
    "that finds a backup running is postponed to the schedule's next run.\n"
    "\n"
    "Hooks (before, after, on-failure, hook-timeout), webhook notifications (webhook,\n"
    "webhook-on) and restore drills (drill = every 1d, drill-probe) are described in\n"
    "docs/OPERATIONS.md, with the shipped alert rules and dashboard (dist/).\n"
    "\n"
    "On SIGTERM running backups get shutdown-timeout to finish, then are cancelled: a\n"
    "cancelled backup stays incomplete (never looks complete) and runs again after restart.\n"
    "\n"
    "Options:\n"
    "  --config FILE        the configuration file (required)\n"
    "  --dry-run            load the state, print what would be caught up, and exit\n"
    "  --json               with --dry-run: print one JSON object\n"
    "  --log-format F       override the config's log-format\n"
    "  --log-level L        override the config's log-level\n"
    "\n"
    "Examples:\n"
    "  cairnd run --config /etc/cairn/cairnd.conf\n"
    "  cairnd run --config=/etc/cairn/cairnd.conf --dry-run --json\n"
    "\n";

/* systemd's notification socket (Type=notify): READY, RELOADING, STOPPING, STATUS. A no-op
 * without libsystemd or outside systemd. */
static void notify(const char *fmt, ...) CAIRN_PRINTF(1, 2);
static void notify(const char *fmt, ...)
{
#ifdef CAIRN_HAVE_SYSTEMD
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sd_notify(0, msg);
#else
    (void)fmt;
#endif
}

/* What the signal thread, the main loop and /healthz share (under mu). */
struct ctl {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    sigset_t set;
    const char *config_path;
    struct cairn_sched *s;          /* the running scheduler, or NULL */
    int stop;                       /* SIGTERM/SIGINT */
    int reload;                     /* SIGHUP: next_cfg is loaded and valid */
    struct cairn_config *next_cfg;  /* owned until the main loop takes it */
    const struct cairn_config *cfg; /* the running one (for what a reload may not change) */
};

/* What a reload cannot change in a running cairnd (the state store, the metrics listener, the
 * lease): NULL when new is acceptable, else the key. */
static const char *reload_fixed_key(const struct cairn_config *old, const struct cairn_config *nw)
{
    if (strcmp(old->state_url, nw->state_url) != 0)
        return "state";
    if ((old->metrics_listen == NULL) != (nw->metrics_listen == NULL) ||
        (old->metrics_listen && strcmp(old->metrics_listen, nw->metrics_listen) != 0))
        return "metrics-listen";
    if (old->lease != nw->lease || old->lease_renew_ms != nw->lease_renew_ms)
        return "lease";
    return NULL;
}

/* SIGHUP: load and check the config; a valid one is handed to the main loop, which stops the
 * scheduler without cancelling running backups and starts it again on the new config. */
static void reload_signal(struct ctl *c)
{
    cairn_info("cairnd", "received SIGHUP: reloading '%s'", c->config_path);
    notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
           (unsigned long long)(mono_ns() / 1000));
    struct cairn_config *nw = NULL;
    struct cairn_err err;
    int rc = config_load(c->config_path, &nw, &err);
    pthread_mutex_lock(&c->mu);
    const char *fixed = rc == CAIRN_OK ? reload_fixed_key(c->cfg, nw) : NULL;
    if (rc != CAIRN_OK || fixed != NULL) {
        pthread_mutex_unlock(&c->mu);
        if (fixed != NULL)
            cairn_error("cairnd",
                        "reload refused: '%s' changed, which needs a restart; keeping the "
                        "running configuration",
                        fixed);
        else
            cairn_error("cairnd", "reload failed: %s; keeping the running configuration", err.msg);
        config_free(nw);
        notify("READY=1\nSTATUS=reload failed; running the previous configuration");
        return;
    }
    config_free(c->next_cfg);
    c->next_cfg = nw;
    c->reload = 1;
    if (c->s != NULL)
        sched_stop_reload(c->s);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* systemd's watchdog (WatchdogSec=): WATCHDOG=1 every half period while the control lock can
 * be taken (the signal thread and the main loop take it; a deadlock there stops the pings and
 * systemd restarts cairnd), until stop. */
static void *watchdog_thread(void *arg)
{
    struct ctl *c = arg;
#ifdef CAIRN_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return NULL;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + usec * 500ull;
        ts.tv_sec = (time_t)(at / 1000000000ull);
        ts.tv_nsec = (long)(at % 1000000000ull);
        pthread_mutex_lock(&c->mu);
        while (!c->stop && pthread_cond_timedwait(&c->cond, &c->mu, &ts) != ETIMEDOUT) {
        }
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        sd_notify(0, "WATCHDOG=1");
    }
#else
    (void)c;
#endif
    return NULL;
}

static void *signal_thread(void *arg)
{
    struct ctl *c = arg;
    int sig = 0;
    while (sigwait(&c->set, &sig) == 0) {
        if (sig == SIGHUP) {
            reload_signal(c);
            continue;
        }
        cairn_info("cairnd", "received %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        notify("STOPPING=1");
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        if (c->s != NULL)
            sched_stop(c->s);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
        break;
    }
    return NULL;
}

/* Create the directory a SQLite state file lives in. */
static int prepare_state_dir(const struct cairn_config *cfg, struct cairn_err *err)
{
    const char *u = cfg->state_url;
    if (strncmp(u, "postgres", 8) == 0)
        return CAIRN_OK;
    if (strncmp(u, "sqlite://", 9) == 0)
        u += 9;
    else if (strncmp(u, "sqlite:", 7) == 0)
        u += 7;
    char dir[4096];
    path_dirname(u, dir, sizeof(dir));
    return mkdir_p(dir, 0700, err);
}

/* State written by a newer cairnd is a deployment problem, not a transient one: exit 2 so
 * systemd (RestartPreventExitStatus=2) does not restart-loop on it. */
static int state_fail(const struct cairn_err *err)
{
    int code = progs_fail(err);
    return err->code == CAIRN_E_UNSUPPORTED ? CAIRN_EXIT_USAGE : code;
}

/* ---- a state database that heals (docs/RELIABILITY.md) ---- */

struct heal_ctx {
    struct cairn_state_store *store; /* set under mu: /healthz may run before they are */
    struct cairn_sched *sched;
    struct cairn_metric *recovered;
    const struct cairn_config *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stop;
    char waiting[600]; /* why the state store cannot be reached at start; "" once it is */
    struct ha *ha;     /* high availability: who leads; NULL when off */
};

static void on_heal(void *ctx, const char *aside, const char *reason, int restored)
{
    struct heal_ctx *h = ctx;
    (void)aside, (void)reason, (void)restored; /* the store logged them */
    metrics_add(h->recovered, NULL, 1);
}

/* /healthz: the scheduler's verdict, degraded (503) once the state database was rebuilt;
 * 503 while cairnd waits for its state store at start. */
static int run_health(void *ctx, char *body, size_t cap)
{
    struct heal_ctx *h = ctx;
    char lead[400] = "";
    /* A follower is healthy: it is ready to take over. */
    if (h->ha != NULL && !ha_describe(h->ha, lead, sizeof(lead))) {
        snprintf(body, cap, "%s", lead);
        return 200;
    }
    size_t off = strlen(lead);
    if (off >= cap)
        off = 0;
    memcpy(body, lead, off);
    body += off;
    cap -= off;
    pthread_mutex_lock(&h->mu);
    struct cairn_state_store *store = h->store;
    struct cairn_sched *sched = h->sched;
    if (h->waiting[0] != '\0' || sched == NULL)
        snprintf(body, cap, "starting: %s%s\n",
                 h->waiting[0] ? "waiting for the state store: " : "loading the state", h->waiting);
    pthread_mutex_unlock(&h->mu);
    if (sched == NULL)
        return 503;
    char msg[512];
    unsigned heals = cairn_state_store_heals(store, msg, sizeof(msg));
    if (heals == 0)
        return sched_health(sched, body, cap);
    int n =
        snprintf(body, cap, "degraded: state database damaged and rebuilt %u times (last: %s)\n",
                 heals, msg);
    if (n >= 0 && (size_t)n < cap)
        sched_health(sched, body + n, cap - (size_t)n);
    return 503;
}

/* /metrics and /healthz on cfg->metrics_listen (logged with the port). */
static int start_metrics(const struct cairn_config *cfg, struct cairn_metrics *metrics,
                         struct heal_ctx *h, struct cairn_metrics_server **http,
                         struct cairn_err *err)
{
    struct cairn_http_limits lim = {cfg->metrics_timeout, cfg->metrics_max_conn,
                                    cfg->metrics_per_ip};
    int rc = metrics_serve(metrics, cfg->metrics_listen, &lim, run_health, h, http, err);
    if (rc == CAIRN_OK)
        cairn_info("cairnd", "metrics on http://%.*s:%u/metrics",
                   (int)(strrchr(cfg->metrics_listen, ':') - cfg->metrics_listen),
                   cfg->metrics_listen, metrics_server_port(*http));
    return rc;
}

/* Open the state store. One that cannot be reached (PostgreSQL down, not yet up, or across
 * a network that is not) is waited for rather than fatal: tries 1 s apart, doubling to 30 s,
 * with /metrics and /healthz (503, naming the error) up meanwhile, until it answers or
 * SIGTERM/SIGINT arrives (CAIRN_E_CANCELLED). Any other error is returned at once. */
static int open_state(const struct cairn_config *cfg, unsigned flags, struct cairn_metrics *metrics,
                      struct heal_ctx *h, const sigset_t *sigs, struct cairn_metrics_server **http,
                      struct cairn_state_store **store, struct cairn_err *err)
{
    struct cairn_metric *up = metrics_declare(
        metrics, "cairn_state_store_up", CAIRN_GAUGE,
        "1 once the state store answered at start; 0 while cairnd waits for it.", NULL, NULL, 0);
    struct cairn_metric *fails =
        metrics_declare(metrics, "cairn_state_store_connect_failures_total", CAIRN_COUNTER,
                        "Attempts to reach the state store at start that failed.", NULL, NULL, 0);
    metrics_set(up, NULL, 0);
    metrics_add(fails, NULL, 0);
    unsigned delay = 1;
    for (;;) {
        int rc = cairn_state_store_open_ex(cfg->state_url, cfg->state_keep, flags, store, err);
        if (rc != CAIRN_E_NETWORK || !(flags & CAIRN_STATE_OWN)) { /* --dry-run: report */
            pthread_mutex_lock(&h->mu);
            h->waiting[0] = '\0';
            pthread_mutex_unlock(&h->mu);
            if (rc == CAIRN_OK)
                metrics_set(up, NULL, 1);
            return rc;
        }
        metrics_add(fails, NULL, 1);
        pthread_mutex_lock(&h->mu);
        snprintf(h->waiting, sizeof(h->waiting), "%s", err->msg);
        pthread_mutex_unlock(&h->mu);
        struct cairn_err merr;
        if (*http == NULL && cfg->metrics_listen != NULL &&
            start_metrics(cfg, metrics, h, http, &merr) != CAIRN_OK)
            cairn_error("cairnd", "%s", merr.msg);
        cairn_error("state", "state store unreachable: %s; trying again in %us", err->msg, delay);
        struct timespec ts = {(time_t)delay, 0};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return cairn_err_set(err, CAIRN_E_CANCELLED,
                                 "received %s while waiting for the state store",
                                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
        delay = delay >= 15 ? 30 : delay * 2;
    }
}

/* Periodic integrity check of the state database, until heal_stop(). */
static void *checker_main(void *arg)
{
    struct heal_ctx *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)h->cfg->state_check_interval;
        while (!h->stop && pthread_cond_timedwait(&h->cond, &h->mu, &ts) != ETIMEDOUT) {
        }
        if (h->stop)
            break;
        pthread_mutex_unlock(&h->mu);
        struct cairn_err err;
        if (cairn_state_store_check(h->store, &err) != CAIRN_OK)
            cairn_error("state", "state database check failed: %s", err.msg);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* The newest instant the schedule has a complete backup for, from the names the scheduler
 * gives its backups (plan_run_name) and their MANIFESTs; -1 when there is none. */
static int storage_last(const struct cairn_schedule_cfg *c, int64_t *last, char *name, size_t cap,
                        struct cairn_err *err)
{
    *last = -1;
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l = {0};
    int rc = runner_storage_open(c, &st, err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &l, err);
    if (rc == CAIRN_E_NOTFOUND)
        rc = CAIRN_OK; /* no backup was ever written there */
    for (size_t i = 0; i < l.count && rc == CAIRN_OK; i++) {
        const struct cairn_backup_info *b = &l.items[i];
        int64_t ms = 0;
        const char *tag = NULL;
        char want[CAIRN_RUN_NAME_MAX];
        if (b->status != CAIRN_BACKUP_COMPLETE || !cairn_backup_name_parse(b->name, &ms, &tag) ||
            strcmp(tag, c->name) != 0 || ms % 1000 != 0)
            continue;
        plan_run_name(c->name, ms / 1000, want, sizeof(want));
        if (strcmp(want, b->name) == 0 && ms / 1000 > *last) {
            *last = ms / 1000;
            char created[40];
            format_rfc3339(b->created, 0, created, sizeof(created));
            snprintf(name, cap, "%s (MANIFEST created %s)", b->name, created);
        }
    }
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    return rc;
}

/* After the state database was rebuilt, or every stored snapshot was corrupt: move each
 * schedule's last instant forward to its newest complete backup in storage, so that no
 * instant already backed up runs again and missed ones are caught up (per catch-up). */
static void recover_from_storage(const struct cairn_config *cfg, struct cairn_state_store *store,
                                 int64_t now)
{
    struct cairn_err err;
    struct cairn_state *st = NULL;
    struct cairn_state_load_report rep;
    if (cairn_state_store_load(store, &st, &rep, &err) != CAIRN_OK) {
        cairn_error("state", "rebuilding the state from storage: %s", err.msg);
        return;
    }
    if (cairn_state_store_heals(store, NULL, 0) == 0 && (rep.found || rep.skipped == 0)) {
        cairn_state_free(st);
        return; /* the state is intact: it, not the storage, is the record */
    }
    for (size_t i = 0; i < cfg->n_schedules; i++) {
        const struct cairn_schedule_cfg *c = &cfg->schedules[i];
        int64_t last = -1;
        char name[256] = "";
        if (storage_last(c, &last, name, sizeof(name), &err) != CAIRN_OK)
            cairn_error("state", "schedule %s: listing %s to recover its last run: %s", c->name,
                        c->to, err.msg);
        else if (last < 0)
            cairn_warn("state", "schedule %s: no complete backup in %s to recover its last run",
                       c->name, c->to);
        else if (cairn_state_update(st, c->name, last, NULL) > 0)
            cairn_warn("state", "schedule %s: last run recovered from storage: %s", c->name, name);
    }
    uint8_t *env = NULL;
    size_t len = 0;
    if (cairn_state_encode(st, &env, &len, &err) != CAIRN_OK ||
        cairn_state_store_put(store, env, len, now, &err) != CAIRN_OK)
        cairn_error("state", "saving the state recovered from storage: %s", err.msg);
    free(env);
    cairn_state_free(st);
}

struct run_opts {
    const char *config, *fake_clock, *log_format, *log_level;
    int dry_run, fake_clock_opt;
};

const struct option run_opts_table[] = {{"config", required_argument, NULL, 'c'},
                                        {"dry-run", no_argument, NULL, 'n'},
                                        {"json", no_argument, NULL, 'j'},
                                        {"log-format", required_argument, NULL, 'f'},
                                        {"log-level", required_argument, NULL, 'l'},
                                        {"fake-clock", required_argument, NULL, 'C'},
                                        {"help", no_argument, NULL, 'h'},
                                        {NULL, 0, NULL, 0}};

/* cairnd run's options into o: -1 to go on, else the exit code (--help, a usage error). */
static int run_args(int argc, char **argv, struct run_opts *o)
{
    struct progs_getopt g = {.cmd = "run", .opts = run_opts_table, .argc = argc, .argv = argv};
    int c;
    while ((c = progs_getopt(&g)) != -1) {
        switch (c) {
        case 'h':
            fputs(k_help, stdout);
            fputs(progs_exit_codes_help, stdout);
            return 0;
        case 'n': o->dry_run = 1; break;
        case 'j': progs_json = 1; break;
        case 'c': o->config = g.arg; break;
        case 'f': o->log_format = g.arg; break;
        case 'l': o->log_level = g.arg; break;
        case 'C': /* tests only: "now" is read from this file */
            o->fake_clock = g.arg;
            o->fake_clock_opt = 1;
            break;
        default: return g.code;
        }
    }
    if ((c = progs_positionals(&g, 0, 0, "no arguments")) >= 0)
        return c;
    if (o->config == NULL)
        return progs_usage("run", "--config FILE is required");
    if (o->log_format && strcmp(o->log_format, "plain") != 0 && strcmp(o->log_format, "json") != 0)
        return progs_usage("run", "--log-format must be plain or json");
    if (o->log_level && cairn_log_level_parse(o->log_level) < 0)
        return progs_usage("run", "--log-level must be debug, info, warn or error");
#ifndef CAIRN_TEST_HOOKS
    /* A production cairnd must never take its time from a file someone left around. */
    if (o->fake_clock != NULL)
        return progs_usage("run",
                           "%s is a test hook and this cairnd was built without test hooks "
                           "(CMake -DCAIRN_TEST_HOOKS=ON, test builds only)",
                           o->fake_clock_opt ? "--fake-clock" : "CAIRND_FAKE_CLOCK");
#endif
    return -1;
}

/* What cairnd run holds; run_free releases it. */
struct run_ctx {
    const struct run_opts *o;
    struct cairn_config *cfg;
    struct cairn_clock clock;
    struct cairn_metrics *metrics;
    struct cairn_metrics_server *http;
    struct cairn_state_store *store;
    struct cairn_runner runner;
    struct cairn_sched *s;
    struct heal_ctx heal;
    struct ctl ctl;
    struct ha ha;
    int ha_open;
};

static void run_init(struct run_ctx *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->heal.mu, NULL);
    pthread_mutex_init(&r->ctl.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->heal.cond, &ca);
    pthread_cond_init(&r->ctl.cond, &ca);
    pthread_condattr_destroy(&ca);
}

static void run_free(struct run_ctx *r)
{
    metrics_server_stop(r->http);
    sched_free(r->s);
    if (r->ha_open)
        ha_close(&r->ha);
    metrics_free(r->metrics);
    cairn_state_store_free(r->store);
    config_free(r->cfg);
    config_free(r->ctl.next_cfg);
    pthread_cond_destroy(&r->heal.cond);
    pthread_mutex_destroy(&r->heal.mu);
    pthread_cond_destroy(&r->ctl.cond);
    pthread_mutex_destroy(&r->ctl.mu);
}

/* Logging as the config and the command line say. */
static void setup_logging(const struct run_ctx *r)
{
    const struct run_opts *o = r->o;
    int json = o->log_format ? strcmp(o->log_format, "json") == 0 : r->cfg->log_json;
    int level = o->log_level ? cairn_log_level_parse(o->log_level) : r->cfg->log_level;
    cairn_log_setup((enum cairn_log_level)level, json, NULL);
}

/* The config, logging, the clock, the metrics registry, and signals blocked for the signal
 * thread: -1 to go on, else the exit code. */
static int run_setup(struct run_ctx *r, const struct run_opts *o, struct cairn_err *err)
{
    r->o = o;
    int rc = config_load(o->config, &r->cfg, err);
    if (rc != CAIRN_OK) {
        /* Missing, unreadable or invalid: a restart cannot fix it (the README's exit 2, which
         * the unit's RestartPreventExitStatus=2 does not loop on). */
        progs_fail(err);
        return CAIRN_EXIT_USAGE;
    }
    const struct cairn_config *cfg = r->cfg;
    setup_logging(r);
    /* Cron schedules follow this zone, loaded with the config (sched/zone.h): the process's
     * TZ is neither read nor set. */
    if (cfg->timezone != NULL)
        cairn_info("cairnd", "cron schedules use the time zone %s", cfg->timezone);
    if (o->fake_clock != NULL) {
        sched_clock_file(&r->clock, o->fake_clock);
        cairn_warn("cairnd", "using the fake clock in '%s' (tests only)", o->fake_clock);
    } else {
        sched_clock_real(&r->clock);
    }
    r->metrics = metrics_new();
    r->heal.cfg = cfg;
    r->heal.recovered = metrics_declare(
        r->metrics, "cairn_state_recovered_total", CAIRN_COUNTER,
        "Times the state database was found damaged, moved aside and rebuilt.", NULL, NULL, 0);
    metrics_add(r->heal.recovered, NULL, 0);
    r->ctl.config_path = o->config;
    r->ctl.cfg = cfg;
    /* Signals go to one thread; block them before any other thread exists (the metrics
     * server may start while the state store is waited for). */
    sigemptyset(&r->ctl.set);
    sigaddset(&r->ctl.set, SIGTERM);
    sigaddset(&r->ctl.set, SIGINT);
    sigaddset(&r->ctl.set, SIGHUP);
    if (!o->dry_run)
        pthread_sigmask(SIG_BLOCK, &r->ctl.set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return -1;
}

/* The state store (waited for) and its healing: -1 to go on, else the exit code. */
static int run_boot(struct run_ctx *r, const struct run_opts *o, struct cairn_err *err)
{
    const struct cairn_config *cfg = r->cfg;
    int rc = prepare_state_dir(cfg, err);
    /* One cairnd per state (two would both run every schedule), taken before any check or
     * heal touches the database; with a lease (high availability) several share it and the
     * lease decides who runs. --dry-run changes nothing and takes no lock: a damaged
     * database is only reported. */
    unsigned flags = o->dry_run       ? 0
                     : cfg->lease > 0 ? CAIRN_STATE_HEAL
                                      : CAIRN_STATE_HEAL | CAIRN_STATE_OWN;
    if (rc == CAIRN_OK)
        rc = open_state(cfg, flags, r->metrics, &r->heal, &r->ctl.set, &r->http, &r->store, err);
    if (rc == CAIRN_OK && cfg->lease > 0 && !o->dry_run) {
        rc = ha_open(&r->ha, cfg, r->metrics, err);
        r->ha_open = 1;
        r->heal.ha = &r->ha;
    }
    if (rc == CAIRN_E_CANCELLED) {
        cairn_info("cairnd", "stopped: %s", err->msg);
        return 0;
    }
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "state store");
        return state_fail(err);
    }
    pthread_mutex_lock(&r->heal.mu);
    r->heal.store = r->store;
    pthread_mutex_unlock(&r->heal.mu);
    metrics_add(r->heal.recovered, NULL, cairn_state_store_heals(r->store, NULL, 0));
    cairn_state_store_on_heal(r->store, on_heal, &r->heal);
    return -1;
}

/* A scheduler for the current config, loaded from the state (after a repair from storage
 * when the state was damaged). */
static int sched_load(struct run_ctx *r, struct cairn_err *err)
{
    if (!r->o->dry_run)
        recover_from_storage(r->cfg, r->store, r->clock.now(r->clock.ctx));
    runner_backup_init(&r->runner, r->cfg);
    int rc = sched_new(r->cfg, r->store, &r->runner, &r->clock, r->metrics, &r->s, err);
    if (rc != CAIRN_OK)
        return state_fail(err);
    return -1;
}

/* Stop the state checker thread and wait for it. */
static void heal_stop(struct heal_ctx *h, pthread_t checker)
{
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    pthread_join(checker, NULL);
}

/* Take a reloaded config (ctl.mu held): the old one goes once no scheduler uses it. */
static void take_reload(struct run_ctx *r)
{
    struct cairn_config *old = r->cfg;
    r->cfg = r->ctl.next_cfg;
    r->ctl.next_cfg = NULL;
    r->ctl.reload = 0;
    r->ctl.cfg = r->cfg;
    pthread_mutex_lock(&r->heal.mu); /* the checker reads heal.cfg */
    r->heal.cfg = r->cfg;
    pthread_mutex_unlock(&r->heal.mu);
    config_free(old);
    setup_logging(r);
    cairn_info("cairnd", "configuration reloaded: %zu schedules", r->cfg->n_schedules);
}

/* High availability: follow until this cairnd holds the lease (CAIRN_OK), or until stopped
 * (CAIRN_E_CANCELLED). A reload while following is taken at once. */
static int await_leadership(struct run_ctx *r)
{
    int announced = 0;
    for (;;) {
        pthread_mutex_lock(&r->ctl.mu);
        if (r->ctl.reload) {
            take_reload(r);
            notify("READY=1");
        }
        int stop = r->ctl.stop;
        pthread_mutex_unlock(&r->ctl.mu);
        if (stop)
            return CAIRN_E_CANCELLED;
        struct cairn_err err;
        int rc = ha_try_take(&r->ha, &err);
        if (rc == CAIRN_OK)
            return CAIRN_OK;
        if (rc != CAIRN_E_LOCKED)
            cairn_error("ha", "taking the leader lease: %s", err.msg);
        if (!announced) {
            char d[400];
            ha_describe(&r->ha, d, sizeof(d));
            notify("READY=1\nSTATUS=%s", d);
            announced = 1;
        }
        pthread_mutex_lock(&r->ctl.mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
                      (uint64_t)r->cfg->lease_renew_ms * 1000000ull;
        ts.tv_sec = (time_t)(at / 1000000000ull);
        ts.tv_nsec = (long)(at % 1000000000ull);
        if (!r->ctl.stop && !r->ctl.reload)
            pthread_cond_timedwait(&r->ctl.cond, &r->ctl.mu, &ts);
        pthread_mutex_unlock(&r->ctl.mu);
    }
}

/* One term of the scheduler: load it from the state, run it until it is stopped (SIGTERM, a
 * reload, a lost lease), shut it down. Returns the exit code, or -1 to go on with another. */
static int run_term(struct run_ctx *r, struct cairn_err *err)
{
    if (r->ha_open) /* the state repair of sched_load writes as this term's leader too */
        cairn_state_store_set_fence(r->store, r->ha.token);
    int code = sched_load(r, err);
    if (code >= 0)
        return code;
    int rc = r->ha_open ? ha_term_start(&r->ha, r->s, r->store, err) : CAIRN_OK;
    pthread_mutex_lock(&r->ctl.mu);
    r->ctl.s = r->s;
    if (r->ctl.stop)
        sched_stop(r->s);
    else if (r->ctl.reload)
        sched_stop_reload(r->s);
    pthread_mutex_unlock(&r->ctl.mu);
    pthread_mutex_lock(&r->heal.mu);
    r->heal.sched = r->s;
    pthread_mutex_unlock(&r->heal.mu);
    if (rc == CAIRN_OK)
        rc = sched_start(r->s, err);
    if (rc == CAIRN_OK) {
        cairn_info("cairnd", "scheduler running: %zu schedules, state in %s (pid %d)",
                   r->cfg->n_schedules, cairn_state_store_kind(r->store), (int)getpid());
        notify("READY=1\nSTATUS=running %zu schedules%s", r->cfg->n_schedules,
               r->ha_open ? " as the leader" : "");
    } else {
        cairn_error("cairnd", "%s", err->msg);
        sched_stop(r->s);
    }
    int wrc = sched_wait(r->s, rc == CAIRN_OK ? err : NULL);
    pthread_mutex_lock(&r->ctl.mu);
    r->ctl.s = NULL;
    int stop = r->ctl.stop || rc != CAIRN_OK;
    pthread_mutex_unlock(&r->ctl.mu);
    pthread_mutex_lock(&r->heal.mu);
    r->heal.sched = NULL;
    pthread_mutex_unlock(&r->heal.mu);
    int lost = r->ha_open ? ha_term_end(&r->ha, stop) : 0;
    if (wrc == CAIRN_E_TIMEOUT) {
        /* Worker threads are still inside a backup: exit without tearing down what they use. */
        cairn_error("cairnd", "%s", err->msg);
        _exit(CAIRN_EXIT_FAILURE);
    }
    sched_free(r->s);
    r->s = NULL;
    if (lost) /* the final save was fenced off: expected */
        return -1;
    if (rc != CAIRN_OK || (stop && wrc != CAIRN_OK))
        return progs_fail(err);
    return stop ? 0 : -1;
}

/* Run the schedules until SIGTERM/SIGINT: the signal thread, /metrics, the state checker, and
 * scheduler terms one after another (a reload or, with a lease, a new leadership starts a new
 * one). Returns the exit code. */
static int run_schedules(struct run_ctx *r, struct cairn_err *err)
{
    pthread_t sig_thread, checker;
    int checker_started = 0, code = -1;
    int e = pthread_create(&sig_thread, NULL, signal_thread, &r->ctl);
    if (e != 0) {
        cairn_err_sys(err, CAIRN_E_INTERNAL, e, "starting the signal thread");
        return progs_fail(err);
    }
    if (r->cfg->metrics_listen != NULL && r->http == NULL &&
        start_metrics(r->cfg, r->metrics, &r->heal, &r->http, err) != CAIRN_OK)
        code = progs_fail(err);
    if (code < 0 && pthread_create(&checker, NULL, checker_main, &r->heal) == 0)
        checker_started = 1;
    pthread_t watchdog;
    int watchdog_started = pthread_create(&watchdog, NULL, watchdog_thread, &r->ctl) == 0;
    while (code < 0) {
        if (r->ha_open && await_leadership(r) == CAIRN_E_CANCELLED) {
            code = 0;
            break;
        }
        code = run_term(r, err);
        pthread_mutex_lock(&r->ctl.mu);
        if (code < 0 && r->ctl.reload)
            take_reload(r);
        pthread_mutex_unlock(&r->ctl.mu);
    }
    pthread_mutex_lock(&r->ctl.mu);
    int signalled = r->ctl.stop;
    pthread_mutex_unlock(&r->ctl.mu);
    if (!signalled)
        pthread_kill(sig_thread, SIGTERM);
    pthread_join(sig_thread, NULL);
    if (checker_started)
        heal_stop(&r->heal, checker);
    if (watchdog_started) {
        pthread_mutex_lock(&r->ctl.mu);
        r->ctl.stop = 1;
        pthread_cond_broadcast(&r->ctl.cond);
        pthread_mutex_unlock(&r->ctl.mu);
        pthread_join(watchdog, NULL);
    }
    metrics_server_stop(r->http);
    r->http = NULL;
    if (code == 0)
        cairn_info("cairnd", "stopped cleanly");
    return code;
}

/* systemd credentials (LoadCredential=aws-credentials:/etc/cairn/aws-credentials): the S3
 * driver reads the shared credentials file that AWS_SHARED_CREDENTIALS_FILE names, so point it
 * there unless the unit says otherwise. Before any thread exists (setenv). */
static void use_credentials_dir(void)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir == NULL || *dir == '\0' || getenv("AWS_SHARED_CREDENTIALS_FILE") != NULL)
        return;
    char *f = path_join(dir, "aws-credentials");
    if (access(f, R_OK) == 0)
        setenv("AWS_SHARED_CREDENTIALS_FILE", f, 0);
    free(f);
}

int cairnd_cmd_run(int argc, char **argv)
{
    struct run_opts o = {.fake_clock = getenv("CAIRND_FAKE_CLOCK")};
    int code = run_args(argc, argv, &o);
    if (code >= 0)
        return code;
    use_credentials_dir();
    struct cairn_err err;
    cairn_err_clear(&err);
    struct run_ctx r;
    run_init(&r);
    code = run_setup(&r, &o, &err);
    if (code < 0)
        code = run_boot(&r, &o, &err);
    if (code < 0 && o.dry_run) {
        code = sched_load(&r, &err);
        if (code < 0) {
            sched_describe(r.s, stdout, progs_json);
            code = 0;
        }
    } else if (code < 0) {
        code = run_schedules(&r, &err);
    }
    run_free(&r);
    return code;
}
