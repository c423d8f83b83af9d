/* Locks between processes and hosts (storage.h "locks"), on the file driver and a real
 * s3rver: shared and exclusive conflicts with the holder named, lock objects never listed as
 * backups, refresh, stale takeover (old refresh time, dead local pid, unreadable object),
 * a taken-over backup never completes, cairn_storage_unlock, waiting for a lock. */
#define _GNU_SOURCE
#include <jansson.h>
#include <ctype.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "s3fixture.h"

#include "cairn/storage.h"
#include "storage/internal.h"

static int url_seq;
/* What lock.c asks for when it writes a lock object. */
static const struct cairn_storage_write_opts lock_wo = {CAIRN_STORAGE_WRITE_REPLACE};

static char *s3_url(int port)
{
    return xasprintf("s3://%s/lk%d-%d/p?endpoint=http://127.0.0.1:%d&region=us-east-1"
                     "&path_style=1&retry_base_ms=5",
                     S3_BUCKET, (int)getpid(), url_seq++, port);
}

#define LOCK_CASE(name)                                                                            \
    static void lk_##name(const char *url, int is_s3);                                             \
    TEST(file_##name)                                                                              \
    {                                                                                              \
        char *u = xasprintf("file://%s/store%d", test_tmpdir(), url_seq++);                        \
        lk_##name(u, 0);                                                                           \
        free(u);                                                                                   \
    }                                                                                              \
    TEST(s3_##name)                                                                                \
    {                                                                                              \
        int port = s3rver_start();                                                                 \
        if (port == 0)                                                                             \
            MISSING(s3rver_skip);                                                                  \
        char *u = s3_url(port);                                                                    \
        lk_##name(u, 1);                                                                           \
        free(u);                                                                                   \
    }                                                                                              \
    static void lk_##name(const char *url, int is_s3)

static struct cairn_storage *open_st(const char *url)
{
    struct cairn_storage *st = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_storage_open(url, &st, &e), &e);
    return st;
}

/* A location that exists (one backup in it), as every lock test needs. */
static struct cairn_storage *fresh(const char *url)
{
    struct cairn_storage *st = open_st(url);
    struct cairn_backup *b = NULL;
    struct cairn_err e;
    CHECK_OK(cairn_storage_start(st, "base", &b, &e), &e);
    CHECK_OK(cairn_backup_end(b, &e), &e);
    cairn_backup_free(b);
    return st;
}

static size_t nlocks(struct cairn_storage *st)
{
    struct cairn_lock_list l;
    struct cairn_err e;
    CHECK_OK(cairn_storage_locks(st, &l, &e), &e);
    size_t n = l.count;
    cairn_lock_list_free(&l);
    return n;
}

/* Plant a lock object as another process would have written it. */
static void plant(struct cairn_storage *st, const char *obj, const char *host, long pid,
                  int exclusive, int64_t refreshed_ms)
{
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "version", 1, "id", obj, "host",
                  host, "pid", (json_int_t)pid, "mode", exclusive ? "exclusive" : "shared",
                  "command", "planted", "started_ms", (json_int_t)refreshed_ms, "refreshed_ms",
                  (json_int_t)refreshed_ms, "refresh_ms", (json_int_t)30000);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct cairn_err e;
    struct cairn_writer *w = NULL;
    int rc = st->drv->create(st->state, CAIRN_LOCK_DIR, obj, -1, &lock_wo, &w, &e);
    if (rc == CAIRN_E_NOTFOUND) {
        st->drv->start(st->state, CAIRN_LOCK_DIR, NULL);
        rc = st->drv->create(st->state, CAIRN_LOCK_DIR, obj, -1, &lock_wo, &w, &e);
    }
    CHECK_OK(rc, &e);
    CHECK_OK(cairn_writer_write(w, text, strlen(text), &e), &e);
    CHECK_OK(cairn_writer_close(w, &e), &e);
    cairn_writer_free(w);
    free(text);
}

static void this_host(char *h, size_t cap)
{
    memset(h, 0, cap);
    gethostname(h, cap - 1);
}

/* The one host-name helper (lock objects, lock temporaries, sources): as gethostname gives
 * it, or made safe for a file name, and never over cap. */
