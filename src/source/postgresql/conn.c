/* PostgreSQL: the connection parameters from the URL, replication connections, waits that
 * watch the cancel flag and the idle timeout, and libpq's errors made safe and coded. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"
#include "pg.h"
#include "source/internal.h"

#define PG_POLL_MS 100 /* slice of every wait, for the cancel flag */

static void param(struct pg_params *p, const char *key, const char *val)
{
    if (val == NULL || p->n == PG_MAX_PARAMS)
        return;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], key) == 0) {
            free(p->owned[i]);
            p->owned[i] = xstrdup(val);
            p->vals[i] = p->owned[i];
            return;
        }
    p->keys[p->n] = key;
    p->owned[p->n] = xstrdup(val);
    p->vals[p->n] = p->owned[p->n];
    p->n++;
    p->keys[p->n] = NULL;
    p->vals[p->n] = NULL;
}

/* The libpq parameters a URL's query may set; anything else is refused by name. */
static const char *const query_keys[] = {"sslmode",          "sslrootcert", "sslcert",
                                         "sslkey",           "sslcrl",      "connect_timeout",
                                         "application_name", "password"};

static int query_params(struct pg_params *p, const struct source_url *u, struct cairn_err *err)
{
    for (const char *q = u->query; q != NULL && *q != '\0';) {
        size_t seg = strcspn(q, "&"), kl = strcspn(q, "=&");
        int known = 0;
        for (size_t i = 0; i < sizeof(query_keys) / sizeof(query_keys[0]); i++)
            if (strlen(query_keys[i]) == kl && strncmp(q, query_keys[i], kl) == 0)
                known = 1;
        if (!known && seg > 0)
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "%s: unknown URL parameter '%.*s' (known: sslmode, sslrootcert, "
                                 "sslcert, sslkey, sslcrl, connect_timeout, application_name)",
                                 p->where, (int)(kl < 64 ? kl : 64), q);
        q += seg;
        if (*q == '&')
            q++;
    }
    for (size_t i = 0; i + 1 < sizeof(query_keys) / sizeof(query_keys[0]); i++) {
        char *v = source_url_param(u, query_keys[i]);
        param(p, query_keys[i], v);
        free(v);
    }
    char *pw = source_url_param(u, "password");
    if (pw != NULL && p->password == NULL)
        p->password = pw;
    else
        wipe_free(pw);
    return CAIRN_OK;
}

int pg_params_init(struct pg_params *p, const char *url, const struct cairn_source_opts *o,
                   struct cairn_err *err)
{
    memset(p, 0, sizeof(*p));
    struct source_url u;
    int rc = source_url_parse(url, 5432, &u, err);
    if (rc != CAIRN_OK)
        return rc;
    int v6 = strchr(u.host, ':') != NULL;
    snprintf(p->where, sizeof(p->where), "postgresql %s%s%s:%u", v6 ? "[" : "", u.host,
             v6 ? "]" : "", u.port);
    char port[8];
    snprintf(port, sizeof(port), "%u", u.port);
    param(p, "host", u.host);
    param(p, "port", port);
    param(p, "user", u.user);
    const char *db = u.path[0] == '/' ? u.path + 1 : u.path;
    if (db[0] != '\0') {
        param(p, "dbname", db);
        p->database = 1;
    }
    param(p, "replication", p->database ? "database" : "true");
    param(p, "connect_timeout", "10");
    param(p, "sslrootcert", o->ca_file);
    param(p, "sslcert", o->cert_file);
    param(p, "sslkey", o->key_file);
    if (u.password != NULL)
        p->password = xstrdup(u.password);
    rc = query_params(p, &u, err);
    if (rc == CAIRN_OK && p->password == NULL && o->password_file != NULL)
        rc = source_read_secret(o->password_file, &p->password, err);
    /* PGPASSWORD and ~/.pgpass are read by libpq itself. */
    if (rc == CAIRN_OK && p->password != NULL)
        param(p, "password", p->password);
    source_url_free(&u);
    p->io_timeout_ms = o->io_timeout_ms > 0 ? o->io_timeout_ms : 0;
    p->cancel = o->cancel;
    if (rc != CAIRN_OK)
        pg_params_free(p);
    return rc;
}

