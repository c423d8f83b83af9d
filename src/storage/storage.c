/* Storage front end: driver registry, URL dispatch, listing with status, read-write and
 * read-only backup handles, the per-file error recorder and the end() barrier. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"

/* ---- registry ---- */

#define MAX_DRIVERS 16

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const struct cairn_storage_driver *drivers[MAX_DRIVERS] = {
    &cairn_storage_file_driver,
    &cairn_storage_s3_driver,
};
static size_t ndrivers = 2;

int cairn_storage_register(const struct cairn_storage_driver *drv, struct cairn_err *err)
{
    if (drv == NULL || drv->name == NULL || drv->open == NULL || drv->list == NULL ||
        drv->start == NULL || drv->remove == NULL || drv->create == NULL || drv->read == NULL ||
        drv->free == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "storage driver lacks a name or operation");
    int rc = CAIRN_OK;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < ndrivers; i++)
        if (strcmp(drivers[i]->name, drv->name) == 0) {
            rc = cairn_err_set(err, CAIRN_E_EXISTS, "storage driver '%s' is already registered",
                               drv->name);
            goto out;
        }
    if (ndrivers == MAX_DRIVERS) {
        rc = cairn_err_set(err, CAIRN_E_INVALID, "too many storage drivers");
        goto out;
    }
    drivers[ndrivers++] = drv;
out:
    pthread_mutex_unlock(&reg_mu);
    if (rc == CAIRN_OK && !(drv->features & CAIRN_STORAGE_FEATURE_ATOMIC_WRITE))
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "storage driver '%s' cannot publish a MANIFEST atomically: a crash while a "
                  "backup ends may leave it listed as corrupt",
                  drv->name);
    return rc;
}

const struct cairn_storage_driver *cairn_storage_driver_find(const char *name)
{
    const struct cairn_storage_driver *d = NULL;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < ndrivers && d == NULL; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            d = drivers[i];
    pthread_mutex_unlock(&reg_mu);
    return d;
}

/* ---- names ---- */

int cairn_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > CAIRN_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+' || c == '@' || c == '='))
            return 0;
    }
    return 1;
}

#define STAMP_LEN 16 /* "YYYYMMDDTHHMMSSZ" */

int cairn_backup_name_make(int64_t unix_ms, int with_ms, const char *tag, char *out, size_t cap,
                           struct cairn_err *err)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (unix_ms < 0 || gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
        return cairn_err_set(err, CAIRN_E_INVALID, "no backup name for time %lld ms",
                             (long long)unix_ms);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
    char frac[8] = "";
    if (with_ms)
        snprintf(frac, sizeof(frac), ".%03d", (int)(unix_ms % 1000));
    int n = snprintf(out, cap, "%s%sZ%s%s", stamp, frac, tag ? "-" : "", tag ? tag : "");
    if (n < 0 || (size_t)n >= cap)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup name '%s%sZ-%s' is longer than %zu "
                             "characters",
                             stamp, frac, tag ? tag : "", cap ? cap - 1 : 0);
    if (!cairn_name_valid(out))
        return cairn_err_set(err, CAIRN_E_INVALID, "invalid backup name '%s'", out);
    return CAIRN_OK;
}

static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

int cairn_backup_name_parse(const char *name, int64_t *unix_ms, const char **tag)
{
    int y, mo, d, h, mi, sec, ms = 0;
    if (name == NULL || strlen(name) < STAMP_LEN || !digits(name, 4, &y) ||
        !digits(name + 4, 2, &mo) || !digits(name + 6, 2, &d) || name[8] != 'T' ||
        !digits(name + 9, 2, &h) || !digits(name + 11, 2, &mi) || !digits(name + 13, 2, &sec))
        return 0;
    const char *p = name + 15;
    if (*p == '.') {
        if (!digits(p + 1, 3, &ms))
            return 0;
        p += 4;
    }
    if (*p++ != 'Z' || (*p != '\0' && (*p != '-' || p[1] == '\0')))
        return 0;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    /* timegm normalises 20260231 to March 3rd: a real date round-trips. */
    if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
        tm.tm_min != mi || tm.tm_sec != sec)
        return 0;
    if (unix_ms != NULL)
        *unix_ms = (int64_t)t * 1000 + ms;
    if (tag != NULL)
        *tag = *p == '-' ? p + 1 : p;
    return 1;
}

int cairn_backup_name_now(const char *tag, char *out, size_t cap, struct cairn_err *err)
{
    return cairn_backup_name_make((int64_t)cairn_now_ms(), 0, tag, out, cap, err);
}

static int check_backup_name(const char *name, struct cairn_err *err)
{
    if (!cairn_name_valid(name))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "invalid backup name '%s': use 1-%d characters of A-Z a-z 0-9 . _ - "
                             "+ @ =, not starting with '.'",
                             name ? name : "", CAIRN_NAME_MAX);
    return CAIRN_OK;
}

