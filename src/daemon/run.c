/* cairnd run: the backup scheduler daemon. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/state.h"
#include "cli/cli.h"
#include "common/util.h"
#include "metrics/metrics.h"
#include "sched/config.h"
#include "sched/runner.h"
#include "sched/sched.h"

static const char k_help[] =
    "usage: cairnd run --config FILE [--dry-run [--json]] [--log-format plain|json]\n"
    "                  [--log-level debug|info|warn|error]\n"
    "\n"
    "Run scheduled backups until SIGTERM/SIGINT. Each [schedule NAME] section of the config\n"
    "backs up a source (HOST:PORT of cairnd serve or influxd, or a local file/directory) into\n"
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
    "\n"
    "State written by a newer cairnd (snapshot payload or schema version) is refused with\n"
    "exit status 2 rather than guessed at; run the newer cairnd or move the state away.\n"
    "One cairnd per state: a second `cairnd run` on a state a live one holds exits with\n"
    "status 10 naming it (SQLite: flock on <state>.lock; PostgreSQL: an advisory lock).\n"
    "Backups hold a shared lock on their storage location, retention an exclusive one.\n"
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
    "\n";

struct sigctx {
    sigset_t set;
    struct cairn_sched *s;
};

static void *signal_thread(void *arg)
{
    struct sigctx *c = arg;
    int sig = 0;
    while (sigwait(&c->set, &sig) == 0) {
        if (sig == SIGHUP) {
            cairn_info("cairnd", "SIGHUP ignored: restart cairnd to reload the configuration");
            continue;
        }
        cairn_info("cairnd", "received %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        cairn_sched_stop(c->s);
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
    cairn_dirname(u, dir, sizeof(dir));
    return cairn_mkdir_p(dir, 0700, err);
}

/* State written by a newer cairnd is a deployment problem, not a transient one: exit 2 so
 * systemd (RestartPreventExitStatus=2) does not restart-loop on it. */
static int state_fail(const struct cairn_err *err)
{
    int code = cli_fail(err);
    return err->code == CAIRN_E_UNSUPPORTED ? CAIRN_EXIT_USAGE : code;
}

