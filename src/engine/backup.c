/* cairn_engine_backup / cairn_engine_restore: InfluxDB-style backups through the snapshot client
 * into backup storage, and back out again (online through requests 6/7, offline into the
 * legacy `influxd backup` layout). Local paths go to the storage module's path helpers. */
#define _GNU_SOURCE
#include "cairn/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/service.h"
#include "cairn/storage.h"
#include "common/pool.h"
#include "common/util.h"

#define LOGC      "backup"
#define META_FILE "meta"
#define META_MAX  (256u << 20)
#define CHAIN_MAX 1000
#define KIND      "influxdb"

static int is_local_source(const char *s)
{
    return s[0] == '/' || s[0] == '.' || access(s, F_OK) == 0;
}

/* The flag is set from signal handlers and other threads: read it atomically. */
static int cancelled(const volatile int *flag)
{
    return flag != NULL && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0;
}

/* ---- progress + cancel stage ---- */

struct progress {
    pthread_mutex_t mu;
    cairn_engine_progress_fn fn;
    void *ctx;
    const volatile int *cancel;
    unsigned done, total;
};

static void progress_report(struct progress *p, const char *phase, const char *item, uint64_t bytes,
                            int finished)
{
    if (p->fn == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    if (finished)
        p->done++;
    struct cairn_engine_progress ev = {phase, item, bytes, p->done, p->total};
    p->fn(p->ctx, &ev);
    pthread_mutex_unlock(&p->mu);
}

struct prog_writer {
    struct cairn_writer base;
    struct progress *p;
    const char *phase, *item;
};

static int prog_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct prog_writer *pw = (struct prog_writer *)w;
    if (cancelled(pw->p->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_writer_write(w->next, buf, len, err);
    if (rc == CAIRN_OK)
        progress_report(pw->p, pw->phase, pw->item, len, 0);
    return rc;
}

static const struct cairn_writer_ops prog_writer_ops = {"progress", prog_write, NULL, NULL};

static struct cairn_writer *prog_writer_new(struct cairn_writer *next, struct progress *p,
                                            const char *phase, const char *item)
{
    struct prog_writer *pw = cairn_xcalloc(1, sizeof(*pw));
    cairn_writer_init(&pw->base, &prog_writer_ops, next);
    pw->p = p;
    pw->phase = phase;
    pw->item = item;
    return &pw->base;
}

/* ---- backup ---- */

struct shard_job {
    struct cairn_snap_shard_ref ref;
    char file[64];
    char item[512];
    uint64_t bytes;
    int rc;
    struct cairn_err err;
    /* shared */
    struct cairn_backup *b;
    const struct cairn_snap_client *client;
    const struct cairn_snap_time *since;
    struct progress *prog;
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
    if (cancelled(j->prog->cancel)) {
        j->rc = cairn_err_set(&j->err, CAIRN_E_CANCELLED, "cancelled");
        return;
    }
    j->rc = cairn_backup_add_file_opts(j->b, j->file, -1, &auto_opts, &w, &j->err);
    if (j->rc != CAIRN_OK)
        return;
    w = prog_writer_new(w, j->prog, "shard", j->item);
    j->rc = cairn_snap_shard_backup(j->client, j->ref.db, j->ref.rp, j->ref.id, j->since, w,
                                    &j->bytes, &j->err);
    if (j->rc == CAIRN_OK)
        j->rc = cairn_writer_close(w, &j->err);
    cairn_writer_free(w);
    if (j->rc != CAIRN_OK)
        cairn_err_wrap(&j->err, j->rc, "shard %s", j->item);
    else
        progress_report(j->prog, "shard", j->item, 0, 1);
}

/* ---- identity: kind, source and scope ---- */

/* The part of the source an influxdb backup holds: {"db": NAME|null, "rp": NAME|null}, null
 * meaning every one (every database but _internal). New reference. */
static json_t *influx_scope(const char *db, const char *rp)
{
    return json_pack("{s:s?, s:s?}", "db", db, "rp", rp);
}

/* b's scope, new reference. MANIFESTs written before scopes existed hold an influxdb backup's
 * filters in meta (filter_db, filter_rp), which say the same. NULL: none known. */
static json_t *scope_of(struct cairn_backup *b)
{
    json_t *s = cairn_backup_scope(b);
    if (s != NULL)
        return json_incref(s);
    if (strcmp(cairn_backup_kind(b), KIND) != 0)
        return NULL;
    json_t *m = cairn_backup_meta(b);
    return influx_scope(json_string_value(json_object_get(m, "filter_db")),
                        json_string_value(json_object_get(m, "filter_rp")));
}

/* Does a backup of scope parent hold everything a backup of scope child does? An influxdb
 * parent of every database (or of the child's database, every retention policy) does: a chain
 * that restores the child's databases whole. Other scopes must be equal. */
static int scope_covers(const json_t *parent, const json_t *child)
{
    if (parent == NULL || child == NULL)
        return parent == NULL && child == NULL;
    if (json_equal(parent, child))
        return 1;
    const json_t *pdb = json_object_get(parent, "db"), *prp = json_object_get(parent, "rp"),
                 *cdb = json_object_get(child, "db"), *crp = json_object_get(child, "rp");
    if (json_object_size(parent) != 2 || json_object_size(child) != 2 || !json_is_null(prp) ||
        !json_is_string(cdb) || !(json_is_null(crp) || json_is_string(crp)))
        return 0;
    if (json_is_null(pdb)) /* every database but _internal */
        return strcmp(json_string_value(cdb), "_internal") != 0;
    return json_is_string(pdb) && json_equal(pdb, cdb);
}

/* "influxdb backup of HOST:PORT (database 'x', all retention policies)", for messages. */
static char *identity_text(const char *kind, const char *source, const json_t *scope)
{
    char *sc;
    const json_t *db = json_object_get(scope, "db"), *rp = json_object_get(scope, "rp");
    if (strcmp(kind, KIND) == 0 && scope != NULL && json_object_size(scope) == 2 &&
        (json_is_null(db) || json_is_string(db)) && (json_is_null(rp) || json_is_string(rp))) {
        if (json_is_null(db))
            sc = cairn_xstrdup("all databases");
        else if (json_is_null(rp))
            sc = cairn_xasprintf("database '%s', all retention policies", json_string_value(db));
        else
            sc = cairn_xasprintf("database '%s', retention policy '%s'", json_string_value(db),
                                 json_string_value(rp));
    } else if (scope != NULL) {
        char *j = json_dumps(scope, JSON_COMPACT | JSON_SORT_KEYS);
        sc = cairn_xasprintf("scope %s", j ? j : "?");
        free(j);
    } else {
        sc = cairn_xstrdup("no recorded scope");
    }
    char *out = cairn_xasprintf("%s backup of %s (%s)", kind, source, sc);
    free(sc);
    return out;
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
            cairn_warn(LOGC, "not a parent candidate: %s", e.msg);
            return 0;
        }
        have = scope_of(b);
        cairn_backup_free(b);
    }
    int eq = scope_covers(have, scope);
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
    struct cairn_backup_info **cand = cairn_xcalloc(l.count ? l.count : 1, sizeof(*cand));
    size_t n = 0;
    for (size_t i = 0; i < l.count; i++)
        if (l.items[i].status == CAIRN_BACKUP_COMPLETE && l.items[i].kind != NULL &&
            strcmp(l.items[i].kind, KIND) == 0 && strcmp(l.items[i].source, source) == 0 &&
            strlen(l.items[i].name) < cap) /* never a truncated name */
            cand[n++] = &l.items[i];
    qsort(cand, n, sizeof(*cand), cmp_newest_first);
    for (size_t i = 0; i < n && out[0] == '\0'; i++)
        if (info_scope_matches(st, cand[i], scope))
            snprintf(out, cap, "%s", cand[i]->name);
    free(cand);
    cairn_backup_list_free(&l);
    if (out[0] == '\0') {
        char *want = identity_text(KIND, source, scope);
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
        cairn_warn(LOGC, "%s: taking a full backup (--full-if-no-parent)", e.msg);
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
        cairn_format_rfc3339(o->since_sec, o->since_nsec, t, sizeof(t));
        json_object_set_new(meta, "since", json_string(t));
    }
    if (o->db != NULL)
        json_object_set_new(meta, "filter_db", json_string(o->db));
    if (o->rp != NULL)
        json_object_set_new(meta, "filter_rp", json_string(o->rp));
    for (size_t i = 0; i < n; i++) {
        const struct cairn_snap_shard_ref *r = &jobs[i].ref;
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

static int backup_local(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                        struct progress *prog, struct cairn_engine_backup_result *res,
                        struct cairn_err *err);

static void path_progress(void *arg, uint64_t bytes)
{
    progress_report(arg, "file", NULL, bytes, 0);
}

static int backup_service(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                          struct cairn_tls *tls, struct progress *prog,
                          struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    struct cairn_snap_client client = {o->source, o->connect_timeout_ms, o->io_timeout_ms,
                                       o->cancel, tls};
    struct cairn_backup *b = NULL;
    struct cairn_snap_shard_ref *refs = NULL;
    struct shard_job *jobs = NULL;
    size_t nrefs = 0, njobs = 0;
    struct cairn_writer *w = NULL;
    struct cairn_snap_time since = {o->since_sec, o->since_nsec};
    json_t *scope = influx_scope(o->db, o->rp);
    struct cairn_engine_backup_opts eff = *o; /* full when no parent and full_if_no_parent */
    int rc = o->name != NULL
                 ? cairn_storage_start(st, res->name, &b, err)
                 : cairn_storage_start_auto(st, NULL, res->name, sizeof(res->name), &b, err);
    if (rc != CAIRN_OK) {
        json_decref(scope);
        return rc;
    }
    /* The parent is chosen under the shared lock the start took: a prune (exclusive) cannot
     * remove it between the choice and our MANIFEST naming it. */
    rc = choose_parent(st, &eff, scope, res, err);
    o = &eff;
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_kind(b, KIND, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_source(b, o->source, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_scope(b, scope, err);
    json_decref(scope);
    if (rc == CAIRN_OK && res->parent[0] != '\0')
        rc = cairn_backup_set_parent(b, res->parent, err);

    /* The metastore first: it describes every shard taken after it. */
    uint64_t mbytes = 0;
    if (rc == CAIRN_OK)
        rc = cairn_backup_add_file_opts(b, META_FILE, -1, &zstd_opts, &w, err);
    if (rc == CAIRN_OK) {
        w = prog_writer_new(w, prog, "meta", NULL);
        rc = cairn_snap_metastore_backup(&client, w, &mbytes, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(w, err);
        cairn_writer_free(w);
        res->bytes += mbytes;
    }
    if (rc == CAIRN_OK)
        rc = cairn_snap_shard_list(&client, o->db, o->db ? o->rp : NULL, &refs, &nrefs, err);
    if (rc != CAIRN_OK)
        goto out;

    jobs = cairn_xcalloc(nrefs ? nrefs : 1, sizeof(*jobs));
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
        j->client = &client;
        j->since = o->has_since ? &since : NULL;
        j->prog = prog;
    }
    prog->total = (unsigned)njobs;
    struct cairn_pool *pool = cairn_pool_new(o->parallelism ? o->parallelism : 4, 0);
    for (size_t i = 0; i < njobs; i++)
        cairn_pool_submit(pool, shard_job_run, &jobs[i]);
    cairn_pool_free(pool);
    for (size_t i = 0; i < njobs; i++) {
        if (jobs[i].rc != CAIRN_OK) {
            if (rc == CAIRN_OK) {
                cairn_err_copy(err, &jobs[i].err);
                rc = jobs[i].rc;
            } else if (jobs[i].rc != CAIRN_E_CANCELLED) {
                cairn_warn(LOGC, "also failed: %s", jobs[i].err.msg);
            }
        }
        res->bytes += jobs[i].bytes;
    }
    if (rc == CAIRN_OK && cancelled(o->cancel))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup cancelled");
    if (rc != CAIRN_OK)
        goto out;
    json_t *meta = backup_meta(o, jobs, njobs, &res->databases);
    rc = cairn_backup_set_meta(b, meta, err);
    json_decref(meta);
    if (rc == CAIRN_OK)
        rc = cairn_backup_end(b, err);
    res->shards = (unsigned)njobs;
    res->files = njobs + 1;
out:
    if (rc != CAIRN_OK && b != NULL) {
        struct cairn_err ae;
        if (cairn_backup_abort(b, &ae) != CAIRN_OK)
            cairn_warn(LOGC, "could not remove failed backup '%s': %s", res->name, ae.msg);
        cairn_err_wrap(err, rc, "backup '%s' of %s", res->name, o->source);
    }
    cairn_backup_free(b);
    for (size_t i = 0; i < njobs; i++) {
        free(jobs[i].ref.db);
        free(jobs[i].ref.rp);
    }
    free(jobs);
    cairn_snap_shard_refs_free(refs, nrefs);
    return rc;
}

static int backup_local(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                        struct progress *prog, struct cairn_engine_backup_result *res,
                        struct cairn_err *err)
{
    if (o->db != NULL || o->rp != NULL || o->has_since)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --rp and --since apply to snapshot "
                             "services, not to the local path '%s'",
                             o->source);
    struct cairn_path_stats stats = {0};
    struct cairn_path_opts po = {auto_opts, o->parallelism, path_progress, prog};
    po.stats = &stats;
    po.cancel = o->cancel;
    int rc = o->name != NULL ? cairn_storage_backup_path(st, res->name, o->source, &po, err)
                             : cairn_storage_backup_path_auto(
                                   st, NULL, res->name, sizeof(res->name), o->source, &po, err);
    res->vanished = stats.vanished;
    res->changed = stats.changed;
    if (rc != CAIRN_OK)
        return rc;
    /* The backup is complete: a late signal must not turn the summary into a failure. */
    cairn_storage_set_cancel(st, NULL);
    struct cairn_backup *b;
    rc = cairn_storage_open_backup(st, res->name, &b, err);
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
    uint64_t t0 = cairn_mono_ns();
    if (o->source == NULL || o->storage_url == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup needs a source and a storage URL");
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
    if (o->tls != NULL && !is_local_source(o->source)) {
        int rc = cairn_tls_client_new(o->tls, &tls, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    struct cairn_storage *st;
    int rc = cairn_storage_open(o->storage_url, &st, err);
    if (rc != CAIRN_OK) {
        cairn_tls_free(tls);
        return rc;
    }
    cairn_storage_set_cancel(st, o->cancel);
    cairn_storage_set_lock_wait(st, o->lock_wait_ms);
    struct progress prog = {
        PTHREAD_MUTEX_INITIALIZER, o->progress, o->progress_ctx, o->cancel, 0, 0};
    rc = is_local_source(o->source) ? backup_local(st, o, &prog, res, err)
                                    : backup_service(st, o, tls, &prog, res, err);
    cairn_storage_free(st);
    cairn_tls_free(tls);
    res->seconds = (double)(cairn_mono_ns() - t0) / 1e9;
    if (rc == CAIRN_OK)
        cairn_info(LOGC, "backup '%s' of %s: %u shards, %llu bytes in %.1f s", res->name, o->source,
                   res->shards, (unsigned long long)res->bytes, res->seconds);
    return rc;
}

/* ---- restore ---- */

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

/* Every parent has its child's kind and source and covers its scope: a chain that mixes them
 * would restore without the data the child did not take again (databases outside a parent's
 * filter). */
static int chain_check(const struct chain *c, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t k = c->n; k-- > 1 && rc == CAIRN_OK;) {
        struct cairn_backup *child = c->b[k], *parent = c->b[k - 1];
        json_t *cs = scope_of(child), *ps = scope_of(parent);
        if (strcmp(cairn_backup_kind(child), cairn_backup_kind(parent)) != 0 ||
            strcmp(cairn_backup_source(child), cairn_backup_source(parent)) != 0 ||
            !scope_covers(ps, cs)) {
            char *ct = identity_text(cairn_backup_kind(child), cairn_backup_source(child), cs),
                 *pt = identity_text(cairn_backup_kind(parent), cairn_backup_source(parent), ps);
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

struct shard_ent {
    uint64_t id;
    const char *db, *rp, *file;
};

/* The shards recorded in a backup's MANIFEST meta, filtered by db/rp. */
static int shard_list(struct cairn_backup *b, const char *db, const char *rp,
                      struct shard_ent **out, size_t *n, struct cairn_err *err)
{
    json_t *shards = json_object_get(cairn_backup_meta(b), "shards");
    *out = NULL;
    *n = 0;
    if (!json_is_array(shards))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s' has no shard list in its "
                             "MANIFEST",
                             cairn_backup_name(b));
    size_t i;
    json_t *v;
    json_array_foreach(shards, i, v)
    {
        struct shard_ent e = {0};
        json_int_t id = 0;
        /* db and rp become parts of file names under --into: never a path */
        if (json_unpack(v, "{s:I, s:s, s:s, s:s}", "id", &id, "db", &e.db, "rp", &e.rp, "file",
                        &e.file) != 0 ||
            id <= 0 || !cairn_name_valid(e.file) || !cairn_name_is_safe(e.db) ||
            !cairn_name_is_safe(e.rp)) {
            free(*out);
            return cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s': malformed shard entry %zu",
                                 cairn_backup_name(b), i);
        }
        if ((db != NULL && strcmp(db, e.db) != 0) || (rp != NULL && strcmp(rp, e.rp) != 0))
            continue;
        e.id = (uint64_t)id;
        *out = cairn_xrealloc(*out, (*n + 1) * sizeof(**out));
        (*out)[(*n)++] = e;
    }
    return CAIRN_OK;
}

static int read_meta_envelope(struct cairn_backup *b, struct cairn_writer **mem,
                              struct cairn_err *err)
{
    *mem = cairn_mem_writer_new(META_MAX);
    int rc = cairn_backup_get_stream(b, META_FILE, *mem, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(*mem, err);
    return rc;
}

static int restore_online_tls(const struct cairn_engine_restore_opts *o, struct chain *c,
                              struct cairn_tls *tls, struct progress *prog,
                              struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    struct cairn_snap_client client = {o->target, o->connect_timeout_ms, o->io_timeout_ms,
                                       o->cancel, tls};
    struct cairn_writer *mem;
    struct cairn_snap_idmap map = {0};
    int rc = read_meta_envelope(c->b[c->n - 1], &mem, err);
    if (rc == CAIRN_OK) {
        size_t len, blen;
        const uint8_t *env = cairn_mem_writer_data(mem, &len), *blob;
        rc = cairn_snap_meta_envelope_blob(env, len, &blob, &blen, err);
        if (rc == CAIRN_OK)
            rc = cairn_snap_meta_upload(&client, o->db, o->newdb, o->rp, o->newrp, blob, blen, &map,
                                        err);
    }
    cairn_writer_free(mem);
    if (rc != CAIRN_OK)
        return rc;
    const char *tdb = o->newdb, *trp = o->rp != NULL ? (o->newrp ? o->newrp : o->rp) : NULL;
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++) {
        struct shard_ent *sh;
        size_t n;
        rc = shard_list(c->b[k], o->db, o->rp, &sh, &n, err);
        if (rc != CAIRN_OK)
            break;
        prog->total += (unsigned)n;
        for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
            uint64_t nid = cairn_snap_idmap_get(&map, sh[i].id);
            if (nid == 0) {
                cairn_warn(LOGC, "shard %llu (%s.%s) is not in the restored metadata: skipped",
                           (unsigned long long)sh[i].id, sh[i].db, sh[i].rp);
                continue;
            }
            if (cancelled(o->cancel)) {
                rc = cairn_err_set(err, CAIRN_E_CANCELLED, "restore cancelled");
                break;
            }
            struct cairn_reader *r;
            uint64_t bytes = 0;
            rc = cairn_backup_get_file(c->b[k], sh[i].file, &r, err);
            if (rc == CAIRN_OK) {
                rc = cairn_snap_shard_upload(&client, nid, tdb, trp, r, &bytes, err);
                cairn_reader_free(r);
            }
            if (rc == CAIRN_OK) {
                res->shards++;
                res->bytes += bytes;
                progress_report(prog, "apply", sh[i].file, bytes, 1);
            }
        }
        free(sh);
    }
    cairn_snap_idmap_free(&map);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc,
                       "online restore to %s stopped part-way (the new database exists "
                       "with the shards sent so far)",
                       o->target);
    return rc;
}

static int restore_online(const struct cairn_engine_restore_opts *o, struct chain *c,
                          struct progress *prog, struct cairn_engine_restore_result *res,
                          struct cairn_err *err)
{
    struct cairn_tls *tls = NULL;
    if (o->tls != NULL) {
        int rc = cairn_tls_client_new(o->tls, &tls, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    int rc = restore_online_tls(o, c, tls, prog, res, err);
    cairn_tls_free(tls);
    return rc;
}

/* Legacy `influxd backup` file names: meta.NN and <db>.<rp>.<%05d id>.NN, NN = chain index. */
static int restore_offline(const struct cairn_engine_restore_opts *o, struct chain *c,
                           struct progress *prog, struct cairn_engine_restore_result *res,
                           struct cairn_err *err)
{
    if (o->newdb != NULL || o->newrp != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--newdb/--newrp need an online restore "
                             "(--to); for --into, rename with `influxd restore -newdb`");
    if (o->force)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--force applies to backups of a local path; an InfluxDB restore "
                             "--into never replaces files");
    if (c->n > 100)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "the legacy layout numbers at most 100 "
                             "backups (.00-.99); this chain has %zu",
                             c->n);
    int created = access(o->into_dir, F_OK) != 0; /* removed again on failure */
    int rc = cairn_mkdir_p(o->into_dir, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    char *tmp = cairn_xasprintf("%s/.cairn-restore.XXXXXX", o->into_dir);
    if (mkdtemp(tmp) == NULL) {
        rc = cairn_err_sys(err, 0, errno, "create a directory in '%s'", o->into_dir);
        free(tmp);
        return rc;
    }
    char **names = NULL;
    size_t nnames = 0;
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++) {
        struct shard_ent *sh = NULL;
        size_t n = 0;
        rc = shard_list(c->b[k], o->db, o->rp, &sh, &n, err);
        prog->total += (unsigned)n + 1;
        for (size_t i = 0; i <= n && rc == CAIRN_OK; i++) {
            char *name = i == 0 ? cairn_xasprintf("meta.%02zu", k)
                                : cairn_xasprintf("%s.%s.%05llu.%02zu", sh[i - 1].db, sh[i - 1].rp,
                                                  (unsigned long long)sh[i - 1].id, k);
            char *final = cairn_path_join(o->into_dir, name);
            if (access(final, F_OK) == 0)
                rc = cairn_err_set(err, CAIRN_E_EXISTS, "'%s' already exists", final);
            free(final);
            names = cairn_xrealloc(names, (nnames + 1) * sizeof(char *));
            names[nnames++] = name;
            if (rc != CAIRN_OK)
                break;
            char *path = cairn_path_join(tmp, name);
            struct cairn_writer *w;
            rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
            free(path);
            if (rc != CAIRN_OK)
                break;
            uint64_t bytes = 0;
            w = prog_writer_new(w, prog, "apply", name);
            rc = cairn_backup_get_stream(c->b[k], i == 0 ? META_FILE : sh[i - 1].file, w, &bytes,
                                         err);
            if (rc == CAIRN_OK)
                rc = cairn_writer_close(w, err);
            cairn_writer_free(w);
            if (rc == CAIRN_OK) {
                res->bytes += bytes;
                res->shards += i > 0;
                progress_report(prog, "apply", name, 0, 1);
            }
        }
        free(sh);
    }
    /* Everything is written and verified: move it into place. */
    for (size_t i = 0; i < nnames && rc == CAIRN_OK; i++) {
        char *from = cairn_path_join(tmp, names[i]), *to = cairn_path_join(o->into_dir, names[i]);
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) != 0)
            rc = cairn_err_sys(err, 0, errno, "move '%s' into '%s'", names[i], o->into_dir);
        free(from);
        free(to);
    }
    if (rc == CAIRN_OK)
        rc = cairn_fsync_dir(o->into_dir, err);
    struct cairn_err ignored;
    cairn_rmtree(tmp, &ignored);
    free(tmp);
    if (rc != CAIRN_OK && created)
        rmdir(o->into_dir); /* only when still empty: a failed restore leaves no new directory */
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* A backup of a local path, all or nothing (cairn_backup_restore_path). */
static int restore_files(const struct cairn_engine_restore_opts *o, struct cairn_backup *b,
                         struct progress *prog, struct cairn_err *err)
{
    struct cairn_path_opts po = {
        .progress = path_progress, .progress_arg = prog, .force = o->force, .cancel = o->cancel};
    return cairn_backup_restore_path(b, o->into_dir, &po, err);
}

static void verify_cb(void *arg, const struct cairn_manifest_file *f, int rc,
                      const struct cairn_err *ferr)
{
    struct progress *p = arg;
    if (rc != CAIRN_OK)
        cairn_error(LOGC, "verify %s: %s", f->name, ferr->msg);
    progress_report(p, "verify", f->name, f->size, 1);
}

/* --db / --rp name what the backup holds: anything else is "not in this backup" (a server
 * would otherwise get an empty restore and answer as if the database existed). */
static int check_scope(const struct cairn_engine_restore_opts *o, const struct chain *c,
                       struct cairn_err *err)
{
    struct cairn_backup *b = c->b[c->n - 1];
    json_t *dbs = json_object_get(cairn_backup_meta(b), "databases");
    if (o->db == NULL || !json_is_object(dbs))
        return CAIRN_OK;
    json_t *rps = NULL;
    for (size_t k = c->n; k-- > 0 && rps == NULL;) /* any link of the chain */
        rps = json_object_get(json_object_get(cairn_backup_meta(c->b[k]), "databases"), o->db);
    if (rps == NULL) {
        char have[512] = "";
        size_t n = 0;
        const char *k;
        json_t *v;
        json_object_foreach(dbs, k, v)
        {
            int w = snprintf(have + n, sizeof(have) - n, "%s%s", n ? ", " : "", k);
            if (w < 0 || (size_t)w >= sizeof(have) - n)
                break;
            n += (size_t)w;
        }
        return cairn_err_set(err, CAIRN_E_NOTFOUND,
                             "database '%s' is not in backup '%s' (it has: %s)", o->db,
                             cairn_backup_name(b), n ? have : "no databases");
    }
    if (o->rp != NULL && json_is_object(rps) && json_object_get(rps, o->rp) == NULL)
        return cairn_err_set(err, CAIRN_E_NOTFOUND,
                             "retention policy '%s.%s' is not in backup '%s'", o->db, o->rp,
                             cairn_backup_name(b));
    return CAIRN_OK;
}

int cairn_engine_restore(const struct cairn_engine_restore_opts *o,
                         struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    memset(res, 0, sizeof(*res));
    uint64_t t0 = cairn_mono_ns();
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
    struct cairn_storage *st;
    int rc = cairn_storage_open(o->storage_url, &st, err);
    if (rc != CAIRN_OK)
        return rc;
    cairn_storage_set_cancel(st, o->cancel);
    struct chain c = {.n = 0};
    struct progress prog = {
        PTHREAD_MUTEX_INITIALIZER, o->progress, o->progress_ctx, o->cancel, 0, 0};
    rc = chain_open(st, o->name, &c, err);
    if (rc == CAIRN_OK)
        rc = chain_check(&c, err);
    if (rc != CAIRN_OK)
        goto out;
    const char *kind = cairn_backup_kind(c.b[c.n - 1]);
    if (strcmp(kind, "files") == 0 && c.n == 1) {
        if (o->into_dir == NULL || o->db != NULL)
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "backup '%s' is of a local path: restore "
                               "it with --into DIR only",
                               o->name);
        else
            rc = restore_files(o, c.b[0], &prog, err);
        res->backups = 1;
        for (size_t i = 0; rc == CAIRN_OK && i < cairn_backup_file_count(c.b[0]); i++)
            res->bytes += cairn_backup_file_at(c.b[0], i)->logical_size;
        goto out;
    }
    for (size_t k = 0; k < c.n && rc == CAIRN_OK; k++)
        if (strcmp(cairn_backup_kind(c.b[k]), KIND) != 0)
            rc = cairn_err_set(err, CAIRN_E_INVALID, "backup '%s' is of kind '%s', not %s",
                               cairn_backup_name(c.b[k]), cairn_backup_kind(c.b[k]), KIND);
    if (rc == CAIRN_OK)
        rc = check_scope(o, &c, err);
    /* Verify every file of the whole chain before anything is applied. */
    for (size_t k = 0; k < c.n && rc == CAIRN_OK; k++) {
        prog.total += (unsigned)cairn_backup_file_count(c.b[k]);
        rc = cairn_backup_verify(c.b[k], 4, verify_cb, &prog, err);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "verification failed, nothing was restored");
    }
    if (rc != CAIRN_OK)
        goto out;
    prog.done = prog.total = 0;
    res->backups = (unsigned)c.n;
    json_t *dbs = json_object_get(cairn_backup_meta(c.b[c.n - 1]), "databases");
    res->databases =
        o->db != NULL ? json_object_get(dbs, o->db) != NULL : (unsigned)json_object_size(dbs);
    rc = o->target ? restore_online(o, &c, &prog, res, err)
                   : restore_offline(o, &c, &prog, res, err);
out:
    chain_free(&c);
    cairn_storage_free(st);
    res->seconds = (double)(cairn_mono_ns() - t0) / 1e9;
    return rc;
}
