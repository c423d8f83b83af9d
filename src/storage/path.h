/* Local-path backups (cairn_backup_put_path, cairn_backup_restore_path): what their files
 * share. Private to src/storage. path_walk.c walks a tree and stores its files, path_tree.c
 * writes and reads the tree file, path_restore.c restores a tree all or nothing, path.c holds
 * the job error list and the one-call helpers. */
#ifndef CAIRN_STORAGE_PATH_H
#define CAIRN_STORAGE_PATH_H

#include <jansson.h>
#include <pthread.h>
#include <sys/stat.h>

#include "internal.h"

#define PATH_MAX_LEN 4000

/* Errors of jobs run on a worker pool (a backup's files that never reached add_file, a
 * restore's files), combined: the first code, a count and the messages joined. */
struct job_errors {
    pthread_mutex_t mu;
    int rc;
    size_t n;
    char msg[CAIRN_ERR_MSG_MAX];
    size_t off;
};
void path_job_error(struct job_errors *je, const struct cairn_err *e);
int path_job_failed(struct job_errors *je);
/* 1 when the options' cancel flag is set (read atomically: a signal handler sets it). */
int path_cancelled(const struct cairn_path_opts *o);

/* ---- the tree file (path_tree.c) ---- */

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
/* Append entry (taken) as a line; the first failure stays in t (rc, e) and stops the rest. */
void path_tree_put(struct tree_out *t, json_t *entry);
/* Close the tree file (after rc, the walk's result): its MANIFEST entry lands in t->rec. An
 * unclosed tree is freed, so its file is recorded as failed and end() refuses. */
int path_tree_finish(struct cairn_backup *b, struct tree_out *t, int rc, struct cairn_err *err);

/* Reading the tree: either TREE_FILE (meta.tree.entries_file: read as a stream, verified
 * against its MANIFEST entry, so a pass over it ends in an error if anything of it was
 * altered) or, in backups of older cairn, the array meta.tree.entries. Every entry is checked
 * on every pass (a safe relative path, a known type, and for a file its stored file). */
enum tree_type { T_DIR, T_FILE, T_SYMLINK, T_HARDLINK, T_FIFO, T_CHR, T_BLK };

struct tree_ent {
    const char *path; /* decoded (path or path_b64): raw bytes */
    int isdir, mode;
    enum tree_type type;
    const char *link; /* symlink target / hard link's first path (decoded), else NULL */
    const struct cairn_manifest_file *f; /* files: the stored file */
    json_t *j;                           /* the whole line, valid until the next call */
};

struct tree_iter {
    struct cairn_backup *b;
    json_t *entries; /* older MANIFESTs */
    struct cairn_reader *r;
    char *buf, *line;
    size_t len, pos, nline;
    json_t *cur;
    struct file_rec *rec;
    char path[PATH_MAX_LEN + 1], link[PATH_MAX_LEN + 1];
    size_t i; /* entries so far */
};
int path_tree_iter_open(struct cairn_backup *b, struct tree_iter *it, struct cairn_err *err);
/* The next entry into *e (valid until the next call); *done at the end, which for TREE_FILE
 * is its verified end. */
int path_tree_iter_next(struct tree_iter *it, struct tree_ent *e, int *done, struct cairn_err *err);
void path_tree_iter_free(struct tree_iter *it);
/* One pass over the whole tree, checking every entry; a TREE_FILE is verified by reaching its
 * end, and its files must be the MANIFEST's file list (backup_check_tree). */
int path_tree_check(struct cairn_backup *b, struct cairn_err *err);

/* ---- metadata (path_meta.c) ---- */

/* The tree format written (meta.tree.version); trees without one are version 1. */
#define TREE_VERSION 2

/* The bytes of key or key"_b64" into out (NUL-ended): 0, or -1 when absent, invalid or
 * longer than cap - 1. */
int path_json_get(const json_t *o, const char *key, char *out, size_t cap);

/* A tree line's metadata for an entry found by the walk at abs (lstat'd into sb): path,
 * type, mode, owner (ids and names), times in ns, xattrs. */
json_t *path_meta_new(const char *abs, const char *rel, const struct stat *sb, const char *type);

/* Restoring metadata. Failures that leave the data right (an owner or xattr that cannot be
 * set) are warnings, counted in *not_restored. */
struct meta_apply {
    const struct cairn_path_opts *o;
    int root;               /* euid 0: owners, devices and non-user xattrs */
    uint64_t *not_restored; /* atomically incremented */
};
/* Owner, xattrs, mode, then times, on an open file or directory (in that order: chown clears
 * setuid bits, and times go last). */
void path_meta_apply_fd(const struct meta_apply *m, int fd, const json_t *j, const char *what);
/* The same on a symlink, FIFO or device node base in dirfd, never following it (owner,
 * mode but for symlinks, times; no xattrs). */
void path_meta_apply_at(const struct meta_apply *m, int dirfd, const char *base, const json_t *j,
                        const char *what);
void path_meta_warn(const struct meta_apply *m, const char *fmt, ...) CAIRN_PRINTF(2, 3);

/* ---- the parent's files (path_parent.c) ---- */

/* At most this many files of the parent are indexed, PARENT_ENT_BYTES each (about 23 MiB);
 * files beyond them are read again. */
#define PARENT_MAX_FILES 200000
#define PARENT_ENT_BYTES 120
struct parent_map;
/* The files of b's parent (the newest complete backup of b's kind, source and scope) when b's
 * repository deduplicates and o->force_read is not set; *out NULL when there is none. A parent
 * that cannot be read is only a warning: every file is read. */
int path_parent_open(struct cairn_backup *b, const struct cairn_path_opts *o,
                     struct parent_map **out, struct cairn_err *err);
/* 1 when rel, lstat'd into sb, matches its parent's record (size, mtime, ctime, inode) and the
 * parent's chunk list is in the index: rec (but its name) is then the entry to reuse. */
int path_parent_match(struct cairn_backup *b, const struct parent_map *m, const char *rel,
                      const struct stat *sb, struct cairn_manifest_file *rec);
const char *path_parent_name(const struct parent_map *m); /* NULL: none */
void path_parent_free(struct parent_map *m);

/* --include/--exclude: 1 when path is to be restored (struct cairn_path_opts). */
int path_filter_want(const struct cairn_path_opts *o, const char *path);
int path_filter_active(const struct cairn_path_opts *o);

#endif
