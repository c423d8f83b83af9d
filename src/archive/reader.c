/* Snapshot readers: verify, extract and restore (spec sections 8 and 13).
 *
 * One pass: the input is hashed (Checksum()), decompressed, and walked as tar; member hashes are
 * computed while reading, and nothing is judged until the archive has ended. Then, in Go's
 * order: the sealed sums (with a sealer), SHA256SUMS, and finally the exact-end rule (no
 * decompressed byte may follow the tar end marker). Deliberate differences from the reference
 * reader, all stricter: a repeated member name is rejected (Go would concatenate the contents),
 * an absent meta.json or state.bin is rejected even if SHA256SUMS lists sha256(""), and
 * meta.json / SHA256SUMS / SHA256SUMS.sealed are capped (1 MiB by default). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive/internal.h"
#include "archive/tar.h"
#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/util.h"

/* Replays the bytes read for flavour detection in front of its next stage. */
struct replay_reader {
    struct cairn_reader base;
    uint8_t prefix[16];
    size_t plen, poff;
};

static int replay_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                       struct cairn_err *err)
{
    struct replay_reader *p = (struct replay_reader *)r;
    if (p->poff < p->plen) {
        size_t n = p->plen - p->poff < cap ? p->plen - p->poff : cap;
        memcpy(buf, p->prefix + p->poff, n);
        p->poff += n;
        *got = n;
        return CAIRN_OK;
    }
    return cairn_reader_read(r->next, buf, cap, got, err);
}

static const struct cairn_reader_ops replay_reader_ops = {"snapshot-input", replay_read, NULL};

static struct replay_reader *replay_new(struct cairn_reader *next)
{
    struct replay_reader *p = xcalloc(1, sizeof(*p));
    cairn_reader_init(&p->base, &replay_reader_ops, next);
    return p;
}

/* Decompression bomb guard: once the tar passes RATIO_FLOOR bytes, it may be at most `ratio`
 * times the compressed bytes the decoder has consumed so far (gzip cannot exceed ~1032:1; real
 * snapshots are far below the default). Without it a small archive could fill the disk of
 * extract or restore before its hashes are checked at the end. Consumed, not read: the decoder
 * stages read ahead (zstd 128 KiB, gzip 256 KiB at a time), and ratio times that read-ahead
 * (512 MiB for zstd at 4096:1) would pass before a refusal. Counted this way the output stops
 * within one read (256 KiB) of the floor or of ratio times the input that produced it. */
#define RATIO_FLOOR   (64u << 20)
#define RATIO_DEFAULT 4096u

struct ratio_reader {
    struct cairn_reader base; /* next: the decompressor */
    uint64_t out;
    unsigned ratio;
};

static int ratio_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    struct ratio_reader *q = (struct ratio_reader *)r;
    int rc = cairn_reader_read(r->next, buf, cap, got, err);
    if (rc != CAIRN_OK)
        return rc;
    q->out += *got;
    if (q->out <= RATIO_FLOOR)
        return CAIRN_OK;
    uint64_t in = cairn_reader_consumed(r->next);
    if (q->out / q->ratio > in)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "failed to decompress snapshot: %llu bytes from %llu compressed "
                             "bytes is over the %u:1 limit (a decompression bomb?)",
                             (unsigned long long)q->out, (unsigned long long)in, q->ratio);
    return CAIRN_OK;
}

static const struct cairn_reader_ops ratio_reader_ops = {"ratio-limit", ratio_read, NULL};

static struct cairn_reader *ratio_new(struct cairn_reader *next, unsigned ratio)
{
    struct ratio_reader *q = xcalloc(1, sizeof(*q));
    cairn_reader_init(&q->base, &ratio_reader_ops, next);
    q->ratio = ratio ? ratio : RATIO_DEFAULT;
    return &q->base;
}

struct archive_input {
    struct cairn_reader *hash; /* raw input bytes, hashed */
    struct cairn_reader *top;  /* the tar stream; freeing it frees the chain */
    enum cairn_snapshot_flavour flavour;
};

/* Detect the flavour by magic and stack the decompressor. The gzip header checks reproduce
 * Go's gzip.NewReader errors, reported as "failed to decompress snapshot: ...". */
