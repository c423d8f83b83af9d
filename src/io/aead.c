/* The AES-256-GCM core (aead.h) and the chunked stream stages built on it (see
 * include/cairn/io.h for the format). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "common/util.h"
#include "io/aead.h"

#define AEAD_MAGIC "CRNAEAD1"
#define AEAD_HDR   16
#define AEAD_CHUNK (64u * 1024u)
#define AEAD_TAG   AEAD_GCM_TAG
#define AEAD_LAST  0x80000000u

/* ---- the core ---- */

struct aead_gcm {
    EVP_CIPHER_CTX *ctx;
};

struct aead_gcm *aead_gcm_new(const uint8_t key[AEAD_GCM_KEY])
{
    struct aead_gcm *g = xcalloc(1, sizeof(*g));
    g->ctx = EVP_CIPHER_CTX_new();
    /* The cipher's default IV length is the 12 bytes both formats use. */
    if (g->ctx == NULL || EVP_CipherInit_ex(g->ctx, EVP_aes_256_gcm(), NULL, key, NULL, 1) != 1)
        abort();
    return g;
}

void aead_gcm_free(struct aead_gcm *g)
{
    if (g == NULL)
        return;
    EVP_CIPHER_CTX_free(g->ctx); /* cleanses the key schedule */
    free(g);
}

int aead_gcm_run(struct aead_gcm *g, int enc, const uint8_t nonce[AEAD_GCM_NONCE], const void *aad,
                 size_t aad_len, const uint8_t *in, uint8_t *out, size_t len,
                 uint8_t tag[AEAD_GCM_TAG])
{
    EVP_CIPHER_CTX *c = g->ctx;
    int n;
    if (len > (size_t)1 << 30 || aad_len > (size_t)1 << 30)
        return CAIRN_E_INVALID; /* EVP counts in int */
    /* A new nonce starts a new message under the same key. */
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, enc) != 1 ||
        (aad_len > 0 && EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) != 1) ||
        (len > 0 && EVP_CipherUpdate(c, out, &n, in, (int)len) != 1))
        return CAIRN_E_INTERNAL;
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, AEAD_GCM_TAG, tag) != 1)
        return CAIRN_E_INTERNAL;
    if (EVP_CipherFinal_ex(c, out + len, &n) != 1) /* GCM writes nothing here */
        return enc ? CAIRN_E_INTERNAL : CAIRN_E_SEAL;
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, AEAD_GCM_TAG, tag) != 1)
        return CAIRN_E_INTERNAL;
    return CAIRN_OK;
}

/* ---- the chunked stream (the STREAM construction) ---- */

struct aead_state {
    struct aead_gcm *gcm;
    uint8_t hdr[AEAD_HDR];
    uint32_t counter;
};

static void aead_nonce(const struct aead_state *a, int last, uint8_t nonce[12])
{
    uint32_t c = a->counter | (last ? AEAD_LAST : 0);
    memcpy(nonce, a->hdr + 8, 8);
    nonce[8] = (uint8_t)(c >> 24);
    nonce[9] = (uint8_t)(c >> 16);
    nonce[10] = (uint8_t)(c >> 8);
    nonce[11] = (uint8_t)c;
}

static int aead_chunk_limit(struct aead_state *a, struct cairn_err *err)
{
    if (a->counter >= AEAD_LAST - 1)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "aead: stream too long");
    return CAIRN_OK;
}

/* Encrypt or decrypt one chunk in place; tag is written (enc) or checked (dec). */
static int aead_chunk(struct aead_state *a, int enc, int last, uint8_t *data, size_t len,
                      uint8_t tag[AEAD_TAG], struct cairn_err *err)
{
    uint8_t nonce[AEAD_GCM_NONCE];
    aead_nonce(a, last, nonce);
    /* The header is the additional data of every chunk: chunks cannot move between streams. */
    int rc = aead_gcm_run(a->gcm, enc, nonce, a->hdr, AEAD_HDR, data, data, len, tag);
    if (rc == CAIRN_E_SEAL)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "aead: authentication failed for chunk %u (wrong key, or the data "
                             "was changed, truncated or reordered)",
                             a->counter);
    if (rc != CAIRN_OK)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "aead: cipher failure");
    a->counter++;
    return CAIRN_OK;
}

static void aead_state_init(struct aead_state *a, const uint8_t key[CAIRN_AEAD_KEY_LEN])
{
    a->gcm = aead_gcm_new(key);
}

static void aead_state_free(struct aead_state *a)
{
    aead_gcm_free(a->gcm);
}

struct aead_writer {
    struct cairn_writer base;
    struct aead_state st;
    int hdr_written;
    size_t len;
    uint8_t buf[AEAD_CHUNK + AEAD_TAG];
};

static int aead_emit(struct aead_writer *w, int last, struct cairn_err *err)
{
    int rc;
    if (!w->hdr_written) {
        if ((rc = cairn_writer_write(w->base.next, w->st.hdr, AEAD_HDR, err)) != CAIRN_OK)
            return rc;
        w->hdr_written = 1;
    }
    if ((rc = aead_chunk_limit(&w->st, err)) != CAIRN_OK ||
        (rc = aead_chunk(&w->st, 1, last, w->buf, w->len, w->buf + w->len, err)) != CAIRN_OK)
        return rc;
    rc = cairn_writer_write(w->base.next, w->buf, w->len + AEAD_TAG, err);
    w->len = 0;
    return rc;
}

