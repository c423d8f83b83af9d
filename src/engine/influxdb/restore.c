/* Restoring an influxdb:// chain (base first; the engine checked its links and verified every
 * file): online through requests 6/7 to the source, or offline into the legacy `influxd
 * backup` layout for `influxd restore`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "engine/influxdb/influxdb.h"

#define LOGC     "backup"
#define META_MAX (256u << 20)

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
static int online_meta(const struct influxdb_src *s, struct cairn_backup *newest,
                       struct cairn_influx_idmap *map, struct cairn_err *err)
{
    const struct cairn_source_select *sel = influxdb_select(s);
    struct cairn_writer *mem = cairn_mem_writer_new(META_MAX);
    int rc = cairn_backup_get_stream(newest, INFLUXDB_META_FILE, mem, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(mem, err);
    if (rc == CAIRN_OK) {
        size_t len, blen;
        const uint8_t *env = cairn_mem_writer_data(mem, &len), *blob;
        rc = cairn_influx_meta_envelope_blob(env, len, &blob, &blen, err);
        if (rc == CAIRN_OK)
            rc = cairn_influx_meta_upload(&s->client, sel->db, sel->newdb, sel->rp, sel->newrp,
                                          blob, blen, map, err);
    }
    cairn_writer_free(mem);
    return rc;
}

/* The shards of backup b the metadata upload mapped, each under its new id. */
static int online_shards(const struct influxdb_src *s, struct cairn_backup *b,
                         const struct cairn_influx_idmap *map, unsigned *shards,
                         struct cairn_err *err)
{
    const struct cairn_source_select *sel = influxdb_select(s);
    const char *tdb = sel->newdb,
               *trp = sel->rp != NULL ? (sel->newrp ? sel->newrp : sel->rp) : NULL;
    struct shard_ent *sh;
    size_t n;
    int rc = shard_list(b, sel->db, sel->rp, &sh, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    influxdb_report(s, "apply", NULL, 0, 0, (unsigned)n);
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        uint64_t nid = cairn_influx_idmap_get(map, sh[i].id);
        if (nid == 0) {
            cairn_warn(LOGC, "shard %llu (%s.%s) is not in the restored metadata: skipped",
                       (unsigned long long)sh[i].id, sh[i].db, sh[i].rp);
            continue;
        }
        if (influxdb_cancelled(s)) {
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "restore cancelled");
            break;
        }
        struct cairn_reader *r;
        uint64_t bytes = 0;
        rc = cairn_backup_get_file(b, sh[i].file, &r, err);
        if (rc == CAIRN_OK) {
            rc = cairn_influx_shard_upload(&s->client, nid, tdb, trp, r, &bytes, err);
            cairn_reader_free(r);
        }
        if (rc == CAIRN_OK) {
            (*shards)++;
            influxdb_report(s, "apply", sh[i].file, bytes, 1, 0);
        }
    }
    free(sh);
    return rc;
}

static int restore_online(const struct influxdb_src *s, struct cairn_backup *const *chain, size_t n,
                          unsigned *shards, struct cairn_err *err)
{
    struct cairn_influx_idmap map = {0};
    int rc = online_meta(s, chain[n - 1], &map, err);
    if (rc != CAIRN_OK)
        return rc;
    for (size_t k = 0; k < n && rc == CAIRN_OK; k++)
        rc = online_shards(s, chain[k], &map, shards, err);
    cairn_influx_idmap_free(&map);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc,
                       "online restore to %s stopped part-way (the new database exists "
                       "with the shards sent so far)",
                       s->addr);
    return rc;
}

/* ---- offline: the legacy layout ---- */

/* What the legacy layout cannot express is refused before anything is written. */
static int offline_check(const struct cairn_source_select *sel, size_t n, struct cairn_err *err)
{
    if (sel->newdb != NULL || sel->newrp != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--newdb/--newrp need an online restore "
                             "(--to); for --into, rename with `influxd restore -newdb`");
    if (n > 100)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "the legacy layout numbers at most 100 "
                             "backups (.00-.99); this chain has %zu",
                             n);
    return CAIRN_OK;
}

