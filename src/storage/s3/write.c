/* S3 driver: the writer, a single PUT or a multipart upload with parts in flight on helper
 * threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/util.h"
#include "s3.h"
#include "xml.h"

struct s3_writer {
    struct cairn_writer base;
    struct s3 *s;
    char *key;
    uint64_t base_part; /* part size of parts 1..1000 */
    uint64_t part_size; /* size of the part being filled */
    uint8_t *buf;
    size_t len, cap;
    unsigned next_part; /* number of the part being filled (1-based) */
    char *upload_id;
    char **etags; /* [MAX_PARTS] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned running;
    int failed;
    struct cairn_err async_err;
    int committed;
    int atomic; /* CAIRN_STORAGE_WRITE_ATOMIC: a single PUT is published by a copy */
};

struct part_job {
    struct s3_writer *w;
    unsigned no;
    uint8_t *buf;
    size_t len;
};

static uint64_t part_size_for(const struct s3_writer *w, unsigned no)
{
    unsigned tier = (no - 1) / 1000;
    uint64_t p = w->base_part << (tier < 12 ? tier : 12);
    return p > MAX_PART_SIZE ? MAX_PART_SIZE : p;
}

/* Upload threads allowed for the current part size: memory stays near part_floor x parts
 * (the part being filled counts), with at least one upload in flight. */
static unsigned max_running(const struct s3_writer *w)
{
    uint64_t budget = w->s->part_floor * (w->s->parts < 2 ? 2 : w->s->parts);
    uint64_t bufs = budget / w->part_size;
    return bufs > 2 ? (unsigned)(bufs - 1) : 1;
}

static void *part_thread(void *arg)
{
    struct part_job *j = arg;
    struct s3_writer *w = j->w;
    char q[1200];
    snprintf(q, sizeof(q), "partNumber=%u&uploadId=%s", j->no, w->upload_id);
    struct call c = {.method = "PUT",
                     .key = w->key,
                     .query = q,
                     .body = j->buf,
                     .body_len = j->len,
                     .content_type = "application/octet-stream",
                     .max = 64 * 1024,
                     .cancellable = 1};
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = s3_call(w->s, &c, &e);
    if (rc == CAIRN_OK && c.etag[0] == '\0')
        rc = cairn_err_set(&e, CAIRN_E_PROTOCOL, "s3 PUT part %u of '%s': no ETag in response",
                           j->no, w->key);
    pthread_mutex_lock(&w->mu);
    if (rc == CAIRN_OK) {
        w->etags[j->no - 1] = xstrdup(c.etag);
    } else if (!w->failed) {
        w->failed = 1;
        cairn_err_copy(&w->async_err, &e);
    }
    w->running--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    s3_call_done(&c);
    free(j->buf);
    free(j);
    return NULL;
}

static int async_error(struct s3_writer *w, struct cairn_err *err)
{
    pthread_mutex_lock(&w->mu);
    int failed = w->failed;
    if (failed)
        cairn_err_copy(err, &w->async_err);
    pthread_mutex_unlock(&w->mu);
    return failed ? (w->async_err.code ? w->async_err.code : CAIRN_E_IO) : CAIRN_OK;
}

static int create_upload(struct s3_writer *w, struct cairn_err *err)
{
    struct call c = {.method = "POST",
                     .key = w->key,
                     .query = "uploads=",
                     .content_type = "application/octet-stream",
                     .max = XML_MAX};
    int rc = s3_call(w->s, &c, err);
    if (rc == CAIRN_OK) {
        const char *b = c.body_out ? c.body_out : "";
        w->upload_id = s3_xml_get(b, b + c.body_out_len, "UploadId");
        if (w->upload_id == NULL || w->upload_id[0] == '\0') {
            free(w->upload_id);
            w->upload_id = NULL;
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "s3 CreateMultipartUpload of '%s': no UploadId in response", w->key);
        } else {
            /* Encode once for every later query string. */
            char *enc = s3_uri_encode(w->upload_id, 0);
            free(w->upload_id);
            w->upload_id = enc;
            w->etags = xcalloc(MAX_PARTS, sizeof(*w->etags));
        }
    }
    s3_call_done(&c);
    return rc;
}

