/* Repositories (include/cairn/repo.h) on the file driver and a real s3rver: init with a key
 * file, a password or no encryption; unlock with each key; a wrong key or password, a key for
 * a plain location, no key for an encrypted one; key add, list, remove (never the last, never
 * the current one), passwd; a config changed by one XOR'ed byte, a config of an unknown
 * version, a damaged key object; key generate (0600, never overwrites). */
#define _GNU_SOURCE
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3fixture.h"

#include "cairn/repo.h"
#include "cairn/storage.h"
#include "storage/internal.h"

static int url_seq;

static char *s3_url(int port)
{
    return xasprintf("s3://%s/rp%d-%d/p?endpoint=http://127.0.0.1:%d&region=us-east-1"
                     "&path_style=1&retry_base_ms=5",
                     S3_BUCKET, (int)getpid(), url_seq++, port);
}

#define REPO_CASE(name)                                                                            \
    static void rp_##name(const char *url);                                                        \
    TEST(file_##name)                                                                              \
    {                                                                                              \
        char *u = xasprintf("file://%s/store%d", test_tmpdir(), url_seq++);                        \
        rp_##name(u);                                                                              \
        free(u);                                                                                   \
    }                                                                                              \
    TEST(s3_##name)                                                                                \
    {                                                                                              \
        int port = s3rver_start();                                                                 \
        if (port == 0)                                                                             \
            MISSING(s3rver_skip);                                                                  \
        char *u = s3_url(port);                                                                    \
        rp_##name(u);                                                                              \
        free(u);                                                                                   \
    }                                                                                              \
    static void rp_##name(const char *url)

static struct cairn_storage *open_st(const char *url)
{
    struct cairn_storage *st = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_storage_open(url, &st, &e), &e);
    return st;
}

static const uint8_t key1[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t key2[32] = {0xaa, 0xbb, 0xcc};

static const struct cairn_repo_secret sec_k1 = {key1, NULL};
static const struct cairn_repo_secret sec_k2 = {key2, NULL};
static const struct cairn_repo_secret sec_pw = {NULL, "correct horse battery staple"};
static const struct cairn_repo_secret sec_pw_bad = {NULL, "correct horse battery stapler"};

/* The raw bytes of an object of the repository directory, and writing them back. */
static char *raw_get(struct cairn_storage *st, const char *file, size_t *len)
{
    struct cairn_reader *r = NULL;
    struct cairn_err e;
    CHECK_OK(st->drv->read(st->state, CAIRN_REPO_DIR, file, &r, &e), &e);
    if (r == NULL)
        return NULL;
    char *buf = xmalloc(65536);
    size_t n = 0, got = 0;
    do {
        CHECK_OK(cairn_reader_read(r, buf + n, 65535 - n, &got, &e), &e);
        n += got;
    } while (got > 0);
    cairn_reader_free(r);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void raw_put(struct cairn_storage *st, const char *file, const char *buf, size_t len)
{
    struct cairn_writer *w = NULL;
    struct cairn_err e;
    const struct cairn_storage_write_opts wo = {
        CAIRN_STORAGE_WRITE_REPLACE | CAIRN_STORAGE_WRITE_SYNC | CAIRN_STORAGE_WRITE_ATOMIC};
    CHECK_OK(st->drv->create(st->state, CAIRN_REPO_DIR, file, (int64_t)len, &wo, &w, &e), &e);
    CHECK_OK(cairn_writer_write(w, buf, len, &e), &e);
    CHECK_OK(cairn_writer_close(w, &e), &e);
    cairn_writer_free(w);
}

static size_t nkeys(struct cairn_repo *r)
{
    struct cairn_repo_key_list l;
    struct cairn_err e;
    CHECK_OK(cairn_repo_key_list(r, &l, &e), &e);
    size_t n = l.count;
    cairn_repo_key_list_free(&l);
    return n;
}

REPO_CASE(init_unlock)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_repo *r = NULL, *r2 = NULL;
    struct cairn_err e;
    /* A plain location is no repository. */
    CHECK_ERR(cairn_repo_open(st, NULL, &r, &e), CAIRN_E_NOTFOUND, &e, "no repository config");
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_SEAL, &e, "no repository config");
    CHECK_OK(cairn_repo_init(st, NULL, &sec_k1, &r, &e), &e);
    CHECK(r != NULL && cairn_repo_encrypted(r));
    CHECK_EQ_INT(strlen(cairn_repo_id(r)), 64);
    CHECK_EQ_INT(cairn_repo_chunk_size(r), CAIRN_REPO_CHUNK_DEFAULT);
    CHECK_EQ_INT(nkeys(r), 1);
    CHECK_ERR(cairn_repo_init(st, NULL, &sec_k2, NULL, &e), CAIRN_E_EXISTS, &e, "already");
    /* Reopen: the same repository, the same derived keys. */
    CHECK_OK(cairn_repo_open(st, &sec_k1, &r2, &e), &e);
    CHECK_EQ_STR(cairn_repo_id(r2), cairn_repo_id(r));
    CHECK(memcmp(repo_keys(r)->data, repo_keys(r2)->data, 32) == 0);
    CHECK(memcmp(repo_keys(r)->data, repo_keys(r)->hash, 32) != 0);
    CHECK(memcmp(repo_keys(r)->data, repo_keys(r)->config_mac, 32) != 0);
    cairn_repo_free(r2);
    r2 = NULL;
    /* Wrong key, no key, wrong kind of key. */
    CHECK_ERR(cairn_repo_open(st, &sec_k2, &r2, &e), CAIRN_E_SEAL, &e, "wrong key file");
    CHECK(r2 == NULL);
    CHECK_ERR(cairn_repo_open(st, NULL, &r2, &e), CAIRN_E_SEAL, &e, "is encrypted");
    CHECK_ERR(cairn_repo_open(st, &sec_pw, &r2, &e), CAIRN_E_SEAL, &e, "password");
    /* The repository directory is never listed as a backup; listing needs the key. */
    struct cairn_backup_list l;
    CHECK_ERR(cairn_storage_list(st, &l, &e), CAIRN_E_SEAL, &e, "is encrypted");
    CHECK_OK(cairn_storage_set_secret(st, &sec_k1, &e), &e);
    CHECK_OK(cairn_storage_list(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 0);
    cairn_backup_list_free(&l);
    cairn_repo_free(r);
    cairn_storage_free(st);
}

REPO_CASE(keys)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_repo *r = NULL, *r2 = NULL;
    struct cairn_err e;
    char id1[17], id2[17], id3[17];
    CHECK_OK(cairn_repo_init(st, NULL, &sec_pw, &r, &e), &e);
    snprintf(id1, sizeof(id1), "%s", cairn_repo_key_id(r));
    CHECK_ERR(cairn_repo_open(st, &sec_pw_bad, &r2, &e), CAIRN_E_SEAL, &e,
              "wrong key file or password");
    CHECK_OK(cairn_repo_key_add(r, &sec_k1, id2, &e), &e);
    CHECK_EQ_INT(nkeys(r), 2);
    /* Each key opens it. */
    CHECK_OK(cairn_repo_open(st, &sec_k1, &r2, &e), &e);
    CHECK_EQ_STR(cairn_repo_key_id(r2), id2);
    struct cairn_repo_key_list kl;
    CHECK_OK(cairn_repo_key_list(r2, &kl, &e), &e);
    CHECK_EQ_INT(kl.count, 2);
    for (size_t i = 0; i < kl.count; i++) {
        CHECK_EQ_INT(kl.items[i].current, strcmp(kl.items[i].id, id2) == 0);
        CHECK_EQ_STR(kl.items[i].type, strcmp(kl.items[i].id, id2) == 0 ? "key-file" : "password");
    }
    cairn_repo_key_list_free(&kl);
    /* Never the current key, never an unknown one. */
    CHECK_ERR(cairn_repo_key_remove(r2, id2, &e), CAIRN_E_INVALID, &e, "unlocked with");
    CHECK_ERR(cairn_repo_key_remove(r2, "0123456789abcdef", &e), CAIRN_E_NOTFOUND, &e, "no key");
    CHECK_OK(cairn_repo_key_remove(r2, id1, &e), &e);
    cairn_repo_free(r);
    CHECK_ERR(cairn_repo_open(st, &sec_pw, &r, &e), CAIRN_E_SEAL, &e, "password");
    CHECK(r == NULL);
    /* The last key stays. */
    CHECK_ERR(cairn_repo_key_remove(r2, id2, &e), CAIRN_E_INVALID, &e, "last key");
    CHECK_EQ_INT(nkeys(r2), 1);
    /* passwd: key1 replaced by key2. */
    CHECK_OK(cairn_repo_key_passwd(r2, &sec_k2, id3, &e), &e);
    CHECK_EQ_STR(cairn_repo_key_id(r2), id3);
    CHECK_EQ_INT(nkeys(r2), 1);
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_SEAL, &e, "wrong key");
    CHECK_OK(cairn_repo_open(st, &sec_k2, &r, &e), &e);
    CHECK(memcmp(repo_keys(r)->data, repo_keys(r2)->data, 32) == 0);
    cairn_repo_free(r);
    cairn_repo_free(r2);
    cairn_storage_free(st);
}

