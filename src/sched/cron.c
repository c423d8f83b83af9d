/* Cron parsing and next-fire computation (UTC or a zone's wall clock, minute resolution). */
#include "cron.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct field {
    const char *what;
    int lo, hi;
    const char *const *names; /* names[i] is value lo+i, or NULL */
};

static const char *const k_months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const k_days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const struct field k_fields[5] = {
    {"minute", 0, 59, NULL},    {"hour", 0, 23, NULL},         {"day of month", 1, 31, NULL},
    {"month", 1, 12, k_months}, {"day of week", 0, 7, k_days},
};

/* A number or a name; advances *p. Returns 0 or -1. */
static int parse_value(const struct field *f, const char **p, int *out)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s) && v < 1000)
            v = v * 10 + (*s++ - '0');
        if (isdigit((unsigned char)*s))
            return -1;
        *out = (int)v;
        *p = s;
        return 0;
    }
    if (f->names == NULL)
        return -1;
    size_t n = f == &k_fields[3] ? 12 : 7;
    for (size_t i = 0; i < n; i++) {
        if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
            *out = f->lo + (int)i;
            *p = s + 3;
            return 0;
        }
    }
    return -1;
}

static int parse_field(int idx, const char *text, uint64_t *bits, int *star, struct cairn_err *err)
{
    const struct field *f = &k_fields[idx];
    *bits = 0;
    *star = text[0] == '*';
    const char *p = text;
    for (;;) {
        int lo, hi, step = 1, ranged = 0;
        if (*p == '*') {
            lo = f->lo;
            hi = idx == 4 ? 6 : f->hi;
            ranged = 1;
            p++;
        } else {
            if (parse_value(f, &p, &lo) != 0)
                goto bad;
            hi = lo;
            if (*p == '-') {
                p++;
                ranged = 1;
                if (parse_value(f, &p, &hi) != 0)
                    goto bad;
            }
        }
        if (*p == '/') {
            p++;
            if (!isdigit((unsigned char)*p) || parse_value(&k_fields[0], &p, &step) != 0 ||
                step <= 0)
                goto bad;
            /* "N/step" means N through the end of the range. */
            if (!ranged)
                hi = idx == 4 ? 6 : f->hi;
        }
        if (lo < f->lo || hi > f->hi || lo > hi)
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "cron %s field '%s': values must be %d-%d and ascending", f->what,
                                 text, f->lo, f->hi);
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << (idx == 4 && v == 7 ? 0 : v);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\0')
            return CAIRN_OK;
        goto bad;
    }
bad:
    return cairn_err_set(err, CAIRN_E_INVALID, "cron %s field '%s' is not valid", f->what, text);
}

int cron_parse(const char *expr, struct cairn_cron *c, struct cairn_err *err)
{
    static const struct {
        const char *name, *expr;
    } macros[] = {{"@hourly", "0 * * * *"},  {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
                  {"@weekly", "0 0 * * 0"},  {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
                  {"@annually", "0 0 1 1 *"}};
    memset(c, 0, sizeof(*c));
    while (isspace((unsigned char)*expr))
        expr++;
    if (*expr == '@') {
        for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
            size_t n = strlen(macros[i].name);
            if (strncasecmp(expr, macros[i].name, n) == 0 &&
                (expr[n] == '\0' || isspace((unsigned char)expr[n])))
                return cron_parse(macros[i].expr, c, err);
        }
        return cairn_err_set(err, CAIRN_E_INVALID, "unknown cron macro '%s'", expr);
    }
    char fields[5][64];
    int n = 0;
    const char *p = expr;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (n == 5 || (size_t)(p - start) >= sizeof(fields[0]))
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "cron expression '%s' needs exactly 5 fields "
                                 "(minute hour day-of-month month day-of-week)",
                                 expr);
        memcpy(fields[n], start, (size_t)(p - start));
        fields[n][p - start] = '\0';
        n++;
    }
    if (n != 5)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "cron expression '%s' needs exactly 5 fields "
                             "(minute hour day-of-month month day-of-week)",
                             expr);
    uint64_t b[5];
    int star[5];
    for (int i = 0; i < 5; i++) {
        int rc = parse_field(i, fields[i], &b[i], &star[i], err);
        if (rc != CAIRN_OK)
            return rc;
    }
    c->minute = b[0];
    c->hour = (uint32_t)b[1];
    c->dom = (uint32_t)b[2];
    c->month = (uint16_t)b[3];
    c->dow = (uint8_t)b[4];
    c->dom_star = star[2];
    c->dow_star = star[4];
    if (cron_next(c, 0) < 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "cron expression '%s' never fires", expr);
    return CAIRN_OK;
}

static int day_matches(const struct cairn_cron *c, const struct tm *tm)
{
    int dom = (c->dom >> tm->tm_mday) & 1;
    int dow = (c->dow >> tm->tm_wday) & 1;
    if (!c->dom_star && !c->dow_star)
        return dom || dow;
    return dom && dow;
}

int64_t cron_next(const struct cairn_cron *c, int64_t after)
{
    int64_t t = after - (((after % 60) + 60) % 60) + 60;
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    int limit_year = tm.tm_year + 100;
    for (;;) {
        if (tm.tm_year > limit_year)
            return -1;
        if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!day_matches(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!((c->hour >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = 0;
        } else if (!((c->minute >> tm.tm_min) & 1)) {
            tm.tm_min++;
        } else {
            return (int64_t)timegm(&tm);
        }
        tm.tm_sec = 0;
        tt = timegm(&tm); /* normalises overflowed fields and recomputes tm_wday */
        gmtime_r(&tt, &tm);
    }
}

/* The zone's wall clock at t, as seconds that read as that wall clock in UTC. */
static int64_t wall_of(const struct cron_zone *z, int64_t t)
{
    return t + cron_zone_offset(z, t);
}

/* The earliest instant after `after` whose wall clock is `wall`; for a wall clock skipped by
 * a change forward, the instant the gap ends (on the minute, as cron runs). -1 when wall exists
 * only at or before `after`. */
static int64_t instant_of(const struct cron_zone *z, int64_t wall, int64_t after)
{
    int64_t t[4], gap_end = -1;
    size_t n = cron_zone_instants(z, wall, t, &gap_end);
    for (size_t i = 0; i < n; i++)
        if (t[i] > after)
            return t[i];
    if (n > 0 || gap_end < 0)
        return -1;
    gap_end += (60 - ((gap_end % 60) + 60) % 60) % 60; /* up to a minute (changes since 1970 are) */
    return gap_end > after ? gap_end : -1;
}

int64_t cron_next_local(const struct cairn_cron *c, const struct cron_zone *z, int64_t after)
{
    /* Search matching wall-clock minutes, then map each to an instant; a wall clock that
     * maps to nothing after `after` (the repeat of an hour already passed) is skipped. */
    int64_t wall = wall_of(z, after);
    for (;;) {
        wall = cron_next(c, wall);
        if (wall < 0)
            return -1;
        int64_t t = instant_of(z, wall, after);
        if (t >= 0)
            return t;
    }
}

int64_t cron_timing_next(const struct cairn_timing *t, int64_t after)
{
    if (t->is_cron)
        return t->zone ? cron_next_local(&t->cron, t->zone, after) : cron_next(&t->cron, after);
    int64_t q = after / t->every;
    if (after < 0 && after % t->every != 0)
        q--; /* floor division */
    return (q + 1) * t->every;
}
