/* The chunk store's garbage collection (prune) and check (docs/FORMAT.md "Chunk store",
 * docs/STORAGE.md): split from chunkstore.c, which stores and reads; what they share is in
 * chunkstore_int.h. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "cairn/repo.h"
#include "chunkstore_int.h"
#include "common/util.h"

/* ---- garbage collection (prune) ----
 * Mark: every chunk list named by a complete backup's MANIFEST, and every chunk in those
 * lists. Sweep, in an order where a crash at any point loses no chunk a complete backup
 * references (restic's): (1) live chunks of packs that are mostly garbage are copied into new
 * packs, which land with an index object naming them; (2) one index object naming every pack
 * that stays; (3) the old index objects are deleted; (4) the packs no longer named (dead,
 * repacked, and packs of backups that never completed) are deleted; (5) the driver sweeps
 * what killed writers left (temporaries of the file driver and of S3's atomic PUT). A rerun
 * after a crash finds at worst extra index objects (harmless duplicates) or unnamed packs
 * (deleted). */

struct gent { /* one index entry with its pack */
    uint8_t pack[32];
    uint8_t e[CS_ENTRY_LEN];
};

static int gent_cmp(const void *a, const void *b)
{
    const struct gent *x = a, *y = b;
    int c = memcmp(x->pack, y->pack, 32);
    if (c != 0)
        return c;
    uint32_t ox = cs_get_u32(x->e + 32), oy = cs_get_u32(y->e + 32);
    return ox < oy ? -1 : ox > oy;
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

struct gc {
    struct chunkstore *cs;
    struct strv idx_names, pack_names;
    struct gent *ents;
    size_t nents, cap;
    uint8_t (*marks)[32]; /* sorted, each id once */
    size_t nmarks, mcap;
    uint8_t *copied; /* per mark: repacked by this run already */
};

static void mark(struct gc *g, const uint8_t *id)
{
    if (g->nmarks == g->mcap) {
        g->mcap = g->mcap ? 2 * g->mcap : 4096;
        g->marks = xrealloc(g->marks, g->mcap * 32);
    }
    memcpy(g->marks[g->nmarks++], id, 32);
}

static int marked(const struct gc *g, const uint8_t *id)
{
    return g->nmarks && bsearch(id, g->marks, g->nmarks, 32, id_cmp) != NULL;
}

/* 1 the first time a live id is asked for: a chunk that is in two packs being repacked (a
 * killed prune or backup leaves such copies) is copied once. The second copy must not be
 * read through the lookup either: that names this run's open pack, not landed yet. */
static int copy_first(struct gc *g, const uint8_t *id)
{
    uint8_t(*m)[32] = bsearch(id, g->marks, g->nmarks, 32, id_cmp);
    if (g->copied == NULL)
        g->copied = xcalloc(g->nmarks, 1);
    if (g->copied[m - g->marks])
        return 0;
    g->copied[m - g->marks] = 1;
    return 1;
}

/* Every entry of every index object, in full. */
static int gc_read_index(struct gc *g, struct cairn_err *err)
{
    struct cairn_storage *st = g->cs->st;
    int rc = st->drv->list_files(st->state, CS_INDEX_DIR, cs_add_name, &g->idx_names, err);
    for (size_t i = 0; i < g->idx_names.n && rc == CAIRN_OK; i++) {
        uint8_t *p = NULL;
        size_t len = 0, off = 12;
        rc = cs_read_object(st, CS_INDEX_DIR, g->idx_names.v[i], INDEX_MAX, &p, &len, err);
        uint32_t npacks = rc == CAIRN_OK && len >= 44 ? cs_get_u32(p + 8) : 0;
        for (uint32_t k = 0; k < npacks && off + 36 <= len - 32; k++) { /* checked at load */
            uint32_t n = cs_get_u32(p + off + 32);
            const uint8_t *pk = p + off;
            off += 36;
            for (uint32_t j = 0; j < n && off + CS_ENTRY_LEN <= len - 32; j++) {
                if (g->nents == g->cap) {
                    g->cap = g->cap ? 2 * g->cap : 4096;
                    g->ents = xrealloc(g->ents, g->cap * sizeof(*g->ents));
                }
                memcpy(g->ents[g->nents].pack, pk, 32);
                memcpy(g->ents[g->nents++].e, p + off, CS_ENTRY_LEN);
                off += CS_ENTRY_LEN;
            }
        }
        free(p);
    }
    if (rc == CAIRN_OK)
        rc = st->drv->list_files(st->state, CS_DATA_DIR, cs_add_name, &g->pack_names, err);
    if (rc == CAIRN_E_NOTFOUND) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    if (g->nents > 1)
        qsort(g->ents, g->nents, sizeof(*g->ents), gent_cmp);
    return rc;
}

/* Mark the chunk lists of b's files and their chunks. */
static int gc_mark_backup(struct gc *g, struct cairn_backup *b, struct cairn_err *err)
{
    size_t n = cairn_backup_file_count(b);
    struct cs_rd rd = {0};
    int rc = CAIRN_OK;
    for (size_t i = 0; i < n && rc == CAIRN_OK; i++) {
        const struct cairn_manifest_file *f = cairn_backup_file_at(b, i);
        if (f == NULL) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s': its file list does not read",
                               cairn_backup_name(b));
            break;
        }
        if (f->compression != CAIRN_COMPRESS_CHUNKS)
            continue;
        uint8_t id[32];
        size_t len = 0;
        if (cairn_hex_decode(f->sha256, 64, id, 32, NULL) != 0) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "backup '%s' file '%s': bad chunk list id",
                               cairn_backup_name(b), f->name);
            break;
        }
        mark(g, id);
        rc = cs_get_blob(g->cs, &rd, id, &len, err);
        for (size_t k = 0; rc == CAIRN_OK && k + 32 <= len; k += 32)
            mark(g, rd.out + k);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "backup '%s' file '%s'", cairn_backup_name(b), f->name);
    }
    cs_rd_free(&rd);
    return rc;
}