REPO_CASE(plain)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_repo *r = NULL;
    struct cairn_err e;
    struct cairn_repo_init_opts o = {.no_encryption = 1};
    CHECK_ERR(cairn_repo_init(st, &o, &sec_k1, NULL, &e), CAIRN_E_INVALID, &e, "no encryption");
    CHECK_OK(cairn_repo_init(st, &o, NULL, &r, &e), &e);
    CHECK(!cairn_repo_encrypted(r));
    CHECK(repo_keys(r) == NULL);
    CHECK_ERR(cairn_repo_key_add(r, &sec_k1, NULL, &e), CAIRN_E_INVALID, &e, "not encrypted");
    cairn_repo_free(r);
    CHECK_OK(cairn_repo_open(st, NULL, &r, &e), &e);
    cairn_repo_free(r);
    r = NULL;
    /* A key given for a config that says none: a possible downgrade, refused. */
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_SEAL, &e, "not encrypted");
    cairn_storage_free(st);
}

REPO_CASE(init_refuses_backups)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_backup *b = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_storage_start(st, "old", &b, &e), &e);
    CHECK_OK(cairn_backup_end(b, &e), &e);
    cairn_backup_free(b);
    CHECK_ERR(cairn_repo_init(st, NULL, &sec_k1, NULL, &e), CAIRN_E_EXISTS, &e, "holds backups");
    cairn_storage_free(st);
}

