/* Retention by creation time, aware of chains: the cases, then a seeded property test
 * (1,000 random histories planned in memory against an independent oracle, and 20 with real
 * file storage whose kept backups must verify and read back). CAIRN_TEST_SEED overrides the
 * seed; the seed is printed so a failure can be replayed. */
#define _GNU_SOURCE
#include <fnmatch.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

#define DAY 86400
#define C   CAIRN_BACKUP_COMPLETE
#define I   CAIRN_BACKUP_INCOMPLETE
#define X   CAIRN_BACKUP_CORRUPT

struct fake {
    const char *name;
    enum cairn_backup_status st;
    int64_t created;
    const char *source;
    const char *parent;
};

static void fake_list(struct cairn_backup_list *l, const struct fake *f, size_t n)
{
    l->count = n;
    l->items = xcalloc(n ? n : 1, sizeof(*l->items));
    for (size_t i = 0; i < n; i++) {
        struct cairn_backup_info *it = &l->items[i];
        it->name = (char *)f[i].name;
        it->status = f[i].st;
        it->created = f[i].st == C ? f[i].created : -1;
        it->source = f[i].st == C ? (char *)(f[i].source ? f[i].source : "") : NULL;
        it->parent = (char *)f[i].parent;
    }
}

/* One character per backup: 'x' removed, '.' kept, '-' not considered. */
static void plan_chars(const struct cairn_backup_list *l, const struct cairn_retention_policy *p,
                       char *out, struct cairn_retention_plan *keep_plan)
{
    struct cairn_retention_plan plan;
    struct cairn_err err;
    CHECK_OK(cairn_retention_plan(l, p, &plan, &err), &err);
    for (size_t i = 0; i < l->count; i++)
        out[i] = plan.items[i].action == CAIRN_RETAIN_REMOVE ? 'x'
                 : plan.items[i].action == CAIRN_RETAIN_SKIP ? '-'
                                                             : '.';
    out[l->count] = '\0';
    if (keep_plan)
        *keep_plan = plan;
    else
        cairn_retention_plan_free(&plan);
}

/* The repro: age is not the name. */
TEST(keep_last_by_creation_time_not_name)
{
    const int64_t t = 1795000000;
    struct fake f[] = {{"daily-new", C, t + 1}, {"weekly-old", C, t}};
    struct cairn_backup_list l;
    fake_list(&l, f, 2);
    char s[8];
    struct cairn_retention_plan plan;
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 1, .now = t + 10}, s, &plan);
    CHECK_EQ_STR(s, ".x");
    CHECK(strstr(plan.items[0].reason, "keep-last 1/1") != NULL);
    CHECK_EQ_STR(plan.items[1].reason, "not kept by any rule");
    cairn_retention_plan_free(&plan);
    /* The old interface gives the same answer now. */
    uint8_t rm[2];
    CHECK_EQ_INT(cairn_prune_plan(&l, &(struct cairn_prune_policy){.keep_last = 1}, rm), 1);
    CHECK(rm[0] == 0 && rm[1] == 1);
    free(l.items);
}

/* A full backup and two incrementals: keep-last 1 keeps the whole chain. */
TEST(keep_last_keeps_parent_chain)
{
    const int64_t t = 1795000000;
    struct fake f[] = {
        {"a-full", C, t, "h:/d", NULL},
        {"b-inc1", C, t + 60, "h:/d", "a-full"},
        {"c-inc2", C, t + 120, "h:/d", "b-inc1"},
        {"d-other", C, t - 60, "h:/d", NULL},
    };
    struct cairn_backup_list l;
    fake_list(&l, f, 4);
    char s[8];
    struct cairn_retention_plan plan;
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 1, .now = t + 200}, s, &plan);
    CHECK_EQ_STR(s, "...x");
    CHECK_EQ_STR(plan.items[0].reason, "parent of b-inc1");
    CHECK_EQ_STR(plan.items[1].reason, "parent of c-inc2");
    cairn_retention_plan_free(&plan);
    uint8_t mark[4];
    CHECK_EQ_INT(cairn_backup_dependents(&l, 0, mark), 2);
    CHECK(mark[0] == 0 && mark[1] == 1 && mark[2] == 1 && mark[3] == 0);
    CHECK_EQ_INT(cairn_backup_dependents(&l, 2, mark), 0);
    free(l.items);
}

