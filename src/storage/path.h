/* Local-path backups (cairn_backup_put_path, cairn_backup_restore_path): what their files
 * share. Private to src/storage. path_walk.c walks a tree and stores its files, path_tree.c
 * writes and reads the tree file, path_restore.c restores a tree all or nothing, path.c holds
 * the job error list and the one-call helpers. */
#ifndef CAIRN_STORAGE_PATH_H
#define CAIRN_STORAGE_PATH_H

#include <jansson.h>
#include <pthread.h>

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
int path_tree_iter_open(struct cairn_backup *b, struct tree_iter *it, struct cairn_err *err);
/* The next entry into *e (valid until the next call); *done at the end, which for TREE_FILE
 * is its verified end. */
int path_tree_iter_next(struct tree_iter *it, struct tree_ent *e, int *done, struct cairn_err *err);
void path_tree_iter_free(struct tree_iter *it);
/* One pass over the whole tree, checking every entry; a TREE_FILE is verified by reaching its
 * end, and its files must be the MANIFEST's file list (backup_check_tree). */
int path_tree_check(struct cairn_backup *b, struct cairn_err *err);

#endif