REPO_CASE(config_tamper)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_repo *r = NULL;
    struct cairn_err e;
    struct cairn_repo_init_opts o = {.chunk_size = 128 * 1024};
    CHECK_OK(cairn_repo_init(st, &o, &sec_k1, &r, &e), &e);
    cairn_repo_free(r);
    r = NULL;
    size_t len = 0;
    char *orig = raw_get(st, CAIRN_REPO_CONFIG, &len);
    /* Every byte of the chunk size's digits and of the id, XOR'ed: refused, never accepted. */
    json_t *j = json_loads(orig, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *at[] = {strstr(orig, "131072"), strstr(orig, id), strstr(orig, "aes-256-gcm")};
    for (size_t k = 0; k < 3; k++) {
        CHECK(at[k] != NULL);
        for (size_t i = 0; at[k] != NULL && i < 6; i++) {
            char *t = xmalloc(len + 1);
            memcpy(t, orig, len + 1);
            size_t off = (size_t)(at[k] - orig) + i;
            t[off] ^= (char)(k == 0 ? 0x01 : 0x02);
            raw_put(st, CAIRN_REPO_CONFIG, t, len);
            int rc = cairn_repo_open(st, &sec_k1, &r, &e);
            CHECK(rc != CAIRN_OK);
            CHECK(r == NULL);
            free(t);
        }
    }
    /* The chunk size changed to another valid one: the MAC says no. */
    json_t *c = json_deep_copy(j);
    json_object_set_new(c, "chunk_size", json_integer(65536));
    char *t = json_dumps(c, 0);
    raw_put(st, CAIRN_REPO_CONFIG, t, strlen(t));
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_CORRUPT, &e, "fails its MAC");
    free(t);
    /* Downgrade to none: refused to a caller holding a key. */
    json_object_set_new(c, "encryption", json_string("none"));
    json_object_del(c, "mac");
    t = json_dumps(c, 0);
    raw_put(st, CAIRN_REPO_CONFIG, t, strlen(t));
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_SEAL, &e, "not encrypted");
    free(t);
    /* An unknown version. */
    json_object_set_new(c, "version", json_integer(7));
    t = json_dumps(c, 0);
    raw_put(st, CAIRN_REPO_CONFIG, t, strlen(t));
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_UNSUPPORTED, &e, "format version 7");
    CHECK_ERR(cairn_repo_open(st, NULL, &r, &e), CAIRN_E_UNSUPPORTED, &e, "format version 7");
    free(t);
    json_decref(c);
    /* Back as it was: opens again. */
    raw_put(st, CAIRN_REPO_CONFIG, orig, len);
    CHECK_OK(cairn_repo_open(st, &sec_k1, &r, &e), &e);
    CHECK_EQ_INT(cairn_repo_chunk_size(r), 128 * 1024);
    cairn_repo_free(r);
    json_decref(j);
    free(orig);
    cairn_storage_free(st);
}

REPO_CASE(key_tamper)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_repo *r = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_repo_init(st, NULL, &sec_k1, &r, &e), &e);
    char *file = xasprintf("key-%s", cairn_repo_key_id(r));
    cairn_repo_free(r);
    r = NULL;
    size_t len = 0;
    char *orig = raw_get(st, file, &len);
    const char *data = strstr(orig, "\"data\": \"");
    CHECK(data != NULL);
    char *t = xmalloc(len + 1);
    memcpy(t, orig, len + 1);
    t[data - orig + 10] ^= 0x01; /* a base64 digit of the wrapped key */
    raw_put(st, file, t, len);
    CHECK(cairn_repo_open(st, &sec_k1, &r, &e) != CAIRN_OK);
    CHECK(r == NULL);
    /* A key object of an unknown version. */
    const char *ver = strstr(orig, "\"version\": 1");
    CHECK(ver != NULL);
    memcpy(t, orig, len + 1);
    t[ver - orig + 11] = '3';
    raw_put(st, file, t, len);
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_UNSUPPORTED, &e, "version 3");
    /* No key object at all. */
    CHECK_OK(st->drv->remove_file(st->state, CAIRN_REPO_DIR, file, &e), &e);
    CHECK_ERR(cairn_repo_open(st, &sec_k1, &r, &e), CAIRN_E_SEAL, &e, "no key objects");
    free(t);
    free(orig);
    free(file);
    cairn_storage_free(st);
}

/* ---- encrypted storage ---- */

struct blob {
    uint8_t *p;
    size_t n;
};

static struct blob obj_get(struct cairn_storage *st, const char *backup, const char *file)
{
    struct blob b = {NULL, 0};
    struct cairn_reader *r = NULL;
    struct cairn_err e;
    CHECK_OK(st->drv->read(st->state, backup, file, &r, &e), &e);
    if (r == NULL)
        return b;
    size_t cap = 1 << 16, got = 0;
    b.p = xmalloc(cap);
    do {
        if (b.n == cap)
            b.p = xrealloc(b.p, cap *= 2);
        CHECK_OK(cairn_reader_read(r, b.p + b.n, cap - b.n, &got, &e), &e);
        b.n += got;
    } while (got > 0);
    cairn_reader_free(r);
    return b;
}

static void obj_put(struct cairn_storage *st, const char *backup, const char *file, const void *p,
                    size_t n)
{
    struct cairn_writer *w = NULL;
    struct cairn_err e;
    const struct cairn_storage_write_opts wo = {
        CAIRN_STORAGE_WRITE_REPLACE | CAIRN_STORAGE_WRITE_SYNC | CAIRN_STORAGE_WRITE_ATOMIC};
    CHECK_OK(st->drv->create(st->state, backup, file, (int64_t)n, &wo, &w, &e), &e);
    CHECK_OK(cairn_writer_write(w, p, n, &e), &e);
    CHECK_OK(cairn_writer_close(w, &e), &e);
    cairn_writer_free(w);
}

