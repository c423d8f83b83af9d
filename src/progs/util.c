/* Command-line helpers: error printing, number parsing (progress.c: the progress line). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/common.h"
#include "cairn/influx.h"
#include "common/buf.h"
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
    "  2  usage or configuration error (also: a storage URL scheme or format this cairn\n"
    "     does not support)\n"
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
    fprintf(out,
            "\nRun '%s help <command>' or '%s <command> --help' for the options and examples of "
            "one command.\n\n%s",
            progs_progname, progs_progname, progs_exit_codes_help);
}

json_t *progs_json_result(void)
{
    return json_pack("{s:i, s:b}", "format_version", PROGS_JSON_FORMAT_VERSION, "ok", 1);
}

static int argv_has(int argc, char **argv, const char *opt)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], opt) == 0)
            return 1;
    return 0;
}

/* `help --all --json`: every command with its options, JSON keys and the exit codes, for
 * scripts, completions and the check of docs/CLI.md. */
static json_t *commands_json(const struct progs_cmd *cmds, size_t ncmds)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < ncmds; i++) {
        json_t *opts = json_array(), *keys = json_array();
        for (size_t k = 0; cmds[i].opts != NULL && cmds[i].opts[k].name != NULL; k++) {
            const struct option *o = &cmds[i].opts[k];
            json_array_append_new(opts, json_pack("{s:s, s:s}", "name", o->name, "value",
                                                  o->has_arg == required_argument   ? "required"
                                                  : o->has_arg == optional_argument ? "optional"
                                                                                    : "none"));
        }
        const char *s = cmds[i].json_keys ? cmds[i].json_keys : "";
        while (*s) {
            size_t n = strcspn(s, " ");
            if (n > 0)
                json_array_append_new(keys, json_stringn(s, n));
            s += n + (s[n] == ' ');
        }
        json_t *ex = json_array();
        for (const char *e = cmds[i].exits ? cmds[i].exits : ""; *e;) {
            char *end;
            long v = strtol(e, &end, 10);
            if (end == e)
                break;
            json_array_append_new(ex, json_integer(v));
            e = end + strspn(end, " ");
        }
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s?, s:o, s:o, s:o}", "name", cmds[i].name,
                                        "summary", cmds[i].summary, "usage", cmds[i].usage,
                                        "options", opts, "json_keys", keys, "exit_codes", ex));
    }
    json_t *exits = json_array();
    for (const char *l = strchr(progs_exit_codes_help, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
        int code, off = 0;
        if (sscanf(l + 1, " %d %n", &code, &off) == 1)
            json_array_append_new(exits, json_pack("{s:i, s:s%}", "exit", code, "meaning",
                                                   l + 1 + off, strcspn(l + 1 + off, "\n")));
    }
    json_t *r = progs_json_result();
    json_object_set_new(r, "program", json_string(progs_progname));
    json_object_set_new(r, "commands", arr);
    json_object_set_new(r, "exit_codes", exits);
    return r;
}

static const struct progs_cmd *find_cmd(const struct progs_cmd *cmds, size_t ncmds,
                                        const char *name)
{
    for (size_t i = 0; i < ncmds; i++)
        if (strcmp(name, cmds[i].name) == 0)
            return &cmds[i];
    return NULL;
}

static int unknown_command(const struct progs_cmd *cmds, size_t ncmds, const char *name)
{
    const char *names[64];
    size_t n = 0;
    for (size_t i = 0; i < ncmds && n < 64; i++)
        names[n++] = cmds[i].name;
    const char *m = progs_did_you_mean(name, names, n);
    struct cairn_err err = {0};
    if (m != NULL)
        cairn_err_set(&err, CAIRN_E_INVALID, "unknown command '%s' (did you mean '%s'?)", name, m);
    else
        cairn_err_set(&err, CAIRN_E_INVALID, "unknown command '%s' (see '%s help')", name,
                      progs_progname);
    if (progs_json)
        progs_fail_json(&err, CAIRN_EXIT_USAGE, "usage");
    fprintf(stderr, "%s: %s\n", progs_progname, err.msg);
    return CAIRN_EXIT_USAGE;
}

static int print_version(int argc, char **argv);

