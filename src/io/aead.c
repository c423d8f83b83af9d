/* The AES-256-GCM core (aead.h) and the chunked stream stages built on it (see
 * include/cairn/io.h for the format). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
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

/* ---- the chunked stream (the STREAM construction) ----
 * Version 1 (cairn_aead_*_new): header "CRNAEAD1" || 8 random bytes (the nonce prefix), the
 * header as every chunk's additional data, the caller's key, 64 KiB chunks.
 * Version 2 (aead_stream_*_new, stored objects of encrypted repositories, docs/FORMAT.md):
 * header "CRNAEAD2" || 16-byte salt || 8-byte nonce prefix; the object key is
 * HKDF-SHA-256(key, salt, "cairn object key v1"), so no two objects share a key and nonce;
 * each chunk's additional data is the header followed by the caller's (repository, backup,
 * file); the chunk size is the caller's. In both, the nonce is prefix || big-endian 32-bit
 * chunk counter whose top bit marks the last chunk. */

#define AEAD2_MAGIC "CRNAEAD2"
#define AEAD2_HDR   32
#define AEAD_HDRMAX 32
#define AEAD2_INFO  "cairn object key v1"

struct aead_state {
    struct aead_gcm *gcm;
    int version;
    uint8_t key[AEAD_GCM_KEY]; /* version 2: the base key, until the header is known */
    uint8_t hdr[AEAD_HDRMAX];
    size_t hdr_len;
    uint8_t *aad; /* hdr || the caller's additional data */
    size_t aad_len, ad_len;
    uint32_t counter;
    size_t chunk;
    int bad_code;
    char *label; /* NULL: version 1's messages */
};

static void aead_nonce(const struct aead_state *a, int last, uint8_t nonce[12])
{
    uint32_t c = a->counter | (last ? AEAD_LAST : 0);
    memcpy(nonce, a->hdr + a->hdr_len - 8, 8);
    nonce[8] = (uint8_t)(c >> 24);
    nonce[9] = (uint8_t)(c >> 16);
    nonce[10] = (uint8_t)(c >> 8);
    nonce[11] = (uint8_t)c;
}

static int aead_chunk_limit(struct aead_state *a, struct cairn_err *err)
{
    if (a->counter >= AEAD_LAST - 1)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "%s: stream too long",
                             a->label ? a->label : "aead");
    return CAIRN_OK;
}

/* The header is known (written or read): key the cipher and build the additional data. */
static void aead_keyed(struct aead_state *a)
{
    memcpy(a->aad, a->hdr, a->hdr_len);
    if (a->version == 2) {
        uint8_t k[AEAD_GCM_KEY];
        cairn_hkdf_sha256(a->key, AEAD_GCM_KEY, a->hdr + 8, 16, AEAD2_INFO, strlen(AEAD2_INFO), k);
        a->gcm = aead_gcm_new(k);
        OPENSSL_cleanse(k, sizeof(k));
    } else {
        a->gcm = aead_gcm_new(a->key);
    }
    OPENSSL_cleanse(a->key, sizeof(a->key));
}

/* Encrypt or decrypt one chunk from in to out (the same buffer, or two that do not overlap);
 * tag is written (enc) or checked (dec). */
static int aead_chunk(struct aead_state *a, int enc, int last, const uint8_t *in, uint8_t *out,
                      size_t len, uint8_t tag[AEAD_TAG], struct cairn_err *err)
{
    uint8_t nonce[AEAD_GCM_NONCE];
    aead_nonce(a, last, nonce);
    /* The header (and the caller's data) is the additional data of every chunk: chunks cannot
     * move between streams. */
    int rc = aead_gcm_run(a->gcm, enc, nonce, a->aad, a->aad_len, in, out, len, tag);
    if (rc == CAIRN_E_SEAL && a->label == NULL)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "aead: authentication failed for chunk %u (wrong key, or the data "
                             "was changed, truncated or reordered)",
                             a->counter);
    if (rc == CAIRN_E_SEAL)
        return cairn_err_set(err, a->bad_code,
                             "%s: authentication failed for chunk %u (the stored object was "
                             "changed, truncated, reordered, replaced or moved)",
                             a->label, a->counter);
    if (rc != CAIRN_OK)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "aead: cipher failure");
    a->counter++;
    return CAIRN_OK;
}

