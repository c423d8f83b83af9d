/* The chunk store (chunkstore.h, docs/FORMAT.md "Chunk store").
 *
 * Memory: the index of the repository is one sorted array of 32-byte entries (the first 16
 * bytes of the chunk id, pack number, offset, stored length, raw length with the flags in its
 * top bits), plus an open-addressing table of the chunks this process stored (same entries),
 * plus the pack ids (32 bytes per pack). 16 bytes of a keyed 256-bit hash identify a chunk
 * for deduplication (a false match needs a 2^-128 event per pair); every read recomputes
 * the full id and compares it. 1,000,000 chunks: 32 MB of index.
 *
 * Threads: chunk writers cut, hash, compress and encrypt on their own threads (put_path runs
 * files on workers); only the lookup-and-claim of an id and the append to the open pack run
 * under the store's lock. */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCCtx_advanced: see zmem_alloc */
#include <zstd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "cairn/repo.h"
#include "chunkstore.h"
#include "chunkstore_int.h"
#include "common/buf.h"
#include "common/util.h"
#include "internal.h"
#include "io/aead.h"
#include "io/probe.h"

struct cs_work;
static void work_free(struct cs_work *w); /* and those after it in the pool */
struct cs_zip;
static void zip_free(struct cs_zip *z); /* and those after it */

/* ---- the in-memory index ---- */

static int ent_cmp(const void *a, const void *b)
{
    return memcmp(((const struct cs_ent *)a)->id, ((const struct cs_ent *)b)->id, 16);
}

/* In place (heapsort): glibc's qsort would take a second copy of a 32 MB index for its merge
 * sort, and a backup's peak memory is the point of the compact index. */
static void sift(struct cs_ent *a, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && ent_cmp(&a[c], &a[c + 1]) < 0)
            c++;
        if (ent_cmp(&a[i], &a[c]) >= 0)
            return;
        struct cs_ent t = a[i];
        a[i] = a[c];
        a[c] = t;
        i = c;
    }
}

static void sort_ents(struct cs_ent *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(a, i, n);
    for (size_t k = n; k-- > 1;) {
        struct cs_ent t = a[0];
        a[0] = a[k];
        a[k] = t;
        sift(a, 0, k);
    }
}

static size_t tab_home(const uint8_t *id, size_t slots)
{
    uint64_t h;
    memcpy(&h, id, 8);
    return (size_t)h & (slots - 1);
}

int cs_tab_empty(const struct cs_ent *e)
{
    return e->pack == 0 && e->len == 0 && e->raw == 0 && e->off == 0;
}

struct cs_ent *cs_tab_slot(struct cs_ent *tab, size_t slots, const uint8_t *id)
{
    size_t i = tab_home(id, slots);
    while (!cs_tab_empty(&tab[i]) && memcmp(tab[i].id, id, 16) != 0)
        i = (i + 1) & (slots - 1);
    return &tab[i];
}

/* The entry of id, or NULL. Caller holds mu. */
static struct cs_ent *lookup(struct chunkstore *cs, const uint8_t *id)
{
    if (cs->tab_slots > 0) {
        struct cs_ent *e = cs_tab_slot(cs->tab, cs->tab_slots, id);
        if (!cs_tab_empty(e))
            return e;
    }
    struct cs_ent key;
    memcpy(key.id, id, 16);
    return cs->nidx ? bsearch(&key, cs->idx, cs->nidx, sizeof(key), ent_cmp) : NULL;
}

/* Add an entry for id (not present) to the table, kept at most half full. Caller holds mu. */
struct cs_ent *cs_tab_add(struct chunkstore *cs, const uint8_t *id)
{
    if (2 * (cs->ntab + 1) > cs->tab_slots) {
        size_t n = cs->tab_slots ? 2 * cs->tab_slots : 4096;
        struct cs_ent *t = xcalloc(n, sizeof(*t));
        for (size_t i = 0; i < cs->tab_slots; i++)
            if (!cs_tab_empty(&cs->tab[i]))
                *cs_tab_slot(t, n, cs->tab[i].id) = cs->tab[i];
        free(cs->tab);
        cs->tab = t;
        cs->tab_slots = n;
    }
    struct cs_ent *e = cs_tab_slot(cs->tab, cs->tab_slots, id);
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, 16);
    e->pack = PENDING;
    cs->ntab++;
    return e;
}

static uint32_t pack_add(struct chunkstore *cs, const uint8_t *id)
{
    if (cs->npacks == cs->packs_cap) {
        cs->packs_cap = cs->packs_cap ? 2 * cs->packs_cap : 64;
        cs->packs = xrealloc(cs->packs, cs->packs_cap * 32);
    }
    memcpy(cs->packs[cs->npacks], id, 32);
    return (uint32_t)cs->npacks++;
}

/* ---- index objects ---- */

int cs_add_name(void *arg, const char *file)
{
    if (strlen(file) == 64) /* else not ours (a temporary) */
        strv_add(arg, file);
    return 0;
}

int cs_read_object(struct cairn_storage *st, const char *dir, const char *name, size_t max,
                   uint8_t **out, size_t *len, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = storage_read(st, dir, name, NULL, &r, err);
    struct buf b = {0};
    uint8_t tmp[65536];
    while (rc == CAIRN_OK) {
        size_t got = 0;
        rc = cairn_reader_read(r, tmp, sizeof(tmp), &got, err);
        if (rc != CAIRN_OK || got == 0)
            break;
        if (b.len + got > max) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "'%s/%s' is larger than %zu bytes", dir, name,
                               max);
            break;
        }
        buf_add(&b, tmp, got);
    }
    cairn_reader_free(r);
    if (rc != CAIRN_OK) {
        buf_free(&b);
        return rc;
    }
    *out = b.p;
    *len = b.len;
    return CAIRN_OK;
}

/* An index object parsed as it streams in (1,000,000 chunks are a 45 MB object: it is never
 * held whole), entry by entry into the index; the SHA-256 at its end is held back 32 bytes
 * behind and checked last. */
struct ixp {
    struct chunkstore *cs;
    struct cairn_sha256 h;
    uint8_t tail[32];
    size_t ntail;
    uint8_t rec[CS_ENTRY_LEN];
    size_t nrec, want;
    int stage; /* 0 header, 1 pack header, 2 entry, 3 done */
    uint32_t packs_left, ents_left, pack_no;
    int bad;
};

static void ixp_record(struct ixp *x)
{
    struct chunkstore *cs = x->cs;
    if (x->stage == 0) {
        if (memcmp(x->rec, CS_IDX_MAGIC, 8) != 0) {
            x->bad = 1;
            return;
        }
        x->packs_left = cs_get_u32(x->rec + 8);
    } else if (x->stage == 1) {
        x->pack_no = pack_add(cs, x->rec);
        x->ents_left = cs_get_u32(x->rec + 32);
        x->packs_left--;
    } else {
        if (cs->nidx == cs->idx_cap) {
            cs->idx_cap = cs->idx_cap ? 2 * cs->idx_cap : 4096;
            cs->idx = xrealloc(cs->idx, cs->idx_cap * sizeof(*cs->idx));
        }
        struct cs_ent *e = &cs->idx[cs->nidx++];
        memcpy(e->id, x->rec, 16);
        e->pack = x->pack_no;
        e->off = cs_get_u32(x->rec + 32);
        e->len = cs_get_u32(x->rec + 36);
        e->raw = (cs_get_u32(x->rec + 40) & RAW_MASK) | (uint32_t)x->rec[44] << 28;
        x->ents_left--;
    }
    x->stage = x->ents_left > 0 ? 2 : x->packs_left > 0 ? 1 : 3;
    x->want = x->stage == 2 ? CS_ENTRY_LEN : x->stage == 1 ? 36 : 0;
    x->nrec = 0;
}