static int has_bytes(const struct blob *b, const void *needle, size_t n)
{
    return b->n >= n && memmem(b->p, b->n, needle, n) != NULL;
}

struct scan {
    struct cairn_storage *st;
    const char *backup;
    const char *const *needles; /* NULL-terminated strings */
    const uint8_t (*digests)[32];
    size_t ndigests;
    size_t objects, found;
};

static int scan_file(void *arg, const char *file)
{
    struct scan *sc = arg;
    struct blob b = obj_get(sc->st, sc->backup, file);
    sc->objects++;
    for (size_t i = 0; sc->needles[i] != NULL; i++)
        if (has_bytes(&b, sc->needles[i], strlen(sc->needles[i]))) {
            test_fail(__FILE__, __LINE__, "'%s' found in stored object %s/%s", sc->needles[i],
                      sc->backup, file);
            sc->found++;
        }
    for (size_t i = 0; i < sc->ndigests; i++) {
        char hex[65];
        cairn_hex_encode(sc->digests[i], 32, hex);
        if (has_bytes(&b, sc->digests[i], 32) || has_bytes(&b, hex, 64)) {
            test_fail(__FILE__, __LINE__, "a plaintext SHA-256 found in %s/%s", sc->backup, file);
            sc->found++;
        }
    }
    free(b.p);
    return 0;
}

static int scan_backup(void *arg, const char *name)
{
    struct scan *sc = arg;
    sc->backup = name;
    struct cairn_err e;
    CHECK_OK(sc->st->drv->list_files(sc->st->state, name, scan_file, sc, &e), &e);
    return 0;
}

static void put_file(struct cairn_storage *st, const char *backup, const char *file,
                     const void *data, size_t n, int zstd)
{
    struct cairn_backup *b = NULL;
    struct cairn_writer *w = NULL;
    struct cairn_err e;
    struct cairn_file_opts fo = {.compression = zstd ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE};
    CHECK_OK(cairn_storage_start(st, backup, &b, &e), &e);
    CHECK_OK(cairn_backup_add_file_opts(b, file, (int64_t)n, &fo, &w, &e), &e);
    CHECK_OK(cairn_writer_write(w, data, n, &e), &e);
    CHECK_OK(cairn_writer_close(w, &e), &e);
    cairn_writer_free(w);
    CHECK_OK(cairn_backup_end(b, &e), &e);
    cairn_backup_free(b);
}

/* The logical bytes of backup/file through the verified reader: its status, and the bytes. */
static int get_all(struct cairn_storage *st, const char *backup, const char *file, struct blob *out,
                   struct cairn_err *e)
{
    struct cairn_backup *b = NULL;
    struct cairn_reader *r = NULL;
    memset(out, 0, sizeof(*out));
    int rc = cairn_storage_open_backup(st, backup, &b, e);
    if (rc == CAIRN_OK)
        rc = cairn_backup_get_file(b, file, &r, e);
    size_t cap = 1 << 16, got = 0;
    out->p = xmalloc(cap);
    while (rc == CAIRN_OK) {
        if (out->n == cap)
            out->p = xrealloc(out->p, cap *= 2);
        rc = cairn_reader_read(r, out->p + out->n, cap - out->n, &got, e);
        if (rc != CAIRN_OK || got == 0)
            break;
        out->n += got;
    }
    cairn_reader_free(r);
    cairn_backup_free(b);
    return rc;
}

static struct cairn_storage *keyed_st(const char *url, const struct cairn_repo_secret *sec)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_err e;
    CHECK_OK(cairn_storage_set_secret(st, sec, &e), &e);
    return st;
}

#define MARKER "SECRET-TOKEN-7f3a"

