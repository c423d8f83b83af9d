/* etcd: a snapshot over the v3 gateway with libcurl (POST /v3/maintenance/snapshot, on the
 * setup every HTTP source shares: source/http), the response parsed as it arrives by
 * stream.c; etcd auth through /v3/auth/authenticate. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/pb.h"
#include "common/util.h"
#include "etcd.h"
#include "source/http/http.h"

/* An error answer's body is kept up to this size (the gateway's are a few hundred bytes). */
#define ETCD_ERRBODY_MAX (64u * 1024u)

static int cancelled(const struct etcd_conn_opts *o)
{
    return cancel_requested(o->cancel);
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
    struct http_opts ho; /* o's transport settings */
    CURL *h;
    const char *what;
    long status;                /* HTTP status, read at the first body byte */
    struct etcd_stream *stream; /* a 200 snapshot answer goes here; NULL: collect into body */
    struct buf body;            /* an error answer or the authenticate answer (bounded) */
    struct grpc_rx *grpc;       /* the gRPC transport's state; NULL: the gateway */
    int rc;                     /* a failure inside a callback */
    struct cairn_err err;
};

static int grpc_feed(struct xfer *x, const uint8_t *p, size_t n);

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    if (cancelled(x->o)) {
        x->rc = cairn_err_set(&x->err, CAIRN_E_CANCELLED, "%s: cancelled", x->what);
        return 0;
    }
    if (x->grpc != NULL)
        return grpc_feed(x, (const uint8_t *)p, n) == CAIRN_OK ? n : 0;
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

