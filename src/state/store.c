/* State store: URL dispatch, schema migrations, insert+prune, newest-good-row loading. */
#include <pthread.h>
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
            cairn_err_wrap(err, rc, "schema migration %u", i + 1);
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

/* The insert+prune transaction (s->mu held). */
static int put_locked(struct cairn_state_store *s, const uint8_t *env, size_t len, unsigned ver,
                      int64_t created_at, struct cairn_err *err)
{
    const struct store_ops *o = s->ops;
    int rc = o->exec(s, o->begin_sql, err);
    if (rc != CAIRN_OK)
        return rc;
    /* Fenced: the lease row is read (and share-locked, so no takeover commits meanwhile) in
     * this transaction; a deposed leader's snapshot never lands. */
    int64_t fence = s->fence;
    if (fence > 0 && o->lease != NULL)
        rc = o->lease(s, LEASE_FENCE, NULL, 0, &fence, NULL, err);
    if (rc == CAIRN_OK)
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

/* The newest row of a damaged database that still verifies (its SHA-256 matches), if any. */
static int salvage(struct cairn_state_store *s, uint8_t **env, size_t *len, int64_t *at)
{
    struct state_row *rows = NULL;
    size_t n = 0;
    struct cairn_err ignored;
    if (s->ops->rows(s, s->keep, &rows, &n, &ignored) != CAIRN_OK)
        return 0;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        struct cairn_state *st = NULL;
        if (cairn_state_decode(rows[i].data, rows[i].len, &st, NULL, &ignored) != CAIRN_OK)
            continue;
        cairn_state_free(st);
        *env = rows[i].data;
        *len = rows[i].len;
        *at = rows[i].created_at;
        rows[i].data = NULL;
        found = 1;
    }
    state_rows_free(rows, n);
    return found;
}

/* Move a damaged database aside, start a fresh one and store the newest snapshot that still
 * verifies in it (s->mu held). Without CAIRN_STATE_HEAL the damage is the error. */
static int heal(struct cairn_state_store *s, const char *reason, struct cairn_err *err)
{
    const char *kind = s->ops->kind;
    if (!(s->flags & CAIRN_STATE_HEAL) || s->ops->move_aside == NULL)
        return cairn_err_set(err, CAIRN_E_CORRUPT, "%s state database is damaged: %s", kind,
                             reason);
    uint8_t *env = NULL;
    size_t len = 0;
    int64_t at = 0;
    if (s->last_env != NULL) {
        len = s->last_len;
        at = s->last_at;
        env = xmalloc(len);
        memcpy(env, s->last_env, len);
    } else {
        salvage(s, &env, &len, &at);
    }
    char aside[4200];
    int rc = s->ops->move_aside(s, aside, sizeof(aside), err);
    if (rc != CAIRN_OK) {
        free(env);
        cairn_error("state", "%s state database is damaged (%s) and could not be moved aside", kind,
                    reason);
        cairn_err_wrap(err, rc, "%s state database is damaged (%s)", kind, reason);
        return rc;
    }
    rc = migrate(s, err);
    int restored = 0;
    if (rc == CAIRN_OK && env != NULL) {
        unsigned ver = 0;
        struct cairn_state *st = NULL;
        if (cairn_state_decode(env, len, &st, &ver, NULL) == CAIRN_OK)
            rc = put_locked(s, env, len, ver, at, err);
        cairn_state_free(st);
        restored = rc == CAIRN_OK;
    }
    free(env);
    cairn_error("state",
                "STATE DATABASE DAMAGED: %s; moved aside to '%s' (kept for inspection), "
                "continuing with a fresh %s state database%s",
                reason, aside, kind,
                restored ? " holding the newest snapshot that still verifies"
                         : " (no snapshot survived: the schedules' last runs are taken from "
                           "the backups in storage)");
    pthread_mutex_lock(&s->status_mu);
    s->heals++;
    snprintf(s->heal_msg, sizeof(s->heal_msg), "%s; moved aside to '%s'", reason, aside);
    cairn_state_heal_fn fn = s->on_heal;
    void *ctx = s->on_heal_ctx;
    pthread_mutex_unlock(&s->status_mu);
    if (fn != NULL)
        fn(ctx, aside, reason, restored);
    return rc;
}

