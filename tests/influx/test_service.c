/* Unit tests of the snapshot request codec, the meta.proto subset and an in-process server
 * with the directory provider talking to the client library. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>

#include "cairn/influx.h"
#include "common/util.h"
#include "influx/internal.h"
#include "test.h"

static int decode(const char *json, struct cairn_influx_request *req, struct cairn_err *err)
{
    cairn_influx_request_clear(req);
    cairn_influx_request_init(req);
    return cairn_influx_request_decode(json, strlen(json), req, err);
}

TEST(request_decode_go_semantics)
{
    struct cairn_influx_request req;
    struct cairn_err err;
    cairn_influx_request_init(&req);
    CHECK_OK(decode("{\"type\":4,\"BACKUPDATABASE\":\"db\",\"shardId\":7,\"Unknown\":[1,{}],"
                    "\"Since\":\"2020-09-13T12:26:40.5+02:00\",\"RestoreDatabase\":null}",
                    &req, &err),
             &err);
    CHECK_EQ_INT(req.type, 4);
    CHECK_EQ_STR(req.backup_db, "db");
    CHECK_EQ_STR(req.restore_db, "");
    CHECK_EQ_INT(req.shard_id, 7);
    CHECK_EQ_INT(req.since.sec, 1600000000 - 7200);
    CHECK_EQ_INT(req.since.nsec, 500000000);
    CHECK_EQ_INT(req.export_start.sec, CAIRN_INFLUX_ZERO_TIME);
    CHECK_ERR(decode("{\"Since\":\"\"}", &req, &err), CAIRN_E_PROTOCOL, &err, "parsing time");
    CHECK_ERR(decode("{\"Type\":300}", &req, &err), CAIRN_E_PROTOCOL, &err, "number");
    CHECK_ERR(decode("{\"ShardID\":\"1\"}", &req, &err), CAIRN_E_PROTOCOL, &err,
              "cannot unmarshal string");
    CHECK_ERR(decode("{\"Type\":1.5}", &req, &err), CAIRN_E_PROTOCOL, &err, "number");
    CHECK_ERR(decode("[1]", &req, &err), CAIRN_E_PROTOCOL, &err, "array");
    cairn_influx_request_clear(&req);
}

TEST(request_scan_and_encode)
{
    size_t end = 0;
    const char *s = " {\"a\":\"}{\\\"\",\"b\":[{}]}\nrest";
    CHECK_EQ_INT(cairn_influx_json_scan((const uint8_t *)s, strlen(s), &end), 1);
    CHECK_EQ_INT(end, strlen(s) - 5);
    CHECK_EQ_INT(cairn_influx_json_scan((const uint8_t *)"{\"a\":", 5, &end), 0);
    CHECK_EQ_INT(cairn_influx_json_scan((const uint8_t *)"x", 1, &end), CAIRN_E_PROTOCOL);

    /* The exact request `influxd backup` sends (spec, section 2). */
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    free(req.backup_db);
    free(req.backup_rp);
    req.backup_db = xstrdup("mydb");
    req.backup_rp = xstrdup("autogen");
    req.shard_id = 1;
    size_t len;
    char *json = cairn_influx_request_encode(&req, &len);
    CHECK_EQ_STR(json, "{\"Type\":0,\"BackupDatabase\":\"mydb\",\"RestoreDatabase\":\"\","
                       "\"BackupRetentionPolicy\":\"autogen\",\"RestoreRetentionPolicy\":\"\","
                       "\"ShardID\":1,\"Since\":\"0001-01-01T00:00:00Z\",\"ExportStart\":"
                       "\"0001-01-01T00:00:00Z\",\"ExportEnd\":\"0001-01-01T00:00:00Z\","
                       "\"UploadSize\":0}\n");
    free(json);
    cairn_influx_request_clear(&req);

    struct buf b = {0};
    buf_json_string(&b, "a<b>&\"\\\n\x01\xff", 0);
    CHECK_EQ_STR((char *)b.p, "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\\ufffd\"");
    buf_free(&b);
}

/* A meta blob as influxd 1.6 wrote it for mydb (2 RPs, shards 1-3). */
static struct meta_data sample_meta(void)
{
    struct meta_data m = {0};
    m.index = 6;
    m.max_sg_id = m.max_shard_id = 3;
    m.ndbs = 1;
    m.dbs = xcalloc(1, sizeof(*m.dbs));
    struct meta_db *d = &m.dbs[0];
    d->name = xstrdup("mydb");
    d->default_rp = xstrdup("autogen");
    d->nrps = 2;
    d->rps = xcalloc(2, sizeof(*d->rps));
    uint64_t id = 1;
    for (int i = 0; i < 2; i++) {
        struct meta_rp *r = &d->rps[i];
        r->name = xstrdup(i == 0 ? "autogen" : "short");
        r->replica_n = 1;
        r->nsgs = i == 0 ? 2 : 1;
        r->sgs = xcalloc(r->nsgs, sizeof(*r->sgs));
        for (size_t k = 0; k < r->nsgs; k++) {
            r->sgs[k].id = id;
            r->sgs[k].start = -5; /* negative int64 varints must survive */
            r->sgs[k].nshards = 1;
            r->sgs[k].shards = xcalloc(1, sizeof(struct meta_shard));
            r->sgs[k].shards[0].id = id++;
        }
    }
    return m;
}