/* Hand the filled buffer to an upload thread (blocking while too many are in flight). */
static int dispatch_part(struct s3_writer *w, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    if (w->upload_id == NULL && (rc = create_upload(w, err)) != CAIRN_OK)
        return rc;
    if (w->next_part > MAX_PARTS)
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s' needs more than %d S3 parts", w->key,
                             MAX_PARTS);
    unsigned limit = max_running(w);
    pthread_mutex_lock(&w->mu);
    while (w->running >= limit && !w->failed)
        pthread_cond_wait(&w->cv, &w->mu);
    w->running++;
    pthread_mutex_unlock(&w->mu);
    if ((rc = async_error(w, err)) != CAIRN_OK) {
        pthread_mutex_lock(&w->mu);
        w->running--;
        pthread_mutex_unlock(&w->mu);
        return rc;
    }
    struct part_job *j = xcalloc(1, sizeof(*j));
    j->w = w;
    j->no = w->next_part;
    j->buf = w->buf;
    j->len = w->len;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, part_thread, j) != 0) {
        pthread_attr_destroy(&attr);
        free(j);
        pthread_mutex_lock(&w->mu);
        w->running--;
        pthread_mutex_unlock(&w->mu);
        return cairn_err_set(err, CAIRN_E_INTERNAL, "cannot start an S3 upload thread");
    }
    pthread_attr_destroy(&attr);
    w->buf = NULL;
    w->len = w->cap = 0;
    w->next_part++;
    w->part_size = part_size_for(w, w->next_part);
    return CAIRN_OK;
}

