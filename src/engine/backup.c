/* cairn_engine_backup: a backup of a source through its driver (source.c), or of a local path
 * through the storage module's path backup; the parent of an incremental backup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/repo.h"
#include "common/util.h"
#include "internal.h"

static int is_local_source(const char *s)
{
    return s[0] == '/' || s[0] == '.' || access(s, F_OK) == 0;
}

/* Local paths: zstd only where it pays (see docs/PERFORMANCE.md). */
static const struct cairn_file_opts auto_opts = {CAIRN_COMPRESS_AUTO, 1, 1, 0};

/* Does the listed backup cover scope? Old MANIFESTs (no scope in the listing) are opened. */
static int info_scope_matches(struct cairn_storage *st, const struct cairn_backup_info *in,
                              const json_t *scope)
{
    json_t *have = NULL;
    if (in->scope != NULL) {
        have = json_loads(in->scope, 0, NULL);
    } else {
        struct cairn_backup *b;
        struct cairn_err e;
        if (cairn_storage_open_backup(st, in->name, &b, &e) != CAIRN_OK) {
            cairn_warn(ENGINE_LOGC, "not a parent candidate: %s", e.msg);
            return 0;
        }
        have = engine_scope_of(b);
        cairn_backup_free(b);
    }
    int eq = engine_scope_covers(have, scope);
    json_decref(have);
    return eq;
}

static int cmp_newest_first(const void *pa, const void *pb)
{
    const struct cairn_backup_info *a = *(struct cairn_backup_info *const *)pa,
                                   *b = *(struct cairn_backup_info *const *)pb;
    if (a->created != b->created)
        return a->created > b->created ? -1 : 1;
    return -strcmp(a->name, b->name);
}

/* The parent of an incremental backup: the newest (by MANIFEST creation time) complete backup
 * of the same kind and source whose scope covers this one's. CAIRN_E_NOTFOUND names what was
 * looked for. */
static int find_parent(struct cairn_storage *st, const char *kind, const char *source,
                       const json_t *scope, char *out, size_t cap, struct cairn_err *err)
{
    struct cairn_backup_list l;
    int rc = cairn_storage_list(st, &l, err);
    if (rc != CAIRN_OK)
        return rc;
    out[0] = '\0';
    struct cairn_backup_info **cand = xcalloc(l.count ? l.count : 1, sizeof(*cand));
    size_t n = 0;
    for (size_t i = 0; i < l.count; i++)
        if (l.items[i].status == CAIRN_BACKUP_COMPLETE && l.items[i].kind != NULL &&
            strcmp(l.items[i].kind, kind) == 0 && strcmp(l.items[i].source, source) == 0 &&
            strlen(l.items[i].name) < cap) /* never a truncated name */
            cand[n++] = &l.items[i];
    qsort(cand, n, sizeof(*cand), cmp_newest_first);
    for (size_t i = 0; i < n && out[0] == '\0'; i++)
        if (info_scope_matches(st, cand[i], scope))
            snprintf(out, cap, "%s", cand[i]->name);
    free(cand);
    cairn_backup_list_free(&l);
    if (out[0] == '\0') {
        char *want = engine_identity_text(kind, source, scope);
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND,
                           "no parent for an incremental backup (--since): no complete %s in "
                           "'%s'",
                           want, cairn_storage_url(st));
        free(want);
    }
    return rc;
}

/* With sel->has_since, find the parent (res->parent) among the backups of kind and source;
 * with none and full_if_no_parent, sel becomes a full backup. */
int engine_choose_parent(struct cairn_storage *st, const char *kind, const char *source,
                         const json_t *scope, int full_if_no_parent,
                         struct cairn_source_select *sel, struct cairn_engine_backup_result *res,
                         struct cairn_err *err)
{
    if (!sel->has_since)
        return CAIRN_OK;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = find_parent(st, kind, source, scope, res->parent, sizeof(res->parent), &e);
    if (rc == CAIRN_E_NOTFOUND && full_if_no_parent) {
        cairn_warn(ENGINE_LOGC, "%s: taking a full backup (--full-if-no-parent)", e.msg);
        sel->has_since = 0;
        res->full_no_parent = 1;
        return CAIRN_OK;
    }
    if (rc == CAIRN_E_NOTFOUND)
        return cairn_err_set(err, rc, "%s: take a full backup first, or pass --full-if-no-parent",
                             e.msg);
    cairn_err_copy(err, &e);
    return rc;
}

