/* Large MANIFESTs: a backup whose one-document MANIFEST would exceed the reader's old 64 MiB
 * limit is written split (header + checksummed parts) and lists, verifies and reads back;
 * damaged or missing parts are corrupt; duplicate file names are refused when added and when
 * a MANIFEST lists one twice. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "storage/internal.h"
#include "test.h"

#define NFILES    20000
#define NENTRIES  150000
#define LONG_NAME 190

/* A tmpfs directory when there is one (each stored file is fsync'd: cheap there). */
static char *store_dir(const char *tag)
{
    char *dir = xasprintf("/dev/shm/cairn-test-%s-XXXXXX", tag);
    if (access("/dev/shm", W_OK) == 0 && mkdtemp(dir) != NULL)
        return dir;
    free(dir);
    return path_join(test_tmpdir(), tag);
}

static void file_name(unsigned i, char *out)
{
    /* Long names, so the file list alone is several MiB. */
    snprintf(out, LONG_NAME + 16, "f%07u-%0*d", i, LONG_NAME - 9, 0);
}

/* A meta as large as a tree of NENTRIES entries with long paths: about 60 MB of JSON. */
static json_t *big_meta(void)
{
    json_t *entries = json_array();
    char pad[301], path[400];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (unsigned i = 0; i < NENTRIES; i++) {
        snprintf(path, sizeof(path), "dir/%07u/%s", i, pad);
        json_array_append_new(entries, json_pack("{s:s, s:s, s:i, s:I}", "path", path, "type",
                                                 "file", "mode", 0644, "mtime", (json_int_t)i));
    }
    return json_pack("{s:{s:o}}", "tree", "entries", entries);
}

static int write_backup(struct cairn_storage *st, const char *name, json_t *meta,
                        struct cairn_err *err)
{
    struct cairn_backup *b = NULL;
    int rc = cairn_storage_start(st, name, &b, err);
    if (rc != CAIRN_OK)
        return rc;
    char fname[LONG_NAME + 16], data[32];
    for (unsigned i = 0; i < NFILES && rc == CAIRN_OK; i++) {
        file_name(i, fname);
        struct cairn_writer *w = NULL;
        int n = snprintf(data, sizeof(data), "data %u\n", i);
        rc = cairn_backup_add_file(b, fname, n, &w, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_write(w, data, (size_t)n, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_close(w, err);
        cairn_writer_free(w);
    }
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_meta(b, meta, err);
    json_t *scope = json_pack("{s:s}", "path", "/scale");
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_scope(b, scope, err);
    json_decref(scope);
    if (rc == CAIRN_OK) {
        /* The one-document form would be over the old reader's limit. */
        char *v1 = manifest_build(b, NULL);
        CHECK(strlen(v1) > MANIFEST_MAX);
        free(v1);
        rc = cairn_backup_end(b, err);
    }
    cairn_backup_free(b);
    return rc;
}

static void check_readable(struct cairn_storage *st, const char *name, json_t *meta)
{
    struct cairn_err err;
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT(l.count, 1);
    if (l.count == 1) {
        CHECK_EQ_INT(l.items[0].status, CAIRN_BACKUP_COMPLETE);
        CHECK_EQ_INT(l.items[0].files, NFILES);
        CHECK(l.items[0].size > 0);
        /* The parent lookup reads the scope from the listing, i.e. from the header. */
        CHECK(l.items[0].scope != NULL && strcmp(l.items[0].scope, "{\"path\":\"/scale\"}") == 0);
    }
    cairn_backup_list_free(&l);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, name, &b, &err), &err);
    if (b == NULL)
        return;
    CHECK_EQ_INT(cairn_backup_file_count(b), NFILES);
    CHECK(json_equal(cairn_backup_meta(b), meta));
    char fname[LONG_NAME + 16];
    file_name(NFILES - 1, fname);
    CHECK(cairn_backup_file_find(b, fname) != NULL);
    CHECK(cairn_backup_file_find(b, "f-none") == NULL);
    struct cairn_reader *r = NULL;
    char buf[64] = "";
    size_t got = 0;
    CHECK_OK(cairn_backup_get_file(b, fname, &r, &err), &err);
    if (r != NULL) {
        CHECK_OK(cairn_reader_read(r, buf, sizeof(buf) - 1, &got, &err), &err);
        buf[got] = '\0';
        CHECK_EQ_STR(buf, "data 19999\n");
        cairn_reader_free(r);
    }
    CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &err), &err);
    cairn_backup_free(b);
}

