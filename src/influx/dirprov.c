/* The directory provider: serves <dir>/<db>/<rp>/<shard-id>/<files> with metadata from a
 * meta.Data protobuf file (influxd's meta.db format) or, when that file is absent, derived
 * from the directory tree. Restore uploads write into the same tree, all or nothing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

#define META_MAX (256u << 20)
/* models.MinNanoTime / MaxNanoTime: a derived shard group covers every representable time. */
#define MIN_NANO (-9223372036854775806LL)
#define MAX_NANO 9223372036854775806LL

struct dirprov {
    char *dir;
    char *meta_path;
    char *influx_dir;
    pthread_mutex_t mu; /* serialises metadata updates and shard installs */
};

/* ---- directory listing helpers ---- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entries of dir that are directories (want_dir) or regular files, skipping hidden names;
 * sorted bytewise. */
static int list_dir(const char *dir, int want_dir, char ***out, size_t *n, struct cairn_err *err)
{
    DIR *d = opendir(dir);
    *out = NULL;
    *n = 0;
    if (d == NULL)
        return cairn_err_sys(err, 0, errno, "open directory '%s'", dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* vanished meanwhile */
        if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
            continue;
        *out = xrealloc(*out, (*n + 1) * sizeof(char *));
        (*out)[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof(char *), name_cmp);
    return CAIRN_OK;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *shard_dir(const struct dirprov *p, const char *db, const char *rp, uint64_t id)
{
    return xasprintf("%s/%s/%s/%llu", p->dir, db, rp, (unsigned long long)id);
}

/* ---- metadata ---- */

static int derive_meta(const struct dirprov *p, struct meta_data *m, struct cairn_err *err)
{
    char **dbs;
    size_t ndb;
    memset(m, 0, sizeof(*m));
    m->index = 1;
    int rc = list_dir(p->dir, 1, &dbs, &ndb, err);
    if (rc != CAIRN_OK)
        return rc;
    for (size_t i = 0; i < ndb && rc == CAIRN_OK; i++) {
        char *dbp = path_join(p->dir, dbs[i]);
        char **rps;
        size_t nrp;
        rc = list_dir(dbp, 1, &rps, &nrp, err);
        if (rc == CAIRN_OK) {
            m->dbs = xrealloc(m->dbs, (m->ndbs + 1) * sizeof(*m->dbs));
            struct meta_db *d = &m->dbs[m->ndbs++];
            memset(d, 0, sizeof(*d));
            d->name = xstrdup(dbs[i]);
            d->default_rp = xstrdup(nrp > 0 ? rps[0] : "autogen");
            for (size_t j = 0; j < nrp && rc == CAIRN_OK; j++) {
                if (rps[j][0] == '_')
                    continue; /* influxd keeps the series file in <db>/_series */
                if (strcmp(rps[j], "autogen") == 0) {
                    free(d->default_rp);
                    d->default_rp = xstrdup("autogen");
                }
                d->rps = xrealloc(d->rps, (d->nrps + 1) * sizeof(*d->rps));
                struct meta_rp *r = &d->rps[d->nrps++];
                memset(r, 0, sizeof(*r));
                r->name = xstrdup(rps[j]);
                r->sg_duration = 7LL * 24 * 3600 * 1000000000LL;
                r->replica_n = 1;
                char *rpp = path_join(dbp, rps[j]);
                char **ids;
                size_t nid;
                rc = list_dir(rpp, 1, &ids, &nid, err);
                free(rpp);
                if (rc != CAIRN_OK)
                    break;
                for (size_t k = 0; k < nid; k++) {
                    uint64_t id;
                    if (influx_parse_id(ids[k], &id) != 0)
                        continue;
                    r->sgs = xrealloc(r->sgs, (r->nsgs + 1) * sizeof(*r->sgs));
                    struct meta_sg *g = &r->sgs[r->nsgs++];
                    memset(g, 0, sizeof(*g));
                    g->id = id;
                    g->start = MIN_NANO;
                    g->end = MAX_NANO;
                    g->shards = xcalloc(1, sizeof(*g->shards));
                    g->shards[0].id = id;
                    g->nshards = 1;
                    if (id > m->max_shard_id)
                        m->max_shard_id = m->max_sg_id = id;
                }
                free_names(ids, nid);
            }
            free_names(rps, nrp);
        }
        free(dbp);
    }
    free_names(dbs, ndb);
    if (rc != CAIRN_OK)
        meta_free(m);
    return rc;
}

/* The stored meta blob, or NULL (CAIRN_OK) when there is none. */
static int read_meta_blob(const struct dirprov *p, uint8_t **blob, size_t *len,
                          struct cairn_err *err)
{
    *blob = NULL;
    *len = 0;
    if (access(p->meta_path, F_OK) != 0 && errno == ENOENT)
        return CAIRN_OK;
    return read_file_max(p->meta_path, META_MAX, blob, len, err);
}

static int load_meta(const struct dirprov *p, struct meta_data *m, struct cairn_err *err)
{
    uint8_t *blob;
    size_t len;
    int rc = read_meta_blob(p, &blob, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    if (blob == NULL)
        return derive_meta(p, m, err);
    rc = meta_decode(blob, len, m, err);
    free(blob);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "'%s'", p->meta_path);
    return rc;
}

static int dp_meta_data(void *ctx, uint8_t **blob, size_t *len, struct cairn_err *err)
{
    struct dirprov *p = ctx;
    int rc = read_meta_blob(p, blob, len, err);
    if (rc != CAIRN_OK || *blob != NULL)
        return rc; /* served byte for byte as stored */
    struct meta_data m;
    rc = derive_meta(p, &m, err);
    if (rc != CAIRN_OK)
        return rc;
    struct buf b = {0};
    meta_encode(&m, &b);
    meta_free(&m);
    *blob = b.p;
    *len = b.len;
    return CAIRN_OK;
}

static int dp_shard_paths(void *ctx, const char *db, const char *rp, char ***paths, size_t *n,
                          struct cairn_err *err)
{
    struct dirprov *p = ctx;
    struct meta_data m;
    int rc = load_meta(p, &m, err);
    if (rc != CAIRN_OK)
        return rc;
    *paths = NULL;
    *n = 0;
    int all = db == NULL || db[0] == '\0';
    if (!all && meta_find_db(&m, db) == NULL) {
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "database not found: %s", db);
        goto out;
    }
    if (!all && rp != NULL && meta_find_rp(meta_find_db(&m, db), rp) == NULL) {
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "retention policy not found: %s", rp);
        goto out;
    }
    for (size_t i = 0; i < m.ndbs; i++) {
        const struct meta_db *d = &m.dbs[i];
        if (!all && strcmp(d->name, db) != 0)
            continue;
        for (size_t j = 0; j < d->nrps; j++) {
            const struct meta_rp *r = &d->rps[j];
            if (!all && rp != NULL && strcmp(r->name, rp) != 0)
                continue;
            for (size_t k = 0; k < r->nsgs; k++)
                for (size_t s = 0; s < r->sgs[k].nshards; s++) {
                    uint64_t id = r->sgs[k].shards[s].id;
                    char *dir = shard_dir(p, d->name, r->name, id);
                    int present = is_dir(dir);
                    free(dir);
                    if (!present)
                        continue;
                    *paths = xrealloc(*paths, (*n + 1) * sizeof(char *));
                    (*paths)[(*n)++] =
                        xasprintf("%s/%s/%llu", d->name, r->name, (unsigned long long)id);
                }
        }
    }
out:
    meta_free(&m);
    return rc;
}

