/* cairnd configuration parser: INI-like sections, strict keys, "file:line: ..." errors. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/state.h"
#include "common/util.h"

#define CONFIG_MAX (1u << 20)

void cairn_config_free(struct cairn_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_schedules; i++) {
        struct cairn_schedule_cfg *s = &c->schedules[i];
        free(s->name);
        free(s->source);
        free(s->to);
        free(s->timing_text);
    }
    free(c->schedules);
    free(c->path);
    free(c->state_dir);
    free(c->state_url);
    free(c->metrics_listen);
    free(c->timezone);
    cron_zone_free(c->zone);
    free(c);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int parse_uint(const char *v, unsigned max, unsigned *out)
{
    if (!isdigit((unsigned char)*v))
        return -1;
    unsigned long x = 0;
    for (; *v; v++) {
        if (!isdigit((unsigned char)*v))
            return -1;
        x = x * 10 + (unsigned long)(*v - '0');
        if (x > max)
            return -1;
    }
    *out = (unsigned)x;
    return 0;
}

/* "N/s", "N/m", "N/h" or a bare "N" (per second). */
static int parse_rate(const char *v, double *out)
{
    unsigned n;
    char num[32];
    const char *slash = strchr(v, '/');
    size_t len = slash ? (size_t)(slash - v) : strlen(v);
    if (len == 0 || len >= sizeof(num))
        return -1;
    memcpy(num, v, len);
    num[len] = '\0';
    if (parse_uint(num, 1000000, &n) != 0 || n == 0)
        return -1;
    double per = 1;
    if (slash) {
        if (strcmp(slash + 1, "s") == 0)
            per = 1;
        else if (strcmp(slash + 1, "m") == 0)
            per = 60;
        else if (strcmp(slash + 1, "h") == 0)
            per = 3600;
        else
            return -1;
    }
    *out = n / per;
    return 0;
}

struct parser {
    struct cairn_config *c;
    const char *path;
    int line;
    struct cairn_err *err;
    int in_daemon;                 /* current section is [cairnd] */
    struct cairn_schedule_cfg *sc; /* current [schedule] or NULL */
    unsigned seen;                 /* bitmask of keys seen in the current section */
};

static int bad(struct parser *p, const char *fmt, ...) CAIRN_PRINTF(2, 3);
static int bad(struct parser *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return cairn_err_set(p->err, CAIRN_E_INVALID, "%s:%d: %s", p->path, p->line, msg);
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = cairn_xstrdup(v);
}

static const char *const k_daemon_keys[] = {"state",
                                            "state-dir",
                                            "state-keep",
                                            "snapshot-interval",
                                            "metrics-listen",
                                            "log-format",
                                            "log-level",
                                            "catch-up-max",
                                            "catch-up-rate",
                                            "max-concurrent",
                                            "shutdown-timeout",
                                            "timezone",
                                            "state-check-interval",
                                            "metrics-timeout",
                                            "metrics-max-connections",
                                            "metrics-connections-per-ip",
                                            "lock-wait",
                                            NULL};
static const char *const k_schedule_keys[] = {
    "source",      "to",          "every",    "cron",        "keep-last",
    "keep-daily",  "keep-weekly", "catch-up", "keep-hourly", "keep-monthly",
    "keep-yearly", "keep-within", NULL};

static int key_index(const char *const *keys, const char *k)
{
    for (int i = 0; keys[i]; i++)
        if (strcmp(keys[i], k) == 0)
            return i;
    return -1;
}

/* An IANA zone name with a TZif file under TZDIR (default /usr/share/zoneinfo), loaded here
 * so that cron schedules compute its offsets themselves (zone.h), never through the process's
 * TZ; glibc would also have taken an unknown name silently as UTC. UTC itself needs no file. */
