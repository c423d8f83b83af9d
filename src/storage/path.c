/* Local-path backup and restore: a file or directory tree <-> a backup of files f000000...
 * with the tree (relative paths, types, modes) in MANIFEST meta.tree. Transfers run on a
 * bounded worker pool. Restore resolves every path component with openat(O_NOFOLLOW) under
 * the target directory, so nothing can be written outside it. */
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
#include <unistd.h>

#include "cairn/log.h"
#include "common/pool.h"
#include "common/util.h"
#include "internal.h"

#define PATH_MAX_LEN 4000
/* Files this large get a second thread (compression and the stored hash) next to the one that
 * reads and hashes them; the thread costs about 50 us, nothing next to 8 MiB of work. */
#define PIPELINE_MIN (8 << 20)
/* Files this large are probed before they are compressed (compress_pays). */
#define PROBE_MIN (1 << 20)

/* Errors of jobs that never reached add_file (open failures), combined. */
struct job_errors {
    pthread_mutex_t mu;
    int rc;
    size_t n;
    char msg[CAIRN_ERR_MSG_MAX];
    size_t off;
};

static void job_error(struct job_errors *je, const struct cairn_err *e)
{
    pthread_mutex_lock(&je->mu);
    if (je->rc == CAIRN_OK)
        je->rc = e->code ? e->code : CAIRN_E_IO;
    je->n++;
    int n =
        snprintf(je->msg + je->off, sizeof(je->msg) - je->off, "%s%s", je->off ? "; " : "", e->msg);
    if (n > 0)
        je->off = je->off + (size_t)n < sizeof(je->msg) ? je->off + (size_t)n : sizeof(je->msg) - 1;
    pthread_mutex_unlock(&je->mu);
}

/* The flag is set from a signal handler: read it atomically. */
static int path_cancelled(const struct cairn_path_opts *o)
{
    return o->cancel != NULL && __atomic_load_n(o->cancel, __ATOMIC_RELAXED) != 0;
}

static int job_failed(struct job_errors *je)
{
    pthread_mutex_lock(&je->mu);
    int failed = je->rc != CAIRN_OK;
    pthread_mutex_unlock(&je->mu);
    return failed;
}

/* Progress reporting reader stage. */
struct progress_reader {
    struct cairn_reader base;
    const struct cairn_path_opts *o;
};

static int progress_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                         struct cairn_err *err)
{
    struct progress_reader *p = (struct progress_reader *)r;
    if (path_cancelled(p->o))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc == CAIRN_OK && *got > 0 && p->o->progress)
        p->o->progress(p->o->progress_arg, *got);
    return rc;
}

static const struct cairn_reader_ops progress_ops = {"progress", progress_read, NULL};

static struct cairn_reader *progress_wrap(struct cairn_reader *src, const struct cairn_path_opts *o)
{
    if (o->progress == NULL && o->cancel == NULL)
        return src;
    struct progress_reader *p = cairn_xcalloc(1, sizeof(*p));
    cairn_reader_init(&p->base, &progress_ops, src);
    p->o = o;
    return &p->base;
}

/* ---- backup ---- */

/* Live data: files that vanished (or stopped being regular files) between the walk and their
 * read, and files that changed while they were read. Shared by the workers. */
struct live {
    pthread_mutex_t mu;
    char **gone; /* file ids ("f000012") whose entries leave the tree */
    size_t ngone, cap;
    uint64_t vanished, changed;
};

static void live_gone(struct live *l, const char *file)
{
    pthread_mutex_lock(&l->mu);
    if (l->ngone == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->gone = cairn_xrealloc(l->gone, l->cap * sizeof(*l->gone));
    }
    l->gone[l->ngone++] = cairn_xstrdup(file);
    l->vanished++;
    pthread_mutex_unlock(&l->mu);
}

struct put_job {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct job_errors *je;
    struct live *live;
    char *abs;
    char file[16];
    uint64_t size;
};

/* Files of PROBE_MIN bytes or more are judged on CAIRN_PROBE_LEN bytes sampled evenly across
 * them (cairn_compress_pays); smaller ones are compressed without asking. A sample that
 * cannot be read keeps zstd. */
