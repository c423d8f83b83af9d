/* Storage commands: cairn list / rm / verify / prune, and the low-level local-path transfers
 * cairn put / get. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/digest.h"
#include "cairn/repo.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "interrupt.h"
#include "progs/progs.h"

#define URL_HELP                                                                                   \
    "Storage URLs:\n"                                                                              \
    "  file:///var/backups/db   (or a plain path; a relative one is from the current dir)\n"       \
    "  s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=1\n"          \
    "  more S3 options: part_size, parts, retries, retry_base_ms, stall_timeout, insecure\n"       \
    "  S3 credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else\n"      \
    "  ~/.aws/credentials [AWS_PROFILE]. See docs/STORAGE.md.\n\n"

/* Common options of the storage commands. */
struct sopts {
    const char *pos[4];
    int npos;
    int json, dry_run, zstd, zstd_level, force, force_read;
    const char *seal_key;
    const char *key_file, *password_file; /* the repository's key */
    uint64_t workers;
    struct cairn_retention_policy keep; /* prune's rules */
    const char *group_by;
    int with_dependents;
    int all;
    int prune; /* rm --prune: collect the chunks afterwards */
};

enum {
    S_JSON = 256,
    S_DRY_RUN,
    S_FORCE,
    S_ALL,
    S_ZSTD,
    S_SEAL_KEY,
    S_KEY_FILE,
    S_PASSWORD_FILE,
    S_WITH_DEPENDENTS,
    S_NAME,
    S_GROUP_BY,
    S_KEEP_WITHIN,
    S_WORKERS,
    S_KEEP_LAST,
    S_KEEP_HOURLY,
    S_KEEP_DAILY,
    S_KEEP_WEEKLY,
    S_KEEP_MONTHLY,
    S_KEEP_YEARLY,
    S_QUIET,
    S_PRUNE,
    S_FORCE_READ,
};

/* Every storage command opens storage, so every one takes the repository's key; the seal
 * key is a file: --seal-key-file, with --seal-key kept as its old spelling. */
#define S_COMMON                                                                                   \
    {"json", no_argument, NULL, S_JSON}, {"key-file", required_argument, NULL, S_KEY_FILE},        \
        {"password-file", required_argument, NULL, S_PASSWORD_FILE},                               \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define S_SEAL                                                                                     \
    {"seal-key-file", required_argument, NULL, S_SEAL_KEY},                                        \
    {                                                                                              \
        "seal-key", required_argument, NULL, S_SEAL_KEY                                            \
    }
#define S_WORKERS_OPT                                                                              \
    {                                                                                              \
        "workers", required_argument, NULL, S_WORKERS                                              \
    }
#define S_END                                                                                      \
    {                                                                                              \
        NULL, 0, NULL, 0                                                                           \
    }

#define S_QUIET_OPT                                                                                \
    {                                                                                              \
        "quiet", no_argument, NULL, S_QUIET                                                        \
    }

const struct option list_opts[] = {S_COMMON, S_SEAL, S_END};
const struct option rm_opts[] = {S_COMMON,
                                 {"with-dependents", no_argument, NULL, S_WITH_DEPENDENTS},
                                 {"prune", no_argument, NULL, S_PRUNE},
                                 S_END};
const struct option verify_opts[] = {S_COMMON, S_SEAL, S_WORKERS_OPT, S_QUIET_OPT, S_END};
const struct option prune_opts[] = {S_COMMON,
                                    S_SEAL,
                                    {"dry-run", no_argument, NULL, S_DRY_RUN},
                                    {"keep-last", required_argument, NULL, S_KEEP_LAST},
                                    {"keep-hourly", required_argument, NULL, S_KEEP_HOURLY},
                                    {"keep-daily", required_argument, NULL, S_KEEP_DAILY},
                                    {"keep-weekly", required_argument, NULL, S_KEEP_WEEKLY},
                                    {"keep-monthly", required_argument, NULL, S_KEEP_MONTHLY},
                                    {"keep-yearly", required_argument, NULL, S_KEEP_YEARLY},
                                    {"keep-within", required_argument, NULL, S_KEEP_WITHIN},
                                    {"group-by", required_argument, NULL, S_GROUP_BY},
                                    {"name", required_argument, NULL, S_NAME},
                                    S_END};
const struct option unlock_opts[] = {
    S_COMMON, {"all", no_argument, NULL, S_ALL}, {"force", no_argument, NULL, S_ALL}, S_END};
const struct option put_opts[] = {S_COMMON,
                                  S_SEAL,
                                  S_WORKERS_OPT,
                                  S_QUIET_OPT,
                                  {"zstd", optional_argument, NULL, S_ZSTD},
                                  {"force-read", no_argument, NULL, S_FORCE_READ},
                                  S_END};
const struct option get_opts[] = {
    S_COMMON, S_SEAL, S_WORKERS_OPT, S_QUIET_OPT, {"force", no_argument, NULL, S_FORCE}, S_END};

/* A --keep-* count into *dst: 0, or the usage error's exit code. */
static int keep_count(const char *cmd, const char *name, const char *val, unsigned *dst)
{
    uint64_t n = 0;
    if (progs_parse_u64(val, &n) != 0 || n > 1000000)
        return progs_usage(cmd, "option '--%s' needs a number, got '%s'", name, val);
    *dst = (unsigned)n;
    return 0;
}

