/* The engine through its public API, in process: backups of an in-process snapshot server
 * (the directory provider, as cairnd serve runs it) and of a local path into file:// storage,
 * full and incremental; restores offline into the legacy layout and online into the server;
 * cancellation, refused options (with and without an err), and the scope rules a chain is
 * checked by. The command-line and real-influxd tests are the scripts beside this file. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "cairn/engine.h"
#include "cairn/influx.h"
#include "cairn/repo.h"
#include "cairn/source.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "engine/internal.h"
#include "test.h"

static void put_file(const char *dir, const char *name, const char *content, int64_t mtime)
{
    struct cairn_err err;
    mkdir_p(dir, 0755, &err);
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "wb");
    fputs(content, f);
    fclose(f);
    if (mtime > 0) {
        struct timeval tv[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
        utimes(p, tv);
    }
    free(p);
}

static int exists(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    struct stat sb;
    int ok = stat(p, &sb) == 0;
    free(p);
    return ok;
}

/* Entries of dir, hidden ones (temporaries) included; the first one's name into first. */
static size_t entries(const char *dir, char *first, size_t cap)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n++ == 0 && first != NULL)
            snprintf(first, cap, "%s", de->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* Complete backups in url. */
static size_t complete_backups(const char *url)
{
    struct cairn_err err;
    struct cairn_storage *st;
    struct cairn_backup_list l = {0};
    size_t n = 0;
    if (cairn_storage_open(url, &st, &err) != CAIRN_OK)
        return 0;
    if (cairn_storage_list(st, &l, &err) == CAIRN_OK)
        for (size_t i = 0; i < l.count; i++)
            n += l.items[i].status == CAIRN_BACKUP_COMPLETE;
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    return n;
}

/* ---- a data directory served by an in-process snapshot server, and a storage URL ---- */

struct fixture {
    char *data, *url;
    const char *addr; /* the server's HOST:PORT */
    struct cairn_influx_provider prov;
    struct cairn_influx_server *srv;
    pthread_t th;
};

/* A new location is a repository before its first backup: cairn init --no-encryption URL. */
static void init_plain(const char *url)
{
    struct cairn_err err;
    struct cairn_storage *st;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_repo_init_opts io = {.no_encryption = 1};
    CHECK_OK(cairn_repo_init(st, &io, NULL, NULL, &err), &err);
    cairn_storage_free(st);
}

static void *run_server(void *arg)
{
    struct cairn_err err;
    cairn_influx_server_run(arg, &err);
    return NULL;
}

/* Two shards of "db" written long ago, and one of _internal, served; storage in "store". */
static int fixture_start(struct fixture *f)
{
    struct cairn_err err;
    f->data = path_join(test_tmpdir(), "data");
    f->url = xasprintf("file://%s/store", test_tmpdir());
    init_plain(f->url);
    char *s1 = path_join(f->data, "db/autogen/1"), *s2 = path_join(f->data, "db/week/2"),
         *s3 = path_join(f->data, "_internal/monitor/3");
    put_file(s1, "000000001-000000001.tsm", "tsm one", 1000000000);
    put_file(s2, "000000001-000000001.tsm", "tsm two", 1000000000);
    put_file(s3, "000000001-000000001.tsm", "monitor", 1000000000);
    free(s1);
    free(s2);
    free(s3);
    /* Timeouts only bound a hang: generous, as this may run on a loaded machine. */
    struct cairn_influx_server_opts so = {
        .listen = "127.0.0.1:0", .idle_timeout_ms = 60000, .allow_restore = 1};
    f->srv = NULL;
    CHECK_OK(cairn_influx_dir_provider_new(f->data, NULL, &f->prov, &err), &err);
    CHECK_OK(cairn_influx_server_new(&so, &f->prov, &f->srv, &err), &err);
    if (f->srv == NULL) {
        free(f->data);
        free(f->url);
        return -1;
    }
    f->addr = cairn_influx_server_address(f->srv);
    pthread_create(&f->th, NULL, run_server, f->srv);
    return 0;
}

static void fixture_stop(struct fixture *f)
{
    cairn_influx_server_stop(f->srv);
    pthread_join(f->th, NULL);
    cairn_influx_server_free(f->srv);
    free(f->data);
    free(f->url);
}

struct counts {
    unsigned calls, meta, shard, apply, verify;
    uint64_t bytes;
};

static void count_progress(void *ctx, const struct cairn_engine_progress *p)
{
    struct counts *c = ctx; /* the engine serialises the calls */
    c->calls++;
    c->bytes += p->bytes;
    c->meta += strcmp(p->phase, "meta") == 0;
    c->shard += strcmp(p->phase, "shard") == 0;
    c->apply += strcmp(p->phase, "apply") == 0;
    c->verify += strcmp(p->phase, "verify") == 0;
}

/* A location with no repository config and no backup takes no backup (exit 2, saying to run
 * cairn init); one that already holds backups without a config (written before repositories
 * existed) stays writable; an initialised one is written. */
TEST(new_location_needs_init)
{
    struct cairn_err err;
    char *src = path_join(test_tmpdir(), "init-src");
    put_file(src, "a.txt", "hello", 1000000000);
    char *fresh = xasprintf("file://%s/fresh", test_tmpdir());
    struct cairn_engine_backup_opts o = {.source = src, .storage_url = fresh, .name = "b1"};
    struct cairn_engine_backup_result res;
    CHECK_ERR(cairn_engine_backup(&o, &res, &err), CAIRN_E_INVALID, &err,
              "is not a repository: run 'cairn init");
    CHECK(strstr(err.msg, "cairn init --no-encryption") != NULL);
    struct stat sb;
    CHECK(stat(fresh + strlen("file://"), &sb) != 0); /* nothing created */

    /* legacy: a backup written below the engine, no config */
    char *legacy = xasprintf("file://%s/legacy", test_tmpdir());
    struct cairn_storage *st;
    CHECK_OK(cairn_storage_open(legacy, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "old", src, NULL, &err), &err);
    struct cairn_repo *repo = (struct cairn_repo *)1;
    CHECK_OK(cairn_storage_repo(st, &repo, &err), &err);
    CHECK(repo == NULL); /* a legacy location: no config */
    cairn_storage_free(st);
    o.storage_url = legacy;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);

    init_plain(fresh); /* after cairn init --no-encryption */
    o.storage_url = fresh;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    free(legacy);
    free(fresh);
    free(src);
}