TEST(meta_roundtrip_and_import)
{
    struct meta_data m = sample_meta(), back, dst = {0};
    struct buf a = {0}, b = {0};
    struct cairn_err err;
    meta_encode(&m, &a);
    CHECK(a.len > 4 && a.p[0] == 0x08 && a.p[1] == 0x00);
    /* An unknown field (Users = 6) is kept and written back in order. */
    uint8_t user[] = {0x32, 0x03, 0x0a, 0x01, 'u'};
    buf_add(&a, user, sizeof(user));
    CHECK_OK(meta_decode(a.p, a.len, &back, &err), &err);
    CHECK_EQ_INT(back.raw.n, 1);
    CHECK_EQ_INT(back.dbs[0].rps[0].sgs[0].start, -5);
    meta_encode(&back, &b);
    CHECK_EQ_INT(b.len, a.len);
    CHECK(memmem(b.p, b.len, user, sizeof(user)) != NULL);
    CHECK_ERR(meta_decode(a.p, a.len - 3, &dst, &err), CAIRN_E_CORRUPT, &err, "failed to decode");

    /* Import renamed into a store that already has shards up to 10. */
    memset(&dst, 0, sizeof(dst));
    dst.max_shard_id = dst.max_sg_id = 10;
    struct cairn_influx_request req;
    cairn_influx_request_init(&req);
    free(req.backup_db);
    free(req.restore_db);
    req.backup_db = xstrdup("mydb");
    req.restore_db = xstrdup("copy");
    struct cairn_influx_idmap map = {0};
    CHECK_OK(meta_import(&dst, &m, &req, &map, &err), &err);
    CHECK_EQ_INT(map.n, 3);
    CHECK_EQ_INT(cairn_influx_idmap_get(&map, 1), 11);
    CHECK_EQ_INT(cairn_influx_idmap_get(&map, 3), 13);
    CHECK(meta_find_db(&dst, "copy") != NULL);
    cairn_influx_idmap_free(&map);
    CHECK_ERR(meta_import(&dst, &m, &req, &map, &err), CAIRN_E_EXISTS, &err, "already exists");
    CHECK_EQ_INT(map.n, 0);
    cairn_influx_request_clear(&req);
    meta_free(&m);
    meta_free(&back);
    meta_free(&dst);
    buf_free(&a);
    buf_free(&b);
}

static void *run_server(void *arg)
{
    struct cairn_err err;
    cairn_influx_server_run(arg, &err);
    return NULL;
}

static void put_file(const char *dir, const char *name, const char *content)
{
    struct cairn_err err;
    mkdir_p(dir, 0755, &err);
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "wb");
    fputs(content, f);
    fclose(f);
    free(p);
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n; /* hidden temporary files count too */
}