static void ixp_body(struct ixp *x, const uint8_t *p, size_t n)
{
    cairn_sha256_update(&x->h, p, n);
    while (n > 0 && !x->bad) {
        if (x->stage == 3) {
            x->bad = 1; /* bytes after the last entry */
            return;
        }
        size_t k = x->want - x->nrec < n ? x->want - x->nrec : n;
        memcpy(x->rec + x->nrec, p, k);
        x->nrec += k;
        p += k;
        n -= k;
        if (x->nrec == x->want)
            ixp_record(x);
    }
}

/* Feed stored plaintext; the last 32 bytes seen are kept back as the digest. */
static void ixp_feed(struct ixp *x, const uint8_t *p, size_t n)
{
    if (n >= 32) {
        ixp_body(x, x->tail, x->ntail);
        ixp_body(x, p, n - 32);
        memcpy(x->tail, p + n - 32, 32);
        x->ntail = 32;
        return;
    }
    size_t spill = x->ntail + n > 32 ? x->ntail + n - 32 : 0;
    ixp_body(x, x->tail, spill);
    memmove(x->tail, x->tail + spill, x->ntail - spill);
    x->ntail -= spill;
    memcpy(x->tail + x->ntail, p, n);
    x->ntail += n;
}

/* Parse one index object from r (its stored bytes, decrypted by the caller's chain). */
static int parse_one(struct chunkstore *cs, const char *name, struct cairn_reader *r,
                     struct cairn_err *err)
{
    int rc = CAIRN_OK;
    struct ixp x = {.cs = cs, .want = 12};
    cairn_sha256_init(&x.h);
    uint8_t *buf = xmalloc(1u << 20);
    while (rc == CAIRN_OK && !x.bad) {
        size_t got = 0;
        rc = cairn_reader_read(r, buf, 1u << 20, &got, err);
        if (rc != CAIRN_OK || got == 0)
            break;
        ixp_feed(&x, buf, got);
    }
    free(buf);
    uint8_t d[32];
    cairn_sha256_final(&x.h, d);
    if (rc != CAIRN_OK)
        return rc;
    if (x.bad || x.stage != 3 || x.ntail != 32)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "index object '%s/%s' is malformed",
                             CS_INDEX_DIR, name);
    if (memcmp(d, x.tail, 32) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "index object '%s/%s' fails its SHA-256 (damaged)", CS_INDEX_DIR,
                             name);
    return CAIRN_OK;
}

/* The local index cache: $XDG_CACHE_HOME/cairn/<repo id>/index (or ~/.cache/...), holding
 * index objects' stored bytes (still encrypted in an encrypted repository, and checked as
 * when read from storage). Always safe to delete: a missing or unreadable entry is fetched
 * again. NULL when there is no home for it (then every read goes to storage). */
static char *cache_dir(const struct chunkstore *cs)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (getenv("CAIRN_NO_CACHE") != NULL)
        return NULL;
    char *base = x && *x == '/'         ? xstrdup(x)
                 : home && *home == '/' ? path_join(home, ".cache")
                                        : NULL;
    if (base == NULL)
        return NULL;
    char *d = xasprintf("%s/cairn/%s/index", base, cs->k->repo_hex);
    free(base);
    struct cairn_err e;
    if (mkdir_p(d, 0700, &e) != CAIRN_OK) {
        free(d);
        return NULL;
    }
    return d;
}

/* Copy the stored bytes of index object name into the cache (atomically). */
static int cache_fill(struct chunkstore *cs, const char *path, const char *name,
                      struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    struct cairn_writer *w = NULL;
    int rc = cs->st->drv->read(cs->st->state, CS_INDEX_DIR, name, &r, err);
    if (rc == CAIRN_OK)
        rc = cairn_atomic_file_writer_open(path, 0600, 1, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_copy(r, w, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    cairn_reader_free(r);
    return rc;
}

static int load_one(struct chunkstore *cs, const char *dir, const char *name, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    char *path = dir ? path_join(dir, name) : NULL;
    struct cairn_err le;
    int rc = CAIRN_E_NOTFOUND;
    if (path != NULL && (access(path, R_OK) == 0 || cache_fill(cs, path, name, &le) == CAIRN_OK) &&
        cairn_file_reader_open(path, &r, &le) == CAIRN_OK) {
        size_t before = cs->nidx, packs = cs->npacks;
        r = storage_open_stored(cs->st, CS_INDEX_DIR, name, NULL, r);
        rc = parse_one(cs, name, r, &le);
        cairn_reader_free(r);
        if (rc != CAIRN_OK) { /* a damaged cache entry: forget it, read the object */
            unlink(path);
            cs->nidx = before;
            cs->npacks = packs;
        }
    }
    free(path);
    if (rc == CAIRN_OK)
        return rc;
    rc = storage_read(cs->st, CS_INDEX_DIR, name, NULL, &r, err);
    if (rc == CAIRN_OK)
        rc = parse_one(cs, name, r, err);
    cairn_reader_free(r);
    return rc;
}

/* Cache entries of index objects that are gone (a prune replaced them). */
static void cache_trim(const char *dir, const struct strv *nv)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int known = 0;
        for (size_t i = 0; i < nv->n && !known; i++)
            known = strcmp(nv->v[i], e->d_name) == 0;
        if (!known) {
            char *p = path_join(dir, e->d_name);
            unlink(p);
            free(p);
        }
    }
    if (d != NULL)
        closedir(d);
}

static int load_index(struct chunkstore *cs, struct cairn_err *err)
{
    struct cairn_storage *st = cs->st;
    struct strv nv = {0};
    if (st->drv->list_files == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "storage driver '%s' cannot list files: no chunk store",
                             st->drv->name);
    int rc = st->drv->list_files(st->state, CS_INDEX_DIR, cs_add_name, &nv, err);
    char *dir = rc == CAIRN_OK ? cache_dir(cs) : NULL;
    for (size_t i = 0; i < nv.n && rc == CAIRN_OK; i++)
        rc = load_one(cs, dir, nv.v[i], err);
    if (rc == CAIRN_OK && dir != NULL)
        cache_trim(dir, &nv);
    free(dir);
    strv_free(&nv);
    if (rc == CAIRN_OK && cs->nidx > 1)
        sort_ents(cs->idx, cs->nidx);
    return rc;
}

/* Write an index object of the unindexed packs. Caller holds mu. */
int cs_write_index(struct chunkstore *cs, struct cairn_err *err)
{
    if (cs->n_unindexed == 0)
        return CAIRN_OK;
    uint8_t hdr[12], d[32], id[32];
    char hex[65];
    memcpy(hdr, CS_IDX_MAGIC, 8);
    cs_put_u32(hdr + 8, cs->n_unindexed);
    /* Written in three pieces: a copy of the body would be one more megabyte per object. */
    struct cairn_sha256 h;
    cairn_sha256_init(&h);
    cairn_sha256_update(&h, hdr, 12);
    cairn_sha256_update(&h, cs->unindexed.p, cs->unindexed.len);
    cairn_sha256_final(&h, d);
    cairn_sha256_free(&h);
    if (RAND_bytes(id, 32) != 1)
        abort();
    cairn_hex_encode(id, 32, hex);
    struct cairn_writer *w = NULL;
    /* Atomic: a crash mid-upload must not leave a torn index object (S3 servers may keep the
     * bytes they received); a torn pack is harmless: no index names it. */
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_ATOMIC |
                                                CAIRN_STORAGE_WRITE_SYNC};
    int rc = storage_create(cs->st, CS_INDEX_DIR, hex, NULL, (int64_t)(12 + cs->unindexed.len + 32),
                            &wo, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, hdr, 12, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, cs->unindexed.p, cs->unindexed.len, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, d, 32, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "write index object '%s/%s'", CS_INDEX_DIR, hex);
    cs->unindexed.len = 0; /* its room is kept for the next object */
    cs->n_unindexed = 0;
    return CAIRN_OK;
}

