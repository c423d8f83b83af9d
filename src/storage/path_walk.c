/* Local-path backup: walk a file or directory tree and store each regular file as f000000...
 * on a bounded worker pool, with the tree (relative paths, types, modes) in the stored file
 * TREE_FILE; live data (files vanishing or changing under the walk) is counted, not fatal. */
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

/* Files this large get a second thread (compression and the stored hash) next to the one that
 * reads and hashes them; the thread costs about 50 us, nothing next to 8 MiB of work. */
#define PIPELINE_MIN (8 << 20)
/* Files this large are probed before they are compressed (compress_pays). */
#define PROBE_MIN (1 << 20)

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
    struct progress_reader *p = xcalloc(1, sizeof(*p));
    cairn_reader_init(&p->base, &progress_ops, src);
    p->o = o;
    return &p->base;
}

/* Live data: files that vanished (or stopped being regular files) between the walk and their
 * read, and files that changed while they were read. Shared by the workers. */
struct live {
    pthread_mutex_t mu;
    uint64_t vanished, changed;
};

static void live_count(struct live *l, uint64_t *counter)
{
    pthread_mutex_lock(&l->mu);
    (*counter)++;
    pthread_mutex_unlock(&l->mu);
}

/* File ids sort in the order they are given ("f000000".."f999999", then "g0001000000"...), as
 * a streaming MANIFEST needs. */
static void file_id(unsigned n, char out[16])
{
    if (n < 1000000)
        snprintf(out, 16, "f%06u", n);
    else
        snprintf(out, 16, "g%010u", n);
}

struct put_job {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct job_errors *je;
    struct live *live;
    struct tree_out *tree;
    char *abs;
    json_t *line; /* the entry's metadata (path_meta_new), completed once stored */
    char file[16];
};

/* Files of PROBE_MIN bytes or more are judged on PROBE_LEN bytes sampled evenly across
 * them (io_compress_pays); smaller ones are compressed without asking. A sample that
 * cannot be read keeps zstd. */
static int compress_pays(int fd, uint64_t size)
{
    if (size < PROBE_MIN)
        return 1;
    const unsigned n = PROBE_LEN / PROBE_SAMPLE;
    uint8_t *buf = xmalloc(PROBE_LEN);
    int readable = 1;
    for (unsigned i = 0; i < n && readable; i++) {
        off_t at = (off_t)((size - PROBE_SAMPLE) / (n - 1) * i);
        readable =
            pread(fd, buf + (size_t)i * PROBE_SAMPLE, PROBE_SAMPLE, at) == (ssize_t)PROBE_SAMPLE;
    }
    int pays = !readable || io_compress_pays(IO_PROBE_ZSTD, buf, PROBE_LEN);
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

static void put_job_free(struct put_job *j)
{
    free(j->abs);
    json_decref(j->line);
    free(j);
}

/* ---- sparse files ---- */

/* A file with holes is stored as its data extents, one after the other; the tree line lists
 * them ("sparse": [[offset, length], ...]). More extents than this: stored whole (zstd makes
 * little of the zeros) and restored dense. */
#define SPARSE_MAX_EXTENTS 1024

struct extent_reader {
    struct cairn_reader base;
    int fd;
    int64_t (*ext)[2];
    size_t n, i;
    int64_t done; /* of extent i */
};

/* Reads the extents in order; a file that shrank meanwhile reads as zeros (it is counted
 * as changed by the caller, as for any file changed while read). */
static int extent_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                       struct cairn_err *err)
{
    struct extent_reader *x = (struct extent_reader *)r;
    *got = 0;
    while (x->i < x->n && x->done == x->ext[x->i][1]) {
        x->i++;
        x->done = 0;
    }
    if (x->i == x->n)
        return CAIRN_OK;
    int64_t left = x->ext[x->i][1] - x->done;
    size_t want = (size_t)left < cap ? (size_t)left : cap;
    ssize_t n = pread(x->fd, buf, want, (off_t)(x->ext[x->i][0] + x->done));
    if (n < 0)
        return cairn_err_sys(err, 0, errno, "read");
    if (n == 0) { /* shrank */
        memset(buf, 0, want);
        n = (ssize_t)want;
    }
    x->done += n;
    *got = (size_t)n;
    return CAIRN_OK;
}

static void extent_free(struct cairn_reader *r)
{
    free(((struct extent_reader *)r)->ext);
    free(r);
}

static const struct cairn_reader_ops extent_ops = {"extents", extent_read, extent_free, NULL};

