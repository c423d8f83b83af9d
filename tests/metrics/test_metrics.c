/* Metrics registry: exposition format, concurrent updates, HTTP endpoints. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"
#include "metrics/metrics.h"
#include "test.h"

TEST(render_exposition_format)
{
    struct cairn_metrics *m = metrics_new();
    struct cairn_metric *c = metrics_declare(m, "x_total", CAIRN_COUNTER, "Things.", NULL, NULL, 0);
    struct cairn_metric *g =
        metrics_declare(m, "y_seconds", CAIRN_GAUGE, "Age.", "schedule", NULL, 0);
    const double b[] = {1, 10};
    struct cairn_metric *h =
        metrics_declare(m, "d_seconds", CAIRN_HISTOGRAM, "Durations.", "schedule", b, 2);
    metrics_add(c, NULL, 2);
    metrics_set(g, "a\"b", 1.5);
    metrics_observe(h, "s", 0.5);
    metrics_observe(h, "s", 5);
    metrics_observe(h, "s", 50);
    char *text = metrics_render(m);
    CHECK(strstr(text, "# HELP x_total Things.\n# TYPE x_total counter\nx_total 2\n") != NULL);
    CHECK(strstr(text, "# TYPE y_seconds gauge\ny_seconds{schedule=\"a\\\"b\"} 1.5\n") != NULL);
    CHECK(strstr(text, "d_seconds_bucket{schedule=\"s\",le=\"1\"} 1\n"
                       "d_seconds_bucket{schedule=\"s\",le=\"10\"} 2\n"
                       "d_seconds_bucket{schedule=\"s\",le=\"+Inf\"} 3\n"
                       "d_seconds_sum{schedule=\"s\"} 55.5\n"
                       "d_seconds_count{schedule=\"s\"} 3\n") != NULL);
    CHECK_EQ_INT(metrics_get(h, "s"), 3);
    CHECK_EQ_INT(metrics_get(c, NULL), 2);
    CHECK_EQ_INT(metrics_get(g, "none"), 0);
    free(text);
    metrics_free(m);
}

struct worker {
    struct cairn_metric *c, *h;
    struct cairn_metrics *m;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 20000; i++) {
        metrics_add(w->c, (i & 1) ? "a" : "b", 1);
        metrics_observe(w->h, NULL, i % 7);
        if (i % 1000 == 0)
            free(metrics_render(w->m));
    }
    return NULL;
}

TEST(concurrent_updates_are_not_lost)
{
    struct cairn_metrics *m = metrics_new();
    const double b[] = {3};
    struct worker w = {
        metrics_declare(m, "n_total", CAIRN_COUNTER, "N.", "k", NULL, 0),
        metrics_declare(m, "h", CAIRN_HISTOGRAM, "H.", NULL, b, 1),
        m,
    };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &w);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_INT(metrics_get(w.c, "a") + metrics_get(w.c, "b"), 80000);
    CHECK_EQ_INT(metrics_get(w.h, NULL), 80000);
    metrics_free(m);
}

static size_t collect_body(char *p, size_t sz, size_t n, void *ud)
{
    struct {
        char buf[65536];
        size_t n;
    } *b = ud;
    size_t k = sz * n;
    if (b->n + k >= sizeof(b->buf))
        k = sizeof(b->buf) - b->n - 1;
    memcpy(b->buf + b->n, p, k);
    b->n += k;
    b->buf[b->n] = '\0';
    return sz * n;
}

static long get(unsigned port, const char *path, char *out, size_t cap)
{
    struct {
        char buf[65536];
        size_t n;
    } b = {{0}, 0};
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    long code = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    snprintf(out, cap, "%s", b.buf);
    return code;
}

static int collected;
static void on_collect(void *ctx)
{
    metrics_set(ctx, NULL, ++collected);
}

static int health(void *ctx, char *body, size_t cap)
{
    (void)ctx;
    snprintf(body, cap, "ok\n");
    return 200;
}

TEST(http_metrics_and_healthz)
{
    struct cairn_metrics *m = metrics_new();
    struct cairn_metric *g = metrics_declare(m, "scrapes", CAIRN_GAUGE, "S.", NULL, NULL, 0);
    metrics_on_collect(m, on_collect, g);
    struct cairn_metrics_server *s = NULL;
    struct cairn_err err;
    CHECK_OK(metrics_serve(m, "127.0.0.1:0", NULL, health, NULL, &s, &err), &err);
    if (s == NULL) {
        metrics_free(m);
        return;
    }
    unsigned port = metrics_server_port(s);
    CHECK(port > 0);
    char body[65536];
    CHECK_EQ_INT(get(port, "/metrics", body, sizeof(body)), 200);
    CHECK(strstr(body, "scrapes 1\n") != NULL);
    CHECK_EQ_INT(get(port, "/metrics", body, sizeof(body)), 200);
    CHECK(strstr(body, "scrapes 2\n") != NULL);
    CHECK_EQ_INT(get(port, "/healthz", body, sizeof(body)), 200);
    CHECK_EQ_STR(body, "ok\n");
    CHECK_EQ_INT(get(port, "/nope", body, sizeof(body)), 404);
    /* The port is taken now: a second server on it fails clearly. */
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    struct cairn_metrics_server *s2 = NULL;
    CHECK_ERR(metrics_serve(m, addr, NULL, NULL, NULL, &s2, &err), CAIRN_E_IO, &err,
              "cannot listen for metrics");
    CHECK_ERR(metrics_serve(m, "nohostport", NULL, NULL, NULL, &s2, &err), CAIRN_E_INVALID, &err,
              "not HOST:PORT");
    metrics_server_stop(s);
    metrics_free(m);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
