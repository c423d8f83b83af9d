/* The tar benchmark behind docs/PERFORMANCE.md, "One tar implementation": writes a tar stream of
 * about 1 GiB (files of four sizes) to stdout, or reads one from stdin, with either of the two
 * implementations cairn had: the hand-written Go archive/tar-compatible one (src/archive/tar.c,
 * "hand") and libarchive driven exactly as the InfluxDB service drove it ("libarchive": pax
 * restricted ustar, no reblocking, 256 KiB reads through a callback). The libarchive side is
 * built only when libarchive-dev is installed; the library itself no longer links it.
 *
 *   tarbench write hand|libarchive [SPEC] >out.tar     SPEC: SIZExCOUNT,... (default below)
 *   tarbench read hand|hand-exact|libarchive [--sum] <in.tar
 *
 * "hand" reads as the shard streams do (TAR_READ_AHEAD: a buffer at a time), "hand-exact" as
 * the snapshot reader does (never past the end marker). --sum prints a
 * SHA-256 over names and data, to check that all read the same.
 *
 * Data comes from memory in 256 KiB writes (as the service copies files), so the figures are
 * the tar layer's own cost plus the system calls it makes. Time it as a whole process (see
 * bench/tar/run). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/tar.h"
#include "cairn/digest.h"
#include "cairn/io.h"

#ifdef HAVE_LIBARCHIVE
#include <archive.h>
#include <archive_entry.h>
#endif

/* 256 MiB of each: 4000-byte files (headers and padding dominate), 256 KiB + 100, 16 MiB, and
 * one 256 MiB file (data copying dominates). */
#define DEFAULT_SPEC "4000x67108,262244x1023,16777216x16,268435456x1"

static uint8_t *pattern; /* 1 MiB of pseudo-random bytes, the data of every member */
#define PATTERN_LEN (1u << 20)

static void die(const char *what, const struct cairn_err *err)
{
    fprintf(stderr, "tarbench: %s: %s\n", what, err && err->msg[0] ? err->msg : "failed");
    exit(1);
}

static void fill_pattern(void)
{
    pattern = malloc(PATTERN_LEN);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < PATTERN_LEN; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        pattern[i] = (uint8_t)x;
    }
}

struct member {
    uint64_t size;
    unsigned long count;
};

