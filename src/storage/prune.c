/* Retention planning: which backups a policy keeps, and why. Age is the MANIFEST creation
 * time (names are free-form and never date a backup); a kept backup keeps its parent chain. */
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

/* A complete, considered, not future-dated backup: what the keep-* rules rank. */
struct cand {
    size_t idx;
    int64_t created;
    const char *name;
    const char *group;
};

/* Group, then newest first; equal times are ordered by name (the larger name is "newer") so
 * the plan never depends on the order the storage listed things in. */
static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    int g = strcmp(x->group, y->group);
    if (g != 0)
        return g;
    if (x->created != y->created)
        return x->created > y->created ? -1 : 1;
    return -strcmp(x->name, y->name);
}

/* Append "; <text>" (or "<text>") to *r. */
static void add_reason(char **r, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static void add_reason(char **r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char *n = *r ? xasprintf("%s; %s", *r, buf) : xstrdup(buf);
    free(*r);
    *r = n;
}

static void set_reason(char **r, const char *text)
{
    free(*r);
    *r = xstrdup(text);
}

/* The UTC period label of t for a rule: equal labels = same period. */
static void period_label(int rule, int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t n = 0;
    switch (rule) {
    case 0: n = strftime(out, cap, "%Y-%m-%dT%H", &tm); break;
    case 1: n = strftime(out, cap, "%Y-%m-%d", &tm); break;
    case 2: n = strftime(out, cap, "%G-W%V", &tm); break; /* ISO year and week */
    case 3: n = strftime(out, cap, "%Y-%m", &tm); break;
    default: n = strftime(out, cap, "%Y", &tm); break;
    }
    if (n == 0)
        snprintf(out, cap, "?");
}

static void format_duration(int64_t s, char *out, size_t cap)
{
    if (s % 86400 == 0)
        snprintf(out, cap, "%lldd", (long long)(s / 86400));
    else if (s % 3600 == 0)
        snprintf(out, cap, "%lldh", (long long)(s / 3600));
    else if (s % 60 == 0)
        snprintf(out, cap, "%lldm", (long long)(s / 60));
    else
        snprintf(out, cap, "%llds", (long long)s);
}

int cairn_retention_policy_keeps(const struct cairn_retention_policy *p)
{
    return p->keep_last || p->keep_hourly || p->keep_daily || p->keep_weekly || p->keep_monthly ||
           p->keep_yearly || p->keep_within > 0;
}

/* The keep-* rules over one group c[0..n), newest first. */
static void keep_group(const struct cand *c, size_t n, const struct cairn_retention_policy *p,
                       struct cairn_retention_decision *d)
{
    static const char *const rule_name[] = {"keep-hourly", "keep-daily", "keep-weekly",
                                            "keep-monthly", "keep-yearly"};
    const unsigned counts[] = {p->keep_hourly, p->keep_daily, p->keep_weekly, p->keep_monthly,
                               p->keep_yearly};
    for (size_t i = 0; i < n; i++)
        d[c[i].idx].action = CAIRN_RETAIN_REMOVE;
    d[c[0].idx].action = CAIRN_RETAIN_KEEP;
    add_reason(&d[c[0].idx].reason, "newest of group");
    for (size_t i = 0; i < n && i < p->keep_last; i++) {
        d[c[i].idx].action = CAIRN_RETAIN_KEEP;
        add_reason(&d[c[i].idx].reason, "keep-last %zu/%u", i + 1, p->keep_last);
    }
    for (int r = 0; r < 5; r++) {
        char last[32] = "", label[32];
        unsigned seen = 0;
        for (size_t i = 0; i < n && seen < counts[r]; i++) {
            period_label(r, c[i].created, label, sizeof(label));
            if (seen > 0 && strcmp(label, last) == 0)
                continue; /* an older backup of a period already kept */
            d[c[i].idx].action = CAIRN_RETAIN_KEEP;
            add_reason(&d[c[i].idx].reason, "%s %s", rule_name[r], label);
            memcpy(last, label, sizeof(last));
            seen++;
        }
    }
    if (p->keep_within > 0) {
        char dur[32];
        format_duration(p->keep_within, dur, sizeof(dur));
        for (size_t i = 0; i < n && c[i].created >= p->now - p->keep_within; i++) {
            d[c[i].idx].action = CAIRN_RETAIN_KEEP;
            add_reason(&d[c[i].idx].reason, "keep-within %s", dur);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (d[c[i].idx].action == CAIRN_RETAIN_REMOVE)
            set_reason(&d[c[i].idx].reason, "not kept by any rule");
}

/* ---- looking backups up by name ---- */

struct named {
    const char *name;
    size_t idx;
};

struct by_name {
    size_t n;
    struct named *v; /* sorted by name */
};

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

static void by_name_init(struct by_name *bn, const struct cairn_backup_list *l)
{
    bn->n = l->count;
    bn->v = xcalloc(l->count ? l->count : 1, sizeof(*bn->v));
    for (size_t i = 0; i < l->count; i++)
        bn->v[i] = (struct named){l->items[i].name, i};
    qsort(bn->v, bn->n, sizeof(*bn->v), cmp_named); /* hand-made lists need not be sorted */
}

/* Index of the backup called name, or -1. */
static long by_name_find(const struct by_name *bn, const char *name)
{
    size_t lo = 0, hi = bn->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(bn->v[mid].name, name);
        if (c == 0)
            return (long)bn->v[mid].idx;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- the plan ---- */

static int considered(const struct cairn_retention_policy *p, const char *name)
{
    if (p->name_glob != NULL && fnmatch(p->name_glob, name, 0) != 0)
        return 0;
    return p->filter == NULL || p->filter(name, p->filter_arg);
}

/* Anything not removed keeps its parent chain (across groups, filters and statuses). A parent
 * that is absent, incomplete or corrupt is reported on its child. */
static void keep_chains(const struct cairn_backup_list *l, struct cairn_retention_decision *d)
{
    struct by_name bn;
    by_name_init(&bn, l);
    uint8_t *done = xcalloc(l->count ? l->count : 1, 1);
    for (size_t i = 0; i < l->count; i++) {
        if (d[i].action == CAIRN_RETAIN_REMOVE || done[i])
            continue;
        size_t cur = i;
        done[cur] = 1;
        for (;;) {
            const struct cairn_backup_info *it = &l->items[cur];
            if (it->parent == NULL || it->parent[0] == '\0')
                break;
            long j = by_name_find(&bn, it->parent);
            if (j < 0) {
                add_reason(&d[cur].warning, "parent %s is missing: this backup cannot be restored",
                           it->parent);
                break;
            }
            if (l->items[j].status != CAIRN_BACKUP_COMPLETE)
                add_reason(&d[cur].warning, "parent %s is %s", it->parent,
                           cairn_backup_status_name(l->items[j].status));
            if (d[j].action == CAIRN_RETAIN_REMOVE) {
                d[j].action = CAIRN_RETAIN_KEEP;
                free(d[j].reason);
                d[j].reason = xasprintf("parent of %s", it->name);
            } else if (d[j].reason == NULL || strstr(d[j].reason, "parent of ") == NULL) {
                add_reason(&d[j].reason, "parent of %s", it->name);
            }
            if (done[j])
                break; /* its chain is walked already (also ends a loop of parents) */
            done[j] = 1;
            cur = (size_t)j;
        }
    }
    free(done);
    free(bn.v);
}

/* Incomplete and corrupt considered backups (today's rules, by name: they have no MANIFEST
 * time). newest is the largest name among complete considered backups, or NULL. */
static void decide_unreadable(const struct cairn_backup_info *it, const char *newest,
                              struct cairn_retention_decision *d)
{
    if (it->status == CAIRN_BACKUP_CORRUPT) {
        d->action = CAIRN_RETAIN_KEEP;
        add_reason(&d->reason, "corrupt, kept for inspection");
    } else if (newest == NULL) {
        d->action = CAIRN_RETAIN_KEEP;
        add_reason(&d->reason, "incomplete, no complete backup yet");
    } else if (strcmp(it->name, newest) < 0) {
        d->action = CAIRN_RETAIN_REMOVE;
        add_reason(&d->reason, "incomplete, older than newest complete %s", newest);
    } else {
        d->action = CAIRN_RETAIN_KEEP;
        add_reason(&d->reason, "incomplete, may still be running (after newest complete %s)",
                   newest);
    }
}

/* First pass: filter, future-dated, unreadable ones; fills c with the rankable backups. */
static size_t classify(const struct cairn_backup_list *l, const struct cairn_retention_policy *p,
                       struct cairn_retention_decision *d, struct cand *c)
{
    int64_t slack = p->future_slack > 0 ? p->future_slack : CAIRN_RETENTION_FUTURE_SLACK;
    const char *newest = NULL;
    size_t n = 0;
    for (size_t i = 0; i < l->count; i++) {
        const struct cairn_backup_info *it = &l->items[i];
        if (!considered(p, it->name)) {
            d[i].action = CAIRN_RETAIN_SKIP;
            add_reason(&d[i].reason, "not matched by the name filter");
        } else if (it->status == CAIRN_BACKUP_COMPLETE) {
            if (newest == NULL || strcmp(it->name, newest) > 0)
                newest = it->name;
            if (it->created > p->now + slack) {
                char t[64];
                format_rfc3339(it->created, 0, t, sizeof(t));
                d[i].action = CAIRN_RETAIN_KEEP;
                add_reason(&d[i].reason, "future-dated");
                add_reason(&d[i].warning,
                           "created %s, in the future (clock step?): kept, counted by no rule", t);
            } else {
                const char *g = p->group_by_source && it->source ? it->source : "";
                c[n++] = (struct cand){i, it->created, it->name, g};
            }
        }
    }
    for (size_t i = 0; i < l->count; i++)
        if (d[i].action != CAIRN_RETAIN_SKIP && l->items[i].status != CAIRN_BACKUP_COMPLETE)
            decide_unreadable(&l->items[i], newest, &d[i]);
    return n;
}

int cairn_retention_plan(const struct cairn_backup_list *l, const struct cairn_retention_policy *p,
                         struct cairn_retention_plan *out, struct cairn_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!cairn_retention_policy_keeps(p))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "this retention policy keeps nothing: give keep-last, keep-hourly, "
                             "keep-daily, keep-weekly, keep-monthly, keep-yearly or keep-within");
    size_t n = l->count;
    out->count = n;
    out->items = xcalloc(n ? n : 1, sizeof(*out->items));
    struct cairn_retention_decision *d = out->items;
    struct cand *c = xcalloc(n ? n : 1, sizeof(*c));
    size_t nc = classify(l, p, d, c);
    qsort(c, nc, sizeof(*c), cmp_cand);
    for (size_t g = 0; g < nc;) {
        size_t e = g + 1;
        while (e < nc && strcmp(c[e].group, c[g].group) == 0)
            e++;
        keep_group(c + g, e - g, p, d);
        g = e;
    }
    free(c);
    keep_chains(l, d);
    for (size_t i = 0; i < n; i++) {
        out->removed += d[i].action == CAIRN_RETAIN_REMOVE;
        out->warnings += d[i].warning != NULL;
    }
    return CAIRN_OK;
}

void cairn_retention_plan_free(struct cairn_retention_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; i < plan->count; i++) {
        free(plan->items[i].reason);
        free(plan->items[i].warning);
    }
    free(plan->items);
    memset(plan, 0, sizeof(*plan));
}

size_t cairn_prune_plan(const struct cairn_backup_list *l, const struct cairn_prune_policy *p,
                        uint8_t *remove)
{
    struct cairn_retention_policy rp = {
        .keep_last = p->keep_last ? p->keep_last : 1, /* the newest is always kept anyway */
        .keep_daily = p->keep_daily,
        .keep_weekly = p->keep_weekly,
        .now = (int64_t)time(NULL),
    };
    struct cairn_retention_plan plan;
    memset(remove, 0, l->count);
    if (cairn_retention_plan(l, &rp, &plan, NULL) != CAIRN_OK)
        return 0;
    for (size_t i = 0; i < l->count; i++)
        remove[i] = plan.items[i].action == CAIRN_RETAIN_REMOVE;
    size_t removed = plan.removed;
    cairn_retention_plan_free(&plan);
    return removed;
}

size_t cairn_backup_dependents(const struct cairn_backup_list *l, size_t idx, uint8_t *mark)
{
    /* state: 0 unknown, 1 depends on idx, 2 does not, 3 on the current walk (a loop). */
    memset(mark, 0, l->count);
    struct by_name bn;
    by_name_init(&bn, l);
    uint8_t *st = xcalloc(l->count ? l->count : 1, 1);
    size_t *path = xcalloc(l->count ? l->count : 1, sizeof(*path));
    st[idx] = 1;
    size_t found = 0;
    for (size_t i = 0; i < l->count; i++) {
        size_t np = 0, cur = i;
        uint8_t res = 2;
        while (st[cur] == 0) {
            st[cur] = 3;
            path[np++] = cur;
            const char *par = l->items[cur].parent;
            long j = par && *par ? by_name_find(&bn, par) : -1;
            if (j < 0)
                break;
            cur = (size_t)j;
        }
        if (st[cur] == 1)
            res = 1;
        for (size_t k = 0; k < np; k++) {
            st[path[k]] = res;
            if (res == 1 && path[k] != idx) {
                mark[path[k]] = 1;
                found++;
            }
        }
    }
    free(path);
    free(st);
    free(bn.v);
    return found;
}