/* One option of a storage command into o: 0, or the usage error's exit code. */
static int parse_one(const char *cmd, int c, const char *name, const char *val, struct sopts *o)
{
    uint64_t n = 0;
    switch (c) {
    case S_JSON: o->json = progs_json = 1; return 0;
    case S_QUIET: progs_quiet = 1; return 0; /* no progress line */
    case S_DRY_RUN: o->dry_run = 1; return 0;
    case S_FORCE: o->force = 1; return 0;
    case S_FORCE_READ: o->force_read = 1; return 0;
    case S_ALL: o->all = 1; return 0;
    case S_WITH_DEPENDENTS: o->with_dependents = 1; return 0;
    case S_PRUNE: o->prune = 1; return 0;
    case S_SEAL_KEY: o->seal_key = val; return 0;
    case S_KEY_FILE: o->key_file = val; return 0;
    case S_PASSWORD_FILE: o->password_file = val; return 0;
    case S_NAME: o->keep.name_glob = val; return 0;
    case S_ZSTD:
        o->zstd = 1;
        if (val != NULL && (progs_parse_u64(val, &n) != 0 || n < 1 || n > 19))
            return progs_usage(cmd, "--zstd level must be 1..19, got '%s'", val);
        o->zstd_level = (int)n;
        return 0;
    case S_GROUP_BY:
        if (strcmp(val, "source") != 0 && strcmp(val, "none") != 0)
            return progs_usage(cmd, "--group-by must be source or none, got '%s'", val);
        o->group_by = val;
        return 0;
    case S_KEEP_WITHIN:
        if (parse_duration(val, &o->keep.keep_within) != 0 || o->keep.keep_within < 1)
            return progs_usage(
                cmd, "--keep-within needs a duration such as 7d, 36h, 2w, 1y, got '%s'", val);
        return 0;
    case S_WORKERS:
        if (progs_parse_u64(val, &n) != 0 || n < 1 || n > 64)
            return progs_usage(cmd, "--workers must be 1..64, got '%s'", val);
        o->workers = n;
        return 0;
    case S_KEEP_LAST: return keep_count(cmd, name, val, &o->keep.keep_last);
    case S_KEEP_HOURLY: return keep_count(cmd, name, val, &o->keep.keep_hourly);
    case S_KEEP_DAILY: return keep_count(cmd, name, val, &o->keep.keep_daily);
    case S_KEEP_WEEKLY: return keep_count(cmd, name, val, &o->keep.keep_weekly);
    case S_KEEP_MONTHLY: return keep_count(cmd, name, val, &o->keep.keep_monthly);
    case S_KEEP_YEARLY: return keep_count(cmd, name, val, &o->keep.keep_yearly);
    default: return CAIRN_EXIT_USAGE;
    }
}

/* --help, option parsing and the positional count shared by every command: returns -1 to go
 * on, else the exit code to return. */
static int prologue(int argc, char **argv, const char *help, const struct option *opts, int npos,
                    const char *npos_msg, struct sopts *o)
{
    memset(o, 0, sizeof(*o));
    struct progs_getopt g = {.cmd = argv[0], .opts = opts, .argc = argc, .argv = argv};
    int c;
    while ((c = progs_getopt(&g)) != -1) {
        if (c == PROGS_OPT_ERR)
            return g.code;
        if (c == 'h') {
            printf("%s%s%s", help, progs_secret_help, progs_exit_codes_help);
            return 0;
        }
        int ec = parse_one(argv[0], c, g.name, g.arg, o);
        if (ec)
            return ec;
    }
    if ((c = progs_positionals(&g, npos, npos, npos_msg)) >= 0)
        return c;
    for (int i = 0; i < npos; i++)
        o->pos[i] = i == 0 ? progs_location(argv[optind]) : argv[optind + i];
    o->npos = npos;
    return -1;
}

static int open_storage(const struct sopts *o, struct cairn_storage **st, struct cairn_err *err)
{
    struct progs_secret sec;
    int rc = progs_secret_load(o->key_file, o->password_file, &sec, err);
    if (rc != CAIRN_OK)
        return rc;
    rc = cairn_storage_open(o->pos[0], st, err);
    if (rc == CAIRN_OK && progs_secret(&sec) != NULL)
        rc = cairn_storage_set_secret(*st, progs_secret(&sec), err);
    progs_secret_free(&sec);
    if (rc != CAIRN_OK) {
        cairn_storage_free(*st);
        *st = NULL;
        return rc;
    }
    /* Only commands that call cli_catch_interrupts() ever see the flag set. */
    cairn_storage_set_cancel(*st, &cli_cancel);
    if (o->seal_key == NULL)
        return rc;
    uint8_t key[32];
    rc = cairn_key_load(o->seal_key, key, err);
    if (rc == CAIRN_OK)
        cairn_storage_set_seal_key(*st, key);
    memset(key, 0, sizeof(key));
    if (rc != CAIRN_OK) {
        cairn_storage_free(*st);
        *st = NULL;
    }
    return rc;
}

/* ---- list ---- */

