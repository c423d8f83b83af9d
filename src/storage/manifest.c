/* The MANIFEST: versioned JSON describing a complete backup, optionally sealed with
 * HMAC-SHA-256 over its canonical form (compact, sorted keys, without the "seal" field). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/util.h"
#include "internal.h"

#define SEAL_ALG "hmac-sha256"

int manifest_cmp_rec(const void *a, const void *b)
{
    return strcmp((*(struct file_rec *const *)a)->f.name, (*(struct file_rec *const *)b)->f.name);
}

/* What the seal covers: the canonical JSON of m (which must not hold "seal"). Its HMAC is
 * made and checked by the library's HMAC helper (common/digest.c), as the archive's hmac
 * sealer's is. */
static char *seal_text(const json_t *m)
{
    char *canon = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL)
        abort(); /* allocation failure */
    return canon;
}

static const char *comp_name(enum cairn_compression c)
{
    return c == CAIRN_COMPRESS_ZSTD ? "zstd" : c == CAIRN_COMPRESS_CHUNKS ? "chunks" : "none";
}

/* The committed files of b sorted by name (*n of them); free the array. */
static struct file_rec **sorted_committed(const struct cairn_backup *b, size_t *n)
{
    struct file_rec **sorted = xcalloc(b->nfiles ? b->nfiles : 1, sizeof(*sorted));
    *n = 0;
    for (size_t i = 0; i < b->nfiles; i++)
        if (b->files[i]->state == FILE_COMMITTED)
            sorted[(*n)++] = b->files[i];
    qsort(sorted, *n, sizeof(*sorted), manifest_cmp_rec);
    return sorted;
}

/* The indented text of m plus a newline, sealed with key when non-NULL (m gains "seal"). */
static char *finish_text(json_t *m, const uint8_t *key)
{
    if (key != NULL) {
        uint8_t mac[32];
        char hex[65], *canon = seal_text(m);
        cairn_hmac_sha256(key, NULL, 0, canon, strlen(canon), mac);
        free(canon);
        cairn_hex_encode(mac, 32, hex);
        json_object_set_new(m, "seal", json_pack("{s:s, s:s}", "alg", SEAL_ALG, "mac", hex));
    }
    char *text = json_dumps(m, JSON_INDENT(2));
    if (text == NULL)
        abort();
    size_t len = strlen(text);
    char *out = xmalloc(len + 2);
    memcpy(out, text, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    free(text);
    return out;
}

json_t *manifest_file_json(const struct cairn_manifest_file *f)
{
    return json_pack("{s:s, s:I, s:s, s:s, s:I, s:s}", "name", f->name, "size", (json_int_t)f->size,
                     "sha256", f->sha256, "compression", comp_name(f->compression), "logical_size",
                     (json_int_t)f->logical_size, "logical_sha256", f->logical_sha256);
}

/* Encrypted repositories: the backup's random id, which its files' encryption binds. */
static void set_bid(const struct cairn_backup *b, json_t *m)
{
    if (!b->has_bid)
        return;
    char hex[33];
    cairn_hex_encode(b->bid, sizeof(b->bid), hex);
    json_object_set_new(m, "backup_id", json_string(hex));
}

char *manifest_build(const struct cairn_backup *b, const uint8_t *key)
{
    size_t n;
    struct file_rec **sorted = sorted_committed(b, &n);
    json_t *files = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(files, manifest_file_json(&sorted[i]->f));
    free(sorted);
    char created[64];
    format_rfc3339(b->created, 0, created, sizeof(created));
    json_t *m = json_pack(
        "{s:i, s:s, s:s, s:s, s:s, s:o, s:O, s:o}", "version",
        repo_chunking(b->st->repo) != NULL ? MANIFEST_CHUNKED_VERSION : CAIRN_MANIFEST_VERSION,
        "name", b->name, "created", created, "source", b->source ? b->source : "", "kind",
        b->kind ? b->kind : "files", "parent", b->parent ? json_string(b->parent) : json_null(),
        "meta", b->meta, "files", files);
    if (m == NULL)
        abort();
    /* Optional, so MANIFESTs without it (older cairn) still read; the version stays 1. */
    if (b->scope != NULL)
        json_object_set(m, "scope", b->scope);
    set_bid(b, m);
    char *out = finish_text(m, key);
    json_decref(m);
    return out;
}

/* ---- writing ---- */

#define BUF_CAP  (1u << 20)
#define LINE_CAP 1024 /* a file line: a name of at most CAIRN_NAME_MAX bytes, fixed fields */

struct count {
    size_t n, max;
};

static int count_cb(const char *buf, size_t len, void *arg)
{
    struct count *c = arg;
    (void)buf;
    c->n += len;
    return c->n > c->max ? -1 : 0; /* enough: stop dumping */
}

/* Whether b's one-document MANIFEST surely stays under MANIFEST_INLINE_MAX: a generous bound
 * per indented file entry, and twice the meta's own indented size (it is nested deeper). */
static int fits_inline(const struct cairn_backup *b)
{
    if (b->body != NULL)
        return 0; /* a streaming writer has started a split body */
    size_t est = 4096 + strlen(b->name) + (b->source ? strlen(b->source) : 0) +
                 (b->kind ? strlen(b->kind) : 0) + (b->parent ? strlen(b->parent) : 0);
    for (size_t i = 0; i < b->nfiles && est <= MANIFEST_INLINE_MAX; i++)
        est += 400 + strlen(b->files[i]->f.name);
    if (est > MANIFEST_INLINE_MAX)
        return 0;
    struct count c = {0, (MANIFEST_INLINE_MAX - est) / 2};
    return json_dump_callback(b->meta, count_cb, &c, JSON_INDENT(2)) == 0;
}

/* Body of a split MANIFEST being written: buffered, cut into parts of MANIFEST_PART_SIZE. */
struct body_out {
    struct cairn_backup *b;
    json_t *parts;
    struct cairn_writer *w; /* the part being written, NULL between parts */
    uint64_t n;             /* its bytes so far */
    struct cairn_sha256 h;
    char *buf;
    size_t len;
    int rc;
    struct cairn_err *err;
    uint64_t logical; /* the logical bytes of every file line put so far */
};

static void part_name(size_t i, char *out, size_t cap)
{
    snprintf(out, cap, "%s.part%06zu", CAIRN_MANIFEST_NAME, i);
}

static int part_open(struct body_out *o)
{
    char name[64];
    part_name(json_array_size(o->parts), name, sizeof(name));
    struct cairn_backup *b = o->b;
    /* Not ATOMIC: the header names each part with its size and SHA-256, so a torn one is
     * caught, and the header is published only after every part. */
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_SYNC};
    int rc = storage_create(b->st, b->name, name, backup_bid(b), -1, &wo, &o->w, o->err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(o->err, rc, "backup '%s': write %s", b->name, name);
        return rc;
    }
    o->n = 0;
    storage_hash_init(b->st, &o->h);
    return CAIRN_OK;
}

