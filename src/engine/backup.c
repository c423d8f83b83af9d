/* cairn_engine_backup: an InfluxDB-style backup of a snapshot service through the snapshot
 * client into backup storage, or of a local path through the storage module's path backup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/repo.h"
#include "cairn/influx.h"
#include "common/pool.h"
#include "common/util.h"
#include "internal.h"

static int is_local_source(const char *s)
{
    return s[0] == '/' || s[0] == '.' || access(s, F_OK) == 0;
}

struct shard_job {
    struct cairn_influx_shard_ref ref;
    char file[64];
    char item[512];
    uint64_t bytes;
    int rc;
    struct cairn_err err;
    /* shared */
    struct cairn_backup *b;
    const struct cairn_influx_client *client;
    const struct cairn_influx_time *since;
    struct engine_progress *prog;
};

/* zstd level 1: on log-like text it compresses as well as level 3 (4.32x vs 4.10x on the bench
 * data) at 1.5-2.5x the speed; see docs/PERFORMANCE.md. The metastore always compresses. */
static const struct cairn_file_opts zstd_opts = {CAIRN_COMPRESS_ZSTD, 1, 1, 0};
/* Files and shards: zstd only where it pays. TSM saves 3 % for three times the work of a
 * hashed copy, so shards of compressed TSM are stored as they come. */
static const struct cairn_file_opts auto_opts = {CAIRN_COMPRESS_AUTO, 1, 1, 0};

static void shard_job_run(void *arg)
{
    struct shard_job *j = arg;
    struct cairn_writer *w = NULL;
    if (engine_cancelled(j->prog->cancel)) {
        j->rc = cairn_err_set(&j->err, CAIRN_E_CANCELLED, "cancelled");
        return;
    }
    j->rc = cairn_backup_add_file_opts(j->b, j->file, -1, &auto_opts, &w, &j->err);
    if (j->rc != CAIRN_OK)
        return;
    w = engine_progress_writer_new(w, j->prog, "shard", j->item);
    j->rc = cairn_influx_shard_backup(j->client, j->ref.db, j->ref.rp, j->ref.id, j->since, w,
                                      &j->bytes, &j->err);
    if (j->rc == CAIRN_OK)
        j->rc = cairn_writer_close(w, &j->err);
    cairn_writer_free(w);
    if (j->rc != CAIRN_OK)
        cairn_err_wrap(&j->err, j->rc, "shard %s", j->item);
    else
        engine_progress_report(j->prog, "shard", j->item, 0, 1);
}

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
static int find_parent(struct cairn_storage *st, const char *source, const json_t *scope, char *out,
                       size_t cap, struct cairn_err *err)
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
            strcmp(l.items[i].kind, ENGINE_KIND) == 0 && strcmp(l.items[i].source, source) == 0 &&
            strlen(l.items[i].name) < cap) /* never a truncated name */
            cand[n++] = &l.items[i];
    qsort(cand, n, sizeof(*cand), cmp_newest_first);
    for (size_t i = 0; i < n && out[0] == '\0'; i++)
        if (info_scope_matches(st, cand[i], scope))
            snprintf(out, cap, "%s", cand[i]->name);
    free(cand);
    cairn_backup_list_free(&l);
    if (out[0] == '\0') {
        char *want = engine_identity_text(ENGINE_KIND, source, scope);
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND,
                           "no parent for an incremental backup (--since): no complete %s in "
                           "'%s'",
                           want, cairn_storage_url(st));
        free(want);
    }
    return rc;
}

/* With has_since, find the parent (res->parent); with none and full_if_no_parent, o becomes a
 * full backup. */
static int choose_parent(struct cairn_storage *st, struct cairn_engine_backup_opts *o,
                         const json_t *scope, struct cairn_engine_backup_result *res,
                         struct cairn_err *err)
{
    if (!o->has_since)
        return CAIRN_OK;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = find_parent(st, o->source, scope, res->parent, sizeof(res->parent), &e);
    if (rc == CAIRN_E_NOTFOUND && o->full_if_no_parent) {
        cairn_warn(ENGINE_LOGC, "%s: taking a full backup (--full-if-no-parent)", e.msg);
        o->has_since = 0;
        res->full_no_parent = 1;
        return CAIRN_OK;
    }
    if (rc == CAIRN_E_NOTFOUND)
        return cairn_err_set(err, rc, "%s: take a full backup first, or pass --full-if-no-parent",
                             e.msg);
    cairn_err_copy(err, &e);
    return rc;
}

