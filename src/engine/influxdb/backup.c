/* An influxdb:// backup: the metastore, then every shard the service lists (parallel), each
 * into its own file, then the MANIFEST meta that describes them (docs/PROTOCOL.md). The
 * engine started the backup and chose its parent; it ends or aborts it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/pool.h"
#include "common/util.h"
#include "engine/influxdb/influxdb.h"

#define LOGC "backup"

/* zstd level 1: on log-like text it compresses as well as level 3 (4.32x vs 4.10x on the bench
 * data) at 1.5-2.5x the speed; see docs/PERFORMANCE.md. The metastore always compresses. */
static const struct cairn_file_opts zstd_opts = {CAIRN_COMPRESS_ZSTD, 1, 1, 0};
/* Shards: zstd only where it pays. TSM saves 3 % for three times the work of a hashed copy,
 * so shards of compressed TSM are stored as they come. */
static const struct cairn_file_opts auto_opts = {CAIRN_COMPRESS_AUTO, 1, 1, 0};

struct shard_job {
    struct cairn_influx_shard_ref ref;
    char file[64];
    char item[512];
    uint64_t bytes;
    int rc;
    struct cairn_err err;
    /* shared */
    struct cairn_backup *b;
    const struct influxdb_src *s;
    const struct cairn_influx_time *since;
    const struct cairn_influx_time *start, *end; /* an export: both set */
};

static void shard_job_run(void *arg)
{
    struct shard_job *j = arg;
    struct cairn_writer *w = NULL;
    const struct cairn_influx_client *c = &j->s->client;
    if (influxdb_cancelled(j->s)) {
        j->rc = cairn_err_set(&j->err, CAIRN_E_CANCELLED, "cancelled");
        return;
    }
    j->rc = cairn_backup_add_file_opts(j->b, j->file, -1, &auto_opts, &w, &j->err);
    if (j->rc != CAIRN_OK)
        return;
    w = influxdb_progress_writer(j->s, w, "shard", j->item);
    j->rc = j->start != NULL ? cairn_influx_shard_export(c, j->ref.db, j->ref.rp, j->ref.id,
                                                         j->start, j->end, w, &j->bytes, &j->err)
                             : cairn_influx_shard_backup(c, j->ref.db, j->ref.rp, j->ref.id,
                                                         j->since, w, &j->bytes, &j->err);
    if (j->rc == CAIRN_OK)
        j->rc = cairn_writer_close(w, &j->err);
    cairn_writer_free(w);
    if (j->rc != CAIRN_OK)
        cairn_err_wrap(&j->err, j->rc, "shard %s", j->item);
    else
        influxdb_report(j->s, "shard", j->item, 0, 1, 0);
}

/* The window of a time-bounded backup, {"start": T, "end": T} (a side left open is absent);
 * NULL for other backups. New reference. */
static json_t *backup_window(const struct cairn_source_select *sel)
{
    if (!sel->has_start && !sel->has_end)
        return NULL;
    json_t *w = json_object();
    char t[64];
    if (sel->has_start) {
        format_rfc3339(sel->start_sec, sel->start_nsec, t, sizeof(t));
        json_object_set_new(w, "start", json_string(t));
    }
    if (sel->has_end) {
        format_rfc3339(sel->end_sec, sel->end_nsec, t, sizeof(t));
        json_object_set_new(w, "end", json_string(t));
    }
    return w;
}

static json_t *backup_meta(const struct cairn_source_select *sel, struct shard_job *jobs, size_t n,
                           unsigned *ndb)
{
    json_t *meta = json_object(), *dbs = json_object(), *shards = json_array();
    char t[64];
    json_object_set_new(meta, "format", json_string("influxdb-snapshot/1"));
    if (sel->has_since) {
        format_rfc3339(sel->since_sec, sel->since_nsec, t, sizeof(t));
        json_object_set_new(meta, "since", json_string(t));
    }
    json_t *win = backup_window(sel);
    if (win != NULL)
        json_object_update(meta, win);
    json_decref(win);
    if (sel->db != NULL)
        json_object_set_new(meta, "filter_db", json_string(sel->db));
    if (sel->rp != NULL)
        json_object_set_new(meta, "filter_rp", json_string(sel->rp));
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

/* The metastore first: it describes every shard taken after it. */
static int backup_metastore(const struct influxdb_src *s, struct cairn_backup *b,
                            struct cairn_err *err)
{
    struct cairn_writer *w;
    uint64_t bytes = 0;
    int rc = cairn_backup_add_file_opts(b, INFLUXDB_META_FILE, -1, &zstd_opts, &w, err);
    if (rc != CAIRN_OK)
        return rc;
    w = influxdb_progress_writer(s, w, "meta", NULL);
    rc = cairn_influx_metastore_backup(&s->client, w, &bytes, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

/* Run the jobs, parallelism at a time: the first failure is the result, later ones (other
 * than cancellations) are logged. */
static int shard_jobs_run(struct shard_job *jobs, size_t n, unsigned parallelism,
                          struct cairn_err *err)
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
                cairn_warn(LOGC, "also failed: %s", jobs[i].err.msg);
            }
        }
    }
    return rc;
}

