/* State persistence on SQLite: migrations, insert+prune, corrupt-row fallback, save errors.
 * (PostgreSQL runs the same generic code; tests/sched/test_catchup_pg.sh covers it end to end
 * against a real server.) */
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/digest.h"
#include "cairn/state.h"
#include "common/util.h"
#include "test.h"

static char *db_path(const char *name)
{
    return path_join(test_tmpdir(), name);
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    sqlite3_open(path, &db);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_open(path, &db);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        test_fail(__FILE__, __LINE__, "%s: %s", sql, msg);
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int save(struct cairn_state_store *s, const char *name, int64_t t, struct cairn_err *err)
{
    struct cairn_state *st = cairn_state_new();
    cairn_state_update(st, name, t, NULL);
    uint8_t *buf;
    size_t len;
    int rc = cairn_state_encode(st, &buf, &len, err);
    if (rc == CAIRN_OK)
        rc = cairn_state_store_put(s, buf, len, t, err);
    free(buf);
    cairn_state_free(st);
    return rc;
}

static int64_t loaded_time(struct cairn_state_store *s, const char *name,
                           struct cairn_state_load_report *rep, struct cairn_err *err)
{
    struct cairn_state *st = NULL;
    int64_t t = -1;
    if (cairn_state_store_load(s, &st, rep, err) == CAIRN_OK)
        cairn_state_get(st, name, &t);
    cairn_state_free(st);
    return t;
}

TEST(fresh_store_is_empty_and_migrated)
{
    struct cairn_err err;
    char *path = db_path("state.db");
    char *url = xasprintf("sqlite://%s", path);
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(url, 5, &s, &err), &err);
    CHECK_EQ_STR(cairn_state_store_kind(s), "sqlite");
    struct cairn_state *st = NULL;
    struct cairn_state_load_report rep;
    CHECK_OK(cairn_state_store_load(s, &st, &rep, &err), &err);
    CHECK(st && cairn_state_is_empty(st) && !rep.found && rep.rows == 0);
    cairn_state_free(st);
    cairn_state_store_free(s);
    CHECK_EQ_INT(sql_int(path, "SELECT MAX(version) FROM cairn_schema_version"), 2);
    /* Re-opening is a no-op migration. */
    CHECK_OK(cairn_state_store_open(path, 5, &s, &err), &err);
    cairn_state_store_free(s);
    CHECK_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM cairn_schema_version"), 2);
    free(url);
    free(path);
}

TEST(saves_are_pruned_to_keep_in_the_same_transaction)
{
    struct cairn_err err;
    char *path = db_path("state.db");
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 3, &s, &err), &err);
    for (int i = 1; i <= 20; i++)
        CHECK_OK(save(s, "hourly", i * 3600, &err), &err);
    CHECK_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM cairn_state_snapshots"), 3);
    CHECK_EQ_INT(sql_int(path, "SELECT MIN(created_at) FROM cairn_state_snapshots"), 18 * 3600);
    struct cairn_state_load_report rep;
    CHECK_EQ_INT(loaded_time(s, "hourly", &rep, &err), 20 * 3600);
    CHECK(rep.found && rep.skipped == 0 && rep.payload_version == 1);
    cairn_state_store_free(s);
    free(path);
}

TEST(corrupt_newest_row_falls_back_to_previous_good)
{
    struct cairn_err err;
    char *path = db_path("state.db");
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    CHECK_OK(save(s, "a", 100, &err), &err);
    CHECK_OK(save(s, "a", 200, &err), &err);
    CHECK_OK(save(s, "a", 300, &err), &err);
    /* Newest row truncated, second newest bit-flipped. */
    sql_exec(path, "UPDATE cairn_state_snapshots SET snapshot = substr(snapshot, 1, 20) "
                   "WHERE id = (SELECT MAX(id) FROM cairn_state_snapshots)");
    sql_exec(path, "UPDATE cairn_state_snapshots SET snapshot = "
                   "CAST(replace(CAST(snapshot AS TEXT), 'a', 'b') AS BLOB) "
                   "WHERE id = (SELECT MAX(id) - 1 FROM cairn_state_snapshots)");
    struct cairn_state_load_report rep;
    CHECK_EQ_INT(loaded_time(s, "a", &rep, &err), 100);
    CHECK(rep.found);
    CHECK_EQ_INT(rep.skipped, 2);
    CHECK_EQ_INT(rep.rows, 3);
    /* All corrupt: an empty state, not a failure (no crash loop). */
    sql_exec(path, "UPDATE cairn_state_snapshots SET snapshot = x'00'");
    struct cairn_state *st = NULL;
    CHECK_OK(cairn_state_store_load(s, &st, &rep, &err), &err);
    CHECK(st && cairn_state_is_empty(st) && !rep.found && rep.skipped == 3);
    cairn_state_free(st);
    /* And saving again works. */
    CHECK_OK(save(s, "a", 400, &err), &err);
    CHECK_EQ_INT(loaded_time(s, "a", &rep, &err), 400);
    cairn_state_store_free(s);
    free(path);
}