void pg_params_free(struct pg_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->keys[i], "password") == 0)
            wipe_free(p->owned[i]);
        else
            free(p->owned[i]);
    }
    wipe_free(p->password);
    memset(p, 0, sizeof(*p));
}

/* msg made one line, without the password wherever libpq might have echoed it. */
static void clean_message(const struct pg_params *p, const char *msg, char *out, size_t cap)
{
    struct buf b = {0};
    const char *pw = p->password;
    size_t pwl = pw != NULL ? strlen(pw) : 0;
    for (const char *s = msg != NULL ? msg : ""; *s != '\0';) {
        if (pwl > 0 && strncmp(s, pw, pwl) == 0) {
            buf_adds(&b, "***");
            s += pwl;
            continue;
        }
        char c = *s++;
        if (c == '\n' || c == '\r' || c == '\t') {
            if (b.len > 0 && b.p[b.len - 1] != ' ')
                buf_addc(&b, ' ');
        } else {
            buf_addc(&b, (uint8_t)c);
        }
    }
    while (b.len > 0 && b.p[b.len - 1] == ' ')
        b.len--;
    if (b.len == 0)
        buf_adds(&b, "unknown error");
    str_escape(out, cap, (const char *)b.p, b.len);
    wipe(b.p, b.cap);
    buf_free(&b);
}

static int code_of(const char *msg, const char *state, int bad)
{
    if (state != NULL && (strncmp(state, "28", 2) == 0 || strcmp(state, "42501") == 0))
        return CAIRN_E_DENIED;
    static const char *const denied[] = {"password authentication failed",
                                         "no password supplied",
                                         "pg_hba.conf",
                                         "replication role",
                                         "permission denied",
                                         "authentication failed",
                                         "must be superuser"};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        if (strstr(msg, denied[i]) != NULL)
            return CAIRN_E_DENIED;
    if (strstr(msg, "role \"") != NULL && strstr(msg, "does not exist") != NULL)
        return CAIRN_E_DENIED; /* as libpq reports an unknown user: 28000 */
    if (strstr(msg, "database \"") != NULL && strstr(msg, "does not exist") != NULL)
        return CAIRN_E_NOTFOUND;
    if (strstr(msg, "timeout expired") != NULL)
        return CAIRN_E_TIMEOUT;
    if (bad || strstr(msg, "server closed the connection") || strstr(msg, "could not receive") ||
        strstr(msg, "could not send") || strstr(msg, "Connection refused") ||
        strstr(msg, "connection to server"))
        return CAIRN_E_NETWORK;
    return CAIRN_E_PROTOCOL;
}

int pg_fail(const struct pg_params *p, PGconn *c, const PGresult *r, const char *what,
            struct cairn_err *err)
{
    const char *raw = r != NULL && PQresultErrorMessage(r)[0] != '\0' ? PQresultErrorMessage(r)
                                                                      : PQerrorMessage(c);
    char msg[700];
    clean_message(p, raw, msg, sizeof(msg));
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int code = code_of(msg, state, c == NULL || PQstatus(c) == CONNECTION_BAD);
    return cairn_err_set(err, code, "%s: %s: %s", p->where, what, msg);
}

int pg_connect(const struct pg_params *p, PGconn **out, struct cairn_err *err)
{
    *out = NULL;
    PGconn *c = PQconnectdbParams(p->keys, p->vals, 0);
    if (c == NULL)
        return cairn_err_set(err, CAIRN_E_NOMEM, "%s: out of memory", p->where);
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = pg_fail(p, c, NULL, "connect", err);
        PQfinish(c);
        return rc;
    }
    if (PQserverVersion(c) < 150000) {
        int v = PQserverVersion(c);
        PQfinish(c);
        return cairn_err_set(err, CAIRN_E_UNSUPPORTED,
                             "%s: server version %d.%d: the base backup protocol cairn speaks "
                             "needs PostgreSQL 15 or later",
                             p->where, v / 10000, v % 10000);
    }
    *out = c;
    return CAIRN_OK;
}

