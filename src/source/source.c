/* The source driver registry and the source handle: open by URL scheme, redact credentials,
 * dispatch backup and restore to the driver. */
#include "cairn/source.h"

#include "cairn/io.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/util.h"
#include "source/internal.h"

#define MAX_DRIVERS 32

/* Built-ins first, in the order --help lists them. */
static const struct cairn_source_driver *const builtin[] = {
    &source_etcd_driver,   &source_etcds_driver,      &source_redis_driver,
    &source_rediss_driver, &source_postgresql_driver, &source_postgres_driver,
    &source_consul_driver, &source_consuls_driver,    &source_vault_driver,
    &source_vaults_driver, &source_exec_driver};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const struct cairn_source_driver *registered[MAX_DRIVERS];
static size_t nregistered;

struct cairn_source {
    const struct cairn_source_driver *drv;
    void *state;
    char *url; /* redacted */
    /* The whole-run timeout, for every driver: the driver watches `cancel`, which a watchdog
     * sets when the caller's flag (outer) is set or the deadline passes. */
    int64_t timeout_ms;
    const volatile int *outer;
    volatile int cancel;
};

struct watchdog {
    struct cairn_source *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, fired;
    uint64_t deadline_ns;
    pthread_t thread;
};

static void *watch(void *arg)
{
    struct watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        if (w->s->outer != NULL && __atomic_load_n(w->s->outer, __ATOMIC_RELAXED) != 0)
            __atomic_store_n(&w->s->cancel, 1, __ATOMIC_RELAXED);
        if (mono_ns() >= w->deadline_ns && !w->fired) {
            w->fired = 1;
            __atomic_store_n(&w->s->cancel, 1, __ATOMIC_RELAXED);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L; /* the caller's cancel is seen within 50 ms */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Run the driver's backup (into == NULL and restore == 0) or restore under the handle's
 * whole-run timeout. */
static int run_timed(struct cairn_source *s, int restore, struct cairn_backup *b, const char *into,
                     struct cairn_err *err)
{
    if (s->timeout_ms <= 0)
        return restore ? s->drv->restore(s->state, b, into, err) : s->drv->backup(s->state, b, err);
    struct watchdog w = {.s = s};
    w.deadline_ns = mono_ns() + (uint64_t)s->timeout_ms * 1000000u;
    pthread_mutex_init(&w.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);
    __atomic_store_n(&s->cancel, 0, __ATOMIC_RELAXED);
    int started = pthread_create(&w.thread, NULL, watch, &w) == 0;
    int rc = restore ? s->drv->restore(s->state, b, into, err) : s->drv->backup(s->state, b, err);
    pthread_mutex_lock(&w.mu);
    w.done = 1;
    pthread_cond_signal(&w.cv);
    pthread_mutex_unlock(&w.mu);
    if (started)
        pthread_join(w.thread, NULL);
    if (rc != CAIRN_OK && rc != CAIRN_E_TIMEOUT && w.fired) /* a driver's own says more */
        rc = cairn_err_set(err, CAIRN_E_TIMEOUT, "source '%s': the %s took longer than %lld ms",
                           s->url, restore ? "restore" : "snapshot", (long long)s->timeout_ms);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

const struct cairn_source_driver *cairn_source_driver_find(const char *scheme)
{
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        if (strcmp(builtin[i]->scheme, scheme) == 0)
            return builtin[i];
    const struct cairn_source_driver *d = NULL;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < nregistered && d == NULL; i++)
        if (strcmp(registered[i]->scheme, scheme) == 0)
            d = registered[i];
    pthread_mutex_unlock(&reg_mu);
    return d;
}

int cairn_source_register(const struct cairn_source_driver *drv, struct cairn_err *err)
{
    if (drv == NULL || drv->scheme == NULL || drv->open == NULL || drv->backup == NULL ||
        drv->free == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "source driver lacks a scheme or operation");
    if (cairn_source_driver_find(drv->scheme) != NULL)
        return cairn_err_set(err, CAIRN_E_EXISTS, "source driver '%s' is already registered",
                             drv->scheme);
    int rc = CAIRN_OK;
    pthread_mutex_lock(&reg_mu);
    if (nregistered == MAX_DRIVERS)
        rc = cairn_err_set(err, CAIRN_E_INVALID, "too many source drivers");
    else
        registered[nregistered++] = drv;
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

void cairn_source_drivers(void (*fn)(void *arg, const struct cairn_source_driver *d), void *arg)
{
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        fn(arg, builtin[i]);
    pthread_mutex_lock(&reg_mu);
    size_t n = nregistered;
    const struct cairn_source_driver *copy[MAX_DRIVERS];
    memcpy(copy, registered, n * sizeof(copy[0]));
    pthread_mutex_unlock(&reg_mu);
    for (size_t i = 0; i < n; i++)
        fn(arg, copy[i]);
}

/* The scheme of url ("etcd" of "etcd://h:2379", "exec" of "exec:cmd"), or 0 when url has
 * none: letters, digits, '+', '-', '.' before a ':' (RFC 3986), starting with a letter. */
/* Replace the value of every "KEY=" in the query (after '?') whose key names a secret. */
static void redact_query(struct buf *b, const char *q)
{
    static const char *const secret[] = {"password=", "token=", "secret=", "key="};
    while (*q != '\0') {
        size_t seg = strcspn(q, "&");
        size_t k = 0;
        for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]) && k == 0; i++)
            if (strncmp(q, secret[i], strlen(secret[i])) == 0)
                k = strlen(secret[i]);
        if (k > 0) {
            buf_add(b, q, k);
            buf_adds(b, "***");
        } else {
            buf_add(b, q, seg);
        }
        q += seg;
        if (*q == '&')
            buf_addc(b, *q++);
    }
}