static int part_close(struct body_out *o)
{
    char name[64], hex[65];
    uint8_t d[32];
    part_name(json_array_size(o->parts), name, sizeof(name));
    int rc = cairn_writer_close(o->w, o->err);
    cairn_writer_free(o->w);
    o->w = NULL;
    cairn_sha256_final(&o->h, d);
    cairn_hex_encode(d, 32, hex);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(o->err, rc, "backup '%s': write %s", o->b->name, name);
        return rc;
    }
    json_array_append_new(o->parts, json_pack("{s:s, s:I, s:s}", "name", name, "size",
                                              (json_int_t)o->n, "sha256", hex));
    return CAIRN_OK;
}

static int out_flush(struct body_out *o)
{
    for (size_t off = 0; o->rc == CAIRN_OK && off < o->len;) {
        if (o->w == NULL && (o->rc = part_open(o)) != CAIRN_OK)
            break;
        size_t k = o->len - off;
        if (k > MANIFEST_PART_SIZE - o->n)
            k = (size_t)(MANIFEST_PART_SIZE - o->n);
        o->rc = cairn_writer_write(o->w, o->buf + off, k, o->err);
        cairn_sha256_update(&o->h, o->buf + off, k);
        o->n += k;
        off += k;
        if (o->rc == CAIRN_OK && o->n == MANIFEST_PART_SIZE)
            o->rc = part_close(o);
    }
    o->len = 0;
    return o->rc;
}

static int out_put(struct body_out *o, const void *p, size_t len)
{
    while (len > 0 && o->rc == CAIRN_OK) {
        size_t k = len < BUF_CAP - o->len ? len : BUF_CAP - o->len;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p = (const char *)p + k;
        len -= k;
        if (o->len == BUF_CAP)
            out_flush(o);
    }
    return o->rc;
}

static int dump_out(const char *buf, size_t len, void *arg)
{
    return out_put(arg, buf, len) == CAIRN_OK ? 0 : -1;
}

static struct body_out *body_new(struct cairn_backup *b)
{
    struct body_out *o = xcalloc(1, sizeof(*o));
    o->b = b;
    o->parts = json_array();
    o->rc = CAIRN_OK;
    o->buf = xmalloc(BUF_CAP);
    return o;
}

void manifest_body_free(struct body_out *o)
{
    if (o == NULL)
        return;
    if (o->w != NULL) { /* failed or abandoned mid-part: discard it */
        cairn_writer_free(o->w);
        cairn_sha256_free(&o->h);
    }
    json_decref(o->parts);
    free(o->buf);
    free(o);
}