int cairnd_cmd_run(int argc, char **argv)
{
    const char *config = NULL, *fake_clock = getenv("CAIRND_FAKE_CLOCK");
    const char *log_format = NULL, *log_level = NULL;
    int dry_run = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_help, stdout);
            fputs(cli_exit_codes_help, stdout);
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry_run = 1;
        } else if (strcmp(a, "--json") == 0) {
            cli_json = 1;
        } else if (i + 1 < argc && strcmp(a, "--config") == 0) {
            config = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--log-format") == 0) {
            log_format = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--log-level") == 0) {
            log_level = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--fake-clock") == 0) {
            fake_clock = argv[++i]; /* tests only: "now" is read from this file */
        } else {
            return cli_usage("run", "unknown or incomplete option '%s'", a);
        }
    }
    if (config == NULL)
        return cli_usage("run", "--config FILE is required");
    if (log_format && strcmp(log_format, "plain") != 0 && strcmp(log_format, "json") != 0)
        return cli_usage("run", "--log-format must be plain or json");
    if (log_level && cairn_log_level_parse(log_level) < 0)
        return cli_usage("run", "--log-level must be debug, info, warn or error");

    struct cairn_err err;
    cairn_err_clear(&err);
    struct cairn_config *cfg = NULL;
    struct cairn_state_store *store = NULL;
    struct cairn_metrics *metrics = NULL;
    struct cairn_metrics_server *http = NULL;
    struct cairn_sched *s = NULL;
    int code = 0, rc;

    rc = cairn_config_load(config, &cfg, &err);
    if (rc != CAIRN_OK) {
        code = cli_fail(&err);
        goto out;
    }
    int json = log_format ? strcmp(log_format, "json") == 0 : cfg->log_json;
    int level = log_level ? cairn_log_level_parse(log_level) : cfg->log_level;
    cairn_log_setup((enum cairn_log_level)level, json, NULL);
    /* Cron schedules follow this zone; set while this is the only thread (setenv is not
     * thread-safe), and for good, so localtime_r sees one zone everywhere. */
    setenv("TZ", cfg->timezone ? cfg->timezone : "UTC", 1);
    tzset();
    if (cfg->timezone != NULL)
        cairn_info("cairnd", "cron schedules use the time zone %s", cfg->timezone);

    struct cairn_clock clock;
    if (fake_clock != NULL) {
        cairn_clock_file(&clock, fake_clock);
        cairn_warn("cairnd", "using the fake clock in '%s' (tests only)", fake_clock);
    } else {
        cairn_clock_real(&clock);
    }

    rc = prepare_state_dir(cfg, &err);
    if (rc == CAIRN_OK)
        rc = cairn_state_store_open(cfg->state_url, cfg->state_keep, &store, &err);
    /* One cairnd per state: two would both run every schedule. A dry run only reads. */
    if (rc == CAIRN_OK && !dry_run)
        rc = cairn_state_store_lock(store, cfg->state_url, &err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(&err, "state store");
        code = state_fail(&err);
        goto out;
    }
    metrics = cairn_metrics_new();
    struct cairn_runner runner;
    cairn_backup_runner(&runner);
    rc = cairn_sched_new(cfg, store, &runner, &clock, metrics, &s, &err);
    if (rc != CAIRN_OK) {
        code = state_fail(&err);
        goto out;
    }
    if (dry_run) {
        cairn_sched_describe(s, stdout, cli_json);
        goto out;
    }

    /* Signals go to one thread; block them before any other thread exists. */
    struct sigctx sc = {.s = s};
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    sigaddset(&sc.set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t sig_thread;
    int e = pthread_create(&sig_thread, NULL, signal_thread, &sc);
    if (e != 0) {
        cairn_err_sys(&err, CAIRN_E_INTERNAL, e, "starting the signal thread");
        code = cli_fail(&err);
        goto out;
    }

    if (cfg->metrics_listen != NULL) {
        rc = cairn_metrics_serve(metrics, cfg->metrics_listen, cairn_sched_health, s, &http, &err);
        if (rc != CAIRN_OK) {
            cairn_sched_stop(s);
            pthread_kill(sig_thread, SIGTERM);
            pthread_join(sig_thread, NULL);
            code = cli_fail(&err);
            goto out;
        }
        cairn_info("cairnd", "metrics on http://%.*s:%u/metrics",
                   (int)(strrchr(cfg->metrics_listen, ':') - cfg->metrics_listen),
                   cfg->metrics_listen, cairn_metrics_server_port(http));
    }
    rc = cairn_sched_start(s, &err);
    if (rc == CAIRN_OK) {
        cairn_info("cairnd", "scheduler running: %zu schedules, state in %s (pid %d)",
                   cfg->n_schedules, cairn_state_store_kind(store), (int)getpid());
    } else {
        cairn_error("cairnd", "%s", err.msg);
        cairn_sched_stop(s);
        pthread_kill(sig_thread, SIGTERM);
    }
    int wrc = cairn_sched_wait(s, rc == CAIRN_OK ? &err : NULL);
    pthread_join(sig_thread, NULL);
    cairn_metrics_server_stop(http);
    http = NULL;
    if (wrc == CAIRN_E_TIMEOUT) {
        /* Worker threads are still inside a backup: exit without tearing down what they use. */
        cairn_error("cairnd", "%s", err.msg);
        _exit(CAIRN_EXIT_FAILURE);
    }
    if (rc != CAIRN_OK || wrc != CAIRN_OK) {
        code = cli_fail(&err);
    } else {
        cairn_info("cairnd", "stopped cleanly");
    }
out:
    cairn_metrics_server_stop(http);
    cairn_sched_free(s);
    cairn_metrics_free(metrics);
    cairn_state_store_close(store);
    cairn_config_free(cfg);
    return code;
}