TEST(missing_parent_reported_and_future_dated_kept)
{
    const int64_t now = 1795000000;
    struct fake f[] = {
        {"a", C, now - 3 * DAY, "s", NULL},
        {"b", C, now - 2 * DAY, "s", "gone"},
        {"c", C, now - DAY, "s", NULL},
        {"z-future", C, now + 2 * DAY, "s", NULL}, /* the clock was 2 days ahead */
    };
    struct cairn_backup_list l;
    fake_list(&l, f, 4);
    char s[8];
    struct cairn_retention_plan plan;
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 1, .now = now}, s, &plan);
    /* The future one does not push the fresh one (c) out. */
    CHECK_EQ_STR(s, "xx..");
    CHECK_EQ_STR(plan.items[3].reason, "future-dated");
    CHECK(plan.items[3].warning != NULL && strstr(plan.items[3].warning, "future") != NULL);
    CHECK(strstr(plan.items[2].reason, "newest of group") != NULL);
    cairn_retention_plan_free(&plan);
    /* b kept by keep-last 3: its missing parent is reported. */
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 3, .now = now}, s, &plan);
    CHECK_EQ_STR(s, "....");
    CHECK(plan.items[1].warning != NULL && strstr(plan.items[1].warning, "gone is missing"));
    CHECK_EQ_INT(plan.warnings, 2);
    cairn_retention_plan_free(&plan);
    free(l.items);
}

TEST(groups_filters_periods_and_refusal)
{
    const int64_t now = 1795000000 - 1795000000 % DAY + 12 * 3600; /* noon UTC */
    struct fake f[] = {
        {"a1", C, now - 3 * DAY, "A", NULL}, {"a2", C, now - 2 * DAY, "A", NULL},
        {"a3", C, now - DAY, "A", NULL},     {"b1", C, now - 5 * DAY, "B", NULL},
        {"b2", C, now - 4 * DAY, "B", NULL}, {"m", I, 0, NULL, NULL},
    };
    struct cairn_backup_list l;
    fake_list(&l, f, 6);
    char s[8];
    /* Per source: the newest of A and of B. "m" sorts after the newest complete name (b2):
     * it may be running. */
    plan_chars(&l,
               &(struct cairn_retention_policy){.keep_last = 1, .group_by_source = 1, .now = now},
               s, NULL);
    CHECK_EQ_STR(s, "xx.x..");
    /* One group: only a3. */
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 1, .now = now}, s, NULL);
    CHECK_EQ_STR(s, "xx.xx.");
    /* Name filter: only b* is touched. */
    plan_chars(&l, &(struct cairn_retention_policy){.keep_last = 1, .name_glob = "b*", .now = now},
               s, NULL);
    CHECK_EQ_STR(s, "---x.-");
    /* keep-within 36h keeps a3 only, keep-daily 2 keeps a3, a2. */
    plan_chars(&l, &(struct cairn_retention_policy){.keep_within = 36 * 3600, .now = now}, s, NULL);
    CHECK_EQ_STR(s, "xx.xx.");
    plan_chars(&l, &(struct cairn_retention_policy){.keep_daily = 2, .now = now}, s, NULL);
    CHECK_EQ_STR(s, "x..xx.");
    plan_chars(&l,
               &(struct cairn_retention_policy){.keep_monthly = 1, .keep_yearly = 1, .now = now}, s,
               NULL);
    CHECK_EQ_STR(s, "xx.xx.");
    /* A policy that keeps nothing is refused. */
    struct cairn_retention_plan plan;
    struct cairn_err err;
    CHECK_ERR(cairn_retention_plan(&l, &(struct cairn_retention_policy){.now = now}, &plan, &err),
              CAIRN_E_INVALID, &err, "keeps nothing");
    free(l.items);
}