static int compress_pays(int fd, uint64_t size)
{
    if (size < PROBE_MIN)
        return 1;
    const unsigned n = CAIRN_PROBE_LEN / CAIRN_PROBE_SAMPLE;
    uint8_t *buf = cairn_xmalloc(CAIRN_PROBE_LEN);
    int readable = 1;
    for (unsigned i = 0; i < n && readable; i++) {
        off_t at = (off_t)((size - CAIRN_PROBE_SAMPLE) / (n - 1) * i);
        readable = pread(fd, buf + (size_t)i * CAIRN_PROBE_SAMPLE, CAIRN_PROBE_SAMPLE, at) ==
                   (ssize_t)CAIRN_PROBE_SAMPLE;
    }
    int pays = !readable || cairn_compress_pays(buf, CAIRN_PROBE_LEN);
    free(buf);
    return pays;
}

/* Open a file found by the walk. O_NONBLOCK: a file swapped for a FIFO must not block the
 * open; O_NOFOLLOW: nor for a symlink. Anything but a regular file is closed unread. Returns
 * the fd, -1 with errno (ENOENT/ELOOP: it is gone), or -2 for a special file. */
static int open_regular(const char *path, struct stat *sb)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, sb) != 0 || !S_ISREG(sb->st_mode)) {
        close(fd);
        return -2;
    }
    return fd;
}

static int same_version(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino;
}

static void put_one(void *arg)
{
    struct put_job *j = arg;
    struct cairn_err e;
    cairn_err_clear(&e);
    struct stat sb, after;
    if (path_cancelled(j->o)) {
        cairn_err_set(&e, CAIRN_E_CANCELLED, "cancelled");
        job_error(j->je, &e);
        free(j->abs);
        free(j);
        return;
    }
    int fd = open_regular(j->abs, &sb);
    if (fd == -1 && (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)) {
        cairn_log(CAIRN_LOG_WARN, "storage", "backup '%s': '%s' vanished before it was read",
                  j->b->name, j->abs);
        live_gone(j->live, j->file);
    } else if (fd == -1) {
        cairn_err_sys(&e, 0, errno, "backup '%s': open '%s'", j->b->name, j->abs);
        job_error(j->je, &e);
    } else if (fd == -2) {
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "backup '%s': '%s' is no longer a regular file: skipped unread", j->b->name,
                  j->abs);
        live_gone(j->live, j->file);
    } else {
        struct cairn_reader *r = progress_wrap(cairn_fd_reader_new(fd, 0), j->o);
        struct cairn_file_opts fo = j->o->file;
        fo.pipeline = fo.pipeline || sb.st_size >= PIPELINE_MIN;
        if (fo.compression == CAIRN_COMPRESS_ZSTD || fo.compression == CAIRN_COMPRESS_AUTO)
            fo.compression =
                compress_pays(fd, (uint64_t)sb.st_size) ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE;
        /* Recorded on the handle per file too, so end() refuses the MANIFEST. */
        if (cairn_backup_put_stream(j->b, j->file, r, (int64_t)sb.st_size, &fo, &e) != CAIRN_OK) {
            job_error(j->je, &e);
        } else if (fstat(fd, &after) == 0 && !same_version(&sb, &after)) {
            /* What was read is stored and hashed as read; the file was being written. */
            cairn_log(CAIRN_LOG_WARN, "storage",
                      "backup '%s': '%s' changed while it was read (stored as read)", j->b->name,
                      j->abs);
            pthread_mutex_lock(&j->live->mu);
            j->live->changed++;
            pthread_mutex_unlock(&j->live->mu);
        }
        cairn_reader_free(r);
        close(fd);
    }
    free(j->abs);
    free(j);
}

