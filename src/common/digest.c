/* SHA-256 through OpenSSL EVP (dispatches to SHA-NI / AVX2 / ARMv8 code), hex and base64. */
#include "cairn/digest.h"
#include "cairn/err.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static EVP_MD *g_sha256;
static EVP_MAC *g_hmac;
static pthread_once_t g_fetch_once = PTHREAD_ONCE_INIT;

/* Fetch the implementations once: EVP_sha256() and a fetch per HMAC would re-resolve the
 * provider on every use. */
static void crypto_fetch(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (g_sha256 == NULL || g_hmac == NULL)
        abort();
}

void cairn_sha256_init(struct cairn_sha256 *h)
{
    pthread_once(&g_fetch_once, crypto_fetch);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, g_sha256, NULL) != 1)
        abort();
    h->ctx = ctx;
    h->mac = NULL;
}

void cairn_sha256_init_keyed(struct cairn_sha256 *h, const uint8_t key[32])
{
    pthread_once(&g_fetch_once, crypto_fetch);
    EVP_MAC_CTX *mac = EVP_MAC_CTX_new(g_hmac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (mac == NULL || EVP_MAC_init(mac, key, 32, params) != 1)
        abort();
    h->ctx = NULL;
    h->mac = mac;
}

void cairn_sha256_update(struct cairn_sha256 *h, const void *data, size_t len)
{
    if (len > 0 && h->mac != NULL && EVP_MAC_update(h->mac, data, len) != 1)
        abort();
    if (len > 0 && h->mac == NULL && EVP_DigestUpdate(h->ctx, data, len) != 1)
        abort();
}

void cairn_sha256_peek(const struct cairn_sha256 *h, uint8_t out[32])
{
    if (h->mac != NULL) {
        size_t n = 0;
        EVP_MAC_CTX *c = EVP_MAC_CTX_dup(h->mac);
        if (c == NULL || EVP_MAC_final(c, out, &n, 32) != 1)
            abort();
        EVP_MAC_CTX_free(c);
        return;
    }
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    if (copy == NULL || EVP_MD_CTX_copy_ex(copy, h->ctx) != 1 ||
        EVP_DigestFinal_ex(copy, out, NULL) != 1)
        abort();
    EVP_MD_CTX_free(copy);
}

void cairn_sha256_final(struct cairn_sha256 *h, uint8_t out[32])
{
    size_t n = 0;
    if (h->mac != NULL ? EVP_MAC_final(h->mac, out, &n, 32) != 1
                       : EVP_DigestFinal_ex(h->ctx, out, NULL) != 1)
        abort();
    cairn_sha256_free(h);
}

void cairn_sha256_free(struct cairn_sha256 *h)
{
    EVP_MD_CTX_free(h->ctx);
    EVP_MAC_CTX_free(h->mac);
    h->ctx = NULL;
    h->mac = NULL;
}

void cairn_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                       const void *info, size_t info_len, uint8_t out[32])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end()};
    if (ctx == NULL || EVP_KDF_derive(ctx, out, 32, p) != 1)
        abort(); /* only allocation failure gets here */
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
}

void cairn_sha256_oneshot(const void *data, size_t len, uint8_t out[32])
{
    struct cairn_sha256 h;
    cairn_sha256_init(&h);
    cairn_sha256_update(&h, data, len);
    cairn_sha256_final(&h, out);
}

void cairn_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cairn_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (in_len % 2 != 0 || in_len / 2 > out_cap)
        return -1;
    for (size_t i = 0; i < in_len / 2; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    if (out_len != NULL)
        *out_len = in_len / 2;
    return 0;
}

size_t cairn_base64_encode(const uint8_t *in, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

int cairn_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                        size_t *out_len)
{
    if (in_len % 4 != 0)
        return -1;
    size_t raw = in_len / 4 * 3;
    if (raw > out_cap + 2)
        return -1;
    unsigned char *tmp = malloc(raw + 1);
    if (tmp == NULL)
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)in_len);
    if (n < 0) {
        free(tmp);
        return -1;
    }
    /* EVP_DecodeBlock keeps the padding bytes as zeros; strip them. */
    size_t pad = 0;
    if (in_len >= 1 && in[in_len - 1] == '=')
        pad++;
    if (in_len >= 2 && in[in_len - 2] == '=')
        pad++;
    size_t len = (size_t)n - pad;
    if (len > out_cap) {
        free(tmp);
        return -1;
    }
    memcpy(out, tmp, len);
    free(tmp);
    if (out_len != NULL)
        *out_len = len;
    return 0;
}

/* The HMAC helper of the library: the archive's hmac sealer and the storage MANIFEST seal
 * both compute and check their tags here. */
void cairn_hmac_sha256(const uint8_t key[32], const void *prefix, size_t prefix_len,
                       const void *data, size_t len, uint8_t out[32])
{
    pthread_once(&g_fetch_once, crypto_fetch);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(g_hmac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    if (ctx == NULL || EVP_MAC_init(ctx, key, 32, params) != 1 ||
        (prefix_len > 0 && EVP_MAC_update(ctx, prefix, prefix_len) != 1) ||
        (len > 0 && EVP_MAC_update(ctx, data, len) != 1) || EVP_MAC_final(ctx, out, &outl, 32) != 1)
        abort(); /* only allocation failure gets here */
    EVP_MAC_CTX_free(ctx);
}

int cairn_hmac_sha256_check(const uint8_t key[32], const void *prefix, size_t prefix_len,
                            const void *data, size_t len, const uint8_t tag[32])
{
    uint8_t want[32];
    cairn_hmac_sha256(key, prefix, prefix_len, data, len, want);
    int ok = CRYPTO_memcmp(want, tag, 32) == 0; /* constant time: no tag guessing byte by byte */
    OPENSSL_cleanse(want, sizeof(want));
    return ok;
}

#define KEY_FILE_MAX 256

int cairn_key_load(const char *path, uint8_t key[32], struct cairn_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_secret_file(path, "key file", KEY_FILE_MAX, &data, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    size_t n = len;
    while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
        n--;
    size_t got = 0;
    if (len == 32) {
        memcpy(key, data, 32);
    } else if (n == 64 && cairn_hex_decode((const char *)data, 64, key, 32, &got) == 0) {
        /* hex form */
    } else {
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "key file '%s' must hold 32 raw bytes or 64 hex digits (has %zu bytes)",
                           path, len);
    }
    OPENSSL_cleanse(data, len);
    free(data);
    return rc;
}
