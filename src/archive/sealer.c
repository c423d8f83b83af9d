/* Sealers for the SHA256SUMS.sealed member: the vtable plus HMAC-SHA256 and AES-256-GCM
 * built-ins, on the library's one HMAC helper (cairn_hmac_sha256, common/digest.c) and one
 * AES-GCM core (io/aead.h). Vault seals with its seal keys; ours take a 32-byte key file.
 *
 *   hmac:    "CRNHMAC1" || HMAC-SHA256(key, "CRNHMAC1" || sums) || sums
 *   aes-gcm: "CRNGCM01" || nonce(12, random) || AES-256-GCM(key, nonce, aad="CRNGCM01", sums)
 *            || tag(16)
 */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "cairn/snapshot.h"
#include "common/util.h"
#include "io/aead.h"

#define MAGIC_LEN 8
static const char hmac_magic[MAGIC_LEN] = "CRNHMAC1";
static const char gcm_magic[MAGIC_LEN] = "CRNGCM01";
#define GCM_NONCE AEAD_GCM_NONCE
#define GCM_TAG   AEAD_GCM_TAG

struct key_sealer {
    struct cairn_sealer base;
    uint8_t key[CAIRN_SEALER_KEY_LEN];
};

static void key_sealer_free(struct cairn_sealer *s)
{
    struct key_sealer *k = (struct key_sealer *)s;
    OPENSSL_cleanse(k->key, sizeof(k->key));
    free(k);
}

static struct cairn_sealer *key_sealer_new(const struct cairn_sealer_ops *ops, const uint8_t *key)
{
    struct key_sealer *k = xcalloc(1, sizeof(*k));
    k->base.ops = ops;
    memcpy(k->key, key, CAIRN_SEALER_KEY_LEN);
    return &k->base;
}

/* ---- HMAC-SHA256 ---- */

static int hmac_seal(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                     size_t *out_len, struct cairn_err *err)
{
    (void)err;
    uint8_t *o = xmalloc(MAGIC_LEN + 32 + len);
    memcpy(o, hmac_magic, MAGIC_LEN);
    /* The magic is covered too, so the construction cannot be confused with another. */
    cairn_hmac_sha256(((struct key_sealer *)s)->key, hmac_magic, MAGIC_LEN, in, len, o + MAGIC_LEN);
    if (len > 0)
        memcpy(o + MAGIC_LEN + 32, in, len);
    *out = o;
    *out_len = MAGIC_LEN + 32 + len;
    return CAIRN_OK;
}

static int hmac_open(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                     size_t *out_len, struct cairn_err *err)
{
    if (len < MAGIC_LEN + 32 || memcmp(in, hmac_magic, MAGIC_LEN) != 0)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             len == 0 ? "no sealed hashes (SHA256SUMS.sealed missing or empty)"
                                      : "sealed hashes are not an hmac-sha256 seal");
    size_t n = len - MAGIC_LEN - 32;
    if (!cairn_hmac_sha256_check(((struct key_sealer *)s)->key, hmac_magic, MAGIC_LEN,
                                 in + MAGIC_LEN + 32, n, in + MAGIC_LEN))
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "hmac-sha256 check failed: wrong key or tampered hashes");
    *out = xmalloc(n + 1);
    memcpy(*out, in + MAGIC_LEN + 32, n);
    *out_len = n;
    return CAIRN_OK;
}

static const struct cairn_sealer_ops hmac_ops = {"hmac-sha256", hmac_seal, hmac_open,
                                                 key_sealer_free};

struct cairn_sealer *cairn_sealer_hmac_new(const uint8_t key[CAIRN_SEALER_KEY_LEN])
{
    return key_sealer_new(&hmac_ops, key);
}

/* ---- AES-256-GCM ---- */

/* One message through the AES-GCM core, the magic as additional data. */
static int gcm_run(const struct key_sealer *k, int enc, const uint8_t nonce[GCM_NONCE],
                   const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[GCM_TAG])
{
    struct aead_gcm *g = aead_gcm_new(k->key);
    int rc = aead_gcm_run(g, enc, nonce, gcm_magic, MAGIC_LEN, in, out, len, tag);
    aead_gcm_free(g);
    return rc == CAIRN_OK ? 0 : -1;
}

