/* Internal: the cairnd configuration file (format documented in docs/cairnd.conf.example).
 *
 *   # comment            ; comment
 *   [cairnd]             daemon-wide settings
 *   key = value
 *   [schedule NAME]      one backup schedule; NAME is [A-Za-z0-9._-], at most 100 bytes
 *   key = value
 */
#ifndef CAIRN_SCHED_CONFIG_H
#define CAIRN_SCHED_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"
#include "cron.h"

enum cairn_catchup_policy {
    CAIRN_CATCHUP_ALL = 0, /* every missed run, oldest first, up to catch-up-max */
    CAIRN_CATCHUP_LATEST,  /* only the newest missed run */
    CAIRN_CATCHUP_NONE,    /* skip missed runs */
};

/* Hooks and notifications (docs/OPERATIONS.md), in [cairnd] and in a schedule; a schedule's
 * key replaces the [cairnd] one (config_parse copies the [cairnd] values into schedules that
 * have none). Commands run through /bin/sh -c (sched/hook.h). */
struct cairn_hooks_cfg {
    char *before;     /* before each backup; failing or timing out fails the run, no backup */
    char *after;      /* after a complete backup; a failure is logged and counted */
    char *on_failure; /* after a failed run (the before hook's failure included) */
    int64_t timeout;  /* seconds each hook may take (its process group is killed); 0: 5m */
    char *webhook;    /* http(s) URL: a JSON POST per run (sched/notify.c); NULL: none */
    int webhook_on;   /* 0 unset (failure), 1 failure, 2 always */
};

struct cairn_schedule_cfg {
    char *name;
    char *source;        /* a source URL, "HOST:PORT" or a local path */
    char *to;            /* storage URL */
    char *password_file; /* the source's secret, first line (mode 0600); or NULL */
    char *key_file;      /* the key file of the encrypted repository at to (cairn init); NULL: the
                          * [cairnd] key-file, if any */
    char *tls_ca, *tls_cert, *tls_key; /* the source's TLS files; NULL: none */
    int64_t source_timeout;            /* seconds the whole snapshot may take; 0: no limit */
    /* An InfluxDB source's time window, as cairn backup --start/--end: fixed edges (start,
     * end; either may be left open), or window: the last `window` seconds before the run's
     * scheduled instant, [at - window, at), so consecutive runs cover time once. */
    int has_start, has_end;
    int64_t start_sec, end_sec;
    long start_nsec, end_nsec;
    int64_t window; /* seconds; 0: off */
    char *timing_text;
    struct cairn_timing timing;
    unsigned keep_last, keep_daily, keep_weekly; /* 0 = rule off; keep-last is required */
    unsigned keep_hourly, keep_monthly, keep_yearly;
    int64_t keep_within; /* seconds; 0 = off */
    enum cairn_catchup_policy catchup;
    uint64_t rate_limit; /* upload bytes per second (rate-limit = 50M); 0 = unlimited */
    int force_read;      /* a local path: read every file, also those unchanged since the parent */
    struct cairn_hooks_cfg hooks;
    /* Restore drills (sched/drill.c): every drill_every seconds (0: none) the newest complete
     * backup is restored into a scratch directory under [cairnd] drill-dir and probed with
     * drill_probe (NULL: the source kind's own check) within drill_timeout (0: 1h). */
    int64_t drill_every;
    char *drill_probe;
    int64_t drill_timeout;
    int line; /* where the section starts, for messages */
};

struct cairn_config {
    char *path;                /* file it came from (for messages) */
    char *state_dir;           /* default /var/lib/cairnd */
    char *key_file;            /* repositories' key file of schedules without their own */
    char *state_url;           /* default sqlite:<state_dir>/state.db */
    unsigned state_keep;       /* snapshots kept in the database, default 10 */
    int64_t snapshot_interval; /* periodic save, default 30 s */
    char *metrics_listen;      /* "HOST:PORT"; NULL = off; default 127.0.0.1:9469 */
    unsigned metrics_timeout;  /* seconds an HTTP connection may be silent; 0 = default 10 */
    unsigned metrics_max_conn; /* HTTP connections open at once; 0 = default 128 */
    unsigned metrics_per_ip;   /* of those from one address; 0 = default 8 */
    int log_json;
    int log_level;            /* enum cairn_log_level, default info */
    unsigned catchup_max;     /* per schedule and boot, default 24 */
    double catchup_rate;      /* catch-up runs started per second, default 1 */
    unsigned max_concurrent;  /* backups running at once, default 2 */
    int64_t shutdown_timeout; /* wait for in-flight backups on SIGTERM, default 60 s */
    int64_t lock_wait;        /* a backup waits this long for a prune's lock, default 10 min */
    char *timezone;           /* IANA zone name for cron schedules; NULL = UTC */
    struct cron_zone *zone;   /* its data (schedules' timing.zone points here); NULL = UTC */
    /* SQLite state integrity check (quick_check) interval, default 5 min. */
    int64_t state_check_interval;
    /* High availability (PostgreSQL state only): the leader lease; 0 = off (one cairnd per
     * state, enforced). lease_renew_ms: how often the leader renews it (default lease/3). */
    int64_t lease;
    int64_t lease_renew_ms;
    struct cairn_hooks_cfg hooks; /* every schedule's, unless it sets its own */
    char *drill_dir;              /* scratch space of restore drills; <state-dir>/drill */
    struct cairn_schedule_cfg *schedules;
    size_t n_schedules;
};

/* Parse text (need not be NUL-terminated). Errors name "file:line". */
int config_parse(const char *text, size_t len, const char *path, struct cairn_config **out,
                 struct cairn_err *err);
/* Read and parse path. Values may name ${CREDENTIALS_DIRECTORY} (systemd LoadCredential=);
 * any other ${...} is refused, as are storage and source URLs that cannot work (relative,
 * unknown scheme), so --dry-run and a SIGHUP reload catch them. */
int config_load(const char *path, struct cairn_config **out, struct cairn_err *err);
void config_free(struct cairn_config *c);

#endif
