/* State store driver: PostgreSQL through libpq. A dropped connection is reset before the next
 * statement, so a database restart costs one failed save, not a cairnd restart. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/util.h"
#include "store.h"

static const char *const k_migrations[] = {
    /* 1: one row per saved snapshot; the blob is a cairn/state.h envelope. */
    "CREATE TABLE cairn_state_snapshots ("
    " id BIGSERIAL PRIMARY KEY,"
    " created_at BIGINT NOT NULL,"
    " payload_version INTEGER NOT NULL,"
    " snapshot BYTEA NOT NULL)",
    /* 2: which build wrote the row, for diagnosing downgrades. */
    "ALTER TABLE cairn_state_snapshots ADD COLUMN writer TEXT NOT NULL DEFAULT ''",
    /* 3: the leader lease of cairnd high availability (cairn/state.h): one row. */
    "CREATE TABLE cairn_leader ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " holder TEXT NOT NULL,"
    " token BIGINT NOT NULL,"
    " expires_at TIMESTAMPTZ NOT NULL)",
    /* 4: the lease token the writer held (0: none), for audits of fencing. */
    "ALTER TABLE cairn_state_snapshots ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
};

static int pg_fail(PGconn *c, const PGresult *r, const char *what, struct cairn_err *err)
{
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    char clean[512];
    snprintf(clean, sizeof(clean), "%s", msg && *msg ? msg : "unknown error");
    size_t n = strlen(clean);
    while (n > 0 && (clean[n - 1] == '\n' || clean[n - 1] == ' '))
        clean[--n] = '\0';
    int code = PQstatus(c) == CONNECTION_BAD ? CAIRN_E_NETWORK : CAIRN_E_IO;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strncmp(state, "42501", 5) == 0)
        code = CAIRN_E_PERM;
    else if (state != NULL && strncmp(state, "53100", 5) == 0)
        code = CAIRN_E_NOSPACE;
    return cairn_err_set(err, code, "postgresql %s: %s", what, clean);
}

static int pg_lock(struct cairn_state_store *s, struct cairn_err *err);

/* Session settings, after every (re)connect. A cairnd stopped (SIGSTOP, a paused VM) inside a
 * save must not hold the save lock and the lease row for long: the server ends such a
 * session (a save never waits on the client). */
static void pg_session(PGconn *c)
{
    PQclear(PQexec(c, "SET idle_in_transaction_session_timeout = '10s'"));
}

/* Reconnect when the server went away since the last statement; an owner takes its session
 * lock again (another cairnd may have taken it meanwhile: then this one must stop). */
static int pg_ready(struct cairn_state_store *s, struct cairn_err *err)
{
    if (PQstatus(s->db) == CONNECTION_OK)
        return CAIRN_OK;
    cairn_warn("state", "postgresql connection lost, reconnecting");
    PQreset(s->db);
    if (PQstatus(s->db) != CONNECTION_OK)
        return pg_fail(s->db, NULL, "reconnect", err);
    pg_session(s->db);
    return s->owner ? pg_lock(s, err) : CAIRN_OK;
}

/* A session advisory lock: held while this connection lives, gone with the process. */
static int pg_lock(struct cairn_state_store *s, struct cairn_err *err)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%lld)::int",
             (long long)CAIRN_STATE_OWNER_KEY);
    PGresult *r = PQexec(s->db, sql);
    int rc = CAIRN_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = pg_fail(s->db, r, "advisory lock", err);
    else if (strcmp(PQgetvalue(r, 0, 0), "1") != 0)
        rc = cairn_err_set(err, CAIRN_E_LOCKED,
                           "postgresql advisory lock %lld is held by another session",
                           (long long)CAIRN_STATE_OWNER_KEY);
    PQclear(r);
    return rc;
}

static int pg_exec(struct cairn_state_store *s, const char *sql, struct cairn_err *err)
{
    int rc = pg_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    PGresult *r = PQexec(s->db, sql);
    ExecStatusType st = PQresultStatus(r);
    rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? CAIRN_OK : pg_fail(s->db, r, sql, err);
    PQclear(r);
    return rc;
}

