/* cairn: command-line front end of libcairn. One table of subcommands; each lives in its own
 * cmd_*.c file. */
#include <stdio.h>
#include <string.h>

#include "cairn/common.h"
#include "cli.h"

static int cmd_version(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("cairn %s\n", cairn_version());
    return 0;
}

int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_list(int argc, char **argv);   /* cmd_storage.c */
int cmd_rm(int argc, char **argv);     /* cmd_storage.c */
int cmd_verify(int argc, char **argv); /* cmd_storage.c */
int cmd_prune(int argc, char **argv);  /* cmd_storage.c */
int cmd_put(int argc, char **argv);    /* cmd_storage.c */
int cmd_get(int argc, char **argv);    /* cmd_storage.c */

static const struct cli_cmd commands[] = {
    {"version", "print the version", cmd_version},
    {"backup", "back up an InfluxDB snapshot service or a local path", cmd_backup},
    {"restore", "restore an InfluxDB backup online (--to) or as files (--into)", cmd_restore},
    {"list", "list backups in a storage location with their status", cmd_list},
    {"rm", "remove one backup from a storage location", cmd_rm},
    {"verify", "re-read a backup and check every file against its MANIFEST", cmd_verify},
    {"prune", "remove old backups (--keep-last/--keep-daily/--keep-weekly)", cmd_prune},
    {"put", "store a local file or directory as a backup (low level)", cmd_put},
    {"get", "restore a backup made by 'put' into a directory", cmd_get},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: cairn <command> [options]\n\n"
                 "cairn takes, stores, verifies and restores snapshots of stateful services.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'cairn <command> --help' for the options of one command.\n\n%s",
            cli_exit_codes_help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(argc, argv);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cairn: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
