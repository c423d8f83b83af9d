/* cairn: command-line front end of libcairn. One table of subcommands; each lives in its own
 * cmd_*.c file. */
#include <stdio.h>
#include <string.h>

#include "cairn/common.h"
#include "progs/progs.h"

int cmd_snapshot(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_list(int argc, char **argv);   /* cmd_storage.c */
int cmd_rm(int argc, char **argv);     /* cmd_storage.c */
int cmd_verify(int argc, char **argv); /* cmd_storage.c */
int cmd_prune(int argc, char **argv);  /* cmd_storage.c */
int cmd_put(int argc, char **argv);    /* cmd_storage.c */
int cmd_get(int argc, char **argv);    /* cmd_storage.c */
int cmd_unlock(int argc, char **argv); /* cmd_storage.c */
int cmd_init(int argc, char **argv);   /* cmd_repo.c */
int cmd_key(int argc, char **argv);    /* cmd_repo.c */
int cmd_check(int argc, char **argv);  /* cmd_check.c */

static const struct progs_cmd commands[] = {
    {"version", "print the version", NULL}, /* answered by progs_dispatch */
    {"snapshot", "write, inspect, verify and extract raft snapshot archives", cmd_snapshot},
    {"backup", "back up an InfluxDB snapshot service or a local path", cmd_backup},
    {"restore", "restore an InfluxDB backup online (--to) or as files (--into)", cmd_restore},
    {"list", "list backups in a storage location with their status", cmd_list},
    {"rm", "remove one backup from a storage location", cmd_rm},
    {"verify", "re-read a backup and check every file against its MANIFEST", cmd_verify},
    {"prune", "remove old backups by creation time (--keep-last/--keep-daily/...)", cmd_prune},
    {"put", "store a local file or directory as a backup (low level)", cmd_put},
    {"get", "restore a backup made by 'put' into a directory", cmd_get},
    {"unlock", "remove stale locks from a storage location", cmd_unlock},
    {"init", "make a storage location an (encrypted) repository", cmd_init},
    {"key", "generate, add, list, remove or change the keys of a repository", cmd_key},
    {"check", "check a deduplicating repository's chunks (--read-data)", cmd_check},
};

int main(int argc, char **argv)
{
    return progs_dispatch(commands, sizeof(commands) / sizeof(commands[0]),
                          "cairn takes, stores, verifies and restores snapshots of stateful "
                          "services.\n\n",
                          argc, argv);
}