static int check_file_name(const struct cairn_backup *b, const char *file, struct cairn_err *err)
{
    if (!cairn_name_valid(file))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s': invalid file name '%s': use 1-%d characters of A-Z a-z "
                             "0-9 . _ - + @ =, not starting with '.'",
                             b->name, file ? file : "", CAIRN_NAME_MAX);
    if (strncmp(file, CAIRN_MANIFEST_NAME, strlen(CAIRN_MANIFEST_NAME)) == 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': file name '%s' is reserved",
                             b->name, file);
    return CAIRN_OK;
}

/* ---- storage ---- */

int cairn_storage_open(const char *url, struct cairn_storage **out, struct cairn_err *err)
{
    *out = NULL;
    if (url == NULL || *url == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "empty storage URL");
    char scheme[32];
    const char *sep = strstr(url, "://");
    if (url[0] == '/') {
        snprintf(scheme, sizeof(scheme), "file");
    } else if (sep != NULL && (size_t)(sep - url) < sizeof(scheme)) {
        memcpy(scheme, url, (size_t)(sep - url));
        scheme[sep - url] = '\0';
    } else {
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "storage URL '%s' has no scheme (use file:///path, an absolute path "
                             "or s3://bucket/prefix)",
                             url);
    }
    const struct cairn_storage_driver *drv = cairn_storage_driver_find(scheme);
    if (drv == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "no storage driver for '%s://' (storage URL '%s')", scheme, url);
    void *state = NULL;
    int rc = drv->open(url, &state, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_storage *st = cairn_xcalloc(1, sizeof(*st));
    st->drv = drv;
    st->state = state;
    st->url = cairn_xstrdup(url);
    *out = st;
    return CAIRN_OK;
}

void cairn_storage_disconnect(struct cairn_storage *st)
{
    if (st != NULL && st->drv->disconnect != NULL)
        st->drv->disconnect(st->state);
}

void cairn_storage_free(struct cairn_storage *st)
{
    if (st == NULL)
        return;
    st->drv->free(st->state);
    free(st->url);
    free(st);
}

const char *cairn_storage_url(const struct cairn_storage *st)
{
    return st->url;
}

void cairn_storage_set_seal_key(struct cairn_storage *st, const uint8_t key[CAIRN_SEAL_KEY_LEN])
{
    st->has_key = key != NULL;
    if (key != NULL)
        memcpy(st->key, key, CAIRN_SEAL_KEY_LEN);
    else
        memset(st->key, 0, sizeof(st->key));
}

void cairn_storage_set_cancel(struct cairn_storage *st, const volatile int *cancel)
{
    st->cancel = cancel;
    if (st->drv->set_cancel != NULL)
        st->drv->set_cancel(st->state, cancel);
}

void cairn_storage_set_lock_wait(struct cairn_storage *st, int64_t ms)
{
    st->lock_wait_ms = ms > 0 ? ms : 0;
}

const char *cairn_backup_status_name(enum cairn_backup_status s)
{
    switch (s) {
    case CAIRN_BACKUP_COMPLETE: return "complete";
    case CAIRN_BACKUP_INCOMPLETE: return "incomplete";
    case CAIRN_BACKUP_CORRUPT: return "corrupt";
    }
    return "unknown";
}

/* ---- handles ---- */

struct cairn_backup *cairn_backup_new_handle(struct cairn_storage *st, const char *name,
                                             int read_only)
{
    struct cairn_backup *b = cairn_xcalloc(1, sizeof(*b));
    b->st = st;
    b->name = cairn_xstrdup(name);
    b->read_only = read_only;
    b->status = CAIRN_BACKUP_INCOMPLETE;
    b->created = -1;
    b->meta = json_object();
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->body_mu, NULL);
    pthread_cond_init(&b->idle, NULL);
    return b;
}

void cairn_file_rec_free(struct file_rec *r)
{
    if (r == NULL)
        return;
    free(r->f.name);
    free(r->error);
    free(r);
}

void cairn_backup_free(struct cairn_backup *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    pthread_mutex_unlock(&b->mu);
    cairn_lock_release(b->lock);
    for (size_t i = 0; i < b->nfiles; i++)
        cairn_file_rec_free(b->files[i]);
    free(b->files);
    free(b->slots);
    json_decref(b->parts);
    manifest_body_free(b->body);
    free(b->flushed_name);
    free(b->stream_msg);
    free(b->name);
    free(b->kind);
    free(b->source);
    free(b->parent);
    json_decref(b->meta);
    json_decref(b->scope);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->body_mu);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

struct name_vec {
    char **v;
    size_t n, cap;
};

static int collect_name(void *arg, const char *name)
{
    struct name_vec *nv = arg;
    if (!cairn_name_valid(name))
        return 0; /* not ours: temp files, stray objects */
    if (nv->n == nv->cap) {
        nv->cap = nv->cap ? nv->cap * 2 : 16;
        nv->v = cairn_xrealloc(nv->v, nv->cap * sizeof(*nv->v));
    }
    nv->v[nv->n++] = cairn_xstrdup(name);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void cairn_backup_list_free(struct cairn_backup_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].name);
        free(l->items[i].kind);
        free(l->items[i].parent);
        free(l->items[i].error);
        free(l->items[i].source);
        free(l->items[i].scope);
    }
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

