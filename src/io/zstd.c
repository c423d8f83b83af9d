/* zstd compression and decompression stages (libzstd streaming API). */
#include <stdlib.h>
/* For ZSTD_getCParams: in zstd.h's "experimental" section, but exported by the shared library
 * and unchanged since zstd 1.0; it is how the ratio/speed of a level is sized to an input. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "cairn/io.h"
#include "common/pool.h"
#include "common/util.h"

struct zstd_writer {
    struct cairn_writer base;
    ZSTD_CCtx *cctx;
    uint8_t *out;
    size_t out_cap;
};

static int zstd_drain(struct zstd_writer *z, ZSTD_inBuffer *in, ZSTD_EndDirective mode,
                      struct cairn_err *err)
{
    for (;;) {
        ZSTD_outBuffer out = {z->out, z->out_cap, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, in, mode);
        if (ZSTD_isError(left))
            return cairn_err_set(err, CAIRN_E_INTERNAL, "zstd: %s", ZSTD_getErrorName(left));
        if (out.pos > 0) {
            int rc = cairn_writer_write(z->base.next, z->out, out.pos, err);
            if (rc != CAIRN_OK)
                return rc;
        }
        /* continue: done once the input is consumed; end: once nothing is left to flush */
        if (mode == ZSTD_e_continue ? in->pos == in->size : left == 0)
            return CAIRN_OK;
    }
}

static int zstd_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    ZSTD_inBuffer in = {buf, len, 0};
    return zstd_drain((struct zstd_writer *)w, &in, ZSTD_e_continue, err);
}

static int zstd_finish(struct cairn_writer *w, struct cairn_err *err)
{
    ZSTD_inBuffer in = {NULL, 0, 0};
    return zstd_drain((struct zstd_writer *)w, &in, ZSTD_e_end, err);
}

static void zstd_writer_free(struct cairn_writer *w)
{
    struct zstd_writer *z = (struct zstd_writer *)w;
    ZSTD_freeCCtx(z->cctx);
    free(z->out);
    free(z);
}

static const struct cairn_writer_ops zstd_writer_ops = {"zstd", zstd_write, zstd_finish,
                                                        zstd_writer_free};

/* What ZSTD_c_srcSizeHint (experimental) would do, with stable parameters only: the level's
 * parameters for a source of this size. Nothing is pledged, so a file that grows while it is
 * read still compresses. */
static void size_params(ZSTD_CCtx *cctx, int level, int64_t size_hint)
{
    ZSTD_compressionParameters p = ZSTD_getCParams(level, (unsigned long long)size_hint, 0);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, (int)p.windowLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, (int)p.chainLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, (int)p.hashLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_searchLog, (int)p.searchLog);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, (int)p.minMatch);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_targetLength, (int)p.targetLength);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, (int)p.strategy);
}

struct cairn_writer *cairn_zstd_writer_new(struct cairn_writer *next, int level, int threads)
{
    return cairn_zstd_writer_new_sized(next, level, threads, -1);
}

struct cairn_writer *cairn_zstd_writer_new_sized(struct cairn_writer *next, int level, int threads,
                                                 int64_t size_hint)
{
    struct zstd_writer *z = xcalloc(1, sizeof(*z));
    cairn_writer_init(&z->base, &zstd_writer_ops, next);
    z->cctx = ZSTD_createCCtx();
    if (z->cctx == NULL)
        abort();
    ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 1);
    if (size_hint >= 0)
        size_params(z->cctx, level, size_hint);
    if (threads == 0)
        threads = (int)cpu_count();
    /* Without ZSTD_MULTITHREAD support this fails and zstd stays single-threaded. */
    if (threads > 1)
        ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_nbWorkers, threads);
    z->out_cap = ZSTD_CStreamOutSize();
    z->out = xmalloc(z->out_cap);
    return &z->base;
}

struct zstd_reader {
    struct cairn_reader base;
    ZSTD_DCtx *dctx;
    uint8_t *in;
    ZSTD_inBuffer inb;
    int src_eof;
    int started;    /* at least one byte of input was seen */
    int frame_done; /* the last frame ended exactly at the current position */
};

static int zstd_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct zstd_reader *z = (struct zstd_reader *)r;
    ZSTD_outBuffer out = {buf, cap, 0};
    for (;;) {
        if (z->inb.pos < z->inb.size || !z->frame_done) {
            size_t ret = ZSTD_decompressStream(z->dctx, &out, &z->inb);
            if (ZSTD_isError(ret))
                return cairn_err_set(err, CAIRN_E_CORRUPT, "zstd: %s", ZSTD_getErrorName(ret));
            z->frame_done = ret == 0;
        }
        if (out.pos > 0) {
            *got = out.pos;
            return CAIRN_OK;
        }
        if (z->inb.pos < z->inb.size)
            continue;
        if (z->src_eof) {
            if (!z->started)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "zstd: empty input");
            if (!z->frame_done)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "zstd: unexpected end of stream");
            *got = 0;
            return CAIRN_OK;
        }
        size_t n;
        int rc = cairn_reader_read(r->next, z->in, ZSTD_DStreamInSize(), &n, err);
        if (rc != CAIRN_OK)
            return rc;
        z->inb = (ZSTD_inBuffer){z->in, n, 0};
        if (n == 0)
            z->src_eof = 1;
        else if (!z->started) {
            z->started = 1;
            z->frame_done = 0;
        }
    }
}

static void zstd_reader_free(struct cairn_reader *r)
{
    struct zstd_reader *z = (struct zstd_reader *)r;
    ZSTD_freeDCtx(z->dctx);
    free(z->in);
    free(z);
}

/* What the decoder took in: zstd's inBuffer.pos, so not the rest of the last read. */
static uint64_t zstd_reader_consumed(const struct cairn_reader *r)
{
    const struct zstd_reader *z = (const struct zstd_reader *)r;
    return r->next->bytes - (z->inb.size - z->inb.pos);
}

static const struct cairn_reader_ops zstd_reader_ops = {"zstd", zstd_read, zstd_reader_free,
                                                        zstd_reader_consumed};

struct cairn_reader *cairn_zstd_reader_new(struct cairn_reader *src)
{
    struct zstd_reader *z = xcalloc(1, sizeof(*z));
    cairn_reader_init(&z->base, &zstd_reader_ops, src);
    z->dctx = ZSTD_createDCtx();
    if (z->dctx == NULL)
        abort();
    /* Cap the window (128 MiB, zstd's own default) so hostile frames cannot demand more. */
    ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, 27);
    z->in = xmalloc(ZSTD_DStreamInSize());
    z->frame_done = 1; /* nothing to flush before the first read */
    return &z->base;
}
