/* Helpers for the archive tests: in-memory archives, crafted tars, gzip wrapping. */
#ifndef CAIRN_TEST_ARCHIVE_HELPERS_H
#define CAIRN_TEST_ARCHIVE_HELPERS_H

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "archive/tar.h"
#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/util.h"
#include "test.h"

struct bytes {
    uint8_t *p;
    size_t len;
    int committed; /* set by a capture sink's finish */
    size_t cap;    /* allocated size; 0 when p was not allocated here */
};

/* The spare room past the terminating NUL stays poisoned under ASan, so a read beyond len + 1
 * is caught as with an exact-size allocation. */
#if defined(__SANITIZE_ADDRESS__)
#define BYTES_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BYTES_ASAN 1
#endif
#endif
#ifdef BYTES_ASAN
#include <sanitizer/asan_interface.h>
#define BYTES_POISON(p, n)   __asan_poison_memory_region((p), (n))
#define BYTES_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define BYTES_POISON(p, n)   ((void)(p), (void)(n))
#define BYTES_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Appends grow the buffer geometrically: one realloc per append made building a MiB from
 * small pieces quadratic (minutes under ASan, whose realloc always copies). */
static inline void bytes_add(struct bytes *b, const void *d, size_t n)
{
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap *= 2;
        uint8_t *p = xmalloc(cap);
        if (b->p != NULL) {
            memcpy(p, b->p, b->len);
            if (b->cap)
                BYTES_UNPOISON(b->p, b->cap);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    BYTES_UNPOISON(b->p + b->len, n + 1);
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
    BYTES_POISON(b->p + b->len + 1, b->cap - b->len - 1);
}

static inline void bytes_str(struct bytes *b, const char *s)
{
    bytes_add(b, s, strlen(s));
}

static inline void bytes_free(struct bytes *b)
{
    if (b->p != NULL && b->cap)
        BYTES_UNPOISON(b->p, b->cap);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* A sink appending to caller-owned bytes (which outlive the writer chain). */
struct capture_writer {
    struct cairn_writer base;
    struct bytes *b;
};

static inline int capture_write(struct cairn_writer *w, const void *buf, size_t len,
                                struct cairn_err *err)
{
    (void)err;
    bytes_add(((struct capture_writer *)w)->b, buf, len);
    return CAIRN_OK;
}

static inline int capture_finish(struct cairn_writer *w, struct cairn_err *err)
{
    (void)err;
    ((struct capture_writer *)w)->b->committed = 1;
    return CAIRN_OK;
}

static const struct cairn_writer_ops capture_ops = {"capture", capture_write, capture_finish, NULL};

static inline struct cairn_writer *capture_new(struct bytes *b)
{
    struct capture_writer *c = xcalloc(1, sizeof(*c));
    cairn_writer_init(&c->base, &capture_ops, NULL);
    c->b = b;
    return &c->base;
}

static inline void test_meta(struct cairn_snapshot_meta *m, size_t state_len)
{
    memset(m, 0, sizeof(*m));
    m->version = 1;
    m->id = (char *)"2-10-1546615723344";
    m->index = 10;
    m->term = 2;
    m->configuration_index = 1;
    m->size = (int64_t)state_len;
}

/* cairn_snapshot_write and _extract borrow their writer: they never close or free it. These
 * use them as a caller does (commit w only after CAIRN_OK, free it either way), checking that
 * the call left w open. */
static inline int snapshot_write_into(struct cairn_writer *w, const struct cairn_snapshot_meta *m,
                                      struct cairn_reader *state,
                                      const struct cairn_snapshot_write_opts *o,
                                      struct cairn_snapshot_write_result *res,
                                      struct cairn_err *err)
{
    int rc = cairn_snapshot_write(w, m, state, o, res, err);
    CHECK(w->state != CAIRN_IO_CLOSED);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

static inline int snapshot_extract_into(struct cairn_reader *in,
                                        const struct cairn_snapshot_read_opts *o,
                                        struct cairn_writer *w, struct cairn_snapshot_info *info,
                                        struct cairn_err *err)
{
    int rc = cairn_snapshot_extract(in, o, w, info, err);
    CHECK(w->state != CAIRN_IO_CLOSED);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

/* A cairn-written archive of state. */
static inline struct bytes write_archive(enum cairn_snapshot_flavour f, const void *state,
                                         size_t len, struct cairn_sealer *sealer, int64_t mtime)
{
    struct cairn_err err;
    struct cairn_snapshot_meta m;
    test_meta(&m, len);
    struct bytes out = {0};
    struct cairn_snapshot_write_opts o = {0};
    o.flavour = f;
    o.sealer = sealer;
    o.mtime = mtime;
    o.threads = 1;
    struct cairn_reader *r = cairn_mem_reader_new(state, len);
    CHECK_OK(snapshot_write_into(capture_new(&out), &m, r, &o, NULL, &err), &err);
    cairn_reader_free(r);
    return out;
}

static inline int verify_bytes(const struct bytes *b, const struct cairn_snapshot_read_opts *o,
                               struct cairn_snapshot_info *info, struct cairn_err *err)
{
    struct cairn_reader *r = cairn_mem_reader_new(b->p, b->len);
    int rc = cairn_snapshot_verify(r, o, info, err);
    cairn_reader_free(r);
    return rc;
}

/* Decompress (gzip/zstd by magic) everything. */
static inline struct bytes inflate_all(const struct bytes *b)
{
    struct cairn_err err;
    struct bytes out = {0};
    struct cairn_reader *r = cairn_decompress_reader_new(cairn_mem_reader_new(b->p, b->len));
    struct cairn_writer *w = capture_new(&out);
    CHECK_OK(cairn_copy(r, w, NULL, &err), &err);
    cairn_writer_free(w);
    cairn_reader_free(r);
    return out;
}

/* Single-member gzip with zlib; name/extra set FNAME/FEXTRA. */
static inline struct bytes gzip_bytes(const void *data, size_t len, const char *name,
                                      const char *extra)
{
    struct bytes out = {0};
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    gz_header h;
    memset(&h, 0, sizeof(h));
    h.os = 255;
    h.name = (Bytef *)name;
    h.extra = (Bytef *)extra;
    h.extra_len = extra ? (uInt)strlen(extra) : 0;
    if (name || extra)
        deflateSetHeader(&zs, &h);
    uint8_t buf[65536];
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)len;
    int zr;
    do {
        zs.next_out = buf;
        zs.avail_out = sizeof(buf);
        zr = deflate(&zs, Z_FINISH);
        bytes_add(&out, buf, sizeof(buf) - zs.avail_out);
    } while (zr == Z_OK || zr == Z_BUF_ERROR);
    CHECK(zr == Z_STREAM_END);
    deflateEnd(&zs);
    return out;
}

static inline void reheader_checksum(uint8_t *blk)
{
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum);
    blk[155] = ' ';
}

/* Append one tar member; mod (may be NULL) edits the header before its checksum is redone. */
static inline void tar_add(struct bytes *t, const char *name, char type, const void *data,
                           size_t len, void (*mod)(uint8_t *blk))
{
    uint8_t blk[512];
    tar_header_format(blk, name, type, len, 1700000000, 1);
    if (mod) {
        mod(blk);
        reheader_checksum(blk);
    }
    bytes_add(t, blk, 512);
    bytes_add(t, data, len);
    static const uint8_t zero[512];
    bytes_add(t, zero, (512 - len % 512) % 512);
}

static inline void tar_zero_blocks(struct bytes *t, int n)
{
    static const uint8_t zero[512];
    for (int i = 0; i < n; i++)
        bytes_add(t, zero, 512);
}

#define STATE_TEXT "the fsm state: records 1 2 3\n"

/* Default members: meta.json text and correct SHA256SUMS for STATE_TEXT. */
static inline char *default_meta_json(void)
{
    struct cairn_snapshot_meta m;
    test_meta(&m, strlen(STATE_TEXT));
    char *j;
    size_t n;
    cairn_snapshot_meta_encode(&m, &j, &n);
    return j;
}

static inline char *hex_sha(const void *d, size_t n)
{
    uint8_t s[32];
    cairn_sha256_oneshot(d, n, s);
    char *h = xmalloc(65);
    cairn_hex_encode(s, 32, h);
    return h;
}

static inline char *sums_for(const char *meta, const char *state)
{
    char *hm = hex_sha(meta, strlen(meta)), *hs = hex_sha(state, strlen(state));
    char *s = xasprintf("%s  meta.json\n%s  state.bin\n", hm, hs);
    free(hm);
    free(hs);
    return s;
}

#endif
