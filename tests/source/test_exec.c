/* The source registry (schemes, credential redaction) and the exec source: a command's stdout
 * becomes a complete backup only when the command succeeds; restore verifies, then feeds a
 * command or writes a directory. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cairn/source.h"
#include "common/util.h"
#include "source/internal.h"
#include "test.h"

TEST(url_parse_for_network_sources)
{
    struct cairn_err err;
    struct source_url u;
    CHECK_OK(
        source_url_parse("redis://app:p%40ss:w@db1.example:6380/2?x=1&y=a%20b", 6379, &u, &err),
        &err);
    CHECK_EQ_STR(u.scheme, "redis");
    CHECK_EQ_STR(u.user, "app");
    CHECK_EQ_STR(u.password, "p@ss:w");
    CHECK_EQ_STR(u.host, "db1.example");
    CHECK_EQ_INT(u.port, 6380);
    CHECK_EQ_STR(u.path, "/2");
    char *y = source_url_param(&u, "y");
    CHECK_EQ_STR(y, "a b");
    free(y);
    CHECK(source_url_param(&u, "z") == NULL);
    source_url_free(&u);
    CHECK_OK(source_url_parse("etcd://[::1]", 2379, &u, &err), &err);
    CHECK_EQ_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 2379);
    CHECK(u.user == NULL && u.password == NULL);
    source_url_free(&u);
    CHECK_OK(source_url_parse("redis://:only@h", 6379, &u, &err), &err);
    CHECK(u.user == NULL);
    CHECK_EQ_STR(u.password, "only");
    source_url_free(&u);
    /* Errors name the URL redacted, never the password. */
    CHECK_ERR(source_url_parse("redis://:secret@h:99999", 6379, &u, &err), CAIRN_E_INVALID, &err,
              "port out of range");
    CHECK(strstr(err.msg, "secret") == NULL && strstr(err.msg, ":***@") != NULL);
    CHECK_ERR(source_url_parse("redis://:s%zz@h", 6379, &u, &err), CAIRN_E_INVALID, &err,
              "percent-escape");
    CHECK_ERR(source_url_parse("redis://h:", 6379, &u, &err), CAIRN_E_INVALID, &err, "bad port");
    CHECK_ERR(source_url_parse("redis://[::1", 6379, &u, &err), CAIRN_E_INVALID, &err, "unclosed");
    CHECK_ERR(source_url_parse("redis://:pw@", 6379, &u, &err), CAIRN_E_INVALID, &err, "no host");
    CHECK_ERR(source_url_parse("h:6379", 6379, &u, &err), CAIRN_E_INVALID, &err, "SCHEME://");
}

TEST(password_file_must_be_private)
{
    struct cairn_err err;
    char *p = path_join(test_tmpdir(), "pw");
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    fputs("s3cret\nignored\n", f);
    fclose(f);
    chmod(p, 0640);
    char *pw = NULL;
    CHECK_ERR(source_read_secret(p, &pw, &err), CAIRN_E_INVALID, &err, "chmod 600");
    chmod(p, 0600);
    CHECK_OK(source_read_secret(p, &pw, &err), &err);
    CHECK_EQ_STR(pw, "s3cret");
    free(pw);
    free(p);
}

TEST(redact_hides_passwords_and_secret_queries)
{
    char out[256];
    CHECK_OK(cairn_source_redact("redis://:hunter2@127.0.0.1:6379/0", out, sizeof(out)), NULL);
    CHECK_EQ_STR(out, "redis://:***@127.0.0.1:6379/0");
    CHECK_OK(cairn_source_redact("postgresql://u:p@ss@h/db?sslmode=require&password=x", out,
                                 sizeof(out)),
             NULL);
    CHECK_EQ_STR(out, "postgresql://u:***@h/db?sslmode=require&password=***");
    CHECK_OK(cairn_source_redact("etcd://user@h:2379", out, sizeof(out)), NULL);
    CHECK_EQ_STR(out, "etcd://user@h:2379");
    CHECK_OK(cairn_source_redact("vault://h:8200?token=s.abc", out, sizeof(out)), NULL);
    CHECK_EQ_STR(out, "vault://h:8200?token=***");
    CHECK_EQ_INT(cairn_source_redact("redis://:pw@h", out, 5), CAIRN_E_INVALID);
}

