/* State map and envelope codec: versions, golden files, corruption vs version errors. */
#include <stdlib.h>

#include "cairn/digest.h"
#include "cairn/state.h"
#include "common/util.h"
#include "test.h"

static uint8_t *golden(const char *name, size_t *len)
{
    char *path = xasprintf("%s/tests/state/data/%s", test_source_dir(), name);
    uint8_t *data = NULL;
    struct cairn_err err;
    if (read_file_max(path, 1 << 20, &data, len, &err) != CAIRN_OK)
        test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(path);
    return data;
}

static struct cairn_state *golden_v1_expected(void)
{
    struct cairn_state *st = cairn_state_new();
    cairn_state_update(st, "hourly", 1767268800, NULL);
    cairn_state_update(st, "daily", 1767225600, NULL);
    cairn_state_update(st, "influx-prod_5m.b", 1767269100, NULL);
    cairn_state_update(st, "old", -86400, NULL);
    return st;
}

/* Re-seal a modified envelope so only the field under test is wrong. */
static void reseal(uint8_t *b, size_t len)
{
    cairn_sha256_oneshot(b, len - 32, b + len - 32);
}

TEST(map_get_update_forward_only)
{
    struct cairn_err err;
    struct cairn_state *st = cairn_state_new();
    int64_t t = 0;
    CHECK(cairn_state_is_empty(st));
    CHECK_EQ_INT(cairn_state_get(st, "a", &t), 0);
    CHECK_EQ_INT(cairn_state_update(st, "b", 100, &err), 1);
    CHECK_EQ_INT(cairn_state_update(st, "a", 50, &err), 1);
    CHECK_EQ_INT(cairn_state_update(st, "b", 90, &err), 0);  /* never backwards */
    CHECK_EQ_INT(cairn_state_update(st, "b", 100, &err), 0); /* equal is no move */
    CHECK_EQ_INT(cairn_state_update(st, "b", 101, &err), 1);
    CHECK(cairn_state_get(st, "b", &t) && t == 101);
    CHECK(!cairn_state_is_empty(st));
    CHECK_EQ_INT(cairn_state_count(st), 2);
    CHECK_EQ_STR(cairn_state_entry(st, 0, &t), "a");
    CHECK_EQ_INT(t, 50);
    CHECK(cairn_state_entry(st, 2, &t) == NULL);
    CHECK_ERR(cairn_state_update(st, "no/slash", 1, &err), CAIRN_E_INVALID, &err,
              "invalid schedule name");
    CHECK_ERR(cairn_state_update(st, "", 1, &err), CAIRN_E_INVALID, &err, "invalid");
    struct cairn_state *d = cairn_state_dup(st);
    CHECK(cairn_state_get(d, "a", &t) && t == 50);
    cairn_state_free(d);
    cairn_state_free(st);
}

TEST(round_trip_many)
{
    struct cairn_err err;
    struct cairn_state *st = cairn_state_new();
    for (int i = 0; i < 500; i++) {
        char name[32];
        snprintf(name, sizeof(name), "s%03d", (i * 7919) % 500);
        CHECK_EQ_INT(cairn_state_update(st, name, (int64_t)i * 3600 - 5, &err), 1);
    }
    uint8_t *buf;
    size_t len;
    CHECK_OK(cairn_state_encode(st, &buf, &len, &err), &err);
    struct cairn_state *back = NULL;
    unsigned ver = 0;
    CHECK_OK(cairn_state_decode(buf, len, &back, &ver, &err), &err);
    CHECK_EQ_INT(ver, CAIRN_STATE_PAYLOAD_VERSION);
    CHECK_EQ_INT(cairn_state_count(back), 500);
    for (size_t i = 0; i < 500; i++) {
        int64_t a, b;
        CHECK_EQ_STR(cairn_state_entry(st, i, &a), cairn_state_entry(back, i, &b));
        CHECK_EQ_INT(a, b);
    }
    free(buf);
    cairn_state_free(back);
    cairn_state_free(st);
}

/* Every released version must still decode to the same map. */
TEST(golden_v1_decodes)
{
    struct cairn_err err;
    size_t len;
    uint8_t *g = golden("state-v1.bin", &len);
    struct cairn_state *st = NULL;
    unsigned ver = 0;
    CHECK_OK(cairn_state_decode(g, len, &st, &ver, &err), &err);
    CHECK_EQ_INT(ver, 1);
    struct cairn_state *want = golden_v1_expected();
    CHECK_EQ_INT(cairn_state_count(st ? st : want), cairn_state_count(want));
    for (size_t i = 0; st && i < cairn_state_count(want); i++) {
        int64_t a, b;
        CHECK_EQ_STR(cairn_state_entry(st, i, &a), cairn_state_entry(want, i, &b));
        CHECK_EQ_INT(a, b);
    }
    cairn_state_free(st);
    cairn_state_free(want);
    free(g);

    g = golden("state-v1-empty.bin", &len);
    CHECK_OK(cairn_state_decode(g, len, &st, &ver, &err), &err);
    CHECK(st && cairn_state_is_empty(st));
    cairn_state_free(st);
    free(g);
}

