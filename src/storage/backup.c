/* The backup handle: its lifecycle (new, free, end, abort), descriptive fields, the file
 * list of read-only handles and the name index of read-write ones, and raw reads. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "chunkstore.h"
#include "common/util.h"
#include "internal.h"

/* ---- handles ---- */

struct cairn_backup *backup_new_handle(struct cairn_storage *st, const char *name, int read_only)
{
    struct cairn_backup *b = xcalloc(1, sizeof(*b));
    b->st = st;
    b->name = xstrdup(name);
    b->read_only = read_only;
    b->status = CAIRN_BACKUP_INCOMPLETE;
    b->created = -1;
    b->meta = json_object();
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->body_mu, NULL);
    pthread_cond_init(&b->idle, NULL);
    return b;
}

void file_rec_free(struct file_rec *r)
{
    if (r == NULL)
        return;
    free(r->f.name);
    free(r->error);
    free(r);
}

void cairn_backup_free(struct cairn_backup *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    pthread_mutex_unlock(&b->mu);
    cairn_lock_release(b->lock);
    for (size_t i = 0; i < b->nfiles; i++)
        file_rec_free(b->files[i]);
    free(b->files);
    free(b->slots);
    json_decref(b->parts);
    manifest_body_free(b->body);
    free(b->flushed_name);
    free(b->stream_msg);
    free(b->name);
    free(b->kind);
    free(b->source);
    free(b->parent);
    json_decref(b->meta);
    json_decref(b->scope);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->body_mu);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

const char *cairn_backup_name(const struct cairn_backup *b)
{
    return b->name;
}

const char *cairn_backup_url(const struct cairn_backup *b)
{
    return b->st->url;
}

int cairn_backup_read_only(const struct cairn_backup *b)
{
    return b->read_only;
}

enum cairn_backup_status cairn_backup_status(const struct cairn_backup *b)
{
    return b->status;
}

int backup_need_rw(struct cairn_backup *b, const char *op, struct cairn_err *err)
{
    if (b->read_only)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "%s cannot be called on read-only backup '%s' (open it with "
                             "cairn_storage_start)",
                             op, b->name);
    if (b->ended)
        return cairn_err_set(err, CAIRN_E_INVALID, "%s: backup '%s' has already ended", op,
                             b->name);
    return CAIRN_OK;
}

