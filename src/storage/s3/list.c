/* S3 driver: listing (ListObjectsV2, paginated) and deleting (DeleteObjects in batches). */
#define _GNU_SOURCE
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/strv.h"
#include "common/util.h"
#include "s3.h"
#include "xml.h"

#define DELETE_BATCH 1000

struct lister {
    int (*on_key)(void *arg, const char *key);
    int (*on_prefix)(void *arg, const char *prefix);
    int (*on_page)(void *arg); /* after each page's keys */
    void *arg;
};

static int s3_list_objects(struct s3 *s, const char *prefix, int delimit, unsigned max_keys,
                           int one_page, const struct lister *l, struct cairn_err *err)
{
    char *token = NULL;
    int rc = CAIRN_OK;
    char *eprefix = s3_uri_encode(prefix, 0);
    do {
        char *etoken = token ? s3_uri_encode(token, 0) : NULL;
        char *q = xasprintf("%s%s%s%slist-type=2&max-keys=%u&prefix=%s",
                            etoken ? "continuation-token=" : "", etoken ? etoken : "",
                            etoken ? "&" : "", delimit ? "delimiter=%2F&" : "", max_keys, eprefix);
        free(etoken);
        struct call c = {.method = "GET", .query = q, .max = XML_MAX};
        rc = s3_call(s, &c, err);
        free(q);
        free(token);
        token = NULL;
        if (rc == CAIRN_OK) {
            const char *p = c.body_out ? c.body_out : "", *end = p + c.body_out_len;
            struct xml_span sp;
            const char *pos = p;
            while (rc == CAIRN_OK && l->on_key && s3_xml_next(&pos, end, "Contents", &sp)) {
                char *key = s3_xml_get(sp.p, sp.p + sp.len, "Key");
                if (key == NULL)
                    rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "S3 listing entry without a Key");
                else
                    rc = l->on_key(l->arg, key);
                free(key);
            }
            pos = p;
            while (rc == CAIRN_OK && l->on_prefix &&
                   s3_xml_next(&pos, end, "CommonPrefixes", &sp)) {
                char *pf = s3_xml_get(sp.p, sp.p + sp.len, "Prefix");
                if (pf != NULL)
                    rc = l->on_prefix(l->arg, pf);
                free(pf);
            }
            if (rc == CAIRN_OK && l->on_page)
                rc = l->on_page(l->arg);
            char *trunc = s3_xml_get(p, end, "IsTruncated");
            if (rc == CAIRN_OK && trunc && strcmp(trunc, "true") == 0 && !one_page) {
                token = s3_xml_get(p, end, "NextContinuationToken");
                if (token == NULL || *token == '\0')
                    rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                                       "S3 listing of '%s' is truncated but has no continuation "
                                       "token",
                                       prefix);
            }
            free(trunc);
        }
        s3_call_done(&c);
    } while (rc == CAIRN_OK && token != NULL);
    free(token);
    free(eprefix);
    return rc;
}

struct list_ctx {
    struct s3 *s;
    int (*fn)(void *arg, const char *name);
    void *arg;
};

static int list_prefix_cb(void *arg, const char *pf)
{
    struct list_ctx *lc = arg;
    size_t pl = strlen(lc->s->prefix), l = strlen(pf);
    if (l <= pl + 1 || strncmp(pf, lc->s->prefix, pl) != 0 || pf[l - 1] != '/')
        return 0;
    char *name = xstrdup(pf + pl);
    name[l - pl - 1] = '\0';
    int rc = lc->fn(lc->arg, name);
    free(name);
    return rc;
}

int s3_list(void *state, int (*fn)(void *arg, const char *name), void *arg, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    struct list_ctx lc = {s, fn, arg};
    struct lister l = {.on_prefix = list_prefix_cb, .arg = &lc};
    return s3_list_objects(s, s->prefix, 1, 1000, 0, &l, err);
}

static int found_cb(void *arg, const char *key)
{
    (void)key;
    *(int *)arg = 1;
    return 0;
}

int s3_start(void *state, const char *backup, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = xasprintf("%s%s/", s->prefix, backup);
    int found = 0;
    struct lister l = {.on_key = found_cb, .arg = &found};
    rc = s3_list_objects(s, pfx, 0, 1, 1, &l, err);
    if (rc == CAIRN_OK && found)
        rc = cairn_err_set(err, CAIRN_E_EXISTS, "backup '%s' already exists in '%s'", backup,
                           s->url);
    free(pfx);
    return rc;
}

struct deleter {
    struct s3 *s;
    char **keys;
    size_t n;
    size_t total;
    struct cairn_err *err;
};

static void md5_base64(const void *data, size_t len, char out[32])
{
    uint8_t d[16];
    unsigned dl = 0;
    EVP_Digest(data, len, d, &dl, EVP_md5(), NULL);
    cairn_base64_encode(d, 16, out);
}

