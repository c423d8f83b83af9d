/* PostgreSQL: one base backup. IDENTIFY_SYSTEM and wal_segment_size on the main replication
 * connection; the WAL streamer's connection and temporary slot; then PostgreSQL 15's
 * BASE_BACKUP in the "copystream" form (TARGET 'client'): one COPY carrying every tablespace's
 * tar ('n' new archive, 'd' data, 'p' progress, 'm' manifest follows). Each archive streams
 * into its own backup file while its members are hashed; backup_manifest is checked line by
 * line as it arrives; the backup's end LSN tells the WAL streamer where to stop. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn/log.h"
#include "common/util.h"
#include "pg.h"

struct bb {
    const struct pg_params *p;
    const struct cairn_source_opts *o;
    struct cairn_backup *b;
    PGconn *c;
    char sysid[32];
    uint64_t seg_size, start, end;
    uint32_t tli, end_tli;
    struct pg_wal *wal;
    struct pg_files files;
    struct cairn_writer *w; /* the archive or manifest being received */
    char what[400];         /* "base.tar of postgresql HOST:PORT" */
    struct pg_tar tar;
    int in_tar, in_man;
    struct pg_manifest man;
    uint64_t bytes;
    json_t *spaces; /* [{"oid": N, "location": "..."}] */
};

/* "16MB" and the like (SHOW's units) in bytes. */
static uint64_t size_setting(const char *s)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return 0;
    if (strcmp(end, "kB") == 0)
        v <<= 10;
    else if (strcmp(end, "MB") == 0)
        v <<= 20;
    else if (strcmp(end, "GB") == 0)
        v <<= 30;
    else if (strcmp(end, "B") != 0 && *end != '\0')
        return 0;
    return v;
}

static int identify(struct bb *x, struct cairn_err *err)
{
    PGresult *r = NULL;
    int rc = pg_command(x->p, x->c, "IDENTIFY_SYSTEM", &r, err);
    if (rc == CAIRN_OK && (PQntuples(r) != 1 || PQnfields(r) < 3))
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: IDENTIFY_SYSTEM: unexpected reply",
                           x->p->where);
    if (rc == CAIRN_OK) {
        snprintf(x->sysid, sizeof(x->sysid), "%s", PQgetvalue(r, 0, 0));
        x->tli = (uint32_t)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
    }
    PQclear(r);
    r = NULL;
    if (rc == CAIRN_OK)
        rc = pg_command(x->p, x->c, "SHOW wal_segment_size", &r, err);
    if (rc == CAIRN_OK) {
        x->seg_size = PQntuples(r) == 1 ? size_setting(PQgetvalue(r, 0, 0)) : 0;
        if (x->seg_size < (1u << 20) || x->seg_size > (1u << 30) ||
            (x->seg_size & (x->seg_size - 1)) != 0)
            rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: unexpected wal_segment_size",
                               x->p->where);
    }
    PQclear(r);
    return rc;
}

/* The next result of the running BASE_BACKUP (NULL: the command is over). idle: whether the
 * idle timeout applies (not while the server runs the start checkpoint, which may rightly
 * take long on a large server, as it does for pg_basebackup). */
static int next_result(struct bb *x, int idle, PGresult **r, struct cairn_err *err)
{
    int rc = pg_wait(x->p, x->c, idle ? x->p->io_timeout_ms : 0, err);
    *r = rc == CAIRN_OK ? PQgetResult(x->c) : NULL;
    return rc;
}

static int want_tuples(struct bb *x, PGresult *r, const char *what, struct cairn_err *err)
{
    if (r == NULL)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: BASE_BACKUP ended before %s", x->p->where,
                             what);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return pg_fail(x->p, x->c, r, "BASE_BACKUP", err);
    return CAIRN_OK;
}

