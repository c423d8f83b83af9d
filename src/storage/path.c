/* Local-path backups: the job error list both sides share, and the one-call helpers that
 * start, fill and end a backup of a path, or open a backup and restore it. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"
#include "path.h"

/* ---- job errors ---- */

void path_job_error(struct job_errors *je, const struct cairn_err *e)
{
    pthread_mutex_lock(&je->mu);
    if (je->rc == CAIRN_OK)
        je->rc = e->code ? e->code : CAIRN_E_IO;
    je->n++;
    str_join(je->msg, sizeof(je->msg), &je->off, "; ", e->msg);
    pthread_mutex_unlock(&je->mu);
}

int path_cancelled(const struct cairn_path_opts *o)
{
    return cancel_requested(o->cancel);
}

int path_job_failed(struct job_errors *je)
{
    pthread_mutex_lock(&je->mu);
    int failed = je->rc != CAIRN_OK;
    pthread_mutex_unlock(&je->mu);
    return failed;
}

/* ---- one-call helpers ---- */

/* name: the backup's name, or NULL for a default one (tag, written to out). */
static int backup_path(struct cairn_storage *st, const char *name, const char *tag, char *out,
                       size_t cap, const char *path, const struct cairn_path_opts *opts,
                       struct cairn_err *err)
{
    char *abs = realpath(path, NULL);
    if (abs == NULL)
        return cairn_err_sys(err, 0, errno, "backup source '%s'", path);
    struct cairn_backup *b = NULL;
    int rc = name != NULL ? cairn_storage_start(st, name, &b, err)
                          : cairn_storage_start_auto(st, tag, out, cap, &b, err);
    if (name == NULL)
        name = out;
    if (rc != CAIRN_OK) {
        free(abs);
        return rc;
    }
    char host[256];
    host_name(host, sizeof(host), 0);
    char *source = xasprintf("%s:%s", host, abs);
    rc = cairn_backup_set_source(b, source, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_kind(b, "files", err);
    if (rc == CAIRN_OK) { /* the whole tree at abs */
        json_t *scope = json_pack("{s:s}", "path", abs);
        rc = cairn_backup_set_scope(b, scope, err);
        json_decref(scope);
    }
    if (rc == CAIRN_OK)
        rc = cairn_backup_put_path(b, abs, opts, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_end(b, err);
    if (rc != CAIRN_OK) {
        struct cairn_err ae;
        if (cairn_backup_abort(b, &ae) != CAIRN_OK)
            cairn_log(CAIRN_LOG_ERROR, "storage", "could not remove failed backup '%s': %s", name,
                      ae.msg);
    }
    cairn_backup_free(b);
    free(source);
    free(abs);
    return rc;
}

int cairn_storage_backup_path(struct cairn_storage *st, const char *name, const char *path,
                              const struct cairn_path_opts *opts, struct cairn_err *err)
{
    if (name == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup needs a name");
    return backup_path(st, name, NULL, NULL, 0, path, opts, err);
}

int cairn_storage_backup_path_auto(struct cairn_storage *st, const char *tag, char *name,
                                   size_t cap, const char *path, const struct cairn_path_opts *opts,
                                   struct cairn_err *err)
{
    return backup_path(st, NULL, tag, name, cap, path, opts, err);
}

int cairn_storage_restore_path(struct cairn_storage *st, const char *name, const char *target,
                               const struct cairn_path_opts *opts, struct cairn_err *err)
{
    struct cairn_backup *b = NULL;
    int rc = cairn_storage_open_backup(st, name, &b, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_restore_path(b, target, opts, err);
    cairn_backup_free(b);
    return rc;
}
