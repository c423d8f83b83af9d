/* Minimal non-aborting test harness (libarchive assertion style).
 *
 *   TEST(name) { CHECK(x == 1); CHECK_OK(rc, &err); }
 *   int main(int argc, char **argv) { return test_main(argc, argv); }
 *
 * Tests register themselves through a constructor, run in file order, and the binary prints
 * "N passed, N failed, N skipped" last. A failed CHECK prints file:line and continues.
 * SKIP("why") marks the current test skipped (loudly) and returns: this machine cannot run it.
 * MISSING("why") is the same for something `scripts/deps.sh test` installs (s3rver, tzdata):
 * under CI=true it is a failure, since its absence there is a broken install step.
 * The binary exits 1 on any failure, else 77 (ctest's SKIP_RETURN_CODE here) if any test was
 * skipped, else 0. `binary PATTERN[,PATTERN...]` runs the tests whose names match a glob;
 * a pattern starting with '!' excludes (tests/CMakeLists.txt splits binaries with it).
 */
#ifndef CAIRN_TEST_H
#define CAIRN_TEST_H

#include <stdio.h>
#include <string.h>

#include "cairn/err.h"

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
int test_main(int argc, char **argv);
void test_fail(const char *file, int line, const char *fmt, ...) CAIRN_PRINTF(3, 4);
void test_skip(const char *why);
void test_missing(const char *why);
/* A fresh empty directory for the current test (removed after a passing run). */
const char *test_tmpdir(void);
/* Path under ../shared (CAIRN_SHARED env or a search from the source tree); NULL if absent. */
const char *test_shared_dir(void);
const char *test_source_dir(void);
static inline const char *test_errmsg(const struct cairn_err *e)
{
    return e ? e->msg : "";
}

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_reg_##name(void)                                 \
    {                                                                                              \
        test_register(#name, test_##name);                                                         \
    }                                                                                              \
    static void test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                     \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_)                                                                            \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, va_, vb_);             \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0)                                   \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,                    \
                      sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                                 \
    } while (0)

/* rc must be CAIRN_OK; prints the error message otherwise. */
#define CHECK_OK(rc, errp)                                                                         \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != CAIRN_OK)                                                                       \
            test_fail(__FILE__, __LINE__, "%s failed (%s): %s", #rc, cairn_status_name(rc_),       \
                      test_errmsg(errp));                                                          \
    } while (0)

/* rc must be the given code and the message must contain substr. */
#define CHECK_ERR(rc, code, errp, substr)                                                          \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (code))                                                                         \
            test_fail(__FILE__, __LINE__, "%s: expected %s, got %s: %s", #rc,                      \
                      cairn_status_name(code), cairn_status_name(rc_), (errp)->msg);               \
        else if (strstr((errp)->msg, (substr)) == NULL)                                            \
            test_fail(__FILE__, __LINE__, "%s: message \"%s\" lacks \"%s\"", #rc, (errp)->msg,     \
                      (substr));                                                                   \
    } while (0)

#define SKIP(why)                                                                                  \
    do {                                                                                           \
        test_skip(why);                                                                            \
        return;                                                                                    \
    } while (0)

#define MISSING(why)                                                                               \
    do {                                                                                           \
        test_missing(why);                                                                         \
        return;                                                                                    \
    } while (0)

#endif