/* f's body line with its newline: "name size sha256 compression logical_size
 * logical_sha256\n". Returns its length. */
static size_t file_line(const struct cairn_manifest_file *f, char line[LINE_CAP])
{
    int k = snprintf(line, LINE_CAP, "%s %llu %s %s %llu %s\n", f->name,
                     (unsigned long long)f->size, f->sha256, comp_name(f->compression),
                     (unsigned long long)f->logical_size, f->logical_sha256);
    return k < 0 ? 0 : (size_t)k < LINE_CAP ? (size_t)k : LINE_CAP - 1;
}

void files_sum_add(struct files_sum *s, const struct cairn_manifest_file *f)
{
    char line[LINE_CAP];
    uint8_t d[32];
    cairn_sha256_oneshot(line, file_line(f, line), d);
    unsigned carry = 0;
    for (int i = 31; i >= 0; i--) {
        carry += (unsigned)s->v[i] + d[i];
        s->v[i] = (uint8_t)carry;
        carry >>= 8;
    }
    s->n++;
}

int files_sum_equal(const struct files_sum *a, const struct files_sum *b)
{
    return a->n == b->n && memcmp(a->v, b->v, sizeof(a->v)) == 0;
}

static void put_lines(struct body_out *o, struct file_rec **recs, size_t n, uint64_t *total)
{
    char line[LINE_CAP];
    for (size_t i = 0; i < n && o->rc == CAIRN_OK; i++) {
        out_put(o, line, file_line(&recs[i]->f, line));
        *total += recs[i]->f.size;
        o->logical += recs[i]->f.logical_size;
    }
}

int manifest_put_files(struct cairn_backup *b, struct file_rec **recs, size_t n,
                       struct cairn_err *err)
{
    if (b->body == NULL)
        b->body = body_new(b);
    struct body_out *o = b->body;
    o->err = err;
    uint64_t total = 0;
    put_lines(o, recs, n, &total);
    o->err = NULL;
    return o->rc;
}

/* The body: one line per committed file, sorted by name (after the lines a streaming writer
 * flushed already), then the meta as compact JSON and a newline. */
static int write_body(struct body_out *o, uint64_t *nfiles, uint64_t *total)
{
    size_t n;
    struct file_rec **sorted = sorted_committed(o->b, &n);
    *total = o->b->flushed_size;
    put_lines(o, sorted, n, total);
    free(sorted);
    *nfiles = o->b->nflushed + n;
    if (json_dump_callback(o->b->meta, dump_out, o, JSON_COMPACT) != 0 && o->rc == CAIRN_OK)
        o->rc =
            cairn_err_set(o->err, CAIRN_E_INTERNAL, "backup '%s': cannot encode meta", o->b->name);
    out_put(o, "\n", 1);
    out_flush(o);
    if (o->rc == CAIRN_OK && o->w != NULL)
        o->rc = part_close(o);
    return o->rc;
}

static int write_text(struct cairn_backup *b, const char *text, struct cairn_err *err)
{
    size_t len = strlen(text);
    struct cairn_writer *w = NULL;
    /* The header decides completeness: it must appear whole or not at all. */
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_ATOMIC |
                                                CAIRN_STORAGE_WRITE_SYNC};
    int rc = storage_create(b->st, b->name, CAIRN_MANIFEST_NAME, NULL, (int64_t)len, &wo, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, text, len, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

/* Split MANIFEST: the parts first (a streaming writer has written some already), then the
 * header naming them (size, SHA-256), last. */
static int write_split(struct cairn_backup *b, const uint8_t *key, struct cairn_err *err)
{
    if (b->body == NULL)
        b->body = body_new(b);
    struct body_out *o = b->body;
    o->err = err;
    if (o->rc != CAIRN_OK) /* a flush failed: its error is on the handle (stream_msg) */
        return cairn_err_set(err, o->rc, "backup '%s': %s", b->name,
                             b->stream_msg ? b->stream_msg : "writing the file list failed");
    uint64_t nfiles = 0, total = 0;
    int rc = write_body(o, &nfiles, &total);
    o->err = NULL;
    if (rc != CAIRN_OK)
        return rc;
    char created[64];
    format_rfc3339(b->created, 0, created, sizeof(created));
    json_t *m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:o, s:{s:I, s:I, s:I}, s:O}", "version",
                          repo_chunking(b->st->repo) != NULL ? MANIFEST_CHUNKED_SPLIT_VERSION
                                                             : MANIFEST_SPLIT_VERSION,
                          "name", b->name, "created", created, "source", b->source ? b->source : "",
                          "kind", b->kind ? b->kind : "files", "parent",
                          b->parent ? json_string(b->parent) : json_null(), "files", "count",
                          (json_int_t)nfiles, "size", (json_int_t)total, "logical_size",
                          (json_int_t)o->logical, "parts", o->parts);
    if (m == NULL)
        abort();
    if (b->scope != NULL) /* in the header: list and parent lookup read headers only */
        json_object_set(m, "scope", b->scope);
    set_bid(b, m);
    char *text = finish_text(m, key);
    json_decref(m);
    /* Never reached in practice (one part entry of ~150 bytes per 16 MiB of file list), but
     * the reader refuses a header this large, so the writer must not call it complete. */
    if (strlen(text) > MANIFEST_MAX)
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "backup '%s': MANIFEST header would exceed %u bytes", b->name,
                           MANIFEST_MAX);
    else
        rc = write_text(b, text, err);
    free(text);
    return rc;
}

