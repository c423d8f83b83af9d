/* The identity of an influxdb backup: its kind, its source and its scope (the databases and
 * retention policies it holds). Backups pick their parent by it; restores check every link of
 * a chain against it. */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

/* The part of the source an influxdb backup holds: {"db": NAME|null, "rp": NAME|null}, null
 * meaning every one (every database but _internal). New reference. */
json_t *engine_scope_new(const char *db, const char *rp)
{
    return json_pack("{s:s?, s:s?}", "db", db, "rp", rp);
}

/* b's scope, new reference. MANIFESTs written before scopes existed hold an influxdb backup's
 * filters in meta (filter_db, filter_rp), which say the same. NULL: none known. */
json_t *engine_scope_of(struct cairn_backup *b)
{
    json_t *s = cairn_backup_scope(b);
    if (s != NULL)
        return json_incref(s);
    if (strcmp(cairn_backup_kind(b), ENGINE_KIND) != 0)
        return NULL;
    json_t *m = cairn_backup_meta(b);
    return engine_scope_new(json_string_value(json_object_get(m, "filter_db")),
                            json_string_value(json_object_get(m, "filter_rp")));
}

/* Does a backup of scope parent hold everything a backup of scope child does? An influxdb
 * parent of every database (or of the child's database, every retention policy) does: a chain
 * that restores the child's databases whole. Other scopes must be equal. */
int engine_scope_covers(const json_t *parent, const json_t *child)
{
    if (parent == NULL || child == NULL)
        return parent == NULL && child == NULL;
    if (json_equal(parent, child))
        return 1;
    const json_t *pdb = json_object_get(parent, "db"), *prp = json_object_get(parent, "rp"),
                 *cdb = json_object_get(child, "db"), *crp = json_object_get(child, "rp");
    if (json_object_size(parent) != 2 || json_object_size(child) != 2 || !json_is_null(prp) ||
        !json_is_string(cdb) || !(json_is_null(crp) || json_is_string(crp)))
        return 0;
    if (json_is_null(pdb)) /* every database but _internal */
        return strcmp(json_string_value(cdb), "_internal") != 0;
    return json_is_string(pdb) && json_equal(pdb, cdb);
}

/* "influxdb backup of HOST:PORT (database 'x', all retention policies)", for messages. */
char *engine_identity_text(const char *kind, const char *source, const json_t *scope)
{
    char *sc;
    const json_t *db = json_object_get(scope, "db"), *rp = json_object_get(scope, "rp");
    if (strcmp(kind, ENGINE_KIND) == 0 && scope != NULL && json_object_size(scope) == 2 &&
        (json_is_null(db) || json_is_string(db)) && (json_is_null(rp) || json_is_string(rp))) {
        if (json_is_null(db))
            sc = xstrdup("all databases");
        else if (json_is_null(rp))
            sc = xasprintf("database '%s', all retention policies", json_string_value(db));
        else
            sc = xasprintf("database '%s', retention policy '%s'", json_string_value(db),
                           json_string_value(rp));
    } else if (scope != NULL) {
        char *j = json_dumps(scope, JSON_COMPACT | JSON_SORT_KEYS);
        sc = xasprintf("scope %s", j ? j : "?");
        free(j);
    } else {
        sc = xstrdup("no recorded scope");
    }
    char *out = xasprintf("%s backup of %s (%s)", kind, source, sc);
    free(sc);
    return out;
}