/* Locate a shard: its db, rp and directory. */
static int find_shard(struct dirprov *p, uint64_t id, char **db, char **rp, char **dir,
                      struct cairn_err *err)
{
    struct meta_data m;
    int rc = load_meta(p, &m, err);
    if (rc != CAIRN_OK)
        return rc;
    const struct meta_db *d;
    const struct meta_rp *r;
    if (meta_find_shard(&m, id, &d, &r) != 0) {
        meta_free(&m);
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "shard %llu doesn't exist on this server",
                             (unsigned long long)id);
    }
    *db = xstrdup(d->name);
    *rp = xstrdup(r->name);
    *dir = shard_dir(p, d->name, r->name, id);
    meta_free(&m);
    return CAIRN_OK;
}

/* A shard export's window in Unix ns, inclusive. */
struct window {
    int64_t start, end;
};

/* One file of an export; a TSM file rewritten is staged in tmpdir (NULL: $TMPDIR). */
static int export_file(struct influx_tar_out *t, const char *name, const char *path,
                       const struct window *win, const char *tmpdir, struct cairn_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "open '%s'", path);
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? CAIRN_OK : cairn_err_sys(err, 0, errno, "stat '%s'", path);
    if (rc == CAIRN_OK)
        rc =
            influx_export_add(t, name, fd, (int64_t)st.st_mtime, win->start, win->end, tmpdir, err);
    close(fd);
    return rc;
}

