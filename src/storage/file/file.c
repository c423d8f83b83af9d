/* File storage driver: <root>/<backup>/<file>. Each file is written to a temp file in the
 * backup directory, fsync'd, renamed into place (without replacing unless asked to), and the
 * directory fsync'd (cairn_atomic_file_writer_open). A crash leaves at most ".<file>.tmp.*"
 * debris inside an incomplete backup; a file name is either absent or complete, so every
 * write is CAIRN_STORAGE_WRITE_ATOMIC. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "storage/internal.h"

struct file_store {
    char *root;
};

static int file_open(const char *url, void **state, struct cairn_err *err)
{
    const char *path = url;
    if (strncmp(url, "file://", 7) == 0)
        path = url + 7;
    if (path[0] != '/')
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "file storage URL '%s' needs an absolute path (file:///path)", url);
    if (strchr(path, '?') != NULL)
        return cairn_err_set(err, CAIRN_E_INVALID, "file storage URL '%s' takes no options", url);
    /* No component may be "..": the root is what the user named, nothing above it. */
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2)
        if (p[-1] == '/' && (p[2] == '/' || p[2] == '\0'))
            return cairn_err_set(err, CAIRN_E_INVALID,
                                 "file storage path '%s' must not contain '..'", path);
    struct file_store *fs = xcalloc(1, sizeof(*fs));
    fs->root = xstrdup(path);
    size_t n = strlen(fs->root);
    while (n > 1 && fs->root[n - 1] == '/')
        fs->root[--n] = '\0';
    *state = fs;
    return CAIRN_OK;
}

static int file_list(void *state, int (*fn)(void *arg, const char *name), void *arg,
                     struct cairn_err *err)
{
    struct file_store *fs = state;
    DIR *d = opendir(fs->root);
    if (d == NULL) {
        /* A typo must not look like an empty location (as restic and borg): start()
         * creates the root, so only a location never written to is missing. */
        if (errno == ENOENT)
            return cairn_err_set(err, CAIRN_E_NOTFOUND, "no such storage location '%s'", fs->root);
        return cairn_err_sys(err, 0, errno, "open storage directory '%s'", fs->root);
    }
    int rc = CAIRN_OK;
    struct dirent *e;
    while (rc == CAIRN_OK && (errno = 0, e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int isdir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            struct stat sb;
            char *p = path_join(fs->root, e->d_name);
            isdir = lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
            free(p);
        }
        if (isdir)
            rc = fn(arg, e->d_name);
    }
    if (rc == CAIRN_OK && errno != 0)
        rc = cairn_err_sys(err, 0, errno, "read storage directory '%s'", fs->root);
    closedir(d);
    return rc;
}

static int file_start(void *state, const char *backup, struct cairn_err *err)
{
    struct file_store *fs = state;
    int rc = mkdir_p(fs->root, 0700, err);
    if (rc != CAIRN_OK)
        return rc;
    char *dir = path_join(fs->root, backup);
    if (mkdir(dir, 0700) != 0) {
        if (errno == EEXIST)
            rc = cairn_err_set(err, CAIRN_E_EXISTS, "backup '%s' already exists in '%s'", backup,
                               fs->root);
        else
            rc = cairn_err_sys(err, 0, errno, "create backup directory '%s'", dir);
    } else {
        rc = fsync_dir(fs->root, err);
    }
    free(dir);
    return rc;
}

/* The backup's directory and everything in it, in any order (the generic layer has removed
 * its MANIFEST first). */
static int file_remove(void *state, const char *backup, struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    struct stat sb;
    int rc;
    if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        rc =
            cairn_err_set(err, CAIRN_E_NOTFOUND, "backup '%s' not found in '%s'", backup, fs->root);
    else
        rc = rmtree(dir, err);
    if (rc == CAIRN_OK)
        rc = fsync_dir(fs->root, err);
    free(dir);
    return rc;
}

/* Writes that ask for REPLACE without SYNC (lock objects: small and ephemeral) are buffered
 * in memory, then written to a temporary and renamed over in one go at close, without fsync.
 * A process killed in that instant leaves a temporary named with its pid and host, which the
 * next such write from this host into the same directory removes. */
struct lock_writer {
    struct cairn_writer base;
    char *path;
    char buf[4096];
    size_t len;
};

static int lockw_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct lock_writer *lw = (struct lock_writer *)w;
    if (len > sizeof(lw->buf) - lw->len)
        return cairn_err_set(err, CAIRN_E_INVALID, "lock object '%s' over %zu bytes", lw->path,
                             sizeof(lw->buf));
    memcpy(lw->buf + lw->len, buf, len);
    lw->len += len;
    return CAIRN_OK;
}

#define LOCK_TMP_PREFIX ".lock.tmp."