/* The data extents of a file with holes (SEEK_DATA/SEEK_HOLE), or 0 when it has none, or
 * too many. *data: bytes in them. */
static size_t sparse_extents(int fd, const struct stat *sb, int64_t (**out)[2], int64_t *data)
{
    *out = NULL;
    *data = 0;
    if ((int64_t)sb->st_blocks * 512 >= (int64_t)sb->st_size || sb->st_size == 0)
        return 0;
    int64_t(*ext)[2] = NULL;
    size_t n = 0;
    off_t at = 0;
    while (at < sb->st_size) {
        off_t d = lseek(fd, at, SEEK_DATA);
        if (d < 0)
            break; /* ENXIO: holes to the end */
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0 || h <= d || n == SPARSE_MAX_EXTENTS) {
            free(ext);
            return 0;
        }
        if (h > sb->st_size)
            h = sb->st_size;
        ext = xrealloc(ext, (n + 1) * sizeof(*ext));
        ext[n][0] = d;
        ext[n][1] = h - d;
        *data += h - d;
        n++;
        at = h;
    }
    if (*data >= (int64_t)sb->st_size) {
        free(ext);
        return 0;
    }
    *out = ext;
    return n ? n : (size_t)-1; /* all holes: no extent, but sparse */
}

/* Store the opened file, then give its tree line. */
static void put_opened(struct put_job *j, int fd, const struct stat *sb)
{
    struct cairn_err e;
    cairn_err_clear(&e);
    struct stat after;
    int64_t(*ext)[2] = NULL, data = 0;
    size_t next = sparse_extents(fd, sb, &ext, &data);
    json_t *sparse = NULL;
    struct cairn_reader *src = cairn_fd_reader_new(fd, 0);
    if (next != 0) {
        if (next == (size_t)-1)
            next = 0;
        sparse = json_array();
        for (size_t i = 0; i < next; i++)
            json_array_append_new(
                sparse, json_pack("[I, I]", (json_int_t)ext[i][0], (json_int_t)ext[i][1]));
        struct extent_reader *x = xcalloc(1, sizeof(*x));
        cairn_reader_init(&x->base, &extent_ops, NULL);
        x->fd = fd;
        x->ext = ext;
        x->n = next;
        cairn_reader_free(src);
        src = &x->base;
    }
    struct cairn_reader *r = progress_wrap(src, j->o);
    struct cairn_file_opts fo = j->o->file;
    fo.pipeline = fo.pipeline || sb->st_size >= PIPELINE_MIN;
    /* Only AUTO asks the sample: an explicit ZSTD compresses every file, as for streams. */
    if (fo.compression == CAIRN_COMPRESS_AUTO)
        fo.compression =
            compress_pays(fd, (uint64_t)sb->st_size) ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE;
    struct cairn_manifest_file rec = {.name = j->file};
    /* Recorded on the handle per file too, so end() refuses the MANIFEST. */
    if (backup_put_stream_rec(j->b, j->file, r, sparse ? data : (int64_t)sb->st_size, &fo, &rec,
                              &e) != CAIRN_OK) {
        path_job_error(j->je, &e);
        json_decref(sparse);
    } else {
        if (fstat(fd, &after) == 0 && !same_version(sb, &after)) {
            /* What was read is stored and hashed as read; the file was being written. */
            cairn_log(CAIRN_LOG_WARN, "storage",
                      "backup '%s': '%s' changed while it was read (stored as read)", j->b->name,
                      j->abs);
            live_count(j->live, &j->live->changed);
        }
        json_object_set_new(j->line, "size", json_integer((json_int_t)sb->st_size));
        json_object_set_new(j->line, "file", json_string(j->file));
        json_object_set_new(j->line, "stored", manifest_file_json(&rec));
        if (sparse != NULL)
            json_object_set_new(j->line, "sparse", sparse);
        path_tree_put(j->tree, j->line);
        j->line = NULL;
        if (j->o->file_done != NULL)
            j->o->file_done(j->o->progress_arg);
    }
    cairn_reader_free(r);
}