struct walk {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct cairn_pool *pool;
    struct job_errors *je;
    struct live *live;
    json_t *entries, *skipped;
    unsigned nfiles;
};

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_file_entry(struct walk *w, const char *abs, const char *rel, const struct stat *sb)
{
    struct put_job *j = cairn_xcalloc(1, sizeof(*j));
    j->b = w->b;
    j->o = w->o;
    j->je = w->je;
    j->live = w->live;
    j->abs = cairn_xstrdup(abs);
    j->size = (uint64_t)sb->st_size;
    snprintf(j->file, sizeof(j->file), "f%06u", w->nfiles++);
    json_array_append_new(w->entries, json_pack("{s:s, s:s, s:i, s:I, s:I, s:s}", "path", rel,
                                                "type", "file", "mode", (int)(sb->st_mode & 07777),
                                                "size", (json_int_t)sb->st_size, "mtime",
                                                (json_int_t)sb->st_mtime, "file", j->file));
    cairn_pool_submit(w->pool, put_one, j);
}

/* Entries of dir, sorted. A directory that vanished (or became something else) since it was
 * seen is not an error: *gone is set. */
static int read_names(const char *dir, char ***out, size_t *count, int *gone, struct cairn_err *err)
{
    *out = NULL;
    *count = 0;
    *gone = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        *gone = e == ENOENT || e == ENOTDIR || e == ELOOP;
        return *gone ? CAIRN_OK : cairn_err_sys(err, 0, e, "open directory '%s'", dir);
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((errno = 0, e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            names = cairn_xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = cairn_xstrdup(e->d_name);
    }
    int rc = errno ? cairn_err_sys(err, 0, errno, "read directory '%s'", dir) : CAIRN_OK;
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_cstr);
    *out = names;
    *count = n;
    return rc;
}

static void vanished(struct walk *w, const char *abs)
{
    cairn_log(CAIRN_LOG_WARN, "storage", "backup '%s': '%s' vanished during the walk", w->b->name,
              abs);
    pthread_mutex_lock(&w->live->mu);
    w->live->vanished++;
    pthread_mutex_unlock(&w->live->mu);
}

