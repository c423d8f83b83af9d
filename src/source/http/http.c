/* The libcurl setup every HTTP source shares (see http.h). */
#include "source/http/http.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Called at least once a second, so a cancel stops a transfer that waits for bytes too. */
static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return cancel_requested(((const struct http_opts *)arg)->cancel);
}

CURL *http_handle(const char *url, const struct http_opts *o, char *curlerr)
{
    pthread_once(&curl_once, curl_init_once);
    CURL *h = curl_easy_init();
    if (h == NULL)
        abort();
    curlerr[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)o);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    /* The documented transport of every API here; over TLS, HTTP/2 could be negotiated and
     * some (the etcd gateway) route it by content type. */
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
    return h;
}

int http_curl_error(CURLcode cc, const char *curlerr, long status, const struct http_opts *o,
                    const char *what, struct cairn_err *err)
{
    const char *why = curlerr[0] ? curlerr : curl_easy_strerror(cc);
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", what);
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: %s", what, why);
    if (status == 0 && cc != CURLE_COULDNT_CONNECT && cc != CURLE_COULDNT_RESOLVE_HOST &&
        (o->tls || (cc == CURLE_RECV_ERROR && strstr(why, "SSL") != NULL)))
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: TLS failure: %s%s", what, why,
                             o->cert_file == NULL ? " (the server may require a client certificate)"
                                                  : "");
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: cannot connect: %s", what, why);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
        return cairn_err_set(err, CAIRN_E_NETWORK, "%s: TLS failure: %s", what, why);
    default: return cairn_err_set(err, CAIRN_E_NETWORK, "%s: %s", what, why);
    }
}

void http_error_text(const void *body, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    if (len == 0)
        return;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (json_is_object(root)) {
        char joined[512];
        size_t off = 0;
        joined[0] = '\0';
        json_t *errs = json_object_get(root, "errors"), *v;
        size_t i;
        json_array_foreach(errs, i, v)
        {
            if (json_is_string(v))
                str_join(joined, sizeof(joined), &off, "; ", json_string_value(v));
        }
        const char *one = json_string_value(json_object_get(root, "error"));
        if (one == NULL)
            one = json_string_value(json_object_get(root, "message"));
        if (off == 0 && one != NULL)
            str_join(joined, sizeof(joined), &off, "", one);
        if (off > 0) {
            str_escape(out, cap, joined, strlen(joined));
            json_decref(root);
            return;
        }
    }
    json_decref(root);
    size_t line = 0;
    const char *p = body;
    while (line < len && p[line] != '\r' && p[line] != '\n')
        line++;
    str_escape(out, cap, p, line);
}

int http_status_error(long status, const void *body, size_t len, const char *what,
                      struct cairn_err *err)
{
    char msg[240];
    http_error_text(body, len, msg, sizeof(msg));
    int code = CAIRN_E_PROTOCOL;
    const char *kind = "unexpected answer";
    if (status == 401 || status == 403) {
        code = CAIRN_E_DENIED;
        kind = "token rejected (missing, unknown or without the needed permission)";
    } else if (status == 429) {
        code = CAIRN_E_NETWORK;
        kind = "rate limited";
    } else if (status >= 500) {
        code = CAIRN_E_NETWORK;
        kind = "server error";
    }
    return cairn_err_set(err, code, "%s: HTTP %ld, %s%s%s%s", what, status, kind,
                         msg[0] ? ": \"" : "", msg, msg[0] ? "\"" : "");
}