/* Move the table's landed entries into the sorted index (an entry already there takes the
 * table's place, as lookup would), keeping the claimed ones: the table holds only what is in
 * flight, the index 32 bytes a chunk without a hash table's slack. Caller holds mu. */
static void tab_to_idx(struct chunkstore *cs)
{
    size_t k = 0, pending = 0;
    for (size_t i = 0; i < cs->tab_slots; i++)
        if (!cs_tab_empty(&cs->tab[i]))
            cs->tab[i].pack == PENDING ? pending++ : k++;
    if (k == 0)
        return;
    struct cs_ent *nw = xmalloc(k * sizeof(*nw));
    size_t n = 0;
    for (size_t i = 0; i < cs->tab_slots; i++) {
        struct cs_ent *e = &cs->tab[i];
        if (cs_tab_empty(e) || e->pack == PENDING)
            continue;
        struct cs_ent *o = cs->nidx ? bsearch(e, cs->idx, cs->nidx, sizeof(*e), ent_cmp) : NULL;
        if (o != NULL)
            *o = *e; /* a new place (repacked) */
        else
            nw[n++] = *e;
    }
    sort_ents(nw, n);
    if (cs->nidx + n > cs->idx_cap) {
        cs->idx_cap = cs->nidx + n;
        cs->idx = xrealloc(cs->idx, cs->idx_cap * sizeof(*cs->idx));
    }
    /* merge from the back: both runs sorted, no id in both */
    size_t a = cs->nidx, b = n, d = cs->nidx + n;
    while (b > 0)
        cs->idx[--d] = a > 0 && ent_cmp(&cs->idx[a - 1], &nw[b - 1]) > 0 ? cs->idx[--a] : nw[--b];
    cs->nidx += n;
    free(nw);
    size_t slots = 4096;
    while (slots < 4 * pending)
        slots *= 2;
    struct cs_ent *t = xcalloc(slots, sizeof(*t));
    for (size_t i = 0; i < cs->tab_slots; i++)
        if (!cs_tab_empty(&cs->tab[i]) && cs->tab[i].pack == PENDING)
            *cs_tab_slot(t, slots, cs->tab[i].id) = cs->tab[i];
    free(cs->tab);
    cs->tab = t;
    cs->tab_slots = slots;
    cs->ntab = pending;
}

/* ---- the store ---- */

int cs_get(struct cairn_storage *st, struct chunkstore **out, struct cairn_err *err)
{
    *out = NULL;
    int rc = storage_ready(st, err);
    if (rc != CAIRN_OK)
        return rc;
    const struct repo_chunking *k = repo_chunking(st->repo);
    if (k == NULL)
        return CAIRN_OK;
    pthread_mutex_lock(&st->cs_mu);
    if (st->cs == NULL) {
        struct chunkstore *cs = xcalloc(1, sizeof(*cs));
        cs->st = st;
        cs->k = k;
        chunker_init(&cs->proto, &k->params, k->seed);
        pthread_mutex_init(&cs->mu, NULL);
        pthread_mutex_init(&cs->pool_mu, NULL);
        pthread_cond_init(&cs->zip_cv, NULL);
        pthread_cond_init(&cs->big_cv, NULL);
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        cs->zips_max = ncpu > 2 ? (unsigned)ncpu : 2;
        rc = load_index(cs, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, rc, "load the chunk index of '%s'", st->url);
            cs_free(cs);
        } else {
            st->cs = cs;
        }
    }
    *out = st->cs;
    pthread_mutex_unlock(&st->cs_mu);
    return rc;
}

void cs_free(struct chunkstore *cs)
{
    if (cs == NULL)
        return;
    cairn_writer_free(cs->pw); /* an unfinished pack is discarded */
    buf_free(&cs->pw_buf);
    buf_free(&cs->pw_hdr);
    buf_free(&cs->unindexed);
    free(cs->idx);
    free(cs->tab);
    free(cs->packs);
    work_free(cs->pool);
    zip_free(cs->zips);
    pthread_mutex_destroy(&cs->mu);
    pthread_mutex_destroy(&cs->pool_mu);
    pthread_cond_destroy(&cs->zip_cv);
    pthread_cond_destroy(&cs->big_cv);
    free(cs);
}

int cs_has(struct chunkstore *cs, const uint8_t *id)
{
    pthread_mutex_lock(&cs->mu);
    struct cs_ent *e = lookup(cs, id);
    int has = e != NULL && e->pack != PENDING;
    pthread_mutex_unlock(&cs->mu);
    return has;
}

static void chunk_id(const struct repo_chunking *k, const void *p, size_t len, uint8_t id[32])
{
    if (k->encrypted)
        cairn_hmac_sha256(k->hash, NULL, 0, p, len, id);
    else
        cairn_sha256_oneshot(p, len, id);
}

/* The additional data of a blob: "cairn blob v1" NUL, id, flags, raw length. */
static size_t blob_ad(const uint8_t *id, uint8_t flags, uint32_t raw, uint8_t ad[64])
{
    static const char label[] = "cairn blob v1";
    memcpy(ad, label, sizeof(label));
    size_t n = sizeof(label);
    memcpy(ad + n, id, 32);
    n += 32;
    ad[n++] = flags;
    cs_put_u32(ad + n, raw);
    return n + 4;
}

static int fail_locked(struct chunkstore *cs, int rc, const struct cairn_err *e)
{
    if (!cs->failed) {
        cs->failed = rc;
        snprintf(cs->fail_msg, sizeof(cs->fail_msg), "%s", e ? e->msg : "pack write failed");
    }
    return rc;
}

/* Start the pseudo-backups holding packs and index objects (a file driver's directories). */
static int make_dirs(struct chunkstore *cs, struct cairn_err *err)
{
    static const char *const dirs[] = {CS_DATA_DIR, CS_INDEX_DIR};
    for (size_t i = 0; i < 2 && !cs->dirs; i++) {
        int rc = cs->st->drv->start(cs->st->state, dirs[i], err);
        if (rc != CAIRN_OK && rc != CAIRN_E_EXISTS)
            return cairn_err_wrap(err, rc, "create '%s' in '%s'", dirs[i], cs->st->url);
        cairn_err_clear(err);
    }
    cs->dirs = 1;
    return CAIRN_OK;
}

static int pack_open(struct chunkstore *cs, struct cairn_err *err)
{
    uint8_t id[32];
    char hex[65];
    int mrc = make_dirs(cs, err);
    if (mrc != CAIRN_OK)
        return mrc;
    if (RAND_bytes(id, 32) != 1)
        abort();
    cairn_hex_encode(id, 32, hex);
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_SYNC};
    /* paced by the upload rate limit like every other object (packs bring their own AEAD) */
    int rc =
        storage_create_raw(cs->st, CS_DATA_DIR, hex, CS_PACK_SIZE + (1 << 20), &wo, &cs->pw, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "create pack '%s/%s'", CS_DATA_DIR, hex);
    cs->pw_no = pack_add(cs, id);
    cs->pw_off = 0;
    cs->pw_hdr.len = 0;
    return CAIRN_OK;
}

