/* cairn: status codes and the error record every fallible call fills in.
 *
 * Every fallible function returns an int: CAIRN_OK (0) or a negative CAIRN_E_* code, and
 * writes a human message into a caller-supplied struct cairn_err (which may be NULL when the
 * caller does not care). Messages are lower case, without a trailing period, and name the
 * object they concern ("open 'x.snap': No such file or directory").
 */
#ifndef CAIRN_ERR_H
#define CAIRN_ERR_H

#include "cairn/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cairn_status {
    CAIRN_OK = 0,
    CAIRN_E_INVALID = -1, /* bad argument, usage or configuration */
    CAIRN_E_IO = -2,      /* local I/O failure */
    CAIRN_E_CORRUPT = -3, /* input failed parsing or verification */
    CAIRN_E_SEAL = -4,    /* sealed sums missing, tampered or wrong key */
    CAIRN_E_NOTFOUND = -5,
    CAIRN_E_EXISTS = -6,
    CAIRN_E_NOSPACE = -7,  /* ENOSPC / EDQUOT */
    CAIRN_E_NETWORK = -8,  /* connection, DNS, reset */
    CAIRN_E_PROTOCOL = -9, /* peer spoke something unexpected */
    CAIRN_E_TIMEOUT = -10,
    CAIRN_E_UNSUPPORTED = -11,
    CAIRN_E_NOMEM = -12,
    CAIRN_E_PERM = -13, /* EACCES / EPERM / 403 */
    CAIRN_E_CANCELLED = -14,
    CAIRN_E_INTERNAL = -15,
    CAIRN_E_DENIED = -16, /* a peer refused our credentials or permissions (S3 401/403) */
    CAIRN_E_LOCKED = -17, /* another process holds a conflicting lock (storage or state) */
};

#define CAIRN_ERR_MSG_MAX 1024

struct cairn_err {
    int code;      /* enum cairn_status */
    int sys_errno; /* errno when the failure came from the OS, else 0 */
    char msg[CAIRN_ERR_MSG_MAX];
};

/* Record an error; returns code so callers can `return cairn_err_set(...)`. err may be NULL. */
CAIRN_API int cairn_err_set(struct cairn_err *err, int code, const char *fmt, ...)
    CAIRN_PRINTF(3, 4);
/* As cairn_err_set, appending ": strerror(errnum)". code 0 derives the code from errnum. */
CAIRN_API int cairn_err_sys(struct cairn_err *err, int code, int errnum, const char *fmt, ...)
    CAIRN_PRINTF(4, 5);
/* Prefix the existing message with context ("ctx: old message") and return code, the status
 * the caller already holds, so `return cairn_err_wrap(err, rc, "reading '%s'", p)` keeps the
 * real code whether or not err is NULL. err->code becomes code. */
CAIRN_API int cairn_err_wrap(struct cairn_err *err, int code, const char *fmt, ...)
    CAIRN_PRINTF(3, 4);
CAIRN_API void cairn_err_clear(struct cairn_err *err);
CAIRN_API void cairn_err_copy(struct cairn_err *dst, const struct cairn_err *src);

CAIRN_API const char *cairn_status_name(int code);
CAIRN_API int cairn_status_from_errno(int errnum);

/* Process exit codes used by the cairn and cairnd commands (documented in README and --help). */
enum cairn_exit {
    CAIRN_EXIT_OK = 0,
    CAIRN_EXIT_FAILURE = 1,  /* anything not listed below */
    CAIRN_EXIT_USAGE = 2,    /* bad command line or configuration; unsupported scheme or format */
    CAIRN_EXIT_CORRUPT = 3,  /* verification failed: corrupt, tampered or truncated input */
    CAIRN_EXIT_SEAL = 4,     /* sealed sums could not be opened (wrong or missing key) */
    CAIRN_EXIT_NOTFOUND = 5, /* backup, file or object does not exist */
    CAIRN_EXIT_EXISTS = 6,   /* target already exists */
    CAIRN_EXIT_IO = 7,       /* local I/O error, disk full, permission */
    CAIRN_EXIT_NETWORK = 8,  /* network, protocol or timeout error talking to a peer */
    CAIRN_EXIT_DENIED = 9,   /* permission denied by a peer (S3 AccessDenied, 401/403) */
    CAIRN_EXIT_LOCKED = 10,  /* storage location or state locked by another live process */
    /* stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report an interrupted command) */
    CAIRN_EXIT_CANCELLED = 130,
};
CAIRN_API int cairn_exit_code(int code);

#ifdef __cplusplus
}
#endif

#endif
