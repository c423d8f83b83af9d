/* cairnd configuration parser: INI-like sections, strict keys, "file:line: ..." errors. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "cairn/source.h"
#include "cairn/state.h"
#include "cairn/storage.h"
#include "common/util.h"

#define CONFIG_MAX (1u << 20)

static void hooks_free(struct cairn_hooks_cfg *h)
{
    free(h->before);
    free(h->after);
    free(h->on_failure);
    free(h->webhook);
}

void config_free(struct cairn_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_schedules; i++) {
        struct cairn_schedule_cfg *s = &c->schedules[i];
        free(s->name);
        free(s->source);
        free(s->password_file);
        free(s->key_file);
        free(s->tls_ca);
        free(s->tls_cert);
        free(s->tls_key);
        free(s->to);
        free(s->timing_text);
        hooks_free(&s->hooks);
        free(s->drill_probe);
    }
    free(c->schedules);
    free(c->path);
    free(c->state_dir);
    free(c->key_file);
    free(c->state_url);
    free(c->metrics_listen);
    free(c->timezone);
    cron_zone_free(c->zone);
    hooks_free(&c->hooks);
    free(c->drill_dir);
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
    uint64_t seen;                 /* bitmask of keys seen in the current section */
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
    *dst = xstrdup(v);
}

/* ---- keys with their own grammar (table kind KEY_FUNC) ---- */

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
    char *path = xasprintf("%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", v);
    struct cairn_err rerr;
    int rc = cron_zone_load(path, &c->zone, &rerr);
    if (rc == CAIRN_OK)
        c->timezone = xstrdup(v);
    else
        rc = bad(p, "%s = '%s': unknown time zone (%s; package tzdata)", k, v, rerr.msg);
    free(path);
    return rc;
}

static int metrics_listen_key(struct parser *p, const char *k, const char *v)
{
    struct cairn_config *c = p->c;
    free(c->metrics_listen);
    c->metrics_listen = NULL;
    if (strcmp(v, "off") == 0)
        return CAIRN_OK;
    if (strrchr(v, ':') == NULL)
        return bad(p, "%s = '%s': expected HOST:PORT or off", k, v);
    c->metrics_listen = xstrdup(v);
    return CAIRN_OK;
}

/* A duration kept in an unsigned field, bounded above. */
static int metrics_timeout_key(struct parser *p, const char *k, const char *v)
{
    int64_t secs;
    if (parse_duration(v, &secs) != 0 || secs < 1 || secs > 3600)
        return bad(p, "%s = '%s': expected a duration from 1s to 1h", k, v);
    p->c->metrics_timeout = (unsigned)secs;
    return CAIRN_OK;
}

static int log_format_key(struct parser *p, const char *k, const char *v)
{
    if (strcmp(v, "plain") != 0 && strcmp(v, "json") != 0)
        return bad(p, "%s = '%s': expected plain or json", k, v);
    p->c->log_json = strcmp(v, "json") == 0;
    return CAIRN_OK;
}

static int log_level_key(struct parser *p, const char *k, const char *v)
{
    int l = cairn_log_level_parse(v);
    if (l < 0)
        return bad(p, "%s = '%s': expected debug, info, warn, error or off", k, v);
    p->c->log_level = l;
    return CAIRN_OK;
}

static int catchup_rate_key(struct parser *p, const char *k, const char *v)
{
    if (parse_rate(v, &p->c->catchup_rate) != 0)
        return bad(p, "%s = '%s': expected runs per time such as 1/s, 10/m, 100/h", k, v);
    return CAIRN_OK;
}

static int seen(const struct parser *p, const char *key);

static int every_key(struct parser *p, const char *k, const char *v)
{
    struct cairn_schedule_cfg *s = p->sc;
    if (seen(p, "cron"))
        return bad(p, "use either every or cron, not both");
    if (parse_duration(v, &s->timing.every) != 0 || s->timing.every < 1)
        return bad(p, "%s = '%s': expected an interval such as 30s, 15m, 1h, 1d", k, v);
    s->timing.is_cron = 0;
    set_str(&s->timing_text, v);
    return CAIRN_OK;
}

