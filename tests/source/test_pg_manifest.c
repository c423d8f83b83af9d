/* The PostgreSQL source's checks that need no server: the tar push parser (files and their
 * SHA-256 from a tar fed in pieces of every size) and backup_manifest checked line by line
 * against them: its Manifest-Checksum, each file's size and SHA-256, files missing on either
 * side, WAL-Ranges, a manifest cut short. test_postgresql.py runs the real server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/tar.h"
#include "cairn/digest.h"
#include "cairn/io.h"
#include "source/postgresql/pg.h"
#include "test.h"

static const char *const names[] = {"backup_label", "base/1/1259", "global/pg_control"};
static const size_t sizes[] = {225, 70000, 8192};

static uint8_t *content(size_t i)
{
    uint8_t *d = malloc(sizes[i]);
    for (size_t k = 0; k < sizes[i]; k++)
        d[k] = (uint8_t)(k * 31 + i * 7);
    return d;
}

/* A tar of the three files (and a directory), as the server sends base.tar. */
static uint8_t *make_tar(size_t *len)
{
    struct cairn_writer *w = cairn_mem_writer_new(1 << 20);
    struct tar_writer t;
    tar_writer_init(&t, w, 1700000000);
    uint8_t blk[TAR_BLOCK];
    tar_header_format(blk, "base/", '5', 0, 1700000000, 1);
    CHECK(cairn_writer_write(w, blk, sizeof(blk), NULL) == CAIRN_OK);
    for (size_t i = 0; i < 3; i++) {
        uint8_t *d = content(i);
        CHECK(tar_writer_begin(&t, names[i], sizes[i], NULL) == CAIRN_OK);
        CHECK(tar_writer_data(&t, d, sizes[i], NULL) == CAIRN_OK);
        CHECK(tar_writer_end(&t, NULL) == CAIRN_OK);
        free(d);
    }
    CHECK(tar_writer_finish(&t, NULL) == CAIRN_OK);
    size_t n = 0;
    const uint8_t *p = cairn_mem_writer_data(w, &n);
    uint8_t *out = malloc(n);
    memcpy(out, p, n);
    cairn_writer_free(w);
    *len = n;
    return out;
}

/* The manifest the server would write; bad_file >= 0 gets a wrong checksum; skip >= 0 is
 * left out. The Manifest-Checksum is computed over whatever was written. */
static char *make_manifest(int bad_file, int skip, const char *wal)
{
    char *m = malloc(8192);
    size_t off = (size_t)sprintf(m, "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [");
    int first = 1;
    for (int i = 0; i < 3; i++) {
        if (i == skip)
            continue;
        uint8_t *d = content((size_t)i), sha[32];
        cairn_sha256_oneshot(d, sizes[i], sha);
        free(d);
        if (i == bad_file)
            sha[5] ^= 1;
        char hex[65];
        cairn_hex_encode(sha, 32, hex);
        off += (size_t)sprintf(m + off,
                               "%s{ \"Path\": \"%s\", \"Size\": %zu, \"Last-Modified\": "
                               "\"2024-01-02 03:04:05 GMT\", \"Checksum-Algorithm\": \"SHA256\", "
                               "\"Checksum\": \"%s\" }",
                               first ? "\n" : ",\n", names[i], sizes[i], hex);
        first = 0;
    }
    off += (size_t)sprintf(m + off, "\n],\n\"WAL-Ranges\": [\n%s\n],\n", wal);
    uint8_t sha[32];
    char hex[65];
    cairn_sha256_oneshot(m, off, sha);
    cairn_hex_encode(sha, 32, hex);
    sprintf(m + off, "\"Manifest-Checksum\": \"%s\"}\n", hex);
    return m;
}

static const char *const good_wal =
    "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }";