static int timezone_key(struct parser *p, const char *k, const char *v)
{
    struct cairn_config *c = p->c;
    free(c->timezone);
    c->timezone = NULL;
    cron_zone_free(c->zone);
    c->zone = NULL;
    if (strcmp(v, "UTC") == 0)
        return CAIRN_OK;
    int ok = v[0] != '/' && strstr(v, "..") == NULL;
    for (const char *q = v; *q && ok; q++)
        ok = isalnum((unsigned char)*q) || strchr("/_+-", *q) != NULL;
    if (!ok)
        return bad(p, "%s = '%s': expected an IANA time zone name such as Europe/Berlin", k, v);
    const char *dir = getenv("TZDIR");
    char *path = cairn_xasprintf("%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", v);
    struct cairn_err rerr;
    int rc = cron_zone_load(path, &c->zone, &rerr);
    if (rc == CAIRN_OK)
        c->timezone = cairn_xstrdup(v);
    else
        rc = bad(p, "%s = '%s': unknown time zone (%s; package tzdata)", k, v, rerr.msg);
    free(path);
    return rc;
}

/* The /metrics listener's bounds (keys 12-14). */
static int metrics_limit_key(struct parser *p, int idx, const char *k, const char *v)
{
    struct cairn_config *c = p->c;
    int64_t secs;
    if (idx == 13) {
        if (cairn_parse_duration(v, &secs) != 0 || secs < 1 || secs > 3600)
            return bad(p, "%s = '%s': expected a duration from 1s to 1h", k, v);
        c->metrics_timeout = (unsigned)secs;
        return CAIRN_OK;
    }
    unsigned *dst = idx == 14 ? &c->metrics_max_conn : &c->metrics_per_ip;
    if (parse_uint(v, 10000, dst) != 0 || *dst == 0)
        return bad(p, "%s = '%s': expected a count from 1 to 10000", k, v);
    return CAIRN_OK;
}

static int daemon_key(struct parser *p, int idx, const char *k, const char *v)
{
    struct cairn_config *c = p->c;
    unsigned u;
    switch (idx) {
    case 0: set_str(&c->state_url, v); return CAIRN_OK;
    case 1: set_str(&c->state_dir, v); return CAIRN_OK;
    case 2:
        if (parse_uint(v, 100000, &u) != 0 || u == 0)
            return bad(p, "%s = '%s': expected a count from 1 to 100000", k, v);
        c->state_keep = u;
        return CAIRN_OK;
    case 3:
        if (cairn_parse_duration(v, &c->snapshot_interval) != 0 || c->snapshot_interval < 1)
            return bad(p, "%s = '%s': expected a duration such as 30s, 5m", k, v);
        return CAIRN_OK;
    case 4:
        free(c->metrics_listen);
        c->metrics_listen = NULL;
        if (strcmp(v, "off") == 0)
            return CAIRN_OK;
        if (strrchr(v, ':') == NULL)
            return bad(p, "%s = '%s': expected HOST:PORT or off", k, v);
        c->metrics_listen = cairn_xstrdup(v);
        return CAIRN_OK;
    case 5:
        if (strcmp(v, "plain") != 0 && strcmp(v, "json") != 0)
            return bad(p, "%s = '%s': expected plain or json", k, v);
        c->log_json = strcmp(v, "json") == 0;
        return CAIRN_OK;
    case 6: {
        int l = cairn_log_level_parse(v);
        if (l < 0)
            return bad(p, "%s = '%s': expected debug, info, warn, error or off", k, v);
        c->log_level = l;
        return CAIRN_OK;
    }
    case 7:
        if (parse_uint(v, 1000000, &c->catchup_max) != 0)
            return bad(p, "%s = '%s': expected a count (0 disables catch-up)", k, v);
        return CAIRN_OK;
    case 8:
        if (parse_rate(v, &c->catchup_rate) != 0)
            return bad(p, "%s = '%s': expected runs per time such as 1/s, 10/m, 100/h", k, v);
        return CAIRN_OK;
    case 9:
        if (parse_uint(v, 64, &u) != 0 || u == 0)
            return bad(p, "%s = '%s': expected a count from 1 to 64", k, v);
        c->max_concurrent = u;
        return CAIRN_OK;
    case 10:
        if (cairn_parse_duration(v, &c->shutdown_timeout) != 0)
            return bad(p, "%s = '%s': expected a duration such as 60s", k, v);
        return CAIRN_OK;
    case 12:
        if (cairn_parse_duration(v, &c->state_check_interval) != 0 || c->state_check_interval < 1)
            return bad(p, "%s = '%s': expected a duration such as 5m", k, v);
        return CAIRN_OK;
    case 13:
    case 14:
    case 15: return metrics_limit_key(p, idx, k, v);
    case 16:
        if (cairn_parse_duration(v, &c->lock_wait) != 0)
            return bad(p, "%s = '%s': expected a duration such as 10m (0 fails at once)", k, v);
        return CAIRN_OK;
    default: return timezone_key(p, k, v);
    }
}