static int time_after(const struct stat *st, const struct cairn_influx_time *t)
{
    if ((int64_t)st->st_mtim.tv_sec != t->sec)
        return (int64_t)st->st_mtim.tv_sec > t->sec;
    return st->st_mtim.tv_nsec > t->nsec;
}

static int skip_file(const char *name)
{
    size_t n = strlen(name);
    return n >= 4 && strcmp(name + n - 4, ".tmp") == 0; /* files being written */
}

/* The tar of the shard's files into out: modified after since (a backup), or cut to win (an
 * export, win not NULL). */
static int shard_stream(struct dirprov *p, uint64_t id, const struct cairn_influx_time *since,
                        const struct window *win, struct cairn_writer *out, struct cairn_err *err)
{
    char *db = NULL, *rp = NULL, *dir = NULL, *snap = NULL;
    char **files = NULL;
    size_t nfiles = 0;
    struct influx_tar_out *t = NULL;
    int rc = find_shard(p, id, &db, &rp, &dir, err);
    if (rc != CAIRN_OK)
        return rc;
    if (!is_dir(dir)) {
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "shard %llu doesn't exist on this server",
                           (unsigned long long)id);
        goto out;
    }
    /* Hard-link the selected files into a private directory first: files replaced or
     * deleted while the tar streams (compactions) then cannot tear it. The links must be on
     * the data's file system; a data directory we cannot write (a read-only file system
     * snapshot) cannot change under us either, so its files are streamed in place. */
    int in_place = access(p->dir, W_OK) != 0;
    if (!in_place)
        rc = mkdir_p(p->influx_dir, 0700, err);
    if (rc != CAIRN_OK)
        goto out;
    snap = in_place ? NULL : xasprintf("%s/%llu.XXXXXX", p->influx_dir, (unsigned long long)id);
    if (snap != NULL && mkdtemp(snap) == NULL) {
        rc = cairn_err_sys(err, 0, errno, "create snapshot directory in '%s'", p->influx_dir);
        free(snap);
        snap = NULL;
        goto out;
    }
    rc = list_dir(dir, 0, &files, &nfiles, err);
    if (rc != CAIRN_OK)
        goto out;
    size_t kept = 0;
    for (size_t i = 0; i < nfiles; i++) {
        char *src = path_join(dir, files[i]);
        char *dst = in_place ? NULL : path_join(snap, files[i]);
        struct stat st;
        int keep = !skip_file(files[i]) && stat(src, &st) == 0 && time_after(&st, since);
        if (keep && !in_place && link(src, dst) != 0) {
            keep = 0;
            if (errno != ENOENT) /* a compaction removed it: not part of this view */
                rc = cairn_err_sys(err, 0, errno, "hard-link '%s' into '%s'", src, snap);
        }
        free(src);
        free(dst);
        if (rc != CAIRN_OK)
            goto out;
        if (keep)
            files[kept++] = files[i];
        else
            free(files[i]);
    }
    nfiles = kept;
    t = influx_tar_out_new(out);
    for (size_t i = 0; i < nfiles && rc == CAIRN_OK; i++) {
        char *name = xasprintf("%s/%s/%llu/%s", db, rp, (unsigned long long)id, files[i]);
        char *path = path_join(in_place ? dir : snap, files[i]);
        rc = win ? export_file(t, name, path, win, snap, err)
                 : influx_tar_add_file(t, name, path, err);
        free(name);
        free(path);
    }
    if (rc == CAIRN_OK)
        rc = influx_tar_out_close(t, err);
out:
    influx_tar_out_free(t);
    if (snap != NULL) {
        struct cairn_err ignored;
        rmtree(snap, &ignored);
        free(snap);
    }
    free_names(files, nfiles);
    free(db);
    free(rp);
    free(dir);
    return rc;
}