/* The etcd request on the shared setup: a JSON POST whose answer goes to on_body. */
static void setup(CURL *h, struct xfer *x, struct curl_slist *hdrs, const char *body)
{
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    /* 256 KiB reads (default 16 KiB): several 44 KB messages whole per call, so fewer are
     * assembled by copying across calls. */
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
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
    if (cc != CURLE_ABORTED_BY_CALLBACK && cc != CURLE_OPERATION_TIMEDOUT && x->status == 200 &&
        x->stream != NULL) /* the answer had begun: it was cut */
        return cairn_err_set(err, CAIRN_E_NETWORK,
                             "%s: stream truncated after %llu of %llu snapshot bytes: %s", x->what,
                             (unsigned long long)etcd_stream_bytes(x->stream),
                             (unsigned long long)etcd_stream_expected(x->stream), why);
    return http_curl_error(cc, curlerr, x->status, &x->ho, x->what, err);
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

/* ---- The gRPC transport ----
 * etcd's own protocol, what etcdctl speaks: POST /etcdserverpb.Maintenance/Snapshot over
 * HTTP/2 with an empty SnapshotRequest; the answer is length-prefixed SnapshotResponse
 * messages (protobuf: 2 remaining_bytes, 3 blob) and the status in the grpc-status trailer.
 * Tried first: the gateway's JSON costs etcd itself 1.6-2.4x etcdctl's time
 * (docs/PERFORMANCE.md). When the peer does not answer in gRPC at all (an HTTP/1.1-only
 * proxy, a server that is not etcd) before any message, the gateway is asked instead. */
#define GRPC_MSG_MAX (4u << 20)

struct grpc_rx {
    struct etcd_stream *st;
    uint8_t hdr[5]; /* the message prefix: compressed flag, big-endian length */
    size_t nhdr;
    struct buf msg; /* a message split across reads */
    uint32_t want;
    long status; /* grpc-status; -1: not seen */
    char message[256];
    int answered; /* an HTTP/2 200 of type application/grpc */
    int refused;  /* not a gRPC answer: the gateway may be asked */
};

/* SnapshotResponse: remaining_bytes (2, varint) and blob (3, bytes); the rest skipped. */
static int pb_snapshot_response(const uint8_t *p, size_t n, uint64_t *remaining,
                                const uint8_t **blob, size_t *blen)
{
    struct pb r = {p, p + n};
    struct pb_field f;
    *remaining = 0;
    *blob = p;
    *blen = 0;
    while (r.p < r.end) {
        if (pb_next(&r, &f) != 0 || (f.num == 2 && f.wt != 0) || (f.num == 3 && f.wt != 2))
            return -1;
        if (f.num == 2)
            *remaining = f.v;
        else if (f.num == 3)
            *blob = f.sub.p, *blen = (size_t)(f.sub.end - f.sub.p);
    }
    return 0;
}

static int grpc_message(struct xfer *x, const uint8_t *p, size_t n)
{
    uint64_t remaining;
    const uint8_t *blob;
    size_t blen;
    if (pb_snapshot_response(p, n, &remaining, &blob, &blen) != 0)
        return x->rc = cairn_err_set(&x->err, CAIRN_E_CORRUPT,
                                     "%s: message %llu is not a SnapshotResponse (damaged in "
                                     "transit)",
                                     x->what,
                                     (unsigned long long)etcd_stream_messages(x->grpc->st) + 1);
    x->rc = etcd_stream_message(x->grpc->st, remaining, blob, blen, &x->err);
    return x->rc;
}

/* The first body bytes decide whether this is a gRPC answer at all. */
static int grpc_check_answer(struct xfer *x)
{
    struct grpc_rx *g = x->grpc;
    const char *ct = NULL;
    long version = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    curl_easy_getinfo(x->h, CURLINFO_CONTENT_TYPE, &ct);
    curl_easy_getinfo(x->h, CURLINFO_HTTP_VERSION, &version);
    if (x->status != 200 || version != CURL_HTTP_VERSION_2_0 || ct == NULL ||
        strncmp(ct, "application/grpc", 16) != 0) {
        g->refused = 1;
        return x->rc = cairn_err_set(&x->err, CAIRN_E_PROTOCOL, "%s: not a gRPC answer", x->what);
    }
    g->answered = 1;
    return CAIRN_OK;
}

/* Length-prefixed messages, split across reads in any way. */
static int grpc_feed(struct xfer *x, const uint8_t *p, size_t n)
{
    struct grpc_rx *g = x->grpc;
    if (!g->answered && grpc_check_answer(x) != CAIRN_OK)
        return x->rc;
    while (n > 0) {
        if (g->nhdr < 5) {
            size_t k = 5 - g->nhdr < n ? 5 - g->nhdr : n;
            memcpy(g->hdr + g->nhdr, p, k);
            g->nhdr += k, p += k, n -= k;
            if (g->nhdr < 5)
                break;
            g->want = (uint32_t)g->hdr[1] << 24 | (uint32_t)g->hdr[2] << 16 |
                      (uint32_t)g->hdr[3] << 8 | g->hdr[4];
            if (g->hdr[0] != 0 || g->want > GRPC_MSG_MAX)
                return x->rc = cairn_err_set(&x->err, CAIRN_E_PROTOCOL,
                                             "%s: gRPC message %s (flag %u, %u bytes)", x->what,
                                             g->hdr[0] ? "compressed, not asked for" : "too large",
                                             g->hdr[0], g->want);
            g->msg.len = 0;
        }
        size_t k = g->want - g->msg.len < n ? g->want - g->msg.len : n;
        if (g->msg.len == 0 && k == g->want) { /* whole in this read: no copy */
            if (grpc_message(x, p, k) != CAIRN_OK)
                return x->rc;
        } else {
            buf_add(&g->msg, p, k);
            if (g->msg.len == g->want && grpc_message(x, g->msg.p, g->msg.len) != CAIRN_OK)
                return x->rc;
        }
        p += k, n -= k;
        if (g->msg.len == g->want || k == g->want) {
            g->nhdr = 0;
            g->msg.len = 0;
        }
    }
    if (x->o->progress != NULL)
        x->o->progress(x->o->progress_arg, etcd_stream_bytes(g->st), etcd_stream_expected(g->st));
    return CAIRN_OK;
}

/* One POST of body to base+path; a 200 snapshot answer goes to stream (when given), any other
 * answer into x->body. */
/* x's handle on the shared setup (source/http) for url on the server at base. */
static void xfer_handle(struct xfer *x, const char *base, const char *url, char *curlerr)
{
    x->ho = (struct http_opts){.tls = strncmp(base, "https://", 8) == 0,
                               .ca_file = x->o->ca_file,
                               .cert_file = x->o->cert_file,
                               .key_file = x->o->key_file,
                               .connect_timeout_ms = x->o->connect_timeout_ms,
                               .stall_timeout_s = x->o->stall_timeout_s,
                               .timeout_ms = x->o->timeout_ms,
                               .cancel = x->o->cancel};
    x->h = http_handle(url, &x->ho, curlerr);
}

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
    if (hdrs == NULL)
        abort();
    xfer_handle(x, base, url, curlerr);
    setup(x->h, x, hdrs, body);
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

/* Headers and trailers: grpc-status and grpc-message (HTTP/2 names are lower case). */
static size_t grpc_on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct grpc_rx *g = arg;
    size_t n = size * nmemb;
    size_t line = n;
    while (line > 0 && (p[line - 1] == '\n' || p[line - 1] == '\r'))
        line--;
    if (line > 12 && strncasecmp(p, "grpc-status:", 12) == 0) {
        char num[24];
        size_t k = line - 12 < sizeof(num) - 1 ? line - 12 : sizeof(num) - 1;
        memcpy(num, p + 12, k);
        num[k] = '\0';
        g->status = strtol(num, NULL, 10);
    } else if (line > 13 && strncasecmp(p, "grpc-message:", 13) == 0) {
        const char *m = p + 13;
        size_t k = line - 13;
        while (k > 0 && *m == ' ')
            m++, k--;
        str_escape(g->message, sizeof(g->message), m, k);
    }
    return n;
}

