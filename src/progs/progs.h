/* Program plumbing shared by the cairn and cairnd command lines (src/progs). */
#ifndef CAIRN_PROGS_H
#define CAIRN_PROGS_H

#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

#include "cairn/err.h"
#include "cairn/repo.h"

struct option;

/* One entry of a program's command table. A new command is one entry: name, summary and
 * run are enough; opts and json_keys feed `cairn help --all --json` and docs/CLI.md. */
struct progs_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command name; returns an exit code */
    const struct option *opts;         /* its getopt_long table (NULL: not listed) */
    const char *json_keys;             /* top-level keys of its --json result, space separated */
    const char *usage;                 /* its synopsis, one line per form */
    const char *exits;                 /* the exit codes it can return, space separated */
};

/* The one option parser (src/progs/opts.c): getopt_long over opts (which must hold
 * {"help", no_argument, NULL, 'h'}; -h is always a short option) with cairn's errors:
 * exact names only (no abbreviations), "did you mean" for unknown options, boolean flags
 * refuse a value (--json=0), a required value that is another option of the table is
 * refused, -- ends options. Positionals are argv[optind..argc) after it returns -1.
 *   struct progs_getopt g = {.cmd = "list", .opts = list_opts, .argc = argc, .argv = argv};
 *   while ((c = progs_getopt(&g)) != -1) switch (c) { ...; default: return g.code; }
 * A usage error was printed (and made a JSON object under --json) when it returns
 * PROGS_OPT_ERR; g.code is then the exit code. */
#define PROGS_OPT_ERR (-2)
struct progs_getopt {
    const char *cmd; /* named in errors: "backup", "snapshot save" */
    const struct option *opts;
    int argc;
    char **argv;
    const char *shortopts; /* short options besides h (getopt syntax), or NULL */
    const char *arg;       /* the value of the option returned, or NULL */
    const char *name;      /* the long name of the option returned */
    int code;              /* the exit code after PROGS_OPT_ERR */
    int started;
    char shortbuf[40];
};
int progs_getopt(struct progs_getopt *g);
/* After the options: -1 when min..max positionals are left, else prints a usage error
 * naming what (e.g. "a storage URL and a backup name") and returns its exit code. */
int progs_positionals(struct progs_getopt *g, int min, int max, const char *what);
/* Edit distance (with swaps) and the closest of names to given, or NULL if none is close. */
size_t progs_edit_distance(const char *a, const char *b);
const char *progs_did_you_mean(const char *given, const char *const *names, size_t n);

/* The JSON vocabulary's version (docs/JSON.md), the first key of every --json object. */
#define PROGS_JSON_FORMAT_VERSION 1
/* A --json result: {"format_version":1,"ok":true} to add keys to. */
json_t *progs_json_result(void);

/* The main() of both programs: --help/-h/help, --version, then the command table.
 * intro is printed under the usage line (may be ""). Returns the exit code. */
int progs_dispatch(const struct progs_cmd *cmds, size_t ncmds, const char *intro, int argc,
                   char **argv);

/* Print j (taken; NULL prints nothing) as one compact line on stdout: every --json result
 * is one JSON object per line. */
void progs_print_json(json_t *j);
/* progs_print_json with n members whose values are JSON text made elsewhere (keys[i] gets
 * raws[i] verbatim): uint64 numbers past json_int_t and Go's own encodings stay exact. */
void progs_print_json_raw(json_t *j, size_t n, const char *const *keys, const char *const *raws);
/* Print "cairn: error: <msg>" (or a JSON object when --json is active) and map to an exit code. */
int progs_fail(const struct cairn_err *err);
/* The error object of --json on stdout: {"format_version":1,"ok":false,"error":{"code":
 * code (NULL: err's status name),"exit":exit_code,"message":err's message}}. */
void progs_fail_json(const struct cairn_err *err, int exit_code, const char *code);
/* Print "cairn <cmd>: <msg>" on one line (and the JSON error object on stdout under --json);
 * returns CAIRN_EXIT_USAGE. */