TEST(options_refused_with_and_without_err)
{
    struct cairn_err err;
    struct cairn_engine_backup_opts b = {0};
    struct cairn_engine_backup_result br;
    CHECK_ERR(cairn_engine_backup(&b, &br, &err), CAIRN_E_INVALID, &err, "needs a source");
    CHECK_EQ_INT(cairn_engine_backup(&b, &br, NULL), CAIRN_E_INVALID);
    b.source = "127.0.0.1:1";
    b.storage_url = "file:///nonexistent";
    b.rp = "autogen";
    CHECK_ERR(cairn_engine_backup(&b, &br, &err), CAIRN_E_INVALID, &err, "needs a database");
    b.rp = NULL;
    b.name = ".hidden";
    CHECK_ERR(cairn_engine_backup(&b, &br, &err), CAIRN_E_INVALID, &err, "invalid backup name");

    struct cairn_engine_restore_opts r = {.storage_url = "file:///x", .name = "n"};
    struct cairn_engine_restore_result rr;
    CHECK_ERR(cairn_engine_restore(&r, &rr, &err), CAIRN_E_INVALID, &err, "exactly one target");
    r.target = "127.0.0.1:1";
    r.into_dir = "/tmp";
    CHECK_EQ_INT(cairn_engine_restore(&r, &rr, NULL), CAIRN_E_INVALID);
    r.into_dir = NULL;
    r.newrp = "x";
    CHECK_ERR(cairn_engine_restore(&r, &rr, &err), CAIRN_E_INVALID, &err, "--newrp needs --rp");
}

TEST(service_backup_then_offline_restore)
{
    struct cairn_err err;
    struct fixture f;
    if (fixture_start(&f) != 0)
        return;
    char *into = path_join(test_tmpdir(), "into");
    struct counts bc = {0}, rc = {0};
    struct cairn_engine_backup_opts o = {.source = f.addr,
                                         .storage_url = f.url,
                                         .name = "full",
                                         .parallelism = 2,
                                         .progress = count_progress,
                                         .progress_ctx = &bc};
    struct cairn_engine_backup_result res;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK_EQ_STR(res.name, "full");
    CHECK_EQ_STR(res.parent, "");
    CHECK_EQ_INT(res.shards, 2); /* _internal only when asked for by name */
    CHECK_EQ_INT(res.files, 3);
    CHECK_EQ_INT(res.databases, 1);
    CHECK(bc.meta > 0 && bc.shard > 0);
    CHECK_EQ_INT(bc.bytes, res.bytes); /* every byte stored passed the progress stage */

    struct cairn_engine_restore_opts ro = {.storage_url = f.url,
                                           .name = "full",
                                           .into_dir = into,
                                           .progress = count_progress,
                                           .progress_ctx = &rc};
    struct cairn_engine_restore_result rres;
    CHECK_OK(cairn_engine_restore(&ro, &rres, &err), &err);
    CHECK_EQ_INT(rres.backups, 1);
    CHECK_EQ_INT(rres.shards, 2);
    CHECK_EQ_INT(rres.databases, 1);
    CHECK(rc.verify == 3 && rc.apply > 0);
    CHECK(exists(into, "meta.00"));
    CHECK(exists(into, "db.autogen.00001.00"));
    CHECK(exists(into, "db.week.00002.00"));
    CHECK_EQ_INT(entries(into, NULL, 0), 3); /* no temporary directory left */

    /* Again into the same directory: refused before anything is moved, nothing left over. */
    CHECK_ERR(cairn_engine_restore(&ro, &rres, &err), CAIRN_E_EXISTS, &err, "already exists");
    CHECK_EQ_INT(entries(into, NULL, 0), 3);
    /* --newdb needs an online restore. */
    ro.db = "db";
    ro.newdb = "db2";
    CHECK_ERR(cairn_engine_restore(&ro, &rres, &err), CAIRN_E_INVALID, &err, "online restore");

    fixture_stop(&f);
    free(into);
}