int pg_wait(const struct pg_params *p, PGconn *c, int idle_ms, struct cairn_err *err)
{
    uint64_t idle_since = mono_ns();
    for (;;) {
        if (!PQconsumeInput(c))
            return pg_fail(p, c, NULL, "read", err);
        if (!PQisBusy(c))
            return CAIRN_OK;
        if (cancel_requested(p->cancel))
            return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", p->where);
        if (idle_ms > 0 && mono_ns() - idle_since > (uint64_t)idle_ms * 1000000u)
            return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: no reply for %d ms", p->where, idle_ms);
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        int n = poll(&pfd, 1, PG_POLL_MS);
        if (n < 0 && errno != EINTR)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "%s: poll", p->where);
        if (n > 0)
            idle_since = mono_ns();
    }
}

int pg_command(const struct pg_params *p, PGconn *c, const char *sql, PGresult **out,
               struct cairn_err *err)
{
    *out = NULL;
    if (!PQsendQuery(c, sql))
        return pg_fail(p, c, NULL, sql, err);
    int rc = pg_wait(p, c, p->io_timeout_ms, err);
    PGresult *r = NULL, *keep = NULL;
    /* Read every result up to the NULL that ends the command; keep the first. */
    while (rc == CAIRN_OK && (r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (keep == NULL && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK &&
            st != PGRES_COPY_BOTH)
            rc = pg_fail(p, c, r, sql, err);
        if (keep == NULL && rc == CAIRN_OK)
            keep = r;
        else
            PQclear(r);
        if (rc == CAIRN_OK && keep != NULL && PQresultStatus(keep) == PGRES_COPY_BOTH)
            break; /* the stream follows: no NULL result until it ends */
        if (rc == CAIRN_OK)
            rc = pg_wait(p, c, p->io_timeout_ms, err);
    }
    if (rc != CAIRN_OK) {
        PQclear(keep);
        return rc;
    }
    *out = keep;
    return CAIRN_OK;
}

int pg_copy_next(const struct pg_params *p, PGconn *c, const char *what, const volatile int *wake,
                 char **msg, int *len, struct cairn_err *err)
{
    *msg = NULL;
    *len = 0;
    uint64_t idle_since = mono_ns();
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 1);
        if (n > 0) {
            *msg = buf;
            *len = n;
            return CAIRN_OK;
        }
        if (n == -1)
            return CAIRN_OK;
        if (n == -2)
            return pg_fail(p, c, NULL, what, err);
        if (cancel_requested(p->cancel))
            return cairn_err_set(err, CAIRN_E_CANCELLED, "%s: cancelled", p->where);
        if (wake != NULL && __atomic_load_n(wake, __ATOMIC_ACQUIRE))
            return CAIRN_OK;
        if (wake == NULL && p->io_timeout_ms > 0 &&
            mono_ns() - idle_since > (uint64_t)p->io_timeout_ms * 1000000u)
            return cairn_err_set(err, CAIRN_E_TIMEOUT, "%s: %s: no progress for %d ms", p->where,
                                 what, p->io_timeout_ms);
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        int k = poll(&pfd, 1, PG_POLL_MS);
        if (k < 0 && errno != EINTR)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "%s: poll", p->where);
        if (k > 0) {
            idle_since = mono_ns();
            if (!PQconsumeInput(c))
                return pg_fail(p, c, NULL, what, err);
        }
    }
}

uint64_t pg_lsn_parse(const char *s)
{
    unsigned hi = 0, lo = 0;
    char tail;
    if (s == NULL || sscanf(s, "%X/%X%c", &hi, &lo, &tail) != 2)
        return 0;
    return ((uint64_t)hi << 32) | lo;
}

void pg_lsn_format(uint64_t lsn, char out[24])
{
    snprintf(out, 24, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}