static int cron_key(struct parser *p, const char *k, const char *v)
{
    (void)k;
    struct cairn_schedule_cfg *s = p->sc;
    struct cairn_err cerr;
    if (seen(p, "every"))
        return bad(p, "use either every or cron, not both");
    if (cron_parse(v, &s->timing.cron, &cerr) != CAIRN_OK)
        return bad(p, "%s", cerr.msg);
    s->timing.is_cron = 1;
    set_str(&s->timing_text, v);
    return CAIRN_OK;
}

/* start, end: RFC 3339 instants, the edges of an InfluxDB source's time window. */
static int edge_key(struct parser *p, const char *k, const char *v)
{
    struct cairn_schedule_cfg *s = p->sc;
    int start = strcmp(k, "start") == 0;
    if (parse_rfc3339(v, start ? &s->start_sec : &s->end_sec,
                      start ? &s->start_nsec : &s->end_nsec) != 0)
        return bad(p, "%s = '%s': expected an RFC 3339 time such as 2026-01-02T15:04:05Z", k, v);
    *(start ? &s->has_start : &s->has_end) = 1;
    return CAIRN_OK;
}

static int catchup_key(struct parser *p, const char *k, const char *v)
{
    struct cairn_schedule_cfg *s = p->sc;
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

/* rate-limit = 50M: upload bytes per second (the size grammar), or off. */
static int rate_limit_key(struct parser *p, const char *k, const char *v)
{
    if (strcmp(v, "off") == 0) {
        p->sc->rate_limit = 0;
        return CAIRN_OK;
    }
    if (parse_size(v, &p->sc->rate_limit) != 0 || p->sc->rate_limit < 1024)
        return bad(p, "%s = '%s': expected bytes per second of at least 1K, such as 50M", k, v);
    return CAIRN_OK;
}

/* lease-renew = 5s or 500ms: the tests renew fast. */
static int lease_renew_key(struct parser *p, const char *k, const char *v)
{
    size_t n = strlen(v);
    unsigned ms;
    int64_t secs;
    if (n > 2 && strcmp(v + n - 2, "ms") == 0) {
        char num[16];
        if (n - 2 >= sizeof(num))
            return bad(p, "%s = '%s': expected a duration such as 5s or 500ms", k, v);
        memcpy(num, v, n - 2);
        num[n - 2] = '\0';
        if (parse_uint(num, 3600000, &ms) != 0 || ms < 50)
            return bad(p, "%s = '%s': expected a duration from 50ms to 1h", k, v);
        p->c->lease_renew_ms = ms;
    } else if (parse_duration(v, &secs) == 0 && secs >= 1 && secs <= 3600) {
        p->c->lease_renew_ms = secs * 1000;
    } else {
        return bad(p, "%s = '%s': expected a duration such as 5s or 500ms", k, v);
    }
    return CAIRN_OK;
}

/* The hooks of the current section: [cairnd]'s or the schedule's. */
static struct cairn_hooks_cfg *section_hooks(struct parser *p)
{
    return p->in_daemon ? &p->c->hooks : &p->sc->hooks;
}

static int webhook_key(struct parser *p, const char *k, const char *v)
{
    if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
        return bad(p, "%s: expected an http:// or https:// URL", k);
    set_str(&section_hooks(p)->webhook, v);
    return CAIRN_OK;
}

static int webhook_on_key(struct parser *p, const char *k, const char *v)
{
    if (strcmp(v, "failure") != 0 && strcmp(v, "always") != 0)
        return bad(p, "%s = '%s': expected failure or always", k, v);
    section_hooks(p)->webhook_on = strcmp(v, "always") == 0 ? 2 : 1;
    return CAIRN_OK;
}

/* force-read = yes: read every file of a local path, also those unchanged since the parent
 * backup (cairn backup --force-read). */
static int force_read_key(struct parser *p, const char *k, const char *v)
{
    int yes = strcmp(v, "yes") == 0 || strcmp(v, "true") == 0;
    if (!yes && strcmp(v, "no") != 0 && strcmp(v, "false") != 0)
        return bad(p, "%s = '%s': expected yes or no (true or false)", k, v);
    p->sc->force_read = yes;
    return CAIRN_OK;
}

/* "every 1d" (or a bare interval). */
static int drill_key(struct parser *p, const char *k, const char *v)
{
    if (strncmp(v, "every", 5) == 0 && isspace((unsigned char)v[5]))
        v = trim((char *)v + 5);
    if (strlen(p->sc->name) > CAIRN_STATE_NAME_MAX - 6)
        return bad(p, "%s: the schedule's name is too long for drills (at most %d bytes)", k,
                   CAIRN_STATE_NAME_MAX - 6);
    if (parse_duration(v, &p->sc->drill_every) != 0 || p->sc->drill_every < 60)
        return bad(p, "%s = '%s': expected every INTERVAL of at least 1m, such as every 1d", k, v);
    return CAIRN_OK;
}

/* ---- the key tables: adding a key is one line ---- */

enum key_kind {
    KEY_STRING,   /* char *, replaced */
    KEY_COUNT,    /* unsigned from lo to hi */
    KEY_DURATION, /* int64_t seconds, at least lo */
    KEY_FUNC,     /* fn parses and stores */
};

struct key {
    const char *name;
    enum key_kind kind;
    size_t off;           /* the field in struct cairn_config or struct cairn_schedule_cfg */
    unsigned lo, hi;      /* bounds (KEY_COUNT, KEY_DURATION) */
    const char *expected; /* the message when the value is refused: "KEY = 'V': expected ..." */
    int (*fn)(struct parser *p, const char *k, const char *v);
};

#define CFG(field) offsetof(struct cairn_config, field)
#define SCH(field) offsetof(struct cairn_schedule_cfg, field)

static const struct key k_daemon_keys[] = {
    {"state", KEY_STRING, CFG(state_url), 0, 0, NULL, NULL},
    {"state-dir", KEY_STRING, CFG(state_dir), 0, 0, NULL, NULL},
    /* The key file of every schedule's encrypted repository that has none of its own
     * (systemd: LoadCredential=repo.key:/etc/cairn/repo.key, then key-file =
     * /run/credentials/cairnd.service/repo.key). */
    {"key-file", KEY_STRING, CFG(key_file), 0, 0, NULL, NULL},
    {"state-keep", KEY_COUNT, CFG(state_keep), 1, 100000, "a count from 1 to 100000", NULL},
    {"snapshot-interval", KEY_DURATION, CFG(snapshot_interval), 1, 0, "a duration such as 30s, 5m",
     NULL},
    {"metrics-listen", KEY_FUNC, 0, 0, 0, NULL, metrics_listen_key},
    {"log-format", KEY_FUNC, 0, 0, 0, NULL, log_format_key},
    {"log-level", KEY_FUNC, 0, 0, 0, NULL, log_level_key},
    {"catch-up-max", KEY_COUNT, CFG(catchup_max), 0, 1000000, "a count (0 disables catch-up)",
     NULL},
    {"catch-up-rate", KEY_FUNC, 0, 0, 0, NULL, catchup_rate_key},
    {"max-concurrent", KEY_COUNT, CFG(max_concurrent), 1, 64, "a count from 1 to 64", NULL},
    {"shutdown-timeout", KEY_DURATION, CFG(shutdown_timeout), 0, 0, "a duration such as 60s", NULL},
    {"timezone", KEY_FUNC, 0, 0, 0, NULL, timezone_key},
    {"state-check-interval", KEY_DURATION, CFG(state_check_interval), 1, 0, "a duration such as 5m",
     NULL},
    {"metrics-timeout", KEY_FUNC, 0, 0, 0, NULL, metrics_timeout_key},
    {"metrics-max-connections", KEY_COUNT, CFG(metrics_max_conn), 1, 10000,
     "a count from 1 to 10000", NULL},
    {"metrics-connections-per-ip", KEY_COUNT, CFG(metrics_per_ip), 1, 10000,
     "a count from 1 to 10000", NULL},
    {"lock-wait", KEY_DURATION, CFG(lock_wait), 0, 0, "a duration such as 10m (0 fails at once)",
     NULL},
    /* High availability on a PostgreSQL state (docs/OPERATIONS.md). */
    {"lease", KEY_DURATION, CFG(lease), 1, 0, "a duration such as 15s", NULL},
    {"lease-renew", KEY_FUNC, 0, 0, 0, NULL, lease_renew_key},
    /* Hooks and webhook of every schedule without its own (docs/OPERATIONS.md). */
    {"before", KEY_STRING, CFG(hooks.before), 0, 0, NULL, NULL},
    {"after", KEY_STRING, CFG(hooks.after), 0, 0, NULL, NULL},
    {"on-failure", KEY_STRING, CFG(hooks.on_failure), 0, 0, NULL, NULL},
    {"hook-timeout", KEY_DURATION, CFG(hooks.timeout), 1, 0, "a duration such as 5m", NULL},
    {"webhook", KEY_FUNC, 0, 0, 0, NULL, webhook_key},
    {"webhook-on", KEY_FUNC, 0, 0, 0, NULL, webhook_on_key},
    {"drill-dir", KEY_STRING, CFG(drill_dir), 0, 0, NULL, NULL},
    {NULL, KEY_FUNC, 0, 0, 0, NULL, NULL},
};

static const struct key k_schedule_keys[] = {
    {"source", KEY_STRING, SCH(source), 0, 0, NULL, NULL},
    /* The source's secret and TLS files, as cairn backup's --password-file and --tls-*. */
    {"password-file", KEY_STRING, SCH(password_file), 0, 0, NULL, NULL},
    /* The key file of the encrypted repository at `to`, as cairn backup's --key-file. */
    {"key-file", KEY_STRING, SCH(key_file), 0, 0, NULL, NULL},
    {"tls-ca", KEY_STRING, SCH(tls_ca), 0, 0, NULL, NULL},
    {"tls-cert", KEY_STRING, SCH(tls_cert), 0, 0, NULL, NULL},
    {"tls-key", KEY_STRING, SCH(tls_key), 0, 0, NULL, NULL},
    {"source-timeout", KEY_DURATION, SCH(source_timeout), 1, 0, "a duration such as 2h", NULL},
    /* An InfluxDB source's time window: fixed edges, or the last DURATION before each run. */
    {"start", KEY_FUNC, 0, 0, 0, NULL, edge_key},
    {"end", KEY_FUNC, 0, 0, 0, NULL, edge_key},
    {"window", KEY_DURATION, SCH(window), 1, 0, "a duration such as 1h", NULL},
    {"to", KEY_STRING, SCH(to), 0, 0, NULL, NULL},
    {"every", KEY_FUNC, 0, 0, 0, NULL, every_key},
    {"cron", KEY_FUNC, 0, 0, 0, NULL, cron_key},
    {"keep-last", KEY_COUNT, SCH(keep_last), 0, 1000000, "a count", NULL},
    {"keep-daily", KEY_COUNT, SCH(keep_daily), 0, 1000000, "a count", NULL},
    {"keep-weekly", KEY_COUNT, SCH(keep_weekly), 0, 1000000, "a count", NULL},
    {"catch-up", KEY_FUNC, 0, 0, 0, NULL, catchup_key},
    {"keep-hourly", KEY_COUNT, SCH(keep_hourly), 0, 1000000, "a count", NULL},
    {"keep-monthly", KEY_COUNT, SCH(keep_monthly), 0, 1000000, "a count", NULL},
    {"keep-yearly", KEY_COUNT, SCH(keep_yearly), 0, 1000000, "a count", NULL},
    {"keep-within", KEY_DURATION, SCH(keep_within), 1, 0, "a duration such as 7d, 36h, 2w, 1y",
     NULL},
    {"rate-limit", KEY_FUNC, 0, 0, 0, NULL, rate_limit_key},
    {"force-read", KEY_FUNC, 0, 0, 0, NULL, force_read_key},
    {"before", KEY_STRING, SCH(hooks.before), 0, 0, NULL, NULL},
    {"after", KEY_STRING, SCH(hooks.after), 0, 0, NULL, NULL},
    {"on-failure", KEY_STRING, SCH(hooks.on_failure), 0, 0, NULL, NULL},
    {"hook-timeout", KEY_DURATION, SCH(hooks.timeout), 1, 0, "a duration such as 5m", NULL},
    {"webhook", KEY_FUNC, 0, 0, 0, NULL, webhook_key},
    {"webhook-on", KEY_FUNC, 0, 0, 0, NULL, webhook_on_key},
    {"drill", KEY_FUNC, 0, 0, 0, NULL, drill_key},
    {"drill-probe", KEY_STRING, SCH(drill_probe), 0, 0, NULL, NULL},
    {"drill-timeout", KEY_DURATION, SCH(drill_timeout), 1, 0, "a duration such as 30m", NULL},
    {NULL, KEY_FUNC, 0, 0, 0, NULL, NULL},
};

/* Keys seen in a section are bits of a uint64_t (struct parser's seen). */
_Static_assert(sizeof(k_daemon_keys) / sizeof(k_daemon_keys[0]) <= 64, "too many [cairnd] keys");
_Static_assert(sizeof(k_schedule_keys) / sizeof(k_schedule_keys[0]) <= 64,
               "too many [schedule] keys");

static const struct key *section_keys(const struct parser *p)
{
    return p->in_daemon ? k_daemon_keys : k_schedule_keys;
}

static int key_index(const struct key *keys, const char *k)
{
    for (int i = 0; keys[i].name; i++)
        if (strcmp(keys[i].name, k) == 0)
            return i;
    return -1;
}

/* Has the current section set `key` already? */
static int seen(const struct parser *p, const char *key)
{
    int i = key_index(section_keys(p), key);
    return i >= 0 && (p->seen & ((uint64_t)1 << i));
}

/* Store v into the field of key (in base: the config or the schedule). */
static int set_key(struct parser *p, const struct key *key, void *base, const char *v)
{
    char *field = (char *)base + key->off;
    unsigned u;
    switch (key->kind) {
    case KEY_STRING: set_str((char **)(void *)field, v); return CAIRN_OK;
    case KEY_COUNT:
        if (parse_uint(v, key->hi, &u) != 0 || u < key->lo)
            break;
        *(unsigned *)(void *)field = u;
        return CAIRN_OK;
    case KEY_DURATION:
        if (parse_duration(v, (int64_t *)(void *)field) != 0 ||
            *(int64_t *)(void *)field < (int64_t)key->lo)
            break;
        return CAIRN_OK;
    case KEY_FUNC: return key->fn(p, key->name, v);
    }
    return bad(p, "%s = '%s': expected %s", key->name, v, key->expected);
}

/* Can a backup of s ever start? Its storage URL opens (the drivers only parse it here) and
 * its source is a known scheme, HOST:PORT or an absolute path: a typo fails at load (and in
 * --dry-run), not at the first run hours later. */
static int check_urls(struct parser *p, const struct cairn_schedule_cfg *s)
{
    struct cairn_storage *st = NULL;
    struct cairn_err serr;
    if (cairn_storage_open(s->to, &st, &serr) != CAIRN_OK)
        return cairn_err_set(p->err, CAIRN_E_INVALID, "%s:%d: [schedule %s] to: %s", p->path,
                             s->line, s->name, serr.msg);
    cairn_storage_free(st);
    const char *src = s->source, *colon = strchr(src, ':');
    size_t sl = strspn(src, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    if (src[0] == '/' || cairn_source_driver_for(src) != NULL ||
        strncmp(src, "influxdb://", 11) == 0) /* the engine registers influxdb:// itself */
        return CAIRN_OK;
    const char *port = strrchr(src, ':'); /* HOST:PORT (or [v6]:PORT) of a snapshot service */
    if (port != NULL && port > src && port[1] != '\0' &&
        strspn(port + 1, "0123456789") == strlen(port + 1))
        return CAIRN_OK;
    if (colon != NULL && sl == (size_t)(colon - src) && sl > 0)
        return cairn_err_set(p->err, CAIRN_E_INVALID,
                             "%s:%d: [schedule %s] source '%.*s:': unknown source scheme "
                             "(docs/SOURCES.md lists them)",
                             p->path, s->line, s->name, (int)sl, src);
    return cairn_err_set(p->err, CAIRN_E_INVALID,
                         "%s:%d: [schedule %s] source '%s': expected a source URL, HOST:PORT or "
                         "an absolute path (a relative one would depend on cairnd's working "
                         "directory)",
                         p->path, s->line, s->name, src);
}

/* A time window (start, end, window) belongs to an InfluxDB source (influxdb://HOST:PORT or
 * a bare HOST:PORT), is fixed or relative, and does not end before it starts. */
static int check_window(struct parser *p, const struct cairn_schedule_cfg *s)
{
    if (!s->has_start && !s->has_end && s->window == 0)
        return CAIRN_OK;
    const char *src = s->source;
    int influx = strncmp(src, "influxdb://", 11) == 0 ||
                 (strstr(src, "://") == NULL && strncmp(src, "exec:", 5) != 0 && src[0] != '/' &&
                  src[0] != '.' && strchr(src, ':') != NULL);
    const char *why = NULL;
    if (!influx)
        why = "start, end and window take an InfluxDB source (influxdb://HOST:PORT or HOST:PORT)";
    else if (s->window != 0 && (s->has_start || s->has_end))
        why = "use either window or start/end, not both";
    else if (s->has_start && s->has_end &&
             (s->start_sec > s->end_sec ||
              (s->start_sec == s->end_sec && s->start_nsec > s->end_nsec)))
        why = "start is after end";
    if (why == NULL)
        return CAIRN_OK;
    return cairn_err_set(p->err, CAIRN_E_INVALID, "%s:%d: [schedule %s]: %s", p->path, s->line,
                         s->name, why);
}

static int finish_schedule(struct parser *p)
{
    struct cairn_schedule_cfg *s = p->sc;
    if (s == NULL)
        return CAIRN_OK;
    const char *missing = s->source == NULL        ? "source"
                          : s->to == NULL          ? "to"
                          : s->timing_text == NULL ? "every or cron"
                          : !seen(p, "keep-last")  ? "keep-last"
                                                   : NULL;
    if (missing != NULL)
        return cairn_err_set(p->err, CAIRN_E_INVALID, "%s:%d: [schedule %s] needs %s", p->path,
                             s->line, s->name, missing);
    if (s->keep_last == 0)
        return cairn_err_set(p->err, CAIRN_E_INVALID,
                             "%s:%d: [schedule %s]: keep-last must be at least 1", p->path, s->line,
                             s->name);
    int rc = check_window(p, s);
    return rc != CAIRN_OK ? rc : check_urls(p, s);
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
    if (strncmp(name, "drill.", 6) == 0) /* the state's entries of restore drills */
        return bad(p, "schedule name '%s': the prefix drill. is reserved", name);
    struct cairn_config *c = p->c;
    for (size_t i = 0; i < c->n_schedules; i++)
        if (strcmp(c->schedules[i].name, name) == 0)
            return bad(p, "schedule '%s' defined twice", name);
    c->schedules = xrealloc(c->schedules, (c->n_schedules + 1) * sizeof(*c->schedules));
    p->sc = &c->schedules[c->n_schedules++];
    memset(p->sc, 0, sizeof(*p->sc));
    p->sc->name = xstrdup(name);
    p->sc->line = p->line;
    return CAIRN_OK;
}

/* ${CREDENTIALS_DIRECTORY} (systemd's LoadCredential= directory) is the one variable a value
 * may name; any other ${...} or $(...) was meant for a shell that never ran. Returns the value
 * to use (out, malloc'd) or an error. */
static int expand(struct parser *p, const char *k, const char *v, char **out)
{
    static const char var[] = "${CREDENTIALS_DIRECTORY}";
    const size_t vn = sizeof(var) - 1;
    *out = NULL;
    const char *d = strchr(v, '$');
    while (d != NULL && strncmp(d, var, vn) == 0)
        d = strchr(d + vn, '$');
    if (d != NULL) {
        const char *end = d[1] == '{' ? strchr(d, '}') : d[1] == '(' ? strchr(d, ')') : NULL;
        return bad(p,
                   "%s = '%s': unexpanded variable '%.*s' (cairnd expands only "
                   "${CREDENTIALS_DIRECTORY}; write the value itself)",
                   k, v, end ? (int)(end - d + 1) : (int)strlen(d), d);
    }
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (strstr(v, var) != NULL && (dir == NULL || *dir == '\0'))
        return bad(p,
                   "%s = '%s': ${CREDENTIALS_DIRECTORY} is not set (start cairnd from a systemd "
                   "unit with LoadCredential=)",
                   k, v);
    char *res = xstrdup(v);
    for (char *at; (at = strstr(res, var)) != NULL;) {
        char *next = xasprintf("%.*s%s%s", (int)(at - res), res, dir, at + vn);
        free(res);
        res = next;
    }
    *out = res;
    return CAIRN_OK;
}

/* Values a shell runs (hooks, drill probes, exec: sources) keep their $VARIABLES: the shell
 * expands them, from cairnd's environment and the hook's CAIRN_* variables. */
static int shell_value(const char *k, const char *v)
{
    static const char *const keys[] = {"before", "after", "on-failure", "drill-probe"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(k, keys[i]) == 0)
            return 1;
    return strcmp(k, "source") == 0 && strncmp(v, "exec:", 5) == 0;
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
    const struct key *keys = section_keys(p);
    int idx = key_index(keys, k);
    if (idx < 0)
        return bad(p, "unknown key '%s' in [%s]", k, p->in_daemon ? "cairnd" : "schedule");
    if (p->seen & ((uint64_t)1 << idx))
        return bad(p, "'%s' set twice in one section", k);
    p->seen |= (uint64_t)1 << idx;
    if (*v == '\0')
        return bad(p, "'%s' has an empty value", k);
    char *ev = NULL;
    int rc = shell_value(k, v) ? (ev = xstrdup(v), CAIRN_OK) : expand(p, k, v, &ev);
    if (rc == CAIRN_OK)
        rc = set_key(p, &keys[idx], p->in_daemon ? (void *)p->c : (void *)p->sc, ev);
    free(ev);
    return rc;
}

/* A schedule's hooks: each key it does not set comes from [cairnd]. */
static void hooks_inherit(struct cairn_hooks_cfg *h, const struct cairn_hooks_cfg *g)
{
    char **mine[] = {&h->before, &h->after, &h->on_failure, &h->webhook};
    char *const theirs[] = {g->before, g->after, g->on_failure, g->webhook};
    for (size_t i = 0; i < 4; i++)
        if (*mine[i] == NULL && theirs[i] != NULL)
            *mine[i] = xstrdup(theirs[i]);
    if (h->timeout == 0)
        h->timeout = g->timeout != 0 ? g->timeout : 300;
    if (h->webhook_on == 0)
        h->webhook_on = g->webhook_on != 0 ? g->webhook_on : 1;
}

int config_parse(const char *text, size_t len, const char *path, struct cairn_config **out,
                 struct cairn_err *err)
{
    *out = NULL;
    struct cairn_config *c = xcalloc(1, sizeof(*c));
    c->path = xstrdup(path);
    c->state_dir = xstrdup("/var/lib/cairnd");
    c->state_keep = 10;
    c->snapshot_interval = 30;
    c->state_check_interval = 300;
    c->metrics_listen = xstrdup("127.0.0.1:9469");
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
        char *db = path_join(c->state_dir, "state.db");
        c->state_url = xasprintf("sqlite:%s", db);
        free(db);
    }
    if (rc == CAIRN_OK && c->lease > 0 && strncmp(c->state_url, "postgres", 8) != 0)
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "%s: lease needs a PostgreSQL state (state = postgresql://...); a "
                           "SQLite state allows one cairnd",
                           path);
    if (rc == CAIRN_OK && c->lease > 0 && c->lease_renew_ms == 0)
        c->lease_renew_ms = c->lease * 1000 / 3;
    if (rc == CAIRN_OK && c->lease > 0 && c->lease_renew_ms * 2 > c->lease * 1000)
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "%s: lease-renew must be at most half the lease (%llds)", path,
                           (long long)c->lease);
    if (rc == CAIRN_OK && c->drill_dir == NULL)
        c->drill_dir = path_join(c->state_dir, "drill");
    if (rc == CAIRN_OK && c->n_schedules == 0)
        rc = cairn_err_set(err, CAIRN_E_INVALID, "%s: no [schedule NAME] sections", path);
    for (size_t i = 0; rc == CAIRN_OK && i < c->n_schedules; i++) {
        c->schedules[i].timing.zone = c->schedules[i].timing.is_cron ? c->zone : NULL;
        if (c->schedules[i].key_file == NULL && c->key_file != NULL)
            c->schedules[i].key_file = xstrdup(c->key_file);
        hooks_inherit(&c->schedules[i].hooks, &c->hooks);
    }
    if (rc != CAIRN_OK) {
        config_free(c);
        return rc;
    }
    *out = c;
    return CAIRN_OK;
}

int config_load(const char *path, struct cairn_config **out, struct cairn_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_file_max(path, CONFIG_MAX, &data, &len, err);
    if (rc != CAIRN_OK) {
        cairn_err_wrap(err, rc, "config");
        return rc;
    }
    rc = config_parse((const char *)data, len, path, out, err);
    free(data);
    return rc;
}