TEST(newer_row_version_is_refused_not_skipped)
{
    struct cairn_err err;
    char *path = db_path("state.db");
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    CHECK_OK(save(s, "a", 100, &err), &err);
    /* A validly sealed envelope claiming payload version 9, as a newer cairnd would write. */
    struct cairn_state *st = cairn_state_new();
    uint8_t *buf;
    size_t len;
    CHECK_OK(cairn_state_encode(st, &buf, &len, &err), &err);
    buf[10] = 9;
    cairn_sha256_oneshot(buf, len - 32, buf + len - 32);
    char hex[512];
    cairn_hex_encode(buf, len, hex);
    char *sql = xasprintf("INSERT INTO cairn_state_snapshots (created_at, payload_version,"
                          " snapshot) VALUES (1, 9, x'%s')",
                          hex);
    sql_exec(path, sql);
    struct cairn_state_load_report rep;
    struct cairn_state *got = NULL;
    CHECK_ERR(cairn_state_store_load(s, &got, &rep, &err), CAIRN_E_UNSUPPORTED, &err,
              "snapshot payload version 9 is newer than this cairnd supports (max 1)");
    CHECK(got == NULL);
    /* The store also refuses to insert what it could not read back. */
    CHECK_ERR(cairn_state_store_put(s, buf, len, 2, &err), CAIRN_E_UNSUPPORTED, &err,
              "refusing to store an invalid snapshot");
    CHECK_ERR(cairn_state_store_put(s, (const uint8_t *)"garbage", 7, 2, &err), CAIRN_E_CORRUPT,
              &err, "refusing to store");
    CHECK_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM cairn_state_snapshots"), 2);
    free(sql);
    free(buf);
    cairn_state_free(st);
    cairn_state_store_free(s);
    free(path);
}

TEST(schema_migrates_from_v1_and_refuses_newer)
{
    struct cairn_err err;
    char *path = db_path("old.db");
    /* The schema as the first release created it, with one row from the v1 golden file. */
    sql_exec(path, "CREATE TABLE cairn_schema_version (version INTEGER NOT NULL);"
                   "INSERT INTO cairn_schema_version VALUES (1);"
                   "CREATE TABLE cairn_state_snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " created_at INTEGER NOT NULL, payload_version INTEGER NOT NULL,"
                   " snapshot BLOB NOT NULL)");
    char *gpath = xasprintf("%s/tests/state/data/state-v1.bin", test_source_dir());
    uint8_t *g;
    size_t glen;
    CHECK_OK(read_file_max(gpath, 1 << 20, &g, &glen, &err), &err);
    char hex[1024];
    cairn_hex_encode(g, glen, hex);
    char *sql = xasprintf("INSERT INTO cairn_state_snapshots (created_at, payload_version,"
                          " snapshot) VALUES (5, 1, x'%s')",
                          hex);
    sql_exec(path, sql);
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    CHECK_EQ_INT(sql_int(path, "SELECT MAX(version) FROM cairn_schema_version"), 2);
    struct cairn_state_load_report rep;
    CHECK_EQ_INT(loaded_time(s, "hourly", &rep, &err), 1767268800);
    CHECK_EQ_INT(rep.created_at, 5);
    cairn_state_store_free(s);
    CHECK_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM cairn_state_snapshots WHERE writer = ''"), 1);

    sql_exec(path, "INSERT INTO cairn_schema_version VALUES (3)");
    CHECK_ERR(cairn_state_store_open(path, 4, &s, &err), CAIRN_E_UNSUPPORTED, &err,
              "schema version 3 is newer than this cairnd supports (max 2)");
    free(sql);
    free(g);
    free(gpath);
    free(path);
}