static void wait_parts(struct s3_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->running > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static int s3w_write(struct cairn_writer *base, const void *data, size_t len, struct cairn_err *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    const uint8_t *p = data;
    int rc = async_error(w, err);
    while (rc == CAIRN_OK && len > 0) {
        size_t room = (size_t)(w->part_size - w->len);
        size_t n = len < room ? len : room;
        if (w->len + n > w->cap) { /* grow geometrically up to one part */
            size_t cap = w->cap ? w->cap : 256 * 1024;
            while (cap < w->len + n)
                cap *= 2;
            if (cap > w->part_size)
                cap = (size_t)w->part_size;
            w->buf = xrealloc(w->buf, cap);
            w->cap = cap;
        }
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        p += n;
        len -= n;
        if (w->len == w->part_size)
            rc = dispatch_part(w, err);
    }
    return rc;
}

static void abort_upload(struct s3_writer *w)
{
    if (w->upload_id == NULL)
        return;
    char q[1100];
    snprintf(q, sizeof(q), "uploadId=%s", w->upload_id);
    struct call c = {.method = "DELETE", .key = w->key, .query = q, .max = 64 * 1024};
    struct cairn_err e;
    if (s3_call(w->s, &c, &e) != CAIRN_OK)
        cairn_log(CAIRN_LOG_WARN, "s3", "abort multipart upload of '%s' failed: %s", w->key, e.msg);
    s3_call_done(&c);
    free(w->upload_id);
    w->upload_id = NULL;
}

/* CAIRN_STORAGE_WRITE_ATOMIC (the MANIFEST header): whole or not at all. S3 never exposes a
 * partial PUT, but some S3-compatible servers (s3rver, seen in the crash tests) store the bytes
 * of an interrupted upload. So the object goes to a temporary key first and is published by a
 * server-side copy, which the server completes even if this process dies. */
static int put_via_copy(struct s3_writer *w, struct cairn_err *err)
{
    char *tmp = xasprintf("%s.tmp", w->key);
    struct call c = {.method = "PUT",
                     .key = tmp,
                     .body = w->buf,
                     .body_len = w->len,
                     .content_type = "application/octet-stream",
                     .max = 64 * 1024};
    int rc = s3_call(w->s, &c, err);
    s3_call_done(&c);
    /* S3 wants the copy source percent-encoded; servers that decode it with JavaScript's
     * decodeURI (s3rver) keep %2B, %3D, %40 as they are and only find the raw key. */
    for (int raw = 0; rc == CAIRN_OK && raw < 2; raw++) {
        char *src = raw ? xstrdup(tmp) : s3_uri_encode(tmp, 1);
        char *hdr = xasprintf("x-amz-copy-source: /%s/%s", w->s->bucket, src);
        struct call cp = {.method = "PUT", .key = w->key, .max = XML_MAX};
        cp.hdr[0] = hdr;
        rc = s3_call(w->s, &cp, err);
        /* S3 may answer 200 and still report an error in the body. */
        if (rc == CAIRN_OK &&
            (cp.body_out == NULL || strstr(cp.body_out, "<CopyObjectResult") == NULL))
            rc = cairn_err_set(err, CAIRN_E_NETWORK, "s3 copy of '%s' to '%s' did not complete",
                               tmp, w->key);
        s3_call_done(&cp);
        free(hdr);
        int retry_raw = !raw && rc == CAIRN_E_NOTFOUND && strcmp(src, tmp) != 0;
        free(src);
        if (!retry_raw)
            break;
        rc = CAIRN_OK;
    }
    struct call del = {.method = "DELETE", .key = tmp, .max = 64 * 1024};
    struct cairn_err ignored; /* a leftover temporary key only makes an incomplete backup */
    s3_call(w->s, &del, &ignored);
    s3_call_done(&del);
    free(tmp);
    return rc;
}

/* CompleteMultipartUpload with every part's ETag. */
static int complete_upload(struct s3_writer *w, struct cairn_err *err)
{
    unsigned nparts = w->next_part - 1;
    size_t cap = 128 + (size_t)nparts * 340, len = 0;
    char *xml = xmalloc(cap);
    len += (size_t)sprintf(xml, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < nparts; i++) {
        char *et = s3_xml_escape(w->etags[i]);
        len +=
            (size_t)snprintf(xml + len, cap - len,
                             "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1, et);
        free(et);
    }
    len += (size_t)snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
    char q[1100];
    snprintf(q, sizeof(q), "uploadId=%s", w->upload_id);
    struct call c = {.method = "POST",
                     .key = w->key,
                     .query = q,
                     .body = xml,
                     .body_len = len,
                     .content_type = "application/xml",
                     .max = XML_MAX};
    int rc = s3_call(w->s, &c, err);
    /* S3 may answer 200 and still report an error in the body. */
    if (rc == CAIRN_OK && c.body_out != NULL &&
        strstr(c.body_out, "<CompleteMultipartUploadResult") == NULL) {
        const char *b = c.body_out, *e = b + c.body_out_len;
        char *code = s3_xml_get(b, e, "Code"), *msg = s3_xml_get(b, e, "Message");
        if (code != NULL)
            rc = cairn_err_set(err, CAIRN_E_NETWORK, "s3 CompleteMultipartUpload of '%s': %s%s%s",
                               w->key, code, msg ? ": " : "", msg ? msg : "");
        free(code);
        free(msg);
    }
    s3_call_done(&c);
    free(xml);
    return rc;
}

static int s3w_finish(struct cairn_writer *base, struct cairn_err *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    int rc = CAIRN_OK;
    if (w->upload_id == NULL) {
        if (w->atomic)
            rc = put_via_copy(w, err);
        else {
            struct call c = {.method = "PUT",
                             .key = w->key,
                             .body = w->buf,
                             .body_len = w->len,
                             .content_type = "application/octet-stream",
                             .max = 64 * 1024,
                             .cancellable = 1};
            rc = s3_call(w->s, &c, err);
            s3_call_done(&c);
        }
        if (rc == CAIRN_OK)
            w->committed = 1;
        return rc;
    }
    if (w->len > 0)
        rc = dispatch_part(w, err);
    wait_parts(w);
    if (rc == CAIRN_OK)
        rc = async_error(w, err);
    if (rc != CAIRN_OK) {
        abort_upload(w);
        return rc;
    }
    rc = complete_upload(w, err);
    if (rc != CAIRN_OK) {
        abort_upload(w);
        return rc;
    }
    free(w->upload_id);
    w->upload_id = NULL;
    w->committed = 1;
    return CAIRN_OK;
}

static void s3w_free(struct cairn_writer *base)
{
    struct s3_writer *w = (struct s3_writer *)base;
    wait_parts(w);
    if (!w->committed)
        abort_upload(w);
    if (w->etags != NULL)
        for (unsigned i = 0; i < MAX_PARTS; i++)
            free(w->etags[i]);
    free(w->etags);
    free(w->upload_id);
    free(w->buf);
    free(w->key);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static const struct cairn_writer_ops s3_writer_ops = {"s3", s3w_write, s3w_finish, s3w_free};

/* SYNC and REPLACE need nothing: a completed PUT is durable and replaces. ATOMIC needs
 * nothing for a multipart upload either: CompleteMultipartUpload publishes it whole. */
int s3_create(void *state, const char *backup, const char *file, int64_t size_hint,
              const struct cairn_storage_write_opts *opts, struct cairn_writer **out,
              struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = s3_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    struct s3_writer *w = xcalloc(1, sizeof(*w));
    cairn_writer_init(&w->base, &s3_writer_ops, NULL);
    w->s = s;
    w->key = xasprintf("%s%s/%s", s->prefix, backup, file);
    w->atomic = opts != NULL && (opts->flags & CAIRN_STORAGE_WRITE_ATOMIC);
    uint64_t base = s->part_floor;
    if (size_hint > 0) {
        uint64_t need = ((uint64_t)size_hint + MAX_PARTS - 1) / MAX_PARTS;
        need = (need + MIB - 1) / MIB * MIB;
        if (need > base)
            base = need > MAX_PART_SIZE ? MAX_PART_SIZE : need;
    }
    w->base_part = base;
    w->next_part = 1;
    w->part_size = part_size_for(w, 1);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    *out = &w->base;
    return CAIRN_OK;
}
