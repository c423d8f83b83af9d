/* Local-path restore, all or nothing: the tree is written into a temporary directory beside
 * the target (or inside it), every file verified as it is written, and only then put in
 * place; every path component is opened with O_NOFOLLOW under the temporary directory, so
 * nothing can be written outside it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/pool.h"
#include "common/util.h"
#include "internal.h"
#include "path.h"

/* Open (creating when asked) the directory rel under rootfd, never following symlinks.
 * Returns an fd or -1 with errno. */
static int open_dir_at(int rootfd, const char *rel, int create)
{
    int fd = dup(rootfd);
    if (fd < 0 || rel == NULL || *rel == '\0')
        return fd;
    char *copy = xstrdup(rel), *save = NULL;
    for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (create && mkdirat(fd, t, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            close(fd);
            free(copy);
            errno = e;
            return -1;
        }
        int nfd = openat(fd, t, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(fd);
        if (nfd < 0) {
            free(copy);
            errno = e;
            return -1;
        }
        fd = nfd;
    }
    free(copy);
    return fd;
}

/* Directories seen by a restore, in tree order (their modes are set last, deepest first).
 * The one list a restore keeps: it grows with the directories, not the files. */
struct dir_list {
    char **path;
    int *mode;
    json_t **line; /* its tree line: owner, xattrs, times */
    size_t n, cap;
};

static void dir_list_add(struct dir_list *d, const char *path, int mode, json_t *line)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->path = xrealloc(d->path, d->cap * sizeof(*d->path));
        d->mode = xrealloc(d->mode, d->cap * sizeof(*d->mode));
        d->line = xrealloc(d->line, d->cap * sizeof(*d->line));
    }
    d->path[d->n] = xstrdup(path);
    d->line[d->n] = json_incref(line);
    d->mode[d->n++] = mode;
}

static void dir_list_free(struct dir_list *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->path[i]);
        json_decref(d->line[i]);
    }
    free(d->path);
    free(d->mode);
    free(d->line);
}

/* An entry the tree gives twice, or through something that is not a directory, collides in
 * the fresh temporary: a hostile tree (docs/STORAGE.md), not an I/O failure. */
static int create_failed(struct cairn_err *e, int errnum, const char *target, const char *rel)
{
    char *shown = str_escape_dup(rel);
    int rc;
    if (errnum == EEXIST || errnum == ENOTDIR || errnum == ELOOP)
        rc = cairn_err_set(e, CAIRN_E_CORRUPT,
                           "create '%s/%s': the tree gives this path twice or through a "
                           "non-directory (invalid or unsafe tree)",
                           target, shown);
    else
        rc = cairn_err_sys(e, 0, errnum, "create '%s/%s'", target, shown);
    free(shown);
    return rc;
}

struct get_job {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct job_errors *je;
    int rootfd;
    const char *target;
    char *rel;
    struct cairn_manifest_file f; /* its name owned */
    int mode;
    json_t *line; /* its tree line (a reference) */
    const struct meta_apply *meta;
};

/* A sparse file's data: the stored stream is its extents one after the other (path_walk.c);
 * each is written at its offset into a file already truncated to its size. */
struct extent_writer {
    struct cairn_writer base;
    int fd;
    const json_t *ext;
    size_t i;
    int64_t done; /* of extent i */
};

static int extent_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct extent_writer *x = (struct extent_writer *)w;
    const uint8_t *p = buf;
    while (len > 0) {
        json_t *e = json_array_get(x->ext, x->i);
        int64_t off = json_integer_value(json_array_get(e, 0));
        int64_t n = json_integer_value(json_array_get(e, 1));
        if (e == NULL)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "more data than its sparse extents");
        size_t k = (size_t)(n - x->done) < len ? (size_t)(n - x->done) : len;
        ssize_t wr = pwrite(x->fd, p, k, (off_t)(off + x->done));
        if (wr <= 0)
            return cairn_err_sys(err, 0, wr < 0 ? errno : EIO, "write");
        p += wr;
        len -= (size_t)wr;
        x->done += wr;
        if (x->done == n) {
            x->i++;
            x->done = 0;
        }
    }
    return CAIRN_OK;
}

static int extent_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct extent_writer *x = (struct extent_writer *)w;
    if (x->i != json_array_size(x->ext))
        return cairn_err_set(err, CAIRN_E_CORRUPT, "less data than its sparse extents");
    return CAIRN_OK;
}

static const struct cairn_writer_ops extent_writer_ops = {"extents", extent_write, extent_finish,
                                                          NULL};

/* The extents of a sparse file's line: [[offset, length], ...] ascending, not overlapping,
 * inside size, adding up to the stored file's logical size. NULL when the file is not sparse;
 * *bad when the list is invalid. */
