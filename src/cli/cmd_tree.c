/* The tree of a local-path backup: cairn ls (its entries, -l style or JSON) and cairn diff
 * (what changed between two backups). Both read the tree through cairn_backup_tree_each, which
 * checks every entry as a restore does. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "interrupt.h"
#include "progs/progs.h"

/* The options both commands share: the repository's key. */
struct tree_cli {
    const char *key_file, *password_file, *seal_key;
};

static int open_backup(const struct tree_cli *c, const char *url, const char *name,
                       struct cairn_storage **st, struct cairn_backup **b, struct cairn_err *err)
{
    struct progs_secret sec;
    *b = NULL;
    *st = NULL;
    int rc = progs_secret_load(c->key_file, c->password_file, &sec, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = cairn_storage_open(progs_location(url), st, err);
    if (rc == CAIRN_OK && progs_secret(&sec) != NULL)
        rc = cairn_storage_set_secret(*st, progs_secret(&sec), err);
    progs_secret_free(&sec);
    if (rc == CAIRN_OK && c->seal_key != NULL) {
        uint8_t key[32];
        rc = cairn_key_load(c->seal_key, key, err);
        if (rc == CAIRN_OK)
            cairn_storage_set_seal_key(*st, key);
        memset(key, 0, sizeof(key));
    }
    if (rc == CAIRN_OK) {
        cairn_storage_set_cancel(*st, &cli_cancel);
        rc = cairn_storage_open_backup(*st, name, b, err);
    }
    return rc;
}

static int64_t jint(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

/* ---- ls ---- */

struct ls_state {
    const char *prefix; /* "" for all */
    size_t plen;
    json_t *entries; /* --json */
    uint64_t shown;
};

static int under_prefix(const struct ls_state *s, const char *path)
{
    return s->plen == 0 || (strncmp(path, s->prefix, s->plen) == 0 &&
                            (path[s->plen] == '\0' || path[s->plen] == '/'));
}

static void mode_string(const char *type, unsigned m, char out[11])
{
    out[0] = strcmp(type, "dir") == 0        ? 'd'
             : strcmp(type, "symlink") == 0  ? 'l'
             : strcmp(type, "hardlink") == 0 ? 'h'
             : strcmp(type, "fifo") == 0     ? 'p'
             : strcmp(type, "chr") == 0      ? 'c'
             : strcmp(type, "blk") == 0      ? 'b'
                                             : '-';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = (m & (0400u >> i)) ? rwx[i] : '-';
    if (m & 04000)
        out[3] = (m & 0100) ? 's' : 'S';
    if (m & 02000)
        out[6] = (m & 0010) ? 's' : 'S';
    if (m & 01000)
        out[9] = (m & 0001) ? 't' : 'T';
    out[10] = '\0';
}

static void ls_print(const struct cairn_tree_entry *e)
{
    const json_t *j = e->json;
    char mode[11], owner[160], size[48], when[64];
    mode_string(e->type, (unsigned)jint(j, "mode"), mode);
    const char *user = json_string_value(json_object_get(j, "user"));
    const char *group = json_string_value(json_object_get(j, "group"));
    char uid[24], gid[24];
    snprintf(uid, sizeof(uid), "%lld", (long long)jint(j, "uid"));
    snprintf(gid, sizeof(gid), "%lld", (long long)jint(j, "gid"));
    snprintf(owner, sizeof(owner), "%s/%s", user ? user : uid, group ? group : gid);
    if (strcmp(e->type, "chr") == 0 || strcmp(e->type, "blk") == 0)
        snprintf(size, sizeof(size), "%lld,%lld", (long long)jint(j, "rdev_major"),
                 (long long)jint(j, "rdev_minor"));
    else
        snprintf(size, sizeof(size), "%lld", (long long)jint(j, "size"));
    json_t *ns = json_object_get(j, "mtime_ns");
    int64_t t = ns ? json_integer_value(ns) : jint(j, "mtime") * 1000000000;
    int64_t sec = t / 1000000000, nsec = t % 1000000000;
    if (nsec < 0) {
        sec--;
        nsec += 1000000000;
    }
    format_rfc3339(sec, (long)nsec, when, sizeof(when));
    char *path = str_escape_dup(e->path);
    char *link = e->link ? str_escape_dup(e->link) : NULL;
    printf("%s %-17s %12s %s %s%s%s\n", mode, owner, size, when, path,
           link == NULL                      ? ""
           : strcmp(e->type, "symlink") == 0 ? " -> "
                                             : " link to ",
           link ? link : "");
    free(path);
    free(link);
}

/* The entry as JSON: its tree line without the storage details, the content's SHA-256. */
static json_t *entry_json(const struct cairn_tree_entry *e)
{
    json_t *o = json_deep_copy(e->json);
    const char *sha =
        json_string_value(json_object_get(json_object_get(o, "stored"), "logical_sha256"));
    if (sha == NULL)
        sha = json_string_value(json_object_get(json_object_get(o, "stored"), "sha256"));
    if (sha != NULL)
        json_object_set_new(o, "sha256", json_string(sha));
    json_object_del(o, "stored");
    json_object_del(o, "file");
    json_object_del(o, "mtime");
    return o;
}

static int ls_one(void *arg, const struct cairn_tree_entry *e, struct cairn_err *err)
{
    (void)err;
    struct ls_state *s = arg;
    if (!under_prefix(s, e->path))
        return CAIRN_OK;
    s->shown++;
    if (s->entries != NULL)
        json_array_append_new(s->entries, entry_json(e));
    else
        ls_print(e);
    return CAIRN_OK;
}

static void ls_usage(FILE *out)
{
    fprintf(out,
            "usage: cairn ls STORAGE_URL NAME [PATH] [--json] [--key-file FILE]\n"
            "                [--repo-password-file FILE] [--seal-key FILE]\n\n"
            "List the tree of a backup of a local path (cairn backup --from DIR, cairn put):\n"
            "type and mode, owner (user/group, or ids when the names were unknown), size\n"
            "(major,minor for device nodes), mtime (UTC, ns) and path, with ' -> TARGET' for a\n"
            "symlink and ' link to FIRST' for a later hard link (type 'h'). Names are shown\n"
            "with non-printable bytes escaped (\\n, \\xNN). With PATH, only PATH and what is\n"
            "under it (exit code 5 when nothing is). The tree is verified as it is read.\n\n"
            "  --json  one object: {\"backup\", \"root\", \"entries\": [...]}, each entry its\n"
            "          tree line (docs/FORMAT.md) with \"sha256\" of a file's content\n"
            "          (in an encrypted repository a keyed hash that names the content\n"
            "          there, not comparable with sha256sum)\n\n"
            "Examples:\n"
            "  cairn ls file:///srv/bk etc-2026-12-01\n"
            "  cairn ls file:///srv/bk etc-2026-12-01 ssh --json\n\n"
            "%s%s",
            progs_secret_help, progs_exit_codes_help);
}

const struct option tree_opts[] = {{"json", no_argument, NULL, 'j'},
                                   {"key-file", required_argument, NULL, 'K'},
                                   {"repo-password-file", required_argument, NULL, 'W'},
                                   {"seal-key", required_argument, NULL, 'S'},
                                   {"seal-key-file", required_argument, NULL, 'S'},
                                   {"help", no_argument, NULL, 'h'},
                                   {NULL, 0, NULL, 0}};

/* Parses the shared options (the programs' one parser) and checks min..max positionals;
 * returns -1 to go on, else the exit code. */
static int tree_getopt(const char *cmd, int argc, char **argv, struct tree_cli *c,
                       void (*usage)(FILE *), int min, int max, const char *what)
{
    struct progs_getopt g = {.cmd = cmd, .opts = tree_opts, .argc = argc, .argv = argv};
    int ch;
    while ((ch = progs_getopt(&g)) != -1) {
        switch (ch) {
        case 'j': progs_json = 1; break;
        case 'K': c->key_file = g.arg; break;
        case 'W': c->password_file = g.arg; break;
        case 'S': c->seal_key = g.arg; break;
        case 'h': usage(stdout); return 0;
        default: return g.code;
        }
    }
    return progs_positionals(&g, min, max, what);
}

int cmd_ls(int argc, char **argv)
{
    struct tree_cli c = {0};
    int ec = tree_getopt("ls", argc, argv, &c, ls_usage, 2, 3,
                         "a storage URL, a backup name and an optional path");
    if (ec >= 0)
        return ec;
    int npos = argc - optind;
    char *prefix = xstrdup(npos == 3 ? argv[optind + 2] : "");
    char *p = prefix;
    while (*p == '/')
        p++;
    for (size_t n = strlen(p); n > 0 && p[n - 1] == '/';)
        p[--n] = '\0';
    struct ls_state s = {p, strlen(p), progs_json ? json_array() : NULL, 0};
    struct cairn_err err = {0};
    struct cairn_storage *st;
    struct cairn_backup *b;
    cli_catch_interrupts();
    int rc = open_backup(&c, argv[optind], argv[optind + 1], &st, &b, &err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_tree_each(b, ls_one, &s, &err);
    if (rc == CAIRN_OK && s.plen > 0 && s.shown == 0)
        rc = cairn_err_set(&err, CAIRN_E_NOTFOUND, "backup '%s' has no '%s'", argv[optind + 1], p);
    if (rc == CAIRN_OK && s.entries != NULL) {
        json_t *tree = json_object_get(cairn_backup_meta(b), "tree");
        json_t *out = progs_json_result(); /* docs/JSON.md: name, location, then the tree */
        json_object_set_new(out, "name", json_string(argv[optind + 1]));
        json_object_set_new(out, "location", json_string(cairn_storage_url(st)));
        json_object_set_new(out, "backup", json_string(argv[optind + 1])); /* old key */
        json_t *root = json_object_get(tree, "root"), *meta = json_object_get(tree, "root_meta");
        json_object_set(out, "root", root != NULL ? root : json_null());
        json_object_set(out, "root_meta", meta != NULL ? meta : json_null());
        json_object_set_new(out, "entries", s.entries);
        s.entries = NULL;
        progs_print_json(out);
    }
    json_decref(s.entries);
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(prefix);
    return rc == CAIRN_OK ? 0 : progs_fail(&err);
}

/* ---- diff ---- */

/* What an entry is made of, as two strings: its content (type, size, content hash, sparse
 * map, link target, device numbers) and its metadata (mode, owner, mtime, xattrs). */
static void entry_keys(const struct cairn_tree_entry *e, char **content, char **meta)
{
    const json_t *j = e->json;
    json_t *stored = json_object_get(j, "stored");
    /* A deduplicated file's chunk list names its content in the repository, whichever
     * logical_sha256 its cairn recorded (docs/FORMAT.md); others have the content's hash. */
    const char *comp = json_string_value(json_object_get(stored, "compression"));
    const char *key = comp != NULL && strcmp(comp, "chunks") == 0 ? "sha256" : "logical_sha256";
    json_t *c = json_pack("{s:s, s:O*, s:O*, s:O*, s:O*, s:O*}", "t", e->type, "size",
                          json_object_get(j, "size"), "sha", json_object_get(stored, key), "sparse",
                          json_object_get(j, "sparse"), "maj", json_object_get(j, "rdev_major"),
                          "min", json_object_get(j, "rdev_minor"));
    if (e->link != NULL)
        json_set_name(c, "link", e->link);
    json_t *m =
        json_pack("{s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*, s:O*}", "mode",
                  json_object_get(j, "mode"), "uid", json_object_get(j, "uid"), "gid",
                  json_object_get(j, "gid"), "user", json_object_get(j, "user"), "group",
                  json_object_get(j, "group"), "mtime", json_object_get(j, "mtime"), "mtime_ns",
                  json_object_get(j, "mtime_ns"), "xattrs", json_object_get(j, "xattrs"));
    *content = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    *meta = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    json_decref(m);
}

/* Backup A's entries by path (keys are raw path bytes: set without a UTF-8 check). */
static int diff_load(void *arg, const struct cairn_tree_entry *e, struct cairn_err *err)
{
    (void)err;
    char *content, *meta;
    entry_keys(e, &content, &meta);
    json_object_setn_new_nocheck(arg, e->path, strlen(e->path), json_pack("[s, s]", content, meta));
    free(content);
    free(meta);
    return CAIRN_OK;
}

struct diff_state {
    json_t *a;       /* A's entries left unmatched */
    json_t *changes; /* --json */
    uint64_t n[4];   /* added, removed, modified, metadata */
};

static const char *const change_names[] = {"added", "removed", "modified", "metadata"};
static const char change_marks[] = "+-MU";

static void diff_report(struct diff_state *s, int kind, const char *path)
{
    s->n[kind]++;
    if (s->changes != NULL) {
        json_t *o = json_pack("{s:s}", "change", change_names[kind]);
        json_set_name(o, "path", path);
        json_array_append_new(s->changes, o);
        return;
    }
    char *shown = str_escape_dup(path);
    printf("%c    %s\n", change_marks[kind], shown);
    free(shown);
}

static int diff_one(void *arg, const struct cairn_tree_entry *e, struct cairn_err *err)
{
    (void)err;
    struct diff_state *s = arg;
    json_t *old = json_object_getn(s->a, e->path, strlen(e->path));
    if (old == NULL) {
        diff_report(s, 0, e->path);
        return CAIRN_OK;
    }
    char *content, *meta;
    entry_keys(e, &content, &meta);
    if (strcmp(content, json_string_value(json_array_get(old, 0))) != 0)
        diff_report(s, 2, e->path);
    else if (strcmp(meta, json_string_value(json_array_get(old, 1))) != 0)
        diff_report(s, 3, e->path);
    free(content);
    free(meta);
    json_object_deln(s->a, e->path, strlen(e->path));
    return CAIRN_OK;
}

static void diff_usage(FILE *out)
{
    fprintf(out,
            "usage: cairn diff STORAGE_URL A B [--json] [--key-file FILE]\n"
            "                  [--repo-password-file FILE] [--seal-key FILE]\n\n"
            "What changed from backup A to backup B (both of a local path), one line each:\n"
            "  +  added (in B only)          -  removed (in A only)\n"
            "  M  modified: its content, type, size, link target or device changed\n"
            "  U  metadata only: mode, owner, mtime or xattrs changed\n"
            "then a summary line. Both trees are verified as they are read; A's entries are\n"
            "held in memory (a few hundred bytes each).\n\n"
            "  --json  one object: {\"a\", \"b\", \"changes\": [{\"path\", \"change\"}],\n"
            "          \"added\", \"removed\", \"modified\", \"metadata\"} (counts)\n\n"
            "Examples:\n"
            "  cairn diff file:///srv/bk etc-2026-12-01 etc-2026-12-02\n"
            "  cairn diff s3://b/etc etc-1 etc-2 --json\n\n"
            "%s%s",
            progs_secret_help, progs_exit_codes_help);
}

int cmd_diff(int argc, char **argv)
{
    struct tree_cli c = {0};
    int ec =
        tree_getopt("diff", argc, argv, &c, diff_usage, 3, 3, "a storage URL and two backup names");
    if (ec >= 0)
        return ec;
    const char *url = argv[optind], *na = argv[optind + 1], *nb = argv[optind + 2];
    struct diff_state s = {json_object(), progs_json ? json_array() : NULL, {0}};
    struct cairn_err err = {0};
    struct cairn_storage *st;
    struct cairn_backup *b;
    cli_catch_interrupts();
    int rc = open_backup(&c, url, na, &st, &b, &err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_tree_each(b, diff_load, s.a, &err);
    cairn_backup_free(b);
    b = NULL;
    if (rc == CAIRN_OK)
        rc = cairn_storage_open_backup(st, nb, &b, &err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_tree_each(b, diff_one, &s, &err);
    const char *key;
    size_t klen;
    json_t *v;
    void *tmp;
    json_object_keylen_foreach_safe(s.a, tmp, key, klen, v)
    {
        (void)v;
        (void)klen;
        if (rc == CAIRN_OK)
            diff_report(&s, 1, key);
    }
    cairn_backup_free(b);
    cairn_storage_free(st);
    json_decref(s.a);
    if (rc != CAIRN_OK) {
        json_decref(s.changes);
        return progs_fail(&err);
    }
    if (s.changes != NULL) {
        json_t *out = progs_json_result();
        json_object_set_new(out, "location", json_string(progs_location(url)));
        json_object_update_new(out, json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I}", "a", na, "b",
                                              nb, "changes", s.changes, "added", (json_int_t)s.n[0],
                                              "removed", (json_int_t)s.n[1], "modified",
                                              (json_int_t)s.n[2], "metadata", (json_int_t)s.n[3]));
        progs_print_json(out);
    } else
        printf("%s -> %s: %llu added, %llu removed, %llu modified, %llu metadata only\n", na, nb,
               (unsigned long long)s.n[0], (unsigned long long)s.n[1], (unsigned long long)s.n[2],
               (unsigned long long)s.n[3]);
    return 0;
}
