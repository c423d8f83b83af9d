/* snapshotter.Request framing: JSON scan, Go-compatible decode and encode, and the small
 * byte helpers the rest of the service shares. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "internal.h"

void influx_u64be_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

uint64_t influx_u64be_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int influx_parse_id(const char *s, uint64_t *id)
{
    if (*s == '\0' || (s[0] == '0' && s[1] != '\0'))
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *id = v;
    return 0;
}

void influx_time_format(const struct cairn_influx_time *t, char *out, size_t cap)
{
    format_rfc3339(t->sec, t->nsec, out, cap);
}

/* ---- requests ---- */

static void time_zero(struct cairn_influx_time *t)
{
    t->sec = CAIRN_INFLUX_ZERO_TIME;
    t->nsec = 0;
}

void cairn_influx_request_init(struct cairn_influx_request *req)
{
    memset(req, 0, sizeof(*req));
    req->backup_db = xstrdup("");
    req->restore_db = xstrdup("");
    req->backup_rp = xstrdup("");
    req->restore_rp = xstrdup("");
    time_zero(&req->since);
    time_zero(&req->export_start);
    time_zero(&req->export_end);
}

void cairn_influx_request_clear(struct cairn_influx_request *req)
{
    free(req->backup_db);
    free(req->restore_db);
    free(req->backup_rp);
    free(req->restore_rp);
    memset(req, 0, sizeof(*req));
}

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int cairn_influx_json_scan(const uint8_t *buf, size_t len, size_t *end)
{
    size_t i = 0;
    while (i < len && is_ws(buf[i]))
        i++;
    if (i == len)
        return 0;
    if (buf[i] != '{')
        return CAIRN_E_PROTOCOL;
    int depth = 0, in_str = 0, esc = 0;
    for (; i < len; i++) {
        uint8_t c = buf[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
            else if (c < 0x20)
                return CAIRN_E_PROTOCOL; /* raw control characters are never valid here */
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > 64)
                return CAIRN_E_PROTOCOL;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                *end = i + 1;
                return 1;
            }
        }
    }
    return 0;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "null";
    }
}

static int bad_type(const char *key, const json_t *v, const char *go_type, struct cairn_err *err)
{
    return cairn_err_set(err, CAIRN_E_PROTOCOL,
                         "json: cannot unmarshal %s into Go struct field Request.%s of type %s",
                         json_kind(v), key, go_type);
}

static int dec_string(const char *key, json_t *v, char **dst, struct cairn_err *err)
{
    if (json_is_null(v))
        return CAIRN_OK;
    if (!json_is_string(v))
        return bad_type(key, v, "string", err);
    free(*dst);
    *dst = xstrdup(json_string_value(v));
    return CAIRN_OK;
}

static int dec_uint(const char *key, json_t *v, uint64_t max, uint64_t *dst, const char *go_type,
                    struct cairn_err *err)
{
    if (json_is_null(v))
        return CAIRN_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return bad_type(key, v, go_type, err);
    *dst = (uint64_t)json_integer_value(v);
    return CAIRN_OK;
}

static int dec_time(const char *key, json_t *v, struct cairn_influx_time *dst,
                    struct cairn_err *err)
{
    if (json_is_null(v))
        return CAIRN_OK;
    if (!json_is_string(v))
        return bad_type(key, v, "time.Time", err);
    int64_t sec;
    long nsec;
    if (parse_rfc3339(json_string_value(v), &sec, &nsec) != 0)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "parsing time \"%s\" as RFC 3339 failed",
                             json_string_value(v));
    dst->sec = sec;
    dst->nsec = nsec;
    return CAIRN_OK;
}

