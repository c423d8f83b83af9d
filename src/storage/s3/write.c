/* S3 storage driver on libcurl (CURLOPT_AWS_SIGV4 signs every request).
 *
 * Layout: s3://bucket/prefix -> objects "<prefix>/<backup>/<file>"; backups are the common
 * prefixes under "<prefix>/" (ListObjectsV2 with Delimiter "/", paginated).
 * Writes: a file smaller than one part is one PUT; larger or unknown-size files use a
 * multipart upload whose parts are uploaded by helper threads with a bounded number in flight
 * (memory <= part size x parts). Part sizes start at max(part_size, hint/10000) and double
 * every 1000 parts, so even an unknown-size 5 TiB stream fits in 10,000 parts. A failed or
 * discarded upload is aborted (AbortMultipartUpload). Reads: HEAD, then ranged GETs of one
 * part size each, so memory stays bounded and every range is retried on its own.
 * Every request is retried on connection errors, 5xx, 429, SlowDown/RequestTimeout with
 * exponential backoff and jitter, up to `retries` attempts. */
#define _GNU_SOURCE
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "common/util.h"
#include "storage/internal.h"
#include "xml.h"

#define MIB           (1024ull * 1024ull)
#define MAX_PARTS     10000
#define MAX_PART_SIZE (5ull * 1024 * MIB)
#define XML_MAX       (16u << 20)
#define DELETE_BATCH  1000

struct s3 {
    char *url;
    char *bucket;
    char *prefix;   /* "" or "a/b/" */
    char *endpoint; /* "scheme://host[:port]" without trailing '/' */
    char *region;   /* from the URL, else resolved at first use */
    int path_style;
    int insecure;
    uint64_t part_floor;
    unsigned parts;
    unsigned attempts;
    unsigned retry_base_ms;
    unsigned stall_s; /* a request that moves no byte for this long fails (and is retried) */

    pthread_mutex_t mu;
    int ready; /* credentials loaded and bucket checked */
    char *access, *secret, *token, *sigv4;
    CURL **pool;
    size_t npool, cappool;
    unsigned seed;
    const volatile int *cancel; /* cairn_storage_set_cancel: stops data transfers */
};

/* ---- helpers ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 3986 percent-encoding as SigV4 wants it; keep '/' when keep_slash. malloc'd. */
static char *uri_encode(const char *s, int keep_slash)
{
    char *out = cairn_xmalloc(strlen(s) * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/'))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

static char *uri_decode(const char *s, size_t n)
{
    char *out = cairn_xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hx[3] = {s[i + 1], s[i + 2], 0};
            *o++ = (char)strtol(hx, NULL, 16);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int s3_cancelled(const struct s3 *s)
{
    return s->cancel != NULL && __atomic_load_n(s->cancel, __ATOMIC_RELAXED) != 0;
}

/* A retry backoff that a cancellation cuts short (in 50 ms steps). */
static void sleep_ms_cancel(const struct s3 *s, unsigned ms)
{
    while (ms > 0 && !s3_cancelled(s)) {
        unsigned step = ms < 50 ? ms : 50;
        sleep_ms(step);
        ms -= step;
    }
}

/* libcurl's progress callback: non-zero aborts the transfer (CURLE_ABORTED_BY_CALLBACK). It
 * is called at least once a second, and whenever data moves. */
static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return s3_cancelled(arg);
}

/* ---- URL and credentials ---- */

static void s3_free(void *state);

static int parse_bool(const char *v)
{
    return strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0;
}

static int parse_size(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || end == v)
        return -1;
    uint64_t mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mult = MIB, end++;
    else if (*end == 'g' || *end == 'G')
        mult = 1024 * MIB, end++;
    if (*end == 'i')
        end++;
    if (*end == 'B')
        end++;
    if (*end != '\0' || n > UINT64_MAX / mult)
        return -1;
    *out = n * mult;
    return 0;
}

static int s3_open(const char *url, void **state, struct cairn_err *err)
{
    if (strncmp(url, "s3://", 5) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "not an s3:// URL: '%s'", url);
    struct s3 *s = cairn_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->url = cairn_xstrdup(url);
    s->part_floor = 8 * MIB;
    s->parts = 4;
    s->attempts = 6;
    s->retry_base_ms = 100;
    s->stall_s = 60;
    s->path_style = -1;
    s->seed = (unsigned)(cairn_mono_ns() ^ (uint64_t)getpid());
    int rc = CAIRN_OK;
    const char *rest = url + 5;
    const char *q = strchr(rest, '?');
    size_t pathlen = q ? (size_t)(q - rest) : strlen(rest);
    char *path = cairn_xmalloc(pathlen + 1);
    memcpy(path, rest, pathlen);
    path[pathlen] = '\0';
    char *slash = strchr(path, '/');
    if (slash)
        *slash = '\0';
    s->bucket = cairn_xstrdup(path);
    if (s->bucket[0] == '\0' || strlen(s->bucket) > 63) {
        rc = cairn_err_set(err, CAIRN_E_INVALID, "S3 URL '%s' has no valid bucket name", url);
        free(path);
        goto out;
    }
    /* Prefix: collapse slashes, forbid "." and ".." components; store with trailing '/'. */
    {
        char *pfx = cairn_xcalloc(1, pathlen + 2);
        size_t o = 0;
        char *save = NULL;
        for (char *tok = slash ? strtok_r(slash + 1, "/", &save) : NULL; tok;
             tok = strtok_r(NULL, "/", &save)) {
            if (strcmp(tok, ".") == 0 || strcmp(tok, "..") == 0) {
                rc = cairn_err_set(err, CAIRN_E_INVALID,
                                   "S3 URL '%s': prefix must not contain '.' or '..'", url);
                break;
            }
            o += (size_t)sprintf(pfx + o, "%s/", tok);
        }
        s->prefix = pfx;
    }
    free(path);
    if (rc != CAIRN_OK)
        goto out;
    if (q != NULL) {
        char *opts = cairn_xstrdup(q + 1);
        char *save = NULL;
        for (char *kv = strtok_r(opts, "&", &save); kv && rc == CAIRN_OK;
             kv = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(kv, '=');
            if (eq == NULL) {
                rc = cairn_err_set(err, CAIRN_E_INVALID, "S3 URL option '%s' needs a value", kv);
                break;
            }
            *eq = '\0';
            char *v = uri_decode(eq + 1, strlen(eq + 1));
            uint64_t n = 0;
            if (strcmp(kv, "endpoint") == 0) {
                size_t l = strlen(v);
                while (l > 0 && v[l - 1] == '/')
                    v[--l] = '\0';
                if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
                    rc = cairn_err_set(err, CAIRN_E_INVALID,
                                       "S3 endpoint '%s' must start with http:// or https://", v);
                free(s->endpoint);
                s->endpoint = cairn_xstrdup(v);
            } else if (strcmp(kv, "region") == 0) {
                free(s->region);
                s->region = cairn_xstrdup(v);
            } else if (strcmp(kv, "path_style") == 0) {
                s->path_style = parse_bool(v);
            } else if (strcmp(kv, "insecure") == 0) {
                s->insecure = parse_bool(v);
            } else if (strcmp(kv, "part_size") == 0) {
                if (parse_size(v, &n) != 0 || n < 5 * MIB || n > MAX_PART_SIZE)
                    rc = cairn_err_set(err, CAIRN_E_INVALID,
                                       "S3 part_size '%s' must be between 5M and 5G", v);
                s->part_floor = n;
            } else if (strcmp(kv, "parts") == 0) {
                if (parse_size(v, &n) != 0 || n < 1 || n > 64)
                    rc = cairn_err_set(err, CAIRN_E_INVALID,
                                       "S3 parts '%s' must be between 1 and 64", v);
                s->parts = (unsigned)n;
            } else if (strcmp(kv, "retries") == 0) {
                if (parse_size(v, &n) != 0 || n < 1 || n > 100)
                    rc = cairn_err_set(err, CAIRN_E_INVALID,
                                       "S3 retries '%s' must be between 1 and 100", v);
                s->attempts = (unsigned)n;
            } else if (strcmp(kv, "retry_base_ms") == 0) {
                if (parse_size(v, &n) != 0 || n > 60000)
                    rc = cairn_err_set(err, CAIRN_E_INVALID, "S3 retry_base_ms '%s' is invalid", v);
                s->retry_base_ms = (unsigned)n;
            } else if (strcmp(kv, "stall_timeout") == 0) {
                if (parse_size(v, &n) != 0 || n < 1 || n > 3600)
                    rc = cairn_err_set(err, CAIRN_E_INVALID,
                                       "S3 stall_timeout '%s' must be 1 to 3600 seconds", v);
                s->stall_s = (unsigned)n;
            } else {
                rc = cairn_err_set(err, CAIRN_E_INVALID,
                                   "unknown S3 URL option '%s' (known: endpoint, region, "
                                   "path_style, insecure, part_size, parts, retries, "
                                   "retry_base_ms, stall_timeout)",
                                   kv);
            }
            free(v);
        }
        free(opts);
    }
    if (s->path_style < 0)
        s->path_style = s->endpoint != NULL; /* S3-compatibles mostly want path style */
out:
    if (rc != CAIRN_OK) {
        s3_free(s);
        return rc;
    }
    *state = s;
    return CAIRN_OK;
}

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
            val = cairn_xstrdup(v);
    }
    fclose(f);
    return val;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        while (*p)
            *p++ = 0;
        free(s);
    }
}