static const json_t *sparse_of(const json_t *line, const struct cairn_manifest_file *f, int *bad)
{
    const json_t *ext = json_object_get(line, "sparse");
    *bad = 0;
    if (ext == NULL)
        return NULL;
    json_t *size = json_object_get(line, "size");
    int64_t end = 0, sum = 0;
    size_t i;
    json_t *e;
    *bad = !json_is_array(ext) || !json_is_integer(size);
    json_array_foreach(ext, i, e)
    {
        json_t *o = json_array_get(e, 0), *n = json_array_get(e, 1);
        if (*bad || !json_is_integer(o) || !json_is_integer(n) || json_integer_value(o) < end ||
            json_integer_value(n) <= 0 ||
            json_integer_value(n) > json_integer_value(size) - json_integer_value(o)) {
            *bad = 1;
            break;
        }
        end = json_integer_value(o) + json_integer_value(n);
        sum += json_integer_value(n);
    }
    if (!*bad && (uint64_t)sum != f->logical_size)
        *bad = 1;
    return ext;
}

/* Reports progress and starts writeback of the restored file early (synced at the end). */
struct progress_writer {
    struct cairn_writer base;
    const struct cairn_path_opts *o;
    int fd;
    struct writeback wb;
};

static int progress_write(struct cairn_writer *w, const void *buf, size_t len,
                          struct cairn_err *err)
{
    struct progress_writer *p = (struct progress_writer *)w;
    if (path_cancelled(p->o))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_writer_write(w->next, buf, len, err);
    if (rc != CAIRN_OK)
        return rc;
    writeback(p->fd, &p->wb, len);
    if (p->o->progress)
        p->o->progress(p->o->progress_arg, len);
    return rc;
}

static const struct cairn_writer_ops progress_writer_ops = {"progress", progress_write, NULL, NULL};

/* Restore one file (a pool job). Over 80 lines: one linear sequence (open its directory,
 * create it, the sparse map, copy and verify, metadata) whose every failure must
 * unlink the half-written file, kept in one place so no exit path forgets to. */
static void get_one(void *arg)
{
    struct get_job *j = arg;
    struct cairn_err e;
    cairn_err_clear(&e);
    int dfd = -1, fd = -1;
    char *dir = NULL;
    if (path_job_failed(j->je))
        goto out; /* the restore has failed already */
    if (path_cancelled(j->o)) {
        cairn_err_set(&e, CAIRN_E_CANCELLED, "cancelled");
        goto fail;
    }
    dir = xstrdup(j->rel);
    char *slash = strrchr(dir, '/');
    const char *base = j->rel;
    if (slash) {
        *slash = '\0';
        base = j->rel + (slash + 1 - dir);
    } else {
        dir[0] = '\0';
    }
    dfd = open_dir_at(j->rootfd, dir, 1);
    if (dfd < 0) {
        cairn_err_sys(&e, 0, errno, "restore '%s/%s'", j->target, dir);
        goto fail;
    }
    int bad;
    const json_t *ext = sparse_of(j->line, &j->f, &bad);
    if (bad) {
        char *shown = str_escape_dup(j->rel);
        cairn_err_set(&e, CAIRN_E_CORRUPT, "tree entry '%s': invalid sparse extents", shown);
        free(shown);
        goto fail;
    }
    fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        create_failed(&e, errno, j->target, j->rel);
        goto fail;
    }
    struct cairn_writer *sink = cairn_fd_writer_new(fd, 0);
    if (ext != NULL) {
        struct extent_writer *x = xcalloc(1, sizeof(*x));
        cairn_writer_init(&x->base, &extent_writer_ops, NULL);
        x->fd = fd;
        x->ext = ext;
        cairn_writer_free(sink);
        sink = &x->base;
        if (ftruncate(fd, (off_t)json_integer_value(json_object_get(j->line, "size"))) != 0) {
            cairn_err_sys(&e, 0, errno, "truncate '%s/%s'", j->target, j->rel);
            cairn_writer_free(sink);
            unlinkat(dfd, base, 0);
            goto fail;
        }
    }
    struct progress_writer *pw = xcalloc(1, sizeof(*pw));
    cairn_writer_init(&pw->base, &progress_writer_ops, sink);
    pw->o = j->o;
    pw->fd = fd;
    struct cairn_reader *r = NULL;
    int rc = backup_open_verified(j->b, &j->f, &r, &e);
    if (rc == CAIRN_OK)
        rc = cairn_copy(r, &pw->base, NULL, &e);
    cairn_reader_free(r);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(&pw->base, &e);
    cairn_writer_free(&pw->base);
    if (rc == CAIRN_OK && json_object_get(j->line, "uid") == NULL &&
        fchmod(fd, (mode_t)(j->mode & 0777)) != 0) /* version 1: the mode only */
        rc = cairn_err_sys(&e, 0, errno, "chmod '%s/%s'", j->target, j->rel);
    if (rc == CAIRN_OK) /* durable by the one syncfs before the tree lands */
        path_meta_apply_fd(j->meta, fd, j->line, j->rel);
    if (rc != CAIRN_OK) {
        unlinkat(dfd, base, 0); /* never leave a file that did not verify */
        goto fail;
    }
    if (j->o->file_done != NULL)
        j->o->file_done(j->o->progress_arg);
    goto out;
