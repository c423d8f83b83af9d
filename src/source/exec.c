/* The exec source: "exec:COMMAND" runs COMMAND with /bin/sh -c (so pipes and environment
 * assignments work as in cron) and stores its stdout as the backup's one file, "snapshot".
 * A non-zero exit, a signal, a timeout or a cancel fails the backup; stderr goes to the log
 * line by line. A restore verifies the whole backup first, then feeds the stream to the stdin
 * of the restore command (the options' restore_command, else the URL's COMMAND), or writes it
 * into DIR/snapshot atomically. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/io.h"
#include "cairn/log.h"
#include "cairn/source.h"
#include "common/spawn.h"
#include "common/util.h"
#include "source/internal.h"

#define EXEC_FILE "snapshot"

struct exec_src {
    char *command;
    char *restore_command;
    struct cairn_source_opts o;
};

static int exec_open(const char *url, const struct cairn_source_opts *o, void **state,
                     struct cairn_err *err)
{
    const char *cmd = url + strlen("exec:");
    while (*cmd == ' ')
        cmd++;
    if (*cmd == '\0')
        return cairn_err_set(err, CAIRN_E_INVALID,
                             "exec source needs a command (for example exec:pg_dump -Fc db)");
    struct exec_src *e = xcalloc(1, sizeof(*e));
    e->command = xstrdup(cmd);
    e->restore_command = o->restore_command ? xstrdup(o->restore_command) : NULL;
    e->o = *o;
    *state = e;
    return CAIRN_OK;
}

static void exec_free(void *state)
{
    struct exec_src *e = state;
    free(e->command);
    free(e->restore_command);
    free(e);
}

/* A running child: its pid (leader of its own process group) and our ends of its pipes. */
struct child {
    pid_t pid;
    int in, out, errfd;        /* -1 when not connected */
    struct spawn_lines errlog; /* stderr, as warnings */
};

/* Start sh -c command. want_in: connect stdin to a pipe (else /dev/null); stdout goes to a
 * pipe (else /dev/null unless want_out). */
static int child_start(const char *command, int want_in, int want_out, struct child *c,
                       struct cairn_err *err)
{
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    c->pid = -1;
    c->in = c->out = c->errfd = -1;
    c->errlog =
        (struct spawn_lines){.level = CAIRN_LOG_WARN, .component = "source", .prefix = "exec"};
    if ((want_in && pipe2(pin, O_CLOEXEC) != 0) || (want_out && pipe2(pout, O_CLOEXEC) != 0) ||
        pipe2(perr, O_CLOEXEC) != 0) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            if (pin[i] >= 0)
                close(pin[i]);
            if (pout[i] >= 0)
                close(pout[i]);
        }
        return cairn_err_sys(err, CAIRN_E_IO, e, "exec source: pipe");
    }
    int rc =
        spawn_sh(command, (const int[3]){want_in ? pin[0] : -1, want_out ? pout[1] : -1, perr[1]},
                 NULL, &c->pid);
    if (want_in)
        close(pin[0]);
    if (want_out)
        close(pout[1]);
    close(perr[1]);
    c->in = want_in ? pin[1] : -1;
    c->out = want_out ? pout[0] : -1;
    c->errfd = perr[0];
    if (rc != 0) {
        c->pid = -1;
        return cairn_err_sys(err, CAIRN_E_IO, rc, "exec source: cannot run /bin/sh");
    }
    return CAIRN_OK;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Log what stderr has; returns 0 at its EOF (and closes it). */
static int read_stderr(struct child *c)
{
    if (spawn_lines_read(c->errfd, &c->errlog))
        return 1;
    close_fd(&c->errfd);
    return 0;
}

/* Stop the child's group (timeout, cancel or our own failure) and reap it. */
static void child_kill(struct child *c)
{
    if (c->pid > 0) {
        kill(-c->pid, SIGKILL);
        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        c->pid = -1;
    }
    close_fd(&c->in);
    close_fd(&c->out);
    close_fd(&c->errfd);
}

/* Reap the child after its pipes closed; a non-zero exit or a signal is a failure. */
static int child_wait(struct child *c, const char *what, struct cairn_err *err)
{
    int st = 0;
    while (waitpid(c->pid, &st, 0) < 0) {
        if (errno != EINTR) {
            c->pid = -1;
            return cairn_err_sys(err, CAIRN_E_IO, errno, "exec source: wait for %s", what);
        }
    }
    c->pid = -1;
    char *w = xasprintf("exec source: %s", what);
    int rc = spawn_status(st, w, err);
    free(w);
    return rc;
}

/* Between polls: cancel (the source handle also cancels at its whole-run timeout). */
static int check_stop(const struct exec_src *e, const char *what, struct cairn_err *err)
{
    if (cancel_requested(e->o.cancel))
        return cairn_err_set(err, CAIRN_E_CANCELLED, "exec source: %s cancelled", what);
    return CAIRN_OK;
}

/* Copy the child's stdout into w until both its stdout and stderr end. The poll wakes every
 * 200 ms only to look at cancel. */
