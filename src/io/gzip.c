/* gzip stages. Writing: libdeflate compresses independent blocks in parallel, each becoming a
 * gzip member (libdeflate is 2-3x faster than zlib at the same ratio and members parallelise).
 * Reading: zlib inflate, because libdeflate cannot stream; multistream, with Go's messages. */
#include <libdeflate.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cairn/io.h"
#include "common/pool.h"
#include "common/util.h"
#include "io/probe.h"

#define GZ_BLOCK (1u << 20)
/* Incompressible-block probe: GZ_PROBE samples spread across the block (io/probe.h). */
#define GZ_PROBE 4

struct gz_slot {
    struct gzip_writer *gz;
    struct libdeflate_compressor *c;
    struct io_probe *probe;              /* the deflate -1 trial */
    struct libdeflate_compressor *store; /* level 0: stored blocks */
    uint8_t *in, *out;
    size_t in_len, out_len, out_cap;
    int busy; /* submitted, result not yet collected */
    int done; /* compression finished */
};

struct gzip_writer {
    struct cairn_writer base;
    struct pool *pool; /* NULL: compress inline */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gz_slot *slots;
    unsigned nslots;
    unsigned head;  /* oldest submitted slot */
    unsigned count; /* submitted, not yet written out */
    int wrote_member;
};

/* Random or already-compressed blocks cost a level-6 deflate its full match search for
 * nothing (about 14 ms per MiB, as long as text). The library's compression trial
 * (IO_PROBE_DEFLATE: deflate -1 must save 1/32 of a sample) spots them, and they are written as
 * stored blocks (what deflate would emit for them anyway). The first sample decides for
 * compressible data, so text pays one 16 KiB trial per MiB. */
static int gz_incompressible(struct gz_slot *s)
{
    if (s->in_len < GZ_BLOCK)
        return 0;
    for (unsigned i = 0; i < GZ_PROBE; i++)
        if (io_probe_pays(s->probe, s->in + (size_t)i * (GZ_BLOCK / GZ_PROBE),
                          IO_PROBE_DEFLATE_SAMPLE))
            return 0;
    return 1;
}

static void gz_compress(struct gz_slot *s)
{
    struct libdeflate_compressor *c = gz_incompressible(s) ? s->store : s->c;
    s->out_len = libdeflate_gzip_compress(c, s->in, s->in_len, s->out, s->out_cap);
    /* libdeflate sets XFL from the level; Go writes 0 and the header is not checksummed. */
    if (s->out_len >= 10)
        s->out[8] = 0;
}

static void gz_job(void *arg)
{
    struct gz_slot *s = arg;
    gz_compress(s);
    pthread_mutex_lock(&s->gz->mu);
    s->done = 1;
    pthread_cond_broadcast(&s->gz->cv);
    pthread_mutex_unlock(&s->gz->mu);
}

/* Wait for the oldest slot and write its member out. */
static int gz_collect(struct gzip_writer *g, struct cairn_err *err)
{
    struct gz_slot *s = &g->slots[g->head];
    pthread_mutex_lock(&g->mu);
    while (!s->done)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    g->head = (g->head + 1) % g->nslots;
    g->count--;
    s->busy = 0;
    s->done = 0;
    s->in_len = 0;
    if (s->out_len == 0)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "gzip: compressed block overflow");
    g->wrote_member = 1;
    return cairn_writer_write(g->base.next, s->out, s->out_len, err);
}

static struct gz_slot *gz_fill_slot(struct gzip_writer *g)
{
    return &g->slots[(g->head + g->count) % g->nslots];
}

static int gz_submit(struct gzip_writer *g, struct cairn_err *err)
{
    struct gz_slot *s = gz_fill_slot(g);
    s->busy = 1;
    g->count++;
    if (g->pool == NULL) {
        gz_compress(s);
        s->done = 1;
        return gz_collect(g, err);
    }
    pool_submit(g->pool, gz_job, s);
    if (g->count == g->nslots)
        return gz_collect(g, err);
    return CAIRN_OK;
}