static void put_one(void *arg)
{
    struct put_job *j = arg;
    struct cairn_err e;
    cairn_err_clear(&e);
    struct stat sb;
    if (path_cancelled(j->o)) {
        cairn_err_set(&e, CAIRN_E_CANCELLED, "cancelled");
        path_job_error(j->je, &e);
        backup_unreserve(j->b, j->file);
        put_job_free(j);
        return;
    }
    int fd = open_regular(j->abs, &sb);
    if (fd == -1 && (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)) {
        cairn_log(CAIRN_LOG_WARN, "storage", "backup '%s': '%s' vanished before it was read",
                  j->b->name, j->abs);
        live_count(j->live, &j->live->vanished);
    } else if (fd == -1) {
        cairn_err_sys(&e, 0, errno, "backup '%s': open '%s'", j->b->name, j->abs);
        path_job_error(j->je, &e);
    } else if (fd == -2) {
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "backup '%s': '%s' is no longer a regular file: skipped unread", j->b->name,
                  j->abs);
        live_count(j->live, &j->live->vanished);
    } else {
        put_opened(j, fd, &sb);
        close(fd);
    }
    backup_unreserve(j->b, j->file); /* when it was never added */
    put_job_free(j);
}

/* Hard links: the first path seen of every file with more than one link, by (dev, ino);
 * later ones are "hardlink" entries naming it. Memory grows with such files only. */
struct inode_ent {
    dev_t dev;
    ino_t ino;
    char *rel;
};

struct walk {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct pool *pool;
    struct job_errors *je;
    struct live *live;
    struct tree_out *tree;
    json_t *skipped;
    unsigned nfiles;
    struct inode_ent *links;
    size_t nlinks, caplinks;   /* open addressing, caplinks a power of two */
    struct parent_map *parent; /* NULL: every file is read */
    uint64_t unchanged_files, unchanged_bytes;
};

/* The first path of sb's inode, or NULL after recording rel as it. */
static const char *first_link(struct walk *w, const struct stat *sb, const char *rel)
{
    if (2 * (w->nlinks + 1) > w->caplinks) {
        size_t cap = w->caplinks ? 2 * w->caplinks : 256;
        struct inode_ent *t = xcalloc(cap, sizeof(*t));
        for (size_t i = 0; i < w->caplinks; i++)
            if (w->links[i].rel != NULL) {
                size_t k = (size_t)(w->links[i].ino * 31 + w->links[i].dev) & (cap - 1);
                while (t[k].rel != NULL)
                    k = (k + 1) & (cap - 1);
                t[k] = w->links[i];
            }
        free(w->links);
        w->links = t;
        w->caplinks = cap;
    }
    size_t k = (size_t)(sb->st_ino * 31 + sb->st_dev) & (w->caplinks - 1);
    for (; w->links[k].rel != NULL; k = (k + 1) & (w->caplinks - 1))
        if (w->links[k].ino == sb->st_ino && w->links[k].dev == sb->st_dev)
            return w->links[k].rel;
    w->links[k] = (struct inode_ent){sb->st_dev, sb->st_ino, xstrdup(rel)};
    w->nlinks++;
    return NULL;
}