int cairn_influx_request_decode(const char *json, size_t len, struct cairn_influx_request *req,
                                struct cairn_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_DISABLE_EOF_CHECK, &jerr);
    if (root == NULL)
        return cairn_err_set(err, CAIRN_E_PROTOCOL, "invalid JSON: %s", jerr.text);
    int rc = CAIRN_OK;
    if (!json_is_object(root)) {
        rc = cairn_err_set(err, CAIRN_E_PROTOCOL,
                           "json: cannot unmarshal %s into Go value of "
                           "type snapshotter.Request",
                           json_kind(root));
        goto out;
    }
    const char *key;
    json_t *v;
    /* Go applies keys in document order, matching field names case-insensitively. */
    json_object_foreach(root, key, v)
    {
        uint64_t u;
        if (strcasecmp(key, "Type") == 0) {
            u = req->type;
            rc = dec_uint("Type", v, 255, &u, "snapshotter.RequestType", err);
            req->type = (uint8_t)u;
        } else if (strcasecmp(key, "BackupDatabase") == 0) {
            rc = dec_string("BackupDatabase", v, &req->backup_db, err);
        } else if (strcasecmp(key, "RestoreDatabase") == 0) {
            rc = dec_string("RestoreDatabase", v, &req->restore_db, err);
        } else if (strcasecmp(key, "BackupRetentionPolicy") == 0) {
            rc = dec_string("BackupRetentionPolicy", v, &req->backup_rp, err);
        } else if (strcasecmp(key, "RestoreRetentionPolicy") == 0) {
            rc = dec_string("RestoreRetentionPolicy", v, &req->restore_rp, err);
        } else if (strcasecmp(key, "ShardID") == 0) {
            rc = dec_uint("ShardID", v, UINT64_MAX, &req->shard_id, "uint64", err);
        } else if (strcasecmp(key, "Since") == 0) {
            rc = dec_time("Since", v, &req->since, err);
        } else if (strcasecmp(key, "ExportStart") == 0) {
            rc = dec_time("ExportStart", v, &req->export_start, err);
        } else if (strcasecmp(key, "ExportEnd") == 0) {
            rc = dec_time("ExportEnd", v, &req->export_end, err);
        } else if (strcasecmp(key, "UploadSize") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v))
                rc = bad_type("UploadSize", v, "int64", err);
            else
                req->upload_size = (int64_t)json_integer_value(v);
        }
        if (rc != CAIRN_OK)
            goto out;
    }
out:
    json_decref(root);
    return rc;
}

char *cairn_influx_request_encode(const struct cairn_influx_request *req, size_t *len)
{
    struct buf b = {0};
    char num[32], t[64];
    snprintf(num, sizeof(num), "%u", (unsigned)req->type);
    buf_adds(&b, "{\"Type\":");
    buf_adds(&b, num);
    buf_adds(&b, ",\"BackupDatabase\":");
    buf_json_string(&b, req->backup_db ? req->backup_db : "", 0);
    buf_adds(&b, ",\"RestoreDatabase\":");
    buf_json_string(&b, req->restore_db ? req->restore_db : "", 0);
    buf_adds(&b, ",\"BackupRetentionPolicy\":");
    buf_json_string(&b, req->backup_rp ? req->backup_rp : "", 0);
    buf_adds(&b, ",\"RestoreRetentionPolicy\":");
    buf_json_string(&b, req->restore_rp ? req->restore_rp : "", 0);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)req->shard_id);
    buf_adds(&b, ",\"ShardID\":");
    buf_adds(&b, num);
    const struct cairn_influx_time *times[3] = {&req->since, &req->export_start, &req->export_end};
    static const char *names[3] = {",\"Since\":\"", "\",\"ExportStart\":\"", "\",\"ExportEnd\":\""};
    for (int i = 0; i < 3; i++) {
        influx_time_format(times[i], t, sizeof(t));
        buf_adds(&b, names[i]);
        buf_adds(&b, t);
    }
    snprintf(num, sizeof(num), "%lld", (long long)req->upload_size);
    buf_adds(&b, "\",\"UploadSize\":");
    buf_adds(&b, num);
    buf_adds(&b, "}\n");
    *len = b.len;
    return (char *)b.p;
}

/* ---- ID maps and the metastore envelope ---- */

void cairn_influx_idmap_free(struct cairn_influx_idmap *m)
{
    free(m->pairs);
    m->pairs = NULL;
    m->n = 0;
}

uint64_t cairn_influx_idmap_get(const struct cairn_influx_idmap *m, uint64_t old_id)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->pairs[i][0] == old_id)
            return m->pairs[i][1];
    return 0;
}

int cairn_influx_meta_envelope_blob(const uint8_t *buf, size_t len, const uint8_t **blob,
                                    size_t *blob_len, struct cairn_err *err)
{
    if (len < 16 || influx_u64be_get(buf) != CAIRN_INFLUX_META_MAGIC)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "invalid metadata blob: missing 0x59590101 magic");
    uint64_t mlen = influx_u64be_get(buf + 8);
    if (mlen > len - 16 || len - 16 - mlen < 8)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "invalid metadata blob: meta length %llu "
                             "exceeds the %zu bytes received",
                             (unsigned long long)mlen, len);
    uint64_t nlen = influx_u64be_get(buf + 16 + mlen);
    if (nlen != len - 24 - mlen)
        return cairn_err_set(err, CAIRN_E_CORRUPT,
                             "invalid metadata blob: node length %llu "
                             "does not match the %llu bytes left",
                             (unsigned long long)nlen, (unsigned long long)(len - 24 - mlen));
    *blob = buf + 16;
    *blob_len = (size_t)mlen;
    return CAIRN_OK;
}
