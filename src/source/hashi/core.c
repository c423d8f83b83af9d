/* The HashiCorp snapshot core (hashi.h): URL and token, the download checked as it streams
 * into the backup, the upload of a stored snapshot back to the server. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "source/hashi/hashi.h"
#include "source/http/http.h"

/* An error answer's body is kept up to this size (the servers' are one line or one object). */
#define ERRBODY_MAX (16u * 1024u)
#define UP_BLOCK    (256u * 1024u)

struct hashi_src {
    const struct hashi_service *svc;
    struct source_url u;
    char *base;  /* http(s)://host:port */
    char *token; /* NULL: none (ACLs off); never in a message */
    struct cairn_source_opts o;
    struct http_opts ho;
};

int hashi_query_known(const struct hashi_service *svc, const struct source_url *u,
                      const char *const *known, struct cairn_err *err)
{
    for (const char *q = u->query; q != NULL && *q != '\0';) {
        size_t seg = strcspn(q, "&"), name = strcspn(q, "=&");
        int ok = name == 0;
        for (size_t i = 0; known[i] != NULL && !ok; i++)
            ok = strlen(known[i]) == name && strncmp(q, known[i], name) == 0;
        if (!ok) {
            char safe[64];
            str_escape(safe, sizeof(safe), q, name);
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "%s source: unknown URL parameter '%s' (see docs/SOURCES.md)",
                                 svc->kind, safe);
        }
        q += seg;
        if (*q == '&')
            q++;
    }
    return CAIRN_OK;
}

int hashi_query_flag(const struct hashi_service *svc, const struct source_url *u, const char *name,
                     int *on, struct cairn_err *err)
{
    char *v = source_url_param(u, name);
    int rc = CAIRN_OK;
    *on = v != NULL && (v[0] == '\0' || strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
    if (v != NULL && !*on && strcmp(v, "false") != 0 && strcmp(v, "0") != 0)
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "%s source: URL parameter '%s' takes true or false", svc->kind, name);
    free(v);
    return rc;
}

/* The token: the URL's password, else the password file, else the environment. A user name
 * alone would be the token shown unredacted, so it is refused. */
static int find_token(struct hashi_src *s, struct cairn_err *err)
{
    const struct hashi_service *svc = s->svc;
    if (s->u.user != NULL && s->u.password == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "%s source: put the token in the password place (%s://:TOKEN@HOST), "
                             "in %s or in a password file, never as a user name (it would be "
                             "shown)",
                             svc->kind, svc->kind, svc->token_env);
    int rc = CAIRN_OK;
    if (s->u.password != NULL && s->u.password[0] != '\0')
        s->token = xstrdup(s->u.password);
    else if (s->o.password_file != NULL)
        rc = source_read_secret(s->o.password_file, &s->token, err);
    else if (getenv(svc->token_env) != NULL && getenv(svc->token_env)[0] != '\0')
        s->token = xstrdup(getenv(svc->token_env));
    for (const char *p = s->token; rc == CAIRN_OK && p != NULL && *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "%s source: the token holds a control character", svc->kind);
    if (rc == CAIRN_OK && s->token != NULL && s->token[0] == '\0') {
        free(s->token);
        s->token = NULL;
    }
    return rc;
}

