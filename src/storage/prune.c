/* Retention planning: keep-last / keep-daily / keep-weekly over complete backups only. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

struct cand {
    size_t idx;
    int64_t created;
    const char *name;
};

/* Newest first. Names sort by time (cairn_backup_name_now), and the list order is what users
 * see and what decides which incomplete backups are old, so order by name, not by the
 * MANIFEST's clock. */
static int cmp_newest(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return -strcmp(x->name, y->name);
}

static long day_key(int64_t t)
{
    return (long)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
}

static long week_key(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char buf[16];
    strftime(buf, sizeof(buf), "%G%V", &tm); /* ISO year and week */
    return strtol(buf, NULL, 10);
}

/* Keep the newest backup of each of the first `count` distinct periods. */
static void keep_per_period(const struct cand *c, size_t n, unsigned count, long (*key)(int64_t),
                            uint8_t *keep)
{
    long last = 0;
    unsigned seen = 0;
    for (size_t i = 0; i < n && seen < count; i++) {
        long k = key(c[i].created);
        if (seen > 0 && k == last)
            continue;
        keep[i] = 1;
        last = k;
        seen++;
    }
}

size_t cairn_prune_plan(const struct cairn_backup_list *l, const struct cairn_prune_policy *p,
                        uint8_t *remove)
{
    memset(remove, 0, l->count);
    size_t n = 0;
    struct cand *c = cairn_xcalloc(l->count ? l->count : 1, sizeof(*c));
    for (size_t i = 0; i < l->count; i++)
        if (l->items[i].status == CAIRN_BACKUP_COMPLETE)
            c[n++] = (struct cand){i, l->items[i].created, l->items[i].name};
    if (n == 0) {
        free(c);
        return 0; /* nothing complete: removing anything could lose the only data */
    }
    qsort(c, n, sizeof(*c), cmp_newest);
    uint8_t *keep = cairn_xcalloc(n, 1);
    keep[0] = 1; /* the newest complete backup, always */
    for (size_t i = 0; i < n && i < p->keep_last; i++)
        keep[i] = 1;
    keep_per_period(c, n, p->keep_daily, day_key, keep);
    keep_per_period(c, n, p->keep_weekly, week_key, keep);
    size_t removed = 0;
    for (size_t i = 0; i < n; i++)
        if (!keep[i]) {
            remove[c[i].idx] = 1;
            removed++;
        }
    /* Incomplete backups that sort before the newest complete one are failed attempts; newer
     * ones may still be running. Corrupt ones are left for a human. */
    const char *newest = c[0].name;
    for (size_t i = 0; i < l->count; i++)
        if (l->items[i].status == CAIRN_BACKUP_INCOMPLETE && strcmp(l->items[i].name, newest) < 0) {
            remove[i] = 1;
            removed++;
        }
    free(keep);
    free(c);
    return removed;
}