static int walk_dir(struct walk *w, const char *abs, const char *rel, struct cairn_err *err)
{
    char **names;
    size_t n;
    int gone;
    int rc = read_names(abs, &names, &n, &gone, err);
    if (gone && rel[0] != '\0') {
        /* Its entry is already in the tree: an empty directory is restored for it. */
        vanished(w, abs);
    } else if (gone) {
        rc = cairn_err_sys(err, 0, ENOENT, "backup source '%s'", abs);
    }
    for (size_t i = 0; i < n; i++) {
        char *a = cairn_path_join(abs, names[i]);
        char *r = rel[0] ? cairn_xasprintf("%s/%s", rel, names[i]) : cairn_xstrdup(names[i]);
        struct stat sb;
        if (rc == CAIRN_OK && path_cancelled(w->o))
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup '%s' cancelled", w->b->name);
        if (rc != CAIRN_OK) {
            /* skip: already failed */
        } else if (!cairn_name_is_safe(names[i]) || strlen(r) > PATH_MAX_LEN) {
            cairn_log(CAIRN_LOG_WARN, "storage", "skipping '%s': unsupported file name", a);
            json_array_append_new(w->skipped,
                                  json_pack("{s:s, s:s}", "path", a, "reason", "unsupported name"));
        } else if (lstat(a, &sb) != 0) {
            if (errno == ENOENT)
                vanished(w, a);
            else
                rc = cairn_err_sys(err, 0, errno, "stat '%s'", a);
        } else if (S_ISDIR(sb.st_mode)) {
            json_array_append_new(w->entries, json_pack("{s:s, s:s, s:i}", "path", r, "type", "dir",
                                                        "mode", (int)(sb.st_mode & 07777)));
            rc = walk_dir(w, a, r, err);
        } else if (S_ISREG(sb.st_mode)) {
            add_file_entry(w, a, r, &sb);
        } else {
            cairn_log(CAIRN_LOG_WARN, "storage",
                      "skipping '%s': %s (only regular files and "
                      "directories are backed up)",
                      a, cairn_file_type_name(sb.st_mode));
            json_array_append_new(w->skipped, json_pack("{s:s, s:s}", "path", r, "reason",
                                                        cairn_file_type_name(sb.st_mode)));
        }
        free(a);
        free(r);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* The tree without the entries of files that vanished before they were read. */
static json_t *drop_gone(json_t *entries, struct live *l)
{
    if (l->ngone == 0)
        return entries;
    qsort(l->gone, l->ngone, sizeof(*l->gone), cmp_cstr);
    json_t *kept = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *f = json_string_value(json_object_get(e, "file"));
        if (f == NULL || bsearch(&f, l->gone, l->ngone, sizeof(*l->gone), cmp_cstr) == NULL)
            json_array_append(kept, e);
    }
    json_decref(entries);
    return kept;
}

int cairn_backup_put_path(struct cairn_backup *b, const char *path,
                          const struct cairn_path_opts *opts, struct cairn_err *err)
{
    struct cairn_path_opts o = opts ? *opts : (struct cairn_path_opts){0};
    if (b->read_only || b->ended)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "put_path needs a read-write backup that has not ended ('%s')",
                             b->name);
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return cairn_err_sys(err, 0, errno, "backup '%s': source '%s'", b->name, path);
    if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s': source '%s' is a %s; only regular files and "
                             "directories can be backed up",
                             b->name, path, cairn_file_type_name(sb.st_mode));
    struct job_errors je = {.rc = CAIRN_OK};
    pthread_mutex_init(&je.mu, NULL);
    struct live live = {.gone = NULL};
    pthread_mutex_init(&live.mu, NULL);
    struct walk w = {.b = b,
                     .o = &o,
                     .je = &je,
                     .live = &live,
                     .entries = json_array(),
                     .skipped = json_array()};
    w.pool = cairn_pool_new(o.workers ? o.workers : 4, 0);
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    int rc = CAIRN_OK;
    if (S_ISREG(sb.st_mode)) {
        char *name = cairn_xstrdup(base);
        add_file_entry(&w, path, name, &sb);
        free(name);
    } else {
        rc = walk_dir(&w, path, "", err);
    }
    cairn_pool_free(w.pool); /* waits for every transfer */
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup '%s' cancelled", b->name);
    if (rc == CAIRN_OK && je.rc != CAIRN_OK)
        rc =
            cairn_err_set(err, je.rc, "backup '%s': %zu file(s) failed: %s", b->name, je.n, je.msg);
    pthread_mutex_destroy(&je.mu);
    if (o.stats != NULL) {
        o.stats->vanished = live.vanished;
        o.stats->changed = live.changed;
    }
    json_t *tree =
        json_pack("{s:s, s:s, s:i, s:o, s:o, s:I, s:I}", "root", base, "type",
                  S_ISDIR(sb.st_mode) ? "dir" : "file", "mode", (int)(sb.st_mode & 07777),
                  "entries", drop_gone(w.entries, &live), "skipped", w.skipped, "vanished",
                  (json_int_t)live.vanished, "changed", (json_int_t)live.changed);
    for (size_t i = 0; i < live.ngone; i++)
        free(live.gone[i]);
    free(live.gone);
    pthread_mutex_destroy(&live.mu);
    pthread_mutex_lock(&b->mu);
    json_object_set_new(b->meta, "tree", tree);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

/* ---- restore ---- */

/* Validate a relative path from the MANIFEST: components are safe names. */
static int rel_path_ok(const char *p)
{
    if (p == NULL || *p == '\0' || *p == '/' || strlen(p) > PATH_MAX_LEN)
        return 0;
    char *copy = cairn_xstrdup(p), *save = NULL;
    int ok = 1;
    size_t ncomp = 0;
    for (const char *c = p; *c; c++)
        if (c[0] == '/' && (c[1] == '/' || c[1] == '\0'))
            ok = 0; /* empty component */
    for (char *t = strtok_r(copy, "/", &save); t && ok; t = strtok_r(NULL, "/", &save)) {
        ok = cairn_name_is_safe(t);
        ncomp++;
    }
    free(copy);
    return ok && ncomp > 0;
}

/* Open (creating when asked) the directory rel under rootfd, never following symlinks.
 * Returns an fd or -1 with errno. */
