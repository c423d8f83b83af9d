/* S3 driver: one request with retries (libcurl, SigV4), the handle pool and the session
 * check (credentials + HeadBucket). */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "common/util.h"
#include "s3.h"
#include "xml.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int s3_cancelled(const struct s3 *s)
{
    return cancel_requested(s->cancel);
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
        s->pool = xrealloc(s->pool, s->cappool * sizeof(*s->pool));
    }
    s->pool[s->npool++] = c;
    pthread_mutex_unlock(&s->mu);
}

#define S3_ERR_BODY_MAX 8192 /* an error answer's XML kept beside a ranged GET's buffer */

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = sz * n;
    /* An error answer's body is its XML, however small the ranged GET's buffer (a chunk of a
     * pack can be shorter than a 503's XML): kept apart, so the status decides the retry. */
    int err_body = c->status != 0 && (c->status < 200 || c->status >= 300);
    if (c->dst != NULL && !err_body) {
        if (len > c->dst_cap - c->body_out_len) {
            c->overflow = 1;
            return 0;
        }
        memcpy(c->dst + c->body_out_len, p, len);
        c->body_out_len += len;
        return len;
    }
    size_t max = c->dst != NULL ? S3_ERR_BODY_MAX : c->max;
    if (max == 0 || c->body_out_len + len > max) {
        /* Keep only what fits; error bodies are small. */
        if (c->body_out_len + len > max)
            c->overflow = max > 0 && c->dst == NULL;
        return len;
    }
    c->body_out = xrealloc(c->body_out, c->body_out_len + len + 1);
    memcpy(c->body_out + c->body_out_len, p, len);
    c->body_out_len += len;
    c->body_out[c->body_out_len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = sz * n;
    if (len > 9 && strncmp(p, "HTTP/", 5) == 0) { /* a status line (again after a 100) */
        const char *sp = memchr(p, ' ', len);
        c->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
    } else if (len > 5 && strncasecmp(p, "ETag:", 5) == 0) {
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
    char *ekey = s3_uri_encode(key ? key : "", 1);
    char *base;
    if (s->endpoint == NULL) {
        base = s->path_style ? xasprintf("https://s3.%s.amazonaws.com/%s", s->region, s->bucket)
                             : xasprintf("https://%s.s3.%s.amazonaws.com", s->bucket, s->region);
    } else if (s->path_style) {
        base = xasprintf("%s/%s", s->endpoint, s->bucket);
    } else {
        const char *host = strstr(s->endpoint, "://") + 3;
        base = xasprintf("%.*s%s.%s", (int)(host - s->endpoint), s->endpoint, s->bucket, host);
    }
    char *url = xasprintf("%s/%s%s%s", base, ekey, query ? "?" : "", query ? query : "");
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

void s3_call_done(struct call *c)
{
    free(c->body_out);
    c->body_out = NULL;
}

/* The request's headers: every one given here is signed by libcurl, so only ever add
 * headers that are really sent (a removal like "Expect:" would be signed but not sent). */
static struct curl_slist *request_headers(const struct s3_cred *cr, const struct call *c,
                                          const char *sumhex)
{
    char hdrbuf[128];
    struct curl_slist *hl = NULL;
    snprintf(hdrbuf, sizeof(hdrbuf), "x-amz-content-sha256: %s", sumhex);
    hl = curl_slist_append(hl, hdrbuf);
    if (cr->token != NULL) {
        char *t = xasprintf("x-amz-security-token: %s", cr->token);
        hl = curl_slist_append(hl, t);
        wipe_free(t);
    }
    if (c->content_type != NULL) {
        char *t = xasprintf("Content-Type: %s", c->content_type);
        hl = curl_slist_append(hl, t);
        free(t);
    }
    for (int i = 0; i < 4 && c->hdr[i]; i++)
        hl = curl_slist_append(hl, c->hdr[i]);
    return hl;
}

static void setup_handle(struct s3 *s, const struct s3_cred *cr, CURL *h, struct call *c,
                         const char *url, struct curl_slist *hl)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, cr->access);
    curl_easy_setopt(h, CURLOPT_PASSWORD, cr->secret);
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
}

/* A transfer libcurl did not complete: the error, and whether another attempt may help. The
 * handle goes back to the pool or, when mid-response, is dropped. */
static int transfer_failed(struct s3 *s, CURL *h, const struct call *c, CURLcode cc,
                           const char *curlerr, const char *what, int *retry, struct cairn_err *err)
{
    if (cc == CURLE_WRITE_ERROR && c->overflow) {
        curl_easy_cleanup(h); /* the connection is mid-response */
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: response larger than expected", what);
    }
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        curl_easy_cleanup(h); /* mid-transfer: not reusable */
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
    }
    /* A timeout once connected is the stall deadline: name the option. */
    curl_off_t connected = 0;
    curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected);
    int stalled = cc == CURLE_OPERATION_TIMEDOUT && connected > 0;
    int rc = cairn_err_set(err, CAIRN_E_NETWORK, "%s: %s%s", what,
                           curlerr[0] ? curlerr : curl_easy_strerror(cc),
                           stalled ? " (the S3 URL option stall_timeout sets this limit)" : "");
    *retry = retryable_curl(cc);
    handle_put(s, h);
    return rc;
}

