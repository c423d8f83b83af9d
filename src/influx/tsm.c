/* A TSM file cut to a time window, for shard exports (request 5). Layout (tsm1/writer.go):
 *   header   magic 0x16D116D1 (u32 BE), version 1
 *   blocks   CRC-32 (u32 BE, of the block) + block: type, uvarint length of the timestamps,
 *            timestamps, values
 *   index    per key, in key order: u16 key length, key, u8 type, u16 count, then count
 *            entries of min time, max time, offset (i64 BE each) and size (u32 BE, CRC
 *            included), in time order
 *   footer   the index's offset (u64 BE)
 * Memory is bounded by one key's index entries (at most 65535) and one block: the index is
 * read a buffer at a time and the new one is kept in a temporary file until the blocks are
 * written. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "tsm.h"

#define TSM_MAGIC   0x16D116D1u
#define ENTRY_SIZE  28
#define FLUSH_AT    (1u << 20)
#define READ_BUFCAP (64u * 1024u)

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static int corrupt(struct cairn_err *err, const char *what)
{
    return cairn_err_set(err, CAIRN_E_CORRUPT, "TSM file: %s", what);
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off, struct cairn_err *err)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "read TSM file");
        if (r == 0)
            return corrupt(err, "shorter than its index says");
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return CAIRN_OK;
}

/* The index, read in order a buffer at a time. */
struct rd {
    int fd;
    uint64_t pos, end;
    uint8_t buf[READ_BUFCAP];
    size_t off, len;
};

static int rd_get(struct rd *r, void *dst, size_t n, struct cairn_err *err)
{
    uint8_t *p = dst;
    while (n > 0) {
        if (r->off == r->len) {
            uint64_t left = r->end - r->pos;
            if (left == 0)
                return corrupt(err, "index cut short");
            r->len = left < READ_BUFCAP ? (size_t)left : READ_BUFCAP;
            r->off = 0;
            int rc = pread_full(r->fd, r->buf, r->len, r->pos, err);
            if (rc != CAIRN_OK)
                return rc;
            r->pos += r->len;
        }
        size_t k = r->len - r->off < n ? r->len - r->off : n;
        memcpy(p, r->buf + r->off, k);
        r->off += k;
        p += k;
        n -= k;
    }
    return CAIRN_OK;
}

static int rd_done(const struct rd *r)
{
    return r->off == r->len && r->pos == r->end;
}

/* A buffered sequential writer that counts its position. */
struct wr {
    int fd;
    struct buf b;
    uint64_t pos;
};

static int wr_flush(struct wr *w, struct cairn_err *err)
{
    int rc = w->b.len ? write_all(w->fd, w->b.p, w->b.len, "TSM output", err) : CAIRN_OK;
    w->b.len = 0;
    return rc;
}

static int wr_add(struct wr *w, const void *p, size_t n, struct cairn_err *err)
{
    buf_add(&w->b, p, n);
    w->pos += n;
    return w->b.len >= FLUSH_AT ? wr_flush(w, err) : CAIRN_OK;
}

struct key {
    uint8_t name[65536];
    size_t len;
    uint8_t type;
    unsigned count;
    uint8_t *entries; /* count * 28 bytes, as in the file */
};

static int read_key(struct rd *r, struct key *k, struct cairn_err *err)
{
    uint8_t h[3];
    int rc = rd_get(r, h, 2, err);
    if (rc == CAIRN_OK) {
        k->len = (size_t)be(h, 2);
        rc = rd_get(r, k->name, k->len, err);
    }
    if (rc == CAIRN_OK)
        rc = rd_get(r, h, 3, err);
    if (rc != CAIRN_OK)
        return rc;
    k->type = h[0];
    k->count = (unsigned)be(h + 1, 2);
    k->entries = xrealloc(k->entries, (size_t)k->count * ENTRY_SIZE + 1);
    return rd_get(r, k->entries, (size_t)k->count * ENTRY_SIZE, err);
}

struct filter {
    int in;
    uint64_t index_at;
    int64_t start, end;
    struct wr out, idx;
    uint8_t *block;
    size_t block_cap;
    struct tsm_values t, v;
    struct buf nb; /* a block encoded again */
    uint64_t blocks;
};

/* Write a block (data without its CRC) and its index entry. */
static int put_block(struct filter *f, const uint8_t *data, size_t len, int64_t min, int64_t max,
                     struct buf *entries, struct cairn_err *err)
{
    uint8_t e[ENTRY_SIZE], crc[4];
    put_be(e, (uint64_t)min, 8);
    put_be(e + 8, (uint64_t)max, 8);
    put_be(e + 16, f->out.pos, 8);
    put_be(e + 24, len + 4, 4);
    buf_add(entries, e, sizeof(e));
    put_be(crc, libdeflate_crc32(0, data, len), 4);
    int rc = wr_add(&f->out, crc, 4, err);
    f->blocks++;
    return rc == CAIRN_OK ? wr_add(&f->out, data, len, err) : rc;
}