static const char list_help[] =
    "usage: cairn list URL [--json] [--seal-key-file FILE]\n\n"
    "List the backups in a storage location, oldest first, with their status:\n"
    "  complete    the MANIFEST exists and is valid\n"
    "  incomplete  no MANIFEST: in progress, failed or interrupted (prune removes old ones)\n"
    "  corrupt     the MANIFEST is unreadable or its seal does not match --seal-key-file\n"
    "SIZE is the files' bytes before compression (as cairn backup counts them). STORED is\n"
    "their bytes as stored, or 'shared' for a backup of a deduplicating repository: its files\n"
    "are chunks shared with the other backups, so no backup has a size of its own there\n"
    "(prune reports what a removal frees).\n\n"
    "Options:\n"
    "  --json           one JSON document on stdout\n"
    "  --seal-key-file FILE  check MANIFEST seals with this key (32 raw bytes or 64 hex digits)\n\n"
    "Examples:\n"
    "  cairn list /var/backups/db\n"
    "  cairn list 's3://backups/db?endpoint=http://127.0.0.1:9000' --json\n\n" URL_HELP;

static json_t *info_json(const struct cairn_backup_info *i)
{
    char created[64] = "";
    if (i->created >= 0)
        format_rfc3339(i->created, 0, created, sizeof(created));
    /* "size" is the old name of stored_bytes (docs/JSON.md); of a deduplicated backup it is
     * the bytes of its chunk lists. */
    return json_pack("{s:s, s:s, s:o, s:o, s:I, s:I, s:b, s:I, s:o, s:o, s:o, s:b, s:o}", "name",
                     i->name, "status", cairn_backup_status_name(i->status), "created",
                     i->created >= 0 ? json_string(created) : json_null(), "bytes",
                     i->has_logical_size ? json_integer((json_int_t)i->logical_size) : json_null(),
                     "stored_bytes", (json_int_t)i->size, "size", (json_int_t)i->size,
                     "deduplicated", i->deduplicated, "files", (json_int_t)i->files, "kind",
                     i->kind ? json_string(i->kind) : json_null(), "source",
                     i->source ? json_string(i->source) : json_null(), "parent",
                     i->parent ? json_string(i->parent) : json_null(), "sealed", i->sealed, "error",
                     i->error ? json_string(i->error) : json_null());
}

/* One line of the text listing. */
static void info_print(const struct cairn_backup_info *it)
{
    char created[64] = "-", size[32] = "-", stored[32] = "-";
    if (it->created >= 0)
        format_rfc3339(it->created, 0, created, sizeof(created));
    if (it->status == CAIRN_BACKUP_COMPLETE && it->has_logical_size)
        format_bytes(it->logical_size, size, sizeof(size));
    if (it->status == CAIRN_BACKUP_COMPLETE && it->deduplicated)
        snprintf(stored, sizeof(stored), "shared");
    else if (it->status == CAIRN_BACKUP_COMPLETE)
        format_bytes(it->size, stored, sizeof(stored));
    printf("%-32s %-10s %-20s %10s %10s %6llu  %s%s%s\n", it->name,
           cairn_backup_status_name(it->status), created, size, stored,
           (unsigned long long)it->files, it->kind ? it->kind : "-", it->error ? "  " : "",
           it->error ? it->error : "");
}

int cmd_list(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, list_help, list_opts, 1, "a storage URL", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l = {0};
    int rc = open_storage(&o, &st, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &l, &err);
    cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (o.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l.count; i++)
            json_array_append_new(arr, info_json(&l.items[i]));
        progs_print_json(json_pack("{s:b, s:s, s:s, s:o}", "ok", 1, "location", o.pos[0], "url",
                                   o.pos[0], "backups", arr));
    } else {
        if (l.count == 0)
            printf("no backups in %s\n", o.pos[0]);
        else
            printf("%-32s %-10s %-20s %10s %10s %6s  %s\n", "NAME", "STATUS", "CREATED", "SIZE",
                   "STORED", "FILES", "KIND");
        for (size_t i = 0; i < l.count; i++)
            info_print(&l.items[i]);
    }
    cairn_backup_list_free(&l);
    return 0;
}

/* ---- rm ---- */

static const char rm_help[] =
    "usage: cairn rm URL NAME [--with-dependents] [--prune] [--json]\n\n"
    "Remove one backup (complete or not) and every file in it. The MANIFEST goes first, so an\n"
    "interrupted removal leaves an incomplete backup, never a complete-looking partial one.\n"
    "A backup that incrementals depend on (their parent, directly or through others) is not\n"
    "removed: the command fails with exit code 2 and names them, as removing it would make them\n"
    "impossible to restore.\n"
    "It takes an exclusive lock on the location: while a backup runs there it fails with exit\n"
    "code 10, naming the lock's holder (set CAIRN_LOCK_WAIT_MS to wait; see 'cairn unlock').\n"
    "In a deduplicating repository the chunks of a removed backup stay in their packs until a\n"
    "garbage collection: --prune runs it right after the removal, under the same lock (as\n"
    "'cairn prune' always does; restic's forget --prune). Without it the space is reclaimed by\n"
    "the next 'cairn prune', 'cairn rm --prune' or cairnd retention that removes a backup.\n\n"
    "Options:\n"
    "  --with-dependents  also remove every backup that depends on NAME (newest links first)\n"
    "  --prune            then reclaim the chunks no remaining backup references\n"
    "  --json             JSON output\n\n"
    "Examples:\n"
    "  cairn rm /var/backups/db 20260101T000000Z\n"
    "  cairn rm --prune /var/backups/db 20260101T000000Z\n\n" URL_HELP;

/* Steps from item i up its parent chain to the backup being removed (for removal order). */
static size_t chain_depth(const struct cairn_backup_list *l, size_t i, const char *target)
{
    size_t d = 0;
    const char *cur = l->items[i].name;
    while (d <= l->count && strcmp(cur, target) != 0) {
        const char *par = NULL;
        for (size_t j = 0; j < l->count && par == NULL; j++)
            if (strcmp(l->items[j].name, cur) == 0)
                par = l->items[j].parent;
        if (par == NULL)
            break;
        cur = par;
        d++;
    }
    return d;
}

