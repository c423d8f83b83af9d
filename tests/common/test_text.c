/* The shared text helpers of src/common: UTF-8, the byte buffer, JSON strings, error joining
 * and sizes. Each had two to four private copies before; these pin the one behaviour. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"
#include "test.h"

static size_t dec(const char *s, size_t n, uint32_t *cp)
{
    *cp = 0xdead;
    return utf8_decode((const uint8_t *)s, n, cp);
}

TEST(utf8_decode_valid_and_invalid)
{
    uint32_t cp;
    CHECK(dec("A", 1, &cp) == 1 && cp == 'A');
    CHECK(dec("\0", 1, &cp) == 1 && cp == 0);
    CHECK(dec("\xc3\xa9", 2, &cp) == 2 && cp == 0xe9);
    CHECK(dec("\xe2\x80\xa8", 3, &cp) == 3 && cp == 0x2028);
    CHECK(dec("\xf0\x9f\x98\x80", 4, &cp) == 4 && cp == 0x1f600);
    CHECK(dec("\xf4\x8f\xbf\xbf", 4, &cp) == 4 && cp == 0x10ffff);
    /* invalid: *cp untouched, length 0 */
    CHECK(dec("\x80", 1, &cp) == 0 && cp == 0xdead); /* stray continuation */
    CHECK(dec("\xc0\xaf", 2, &cp) == 0);             /* overlong '/' */
    CHECK(dec("\xc1\xbf", 2, &cp) == 0);             /* overlong */
    CHECK(dec("\xe0\x80\xaf", 3, &cp) == 0);         /* overlong, 3 bytes */
    CHECK(dec("\xf0\x80\x80\xaf", 4, &cp) == 0);     /* overlong, 4 bytes */
    CHECK(dec("\xed\xa0\x80", 3, &cp) == 0);         /* surrogate U+D800 */
    CHECK(dec("\xf4\x90\x80\x80", 4, &cp) == 0);     /* U+110000 */
    CHECK(dec("\xf5\x80\x80\x80", 4, &cp) == 0);     /* lead beyond F4 */
    CHECK(dec("\xff", 1, &cp) == 0);
    CHECK(dec("\xe2\x82", 2, &cp) == 0);                     /* truncated by n */
    CHECK(dec("\xe2\x82\xac", 2, &cp) == 0);                 /* n cuts it */
    CHECK(dec("\xe2\x28\xa1", 3, &cp) == 0);                 /* bad continuation */
    CHECK(dec("\xe2\x82\xac", 3, &cp) == 3 && cp == 0x20ac); /* and whole it is fine */
}

TEST(utf8_encode_round_trip)
{
    const uint32_t cps[] = {0, 'z', 0x7f, 0x80, 0x7ff, 0x800, 0xfffd, 0xffff, 0x10000, 0x10ffff};
    for (size_t i = 0; i < sizeof(cps) / sizeof(cps[0]); i++) {
        char out[4];
        size_t n = utf8_encode(cps[i], out);
        uint32_t back = 0;
        CHECK(n >= 1 && n <= 4 && utf8_decode((const uint8_t *)out, n, &back) == n);
        CHECK(back == cps[i]);
    }
}

TEST(buf_appends_and_stays_terminated)
{
    struct buf b = {0};
    buf_add(&b, "", 0); /* an empty append still gives a string */
    CHECK(b.p != NULL && b.len == 0 && b.p[0] == 0);
    buf_adds(&b, "ab");
    buf_addc(&b, 0); /* bytes, not only text: a NUL is counted */
    buf_add(&b, "\xff", 1);
    CHECK(b.len == 4 && memcmp(b.p, "ab\0\xff", 4) == 0 && b.p[4] == 0);
    /* printf longer than any first guess (no fixed scratch) */
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    buf_printf(&b, "%s|%llu", big, 18446744073709551615ull);
    CHECK(b.len == 4 + 999 + 1 + 20 && b.p[b.len] == 0);
    CHECK(strcmp((char *)b.p + 4 + 999, "|18446744073709551615") == 0);
    for (int i = 0; i < 10000; i++)
        buf_addc(&b, 'y');
    CHECK(b.len == 1024 + 10000 && b.cap > b.len && b.p[b.len] == 0);
    buf_free(&b);
    CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
}

static char *json(const char *s, unsigned flags)
{
    struct buf b = {0};
    buf_json_string(&b, s, flags);
    return (char *)b.p;
}

