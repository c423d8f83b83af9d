/* Time zones from TZif files (RFC 8536): transitions, then the footer's POSIX TZ rule. */
#include "zone.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* A POSIX TZ rule date: Jn (julian 1-365, no Feb 29), n (0-365) or Mm.w.d. */
struct rule_date {
    char kind;    /* 'J', 'D' (zero-based day) or 'M' */
    int a, b, c;  /* J/D: day; M: month, week (5 = last), weekday (0 = Sunday) */
    int32_t time; /* seconds after local midnight, -167h to 167h */
};

/* The footer: std (and dst) offsets east of UTC, and when dst applies. */
struct rule {
    int32_t std_off, dst_off;
    int has_dst;
    struct rule_date start, end;
};

struct cron_zone {
    int64_t *trans; /* transition instants, ascending */
    uint8_t *idx;   /* the local time type from each transition on */
    size_t n_trans;
    int32_t *off; /* per local time type: offset east of UTC */
    size_t n_types;
    int has_rule; /* a footer rule governs instants after the last transition */
    struct rule rule;
};

/* ---- POSIX TZ strings (the TZif footer) ---- */

static int parse_name(const char **p)
{
    const char *s = *p;
    if (*s == '<') {
        const char *e = strchr(s, '>');
        if (e == NULL || e - s < 4)
            return -1;
        *p = e + 1;
        return 0;
    }
    while (isalpha((unsigned char)*s))
        s++;
    if (s - *p < 3)
        return -1;
    *p = s;
    return 0;
}

/* [+-]h[h][:mm[:ss]] with hours up to max_h, as seconds. */
static int parse_hms(const char **p, int max_h, int32_t *out)
{
    const char *s = *p;
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    int32_t v = 0, part[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0 && *s != ':')
            break;
        if (i > 0)
            s++;
        if (!isdigit((unsigned char)*s))
            return -1;
        for (int d = 0; isdigit((unsigned char)*s); d++, s++) {
            if (d == 3)
                return -1;
            part[i] = part[i] * 10 + (*s - '0');
        }
    }
    if (part[0] > max_h || part[1] > 59 || part[2] > 59)
        return -1;
    v = part[0] * 3600 + part[1] * 60 + part[2];
    *out = sign * v;
    *p = s;
    return 0;
}

static int parse_num(const char **p, int lo, int hi, int *out)
{
    const char *s = *p;
    int v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (int d = 0; isdigit((unsigned char)*s); d++, s++) {
        if (d == 3)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    *p = s;
    return 0;
}

static int parse_date(const char **p, struct rule_date *d)
{
    const char *s = *p;
    int ok;
    if (*s == 'J') {
        s++;
        d->kind = 'J';
        ok = parse_num(&s, 1, 365, &d->a) == 0;
    } else if (*s == 'M') {
        s++;
        d->kind = 'M';
        ok = parse_num(&s, 1, 12, &d->a) == 0 && *s++ == '.' && parse_num(&s, 1, 5, &d->b) == 0 &&
             *s++ == '.' && parse_num(&s, 0, 6, &d->c) == 0;
    } else {
        d->kind = 'D';
        ok = parse_num(&s, 0, 365, &d->a) == 0;
    }
    if (!ok)
        return -1;
    d->time = 2 * 3600;
    if (*s == '/') {
        s++;
        if (parse_hms(&s, 167, &d->time) != 0) /* RFC 8536 extends POSIX's 24 hours */
            return -1;
    }
    *p = s;
    return 0;
}

/* "std offset [dst [offset] [,start[/time],end[/time]]]"; offsets are POSIX's, west of UTC. */
static int parse_rule(const char *s, struct rule *r)
{
    int32_t w;
    memset(r, 0, sizeof(*r));
    if (parse_name(&s) != 0 || parse_hms(&s, 24, &w) != 0)
        return -1;
    r->std_off = -w;
    if (*s == '\0')
        return 0;
    if (parse_name(&s) != 0)
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        if (parse_hms(&s, 24, &w) != 0)
            return -1;
        r->dst_off = -w;
    }
    if (*s == '\0') { /* no rule: POSIX leaves it to the implementation; glibc's is the US one */
        r->start = (struct rule_date){'M', 3, 2, 0, 2 * 3600};
        r->end = (struct rule_date){'M', 11, 1, 0, 2 * 3600};
        return 0;
    }
    if (*s++ != ',' || parse_date(&s, &r->start) != 0 || *s++ != ',' ||
        parse_date(&s, &r->end) != 0 || *s != '\0')
        return -1;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* The year (proleptic Gregorian) holding day `days` since 1970-01-01. */
static int64_t year_of_days(int64_t days)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Local seconds (since 1970 on the wall clock) at which date d falls in year y. */
static int64_t rule_local(const struct rule_date *d, int64_t y)
{
    int64_t day;
    if (d->kind == 'J') {
        day = days_from_civil(y, 1, 1) + d->a - 1 + (is_leap(y) && d->a >= 60);
    } else if (d->kind == 'D') {
        day = days_from_civil(y, 1, 1) + d->a;
    } else {
        static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int len = mdays[d->a - 1] + (d->a == 2 && is_leap(y));
        int64_t first = days_from_civil(y, d->a, 1);
        int wday = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
        int mday = 1 + (d->c - wday + 7) % 7 + 7 * (d->b - 1);
        while (mday > len)
            mday -= 7;
        day = first + mday - 1;
    }
    return day * 86400 + d->time;
}

/* The rule's changes in years y-1 .. y+1, in order: at[k] switches to off[k]. A change to
 * standard time happens on the daylight clock and the other way round. */
static size_t rule_changes(const struct rule *r, int64_t y, int64_t at[6], int32_t off[6])
{
    size_t n = 0;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t s = rule_local(&r->start, yy) - r->std_off;
        int64_t e = rule_local(&r->end, yy) - r->dst_off;
        int start_first = s < e;
        at[n] = start_first ? s : e;
        off[n++] = start_first ? r->dst_off : r->std_off;
        at[n] = start_first ? e : s;
        off[n++] = start_first ? r->std_off : r->dst_off;
    }
    return n;
}