/* The backups to remove for `rm NAME`, children before parents; NULL-terminated names
 * borrowed from l. CAIRN_E_INVALID when NAME has dependents and they were not asked for. */
static int rm_targets(const struct cairn_backup_list *l, const char *name, int with_dependents,
                      const char ***out, struct cairn_err *err)
{
    size_t idx = l->count;
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0)
            idx = i;
    const char **v = xcalloc(l->count + 2, sizeof(*v));
    size_t n = 0;
    if (idx < l->count) {
        uint8_t *mark = xcalloc(l->count, 1);
        size_t nd = cairn_backup_dependents(l, idx, mark);
        if (nd > 0 && !with_dependents) {
            char list[1024] = "";
            for (size_t i = 0, shown = 0; i < l->count; i++)
                if (mark[i] && shown++ < 10)
                    snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                             shown > 1 ? ", " : "", l->items[i].name);
            free(mark);
            free(v);
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "backup '%s' is the parent of %zu backup(s) that need it to "
                                 "restore: %s%s; nothing removed (use --with-dependents to remove "
                                 "them too)",
                                 name, nd, list, nd > 10 ? ", ..." : "");
        }
        size_t maxd = 0, *depth = xcalloc(l->count, sizeof(*depth));
        for (size_t i = 0; i < l->count; i++)
            if (mark[i] && (depth[i] = chain_depth(l, i, name)) > maxd)
                maxd = depth[i];
        for (size_t d = maxd; d > 0; d--) /* deepest first: never an orphan left behind */
            for (size_t i = 0; i < l->count; i++)
                if (mark[i] && depth[i] == d)
                    v[n++] = l->items[i].name;
        free(depth);
        free(mark);
    }
    v[n] = name; /* not listed: removal says "not found" */
    *out = v;
    return CAIRN_OK;
}

static const struct cairn_lock_opts rm_lock_opts = {.command = "rm"};

/* The garbage collection's line (prune, rm --prune); nothing for a location without packs. */
static void print_gc(const struct cairn_gc_stats *gs)
{
    if (gs->packs == 0)
        return;
    char freed[32], total[32];
    format_bytes(gs->bytes_freed, freed, sizeof(freed));
    format_bytes(gs->bytes_total, total, sizeof(total));
    printf("chunks: %llu pack(s), %llu deleted, %llu repacked; %s of %s freed\n",
           (unsigned long long)gs->packs, (unsigned long long)gs->packs_deleted,
           (unsigned long long)gs->packs_repacked, freed, total);
}

int cmd_rm(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, rm_help, rm_opts, 2, "a storage URL and a backup name", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l = {0};
    const char **targets = NULL;
    struct cairn_lock *lock = NULL;
    int rc = open_storage(&o, &st, &err);
    if (rc == CAIRN_OK) /* no backup runs while we decide and remove */
        rc = cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &rm_lock_opts, &lock, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &l, &err);
    if (rc == CAIRN_OK)
        rc = rm_targets(&l, o.pos[1], o.with_dependents, &targets, &err);
    json_t *deps = json_array();
    for (size_t i = 0; rc == CAIRN_OK && targets[i] != NULL; i++) {
        rc = cairn_storage_remove(st, targets[i], &err);
        if (rc == CAIRN_OK && targets[i + 1] != NULL) {
            json_array_append_new(deps, json_string(targets[i]));
            if (!o.json)
                printf("removed %s (depended on %s)\n", targets[i], o.pos[1]);
        }
    }
    free(targets);
    /* --prune: the chunks no remaining backup references, still under the exclusive lock. */
    struct cairn_gc_stats gs = {0};
    if (rc == CAIRN_OK && o.prune)
        rc = cairn_storage_gc(st, NULL, &gs, &err);
    cairn_backup_list_free(&l);
    cairn_lock_release(lock);
    cairn_storage_free(st);
    if (rc != CAIRN_OK) {
        json_decref(deps);
        return progs_fail(&err);
    }
    if (o.json) {
        json_t *j = json_pack("{s:b, s:s, s:s, s:s, s:o}", "ok", 1, "name", o.pos[1], "location",
                              o.pos[0], "removed", o.pos[1], "dependents_removed", deps);
        if (o.prune)
            json_object_set_new(
                j, "gc",
                json_pack("{s:I, s:I, s:I, s:I, s:I}", "packs", (json_int_t)gs.packs,
                          "packs_deleted", (json_int_t)gs.packs_deleted, "packs_repacked",
                          (json_int_t)gs.packs_repacked, "bytes_freed", (json_int_t)gs.bytes_freed,
                          "bytes_total", (json_int_t)gs.bytes_total));
        progs_print_json(j);
    } else {
        json_decref(deps);
        printf("removed %s\n", o.pos[1]);
        print_gc(&gs);
    }
    return 0;
}

/* ---- verify ---- */