TEST(host_name)
{
    char want[256], got[256], safe[256], small[4];
    this_host(want, sizeof(want));
    host_name(got, sizeof(got), 0);
    CHECK_EQ_STR(got, want[0] ? want : "unknown");
    host_name(safe, sizeof(safe), 1);
    CHECK_EQ_INT(strlen(safe), strlen(got));
    for (size_t i = 0; safe[i] != '\0'; i++)
        CHECK(isalnum((unsigned char)safe[i]) || safe[i] == '-');
    host_name(small, sizeof(small), 0);
    CHECK(strlen(small) <= 3 && strncmp(small, got, strlen(small)) == 0);
}

LOCK_CASE(conflicts)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    struct cairn_lock *s1 = NULL, *s2 = NULL, *x = NULL;
    const struct cairn_lock_opts bk = {.command = "backup"};
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, &bk, &s1, &e), &e);
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, &bk, &s2, &e), &e);
    CHECK_EQ_INT(nlocks(st), 2);
    /* Shared locks exclude an exclusive one; the message names the holder. */
    char want[128];
    snprintf(want, sizeof(want), "pid %d (backup)", (int)getpid());
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), CAIRN_E_LOCKED, &e, want);
    CHECK(strstr(e.msg, "shared lock of host ") != NULL);
    CHECK(strstr(e.msg, "cairn unlock") != NULL);
    CHECK(x == NULL);
    CHECK_EQ_INT(nlocks(st), 2); /* the loser removed its own object */
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_LOCKED), 10);
    cairn_lock_release(s1);
    cairn_lock_release(s2);
    CHECK_EQ_INT(nlocks(st), 0);
    /* An exclusive lock excludes both kinds. */
    const struct cairn_lock_opts pr = {.command = "prune"};
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &pr, &x, &e), &e);
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_SHARED, NULL, &s1, &e), CAIRN_E_LOCKED, &e,
              "exclusive lock of host");
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &s1, &e), CAIRN_E_LOCKED, &e,
              "(prune)");
    /* A backup cannot start while a prune holds the location. */
    struct cairn_backup *b = NULL;
    CHECK_ERR(cairn_storage_start(st, "b1", &b, &e), CAIRN_E_LOCKED, &e, "(prune)");
    char name[64];
    CHECK_ERR(cairn_storage_start_auto(st, NULL, name, sizeof(name), &b, &e), CAIRN_E_LOCKED, &e,
              "(prune)");
    cairn_lock_release(x);
    CHECK_EQ_INT(nlocks(st), 0);
    CHECK_OK(cairn_storage_start(st, "b1", &b, &e), &e);
    CHECK_EQ_INT(nlocks(st), 1); /* the running backup's shared lock */
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), CAIRN_E_LOCKED, &e,
              "(backup)");
    CHECK_OK(cairn_backup_end(b, &e), &e);
    cairn_backup_free(b);
    CHECK_EQ_INT(nlocks(st), 0);
    cairn_storage_free(st);
}

LOCK_CASE(never_listed)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    struct cairn_lock *s1 = NULL;
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, NULL, &s1, &e), &e);
    plant(st, "junk-000000", "elsewhere", 1, 1, 0);
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 1);
    CHECK_EQ_STR(l.items[0].name, "base");
    /* Retention sees no lock either: a plan over the list removes nothing of them. */
    struct cairn_retention_policy p = {.keep_last = 1, .now = time(NULL)};
    struct cairn_retention_plan plan;
    CHECK_OK(cairn_retention_plan(&l, &p, &plan, &e), &e);
    CHECK_EQ_INT(plan.removed, 0);
    cairn_retention_plan_free(&plan);
    cairn_backup_list_free(&l);
    struct cairn_backup *b = NULL;
    CHECK_ERR(cairn_storage_open_backup(st, CAIRN_LOCK_DIR, &b, &e), CAIRN_E_INVALID, &e,
              "invalid backup name");
    CHECK_ERR(cairn_storage_remove(st, CAIRN_LOCK_DIR, &e), CAIRN_E_INVALID, &e, "invalid");
    cairn_lock_release(s1);
    cairn_storage_free(st);
}