/* Offset of the first part's SHA-256 in the MANIFEST header at path. */
static off_t part_sha_offset(const char *path)
{
    char buf[4096] = "";
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    const char *p = strstr(buf, "\"sha256\": \"");
    CHECK(p != NULL);
    return p ? (off_t)(p - buf) + 11 : 0;
}

/* One hex digit for another; again, and it is back. */
static void flip_hex(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    char c = 0;
    CHECK(fd >= 0 && pread(fd, &c, 1, at) == 1);
    static const char hex[] = "0123456789abcdef";
    const char *p = strchr(hex, c);
    CHECK(p != NULL && c != '\0');
    c = p ? hex[(p - hex) ^ 1] : c; /* 0<->1, ..., e<->f */
    CHECK(fd >= 0 && pwrite(fd, &c, 1, at) == 1);
    if (fd >= 0)
        close(fd);
}

static void xor_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char c = 0;
    CHECK(fd >= 0 && pread(fd, &c, 1, at) == 1);
    c ^= 0x20;
    CHECK(fd >= 0 && pwrite(fd, &c, 1, at) == 1);
    if (fd >= 0)
        close(fd);
}

TEST(split_manifest_over_old_limit)
{
    char *root = store_dir("split");
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = NULL;
    struct cairn_err err;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    if (st == NULL)
        return;
    uint8_t key[CAIRN_SEAL_KEY_LEN] = {7};
    cairn_storage_set_seal_key(st, key);
    json_t *meta = big_meta();
    CHECK_OK(write_backup(st, "big", meta, &err), &err);

    /* The header is small; the parts hold the rest. */
    char *man = xasprintf("%s/big/MANIFEST", root);
    char *part0 = xasprintf("%s/big/MANIFEST.part000000", root);
    char *part3 = xasprintf("%s/big/MANIFEST.part000003", root);
    struct stat sb;
    CHECK(stat(man, &sb) == 0 && sb.st_size < (1 << 20));
    CHECK(stat(part3, &sb) == 0);
    check_readable(st, "big", meta);

    /* A damaged part: the backup is corrupt when opened (listing reads headers only). */
    xor_byte(part3, 1000);
    struct cairn_backup *b = NULL;
    CHECK_ERR(cairn_storage_open_backup(st, "big", &b, &err), CAIRN_E_CORRUPT, &err,
              "MANIFEST.part000003 does not match");
    xor_byte(part3, 1000);
    check_readable(st, "big", meta);
    /* A missing part. */
    char *moved = xasprintf("%s.away", part0);
    CHECK(rename(part0, moved) == 0);
    CHECK_ERR(cairn_storage_open_backup(st, "big", &b, &err), CAIRN_E_CORRUPT, &err,
              "MANIFEST.part000000 is missing");
    CHECK(rename(moved, part0) == 0);
    /* The header is sealed, and it names every part's SHA-256. */
    off_t at = part_sha_offset(man);
    flip_hex(man, at);
    CHECK_ERR(cairn_storage_open_backup(st, "big", &b, &err), CAIRN_E_SEAL, &err, "seal");
    flip_hex(man, at);
    check_readable(st, "big", meta);

    json_decref(meta);
    cairn_storage_free(st);
    rmtree(root, &err);
    free(moved);
    free(man);
    free(part0);
    free(part3);
    free(url);
    free(root);
}

TEST(small_manifest_stays_one_document)
{
    char *url = xasprintf("file://%s/store", test_tmpdir());
    struct cairn_storage *st = NULL;
    struct cairn_err err;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "small", &b, &err), &err);
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file(b, "a", 1, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "x", 1, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
    char *man = xasprintf("%s/store/small/MANIFEST", test_tmpdir());
    json_error_t je;
    json_t *m = json_load_file(man, 0, &je);
    CHECK(json_integer_value(json_object_get(m, "version")) == CAIRN_MANIFEST_VERSION);
    CHECK(json_array_size(json_object_get(m, "files")) == 1);
    json_decref(m);
    free(man);
    cairn_storage_free(st);
    free(url);
}

