/* Command-line helpers: error printing, number parsing (progress.c: the progress line). */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/common.h"
#include "cairn/influx.h"
#include "common/util.h"
#include "progs/progs.h"

const char *progs_progname = "cairn";
int progs_json;

int progs_tls_option(int c, const char *arg, struct cairn_influx_tls_opts *t, int *on)
{
    switch (c) {
    case 0x7101: break;
    case 0x7102: t->ca_file = arg; break;
    case 0x7103: t->cert_file = arg; break;
    case 0x7104: t->key_file = arg; break;
    case 0x7105: t->server_name = arg; break;
    default: return 0;
    }
    *on = 1;
    return 1;
}

const char progs_tls_help[] =
    "TLS (to cairnd serve --tls-cert; influxd speaks only plain), on with any of:\n"
    "  --tls              verify the server against the system's CAs\n"
    "  --tls-ca FILE      PEM CAs the server's certificate must chain to\n"
    "  --tls-cert FILE    PEM client certificate (chain), for a server that requires one\n"
    "  --tls-key FILE     its private key (default: in --tls-cert)\n"
    "  --tls-server-name NAME  the name or IP the server's certificate must carry\n"
    "                     (default: the host of the address)\n\n";

const char progs_exit_codes_help[] =
    "Exit codes:\n"
    "  0  success\n"
    "  1  failure not listed below\n"
    "  2  usage or configuration error\n"
    "  3  verification failed: corrupt, tampered or truncated input\n"
    "  4  sealed sums could not be opened (wrong or missing key)\n"
    "  5  not found (backup, file, object, database)\n"
    "  6  already exists\n"
    "  7  local I/O error (disk full, permission denied)\n"
    "  8  network, protocol or timeout error talking to a peer\n"
    "  9  permission denied by a peer (S3 AccessDenied, HTTP 401/403)\n"
    "  10  locked: another live process holds the storage location (or the daemon state)\n"
    "  130  cancelled by SIGINT or SIGTERM (temporaries removed, nothing left complete)\n";

static void dispatch_usage(FILE *out, const struct progs_cmd *cmds, size_t ncmds, const char *intro)
{
    fprintf(out, "usage: %s <command> [options]\n\n%sCommands:\n", progs_progname, intro);
    for (size_t i = 0; i < ncmds; i++)
        fprintf(out, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(out, "\nRun '%s <command> --help' for the options of one command.\n\n%s",
            progs_progname, progs_exit_codes_help);
}

int progs_dispatch(const struct progs_cmd *cmds, size_t ncmds, const char *intro, int argc,
                   char **argv)
{
    if (argc < 2) {
        dispatch_usage(stderr, cmds, ncmds, intro);
        return CAIRN_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        dispatch_usage(stdout, cmds, ncmds, intro);
        return CAIRN_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("%s %s\n", progs_progname, cairn_version());
        return CAIRN_EXIT_OK;
    }
    for (size_t i = 0; i < ncmds; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\n\n", progs_progname, argv[1]);
    dispatch_usage(stderr, cmds, ncmds, intro);
    return CAIRN_EXIT_USAGE;
}

void progs_print_json(json_t *j)
{
    if (j == NULL)
        return;
    json_dumpf(j, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(j);
}

int progs_fail(const struct cairn_err *err)
{
    int code = cairn_exit_code(err->code ? err->code : CAIRN_E_INTERNAL);
    if (progs_json)
        progs_print_json(json_pack("{s:b, s:s, s:s, s:i}", "ok", 0, "error", err->msg, "status",
                                   cairn_status_name(err->code), "exit_code", code));
    fprintf(stderr, "%s: error: %s\n", progs_progname, err->msg[0] ? err->msg : "unknown error");
    return code;
}

int progs_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s %s: ", progs_progname, cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s %s --help'.\n", progs_progname, cmd);
    va_end(ap);
    return CAIRN_EXIT_USAGE;
}

int progs_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}