/* ---- property test ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static uint64_t seed_from_env(void)
{
    const char *s = getenv("CAIRN_TEST_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 10) : 20261201;
    return seed ? seed : 1;
}

struct sim {
    char name[24];
    enum cairn_backup_status st;
    int64_t created;
    const char *source;
    char parent[24]; /* "" = full */
};

struct hist {
    struct sim *v;
    size_t n, cap;
    int64_t now;
    unsigned serial;
};

static const char *const sources[] = {"h1:/data", "h2:/data", "h3:/srv"};

/* Random names, unrelated to time ("q7Kd-12"); unique through the serial. */
static void random_name(struct hist *h, char *out, size_t cap)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char pre[8];
    unsigned len = 1 + below(5);
    for (unsigned i = 0; i < len; i++)
        pre[i] = al[below(sizeof(al) - 1)];
    pre[len] = '\0';
    snprintf(out, cap, "%s-%u", pre, h->serial++);
}

static void add_backup(struct hist *h)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 32;
        h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    struct sim *b = &h->v[h->n];
    memset(b, 0, sizeof(*b));
    random_name(h, b->name, sizeof(b->name));
    unsigned r = below(100);
    b->st = r < 85 ? C : r < 95 ? I : X;
    b->source = sources[below(3)];
    b->created = h->now - below(3600);
    if (below(100) < 6)
        b->created = h->now + 600 + below(3 * DAY); /* written while the clock was ahead */
    if (b->st == C && h->n > 0 && below(100) < 55) {
        /* An incremental: mostly on a complete backup of the same source, sometimes on any
         * backup, rarely on one that never existed. */
        const struct sim *p = &h->v[below((unsigned)h->n)];
        for (int tries = 0; tries < 4 && (p->st != C || p->source != b->source); tries++)
            p = &h->v[below((unsigned)h->n)];
        snprintf(b->parent, sizeof(b->parent), "%s", below(100) < 3 ? "never-existed" : p->name);
    }
    h->n++;
}

static int cmp_sim(const void *a, const void *b)
{
    return strcmp(((const struct sim *)a)->name, ((const struct sim *)b)->name);
}

static void to_list(struct hist *h, struct cairn_backup_list *l)
{
    qsort(h->v, h->n, sizeof(*h->v), cmp_sim); /* cairn_storage_list() order */
    l->count = h->n;
    l->items = xcalloc(h->n ? h->n : 1, sizeof(*l->items));
    for (size_t i = 0; i < h->n; i++) {
        struct cairn_backup_info *it = &l->items[i];
        it->name = h->v[i].name;
        it->status = h->v[i].st;
        it->created = h->v[i].st == C ? h->v[i].created : -1;
        it->source = h->v[i].st == C ? (char *)h->v[i].source : NULL;
        it->parent = h->v[i].parent[0] ? h->v[i].parent : NULL;
    }
}

static void random_policy(struct cairn_retention_policy *p, int64_t now)
{
    memset(p, 0, sizeof(*p));
    do {
        p->keep_last = below(3) ? 0 : below(6);
        p->keep_hourly = below(4) ? 0 : below(8);
        p->keep_daily = below(3) ? 0 : below(8);
        p->keep_weekly = below(4) ? 0 : below(5);
        p->keep_monthly = below(5) ? 0 : below(4);
        p->keep_yearly = below(6) ? 0 : below(3);
        p->keep_within = below(4) ? 0 : (int64_t)(1 + below(10 * DAY));
    } while (!cairn_retention_policy_keeps(p));
    p->group_by_source = below(2);
    static const char *const globs[] = {"[a-m]*", "*-1*", "[A-Z]*"};
    p->name_glob = below(4) ? NULL : globs[below(3)];
    p->now = now;
}