fail:
    path_job_error(j->je, &e);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    free(dir);
    free(j->rel);
    free(j->f.name);
    json_decref(j->line);
    free(j);
}

/* How a finished temporary directory lands on the target (see docs/STORAGE.md). */
enum landing {
    LAND_NEW,     /* no target: rename the temporary into its place */
    LAND_REPLACE, /* an empty directory: rename the temporary over it (rename(2) replaces an
                     empty directory atomically) */
    LAND_INSIDE,  /* an empty directory whose parent we cannot use (a mount point, or not
                     writable): the temporary is inside it and its entries move up at the end */
    LAND_MERGE,   /* --force into a non-empty directory: the temporary is inside it; files
                     replace those of the same name one by one at the end */
};

struct landing_plan {
    enum landing how;
    char *target;    /* without trailing slashes */
    char *tmp;       /* the temporary directory */
    struct stat old; /* of an existing target */
};

/* The first entry of an existing directory (opened without following a symlink), or "". */
static int first_entry(const char *path, char *name, size_t cap, struct cairn_err *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cairn_err_sys(err, 0, e, "restore target '%s'", path);
    }
    name[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL && name[0] == '\0')
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            snprintf(name, cap, "%s", e->d_name);
    closedir(d);
    return CAIRN_OK;
}

/* Decide how the restore lands and create the temporary directory: beside the target
 * (".NAME.cairn-tmp-XXXXXX", same file system), or inside an empty target that is a mount
 * point or whose parent is not writable. A symlink at the target is never followed. */
static int landing_prepare(const char *target, int force, struct landing_plan *p,
                           struct cairn_err *err)
{
    memset(p, 0, sizeof(*p));
    p->target = xstrdup(target);
    for (size_t n = strlen(p->target); n > 1 && p->target[n - 1] == '/';)
        p->target[--n] = '\0';
    p->how = LAND_NEW;
    if (lstat(p->target, &p->old) == 0) {
        char first[256];
        if (S_ISLNK(p->old.st_mode))
            return cairn_err_set(err, CAIRN_E_EXISTS,
                                 "restore target '%s' is a symbolic link (not followed; restore "
                                 "into a new or empty directory)",
                                 p->target);
        if (!S_ISDIR(p->old.st_mode))
            return cairn_err_set(err, CAIRN_E_EXISTS,
                                 "restore target '%s' already exists and is not a directory",
                                 p->target);
        int rc = first_entry(p->target, first, sizeof(first), err);
        if (rc != CAIRN_OK)
            return rc;
        if (first[0] != '\0' && !force)
            return cairn_err_set(err, CAIRN_E_EXISTS,
                                 "restore target '%s' is not empty (it holds '%s'; restore into "
                                 "a new or empty directory, or use --force to replace files of "
                                 "the same name)",
                                 p->target, first);
        p->how = first[0] != '\0' ? LAND_MERGE : LAND_REPLACE;
    } else if (errno != ENOENT) {
        return cairn_err_sys(err, 0, errno, "restore target '%s'", p->target);
    }
    char dir[4096];
    path_dirname(p->target, dir, sizeof(dir));
    const char *base = strrchr(p->target, '/');
    base = base ? base + 1 : p->target;
    struct stat ps;
    if (p->how == LAND_REPLACE && (stat(dir, &ps) != 0 || ps.st_dev != p->old.st_dev))
        p->how = LAND_INSIDE; /* a mount point: beside it is another file system */
    if (p->how == LAND_REPLACE && (strcmp(base, ".") == 0 || strcmp(base, "..") == 0))
        p->how = LAND_INSIDE; /* "." cannot be renamed over */
    p->tmp = p->how >= LAND_INSIDE ? xasprintf("%s/.cairn-tmp-XXXXXX", p->target)
                                   : xasprintf("%s/.%s.cairn-tmp-XXXXXX", dir, base);
    if (mkdtemp(p->tmp) != NULL)
        return CAIRN_OK;
    int e = errno;
    if (p->how == LAND_REPLACE && (e == EACCES || e == EPERM || e == EROFS)) {
        free(p->tmp);
        p->how = LAND_INSIDE;
        p->tmp = xasprintf("%s/.cairn-tmp-XXXXXX", p->target);
        if (mkdtemp(p->tmp) != NULL)
            return CAIRN_OK;
        e = errno;
    }
    int rc = cairn_err_sys(err, 0, e, "create a temporary directory for '%s'", p->target);
    free(p->tmp);
    p->tmp = NULL;
    return rc;
}

