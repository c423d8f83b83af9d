/* All-or-nothing restores of local-path backups: a corrupt stored file, a planted symlink or a
 * conflicting entry leaves the target exactly as it was (compared byte for byte) and no
 * temporary behind; a good restore lands complete; --force replaces files of the same name
 * and never follows a symlink. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* Every path under dir (sorted walk) with its type, mode and content, as one string. */
static void tree_dump_into(const char *dir, const char *rel, char **out, size_t *len)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0) {
            char *p = path_join(dir, nm);
            char *r = rel[0] ? xasprintf("%s/%s", rel, nm) : xstrdup(nm);
            struct stat sb;
            lstat(p, &sb);
            char *line = xasprintf("%s %o\n", r, (unsigned)sb.st_mode);
            size_t ll = strlen(line);
            *out = xrealloc(*out, *len + ll + 1);
            memcpy(*out + *len, line, ll + 1);
            *len += ll;
            free(line);
            uint8_t *d = NULL;
            size_t dl = 0;
            if (S_ISREG(sb.st_mode) && read_file_max(p, 1 << 24, &d, &dl, NULL) == CAIRN_OK) {
                *out = xrealloc(*out, *len + dl + 1);
                memcpy(*out + *len, d, dl);
                *len += dl;
                (*out)[*len] = '\0';
                free(d);
            } else if (S_ISDIR(sb.st_mode)) {
                tree_dump_into(p, r, out, len);
            }
            free(p);
            free(r);
        }
        free(names[i]);
    }
    free(names);
}

struct dump {
    char *p;
    size_t len;
};

static struct dump tree_dump(const char *dir)
{
    struct dump d = {NULL, 0};
    struct stat sb;
    if (lstat(dir, &sb) != 0) {
        d.p = xstrdup("(absent)");
        d.len = strlen(d.p);
        return d;
    }
    d.p = xasprintf("%o\n", (unsigned)sb.st_mode);
    d.len = strlen(d.p);
    if (S_ISDIR(sb.st_mode))
        tree_dump_into(dir, "", &d.p, &d.len);
    return d;
}

static int dump_eq(struct dump a, struct dump b)
{
    int eq = a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
    free(a.p);
    free(b.p);
    return eq;
}

/* No ".*cairn-tmp-*" entry in dir. */
static int no_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 1;
    int clean = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, "cairn-tmp-") != NULL)
            clean = 0;
    closedir(d);
    return clean;
}

static void put(const char *dir, const char *name, const char *data)
{
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(data, f);
        fclose(f);
    }
    free(p);
}

/* A 7-file backup "b" of tmp/src in tmp/store; returns the open storage. */
static struct cairn_storage *seven(const char *tmp)
{
    struct cairn_err err;
    char *src = path_join(tmp, "src"), *sub = path_join(src, "sub");
    mkdir_p(sub, 0755, NULL);
    for (int i = 0; i < 7; i++) {
        char name[16], data[64];
        snprintf(name, sizeof(name), "f%d", i);
        snprintf(data, sizeof(data), "content of file %d, long enough to matter", i);
        put(i < 4 ? src : sub, name, data);
    }
    char *url = path_join(tmp, "store");
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b", src, NULL, &err), &err);
    free(url);
    free(sub);
    free(src);
    return st;
}

/* XOR one byte of stored file f000005. */
static void corrupt(const char *tmp)
{
    char *p = xasprintf("%s/store/b/f000005", tmp);
    int fd = open(p, O_RDWR);
    uint8_t c = 0;
    CHECK(fd >= 0 && pread(fd, &c, 1, 3) == 1);
    c ^= 0x5a;
    CHECK(pwrite(fd, &c, 1, 3) == 1);
    close(fd);
    free(p);
}

TEST(corrupt_file_leaves_target_unchanged)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = seven(tmp);
    corrupt(tmp);
    struct cairn_path_opts force = {.force = 1, .workers = 1};
    /* Absent, empty (mode 0751), and holding content (with --force). */
    char *absent = path_join(tmp, "absent"), *empty = path_join(tmp, "empty");
    char *full = path_join(tmp, "full");
    mkdir(empty, 0751);
    chmod(empty, 0751);
    char *fsub = path_join(full, "sub");
    mkdir_p(fsub, 0755, NULL);
    put(full, "f0", "old f0");
    put(full, "mine", "not in the backup");
    put(fsub, "f6", "old f6");
    const char *targets[] = {absent, empty, full};
    for (int i = 0; i < 3; i++) {
        struct dump before = tree_dump(targets[i]);
        CHECK_ERR(cairn_storage_restore_path(st, "b", targets[i], i == 2 ? &force : NULL, &err),
                  CAIRN_E_CORRUPT, &err, "nothing was restored");
        CHECK(dump_eq(before, tree_dump(targets[i])));
        CHECK(no_temporaries(tmp));
        CHECK(no_temporaries(targets[i]));
    }
    free(fsub);
    free(full);
    free(empty);
    free(absent);
    cairn_storage_free(st);
}

