/* etcd: a snapshot over the v3 gateway with libcurl (POST /v3/maintenance/snapshot), the
 * response parsed as it arrives by stream.c; etcd auth through /v3/auth/authenticate. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"
#include "etcd.h"

/* An error answer's body is kept up to this size (the gateway's are a few hundred bytes). */
#define ETCD_ERRBODY_MAX (64u * 1024u)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int cancelled(const struct etcd_conn_opts *o)
{
    return o->cancel != NULL && __atomic_load_n(o->cancel, __ATOMIC_RELAXED) != 0;
}

/* The base URL without a trailing '/', checked: http(s)://host[:port], no user-info (a
 * password in a URL would end up in messages), no path. */
static int base_url(const char *url, char **out, struct cairn_err *err)
{
    if (url == NULL || *url == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID, "etcd: no URL given");
    const char *rest = NULL;
    if (strncmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        rest = url + 8;
    if (rest == NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "etcd: URL must start with http:// or https:// (host:port of a "
                             "client URL)");
    size_t auth = strcspn(rest, "/?#");
    if (memchr(rest, '@', auth) != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "etcd: the URL must not carry credentials; give user and password "
                             "as options");
    if (auth == 0 || (rest[auth] != '\0' && strcmp(rest + auth, "/") != 0)) {
        char safe[256];
        str_escape(safe, sizeof(safe), url, strlen(url));
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "etcd: '%s' is not a client URL (http(s)://host:port, no path)", safe);
    }
    *out = xasprintf("%.*s", (int)(rest - url + auth), url);
    return CAIRN_OK;
}

/* One request's state, shared with the callbacks. */
struct xfer {
    const struct etcd_conn_opts *o;
    CURL *h;
    const char *what;
    long status;                /* HTTP status, read at the first body byte */
    struct etcd_stream *stream; /* a 200 snapshot answer goes here; NULL: collect into body */
    struct buf body;            /* an error answer or the authenticate answer (bounded) */
    int rc;                     /* a failure inside a callback */
    struct cairn_err err;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    if (cancelled(x->o)) {
        x->rc = cairn_err_set(&x->err, CAIRN_E_CANCELLED, "%s: cancelled", x->what);
        return 0;
    }
    if (x->status == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        const char *ct = NULL;
        curl_easy_getinfo(x->h, CURLINFO_CONTENT_TYPE, &ct);
        if (x->status == 200 && (ct == NULL || strncmp(ct, "application/json", 16) != 0)) {
            char safe[128];
            str_escape(safe, sizeof(safe), ct ? ct : "none", ct ? strlen(ct) : 4);
            x->rc = cairn_err_set(&x->err, CAIRN_E_PROTOCOL,
                                  "%s: answer of type %s, not JSON: not an etcd v3 gRPC "
                                  "gateway (etcd 3.4 or later)",
                                  x->what, safe);
            return 0;
        }
    }
    if (x->stream == NULL || x->status != 200) {
        if (x->body.len + n > ETCD_ERRBODY_MAX) /* keep the start; it says what went wrong */
            n = x->body.len < ETCD_ERRBODY_MAX ? ETCD_ERRBODY_MAX - x->body.len : 0;
        buf_add(&x->body, p, n);
        return size * nmemb;
    }
    x->rc = etcd_stream_feed(x->stream, p, n, &x->err);
    if (x->rc != CAIRN_OK)
        return 0;
    if (x->o->progress != NULL)
        x->o->progress(x->o->progress_arg, etcd_stream_bytes(x->stream),
                       etcd_stream_expected(x->stream));
    return n;
}

/* Called at least once a second, so a cancel stops a transfer that waits for bytes too. */
static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return cancelled(arg);
}

static void setup(CURL *h, struct xfer *x, const char *url, struct curl_slist *hdrs,
                  const char *body, char *curlerr)
{
    const struct etcd_conn_opts *o = x->o;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    /* 256 KiB reads (default 16 KiB): several 44 KB messages whole per call, so fewer are
     * assembled by copying across calls. */
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)o);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    /* The gateway's documented transport; over TLS, HTTP/2 would be routed by content type. */
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 30000L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L); /* no byte for stall_timeout_s: give up */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, o->stall_timeout_s > 0 ? o->stall_timeout_s : 120L);
    if (o->timeout_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    if (o->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
    if (o->cert_file != NULL)
        curl_easy_setopt(h, CURLOPT_SSLCERT, o->cert_file);
    if (o->key_file != NULL)
        curl_easy_setopt(h, CURLOPT_SSLKEY, o->key_file);
}

/* A transfer libcurl did not complete, as a cairn error. */
static int curl_failed(const struct xfer *x, CURLcode cc, const char *curlerr,
                       struct cairn_err *err)
{
    if (x->rc != CAIRN_OK) { /* a callback stopped it: its error is the real one */
        if (err != NULL)
            cairn_err_copy(err, &x->err);
        return x->rc;
    }
    const char *why = curlerr[0] ? curlerr : curl_easy_strerror(cc);
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", x->what);
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: %s", x->what, why);
    if (x->status == 200 && x->stream != NULL) /* the answer had begun: it was cut */
        return cairn_err_set(err, CAIRN_E_NETWORK,
                             "%s: stream truncated after %llu of %llu snapshot bytes: %s", x->what,
                             (unsigned long long)etcd_stream_bytes(x->stream),
                             (unsigned long long)etcd_stream_expected(x->stream), why);
    if (cc == CURLE_RECV_ERROR && x->status == 0 && strstr(why, "SSL") != NULL)
        /* TLS 1.3 servers reject a client certificate after the handshake, at the first read */
        return cairn_err_set(
            err, CAIRN_E_NETWORK, "%s: TLS failure: %s%s", x->what, why,
            x->o->cert_file == NULL ? " (the server may require a client certificate)" : "");
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: cannot connect: %s", x->what, why);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: TLS failure: %s", x->what, why);
    default: return cairn_err_set(err, CAIRN_E_NETWORK, "%s: %s", x->what, why);
    }
}