REPO_CASE(encrypted_objects)
{
    struct cairn_err e;
    struct cairn_storage *st0 = open_st(url);
    /* Files stored whole (--no-dedup): the per-file object format these cases tamper with
     * (the chunk store has its own tests, test_chunkstore.c). */
    const struct cairn_repo_init_opts nd = {.no_dedup = 1};
    CHECK_OK(cairn_repo_init(st0, &nd, &sec_k1, NULL, &e), &e);
    cairn_storage_free(st0);
    struct cairn_storage *st = keyed_st(url, &sec_k1);
    /* 3.5 chunks of text with the marker in every line (compressible) and 200 KiB uncompressed */
    size_t n1 = 3 * 65536 + 32768, n2 = 200 * 1024;
    char *d1 = xmalloc(n1);
    for (size_t i = 0; i < n1; i++)
        d1[i] = "line " MARKER " of the secret file\n"[i % 38];
    uint8_t *d2 = xmalloc(n2);
    for (size_t i = 0; i < n2; i++)
        d2[i] = (uint8_t)(i * 2654435761u >> 13) ^ (uint8_t)(i % 251);
    memcpy(d2 + 1000, MARKER, strlen(MARKER));
    put_file(st, "b1", "secret-notes.txt", d1, n1, 1);
    put_file(st, "b2", "secret-notes.txt", d2, n2, 0);
    /* Back with the key: byte for byte. */
    struct blob got;
    CHECK_OK(get_all(st, "b1", "secret-notes.txt", &got, &e), &e);
    CHECK(got.n == n1 && memcmp(got.p, d1, n1) == 0);
    free(got.p);
    CHECK_OK(get_all(st, "b2", "secret-notes.txt", &got, &e), &e);
    CHECK(got.n == n2 && memcmp(got.p, d2, n2) == 0);
    free(got.p);
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 2);
    for (size_t i = 0; i < l.count; i++)
        CHECK_EQ_INT(l.items[i].status, CAIRN_BACKUP_COMPLETE);
    cairn_backup_list_free(&l);
    /* Nothing of the plaintext in any stored object: marker, file name, plaintext hashes. */
    uint8_t dig[2][32];
    cairn_sha256_oneshot(d1, n1, dig[0]);
    cairn_sha256_oneshot(d2, n2, dig[1]);
    const char *needles[] = {MARKER, "secret-notes", "files", "logical_sha256", NULL};
    struct scan sc = {st, NULL, needles, (const uint8_t(*)[32])dig, 2, 0, 0};
    CHECK_OK(st->drv->list(st->state, scan_backup, &sc, &e), &e);
    CHECK(sc.objects >= 4); /* two data files, two MANIFESTs */
    CHECK_EQ_INT(sc.found, 0);
    /* Without the key, with the wrong one: exit 4's code. */
    struct cairn_storage *nk = open_st(url);
    struct cairn_backup *b = NULL;
    CHECK_ERR(cairn_storage_open_backup(nk, "b1", &b, &e), CAIRN_E_SEAL, &e, "is encrypted");
    CHECK_ERR(cairn_storage_list(nk, &l, &e), CAIRN_E_SEAL, &e, "is encrypted");
    CHECK_ERR(cairn_storage_start(nk, "b9", &b, &e), CAIRN_E_SEAL, &e, "is encrypted");
    cairn_storage_free(nk);
    nk = keyed_st(url, &sec_k2);
    CHECK_ERR(cairn_storage_open_backup(nk, "b1", &b, &e), CAIRN_E_SEAL, &e, "wrong key");
    cairn_storage_free(nk);

    /* Tampering: each detected as CAIRN_E_CORRUPT naming the object. */
    struct blob o1 = obj_get(st, "b1", "secret-notes.txt");
    struct blob o2 = obj_get(st, "b2", "secret-notes.txt");
    CHECK(o1.n > 32 + 2 * (65536 + 16) || o1.n > 64); /* compressed: maybe one chunk */
    struct blob t = {xmalloc(o2.n), o2.n};
    size_t offs[] = {0, 9, 31, 32, 40, 65536, o2.n - 17, o2.n - 1};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        memcpy(t.p, o2.p, o2.n);
        t.p[offs[i]] ^= 0x20;
        obj_put(st, "b2", "secret-notes.txt", t.p, t.n);
        CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
                  "b2/secret-notes.txt");
        free(got.p);
    }
    /* truncated: at a chunk boundary and inside one; one byte more */
    size_t cuts[] = {32, 32 + 65536 + 16, 32 + 2 * (65536 + 16), o2.n - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        obj_put(st, "b2", "secret-notes.txt", o2.p, cuts[i]);
        CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
                  "b2/secret-notes.txt");
        free(got.p);
    }
    memcpy(t.p, o2.p, o2.n);
    /* two chunks swapped */
    size_t cl = 65536 + 16;
    memcpy(t.p + 32, o2.p + 32 + cl, cl);
    memcpy(t.p + 32 + cl, o2.p + 32, cl);
    obj_put(st, "b2", "secret-notes.txt", t.p, t.n);
    CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
              "b2/secret-notes.txt");
    free(got.p);
    /* the last chunk dropped (the one before it is not marked last) */
    obj_put(st, "b2", "secret-notes.txt", o2.p, 32 + 3 * cl);
    CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
              "b2/secret-notes.txt");
    free(got.p);
    /* objects swapped between backups (same file name) */
    obj_put(st, "b2", "secret-notes.txt", o1.p, o1.n);
    CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
              "b2/secret-notes.txt");
    free(got.p);
    /* MANIFESTs swapped: each names its backup in its additional data */
    struct blob m1 = obj_get(st, "b1", "MANIFEST"), m2 = obj_get(st, "b2", "MANIFEST");
    obj_put(st, "b2", "MANIFEST", m1.p, m1.n);
    CHECK_ERR(cairn_storage_open_backup(st, "b2", &b, &e), CAIRN_E_CORRUPT, &e, "b2/MANIFEST");
    obj_put(st, "b2", "MANIFEST", m2.p, m2.n);
    obj_put(st, "b2", "secret-notes.txt", o2.p, o2.n);
    CHECK_OK(get_all(st, "b2", "secret-notes.txt", &got, &e), &e);
    free(got.p);
    /* A plaintext object put in place of an encrypted one. */
    obj_put(st, "b2", "secret-notes.txt", d2, n2);
    CHECK_ERR(get_all(st, "b2", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
              "not an encrypted cairn object");
    free(got.p);
    /* Replay: b1 removed and made again under the same name; its old MANIFEST put back. */
    CHECK_OK(cairn_storage_remove(st, "b1", &e), &e);
    put_file(st, "b1", "secret-notes.txt", d2, n2, 0);
    obj_put(st, "b1", "MANIFEST", m1.p, m1.n);
    CHECK_ERR(get_all(st, "b1", "secret-notes.txt", &got, &e), CAIRN_E_CORRUPT, &e,
              "b1/secret-notes.txt");
    free(got.p);
    free(m1.p);
    free(m2.p);
    free(o1.p);
    free(o2.p);
    free(t.p);
    free(d1);
    free(d2);
    cairn_storage_free(st);
}