/* Independent period keys (integer arithmetic for hours, days and Monday-based weeks). */
static int64_t fdiv(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static int64_t period_key(int rule, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    switch (rule) {
    case 0: return fdiv(t, 3600);
    case 1: return fdiv(t, DAY);
    case 2: return fdiv(fdiv(t, DAY) + 3, 7); /* 1970-01-01 was a Thursday */
    case 3: gmtime_r(&tt, &tm); return (int64_t)tm.tm_year * 12 + tm.tm_mon;
    default: gmtime_r(&tt, &tm); return tm.tm_year;
    }
}

struct ranked {
    size_t i;
    int64_t t;
    const char *name;
};

static int cmp_ranked(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->t != y->t)
        return x->t > y->t ? -1 : 1;
    return -strcmp(x->name, y->name);
}

/* The keep-* rules of one group r[0..n) (newest first) into keep[]. */
static void oracle_group(const struct ranked *r, size_t n, const struct cairn_retention_policy *p,
                         uint8_t *keep)
{
    if (n == 0)
        return;
    keep[r[0].i] = 1;
    for (size_t k = 0; k < n && k < p->keep_last; k++)
        keep[r[k].i] = 1;
    const unsigned counts[] = {p->keep_hourly, p->keep_daily, p->keep_weekly, p->keep_monthly,
                               p->keep_yearly};
    for (int rule = 0; rule < 5; rule++) {
        unsigned periods = 0;
        for (size_t k = 0; k < n && periods < counts[rule]; k++)
            if (k == 0 || period_key(rule, r[k].t) != period_key(rule, r[k - 1].t)) {
                keep[r[k].i] = 1; /* the newest of a new period */
                periods++;
            }
    }
    for (size_t k = 0; k < n; k++)
        if (p->keep_within > 0 && r[k].t >= p->now - p->keep_within)
            keep[r[k].i] = 1;
}

static long find(const struct cairn_backup_list *l, const char *name)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return (long)i;
    return -1;
}

static int is_considered(const struct cairn_retention_policy *p, const char *name)
{
    return p->name_glob == NULL || fnmatch(p->name_glob, name, 0) == 0;
}

/* What must be removed, computed the slow way: rem[i] = 1. */
static void oracle(const struct cairn_backup_list *l, const struct cairn_retention_policy *p,
                   uint8_t *rem)
{
    size_t n = l->count;
    uint8_t *keep = xcalloc(n + 1, 1);
    struct ranked *r = xcalloc(n + 1, sizeof(*r));
    const char *newest = NULL;
    for (size_t i = 0; i < n; i++)
        if (is_considered(p, l->items[i].name) && l->items[i].status == C &&
            (newest == NULL || strcmp(l->items[i].name, newest) > 0))
            newest = l->items[i].name;
    for (int g = 0; g < (p->group_by_source ? 3 : 1); g++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const struct cairn_backup_info *it = &l->items[i];
            if (!is_considered(p, it->name) || it->status != C)
                continue;
            if (it->created > p->now + CAIRN_RETENTION_FUTURE_SLACK)
                continue; /* future-dated: kept below, ranked by no rule */
            if (p->group_by_source && strcmp(it->source, sources[g]) != 0)
                continue;
            r[m++] = (struct ranked){i, it->created, it->name};
        }
        qsort(r, m, sizeof(*r), cmp_ranked);
        oracle_group(r, m, p, keep);
    }
    for (size_t i = 0; i < n; i++) {
        const struct cairn_backup_info *it = &l->items[i];
        int cons = is_considered(p, it->name);
        if (!cons || it->status == X || (it->status == C && it->created > p->now + 300))
            keep[i] = 1;
        if (cons && it->status == I)
            keep[i] = newest == NULL || strcmp(it->name, newest) > 0;
    }
    /* Chains: anything kept keeps its parents, to a fixed point. */
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            long j = keep[i] && l->items[i].parent ? find(l, l->items[i].parent) : -1;
            if (j >= 0 && !keep[j])
                keep[j] = changed = 1;
        }
    }
    for (size_t i = 0; i < n; i++)
        rem[i] = !keep[i];
    free(r);
    free(keep);
}

