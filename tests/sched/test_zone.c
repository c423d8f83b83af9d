/* Time zones from TZif files (sched/zone.c): offsets agree with the C library's localtime_r for
 * real zones and for POSIX TZ rules, transitions are found, damaged files are refused. The C
 * library is the reference here only: cairnd itself never sets or reads TZ. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "sched/zone.h"
#include "test.h"

/* Every `step` seconds from `from` to 2100, the zone's offset against localtime_r under TZ=tz;
 * the first few differences fail the test. */
static void compare_with_libc(const struct cron_zone *z, const char *tz, int64_t from, int64_t step)
{
    setenv("TZ", tz, 1);
    tzset();
    int bad = 0;
    for (int64_t t = from; t < 4102444800LL && bad < 3; t += step) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        if (tm.tm_gmtoff != cron_zone_offset(z, t)) {
            test_fail(__FILE__, __LINE__, "%s at %lld: libc %ld, zone %d", tz, (long long)t,
                      tm.tm_gmtoff, cron_zone_offset(z, t));
            bad++;
        }
    }
    unsetenv("TZ");
    tzset();
}

static struct cron_zone *load(const char *name)
{
    char *path = xasprintf("/usr/share/zoneinfo/%s", name);
    struct cron_zone *z = NULL;
    struct cairn_err err;
    if (cron_zone_load(path, &z, &err) != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "loading %s: %s", name, err.msg);
    free(path);
    return z;
}

/* The data file's transitions up to 2037 and its footer rule after them; both hemispheres,
 * negative daylight time (Dublin), a 30-minute one (Lord Howe), 45-minute offsets (Chatham),
 * rule times outside 0-24h (Nuuk), and zones that changed their standard offset. */
TEST(real_zones_agree_with_libc)
{
    static const char *const zones[] = {"Europe/Berlin",       "America/New_York",
                                        "Australia/Sydney",    "Europe/Dublin",
                                        "Australia/Lord_Howe", "Pacific/Chatham",
                                        "America/Nuuk",        "Asia/Tokyo",
                                        "Africa/Casablanca",   "America/Sao_Paulo",
                                        "Asia/Kolkata",        "Antarctica/Troll",
                                        "Africa/Juba",         "UTC"};
    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
        char *path = xasprintf("/usr/share/zoneinfo/%s", zones[i]);
        int present = access(path, R_OK) == 0;
        free(path);
        if (!present) {
            MISSING("no /usr/share/zoneinfo (package tzdata)");
        }
        struct cron_zone *z = load(zones[i]);
        if (z == NULL)
            continue;
        compare_with_libc(z, zones[i], -2208988800LL, 6 * 3600 + 37); /* from 1900 */
        /* Around every change: the second before and the second of it. */
        int64_t t = -2208988800LL, n = 0;
        setenv("TZ", zones[i], 1);
        tzset();
        while ((t = cron_zone_next_change(z, t)) < 4102444800LL && n++ < 10000) {
            time_t a = (time_t)(t - 1), b = (time_t)t;
            struct tm ta, tb;
            localtime_r(&a, &ta);
            localtime_r(&b, &tb);
            if (ta.tm_gmtoff != cron_zone_offset(z, t - 1) ||
                tb.tm_gmtoff != cron_zone_offset(z, t))
                test_fail(__FILE__, __LINE__, "%s: change at %lld", zones[i], (long long)t);
        }
        unsetenv("TZ");
        tzset();
        cron_zone_free(z);
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A version 2 TZif file with no transitions, one local time type (utoff) and footer `tz`: what
 * a "slim" tzdata build writes for a zone whose rule has always held. */
static size_t slim_tzif(uint8_t *buf, int32_t utoff, const char *tz)
{
    size_t n = 0;
    for (int block = 0; block < 2; block++) {
        memset(buf + n, 0, 44);
        memcpy(buf + n, "TZif2", 5);
        put32(buf + n + 36, 1); /* typecnt */
        put32(buf + n + 40, 4); /* charcnt */
        n += 44;
        put32(buf + n, (uint32_t)utoff);
        buf[n + 4] = 0; /* isdst */
        buf[n + 5] = 0; /* desigidx */
        memcpy(buf + n + 6, "STD", 4);
        n += 10;
    }
    n += (size_t)sprintf((char *)buf + n, "\n%s\n", tz);
    return n;
}

/* POSIX TZ rules (the footer), against libc given the same string as TZ: M, J and zero-based
 * day rules, rule times beyond 24h and negative, southern and negative daylight time, names
 * in <>. */
TEST(footer_rules_agree_with_libc)
{
    static const struct {
        const char *tz;
        int32_t std;
    } rules[] = {
        {"CET-1CEST,M3.5.0,M10.5.0/3", 3600},
        {"EST5EDT,M3.2.0,M11.1.0", -5 * 3600},
        {"AEST-10AEDT,M10.1.0,M4.1.0/3", 10 * 3600},
        {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -2 * 3600},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600},
        {"<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45", 12 * 3600 + 45 * 60},
        {"XXX3YYY,J60/2,J300/2", -3 * 3600},
        {"XXX3YYY,59/2,299/2", -3 * 3600},
        {"<+0330>-3:30<+0430>,J79/24,J263/24", 3 * 3600 + 30 * 60},
        {"<+11>-11<+12>,M10.1.0,M4.1.0/3", 11 * 3600},
        {"JST-9", 9 * 3600},
        {"<-03>3", -3 * 3600},
    };
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        uint8_t buf[512];
        size_t len = slim_tzif(buf, rules[i].std, rules[i].tz);
        struct cron_zone *z = NULL;
        struct cairn_err err;
        CHECK_OK(cron_zone_parse(buf, len, rules[i].tz, &z, &err), &err);
        if (z == NULL)
            continue;
        /* From 1970: glibc applies a TZ string's rule to earlier years as if they were 1970. */
        compare_with_libc(z, rules[i].tz, 0, 5 * 3600 + 11);
        cron_zone_free(z);
    }
}

