/* Removing a backup: the generic layer deletes its MANIFEST first (through the driver's
 * remove_file), then the driver's remove deletes the rest without looking at names, so a
 * remove cut short leaves an incomplete backup, never one that lists as complete with files
 * missing. A wrapping driver, "cut://<inner URL>", records the calls and fails where the test
 * says; it runs over the file driver and over the S3 driver on a real s3rver. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/storage.h"
#include "s3fixture.h"

/* What the wrapper does: fail the first remove_file (the MANIFEST stays), or let it through
 * and cut remove short after deleting one data file (the process died mid-way). */
enum cut { CUT_NONE, CUT_REMOVE_FILE, CUT_REMOVE };

static struct {
    enum cut cut;
    char calls[512]; /* "remove_file b1/MANIFEST; remove b1; " */
} cut;

struct cut_state {
    const struct cairn_storage_driver *d;
    void *inner;
};

/* Appends "<op> <backup>[/<file>]; " to cut.calls. */
static void cut_log(const char *op, const char *backup, const char *file)
{
    size_t n = strlen(cut.calls);
    snprintf(cut.calls + n, sizeof(cut.calls) - n, "%s %s%s%s; ", op, backup, file ? "/" : "",
             file ? file : "");
}

static int cut_open(const char *url, void **state, struct cairn_err *err)
{
    const char *inner = url + strlen("cut://");
    const char *sep = strstr(inner, "://");
    char scheme[16] = "";
    if (sep != NULL && (size_t)(sep - inner) < sizeof(scheme))
        memcpy(scheme, inner, (size_t)(sep - inner));
    struct cut_state *cs = xcalloc(1, sizeof(*cs));
    cs->d = cairn_storage_driver_find(scheme);
    int rc = cs->d != NULL ? cs->d->open(inner, &cs->inner, err)
                           : cairn_err_set(err, CAIRN_E_INVALID, "cut: no driver for '%s'", inner);
    if (rc != CAIRN_OK) {
        free(cs);
        return rc;
    }
    *state = cs;
    return CAIRN_OK;
}

static int cut_list(void *state, int (*fn)(void *arg, const char *name), void *arg,
                    struct cairn_err *err)
{
    struct cut_state *cs = state;
    return cs->d->list(cs->inner, fn, arg, err);
}

static int cut_start(void *state, const char *backup, struct cairn_err *err)
{
    struct cut_state *cs = state;
    return cs->d->start(cs->inner, backup, err);
}

static int cut_remove(void *state, const char *backup, struct cairn_err *err)
{
    struct cut_state *cs = state;
    cut_log("remove", backup, NULL);
    if (cut.cut != CUT_REMOVE)
        return cs->d->remove(cs->inner, backup, err);
    int rc = cs->d->remove_file(cs->inner, backup, "f0", err);
    return rc != CAIRN_OK ? rc : cairn_err_set(err, CAIRN_E_NETWORK, "cut: remove cut short");
}

static int cut_create(void *state, const char *backup, const char *file, int64_t size_hint,
                      const struct cairn_storage_write_opts *opts, struct cairn_writer **w,
                      struct cairn_err *err)
{
    struct cut_state *cs = state;
    return cs->d->create(cs->inner, backup, file, size_hint, opts, w, err);
}

static int cut_read(void *state, const char *backup, const char *file, struct cairn_reader **r,
                    struct cairn_err *err)
{
    struct cut_state *cs = state;
    return cs->d->read(cs->inner, backup, file, r, err);
}

static void cut_free(void *state)
{
    struct cut_state *cs = state;
    if (cs == NULL)
        return;
    cs->d->free(cs->inner);
    free(cs);
}

static int cut_list_files(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                          void *arg, struct cairn_err *err)
{
    struct cut_state *cs = state;
    return cs->d->list_files(cs->inner, backup, fn, arg, err);
}

static int cut_remove_file(void *state, const char *backup, const char *file, struct cairn_err *err)
{
    struct cut_state *cs = state;
    if (strcmp(backup, CAIRN_LOCK_DIR) != 0)
        cut_log("remove_file", backup, file);
    if (cut.cut == CUT_REMOVE_FILE && strcmp(backup, CAIRN_LOCK_DIR) != 0)
        return cairn_err_set(err, CAIRN_E_NETWORK, "cut: remove_file failed");
    return cs->d->remove_file(cs->inner, backup, file, err);
}

static const struct cairn_storage_driver cut_driver = {
    .name = "cut",
    .open = cut_open,
    .list = cut_list,
    .start = cut_start,
    .remove = cut_remove,
    .create = cut_create,
    .read = cut_read,
    .free = cut_free,
    .list_files = cut_list_files,
    .remove_file = cut_remove_file,
    .features = CAIRN_STORAGE_FEATURE_ATOMIC_WRITE,
};

static struct cairn_storage *open_cut(const char *inner)
{
    struct cairn_err err;
    if (cairn_storage_driver_find("cut") == NULL)
        CHECK_OK(cairn_storage_register(&cut_driver, &err), &err);
    char *url = xasprintf("cut://%s", inner);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    free(url);
    return st;
}

static void make_backup(struct cairn_storage *st, const char *name)
{
    struct cairn_err err;
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, name, &b, &err), &err);
    for (int i = 0; b != NULL && i < 3; i++) {
        char file[8];
        snprintf(file, sizeof(file), "f%d", i);
        struct cairn_reader *r = cairn_mem_reader_new("contents", 8);
        CHECK_OK(cairn_backup_put_stream(b, file, r, 8, NULL, &err), &err);
        cairn_reader_free(r);
    }
    if (b != NULL)
        CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
}