int cairn_storage_list(struct cairn_storage *st, struct cairn_backup_list *out,
                       struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    struct name_vec nv = {0};
    int rc = st->drv->list(st->state, collect_name, &nv, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "list backups in '%s'", st->url);
        goto out;
    }
    if (nv.n > 1)
        qsort(nv.v, nv.n, sizeof(*nv.v), cmp_str);
    out->items = cairn_xcalloc(nv.n ? nv.n : 1, sizeof(*out->items));
    for (size_t i = 0; i < nv.n; i++) {
        if (i > 0 && strcmp(nv.v[i], nv.v[i - 1]) == 0)
            continue;
        struct cairn_backup_info *info = &out->items[out->count++];
        info->name = cairn_xstrdup(nv.v[i]);
        info->created = -1;
        struct cairn_backup *b = cairn_backup_new_handle(st, nv.v[i], 1);
        struct cairn_err e;
        cairn_err_clear(&e);
        /* Headers only: a split MANIFEST's file list is not needed to list. */
        int lrc = cairn_manifest_load(b, 1, &e);
        if (lrc == CAIRN_OK) {
            info->status = CAIRN_BACKUP_COMPLETE;
            info->created = b->created;
            info->files = b->sum_files;
            info->size = b->sum_size;
            info->kind = cairn_xstrdup(b->kind ? b->kind : "");
            info->parent = b->parent ? cairn_xstrdup(b->parent) : NULL;
            info->source = cairn_xstrdup(b->source ? b->source : "");
            if (b->scope != NULL)
                info->scope = json_dumps(b->scope, JSON_COMPACT | JSON_SORT_KEYS);
            info->sealed = b->sealed;
        } else if (lrc == CAIRN_E_NOTFOUND) {
            info->status = CAIRN_BACKUP_INCOMPLETE;
        } else if (lrc == CAIRN_E_CORRUPT || lrc == CAIRN_E_SEAL) {
            info->status = CAIRN_BACKUP_CORRUPT;
            info->error = cairn_xstrdup(e.msg);
        } else {
            cairn_err_copy(err, &e);
            rc = lrc;
            cairn_backup_free(b);
            cairn_backup_list_free(out);
            goto out;
        }
        cairn_backup_free(b);
    }
out:
    for (size_t i = 0; i < nv.n; i++)
        free(nv.v[i]);
    free(nv.v);
    return rc;
}

/* Start under the shared lock *lock (taken over by the handle on success). */
static int start_locked(struct cairn_storage *st, const char *name, struct cairn_lock **lock,
                        struct cairn_backup **out, struct cairn_err *err)
{
    int rc = check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = st->drv->start(st->state, name, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = cairn_backup_new_handle(st, name, 0);
    b->kind = cairn_xstrdup("files");
    b->source = cairn_xstrdup("");
    b->lock = *lock;
    *lock = NULL;
    *out = b;
    return CAIRN_OK;
}

int cairn_storage_start(struct cairn_storage *st, const char *name, struct cairn_backup **out,
                        struct cairn_err *err)
{
    *out = NULL;
    int rc = check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    /* Held until the handle is freed: no prune or rm removes what is being written. */
    struct cairn_lock *lock = NULL;
    struct cairn_lock_opts lo = {.command = "backup", .wait_ms = st->lock_wait_ms};
    rc = cairn_storage_lock(st, CAIRN_LOCK_SHARED, &lo, &lock, err);
    if (rc == CAIRN_OK)
        rc = start_locked(st, name, &lock, out, err);
    cairn_lock_release(lock);
    return rc;
}

int cairn_storage_start_auto(struct cairn_storage *st, const char *tag, char *name, size_t cap,
                             struct cairn_backup **out, struct cairn_err *err)
{
    *out = NULL;
    int64_t ms = (int64_t)cairn_now_ms();
    struct cairn_lock *lock = NULL;
    struct cairn_lock_opts lo = {.command = "backup", .wait_ms = st->lock_wait_ms};
    int rc = cairn_storage_lock(st, CAIRN_LOCK_SHARED, &lo, &lock, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = CAIRN_E_EXISTS;
    /* A taken name is another writer's, started this millisecond: take the next one. */
    for (int i = 0; i < 1000 && rc == CAIRN_E_EXISTS; i++) {
        rc = cairn_backup_name_make(ms + i, 1, tag, name, cap, err);
        if (rc == CAIRN_OK)
            rc = start_locked(st, name, &lock, out, err);
    }
    cairn_lock_release(lock);
    return rc;
}

int cairn_storage_open_backup(struct cairn_storage *st, const char *name, struct cairn_backup **out,
                              struct cairn_err *err)
{
    *out = NULL;
    int rc = check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = cairn_backup_new_handle(st, name, 1);
    rc = cairn_manifest_load(b, 0, err);
    if (rc == CAIRN_E_NOTFOUND) {
        /* No MANIFEST: incomplete if anything of the backup exists, else not found. */
        struct name_vec nv = {0};
        struct cairn_err le;
        rc = st->drv->list(st->state, collect_name, &nv, &le);
        int found = 0;
        for (size_t i = 0; i < nv.n; i++) {
            found |= strcmp(nv.v[i], name) == 0;
            free(nv.v[i]);
        }
        free(nv.v);
        if (rc != CAIRN_OK) {
            cairn_err_copy(err, &le);
        } else if (!found) {
            rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' not found in '%s'", name,
                               st->url);
        } else {
            cairn_err_clear(err);
            b->status = CAIRN_BACKUP_INCOMPLETE;
        }
    }
    if (rc != CAIRN_OK) {
        cairn_backup_free(b);
        return rc;
    }
    *out = b;
    return CAIRN_OK;
}

int cairn_storage_remove(struct cairn_storage *st, const char *name, struct cairn_err *err)
{
    int rc = check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = st->drv->remove(st->state, name, err);
    if (rc == CAIRN_OK)
        cairn_log(CAIRN_LOG_INFO, "storage", "removed backup '%s' from '%s'", name, st->url);
    return rc;
}

const char *cairn_backup_name(const struct cairn_backup *b)
{
    return b->name;
}

const char *cairn_backup_url(const struct cairn_backup *b)
{
    return b->st->url;
}

int cairn_backup_read_only(const struct cairn_backup *b)
{
    return b->read_only;
}

enum cairn_backup_status cairn_backup_status(const struct cairn_backup *b)
{
    return b->status;
}

static int need_rw(struct cairn_backup *b, const char *op, struct cairn_err *err)
{
    if (b->read_only)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "%s cannot be called on read-only backup '%s' (open it with "
                             "cairn_storage_start)",
                             op, b->name);
    if (b->ended)
        return cairn_err_set(err, CAIRN_E_INVALID, "%s: backup '%s' has already ended", op,
                             b->name);
    return CAIRN_OK;
}