TEST(incremental_chain)
{
    struct cairn_err err;
    struct fixture f;
    if (fixture_start(&f) != 0)
        return;
    struct cairn_engine_backup_opts o = {.source = f.addr,
                                         .storage_url = f.url,
                                         .name = "inc",
                                         .has_since = 1,
                                         .since_sec = 1500000000};
    struct cairn_engine_backup_result res;
    /* No parent: refused (err or not), or taken in full when allowed. */
    CHECK_ERR(cairn_engine_backup(&o, &res, &err), CAIRN_E_NOTFOUND, &err, "no parent");
    CHECK_EQ_INT(cairn_engine_backup(&o, &res, NULL), CAIRN_E_NOTFOUND);
    CHECK_EQ_INT(complete_backups(f.url), 0);
    o.name = "base";
    o.full_if_no_parent = 1;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK_EQ_INT(res.full_no_parent, 1);
    CHECK_EQ_STR(res.parent, "");

    /* A file newer than since: the incremental backup names base as its parent. */
    char *s1 = path_join(f.data, "db/autogen/1");
    put_file(s1, "000000002-000000001.tsm", "tsm one, later", 0);
    o.name = "inc";
    o.full_if_no_parent = 0;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK_EQ_STR(res.parent, "base");
    CHECK_EQ_INT(res.full_no_parent, 0);

    char *into = path_join(test_tmpdir(), "into");
    struct cairn_engine_restore_opts ro = {.storage_url = f.url, .name = "inc", .into_dir = into};
    struct cairn_engine_restore_result rres;
    CHECK_OK(cairn_engine_restore(&ro, &rres, &err), &err);
    CHECK_EQ_INT(rres.backups, 2);
    CHECK(exists(into, "meta.00") && exists(into, "meta.01"));
    CHECK(exists(into, "db.autogen.00001.00") && exists(into, "db.autogen.00001.01"));
    /* A database the chain does not hold is "not in this backup", nothing applied. */
    char *into2 = path_join(test_tmpdir(), "into2");
    ro.into_dir = into2;
    ro.db = "nosuchdb";
    CHECK_ERR(cairn_engine_restore(&ro, &rres, &err), CAIRN_E_NOTFOUND, &err, "(it has: db)");
    CHECK(!exists(into2, "meta.00"));

    fixture_stop(&f);
    free(s1);
    free(into);
    free(into2);
}

/* The InfluxDB source is a driver like the others: influxdb://HOST:PORT[/] and a bare
 * HOST:PORT are the same source (MANIFESTs record HOST:PORT, so one is the other's parent),
 * restores go to an influxdb:// target, and a time-bounded backup is nobody's parent. */