static void aead_state_init(struct aead_state *a, const uint8_t key[CAIRN_AEAD_KEY_LEN],
                            const struct aead_stream_opts *o)
{
    memcpy(a->key, key, AEAD_GCM_KEY);
    a->version = o != NULL ? 2 : 1;
    a->hdr_len = o != NULL ? AEAD2_HDR : AEAD_HDR;
    a->chunk = o != NULL && o->chunk > 0 ? o->chunk : AEAD_CHUNK;
    a->bad_code = o != NULL && o->bad_code != 0 ? o->bad_code : CAIRN_E_SEAL;
    a->label = o != NULL && o->label != NULL ? xstrdup(o->label) : NULL;
    a->ad_len = o != NULL ? o->ad_len : 0;
    a->aad_len = a->hdr_len + a->ad_len;
    a->aad = xmalloc(a->aad_len);
    if (a->ad_len > 0)
        memcpy(a->aad + a->hdr_len, o->ad, a->ad_len);
}

static void aead_state_free(struct aead_state *a)
{
    aead_gcm_free(a->gcm);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    free(a->aad);
    free(a->label);
}

/* Encrypted chunks are written downstream in batches of about AEAD_OUT bytes: one write per
 * 64 KiB chunk doubled the system time of a backup to a file (8,202 writes of 64 KiB instead
 * of 2,052 of 256 KiB for 512 MiB). */
#define AEAD_OUT (256u * 1024u)

struct aead_writer {
    struct cairn_writer base;
    struct aead_state st;
    int hdr_written;
    size_t done; /* encrypted bytes at the start of buf, not yet written */
    size_t len;  /* plaintext bytes of the current chunk, at buf + done */
    size_t cap;  /* a whole number of chunk + tag */
    uint8_t *buf;
};

static int aead_flush(struct aead_writer *w, struct cairn_err *err)
{
    int rc;
    if (!w->hdr_written) {
        if ((rc = cairn_writer_write(w->base.next, w->st.hdr, w->st.hdr_len, err)) != CAIRN_OK)
            return rc;
        w->hdr_written = 1;
    }
    rc = w->done > 0 ? cairn_writer_write(w->base.next, w->buf, w->done, err) : CAIRN_OK;
    w->done = 0;
    return rc;
}

/* Encrypt the current chunk in place (its tag after it); write the batch when it is full or
 * this was the last chunk. */
static int aead_emit(struct aead_writer *w, int last, struct cairn_err *err)
{
    uint8_t *p = w->buf + w->done;
    int rc;
    if ((rc = aead_chunk_limit(&w->st, err)) != CAIRN_OK ||
        (rc = aead_chunk(&w->st, 1, last, p, p, w->len, p + w->len, err)) != CAIRN_OK)
        return rc;
    w->done += w->len + AEAD_TAG;
    w->len = 0;
    if (last || w->done + w->st.chunk + AEAD_TAG > w->cap)
        return aead_flush(w, err);
    return CAIRN_OK;
}