static int open_input(struct cairn_reader *in, int raw_tar, unsigned max_ratio,
                      struct archive_input *si, struct cairn_err *err)
{
    si->hash = cairn_hash_reader_new(cairn_reader_borrow(in)); /* in stays the caller's */
    if (raw_tar) {
        si->top = si->hash;
        si->flavour = CAIRN_SNAPSHOT_TAR;
        return CAIRN_OK;
    }
    struct replay_reader *replay = replay_new(si->hash);
    si->top = &replay->base;
    int rc;
    while (replay->plen < 10) {
        size_t got;
        if ((rc = cairn_reader_read(si->hash, replay->prefix + replay->plen, 10 - replay->plen,
                                    &got, err)) != CAIRN_OK) {
            cairn_err_wrap(err, rc, "failed to decompress snapshot");
            return rc;
        }
        if (got == 0)
            break;
        replay->plen += got;
    }
    const uint8_t *b = replay->prefix;
    if (cairn_detect_compression(b, replay->plen) == CAIRN_COMPRESS_ZSTD) {
        si->flavour = CAIRN_SNAPSHOT_ZSTD;
        si->top = ratio_new(cairn_zstd_reader_new(&replay->base), max_ratio);
        return CAIRN_OK;
    }
    si->flavour = CAIRN_SNAPSHOT_GZIP;
    if (replay->plen == 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "failed to decompress snapshot: EOF");
    if (replay->plen < 10)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "failed to decompress snapshot: unexpected EOF");
    if (b[0] != 0x1f || b[1] != 0x8b || b[2] != 8)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "failed to decompress snapshot: gzip: invalid header");
    si->top = ratio_new(cairn_gzip_reader_new(&replay->base), max_ratio);
    return CAIRN_OK;
}

struct member_buf {
    uint8_t *p;
    size_t len;
};

/* Read a small member whole (never allocating by its declared size), hashing it if h. */
static int read_small(struct tar_reader *t, const struct tar_entry *e, size_t cap,
                      struct cairn_sha256 *h, struct member_buf *b, struct cairn_err *err)
{
    if (e->size > cap)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s is %llu bytes, over the %zu-byte limit for this member", e->name,
                             (unsigned long long)e->size, cap);
    size_t bcap = 0;
    for (;;) {
        if (b->len + 4096 > bcap) {
            bcap = bcap ? bcap * 2 : 8192;
            b->p = xrealloc(b->p, bcap + 1);
        }
        size_t got;
        int rc = tar_reader_read(t, b->p + b->len, bcap - b->len, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            break;
        if (h)
            cairn_sha256_update(h, b->p + b->len, got);
        b->len += got;
    }
    b->p[b->len] = 0;
    return CAIRN_OK;
}

static int stream_state(struct tar_reader *t, struct cairn_sha256 *h, struct cairn_writer *sink,
                        uint64_t *len, struct cairn_err *err)
{
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    int rc;
    for (;;) {
        size_t got;
        if ((rc = tar_reader_read(t, buf, CAIRN_IO_BUFSIZE, &got, err)) != CAIRN_OK || got == 0)
            break;
        cairn_sha256_update(h, buf, got);
        *len += got;
        if (sink != NULL && (rc = cairn_writer_write(sink, buf, got, err)) != CAIRN_OK)
            break;
    }
    free(buf);
    return rc;
}

enum { M_META, M_STATE, M_SUMS, M_SEALED, M_COUNT };
static const char *const member_names[M_COUNT] = {SNAP_META, SNAP_STATE, SNAP_SUMS, SNAP_SEALED};

