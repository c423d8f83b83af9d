/* Error records: formatting helpers and the status -> exit code table. */
#include "cairn/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

const char *cairn_version(void)
{
    return CAIRN_VERSION_STRING;
}

/* Messages embed peer text (S3 error texts, names from archives, MANIFESTs and listings) and
 * end up in logs and on terminals: escape it here, once for every call site. */
static void msg_escape(struct cairn_err *err)
{
    char tmp[CAIRN_ERR_MSG_MAX];
    str_escape(tmp, sizeof(tmp), err->msg, strnlen(err->msg, sizeof(err->msg)));
    memcpy(err->msg, tmp, sizeof(tmp));
}

int cairn_err_set(struct cairn_err *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    msg_escape(err);
    err->code = code;
    err->sys_errno = 0;
    return code;
}

int cairn_err_sys(struct cairn_err *err, int code, int errnum, const char *fmt, ...)
{
    if (code == 0)
        code = cairn_status_from_errno(errnum);
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
    msg_escape(err);
    err->code = code;
    err->sys_errno = errnum;
    return code;
}

int cairn_err_wrap(struct cairn_err *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    char prefix[CAIRN_ERR_MSG_MAX];
    char old[CAIRN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    /* Two layers naming the same thing ("backup 'b' file 'f'") say it once: the inner
     * context is dropped when the new prefix starts with it. */
    const char *rest = old, *colon = strstr(old, ": ");
    size_t head = colon ? (size_t)(colon - old) : 0;
    if (head >= 8 && strncmp(prefix, old, head) == 0 &&
        (prefix[head] == '\0' || prefix[head] == ':'))
        rest = colon + 2;
    snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, rest);
    msg_escape(err);
    err->code = code;
    return code;
}

void cairn_err_clear(struct cairn_err *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->sys_errno = 0;
    err->msg[0] = '\0';
}

void cairn_err_copy(struct cairn_err *dst, const struct cairn_err *src)
{
    if (dst != NULL && src != NULL && dst != src)
        memcpy(dst, src, sizeof(*dst));
}

const char *cairn_status_name(int code)
{
    switch (code) {
    case CAIRN_OK: return "ok";
    case CAIRN_E_INVALID: return "invalid";
    case CAIRN_E_IO: return "io";
    case CAIRN_E_CORRUPT: return "corrupt";
    case CAIRN_E_SEAL: return "seal";
    case CAIRN_E_NOTFOUND: return "not-found";
    case CAIRN_E_EXISTS: return "exists";
    case CAIRN_E_NOSPACE: return "no-space";
    case CAIRN_E_NETWORK: return "network";
    case CAIRN_E_PROTOCOL: return "protocol";
    case CAIRN_E_TIMEOUT: return "timeout";
    case CAIRN_E_UNSUPPORTED: return "unsupported";
    case CAIRN_E_NOMEM: return "no-memory";
    case CAIRN_E_PERM: return "permission";
    case CAIRN_E_CANCELLED: return "cancelled";
    case CAIRN_E_INTERNAL: return "internal";
    case CAIRN_E_DENIED: return "denied";
    case CAIRN_E_LOCKED: return "locked";
    default: return "unknown";
    }
}

int cairn_status_from_errno(int errnum)
{
    switch (errnum) {
    case ENOENT: return CAIRN_E_NOTFOUND;
    case EEXIST:
    case ENOTEMPTY: return CAIRN_E_EXISTS;
    case ENOSPC:
    case EDQUOT: return CAIRN_E_NOSPACE;
    case EACCES:
    case EPERM:
    case EROFS: return CAIRN_E_PERM;
    case ENOMEM: return CAIRN_E_NOMEM;
    case EINVAL: return CAIRN_E_INVALID;
    case ETIMEDOUT: return CAIRN_E_TIMEOUT;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EHOSTUNREACH:
    case ENETUNREACH: return CAIRN_E_NETWORK;
    default: return CAIRN_E_IO;
    }
}

int cairn_exit_code(int code)
{
    switch (code) {
    case CAIRN_OK: return CAIRN_EXIT_OK;
    case CAIRN_E_INVALID:
    case CAIRN_E_UNSUPPORTED: return CAIRN_EXIT_USAGE; /* an unknown URL scheme, a newer format */
    case CAIRN_E_CORRUPT: return CAIRN_EXIT_CORRUPT;
    case CAIRN_E_SEAL: return CAIRN_EXIT_SEAL;
    case CAIRN_E_NOTFOUND: return CAIRN_EXIT_NOTFOUND;
    case CAIRN_E_EXISTS: return CAIRN_EXIT_EXISTS;
    case CAIRN_E_IO:
    case CAIRN_E_NOSPACE:
    case CAIRN_E_PERM: return CAIRN_EXIT_IO;
    case CAIRN_E_NETWORK:
    case CAIRN_E_PROTOCOL:
    case CAIRN_E_TIMEOUT: return CAIRN_EXIT_NETWORK;
    case CAIRN_E_DENIED: return CAIRN_EXIT_DENIED;
    case CAIRN_E_CANCELLED: return CAIRN_EXIT_CANCELLED;
    case CAIRN_E_LOCKED: return CAIRN_EXIT_LOCKED;
    default: return CAIRN_EXIT_FAILURE;
    }
}