static const char verify_help[] =
    "usage: cairn verify URL NAME [--json] [--workers N] [--seal-key-file FILE]\n\n"
    "Re-read every file of a backup and check its size and SHA-256 (stored and, for compressed\n"
    "files, decompressed) against the MANIFEST. Exit code 3 when anything does not match.\n\n"
    "Options:\n"
    "  --workers N      files checked in parallel (default 4)\n"
    "  --seal-key-file FILE  also require the MANIFEST seal made with this key\n"
    "  --json           per-file results as JSON\n"
    "  --quiet          no progress line (stderr)\n\n"
    "Example:\n"
    "  cairn verify /var/backups/db 20260101T000000Z\n\n" URL_HELP;

/* One line (or JSON element) per file in MANIFEST order (cairn_backup_verify reorders the
 * results through a bounded window), printed as the checks complete: a split MANIFEST of any
 * size is never held in memory. */
struct verify_out {
    json_t *files;
    int json;
    struct progs_progress *pr; /* per file: the API reports whole files */
};

static void verify_cb(void *arg, const struct cairn_manifest_file *f, int rc,
                      const struct cairn_err *e)
{
    struct verify_out *v = arg;
    progs_progress_add(v->pr, f->size);
    progs_progress_item_done(v->pr);
    if (v->json)
        json_array_append_new(v->files,
                              json_pack("{s:s, s:I, s:I, s:b, s:o}", "name", f->name,
                                        "stored_bytes", (json_int_t)f->size, "size",
                                        (json_int_t)f->size, "ok", rc == CAIRN_OK, "error",
                                        rc == CAIRN_OK ? json_null() : json_string(e->msg)));
    else if (rc == CAIRN_OK)
        printf("ok    %s (%llu bytes)\n", f->name, (unsigned long long)f->logical_size);
    else
        printf("FAIL  %s: %s\n", f->name, e->msg);
}