static int load_credentials(struct s3 *s, struct cairn_err *err)
{
    const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (ak && *ak && sk && *sk) {
        s->access = cairn_xstrdup(ak);
        s->secret = cairn_xstrdup(sk);
        const char *tok = getenv("AWS_SESSION_TOKEN");
        s->token = tok && *tok ? cairn_xstrdup(tok) : NULL;
    } else {
        const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
        char *def = NULL;
        if (file == NULL || *file == '\0') {
            const char *home = getenv("HOME");
            def = cairn_xasprintf("%s/.aws/credentials", home ? home : "");
            file = def;
        }
        const char *profile = getenv("AWS_PROFILE");
        if (profile == NULL || *profile == '\0')
            profile = "default";
        s->access = ini_get(file, profile, "aws_access_key_id");
        s->secret = ini_get(file, profile, "aws_secret_access_key");
        s->token = ini_get(file, profile, "aws_session_token");
        if (s->access == NULL || s->secret == NULL) {
            wipe_free(s->access);
            wipe_free(s->secret);
            wipe_free(s->token);
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
        s->region = cairn_xstrdup(region);
    s->sigv4 = cairn_xasprintf("aws:amz:%s:s3", s->region);
    return CAIRN_OK;
}

/* ---- HTTP ---- */

static CURL *handle_get(struct s3 *s)
{
    pthread_mutex_lock(&s->mu);
    CURL *c = s->npool > 0 ? s->pool[--s->npool] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (c == NULL) {
        c = curl_easy_init();
        if (c == NULL)
            abort();
    } else {
        curl_easy_reset(c); /* keeps the connection cache */
    }
    return c;
}

static void handle_put(struct s3 *s, CURL *c)
{
    pthread_mutex_lock(&s->mu);
    if (s->npool == s->cappool) {
        s->cappool = s->cappool ? s->cappool * 2 : 8;
        s->pool = cairn_xrealloc(s->pool, s->cappool * sizeof(*s->pool));
    }
    s->pool[s->npool++] = c;
    pthread_mutex_unlock(&s->mu);
}

struct call {
    const char *method; /* GET HEAD PUT POST DELETE */
    const char *key;    /* full object key, NULL for the bucket */
    const char *query;  /* canonical (sorted, encoded) query or NULL */
    const void *body;
    size_t body_len;
    const char *content_type;
    const char *hdr[4]; /* extra headers, NULL-terminated */
    /* response */
    size_t max;   /* body bytes kept (XML); 0 = discard */
    uint8_t *dst; /* or: body goes here (ranged GET), at most dst_cap bytes */
    size_t dst_cap;
    long status;
    char *body_out;
    size_t body_out_len;
    char etag[256];
    int64_t clen;
    int overflow;
    int cancellable; /* a data transfer: cairn_storage_set_cancel's flag stops it */
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = sz * n;
    if (c->dst != NULL) {
        if (len > c->dst_cap - c->body_out_len) {
            c->overflow = 1;
            return 0;
        }
        memcpy(c->dst + c->body_out_len, p, len);
        c->body_out_len += len;
        return len;
    }
    if (c->max == 0 || c->body_out_len + len > c->max) {
        /* Keep only what fits; error bodies are small. */
        if (c->body_out_len + len > c->max)
            c->overflow = c->max > 0;
        return len;
    }
    c->body_out = cairn_xrealloc(c->body_out, c->body_out_len + len + 1);
    memcpy(c->body_out + c->body_out_len, p, len);
    c->body_out_len += len;
    c->body_out[c->body_out_len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = sz * n;
    if (len > 5 && strncasecmp(p, "ETag:", 5) == 0) {
        const char *v = p + 5;
        while (v < p + len && (*v == ' ' || *v == '\t'))
            v++;
        size_t l = (size_t)(p + len - v);
        while (l > 0 && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
            l--;
        if (l < sizeof(c->etag)) {
            memcpy(c->etag, v, l);
            c->etag[l] = '\0';
        }
    } else if (len > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
        c->clen = strtoll(p + 15, NULL, 10);
    }
    return len;
}

static char *object_url(struct s3 *s, const char *key, const char *query)
{
    char *ekey = uri_encode(key ? key : "", 1);
    char *base;
    if (s->endpoint == NULL) {
        base = s->path_style
                   ? cairn_xasprintf("https://s3.%s.amazonaws.com/%s", s->region, s->bucket)
                   : cairn_xasprintf("https://%s.s3.%s.amazonaws.com", s->bucket, s->region);
    } else if (s->path_style) {
        base = cairn_xasprintf("%s/%s", s->endpoint, s->bucket);
    } else {
        const char *host = strstr(s->endpoint, "://") + 3;
        base =
            cairn_xasprintf("%.*s%s.%s", (int)(host - s->endpoint), s->endpoint, s->bucket, host);
    }
    char *url = cairn_xasprintf("%s/%s%s%s", base, ekey, query ? "?" : "", query ? query : "");
    free(base);
    free(ekey);
    return url;
}

static int status_code(long http)
{
    if (http == 403 || http == 401)
        return CAIRN_E_DENIED;
    if (http == 404)
        return CAIRN_E_NOTFOUND;
    if (http == 409 || http == 412)
        return CAIRN_E_EXISTS;
    if (http == 400 || http == 405 || http == 411 || http == 413)
        return CAIRN_E_PROTOCOL;
    return CAIRN_E_NETWORK;
}

static int retryable_s3_code(const char *code)
{
    return code && (strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
                    strcmp(code, "InternalError") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
                    strcmp(code, "RequestTimeTooSkewed") == 0);
}

static int retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return 1;
    default: return 0;
    }
}

static int ensure_ready(struct s3 *s, struct cairn_err *err);

static void call_reset(struct call *c)
{
    free(c->body_out);
    c->body_out = NULL;
    c->body_out_len = 0;
    c->status = 0;
    c->etag[0] = '\0';
    c->clen = -1;
    c->overflow = 0;
}

static void call_done(struct call *c)
{
    free(c->body_out);
    c->body_out = NULL;
}

/* Perform one S3 request with retries. 2xx is success; anything else is an error naming the
 * request, the HTTP status and the S3 error code. The response body stays in c. */
static int s3_call(struct s3 *s, struct call *c, struct cairn_err *err)
{
    struct cairn_err local; /* the retry log needs the message even when the caller does not */
    if (err == NULL)
        err = &local;
    char *url = object_url(s, c->key, c->query);
    char what[512];
    snprintf(what, sizeof(what), "s3 %s s3://%s/%s%s%s", c->method, s->bucket, c->key ? c->key : "",
             c->query ? "?" : "", c->query ? c->query : "");
    uint8_t sum[32];
    char sumhex[65], hdrbuf[128];
    cairn_sha256_oneshot(c->body ? c->body : "", c->body_len, sum);
    cairn_hex_encode(sum, 32, sumhex);
    int rc = CAIRN_OK;
    for (unsigned attempt = 1;; attempt++) {
        call_reset(c);
        if (c->cancellable && s3_cancelled(s)) {
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
            break;
        }
        CURL *h = handle_get(s);
        struct curl_slist *hl = NULL;
        snprintf(hdrbuf, sizeof(hdrbuf), "x-amz-content-sha256: %s", sumhex);
        /* Every header given here is signed by libcurl, so only ever add headers that are
         * really sent (a removal like "Expect:" would be signed but not sent). */
        hl = curl_slist_append(hl, hdrbuf);
        if (s->token != NULL) {
            char *t = cairn_xasprintf("x-amz-security-token: %s", s->token);
            hl = curl_slist_append(hl, t);
            free(t);
        }
        if (c->content_type != NULL) {
            char *t = cairn_xasprintf("Content-Type: %s", c->content_type);
            hl = curl_slist_append(hl, t);
            free(t);
        }
        for (int i = 0; i < 4 && c->hdr[i]; i++)
            hl = curl_slist_append(hl, c->hdr[i]);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, s->access);
        curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); /* no byte for stall_s: give up */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)s->stall_s);
        if (c->cancellable && s->cancel != NULL) {
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        }
        if (s->insecure) {
            curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
            curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (strcmp(c->method, "HEAD") == 0) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (strcmp(c->method, "PUT") == 0 || strcmp(c->method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
        } else if (strcmp(c->method, "GET") != 0) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
        }
        char curlerr[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
        CURLcode cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        curl_slist_free_all(hl);
        int retry = 0;
        if (cc != CURLE_OK) {
            if (cc == CURLE_WRITE_ERROR && c->overflow) {
                rc =
                    cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: response larger than expected", what);
                curl_easy_cleanup(h); /* the connection is mid-response */
                break;
            }
            if (cc == CURLE_ABORTED_BY_CALLBACK) {
                rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
                curl_easy_cleanup(h); /* mid-transfer: not reusable */
                break;
            }
            /* A timeout once connected is the stall deadline: name the option. */
            curl_off_t connected = 0;
            curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected);
            int stalled = cc == CURLE_OPERATION_TIMEDOUT && connected > 0;
            rc = cairn_err_set(err, CAIRN_E_NETWORK, "%s: %s%s", what,
                               curlerr[0] ? curlerr : curl_easy_strerror(cc),
                               stalled ? " (the S3 URL option stall_timeout sets this limit)" : "");
            retry = retryable_curl(cc);
            handle_put(s, h);
        } else {
            handle_put(s, h);
            /* A connection closed inside the response headers ends a transfer "successfully"
             * for libcurl (no Content-Length seen: the body runs to the close), so a cut 2xx
             * answer to a ranged GET or an object HEAD is caught here and retried. */
            int ok = c->status >= 200 && c->status < 300;
            int cut = ok && ((c->dst != NULL && c->body_out_len != c->dst_cap) ||
                             (strcmp(c->method, "HEAD") == 0 && c->key != NULL && c->clen < 0));
            if (ok && !cut) {
                rc = CAIRN_OK;
                break;
            }
            if (cut) {
                rc = cairn_err_set(
                    err, CAIRN_E_NETWORK, "%s: HTTP %ld answer cut short (%zu body bytes%s)", what,
                    c->status, c->body_out_len, c->clen < 0 ? ", no Content-Length" : "");
                retry = 1;
            } else {
                const char *b = c->dst ? NULL : c->body_out;
                char *code = b ? s3_xml_get(b, b + c->body_out_len, "Code") : NULL;
                char *msg = b ? s3_xml_get(b, b + c->body_out_len, "Message") : NULL;
                rc = cairn_err_set(err, status_code(c->status), "%s: HTTP %ld%s%s%s%s", what,
                                   c->status, code ? " " : "", code ? code : "", msg ? ": " : "",
                                   msg ? msg : "");
                retry = c->status >= 500 || c->status == 429 || retryable_s3_code(code);
                free(code);
                free(msg);
            }
        }
        if (!retry || attempt >= s->attempts)
            break;
        /* Exponential backoff with jitter: base*2^(n-1) capped at 20 s, then 50-100 %. */
        uint64_t delay = (uint64_t)s->retry_base_ms << (attempt - 1 < 16 ? attempt - 1 : 16);
        if (delay > 20000)
            delay = 20000;
        pthread_mutex_lock(&s->mu);
        unsigned r = (unsigned)rand_r(&s->seed);
        pthread_mutex_unlock(&s->mu);
        delay = delay / 2 + (delay > 1 ? r % (delay / 2 + 1) : 0);
        cairn_log(CAIRN_LOG_WARN, "s3", "%s (attempt %u of %u), retrying in %llu ms", err->msg,
                  attempt, s->attempts, (unsigned long long)delay);
        if (c->cancellable)
            sleep_ms_cancel(s, (unsigned)delay);
        else
            sleep_ms((unsigned)delay);
    }
    free(url);
    if (rc == CAIRN_OK && c->overflow && c->dst == NULL)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: response larger than %zu bytes", what,
                           c->max);
    return rc;
}

