/* State store driver: SQLite (the embedded default). One connection, rollback journal, full
 * sync: a state snapshot is small and written rarely, durability matters more than speed. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/util.h"
#include "store.h"

static const char *const k_migrations[] = {
    /* 1: one row per saved snapshot; the blob is a cairn/state.h envelope. */
    "CREATE TABLE cairn_state_snapshots ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " created_at INTEGER NOT NULL,"
    " payload_version INTEGER NOT NULL,"
    " snapshot BLOB NOT NULL)",
    /* 2: which build wrote the row, for diagnosing downgrades. */
    "ALTER TABLE cairn_state_snapshots ADD COLUMN writer TEXT NOT NULL DEFAULT ''",
};

static int sq_err(sqlite3 *db, int rc, const char *what, struct cairn_err *err)
{
    int code;
    switch (rc & 0xff) {
    case SQLITE_FULL: code = CAIRN_E_NOSPACE; break;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH: code = CAIRN_E_PERM; break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: code = CAIRN_E_CORRUPT; break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: code = CAIRN_E_TIMEOUT; break;
    default: code = CAIRN_E_IO; break;
    }
    return cairn_err_set(err, code, "sqlite %s: %s", what,
                         db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

static int sq_exec(struct cairn_state_store *s, const char *sql, struct cairn_err *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? CAIRN_OK : sq_err(s->db, rc, sql, err);
}

static int sq_query_int(struct cairn_state_store *s, const char *sql, int64_t *out, int *is_null,
                        struct cairn_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(s->db, rc, sql, err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *is_null = sqlite3_column_type(st, 0) == SQLITE_NULL;
        *out = sqlite3_column_int64(st, 0);
        rc = CAIRN_OK;
    } else if (rc == SQLITE_DONE) {
        *is_null = 1;
        rc = CAIRN_OK;
    } else {
        rc = sq_err(s->db, rc, sql, err);
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_insert(struct cairn_state_store *s, int64_t created_at, unsigned payload_version,
                     const uint8_t *data, size_t len, struct cairn_err *err)
{
    static const char sql[] = "INSERT INTO cairn_state_snapshots "
                              "(created_at, payload_version, snapshot, writer) VALUES (?,?,?,?)";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(s->db, rc, "insert snapshot", err);
    char writer[64];
    snprintf(writer, sizeof(writer), "cairnd %s", cairn_version());
    sqlite3_bind_int64(st, 1, created_at);
    sqlite3_bind_int(st, 2, (int)payload_version);
    sqlite3_bind_blob64(st, 3, data, len, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, writer, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? CAIRN_OK : sq_err(s->db, rc, "insert snapshot", err);
    sqlite3_finalize(st);
    return rc;
}

static int sq_rows(struct cairn_state_store *s, unsigned limit, struct state_row **rows, size_t *n,
                   struct cairn_err *err)
{
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT id, created_at, snapshot FROM cairn_state_snapshots "
                                "ORDER BY id DESC LIMIT ?",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(s->db, rc, "read snapshots", err);
    sqlite3_bind_int64(st, 1, limit);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *rows = xrealloc(*rows, cap * sizeof(**rows));
        }
        struct state_row *r = &(*rows)[(*n)++];
        r->id = sqlite3_column_int64(st, 0);
        r->created_at = sqlite3_column_int64(st, 1);
        const void *b = sqlite3_column_blob(st, 2);
        r->len = (size_t)sqlite3_column_bytes(st, 2);
        r->data = xmalloc(r->len ? r->len : 1);
        if (r->len)
            memcpy(r->data, b, r->len);
    }
    if (rc != SQLITE_DONE) {
        rc = sq_err(s->db, rc, "read snapshots", err);
        state_rows_free(*rows, *n);
        *rows = NULL;
        *n = 0;
    } else {
        rc = CAIRN_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static void sq_close(struct cairn_state_store *s)
{
    sqlite3_close_v2(s->db);
    s->db = NULL;
    if (s->lock_fd >= 0)
        close(s->lock_fd);
}

static int sq_check(struct cairn_state_store *s, struct cairn_err *err)
{
    /* Drop cached pages first: they may predate damage to the file, and the check must read
     * what is on disk (SQLite keeps its cache while the file's change counter is unchanged). */
    sqlite3_db_release_memory(s->db);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(s->db, rc, "quick_check", err);
    char first[256] = "";
    int rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (rows++ == 0)
            snprintf(first, sizeof(first), "%s", t ? (const char *)t : "");
    }
    if (rc != SQLITE_DONE)
        rc = sq_err(s->db, rc, "quick_check", err);
    else if (rows == 1 && strcmp(first, "ok") == 0)
        rc = CAIRN_OK;
    else
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "sqlite quick_check: %s%s", first,
                           rows > 1 ? " (and more)" : "");
    sqlite3_finalize(st);
    return rc;
}

/* Rename path+suffix to aside+suffix when it exists, private to the owner. */
static int rename_aside(const char *path, const char *aside, const char *suffix,
                        struct cairn_err *err)
{
    char *from = xasprintf("%s%s", path, suffix);
    char *to = xasprintf("%s%s", aside, suffix);
    int rc = CAIRN_OK;
    if (rename(from, to) == 0)
        chmod(to, 0600);
    else if (errno != ENOENT || suffix[0] == '\0')
        rc = cairn_err_sys(err, CAIRN_E_IO, errno, "moving '%s' aside to '%s'", from, to);
    free(from);
    free(to);
    return rc;
}

static int sq_move_aside(struct cairn_state_store *s, char *aside, size_t cap,
                         struct cairn_err *err)
{
    const char *path = s->path;
    sqlite3_close_v2(s->db); /* releases its file descriptors and locks */
    s->db = NULL;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    struct stat sb;
    snprintf(aside, cap, "%s.corrupt-%s", path, stamp);
    for (int i = 2; lstat(aside, &sb) == 0 && i < 1000; i++) /* never overwrite an older one */
        snprintf(aside, cap, "%s.corrupt-%s.%d", path, stamp, i);
    /* The journal goes with the file: a hot journal left behind would be rolled back into the
     * fresh database. */
    static const char *const k_suffixes[] = {"", "-journal", "-wal", "-shm"};
    int rc = CAIRN_OK;
    for (size_t i = 0; i < sizeof(k_suffixes) / sizeof(k_suffixes[0]) && rc == CAIRN_OK; i++)
        rc = rename_aside(path, aside, k_suffixes[i], err);
    if (rc == CAIRN_OK) {
        char dir[4096];
        path_dirname(path, dir, sizeof(dir));
        fsync_dir(dir, NULL);
    }
    struct cairn_err oerr;
    int orc = state_store_sqlite_open(path, s, &oerr); /* fresh, or the old one on failure */
    if (rc == CAIRN_OK && orc != CAIRN_OK) {
        cairn_err_copy(err, &oerr);
        rc = orc;
    }
    return rc;
}

/* flock on a sibling file: SQLite's own fcntl locks on the database are left alone (closing
 * any descriptor of a file drops a process' fcntl locks), and the file names the owner. */
static int sq_lock(struct cairn_state_store *s, struct cairn_err *err)
{
    const char *db = sqlite3_db_filename(s->db, "main");
    if (db == NULL || *db == '\0')
        return CAIRN_OK; /* ":memory:": nothing to share */
    char *path = xasprintf("%s.lock", db);
    int rc = CAIRN_OK;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = cairn_err_sys(err, 0, errno, "open lock file '%s'", path);
    } else if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char owner[300] = "";
        ssize_t n = errno == EWOULDBLOCK ? pread(fd, owner, sizeof(owner) - 1, 0) : -1;
        while (n > 0 && (owner[n - 1] == '\n' || owner[n - 1] == '\0'))
            n--;
        owner[n > 0 ? n : 0] = '\0';
        rc = errno == EWOULDBLOCK || n >= 0
                 ? cairn_err_set(err, CAIRN_E_LOCKED, "'%s' is held by %s", path,
                                 owner[0] ? owner : "another process")
                 : cairn_err_sys(err, 0, errno, "lock '%s'", path);
        close(fd);
    } else {
        char host[256];
        host_name(host, sizeof(host), 0);
        char *who = xasprintf("pid %d on host %s\n", (int)getpid(), host);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, who, strlen(who), 0) < 0)
            cairn_warn("state", "could not write the owner into '%s'", path);
        free(who);
        s->lock_fd = fd;
    }
    free(path);
    return rc;
}

