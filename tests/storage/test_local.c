/* Prune policy unit tests and local-path backup/restore (tree, modes, special files, restore
 * confinement against hostile MANIFESTs). */
#define _GNU_SOURCE
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* ---- prune ---- */

#define DAY 86400

struct fake {
    const char *name;
    enum cairn_backup_status st;
    int64_t created;
};

static void fake_list(struct cairn_backup_list *l, const struct fake *f, size_t n)
{
    l->count = n;
    l->items = xcalloc(n, sizeof(*l->items));
    for (size_t i = 0; i < n; i++) {
        l->items[i].name = (char *)f[i].name;
        l->items[i].status = f[i].st;
        l->items[i].created = f[i].st == CAIRN_BACKUP_COMPLETE ? f[i].created : -1;
    }
}

/* out gets one character per backup ('x' removed, '.' kept); outsz bounds it. */
static void plan_str(const struct cairn_backup_list *l, const struct cairn_prune_policy *p,
                     char *out, size_t outsz)
{
    uint8_t rm[64];
    const size_t count = l->count;
    out[0] = '\0';
    if (count >= outsz || count > sizeof(rm)) {
        test_fail(__FILE__, __LINE__, "plan_str: %zu backups do not fit", count);
        return;
    }
    size_t n = cairn_prune_plan(l, p, rm);
    size_t cnt = 0;
    for (size_t i = 0; i < count; i++) {
        out[i] = rm[i] ? 'x' : '.';
        cnt += rm[i];
    }
    out[count] = '\0';
    CHECK_EQ_INT(n, cnt);
}

#define C CAIRN_BACKUP_COMPLETE
#define I CAIRN_BACKUP_INCOMPLETE
#define X CAIRN_BACKUP_CORRUPT

TEST(prune_keep_last_and_incomplete)
{
    const int64_t t0 = 1767225600; /* 2026-01-01 00:00 UTC */
    struct fake f[] = {
        {"a", C, t0},
        {"b", I, 0},
        {"c", C, t0 + DAY},
        {"d", X, 0},
        {"e", C, t0 + 2 * DAY},
        {"f", C, t0 + 3 * DAY},
        {"g", I, 0}, /* newer than the newest complete: may be running */
    };
    struct cairn_backup_list l;
    fake_list(&l, f, 7);
    char s[16];
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 2}, s, sizeof(s));
    CHECK_EQ_STR(s, "xxx....");
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 1}, s, sizeof(s));
    CHECK_EQ_STR(s, "xxx.x..");
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 10}, s, sizeof(s));
    CHECK_EQ_STR(s, ".x.....");
    /* keep_last 0 still keeps the newest complete one. */
    plan_str(&l, &(struct cairn_prune_policy){0}, s, sizeof(s));
    CHECK_EQ_STR(s, "xxx.x..");
    free(l.items);
}

TEST(prune_never_removes_only_complete)
{
    struct fake f[] = {{"a", I, 0}, {"b", C, 1767225600}, {"c", I, 0}};
    struct cairn_backup_list l;
    fake_list(&l, f, 3);
    char s[8];
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 1}, s, sizeof(s));
    CHECK_EQ_STR(s, "x..");
    free(l.items);
    /* No complete backup at all: nothing is removed, not even incomplete ones. */
    struct fake g[] = {{"a", I, 0}, {"b", X, 0}, {"c", I, 0}};
    fake_list(&l, g, 3);
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 1}, s, sizeof(s));
    CHECK_EQ_STR(s, "...");
    free(l.items);
}

