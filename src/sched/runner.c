/* The scheduler's real runner: backups through cairn_backup_run() (the same entry point as
 * `cairn backup`), idempotency checks and retention through the storage API. */
#include "runner.h"

#include <stdlib.h>
#include <string.h>

#include "cairn/backup.h"
#include "cairn/log.h"
#include "cairn/storage.h"
#include "common/util.h"

static int check(void *ctx, const struct cairn_run *run, int *complete, struct cairn_err *err)
{
    (void)ctx;
    *complete = 0;
    struct cairn_storage *st = NULL;
    int rc = cairn_storage_open(run->schedule->to, &st, err);
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
    (void)ctx;
    struct cairn_backup_opts o = {
        .source = run->schedule->source,
        .storage_url = run->schedule->to,
        .name = run->name,
        .cancel = cancel,
    };
    struct cairn_backup_result r;
    memset(&r, 0, sizeof(r));
    int rc = cairn_backup_run(&o, &r, err);
    if (rc == CAIRN_OK)
        res->bytes = r.bytes;
    return rc;
}

/* Does name belong to this schedule ("YYYYMMDDTHHMMSSZ-<schedule>")? Other schedules and
 * hand-made backups in a shared location are never pruned by this schedule. */
static int owned(const char *name, const char *schedule)
{
    const char *tag;
    return cairn_backup_name_parse(name, NULL, &tag) && strcmp(tag, schedule) == 0;
}

static int prune(void *ctx, const struct cairn_run *run, unsigned *removed, struct cairn_err *err)
{
    (void)ctx;
    *removed = 0;
    const struct cairn_schedule_cfg *c = run->schedule;
    struct cairn_storage *st = NULL;
    int rc = cairn_storage_open(c->to, &st, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup_list all = {0}, mine = {0};
    rc = cairn_storage_list(st, &all, err);
    if (rc != CAIRN_OK)
        goto out;
    mine.items = cairn_xcalloc(all.count ? all.count : 1, sizeof(*mine.items));
    for (size_t i = 0; i < all.count; i++)
        if (owned(all.items[i].name, c->name))
            mine.items[mine.count++] = all.items[i]; /* shallow: `all` owns the strings */
    uint8_t *drop = cairn_xcalloc(mine.count ? mine.count : 1, 1);
    struct cairn_prune_policy p = {c->keep_last, c->keep_daily, c->keep_weekly};
    cairn_prune_plan(&mine, &p, drop);
    for (size_t i = 0; i < mine.count && rc == CAIRN_OK; i++) {
        if (!drop[i])
            continue;
        rc = cairn_storage_remove(st, mine.items[i].name, err);
        if (rc == CAIRN_OK) {
            (*removed)++;
            cairn_info("sched", "schedule %s: removed %s backup %s", c->name,
                       cairn_backup_status_name(mine.items[i].status), mine.items[i].name);
        } else {
            cairn_err_wrap(err, "removing %s", mine.items[i].name);
        }
    }
    free(drop);
    free(mine.items);
out:
    cairn_backup_list_free(&all);
    cairn_storage_free(st);
    return rc;
}

void cairn_backup_runner(struct cairn_runner *r)
{
    r->ctx = NULL;
    r->check = check;
    r->run = run_backup;
    r->prune = prune;
}
