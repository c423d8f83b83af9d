/* The Consul/Vault core apart from HTTP: the URLs and tokens the drivers accept (nothing is
 * contacted at open), and the archive check stage that runs beside a download, fed the real
 * Vault fixture in pieces of every size (one byte at a time crosses the ring's edge on every
 * byte), damaged, cut, and abandoned midway. The HTTP side: tests/source/test_consul_vault.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/source.h"
#include "common/util.h"
#include "source/hashi/hashi.h"
#include "source/http/http.h"
#include "test.h"

static int open_url(const char *url, struct cairn_err *err)
{
    struct cairn_source *s = NULL;
    int rc = cairn_source_open(url, NULL, &s, err);
    cairn_source_free(s);
    return rc;
}

TEST(urls_and_parameters)
{
    struct cairn_err err;
    unsetenv("CONSUL_HTTP_TOKEN");
    unsetenv("VAULT_TOKEN");
    CHECK_OK(open_url("consul://127.0.0.1", &err), &err);
    CHECK_OK(open_url("consuls://[::1]:8501/?stale&dc=dc-2_a.b", &err), &err);
    CHECK_OK(open_url("consul://h?stale=false", &err), &err);
    CHECK_OK(open_url("vault://h:8200?force=true", &err), &err);
    CHECK_OK(open_url("vaults://h?force=0", &err), &err);
    CHECK_ERR(open_url("consul://h/v1/snapshot", &err), CAIRN_E_INVALID, &err, "no path");
    CHECK_ERR(open_url("consul://h?consistent", &err), CAIRN_E_INVALID, &err,
              "unknown URL parameter 'consistent'");
    CHECK_ERR(open_url("vault://h?dc=x", &err), CAIRN_E_INVALID, &err, "unknown URL parameter");
    CHECK_ERR(open_url("consul://h?dc=a%2Fb", &err), CAIRN_E_INVALID, &err, "datacenter name");
    CHECK_ERR(open_url("consul://h?dc=", &err), CAIRN_E_INVALID, &err, "empty");
    CHECK_ERR(open_url("consul://h?stale=maybe", &err), CAIRN_E_INVALID, &err, "true or false");
    CHECK_ERR(open_url("vault://h?force=yes", &err), CAIRN_E_INVALID, &err, "true or false");
    /* A token given as the user name would be shown: refused, and not repeated. */
    CHECK_ERR(open_url("vault://s.Sekrit@h", &err), CAIRN_E_INVALID, &err, "never as a user name");
    CHECK(strstr(err.msg, "Sekrit") == NULL);
}

TEST(tokens)
{
    struct cairn_err err;
    struct cairn_source *s = NULL;
    CHECK_OK(cairn_source_open("consul://:tok%40en@h:8500?stale", NULL, &s, &err), &err);
    CHECK_EQ_STR(cairn_source_url(s), "consul://:***@h:8500?stale");
    cairn_source_free(s);
    setenv("VAULT_TOKEN", "a\nX-Evil: 1", 1);
    CHECK_ERR(open_url("vault://h", &err), CAIRN_E_INVALID, &err, "control character");
    CHECK(strstr(err.msg, "Evil") == NULL);
    /* The URL's token comes first: the environment's is not even looked at. */
    CHECK_OK(open_url("vault://:good@h", &err), &err);
    unsetenv("VAULT_TOKEN");
    /* A password file must be private. */
    char *pw = path_join(test_tmpdir(), "token");
    FILE *f = fopen(pw, "w");
    CHECK(f != NULL);
    fputs("s.tok\n", f);
    fclose(f);
    chmod(pw, 0644);
    struct cairn_source_opts o = {.password_file = pw};
    CHECK_ERR(cairn_source_open("vault://h", &o, &s, &err), CAIRN_E_INVALID, &err, "chmod 600");
    chmod(pw, 0600);
    CHECK_OK(cairn_source_open("vault://h", &o, &s, &err), &err);
    cairn_source_free(s);
    free(pw);
}

static uint8_t *load(const char *name, size_t *len)
{
    const char *shared = test_shared_dir();
    if (shared == NULL)
        return NULL;
    char *dir = path_join(shared, "testdata/peer-snapshots");
    char *p = path_join(dir, name);
    uint8_t *data = NULL;
    struct cairn_err err;
    if (read_file_max(p, 1 << 20, &data, len, &err) != CAIRN_OK)
        data = NULL;
    free(p);
    free(dir);
    return data;
}

/* Feed data in pieces of step bytes; the check's verdict at the first failing write or at
 * close. stored: what reached the next stage. */