/* Daylight time all year, written as RFC 8536 3.3.1 says ("starts January 1 at 00:00 and ends
 * December 31 at 24:00 plus the difference"): daylight time at every instant, the turn of the
 * year too (where glibc, given the string as TZ, reads standard time for the hours between
 * 00:00Z and the local new year), and no change ever. */
TEST(daylight_time_all_year)
{
    uint8_t buf[512];
    size_t len = slim_tzif(buf, -5 * 3600, "EST5EDT,0/0,J365/25");
    struct cron_zone *z = NULL;
    struct cairn_err err;
    CHECK_OK(cron_zone_parse(buf, len, "edt", &z, &err), &err);
    if (z == NULL)
        return;
    static const int64_t at[] = {0,          31537261,   1767225600 - 1, 1767225600, 1767243600 - 1,
                                 1767243600, 1783000000, 4102444799};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        CHECK_EQ_INT(cron_zone_offset(z, at[i]), -4 * 3600);
    CHECK_EQ_INT(cron_zone_next_change(z, 1767225600), INT64_MAX);
    cron_zone_free(z);
}

/* The instants a wall clock reads: none in a gap (with where it ends), two in a repeat. */
TEST(wall_clock_instants)
{
    uint8_t buf[512];
    size_t len = slim_tzif(buf, 3600, "CET-1CEST,M3.5.0,M10.5.0/3");
    struct cron_zone *z = NULL;
    struct cairn_err err;
    CHECK_OK(cron_zone_parse(buf, len, "berlin", &z, &err), &err);
    if (z == NULL)
        return;
    int64_t t[4], gap = -1;
    /* 2026-03-29 02:30 does not exist; the gap ends at 01:00Z. */
    CHECK_EQ_INT(cron_zone_instants(z, 1774751400, t, &gap), 0);
    CHECK_EQ_INT(gap, 1774746000);
    /* 2026-10-25 02:30 exists twice: 00:30Z and 01:30Z. */
    CHECK_EQ_INT(cron_zone_instants(z, 1792895400, t, NULL), 2);
    CHECK_EQ_INT(t[0], 1792888200);
    CHECK_EQ_INT(t[1], 1792891800);
    /* An ordinary one: 2026-01-10 12:00 is 11:00Z. */
    CHECK_EQ_INT(cron_zone_instants(z, 1768046400, t, NULL), 1);
    CHECK_EQ_INT(t[0], 1768042800);
    cron_zone_free(z);
}

TEST(damaged_files_are_refused)
{
    struct cron_zone *z = NULL;
    struct cairn_err err;
    CHECK_ERR(cron_zone_parse((const uint8_t *)"root:x:0:0", 10, "p", &z, &err), CAIRN_E_INVALID,
              &err, "'p' is not a TZif zone file");
    uint8_t buf[512];
    size_t len = slim_tzif(buf, 3600, "CET-1CEST,M3.5.0,M10.5.0/3");
    for (size_t cut = 4; cut < 108; cut += 7)
        CHECK_ERR(cron_zone_parse(buf, cut, "cut", &z, &err), CAIRN_E_INVALID, &err,
                  "'cut' is a damaged TZif zone file");
    len = slim_tzif(buf, 3600, "CET-1CEST,M13.5.0,M10.5.0/3");
    CHECK_ERR(cron_zone_parse(buf, len, "r", &z, &err), CAIRN_E_INVALID, &err,
              "TZ rule 'CET-1CEST,M13.5.0,M10.5.0/3' is not valid");
    len = slim_tzif(buf, 30 * 3600, "CET-1");
    CHECK_ERR(cron_zone_parse(buf, len, "o", &z, &err), CAIRN_E_INVALID, &err, "damaged");
    CHECK(z == NULL);
    CHECK_ERR(cron_zone_load("/nonexistent/zone", &z, &err), CAIRN_E_NOTFOUND, &err, "");
    CHECK_EQ_INT(cron_zone_load("/nonexistent/zone", &z, NULL), CAIRN_E_NOTFOUND);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
