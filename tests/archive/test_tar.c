/* The tar layer as the shard streams use it (archive/tar.h): headers Go's archive/tar writes
 * for a regular file with owner names, long and non-ASCII names and out-of-range mtimes; the
 * reader's modes (exact, read-ahead, whole padding) and what it hands back for a refused
 * sparse member. The snapshot's own members are covered in test_snapshot.c and test_table.c. */
#include "helpers.h"

static const uint8_t zero512[512];

/* A source that counts its reads and hands out at most `chunk` bytes at a time. */
struct count_reader {
    struct cairn_reader base;
    const uint8_t *p;
    size_t len, off, chunk;
    unsigned reads;
};

static int count_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                      struct cairn_err *err)
{
    (void)err;
    struct count_reader *c = (struct count_reader *)r;
    size_t n = c->len - c->off;
    if (n > cap)
        n = cap;
    if (c->chunk && n > c->chunk)
        n = c->chunk;
    memcpy(buf, c->p + c->off, n);
    c->off += n;
    c->reads++;
    *got = n;
    return CAIRN_OK;
}

static const struct cairn_reader_ops count_ops = {"count", count_read, NULL};

static void count_init(struct count_reader *c, const void *p, size_t len)
{
    memset(c, 0, sizeof(*c));
    cairn_reader_init(&c->base, &count_ops, NULL);
    c->p = p;
    c->len = len;
}

/* Write one member of size len (data 'a'..) with m's fields and the end marker into out. */
static void write_one(struct bytes *out, const struct tar_member *m)
{
    struct cairn_err err;
    struct cairn_writer *w = capture_new(out);
    struct tar_writer t;
    tar_writer_init(&t, w, 0);
    CHECK_OK(tar_writer_add(&t, m, &err), &err);
    for (uint64_t i = 0; i < m->size; i++) {
        uint8_t c = (uint8_t)('a' + i % 26);
        CHECK_OK(tar_writer_data(&t, &c, 1, &err), &err);
    }
    CHECK_OK(tar_writer_end(&t, &err), &err);
    CHECK_OK(tar_writer_finish(&t, &err), &err);
    cairn_writer_free(w);
}

/* Read back the single member of a stream: its name, mtime and size. */
static void read_one(const struct bytes *in, const char *name, int64_t mtime, uint64_t size)
{
    struct cairn_err err;
    struct cairn_reader *r = cairn_mem_reader_new(in->p, in->len);
    struct tar_reader *t = tar_reader_new(r, 0);
    const struct tar_entry *e;
    CHECK_OK(tar_reader_next(t, &e, &err), &err);
    CHECK(e != NULL);
    if (e != NULL) {
        CHECK_EQ_STR(e->name, name);
        CHECK_EQ_INT(e->mtime, mtime);
        CHECK_EQ_INT(e->size, size);
        CHECK_EQ_INT(e->typeflag, '0');
    }
    CHECK_OK(tar_reader_next(t, &e, &err), &err);
    CHECK(e == NULL);
    tar_reader_free(t);
    cairn_reader_free(r);
}

TEST(shard_member_header_is_go_archive_tar)
{
    /* Go: tw.WriteHeader(&tar.Header{Name: n, Mode: 0644, Size: 3, ModTime: time.Unix(
     * 1700000000, 0), Uname: "root", Gname: "root"}) */
    struct tar_member m = {"db/rp/1/000000001-000000001.tsm", 3, 1700000000, 0644, "root", "root"};
    struct bytes out = {0};
    write_one(&out, &m);
    CHECK_EQ_INT(out.len, 512 + 512 + 1024);
    const uint8_t *h = out.p;
    CHECK(strcmp((const char *)h, m.name) == 0);
    CHECK(memcmp(h + 100, "0000644\0", 8) == 0);
    CHECK(memcmp(h + 108, "0000000\0", 8) == 0);
    CHECK(memcmp(h + 116, "0000000\0", 8) == 0);
    CHECK(memcmp(h + 124, "00000000003\0", 12) == 0);
    CHECK(memcmp(h + 136, "14524770400\0", 12) == 0);
    CHECK(h[156] == '0');
    CHECK(memcmp(h + 257,
                 "ustar\0"
                 "00",
                 8) == 0);
    CHECK(memcmp(h + 265, "root\0", 5) == 0);
    CHECK(memcmp(h + 297, "root\0", 5) == 0);
    CHECK(memcmp(h + 329, "0000000\0", 8) == 0);
    CHECK(memcmp(h + 337, "0000000\0", 8) == 0);
    for (int i = 345; i < 512; i++)
        CHECK(h[i] == 0);
    uint8_t copy[512];
    memcpy(copy, h, 512);
    reheader_checksum(copy);
    CHECK(memcmp(copy + 148, h + 148, 8) == 0);
    CHECK(memcmp(out.p + 512, "abc", 3) == 0);
    CHECK(memcmp(out.p + out.len - 1024, zero512, 512) == 0);
    read_one(&out, m.name, 1700000000, 3);
    bytes_free(&out);
}

