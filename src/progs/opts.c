/* The one option parser of cairn and cairnd: getopt_long over each command's table, with
 * cairn's own one-line errors, exact option names, values refused by boolean flags and a
 * "did you mean" for unknown options and commands (docs/CLI.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/common.h"
#include "common/util.h"
#include "progs/progs.h"

size_t progs_edit_distance(const char *a, const char *b)
{
    /* Optimal string alignment: insertions, deletions, substitutions and swaps of neighbours
     * (--form for --from) each cost one. Names are short: three rows on the stack. */
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t r0[64], r1[64], r2[64];
    size_t *pp = r0, *p = r1, *c = r2;
    for (size_t j = 0; j <= lb; j++)
        p[j] = j;
    for (size_t i = 1; i <= la; i++) {
        c[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = p[j] + 1;
            if (c[j - 1] + 1 < v)
                v = c[j - 1] + 1;
            if (p[j - 1] + cost < v)
                v = p[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < v)
                v = pp[j - 2] + 1;
            c[j] = v;
        }
        size_t *t = pp;
        pp = p;
        p = c;
        c = t;
    }
    return p[lb];
}

const char *progs_did_you_mean(const char *given, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1, glen = strlen(given);
    int prefixes = 0;
    const char *prefix = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = progs_edit_distance(given, names[i]);
        if (d < bestd)
            bestd = d, best = names[i];
        if (glen >= 2 && strncmp(names[i], given, glen) == 0)
            prefixes++, prefix = names[i];
    }
    /* Close enough to be a typo: two edits, or a third of a long name. */
    if (best != NULL && (bestd <= 2 || bestd <= glen / 3) && bestd < strlen(best))
        return best;
    return prefixes == 1 ? prefix : NULL;
}

/* The long option named in element el ("--name" or "--name=value"), into buf. */
static const char *long_name(const char *el, char *buf, size_t cap)
{
    const char *s = el + 2, *eq = strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : strlen(s);
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), s);
    return buf;
}

static int find_long(const struct option *opts, const char *name)
{
    for (int i = 0; opts[i].name != NULL; i++)
        if (strcmp(opts[i].name, name) == 0)
            return i;
    return -1;
}

/* "unknown option '--form' (did you mean '--from'?)", as a usage error. */
static int unknown(struct progs_getopt *g, const char *el)
{
    if (strncmp(el, "--", 2) != 0)
        return progs_usage(g->cmd, "unknown option '%s'", el);
    char name[64];
    long_name(el, name, sizeof(name));
    const char *names[128];
    size_t n = 0;
    for (int i = 0; g->opts[i].name != NULL && n < 128; i++)
        names[n++] = g->opts[i].name;
    const char *m = progs_did_you_mean(name, names, n);
    if (m != NULL)
        return progs_usage(g->cmd, "unknown option '--%s' (did you mean '--%s'?)", name, m);
    return progs_usage(g->cmd, "unknown option '--%s'", name);
}

/* "unknown option '-j' (did you mean '--json'?)": the one long option starting with it. */
static int unknown_short(struct progs_getopt *g, int c)
{
    const char *m = NULL;
    int n = 0;
    for (int i = 0; g->opts[i].name != NULL; i++)
        if (g->opts[i].name[0] == c && strcmp(g->opts[i].name, "help") != 0)
            m = g->opts[i].name, n++;
    if (n == 1)
        return progs_usage(g->cmd, "unknown option '-%c' (did you mean '--%s'?)", c, m);
    return progs_usage(g->cmd, "unknown option '-%c'", c);
}

static void start(struct progs_getopt *g)
{
    snprintf(g->shortbuf, sizeof(g->shortbuf), ":h%s", g->shortopts ? g->shortopts : "");
    optind = 0; /* glibc: a full re-initialisation, for commands that parse twice */
    opterr = 0;
    g->started = 1;
    /* --json is known before any error is found, so even a usage error is a JSON object. */
    if (find_long(g->opts, "json") >= 0)
        for (int i = 1; i < g->argc && strcmp(g->argv[i], "--") != 0; i++)
            if (strcmp(g->argv[i], "--json") == 0)
                progs_json = 1;
}

int progs_getopt(struct progs_getopt *g)
{
    if (!g->started)
        start(g);
    int idx = -1;
    int c = getopt_long(g->argc, g->argv, g->shortbuf, g->opts, &idx);
    g->arg = optarg;
    if (c == -1)
        return -1;
    const char *el = optind > 0 && optind <= g->argc ? g->argv[optind - 1] : "";
    if (c == '?' && optopt != 0 && strncmp(el, "--", 2) == 0) {
        char name[64];
        g->code = progs_usage(g->cmd, "option '--%s' takes no value (got '%s')",
                              long_name(el, name, sizeof(name)), el);
        return PROGS_OPT_ERR;
    }
    if (c == '?') {
        g->code =
            optopt != 0 && strncmp(el, "--", 2) != 0 ? unknown_short(g, optopt) : unknown(g, el);
        return PROGS_OPT_ERR;
    }
    if (c == ':') {
        if (strncmp(el, "--", 2) == 0) {
            char name[64];
            g->code = progs_usage(g->cmd, "option '--%s' needs a value",
                                  long_name(el, name, sizeof(name)));
        } else {
            g->code = progs_usage(g->cmd, "option '-%c' needs a value", optopt);
        }
        return PROGS_OPT_ERR;
    }
    if (idx < 0)
        return c; /* a short option */
    /* The element that named the option: the one before a separate value. */
    int separate = g->opts[idx].has_arg == required_argument && optarg == g->argv[optind - 1];
    el = g->argv[optind - 1 - separate];
    char name[64];
    if (strncmp(el, "--", 2) != 0 || strcmp(long_name(el, name, sizeof(name)), g->opts[idx].name)) {
        /* getopt_long took an abbreviation: cairn names options in full, so a later option
         * sharing the prefix never changes what a script means. */
        g->code = unknown(g, el);
        return PROGS_OPT_ERR;
    }
    if (separate && strncmp(optarg, "--", 2) == 0 && optarg[2] != '\0') {
        char vname[64];
        if (find_long(g->opts, long_name(optarg, vname, sizeof(vname))) >= 0) {
            g->code = progs_usage(g->cmd,
                                  "option '--%s' needs a value (got the option '%s'; "
                                  "write --%s=%s if that is the value)",
                                  g->opts[idx].name, optarg, g->opts[idx].name, optarg);
            return PROGS_OPT_ERR;
        }
    }
    g->name = g->opts[idx].name;
    return c;
}

int progs_positionals(struct progs_getopt *g, int min, int max, const char *what)
{
    int n = g->argc - optind;
    if (n < min || n > max) {
        if (n > max)
            return progs_usage(g->cmd, "unexpected argument '%s' (expected %s)",
                               g->argv[optind + max], what);
        return progs_usage(g->cmd, "expected %s", what);
    }
    return -1;
}
