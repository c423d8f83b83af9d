/* Hooks and drill probes: /bin/sh -c COMMAND in its own process group, output logged, a
 * timeout that kills the group (hook.h). */
#define _GNU_SOURCE /* pipe2 */
#include "hook.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/log.h"
#include "common/spawn.h"
#include "common/util.h"

extern char **environ;

void hook_env_set(struct hook_env *e, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *val = NULL;
    if (vasprintf(&val, fmt, ap) < 0)
        abort();
    va_end(ap);
    e->vars = xrealloc(e->vars, (e->n + 1) * sizeof(*e->vars));
    e->vars[e->n++] = xasprintf("%s=%s", name, val);
    free(val);
}

void hook_env_free(struct hook_env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->vars[i]);
    free(e->vars);
    e->vars = NULL;
    e->n = 0;
}

/* environ without the names env sets, then env's: a NULL-terminated array whose strings are
 * borrowed. */
static char **child_env(const struct hook_env *env)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **out = xcalloc(n + (env ? env->n : 0) + 1, sizeof(*out));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ours = 0;
        for (size_t j = 0; env && j < env->n && !ours; j++) {
            size_t len = (size_t)(strchr(env->vars[j], '=') - env->vars[j]) + 1;
            ours = strncmp(environ[i], env->vars[j], len) == 0;
        }
        if (!ours)
            out[k++] = environ[i];
    }
    for (size_t j = 0; env && j < env->n; j++)
        out[k++] = env->vars[j];
    return out;
}

static int spawn(const char *command, const struct hook_env *env, int outfd, pid_t *pid)
{
    char **envp = child_env(env);
    int e = spawn_sh(command, (const int[3]){-1, outfd, outfd}, envp, pid);
    free(envp);
    return e;
}

/* Logs the output until the shell exits, the deadline passes or a cancel; then kills the
 * group (what the shell left behind too) and drains the pipe. Longer than 50 lines because
 * the three ways out share the cleanup. */
int hook_run(const char *command, const struct hook_env *env, int64_t timeout_s,
             const volatile int *cancel, const char *what, int *status, struct cairn_err *err)
{
    if (status != NULL)
        *status = -1;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return cairn_err_sys(err, CAIRN_E_IO, errno, "%s: pipe", what);
    pid_t pid = -1;
    int e = spawn(command, env, p[1], &pid);
    close(p[1]);
    if (e != 0) {
        close(p[0]);
        return cairn_err_sys(err, CAIRN_E_IO, e, "%s: cannot run /bin/sh", what);
    }
    cairn_debug("hook", "%s: started (pid %d)", what, (int)pid);
    struct spawn_lines o = {.level = CAIRN_LOG_INFO, .component = "hook", .prefix = what};
    uint64_t deadline = mono_ns() + (uint64_t)timeout_s * 1000000000ull;
    int open = 1, st = 0, exited = 0, rc = CAIRN_OK;
    while (!exited) {
        if (cancel_requested(cancel)) {
            rc = cairn_err_set(err, CAIRN_E_CANCELLED, "%s cancelled by shutdown", what);
            break;
        }
        uint64_t now = mono_ns();
        if (now >= deadline) {
            rc = cairn_err_set(err, CAIRN_E_TIMEOUT, "%s timed out after %llds (killed)", what,
                               (long long)timeout_s);
            break;
        }
        /* Wake at least every 200 ms to look at the shell and the cancel flag. */
        uint64_t ms = (deadline - now) / 1000000 + 1;
        struct pollfd pfd = {p[0], POLLIN, 0};
        if (open && poll(&pfd, 1, ms < 200 ? (int)ms : 200) > 0)
            open = spawn_lines_read(p[0], &o);
        else if (!open)
            poll(NULL, 0, ms < 50 ? (int)ms : 50);
        /* WNOWAIT: the shell stays a zombie, so its group id cannot be reused before the
         * kill below. */
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            exited = 1;
    }
    kill(-pid, SIGKILL); /* the group: a timed-out shell's children, or what it left running */
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    /* Every writer of the group is gone; one that left the group (setsid) is not waited for
     * beyond 2 s. */
    uint64_t end = mono_ns() + 2000000000ull;
    while (open && mono_ns() < end) {
        struct pollfd pfd = {p[0], POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0)
            open = spawn_lines_read(p[0], &o);
    }
    spawn_lines_flush(&o);
    close(p[0]);
    if (rc == CAIRN_OK && status != NULL && WIFEXITED(st))
        *status = WEXITSTATUS(st);
    if (rc == CAIRN_OK)
        rc = spawn_status(st, what, err);
    return rc;
}
