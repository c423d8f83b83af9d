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
    cairn_join(je->msg, sizeof(je->msg), &je->off, "; ", e->msg);
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
    uint64_t vanished, changed;
};

static void live_count(struct live *l, uint64_t *counter)
{
    pthread_mutex_lock(&l->mu);
    (*counter)++;
    pthread_mutex_unlock(&l->mu);
}

/* The tree, written as it is found: one compact JSON line per entry into the backup's file
 * TREE_FILE, directories by the walk before anything inside them, files by the workers once
 * stored (with their MANIFEST entry, so a restore needs no lookup). Memory stays bounded
 * however large the tree; a file that vanished before it was read never gets a line. */
#define TREE_FILE "tree"

struct tree_out {
    pthread_mutex_t mu;
    struct cairn_writer *w;
    struct cairn_manifest_file rec; /* of TREE_FILE, once committed */
    int rc;
    struct cairn_err e; /* the first failure */
    uint64_t n;
};

/* Append entry (taken) as a line. */
static void tree_put(struct tree_out *t, json_t *entry)
{
    char *text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    if (text == NULL)
        abort(); /* allocation failure */
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: written by length */
    pthread_mutex_lock(&t->mu);
    if (t->rc == CAIRN_OK && (t->rc = cairn_writer_write(t->w, text, len + 1, &t->e)) == CAIRN_OK)
        t->n++;
    pthread_mutex_unlock(&t->mu);
    free(text);
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
    char *abs, *rel;
    char file[16];
    int mode;
    int64_t size, mtime;
};