static int set_str(struct cairn_backup *b, char **field, const char *v, const char *op,
                   struct cairn_err *err)
{
    int rc = backup_need_rw(b, op, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    free(*field);
    *field = v ? xstrdup(v) : NULL;
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

int cairn_backup_set_kind(struct cairn_backup *b, const char *kind, struct cairn_err *err)
{
    if (kind == NULL || *kind == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': empty kind", b->name);
    return set_str(b, &b->kind, kind, "set_kind", err);
}

int cairn_backup_set_source(struct cairn_backup *b, const char *source, struct cairn_err *err)
{
    return set_str(b, &b->source, source ? source : "", "set_source", err);
}

int cairn_backup_set_parent(struct cairn_backup *b, const char *parent, struct cairn_err *err)
{
    if (parent != NULL && !cairn_name_valid(parent))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': invalid parent name '%s'", b->name,
                             parent);
    return set_str(b, &b->parent, parent, "set_parent", err);
}

int cairn_backup_set_meta(struct cairn_backup *b, json_t *meta, struct cairn_err *err)
{
    int rc = backup_need_rw(b, "set_meta", err);
    if (rc != CAIRN_OK)
        return rc;
    if (!json_is_object(meta))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': meta must be a JSON object",
                             b->name);
    pthread_mutex_lock(&b->mu);
    json_decref(b->meta);
    b->meta = json_deep_copy(meta);
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

int cairn_backup_set_scope(struct cairn_backup *b, json_t *scope, struct cairn_err *err)
{
    int rc = backup_need_rw(b, "set_scope", err);
    if (rc != CAIRN_OK)
        return rc;
    if (scope != NULL && !json_is_object(scope))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': scope must be a JSON object",
                             b->name);
    pthread_mutex_lock(&b->mu);
    json_decref(b->scope);
    b->scope = scope != NULL ? json_deep_copy(scope) : NULL;
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

json_t *cairn_backup_scope(const struct cairn_backup *b)
{
    return b->scope;
}

const char *cairn_backup_kind(const struct cairn_backup *b)
{
    return b->kind;
}

const char *cairn_backup_source(const struct cairn_backup *b)
{
    return b->source;
}

const char *cairn_backup_parent(const struct cairn_backup *b)
{
    return b->parent;
}

int64_t cairn_backup_created(const struct cairn_backup *b)
{
    return b->created;
}

json_t *cairn_backup_meta(const struct cairn_backup *b)
{
    return b->meta;
}

size_t cairn_backup_file_count(const struct cairn_backup *b)
{
    if (b->read_only) /* a split MANIFEST's list may not be loaded: its header counts it */
        return b->files_loaded ? b->nfiles : (size_t)b->sum_files;
    return (size_t)b->nflushed + b->nfiles;
}

uint64_t cairn_backup_stored_size(const struct cairn_backup *b)
{
    return b->read_only ? b->sum_size : 0;
}

/* Read-only handles of a split MANIFEST load its file list on first use (under the lock:
 * threads may ask at once). A list that no longer reads is logged, and the files are not
 * found. */
static int files_ready(const struct cairn_backup *cb)
{
    struct cairn_backup *b = (struct cairn_backup *)cb;
    if (!b->read_only || __atomic_load_n(&b->files_loaded, __ATOMIC_ACQUIRE) || b->parts == NULL)
        return 1;
    pthread_mutex_lock(&b->mu);
    struct cairn_err e;
    int rc = manifest_load_files(b, &e);
    pthread_mutex_unlock(&b->mu);
    if (rc != CAIRN_OK)
        cairn_log(CAIRN_LOG_ERROR, "storage", "%s", e.msg);
    return rc == CAIRN_OK;
}

const struct cairn_manifest_file *cairn_backup_file_at(const struct cairn_backup *b, size_t i)
{
    if (!files_ready(b))
        return NULL;
    return i < b->nfiles ? &b->files[i]->f : NULL;
}

/* ---- file index of read-write handles (open addressing, linear probing) ---- */

static size_t name_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (size_t)h;
}

/* The slot holding name, or the empty slot where it goes. nslots is a power of two. */
static struct file_rec **index_slot(struct file_rec **slots, size_t nslots, const char *name)
{
    size_t i = name_hash(name) & (nslots - 1);
    while (slots[i] != NULL && strcmp(slots[i]->f.name, name) != 0)
        i = (i + 1) & (nslots - 1);
    return &slots[i];
}

/* The table is kept at most half full. */
void backup_index_add(struct cairn_backup *b, struct file_rec *rec)
{
    if (2 * (b->nfiles + 1) > b->nslots) {
        size_t n = b->nslots ? 2 * b->nslots : 64;
        struct file_rec **slots = xcalloc(n, sizeof(*slots));
        for (size_t i = 0; i < b->nslots; i++)
            if (b->slots[i] != NULL)
                *index_slot(slots, n, b->slots[i]->f.name) = b->slots[i];
        free(b->slots);
        b->slots = slots;
        b->nslots = n;
    }
    *index_slot(b->slots, b->nslots, rec->f.name) = rec;
}

struct file_rec *backup_index_get(const struct cairn_backup *b, const char *name)
{
    return b->nslots ? *index_slot(b->slots, b->nslots, name) : NULL;
}

void backup_index_rebuild(struct cairn_backup *b)
{
    if (b->nslots == 0)
        return;
    memset(b->slots, 0, b->nslots * sizeof(*b->slots));
    for (size_t i = 0; i < b->nfiles; i++)
        *index_slot(b->slots, b->nslots, b->files[i]->f.name) = b->files[i];
}

static int cmp_name_rec(const void *key, const void *rec)
{
    return strcmp(key, (*(struct file_rec *const *)rec)->f.name);
}

const struct cairn_manifest_file *cairn_backup_file_find(const struct cairn_backup *b,
                                                         const char *name)
{
    struct file_rec *r = NULL;
    if (!b->read_only) { /* add_file may grow the index meanwhile */
        pthread_mutex_t *mu = (pthread_mutex_t *)&b->mu;
        pthread_mutex_lock(mu);
        r = backup_index_get(b, name);
        pthread_mutex_unlock(mu);
    } else if (files_ready(b)) { /* the MANIFEST's files, sorted by name when loaded */
        struct file_rec **p = bsearch(name, b->files, b->nfiles, sizeof(*b->files), cmp_name_rec);
        r = p ? *p : NULL;
    }
    return r ? &r->f : NULL;
}

/* Wait for writers and gather per-file errors ("file 'a': ...; ..."). Caller holds b->mu. */
static int collect_errors_locked(struct cairn_backup *b, struct cairn_err *err)
{
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    int rc = CAIRN_OK;
    size_t nfailed = 0;
    char msg[CAIRN_ERR_MSG_MAX] = "";
    size_t off = 0;
    for (size_t i = 0; i < b->nfiles; i++) {
        struct file_rec *f = b->files[i];
        if (f->state != FILE_FAILED)
            continue;
        nfailed++;
        if (rc == CAIRN_OK)
            rc = f->code ? f->code : CAIRN_E_IO;
        str_join(msg, sizeof(msg), &off, "; ", f->error);
    }
    if (nfailed > 0) /* the first failure's code: ENOSPC, network... */
        cairn_err_set(err, rc, "backup '%s': %zu file(s) failed: %s", b->name, nfailed, msg);
    return rc;
}

int cairn_backup_end(struct cairn_backup *b, struct cairn_err *err)
{
    int rc = backup_need_rw(b, "end", err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    rc = collect_errors_locked(b, err);
    pthread_mutex_unlock(&b->mu);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "MANIFEST not written");
        return rc;
    }
    /* A backup whose lock was taken over (it looked stale) may have been pruned meanwhile:
     * it must not be declared complete. */
    rc = cairn_lock_check(b->lock, err);
    if (rc == CAIRN_OK && b->st->commit_check != NULL)
        rc = b->st->commit_check(b->st->commit_ctx, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "backup '%s': MANIFEST not written", b->name);
    /* The chunks (packs, then an index naming them) land before the MANIFEST. */
    if (b->st->cs != NULL && (rc = cs_flush(b->st->cs, err)) != CAIRN_OK)
        return cairn_err_wrap(err, rc, "backup '%s': MANIFEST not written", b->name);
    b->created = (int64_t)(now_ms() / 1000);
    pthread_mutex_lock(&b->body_mu); /* after any batch being flushed; no more batches */
    pthread_mutex_lock(&b->mu);
    b->stream = 0;
    pthread_mutex_unlock(&b->mu);
    rc = manifest_write(b, err);
    pthread_mutex_unlock(&b->body_mu);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s': write MANIFEST", b->name);
        return rc;
    }
    b->ended = 1;
    b->status = CAIRN_BACKUP_COMPLETE;
    b->sealed = b->st->has_key;
    cairn_log(CAIRN_LOG_INFO, "storage", "backup '%s' complete in '%s' (%llu files)", b->name,
              b->st->url, (unsigned long long)(b->nflushed + b->nfiles));
    return CAIRN_OK;
}

