/* cairn_engine_restore: check and verify a backup chain, then apply it online through
 * requests 6/7 or offline into the legacy `influxd backup` layout; a backup of a local path
 * goes back through the storage module's path restore. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/log.h"
#include "cairn/repo.h"
#include "cairn/influx.h"
#include "common/util.h"
#include "cairn/source.h"
#include "internal.h"

#define META_MAX  (256u << 20)
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
            id <= 0 || !cairn_name_valid(e.file) || !name_is_safe(e.db) || !name_is_safe(e.rp)) {
            free(*out);
            return cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s': malformed shard entry %zu",
                                 cairn_backup_name(b), i);
        }
        if ((db != NULL && strcmp(db, e.db) != 0) || (rp != NULL && strcmp(rp, e.rp) != 0))
            continue;
        e.id = (uint64_t)id;
        *out = xrealloc(*out, (*n + 1) * sizeof(**out));
        (*out)[(*n)++] = e;
    }
    return CAIRN_OK;
}

/* The newest backup's metastore (its meta.Data blob) to the target, which answers with the
 * new ids of the shards it created (map). */
static int online_meta(const struct cairn_influx_client *client,
                       const struct cairn_engine_restore_opts *o, const struct chain *c,
                       struct cairn_influx_idmap *map, struct cairn_err *err)
{
    struct cairn_writer *mem = cairn_mem_writer_new(META_MAX);
    int rc = cairn_backup_get_stream(c->b[c->n - 1], ENGINE_META_FILE, mem, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(mem, err);
    if (rc == CAIRN_OK) {
        size_t len, blen;
        const uint8_t *env = cairn_mem_writer_data(mem, &len), *blob;
        rc = cairn_influx_meta_envelope_blob(env, len, &blob, &blen, err);
        if (rc == CAIRN_OK)
            rc = cairn_influx_meta_upload(client, o->db, o->newdb, o->rp, o->newrp, blob, blen, map,
                                          err);
    }
    cairn_writer_free(mem);
    return rc;
}

/* The shards of backup b the metadata upload mapped, each under its new id. */
static int online_shards(const struct cairn_influx_client *client,
                         const struct cairn_engine_restore_opts *o, struct cairn_backup *b,
                         const struct cairn_influx_idmap *map, struct engine_progress *prog,
                         struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    const char *tdb = o->newdb, *trp = o->rp != NULL ? (o->newrp ? o->newrp : o->rp) : NULL;
    struct shard_ent *sh;
    size_t n;
    int rc = shard_list(b, o->db, o->rp, &sh, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    prog->total += (unsigned)n;
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        uint64_t nid = cairn_influx_idmap_get(map, sh[i].id);
        if (nid == 0) {
            cairn_warn(ENGINE_LOGC, "shard %llu (%s.%s) is not in the restored metadata: skipped",
                       (unsigned long long)sh[i].id, sh[i].db, sh[i].rp);
            continue;
        }
        if (engine_cancelled(o->cancel)) {
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "restore cancelled");
            break;
        }
        struct cairn_reader *r;
        uint64_t bytes = 0;
        rc = cairn_backup_get_file(b, sh[i].file, &r, err);
        if (rc == CAIRN_OK) {
            rc = cairn_influx_shard_upload(client, nid, tdb, trp, r, &bytes, err);
            cairn_reader_free(r);
        }
        if (rc == CAIRN_OK) {
            res->shards++;
            res->bytes += bytes;
            engine_progress_report(prog, "apply", sh[i].file, bytes, 1);
        }
    }
    free(sh);
    return rc;
}

static int restore_online_tls(const struct cairn_engine_restore_opts *o, struct chain *c,
                              struct cairn_tls *tls, struct engine_progress *prog,
                              struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    struct cairn_influx_client client = {o->target, o->connect_timeout_ms, o->io_timeout_ms,
                                         o->cancel, tls};
    struct cairn_influx_idmap map = {0};
    int rc = online_meta(&client, o, c, &map, err);
    if (rc != CAIRN_OK)
        return rc;
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++)
        rc = online_shards(&client, o, c->b[k], &map, prog, res, err);
    cairn_influx_idmap_free(&map);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc,
                       "online restore to %s stopped part-way (the new database exists "
                       "with the shards sent so far)",
                       o->target);
    return rc;
}

