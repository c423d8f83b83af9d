/* cairnd serve: the snapshot service over a data directory, until SIGTERM or SIGINT. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/influx.h"
#include "common/util.h"
#include "progs/progs.h"

static struct cairn_influx_server *g_server;

static void on_signal(int sig)
{
    (void)sig;
    if (g_server != NULL)
        cairn_influx_server_stop(g_server);
}

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: cairnd serve --data DIR [--meta FILE] [--listen HOST:PORT] [--max-conns N]\n"
            "                    [--max-conns-per-addr N] [--idle-timeout MS]\n"
            "                    [--request-deadline MS] [--slow-rate BYTES] [--max-upload SIZE]\n"
            "                    [--mem-budget SIZE] [--allow-restore [--allow-overwrite]]\n"
            "                    [--tls-cert FILE [--tls-key FILE] [--tls-client-ca FILE]\n"
            "                    [--tls-allow-plain]] [--log-json] [--log-level LEVEL]\n\n"
            "Serve DIR (<db>/<rp>/<shard-id>/<files>) with the InfluxDB 1.6 snapshot protocol,\n"
            "so `influxd backup` and `cairn backup` can use it (and, with --allow-restore,\n"
            "`influxd restore -online|-portable` and `cairn restore`). Metadata is the meta.Data\n"
            "protobuf in --meta (default DIR/meta.db), or derived from the tree when that file\n"
            "does not exist. The plain protocol has no authentication: keep it on loopback or a\n"
            "trusted network, or use TLS with client certificates beyond one host.\n\n"
            "  --listen       address to bind (default 127.0.0.1:8088; port 0 picks one)\n"
            "  --max-conns    concurrent connections (default 64)\n"
            "  --max-conns-per-addr  concurrent connections from one address (default 16)\n"
            "  --idle-timeout per read/write and per request header, in ms (default 30000)\n"
            "  --request-deadline  whole request, accept to close, in ms (default 3600000)\n"
            "  --slow-rate    when the slots (or an address's) are full, the slowest connection\n"
            "                 under this many bytes/s, 2 s or older, is dropped for the new one\n"
            "                 (default 1024; 0 = never drop: more are refused at once)\n"
            "  --max-upload   largest metastore upload, received into DIR/.cairn-snap (256M)\n"
            "  --mem-budget   metastore imports in memory at once (default 64M; one larger\n"
            "                 upload runs alone)\n"
            "  --allow-restore   accept restore uploads (read-only without it: refused)\n"
            "  --allow-overwrite shard uploads may replace files of shards that hold some\n"
            "                 (without it only new, empty shards are written)\n"
            "  --tls-cert     PEM certificate (chain): serve TLS (cairn backup/restore --tls...)\n"
            "  --tls-key      its private key (default: in --tls-cert)\n"
            "  --tls-client-ca PEM CAs: require a client certificate that chains to them\n"
            "  --tls-allow-plain also serve plain connections (influxd backup/restore, which\n"
            "                 speak no TLS); without it they are refused\n"
            "  --log-json     log JSON lines; --log-level debug|info|warn|error (default info)\n\n"
            "Prints \"listening on ADDR\" on stdout once bound; stops on SIGTERM or SIGINT.\n\n"
            "Examples:\n"
            "  cairnd serve --data /var/lib/influxdb/data --listen 127.0.0.1:8088\n"
            "TLS with client certificates, read-only:\n"
            "  cairnd serve --data /var/lib/influxdb/data --listen 0.0.0.0:8088 \\\n"
            "      --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem\n");
}

/* The numeric limits of serve's options into so: 0, or progs_usage's exit code. */
static int limit_opt(int c, const char *arg, struct cairn_influx_server_opts *so)
{
    uint64_t v;
    switch (c) {
    case 'c':
        if (progs_parse_u64(arg, &v) != 0 || v == 0 || v > 100000)
            return progs_usage("serve", "invalid --max-conns '%s'", arg);
        so->max_conns = (unsigned)v;
        break;
    case 't':
        if (progs_parse_u64(arg, &v) != 0 || v == 0 || v > 86400000)
            return progs_usage("serve", "invalid --idle-timeout '%s'", arg);
        so->idle_timeout_ms = so->request_timeout_ms = (int)v;
        break;
    case 'u':
        if (parse_size(arg, &v) != 0 || v == 0)
            return progs_usage("serve", "invalid --max-upload '%s'", arg);
        so->max_upload = v;
        break;
    case 'p':
        if (progs_parse_u64(arg, &v) != 0 || v == 0 || v > 100000)
            return progs_usage("serve", "invalid --max-conns-per-addr '%s'", arg);
        so->max_per_addr = (unsigned)v;
        break;
    case 'D':
        if (progs_parse_u64(arg, &v) != 0 || v == 0 || v > 604800000)
            return progs_usage("serve", "invalid --request-deadline '%s'", arg);
        so->request_deadline_ms = (int)v;
        break;
    case 's':
        if (progs_parse_u64(arg, &v) != 0 || v > (1ull << 40))
            return progs_usage("serve", "invalid --slow-rate '%s'", arg);
        so->slow_rate = v == 0 ? -1 : (int64_t)v;
        break;
    case 'b':
        if (parse_size(arg, &v) != 0 || v == 0)
            return progs_usage("serve", "invalid --mem-budget '%s'", arg);
        so->mem_budget = v;
        break;
    }
    return 0;
}