int cairn_backup_abort(struct cairn_backup *b, struct cairn_err *err)
{
    int rc = backup_need_rw(b, "abort", err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    pthread_mutex_unlock(&b->mu);
    /* A writer that has lost its right to write (cairnd's deposed leader) removes nothing: the
     * backup of this name may be the new leader's, complete. */
    struct cairn_err cerr;
    if (b->st->commit_check != NULL && b->st->commit_check(b->st->commit_ctx, &cerr) != CAIRN_OK) {
        cairn_log(CAIRN_LOG_WARN, "storage", "backup '%s' abandoned, not removed: %s", b->name,
                  cerr.msg);
        b->ended = 1;
        return CAIRN_OK;
    }
    rc = storage_remove_backup(b->st, b->name, err);
    if (rc == CAIRN_E_NOTFOUND)
        rc = CAIRN_OK; /* nothing was written */
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "abort backup '%s'", b->name);
        return rc;
    }
    b->ended = 1;
    cairn_log(CAIRN_LOG_INFO, "storage", "aborted backup '%s' in '%s'", b->name, b->st->url);
    return CAIRN_OK;
}

/* Open a file's stored bytes from its MANIFEST record f (NULL: not looked up, read by name):
 * callers holding the record never make a split MANIFEST load its whole file list. */
int backup_read_stored(struct cairn_backup *b, const char *file,
                       const struct cairn_manifest_file *f, struct cairn_reader **r,
                       struct cairn_err *err)
{
    *r = NULL;
    if (!b->read_only)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "read_file cannot be called on read-write backup '%s' (open it "
                             "with cairn_storage_open_backup)",
                             b->name);
    if (!cairn_name_valid(file))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': invalid file name '%s'", b->name,
                             file ? file : "");
    int rc;
    /* A chunked file's stored bytes are its chunk list, a blob of the chunk store. */
    if (f != NULL && f->compression == CAIRN_COMPRESS_CHUNKS) {
        struct chunkstore *cs = NULL;
        rc = cs_get(b->st, &cs, err);
        if (rc == CAIRN_OK && cs == NULL)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "the MANIFEST lists a chunk list but the repository has no chunker");
        if (rc == CAIRN_OK)
            rc = cs_blob_reader_new(cs, f->sha256, r, err);
    } else {
        rc = storage_read(b->st, b->name, file, backup_bid(b), r, err);
    }
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", b->name, file);
    return rc;
}

int cairn_backup_read_file(struct cairn_backup *b, const char *file, struct cairn_reader **r,
                           struct cairn_err *err)
{
    const struct cairn_manifest_file *f =
        b->read_only && b->status == CAIRN_BACKUP_COMPLETE && cairn_name_valid(file)
            ? cairn_backup_file_find(b, file)
            : NULL;
    return backup_read_stored(b, file, f, r, err);
}
