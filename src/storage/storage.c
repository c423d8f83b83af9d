/* Storage front end: the driver registry, the storage handle (open by URL, settings), and
 * what a storage does with whole backups: start one, open one, remove one. Listing is in
 * list.c, the backup handle in backup.c, its per-file writers in record.c, names in name.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "cairn/log.h"
#include "cairn/repo.h"
#include "chunkstore.h"
#include "common/util.h"
#include "internal.h"
#include "io/aead.h"

/* ---- registry ---- */

#define MAX_DRIVERS 16

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const struct cairn_storage_driver *drivers[MAX_DRIVERS] = {
    &storage_file_driver,
    &storage_s3_driver,
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
    if (rc == CAIRN_OK && drv->remove_file == NULL)
        cairn_log(CAIRN_LOG_WARN, "storage",
                  "storage driver '%s' has no remove_file: a backup's MANIFEST cannot be removed "
                  "first, so an interrupted remove may leave it listed as complete with files "
                  "missing",
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
    struct cairn_storage *st = xcalloc(1, sizeof(*st));
    pthread_mutex_init(&st->repo_mu, NULL);
    pthread_mutex_init(&st->cs_mu, NULL);
    st->drv = drv;
    st->state = state;
    st->url = xstrdup(url);
    *out = st;
    return CAIRN_OK;
}

void cairn_storage_disconnect(struct cairn_storage *st)
{
    if (st != NULL && st->drv->disconnect != NULL)
        st->drv->disconnect(st->state);
}

static void clear_secret(struct cairn_storage *st)
{
    if (st->sec_key != NULL)
        wipe(st->sec_key, CAIRN_REPO_KEY_LEN);
    free(st->sec_key);
    wipe_free(st->sec_password);
    st->sec_key = NULL;
    st->sec_password = NULL;
}

void cairn_storage_free(struct cairn_storage *st)
{
    if (st == NULL)
        return;
    cs_free(st->cs);
    st->drv->free(st->state);
    cairn_repo_free(st->repo);
    if (st->keys_own != NULL)
        wipe(st->keys_own, sizeof(*st->keys_own));
    free(st->keys_own);
    clear_secret(st);
    if (st->rate != NULL)
        tbucket_destroy(st->rate);
    free(st->rate);
    pthread_mutex_destroy(&st->repo_mu);
    pthread_mutex_destroy(&st->cs_mu);
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

void cairn_storage_set_rate_limit(struct cairn_storage *st, uint64_t bytes_per_sec)
{
    if (st->rate != NULL)
        tbucket_destroy(st->rate);
    free(st->rate);
    st->rate = NULL;
    if (bytes_per_sec == 0)
        return;
    st->rate = xmalloc(sizeof(*st->rate));
    tbucket_init(st->rate, bytes_per_sec, bytes_per_sec / 10 > 16384 ? bytes_per_sec / 10 : 16384);
}

void cairn_storage_set_commit_check(struct cairn_storage *st, cairn_storage_commit_check_fn fn,
                                    void *ctx)
{
    st->commit_check = fn;
    st->commit_ctx = ctx;
}

/* ---- encryption ---- */

int cairn_storage_set_secret(struct cairn_storage *st, const struct cairn_repo_secret *sec,
                             struct cairn_err *err)
{
    if (sec != NULL && (sec->key == NULL) == (sec->password == NULL))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "a repository key is either a key file or a password");
    pthread_mutex_lock(&st->repo_mu);
    clear_secret(st);
    if (sec != NULL && sec->key != NULL) {
        st->sec_key = xmalloc(CAIRN_REPO_KEY_LEN);
        memcpy(st->sec_key, sec->key, CAIRN_REPO_KEY_LEN);
    } else if (sec != NULL) {
        st->sec_password = xstrdup(sec->password);
    }
    cairn_repo_free(st->repo);
    cs_free(st->cs);
    st->cs = NULL;
    st->repo = NULL;
    st->keys = NULL;
    st->repo_ready = 0;
    pthread_mutex_unlock(&st->repo_mu);
    return CAIRN_OK;
}

int storage_ready(struct cairn_storage *st, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    pthread_mutex_lock(&st->repo_mu);
    if (!st->repo_ready) {
        struct cairn_repo_secret sec = {st->sec_key, st->sec_password};
        int has = st->sec_key != NULL || st->sec_password != NULL;
        rc = cairn_repo_open(st, has ? &sec : NULL, &st->repo, err);
        if (rc == CAIRN_E_NOTFOUND && !has) { /* a plain location, as before repositories */
            cairn_err_clear(err);
            rc = CAIRN_OK;
        }
        if (rc == CAIRN_OK) {
            st->keys = st->repo != NULL ? repo_keys(st->repo) : NULL;
            st->repo_ready = 1;
        }
    }
    pthread_mutex_unlock(&st->repo_mu);
    return rc;
}

void storage_share_repo(struct cairn_storage *own, const struct cairn_storage *st)
{
    pthread_mutex_lock(&own->repo_mu);
    if (st->keys != NULL) {
        own->keys_own = xmalloc(sizeof(*own->keys_own));
        *own->keys_own = *st->keys;
        own->keys = own->keys_own;
    }
    own->repo_ready = 1;
    pthread_mutex_unlock(&own->repo_mu);
}

int cairn_storage_repo(struct cairn_storage *st, struct cairn_repo **repo, struct cairn_err *err)
{
    *repo = NULL;
    int rc = storage_ready(st, err);
    if (rc == CAIRN_OK)
        *repo = st->repo;
    return rc;
}

/* The additional data of an object: docs/FORMAT.md "Encrypted objects". */
static uint8_t *object_ad(const struct repo_keys *k, const char *backup, const char *file,
                          const uint8_t *bid, size_t *len)
{
    static const char label[] = "cairn object v1";
    size_t bl = strlen(backup), fl = strlen(file);
    *len = sizeof(label) + 32 + bl + 1 + fl + 1 + 16;
    uint8_t *ad = xcalloc(1, *len), *p = ad;
    memcpy(p, label, sizeof(label)); /* with its NUL */
    p += sizeof(label);
    memcpy(p, k->repo_id, 32);
    p += 32;
    memcpy(p, backup, bl + 1);
    p += bl + 1;
    memcpy(p, file, fl + 1);
    p += fl + 1;
    if (bid != NULL)
        memcpy(p, bid, 16);
    return ad;
}

static struct aead_stream_opts *object_opts(const struct repo_keys *k, const char *backup,
                                            const char *file, const uint8_t *bid,
                                            struct aead_stream_opts *o, char *label, size_t cap)
{
    snprintf(label, cap, "stored object '%s/%s'", backup, file);
    memset(o, 0, sizeof(*o));
    o->ad = object_ad(k, backup, file, bid, &o->ad_len);
    o->chunk = k->chunk_size;
    o->bad_code = CAIRN_E_CORRUPT;
    o->label = label;
    return o;
}

int storage_create_raw(struct cairn_storage *st, const char *backup, const char *file,
                       int64_t size_hint, const struct cairn_storage_write_opts *wo,
                       struct cairn_writer **w, struct cairn_err *err)
{
    int rc = st->drv->create(st->state, backup, file, size_hint, wo, w, err);
    if (rc == CAIRN_OK && st->rate != NULL && strcmp(backup, CAIRN_LOCK_DIR) != 0)
        *w = ratelimit_writer_new(*w, st->rate, st->cancel); /* the bytes as stored */
    return rc;
}

int storage_create(struct cairn_storage *st, const char *backup, const char *file,
                   const uint8_t *bid, int64_t size_hint, const struct cairn_storage_write_opts *wo,
                   struct cairn_writer **w, struct cairn_err *err)
{
    *w = NULL;
    int rc = storage_ready(st, err);
    if (rc != CAIRN_OK)
        return rc;
    const struct repo_keys *k = st->keys;
    if (k != NULL && size_hint >= 0) /* header, and a tag per chunk */
        size_hint += 32 + 16 * (size_hint / k->chunk_size + 1);
    rc = storage_create_raw(st, backup, file, size_hint, wo, w, err);
    if (rc != CAIRN_OK || k == NULL)
        return rc;
    struct aead_stream_opts o;
    char label[2 * CAIRN_NAME_MAX + 32];
    object_opts(k, backup, file, bid, &o, label, sizeof(label));
    *w = aead_stream_writer_new(*w, k->data, &o);
    free((void *)o.ad);
    return CAIRN_OK;
}

struct cairn_reader *storage_open_stored(const struct cairn_storage *st, const char *backup,
                                         const char *file, const uint8_t *bid,
                                         struct cairn_reader *raw)
{
    const struct repo_keys *k = st->keys;
    if (k == NULL)
        return raw;
    struct aead_stream_opts o;
    char label[2 * CAIRN_NAME_MAX + 32];
    object_opts(k, backup, file, bid, &o, label, sizeof(label));
    struct cairn_reader *r = aead_stream_reader_new(raw, k->data, &o);
    free((void *)o.ad);
    return r;
}

int storage_read(struct cairn_storage *st, const char *backup, const char *file, const uint8_t *bid,
                 struct cairn_reader **r, struct cairn_err *err)
{
    *r = NULL;
    int rc = storage_ready(st, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = st->drv->read(st->state, backup, file, r, err);
    if (rc == CAIRN_OK)
        *r = storage_open_stored(st, backup, file, bid, *r);
    return rc;
}

void storage_hash_init(const struct cairn_storage *st, struct cairn_sha256 *h)
{
    if (st->keys != NULL)
        cairn_sha256_init_keyed(h, st->keys->hash);
    else
        cairn_sha256_init(h);
}

struct cairn_writer *storage_hash_writer_new(const struct cairn_storage *st,
                                             struct cairn_writer *next)
{
    return st->keys != NULL ? cairn_hash_writer_new_keyed(next, st->keys->hash)
                            : cairn_hash_writer_new(next);
}

/* ---- whole backups ---- */

/* Start under the shared lock *lock (taken over by the handle on success). */
static int start_locked(struct cairn_storage *st, const char *name, struct cairn_lock **lock,
                        struct cairn_backup **out, struct cairn_err *err)
{
    int rc = storage_check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = st->drv->start(st->state, name, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = backup_new_handle(st, name, 0);
    if (st->keys != NULL) {
        if (RAND_bytes(b->bid, sizeof(b->bid)) != 1)
            abort();
        b->has_bid = 1;
    }
    b->kind = xstrdup("files");
    b->source = xstrdup("");
    b->lock = *lock;
    *lock = NULL;
    *out = b;
    return CAIRN_OK;
}

int cairn_storage_start(struct cairn_storage *st, const char *name, struct cairn_backup **out,
                        struct cairn_err *err)
{
    *out = NULL;
    int rc = storage_check_backup_name(name, err);
    if (rc == CAIRN_OK)
        rc = storage_ready(st, err);
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
    int64_t ms = (int64_t)now_ms();
    struct cairn_lock *lock = NULL;
    struct cairn_lock_opts lo = {.command = "backup", .wait_ms = st->lock_wait_ms};
    int rc = storage_ready(st, err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_lock(st, CAIRN_LOCK_SHARED, &lo, &lock, err);
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
    int rc = storage_check_backup_name(name, err);
    if (rc == CAIRN_OK)
        rc = storage_ready(st, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = backup_new_handle(st, name, 1);
    rc = manifest_load(b, 0, err);
    if (rc == CAIRN_E_NOTFOUND) {
        /* No MANIFEST: incomplete if anything of the backup exists, else not found. */
        struct cairn_err le;
        int found = 0;
        rc = storage_backup_exists(st, name, &found, &le);
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
    int rc = storage_check_backup_name(name, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = storage_remove_backup(st, name, err);
    if (rc == CAIRN_OK)
        cairn_log(CAIRN_LOG_INFO, "storage", "removed backup '%s' from '%s'", name, st->url);
    return rc;
}

int storage_remove_backup(struct cairn_storage *st, const char *name, struct cairn_err *err)
{
    int had_manifest = 0;
    if (st->drv->remove_file != NULL) {
        int rc = st->drv->remove_file(st->state, name, CAIRN_MANIFEST_NAME, err);
        if (rc != CAIRN_OK && rc != CAIRN_E_NOTFOUND)
            return rc; /* the MANIFEST is still there, and so is every file it names */
        had_manifest = rc == CAIRN_OK;
        cairn_err_clear(err);
    }
    int rc = st->drv->remove(st->state, name, err);
    /* A deduplicating repository's backup may be its MANIFEST alone (S3 then finds nothing
     * more to delete; the file driver's directory is left empty). */
    struct cairn_err le;
    if (rc == CAIRN_E_NOTFOUND && had_manifest && storage_ready(st, &le) == CAIRN_OK &&
        repo_chunking(st->repo) != NULL) {
        cairn_err_clear(err);
        rc = CAIRN_OK;
    }
    return rc;
}