static int gc_mark(struct gc *g, struct cairn_gc_stats *s, struct cairn_err *err)
{
    struct cairn_backup_list l = {0};
    int rc = cairn_storage_list(g->cs->st, &l, err);
    for (size_t i = 0; i < l.count && rc == CAIRN_OK; i++) {
        if (l.items[i].status == CAIRN_BACKUP_INCOMPLETE)
            continue; /* under the exclusive lock: a failed attempt, its chunks are garbage */
        if (l.items[i].status != CAIRN_BACKUP_COMPLETE) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "backup '%s' is %s: its chunks cannot be marked, so nothing is "
                               "collected (remove it or repair it first)",
                               l.items[i].name, cairn_backup_status_name(l.items[i].status));
            break;
        }
        struct cairn_backup *b = NULL;
        rc = cairn_storage_open_backup(g->cs->st, l.items[i].name, &b, err);
        if (rc == CAIRN_E_NOTFOUND) { /* removed since it was listed (S3 lists lag) */
            cairn_err_clear(err);
            rc = CAIRN_OK;
            continue;
        }
        if (rc == CAIRN_OK)
            rc = gc_mark_backup(g, b, err);
        cairn_backup_free(b);
        s->backups++;
    }
    cairn_backup_list_free(&l);
    if (g->nmarks > 1)
        qsort(g->marks, g->nmarks, 32, id_cmp);
    size_t u = g->nmarks ? 1 : 0; /* each id once (chunks shared by backups are marked often) */
    for (size_t i = 1; i < g->nmarks; i++)
        if (memcmp(g->marks[u - 1], g->marks[i], 32) != 0)
            memcpy(g->marks[u++], g->marks[i], 32);
    g->nmarks = u;
    return rc;
}