static int gzip_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct gzip_writer *g = (struct gzip_writer *)w;
    const uint8_t *p = buf;
    while (len > 0) {
        struct gz_slot *s = gz_fill_slot(g);
        size_t n = GZ_BLOCK - s->in_len < len ? GZ_BLOCK - s->in_len : len;
        memcpy(s->in + s->in_len, p, n);
        s->in_len += n;
        p += n;
        len -= n;
        if (s->in_len == GZ_BLOCK) {
            int rc = gz_submit(g, err);
            if (rc != CAIRN_OK)
                return rc;
        }
    }
    return CAIRN_OK;
}

static int gzip_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct gzip_writer *g = (struct gzip_writer *)w;
    /* The last partial block; an empty stream still needs one (empty) member. */
    if (gz_fill_slot(g)->in_len > 0 || (!g->wrote_member && g->count == 0)) {
        int rc = gz_submit(g, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    while (g->count > 0) {
        int rc = gz_collect(g, err);
        if (rc != CAIRN_OK)
            return rc;
    }
    return CAIRN_OK;
}

static void gzip_writer_free(struct cairn_writer *w)
{
    struct gzip_writer *g = (struct gzip_writer *)w;
    pool_free(g->pool); /* waits for in-flight blocks before their buffers go */
    for (unsigned i = 0; i < g->nslots; i++) {
        libdeflate_free_compressor(g->slots[i].c);
        io_probe_free(g->slots[i].probe);
        libdeflate_free_compressor(g->slots[i].store);
        free(g->slots[i].in);
        free(g->slots[i].out);
    }
    free(g->slots);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static const struct cairn_writer_ops gzip_writer_ops = {"gzip", gzip_write, gzip_finish,
                                                        gzip_writer_free};

struct cairn_writer *cairn_gzip_writer_new(struct cairn_writer *next, int level, int threads)
{
    if (level < 1 || level > 12)
        level = 6;
    if (threads <= 0)
        threads = (int)cpu_count();
    struct gzip_writer *g = xcalloc(1, sizeof(*g));
    cairn_writer_init(&g->base, &gzip_writer_ops, next);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    /* One slot per worker plus one being filled keeps every worker busy. */
    g->nslots = threads > 1 ? (unsigned)threads + 1 : 1;
    g->slots = xcalloc(g->nslots, sizeof(*g->slots));
    for (unsigned i = 0; i < g->nslots; i++) {
        struct gz_slot *s = &g->slots[i];
        s->gz = g;
        s->c = libdeflate_alloc_compressor(level);
        s->probe = io_probe_new(IO_PROBE_DEFLATE);
        s->store = libdeflate_alloc_compressor(0);
        if (s->c == NULL || s->store == NULL)
            abort();
        s->out_cap = libdeflate_gzip_compress_bound(s->c, GZ_BLOCK);
        s->in = xmalloc(GZ_BLOCK);
        s->out = xmalloc(s->out_cap);
    }
    if (threads > 1)
        g->pool = pool_new((unsigned)threads, g->nslots);
    return &g->base;
}

/* ---- reader ---- */

struct gzip_reader {
    struct cairn_reader base;
    z_stream zs;
    uint8_t *in;
    size_t in_cap;
    int src_eof;
    int in_member; /* inside a member: inflate owns the bytes */
    int members;
};

/* Make at least want bytes available at zs.next_in (fewer only at EOF). */
static int gz_fill(struct gzip_reader *g, size_t want, struct cairn_err *err)
{
    while (g->zs.avail_in < want && !g->src_eof) {
        if (g->zs.avail_in > 0 && g->zs.next_in != g->in)
            memmove(g->in, g->zs.next_in, g->zs.avail_in);
        g->zs.next_in = g->in;
        size_t got;
        int rc = cairn_reader_read(g->base.next, g->in + g->zs.avail_in, g->in_cap - g->zs.avail_in,
                                   &got, err);
        if (rc != CAIRN_OK)
            return rc;
        if (got == 0)
            g->src_eof = 1;
        g->zs.avail_in += (uInt)got;
    }
    return CAIRN_OK;
}

static int gzip_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                     struct cairn_err *err)
{
    struct gzip_reader *g = (struct gzip_reader *)r;
    int rc;
    for (;;) {
        if (!g->in_member) {
            /* Between members: EOF ends the stream, anything else must be a gzip header. */
            if ((rc = gz_fill(g, 10, err)) != CAIRN_OK)
                return rc;
            if (g->zs.avail_in == 0) {
                if (g->members == 0)
                    return cairn_err_set(err, CAIRN_E_CORRUPT, "EOF");
                *got = 0;
                return CAIRN_OK;
            }
            if (g->zs.avail_in < 10)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "unexpected EOF");
            if (g->zs.next_in[0] != 0x1f || g->zs.next_in[1] != 0x8b || g->zs.next_in[2] != 8)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "gzip: invalid header");
            if (inflateReset2(&g->zs, 15 + 16) != Z_OK)
                return cairn_err_set(err, CAIRN_E_INTERNAL, "zlib: inflateReset2 failed");
            g->in_member = 1;
            g->members++;
        }
        if (g->zs.avail_in == 0 && (rc = gz_fill(g, 1, err)) != CAIRN_OK)
            return rc;
        g->zs.next_out = buf;
        g->zs.avail_out = (uInt)(cap > (1u << 30) ? (1u << 30) : cap);
        uInt before = g->zs.avail_out;
        int zr = inflate(&g->zs, Z_NO_FLUSH);
        size_t produced = before - g->zs.avail_out;
        if (zr == Z_STREAM_END) {
            g->in_member = 0;
        } else if (zr == Z_DATA_ERROR) {
            const char *m = g->zs.msg ? g->zs.msg : "";
            if (strstr(m, "check") != NULL) /* "incorrect data/length check" */
                return cairn_err_set(err, CAIRN_E_CORRUPT, "gzip: invalid checksum");
            if (strstr(m, "header") != NULL)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "gzip: invalid header");
            return cairn_err_set(err, CAIRN_E_CORRUPT, "flate: corrupt input (%s)", m);
        } else if (zr == Z_MEM_ERROR) {
            return cairn_err_set(err, CAIRN_E_NOMEM, "zlib: out of memory");
        } else if (zr == Z_BUF_ERROR || zr == Z_OK) {
            if (produced == 0 && g->zs.avail_in == 0 && g->src_eof)
                return cairn_err_set(err, CAIRN_E_CORRUPT, "unexpected EOF");
        } else {
            return cairn_err_set(err, CAIRN_E_CORRUPT, "zlib: inflate error %d", zr);
        }
        if (produced > 0) {
            *got = produced;
            return CAIRN_OK;
        }
    }
}

static void gzip_reader_free(struct cairn_reader *r)
{
    struct gzip_reader *g = (struct gzip_reader *)r;
    inflateEnd(&g->zs);
    free(g->in);
    free(g);
}

/* What inflate (and the member header checks) took in: not the unused rest of the buffer. */
static uint64_t gzip_reader_consumed(const struct cairn_reader *r)
{
    const struct gzip_reader *g = (const struct gzip_reader *)r;
    return r->next->bytes - g->zs.avail_in;
}

static const struct cairn_reader_ops gzip_reader_ops = {"gzip", gzip_read, gzip_reader_free,
                                                        gzip_reader_consumed};

struct cairn_reader *cairn_gzip_reader_new(struct cairn_reader *src)
{
    struct gzip_reader *g = xcalloc(1, sizeof(*g));
    cairn_reader_init(&g->base, &gzip_reader_ops, src);
    g->in_cap = CAIRN_IO_BUFSIZE;
    g->in = xmalloc(g->in_cap);
    g->zs.next_in = g->in;
    if (inflateInit2(&g->zs, 15 + 16) != Z_OK)
        abort();
    return &g->base;
}
