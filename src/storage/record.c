/* add_file: the per-file writer of a read-write backup, which records each file's outcome
 * (its MANIFEST entry, or its failure) on the handle; name reservations; and the streaming
 * of committed records into a split MANIFEST body (put_path). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "chunkstore.h"
#include "common/util.h"
#include "internal.h"

/* ---- add_file: the recording stage on top of each file's chain ----
 * Chain: record -> hash(logical) -> [pipe] -> [zstd | chunks] -> hash(stored) -> driver sink
 * (chunked files have no logical hash stage: record_chain says why). The
 * record stage owns the sink and the stages in front of it, which are built on
 * cairn_writer_borrow(sink): closing or freeing them stops there, so finish commits the sink
 * itself and sees the commit result, and free discards it unless committed. The record
 * reports the file's outcome to the handle exactly once (commit, failure, or free without
 * close). With CAIRN_COMPRESS_AUTO the stages are built once the first PROBE_LEN bytes
 * (or all of a shorter file) are buffered and judged. */

struct record_writer {
    struct cairn_writer base; /* base.next stays NULL: the stages below are the record's */
    struct cairn_backup *b;
    struct file_rec *rec;
    struct cairn_file_opts opts;
    struct cairn_writer *sink;             /* the driver's, committed by finish */
    struct cairn_writer *chain;            /* the stages in front of sink; NULL until built */
    struct cairn_writer *logical, *stored; /* hash stages inside the chain */
    int logical_is_list;                   /* chunked: logical counts only, see record_chain */
    int64_t size_hint;                     /* add_file's, for the compressor */
    uint8_t *probe;                        /* AUTO, undecided: the first bytes */
    size_t nprobe;
    int done;
    struct cairn_manifest_file *copy; /* backup_writer_record_to */
    struct chunkstore *cs;            /* a deduplicating repository's: the sink is a chunk list */
};

static void record_chain(struct record_writer *r, enum cairn_compression comp)
{
    pthread_mutex_lock(&r->b->mu);
    r->rec->f.compression = comp;
    pthread_mutex_unlock(&r->b->mu);
    r->stored = storage_hash_writer_new(r->b->st, cairn_writer_borrow(r->sink));
    struct cairn_writer *mid = r->stored;
    if (comp == CAIRN_COMPRESS_CHUNKS) /* chunks are compressed one by one */
        mid = cs_chunk_writer_new(r->cs, mid, r->opts.level ? r->opts.level : 3);
    if (comp == CAIRN_COMPRESS_ZSTD)
        mid = cairn_zstd_writer_new_sized(mid, r->opts.level ? r->opts.level : 3,
                                          r->opts.threads ? r->opts.threads : 1, r->size_hint);
    if (r->opts.pipeline)
        mid = cairn_pipe_writer_new(mid);
    /* Uncompressed, the logical bytes are the stored bytes: one hash serves both (and runs
     * on the helper thread when pipelined, unless the caller reads it as it writes). */
    r->logical = r->stored;
    if (comp == CAIRN_COMPRESS_CHUNKS && !r->opts.share_sha256 && r->b->st->keys != NULL) {
        /* Encrypted, no whole-file hash: each chunk's keyed id authenticates its bytes and
         * the list's hash their order, so a second keyed pass over every byte would prove
         * nothing more and nobody outside can compare it (it cost 17 % of a first backup:
         * docs/PERFORMANCE.md). A plain repository keeps the file's SHA-256, which `cairn ls`
         * shows. The stage in front counts the content's bytes; logical_sha256 records the
         * list's hash (docs/FORMAT.md). */
        r->logical = mid;
        r->logical_is_list = 1;
    } else if (comp == CAIRN_COMPRESS_ZSTD || comp == CAIRN_COMPRESS_CHUNKS ||
               (r->opts.pipeline && r->opts.share_sha256)) {
        r->logical = mid = storage_hash_writer_new(r->b->st, mid);
    }
    r->chain = mid;
}

/* AUTO: choose from the buffered bytes, build the chain and pass them on. */
static int record_decide(struct record_writer *r, struct cairn_err *err)
{
    record_chain(r, io_compress_pays(IO_PROBE_ZSTD, r->probe, r->nprobe) ? CAIRN_COMPRESS_ZSTD
                                                                         : CAIRN_COMPRESS_NONE);
    int rc = cairn_writer_write(r->chain, r->probe, r->nprobe, err);
    free(r->probe);
    r->probe = NULL;
    return rc;
}