/* A local tree (split MANIFEST machinery, the tree file, locks) round trip, encrypted. */
REPO_CASE(encrypted_path)
{
    struct cairn_err e;
    struct cairn_storage *st0 = open_st(url);
    CHECK_OK(cairn_repo_init(st0, NULL, &sec_pw, NULL, &e), &e);
    cairn_storage_free(st0);
    struct cairn_storage *st = keyed_st(url, &sec_pw);
    char *src = xasprintf("%s/src%d", test_tmpdir(), url_seq++);
    CHECK(mkdir(src, 0700) == 0);
    for (int i = 0; i < 5; i++) {
        char *p = xasprintf("%s/confidential-%d.txt", src, i);
        FILE *f = fopen(p, "w");
        for (int j = 0; j < 1000 * (i + 1); j++)
            fprintf(f, "%s %d\n", MARKER, j);
        fclose(f);
        free(p);
    }
    CHECK_OK(cairn_storage_backup_path(st, "tree", src, NULL, &e), &e);
    char *dst = xasprintf("%s.out", src);
    CHECK_OK(cairn_storage_restore_path(st, "tree", dst, NULL, &e), &e);
    for (int i = 0; i < 5; i++) {
        char *a = xasprintf("%s/confidential-%d.txt", src, i);
        char *b = xasprintf("%s/confidential-%d.txt", dst, i);
        uint8_t *da = NULL, *db = NULL;
        size_t la = 0, lb = 0;
        CHECK_OK(read_file_max(a, 1 << 20, &da, &la, &e), &e);
        CHECK_OK(read_file_max(b, 1 << 20, &db, &lb, &e), &e);
        CHECK(la == lb && la > 0 && memcmp(da, db, la) == 0);
        free(da);
        free(db);
        free(a);
        free(b);
    }
    const char *needles[] = {MARKER, "confidential", NULL};
    struct scan sc = {st, NULL, needles, NULL, 0, 0, 0};
    CHECK_OK(st->drv->list(st->state, scan_backup, &sc, &e), &e);
    /* A deduplicating repository: the contents are in packs, named by an index object. */
    scan_backup(&sc, ".data");
    scan_backup(&sc, ".index");
    CHECK(sc.objects >= 3); /* MANIFEST, a pack, an index object */
    CHECK_EQ_INT(sc.found, 0);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "tree", &b, &e), &e);
    CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &e), &e);
    cairn_backup_free(b);
    free(src);
    free(dst);
    cairn_storage_free(st);
}

/* ---- 10,000 random changes, none accepted ---- */

static void file_put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* Every file of backup name read to its end through the verified reader: CAIRN_OK only when
 * everything authenticated and matched. */
static int read_backup(struct cairn_storage *st, const char *name)
{
    struct cairn_backup *b = NULL;
    struct cairn_err e;
    int rc = cairn_storage_open_backup(st, name, &b, &e);
    for (size_t i = 0; rc == CAIRN_OK && i < cairn_backup_file_count(b); i++) {
        struct cairn_reader *r = NULL;
        rc = cairn_backup_get_file(b, cairn_backup_file_at(b, i)->name, &r, &e);
        uint8_t buf[8192];
        size_t got = 1;
        while (rc == CAIRN_OK && got > 0)
            rc = cairn_reader_read(r, buf, sizeof(buf), &got, &e);
        cairn_reader_free(r);
    }
    cairn_backup_free(b);
    return rc;
}