int manifest_write(struct cairn_backup *b, struct cairn_err *err)
{
    const uint8_t *key = b->st->has_key ? b->st->key : NULL;
    if (!fits_inline(b))
        return write_split(b, key, err);
    char *text = manifest_build(b, key);
    int rc = write_text(b, text, err);
    free(text);
    return rc;
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

/* ---- reading ---- */

static int check_seal(struct cairn_backup *b, json_t *m, json_t *seal, const uint8_t *key,
                      struct cairn_err *err)
{
    if (seal == NULL)
        return key == NULL ? CAIRN_OK
                           : cairn_err_set(err, CAIRN_E_SEAL,
                                           "backup '%s': MANIFEST is not sealed but a seal key "
                                           "was given",
                                           b->name);
    const char *alg = NULL, *mac = NULL;
    if (json_unpack(seal, "{s:s, s:s}", "alg", &alg, "mac", &mac) != 0 ||
        strcmp(alg, SEAL_ALG) != 0 || !is_hex64(mac))
        return BAD("backup '%s': MANIFEST seal is malformed", b->name);
    b->sealed = 1;
    if (key == NULL)
        return CAIRN_OK;
    uint8_t tag[32];
    cairn_hex_decode(mac, 64, tag, sizeof(tag), NULL); /* is_hex64: it decodes */
    json_t *copy = json_copy(m);
    json_object_del(copy, "seal");
    char *canon = seal_text(copy);
    json_decref(copy);
    int ok = cairn_hmac_sha256_check(key, NULL, 0, canon, strlen(canon), tag);
    free(canon);
    if (!ok)
        return cairn_err_set(err, CAIRN_E_SEAL,
                             "backup '%s': MANIFEST seal does not match (tampered or wrong key)",
                             b->name);
    return CAIRN_OK;
}

static struct file_rec *new_rec(const char *name, json_int_t size, const char *sha,
                                const char *comp, json_int_t lsize, const char *lsha)
{
    if (!cairn_name_valid(name) || size < 0 || lsize < 0 || !is_hex64(sha) || !is_hex64(lsha) ||
        (strcmp(comp, "none") != 0 && strcmp(comp, "zstd") != 0 && strcmp(comp, "chunks") != 0))
        return NULL;
    struct file_rec *r = xcalloc(1, sizeof(*r));
    r->f.name = xstrdup(name);
    r->f.size = (uint64_t)size;
    memcpy(r->f.sha256, sha, 65);
    r->f.compression = strcmp(comp, "zstd") == 0     ? CAIRN_COMPRESS_ZSTD
                       : strcmp(comp, "chunks") == 0 ? CAIRN_COMPRESS_CHUNKS
                                                     : CAIRN_COMPRESS_NONE;
    r->f.logical_size = (uint64_t)lsize;
    memcpy(r->f.logical_sha256, lsha, 65);
    r->state = FILE_COMMITTED;
    return r;
}

static void free_recs(struct file_rec **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        file_rec_free(recs[i]);
    free(recs);
}

/* Sorted by name (a binary search finds them), each name once: O(n log n). */
static int sort_unique(struct cairn_backup *b, struct file_rec **recs, size_t n,
                       struct cairn_err *err)
{
    qsort(recs, n, sizeof(*recs), manifest_cmp_rec);
    for (size_t i = 1; i < n; i++)
        if (strcmp(recs[i - 1]->f.name, recs[i]->f.name) == 0)
            return BAD("backup '%s': MANIFEST lists file '%s' twice", b->name, recs[i]->f.name);
    return CAIRN_OK;
}

struct file_rec *manifest_file_parse(json_t *j)
{
    const char *fname = NULL, *sha = NULL, *comp = NULL, *lsha = NULL;
    json_int_t size = -1, lsize = -1;
    if (json_unpack(j, "{s:s, s:I, s:s, s:s, s:I, s:s}", "name", &fname, "size", &size, "sha256",
                    &sha, "compression", &comp, "logical_size", &lsize, "logical_sha256",
                    &lsha) != 0)
        return NULL;
    return new_rec(fname, size, sha, comp, lsize, lsha);
}

/* Version 1: the file list inline. */
static int parse_files(struct cairn_backup *b, json_t *files, struct file_rec ***out, size_t *nout,
                       struct cairn_err *err)
{
    size_t n = json_array_size(files);
    struct file_rec **recs = xcalloc(n ? n : 1, sizeof(*recs));
    for (size_t i = 0; i < n; i++) {
        if ((recs[i] = manifest_file_parse(json_array_get(files, i))) == NULL) {
            free_recs(recs, i);
            return BAD("backup '%s': MANIFEST file entry %zu is invalid", b->name, i);
        }
    }
    int rc = sort_unique(b, recs, n, err);
    if (rc != CAIRN_OK) {
        free_recs(recs, n);
        return rc;
    }
    *out = recs;
    *nout = n;
    return CAIRN_OK;
}

/* Version 2 header: the file summary and the parts. */
static int parse_parts(struct cairn_backup *b, json_t *files, json_t *parts, struct cairn_err *err)
{
    json_int_t count = -1, size = -1;
    if (json_unpack(files, "{s:I, s:I}", "count", &count, "size", &size) != 0 || count < 0 ||
        size < 0 || !json_is_array(parts))
        return BAD("backup '%s': MANIFEST has a bad files or parts field", b->name);
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        const char *name = NULL, *sha = NULL;
        json_int_t psize = -1;
        char want[64];
        part_name(i, want, sizeof(want));
        if (json_unpack(p, "{s:s, s:I, s:s}", "name", &name, "size", &psize, "sha256", &sha) != 0 ||
            strcmp(name, want) != 0 || psize < 0 || !is_hex64(sha))
            return BAD("backup '%s': MANIFEST part %zu is invalid", b->name, i);
    }
    /* logical_size: optional (split MANIFESTs of cairn before it have none). */
    json_t *lg = json_object_get(files, "logical_size");
    if (lg != NULL && (!json_is_integer(lg) || json_integer_value(lg) < 0))
        return BAD("backup '%s': MANIFEST has a bad files.logical_size", b->name);
    b->has_sum_logical = lg != NULL;
    b->sum_logical = lg != NULL ? (uint64_t)json_integer_value(lg) : 0;
    b->sum_files = (uint64_t)count;
    b->sum_size = (uint64_t)size;
    json_decref(b->parts);
    b->parts = json_incref(parts);
    return CAIRN_OK;
}