/* Write the gathered blobs to the open pack. Caller holds mu. */
static int pw_flush(struct chunkstore *cs, struct cairn_err *err)
{
    int rc = cs->pw_buf.len > 0 ? cairn_writer_write(cs->pw, cs->pw_buf.p, cs->pw_buf.len, err)
                                : CAIRN_OK;
    cs->pw_buf.len = 0;
    return rc;
}

/* Close the open pack: header, its length and magic; then its entries wait for an index
 * object. Caller holds mu. */
static int pack_close(struct chunkstore *cs, struct cairn_err *err)
{
    char hex[65];
    cairn_hex_encode(cs->packs[cs->pw_no], 32, hex);
    uint32_t n = (uint32_t)(cs->pw_hdr.len / CS_ENTRY_LEN);
    /* The plaintext entries wait for an index object (taken back if the pack fails); the
     * header is then encrypted in place and written in pieces, with no copy of it. */
    size_t undo = cs->unindexed.len;
    uint8_t ph[36];
    memcpy(ph, cs->packs[cs->pw_no], 32);
    cs_put_u32(ph + 32, n);
    buf_add(&cs->unindexed, ph, sizeof(ph));
    buf_add(&cs->unindexed, cs->pw_hdr.p, cs->pw_hdr.len);
    uint8_t nonce[NONCE], tag[TAG], trailer[12];
    size_t hlen = cs->pw_hdr.len;
    if (cs->k->encrypted) { /* nonce || GCM(header) || tag */
        static const char ad[] = "cairn pack header v1";
        if (RAND_bytes(nonce, NONCE) != 1)
            abort();
        struct aead_gcm *g = aead_gcm_new(cs->k->pack);
        int grc = aead_gcm_run(g, 1, nonce, ad, sizeof(ad), cs->pw_hdr.p, cs->pw_hdr.p,
                               cs->pw_hdr.len, tag);
        aead_gcm_free(g);
        if (grc != CAIRN_OK)
            abort();
        hlen += NONCE + TAG;
    }
    cs_put_u32(trailer, (uint32_t)hlen);
    memcpy(trailer + 4, CS_PACK_MAGIC, 8);
    int rc = pw_flush(cs, err);
    if (rc == CAIRN_OK && cs->k->encrypted)
        rc = cairn_writer_write(cs->pw, nonce, NONCE, err);
    if (rc == CAIRN_OK && cs->pw_hdr.len > 0)
        rc = cairn_writer_write(cs->pw, cs->pw_hdr.p, cs->pw_hdr.len, err);
    if (rc == CAIRN_OK && cs->k->encrypted)
        rc = cairn_writer_write(cs->pw, tag, TAG, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(cs->pw, trailer, sizeof(trailer), err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(cs->pw, err);
    cairn_writer_free(cs->pw);
    cs->pw = NULL;
    cs->pw_hdr.len = 0; /* its room is kept for the next pack */
    if (rc != CAIRN_OK) {
        cs->unindexed.len = undo;
        return fail_locked(cs, cairn_err_wrap(err, rc, "write pack '%s/%s'", CS_DATA_DIR, hex),
                           err);
    }
    cs->n_unindexed++;
    if (cs->unindexed.len < HDR_MAX)
        return CAIRN_OK;
    rc = cs_write_index(cs, err);
    if (rc != CAIRN_OK)
        return fail_locked(cs, rc, err);
    tab_to_idx(cs);
    return CAIRN_OK;
}

/* Append a stored blob to the open pack (opening one when needed) and fill e. Caller holds
 * mu. */
static int pack_append(struct chunkstore *cs, struct cs_ent *e, const uint8_t *id, uint8_t flags,
                       uint32_t raw, const uint8_t *stored, size_t len, struct cairn_err *err)
{
    if (cs->failed)
        return cairn_err_set(err, cs->failed, "%s", cs->fail_msg);
    int rc = cs->pw == NULL ? pack_open(cs, err) : CAIRN_OK;
    if (rc == CAIRN_OK && cs->pw_buf.len + len > PW_BUF)
        rc = pw_flush(cs, err);
    if (rc == CAIRN_OK && len >= PW_BUF)
        rc = cairn_writer_write(cs->pw, stored, len, err);
    else if (rc == CAIRN_OK)
        buf_add(&cs->pw_buf, stored, len);
    if (rc != CAIRN_OK)
        return fail_locked(cs, rc, err);
    uint8_t ent[CS_ENTRY_LEN];
    memcpy(ent, id, 32);
    cs_put_u32(ent + 32, (uint32_t)cs->pw_off);
    cs_put_u32(ent + 36, (uint32_t)len);
    cs_put_u32(ent + 40, raw);
    ent[44] = flags;
    buf_add(&cs->pw_hdr, ent, sizeof(ent));
    e->pack = cs->pw_no;
    e->off = (uint32_t)cs->pw_off;
    e->len = (uint32_t)len;
    e->raw = raw | (uint32_t)flags << 28;
    cs->pw_off += len;
    if (cs->pw_off >= CS_PACK_SIZE || cs->pw_hdr.len >= HDR_MAX)
        rc = pack_close(cs, err);
    return rc;
}

int cs_flush(struct chunkstore *cs, struct cairn_err *err)
{
    pthread_mutex_lock(&cs->mu);
    int rc = cs->failed ? cairn_err_set(err, cs->failed, "%s", cs->fail_msg) : CAIRN_OK;
    if (rc == CAIRN_OK && cs->pw != NULL)
        rc = pack_close(cs, err);
    if (rc == CAIRN_OK)
        rc = cs_write_index(cs, err);
    pthread_mutex_unlock(&cs->mu);
    return rc;
}

/* ---- storing blobs ---- */

/* Per-writer scratch: encryption contexts and the chunk buffer. Writers take one from the
 * store's pool and give it back, so a backup of many small files makes a handful of GCM and
 * HMAC contexts, not a few per file. */
struct cs_work {
    struct cs_work *next; /* in the pool */
    struct aead_gcm *gcm;
    /* A mapping (xmap): only the pages used are memory. A chunk writer's current chunk at
     * buf + NONCE, with room for TAG after the chunker's max, so a chunk stored raw is
     * encrypted where it is (no second copy). buf_hi: the most bytes used since the last
     * trim. */
    uint8_t *buf;
    size_t buf_cap, buf_hi;
    uint8_t nonces[NONCE * 64]; /* random nonces drawn 64 at a time, used from the end */
    unsigned nnonces;
    EVP_MAC_CTX *mac; /* HMAC keyed with K_hash once, re-initialised per id */
};

/* Pages of the buffers above this are given back when a writer returns its scratch to the
 * pool: a large file's chunks (up to the chunker's max) would otherwise stay resident for
 * every worker after it. */
#define WORK_KEEP (1u << 20)

static void work_free(struct cs_work *w)
{
    while (w != NULL) {
        struct cs_work *next = w->next;
        aead_gcm_free(w->gcm);
        EVP_MAC_CTX_free(w->mac);
        xunmap(w->buf, w->buf_cap);
        free(w);
        w = next;
    }
}

struct cs_work *cs_work_take(struct chunkstore *cs)
{
    pthread_mutex_lock(&cs->pool_mu);
    struct cs_work *w = cs->pool;
    if (w != NULL)
        cs->pool = w->next;
    pthread_mutex_unlock(&cs->pool_mu);
    return w != NULL ? w : xcalloc(1, sizeof(*w));
}

void cs_work_give(struct chunkstore *cs, struct cs_work *w)
{
    if (w == NULL)
        return;
    if (w->buf_hi > WORK_KEEP)
        xmap_trim(w->buf, WORK_KEEP, w->buf_cap);
    w->buf_hi = w->buf_hi < WORK_KEEP ? w->buf_hi : WORK_KEEP;
    pthread_mutex_lock(&cs->pool_mu);
    w->next = cs->pool;
    cs->pool = w;
    pthread_mutex_unlock(&cs->pool_mu);
}

/* chunk_id with w's HMAC context: keyed once, then re-initialised (OpenSSL keeps the key),
 * where a context per chunk cost a fetch, a key schedule and a free each. */
static void work_id(const struct repo_chunking *k, struct cs_work *w, const void *p, size_t len,
                    uint8_t id[32])
{
    if (!k->encrypted) {
        cairn_sha256_oneshot(p, len, id);
        return;
    }
    int ok;
    if (w->mac == NULL) {
        EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
        w->mac = m != NULL ? EVP_MAC_CTX_new(m) : NULL; /* holds its own reference */
        EVP_MAC_free(m);
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                               OSSL_PARAM_construct_end()};
        ok = w->mac != NULL && EVP_MAC_init(w->mac, k->hash, 32, params) == 1;
    } else {
        ok = EVP_MAC_init(w->mac, NULL, 0, NULL) == 1;
    }
    size_t outl = 0;
    if (!ok || (len > 0 && EVP_MAC_update(w->mac, p, len) != 1) ||
        EVP_MAC_final(w->mac, id, &outl, 32) != 1 || outl != 32)
        abort(); /* only allocation failure gets here */
}

int cs_store_blob(struct chunkstore *cs, struct cs_work *w, const uint8_t *id, const uint8_t *p,
                  size_t len, uint8_t flags, int level, struct cairn_err *err);

/* Store blob p[0..len) under id unless the store has it. */
static int put_blob(struct chunkstore *cs, struct cs_work *w, const uint8_t *id, const uint8_t *p,
                    size_t len, uint8_t flags, int level, struct cairn_err *err)
{
    pthread_mutex_lock(&cs->mu);
    struct cs_ent *e = lookup(cs, id);
    if (e != NULL) { /* stored, or claimed by another writer whose pack lands first */
        pthread_mutex_unlock(&cs->mu);
        return CAIRN_OK;
    }
    cs_tab_add(cs, id);
    pthread_mutex_unlock(&cs->mu);
    return cs_store_blob(cs, w, id, p, len, flags, level, err);
}

/* A compressor: the storage probe, a zstd context (some 1.3 MB at level 3 for a chunk of a
 * few MiB) and its output. At most zips_max (the CPUs, at least 2) exist: more writers than
 * CPUs cannot compress at once anyway, and each held a set of its own (a 4-worker backup
 * peaked 5-10 MiB higher). out is a mapping (xmap): NONCE, a compressed or copied blob, TAG;
 * out_hi the most bytes used since the last trim. */
struct cs_zip {
    struct cs_zip *next;
    ZSTD_CCtx *cctx;
    struct io_probe *probe;
    uint8_t *out;
    size_t out_cap, out_hi;
};

/* zstd's allocations for a compressor: large ones (the workspace, some 1.3 MB at level 3)
 * are mappings. Compressors move between threads, and zstd frees and reallocates a workspace
 * when input sizes change; from malloc these landed in each thread's arena, where freed pages
 * stay resident (a first backup of 20,000 small files peaked 2.7 MiB higher; not with
 * MALLOC_ARENA_MAX=1). A 16-byte header keeps the length (and malloc's alignment). */
#define ZMEM_HDR 16
#define ZMEM_MAP (256u << 10)

static void *zmem_alloc(void *opaque, size_t size)
{
    (void)opaque;
    size_t n = size + ZMEM_HDR;
    uint8_t *p = n >= ZMEM_MAP ? xmap(n) : xmalloc(n);
    memcpy(p, &n, sizeof(n));
    return p + ZMEM_HDR;
}

static void zmem_free(void *opaque, void *addr)
{
    (void)opaque;
    if (addr == NULL)
        return;
    uint8_t *p = (uint8_t *)addr - ZMEM_HDR;
    size_t n;
    memcpy(&n, p, sizeof(n));
    if (n >= ZMEM_MAP)
        xunmap(p, n);
    else
        free(p);
}

static void zip_free(struct cs_zip *z)
{
    while (z != NULL) {
        struct cs_zip *next = z->next;
        ZSTD_freeCCtx(z->cctx);
        io_probe_free(z->probe);
        xunmap(z->out, z->out_cap);
        free(z);
        z = next;
    }
}

static struct cs_zip *zip_take(struct chunkstore *cs)
{
    pthread_mutex_lock(&cs->pool_mu);
    while (cs->zips == NULL && cs->nzips >= cs->zips_max)
        pthread_cond_wait(&cs->zip_cv, &cs->pool_mu);
    struct cs_zip *z = cs->zips;
    if (z != NULL)
        cs->zips = z->next;
    else
        cs->nzips++;
    pthread_mutex_unlock(&cs->pool_mu);
    return z != NULL ? z : xcalloc(1, sizeof(*z));
}

static void zip_give(struct chunkstore *cs, struct cs_zip *z)
{
    if (z == NULL)
        return;
    if (z->out_hi > WORK_KEEP) { /* a list or copied blob above it: rare */
        xmap_trim(z->out, WORK_KEEP, z->out_cap);
        z->out_hi = WORK_KEEP;
    }
    pthread_mutex_lock(&cs->pool_mu);
    z->next = cs->zips;
    cs->zips = z;
    pthread_cond_signal(&cs->zip_cv);
    pthread_mutex_unlock(&cs->pool_mu);
}

/* z->out with room for need bytes: sized once for the chunker's largest chunk (a mapping:
 * only the pages used count), larger only for a larger blob (a long chunk list). */
static void zip_out(const struct chunkstore *cs, struct cs_zip *z, size_t need)
{
    size_t least = NONCE + ZSTD_compressBound(cs->proto.max) + TAG;
    if (z->out_cap < need) {
        xunmap(z->out, z->out_cap);
        z->out_cap = need > least ? need : least;
        z->out = xmap(z->out_cap);
        z->out_hi = 0;
    }
}

/* Compress, encrypt and append blob p[0..len) whose entry (claimed) is in the table. When p
 * is w's chunk buffer (w->buf + NONCE, with NONCE bytes before it and TAG after it) and the
 * blob is stored raw, it is encrypted in place and p's bytes are lost. */
int cs_store_blob(struct chunkstore *cs, struct cs_work *w, const uint8_t *id, const uint8_t *p,
                  size_t len, uint8_t flags, int level, struct cairn_err *err)
{
    uint8_t *own = w->buf != NULL && p == w->buf + NONCE ? w->buf : NULL;
    size_t blen = len;
    uint8_t *body = NULL;
    struct cs_zip *z = zip_take(cs);
    /* The storage probe first (zstd -1 on a sample must save 1/8): random and compressed
     * chunks skip the compressor. A blob of one sample or less is compressed directly: the
     * probe would compress all of it once more. */
    int try = len >= 64 && len <= IO_PROBE_ZSTD_SAMPLE;
    if (len > IO_PROBE_ZSTD_SAMPLE) {
        if (z->probe == NULL)
            z->probe = io_probe_new(IO_PROBE_ZSTD);
        try = io_probe_pays(z->probe, p, len < (256u << 10) ? len : 256u << 10);
    }
    if (try) {
        size_t bound = ZSTD_compressBound(len);
        zip_out(cs, z, NONCE + bound + TAG);
        body = z->out + NONCE;
        if (z->cctx == NULL) {
            const ZSTD_customMem mem = {zmem_alloc, zmem_free, NULL};
            z->cctx = ZSTD_createCCtx_advanced(mem);
            if (z->cctx == NULL)
                abort();
        }
        size_t c = ZSTD_compressCCtx(z->cctx, body, bound, p, len, level);
        if (!ZSTD_isError(c) && c < len - len / 32) { /* stored raw unless it saves 3 % */
            blen = c;
            flags |= CS_FLAG_ZSTD;
            z->out_hi = z->out_hi > NONCE + c + TAG ? z->out_hi : NONCE + c + TAG;
        } else { /* zstd may have written up to bound */
            z->out_hi = z->out_hi > NONCE + bound ? z->out_hi : NONCE + bound;
        }
    }
    if (!(flags & CS_FLAG_ZSTD) && own != NULL) {
        body = own + NONCE; /* it is p; the compressor is free for another writer */
        zip_give(cs, z);
        z = NULL;
    } else if (!(flags & CS_FLAG_ZSTD)) {
        zip_out(cs, z, NONCE + len + TAG);
        body = z->out + NONCE;
        if (len > 0) /* an empty chunk may come with no buffer */
            memcpy(body, p, len);
        z->out_hi = z->out_hi > NONCE + len + TAG ? z->out_hi : NONCE + len + TAG;
    }
    uint8_t *head = body - NONCE;
    const uint8_t *stored = body;
    size_t slen = blen;
    if (cs->k->encrypted) {
        uint8_t ad[64];
        size_t adl = blob_ad(id, flags, (uint32_t)len, ad);
        if (w->gcm == NULL)
            w->gcm = aead_gcm_new(cs->k->pack);
        if (w->nnonces == 0) {
            if (RAND_bytes(w->nonces, sizeof(w->nonces)) != 1)
                abort();
            w->nnonces = sizeof(w->nonces) / NONCE;
        }
        memcpy(head, w->nonces + NONCE * --w->nnonces, NONCE);
        if (aead_gcm_run(w->gcm, 1, head, ad, adl, body, body, blen, body + blen) != CAIRN_OK)
            abort();
        stored = head;
        slen = NONCE + blen + TAG;
    }
    pthread_mutex_lock(&cs->mu);
    struct cs_ent *e = cs_tab_slot(cs->tab, cs->tab_slots, id); /* the table may have grown */
    int rc = pack_append(cs, e, id, flags, (uint32_t)len, stored, slen, err);
    pthread_mutex_unlock(&cs->mu);
    zip_give(cs, z);
    return rc;
}

/* ---- the chunk writer ---- */

/* In-flight chunk memory: a writer's chunk grows beyond CHUNK_SMALL only while it holds one
 * of BIG_MAX turns; the others wait at that size. Chunks of the default chunker (512 KiB /
 * 1 MiB / 8 MiB) are rarely above 2 MiB, but runs of zeros or long repeats cut only at the
 * max: 4 writers held 4 x 8 MiB (a backup peaked at 38 MiB against 26). Now at most
 * BIG_MAX x max + the others' CHUNK_SMALL. A turn holder waits for nothing a waiter holds
 * (compressors are taken and given within one blob), so turns always come back. */
#define CHUNK_SMALL (2u << 20)
#define BIG_MAX     2

struct chunk_writer {
    struct cairn_writer base;
    struct chunkstore *cs;
    struct chunker c;
    size_t len;           /* of the current chunk, in work->buf */
    struct cs_work *work; /* the pool's */
    int level;
    int big; /* holds a turn */
};

static void big_take(struct chunk_writer *cw)
{
    struct chunkstore *cs = cw->cs;
    pthread_mutex_lock(&cs->pool_mu);
    while (cs->nbig >= BIG_MAX)
        pthread_cond_wait(&cs->big_cv, &cs->pool_mu);
    cs->nbig++;
    pthread_mutex_unlock(&cs->pool_mu);
    cw->big = 1;
}

/* Give the turn back, and the pages of the buffer above CHUNK_SMALL with it. */
static void big_give(struct chunk_writer *cw)
{
    struct chunkstore *cs = cw->cs;
    if (!cw->big)
        return;
    xmap_trim(cw->work->buf, NONCE + CHUNK_SMALL, cw->work->buf_cap);
    cw->work->buf_hi = NONCE + CHUNK_SMALL;
    pthread_mutex_lock(&cs->pool_mu);
    cs->nbig--;
    pthread_cond_signal(&cs->big_cv);
    pthread_mutex_unlock(&cs->pool_mu);
    cw->big = 0;
}

static int emit(struct chunk_writer *cw, struct cairn_err *err)
{
    uint8_t id[32];
    uint8_t *chunk = cw->work->buf + NONCE;
    work_id(cw->cs->k, cw->work, chunk, cw->len, id);
    int rc = put_blob(cw->cs, cw->work, id, chunk, cw->len, 0, cw->level, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(cw->base.next, id, 32, err);
    cw->len = 0;
    big_give(cw);
    return rc;
}

static int cw_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct chunk_writer *cw = (struct chunk_writer *)w;
    const uint8_t *p = buf;
    while (len > 0) {
        int cut;
        size_t n = chunker_push(&cw->c, p, len, &cut);
        struct cs_work *wk = cw->work;
        if (NONCE + cw->len + n + TAG > wk->buf_cap) /* the chunker cuts at its max */
            abort();
        if (cw->len + n > CHUNK_SMALL && !cw->big)
            big_take(cw);
        memcpy(wk->buf + NONCE + cw->len, p, n);
        cw->len += n;
        wk->buf_hi = wk->buf_hi > NONCE + cw->len + TAG ? wk->buf_hi : NONCE + cw->len + TAG;
        p += n;
        len -= n;
        if (cut) {
            int rc = emit(cw, err);
            if (rc != CAIRN_OK)
                return rc;
        }
    }
    return CAIRN_OK;
}

static int cw_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct chunk_writer *cw = (struct chunk_writer *)w;
    return cw->len > 0 ? emit(cw, err) : CAIRN_OK; /* the framework closes next */
}

