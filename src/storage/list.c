/* Listing a location: every backup with its status (complete, incomplete, corrupt) read from
 * its MANIFEST header, and whether a backup without a MANIFEST exists at all. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/strv.h"
#include "common/util.h"
#include "internal.h"

const char *cairn_backup_status_name(enum cairn_backup_status s)
{
    switch (s) {
    case CAIRN_BACKUP_COMPLETE: return "complete";
    case CAIRN_BACKUP_INCOMPLETE: return "incomplete";
    case CAIRN_BACKUP_CORRUPT: return "corrupt";
    }
    return "unknown";
}

static int collect_name(void *arg, const char *name)
{
    if (cairn_name_valid(name)) /* else not ours: temp files, stray objects */
        strv_add(arg, name);
    return 0;
}

void cairn_backup_list_free(struct cairn_backup_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].name);
        free(l->items[i].kind);
        free(l->items[i].parent);
        free(l->items[i].error);
        free(l->items[i].source);
        free(l->items[i].scope);
    }
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

int cairn_storage_list(struct cairn_storage *st, struct cairn_backup_list *out,
                       struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    struct strv nv = {0};
    int rc = storage_ready(st, err);
    if (rc == CAIRN_OK)
        rc = st->drv->list(st->state, collect_name, &nv, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "list backups in '%s'", st->url);
        goto out;
    }
    strv_sort(&nv);
    out->items = xcalloc(nv.n ? nv.n : 1, sizeof(*out->items));
    for (size_t i = 0; i < nv.n; i++) {
        if (i > 0 && strcmp(nv.v[i], nv.v[i - 1]) == 0)
            continue;
        struct cairn_backup_info *info = &out->items[out->count++];
        info->name = xstrdup(nv.v[i]);
        info->created = -1;
        struct cairn_backup *b = backup_new_handle(st, nv.v[i], 1);
        struct cairn_err e;
        cairn_err_clear(&e);
        /* Headers only: a split MANIFEST's file list is not needed to list. */
        int lrc = manifest_load(b, 1, &e);
        if (lrc == CAIRN_OK) {
            info->status = CAIRN_BACKUP_COMPLETE;
            info->created = b->created;
            info->files = b->sum_files;
            info->size = b->sum_size;
            info->logical_size = b->sum_logical;
            info->has_logical_size = b->has_sum_logical;
            info->deduplicated = b->chunked;
            info->kind = xstrdup(b->kind ? b->kind : "");
            info->parent = b->parent ? xstrdup(b->parent) : NULL;
            info->source = xstrdup(b->source ? b->source : "");
            if (b->scope != NULL)
                info->scope = json_dumps(b->scope, JSON_COMPACT | JSON_SORT_KEYS);
            info->sealed = b->sealed;
        } else if (lrc == CAIRN_E_NOTFOUND) {
            info->status = CAIRN_BACKUP_INCOMPLETE;
        } else if (lrc == CAIRN_E_CORRUPT || lrc == CAIRN_E_SEAL) {
            info->status = CAIRN_BACKUP_CORRUPT;
            info->error = xstrdup(e.msg);
        } else {
            cairn_err_copy(err, &e);
            rc = lrc;
            cairn_backup_free(b);
            cairn_backup_list_free(out);
            goto out;
        }
        cairn_backup_free(b);
    }
out:
    strv_free(&nv);
    return rc;
}

int storage_backup_exists(struct cairn_storage *st, const char *name, int *found,
                          struct cairn_err *err)
{
    struct strv nv = {0};
    int rc = st->drv->list(st->state, collect_name, &nv, err);
    *found = 0;
    for (size_t i = 0; i < nv.n; i++)
        *found |= strcmp(nv.v[i], name) == 0;
    strv_free(&nv);
    return rc;
}
