/* Internal: a small thread-safe metrics registry rendered in the Prometheus text exposition
 * format (version 0.0.4), and an HTTP endpoint (libmicrohttpd) serving /metrics and /healthz. */
#ifndef CAIRN_METRICS_H
#define CAIRN_METRICS_H

#include <stddef.h>

#include "cairn/err.h"

enum cairn_metric_type { CAIRN_COUNTER, CAIRN_GAUGE, CAIRN_HISTOGRAM };

struct cairn_metrics;
struct cairn_metric; /* one family: name, type, help, optional single label */

struct cairn_metrics *metrics_new(void);
void metrics_free(struct cairn_metrics *m);

/* Declare a family. label is the label name (e.g. "schedule") or NULL for an unlabelled one.
 * Histograms take ascending upper bounds (the +Inf bucket is implicit). The returned handle
 * lives as long as the registry. */
struct cairn_metric *metrics_declare(struct cairn_metrics *m, const char *name,
                                     enum cairn_metric_type type, const char *help,
                                     const char *label, const double *buckets, size_t n_buckets);
/* label_value is NULL for unlabelled families. All thread-safe. */
void metrics_add(struct cairn_metric *f, const char *label_value, double v);
void metrics_set(struct cairn_metric *f, const char *label_value, double v);
void metrics_observe(struct cairn_metric *f, const char *label_value, double v);
/* Current value (counters/gauges) or observation count (histograms); 0 when absent. */
double metrics_get(struct cairn_metric *f, const char *label_value);

/* Called (outside the registry lock) right before each render, to refresh computed gauges. */
void metrics_on_collect(struct cairn_metrics *m, void (*fn)(void *ctx), void *ctx);
/* The whole registry as exposition text (malloc'd). */
char *metrics_render(struct cairn_metrics *m);

/* Bounds on the HTTP listener, so idle or trickling clients cannot keep scrapers out: a
 * connection silent for timeout_s is closed, at most max_conn are open and at most per_ip from
 * one address (refused ones are closed at once). 0 = the default below. */
struct cairn_http_limits {
    unsigned timeout_s, max_conn, per_ip;
};
#define CAIRN_HTTP_TIMEOUT_DEFAULT  10u
#define CAIRN_HTTP_MAX_CONN_DEFAULT 128u
#define CAIRN_HTTP_PER_IP_DEFAULT   8u

/* HTTP: GET /metrics and GET /healthz on listen "HOST:PORT" (PORT 0 = any free port).
 * health returns an HTTP status and writes a short body. lim may be NULL (defaults). */
typedef int (*cairn_health_fn)(void *ctx, char *body, size_t cap);
struct cairn_metrics_server;
int metrics_serve(struct cairn_metrics *m, const char *listen, const struct cairn_http_limits *lim,
                  cairn_health_fn health, void *health_ctx, struct cairn_metrics_server **out,
                  struct cairn_err *err);
/* The port actually bound. */
unsigned metrics_server_port(const struct cairn_metrics_server *s);
void metrics_server_stop(struct cairn_metrics_server *s);

#endif