/* Jobs for every shard listed (_internal only when asked for by name); refs are moved. */
static size_t shard_jobs_new(const struct influxdb_src *s, struct cairn_backup *b,
                             struct cairn_influx_shard_ref *refs, size_t nrefs,
                             const struct cairn_influx_time *t, struct shard_job *jobs)
{
    const struct cairn_source_select *sel = influxdb_select(s);
    int window = sel->has_start || sel->has_end;
    size_t njobs = 0;
    for (size_t i = 0; i < nrefs; i++) {
        if (sel->db == NULL && strcmp(refs[i].db, "_internal") == 0)
            continue; /* monitoring data: only when asked for by name */
        struct shard_job *j = &jobs[njobs++];
        j->ref = refs[i];
        refs[i].db = refs[i].rp = NULL; /* moved */
        snprintf(j->file, sizeof(j->file), "s%llu.tar", (unsigned long long)j->ref.id);
        snprintf(j->item, sizeof(j->item), "%s/%s/%llu", j->ref.db, j->ref.rp,
                 (unsigned long long)j->ref.id);
        j->b = b;
        j->s = s;
        j->since = sel->has_since ? &t[0] : NULL;
        j->start = window ? &t[1] : NULL;
        j->end = window ? &t[2] : NULL;
    }
    return njobs;
}

/* Every shard into its own file, then the MANIFEST meta that describes them. */
static int backup_shards(const struct influxdb_src *s, struct cairn_backup *b,
                         struct cairn_err *err)
{
    const struct cairn_source_select *sel = influxdb_select(s);
    /* since, start, end. An open side of a window is the end of the nanosecond range:
     * influxd takes Go's zero time as a time, not as "open". */
    struct cairn_influx_time t[3] = {
        {sel->since_sec, sel->since_nsec}, {-9223372037LL, 145224192}, {9223372036LL, 854775807}};
    if (sel->has_start)
        t[1] = (struct cairn_influx_time){sel->start_sec, sel->start_nsec};
    if (sel->has_end)
        t[2] = (struct cairn_influx_time){sel->end_sec, sel->end_nsec};
    struct cairn_influx_shard_ref *refs = NULL;
    size_t nrefs = 0;
    int rc =
        cairn_influx_shard_list(&s->client, sel->db, sel->db ? sel->rp : NULL, &refs, &nrefs, err);
    if (rc != CAIRN_OK)
        return rc;
    struct shard_job *jobs = xcalloc(nrefs ? nrefs : 1, sizeof(*jobs));
    size_t njobs = shard_jobs_new(s, b, refs, nrefs, t, jobs);
    cairn_influx_shard_refs_free(refs, nrefs);
    influxdb_report(s, "shard", NULL, 0, 0, (unsigned)njobs);
    rc = shard_jobs_run(jobs, njobs, s->o.parallelism, err);
    if (rc == CAIRN_OK && influxdb_cancelled(s))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup cancelled");
    if (rc == CAIRN_OK) {
        unsigned ndb;
        json_t *meta = backup_meta(sel, jobs, njobs, &ndb);
        rc = cairn_backup_set_meta(b, meta, err);
        json_decref(meta);
        if (s->o.databases != NULL)
            *s->o.databases = ndb;
        if (s->o.items != NULL)
            *s->o.items = (unsigned)njobs;
    }
    for (size_t i = 0; i < njobs; i++) {
        free(jobs[i].ref.db);
        free(jobs[i].ref.rp);
    }
    free(jobs);
    return rc;
}

int influxdb_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    struct influxdb_src *s = state;
    json_t *scope = engine_influxdb_driver.scope(s);
    int rc = cairn_backup_set_kind(b, INFLUXDB_KIND, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_scope(b, scope, err);
    json_decref(scope);
    if (rc == CAIRN_OK)
        rc = backup_metastore(s, b, err);
    if (rc == CAIRN_OK)
        rc = backup_shards(s, b, err);
    return rc;
}