static int prop_failures;

/* Check one plan against the oracle and the invariants; returns 0 when all hold. */
static int check_plan(const struct cairn_backup_list *l, const struct cairn_retention_policy *p,
                      const struct cairn_retention_plan *plan, uint64_t seed, unsigned hist)
{
    size_t n = l->count;
    uint8_t *rem = xcalloc(n + 1, 1);
    oracle(l, p, rem);
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        const struct cairn_backup_info *it = &l->items[i];
        const struct cairn_retention_decision *d = &plan->items[i];
        int removed = d->action == CAIRN_RETAIN_REMOVE;
        const char *why = NULL;
        if (removed != rem[i])
            why = removed ? "removed, the oracle keeps it" : "kept, the oracle removes it";
        else if (removed && it->status == C && it->created > p->now + 300)
            why = "a future-dated backup was removed";
        else if (removed && (it->status == X || !is_considered(p, it->name)))
            why = "a corrupt or unconsidered backup was removed";
        else if (d->reason == NULL || d->reason[0] == '\0')
            why = "no reason given";
        else if (it->status == C && it->created > p->now + 300 && is_considered(p, it->name) &&
                 (d->warning == NULL || strstr(d->reason, "future-dated") == NULL))
            why = "future-dated backup not reported";
        /* Every kept backup's parent chain is kept (a missing link is reported). */
        for (long j = (long)i, depth = 0; !why && !removed && j >= 0 && depth < (long)n; depth++) {
            const char *par = l->items[j].parent;
            if (par == NULL)
                break;
            long k = find(l, par);
            if (k < 0 && (plan->items[j].warning == NULL ||
                          strstr(plan->items[j].warning, "missing") == NULL))
                why = "missing parent not reported";
            else if (k >= 0 && plan->items[k].action == CAIRN_RETAIN_REMOVE)
                why = "a kept backup's parent is removed";
            j = k;
        }
        if (why != NULL) {
            bad = 1;
            if (prop_failures++ < 5)
                test_fail(__FILE__, __LINE__,
                          "seed %llu history %u: %s: %s (created %lld, now %lld, reason '%s')",
                          (unsigned long long)seed, hist, it->name, why, (long long)it->created,
                          (long long)p->now, d->reason ? d->reason : "");
        }
    }
    free(rem);
    return bad;
}

/* Remove what the plan removes from the history. */
static void apply_plan(struct hist *h, const struct cairn_retention_plan *plan)
{
    size_t w = 0;
    for (size_t i = 0; i < h->n; i++)
        if (plan->items[i].action != CAIRN_RETAIN_REMOVE)
            h->v[w++] = h->v[i];
    h->n = w;
}

/* After a prune: every remaining backup's parent is still there (or never was). */
static int chains_complete(const struct hist *h)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!h->v[i].parent[0] || strcmp(h->v[i].parent, "never-existed") == 0)
            continue;
        int found = 0;
        for (size_t j = 0; j < h->n && !found; j++)
            found = strcmp(h->v[j].name, h->v[i].parent) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

