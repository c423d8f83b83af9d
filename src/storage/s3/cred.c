/* S3 driver: credentials (AWS_* environment, else the shared credentials file) and the
 * region. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "s3.h"

/* Read key from [section] of an INI file (~/.aws/credentials). malloc'd or NULL. */
static char *ini_get(const char *path, const char *section, const char *key)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char line[1024];
    int in = 0;
    char *val = NULL;
    while (val == NULL && fgets(line, sizeof(line), f)) {
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        size_t l = strlen(p);
        while (l > 0 && isspace((unsigned char)p[l - 1]))
            p[--l] = '\0';
        if (*p == '[') {
            char *e = strchr(p, ']');
            in = e && (size_t)(e - p - 1) == strlen(section) &&
                 strncmp(p + 1, section, strlen(section)) == 0;
            continue;
        }
        if (!in || *p == '#' || *p == ';')
            continue;
        char *eq = strchr(p, '=');
        if (eq == NULL)
            continue;
        char *k = p, *ke = eq;
        while (ke > k && isspace((unsigned char)ke[-1]))
            ke--;
        *ke = '\0';
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        if (strcmp(k, key) == 0)
            val = xstrdup(v);
    }
    fclose(f);
    return val;
}

void s3_wipe_free(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        while (*p)
            *p++ = 0;
        free(s);
    }
}

int s3_load_credentials(struct s3 *s, struct cairn_err *err)
{
    const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (ak && *ak && sk && *sk) {
        s->access = xstrdup(ak);
        s->secret = xstrdup(sk);
        const char *tok = getenv("AWS_SESSION_TOKEN");
        s->token = tok && *tok ? xstrdup(tok) : NULL;
    } else {
        const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
        char *def = NULL;
        if (file == NULL || *file == '\0') {
            const char *home = getenv("HOME");
            def = xasprintf("%s/.aws/credentials", home ? home : "");
            file = def;
        }
        const char *profile = getenv("AWS_PROFILE");
        if (profile == NULL || *profile == '\0')
            profile = "default";
        s->access = ini_get(file, profile, "aws_access_key_id");
        s->secret = ini_get(file, profile, "aws_secret_access_key");
        s->token = ini_get(file, profile, "aws_session_token");
        if (s->access == NULL || s->secret == NULL) {
            s3_wipe_free(s->access);
            s3_wipe_free(s->secret);
            s3_wipe_free(s->token);
            s->access = s->secret = s->token = NULL;
            cairn_err_set(err, CAIRN_E_INVALID,
                          "no S3 credentials for '%s': set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or profile [%s] in '%s'",
                          s->url, profile, file);
            free(def);
            return CAIRN_E_INVALID;
        }
        free(def);
    }
    const char *region = s->region;
    if (region == NULL)
        region = getenv("AWS_REGION");
    if (region == NULL || *region == '\0')
        region = getenv("AWS_DEFAULT_REGION");
    if (region == NULL || *region == '\0')
        region = "us-east-1";
    if (s->region == NULL)
        s->region = xstrdup(region);
    s->sigv4 = xasprintf("aws:amz:%s:s3", s->region);
    return CAIRN_OK;
}