/* Remove the lock temporaries ".lock.tmp.<pid>.<host>.*" that processes of this host which
 * no longer exist left behind (killed between mkstemp and rename). Another host's, or a live
 * process's, are never touched: it may be writing them right now. */
static void sweep_lock_temps(const char *dir, const char *host)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    size_t hl = strlen(host);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, LOCK_TMP_PREFIX, strlen(LOCK_TMP_PREFIX)) != 0)
            continue;
        char *end;
        long pid = strtol(e->d_name + strlen(LOCK_TMP_PREFIX), &end, 10);
        if (pid <= 0 || *end != '.' || strncmp(end + 1, host, hl) != 0 || end[1 + hl] != '.' ||
            pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *p = path_join(dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
}

static int lockw_finish(struct cairn_writer *w, struct cairn_err *err)
{
    struct lock_writer *lw = (struct lock_writer *)w;
    char dir[4096], host[64];
    path_dirname(lw->path, dir, sizeof(dir));
    host_name(host, sizeof(host), 1); /* it goes into a file name */
    sweep_lock_temps(dir, host);
    char *tmp = xasprintf("%s/" LOCK_TMP_PREFIX "%ld.%s.XXXXXX", dir, (long)getpid(), host);
    int fd = mkstemp(tmp); /* closed right below: no exec can inherit it */
    int rc = CAIRN_OK;
    if (fd < 0)
        rc = cairn_err_sys(err, 0, errno, "create '%s'", tmp);
    else if (fchmod(fd, 0600) != 0)
        rc = cairn_err_sys(err, 0, errno, "chmod '%s'", tmp);
    else
        rc = write_all(fd, lw->buf, lw->len, tmp, err);
    if (fd >= 0 && close(fd) != 0 && rc == CAIRN_OK)
        rc = cairn_err_sys(err, 0, errno, "close '%s'", tmp);
    if (rc == CAIRN_OK && rename(tmp, lw->path) != 0)
        rc = cairn_err_sys(err, 0, errno, "rename '%s' to '%s'", tmp, lw->path);
    if (rc != CAIRN_OK && fd >= 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

static void lockw_free(struct cairn_writer *w)
{
    struct lock_writer *lw = (struct lock_writer *)w;
    free(lw->path);
    free(lw);
}

static const struct cairn_writer_ops lock_writer_ops = {"lock", lockw_write, lockw_finish,
                                                        lockw_free};

static int file_create(void *state, const char *backup, const char *file, int64_t size_hint,
                       const struct cairn_storage_write_opts *opts, struct cairn_writer **w,
                       struct cairn_err *err)
{
    (void)size_hint;
    unsigned flags = opts ? opts->flags : 0;
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    char *path = path_join(dir, file);
    struct stat sb;
    int rc = CAIRN_OK;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND,
                           "backup directory '%s' is missing (removed while writing?)", dir);
        goto out;
    }
    /* Without REPLACE a synced writer is used anyway: it refuses an existing name. */
    if ((flags & CAIRN_STORAGE_WRITE_REPLACE) && !(flags & CAIRN_STORAGE_WRITE_SYNC)) {
        struct lock_writer *lw = xcalloc(1, sizeof(*lw));
        cairn_writer_init(&lw->base, &lock_writer_ops, NULL);
        lw->path = path;
        path = NULL;
        *w = &lw->base;
        goto out;
    }
    rc = cairn_atomic_file_writer_open(path, 0600, (flags & CAIRN_STORAGE_WRITE_REPLACE) != 0, w,
                                       err);
out:
    free(path);
    free(dir);
    return rc;
}

static int file_read(void *state, const char *backup, const char *file, struct cairn_reader **r,
                     struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    char *path = path_join(dir, file);
    /* O_NONBLOCK and a type check: a FIFO (or a directory) planted under a stored name is a
     * damaged backup, reported as corrupt, never a read that blocks the whole store. */
    int rc = CAIRN_OK;
    struct stat sb;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ELOOP)
        rc =
            cairn_err_set(err, CAIRN_E_CORRUPT, "'%s' is a symbolic link, not a stored file", path);
    else if (fd < 0)
        rc = cairn_err_sys(err, 0, errno, "open '%s'", path);
    else if (fstat(fd, &sb) != 0)
        rc = cairn_err_sys(err, 0, errno, "stat '%s'", path);
    else if (!S_ISREG(sb.st_mode))
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "'%s' is a %s, not a regular file", path,
                           S_ISDIR(sb.st_mode)    ? "directory"
                           : S_ISFIFO(sb.st_mode) ? "FIFO"
                                                  : "special file");
    if (rc == CAIRN_OK) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        *r = cairn_fd_reader_new(fd, 1);
    } else if (fd >= 0) {
        close(fd);
    }
    free(path);
    free(dir);
    return rc;
}

