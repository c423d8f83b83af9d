/* The tree of a local-path backup, as the stored file TREE_FILE: one compact JSON line per
 * entry, a directory before anything inside it, written as the walk finds entries and read
 * back in passes, never whole in memory (docs/STORAGE.md "Local-path backups"). */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"
#include "path.h"

/* ---- writing ---- */

/* Append entry (taken) as a line. */
void path_tree_put(struct tree_out *t, json_t *entry)
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

/* Close the tree file: its MANIFEST entry lands in meta.tree.entries_file. */
int path_tree_finish(struct cairn_backup *b, struct tree_out *t, int rc, struct cairn_err *err)
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

/* ---- reading ---- */

#define TREE_LINE_MAX (64 << 10)
#define TREE_BUF      (256 << 10)

/* Validate a relative path from the MANIFEST: components are safe names. */
static int rel_path_ok(const char *p)
{
    if (p == NULL || *p == '\0' || *p == '/' || strlen(p) > PATH_MAX_LEN)
        return 0;
    char *copy = xstrdup(p), *save = NULL;
    int ok = 1;
    size_t ncomp = 0;
    for (const char *c = p; *c; c++)
        if (c[0] == '/' && (c[1] == '/' || c[1] == '\0'))
            ok = 0; /* empty component */
    for (char *t = strtok_r(copy, "/", &save); t && ok; t = strtok_r(NULL, "/", &save)) {
        ok = name_is_safe(t);
        ncomp++;
    }
    free(copy);
    return ok && ncomp > 0;
}

void path_tree_iter_free(struct tree_iter *it)
{
    cairn_reader_free(it->r);
    free(it->buf);
    free(it->line);
    json_decref(it->cur);
    file_rec_free(it->rec);
    memset(it, 0, sizeof(*it));
}

int path_tree_iter_open(struct cairn_backup *b, struct tree_iter *it, struct cairn_err *err)
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
    file_rec_free(rec);
    if (rc != CAIRN_OK)
        return rc;
    it->buf = xmalloc(TREE_BUF);
    it->line = xmalloc(TREE_LINE_MAX);
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
int path_tree_iter_next(struct tree_iter *it, struct tree_ent *e, int *done, struct cairn_err *err)
{
    json_decref(it->cur);
    it->cur = NULL;
    file_rec_free(it->rec);
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

/* The tree's file entries (sum) plus the tree file's own entry must be the MANIFEST's file
 * list exactly: a restore takes its entries from the tree, verify from the list, and the two
 * must never disagree about an edited MANIFEST. */
static int tree_matches_list(struct cairn_backup *b, struct files_sum *sum, struct cairn_err *err)
{
    struct file_rec *self =
        manifest_file_parse(json_object_get(json_object_get(b->meta, "tree"), "entries_file"));
    if (self != NULL)
        files_sum_add(sum, &self->f);
    file_rec_free(self);
    if (self == NULL || !files_sum_equal(sum, &b->list_sum))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s': the tree's %llu stored files differ from the "
                             "MANIFEST's file list of %llu (edited MANIFEST?)",
                             b->name, (unsigned long long)sum->n,
                             (unsigned long long)b->list_sum.n);
    return CAIRN_OK;
}

int path_tree_check(struct cairn_backup *b, struct cairn_err *err)
{
    struct tree_iter it;
    int rc = path_tree_iter_open(b, &it, err);
    struct tree_ent e;
    struct files_sum sum = {{0}, 0};
    for (int done = 0; rc == CAIRN_OK;) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (!e.isdir)
            files_sum_add(&sum, e.f);
    }
    if (rc == CAIRN_OK && it.entries == NULL)
        rc = tree_matches_list(b, &sum, err);
    path_tree_iter_free(&it);
    return rc;
}

int backup_check_tree(struct cairn_backup *b, struct cairn_err *err)
{
    if (json_object_get(json_object_get(b->meta, "tree"), "entries_file") == NULL)
        return CAIRN_OK;
    return path_tree_check(b, err);
}
