/* The handful of meta.proto messages (proto2, as gogo/protobuf writes them) that the snapshot
 * service needs: Data, DatabaseInfo, RetentionPolicyInfo, ShardGroupInfo, ShardInfo. Unmodelled
 * fields are kept raw so a decode/encode round trip loses nothing. */
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "common/util.h"
#include "internal.h"

/* ---- reader (the wire format: common/pb.h) ---- */

static void raw_keep(struct pb_raws *raws, const struct pb_field *f, const uint8_t *end)
{
    raws->v = xrealloc(raws->v, (raws->n + 1) * sizeof(*raws->v));
    struct pb_raw *x = &raws->v[raws->n++];
    x->field = f->num;
    x->len = (size_t)(end - f->start);
    x->bytes = xmalloc(x->len ? x->len : 1);
    memcpy(x->bytes, f->start, x->len);
}

static void raws_free(struct pb_raws *raws)
{
    for (size_t i = 0; i < raws->n; i++)
        free(raws->v[i].bytes);
    free(raws->v);
    raws->v = NULL;
    raws->n = 0;
}

static char *pb_string(const struct pb_field *f)
{
    size_t n = (size_t)(f->sub.end - f->sub.p);
    char *s = xmalloc(n + 1);
    memcpy(s, f->sub.p, n);
    s[n] = 0;
    return s;
}

#define GROW(arr, n)                                                                               \
    ((arr) = xrealloc((arr), ((n) + 1) * sizeof(*(arr))), memset(&(arr)[(n)], 0, sizeof(*(arr))),  \
     &(arr)[(n)++])

/* A field with the expected wire type; anything else is corrupt. */
#define WANT(f, w)                                                                                 \
    do {                                                                                           \
        if ((f).wt != (w))                                                                         \
            return -1;                                                                             \
    } while (0)

static int dec_shard(struct pb r, struct meta_shard *s)
{
    struct pb_field f;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0)
            return -1;
        if (f.num == 1) {
            WANT(f, 0);
            s->id = f.v;
        } else {
            raw_keep(&s->raw, &f, r.p);
        }
    }
    return 0;
}

static int dec_sg(struct pb r, struct meta_sg *g)
{
    struct pb_field f;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0)
            return -1;
        switch (f.num) {
        case 1:
            WANT(f, 0);
            g->id = f.v;
            break;
        case 2:
            WANT(f, 0);
            g->start = (int64_t)f.v;
            break;
        case 3:
            WANT(f, 0);
            g->end = (int64_t)f.v;
            break;
        case 4:
            WANT(f, 0);
            g->deleted_at = (int64_t)f.v;
            break;
        case 5: {
            WANT(f, 2);
            struct meta_shard *s = GROW(g->shards, g->nshards);
            if (dec_shard(f.sub, s) != 0)
                return -1;
            break;
        }
        case 6:
            WANT(f, 0);
            g->truncated_at = (int64_t)f.v;
            g->has_truncated = 1;
            break;
        default: raw_keep(&g->raw, &f, r.p);
        }
    }
    return 0;
}

static int dec_rp(struct pb r, struct meta_rp *p)
{
    struct pb_field f;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0)
            return -1;
        switch (f.num) {
        case 1:
            WANT(f, 2);
            free(p->name);
            p->name = pb_string(&f);
            break;
        case 2:
            WANT(f, 0);
            p->duration = (int64_t)f.v;
            break;
        case 3:
            WANT(f, 0);
            p->sg_duration = (int64_t)f.v;
            break;
        case 4:
            WANT(f, 0);
            p->replica_n = (uint32_t)f.v;
            break;
        case 5: {
            WANT(f, 2);
            struct meta_sg *g = GROW(p->sgs, p->nsgs);
            if (dec_sg(f.sub, g) != 0)
                return -1;
            break;
        }
        default: raw_keep(&p->raw, &f, r.p);
        }
    }
    if (p->name == NULL)
        p->name = xstrdup("");
    return 0;
}

