/* The compress-or-store decision shared by stored files and streams. */
#include <stdlib.h>
#include <zstd.h>

#include "common/util.h"
#include "internal.h"

int cairn_compress_pays(const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    size_t cap = ZSTD_compressBound(CAIRN_PROBE_SAMPLE);
    uint8_t *out = cairn_xmalloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int pays = cctx == NULL; /* cannot tell: compress, as without a probe */
    for (size_t off = 0; off < len && !pays; off += CAIRN_PROBE_SAMPLE) {
        size_t n = len - off < CAIRN_PROBE_SAMPLE ? len - off : CAIRN_PROBE_SAMPLE;
        size_t c = ZSTD_compressCCtx(cctx, out, cap, (const uint8_t *)buf + off, n, 1);
        pays = ZSTD_isError(c) || c <= n - n / 8;
    }
    ZSTD_freeCCtx(cctx);
    free(out);
    return pays;
}
