/* Backups and restores through a source driver (cairn/source.h): etcd://, redis://, exec:...
 * The engine owns the backup's life: it names and starts it, records the redacted source URL,
 * lets the driver stream the snapshot in, and ends it (MANIFEST last) only on success, else
 * aborts it, so nothing that failed looks complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/influx.h" /* struct cairn_influx_tls_opts, the engine's TLS options */
#include "cairn/log.h"
#include "cairn/source.h"
#include "common/util.h"
#include "internal.h"

const char *engine_source_plain(const char *source, char *buf, size_t cap)
{
    if (strncmp(source, "file://", 7) != 0 || strlen(source + 7) >= cap)
        return source;
    memcpy(buf, source + 7, strlen(source + 7) + 1);
    return buf;
}

/* HOST:PORT (a name, an IPv4 address or a bracketed IPv6 one, then 1-5 digits): an
 * InfluxDB address even when HOST is also a scheme ("redis:8088" is the host named redis). */
static int host_port_form(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || strstr(s, "://") != NULL)
        return 0;
    size_t digits = strspn(colon + 1, "0123456789");
    if (digits == 0 || digits > 5 || colon[1 + digits] != '\0')
        return 0;
    if (s[0] == '[')
        return colon[-1] == ']';
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") ==
           (size_t)(colon - s);
}

const char *engine_source_url(const char *source, char *buf, size_t cap)
{
    if (!host_port_form(source) &&
        (cairn_source_driver_for(source) != NULL || strstr(source, "://") != NULL ||
         strncmp(source, "exec:", 5) == 0))
        return source;
    int n = snprintf(buf, cap, "influxdb://%s", source);
    return n > 0 && (size_t)n < cap ? buf : source;
}

/* The driver reports a running total; the engine's progress wants deltas. Drivers that move
 * several items report each (item_progress), from several threads. */
struct src_progress {
    struct engine_progress *p;
    const char *item;
    uint64_t last;
    uint64_t applied; /* bytes of phase "apply" (atomic) */
};

static void src_progress(void *arg, uint64_t bytes)
{
    struct src_progress *sp = arg;
    if (bytes > sp->last) {
        engine_progress_report(sp->p, "source", sp->item, bytes - sp->last, 0);
        sp->last = bytes;
    }
}

static void src_item_progress(void *arg, const struct cairn_source_item *it)
{
    struct src_progress *sp = arg;
    if (it->total_add > 0) {
        pthread_mutex_lock(&sp->p->mu);
        sp->p->total += it->total_add;
        pthread_mutex_unlock(&sp->p->mu);
    }
    if (strcmp(it->phase, "apply") == 0)
        __atomic_fetch_add(&sp->applied, it->bytes, __ATOMIC_RELAXED);
    engine_progress_report(sp->p, it->phase, it->item, it->bytes, it->finished);
}

/* The source options both directions share: cancel, timeouts, TLS, password file, progress
 * and the counts the driver fills. */
static void source_opts_init(struct cairn_source_opts *so, const volatile int *cancel,
                             int connect_timeout_ms, int io_timeout_ms, int64_t timeout_ms,
                             const struct cairn_influx_tls_opts *tls, const char *password_file,
                             struct src_progress *sp, unsigned *databases, unsigned *items)
{
    memset(so, 0, sizeof(*so));
    so->cancel = cancel;
    so->connect_timeout_ms = connect_timeout_ms;
    so->io_timeout_ms = io_timeout_ms;
    so->timeout_ms = timeout_ms;
    if (tls != NULL) {
        so->tls = 1;
        so->ca_file = tls->ca_file;
        so->cert_file = tls->cert_file;
        so->key_file = tls->key_file;
        so->tls_server_name = tls->server_name;
    }
    so->password_file = password_file;
    so->progress = src_progress;
    so->item_progress = src_item_progress;
    so->progress_arg = sp;
    so->databases = databases;
    so->items = items;
}

