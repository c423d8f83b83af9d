/* The etcd snapshot stream parser and trailer check (src/source/etcd/stream.c) on streams
 * built here in the gateway's exact format (as etcd 3.4 writes it: one JSON message per line,
 * 32 KiB blobs, remaining_bytes as a string and omitted when 0, the sha256 last), fed in
 * pieces of every size. The real server is in test_etcd.py. */
#include <stdlib.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "common/buf.h"
#include "common/util.h"
#include "source/etcd/etcd.h"
#include "test.h"

static uint8_t *pattern(size_t n, uint32_t seed)
{
    uint8_t *d = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        d[i] = (uint8_t)(seed >> 24);
    }
    return d;
}

static void add_message(struct buf *b, const uint8_t *blob, size_t n, uint64_t remaining)
{
    char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
    cairn_base64_encode(blob, n, b64);
    buf_adds(b, "{\"result\":{");
    if (remaining != 0)
        buf_printf(b, "\"remaining_bytes\":\"%llu\",", (unsigned long long)remaining);
    buf_printf(b, "\"blob\":\"%s\"}}\n", b64);
    free(b64);
}

/* The answer etcd gives for a database of db_len bytes; *snap gets db || sha256(db). */
static void build(size_t db_len, struct buf *resp, uint8_t **snap)
{
    uint8_t *db = pattern(db_len + 32, (uint32_t)db_len);
    cairn_sha256_oneshot(db, db_len, db + db_len);
    for (size_t off = 0; off < db_len; off += 32768) {
        size_t n = db_len - off < 32768 ? db_len - off : 32768;
        add_message(resp, db + off, n, db_len - off - n);
    }
    add_message(resp, db + db_len, 32, 0);
    *snap = db;
}

/* Feeds resp in pieces of the given sizes (cycled); returns what finish returns. */
static int feed(const struct buf *resp, const size_t *steps, size_t nsteps,
                struct cairn_writer *out, struct cairn_err *err)
{
    struct etcd_stream *st = etcd_stream_new(out, "test stream");
    int rc = CAIRN_OK;
    for (size_t off = 0, i = 0; off < resp->len && rc == CAIRN_OK; i++) {
        size_t n = steps[i % nsteps] < resp->len - off ? steps[i % nsteps] : resp->len - off;
        rc = etcd_stream_feed(st, resp->p + off, n, err);
        off += n;
    }
    if (rc == CAIRN_OK)
        rc = etcd_stream_finish(st, err);
    etcd_stream_free(st);
    return rc;
}

static int feed_text(const char *text, struct cairn_err *err)
{
    struct buf b = {0};
    buf_adds(&b, text);
    struct cairn_writer *w = cairn_discard_writer_new();
    static const size_t whole[] = {SIZE_MAX};
    int rc = feed(&b, whole, 1, w, err);
    cairn_writer_free(w);
    buf_free(&b);
    return rc;
}

/* Sizes around the 32 KiB message and the page: one page, a whole number of messages (the
 * last data message then says remaining 0, as the checksum does), and neither. */
TEST(stream_round_trip_any_split)
{
    static const size_t sizes[] = {512, 32768, 3 * 32768, 20480, 1277952, 1277952 + 512};
    static const size_t steps_a[] = {1, 7, 4096, 43690, 100003};
    static const size_t steps_b[] = {65536};
    static const size_t steps_c[] = {SIZE_MAX};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        struct buf resp = {0};
        uint8_t *snap;
        build(sizes[s], &resp, &snap);
        for (int k = 0; k < 3; k++) {
            struct cairn_err err = {0};
            struct cairn_writer *w = cairn_mem_writer_new(SIZE_MAX);
            const size_t *steps = k == 0 ? steps_a : k == 1 ? steps_b : steps_c;
            size_t nsteps = k == 0 ? 5 : 1;
            CHECK_OK(feed(&resp, steps, nsteps, w, &err), &err);
            size_t got;
            const uint8_t *data = cairn_mem_writer_data(w, &got);
            CHECK_EQ_INT(got, sizes[s] + 32);
            CHECK(got == sizes[s] + 32 && memcmp(data, snap, got) == 0);
            cairn_writer_free(w);
        }
        buf_free(&resp);
        free(snap);
    }
}

/* The blob is cut out of the line and decoded in place (the fast path); JSON the fast path
 * does not take (an escaped '/' in the blob, a space after the colon) is parsed whole and
 * gives the same bytes. */
