/* Internal helpers: allocation, whole-buffer IO, directories, clocks, time formats. */
#define _GNU_SOURCE
#include <jansson.h>
#include "util.h"

#include "cairn/digest.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        abort();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

void *xmap(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    return p;
}

void xmap_trim(void *p, size_t keep, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t from = (keep + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
    if (p != NULL && from < n)
        (void)madvise((uint8_t *)p + from, n - from, MADV_DONTNEED); /* best effort */
}

void xunmap(void *p, size_t n)
{
    if (p != NULL)
        munmap(p, n ? n : 1);
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return p;
}

int write_all(int fd, const void *buf, size_t len, const char *what, struct cairn_err *err)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cairn_err_sys(err, 0, errno, "write %s", what);
        }
        p += n;
        len -= (size_t)n;
    }
    return CAIRN_OK;
}

#define WRITEBACK_CHUNK (8u << 20)

void writeback(int fd, struct writeback *wb, size_t just_written)
{
    wb->written += just_written;
    if (wb->written - wb->started < WRITEBACK_CHUNK)
        return;
    (void)sync_file_range(fd, (off_t)wb->started, (off_t)(wb->written - wb->started),
                          SYNC_FILE_RANGE_WRITE);
    wb->started = wb->written;
}

int read_all(int fd, void *buf, size_t cap, size_t *got, const char *what, struct cairn_err *err)
{
    size_t off = 0;
    while (off < cap) {
        ssize_t n = read(fd, (char *)buf + off, cap - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return cairn_err_sys(err, 0, errno, "read %s", what);
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    *got = off;
    return CAIRN_OK;
}

int read_file_max(const char *path, size_t max, uint8_t **data, size_t *len, struct cairn_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "open '%s'", path);
    size_t cap = 4096, off = 0;
    uint8_t *buf = xmalloc(cap + 1);
    int rc = CAIRN_OK;
    for (;;) {
        if (off == cap) {
            if (cap > max) {
                rc =
                    cairn_err_set(err, CAIRN_E_INVALID, "'%s' is larger than %zu bytes", path, max);
                goto out;
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + off, cap - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = cairn_err_sys(err, 0, errno, "read '%s'", path);
            goto out;
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    if (off > max) {
        rc = cairn_err_set(err, CAIRN_E_INVALID, "'%s' is larger than %zu bytes", path, max);
        goto out;
    }
    buf[off] = '\0';
    *data = buf;
    *len = off;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

int tmpfile_open(const char *dir, int *fd, struct cairn_err *err)
{
    if (dir == NULL || dir[0] == '\0')
        dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/tmp";
    *fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        char *tmp = xasprintf("%s/cairn-tmp.XXXXXX", dir);
        *fd = mkostemp(tmp, O_CLOEXEC);
        if (*fd >= 0)
            unlink(tmp);
        free(tmp);
    }
    if (*fd < 0)
        return cairn_err_sys(err, CAIRN_E_IO, errno, "create a temporary file in '%s'", dir);
    return CAIRN_OK;
}

int read_secret_file(const char *path, const char *what, size_t max, uint8_t **data, size_t *len,
                     struct cairn_err *err)
{
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO cannot block the open (it is refused right after). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "%s '%s'", what, path);
    struct stat st;
    int rc = CAIRN_OK;
    uint8_t *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0)
        rc = cairn_err_sys(err, 0, errno, "%s '%s'", what, path);
    else if (!S_ISREG(st.st_mode))
        rc = cairn_err_set(err, CAIRN_E_INVALID, "%s '%s' is not a regular file (a %s)", what, path,
                           file_type_name(st.st_mode));
    else if (st.st_mode & 077) /* a secret others can read is no secret: a usage error */
        rc = cairn_err_set(err, CAIRN_E_INVALID,
                           "%s '%s' is readable by group or others (mode %04o); fix it with: "
                           "chmod 600 '%s'",
                           what, path, (unsigned)(st.st_mode & 07777), path);
    else {
        buf = xmalloc(max + 2);
        char *w = xasprintf("%s '%s'", what, path);
        rc = read_all(fd, buf, max + 1, &got, w, err);
        free(w);
        if (rc == CAIRN_OK && got > max)
            rc = cairn_err_set(err, CAIRN_E_INVALID, "%s '%s' is larger than %zu bytes", what, path,
                               max);
    }
    close(fd);
    if (rc != CAIRN_OK) {
        if (buf != NULL)
            wipe(buf, max + 2);
        free(buf);
        return rc;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return CAIRN_OK;
}

const char *file_type_name(mode_t m)
{
    return S_ISREG(m)    ? "regular file"
           : S_ISDIR(m)  ? "directory"
           : S_ISLNK(m)  ? "symlink"
           : S_ISFIFO(m) ? "FIFO"
           : S_ISSOCK(m) ? "socket"
           : S_ISCHR(m)  ? "character device"
           : S_ISBLK(m)  ? "block device"
                         : "special file";
}

int mkdir_p(const char *path, mode_t mode, struct cairn_err *err)
{
    char *tmp = xstrdup(path);
    int rc = CAIRN_OK;
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
                rc = cairn_err_sys(err, 0, errno, "create directory '%s'", tmp);
                goto out;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = cairn_err_set(err, CAIRN_E_IO, "'%s' exists and is not a directory", path);
out:
    free(tmp);
    return rc;
}

int fsync_dir(const char *dir, struct cairn_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cairn_err_sys(err, 0, errno, "open directory '%s'", dir);
    int rc = CAIRN_OK;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = cairn_err_sys(err, 0, errno, "fsync directory '%s'", dir);
    close(fd);
    return rc;
}

int rmtree(const char *path, struct cairn_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return CAIRN_OK;
        return cairn_err_sys(err, 0, errno, "stat '%s'", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return cairn_err_sys(err, 0, errno, "remove '%s'", path);
        return CAIRN_OK;
    }
    DIR *d = opendir(path);
    if (d == NULL)
        return cairn_err_sys(err, 0, errno, "open directory '%s'", path);
    int rc = CAIRN_OK;
    struct dirent *de;
    while (rc == CAIRN_OK && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *child = path_join(path, de->d_name);
        rc = rmtree(child, err);
        free(child);
    }
    closedir(d);
    if (rc == CAIRN_OK && rmdir(path) != 0 && errno != ENOENT)
        rc = cairn_err_sys(err, 0, errno, "remove directory '%s'", path);
    return rc;
}

void path_dirname(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(out, cap, ".");
    } else if (slash == path) {
        snprintf(out, cap, "/");
    } else {
        snprintf(out, cap, "%.*s", (int)(slash - path), path);
    }
}

char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/')
        la--;
    while (*b == '/')
        b++;
    return xasprintf("%.*s/%s", (int)la, a, b);
}

int name_is_safe(const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return 0;
    return strlen(name) <= 255;
}

void host_name(char *out, size_t cap, int name_safe)
{
    char h[256] = "";
    if (gethostname(h, sizeof(h) - 1) != 0 || h[0] == '\0')
        snprintf(h, sizeof(h), "unknown");
    size_t n = 0;
    for (const char *p = h; *p != '\0' && n + 1 < cap; p++) {
        int safe = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '-';
        out[n++] = safe || !name_safe ? *p : '-';
    }
    if (cap > 0)
        out[n] = '\0';
}

size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (len == 0 || p[0] > 0xf4 || len > n)
        return 0;
    uint32_t c = p[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Code points a terminal acts on: C1, bidi embeddings/overrides/isolates, line separators. */
static int cp_is_control(uint32_t c)
{
    return (c >= 0x80 && c <= 0x9f) || c == 0x200e || c == 0x200f || c == 0x2028 || c == 0x2029 ||
           (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

char *str_escape(char *dst, size_t cap, const char *src, size_t len)
{
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0, i = 0;
    while (i < len) {
        char tmp[8];
        size_t tn, step = 1;
        uint32_t cp = 0;
        if (p[i] == '\n' || p[i] == '\r' || p[i] == '\t') {
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\%c",
                                  p[i] == '\n'   ? 'n'
                                  : p[i] == '\r' ? 'r'
                                                 : 't');
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        } else if (p[i] < 0x80) {
            tmp[0] = (char)p[i];
            tn = 1;
        } else if ((step = utf8_decode(p + i, len - i, &cp)) == 0) {
            step = 1;
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        } else if (cp_is_control(cp)) {
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned)cp);
        } else {
            memcpy(tmp, p + i, step);
            tn = step;
        }
        if (o + tn >= cap)
            break;
        memcpy(dst + o, tmp, tn);
        o += tn;
        i += step;
    }
    dst[o] = '\0';
    return dst;
}

char *str_escape_dup(const char *src)
{
    if (src == NULL)
        return NULL;
    size_t n = strlen(src), cap = n * 6 + 1; /* \uNNNN for 3 bytes, \xNN for 1: at most 4x */
    return str_escape(xmalloc(cap), cap, src, n);
}

void str_join(char *buf, size_t cap, size_t *off, const char *sep, const char *s)
{
    int n = snprintf(buf + *off, cap - *off, "%s%s", *off ? sep : "", s);
    if (n > 0)
        *off = *off + (size_t)n < cap ? *off + (size_t)n : cap - 1;
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void format_rfc3339(int64_t sec, long nsec, char *out, size_t cap)
{
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* strftime's %Y does not zero-pad year 1 (Go's zero time), so format by hand. */
    size_t n = (size_t)snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (nsec != 0) {
        /* Go's RFC3339Nano trims trailing zeros of the fraction. */
        char frac[16];
        snprintf(frac, sizeof(frac), "%09ld", nsec);
        size_t fl = 9;
        while (fl > 0 && frac[fl - 1] == '0')
            fl--;
        n += (size_t)snprintf(out + n, cap - n, ".%.*s", (int)fl, frac);
    }
    snprintf(out + n, cap - n, "Z");
}

static int parse_digits(const char **s, int count, int *out)
{
    int v = 0;
    for (int i = 0; i < count; i++) {
        char c = (*s)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *s += count;
    *out = v;
    return 0;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int parse_rfc3339(const char *s, int64_t *sec, long *nsec)
{
    int Y, M, D, h, m, sc;
    if (parse_digits(&s, 4, &Y) || *s++ != '-' || parse_digits(&s, 2, &M) || *s++ != '-' ||
        parse_digits(&s, 2, &D) || (*s != 'T' && *s != 't') || !*s++ || parse_digits(&s, 2, &h) ||
        *s++ != ':' || parse_digits(&s, 2, &m) || *s++ != ':' || parse_digits(&s, 2, &sc))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sc > 60)
        return -1;
    long frac = 0;
    if (*s == '.') {
        s++;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (digits < 9) {
                frac = frac * 10 + (*s - '0');
                digits++;
            }
            s++;
        }
        if (digits == 0)
            return -1;
        while (digits++ < 9)
            frac *= 10;
    }
    int64_t off = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1, oh, om;
        if (parse_digits(&s, 2, &oh) || *s++ != ':' || parse_digits(&s, 2, &om))
            return -1;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (*s != '\0')
        return -1;
    *sec = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + sc - off;
    if (nsec != NULL)
        *nsec = frac;
    return 0;
}

void format_bytes(uint64_t n, char *out, size_t cap)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%llu B", (unsigned long long)n);
    else
        snprintf(out, cap, "%.1f %s", v, units[u]);
}

int parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    const char *units = "kmgt", *u = *end ? strchr(units, tolower((unsigned char)*end)) : NULL;
    uint64_t mult = 1;
    if (u != NULL) {
        mult = 1ull << (10 * (u - units + 1));
        if (*++end == 'i')
            end++;
    }
    if (*end == 'B')
        end++;
    if (*end != '\0' || v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int parse_duration(const char *s, int64_t *sec)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    int64_t total = 0;
    while (*s) {
        if (!isdigit((unsigned char)*s))
            return -1;
        int64_t v = 0;
        while (isdigit((unsigned char)*s)) {
            v = v * 10 + (*s++ - '0');
            if (v > 100LL * 365 * 86400)
                return -1;
        }
        int64_t mult;
        switch (*s) {
        case '\0': mult = 1; break;
        case 's':
            mult = 1;
            s++;
            break;
        case 'm':
            mult = 60;
            s++;
            break;
        case 'h':
            mult = 3600;
            s++;
            break;
        case 'd':
            mult = 86400;
            s++;
            break;
        case 'w':
            mult = 7 * 86400;
            s++;
            break;
        case 'y':
            mult = 365 * 86400; /* retention windows ("keep-within 1y"); no calendar years */
            s++;
            break;
        default: return -1;
        }
        total += v * mult;
        if (total > 100LL * 365 * 86400)
            return -1;
    }
    *sec = total;
    return 0;
}

void wipe(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}

void wipe_free(char *s)
{
    if (s != NULL) {
        wipe(s, strlen(s));
        free(s);
    }
}

/* A name in JSON: the string under key when it is UTF-8, else its bytes in standard base64
 * under key_b64 (the tree format's rule, docs/FORMAT.md). */
void json_set_name(json_t *o, const char *key, const char *s)
{
    json_t *v = json_string(s); /* NULL when s is not valid UTF-8 */
    if (v != NULL) {
        json_object_set_new(o, key, v);
        return;
    }
    size_t n = strlen(s);
    char *b = xmalloc(4 * ((n + 2) / 3) + 1);
    cairn_base64_encode((const uint8_t *)s, n, b);
    char *k = xasprintf("%s_b64", key);
    json_object_set_new(o, k, json_string(b));
    free(k);
    free(b);
}
