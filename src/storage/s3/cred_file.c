/* S3 driver: the shared config and credentials files (the AWS CLI's INI dialect) and the
 * credential_process provider. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/buf.h"
#include "common/util.h"
#include "s3.h"

extern char **environ;

struct kv {
    char *section, *key, *value;
    int creds; /* from the credentials file (wins over the config file) */
};

struct s3_profiles {
    struct kv *kv;
    size_t n, cap;
    char *where;
};

static char *trim(char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    size_t l = strlen(p);
    while (l > 0 && isspace((unsigned char)p[l - 1]))
        p[--l] = '\0';
    return p;
}

static void add_kv(struct s3_profiles *p, const char *section, const char *key, const char *value,
                   int creds)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->kv = xrealloc(p->kv, p->cap * sizeof(*p->kv));
    }
    p->kv[p->n++] = (struct kv){xstrdup(section), xstrdup(key), xstrdup(value), creds};
}

/* A section header's profile name: "[profile x]" and "[default]" in the config file, "[x]" in
 * the credentials file; NULL for other config sections (sso-session, services). */
static char *section_name(char *hdr, int creds)
{
    char *e = strchr(hdr, ']');
    if (e == NULL)
        return NULL;
    *e = '\0';
    char *name = trim(hdr + 1);
    if (creds || strcmp(name, "default") == 0)
        return name;
    if (strncmp(name, "profile", 7) == 0 && isspace((unsigned char)name[7]))
        return trim(name + 8);
    return NULL;
}

/* One file. Lines indented under a key with an empty value are a nested block (the config
 * file's "s3 =" settings): skipped, as no credential key lives there. */
static void load_file(struct s3_profiles *p, const char *path, int creds)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno != ENOENT)
            cairn_warn("s3", "cannot read AWS %s file '%s': %s", creds ? "credentials" : "config",
                       path, strerror(errno));
        return;
    }
    char line[4096], section[256] = "";
    int have = 0;
    while (fgets(line, sizeof(line), f)) {
        int indented = line[0] == ' ' || line[0] == '\t';
        char *l = trim(line);
        if (*l == '\0' || *l == '#' || *l == ';' || (indented && have))
            continue;
        if (*l == '[') {
            char *name = section_name(l, creds);
            have = name != NULL && strlen(name) < sizeof(section);
            if (have)
                snprintf(section, sizeof(section), "%s", name);
            continue;
        }
        char *eq = strchr(l, '=');
        if (!have || eq == NULL)
            continue;
        *eq = '\0';
        add_kv(p, section, trim(l), trim(eq + 1), creds);
    }
    fclose(f);
}

static char *file_path(const char *env, const char *def)
{
    const char *v = getenv(env);
    if (v != NULL && *v != '\0')
        return xstrdup(v);
    const char *home = getenv("HOME");
    return xasprintf("%s/.aws/%s", home ? home : "", def);
}

struct s3_profiles *s3_profiles_load(void)
{
    struct s3_profiles *p = xcalloc(1, sizeof(*p));
    char *cfg = file_path("AWS_CONFIG_FILE", "config");
    char *cred = file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    load_file(p, cfg, 0);
    load_file(p, cred, 1);
    p->where = xasprintf("'%s' and '%s'", cfg, cred);
    free(cfg);
    free(cred);
    return p;
}

void s3_profiles_free(struct s3_profiles *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->kv[i].section);
        free(p->kv[i].key);
        wipe_free(p->kv[i].value);
    }
    free(p->kv);
    free(p->where);
    free(p);
}

const char *s3_profile_get(const struct s3_profiles *p, const char *name, const char *key)
{
    const char *cfg = NULL, *cred = NULL;
    for (size_t i = 0; i < p->n; i++) /* the last of repeated keys wins */
        if (strcmp(p->kv[i].section, name) == 0 && strcmp(p->kv[i].key, key) == 0) {
            if (p->kv[i].creds)
                cred = p->kv[i].value;
            else
                cfg = p->kv[i].value;
        }
    const char *v = cred ? cred : cfg;
    return v && *v ? v : NULL;
}

int s3_profile_exists(const struct s3_profiles *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->kv[i].section, name) == 0)
            return 1;
    return 0;
}

const char *s3_profiles_where(const struct s3_profiles *p)
{
    return p->where;
}

static const char *json_str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v && *v ? v : NULL;
}

