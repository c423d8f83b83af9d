/* Snapshot writer: state + metadata -> compress(tar(meta.json, state.bin, SHA256SUMS
 * [, SHA256SUMS.sealed])), in one pass: each state chunk is hashed into the member hash, pushed
 * through the tar layer and the compressor, and the compressed bytes are hashed for Checksum()
 * on their way to the sink. Memory is the compressor's buffers plus one copy buffer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "archive/internal.h"
#include "archive/tar.h"
#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/util.h"

/* Go's time.Now().Round(time.Second): halves round up. */
static int64_t now_rounded(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec + (ts.tv_nsec >= 500000000L ? 1 : 0);
}

static int write_member(struct tar_writer *t, const char *name, const void *data, size_t len,
                        struct cairn_err *err)
{
    int rc = tar_writer_begin(t, name, len, err);
    if (rc == CAIRN_OK && len > 0)
        rc = tar_writer_data(t, data, len, err);
    return rc == CAIRN_OK ? tar_writer_end(t, err) : rc;
}

/* Copy exactly size bytes of state into the open state.bin member, hashing them. */
static int copy_state(struct tar_writer *t, struct cairn_reader *state, uint64_t size,
                      struct cairn_sha256 *h, struct cairn_err *err)
{
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    uint64_t left = size;
    int rc = CAIRN_OK;
    while (left > 0) {
        size_t want = left < CAIRN_IO_BUFSIZE ? (size_t)left : CAIRN_IO_BUFSIZE, got;
        if ((rc = cairn_reader_read(state, buf, want, &got, err)) != CAIRN_OK)
            goto out;
        if (got == 0) {
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "state stream ended after %llu of the %llu bytes declared",
                               (unsigned long long)(size - left), (unsigned long long)size);
            goto out;
        }
        cairn_sha256_update(h, buf, got);
        if ((rc = tar_writer_data(t, buf, got, err)) != CAIRN_OK)
            goto out;
        left -= got;
    }
    /* Go's CopyN would silently ignore the rest; a longer state is a caller mistake. */
    size_t extra;
    if ((rc = cairn_reader_read(state, buf, 1, &extra, err)) == CAIRN_OK && extra > 0)
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "state stream is longer than the %llu bytes declared",
                           (unsigned long long)size);
out:
    free(buf);
    return rc;
}

int cairn_snapshot_write(struct cairn_writer *out, const struct cairn_snapshot_meta *meta,
                         struct cairn_reader *state, const struct cairn_snapshot_write_opts *opts,
                         struct cairn_snapshot_write_result *result, struct cairn_err *err)
{
    static const struct cairn_snapshot_write_opts defaults = {0};
    if (opts == NULL)
        opts = &defaults;
    if (meta->size < 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "snapshot meta Size %lld is negative",
                             (long long)meta->size);
    if (opts->flavour != CAIRN_SNAPSHOT_GZIP && opts->flavour != CAIRN_SNAPSHOT_ZSTD)
        return cairn_err_set(err, CAIRN_E_INVALID, "snapshots are written as gzip or zstd");
    /* out is the caller's: the stages sit on a borrow, so closing them flushes into out and
     * freeing them leaves it alone. */
    struct cairn_writer *hashw = cairn_hash_writer_new(cairn_writer_borrow(out));
    struct cairn_writer *comp =
        opts->flavour == CAIRN_SNAPSHOT_ZSTD
            ? cairn_zstd_writer_new(hashw, opts->level ? opts->level : 3,
                                    opts->threads ? opts->threads : 1)
            : cairn_gzip_writer_new(hashw, opts->level ? opts->level : 6, opts->threads);
    /* Single-threaded zstd: compress and hash the archive on a second thread while this one
     * reads, hashes and frames the state (the gzip stage has its own workers). */
    if (opts->flavour == CAIRN_SNAPSHOT_ZSTD && opts->threads <= 1)
        comp = cairn_pipe_writer_new(comp);
    struct tar_writer t;
    tar_writer_init(&t, comp, opts->mtime > 0 ? opts->mtime : now_rounded());

    struct cairn_sha256 state_h;
    cairn_sha256_init(&state_h);
    uint8_t meta_sum[32], state_sum[32];
    char *json = NULL, *sums = NULL, *sums2 = NULL;
    uint8_t *sealed = NULL;
    size_t json_len, sums_len, sums2_len, sealed_len = 0;
    int rc;