static void landing_free(struct landing_plan *p)
{
    free(p->target);
    free(p->tmp);
}

/* Directory metadata (owner, xattrs, mode, times), deepest first (read-only directories must
 * not block writes into them, and a directory's mtime is set after everything inside it), or
 * 0700 everywhere to let a failed temporary be removed. Every directory is fsync'd. A
 * directory a filter left out (never created) is passed over. */
static void set_dir_modes(int rootfd, const struct dir_list *dirs, const struct meta_apply *m,
                          int reset)
{
    for (size_t k = dirs->n; k-- > 0;) {
        int fd = open_dir_at(rootfd, dirs->path[k], 0);
        if (fd < 0)
            continue;
        if (reset)
            fchmod(fd, 0700);
        else if (json_object_get(dirs->line[k], "uid") == NULL) /* version 1 */
            fchmod(fd, (mode_t)(dirs->mode[k] & 07777));
        else
            path_meta_apply_fd(m, fd, dirs->line[k], dirs->path[k]);
        if (!reset)
            fsync(fd);
        close(fd);
    }
}

/* Move the entries of the temporary (inside the target) up into the target, never replacing;
 * on failure the ones already moved go back. */
static int land_inside(struct landing_plan *p, struct cairn_err *err)
{
    int tfd = open(p->target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int sfd = tfd >= 0 ? open(p->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    DIR *d = sfd >= 0 ? fdopendir(dup(sfd)) : NULL;
    if (d == NULL) {
        int rc = cairn_err_sys(err, 0, errno, "open '%s'", p->tmp);
        if (sfd >= 0)
            close(sfd);
        if (tfd >= 0)
            close(tfd);
        return rc;
    }
    char **moved = NULL;
    size_t n = 0;
    int rc = CAIRN_OK;
    struct dirent *e;
    while (rc == CAIRN_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (renameat2(sfd, e->d_name, tfd, e->d_name, RENAME_NOREPLACE) != 0) {
            rc = cairn_err_sys(err, 0, errno, "move '%s' into '%s'", e->d_name, p->target);
            break;
        }
        moved = xrealloc(moved, (n + 1) * sizeof(*moved));
        moved[n++] = xstrdup(e->d_name);
    }
    for (size_t i = 0; i < n; i++) {
        if (rc != CAIRN_OK)
            renameat2(tfd, moved[i], sfd, moved[i], RENAME_NOREPLACE);
        free(moved[i]);
    }
    free(moved);
    closedir(d);
    if (rc == CAIRN_OK && fsync(tfd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync '%s'", p->target);
    close(sfd);
    close(tfd);
    return rc;
}

/* Opens the parent directory of rel under rootfd (no symlink followed); *base points into rel. */
static int open_parent_at(int rootfd, const char *rel, const char **base)
{
    const char *slash = strrchr(rel, '/');
    *base = slash ? slash + 1 : rel;
    char *dir = xasprintf("%.*s", slash ? (int)(slash - rel) : 0, rel);
    int fd = open_dir_at(rootfd, dir, 0);
    free(dir);
    return fd;
}

/* --force: before anything is written, every path of the tree must be absent from the target
 * or of the same kind (a directory for a directory; a file or symlink, which is replaced and
 * never followed, for a file). A symlink where a directory goes is refused. */
static int merge_check_one(int tfd, const char *target, const struct tree_ent *e,
                           struct cairn_err *err)
{
    const char *base;
    int rc = CAIRN_OK;
    int dfd = open_parent_at(tfd, e->path, &base);
    struct stat sb;
    if (dfd < 0) {
        if (errno != ENOENT) /* ELOOP, ENOTDIR: a symlink or a file on the way */
            rc = cairn_err_set(err, CAIRN_E_EXISTS,
                               "'%s/%s': a parent directory is a symlink or not a "
                               "directory (not followed)",
                               target, e->path);
    } else if (fstatat(dfd, base, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT)
            rc = cairn_err_sys(err, 0, errno, "stat '%s/%s'", target, e->path);
    } else if (e->isdir ? !S_ISDIR(sb.st_mode) : S_ISDIR(sb.st_mode)) {
        rc = cairn_err_set(err, CAIRN_E_EXISTS, "'%s/%s' exists and is %s", target, e->path,
                           S_ISDIR(sb.st_mode)   ? "a directory"
                           : S_ISLNK(sb.st_mode) ? "a symbolic link (not followed)"
                                                 : "not a directory");
    }
    if (dfd >= 0)
        close(dfd);
    return rc;
}

/* --force: directories are created in the target as needed, files replace those of the same
 * name (rename(2): atomic per file, a symlink is replaced, never followed). */
static int merge_commit_one(struct landing_plan *p, int srcfd, int tfd, const struct tree_ent *e,
                            struct cairn_err *err)
{
    const char *base;
    int rc = CAIRN_OK;
    if (e->isdir) {
        int fd = open_dir_at(tfd, e->path, 1);
        if (fd < 0)
            return cairn_err_sys(err, 0, errno, "create directory '%s/%s'", p->target, e->path);
        close(fd);
        return CAIRN_OK;
    }
    int sd = open_parent_at(srcfd, e->path, &base), td = open_parent_at(tfd, e->path, &base);
    if (sd < 0 || td < 0 || renameat(sd, base, td, base) != 0)
        rc = cairn_err_sys(err, 0, errno, "move '%s' into '%s'", e->path, p->target);
    if (sd >= 0)
        close(sd);
    if (td >= 0)
        close(td);
    return rc;
}

enum merge_pass { MERGE_CHECK, MERGE_COMMIT };

/* Was rel restored into the temporary under rootfd (not following a symlink)? */
static int present(int rootfd, const char *rel)
{
    const char *base;
    int dfd = open_parent_at(rootfd, rel, &base);
    struct stat sb;
    int ok = dfd >= 0 && fstatat(dfd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0;
    if (dfd >= 0)
        close(dfd);
    return ok;
}

/* --force: one pass over the whole tree, checking the target against it or moving the
 * restored files (in the temporary under srcfd) into that target. */
static int merge_pass(struct cairn_backup *b, enum merge_pass pass, struct landing_plan *p,
                      int srcfd, const struct cairn_path_opts *o, struct cairn_err *err)
{
    struct tree_iter it;
    int rc = path_tree_iter_open(b, &it, err);
    int tfd = -1;
    if (rc == CAIRN_OK &&
        (tfd = open(p->target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        rc = cairn_err_sys(err, 0, errno, "open restore target '%s'", p->target);
    struct tree_ent e;
    for (int done = 0; rc == CAIRN_OK;) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (!path_filter_want(o, e.path) && !(e.isdir && path_filter_active(o)))
            continue;
        if (pass == MERGE_CHECK)
            rc = merge_check_one(tfd, p->target, &e, err);
        else if (!present(srcfd, e.path)) /* left out by a filter, or not restorable */
            continue;
        else
            rc = merge_commit_one(p, srcfd, tfd, &e, err);
    }
    if (rc == CAIRN_OK && pass == MERGE_COMMIT && fsync(tfd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync '%s'", p->target);
    if (tfd >= 0)
        close(tfd);
    path_tree_iter_free(&it);
    return rc;
}

/* Put the finished temporary in place of the target. */
static int landing_commit(struct landing_plan *p, int rootfd, struct cairn_backup *b,
                          const struct cairn_path_opts *o, const struct meta_apply *m,
                          struct cairn_err *err)
{
    json_t *tree = json_object_get(b->meta, "tree");
    json_t *rmode = json_object_get(tree, "mode");
    const char *rtype = json_string_value(json_object_get(tree, "type"));
    if (p->how == LAND_INSIDE)
        return land_inside(p, err);
    if (p->how == LAND_MERGE)
        return merge_pass(b, MERGE_COMMIT, p, rootfd, o, err);
    if (p->how == LAND_REPLACE) {
        /* The target keeps its mode (and owner, where we may set it). */
        fchmod(rootfd, p->old.st_mode & 07777);
        if (geteuid() == 0 && fchown(rootfd, p->old.st_uid, p->old.st_gid) != 0)
            cairn_log(CAIRN_LOG_WARN, "storage", "could not keep the owner of '%s'", p->target);
    } else if (rtype && strcmp(rtype, "dir") == 0 && json_object_get(tree, "root_meta")) {
        path_meta_apply_fd(m, rootfd, json_object_get(tree, "root_meta"), ".");
    } else if (rtype && strcmp(rtype, "dir") == 0 && json_is_integer(rmode)) {
        fchmod(rootfd, (mode_t)(json_integer_value(rmode) & 07777));
    }
    if (fsync(rootfd) != 0)
        return cairn_err_sys(err, 0, errno, "fsync '%s'", p->tmp);
    int r = p->how == LAND_NEW ? renameat2(AT_FDCWD, p->tmp, AT_FDCWD, p->target, RENAME_NOREPLACE)
                               : rename(p->tmp, p->target);
    if (r != 0) {
        int e = errno == ENOTEMPTY ? EEXIST : errno;
        return cairn_err_sys(err, 0, e,
                             "move the restored tree into '%s' (did it appear or fill up "
                             "meanwhile?)",
                             p->target);
    }
    char dir[4096];
    path_dirname(p->target, dir, sizeof(dir));
    return fsync_dir(dir, err);
}

static void submit_file(struct pool *pool, const struct get_job *proto, const struct tree_ent *e)
{
    struct get_job *j = xcalloc(1, sizeof(*j));
    *j = *proto;
    j->rel = xstrdup(e->path);
    j->f = *e->f;
    j->f.name = xstrdup(e->f->name);
    j->mode = e->mode;
    j->line =
        json_deep_copy(e->j); /* the worker frees it: jansson counts references without atomics */
    pool_submit(pool, get_one, j);
}

/* Open (creating) the parent directory of rel under rootfd; *base points into rel. A parent
 * a filter left out is created here (mode 0700, its metadata set at the end). */
static int open_parent_create(int rootfd, const char *rel, const char **base)
{
    const char *slash = strrchr(rel, '/');
    *base = slash ? slash + 1 : rel;
    char *dir = xasprintf("%.*s", slash ? (int)(slash - rel) : 0, rel);
    int fd = open_dir_at(rootfd, dir, 1);
    free(dir);
    return fd;
}

/* Files a filter left out that have later hard links (nlink > 1): a later link that is
 * restored gets the content instead, and links after it link to it. Memory grows with such
 * files only, and only when a filter is given. */
struct held_first {
    char *path, *at; /* at: where its content was restored, or NULL */
    json_t *line;
    struct cairn_manifest_file f; /* its name owned */
};

struct held_list {
    struct held_first *v;
    size_t n;
};

static void held_add(struct held_list *h, const struct tree_ent *e)
{
    h->v = xrealloc(h->v, (h->n + 1) * sizeof(*h->v));
    struct held_first *x = &h->v[h->n++];
    x->path = xstrdup(e->path);
    x->at = NULL;
    x->line = json_incref(e->j);
    x->f = *e->f;
    x->f.name = xstrdup(e->f->name);
}

static void held_free(struct held_list *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].path);
        free(h->v[i].at);
        free(h->v[i].f.name);
        json_decref(h->v[i].line);
    }
    free(h->v);
}

/* What pass 2 needs besides the entry. */
struct others_ctx {
    const struct meta_apply *m;
    const struct get_job *proto;
    struct held_list *held;
    int rootfd;
    const char *target;
};

/* A hard link to the entry's first link, which must be a regular file restored already; or,
 * when a filter left the first link out, the file itself (held_first). */
static int restore_hardlink(const struct others_ctx *c, int dfd, const char *base,
                            const struct tree_ent *e, struct cairn_err *err)
{
    const char *from = e->link;
    if (!present(c->rootfd, from)) {
        struct held_first *h = NULL;
        for (size_t i = 0; i < c->held->n && h == NULL; i++)
            if (strcmp(c->held->v[i].path, e->link) == 0)
                h = &c->held->v[i];
        if (h == NULL) {
            path_meta_warn(c->m, "'%s': hard link not made: its first link '%s' was not restored",
                           e->path, e->link);
            return CAIRN_OK;
        }
        if (h->at == NULL) { /* the content goes here; failures land in the job errors */
            struct get_job *j = xcalloc(1, sizeof(*j));
            *j = *c->proto;
            j->rel = xstrdup(e->path);
            j->f = h->f;
            j->f.name = xstrdup(h->f.name);
            j->mode = (int)json_integer_value(json_object_get(h->line, "mode"));
            j->line = json_incref(h->line);
            get_one(j);
            if (!path_job_failed(c->proto->je))
                h->at = xstrdup(e->path);
            return CAIRN_OK;
        }
        from = h->at;
    }
    const char *lbase;
    int lfd = open_parent_at(c->rootfd, from, &lbase);
    struct stat sb;
    int rc = CAIRN_OK;
    if (lfd < 0 || fstatat(lfd, lbase, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) {
        char *shown = str_escape_dup(e->path);
        rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                           "tree entry '%s': a hard link to something that is not a file of "
                           "the tree (invalid or unsafe tree)",
                           shown);
        free(shown);
    } else if (linkat(lfd, lbase, dfd, base, 0) != 0) {
        rc = create_failed(err, errno, c->target, e->path);
    }
    if (lfd >= 0)
        close(lfd);
    return rc;
}

/* One symlink, hard link, FIFO or device node, after every file and directory is written:
 * nothing is ever created through it, and a hard link finds its first link in place. Device
 * nodes need root; without it they are warned about and counted. */
static int restore_other(const struct others_ctx *c, const struct tree_ent *e,
                         struct cairn_err *err)
{
    const struct meta_apply *m = c->m;
    int rootfd = c->rootfd;
    const char *target = c->target;
    if ((e->type == T_CHR || e->type == T_BLK) && !m->root) {
        path_meta_warn(m, "'%s': device node not created (needs root)", e->path);
        return CAIRN_OK;
    }
    const char *base;
    int dfd = open_parent_create(rootfd, e->path, &base);
    if (dfd < 0)
        return create_failed(err, errno, target, e->path);
    int r = 0, rc = CAIRN_OK;
    switch (e->type) {
    case T_SYMLINK: r = symlinkat(e->link, dfd, base); break;
    case T_FIFO: r = mkfifoat(dfd, base, 0600); break;
    case T_CHR:
    case T_BLK:
        r = mknodat(dfd, base, (e->type == T_CHR ? S_IFCHR : S_IFBLK) | 0600,
                    makedev((unsigned)json_integer_value(json_object_get(e->j, "rdev_major")),
                            (unsigned)json_integer_value(json_object_get(e->j, "rdev_minor"))));
        break;
    case T_HARDLINK: rc = restore_hardlink(c, dfd, base, e, err); break;
    default: break;
    }
    if (r != 0)
        rc = create_failed(err, errno, target, e->path);
    else if (rc == CAIRN_OK && e->type != T_HARDLINK)
        path_meta_apply_at(m, dfd, base, e->j, e->path);
    close(dfd);
    return rc;
}

/* Pass 1: directories and files (a directory comes before anything inside it; each file
 * verified as it is written, size + SHA-256, on the pool; all synced before landing). The
 * directories are listed in dirs. */
static int restore_files(struct cairn_backup *b, const struct get_job *proto, struct dir_list *dirs,
                         struct held_list *held, struct cairn_err *err)
{
    const struct cairn_path_opts *o = proto->o;
    struct job_errors *je = proto->je;
    int rootfd = proto->rootfd;
    const char *target = proto->target;
    struct tree_iter it;
    struct tree_ent e;
    struct cairn_err derr;
    int rc = path_tree_iter_open(b, &it, err);
    struct pool *pool = pool_new(o->workers ? o->workers : 4, 0);
    for (int done = 0; rc == CAIRN_OK && !path_job_failed(je) && !path_cancelled(o);) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        int want = path_filter_want(o, e.path);
        if (e.type == T_FILE && want)
            submit_file(pool, proto, &e);
        else if (e.type == T_FILE && path_filter_active(o) &&
                 json_integer_value(json_object_get(e.j, "nlink")) > 1)
            held_add(held, &e);
        if (!e.isdir)
            continue;
        int fd = want ? open_dir_at(rootfd, e.path, 1) : -2;
        if (fd == -1) {
            create_failed(&derr, errno, target, e.path);
            path_job_error(je, &derr);
        } else if (fd >= 0) {
            close(fd);
        }
        dir_list_add(dirs, e.path, e.mode, e.j);
    }
    pool_free(pool); /* one failure fails the restore: the pass stopped early */
    path_tree_iter_free(&it);
    return rc;
}

/* Pass 2: everything else (restore_other). */
static int restore_others(struct cairn_backup *b, const struct others_ctx *c, struct cairn_err *err)
{
    const struct cairn_path_opts *o = c->proto->o;
    struct tree_iter it;
    struct tree_ent e;
    int rc = path_tree_iter_open(b, &it, err);
    for (int done = 0; rc == CAIRN_OK && !path_cancelled(o) && !path_job_failed(c->proto->je);) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (e.type != T_DIR && e.type != T_FILE && path_filter_want(o, e.path))
            rc = restore_other(c, &e, err);
    }
    path_tree_iter_free(&it);
    return rc;
}

/* Write the tree under rootfd: files and directories, then the rest. */
static int restore_tree(struct cairn_backup *b, int rootfd, const char *target,
                        const struct cairn_path_opts *o, const struct meta_apply *m,
                        struct dir_list *dirs, struct cairn_err *err)
{
    struct job_errors je = {.rc = CAIRN_OK};
    pthread_mutex_init(&je.mu, NULL);
    const struct get_job proto = {
        .b = b, .o = o, .je = &je, .rootfd = rootfd, .target = target, .meta = m};
    struct held_list held = {0};
    int rc = restore_files(b, &proto, dirs, &held, err);
    const struct others_ctx c = {m, &proto, &held, rootfd, target};
    if (rc == CAIRN_OK && je.rc == CAIRN_OK && !path_cancelled(o))
        rc = restore_others(b, &c, err);
    held_free(&held);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "restore of backup '%s' into '%s' failed, nothing was restored",
                       b->name, target);
    else if (path_cancelled(o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED,
                           "restore of backup '%s' into '%s' cancelled, nothing was restored",
                           b->name, target);
    else if (je.rc != CAIRN_OK)
        rc = cairn_err_set(err, je.rc,
                           "restore of backup '%s' into '%s' failed for %zu item(s), nothing "
                           "was restored: %s",
                           b->name, target, je.n, je.msg);
    pthread_mutex_destroy(&je.mu);
    return rc;
}

/* The totals for opts->plan: the files but the tree and their bytes before compression; for a
 * split MANIFEST, whose list is never loaded whole, its header's logical size (the tree's
 * included), near enough for a progress display; headers written before they had one give
 * the stored size (for chunk lists far too small, hence the logical size first). */
static void restore_plan(struct cairn_backup *b, const struct cairn_path_opts *o)
{
    size_t n = cairn_backup_file_count(b);
    uint64_t files = n > 0 ? n - 1 : 0;
    uint64_t bytes = b->has_sum_logical ? b->sum_logical : cairn_backup_stored_size(b);
    if (__atomic_load_n(&b->files_loaded, __ATOMIC_ACQUIRE)) {
        bytes = 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(cairn_backup_file_at(b, i)->name, TREE_FILE) != 0)
                bytes += cairn_backup_file_at(b, i)->logical_size;
    }
    o->plan(o->progress_arg, files, bytes);
}

/* All or nothing: the tree is written into a temporary directory beside the target (or inside
 * an empty target that is a mount point), verified and fsync'd, and only then renamed into
 * place. On any failure the temporary is removed and the target is as it was. The tree is
 * read in passes (checked whole first, then written), never held in memory. */
int cairn_backup_restore_path(struct cairn_backup *b, const char *target,
                              const struct cairn_path_opts *opts, struct cairn_err *err)
{
    struct cairn_path_opts o = opts ? *opts : (struct cairn_path_opts){0};
    if (!b->read_only || b->status != CAIRN_BACKUP_COMPLETE)
        return cairn_err_set(
            err, CAIRN_E_INVALID, "restore needs a complete backup opened read-only ('%s' is %s)",
            b->name, b->read_only ? cairn_backup_status_name(b->status) : "read-write");
    int rc = path_tree_check(b, err);
    if (rc != CAIRN_OK)
        return rc;
    struct landing_plan p;
    rc = landing_prepare(target, o.force, &p, err);
    if (rc == CAIRN_OK && p.how == LAND_MERGE)
        rc = merge_pass(b, MERGE_CHECK, &p, -1, &o, err);
    if (rc != CAIRN_OK) {
        if (p.tmp != NULL)
            rmdir(p.tmp);
        landing_free(&p);
        return rc;
    }
    if (o.plan != NULL)
        restore_plan(b, &o);
    struct dir_list dirs = {0};
    uint64_t not_restored = 0;
    const struct meta_apply m = {&o, geteuid() == 0, &not_restored};
    int rootfd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        rc = cairn_err_sys(err, 0, errno, "open '%s'", p.tmp);
    if (rc == CAIRN_OK)
        rc = restore_tree(b, rootfd, p.target, &o, &m, &dirs, err);
    if (rc == CAIRN_OK && p.how < LAND_INSIDE)
        set_dir_modes(rootfd, &dirs, &m, 0);
    /* One syncfs makes the whole temporary durable before it lands, where an fsync per file
     * cost a synchronous inode write and a disk cache flush each (docs/PERFORMANCE.md,
     * "Restore"); each file's writeback was started as it was written (writeback()), and a
     * writeback error of any file is reported here (Linux 5.8+). */
    if (rc == CAIRN_OK && rootfd >= 0 && syncfs(rootfd) != 0)
        rc = cairn_err_sys(err, 0, errno, "sync the restored tree in '%s'", p.tmp);
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED,
                           "restore into '%s' cancelled, nothing was restored", p.target);
    if (rc == CAIRN_OK)
        rc = landing_commit(&p, rootfd, b, &o, &m, err);
    if (rootfd >= 0)
        close(rootfd);
    if (rc == CAIRN_OK && p.how >= LAND_INSIDE) {
        struct cairn_err ignored;
        rmtree(p.tmp, &ignored); /* empty directories left by a merge */
        int tfd = open(p.target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tfd >= 0) {
            set_dir_modes(tfd, &dirs, &m, 0);
            close(tfd);
        }
    } else if (rc != CAIRN_OK) {
        int fd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            set_dir_modes(fd, &dirs, &m, 1);
            close(fd);
        }
        struct cairn_err ignored;
        if (rmtree(p.tmp, &ignored) != CAIRN_OK)
            cairn_log(CAIRN_LOG_WARN, "storage", "could not remove '%s': %s", p.tmp, ignored.msg);
    }
    dir_list_free(&dirs);
    landing_free(&p);
    if (rc == CAIRN_OK && not_restored > 0)
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "restore of backup '%s': %llu item(s) not restored as recorded (see the "
                  "warnings above)",
                  b->name, (unsigned long long)not_restored);
    if (o.stats != NULL)
        o.stats->not_restored = not_restored;
    return rc;
}