/* Start BASE_BACKUP and read its first two result sets: the start and the tablespaces. */
static int start_backup(struct bb *x, struct cairn_err *err)
{
    static const char cmd[] = "BASE_BACKUP ( LABEL 'cairn', CHECKPOINT 'fast', WAIT 0, "
                              "MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256', TARGET 'client' )";
    if (!PQsendQuery(x->c, cmd))
        return pg_fail(x->p, x->c, NULL, "BASE_BACKUP", err);
    PGresult *r = NULL;
    int rc = next_result(x, 0, &r, err);
    if (rc == CAIRN_OK)
        rc = want_tuples(x, r, "its start position", err);
    if (rc == CAIRN_OK && (PQntuples(r) != 1 || PQnfields(r) < 2 ||
                           (x->start = pg_lsn_parse(PQgetvalue(r, 0, 0))) == 0))
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: BASE_BACKUP: bad start position",
                           x->p->where);
    if (rc == CAIRN_OK) {
        x->tli = (uint32_t)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
        rc = pg_wal_start(x->wal, x->start, x->tli, err);
    }
    PQclear(r);
    r = NULL;
    if (rc == CAIRN_OK)
        rc = next_result(x, 1, &r, err);
    if (rc == CAIRN_OK)
        rc = want_tuples(x, r, "its tablespace list", err);
    for (int i = 0; rc == CAIRN_OK && i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0))
            continue; /* the main data directory */
        json_array_append_new(x->spaces,
                              json_pack("{s:I,s:s}", "oid",
                                        (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                                        "location", PQgetvalue(r, i, 1)));
    }
    PQclear(r);
    r = NULL;
    if (rc == CAIRN_OK)
        rc = next_result(x, 1, &r, err);
    if (rc == CAIRN_OK && (r == NULL || PQresultStatus(r) != PGRES_COPY_OUT))
        rc = r != NULL ? pg_fail(x->p, x->c, r, "BASE_BACKUP", err)
                       : cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: BASE_BACKUP sent no data",
                                       x->p->where);
    PQclear(r);
    return rc;
}

/* The archive (or manifest) being received is whole: check it and commit its file. */
static int end_file(struct bb *x, struct cairn_err *err)
{
    int rc = CAIRN_OK;
    if (x->in_tar)
        rc = pg_tar_finish(&x->tar, err);
    pg_tar_free(&x->tar);
    x->in_tar = 0;
    if (rc == CAIRN_OK && x->w != NULL)
        rc = cairn_writer_close(x->w, err);
    cairn_writer_free(x->w);
    x->w = NULL;
    return rc;
}

static int open_file(struct bb *x, const char *name, struct cairn_err *err)
{
    /* zstd -1 on a helper thread: level 3 costs twice the CPU for a few percent on data pages. */
    struct cairn_file_opts fo = {.compression = CAIRN_COMPRESS_AUTO, .level = 1, .pipeline = 1};
    snprintf(x->what, sizeof(x->what), "%s of %s", name, x->p->where);
    return cairn_backup_add_file_opts(x->b, name, -1, &fo, &x->w, err);
}

/* 'n': a new archive, "base.tar" or "<oid>.tar" (no server compression was asked for). */
static int new_archive(struct bb *x, const char *m, int len, struct cairn_err *err)
{
    const char *name = m + 1;
    size_t nl = strnlen(name, (size_t)len - 1);
    if (nl + 1 >= (size_t)len - 1 || memchr(name + nl + 1, '\0', (size_t)len - nl - 2) == NULL)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: malformed COPY message (new archive)",
                             x->p->where);
    size_t digits = strspn(name, "0123456789");
    int base = strcmp(name, PG_BASE_TAR) == 0;
    if (!base && !(digits > 0 && digits < 11 && strcmp(name + digits, ".tar") == 0))
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: unexpected archive name '%.64s'",
                             x->p->where, name);
    int rc = end_file(x, err);
    if (rc == CAIRN_OK)
        rc = open_file(x, name, err);
    if (rc == CAIRN_OK) {
        char prefix[40] = "";
        if (!base)
            snprintf(prefix, sizeof(prefix), "pg_tblspc/%.*s/", (int)digits, name);
        pg_tar_init(&x->tar, x->what, prefix, &x->files);
        x->in_tar = 1;
    }
    return rc;
}

static int copy_message(struct bb *x, const char *m, int len, struct cairn_err *err)
{
    int rc;
    switch (m[0]) {
    case 'n': return new_archive(x, m, len, err);
    case 'd':
        if (!x->in_tar && !x->in_man)
            break;
        x->bytes += (uint64_t)len - 1;
        rc = x->in_man ? pg_manifest_feed(&x->man, (const uint8_t *)m + 1, (size_t)len - 1, err)
                       : pg_tar_feed(&x->tar, (const uint8_t *)m + 1, (size_t)len - 1, err);
        if (rc == CAIRN_OK)
            rc = cairn_writer_write(x->w, m + 1, (size_t)len - 1, err);
        if (rc == CAIRN_OK && x->o->progress != NULL)
            x->o->progress(x->o->progress_arg, x->bytes);
        return rc;
    case 'p':
        if (len != 9)
            break;
        return CAIRN_OK;
    case 'm':
        if (len != 1 || x->in_man)
            break;
        rc = end_file(x, err);
        if (rc == CAIRN_OK)
            rc = pg_files_seal(&x->files, x->p->where, err);
        if (rc == CAIRN_OK)
            rc = open_file(x, PG_MANIFEST, err);
        if (rc == CAIRN_OK) {
            pg_manifest_init(&x->man, x->what, &x->files);
            x->in_man = 1;
        }
        return rc;
    default: break;
    }
    return cairn_err_set(err, CAIRN_E_PROTOCOL,
                         "%s: malformed COPY message (type 0x%02x, %d bytes)", x->p->where,
                         (uint8_t)m[0], len);
}

