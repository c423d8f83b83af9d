/* Transfer helpers on top of backup handles: put a stream (compressing and hashing in one
 * pass), get a file back verified against the MANIFEST, verify a whole backup. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/pool.h"
#include "chunkstore.h"
#include "common/util.h"
#include "internal.h"

int backup_put_stream_rec(struct cairn_backup *b, const char *file, struct cairn_reader *src,
                          int64_t size_hint, const struct cairn_file_opts *opts,
                          struct cairn_manifest_file *rec, struct cairn_err *err)
{
    struct cairn_writer *w = NULL;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = cairn_backup_add_file_opts(b, file, size_hint, opts, &w, &e);
    if (rc == CAIRN_OK && rec != NULL)
        backup_writer_record_to(w, rec);
    if (rc == CAIRN_OK)
        rc = cairn_copy(src, w, NULL, &e);
    if (rc == CAIRN_OK) {
        rc = cairn_writer_close(w, &e);
    } else if (w != NULL && w->state == CAIRN_IO_OPEN) {
        /* A source failure leaves the writer open: record it as the file's error. */
        cairn_err_wrap(&e, rc, "backup '%s' file '%s': read source", b->name, file);
        backup_writer_fail(w, &e);
    }
    cairn_writer_free(w);
    if (rc != CAIRN_OK)
        cairn_err_copy(err, &e);
    return rc;
}

int cairn_backup_put_stream(struct cairn_backup *b, const char *file, struct cairn_reader *src,
                            int64_t size_hint, const struct cairn_file_opts *opts,
                            struct cairn_err *err)
{
    return backup_put_stream_rec(b, file, src, size_hint, opts, NULL, err);
}

/* ---- verifying reader stage ---- */

struct verify_reader {
    struct cairn_reader base;
    struct cairn_sha256 h;
    uint64_t n, want_size;
    char want_sha[65];
    const char *what;           /* "stored" or "logical" */
    char *label;                /* "backup 'b' file 'f'" */
    const volatile int *cancel; /* the storage's (cairn_storage_set_cancel) */
};

static int verify_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                       struct cairn_err *err)
{
    struct verify_reader *v = (struct verify_reader *)r;
    if (cancel_requested(v->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", v->label);
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "%s", v->label);
        return rc;
    }
    if (*got > 0) {
        if (*got > v->want_size - v->n)
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "%s: %s size exceeds the MANIFEST's %llu bytes", v->label, v->what,
                                 (unsigned long long)v->want_size);
        v->n += *got;
        if (v->want_sha[0] != '\0')
            cairn_sha256_update(&v->h, buf, *got);
        return CAIRN_OK;
    }
    if (v->n != v->want_size)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: %s size %llu differs from the MANIFEST's %llu bytes (truncated)",
                             v->label, v->what, (unsigned long long)v->n,
                             (unsigned long long)v->want_size);
    if (v->want_sha[0] == '\0') /* size only: the stages below authenticated the bytes */
        return CAIRN_OK;
    uint8_t d[32];
    char hex[65];
    cairn_sha256_peek(&v->h, d);
    cairn_hex_encode(d, 32, hex);
    if (strcmp(hex, v->want_sha) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: %s SHA-256 %s does not match the MANIFEST's %s", v->label,
                             v->what, hex, v->want_sha);
    return CAIRN_OK;
}

static void verify_free(struct cairn_reader *r)
{
    struct verify_reader *v = (struct verify_reader *)r;
    cairn_sha256_free(&v->h);
    free(v->label);
    free(v);
}

static const struct cairn_reader_ops verify_ops = {"verify", verify_read, verify_free};

static struct cairn_reader *verify_reader_new(struct cairn_reader *src, uint64_t size,
                                              const char *sha, const char *what,
                                              const struct cairn_backup *b, const char *file)
{
    struct verify_reader *v = xcalloc(1, sizeof(*v));
    cairn_reader_init(&v->base, &verify_ops, src);
    storage_hash_init(b->st, &v->h);
    v->want_size = size;
    snprintf(v->want_sha, sizeof(v->want_sha), "%s", sha); /* "" checks the size only */
    v->what = what;
    v->label = xasprintf("backup '%s' file '%s'", b->name, file);
    v->cancel = b->st->cancel;
    return &v->base;
}

int cairn_backup_get_file(struct cairn_backup *b, const char *file, struct cairn_reader **out,
                          struct cairn_err *err)
{
    *out = NULL;
    if (b->read_only && b->status != CAIRN_BACKUP_COMPLETE)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s' is incomplete (no MANIFEST): its files cannot be "
                             "verified",
                             b->name);
    if (!b->read_only) /* refused there, with the reason */
        return cairn_backup_read_file(b, file, out, err);
    const struct cairn_manifest_file *f = cairn_backup_file_find(b, file);
    if (f == NULL)
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' has no file '%s'", b->name,
                             file ? file : "");
    return backup_open_verified(b, f, out, err);
}