/* The scheme of url copied into out (cap bytes); 0 when url has none or it does not fit. */
static size_t scheme_of(const char *url, char *out, size_t cap)
{
    size_t sl = url != NULL ? source_scheme_len(url) : 0;
    if (sl == 0 || sl >= cap)
        return 0;
    memcpy(out, url, sl);
    out[sl] = '\0';
    return sl;
}

const struct cairn_source_driver *cairn_source_driver_for(const char *url)
{
    char scheme[32];
    return scheme_of(url, scheme, sizeof(scheme)) ? cairn_source_driver_find(scheme) : NULL;
}

int cairn_source_redact(const char *url, char *out, size_t cap)
{
    struct buf b = {0};
    const char *p = url;
    struct source_url_span sp;
    if (source_url_split(url, &sp)) {
        buf_add(&b, url, (size_t)(sp.auth - url));
        p = sp.auth;
        if (sp.at != NULL) {
            const char *colon = memchr(sp.auth, ':', (size_t)(sp.at - sp.auth));
            buf_add(&b, sp.auth, (size_t)((colon != NULL ? colon + 1 : sp.at) - sp.auth));
            if (colon != NULL)
                buf_adds(&b, "***");
            p = sp.at; /* the '@' and what follows */
        }
    }
    const char *q = strchr(p, '?');
    if (q == NULL) {
        buf_adds(&b, p);
    } else {
        buf_add(&b, p, (size_t)(q - p) + 1);
        redact_query(&b, q + 1);
    }
    int rc = CAIRN_OK;
    if (b.len + 1 > cap)
        rc = CAIRN_E_INVALID;
    else
        memcpy(out, b.p ? (char *)b.p : "", b.len + 1);
    buf_free(&b);
    return rc;
}

int cairn_source_open(const char *url, const struct cairn_source_opts *o, struct cairn_source **out,
                      struct cairn_err *err)
{
    static const struct cairn_source_opts defaults;
    *out = NULL;
    char scheme[32];
    if (scheme_of(url, scheme, sizeof(scheme)) == 0)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "source '%s' has no scheme (for example etcd://host:2379)",
                             url != NULL ? url : "");
    const struct cairn_source_driver *d = cairn_source_driver_find(scheme);
    size_t cap = strlen(url) + 64;
    char *shown = xmalloc(cap);
    if (cairn_source_redact(url, shown, cap) != CAIRN_OK)
        snprintf(shown, cap, "%s:(redacted)", scheme);
    if (d == NULL) {
        int rc = cairn_err_set(err, CAIRN_E_UNSUPPORTED, "source '%s': no driver for '%s:'", shown,
                               scheme);
        free(shown);
        return rc;
    }
    struct cairn_source *s = xcalloc(1, sizeof(*s));
    struct cairn_source_opts oo = o != NULL ? *o : defaults;
    if (oo.timeout_ms > 0) { /* the driver watches our flag; run_timed mirrors the caller's */
        s->timeout_ms = oo.timeout_ms;
        s->outer = oo.cancel;
        oo.cancel = &s->cancel;
    }
    int rc = d->open(url, &oo, &s->state, err);
    if (rc != CAIRN_OK) {
        free(shown);
        free(s);
        return rc;
    }
    s->drv = d;
    s->url = shown;
    *out = s;
    return CAIRN_OK;
}

