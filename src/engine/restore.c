/* cairn_engine_restore: open and check a backup chain, then restore it through the driver of
 * its kind (or of the target: source.c); a backup of a local path goes back through the
 * storage module's path restore. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/repo.h"
#include "common/util.h"
#include "cairn/source.h"
#include "internal.h"

#define CHAIN_MAX 1000

struct chain {
    struct cairn_backup *b[CHAIN_MAX];
    size_t n; /* b[0] is the base, b[n-1] the requested backup */
};

static void chain_free(struct chain *c)
{
    for (size_t i = 0; i < c->n; i++)
        cairn_backup_free(c->b[i]);
    c->n = 0;
}

static int chain_open(struct cairn_storage *st, const char *name, struct chain *c,
                      struct cairn_err *err)
{
    struct cairn_backup *tmp[CHAIN_MAX];
    size_t n = 0;
    const char *next = name;
    while (next != NULL) {
        if (n == CHAIN_MAX) {
            for (size_t i = 0; i < n; i++)
                cairn_backup_free(tmp[i]);
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "backup chain of '%s' is longer than %d "
                                 "(a parent loop?)",
                                 name, CHAIN_MAX);
        }
        int rc = cairn_storage_open_backup(st, next, &tmp[n], err);
        if (rc == CAIRN_OK && cairn_backup_status(tmp[n]) != CAIRN_BACKUP_COMPLETE) {
            cairn_backup_free(tmp[n]);
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s' is incomplete", next);
        }
        if (rc != CAIRN_OK) {
            for (size_t i = 0; i < n; i++)
                cairn_backup_free(tmp[i]);
            return n > 0 ? cairn_err_wrap(err, rc, "parent of '%s'", name) : rc;
        }
        next = cairn_backup_parent(tmp[n]);
        n++;
    }
    for (size_t i = 0; i < n; i++)
        c->b[i] = tmp[n - 1 - i];
    c->n = n;
    return CAIRN_OK;
}

static char *identity_of(struct cairn_backup *b, const json_t *scope)
{
    return engine_identity_text(cairn_backup_kind(b), cairn_backup_source(b), scope);
}

/* Every parent has its child's kind and source and covers its scope: a chain that mixes them
 * would restore without the data the child did not take again (databases outside a parent's
 * filter). */
static int chain_check(const struct chain *c, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t k = c->n; k-- > 1 && rc == CAIRN_OK;) {
        struct cairn_backup *child = c->b[k], *parent = c->b[k - 1];
        json_t *cs = engine_scope_of(child), *ps = engine_scope_of(parent);
        if (strcmp(cairn_backup_kind(child), cairn_backup_kind(parent)) != 0 ||
            strcmp(cairn_backup_source(child), cairn_backup_source(parent)) != 0 ||
            !engine_scope_covers(ps, cs)) {
            char *ct = identity_of(child, cs), *pt = identity_of(parent, ps);
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "backup chain is inconsistent: '%s' (%s) has as parent '%s' "
                               "(%s), not a backup of the same kind and source holding the "
                               "child's scope; nothing was restored",
                               cairn_backup_name(child), ct, cairn_backup_name(parent), pt);
            free(ct);
            free(pt);
        }
        json_decref(cs);
        json_decref(ps);
    }
    return rc;
}

static int restore_opts_check(const struct cairn_engine_restore_opts *o, struct cairn_err *err)
{
    if (o->storage_url == NULL || o->name == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "restore needs a storage URL and a name");
    if ((o->target == NULL) == (o->into_dir == NULL))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "restore needs exactly one target: an "
                             "address (--to) or a directory (--into)");
    if ((o->newdb != NULL || o->rp != NULL) && o->db == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "--newdb and --rp need --db");
    if (o->newrp != NULL && o->rp == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "--newrp needs --rp");
    return CAIRN_OK;
}

/* A backup of a local path, all or nothing (cairn_backup_restore_path). */
static int restore_files(const struct cairn_engine_restore_opts *o, struct cairn_backup *b,
                         struct engine_progress *prog, struct cairn_engine_restore_result *res,
                         struct cairn_err *err)
{
    res->backups = 1;
    if (o->into_dir == NULL || o->db != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s' is of a local path: restore "
                             "it with --into DIR only",
                             o->name);
    struct cairn_path_opts po = {.progress = engine_path_progress,
                                 .progress_arg = prog,
                                 .force = o->force,
                                 .cancel = o->cancel,
                                 .plan = engine_path_plan,
                                 .file_done = engine_path_file_done,
                                 .numeric_owner = o->numeric_owner,
                                 .acls = o->acls,
                                 .include = o->include,
                                 .exclude = o->exclude};
    int rc = cairn_backup_restore_path(b, o->into_dir, &po, err);
    for (size_t i = 0; rc == CAIRN_OK && i < cairn_backup_file_count(b); i++)
        res->bytes += cairn_backup_file_at(b, i)->logical_size;
    return rc;
}

int cairn_engine_restore(const struct cairn_engine_restore_opts *o,
                         struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    memset(res, 0, sizeof(*res));
    engine_sources_init();
    uint64_t t0 = mono_ns();
    int rc = restore_opts_check(o, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_storage *st;
    rc = cairn_storage_open(o->storage_url, &st, err);
    if (rc == CAIRN_OK && o->secret != NULL &&
        (rc = cairn_storage_set_secret(st, o->secret, err)) != CAIRN_OK)
        cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return rc;
    cairn_storage_set_cancel(st, o->cancel);
    struct chain c = {.n = 0};
    struct engine_progress prog = {
        PTHREAD_MUTEX_INITIALIZER, o->progress, o->progress_ctx, o->cancel, 0, 0};
    rc = chain_open(st, o->name, &c, err);
    if (rc == CAIRN_OK)
        rc = chain_check(&c, err);
    const char *kind = rc == CAIRN_OK ? cairn_backup_kind(c.b[c.n - 1]) : "";
    if (rc == CAIRN_OK && c.n == 1 && strcmp(kind, "files") == 0)
        rc = restore_files(o, c.b[0], &prog, res, err);
    else if (rc == CAIRN_OK) /* influxdb, etcd, redis, exec... */
        rc = engine_restore_source(c.b, c.n, o, &prog, res, err);
    chain_free(&c);
    cairn_storage_free(st);
    res->seconds = (double)(mono_ns() - t0) / 1e9;
    return rc;
}