/* Files from this size up are decrypted ahead (a thread and 768 KiB each). */
#define DECRYPT_AHEAD_MIN (1u << 20)

int backup_open_verified(struct cairn_backup *b, const struct cairn_manifest_file *f,
                         struct cairn_reader **out, struct cairn_err *err)
{
    const char *file = f->name;
    *out = NULL;
    struct cairn_reader *r = NULL;
    int rc = backup_read_stored(b, file, f, &r, err);
    if (rc != CAIRN_OK)
        return rc;
    r = verify_reader_new(r, f->size, f->sha256, "stored", b, file);
    /* Encrypted, a large file is read, decrypted and checked against its keyed hash ahead on a
     * helper thread while this one decompresses and hands it on: the decryption stays off the
     * restore's critical path (docs/PERFORMANCE.md, "Encryption"). */
    if (b->st->keys != NULL && f->size >= DECRYPT_AHEAD_MIN)
        r = cairn_pipe_reader_new(r);
    if (f->compression == CAIRN_COMPRESS_ZSTD) {
        r = cairn_zstd_reader_new(r);
    } else if (f->compression == CAIRN_COMPRESS_CHUNKS) {
        char label[2 * CAIRN_NAME_MAX + 32];
        snprintf(label, sizeof(label), "backup '%s' file '%s'", b->name, file);
        r = cs_content_reader_new(b->st->cs, r, label); /* read_file made the store */
        /* logical_sha256 equal to sha256: no whole-file hash was taken (record_chain); every
         * chunk's keyed id is checked as it is read, so only the size is left to check. */
        if (strcmp(f->logical_sha256, f->sha256) == 0) {
            *out = verify_reader_new(r, f->logical_size, "", "logical", b, file);
            return CAIRN_OK;
        }
    } else if (f->logical_size == f->size && strcmp(f->logical_sha256, f->sha256) == 0) {
        *out = r; /* uncompressed: the logical check would repeat the stored one exactly */
        return CAIRN_OK;
    }
    *out = verify_reader_new(r, f->logical_size, f->logical_sha256, "logical", b, file);
    return CAIRN_OK;
}

int cairn_backup_get_stream(struct cairn_backup *b, const char *file, struct cairn_writer *dst,
                            uint64_t *copied, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = cairn_backup_get_file(b, file, &r, err);
    if (rc == CAIRN_OK)
        rc = cairn_copy(r, dst, copied, err);
    cairn_reader_free(r);
    return rc;
}

/* ---- verify a whole backup ---- */

/* Results are handed to the callback in MANIFEST order through a ring of `cap` slots: a file
 * numbered seq lives in slot seq % cap until every earlier file has been reported. Workers
 * finish out of order; the submitter waits while the window is full, so memory stays at
 * cap jobs whatever the MANIFEST's length, and each result is reported in O(1). */
struct verify_job {
    struct verify_all *va;
    struct file_rec *r; /* owned */
    int done;
    int rc;
    struct cairn_err e;
};

struct verify_all {
    struct cairn_backup *b;
    pthread_mutex_t mu;
    pthread_cond_t room; /* signalled as the window's head moves on */
    cairn_verify_cb cb;
    void *arg;
    int rc;
    size_t nfailed;
    char msg[CAIRN_ERR_MSG_MAX];
    size_t off;
    struct verify_job **ring; /* cap slots */
    size_t cap;
    size_t head; /* the next file to report */
    size_t tail; /* the next file to submit */
};

/* Reports and frees the finished jobs at the head of the window (called with mu held). */
static void verify_drain(struct verify_all *va)
{
    struct verify_job *j;
    while (va->head < va->tail && (j = va->ring[va->head % va->cap]) != NULL && j->done) {
        va->ring[va->head % va->cap] = NULL;
        va->head++;
        /* cancelled: the remaining files are neither ok nor failed */
        if (j->rc != CAIRN_E_CANCELLED) {
            if (j->rc != CAIRN_OK) {
                if (va->rc == CAIRN_OK)
                    va->rc = j->rc;
                va->nfailed++;
                str_join(va->msg, sizeof(va->msg), &va->off, "; ", j->e.msg);
            }
            if (va->cb)
                va->cb(va->arg, &j->r->f, j->rc, &j->e);
        }
        file_rec_free(j->r);
        free(j);
    }
    pthread_cond_broadcast(&va->room);
}