/* Feed tar and manifest in pieces of step bytes; the first error's code, message in err. */
static int run(const uint8_t *tar, size_t tlen, const char *man, size_t step, struct cairn_err *err)
{
    struct pg_files files = {0};
    struct pg_tar t;
    pg_tar_init(&t, "base.tar of test", "", &files);
    int rc = CAIRN_OK;
    for (size_t o = 0; rc == CAIRN_OK && o < tlen; o += step)
        rc = pg_tar_feed(&t, tar + o, tlen - o < step ? tlen - o : step, err);
    if (rc == CAIRN_OK)
        rc = pg_tar_finish(&t, err);
    pg_tar_free(&t);
    if (rc == CAIRN_OK)
        rc = pg_files_seal(&files, "test", err);
    struct pg_manifest m;
    pg_manifest_init(&m, "backup_manifest of test", &files);
    size_t mlen = strlen(man);
    for (size_t o = 0; rc == CAIRN_OK && o < mlen; o += step)
        rc = pg_manifest_feed(&m, (const uint8_t *)man + o, mlen - o < step ? mlen - o : step, err);
    if (rc == CAIRN_OK)
        rc = pg_manifest_finish(&m, 1, 0x2000028, 0x2000100, err);
    pg_manifest_free(&m);
    pg_files_free(&files);
    return rc;
}

TEST(tar_and_manifest_agree_in_pieces_of_every_size)
{
    size_t tlen = 0;
    uint8_t *tar = make_tar(&tlen);
    char *man = make_manifest(-1, -1, good_wal);
    static const size_t steps[] = {1, 7, 511, 512, 513, 4096, 1 << 20};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct cairn_err err = {0};
        int rc = run(tar, tlen, man, steps[i], &err);
        if (rc != CAIRN_OK)
            test_fail(__FILE__, __LINE__, "step %zu: %s", steps[i], err.msg);
    }
    free(man);
    free(tar);
}

static void expect(const uint8_t *tar, size_t tlen, const char *man, const char *text)
{
    struct cairn_err err = {0};
    int rc = run(tar, tlen, man, 1000, &err);
    CHECK_EQ_INT(rc, CAIRN_E_CORRUPT);
    if (strstr(err.msg, text) == NULL)
        test_fail(__FILE__, __LINE__, "want '%s' in: %s", text, err.msg);
}

TEST(manifest_damage_is_caught)
{
    size_t tlen = 0;
    uint8_t *tar = make_tar(&tlen);
    char *man = make_manifest(-1, -1, good_wal);
    /* A byte of the manifest flipped (XOR): its own checksum no longer matches. */
    char *flip = strdup(man);
    char *at = strstr(flip, "Last-Modified");
    at[3] ^= 0x01;
    expect(tar, tlen, flip, "Manifest-Checksum mismatch");
    free(flip);
    /* Cut short: no checksum line. */
    char *cut = strdup(man);
    *strstr(cut, "\"Manifest-Checksum\"") = '\0';
    expect(tar, tlen, cut, "no Manifest-Checksum line");
    free(cut);
    /* Junk after the checksum line. */
    char *junk = malloc(strlen(man) + 8);
    sprintf(junk, "%sx\n", man);
    expect(tar, tlen, junk, "after the Manifest-Checksum");
    free(junk);
    free(man);
    /* A file whose streamed bytes differ from the manifest's checksum. */
    man = make_manifest(1, -1, good_wal);
    expect(tar, tlen, man, "checksum mismatch");
    free(man);
    /* A file of the tar the manifest does not list. */
    man = make_manifest(-1, 2, good_wal);
    expect(tar, tlen, man, "not in the manifest");
    free(man);
    /* WAL-Ranges that do not match the backup's start and end. */
    man = make_manifest(-1, -1,
                        "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": "
                        "\"0/2000200\" }");
    expect(tar, tlen, man, "WAL-Ranges");
    free(man);
    free(tar);
}

TEST(tar_damage_is_caught)
{
    size_t tlen = 0;
    uint8_t *tar = make_tar(&tlen);
    char *man = make_manifest(-1, -1, good_wal);
    /* Without its end marker: truncated. */
    expect(tar, tlen - 1024, man, "truncated");
    /* A data byte flipped: the file's SHA-256 differs from the manifest's. */
    uint8_t *bad = malloc(tlen);
    memcpy(bad, tar, tlen);
    bad[512 * 4 + 100] ^= 0x01; /* in base/1/1259's data (after base/ and backup_label) */
    expect(bad, tlen, man, "checksum mismatch");
    /* A header byte flipped: its header checksum. */
    memcpy(bad, tar, tlen);
    bad[512 + 3] ^= 0x01;
    expect(bad, tlen, man, "checksum is wrong");
    free(bad);
    free(man);
    free(tar);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