TEST(prune_daily_weekly)
{
    const int64_t mon = 1767571200; /* Monday 2026-01-05 00:00 UTC */
    struct fake f[] = {
        {"01", C, mon - 7 * DAY + 3600}, /* previous week, Monday */
        {"02", C, mon - 2 * DAY},        /* previous week, Saturday */
        {"03", C, mon + 3600},           /* Monday 01:00 */
        {"04", C, mon + 7200},           /* Monday 02:00 (newest of Monday) */
        {"05", C, mon + DAY + 100},      /* Tuesday */
        {"06", C, mon + 2 * DAY + 100},  /* Wednesday 1 */
        {"07", C, mon + 2 * DAY + 200},  /* Wednesday 2 (newest overall) */
    };
    struct cairn_backup_list l;
    fake_list(&l, f, 7);
    char s[16];
    /* 3 days: Wednesday(07), Tuesday(05), Monday(04). */
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 1, .keep_daily = 3}, s, sizeof(s));
    CHECK_EQ_STR(s, "xxx..x.");
    /* 2 weeks: this week's newest (07) and last week's newest (02). */
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 1, .keep_weekly = 2}, s, sizeof(s));
    CHECK_EQ_STR(s, "x.xxxx.");
    /* Rules combine as a union: last 2 (07, 06), weeks (07, 02; only two weeks exist). */
    plan_str(&l, &(struct cairn_prune_policy){.keep_last = 2, .keep_daily = 1, .keep_weekly = 3}, s,
             sizeof(s));
    CHECK_EQ_STR(s, "x.xxx..");
    free(l.items);
}

/* ---- local paths ---- */

static void write_file(const char *dir, const char *rel, const char *data, mode_t mode)
{
    char *p = path_join(dir, rel);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(data, f);
        fclose(f);
    }
    chmod(p, mode);
    free(p);
}

static char *slurp(const char *dir, const char *rel)
{
    char *p = path_join(dir, rel);
    uint8_t *d = NULL;
    size_t n;
    if (read_file_max(p, 1 << 20, &d, &n, NULL) != CAIRN_OK)
        d = NULL;
    free(p);
    return (char *)d;
}

TEST(path_backup_restore_tree)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *src = path_join(tmp, "src");
    char *sub = path_join(src, "sub");
    char *deep = path_join(sub, "deep");
    mkdir_p(deep, 0755, NULL);
    chmod(sub, 0750);
    write_file(src, "a.txt", "alpha", 0600);
    write_file(sub, "b.txt", "beta", 0644);
    write_file(deep, "c.bin", "", 0755);
    char *lnk = path_join(src, "link");
    CHECK_EQ_INT(symlink("/etc/passwd", lnk), 0);
    char *fifo = path_join(src, "fifo");
    CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
    char *url = xasprintf("file://%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_path_opts po = {.workers = 3, .file = {.compression = CAIRN_COMPRESS_ZSTD}};
    CHECK_OK(cairn_storage_backup_path(st, "tree", src, &po, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "tree", &b, &err), &err);
    json_t *tree = b ? json_object_get(cairn_backup_meta(b), "tree") : NULL;
    CHECK_EQ_INT(json_array_size(json_object_get(tree, "skipped")), 0);
    /* The three files, and the tree's own file (its entries: 3 files, 2 directories, the
     * symlink and the FIFO). */
    CHECK_EQ_INT(b ? cairn_backup_file_count(b) : 0, 4);
    CHECK(b && cairn_backup_file_find(b, "tree") != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(tree, "count")), 7);
    CHECK_EQ_STR(b ? cairn_backup_kind(b) : NULL, "files");
    CHECK(b && strstr(cairn_backup_source(b), src) != NULL);
    cairn_backup_free(b);
    char *out = path_join(tmp, "out");
    CHECK_OK(cairn_storage_restore_path(st, "tree", out, &po, &err), &err);
    char *s1 = slurp(out, "a.txt"), *s2 = slurp(out, "sub/b.txt");
    char *s3 = slurp(out, "sub/deep/c.bin");
    CHECK(s1 && strcmp(s1, "alpha") == 0);
    CHECK(s2 && strcmp(s2, "beta") == 0);
    CHECK(s3 && s3[0] == '\0');
    free(s1);
    free(s2);
    free(s3);
    struct stat sb;
    char *p = path_join(out, "a.txt");
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    free(p);
    p = path_join(out, "sub");
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0750);
    free(p);
    p = path_join(out, "link");
    char target[64] = "";
    CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode)); /* restored as a link, not followed */
    CHECK(readlink(p, target, sizeof(target) - 1) > 0 && strcmp(target, "/etc/passwd") == 0);
    free(p);
    p = path_join(out, "fifo");
    CHECK(lstat(p, &sb) == 0 && S_ISFIFO(sb.st_mode) && (sb.st_mode & 0777) == 0600);
    free(p);
    /* Restoring again into the now non-empty target is refused. */
    CHECK_ERR(cairn_storage_restore_path(st, "tree", out, &po, &err), CAIRN_E_EXISTS, &err,
              "not empty");
    /* A single regular file. */
    char *single = path_join(src, "a.txt");
    CHECK_OK(cairn_storage_backup_path(st, "one", single, NULL, &err), &err);
    char *out2 = path_join(tmp, "out2");
    CHECK_OK(cairn_storage_restore_path(st, "one", out2, NULL, &err), &err);
    s1 = slurp(out2, "a.txt");
    CHECK(s1 && strcmp(s1, "alpha") == 0);
    free(s1);
    /* A special file as the source is refused clearly; nothing is left behind. */
    CHECK_ERR(cairn_storage_backup_path(st, "bad", fifo, NULL, &err), CAIRN_E_INVALID, &err,
              "FIFO");
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT(l.count, 2);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    free(single);
    free(out2);
    free(out);
    free(url);
    free(lnk);
    free(fifo);
    free(deep);
    free(sub);
    free(src);
}