static void set_header(struct cairn_backup *b, const char *kind, const char *source, json_t *parent,
                       json_t *scope, int64_t created)
{
    free(b->kind);
    free(b->source);
    free(b->parent);
    b->kind = xstrdup(kind);
    b->source = xstrdup(source);
    b->parent = json_is_string(parent) ? xstrdup(json_string_value(parent)) : NULL;
    json_decref(b->scope);
    b->scope = scope != NULL ? json_incref(scope) : NULL;
    b->created = created;
    b->status = CAIRN_BACKUP_COMPLETE;
}

static void set_files(struct cairn_backup *b, struct file_rec **recs, size_t n)
{
    for (size_t i = 0; i < b->nfiles; i++)
        file_rec_free(b->files[i]);
    free(b->files);
    b->files = recs;
    b->nfiles = b->cap = n;
}

/* The fields both versions share; the rest is left in *meta, *files, *parts (NULL if absent). */
static int parse_common(struct cairn_backup *b, json_t *m, json_int_t version, const uint8_t *key,
                        json_t **meta, json_t **files, json_t **parts, struct cairn_err *err)
{
    json_error_t je;
    const char *name = NULL, *created = NULL, *source = NULL, *kind = NULL;
    json_t *parent = NULL, *seal = NULL, *scope = NULL;
    *meta = *files = *parts = NULL;
    int bad =
        version == CAIRN_MANIFEST_VERSION
            ? json_unpack_ex(m, &je, 0, "{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s?o, s?o}", "name",
                             &name, "created", &created, "source", &source, "kind", &kind, "parent",
                             &parent, "meta", meta, "files", files, "seal", &seal, "scope", &scope)
            : json_unpack_ex(m, &je, 0, "{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s?o, s?o}", "name",
                             &name, "created", &created, "source", &source, "kind", &kind, "parent",
                             &parent, "files", files, "parts", parts, "seal", &seal, "scope",
                             &scope);
    if (bad)
        return BAD("backup '%s': MANIFEST is missing fields: %s", b->name, je.text);
    if (strcmp(name, b->name) != 0)
        return BAD("backup '%s': MANIFEST names another backup '%s'", b->name, name);
    int64_t sec;
    long nsec;
    if (parse_rfc3339(created, &sec, &nsec) != 0)
        return BAD("backup '%s': MANIFEST has a bad creation time '%s'", b->name, created);
    if (!(json_is_null(parent) ||
          (json_is_string(parent) && cairn_name_valid(json_string_value(parent)))) ||
        (*meta != NULL && !json_is_object(*meta)) || (scope != NULL && !json_is_object(scope)) ||
        (version == CAIRN_MANIFEST_VERSION && !json_is_array(*files)))
        return BAD("backup '%s': MANIFEST has a bad parent, meta, scope or files field", b->name);
    int rc = check_seal(b, m, seal, key, err);
    if (rc == CAIRN_OK && b->st->keys != NULL) {
        const char *bid = json_string_value(json_object_get(m, "backup_id"));
        if (bid == NULL || strlen(bid) != 32 || cairn_hex_decode(bid, 32, b->bid, 16, NULL) != 0)
            return BAD("backup '%s': MANIFEST of an encrypted repository lacks its backup_id",
                       b->name);
        b->has_bid = 1;
    }
    if (rc == CAIRN_OK)
        set_header(b, kind, source, parent, scope, sec);
    return rc;
}