TEST(duplicate_names_refused)
{
    char *url = xasprintf("file://%s/store", test_tmpdir());
    struct cairn_storage *st = NULL;
    struct cairn_err err;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "dups", &b, &err), &err);
    /* Enough names that the index grows several times. */
    char name[32];
    for (int i = 0; i < 300; i++) {
        struct cairn_writer *w = NULL;
        snprintf(name, sizeof(name), "n%03d", i);
        CHECK_OK(cairn_backup_add_file(b, name, 0, &w, &err), &err);
        CHECK_OK(cairn_writer_close(w, &err), &err);
        cairn_writer_free(w);
    }
    for (int i = 0; i < 300; i += 37) {
        struct cairn_writer *w = NULL;
        snprintf(name, sizeof(name), "n%03d", i);
        CHECK_ERR(cairn_backup_add_file(b, name, 0, &w, &err), CAIRN_E_EXISTS, &err,
                  "already added");
        CHECK(w == NULL);
        CHECK(cairn_backup_file_find(b, name) != NULL);
    }
    CHECK(cairn_backup_file_find(b, "n300") == NULL);
    cairn_backup_abort(b, &err);
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(url);

    /* A MANIFEST that lists a file twice is corrupt, wherever the two are. */
    static struct cairn_storage fake;
    const char *sha = "0000000000000000000000000000000000000000000000000000000000000000";
    char *text = xasprintf(
        "{\"version\": 1, \"name\": \"b\", \"created\": \"2026-01-01T00:00:00Z\", "
        "\"source\": \"\", \"kind\": \"files\", \"parent\": null, \"meta\": {}, \"files\": ["
        "{\"name\": \"z\", \"size\": 1, \"sha256\": \"%s\", \"compression\": \"none\", "
        "\"logical_size\": 1, \"logical_sha256\": \"%s\"},"
        "{\"name\": \"a\", \"size\": 1, \"sha256\": \"%s\", \"compression\": \"none\", "
        "\"logical_size\": 1, \"logical_sha256\": \"%s\"},"
        "{\"name\": \"z\", \"size\": 1, \"sha256\": \"%s\", \"compression\": \"none\", "
        "\"logical_size\": 1, \"logical_sha256\": \"%s\"}]}",
        sha, sha, sha, sha, sha, sha);
    b = backup_new_handle(&fake, "b", 1);
    CHECK_ERR(manifest_parse(b, text, strlen(text), NULL, &err), CAIRN_E_CORRUPT, &err,
              "lists file 'z' twice");
    CHECK(cairn_backup_status(b) != CAIRN_BACKUP_COMPLETE);
    cairn_backup_free(b);
    free(text);
}

/* ---- local-path backups stream their tree and file list ---- */

#define TREE_DIRS  7
#define TREE_FILES 1300 /* per directory: 9,100 files, over two streaming batches */

static char *make_tree(const char *root)
{
    char *src = path_join(root, "src");
    CHECK(mkdir(src, 0700) == 0);
    char path[512], data[32];
    for (int d = 0; d < TREE_DIRS; d++) {
        snprintf(path, sizeof(path), "%s/d%02d", src, d);
        CHECK(mkdir(path, 0750) == 0);
        for (int i = 0; i < TREE_FILES; i++) {
            snprintf(path, sizeof(path), "%s/d%02d/x%05d", src, d, i);
            int n = snprintf(data, sizeof(data), "x%d.%d\n", d, i);
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
            CHECK(fd >= 0 && write(fd, data, (size_t)n) == n);
            if (fd >= 0)
                close(fd);
        }
    }
    return src;
}

static void count_cb(void *arg, const struct cairn_manifest_file *f, int rc,
                     const struct cairn_err *e)
{
    (void)f;
    (void)e;
    if (rc == CAIRN_OK)
        ++*(size_t *)arg;
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    return json_load_file(path, 0, &je);
}