int hashi_open(const struct hashi_service *svc, const char *url, const struct cairn_source_opts *o,
               void **state, struct cairn_err *err)
{
    struct hashi_src *s = xcalloc(1, sizeof(*s));
    s->svc = svc;
    s->o = *o;
    int rc = source_url_parse(url, svc->port, &s->u, err);
    if (rc == CAIRN_OK && s->u.path[0] != '\0' && strcmp(s->u.path, "/") != 0) {
        char shown[512];
        if (cairn_source_redact(url, shown, sizeof(shown)) != CAIRN_OK)
            snprintf(shown, sizeof(shown), "%s:(long URL)", svc->kind);
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "source '%s': no path expected (the API paths are fixed)", shown);
    }
    struct buf probe = {0};
    if (rc == CAIRN_OK) /* refuse unknown parameters now, not after a schedule's first wait */
        rc = svc->request(&s->u, 0, &probe, err);
    buf_free(&probe);
    if (rc == CAIRN_OK)
        rc = find_token(s, err);
    if (rc != CAIRN_OK) {
        hashi_free(s);
        return rc;
    }
    int tls = strcmp(s->u.scheme, svc->tls_scheme) == 0;
    int v6 = strchr(s->u.host, ':') != NULL;
    s->base = xasprintf("%s://%s%s%s:%u", tls ? "https" : "http", v6 ? "[" : "", s->u.host,
                        v6 ? "]" : "", s->u.port);
    s->ho.tls = tls;
    s->ho.ca_file = o->ca_file;
    s->ho.cert_file = o->cert_file;
    s->ho.key_file = o->key_file;
    s->ho.stall_timeout_s = o->io_timeout_ms > 0 ? (long)((o->io_timeout_ms + 999) / 1000) : 0;
    s->ho.cancel = o->cancel;
    *state = s;
    return CAIRN_OK;
}

void hashi_free(void *state)
{
    struct hashi_src *s = state;
    if (s == NULL)
        return;
    source_url_free(&s->u);
    free(s->base);
    wipe_free(s->token);
    free(s);
}

/* The request's URL (no secret in it: the token travels in a header) and its headers. */
static int request(struct hashi_src *s, int restore, char **url, struct curl_slist **hdrs,
                   struct cairn_err *err)
{
    struct buf path = {0};
    int rc = s->svc->request(&s->u, restore, &path, err);
    if (rc != CAIRN_OK) {
        buf_free(&path);
        return rc;
    }
    buf_addc(&path, 0);
    *url = xasprintf("%s%s", s->base, (const char *)path.p);
    buf_free(&path);
    *hdrs = NULL;
    if (s->token != NULL) {
        char *h = xasprintf("%s: %s", s->svc->token_header, s->token);
        *hdrs = curl_slist_append(*hdrs, h);
        wipe_free(h);
    }
    /* A restore asks before it sends: Go's net/http answers 100 only when the handler reads
     * the body, so a refused token is a 403 before any of a large snapshot goes out (not a
     * reset in the middle of sending it). */
    *hdrs = curl_slist_append(*hdrs, restore ? "Expect: 100-continue" : "Expect:");
    if (*hdrs == NULL)
        abort();
    return CAIRN_OK;
}

/* The header list holds the token: wiped before it is freed. */
static void free_headers(struct curl_slist *hdrs)
{
    for (struct curl_slist *h = hdrs; h != NULL; h = h->next)
        wipe(h->data, strlen(h->data));
    curl_slist_free_all(hdrs);
}

static const struct cairn_snapshot_read_opts *read_opts(const struct hashi_service *svc)
{
    static const struct cairn_snapshot_read_opts consul = {.three_members = 1}, vault = {0};
    return svc->vault ? &vault : &consul;
}

/* Vault's own client refuses a snapshot without its sealed hashes (a failure after the 200):
 * so does cairn. */
static int sealed_rule(const struct hashi_service *svc, const struct cairn_snapshot_info *info,
                       const char *what, struct cairn_err *err)
{
    if (svc->vault && (!info->sealed_present || info->sealed_len == 0))
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: incomplete snapshot: no SHA256SUMS.sealed member (Vault adds "
                             "it last; the server failed after it began to answer)",
                             what);
    return CAIRN_OK;
}

/* ---- backup ---- */

struct download {
    struct hashi_src *s;
    CURL *h;
    const char *what;
    long status;
    struct cairn_writer *chk; /* a 200 answer goes here */
    struct buf body;          /* any other answer (bounded) */
    uint64_t bytes;           /* of a 200 answer */
    int rc;                   /* a failure inside the callback */
    struct cairn_err err;
};