TEST(long_name_splits_into_prefix_as_go_does)
{
    /* 120 bytes with a '/' that leaves 100 or fewer for the name: USTAR prefix + name */
    char name[200];
    snprintf(name, sizeof(name), "db/%s/7/%s", "r_________________________________________",
             "000000001-000000001.tsm_______________________________________________");
    CHECK(strlen(name) > 100);
    struct tar_member m = {name, 1, 1700000000, 0644, "root", "root"};
    struct bytes out = {0};
    write_one(&out, &m);
    CHECK_EQ_INT(out.len, 512 + 512 + 1024); /* no PAX member */
    const char *cut = strrchr(name, '/');
    CHECK(strcmp((const char *)out.p, cut + 1) == 0);
    CHECK(strncmp((const char *)out.p + 345, name, (size_t)(cut - name)) == 0);
    CHECK(out.p[345 + (cut - name)] == 0);
    read_one(&out, name, 1700000000, 1);
    bytes_free(&out);
}

TEST(unsplittable_and_non_ascii_names_get_a_pax_path)
{
    /* a 130-byte final part cannot be split: PAX "path", the header name cut to 100 bytes */
    char name[200];
    memset(name, 'x', sizeof(name));
    memcpy(name, "db/rp/1/", 8);
    name[8 + 130] = 0;
    struct tar_member m = {name, 2, 1700000000, 0644, "root", "root"};
    struct bytes out = {0};
    write_one(&out, &m);
    const uint8_t *x = out.p;
    CHECK(x[156] == 'x');
    CHECK(memcmp(x, "db/rp/1/PaxHeaders.0/", 21) == 0);
    CHECK(x[99] == 'x'); /* dir/PaxHeaders.0/file cut to 100 bytes, no NUL */
    CHECK(memcmp(x + 100, "0000000\0", 8) == 0);
    CHECK(memcmp(x + 136, "00000000000\0", 12) == 0);
    char rec[300];
    int n = snprintf(rec, sizeof(rec), "148 path=%s\n", name);
    CHECK_EQ_INT(n, 148);
    char sz[16];
    snprintf(sz, sizeof(sz), "%011o", n);
    CHECK(memcmp(x + 124, sz, 12) == 0);
    CHECK(memcmp(out.p + 512, rec, (size_t)n) == 0);
    const uint8_t *h = out.p + 1024;
    CHECK(memcmp(h, name, 100) == 0);
    CHECK(memcmp(h + 100, "0000644\0", 8) == 0);
    CHECK(memcmp(h + 265, "root\0", 5) == 0);
    read_one(&out, name, 1700000000, 2);
    bytes_free(&out);

    /* non-ASCII: PAX path, the header name without the non-ASCII bytes */
    const char *u = "db/rp/1/f\xc3\xa9.tsm";
    struct tar_member mu = {u, 1, 1700000000, 0644, "root", "root"};
    write_one(&out, &mu);
    CHECK(out.p[156] == 'x');
    CHECK(strcmp((const char *)out.p, "db/rp/1/PaxHeaders.0/f.tsm") == 0);
    CHECK(memcmp(out.p + 512, "24 path=db/rp/1/f\xc3\xa9.tsm\n", 24) == 0);
    CHECK(strcmp((const char *)out.p + 1024, "db/rp/1/f.tsm") == 0);
    read_one(&out, u, 1700000000, 1);
    bytes_free(&out);
}

TEST(mtime_out_of_octal_range_goes_in_pax_records_sorted)
{
    /* negative mtime and a name needing PAX: records mtime, path (Go sorts the keys) */
    char name[160];
    memset(name, 'y', sizeof(name));
    name[150] = 0;
    struct tar_member m = {name, 0, -5, 0644, "root", "root"};
    struct bytes out = {0};
    write_one(&out, &m);
    CHECK(out.p[156] == 'x');
    CHECK(memcmp(out.p + 512, "12 mtime=-5\n", 12) == 0);
    CHECK(memcmp(out.p + 512 + 12, "160 path=", 9) == 0);
    CHECK(memcmp(out.p + 1024 + 136, "00000000000\0", 12) == 0);
    read_one(&out, name, -5, 0);
    bytes_free(&out);

    /* an mtime past 8^11 - 1 seconds with a short name: PAX mtime only */
    struct tar_member big = {"f", 0, 077777777777LL + 1, 0600, NULL, NULL};
    write_one(&out, &big);
    CHECK(strcmp((const char *)out.p, "PaxHeaders.0/f") == 0);
    CHECK(memcmp(out.p + 512, "20 mtime=8589934592\n", 20) == 0);
    read_one(&out, "f", 077777777777LL + 1, 0);
    bytes_free(&out);
}

/* Three members of 100 bytes, the end marker, then trailing bytes. */
static struct bytes three_members(void)
{
    struct bytes t = {0};
    char d[100];
    memset(d, 'd', sizeof(d));
    tar_add(&t, "a", '0', d, sizeof(d), NULL);
    tar_add(&t, "b", '0', d, sizeof(d), NULL);
    tar_add(&t, "c", '0', d, sizeof(d), NULL);
    tar_zero_blocks(&t, 2);
    bytes_str(&t, "trailing bytes after the end marker");
    return t;
}