TEST(save_errors_are_returned)
{
    struct cairn_err err;
    char *dir = db_path("gone");
    CHECK_OK(mkdir_p(dir, 0700, &err), &err);
    char *path = path_join(dir, "state.db");
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    CHECK_OK(save(s, "a", 100, &err), &err);
    /* The rollback journal cannot be created any more. */
    CHECK_OK(rmtree(dir, &err), &err);
    int rc = save(s, "a", 200, &err);
    CHECK(rc != CAIRN_OK);
    CHECK(strstr(err.msg, "sqlite") != NULL);
    cairn_state_store_free(s);
    CHECK_ERR(cairn_state_store_open("nosuchscheme://x", 4, &s, &err), CAIRN_E_INVALID, &err,
              "unsupported state store URL");
    CHECK_ERR(cairn_state_store_open(path, 4, &s, &err), CAIRN_E_IO, &err, "state database");
    free(path);
    free(dir);
}

/* XOR the first 8 bytes of page `page` (1-based) with nonzero bytes: every byte changes. */
static void xor_page(const char *path, int64_t page, int64_t page_size)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    uint8_t b[8];
    CHECK(fseek(f, (long)((page - 1) * page_size), SEEK_SET) == 0);
    CHECK(fread(b, 1, sizeof(b), f) == sizeof(b));
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] ^= (uint8_t)(0x5a + i);
    CHECK(fseek(f, (long)((page - 1) * page_size), SEEK_SET) == 0);
    CHECK(fwrite(b, 1, sizeof(b), f) == sizeof(b));
    fclose(f);
}

static int count_asides(const char *dir, unsigned *mode)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "state.db.corrupt-", 17) != 0)
            continue;
        char *p = path_join(dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && strchr(e->d_name + 17, '-') == NULL) /* not -journal etc. */
            *mode = sb.st_mode & 07777, n++;
        free(p);
    }
    if (d)
        closedir(d);
    return n;
}

TEST(damaged_database_is_moved_aside_and_the_newest_good_snapshot_kept)
{
    struct cairn_err err;
    char *path = db_path("state.db");
    struct cairn_state_store *s = NULL;
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    for (int i = 1; i <= 3; i++)
        CHECK_OK(save(s, "hourly", i * 3600, &err), &err);
    cairn_state_store_free(s);
    sql_exec(path, "CREATE TABLE junk (x); INSERT INTO junk VALUES (randomblob(100))");
    xor_page(path, sql_int(path, "SELECT rootpage FROM sqlite_master WHERE name = 'junk'"),
             sql_int(path, "PRAGMA page_size"));

    /* Without the flag nothing changes: the damage is reported, the file stays. */
    CHECK_OK(cairn_state_store_open(path, 4, &s, &err), &err);
    CHECK_EQ_INT(cairn_state_store_check(s, &err), CAIRN_E_CORRUPT);
    CHECK_EQ_INT(cairn_state_store_heals(s, NULL, 0), 0);
    cairn_state_store_free(s);
    unsigned mode = 0;
    CHECK_EQ_INT(count_asides(test_tmpdir(), &mode), 0);

    /* With it: moved aside (0600), a fresh database, the newest row that verifies kept. */
    CHECK_OK(cairn_state_store_open_ex(path, 4, CAIRN_STATE_HEAL, &s, &err), &err);
    char msg[512];
    CHECK_EQ_INT(cairn_state_store_heals(s, msg, sizeof(msg)), 1);
    CHECK(strstr(msg, "quick_check") != NULL && strstr(msg, "moved aside") != NULL);
    CHECK_EQ_INT(count_asides(test_tmpdir(), &mode), 1);
    CHECK_EQ_INT(mode, 0600);
    struct cairn_state_load_report rep;
    CHECK_EQ_INT(loaded_time(s, "hourly", &rep, &err), 3 * 3600);
    CHECK_OK(cairn_state_store_check(s, &err), &err);
    CHECK_OK(save(s, "hourly", 4 * 3600, &err), &err);
    CHECK_EQ_INT(cairn_state_store_heals(s, NULL, 0), 1);
    cairn_state_store_free(s);
    CHECK_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM cairn_state_snapshots"), 2);
    free(path);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