static int aead_write(struct cairn_writer *base, const void *buf, size_t len, struct cairn_err *err)
{
    struct aead_writer *w = (struct aead_writer *)base;
    const uint8_t *p = buf;
    size_t chunk = w->st.chunk;
    while (len > 0) {
        /* A full chunk is only emitted once more data follows: the last one carries a flag. */
        if (w->len == chunk) {
            int rc = aead_emit(w, 0, err);
            if (rc != CAIRN_OK)
                return rc;
        }
        size_t n = chunk - w->len < len ? chunk - w->len : len;
        memcpy(w->buf + w->done + w->len, p, n);
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
    OPENSSL_cleanse(w->buf, w->cap);
    aead_state_free(&w->st);
    free(w->buf);
    free(w);
}

static const struct cairn_writer_ops aead_writer_ops = {"aes-gcm", aead_write, aead_finish,
                                                        aead_writer_free};

static struct cairn_writer *writer_new(struct cairn_writer *next, const uint8_t key[32],
                                       const struct aead_stream_opts *o)
{
    struct aead_writer *w = xcalloc(1, sizeof(*w));
    cairn_writer_init(&w->base, &aead_writer_ops, next);
    aead_state_init(&w->st, key, o);
    size_t cl = w->st.chunk + AEAD_TAG, n = AEAD_OUT / w->st.chunk;
    w->cap = (n > 0 ? n : 1) * cl;
    w->buf = xmalloc(w->cap);
    memcpy(w->st.hdr, o != NULL ? AEAD2_MAGIC : AEAD_MAGIC, 8);
    if (RAND_bytes(w->st.hdr + 8, (int)w->st.hdr_len - 8) != 1)
        abort();
    aead_keyed(&w->st);
    return &w->base;
}

struct cairn_writer *cairn_aead_writer_new(struct cairn_writer *next,
                                           const uint8_t key[CAIRN_AEAD_KEY_LEN])
{
    return writer_new(next, key, NULL);
}

struct cairn_writer *aead_stream_writer_new(struct cairn_writer *next,
                                            const uint8_t key[CAIRN_AEAD_KEY_LEN],
                                            const struct aead_stream_opts *o)
{
    return writer_new(next, key, o);
}

/* The reader takes the stored bytes in batches of whole chunks (about AEAD_OUT bytes, as the
 * writer writes them) and decrypts each chunk straight into the caller's buffer when it fits
 * there, so a 256 KiB read is one read downstream and no copy: reading and copying one 64 KiB
 * chunk at a time made an encrypted restore 1.10x a plain one. A chunk that does not fit is
 * decrypted in place and handed out from there. */
struct aead_reader {
    struct cairn_reader base;
    struct aead_state st;
    int started, done, eof;
    size_t cl;  /* stored bytes of a full chunk: chunk + tag */
    size_t cap; /* whole chunks of about AEAD_OUT, plus one byte of look-ahead that tells a
                 * full chunk from the last one */
    uint8_t *buf;
    size_t off, have; /* stored bytes not yet decrypted: buf[off, have) */
    uint8_t *out;     /* plaintext decrypted in place, not yet returned (out_len bytes) */
    size_t out_len;
};

static int aead_fill(struct aead_reader *r, size_t want, struct cairn_err *err)
{
    while (r->have < want) {
        size_t got;
        int rc = cairn_reader_read(r->base.next, r->buf + r->have, want - r->have, &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0) {
            r->eof = 1;
            break;
        }
        r->have += got;
    }
    return CAIRN_OK;
}

static int aead_start(struct aead_reader *r, struct cairn_err *err)
{
    struct aead_state *a = &r->st;
    int rc = aead_fill(r, a->hdr_len, err);
    if (rc != CAIRN_OK)
        return rc;
    const char *magic = a->version == 2 ? AEAD2_MAGIC : AEAD_MAGIC;
    if (r->have < a->hdr_len || memcmp(r->buf, magic, 8) != 0) {
        if (a->label == NULL)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "aead: not an encrypted cairn stream");
        return cairn_err_set(err, a->bad_code, "%s: not an encrypted cairn object (no %s header)",
                             a->label, AEAD2_MAGIC);
    }
    memcpy(a->hdr, r->buf, a->hdr_len);
    aead_keyed(a);
    r->have = 0;
    r->started = 1;
    return CAIRN_OK;
}

/* The next batch: what is left (less than a chunk and its look-ahead byte) moves to the front. */
static int aead_more(struct aead_reader *r, struct cairn_err *err)
{
    memmove(r->buf, r->buf + r->off, r->have - r->off);
    r->have -= r->off;
    r->off = 0;
    return aead_fill(r, r->cap, err);
}