static size_t on_download(char *p, size_t size, size_t nmemb, void *arg)
{
    struct download *d = arg;
    size_t n = size * nmemb;
    if (d->status == 0)
        curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &d->status);
    if (d->status != 200) {
        size_t keep = n;
        if (d->body.len + keep > ERRBODY_MAX) /* keep the start; it says what went wrong */
            keep = d->body.len < ERRBODY_MAX ? ERRBODY_MAX - d->body.len : 0;
        buf_add(&d->body, p, keep);
        return n;
    }
    d->rc = cairn_writer_write(d->chk, p, n, &d->err);
    if (d->rc != CAIRN_OK)
        return 0;
    d->bytes += n;
    if (d->s->o.progress != NULL)
        d->s->o.progress(d->s->o.progress_arg, d->bytes);
    return n;
}

/* The transfer's outcome as a cairn error (CAIRN_OK for a whole 200 answer). */
static int download_result(struct download *d, CURLcode cc, const char *curlerr,
                           struct cairn_err *err)
{
    if (d->rc != CAIRN_OK) { /* the callback stopped it: its error is the real one */
        cairn_err_copy(err, &d->err);
        return d->rc;
    }
    if (cc != CURLE_OK && cc != CURLE_ABORTED_BY_CALLBACK && cc != CURLE_OPERATION_TIMEDOUT &&
        d->status == 200 && d->bytes > 0)
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: stream truncated after %llu bytes: %s",
                             d->what, (unsigned long long)d->bytes,
                             curlerr[0] ? curlerr : curl_easy_strerror(cc));
    if (cc != CURLE_OK)
        return http_curl_error(cc, curlerr, d->status, &d->s->ho, d->what, err);
    if (d->status != 200)
        return http_status_error(d->status, d->body.p, d->body.len, d->what, err);
    return CAIRN_OK;
}

struct backup_result {
    struct hashi_src *s;
    struct cairn_snapshot_info info; /* meta, hashes, checksum: for the MANIFEST */
};

