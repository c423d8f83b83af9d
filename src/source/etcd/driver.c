/* The etcd:// and etcds:// source driver: etcd://[user:password@]host[:2379] over gRPC, the
 * v3 gateway as fallback (etcds: TLS, with the CA and client certificate of the options). A backup
 * is one file, snapshot.db, exactly as `etcdctl snapshot save` writes it, its trailing SHA-256
 * checked before the backup can end. A restore builds a new member's data directory with
 * `etcdctl snapshot restore` (--into DIR); etcd has no API that restores a running cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/io.h"
#include "cairn/source.h"
#include "common/util.h"
#include "source/etcd/etcd.h"
#include "source/internal.h"

#define SNAP_FILE "snapshot.db"

struct etcd_src {
    struct source_url u;
    char *endpoint; /* http(s)://host:port */
    struct cairn_source_opts o;
};

static int ed_open(const char *url, const struct cairn_source_opts *o, void **state,
                   struct cairn_err *err)
{
    struct etcd_src *e = xcalloc(1, sizeof(*e));
    int rc = source_url_parse(url, 2379, &e->u, err);
    if (rc == CAIRN_OK && e->u.user != NULL && e->u.password == NULL && o->password_file)
        rc = source_read_secret(o->password_file, &e->u.password, err);
    if (rc != CAIRN_OK) {
        source_url_free(&e->u);
        free(e);
        return rc;
    }
    int tls = strcmp(e->u.scheme, "etcds") == 0;
    int v6 = strchr(e->u.host, ':') != NULL;
    e->endpoint = xasprintf("%s://%s%s%s:%u", tls ? "https" : "http", v6 ? "[" : "", e->u.host,
                            v6 ? "]" : "", e->u.port);
    e->o = *o;
    *state = e;
    return CAIRN_OK;
}

static void ed_free(void *state)
{
    struct etcd_src *e = state;
    source_url_free(&e->u);
    free(e->endpoint);
    free(e);
}

static void ed_progress(void *arg, uint64_t bytes, uint64_t total)
{
    (void)total;
    const struct cairn_source_opts *o = arg;
    o->progress(o->progress_arg, bytes);
}

static int ed_fill(void *arg, struct cairn_writer *w, struct cairn_err *err)
{
    return etcd_snapshot(arg, w, NULL, err);
}

static int ed_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    struct etcd_src *e = state;
    struct etcd_conn_opts co = {
        .url = e->endpoint,
        .ca_file = e->o.ca_file,
        .cert_file = e->o.cert_file,
        .key_file = e->o.key_file,
        .user = e->u.user,
        .password = e->u.password,
        .stall_timeout_s = e->o.io_timeout_ms > 0 ? (long)((e->o.io_timeout_ms + 999) / 1000) : 0,
        .cancel = e->o.cancel,
        .progress = e->o.progress ? ed_progress : NULL,
        .progress_arg = &e->o,
    };
    return source_put_one_hashed(b, "etcd", SNAP_FILE, ed_fill, &co, err);
}

static int ed_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err)
{
    (void)state;
    if (into == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "etcd restores into a new member's data directory: use --into DIR "
                             "(etcdctl snapshot restore), then start etcd with --data-dir DIR");
    /* The snapshot file goes next to the data directory, never inside it: etcdctl wants DIR
     * absent. It is removed whatever etcdctl does. */
    char *file = xasprintf("%s.%s", into, SNAP_FILE);
    struct cairn_reader *r = NULL;
    int rc = cairn_backup_get_file(b, SNAP_FILE, &r, err);
    if (rc == CAIRN_OK)
        rc = etcd_restore_file(r, file, NULL, err);
    cairn_reader_free(r);
    if (rc == CAIRN_OK) {
        rc = etcd_restore_into(file, into, NULL, err);
        unlink(file);
    }
    free(file);
    return rc;
}

const struct cairn_source_driver source_etcd_driver = {
    .scheme = "etcd",
    .description =
        "etcd://[USER:PASSWORD@]HOST[:2379] snapshots over gRPC (the v3 gateway as fallback)",
    .open = ed_open,
    .backup = ed_backup,
    .restore = ed_restore,
    .free = ed_free,
};

/* etcds:// is the same driver over TLS (the scheme picks https in ed_open). */
const struct cairn_source_driver source_etcds_driver = {
    .scheme = "etcds",
    .description = "etcds://HOST[:2379] the same over TLS (--tls-ca, --tls-cert, --tls-key)",
    .open = ed_open,
    .backup = ed_backup,
    .restore = ed_restore,
    .free = ed_free,
};
