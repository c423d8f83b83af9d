/* What the chunk store (chunkstore.c: the index, storing, reading) shares with its garbage
 * collection and check (gc.c). Internal to those two files. */
#ifndef CAIRN_STORAGE_CHUNKSTORE_INT_H
#define CAIRN_STORAGE_CHUNKSTORE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "cairn/err.h"
#include "chunker.h"
#include "chunkstore.h"
#include "common/buf.h"
#include "common/strv.h"
#include "internal.h"
#include "io/aead.h"

#define NONCE     AEAD_GCM_NONCE
#define TAG       AEAD_GCM_TAG
#define RAW_MASK  0x0fffffffu
#define PENDING   UINT32_MAX /* pack of a claimed chunk not appended yet */
#define INDEX_MAX (512u << 20)
/* A backup's memory must not grow with its chunk count beyond the compact index (32 bytes a
 * chunk): a pack is closed once its header holds this much (tiny files: a 32 MiB pack would
 * be some 700,000 entries, held three times over), and an index object is written once the
 * landed packs' entries reach it, their table entries then moving to the compact index.
 * 512 KiB (about 11,600 entries): at 1 MiB a put of 200,000 tiny files peaked 6 MiB higher
 * (45 against 39 MiB; the header, the entries waiting for an index object and the table of
 * the chunks in flight each twice as large), for half as many packs and index objects. */
#define HDR_MAX (512u << 10)
/* Blobs are gathered up to this much before a write to the open pack: small files' blobs
 * are some 100 bytes to 4 KiB, and a write each held the store's lock over a system call. */
#define PW_BUF (256u << 10)

struct cs_ent {
    uint8_t id[16];
    uint32_t pack, off, len, raw; /* raw: length | flags << 28 */
};

struct chunkstore {
    struct cairn_storage *st;
    const struct repo_chunking *k;
    struct chunker proto; /* a fresh chunker: the gear table costs 256 SHA-256s, made once */
    pthread_mutex_t mu;
    pthread_mutex_t pool_mu;
    struct cs_work *pool; /* writers' scratch not in use */
    struct cs_zip *zips;  /* compressors not in use */
    unsigned nzips, zips_max;
    pthread_cond_t zip_cv;
    unsigned nbig; /* writers holding a chunk above CHUNK_SMALL (at most BIG_MAX) */
    pthread_cond_t big_cv;
    struct cs_ent *idx; /* sorted, from index objects */
    size_t nidx, idx_cap;
    struct cs_ent *tab; /* this process's chunks; pack 0 with len 0 and raw 0 = empty */
    size_t ntab, tab_slots;
    uint8_t (*packs)[32];
    size_t npacks, packs_cap;
    /* the open pack */
    struct cairn_writer *pw;
    struct buf pw_buf; /* blobs not yet written to pw: one write per PW_BUF, not per blob */
    uint32_t pw_no;
    uint64_t pw_off;
    struct buf pw_hdr;
    /* entries of packs landed but not yet in an index object: pack id, count, entries */
    struct buf unindexed;
    uint32_t n_unindexed;
    int dirs;   /* the pseudo-backups .data and .index were started */
    int failed; /* a pack write failed: nothing more lands (its code) */
    char fail_msg[CAIRN_ERR_MSG_MAX];
};

struct cs_rd {
    ZSTD_DCtx *dctx;
    struct aead_gcm *gcm;
    uint8_t *st; /* stored bytes */
    size_t st_cap;
    uint8_t *pl; /* decompressed plaintext */
    size_t pl_cap;
    const uint8_t *out; /* a blob's plaintext: in pl, or in place in st when stored */
};

struct cs_work;

static inline void cs_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t cs_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Each is described where it is defined, in chunkstore.c. */
int cs_add_name(void *arg, const char *file);
int cs_tab_empty(const struct cs_ent *e);
struct cs_ent *cs_tab_slot(struct cs_ent *tab, size_t slots, const uint8_t *id);
struct cs_ent *cs_tab_add(struct chunkstore *cs, const uint8_t *id);
int cs_read_object(struct cairn_storage *st, const char *dir, const char *name, size_t max,
                   uint8_t **out, size_t *len, struct cairn_err *err);
int cs_write_index(struct chunkstore *cs, struct cairn_err *err);
struct cs_work *cs_work_take(struct chunkstore *cs);
void cs_work_give(struct chunkstore *cs, struct cs_work *w);
int cs_store_blob(struct chunkstore *cs, struct cs_work *w, const uint8_t *id, const uint8_t *p,
                  size_t len, uint8_t flags, int level, struct cairn_err *err);
void cs_rd_free(struct cs_rd *r);
int cs_get_blob_at(struct chunkstore *cs, struct cs_rd *r, const uint8_t *id, struct cs_ent ent,
                   const char *pack, size_t *len, struct cairn_err *err);
int cs_get_blob(struct chunkstore *cs, struct cs_rd *r, const uint8_t *id, size_t *len,
                struct cairn_err *err);

#endif