int progs_usage(const char *cmd, const char *fmt, ...) CAIRN_PRINTF(2, 3);
/* Program name used in messages ("cairn" or "cairnd"). */
extern const char *progs_progname;
/* Set by commands that took --json: errors are then printed as JSON on stdout too. */
extern int progs_json;

/* A storage location as given on the command line: a plain relative path ("backups",
 * "./backups") is a directory relative to the current one, made absolute; URLs (file:///,
 * s3://) and absolute paths are returned as they are. docs/CLI.md. */
const char *progs_location(const char *arg);
/* Parse unsigned decimal; returns 0 or -1. */
int progs_parse_u64(const char *s, uint64_t *out);

/* Progress of a long command on stderr, the one home of every command's progress: on a TTY
 * one line redrawn at most 5 times a second ("backup: 1.2 GiB of 5.0 GiB (24%), 120 of 500
 * files, 45.0 MiB/s, ETA 1m25s"); otherwise a plain line every 10 s; nothing under --json or
 * --quiet (progs_json, progs_quiet). The totals are shown once known. Safe from several
 * threads; every function takes NULL. */
struct progs_progress;
extern int progs_quiet;
struct progs_progress *progs_progress_new(const char *label, uint64_t total_bytes);
void progs_progress_add(struct progs_progress *p, uint64_t bytes);
/* Totals: 0 leaves one as it is. */
void progs_progress_total(struct progs_progress *p, uint64_t bytes, uint64_t items);
/* Items done so far (absolute) and their total (0: unchanged); unit names them ("files"). */
void progs_progress_items(struct progs_progress *p, uint64_t done, uint64_t total,
                          const char *unit);
void progs_progress_item_done(struct progs_progress *p);
/* Count the regular files and bytes under path in a background thread (as restic's scanner
 * does) and make them the totals when done; a backup of a local tree streams, so its totals
 * are not known otherwise. */
void progs_progress_scan(struct progs_progress *p, const char *path);
void progs_progress_done(struct progs_progress *p); /* clears the line and frees */

/* The exit code table, printed by --help of both programs. */
extern const char progs_exit_codes_help[];

/* The TLS options of commands that talk to a snapshot service (backup, restore): put
 * PROGS_TLS_OPTIONS in the getopt_long table and give every option to progs_tls_option. */
struct cairn_influx_tls_opts;
#define PROGS_TLS_OPTIONS                                                                          \
    {"tls", no_argument, NULL, 0x7101}, {"tls-ca", required_argument, NULL, 0x7102},               \
        {"tls-cert", required_argument, NULL, 0x7103},                                             \
        {"tls-key", required_argument, NULL, 0x7104},                                              \
    {                                                                                              \
        "tls-server-name", required_argument, NULL, 0x7105                                         \
    }
/* 1 when c was a TLS option (stored in t, and *on set), else 0. */
int progs_tls_option(int c, const char *arg, struct cairn_influx_tls_opts *t, int *on);
extern const char progs_tls_help[];

/* The repository key of a command that opens storage: key_file or password_file (options;
 * either may be NULL, not both set), else $CAIRN_KEY_FILE, $CAIRN_PASSWORD_FILE or
 * $CAIRN_PASSWORD_COMMAND (run by sh -c; the first line of its output). Key and password
 * files group or others may read are refused (CAIRN_E_INVALID, exit 2). progs_secret is
 * NULL when none was given; progs_secret_free wipes it. */
struct progs_secret {
    struct cairn_repo_secret sec;
    uint8_t key[CAIRN_REPO_KEY_LEN];
    char *password;
    int set;
};
int progs_secret_load(const char *key_file, const char *password_file, struct progs_secret *s,
                      struct cairn_err *err);
const struct cairn_repo_secret *progs_secret(const struct progs_secret *s);
void progs_secret_free(struct progs_secret *s);
/* The help text of those options and variables. */
extern const char progs_secret_help[];

#endif
