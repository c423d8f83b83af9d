/* PostgreSQL: backup_manifest (format version 1, PostgreSQL 13 to 16) checked as it streams.
 * The server writes one JSON object per line ("Files" entries, then "WAL-Ranges" entries)
 * and ends with the line "Manifest-Checksum": the SHA-256 of every byte before that line. So
 * the manifest is read a line at a time, never whole: each file line is parsed alone (jansson)
 * and matched against the files the tars held. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "pg.h"

#define LINE_MAX_LEN (64 * 1024) /* a file line is ~200 bytes; paths are under 1024 */

void pg_manifest_init(struct pg_manifest *m, const char *what, struct pg_files *files)
{
    memset(m, 0, sizeof(*m));
    m->what = what;
    m->files = files;
    cairn_sha256_init(&m->h);
}

void pg_manifest_free(struct pg_manifest *m)
{
    cairn_sha256_free(&m->h);
    free(m->line);
    m->line = NULL;
}

static int bad(struct pg_manifest *m, struct cairn_err *err, const char *why, const char *detail)
{
    char shown[300];
    str_escape(shown, sizeof(shown), detail, strlen(detail));
    return cairn_err_set(err, CAIRN_E_CORRUPT, "%s: %s%s%s", m->what, why, detail[0] ? ": " : "",
                         shown);
}

/* One "Files" entry: the file must have come in a tar with that size and SHA-256. */
static int file_line(struct pg_manifest *m, json_t *o, struct cairn_err *err)
{
    const char *path = json_string_value(json_object_get(o, "Path"));
    char decoded[2048];
    const char *enc = json_string_value(json_object_get(o, "Encoded-Path"));
    if (path == NULL && enc != NULL) {
        size_t n = strlen(enc) / 2;
        if (n >= sizeof(decoded) ||
            cairn_hex_decode(enc, strlen(enc), (uint8_t *)decoded, sizeof(decoded), NULL) != 0)
            return bad(m, err, "bad Encoded-Path", enc);
        decoded[n] = '\0';
        path = decoded;
    }
    json_t *size = json_object_get(o, "Size");
    const char *alg = json_string_value(json_object_get(o, "Checksum-Algorithm"));
    const char *sum = json_string_value(json_object_get(o, "Checksum"));
    if (path == NULL || !json_is_integer(size))
        return bad(m, err, "a file entry without Path or Size", "");
    if (alg == NULL || strcmp(alg, "SHA256") != 0 || sum == NULL || strlen(sum) != 64)
        return bad(m, err, "expected a SHA256 checksum for", path);
    struct pg_file *f = pg_files_find(m->files, path);
    if (f == NULL)
        return bad(m, err, "lists a file the base backup did not hold", path);
    if (f->listed)
        return bad(m, err, "lists a file twice", path);
    f->listed = 1;
    m->listed++;
    if ((uint64_t)json_integer_value(size) != f->size)
        return bad(m, err, "a file's size differs from the manifest's", path);
    char hex[65];
    cairn_hex_encode(f->sha256, 32, hex);
    if (strcmp(hex, sum) != 0)
        return bad(m, err,
                   "checksum mismatch (SHA-256 of the streamed file differs from the "
                   "manifest's) for",
                   path);
    return CAIRN_OK;
}

static int wal_line(struct pg_manifest *m, json_t *o, struct cairn_err *err)
{
    json_t *tli = json_object_get(o, "Timeline");
    uint64_t start = pg_lsn_parse(json_string_value(json_object_get(o, "Start-LSN")));
    uint64_t end = pg_lsn_parse(json_string_value(json_object_get(o, "End-LSN")));
    if (!json_is_integer(tli) || start == 0 || end < start)
        return bad(m, err, "a bad WAL-Ranges entry", "");
    /* Newest timeline first: the backup ends in the first range and starts in the last. */
    if (m->wal_ranges++ == 0) {
        m->wal_tli = (uint32_t)json_integer_value(tli);
        m->wal_end = end;
    }
    m->wal_start = start;
    return CAIRN_OK;
}

static int checksum_line(struct pg_manifest *m, const char *line, struct cairn_err *err)
{
    const char *v = strchr(line + 19, '"');
    char got[65];
    uint8_t d[32];
    cairn_sha256_final(&m->h, d);
    cairn_hex_encode(d, 32, got);
    if (v == NULL || strlen(v) < 66 || v[65] != '"')
        return bad(m, err, "bad Manifest-Checksum line", "");
    if (strncmp(v + 1, got, 64) != 0)
        return bad(m, err,
                   "Manifest-Checksum mismatch (the manifest was damaged or cut: its SHA-256 "
                   "differs from its last line's)",
                   "");
    if (strcmp(v + 66, "}") != 0)
        return bad(m, err, "junk after Manifest-Checksum", v + 66);
    m->checksum_ok = 1;
    return CAIRN_OK;
}

static int one_line(struct pg_manifest *m, char *line, size_t len, struct cairn_err *err)
{
    if (m->checksum_ok)
        return bad(m, err, "data after the Manifest-Checksum line", "");
    if (len >= 19 && strncmp(line, "\"Manifest-Checksum\"", 19) == 0)
        return checksum_line(m, line, err);
    cairn_sha256_update(&m->h, line, len);
    cairn_sha256_update(&m->h, "\n", 1);
    int file = strncmp(line, "{ \"Path\"", 8) == 0 || strncmp(line, "{ \"Encoded-Path\"", 16) == 0;
    int wal = strncmp(line, "{ \"Timeline\"", 12) == 0;
    if (!file && !wal)
        return CAIRN_OK;
    if (len > 0 && line[len - 1] == ',')
        len--;
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return bad(m, err, "a line is not JSON", je.text);
    }
    int rc = file ? file_line(m, o, err) : wal_line(m, o, err);
    json_decref(o);
    return rc;
}

int pg_manifest_feed(struct pg_manifest *m, const uint8_t *p, size_t n, struct cairn_err *err)
{
    while (n > 0) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if (m->len + k + 1 > LINE_MAX_LEN)
            return bad(m, err, "a line longer than 64 KiB", "");
        if (m->len + k + 1 > m->cap) {
            m->cap = m->len + k + 1 > 1024 ? m->len + k + 1 : 1024;
            m->line = xrealloc(m->line, m->cap);
        }
        memcpy(m->line + m->len, p, k);
        m->len += k;
        m->line[m->len] = '\0';
        p += k, n -= k;
        if (nl != NULL) {
            p++, n--;
            int rc = one_line(m, m->line, m->len, err);
            m->len = 0;
            if (rc != CAIRN_OK)
                return rc;
        }
    }
    return CAIRN_OK;
}

int pg_manifest_finish(struct pg_manifest *m, uint32_t tli, uint64_t start, uint64_t end,
                       struct cairn_err *err)
{
    if (m->len > 0) {
        int rc = one_line(m, m->line, m->len, err);
        m->len = 0;
        if (rc != CAIRN_OK)
            return rc;
    }
    if (!m->checksum_ok)
        return bad(m, err, "no Manifest-Checksum line (truncated)", "");
    for (size_t i = 0; i < m->files->n; i++)
        if (!m->files->v[i].listed)
            return bad(m, err, "a file of the base backup is not in the manifest",
                       m->files->v[i].path);
    char a[24], b[24];
    pg_lsn_format(start, a);
    pg_lsn_format(end, b);
    if (m->wal_ranges == 0 || m->wal_tli != tli || m->wal_start != start || m->wal_end != end)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "%s: WAL-Ranges do not match the backup's start %s and end %s on "
                             "timeline %u",
                             m->what, a, b, tli);
    return CAIRN_OK;
}