static int set_str(struct cairn_backup *b, char **field, const char *v, const char *op,
                   struct cairn_err *err)
{
    int rc = need_rw(b, op, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    free(*field);
    *field = v ? cairn_xstrdup(v) : NULL;
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

int cairn_backup_set_kind(struct cairn_backup *b, const char *kind, struct cairn_err *err)
{
    if (kind == NULL || *kind == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': empty kind", b->name);
    return set_str(b, &b->kind, kind, "set_kind", err);
}

int cairn_backup_set_source(struct cairn_backup *b, const char *source, struct cairn_err *err)
{
    return set_str(b, &b->source, source ? source : "", "set_source", err);
}

int cairn_backup_set_parent(struct cairn_backup *b, const char *parent, struct cairn_err *err)
{
    if (parent != NULL && !cairn_name_valid(parent))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': invalid parent name '%s'", b->name,
                             parent);
    return set_str(b, &b->parent, parent, "set_parent", err);
}

int cairn_backup_set_meta(struct cairn_backup *b, json_t *meta, struct cairn_err *err)
{
    int rc = need_rw(b, "set_meta", err);
    if (rc != CAIRN_OK)
        return rc;
    if (!json_is_object(meta))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': meta must be a JSON object",
                             b->name);
    pthread_mutex_lock(&b->mu);
    json_decref(b->meta);
    b->meta = json_deep_copy(meta);
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

int cairn_backup_set_scope(struct cairn_backup *b, json_t *scope, struct cairn_err *err)
{
    int rc = need_rw(b, "set_scope", err);
    if (rc != CAIRN_OK)
        return rc;
    if (scope != NULL && !json_is_object(scope))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': scope must be a JSON object",
                             b->name);
    pthread_mutex_lock(&b->mu);
    json_decref(b->scope);
    b->scope = scope != NULL ? json_deep_copy(scope) : NULL;
    pthread_mutex_unlock(&b->mu);
    return CAIRN_OK;
}

json_t *cairn_backup_scope(const struct cairn_backup *b)
{
    return b->scope;
}

const char *cairn_backup_kind(const struct cairn_backup *b)
{
    return b->kind;
}

const char *cairn_backup_source(const struct cairn_backup *b)
{
    return b->source;
}

const char *cairn_backup_parent(const struct cairn_backup *b)
{
    return b->parent;
}

int64_t cairn_backup_created(const struct cairn_backup *b)
{
    return b->created;
}

json_t *cairn_backup_meta(const struct cairn_backup *b)
{
    return b->meta;
}

size_t cairn_backup_file_count(const struct cairn_backup *b)
{
    if (b->read_only) /* a split MANIFEST's list may not be loaded: its header counts it */
        return b->files_loaded ? b->nfiles : (size_t)b->sum_files;
    return (size_t)b->nflushed + b->nfiles;
}

/* Read-only handles of a split MANIFEST load its file list on first use (under the lock:
 * threads may ask at once). A list that no longer reads is logged, and the files are not
 * found. */
static int files_ready(const struct cairn_backup *cb)
{
    struct cairn_backup *b = (struct cairn_backup *)cb;
    if (!b->read_only || __atomic_load_n(&b->files_loaded, __ATOMIC_ACQUIRE) || b->parts == NULL)
        return 1;
    pthread_mutex_lock(&b->mu);
    struct cairn_err e;
    int rc = manifest_load_files(b, &e);
    pthread_mutex_unlock(&b->mu);
    if (rc != CAIRN_OK)
        cairn_log(CAIRN_LOG_ERROR, "storage", "%s", e.msg);
    return rc == CAIRN_OK;
}

const struct cairn_manifest_file *cairn_backup_file_at(const struct cairn_backup *b, size_t i)
{
    if (!files_ready(b))
        return NULL;
    return i < b->nfiles ? &b->files[i]->f : NULL;
}

/* ---- file index of read-write handles (open addressing, linear probing) ---- */

static size_t name_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (size_t)h;
}