/* One DeleteObjects request for the collected keys (quiet mode: only failures come back). */
static int delete_flush(void *arg)
{
    struct deleter *d = arg;
    if (d->n == 0)
        return CAIRN_OK; /* an empty <Delete> is MalformedXML on S3 and MinIO */
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < d->n; i++)
        cap += strlen(d->keys[i]) * 6 + 32;
    char *xml = xmalloc(cap);
    len += (size_t)sprintf(xml, "<Delete><Quiet>true</Quiet>");
    for (size_t i = 0; i < d->n; i++) {
        char *k = s3_xml_escape(d->keys[i]);
        len += (size_t)sprintf(xml + len, "<Object><Key>%s</Key></Object>", k);
        free(k);
    }
    len += (size_t)sprintf(xml + len, "</Delete>");
    char md5[32], hdr[64];
    md5_base64(xml, len, md5);
    snprintf(hdr, sizeof(hdr), "Content-MD5: %s", md5);
    struct call c = {.method = "POST",
                     .query = "delete=",
                     .body = xml,
                     .body_len = len,
                     .content_type = "application/xml",
                     .max = XML_MAX};
    c.hdr[0] = hdr;
    int rc = s3_call(d->s, &c, d->err);
    if (rc == CAIRN_OK && c.body_out != NULL) {
        const char *pos = c.body_out, *end = c.body_out + c.body_out_len;
        struct xml_span sp;
        size_t nerr = 0;
        char first[600] = "";
        while (s3_xml_next(&pos, end, "Error", &sp)) {
            if (nerr++ == 0) {
                char *k = s3_xml_get(sp.p, sp.p + sp.len, "Key");
                char *code = s3_xml_get(sp.p, sp.p + sp.len, "Code");
                char *msg = s3_xml_get(sp.p, sp.p + sp.len, "Message");
                snprintf(first, sizeof(first), "'%s': %s%s%s", k ? k : "?", code ? code : "?",
                         msg ? ": " : "", msg ? msg : "");
                free(k);
                free(code);
                free(msg);
            }
        }
        if (nerr > 0)
            rc = cairn_err_set(d->err, CAIRN_E_IO, "S3 could not delete %zu object(s), first %s",
                               nerr, first);
    }
    s3_call_done(&c);
    free(xml);
    d->total += d->n;
    for (size_t i = 0; i < d->n; i++)
        free(d->keys[i]);
    d->n = 0;
    return rc;
}

static int delete_collect(void *arg, const char *key)
{
    struct deleter *d = arg;
    if (d->n == DELETE_BATCH) {
        int rc = delete_flush(d);
        if (rc != CAIRN_OK)
            return rc;
    }
    d->keys[d->n++] = xstrdup(key);
    return 0;
}

/* Every object under the backup's prefix, a listed page at a time, in any order (the generic
 * layer has removed its MANIFEST first). */
int s3_remove(void *state, const char *backup, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = xasprintf("%s%s/", s->prefix, backup);
    struct deleter d = {.s = s, .err = err};
    d.keys = xcalloc(DELETE_BATCH, sizeof(*d.keys));
    struct lister l = {.on_key = delete_collect, .on_page = delete_flush, .arg = &d};
    rc = s3_list_objects(s, pfx, 0, 1000, 0, &l, err);
    for (size_t i = 0; i < d.n; i++)
        free(d.keys[i]);
    free(d.keys);
    free(pfx);
    if (rc == CAIRN_OK && d.total == 0)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' not found in '%s'", backup, s->url);
    return rc;
}

struct files_ctx {
    size_t skip; /* length of "<prefix><backup>/" */
    int (*fn)(void *arg, const char *file);
    void *arg;
};

static int files_key_cb(void *arg, const char *key)
{
    struct files_ctx *fc = arg;
    const char *name = key + fc->skip;
    if (strlen(key) <= fc->skip || strchr(name, '/') != NULL)
        return 0;
    return fc->fn(fc->arg, name);
}

/* Lock objects: the keys under "<prefix><backup>/". */
int s3_list_files(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                  void *arg, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = xasprintf("%s%s/", s->prefix, backup);
    struct files_ctx fc = {strlen(pfx), fn, arg};
    struct lister l = {.on_key = files_key_cb, .arg = &fc};
    rc = s3_list_objects(s, pfx, 0, 1000, 0, &l, err);
    free(pfx);
    return rc;
}

int s3_remove_file(void *state, const char *backup, const char *file, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *key = xasprintf("%s%s/%s", s->prefix, backup, file);
    struct call c = {.method = "DELETE", .key = key, .max = 64 * 1024};
    rc = s3_call(s, &c, err);
    s3_call_done(&c);
    free(key);
    return rc;
}

/* The temporaries "<file>.tmp" of atomic writes (put_via_copy) killed before their copy and
 * delete: collected first, then deleted (no deletes while a listing pages). */
static int tmp_name(void *arg, const char *file)
{
    size_t len = strlen(file);
    if (len > 4 && strcmp(file + len - 4, ".tmp") == 0)
        strv_add(arg, file);
    return 0;
}

int s3_sweep(void *state, const char *backup, struct cairn_err *err)
{
    struct strv t = {0};
    int rc = s3_list_files(state, backup, tmp_name, &t, err);
    if (rc == CAIRN_E_NOTFOUND) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    for (size_t i = 0; i < t.n && rc == CAIRN_OK; i++)
        rc = s3_remove_file(state, backup, t.v[i], err);
    strv_free(&t);
    return rc;
}