int manifest_parse(struct cairn_backup *b, const char *text, size_t len, const uint8_t *key,
                   struct cairn_err *err)
{
    json_error_t je;
    json_t *m = json_loadb(text, len, 0, &je);
    if (m == NULL)
        return BAD("backup '%s': MANIFEST is not valid JSON (line %d: %s)", b->name, je.line,
                   je.text);
    json_int_t version = 0;
    json_t *meta, *files, *parts;
    struct file_rec **recs = NULL;
    size_t n = 0;
    int rc = CAIRN_OK;
    if (!json_is_object(m) || json_unpack_ex(m, &je, 0, "{s:I}", "version", &version) != 0)
        rc = BAD("backup '%s': MANIFEST has no version", b->name);
    else if (version < CAIRN_MANIFEST_VERSION || version > MANIFEST_CHUNKED_SPLIT_VERSION)
        rc = BAD("backup '%s': unsupported MANIFEST version %lld (this cairn reads versions %d "
                 "to %d)",
                 b->name, (long long)version, CAIRN_MANIFEST_VERSION,
                 MANIFEST_CHUNKED_SPLIT_VERSION);
    /* 3 and 4 are 1 and 2 whose files may be chunk lists: the same layouts. */
    b->chunked = version == MANIFEST_CHUNKED_VERSION || version == MANIFEST_CHUNKED_SPLIT_VERSION;
    if (version == MANIFEST_CHUNKED_VERSION)
        version = CAIRN_MANIFEST_VERSION;
    else if (version == MANIFEST_CHUNKED_SPLIT_VERSION)
        version = MANIFEST_SPLIT_VERSION;
    if (rc == CAIRN_OK)
        rc = parse_common(b, m, version, key, &meta, &files, &parts, err);
    if (rc == CAIRN_OK && version == MANIFEST_SPLIT_VERSION)
        rc = parse_parts(b, files, parts, err);
    else if (rc == CAIRN_OK)
        rc = parse_files(b, files, &recs, &n, err);
    if (rc == CAIRN_OK && version == CAIRN_MANIFEST_VERSION) {
        set_files(b, recs, n);
        b->files_loaded = 1;
        memset(&b->list_sum, 0, sizeof(b->list_sum));
        for (size_t i = 0; i < n; i++)
            files_sum_add(&b->list_sum, &recs[i]->f);
        b->sum_files = n;
        b->sum_size = b->sum_logical = 0;
        for (size_t i = 0; i < n; i++) {
            b->sum_size += recs[i]->f.size;
            b->sum_logical += recs[i]->f.logical_size;
        }
        b->has_sum_logical = 1;
        json_decref(b->meta);
        b->meta = json_incref(meta);
    }
    if (rc != CAIRN_OK)
        b->status = CAIRN_BACKUP_INCOMPLETE; /* nothing of a refused MANIFEST counts */
    json_decref(m);
    return rc;
}

/* Body of a split MANIFEST being read: its parts in order, each checked against the size and
 * SHA-256 the (already checked, maybe sealed) header gives when its end is reached. */
struct body_in {
    struct cairn_backup *b;
    size_t ipart;           /* next part to open */
    struct cairn_reader *r; /* the part being read */
    const char *pname, *psha;
    uint64_t n, want;
    struct cairn_sha256 h;
    char *buf;
    size_t len, pos;
    int rc;
    struct cairn_err e; /* the first failure */
};

static int in_open(struct body_in *in)
{
    struct cairn_backup *b = in->b;
    json_t *p = json_array_get(b->parts, in->ipart++);
    in->pname = json_string_value(json_object_get(p, "name"));
    in->psha = json_string_value(json_object_get(p, "sha256"));
    in->want = (uint64_t)json_integer_value(json_object_get(p, "size"));
    in->n = 0;
    int rc = storage_read(b->st, b->name, in->pname, backup_bid(b), &in->r, &in->e);
    if (rc == CAIRN_E_NOTFOUND)
        return cairn_err_set(&in->e, CAIRN_E_CORRUPT, "backup '%s': %s is missing", b->name,
                             in->pname);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(&in->e, rc, "backup '%s': read %s", b->name, in->pname);
    storage_hash_init(b->st, &in->h);
    return CAIRN_OK;
}