/* A hostile MANIFEST tree must not make restore write outside the target. */
static void hostile(struct cairn_storage *st, const char *name, const char *path)
{
    struct cairn_err err;
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, name, &b, &err), &err);
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file(b, "f000000", 4, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "evil", 4, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    json_t *meta = json_pack("{s:{s:s, s:s, s:i, s:[{s:s, s:s, s:i, s:s}], s:[]}}", "tree", "root",
                             "x", "type", "dir", "mode", 0755, "entries", "path", path, "type",
                             "file", "mode", 0644, "file", "f000000", "skipped");
    CHECK_OK(cairn_backup_set_meta(b, meta, &err), &err);
    json_decref(meta);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
}

TEST(restore_refuses_escaping_paths)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *url = xasprintf("%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    const char *bad[] = {"../escape", "/etc/escape", "a/../../escape", "a//b", "./x", "a/."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char name[16], out[64];
        snprintf(name, sizeof(name), "h%zu", i);
        hostile(st, name, bad[i]);
        snprintf(out, sizeof(out), "out%zu", i);
        char *target = path_join(tmp, out);
        CHECK_ERR(cairn_storage_restore_path(st, name, target, NULL, &err), CAIRN_E_CORRUPT, &err,
                  "unsafe");
        CHECK(access(target, F_OK) != 0); /* refused before touching the disk */
        free(target);
    }
    char *esc = path_join(tmp, "escape");
    CHECK(access(esc, F_OK) != 0);
    free(esc);
    /* A symlink planted inside the target is not followed. */
    hostile(st, "sym", "link/x");
    char *target = path_join(tmp, "symout");
    mkdir(target, 0700);
    char *outside = path_join(tmp, "outside");
    mkdir(outside, 0700);
    char *lnk = path_join(target, "link");
    CHECK_EQ_INT(symlink(outside, lnk), 0);
    /* "link/x" without a directory "link" in the tree is refused before the target is even
     * looked at (and the target, not empty now, would be refused too)... */
    CHECK_ERR(cairn_storage_restore_path(st, "sym", target, NULL, &err), CAIRN_E_CORRUPT, &err,
              "not a directory of the tree");
    char *x = path_join(outside, "x");
    CHECK(access(x, F_OK) != 0);
    free(x);
    free(lnk);
    free(outside);
    free(target);
    /* Restore needs a read-only, complete handle. */
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "rw", &b, &err), &err);
    CHECK_ERR(cairn_backup_restore_path(b, tmp, NULL, &err), CAIRN_E_INVALID, &err, "read-only");
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(url);
}

static int permission_probe(const char *ro)
{
    struct cairn_err err;
    char *url = xasprintf("file://%s", ro);
    struct cairn_storage *st = NULL;
    struct cairn_backup *b = NULL;
    int ok = cairn_storage_open(url, &st, &err) == CAIRN_OK &&
             cairn_storage_start(st, "x", &b, &err) == CAIRN_E_PERM &&
             strstr(err.msg, "Permission denied") != NULL && strstr(err.msg, ro) != NULL;
    if (!ok)
        fprintf(stderr, "permission probe: %s\n", err.msg);
    cairn_storage_free(st);
    free(url);
    return ok;
}