/* Go's read(): walk the members, then check the sums. Errors are unwrapped here. */
static int read_members(struct tar_reader *t, const struct cairn_snapshot_read_opts *o,
                        struct cairn_writer *sink, struct cairn_snapshot_info *info,
                        struct cairn_err *err)
{
    size_t cap = o->member_cap ? o->member_cap : CAIRN_SNAPSHOT_MEMBER_CAP;
    struct cairn_sha256 meta_h, state_h;
    struct member_buf meta = {0}, sums = {0}, sealed = {0};
    uint8_t *opened = NULL;
    int seen[M_COUNT] = {0};
    char q[160];
    int rc;
    cairn_sha256_init(&meta_h);
    cairn_sha256_init(&state_h);
    for (;;) {
        const struct tar_entry *e;
        if ((rc = tar_reader_next(t, &e, err)) != CAIRN_OK) {
            cairn_err_wrap(err, rc, "failed reading snapshot");
            goto out;
        }
        if (e == NULL)
            break;
        int m = 0;
        while (m < M_COUNT && strcmp(e->name, member_names[m]) != 0)
            m++;
        archive_quote(e->name, q, sizeof(q));
        if (m == M_COUNT || e->typeflag == 'g' || (m == M_SEALED && o->three_members)) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "unexpected file %s in snapshot", q);
            goto out;
        }
        if (seen[m]) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "duplicate file %s in snapshot", q);
            goto out;
        }
        seen[m] = 1;
        switch (m) {
        case M_META:
            if ((rc = read_small(t, e, cap, &meta_h, &meta, err)) != CAIRN_OK) {
                cairn_err_wrap(err, rc, "failed to read snapshot metadata");
                goto out;
            }
            info->meta_json = (char *)meta.p;
            info->meta_json_len = meta.len;
            meta.p = NULL;
            if ((rc = cairn_snapshot_meta_decode(info->meta_json, info->meta_json_len, &info->meta,
                                                 err)) != CAIRN_OK) {
                cairn_err_wrap(err, rc, "failed to decode snapshot metadata");
                goto out;
            }
            break;
        case M_STATE:
            if ((rc = stream_state(t, &state_h, sink, &info->state_len, err)) != CAIRN_OK) {
                cairn_err_wrap(err, rc, "failed to read or write snapshot data");
                goto out;
            }
            break;
        default:
            if ((rc = read_small(t, e, cap, NULL, m == M_SUMS ? &sums : &sealed, err)) !=
                CAIRN_OK) {
                cairn_err_wrap(err, rc, "failed to read snapshot hashes");
                goto out;
            }
            if (m == M_SEALED) {
                info->sealed_present = 1;
                info->sealed_len = sealed.len;
            }
            break;
        }
    }
    cairn_sha256_final(&meta_h, info->meta_sha256);
    cairn_sha256_final(&state_h, info->state_sha256);

    if (o->sealer != NULL) {
        size_t olen;
        if ((rc = cairn_sealer_open(o->sealer, sealed.p ? sealed.p : (const uint8_t *)"",
                                    sealed.len, &opened, &olen, err)) != CAIRN_OK) {
            cairn_err_wrap(err, rc, "failed to open the sealed hashes");
            goto out;
        }
        if ((rc = archive_sums_verify(opened, olen, info->meta_sha256, info->state_sha256, err)) !=
            CAIRN_OK) {
            cairn_err_wrap(err, rc, "failed checking integrity of snapshot (sealed hashes)");
            goto out;
        }
        info->sealed_verified = 1;
    }
    if ((rc = archive_sums_verify(sums.p ? sums.p : (const uint8_t *)"", sums.len,
                                  info->meta_sha256, info->state_sha256, err)) != CAIRN_OK) {
        cairn_err_wrap(err, rc, "failed checking integrity of snapshot");
        goto out;
    }
    for (int m = M_META; m <= M_STATE; m++)
        if (!seen[m]) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "snapshot has no %s member (its listed hash is that of empty "
                               "input; cairn does not accept that quirk)",
                               member_names[m]);
            goto out;
        }
out:
    cairn_sha256_free(&meta_h);
    cairn_sha256_free(&state_h);
    free(meta.p);
    free(sums.p);
    free(sealed.p);
    free(opened);
    return rc;
}

/* Counting stops here: a compression bomb after the end marker must not keep us busy for
 * hours just to print its exact size (Go would even buffer it all). */
#define CONCLUDE_MAX (64ull << 20)

/* Go's concludeGzipRead: every decompressed byte after the tar must be absent. */
static int conclude(struct archive_input *si, struct cairn_err *err)
{
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    uint64_t extra = 0;
    int rc;
    int raw = si->flavour == CAIRN_SNAPSHOT_TAR;
    struct cairn_reader *r = raw ? si->hash : si->top;
    for (;;) {
        size_t got;
        if ((rc = cairn_reader_read(r, buf, CAIRN_IO_BUFSIZE, &got, err)) != CAIRN_OK || got == 0)
            break;
        extra += got;
        if (!raw && extra >= CONCLUDE_MAX)
            break;
    }
    free(buf);
    /* The bare tar has no outer layer: what follows its end is record padding, read only so
     * the checksum covers the whole input. */
    if (rc == CAIRN_OK && !raw && extra >= CONCLUDE_MAX)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "at least %llu unread uncompressed bytes remain",
                           CONCLUDE_MAX);
    else if (rc == CAIRN_OK && extra > 0 && !raw)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "%llu unread uncompressed bytes remain",
                           (unsigned long long)extra);
    return rc;
}

