/* Compression detection and the auto-detecting decompressor. */
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "common/util.h"

enum cairn_compression cairn_detect_compression(const void *buf, size_t len)
{
    const uint8_t *b = buf;
    if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b)
        return CAIRN_COMPRESS_GZIP;
    if (len >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
        return CAIRN_COMPRESS_ZSTD;
    /* A skippable frame (0x184D2A50..0x184D2A5F, little endian) first: pzstd writes one in
     * front of every frame. libzstd's decoder skips them wherever they are. */
    if (len >= 4 && (b[0] & 0xf0) == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18)
        return CAIRN_COMPRESS_ZSTD;
    return CAIRN_COMPRESS_NONE;
}

const char *cairn_compression_name(enum cairn_compression c)
{
    switch (c) {
    case CAIRN_COMPRESS_GZIP: return "gzip";
    case CAIRN_COMPRESS_ZSTD: return "zstd";
    case CAIRN_COMPRESS_AUTO: return "auto";
    case CAIRN_COMPRESS_CHUNKS: return "chunks";
    default: return "none";
    }
}

/* Replays the bytes read for detection, then continues with the source. */
#define MAGIC_LEN 4 /* what cairn_detect_compression needs */
struct prefix_reader {
    struct cairn_reader base;
    uint8_t prefix[MAGIC_LEN];
    size_t len, off;
};

static int prefix_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                       struct cairn_err *err)
{
    struct prefix_reader *p = (struct prefix_reader *)r;
    if (p->off < p->len) {
        size_t n = p->len - p->off < cap ? p->len - p->off : cap;
        memcpy(buf, p->prefix + p->off, n);
        p->off += n;
        *got = n;
        return CAIRN_OK;
    }
    return cairn_reader_read(r->next, buf, cap, got, err);
}

static const struct cairn_reader_ops prefix_reader_ops = {"prefix", prefix_read, NULL};

/* The decoder is chosen on the first read, so construction never blocks or fails. */
struct auto_reader {
    struct cairn_reader base;
    int chosen;
};

static int auto_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct auto_reader *a = (struct auto_reader *)r;
    if (!a->chosen) {
        /* The magic is read before the prefix stage exists: a failure leaves r->next ours. */
        uint8_t head[MAGIC_LEN];
        size_t len = 0;
        while (len < sizeof(head)) {
            size_t n;
            int rc = cairn_reader_read(r->next, head + len, sizeof(head) - len, &n, err);
            if (rc != CAIRN_OK)
                return rc;
            if (n == 0)
                break;
            len += n;
        }
        struct prefix_reader *p = xcalloc(1, sizeof(*p));
        cairn_reader_init(&p->base, &prefix_reader_ops, r->next);
        memcpy(p->prefix, head, len);
        p->len = len;
        switch (cairn_detect_compression(head, len)) {
        case CAIRN_COMPRESS_GZIP: r->next = cairn_gzip_reader_new(&p->base); break;
        case CAIRN_COMPRESS_ZSTD: r->next = cairn_zstd_reader_new(&p->base); break;
        default: r->next = &p->base; break;
        }
        a->chosen = 1;
    }
    return cairn_reader_read(r->next, buf, cap, got, err);
}

/* The chosen decoder's consumption; the prefix stage below it passes bytes through. */
static uint64_t auto_consumed(const struct cairn_reader *r)
{
    const struct auto_reader *a = (const struct auto_reader *)r;
    if (!a->chosen)
        return 0;
    return r->next->ops == &prefix_reader_ops ? r->next->bytes : cairn_reader_consumed(r->next);
}

static const struct cairn_reader_ops auto_reader_ops = {"decompress", auto_read, NULL,
                                                        auto_consumed};

struct cairn_reader *cairn_decompress_reader_new(struct cairn_reader *src)
{
    struct auto_reader *a = xcalloc(1, sizeof(*a));
    cairn_reader_init(&a->base, &auto_reader_ops, src);
    return &a->base;
}