/* Heal when rc is a corruption error from the database (s->mu held); err keeps rc's message
 * when there is nothing to heal. */
static int heal_on_corrupt(struct cairn_state_store *s, int rc, struct cairn_err *err)
{
    if (rc != CAIRN_E_CORRUPT || !(s->flags & CAIRN_STATE_HEAL) || s->ops->move_aside == NULL)
        return rc;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s", err ? err->msg : "corrupt");
    return heal(s, reason, err);
}

static int open_driver(struct cairn_state_store *s, const char *url, struct cairn_err *err)
{
    if (is_prefix(url, "postgresql://") || is_prefix(url, "postgres://"))
        return state_store_pg_open(url, s, err);
    if (is_prefix(url, "sqlite://"))
        return state_store_sqlite_open(url + strlen("sqlite://"), s, err);
    if (is_prefix(url, "sqlite:"))
        return state_store_sqlite_open(url + strlen("sqlite:"), s, err);
    if (strstr(url, "://") != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "unsupported state store URL '%s' (use sqlite:PATH or postgresql://)",
                             url);
    return state_store_sqlite_open(url, s, err);
}

int cairn_state_store_open_ex(const char *url, unsigned keep, unsigned flags,
                              struct cairn_state_store **out, struct cairn_err *err)
{
    *out = NULL;
    if (url == NULL || *url == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "empty state store URL");
    if (keep == 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "state store must keep at least 1 snapshot");
    struct cairn_state_store *s = xcalloc(1, sizeof(*s));
    s->lock_fd = -1;
    s->keep = keep;
    s->flags = flags;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->status_mu, NULL);
    int rc = open_driver(s, url, err);
    if (rc != CAIRN_OK) {
        free(s->path);
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->status_mu);
        free(s);
        return rc;
    }
    if (flags & CAIRN_STATE_OWN)
        rc = cairn_state_store_lock(s, url, err);
    if (rc == CAIRN_OK && (flags & CAIRN_STATE_HEAL) && s->ops->check != NULL)
        rc = heal_on_corrupt(s, s->ops->check(s, err), err);
    if (rc == CAIRN_OK)
        rc = heal_on_corrupt(s, migrate(s, err), err);
    if (rc != CAIRN_OK) {
        cairn_state_store_free(s);
        return rc;
    }
    *out = s;
    return CAIRN_OK;
}

int cairn_state_store_open(const char *url, unsigned keep, struct cairn_state_store **out,
                           struct cairn_err *err)
{
    return cairn_state_store_open_ex(url, keep, 0, out, err);
}

void cairn_state_store_free(struct cairn_state_store *s)
{
    if (s == NULL)
        return;
    if (s->db != NULL)
        s->ops->close(s);
    free(s->path);
    free(s->last_env);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->status_mu);
    free(s);
}

