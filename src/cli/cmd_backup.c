/* cairn backup: pull a snapshot service (cairnd serve, influxd 1.6) or a local path into a new
 * backup in backup storage. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn/engine.h"
#include "cairn/source.h"
#include "cairn/log.h"
#include "cairn/influx.h"
#include "common/util.h"
#include "interrupt.h"
#include "progs/progs.h"

static void backup_usage(FILE *out)
{
    fprintf(out,
            "usage: cairn backup --from SOURCE --to STORAGE_URL [--name NAME]\n"
            "                    [--db NAME [--rp RP]] [--since TIME [--full-if-no-parent]]\n"
            "                    [--start TIME] [--end TIME]\n"
            "                    [--parallel N] [--timeout MS] [--source-timeout DURATION]\n"
            "                    [--password-file FILE] [--force-read]\n"
            "                    [--tls...] [--json]\n\n"
            "Back up a service (etcd, Redis, PostgreSQL, Consul, Vault, any command, an\n"
            "InfluxDB snapshot service: cairnd serve, or influxd 1.5+ on its bind-address, by\n"
            "default port 8088)\n"
            "or a local file/directory into a new backup in STORAGE_URL\n"
            "(file:///dir or s3://bucket/prefix?...). The MANIFEST is written last. Every byte\n"
            "is hashed with SHA-256; files and shards are compressed with zstd -1 where that\n"
            "saves 1/8 or more and stored as they are otherwise (TSM, random or encrypted data).\n"
            "STORAGE_URL must be a repository: 'cairn init' it once (exit 2 until then).\n\n"
            "  --from       the source (docs/SOURCES.md):\n"
            "                 etcd://[USER:PASSWORD@]HOST[:2379]  (etcds:// over TLS)\n"
            "                 redis://[[USER]:PASSWORD@]HOST[:6379]  (rediss:// over TLS)\n"
            "                 consul://[:TOKEN@]HOST[:8500][?stale][&dc=DC]  (consuls:// HTTPS)\n"
            "                 vault://[:TOKEN@]HOST[:8200]  (vaults:// HTTPS; raft storage)\n"
            "                 postgresql://[USER[:PASSWORD]@]HOST[:5432][/DB]  base backup + WAL\n"
            "                 exec:COMMAND      stores COMMAND's stdout (run by sh -c)\n"
            "                 HOST:PORT or influxdb://HOST:PORT  an InfluxDB snapshot service\n"
            "                 a path (starting with / or ., or existing) or file:///path\n"
            "  --password-file FILE  the source's password or token, first line of FILE (mode\n"
            "               0600); Consul and Vault also read CONSUL_HTTP_TOKEN / VAULT_TOKEN\n"
            "  --name       backup name, at most 127 characters (default: UTC start time\n"
            "               YYYYMMDDTHHMMSS.mmmZ, never one that exists)\n"
            "  --db, --rp   only this database (and retention policy); default all but _internal\n"
            "  --since      RFC 3339 time: incremental backup of shard files modified after it;\n"
            "               its parent is the newest complete backup in STORAGE_URL of the same\n"
            "               --from (as written) holding the --db/--rp asked for (the same or\n"
            "               wider filters); with none it fails (exit 5)\n"
            "  --full-if-no-parent  with --since and no such parent, take a full backup\n"
            "  --start, --end  RFC 3339 times: a time-bounded InfluxDB backup holding exactly\n"
            "               the points in [start, end] (shard exports, as influxd backup\n"
            "               -start/-end; either side may be left open); not with --since\n"
            "  --parallel   shards downloaded at once (default 4)\n"
            "  --timeout    connect and idle timeout in ms (default 10000 / 60000)\n"
            "  --source-timeout DURATION  the longest a source's whole snapshot may take (30m,\n"
            "               2h; default none): then it is cancelled and fails (exit 8)\n"
            "  --force-read  a local path: read every file, also those unchanged (same size,\n"
            "               mtime, ctime and inode) since the last backup of the path, which a\n"
            "               deduplicating repository otherwise takes from it unread\n"
            "  --json       print a JSON summary on stdout\n"
            "  --quiet      no progress line (stderr)\n"
            "  --key-file FILE, --repo-password-file FILE  the key of an encrypted STORAGE_URL\n"
            "               (--password-file is the source's); else the variables below\n\n%s%s"
            "Examples:\n"
            "  cairn backup --from etcd://10.0.0.5:2379 --to s3://bkt/etcd\n"
            "  REDISCLI_AUTH=... cairn backup --from redis://cache1 --to file:///srv/backups\n"
            "  cairn backup --from 'exec:pg_dump -Fc app' --to file:///srv/backups --name app\n"
            "Over TLS with a client certificate:\n"
            "  cairn backup --from db1.example:8088 --to file:///srv/backups \\\n"
            "      --tls-ca ca.pem --tls-cert client.pem --tls-key client.key\n\n%s",
            progs_tls_help, progs_secret_help, progs_exit_codes_help);
}

/* The summary on stdout, as --json or a line; the source shown redacted, as in the log. */
static void print_result(const char *source, const char *location,
                         const struct cairn_engine_backup_result *r)
{
    char shown[4096]; /* the source as logs and MANIFESTs show it: no password */
    if (cairn_source_redact(source, shown, sizeof(shown)) != CAIRN_OK)
        snprintf(shown, sizeof(shown), "(redacted)");
    if (progs_json) {
        /* bytes: before compression (docs/JSON.md) */
        progs_print_json(json_pack(
            "{s:b, s:s, s:s, s:s?, s:b, s:s, s:i, s:i, s:I, s:I, s:f, s:I, s:I, s:I, s:I}", "ok", 1,
            "name", r->name, "location", location, "parent", r->parent[0] ? r->parent : NULL,
            "full_no_parent", r->full_no_parent, "source", shown, "databases", (int)r->databases,
            "shards", (int)r->shards, "files", (json_int_t)r->files, "bytes", (json_int_t)r->bytes,
            "seconds", r->seconds, "vanished", (json_int_t)r->vanished, "changed",
            (json_int_t)r->changed, "unchanged_files", (json_int_t)r->unchanged_files,
            "unchanged_bytes", (json_int_t)r->unchanged_bytes));
    } else {
        char sz[32];
        format_bytes(r->bytes, sz, sizeof(sz));
        char dbs[64] = ""; /* InfluxDB only: a path or another source has neither */
        if (r->databases || r->shards)
            snprintf(dbs, sizeof(dbs), "%u database(s), %u shard(s), ", r->databases, r->shards);
        printf("backup %s: %s%llu file(s), %s before compression in %.1f s%s%s\n", r->name, dbs,
               (unsigned long long)r->files, sz, r->seconds,
               r->parent[0] ? ", incremental to " : "", r->parent);
        if (r->full_no_parent)
            printf("no parent of the same source and scope: took a full backup\n");
        if (r->unchanged_files) {
            char us[32];
            format_bytes(r->unchanged_bytes, us, sizeof(us));
            printf("unchanged since the last backup (not read): %llu file(s), %s\n",
                   (unsigned long long)r->unchanged_files, us);
        }
        if (r->vanished || r->changed)
            printf("live data: %llu file(s) vanished before they were read (skipped), %llu "
                   "changed while read (stored as read)\n",
                   (unsigned long long)r->vanished, (unsigned long long)r->changed);
    }
}

