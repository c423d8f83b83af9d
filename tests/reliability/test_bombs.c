/* Decompression bombs, at the library level (also run under ASan/UBSan): the snapshot readers'
 * ratio limit (zstd bomb refused by verify, extract and restore, the limit is adjustable and
 * can be lifted; gzip's own ~1032:1 stays under the default), and cairnd's shard-upload tar
 * reader refusing a sparse entry that would expand a few bytes into 4 GiB. */
#include "../archive/helpers.h"
#include "influx/internal.h"

#include <limits.h>

/* What the zstd stage asks of its source at once (ZSTD_DStreamInSize()). */
#define ZSTD_BLOCK_READ ((128u << 10) + 3)

static struct bytes zero_archive(enum cairn_snapshot_flavour f, size_t len)
{
    uint8_t *z = xcalloc(1, len);
    struct bytes a = write_archive(f, z, len, NULL, 1700000000);
    free(z);
    return a;
}

static int restore_discard(void *arg, const struct cairn_snapshot_meta *meta,
                           struct cairn_reader *state, struct cairn_err *err)
{
    (void)meta;
    *(int *)arg = 1;
    struct cairn_writer *w = cairn_discard_writer_new();
    int rc = cairn_copy(state, w, NULL, err);
    cairn_writer_free(w);
    return rc;
}

TEST(zstd_bomb_is_refused_by_the_ratio_limit)
{
    struct bytes a = zero_archive(CAIRN_SNAPSHOT_ZSTD, 100u << 20);
    printf("    zstd archive of 100 MiB of zeros: %zu bytes (%zu:1)\n", a.len,
           (size_t)(100u << 20) / a.len);
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    CHECK_ERR(verify_bytes(&a, &o, NULL, &err), CAIRN_E_CORRUPT, &err,
              "over the 4096:1 limit (a decompression bomb?)");

    struct bytes out = {0};
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK_ERR(snapshot_extract_into(r, &o, capture_new(&out), NULL, &err), CAIRN_E_CORRUPT, &err,
              "4096:1");
    cairn_reader_free(r);
    CHECK(!out.committed);
    CHECK(out.len <= (65u << 20)); /* stopped soon after the 64 MiB floor */
    bytes_free(&out);

    int called = 0;
    r = cairn_mem_reader_new(a.p, a.len);
    CHECK_ERR(cairn_snapshot_restore(r, &o, restore_discard, &called, NULL, &err), CAIRN_E_CORRUPT,
              &err, "4096:1");
    cairn_reader_free(r);
    CHECK(!called);

    o.max_ratio = UINT_MAX; /* lifted: the same archive is good */
    CHECK_OK(verify_bytes(&a, &o, NULL, &err), &err);
    o.max_ratio = 1000000;
    CHECK_OK(verify_bytes(&a, &o, NULL, &err), &err);
    bytes_free(&a);
}

TEST(gzip_stays_under_the_default_ratio)
{
    /* deflate cannot exceed ~1032:1, so gzip archives of zeros still verify by default; a
     * lower limit refuses them. */
    struct bytes a = zero_archive(CAIRN_SNAPSHOT_GZIP, 80u << 20);
    struct cairn_err err;
    CHECK_OK(verify_bytes(&a, NULL, NULL, &err), &err);
    struct cairn_snapshot_read_opts o = {0};
    o.max_ratio = 100;
    CHECK_ERR(verify_bytes(&a, &o, NULL, &err), CAIRN_E_CORRUPT, &err, "over the 100:1 limit");
    bytes_free(&a);
}

/* A sink that only counts what reaches it, so a bomb's output costs no memory. */
struct count_writer {
    struct cairn_writer base;
    uint64_t *n;
    int *committed;
};

static int count_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    (void)buf, (void)err;
    *((struct count_writer *)w)->n += len;
    return CAIRN_OK;
}

static int count_finish(struct cairn_writer *w, struct cairn_err *err)
{
    (void)err;
    *((struct count_writer *)w)->committed = 1;
    return CAIRN_OK;
}

static const struct cairn_writer_ops count_ops = {"count", count_write, count_finish, NULL};

static struct cairn_writer *count_new(uint64_t *n, int *committed)
{
    struct count_writer *c = xcalloc(1, sizeof(*c));
    cairn_writer_init(&c->base, &count_ops, NULL);
    c->n = n;
    c->committed = committed;
    return &c->base;
}

/* The ratio is judged against the compressed bytes the decoder consumed, not those it read
 * ahead (the zstd stage reads 128 KiB at a time, the gzip stage 256 KiB): against read-ahead
 * a bomb larger than one read could produce ratio x 128 KiB (512 MiB at 4096:1) before the
 * refusal. Extract must stop within a few MiB of the 64 MiB floor. */
#define BOMB_FLOOR (64ull << 20)
#define BOMB_SLACK (4ull << 20)

static void bomb_extract(const struct bytes *a, unsigned ratio, const char *what)
{
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.max_ratio = ratio;
    uint64_t out = 0;
    int committed = 0;
    struct cairn_reader *r = cairn_mem_reader_new(a->p, a->len);
    char want[32];
    snprintf(want, sizeof(want), "over the %u:1 limit", ratio);
    CHECK_ERR(snapshot_extract_into(r, &o, count_new(&out, &committed), NULL, &err),
              CAIRN_E_CORRUPT, &err, want);
    cairn_reader_free(r);
    printf("    %s bomb of %zu bytes: %llu bytes of state.bin written before the refusal\n", what,
           a->len, (unsigned long long)out);
    CHECK(!committed);
    CHECK(out <= BOMB_FLOOR + BOMB_SLACK);
}