TEST(property_random_histories)
{
    uint64_t seed = seed_from_env();
    rng_state = seed;
    printf("retention property test: seed %llu (CAIRN_TEST_SEED replays it)\n",
           (unsigned long long)seed);
    unsigned prunes = 0, removed = 0, future = 0, chained = 0;
    for (unsigned hist = 0; hist < 1000 && prop_failures == 0; hist++) {
        struct hist h = {.now = 1700000000 + (int64_t)below(300 * DAY)};
        unsigned events = 10 + below(50);
        for (unsigned e = 0; e < events; e++) {
            h.now += below(8) == 0 ? (int64_t)below(20 * DAY) : (int64_t)below(12 * 3600);
            if (below(4) != 0 || h.n == 0) {
                add_backup(&h);
                continue;
            }
            struct cairn_backup_list l;
            to_list(&h, &l);
            struct cairn_retention_policy p;
            random_policy(&p, h.now);
            struct cairn_retention_plan plan;
            struct cairn_err err;
            CHECK_OK(cairn_retention_plan(&l, &p, &plan, &err), &err);
            check_plan(&l, &p, &plan, seed, hist);
            for (size_t i = 0; i < l.count; i++) {
                future += plan.items[i].reason && strstr(plan.items[i].reason, "future-dated");
                chained += plan.items[i].reason && strstr(plan.items[i].reason, "parent of");
            }
            removed += (unsigned)plan.removed;
            prunes++;
            apply_plan(&h, &plan);
            if (!chains_complete(&h) && prop_failures++ < 5)
                test_fail(__FILE__, __LINE__, "seed %llu history %u: a chain lost a link",
                          (unsigned long long)seed, hist);
            cairn_retention_plan_free(&plan);
            free(l.items);
        }
        free(h.v);
    }
    printf("1000 histories: %u prunes, %u backups removed, %u future-dated kept, %u kept as "
           "parents\n",
           prunes, removed, future, chained);
    CHECK(prunes > 5000 && removed > 1000 && future > 100 && chained > 100);
}

/* ---- the same with real file storage ---- */

static void file_data(const char *backup, int f, char *out, size_t cap)
{
    snprintf(out, cap, "%s/f%d: contents of file %d of backup %s", backup, f, f, backup);
}

/* Rewrite a stored MANIFEST (test-only raw access): set its creation time, or break it. */
static void rewrite_manifest(const char *root, const char *name, int64_t created, int corrupt)
{
    char *p = xasprintf("%s/%s/MANIFEST", root, name);
    json_error_t je;
    json_t *m = json_load_file(p, 0, &je);
    CHECK(m != NULL);
    char t[64];
    format_rfc3339(created, 0, t, sizeof(t));
    if (m != NULL) {
        json_object_set_new(m, "created", json_string(t));
        CHECK(json_dump_file(m, p, JSON_INDENT(2)) == 0);
        json_decref(m);
    }
    if (corrupt) {
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        if (f) {
            fputs("{\"version\": ", f);
            fclose(f);
        }
    }
    free(p);
}

/* Store sim backup b for real: files, source, parent; then its creation time. */
static void store_backup(struct cairn_storage *st, const char *root, const struct sim *b)
{
    struct cairn_err err;
    struct cairn_backup *h = NULL;
    CHECK_OK(cairn_storage_start(st, b->name, &h, &err), &err);
    if (h == NULL)
        return;
    CHECK_OK(cairn_backup_set_source(h, b->source, &err), &err);
    if (b->parent[0])
        CHECK_OK(cairn_backup_set_parent(h, b->parent, &err), &err);
    for (int f = 0; f < 2; f++) {
        char fn[8], data[128];
        snprintf(fn, sizeof(fn), "f%d", f);
        file_data(b->name, f, data, sizeof(data));
        struct cairn_writer *w = NULL;
        CHECK_OK(cairn_backup_add_file(h, fn, (int64_t)strlen(data), &w, &err), &err);
        if (w != NULL) {
            CHECK_OK(cairn_writer_write(w, data, strlen(data), &err), &err);
            CHECK_OK(cairn_writer_close(w, &err), &err);
            cairn_writer_free(w);
        }
    }
    if (b->st != I) {
        CHECK_OK(cairn_backup_end(h, &err), &err);
        rewrite_manifest(root, b->name, b->created, b->st == X);
    }
    cairn_backup_free(h); /* incomplete: no end, no abort, as after a crash */
}