/* A driver read that serves "inprogress-*" lock objects empty the first time. */
static const struct cairn_storage_driver *torn_real;
static int torn_reads;
static int torn_read(void *state, const char *backup, const char *file, struct cairn_reader **r,
                     struct cairn_err *err)
{
    if (strcmp(backup, CAIRN_LOCK_DIR) == 0 && strncmp(file, "inprogress-", 11) == 0 &&
        torn_reads++ == 0) {
        *r = cairn_mem_reader_new("", 0);
        return CAIRN_OK;
    }
    return torn_real->read(state, backup, file, r, err);
}

LOCK_CASE(stale_takeover)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    char host[256];
    this_host(host, sizeof(host));
    /* Not refreshed for 4 x 30 s: stale, whoever holds it. */
    plant(st, "old-000000", "another-host", 4242, 1, (int64_t)now_ms() - 121000);
    /* A process of this host that no longer exists: stale at once. */
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    plant(st, "dead-000000", host, child, 0, (int64_t)now_ms());
    /* An object that is no lock and stays the same over the grace period: a killed writer's
     * leftover (s3rver keeps a PUT cut short), stale. */
    struct cairn_writer *w = NULL;
    CHECK_OK(st->drv->create(st->state, CAIRN_LOCK_DIR, "garbage", -1, &lock_wo, &w, &e), &e);
    CHECK_OK(cairn_writer_write(w, "{", 1, &e), &e);
    CHECK_OK(cairn_writer_close(w, &e), &e);
    cairn_writer_free(w);
    /* A live one on another host, refreshed now: kept, and it blocks an exclusive lock. */
    plant(st, "live-000000", "another-host", 4243, 0, (int64_t)now_ms());
    struct cairn_lock_list l;
    CHECK_OK(cairn_storage_locks(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 4);
    size_t stale = 0;
    for (size_t i = 0; i < l.count; i++)
        stale += l.items[i].stale;
    CHECK_EQ_INT(stale, 3);
    cairn_lock_list_free(&l);
    struct cairn_lock *x = NULL;
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), CAIRN_E_LOCKED, &e,
              "host another-host pid 4243");
    CHECK_EQ_INT(nlocks(st), 1); /* the stale ones were taken over (removed) */
    CHECK_OK(st->drv->remove_file(st->state, CAIRN_LOCK_DIR, "live-000000", &e), &e);
    /* A lock being written: the first read finds it empty (as s3rver serves one), the second
     * a live shared lock. It is not removed, and it blocks an exclusive taker. */
    plant(st, "inprogress-000000", "writer-host", 4244, 0, (int64_t)now_ms());
    const struct cairn_storage_driver *real = st->drv;
    struct cairn_storage_driver torn = *real;
    torn_real = real;
    torn_reads = 0;
    torn.read = torn_read;
    st->drv = &torn;
    CHECK_OK(cairn_storage_locks(st, &l, &e), &e);
    st->drv = real;
    CHECK_EQ_INT(torn_reads, 2); /* read empty, then again after the grace period */
    CHECK_EQ_INT(l.count, 1);
    if (l.count == 1) {
        CHECK(!l.items[0].stale && l.items[0].problem == NULL);
        CHECK_EQ_STR(l.items[0].host, "writer-host");
    }
    cairn_lock_list_free(&l);
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), CAIRN_E_LOCKED, &e,
              "host writer-host pid 4244");
    CHECK_OK(st->drv->remove_file(st->state, CAIRN_LOCK_DIR, "inprogress-000000", &e), &e);
    plant(st, "old2-000000", "another-host", 4242, 0, (int64_t)now_ms() - 121000);
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), &e);
    CHECK_EQ_INT(nlocks(st), 1); /* ours */
    cairn_lock_release(x);
    cairn_storage_free(st);
}