static void cw_free(struct cairn_writer *w)
{
    struct chunk_writer *cw = (struct chunk_writer *)w;
    big_give(cw); /* a failed stream's */
    cs_work_give(cw->cs, cw->work);
    free(cw);
}

static const struct cairn_writer_ops chunk_writer_ops = {"chunks", cw_write, cw_finish, cw_free};

struct cairn_writer *cs_chunk_writer_new(struct chunkstore *cs, struct cairn_writer *next,
                                         int level)
{
    struct chunk_writer *cw = xcalloc(1, sizeof(*cw));
    cairn_writer_init(&cw->base, &chunk_writer_ops, next);
    cw->cs = cs;
    cw->c = cs->proto;
    cw->work = cs_work_take(cs);
    if (cw->work->buf == NULL) { /* the chunker's max, once: never copied to grow */
        cw->work->buf_cap = NONCE + cs->proto.max + TAG;
        cw->work->buf = xmap(cw->work->buf_cap);
    }
    cw->level = level;
    return &cw->base;
}

/* ---- the chunk list sink ---- */

struct list_sink {
    struct cairn_writer base;
    struct chunkstore *cs;
    struct buf b;
};

static int ls_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    (void)err;
    buf_add(&((struct list_sink *)w)->b, buf, len);
    return CAIRN_OK;
}

