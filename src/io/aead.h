/* The one AES-256-GCM core of libcairn (OpenSSL EVP): under the chunked stream stages of
 * aead.c and under the archive's aes-gcm sealer (src/archive/sealer.c). Internal. */
#ifndef CAIRN_IO_AEAD_H
#define CAIRN_IO_AEAD_H

#include <stddef.h>
#include <stdint.h>

#define AEAD_GCM_KEY   32
#define AEAD_GCM_NONCE 12
#define AEAD_GCM_TAG   16

struct aead_gcm;

/* A cipher context keyed once (the key schedule is not redone per message); aborts only when
 * OpenSSL cannot allocate. Not for use by two threads at once. */
struct aead_gcm *aead_gcm_new(const uint8_t key[AEAD_GCM_KEY]);
void aead_gcm_free(struct aead_gcm *g);

/* One message: aad is authenticated, len bytes of in are encrypted (enc) or decrypted into out
 * (which may be in). Encrypting writes tag; decrypting checks it. CAIRN_OK, CAIRN_E_SEAL when
 * the tag does not match (wrong key, changed data), CAIRN_E_INVALID for a message over 1 GiB,
 * CAIRN_E_INTERNAL when OpenSSL fails. No message is set: callers say what was sealed. */
int aead_gcm_run(struct aead_gcm *g, int enc, const uint8_t nonce[AEAD_GCM_NONCE], const void *aad,
                 size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
                 uint8_t tag[AEAD_GCM_TAG]);

/* The chunked stream, version 2 (docs/FORMAT.md "Encrypted objects"): a per-stream key from
 * HKDF of key and a random salt, ad (the caller's) bound into every chunk, chunk bytes of
 * plaintext per chunk (0: 64 KiB). An authentication failure or a missing header is bad_code
 * (0: CAIRN_E_SEAL) with label (the object's name; required) in the message. */
struct aead_stream_opts {
    const void *ad;
    size_t ad_len;
    size_t chunk;
    int bad_code;
    const char *label;
};
struct cairn_writer;
struct cairn_reader;
struct cairn_writer *aead_stream_writer_new(struct cairn_writer *next, const uint8_t key[32],
                                            const struct aead_stream_opts *o);
struct cairn_reader *aead_stream_reader_new(struct cairn_reader *src, const uint8_t key[32],
                                            const struct aead_stream_opts *o);

#endif