const struct option backup_opts[] = {{"from", required_argument, NULL, 'f'},
                                     {"to", required_argument, NULL, 't'},
                                     {"name", required_argument, NULL, 'n'},
                                     {"db", required_argument, NULL, 'd'},
                                     {"rp", required_argument, NULL, 'r'},
                                     {"since", required_argument, NULL, 's'},
                                     {"full-if-no-parent", no_argument, NULL, 'F'},
                                     {"start", required_argument, NULL, 'S'},
                                     {"end", required_argument, NULL, 'E'},
                                     {"parallel", required_argument, NULL, 'p'},
                                     {"timeout", required_argument, NULL, 'T'},
                                     {"source-timeout", required_argument, NULL, 'O'},
                                     {"json", no_argument, NULL, 'j'},
                                     {"quiet", no_argument, NULL, 'q'},
                                     {"force-read", no_argument, NULL, 'R'},
                                     {"password-file", required_argument, NULL, 'P'},
                                     {"key-file", required_argument, NULL, 'K'},
                                     {"repo-password-file", required_argument, NULL, 'W'},
                                     {"help", no_argument, NULL, 'h'},
                                     PROGS_TLS_OPTIONS,
                                     {NULL, 0, NULL, 0}};

int cmd_backup(int argc, char **argv)
{
    struct cairn_engine_backup_opts o = {0};
    struct cairn_influx_tls_opts tls = {0};
    const char *key_file = NULL, *repo_pw = NULL;
    int tls_on = 0;
    uint64_t v;
    int c;
    struct progs_getopt g = {.cmd = "backup", .opts = backup_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        if (progs_tls_option(c, optarg, &tls, &tls_on))
            continue;
        switch (c) {
        case 'f': o.source = optarg; break;
        case 't': o.storage_url = progs_location(optarg); break;
        case 'n': o.name = optarg; break;
        case 'd': o.db = optarg; break;
        case 'r': o.rp = optarg; break;
        case 's':
            if (parse_rfc3339(optarg, &o.since_sec, &o.since_nsec) != 0)
                return progs_usage("backup",
                                   "invalid --since '%s' (want RFC 3339, e.g. "
                                   "2024-05-01T00:00:00Z)",
                                   optarg);
            o.has_since = 1;
            break;
        case 'S':
        case 'E':
            if (parse_rfc3339(optarg, c == 'S' ? &o.start_sec : &o.end_sec,
                              c == 'S' ? &o.start_nsec : &o.end_nsec) != 0)
                return progs_usage("backup",
                                   "invalid --%s '%s' (want RFC 3339, e.g. "
                                   "2024-05-01T00:00:00Z)",
                                   c == 'S' ? "start" : "end", optarg);
            *(c == 'S' ? &o.has_start : &o.has_end) = 1;
            break;
        case 'F': o.full_if_no_parent = 1; break;
        case 'p':
            if (progs_parse_u64(optarg, &v) != 0 || v == 0 || v > 256)
                return progs_usage("backup", "invalid --parallel '%s'", optarg);
            o.parallelism = (unsigned)v;
            break;
        case 'T':
            if (progs_parse_u64(optarg, &v) != 0 || v == 0 || v > 3600000)
                return progs_usage("backup", "invalid --timeout '%s'", optarg);
            o.connect_timeout_ms = o.io_timeout_ms = (int)v;
            break;
        case 'O': {
            int64_t sec = 0;
            if (parse_duration(optarg, &sec) != 0 || sec <= 0)
                return progs_usage("backup", "invalid --source-timeout '%s' (e.g. 30m, 2h)",
                                   optarg);
            o.source_timeout_ms = sec * 1000;
            break;
        }
        case 'j': progs_json = 1; break;
        case 'q': progs_quiet = 1; break;
        case 'R': o.force_read = 1; break;
        case 'P': o.password_file = optarg; break;
        case 'K': key_file = optarg; break;
        case 'W': repo_pw = optarg; break;
        case 'h': backup_usage(stdout); return 0;
        default: return g.code;
        }
    }
    if (optind != argc)
        return progs_usage("backup", "unexpected argument '%s'", argv[optind]);
    if (o.source == NULL || o.storage_url == NULL)
        return progs_usage("backup", "--from and --to are required");
    if (o.rp != NULL && o.db == NULL)
        return progs_usage("backup", "--rp needs --db");
    if (o.full_if_no_parent && !o.has_since)
        return progs_usage("backup", "--full-if-no-parent needs --since");
    if (o.has_since && (o.has_start || o.has_end))
        return progs_usage("backup", "--since cannot be combined with --start/--end");

    if (tls_on)
        o.tls = &tls;
    struct progs_secret sec;
    struct cairn_err serr = {0};
    if (progs_secret_load(key_file, repo_pw, &sec, &serr) != CAIRN_OK)
        return progs_fail(&serr);
    o.secret = progs_secret(&sec);
    cli_catch_interrupts();
    o.cancel = &cli_cancel;
    struct progs_progress *prog = progs_progress_new("backup", 0);
    struct stat sb;
    if (stat(o.source, &sb) == 0) /* a local path: its totals come from a scan */
        progs_progress_scan(prog, o.source);
    o.progress = cli_engine_progress;
    o.progress_ctx = prog;
    struct cairn_engine_backup_result res;
    struct cairn_err err = {0};
    int rc = cairn_engine_backup(&o, &res, &err);
    progs_secret_free(&sec);
    progs_progress_done(prog);
    if (rc != CAIRN_OK)
        return progs_fail(&err);
    print_result(o.source, o.storage_url, &res);
    return 0;
}