TEST(zstd_bomb_larger_than_the_read_ahead_stops_near_the_floor)
{
    /* One zstd frame: the tar header of a state.bin declared 8 GiB - 1 as a raw block, then
     * 65536 RLE blocks of 128 KiB of zeros (4 bytes each, 32768:1): 257 KiB of input, twice
     * what the zstd stage reads at once. It is never decoded to its end. */
    enum { NBLK = 65536, BLK = 128 << 10 };
    struct bytes a = {0};
    static const uint8_t fh[6] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38}; /* window 128 KiB */
    bytes_add(&a, fh, sizeof(fh));
    uint8_t hdr[TAR_BLOCK];
    tar_header_format(hdr, "state.bin", '0', TAR_MAX_OCTAL_SIZE, 1700000000, 1);
    uint32_t raw = TAR_BLOCK << 3; /* raw block, not last */
    uint8_t bh[3] = {(uint8_t)raw, (uint8_t)(raw >> 8), (uint8_t)(raw >> 16)};
    bytes_add(&a, bh, 3);
    bytes_add(&a, hdr, sizeof(hdr));
    uint8_t *blocks = xmalloc((size_t)NBLK * 4);
    for (int i = 0; i < NBLK; i++) {
        uint32_t rle = (uint32_t)BLK << 3 | 1u << 1 | (i == NBLK - 1); /* RLE block */
        uint8_t *b = blocks + (size_t)i * 4;
        b[0] = (uint8_t)rle, b[1] = (uint8_t)(rle >> 8), b[2] = (uint8_t)(rle >> 16), b[3] = 0;
    }
    bytes_add(&a, blocks, (size_t)NBLK * 4);
    free(blocks);
    CHECK(a.len > 2 * ZSTD_BLOCK_READ);
    bomb_extract(&a, 4096, "zstd");
    bytes_free(&a);
}

TEST(gzip_bomb_larger_than_the_read_ahead_stops_near_the_floor)
{
    /* deflate cannot pass ~1032:1, so only a limit below that refuses gzip: 800. The bomb is
     * the tar header of a state.bin declared 8 GiB - 1, then 72 gzip members of 8 MiB of zeros
     * each (8.1 KiB, ~1030:1): 585 KiB of input, twice what the gzip stage reads at once. */
    struct bytes a = {0};
    uint8_t hdr[TAR_BLOCK];
    tar_header_format(hdr, "state.bin", '0', TAR_MAX_OCTAL_SIZE, 1700000000, 1);
    struct bytes first = gzip_bytes(hdr, sizeof(hdr), NULL, NULL);
    bytes_add(&a, first.p, first.len);
    bytes_free(&first);
    uint8_t *z = xcalloc(1, 8u << 20);
    struct bytes member = gzip_bytes(z, 8u << 20, NULL, NULL);
    free(z);
    for (int i = 0; i < 72; i++)
        bytes_add(&a, member.p, member.len);
    bytes_free(&member);
    CHECK(a.len > 2 * CAIRN_IO_BUFSIZE);
    bomb_extract(&a, 800, "gzip");
    bytes_free(&a);
}

static void octal(uint8_t *p, size_t width, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%0*llo", (int)width - 1, v);
    memcpy(p, buf, width - 1);
    p[width - 1] = 0;
}

static int count_entry(void *ctx, const char *name, int64_t mtime, uint64_t size,
                       struct cairn_reader *data, struct cairn_err *err)
{
    (void)name, (void)mtime, (void)size;
    struct cairn_writer *w = cairn_discard_writer_new();
    int rc = cairn_copy(data, w, NULL, err);
    cairn_writer_free(w);
    ++*(int *)ctx;
    return rc;
}

TEST(sparse_shard_entry_is_refused)
{
    /* An old-GNU sparse header: 512 stored bytes declared as the end of a 4 GiB file. */
    uint8_t t[512 * 4] = {0};
    uint8_t *h = t;
    strcpy((char *)h, "db/rp/1/000000001-000000001.tsm");
    octal(h + 100, 8, 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, 512);
    octal(h + 136, 12, 0);
    h[156] = 'S';
    memcpy(h + 257, "ustar  ", 8);
    unsigned long long real = 4ull << 30; /* 11 octal digits, as the field holds */
    octal(h + 386, 12, real - 512);
    octal(h + 398, 12, 512);
    octal(h + 483, 12, real);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    memset(t + 512, 'x', 512);
    struct cairn_err err;
    int n = 0;
    struct cairn_reader *r = cairn_mem_reader_new(t, sizeof(t));
    CHECK_ERR(influx_tar_each(r, count_entry, &n, &err), CAIRN_E_CORRUPT, &err,
              "sparse entry 'db/rp/1/000000001-000000001.tsm' refused (4294967296 bytes");
    cairn_reader_free(r);
    CHECK_EQ_INT(n, 0);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