/* The slot holding name, or the empty slot where it goes. nslots is a power of two. */
static struct file_rec **index_slot(struct file_rec **slots, size_t nslots, const char *name)
{
    size_t i = name_hash(name) & (nslots - 1);
    while (slots[i] != NULL && strcmp(slots[i]->f.name, name) != 0)
        i = (i + 1) & (nslots - 1);
    return &slots[i];
}

/* Add rec (its name not yet indexed), keeping the table at most half full. Caller holds mu. */
static void index_add(struct cairn_backup *b, struct file_rec *rec)
{
    if (2 * (b->nfiles + 1) > b->nslots) {
        size_t n = b->nslots ? 2 * b->nslots : 64;
        struct file_rec **slots = cairn_xcalloc(n, sizeof(*slots));
        for (size_t i = 0; i < b->nslots; i++)
            if (b->slots[i] != NULL)
                *index_slot(slots, n, b->slots[i]->f.name) = b->slots[i];
        free(b->slots);
        b->slots = slots;
        b->nslots = n;
    }
    *index_slot(b->slots, b->nslots, rec->f.name) = rec;
}

static struct file_rec *index_get(const struct cairn_backup *b, const char *name)
{
    return b->nslots ? *index_slot(b->slots, b->nslots, name) : NULL;
}

static int cmp_name_rec(const void *key, const void *rec)
{
    return strcmp(key, (*(struct file_rec *const *)rec)->f.name);
}

const struct cairn_manifest_file *cairn_backup_file_find(const struct cairn_backup *b,
                                                         const char *name)
{
    struct file_rec *r = NULL;
    if (!b->read_only) { /* add_file may grow the index meanwhile */
        pthread_mutex_t *mu = (pthread_mutex_t *)&b->mu;
        pthread_mutex_lock(mu);
        r = index_get(b, name);
        pthread_mutex_unlock(mu);
    } else if (files_ready(b)) { /* the MANIFEST's files, sorted by name when loaded */
        struct file_rec **p = bsearch(name, b->files, b->nfiles, sizeof(*b->files), cmp_name_rec);
        r = p ? *p : NULL;
    }
    return r ? &r->f : NULL;
}

/* ---- add_file: the recording stage on top of each file's chain ----
 * Chain: record -> hash(logical) -> [zstd] -> hash(stored) -> driver sink. The record stage
 * closes the chain itself in finish so it sees the sink's commit result, and it reports the
 * file's outcome to the handle exactly once (commit, failure, or free without close). With
 * CAIRN_COMPRESS_AUTO the rest of the chain is built once the first CAIRN_PROBE_LEN bytes (or
 * all of a shorter file) are buffered and judged. */

struct record_writer {
    struct cairn_writer base;
    struct cairn_backup *b;
    struct file_rec *rec;
    struct cairn_file_opts opts;
    struct cairn_writer *sink;             /* the driver's, until the chain owns it */
    struct cairn_writer *logical, *stored; /* hash stages inside the chain */
    int64_t size_hint;                     /* add_file's, for the compressor */
    uint8_t *probe;                        /* AUTO, undecided: the first bytes */
    size_t nprobe;
    int done;
    struct cairn_manifest_file *copy; /* backup_writer_record_to */
};

static void record_chain(struct record_writer *r, enum cairn_compression comp)
{
    pthread_mutex_lock(&r->b->mu);
    r->rec->f.compression = comp;
    pthread_mutex_unlock(&r->b->mu);
    r->stored = cairn_hash_writer_new(r->sink);
    r->sink = NULL;
    struct cairn_writer *mid = r->stored;
    if (comp == CAIRN_COMPRESS_ZSTD)
        mid = cairn_zstd_writer_new_sized(mid, r->opts.level ? r->opts.level : 3,
                                          r->opts.threads ? r->opts.threads : 1, r->size_hint);
    if (r->opts.pipeline)
        mid = cairn_pipe_writer_new(mid);
    /* Uncompressed, the logical bytes are the stored bytes: one hash serves both (and runs
     * on the helper thread when pipelined). */
    r->logical = r->stored;
    if (comp == CAIRN_COMPRESS_ZSTD)
        r->logical = mid = cairn_hash_writer_new(mid);
    r->base.next = mid;
}

