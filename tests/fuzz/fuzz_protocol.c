/* libFuzzer target for the snapshot request parser: the JSON scanner and Go-compatible decoder
 * the server runs on every connection, plus the meta.Data protobuf decoder used by restore
 * uploads. Checks encode/decode round trips where they must hold. */
#include <stdlib.h>
#include <string.h>

#include "cairn/influx.h"
#include "influx/internal.h"

static void check_request(const uint8_t *data, size_t size)
{
    size_t end;
    if (cairn_influx_json_scan(data, size, &end) != 1)
        return;
    if (end > size)
        abort();
    struct cairn_influx_request req, again;
    struct cairn_err err;
    cairn_influx_request_init(&req);
    if (cairn_influx_request_decode((const char *)data, end, &req, &err) == CAIRN_OK) {
        /* What we encode must decode to the same request. */
        size_t len;
        char *json = cairn_influx_request_encode(&req, &len);
        cairn_influx_request_init(&again);
        if (cairn_influx_request_decode(json, len, &again, &err) != CAIRN_OK)
            abort();
        if (again.type != req.type || again.shard_id != req.shard_id ||
            again.upload_size != req.upload_size || again.since.sec != req.since.sec ||
            again.since.nsec != req.since.nsec || strcmp(again.backup_db, req.backup_db) != 0 ||
            strcmp(again.restore_rp, req.restore_rp) != 0)
            abort();
        cairn_influx_request_clear(&again);
        free(json);
    }
    cairn_influx_request_clear(&req);
}

static void check_meta(const uint8_t *data, size_t size)
{
    struct meta_data m, m2;
    struct cairn_err err;
    if (meta_decode(data, size, &m, &err) != CAIRN_OK)
        return;
    struct buf a = {0}, b = {0};
    meta_encode(&m, &a);
    if (meta_decode(a.p, a.len, &m2, &err) != CAIRN_OK)
        abort();
    meta_encode(&m2, &b);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0) /* encoding is a fixed point */
        abort();
    meta_free(&m);
    meta_free(&m2);
    buf_free(&a);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* First byte picks the parser, like the type byte on the wire. */
    if (data[0] == CAIRN_INFLUX_META_UPDATE) {
        check_meta(data + 1, size - 1);
    } else {
        check_request(data + 1, size - 1);
        const uint8_t *blob;
        size_t blen;
        struct cairn_err err;
        if (cairn_influx_meta_envelope_blob(data + 1, size - 1, &blob, &blen, &err) == CAIRN_OK)
            check_meta(blob, blen);
    }
    return 0;
}