TEST(open_needs_a_known_scheme)
{
    struct cairn_err err;
    struct cairn_source *s = NULL;
    CHECK_ERR(cairn_source_open("localhost:8088", NULL, &s, &err), CAIRN_E_UNSUPPORTED, &err,
              "no driver");
    CHECK_ERR(cairn_source_open("/var/lib/x", NULL, &s, &err), CAIRN_E_INVALID, &err, "no scheme");
    CHECK_ERR(cairn_source_open("nosuch://:secret@h", NULL, &s, &err), CAIRN_E_UNSUPPORTED, &err,
              "nosuch://:***@h");
    CHECK(strstr(err.msg, "secret") == NULL);
    CHECK_ERR(cairn_source_open("exec:", NULL, &s, &err), CAIRN_E_INVALID, &err, "command");
    CHECK(s == NULL);
    CHECK(cairn_source_driver_find("exec") != NULL);
    /* One scheme rule for the registry and the engine: HOST:PORT and paths are not sources. */
    CHECK(cairn_source_driver_for("exec:true") == cairn_source_driver_find("exec"));
    CHECK(cairn_source_driver_for("etcds://h:2379") == cairn_source_driver_find("etcds"));
    CHECK(cairn_source_driver_for("db1.example:8088") == NULL);
    CHECK(cairn_source_driver_for("127.0.0.1:8088") == NULL);
    CHECK(cairn_source_driver_for("/var/lib/x") == NULL);
    static const struct cairn_source_driver dup = {.scheme = "exec"};
    CHECK_EQ_INT(cairn_source_register(&dup, NULL), CAIRN_E_INVALID); /* no operations */
}

static struct cairn_storage *store(const char *sub)
{
    char *url = xasprintf("file://%s/%s", test_tmpdir(), sub);
    struct cairn_storage *st = NULL;
    struct cairn_err err;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    free(url);
    return st;
}

/* Back up src into st as name the way the engine does: start, source, end or abort. */
static int backup(struct cairn_storage *st, const char *name, const char *url,
                  const struct cairn_source_opts *o, struct cairn_err *err)
{
    struct cairn_source *s = NULL;
    int rc = cairn_source_open(url, o, &s, err);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_backup *b = NULL;
    rc = cairn_storage_start(st, name, &b, err);
    if (rc == CAIRN_OK) {
        rc = cairn_source_backup(s, b, err);
        if (rc == CAIRN_OK)
            rc = cairn_backup_end(b, err);
        else
            cairn_backup_abort(b, NULL);
    }
    cairn_backup_free(b);
    cairn_source_free(s);
    return rc;
}

static enum cairn_backup_status status_of(struct cairn_storage *st, const char *name)
{
    struct cairn_backup_list l = {0};
    enum cairn_backup_status s = (enum cairn_backup_status) - 1;
    if (cairn_storage_list(st, &l, NULL) == CAIRN_OK)
        for (size_t i = 0; i < l.count; i++)
            if (strcmp(l.items[i].name, name) == 0)
                s = l.items[i].status;
    cairn_backup_list_free(&l);
    return s;
}

TEST(exec_stores_stdout_and_restores_it)
{
    signal(SIGPIPE, SIG_IGN);
    struct cairn_err err;
    struct cairn_storage *st = store("exec-ok");
    /* 3 MiB through a pipeline, with stderr on the side. */
    CHECK_OK(backup(st, "b1",
                    "exec:echo starting >&2; head -c 3145728 /dev/zero | tr '\\0' x; echo done >&2",
                    NULL, &err),
             &err);
    CHECK_EQ_INT(status_of(st, "b1"), CAIRN_BACKUP_COMPLETE);

    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b1", &b, &err), &err);
    CHECK_EQ_STR(b ? cairn_backup_kind(b) : NULL, "exec");
    /* Restore into a directory, and through a restore command that counts the bytes. */
    char *dir = path_join(test_tmpdir(), "exec-into");
    struct cairn_source *s = NULL;
    char *cnt = path_join(test_tmpdir(), "exec-count");
    char *cmd = xasprintf("wc -c > %s", cnt);
    struct cairn_source_opts o = {.restore_command = cmd};
    CHECK_OK(cairn_source_open("exec:true", &o, &s, &err), &err);
    CHECK_OK(cairn_source_restore(s, b, dir, &err), &err);
    CHECK_OK(cairn_source_restore(s, b, NULL, &err), &err);
    char *snap = path_join(dir, "snapshot");
    struct stat sb;
    CHECK(stat(snap, &sb) == 0 && sb.st_size == 3145728);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_OK(read_file_max(cnt, 64, &data, &len, &err), &err);
    CHECK(data != NULL && atol((char *)data) == 3145728);
    free(data);
    cairn_source_free(s);
    cairn_backup_free(b);
    free(snap);
    free(dir);
    free(cnt);
    free(cmd);
    cairn_storage_free(st);
}