LOCK_CASE(refresh_and_lost)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    /* A held lock is refreshed: its object is replaced by one with a later refresh time. */
    struct cairn_lock *s1 = NULL;
    const struct cairn_lock_opts fast = {.refresh_ms = 1000}; /* stale after 4 s unrefreshed */
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, &fast, &s1, &e), &e);
    int64_t first = -1, later = -1;
    uint64_t end = mono_ns() + 120ull * 1000000000ull;
    while (later <= first && mono_ns() < end) {
        struct cairn_lock_list l;
        CHECK_OK(cairn_storage_locks(st, &l, &e), &e);
        for (size_t i = 0; i < l.count; i++) {
            if (first < 0)
                first = l.items[i].refreshed_ms;
            if (l.items[i].refreshed_ms > later)
                later = l.items[i].refreshed_ms;
            CHECK(!l.items[i].stale);
        }
        cairn_lock_list_free(&l);
        usleep(20000);
    }
    CHECK(later > first);
    CHECK_OK(cairn_lock_check(s1, &e), &e);
    cairn_lock_release(s1);
    CHECK_EQ_INT(nlocks(st), 0);

    /* A backup whose lock another process removed never completes. */
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "victim", &b, &e), &e);
    struct cairn_reader *data = cairn_mem_reader_new("data", 4);
    CHECK_OK(cairn_backup_put_stream(b, "f", data, 4, NULL, &e), &e);
    cairn_reader_free(data); /* verbs never take ownership */
    struct cairn_lock_list gone;
    CHECK_OK(cairn_storage_unlock(st, 1, &gone, &e), &e);
    CHECK_EQ_INT(gone.count, 1);
    CHECK_EQ_STR(gone.items[0].command, "backup");
    cairn_lock_list_free(&gone);
    CHECK_ERR(cairn_backup_end(b, &e), CAIRN_E_LOCKED, &e, "removed by another process");
    cairn_backup_free(b);
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 2);
    CHECK_EQ_STR(l.items[1].name, "victim");
    CHECK_EQ_INT(l.items[1].status, CAIRN_BACKUP_INCOMPLETE);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
}

LOCK_CASE(unlock)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    plant(st, "old-000000", "another-host", 7, 1, (int64_t)now_ms() - 200000);
    plant(st, "live-000000", "another-host", 8, 1, (int64_t)now_ms());
    struct cairn_lock_list rm;
    CHECK_OK(cairn_storage_unlock(st, 0, &rm, &e), &e);
    CHECK_EQ_INT(rm.count, 1);
    CHECK_EQ_STR(rm.items[0].object, "old-000000");
    cairn_lock_list_free(&rm);
    CHECK_EQ_INT(nlocks(st), 1);
    CHECK_OK(cairn_storage_unlock(st, 1, &rm, &e), &e);
    CHECK_EQ_INT(rm.count, 1);
    CHECK_EQ_STR(rm.items[0].object, "live-000000");
    cairn_lock_list_free(&rm);
    CHECK_EQ_INT(nlocks(st), 0);
    cairn_storage_free(st);
}

struct delayed {
    struct cairn_lock *l;
    unsigned ms;
};

static void *release_later(void *arg)
{
    struct delayed *d = arg;
    usleep(d->ms * 1000);
    cairn_lock_release(d->l);
    return NULL;
}

LOCK_CASE(wait)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    struct delayed d = {NULL, 300};
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, NULL, &d.l, &e), &e);
    pthread_t t;
    pthread_create(&t, NULL, release_later, &d);
    struct cairn_lock *x = NULL;
    const struct cairn_lock_opts w = {.wait_ms = 600000};
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &w, &x, &e), &e);
    pthread_join(t, NULL);
    CHECK(x != NULL);
    cairn_lock_release(x);
    cairn_storage_free(st);
}

/* A backup started on a handle with a lock wait waits out a prune's exclusive lock (cairnd:
 * one schedule's retention never fails another's backup); the cancel flag ends the wait;
 * without a wait it fails at once. */
LOCK_CASE(backup_waits_for_prune)
{
    (void)is_s3;
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    const struct cairn_lock_opts pr = {.command = "prune"};
    struct delayed d = {NULL, 300};
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &pr, &d.l, &e), &e);

    struct cairn_backup *b = NULL;
    CHECK_EQ_INT(cairn_storage_start(st, "nowait", &b, &e), CAIRN_E_LOCKED);
    CHECK(strstr(e.msg, "(prune)") != NULL);

    volatile int cancel = 1;
    cairn_storage_set_lock_wait(st, 600000);
    cairn_storage_set_cancel(st, &cancel);
    CHECK_EQ_INT(cairn_storage_start(st, "cancelled", &b, &e), CAIRN_E_CANCELLED);
    CHECK(strstr(e.msg, "waiting for a lock") != NULL);
    cairn_storage_set_cancel(st, NULL);

    pthread_t t;
    pthread_create(&t, NULL, release_later, &d);
    CHECK_OK(cairn_storage_start(st, "waited", &b, &e), &e);
    pthread_join(t, NULL);
    CHECK(b != NULL);
    cairn_backup_free(b);
    CHECK_EQ_INT(nlocks(st), 0);
    cairn_storage_free(st);
}

