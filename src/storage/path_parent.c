/* Skip what did not change (restic's rule): a directory backup into a deduplicating repository
 * finds its parent (the newest complete backup of the same kind, source and scope) and indexes
 * the regular files of the parent's tree by path. A file whose size, mtime, ctime and inode
 * match its parent's record is not read again: its new MANIFEST entry is the parent's chunk
 * list blob, which the new MANIFEST then references itself (prune's mark phase keeps its chunks
 * for as long as either backup lives). Never for per-file storage, where a file of one backup
 * referencing another's would break "an earlier backup is never harmed". */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "chunkstore.h"
#include "common/util.h"
#include "internal.h"
#include "path.h"

/* One file of the parent: PARENT_ENT_BYTES bytes, in one array sorted by key. */
struct parent_ent {
    uint8_t key[16]; /* SHA-256 of the path, truncated */
    int64_t mtime_ns, ctime_ns;
    uint64_t ino, size;
    uint64_t stored_size;                 /* the chunk list's bytes */
    uint8_t list_id[32], content_sha[32]; /* MANIFEST sha256, logical_sha256 */
};

struct parent_map {
    struct parent_ent *e;
    size_t n, cap;
    char *name;
};

static void path_key(const char *rel, uint8_t out[16])
{
    uint8_t d[32];
    cairn_sha256_oneshot(rel, strlen(rel), d);
    memcpy(out, d, 16);
}

static int ent_cmp(const void *a, const void *b)
{
    return memcmp(((const struct parent_ent *)a)->key, ((const struct parent_ent *)b)->key, 16);
}

