/* cairn restore: apply an InfluxDB backup online (cairnd serve or influxd, requests 6 and 7)
 * or offline into the legacy `influxd backup` layout that `influxd restore` reads. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cairn/engine.h"
#include "cairn/influx.h"
#include "common/util.h"
#include "interrupt.h"
#include "progs/progs.h"

static void restore_usage(FILE *out)
{
    fprintf(
        out,
        "usage: cairn restore STORAGE_URL NAME --to HOST:PORT [--db X [--newdb Y]\n"
        "                     [--rp R [--newrp S]]] [--timeout MS] [--tls...] [--json]\n"
        "       cairn restore STORAGE_URL NAME --into DIR [--db X] [--force] [--json]\n\n"
        "Every file of NAME and of the backups it is incremental to is verified (size and\n"
        "SHA-256) before anything is applied.\n\n"
        "  --to     online restore through the snapshot service of cairnd serve or influxd\n"
        "           1.6; the target database must not exist (rename it with --newdb)\n"
        "  --into   offline: write meta.NN and <db>.<rp>.<id>.NN files (one NN per backup\n"
        "           of the chain) for `influxd restore -metadir M -datadir D -database X DIR`;\n"
        "           files are moved into DIR only once all of them are written\n"
        "           (a backup of a local path is restored into DIR as it was: into a\n"
        "           temporary directory beside DIR, moved into place only once every\n"
        "           file verified; DIR must not exist or be empty)\n"
        "  --force  a local path into a non-empty DIR, replacing files of the same name\n"
        "  --include PATTERN, --exclude PATTERN (repeatable; a local path only)\n"
        "           restore only what matches an include (and the directories above it),\n"
        "           leaving out what matches an exclude; a match of a directory covers\n"
        "           everything in it. PATTERN is fnmatch(3)-style: without '/' it matches\n"
        "           a name at any depth, with '/' the path from the backup's root\n"
        "  --numeric-owner  set owners by uid/gid, not by the recorded user/group names\n"
        "  --acls   set POSIX ACLs too (always recorded; set as root or by the owner)\n"
        "  --db     only this database; --rp only this retention policy (online)\n"
        "  --quiet  no progress line (stderr)\n"
        "  --key-file FILE, --repo-password-file FILE  the key of an encrypted STORAGE_URL\n\n"
        "%s%s"
        "Examples:\n"
        "  cairn restore /srv/backups/influx 20260101T000000.000Z --into /srv/restore\n"
        "  cairn restore /srv/backups/influx nightly --to 127.0.0.1:8088 --db app --newdb "
        "app_restored\n"
        "  cairn restore /srv/backups/etc etc-2026 --into ./etc-restored --force --json\n"
        "  cairn restore file:///srv/bk etc-2026 --into /tmp/etc --include 'ssh/*'\n"
        "  cairn restore file:///srv/bk home --into /tmp/h --exclude '*.cache' --exclude '/tmp'\n\n"
        "%s",
        progs_tls_help, progs_secret_help, progs_exit_codes_help);
}

const struct option restore_opts[] = {{"to", required_argument, NULL, 't'},
                                      {"into", required_argument, NULL, 'i'},
                                      {"db", required_argument, NULL, 'd'},
                                      {"newdb", required_argument, NULL, 'D'},
                                      {"rp", required_argument, NULL, 'r'},
                                      {"newrp", required_argument, NULL, 'R'},
                                      {"timeout", required_argument, NULL, 'T'},
                                      {"json", no_argument, NULL, 'j'},
                                      {"quiet", no_argument, NULL, 'q'},
                                      {"force", no_argument, NULL, 'f'},
                                      {"key-file", required_argument, NULL, 'K'},
                                      {"repo-password-file", required_argument, NULL, 'W'},
                                      {"include", required_argument, NULL, 'I'},
                                      {"exclude", required_argument, NULL, 'X'},
                                      {"numeric-owner", no_argument, NULL, 'N'},
                                      {"acls", no_argument, NULL, 'A'},
                                      {"help", no_argument, NULL, 'h'},
                                      PROGS_TLS_OPTIONS,
                                      {NULL, 0, NULL, 0}};

int cmd_restore(int argc, char **argv)
{
    struct cairn_engine_restore_opts o = {0};
    struct cairn_influx_tls_opts tls = {0};
    const char *key_file = NULL, *repo_pw = NULL;
    int tls_on = 0;
    enum { MAX_PATTERNS = 64 };
    const char *inc[MAX_PATTERNS + 1] = {NULL}, *exc[MAX_PATTERNS + 1] = {NULL};
    size_t ninc = 0, nexc = 0;
    o.include = inc;
    o.exclude = exc;
    uint64_t v;
    int c;
    struct progs_getopt g = {.cmd = "restore", .opts = restore_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        if (progs_tls_option(c, optarg, &tls, &tls_on))
            continue;
        switch (c) {
        case 't': o.target = optarg; break;
        case 'i': o.into_dir = optarg; break;
        case 'd': o.db = optarg; break;
        case 'D': o.newdb = optarg; break;
        case 'r': o.rp = optarg; break;
        case 'R': o.newrp = optarg; break;
        case 'T':
            if (progs_parse_u64(optarg, &v) != 0 || v == 0 || v > 3600000)
                return progs_usage("restore", "invalid --timeout '%s'", optarg);
            o.connect_timeout_ms = o.io_timeout_ms = (int)v;
            break;
        case 'f': o.force = 1; break;
        case 'I':
        case 'X':
            if ((c == 'I' ? ninc : nexc) == MAX_PATTERNS)
                return progs_usage("restore", "more than %d --include or --exclude patterns",
                                   MAX_PATTERNS);
            if (c == 'I')
                inc[ninc++] = optarg;
            else
                exc[nexc++] = optarg;
            break;
        case 'N': o.numeric_owner = 1; break;
        case 'A': o.acls = 1; break;
        case 'K': key_file = optarg; break;
        case 'W': repo_pw = optarg; break;
        case 'j': progs_json = 1; break;
        case 'q': progs_quiet = 1; break;
        case 'h': restore_usage(stdout); return 0;
        default: return g.code;
        }
    }
    if ((c = progs_positionals(&g, 2, 2, "STORAGE_URL and NAME")) >= 0)
        return c;
    o.storage_url = progs_location(argv[optind]);
    o.name = argv[optind + 1];
    if ((o.target == NULL) == (o.into_dir == NULL))
        return progs_usage("restore", "give exactly one of --to HOST:PORT and --into DIR");
    if ((ninc > 0 || nexc > 0 || o.numeric_owner || o.acls) && o.into_dir == NULL)
        return progs_usage("restore",
                           "--include, --exclude, --numeric-owner and --acls need --into DIR");
    if (tls_on && o.target == NULL)
        return progs_usage("restore", "the --tls options need --to HOST:PORT");
    if (tls_on)
        o.tls = &tls;
    struct progs_secret sec;
    struct cairn_err serr = {0};
    if (progs_secret_load(key_file, repo_pw, &sec, &serr) != CAIRN_OK)
        return progs_fail(&serr);
    o.secret = progs_secret(&sec);

    cli_catch_interrupts();
    o.cancel = &cli_cancel;
    struct progs_progress *prog = progs_progress_new("restore", 0);
    o.progress = cli_engine_progress;
    o.progress_ctx = prog;
    struct cairn_engine_restore_result res;
    struct cairn_err err = {0};
    int rc = cairn_engine_restore(&o, &res, &err);
    progs_secret_free(&sec);
    progs_progress_done(prog);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    if (progs_json) {
        progs_print_json(json_pack("{s:b, s:s, s:s, s:s, s:i, s:i, s:i, s:I, s:f}", "ok", 1, "name",
                                   o.name, "location", o.storage_url, "target",
                                   o.target ? o.target : o.into_dir, "backups", (int)res.backups,
                                   "databases", (int)res.databases, "shards", (int)res.shards,
                                   "bytes", (json_int_t)res.bytes, "seconds", res.seconds));
    } else {
        char sz[32];
        format_bytes(res.bytes, sz, sizeof(sz));
        if (res.shards == 0 && res.databases == 0)
            printf("restored %s to %s: %s in %.1f s\n", o.name, o.target ? o.target : o.into_dir,
                   sz, res.seconds);
        else
            printf("restored %s (%u backup(s)) to %s: %u shard stream(s), %s in %.1f s\n", o.name,
                   res.backups, o.target ? o.target : o.into_dir, res.shards, sz, res.seconds);
    }
    return 0;
}