/* The COPY: every archive, then the manifest. */
static int receive(struct bb *x, struct cairn_err *err)
{
    for (;;) {
        char *m = NULL;
        int len = 0;
        int rc = pg_copy_next(x->p, x->c, "base backup stream", NULL, &m, &len, err);
        if (rc == CAIRN_OK && m == NULL)
            break;
        if (rc == CAIRN_OK)
            rc = copy_message(x, m, len, err);
        PQfreemem(m);
        if (rc == CAIRN_OK && pg_wal_failed(x->wal))
            rc = pg_wal_finish(x->wal, 0, err), x->wal = NULL;
        if (rc != CAIRN_OK)
            return rc;
    }
    if (!x->in_man)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: BASE_BACKUP sent no backup_manifest",
                             x->p->where);
    return CAIRN_OK;
}

/* After the COPY: the end position, then the command's completion. */
static int finish_backup(struct bb *x, struct cairn_err *err)
{
    PGresult *r = NULL;
    int rc = next_result(x, 1, &r, err);
    if (rc == CAIRN_OK)
        rc = want_tuples(x, r, "its end position", err);
    if (rc == CAIRN_OK && (PQntuples(r) != 1 || PQnfields(r) < 2 ||
                           (x->end = pg_lsn_parse(PQgetvalue(r, 0, 0))) == 0))
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL, "%s: BASE_BACKUP: bad end position", x->p->where);
    if (rc == CAIRN_OK)
        x->end_tli = (uint32_t)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    while (rc == CAIRN_OK) {
        rc = next_result(x, 1, &r, err);
        if (rc != CAIRN_OK || r == NULL)
            break;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
            rc = pg_fail(x->p, x->c, r, "BASE_BACKUP", err);
        PQclear(r);
    }
    return rc;
}

static int record_meta(struct bb *x, struct cairn_err *err)
{
    char a[24], b[24];
    pg_lsn_format(x->start, a);
    pg_lsn_format(x->end, b);
    json_t *meta = json_pack("{s:s,s:i,s:s,s:s,s:I,s:i,s:O}", "system_identifier", x->sysid,
                             "timeline", (int)x->end_tli, "start_lsn", a, "end_lsn", b,
                             "wal_segment_size", (json_int_t)x->seg_size, "server_version",
                             PQserverVersion(x->c), "tablespaces", x->spaces);
    json_t *scope = json_pack("{s:s}", "system_identifier", x->sysid);
    int rc = cairn_backup_set_kind(x->b, PG_KIND, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_meta(x->b, meta, err);
    if (rc == CAIRN_OK)
        rc = cairn_backup_set_scope(x->b, scope, err);
    json_decref(meta);
    json_decref(scope);
    return rc;
}

static int run(struct bb *x, struct cairn_err *err)
{
    int rc = pg_connect(x->p, &x->c, err);
    if (rc == CAIRN_OK)
        rc = identify(x, err);
    if (rc == CAIRN_OK)
        rc = pg_wal_open(x->p, x->b, x->seg_size, &x->wal, err);
    if (rc == CAIRN_OK)
        rc = start_backup(x, err);
    if (rc == CAIRN_OK)
        rc = receive(x, err);
    if (rc == CAIRN_OK)
        rc = finish_backup(x, err);
    if (rc == CAIRN_OK) {
        rc = pg_wal_finish(x->wal, x->end, err);
        x->wal = NULL;
    }
    if (rc == CAIRN_OK)
        rc = pg_manifest_finish(&x->man, x->end_tli, x->start, x->end, err);
    if (rc == CAIRN_OK)
        rc = end_file(x, err);
    if (rc == CAIRN_OK)
        rc = record_meta(x, err);
    return rc;
}

int pg_backup(const struct pg_params *p, const struct cairn_source_opts *o, struct cairn_backup *b,
              struct cairn_err *err)
{
    struct bb x = {.p = p, .o = o, .b = b, .spaces = json_array()};
    int rc = run(&x, err);
    if (rc == CAIRN_OK)
        cairn_info("source", "%s: base backup of system %s: %zu files, %llu bytes, WAL to the end",
                   p->where, x.sysid, x.files.n, (unsigned long long)x.bytes);
    if (x.wal != NULL)
        pg_wal_finish(x.wal, 0, NULL); /* after a failure here: abandoned */
    if (x.c != NULL)
        PQfinish(x.c); /* a backup cut short ends on the server too */
    pg_tar_free(&x.tar);
    cairn_writer_free(x.w); /* unclosed: discarded */
    if (x.in_man)
        pg_manifest_free(&x.man);
    pg_files_free(&x.files);
    json_decref(x.spaces);
    return rc;
}
