/* cairnd serve: the snapshot service over a data directory, until SIGTERM or SIGINT. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/service.h"
#include "cli/cli.h"

static struct cairn_snap_server *g_server;

static void on_signal(int sig)
{
    (void)sig;
    if (g_server != NULL)
        cairn_snap_server_stop(g_server);
}

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: cairnd serve --data DIR [--meta FILE] [--listen HOST:PORT] [--max-conns N]\n"
            "                    [--idle-timeout MS] [--max-upload SIZE] [--log-json]\n"
            "                    [--log-level LEVEL]\n\n"
            "Serve DIR (<db>/<rp>/<shard-id>/<files>) with the InfluxDB 1.6 snapshot protocol,\n"
            "so `influxd backup`, `influxd restore -online|-portable` and `cairn backup|restore`\n"
            "can use it. Metadata is the meta.Data protobuf in --meta (default DIR/meta.db), or\n"
            "derived from the tree when that file does not exist.\n\n"
            "  --listen       address to bind (default 127.0.0.1:8088; port 0 picks one)\n"
            "  --max-conns    concurrent connections; more are closed at once (default 64)\n"
            "  --idle-timeout per read/write and per request header, in ms (default 30000)\n"
            "  --max-upload   largest metastore upload (default 256M)\n"
            "  --log-json     log JSON lines; --log-level debug|info|warn|error (default info)\n\n"
            "Prints \"listening on ADDR\" on stdout once bound; stops on SIGTERM or SIGINT.\n");
}

int cairnd_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"data", required_argument, NULL, 'd'},
                                         {"meta", required_argument, NULL, 'm'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"max-conns", required_argument, NULL, 'c'},
                                         {"idle-timeout", required_argument, NULL, 't'},
                                         {"max-upload", required_argument, NULL, 'u'},
                                         {"log-json", no_argument, NULL, 'j'},
                                         {"log-level", required_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct cairn_snap_server_opts so = {0};
    const char *data = NULL, *meta = NULL;
    int log_json = 0, level = CAIRN_LOG_INFO, c;
    uint64_t v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'm': meta = optarg; break;
        case 'l': so.listen = optarg; break;
        case 'c':
            if (cli_parse_u64(optarg, &v) != 0 || v == 0 || v > 100000)
                return cli_usage("serve", "invalid --max-conns '%s'", optarg);
            so.max_conns = (unsigned)v;
            break;
        case 't':
            if (cli_parse_u64(optarg, &v) != 0 || v == 0 || v > 86400000)
                return cli_usage("serve", "invalid --idle-timeout '%s'", optarg);
            so.idle_timeout_ms = so.request_timeout_ms = (int)v;
            break;
        case 'u':
            if (cli_parse_size(optarg, &v) != 0 || v == 0)
                return cli_usage("serve", "invalid --max-upload '%s'", optarg);
            so.max_upload = v;
            break;
        case 'j': log_json = 1; break;
        case 'v':
            level = cairn_log_level_parse(optarg);
            if (level < 0)
                return cli_usage("serve", "invalid --log-level '%s'", optarg);
            break;
        case 'h': serve_usage(stdout); return 0;
        default: return cli_usage("serve", "invalid option");
        }
    }
    if (optind != argc)
        return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (data == NULL)
        return cli_usage("serve", "--data DIR is required");
    cairn_log_setup((enum cairn_log_level)level, log_json, NULL);

    struct cairn_err err = {0};
    struct cairn_snap_provider prov;
    if (cairn_snap_dir_provider_new(data, meta, &prov, &err) != CAIRN_OK)
        return cli_fail(&err);
    struct cairn_snap_server *srv;
    if (cairn_snap_server_new(&so, &prov, &srv, &err) != CAIRN_OK)
        return cli_fail(&err);
    g_server = srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("listening on %s\n", cairn_snap_server_address(srv));
    fflush(stdout);
    int rc = cairn_snap_server_run(srv, &err);
    g_server = NULL;
    cairn_snap_server_free(srv);
    return rc == CAIRN_OK ? 0 : cli_fail(&err);
}