static int dec_db(struct pb r, struct meta_db *d)
{
    struct pb_field f;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0)
            return -1;
        switch (f.num) {
        case 1:
            WANT(f, 2);
            free(d->name);
            d->name = pb_string(&f);
            break;
        case 2:
            WANT(f, 2);
            free(d->default_rp);
            d->default_rp = pb_string(&f);
            break;
        case 3: {
            WANT(f, 2);
            struct meta_rp *p = GROW(d->rps, d->nrps);
            if (dec_rp(f.sub, p) != 0)
                return -1;
            break;
        }
        default: raw_keep(&d->raw, &f, r.p);
        }
    }
    if (d->name == NULL)
        d->name = xstrdup("");
    if (d->default_rp == NULL)
        d->default_rp = xstrdup("");
    return 0;
}

/* Raw fields are written back in field-number order among the modelled ones; an insertion
 * sort keeps repeated fields in document order (the lists are short). */
static void raws_sort(struct pb_raws *raws)
{
    for (size_t i = 1; i < raws->n; i++) {
        struct pb_raw x = raws->v[i];
        size_t j = i;
        while (j > 0 && raws->v[j - 1].field > x.field) {
            raws->v[j] = raws->v[j - 1];
            j--;
        }
        raws->v[j] = x;
    }
}

int meta_decode(const uint8_t *buf, size_t len, struct meta_data *m, struct cairn_err *err)
{
    memset(m, 0, sizeof(*m));
    struct pb r = {buf, buf + len};
    struct pb_field f;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0)
            goto bad;
        switch (f.num) {
        case 1:
            if (f.wt != 0)
                goto bad;
            m->term = f.v;
            break;
        case 2:
            if (f.wt != 0)
                goto bad;
            m->index = f.v;
            break;
        case 3:
            if (f.wt != 0)
                goto bad;
            m->cluster_id = f.v;
            break;
        case 5: {
            if (f.wt != 2)
                goto bad;
            struct meta_db *d = GROW(m->dbs, m->ndbs);
            if (dec_db(f.sub, d) != 0)
                goto bad;
            break;
        }
        case 7:
            if (f.wt != 0)
                goto bad;
            m->max_node_id = f.v;
            break;
        case 8:
            if (f.wt != 0)
                goto bad;
            m->max_sg_id = f.v;
            break;
        case 9:
            if (f.wt != 0)
                goto bad;
            m->max_shard_id = f.v;
            break;
        default: raw_keep(&m->raw, &f, r.p);
        }
    }
    raws_sort(&m->raw);
    for (size_t i = 0; i < m->ndbs; i++) {
        raws_sort(&m->dbs[i].raw);
        for (size_t j = 0; j < m->dbs[i].nrps; j++)
            raws_sort(&m->dbs[i].rps[j].raw);
    }
    return CAIRN_OK;
bad:
    meta_free(m);
    return cairn_err_set(err, CAIRN_E_CORRUPT,
                         "failed to decode meta: malformed protobuf at "
                         "byte %zu",
                         (size_t)(r.p - buf));
}

static void free_shard(struct meta_shard *s)
{
    raws_free(&s->raw);
}

static void free_sg(struct meta_sg *g)
{
    for (size_t i = 0; i < g->nshards; i++)
        free_shard(&g->shards[i]);
    free(g->shards);
    raws_free(&g->raw);
}

static void free_rp(struct meta_rp *p)
{
    for (size_t i = 0; i < p->nsgs; i++)
        free_sg(&p->sgs[i]);
    free(p->sgs);
    free(p->name);
    raws_free(&p->raw);
}

static void free_db(struct meta_db *d)
{
    for (size_t i = 0; i < d->nrps; i++)
        free_rp(&d->rps[i]);
    free(d->rps);
    free(d->name);
    free(d->default_rp);
    raws_free(&d->raw);
}

void meta_free(struct meta_data *m)
{
    for (size_t i = 0; i < m->ndbs; i++)
        free_db(&m->dbs[i]);
    free(m->dbs);
    raws_free(&m->raw);
    memset(m, 0, sizeof(*m));
}

/* ---- writer ---- */

static void put_u(struct buf *b, uint32_t num, uint64_t v)
{
    buf_add_uvarint(b, (uint64_t)num << 3);
    buf_add_uvarint(b, v);
}

static void put_bytes(struct buf *b, uint32_t num, const void *p, size_t len)
{
    buf_add_uvarint(b, (uint64_t)num << 3 | 2);
    buf_add_uvarint(b, len);
    buf_add(b, p, len);
}

static void put_sub(struct buf *b, uint32_t num, struct buf *sub)
{
    put_bytes(b, num, sub->p, sub->len);
    buf_free(sub);
}