static int in_close(struct body_in *in)
{
    uint8_t d[32];
    char hex[65];
    cairn_sha256_final(&in->h, d);
    cairn_hex_encode(d, 32, hex);
    cairn_reader_free(in->r);
    in->r = NULL;
    if (in->n != in->want || strcmp(hex, in->psha) != 0)
        return cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                             "backup '%s': %s does not match the MANIFEST (%llu bytes, "
                             "expected %llu; or its SHA-256 differs)",
                             in->b->name, in->pname, (unsigned long long)in->n,
                             (unsigned long long)in->want);
    return CAIRN_OK;
}

/* Refill buf; len 0 after the last part (all of them checked). */
static int in_fill(struct body_in *in)
{
    in->pos = in->len = 0;
    while (in->rc == CAIRN_OK) {
        if (in->r == NULL && in->ipart == json_array_size(in->b->parts))
            break;
        if (in->r == NULL && (in->rc = in_open(in)) != CAIRN_OK)
            break;
        size_t got = 0;
        in->rc = cairn_reader_read(in->r, in->buf, BUF_CAP, &got, &in->e);
        if (in->rc != CAIRN_OK) {
            cairn_err_wrap(&in->e, in->rc, "backup '%s': read %s", in->b->name, in->pname);
        } else if (got == 0) {
            in->rc = in_close(in);
        } else if ((in->n += got) > in->want) {
            in->rc = cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                                   "backup '%s': %s is longer than the MANIFEST says", in->b->name,
                                   in->pname);
        } else {
            cairn_sha256_update(&in->h, in->buf, got);
            in->len = got;
            break;
        }
    }
    return in->rc;
}

/* The next line without its newline, NUL-terminated in line[LINE_CAP]. */
static int in_line(struct body_in *in, char *line)
{
    for (size_t k = 0;;) {
        if (in->pos == in->len && in_fill(in) != CAIRN_OK)
            return in->rc;
        if (in->len == 0)
            return in->rc =
                       cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                                     "backup '%s': MANIFEST file list ends early", in->b->name);
        char c = in->buf[in->pos++];
        if (c == '\n') {
            line[k] = '\0';
            return CAIRN_OK;
        }
        if (k == LINE_CAP - 1)
            return in->rc = cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                                          "backup '%s': MANIFEST file list has a line longer "
                                          "than %d bytes",
                                          in->b->name, LINE_CAP - 1);
        line[k++] = c;
    }
}

static size_t in_json(void *buffer, size_t buflen, void *data)
{
    struct body_in *in = data;
    if (in->pos == in->len && in_fill(in) != CAIRN_OK)
        return (size_t)-1;
    size_t k = buflen < in->len - in->pos ? buflen : in->len - in->pos;
    memcpy(buffer, in->buf + in->pos, k);
    in->pos += k;
    return k;
}

/* "name size sha256 compression logical_size logical_sha256" */
static struct file_rec *parse_line(char *line)
{
    char *f[6], *save = NULL, *tok = strtok_r(line, " ", &save);
    int n = 0;
    for (; tok != NULL && n < 6; tok = strtok_r(NULL, " ", &save))
        f[n++] = tok;
    json_int_t v[2] = {-1, -1};
    for (int i = 0; n == 6 && tok == NULL && i < 2; i++) {
        const char *s = f[i == 0 ? 1 : 4];
        char *endp;
        unsigned long long x = strtoull(s, &endp, 10);
        v[i] = s[0] >= '0' && s[0] <= '9' && *endp == '\0' && x <= INT64_MAX ? (json_int_t)x : -1;
    }
    if (n != 6 || tok != NULL)
        return NULL;
    return new_rec(f[0], v[0], f[2], f[3], v[1], f[5]);
}

/* Every file line in order (strictly ascending, so each name once), each handed to fn, then
 * their count and total checked against the header. */
static int scan_file_list(struct body_in *in, manifest_file_fn fn, void *arg)
{
    struct cairn_backup *b = in->b;
    uint64_t n = 0, total = 0, logical = 0;
    char line[LINE_CAP], prev[LINE_CAP] = "";
    while (in->rc == CAIRN_OK && n < b->sum_files && in_line(in, line) == CAIRN_OK) {
        struct file_rec *r = parse_line(line);
        if (r == NULL || (n > 0 && strcmp(prev, r->f.name) >= 0)) {
            in->rc = cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                                   "backup '%s': MANIFEST file entry %llu is invalid, out of "
                                   "order or listed twice",
                                   b->name, (unsigned long long)n);
            file_rec_free(r);
            break;
        }
        snprintf(prev, sizeof(prev), "%s", r->f.name);
        n++;
        total += r->f.size;
        logical += r->f.logical_size;
        in->rc = fn(arg, r, &in->e);
    }
    if (in->rc == CAIRN_OK &&
        (total != b->sum_size || (b->has_sum_logical && logical != b->sum_logical)))
        in->rc =
            cairn_err_set(&in->e, CAIRN_E_CORRUPT,
                          "backup '%s': MANIFEST file sizes do not add up to its total", b->name);
    return in->rc;
}