static json_t *backup_meta(const struct cairn_engine_backup_opts *o, struct shard_job *jobs,
                           size_t n, unsigned *ndb)
{
    json_t *meta = json_object(), *dbs = json_object(), *shards = json_array();
    char t[64];
    json_object_set_new(meta, "format", json_string("influxdb-snapshot/1"));
    if (o->has_since) {
        format_rfc3339(o->since_sec, o->since_nsec, t, sizeof(t));
        json_object_set_new(meta, "since", json_string(t));
    }
    if (o->db != NULL)
        json_object_set_new(meta, "filter_db", json_string(o->db));
    if (o->rp != NULL)
        json_object_set_new(meta, "filter_rp", json_string(o->rp));
    for (size_t i = 0; i < n; i++) {
        const struct cairn_influx_shard_ref *r = &jobs[i].ref;
        json_t *d = json_object_get(dbs, r->db);
        if (d == NULL) {
            d = json_object();
            json_object_set_new(dbs, r->db, d);
        }
        json_t *ids = json_object_get(d, r->rp);
        if (ids == NULL) {
            ids = json_array();
            json_object_set_new(d, r->rp, ids);
        }
        json_array_append_new(ids, json_integer((json_int_t)r->id));
        json_array_append_new(shards, json_pack("{s:I, s:s, s:s, s:s, s:I}", "id",
                                                (json_int_t)r->id, "db", r->db, "rp", r->rp, "file",
                                                jobs[i].file, "bytes", (json_int_t)jobs[i].bytes));
    }
    *ndb = (unsigned)json_object_size(dbs);
    json_object_set_new(meta, "databases", dbs);
    json_object_set_new(meta, "shards", shards);
    return meta;
}

/* Start the backup (named in res->name) and record what it is: kind, source, scope and, for
 * an incremental backup, its parent. *eff is o, made a full backup when o has no parent and
 * may be taken in full. On failure after the start, *b is the started backup to abort. */
