/* Internal: commands cairnd runs around backups and drills (hooks, drill probes), and the
 * webhook it posts after a run.
 *
 * A command runs as /bin/sh -c COMMAND in its own process group, stdin from /dev/null, its
 * stdout and stderr logged line by line (escaped) under "hook", with cairnd's environment plus
 * the CAIRN_* variables given. When the shell exits, whatever it left running in its group is
 * killed; at the timeout or a cancel the whole group is killed. */
#ifndef CAIRN_SCHED_HOOK_H
#define CAIRN_SCHED_HOOK_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"

/* NAME=VALUE pairs handed to a command (in addition to the environment; ours replace any of
 * the same name). */
struct hook_env {
    char **vars;
    size_t n;
};

void hook_env_set(struct hook_env *e, const char *name, const char *fmt, ...) CAIRN_PRINTF(3, 4);
void hook_env_free(struct hook_env *e);

/* Run command (what names it in logs and errors: "before hook of schedule x"). CAIRN_OK when
 * it exited 0; CAIRN_E_TIMEOUT after timeout_s (its group killed); CAIRN_E_CANCELLED when
 * *cancel became nonzero; CAIRN_E_IO for a non-zero exit or a signal, naming the status.
 * status (may be NULL): the exit status, -1 when it did not exit by itself. */
int hook_run(const char *command, const struct hook_env *env, int64_t timeout_s,
             const volatile int *cancel, const char *what, int *status, struct cairn_err *err);

/* One run's outcome, as the webhook's JSON and the hooks' environment name it. */
struct hook_report {
    const char *event;    /* "backup" or "drill" */
    const char *schedule; /* schedule name */
    const char *backup;   /* backup name (may be "") */
    const char *status;   /* "success" or "failure" */
    uint64_t bytes;
    const char *error;         /* NULL on success */
    int64_t started, finished; /* Unix seconds (wall clock) */
};

/* POST r as one JSON object to url (libcurl, the sources' shared setup), retried with backoff
 * on a network error, 429 or 5xx: at most 5 attempts within about a minute, stopped early by
 * *cancel. Logs the outcome naming the URL's scheme and host only (a URL may carry a token).
 * CAIRN_OK on a 2xx answer. */
int hook_webhook(const char *url, const struct hook_report *r, const volatile int *cancel,
                 struct cairn_err *err);

#endif
