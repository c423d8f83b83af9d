/* Tests for src/common: errors, digests, encodings, time, pool. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "common/pool.h"
#include "common/util.h"
#include "test.h"

TEST(err_format_and_wrap)
{
    struct cairn_err err;
    cairn_err_clear(&err);
    CHECK_EQ_INT(cairn_err_set(&err, CAIRN_E_CORRUPT, "bad %s", "thing"), CAIRN_E_CORRUPT);
    CHECK_EQ_STR(err.msg, "bad thing");
    CHECK_EQ_INT(cairn_err_wrap(&err, CAIRN_E_CORRUPT, "reading '%s'", "x"), CAIRN_E_CORRUPT);
    CHECK_EQ_STR(err.msg, "reading 'x': bad thing");
    CHECK_EQ_INT(err.code, CAIRN_E_CORRUPT);
    /* err may be NULL: the wrap still returns the caller's code, never CAIRN_E_INTERNAL. */
    CHECK_EQ_INT(cairn_err_wrap(NULL, CAIRN_E_NOTFOUND, "reading '%s'", "x"), CAIRN_E_NOTFOUND);
    CHECK_EQ_INT(cairn_err_sys(&err, 0, ENOSPC, "write"), CAIRN_E_NOSPACE);
    CHECK(strstr(err.msg, "write: ") == err.msg);
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_CORRUPT), 3);
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_NOSPACE), 7);
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_CANCELLED), 130); /* README: cancelled by a signal */
    CHECK_EQ_INT(cairn_err_set(NULL, CAIRN_E_IO, "ignored"), CAIRN_E_IO);
    /* The same context from two layers is said once (issue 19). */
    cairn_err_set(&err, CAIRN_E_IO, "backup 'd' file 'f': write: disk full");
    cairn_err_wrap(&err, CAIRN_E_IO, "backup '%s' file '%s'", "d", "f");
    CHECK_EQ_STR(err.msg, "backup 'd' file 'f': write: disk full");
    cairn_err_wrap(&err, CAIRN_E_IO, "backup 'd' file 'f': read source");
    CHECK_EQ_STR(err.msg, "backup 'd' file 'f': read source: write: disk full");
    cairn_err_wrap(&err, CAIRN_E_IO, "backup 'e'");
    CHECK_EQ_STR(err.msg, "backup 'e': backup 'd' file 'f': read source: write: disk full");
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_UNSUPPORTED), 2); /* cairn list http://x/y */
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_DENIED), 9);      /* S3 403 */
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_PERM), 7);        /* a local EACCES */
}

/* Peer text in logs and on terminals: controls, C1, bidi and invalid UTF-8 made visible,
 * other UTF-8 kept, never an escape cut by truncation, idempotent; error records and the
 * JSON log path apply it; a peer's refusal has its own exit code. */
TEST(escape_peer_text)
{
    char out[128];
    const char in[] = "a\n2026-01-01 forged\x1b[31m\r\t\x7f\x01\xc2\x9b\xe2\x80\xae\xff\xc3\xa9\\z";
    str_escape(out, sizeof(out), in, sizeof(in) - 1);
    CHECK_EQ_STR(out,
                 "a\\n2026-01-01 forged\\x1b[31m\\r\\t\\x7f\\x01\\u009b\\u202e\\xff\xc3\xa9\\z");
    char again[128];
    str_escape(again, sizeof(again), out, strlen(out));
    CHECK_EQ_STR(again, out);
    str_escape(out, 6, "abc\x1b", 4); /* "abc\x1b" needs 8: the escape is left out whole */
    CHECK_EQ_STR(out, "abc");
    str_escape(out, sizeof(out), "\xe2\x82", 2); /* truncated sequence */
    CHECK_EQ_STR(out, "\\xe2\\x82");
    str_escape(out, sizeof(out), "\xc0\xaf\xed\xa0\x80", 5); /* overlong, surrogate */
    CHECK_EQ_STR(out, "\\xc0\\xaf\\xed\\xa0\\x80");
    char *d = str_escape_dup("\xe2\x80\xae\xe2\x80\xae");
    CHECK_EQ_STR(d, "\\u202e\\u202e");
    free(d);
    CHECK(str_escape_dup(NULL) == NULL);

    struct cairn_err err;
    cairn_err_set(&err, CAIRN_E_DENIED, "S3: %s", "denied\n2026-01-01 forged\x1b[31m");
    CHECK_EQ_STR(err.msg, "S3: denied\\n2026-01-01 forged\\x1b[31m");
    cairn_err_wrap(&err, CAIRN_E_DENIED, "list '%s'", "x\ry");
    CHECK_EQ_STR(err.msg, "list 'x\\ry': S3: denied\\n2026-01-01 forged\\x1b[31m");
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_DENIED), 9);
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_PERM), 7); /* a local permission error stays 7 */

    char *path = path_join(test_tmpdir(), "esclog");
    FILE *f = fopen(path, "w+");
    cairn_log_setup(CAIRN_LOG_INFO, 0, f);
    cairn_info("test", "peer: %s", "x\n2026-01-01 forged\x1b[31m");
    cairn_log_setup(CAIRN_LOG_INFO, 1, f);
    cairn_info("test", "bad utf-8: %s", "\xff\xfe");
    cairn_log_setup(CAIRN_LOG_WARN, 0, NULL);
    rewind(f);
    char line[512];
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strstr(line, "test: peer: x\\n2026-01-01 forged\\x1b[31m\n") != NULL);
    CHECK(fgets(line, sizeof(line), f) != NULL); /* was lost: jansson refuses invalid UTF-8 */
    CHECK(strstr(line, "\"msg\":\"bad utf-8: \\\\xff\\\\xfe\"}") != NULL);
    CHECK(fgets(line, sizeof(line), f) == NULL);
    fclose(f);
    free(path);
}