static size_t parse_spec(const char *spec, struct member *m, size_t cap)
{
    size_t n = 0;
    const char *p = spec;
    while (*p && n < cap) {
        char *end;
        m[n].size = strtoull(p, &end, 10);
        if (*end != 'x')
            break;
        m[n].count = strtoul(end + 1, &end, 10);
        n++;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* The bytes of member data at offset off, as a slice of the pattern. */
static size_t chunk(uint64_t off, uint64_t left, const uint8_t **p)
{
    size_t at = (size_t)(off % PATTERN_LEN);
    size_t n = CAIRN_IO_BUFSIZE < PATTERN_LEN - at ? CAIRN_IO_BUFSIZE : PATTERN_LEN - at;
    *p = pattern + at;
    return left < n ? (size_t)left : n;
}

static int write_hand(struct cairn_writer *out, const struct member *m, size_t n,
                      struct cairn_err *err)
{
    struct tar_writer t;
    char name[64];
    unsigned long k = 0;
    tar_writer_init(&t, out, 1700000000);
    for (size_t i = 0; i < n; i++)
        for (unsigned long c = 0; c < m[i].count; c++, k++) {
            snprintf(name, sizeof(name), "db/rp/1/%09lu.tsm", k);
            /* the shard stream's member fields, as the libarchive side writes them */
            struct tar_member tm = {name, m[i].size, 1700000000, 0644, "root", "root"};
            int rc = tar_writer_add(&t, &tm, err);
            for (uint64_t off = 0; rc == CAIRN_OK && off < m[i].size;) {
                const uint8_t *p;
                size_t len = chunk(off, m[i].size - off, &p);
                rc = tar_writer_data(&t, p, len, err);
                off += len;
            }
            if (rc == CAIRN_OK)
                rc = tar_writer_end(&t, err);
            if (rc != CAIRN_OK)
                return rc;
        }
    return tar_writer_finish(&t, err);
}

static int read_hand(struct cairn_reader *in, int exact, struct cairn_sha256 *h, uint64_t *files,
                     uint64_t *bytes, struct cairn_err *err)
{
    struct tar_reader *t = tar_reader_new(in, exact ? 0 : TAR_READ_AHEAD);
    uint8_t *buf = malloc(CAIRN_IO_BUFSIZE);
    const struct tar_entry *e;
    int rc;
    while ((rc = tar_reader_next(t, &e, err)) == CAIRN_OK && e != NULL) {
        if (h)
            cairn_sha256_update(h, e->name, strlen(e->name) + 1);
        size_t got;
        while ((rc = tar_reader_read(t, buf, CAIRN_IO_BUFSIZE, &got, err)) == CAIRN_OK && got) {
            if (h)
                cairn_sha256_update(h, buf, got);
            *bytes += got;
        }
        if (rc != CAIRN_OK)
            break;
        ++*files;
    }
    free(buf);
    tar_reader_free(t);
    return rc;
}

#ifdef HAVE_LIBARCHIVE
static la_ssize_t la_write_cb(struct archive *a, void *ctx, const void *buf, size_t len)
{
    (void)a;
    struct cairn_err err;
    if (cairn_writer_write(ctx, buf, len, &err) != CAIRN_OK)
        die("write", &err);
    return (la_ssize_t)len;
}

static int write_libarchive(struct cairn_writer *out, const struct member *m, size_t n,
                            struct cairn_err *err)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_set_bytes_per_block(a, 0);
    archive_write_set_bytes_in_last_block(a, 1);
    if (archive_write_open(a, out, NULL, la_write_cb, NULL) != ARCHIVE_OK)
        return cairn_err_set(err, CAIRN_E_INTERNAL, "archive_write_open");
    char name[64];
    unsigned long k = 0;
    struct archive_entry *e = archive_entry_new();
    for (size_t i = 0; i < n; i++)
        for (unsigned long c = 0; c < m[i].count; c++, k++) {
            snprintf(name, sizeof(name), "db/rp/1/%09lu.tsm", k);
            archive_entry_clear(e);
            archive_entry_set_pathname(e, name);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_size(e, (la_int64_t)m[i].size);
            archive_entry_set_mtime(e, 1700000000, 0);
            archive_entry_set_uname(e, "root");
            archive_entry_set_gname(e, "root");
            if (archive_write_header(a, e) != ARCHIVE_OK)
                return cairn_err_set(err, CAIRN_E_IO, "%s", archive_error_string(a));
            for (uint64_t off = 0; off < m[i].size;) {
                const uint8_t *p;
                size_t len = chunk(off, m[i].size - off, &p);
                if (archive_write_data(a, p, len) != (la_ssize_t)len)
                    return cairn_err_set(err, CAIRN_E_IO, "%s", archive_error_string(a));
                off += len;
            }
        }
    archive_entry_free(e);
    int rc =
        archive_write_close(a) == ARCHIVE_OK ? CAIRN_OK : cairn_err_set(err, CAIRN_E_IO, "close");
    archive_write_free(a);
    return rc;
}

struct la_in {
    struct cairn_reader *src;
    uint8_t *buf;
};

static la_ssize_t la_read_cb(struct archive *a, void *ctx, const void **out)
{
    (void)a;
    struct la_in *in = ctx;
    size_t got;
    struct cairn_err err;
    if (cairn_reader_read(in->src, in->buf, CAIRN_IO_BUFSIZE, &got, &err) != CAIRN_OK)
        return -1;
    *out = in->buf;
    return (la_ssize_t)got;
}

static int read_libarchive(struct cairn_reader *src, struct cairn_sha256 *h, uint64_t *files,
                           uint64_t *bytes, struct cairn_err *err)
{
    struct la_in in = {src, malloc(CAIRN_IO_BUFSIZE)};
    uint8_t *buf = malloc(CAIRN_IO_BUFSIZE);
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    int rc = CAIRN_OK;
    if (archive_read_open(a, &in, NULL, la_read_cb, NULL) != ARCHIVE_OK)
        rc = cairn_err_set(err, CAIRN_E_IO, "%s", archive_error_string(a));
    struct archive_entry *e;
    while (rc == CAIRN_OK) {
        int ar = archive_read_next_header(a, &e);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar != ARCHIVE_OK) {
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "%s", archive_error_string(a));
            break;
        }
        if (h)
            cairn_sha256_update(h, archive_entry_pathname(e),
                                strlen(archive_entry_pathname(e)) + 1);
        la_ssize_t got;
        while ((got = archive_read_data(a, buf, CAIRN_IO_BUFSIZE)) > 0) {
            if (h)
                cairn_sha256_update(h, buf, (size_t)got);
            *bytes += (uint64_t)got;
        }
        if (got < 0)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT, "%s", archive_error_string(a));
        ++*files;
    }
    archive_read_free(a);
    free(in.buf);
    free(buf);
    return rc;
}
#endif

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
        fprintf(stderr, "usage: tarbench write|read hand|hand-exact|libarchive [SPEC|--sum]\n");
        return 2;
    }
    int exact = strcmp(argv[2], "hand-exact") == 0;
    int hand = exact || strcmp(argv[2], "hand") == 0;
#ifndef HAVE_LIBARCHIVE
    if (!hand) {
        fprintf(stderr, "tarbench: built without libarchive (install libarchive-dev)\n");
        return 2;
    }
#endif
    struct cairn_err err;
    cairn_err_clear(&err);
    int rc;
    if (strcmp(argv[1], "write") == 0) {
        struct member m[16];
        size_t n = parse_spec(argc > 3 ? argv[3] : DEFAULT_SPEC, m, 16);
        fill_pattern();
        struct cairn_writer *out = cairn_fd_writer_new(1, 0);
#ifdef HAVE_LIBARCHIVE
        rc = hand ? write_hand(out, m, n, &err) : write_libarchive(out, m, n, &err);
#else
        rc = write_hand(out, m, n, &err);
#endif
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(out, &err);
        cairn_writer_free(out);
        free(pattern);
    } else {
        int sum = argc > 3 && strcmp(argv[3], "--sum") == 0;
        struct cairn_sha256 h;
        cairn_sha256_init(&h);
        uint64_t files = 0, bytes = 0;
        struct cairn_reader *in = cairn_fd_reader_new(0, 0);
#ifdef HAVE_LIBARCHIVE
        rc = hand ? read_hand(in, exact, sum ? &h : NULL, &files, &bytes, &err)
                  : read_libarchive(in, sum ? &h : NULL, &files, &bytes, &err);
#else
        rc = read_hand(in, exact, sum ? &h : NULL, &files, &bytes, &err);
#endif
        cairn_reader_free(in);
        uint8_t d[32];
        char hex[65];
        cairn_sha256_final(&h, d);
        cairn_hex_encode(d, 32, hex);
        if (rc == CAIRN_OK)
            fprintf(stderr, "%llu files, %llu bytes%s%s\n", (unsigned long long)files,
                    (unsigned long long)bytes, sum ? ", sha256 " : "", sum ? hex : "");
    }
    if (rc != CAIRN_OK)
        die(argv[1], &err);
    return 0;
}