int s3_cred_from_json(const char *text, size_t len, const char *what, struct s3_cred *out,
                      struct cairn_err *err)
{
    json_error_t je;
    json_t *o = json_loadb(text, len, 0, &je);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: answer is not a JSON object (%s)", what,
                             je.text);
    }
    const char *code = json_str(o, "Code"); /* IMDS: "Success" */
    const char *ak = json_str(o, "AccessKeyId"), *sk = json_str(o, "SecretAccessKey");
    const char *tok =
        json_str(o, "SessionToken") ? json_str(o, "SessionToken") : json_str(o, "Token");
    const char *exp = json_str(o, "Expiration");
    int64_t sec = 0;
    long ns = 0;
    int rc = CAIRN_OK;
    if (code != NULL && strcmp(code, "Success") != 0)
        rc = cairn_err_set(err, CAIRN_E_DENIED, "%s: answer has Code '%s'", what, code);
    else if (ak == NULL || sk == NULL)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: answer lacks AccessKeyId or SecretAccessKey",
                           what);
    else if (exp != NULL && parse_rfc3339(exp, &sec, &ns) != 0)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: Expiration '%s' is not an RFC 3339 time",
                           what, exp);
    if (rc == CAIRN_OK) {
        out->access = xstrdup(ak);
        out->secret = xstrdup(sk);
        out->token = tok ? xstrdup(tok) : NULL;
        out->expires = sec;
    }
    /* The secrets inside the JSON text are the caller's to wipe; jansson's copies go here. */
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (json_is_string(v))
            wipe((char *)json_string_value(v), json_string_length(v));
    }
    json_decref(o);
    return rc;
}

/* Split cmd into words as a POSIX shell would, without expansions: blanks separate words,
 * '...' is literal, "..." keeps blanks and takes \" \\ \$ \` escapes, a backslash outside
 * quotes escapes the next character. This is what botocore (shlex-like) and the other SDKs do
 * with credential_process; no shell runs, so no pipes, variables or globs. */
static int split_words(const char *cmd, char ***argv_out, struct cairn_err *err)
{
    size_t n = 0, cap = 8;
    char **argv = xcalloc(cap, sizeof(*argv));
    char *w = xmalloc(strlen(cmd) + 1);
    const char *p = cmd;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        size_t o = 0;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'') {
                const char *e = strchr(p + 1, '\'');
                if (e == NULL)
                    goto unterminated;
                memcpy(w + o, p + 1, (size_t)(e - p - 1));
                o += (size_t)(e - p - 1);
                p = e + 1;
            } else if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                    if (*p == '\\' && p[1] && strchr("\"\\$`", p[1]))
                        p++;
                    w[o++] = *p;
                }
                if (*p != '"')
                    goto unterminated;
                p++;
            } else {
                if (*p == '\\' && p[1])
                    p++;
                w[o++] = *p++;
            }
        }
        if (n + 2 > cap)
            argv = xrealloc(argv, (cap *= 2) * sizeof(*argv));
        argv[n] = xmalloc(o + 1);
        memcpy(argv[n], w, o);
        argv[n++][o] = '\0';
        argv[n] = NULL;
    }
    free(w);
    if (n == 0) {
        free(argv);
        return cairn_err_set(err, CAIRN_E_INVALID, "credential_process is empty");
    }
    *argv_out = argv;
    return CAIRN_OK;
unterminated:
    free(w);
    for (size_t i = 0; i < n; i++)
        free(argv[i]);
    free(argv);
    return cairn_err_set(err, CAIRN_E_INVALID, "credential_process has an unterminated quote");
}

/* Spawn argv with stdout into a pipe (stdin /dev/null, stderr ours), read at most 64 KiB,
 * wait. *status is the wait status. */
static int run_capture(char **argv, struct buf *out, int *status, const char *what,
                       struct cairn_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cairn_err_set(err, CAIRN_E_IO, "%s: pipe: %s", what, strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    pid_t pid;
    int e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (e != 0) {
        close(fds[0]);
        return cairn_err_set(err, CAIRN_E_DENIED, "%s: cannot run '%s': %s", what, argv[0],
                             strerror(e));
    }
    char chunk[4096];
    ssize_t r;
    while ((r = read(fds[0], chunk, sizeof(chunk))) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || out->len + (size_t)r > 65536)
            break; /* the size check below reports it */
        buf_add(out, chunk, (size_t)r);
    }
    close(fds[0]);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    return CAIRN_OK;
}

int s3_cred_process(const char *cmd, const char *profile, struct s3_cred *out,
                    struct cairn_err *err)
{
    char what[160];
    snprintf(what, sizeof(what), "credential_process of AWS profile '%s'", profile);
    char **argv = NULL;
    int rc = split_words(cmd, &argv, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "%s", what);
    struct buf b = {0};
    int st = 0;
    rc = run_capture(argv, &b, &st, what, err);
    if (rc == CAIRN_OK && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        rc = cairn_err_set(err, CAIRN_E_DENIED, "%s: '%s' %s %d (its stderr is above)", what,
                           argv[0], WIFEXITED(st) ? "exited with status" : "killed by signal",
                           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    if (rc == CAIRN_OK) {
        json_t *o = json_loadb((const char *)b.p, b.len, 0, NULL);
        json_int_t ver = json_integer_value(json_object_get(o, "Version"));
        json_decref(o);
        if (ver != 1)
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "%s: output is not a JSON object with \"Version\": 1", what);
    }
    if (rc == CAIRN_OK)
        rc = s3_cred_from_json((const char *)b.p, b.len, what, out, err);
    wipe(b.p, b.len);
    buf_free(&b);
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
    return rc;
}