TEST(influxdb_driver_urls)
{
    struct cairn_err err;
    struct fixture f;
    if (fixture_start(&f) != 0)
        return;
    char *url = xasprintf("influxdb://%s/", f.addr);
    struct cairn_engine_backup_opts o = {.source = url, .storage_url = f.url, .name = "u1"};
    struct cairn_engine_backup_result res;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK_EQ_INT(res.shards, 2);
    const struct cairn_source_driver *d = cairn_source_driver_find("influxdb");
    CHECK(d != NULL && (d->flags & CAIRN_SOURCE_SELECT) && d->restore_chain != NULL);
    struct cairn_storage *st;
    struct cairn_backup *b;
    CHECK_OK(cairn_storage_open(f.url, &st, &err), &err);
    CHECK_OK(cairn_storage_open_backup(st, "u1", &b, &err), &err);
    CHECK_EQ_STR(cairn_backup_source(b), f.addr);
    CHECK_EQ_STR(cairn_backup_kind(b), "influxdb");
    cairn_backup_free(b);
    /* A time-bounded backup reads the TSM files; these are not: it fails, nothing kept. */
    o.name = "w1";
    o.has_start = 1;
    o.start_sec = 1000000000;
    CHECK_ERR(cairn_engine_backup(&o, &res, &err), CAIRN_E_NOTFOUND, &err, "closed without");
    CHECK_ERR(cairn_storage_open_backup(st, "w1", &b, &err), CAIRN_E_NOTFOUND, &err, "w1");
    cairn_storage_free(st);
    o.has_start = 0;
    o.source = f.addr; /* bare: the same source, so u1 is the parent */
    o.name = "i1";
    o.has_since = 1;
    o.since_sec = 1500000000;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK_EQ_STR(res.parent, "u1");
    struct cairn_engine_restore_opts ro = {
        .storage_url = f.url, .name = "u1", .target = url, .db = "db", .newdb = "db3"};
    struct cairn_engine_restore_result rres;
    CHECK_OK(cairn_engine_restore(&ro, &rres, &err), &err);
    CHECK_EQ_INT(rres.backups, 1);
    CHECK_EQ_INT(rres.databases, 1);
    CHECK_EQ_INT(rres.shards, 2);
    char *into = path_join(test_tmpdir(), "chain");
    struct cairn_engine_restore_opts co = {.storage_url = f.url, .name = "i1", .into_dir = into};
    CHECK_OK(cairn_engine_restore(&co, &rres, &err), &err);
    CHECK_EQ_INT(rres.backups, 2);
    CHECK(exists(into, "meta.00") && exists(into, "meta.01"));
    free(into);
    /* What is not HOST:PORT is refused before anything is taken. */
    const char *bad[] = {
        "influxdb://user:pw@127.0.0.1:1", "influxdb://127.0.0.1:1/db", "influxdb://127.0.0.1:1?x=1",
        "influxdb://127.0.0.1:x",         "influxdb://[::1",           "influxdb://"};
    o.has_since = 0;
    o.name = "bad";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.source = bad[i];
        CHECK_ERR(cairn_engine_backup(&o, &res, &err), CAIRN_E_INVALID, &err, "influxdb://HOST");
        CHECK(strstr(err.msg, ":pw@") == NULL); /* a password never shows */
    }
    fixture_stop(&f);
    free(url);
}

TEST(online_restore_into_the_server)
{
    struct cairn_err err;
    struct fixture f;
    if (fixture_start(&f) != 0)
        return;
    struct cairn_engine_backup_opts o = {
        .source = f.addr, .storage_url = f.url, .db = "db", .rp = "week"};
    struct cairn_engine_backup_result res;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err); /* a default name */
    CHECK(strlen(res.name) > 0 && cairn_backup_name_parse(res.name, NULL, NULL));
    CHECK_EQ_INT(res.shards, 1);

    struct cairn_engine_restore_opts ro = {
        .storage_url = f.url, .name = res.name, .target = f.addr, .db = "db", .newdb = "db2"};
    struct cairn_engine_restore_result rres;
    CHECK_OK(cairn_engine_restore(&ro, &rres, &err), &err);
    CHECK_EQ_INT(rres.shards, 1);
    char *rp = path_join(f.data, "db2/week");
    char shard[64] = "";
    CHECK_EQ_INT(entries(rp, shard, sizeof(shard)), 1);
    char *sd = path_join(rp, shard);
    CHECK(exists(sd, "000000001-000000001.tsm"));
    /* The same again: the server already has db2. */
    CHECK(cairn_engine_restore(&ro, &rres, &err) != CAIRN_OK);

    fixture_stop(&f);
    free(sd);
    free(rp);
}

TEST(cancelled_backup_leaves_nothing_complete)
{
    struct cairn_err err;
    struct fixture f;
    if (fixture_start(&f) != 0)
        return;
    volatile int cancel = 1;
    struct cairn_engine_backup_opts o = {
        .source = f.addr, .storage_url = f.url, .name = "c", .cancel = &cancel};
    struct cairn_engine_backup_result res;
    CHECK_EQ_INT(cairn_engine_backup(&o, &res, &err), CAIRN_E_CANCELLED);
    CHECK_EQ_INT(cairn_engine_backup(&o, &res, NULL), CAIRN_E_CANCELLED);
    CHECK_EQ_INT(complete_backups(f.url), 0);
    fixture_stop(&f);
}