/* Today's writer still produces the newest golden bytes exactly: a change in the encoder that
 * alters the format must come with a new payload version and a new golden file. */
TEST(writer_matches_newest_golden)
{
    struct cairn_err err;
    size_t glen, len;
    uint8_t *g = golden("state-v1.bin", &glen);
    struct cairn_state *want = golden_v1_expected();
    uint8_t *buf;
    CHECK_OK(cairn_state_encode(want, &buf, &len, &err), &err);
    CHECK_EQ_INT(len, glen);
    CHECK(len == glen && memcmp(buf, g, len) == 0);
    free(buf);
    free(g);
    cairn_state_free(want);

    g = golden("state-v1-empty.bin", &glen);
    struct cairn_state *empty = cairn_state_new();
    CHECK_OK(cairn_state_encode(empty, &buf, &len, &err), &err);
    CHECK(len == glen && memcmp(buf, g, len) == 0);
    free(buf);
    free(g);
    cairn_state_free(empty);
}

TEST(newer_versions_refused_clearly)
{
    struct cairn_err err;
    size_t len;
    uint8_t *g = golden("state-v1.bin", &len);
    struct cairn_state *st = NULL;
    g[10] = 2; /* payload version 2, validly sealed */
    reseal(g, len);
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_UNSUPPORTED, &err,
              "snapshot payload version 2 is newer than this cairnd supports (max 1)");
    CHECK(st == NULL);
    g[10] = 1;
    g[8] = 7; /* envelope version 7 */
    reseal(g, len);
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_UNSUPPORTED, &err,
              "snapshot envelope version 7 is newer than this cairnd supports (max 1)");
    free(g);
}

TEST(corruption_is_not_a_version_problem)
{
    struct cairn_err err;
    size_t len;
    uint8_t *g = golden("state-v1.bin", &len);
    struct cairn_state *st = NULL;
    /* Truncated anywhere: corrupt, never "unsupported". */
    for (size_t cut = 0; cut < len; cut++) {
        int rc = cairn_state_decode(g, cut, &st, NULL, &err);
        if (rc != CAIRN_E_CORRUPT)
            test_fail(__FILE__, __LINE__, "cut at %zu: %s", cut, err.msg);
        if (cut >= 16 && strstr(err.msg, "truncated") == NULL)
            test_fail(__FILE__, __LINE__, "cut at %zu lacks 'truncated': %s", cut, err.msg);
    }
    /* A flipped version byte without resealing is caught by the checksum. */
    g[10] ^= 0x02;
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_CORRUPT, &err,
              "checksum mismatch");
    g[10] ^= 0x02;
    /* Every single-bit flip is detected. */
    for (size_t i = 0; i < len; i++) {
        g[i] ^= 0x10;
        int rc = cairn_state_decode(g, len, &st, NULL, &err);
        if (rc == CAIRN_OK) {
            test_fail(__FILE__, __LINE__, "flip at %zu accepted", i);
            cairn_state_free(st);
        }
        g[i] ^= 0x10;
    }
    g[0] = 'X';
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_CORRUPT, &err, "bad magic");
    g[0] = 'C';
    /* Trailing garbage. */
    uint8_t *longer = xmalloc(len + 1);
    memcpy(longer, g, len);
    longer[len] = 0;
    CHECK_ERR(cairn_state_decode(longer, len + 1, &st, NULL, &err), CAIRN_E_CORRUPT, &err,
              "trailing");
    free(longer);
    /* A sealed but malformed payload: duplicate order. */
    g[16 + 4 + 2] = 'z'; /* "daily" -> "zaily" sorts after "hourly" */
    reseal(g, len);
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_CORRUPT, &err, "out of order");
    /* A huge count is refused before allocating. */
    g[16 + 4 + 2] = 'd';
    g[16 + 3] = 0x7f;
    reseal(g, len);
    CHECK_ERR(cairn_state_decode(g, len, &st, NULL, &err), CAIRN_E_CORRUPT, &err, "cannot fit");
    free(g);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
