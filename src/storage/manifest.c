/* The MANIFEST: versioned JSON describing a complete backup, optionally sealed with
 * HMAC-SHA-256 over its canonical form (compact, sorted keys, without the "seal" field). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/util.h"
#include "internal.h"

#define SEAL_ALG "hmac-sha256"

static int cmp_rec(const void *a, const void *b)
{
    return strcmp((*(struct file_rec *const *)a)->f.name, (*(struct file_rec *const *)b)->f.name);
}

/* HMAC-SHA-256 of the canonical JSON of m (which must not hold "seal"), hex into out[65].
 * Kept local on purpose until the archive module's sealers land in main; then this becomes a
 * call to them (the canonical form and the "seal" field stay). */
static void seal_mac(const json_t *m, const uint8_t *key, char out[65])
{
    char *canon = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL)
        abort(); /* allocation failure */
    uint8_t mac[32];
    cairn_hmac_sha256(key, NULL, 0, canon, strlen(canon), mac);
    cairn_hex_encode(mac, 32, out);
    free(canon);
}

char *cairn_manifest_build(const struct cairn_backup *b, const uint8_t *key)
{
    struct file_rec **sorted = cairn_xcalloc(b->nfiles ? b->nfiles : 1, sizeof(*sorted));
    size_t n = 0;
    for (size_t i = 0; i < b->nfiles; i++)
        if (b->files[i]->state == FILE_COMMITTED)
            sorted[n++] = b->files[i];
    qsort(sorted, n, sizeof(*sorted), cmp_rec);
    json_t *files = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct cairn_manifest_file *f = &sorted[i]->f;
        json_array_append_new(files,
                              json_pack("{s:s, s:I, s:s, s:s, s:I, s:s}", "name", f->name, "size",
                                        (json_int_t)f->size, "sha256", f->sha256, "compression",
                                        f->compression == CAIRN_COMPRESS_ZSTD ? "zstd" : "none",
                                        "logical_size", (json_int_t)f->logical_size,
                                        "logical_sha256", f->logical_sha256));
    }
    free(sorted);
    char created[64];
    cairn_format_rfc3339(b->created, 0, created, sizeof(created));
    json_t *m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:o, s:O, s:o}", "version",
                          CAIRN_MANIFEST_VERSION, "name", b->name, "created", created, "source",
                          b->source ? b->source : "", "kind", b->kind ? b->kind : "files", "parent",
                          b->parent ? json_string(b->parent) : json_null(), "meta", b->meta,
                          "files", files);
    if (m == NULL)
        abort();
    /* Optional, so MANIFESTs without it (older cairn) still read; the version stays 1. */
    if (b->scope != NULL)
        json_object_set(m, "scope", b->scope);
    if (key != NULL) {
        char mac[65];
        seal_mac(m, key, mac);
        json_object_set_new(m, "seal", json_pack("{s:s, s:s}", "alg", SEAL_ALG, "mac", mac));
    }
    char *text = json_dumps(m, JSON_INDENT(2));
    json_decref(m);
    if (text == NULL)
        abort();
    size_t len = strlen(text);
    char *out = cairn_xmalloc(len + 2);
    memcpy(out, text, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    free(text);
    return out;
}