/* Copy the live blobs of the pack at ents[a..z) into new packs. */
static int gc_repack(struct gc *g, size_t a, size_t z, struct cairn_gc_stats *s,
                     struct cairn_err *err)
{
    struct chunkstore *cs = g->cs;
    struct cs_rd rd = {0};
    struct cs_work *w = cs_work_take(cs);
    int rc = CAIRN_OK;
    for (size_t i = a; i < z && rc == CAIRN_OK; i++) {
        const uint8_t *id = g->ents[i].e;
        if (!marked(g, id) || !copy_first(g, id))
            continue;
        size_t len = 0;
        rc = cs_get_blob(cs, &rd, id, &len, err);
        if (rc != CAIRN_OK)
            break;
        /* A new place, whatever the index says (the old one goes away). */
        pthread_mutex_lock(&cs->mu);
        struct cs_ent *e = cs->tab_slots ? cs_tab_slot(cs->tab, cs->tab_slots, id) : NULL;
        if (e == NULL || cs_tab_empty(e))
            cs_tab_add(cs, id);
        pthread_mutex_unlock(&cs->mu);
        rc = cs_store_blob(cs, w, id, rd.out, len, g->ents[i].e[44] & CS_FLAG_LIST, 3, err);
        s->bytes_repacked += len;
    }
    cs_work_give(cs, w);
    cs_rd_free(&rd);
    return rc;
}

static int pack_known(const struct gc *g, const char *hex)
{
    uint8_t id[32];
    if (cairn_hex_decode(hex, 64, id, 32, NULL) != 0)
        return 0;
    for (size_t i = 0; i < g->nents; i++) /* sorted by pack: could bsearch; prune is rare */
        if (memcmp(g->ents[i].pack, id, 32) == 0)
            return 1;
    return 0;
}

static int remove_obj(struct cairn_storage *st, const char *dir, const char *name,
                      struct cairn_err *err)
{
    int rc = st->drv->remove_file(st->state, dir, name, err);
    if (rc == CAIRN_E_NOTFOUND) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    return rc;
}

/* Classify packs, repack, write the new index, delete, sweep. Long (about 95 lines) because
 * the steps must stay in this order; each is commented. */
static int gc_sweep(struct gc *g, unsigned pct, int dry, struct cairn_gc_stats *s,
                    struct cairn_err *err)
{
    struct chunkstore *cs = g->cs;
    size_t n = g->nents;
    uint8_t *drop = xcalloc(n ? n : 1, 1); /* per entry: its pack goes away */
    int rc = CAIRN_OK;
    for (size_t a = 0; a < n && rc == CAIRN_OK;) {
        size_t z = a;
        uint64_t total = 0, live = 0;
        while (z < n && memcmp(g->ents[z].pack, g->ents[a].pack, 32) == 0) {
            uint32_t len = cs_get_u32(g->ents[z].e + 36);
            int dup = z > a && memcmp(g->ents[z - 1].e + 32, g->ents[z].e + 32, 4) == 0;
            if (!dup) {
                total += len;
                if (marked(g, g->ents[z].e))
                    live += len;
            }
            z++;
        }
        s->packs++;
        s->bytes_total += total;
        s->bytes_garbage += total - live;
        int dead = live == 0, repack = !dead && (total - live) * 100 > (uint64_t)pct * total;
        if (dead || repack) {
            memset(drop + a, 1, z - a);
            s->packs_deleted += dead;
            s->packs_repacked += repack;
            s->bytes_freed += dead ? total : total - live;
            /* (1) live chunks to new packs, which land (with their index) first */
            if (repack && !dry)
                rc = gc_repack(g, a, z, s, err);
        }
        a = z;
    }
    if (rc == CAIRN_OK && !dry)
        rc = cs_flush(cs, err);
    /* (2) one index object naming every pack that stays */
    pthread_mutex_lock(&cs->mu);
    for (size_t a = 0; a < n && rc == CAIRN_OK && !dry;) {
        size_t z = a;
        while (z < n && memcmp(g->ents[z].pack, g->ents[a].pack, 32) == 0)
            z++;
        if (!drop[a]) {
            uint8_t ph[36];
            memcpy(ph, g->ents[a].pack, 32);
            cs_put_u32(ph + 32, (uint32_t)(z - a));
            buf_add(&cs->unindexed, ph, sizeof(ph));
            for (size_t i = a; i < z; i++)
                buf_add(&cs->unindexed, g->ents[i].e, CS_ENTRY_LEN);
            cs->n_unindexed++;
        }
        a = z;
    }
    if (rc == CAIRN_OK && !dry)
        rc = cs_write_index(cs, err);
    pthread_mutex_unlock(&cs->mu);
    /* (3) the old index objects */
    for (size_t i = 0; i < g->idx_names.n && rc == CAIRN_OK && !dry; i++)
        rc = remove_obj(cs->st, CS_INDEX_DIR, g->idx_names.v[i], err);
    /* (4) packs no index names any more: dead, repacked, or never indexed */
    for (size_t i = 0; i < g->pack_names.n && rc == CAIRN_OK; i++) {
        uint8_t id[32];
        cairn_hex_decode(g->pack_names.v[i], 64, id, 32, NULL);
        int keep = 0;
        for (size_t a = 0; a < n && !keep; a++)
            keep = !drop[a] && memcmp(g->ents[a].pack, id, 32) == 0;
        if (keep)
            continue;
        if (!pack_known(g, g->pack_names.v[i]))
            s->packs_unindexed++;
        if (!dry)
            rc = remove_obj(cs->st, CS_DATA_DIR, g->pack_names.v[i], err);
    }
    /* (5) what killed writers left beside the objects (torn packs and index objects) */
    for (int i = 0; i < 2 && rc == CAIRN_OK && !dry && cs->st->drv->sweep != NULL; i++)
        rc = cs->st->drv->sweep(cs->st->state, i ? CS_INDEX_DIR : CS_DATA_DIR, err);
    free(drop);
    return rc;
}