static int dp_shard_backup(void *ctx, uint64_t id, const struct cairn_influx_time *since,
                           struct cairn_writer *out, struct cairn_err *err)
{
    return shard_stream(ctx, id, since, NULL, out, err);
}

static int dp_shard_export(void *ctx, uint64_t id, const struct cairn_influx_time *start,
                           const struct cairn_influx_time *end, struct cairn_writer *out,
                           struct cairn_err *err)
{
    struct cairn_influx_time zero = {CAIRN_INFLUX_ZERO_TIME, 0};
    struct window win = {influx_time_ns(start, INT64_MIN), influx_time_ns(end, INT64_MAX)};
    return shard_stream(ctx, id, &zero, &win, out, err);
}

/* ---- restore ---- */

static int write_meta(const struct dirprov *p, const struct meta_data *m, struct cairn_err *err)
{
    struct buf b = {0};
    meta_encode(m, &b);
    struct cairn_writer *w;
    int rc = cairn_atomic_file_writer_open(p->meta_path, 0600, 1, &w, err);
    if (rc == CAIRN_OK) {
        rc = cairn_writer_write(w, b.p, b.len, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(w, err);
        cairn_writer_free(w);
    }
    buf_free(&b);
    return rc;
}

static int dp_meta_import(void *ctx, const uint8_t *blob, size_t len,
                          const struct cairn_influx_request *req, struct cairn_influx_idmap *map,
                          struct cairn_err *err)
{
    struct dirprov *p = ctx;
    struct meta_data src, cur;
    int rc = meta_decode(blob, len, &src, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&p->mu);
    rc = load_meta(p, &cur, err);
    if (rc != CAIRN_OK)
        goto out_src;
    rc = meta_import(&cur, &src, req, map, err);
    if (rc != CAIRN_OK)
        goto out;
    /* Names become directories: refuse anything that is not one safe path component. */
    for (size_t i = 0; i < cur.ndbs && rc == CAIRN_OK; i++) {
        const struct meta_db *d = &cur.dbs[i];
        if (!name_is_safe(d->name))
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "unsafe database name '%s'", d->name);
        for (size_t j = 0; j < d->nrps && rc == CAIRN_OK; j++)
            if (!name_is_safe(d->rps[j].name))
                rc = cairn_err_set(err, CAIRN_E_CORRUPT, "unsafe retention policy name '%s'",
                                   d->rps[j].name);
    }
    /* Create the empty shard directories, then commit the metadata (atomic replace). */
    for (size_t i = 0; i < map->n && rc == CAIRN_OK; i++) {
        const struct meta_db *d;
        const struct meta_rp *r;
        if (meta_find_shard(&cur, map->pairs[i][1], &d, &r) != 0)
            continue;
        char *dir = shard_dir(p, d->name, r->name, map->pairs[i][1]);
        rc = mkdir_p(dir, 0700, err);
        free(dir);
    }
    if (rc == CAIRN_OK)
        rc = write_meta(p, &cur, err);
out:
    meta_free(&cur);
out_src:
    pthread_mutex_unlock(&p->mu);
    meta_free(&src);
    if (rc != CAIRN_OK)
        cairn_influx_idmap_free(map);
    return rc;
}

struct staged {
    char *tmp, *final;
};

struct import_ctx {
    const char *prefix; /* "<db>/<rp>/<id>/" */
    const char *dir;
    struct staged *files;
    size_t n;
};