static int schedule_key(struct parser *p, int idx, const char *k, const char *v)
{
    struct cairn_schedule_cfg *s = p->sc;
    struct cairn_err cerr;
    unsigned *keep = NULL;
    if (idx == 11) {
        if (cairn_parse_duration(v, &s->keep_within) != 0 || s->keep_within < 1)
            return bad(p, "%s = '%s': expected a duration such as 7d, 36h, 2w, 1y", k, v);
        return CAIRN_OK;
    }
    switch (idx) {
    case 0: set_str(&s->source, v); return CAIRN_OK;
    case 1: set_str(&s->to, v); return CAIRN_OK;
    case 2:
        if (cairn_parse_duration(v, &s->timing.every) != 0 || s->timing.every < 1)
            return bad(p, "%s = '%s': expected an interval such as 30s, 15m, 1h, 1d", k, v);
        s->timing.is_cron = 0;
        set_str(&s->timing_text, v);
        return CAIRN_OK;
    case 3:
        if (cairn_cron_parse(v, &s->timing.cron, &cerr) != CAIRN_OK)
            return bad(p, "%s", cerr.msg);
        s->timing.is_cron = 1;
        set_str(&s->timing_text, v);
        return CAIRN_OK;
    case 4: keep = &s->keep_last; break;
    case 5: keep = &s->keep_daily; break;
    case 6: keep = &s->keep_weekly; break;
    case 8: keep = &s->keep_hourly; break;
    case 9: keep = &s->keep_monthly; break;
    case 10: keep = &s->keep_yearly; break;
    default:
        if (strcmp(v, "all") == 0)
            s->catchup = CAIRN_CATCHUP_ALL;
        else if (strcmp(v, "latest") == 0)
            s->catchup = CAIRN_CATCHUP_LATEST;
        else if (strcmp(v, "none") == 0)
            s->catchup = CAIRN_CATCHUP_NONE;
        else
            return bad(p, "%s = '%s': expected all, latest or none", k, v);
        return CAIRN_OK;
    }
    if (parse_uint(v, 1000000, keep) != 0)
        return bad(p, "%s = '%s': expected a count", k, v);
    return CAIRN_OK;
}

static int finish_schedule(struct parser *p)
{
    struct cairn_schedule_cfg *s = p->sc;
    if (s == NULL)
        return CAIRN_OK;
    const char *missing = s->source == NULL        ? "source"
                          : s->to == NULL          ? "to"
                          : s->timing_text == NULL ? "every or cron"
                          : !(p->seen & (1u << 4)) ? "keep-last"
                                                   : NULL;
    if (missing != NULL)
        return cairn_err_set(p->err, CAIRN_E_INVALID, "%s:%d: [schedule %s] needs %s", p->path,
                             s->line, s->name, missing);
    if (s->keep_last == 0)
        return cairn_err_set(p->err, CAIRN_E_INVALID,
                             "%s:%d: [schedule %s]: keep-last must be at least 1", p->path, s->line,
                             s->name);
    return CAIRN_OK;
}

static int section(struct parser *p, char *hdr)
{
    int rc = finish_schedule(p);
    if (rc != CAIRN_OK)
        return rc;
    p->sc = NULL;
    p->in_daemon = 0;
    p->seen = 0;
    hdr = trim(hdr);
    if (strcmp(hdr, "cairnd") == 0) {
        p->in_daemon = 1;
        return CAIRN_OK;
    }
    if (strncmp(hdr, "schedule", 8) != 0 || !isspace((unsigned char)hdr[8]))
        return bad(p, "unknown section [%s](expected [cairnd] or [schedule NAME])", hdr);
    char *name = trim(hdr + 8);
    if (!cairn_state_name_valid(name))
        return bad(p, "schedule name '%s' is not valid (1-100 of A-Z a-z 0-9 . _ -)", name);
    struct cairn_config *c = p->c;
    for (size_t i = 0; i < c->n_schedules; i++)
        if (strcmp(c->schedules[i].name, name) == 0)
            return bad(p, "schedule '%s' defined twice", name);
    c->schedules = cairn_xrealloc(c->schedules, (c->n_schedules + 1) * sizeof(*c->schedules));
    p->sc = &c->schedules[c->n_schedules++];
    memset(p->sc, 0, sizeof(*p->sc));
    p->sc->name = cairn_xstrdup(name);
    p->sc->line = p->line;
    return CAIRN_OK;
}