TEST(sha256_known_vectors)
{
    uint8_t d[32];
    char hex[65];
    cairn_sha256_oneshot("", 0, d);
    cairn_hex_encode(d, 32, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    struct cairn_sha256 h;
    cairn_sha256_init(&h);
    cairn_sha256_update(&h, "a", 1);
    cairn_sha256_update(&h, "bc", 2);
    cairn_sha256_peek(&h, d);
    cairn_sha256_final(&h, d);
    cairn_hex_encode(d, 32, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(base64_and_hex_round_trip)
{
    char b64[64];
    uint8_t out[64];
    size_t n;
    CHECK_EQ_INT(cairn_base64_encode((const uint8_t *)"ab", 2, b64), 4);
    CHECK_EQ_STR(b64, "YWI=");
    CHECK_EQ_INT(cairn_base64_decode("YWI=", 4, out, sizeof(out), &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK(memcmp(out, "ab", 2) == 0);
    CHECK_EQ_INT(cairn_base64_decode("YWI", 3, out, sizeof(out), &n), -1);
    CHECK_EQ_INT(cairn_base64_decode("Y!I=", 4, out, sizeof(out), &n), -1);
    CHECK_EQ_INT(cairn_hex_decode("0aFf", 4, out, sizeof(out), &n), 0);
    CHECK(n == 2 && out[0] == 0x0a && out[1] == 0xff);
    CHECK_EQ_INT(cairn_hex_decode("abc", 3, out, sizeof(out), &n), -1);
    CHECK_EQ_INT(cairn_hex_decode("zz", 2, out, sizeof(out), &n), -1);
}

TEST(rfc3339)
{
    int64_t s;
    long ns;
    char buf[64];
    CHECK_EQ_INT(parse_rfc3339("0001-01-01T00:00:00Z", &s, &ns), 0);
    CHECK_EQ_INT(s, -62135596800LL);
    CHECK_EQ_INT(parse_rfc3339("2020-09-13T12:26:40Z", &s, &ns), 0);
    CHECK_EQ_INT(s, 1600000000);
    CHECK_EQ_INT(parse_rfc3339("2020-09-13T14:26:40.5+02:00", &s, &ns), 0);
    CHECK_EQ_INT(s, 1600000000);
    CHECK_EQ_INT(ns, 500000000);
    CHECK_EQ_INT(parse_rfc3339("", &s, &ns), -1);
    CHECK_EQ_INT(parse_rfc3339("2020-13-01T00:00:00Z", &s, &ns), -1);
    format_rfc3339(1600000000, 0, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "2020-09-13T12:26:40Z");
    format_rfc3339(-62135596800LL, 0, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "0001-01-01T00:00:00Z");
    format_rfc3339(1600000000, 120000000, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "2020-09-13T12:26:40.12Z");
}

TEST(safe_names)
{
    CHECK(name_is_safe("2026-11-21.120000.x"));
    CHECK(!name_is_safe(".."));
    CHECK(!name_is_safe("a/b"));
    CHECK(!name_is_safe(""));
    CHECK(!name_is_safe("a\nb"));
}

static atomic_int g_counter;

static void bump(void *arg)
{
    atomic_fetch_add(&g_counter, *(int *)arg);
}

TEST(pool_runs_every_job)
{
    struct pool *p = pool_new(3, 2);
    int one = 1;
    for (int i = 0; i < 1000; i++)
        pool_submit(p, bump, &one);
    pool_wait(p);
    CHECK_EQ_INT(atomic_load(&g_counter), 1000);
    pool_free(p);
}

TEST(log_levels_and_json_lines)
{
    char *path = path_join(test_tmpdir(), "log");
    FILE *f = fopen(path, "w+");
    cairn_log_setup(CAIRN_LOG_INFO, 1, f);
    cairn_debug("test", "hidden");
    cairn_info("test", "quote \" and newline\n");
    cairn_log_setup(CAIRN_LOG_WARN, 0, f);
    cairn_info("test", "hidden too");
    cairn_warn("test", "plain %d", 7);
    cairn_log_setup(CAIRN_LOG_WARN, 0, NULL);
    rewind(f);
    char line[512];
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strstr(line, "\"level\":\"info\"") != NULL);
    CHECK(strstr(line, "\"msg\":\"quote \\\" and newline\\n\"") != NULL);
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strstr(line, " warn  test: plain 7") != NULL);
    CHECK(fgets(line, sizeof(line), f) == NULL);
    fclose(f);
    CHECK_EQ_INT(cairn_log_level_parse("WARNING"), CAIRN_LOG_WARN);
    CHECK_EQ_INT(cairn_log_level_parse("loud"), -1);
    free(path);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
