/* The influxdb:// source driver (registered by engine_sources_init: see influxdb.h):
 * influxdb://HOST[:8088] (the engine maps a bare HOST:PORT here) is a snapshot service speaking the
 * InfluxDB 1.6 snapshotter protocol, a real influxd 1.5+ on its bind-address or cairnd serve
 * (src/influx, docs/PROTOCOL.md). It takes every cairn_source_select option: databases and
 * retention policies, incremental backups (the engine picks the parent by the scope this driver
 * reports), time-bounded ones, and restores whole chains online (requests 6 and 7) or into the
 * legacy `influxd backup` layout. MANIFESTs record the source as HOST:PORT, as they always have, so
 * chains of older backups continue. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/influxdb/influxdb.h"

static const struct cairn_source_select no_select;

const struct cairn_source_select *influxdb_select(const struct influxdb_src *s)
{
    return s->o.select != NULL ? s->o.select : &no_select;
}

int influxdb_cancelled(const struct influxdb_src *s)
{
    return cancel_requested(s->o.cancel);
}

void influxdb_report(const struct influxdb_src *s, const char *phase, const char *item,
                     uint64_t bytes, int finished, unsigned total_add)
{
    if (s->o.item_progress == NULL)
        return;
    struct cairn_source_item it = {phase, item, bytes, finished, total_add};
    s->o.item_progress(s->o.progress_arg, &it);
}

struct prog_writer {
    struct cairn_writer base;
    const struct influxdb_src *s;
    const char *phase, *item;
};

static int pw_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct prog_writer *p = (struct prog_writer *)w;
    if (influxdb_cancelled(p->s))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "cancelled");
    int rc = cairn_writer_write(w->next, buf, len, err);
    if (rc == CAIRN_OK)
        influxdb_report(p->s, p->phase, p->item, len, 0, 0);
    return rc;
}

static const struct cairn_writer_ops prog_writer_ops = {"progress", pw_write, NULL, NULL};

struct cairn_writer *influxdb_progress_writer(const struct influxdb_src *s,
                                              struct cairn_writer *next, const char *phase,
                                              const char *item)
{
    struct prog_writer *p = xcalloc(1, sizeof(*p));
    cairn_writer_init(&p->base, &prog_writer_ops, next);
    p->s = s;
    p->phase = phase;
    p->item = item;
    return &p->base;
}

static void ix_free(void *state)
{
    struct influxdb_src *s = state;
    if (s == NULL)
        return;
    cairn_influx_tls_free(s->tls);
    free(s->addr);
    free(s);
}

/* influxdb://HOST[:PORT][/] as HOST:PORT (port 8088 when none; IPv6 as [addr]:port), or NULL
 * for anything else (user-info, a path, a query). */
static char *parse_addr(const char *url)
{
    if (strncmp(url, "influxdb://", 11) != 0)
        return NULL;
    const char *h = url + 11;
    size_t n = strlen(h);
    if (n > 0 && h[n - 1] == '/')
        n--;
    if (n == 0 || memchr(h, '/', n) || memchr(h, '@', n) || memchr(h, '?', n) || memchr(h, '#', n))
        return NULL;
    const char *close = h[0] == '[' ? memchr(h, ']', n) : NULL;
    if (h[0] == '[' && (close == NULL || close == h + 1))
        return NULL;
    const char *colon =
        close ? (close + 1 < h + n && close[1] == ':' ? close + 1 : NULL) : memchr(h, ':', n);
    if (close != NULL && close + 1 < h + n && colon == NULL)
        return NULL; /* junk after ']' */
    if (colon == NULL)
        return xasprintf("%.*s:8088", (int)n, h);
    size_t plen = (size_t)(h + n - colon - 1);
    if (colon == h || plen == 0 || plen > 5 || strspn(colon + 1, "0123456789") < plen)
        return NULL;
    return xasprintf("%.*s", (int)n, h);
}

static int ix_open(const char *url, const struct cairn_source_opts *o, void **state,
                   struct cairn_err *err)
{
    char *addr = parse_addr(url);
    if (addr == NULL) {
        char shown[512]; /* never a password in an error */
        if (cairn_source_redact(url, shown, sizeof(shown)) != CAIRN_OK)
            snprintf(shown, sizeof(shown), "influxdb:(redacted)");
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "source '%s': an InfluxDB snapshot service is "
                             "influxdb://HOST[:PORT] or HOST:PORT (no user, path or query)",
                             shown);
    }
    struct influxdb_src *s = xcalloc(1, sizeof(*s));
    s->addr = addr;
    s->o = *o;
    if (o->tls || o->ca_file != NULL || o->cert_file != NULL || o->key_file != NULL) {
        struct cairn_influx_tls_opts t = {o->ca_file, o->cert_file, o->key_file,
                                          o->tls_server_name};
        int rc = cairn_influx_tls_client_new(&t, &s->tls, err);
        if (rc != CAIRN_OK) {
            ix_free(s);
            return rc;
        }
    }
    s->client = (struct cairn_influx_client){s->addr, o->connect_timeout_ms, o->io_timeout_ms,
                                             o->cancel, s->tls};
    *state = s;
    return CAIRN_OK;
}

static const char *ix_recorded(void *state)
{
    return ((struct influxdb_src *)state)->addr;
}

/* {"db": NAME|null, "rp": NAME|null} and, for a time-bounded backup, "start"/"end": no other
 * scope covers that one, so it is never a parent (docs/STORAGE.md). */
static json_t *ix_scope(void *state)
{
    const struct cairn_source_select *sel = influxdb_select(state);
    json_t *scope = json_pack("{s:s?, s:s?}", "db", sel->db, "rp", sel->rp);
    char t[64];
    if (sel->has_start) {
        format_rfc3339(sel->start_sec, sel->start_nsec, t, sizeof(t));
        json_object_set_new(scope, "start", json_string(t));
    }
    if (sel->has_end) {
        format_rfc3339(sel->end_sec, sel->end_nsec, t, sizeof(t));
        json_object_set_new(scope, "end", json_string(t));
    }
    return scope;
}

static int ix_restore(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err)
{
    return influxdb_restore_chain(state, &b, 1, into, err);
}

/* Once per process, before the engine looks a source up; a program that registered its own
 * "influxdb" driver first keeps it. */
static void register_once(void)
{
    struct cairn_err ignored;
    cairn_source_register(&engine_influxdb_driver, &ignored);
}

void engine_sources_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
}

const struct cairn_source_driver engine_influxdb_driver = {
    .scheme = "influxdb",
    .description = "InfluxDB 1.x snapshot service (influxd 1.5+ or cairnd serve), "
                   "influxdb://HOST[:8088] or HOST:PORT",
    .open = ix_open,
    .backup = influxdb_backup,
    .restore = ix_restore,
    .free = ix_free,
    .flags = CAIRN_SOURCE_SELECT,
    .scope = ix_scope,
    .recorded = ix_recorded,
    .restore_chain = influxdb_restore_chain,
};
