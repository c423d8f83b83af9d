/* cairn_storage_set_cancel: once the flag is set, reads of stored files (verify, restore)
 * stop with CAIRN_E_CANCELLED and leave nothing behind, while removing a backup (rm, prune,
 * the cleanup of a cancelled backup) is never cut short. The S3 driver's share is exercised
 * end to end by reliability/test_cancel_points.py. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* A backup "b" of 6 small files in tmp/store. */
static struct cairn_storage *store_with_backup(const char *tmp)
{
    struct cairn_err err;
    char *src = path_join(tmp, "src");
    mkdir_p(src, 0700, NULL);
    for (int i = 0; i < 6; i++) {
        char *p = xasprintf("%s/f%d", src, i);
        FILE *f = fopen(p, "wb");
        CHECK(f != NULL);
        for (int k = 0; f && k < 4096; k++)
            fputc('a' + (i + k) % 26, f);
        if (f)
            fclose(f);
        free(p);
    }
    char *url = path_join(tmp, "store");
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b", src, NULL, &err), &err);
    free(url);
    free(src);
    return st;
}

TEST(verify_and_restore_stop_when_cancelled)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = store_with_backup(tmp);
    volatile int flag = 0;
    cairn_storage_set_cancel(st, &flag);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b", &b, &err), &err);
    CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &err), &err); /* flag clear: as before */
    __atomic_store_n(&flag, 1, __ATOMIC_RELAXED);
    CHECK_ERR(cairn_backup_verify(b, 2, NULL, NULL, &err), CAIRN_E_CANCELLED, &err, "cancelled");
    struct cairn_reader *r = NULL;
    CHECK_OK(cairn_backup_get_file(b, "f000000", &r, &err), &err);
    char buf[64];
    size_t got = 0;
    CHECK_ERR(cairn_reader_read(r, buf, sizeof(buf), &got, &err), CAIRN_E_CANCELLED, &err,
              "cancelled");
    cairn_reader_free(r);
    cairn_backup_free(b);
    /* A restore through the storage's flag alone (no per-call flag): nothing is left. */
    char *target = path_join(tmp, "target");
    CHECK_ERR(cairn_storage_restore_path(st, "b", target, NULL, &err), CAIRN_E_CANCELLED, &err,
              "cancelled");
    CHECK(access(target, F_OK) != 0);
    cairn_storage_set_cancel(st, NULL);
    CHECK_OK(cairn_storage_restore_path(st, "b", target, NULL, &err), &err);
    free(target);
    cairn_storage_free(st);
}

TEST(removal_is_never_cut_short)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = store_with_backup(tmp);
    volatile int flag = 1;
    cairn_storage_set_cancel(st, &flag);
    CHECK_OK(cairn_storage_remove(st, "b", &err), &err);
    char *dir = path_join(tmp, "store/b");
    CHECK(access(dir, F_OK) != 0);
    free(dir);
    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    CHECK_EQ_INT((int)l.count, 0);
    cairn_backup_list_free(&l);
    cairn_storage_free(st);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