static int pg_query_int(struct cairn_state_store *s, const char *sql, int64_t *out, int *is_null,
                        struct cairn_err *err)
{
    int rc = pg_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    PGresult *r = PQexec(s->db, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(s->db, r, sql, err);
    } else if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) {
        *is_null = 1;
    } else {
        *is_null = 0;
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    }
    PQclear(r);
    return rc;
}

static int pg_insert(struct cairn_state_store *s, int64_t created_at, unsigned payload_version,
                     const uint8_t *data, size_t len, struct cairn_err *err)
{
    int rc = pg_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char created[32], ver[16], writer[64], token[32];
    snprintf(created, sizeof(created), "%lld", (long long)created_at);
    snprintf(ver, sizeof(ver), "%u", payload_version);
    snprintf(writer, sizeof(writer), "cairnd %s", cairn_version());
    snprintf(token, sizeof(token), "%lld", (long long)s->fence);
    const char *vals[5] = {created, ver, (const char *)data, writer, token};
    int lens[5] = {0, 0, (int)len, 0, 0};
    int fmts[5] = {0, 0, 1, 0, 0};
    PGresult *r = PQexecParams(s->db,
                               "INSERT INTO cairn_state_snapshots "
                               "(created_at, payload_version, snapshot, writer, token) "
                               "VALUES ($1, $2, $3, $4, $5)",
                               5, NULL, vals, lens, fmts, 0);
    rc = PQresultStatus(r) == PGRES_COMMAND_OK ? CAIRN_OK
                                               : pg_fail(s->db, r, "insert snapshot", err);
    PQclear(r);
    return rc;
}

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return (int64_t)v;
}

static int pg_rows(struct cairn_state_store *s, unsigned limit, struct state_row **rows, size_t *n,
                   struct cairn_err *err)
{
    *rows = NULL;
    *n = 0;
    int rc = pg_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char lim[16];
    snprintf(lim, sizeof(lim), "%u", limit);
    const char *vals[1] = {lim};
    /* Binary results: ids and times arrive as big-endian int8, the blob as raw bytes. */
    PGresult *r = PQexecParams(s->db,
                               "SELECT id, created_at, snapshot FROM cairn_state_snapshots "
                               "ORDER BY id DESC LIMIT $1::bigint",
                               1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(s->db, r, "read snapshots", err);
        PQclear(r);
        return rc;
    }
    int nt = PQntuples(r);
    if (nt > 0)
        *rows = xcalloc((size_t)nt, sizeof(**rows));
    for (int i = 0; i < nt; i++) {
        struct state_row *row = &(*rows)[i];
        row->id = be64(PQgetvalue(r, i, 0));
        row->created_at = be64(PQgetvalue(r, i, 1));
        row->len = (size_t)PQgetlength(r, i, 2);
        row->data = xmalloc(row->len ? row->len : 1);
        memcpy(row->data, PQgetvalue(r, i, 2), row->len);
    }
    *n = (size_t)nt;
    PQclear(r);
    return CAIRN_OK;
}

/* The lease statements (cairn/state.h). Expiry is the database's clock_timestamp(): the hosts'
 * clocks play no part. TAKE is one statement: concurrent takers serialise on the row, and the
 * WHERE is checked again on the newest version, so exactly one of them wins an expired lease.
 * Its holder may take it again at once (a new term after a reload), with a new token. */
static const char *const k_lease_sql[] = {
    [LEASE_TAKE] = "INSERT INTO cairn_leader AS l (id, holder, token, expires_at) "
                   "VALUES (1, $1, 1, clock_timestamp() + $2::bigint * interval '1 millisecond') "
                   "ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, token = l.token + 1, "
                   "expires_at = EXCLUDED.expires_at WHERE l.expires_at < clock_timestamp() "
                   "OR l.holder = EXCLUDED.holder "
                   "RETURNING token",
    [LEASE_RENEW] = "UPDATE cairn_leader SET expires_at = clock_timestamp() + $2::bigint * "
                    "interval '1 millisecond' WHERE id = 1 AND holder = $1 AND token = $3 "
                    "RETURNING token",
    [LEASE_RELEASE] = "UPDATE cairn_leader SET expires_at = clock_timestamp() - interval '1 "
                      "millisecond' WHERE id = 1 AND holder = $1 AND token = $3 RETURNING token",
    [LEASE_GET] = "SELECT token, holder, floor(extract(epoch FROM (expires_at - "
                  "clock_timestamp())) * 1000)::bigint FROM cairn_leader WHERE id = 1",
    /* Inside the put transaction: FOR SHARE holds off a takeover until it commits. */
    [LEASE_FENCE] = "SELECT token, holder FROM cairn_leader WHERE id = 1 FOR SHARE",
};