/* Credentials + HeadBucket once per session (again after close). */
static int ensure_ready(struct s3 *s, struct cairn_err *err)
{
    pthread_once(&curl_once, curl_init_once);
    pthread_mutex_lock(&s->mu);
    int ready = s->ready;
    pthread_mutex_unlock(&s->mu);
    if (ready)
        return CAIRN_OK;
    pthread_mutex_lock(&s->mu);
    int rc = CAIRN_OK;
    if (s->access == NULL)
        rc = load_credentials(s, err);
    pthread_mutex_unlock(&s->mu);
    if (rc != CAIRN_OK)
        return rc;
    /* Cancellable: a session not yet ready has started nothing to clean up. */
    struct call c = {.method = "HEAD", .cancellable = 1};
    c.key = NULL;
    rc = s3_call(s, &c, err);
    call_done(&c);
    if (rc != CAIRN_OK) {
        if (c.status == 404)
            return cairn_err_set(err, CAIRN_E_NOTFOUND, "S3 bucket '%s' does not exist (%s)",
                                 s->bucket, s->endpoint ? s->endpoint : "AWS");
        if (c.status == 403 || c.status == 401)
            return cairn_err_set(err, CAIRN_E_DENIED,
                                 "access to S3 bucket '%s' denied (HTTP %ld): check the "
                                 "credentials and region '%s'",
                                 s->bucket, c.status, s->region);
        if (c.status == 301 || c.status == 400)
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "S3 bucket '%s' rejected the request (HTTP %ld): wrong region "
                                 "'%s'?",
                                 s->bucket, c.status, s->region);
        cairn_err_wrap(err, "check S3 bucket '%s'", s->bucket);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    s->ready = 1;
    pthread_mutex_unlock(&s->mu);
    return CAIRN_OK;
}