/* Decrypt the next chunk into dst (room bytes there), or in place when it does not fit. */
static int aead_next_chunk(struct aead_reader *r, uint8_t *dst, size_t room, size_t *put,
                           struct cairn_err *err)
{
    size_t avail = r->have - r->off;
    int last = avail <= r->cl; /* at the end of the stream: more would be a full chunk */
    size_t clen = last ? avail : r->cl;
    *put = 0;
    if (clen < AEAD_TAG)
        return cairn_err_set(err, r->st.label ? r->st.bad_code : CAIRN_E_SEAL,
                             "%s: stream truncated", r->st.label ? r->st.label : "aead");
    size_t plen = clen - AEAD_TAG;
    uint8_t *in = r->buf + r->off, *o = room >= plen ? dst : in;
    int rc = aead_chunk_limit(&r->st, err);
    if (rc == CAIRN_OK)
        rc = aead_chunk(&r->st, 0, last, in, o, plen, in + plen, err);
    if (rc != CAIRN_OK) {
        OPENSSL_cleanse(o, plen); /* never leave unauthenticated plaintext behind */
        return rc;
    }
    r->off += clen;
    r->done = last;
    if (o == dst) {
        *put = plen;
    } else {
        r->out = in;
        r->out_len = plen;
    }
    return CAIRN_OK;
}

static int aead_read(struct cairn_reader *base, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct aead_reader *r = (struct aead_reader *)base;
    uint8_t *dst = buf;
    size_t total = 0;
    int rc;
    *got = 0;
    if (!r->started && (rc = aead_start(r, err)) != CAIRN_OK)
        return rc;
    while (total < cap) {
        if (r->out_len > 0) {
            size_t n = r->out_len < cap - total ? r->out_len : cap - total;
            memcpy(dst + total, r->out, n);
            r->out += n;
            r->out_len -= n;
            total += n;
            continue;
        }
        if (r->done)
            break;
        if (r->have - r->off <= r->cl && !r->eof) {
            if (total > 0)
                break; /* hand out what is ready before waiting for more */
            if ((rc = aead_more(r, err)) != CAIRN_OK)
                return rc;
            continue;
        }
        size_t put;
        if ((rc = aead_next_chunk(r, dst + total, cap - total, &put, err)) != CAIRN_OK) {
            if (total > 0)
                break; /* the chunks before it first: the next read fails on it again */
            return rc;
        }
        total += put;
    }
    *got = total;
    return CAIRN_OK;
}

static void aead_reader_free(struct cairn_reader *base)
{
    struct aead_reader *r = (struct aead_reader *)base;
    aead_state_free(&r->st);
    OPENSSL_cleanse(r->buf, r->cap);
    free(r->buf);
    free(r);
}

static const struct cairn_reader_ops aead_reader_ops = {"aes-gcm", aead_read, aead_reader_free};

static struct cairn_reader *reader_new(struct cairn_reader *src, const uint8_t key[32],
                                       const struct aead_stream_opts *o)
{
    struct aead_reader *r = xcalloc(1, sizeof(*r));
    cairn_reader_init(&r->base, &aead_reader_ops, src);
    aead_state_init(&r->st, key, o);
    size_t n = AEAD_OUT / r->st.chunk;
    r->cl = r->st.chunk + AEAD_TAG;
    r->cap = (n > 0 ? n : 1) * r->cl + 1;
    r->buf = xmalloc(r->cap);
    return &r->base;
}

struct cairn_reader *cairn_aead_reader_new(struct cairn_reader *src,
                                           const uint8_t key[CAIRN_AEAD_KEY_LEN])
{
    return reader_new(src, key, NULL);
}

struct cairn_reader *aead_stream_reader_new(struct cairn_reader *src,
                                            const uint8_t key[CAIRN_AEAD_KEY_LEN],
                                            const struct aead_stream_opts *o)
{
    return reader_new(src, key, o);
}