static void links_free(struct walk *w)
{
    for (size_t i = 0; i < w->caplinks; i++)
        free(w->links[i].rel);
    free(w->links);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file unchanged since the parent: its line and MANIFEST entry name the parent's chunk
 * list; nothing of it is read. */
static int reuse_file(struct walk *w, struct put_job *j, const struct cairn_manifest_file *rec,
                      const struct stat *sb, struct cairn_err *err)
{
    int rc = backup_add_record(w->b, j->file, rec, err);
    if (rc != CAIRN_OK) {
        backup_unreserve(w->b, j->file);
        return rc;
    }
    json_object_set_new(j->line, "size", json_integer((json_int_t)sb->st_size));
    json_object_set_new(j->line, "file", json_string(j->file));
    json_object_set_new(j->line, "stored", manifest_file_json(rec));
    path_tree_put(w->tree, j->line);
    j->line = NULL;
    w->unchanged_files++;
    w->unchanged_bytes += (uint64_t)sb->st_size;
    /* Processed, as restic counts them: a progress display's total is reached. */
    if (w->o->progress != NULL && sb->st_size > 0)
        w->o->progress(w->o->progress_arg, (uint64_t)sb->st_size);
    if (w->o->file_done != NULL)
        w->o->file_done(w->o->progress_arg);
    return CAIRN_OK;
}

/* The file's id is reserved here, in walk order, so ids reach the MANIFEST ascending
 * whichever worker stores them first. */
static int add_file_entry(struct walk *w, const char *abs, const char *rel, const struct stat *sb,
                          struct cairn_err *err)
{
    struct put_job *j = xcalloc(1, sizeof(*j));
    j->b = w->b;
    j->o = w->o;
    j->je = w->je;
    j->live = w->live;
    j->tree = w->tree;
    file_id(w->nfiles++, j->file);
    int rc = backup_reserve(w->b, j->file, err);
    if (rc != CAIRN_OK) {
        free(j);
        return rc;
    }
    j->abs = xstrdup(abs);
    j->line = path_meta_new(abs, rel, sb, "file");
    /* What restic's "did not change" rule compares against a parent backup's record (size,
     * mtime, ctime, inode): recorded for the skip that comes with the chunk store. */
    json_object_set_new(
        j->line, "ctime_ns",
        json_integer((json_int_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec));
    json_object_set_new(j->line, "ino", json_integer((json_int_t)sb->st_ino));
    if (sb->st_nlink > 1)
        json_object_set_new(j->line, "nlink", json_integer((json_int_t)sb->st_nlink));
    struct cairn_manifest_file rec = {.name = j->file};
    if (path_parent_match(w->b, w->parent, rel, sb, &rec)) {
        rc = reuse_file(w, j, &rec, sb, err);
        put_job_free(j);
        return rc;
    }
    pool_submit(w->pool, put_one, j);
    return CAIRN_OK;
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
            names = xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = xstrdup(e->d_name);
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
    live_count(w->live, &w->live->vanished);
}

/* A non-directory found by the walk: a file (or a later link of one), a symlink, a FIFO or a
 * device node; a socket is skipped with a note. */
static int walk_other(struct walk *w, const char *a, const char *r, const struct stat *sb,
                      struct cairn_err *err)
{
    if (S_ISREG(sb->st_mode)) {
        const char *first = sb->st_nlink > 1 ? first_link(w, sb, r) : NULL;
        if (first == NULL)
            return add_file_entry(w, a, r, sb, err);
        json_t *j = path_meta_new(a, r, sb, "hardlink");
        json_set_name(j, "link", first);
        json_object_set_new(j, "nlink", json_integer((json_int_t)sb->st_nlink));
        path_tree_put(w->tree, j);
        return CAIRN_OK;
    }
    if (S_ISLNK(sb->st_mode)) {
        char target[PATH_MAX_LEN + 1];
        ssize_t n = readlink(a, target, sizeof(target));
        if (n < 0 && (errno == ENOENT || errno == EINVAL)) {
            vanished(w, a); /* gone, or no longer a symlink */
            return CAIRN_OK;
        }
        if (n < 0 || n == (ssize_t)sizeof(target) || n == 0)
            return cairn_err_sys(err, 0, n < 0 ? errno : ENAMETOOLONG, "readlink '%s'", a);
        target[n] = '\0';
        json_t *j = path_meta_new(a, r, sb, "symlink");
        json_set_name(j, "target", target);
        path_tree_put(w->tree, j);
        return CAIRN_OK;
    }
    if (S_ISFIFO(sb->st_mode) || S_ISCHR(sb->st_mode) || S_ISBLK(sb->st_mode)) {
        json_t *j = path_meta_new(a, r, sb,
                                  S_ISFIFO(sb->st_mode)  ? "fifo"
                                  : S_ISCHR(sb->st_mode) ? "chr"
                                                         : "blk");
        if (!S_ISFIFO(sb->st_mode)) {
            json_object_set_new(j, "rdev_major", json_integer((json_int_t)major(sb->st_rdev)));
            json_object_set_new(j, "rdev_minor", json_integer((json_int_t)minor(sb->st_rdev)));
        }
        path_tree_put(w->tree, j);
        return CAIRN_OK;
    }
    char *shown = str_escape_dup(a);
    cairn_log(CAIRN_LOG_WARN, "storage", "skipping '%s': %s (not backed up)", shown,
              file_type_name(sb->st_mode));
    free(shown);
    json_t *s = json_pack("{s:s}", "reason", file_type_name(sb->st_mode));
    json_set_name(s, "path", r);
    json_array_append_new(w->skipped, s);
    return CAIRN_OK;
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
        char *a = path_join(abs, names[i]);
        char *r = rel[0] ? xasprintf("%s/%s", rel, names[i]) : xstrdup(names[i]);
        struct stat sb;
        if (rc == CAIRN_OK && path_cancelled(w->o))
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup '%s' cancelled", w->b->name);
        if (rc != CAIRN_OK) {
            /* skip: already failed */
        } else if (strlen(r) > PATH_MAX_LEN) {
            char *shown = str_escape_dup(a);
            cairn_log(CAIRN_LOG_WARN, "storage", "skipping '%s': path too long", shown);
            free(shown);
            json_t *s = json_pack("{s:s}", "reason", "path too long");
            json_set_name(s, "path", r);
            json_array_append_new(w->skipped, s);
        } else if (lstat(a, &sb) != 0) {
            if (errno == ENOENT)
                vanished(w, a);
            else
                rc = cairn_err_sys(err, 0, errno, "stat '%s'", a);
        } else if (S_ISDIR(sb.st_mode)) {
            path_tree_put(w->tree, path_meta_new(a, r, &sb, "dir"));
            rc = walk_dir(w, a, r, err);
        } else {
            rc = walk_other(w, a, r, &sb, err);
        }
        free(a);
        free(r);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* Walk path (a directory or one file) into the pool and the tree. */
static int walk_source(struct walk *w, const char *path, const char *base, const struct stat *sb,
                       struct cairn_err *err)
{
    if (!S_ISREG(sb->st_mode))
        return walk_dir(w, path, "", err);
    return add_file_entry(w, path, base, sb, err);
}

/* Files are stored by a worker pool while the walk goes on; the tree and the MANIFEST's file
 * list are streamed (backup_set_streaming), so memory does not grow with the tree. */
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
                             b->name, path, file_type_name(sb.st_mode));
    struct tree_out t = {.rc = CAIRN_OK, .rec = {.name = TREE_FILE}};
    const struct cairn_file_opts zo = {.compression = CAIRN_COMPRESS_ZSTD};
    int rc = cairn_backup_add_file_opts(b, TREE_FILE, -1, &zo, &t.w, err);
    if (rc != CAIRN_OK)
        return rc;
    backup_writer_record_to(t.w, &t.rec);
    backup_set_streaming(b);
    pthread_mutex_init(&t.mu, NULL);
    struct job_errors je = {.rc = CAIRN_OK};
    pthread_mutex_init(&je.mu, NULL);
    struct live live = {.vanished = 0};
    pthread_mutex_init(&live.mu, NULL);
    struct walk w = {
        .b = b, .o = &o, .je = &je, .live = &live, .tree = &t, .skipped = json_array()};
    rc = path_parent_open(b, &o, &w.parent, err);
    w.pool = pool_new(o.workers ? o.workers : 4, 0);
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    if (rc == CAIRN_OK)
        rc = walk_source(&w, path, base, &sb, err);
    pool_free(w.pool); /* waits for every transfer */
    links_free(&w);
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup '%s' cancelled", b->name);
    if (rc == CAIRN_OK && je.rc != CAIRN_OK)
        rc =
            cairn_err_set(err, je.rc, "backup '%s': %zu file(s) failed: %s", b->name, je.n, je.msg);
    rc = path_tree_finish(b, &t, rc, err);
    pthread_mutex_destroy(&je.mu);
    pthread_mutex_destroy(&t.mu);
    if (o.stats != NULL) {
        o.stats->vanished = live.vanished;
        o.stats->changed = live.changed;
        o.stats->unchanged_files = w.unchanged_files;
        o.stats->unchanged_bytes = w.unchanged_bytes;
    }
    json_t *tree = json_pack("{s:i, s:s, s:i, s:o, s:I, s:o, s:I, s:I}", "version", TREE_VERSION,
                             "type", S_ISDIR(sb.st_mode) ? "dir" : "file", "mode",
                             (int)(sb.st_mode & 07777), "entries_file", manifest_file_json(&t.rec),
                             "count", (json_int_t)t.n, "skipped", w.skipped, "vanished",
                             (json_int_t)live.vanished, "changed", (json_int_t)live.changed);
    json_set_name(tree, "root", base);
    if (w.parent != NULL) /* which backup unchanged files were taken from */
        json_object_set_new(tree, "unchanged_from",
                            json_pack("{s:s, s:I, s:I}", "backup", path_parent_name(w.parent),
                                      "files", (json_int_t)w.unchanged_files, "bytes",
                                      (json_int_t)w.unchanged_bytes));
    path_parent_free(w.parent);
    if (S_ISDIR(sb.st_mode)) { /* the root directory's owner, times and xattrs */
        json_t *rm = path_meta_new(path, ".", &sb, "dir");
        json_object_del(rm, "path");
        json_object_set_new(tree, "root_meta", rm);
    }
    pthread_mutex_destroy(&live.mu);
    pthread_mutex_lock(&b->mu);
    json_object_set_new(b->meta, "tree", tree);
    pthread_mutex_unlock(&b->mu);
    return rc;
}
