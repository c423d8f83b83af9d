/* S3 driver: the URL (bucket, prefix) and its options. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "s3.h"

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

char *s3_uri_encode(const char *s, int keep_slash)
{
    char *out = xmalloc(strlen(s) * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/'))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

/* Percent-decode n bytes of s (RFC 3986: "%XX" is a byte; '+' stays '+'). A '%' not followed
 * by two hex digits, or an escape that decodes to NUL, is an error naming part of url. */
static int uri_decode(const char *url, const char *part, const char *s, size_t n, char **out,
                      struct cairn_err *err)
{
    char *o = xmalloc(n + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *w++ = s[i];
            continue;
        }
        if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
            !isxdigit((unsigned char)s[i + 2]) || (s[i + 1] == '0' && s[i + 2] == '0')) {
            free(o);
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "S3 URL '%s': malformed percent-escape '%.3s' in the %s (write "
                                 "'%%' as %%25; an escape is %% and two hex digits, not %%00)",
                                 url, s + i, part);
        }
        char hx[3] = {s[i + 1], s[i + 2], 0};
        *w++ = (char)strtol(hx, NULL, 16);
        i += 2;
    }
    *w = '\0';
    *out = o;
    return CAIRN_OK;
}

static int parse_bool(const char *v)
{
    return strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0;
}

/* bucket and prefix from the path part of an s3:// URL (between "s3://" and '?'). */
static int parse_location(struct s3 *s, const char *url, const char *rest, size_t pathlen,
                          struct cairn_err *err)
{
    char *path = xmalloc(pathlen + 1);
    memcpy(path, rest, pathlen);
    path[pathlen] = '\0';
    char *slash = strchr(path, '/');
    if (slash)
        *slash = '\0';
    if (uri_decode(url, "bucket", path, strlen(path), &s->bucket, err) != CAIRN_OK) {
        free(path);
        return CAIRN_E_INVALID;
    }
    if (s->bucket[0] == '\0' || strlen(s->bucket) > 63 || strchr(s->bucket, '/') != NULL) {
        free(path);
        return cairn_err_set(err, CAIRN_E_INVALID, "S3 URL '%s' has no valid bucket name", url);
    }
    /* Prefix: collapse slashes, forbid "." and ".." components; store with trailing '/'. */
    int rc = CAIRN_OK;
    char *pfx = xcalloc(1, pathlen + 2);
    size_t o = 0;
    char *save = NULL;
    for (char *tok = slash ? strtok_r(slash + 1, "/", &save) : NULL; tok;
         tok = strtok_r(NULL, "/", &save)) {
        char *dec = NULL;
        rc = uri_decode(url, "prefix", tok, strlen(tok), &dec, err);
        if (rc != CAIRN_OK)
            break;
        if (strcmp(dec, ".") == 0 || strcmp(dec, "..") == 0) {
            free(dec);
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "S3 URL '%s': prefix must not contain '.' or '..'", url);
            break;
        }
        /* A decoded component is never longer than its escaped form, so pfx has room. */
        o += (size_t)sprintf(pfx + o, "%s/", dec);
        free(dec);
    }
    s->prefix = pfx;
    free(path);
    return rc;
}

/* A numeric option within [lo, hi]; else "S3 <key> '<v>' <rule>". */
static int parse_num(const char *key, const char *v, uint64_t lo, uint64_t hi, uint64_t *n,
                     const char *rule, struct cairn_err *err)
{
    if (parse_size(v, n) != 0 || *n < lo || *n > hi)
        return cairn_err_set(err, CAIRN_E_INVALID, "S3 %s '%s' %s", key, v, rule);
    return CAIRN_OK;
}

