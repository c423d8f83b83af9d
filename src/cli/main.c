/* cairn: command-line front end of libcairn. One table of subcommands; each lives in its own
 * cmd_*.c file. */
#include <getopt.h>
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
int cmd_ls(int argc, char **argv);     /* cmd_tree.c */
int cmd_diff(int argc, char **argv);   /* cmd_tree.c */
extern const struct option snapshot_opts[], backup_opts[], restore_opts[], list_opts[], rm_opts[],
    verify_opts[], prune_opts[], put_opts[], get_opts[], unlock_opts[], init_opts[], key_opts[],
    tree_opts[], check_opts[];
int cmd_check(int argc, char **argv); /* cmd_check.c */

/* name, summary, run, options, --json keys (docs/JSON.md), synopsis, exit codes. A new
 * command is one more line; the last four may be left out (`help --all` then lists less). */
static const struct progs_cmd commands[] = {
    {"version", "print the version", NULL, NULL, "program version", "cairn version [--json]", "0"},
    {"snapshot", "write, inspect, verify and extract raft snapshot archives", cmd_snapshot,
     snapshot_opts, "file compression index term state_bytes archive_bytes checksum sealed meta",
     "cairn snapshot save|inspect|verify|extract ...", "0 1 2 3 4 5 6 7 130"},
    {"backup", "back up an InfluxDB snapshot service or a local path", cmd_backup, backup_opts,
     "name location parent full_no_parent source databases shards files bytes seconds vanished "
     "changed unchanged_files unchanged_bytes",
     "cairn backup --from SOURCE --to STORAGE_URL [--name NAME]", "0 1 2 4 5 6 7 8 9 10 130"},
    {"restore", "restore an InfluxDB backup online (--to) or as files (--into)", cmd_restore,
     restore_opts, "name location target backups databases shards bytes seconds",
     "cairn restore STORAGE_URL NAME (--to HOST:PORT | --into DIR)", "0 1 2 3 4 5 6 7 8 9 130"},
    {"list", "list backups in a storage location with their status", cmd_list, list_opts,
     "location backups", "cairn list STORAGE_URL", "0 1 2 4 5 7 8 9"},
    {"rm", "remove one backup from a storage location", cmd_rm, rm_opts,
     "name location removed dependents_removed gc", "cairn rm STORAGE_URL NAME",
     "0 1 2 4 5 7 8 9 10"},
    {"verify", "re-read a backup and check every file against its MANIFEST", cmd_verify,
     verify_opts, "name location files", "cairn verify STORAGE_URL NAME", "0 1 2 3 4 5 7 8 9 130"},
    {"prune", "remove old backups by creation time (--keep-last/--keep-daily/...)", cmd_prune,
     prune_opts, "location dry_run removed kept failed decisions warnings",
     "cairn prune STORAGE_URL --keep-last N ...", "0 1 2 4 5 7 8 9 10 130"},
    {"put", "store a local file or directory as a backup (low level)", cmd_put, put_opts,
     "name location vanished changed unchanged_files unchanged_bytes",
     "cairn put STORAGE_URL NAME PATH", "0 1 2 4 5 6 7 8 9 10 130"},
    {"get", "restore a backup made by 'put' into a directory", cmd_get, get_opts,
     "name location target", "cairn get STORAGE_URL NAME DIR", "0 1 2 3 4 5 6 7 8 9 130"},
    {"unlock", "remove stale locks from a storage location", cmd_unlock, unlock_opts,
     "location removed locks", "cairn unlock STORAGE_URL [--all]", "0 1 2 4 5 7 8 9"},
    {"init", "make a storage location an (encrypted) repository", cmd_init, init_opts,
     "location id encrypted key chunk_size",
     "cairn init STORAGE_URL (--key-file FILE | --password-file FILE | --no-encryption)",
     "0 1 2 4 5 6 7 8 9"},
    {"key", "generate, add, list, remove or change the keys of a repository", cmd_key, key_opts,
     "file id keys removed", "cairn key generate|list|add|remove|passwd ...",
     "0 1 2 3 4 5 6 7 8 9"},
    {"ls", "list the files of a backup of a local path (-l style, or --json)", cmd_ls, tree_opts,
     "name location backup root root_meta entries", "cairn ls STORAGE_URL NAME [PATH]",
     "0 1 2 3 4 5 7 8 9"},
    {"diff", "say what changed between two backups of a local path", cmd_diff, tree_opts,
     "location a b changes added removed modified metadata", "cairn diff STORAGE_URL A B",
     "0 1 2 3 4 5 7 8 9"},
    {"check", "check a deduplicating repository's chunks (--read-data)", cmd_check, check_opts,
     "location backups chunks packs packs_read blobs_read bytes_read",
     "cairn check STORAGE_URL [--read-data]", "0 1 2 3 4 5 7 8 9"},
};

int main(int argc, char **argv)
{
    return progs_dispatch(commands, sizeof(commands) / sizeof(commands[0]),
                          "cairn takes, stores, verifies and restores snapshots of stateful "
                          "services.\n\n",
                          argc, argv);
}
