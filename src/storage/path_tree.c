/* The tree of a local-path backup, as the stored file TREE_FILE: one compact JSON line per
 * entry, a directory before anything inside it, written as the walk finds entries and read
 * back in passes, never whole in memory (docs/STORAGE.md "Local-path backups"). */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
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

#define TREE_LINE_MAX (1 << 20) /* xattrs are capped below it (path_meta.c) */
#define TREE_BUF      (256 << 10)

/* Validate a relative path from the MANIFEST: components are names (any bytes but '/' and
 * NUL, at most 255), never empty, "." or "..". */
static int rel_path_ok(const char *p)
{
    if (p == NULL || *p == '\0' || *p == '/' || strlen(p) > PATH_MAX_LEN)
        return 0;
    for (const char *c = p; *c;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == 0 || n > 255 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (end == NULL)
            break;
        c = end + 1;
        if (*c == '\0')
            return 0; /* a trailing '/' */
    }
    return 1;
}

static const char *const type_names[] = {"dir",  "file", "symlink", "hardlink",
                                         "fifo", "chr",  "blk"};

static int type_parse(const char *s, enum tree_type *t)
{
    for (size_t i = 0; s != NULL && i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (strcmp(s, type_names[i]) == 0) {
            *t = (enum tree_type)i;
            return 1;
        }
    return 0;
}

/* Type-specific fields: a symlink's target (any bytes), a hard link's first path (a safe
 * relative path), a device's numbers; a sparse file's extents are checked on restore. */
static int type_fields_ok(struct tree_iter *it, struct tree_ent *e)
{
    e->link = NULL;
    if (e->type == T_SYMLINK || e->type == T_HARDLINK) {
        if (path_json_get(it->cur, e->type == T_SYMLINK ? "target" : "link", it->link,
                          sizeof(it->link)) != 0 ||
            it->link[0] == '\0')
            return 0;
        e->link = it->link;
        return e->type == T_SYMLINK || rel_path_ok(e->link);
    }
    if (e->type == T_CHR || e->type == T_BLK)
        return json_is_integer(json_object_get(it->cur, "rdev_major")) &&
               json_is_integer(json_object_get(it->cur, "rdev_minor"));
    return 1;
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
    e->j = it->cur;
    int ok = json_unpack(it->cur, "{s:s, s:i, s?s, s?o}", "type", &type, "mode", &e->mode, "file",
                         &file, "stored", &stored) == 0 &&
             path_json_get(it->cur, "path", it->path, sizeof(it->path)) == 0 &&
             rel_path_ok(it->path) && type_parse(type, &e->type) && type_fields_ok(it, e);
    e->path = ok ? it->path : NULL;
    e->isdir = ok && e->type == T_DIR;
    int isfile = ok && e->type == T_FILE;
    if (isfile && it->entries == NULL) { /* the stored file is in the line */
        it->rec = stored != NULL ? manifest_file_parse(stored) : NULL;
        e->f = it->rec != NULL ? &it->rec->f : NULL;
    } else if (isfile) { /* older MANIFESTs: looked up */
        e->f = file != NULL ? cairn_backup_file_find(it->b, file) : NULL;
    }
    if (!ok || (isfile && e->f == NULL)) {
        char *shown = path_json_get(it->cur, "path", it->path, sizeof(it->path)) == 0
                          ? str_escape_dup(it->path)
                          : xstrdup("?");
        int rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "backup '%s': MANIFEST tree entry %zu is invalid or unsafe "
                               "(path '%s')",
                               it->b->name, it->i, shown);
        free(shown);
        return rc;
    }
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

/* The directories seen by a pass, to check each entry's place: a set of their paths (open
 * addressing, FNV-1a). Memory grows with the directories, as a restore's own list does. */
struct dir_set {
    char **slot;
    size_t cap, n;
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

/* 1 when path[0..n) is in the set; with add, inserted when it was not. */
static int dir_set_has(struct dir_set *d, const char *path, size_t n, int add)
{
    if (add && 2 * (d->n + 1) > d->cap) {
        struct dir_set g = {xcalloc(d->cap ? 2 * d->cap : 1024, sizeof(char *)),
                            d->cap ? 2 * d->cap : 1024, 0};
        for (size_t i = 0; i < d->cap; i++)
            if (d->slot[i] != NULL) {
                size_t k = fnv(d->slot[i], strlen(d->slot[i])) & (g.cap - 1);
                while (g.slot[k] != NULL)
                    k = (k + 1) & (g.cap - 1);
                g.slot[k] = d->slot[i];
            }
        g.n = d->n;
        free(d->slot);
        *d = g;
    }
    if (d->cap == 0)
        return 0;
    size_t k = fnv(path, n) & (d->cap - 1);
    for (; d->slot[k] != NULL; k = (k + 1) & (d->cap - 1))
        if (strlen(d->slot[k]) == n && memcmp(d->slot[k], path, n) == 0)
            return 1;
    if (add) {
        d->slot[k] = xasprintf("%.*s", (int)n, path);
        d->n++;
    }
    return 0;
}

static void dir_set_free(struct dir_set *d)
{
    for (size_t i = 0; i < d->cap; i++)
        free(d->slot[i]);
    free(d->slot);
}

/* A hostile tree is refused before anything is written: every entry's parent must be a
 * directory given earlier (so nothing is ever placed through a symlink, a file or a path the
 * tree did not make a directory), and no path may be given twice as a directory, nor as
 * anything else after it was a directory. (Two non-directories of one path are refused when
 * the second is created: O_EXCL.) */
static int place_ok(struct cairn_backup *b, struct dir_set *dirs, const struct tree_ent *e,
                    size_t i, struct cairn_err *err)
{
    const char *slash = strrchr(e->path, '/');
    const char *why = NULL;
    if (slash != NULL && !dir_set_has(dirs, e->path, (size_t)(slash - e->path), 0))
        why = "its parent is not a directory of the tree given before it";
    else if (dir_set_has(dirs, e->path, strlen(e->path), e->isdir))
        why = "it is given twice";
    if (why == NULL)
        return CAIRN_OK;
    char *shown = str_escape_dup(e->path);
    int rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                           "backup '%s': MANIFEST tree entry %zu is invalid or unsafe (path "
                           "'%s': %s)",
                           b->name, i, shown, why);
    free(shown);
    return rc;
}

int path_tree_check(struct cairn_backup *b, struct cairn_err *err)
{
    struct tree_iter it;
    int rc = path_tree_iter_open(b, &it, err);
    struct tree_ent e;
    struct files_sum sum = {{0}, 0};
    struct dir_set dirs = {0};
    for (int done = 0; rc == CAIRN_OK;) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        rc = place_ok(b, &dirs, &e, it.i - 1, err);
        if (e.type == T_FILE)
            files_sum_add(&sum, e.f);
    }
    dir_set_free(&dirs);
    if (rc == CAIRN_OK && it.entries == NULL)
        rc = tree_matches_list(b, &sum, err);
    path_tree_iter_free(&it);
    return rc;
}

int cairn_backup_tree_each(struct cairn_backup *b, cairn_tree_fn fn, void *arg,
                           struct cairn_err *err)
{
    if (!b->read_only || b->status != CAIRN_BACKUP_COMPLETE)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "listing a tree needs a complete backup opened read-only ('%s')",
                             b->name);
    int rc = path_tree_check(b, err);
    struct tree_iter it;
    if (rc == CAIRN_OK)
        rc = path_tree_iter_open(b, &it, err);
    if (rc != CAIRN_OK)
        return rc;
    struct tree_ent e;
    for (int done = 0; rc == CAIRN_OK;) {
        rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        struct cairn_tree_entry te = {e.path, type_names[e.type], e.link, e.j};
        rc = fn(arg, &te, err);
    }
    path_tree_iter_free(&it);
    return rc;
}

int backup_check_tree(struct cairn_backup *b, struct cairn_err *err)
{
    if (json_object_get(json_object_get(b->meta, "tree"), "entries_file") == NULL)
        return CAIRN_OK;
    return path_tree_check(b, err);
}
