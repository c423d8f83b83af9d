/* cairn: SHA-256 (OpenSSL EVP, so SHA-NI/ARMv8 code paths) and text encodings. */
#ifndef CAIRN_DIGEST_H
#define CAIRN_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAIRN_SHA256_LEN     32
#define CAIRN_SHA256_HEX_LEN 64

struct cairn_sha256 {
    void *ctx; /* EVP_MD_CTX; NULL when keyed */
    void *mac; /* EVP_MAC_CTX when keyed (HMAC-SHA-256), else NULL */
};

/* Aborts on allocation failure; never fails otherwise. */
CAIRN_API void cairn_sha256_init(struct cairn_sha256 *h);
/* The same interface computing HMAC-SHA-256 under a 32-byte key instead (the keyed content
 * hashes of encrypted repositories). */
CAIRN_API void cairn_sha256_init_keyed(struct cairn_sha256 *h, const uint8_t key[32]);
CAIRN_API void cairn_sha256_update(struct cairn_sha256 *h, const void *data, size_t len);
/* Writes the digest of everything so far without disturbing the running state. */
CAIRN_API void cairn_sha256_peek(const struct cairn_sha256 *h, uint8_t out[32]);
CAIRN_API void cairn_sha256_final(struct cairn_sha256 *h, uint8_t out[32]);
CAIRN_API void cairn_sha256_free(struct cairn_sha256 *h);
CAIRN_API void cairn_sha256_oneshot(const void *data, size_t len, uint8_t out[32]);

/* Lower-case hex; out needs 2*len+1 bytes. */
CAIRN_API void cairn_hex_encode(const uint8_t *in, size_t len, char *out);
/* Accepts either case; returns 0 on success, -1 on odd length, bad digit or overflow. */
CAIRN_API int cairn_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                               size_t *out_len);
/* Standard padded base64; out needs 4*((len+2)/3)+1 bytes. Returns the length written. */
CAIRN_API size_t cairn_base64_encode(const uint8_t *in, size_t len, char *out);
/* Strict padded base64; returns 0 or -1. */
CAIRN_API int cairn_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                                  size_t *out_len);

/* HMAC-SHA256 with a 32-byte key over prefix || data (either may be empty). */
CAIRN_API void cairn_hmac_sha256(const uint8_t key[32], const void *prefix, size_t prefix_len,
                                 const void *data, size_t len, uint8_t out[32]);
/* 1 when tag is that HMAC of prefix || data, compared in constant time; else 0. */
CAIRN_API int cairn_hmac_sha256_check(const uint8_t key[32], const void *prefix, size_t prefix_len,
                                      const void *data, size_t len, const uint8_t tag[32]);

/* HKDF-SHA-256 (RFC 5869), 32 bytes out; salt may be empty. Aborts only when OpenSSL cannot
 * allocate. */
CAIRN_API void cairn_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt,
                                 size_t salt_len, const void *info, size_t info_len,
                                 uint8_t out[32]);

/* Load a 32-byte key from a file holding 32 raw bytes or 64 hex digits (trailing newline
 * allowed). Refuses anything but a regular file (a FIFO, directory or device) with
 * CAIRN_E_INVALID without blocking, and group/world-readable files with CAIRN_E_PERM. */
struct cairn_err;
CAIRN_API int cairn_key_load(const char *path, uint8_t key[32], struct cairn_err *err);

#ifdef __cplusplus
}
#endif

#endif
