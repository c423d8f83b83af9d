/* The postgresql:// and postgres:// source driver:
 * postgresql://[USER[:PASSWORD]@]HOST[:5432][/DBNAME][?sslmode=...&sslrootcert=...].
 * A backup is PostgreSQL 15's physical base backup with the WAL it needs, as
 * `pg_basebackup -Ft -X stream` takes it (pg.h); a restore builds a new data directory
 * (--into DIR). A physical backup cannot be loaded into a running server. */
#include <stdlib.h>
#include <string.h>

#include "cairn/source.h"
#include "common/util.h"
#include "pg.h"
#include "source/internal.h"

struct pg_src {
    struct pg_params p;
    struct cairn_source_opts o;
};

static int pq_open(const char *url, const struct cairn_source_opts *o, void **state,
                   struct cairn_err *err)
{
    struct pg_src *s = xcalloc(1, sizeof(*s));
    int rc = pg_params_init(&s->p, url, o, err);
    if (rc != CAIRN_OK) {
        free(s);
        return rc;
    }
    s->o = *o;
    *state = s;
    return CAIRN_OK;
}

static void pq_free(void *state)
{
    struct pg_src *s = state;
    pg_params_free(&s->p);
    free(s);
}

static int pq_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    struct pg_src *s = state;
    return pg_backup(&s->p, &s->o, b, err);
}

static int pq_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err)
{
    (void)state;
    if (into == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "a PostgreSQL base backup is physical: it cannot be loaded into a "
                             "running server; restore with --into DIR (a new data directory), "
                             "then start postgres with -D DIR");
    return pg_restore_into(b, into, err);
}

const struct cairn_source_driver source_postgresql_driver = {
    .scheme = "postgresql",
    .description = "postgresql://[USER[:PASSWORD]@]HOST[:5432][/DB] base backup with its WAL "
                   "(PostgreSQL 15+)",
    .open = pq_open,
    .backup = pq_backup,
    .restore = pq_restore,
    .free = pq_free,
};

/* postgres:// is libpq's other spelling of the same URL. */
const struct cairn_source_driver source_postgres_driver = {
    .scheme = "postgres",
    .description = "postgres://... the same as postgresql://",
    .open = pq_open,
    .backup = pq_backup,
    .restore = pq_restore,
    .free = pq_free,
};