TEST(exec_failure_never_completes_and_spares_earlier_backups)
{
    struct cairn_err err;
    struct cairn_storage *st = store("exec-fail");
    CHECK_OK(backup(st, "good", "exec:echo hello", NULL, &err), &err);
    CHECK_ERR(backup(st, "bad", "exec:echo partial; exit 3", NULL, &err), CAIRN_E_IO, &err,
              "exited with status 3");
    CHECK_ERR(backup(st, "sig", "exec:echo partial; kill -TERM $$", NULL, &err), CAIRN_E_IO, &err,
              "signal 15");
    /* A timeout kills the whole pipeline (its process group), not only the shell. */
    struct cairn_source_opts o = {.timeout_ms = 300};
    CHECK_ERR(backup(st, "slow", "exec:echo partial; sleep 600 | cat", &o, &err), CAIRN_E_TIMEOUT,
              &err, "took longer than 300 ms");
    volatile int cancel = 1;
    struct cairn_source_opts oc = {.cancel = &cancel};
    CHECK_ERR(backup(st, "cancelled", "exec:sleep 600", &oc, &err), CAIRN_E_CANCELLED, &err,
              "cancelled");
    CHECK_EQ_INT(status_of(st, "good"), CAIRN_BACKUP_COMPLETE);
    CHECK_EQ_INT((int)status_of(st, "bad"), -1); /* aborted: nothing left */
    CHECK_EQ_INT((int)status_of(st, "slow"), -1);

    /* Without a restore command in the options, restoring to exec:CMD runs CMD. */
    struct cairn_backup *b = NULL;
    struct cairn_source *s = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "good", &b, &err), &err);
    char *got = path_join(test_tmpdir(), "exec-got");
    char *url = xasprintf("exec:cat > %s", got);
    CHECK_OK(cairn_source_open(url, NULL, &s, &err), &err);
    CHECK_OK(cairn_source_restore(s, b, NULL, &err), &err);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_OK(read_file_max(got, 64, &data, &len, &err), &err);
    CHECK(len == 6 && memcmp(data, "hello\n", 6) == 0);
    free(data);
    free(url);
    free(got);
    cairn_source_free(s);
    /* A restore command that fails is reported. */
    struct cairn_source_opts ro = {.restore_command = "cat >/dev/null; exit 4"};
    CHECK_OK(cairn_source_open("exec:true", &ro, &s, &err), &err);
    CHECK_ERR(cairn_source_restore(s, b, NULL, &err), CAIRN_E_IO, &err, "status 4");
    cairn_source_free(s);
    cairn_backup_free(b);
    cairn_storage_free(st);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}

/* A driver that waits for its cancel flag and nothing else: only the handle's whole-run
 * timeout (or the caller's cancel, which the handle passes on) ends it. */
struct waiter {
    const volatile int *cancel;
};
static int waiter_open(const char *url, const struct cairn_source_opts *o, void **state,
                       struct cairn_err *err)
{
    (void)url;
    (void)err;
    struct waiter *w = xcalloc(1, sizeof(*w));
    w->cancel = o->cancel;
    *state = w;
    return CAIRN_OK;
}
static int waiter_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    (void)b;
    struct waiter *w = state;
    while (w->cancel == NULL || __atomic_load_n(w->cancel, __ATOMIC_RELAXED) == 0)
        usleep(1000);
    return cairn_err_set(err, CAIRN_E_CANCELLED, "waiter: cancelled");
}
static void waiter_free(void *state)
{
    free(state);
}

TEST(whole_run_timeout_applies_to_every_driver)
{
    static const struct cairn_source_driver drv = {
        .scheme = "waiter", .open = waiter_open, .backup = waiter_backup, .free = waiter_free};
    struct cairn_err err;
    CHECK_OK(cairn_source_register(&drv, &err), &err);
    struct cairn_storage *st = store("timeout");
    struct cairn_source_opts o = {.timeout_ms = 200};
    CHECK_ERR(backup(st, "w1", "waiter:x", &o, &err), CAIRN_E_TIMEOUT, &err,
              "snapshot took longer than 200 ms");
    CHECK_EQ_INT((int)status_of(st, "w1"), -1);
    /* With a timeout, the caller's cancel still reaches the driver (through the handle). */
    volatile int cancel = 1;
    struct cairn_source_opts oc = {.timeout_ms = 3600000, .cancel = &cancel};
    CHECK_ERR(backup(st, "w2", "waiter:x", &oc, &err), CAIRN_E_CANCELLED, &err, "cancelled");
    cairn_storage_free(st);
}
