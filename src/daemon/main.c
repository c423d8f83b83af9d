/* cairnd: the cairn daemon (snapshot service and backup scheduler). */
#include <stdio.h>
#include <string.h>

#include "cairn/common.h"
#include "cli/cli.h"

static int cmd_version(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("cairnd %s\n", cairn_version());
    return 0;
}

int cairnd_cmd_serve(int argc, char **argv);
int cairnd_cmd_run(int argc, char **argv);

static const struct cli_cmd commands[] = {
    {"version", "print the version", cmd_version},
    {"serve", "serve a data directory with the InfluxDB 1.6 snapshot protocol", cairnd_cmd_serve},
    {"run", "run scheduled backups from a config file (catch-up, state, metrics)", cairnd_cmd_run},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: cairnd <command> [options]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n%s", cli_exit_codes_help);
}

int main(int argc, char **argv)
{
    cli_progname = "cairnd";
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(argc, argv);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cairnd: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