int cairn_state_store_check(struct cairn_state_store *s, struct cairn_err *err)
{
    if (s->ops->check == NULL)
        return CAIRN_OK;
    pthread_mutex_lock(&s->mu);
    int rc = heal_on_corrupt(s, s->ops->check(s, err), err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

unsigned cairn_state_store_heals(struct cairn_state_store *s, char *msg, size_t cap)
{
    pthread_mutex_lock(&s->status_mu);
    unsigned n = s->heals;
    if (msg != NULL && cap > 0)
        snprintf(msg, cap, "%s", s->heal_msg);
    pthread_mutex_unlock(&s->status_mu);
    return n;
}

void cairn_state_store_on_heal(struct cairn_state_store *s, cairn_state_heal_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->status_mu);
    s->on_heal = fn;
    s->on_heal_ctx = ctx;
    pthread_mutex_unlock(&s->status_mu);
}

int cairn_state_store_lock(struct cairn_state_store *s, const char *url, struct cairn_err *err)
{
    if (s->ops->lock == NULL)
        return CAIRN_OK;
    int rc = s->ops->lock(s, err);
    if (rc == CAIRN_OK)
        s->owner = 1;
    else if (rc == CAIRN_E_LOCKED)
        cairn_err_wrap(err, rc, "state '%s' is in use by another cairnd (one cairnd per state)",
                       url);
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
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "refusing to store an invalid snapshot");
        return rc;
    }

    pthread_mutex_lock(&s->mu);
    rc = put_locked(s, env, len, ver, created_at, err);
    if (rc == CAIRN_E_CORRUPT && (s->flags & CAIRN_STATE_HEAL)) {
        rc = heal_on_corrupt(s, rc, err);
        if (rc == CAIRN_OK)
            rc = put_locked(s, env, len, ver, created_at, err);
    }
    if (rc == CAIRN_OK) {
        free(s->last_env);
        s->last_env = xmalloc(len);
        memcpy(s->last_env, env, len);
        s->last_len = len;
        s->last_at = created_at;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int cairn_state_store_load(struct cairn_state_store *s, struct cairn_state **out,
                           struct cairn_state_load_report *rep, struct cairn_err *err)
{
    *out = NULL;
    memset(rep, 0, sizeof(*rep));
    struct state_row *rows = NULL;
    size_t n = 0;
    unsigned limit = s->keep > 1000 ? s->keep : 1000;
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->rows(s, limit, &rows, &n, err);
    if (rc == CAIRN_E_CORRUPT && (s->flags & CAIRN_STATE_HEAL)) {
        rc = heal_on_corrupt(s, rc, err);
        if (rc == CAIRN_OK)
            rc = s->ops->rows(s, limit, &rows, &n, err);
    }
    pthread_mutex_unlock(&s->mu);
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
            cairn_err_wrap(err, rc, "%s state snapshot row %lld", s->ops->kind,
                           (long long)rows[i].id);
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

/* The lease operations, serialised with the store's other statements. */
static int lease_op(struct cairn_state_store *s, int op, const char *holder, int64_t lease_ms,
                    int64_t *token, struct cairn_state_lease *cur, struct cairn_err *err)
{
    if (s->ops->lease == NULL)
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "a %s state has no leader lease (high availability needs a "
                             "PostgreSQL state)",
                             s->ops->kind);
    pthread_mutex_lock(&s->mu);
    int rc = s->ops->lease(s, op, holder, lease_ms, token, cur, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int cairn_state_store_lease_take(struct cairn_state_store *s, const char *holder, int64_t lease_ms,
                                 int64_t *token, struct cairn_err *err)
{
    *token = 0;
    return lease_op(s, LEASE_TAKE, holder, lease_ms, token, NULL, err);
}

int cairn_state_store_lease_renew(struct cairn_state_store *s, const char *holder, int64_t token,
                                  int64_t lease_ms, struct cairn_err *err)
{
    return lease_op(s, LEASE_RENEW, holder, lease_ms, &token, NULL, err);
}

int cairn_state_store_lease_release(struct cairn_state_store *s, const char *holder, int64_t token,
                                    struct cairn_err *err)
{
    return lease_op(s, LEASE_RELEASE, holder, 0, &token, NULL, err);
}

int cairn_state_store_lease_get(struct cairn_state_store *s, struct cairn_state_lease *out,
                                struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    return lease_op(s, LEASE_GET, NULL, 0, NULL, out, err);
}

int cairn_state_store_fence_check(struct cairn_state_store *s, int64_t token, struct cairn_err *err)
{
    return lease_op(s, LEASE_FENCE, NULL, 0, &token, NULL, err);
}

void cairn_state_store_set_fence(struct cairn_state_store *s, int64_t token)
{
    pthread_mutex_lock(&s->mu);
    s->fence = token;
    pthread_mutex_unlock(&s->mu);
}