static int open_dir_at(int rootfd, const char *rel, int create)
{
    int fd = dup(rootfd);
    if (fd < 0 || rel == NULL || *rel == '\0')
        return fd;
    char *copy = cairn_xstrdup(rel), *save = NULL;
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

struct get_job {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct job_errors *je;
    int rootfd;
    const char *target;
    char *rel, *file;
    int mode;
};

/* Reports progress and starts writeback of the restored file early (it is fsync'd at the end). */
struct progress_writer {
    struct cairn_writer base;
    const struct cairn_path_opts *o;
    int fd;
    struct cairn_writeback wb;
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
    cairn_writeback(p->fd, &p->wb, len);
    if (p->o->progress)
        p->o->progress(p->o->progress_arg, len);
    return rc;
}

static const struct cairn_writer_ops progress_writer_ops = {"progress", progress_write, NULL, NULL};

static void get_one(void *arg)
{
    struct get_job *j = arg;
    struct cairn_err e;
    cairn_err_clear(&e);
    int dfd = -1, fd = -1;
    char *dir = NULL;
    if (job_failed(j->je))
        goto out; /* the restore has failed already */
    if (path_cancelled(j->o)) {
        cairn_err_set(&e, CAIRN_E_CANCELLED, "cancelled");
        goto fail;
    }
    dir = cairn_xstrdup(j->rel);
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
    fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        cairn_err_sys(&e, 0, errno, "create '%s/%s'", j->target, j->rel);
        goto fail;
    }
    struct progress_writer *pw = cairn_xcalloc(1, sizeof(*pw));
    cairn_writer_init(&pw->base, &progress_writer_ops, cairn_fd_writer_new(fd, 0));
    pw->o = j->o;
    pw->fd = fd;
    int rc = cairn_backup_get_stream(j->b, j->file, &pw->base, NULL, &e);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(&pw->base, &e);
    cairn_writer_free(&pw->base);
    if (rc == CAIRN_OK && fsync(fd) != 0)
        rc = cairn_err_sys(&e, 0, errno, "fsync '%s/%s'", j->target, j->rel);
    if (rc == CAIRN_OK && fchmod(fd, (mode_t)(j->mode & 0777)) != 0)
        rc = cairn_err_sys(&e, 0, errno, "chmod '%s/%s'", j->target, j->rel);
    if (rc != CAIRN_OK) {
        unlinkat(dfd, base, 0); /* never leave a file that did not verify */
        goto fail;
    }
    goto out;
fail:
    job_error(j->je, &e);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    free(dir);
    free(j->rel);
    free(j->file);
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
    p->target = cairn_xstrdup(target);
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
    cairn_dirname(p->target, dir, sizeof(dir));
    const char *base = strrchr(p->target, '/');
    base = base ? base + 1 : p->target;
    struct stat ps;
    if (p->how == LAND_REPLACE && (stat(dir, &ps) != 0 || ps.st_dev != p->old.st_dev))
        p->how = LAND_INSIDE; /* a mount point: beside it is another file system */
    if (p->how == LAND_REPLACE && (strcmp(base, ".") == 0 || strcmp(base, "..") == 0))
        p->how = LAND_INSIDE; /* "." cannot be renamed over */
    p->tmp = p->how >= LAND_INSIDE ? cairn_xasprintf("%s/.cairn-tmp-XXXXXX", p->target)
                                   : cairn_xasprintf("%s/.%s.cairn-tmp-XXXXXX", dir, base);
    if (mkdtemp(p->tmp) != NULL)
        return CAIRN_OK;
    int e = errno;
    if (p->how == LAND_REPLACE && (e == EACCES || e == EPERM || e == EROFS)) {
        free(p->tmp);
        p->how = LAND_INSIDE;
        p->tmp = cairn_xasprintf("%s/.cairn-tmp-XXXXXX", p->target);
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

/* Directory modes, deepest first (read-only directories must not block writes into them), or
 * 0700 everywhere to let a failed temporary be removed. Every directory is fsync'd. */
static void set_dir_modes(int rootfd, json_t *entries, int reset)
{
    for (size_t k = json_array_size(entries); k-- > 0;) {
        json_t *e = json_array_get(entries, k);
        if (strcmp(json_string_value(json_object_get(e, "type")), "dir") != 0)
            continue;
        int fd = open_dir_at(rootfd, json_string_value(json_object_get(e, "path")), 0);
        if (fd >= 0) {
            mode_t m = (mode_t)(json_integer_value(json_object_get(e, "mode")) & 07777);
            fchmod(fd, reset ? 0700 : m);
            if (!reset)
                fsync(fd);
            close(fd);
        }
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
        moved = cairn_xrealloc(moved, (n + 1) * sizeof(*moved));
        moved[n++] = cairn_xstrdup(e->d_name);
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
    char *dir = cairn_xasprintf("%.*s", slash ? (int)(slash - rel) : 0, rel);
    int fd = open_dir_at(rootfd, dir, 0);
    free(dir);
    return fd;
}

/* --force: before anything is written, every path of the tree must be absent from the target
 * or of the same kind (a directory for a directory; a file or symlink, which is replaced and
 * never followed, for a file). A symlink where a directory goes is refused. */
static int merge_check(const char *target, json_t *entries, struct cairn_err *err)
{
    int tfd = open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tfd < 0)
        return cairn_err_sys(err, 0, errno, "open restore target '%s'", target);
    int rc = CAIRN_OK;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path")), *base;
        int isdir = strcmp(json_string_value(json_object_get(e, "type")), "dir") == 0;
        int dfd = open_parent_at(tfd, path, &base);
        struct stat sb;
        if (dfd < 0) {
            if (errno != ENOENT) /* ELOOP, ENOTDIR: a symlink or a file on the way */
                rc = cairn_err_set(err, CAIRN_E_EXISTS,
                                   "'%s/%s': a parent directory is a symlink or not a "
                                   "directory (not followed)",
                                   target, path);
        } else if (fstatat(dfd, base, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                rc = cairn_err_sys(err, 0, errno, "stat '%s/%s'", target, path);
        } else if (isdir ? !S_ISDIR(sb.st_mode) : S_ISDIR(sb.st_mode)) {
            rc = cairn_err_set(err, CAIRN_E_EXISTS, "'%s/%s' exists and is %s", target, path,
                               S_ISDIR(sb.st_mode)   ? "a directory"
                               : S_ISLNK(sb.st_mode) ? "a symbolic link (not followed)"
                                                     : "not a directory");
        }
        if (dfd >= 0)
            close(dfd);
        if (rc != CAIRN_OK)
            break;
    }
    close(tfd);
    return rc;
}

/* --force: directories are created in the target as needed, files replace those of the same
 * name (rename(2): atomic per file, a symlink is replaced, never followed). */
static int merge_commit(struct landing_plan *p, int srcfd, json_t *entries, struct cairn_err *err)
{
    int tfd = open(p->target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tfd < 0)
        return cairn_err_sys(err, 0, errno, "open restore target '%s'", p->target);
    int rc = CAIRN_OK;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path")), *base;
        if (strcmp(json_string_value(json_object_get(e, "type")), "dir") == 0) {
            int fd = open_dir_at(tfd, path, 1);
            if (fd < 0)
                rc = cairn_err_sys(err, 0, errno, "create directory '%s/%s'", p->target, path);
            else
                close(fd);
        } else {
            int sd = open_parent_at(srcfd, path, &base), td = open_parent_at(tfd, path, &base);
            if (sd < 0 || td < 0 || renameat(sd, base, td, base) != 0)
                rc = cairn_err_sys(err, 0, errno, "move '%s' into '%s'", path, p->target);
            if (sd >= 0)
                close(sd);
            if (td >= 0)
                close(td);
        }
        if (rc != CAIRN_OK)
            break;
    }
    if (rc == CAIRN_OK && fsync(tfd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync '%s'", p->target);
    close(tfd);
    return rc;
}

/* Put the finished temporary in place of the target. */
static int landing_commit(struct landing_plan *p, int rootfd, json_t *tree, struct cairn_err *err)
{
    json_t *rmode = json_object_get(tree, "mode");
    const char *rtype = json_string_value(json_object_get(tree, "type"));
    if (p->how == LAND_INSIDE)
        return land_inside(p, err);
    if (p->how == LAND_MERGE)
        return merge_commit(p, rootfd, json_object_get(tree, "entries"), err);
    if (p->how == LAND_REPLACE) {
        /* The target keeps its mode (and owner, where we may set it). */
        fchmod(rootfd, p->old.st_mode & 07777);
        if (geteuid() == 0 && fchown(rootfd, p->old.st_uid, p->old.st_gid) != 0)
            cairn_log(CAIRN_LOG_WARN, "storage", "could not keep the owner of '%s'", p->target);
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
    cairn_dirname(p->target, dir, sizeof(dir));
    return cairn_fsync_dir(dir, err);
}

/* Every entry's path, type, mode and stored file, checked before anything touches the disk. */
static int tree_check(struct cairn_backup *b, json_t *entries, struct cairn_err *err)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *path = NULL, *type = NULL, *file = NULL;
        int mode = 0;
        if (json_unpack(e, "{s:s, s:s, s:i, s?s}", "path", &path, "type", &type, "mode", &mode,
                        "file", &file) != 0 ||
            !rel_path_ok(path) || (strcmp(type, "dir") != 0 && strcmp(type, "file") != 0) ||
            (strcmp(type, "file") == 0 &&
             (file == NULL || cairn_backup_file_find(b, file) == NULL)))
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "backup '%s': MANIFEST tree entry %zu is invalid or unsafe "
                                 "(path '%s')",
                                 b->name, i, path ? path : "?");
    }
    return CAIRN_OK;
}

/* Write every directory and file of the tree under rootfd; each file is verified as it is
 * written (size + SHA-256) and fsync'd. */
static int restore_tree(struct cairn_backup *b, int rootfd, const char *target, json_t *entries,
                        const struct cairn_path_opts *o, struct cairn_err *err)
{
    struct job_errors je = {.rc = CAIRN_OK};
    pthread_mutex_init(&je.mu, NULL);
    struct cairn_err derr;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *path = json_string_value(json_object_get(e, "path"));
        if (strcmp(type, "dir") == 0) {
            int fd = open_dir_at(rootfd, path, 1);
            if (fd < 0) {
                cairn_err_sys(&derr, 0, errno, "create directory '%s/%s'", target, path);
                job_error(&je, &derr);
            } else {
                close(fd);
            }
        }
    }
    struct cairn_pool *pool = cairn_pool_new(o->workers ? o->workers : 4, 0);
    json_array_foreach(entries, i, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        if (strcmp(type, "file") != 0 || job_failed(&je))
            continue; /* one failure fails the restore: stop early */
        struct get_job *j = cairn_xcalloc(1, sizeof(*j));
        j->b = b;
        j->o = o;
        j->je = &je;
        j->rootfd = rootfd;
        j->target = target;
        j->rel = cairn_xstrdup(json_string_value(json_object_get(e, "path")));
        j->file = cairn_xstrdup(json_string_value(json_object_get(e, "file")));
        j->mode = (int)json_integer_value(json_object_get(e, "mode"));
        cairn_pool_submit(pool, get_one, j);
    }
    cairn_pool_free(pool);
    int rc = CAIRN_OK;
    if (path_cancelled(o))
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

/* All or nothing: the tree is written into a temporary directory beside the target (or inside
 * an empty target that is a mount point), verified and fsync'd, and only then renamed into
 * place. On any failure the temporary is removed and the target is as it was. */
int cairn_backup_restore_path(struct cairn_backup *b, const char *target,
                              const struct cairn_path_opts *opts, struct cairn_err *err)
{
    struct cairn_path_opts o = opts ? *opts : (struct cairn_path_opts){0};
    if (!b->read_only || b->status != CAIRN_BACKUP_COMPLETE)
        return cairn_err_set(
            err, CAIRN_E_INVALID, "restore needs a complete backup opened read-only ('%s' is %s)",
            b->name, b->read_only ? cairn_backup_status_name(b->status) : "read-write");
    json_t *tree = json_object_get(b->meta, "tree");
    json_t *entries = json_object_get(tree, "entries");
    if (!json_is_array(entries))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s' (kind '%s') was not made from a local path: no "
                             "meta.tree in its MANIFEST",
                             b->name, b->kind ? b->kind : "?");
    int rc = tree_check(b, entries, err);
    if (rc != CAIRN_OK)
        return rc;
    struct landing_plan p;
    rc = landing_prepare(target, o.force, &p, err);
    if (rc == CAIRN_OK && p.how == LAND_MERGE)
        rc = merge_check(p.target, entries, err);
    if (rc != CAIRN_OK) {
        if (p.tmp != NULL)
            rmdir(p.tmp);
        landing_free(&p);
        return rc;
    }
    int rootfd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        rc = cairn_err_sys(err, 0, errno, "open '%s'", p.tmp);
    if (rc == CAIRN_OK)
        rc = restore_tree(b, rootfd, p.target, entries, &o, err);
    if (rc == CAIRN_OK && p.how < LAND_INSIDE)
        set_dir_modes(rootfd, entries, 0);
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED,
                           "restore into '%s' cancelled, nothing was restored", p.target);
    if (rc == CAIRN_OK)
        rc = landing_commit(&p, rootfd, tree, err);
    if (rootfd >= 0)
        close(rootfd);
    if (rc == CAIRN_OK && p.how >= LAND_INSIDE) {
        struct cairn_err ignored;
        cairn_rmtree(p.tmp, &ignored); /* empty directories left by a merge */
        int tfd = open(p.target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tfd >= 0) {
            set_dir_modes(tfd, entries, 0);
            close(tfd);
        }
    } else if (rc != CAIRN_OK) {
        int fd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            set_dir_modes(fd, entries, 1);
            close(fd);
        }
        struct cairn_err ignored;
        if (cairn_rmtree(p.tmp, &ignored) != CAIRN_OK)
            cairn_log(CAIRN_LOG_WARN, "storage", "could not remove '%s': %s", p.tmp, ignored.msg);
    }
    landing_free(&p);
    return rc;
}