/* ---- listing and deleting ---- */

struct lister {
    int (*on_key)(void *arg, const char *key);
    int (*on_prefix)(void *arg, const char *prefix);
    int (*on_page)(void *arg); /* after each page's keys */
    void *arg;
};

static int s3_list_objects(struct s3 *s, const char *prefix, int delimit, unsigned max_keys,
                           int one_page, const struct lister *l, struct cairn_err *err)
{
    char *token = NULL;
    int rc = CAIRN_OK;
    char *eprefix = uri_encode(prefix, 0);
    do {
        char *etoken = token ? uri_encode(token, 0) : NULL;
        char *q =
            cairn_xasprintf("%s%s%s%slist-type=2&max-keys=%u&prefix=%s",
                            etoken ? "continuation-token=" : "", etoken ? etoken : "",
                            etoken ? "&" : "", delimit ? "delimiter=%2F&" : "", max_keys, eprefix);
        free(etoken);
        struct call c = {.method = "GET", .query = q, .max = XML_MAX};
        rc = s3_call(s, &c, err);
        free(q);
        free(token);
        token = NULL;
        if (rc == CAIRN_OK) {
            const char *p = c.body_out ? c.body_out : "", *end = p + c.body_out_len;
            struct xml_span sp;
            const char *pos = p;
            while (rc == CAIRN_OK && l->on_key && s3_xml_next(&pos, end, "Contents", &sp)) {
                char *key = s3_xml_get(sp.p, sp.p + sp.len, "Key");
                if (key == NULL)
                    rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "S3 listing entry without a Key");
                else
                    rc = l->on_key(l->arg, key);
                free(key);
            }
            pos = p;
            while (rc == CAIRN_OK && l->on_prefix &&
                   s3_xml_next(&pos, end, "CommonPrefixes", &sp)) {
                char *pf = s3_xml_get(sp.p, sp.p + sp.len, "Prefix");
                if (pf != NULL)
                    rc = l->on_prefix(l->arg, pf);
                free(pf);
            }
            if (rc == CAIRN_OK && l->on_page)
                rc = l->on_page(l->arg);
            char *trunc = s3_xml_get(p, end, "IsTruncated");
            if (rc == CAIRN_OK && trunc && strcmp(trunc, "true") == 0 && !one_page) {
                token = s3_xml_get(p, end, "NextContinuationToken");
                if (token == NULL || *token == '\0')
                    rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                                       "S3 listing of '%s' is truncated but has no continuation "
                                       "token",
                                       prefix);
            }
            free(trunc);
        }
        call_done(&c);
    } while (rc == CAIRN_OK && token != NULL);
    free(token);
    free(eprefix);
    return rc;
}