static void drain(struct tar_reader *t, int *members)
{
    struct cairn_err err;
    const struct tar_entry *e;
    uint8_t buf[64];
    *members = 0;
    while (tar_reader_next(t, &e, &err) == CAIRN_OK && e != NULL) {
        size_t got;
        while (tar_reader_read(t, buf, sizeof(buf), &got, &err) == CAIRN_OK && got > 0)
            ;
        ++*members;
    }
}

TEST(exact_reader_leaves_what_follows_the_end_marker)
{
    struct bytes t = three_members();
    size_t tar_len = t.len - strlen("trailing bytes after the end marker");
    struct count_reader c;
    count_init(&c, t.p, t.len);
    struct tar_reader *r = tar_reader_new(&c.base, 0);
    int n;
    drain(r, &n);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c.off, tar_len); /* nothing after the marker was taken */
    /* one read per member (data, padding and the next header), plus the first header and the
     * marker's second block */
    CHECK(c.reads <= 5);
    tar_reader_free(r);

    /* read-ahead takes it all in one read; the members are the same */
    count_init(&c, t.p, t.len);
    r = tar_reader_new(&c.base, TAR_READ_AHEAD);
    drain(r, &n);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c.off, t.len);
    CHECK(c.reads <= 2);
    tar_reader_free(r);

    /* a source handing out 7 bytes at a time gives the same result */
    count_init(&c, t.p, t.len);
    c.chunk = 7;
    r = tar_reader_new(&c.base, 0);
    drain(r, &n);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(c.off, tar_len);
    tar_reader_free(r);
    bytes_free(&t);
}

TEST(stream_cut_in_padding_ends_or_fails_by_flag)
{
    struct bytes t = three_members();
    size_t cut = 512 + 100 + 50; /* inside the first member's padding */
    struct cairn_err err;
    const struct tar_entry *e;
    struct cairn_reader *src = cairn_mem_reader_new(t.p, cut);
    struct tar_reader *r = tar_reader_new(src, 0);
    CHECK_OK(tar_reader_next(r, &e, &err), &err);
    CHECK(e != NULL);
    CHECK_OK(tar_reader_next(r, &e, &err), &err); /* Go: a normal end */
    CHECK(e == NULL);
    tar_reader_free(r);
    cairn_reader_free(src);

    src = cairn_mem_reader_new(t.p, cut);
    r = tar_reader_new(src, TAR_READ_AHEAD | TAR_READ_WHOLE_PADDING);
    CHECK_OK(tar_reader_next(r, &e, &err), &err);
    CHECK(e != NULL);
    CHECK_ERR(tar_reader_next(r, &e, &err), CAIRN_E_CORRUPT, &err, TAR_ERR_UNEXPECTED_EOF);
    tar_reader_free(r);
    cairn_reader_free(src);

    /* cut inside the data: unexpected EOF either way */
    src = cairn_mem_reader_new(t.p, 512 + 60);
    r = tar_reader_new(src, TAR_READ_AHEAD);
    CHECK_OK(tar_reader_next(r, &e, &err), &err);
    uint8_t buf[200];
    size_t got, total = 0;
    int rc;
    while ((rc = tar_reader_read(r, buf, sizeof(buf), &got, &err)) == CAIRN_OK && got > 0)
        total += got;
    CHECK_EQ_INT(rc, CAIRN_E_CORRUPT);
    CHECK_EQ_INT(total, 60);
    tar_reader_free(r);
    cairn_reader_free(src);
    bytes_free(&t);
}

static void old_gnu_sparse(uint8_t *blk)
{
    blk[156] = 'S';
    memcpy(blk + 257, "ustar  \0", 8);
    snprintf((char *)blk + 483, 12, "%011llo", 4ull << 30);
}

TEST(refused_sparse_member_is_named_with_its_declared_size)
{
    struct bytes t = {0};
    tar_add(&t, "db/rp/1/bomb.tsm", '0', "tail", 4, old_gnu_sparse);
    tar_zero_blocks(&t, 2);
    struct cairn_err err;
    const struct tar_entry *e;
    struct cairn_reader *src = cairn_mem_reader_new(t.p, t.len);
    struct tar_reader *r = tar_reader_new(src, TAR_READ_AHEAD);
    CHECK_ERR(tar_reader_next(r, &e, &err), CAIRN_E_CORRUPT, &err,
              "archive/tar: sparse member \"db/rp/1/bomb.tsm\" refused");
    CHECK(e != NULL && e->sparse);
    if (e != NULL) {
        CHECK_EQ_STR(e->name, "db/rp/1/bomb.tsm");
        CHECK_EQ_INT(e->size, 4ull << 30);
    }
    tar_reader_free(r);
    cairn_reader_free(src);
    bytes_free(&t);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