static int32_t rule_offset(const struct rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    int64_t at[6];
    int32_t off[6];
    size_t n = rule_changes(r, year_of_days(floor_div(t + r->std_off, 86400)), at, off);
    /* The latest change at or before t; of two at the same instant (year-round daylight time
     * written as "J365/25" ending where the next year's start begins) the later one. */
    int32_t cur = r->std_off;
    int64_t best = INT64_MIN;
    for (size_t i = 0; i < n; i++)
        if (at[i] <= t && at[i] >= best) {
            best = at[i];
            cur = off[i];
        }
    return cur;
}

static int64_t rule_next(const struct rule *r, int64_t t)
{
    if (!r->has_dst)
        return INT64_MAX;
    /* Every rule changes at most twice a year, so the next change is in this year (on the
     * standard clock) or the next: rule_changes(y + 1) covers y .. y + 2. A change that keeps
     * the offset (daylight time all year, "J365/25") is none. */
    int64_t at[6];
    int32_t off[6];
    size_t n = rule_changes(r, year_of_days(floor_div(t + r->std_off, 86400)) + 1, at, off);
    int64_t best = INT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (at[i] > t && at[i] < best && rule_offset(r, at[i]) != rule_offset(r, at[i] - 1))
            best = at[i];
    return best;
}

/* ---- TZif ---- */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t get64(const uint8_t *p)
{
    return (int64_t)((uint64_t)get32(p) << 32 | get32(p + 4));
}