static int import_entry(void *vctx, const char *name, int64_t mtime, uint64_t size,
                        struct cairn_reader *data, struct cairn_err *err)
{
    struct import_ctx *c = vctx;
    (void)mtime;
    size_t pl = strlen(c->prefix);
    const char *rest = name + pl;
    if (strncmp(name, c->prefix, pl) != 0 || !name_is_safe(rest) || skip_file(rest) ||
        rest[0] == '.') {
        cairn_debug("snapshot", "shard upload: skipping entry '%s'", name);
        return CAIRN_OK;
    }
    char *tmp = xasprintf("%s/.%s.XXXXXX.tmp", c->dir, rest);
    int fd = mkostemps(tmp, 4, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return cairn_err_sys(err, 0, e, "create temporary file in '%s'", c->dir);
    }
    c->files = xrealloc(c->files, (c->n + 1) * sizeof(*c->files));
    c->files[c->n].tmp = tmp;
    c->files[c->n].final = path_join(c->dir, rest);
    c->n++;
    struct cairn_writer *w = cairn_fd_writer_new(fd, 1);
    uint64_t copied = 0;
    int rc = cairn_copy(data, w, &copied, err);
    if (rc == CAIRN_OK && copied != size)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "tar entry '%s' is truncated", name);
    if (rc == CAIRN_OK && fsync(fd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync '%s'", tmp);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

static int dp_shard_import(void *ctx, uint64_t id, struct cairn_reader *tar, struct cairn_err *err)
{
    struct dirprov *p = ctx;
    char *db = NULL, *rp = NULL, *dir = NULL;
    int rc = find_shard(p, id, &db, &rp, &dir, err);
    if (rc != CAIRN_OK)
        return rc == CAIRN_E_NOTFOUND
                   ? cairn_err_set(err, rc, "shard not found: %llu", (unsigned long long)id)
                   : rc;
    char *prefix = xasprintf("%s/%s/%llu/", db, rp, (unsigned long long)id);
    struct import_ctx c = {prefix, dir, NULL, 0};
    rc = mkdir_p(dir, 0700, err);
    if (rc == CAIRN_OK)
        rc = influx_tar_each(tar, import_entry, &c, err);
    /* Only a complete stream is installed; then every file is renamed into place at once. */
    if (rc == CAIRN_OK) {
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < c.n && rc == CAIRN_OK; i++)
            if (rename(c.files[i].tmp, c.files[i].final) != 0)
                rc = cairn_err_sys(err, 0, errno, "rename '%s'", c.files[i].tmp);
            else
                c.files[i].tmp[0] = '\0';
        pthread_mutex_unlock(&p->mu);
        if (rc == CAIRN_OK)
            rc = fsync_dir(dir, err);
    }
    for (size_t i = 0; i < c.n; i++) {
        if (c.files[i].tmp[0] != '\0')
            unlink(c.files[i].tmp);
        free(c.files[i].tmp);
        free(c.files[i].final);
    }
    free(c.files);
    free(prefix);
    free(db);
    free(rp);
    free(dir);
    return rc;
}

static int dp_shard_has_files(void *ctx, uint64_t id, struct cairn_err *err)
{
    struct dirprov *p = ctx;
    char *db = NULL, *rp = NULL, *dir = NULL;
    int rc = find_shard(p, id, &db, &rp, &dir, err);
    if (rc != CAIRN_OK)
        return rc;
    char **names = NULL;
    size_t n = 0;
    if (is_dir(dir)) {
        rc = list_dir(dir, 0, &names, &n, err);
        free_names(names, n);
    }
    free(db);
    free(rp);
    free(dir);
    return rc != CAIRN_OK ? rc : n > 0;
}

static void dp_free(void *ctx)
{
    struct dirprov *p = ctx;
    pthread_mutex_destroy(&p->mu);
    free(p->dir);
    free(p->meta_path);
    free(p->influx_dir);
    free(p);
}

int cairn_influx_dir_provider_new(const char *data_dir, const char *meta_path,
                                  struct cairn_influx_provider *out, struct cairn_err *err)
{
    if (!is_dir(data_dir))
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "data directory '%s' does not exist", data_dir);
    struct dirprov *p = xcalloc(1, sizeof(*p));
    p->dir = xstrdup(data_dir);
    p->meta_path = meta_path ? xstrdup(meta_path) : path_join(data_dir, "meta.db");
    p->influx_dir = path_join(data_dir, ".cairn-snap");
    pthread_mutex_init(&p->mu, NULL);
    /* Leftovers of a crash are only hard links: drop them. */
    struct cairn_err ignored;
    rmtree(p->influx_dir, &ignored);
    memset(out, 0, sizeof(*out));
    out->ctx = p;
    out->meta_data = dp_meta_data;
    out->shard_paths = dp_shard_paths;
    out->shard_backup = dp_shard_backup;
    out->shard_export = dp_shard_export;
    out->meta_import = dp_meta_import;
    out->shard_import = dp_shard_import;
    out->shard_has_files = dp_shard_has_files;
    out->free = dp_free;
    return CAIRN_OK;
}