struct list_ctx {
    struct s3 *s;
    int (*fn)(void *arg, const char *name);
    void *arg;
};

static int list_prefix_cb(void *arg, const char *pf)
{
    struct list_ctx *lc = arg;
    size_t pl = strlen(lc->s->prefix), l = strlen(pf);
    if (l <= pl + 1 || strncmp(pf, lc->s->prefix, pl) != 0 || pf[l - 1] != '/')
        return 0;
    char *name = cairn_xstrdup(pf + pl);
    name[l - pl - 1] = '\0';
    int rc = lc->fn(lc->arg, name);
    free(name);
    return rc;
}

static int s3_list(void *state, int (*fn)(void *arg, const char *name), void *arg,
                   struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    struct list_ctx lc = {s, fn, arg};
    struct lister l = {.on_prefix = list_prefix_cb, .arg = &lc};
    return s3_list_objects(s, s->prefix, 1, 1000, 0, &l, err);
}

static int found_cb(void *arg, const char *key)
{
    (void)key;
    *(int *)arg = 1;
    return 0;
}

static int s3_start(void *state, const char *backup, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = cairn_xasprintf("%s%s/", s->prefix, backup);
    int found = 0;
    struct lister l = {.on_key = found_cb, .arg = &found};
    rc = s3_list_objects(s, pfx, 0, 1, 1, &l, err);
    if (rc == CAIRN_OK && found)
        rc = cairn_err_set(err, CAIRN_E_EXISTS, "backup '%s' already exists in '%s'", backup,
                           s->url);
    free(pfx);
    return rc;
}

struct deleter {
    struct s3 *s;
    char **keys;
    size_t n;
    size_t total;
    struct cairn_err *err;
};

static void md5_base64(const void *data, size_t len, char out[32])
{
    uint8_t d[16];
    unsigned dl = 0;
    EVP_Digest(data, len, d, &dl, EVP_md5(), NULL);
    cairn_base64_encode(d, 16, out);
}

/* One DeleteObjects request for the collected keys (quiet mode: only failures come back). */
static int delete_flush(void *arg)
{
    struct deleter *d = arg;
    if (d->n == 0)
        return CAIRN_OK; /* an empty <Delete> is MalformedXML on S3 and MinIO */
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < d->n; i++)
        cap += strlen(d->keys[i]) * 6 + 32;
    char *xml = cairn_xmalloc(cap);
    len += (size_t)sprintf(xml, "<Delete><Quiet>true</Quiet>");
    for (size_t i = 0; i < d->n; i++) {
        char *k = s3_xml_escape(d->keys[i]);
        len += (size_t)sprintf(xml + len, "<Object><Key>%s</Key></Object>", k);
        free(k);
    }
    len += (size_t)sprintf(xml + len, "</Delete>");
    char md5[32], hdr[64];
    md5_base64(xml, len, md5);
    snprintf(hdr, sizeof(hdr), "Content-MD5: %s", md5);
    struct call c = {.method = "POST",
                     .query = "delete=",
                     .body = xml,
                     .body_len = len,
                     .content_type = "application/xml",
                     .max = XML_MAX};
    c.hdr[0] = hdr;
    int rc = s3_call(d->s, &c, d->err);
    if (rc == CAIRN_OK && c.body_out != NULL) {
        const char *pos = c.body_out, *end = c.body_out + c.body_out_len;
        struct xml_span sp;
        size_t nerr = 0;
        char first[600] = "";
        while (s3_xml_next(&pos, end, "Error", &sp)) {
            if (nerr++ == 0) {
                char *k = s3_xml_get(sp.p, sp.p + sp.len, "Key");
                char *code = s3_xml_get(sp.p, sp.p + sp.len, "Code");
                char *msg = s3_xml_get(sp.p, sp.p + sp.len, "Message");
                snprintf(first, sizeof(first), "'%s': %s%s%s", k ? k : "?", code ? code : "?",
                         msg ? ": " : "", msg ? msg : "");
                free(k);
                free(code);
                free(msg);
            }
        }
        if (nerr > 0)
            rc = cairn_err_set(d->err, CAIRN_E_IO, "S3 could not delete %zu object(s), first %s",
                               nerr, first);
    }
    call_done(&c);
    free(xml);
    d->total += d->n;
    for (size_t i = 0; i < d->n; i++)
        free(d->keys[i]);
    d->n = 0;
    return rc;
}

static int delete_collect(void *arg, const char *key)
{
    struct deleter *d = arg;
    if (d->n == DELETE_BATCH) {
        int rc = delete_flush(d);
        if (rc != CAIRN_OK)
            return rc;
    }
    d->keys[d->n++] = cairn_xstrdup(key);
    return 0;
}

static int s3_remove(void *state, const char *backup, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    /* MANIFEST first: an interrupted remove leaves an incomplete backup, never a complete
     * one with missing files. */
    char *man = cairn_xasprintf("%s%s/%s", s->prefix, backup, CAIRN_MANIFEST_NAME);
    struct call c = {.method = "DELETE", .key = man, .max = 64 * 1024};
    rc = s3_call(s, &c, err);
    call_done(&c);
    free(man);
    if (rc == CAIRN_E_NOTFOUND)
        rc = CAIRN_OK;
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = cairn_xasprintf("%s%s/", s->prefix, backup);
    struct deleter d = {.s = s, .err = err};
    d.keys = cairn_xcalloc(DELETE_BATCH, sizeof(*d.keys));
    struct lister l = {.on_key = delete_collect, .on_page = delete_flush, .arg = &d};
    rc = s3_list_objects(s, pfx, 0, 1000, 0, &l, err);
    for (size_t i = 0; i < d.n; i++)
        free(d.keys[i]);
    free(d.keys);
    free(pfx);
    if (rc == CAIRN_OK && d.total == 0)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' not found in '%s'", backup, s->url);
    return rc;
}

struct files_ctx {
    size_t skip; /* length of "<prefix><backup>/" */
    int (*fn)(void *arg, const char *file);
    void *arg;
};

static int files_key_cb(void *arg, const char *key)
{
    struct files_ctx *fc = arg;
    const char *name = key + fc->skip;
    if (strlen(key) <= fc->skip || strchr(name, '/') != NULL)
        return 0;
    return fc->fn(fc->arg, name);
}