static int aead_write(struct cairn_writer *base, const void *buf, size_t len, struct cairn_err *err)
{
    struct aead_writer *w = (struct aead_writer *)base;
    const uint8_t *p = buf;
    while (len > 0) {
        /* A full chunk is only emitted once more data follows: the last one carries a flag. */
        if (w->len == AEAD_CHUNK) {
            int rc = aead_emit(w, 0, err);
            if (rc != CAIRN_OK)
                return rc;
        }
        size_t n = AEAD_CHUNK - w->len < len ? AEAD_CHUNK - w->len : len;
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        p += n;
        len -= n;
    }
    return CAIRN_OK;
}

static int aead_finish(struct cairn_writer *base, struct cairn_err *err)
{
    return aead_emit((struct aead_writer *)base, 1, err);
}

static void aead_writer_free(struct cairn_writer *base)
{
    struct aead_writer *w = (struct aead_writer *)base;
    aead_state_free(&w->st);
    OPENSSL_cleanse(w->buf, sizeof(w->buf));
    free(w);
}

static const struct cairn_writer_ops aead_writer_ops = {"aes-gcm", aead_write, aead_finish,
                                                        aead_writer_free};

struct cairn_writer *cairn_aead_writer_new(struct cairn_writer *next,
                                           const uint8_t key[CAIRN_AEAD_KEY_LEN])
{
    struct aead_writer *w = xcalloc(1, sizeof(*w));
    cairn_writer_init(&w->base, &aead_writer_ops, next);
    aead_state_init(&w->st, key);
    memcpy(w->st.hdr, AEAD_MAGIC, 8);
    if (RAND_bytes(w->st.hdr + 8, 8) != 1)
        abort();
    return &w->base;
}

struct aead_reader {
    struct cairn_reader base;
    struct aead_state st;
    int started, done;
    size_t have;    /* bytes in buf */
    size_t out_off; /* plaintext bytes of the current chunk already returned */
    size_t out_len; /* plaintext bytes of the current chunk */
    uint8_t buf[AEAD_CHUNK + AEAD_TAG + 1]; /* one byte of look-ahead finds the last chunk */
};

static int aead_fill(struct aead_reader *r, size_t want, struct cairn_err *err)
{
    while (r->have < want) {
        size_t got;
        int rc = cairn_reader_read(r->base.next, r->buf + r->have, want - r->have, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            break;
        r->have += got;
    }
    return CAIRN_OK;
}

static int aead_read(struct cairn_reader *base, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct aead_reader *r = (struct aead_reader *)base;
    int rc;
    if (!r->started) {
        if ((rc = aead_fill(r, AEAD_HDR, err)) != CAIRN_OK)
            return rc;
        if (r->have < AEAD_HDR || memcmp(r->buf, AEAD_MAGIC, 8) != 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "aead: not an encrypted cairn stream");
        memcpy(r->st.hdr, r->buf, AEAD_HDR);
        r->have = 0;
        r->started = 1;
    }
    if (r->out_off == r->out_len) {
        if (r->done) {
            *got = 0;
            return CAIRN_OK;
        }
        /* keep the look-ahead byte of the previous round at the front */
        if ((rc = aead_fill(r, sizeof(r->buf), err)) != CAIRN_OK)
            return rc;
        int last = r->have < sizeof(r->buf);
        size_t clen = last ? r->have : AEAD_CHUNK + AEAD_TAG;
        if (clen < AEAD_TAG)
            return cairn_err_set(err, CAIRN_E_SEAL, "aead: stream truncated");
        size_t plen = clen - AEAD_TAG;
        if ((rc = aead_chunk_limit(&r->st, err)) != CAIRN_OK ||
            (rc = aead_chunk(&r->st, 0, last, r->buf, plen, r->buf + plen, err)) != CAIRN_OK)
            return rc;
        r->out_len = plen;
        r->out_off = 0;
        r->done = last;
        /* a non-last chunk leaves its look-ahead byte in the buffer's final slot */
        r->have -= clen;
        if (plen == 0) {
            *got = 0;
            return CAIRN_OK;
        }
    }
    size_t n = r->out_len - r->out_off < cap ? r->out_len - r->out_off : cap;
    memcpy(buf, r->buf + r->out_off, n);
    r->out_off += n;
    if (r->out_off == r->out_len && !r->done) {
        r->buf[0] = r->buf[sizeof(r->buf) - 1];
        r->have = 1;
    }
    *got = n;
    return CAIRN_OK;
}

static void aead_reader_free(struct cairn_reader *base)
{
    struct aead_reader *r = (struct aead_reader *)base;
    aead_state_free(&r->st);
    OPENSSL_cleanse(r->buf, sizeof(r->buf));
    free(r);
}

static const struct cairn_reader_ops aead_reader_ops = {"aes-gcm", aead_read, aead_reader_free};

struct cairn_reader *cairn_aead_reader_new(struct cairn_reader *src,
                                           const uint8_t key[CAIRN_AEAD_KEY_LEN])
{
    struct aead_reader *r = xcalloc(1, sizeof(*r));
    cairn_reader_init(&r->base, &aead_reader_ops, src);
    aead_state_init(&r->st, key);
    return &r->base;
}