int cairn_storage_gc(struct cairn_storage *st, const struct cairn_gc_opts *o,
                     struct cairn_gc_stats *stats, struct cairn_err *err)
{
    struct cairn_gc_stats s = {0};
    struct chunkstore *cs = NULL;
    int rc = cs_get(st, &cs, err);
    if (rc != CAIRN_OK || cs == NULL) {
        if (stats != NULL)
            *stats = s;
        return rc;
    }
    unsigned pct = o != NULL && o->repack_percent ? o->repack_percent : 20;
    struct gc g = {.cs = cs};
    rc = gc_read_index(&g, err);
    if (rc == CAIRN_OK)
        rc = gc_mark(&g, &s, err);
    if (rc == CAIRN_OK)
        rc = gc_sweep(&g, pct, o != NULL && o->dry_run, &s, err);
    s.chunks_live = g.nmarks;
    strv_free(&g.idx_names);
    strv_free(&g.pack_names);
    free(g.ents);
    free(g.marks);
    free(g.copied);
    if (stats != NULL)
        *stats = s;
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "garbage collection of '%s'", st->url);
    /* The in-memory index is stale now: reload on next use. */
    pthread_mutex_lock(&st->cs_mu);
    st->cs = NULL;
    pthread_mutex_unlock(&st->cs_mu);
    cs_free(cs);
    return CAIRN_OK;
}

/* ---- check ---- */

/* 1 when pack (64 hex) is one of the read-data subset: its first 4 bytes, as a number, fall
 * in the first pct percent (the same packs on every run, so a rotating subset needs another
 * seed: a later change). */
static int in_subset(const uint8_t *pack, unsigned pct)
{
    return pct >= 100 || (uint64_t)cs_get_u32(pack) * 100 < (uint64_t)pct * 0x100000000ull;
}

/* Long (86 lines): structure, then data, over the same marks and entries, each step
 * commented; splitting would pass the whole gc state around. */