static void verify_one(void *arg)
{
    struct verify_job *j = arg;
    struct verify_all *va = j->va;
    struct cairn_reader *r = NULL;
    int rc = CAIRN_E_CANCELLED;
    if (!cancel_requested(va->b->st->cancel)) {
        struct cairn_writer *sink = cairn_discard_writer_new();
        rc = backup_open_verified(va->b, &j->r->f, &r, &j->e);
        if (rc == CAIRN_OK)
            rc = cairn_copy(r, sink, NULL, &j->e);
        cairn_reader_free(r);
        cairn_writer_free(sink);
    }
    pthread_mutex_lock(&va->mu);
    j->rc = rc;
    j->done = 1;
    verify_drain(va);
    pthread_mutex_unlock(&va->mu);
}

struct verify_feed {
    struct verify_all *va;
    struct pool *pool;
    size_t n;
};

/* Each file of the MANIFEST becomes a job, numbered in MANIFEST order; the window bounds how
 * many are in flight or waiting to be reported. */
static int verify_submit(void *arg, struct file_rec *r, struct cairn_err *e)
{
    struct verify_feed *fd = arg;
    struct verify_all *va = fd->va;
    if (cancel_requested(va->b->st->cancel)) {
        file_rec_free(r);
        return cairn_err_set(e, CAIRN_E_CANCELLED, "verify of backup '%s' cancelled", va->b->name);
    }
    struct verify_job *j = xcalloc(1, sizeof(*j));
    j->va = va;
    j->r = r;
    cairn_err_clear(&j->e);
    pthread_mutex_lock(&va->mu);
    while (va->tail - va->head >= va->cap)
        pthread_cond_wait(&va->room, &va->mu);
    va->ring[va->tail % va->cap] = j;
    va->tail++;
    pthread_mutex_unlock(&va->mu);
    fd->n++;
    pool_submit(fd->pool, verify_one, j);
    return CAIRN_OK;
}

static struct file_rec *rec_copy(const struct cairn_manifest_file *f)
{
    struct file_rec *r = xcalloc(1, sizeof(*r));
    r->f = *f;
    r->f.name = xstrdup(f->name);
    r->state = FILE_COMMITTED;
    return r;
}

/* Files are streamed from a split MANIFEST (never all in memory), or taken from the loaded
 * list of a one-document one. */
int cairn_backup_verify(struct cairn_backup *b, unsigned workers, cairn_verify_cb cb, void *arg,
                        struct cairn_err *err)
{
    if (!b->read_only)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "verify cannot be called on read-write backup '%s'", b->name);
    if (b->status != CAIRN_BACKUP_COMPLETE)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "backup '%s' is incomplete (no MANIFEST): nothing to verify against",
                             b->name);
    struct verify_all va = {.b = b, .cb = cb, .arg = arg};
    pthread_mutex_init(&va.mu, NULL);
    pthread_cond_init(&va.room, NULL);
    struct verify_feed fd = {&va, pool_new(workers ? workers : 4, 0), 0};
    /* Four results per worker may wait behind a slow file before the submitter pauses. */
    va.cap = 4 * (size_t)pool_workers(fd.pool);
    va.ring = xcalloc(va.cap, sizeof(*va.ring));
    struct cairn_err le;
    int rc = CAIRN_OK;
    if (__atomic_load_n(&b->files_loaded, __ATOMIC_ACQUIRE)) {
        for (size_t i = 0; i < b->nfiles && rc == CAIRN_OK; i++)
            rc = verify_submit(&fd, rec_copy(&b->files[i]->f), &le);
    } else {
        rc = manifest_scan(b, verify_submit, &fd, &le);
    }
    pool_free(fd.pool); /* every job has finished, so every result has been reported */
    free(va.ring);
    pthread_cond_destroy(&va.room);
    pthread_mutex_destroy(&va.mu);
    if (cancel_requested(b->st->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "verify of backup '%s' cancelled", b->name);
    if (rc != CAIRN_OK) /* the file list itself no longer reads */
        return cairn_err_set(err, rc, "%s", le.msg);
    /* A local-path backup is verified as its restore reads it: the tree against the list. */
    if (va.rc == CAIRN_OK && (rc = backup_check_tree(b, &le)) != CAIRN_OK)
        return cairn_err_set(err, rc, "backup '%s' failed verification: %s", b->name, le.msg);
    if (va.rc != CAIRN_OK)
        return cairn_err_set(err, va.rc, "backup '%s': %zu of %zu file(s) failed verification: %s",
                             b->name, va.nfailed, fd.n, va.msg);
    return CAIRN_OK;
}