/* AUTO: choose from the buffered bytes, build the chain and pass them on. */
static int record_decide(struct record_writer *r, struct cairn_err *err)
{
    record_chain(r, io_compress_pays(IO_PROBE_ZSTD, r->probe, r->nprobe) ? CAIRN_COMPRESS_ZSTD
                                                                         : CAIRN_COMPRESS_NONE);
    int rc = cairn_writer_write(r->base.next, r->probe, r->nprobe, err);
    free(r->probe);
    r->probe = NULL;
    return rc;
}

/* Streaming writers: the committed records below every file still being written, sorted,
 * leave memory as body lines. body_mu orders the batches (taken before mu, and batches are
 * cut in order under it); mu is not held while they are written. */
static void stream_flush(struct cairn_backup *b)
{
    if (pthread_mutex_trylock(&b->body_mu) != 0)
        return; /* another thread is flushing: it or a later commit takes these */
    pthread_mutex_lock(&b->mu);
    if (!b->stream) { /* end() is writing the rest */
        pthread_mutex_unlock(&b->mu);
        pthread_mutex_unlock(&b->body_mu);
        return;
    }
    const char *low = NULL; /* the least name still being written */
    for (size_t i = 0; i < b->nfiles; i++)
        if ((b->files[i]->state == FILE_WRITING || b->files[i]->state == FILE_RESERVED) &&
            (low == NULL || strcmp(b->files[i]->f.name, low) < 0))
            low = b->files[i]->f.name;
    struct file_rec **batch = cairn_xcalloc(b->nfiles ? b->nfiles : 1, sizeof(*batch));
    size_t n = 0, kept = 0;
    for (size_t i = 0; i < b->nfiles; i++) {
        struct file_rec *r = b->files[i];
        int below = low == NULL || strcmp(r->f.name, low) < 0;
        if (r->state == FILE_COMMITTED && below)
            batch[n++] = r;
        else if (r->state == FILE_DROPPED && below)
            cairn_file_rec_free(r);
        else
            b->files[kept++] = r;
    }
    if (kept < b->nfiles) {
        memset(b->slots, 0, b->nslots * sizeof(*b->slots));
        for (size_t i = 0; i < kept; i++)
            *index_slot(b->slots, b->nslots, b->files[i]->f.name) = b->files[i];
    }
    b->nfiles = kept;
    if (n > 0) {
        qsort(batch, n, sizeof(*batch), manifest_cmp_rec);
        free(b->flushed_name);
        b->flushed_name = cairn_xstrdup(batch[n - 1]->f.name);
        b->nflushed += n;
        for (size_t i = 0; i < n; i++)
            b->flushed_size += batch[i]->f.size;
    }
    b->flush_at = kept + STREAM_BATCH;
    pthread_mutex_unlock(&b->mu);
    struct cairn_err e;
    /* After a failure the body writes nothing more; end() reports the first message. */
    if (n > 0 && manifest_put_files(b, batch, n, &e) != CAIRN_OK && b->stream_msg == NULL)
        b->stream_msg = cairn_xstrdup(e.msg);
    for (size_t i = 0; i < n; i++)
        cairn_file_rec_free(batch[i]);
    free(batch);
    pthread_mutex_unlock(&b->body_mu);
}

static void record_outcome(struct record_writer *r, int rc, const struct cairn_err *e)
{
    if (r->done)
        return;
    r->done = 1;
    struct cairn_backup *b = r->b;
    pthread_mutex_lock(&b->mu);
    if (rc == CAIRN_OK) {
        uint8_t d[32];
        r->rec->state = FILE_COMMITTED;
        r->rec->f.size = r->stored->bytes;
        cairn_hash_writer_digest(r->stored, d);
        cairn_hex_encode(d, 32, r->rec->f.sha256);
        r->rec->f.logical_size = r->logical->bytes;
        cairn_hash_writer_digest(r->logical, d);
        cairn_hex_encode(d, 32, r->rec->f.logical_sha256);
        if (r->copy != NULL) {
            char *name = r->copy->name;
            *r->copy = r->rec->f;
            r->copy->name = name;
        }
    } else {
        r->rec->state = FILE_FAILED;
        r->rec->code = rc;
        free(r->rec->error);
        r->rec->error = cairn_xstrdup(e && e->msg[0] ? e->msg : "failed");
    }
    /* A flushing writer still counts as open, so end() and free() wait for its batch. */
    int flush = b->stream && rc == CAIRN_OK && b->nfiles >= b->flush_at;
    if (!flush && --b->open_writers == 0)
        pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->mu);
    if (flush) {
        stream_flush(b);
        pthread_mutex_lock(&b->mu);
        if (--b->open_writers == 0)
            pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
    }
}