TEST(stream_blob_fast_path_and_fallback)
{
    struct buf resp = {0};
    uint8_t *snap;
    build(5 * 32768, &resp, &snap);
    for (int v = 0; v < 3; v++) {
        struct buf alt = {0};
        for (size_t i = 0; i < resp.len; i++) {
            if (v == 1 && resp.p[i] == '/')
                buf_addc(&alt, '\\');
            if (v == 2 && i >= 7 && memcmp(resp.p + i - 7, "\"blob\":", 7) == 0)
                buf_addc(&alt, ' ');
            buf_addc(&alt, resp.p[i]);
        }
        CHECK(v == 0 || alt.len > resp.len);
        struct cairn_err err = {0};
        struct cairn_writer *w = cairn_mem_writer_new(SIZE_MAX);
        static const size_t steps[] = {65536, 4093};
        CHECK_OK(feed(&alt, steps, 2, w, &err), &err);
        size_t got;
        const uint8_t *data = cairn_mem_writer_data(w, &got);
        CHECK(got == 5 * 32768 + 32 && memcmp(data, snap, got) == 0);
        cairn_writer_free(w);
        buf_free(&alt);
    }
    buf_free(&resp);
    free(snap);
}

/* A gateway that ends with a final line without '\n' is accepted (it ends errors so). */
TEST(stream_last_line_unterminated)
{
    struct buf resp = {0};
    uint8_t *snap;
    build(4096, &resp, &snap);
    resp.len--; /* drop the last '\n' */
    struct cairn_err err;
    struct cairn_writer *w = cairn_discard_writer_new();
    static const size_t steps[] = {333};
    CHECK_OK(feed(&resp, steps, 1, w, &err), &err);
    CHECK_EQ_INT(w->bytes, 4096 + 32);
    cairn_writer_free(w);
    buf_free(&resp);
    free(snap);
}

/* Damage of every kind is refused with a message that says which. */
TEST(stream_damage)
{
    struct buf good = {0};
    uint8_t *snap;
    build(3 * 32768 + 1024, &good, &snap);
    char *text = (char *)good.p;
    struct cairn_err err;
    static const size_t steps[] = {1000};
    struct cairn_writer *w;

    /* one base64 digit changed in the first blob: the trailer catches it */
    char *b = strstr(text, "\"blob\":\"") + 100;
    *b = *b == 'A' ? 'B' : 'A';
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&good, steps, 1, w, &err), CAIRN_E_CORRUPT, &err, "sha256 mismatch");
    cairn_writer_free(w);
    *b = *b == 'A' ? 'B' : 'A';

    /* cut after the data (no trailer), and inside the last message */
    struct buf cut = good;
    const char *last = text;
    for (const char *m; (m = strstr(last + 1, "{\"result\"")) != NULL;)
        last = m;
    cut.len = (size_t)(last - text);
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&cut, steps, 1, w, &err), CAIRN_E_CORRUPT, &err, "no sha256 trailer");
    cairn_writer_free(w);
    cut.len += 20;
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&cut, steps, 1, w, &err), CAIRN_E_CORRUPT, &err, "truncated inside message");
    cairn_writer_free(w);
    cut.len = 0;
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&cut, steps, 1, w, &err), CAIRN_E_CORRUPT, &err, "no snapshot message");
    cairn_writer_free(w);

    /* a message after the trailer */
    struct buf more = {0};
    buf_add(&more, good.p, good.len);
    buf_add(&more, good.p, strchr(text, '\n') - text + 1);
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&more, steps, 1, w, &err), CAIRN_E_PROTOCOL, &err, "after the sha256 trailer");
    cairn_writer_free(w);
    buf_free(&more);
    buf_free(&good);
    free(snap);

    CHECK_ERR(feed_text("{\"result\":{\"remaining_bytes\":\"512\",\"blob\":\"AAA=\"}}\n"
                        "{\"result\":{\"blob\":\"AAAA\"}}\n",
                        &err),
              CAIRN_E_CORRUPT, &err, "does not add up");
    CHECK_ERR(feed_text("{\"result\":{\"blob\":\"A@A=\"}}\n", &err), CAIRN_E_CORRUPT, &err,
              "not valid base64");
    CHECK_ERR(feed_text("{\"result\":{\"blob\":\"AAA=\"\n", &err), CAIRN_E_CORRUPT, &err,
              "is not JSON");
    CHECK_ERR(feed_text("{\"result\":{\"remaining_bytes\":\"-1\",\"blob\":\"AAA=\"}}\n", &err),
              CAIRN_E_PROTOCOL, &err, "not a snapshot response");
    CHECK_ERR(feed_text("{\"result\":{\"blob\":7}}\n", &err), CAIRN_E_PROTOCOL, &err,
              "blob is not a string");
    CHECK_ERR(feed_text("{\"hello\":1}\n", &err), CAIRN_E_PROTOCOL, &err,
              "neither a result nor an error");
    /* a whole snapshot of 100 bytes is not whole pages: not etcd's */
    uint8_t small[132];
    memset(small, 1, 100);
    cairn_sha256_oneshot(small, 100, small + 100);
    struct buf sb = {0};
    add_message(&sb, small, 100, 0);
    add_message(&sb, small + 100, 32, 0);
    w = cairn_discard_writer_new();
    CHECK_ERR(feed(&sb, steps, 1, w, &err), CAIRN_E_CORRUPT, &err, "checksum not found");
    cairn_writer_free(w);
    buf_free(&sb);
}