/* Emit the raw fields numbered below `upto`, advancing *i. */
static void put_raws(struct buf *b, const struct pb_raws *raws, size_t *i, uint32_t upto)
{
    while (*i < raws->n && raws->v[*i].field < upto) {
        buf_add(b, raws->v[*i].bytes, raws->v[*i].len);
        (*i)++;
    }
}

static void enc_shard(const struct meta_shard *s, struct buf *b)
{
    size_t ri = 0;
    put_u(b, 1, s->id);
    put_raws(b, &s->raw, &ri, UINT32_MAX);
}

static void enc_sg(const struct meta_sg *g, struct buf *b)
{
    size_t ri = 0;
    put_u(b, 1, g->id);
    put_u(b, 2, (uint64_t)g->start);
    put_u(b, 3, (uint64_t)g->end);
    put_u(b, 4, (uint64_t)g->deleted_at);
    for (size_t i = 0; i < g->nshards; i++) {
        struct buf sub = {0};
        enc_shard(&g->shards[i], &sub);
        put_sub(b, 5, &sub);
    }
    if (g->has_truncated)
        put_u(b, 6, (uint64_t)g->truncated_at);
    put_raws(b, &g->raw, &ri, UINT32_MAX);
}

static void enc_rp(const struct meta_rp *p, struct buf *b)
{
    size_t ri = 0;
    put_bytes(b, 1, p->name, strlen(p->name));
    put_u(b, 2, (uint64_t)p->duration);
    put_u(b, 3, (uint64_t)p->sg_duration);
    put_u(b, 4, p->replica_n);
    for (size_t i = 0; i < p->nsgs; i++) {
        struct buf sub = {0};
        enc_sg(&p->sgs[i], &sub);
        put_sub(b, 5, &sub);
    }
    put_raws(b, &p->raw, &ri, UINT32_MAX);
}

static void enc_db(const struct meta_db *d, struct buf *b)
{
    size_t ri = 0;
    put_bytes(b, 1, d->name, strlen(d->name));
    put_bytes(b, 2, d->default_rp, strlen(d->default_rp));
    for (size_t i = 0; i < d->nrps; i++) {
        struct buf sub = {0};
        enc_rp(&d->rps[i], &sub);
        put_sub(b, 3, &sub);
    }
    put_raws(b, &d->raw, &ri, UINT32_MAX);
}

void meta_encode(const struct meta_data *m, struct buf *b)
{
    size_t ri = 0;
    put_u(b, 1, m->term);
    put_u(b, 2, m->index);
    put_u(b, 3, m->cluster_id);
    put_raws(b, &m->raw, &ri, 5); /* Nodes */
    for (size_t i = 0; i < m->ndbs; i++) {
        struct buf sub = {0};
        enc_db(&m->dbs[i], &sub);
        put_sub(b, 5, &sub);
    }
    put_raws(b, &m->raw, &ri, 7); /* Users */
    put_u(b, 7, m->max_node_id);
    put_u(b, 8, m->max_sg_id);
    put_u(b, 9, m->max_shard_id);
    put_raws(b, &m->raw, &ri, UINT32_MAX);
    if (b->p == NULL)
        buf_add(b, "", 0);
}

/* ---- queries and import ---- */

struct meta_db *meta_find_db(const struct meta_data *m, const char *name)
{
    for (size_t i = 0; i < m->ndbs; i++)
        if (strcmp(m->dbs[i].name, name) == 0)
            return &m->dbs[i];
    return NULL;
}

struct meta_rp *meta_find_rp(const struct meta_db *d, const char *name)
{
    for (size_t i = 0; i < d->nrps; i++)
        if (strcmp(d->rps[i].name, name) == 0)
            return &d->rps[i];
    return NULL;
}

int meta_find_shard(const struct meta_data *m, uint64_t id, const struct meta_db **db,
                    const struct meta_rp **rp)
{
    for (size_t i = 0; i < m->ndbs; i++)
        for (size_t j = 0; j < m->dbs[i].nrps; j++) {
            const struct meta_rp *p = &m->dbs[i].rps[j];
            for (size_t k = 0; k < p->nsgs; k++)
                for (size_t s = 0; s < p->sgs[k].nshards; s++)
                    if (p->sgs[k].shards[s].id == id) {
                        *db = &m->dbs[i];
                        *rp = p;
                        return 0;
                    }
        }
    return -1;
}