/* Files of PROBE_MIN bytes or more are judged on CAIRN_PROBE_LEN bytes sampled evenly across
 * them (io_compress_pays); smaller ones are compressed without asking. A sample that
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
    int pays = !readable || io_compress_pays(IO_PROBE_ZSTD, buf, CAIRN_PROBE_LEN);
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
    free(j->rel);
    free(j);
}

/* Store the opened file, then give its tree line. */
static void put_opened(struct put_job *j, int fd, const struct stat *sb)
{
    struct cairn_err e;
    cairn_err_clear(&e);
    struct stat after;
    struct cairn_reader *r = progress_wrap(cairn_fd_reader_new(fd, 0), j->o);
    struct cairn_file_opts fo = j->o->file;
    fo.pipeline = fo.pipeline || sb->st_size >= PIPELINE_MIN;
    /* Only AUTO asks the sample: an explicit ZSTD compresses every file, as for streams. */
    if (fo.compression == CAIRN_COMPRESS_AUTO)
        fo.compression =
            compress_pays(fd, (uint64_t)sb->st_size) ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE;
    struct cairn_manifest_file rec = {.name = j->file};
    /* Recorded on the handle per file too, so end() refuses the MANIFEST. */
    if (backup_put_stream_rec(j->b, j->file, r, (int64_t)sb->st_size, &fo, &rec, &e) != CAIRN_OK) {
        job_error(j->je, &e);
    } else {
        if (fstat(fd, &after) == 0 && !same_version(sb, &after)) {
            /* What was read is stored and hashed as read; the file was being written. */
            cairn_log(CAIRN_LOG_WARN, "storage",
                      "backup '%s': '%s' changed while it was read (stored as read)", j->b->name,
                      j->abs);
            live_count(j->live, &j->live->changed);
        }
        tree_put(j->tree, json_pack("{s:s, s:s, s:i, s:I, s:I, s:s, s:o}", "path", j->rel, "type",
                                    "file", "mode", j->mode, "size", (json_int_t)j->size, "mtime",
                                    (json_int_t)j->mtime, "file", j->file, "stored",
                                    manifest_file_json(&rec)));
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
        job_error(j->je, &e);
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
        job_error(j->je, &e);
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

struct walk {
    struct cairn_backup *b;
    const struct cairn_path_opts *o;
    struct cairn_pool *pool;
    struct job_errors *je;
    struct live *live;
    struct tree_out *tree;
    json_t *skipped;
    unsigned nfiles;
};

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The file's id is reserved here, in walk order, so ids reach the MANIFEST ascending
 * whichever worker stores them first. */
static int add_file_entry(struct walk *w, const char *abs, const char *rel, const struct stat *sb,
                          struct cairn_err *err)
{
    struct put_job *j = cairn_xcalloc(1, sizeof(*j));
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
    j->abs = cairn_xstrdup(abs);
    j->rel = cairn_xstrdup(rel);
    j->mode = (int)(sb->st_mode & 07777);
    j->size = (int64_t)sb->st_size;
    j->mtime = (int64_t)sb->st_mtime;
    cairn_pool_submit(w->pool, put_one, j);
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
    live_count(w->live, &w->live->vanished);
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
            tree_put(w->tree, json_pack("{s:s, s:s, s:i}", "path", r, "type", "dir", "mode",
                                        (int)(sb.st_mode & 07777)));
            rc = walk_dir(w, a, r, err);
        } else if (S_ISREG(sb.st_mode)) {
            rc = add_file_entry(w, a, r, &sb, err);
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

/* Walk path (a directory or one file) into the pool and the tree. */
static int walk_source(struct walk *w, const char *path, const char *base, const struct stat *sb,
                       struct cairn_err *err)
{
    if (!S_ISREG(sb->st_mode))
        return walk_dir(w, path, "", err);
    return add_file_entry(w, path, base, sb, err);
}

/* Close the tree file: its MANIFEST entry lands in meta.tree.entries_file. */
static int tree_finish(struct cairn_backup *b, struct tree_out *t, int rc, struct cairn_err *err)
{
    if (rc == CAIRN_OK && t->rc != CAIRN_OK) {
        cairn_err_copy(err, &t->e);
        rc = t->rc;
    }
    if (rc == CAIRN_OK) {
        rc = cairn_writer_close(t->w, err);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "backup '%s': write the tree", b->name);
    }
    cairn_writer_free(t->w); /* unclosed: recorded as failed, so end() refuses */
    t->w = NULL;
    return rc;
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
                             b->name, path, cairn_file_type_name(sb.st_mode));
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
    w.pool = cairn_pool_new(o.workers ? o.workers : 4, 0);
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    rc = walk_source(&w, path, base, &sb, err);
    cairn_pool_free(w.pool); /* waits for every transfer */
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "backup '%s' cancelled", b->name);
    if (rc == CAIRN_OK && je.rc != CAIRN_OK)
        rc =
            cairn_err_set(err, je.rc, "backup '%s': %zu file(s) failed: %s", b->name, je.n, je.msg);
    rc = tree_finish(b, &t, rc, err);
    pthread_mutex_destroy(&je.mu);
    pthread_mutex_destroy(&t.mu);
    if (o.stats != NULL) {
        o.stats->vanished = live.vanished;
        o.stats->changed = live.changed;
    }
    json_t *tree = json_pack("{s:s, s:s, s:i, s:o, s:I, s:o, s:I, s:I}", "root", base, "type",
                             S_ISDIR(sb.st_mode) ? "dir" : "file", "mode",
                             (int)(sb.st_mode & 07777), "entries_file", manifest_file_json(&t.rec),
                             "count", (json_int_t)t.n, "skipped", w.skipped, "vanished",
                             (json_int_t)live.vanished, "changed", (json_int_t)live.changed);
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

/* ---- reading the tree ----
 * Either TREE_FILE (meta.tree.entries_file: read as a stream, verified against its MANIFEST
 * entry, so a pass over it ends in an error if anything of it was altered) or, in backups of
 * older cairn, the array meta.tree.entries. Every entry is checked on every pass. */

#define TREE_LINE_MAX (64 << 10)
#define TREE_BUF      (256 << 10)

struct tree_ent {
    const char *path;
    int isdir, mode;
    const struct cairn_manifest_file *f; /* files: the stored file */
};

struct tree_iter {
    struct cairn_backup *b;
    json_t *entries; /* older MANIFESTs */
    struct cairn_reader *r;
    char *buf, *line;
    size_t len, pos, nline;
    json_t *cur;
    struct file_rec *rec;
    size_t i; /* entries so far */
};

static void tree_iter_free(struct tree_iter *it)
{
    cairn_reader_free(it->r);
    free(it->buf);
    free(it->line);
    json_decref(it->cur);
    cairn_file_rec_free(it->rec);
    memset(it, 0, sizeof(*it));
}

static int tree_iter_open(struct cairn_backup *b, struct tree_iter *it, struct cairn_err *err)
{
    memset(it, 0, sizeof(*it));
    it->b = b;
    json_t *tree = json_object_get(b->meta, "tree");
    json_t *file = json_object_get(tree, "entries_file");
    it->entries = json_object_get(tree, "entries");
    if (file == NULL && json_is_array(it->entries))
        return CAIRN_OK;
    if (file == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s' (kind '%s') was not made from a local path: no "
                             "meta.tree in its MANIFEST",
                             b->name, b->kind ? b->kind : "?");
    it->entries = NULL;
    struct file_rec *rec = manifest_file_parse(file);
    if (rec == NULL)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s': MANIFEST meta.tree.entries_file is invalid", b->name);
    int rc = backup_open_verified(b, &rec->f, &it->r, err);
    cairn_file_rec_free(rec);
    if (rc != CAIRN_OK)
        return rc;
    it->buf = cairn_xmalloc(TREE_BUF);
    it->line = cairn_xmalloc(TREE_LINE_MAX);
    return CAIRN_OK;
}

/* The next line of TREE_FILE into it->line; *eof at its verified end. */
static int tree_read_line(struct tree_iter *it, int *eof, struct cairn_err *err)
{
    it->nline = 0;
    *eof = 0;
    for (;;) {
        if (it->pos == it->len) {
            int rc = cairn_reader_read(it->r, it->buf, TREE_BUF, &it->len, err);
            it->pos = 0;
            if (rc != CAIRN_OK)
                return rc;
            if (it->len == 0 && it->nline == 0) {
                *eof = 1;
                return CAIRN_OK;
            }
            if (it->len == 0)
                break; /* a last line without its newline */
        }
        char c = it->buf[it->pos++];
        if (c == '\n') {
            it->line[it->nline] = '\0';
            return CAIRN_OK;
        }
        if (it->nline == TREE_LINE_MAX - 1)
            break;
        it->line[it->nline++] = c;
    }
    return cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s': tree entry %zu is cut or too long",
                         it->b->name, it->i);
}

