/* /bin/sh -c COMMAND in its own process group, its output as log lines (spawn.h). */
#include "common/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

extern char **environ;

int spawn_sh(const char *command, const int fds[3], char *const *envp, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&at, 0); /* its own group: a timeout kills all it started */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none); /* cairnd's threads block SIGTERM etc. */
    posix_spawnattr_setsigdefault(&at, &all);
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0)
            posix_spawn_file_actions_adddup2(&fa, fds[i], i);
        else
            posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    }
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    int e = posix_spawn(pid, "/bin/sh", &fa, &at, argv, envp != NULL ? envp : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return e;
}

void spawn_lines_flush(struct spawn_lines *o)
{
    if (o->len == 0)
        return;
    char esc[SPAWN_LINE_MAX * 4 + 1];
    str_escape(esc, sizeof(esc), o->line, o->len);
    cairn_log(o->level, o->component, "%s: %s", o->prefix, esc);
    o->len = 0;
}

int spawn_lines_read(int fd, struct spawn_lines *o)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        spawn_lines_flush(o);
        return 0;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || o->len == sizeof(o->line)) {
            spawn_lines_flush(o);
            if (buf[i] == '\n')
                continue;
        }
        o->line[o->len++] = buf[i];
    }
    return 1;
}

int spawn_status(int st, const char *what, struct cairn_err *err)
{
    if (WIFSIGNALED(st))
        return cairn_err_set(err, CAIRN_E_IO, "%s killed by signal %d", what, WTERMSIG(st));
    if (WEXITSTATUS(st) != 0)
        return cairn_err_set(err, CAIRN_E_IO, "%s exited with status %d", what, WEXITSTATUS(st));
    return CAIRN_OK;
}