/* cairn help [--all] [--json] [COMMAND [VERB]]: COMMAND's own --help. */
static int dispatch_help(const struct progs_cmd *cmds, size_t ncmds, const char *intro, int argc,
                         char **argv)
{
    if (argv_has(argc, argv, "--all") || (argc > 2 && strcmp(argv[2], "--json") == 0)) {
        progs_print_json(commands_json(cmds, ncmds));
        return CAIRN_EXIT_OK;
    }
    if (argc < 3) {
        dispatch_usage(stdout, cmds, ncmds, intro);
        return CAIRN_EXIT_OK;
    }
    /* For the shell completions (dist/completions): names one per line. */
    if (strcmp(argv[2], "--commands") == 0) {
        for (size_t i = 0; i < ncmds; i++)
            printf("%s\n", cmds[i].name);
        return CAIRN_EXIT_OK;
    }
    /* The verbs of a command whose synopsis reads "PROG CMD VERB|VERB|... ...". */
    if (strcmp(argv[2], "--verbs") == 0) {
        const struct progs_cmd *c = argc > 3 ? find_cmd(cmds, ncmds, argv[3]) : NULL;
        const char *u = c != NULL && c->usage != NULL ? strchr(c->usage, ' ') : NULL;
        u = u != NULL ? strchr(u + 1, ' ') : NULL; /* after "PROG CMD" */
        size_t n = u != NULL ? strcspn(u + 1, " \n") : 0;
        if (n > 0 && memchr(u + 1, '|', n) != NULL &&
            strspn(u + 1, "abcdefghijklmnopqrstuvwxyz|") >= n)
            for (const char *v = u + 1, *end = u + 1 + n; v < end;) {
                size_t k = strcspn(v, "| \n");
                printf("%.*s\n", (int)k, v);
                v += k + 1;
            }
        return c != NULL ? CAIRN_EXIT_OK : CAIRN_EXIT_USAGE;
    }
    if (strcmp(argv[2], "--options") == 0) {
        const struct progs_cmd *c = argc > 3 ? find_cmd(cmds, ncmds, argv[3]) : NULL;
        for (size_t k = 0; c != NULL && c->opts != NULL && c->opts[k].name != NULL; k++)
            printf("--%s%s\n", c->opts[k].name, c->opts[k].has_arg == no_argument ? "" : "=");
        if (c != NULL)
            printf("-h\n");
        return c != NULL ? CAIRN_EXIT_OK : CAIRN_EXIT_USAGE;
    }
    const struct progs_cmd *c = find_cmd(cmds, ncmds, argv[2]);
    if (c == NULL)
        return unknown_command(cmds, ncmds, argv[2]);
    if (c->run == NULL) { /* version */
        char *av[4] = {argv[0], argv[2], "--help", NULL};
        return print_version(3, av);
    }
    char *av[4] = {argv[2], argc > 3 ? argv[3] : "--help", argc > 3 ? "--help" : NULL, NULL};
    return c->run(argc > 3 ? 3 : 2, av);
}

static int print_version(int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            progs_json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s version [--json]\n\nPrint the version.\n\nExample:\n  %s version "
                   "--json\n",
                   progs_progname, progs_progname);
            return CAIRN_EXIT_OK;
        } else {
            return progs_usage("version", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!progs_json) {
        printf("%s %s\n", progs_progname, cairn_version());
        return CAIRN_EXIT_OK;
    }
    json_t *r = progs_json_result();
    json_object_set_new(r, "program", json_string(progs_progname));
    json_object_set_new(r, "version", json_string(cairn_version()));
    progs_print_json(r);
    return CAIRN_EXIT_OK;
}

int progs_dispatch(const struct progs_cmd *cmds, size_t ncmds, const char *intro, int argc,
                   char **argv)
{
    if (argc < 2) {
        dispatch_usage(stderr, cmds, ncmds, intro);
        return CAIRN_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return dispatch_help(cmds, ncmds, intro, argc, argv);
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)
        return print_version(argc, argv);
    const struct progs_cmd *c = find_cmd(cmds, ncmds, argv[1]);
    if (c != NULL && c->run != NULL)
        return c->run(argc - 1, argv + 1);
    if (argv_has(argc, argv, "--json"))
        progs_json = 1;
    if (argv[1][0] == '-') {
        struct cairn_err err = {0};
        cairn_err_set(&err, CAIRN_E_INVALID,
                      "unknown option '%s' (a command comes first; see '%s help')", argv[1],
                      progs_progname);
        if (progs_json)
            progs_fail_json(&err, CAIRN_EXIT_USAGE, "usage");
        fprintf(stderr, "%s: %s\n", progs_progname, err.msg);
        return CAIRN_EXIT_USAGE;
    }
    return unknown_command(cmds, ncmds, argv[1]);
}