/* Streaming writers: the committed records below every file still being written, sorted,
 * leave memory as body lines. body_mu orders the batches (taken before mu, and batches are
 * cut in order under it); mu is not held while they are written. */
static void stream_flush(struct cairn_backup *b)
{
    if (pthread_mutex_trylock(&b->body_mu) != 0)
        return; /* another thread is flushing: it or a later commit takes these */
    pthread_mutex_lock(&b->mu);
    if (!b->stream) { /* end() is writing the rest */
        pthread_mutex_unlock(&b->mu);
        pthread_mutex_unlock(&b->body_mu);
        return;
    }
    const char *low = NULL; /* the least name still being written */
    for (size_t i = 0; i < b->nfiles; i++)
        if ((b->files[i]->state == FILE_WRITING || b->files[i]->state == FILE_RESERVED) &&
            (low == NULL || strcmp(b->files[i]->f.name, low) < 0))
            low = b->files[i]->f.name;
    struct file_rec **batch = xcalloc(b->nfiles ? b->nfiles : 1, sizeof(*batch));
    size_t n = 0, kept = 0;
    for (size_t i = 0; i < b->nfiles; i++) {
        struct file_rec *r = b->files[i];
        int below = low == NULL || strcmp(r->f.name, low) < 0;
        if (r->state == FILE_COMMITTED && below)
            batch[n++] = r;
        else if (r->state == FILE_DROPPED && below)
            file_rec_free(r);
        else
            b->files[kept++] = r;
    }
    int shrunk = kept < b->nfiles;
    b->nfiles = kept;
    if (shrunk)
        backup_index_rebuild(b);
    if (n > 0) {
        qsort(batch, n, sizeof(*batch), manifest_cmp_rec);
        free(b->flushed_name);
        b->flushed_name = xstrdup(batch[n - 1]->f.name);
        b->nflushed += n;
        for (size_t i = 0; i < n; i++)
            b->flushed_size += batch[i]->f.size;
    }
    b->flush_at = kept + STREAM_BATCH;
    pthread_mutex_unlock(&b->mu);
    struct cairn_err e;
    /* After a failure the body writes nothing more; end() reports the first message. */
    if (n > 0 && manifest_put_files(b, batch, n, &e) != CAIRN_OK && b->stream_msg == NULL)
        b->stream_msg = xstrdup(e.msg);
    for (size_t i = 0; i < n; i++)
        file_rec_free(batch[i]);
    free(batch);
    pthread_mutex_unlock(&b->body_mu);
}

static void record_outcome(struct record_writer *r, int rc, const struct cairn_err *e)
{
    if (r->done)
        return;
    r->done = 1;
    struct cairn_backup *b = r->b;
    pthread_mutex_lock(&b->mu);
    if (rc == CAIRN_OK) {
        uint8_t d[32];
        r->rec->state = FILE_COMMITTED;
        r->rec->f.size = r->stored->bytes;
        cairn_hash_writer_digest(r->stored, d);
        cairn_hex_encode(d, 32, r->rec->f.sha256);
        r->rec->f.logical_size = r->logical->bytes;
        if (!r->logical_is_list)
            cairn_hash_writer_digest(r->logical, d);
        cairn_hex_encode(d, 32, r->rec->f.logical_sha256);
        if (r->copy != NULL) {
            char *name = r->copy->name;
            *r->copy = r->rec->f;
            r->copy->name = name;
        }
    } else {
        r->rec->state = FILE_FAILED;
        r->rec->code = rc;
        free(r->rec->error);
        r->rec->error = xstrdup(e && e->msg[0] ? e->msg : "failed");
    }
    /* A flushing writer still counts as open, so end() and free() wait for its batch. */
    int flush = b->stream && rc == CAIRN_OK && b->nfiles >= b->flush_at;
    if (!flush && --b->open_writers == 0)
        pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->mu);
    if (flush) {
        stream_flush(b);
        pthread_mutex_lock(&b->mu);
        if (--b->open_writers == 0)
            pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
    }
}

static int record_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct record_writer *r = (struct record_writer *)w;
    int rc = CAIRN_OK;
    if (r->probe != NULL) {
        size_t n = len < PROBE_LEN - r->nprobe ? len : PROBE_LEN - r->nprobe;
        memcpy(r->probe + r->nprobe, buf, n);
        r->nprobe += n;
        buf = (const uint8_t *)buf + n;
        len -= n;
        if (r->nprobe == PROBE_LEN)
            rc = record_decide(r, err);
    }
    if (rc == CAIRN_OK && len > 0)
        rc = cairn_writer_write(r->chain, buf, len, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", r->b->name, r->rec->f.name);
        record_outcome(r, rc, err);
    }
    return rc;
}

