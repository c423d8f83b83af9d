/* The AES-256-GCM core (io/aead.h) and the on-disk formats built on it, pinned independently of
 * the code under test: a stream and seals written before the core was shared must still open
 * (fixed vectors), and what is written now must decode with plain OpenSSL calls following
 * include/cairn/io.h and docs/FORMAT.md. The HMAC helper's check against its own tags. */
#include <openssl/evp.h>
#include <stdlib.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "cairn/snapshot.h"
#include "common/util.h"
#include "io/aead.h"
#include "test.h"

static const uint8_t key1[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* Written by the stages and sealers as they were before the shared core (key1). */
static const char old_stream_hex[] =
    "43524e414541443166e2c012b08ee5edaf3a931cfaf7dfccd6e4b493235c68d9f3d10a1f19fee73da5f6888aa"
    "a2f7bfdf2f05847fde864e888e46124289bd6b48267806c8224be85";
static const char old_stream_plain[] = "cairn aead fixture: one chunk, the last\n";
static const char old_gcm_seal_hex[] =
    "43524e47434d3031c8d43d66feb7b1b3af832dc1fc211f8a6c463bbec8e90963b903c562a04d53777483dbcf7"
    "e0837a2130fcafaeff685e66f73bf10f71e5b5d4a9bdaaf";
static const char old_hmac_seal_hex[] =
    "43524e484d41433149ca73170a6af4ffa577579c71a49ddd06647c2f99561b302532d2a793cf088a3031323320"
    "206d6574612e6a736f6e0a34353637202073746174652e62696e0a";
static const char sums[] = "0123  meta.json\n4567  state.bin\n";

static uint8_t *unhex(const char *h, size_t *n)
{
    uint8_t *b = xmalloc(strlen(h) / 2 + 1);
    CHECK(cairn_hex_decode(h, strlen(h), b, strlen(h) / 2, n) == 0);
    return b;
}

/* Plain EVP AES-256-GCM decryption: 0 when the tag checks. */
static int evp_open(const uint8_t nonce[12], const void *aad, size_t aad_len, const uint8_t *in,
                    size_t len, const uint8_t tag[16], uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n, ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key1, nonce) == 1 &&
                EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) == 1 &&
                (len == 0 || EVP_DecryptUpdate(c, out, &n, in, (int)len) == 1) &&
                EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) == 1 &&
                EVP_DecryptFinal_ex(c, out + len, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

TEST(stream_written_before_the_shared_core_opens)
{
    size_t n, got;
    uint8_t *c = unhex(old_stream_hex, &n);
    struct cairn_err err;
    struct cairn_reader *r = cairn_aead_reader_new(cairn_mem_reader_new(c, n), key1);
    char out[128] = {0};
    size_t want = strlen(old_stream_plain);
    CHECK_OK(cairn_reader_read_full(r, out, want, "fixture", &err), &err);
    CHECK_EQ_STR(out, old_stream_plain);
    CHECK_OK(cairn_reader_read(r, out, sizeof(out), &got, &err), &err);
    CHECK_EQ_INT(got, 0);
    cairn_reader_free(r);
    free(c);
}

TEST(stream_chunks_decode_with_plain_openssl)
{
    /* 2.5 chunks: nonce = header[8..16) || be32(counter | 0x80000000 on the last), the
     * 16-byte header as additional data, each chunk ciphertext || tag */
    size_t len = 65536 * 2 + 30000;
    uint8_t *data = xmalloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *w = cairn_aead_writer_new(mem, key1);
    CHECK_OK(cairn_writer_write(w, data, len, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    size_t clen;
    const uint8_t *c = cairn_mem_writer_data(mem, &clen);
    CHECK_EQ_INT(clen, 16 + len + 3 * 16);
    CHECK(memcmp(c, "CRNAEAD1", 8) == 0);
    uint8_t *plain = xmalloc(65536);
    size_t off = 16, at = 0;
    for (uint32_t k = 0; k < 3; k++) {
        size_t n = k < 2 ? 65536 : 30000;
        uint32_t ctr = k | (k == 2 ? 0x80000000u : 0);
        uint8_t nonce[12];
        memcpy(nonce, c + 8, 8);
        nonce[8] = (uint8_t)(ctr >> 24), nonce[9] = (uint8_t)(ctr >> 16);
        nonce[10] = (uint8_t)(ctr >> 8), nonce[11] = (uint8_t)ctr;
        CHECK(evp_open(nonce, c, 16, c + off, n, c + off + n, plain) == 0);
        CHECK(memcmp(plain, data + at, n) == 0);
        off += n + 16;
        at += n;
    }
    cairn_writer_free(w);
    free(plain);
    free(data);
}

TEST(seals_written_before_the_shared_core_open)
{
    size_t n, ol;
    uint8_t *o;
    struct cairn_err err;
    uint8_t *g = unhex(old_gcm_seal_hex, &n);
    struct cairn_sealer *s = cairn_sealer_aes_gcm_new(key1);
    CHECK_OK(cairn_sealer_open(s, g, n, &o, &ol, &err), &err);
    CHECK(ol == strlen(sums) && memcmp(o, sums, ol) == 0);
    free(o);
    cairn_sealer_free(s);
    free(g);

    /* the hmac seal has no nonce: the same bytes again */
    uint8_t *h = unhex(old_hmac_seal_hex, &n);
    s = cairn_sealer_hmac_new(key1);
    CHECK_OK(cairn_sealer_seal(s, (const uint8_t *)sums, strlen(sums), &o, &ol, &err), &err);
    CHECK(ol == n && memcmp(o, h, n) == 0);
    free(o);
    CHECK_OK(cairn_sealer_open(s, h, n, &o, &ol, &err), &err);
    CHECK(ol == strlen(sums) && memcmp(o, sums, ol) == 0);
    free(o);
    cairn_sealer_free(s);
    free(h);
}

TEST(gcm_seal_decodes_with_plain_openssl)
{
    /* "CRNGCM01" || nonce(12) || ciphertext || tag(16), the magic as additional data */
    struct cairn_err err;
    struct cairn_sealer *s = cairn_sealer_aes_gcm_new(key1);
    uint8_t *o;
    size_t ol, n = strlen(sums);
    CHECK_OK(cairn_sealer_seal(s, (const uint8_t *)sums, n, &o, &ol, &err), &err);
    CHECK_EQ_INT(ol, 8 + 12 + n + 16);
    uint8_t plain[64];
    CHECK(evp_open(o + 8, "CRNGCM01", 8, o + 20, n, o + 20 + n, plain) == 0);
    CHECK(memcmp(plain, sums, n) == 0);
    free(o);
    cairn_sealer_free(s);
}

TEST(gcm_core_messages_under_one_key)
{
    /* one context, several messages with their own nonces, in place, and a wrong tag */
    struct aead_gcm *g = aead_gcm_new(key1);
    uint8_t nonce[12] = {9}, tag[16], buf[100], plain[100];
    for (int m = 0; m < 3; m++) {
        nonce[11] = (uint8_t)m;
        for (int i = 0; i < 100; i++)
            buf[i] = (uint8_t)(i + m);
        memcpy(plain, buf, sizeof(buf));
        CHECK_OK(aead_gcm_run(g, 1, nonce, "ad", 2, buf, buf, sizeof(buf), tag), NULL);
        uint8_t check[100];
        CHECK(evp_open(nonce, "ad", 2, buf, sizeof(buf), tag, check) == 0);
        CHECK(memcmp(check, plain, sizeof(plain)) == 0);
        CHECK_OK(aead_gcm_run(g, 0, nonce, "ad", 2, buf, buf, sizeof(buf), tag), NULL);
        CHECK(memcmp(buf, plain, sizeof(plain)) == 0);
    }
    CHECK_OK(aead_gcm_run(g, 1, nonce, NULL, 0, buf, buf, sizeof(buf), tag), NULL);
    tag[0] ^= 1;
    CHECK_EQ_INT(aead_gcm_run(g, 0, nonce, NULL, 0, buf, buf, sizeof(buf), tag), CAIRN_E_SEAL);
    aead_gcm_free(g);
}

TEST(hmac_check_is_the_tag_it_computes)
{
    uint8_t tag[32];
    cairn_hmac_sha256(key1, "pre", 3, sums, strlen(sums), tag);
    CHECK(cairn_hmac_sha256_check(key1, "pre", 3, sums, strlen(sums), tag) == 1);
    CHECK(cairn_hmac_sha256_check(key1, NULL, 0, sums, strlen(sums), tag) == 0);
    tag[31] ^= 0x80;
    CHECK(cairn_hmac_sha256_check(key1, "pre", 3, sums, strlen(sums), tag) == 0);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