TEST(tamper_10000)
{
    struct cairn_err e;
    char *root = xasprintf("%s/tamper", test_tmpdir());
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = open_st(url);
    struct cairn_repo_init_opts o = {.chunk_size = 4096, .no_dedup = 1}; /* whole files */
    CHECK_OK(cairn_repo_init(st, &o, &sec_k1, NULL, &e), &e);
    CHECK_OK(cairn_storage_set_secret(st, &sec_k1, &e), &e);
    size_t n = 5 * 4096 + 100;
    uint8_t *d = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)(i * 31 + i / 7);
    /* "r" made twice: its first MANIFEST is the replay; "s" the other backup */
    put_file(st, "r", "a", d, n, 0);
    char *rm_path = xasprintf("%s/r/MANIFEST", root);
    uint8_t *old_m = NULL;
    size_t old_mn = 0;
    CHECK_OK(read_file_max(rm_path, 1 << 20, &old_m, &old_mn, &e), &e);
    char *ra_path = xasprintf("%s/r/a", root);
    uint8_t *old_a = NULL; /* r's older "a": the replay of a data object */
    size_t old_an = 0;
    CHECK_OK(read_file_max(ra_path, 1 << 20, &old_a, &old_an, &e), &e);
    free(ra_path);
    CHECK_OK(cairn_storage_remove(st, "r", &e), &e);
    d[0] ^= 1;
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "r", &b, &e), &e);
    const char *files[] = {"a", "b"};
    for (int f = 0; f < 2; f++) {
        struct cairn_writer *w = NULL;
        CHECK_OK(cairn_backup_add_file(b, files[f], (int64_t)n, &w, &e), &e);
        CHECK_OK(cairn_writer_write(w, d, n - (size_t)f * 3000, &e), &e);
        CHECK_OK(cairn_writer_close(w, &e), &e);
        cairn_writer_free(w);
    }
    CHECK_OK(cairn_backup_end(b, &e), &e);
    cairn_backup_free(b);
    put_file(st, "s", "a", d, n, 0);
    CHECK_OK(read_backup(st, "r"), &e);
    const char *objs[] = {"r/a", "r/b", "r/MANIFEST", "s/a", "s/MANIFEST"};
    uint8_t *orig[5];
    size_t on[5];
    char *paths[5];
    for (int k = 0; k < 5; k++) {
        paths[k] = xasprintf("%s/%s", root, objs[k]);
        CHECK_OK(read_file_max(paths[k], 1 << 20, &orig[k], &on[k], &e), &e);
    }
    unsigned seed = (unsigned)(getenv("CAIRN_SEED") ? atoi(getenv("CAIRN_SEED")) : (int)getpid());
    printf("# seed %u\n", seed);
    srand(seed);
    size_t accepted = 0, kinds[5] = {0};
    uint8_t *t = xmalloc(1 << 20);
    for (int it = 0; it < 10000; it++) {
        int k = rand() % 3; /* an object of r */
        int kind = rand() % 5;
        size_t len = on[k];
        memcpy(t, orig[k], len);
        size_t cl = 4096 + 16, nch = (len - 32 + cl - 1) / cl;
        if (kind == 0) { /* flip */
            t[(size_t)rand() % len] ^= (uint8_t)(1 + rand() % 255);
        } else if (kind == 1) { /* truncate */
            len = (size_t)rand() % len;
        } else if (kind == 2 && nch >= 2) { /* swap two chunks (same size: not the last) */
            size_t a = (size_t)rand() % (nch - 1), c = (size_t)rand() % (nch - 1);
            if (a == c)
                c = (a + 1) % (nch - 1);
            if (a == c) { /* only one full chunk: swap it with the last */
                c = nch - 1;
            }
            size_t lc = c == nch - 1 ? len - 32 - c * cl : cl;
            size_t m = lc < cl ? lc : cl;
            uint8_t tmp[4096 + 16];
            memcpy(tmp, t + 32 + a * cl, m);
            memcpy(t + 32 + a * cl, t + 32 + c * cl, m);
            memcpy(t + 32 + c * cl, tmp, m);
        } else if (kind == 3) { /* another object in its place */
            int j = (k + 1 + rand() % 4) % 5;
            len = on[j];
            memcpy(t, orig[j], len);
        } else { /* replay: r's older MANIFEST, or its older "a" (in the place of a or b) */
            len = k == 2 ? old_mn : old_an;
            memcpy(t, k == 2 ? old_m : old_a, len);
        }
        kinds[kind]++;
        file_put(paths[k], t, len);
        if (read_backup(st, "r") == CAIRN_OK) {
            accepted++;
            test_fail(__FILE__, __LINE__, "change %d (kind %d of %s) accepted", it, kind, objs[k]);
        }
        file_put(paths[k], orig[k], on[k]);
    }
    printf("# 10000 changes (flip %zu, cut %zu, chunk swap %zu, object swap %zu, replay %zu): "
           "%zu accepted\n",
           kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], accepted);
    CHECK_EQ_INT(accepted, 0);
    CHECK_OK(read_backup(st, "r"), &e);
    for (int k = 0; k < 5; k++) {
        free(orig[k]);
        free(paths[k]);
    }
    free(t);
    free(old_m);
    free(old_a);
    free(rm_path);
    free(d);
    free(url);
    free(root);
    cairn_storage_free(st);
}

TEST(key_generate)
{
    char *p = path_join(test_tmpdir(), "k.key");
    struct cairn_err e;
    CHECK_OK(cairn_repo_key_generate(p, &e), &e);
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    CHECK_EQ_INT(sb.st_mode & 0777, 0600);
    CHECK_EQ_INT(sb.st_size, 32);
    CHECK_ERR(cairn_repo_key_generate(p, &e), CAIRN_E_EXISTS, &e, "k.key");
    uint8_t k[32];
    CHECK_OK(cairn_key_load(p, k, &e), &e);
    char *q = path_join(test_tmpdir(), "k2.key");
    CHECK_OK(cairn_repo_key_generate(q, &e), &e);
    uint8_t k2[32];
    CHECK_OK(cairn_key_load(q, k2, &e), &e);
    CHECK(memcmp(k, k2, 32) != 0);
    free(p);
    free(q);
}

/* The passphrase KDF's cost, for docs/FORMAT.md: printed, never judged (machine speed). */
TEST(scrypt_cost)
{
    char *u = xasprintf("file://%s/s", test_tmpdir());
    struct cairn_storage *st = open_st(u);
    free(u);
    struct cairn_repo *r = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_repo_init(st, NULL, &sec_pw, &r, &e), &e);
    cairn_repo_free(r);
    uint64_t t0 = mono_ns();
    CHECK_OK(cairn_repo_open(st, &sec_pw, &r, &e), &e);
    printf("# unlock with a password (scrypt N=2^%d r=%d p=%d): %.0f ms\n", CAIRN_REPO_SCRYPT_LOG_N,
           CAIRN_REPO_SCRYPT_R, CAIRN_REPO_SCRYPT_P, (double)(mono_ns() - t0) / 1e6);
    cairn_repo_free(r);
    cairn_storage_free(st);
}