static int64_t int_of(const json_t *j, const char *key, int *ok)
{
    const json_t *v = json_object_get(j, key);
    *ok = *ok && json_is_integer(v);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* The newest complete backup of b's kind, source and scope but b, into name; 0 when none. */
static int pick_parent(struct cairn_backup *b, char **name, struct cairn_err *err)
{
    *name = NULL;
    struct cairn_backup_list l;
    int rc = cairn_storage_list(b->st, &l, err);
    if (rc != CAIRN_OK)
        return rc;
    const struct cairn_backup_info *best = NULL;
    for (size_t i = 0; i < l.count; i++) {
        const struct cairn_backup_info *in = &l.items[i];
        if (in->status != CAIRN_BACKUP_COMPLETE || strcmp(in->name, b->name) == 0 ||
            in->kind == NULL || strcmp(in->kind, b->kind ? b->kind : "files") != 0 ||
            in->source == NULL || strcmp(in->source, b->source) != 0)
            continue;
        json_t *scope = in->scope != NULL ? json_loads(in->scope, 0, NULL) : NULL;
        int same = (scope == NULL && b->scope == NULL) || json_equal(scope, b->scope);
        json_decref(scope);
        if (same && (best == NULL || in->created >= best->created))
            best = in; /* sorted by name: of equal times the later name wins */
    }
    if (best != NULL)
        *name = xstrdup(best->name);
    cairn_backup_list_free(&l);
    return CAIRN_OK;
}

/* A file line that can be reused: a chunk list, not sparse (its extents are not kept here),
 * with the four fields the rule compares. */
static int add_ent(struct parent_map *m, const struct tree_ent *e)
{
    const struct cairn_manifest_file *f = e->f;
    if (f->compression != CAIRN_COMPRESS_CHUNKS || json_object_get(e->j, "sparse") != NULL)
        return 0;
    struct parent_ent p;
    int ok = 1;
    p.mtime_ns = int_of(e->j, "mtime_ns", &ok);
    p.ctime_ns = int_of(e->j, "ctime_ns", &ok);
    p.ino = (uint64_t)int_of(e->j, "ino", &ok);
    p.size = (uint64_t)int_of(e->j, "size", &ok);
    size_t n1 = 0, n2 = 0;
    if (!ok || p.size != f->logical_size ||
        cairn_hex_decode(f->sha256, 64, p.list_id, 32, &n1) != 0 || n1 != 32 ||
        cairn_hex_decode(f->logical_sha256, 64, p.content_sha, 32, &n2) != 0 || n2 != 32)
        return 0;
    p.stored_size = f->size;
    path_key(e->path, p.key);
    if (m->n == m->cap) {
        if (m->cap == PARENT_MAX_FILES)
            return -1;
        m->cap = m->cap ? (m->cap * 2 < PARENT_MAX_FILES ? m->cap * 2 : PARENT_MAX_FILES) : 1024;
        m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
    }
    m->e[m->n++] = p;
    return 0;
}

/* One pass over the parent's tree (verified at its end): its reusable files into m. */
static int load_tree(struct cairn_backup *pb, struct parent_map *m, const volatile int *cancel,
                     struct cairn_err *err)
{
    /* Sized once from the tree's entry count (directories included), so the array is not
     * copied while it grows. */
    json_t *cnt = json_object_get(json_object_get(pb->meta, "tree"), "count");
    if (json_is_integer(cnt) && json_integer_value(cnt) > 0) {
        json_int_t c = json_integer_value(cnt);
        m->cap = c < PARENT_MAX_FILES ? (size_t)c : PARENT_MAX_FILES;
        m->e = xmalloc(m->cap * sizeof(*m->e));
    }
    struct tree_iter it;
    int rc = path_tree_iter_open(pb, &it, err);
    if (rc == CAIRN_OK && it.entries != NULL)
        rc = cairn_err_set(err, CAIRN_E_UNSUPPORTED, "a tree of an older cairn");
    struct tree_ent e;
    int full = 0;
    for (int done = 0; rc == CAIRN_OK;) {
        if (cancel != NULL && __atomic_load_n(cancel, __ATOMIC_RELAXED))
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
        if (rc == CAIRN_OK)
            rc = path_tree_iter_next(&it, &e, &done, err);
        if (rc != CAIRN_OK || done)
            break;
        if (e.type == T_FILE && !full && add_ent(m, &e) < 0) {
            full = 1;
            cairn_log(CAIRN_LOG_INFO, "storage",
                      "parent backup '%s' has more than %u files: the rest are read again",
                      pb->name, (unsigned)PARENT_MAX_FILES);
        }
    }
    path_tree_iter_free(&it);
    return rc;
}

int path_parent_open(struct cairn_backup *b, const struct cairn_path_opts *o,
                     struct parent_map **out, struct cairn_err *err)
{
    *out = NULL;
    struct chunkstore *cs = NULL;
    if (o->force_read || b->source == NULL || cs_get(b->st, &cs, NULL) != CAIRN_OK || cs == NULL)
        return CAIRN_OK;
    char *name = NULL;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = pick_parent(b, &name, &e);
    struct cairn_backup *pb = NULL;
    if (rc == CAIRN_OK && name != NULL)
        rc = cairn_storage_open_backup(b->st, name, &pb, &e);
    struct parent_map *m = xcalloc(1, sizeof(*m));
    if (rc == CAIRN_OK && pb != NULL)
        rc = load_tree(pb, m, o->cancel, &e);
    cairn_backup_free(pb);
    if (rc == CAIRN_E_CANCELLED) {
        cairn_err_copy(err, &e);
    } else if (rc != CAIRN_OK) {
        /* Reading everything is always right: the parent is only a shortcut. */
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "backup '%s': parent '%s' not used, every file is read: %s", b->name,
                  name ? name : "?", e.msg);
        rc = CAIRN_OK;
    } else if (name != NULL) {
        if (m->n > 1)
            qsort(m->e, m->n, sizeof(*m->e), ent_cmp);
        m->name = name;
        name = NULL;
        *out = m;
        m = NULL;
    }
    path_parent_free(m);
    free(name);
    return rc;
}

const char *path_parent_name(const struct parent_map *m)
{
    return m ? m->name : NULL;
}

int path_parent_match(struct cairn_backup *b, const struct parent_map *m, const char *rel,
                      const struct stat *sb, struct cairn_manifest_file *rec)
{
    if (m == NULL || m->n == 0)
        return 0;
    struct parent_ent k;
    path_key(rel, k.key);
    const struct parent_ent *p = bsearch(&k, m->e, m->n, sizeof(*m->e), ent_cmp);
    if (p == NULL || p->size != (uint64_t)sb->st_size || p->ino != (uint64_t)sb->st_ino ||
        p->mtime_ns != (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec ||
        p->ctime_ns != (int64_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec)
        return 0;
    /* The list must still be in the index (it is, unless the repository was damaged). */
    struct chunkstore *cs = NULL;
    if (cs_get(b->st, &cs, NULL) != CAIRN_OK || cs == NULL || !cs_has(cs, p->list_id))
        return 0;
    rec->size = p->stored_size;
    rec->logical_size = p->size;
    rec->compression = CAIRN_COMPRESS_CHUNKS;
    cairn_hex_encode(p->list_id, 32, rec->sha256);
    cairn_hex_encode(p->content_sha, 32, rec->logical_sha256);
    return 1;
}

void path_parent_free(struct parent_map *m)
{
    if (m == NULL)
        return;
    free(m->e);
    free(m->name);
    free(m);
}