/* Open, verify, and read back every file of a kept complete backup. */
static int check_restores(struct cairn_storage *st, const char *name)
{
    struct cairn_err err;
    struct cairn_backup *b = NULL;
    int rc = cairn_storage_open_backup(st, name, &b, &err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_verify(b, 2, NULL, NULL, &err);
    for (int f = 0; f < 2 && rc == CAIRN_OK; f++) {
        char fn[8], want[128];
        snprintf(fn, sizeof(fn), "f%d", f);
        file_data(name, f, want, sizeof(want));
        struct cairn_writer *mem = cairn_mem_writer_new(1u << 20);
        rc = cairn_backup_get_stream(b, fn, mem, NULL, &err);
        size_t n = 0;
        const uint8_t *got = cairn_mem_writer_data(mem, &n);
        if (rc == CAIRN_OK && (n != strlen(want) || memcmp(got, want, n) != 0))
            rc = cairn_err_set(&err, CAIRN_E_CORRUPT, "%s/%s: wrong contents", name, fn);
        cairn_writer_free(mem);
    }
    if (rc != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "kept backup %s: %s", name, err.msg);
    cairn_backup_free(b);
    return rc;
}

/* Every kept complete backup verifies and reads back, and so does every link of its chain. */
static unsigned check_store(struct cairn_storage *st, const struct hist *h)
{
    unsigned links = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].st != C)
            continue;
        const struct sim *cur = &h->v[i];
        for (size_t depth = 0; cur != NULL && depth <= h->n; depth++) {
            if (check_restores(st, cur->name) != CAIRN_OK || !cur->parent[0] ||
                strcmp(cur->parent, "never-existed") == 0)
                break;
            const struct sim *next = NULL;
            for (size_t j = 0; j < h->n && next == NULL; j++)
                if (strcmp(h->v[j].name, cur->parent) == 0)
                    next = &h->v[j];
            if (next == NULL)
                test_fail(__FILE__, __LINE__, "%s: parent %s is gone", cur->name, cur->parent);
            else if (next->st == C)
                links++;
            cur = next && next->st == C ? next : NULL;
        }
    }
    return links;
}

TEST(property_file_storage)
{
    uint64_t seed = seed_from_env() + 1;
    rng_state = seed;
    unsigned prunes = 0, removed = 0, links = 0;
    for (unsigned hist = 0; hist < 20 && prop_failures == 0; hist++) {
        char *root = xasprintf("%s/h%u", test_tmpdir(), hist);
        struct cairn_storage *st = NULL;
        struct cairn_err err;
        CHECK_OK(cairn_storage_open(root, &st, &err), &err);
        struct hist h = {.now = 1700000000 + (int64_t)below(300 * DAY)};
        for (unsigned e = 0; st != NULL && e < 16; e++) {
            h.now += below(6) == 0 ? (int64_t)below(10 * DAY) : (int64_t)below(12 * 3600);
            if (below(3) != 0 || h.n == 0) {
                add_backup(&h);
                store_backup(st, root, &h.v[h.n - 1]);
                continue;
            }
            struct cairn_backup_list l;
            CHECK_OK(cairn_storage_list(st, &l, &err), &err);
            CHECK_EQ_INT(l.count, h.n);
            struct cairn_retention_policy p;
            random_policy(&p, h.now);
            struct cairn_retention_plan plan;
            CHECK_OK(cairn_retention_plan(&l, &p, &plan, &err), &err);
            check_plan(&l, &p, &plan, seed, hist);
            for (size_t i = 0; i < l.count; i++)
                if (plan.items[i].action == CAIRN_RETAIN_REMOVE)
                    CHECK_OK(cairn_storage_remove(st, l.items[i].name, &err), &err);
            removed += (unsigned)plan.removed;
            prunes++;
            qsort(h.v, h.n, sizeof(*h.v), cmp_sim); /* the order of l */
            apply_plan(&h, &plan);
            cairn_retention_plan_free(&plan);
            cairn_backup_list_free(&l);
            links += check_store(st, &h);
        }
        free(h.v);
        cairn_storage_free(st);
        free(root);
    }
    printf("20 stored histories: %u prunes, %u backups removed, %u parent links restored\n", prunes,
           removed, links);
    CHECK(prunes > 20 && removed > 10 && links > 10);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
