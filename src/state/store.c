/* State store: URL dispatch, schema migrations, insert+prune, newest-good-row loading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/util.h"
#include "store.h"

void state_rows_free(struct state_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].data);
    free(rows);
}

static void rollback(struct cairn_state_store *s)
{
    struct cairn_err ignored;
    s->ops->exec(s, "ROLLBACK", &ignored);
}

static int migrate(struct cairn_state_store *s, struct cairn_err *err)
{
    const struct store_ops *o = s->ops;
    int rc = o->exec(s, o->begin_sql, err);
    if (rc != CAIRN_OK)
        return rc;
    int64_t v = 0;
    int is_null = 0;
    rc = o->exec(s, "CREATE TABLE IF NOT EXISTS cairn_schema_version (version INTEGER NOT NULL)",
                 err);
    if (rc == CAIRN_OK)
        rc = o->query_int(s, "SELECT MAX(version) FROM cairn_schema_version", &v, &is_null, err);
    if (rc != CAIRN_OK)
        goto fail;
    if (is_null)
        v = 0;
    if (v < 0 || v > (int64_t)o->n_migrations) {
        rc = cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                           "state database schema version %lld is newer than this cairnd "
                           "supports (max %u)",
                           (long long)v, o->n_migrations);
        goto fail;
    }
    for (unsigned i = (unsigned)v; i < o->n_migrations; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "INSERT INTO cairn_schema_version (version) VALUES (%u)", i + 1);
        rc = o->exec(s, o->migrations[i], err);
        if (rc == CAIRN_OK)
            rc = o->exec(s, sql, err);
        if (rc != CAIRN_OK) {
            cairn_err_wrap(err, "schema migration %u", i + 1);
            goto fail;
        }
        cairn_info("state", "%s state schema migrated to version %u", o->kind, i + 1);
    }
    rc = o->exec(s, "COMMIT", err);
    if (rc == CAIRN_OK)
        return CAIRN_OK;
fail:
    rollback(s);
    return rc;
}

static int is_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int cairn_state_store_open(const char *url, unsigned keep, struct cairn_state_store **out,
                           struct cairn_err *err)
{
    *out = NULL;
    if (url == NULL || *url == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "empty state store URL");
    if (keep == 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "state store must keep at least 1 snapshot");
    struct cairn_state_store *s = cairn_xcalloc(1, sizeof(*s));
    s->keep = keep;
    s->lock_fd = -1;
    int rc;
    if (is_prefix(url, "postgresql://") || is_prefix(url, "postgres://")) {
        rc = state_store_pg_open(url, s, err);
    } else if (is_prefix(url, "sqlite://")) {
        rc = state_store_sqlite_open(url + strlen("sqlite://"), s, err);
    } else if (is_prefix(url, "sqlite:")) {
        rc = state_store_sqlite_open(url + strlen("sqlite:"), s, err);
    } else if (strstr(url, "://") != NULL) {
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "unsupported state store URL '%s' (use sqlite:PATH or postgresql://)",
                           url);
    } else {
        rc = state_store_sqlite_open(url, s, err);
    }
    if (rc != CAIRN_OK) {
        free(s);
        return rc;
    }
    rc = migrate(s, err);
    if (rc != CAIRN_OK) {
        cairn_state_store_close(s);
        return rc;
    }
    *out = s;
    return CAIRN_OK;
}

void cairn_state_store_close(struct cairn_state_store *s)
{
    if (s == NULL)
        return;
    s->ops->close(s);
    free(s);
}

int cairn_state_store_lock(struct cairn_state_store *s, const char *url, struct cairn_err *err)
{
    if (s->ops->lock == NULL)
        return CAIRN_OK;
    int rc = s->ops->lock(s, err);
    if (rc == CAIRN_OK)
        s->owner = 1;
    else if (rc == CAIRN_E_LOCKED)
        cairn_err_wrap(err, "state '%s' is in use by another cairnd (one cairnd per state)", url);
    return rc;
}

const char *cairn_state_store_kind(const struct cairn_state_store *s)
{
    return s->ops->kind;
}

int cairn_state_store_put(struct cairn_state_store *s, const uint8_t *env, size_t len,
                          int64_t created_at, struct cairn_err *err)
{
    /* Never store bytes a later load would reject. */
    struct cairn_state *check = NULL;
    unsigned ver = 0;
    int rc = cairn_state_decode(env, len, &check, &ver, err);
    cairn_state_free(check);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, "refusing to store an invalid snapshot");

    const struct store_ops *o = s->ops;
    rc = o->exec(s, o->begin_sql, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = o->insert(s, created_at, ver, env, len, err);
    if (rc == CAIRN_OK) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "DELETE FROM cairn_state_snapshots WHERE id NOT IN "
                 "(SELECT id FROM cairn_state_snapshots ORDER BY id DESC LIMIT %u)",
                 s->keep);
        rc = o->exec(s, sql, err);
    }
    if (rc == CAIRN_OK)
        rc = o->exec(s, "COMMIT", err);
    if (rc != CAIRN_OK)
        rollback(s);
    return rc;
}

int cairn_state_store_load(struct cairn_state_store *s, struct cairn_state **out,
                           struct cairn_state_load_report *rep, struct cairn_err *err)
{
    *out = NULL;
    memset(rep, 0, sizeof(*rep));
    struct state_row *rows = NULL;
    size_t n = 0;
    int rc = s->ops->rows(s, s->keep > 1000 ? s->keep : 1000, &rows, &n, err);
    if (rc != CAIRN_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct cairn_err derr;
        struct cairn_state *st = NULL;
        unsigned ver = 0;
        rep->rows++;
        rc = cairn_state_decode(rows[i].data, rows[i].len, &st, &ver, &derr);
        if (rc == CAIRN_OK) {
            rep->found = 1;
            rep->row_id = rows[i].id;
            rep->created_at = rows[i].created_at;
            rep->payload_version = ver;
            *out = st;
            break;
        }
        if (rc != CAIRN_E_CORRUPT) {
            cairn_err_copy(err, &derr);
            cairn_err_wrap(err, "%s state snapshot row %lld", s->ops->kind, (long long)rows[i].id);
            goto out;
        }
        rep->skipped++;
        cairn_warn("state", "skipping corrupt %s state snapshot row %lld: %s; trying an older one",
                   s->ops->kind, (long long)rows[i].id, derr.msg);
    }
    rc = CAIRN_OK;
    if (*out == NULL) {
        if (rep->skipped > 0)
            cairn_error("state",
                        "all %u stored state snapshots are corrupt; starting from an empty state",
                        rep->skipped);
        *out = cairn_state_new();
    }
out:
    state_rows_free(rows, n);
    return rc;
}
