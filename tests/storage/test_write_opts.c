/* The driver contract's write options: the generic layer says what each write needs (the
 * MANIFEST header ATOMIC and SYNC, data files SYNC, lock objects REPLACE only), so a driver
 * never looks at a name; and the file driver honours REPLACE. A recording driver wraps the
 * file driver to see the options create receives. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

#define MAX_SEEN 64

static struct {
    pthread_mutex_t mu;
    size_t n;
    char *where[MAX_SEEN]; /* "backup/file" */
    unsigned flags[MAX_SEEN];
} seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const struct cairn_storage_driver *file_drv(void)
{
    return cairn_storage_driver_find("file");
}

static int rec_open(const char *url, void **state, struct cairn_err *err)
{
    return file_drv()->open(url + strlen("rec://"), state, err);
}

static int rec_create(void *state, const char *backup, const char *file, int64_t size_hint,
                      const struct cairn_storage_write_opts *opts, struct cairn_writer **w,
                      struct cairn_err *err)
{
    pthread_mutex_lock(&seen.mu);
    if (seen.n < MAX_SEEN) {
        seen.where[seen.n] = xasprintf("%s/%s", backup, file);
        seen.flags[seen.n++] = opts ? opts->flags : 0;
    }
    pthread_mutex_unlock(&seen.mu);
    return file_drv()->create(state, backup, file, size_hint, opts, w, err);
}

/* The flags of the first create of backup/file; -1 when there was none. */
static long flags_of(const char *where)
{
    for (size_t i = 0; i < seen.n; i++)
        if (strcmp(seen.where[i], where) == 0)
            return (long)seen.flags[i];
    return -1;
}

static long flags_of_lock(void)
{
    size_t l = strlen(CAIRN_LOCK_DIR "/");
    for (size_t i = 0; i < seen.n; i++)
        if (strncmp(seen.where[i], CAIRN_LOCK_DIR "/", l) == 0)
            return (long)seen.flags[i];
    return -1;
}

TEST(generic_layer_asks_for_what_each_write_needs)
{
    static struct cairn_storage_driver rec;
    rec = *file_drv();
    rec.name = "rec";
    rec.open = rec_open;
    rec.create = rec_create;
    struct cairn_err err;
    CHECK_OK(cairn_storage_register(&rec, &err), &err);

    const char *tmp = test_tmpdir();
    char *src = path_join(tmp, "src");
    CHECK_OK(mkdir_p(src, 0700, &err), &err);
    char *f = path_join(src, "a");
    FILE *fp = fopen(f, "w");
    CHECK(fp != NULL);
    if (fp) {
        fputs("hello\n", fp);
        fclose(fp);
    }
    char *url = xasprintf("rec://%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b1", src, NULL, &err), &err);

    CHECK_EQ_INT(flags_of("b1/" CAIRN_MANIFEST_NAME),
                 (long)(CAIRN_STORAGE_WRITE_ATOMIC | CAIRN_STORAGE_WRITE_SYNC));
    CHECK_EQ_INT(flags_of("b1/f000000"), (long)CAIRN_STORAGE_WRITE_SYNC);
    CHECK_EQ_INT(flags_of_lock(), (long)CAIRN_STORAGE_WRITE_REPLACE);

    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT(l.count, 1);
    if (l.count == 1)
        CHECK_EQ_INT(l.items[0].status, CAIRN_BACKUP_COMPLETE);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
    for (size_t i = 0; i < seen.n; i++)
        free(seen.where[i]);
    free(url);
    free(f);
    free(src);
}

static int put(const struct cairn_storage_driver *d, void *state, const char *file, unsigned flags,
               const char *text, struct cairn_err *err)
{
    const struct cairn_storage_write_opts wo = {flags};
    struct cairn_writer *w = NULL;
    int rc = d->create(state, "b", file, -1, &wo, &w, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_write(w, text, strlen(text), err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    cairn_writer_free(w);
    return rc;
}

TEST(file_driver_replaces_only_when_asked)
{
    const struct cairn_storage_driver *d = file_drv();
    struct cairn_err err;
    char *url = path_join(test_tmpdir(), "store");
    void *state = NULL;
    CHECK_OK(d->open(url, &state, &err), &err);
    CHECK_OK(d->start(state, "b", &err), &err);
    const unsigned sync = CAIRN_STORAGE_WRITE_SYNC, repl = CAIRN_STORAGE_WRITE_REPLACE;
    CHECK_OK(put(d, state, "x", sync, "one", &err), &err);
    CHECK_ERR(put(d, state, "x", sync, "two", &err), CAIRN_E_EXISTS, &err, "");
    CHECK_ERR(put(d, state, "x", 0, "two", &err), CAIRN_E_EXISTS, &err, "");
    CHECK_OK(put(d, state, "x", sync | repl, "three", &err), &err);
    CHECK_OK(put(d, state, "x", repl, "four", &err), &err); /* the unsynced path */
    struct cairn_reader *r = NULL;
    CHECK_OK(d->read(state, "b", "x", &r, &err), &err);
    char buf[16] = "";
    size_t got = 0;
    CHECK_OK(cairn_reader_read(r, buf, sizeof(buf) - 1, &got, &err), &err);
    CHECK_EQ_STR(buf, "four");
    cairn_reader_free(r);
    d->free(state);
    free(url);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