static int record_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct record_writer *r = (struct record_writer *)w;
    int rc = r->probe != NULL ? record_decide(r, err) : CAIRN_OK;
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(r->chain, err); /* flushes into the sink */
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(r->sink, err); /* commits the file */
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", r->b->name, r->rec->f.name);
    record_outcome(r, rc, err);
    return rc;
}

static void record_free(struct cairn_writer *w)
{
    struct record_writer *r = (struct record_writer *)w;
    cairn_writer_free(r->chain); /* stops at the borrow */
    cairn_writer_free(r->sink);  /* discards the file unless finish committed it */
    if (!r->done) {              /* reported once the file is discarded */
        struct cairn_err e;
        cairn_err_set(&e, CAIRN_E_CANCELLED, "backup '%s' file '%s': writer freed before close",
                      r->b->name, r->rec->f.name);
        record_outcome(r, e.code, &e);
    }
    free(r->probe);
    free(r);
}

static const struct cairn_writer_ops record_ops = {"backup-file", record_write, record_finish,
                                                   record_free};

int cairn_backup_file_sha256(struct cairn_writer *w, uint8_t out[32], struct cairn_err *err)
{
    struct record_writer *r = (struct record_writer *)w;
    if (w == NULL || w->ops != &record_ops || !r->opts.share_sha256 || r->b->st->keys != NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "no shared SHA-256 on this writer (not a backup file's with "
                             "share_sha256, or an encrypted location)");
    if (w->state == CAIRN_IO_FAILED) {
        cairn_err_copy(err, &w->err);
        return w->err.code;
    }
    if (out == NULL)
        return CAIRN_OK;
    /* Still judging the compression: decide now, so the buffered bytes reach the hash. A
     * failure fails the writer as a failed write would. */
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = r->probe != NULL ? record_decide(r, &e) : CAIRN_OK;
    if (rc != CAIRN_OK) {
        cairn_err_wrap(&e, rc, "backup '%s' file '%s'", r->b->name, r->rec->f.name);
        record_outcome(r, rc, &e);
        w->state = CAIRN_IO_FAILED;
        cairn_err_copy(&w->err, &e);
        cairn_err_copy(err, &e);
        return rc;
    }
    cairn_hash_writer_digest(r->logical, out);
    return CAIRN_OK;
}

void backup_set_streaming(struct cairn_backup *b)
{
    pthread_mutex_lock(&b->mu);
    b->stream = 1;
    b->flush_at = b->nfiles + STREAM_BATCH;
    pthread_mutex_unlock(&b->mu);
}

void backup_writer_record_to(struct cairn_writer *w, struct cairn_manifest_file *dst)
{
    if (w != NULL && w->ops == &record_ops)
        ((struct record_writer *)w)->copy = dst;
}

void backup_writer_fail(struct cairn_writer *w, const struct cairn_err *e)
{
    if (w != NULL && w->ops == &record_ops)
        record_outcome((struct record_writer *)w, e->code ? e->code : CAIRN_E_IO, e);
}

/* The record for file, new or reused: a failed one may be retried, a reserved one is taken
 * up when reserved says so; a name at or below the streamed ones is refused. Caller holds mu. */
static int take_name_locked(struct cairn_backup *b, const char *file, int reserved,
                            struct file_rec **out, struct cairn_err *err)
{
    struct file_rec *rec = backup_index_get(b, file);
    if (rec != NULL && (rec->state == FILE_FAILED || (reserved && rec->state == FILE_RESERVED))) {
        *out = rec;
        return CAIRN_OK;
    }
    if (rec != NULL && rec->state != FILE_DROPPED)
        return cairn_err_set(err, CAIRN_E_EXISTS, "backup '%s': file '%s' already added", b->name,
                             file);
    if (b->flushed_name != NULL && strcmp(file, b->flushed_name) <= 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s': file '%s' sorts before files whose MANIFEST entries "
                             "are written already (a streamed file list takes ascending names)",
                             b->name, file);
    if (rec == NULL) {
        if (b->nfiles == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 16;
            b->files = xrealloc(b->files, b->cap * sizeof(*b->files));
        }
        rec = xcalloc(1, sizeof(*rec));
        rec->f.name = xstrdup(file);
        backup_index_add(b, rec);
        b->files[b->nfiles++] = rec;
    }
    *out = rec;
    return CAIRN_OK;
}