/* The next entry, checked (a safe relative path, a known type, and for a file its stored
 * file), into *e; *done at the end. */
static int tree_next(struct tree_iter *it, struct tree_ent *e, int *done, struct cairn_err *err)
{
    json_decref(it->cur);
    it->cur = NULL;
    cairn_file_rec_free(it->rec);
    it->rec = NULL;
    *done = 0;
    if (it->entries != NULL) {
        *done = it->i == json_array_size(it->entries);
        it->cur = *done ? NULL : json_incref(json_array_get(it->entries, it->i));
    } else {
        int rc = tree_read_line(it, done, err);
        if (rc != CAIRN_OK)
            return rc;
        it->cur = *done ? NULL : json_loads(it->line, 0, NULL);
    }
    if (*done)
        return CAIRN_OK;
    const char *type = NULL, *file = NULL;
    json_t *stored = NULL;
    e->path = NULL;
    e->f = NULL;
    int ok = json_unpack(it->cur, "{s:s, s:s, s:i, s?s, s?o}", "path", &e->path, "type", &type,
                         "mode", &e->mode, "file", &file, "stored", &stored) == 0 &&
             rel_path_ok(e->path) && (strcmp(type, "dir") == 0 || strcmp(type, "file") == 0);
    e->isdir = ok && strcmp(type, "dir") == 0;
    if (ok && !e->isdir && it->entries == NULL) { /* the stored file is in the line */
        it->rec = stored != NULL ? manifest_file_parse(stored) : NULL;
        e->f = it->rec != NULL ? &it->rec->f : NULL;
    } else if (ok && !e->isdir) { /* older MANIFESTs: looked up */
        e->f = file != NULL ? cairn_backup_file_find(it->b, file) : NULL;
    }
    if (!ok || (!e->isdir && e->f == NULL))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s': MANIFEST tree entry %zu is invalid or unsafe "
                             "(path '%s')",
                             it->b->name, it->i, e->path ? e->path : "?");
    it->i++;
    return CAIRN_OK;
}

/* Directories seen by a restore, in tree order (their modes are set last, deepest first).
 * The one list a restore keeps: it grows with the directories, not the files. */
struct dir_list {
    char **path;
    int *mode;
    size_t n, cap;
};

