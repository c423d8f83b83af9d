/* Backups and restores through a source driver (cairn/source.h): etcd://, redis://, exec:...
 * The engine owns the backup's life: it names and starts it, records the redacted source URL,
 * lets the driver stream the snapshot in, and ends it (MANIFEST last) only on success, else
 * aborts it, so nothing that failed looks complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/influx.h"
#include "cairn/source.h"
#include "common/util.h"
#include "internal.h"

const char *engine_source_plain(const char *source, char *buf, size_t cap)
{
    const char *rest = NULL;
    if (strncmp(source, "influxdb://", 11) == 0)
        rest = source + 11;
    else if (strncmp(source, "file://", 7) == 0)
        rest = source + 7;
    if (rest == NULL)
        return source;
    size_t n = strlen(rest);
    if (n > 1 && rest[n - 1] == '/' && source[0] == 'i')
        n--; /* influxdb://h:8088/ */
    if (n >= cap)
        return source;
    memcpy(buf, rest, n);
    buf[n] = '\0';
    return buf;
}

/* The driver reports a running total; the engine's progress wants deltas. */
struct src_progress {
    struct engine_progress *p;
    const char *item;
    uint64_t last;
};

static void src_progress(void *arg, uint64_t bytes)
{
    struct src_progress *sp = arg;
    if (bytes > sp->last) {
        engine_progress_report(sp->p, "source", sp->item, bytes - sp->last, 0);
        sp->last = bytes;
    }
}

/* The source options both directions share: cancel, idle timeout, TLS files, password file. */
static void source_opts_init(struct cairn_source_opts *so, const volatile int *cancel,
                             int timeout_ms, const struct cairn_influx_tls_opts *tls,
                             const char *password_file)
{
    memset(so, 0, sizeof(*so));
    so->cancel = cancel;
    so->timeout_ms = timeout_ms;
    if (tls != NULL) {
        so->ca_file = tls->ca_file;
        so->cert_file = tls->cert_file;
        so->key_file = tls->key_file;
    }
    so->password_file = password_file;
}

/* Start b under o's name or a default one, then let the source fill it. */
static int fill_backup(struct cairn_storage *st, const struct cairn_engine_backup_opts *o,
                       struct cairn_source *src, struct cairn_engine_backup_result *res,
                       struct cairn_err *err)
{
    struct cairn_backup *b = NULL;
    int rc = o->name != NULL
                 ? cairn_storage_start(st, res->name, &b, err)
                 : cairn_storage_start_auto(st, NULL, res->name, sizeof(res->name), &b, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = cairn_backup_set_source(b, cairn_source_url(src), err);
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
    if (o->db != NULL || o->rp != NULL || o->has_since || o->has_start || o->has_end)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --rp, --since, --start and --end apply to InfluxDB, not to "
                             "this source");
    struct src_progress sp = {prog, NULL, 0};
    struct cairn_source_opts so;
    source_opts_init(&so, o->cancel, o->io_timeout_ms, o->tls, o->password_file);
    so.progress = src_progress;
    so.progress_arg = &sp;
    struct cairn_source *src = NULL;
    int rc = cairn_source_open(o->source, &so, &src, err);
    if (rc != CAIRN_OK)
        return rc;
    sp.item = cairn_source_url(src);
    rc = fill_backup(st, o, src, res, err);
    cairn_source_free(src);
    return rc == CAIRN_OK ? engine_backup_summary(st, res, err) : rc;
}

/* Restore b through the driver its kind names (into a directory), or the driver of the
 * target URL (to a service). */
int engine_restore_source(struct cairn_backup *b, const struct cairn_engine_restore_opts *o,
                          struct cairn_engine_restore_result *res, struct cairn_err *err)
{
    const char *url = o->target != NULL ? o->target : cairn_backup_source(b);
    const struct cairn_source_driver *d = url ? cairn_source_driver_for(url) : NULL;
    /* Into a directory, the recorded source's driver must restore as the kind's driver does
     * (etcds:// backups are of kind etcd: the same restore). */
    const struct cairn_source_driver *kd = cairn_source_driver_find(cairn_backup_kind(b));
    if (d == NULL || (o->target == NULL && (kd == NULL || d->restore != kd->restore)))
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "backup '%s' of kind '%s': no source driver restores it",
                             cairn_backup_name(b), cairn_backup_kind(b));
    if (o->db != NULL || o->newdb != NULL || o->rp != NULL || o->newrp != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "--db, --newdb, --rp and --newrp apply to InfluxDB backups");
    struct cairn_source_opts so;
    source_opts_init(&so, o->cancel, o->io_timeout_ms, o->tls, o->password_file);
    struct cairn_source *src = NULL;
    int rc = cairn_source_open(url, &so, &src, err);
    if (rc == CAIRN_OK)
        rc = cairn_source_restore(src, b, o->target != NULL ? NULL : o->into_dir, err);
    cairn_source_free(src);
    if (rc == CAIRN_OK) {
        res->backups = 1;
        for (size_t i = 0; i < cairn_backup_file_count(b); i++)
            res->bytes += cairn_backup_file_at(b, i)->logical_size;
    }
    return rc;
}