const char *cairn_source_url(const struct cairn_source *s)
{
    return s->url;
}

const char *cairn_source_scheme(const struct cairn_source *s)
{
    return s->drv->scheme;
}

int cairn_source_backup(struct cairn_source *s, struct cairn_backup *b, struct cairn_err *err)
{
    return run_timed(s, 0, b, NULL, err);
}

int cairn_source_restore(struct cairn_source *s, struct cairn_backup *b, const char *into,
                         struct cairn_err *err)
{
    if (s->drv->restore == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED, "source '%s' cannot restore", s->url);
    return run_timed(s, 1, b, into, err);
}

const struct cairn_source_driver *cairn_source_driver_of(const struct cairn_source *s)
{
    return s->drv;
}

const char *cairn_source_recorded(const struct cairn_source *s)
{
    const char *r = s->drv->recorded != NULL ? s->drv->recorded(s->state) : NULL;
    return r != NULL ? r : s->url;
}

struct json_t *cairn_source_scope(struct cairn_source *s)
{
    return s->drv->scope != NULL ? s->drv->scope(s->state) : NULL;
}

int cairn_source_restore_chain(struct cairn_source *s, struct cairn_backup *const *chain, size_t n,
                               const char *into, struct cairn_err *err)
{
    if (s->drv->restore_chain != NULL)
        return s->drv->restore_chain(s->state, chain, n, into, err);
    if (n != 1)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "source '%s' restores single backups, not a chain of %zu", s->url, n);
    return cairn_source_restore(s, chain[0], into, err);
}

void cairn_source_free(struct cairn_source *s)
{
    if (s == NULL)
        return;
    s->drv->free(s->state);
    free(s->url);
    free(s);
}

static int put_one(struct cairn_backup *b, const char *kind, const char *file, int share,
                   int (*fill)(void *arg, struct cairn_writer *w, struct cairn_err *err), void *arg,
                   struct cairn_err *err)
{
    struct cairn_writer *w = NULL;
    /* Snapshots compress unevenly (bbolt pages well, RDBs partly): AUTO lets zstd decide.
     * Pipelined: zstd, the stored bytes' hash and the writes run on a helper thread while
     * this one reads the service and checks its checksum, so the service is not kept
     * waiting while a block compresses (a snapshot is one large stream, as a large file).
     * zstd -1, as for files and PostgreSQL's tars: the default -3 is the helper thread's
     * limit, half -1's speed for 3 % less output on an etcd database (docs/PERFORMANCE.md). */
    struct cairn_file_opts fo = {
        .compression = CAIRN_COMPRESS_AUTO, .level = 1, .pipeline = 1, .share_sha256 = share};
    int rc = cairn_backup_set_kind(b, kind, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_add_file_opts(b, file, -1, &fo, &w, err);
    if (rc == CAIRN_OK)
        rc = fill(arg, w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w); /* unclosed after a failure: discarded, the backup cannot end */
    return rc;
}

int source_put_one(struct cairn_backup *b, const char *kind, const char *file,
                   int (*fill)(void *arg, struct cairn_writer *w, struct cairn_err *err), void *arg,
                   struct cairn_err *err)
{
    return put_one(b, kind, file, 0, fill, arg, err);
}

int source_put_one_hashed(struct cairn_backup *b, const char *kind, const char *file,
                          int (*fill)(void *arg, struct cairn_writer *w, struct cairn_err *err),
                          void *arg, struct cairn_err *err)
{
    return put_one(b, kind, file, 1, fill, arg, err);
}

int source_restore_into(struct cairn_backup *b, const char *file, const char *into,
                        struct cairn_err *err)
{
    char *path = path_join(into, file);
    struct cairn_writer *w = NULL;
    int rc = mkdir_p(into, 0700, err);
    if (rc == CAIRN_OK)
        rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_get_stream(b, file, w, NULL, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w); /* a stream that failed its checks leaves no file behind */
    free(path);
    return rc;
}
