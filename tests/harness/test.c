/* Test runner for tests/harness/test.h. */
#define _GNU_SOURCE
#include "test.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

#define MAX_TESTS 512

static struct {
    const char *name;
    test_fn fn;
} g_tests[MAX_TESTS];
static int g_ntests;
static int g_cur_failed, g_cur_skipped;
static char *g_tmpdir;

void test_register(const char *name, test_fn fn)
{
    if (g_ntests == MAX_TESTS)
        abort();
    g_tests[g_ntests].name = name;
    g_tests[g_ntests].fn = fn;
    g_ntests++;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    FAIL %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
    g_cur_failed++;
}

void test_skip(const char *why)
{
    fprintf(stdout, "    SKIP: %s\n", why);
    fprintf(stderr, "*** SKIPPED: %s\n", why);
    g_cur_skipped = 1;
}

void test_missing(const char *why)
{
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0) {
        fprintf(stdout, "    FAIL: missing under CI=true: %s\n", why);
        g_cur_failed++;
    } else {
        test_skip(why);
    }
}

const char *test_tmpdir(void)
{
    if (g_tmpdir == NULL) {
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        g_tmpdir = xasprintf("%s/cairn-test-XXXXXX", base);
        if (mkdtemp(g_tmpdir) == NULL) {
            perror("mkdtemp");
            abort();
        }
    }
    return g_tmpdir;
}

const char *test_source_dir(void)
{
    return CAIRN_SOURCE_DIR;
}

const char *test_shared_dir(void)
{
    static char path[4096];
    const char *env = getenv("CAIRN_SHARED");
    if (env != NULL && *env)
        snprintf(path, sizeof(path), "%s", env);
    else
        snprintf(path, sizeof(path), "%s/../shared", CAIRN_SOURCE_DIR);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return path;
}

/* Whether name is selected by a comma-separated list of globs; '!' before a glob excludes.
 * With only exclusions, everything else is selected. */
static int selected(const char *list, const char *name)
{
    if (list == NULL)
        return 1;
    int any_include = 0, included = 0;
    char *copy = xstrdup(list), *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        if (*p == '!') {
            if (fnmatch(p + 1, name, 0) == 0) {
                free(copy);
                return 0;
            }
        } else {
            any_include = 1;
            included |= fnmatch(p, name, 0) == 0;
        }
    }
    free(copy);
    return !any_include || included;
}

int test_main(int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    const char *only = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < g_ntests; i++) {
        if (!selected(only, g_tests[i].name))
            continue;
        g_cur_failed = 0;
        g_cur_skipped = 0;
        fprintf(stdout, "--- %s\n", g_tests[i].name);
        g_tests[i].fn();
        if (g_tmpdir != NULL) {
            if (g_cur_failed == 0)
                rmtree(g_tmpdir, NULL);
            else
                fprintf(stdout, "    (kept %s)\n", g_tmpdir);
            free(g_tmpdir);
            g_tmpdir = NULL;
        }
        if (g_cur_failed) {
            failed++;
            fprintf(stdout, "    FAILED %s\n", g_tests[i].name);
        } else if (g_cur_skipped) {
            skipped++;
        } else {
            passed++;
        }
    }
    fprintf(stdout, "%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (passed + failed + skipped == 0) {
        fprintf(stdout, "no test matches '%s'\n", only ? only : "");
        return 1;
    }
    return failed ? 1 : skipped ? 77 : 0;
}
