/* Transfer helpers on top of backup handles: put a stream (compressing and hashing in one
 * pass), get a file back verified against the MANIFEST, verify a whole backup. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/pool.h"
#include "common/util.h"
#include "internal.h"

int cairn_backup_put_stream(struct cairn_backup *b, const char *file, struct cairn_reader *src,
                            int64_t size_hint, const struct cairn_file_opts *opts,
                            struct cairn_err *err)
{
    struct cairn_writer *w = NULL;
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = cairn_backup_add_file_opts(b, file, size_hint, opts, &w, &e);
    if (rc == CAIRN_OK)
        rc = cairn_copy(src, w, NULL, &e);
    if (rc == CAIRN_OK) {
        rc = cairn_writer_close(w, &e);
    } else if (w != NULL && w->state == CAIRN_IO_OPEN) {
        /* A source failure leaves the writer open: record it as the file's error. */
        cairn_err_wrap(&e, "backup '%s' file '%s': read source", b->name, file);
        cairn_backup_writer_fail(w, &e);
    }
    cairn_writer_free(w);
    if (rc != CAIRN_OK)
        cairn_err_copy(err, &e);
    return rc;
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
    if (cairn_storage_cancelled(v->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", v->label);
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, "%s", v->label);
        return rc;
    }
    if (*got > 0) {
        if (*got > v->want_size - v->n)
            return cairn_err_set(err, CAIRN_E_CORRUPT,
                                 "%s: %s size exceeds the MANIFEST's %llu bytes", v->label, v->what,
                                 (unsigned long long)v->want_size);
        v->n += *got;
        cairn_sha256_update(&v->h, buf, *got);
        return CAIRN_OK;
    }
    if (v->n != v->want_size)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: %s size %llu differs from the MANIFEST's %llu bytes (truncated)",
                             v->label, v->what, (unsigned long long)v->n,
                             (unsigned long long)v->want_size);
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
    struct verify_reader *v = cairn_xcalloc(1, sizeof(*v));
    cairn_reader_init(&v->base, &verify_ops, src);
    cairn_sha256_init(&v->h);
    v->want_size = size;
    memcpy(v->want_sha, sha, 65);
    v->what = what;
    v->label = cairn_xasprintf("backup '%s' file '%s'", b->name, file);
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
    const struct cairn_manifest_file *f = cairn_backup_file_find(b, file);
    if (b->read_only && f == NULL)
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' has no file '%s'", b->name,
                             file ? file : "");
    struct cairn_reader *r = NULL;
    int rc = cairn_backup_read_file(b, file, &r, err);
    if (rc != CAIRN_OK)
        return rc;
    r = verify_reader_new(r, f->size, f->sha256, "stored", b, file);
    if (f->compression == CAIRN_COMPRESS_ZSTD)
        r = cairn_zstd_reader_new(r);
    else if (f->logical_size == f->size && strcmp(f->logical_sha256, f->sha256) == 0) {
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

struct verify_all {
    struct cairn_backup *b;
    pthread_mutex_t mu;
    cairn_verify_cb cb;
    void *arg;
    int rc;
    size_t nfailed;
    char msg[CAIRN_ERR_MSG_MAX];
    size_t off;
};

struct verify_job {
    struct verify_all *va;
    const struct cairn_manifest_file *f;
};

static void verify_one(void *arg)
{
    struct verify_job *j = arg;
    struct verify_all *va = j->va;
    struct cairn_err e;
    cairn_err_clear(&e);
    if (cairn_storage_cancelled(va->b->st->cancel)) {
        free(j); /* cancelled: the remaining files are neither ok nor failed */
        return;
    }
    struct cairn_writer *sink = cairn_discard_writer_new();
    int rc = cairn_backup_get_stream(va->b, j->f->name, sink, NULL, &e);
    cairn_writer_free(sink);
    if (rc == CAIRN_E_CANCELLED) {
        free(j);
        return;
    }
    pthread_mutex_lock(&va->mu);
    if (rc != CAIRN_OK) {
        if (va->rc == CAIRN_OK)
            va->rc = rc;
        va->nfailed++;
        int n = snprintf(va->msg + va->off, sizeof(va->msg) - va->off, "%s%s", va->off ? "; " : "",
                         e.msg);
        if (n > 0)
            va->off =
                va->off + (size_t)n < sizeof(va->msg) ? va->off + (size_t)n : sizeof(va->msg) - 1;
    }
    if (va->cb)
        va->cb(va->arg, j->f, rc, &e);
    pthread_mutex_unlock(&va->mu);
    free(j);
}

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
    struct cairn_pool *pool = cairn_pool_new(workers ? workers : 4, 0);
    for (size_t i = 0; i < b->nfiles; i++) {
        struct verify_job *j = cairn_xcalloc(1, sizeof(*j));
        j->va = &va;
        j->f = &b->files[i]->f;
        cairn_pool_submit(pool, verify_one, j);
    }
    cairn_pool_free(pool);
    pthread_mutex_destroy(&va.mu);
    if (cairn_storage_cancelled(b->st->cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "verify of backup '%s' cancelled", b->name);
    if (va.rc != CAIRN_OK)
        return cairn_err_set(err, va.rc, "backup '%s': %zu of %zu file(s) failed verification: %s",
                             b->name, va.nfailed, b->nfiles, va.msg);
    return CAIRN_OK;
}
