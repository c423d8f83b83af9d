/* etcd: the restore side. A stored snapshot becomes the file `etcdctl snapshot restore`
 * reads, checked on the way; etcdctl itself (spawned, no shell) builds a new data directory. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "etcd.h"

extern char **environ;

int etcd_restore_file(struct cairn_reader *in, const char *path, uint64_t *bytes,
                      struct cairn_err *err)
{
    if (bytes != NULL)
        *bytes = 0;
    struct cairn_writer *w;
    int rc = cairn_atomic_file_writer_open(path, 0600, 0, &w, err);
    if (rc != CAIRN_OK)
        return cairn_err_wrap(err, rc, "etcd snapshot file");
    char *what = xasprintf("etcd snapshot file '%s'", path);
    struct etcd_sum sum;
    etcd_sum_init(&sum);
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    for (;;) {
        size_t got = 0;
        rc = cairn_reader_read(in, buf, CAIRN_IO_BUFSIZE, &got, err);
        if (rc != CAIRN_OK || got == 0)
            break;
        etcd_sum_update(&sum, buf, got);
        rc = cairn_writer_write(w, buf, got, err);
        if (rc != CAIRN_OK)
            break;
    }
    if (rc != CAIRN_OK)
        cairn_err_wrap(err, rc, "%s", what);
    else
        rc = etcd_sum_check(&sum, what, err);
    if (rc == CAIRN_OK)
        rc = cairn_writer_close(w, err);
    if (rc == CAIRN_OK && bytes != NULL)
        *bytes = sum.total;
    cairn_writer_free(w); /* not closed: the temporary is removed */
    etcd_sum_free(&sum);
    free(buf);
    free(what);
    return rc;
}

/* The environment etcdctl runs with: ours, with ETCDCTL_API=3 (3.3 defaults to v2, which has
 * no snapshot command). The strings are borrowed from environ. */
static char **child_env(void)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = xcalloc(n + 2, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ETCDCTL_API=", 12) != 0)
            env[k++] = environ[i];
    env[k] = "ETCDCTL_API=3";
    return env;
}

/* Runs argv with stdin from /dev/null and stdout+stderr into out (the first cap-1 bytes kept,
 * the rest drained); *status is waitpid's. */
static int run(char *const argv[], char *out, size_t cap, int *status, struct cairn_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return cairn_err_sys(err, CAIRN_E_IO, errno, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    char **env = child_env();
    pid_t pid;
    int e = strchr(argv[0], '/') ? posix_spawn(&pid, argv[0], &fa, NULL, argv, env)
                                 : posix_spawnp(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    if (e != 0) {
        close(fds[0]);
        if (e == ENOENT)
            return cairn_err_set(err, CAIRN_E_NOTFOUND,
                                 "'%s' not found%s: install etcdctl (Debian package "
                                 "etcd-client)",
                                 argv[0], strchr(argv[0], '/') ? "" : " in PATH");
        return cairn_err_sys(err, CAIRN_E_IO, e, "run '%s'", argv[0]);
    }
    size_t len = 0;
    for (;;) {
        char tmp[4096];
        ssize_t r = read(fds[0], tmp, sizeof(tmp));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t keep = len + 1 < cap ? cap - 1 - len : 0;
        keep = keep < (size_t)r ? keep : (size_t)r;
        memcpy(out + len, tmp, keep);
        len += keep;
    }
    out[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "wait for '%s'", argv[0]);
    return CAIRN_OK;
}

/* etcdctl's complaint, made one safe line: its "Error: ..." line when it has one. */
static void output_summary(const char *out, char *dst, size_t cap)
{
    const char *p = strstr(out, "Error:");
    if (p == NULL)
        p = out;
    size_t n = strcspn(p, "\n");
    str_escape(dst, cap, p, n);
}

int etcd_restore_into(const char *file, const char *data_dir, const struct etcd_restore_opts *o,
                      struct cairn_err *err)
{
    static const struct etcd_restore_opts none;
    if (o == NULL)
        o = &none;
    struct stat sb;
    if (stat(file, &sb) != 0)
        return cairn_err_sys(err, 0, errno, "etcd restore: snapshot file '%s'", file);
    if (lstat(data_dir, &sb) == 0)
        return cairn_err_set(err, CAIRN_E_EXISTS,
                             "etcd restore: data directory '%s' already exists (etcdctl "
                             "restores into a new one)",
                             data_dir);
    const char *argv[16];
    int n = 0;
    argv[n++] = o->etcdctl ? o->etcdctl : "etcdctl";
    argv[n++] = "snapshot";
    argv[n++] = "restore";
    argv[n++] = file;
    char *opt[5] = {xasprintf("--data-dir=%s", data_dir)};
    const char *val[4] = {o->name, o->initial_cluster, o->initial_cluster_token,
                          o->initial_advertise_peer_urls};
    static const char *const flag[4] = {"--name", "--initial-cluster", "--initial-cluster-token",
                                        "--initial-advertise-peer-urls"};
    for (int i = 0; i < 4; i++)
        if (val[i] != NULL)
            opt[i + 1] = xasprintf("%s=%s", flag[i], val[i]);
    for (int i = 0; i < 5; i++)
        if (opt[i] != NULL)
            argv[n++] = opt[i];
    argv[n] = NULL;
    char out[4096];
    int status = 0;
    int rc = run((char *const *)argv, out, sizeof(out), &status, err);
    if (rc == CAIRN_OK && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char why[600];
        output_summary(out, why, sizeof(why));
        int code = strstr(out, "sha256") || strstr(out, "hash") ? CAIRN_E_CORRUPT : CAIRN_E_IO;
        if (WIFSIGNALED(status))
            rc = cairn_err_set(err, CAIRN_E_IO, "etcd restore: '%s' killed by signal %d", argv[0],
                               WTERMSIG(status));
        else
            rc = cairn_err_set(err, code, "etcd restore of '%s' into '%s': %s exited with %d: %s",
                               file, data_dir, argv[0], WEXITSTATUS(status), why);
        rmtree(data_dir, NULL); /* it did not exist: leave nothing half-built */
    }
    for (int i = 0; i < 5; i++)
        free(opt[i]);
    return rc;
}