static int restore_online(const struct cairn_engine_restore_opts *o, struct chain *c,
                          struct engine_progress *prog, struct cairn_engine_restore_result *res,
                          struct cairn_err *err)
{
    struct cairn_tls *tls = NULL;
    if (o->tls != NULL) {
        int rc = cairn_influx_tls_client_new(o->tls, &tls, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    int rc = restore_online_tls(o, c, tls, prog, res, err);
    cairn_influx_tls_free(tls);
    return rc;
}

/* What the legacy layout cannot express is refused before anything is written. */
static int offline_check(const struct cairn_engine_restore_opts *o, const struct chain *c,
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
    return CAIRN_OK;
}

/* Stored file `file` of b into the new file dir/name, through the progress stage. */
static int offline_file(struct cairn_backup *b, const char *file, const char *dir, const char *name,
                        struct engine_progress *prog, uint64_t *bytes, struct cairn_err *err)
{
    char *path = path_join(dir, name);
    struct cairn_writer *w;
    int rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
    free(path);
    if (rc != CAIRN_OK)
        return rc;
    w = engine_progress_writer_new(w, prog, "apply", name);
    rc = cairn_backup_get_stream(b, file, w, bytes, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

/* A list of the names written so far, to move into place. */
struct names {
    char **v;
    size_t n;
};

/* Legacy `influxd backup` file names: meta.NN and <db>.<rp>.<%05d id>.NN, NN = chain index.
 * Backup k of the chain into tmp under its names (added to *names); a name that exists in
 * into_dir already is CAIRN_E_EXISTS. */
static int offline_backup(const struct cairn_engine_restore_opts *o, struct cairn_backup *b,
                          size_t k, const char *tmp, struct names *names,
                          struct engine_progress *prog, struct cairn_engine_restore_result *res,
                          struct cairn_err *err)
{
    struct shard_ent *sh = NULL;
    size_t n = 0;
    int rc = shard_list(b, o->db, o->rp, &sh, &n, err);
    prog->total += (unsigned)n + 1;
    for (size_t i = 0; i <= n && rc == CAIRN_OK; i++) {
        char *name = i == 0 ? xasprintf("meta.%02zu", k)
                            : xasprintf("%s.%s.%05llu.%02zu", sh[i - 1].db, sh[i - 1].rp,
                                        (unsigned long long)sh[i - 1].id, k);
        char *final = path_join(o->into_dir, name);
        if (access(final, F_OK) == 0)
            rc = cairn_err_set(err, CAIRN_E_EXISTS, "'%s' already exists", final);
        free(final);
        names->v = xrealloc(names->v, (names->n + 1) * sizeof(char *));
        names->v[names->n++] = name;
        if (rc != CAIRN_OK)
            break;
        uint64_t bytes = 0;
        rc = offline_file(b, i == 0 ? ENGINE_META_FILE : sh[i - 1].file, tmp, name, prog, &bytes,
                          err);
        if (rc == CAIRN_OK) {
            res->bytes += bytes;
            res->shards += i > 0;
            engine_progress_report(prog, "apply", name, 0, 1);
        }
    }
    free(sh);
    return rc;
}

/* Everything is written and verified: move it into place, never over a file. */
static int offline_move(const char *tmp, const char *dir, const struct names *names,
                        struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t i = 0; i < names->n && rc == CAIRN_OK; i++) {
        char *from = path_join(tmp, names->v[i]), *to = path_join(dir, names->v[i]);
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) != 0)
            rc = cairn_err_sys(err, 0, errno, "move '%s' into '%s'", names->v[i], dir);
        free(from);
        free(to);
    }
    if (rc == CAIRN_OK)
        rc = fsync_dir(dir, err);
    return rc;
}

/* The chain into a temporary directory inside into_dir, then moved into place: a failure
 * leaves into_dir as it was (and no new into_dir). */
static int restore_offline(const struct cairn_engine_restore_opts *o, struct chain *c,
                           struct engine_progress *prog, struct cairn_engine_restore_result *res,
                           struct cairn_err *err)
{
    int rc = offline_check(o, c, err);
    if (rc != CAIRN_OK)
        return rc;
    int created = access(o->into_dir, F_OK) != 0; /* removed again on failure */
    rc = mkdir_p(o->into_dir, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    char *tmp = xasprintf("%s/.cairn-restore.XXXXXX", o->into_dir);
    if (mkdtemp(tmp) == NULL) {
        rc = cairn_err_sys(err, 0, errno, "create a directory in '%s'", o->into_dir);
        free(tmp);
        return rc;
    }
    struct names names = {NULL, 0};
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++)
        rc = offline_backup(o, c->b[k], k, tmp, &names, prog, res, err);
    if (rc == CAIRN_OK)
        rc = offline_move(tmp, o->into_dir, &names, err);
    struct cairn_err ignored;
    rmtree(tmp, &ignored);
    free(tmp);
    if (rc != CAIRN_OK && created)
        rmdir(o->into_dir); /* only when still empty: a failed restore leaves no new directory */
    for (size_t i = 0; i < names.n; i++)
        free(names.v[i]);
    free(names.v);
    return rc;
}

static void verify_cb(void *arg, const struct cairn_manifest_file *f, int rc,
                      const struct cairn_err *ferr)
{
    struct engine_progress *p = arg;
    if (rc != CAIRN_OK)
        cairn_error(ENGINE_LOGC, "verify %s: %s", f->name, ferr->msg);
    engine_progress_report(p, "verify", f->name, f->size, 1);
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
            (void)v;
            str_join(have, sizeof(have), &n, ", ", k);
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
                                 .cancel = o->cancel};
    int rc = cairn_backup_restore_path(b, o->into_dir, &po, err);
    for (size_t i = 0; rc == CAIRN_OK && i < cairn_backup_file_count(b); i++)
        res->bytes += cairn_backup_file_at(b, i)->logical_size;
    return rc;
}