int cairn_storage_check(struct cairn_storage *st, const struct cairn_check_opts *o,
                        struct cairn_check_stats *stats, struct cairn_err *err)
{
    struct cairn_check_stats s = {0};
    struct chunkstore *cs = NULL;
    int rc = cs_get(st, &cs, err);
    if (rc != CAIRN_OK || cs == NULL) {
        if (stats != NULL)
            *stats = s;
        return rc;
    }
    struct gc g = {.cs = cs};
    struct cairn_gc_stats gs = {0};
    /* Structure: every MANIFEST's chunk lists read (and authenticated), every chunk they name
     * in the index, every pack the index names present. */
    rc = gc_read_index(&g, err);
    if (rc == CAIRN_OK)
        rc = gc_mark(&g, &gs, err);
    s.backups = gs.backups;
    uint8_t(*present)[32] = xcalloc(g.pack_names.n ? g.pack_names.n : 1, 32);
    for (size_t i = 0; i < g.pack_names.n; i++)
        cairn_hex_decode(g.pack_names.v[i], 64, present[i], 32, NULL);
    if (g.pack_names.n > 1)
        qsort(present, g.pack_names.n, 32, id_cmp);
    for (size_t i = 0; i < g.nmarks && rc == CAIRN_OK; i++) {
        if (i > 0 && memcmp(g.marks[i - 1], g.marks[i], 32) == 0)
            continue;
        s.chunks++;
        if (!cs_has(cs, g.marks[i])) {
            char hex[65];
            cairn_hex_encode(g.marks[i], 32, hex);
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "chunk %s is referenced but in no index", hex);
        }
    }
    for (size_t i = 0; i < g.nents && rc == CAIRN_OK; i++) {
        if (i > 0 && memcmp(g.ents[i - 1].pack, g.ents[i].pack, 32) == 0)
            continue;
        s.packs++;
        if (g.pack_names.n == 0 || !bsearch(g.ents[i].pack, present, g.pack_names.n, 32, id_cmp)) {
            int used = 0;
            for (size_t j = i; j < g.nents && memcmp(g.ents[j].pack, g.ents[i].pack, 32) == 0; j++)
                used |= marked(&g, g.ents[j].e);
            char hex[65];
            cairn_hex_encode(g.ents[i].pack, 32, hex);
            if (used)
                rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                                   "pack '%s/%s' is named by the index but missing", CS_DATA_DIR,
                                   hex);
        }
    }
    /* Data: every blob of the chosen packs read and authenticated. */
    unsigned pct = o != NULL ? o->read_data_percent : 0;
    struct cs_rd rd = {0};
    for (size_t i = 0; i < g.nents && rc == CAIRN_OK && pct > 0; i++) {
        if (!in_subset(g.ents[i].pack, pct))
            continue;
        if (i > 0 && memcmp(g.ents[i - 1].e + 32, g.ents[i].e + 32, 4) == 0 &&
            memcmp(g.ents[i - 1].pack, g.ents[i].pack, 32) == 0)
            continue; /* the same blob listed twice */
        size_t len = 0;
        if (i == 0 || memcmp(g.ents[i - 1].pack, g.ents[i].pack, 32) != 0)
            s.packs_read++;
        /* at this pack's place, not the one the index lookup would choose */
        struct cs_ent ent = {{0},
                             0,
                             cs_get_u32(g.ents[i].e + 32),
                             cs_get_u32(g.ents[i].e + 36),
                             (cs_get_u32(g.ents[i].e + 40) & RAW_MASK) | (uint32_t)g.ents[i].e[44]
                                                                             << 28};
        char hex[65];
        cairn_hex_encode(g.ents[i].pack, 32, hex);
        rc = cs_get_blob_at(cs, &rd, g.ents[i].e, ent, hex, &len, err);
        s.blobs_read++;
        s.bytes_read += len;
    }
    cs_rd_free(&rd);
    free(present);
    strv_free(&g.idx_names);
    strv_free(&g.pack_names);
    free(g.ents);
    free(g.marks);
    if (stats != NULL)
        *stats = s;
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "check of '%s'", st->url);
    return CAIRN_OK;
}
