/* Hostile trees (docs/STORAGE.md "Local-path backups"): absolute paths, "..", an entry
 * placed through a symlink or a file, a path given twice, a hard link out of the tree or to
 * a symlink, bad sparse extents, a symlink in a directory's place. Each is refused with
 * CAIRN_E_CORRUPT (exit code 3) and nothing is written: no target, no temporary beside it,
 * nothing outside. Plus the --include/--exclude filter and cairn_backup_tree_each. */
#define _GNU_SOURCE
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* A backup whose tree is entries (a JSON array, taken; "file" entries name "f000000", which
 * holds "evil"). */
static void forge(struct cairn_storage *st, const char *name, json_t *entries)
{
    struct cairn_err err;
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, name, &b, &err), &err);
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file(b, "f000000", 4, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "evil", 4, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    json_t *meta = json_pack("{s:{s:i, s:s, s:s, s:i, s:o, s:[]}}", "tree", "version", 2, "root",
                             "x", "type", "dir", "mode", 0755, "entries", entries, "skipped");
    CHECK_OK(cairn_backup_set_meta(b, meta, &err), &err);
    json_decref(meta);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
}

static json_t *ent(const char *path, const char *type)
{
    json_t *e =
        json_pack("{s:s, s:s, s:i, s:i, s:i, s:I}", "path", path, "type", type, "mode", 0644, "uid",
                  (int)getuid(), "gid", (int)getgid(), "mtime_ns", (json_int_t)1600000000000000000);
    if (strcmp(type, "file") == 0)
        json_object_set_new(e, "file", json_string("f000000"));
    return e;
}

static json_t *link_ent(const char *path, const char *type, const char *key, const char *to)
{
    json_t *e = ent(path, type);
    json_object_set_new(e, key, json_string(to));
    return e;
}

/* Nothing in dir but the store: no target, no temporary. */
static int only_store(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
             strcmp(e->d_name, "store") != 0 && strcmp(e->d_name, "outside") != 0;
    closedir(d);
    return n == 0;
}

TEST(hostile_trees_are_refused_and_nothing_is_written)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *url = xasprintf("%s/store", tmp);
    char *outside = path_join(tmp, "outside");
    mkdir(outside, 0700);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    json_t *sparse_bad = ent("s", "file");
    json_object_set_new(sparse_bad, "size", json_integer(10));
    json_object_set_new(sparse_bad, "sparse", json_pack("[[i, i]]", 8, 4)); /* beyond the size */
    struct {
        const char *what;
        json_t *entries;
    } cases[] = {
        {"absolute", json_pack("[o]", ent("/etc/evil", "file"))},
        {"dotdot", json_pack("[o, o]", ent("d", "dir"), ent("d/../../evil", "file"))},
        {"through a symlink",
         json_pack("[o, o]", link_ent("l", "symlink", "target", outside), ent("l/x", "file"))},
        {"through a file", json_pack("[o, o]", ent("f", "file"), ent("f/x", "file"))},
        {"no parent", json_pack("[o]", ent("nodir/x", "file"))},
        {"file twice", json_pack("[o, o]", ent("a", "file"), ent("a", "file"))},
        {"dir twice", json_pack("[o, o]", ent("d", "dir"), ent("d", "dir"))},
        {"file after dir", json_pack("[o, o]", ent("d", "dir"), ent("d", "file"))},
        {"symlink over dir",
         json_pack("[o, o]", ent("d", "dir"), link_ent("d", "symlink", "target", outside))},
        {"symlink twice", json_pack("[o, o]", link_ent("l", "symlink", "target", "x"),
                                    link_ent("l", "symlink", "target", "y"))},
        {"hard link out", json_pack("[o]", link_ent("h", "hardlink", "link", "../../etc/passwd"))},
        {"hard link absolute", json_pack("[o]", link_ent("h", "hardlink", "link", "/etc/passwd"))},
        {"hard link to a symlink",
         json_pack("[o, o]", link_ent("l", "symlink", "target", "/etc/passwd"),
                   link_ent("h", "hardlink", "link", "l"))},
        {"hard link to a dir",
         json_pack("[o, o]", ent("d", "dir"), link_ent("h", "hardlink", "link", "d"))},
        {"bad sparse extents", json_pack("[o]", sparse_bad)},
        {"sparse extents not adding up",
         json_pack("[o]",
                   json_pack("{s:s, s:s, s:i, s:s, s:i, s:[[i, i]]}", "path", "s2", "type", "file",
                             "mode", 0644, "file", "f000000", "size", 100, "sparse", 0, 2))},
        {"unknown type", json_pack("[o]", ent("s", "socket"))},
        {"device without numbers", json_pack("[o]", ent("c", "chr"))},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[16];
        snprintf(name, sizeof(name), "h%zu", i);
        forge(st, name, cases[i].entries);
        char *target = path_join(tmp, "out");
        int rc = cairn_storage_restore_path(st, name, target, NULL, &err);
        if (rc != CAIRN_E_CORRUPT)
            printf("    case '%s': %s (%s)\n", cases[i].what, cairn_status_name(rc),
                   rc ? err.msg : "restored");
        CHECK_EQ_INT(rc, CAIRN_E_CORRUPT);
        CHECK_EQ_INT(cairn_exit_code(rc), 3);
        CHECK(only_store(tmp)); /* no target, no temporary */
        free(target);
    }
    DIR *d = opendir(outside);
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    CHECK_EQ_INT(n, 2); /* "." and ".." */
    cairn_storage_free(st);
    free(outside);
    free(url);
}

