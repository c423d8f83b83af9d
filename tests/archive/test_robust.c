/* Damaged archives are refused: every truncation point and thousands of random byte flips of a
 * sample archive of each flavour. The only changes allowed to pass are flips of compression
 * header bytes that carry no data (gzip MTIME/XFL/OS/FTEXT, which every gzip reader ignores by
 * RFC 1952), and then only when the decompressed tar is byte-identical to the original. */
#include "helpers.h"

static struct bytes sample(enum cairn_snapshot_flavour f, struct cairn_sealer *sealer)
{
    static char state[3000];
    uint32_t x = 99;
    for (size_t i = 0; i < sizeof(state); i++) {
        x = x * 1664525u + 1013904223u;
        state[i] = i < 1000 ? (char)(x >> 24) : (char)("raft fsm state "[i % 15] ^ (i % 7));
    }
    return write_archive(f, state, sizeof(state), sealer, 1700000000);
}

static int accepted(const uint8_t *p, size_t len, struct cairn_sealer *sealer)
{
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.sealer = sealer;
    struct cairn_reader *r = cairn_mem_reader_new(p, len);
    int rc = cairn_snapshot_verify(r, &o, NULL, &err);
    cairn_reader_free(r);
    return rc == CAIRN_OK;
}

static void truncations(enum cairn_snapshot_flavour f)
{
    struct bytes a = sample(f, NULL);
    CHECK(accepted(a.p, a.len, NULL));
    int bad = 0;
    for (size_t n = 0; n < a.len; n++)
        if (accepted(a.p, n, NULL)) {
            test_fail(__FILE__, __LINE__, "%s archive cut to %zu of %zu bytes was accepted",
                      f == CAIRN_SNAPSHOT_ZSTD ? "zstd" : "gzip", n, a.len);
            if (++bad > 5)
                break;
        }
    bytes_free(&a);
}

TEST(every_truncation_is_refused_gzip)
{
    truncations(CAIRN_SNAPSHOT_GZIP);
}

TEST(every_truncation_is_refused_zstd)
{
    truncations(CAIRN_SNAPSHOT_ZSTD);
}

/* Bytes of the compression header that do not affect the data: gzip FLG (FTEXT), MTIME, XFL
 * and OS; the zstd window descriptor (a larger window, or one still big enough, decodes the
 * same frame). */
static int inert_header_byte(enum cairn_snapshot_flavour f, const uint8_t *orig, size_t off)
{
    if (f == CAIRN_SNAPSHOT_GZIP)
        return off >= 3 && off <= 9;
    return off == 5 && (orig[4] & 0x20) == 0;
}

static void flips(enum cairn_snapshot_flavour f, struct cairn_sealer *sealer, int count,
                  uint32_t seed)
{
    struct bytes a = sample(f, sealer);
    struct bytes tar = inflate_all(&a);
    CHECK(accepted(a.p, a.len, sealer));
    uint8_t *copy = xmalloc(a.len);
    uint32_t x = seed;
    int accepted_inert = 0, accepted_same = 0;
    for (int i = 0; i < count; i++) {
        x = x * 1103515245u + 12345u;
        size_t off = (x >> 8) % a.len;
        x = x * 1103515245u + 12345u;
        uint8_t mask = (uint8_t)((x >> 16) | 1) & 0xff;
        if (mask == 0)
            mask = 1;
        memcpy(copy, a.p, a.len);
        copy[off] ^= mask;
        if (!accepted(copy, a.len, sealer))
            continue;
        struct bytes c = {copy, a.len, 0};
        struct bytes t = inflate_all(&c);
        int same = t.len == tar.len && memcmp(t.p, tar.p, t.len) == 0;
        bytes_free(&t);
        if (inert_header_byte(f, a.p, off) && same) {
            accepted_inert++;
            continue;
        }
        /* Deflate has don't-care bits too (the padding after the final block's end code);
         * a flip there decodes to the same tar and is not a corruption. It must stay rare. */
        if (same) {
            accepted_same++;
            continue;
        }
        test_fail(__FILE__, __LINE__, "flip %d: byte %zu ^ 0x%02x accepted (CHANGED content)", i,
                  off, mask);
    }
    printf("    %d flips of a %zu-byte archive, %d accepted in inert header bytes, %d elsewhere "
           "with identical content\n",
           count, a.len, accepted_inert, accepted_same);
    CHECK(accepted_same <= count / 100);
    free(copy);
    bytes_free(&tar);
    bytes_free(&a);
}

TEST(random_byte_flips_are_refused_gzip)
{
    flips(CAIRN_SNAPSHOT_GZIP, NULL, 3000, 1);
}

TEST(random_byte_flips_are_refused_zstd)
{
    flips(CAIRN_SNAPSHOT_ZSTD, NULL, 2000, 2);
}

TEST(random_byte_flips_are_refused_sealed)
{
    static const uint8_t key[32] = "flip-test-key-0123456789abcdefg";
    struct cairn_sealer *s = cairn_sealer_aes_gcm_new(key);
    flips(CAIRN_SNAPSHOT_GZIP, s, 1000, 3);
    cairn_sealer_free(s);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