/* Go's encoding/json (HTMLEscape on): the two flavours differ only on \b and \f. */
TEST(json_string_go_escaping)
{
    const char *in = "a<b>&c\"\\\n\r\t\b\f\x01\x1f\x7f\xe2\x80\xa8\xe2\x80\xa9\xc3\xa9";
    char *go122 = json(in, BUF_JSON_SHORT_BF), *go110 = json(in, 0);
    CHECK_EQ_STR(go122, "\"a\\u003cb\\u003e\\u0026c\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\x7f"
                        "\\u2028\\u2029\xc3\xa9\"");
    CHECK_EQ_STR(go110, "\"a\\u003cb\\u003e\\u0026c\\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0001"
                        "\\u001f\x7f\\u2028\\u2029\xc3\xa9\"");
    free(go122);
    free(go110);
    /* invalid UTF-8: each bad byte is one U+FFFD, a valid sequence after it survives */
    const char *bad = "\xff\xc0\xaf\xed\xa0\x80x\xe2\x82\xf0\x9f\x98\x80";
    for (unsigned f = 0; f <= BUF_JSON_SHORT_BF; f++) {
        char *j = json(bad, f);
        CHECK_EQ_STR(
            j, "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffdx\\ufffd\\ufffd\xf0\x9f\x98\x80\"");
        free(j);
    }
    char *e = json(NULL, 0);
    CHECK_EQ_STR(e, "\"\"");
    free(e);
}

TEST(join_fills_and_cuts)
{
    char msg[16] = "";
    size_t off = 0;
    str_join(msg, sizeof(msg), &off, "; ", "a");
    CHECK_EQ_STR(msg, "a");
    str_join(msg, sizeof(msg), &off, "; ", "bb");
    str_join(msg, sizeof(msg), &off, "; ", "ccc");
    CHECK_EQ_STR(msg, "a; bb; ccc");
    CHECK(off == 10);
    str_join(msg, sizeof(msg), &off, "; ", "dddddddd"); /* cut at the buffer's end */
    CHECK_EQ_STR(msg, "a; bb; ccc; ddd");
    CHECK(off == sizeof(msg) - 1);
    str_join(msg, sizeof(msg), &off, "; ", "e"); /* full: nothing more, still terminated */
    CHECK_EQ_STR(msg, "a; bb; ccc; ddd");
    CHECK(off == sizeof(msg) - 1);
    char one[8] = "";
    off = 0;
    str_join(one, sizeof(one), &off, ", ", "0123456789");
    CHECK_EQ_STR(one, "0123456");
}

static int size_is(const char *s, uint64_t want)
{
    uint64_t v = 0xdeadbeef;
    return parse_size(s, &v) == 0 && v == want;
}

static int size_bad(const char *s)
{
    uint64_t v = 0xdeadbeef;
    return parse_size(s, &v) == -1 && v == 0xdeadbeef;
}

/* Every spelling the programs (--max-upload, --mem-budget, --size) and the S3 driver's
 * part_size documented or accepted: one grammar. */
TEST(size_grammar)
{
    CHECK(size_is("0", 0));
    CHECK(size_is("4096", 4096));
    CHECK(size_is("4096B", 4096));
    CHECK(size_is("1k", 1024) && size_is("1K", 1024) && size_is("1KB", 1024));
    CHECK(size_is("64M", 64ull << 20) && size_is("64m", 64ull << 20));
    CHECK(size_is("64MB", 64ull << 20) && size_is("64MiB", 64ull << 20));
    CHECK(size_is("64Mi", 64ull << 20));
    CHECK(size_is("5G", 5ull << 30) && size_is("1GiB", 1ull << 30) && size_is("2g", 2ull << 30));
    CHECK(size_is("1T", 1ull << 40) && size_is("3tib", 0) == 0); /* "b" is not bytes */
    CHECK(size_is("2147483648", 2147483648ull));
    CHECK(size_is("18446744073709551615", UINT64_MAX));
    CHECK(size_is("16777215T", 16777215ull << 40));
    CHECK(size_bad("16777216T") && size_bad("18446744073709551616")); /* overflow */
    CHECK(size_bad("") && size_bad("M") && size_bad("-1") && size_bad("+1") && size_bad(" 1"));
    CHECK(size_bad("1 M") && size_bad("1MM") && size_bad("1iB") && size_bad("1Mb"));
    CHECK(size_bad("1P") && size_bad("1.5M") && size_bad("1M ") && size_bad("1x"));
    CHECK(parse_size(NULL, &(uint64_t){0}) == -1);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
