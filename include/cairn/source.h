/* cairn: snapshot sources, selected by URL (the twin of the storage driver registry).
 *
 * A source driver takes an application-consistent snapshot of one service and streams it into
 * a started backup handle (storage.h), and restores a backup to the service or into a
 * directory. The engine (engine.h) opens the storage, names and starts the backup, calls the
 * driver, and ends the backup only when the driver succeeded (the MANIFEST lands last), so a
 * failed snapshot never looks complete.
 *
 * Credentials: a URL's user-info password (user:password@) is read by the driver at open and
 * replaced by "***" in the URL cairn_source_url returns, which is the only form that reaches
 * logs, errors, metrics and MANIFESTs. Drivers never put a secret in an error message.
 *
 * Threads: a source handle is used by one thread at a time; the registry is thread-safe.
 * Signals: sources that write to pipes or sockets expect SIGPIPE to be ignored, as the cairn
 * programs do (and as libcurl asks of its callers).
 */
#ifndef CAIRN_SOURCE_H
#define CAIRN_SOURCE_H

#include <stdint.h>

#include "cairn/common.h"
#include "cairn/err.h"
#include "cairn/storage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Options common to all sources; zero-initialise and set what you need. Strings are
 * borrowed for the handle's life. */
struct cairn_source_opts {
    const volatile int *cancel;  /* nonzero: stop soon with CAIRN_E_CANCELLED */
    int64_t timeout_ms;          /* the whole snapshot or restore; 0: none */
    int64_t idle_timeout_ms;     /* no byte moving for this long fails; 0: the driver's
                                  * default (60 s; exec: none, a command may think quietly) */
    const char *ca_file;         /* TLS: CA bundle for the server's certificate */
    const char *cert_file;       /* TLS: client certificate (etcds://) */
    const char *key_file;        /* TLS: client key */
    const char *password_file;   /* a secret kept in a file (first line) instead of the URL */
    const char *restore_command; /* exec: the command a restore feeds the stream to */
    /* Called with the bytes taken from the source so far (monotonic). May be NULL. */
    void (*progress)(void *arg, uint64_t bytes);
    void *progress_arg;
};

struct cairn_source_driver {
    const char *scheme;      /* the URL scheme, "etcd" for etcd://... */
    const char *description; /* one line for --help */
    /* Parse url and remember what backup/restore need; do not connect yet. */
    int (*open)(const char *url, const struct cairn_source_opts *o, void **state,
                struct cairn_err *err);
    /* Take a snapshot into b (started, writable; borrowed): add its files and set its kind,
     * meta and scope. Return CAIRN_OK only when every byte was checked (the service's own
     * checksum where it has one). The engine ends or aborts b. */
    int (*backup)(void *state, struct cairn_backup *b, struct cairn_err *err);
    /* Restore b (read-only, verified by the reader as it streams; borrowed). into == NULL:
     * restore to the service itself; else write the files the service loads into that new
     * directory. NULL when the driver cannot restore. */
    int (*restore)(void *state, struct cairn_backup *b, const char *into, struct cairn_err *err);
    void (*free)(void *state);
};

/* Register a driver for "<scheme>:..." URLs. Built-ins: see cairn_source_drivers. CAIRN_E_EXISTS
 * when the scheme is taken. The struct must outlive its use. */
CAIRN_API int cairn_source_register(const struct cairn_source_driver *drv, struct cairn_err *err);
CAIRN_API const struct cairn_source_driver *cairn_source_driver_find(const char *scheme);
/* The driver of url's scheme (RFC 3986: a letter, then letters, digits, '+', '-', '.',
 * before ':'), or NULL when url has no scheme or no driver serves it. */
CAIRN_API const struct cairn_source_driver *cairn_source_driver_for(const char *url);
/* Call fn for every registered driver (built-ins first), for --help listings. */
CAIRN_API void cairn_source_drivers(void (*fn)(void *arg, const struct cairn_source_driver *d),
                                    void *arg);

struct cairn_source;

/* Open url with the driver its scheme names. CAIRN_E_INVALID for a URL without a scheme,
 * CAIRN_E_UNSUPPORTED for an unknown scheme. o may be NULL (defaults). */
CAIRN_API int cairn_source_open(const char *url, const struct cairn_source_opts *o,
                                struct cairn_source **out, struct cairn_err *err);
/* The URL without credentials: what logs, errors and MANIFESTs show. */
CAIRN_API const char *cairn_source_url(const struct cairn_source *s);
CAIRN_API const char *cairn_source_scheme(const struct cairn_source *s);
CAIRN_API int cairn_source_backup(struct cairn_source *s, struct cairn_backup *b,
                                  struct cairn_err *err);
CAIRN_API int cairn_source_restore(struct cairn_source *s, struct cairn_backup *b, const char *into,
                                   struct cairn_err *err);
CAIRN_API void cairn_source_free(struct cairn_source *s);

/* Copy url into out (cap bytes) with any user-info's password replaced by "***" and
 * "password=" / "token=" query values likewise. Returns CAIRN_E_INVALID when it does not fit. */
CAIRN_API int cairn_source_redact(const char *url, char *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