/* The gateway's two error forms, and etcd 3.4's auth failures (gRPC Unknown) as DENIED. */
TEST(stream_gateway_errors)
{
    struct cairn_err err;
    CHECK_ERR(feed_text("{\"error\":{\"grpc_code\":2,\"http_code\":500,\"message\":\"auth: user "
                        "name is empty\",\"http_status\":\"Internal Server Error\"}}",
                        &err),
              CAIRN_E_DENIED, &err, "auth: user name is empty");
    CHECK(strstr(err.msg, "HTTP 500") != NULL);
    CHECK_ERR(
        feed_text("{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}", &err),
        CAIRN_E_NETWORK, &err, "no leader");
    CHECK_ERR(feed_text("{\"error\":\"bad\",\"code\":3,\"message\":\"bad \\u001b[31m\"}", &err),
              CAIRN_E_PROTOCOL, &err, "grpc code 3");
    CHECK(strchr(err.msg, 0x1b) == NULL); /* peer text is escaped */
    CHECK_ERR(feed_text("{\"error\":{\"grpc_code\":4,\"message\":\"deadline\"}}", &err),
              CAIRN_E_TIMEOUT, &err, "deadline");
}

/* Memory stays bounded: a line that never ends is refused at the cap, not buffered whole;
 * a failed stream stays failed. */
TEST(stream_line_cap)
{
    struct cairn_err err;
    struct cairn_writer *w = cairn_discard_writer_new();
    struct etcd_stream *st = etcd_stream_new(w, "test stream");
    char *junk = xmalloc(1 << 20);
    memset(junk, 'a', 1 << 20);
    int rc = CAIRN_OK;
    int i;
    for (i = 0; i < 64 && rc == CAIRN_OK; i++)
        rc = etcd_stream_feed(st, junk, 1 << 20, &err);
    CHECK_ERR(rc, CAIRN_E_PROTOCOL, &err, "longer than");
    CHECK(i <= 5);
    CHECK_ERR(etcd_stream_feed(st, "\n", 1, &err), CAIRN_E_PROTOCOL, &err, "longer than");
    CHECK_ERR(etcd_stream_finish(st, &err), CAIRN_E_PROTOCOL, &err, "longer than");
    etcd_stream_free(st);
    cairn_writer_free(w);
    free(junk);
}

/* The hold-back: whatever the split, the last 32 bytes are the digest of the rest. */
TEST(sum_any_split)
{
    size_t len = 4096 + 32;
    uint8_t *d = pattern(len, 5);
    cairn_sha256_oneshot(d, 4096, d + 4096);
    for (size_t step = 1; step < 80; step += 3) {
        struct etcd_sum s;
        etcd_sum_init(&s);
        for (size_t off = 0; off < len; off += step)
            etcd_sum_update(&s, d + off, step < len - off ? step : len - off);
        struct cairn_err err;
        CHECK_OK(etcd_sum_check(&s, "sum", &err), &err);
        etcd_sum_free(&s);
    }
    struct etcd_sum s;
    etcd_sum_init(&s);
    etcd_sum_update(&s, d, 20); /* shorter than a trailer */
    struct cairn_err err;
    CHECK_ERR(etcd_sum_check(&s, "sum", &err), CAIRN_E_CORRUPT, &err, "checksum not found");
    etcd_sum_free(&s);
    free(d);
}

/* The writer's own failure comes back, named. */
TEST(stream_out_fails)
{
    struct buf resp = {0};
    uint8_t *snap;
    build(65536, &resp, &snap);
    struct cairn_writer *w = cairn_mem_writer_new(1000);
    struct cairn_err err;
    static const size_t steps[] = {SIZE_MAX};
    int rc = feed(&resp, steps, 1, w, &err);
    CHECK(rc == CAIRN_E_INVALID);
    CHECK(strstr(err.msg, "writing the snapshot") != NULL);
    cairn_writer_free(w);
    buf_free(&resp);
    free(snap);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
