/* Metrics registry and Prometheus text rendering. One mutex guards everything: updates are a
 * few per backup, scrapes a few per minute, so contention is not a concern. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"

struct series {
    char *label_value; /* NULL when unlabelled */
    double value;      /* counter/gauge */
    uint64_t *counts;  /* histogram: per bucket (not cumulative) + overflow */
    double sum;
    uint64_t count;
};

struct cairn_metric {
    struct cairn_metrics *reg;
    char *name, *help, *label;
    enum cairn_metric_type type;
    double *buckets;
    size_t n_buckets;
    struct series *s;
    size_t n, cap;
};

struct cairn_metrics {
    pthread_mutex_t mu;
    struct cairn_metric **f;
    size_t n;
    void (*collect)(void *);
    void *collect_ctx;
};

struct cairn_metrics *metrics_new(void)
{
    struct cairn_metrics *m = xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(struct cairn_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        struct cairn_metric *f = m->f[i];
        for (size_t j = 0; j < f->n; j++) {
            free(f->s[j].label_value);
            free(f->s[j].counts);
        }
        free(f->s);
        free(f->name);
        free(f->help);
        free(f->label);
        free(f->buckets);
        free(f);
    }
    free(m->f);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

struct cairn_metric *metrics_declare(struct cairn_metrics *m, const char *name,
                                     enum cairn_metric_type type, const char *help,
                                     const char *label, const double *buckets, size_t n_buckets)
{
    /* Declared again (cairnd's scheduler is rebuilt on a reload or a new leader term): the
     * same family, so counters go on counting and /metrics lists it once. */
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->f[i]->name, name) == 0 && m->f[i]->type == type) {
            struct cairn_metric *old = m->f[i];
            pthread_mutex_unlock(&m->mu);
            return old;
        }
    pthread_mutex_unlock(&m->mu);
    struct cairn_metric *f = xcalloc(1, sizeof(*f));
    f->reg = m;
    f->name = xstrdup(name);
    f->help = xstrdup(help);
    f->label = label ? xstrdup(label) : NULL;
    f->type = type;
    if (type == CAIRN_HISTOGRAM && n_buckets > 0) {
        f->buckets = xmalloc(n_buckets * sizeof(double));
        memcpy(f->buckets, buckets, n_buckets * sizeof(double));
        f->n_buckets = n_buckets;
    }
    pthread_mutex_lock(&m->mu);
    m->f = xrealloc(m->f, (m->n + 1) * sizeof(*m->f));
    m->f[m->n++] = f;
    pthread_mutex_unlock(&m->mu);
    return f;
}

/* Caller holds the lock. */
static struct series *series_get(struct cairn_metric *f, const char *lv)
{
    for (size_t i = 0; i < f->n; i++) {
        const char *x = f->s[i].label_value;
        if ((x == NULL && lv == NULL) || (x && lv && strcmp(x, lv) == 0))
            return &f->s[i];
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 4;
        f->s = xrealloc(f->s, f->cap * sizeof(*f->s));
    }
    struct series *s = &f->s[f->n++];
    memset(s, 0, sizeof(*s));
    s->label_value = lv ? xstrdup(lv) : NULL;
    if (f->type == CAIRN_HISTOGRAM)
        s->counts = xcalloc(f->n_buckets + 1, sizeof(uint64_t));
    return s;
}

void metrics_add(struct cairn_metric *f, const char *lv, double v)
{
    pthread_mutex_lock(&f->reg->mu);
    series_get(f, lv)->value += v;
    pthread_mutex_unlock(&f->reg->mu);
}

void metrics_set(struct cairn_metric *f, const char *lv, double v)
{
    pthread_mutex_lock(&f->reg->mu);
    series_get(f, lv)->value = v;
    pthread_mutex_unlock(&f->reg->mu);
}

void metrics_observe(struct cairn_metric *f, const char *lv, double v)
{
    pthread_mutex_lock(&f->reg->mu);
    struct series *s = series_get(f, lv);
    size_t b = 0;
    while (b < f->n_buckets && v > f->buckets[b])
        b++;
    if (s->counts)
        s->counts[b]++;
    s->sum += v;
    s->count++;
    pthread_mutex_unlock(&f->reg->mu);
}

double metrics_get(struct cairn_metric *f, const char *lv)
{
    double v = 0;
    pthread_mutex_lock(&f->reg->mu);
    for (size_t i = 0; i < f->n; i++) {
        const char *x = f->s[i].label_value;
        if ((x == NULL && lv == NULL) || (x && lv && strcmp(x, lv) == 0))
            v = f->type == CAIRN_HISTOGRAM ? (double)f->s[i].count : f->s[i].value;
    }
    pthread_mutex_unlock(&f->reg->mu);
    return v;
}

void metrics_on_collect(struct cairn_metrics *m, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&m->mu);
    m->collect = fn;
    m->collect_ctx = ctx;
    pthread_mutex_unlock(&m->mu);
}

/* Label values: escape backslash, double quote and newline. */
static void escaped(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *s);
    }
}

static void number(struct buf *b, double v)
{
    if (isinf(v))
        buf_printf(b, v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        buf_printf(b, "NaN");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_printf(b, "%.0f", v);
    else
        buf_printf(b, "%.17g", v);
}

/* name{label="x",le="y"} with either part optional. */
static void labels(struct buf *b, const struct cairn_metric *f, const struct series *s,
                   const char *le)
{
    int lab = f->label && s->label_value;
    if (!lab && le == NULL)
        return;
    buf_printf(b, "{");
    if (lab) {
        buf_printf(b, "%s=\"", f->label);
        escaped(b, s->label_value);
        buf_printf(b, "\"");
    }
    if (le)
        buf_printf(b, "%sle=\"%s\"", lab ? "," : "", le);
    buf_printf(b, "}");
}

char *metrics_render(struct cairn_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    void (*collect)(void *) = m->collect;
    void *ctx = m->collect_ctx;
    pthread_mutex_unlock(&m->mu);
    if (collect)
        collect(ctx);

    static const char *const types[] = {"counter", "gauge", "histogram"};
    struct buf b = {0};
    buf_add(&b, "", 0);
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++) {
        const struct cairn_metric *f = m->f[i];
        buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->type]);
        for (size_t j = 0; j < f->n; j++) {
            const struct series *s = &f->s[j];
            if (f->type != CAIRN_HISTOGRAM) {
                buf_printf(&b, "%s", f->name);
                labels(&b, f, s, NULL);
                buf_printf(&b, " ");
                number(&b, s->value);
                buf_printf(&b, "\n");
                continue;
            }
            uint64_t cum = 0;
            for (size_t k = 0; k <= f->n_buckets; k++) {
                char le[64];
                if (k < f->n_buckets)
                    snprintf(le, sizeof(le), "%g", f->buckets[k]);
                else
                    snprintf(le, sizeof(le), "+Inf");
                cum += s->counts[k];
                buf_printf(&b, "%s_bucket", f->name);
                labels(&b, f, s, le);
                buf_printf(&b, " %llu\n", (unsigned long long)cum);
            }
            buf_printf(&b, "%s_sum", f->name);
            labels(&b, f, s, NULL);
            buf_printf(&b, " ");
            number(&b, s->sum);
            buf_printf(&b, "\n%s_count", f->name);
            labels(&b, f, s, NULL);
            buf_printf(&b, " %llu\n", (unsigned long long)s->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return (char *)b.p;
}