/* A block across the window's edges: decode, keep the values inside, encode again. */
static int cut_block(struct filter *f, uint8_t type, const uint8_t *d, size_t len,
                     struct buf *entries, struct cairn_err *err)
{
    uint64_t tslen;
    size_t a = len > 1 ? pb_uvarint(d + 1, len - 1, &tslen) : 0;
    if (a == 0 || d[0] != type || tslen > len - 1 - a)
        return corrupt(err, "block header does not match its index");
    const uint8_t *ts = d + 1 + a, *vals = ts + tslen;
    int rc = tsm_decode_times(ts, (size_t)tslen, &f->t, err);
    if (rc == CAIRN_OK)
        rc = tsm_decode_values(type, vals, len - 1 - a - (size_t)tslen, &f->v, err);
    if (rc != CAIRN_OK)
        return rc;
    if (f->v.n != f->t.n)
        return corrupt(err, "block has different numbers of times and values");
    size_t lo = 0, hi;
    while (lo < f->t.n && (int64_t)f->t.u[lo] < f->start)
        lo++;
    for (hi = lo; hi < f->t.n && (int64_t)f->t.u[hi] <= f->end;)
        hi++;
    if (lo == hi)
        return CAIRN_OK;
    f->nb.len = 0;
    struct buf tb = {0};
    tsm_encode_times(f->t.u + lo, hi - lo, &tb);
    buf_addc(&f->nb, type);
    buf_add_uvarint(&f->nb, tb.len);
    buf_add(&f->nb, tb.p, tb.len);
    buf_free(&tb);
    tsm_encode_values(type, &f->v, lo, hi, &f->nb);
    return put_block(f, f->nb.p, f->nb.len, (int64_t)f->t.u[lo], (int64_t)f->t.u[hi - 1], entries,
                     err);
}