static int ls_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct list_sink *s = (struct list_sink *)w;
    uint8_t id[32];
    struct cs_work *work = cs_work_take(s->cs);
    work_id(s->cs->k, work, s->b.p, s->b.len, id);
    int rc = put_blob(s->cs, work, id, s->b.p ? s->b.p : (const uint8_t *)"", s->b.len,
                      CS_FLAG_LIST, 3, err);
    cs_work_give(s->cs, work);
    return rc;
}

static void ls_free(struct cairn_writer *w)
{
    struct list_sink *s = (struct list_sink *)w;
    buf_free(&s->b);
    free(s);
}

static const struct cairn_writer_ops list_sink_ops = {"chunk-list", ls_write, ls_finish, ls_free};

struct cairn_writer *cs_list_sink_new(struct chunkstore *cs)
{
    struct list_sink *s = xcalloc(1, sizeof(*s));
    cairn_writer_init(&s->base, &list_sink_ops, NULL);
    s->cs = cs;
    return &s->base;
}

/* ---- reading ---- */

void cs_rd_free(struct cs_rd *r)
{
    ZSTD_freeDCtx(r->dctx);
    aead_gcm_free(r->gcm);
    free(r->st);
    free(r->pl);
}

/* Buffers only grow, by doubling: chunk sizes vary, and a fresh multi-MiB allocation per
 * chunk would be fresh zeroed pages (page faults) every time. */