static const struct store_ops k_sqlite_ops = {
    .kind = "sqlite",
    .begin_sql = "BEGIN IMMEDIATE",
    .migrations = k_migrations,
    .n_migrations = sizeof(k_migrations) / sizeof(k_migrations[0]),
    .exec = sq_exec,
    .query_int = sq_query_int,
    .insert = sq_insert,
    .rows = sq_rows,
    .close = sq_close,
    .check = sq_check,
    .move_aside = sq_move_aside,
    .lock = sq_lock,
};

int state_store_sqlite_open(const char *path, struct cairn_state_store *s, struct cairn_err *err)
{
    if (*path == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "empty SQLite state path");
    if (s->path == NULL)
        s->path = xstrdup(path);
    /* SQLite creates its file (and journals, which copy the file's mode) with 0644 & ~umask:
     * create it first so the state is private whatever the umask. */
    if (path[0] != ':' && strncmp(path, "file:", 5) != 0) { /* not ":memory:" or a URI */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0)
            close(fd);
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int code = sq_err(db, rc, "open", err);
        cairn_err_wrap(err, rc, "state database '%s'", path);
        sqlite3_close_v2(db);
        return code;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    s->db = db;
    s->ops = &k_sqlite_ops;
    rc = sq_exec(s, "PRAGMA synchronous=FULL", err);
    if (rc == CAIRN_E_CORRUPT) /* a damaged file: left to the check (and heal) after open */
        return CAIRN_OK;
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "state database '%s'", path);
        sqlite3_close_v2(db);
        s->db = NULL;
    }
    return rc;
}