/* ---- one-call helpers ---- */

/* name: the backup's name, or NULL for a default one (tag, written to out). */
static int backup_path(struct cairn_storage *st, const char *name, const char *tag, char *out,
                       size_t cap, const char *path, const struct cairn_path_opts *opts,
                       struct cairn_err *err)
{
    char *abs = realpath(path, NULL);
    if (abs == NULL)
        return cairn_err_sys(err, 0, errno, "backup source '%s'", path);
    struct cairn_backup *b = NULL;
    int rc = name != NULL ? cairn_storage_start(st, name, &b, err)
                          : cairn_storage_start_auto(st, tag, out, cap, &b, err);
    if (name == NULL)
        name = out;
    if (rc != CAIRN_OK) {
        free(abs);
        return rc;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    char *source = cairn_xasprintf("%s:%s", host, abs);
    rc = cairn_backup_set_source(b, source, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_kind(b, "files", err);
    if (rc == CAIRN_OK) { /* the whole tree at abs */
        json_t *scope = json_pack("{s:s}", "path", abs);
        rc = cairn_backup_set_scope(b, scope, err);
        json_decref(scope);
    }
    if (rc == CAIRN_OK)
        rc = cairn_backup_put_path(b, abs, opts, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_end(b, err);
    if (rc != CAIRN_OK) {
        struct cairn_err ae;
        if (cairn_backup_abort(b, &ae) != CAIRN_OK)
            cairn_log(CAIRN_LOG_ERROR, "storage", "could not remove failed backup '%s': %s", name,
                      ae.msg);
    }
    cairn_backup_free(b);
    free(source);
    free(abs);
    return rc;
}

int cairn_storage_backup_path(struct cairn_storage *st, const char *name, const char *path,
                              const struct cairn_path_opts *opts, struct cairn_err *err)
{
    if (name == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup needs a name");
    return backup_path(st, name, NULL, NULL, 0, path, opts, err);
}

int cairn_storage_backup_path_auto(struct cairn_storage *st, const char *tag, char *name,
                                   size_t cap, const char *path, const struct cairn_path_opts *opts,
                                   struct cairn_err *err)
{
    return backup_path(st, NULL, tag, name, cap, path, opts, err);
}

int cairn_storage_restore_path(struct cairn_storage *st, const char *name, const char *target,
                               const struct cairn_path_opts *opts, struct cairn_err *err)
{
    struct cairn_backup *b = NULL;
    int rc = cairn_storage_open_backup(st, name, &b, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_restore_path(b, target, opts, err);
    cairn_backup_free(b);
    return rc;
}