TEST(server_client_roundtrip)
{
    struct cairn_err err;
    char *data = path_join(test_tmpdir(), "data");
    char *s1 = path_join(data, "db/autogen/1");
    put_file(s1, "000000001-000000001.tsm", "tsm one");
    put_file(s1, "000000001-000000001.tombstone", "ts");
    char *s2 = path_join(data, "db/week/2");
    put_file(s2, "000000001-000000001.tsm", "tsm two");

    struct cairn_influx_provider prov;
    CHECK_OK(cairn_influx_dir_provider_new(data, NULL, &prov, &err), &err);
    /* Timeouts only bound a hang (nothing here tests them): generous, as this also runs under
     * TSan on loaded machines. */
    struct cairn_influx_server_opts so = {
        .listen = "127.0.0.1:0", .idle_timeout_ms = 60000, .allow_restore = 1};
    struct cairn_influx_server *srv = NULL;
    CHECK_OK(cairn_influx_server_new(&so, &prov, &srv, &err), &err);
    if (srv == NULL)
        return;
    pthread_t th;
    pthread_create(&th, NULL, run_server, srv);
    struct cairn_influx_client c = {cairn_influx_server_address(srv), 60000, 60000};

    struct cairn_influx_shard_ref *refs;
    size_t n;
    CHECK_OK(cairn_influx_shard_list(&c, NULL, NULL, &refs, &n, &err), &err);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_STR(refs[1].rp, "week");
        CHECK_EQ_INT(refs[1].id, 2);
    }
    cairn_influx_shard_refs_free(refs, n);
    CHECK_ERR(cairn_influx_shard_list(&c, "nope", NULL, &refs, &n, &err), CAIRN_E_NOTFOUND, &err,
              "database not found");

    struct cairn_writer *mw = cairn_mem_writer_new(1 << 20);
    uint64_t bytes = 0;
    CHECK_OK(cairn_influx_metastore_backup(&c, mw, &bytes, &err), &err);
    size_t mlen, blen;
    const uint8_t *env = cairn_mem_writer_data(mw, &mlen), *blob;
    CHECK_OK(cairn_influx_meta_envelope_blob(env, mlen, &blob, &blen, &err), &err);

    struct cairn_writer *tw = cairn_mem_writer_new(1 << 20);
    CHECK_OK(cairn_influx_shard_backup(&c, "db", "autogen", 1, NULL, tw, &bytes, &err), &err);
    CHECK_EQ_INT(bytes, 512 * 2 + 512 * 2 + 1024);
    struct cairn_influx_time future = {32503680000LL, 0};
    struct cairn_writer *ew = cairn_mem_writer_new(1 << 20);
    CHECK_OK(cairn_influx_shard_backup(&c, "db", "autogen", 1, &future, ew, &bytes, &err), &err);
    CHECK_EQ_INT(bytes, 1024);
    CHECK_ERR(cairn_influx_shard_backup(&c, "db", "autogen", 9, NULL, ew, &bytes, &err),
              CAIRN_E_NOTFOUND, &err, "missing shard");

    /* Restore db as db2: new shard IDs 3 and 4; upload shard 1's tar to its new ID. */
    struct cairn_influx_idmap map;
    CHECK_OK(cairn_influx_meta_upload(&c, "db", "db2", NULL, NULL, blob, blen, &map, &err), &err);
    CHECK_EQ_INT(map.n, 2);
    uint64_t nid = cairn_influx_idmap_get(&map, 1);
    CHECK_EQ_INT(nid, 3);
    struct cairn_influx_idmap map2;
    CHECK_ERR(cairn_influx_meta_upload(&c, "db", "db2", NULL, NULL, blob, blen, &map2, &err),
              CAIRN_E_EXISTS, &err, "already exist");
    size_t tlen;
    const uint8_t *tar = cairn_mem_writer_data(tw, &tlen);
    struct cairn_reader *r = cairn_mem_reader_new(tar, tlen);
    CHECK_OK(cairn_influx_shard_upload(&c, nid, "db2", NULL, r, &bytes, &err), &err);
    cairn_reader_free(r);
    char *ns = path_join(data, "db2/autogen/3");
    CHECK_EQ_INT(count_entries(ns), 2);
    uint8_t *got;
    size_t glen;
    char *f = path_join(ns, "000000001-000000001.tsm");
    CHECK_OK(read_file_max(f, 100, &got, &glen, &err), &err);
    CHECK_EQ_STR((char *)got, "tsm one");
    free(got);
    free(f);

    /* A truncated tar installs nothing and leaves no temporary files. */
    r = cairn_mem_reader_new(tar, 700);
    uint64_t nid2 = cairn_influx_idmap_get(&map, 2);
    CHECK_EQ_INT(nid2, 4);
    CHECK(cairn_influx_shard_upload(&c, nid2, "db2", NULL, r, &bytes, &err) != CAIRN_OK);
    cairn_reader_free(r);
    char *ns2 = path_join(data, "db2/week/4");
    CHECK_EQ_INT(count_entries(ns2), 0);

    cairn_influx_idmap_free(&map);
    cairn_writer_free(mw);
    cairn_writer_free(tw);
    cairn_writer_free(ew);
    cairn_influx_server_stop(srv);
    pthread_join(th, NULL);
    cairn_influx_server_free(srv);
    free(ns);
    free(ns2);
    free(s1);
    free(s2);
    free(data);
}

static void count_free(void *ctx)
{
    ++*(int *)ctx;
}

/* A constructor that fails returns its code without an err, leaves *out NULL, and (as the
 * header says) still frees the provider it was given. */
TEST(server_new_failure_without_err)
{
    int freed = 0;
    struct cairn_influx_provider prov = {0};
    prov.ctx = &freed;
    prov.free = count_free;
    struct cairn_influx_server_opts so = {.listen = "no-port-here"};
    struct cairn_influx_server *srv = (struct cairn_influx_server *)&srv;
    CHECK_EQ_INT(cairn_influx_server_new(&so, &prov, &srv, NULL), CAIRN_E_INVALID);
    CHECK(srv == NULL);
    CHECK_EQ_INT(freed, 1);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