static int gcm_seal(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                    size_t *out_len, struct cairn_err *err)
{
    if (len > (size_t)1 << 30)
        return cairn_err_set(err, CAIRN_E_INVALID, "aes-gcm seal: input too large");
    uint8_t *o = xmalloc(MAGIC_LEN + GCM_NONCE + len + GCM_TAG);
    memcpy(o, gcm_magic, MAGIC_LEN);
    if (RAND_bytes(o + MAGIC_LEN, GCM_NONCE) != 1 ||
        gcm_run((struct key_sealer *)s, 1, o + MAGIC_LEN, in, len, o + MAGIC_LEN + GCM_NONCE,
                o + MAGIC_LEN + GCM_NONCE + len) != 0) {
        free(o);
        return cairn_err_set(err, CAIRN_E_INTERNAL, "aes-gcm seal failed (OpenSSL)");
    }
    *out = o;
    *out_len = MAGIC_LEN + GCM_NONCE + len + GCM_TAG;
    return CAIRN_OK;
}

static int gcm_open(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                    size_t *out_len, struct cairn_err *err)
{
    if (len < MAGIC_LEN + GCM_NONCE + GCM_TAG || memcmp(in, gcm_magic, MAGIC_LEN) != 0)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             len == 0 ? "no sealed hashes (SHA256SUMS.sealed missing or empty)"
                                      : "sealed hashes are not an aes-256-gcm seal");
    size_t n = len - MAGIC_LEN - GCM_NONCE - GCM_TAG;
    if (n > (size_t)1 << 30)
        return cairn_err_set(err, CAIRN_E_SEAL, "sealed hashes too large");
    uint8_t tag[GCM_TAG];
    memcpy(tag, in + len - GCM_TAG, GCM_TAG);
    uint8_t *o = xmalloc(n + 1);
    if (gcm_run((struct key_sealer *)s, 0, in + MAGIC_LEN, in + MAGIC_LEN + GCM_NONCE, n, o, tag) !=
        0) {
        free(o);
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "aes-256-gcm authentication failed: wrong key or tampered hashes");
    }
    *out = o;
    *out_len = n;
    return CAIRN_OK;
}

static const struct cairn_sealer_ops gcm_ops = {"aes-256-gcm", gcm_seal, gcm_open, key_sealer_free};

struct cairn_sealer *cairn_sealer_aes_gcm_new(const uint8_t key[CAIRN_SEALER_KEY_LEN])
{
    return key_sealer_new(&gcm_ops, key);
}

int cairn_sealer_from_keyfile(const char *kind, const char *key_path, struct cairn_sealer **out,
                              struct cairn_err *err)
{
    *out = NULL;
    int hmac = strcmp(kind, "hmac") == 0 || strcmp(kind, "hmac-sha256") == 0;
    int gcm = strcmp(kind, "aes-gcm") == 0 || strcmp(kind, "aes-256-gcm") == 0;
    if (!hmac && !gcm)
        return cairn_err_set(err, CAIRN_E_INVALID, "unknown sealer '%s' (use hmac or aes-gcm)",
                             kind);
    uint8_t key[CAIRN_SEALER_KEY_LEN];
    int rc = cairn_key_load(key_path, key, err);
    if (rc != CAIRN_OK)
        return rc;
    *out = hmac ? cairn_sealer_hmac_new(key) : cairn_sealer_aes_gcm_new(key);
    OPENSSL_cleanse(key, sizeof(key));
    return CAIRN_OK;
}

int cairn_sealer_seal(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                      size_t *out_len, struct cairn_err *err)
{
    return s->ops->seal(s, in, len, out, out_len, err);
}

int cairn_sealer_open(struct cairn_sealer *s, const uint8_t *in, size_t len, uint8_t **out,
                      size_t *out_len, struct cairn_err *err)
{
    return s->ops->open(s, in, len, out, out_len, err);
}

void cairn_sealer_free(struct cairn_sealer *s)
{
    if (s != NULL && s->ops->free != NULL)
        s->ops->free(s);
}