/* Stored file `file` of b into the new file dir/name, through the progress stage. */
static int offline_file(const struct influxdb_src *s, struct cairn_backup *b, const char *file,
                        const char *dir, const char *name, struct cairn_err *err)
{
    char *path = path_join(dir, name);
    struct cairn_writer *w;
    int rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
    free(path);
    if (rc != CAIRN_OK)
        return rc;
    w = influxdb_progress_writer(s, w, "apply", name);
    rc = cairn_backup_get_stream(b, file, w, NULL, err);
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
 * into already is CAIRN_E_EXISTS. */
static int offline_backup(const struct influxdb_src *s, struct cairn_backup *b, size_t k,
                          const char *into, const char *tmp, struct names *names, unsigned *shards,
                          struct cairn_err *err)
{
    const struct cairn_source_select *sel = influxdb_select(s);
    struct shard_ent *sh = NULL;
    size_t n = 0;
    int rc = shard_list(b, sel->db, sel->rp, &sh, &n, err);
    influxdb_report(s, "apply", NULL, 0, 0, (unsigned)n + 1);
    for (size_t i = 0; i <= n && rc == CAIRN_OK; i++) {
        char *name = i == 0 ? xasprintf("meta.%02zu", k)
                            : xasprintf("%s.%s.%05llu.%02zu", sh[i - 1].db, sh[i - 1].rp,
                                        (unsigned long long)sh[i - 1].id, k);
        char *final = path_join(into, name);
        if (access(final, F_OK) == 0)
            rc = cairn_err_set(err, CAIRN_E_EXISTS, "'%s' already exists", final);
        free(final);
        names->v = xrealloc(names->v, (names->n + 1) * sizeof(char *));
        names->v[names->n++] = name;
        if (rc != CAIRN_OK)
            break;
        rc = offline_file(s, b, i == 0 ? INFLUXDB_META_FILE : sh[i - 1].file, tmp, name, err);
        if (rc == CAIRN_OK) {
            *shards += i > 0;
            influxdb_report(s, "apply", name, 0, 1, 0);
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

/* The chain into a temporary directory inside into, then moved into place: a failure leaves
 * into as it was (and no new into). */
static int restore_offline(const struct influxdb_src *s, struct cairn_backup *const *chain,
                           size_t n, const char *into, unsigned *shards, struct cairn_err *err)
{
    int rc = offline_check(influxdb_select(s), n, err);
    if (rc != CAIRN_OK)
        return rc;
    int created = access(into, F_OK) != 0; /* removed again on failure */
    rc = mkdir_p(into, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    char *tmp = xasprintf("%s/.cairn-restore.XXXXXX", into);
    if (mkdtemp(tmp) == NULL) {
        rc = cairn_err_sys(err, 0, errno, "create a directory in '%s'", into);
        free(tmp);
        return rc;
    }
    struct names names = {NULL, 0};
    for (size_t k = 0; k < n && rc == CAIRN_OK; k++)
        rc = offline_backup(s, chain[k], k, into, tmp, &names, shards, err);
    if (rc == CAIRN_OK)
        rc = offline_move(tmp, into, &names, err);
    struct cairn_err ignored;
    rmtree(tmp, &ignored);
    free(tmp);
    if (rc != CAIRN_OK && created)
        rmdir(into); /* only when still empty: a failed restore leaves no new directory */
    for (size_t i = 0; i < names.n; i++)
        free(names.v[i]);
    free(names.v);
    return rc;
}

/* --db / --rp name what the backup holds: anything else is "not in this backup" (a server
 * would otherwise get an empty restore and answer as if the database existed). */
static int check_scope(const struct cairn_source_select *sel, struct cairn_backup *const *chain,
                       size_t n, struct cairn_err *err)
{
    struct cairn_backup *b = chain[n - 1];
    json_t *dbs = json_object_get(cairn_backup_meta(b), "databases");
    if (sel->db == NULL || !json_is_object(dbs))
        return CAIRN_OK;
    json_t *rps = NULL;
    for (size_t k = n; k-- > 0 && rps == NULL;) /* any link of the chain */
        rps = json_object_get(json_object_get(cairn_backup_meta(chain[k]), "databases"), sel->db);
    if (rps == NULL) {
        char have[512] = "";
        size_t len = 0;
        const char *key;
        json_t *v;
        json_object_foreach(dbs, key, v)
        {
            (void)v;
            str_join(have, sizeof(have), &len, ", ", key);
        }
        return cairn_err_set(err, CAIRN_E_NOTFOUND,
                             "database '%s' is not in backup '%s' (it has: %s)", sel->db,
                             cairn_backup_name(b), len ? have : "no databases");
    }
    if (sel->rp != NULL && json_is_object(rps) && json_object_get(rps, sel->rp) == NULL)
        return cairn_err_set(err, CAIRN_E_NOTFOUND,
                             "retention policy '%s.%s' is not in backup '%s'", sel->db, sel->rp,
                             cairn_backup_name(b));
    return CAIRN_OK;
}

int influxdb_restore_chain(void *state, struct cairn_backup *const *chain, size_t n,
                           const char *into, struct cairn_err *err)
{
    const struct influxdb_src *s = state;
    const struct cairn_source_select *sel = influxdb_select(s);
    int rc = CAIRN_OK;
    for (size_t k = 0; k < n && rc == CAIRN_OK; k++)
        if (strcmp(cairn_backup_kind(chain[k]), INFLUXDB_KIND) != 0)
            rc = cairn_err_set(err, CAIRN_E_INVALID, "backup '%s' is of kind '%s', not %s",
                               cairn_backup_name(chain[k]), cairn_backup_kind(chain[k]),
                               INFLUXDB_KIND);
    if (rc == CAIRN_OK)
        rc = check_scope(sel, chain, n, err);
    if (rc != CAIRN_OK)
        return rc;
    json_t *dbs = json_object_get(cairn_backup_meta(chain[n - 1]), "databases");
    if (s->o.databases != NULL)
        *s->o.databases = sel->db != NULL ? json_object_get(dbs, sel->db) != NULL
                                          : (unsigned)json_object_size(dbs);
    unsigned shards = 0;
    rc = into != NULL ? restore_offline(s, chain, n, into, &shards, err)
                      : restore_online(s, chain, n, &shards, err);
    if (s->o.items != NULL)
        *s->o.items = shards;
    return rc;
}