TEST(file_driver_permission_error)
{
    char *ro = path_join(test_tmpdir(), "ro");
    mkdir(ro, 0500);
    if (geteuid() != 0) {
        CHECK(permission_probe(ro));
    } else {
        /* Root ignores directory modes: probe as nobody in a child. */
        pid_t pid = fork();
        if (pid == 0) {
            if (setgid(65534) != 0 || setuid(65534) != 0)
                _exit(2);
            _exit(permission_probe(ro) ? 0 : 1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
            SKIP("cannot drop privileges to nobody to test permission errors");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    chmod(ro, 0700);
    free(ro);
}

/* Disk full, for the plain file writer and for the pipelined one (large files). */
static void disk_full(int pipeline)
{
    struct cairn_err err;
    char *mnt = path_join(test_tmpdir(), "small");
    mkdir(mnt, 0700);
    char *cmd = xasprintf("mount -t tmpfs -o size=1m tmpfs '%s' 2>/dev/null", mnt);
    if (system(cmd) != 0) {
        free(cmd);
        free(mnt);
        SKIP("cannot mount a 1 MiB tmpfs (needs root/CAP_SYS_ADMIN) to fill a disk");
    }
    free(cmd);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(mnt, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "full", &b, &err), &err);
    size_t n = 3u << 20;
    uint8_t *junk = xcalloc(1, n);
    struct cairn_reader *r = cairn_mem_reader_new(junk, n);
    struct cairn_file_opts fo = {.pipeline = pipeline};
    CHECK_ERR(cairn_backup_put_stream(b, "big", r, (int64_t)n, &fo, &err), CAIRN_E_NOSPACE, &err,
              "No space left on device");
    CHECK(strstr(err.msg, "file 'big'") != NULL);
    cairn_reader_free(r);
    CHECK_ERR(cairn_backup_end(b, &err), CAIRN_E_NOSPACE, &err, "file 'big'");
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK(l.count == 1 && l.items[0].status == CAIRN_BACKUP_INCOMPLETE);
    cairn_backup_list_free(&l);
    CHECK_OK(cairn_backup_abort(b, &err), &err);
    cairn_backup_free(b);
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT(l.count, 0);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    free(junk);
    cmd = xasprintf("umount '%s'", mnt);
    CHECK_EQ_INT(system(cmd), 0);
    free(cmd);
    free(mnt);
}

TEST(file_driver_disk_full)
{
    disk_full(0);
}

TEST(file_driver_disk_full_pipelined)
{
    disk_full(1);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}

TEST(backup_names_make_and_parse)
{
    struct cairn_err err;
    char name[64];
    int64_t ms = 0;
    const char *tag = NULL;
    /* 2026-01-02T03:04:05.678Z */
    CHECK_OK(cairn_backup_name_make(1767323045678LL, 1, NULL, name, sizeof(name), &err), &err);
    CHECK_EQ_STR(name, "20260102T030405.678Z");
    CHECK(cairn_backup_name_parse(name, &ms, &tag) && ms == 1767323045678LL && *tag == '\0');
    CHECK_OK(cairn_backup_name_make(1767323045678LL, 0, "nightly", name, sizeof(name), &err), &err);
    CHECK_EQ_STR(name, "20260102T030405Z-nightly");
    CHECK(cairn_backup_name_parse(name, &ms, &tag) && ms == 1767323045000LL);
    CHECK_EQ_STR(tag, "nightly");
    /* Old names (scheduler's and default ones) still parse; others do not. */
    CHECK(cairn_backup_name_parse("20260101T110000Z-hourly", NULL, NULL));
    CHECK(cairn_backup_name_parse("20260101T110000Z", NULL, NULL));
    CHECK(!cairn_backup_name_parse("20260231T110000Z", NULL, NULL));
    CHECK(!cairn_backup_name_parse("20260101T110000Z-", NULL, NULL));
    CHECK(!cairn_backup_name_parse("20260101T110000.12Z", NULL, NULL));
    CHECK(!cairn_backup_name_parse("weekly-old", NULL, NULL));
    CHECK(!cairn_backup_name_parse("20260101T1100Z", NULL, NULL));
    /* Too small a buffer is an error, never a truncated name. */
    CHECK_ERR(cairn_backup_name_make(1767323045678LL, 1, "tag", name, 20, &err), CAIRN_E_INVALID,
              &err, "longer than");
    CHECK_ERR(cairn_backup_name_make(0, 0, "bad/tag", name, sizeof(name), &err), CAIRN_E_INVALID,
              &err, "invalid");
    /* The same ms shape sorts by time. */
    char a[64], b[64];
    CHECK_OK(cairn_backup_name_make(1767323045999LL, 1, NULL, a, sizeof(a), &err), &err);
    CHECK_OK(cairn_backup_name_make(1767323046000LL, 1, NULL, b, sizeof(b), &err), &err);
    CHECK(strcmp(a, b) < 0);
}

TEST(start_auto_never_collides)
{
    struct cairn_err err;
    char *url = xasprintf("file://%s/auto-store", test_tmpdir());
    struct cairn_storage *st;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    /* Another writer holds the next 50 milliseconds' names. */
    int64_t now = (int64_t)now_ms();
    for (int i = 0; i < 50; i++) {
        char name[64];
        struct cairn_backup *b;
        CHECK_OK(cairn_backup_name_make(now + i, 1, NULL, name, sizeof(name), &err), &err);
        CHECK_OK(cairn_storage_start(st, name, &b, &err), &err);
        cairn_backup_free(b);
    }
    char prev[64] = "";
    for (int i = 0; i < 20; i++) {
        char name[64];
        struct cairn_backup *b;
        CHECK_OK(cairn_storage_start_auto(st, NULL, name, sizeof(name), &b, &err), &err);
        CHECK(strcmp(name, prev) > 0); /* unique and in creation order */
        snprintf(prev, sizeof(prev), "%s", name);
        cairn_backup_free(b);
    }
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT(l.count, 70);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    free(url);
}

/* The scheduler opens storages from several threads at once: S3 URL parsing must not share
 * state between them (it used strtok). Half the threads parse a prefix with "..", which must
 * always fail; the other half a deep valid one, which must always parse. */
static void *open_s3_urls(void *arg)
{
    int bad = *(int *)arg, wrong = 0;
    for (int i = 0; i < 3000; i++) {
        struct cairn_err err;
        struct cairn_storage *st = NULL;
        int rc = cairn_storage_open(bad ? "s3://bkt/a/../b/c/d/e?endpoint=http://127.0.0.1:9"
                                        : "s3://bkt/p/q/r/s/t/u/v?endpoint=http://127.0.0.1:9",
                                    &st, &err);
        wrong += bad ? rc != CAIRN_E_INVALID : rc != CAIRN_OK;
        cairn_storage_free(st);
    }
    return (void *)(intptr_t)wrong;
}

TEST(s3_url_parsing_is_thread_safe)
{
    pthread_t t[4];
    int kinds[4] = {0, 1, 0, 1};
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, open_s3_urls, &kinds[i]) == 0);
    intptr_t wrong = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        wrong += (intptr_t)r;
    }
    CHECK_EQ_INT(wrong, 0);
}

/* err may be NULL everywhere in the API: a retried S3 request logged err->msg (crash). */
TEST(s3_retries_with_a_null_err)
{
    setenv("AWS_ACCESS_KEY_ID", "test", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "test", 1);
    struct cairn_storage *st = NULL;
    /* Port 1 on loopback refuses at once: a network error, retried. */
    CHECK_OK(cairn_storage_open("s3://bkt/p?endpoint=http://127.0.0.1:1&retries=2&retry_base_ms=1",
                                &st, NULL),
             NULL);
    struct cairn_backup_list l = {0};
    int rc = cairn_storage_list(st, &l, NULL);
    CHECK(rc != CAIRN_OK); /* the code itself is cairn_err_wrap's business */
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
}
