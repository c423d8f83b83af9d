/* The compress-or-store trial (probe.h): storage's zstd decision and the gzip writer's
 * stored-block decision, one loop with the use's codec and threshold. */
#include <libdeflate.h>
#include <stdint.h>
#include <stdlib.h>
#include <zstd.h>

#include "common/util.h"
#include "io/probe.h"

struct io_probe {
    enum io_probe_use use;
    size_t sample;
    unsigned share; /* a sample pays when it shrinks to n - n / share bytes or fewer */
    ZSTD_CCtx *zstd;
    struct libdeflate_compressor *deflate;
    uint8_t *out;
    size_t out_cap;
};

struct io_probe *io_probe_new(enum io_probe_use use)
{
    struct io_probe *p = xcalloc(1, sizeof(*p));
    p->use = use;
    if (use == IO_PROBE_ZSTD) {
        p->sample = IO_PROBE_ZSTD_SAMPLE;
        p->share = 8;
        p->zstd = ZSTD_createCCtx();
        p->out_cap = ZSTD_compressBound(p->sample);
        if (p->zstd == NULL)
            abort();
    } else {
        p->sample = IO_PROBE_DEFLATE_SAMPLE;
        p->share = 32;
        p->deflate = libdeflate_alloc_compressor(1);
        p->out_cap = p->sample;
        if (p->deflate == NULL)
            abort();
    }
    p->out = xmalloc(p->out_cap);
    return p;
}

void io_probe_free(struct io_probe *p)
{
    if (p == NULL)
        return;
    ZSTD_freeCCtx(p->zstd);
    libdeflate_free_compressor(p->deflate);
    free(p->out);
    free(p);
}

static int sample_pays(struct io_probe *p, const uint8_t *in, size_t n)
{
    size_t limit = n - n / p->share;
    if (p->use == IO_PROBE_ZSTD) {
        size_t c = ZSTD_compressCCtx(p->zstd, p->out, p->out_cap, in, n, 1);
        return ZSTD_isError(c) || c <= limit;
    }
    /* libdeflate returns 0 when the output does not fit: give it no room past the limit. */
    return libdeflate_deflate_compress(p->deflate, in, n, p->out, limit) != 0;
}

int io_probe_pays(struct io_probe *p, const void *buf, size_t len)
{
    const uint8_t *b = buf;
    for (size_t off = 0; off < len; off += p->sample) {
        size_t n = len - off < p->sample ? len - off : p->sample;
        if (sample_pays(p, b + off, n))
            return 1;
    }
    return 0;
}

int io_compress_pays(enum io_probe_use use, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    struct io_probe *p = io_probe_new(use);
    int pays = io_probe_pays(p, buf, len);
    io_probe_free(p);
    return pays;
}