/* Read a split MANIFEST's body through: the file list, streamed line by line (to fn), then
 * the meta (kept in *meta when non-NULL). */
static int scan_body(struct cairn_backup *b, manifest_file_fn fn, void *arg, json_t **meta,
                     struct cairn_err *err)
{
    struct body_in in = {.b = b, .rc = CAIRN_OK};
    in.buf = xmalloc(BUF_CAP);
    json_t *m = NULL;
    if (scan_file_list(&in, fn, arg) == CAIRN_OK) {
        json_error_t je;
        m = json_load_callback(in_json, &in, 0, &je);
        if (in.rc == CAIRN_OK &&
            (!json_is_object(m) || in.r != NULL || in.ipart != json_array_size(b->parts)))
            in.rc =
                cairn_err_set(&in.e, CAIRN_E_CORRUPT, "backup '%s': MANIFEST meta is invalid (%s)",
                              b->name, m ? "not an object" : je.text);
    }
    if (in.r != NULL) {
        cairn_reader_free(in.r);
        cairn_sha256_free(&in.h);
    }
    free(in.buf);
    if (in.rc != CAIRN_OK || meta == NULL)
        json_decref(m);
    if (in.rc != CAIRN_OK) {
        cairn_err_copy(err, &in.e);
        return in.rc;
    }
    if (meta != NULL)
        *meta = m;
    return CAIRN_OK;
}

int manifest_scan(struct cairn_backup *b, manifest_file_fn fn, void *arg, struct cairn_err *err)
{
    return scan_body(b, fn, arg, NULL, err);
}

struct collect {
    struct file_rec **recs;
    size_t n, cap;
};

static int collect_rec(void *arg, struct file_rec *r, struct cairn_err *e)
{
    struct collect *c = arg;
    (void)e;
    if (c->n == c->cap) { /* grown, not sized from the header's count */
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->recs = xrealloc(c->recs, c->cap * sizeof(*c->recs));
    }
    c->recs[c->n++] = r;
    return CAIRN_OK;
}

int manifest_load_files(struct cairn_backup *b, struct cairn_err *err)
{
    if (b->files_loaded)
        return CAIRN_OK;
    struct collect c = {0};
    int rc = manifest_scan(b, collect_rec, &c, err);
    if (rc != CAIRN_OK) {
        free_recs(c.recs, c.n);
        return rc;
    }
    set_files(b, c.recs, c.n); /* in name order already */
    b->files_loaded = 1;
    return CAIRN_OK;
}

static int sum_rec(void *arg, struct file_rec *r, struct cairn_err *e)
{
    (void)e;
    files_sum_add(arg, &r->f);
    file_rec_free(r);
    return CAIRN_OK;
}

/* Open a split MANIFEST: its body read through once (so a damaged part is found now, as
 * before), the meta and the list's sum kept, the file list not (it is streamed again when
 * needed). */
static int load_body(struct cairn_backup *b, struct cairn_err *err)
{
    json_t *meta = NULL;
    struct files_sum sum = {{0}, 0};
    int rc = scan_body(b, sum_rec, &sum, &meta, err);
    if (rc != CAIRN_OK)
        return rc;
    json_decref(b->meta);
    b->meta = meta;
    b->list_sum = sum;
    return CAIRN_OK;
}

int manifest_load(struct cairn_backup *b, int header_only, struct cairn_err *err)
{
    struct cairn_reader *r = NULL;
    int rc = storage_read(b->st, b->name, CAIRN_MANIFEST_NAME, NULL, &r, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s' MANIFEST", b->name);
        return rc;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= MANIFEST_MAX) {
                rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                                   "backup '%s': MANIFEST is larger than %u bytes", b->name,
                                   MANIFEST_MAX);
                goto out;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t got = 0;
        rc = cairn_reader_read(r, buf + len, cap - len, &got, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, rc, "backup '%s': read MANIFEST", b->name);
            goto out;
        }
        if (got == 0)
            break;
        len += got;
    }
    rc = manifest_parse(b, buf, len, b->st->has_key ? b->st->key : NULL, err);
    if (rc == CAIRN_OK && b->parts != NULL && !header_only)
        rc = load_body(b, err);
out:
    free(buf);
    cairn_reader_free(r);
    return rc;
}
