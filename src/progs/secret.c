/* The repository secret of a command (progs.h): options first, then the environment. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cairn/digest.h"
#include "common/util.h"
#include "progs/progs.h"

#define PASSWORD_MAX 4096

/* The first line of text, without its line end; empty is refused. */
static int take_password(struct progs_secret *s, char *text, size_t len, const char *what,
                         struct cairn_err *err)
{
    size_t n = strcspn(text, "\r\n");
    if (n < len)
        wipe(text + n, len - n);
    text[n] = '\0';
    if (n == 0) {
        wipe_free(text);
        return cairn_err_set(err, CAIRN_E_INVALID, "%s gave an empty password", what);
    }
    s->password = text;
    s->sec.password = text;
    return CAIRN_OK;
}

static int password_file(struct progs_secret *s, const char *path, struct cairn_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_secret_file(path, "password file", PASSWORD_MAX, &data, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    char what[512];
    snprintf(what, sizeof(what), "password file '%s'", path);
    return take_password(s, (char *)data, len, what, err);
}

/* Run cmd by sh -c; its standard output's first line is the password (restic's
 * --password-command). */
static int password_command(struct progs_secret *s, const char *cmd, struct cairn_err *err)
{
    FILE *p = popen(cmd, "re");
    if (p == NULL)
        return cairn_err_sys(err, CAIRN_E_INVALID, errno, "run CAIRN_PASSWORD_COMMAND");
    char *buf = xcalloc(1, PASSWORD_MAX + 1);
    size_t len = fread(buf, 1, PASSWORD_MAX, p);
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        wipe_free(buf);
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "CAIRN_PASSWORD_COMMAND failed (exit status %d): no password",
                             st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    return take_password(s, buf, len, "CAIRN_PASSWORD_COMMAND", err);
}

int progs_secret_load(const char *key_file, const char *pw_file, struct progs_secret *s,
                      struct cairn_err *err)
{
    memset(s, 0, sizeof(*s));
    if (key_file != NULL && pw_file != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "give either a key file or a password file");
    const char *env_key = getenv("CAIRN_KEY_FILE"), *env_pw = getenv("CAIRN_PASSWORD_FILE");
    const char *env_cmd = getenv("CAIRN_PASSWORD_COMMAND");
    if (key_file == NULL && pw_file == NULL) { /* options win over the environment */
        if (env_key != NULL && *env_key)
            key_file = env_key;
        else if (env_pw != NULL && *env_pw)
            pw_file = env_pw;
        else if (env_cmd != NULL && *env_cmd) {
            int rc = password_command(s, env_cmd, err);
            s->set = rc == CAIRN_OK;
            return rc;
        }
    }
    int rc = CAIRN_OK;
    if (key_file != NULL) {
        rc = cairn_key_load(key_file, s->key, err);
        s->sec.key = s->key;
    } else if (pw_file != NULL) {
        rc = password_file(s, pw_file, err);
    } else {
        return CAIRN_OK;
    }
    s->set = rc == CAIRN_OK;
    if (rc != CAIRN_OK)
        progs_secret_free(s);
    return rc;
}

const struct cairn_repo_secret *progs_secret(const struct progs_secret *s)
{
    return s->set ? &s->sec : NULL;
}

void progs_secret_free(struct progs_secret *s)
{
    wipe(s->key, sizeof(s->key));
    wipe_free(s->password);
    memset(s, 0, sizeof(*s));
}

const char progs_secret_help[] =
    "Encrypted repositories (cairn init): the key is --key-file FILE (32 bytes, made by cairn\n"
    "key generate) or --password-file FILE (first line), else $CAIRN_KEY_FILE,\n"
    "$CAIRN_PASSWORD_FILE or $CAIRN_PASSWORD_COMMAND (its output's first line). Files group\n"
    "or others may read are refused. A wrong key is exit 4.\n\n";
