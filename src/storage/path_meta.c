/* Local-path backups: the metadata of a tree entry (owner and its names, times in ns, xattrs),
 * recorded by the walk and set again by a restore; names that are not UTF-8 in JSON; and the
 * --include/--exclude filter (docs/FORMAT.md "Tree", docs/STORAGE.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <jansson.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/log.h"
#include "common/util.h"
#include "internal.h"
#include "path.h"

/* Xattrs of one entry beyond this (names and values) are not recorded: a tree line must stay
 * below the reader's line limit (TREE_LINE_MAX, 1 MiB, in base64). */
#define XATTR_TOTAL_MAX (512 << 10)

/* ---- names as JSON ---- */

int path_json_get(const json_t *o, const char *key, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (s != NULL) {
        size_t n = strlen(s);
        if (n >= cap)
            return -1;
        memcpy(out, s, n + 1);
        return 0;
    }
    char *k = xasprintf("%s_b64", key);
    s = json_string_value(json_object_get(o, k));
    free(k);
    size_t n = 0;
    if (s == NULL || cairn_base64_decode(s, strlen(s), (uint8_t *)out, cap - 1, &n) != 0)
        return -1;
    out[n] = '\0';
    return strlen(out) == n ? 0 : -1; /* no NUL inside a name */
}

/* ---- recording ---- */

/* uid/gid -> name, cached (a lookup parses /etc/passwd or asks NSS every time). */
struct id_cache {
    pthread_mutex_t mu;
    struct {
        unsigned id;
        char name[64];
        int ok;
    } e[64];
    size_t n;
};
static struct id_cache users = {PTHREAD_MUTEX_INITIALIZER, {{0, "", 0}}, 0};
static struct id_cache groups = {PTHREAD_MUTEX_INITIALIZER, {{0, "", 0}}, 0};

static int id_name(struct id_cache *c, int is_user, unsigned id, char out[64])
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].id == id) {
            memcpy(out, c->e[i].name, 64);
            int ok = c->e[i].ok;
            pthread_mutex_unlock(&c->mu);
            return ok;
        }
    pthread_mutex_unlock(&c->mu);
    char buf[4096];
    int ok = 0;
    out[0] = '\0';
    if (is_user) {
        struct passwd pw, *res = NULL;
        ok = getpwuid_r(id, &pw, buf, sizeof(buf), &res) == 0 && res && strlen(pw.pw_name) < 64;
        if (ok)
            snprintf(out, 64, "%s", pw.pw_name);
    } else {
        struct group gr, *res = NULL;
        ok = getgrgid_r(id, &gr, buf, sizeof(buf), &res) == 0 && res && strlen(gr.gr_name) < 64;
        if (ok)
            snprintf(out, 64, "%s", gr.gr_name);
    }
    pthread_mutex_lock(&c->mu);
    size_t i = c->n < 64 ? c->n++ : id % 64;
    c->e[i].id = id;
    c->e[i].ok = ok;
    memcpy(c->e[i].name, out, 64);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* xattrs of abs (not following a symlink) as [{"name": N, "value_b64": V}], or NULL. */
