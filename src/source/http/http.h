/* Internal: the libcurl setup every HTTP source shares (etcd, Consul, Vault): one global
 * init, the same timeouts, TLS files, cancel and protocol limits on every handle, and one
 * translation of libcurl's failures and of a server's error answer into cairn errors. */
#ifndef CAIRN_SOURCE_HTTP_H
#define CAIRN_SOURCE_HTTP_H

#include <curl/curl.h>

#include "cairn/err.h"

/* How to reach a server; every string is borrowed. */
struct http_opts {
    int tls;                    /* https: a failure before any answer is reported as TLS's */
    const char *ca_file;        /* https: trust this CA bundle (NULL: the system's) */
    const char *cert_file;      /* https: client certificate */
    const char *key_file;       /* its key (NULL: in cert_file) */
    long connect_timeout_ms;    /* 0: 30 s */
    long stall_timeout_s;       /* no byte for this long fails the transfer; 0: 120 s */
    long timeout_ms;            /* the whole transfer; 0: no limit */
    const volatile int *cancel; /* nonzero stops the transfer (CURLE_ABORTED_BY_CALLBACK) */
};

/* A new easy handle (aborts when libcurl cannot make one), curl_global_init done once, set up
 * for url with o: no signals, HTTP/1.1, http and https only, the timeouts and TLS files, the
 * cancel flag polled at least once a second, libcurl's message into curlerr
 * (CURL_ERROR_SIZE bytes, which must outlive the handle). The caller adds the method, the
 * headers and the body callbacks. */
CURL *http_handle(const char *url, const struct http_opts *o, char *curlerr);

/* A transfer libcurl did not complete, as a cairn error about what (the redacted URL and
 * action): cancelled, timed out (CAIRN_E_TIMEOUT), cannot connect, TLS failure, anything else
 * CAIRN_E_NETWORK. status: the HTTP status seen (0: none yet): over TLS 1.3 a server rejects a
 * client certificate after the handshake, so the client sees an alert, a reset or a close at
 * its first send or read, before any answer. */
int http_curl_error(CURLcode cc, const char *curlerr, long status, const struct http_opts *o,
                    const char *what, struct cairn_err *err);

/* The first line of a server's error body, escaped and capped, into out (cap bytes): for an
 * answer {"errors":["a","b"]} (Vault) the messages joined by "; ", for {"error":"m"} or
 * {"message":"m"} that text, else the body's first line (Consul's plain text). */
void http_error_text(const void *body, size_t len, char *out, size_t cap);

/* A complete answer with an unexpected status, as a cairn error naming what: 401/403
 * CAIRN_E_DENIED ("token rejected"), 5xx, 429 and 503 CAIRN_E_NETWORK (the server failed or is
 * unavailable), anything else CAIRN_E_PROTOCOL; the server's short message is appended. */
int http_status_error(long status, const void *body, size_t len, const char *what,
                      struct cairn_err *err);

#endif
