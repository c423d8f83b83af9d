/* cairn check: the structure (and with --read-data the data) of a deduplicating repository's
 * chunk store. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/storage.h"
#include "progs/progs.h"

static const char check_help[] =
    "usage: cairn check STORAGE_URL [--read-data | --read-data-subset N%] [--json]\n\n"
    "Check a deduplicating repository (docs/FORMAT.md \"Chunk store\"): every complete\n"
    "backup's chunk lists are read and authenticated, every chunk they name must be in the\n"
    "index, and every pack holding one must exist. --read-data also reads every pack and\n"
    "authenticates every blob in it (--read-data-subset: about N% of the packs). Takes a\n"
    "shared lock. A location without a chunk store has nothing to check here (use verify).\n"
    "Exit code 3 names the first missing or damaged chunk or pack.\n\n"
    "  --read-data             read and authenticate every pack\n"
    "  --read-data-subset N%   about N% of the packs\n"
    "  --key-file FILE, --password-file FILE  the repository's key\n"
    "  --json                  one JSON object on stdout\n\n"
    "Examples:\n"
    "  cairn check file:///srv/backups\n"
    "  cairn check 's3://bkt/etcd?region=eu-west-1' --read-data-subset 10% --json\n\n";

const struct option check_opts[] = {{"read-data", no_argument, NULL, 'r'},
                                    {"read-data-subset", required_argument, NULL, 's'},
                                    {"key-file", required_argument, NULL, 'k'},
                                    {"password-file", required_argument, NULL, 'p'},
                                    {"json", no_argument, NULL, 'j'},
                                    {"help", no_argument, NULL, 'h'},
                                    {NULL, 0, NULL, 0}};

int cmd_check(int argc, char **argv)
{
    struct cairn_check_opts co = {0};
    const char *key_file = NULL, *pw_file = NULL;
    int c;
    struct progs_getopt g = {.cmd = "check", .opts = check_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        switch (c) {
        case 'r': co.read_data_percent = 100; break;
        case 's': {
            char *end = NULL;
            long v = strtol(g.arg, &end, 10);
            if (end == g.arg || (*end != '\0' && strcmp(end, "%") != 0) || v < 1 || v > 100)
                return progs_usage("check", "invalid --read-data-subset '%s' (1%%..100%%)", g.arg);
            co.read_data_percent = (unsigned)v;
            break;
        }
        case 'k': key_file = g.arg; break;
        case 'p': pw_file = g.arg; break;
        case 'j': progs_json = 1; break;
        case 'h': printf("%s%s%s", check_help, progs_secret_help, progs_exit_codes_help); return 0;
        default: return g.code;
        }
    }
    if ((c = progs_positionals(&g, 1, 1, "a storage URL")) >= 0)
        return c;
    const char *loc = progs_location(argv[optind]);
    struct cairn_err err = {0};
    struct progs_secret sec = {0};
    struct cairn_storage *st = NULL;
    struct cairn_lock *lock = NULL;
    static const struct cairn_lock_opts lo = {.command = "check"};
    int rc = progs_secret_load(key_file, pw_file, &sec, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_open(loc, &st, &err);
    if (rc == CAIRN_OK && progs_secret(&sec) != NULL)
        rc = cairn_storage_set_secret(st, progs_secret(&sec), &err);
    progs_secret_free(&sec);
    if (rc == CAIRN_OK)
        rc = cairn_storage_lock(st, CAIRN_LOCK_SHARED, &lo, &lock, &err);
    struct cairn_check_stats s = {0};
    if (rc == CAIRN_OK)
        rc = cairn_storage_check(st, &co, &s, &err);
    cairn_lock_release(lock);
    cairn_storage_free(st);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (progs_json) {
        json_t *out = progs_json_result();
        json_object_set_new(out, "location", json_string(loc));
        json_object_update_new(
            out, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "backups", (json_int_t)s.backups,
                           "chunks", (json_int_t)s.chunks, "packs", (json_int_t)s.packs,
                           "packs_read", (json_int_t)s.packs_read, "blobs_read",
                           (json_int_t)s.blobs_read, "bytes_read", (json_int_t)s.bytes_read));
        progs_print_json(out);
    } else
        printf("check ok: %llu backup(s), %llu chunk(s) in %llu pack(s); %llu pack(s), %llu "
               "blob(s), %llu bytes read and authenticated\n",
               (unsigned long long)s.backups, (unsigned long long)s.chunks,
               (unsigned long long)s.packs, (unsigned long long)s.packs_read,
               (unsigned long long)s.blobs_read, (unsigned long long)s.bytes_read);
    return 0;
}
