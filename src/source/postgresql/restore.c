/* PostgreSQL: restore a base backup into a new data directory that pg_verifybackup accepts and
 * the server starts from (crash recovery replays the WAL in pg_wal up to the backup's end).
 *
 * base.tar is extracted into the directory, pg_wal.tar's segments into its pg_wal/, and
 * backup_manifest beside them. Tablespaces cannot go back where they were (that is the live
 * server's): each <oid>.tar is extracted into INTO.tablespaces/<oid>, and pg_tblspc/<oid>
 * becomes a symbolic link to it. Everything is built in temporary directories beside INTO,
 * synced, and renamed into place last, so a failed restore leaves nothing behind. Hostile
 * archives are refused: absolute names, "..", links anywhere but pg_tblspc/<oid>, and members
 * of other types; no link exists while archives are extracted, so none can be followed. */
#define _GNU_SOURCE /* syncfs */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/tar.h"
#include "common/util.h"
#include "pg.h"

enum { EX_BASE, EX_SPACE, EX_WAL };

struct links {
    char oid[32][12];
    size_t n;
};

/* name made a safe relative path in out: no absolute path, no empty, "." or ".." component. */
static int safe_name(const char *name, char *out, size_t cap)
{
    while (name[0] == '.' && name[1] == '/')
        name += 2;
    size_t n = strlen(name);
    while (n > 0 && name[n - 1] == '/')
        n--;
    if (n == 0 || n >= cap || name[0] == '/')
        return 0;
    memcpy(out, name, n);
    out[n] = '\0';
    for (char *c = out; c != NULL;) {
        char *next = strchr(c, '/');
        size_t len = next ? (size_t)(next - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c = next ? next + 1 : NULL;
    }
    return 1;
}

static int write_member(struct tar_reader *t, const char *path, uint8_t *buf, struct cairn_err *err)
{
    char dir[PATH_MAX];
    path_dirname(path, dir, sizeof(dir));
    int rc = mkdir_p(dir, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "create '%s'", path);
    for (;;) {
        size_t got = 0;
        rc = tar_reader_read(t, buf, CAIRN_IO_BUFSIZE, &got, err);
        if (rc != CAIRN_OK || got == 0)
            break;
        rc = write_all(fd, buf, got, path, err);
        if (rc != CAIRN_OK)
            break;
    }
    if (close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn_err_sys(err, 0, errno, "close '%s'", path);
    return rc;
}

/* One member of an archive of the given kind into dir. */
static int member(struct tar_reader *t, const struct tar_entry *e, const char *dir, int kind,
                  struct links *l, uint8_t *buf, struct cairn_err *err)
{
    char rel[1024];
    if (!safe_name(e->name, rel, sizeof(rel)) || (kind == EX_WAL && strchr(rel, '/') != NULL))
        return cairn_err_set(err, CAIRN_E_CORRUPT, "refused member name '%.200s'", e->name);
    char *path = path_join(dir, rel);
    int rc = CAIRN_OK;
    if (e->typeflag == '0') {
        rc = write_member(t, path, buf, err);
    } else if (e->typeflag == '5' && kind != EX_WAL) {
        rc = mkdir_p(path, 0700, err);
    } else if (e->typeflag == '2' && kind == EX_BASE && strncmp(rel, "pg_tblspc/", 10) == 0 &&
               strspn(rel + 10, "0123456789") == strlen(rel + 10) && strlen(rel + 10) > 0 &&
               strlen(rel + 10) < sizeof(l->oid[0]) && l->n < 32) {
        snprintf(l->oid[l->n++], sizeof(l->oid[0]), "%s", rel + 10);
    } else {
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "refused member '%.200s' of type '%c'", rel,
                           e->typeflag > ' ' && e->typeflag < 127 ? e->typeflag : '?');
    }
    free(path);
    return rc;
}

/* Extract the backup's file (a tar) into dir, then read it to its end, where the storage
 * checks it against the MANIFEST. */
static int extract(struct cairn_backup *b, const char *file, const char *dir, int kind,
                   struct links *l, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = cairn_backup_get_file(b, file, &r, err);
    if (rc != CAIRN_OK)
        return rc;
    if (rc == CAIRN_OK)
        rc = mkdir_p(dir, 0700, err);
    struct tar_reader *t = tar_reader_new(r, TAR_READ_AHEAD | TAR_READ_WHOLE_PADDING);
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    while (rc == CAIRN_OK) {
        const struct tar_entry *e = NULL;
        rc = tar_reader_next(t, &e, err);
        if (rc != CAIRN_OK || e == NULL)
            break;
        rc = member(t, e, dir, kind, l, buf, err);
    }
    tar_reader_free(t);
    for (size_t got = 1; rc == CAIRN_OK && got > 0;)
        rc = cairn_reader_read(r, buf, CAIRN_IO_BUFSIZE, &got, err);
    free(buf);
    cairn_reader_free(r);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "postgresql restore of backup '%s', %s",
                              cairn_backup_name(b), file);
    return CAIRN_OK;
}