static int service_start(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                         struct cairn_engine_backup_opts *eff, struct cairn_backup **b,
                         struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    *eff = *o;
    int rc = o->name != NULL
                 ? cairn_storage_start(st, res->name, b, err)
                 : cairn_storage_start_auto(st, NULL, res->name, sizeof(res->name), b, err);
    if (rc != CAIRN_OK)
        return rc;
    json_t *scope = engine_scope_new(o->db, o->rp);
    /* The parent is chosen under the shared lock the start took: a prune (exclusive) cannot
     * remove it between the choice and our MANIFEST naming it. */
    rc = choose_parent(st, eff, scope, res, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_kind(*b, ENGINE_KIND, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_source(*b, o->source, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_scope(*b, scope, err);
    json_decref(scope);
    if (rc == CAIRN_OK && res->parent[0] != '\0')
        rc = cairn_backup_set_parent(*b, res->parent, err);
    return rc;
}

/* The metastore first: it describes every shard taken after it. */
static int service_metastore(const struct cairn_influx_client *client, struct cairn_backup *b,
                             struct engine_progress *prog, struct cairn_engine_backup_result *res,
                             struct cairn_err *err)
{
    struct cairn_writer *w;
    uint64_t bytes = 0;
    int rc = cairn_backup_add_file_opts(b, ENGINE_META_FILE, -1, &zstd_opts, &w, err);
    if (rc != CAIRN_OK)
        return rc;
    w = engine_progress_writer_new(w, prog, "meta", NULL);
    rc = cairn_influx_metastore_backup(client, w, &bytes, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    res->bytes += bytes;
    return rc;
}

/* Run the jobs, parallelism at a time: the first failure is the result, later ones (other
 * than cancellations) are logged. */
static int shard_jobs_run(struct shard_job *jobs, size_t n, unsigned parallelism,
                          struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    struct pool *pool = pool_new(parallelism ? parallelism : 4, 0);
    for (size_t i = 0; i < n; i++)
        pool_submit(pool, shard_job_run, &jobs[i]);
    pool_free(pool);
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].rc != CAIRN_OK) {
            if (rc == CAIRN_OK) {
                cairn_err_copy(err, &jobs[i].err);
                rc = jobs[i].rc;
            } else if (jobs[i].rc != CAIRN_E_CANCELLED) {
                cairn_warn(ENGINE_LOGC, "also failed: %s", jobs[i].err.msg);
            }
        }
        res->bytes += jobs[i].bytes;
    }
    return rc;
}

/* Every shard the service lists (_internal only when asked for by name) into its own file,
 * then the MANIFEST meta that describes them. */
static int service_shards(const struct cairn_influx_client *client, struct cairn_backup *b,
                          const struct cairn_engine_backup_opts *o, struct engine_progress *prog,
                          struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    struct cairn_influx_shard_ref *refs = NULL;
    size_t nrefs = 0, njobs = 0;
    struct cairn_influx_time since = {o->since_sec, o->since_nsec};
    int rc = cairn_influx_shard_list(client, o->db, o->db ? o->rp : NULL, &refs, &nrefs, err);
    if (rc != CAIRN_OK)
        return rc;
    struct shard_job *jobs = xcalloc(nrefs ? nrefs : 1, sizeof(*jobs));
    for (size_t i = 0; i < nrefs; i++) {
        if (o->db == NULL && strcmp(refs[i].db, "_internal") == 0)
            continue; /* monitoring data: only when asked for by name */
        struct shard_job *j = &jobs[njobs++];
        j->ref = refs[i];
        refs[i].db = refs[i].rp = NULL; /* moved */
        snprintf(j->file, sizeof(j->file), "s%llu.tar", (unsigned long long)j->ref.id);
        snprintf(j->item, sizeof(j->item), "%s/%s/%llu", j->ref.db, j->ref.rp,
                 (unsigned long long)j->ref.id);
        j->b = b;
        j->client = client;
        j->since = o->has_since ? &since : NULL;
        j->prog = prog;
    }
    cairn_influx_shard_refs_free(refs, nrefs);
    prog->total = (unsigned)njobs;
    rc = shard_jobs_run(jobs, njobs, o->parallelism, res, err);
    if (rc == CAIRN_OK && engine_cancelled(o->cancel))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup cancelled");
    if (rc == CAIRN_OK) {
        json_t *meta = backup_meta(o, jobs, njobs, &res->databases);
        rc = cairn_backup_set_meta(b, meta, err);
        json_decref(meta);
        res->shards = (unsigned)njobs;
        res->files = njobs + 1;
    }
    for (size_t i = 0; i < njobs; i++) {
        free(jobs[i].ref.db);
        free(jobs[i].ref.rp);
    }
    free(jobs);
    return rc;
}

static int backup_service(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                          struct cairn_tls *tls, struct engine_progress *prog,
                          struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    struct cairn_influx_client client = {o->source, o->connect_timeout_ms, o->io_timeout_ms,
                                         o->cancel, tls};
    struct cairn_engine_backup_opts eff; /* o, full when no parent and full_if_no_parent */
    struct cairn_backup *b = NULL;
    int rc = service_start(st, o, &eff, &b, res, err);
    if (rc == CAIRN_OK)
        rc = service_metastore(&client, b, prog, res, err);
    if (rc == CAIRN_OK)
        rc = service_shards(&client, b, &eff, prog, res, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_end(b, err);
    if (rc != CAIRN_OK && b != NULL) {
        struct cairn_err ae;
        if (cairn_backup_abort(b, &ae) != CAIRN_OK)
            cairn_warn(ENGINE_LOGC, "could not remove failed backup '%s': %s", res->name, ae.msg);
        cairn_err_wrap(err, rc, "backup '%s' of %s", res->name, o->source);
    }
    cairn_backup_free(b);
    return rc;
}

static int backup_local(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                        struct engine_progress *prog, struct cairn_engine_backup_result *res,
                        struct cairn_err *err)
{
    if (o->db != NULL || o->rp != NULL || o->has_since)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --rp and --since apply to snapshot "
                             "services, not to the local path '%s'",
                             o->source);
    struct cairn_path_stats stats = {0};
    struct cairn_path_opts po = {auto_opts, o->parallelism, engine_path_progress, prog};
    po.stats = &stats;
    po.cancel = o->cancel;
    int rc = o->name != NULL ? cairn_storage_backup_path(st, res->name, o->source, &po, err)
                             : cairn_storage_backup_path_auto(
                                   st, NULL, res->name, sizeof(res->name), o->source, &po, err);
    res->vanished = stats.vanished;
    res->changed = stats.changed;
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
    uint64_t t0 = mono_ns();
    if (o->source == NULL || o->storage_url == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup needs a source and a storage URL");
    char plain[4096];
    struct cairn_engine_backup_opts po = *o;
    po.source = engine_source_plain(o->source, plain, sizeof(plain));
    o = &po;
    if (o->rp != NULL && o->db == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "a retention policy filter needs a database");
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
    struct cairn_tls *tls = NULL;
    if (o->tls != NULL && !is_local_source(o->source) &&
        cairn_source_driver_for(o->source) == NULL) {
        int rc = cairn_influx_tls_client_new(o->tls, &tls, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    struct cairn_storage *st;
    int rc = cairn_storage_open(o->storage_url, &st, err);
    if (rc == CAIRN_OK && o->secret != NULL &&
        (rc = cairn_storage_set_secret(st, o->secret, err)) != CAIRN_OK)
        cairn_storage_free(st);
    if (rc != CAIRN_OK) {
        cairn_influx_tls_free(tls);
        return rc;
    }
    cairn_storage_set_cancel(st, o->cancel);
    cairn_storage_set_lock_wait(st, o->lock_wait_ms);
    struct engine_progress prog = {
        PTHREAD_MUTEX_INITIALIZER, o->progress, o->progress_ctx, o->cancel, 0, 0};
    if (cairn_source_driver_for(o->source) != NULL)
        rc = engine_backup_source(st, o, &prog, res, err); /* etcd://, redis://, exec:... */
    else
        rc = is_local_source(o->source) ? backup_local(st, o, &prog, res, err)
                                        : backup_service(st, o, tls, &prog, res, err);
    cairn_storage_free(st);
    cairn_influx_tls_free(tls);
    res->seconds = (double)(mono_ns() - t0) / 1e9;
    char shown[4096]; /* logs never show a source's password */
    if (cairn_source_redact(o->source, shown, sizeof(shown)) != CAIRN_OK)
        snprintf(shown, sizeof(shown), "(redacted)");
    if (rc == CAIRN_OK)
        cairn_info(ENGINE_LOGC, "backup '%s' of %s: %u shards, %llu bytes in %.1f s", res->name,
                   shown, res->shards, (unsigned long long)res->bytes, res->seconds);
    return rc;
}