static void grow(uint8_t **p, size_t *cap, size_t need)
{
    if (*cap < need) {
        size_t n = *cap ? *cap : 1u << 20;
        while (n < need)
            n *= 2;
        free(*p);
        *cap = n;
        *p = xmalloc(n);
    }
}

/* Read stored bytes through the driver: read_at, or a reader skipped to off. */
static int read_range(struct cairn_storage *st, const char *pack, uint64_t off, void *buf,
                      size_t len, struct cairn_err *err)
{
    if (st->drv->read_at != NULL)
        return st->drv->read_at(st->state, CS_DATA_DIR, pack, off, buf, len, err);
    struct cairn_reader *r = NULL;
    int rc = st->drv->read(st->state, CS_DATA_DIR, pack, &r, err);
    uint8_t tmp[65536];
    while (rc == CAIRN_OK && off > 0) {
        size_t got = 0, want = off < sizeof(tmp) ? (size_t)off : sizeof(tmp);
        rc = cairn_reader_read(r, tmp, want, &got, err);
        if (rc == CAIRN_OK && got == 0)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "pack ends early");
        off -= got;
    }
    if (rc == CAIRN_OK)
        rc = cairn_reader_read_full(r, buf, len, "pack", err);
    cairn_reader_free(r);
    return rc;
}

/* Where a blob lies: its entry and its pack's number and name (hex). CAIRN_E_CORRUPT when no
 * pack the index names holds it. Caller holds mu. */
static int place_of(struct chunkstore *cs, const uint8_t *id, struct cs_ent *ent, char pack[65],
                    struct cairn_err *err)
{
    const struct cs_ent *e = lookup(cs, id);
    if (e == NULL || e->pack == PENDING) {
        char idhex[65];
        cairn_hex_encode(id, 32, idhex);
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "chunk %s is in no pack the index names (missing data)", idhex);
    }
    *ent = *e;
    cairn_hex_encode(cs->packs[e->pack], 32, pack);
    return CAIRN_OK;
}

/* Blob id's plaintext at r->out (*len its length), authenticated, from its stored bytes
 * (ent.len of them at stored, inside r->st, decrypted in place). A blob stored uncompressed
 * (random data) is not copied: r->out points into r->st. */
static int blob_decode(struct chunkstore *cs, struct cs_rd *r, const uint8_t *id, struct cs_ent ent,
                       const char *pack, uint8_t *stored, size_t *len, struct cairn_err *err)
{
    uint8_t flags = (uint8_t)(ent.raw >> 28);
    size_t raw = ent.raw & RAW_MASK;
    uint8_t *body = stored;
    size_t blen = ent.len;
    if (cs->k->encrypted) {
        uint8_t ad[64];
        size_t adl = blob_ad(id, flags, (uint32_t)raw, ad);
        if (blen < NONCE + TAG)
            goto bad;
        blen -= NONCE + TAG;
        body = stored + NONCE;
        if (r->gcm == NULL)
            r->gcm = aead_gcm_new(cs->k->pack);
        if (aead_gcm_run(r->gcm, 0, stored, ad, adl, body, body, blen, body + blen) != CAIRN_OK)
            goto bad;
    }
    r->out = body;
    if (flags & CS_FLAG_ZSTD) {
        grow(&r->pl, &r->pl_cap, raw);
        if (r->dctx == NULL)
            r->dctx = ZSTD_createDCtx();
        size_t d = ZSTD_decompressDCtx(r->dctx, r->pl, raw, body, blen);
        if (ZSTD_isError(d) || d != raw)
            goto bad;
        r->out = r->pl;
    } else if (blen != raw) {
        goto bad;
    }
    uint8_t got[32];
    chunk_id(cs->k, r->out, raw, got);
    if (memcmp(got, id, 32) != 0)
        goto bad;
    *len = raw;
    return CAIRN_OK;
bad:;
    char idhex[65];
    cairn_hex_encode(id, 32, idhex);
    return cairn_err_set(err, CAIRN_E_CORRUPT,
                         "chunk %s in pack '%s/%s' (offset %u) fails authentication (damaged "
                         "or tampered)",
                         idhex, CS_DATA_DIR, pack, ent.off);
}

static int read_failed(struct cairn_err *err, int rc, const uint8_t *id, const char *pack)
{
    char idhex[65];
    cairn_hex_encode(id, 32, idhex);
    return cairn_err_wrap(err, rc, "read chunk %s from pack '%s/%s'", idhex, CS_DATA_DIR, pack);
}

/* Blob id from its place ent in pack (hex), authenticated, at r->out; *len its length. */
int cs_get_blob_at(struct chunkstore *cs, struct cs_rd *r, const uint8_t *id, struct cs_ent ent,
                   const char *pack, size_t *len, struct cairn_err *err)
{
    grow(&r->st, &r->st_cap, ent.len);
    int rc = read_range(cs->st, pack, ent.off, r->st, ent.len, err);
    if (rc != CAIRN_OK)
        return read_failed(err, rc, id, pack);
    return blob_decode(cs, r, id, ent, pack, r->st, len, err);
}

/* The plaintext of blob id (32 bytes) at r->out; *len its length. */
int cs_get_blob(struct chunkstore *cs, struct cs_rd *r, const uint8_t *id, size_t *len,
                struct cairn_err *err)
{
    char pack[65];
    struct cs_ent ent;
    pthread_mutex_lock(&cs->mu);
    int rc = place_of(cs, id, &ent, pack, err);
    pthread_mutex_unlock(&cs->mu);
    if (rc != CAIRN_OK)
        return rc;
    return cs_get_blob_at(cs, r, id, ent, pack, len, err);
}

/* Up to cap bytes of the plaintext at r->out (len bytes, *pos of them handed out already):
 * the one read step of the blob and content readers. */
static size_t rd_take(const struct cs_rd *r, size_t len, size_t *pos, void *out, size_t cap)
{
    size_t k = len - *pos < cap ? len - *pos : cap;
    if (k > 0) /* an empty blob has no buffer */
        memcpy(out, r->out + *pos, k);
    *pos += k;
    return k;
}

/* A reader of one blob's plaintext (owned buffer). */
struct blob_reader {
    struct cairn_reader base;
    struct cs_rd rd;
    size_t len, pos;
};