static void dir_list_add(struct dir_list *d, const char *path, int mode)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->path = cairn_xrealloc(d->path, d->cap * sizeof(*d->path));
        d->mode = cairn_xrealloc(d->mode, d->cap * sizeof(*d->mode));
    }
    d->path[d->n] = cairn_xstrdup(path);
    d->mode[d->n++] = mode;
}

static void dir_list_free(struct dir_list *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->path[i]);
    free(d->path);
    free(d->mode);
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
    struct cairn_reader *r = NULL;
    int rc = backup_open_verified(j->b, &j->f, &r, &e);
    if (rc == CAIRN_OK)
        rc = cairn_copy(r, &pw->base, NULL, &e);
    cairn_reader_free(r);
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
    free(j->f.name);
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
static void set_dir_modes(int rootfd, const struct dir_list *dirs, int reset)
{
    for (size_t k = dirs->n; k-- > 0;) {
        int fd = open_dir_at(rootfd, dirs->path[k], 0);
        if (fd >= 0) {
            fchmod(fd, reset ? 0700 : (mode_t)(dirs->mode[k] & 07777));
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

/* The tree's file entries (sum) plus the tree file's own entry must be the MANIFEST's file
 * list exactly: a restore takes its entries from the tree, verify from the list, and the two
 * must never disagree about an edited MANIFEST. */
static int tree_matches_list(struct cairn_backup *b, struct files_sum *sum, struct cairn_err *err)
{
    struct file_rec *self =
        manifest_file_parse(json_object_get(json_object_get(b->meta, "tree"), "entries_file"));
    if (self != NULL)
        files_sum_add(sum, &self->f);
    cairn_file_rec_free(self);
    if (self == NULL || !files_sum_equal(sum, &b->list_sum))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s': the tree's %llu stored files differ from the "
                             "MANIFEST's file list of %llu (edited MANIFEST?)",
                             b->name, (unsigned long long)sum->n,
                             (unsigned long long)b->list_sum.n);
    return CAIRN_OK;
}

enum tree_pass { PASS_CHECK, PASS_MERGE_CHECK, PASS_MERGE_COMMIT };

/* One pass over the whole tree: check it (its TREE_FILE is verified by reaching its end), or
 * check the --force target against it, or move the restored files into that target. */
static int tree_pass(struct cairn_backup *b, enum tree_pass pass, struct landing_plan *p, int srcfd,
                     struct cairn_err *err)
{
    struct tree_iter it;
    int rc = tree_iter_open(b, &it, err);
    int tfd = -1;
    if (rc == CAIRN_OK && pass != PASS_CHECK &&
        (tfd = open(p->target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        rc = cairn_err_sys(err, 0, errno, "open restore target '%s'", p->target);
    struct tree_ent e;
    struct files_sum sum = {{0}, 0};
    for (int done = 0; rc == CAIRN_OK;) {
        rc = tree_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (pass == PASS_CHECK && !e.isdir)
            files_sum_add(&sum, e.f);
        if (pass == PASS_MERGE_CHECK)
            rc = merge_check_one(tfd, p->target, &e, err);
        else if (pass == PASS_MERGE_COMMIT)
            rc = merge_commit_one(p, srcfd, tfd, &e, err);
    }
    if (rc == CAIRN_OK && pass == PASS_CHECK && it.entries == NULL)
        rc = tree_matches_list(b, &sum, err);
    if (rc == CAIRN_OK && pass == PASS_MERGE_COMMIT && fsync(tfd) != 0)
        rc = cairn_err_sys(err, 0, errno, "fsync '%s'", p->target);
    if (tfd >= 0)
        close(tfd);
    tree_iter_free(&it);
    return rc;
}

int backup_check_tree(struct cairn_backup *b, struct cairn_err *err)
{
    if (json_object_get(json_object_get(b->meta, "tree"), "entries_file") == NULL)
        return CAIRN_OK;
    return tree_pass(b, PASS_CHECK, NULL, -1, err);
}

/* Put the finished temporary in place of the target. */
static int landing_commit(struct landing_plan *p, int rootfd, struct cairn_backup *b,
                          struct cairn_err *err)
{
    json_t *tree = json_object_get(b->meta, "tree");
    json_t *rmode = json_object_get(tree, "mode");
    const char *rtype = json_string_value(json_object_get(tree, "type"));
    if (p->how == LAND_INSIDE)
        return land_inside(p, err);
    if (p->how == LAND_MERGE)
        return tree_pass(b, PASS_MERGE_COMMIT, p, rootfd, err);
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

static void submit_file(struct cairn_pool *pool, const struct get_job *proto,
                        const struct tree_ent *e)
{
    struct get_job *j = cairn_xcalloc(1, sizeof(*j));
    *j = *proto;
    j->rel = cairn_xstrdup(e->path);
    j->f = *e->f;
    j->f.name = cairn_xstrdup(e->f->name);
    j->mode = e->mode;
    cairn_pool_submit(pool, get_one, j);
}

/* Write every directory and file of the tree under rootfd, in one pass (a directory comes
 * before anything inside it); each file is verified as it is written (size + SHA-256) and
 * fsync'd. The directories are listed in dirs. */
static int restore_tree(struct cairn_backup *b, int rootfd, const char *target,
                        const struct cairn_path_opts *o, struct dir_list *dirs,
                        struct cairn_err *err)
{
    struct job_errors je = {.rc = CAIRN_OK};
    pthread_mutex_init(&je.mu, NULL);
    const struct get_job proto = {.b = b, .o = o, .je = &je, .rootfd = rootfd, .target = target};
    struct tree_iter it;
    struct tree_ent e;
    struct cairn_err derr;
    int rc = tree_iter_open(b, &it, err);
    struct cairn_pool *pool = cairn_pool_new(o->workers ? o->workers : 4, 0);
    for (int done = 0; rc == CAIRN_OK && !job_failed(&je) && !path_cancelled(o);) {
        rc = tree_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (!e.isdir) {
            submit_file(pool, &proto, &e);
            continue;
        }
        int fd = open_dir_at(rootfd, e.path, 1);
        if (fd < 0) {
            cairn_err_sys(&derr, 0, errno, "create directory '%s/%s'", target, e.path);
            job_error(&je, &derr);
        } else {
            close(fd);
        }
        dir_list_add(dirs, e.path, e.mode);
    }
    cairn_pool_free(pool); /* one failure fails the restore: the pass stopped early */
    tree_iter_free(&it);
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
    int rc = tree_pass(b, PASS_CHECK, NULL, -1, err);
    if (rc != CAIRN_OK)
        return rc;
    struct landing_plan p;
    rc = landing_prepare(target, o.force, &p, err);
    if (rc == CAIRN_OK && p.how == LAND_MERGE)
        rc = tree_pass(b, PASS_MERGE_CHECK, &p, -1, err);
    if (rc != CAIRN_OK) {
        if (p.tmp != NULL)
            rmdir(p.tmp);
        landing_free(&p);
        return rc;
    }
    struct dir_list dirs = {0};
    int rootfd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        rc = cairn_err_sys(err, 0, errno, "open '%s'", p.tmp);
    if (rc == CAIRN_OK)
        rc = restore_tree(b, rootfd, p.target, &o, &dirs, err);
    if (rc == CAIRN_OK && p.how < LAND_INSIDE)
        set_dir_modes(rootfd, &dirs, 0);
    if (rc == CAIRN_OK && path_cancelled(&o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED,
                           "restore into '%s' cancelled, nothing was restored", p.target);
    if (rc == CAIRN_OK)
        rc = landing_commit(&p, rootfd, b, err);
    if (rootfd >= 0)
        close(rootfd);
    if (rc == CAIRN_OK && p.how >= LAND_INSIDE) {
        struct cairn_err ignored;
        cairn_rmtree(p.tmp, &ignored); /* empty directories left by a merge */
        int tfd = open(p.target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tfd >= 0) {
            set_dir_modes(tfd, &dirs, 0);
            close(tfd);
        }
    } else if (rc != CAIRN_OK) {
        int fd = open(p.tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            set_dir_modes(fd, &dirs, 1);
            close(fd);
        }
        struct cairn_err ignored;
        if (cairn_rmtree(p.tmp, &ignored) != CAIRN_OK)
            cairn_log(CAIRN_LOG_WARN, "storage", "could not remove '%s': %s", p.tmp, ignored.msg);
    }
    dir_list_free(&dirs);
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