/* The snapshot over gRPC into st. *fallback is set (and nothing is reported) when the peer
 * did not answer in gRPC before any message: the caller then asks the gateway. */
static int grpc_snapshot(const struct etcd_conn_opts *o, const char *base, const char *what,
                         const char *token, struct etcd_stream *st, int *fallback,
                         struct cairn_err *err)
{
    static const char req[5] = {0}; /* an empty SnapshotRequest, uncompressed */
    struct grpc_rx g = {.st = st, .status = -1};
    struct xfer x = {.o = o, .what = what, .grpc = &g};
    char curlerr[CURL_ERROR_SIZE] = "";
    char *url = xasprintf("%s/etcdserverpb.Maintenance/Snapshot", base);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/grpc");
    hdrs = curl_slist_append(hdrs, "TE: trailers");
    if (token != NULL) {
        char *t = xasprintf("token: %s", token);
        hdrs = curl_slist_append(hdrs, t);
        explicit_bzero(t, strlen(t));
        free(t);
    }
    if (hdrs == NULL)
        abort();
    xfer_handle(&x, base, url, curlerr);
    setup(x.h, &x, hdrs, req);
    curl_easy_setopt(x.h, CURLOPT_POSTFIELDSIZE, 5L);
    curl_easy_setopt(x.h, CURLOPT_HTTP_VERSION,
                     (long)(strncmp(base, "https:", 6) == 0 ? CURL_HTTP_VERSION_2TLS
                                                            : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE));
    curl_easy_setopt(x.h, CURLOPT_HEADERFUNCTION, grpc_on_header);
    curl_easy_setopt(x.h, CURLOPT_HEADERDATA, &g);
    CURLcode cc = curl_easy_perform(x.h);
    uint64_t got = etcd_stream_messages(st);
    int rc = CAIRN_OK;
    *fallback = 0;
    if (got == 0 && !g.answered && x.rc != CAIRN_E_CANCELLED && g.status < 0 &&
        (g.refused ||
         (cc != CURLE_OK && cc != CURLE_COULDNT_CONNECT && cc != CURLE_COULDNT_RESOLVE_HOST &&
          cc != CURLE_OPERATION_TIMEDOUT && cc != CURLE_ABORTED_BY_CALLBACK &&
          cc != CURLE_SSL_CONNECT_ERROR && cc != CURLE_PEER_FAILED_VERIFICATION &&
          cc != CURLE_SSL_CERTPROBLEM && cc != CURLE_SSL_CACERT_BADFILE))) {
        *fallback = 1;
    } else if (cc != CURLE_OK) {
        if (x.rc == CAIRN_OK && g.answered)
            x.status = 200, x.stream = st; /* cut inside the answer: say "truncated" */
        rc = curl_failed(&x, cc, curlerr, err);
    } else if (g.status > 0) {
        rc = cairn_err_set(err, etcd_grpc_code_status(g.status, g.message),
                           "%s: etcd answered an error (grpc code %ld): %s", what, g.status,
                           g.message[0] ? g.message : "(no message)");
    } else if (g.status < 0 || g.nhdr != 0) {
        rc = cairn_err_set(err, CAIRN_E_NETWORK,
                           "%s: stream truncated after %llu of %llu snapshot bytes (%s)", what,
                           (unsigned long long)etcd_stream_bytes(st),
                           (unsigned long long)etcd_stream_expected(st),
                           g.nhdr ? "inside a message" : "no grpc-status");
    }
    curl_easy_cleanup(x.h);
    curl_slist_free_all(hdrs);
    buf_free(&g.msg);
    buf_free(&x.body);
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
    char *what = xasprintf("etcd snapshot from %s", base);
    char *token = NULL;
    if (cancelled(o))
        rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
    else if (o->user != NULL)
        rc = authenticate(o, base, what, &token, err);
    int fallback = 1;
    if (rc == CAIRN_OK && getenv("CAIRN_ETCD_GATEWAY") == NULL) {
        struct etcd_stream *st = etcd_stream_new(out, what);
        rc = grpc_snapshot(o, base, what, token, st, &fallback, err);
        if (rc == CAIRN_OK && !fallback)
            rc = etcd_stream_finish(st, err);
        if (rc == CAIRN_OK && !fallback && bytes != NULL)
            *bytes = etcd_stream_bytes(st);
        etcd_stream_free(st);
    }
    if (rc == CAIRN_OK && fallback) {
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