static int archive_read(struct cairn_reader *in, const struct cairn_snapshot_read_opts *opts,
                        struct cairn_writer *sink, struct cairn_snapshot_info *info,
                        struct cairn_err *err)
{
    static const struct cairn_snapshot_read_opts defaults = {0};
    if (opts == NULL)
        opts = &defaults;
    memset(info, 0, sizeof(*info));
    struct archive_input si = {0};
    struct tar_reader *t = NULL;
    int rc = open_input(in, opts->raw_tar, opts->max_ratio, &si, err);
    info->flavour = si.flavour;
    if (rc != CAIRN_OK)
        goto out;
    t = tar_reader_new(si.top, 0);
    if ((rc = read_members(t, opts, sink, info, err)) != CAIRN_OK) {
        cairn_err_wrap(err, rc, "failed to read snapshot file");
        goto out;
    }
    if ((rc = conclude(&si, err)) != CAIRN_OK)
        goto out;
    info->archive_bytes = si.hash->bytes;
    uint8_t sum[32];
    cairn_hash_reader_digest(si.hash, sum);
    memcpy(info->checksum, "sha-256=", 8);
    cairn_base64_encode(sum, 32, info->checksum + 8);
out:
    tar_reader_free(t);
    cairn_reader_free(si.top);
    return rc;
}

void cairn_snapshot_info_free(struct cairn_snapshot_info *info)
{
    if (info == NULL)
        return;
    cairn_snapshot_meta_free(&info->meta);
    free(info->meta_json);
    info->meta_json = NULL;
}

int cairn_snapshot_verify(struct cairn_reader *in, const struct cairn_snapshot_read_opts *opts,
                          struct cairn_snapshot_info *info, struct cairn_err *err)
{
    struct cairn_snapshot_info local;
    int rc = archive_read(in, opts, NULL, info ? info : &local, err);
    if (info == NULL)
        cairn_snapshot_info_free(&local);
    return rc;
}

int cairn_snapshot_extract(struct cairn_reader *in, const struct cairn_snapshot_read_opts *opts,
                           struct cairn_writer *out, struct cairn_snapshot_info *info,
                           struct cairn_err *err)
{
    struct cairn_snapshot_info local;
    int rc = archive_read(in, opts, out, info ? info : &local, err);
    if (info == NULL)
        cairn_snapshot_info_free(&local);
    return rc;
}

int cairn_snapshot_restore(struct cairn_reader *in, const struct cairn_snapshot_read_opts *opts,
                           cairn_snapshot_restore_fn fn, void *arg,
                           struct cairn_snapshot_info *info, struct cairn_err *err)
{
    struct cairn_snapshot_info local;
    struct cairn_snapshot_info *inf = info ? info : &local;
    int fd;
    int rc = tmpfile_open(opts ? opts->tmpdir : NULL, &fd, err);
    if (rc != CAIRN_OK) {
        memset(inf, 0, sizeof(*inf));
        goto out;
    }
    struct cairn_writer *spool = cairn_fd_writer_new(fd, 0);
    rc = archive_read(in, opts, spool, inf, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(spool, err);
    cairn_writer_free(spool);
    /* raft's restoreUserSnapshot checks, before anything is applied. */
    if (rc == CAIRN_OK && (inf->meta.version < 0 || inf->meta.version > 1))
        rc = cairn_err_set(err, CAIRN_E_UNSUPPORTED, "unsupported snapshot version %lld",
                           (long long)inf->meta.version);
    if (rc == CAIRN_OK && (int64_t)inf->state_len != inf->meta.size)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                           "failed to write snapshot, size didn't match (%llu != %lld)",
                           (unsigned long long)inf->state_len, (long long)inf->meta.size);
    if (rc == CAIRN_OK && lseek(fd, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, 0, errno, "rewind restored state");
    if (rc != CAIRN_OK) {
        close(fd);
        goto out;
    }
    struct cairn_reader *state = cairn_fd_reader_new(fd, 1);
    rc = fn(arg, &inf->meta, state, err);
    cairn_reader_free(state);
out:
    if (info == NULL)
        cairn_snapshot_info_free(&local);
    return rc;
}