int backup_reserve(struct cairn_backup *b, const char *file, struct cairn_err *err)
{
    int rc = backup_need_rw(b, "add_file", err);
    if (rc == CAIRN_OK)
        rc = storage_check_file_name(b, file, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = NULL;
    rc = take_name_locked(b, file, 0, &rec, err);
    if (rc == CAIRN_OK)
        rec->state = FILE_RESERVED;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void backup_unreserve(struct cairn_backup *b, const char *file)
{
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = backup_index_get(b, file);
    if (rec != NULL && rec->state == FILE_RESERVED)
        rec->state = FILE_DROPPED;
    pthread_mutex_unlock(&b->mu);
}

int backup_add_record(struct cairn_backup *b, const char *file, const struct cairn_manifest_file *f,
                      struct cairn_err *err)
{
    int rc = backup_need_rw(b, "add_file", err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = NULL;
    rc = take_name_locked(b, file, 1, &rec, err);
    if (rc == CAIRN_OK) {
        char *name = rec->f.name;
        rec->f = *f;
        rec->f.name = name;
        rec->state = FILE_COMMITTED;
        free(rec->error);
        rec->error = NULL;
    }
    /* As a writer's commit: a streaming writer's batch may be due (counted open meanwhile). */
    int flush = rc == CAIRN_OK && b->stream && b->nfiles >= b->flush_at;
    if (flush)
        b->open_writers++;
    pthread_mutex_unlock(&b->mu);
    if (flush) {
        stream_flush(b);
        pthread_mutex_lock(&b->mu);
        if (--b->open_writers == 0)
            pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
    }
    return rc;
}

int cairn_backup_add_file_opts(struct cairn_backup *b, const char *file, int64_t size_hint,
                               const struct cairn_file_opts *opts, struct cairn_writer **out,
                               struct cairn_err *err)
{
    *out = NULL;
    int rc = backup_need_rw(b, "add_file", err);
    if (rc == CAIRN_OK)
        rc = storage_check_file_name(b, file, err);
    if (rc != CAIRN_OK)
        return rc;
    enum cairn_compression comp = opts ? opts->compression : CAIRN_COMPRESS_NONE;
    if (comp != CAIRN_COMPRESS_NONE && comp != CAIRN_COMPRESS_ZSTD && comp != CAIRN_COMPRESS_AUTO)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "backup '%s' file '%s': compression '%s' is not supported for "
                             "stored files (use none, zstd or auto)",
                             b->name, file, cairn_compression_name(comp));
    /* Reserve the name (duplicates are refused, failed ones may be retried). */
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = NULL;
    rc = take_name_locked(b, file, 1, &rec, err);
    if (rc != CAIRN_OK) {
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    rec->state = FILE_WRITING;
    free(rec->error);
    rec->error = NULL;
    b->open_writers++;
    pthread_mutex_unlock(&b->mu);

    struct cairn_writer *sink = NULL;
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_SYNC};
    struct chunkstore *cs = NULL;
    rc = cs_get(b->st, &cs, err);
    if (rc == CAIRN_OK && cs != NULL) {
        comp = CAIRN_COMPRESS_CHUNKS; /* content goes to the chunk store, the list to a blob */
        sink = cs_list_sink_new(cs);
    } else if (rc == CAIRN_OK) {
        rc = storage_create(b->st, b->name, file, backup_bid(b), size_hint, &wo, &sink, err);
    }
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", b->name, file);
        pthread_mutex_lock(&b->mu);
        rec->state = FILE_FAILED;
        rec->code = rc;
        rec->error = xstrdup(err ? err->msg : "create failed");
        if (--b->open_writers == 0)
            pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    struct record_writer *r = xcalloc(1, sizeof(*r));
    cairn_writer_init(&r->base, &record_ops, NULL);
    r->b = b;
    r->rec = rec;
    r->sink = sink;
    r->cs = cs;
    r->size_hint = size_hint;
    if (opts != NULL)
        r->opts = *opts;
    if (comp == CAIRN_COMPRESS_AUTO)
        r->probe = xmalloc(PROBE_LEN);
    else
        record_chain(r, comp);
    *out = &r->base;
    return CAIRN_OK;
}

int cairn_backup_add_file(struct cairn_backup *b, const char *file, int64_t size_hint,
                          struct cairn_writer **w, struct cairn_err *err)
{
    return cairn_backup_add_file_opts(b, file, size_hint, NULL, w, err);
}