static int filter_key(struct filter *f, const struct key *k, struct buf *entries,
                      struct cairn_err *err)
{
    entries->len = 0;
    for (unsigned i = 0; i < k->count; i++) {
        const uint8_t *e = k->entries + (size_t)i * ENTRY_SIZE;
        int64_t min = (int64_t)be(e, 8), max = (int64_t)be(e + 8, 8);
        uint64_t off = be(e + 16, 8), size = be(e + 24, 4);
        if (max < f->start || min > f->end)
            continue;
        if (size < 5 || size > TSM_MAX_BLOCK || off < 5 || off > f->index_at ||
            size > f->index_at - off)
            return corrupt(err, "index entry points outside the blocks");
        if (size > f->block_cap) {
            f->block = xrealloc(f->block, (size_t)size);
            f->block_cap = (size_t)size;
        }
        int rc = pread_full(f->in, f->block, (size_t)size, off, err);
        if (rc != CAIRN_OK)
            return rc;
        if (be(f->block, 4) != libdeflate_crc32(0, f->block + 4, (size_t)size - 4))
            return corrupt(err, "block checksum mismatch");
        rc = min >= f->start && max <= f->end
                 ? put_block(f, f->block + 4, (size_t)size - 4, min, max, entries, err)
                 : cut_block(f, k->type, f->block + 4, (size_t)size - 4, entries, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    if (entries->len == 0)
        return CAIRN_OK;
    uint8_t h[3];
    put_be(h, k->len, 2);
    int rc = wr_add(&f->idx, h, 2, err);
    if (rc == CAIRN_OK)
        rc = wr_add(&f->idx, k->name, k->len, err);
    h[0] = k->type;
    put_be(h + 1, entries->len / ENTRY_SIZE, 2);
    if (rc == CAIRN_OK)
        rc = wr_add(&f->idx, h, 3, err);
    return rc == CAIRN_OK ? wr_add(&f->idx, entries->p, entries->len, err) : rc;
}

/* Header and footer: the index's extent in in. */
static int index_extent(int in, uint64_t *at, uint64_t *end, struct cairn_err *err)
{
    struct stat st;
    if (fstat(in, &st) != 0)
        return cairn_err_sys(err, CAIRN_E_IO, errno, "stat TSM file");
    uint64_t size = (uint64_t)st.st_size;
    uint8_t h[8];
    if (size < 5 + 8)
        return corrupt(err, "too short");
    int rc = pread_full(in, h, 5, 0, err);
    if (rc != CAIRN_OK)
        return rc;
    if (be(h, 4) != TSM_MAGIC || h[4] != 1)
        return corrupt(err, "not a TSM file (magic or version)");
    if ((rc = pread_full(in, h, 8, size - 8, err)) != CAIRN_OK)
        return rc;
    *at = be(h, 8);
    *end = size - 8;
    if (*at < 5 || *at > *end)
        return corrupt(err, "index offset outside the file");
    return CAIRN_OK;
}

/* The first pass: the file's time range from its index. */
static int time_range(int in, uint64_t at, uint64_t end, struct key *k, int64_t *min, int64_t *max,
                      uint64_t *n, struct cairn_err *err)
{
    struct rd *r = xcalloc(1, sizeof(*r));
    r->fd = in;
    r->pos = at;
    r->end = end;
    int rc = CAIRN_OK;
    *n = 0;
    while (rc == CAIRN_OK && !rd_done(r)) {
        rc = read_key(r, k, err);
        for (unsigned i = 0; rc == CAIRN_OK && i < k->count; i++, (*n)++) {
            int64_t a = (int64_t)be(k->entries + (size_t)i * ENTRY_SIZE, 8);
            int64_t b = (int64_t)be(k->entries + (size_t)i * ENTRY_SIZE + 8, 8);
            if (*n == 0 || a < *min)
                *min = a;
            if (*n == 0 || b > *max)
                *max = b;
        }
    }
    free(r);
    return rc;
}

/* The new index after the blocks, then the footer. */
static int finish(struct filter *f, struct cairn_err *err)
{
    uint64_t index_at = f->out.pos;
    int rc = wr_flush(&f->idx, err);
    if (rc == CAIRN_OK && lseek(f->idx.fd, 0, SEEK_SET) != 0)
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "rewind the TSM index");
    for (uint64_t left = f->idx.pos; rc == CAIRN_OK && left > 0;) {
        size_t got, want = left < READ_BUFCAP ? (size_t)left : READ_BUFCAP;
        uint8_t *tmp = xmalloc(want);
        rc = read_all(f->idx.fd, tmp, want, &got, "TSM index", err);
        if (rc == CAIRN_OK && got != want)
            rc = corrupt(err, "temporary index shrank");
        if (rc == CAIRN_OK)
            rc = wr_add(&f->out, tmp, want, err);
        free(tmp);
        left -= want;
    }
    uint8_t foot[8];
    put_be(foot, index_at, 8);
    if (rc == CAIRN_OK)
        rc = wr_add(&f->out, foot, 8, err);
    return rc == CAIRN_OK ? wr_flush(&f->out, err) : rc;
}

int tsm_filter(int in, int out, int64_t start, int64_t end, const char *tmpdir,
               enum tsm_verdict *verdict, uint64_t *out_size, struct cairn_err *err)
{
    uint64_t at = 0, iend = 0, n = 0;
    int64_t min = 0, max = 0;
    *out_size = 0;
    struct key *k = xcalloc(1, sizeof(*k));
    int rc = index_extent(in, &at, &iend, err);
    if (rc == CAIRN_OK)
        rc = time_range(in, at, iend, k, &min, &max, &n, err);
    if (rc != CAIRN_OK || n == 0 || max < start || min > end || (min >= start && max <= end)) {
        *verdict = n == 0 || max < start || min > end ? TSM_DROP : TSM_KEEP_WHOLE;
        free(k->entries);
        free(k);
        return rc;
    }
    struct filter *f = xcalloc(1, sizeof(*f));
    f->in = in;
    f->index_at = at;
    f->start = start;
    f->end = end;
    f->out.fd = out;
    f->idx.fd = -1;
    struct rd *r = xcalloc(1, sizeof(*r));
    r->fd = in;
    r->pos = at;
    r->end = iend;
    struct buf entries = {0};
    uint8_t hdr[5] = {0x16, 0xd1, 0x16, 0xd1, 1};
    rc = tmpfile_open(tmpdir, &f->idx.fd, err);
    if (rc == CAIRN_OK)
        rc = wr_add(&f->out, hdr, 5, err);
    while (rc == CAIRN_OK && !rd_done(r)) {
        rc = read_key(r, k, err);
        if (rc == CAIRN_OK)
            rc = filter_key(f, k, &entries, err);
    }
    if (rc == CAIRN_OK && f->blocks > 0)
        rc = finish(f, err);
    *verdict = f->blocks > 0 ? TSM_FILTERED : TSM_DROP;
    *out_size = f->out.pos;
    if (f->idx.fd >= 0)
        close(f->idx.fd);
    buf_free(&f->out.b);
    buf_free(&f->idx.b);
    buf_free(&f->nb);
    buf_free(&entries);
    tsm_values_free(&f->t);
    tsm_values_free(&f->v);
    free(f->block);
    free(f);
    free(r);
    free(k->entries);
    free(k);
    return rc;
}
