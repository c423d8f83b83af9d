/* The scheduler's real runner: backups through cairn_engine_backup() (the same entry point as
 * `cairn backup`), idempotency checks and retention through the storage API. */
#include "runner.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/digest.h"
#include "cairn/engine.h"
#include "cairn/influx.h"
#include "cairn/log.h"
#include "cairn/repo.h"
#include "cairn/storage.h"
#include "common/util.h"

int runner_storage_open(const struct cairn_schedule_cfg *c, struct cairn_storage **st,
                        struct cairn_err *err)
{
    *st = NULL;
    uint8_t key[CAIRN_REPO_KEY_LEN];
    int rc = c->key_file != NULL ? cairn_key_load(c->key_file, key, err) : CAIRN_OK;
    if (rc == CAIRN_OK)
        rc = cairn_storage_open(c->to, st, err);
    if (rc == CAIRN_OK && c->key_file != NULL) {
        struct cairn_repo_secret sec = {key, NULL};
        rc = cairn_storage_set_secret(*st, &sec, err);
    }
    wipe(key, sizeof(key));
    if (rc != CAIRN_OK) {
        cairn_storage_free(*st);
        *st = NULL;
    }
    return rc;
}

static int check(void *ctx, const struct cairn_run *run, int *complete, struct cairn_err *err)
{
    (void)ctx;
    *complete = 0;
    struct cairn_storage *st = NULL;
    int rc = runner_storage_open(run->schedule, &st, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = NULL;
    rc = cairn_storage_open_backup(st, run->name, &b, err);
    if (rc == CAIRN_E_NOTFOUND) {
        rc = CAIRN_OK;
    } else if (rc == CAIRN_OK) {
        if (cairn_backup_status(b) == CAIRN_BACKUP_COMPLETE) {
            *complete = 1;
        } else {
            /* Left by a crash or a cancelled run: clear it so the run can start again. */
            cairn_backup_free(b);
            b = NULL;
            cairn_info("sched", "removing incomplete backup %s left by an earlier attempt",
                       run->name);
            rc = cairn_storage_remove(st, run->name, err);
        }
    }
    /* A corrupt backup of this name is left alone (never delete what cannot be read); the run
     * will then fail to start it, which is counted and logged. */
    cairn_backup_free(b);
    cairn_storage_free(st);
    return rc;
}

static int run_backup(void *ctx, const struct cairn_run *run, const volatile int *cancel,
                      struct cairn_run_result *res, struct cairn_err *err)
{
    const struct cairn_config *cfg = ctx;
    /* A prune (this cairnd's other schedules', or anyone's) holds the location briefly:
     * the run waits for it rather than fail. */
    const struct cairn_schedule_cfg *c = run->schedule;
    struct cairn_influx_tls_opts tls = {
        .ca_file = c->tls_ca, .cert_file = c->tls_cert, .key_file = c->tls_key};
    int has_tls = c->tls_ca != NULL || c->tls_cert != NULL || c->tls_key != NULL;
    struct cairn_engine_backup_opts o = {
        .source = c->source,
        .storage_url = c->to,
        .name = run->name,
        .cancel = cancel,
        .lock_wait_ms = cfg != NULL ? cfg->lock_wait * 1000 : 0,
        .tls = has_tls ? &tls : NULL,
        .password_file = c->password_file,
        .source_timeout_ms = c->source_timeout * 1000,
        .commit_check = run->commit_check,
        .commit_check_ctx = run->commit_ctx,
        .rate_limit = c->rate_limit,
        .force_read = c->force_read,
        .has_start = c->has_start,
        .start_sec = c->start_sec,
        .start_nsec = c->start_nsec,
        .has_end = c->has_end,
        .end_sec = c->end_sec,
        .end_nsec = c->end_nsec,
    };
    if (c->window > 0) { /* [at - window, at): the next run starts where this one ends */
        o.has_start = o.has_end = 1;
        o.start_sec = run->at - c->window;
        o.start_nsec = 0;
        o.end_sec = run->at - 1;
        o.end_nsec = 999999999;
    }
    uint8_t key[CAIRN_REPO_KEY_LEN];
    struct cairn_repo_secret sec = {key, NULL};
    if (c->key_file != NULL) {
        int krc = cairn_key_load(c->key_file, key, err);
        if (krc != CAIRN_OK)
            return krc;
        o.secret = &sec;
    }
    struct cairn_engine_backup_result r;
    memset(&r, 0, sizeof(r));
    int rc = cairn_engine_backup(&o, &r, err);
    wipe(key, sizeof(key));
    if (rc == CAIRN_OK) {
        res->bytes = r.bytes;
        res->unchanged_files = r.unchanged_files;
        res->unchanged_bytes = r.unchanged_bytes;
    }
    return rc;
}

/* Does name belong to this schedule ("YYYYMMDDTHHMMSSZ-<schedule>")? Other schedules and
 * hand-made backups in a shared location are never pruned by this schedule. */
static int owned(const char *name, void *arg)
{
    const char *schedule = arg;
    const char *tag;
    return cairn_backup_name_parse(name, NULL, &tag) && strcmp(tag, schedule) == 0;
}

/* After removals, as cairn prune: reclaim the chunks no remaining backup references (a
 * location without a chunk store has nothing to collect), still under the exclusive lock.
 * The HA fence is checked first, as before retention: a leader that lost its lease between
 * the removals and here deletes no packs. */
static void prune_gc(const struct cairn_run *run, struct cairn_storage *st,
                     struct cairn_prune_result *res)
{
    struct cairn_err e;
    cairn_err_clear(&e);
    struct cairn_repo *repo = NULL;
    if (cairn_storage_repo(st, &repo, &e) != CAIRN_OK || repo == NULL || !cairn_repo_dedup(repo))
        return; /* the listing above read the config: a plain or full-copy location */
    if (run->commit_check != NULL && (res->gc_rc = run->commit_check(run->commit_ctx, &e)) != 0) {
        res->gc_fenced = 1;
        snprintf(res->gc_msg, sizeof(res->gc_msg), "%s", e.msg);
        return;
    }
    struct cairn_gc_stats gs = {0};
    res->gc_rc = cairn_storage_gc(st, NULL, &gs, &e);
    res->gc_ran = 1;
    res->gc_freed = gs.bytes_freed;
    res->gc_packs_deleted = gs.packs_deleted;
    res->gc_packs_repacked = gs.packs_repacked;
    if (res->gc_rc != CAIRN_OK)
        snprintf(res->gc_msg, sizeof(res->gc_msg), "%s", e.msg);
}

/* The schedule's keep-* rules over its own backups, grouped by source. The whole list is
 * planned (not only this schedule's) so that a chain reaching into other backups is seen.
 * "now" is the real clock, the one that stamps MANIFEST creation times (the scheduler's test
 * clock only moves the schedule's instants). */
static int prune(void *ctx, const struct cairn_run *run, struct cairn_prune_result *res,
                 struct cairn_err *err)
{
    (void)ctx;
    memset(res, 0, sizeof(*res));
    const struct cairn_schedule_cfg *c = run->schedule;
    struct cairn_storage *st = NULL;
    int rc = runner_storage_open(c, &st, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup_list all = {0};
    struct cairn_retention_plan plan = {0};
    struct cairn_retention_policy p = {
        .keep_last = c->keep_last,
        .keep_hourly = c->keep_hourly,
        .keep_daily = c->keep_daily,
        .keep_weekly = c->keep_weekly,
        .keep_monthly = c->keep_monthly,
        .keep_yearly = c->keep_yearly,
        .keep_within = c->keep_within,
        .group_by_source = 1,
        .filter = owned,
        .filter_arg = c->name,
        .now = run->wall_now != 0 ? run->wall_now : (int64_t)time(NULL),
    };
    /* Exclusive, as cairn prune: no backup (of any schedule, process or host) runs meanwhile.
     * It does not wait: a backup may hold the location for hours, and a run that cannot get
     * it prunes at its next run (the scheduler logs CAIRN_E_LOCKED as a postponement). */
    static const struct cairn_lock_opts lock_opts = {.command = "cairnd prune"};
    struct cairn_lock *lock = NULL;
    rc = cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &lock_opts, &lock, err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &all, err);
    if (rc == CAIRN_OK)
        rc = cairn_retention_plan(&all, &p, &plan, err);
    for (size_t i = 0; i < plan.count && rc == CAIRN_OK; i++) {
        const struct cairn_retention_decision *d = &plan.items[i];
        if (d->warning != NULL)
            cairn_warn("sched", "schedule %s: backup %s: %s", c->name, all.items[i].name,
                       d->warning);
        if (d->action != CAIRN_RETAIN_REMOVE)
            continue;
        rc = cairn_storage_remove(st, all.items[i].name, err);
        if (rc == CAIRN_OK) {
            res->removed++;
            cairn_info("sched", "schedule %s: removed %s backup %s (%s)", c->name,
                       cairn_backup_status_name(all.items[i].status), all.items[i].name, d->reason);
        } else {
            cairn_err_wrap(err, rc, "removing %s", all.items[i].name);
        }
    }
    if (rc == CAIRN_OK && res->removed > 0)
        prune_gc(run, st, res);
    cairn_retention_plan_free(&plan);
    cairn_backup_list_free(&all);
    cairn_lock_release(lock);
    cairn_storage_free(st);
    return rc;
}

void runner_backup_init(struct cairn_runner *r, const struct cairn_config *cfg)
{
    r->ctx = (void *)cfg;
    r->check = check;
    r->run = run_backup;
    r->prune = prune;
}