/* Lock objects: regular files of <root>/<backup> (CAIRN_LOCK_DIR), temporaries skipped. */
static int file_list_files(void *state, const char *backup, int (*fn)(void *arg, const char *file),
                           void *arg, struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    DIR *d = opendir(dir);
    int rc = CAIRN_OK;
    if (d == NULL) {
        struct stat sb;
        if (errno != ENOENT)
            rc = cairn_err_sys(err, 0, errno, "open directory '%s'", dir);
        else if (stat(fs->root, &sb) != 0)
            rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "no such storage location '%s'", fs->root);
        free(dir);
        return rc;
    }
    struct dirent *e;
    while (rc == CAIRN_OK && (errno = 0, e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && (e->d_type == DT_REG || e->d_type == DT_UNKNOWN))
            rc = fn(arg, e->d_name);
    if (rc == CAIRN_OK && errno != 0)
        rc = cairn_err_sys(err, 0, errno, "read directory '%s'", dir);
    closedir(d);
    free(dir);
    return rc;
}

/* The temporaries ".<file>.tmp.*" of atomic writes killed before their rename (a pack cut
 * short can be 32 MiB); lock temporaries are the lock code's. */
static int file_sweep(void *state, const char *backup, struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    DIR *d = opendir(dir);
    int rc = CAIRN_OK;
    if (d == NULL) {
        if (errno != ENOENT)
            rc = cairn_err_sys(err, 0, errno, "open directory '%s'", dir);
        free(dir);
        return rc;
    }
    struct dirent *e;
    while (rc == CAIRN_OK && (errno = 0, e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp.") == NULL ||
            strncmp(e->d_name, ".lock.tmp.", 10) == 0)
            continue;
        char *p = path_join(dir, e->d_name);
        if (unlink(p) != 0 && errno != ENOENT)
            rc = cairn_err_sys(err, 0, errno, "remove '%s'", p);
        free(p);
    }
    if (rc == CAIRN_OK && errno != 0)
        rc = cairn_err_sys(err, 0, errno, "read directory '%s'", dir);
    closedir(d);
    free(dir);
    return rc;
}

static int file_remove_file(void *state, const char *backup, const char *file,
                            struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    char *path = path_join(dir, file);
    int rc = CAIRN_OK;
    if (unlink(path) == 0)
        rc = CAIRN_OK;
    else if (errno == EISDIR) /* whatever is at the name goes: a damaged backup's directory */
        rc = rmtree(path, err);
    else if (errno == ENOENT || errno == ENOTDIR) /* no such file, or no such backup */
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "'%s' not found", path);
    else
        rc = cairn_err_sys(err, 0, errno, "remove '%s'", path);
    if (rc == CAIRN_OK)
        rc = fsync_dir(dir, err);
    free(path);
    free(dir);
    return rc;
}

static void file_free(void *state)
{
    struct file_store *fs = state;
    if (fs == NULL)
        return;
    free(fs->root);
    free(fs);
}

static int file_read_at(void *state, const char *backup, const char *file, uint64_t off, void *buf,
                        size_t len, struct cairn_err *err)
{
    struct file_store *fs = state;
    char *dir = path_join(fs->root, backup);
    char *path = path_join(dir, file);
    int rc = CAIRN_OK;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 && errno == ENOENT)
        rc = cairn_err_set(err, CAIRN_E_NOTFOUND, "'%s' not found", path);
    else if (fd < 0)
        rc = cairn_err_sys(err, 0, errno, "open '%s'", path);
    else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        rc = cairn_err_set(err, CAIRN_E_CORRUPT, "'%s' is not a regular file", path);
    for (size_t got = 0; rc == CAIRN_OK && got < len;) {
        ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            rc = cairn_err_sys(err, 0, errno, "read '%s'", path);
        else if (k == 0)
            rc = cairn_err_set(err, CAIRN_E_CORRUPT,
                               "'%s' ends before offset %llu + %zu (truncated)", path,
                               (unsigned long long)off, len);
        got += k > 0 ? (size_t)k : 0;
    }
    if (fd >= 0)
        close(fd);
    free(path);
    free(dir);
    return rc;
}

const struct cairn_storage_driver storage_file_driver = {
    .name = "file",
    .open = file_open,
    .list = file_list,
    .start = file_start,
    .remove = file_remove,
    .create = file_create,
    .read = file_read,
    .disconnect = NULL,
    .free = file_free,
    .list_files = file_list_files,
    .remove_file = file_remove_file,
    .features = CAIRN_STORAGE_FEATURE_ATOMIC_WRITE,
    .read_at = file_read_at,
    .sweep = file_sweep,
};