/* An exclusive lock creates nothing: a typo'd location stays "not found". */
TEST(file_missing_location)
{
    char *root = xasprintf("%s/nosuch", test_tmpdir());
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = open_st(url);
    struct cairn_err e;
    struct cairn_lock *x = NULL;
    CHECK_ERR(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &x, &e), CAIRN_E_NOTFOUND, &e,
              "no such storage location");
    struct stat sb;
    CHECK(stat(root, &sb) != 0);
    cairn_storage_free(st);
    free(url);
    free(root);
}

/* The lock directory is private (0700) and lock files are 0600. */
TEST(file_modes)
{
    char *root = xasprintf("%s/modes", test_tmpdir());
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    struct cairn_lock *s1 = NULL;
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, NULL, &s1, &e), &e);
    struct cairn_lock_list l;
    CHECK_OK(cairn_storage_locks(st, &l, &e), &e);
    CHECK_EQ_INT(l.count, 1);
    char *dir = path_join(root, CAIRN_LOCK_DIR);
    char *f = path_join(dir, l.items[0].object);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    CHECK(stat(f, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    cairn_lock_list_free(&l);
    cairn_lock_release(s1);
    cairn_storage_free(st);
    free(f);
    free(dir);
    free(url);
    free(root);
}

/* A process killed between writing its lock temporary and renaming it leaves
 * ".lock.tmp.<pid>.<host>.*": the next lock taken from this host removes it when that pid is
 * gone, and leaves a live process's and another host's alone (reliability/test_crash.py found
 * such debris after SIGKILLs). */
TEST(file_dead_lock_temporaries_swept)
{
    char *root = xasprintf("%s/sweep", test_tmpdir());
    char *url = xasprintf("file://%s", root);
    struct cairn_storage *st = fresh(url);
    struct cairn_err e;
    struct cairn_lock *s1 = NULL;
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_SHARED, NULL, &s1, &e), &e); /* makes the dir */
    cairn_lock_release(s1);
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0); /* a pid that no longer runs */
    char host[256], tag[64];
    this_host(host, sizeof(host));
    size_t n = 0;
    for (const char *p = host; *p != '\0' && n + 1 < sizeof(tag); p++)
        tag[n++] = isalnum((unsigned char)*p) || *p == '-' ? *p : '-';
    tag[n] = '\0';
    char *dir = path_join(root, CAIRN_LOCK_DIR);
    char *dead = xasprintf("%s/.lock.tmp.%ld.%s.aaaaaa", dir, (long)child, tag);
    char *live = xasprintf("%s/.lock.tmp.%ld.%s.bbbbbb", dir, (long)getppid(), tag);
    char *other = xasprintf("%s/.lock.tmp.%ld.%s-elsewhere.cccccc", dir, (long)child, tag);
    const char *paths[] = {dead, live, other};
    for (size_t i = 0; i < 3; i++) {
        FILE *fp = fopen(paths[i], "w");
        CHECK(fp != NULL);
        if (fp != NULL)
            fclose(fp);
    }
    CHECK_OK(cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, NULL, &s1, &e), &e);
    cairn_lock_release(s1);
    struct stat sb;
    CHECK(stat(dead, &sb) != 0);
    CHECK(stat(live, &sb) == 0);
    CHECK(stat(other, &sb) == 0);
    cairn_storage_free(st);
    free(dead);
    free(live);
    free(other);
    free(dir);
    free(url);
    free(root);
}

int main(int argc, char **argv)
{
    (void)fault_proxy_start; /* the fixture's proxy is not needed here */
    (void)fault_proxy_stop;
    return test_main(argc, argv);
}
