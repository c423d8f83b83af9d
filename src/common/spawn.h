/* Child processes run through /bin/sh -c COMMAND as the leader of their own process group,
 * their output logged line by line, their status as a result: the one home of what cairnd's
 * hooks and drill probes (src/sched/hook.c) and the exec source (src/source/exec.c) share.
 * Not installed. */
#ifndef CAIRN_SPAWN_H
#define CAIRN_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "cairn/err.h"
#include "cairn/log.h"

#define SPAWN_LINE_MAX 1024

/* Start /bin/sh -c command in a new process group (kill(-*pid, ...) reaches all it started),
 * with no signal blocked and every one at its default (the caller's threads block some).
 * fds: descriptors to put on its stdin, stdout and stderr, -1 for /dev/null. envp NULL:
 * this process's environment. Returns 0 or an errno value. */
int spawn_sh(const char *command, const int fds[3], char *const *envp, pid_t *pid);

/* A child's output as log lines ("<prefix>: <line>", escaped: the text is untrusted); a line
 * longer than SPAWN_LINE_MAX is logged in pieces. Zero-initialise the buffer part. */
struct spawn_lines {
    enum cairn_log_level level;
    const char *component, *prefix;
    char line[SPAWN_LINE_MAX];
    size_t len;
};
/* Read what fd has and log its complete lines: 1 while open (or interrupted), 0 at its end
 * (the last partial line logged; the caller closes fd). */
int spawn_lines_read(int fd, struct spawn_lines *o);
/* Log a partial line left over. */
void spawn_lines_flush(struct spawn_lines *o);

/* A wait status as a result: an exit with 0 is CAIRN_OK, else CAIRN_E_IO "<what> exited
 * with status N" or "<what> killed by signal N". */
int spawn_status(int st, const char *what, struct cairn_err *err);

#endif