/* One URL option key=v (v decoded). */
static int parse_option(struct s3 *s, const char *kv, char *v, struct cairn_err *err)
{
    uint64_t n = 0;
    int rc = CAIRN_OK;
    if (strcmp(kv, "endpoint") == 0) {
        size_t l = strlen(v);
        while (l > 0 && v[l - 1] == '/')
            v[--l] = '\0';
        if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
            rc = cairn_err_set(err, CAIRN_E_INVALID,
                               "S3 endpoint '%s' must start with http:// or https://", v);
        free(s->endpoint);
        s->endpoint = xstrdup(v);
    } else if (strcmp(kv, "region") == 0) {
        free(s->region);
        s->region = xstrdup(v);
    } else if (strcmp(kv, "path_style") == 0) {
        s->path_style = parse_bool(v);
    } else if (strcmp(kv, "insecure") == 0) {
        s->insecure = parse_bool(v);
    } else if (strcmp(kv, "part_size") == 0) {
        rc = parse_num(kv, v, 5 * MIB, MAX_PART_SIZE, &n, "must be between 5M and 5G", err);
        s->part_floor = n;
    } else if (strcmp(kv, "parts") == 0) {
        rc = parse_num(kv, v, 1, 64, &n, "must be between 1 and 64", err);
        s->parts = (unsigned)n;
    } else if (strcmp(kv, "retries") == 0) {
        rc = parse_num(kv, v, 1, 100, &n, "must be between 1 and 100", err);
        s->attempts = (unsigned)n;
    } else if (strcmp(kv, "retry_base_ms") == 0) {
        rc = parse_num(kv, v, 0, 60000, &n, "is invalid", err);
        s->retry_base_ms = (unsigned)n;
    } else if (strcmp(kv, "stall_timeout") == 0) {
        rc = parse_num(kv, v, 1, 3600, &n, "must be 1 to 3600 seconds", err);
        s->stall_s = (unsigned)n;
    } else {
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "unknown S3 URL option '%s' (known: endpoint, region, "
                           "path_style, insecure, part_size, parts, retries, "
                           "retry_base_ms, stall_timeout)",
                           kv);
    }
    return rc;
}

/* The options after '?': "k=v&k=v", values percent-decoded. */
static int parse_options(struct s3 *s, const char *query, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    char *opts = xstrdup(query);
    char *save = NULL;
    for (char *kv = strtok_r(opts, "&", &save); kv && rc == CAIRN_OK;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL) {
            rc = cairn_err_set(err, CAIRN_E_INVALID, "S3 URL option '%s' needs a value", kv);
            break;
        }
        *eq = '\0';
        char *k = NULL, *v = NULL;
        rc = uri_decode(s->url, "query", kv, strlen(kv), &k, err);
        if (rc == CAIRN_OK)
            rc = uri_decode(s->url, "query", eq + 1, strlen(eq + 1), &v, err);
        if (rc == CAIRN_OK)
            rc = parse_option(s, k, v, err);
        free(k);
        free(v);
    }
    free(opts);
    return rc;
}

int s3_open(const char *url, void **state, struct cairn_err *err)
{
    if (strncmp(url, "s3://", 5) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "not an s3:// URL: '%s'", url);
    struct s3 *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->credmu, NULL);
    s->url = xstrdup(url);
    s->part_floor = 8 * MIB;
    s->parts = 4;
    s->attempts = 6;
    s->retry_base_ms = 100;
    s->stall_s = 60;
    s->path_style = -1;
    s->seed = (unsigned)(mono_ns() ^ (uint64_t)getpid());
    const char *rest = url + 5;
    const char *q = strchr(rest, '?');
    int rc = parse_location(s, url, rest, q ? (size_t)(q - rest) : strlen(rest), err);
    if (rc == CAIRN_OK && q != NULL)
        rc = parse_options(s, q + 1, err);
    if (rc != CAIRN_OK) {
        s3_free(s);
        return rc;
    }
    if (s->path_style < 0)
        s->path_style = s->endpoint != NULL; /* S3-compatibles mostly want path style */
    *state = s;
    return CAIRN_OK;
}