int cmd_verify(int argc, char **argv)
{
    struct sopts o;
    int ec =
        prologue(argc, argv, verify_help, verify_opts, 2, "a storage URL and a backup name", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_backup *b = NULL;
    struct verify_out v = {json_array(), o.json};
    cli_catch_interrupts();
    int rc = open_storage(&o, &st, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_open_backup(st, o.pos[1], &b, &err);
    if (rc == CAIRN_OK) {
        v.pr = progs_progress_new("verify", cairn_backup_stored_size(b));
        progs_progress_total(v.pr, 0, cairn_backup_file_count(b));
        rc = cairn_backup_verify(b, (unsigned)o.workers, verify_cb, &v, &err);
        progs_progress_done(v.pr);
    }
    size_t nfiles = b ? cairn_backup_file_count(b) : 0;
    cairn_backup_free(b);
    cairn_storage_free(st);
    if (rc != CAIRN_OK) {
        if (o.json && json_array_size(v.files) > 0) {
            int code = cairn_exit_code(rc);
            json_t *j = json_pack("{s:b, s:s, s:s, s:o}", "ok", 0, "name", o.pos[1], "location",
                                  o.pos[0], "files", v.files);
            json_object_set_new(j, "error",
                                json_pack("{s:s, s:i, s:s}", "code", cairn_status_name(rc), "exit",
                                          code, "message", err.msg));
            progs_print_json(j);
            fprintf(stderr, "cairn: error: %s\n", err.msg);
            return code;
        }
        json_decref(v.files);
        return progs_fail(&err);
    }
    if (o.json)
        progs_print_json(json_pack("{s:b, s:s, s:s, s:s, s:o}", "ok", 1, "name", o.pos[1],
                                   "location", o.pos[0], "backup", o.pos[1], "files", v.files));
    else {
        json_decref(v.files);
        printf("backup %s verified: %zu file(s) match the MANIFEST\n", o.pos[1], nfiles);
    }
    return 0;
}

/* ---- prune ---- */

static const char prune_help[] =
    "usage: cairn prune URL [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
    "                   [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
    "                   [--keep-within DURATION] [--group-by source|none] [--name GLOB]\n"
    "                   [--dry-run] [--json] [--seal-key-file FILE]\n\n"
    "Remove old backups. Age is the creation time in each MANIFEST, never the name. Only\n"
    "complete backups count for the --keep rules, which apply per group (the MANIFEST's source,\n"
    "unless --group-by none); a backup is kept when any rule keeps it:\n"
    "  --keep-last N           the N newest\n"
    "  --keep-hourly N         the newest of each of the N newest hours that have one (UTC)\n"
    "  --keep-daily N          the same per day, --keep-weekly per ISO week, --keep-monthly\n"
    "  --keep-monthly N        per month and --keep-yearly per year\n"
    "  --keep-yearly N\n"
    "  --keep-within DURATION  every backup created within DURATION of now (7d, 36h, 2w, 1y)\n"
    "At least one rule is required: a policy that keeps nothing is refused (exit code 2).\n"
    "Always: the newest complete backup of each group is kept; a kept backup keeps its whole\n"
    "parent chain (incrementals need it to restore), whatever its group; backups created more\n"
    "than 5 minutes in the future (a clock that was ahead) are kept, reported, and counted by\n"
    "no rule; incomplete backups whose name sorts before the newest complete one are removed\n"
    "(failed attempts), later ones are kept (they may be running); corrupt ones are kept for a\n"
    "human to inspect. With no complete backup at all nothing is removed.\n"
    "Unless --dry-run, prune takes an exclusive lock on the location: while a backup runs there\n"
    "it fails with exit code 10, naming the lock's holder (CAIRN_LOCK_WAIT_MS=N waits up to N\n"
    "ms; see 'cairn unlock').\n\n"
    "Options:\n"
    "  --name GLOB  only consider backups whose name matches (fnmatch); others are untouched\n"
    "  --dry-run    only print, for every backup, what would happen and why\n"
    "  --json       JSON output (with a decision and reason per backup)\n\n"
    "Examples:\n"
    "  cairn prune /var/backups/db --keep-last 7 --dry-run\n"
    "  cairn prune s3://b/db --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 12\n"
    "  cairn prune /var/backups/db --keep-within 2w --name 'nightly-*'\n\n" URL_HELP;

static const char *action_name(enum cairn_retention_action a)
{
    return a == CAIRN_RETAIN_REMOVE ? "remove" : a == CAIRN_RETAIN_SKIP ? "skip" : "keep";
}

/* Print (text) or record (JSON) one decision; remove the backup unless dry-run. */
static int prune_one(struct cairn_storage *st, const struct sopts *o,
                     const struct cairn_backup_info *it, const struct cairn_retention_decision *d,
                     json_t *decisions, struct cairn_err *err)
{
    const char *status = cairn_backup_status_name(it->status);
    if (d->warning != NULL)
        fprintf(stderr, "cairn: warning: %s: %s\n", it->name, d->warning);
    int r = CAIRN_OK;
    if (d->action == CAIRN_RETAIN_REMOVE && !o->dry_run)
        r = cairn_storage_remove(st, it->name, err);
    char created[64] = "";
    if (it->created >= 0)
        format_rfc3339(it->created, 0, created, sizeof(created));
    json_array_append_new(
        decisions, json_pack("{s:s, s:s, s:o, s:s, s:s, s:o, s:o}", "name", it->name, "status",
                             status, "created", created[0] ? json_string(created) : json_null(),
                             "action", action_name(d->action), "reason", d->reason ? d->reason : "",
                             "warning", d->warning ? json_string(d->warning) : json_null(), "error",
                             r != CAIRN_OK ? json_string(err->msg) : json_null()));
    if (o->json)
        return r;
    const char *verb = d->action != CAIRN_RETAIN_REMOVE ? "keep   "
                       : r != CAIRN_OK                  ? "FAILED "
                       : o->dry_run                     ? "would remove"
                                                        : "removed";
    printf("%s %s (%s): %s%s%s\n", verb, it->name, status, d->reason ? d->reason : "",
           r != CAIRN_OK ? ": " : "", r != CAIRN_OK ? err->msg : "");
    return r;
}

/* cairn prune: plan, print, then remove. Long (85 lines): the plan and its two outputs (table
 * and --json) read in order; the CLI issue splits it. */
int cmd_prune(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, prune_help, prune_opts, 1, "a storage URL", &o);
    if (ec >= 0)
        return ec;
    o.keep.group_by_source = o.group_by == NULL || strcmp(o.group_by, "source") == 0;
    o.keep.now = (int64_t)time(NULL);
    if (!cairn_retention_policy_keeps(&o.keep))
        return progs_usage("prune", "this policy keeps nothing: give at least one of --keep-last, "
                                    "--keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, "
                                    "--keep-yearly (N >= 1) or --keep-within");
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_backup_list l = {0};
    struct cairn_retention_plan plan = {0};
    cli_catch_interrupts();
    struct cairn_lock *lock = NULL;
    static const struct cairn_lock_opts lock_opts = {.command = "prune"};
    int rc = open_storage(&o, &st, &err);
    /* Exclusive: no backup is running, so an incomplete one is a failed attempt, and no
     * backup can name as its parent one that is being removed. A dry run only reads. */
    if (rc == CAIRN_OK && !o.dry_run)
        rc = cairn_storage_lock(st, CAIRN_LOCK_EXCLUSIVE, &lock_opts, &lock, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_list(st, &l, &err);
    if (rc == CAIRN_OK)
        rc = cairn_retention_plan(&l, &o.keep, &plan, &err);
    if (rc != CAIRN_OK) {
        cairn_backup_list_free(&l);
        cairn_lock_release(lock);
        cairn_storage_free(st);
        return progs_fail(&err);
    }
    json_t *removed = json_array(), *kept = json_array(), *failed = json_array();
    json_t *decisions = json_array();
    int first_rc = CAIRN_OK;
    struct cairn_err first_err;
    cairn_err_clear(&first_err);
    for (size_t i = 0; i < l.count; i++) {
        const struct cairn_backup_info *it = &l.items[i];
        /* Between backups only: a removal once started is finished (MANIFEST first), so an
         * interrupted prune leaves every backup either complete or gone. */
        if (cancel_requested(&cli_cancel)) {
            first_rc = cairn_err_set(&first_err, CAIRN_E_CANCELLED,
                                     "prune cancelled: %zu backup(s) not considered, none of "
                                     "them removed",
                                     l.count - i);
            break;
        }
        int r = prune_one(st, &o, it, &plan.items[i], decisions, &err);
        if (r != CAIRN_OK) {
            json_array_append_new(failed,
                                  json_pack("{s:s, s:s}", "name", it->name, "error", err.msg));
            if (first_rc == CAIRN_OK) {
                first_rc = r;
                cairn_err_copy(&first_err, &err);
            }
        } else {
            json_array_append_new(plan.items[i].action == CAIRN_RETAIN_REMOVE ? removed : kept,
                                  json_string(it->name));
        }
    }
    /* A deduplicating repository: reclaim the chunks no remaining backup references, still
     * under the exclusive lock (a plain location has nothing to collect). */
    struct cairn_gc_stats gs = {0};
    if (first_rc == CAIRN_OK && !o.dry_run) {
        first_rc = cairn_storage_gc(st, NULL, &gs, &first_err);
        if (first_rc == CAIRN_OK && !o.json)
            print_gc(&gs);
    }
    size_t nwarn = plan.warnings;
    cairn_retention_plan_free(&plan);
    cairn_backup_list_free(&l);
    cairn_lock_release(lock);
    cairn_storage_free(st);
    int code = first_rc == CAIRN_OK ? 0 : cairn_exit_code(first_rc);
    if (o.json) {
        json_t *j =
            json_pack("{s:b, s:s, s:b, s:o, s:o, s:o, s:o, s:I}", "ok", first_rc == CAIRN_OK,
                      "location", o.pos[0], "dry_run", o.dry_run, "removed", removed, "kept", kept,
                      "failed", failed, "decisions", decisions, "warnings", (json_int_t)nwarn);
        if (first_rc != CAIRN_OK) /* the partial result, and the error as every command has it */
            json_object_set_new(j, "error",
                                json_pack("{s:s, s:i, s:s}", "code", cairn_status_name(first_rc),
                                          "exit", code, "message", first_err.msg));
        progs_print_json(j);
    } else {
        json_decref(removed);
        json_decref(kept);
        json_decref(failed);
        json_decref(decisions);
    }
    if (first_rc != CAIRN_OK)
        fprintf(stderr, "cairn: error: %s\n", first_err.msg);
    return code;
}

/* ---- unlock ---- */

static const char unlock_help[] =
    "usage: cairn unlock URL [--all] [--json]\n\n"
    "Remove stale locks from a storage location. Backups (backup, put, cairnd) hold a shared\n"
    "lock while they run; prune and rm an exclusive one. A lock is refreshed every 30 s while\n"
    "held; one not refreshed for 4 periods, or held by a process of this host that no longer\n"
    "exists, is stale. Commands take stale locks over by themselves (with a warning); this\n"
    "command removes them and lists every lock it finds.\n\n"
    "Options:\n"
    "  --all    remove every lock, also live ones. DANGEROUS: only when you know no cairn\n"
    "           process uses the location (a running backup then fails; a prune could run\n"
    "           beside a backup). --force means the same.\n"
    "  --json   JSON output\n\n"
    "Example:\n"
    "  cairn unlock /var/backups/db\n\n" URL_HELP;

static json_t *lock_json(const struct cairn_lock_info *li, int removed)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:b, s:b}", "object", li->object, "mode",
                     li->exclusive ? "exclusive" : "shared", "host", li->host, "pid",
                     (json_int_t)li->pid, "command", li->command, "started_ms",
                     (json_int_t)li->started_ms, "refreshed_ms", (json_int_t)li->refreshed_ms,
                     "stale", li->stale, "removed", removed);
}

