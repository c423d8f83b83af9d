/* One URL parser for every network source:
 * scheme://[user[:password]@]host[:port][/path][?query], the user-info percent-decoded, IPv6
 * literals in brackets. Errors name the URL only in its redacted form. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/digest.h"
#include "common/util.h"
#include "source/internal.h"

/* malloc'd percent-decoded copy of s[0..n); NULL for a bad escape or an encoded NUL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        uint8_t c = 0;
        if (i + 2 >= n || cairn_hex_decode(s + i + 1, 2, &c, 1, NULL) != 0 || c == 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)c;
        i += 2;
    }
    *o = '\0';
    return out;
}

static int bad(const char *url, const char *why, struct cairn_err *err)
{
    char shown[512];
    if (cairn_source_redact(url, shown, sizeof(shown)) != CAIRN_OK)
        snprintf(shown, sizeof(shown), "(a long URL)");
    return cairn_err_set(err, CAIRN_E_INVALID, "source '%s': %s", shown, why);
}

/* Split "user[:password]" at the first ':' (a user name holds none; a password may). */
static int parse_userinfo(const char *url, const char *ui, size_t n, struct source_url *u,
                          struct cairn_err *err)
{
    const char *colon = memchr(ui, ':', n);
    size_t ulen = colon ? (size_t)(colon - ui) : n;
    u->user = pct_decode(ui, ulen);
    if (colon != NULL)
        u->password = pct_decode(colon + 1, n - ulen - 1);
    if (u->user == NULL || (colon != NULL && u->password == NULL))
        return bad(url, "bad percent-escape in the user-info", err);
    if (u->user[0] == '\0') {
        free(u->user);
        u->user = NULL;
    }
    return CAIRN_OK;
}

static int parse_hostport(const char *url, const char *h, size_t n, unsigned default_port,
                          struct source_url *u, struct cairn_err *err)
{
    const char *port = NULL;
    if (n > 0 && h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close == NULL)
            return bad(url, "unclosed '[' in the host", err);
        u->host = pct_decode(h + 1, (size_t)(close - h - 1));
        if (close + 1 < h + n) {
            if (close[1] != ':')
                return bad(url, "junk after the IPv6 address", err);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(h, ':', n);
        u->host = pct_decode(h, colon ? (size_t)(colon - h) : n);
        if (colon != NULL)
            port = colon + 1;
    }
    if (u->host == NULL || u->host[0] == '\0')
        return bad(url, "no host", err);
    u->port = default_port;
    if (port != NULL) {
        size_t plen = (size_t)(h + n - port);
        unsigned long v = 0;
        if (plen == 0 || plen > 5)
            return bad(url, "bad port", err);
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return bad(url, "bad port", err);
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return bad(url, "port out of range 1-65535", err);
        u->port = (unsigned)v;
    }
    return CAIRN_OK;
}

size_t source_scheme_len(const char *url)
{
    size_t n = 0;
    if (!((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')))
        return 0;
    while (url[n] != '\0' && url[n] != ':') {
        char c = url[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return 0;
        n++;
    }
    return url[n] == ':' ? n : 0;
}

int source_url_split(const char *url, struct source_url_span *sp)
{
    memset(sp, 0, sizeof(*sp));
    size_t sl = source_scheme_len(url);
    if (sl == 0 || strncmp(url + sl, "://", 3) != 0)
        return 0;
    sp->auth = url + sl + 3;
    sp->auth_len = strcspn(sp->auth, "/?#");
    for (size_t i = 0; i < sp->auth_len; i++)
        if (sp->auth[i] == '@')
            sp->at = sp->auth + i;
    return 1;
}

int source_url_parse(const char *url, unsigned default_port, struct source_url *u,
                     struct cairn_err *err)
{
    memset(u, 0, sizeof(*u));
    struct source_url_span sp;
    if (!source_url_split(url, &sp))
        return bad(url, "expected SCHEME://HOST[:PORT]", err);
    u->scheme = xasprintf("%.*s", (int)(sp.auth - 3 - url), url);
    const char *auth = sp.auth, *at = sp.at;
    size_t alen = sp.auth_len;
    int rc = CAIRN_OK;
    if (at != NULL)
        rc = parse_userinfo(url, auth, (size_t)(at - auth), u, err);
    const char *h = at ? at + 1 : auth;
    if (rc == CAIRN_OK)
        rc = parse_hostport(url, h, (size_t)(auth + alen - h), default_port, u, err);
    const char *rest = auth + alen;
    if (rc == CAIRN_OK && *rest == '#')
        rc = bad(url, "a fragment ('#') has no meaning here", err);
    if (rc == CAIRN_OK) {
        size_t plen = strcspn(rest, "?#");
        u->path = pct_decode(rest, plen);
        u->query = rest[plen] == '?' ? xstrdup(rest + plen + 1) : NULL;
        if (u->path == NULL)
            rc = bad(url, "bad percent-escape in the path", err);
    }
    if (rc != CAIRN_OK)
        source_url_free(u);
    return rc;
}

/* The value of "name=" in the query, malloc'd and percent-decoded; NULL when absent. */
char *source_url_param(const struct source_url *u, const char *name)
{
    size_t nl = strlen(name);
    for (const char *q = u->query; q != NULL && *q != '\0';) {
        size_t seg = strcspn(q, "&");
        if (seg > nl && strncmp(q, name, nl) == 0 && q[nl] == '=')
            return pct_decode(q + nl + 1, seg - nl - 1);
        if (seg == nl && strncmp(q, name, nl) == 0)
            return xstrdup("");
        q += seg;
        if (*q == '&')
            q++;
    }
    return NULL;
}

void source_url_free(struct source_url *u)
{
    free(u->scheme);
    free(u->user);
    wipe_free(u->password);
    free(u->host);
    free(u->path);
    free(u->query);
    memset(u, 0, sizeof(*u));
}

/* First line of path, without its newline: a secret kept in a file. The file must not be
 * readable by group or others (as ssh and restic insist for keys). */
int source_read_secret(const char *path, char **out, struct cairn_err *err)
{
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_secret_file(path, "password file", 64 * 1024, &data, &len, err);
    if (rc != CAIRN_OK)
        return rc;
    size_t n = 0;
    while (n < len && data[n] != '\n' && data[n] != '\r')
        n++;
    char *s = xmalloc(n + 1);
    memcpy(s, data, n);
    s[n] = '\0';
    wipe(data, len);
    free(data);
    *out = s;
    return CAIRN_OK;
}