const struct option serve_opts[] = {{"data", required_argument, NULL, 'd'},
                                    {"meta", required_argument, NULL, 'm'},
                                    {"listen", required_argument, NULL, 'l'},
                                    {"max-conns", required_argument, NULL, 'c'},
                                    {"idle-timeout", required_argument, NULL, 't'},
                                    {"max-upload", required_argument, NULL, 'u'},
                                    {"max-conns-per-addr", required_argument, NULL, 'p'},
                                    {"request-deadline", required_argument, NULL, 'D'},
                                    {"slow-rate", required_argument, NULL, 's'},
                                    {"mem-budget", required_argument, NULL, 'b'},
                                    {"allow-restore", no_argument, NULL, 'R'},
                                    {"allow-overwrite", no_argument, NULL, 'O'},
                                    {"log-json", no_argument, NULL, 'j'},
                                    {"log-level", required_argument, NULL, 'v'},
                                    {"help", no_argument, NULL, 'h'},
                                    {"tls-cert", required_argument, NULL, 'C'},
                                    {"tls-key", required_argument, NULL, 'K'},
                                    {"tls-client-ca", required_argument, NULL, 'A'},
                                    {"tls-allow-plain", no_argument, NULL, 'P'},
                                    {NULL, 0, NULL, 0}};

struct serve_args {
    struct cairn_influx_server_opts so;
    struct cairn_influx_tls_opts tls;
    const char *data, *meta;
    int log_json, level;
};

/* serve's options into a: -1 to go on, else the exit code (--help, a usage error). */
static int parse_serve_args(int argc, char **argv, struct serve_args *a)
{
    struct cairn_influx_server_opts *so = &a->so;
    int c, rc;
    a->level = CAIRN_LOG_INFO;
    struct progs_getopt g = {.cmd = "serve", .opts = serve_opts, .argc = argc, .argv = argv};
    while ((c = progs_getopt(&g)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'm': a->meta = optarg; break;
        case 'l': so->listen = optarg; break;
        case 'c':
        case 't':
        case 'u':
        case 'p':
        case 'D':
        case 's':
        case 'b':
            if ((rc = limit_opt(c, optarg, so)) != 0)
                return rc;
            break;
        case 'R': so->allow_restore = 1; break;
        case 'O': so->allow_overwrite = 1; break;
        case 'C': a->tls.cert_file = optarg; break;
        case 'K': a->tls.key_file = optarg; break;
        case 'A': a->tls.ca_file = optarg; break;
        case 'P': so->allow_plain = 1; break;
        case 'j': a->log_json = 1; break;
        case 'v':
            a->level = cairn_log_level_parse(optarg);
            if (a->level < 0)
                return progs_usage("serve", "invalid --log-level '%s'", optarg);
            break;
        case 'h': serve_usage(stdout); return 0;
        default: return g.code;
        }
    }
    if (optind != argc)
        return progs_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (a->data == NULL)
        return progs_usage("serve", "--data DIR is required");
    if (so->allow_overwrite && !so->allow_restore)
        return progs_usage("serve", "--allow-overwrite needs --allow-restore");
    if (so->max_per_addr > (so->max_conns ? so->max_conns : 64))
        return progs_usage("serve", "--max-conns-per-addr exceeds --max-conns");
    if ((a->tls.key_file || a->tls.ca_file || so->allow_plain) && a->tls.cert_file == NULL)
        return progs_usage("serve",
                           "--tls-key, --tls-client-ca and --tls-allow-plain need --tls-cert");
    return -1;
}

int cairnd_cmd_serve(int argc, char **argv)
{
    struct serve_args a = {0};
    int rc = parse_serve_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    struct cairn_influx_server_opts so = a.so;
    struct cairn_influx_tls_opts tls = a.tls;
    const char *data = a.data, *meta = a.meta;
    int log_json = a.log_json, level = a.level;
    cairn_log_setup((enum cairn_log_level)level, log_json, NULL);

    struct cairn_err err = {0};
    struct cairn_tls *server_tls = NULL;
    if (tls.cert_file != NULL && cairn_influx_tls_server_new(&tls, &server_tls, &err) != CAIRN_OK)
        return progs_fail(&err);
    so.tls = server_tls;
    struct cairn_influx_provider prov;
    if (cairn_influx_dir_provider_new(data, meta, &prov, &err) != CAIRN_OK) {
        cairn_influx_tls_free(server_tls);
        return progs_fail(&err);
    }
    /* Uploads are received beside the data they become (same file system), not in memory. */
    char *staging = xasprintf("%s/.cairn-snap", data);
    so.staging_dir = staging;
    struct cairn_influx_server *srv;
    if (cairn_influx_server_new(&so, &prov, &srv, &err) != CAIRN_OK) {
        free(staging);
        cairn_influx_tls_free(server_tls);
        return progs_fail(&err);
    }
    if (!so.allow_restore)
        cairn_info("snapshot", "read-only: restore uploads are refused (--allow-restore)");
    g_server = srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("listening on %s\n", cairn_influx_server_address(srv));
    fflush(stdout);
    rc = cairn_influx_server_run(srv, &err);
    g_server = NULL;
    cairn_influx_server_free(srv);
    cairn_influx_tls_free(server_tls);
    free(staging);
    return rc == CAIRN_OK ? 0 : progs_fail(&err);
}
