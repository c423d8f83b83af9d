/* MANIFEST scope: recorded, read back, listed; optional (MANIFESTs without it still read);
 * a scope that is not an object is corrupt. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

static struct cairn_storage *open_store(const char *dir)
{
    struct cairn_storage *st = NULL;
    struct cairn_err err = {0};
    char *url = xasprintf("file://%s", dir);
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    free(url);
    return st;
}

/* A complete backup with one file; scope NULL records none. */
static void make_backup(struct cairn_storage *st, const char *name, json_t *scope)
{
    struct cairn_backup *b = NULL;
    struct cairn_writer *w = NULL;
    struct cairn_err err = {0};
    CHECK_OK(cairn_storage_start(st, name, &b, &err), &err);
    if (b == NULL)
        return;
    CHECK_OK(cairn_backup_set_kind(b, "influxdb", &err), &err);
    CHECK_OK(cairn_backup_set_source(b, "127.0.0.1:8088", &err), &err);
    if (scope != NULL)
        CHECK_OK(cairn_backup_set_scope(b, scope, &err), &err);
    CHECK_OK(cairn_backup_add_file(b, "f", 2, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "hi", 2, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
}

static const struct cairn_backup_info *find_info(const struct cairn_backup_list *l,
                                                 const char *name)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return &l->items[i];
    return NULL;
}

/* Rewrite a backup's MANIFEST with edit applied to its JSON. */
static void manifest_edit(const char *dir, const char *name, void (*edit)(json_t *m))
{
    char *path = xasprintf("%s/%s/MANIFEST", dir, name);
    json_t *m = json_load_file(path, 0, NULL);
    CHECK(m != NULL);
    if (m != NULL) {
        edit(m);
        CHECK(json_dump_file(m, path, JSON_INDENT(2)) == 0);
        json_decref(m);
    }
    free(path);
}

static void drop_scope(json_t *m)
{
    CHECK(json_object_del(m, "scope") == 0);
}

static void bad_scope(json_t *m)
{
    json_object_set_new(m, "scope", json_string("sensors"));
}

TEST(scope_recorded_listed_and_optional)
{
    const char *dir = test_tmpdir();
    struct cairn_storage *st = open_store(dir);
    struct cairn_err err = {0};
    json_t *scope = json_pack("{s:s, s:n}", "db", "sensors", "rp");
    make_backup(st, "a", scope);
    make_backup(st, "b", NULL);
    make_backup(st, "c", scope);
    make_backup(st, "d", scope);
    manifest_edit(dir, "c", drop_scope); /* as written before scopes existed */
    manifest_edit(dir, "d", bad_scope);

    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "a", &b, &err), &err);
    CHECK(b != NULL && cairn_backup_scope(b) != NULL && json_equal(cairn_backup_scope(b), scope));
    cairn_backup_free(b);
    b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "c", &b, &err), &err);
    CHECK(b != NULL && cairn_backup_scope(b) == NULL);
    CHECK(b != NULL && cairn_backup_status(b) == CAIRN_BACKUP_COMPLETE);
    cairn_backup_free(b);
    b = NULL;
    CHECK_EQ_INT(cairn_storage_open_backup(st, "d", &b, &err), CAIRN_E_CORRUPT);
    CHECK(strstr(err.msg, "scope") != NULL);
    cairn_backup_free(b);

    struct cairn_backup_list l;
    CHECK_OK(cairn_storage_list(st, &l, &err), &err);
    const struct cairn_backup_info *ia = find_info(&l, "a"), *ib = find_info(&l, "b"),
                                   *ic = find_info(&l, "c"), *id = find_info(&l, "d");
    CHECK(ia && ib && ic && id);
    if (ia && ib && ic && id) {
        CHECK_EQ_STR(ia->scope, "{\"db\":\"sensors\",\"rp\":null}");
        CHECK(ib->status == CAIRN_BACKUP_COMPLETE && ib->scope == NULL);
        CHECK(ic->status == CAIRN_BACKUP_COMPLETE && ic->scope == NULL);
        CHECK(id->status == CAIRN_BACKUP_CORRUPT && id->scope == NULL);
    }
    cairn_backup_list_free(&l);
    json_decref(scope);
    cairn_storage_free(st);
}

TEST(scope_must_be_an_object)
{
    struct cairn_storage *st = open_store(test_tmpdir());
    struct cairn_backup *b = NULL;
    struct cairn_err err = {0};
    CHECK_OK(cairn_storage_start(st, "x", &b, &err), &err);
    json_t *s = json_string("all");
    CHECK_EQ_INT(cairn_backup_set_scope(b, s, &err), CAIRN_E_INVALID);
    CHECK_EQ_INT(cairn_backup_set_scope(b, s, NULL), CAIRN_E_INVALID);
    CHECK_OK(cairn_backup_set_scope(b, NULL, &err), &err);
    json_decref(s);
    CHECK_OK(cairn_backup_abort(b, &err), &err);
    cairn_backup_free(b);
    cairn_storage_free(st);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