/* A complete answer that is not 200: the gateway's JSON error when there is one. */
static int http_failed(const struct xfer *x, struct cairn_err *err)
{
    json_t *root = json_loadb((const char *)x->body.p, x->body.len, 0, NULL);
    if (json_is_object(root) && json_object_get(root, "error") != NULL) {
        int rc = etcd_gateway_error(root, x->status, x->what, err);
        json_decref(root);
        return rc;
    }
    json_decref(root);
    char safe[256];
    size_t line = x->body.len ? strcspn((const char *)x->body.p, "\r\n") : 0;
    str_escape(safe, sizeof(safe), x->body.len ? (const char *)x->body.p : "", line);
    int code = CAIRN_E_PROTOCOL;
    const char *hint = ": not an etcd v3 gRPC gateway (etcd 3.4 or later)";
    if (x->status == 401 || x->status == 403) {
        code = CAIRN_E_DENIED;
        hint = "";
    } else if (x->status == 503) {
        code = CAIRN_E_NETWORK;
        hint = "";
    } else if (x->status == 421) {
        hint = ": etcd refused the Host header (its --host-whitelist)";
    }
    return cairn_err_set(err, code, "%s: HTTP %ld%s%s%s%s", x->what, x->status, safe[0] ? " (" : "",
                         safe, safe[0] ? ")" : "", hint);
}

/* One POST of body to base+path; a 200 snapshot answer goes to stream (when given), any other
 * answer into x->body. */
static int post(struct xfer *x, const char *base, const char *path, const char *body,
                const char *token, struct cairn_err *err)
{
    char curlerr[CURL_ERROR_SIZE] = "";
    char *url = xasprintf("%s%s", base, path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (token != NULL) {
        char *a = xasprintf("Authorization: %s", token); /* raw token, no "Bearer" */
        hdrs = curl_slist_append(hdrs, a);
        free(a);
    }
    x->h = curl_easy_init();
    if (x->h == NULL || hdrs == NULL)
        abort();
    setup(x->h, x, url, hdrs, body, curlerr);
    CURLcode cc = curl_easy_perform(x->h);
    if (x->status == 0)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    int rc = CAIRN_OK;
    if (cc != CURLE_OK)
        rc = curl_failed(x, cc, curlerr, err);
    else if (x->status != 200)
        rc = http_failed(x, err);
    curl_easy_cleanup(x->h);
    x->h = NULL;
    curl_slist_free_all(hdrs);
    free(url);
    return rc;
}

/* etcd auth: a token for user/password, or NULL when the server has auth disabled (as
 * etcdctl, which then goes on without one). */
static int authenticate(const struct etcd_conn_opts *o, const char *base, const char *what,
                        char **token, struct cairn_err *err)
{
    *token = NULL;
    struct buf req = {0};
    buf_adds(&req, "{\"name\":");
    buf_json_string(&req, o->user, 0);
    buf_adds(&req, ",\"password\":");
    buf_json_string(&req, o->password ? o->password : "", 0);
    buf_adds(&req, "}");
    char *awhat = xasprintf("%s: authenticating as user '%s'", what, o->user);
    struct xfer x = {.o = o, .what = awhat};
    struct cairn_err e = {0};
    int rc = post(&x, base, "/v3/auth/authenticate", (const char *)req.p, NULL, &e);
    explicit_bzero(req.p, req.len);
    buf_free(&req);
    if (rc != CAIRN_OK && x.status != 0 && strstr(e.msg, "authentication is not enabled")) {
        rc = CAIRN_OK; /* auth is off: no token needed */
    } else if (rc != CAIRN_OK) {
        if (err != NULL)
            cairn_err_copy(err, &e);
    } else {
        json_t *root = json_loadb((const char *)x.body.p, x.body.len, 0, NULL);
        const char *t = json_string_value(json_object_get(root, "token"));
        if (t != NULL && *t != '\0')
            *token = xstrdup(t);
        else
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: the answer holds no token", awhat);
        json_decref(root);
    }
    buf_free(&x.body);
    free(awhat);
    return rc;
}

int etcd_snapshot(const struct etcd_conn_opts *o, struct cairn_writer *out, uint64_t *bytes,
                  struct cairn_err *err)
{
    if (bytes != NULL)
        *bytes = 0;
    char *base = NULL;
    int rc = base_url(o->url, &base, err);
    if (rc != CAIRN_OK)
        return rc;
    pthread_once(&curl_once, curl_init_once);
    char *what = xasprintf("etcd snapshot from %s", base);
    char *token = NULL;
    if (cancelled(o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
    else if (o->user != NULL)
        rc = authenticate(o, base, what, &token, err);
    if (rc == CAIRN_OK) {
        struct xfer x = {.o = o, .what = what, .stream = etcd_stream_new(out, what)};
        rc = post(&x, base, "/v3/maintenance/snapshot", "{}", token, err);
        if (rc == CAIRN_OK)
            rc = etcd_stream_finish(x.stream, err);
        if (rc == CAIRN_OK && bytes != NULL)
            *bytes = etcd_stream_bytes(x.stream);
        etcd_stream_free(x.stream);
        buf_free(&x.body);
    }
    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
    free(what);
    free(base);
    return rc;
}