static json_t *xattrs_of(const char *abs)
{
    ssize_t n = llistxattr(abs, NULL, 0);
    if (n <= 0)
        return NULL;
    char *names = xmalloc((size_t)n + 1);
    n = llistxattr(abs, names, (size_t)n);
    json_t *arr = json_array();
    size_t total = 0;
    for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(names + off) + 1) {
        const char *name = names + off;
        ssize_t vn = lgetxattr(abs, name, NULL, 0);
        if (vn < 0)
            continue; /* vanished meanwhile */
        total += strlen(name) + (size_t)vn;
        uint8_t *v = xmalloc((size_t)vn + 1);
        vn = lgetxattr(abs, name, v, (size_t)vn);
        json_t *jn = json_string(name);
        if (vn < 0 || jn == NULL || total > XATTR_TOTAL_MAX) {
            cairn_log(CAIRN_LOG_WARN, "storage", "'%s': xattr not recorded (%s)", abs,
                      jn == NULL ? "name is not UTF-8"
                      : vn < 0   ? strerror(errno)
                                 : "too large");
            json_decref(jn);
            free(v);
            continue;
        }
        char *b = xmalloc(4 * (((size_t)vn + 2) / 3) + 1);
        cairn_base64_encode(v, (size_t)vn, b);
        json_array_append_new(arr, json_pack("{s:o, s:s}", "name", jn, "value_b64", b));
        free(b);
        free(v);
    }
    free(names);
    if (json_array_size(arr) == 0) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static json_int_t ts_ns(const struct timespec *t)
{
    return (json_int_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

json_t *path_meta_new(const char *abs, const char *rel, const struct stat *sb, const char *type)
{
    json_t *j = json_object();
    json_set_name(j, "path", rel);
    json_object_set_new(j, "type", json_string(type));
    json_object_set_new(j, "mode", json_integer((json_int_t)(sb->st_mode & 07777)));
    json_object_set_new(j, "uid", json_integer((json_int_t)sb->st_uid));
    json_object_set_new(j, "gid", json_integer((json_int_t)sb->st_gid));
    char name[64];
    if (id_name(&users, 1, sb->st_uid, name))
        json_set_name(j, "user", name);
    if (id_name(&groups, 0, sb->st_gid, name))
        json_set_name(j, "group", name);
    json_object_set_new(j, "mtime", json_integer((json_int_t)sb->st_mtim.tv_sec));
    json_object_set_new(j, "mtime_ns", json_integer(ts_ns(&sb->st_mtim)));
    json_object_set_new(j, "atime_ns", json_integer(ts_ns(&sb->st_atim)));
    json_t *x = xattrs_of(abs);
    if (x != NULL)
        json_object_set_new(j, "xattrs", x);
    return j;
}

/* ---- restoring ---- */

void path_meta_warn(const struct meta_apply *m, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *shown = str_escape_dup(msg);
    cairn_log(CAIRN_LOG_WARN, "storage", "restore: %s", shown);
    free(shown);
    if (m->not_restored != NULL)
        __atomic_add_fetch(m->not_restored, 1, __ATOMIC_RELAXED);
}

/* The uid and gid to give: by name when recorded and known here (unless numeric_owner). */
static void owner_of(const struct meta_apply *m, const json_t *j, uid_t *uid, gid_t *gid)
{
    *uid = (uid_t)json_integer_value(json_object_get(j, "uid"));
    *gid = (gid_t)json_integer_value(json_object_get(j, "gid"));
    char name[256], buf[4096];
    if (m->o->numeric_owner)
        return;
    if (path_json_get(j, "user", name, sizeof(name)) == 0) {
        struct passwd pw, *res = NULL;
        if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
            *uid = pw.pw_uid;
    }
    if (path_json_get(j, "group", name, sizeof(name)) == 0) {
        struct group gr, *res = NULL;
        if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) == 0 && res != NULL)
            *gid = gr.gr_gid;
    }
}

static void times_of(const json_t *j, struct timespec ts[2])
{
    json_t *m = json_object_get(j, "mtime_ns"), *a = json_object_get(j, "atime_ns");
    int64_t mt = json_is_integer(m) ? json_integer_value(m)
                                    : json_integer_value(json_object_get(j, "mtime")) * 1000000000;
    int64_t at = json_is_integer(a) ? json_integer_value(a) : mt;
    ts[0] = (struct timespec){at / 1000000000, at % 1000000000};
    ts[1] = (struct timespec){mt / 1000000000, mt % 1000000000};
    if (ts[0].tv_nsec < 0)
        ts[0] = (struct timespec){ts[0].tv_sec - 1, ts[0].tv_nsec + 1000000000};
    if (ts[1].tv_nsec < 0)
        ts[1] = (struct timespec){ts[1].tv_sec - 1, ts[1].tv_nsec + 1000000000};
}

/* user.* always; POSIX ACLs with --acls; the rest (trusted.*, security.*) as root. */
static int xattr_wanted(const struct meta_apply *m, const char *name)
{
    if (strncmp(name, "user.", 5) == 0)
        return 1;
    if (strncmp(name, "system.posix_acl_", 17) == 0)
        return m->o->acls;
    return m->root;
}