/* Lock objects: the keys under "<prefix><backup>/". */
static int s3_list_files(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                         void *arg, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *pfx = cairn_xasprintf("%s%s/", s->prefix, backup);
    struct files_ctx fc = {strlen(pfx), fn, arg};
    struct lister l = {.on_key = files_key_cb, .arg = &fc};
    rc = s3_list_objects(s, pfx, 0, 1000, 0, &l, err);
    free(pfx);
    return rc;
}

static int s3_remove_file(void *state, const char *backup, const char *file, struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *key = cairn_xasprintf("%s%s/%s", s->prefix, backup, file);
    struct call c = {.method = "DELETE", .key = key, .max = 64 * 1024};
    rc = s3_call(s, &c, err);
    call_done(&c);
    free(key);
    return rc;
}

/* ---- writer: single PUT or multipart upload ---- */

struct s3_writer {
    struct cairn_writer base;
    struct s3 *s;
    char *key;
    uint64_t base_part; /* part size of parts 1..1000 */
    uint64_t part_size; /* size of the part being filled */
    uint8_t *buf;
    size_t len, cap;
    unsigned next_part; /* number of the part being filled (1-based) */
    char *upload_id;
    char **etags; /* [MAX_PARTS] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned running;
    int failed;
    struct cairn_err async_err;
    int committed;
    int atomic; /* CAIRN_STORAGE_WRITE_ATOMIC: a single PUT is published by a copy */
};

struct part_job {
    struct s3_writer *w;
    unsigned no;
    uint8_t *buf;
    size_t len;
};

static uint64_t part_size_for(const struct s3_writer *w, unsigned no)
{
    unsigned tier = (no - 1) / 1000;
    uint64_t p = w->base_part << (tier < 12 ? tier : 12);
    return p > MAX_PART_SIZE ? MAX_PART_SIZE : p;
}

/* Upload threads allowed for the current part size: memory stays near part_floor x parts
 * (the part being filled counts), with at least one upload in flight. */
static unsigned max_running(const struct s3_writer *w)
{
    uint64_t budget = w->s->part_floor * (w->s->parts < 2 ? 2 : w->s->parts);
    uint64_t bufs = budget / w->part_size;
    return bufs > 2 ? (unsigned)(bufs - 1) : 1;
}

static void *part_thread(void *arg)
{
    struct part_job *j = arg;
    struct s3_writer *w = j->w;
    char q[1200];
    snprintf(q, sizeof(q), "partNumber=%u&uploadId=%s", j->no, w->upload_id);
    struct call c = {.method = "PUT",
                     .key = w->key,
                     .query = q,
                     .body = j->buf,
                     .body_len = j->len,
                     .content_type = "application/octet-stream",
                     .max = 64 * 1024,
                     .cancellable = 1};
    struct cairn_err e;
    cairn_err_clear(&e);
    int rc = s3_call(w->s, &c, &e);
    if (rc == CAIRN_OK && c.etag[0] == '\0')
        rc = cairn_err_set(&e, CAIRN_E_PROTOCOL, "s3 PUT part %u of '%s': no ETag in response",
                           j->no, w->key);
    pthread_mutex_lock(&w->mu);
    if (rc == CAIRN_OK) {
        w->etags[j->no - 1] = cairn_xstrdup(c.etag);
    } else if (!w->failed) {
        w->failed = 1;
        cairn_err_copy(&w->async_err, &e);
    }
    w->running--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    call_done(&c);
    free(j->buf);
    free(j);
    return NULL;
}

static int async_error(struct s3_writer *w, struct cairn_err *err)
{
    pthread_mutex_lock(&w->mu);
    int failed = w->failed;
    if (failed)
        cairn_err_copy(err, &w->async_err);
    pthread_mutex_unlock(&w->mu);
    return failed ? (w->async_err.code ? w->async_err.code : CAIRN_E_IO) : CAIRN_OK;
}

static int create_upload(struct s3_writer *w, struct cairn_err *err)
{
    struct call c = {.method = "POST",
                     .key = w->key,
                     .query = "uploads=",
                     .content_type = "application/octet-stream",
                     .max = XML_MAX};
    int rc = s3_call(w->s, &c, err);
    if (rc == CAIRN_OK) {
        const char *b = c.body_out ? c.body_out : "";
        w->upload_id = s3_xml_get(b, b + c.body_out_len, "UploadId");
        if (w->upload_id == NULL || w->upload_id[0] == '\0') {
            free(w->upload_id);
            w->upload_id = NULL;
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "s3 CreateMultipartUpload of '%s': no UploadId in response", w->key);
        } else {
            /* Encode once for every later query string. */
            char *enc = uri_encode(w->upload_id, 0);
            free(w->upload_id);
            w->upload_id = enc;
            w->etags = cairn_xcalloc(MAX_PARTS, sizeof(*w->etags));
        }
    }
    call_done(&c);
    return rc;
}

/* Hand the filled buffer to an upload thread (blocking while too many are in flight). */
static int dispatch_part(struct s3_writer *w, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    if (w->upload_id == NULL && (rc = create_upload(w, err)) != CAIRN_OK)
        return rc;
    if (w->next_part > MAX_PARTS)
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s' needs more than %d S3 parts", w->key,
                             MAX_PARTS);
    unsigned limit = max_running(w);
    pthread_mutex_lock(&w->mu);
    while (w->running >= limit && !w->failed)
        pthread_cond_wait(&w->cv, &w->mu);
    w->running++;
    pthread_mutex_unlock(&w->mu);
    if ((rc = async_error(w, err)) != CAIRN_OK) {
        pthread_mutex_lock(&w->mu);
        w->running--;
        pthread_mutex_unlock(&w->mu);
        return rc;
    }
    struct part_job *j = cairn_xcalloc(1, sizeof(*j));
    j->w = w;
    j->no = w->next_part;
    j->buf = w->buf;
    j->len = w->len;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, part_thread, j) != 0) {
        pthread_attr_destroy(&attr);
        free(j);
        pthread_mutex_lock(&w->mu);
        w->running--;
        pthread_mutex_unlock(&w->mu);
        return cairn_err_set(err, CAIRN_E_INTERNAL, "cannot start an S3 upload thread");
    }
    pthread_attr_destroy(&attr);
    w->buf = NULL;
    w->len = w->cap = 0;
    w->next_part++;
    w->part_size = part_size_for(w, w->next_part);
    return CAIRN_OK;
}

