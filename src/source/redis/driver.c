/* The redis:// source driver: redis://[user[:password]@]host[:port] (the database number in a
 * path is ignored: an RDB holds every database), and rediss:// over TLS (the server's
 * certificate verified against --tls-ca or the system's CAs; --tls-cert/--tls-key when the
 * server asks for a client certificate, tls-auth-clients). The password comes from the URL, the
 * password file of the options, or REDISCLI_AUTH as redis-cli reads it. A backup is one file,
 * dump.rdb, verified (CRC-64) while it streams; a restore writes DIR/dump.rdb for a server to
 * load at start (Redis has no command that loads an RDB into a running server). */
#include <stdlib.h>
#include <string.h>

#include "cairn/io.h"
#include "cairn/source.h"
#include "common/util.h"
#include "source/internal.h"
#include "source/redis/redis.h"

#define RDB_FILE "dump.rdb"

struct redis_src {
    struct source_url u;
    struct cairn_source_opts o;
    int tls; /* rediss:// */
};

static int rd_open(const char *url, const struct cairn_source_opts *o, void **state,
                   struct cairn_err *err)
{
    struct redis_src *r = xcalloc(1, sizeof(*r));
    int rc = source_url_parse(url, 6379, &r->u, err);
    if (rc == CAIRN_OK && r->u.password == NULL && o->password_file != NULL)
        rc = source_read_secret(o->password_file, &r->u.password, err);
    if (rc == CAIRN_OK && r->u.password == NULL && getenv("REDISCLI_AUTH") != NULL)
        r->u.password = xstrdup(getenv("REDISCLI_AUTH"));
    if (rc != CAIRN_OK) {
        source_url_free(&r->u);
        free(r);
        return rc;
    }
    r->o = *o;
    r->tls = strcmp(r->u.scheme, "rediss") == 0;
    *state = r;
    return CAIRN_OK;
}

static void rd_free(void *state)
{
    struct redis_src *r = state;
    source_url_free(&r->u);
    free(r);
}

static void rd_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    const struct cairn_source_opts *o = ctx;
    o->progress(o->progress_arg, done);
}

static int rd_fill(void *arg, struct cairn_writer *w, struct cairn_err *err)
{
    return redis_snapshot(arg, w, NULL, err);
}

static int rd_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    struct redis_src *r = state;
    struct tls_opts tls = {r->o.ca_file, r->o.cert_file, r->o.key_file, r->o.tls_server_name};
    struct redis_conn_opts co = {
        .host = r->u.host,
        .port = r->u.port,
        .user = r->u.user,
        .password = r->u.password,
        .tls = r->tls ? &tls : NULL,
        .connect_timeout_ms = r->o.connect_timeout_ms,
        .io_timeout_ms =
            r->o.io_timeout_ms > 0 && r->o.io_timeout_ms < 0x7fffffff ? (int)r->o.io_timeout_ms : 0,
        .cancel = r->o.cancel,
        .progress = r->o.progress ? rd_progress : NULL,
        .progress_ctx = &r->o,
    };
    return source_put_one(b, "redis", RDB_FILE, rd_fill, &co, err);
}

static int rd_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err)
{
    (void)state;
    if (into == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "redis cannot load an RDB while it runs: restore with --into DIR, "
                             "then start redis-server with --dir DIR --dbfilename " RDB_FILE);
    return source_restore_into(b, RDB_FILE, into, err);
}

const struct cairn_source_driver source_redis_driver = {
    .scheme = "redis",
    .description = "redis://[[USER]:PASSWORD@]HOST[:PORT] takes the RDB as a replica does",
    .open = rd_open,
    .backup = rd_backup,
    .restore = rd_restore,
    .free = rd_free,
};

const struct cairn_source_driver source_rediss_driver = {
    .scheme = "rediss",
    .description = "rediss://[[USER]:PASSWORD@]HOST[:PORT] the same over TLS (--tls-ca, "
                   "--tls-cert, --tls-key)",
    .open = rd_open,
    .backup = rd_backup,
    .restore = rd_restore,
    .free = rd_free,
};