/* An influxdb chain: every link of that kind, the --db/--rp asked for in it and every file of
 * it verified; only then is it applied, online or offline. */
static int restore_influx(const struct cairn_engine_restore_opts *o, struct chain *c,
                          struct engine_progress *prog, struct cairn_engine_restore_result *res,
                          struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++)
        if (strcmp(cairn_backup_kind(c->b[k]), ENGINE_KIND) != 0)
            rc = cairn_err_set(err, CAIRN_E_INVALID, "backup '%s' is of kind '%s', not %s",
                               cairn_backup_name(c->b[k]), cairn_backup_kind(c->b[k]), ENGINE_KIND);
    if (rc == CAIRN_OK)
        rc = check_scope(o, c, err);
    /* Verify every file of the whole chain before anything is applied. */
    for (size_t k = 0; k < c->n && rc == CAIRN_OK; k++) {
        prog->total += (unsigned)cairn_backup_file_count(c->b[k]);
        rc = cairn_backup_verify(c->b[k], 4, verify_cb, prog, err);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "verification failed, nothing was restored");
    }
    if (rc != CAIRN_OK)
        return rc;
    prog->done = prog->total = 0;
    res->backups = (unsigned)c->n;
    json_t *dbs = json_object_get(cairn_backup_meta(c->b[c->n - 1]), "databases");
    res->databases =
        o->db != NULL ? json_object_get(dbs, o->db) != NULL : (unsigned)json_object_size(dbs);
    return o->target ? restore_online(o, c, prog, res, err) : restore_offline(o, c, prog, res, err);
}

int cairn_engine_restore(const struct cairn_engine_restore_opts *o,
                         struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    memset(res, 0, sizeof(*res));
    uint64_t t0 = mono_ns();
    char plain[4096];
    struct cairn_engine_restore_opts po = *o;
    if (o->target != NULL)
        po.target = engine_source_plain(o->target, plain, sizeof(plain));
    o = &po;
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
    else if (rc == CAIRN_OK && c.n == 1 && cairn_source_driver_find(kind) != NULL)
        rc = engine_restore_source(c.b[0], o, res, err); /* etcd, redis, exec... */
    else if (rc == CAIRN_OK)
        rc = restore_influx(o, &c, &prog, res, err);
    chain_free(&c);
    cairn_storage_free(st);
    res->seconds = (double)(mono_ns() - t0) / 1e9;
    return rc;
}