static int feed(const uint8_t *data, size_t len, size_t step, int consul, struct cairn_writer **m,
                struct cairn_snapshot_info *info, struct cairn_err *err)
{
    struct cairn_snapshot_read_opts ro = {.three_members = consul};
    *m = cairn_mem_writer_new(4u << 20);
    struct cairn_writer *c = hashi_check_new(cairn_writer_borrow(*m), &ro, "test stream");
    int rc = CAIRN_OK;
    for (size_t off = 0; off < len && rc == CAIRN_OK; off += step)
        rc = cairn_writer_write(c, data + off, len - off < step ? len - off : step, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(c, err);
    if (rc == CAIRN_OK && info != NULL) {
        const struct cairn_snapshot_info *in = hashi_check_info(c);
        info->meta.index = in->meta.index;
        info->meta.term = in->meta.term;
        info->sealed_present = in->sealed_present;
    }
    cairn_writer_free(c);
    return rc;
}

TEST(check_stage)
{
    size_t len = 0;
    uint8_t *snap = load("vault-test-fixture.snap", &len);
    if (snap == NULL) {
        test_skip("no ../shared/testdata/peer-snapshots/vault-test-fixture.snap");
        return;
    }
    struct cairn_err err;
    struct cairn_writer *m = NULL;
    static const size_t steps[] = {1, 7, 512, 4096, 1 << 20};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct cairn_snapshot_info info = {0};
        CHECK_OK(feed(snap, len, steps[i], 0, &m, &info, &err), &err);
        size_t got = 0;
        const uint8_t *stored = cairn_mem_writer_data(m, &got);
        CHECK(got == len && memcmp(stored, snap, len) == 0);
        CHECK(info.meta.index == 38 && info.meta.term == 3 && info.sealed_present);
        cairn_writer_free(m);
    }
    /* Consul's rules refuse Vault's fourth member. */
    CHECK_ERR(feed(snap, len, 4096, 1, &m, NULL, &err), CAIRN_E_CORRUPT, &err,
              "unexpected file \"SHA256SUMS.sealed\"");
    CHECK(strstr(err.msg, "test stream: not a valid snapshot archive") != NULL);
    cairn_writer_free(m);
    /* Cut anywhere, or a byte flipped in the compressed stream: refused. */
    static const size_t cuts[] = {0, 1, 9, 10, 4000, 16000, 16537};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        CHECK_ERR(feed(snap, cuts[i], 512, 0, &m, NULL, &err), CAIRN_E_CORRUPT, &err,
                  "not a valid snapshot archive");
        cairn_writer_free(m);
    }
    for (size_t at = 12; at < len - 8; at += 997) {
        snap[at] ^= 0x01;
        int rc = feed(snap, len, 300, 0, &m, NULL, &err);
        CHECK(rc == CAIRN_E_CORRUPT);
        if (rc != CAIRN_E_CORRUPT)
            fprintf(stderr, "flip at %zu: rc %d\n", at, rc);
        cairn_writer_free(m);
        snap[at] ^= 0x01;
    }
    /* Bytes after the archive's end. */
    uint8_t *more = xmalloc(len + 5);
    memcpy(more, snap, len);
    memcpy(more + len, "junk!", 5);
    CHECK_ERR(feed(more, len + 5, 4096, 0, &m, NULL, &err), CAIRN_E_CORRUPT, &err,
              "not a valid snapshot archive");
    cairn_writer_free(m);
    free(more);
    /* Abandoned midway (the download failed): freeing stops the reader, nothing hangs. */
    struct cairn_snapshot_read_opts ro = {0};
    struct cairn_writer *c = hashi_check_new(cairn_discard_writer_new(), &ro, "abandoned");
    CHECK_OK(cairn_writer_write(c, snap, len / 2, &err), &err);
    cairn_writer_free(c);
    free(snap);
}

TEST(server_messages)
{
    char out[240];
    const char *vault = "{\"errors\":[\"permission denied\",\"second\"]}";
    http_error_text(vault, strlen(vault), out, sizeof(out));
    CHECK_EQ_STR(out, "permission denied; second");
    const char *consul = "No cluster leader\nmore lines";
    http_error_text(consul, strlen(consul), out, sizeof(out));
    CHECK_EQ_STR(out, "No cluster leader");
    /* A hostile body: escaped (no terminal control reaches a log) and capped. */
    char evil[4000];
    memset(evil, 'A', sizeof(evil));
    memcpy(evil, "\x1b[2Jgone", 8);
    http_error_text(evil, sizeof(evil), out, sizeof(out));
    CHECK(strchr(out, 0x1b) == NULL && strstr(out, "\\x1b[2Jgone") != NULL);
    CHECK(strlen(out) < sizeof(out));
    struct cairn_err err;
    CHECK_ERR(http_status_error(403, vault, strlen(vault), "what", &err), CAIRN_E_DENIED, &err,
              "what: HTTP 403, token rejected");
    CHECK_ERR(http_status_error(401, "", 0, "what", &err), CAIRN_E_DENIED, &err, "HTTP 401");
    CHECK_ERR(http_status_error(500, consul, strlen(consul), "what", &err), CAIRN_E_NETWORK, &err,
              "HTTP 500, server error: \"No cluster leader\"");
    CHECK_ERR(http_status_error(429, "", 0, "what", &err), CAIRN_E_NETWORK, &err, "rate limited");
    CHECK_ERR(http_status_error(404, "", 0, "what", &err), CAIRN_E_PROTOCOL, &err, "HTTP 404");
    CHECK(cairn_exit_code(CAIRN_E_DENIED) == CAIRN_EXIT_DENIED);
    CHECK(cairn_exit_code(CAIRN_E_NETWORK) == CAIRN_EXIT_NETWORK);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