static int copy_file(struct cairn_backup *b, const char *file, const char *path,
                     struct cairn_err *err)
{
    struct cairn_writer *w = NULL;
    int rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_get_stream(b, file, w, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

struct restore {
    struct cairn_backup *b;
    char *tmp, *tmp_ts; /* being built */
    char *final_ts;     /* INTO.tablespaces, absolute */
    struct links l;
};

static int tablespaces(struct restore *x, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t i = 0; rc == CAIRN_OK && i < cairn_backup_file_count(x->b); i++) {
        const char *name = cairn_backup_file_at(x->b, i)->name;
        size_t d = strspn(name, "0123456789");
        if (d == 0 || strcmp(name + d, ".tar") != 0)
            continue;
        char oid[16];
        snprintf(oid, sizeof(oid), "%.*s", (int)d, name);
        char *dir = path_join(x->tmp_ts, oid);
        rc = extract(x->b, name, dir, EX_SPACE, NULL, err);
        free(dir);
    }
    return rc;
}

static int links(struct restore *x, struct cairn_err *err)
{
    for (size_t i = 0; i < x->l.n; i++) {
        char *target = path_join(x->final_ts, x->l.oid[i]);
        char *have = path_join(x->tmp_ts, x->l.oid[i]);
        char *link = xasprintf("%s/pg_tblspc/%s", x->tmp, x->l.oid[i]);
        struct stat st;
        int rc = CAIRN_OK;
        if (stat(have, &st) != 0)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "base.tar links tablespace %s, whose archive %s.tar is missing",
                               x->l.oid[i], x->l.oid[i]);
        else if (symlink(target, link) != 0)
            rc = cairn_err_sys(err, 0, errno, "symlink '%s'", link);
        free(target);
        free(have);
        free(link);
        if (rc != CAIRN_OK)
            return rc;
    }
    return CAIRN_OK;
}

static int build(struct restore *x, struct cairn_err *err)
{
    int rc = tablespaces(x, err);
    if (rc == CAIRN_OK)
        rc = extract(x->b, PG_BASE_TAR, x->tmp, EX_BASE, &x->l, err);
    if (rc == CAIRN_OK)
        rc = links(x, err);
    if (rc == CAIRN_OK) {
        char *wal = path_join(x->tmp, "pg_wal");
        rc = extract(x->b, PG_WAL_TAR, wal, EX_WAL, NULL, err);
        free(wal);
    }
    if (rc == CAIRN_OK) {
        char *man = path_join(x->tmp, PG_MANIFEST);
        rc = copy_file(x->b, PG_MANIFEST, man, err);
        free(man);
    }
    if (rc == CAIRN_OK) {
        int fd = open(x->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) != 0)
            rc = cairn_err_sys(err, 0, errno, "sync '%s'", x->tmp);
        if (fd >= 0)
            close(fd);
    }
    return rc;
}

int pg_restore_into(struct cairn_backup *b, const char *dir, struct cairn_err *err)
{
    struct stat st;
    char into[PATH_MAX], parent[PATH_MAX], real[PATH_MAX];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--; /* "DIR/" names DIR */
    if (n == 0 || n >= sizeof(into) || (n == 1 && dir[0] == '/'))
        return cairn_err_set(err, CAIRN_E_INVALID, "postgresql restore: bad directory '%s'", dir);
    memcpy(into, dir, n);
    into[n] = '\0';
    if (lstat(into, &st) == 0)
        return cairn_err_set(err, CAIRN_E_EXISTS,
                             "postgresql restore: '%s' already exists (a restore builds a new "
                             "data directory)",
                             into);
    path_dirname(into, parent, sizeof(parent));
    if (realpath(parent, real) == NULL)
        return cairn_err_sys(err, 0, errno, "postgresql restore: '%s'", parent);
    const char *base = strrchr(into, '/') ? strrchr(into, '/') + 1 : into;
    struct restore x = {.b = b};
    x.final_ts = xasprintf("%s/%s.tablespaces", real, base);
    int rc = CAIRN_OK;
    if (lstat(x.final_ts, &st) == 0)
        rc = cairn_err_set(err, CAIRN_E_EXISTS, "postgresql restore: '%s' already exists",
                           x.final_ts);
    if (rc == CAIRN_OK) {
        x.tmp = xasprintf("%s/.%s.cairn-XXXXXX", real, base);
        x.tmp_ts = xasprintf("%s/.%s.tablespaces.cairn-XXXXXX", real, base);
        if (mkdtemp(x.tmp) == NULL || mkdtemp(x.tmp_ts) == NULL)
            rc = cairn_err_sys(err, 0, errno, "postgresql restore: temporary directory in '%s'",
                               real);
    }
    if (rc == CAIRN_OK)
        rc = build(&x, err);
    int spaces = x.l.n > 0;
    if (rc == CAIRN_OK && spaces && rename(x.tmp_ts, x.final_ts) != 0)
        rc = cairn_err_sys(err, 0, errno, "rename to '%s'", x.final_ts);
    if (rc == CAIRN_OK && rename(x.tmp, into) != 0) {
        rc = cairn_err_sys(err, 0, errno, "rename to '%s'", into);
        if (spaces)
            rmtree(x.final_ts, NULL);
    }
    if (rc == CAIRN_OK)
        rc = fsync_dir(real, err);
    if (x.tmp != NULL) /* after the renames: already gone */
        rmtree(x.tmp, NULL);
    if (x.tmp_ts != NULL)
        rmtree(x.tmp_ts, NULL);
    free(x.tmp);
    free(x.tmp_ts);
    free(x.final_ts);
    return rc;
}