static int pump_out(const struct exec_src *e, struct child *c, struct cairn_writer *w,
                    struct cairn_err *err)
{
    uint64_t total = 0;
    uint8_t *buf = xmalloc(CAIRN_IO_BUFSIZE);
    int rc = CAIRN_OK;
    while (rc == CAIRN_OK && (c->out >= 0 || c->errfd >= 0)) {
        struct pollfd p[2] = {{c->out, POLLIN, 0}, {c->errfd, POLLIN, 0}};
        if (poll(p, 2, 200) < 0 && errno != EINTR) {
            rc = cairn_err_sys(err, CAIRN_E_IO, errno, "exec source: poll");
            break;
        }
        if ((rc = check_stop(e, "command", err)) != CAIRN_OK)
            break;
        if (c->errfd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            read_stderr(c);
        if (c->out < 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = read(c->out, buf, CAIRN_IO_BUFSIZE);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            rc = cairn_err_sys(err, CAIRN_E_IO, errno, "exec source: read the command's output");
        else if (n == 0)
            close_fd(&c->out);
        else if (n > 0 && (rc = cairn_writer_write(w, buf, (size_t)n, err)) == CAIRN_OK) {
            total += (uint64_t)n;
            if (e->o.progress != NULL)
                e->o.progress(e->o.progress_arg, total);
        }
    }
    free(buf);
    return rc;
}

static int exec_fill(void *arg, struct cairn_writer *w, struct cairn_err *err)
{
    const struct exec_src *e = arg;
    struct child c;
    int rc = child_start(e->command, 0, 1, &c, err);
    if (rc == CAIRN_OK)
        rc = pump_out(e, &c, w, err);
    if (rc != CAIRN_OK)
        child_kill(&c);
    else
        rc = child_wait(&c, "command", err);
    return rc;
}

static int exec_backup(void *state, struct cairn_backup *b, struct cairn_err *err)
{
    return source_put_one(b, "exec", EXEC_FILE, exec_fill, state, err);
}

/* A writer into the restore command's stdin; the command's stderr is logged as it comes. */
struct stdin_writer {
    struct cairn_writer base;
    struct child *c;
    const struct exec_src *e;
};

static int stdin_write(struct cairn_writer *w, const void *buf, size_t len, struct cairn_err *err)
{
    struct stdin_writer *s = (struct stdin_writer *)w;
    const uint8_t *p = buf;
    while (len > 0) {
        struct pollfd pf[2] = {{s->c->in, POLLOUT, 0}, {s->c->errfd, POLLIN, 0}};
        if (poll(pf, 2, 200) < 0 && errno != EINTR)
            return cairn_err_sys(err, CAIRN_E_IO, errno, "exec source: poll");
        int rc = check_stop(s->e, "restore command", err);
        if (rc != CAIRN_OK)
            return rc;
        if (s->c->errfd >= 0 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            read_stderr(s->c);
        if (!(pf[0].revents & (POLLOUT | POLLERR | POLLHUP)))
            continue;
        ssize_t n = write(s->c->in, p, len);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return cairn_err_sys(err, CAIRN_E_IO, errno,
                                 "exec source: the restore command stopped reading");
        if (n > 0)
            p += n, len -= (size_t)n;
    }
    return CAIRN_OK;
}

static const struct cairn_writer_ops stdin_writer_ops = {"exec-stdin", stdin_write, NULL, NULL};

static int restore_to_command(struct exec_src *e, struct cairn_backup *b, struct cairn_err *err)
{
    struct child c;
    /* Restoring to "exec:CMD" runs CMD, unless the options name another restore command. */
    int rc = child_start(e->restore_command ? e->restore_command : e->command, 1, 0, &c, err);
    if (rc != CAIRN_OK)
        return rc;
    fcntl(c.in, F_SETFL, O_NONBLOCK);
    struct stdin_writer *s = xcalloc(1, sizeof(*s));
    cairn_writer_init(&s->base, &stdin_writer_ops, NULL);
    s->c = &c;
    s->e = e;
    rc = cairn_backup_get_stream(b, EXEC_FILE, &s->base, NULL, err);
    cairn_writer_free(&s->base);
    if (rc != CAIRN_OK) {
        child_kill(&c);
        return rc;
    }
    close_fd(&c.in); /* EOF for the command; then collect the rest of its stderr */
    while (c.errfd >= 0)
        read_stderr(&c);
    return child_wait(&c, "restore command", err);
}

static int exec_restore(void *state, struct cairn_backup *b, const char *into,
                        struct cairn_err *err)
{
    struct exec_src *e = state;
    if (into != NULL)
        return source_restore_into(b, EXEC_FILE, into, err);
    /* The command acts on what it reads: let it see only a backup already checked whole. */
    int rc = cairn_backup_verify(b, 1, NULL, NULL, err);
    return rc == CAIRN_OK ? restore_to_command(e, b, err) : rc;
}

const struct cairn_source_driver source_exec_driver = {
    .scheme = "exec",
    .description = "exec:COMMAND runs COMMAND (sh -c) and stores its stdout",
    .open = exec_open,
    .backup = exec_backup,
    .restore = exec_restore,
    .free = exec_free,
};