TEST(restore_lands_whole)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = seven(tmp);
    char *src = path_join(tmp, "src");
    struct dump want = tree_dump(src);
    /* Into a new directory (with a trailing slash) and into an empty one. */
    char *absent = path_join(tmp, "absent/"), *empty = path_join(tmp, "empty");
    mkdir(empty, 0700);
    chmod(empty, 0700);
    CHECK_OK(cairn_storage_restore_path(st, "b", absent, NULL, &err), &err);
    CHECK(dump_eq(tree_dump(src), tree_dump(absent)));
    CHECK_OK(cairn_storage_restore_path(st, "b", empty, NULL, &err), &err);
    struct stat sb;
    CHECK(stat(empty, &sb) == 0 && (sb.st_mode & 07777) == 0700); /* keeps its own mode */
    char *a = path_join(empty, "f1"), *b = path_join(src, "f1");
    struct dump x = tree_dump(a), y = tree_dump(b);
    CHECK(dump_eq(x, y));
    CHECK(no_temporaries(tmp));
    /* A non-empty target is refused, naming what is in it; nothing changes. */
    struct dump before = tree_dump(empty);
    CHECK_ERR(cairn_storage_restore_path(st, "b", empty, NULL, &err), CAIRN_E_EXISTS, &err,
              "not empty");
    CHECK(dump_eq(before, tree_dump(empty)));
    /* --force replaces files of the same name and keeps the others. */
    put(empty, "f1", "changed");
    put(empty, "extra", "mine");
    struct cairn_path_opts force = {.force = 1};
    CHECK_OK(cairn_storage_restore_path(st, "b", empty, &force, &err), &err);
    x = tree_dump(a);
    y = tree_dump(b);
    CHECK(dump_eq(x, y));
    char *extra = path_join(empty, "extra");
    CHECK(access(extra, F_OK) == 0);
    CHECK(no_temporaries(empty));
    free(want.p);
    free(extra);
    free(a);
    free(b);
    free(empty);
    free(absent);
    free(src);
    cairn_storage_free(st);
}

TEST(planted_symlinks_are_not_followed)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = seven(tmp);
    char *outside = path_join(tmp, "outside");
    mkdir(outside, 0700);
    /* A symlink at the target itself does not redirect the restore. */
    char *lnk = path_join(tmp, "lnk");
    CHECK_EQ_INT(symlink(outside, lnk), 0);
    CHECK_ERR(cairn_storage_restore_path(st, "b", lnk, NULL, &err), CAIRN_E_EXISTS, &err,
              "symbolic link");
    /* Under --force: a symlink where a directory goes is refused before anything is written;
     * a symlink where a file goes is replaced, not written through. */
    char *t = path_join(tmp, "t");
    mkdir(t, 0700);
    char *sub = path_join(t, "sub");
    CHECK_EQ_INT(symlink(outside, sub), 0);
    struct cairn_path_opts force = {.force = 1};
    struct dump before = tree_dump(t);
    CHECK_ERR(cairn_storage_restore_path(st, "b", t, &force, &err), CAIRN_E_EXISTS, &err,
              "symbolic link");
    CHECK(dump_eq(before, tree_dump(t)));
    unlink(sub);
    char *victim = path_join(outside, "victim"), *f0 = path_join(t, "f0");
    put(outside, "victim", "untouched");
    CHECK_EQ_INT(symlink(victim, f0), 0);
    CHECK_OK(cairn_storage_restore_path(st, "b", t, &force, &err), &err);
    struct stat sb;
    CHECK(lstat(f0, &sb) == 0 && S_ISREG(sb.st_mode));
    uint8_t *d = NULL;
    size_t n = 0;
    CHECK(read_file_max(victim, 100, &d, &n, NULL) == CAIRN_OK && n == 9 &&
          memcmp(d, "untouched", 9) == 0);
    free(d);
    DIR *od = opendir(outside);
    int count = 0;
    for (struct dirent *e; od && (e = readdir(od)) != NULL;)
        count += e->d_name[0] != '.';
    if (od)
        closedir(od);
    CHECK_EQ_INT(count, 1); /* only the victim */
    free(f0);
    free(victim);
    free(sub);
    free(t);
    free(lnk);
    free(outside);
    cairn_storage_free(st);
}

/* "." (an empty current directory) cannot be renamed over: the temporary goes inside it. */
TEST(restore_into_dot)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    struct cairn_storage *st = seven(tmp);
    char *here = path_join(tmp, "here"), *src = path_join(tmp, "src");
    mkdir(here, 0700);
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    CHECK_EQ_INT(chdir(here), 0);
    CHECK_OK(cairn_storage_restore_path(st, "b", ".", NULL, &err), &err);
    CHECK_EQ_INT(chdir(cwd), 0);
    struct dump a = tree_dump(src), b = tree_dump(here);
    /* the same entries (the roots' own modes may differ) */
    const char *ea = strchr(a.p, '\n'), *eb = strchr(b.p, '\n');
    CHECK(ea && eb && strcmp(ea, eb) == 0);
    free(a.p);
    free(b.p);
    CHECK(no_temporaries(here));
    free(src);
    free(here);
    cairn_storage_free(st);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