static int line(struct parser *p, char *s)
{
    s = trim(s);
    if (*s == '\0' || *s == '#' || *s == ';')
        return CAIRN_OK;
    if (*s == '[') {
        char *end = strchr(s, ']');
        if (end == NULL || *trim(end + 1) != '\0')
            return bad(p, "malformed section header '%s'", s);
        *end = '\0';
        return section(p, s + 1);
    }
    char *eq = strchr(s, '=');
    if (eq == NULL)
        return bad(p, "expected 'key = value', got '%s'", s);
    *eq = '\0';
    char *k = trim(s), *v = trim(eq + 1);
    if (!p->in_daemon && p->sc == NULL)
        return bad(p, "'%s' outside a section", k);
    const char *const *keys = p->in_daemon ? k_daemon_keys : k_schedule_keys;
    int idx = key_index(keys, k);
    if (idx < 0)
        return bad(p, "unknown key '%s' in [%s]", k, p->in_daemon ? "cairnd" : "schedule");
    if (p->seen & (1u << idx))
        return bad(p, "'%s' set twice in one section", k);
    p->seen |= 1u << idx;
    if (*v == '\0')
        return bad(p, "'%s' has an empty value", k);
    if (!p->in_daemon &&
        ((idx == 2 && (p->seen & (1u << 3))) || (idx == 3 && (p->seen & (1u << 2)))))
        return bad(p, "use either every or cron, not both");
    return p->in_daemon ? daemon_key(p, idx, k, v) : schedule_key(p, idx, k, v);
}

int cairn_config_parse(const char *text, size_t len, const char *path, struct cairn_config **out,
                       struct cairn_err *err)
{
    *out = NULL;
    struct cairn_config *c = cairn_xcalloc(1, sizeof(*c));
    c->path = cairn_xstrdup(path);
    c->state_dir = cairn_xstrdup("/var/lib/cairnd");
    c->state_keep = 10;
    c->snapshot_interval = 30;
    c->state_check_interval = 300;
    c->metrics_listen = cairn_xstrdup("127.0.0.1:9469");
    c->log_level = CAIRN_LOG_INFO;
    c->catchup_max = 24;
    c->catchup_rate = 1;
    c->max_concurrent = 2;
    c->shutdown_timeout = 60;
    c->lock_wait = 600;
    struct parser p = {.c = c, .path = path, .err = err};
    int rc = CAIRN_OK;
    char buf[4096];
    size_t pos = 0;
    while (pos < len && rc == CAIRN_OK) {
        p.line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        if (n >= sizeof(buf)) {
            rc = bad(&p, "line longer than 4095 bytes");
            break;
        }
        memcpy(buf, text + pos, n);
        buf[n] = '\0';
        if (memchr(buf, '\0', n) != NULL)
            rc = bad(&p, "NUL byte in line");
        else
            rc = line(&p, buf);
        pos += n + 1;
    }
    if (rc == CAIRN_OK)
        rc = finish_schedule(&p);
    if (rc == CAIRN_OK && c->state_url == NULL) {
        char *db = cairn_path_join(c->state_dir, "state.db");
        c->state_url = cairn_xasprintf("sqlite:%s", db);
        free(db);
    }
    if (rc == CAIRN_OK && c->n_schedules == 0)
        rc = cairn_err_set(err, CAIRN_E_INVALID, "%s: no [schedule NAME] sections", path);
    for (size_t i = 0; rc == CAIRN_OK && i < c->n_schedules; i++)
        c->schedules[i].timing.zone = c->schedules[i].timing.is_cron ? c->zone : NULL;
    if (rc != CAIRN_OK) {
        cairn_config_free(c);
        return rc;
    }
    *out = c;
    return CAIRN_OK;
}

int cairn_config_load(const char *path, struct cairn_config **out, struct cairn_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cairn_read_file(path, CONFIG_MAX, &data, &len, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "config");
        return rc;
    }
    rc = cairn_config_parse((const char *)data, len, path, out, err);
    free(data);
    return rc;
}