/* Files of 1 MiB or more are decrypted and checked ahead on a helper thread: a changed byte,
 * a cut or a swapped chunk in one is still CAIRN_E_CORRUPT naming it, the bytes before it
 * never a complete file; the intact file reads back whole (plain and zstd). */
TEST(read_ahead_tamper)
{
    struct cairn_err e;
    char *root = xasprintf("%s/ra", test_tmpdir());
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = open_st(url);
    /* --no-dedup: the cases tamper with the per-file object's chunks at known offsets */
    const struct cairn_repo_init_opts nd = {.no_dedup = 1};
    CHECK_OK(cairn_repo_init(st, &nd, &sec_k1, NULL, &e), &e);
    CHECK_OK(cairn_storage_set_secret(st, &sec_k1, &e), &e);
    size_t n = (3u << 20) + 123;
    uint8_t *d = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)(i * 131 + (i >> 9));
    put_file(st, "big", "a", d, n, 0);
    put_file(st, "bigz", "a", d, n, 1);
    struct blob got = {0};
    CHECK_OK(get_all(st, "big", "a", &got, &e), &e);
    CHECK(got.n == n && memcmp(got.p, d, n) == 0);
    free(got.p);
    got = (struct blob){0};
    CHECK_OK(get_all(st, "bigz", "a", &got, &e), &e);
    CHECK(got.n == n && memcmp(got.p, d, n) == 0);
    free(got.p);
    char *path = xasprintf("%s/big/a", root);
    uint8_t *orig = NULL;
    size_t on = 0;
    CHECK_OK(read_file_max(path, 8u << 20, &orig, &on, &e), &e);
    size_t cl = CAIRN_REPO_CHUNK_DEFAULT + 16;
    uint8_t *t = xmalloc(on);
    for (int k = 0; k < 3; k++) {
        memcpy(t, orig, on);
        size_t len = on;
        if (k == 0)
            t[32 + 20 * cl + 7] ^= 0x10; /* a byte of chunk 20 */
        else if (k == 1)
            len = 32 + 30 * cl; /* cut after chunk 29 */
        else {                  /* chunks 5 and 40 swapped */
            uint8_t tmp[CAIRN_REPO_CHUNK_DEFAULT + 16];
            memcpy(tmp, t + 32 + 5 * cl, cl);
            memcpy(t + 32 + 5 * cl, t + 32 + 40 * cl, cl);
            memcpy(t + 32 + 40 * cl, tmp, cl);
        }
        file_put(path, t, len);
        got = (struct blob){0};
        CHECK_ERR(get_all(st, "big", "a", &got, &e), CAIRN_E_CORRUPT, &e, "big/a");
        free(got.p);
    }
    file_put(path, orig, on);
    got = (struct blob){0};
    CHECK_OK(get_all(st, "big", "a", &got, &e), &e);
    free(got.p);
    free(t);
    free(orig);
    free(path);
    free(d);
    free(url);
    free(root);
    cairn_storage_free(st);
}

/* A password key stretched with Argon2id: it opens with its password only, records its
 * parameters, and a key object asking for 4 GiB (an attacker's) does not open (exit 4, saying
 * why) and costs no work. */
TEST(argon2id_password)
{
    char *u = xasprintf("file://%s/a2", test_tmpdir());
    struct cairn_storage *st = open_st(u);
    free(u);
    struct cairn_repo *r = NULL;
    struct cairn_err e;
    const struct cairn_repo_secret a2 = {NULL, "correct horse battery staple", "argon2id"};
    const struct cairn_repo_secret bad = {NULL, "wrong", "md5"};
    CHECK_ERR(cairn_repo_init(st, NULL, &bad, &r, &e), CAIRN_E_INVALID, &e, "unknown key deriv");
    CHECK_OK(cairn_repo_init(st, NULL, &a2, &r, &e), &e);
    char *file = xasprintf("key-%s", cairn_repo_key_id(r));
    cairn_repo_free(r);
    uint64_t t0 = mono_ns();
    CHECK_OK(cairn_repo_open(st, &sec_pw, &r, &e), &e); /* the kdf comes from the key object */
    printf("# unlock with a password (argon2id t=%d m=%d KiB p=%d): %.0f ms\n", CAIRN_REPO_ARGON2_T,
           CAIRN_REPO_ARGON2_M_KIB, CAIRN_REPO_ARGON2_P, (double)(mono_ns() - t0) / 1e6);
    cairn_repo_free(r);
    CHECK_ERR(cairn_repo_open(st, &sec_pw_bad, &r, &e), CAIRN_E_SEAL, &e, "password");
    size_t len = 0;
    char *orig = raw_get(st, file, &len);
    CHECK(strstr(orig, "\"kdf\": \"argon2id\"") != NULL && strstr(orig, "\"m\": 16384") != NULL);
    json_t *j = json_loads(orig, 0, NULL);
    json_object_set_new(json_object_get(j, "argon2id"), "m", json_integer(1 << 22));
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    raw_put(st, file, t, strlen(t));
    CHECK_ERR(cairn_repo_open(st, &sec_pw, &r, &e), CAIRN_E_SEAL, &e, "out of range");
    json_decref(j);
    free(t);
    free(orig);
    free(file);
    cairn_storage_free(st);
}

int main(int argc, char **argv)
{
    (void)fault_proxy_start; /* the fixture's proxy is not needed here */
    (void)fault_proxy_stop;
    return test_main(argc, argv);
}