/* Start b under o's name or a default one, choose the parent of an incremental backup, then
 * let the source fill it. */
static int fill_backup(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                       struct cairn_source *src, struct cairn_source_select *sel,
                       struct cairn_engine_backup_result *res, struct cairn_err *err)
{
    struct cairn_backup *b = NULL;
    int rc = o->name != NULL
                 ? cairn_storage_start(st, res->name, &b, err)
                 : cairn_storage_start_auto(st, NULL, res->name, sizeof(res->name), &b, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = cairn_backup_set_source(b, cairn_source_recorded(src), err);
    if (rc == CAIRN_OK && sel->has_since) {
        /* The parent is chosen under the shared lock the start took: a prune (exclusive)
         * cannot remove it between the choice and our MANIFEST naming it. */
        json_t *scope = cairn_source_scope(src);
        rc = engine_choose_parent(st, cairn_source_driver_of(src)->scheme,
                                  cairn_source_recorded(src), scope, o->full_if_no_parent, sel, res,
                                  err);
        json_decref(scope);
        if (rc == CAIRN_OK && res->parent[0] != '\0')
            rc = cairn_backup_set_parent(b, res->parent, err);
    }
    if (rc == CAIRN_OK)
        rc = cairn_source_backup(src, b, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_end(b, err);
    if (rc != CAIRN_OK) {
        struct cairn_err ae;
        if (cairn_backup_abort(b, &ae) != CAIRN_OK)
            cairn_warn(ENGINE_LOGC, "could not remove failed backup '%s': %s", res->name, ae.msg);
        cairn_backup_free(b);
        return cairn_err_wrap(err, rc, "backup '%s' of %s", res->name, cairn_source_url(src));
    }
    cairn_backup_free(b);
    return CAIRN_OK;
}

int engine_backup_source(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                         struct engine_progress *prog, struct cairn_engine_backup_result *res,
                         struct cairn_err *err)
{
    char buf[4200];
    const char *url = engine_source_url(o->source, buf, sizeof(buf));
    const struct cairn_source_driver *d = cairn_source_driver_for(url);
    if (d != NULL && !(d->flags & CAIRN_SOURCE_SELECT) &&
        (o->db != NULL || o->rp != NULL || o->has_since || o->has_start || o->has_end))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --rp, --since, --start and --end apply to InfluxDB, not to "
                             "this source");
    struct cairn_source_select sel = {
        .db = o->db,
        .rp = o->rp,
        .has_since = o->has_since,
        .since_sec = o->since_sec,
        .since_nsec = o->since_nsec,
        .has_start = o->has_start,
        .has_end = o->has_end,
        .start_sec = o->start_sec,
        .end_sec = o->end_sec,
        .start_nsec = o->start_nsec,
        .end_nsec = o->end_nsec,
    };
    struct src_progress sp = {prog, NULL, 0, 0};
    struct cairn_source_opts so;
    source_opts_init(&so, o->cancel, o->connect_timeout_ms, o->io_timeout_ms, o->source_timeout_ms,
                     o->tls, o->password_file, &sp, &res->databases, &res->shards);
    so.select = &sel;
    so.parallelism = o->parallelism;
    struct cairn_source *src = NULL;
    int rc = cairn_source_open(url, &so, &src, err);
    if (rc != CAIRN_OK)
        return rc;
    sp.item = cairn_source_url(src);
    rc = fill_backup(st, o, src, &sel, res, err);
    cairn_source_free(src);
    return rc == CAIRN_OK ? engine_backup_summary(st, res, err) : rc;
}

static void verify_cb(void *arg, const struct cairn_manifest_file *f, int rc,
                      const struct cairn_err *ferr)
{
    struct engine_progress *p = arg;
    if (rc != CAIRN_OK)
        cairn_error(ENGINE_LOGC, "verify %s: %s", f->name, ferr->msg);
    engine_progress_report(p, "verify", f->name, f->size, 1);
}

/* A chain's every file verified (size and SHA-256) before anything of it is applied. */
static int verify_chain(struct cairn_backup *const *chain, size_t n, struct engine_progress *prog,
                        struct cairn_err *err)
{
    int rc = CAIRN_OK;
    for (size_t k = 0; k < n && rc == CAIRN_OK; k++) {
        prog->total += (unsigned)cairn_backup_file_count(chain[k]);
        rc = cairn_backup_verify(chain[k], 4, verify_cb, prog, err);
        if (rc != CAIRN_OK)
            cairn_err_wrap(err, rc, "verification failed, nothing was restored");
    }
    prog->done = prog->total = 0;
    return rc;
}

/* The driver that restores chain: the target URL's (to a service), or the kind's opened with
 * the recorded source (into a directory), which must restore as the kind's driver does
 * (etcds:// backups are of kind etcd: the same restore). *url is what to open it with. */
static const struct cairn_source_driver *restore_driver(struct cairn_backup *b,
                                                        const struct cairn_engine_restore_opts *o,
                                                        char *buf, size_t cap, const char **url)
{
    const char *u = o->target != NULL ? o->target : cairn_backup_source(b);
    if (u == NULL)
        return NULL;
    *url = engine_source_url(u, buf, cap);
    const struct cairn_source_driver *d = cairn_source_driver_for(*url);
    const struct cairn_source_driver *kd = cairn_source_driver_find(cairn_backup_kind(b));
    if (d == NULL || (o->target == NULL && (kd == NULL || d->restore != kd->restore)))
        return NULL;
    return d;
}

int engine_restore_source(struct cairn_backup *const *chain, size_t n,
                          const struct cairn_engine_restore_opts *o, struct engine_progress *prog,
                          struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    struct cairn_backup *b = chain[n - 1];
    char buf[4200];
    const char *url = NULL;
    const struct cairn_source_driver *d = restore_driver(b, o, buf, sizeof(buf), &url);
    if (d == NULL || (n > 1 && d->restore_chain == NULL))
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "backup '%s' of kind '%s': no source driver restores it",
                             cairn_backup_name(b), cairn_backup_kind(b));
    if (!(d->flags & CAIRN_SOURCE_SELECT) &&
        (o->db != NULL || o->newdb != NULL || o->rp != NULL || o->newrp != NULL))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --newdb, --rp and --newrp apply to InfluxDB backups");
    if ((d->flags & CAIRN_SOURCE_SELECT) && o->force && o->into_dir != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--force applies to backups of a local path; an InfluxDB restore "
                             "--into never replaces files");
    /* Drivers that apply chains get them verified whole first; the others verify as they
     * stream. */
    int rc = d->restore_chain != NULL ? verify_chain(chain, n, prog, err) : CAIRN_OK;
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_source_select sel = {
        .db = o->db, .rp = o->rp, .newdb = o->newdb, .newrp = o->newrp};
    struct src_progress sp = {prog, NULL, 0, 0};
    struct cairn_source_opts so;
    source_opts_init(&so, o->cancel, o->connect_timeout_ms, o->io_timeout_ms, o->source_timeout_ms,
                     o->tls, o->password_file, &sp, &res->databases, &res->shards);
    so.select = &sel;
    struct cairn_source *src = NULL;
    rc = cairn_source_open(url, &so, &src, err);
    if (rc == CAIRN_OK)
        rc = cairn_source_restore_chain(src, chain, n, o->target != NULL ? NULL : o->into_dir, err);
    cairn_source_free(src);
    if (rc == CAIRN_OK) {
        res->backups = (unsigned)n;
        res->bytes = sp.applied;
        for (size_t i = 0; sp.applied == 0 && i < cairn_backup_file_count(b); i++)
            res->bytes += cairn_backup_file_at(b, i)->logical_size;
    }
    return rc;
}
