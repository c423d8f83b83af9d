/* S3 driver: the reader, HEAD then ranged GETs of one part size each. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "s3.h"

struct s3_reader {
    struct cairn_reader base;
    struct s3 *s;
    char *key;
    uint64_t size, off;
    uint8_t *buf;
    size_t blen, bpos, chunk;
    char etag[256];
};

static int s3r_read(struct cairn_reader *base, void *out, size_t cap, size_t *got,
                    struct cairn_err *err)
{
    struct s3_reader *r = (struct s3_reader *)base;
    *got = 0;
    if (r->bpos == r->blen) {
        if (r->off >= r->size)
            return CAIRN_OK;
        uint64_t want = r->size - r->off < r->chunk ? r->size - r->off : r->chunk;
        char range[96], ifm[300];
        snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)r->off,
                 (unsigned long long)(r->off + want - 1));
        struct call c = {.method = "GET",
                         .key = r->key,
                         .dst = r->buf,
                         .dst_cap = (size_t)want,
                         .cancellable = 1};
        c.hdr[0] = range;
        if (r->etag[0]) {
            snprintf(ifm, sizeof(ifm), "If-Match: %s", r->etag);
            c.hdr[1] = ifm;
        }
        int rc = s3_call(r->s, &c, err);
        if (rc == CAIRN_OK && c.body_out_len != want)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "s3 GET '%s': got %zu bytes at offset %llu, expected %llu "
                               "(object changed or truncated?)",
                               r->key, c.body_out_len, (unsigned long long)r->off,
                               (unsigned long long)want);
        if (rc == CAIRN_OK && c.status != 206 &&
            !(c.status == 200 && r->off == 0 && want == r->size))
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "s3 GET '%s': range request answered with HTTP %ld", r->key,
                               c.status);
        s3_call_done(&c);
        if (rc != CAIRN_OK)
            return rc;
        r->blen = (size_t)want;
        r->bpos = 0;
        r->off += want;
    }
    size_t n = r->blen - r->bpos < cap ? r->blen - r->bpos : cap;
    memcpy(out, r->buf + r->bpos, n);
    r->bpos += n;
    *got = n;
    return CAIRN_OK;
}

static void s3r_free(struct cairn_reader *base)
{
    struct s3_reader *r = (struct s3_reader *)base;
    free(r->buf);
    free(r->key);
    free(r);
}

static const struct cairn_reader_ops s3_reader_ops = {"s3", s3r_read, s3r_free};

int s3_read(void *state, const char *backup, const char *file, struct cairn_reader **out,
            struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *key = xasprintf("%s%s/%s", s->prefix, backup, file);
    struct call c = {.method = "HEAD", .key = key, .cancellable = 1};
    rc = s3_call(s, &c, err);
    s3_call_done(&c);
    if (rc == CAIRN_E_NOTFOUND)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "s3://%s/%s not found", s->bucket, key);
    if (rc == CAIRN_OK && c.clen < 0)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "s3 HEAD '%s': no Content-Length", key);
    if (rc != CAIRN_OK) {
        free(key);
        return rc;
    }
    struct s3_reader *r = xcalloc(1, sizeof(*r));
    cairn_reader_init(&r->base, &s3_reader_ops, NULL);
    r->s = s;
    r->key = key;
    r->size = (uint64_t)c.clen;
    r->chunk = (size_t)s->part_floor;
    r->buf = xmalloc(r->size < r->chunk ? (size_t)r->size + 1 : r->chunk);
    snprintf(r->etag, sizeof(r->etag), "%s", c.etag);
    *out = &r->base;
    return CAIRN_OK;
}

int s3_read_at(void *state, const char *backup, const char *file, uint64_t off, void *buf,
               size_t len, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK || len == 0)
        return rc;
    char *key = xasprintf("%s%s/%s", s->prefix, backup, file);
    char range[96];
    snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    struct call c = {.method = "GET", .key = key, .dst = buf, .dst_cap = len, .cancellable = 1};
    c.hdr[0] = range;
    rc = s3_call(s, &c, err);
    if (rc == CAIRN_E_NOTFOUND)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "s3://%s/%s not found", s->bucket, key);
    else if (rc == CAIRN_OK && (c.status != 206 && c.status != 200))
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "s3 GET '%s': range request answered with HTTP %ld", key, c.status);
    else if (rc == CAIRN_OK && c.body_out_len != len)
        rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                           "s3 GET '%s': got %zu bytes at offset %llu, expected %zu (truncated?)",
                           key, c.body_out_len, (unsigned long long)off, len);
    s3_call_done(&c);
    free(key);
    return rc;
}