static void xattrs_apply(const struct meta_apply *m, int fd, const json_t *j, const char *what)
{
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(j, "xattrs"), i, x)
    {
        const char *name = json_string_value(json_object_get(x, "name"));
        const char *v = json_string_value(json_object_get(x, "value_b64"));
        if (name == NULL || v == NULL || !xattr_wanted(m, name))
            continue;
        size_t cap = strlen(v) / 4 * 3 + 3, n = 0;
        uint8_t *buf = xmalloc(cap);
        if (cairn_base64_decode(v, strlen(v), buf, cap, &n) != 0)
            path_meta_warn(m, "'%s': xattr '%s' is not base64: not set", what, name);
        else if (fsetxattr(fd, name, buf, n, 0) != 0)
            path_meta_warn(m, "'%s': could not set xattr '%s': %s", what, name, strerror(errno));
        free(buf);
    }
}

void path_meta_apply_fd(const struct meta_apply *m, int fd, const json_t *j, const char *what)
{
    if (!json_is_integer(json_object_get(j, "uid")))
        return; /* a version 1 tree: mode only, set by the caller */
    uid_t uid;
    gid_t gid;
    owner_of(m, j, &uid, &gid);
    if (m->root && fchown(fd, uid, gid) != 0)
        path_meta_warn(m, "'%s': could not set owner %u:%u: %s", what, (unsigned)uid, (unsigned)gid,
                       strerror(errno));
    xattrs_apply(m, fd, j, what);
    if (fchmod(fd, (mode_t)(json_integer_value(json_object_get(j, "mode")) & 07777)) != 0)
        path_meta_warn(m, "'%s': could not set its mode: %s", what, strerror(errno));
    struct timespec ts[2];
    times_of(j, ts);
    if (futimens(fd, ts) != 0)
        path_meta_warn(m, "'%s': could not set its times: %s", what, strerror(errno));
}

void path_meta_apply_at(const struct meta_apply *m, int dirfd, const char *base, const json_t *j,
                        const char *what)
{
    uid_t uid;
    gid_t gid;
    owner_of(m, j, &uid, &gid);
    int islink = strcmp(json_string_value(json_object_get(j, "type")), "symlink") == 0;
    if (m->root && fchownat(dirfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
        path_meta_warn(m, "'%s': could not set owner %u:%u: %s", what, (unsigned)uid, (unsigned)gid,
                       strerror(errno));
    /* Not a symlink (checked by the caller, who just created it in the temporary). */
    if (!islink &&
        fchmodat(dirfd, base, (mode_t)(json_integer_value(json_object_get(j, "mode")) & 07777),
                 0) != 0)
        path_meta_warn(m, "'%s': could not set its mode: %s", what, strerror(errno));
    struct timespec ts[2];
    times_of(j, ts);
    if (utimensat(dirfd, base, ts, AT_SYMLINK_NOFOLLOW) != 0)
        path_meta_warn(m, "'%s': could not set its times: %s", what, strerror(errno));
}

/* ---- --include / --exclude ---- */

/* pattern against path: without '/', the last component; with one, the whole path from the
 * root (a leading '/' dropped). */
static int pattern_matches(const char *pat, const char *path)
{
    const char *p = pat[0] == '/' ? pat + 1 : pat;
    if (strchr(p, '/') != NULL)
        return fnmatch(p, path, FNM_PATHNAME) == 0;
    const char *base = strrchr(path, '/');
    return fnmatch(p, base ? base + 1 : path, 0) == 0;
}

/* Does a pattern of list match path or one of the directories above it? */
static int any_matches(const char *const *list, const char *path)
{
    char *copy = xstrdup(path);
    int hit = 0;
    for (;;) {
        for (size_t i = 0; list[i] != NULL && !hit; i++)
            hit = pattern_matches(list[i], copy);
        char *slash = strrchr(copy, '/');
        if (hit || slash == NULL)
            break;
        *slash = '\0';
    }
    free(copy);
    return hit;
}

int path_filter_active(const struct cairn_path_opts *o)
{
    return (o->include != NULL && o->include[0] != NULL) ||
           (o->exclude != NULL && o->exclude[0] != NULL);
}

int path_filter_want(const struct cairn_path_opts *o, const char *path)
{
    if (o->exclude != NULL && any_matches(o->exclude, path))
        return 0;
    return o->include == NULL || o->include[0] == NULL || any_matches(o->include, path);
}