TEST(local_path_backup_and_restore)
{
    struct cairn_err err;
    char *src = path_join(test_tmpdir(), "src");
    char *sub = path_join(src, "sub");
    put_file(src, "a.txt", "alpha", 0);
    put_file(sub, "b.txt", "beta", 0);
    char *url = xasprintf("file://%s/store", test_tmpdir());
    init_plain(url);
    struct cairn_engine_backup_opts o = {.source = src, .storage_url = url, .name = "files"};
    struct cairn_engine_backup_result res;
    o.db = "db";
    CHECK_ERR(cairn_engine_backup(&o, &res, &err), CAIRN_E_INVALID, &err, "local path");
    o.db = NULL;
    CHECK_OK(cairn_engine_backup(&o, &res, &err), &err);
    CHECK(res.files >= 2 && res.bytes >= 9); /* the two files, and how storage lists the tree */

    char *into = path_join(test_tmpdir(), "restored");
    struct cairn_engine_restore_opts ro = {.storage_url = url, .name = "files", .into_dir = into};
    struct cairn_engine_restore_result rres;
    ro.db = "db";
    CHECK_ERR(cairn_engine_restore(&ro, &rres, &err), CAIRN_E_INVALID, &err, "--into DIR only");
    ro.db = NULL;
    CHECK_OK(cairn_engine_restore(&ro, &rres, &err), &err);
    CHECK_EQ_INT(rres.backups, 1);
    CHECK_EQ_INT(rres.bytes, res.bytes);
    char *b = path_join(into, "sub/b.txt");
    uint8_t *got;
    size_t len;
    CHECK_OK(read_file_max(b, 100, &got, &len, &err), &err);
    CHECK_EQ_STR((char *)got, "beta");
    free(got);
    free(b);
    free(into);
    free(url);
    free(sub);
    free(src);
}

TEST(scope_rules)
{
    json_t *all = engine_scope_new(NULL, NULL), *db = engine_scope_new("x", NULL),
           *dbrp = engine_scope_new("x", "y"), *other = engine_scope_new("z", NULL),
           *internal = engine_scope_new("_internal", NULL);
    CHECK(engine_scope_covers(all, all));
    CHECK(engine_scope_covers(all, db));
    CHECK(engine_scope_covers(all, dbrp));
    CHECK(!engine_scope_covers(all, internal)); /* every database but _internal */
    CHECK(engine_scope_covers(db, dbrp));
    CHECK(!engine_scope_covers(dbrp, db));
    CHECK(!engine_scope_covers(db, other));
    CHECK(!engine_scope_covers(db, all));
    CHECK(engine_scope_covers(NULL, NULL));
    CHECK(!engine_scope_covers(NULL, db));
    char *t = engine_identity_text("influxdb", "h:1", db);
    CHECK_EQ_STR(t, "influxdb backup of h:1 (database 'x', all retention policies)");
    free(t);
    t = engine_identity_text("files", "h:/p", NULL);
    CHECK_EQ_STR(t, "files backup of h:/p (no recorded scope)");
    free(t);
    json_decref(all);
    json_decref(db);
    json_decref(dbrp);
    json_decref(other);
    json_decref(internal);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}

/* HOST:PORT is an InfluxDB address even when HOST is also a source scheme (docker-compose
 * names services redis, etcd, vault...); URLs keep their driver. */
TEST(host_port_is_influxdb_whatever_the_host)
{
    char buf[256];
    CHECK_EQ_STR(engine_source_url("redis:8088", buf, sizeof(buf)), "influxdb://redis:8088");
    CHECK_EQ_STR(engine_source_url("etcd:8088", buf, sizeof(buf)), "influxdb://etcd:8088");
    CHECK_EQ_STR(engine_source_url("exec:8088", buf, sizeof(buf)), "influxdb://exec:8088");
    CHECK_EQ_STR(engine_source_url("127.0.0.1:8088", buf, sizeof(buf)),
                 "influxdb://127.0.0.1:8088");
    CHECK_EQ_STR(engine_source_url("[::1]:8088", buf, sizeof(buf)), "influxdb://[::1]:8088");
    CHECK_EQ_STR(engine_source_url("redis://h:6379", buf, sizeof(buf)), "redis://h:6379");
    CHECK_EQ_STR(engine_source_url("exec:pg_dump -Fc db", buf, sizeof(buf)), "exec:pg_dump -Fc db");
    CHECK_EQ_STR(engine_source_url("exec:sleep 1", buf, sizeof(buf)), "exec:sleep 1");
    CHECK_EQ_STR(engine_source_url("influxdb://h:8088", buf, sizeof(buf)), "influxdb://h:8088");
}
