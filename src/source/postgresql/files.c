/* PostgreSQL: the tars of a base backup read as they stream (a push parser: the bytes come
 * from the COPY stream, not from a reader), recording each regular file's size and SHA-256 for
 * the check against backup_manifest. Memory: one header block and the table of files (a path
 * and 32 bytes per file of the cluster), never file data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "pg.h"

void pg_files_add(struct pg_files *f, const char *path, uint64_t size, const uint8_t sha[32])
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 256;
        f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
    }
    struct pg_file *e = &f->v[f->n++];
    e->path = xstrdup(path);
    e->size = size;
    memcpy(e->sha256, sha, 32);
    e->listed = 0;
    f->sorted = 0;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct pg_file *)a)->path, ((const struct pg_file *)b)->path);
}

int pg_files_seal(struct pg_files *f, const char *what, struct cairn_err *err)
{
    if (f->n > 1)
        qsort(f->v, f->n, sizeof(*f->v), by_path);
    f->sorted = 1;
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->v[i - 1].path, f->v[i].path) == 0)
            return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: '%s' is in the base backup twice", what,
                                 f->v[i].path);
    return CAIRN_OK;
}

struct pg_file *pg_files_find(struct pg_files *f, const char *path)
{
    struct pg_file key = {.path = (char *)path};
    return f->n ? bsearch(&key, f->v, f->n, sizeof(*f->v), by_path) : NULL;
}

void pg_files_free(struct pg_files *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].path);
    free(f->v);
    memset(f, 0, sizeof(*f));
}

void pg_tar_init(struct pg_tar *t, const char *what, const char *prefix, struct pg_files *files)
{
    memset(t, 0, sizeof(*t));
    t->what = what;
    snprintf(t->prefix, sizeof(t->prefix), "%s", prefix);
    t->files = files;
}

/* A numeric header field: octal, or base-256 when its top bit is set (large sizes). */
static int tar_number(const uint8_t *f, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (f[0] & 0x80) {
        for (size_t i = 1; i < n; i++) {
            if (v >> 55)
                return -1;
            v = (v << 8) | f[i];
        }
        *out = v;
        return 0;
    }
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(f[i] - '0');
    if (i < n && f[i] != '\0' && f[i] != ' ')
        return -1;
    *out = v;
    return 0;
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

/* The current regular member's last byte went by: record it. */
static void member_done(struct pg_tar *t)
{
    uint8_t d[32];
    cairn_sha256_final(&t->h, d);
    cairn_sha256_free(&t->h);
    pg_files_add(t->files, t->name, t->size, d);
    t->regular = 0;
}

/* One complete header block: the member's name, type and size. */
static int tar_header(struct pg_tar *t, struct cairn_err *err)
{
    const uint8_t *h = t->hdr;
    if (all_zero(h, 512)) {
        if (++t->zero_blocks == 2)
            t->ended = 1;
        return CAIRN_OK;
    }
    if (t->zero_blocks > 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: a member after a zero block", t->what);
    uint64_t sum = 0, want = 0;
    for (size_t i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    if (tar_number(h + 148, 8, &want) != 0 || sum != want)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: a tar header's checksum is wrong", t->what);
    if (tar_number(h + 124, 12, &t->size) != 0)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: a tar header's size is not a number",
                             t->what);
    char name[100 + 1], prefix[155 + 1];
    memcpy(name, h, 100);
    name[100] = '\0';
    prefix[0] = '\0';
    if (memcmp(h + 257, "ustar", 5) == 0) {
        memcpy(prefix, h + 345, 155);
        prefix[155] = '\0';
    }
    snprintf(t->name, sizeof(t->name), "%s%s%s%s", t->prefix, prefix, prefix[0] ? "/" : "", name);
    char type = (char)h[156];
    t->regular = type == '0' || type == '\0';
    if (!t->regular && type != '5' && type != '2')
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: member '%s' of unexpected type '%c'",
                             t->what, t->name, type >= ' ' && type < 127 ? type : '?');
    if (!t->regular)
        t->size = 0;
    t->remain = t->size;
    t->pad = (512 - t->size % 512) % 512;
    if (t->regular) {
        cairn_sha256_init(&t->h);
        if (t->size == 0)
            member_done(t);
    }
    return CAIRN_OK;
}

int pg_tar_feed(struct pg_tar *t, const uint8_t *p, size_t n, struct cairn_err *err)
{
    while (n > 0) {
        if (t->ended) {
            /* Only zero padding may follow the end marker. */
            if (!all_zero(p, n))
                return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: data after the end marker",
                                     t->what);
            return CAIRN_OK;
        }
        if (t->remain > 0) {
            size_t k = n < t->remain ? n : (size_t)t->remain;
            if (t->regular)
                cairn_sha256_update(&t->h, p, k);
            t->remain -= k, p += k, n -= k;
            if (t->remain == 0 && t->regular)
                member_done(t);
            continue;
        }
        if (t->pad > 0) {
            size_t k = n < t->pad ? n : (size_t)t->pad;
            t->pad -= k, p += k, n -= k;
            continue;
        }
        size_t k = 512 - t->hlen < n ? 512 - t->hlen : n;
        memcpy(t->hdr + t->hlen, p, k);
        t->hlen += k, p += k, n -= k;
        if (t->hlen == 512) {
            t->hlen = 0;
            int rc = tar_header(t, err);
            if (rc != CAIRN_OK)
                return rc;
        }
    }
    return CAIRN_OK;
}

int pg_tar_finish(struct pg_tar *t, struct cairn_err *err)
{
    if (!t->ended)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: the archive ended before its end marker (truncated)", t->what);
    return CAIRN_OK;
}

void pg_tar_free(struct pg_tar *t)
{
    if (t->regular)
        cairn_sha256_free(&t->h);
    t->regular = 0;
}