static void wait_parts(struct s3_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->running > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static int s3w_write(struct cairn_writer *base, const void *data, size_t len, struct cairn_err *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    const uint8_t *p = data;
    int rc = async_error(w, err);
    while (rc == CAIRN_OK && len > 0) {
        size_t room = (size_t)(w->part_size - w->len);
        size_t n = len < room ? len : room;
        if (w->len + n > w->cap) { /* grow geometrically up to one part */
            size_t cap = w->cap ? w->cap : 256 * 1024;
            while (cap < w->len + n)
                cap *= 2;
            if (cap > w->part_size)
                cap = (size_t)w->part_size;
            w->buf = cairn_xrealloc(w->buf, cap);
            w->cap = cap;
        }
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        p += n;
        len -= n;
        if (w->len == w->part_size)
            rc = dispatch_part(w, err);
    }
    return rc;
}

static void abort_upload(struct s3_writer *w)
{
    if (w->upload_id == NULL)
        return;
    char q[1100];
    snprintf(q, sizeof(q), "uploadId=%s", w->upload_id);
    struct call c = {.method = "DELETE", .key = w->key, .query = q, .max = 64 * 1024};
    struct cairn_err e;
    if (s3_call(w->s, &c, &e) != CAIRN_OK)
        cairn_log(CAIRN_LOG_WARN, "s3", "abort multipart upload of '%s' failed: %s", w->key, e.msg);
    call_done(&c);
    free(w->upload_id);
    w->upload_id = NULL;
}

/* CAIRN_STORAGE_WRITE_ATOMIC (the MANIFEST header): whole or not at all. S3 never exposes a
 * partial PUT, but some S3-compatible servers (s3rver, seen in the crash tests) store the bytes
 * of an interrupted upload. So the object goes to a temporary key first and is published by a
 * server-side copy, which the server completes even if this process dies. */
static int put_via_copy(struct s3_writer *w, struct cairn_err *err)
{
    char *tmp = cairn_xasprintf("%s.tmp", w->key);
    struct call c = {.method = "PUT",
                     .key = tmp,
                     .body = w->buf,
                     .body_len = w->len,
                     .content_type = "application/octet-stream",
                     .max = 64 * 1024};
    int rc = s3_call(w->s, &c, err);
    call_done(&c);
    /* S3 wants the copy source percent-encoded; servers that decode it with JavaScript's
     * decodeURI (s3rver) keep %2B, %3D, %40 as they are and only find the raw key. */
    for (int raw = 0; rc == CAIRN_OK && raw < 2; raw++) {
        char *src = raw ? cairn_xstrdup(tmp) : uri_encode(tmp, 1);
        char *hdr = cairn_xasprintf("x-amz-copy-source: /%s/%s", w->s->bucket, src);
        struct call cp = {.method = "PUT", .key = w->key, .max = XML_MAX};
        cp.hdr[0] = hdr;
        rc = s3_call(w->s, &cp, err);
        /* S3 may answer 200 and still report an error in the body. */
        if (rc == CAIRN_OK &&
            (cp.body_out == NULL || strstr(cp.body_out, "<CopyObjectResult") == NULL))
            rc = cairn_err_set(err, CAIRN_E_NETWORK, "s3 copy of '%s' to '%s' did not complete",
                               tmp, w->key);
        call_done(&cp);
        free(hdr);
        int retry_raw = !raw && rc == CAIRN_E_NOTFOUND && strcmp(src, tmp) != 0;
        free(src);
        if (!retry_raw)
            break;
        rc = CAIRN_OK;
    }
    struct call del = {.method = "DELETE", .key = tmp, .max = 64 * 1024};
    struct cairn_err ignored; /* a leftover temporary key only makes an incomplete backup */
    s3_call(w->s, &del, &ignored);
    call_done(&del);
    free(tmp);
    return rc;
}

static int s3w_finish(struct cairn_writer *base, struct cairn_err *err)
{
    struct s3_writer *w = (struct s3_writer *)base;
    int rc = CAIRN_OK;
    if (w->upload_id == NULL) {
        if (w->atomic)
            rc = put_via_copy(w, err);
        else {
            struct call c = {.method = "PUT",
                             .key = w->key,
                             .body = w->buf,
                             .body_len = w->len,
                             .content_type = "application/octet-stream",
                             .max = 64 * 1024,
                             .cancellable = 1};
            rc = s3_call(w->s, &c, err);
            call_done(&c);
        }
        if (rc == CAIRN_OK)
            w->committed = 1;
        return rc;
    }
    if (w->len > 0)
        rc = dispatch_part(w, err);
    wait_parts(w);
    if (rc == CAIRN_OK)
        rc = async_error(w, err);
    if (rc != CAIRN_OK) {
        abort_upload(w);
        return rc;
    }
    unsigned nparts = w->next_part - 1;
    size_t cap = 128 + (size_t)nparts * 340, len = 0;
    char *xml = cairn_xmalloc(cap);
    len += (size_t)sprintf(xml, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < nparts; i++) {
        char *et = s3_xml_escape(w->etags[i]);
        len +=
            (size_t)snprintf(xml + len, cap - len,
                             "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1, et);
        free(et);
    }
    len += (size_t)snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
    char q[1100];
    snprintf(q, sizeof(q), "uploadId=%s", w->upload_id);
    struct call c = {.method = "POST",
                     .key = w->key,
                     .query = q,
                     .body = xml,
                     .body_len = len,
                     .content_type = "application/xml",
                     .max = XML_MAX};
    rc = s3_call(w->s, &c, err);
    /* S3 may answer 200 and still report an error in the body. */
    if (rc == CAIRN_OK && c.body_out != NULL &&
        strstr(c.body_out, "<CompleteMultipartUploadResult") == NULL) {
        const char *b = c.body_out, *e = b + c.body_out_len;
        char *code = s3_xml_get(b, e, "Code"), *msg = s3_xml_get(b, e, "Message");
        if (code != NULL)
            rc = cairn_err_set(err, CAIRN_E_NETWORK, "s3 CompleteMultipartUpload of '%s': %s%s%s",
                               w->key, code, msg ? ": " : "", msg ? msg : "");
        free(code);
        free(msg);
    }
    call_done(&c);
    free(xml);
    if (rc != CAIRN_OK) {
        abort_upload(w);
        return rc;
    }
    free(w->upload_id);
    w->upload_id = NULL;
    w->committed = 1;
    return CAIRN_OK;
}

static void s3w_free(struct cairn_writer *base)
{
    struct s3_writer *w = (struct s3_writer *)base;
    wait_parts(w);
    if (!w->committed)
        abort_upload(w);
    if (w->etags != NULL)
        for (unsigned i = 0; i < MAX_PARTS; i++)
            free(w->etags[i]);
    free(w->etags);
    free(w->upload_id);
    free(w->buf);
    free(w->key);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static const struct cairn_writer_ops s3_writer_ops = {"s3", s3w_write, s3w_finish, s3w_free};

/* SYNC and REPLACE need nothing: a completed PUT is durable and replaces. ATOMIC needs
 * nothing for a multipart upload either: CompleteMultipartUpload publishes it whole. */
static int s3_create(void *state, const char *backup, const char *file, int64_t size_hint,
                     const struct cairn_storage_write_opts *opts, struct cairn_writer **out,
                     struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    struct s3_writer *w = cairn_xcalloc(1, sizeof(*w));
    cairn_writer_init(&w->base, &s3_writer_ops, NULL);
    w->s = s;
    w->key = cairn_xasprintf("%s%s/%s", s->prefix, backup, file);
    w->atomic = opts != NULL && (opts->flags & CAIRN_STORAGE_WRITE_ATOMIC);
    uint64_t base = s->part_floor;
    if (size_hint > 0) {
        uint64_t need = ((uint64_t)size_hint + MAX_PARTS - 1) / MAX_PARTS;
        need = (need + MIB - 1) / MIB * MIB;
        if (need > base)
            base = need > MAX_PART_SIZE ? MAX_PART_SIZE : need;
    }
    w->base_part = base;
    w->next_part = 1;
    w->part_size = part_size_for(w, 1);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    *out = &w->base;
    return CAIRN_OK;
}

/* ---- reader: HEAD, then ranged GETs ---- */

struct s3_reader {
    struct cairn_reader base;
    struct s3 *s;
    char *key;
    uint64_t size, off;
    uint8_t *buf;
    size_t blen, bpos, chunk;
    char etag[256];
};

static int s3r_read(struct cairn_reader *base, void *out, size_t cap, size_t *got,
                    struct cairn_err *err)
{
    struct s3_reader *r = (struct s3_reader *)base;
    *got = 0;
    if (r->bpos == r->blen) {
        if (r->off >= r->size)
            return CAIRN_OK;
        uint64_t want = r->size - r->off < r->chunk ? r->size - r->off : r->chunk;
        char range[96], ifm[300];
        snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)r->off,
                 (unsigned long long)(r->off + want - 1));
        struct call c = {.method = "GET",
                         .key = r->key,
                         .dst = r->buf,
                         .dst_cap = (size_t)want,
                         .cancellable = 1};
        c.hdr[0] = range;
        if (r->etag[0]) {
            snprintf(ifm, sizeof(ifm), "If-Match: %s", r->etag);
            c.hdr[1] = ifm;
        }
        int rc = s3_call(r->s, &c, err);
        if (rc == CAIRN_OK && c.body_out_len != want)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "s3 GET '%s': got %zu bytes at offset %llu, expected %llu "
                               "(object changed or truncated?)",
                               r->key, c.body_out_len, (unsigned long long)r->off,
                               (unsigned long long)want);
        if (rc == CAIRN_OK && c.status != 206 &&
            !(c.status == 200 && r->off == 0 && want == r->size))
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                               "s3 GET '%s': range request answered with HTTP %ld", r->key,
                               c.status);
        call_done(&c);
        if (rc != CAIRN_OK)
            return rc;
        r->blen = (size_t)want;
        r->bpos = 0;
        r->off += want;
    }
    size_t n = r->blen - r->bpos < cap ? r->blen - r->bpos : cap;
    memcpy(out, r->buf + r->bpos, n);
    r->bpos += n;
    *got = n;
    return CAIRN_OK;
}

