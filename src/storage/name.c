/* Names: what a backup or file may be called, backup names made from a time (the one place
 * that knows their shape), and the checks the storage and backup handles apply. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "internal.h"

int cairn_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > CAIRN_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+' || c == '@' || c == '='))
            return 0;
    }
    return 1;
}

#define STAMP_LEN 16 /* "YYYYMMDDTHHMMSSZ" */

int cairn_backup_name_make(int64_t unix_ms, int with_ms, const char *tag, char *out, size_t cap,
                           struct cairn_err *err)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (unix_ms < 0 || gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
        return cairn_err_set(err, CAIRN_E_INVALID, "no backup name for time %lld ms",
                             (long long)unix_ms);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
    char frac[8] = "";
    if (with_ms)
        snprintf(frac, sizeof(frac), ".%03d", (int)(unix_ms % 1000));
    int n = snprintf(out, cap, "%s%sZ%s%s", stamp, frac, tag ? "-" : "", tag ? tag : "");
    if (n < 0 || (size_t)n >= cap)
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup name '%s%sZ-%s' is longer than %zu "
                             "characters",
                             stamp, frac, tag ? tag : "", cap ? cap - 1 : 0);
    if (!cairn_name_valid(out))
        return cairn_err_set(err, CAIRN_E_INVALID, "invalid backup name '%s'", out);
    return CAIRN_OK;
}

static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

int cairn_backup_name_parse(const char *name, int64_t *unix_ms, const char **tag)
{
    int y, mo, d, h, mi, sec, ms = 0;
    if (name == NULL || strlen(name) < STAMP_LEN || !digits(name, 4, &y) ||
        !digits(name + 4, 2, &mo) || !digits(name + 6, 2, &d) || name[8] != 'T' ||
        !digits(name + 9, 2, &h) || !digits(name + 11, 2, &mi) || !digits(name + 13, 2, &sec))
        return 0;
    const char *p = name + 15;
    if (*p == '.') {
        if (!digits(p + 1, 3, &ms))
            return 0;
        p += 4;
    }
    if (*p++ != 'Z' || (*p != '\0' && (*p != '-' || p[1] == '\0')))
        return 0;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    /* timegm normalises 20260231 to March 3rd: a real date round-trips. */
    if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
        tm.tm_min != mi || tm.tm_sec != sec)
        return 0;
    if (unix_ms != NULL)
        *unix_ms = (int64_t)t * 1000 + ms;
    if (tag != NULL)
        *tag = *p == '-' ? p + 1 : p;
    return 1;
}

int cairn_backup_name_now(const char *tag, char *out, size_t cap, struct cairn_err *err)
{
    return cairn_backup_name_make((int64_t)now_ms(), 0, tag, out, cap, err);
}

int storage_check_backup_name(const char *name, struct cairn_err *err)
{
    if (!cairn_name_valid(name))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "invalid backup name '%s': use 1-%d characters of A-Z a-z 0-9 . _ - "
                             "+ @ =, not starting with '.'",
                             name ? name : "", CAIRN_NAME_MAX);
    return CAIRN_OK;
}

int storage_check_file_name(const struct cairn_backup *b, const char *file, struct cairn_err *err)
{
    if (!cairn_name_valid(file))
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "backup '%s': invalid file name '%s': use 1-%d characters of A-Z a-z "
                             "0-9 . _ - + @ =, not starting with '.'",
                             b->name, file ? file : "", CAIRN_NAME_MAX);
    if (strncmp(file, CAIRN_MANIFEST_NAME, strlen(CAIRN_MANIFEST_NAME)) == 0)
        return cairn_err_set(err, CAIRN_E_INVALID, "backup '%s': file name '%s' is reserved",
                             b->name, file);
    return CAIRN_OK;
}