/* Copy an RP under a new name with renumbered groups and shards; no subscriptions, owners. */
static void copy_rp(struct meta_rp *dst, const struct meta_rp *src, const char *name,
                    uint64_t *max_sg, uint64_t *max_shard, struct cairn_influx_idmap *map)
{
    memset(dst, 0, sizeof(*dst));
    dst->name = xstrdup(name);
    dst->duration = src->duration;
    dst->sg_duration = src->sg_duration;
    dst->replica_n = src->replica_n;
    for (size_t k = 0; k < src->nsgs; k++) {
        const struct meta_sg *sg = &src->sgs[k];
        struct meta_sg *g = GROW(dst->sgs, dst->nsgs);
        g->id = ++*max_sg;
        g->start = sg->start;
        g->end = sg->end;
        g->deleted_at = sg->deleted_at;
        g->truncated_at = sg->truncated_at;
        g->has_truncated = sg->has_truncated;
        for (size_t s = 0; s < sg->nshards; s++) {
            struct meta_shard *sh = GROW(g->shards, g->nshards);
            sh->id = ++*max_shard;
            map->pairs = xrealloc(map->pairs, (map->n + 1) * sizeof(*map->pairs));
            map->pairs[map->n][0] = sg->shards[s].id;
            map->pairs[map->n][1] = sh->id;
            map->n++;
        }
    }
}

static void import_db(struct meta_data *dst, const struct meta_db *src, const char *name,
                      const struct meta_rp *only_rp, const char *rp_name,
                      struct cairn_influx_idmap *map)
{
    struct meta_db *d = GROW(dst->dbs, dst->ndbs);
    d->name = xstrdup(name);
    if (only_rp != NULL) {
        d->default_rp = xstrdup(rp_name);
        copy_rp(GROW(d->rps, d->nrps), only_rp, rp_name, &dst->max_sg_id, &dst->max_shard_id, map);
        return;
    }
    d->default_rp = xstrdup(src->default_rp);
    for (size_t j = 0; j < src->nrps; j++)
        copy_rp(GROW(d->rps, d->nrps), &src->rps[j], src->rps[j].name, &dst->max_sg_id,
                &dst->max_shard_id, map);
}

int meta_import(struct meta_data *dst, const struct meta_data *src,
                const struct cairn_influx_request *req, struct cairn_influx_idmap *map,
                struct cairn_err *err)
{
    /* Check every conflict first so a failure leaves dst untouched. */
    if (req->backup_db[0] != '\0') {
        const char *name = req->restore_db[0] ? req->restore_db : req->backup_db;
        const struct meta_db *sdb = meta_find_db(src, req->backup_db);
        if (sdb == NULL)
            return cairn_err_set(err, CAIRN_E_NOTFOUND,
                                 "imported metadata does not have "
                                 "database '%s'",
                                 req->backup_db);
        if (meta_find_db(dst, name) != NULL)
            return cairn_err_set(err, CAIRN_E_EXISTS, "database already exists: %s", name);
        const struct meta_rp *srp = NULL;
        const char *rp_name = NULL;
        if (req->backup_rp[0] != '\0') {
            srp = meta_find_rp(sdb, req->backup_rp);
            if (srp == NULL)
                return cairn_err_set(err, CAIRN_E_NOTFOUND,
                                     "retention policy not found in "
                                     "meta backup: %s.%s",
                                     req->backup_db, req->backup_rp);
            rp_name = req->restore_rp[0] ? req->restore_rp : req->backup_rp;
        }
        import_db(dst, sdb, name, srp, rp_name, map);
    } else {
        for (size_t i = 0; i < src->ndbs; i++)
            if (strcmp(src->dbs[i].name, "_internal") != 0 &&
                meta_find_db(dst, src->dbs[i].name) != NULL)
                return cairn_err_set(err, CAIRN_E_EXISTS, "database already exists: %s",
                                     src->dbs[i].name);
        for (size_t i = 0; i < src->ndbs; i++)
            if (strcmp(src->dbs[i].name, "_internal") != 0)
                import_db(dst, &src->dbs[i], src->dbs[i].name, NULL, NULL, map);
    }
    dst->index++;
    return CAIRN_OK;
}