static int backup_local(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                        struct engine_progress *prog, struct cairn_engine_backup_result *res,
                        struct cairn_err *err)
{
    if (o->db != NULL || o->rp != NULL || o->has_since || o->has_start || o->has_end)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --rp, --since, --start and --end apply to snapshot "
                             "services, not to the local path '%s'",
                             o->source);
    struct cairn_path_stats stats = {0};
    struct cairn_path_opts po = {auto_opts, o->parallelism, engine_path_progress, prog};
    po.stats = &stats;
    po.cancel = o->cancel;
    po.file_done = engine_path_file_done;
    po.force_read = o->force_read;
    int rc = o->name != NULL ? cairn_storage_backup_path(st, res->name, o->source, &po, err)
                             : cairn_storage_backup_path_auto(
                                   st, NULL, res->name, sizeof(res->name), o->source, &po, err);
    res->vanished = stats.vanished;
    res->changed = stats.changed;
    res->unchanged_files = stats.unchanged_files;
    res->unchanged_bytes = stats.unchanged_bytes;
    if (rc != CAIRN_OK)
        return rc;
    return engine_backup_summary(st, res, err);
}

int engine_backup_summary(struct cairn_storage *st, struct cairn_engine_backup_result *res,
                          struct cairn_err *err)
{
    /* The backup is complete: a late signal must not turn the summary into a failure. */
    cairn_storage_set_cancel(st, NULL);
    struct cairn_backup *b;
    int rc = cairn_storage_open_backup(st, res->name, &b, err);
    if (rc != CAIRN_OK)
        return rc;
    res->files = cairn_backup_file_count(b);
    for (size_t i = 0; i < res->files; i++)
        res->bytes += cairn_backup_file_at(b, i)->logical_size;
    cairn_backup_free(b);
    return CAIRN_OK;
}

int cairn_engine_backup(const struct cairn_engine_backup_opts *o,
                        struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    memset(res, 0, sizeof(*res));
    engine_sources_init();
    uint64_t t0 = mono_ns();
    if (o->source == NULL || o->storage_url == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup needs a source and a storage URL");
    char plain[4096];
    struct cairn_engine_backup_opts po = *o;
    po.source = engine_source_plain(o->source, plain, sizeof(plain));
    o = &po;
    if (o->rp != NULL && o->db == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "a retention policy filter needs a database");
    if (o->has_since && (o->has_start || o->has_end))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "a backup is incremental (--since) or time-bounded (--start, "
                             "--end), not both");
    if (o->has_start && o->has_end &&
        (o->start_sec > o->end_sec || (o->start_sec == o->end_sec && o->start_nsec > o->end_nsec)))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "the window of a time-bounded backup ends "
                             "(--end) before it starts (--start)");
    /* A default name is made when the backup starts (cairn_storage_start_auto). */
    if (o->name != NULL && strlen(o->name) >= sizeof(res->name))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup name of %zu characters: at most %zu",
                             strlen(o->name), sizeof(res->name) - 1);
    if (o->name != NULL && !cairn_name_valid(o->name))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "invalid backup name '%s': use A-Z a-z 0-9 . _ - + @ =, not "
                             "starting with '.'",
                             o->name);
    if (o->name != NULL)
        snprintf(res->name, sizeof(res->name), "%s", o->name);
    struct cairn_storage *st;
    int rc = cairn_storage_open(o->storage_url, &st, err);
    if (rc == CAIRN_OK && o->secret != NULL)
        rc = cairn_storage_set_secret(st, o->secret, err);
    /* Before the source is asked for anything: a new location must be a repository. */
    if (rc == CAIRN_OK)
        rc = cairn_storage_check_new_backup(st, err);
    if (rc != CAIRN_OK) {
        cairn_storage_free(st);
        return rc;
    }
    cairn_storage_set_cancel(st, o->cancel);
    cairn_storage_set_lock_wait(st, o->lock_wait_ms);
    cairn_storage_set_commit_check(st, o->commit_check, o->commit_check_ctx);
    cairn_storage_set_rate_limit(st, o->rate_limit);
    struct engine_progress prog = {
        PTHREAD_MUTEX_INITIALIZER, o->progress, o->progress_ctx, o->cancel, 0, 0};
    /* Every source but a local path through its driver: influxdb:// (or HOST:PORT), etcd://,
     * redis://, exec:... */
    rc = cairn_source_driver_for(o->source) == NULL && is_local_source(o->source)
             ? backup_local(st, o, &prog, res, err)
             : engine_backup_source(st, o, &prog, res, err);
    cairn_storage_free(st);
    res->seconds = (double)(mono_ns() - t0) / 1e9;
    char shown[4096]; /* logs never show a source's password */
    if (cairn_source_redact(o->source, shown, sizeof(shown)) != CAIRN_OK)
        snprintf(shown, sizeof(shown), "(redacted)");
    if (rc == CAIRN_OK)
        cairn_info(ENGINE_LOGC, "backup '%s' of %s: %u shards, %llu bytes in %.1f s", res->name,
                   shown, res->shards, (unsigned long long)res->bytes, res->seconds);
    return rc;
}