/* The status `cairn list` shows for name; -1 when it is not listed. */
static int status_of(struct cairn_storage *st, const char *name)
{
    struct cairn_err err;
    struct cairn_backup_list l;
    int status = -1;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    for (size_t i = 0; i < l.count; i++)
        if (strcmp(l.items[i].name, name) == 0)
            status = (int)l.items[i].status;
    cairn_backup_list_free(&l);
    return status;
}

static void remove_cases(const char *inner)
{
    struct cairn_err err;
    struct cairn_storage *st = open_cut(inner);
    make_backup(st, "b1");
    CHECK_EQ_INT(status_of(st, "b1"), CAIRN_BACKUP_COMPLETE);

    /* The MANIFEST cannot be removed: nothing else is touched, the backup stays whole. */
    cut.cut = CUT_REMOVE_FILE;
    cut.calls[0] = '\0';
    CHECK_ERR(cairn_storage_remove(st, "b1", &err), CAIRN_E_NETWORK, &err, "remove_file failed");
    CHECK_EQ_STR(cut.calls, "remove_file b1/MANIFEST; ");
    CHECK_EQ_INT(status_of(st, "b1"), CAIRN_BACKUP_COMPLETE);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b1", &b, &err), &err);
    if (b != NULL)
        CHECK_OK(cairn_backup_verify(b, 1, NULL, NULL, &err), &err);
    cairn_backup_free(b);

    /* The MANIFEST goes first; the driver's remove is cut short after one data file: the
     * backup lists as incomplete, never as complete with a file missing. */
    cut.cut = CUT_REMOVE;
    cut.calls[0] = '\0';
    CHECK_ERR(cairn_storage_remove(st, "b1", &err), CAIRN_E_NETWORK, &err, "cut short");
    CHECK_EQ_STR(cut.calls, "remove_file b1/MANIFEST; remove b1; ");
    CHECK_EQ_INT(status_of(st, "b1"), CAIRN_BACKUP_INCOMPLETE);
    CHECK_OK(cairn_storage_open_backup(st, "b1", &b, &err), &err);
    if (b != NULL)
        CHECK_EQ_INT(cairn_backup_status(b), CAIRN_BACKUP_INCOMPLETE);
    cairn_backup_free(b);

    /* Removing it again finishes the job (the MANIFEST is already gone: not an error). */
    cut.cut = CUT_NONE;
    cut.calls[0] = '\0';
    CHECK_OK(cairn_storage_remove(st, "b1", &err), &err);
    CHECK_EQ_STR(cut.calls, "remove_file b1/MANIFEST; remove b1; ");
    CHECK_EQ_INT(status_of(st, "b1"), -1);
    CHECK_ERR(cairn_storage_remove(st, "b1", &err), CAIRN_E_NOTFOUND, &err, "not found");

    /* An aborted backup goes the same way. */
    CHECK_OK(cairn_storage_start(st, "b2", &b, &err), &err);
    cut.calls[0] = '\0';
    if (b != NULL)
        CHECK_OK(cairn_backup_abort(b, &err), &err);
    cairn_backup_free(b);
    CHECK_EQ_STR(cut.calls, "remove_file b2/MANIFEST; remove b2; ");
    CHECK_EQ_INT(status_of(st, "b2"), -1);
    cairn_storage_free(st);
}

TEST(file_interrupted_remove_leaves_incomplete)
{
    char *inner = xasprintf("file://%s/store", test_tmpdir());
    remove_cases(inner);
    free(inner);
}

TEST(s3_interrupted_remove_leaves_incomplete)
{
    int port = s3rver_start();
    if (port == 0)
        MISSING(s3rver_skip);
    /* Through a proxy that verifies every request's SigV4 signature (and injects nothing). */
    struct fault_proxy *px = fault_proxy_start(port, FAULT_503, 0, NULL);
    char *inner = xasprintf("s3://%s/rm%d/p?endpoint=http://127.0.0.1:%d&region=us-east-1"
                            "&path_style=1&retry_base_ms=5",
                            S3_BUCKET, (int)getpid(), px->port);
    remove_cases(inner);
    free(inner);
    CHECK_EQ_INT(atomic_load(&px->sig_failures), 0);
    fault_proxy_stop(px);
}

/* The drivers' remove deletes whatever the backup holds, a MANIFEST included, without
 * treating any name apart (called directly, without the generic layer). */
TEST(file_driver_remove_takes_every_name)
{
    const struct cairn_storage_driver *d = cairn_storage_driver_find("file");
    struct cairn_err err;
    char *root = path_join(test_tmpdir(), "store");
    void *state = NULL;
    CHECK_OK(d->open(root, &state, &err), &err);
    CHECK_OK(d->start(state, "b", &err), &err);
    const char *names[] = {CAIRN_MANIFEST_NAME, "MANIFEST.part000000", "f0"};
    for (size_t i = 0; i < 3; i++) {
        const struct cairn_storage_write_opts wo = {CAIRN_STORAGE_WRITE_SYNC};
        struct cairn_writer *w = NULL;
        CHECK_OK(d->create(state, "b", names[i], -1, &wo, &w, &err), &err);
        if (w != NULL) {
            CHECK_OK(cairn_writer_write(w, "x", 1, &err), &err);
            CHECK_OK(cairn_writer_close(w, &err), &err);
        }
        cairn_writer_free(w);
    }
    CHECK_OK(d->remove(state, "b", &err), &err);
    char *dir = path_join(root, "b");
    CHECK(access(dir, F_OK) != 0);
    CHECK_ERR(d->remove(state, "b", &err), CAIRN_E_NOTFOUND, &err, "not found");
    d->free(state);
    free(dir);
    free(root);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