static int is_hex64(const char *s)
{
    if (s == NULL || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

#define BAD(...) cairn_err_set(err, CAIRN_E_CORRUPT, __VA_ARGS__)

int cairn_manifest_parse(struct cairn_backup *b, const char *text, size_t len, const uint8_t *key,
                         struct cairn_err *err)
{
    json_error_t je;
    json_t *m = json_loadb(text, len, 0, &je);
    int rc = CAIRN_OK;
    if (m == NULL)
        return BAD("backup '%s': MANIFEST is not valid JSON (line %d: %s)", b->name, je.line,
                   je.text);
    json_int_t version = 0;
    const char *name = NULL, *created = NULL, *source = NULL, *kind = NULL;
    json_t *parent = NULL, *meta = NULL, *files = NULL, *seal = NULL, *scope = NULL;
    if (!json_is_object(m) || json_unpack_ex(m, &je, 0, "{s:I}", "version", &version) != 0) {
        rc = BAD("backup '%s': MANIFEST has no version", b->name);
        goto out;
    }
    if (version != CAIRN_MANIFEST_VERSION) {
        rc = BAD("backup '%s': unsupported MANIFEST version %lld (this cairn reads version %d)",
                 b->name, (long long)version, CAIRN_MANIFEST_VERSION);
        goto out;
    }
    if (json_unpack_ex(m, &je, 0, "{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s?o, s?o}", "name", &name,
                       "created", &created, "source", &source, "kind", &kind, "parent", &parent,
                       "meta", &meta, "files", &files, "seal", &seal, "scope", &scope) != 0) {
        rc = BAD("backup '%s': MANIFEST is missing fields: %s", b->name, je.text);
        goto out;
    }
    if (strcmp(name, b->name) != 0) {
        rc = BAD("backup '%s': MANIFEST names another backup '%s'", b->name, name);
        goto out;
    }
    int64_t sec;
    long nsec;
    if (cairn_parse_rfc3339(created, &sec, &nsec) != 0) {
        rc = BAD("backup '%s': MANIFEST has a bad creation time '%s'", b->name, created);
        goto out;
    }
    if (!(json_is_null(parent) ||
          (json_is_string(parent) && cairn_name_valid(json_string_value(parent)))) ||
        !json_is_object(meta) || !json_is_array(files) ||
        (scope != NULL && !json_is_object(scope))) {
        rc = BAD("backup '%s': MANIFEST has a bad parent, meta, scope or files field", b->name);
        goto out;
    }
    if (seal != NULL) {
        const char *alg = NULL, *mac = NULL;
        if (json_unpack(seal, "{s:s, s:s}", "alg", &alg, "mac", &mac) != 0 ||
            strcmp(alg, SEAL_ALG) != 0 || !is_hex64(mac)) {
            rc = BAD("backup '%s': MANIFEST seal is malformed", b->name);
            goto out;
        }
        b->sealed = 1;
        if (key != NULL) {
            char want[65];
            json_t *copy = json_copy(m);
            json_object_del(copy, "seal");
            seal_mac(copy, key, want);
            json_decref(copy);
            if (CRYPTO_memcmp(want, mac, 64) != 0) {
                rc = cairn_err_set(err, CAIRN_E_SEAL,
                                   "backup '%s': MANIFEST seal does not match (tampered or "
                                   "wrong key)",
                                   b->name);
                goto out;
            }
        }
    } else if (key != NULL) {
        rc = cairn_err_set(err, CAIRN_E_SEAL,
                           "backup '%s': MANIFEST is not sealed but a seal key was given", b->name);
        goto out;
    }
    size_t n = json_array_size(files);
    struct file_rec **recs = cairn_xcalloc(n ? n : 1, sizeof(*recs));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(files, i);
        const char *fname = NULL, *sha = NULL, *comp = NULL, *lsha = NULL;
        json_int_t size = -1, lsize = -1;
        if (json_unpack(e, "{s:s, s:I, s:s, s:s, s:I, s:s}", "name", &fname, "size", &size,
                        "sha256", &sha, "compression", &comp, "logical_size", &lsize,
                        "logical_sha256", &lsha) != 0 ||
            !cairn_name_valid(fname) || size < 0 || lsize < 0 || !is_hex64(sha) ||
            !is_hex64(lsha) || (strcmp(comp, "none") != 0 && strcmp(comp, "zstd") != 0)) {
            rc = BAD("backup '%s': MANIFEST file entry %zu is invalid", b->name, i);
        } else {
            for (size_t j = 0; j < i && rc == CAIRN_OK; j++)
                if (strcmp(recs[j]->f.name, fname) == 0)
                    rc = BAD("backup '%s': MANIFEST lists file '%s' twice", b->name, fname);
        }
        if (rc != CAIRN_OK) {
            for (size_t j = 0; j < i; j++)
                cairn_file_rec_free(recs[j]);
            free(recs);
            goto out;
        }
        struct file_rec *r = cairn_xcalloc(1, sizeof(*r));
        r->f.name = cairn_xstrdup(fname);
        r->f.size = (uint64_t)size;
        memcpy(r->f.sha256, sha, 65);
        r->f.compression = strcmp(comp, "zstd") == 0 ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_NONE;
        r->f.logical_size = (uint64_t)lsize;
        memcpy(r->f.logical_sha256, lsha, 65);
        r->state = FILE_COMMITTED;
        recs[i] = r;
    }
    for (size_t i = 0; i < b->nfiles; i++)
        cairn_file_rec_free(b->files[i]);
    free(b->files);
    b->files = recs;
    b->nfiles = b->cap = n;
    free(b->kind);
    free(b->source);
    free(b->parent);
    b->kind = cairn_xstrdup(kind);
    b->source = cairn_xstrdup(source);
    b->parent = json_is_string(parent) ? cairn_xstrdup(json_string_value(parent)) : NULL;
    json_decref(b->meta);
    b->meta = json_incref(meta);
    json_decref(b->scope);
    b->scope = scope != NULL ? json_incref(scope) : NULL;
    b->created = sec;
    b->status = CAIRN_BACKUP_COMPLETE;
out:
    json_decref(m);
    return rc;
}

int cairn_manifest_load(struct cairn_backup *b, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = b->st->drv->read(b->st->state, b->name, CAIRN_MANIFEST_NAME, &r, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, "backup '%s' MANIFEST", b->name);
        return rc;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = cairn_xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= MANIFEST_MAX) {
                rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                                   "backup '%s': MANIFEST is larger than %u bytes", b->name,
                                   MANIFEST_MAX);
                goto out;
            }
            cap *= 2;
            buf = cairn_xrealloc(buf, cap);
        }
        size_t got = 0;
        rc = cairn_reader_read(r, buf + len, cap - len, &got, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, "backup '%s': read MANIFEST", b->name);
            goto out;
        }
        if (got == 0)
            break;
        len += got;
    }
    rc = cairn_manifest_parse(b, buf, len, b->st->has_key ? b->st->key : NULL, err);
out:
    free(buf);
    cairn_reader_free(r);
    return rc;
}
