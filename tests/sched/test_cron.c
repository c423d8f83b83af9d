/* Cron parsing and next-fire times, intervals, catch-up windows, cap, rate limit, config. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "sched/config.h"
#include "sched/cron.h"
#include "sched/plan.h"
#include "test.h"

static int64_t ts(const char *s)
{
    int64_t sec;
    long ns;
    if (parse_rfc3339(s, &sec, &ns) != 0)
        test_fail(__FILE__, __LINE__, "bad time %s", s);
    return sec;
}

/* next(expr, after) formatted, or "never"/"invalid: msg"; on the UTC clock or zone's. */
static const char *next_on(const char *expr, const char *after, const struct cron_zone *zone)
{
    static char out[256];
    struct cairn_timing t = {.is_cron = 1, .zone = zone};
    struct cairn_err err;
    if (cron_parse(expr, &t.cron, &err) != CAIRN_OK) {
        snprintf(out, sizeof(out), "invalid: %s", err.msg);
        return out;
    }
    int64_t at = cron_timing_next(&t, ts(after));
    if (at < 0)
        return "never";
    format_rfc3339(at, 0, out, sizeof(out));
    return out;
}

static const char *next_of(const char *expr, const char *after)
{
    return next_on(expr, after, NULL);
}

TEST(cron_next_basic)
{
    CHECK_EQ_STR(next_of("*/15 * * * *", "2026-01-01T10:07:00Z"), "2026-01-01T10:15:00Z");
    CHECK_EQ_STR(next_of("*/15 * * * *", "2026-01-01T10:45:00Z"), "2026-01-01T11:00:00Z");
    /* Strictly after, including within the same minute. */
    CHECK_EQ_STR(next_of("@hourly", "2026-01-01T10:00:00Z"), "2026-01-01T11:00:00Z");
    CHECK_EQ_STR(next_of("0 * * * *", "2026-01-01T09:59:59Z"), "2026-01-01T10:00:00Z");
    CHECK_EQ_STR(next_of("5-10/2 * * * *", "2026-01-01T10:07:00Z"), "2026-01-01T10:09:00Z");
    CHECK_EQ_STR(next_of("5-10/2 * * * *", "2026-01-01T10:09:00Z"), "2026-01-01T11:05:00Z");
    CHECK_EQ_STR(next_of("50/5 * * * *", "2026-01-01T10:56:00Z"), "2026-01-01T11:50:00Z");
    CHECK_EQ_STR(next_of("0 3,15 * * *", "2026-01-01T03:00:00Z"), "2026-01-01T15:00:00Z");
    CHECK_EQ_STR(next_of("@daily", "2026-01-01T00:00:00Z"), "2026-01-02T00:00:00Z");
    CHECK_EQ_STR(next_of("@weekly", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
    CHECK_EQ_STR(next_of("@monthly", "2026-01-15T00:00:00Z"), "2026-02-01T00:00:00Z");
    CHECK_EQ_STR(next_of("@yearly", "2026-01-01T00:00:00Z"), "2027-01-01T00:00:00Z");
}

TEST(cron_next_month_and_day_edges)
{
    /* The 31st skips months without one. */
    CHECK_EQ_STR(next_of("0 0 31 * *", "2026-01-31T00:00:00Z"), "2026-03-31T00:00:00Z");
    CHECK_EQ_STR(next_of("0 0 31 * *", "2026-04-01T00:00:00Z"), "2026-05-31T00:00:00Z");
    /* Feb 29 only in leap years. */
    CHECK_EQ_STR(next_of("0 0 29 2 *", "2026-01-01T00:00:00Z"), "2028-02-29T00:00:00Z");
    CHECK_EQ_STR(next_of("0 0 29 feb *", "2028-02-29T00:00:00Z"), "2032-02-29T00:00:00Z");
    /* Year rollover. */
    CHECK_EQ_STR(next_of("59 23 31 12 *", "2026-12-31T23:59:00Z"), "2027-12-31T23:59:00Z");
    CHECK_EQ_STR(next_of("0 0 1 1 *", "2026-12-31T23:59:59Z"), "2027-01-01T00:00:00Z");
    /* Day steps: 1, 11, 21, 31. */
    CHECK_EQ_STR(next_of("0 0 */10 * *", "2026-01-21T00:00:00Z"), "2026-01-31T00:00:00Z");
    CHECK_EQ_STR(next_of("0 0 */10 * *", "2026-02-21T00:00:00Z"), "2026-03-01T00:00:00Z");
    /* Weekdays by name and range (2026-01-03 is a Saturday). */
    CHECK_EQ_STR(next_of("0 12 * * mon-fri", "2026-01-03T12:00:00Z"), "2026-01-05T12:00:00Z");
    CHECK_EQ_STR(next_of("0 12 * * MON-FRI", "2026-01-05T12:00:00Z"), "2026-01-06T12:00:00Z");
    CHECK_EQ_STR(next_of("0 0 * * 7", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
    CHECK_EQ_STR(next_of("0 0 * * sun", "2026-01-01T00:00:00Z"), "2026-01-04T00:00:00Z");
    /* Both day fields restricted: either matches (Vixie). 2026-01-02 is a Friday. */
    CHECK_EQ_STR(next_of("0 0 13 * fri", "2026-01-01T00:00:00Z"), "2026-01-02T00:00:00Z");
    CHECK_EQ_STR(next_of("0 0 13 * fri", "2026-01-09T00:00:00Z"), "2026-01-13T00:00:00Z");
    /* One restricted: both must hold ("*" day of month). */
    CHECK_EQ_STR(next_of("0 0 * jan,jul sun", "2026-01-31T12:00:00Z"), "2026-07-05T00:00:00Z");
    CHECK_EQ_STR(next_of("30 2 1-7 * *", "2026-01-07T02:30:00Z"), "2026-02-01T02:30:00Z");
    CHECK_EQ_STR(next_of("0 0 30 2 *", "2026-01-01T00:00:00Z"),
                 "invalid: cron expression '0 0 30 2 *' never fires");
}

TEST(cron_parse_errors)
{
    struct cairn_cron c;
    struct cairn_err err;
    CHECK_ERR(cron_parse("60 * * * *", &c, &err), CAIRN_E_INVALID, &err,
              "minute field '60': values must be 0-59");
    CHECK_ERR(cron_parse("* * * *", &c, &err), CAIRN_E_INVALID, &err, "needs exactly 5 fields");
    CHECK_ERR(cron_parse("* * * * * *", &c, &err), CAIRN_E_INVALID, &err, "needs exactly 5 fields");
    CHECK_ERR(cron_parse("a * * * *", &c, &err), CAIRN_E_INVALID, &err,
              "minute field 'a' is not valid");
    CHECK_ERR(cron_parse("*/0 * * * *", &c, &err), CAIRN_E_INVALID, &err, "not valid");
    CHECK_ERR(cron_parse("5-1 * * * *", &c, &err), CAIRN_E_INVALID, &err, "ascending");
    CHECK_ERR(cron_parse("* 24 * * *", &c, &err), CAIRN_E_INVALID, &err, "hour field");
    CHECK_ERR(cron_parse("* * 0 * *", &c, &err), CAIRN_E_INVALID, &err, "day of month");
    CHECK_ERR(cron_parse("* * * foo *", &c, &err), CAIRN_E_INVALID, &err, "month field");
    CHECK_ERR(cron_parse("* * * * 8", &c, &err), CAIRN_E_INVALID, &err, "day of week");
    CHECK_ERR(cron_parse("1,,2 * * * *", &c, &err), CAIRN_E_INVALID, &err, "not valid");
    CHECK_ERR(cron_parse("@often", &c, &err), CAIRN_E_INVALID, &err, "unknown cron macro");
    CHECK_OK(cron_parse("  0  0  *  *  *  ", &c, &err), &err);
}

TEST(intervals_are_epoch_aligned)
{
    struct cairn_timing t = {.is_cron = 0, .every = 3600};
    CHECK_EQ_INT(cron_timing_next(&t, ts("2026-01-01T10:30:00Z")), ts("2026-01-01T11:00:00Z"));
    CHECK_EQ_INT(cron_timing_next(&t, ts("2026-01-01T11:00:00Z")), ts("2026-01-01T12:00:00Z"));
    CHECK_EQ_INT(cron_timing_next(&t, -1), 0);
    CHECK_EQ_INT(cron_timing_next(&t, -3600), 0);
    CHECK_EQ_INT(cron_timing_next(&t, -3601), -3600);
    int64_t d;
    CHECK(parse_duration("1h30m", &d) == 0 && d == 5400);
    CHECK(parse_duration("90", &d) == 0 && d == 90);
    CHECK(parse_duration("2d", &d) == 0 && d == 172800);
    CHECK(parse_duration("1w", &d) == 0 && d == 604800);
    CHECK(parse_duration("1y", &d) == 0 && d == 365 * 86400);
    CHECK(parse_duration("36h", &d) == 0 && d == 36 * 3600);
    CHECK(parse_duration("", &d) == -1);
    CHECK(parse_duration("h", &d) == -1);
    CHECK(parse_duration("5x", &d) == -1);
    CHECK(parse_duration("99999999999999d", &d) == -1);
}

static void plan(const struct cairn_timing *t, const char *last, const char *now,
                 enum cairn_catchup_policy p, unsigned cap, struct cairn_plan *out)
{
    plan_build(t, ts(last), ts(now), p, cap, out);
}

TEST(catchup_window_is_last_exclusive_now_inclusive)
{
    struct cairn_timing t = {.is_cron = 0, .every = 3600};
    struct cairn_plan pl;
    plan(&t, "2026-01-01T11:00:00Z", "2026-01-01T14:00:00Z", CAIRN_CATCHUP_ALL, 10, &pl);
    CHECK_EQ_INT(pl.n, 3);
    CHECK_EQ_INT(pl.skipped, 0);
    CHECK(pl.n == 3 && pl.runs[0] == ts("2026-01-01T12:00:00Z") &&
          pl.runs[2] == ts("2026-01-01T14:00:00Z"));
    plan_free(&pl);
    plan(&t, "2026-01-01T11:00:00Z", "2026-01-01T11:59:59Z", CAIRN_CATCHUP_ALL, 10, &pl);
    CHECK_EQ_INT(pl.n, 0);
    plan_free(&pl);
    /* The same through cron. */
    struct cairn_timing c = {.is_cron = 1};
    struct cairn_err err;
    CHECK_OK(cron_parse("0 * * * *", &c.cron, &err), &err);
    plan(&c, "2026-01-01T11:00:00Z", "2026-01-01T14:00:00Z", CAIRN_CATCHUP_ALL, 10, &pl);
    CHECK(pl.n == 3 && pl.runs[0] == ts("2026-01-01T12:00:00Z") &&
          pl.runs[1] == ts("2026-01-01T13:00:00Z") && pl.runs[2] == ts("2026-01-01T14:00:00Z"));
    plan_free(&pl);
}

TEST(catchup_cap_keeps_newest_and_policies)
{
    struct cairn_err err;
    struct cairn_timing c = {.is_cron = 1};
    CHECK_OK(cron_parse("*/10 * * * *", &c.cron, &err), &err);
    struct cairn_timing iv = {.is_cron = 0, .every = 600};
    const struct cairn_timing *both[2] = {&c, &iv};
    for (int k = 0; k < 2; k++) {
        struct cairn_plan pl;
        /* A week of downtime: 1008 instants, capped to the newest 5. */
        plan(both[k], "2026-01-01T00:00:00Z", "2026-01-08T00:05:00Z", CAIRN_CATCHUP_ALL, 5, &pl);
        CHECK_EQ_INT(pl.n, 5);
        CHECK_EQ_INT(pl.skipped, 1003);
        CHECK_EQ_INT(pl.skipped_until, ts("2026-01-07T23:10:00Z"));
        CHECK(pl.n == 5 && pl.runs[0] == ts("2026-01-07T23:20:00Z") &&
              pl.runs[4] == ts("2026-01-08T00:00:00Z"));
        plan_free(&pl);
        plan(both[k], "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", CAIRN_CATCHUP_LATEST, 5, &pl);
        CHECK(pl.n == 1 && pl.runs[0] == ts("2026-01-01T01:00:00Z"));
        CHECK_EQ_INT(pl.skipped, 5);
        CHECK_EQ_INT(pl.skipped_until, ts("2026-01-01T00:50:00Z"));
        plan_free(&pl);
        plan(both[k], "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", CAIRN_CATCHUP_NONE, 5, &pl);
        CHECK_EQ_INT(pl.n, 0);
        CHECK_EQ_INT(pl.skipped, 6);
        CHECK_EQ_INT(pl.skipped_until, ts("2026-01-01T01:00:00Z"));
        plan_free(&pl);
        /* catch-up-max = 0 behaves like none. */
        plan(both[k], "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", CAIRN_CATCHUP_ALL, 0, &pl);
        CHECK(pl.n == 0 && pl.skipped == 6);
        plan_free(&pl);
    }
}

TEST(rate_limit_spaces_starts)
{
    struct cairn_ratelimit rl;
    plan_ratelimit_init(&rl, 2.0); /* 2 per second: 500 ms apart */
    uint64_t now = 1000000000ull;
    CHECK_EQ_INT(plan_ratelimit_reserve(&rl, now), 0);
    CHECK_EQ_INT(plan_ratelimit_reserve(&rl, now), 500000000);
    CHECK_EQ_INT(plan_ratelimit_reserve(&rl, now), 1000000000);
    /* After an idle period there is no accumulated burst beyond one. */
    now += 10000000000ull;
    CHECK_EQ_INT(plan_ratelimit_reserve(&rl, now), 0);
    CHECK_EQ_INT(plan_ratelimit_reserve(&rl, now + 100000000), 400000000);
    char name[128];
    plan_run_name("nightly", ts("2026-01-02T03:04:05Z"), name, sizeof(name));
    CHECK_EQ_STR(name, "20260102T030405Z-nightly");
}

static const char k_conf[] = "# example\n"
                             "[cairnd]\n"
                             "state = sqlite:/tmp/x.db\n"
                             "metrics-listen = off\n"
                             "log-format = json\n"
                             "catch-up-max = 3\n"
                             "catch-up-rate = 10/m\n"
                             "\n"
                             "[schedule hourly]\n"
                             "source = 127.0.0.1:8088\n"
                             "to = file:///backups\n"
                             "every = 1h\n"
                             "keep-last = 24\n"
                             "keep-daily = 7\n"
                             "  ; indented comment\n"
                             "[schedule nightly]\n"
                             "source = /var/lib/influxdb\n"
                             "to = s3://bucket/prefix\n"
                             "cron = 30 2 * * mon-fri\n"
                             "keep-last = 7\n"
                             "catch-up = latest\n";

TEST(config_parses_and_defaults)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    CHECK_OK(config_parse(k_conf, strlen(k_conf), "t.conf", &c, &err), &err);
    if (c == NULL)
        return;
    CHECK_EQ_STR(c->state_url, "sqlite:/tmp/x.db");
    CHECK(c->metrics_listen == NULL);
    CHECK(c->log_json == 1);
    CHECK_EQ_INT(c->catchup_max, 3);
    CHECK(c->catchup_rate > 0.166 && c->catchup_rate < 0.167);
    CHECK_EQ_INT(c->state_keep, 10);
    CHECK_EQ_INT(c->n_schedules, 2);
    CHECK_EQ_STR(c->schedules[0].name, "hourly");
    CHECK_EQ_INT(c->schedules[0].timing.every, 3600);
    CHECK_EQ_INT(c->schedules[0].keep_daily, 7);
    CHECK_EQ_STR(c->schedules[1].to, "s3://bucket/prefix");
    CHECK(c->schedules[1].timing.is_cron);
    CHECK_EQ_INT(c->schedules[1].catchup, CAIRN_CATCHUP_LATEST);
    config_free(c);

    const char *minimal = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1";
    CHECK_OK(config_parse(minimal, strlen(minimal), "m.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_STR(c->state_url, "sqlite:/var/lib/cairnd/state.db");
        CHECK_EQ_STR(c->metrics_listen, "127.0.0.1:9469");
        CHECK_EQ_INT(c->snapshot_interval, 30);
    }
    config_free(c);
}

static void config_err(const char *text, const char *want)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    int rc = config_parse(text, strlen(text), "bad.conf", &c, &err);
    if (rc != CAIRN_E_INVALID || strstr(err.msg, want) == NULL)
        test_fail(__FILE__, __LINE__, "config %s: got '%s', want '%s'", text, rc ? err.msg : "ok",
                  want);
    config_free(c);
}

TEST(config_retention_keys)
{
    const char *t = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=2\n"
                    "keep-hourly=24\nkeep-monthly=12\nkeep-yearly=3\nkeep-within=36h\n";
    struct cairn_config *c = NULL;
    struct cairn_err err;
    CHECK_OK(config_parse(t, strlen(t), "r.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->schedules[0].keep_hourly, 24);
        CHECK_EQ_INT(c->schedules[0].keep_monthly, 12);
        CHECK_EQ_INT(c->schedules[0].keep_yearly, 3);
        CHECK_EQ_INT(c->schedules[0].keep_within, 36 * 3600);
    }
    config_free(c);
}

TEST(config_errors_name_file_and_line)
{
    config_err("[schedule a]\nsource=/x\nto=file:///y\nevery=5m\n",
               "bad.conf:1: [schedule a] needs keep-last");
    config_err("[schedule a]\nsource=/x\nevery=5m\nkeep-last=1\n", "needs to");
    config_err("[schedule a]\nsource=/x\nto=y\nkeep-last=1\n", "needs every or cron");
    config_err("[schedule a]\nsource=/x\nto=y\nevery=5m\ncron=* * * * *\nkeep-last=1\n",
               "bad.conf:5: use either every or cron");
    config_err("[schedule a]\nsource=/x\nto=y\nevery=5m\nkeep-last=0\n",
               "keep-last must be at least 1");
    config_err("[schedule a]\nsource=/x\nto=y\ncron=61 * * * *\nkeep-last=1\n",
               "bad.conf:4: cron minute field '61'");
    config_err("[schedule a]\nsource=/x\nto=y\nevery=5m\nkeep-last=1\nkeep-within=soon\n",
               "bad.conf:6: keep-within = 'soon': expected a duration");
    config_err("[schedule a]\nbogus=1\n", "bad.conf:2: unknown key 'bogus' in [schedule]");
    config_err("[schedule a/b]\n", "schedule name 'a/b' is not valid");
    config_err("[schedule a]\nsource=/x\nto=file:///y\nevery=1m\nkeep-last=1\n[schedule a]\n",
               "bad.conf:6: schedule 'a' defined twice");
    config_err("[cairnd]\nlog-format=xml\n", "expected plain or json");
    config_err("[cairnd]\ncatch-up-rate=fast\n", "expected runs per time");
    config_err("[cairnd]\nstate-keep=0\n", "expected a count from 1");
    config_err("key=1\n", "bad.conf:1: 'key' outside a section");
    config_err("[other]\n", "unknown section [other]");
    config_err("[cairnd\n", "malformed section header");
    config_err("[cairnd]\nlog-level\n", "expected 'key = value'");
    config_err("[cairnd]\nlog-level=info\nlog-level=info\n", "'log-level' set twice");
    config_err("[cairnd]\n", "no [schedule NAME] sections");
}

/* Storage and source URLs are checked at load (cairnd run --dry-run, SIGHUP), not at the first
 * run; a value naming a shell variable was never expanded. */
TEST(config_urls_and_variables_checked_at_load)
{
#define SCHED(src, to) "[schedule a]\nsource=" src "\nto=" to "\nevery=5m\nkeep-last=1\n"
    config_err(SCHED("/x", "relative/b"), "bad.conf:1: [schedule a] to: storage URL 'relative/b'");
    config_err(SCHED("/x", "${BACKUP_URL}"),
               "bad.conf:3: to = '${BACKUP_URL}': unexpanded variable '${BACKUP_URL}'");
    config_err(SCHED("/x", "file:///b/$(date)"), "unexpanded variable '$(date)'");
    config_err(SCHED("/x", "file://rel"), "needs an absolute path");
    config_err(SCHED("/x", "ftp://host/b"), "no storage driver for 'ftp://'");
    config_err(SCHED("/x", "s3://"), "[schedule a] to:");
    config_err(SCHED("relative/dir", "file:///b"), "source 'relative/dir': expected a source URL");
    config_err(SCHED("./data", "file:///b"), "would depend on cairnd's working directory");
    config_err(SCHED("nosuch://x", "file:///b"), "source 'nosuch:': unknown source scheme");
    config_err(SCHED("$HOST:8088", "file:///b"), "unexpanded variable '$HOST:8088'");
    const char *ok[] = {SCHED("127.0.0.1:8088", "file:///b"), SCHED("[::1]:8088", "/b"),
                        SCHED("redis://127.0.0.1:6379", "s3://bucket/p"),
                        SCHED("exec:echo hi", "file:///b"), SCHED("influxdb://h:8088", "/b")};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct cairn_config *c = NULL;
        struct cairn_err err;
        CHECK_OK(config_parse(ok[i], strlen(ok[i]), "ok.conf", &c, &err), &err);
        config_free(c);
    }
    /* systemd's credentials directory is the one variable expanded. */
    unsetenv("CREDENTIALS_DIRECTORY");
    const char *cred = "[cairnd]\nkey-file = ${CREDENTIALS_DIRECTORY}/repo.key\n" SCHED("/x", "/b");
    config_err(cred, "bad.conf:2: key-file = '${CREDENTIALS_DIRECTORY}/repo.key': "
                     "${CREDENTIALS_DIRECTORY} is not set");
    setenv("CREDENTIALS_DIRECTORY", "/run/credentials/cairnd.service", 1);
    struct cairn_config *c = NULL;
    struct cairn_err err;
    CHECK_OK(config_parse(cred, strlen(cred), "c.conf", &c, &err), &err);
    if (c != NULL)
        CHECK_EQ_STR(c->schedules[0].key_file, "/run/credentials/cairnd.service/repo.key");
    config_free(c);
    unsetenv("CREDENTIALS_DIRECTORY");
#undef SCHED
}

TEST(config_rate_limit_and_lease)
{
    const char *t = "[cairnd]\nstate = postgresql://db/cairn\nlease = 15s\n"
                    "[schedule a]\nsource=/x\nto=/b\nevery=5m\nkeep-last=1\nrate-limit = 50M\n";
    struct cairn_config *c = NULL;
    struct cairn_err err;
    CHECK_OK(config_parse(t, strlen(t), "r.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->schedules[0].rate_limit, 50u << 20);
        CHECK_EQ_INT(c->lease, 15);
        CHECK_EQ_INT(c->lease_renew_ms, 5000);
    }
    config_free(c);
    config_err("[schedule a]\nsource=/x\nto=/b\nevery=5m\nkeep-last=1\nrate-limit=fast\n",
               "bad.conf:6: rate-limit = 'fast': expected bytes per second");
    config_err("[cairnd]\nlease = 15s\n[schedule a]\nsource=/x\nto=/b\nevery=5m\nkeep-last=1\n",
               "lease needs a PostgreSQL state");
    config_err("[cairnd]\nstate=postgresql://db\nlease=2s\nlease-renew=1500ms\n"
               "[schedule a]\nsource=/x\nto=/b\nevery=5m\nkeep-last=1\n",
               "lease-renew must be at most half the lease");
}

/* cron on a local wall clock (cairnd's timezone), here Europe/Berlin: DST starts on
 * 2026-03-29 (02:00 CET -> 03:00 CEST, at 01:00Z) and ends on 2026-10-25 (03:00 CEST ->
 * 02:00 CET, at 01:00Z). */
static struct cron_zone *g_zone;

static const char *next_local(const char *expr, const char *after)
{
    return next_on(expr, after, g_zone);
}

/* The zone `name` from /usr/share/zoneinfo in place of g_zone. */
static void use_zone(const char *name)
{
    cron_zone_free(g_zone);
    g_zone = NULL;
    char *path = xasprintf("/usr/share/zoneinfo/%s", name);
    struct cairn_err err;
    if (cron_zone_load(path, &g_zone, &err) != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "loading %s: %s", name, err.msg);
    free(path);
}

TEST(cron_on_a_local_wall_clock_across_dst)
{
    if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) != 0) {
        MISSING("no /usr/share/zoneinfo/Europe/Berlin (package tzdata)");
    }
    /* The zone comes from its file alone: the process's TZ (here another zone) plays no part. */
    setenv("TZ", "America/New_York", 1);
    tzset();
    use_zone("Europe/Berlin");
    /* 09:00 local is 08:00Z in winter, 07:00Z in summer. */
    CHECK_EQ_STR(next_local("0 9 * * *", "2026-01-10T12:00:00Z"), "2026-01-11T08:00:00Z");
    CHECK_EQ_STR(next_local("0 9 * * *", "2026-07-10T12:00:00Z"), "2026-07-11T07:00:00Z");
    /* 02:30 does not exist on 2026-03-29: it runs when the clocks jump (03:00 CEST), once. */
    CHECK_EQ_STR(next_local("30 2 * * *", "2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    CHECK_EQ_STR(next_local("30 2 * * *", "2026-03-29T01:00:00Z"), "2026-03-30T00:30:00Z");
    /* Hourly after 01:00 CET (00:00Z): 02:00 is skipped, so it runs at the jump (01:00Z, 03:00
     * CEST), then at 04:00 CEST: still one run an hour. */
    CHECK_EQ_STR(next_local("0 * * * *", "2026-03-29T00:00:00Z"), "2026-03-29T01:00:00Z");
    CHECK_EQ_STR(next_local("0 * * * *", "2026-03-29T01:00:00Z"), "2026-03-29T02:00:00Z");
    /* 02:30 occurs twice on 2026-10-25 (00:30Z CEST, 01:30Z CET): it runs at the first. */
    CHECK_EQ_STR(next_local("30 2 * * *", "2026-10-24T12:00:00Z"), "2026-10-25T00:30:00Z");
    CHECK_EQ_STR(next_local("30 2 * * *", "2026-10-25T00:30:00Z"), "2026-10-26T01:30:00Z");
    /* Every 30 minutes through the repeated hour: 02:00, 02:30 CEST, then 03:00 CET. */
    CHECK_EQ_STR(next_local("*/30 * * * *", "2026-10-25T00:00:00Z"), "2026-10-25T00:30:00Z");
    CHECK_EQ_STR(next_local("*/30 * * * *", "2026-10-25T00:30:00Z"), "2026-10-25T02:00:00Z");
    /* From inside the repeat (a state saved at 02:10 CET) the next wall time is next. */
    CHECK_EQ_STR(next_local("*/30 * * * *", "2026-10-25T01:10:00Z"), "2026-10-25T01:30:00Z");
    /* Weekday and day-of-month fields are local too: Monday 00:15 in Berlin is Sunday UTC. */
    CHECK_EQ_STR(next_local("15 0 * * mon", "2026-01-01T00:00:00Z"), "2026-01-04T23:15:00Z");
    CHECK_EQ_STR(next_local("0 0 1 * *", "2026-06-15T00:00:00Z"), "2026-06-30T22:00:00Z");
    /* A zone without DST: a fixed offset. */
    use_zone("Asia/Tokyo");
    CHECK_EQ_STR(next_local("0 9 * * *", "2026-03-29T00:00:00Z"), "2026-03-30T00:00:00Z");
    use_zone("UTC");
    CHECK_EQ_STR(next_local("30 2 * * *", "2026-03-29T00:00:00Z"), "2026-03-29T02:30:00Z");
    cron_zone_free(g_zone);
    g_zone = NULL;
    unsetenv("TZ");
    tzset();
}

/* Changes of a zone's standard offset (no daylight time on either side) follow the same rules:
 * America/Cancun moved from -06 to -05 on 2015-02-01 at 02:00 (08:00Z); Africa/Juba from +03
 * to +02 on 2021-02-01 at 00:00 (2021-01-31T21:00Z), repeating 23:00-24:00. */
TEST(cron_across_a_change_of_standard_offset)
{
    if (access("/usr/share/zoneinfo/America/Cancun", R_OK) != 0 ||
        access("/usr/share/zoneinfo/Africa/Juba", R_OK) != 0) {
        MISSING("no /usr/share/zoneinfo/America/Cancun or Africa/Juba (package tzdata)");
    }
    use_zone("America/Cancun");
    /* 02:30 is skipped: it runs at the jump (03:00 -05), as with daylight time. */
    CHECK_EQ_STR(next_local("30 2 * * *", "2015-01-31T20:00:00Z"), "2015-02-01T08:00:00Z");
    CHECK_EQ_STR(next_local("30 2 * * *", "2015-02-01T08:00:00Z"), "2015-02-02T07:30:00Z");
    use_zone("Africa/Juba");
    /* 23:30 occurs twice; from before the change it runs once, at the first. */
    CHECK_EQ_STR(next_local("30 23 * * *", "2021-01-31T12:00:00Z"), "2021-01-31T20:30:00Z");
    CHECK_EQ_STR(next_local("30 23 * * *", "2021-01-31T20:30:00Z"), "2021-02-01T21:30:00Z");
    /* From inside the repeat (23:00 the second time) the next wall time is next. */
    CHECK_EQ_STR(next_local("*/30 * * * *", "2021-01-31T21:00:00Z"), "2021-01-31T21:30:00Z");
    cron_zone_free(g_zone);
    g_zone = NULL;
}

TEST(config_timezone)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *utc = "[cairnd]\ntimezone = UTC\n[schedule a]\nsource=/x\nto=file:///y\n"
                      "cron=0 3 * * *\nkeep-last=1\n";
    CHECK_OK(config_parse(utc, strlen(utc), "t.conf", &c, &err), &err);
    CHECK(c != NULL && c->timezone == NULL && c->schedules[0].timing.zone == NULL);
    config_free(c);
    config_err("[cairnd]\ntimezone=../../etc/passwd\n", "expected an IANA time zone name");
    config_err("[cairnd]\ntimezone=/etc/localtime\n", "expected an IANA time zone name");
    config_err("[cairnd]\ntimezone=Mars/Olympus_Mons\n", "unknown time zone");
    if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) != 0) {
        MISSING("no /usr/share/zoneinfo/Europe/Berlin (package tzdata)");
    }
    /* The zone applies to cron schedules only; intervals stay aligned to the epoch. */
    const char *berlin = "[schedule a]\nsource=/x\nto=file:///y\ncron=0 3 * * *\nkeep-last=1\n"
                         "[schedule b]\nsource=/x\nto=file:///y\nevery=1h\nkeep-last=1\n"
                         "[cairnd]\ntimezone = Europe/Berlin\n";
    CHECK_OK(config_parse(berlin, strlen(berlin), "t.conf", &c, &err), &err);
    CHECK(c != NULL && c->timezone != NULL && strcmp(c->timezone, "Europe/Berlin") == 0);
    CHECK(c != NULL && c->schedules[0].timing.zone != NULL && c->schedules[1].timing.zone == NULL);
    config_free(c);
}

/* Hooks, webhook and drills: a schedule's keys replace [cairnd]'s, defaults, refusals. */
TEST(config_hooks_and_drills)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *t = "[cairnd]\nbefore = g-before\non-failure = g-fail\nhook-timeout = 1m\n"
                    "webhook = https://hooks.example/x\nstate-dir = /s\n"
                    "[schedule a]\nsource=/x\nto=file:///y\nevery=1h\nkeep-last=1\n"
                    "before = a-before\nwebhook-on = always\ndrill = every 1d\n"
                    "drill-probe = true\n"
                    "[schedule b]\nsource=/x\nto=file:///y\nevery=1h\nkeep-last=1\n"
                    "hook-timeout = 2s\nwebhook = http://other/\ndrill = 6h\n"
                    "drill-timeout = 10m\n";
    CHECK_OK(config_parse(t, strlen(t), "h.conf", &c, &err), &err);
    if (c != NULL) {
        const struct cairn_hooks_cfg *a = &c->schedules[0].hooks, *b = &c->schedules[1].hooks;
        CHECK_EQ_STR(a->before, "a-before");
        CHECK_EQ_STR(a->on_failure, "g-fail");
        CHECK(a->after == NULL);
        CHECK_EQ_INT(a->timeout, 60);
        CHECK_EQ_STR(a->webhook, "https://hooks.example/x");
        CHECK_EQ_INT(a->webhook_on, 2);
        CHECK_EQ_STR(b->before, "g-before");
        CHECK_EQ_INT(b->timeout, 2);
        CHECK_EQ_STR(b->webhook, "http://other/");
        CHECK_EQ_INT(b->webhook_on, 1);
        CHECK_EQ_INT(c->schedules[0].drill_every, 86400);
        CHECK_EQ_STR(c->schedules[0].drill_probe, "true");
        CHECK_EQ_INT(c->schedules[1].drill_every, 6 * 3600);
        CHECK_EQ_INT(c->schedules[1].drill_timeout, 600);
        CHECK_EQ_STR(c->drill_dir, "/s/drill");
    }
    config_free(c);
    const char *plain = "[schedule a]\nsource=/x\nto=file:///y\nevery=1h\nkeep-last=1\n";
    CHECK_OK(config_parse(plain, strlen(plain), "p.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->schedules[0].hooks.timeout, 300);
        CHECK(c->schedules[0].hooks.webhook == NULL && c->schedules[0].drill_every == 0);
    }
    config_free(c);
    static const char *const bad[][2] = {
        {"webhook = ftp://x/", "expected an http:// or https:// URL"},
        {"webhook-on = sometimes", "expected failure or always"},
        {"drill = every 10s", "expected every INTERVAL of at least 1m"},
        {"drill = daily", "expected every INTERVAL"},
        {"hook-timeout = 0s", "expected a duration such as 5m"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *text = xasprintf("[schedule a]\nsource=/x\nto=file:///y\nevery=1h\n"
                               "keep-last=1\n%s\n",
                               bad[i][0]);
        CHECK_EQ_INT(config_parse(text, strlen(text), "b.conf", &c, &err), CAIRN_E_INVALID);
        CHECK(strstr(err.msg, bad[i][1]) != NULL && strstr(err.msg, "b.conf:6") != NULL);
        free(text);
    }
    const char *reserved = "[schedule drill.x]\nsource=/x\nto=file:///y\nevery=1h\n";
    CHECK_EQ_INT(config_parse(reserved, strlen(reserved), "r.conf", &c, &err), CAIRN_E_INVALID);
    CHECK(strstr(err.msg, "the prefix drill. is reserved") != NULL);
}

/* The documented example must stay valid. */
TEST(example_config_parses)
{
    char *path = xasprintf("%s/docs/cairnd.conf.example", test_source_dir());
    struct cairn_config *c = NULL;
    struct cairn_err err;
    CHECK_OK(config_load(path, &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->n_schedules, 2);
        CHECK_EQ_STR(c->state_url, "sqlite:/var/lib/cairnd/state.db");
        CHECK_EQ_INT(c->schedules[1].catchup, CAIRN_CATCHUP_LATEST);
        CHECK(c->schedules[1].timing.is_cron);
    }
    config_free(c);
    free(path);
}

/* err may be NULL everywhere: a wrapped failure still returns its own code, not
 * CAIRN_E_INTERNAL. */
TEST(config_load_keeps_the_code_without_err)
{
    struct cairn_config *c = NULL;
    CHECK_EQ_INT(config_load("/nonexistent/cairnd.conf", &c, NULL), CAIRN_E_NOTFOUND);
    CHECK(c == NULL);
    struct cairn_err err;
    CHECK_EQ_INT(config_load("/nonexistent/cairnd.conf", &c, &err), CAIRN_E_NOTFOUND);
}

/* The /metrics listener's bounds: parsed, range-checked, 0 (= the listener's default) when
 * absent. */
TEST(config_metrics_limits)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *none = "[cairnd]\nstate = sqlite:/tmp/x.db\n"
                       "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n";
    CHECK_OK(config_parse(none, strlen(none), "n.conf", &c, &err), &err);
    if (c != NULL)
        CHECK(c->metrics_timeout == 0 && c->metrics_max_conn == 0 && c->metrics_per_ip == 0);
    config_free(c);
    const char *set = "[cairnd]\nstate = sqlite:/tmp/x.db\nmetrics-timeout = 1m\n"
                      "metrics-max-connections = 300\nmetrics-connections-per-ip = 4\n"
                      "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n";
    CHECK_OK(config_parse(set, strlen(set), "s.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->metrics_timeout, 60);
        CHECK_EQ_INT(c->metrics_max_conn, 300);
        CHECK_EQ_INT(c->metrics_per_ip, 4);
    }
    config_free(c);
    const char *bad[] = {"metrics-timeout = 0s", "metrics-timeout = 2h",
                         "metrics-max-connections = 0", "metrics-connections-per-ip = x",
                         "metrics-connections-per-ip = 10001"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *text = xasprintf("[cairnd]\n%s\n", bad[i]);
        CHECK_ERR(config_parse(text, strlen(text), "b.conf", &c, &err), CAIRN_E_INVALID, &err,
                  "b.conf:2:");
        free(text);
    }
}

/* lock-wait: 10 minutes unless set; 0 (fail at once) allowed; a non-duration refused. */
TEST(config_lock_wait)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *sched = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n";
    const char *vals[] = {"", "lock-wait = 30s\n", "lock-wait = 0\n"};
    const int64_t want[] = {600, 30, 0};
    for (size_t i = 0; i < 3; i++) {
        char *text = xasprintf("[cairnd]\nstate = sqlite:/tmp/x.db\n%s%s", vals[i], sched);
        CHECK_OK(config_parse(text, strlen(text), "l.conf", &c, &err), &err);
        if (c != NULL)
            CHECK_EQ_INT(c->lock_wait, want[i]);
        config_free(c);
        free(text);
    }
    const char *bad = "[cairnd]\nlock-wait = soon\n";
    CHECK_ERR(config_parse(bad, strlen(bad), "b.conf", &c, &err), CAIRN_E_INVALID, &err,
              "b.conf:2: lock-wait");
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}

/* A schedule's source secret, TLS files and whole-snapshot timeout (cairn backup's
 * --password-file and --tls-*): parsed, absent by default, a bad duration named. */
TEST(config_source_keys)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *t = "[cairnd]\nstate = sqlite:/tmp/x.db\n"
                    "[schedule a]\nsource=redis://127.0.0.1:6379\nto=file:///y\nevery=5m\n"
                    "keep-last=1\npassword-file = /etc/cairn/redis.pass\ntls-ca = /ca.pem\n"
                    "tls-cert = /c.pem\ntls-key = /k.pem\nsource-timeout = 2h\n"
                    "[schedule b]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n";
    CHECK_OK(config_parse(t, strlen(t), "s.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_STR(c->schedules[0].password_file, "/etc/cairn/redis.pass");
        CHECK_EQ_STR(c->schedules[0].tls_ca, "/ca.pem");
        CHECK_EQ_STR(c->schedules[0].tls_cert, "/c.pem");
        CHECK_EQ_STR(c->schedules[0].tls_key, "/k.pem");
        CHECK_EQ_INT(c->schedules[0].source_timeout, 7200);
        CHECK(c->schedules[1].password_file == NULL && c->schedules[1].tls_ca == NULL);
        CHECK_EQ_INT(c->schedules[1].source_timeout, 0);
    }
    config_free(c);
    c = NULL;
    const char *bad = "[cairnd]\nstate = sqlite:/tmp/x.db\n"
                      "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n"
                      "source-timeout = soon\n";
    CHECK_ERR(config_parse(bad, strlen(bad), "b.conf", &c, &err), CAIRN_E_INVALID, &err,
              "source-timeout = 'soon': expected a duration");
    CHECK(c == NULL);
}

/* force-read: yes/true or no/false (default no); anything else refused. The key table is past
 * 32 keys: the last one (drill-timeout) still counts as seen, so setting it twice is refused. */
TEST(config_force_read)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    const char *t = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n"
                    "force-read = yes\n"
                    "[schedule b]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n"
                    "force-read = false\n"
                    "[schedule c]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n";
    CHECK_OK(config_parse(t, strlen(t), "f.conf", &c, &err), &err);
    if (c != NULL) {
        CHECK_EQ_INT(c->schedules[0].force_read, 1);
        CHECK_EQ_INT(c->schedules[1].force_read, 0);
        CHECK_EQ_INT(c->schedules[2].force_read, 0);
    }
    config_free(c);
    c = NULL;
    const char *bad = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n"
                      "force-read = always\n";
    CHECK_ERR(config_parse(bad, strlen(bad), "b.conf", &c, &err), CAIRN_E_INVALID, &err,
              "b.conf:6: force-read = 'always': expected yes or no");
    const char *twice = "[schedule a]\nsource=/x\nto=file:///y\nevery=5m\nkeep-last=1\n"
                        "drill-timeout = 1m\nforce-read = no\ndrill-timeout = 2m\n";
    CHECK_ERR(config_parse(twice, strlen(twice), "t.conf", &c, &err), CAIRN_E_INVALID, &err,
              "t.conf:8: 'drill-timeout' set twice");
    CHECK(c == NULL);
}
