/* libFuzzer target: the tar layer (src/archive/tar.c) on arbitrary input, as the snapshot reads
 * it (exact: never past the end marker) and as the shard streams read it (read-ahead, whole
 * padding, through influx_tar_each). Nothing may crash, leak or read out of bounds; the exact
 * reader never takes more than the input; every member read back is written again and must
 * read back with the same name and mtime. */
#include <stdlib.h>
#include <string.h>

#include "archive/tar.h"
#include "cairn/io.h"
#include "influx/internal.h"

/* A source that counts what it hands out, a few bytes at a time to vary the buffer edges. */
struct src {
    struct cairn_reader base;
    const uint8_t *p;
    size_t len, off;
};

static int src_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                    struct cairn_err *err)
{
    (void)err;
    struct src *s = (struct src *)r;
    size_t n = s->len - s->off;
    if (n > cap)
        n = cap;
    if (n > 4093)
        n = 4093;
    memcpy(buf, s->p + s->off, n);
    s->off += n;
    *got = n;
    return CAIRN_OK;
}

static const struct cairn_reader_ops src_ops = {"fuzz", src_read, NULL};

/* Write a member named like e and read it back: the writer and the reader must agree. */
static void round_trip(const struct tar_entry *e)
{
    struct cairn_err err;
    struct cairn_writer *w = cairn_mem_writer_new(4u << 20);
    struct tar_writer t;
    tar_writer_init(&t, w, 0);
    struct tar_member m = {e->name, 0, e->mtime, 0644, "root", "root"};
    if (tar_writer_add(&t, &m, &err) != CAIRN_OK || tar_writer_end(&t, &err) != CAIRN_OK ||
        tar_writer_finish(&t, &err) != CAIRN_OK) {
        if (strlen(e->name) < 1000)
            abort(); /* only an over-long PAX record may be refused */
        cairn_writer_free(w);
        return;
    }
    size_t len;
    const uint8_t *p = cairn_mem_writer_data(w, &len);
    struct cairn_reader *r = cairn_mem_reader_new(p, len);
    struct tar_reader *back = tar_reader_new(r, 0);
    const struct tar_entry *b;
    if (tar_reader_next(back, &b, &err) != CAIRN_OK || b == NULL ||
        (e->name[0] != 0 && strcmp(b->name, e->name) != 0) || b->mtime != e->mtime || b->size != 0)
        abort();
    tar_reader_free(back);
    cairn_reader_free(r);
    cairn_writer_free(w);
}

static void read_exact(const uint8_t *data, size_t size)
{
    struct src s = {.p = data, .len = size};
    cairn_reader_init(&s.base, &src_ops, NULL);
    struct tar_reader *t = tar_reader_new(&s.base, 0);
    struct cairn_err err;
    const struct tar_entry *e;
    uint8_t buf[8192];
    int members = 0;
    while (tar_reader_next(t, &e, &err) == CAIRN_OK && e != NULL) {
        size_t got;
        uint64_t total = 0;
        int rc;
        while ((rc = tar_reader_read(t, buf, sizeof(buf), &got, &err)) == CAIRN_OK && got > 0)
            total += got;
        if (rc == CAIRN_OK && total != e->size)
            abort();
        if (members++ < 4 && strchr(e->name, '/') != NULL)
            round_trip(e);
    }
    if (s.off > size)
        abort();
    tar_reader_free(t);
}

static int drain(void *ctx, const char *name, int64_t mtime, uint64_t size,
                 struct cairn_reader *data, struct cairn_err *err)
{
    (void)ctx, (void)name, (void)mtime;
    uint8_t buf[8192];
    uint64_t total = 0;
    size_t got;
    int rc;
    while ((rc = cairn_reader_read(data, buf, sizeof(buf), &got, err)) == CAIRN_OK && got > 0)
        total += got;
    if (rc == CAIRN_OK && total != size)
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_exact(data, size);
    struct cairn_err err;
    struct cairn_reader *r = cairn_mem_reader_new(data, size);
    (void)influx_tar_each(r, drain, NULL, &err);
    cairn_reader_free(r);
    return 0;
}