/* A complete HTTP answer: CAIRN_OK for a whole 2xx, else the error and whether to retry. */
static int answer_status(const struct call *c, const char *what, int *retry, struct cairn_err *err)
{
    /* A connection closed inside the response headers ends a transfer "successfully" for
     * libcurl (no Content-Length seen: the body runs to the close), so a cut 2xx answer to a
     * ranged GET or an object HEAD is caught here and retried. */
    int ok = c->status >= 200 && c->status < 300;
    int cut = ok && ((c->dst != NULL && c->body_out_len != c->dst_cap) ||
                     (strcmp(c->method, "HEAD") == 0 && c->key != NULL && c->clen < 0));
    if (ok && !cut)
        return CAIRN_OK;
    if (cut) {
        *retry = 1;
        return cairn_err_set(err, CAIRN_E_NETWORK,
                             "%s: HTTP %ld answer cut short (%zu body bytes%s)", what, c->status,
                             c->body_out_len, c->clen < 0 ? ", no Content-Length" : "");
    }
    const char *b = c->body_out;
    char *code = b ? s3_xml_get(b, b + c->body_out_len, "Code") : NULL;
    char *msg = b ? s3_xml_get(b, b + c->body_out_len, "Message") : NULL;
    int rc = cairn_err_set(err, status_code(c->status), "%s: HTTP %ld%s%s%s%s", what, c->status,
                           code ? " " : "", code ? code : "", msg ? ": " : "", msg ? msg : "");
    *retry = c->status >= 500 || c->status == 429 || retryable_s3_code(code);
    free(code);
    free(msg);
    return rc;
}

/* One attempt at the request; *retry says whether a failure is worth another. */
static int attempt_once(struct s3 *s, struct call *c, const char *url, const char *what,
                        const char *sumhex, int *retry, struct cairn_err *err)
{
    *retry = 0;
    call_reset(c);
    if (c->cancellable && s3_cancelled(s))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
    struct s3_cred cr; /* this request's copy: a refresh may replace s->cred meanwhile */
    int rc = s3_cred_get(s, &cr, err);
    if (rc != CAIRN_OK)
        return rc;
    CURL *h = handle_get(s);
    struct curl_slist *hl = request_headers(&cr, c, sumhex);
    setup_handle(s, &cr, h, c, url, hl);
    char curlerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hl);
    s3_cred_clear(&cr);
    if (cc != CURLE_OK)
        return transfer_failed(s, h, c, cc, curlerr, what, retry, err);
    handle_put(s, h);
    return answer_status(c, what, retry, err);
}

/* Exponential backoff with jitter: base*2^(n-1) capped at 20 s, then 50-100 %. */
static void backoff(struct s3 *s, const struct call *c, unsigned attempt,
                    const struct cairn_err *err)
{
    uint64_t delay = (uint64_t)s->retry_base_ms << (attempt - 1 < 16 ? attempt - 1 : 16);
    if (delay > 20000)
        delay = 20000;
    pthread_mutex_lock(&s->mu);
    unsigned r = (unsigned)rand_r(&s->seed);
    pthread_mutex_unlock(&s->mu);
    delay = delay / 2 + (delay > 1 ? r % (delay / 2 + 1) : 0);
    cairn_log(CAIRN_LOG_WARN, "s3", "%s (attempt %u of %u), retrying in %llu ms", err->msg, attempt,
              s->attempts, (unsigned long long)delay);
    if (c->cancellable)
        sleep_ms_cancel(s, (unsigned)delay);
    else
        sleep_ms((unsigned)delay);
}

int s3_call(struct s3 *s, struct call *c, struct cairn_err *err)
{
    struct cairn_err local; /* the retry log needs the message even when the caller does not */
    if (err == NULL)
        err = &local;
    char *url = object_url(s, c->key, c->query);
    char what[512];
    snprintf(what, sizeof(what), "s3 %s s3://%s/%s%s%s", c->method, s->bucket, c->key ? c->key : "",
             c->query ? "?" : "", c->query ? c->query : "");
    uint8_t sum[32];
    char sumhex[65];
    cairn_sha256_oneshot(c->body ? c->body : "", c->body_len, sum);
    cairn_hex_encode(sum, 32, sumhex);
    int rc = CAIRN_OK, retry = 0;
    for (unsigned attempt = 1;; attempt++) {
        rc = attempt_once(s, c, url, what, sumhex, &retry, err);
        if (rc == CAIRN_OK || !retry || attempt >= s->attempts)
            break;
        backoff(s, c, attempt, err);
    }
    free(url);
    if (rc == CAIRN_OK && c->overflow && c->dst == NULL)
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: response larger than %zu bytes", what,
                           c->max);
    return rc;
}

int s3_ready(struct s3 *s, struct cairn_err *err)
{
    pthread_once(&curl_once, curl_init_once);
    pthread_mutex_lock(&s->mu);
    int ready = s->ready;
    pthread_mutex_unlock(&s->mu);
    if (ready)
        return CAIRN_OK;
    int rc = s3_load_credentials(s, err);
    if (rc != CAIRN_OK)
        return rc;
    /* Cancellable: a session not yet ready has started nothing to clean up. */
    struct call c = {.method = "HEAD", .cancellable = 1};
    c.key = NULL;
    rc = s3_call(s, &c, err);
    s3_call_done(&c);
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
        cairn_err_wrap(err, rc, "check S3 bucket '%s'", s->bucket);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    s->ready = 1;
    pthread_mutex_unlock(&s->mu);
    return CAIRN_OK;
}