static int download(void *arg, struct cairn_writer *w, struct cairn_err *err)
{
    struct backup_result *res = arg;
    struct hashi_src *s = res->s;
    char *url = NULL;
    struct curl_slist *hdrs = NULL;
    int rc = request(s, 0, &url, &hdrs, err);
    if (rc != CAIRN_OK)
        return rc;
    char *what = xasprintf("%s snapshot (GET %s)", s->svc->kind, url);
    char curlerr[CURL_ERROR_SIZE];
    struct download d = {.s = s, .what = what};
    d.chk = hashi_check_new(cairn_writer_borrow(w), read_opts(s->svc), what);
    d.h = http_handle(url, &s->ho, curlerr);
    curl_easy_setopt(d.h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(d.h, CURLOPT_WRITEFUNCTION, on_download);
    curl_easy_setopt(d.h, CURLOPT_WRITEDATA, &d);
    /* A Vault standby answers 307 with the active node's address: follow it (a GET has no
     * body to re-send), as Vault's own client does; the token goes along, so never from
     * https down to plain http. */
    curl_easy_setopt(d.h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(d.h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(d.h, CURLOPT_REDIR_PROTOCOLS_STR, s->ho.tls ? "https" : "http,https");
    CURLcode cc =
        cancel_requested(s->ho.cancel) ? CURLE_ABORTED_BY_CALLBACK : curl_easy_perform(d.h);
    if (d.status == 0)
        curl_easy_getinfo(d.h, CURLINFO_RESPONSE_CODE, &d.status);
    rc = download_result(&d, cc, curlerr, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(d.chk, err); /* the archive reader's verdict on every byte */
    if (rc == CAIRN_OK)
        rc = sealed_rule(s->svc, hashi_check_info(d.chk), what, err);
    if (rc == CAIRN_OK) {
        const struct cairn_snapshot_info *in = hashi_check_info(d.chk);
        res->info.meta.index = in->meta.index;
        res->info.meta.term = in->meta.term;
        res->info.meta.id = xstrdup(in->meta.id ? in->meta.id : "");
        res->info.state_len = in->state_len;
        res->info.sealed_present = in->sealed_present;
        memcpy(res->info.checksum, in->checksum, sizeof(in->checksum));
    }
    cairn_writer_free(d.chk);
    curl_easy_cleanup(d.h);
    free_headers(hdrs);
    buf_free(&d.body);
    free(what);
    free(url);
    return rc;
}

int hashi_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    struct hashi_src *s = state;
    struct backup_result res = {.s = s};
    int rc = source_put_one(b, s->svc->kind, s->svc->file, download, &res, err);
    if (rc == CAIRN_OK) {
        json_t *meta =
            json_pack("{s:s, s:I, s:I, s:I, s:s, s:b}", "snapshot_id", res.info.meta.id, "index",
                      (json_int_t)res.info.meta.index, "term", (json_int_t)res.info.meta.term,
                      "state_bytes", (json_int_t)res.info.state_len, "checksum", res.info.checksum,
                      "sealed_hashes", res.info.sealed_present);
        rc = cairn_backup_set_meta(b, meta, err);
        json_decref(meta);
    }
    cairn_snapshot_meta_free(&res.info.meta);
    return rc;
}

/* ---- restore ---- */

/* The stored snapshot going up. The MANIFEST's check of the stored file and the archive
 * reader's check of its contents both decide only at the end of the stream, so the last
 * block is held back until both said yes: a damaged copy reaches the server cut short
 * (fewer bytes than Content-Length), which it refuses, never whole. */
struct upload {
    const struct hashi_service *svc;
    const char *what;
    struct cairn_reader *r;   /* the stored file, checked against the MANIFEST */
    struct cairn_writer *chk; /* the archive reader, on the same bytes */
    uint8_t *cur, *nxt;
    size_t cur_len, cur_off, nxt_len;
    int eof; /* nxt is empty for good: everything read and both checks passed */
    int rc;
    struct cairn_err err;
};

/* Read the block after cur into nxt (or reach the end and take both verdicts). */
static int up_ahead(struct upload *u)
{
    u->nxt_len = 0;
    while (u->rc == CAIRN_OK && u->nxt_len < UP_BLOCK) {
        size_t got = 0;
        u->rc = cairn_reader_read(u->r, u->nxt + u->nxt_len, UP_BLOCK - u->nxt_len, &got, &u->err);
        if (u->rc == CAIRN_OK && got > 0)
            u->rc = cairn_writer_write(u->chk, u->nxt + u->nxt_len, got, &u->err);
        if (u->rc == CAIRN_OK && got == 0) {
            u->eof = 1;
            u->rc = cairn_writer_close(u->chk, &u->err);
            if (u->rc == CAIRN_OK)
                u->rc = sealed_rule(u->svc, hashi_check_info(u->chk), u->what, &u->err);
            break;
        }
        u->nxt_len += got;
    }
    return u->rc;
}

static size_t on_upload(char *p, size_t size, size_t nmemb, void *arg)
{
    struct upload *u = arg;
    size_t cap = size * nmemb;
    if (u->cur_off == u->cur_len) {
        if (u->eof && u->nxt_len == 0)
            return 0;
        uint8_t *t = u->cur;
        u->cur = u->nxt;
        u->nxt = t;
        u->cur_len = u->nxt_len;
        u->cur_off = 0;
        u->nxt_len = 0;
        if ((u->eof ? CAIRN_OK : up_ahead(u)) != CAIRN_OK)
            return CURL_READFUNC_ABORT;
        if (u->eof && u->cur_len == 0)
            return 0;
    }
    size_t n = u->cur_len - u->cur_off < cap ? u->cur_len - u->cur_off : cap;
    memcpy(p, u->cur + u->cur_off, n);
    u->cur_off += n;
    return n;
}

static size_t on_answer(char *p, size_t size, size_t nmemb, void *arg)
{
    struct buf *body = arg;
    size_t n = size * nmemb, keep = n;
    if (body->len + keep > ERRBODY_MAX)
        keep = body->len < ERRBODY_MAX ? ERRBODY_MAX - body->len : 0;
    buf_add(body, p, keep);
    return n;
}

/* A refused upload, with the hints the two servers' answers call for, after their message. */
static int upload_refused(struct hashi_src *s, CURL *h, long status, const struct buf *body,
                          const char *what, struct cairn_err *err)
{
    int rc = http_status_error(status, body->p, body->len, what, err);
    const char *loc = NULL;
    char hint[320] = "";
    if (status == 307 && curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc) {
        char safe[256];
        str_escape(safe, sizeof(safe), loc, strlen(loc));
        snprintf(hint, sizeof(hint), "a standby node: restore to the active node (%s)", safe);
    } else if (s->svc->vault && status == 400 && err != NULL &&
               strstr(err->msg, "snapshot-force") != NULL) {
        snprintf(hint, sizeof(hint), "add ?force=true to the target URL to bypass the seal check");
    }
    if (hint[0] != '\0' && err != NULL) {
        char msg[CAIRN_ERR_MSG_MAX];
        snprintf(msg, sizeof(msg), "%s", err->msg);
        cairn_err_set(err, rc, "%s; %s", msg, hint);
    }
    return rc;
}

static int upload(struct hashi_src *s, struct cairn_backup *b, struct cairn_err *err)
{
    const struct cairn_manifest_file *f = cairn_backup_file_find(b, s->svc->file);
    if (f == NULL)
        return cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' holds no %s", cairn_backup_name(b),
                             s->svc->file);
    char *url = NULL;
    struct curl_slist *hdrs = NULL;
    int rc = request(s, 1, &url, &hdrs, err);
    if (rc != CAIRN_OK)
        return rc;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");
    char *what = xasprintf("%s restore (%s %s)", s->svc->kind, s->svc->restore_method, url);
    struct upload u = {
        .svc = s->svc, .what = what, .cur = xmalloc(UP_BLOCK), .nxt = xmalloc(UP_BLOCK)};
    rc = cairn_backup_get_file(b, s->svc->file, &u.r, err);
    if (rc == CAIRN_OK) {
        u.chk = hashi_check_new(cairn_discard_writer_new(), read_opts(s->svc), what);
        rc = up_ahead(&u); /* the first block; a snapshot under a block is checked whole */
        if (rc != CAIRN_OK)
            cairn_err_copy(err, &u.err);
    }
    if (rc == CAIRN_OK) {
        char curlerr[CURL_ERROR_SIZE];
        struct buf body = {0};
        long status = 0;
        CURL *h = http_handle(url, &s->ho, curlerr);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, s->svc->restore_method);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)f->logical_size);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(h, CURLOPT_READDATA, &u);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_answer);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        CURLcode cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (u.rc != CAIRN_OK) {
            rc = u.rc;
            cairn_err_set(err, rc,
                          "%s: the stored snapshot failed its check, the upload was "
                          "cut short: %s",
                          what, u.err.msg);
        } else if (cc != CURLE_OK) {
            rc = http_curl_error(cc, curlerr, status, &s->ho, what, err);
        } else if (status != 200 && status != 204) {
            rc = upload_refused(s, h, status, &body, what, err);
        }
        curl_easy_cleanup(h);
        buf_free(&body);
    }
    cairn_writer_free(u.chk);
    cairn_reader_free(u.r);
    free(u.cur);
    free(u.nxt);
    free_headers(hdrs);
    free(what);
    free(url);
    return rc;
}

int hashi_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err)
{
    struct hashi_src *s = state;
    if (strcmp(cairn_backup_kind(b), s->svc->kind) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s' is of kind '%s': a %s source restores only '%s' "
                             "backups",
                             cairn_backup_name(b), cairn_backup_kind(b), s->svc->kind,
                             s->svc->kind);
    if (into != NULL)
        return source_restore_into(b, s->svc->file, into, err);
    return upload(s, b, err);
}