static int record_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct record_writer *r = (struct record_writer *)w;
    int rc = CAIRN_OK;
    if (r->probe != NULL) {
        size_t n = len < CAIRN_PROBE_LEN - r->nprobe ? len : CAIRN_PROBE_LEN - r->nprobe;
        memcpy(r->probe + r->nprobe, buf, n);
        r->nprobe += n;
        buf = (const uint8_t *)buf + n;
        len -= n;
        if (r->nprobe == CAIRN_PROBE_LEN)
            rc = record_decide(r, err);
    }
    if (rc == CAIRN_OK && len > 0)
        rc = cairn_writer_write(w->next, buf, len, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", r->b->name, r->rec->f.name);
        record_outcome(r, rc, err);
    }
    return rc;
}

static int record_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct record_writer *r = (struct record_writer *)w;
    int rc = r->probe != NULL ? record_decide(r, err) : CAIRN_OK;
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w->next, err);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", r->b->name, r->rec->f.name);
    record_outcome(r, rc, err);
    return rc;
}

static void record_free(struct cairn_writer *w)
{
    struct record_writer *r = (struct record_writer *)w;
    if (!r->done) {
        struct cairn_err e;
        cairn_err_set(&e, CAIRN_E_CANCELLED, "backup '%s' file '%s': writer freed before close",
                      r->b->name, r->rec->f.name);
        record_outcome(r, e.code, &e);
    }
    cairn_writer_free(r->sink); /* AUTO, undecided: the chain never took it */
    free(r->probe);
    free(r);
}

static const struct cairn_writer_ops record_ops = {"backup-file", record_write, record_finish,
                                                   record_free};

void backup_set_streaming(struct cairn_backup *b)
{
    pthread_mutex_lock(&b->mu);
    b->stream = 1;
    b->flush_at = b->nfiles + STREAM_BATCH;
    pthread_mutex_unlock(&b->mu);
}

void backup_writer_record_to(struct cairn_writer *w, struct cairn_manifest_file *dst)
{
    if (w != NULL && w->ops == &record_ops)
        ((struct record_writer *)w)->copy = dst;
}

void cairn_backup_writer_fail(struct cairn_writer *w, const struct cairn_err *e)
{
    if (w != NULL && w->ops == &record_ops)
        record_outcome((struct record_writer *)w, e->code ? e->code : CAIRN_E_IO, e);
}

/* The record for file, new or reused: a failed one may be retried, a reserved one is taken
 * up when reserved says so; a name at or below the streamed ones is refused. Caller holds mu. */
static int take_name_locked(struct cairn_backup *b, const char *file, int reserved,
                            struct file_rec **out, struct cairn_err *err)
{
    struct file_rec *rec = index_get(b, file);
    if (rec != NULL && (rec->state == FILE_FAILED || (reserved && rec->state == FILE_RESERVED))) {
        *out = rec;
        return CAIRN_OK;
    }
    if (rec != NULL && rec->state != FILE_DROPPED)
        return cairn_err_set(err, CAIRN_E_EXISTS, "backup '%s': file '%s' already added", b->name,
                             file);
    if (b->flushed_name != NULL && strcmp(file, b->flushed_name) <= 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s': file '%s' sorts before files whose MANIFEST entries "
                             "are written already (a streamed file list takes ascending names)",
                             b->name, file);
    if (rec == NULL) {
        if (b->nfiles == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 16;
            b->files = cairn_xrealloc(b->files, b->cap * sizeof(*b->files));
        }
        rec = cairn_xcalloc(1, sizeof(*rec));
        rec->f.name = cairn_xstrdup(file);
        index_add(b, rec);
        b->files[b->nfiles++] = rec;
    }
    *out = rec;
    return CAIRN_OK;
}