TEST(put_path_streams_tree_and_file_list)
{
    struct cairn_err err;
    char *root = store_dir("stream");
    char *src = make_tree(root);
    char *url = xasprintf("file://%s/store", root);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_path_opts po = {.workers = 4, .file = {.compression = CAIRN_COMPRESS_ZSTD}};
    CHECK_OK(cairn_storage_backup_path(st, "t", src, &po, &err), &err);

    /* Streamed: a split MANIFEST although its one-document form would be small, the tree in
     * its own stored file. */
    char *mpath = xasprintf("%s/store/t/MANIFEST", root);
    json_t *m = load_json(mpath);
    CHECK(m != NULL && json_integer_value(json_object_get(m, "version")) == 2);
    const size_t want = TREE_DIRS * TREE_FILES + 1;
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(m, "files"), "count")),
                 (long long)want);
    json_decref(m);

    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "t", &b, &err), &err);
    CHECK_EQ_INT(b ? cairn_backup_file_count(b) : 0, (long long)want);
    json_t *tree = b ? json_object_get(cairn_backup_meta(b), "tree") : NULL;
    CHECK_EQ_INT(json_integer_value(json_object_get(tree, "count")), TREE_DIRS * (TREE_FILES + 1));
    size_t ok = 0;
    if (b != NULL)
        CHECK_OK(cairn_backup_verify(b, 4, count_cb, &ok, &err), &err);
    CHECK_EQ_INT(ok, (long long)want);
    char last[16];
    snprintf(last, sizeof(last), "f%06d", TREE_DIRS * TREE_FILES - 1);
    CHECK(b && cairn_backup_file_find(b, last) != NULL); /* loaded on demand */
    cairn_backup_free(b);

    char *out = path_join(root, "out");
    CHECK_OK(cairn_storage_restore_path(st, "t", out, &po, &err), &err);
    char path[512], buf[64];
    for (int d = 0; d < TREE_DIRS; d += 3)
        for (int i = 0; i < TREE_FILES; i += 97) {
            snprintf(path, sizeof(path), "%s/d%02d/x%05d", out, d, i);
            int fd = open(path, O_RDONLY);
            ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
            buf[n > 0 ? n : 0] = '\0';
            char want_data[32];
            snprintf(want_data, sizeof(want_data), "x%d.%d\n", d, i);
            CHECK_EQ_STR(buf, want_data);
            if (fd >= 0)
                close(fd);
        }
    struct stat sb;
    snprintf(path, sizeof(path), "%s/d%02d", out, TREE_DIRS - 1);
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 07777) == 0750);

    /* One flipped byte in the stored tree: verify and restore refuse it; nothing lands. */
    char *tpath = xasprintf("%s/store/t/tree", root);
    CHECK(stat(tpath, &sb) == 0);
    xor_byte(tpath, sb.st_size / 2);
    CHECK_OK(cairn_storage_open_backup(st, "t", &b, &err), &err);
    if (b != NULL)
        CHECK_ERR(cairn_backup_verify(b, 4, NULL, NULL, &err), CAIRN_E_CORRUPT, &err, "tree");
    cairn_backup_free(b);
    char *out2 = path_join(root, "out2");
    CHECK_ERR(cairn_storage_restore_path(st, "t", out2, &po, &err), CAIRN_E_CORRUPT, &err, "tree");
    CHECK(access(out2, F_OK) != 0 && errno == ENOENT);

    cairn_storage_free(st);
    free(tpath);
    free(out2);
    free(out);
    free(mpath);
    free(url);
    free(src);
    rmtree(root, &err);
    free(root);
}

/* A streaming writer refuses a name at or below the file list it has written already. */
TEST(streamed_names_must_ascend)
{
    struct cairn_err err;
    char *root = store_dir("ascend");
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "s", &b, &err), &err);
    if (b == NULL)
        return;
    backup_set_streaming(b);
    char name[32];
    for (unsigned i = 0; i < 2 * STREAM_BATCH + 7; i++) {
        snprintf(name, sizeof(name), "n%06u", i + 100);
        struct cairn_reader *r = cairn_mem_reader_new(name, strlen(name));
        CHECK_OK(cairn_backup_put_stream(b, name, r, -1, NULL, &err), &err);
        cairn_reader_free(r);
    }
    struct cairn_writer *w = NULL;
    CHECK_ERR(cairn_backup_add_file(b, "n000001", 0, &w, &err), CAIRN_E_INVALID, &err, "ascending");
    CHECK_ERR(cairn_backup_add_file(b, "n000100", 0, &w, &err), CAIRN_E_INVALID, &err, "ascending");
    struct cairn_reader *r = cairn_mem_reader_new("z", 1);
    CHECK_OK(cairn_backup_put_stream(b, "z", r, -1, NULL, &err), &err);
    cairn_reader_free(r);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
    CHECK_OK(cairn_storage_open_backup(st, "s", &b, &err), &err);
    CHECK_EQ_INT(b ? cairn_backup_file_count(b) : 0, 2 * STREAM_BATCH + 8);
    CHECK(b && cairn_backup_file_find(b, "n000100") != NULL);
    CHECK(b && cairn_backup_file_find(b, "z") != NULL);
    if (b != NULL)
        CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &err), &err);
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(url);
    rmtree(root, &err);
    free(root);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