static void s3r_free(struct cairn_reader *base)
{
    struct s3_reader *r = (struct s3_reader *)base;
    free(r->buf);
    free(r->key);
    free(r);
}

static const struct cairn_reader_ops s3_reader_ops = {"s3", s3r_read, s3r_free};

static int s3_read(void *state, const char *backup, const char *file, struct cairn_reader **out,
                   struct cairn_err *err)
{
    struct s3 *s = state;
    int rc = ensure_ready(s, err);
    if (rc != CAIRN_OK)
        return rc;
    char *key = cairn_xasprintf("%s%s/%s", s->prefix, backup, file);
    struct call c = {.method = "HEAD", .key = key, .cancellable = 1};
    rc = s3_call(s, &c, err);
    call_done(&c);
    if (rc == CAIRN_E_NOTFOUND)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "s3://%s/%s not found", s->bucket, key);
    if (rc == CAIRN_OK && c.clen < 0)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "s3 HEAD '%s': no Content-Length", key);
    if (rc != CAIRN_OK) {
        free(key);
        return rc;
    }
    struct s3_reader *r = cairn_xcalloc(1, sizeof(*r));
    cairn_reader_init(&r->base, &s3_reader_ops, NULL);
    r->s = s;
    r->key = key;
    r->size = (uint64_t)c.clen;
    r->chunk = (size_t)s->part_floor;
    r->buf = cairn_xmalloc(r->size < r->chunk ? (size_t)r->size + 1 : r->chunk);
    snprintf(r->etag, sizeof(r->etag), "%s", c.etag);
    *out = &r->base;
    return CAIRN_OK;
}

/* ---- lifecycle ---- */

static void s3_close(void *state)
{
    struct s3 *s = state;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    s->npool = 0;
    wipe_free(s->access);
    wipe_free(s->secret);
    wipe_free(s->token);
    free(s->sigv4);
    s->access = s->secret = s->token = s->sigv4 = NULL;
    s->ready = 0;
    pthread_mutex_unlock(&s->mu);
}

static void s3_free(void *state)
{
    struct s3 *s = state;
    if (s == NULL)
        return;
    s3_close(s);
    free(s->pool);
    free(s->url);
    free(s->bucket);
    free(s->prefix);
    free(s->endpoint);
    free(s->region);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void s3_set_cancel(void *state, const volatile int *cancel)
{
    ((struct s3 *)state)->cancel = cancel;
}

const struct cairn_storage_driver cairn_storage_s3_driver = {
    .name = "s3",
    .open = s3_open,
    .list = s3_list,
    .start = s3_start,
    .remove = s3_remove,
    .create = s3_create,
    .read = s3_read,
    .close = s3_close,
    .free = s3_free,
    .set_cancel = s3_set_cancel,
    .list_files = s3_list_files,
    .remove_file = s3_remove_file,
    .features = CAIRN_STORAGE_FEATURE_ATOMIC_WRITE,
};