    /* meta.json, then state.bin, SHA256SUMS and the optional sealed copy (Go's order). */
    cairn_snapshot_meta_encode(meta, &json, &json_len);
    cairn_sha256_oneshot(json, json_len, meta_sum);
    if ((rc = write_member(&t, SNAP_META, json, json_len, err)) != CAIRN_OK)
        goto out;
    if ((rc = tar_writer_begin(&t, SNAP_STATE, (uint64_t)meta->size, err)) != CAIRN_OK)
        goto out;
    if ((rc = copy_state(&t, state, (uint64_t)meta->size, &state_h, err)) != CAIRN_OK) {
        cairn_err_wrap(err, rc, "failed to write snapshot data");
        goto out;
    }
    if ((rc = tar_writer_end(&t, err)) != CAIRN_OK)
        goto out;
    cairn_sha256_final(&state_h, state_sum);
    archive_sums_encode(meta_sum, state_sum, &sums, &sums_len);
    if ((rc = write_member(&t, SNAP_SUMS, sums, sums_len, err)) != CAIRN_OK)
        goto out;
    if (opts->sealer != NULL) {
        /* Go encodes the list a second time for the sealer. */
        archive_sums_encode(meta_sum, state_sum, &sums2, &sums2_len);
        if ((rc = cairn_sealer_seal(opts->sealer, (const uint8_t *)sums2, sums2_len, &sealed,
                                    &sealed_len, err)) != CAIRN_OK) {
            cairn_err_wrap(err, rc, "failed to seal hashes");
            goto out;
        }
        if ((rc = write_member(&t, SNAP_SEALED, sealed, sealed_len, err)) != CAIRN_OK)
            goto out;
    }
    if ((rc = tar_writer_finish(&t, err)) != CAIRN_OK)
        goto out;
    if ((rc = cairn_writer_close(comp, err)) != CAIRN_OK)
        goto out;
    if (result != NULL) {
        memset(result, 0, sizeof(*result));
        result->archive_bytes = hashw->bytes;
        cairn_hash_writer_digest(hashw, result->archive_sha256);
        memcpy(result->checksum, "sha-256=", 8);
        cairn_base64_encode(result->archive_sha256, 32, result->checksum + 8);
        memcpy(result->meta_sha256, meta_sum, 32);
        memcpy(result->state_sha256, state_sum, 32);
    }
out:
    cairn_sha256_free(&state_h);
    cairn_writer_free(comp); /* our stages only: out stays with the caller */
    free(json);
    free(sums);
    free(sums2);
    free(sealed);
    return rc;
}

int cairn_snapshot_spool(struct cairn_reader *in, const char *tmpdir, struct cairn_reader **out,
                         uint64_t *len, struct cairn_err *err)
{
    int fd;
    *out = NULL;
    int rc = tmpfile_open(tmpdir, &fd, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_writer *w = cairn_fd_writer_new(fd, 0);
    rc = cairn_copy(in, w, len, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    if (rc == CAIRN_OK && lseek(fd, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, 0, errno, "rewind spooled state");
    if (rc != CAIRN_OK) {
        close(fd);
        cairn_err_wrap(err, rc, "spool state to a temp file");
        return rc;
    }
    *out = cairn_fd_reader_new(fd, 1);
    return CAIRN_OK;
}

/* ---- the temp-file backed archive object ---- */

struct cairn_snapshot {
    struct cairn_reader *r; /* owns the unlinked temp file */
    uint64_t index, term, size, state_size;
    char checksum[64];
};

int cairn_snapshot_new(struct cairn_reader *state, int64_t state_size,
                       const struct cairn_snapshot_meta *meta,
                       const struct cairn_snapshot_write_opts *opts, const char *tmpdir,
                       struct cairn_snapshot **out, struct cairn_err *err)
{
    *out = NULL;
    struct cairn_reader *spooled = NULL;
    uint64_t len = (uint64_t)state_size;
    int rc, fd;
    if (state_size < 0) {
        if ((rc = cairn_snapshot_spool(state, tmpdir, &spooled, &len, err)) != CAIRN_OK)
            return rc;
        state = spooled;
    }
    if ((rc = tmpfile_open(tmpdir, &fd, err)) != CAIRN_OK) {
        cairn_reader_free(spooled);
        return rc;
    }
    struct cairn_snapshot_meta m = *meta;
    m.size = (int64_t)len;
    struct cairn_snapshot_write_result res;
    struct cairn_writer *w = cairn_fd_writer_new(fd, 0);
    rc = cairn_snapshot_write(w, &m, state, opts, &res, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    cairn_reader_free(spooled);
    if (rc == CAIRN_OK && lseek(fd, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, 0, errno, "rewind snapshot temp file");
    if (rc != CAIRN_OK) {
        close(fd);
        return rc;
    }
    struct cairn_snapshot *s = xcalloc(1, sizeof(*s));
    s->r = cairn_fd_reader_new(fd, 1);
    s->index = meta->index;
    s->term = meta->term;
    s->size = res.archive_bytes;
    s->state_size = len;
    memcpy(s->checksum, res.checksum, sizeof(s->checksum));
    *out = s;
    return CAIRN_OK;
}

const char *cairn_snapshot_checksum(const struct cairn_snapshot *s)
{
    return s->checksum;
}

uint64_t cairn_snapshot_index(const struct cairn_snapshot *s)
{
    return s->index;
}

uint64_t cairn_snapshot_term(const struct cairn_snapshot *s)
{
    return s->term;
}

uint64_t cairn_snapshot_size(const struct cairn_snapshot *s)
{
    return s->size;
}

uint64_t cairn_snapshot_state_size(const struct cairn_snapshot *s)
{
    return s->state_size;
}

struct cairn_reader *cairn_snapshot_reader(struct cairn_snapshot *s)
{
    return s->r;
}

int cairn_snapshot_read(struct cairn_snapshot *s, void *buf, size_t cap, size_t *got,
                        struct cairn_err *err)
{
    return cairn_reader_read(s->r, buf, cap, got, err);
}

void cairn_snapshot_free(struct cairn_snapshot *s)
{
    if (s == NULL)
        return;
    cairn_reader_free(s->r); /* closes the unlinked file, which deletes it */
    free(s);
}
