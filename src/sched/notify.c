/* The webhook: one JSON POST per run through libcurl (the sources' shared setup and its one
 * curl_global_init, source/http/http.h), retried with backoff. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn/log.h"
#include "common/util.h"
#include "hook.h"
#include "source/http/http.h"

#define WEBHOOK_ATTEMPTS 5
#define WEBHOOK_TRY_MS   10000 /* one attempt, connect included */
#define WEBHOOK_TOTAL_MS 60000 /* every attempt and backoff */

/* scheme://host[:port] of url: what logs show (a path or query may carry a token). */
static void url_origin(const char *url, char *out, size_t cap)
{
    const char *sep = strstr(url, "://");
    size_t scheme = sep ? (size_t)(sep + 3 - url) : 0;
    const char *host = url + scheme;
    size_t n = strcspn(host, "/?#");
    const char *at = memchr(host, '@', n);
    if (at != NULL) { /* user-info: never shown */
        n -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    snprintf(out, cap, "%.*s%.*s", (int)scheme, url, (int)n, host);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static char *report_json(const struct hook_report *r)
{
    char started[40], finished[40];
    format_rfc3339(r->started, 0, started, sizeof(started));
    format_rfc3339(r->finished, 0, finished, sizeof(finished));
    char host[256];
    host_name(host, sizeof(host), 0);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:s}", "event", r->event, "schedule",
                  r->schedule, "backup", r->backup ? r->backup : "", "status", r->status, "bytes",
                  (json_int_t)r->bytes, "started", started, "finished", finished,
                  "duration_seconds", (json_int_t)(r->finished - r->started), "host", host);
    json_object_set_new(o, "error", r->error ? json_string(r->error) : json_null());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* One POST: CAIRN_OK on 2xx; *retry says whether another attempt may help. */
static int post_once(const char *url, const char *body, const volatile int *cancel, int *retry,
                     struct cairn_err *err)
{
    struct http_opts ho = {.connect_timeout_ms = WEBHOOK_TRY_MS,
                           .stall_timeout_s = WEBHOOK_TRY_MS / 1000,
                           .timeout_ms = WEBHOOK_TRY_MS,
                           .cancel = cancel};
    ho.tls = strncmp(url, "https://", 8) == 0;
    char curlerr[CURL_ERROR_SIZE];
    CURL *h = http_handle(url, &ho, curlerr);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "User-Agent: cairnd");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    *retry = 0;
    if (cc != CURLE_OK) {
        *retry = cc != CURLE_ABORTED_BY_CALLBACK;
        return http_curl_error(cc, curlerr, status, &ho, "webhook", err);
    }
    if (status >= 200 && status < 300)
        return CAIRN_OK;
    *retry = status == 429 || status >= 500;
    return cairn_err_set(err, *retry ? CAIRN_E_NETWORK : CAIRN_E_PROTOCOL,
                         "webhook answered HTTP %ld", status);
}

/* Sleep ms, cut short by cancel (50 ms steps). */
static void backoff(unsigned ms, const volatile int *cancel)
{
    while (ms > 0 && !cancel_requested(cancel)) {
        unsigned step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        ms -= step;
    }
}

int hook_webhook(const char *url, const struct hook_report *r, const volatile int *cancel,
                 struct cairn_err *err)
{
    char origin[300];
    url_origin(url, origin, sizeof(origin));
    char *body = report_json(r);
    uint64_t end = mono_ns() + (uint64_t)WEBHOOK_TOTAL_MS * 1000000ull;
    unsigned delay = 1000;
    int rc = CAIRN_OK, retry = 0;
    for (int attempt = 1;; attempt++) {
        struct cairn_err e1;
        rc = post_once(url, body, cancel, &retry, &e1);
        if (rc == CAIRN_OK) {
            cairn_info("hook", "webhook %s: %s %s %s delivered (attempt %d)", origin, r->event,
                       r->schedule, r->status, attempt);
            break;
        }
        int last = !retry || attempt >= WEBHOOK_ATTEMPTS || cancel_requested(cancel) ||
                   mono_ns() + (uint64_t)delay * 1000000ull >= end;
        cairn_warn("hook", "webhook %s: attempt %d failed: %s%s", origin, attempt, e1.msg,
                   last ? "; giving up" : "; trying again");
        if (last) {
            rc = cairn_err_set(err, rc, "webhook %s: %s (after %d attempts)", origin, e1.msg,
                               attempt);
            break;
        }
        backoff(delay, cancel);
        delay *= 2;
    }
    free(body);
    return rc;
}