static int pg_lease(struct cairn_state_store *s, int op, const char *holder, int64_t lease_ms,
                    int64_t *token, struct cairn_state_lease *cur, struct cairn_err *err)
{
    int rc = pg_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char ms[32], tok[32];
    snprintf(ms, sizeof(ms), "%lld", (long long)lease_ms);
    snprintf(tok, sizeof(tok), "%lld", token ? (long long)*token : 0LL);
    const char *vals[3] = {holder ? holder : "", ms, tok};
    int n = op == LEASE_GET || op == LEASE_FENCE ? 0 : op == LEASE_TAKE ? 2 : 3;
    PGresult *r = PQexecParams(s->db, k_lease_sql[op], n, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(s->db, r, "leader lease", err);
        PQclear(r);
        return rc;
    }
    int rows = PQntuples(r);
    int64_t got = rows > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    switch (op) {
    case LEASE_TAKE:
        if (rows == 1)
            *token = got;
        else
            rc = cairn_err_set(err, CAIRN_E_LOCKED, "the leader lease is held by another cairnd");
        break;
    case LEASE_RENEW:
    case LEASE_RELEASE:
        if (rows != 1)
            rc = cairn_err_set(err, CAIRN_E_DENIED,
                               "leader lease token %lld is no longer current: another cairnd "
                               "took the lease",
                               (long long)*token);
        break;
    case LEASE_GET:
        if (rows != 1) {
            rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "no cairnd has held the leader lease yet");
            break;
        }
        cur->token = got;
        snprintf(cur->holder, sizeof(cur->holder), "%s", PQgetvalue(r, 0, 1));
        cur->remaining_ms = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
        break;
    case LEASE_FENCE:
        if (rows != 1 || got != *token)
            rc = cairn_err_set(err, CAIRN_E_DENIED,
                               "fenced: leader lease token %lld is stale (the lease is now "
                               "token %lld of %s)",
                               (long long)*token, (long long)got,
                               rows ? PQgetvalue(r, 0, 1) : "nobody");
        break;
    }
    PQclear(r);
    return rc;
}

static void pg_close(struct cairn_state_store *s)
{
    PQfinish(s->db);
}

static const struct store_ops k_pg_ops = {
    .kind = "postgresql",
    /* The advisory lock serialises migrations and saves of concurrent cairnd processes. */
    .begin_sql = "BEGIN; SELECT pg_advisory_xact_lock(4242424201)",
    .migrations = k_migrations,
    .n_migrations = sizeof(k_migrations) / sizeof(k_migrations[0]),
    .exec = pg_exec,
    .query_int = pg_query_int,
    .insert = pg_insert,
    .rows = pg_rows,
    .close = pg_close,
    .lock = pg_lock,
    .lease = pg_lease,
};

static void pg_notice(void *arg, const char *msg)
{
    (void)arg, (void)msg; /* "relation already exists, skipping" and the like */
}

int state_store_pg_open(const char *url, struct cairn_state_store *s, struct cairn_err *err)
{
    PGconn *c = PQconnectdb(url);
    if (c == NULL)
        return cairn_err_set(err, CAIRN_E_NOMEM, "postgresql: out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = pg_fail(c, NULL, "connect", err);
        PQfinish(c);
        return rc;
    }
    PQsetNoticeProcessor(c, pg_notice, NULL);
    pg_session(c);
    s->db = c;
    s->ops = &k_pg_ops;
    return CAIRN_OK;
}