static void write_at(const char *dir, const char *rel, const char *data)
{
    char *p = path_join(dir, rel);
    char parent[4096];
    path_dirname(p, parent, sizeof(parent));
    mkdir_p(parent, 0755, NULL);
    FILE *f = fopen(p, "w");
    fputs(data, f);
    fclose(f);
    free(p);
}

static int exists(const char *dir, const char *rel)
{
    char *p = path_join(dir, rel);
    struct stat sb;
    int ok = lstat(p, &sb) == 0;
    free(p);
    return ok;
}

TEST(include_and_exclude)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *src = path_join(tmp, "src");
    write_at(src, "etc/ssh/sshd_config", "a");
    write_at(src, "etc/ssh/key.pem", "b");
    write_at(src, "etc/hosts", "c");
    write_at(src, "home/u/.cache/x", "d");
    write_at(src, "home/u/doc.txt", "e");
    write_at(src, "home/v/doc.txt", "f");
    char *url = xasprintf("%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b", src, NULL, &err), &err);
    struct {
        const char *inc[3], *exc[3];
        const char *yes[4], *no[4];
    } cases[] = {
        /* an anchored directory: everything in it, nothing else */
        {{"/etc/ssh", NULL},
         {NULL},
         {"etc/ssh/sshd_config", "etc/ssh/key.pem"},
         {"etc/hosts", "home"}},
        /* a name at any depth */
        {{NULL},
         {".cache", "*.pem", NULL},
         {"etc/hosts", "home/u/doc.txt"},
         {"home/u/.cache", "etc/ssh/key.pem"}},
        /* include with a glob, minus an exclude */
        {{"home/*/doc.txt", NULL},
         {"home/v", NULL},
         {"home/u/doc.txt"},
         {"home/v", "etc", "home/u/.cache"}},
        /* a name pattern as an include, with the directories above it */
        {{"hosts", NULL}, {NULL}, {"etc/hosts"}, {"etc/ssh", "home"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        snprintf(out, sizeof(out), "out%zu", i);
        char *target = path_join(tmp, out);
        struct cairn_path_opts po = {.include = cases[i].inc, .exclude = cases[i].exc};
        CHECK_OK(cairn_storage_restore_path(st, "b", target, &po, &err), &err);
        for (size_t k = 0; k < 4 && cases[i].yes[k]; k++)
            CHECK(exists(target, cases[i].yes[k]));
        for (size_t k = 0; k < 4 && cases[i].no[k]; k++)
            CHECK(!exists(target, cases[i].no[k]));
        free(target);
    }
    cairn_storage_free(st);
    free(url);
    free(src);
}

/* A version 1 tree (cairn before this format: path, type, mode only) still restores. */
TEST(version_1_trees_restore)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *url = xasprintf("%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "v1", &b, &err), &err);
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file(b, "f000000", 4, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "data", 4, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    json_t *meta =
        json_pack("{s:{s:s, s:s, s:i, s:[{s:s, s:s, s:i}, {s:s, s:s, s:i, s:i, s:i, s:s}], s:[]}}",
                  "tree", "root", "x", "type", "dir", "mode", 0755, "entries", "path", "d", "type",
                  "dir", "mode", 0710, "path", "d/f", "type", "file", "mode", 0640, "size", 4,
                  "mtime", 1000, "file", "f000000", "skipped");
    CHECK_OK(cairn_backup_set_meta(b, meta, &err), &err);
    json_decref(meta);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
    char *out = path_join(tmp, "out");
    CHECK_OK(cairn_storage_restore_path(st, "v1", out, NULL, &err), &err);
    struct stat sb;
    char *d = path_join(out, "d"), *f = path_join(out, "d/f");
    CHECK(stat(d, &sb) == 0 && (sb.st_mode & 07777) == 0710);
    CHECK(stat(f, &sb) == 0 && (sb.st_mode & 07777) == 0640 && sb.st_size == 4);
    free(d);
    free(f);
    free(out);
    cairn_storage_free(st);
    free(url);
}

/* A hard link whose first link a filter leaves out gets the content; later ones link to it. */
TEST(hard_links_whose_first_is_left_out)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *src = path_join(tmp, "src");
    write_at(src, "a/f", "shared");
    char *f = path_join(src, "a/f"), *g = path_join(src, "b/g"), *h = path_join(src, "b/h");
    mkdir_p(g, 0755, NULL);
    rmdir(g);
    CHECK_EQ_INT(link(f, g), 0);
    CHECK_EQ_INT(link(f, h), 0);
    char *url = xasprintf("%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b", src, NULL, &err), &err);
    char *out = path_join(tmp, "out");
    const char *inc[] = {"/b", NULL};
    struct cairn_path_opts po = {.include = inc};
    CHECK_OK(cairn_storage_restore_path(st, "b", out, &po, &err), &err);
    char *og = path_join(out, "b/g"), *oh = path_join(out, "b/h"), *of = path_join(out, "a");
    struct stat sg, sh;
    CHECK(stat(og, &sg) == 0 && stat(oh, &sh) == 0 && sg.st_ino == sh.st_ino && sg.st_nlink == 2 &&
          sg.st_size == 6);
    CHECK(access(of, F_OK) != 0);
    free(og);
    free(oh);
    free(of);
    free(out);
    cairn_storage_free(st);
    free(url);
    free(f);
    free(g);
    free(h);
    free(src);
}

static int count_entry(void *arg, const struct cairn_tree_entry *e, struct cairn_err *err)
{
    (void)err;
    int *n = arg;
    if (strcmp(e->type, "symlink") == 0)
        CHECK(e->link != NULL && strcmp(e->link, "t\nx") == 0);
    (*n)++;
    return CAIRN_OK;
}

TEST(tree_each_gives_every_entry_decoded)
{
    struct cairn_err err;
    const char *tmp = test_tmpdir();
    char *src = path_join(tmp, "src");
    write_at(src, "a/b", "x");
    char *l = path_join(src, "a/l\xff");
    CHECK_EQ_INT(symlink("t\nx", l), 0);
    char *url = xasprintf("%s/store", tmp);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    CHECK_OK(cairn_storage_backup_path(st, "b", src, NULL, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b", &b, &err), &err);
    int n = 0;
    CHECK_OK(cairn_backup_tree_each(b, count_entry, &n, &err), &err);
    CHECK_EQ_INT(n, 3);
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(url);
    free(l);
    free(src);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