static int br_read(struct cairn_reader *base, void *out, size_t cap, size_t *got,
                   struct cairn_err *err)
{
    (void)err;
    struct blob_reader *b = (struct blob_reader *)base;
    *got = rd_take(&b->rd, b->len, &b->pos, out, cap);
    return CAIRN_OK;
}

static void br_free(struct cairn_reader *base)
{
    struct blob_reader *b = (struct blob_reader *)base;
    cs_rd_free(&b->rd);
    free(b);
}

static const struct cairn_reader_ops blob_reader_ops = {"blob", br_read, br_free};

int cs_blob_reader_new(struct chunkstore *cs, const char *hex_id, struct cairn_reader **out,
                       struct cairn_err *err)
{
    *out = NULL;
    uint8_t id[32];
    if (strlen(hex_id) != 64 || cairn_hex_decode(hex_id, 64, id, 32, NULL) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "'%s' is no chunk id", hex_id);
    struct blob_reader *b = xcalloc(1, sizeof(*b));
    cairn_reader_init(&b->base, &blob_reader_ops, NULL);
    int rc = cs_get_blob(cs, &b->rd, id, &b->len, err);
    if (rc != CAIRN_OK) {
        cairn_reader_free(&b->base);
        return rc;
    }
    *out = &b->base;
    return CAIRN_OK;
}

/* ---- the content reader ----
 * The chunk list is read ahead (CR_IDS ids at a time), and chunks that lie one after the other
 * in one pack (as a backup writes a file's new chunks) are read with one read_at, a run of at
 * most CR_RUN bytes (or the one chunk): one pread, or one ranged GET on S3, per run instead of
 * per chunk. The run lands in rd.st, which already holds a chunk's stored bytes: memory stays
 * that of the largest chunk or CR_RUN. */
#define CR_IDS 64
#define CR_RUN (1u << 20)

struct content_reader {
    struct cairn_reader base;
    struct chunkstore *cs;
    struct cs_rd rd;
    size_t pos, len; /* of the current chunk at rd.out */
    char *label;
    uint8_t ids[CR_IDS * 32]; /* the list read ahead: ids[ioff, ilen) not taken yet */
    size_t ioff, ilen;
    int list_end;
    uint32_t run_pack; /* the run in rd.st: pack run_pack, bytes [run_off, run_end), those */
    uint64_t run_off, run_end, run_next; /* before run_next decoded (decrypted in place) */
    size_t chunk_max;                    /* the largest chunk's stored length so far */
};

/* Refill the ids read ahead (those not taken yet move to the front). */
static int cr_fill(struct content_reader *c, struct cairn_err *err)
{
    memmove(c->ids, c->ids + c->ioff, c->ilen - c->ioff);
    c->ilen -= c->ioff;
    c->ioff = 0;
    while (!c->list_end && c->ilen < sizeof(c->ids)) {
        size_t n = 0;
        int rc =
            cairn_reader_read(c->base.next, c->ids + c->ilen, sizeof(c->ids) - c->ilen, &n, err);
        if (rc != CAIRN_OK)
            return cairn_err_wrap(err, rc, "%s: read its chunk list", c->label);
        c->list_end = n == 0;
        c->ilen += n;
    }
    if (c->list_end && c->ilen % 32 != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: chunk list ends inside an id", c->label);
    return CAIRN_OK;
}

/* Read the run that starts with the next id (place ent in pack) into rd.st: it goes on while
 * the next ids read ahead follow in the same pack, up to CR_RUN bytes or the largest chunk's
 * stored length read so far, whichever is more (so a run touches no more of rd.st than one
 * chunk did: peak RSS stays where it was). */
static int cr_read_run(struct content_reader *c, const struct cs_ent *ent, const char *pack,
                       struct cairn_err *err)
{
    struct chunkstore *cs = c->cs;
    uint64_t end = (uint64_t)ent->off + ent->len;
    if (ent->len > c->chunk_max)
        c->chunk_max = ent->len;
    size_t limit = c->chunk_max > CR_RUN ? c->chunk_max : CR_RUN;
    pthread_mutex_lock(&cs->mu);
    for (size_t i = c->ioff + 32; i + 32 <= c->ilen; i += 32) {
        const struct cs_ent *e = lookup(cs, c->ids + i);
        if (e == NULL || e->pack != ent->pack || e->off != end || end + e->len - ent->off > limit)
            break;
        end += e->len;
    }
    pthread_mutex_unlock(&cs->mu);
    c->run_end = 0; /* no run while rd.st is read into */
    grow(&c->rd.st, &c->rd.st_cap, (size_t)(end - ent->off));
    int rc = read_range(cs->st, pack, ent->off, c->rd.st, (size_t)(end - ent->off), err);
    if (rc != CAIRN_OK)
        return read_failed(err, rc, c->ids + c->ioff, pack);
    c->run_pack = ent->pack;
    c->run_off = c->run_next = ent->off;
    c->run_end = end;
    return CAIRN_OK;
}

/* The next chunk's plaintext at rd.out; *more 0 at the end of the list. */
static int cr_next(struct content_reader *c, int *more, struct cairn_err *err)
{
    *more = 0;
    if (c->ilen - c->ioff < 32 * (CR_IDS / 2)) { /* keep a run's worth of ids ahead */
        int rc = cr_fill(c, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    if (c->ilen - c->ioff < 32)
        return CAIRN_OK; /* end of the list */
    const uint8_t *id = c->ids + c->ioff;
    struct cs_ent ent = {0}; /* set by place_of on success; zeroed for gcc -O3's flow check */
    char pack[65];
    pthread_mutex_lock(&c->cs->mu);
    int rc = place_of(c->cs, id, &ent, pack, err);
    pthread_mutex_unlock(&c->cs->mu);
    /* the run's bytes are decrypted in place: a chunk before run_next (one that repeats) is
     * read again */
    if (rc == CAIRN_OK && !(ent.pack == c->run_pack && ent.off >= c->run_next &&
                            (uint64_t)ent.off + ent.len <= c->run_end))
        rc = cr_read_run(c, &ent, pack, err);
    uint8_t *stored = ent.len > 0 ? c->rd.st + (ent.off - c->run_off) : NULL; /* in the run */
    if (rc == CAIRN_OK)
        rc = blob_decode(c->cs, &c->rd, id, ent, pack, stored, &c->len, err);
    if (rc != CAIRN_OK)
        return rc; /* the verifying reader above names the file */
    c->run_next = (uint64_t)ent.off + ent.len;
    c->ioff += 32;
    c->pos = 0;
    *more = 1;
    return CAIRN_OK;
}

static int cr_read(struct cairn_reader *base, void *out, size_t cap, size_t *got,
                   struct cairn_err *err)
{
    struct content_reader *c = (struct content_reader *)base;
    *got = 0;
    while (c->pos == c->len) {
        int more = 0;
        int rc = cr_next(c, &more, err);
        if (rc != CAIRN_OK || !more)
            return rc;
    }
    *got = rd_take(&c->rd, c->len, &c->pos, out, cap);
    return CAIRN_OK;
}

static void cr_free(struct cairn_reader *base)
{
    struct content_reader *c = (struct content_reader *)base;
    cs_rd_free(&c->rd);
    free(c->label);
    free(c);
}

static const struct cairn_reader_ops content_reader_ops = {"chunks", cr_read, cr_free};

struct cairn_reader *cs_content_reader_new(struct chunkstore *cs, struct cairn_reader *list,
                                           const char *label)
{
    struct content_reader *c = xcalloc(1, sizeof(*c));
    cairn_reader_init(&c->base, &content_reader_ops, list);
    c->cs = cs;
    c->label = xstrdup(label);
    return &c->base;
}