struct counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static size_t block_size(const struct counts *c, size_t tsize)
{
    return (size_t)c->time * (tsize + 1) + (size_t)c->type * 6 + c->chars +
           (size_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

static int read_header(const uint8_t *p, size_t len, struct counts *c)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    c->isut = get32(p + 20);
    c->isstd = get32(p + 24);
    c->leap = get32(p + 28);
    c->time = get32(p + 32);
    c->type = get32(p + 36);
    c->chars = get32(p + 40);
    /* Sizes bounded well below overflow; the file is at most 1 MiB anyway. */
    if (c->type == 0 || c->type > 256 || c->chars == 0 || c->time > 1000000 || c->leap > 1000000 ||
        (c->isut != 0 && c->isut != c->type) || (c->isstd != 0 && c->isstd != c->type))
        return -1;
    return 0;
}

/* The data block at p (after its header), with tsize-byte times. */
static int read_block(struct cron_zone *z, const uint8_t *p, const struct counts *c, size_t tsize)
{
    z->n_trans = c->time;
    z->n_types = c->type;
    z->trans = xcalloc(c->time + 1, sizeof(*z->trans));
    z->idx = xcalloc(c->time + 1, 1);
    z->off = xcalloc(c->type, sizeof(*z->off));
    for (size_t i = 0; i < c->time; i++) {
        z->trans[i] = tsize == 8 ? get64(p + i * 8) : (int32_t)get32(p + i * 4);
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return -1;
    }
    const uint8_t *ix = p + (size_t)c->time * tsize;
    for (size_t i = 0; i < c->time; i++)
        if ((z->idx[i] = ix[i]) >= c->type)
            return -1;
    const uint8_t *tt = ix + c->time;
    for (size_t i = 0; i < c->type; i++) {
        int32_t off = (int32_t)get32(tt + i * 6);
        if (off < -CRON_ZONE_MAX_OFFSET || off > CRON_ZONE_MAX_OFFSET || tt[i * 6 + 4] > 1)
            return -1;
        z->off[i] = off;
    }
    return 0;
}

/* The footer after the 64-bit block: "\n" TZ string "\n"; an empty one means none. */
static int read_footer(struct cron_zone *z, const uint8_t *p, const uint8_t *end, const char *path,
                       struct cairn_err *err)
{
    if (p >= end || *p != '\n')
        return CAIRN_OK; /* none: the last transition's type stays in effect */
    const uint8_t *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
    char tz[128];
    size_t n = nl ? (size_t)(nl - p - 1) : sizeof(tz);
    if (n >= sizeof(tz) || memchr(p + 1, '\0', n) != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s' is a damaged TZif zone file", path);
    memcpy(tz, p + 1, n);
    tz[n] = '\0';
    if (n > 0 && parse_rule(tz, &z->rule) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s': TZ rule '%s' is not valid", path, tz);
    z->has_rule = n > 0;
    return CAIRN_OK;
}

int cron_zone_parse(const uint8_t *data, size_t len, const char *path, struct cron_zone **out,
                    struct cairn_err *err)
{
    *out = NULL;
    if (len < 4 || memcmp(data, "TZif", 4) != 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s' is not a TZif zone file", path);
    struct counts c;
    const uint8_t *p = data, *end = data + len;
    size_t tsize = 4;
    int ok = read_header(p, len, &c) == 0 && 44 + block_size(&c, 4) <= len;
    if (ok && data[4] >= '2') { /* skip the 32-bit block: the second one has 64-bit times */
        p += 44 + block_size(&c, 4);
        tsize = 8;
        ok = read_header(p, (size_t)(end - p), &c) == 0 &&
             44 + block_size(&c, 8) <= (size_t)(end - p);
    }
    struct cron_zone *z = xcalloc(1, sizeof(*z));
    if (!ok || read_block(z, p + 44, &c, tsize) != 0) {
        cron_zone_free(z);
        return cairn_err_set(err, CAIRN_E_INVALID, "'%s' is a damaged TZif zone file", path);
    }
    int rc = tsize == 8 ? read_footer(z, p + 44 + block_size(&c, 8), end, path, err) : CAIRN_OK;
    if (rc != CAIRN_OK) {
        cron_zone_free(z);
        return rc;
    }
    *out = z;
    return CAIRN_OK;
}

int cron_zone_load(const char *path, struct cron_zone **out, struct cairn_err *err)
{
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_file_max(path, 1u << 20, &data, &len, err);
    if (rc == CAIRN_OK)
        rc = cron_zone_parse(data, len, path, out, err);
    free(data);
    return rc;
}

void cron_zone_free(struct cron_zone *z)
{
    if (z == NULL)
        return;
    free(z->trans);
    free(z->idx);
    free(z->off);
    free(z);
}

/* The local time type before the first transition: type 0 (RFC 8536, 3.2). */
int32_t cron_zone_offset(const struct cron_zone *z, int64_t t)
{
    if (z->n_trans == 0 || t < z->trans[0])
        return z->n_trans == 0 && z->has_rule ? rule_offset(&z->rule, t) : z->off[0];
    if (t >= z->trans[z->n_trans - 1] && z->has_rule)
        return rule_offset(&z->rule, t);
    size_t lo = 0, hi = z->n_trans; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->off[z->idx[lo]];
}

int64_t cron_zone_next_change(const struct cron_zone *z, int64_t t)
{
    if (z->n_trans == 0)
        return z->has_rule ? rule_next(&z->rule, t) : INT64_MAX;
    if (t < z->trans[0])
        return z->trans[0];
    if (t >= z->trans[z->n_trans - 1])
        return z->has_rule ? rule_next(&z->rule, t) : INT64_MAX;
    size_t lo = 0, hi = z->n_trans; /* the first transition after t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->trans[hi];
}

size_t cron_zone_instants(const struct cron_zone *z, int64_t wall, int64_t out[4], int64_t *gap_end)
{
    /* An instant reading `wall` lies within CRON_ZONE_MAX_OFFSET of it; each offset the zone
     * has in that span gives one candidate, kept when the zone has that offset at it. */
    size_t n = 0;
    int64_t t = wall - CRON_ZONE_MAX_OFFSET, last = wall + CRON_ZONE_MAX_OFFSET;
    for (int32_t off = cron_zone_offset(z, t);;) {
        int64_t cand = wall - off;
        int dup = 0;
        for (size_t i = 0; i < n; i++)
            dup |= out[i] == cand;
        if (!dup && n < 4 && cron_zone_offset(z, cand) == off) {
            size_t i = n++;
            for (; i > 0 && out[i - 1] > cand; i--)
                out[i] = out[i - 1];
            out[i] = cand;
        }
        int64_t next = cron_zone_next_change(z, t);
        if (next > last)
            break;
        int32_t after = cron_zone_offset(z, next);
        /* A change forward skips the wall clock from next + off up to next + after. */
        if (gap_end != NULL && after > off && wall >= next + off && wall < next + after)
            *gap_end = next;
        t = next;
        off = after;
    }
    return n;
}