void progs_print_json(json_t *j)
{
    if (j == NULL)
        return;
    /* Every object carries the vocabulary's version first (docs/JSON.md). */
    if (json_is_object(j) && json_object_get(j, "format_version") == NULL) {
        json_t *o = json_pack("{s:i}", "format_version", PROGS_JSON_FORMAT_VERSION);
        json_object_update(o, j);
        json_decref(j);
        j = o;
    }
    json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(j);
}

void progs_print_json_raw(json_t *j, size_t n, const char *const *keys, const char *const *raws)
{
    char ph[8][32];
    if (n > 8)
        n = 8;
    for (size_t i = 0; i < n; i++) {
        snprintf(ph[i], sizeof(ph[i]), "@@cairn-raw-%zu@@", i);
        json_object_set_new(j, keys[i], json_string(ph[i]));
    }
    if (json_object_get(j, "format_version") == NULL) {
        json_t *o = json_pack("{s:i}", "format_version", PROGS_JSON_FORMAT_VERSION);
        json_object_update(o, j);
        json_decref(j);
        j = o;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (text == NULL)
        return;
    struct buf b = {0};
    const char *s = text;
    for (;;) {
        const char *at = NULL;
        size_t which = 0;
        for (size_t i = 0; i < n; i++) { /* the placeholder is a whole string: "..." */
            char q[40];
            snprintf(q, sizeof(q), "\"%s\"", ph[i]);
            const char *p = strstr(s, q);
            if (p != NULL && (at == NULL || p < at))
                at = p, which = i;
        }
        if (at == NULL)
            break;
        buf_add(&b, s, (size_t)(at - s));
        buf_adds(&b, raws[which]);
        s = at + strlen(ph[which]) + 2;
    }
    buf_adds(&b, s);
    fwrite(b.p, 1, b.len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    buf_free(&b);
    free(text);
}

void progs_fail_json(const struct cairn_err *err, int exit_code, const char *code)
{
    progs_print_json(json_pack("{s:i, s:b, s:{s:s, s:i, s:s}}", "format_version",
                               PROGS_JSON_FORMAT_VERSION, "ok", 0, "error", "code",
                               code ? code : cairn_status_name(err->code), "exit", exit_code,
                               "message", err->msg[0] ? err->msg : "unknown error"));
}

int progs_fail(const struct cairn_err *err)
{
    int code = cairn_exit_code(err->code ? err->code : CAIRN_E_INTERNAL);
    if (progs_json)
        progs_fail_json(err, code, NULL);
    fprintf(stderr, "%s: error: %s\n", progs_progname, err->msg[0] ? err->msg : "unknown error");
    return code;
}

int progs_usage(const char *cmd, const char *fmt, ...)
{
    struct cairn_err err = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    err.code = CAIRN_E_INVALID;
    if (progs_json)
        progs_fail_json(&err, CAIRN_EXIT_USAGE, "usage");
    fprintf(stderr, "%s %s: %s\n", progs_progname, cmd, err.msg);
    return CAIRN_EXIT_USAGE;
}

/* The absolute locations made below: they live until exit, as argv does, then are freed (a
 * command makes one or two). */
static char **locations;
static size_t nlocations;

static void locations_free(void)
{
    for (size_t i = 0; i < nlocations; i++)
        free(locations[i]);
    free(locations);
}

const char *progs_location(const char *arg)
{
    if (arg == NULL || arg[0] == '/' || strstr(arg, "://") != NULL || arg[0] == '\0')
        return arg;
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return arg; /* then refused by cairn_storage_open, naming arg */
    const char *rel = strncmp(arg, "./", 2) == 0 ? arg + 2 : arg;
    if (nlocations == 0)
        atexit(locations_free);
    locations = xrealloc(locations, (nlocations + 1) * sizeof(*locations));
    return locations[nlocations++] = xasprintf("%s/%s", cwd, rel);
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