int backup_reserve(struct cairn_backup *b, const char *file, struct cairn_err *err)
{
    int rc = need_rw(b, "add_file", err);
    if (rc == CAIRN_OK)
        rc = check_file_name(b, file, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = NULL;
    rc = take_name_locked(b, file, 0, &rec, err);
    if (rc == CAIRN_OK)
        rec->state = FILE_RESERVED;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void backup_unreserve(struct cairn_backup *b, const char *file)
{
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = index_get(b, file);
    if (rec != NULL && rec->state == FILE_RESERVED)
        rec->state = FILE_DROPPED;
    pthread_mutex_unlock(&b->mu);
}

int cairn_backup_add_file_opts(struct cairn_backup *b, const char *file, int64_t size_hint,
                               const struct cairn_file_opts *opts, struct cairn_writer **out,
                               struct cairn_err *err)
{
    *out = NULL;
    int rc = need_rw(b, "add_file", err);
    if (rc == CAIRN_OK)
        rc = check_file_name(b, file, err);
    if (rc != CAIRN_OK)
        return rc;
    enum cairn_compression comp = opts ? opts->compression : CAIRN_COMPRESS_NONE;
    if (comp != CAIRN_COMPRESS_NONE && comp != CAIRN_COMPRESS_ZSTD && comp != CAIRN_COMPRESS_AUTO)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "backup '%s' file '%s': compression '%s' is not supported for "
                             "stored files (use none, zstd or auto)",
                             b->name, file, cairn_compression_name(comp));
    /* Reserve the name (duplicates are refused, failed ones may be retried). */
    pthread_mutex_lock(&b->mu);
    struct file_rec *rec = NULL;
    rc = take_name_locked(b, file, 1, &rec, err);
    if (rc != CAIRN_OK) {
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    rec->state = FILE_WRITING;
    free(rec->error);
    rec->error = NULL;
    b->open_writers++;
    pthread_mutex_unlock(&b->mu);

    struct cairn_writer *sink = NULL;
    const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_SYNC};
    rc = b->st->drv->create(b->st->state, b->name, file, size_hint, &wo, &sink, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", b->name, file);
        pthread_mutex_lock(&b->mu);
        rec->state = FILE_FAILED;
        rec->code = rc;
        rec->error = cairn_xstrdup(err ? err->msg : "create failed");
        if (--b->open_writers == 0)
            pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    struct record_writer *r = cairn_xcalloc(1, sizeof(*r));
    cairn_writer_init(&r->base, &record_ops, NULL);
    r->b = b;
    r->rec = rec;
    r->sink = sink;
    r->size_hint = size_hint;
    if (opts != NULL)
        r->opts = *opts;
    if (comp == CAIRN_COMPRESS_AUTO)
        r->probe = cairn_xmalloc(CAIRN_PROBE_LEN);
    else
        record_chain(r, comp);
    *out = &r->base;
    return CAIRN_OK;
}

int cairn_backup_add_file(struct cairn_backup *b, const char *file, int64_t size_hint,
                          struct cairn_writer **w, struct cairn_err *err)
{
    return cairn_backup_add_file_opts(b, file, size_hint, NULL, w, err);
}

/* Wait for writers and gather per-file errors ("file 'a': ...; ..."). Caller holds b->mu. */
static int collect_errors_locked(struct cairn_backup *b, struct cairn_err *err)
{
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    int rc = CAIRN_OK;
    size_t nfailed = 0;
    char msg[CAIRN_ERR_MSG_MAX] = "";
    size_t off = 0;
    for (size_t i = 0; i < b->nfiles; i++) {
        struct file_rec *f = b->files[i];
        if (f->state != FILE_FAILED)
            continue;
        nfailed++;
        if (rc == CAIRN_OK)
            rc = f->code ? f->code : CAIRN_E_IO;
        cairn_join(msg, sizeof(msg), &off, "; ", f->error);
    }
    if (nfailed > 0) /* the first failure's code: ENOSPC, network... */
        cairn_err_set(err, rc, "backup '%s': %zu file(s) failed: %s", b->name, nfailed, msg);
    return rc;
}

int cairn_backup_end(struct cairn_backup *b, struct cairn_err *err)
{
    int rc = need_rw(b, "end", err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    rc = collect_errors_locked(b, err);
    pthread_mutex_unlock(&b->mu);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "MANIFEST not written");
        return rc;
    }
    /* A backup whose lock was taken over (it looked stale) may have been pruned meanwhile:
     * it must not be declared complete. */
    rc = cairn_lock_check(b->lock, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "backup '%s': MANIFEST not written", b->name);
    b->created = (int64_t)(cairn_now_ms() / 1000);
    pthread_mutex_lock(&b->body_mu); /* after any batch being flushed; no more batches */
    pthread_mutex_lock(&b->mu);
    b->stream = 0;
    pthread_mutex_unlock(&b->mu);
    rc = cairn_manifest_write(b, err);
    pthread_mutex_unlock(&b->body_mu);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "backup '%s': write MANIFEST", b->name);
        return rc;
    }
    b->ended = 1;
    b->status = CAIRN_BACKUP_COMPLETE;
    b->sealed = b->st->has_key;
    cairn_log(CAIRN_LOG_INFO, "storage", "backup '%s' complete in '%s' (%llu files)", b->name,
              b->st->url, (unsigned long long)(b->nflushed + b->nfiles));
    return CAIRN_OK;
}

int cairn_backup_abort(struct cairn_backup *b, struct cairn_err *err)
{
    int rc = need_rw(b, "abort", err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_mutex_lock(&b->mu);
    while (b->open_writers > 0)
        pthread_cond_wait(&b->idle, &b->mu);
    pthread_mutex_unlock(&b->mu);
    rc = b->st->drv->remove(b->st->state, b->name, err);
    if (rc == CAIRN_E_NOTFOUND)
        rc = CAIRN_OK; /* nothing was written */
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "abort backup '%s'", b->name);
        return rc;
    }
    b->ended = 1;
    cairn_log(CAIRN_LOG_INFO, "storage", "aborted backup '%s' in '%s'", b->name, b->st->url);
    return CAIRN_OK;
}

int cairn_backup_read_file(struct cairn_backup *b, const char *file, struct cairn_reader **r,
                           struct cairn_err *err)
{
    *r = NULL;
    if (!b->read_only)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "read_file cannot be called on read-write backup '%s' (open it "
                             "with cairn_storage_open_backup)",
                             b->name);
    if (!cairn_name_valid(file))
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': invalid file name '%s'", b->name,
                             file ? file : "");
    int rc = b->st->drv->read(b->st->state, b->name, file, r, err);
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "backup '%s' file '%s'", b->name, file);
    return rc;
}