int cmd_unlock(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, unlock_help, unlock_opts, 1, "a storage URL", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    struct cairn_lock_list removed = {0}, left = {0};
    int rc = open_storage(&o, &st, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_unlock(st, o.all, &removed, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_locks(st, &left, &err);
    cairn_storage_free(st);
    if (rc != CAIRN_OK) {
        cairn_lock_list_free(&removed);
        return progs_fail(&err);
    }
    int64_t now = (int64_t)now_ms();
    json_t *arr = json_array();
    char desc[700];
    for (size_t i = 0; i < removed.count + left.count; i++) {
        const struct cairn_lock_info *li =
            i < removed.count ? &removed.items[i] : &left.items[i - removed.count];
        cairn_lock_describe(li, now, desc, sizeof(desc));
        if (o.json)
            json_array_append_new(arr, lock_json(li, i < removed.count));
        else
            printf("%s %s: %s\n", i < removed.count ? "removed" : "kept   ", li->object, desc);
    }
    if (o.json)
        progs_print_json(json_pack("{s:b, s:s, s:I, s:o}", "ok", 1, "location", o.pos[0], "removed",
                                   (json_int_t)removed.count, "locks", arr));
    else {
        json_decref(arr);
        printf("%zu lock(s) removed, %zu left\n", removed.count, left.count);
    }
    cairn_lock_list_free(&removed);
    cairn_lock_list_free(&left);
    return 0;
}

/* ---- put / get (local paths) ---- */

static const char put_help[] =
    "usage: cairn put URL NAME PATH [--zstd[=LEVEL]] [--workers N] [--seal-key-file FILE] "
    "[--force-read] [--json]\n\n"
    "Store a local file or directory tree as backup NAME (regular files and directories;\n"
    "symlinks, devices, FIFOs and sockets are skipped with a warning). Files are transferred\n"
    "in parallel; the MANIFEST is written last, so an interrupted put never looks complete.\n"
    "A live tree is fine: files that vanish before they are read are skipped and counted\n"
    "(\"vanished\"), files that change while read are stored as read and counted (\"changed\").\n"
    "On failure the partial backup is removed. NAME 'auto' means a UTC timestamp name.\n"
    "URL must be a repository: 'cairn init' it once (exit 2 until then).\n"
    "A shared lock on the location is held while it runs: prune and rm wait for it (exit\n"
    "code 10 while one of them holds the location).\n\n"
    "Options:\n"
    "  --zstd[=LEVEL]   compress with zstd (default level 3) every file it shrinks: files of\n"
    "                   1 MiB or more that zstd -1 cannot shrink by 1/8 are stored as is\n"
    "  --workers N      files in parallel (default 4)\n"
    "  --force-read     read every file; in a deduplicating repository a file unchanged since\n"
    "                   the last backup of PATH (same size, mtime, ctime, inode) is otherwise\n"
    "                   taken from it unread\n"
    "  --seal-key-file FILE  seal the MANIFEST with HMAC-SHA-256\n"
    "  --quiet          no progress line (stderr)\n\n"
    "Example:\n"
    "  cairn put /var/backups/etc auto /etc --zstd\n\n" URL_HELP;

static void progress_cb(void *arg, uint64_t bytes)
{
    progs_progress_add(arg, bytes);
}

static void plan_cb(void *arg, uint64_t files, uint64_t bytes)
{
    progs_progress_total(arg, bytes, files);
}

static void file_done_cb(void *arg)
{
    progs_progress_item_done(arg);
}

int cmd_put(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, put_help, put_opts, 3,
                      "a storage URL, a backup name and a local path", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    char name[CAIRN_NAME_MAX + 1];
    int autoname = strcmp(o.pos[1], "auto") == 0;
    if (!autoname && strlen(o.pos[1]) >= sizeof(name)) { /* refused, never truncated */
        cairn_err_set(&err, CAIRN_E_INVALID, "backup name of %zu characters: at most %d",
                      strlen(o.pos[1]), CAIRN_NAME_MAX);
        return progs_fail(&err);
    }
    snprintf(name, sizeof(name), "%s", o.pos[1]);
    struct cairn_storage *st = NULL;
    int rc = open_storage(&o, &st, &err);
    if (rc == CAIRN_OK && (rc = cairn_storage_check_new_backup(st, &err)) != CAIRN_OK)
        cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    struct progs_progress *pr = progs_progress_new("put", 0);
    progs_progress_scan(pr, o.pos[2]);
    struct cairn_path_stats stats = {0};
    struct cairn_path_opts po = {.workers = (unsigned)o.workers,
                                 .progress = progress_cb,
                                 .progress_arg = pr,
                                 .file_done = file_done_cb,
                                 .stats = &stats,
                                 .cancel = &cli_cancel,
                                 .force_read = o.force_read};
    cli_catch_interrupts();
    if (o.zstd) {
        po.file.compression = CAIRN_COMPRESS_AUTO;
        po.file.level = o.zstd_level;
    }
    rc = autoname
             ? cairn_storage_backup_path_auto(st, NULL, name, sizeof(name), o.pos[2], &po, &err)
             : cairn_storage_backup_path(st, name, o.pos[2], &po, &err);
    progs_progress_done(pr);
    cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (o.json) {
        progs_print_json(json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "ok", 1, "name",
                                   name, "location", o.pos[0], "backup", name, "vanished",
                                   (json_int_t)stats.vanished, "changed", (json_int_t)stats.changed,
                                   "unchanged_files", (json_int_t)stats.unchanged_files,
                                   "unchanged_bytes", (json_int_t)stats.unchanged_bytes));
    } else {
        printf("backup %s complete\n", name);
        if (stats.unchanged_files)
            printf("unchanged since the last backup (not read): %llu file(s), %llu bytes\n",
                   (unsigned long long)stats.unchanged_files,
                   (unsigned long long)stats.unchanged_bytes);
        if (stats.vanished || stats.changed)
            printf("live data: %llu file(s) vanished before they were read (skipped), %llu "
                   "changed while read (stored as read)\n",
                   (unsigned long long)stats.vanished, (unsigned long long)stats.changed);
    }
    return 0;
}

static const char get_help[] =
    "usage: cairn get URL NAME DIR [--force] [--workers N] [--seal-key-file FILE] [--json]\n\n"
    "Restore a backup made by 'cairn put' into DIR, which must not exist or be empty. The\n"
    "tree is written into a temporary directory beside DIR, every file is verified against\n"
    "the MANIFEST, and only then is it moved into place: on any failure DIR is as it was.\n"
    "Nothing is written outside DIR and no symlink in it is followed.\n\n"
    "Options:\n"
    "  --force  restore into a non-empty DIR, replacing files of the same name (exit 6\n"
    "           without it, naming what is in the way)\n"
    "  --quiet  no progress line (stderr)\n\n"
    "Example:\n"
    "  cairn get /var/backups/etc 20260101T000000Z /tmp/etc-restored\n\n" URL_HELP;

int cmd_get(int argc, char **argv)
{
    struct sopts o;
    int ec = prologue(argc, argv, get_help, get_opts, 3,
                      "a storage URL, a backup name and a target directory", &o);
    if (ec >= 0)
        return ec;
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    int rc = open_storage(&o, &st, &err);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    struct progs_progress *pr = progs_progress_new("get", 0);
    struct cairn_path_opts po = {.workers = (unsigned)o.workers,
                                 .progress = progress_cb,
                                 .progress_arg = pr,
                                 .plan = plan_cb,
                                 .file_done = file_done_cb,
                                 .force = o.force,
                                 .cancel = &cli_cancel};
    cli_catch_interrupts();
    rc = cairn_storage_restore_path(st, o.pos[1], o.pos[2], &po, &err);
    progs_progress_done(pr);
    cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (o.json)
        progs_print_json(json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", 1, "name", o.pos[1],
                                   "location", o.pos[0], "target", o.pos[2], "backup", o.pos[1]));
    else
        printf("restored %s into %s\n", o.pos[1], o.pos[2]);
    return 0;
}
