/* Internal helpers shared by every module: allocation, file system, time. Not installed. */
#ifndef CAIRN_UTIL_H
#define CAIRN_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cairn/err.h"

/* Allocation that aborts on OOM (Redis zmalloc style): callers never check for NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) CAIRN_PRINTF(1, 2);
/* Large scratch buffers whose memory is only the pages used: an anonymous mapping of n bytes
 * (aborts on failure), pages from keep to n given back to the system with xmap_trim (they
 * read as zeros afterwards), unmapped with xunmap (NULL is fine). malloc would serve such
 * buffers from an arena once a large block was freed (glibc raises its mmap threshold then),
 * where freed pages stay resident and fragment. */
void *xmap(size_t n);
void xmap_trim(void *p, size_t keep, size_t n);
void xunmap(void *p, size_t n);

/* Write/read all bytes, retrying EINTR and short transfers. */
int write_all(int fd, const void *buf, size_t len, const char *what, struct cairn_err *err);
/* Reads up to cap bytes; *got < cap only at EOF. */
int read_all(int fd, void *buf, size_t cap, size_t *got, const char *what, struct cairn_err *err);
/* Read a whole small file (at most max bytes, else CAIRN_E_INVALID). NUL-terminated. */
int read_file_max(const char *path, size_t max, uint8_t **data, size_t *len, struct cairn_err *err);
/* 1 when the cancel flag (may be NULL) is set; read atomically (signal handlers and other
 * threads set it). The one test of every module's cancel flag. */
static inline int cancel_requested(const volatile int *flag)
{
    return flag != NULL && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0;
}

/* An unnamed temporary file, gone once closed whatever happens: O_TMPFILE in dir (NULL or
 * "": $TMPDIR, else /tmp), or where the file system has none, mkostemp then unlink. */
int tmpfile_open(const char *dir, int *fd, struct cairn_err *err);
/* Read a secret (key or password file) of at most max bytes into *data (malloc'd,
 * NUL-terminated; wipe it, then free it). One open, then fstat and read on that descriptor, so
 * nothing can swap the file between check and read. CAIRN_E_INVALID, with the chmod that fixes it,
 * for a file group or others may read (as ssh refuses keys), or one that is not a regular
 * file. what names it in errors ("key file"). */
int read_secret_file(const char *path, const char *what, size_t max, uint8_t **data, size_t *len,
                     struct cairn_err *err);

/* Early writeback for files that are fsync'd when complete: after every 8 MiB written, ask the
 * kernel to start writing that range (sync_file_range, asynchronous), so the disk works while
 * we compress and the final fsync has little left to wait for. Best effort: errors are left
 * to that fsync. Zero-initialise the struct per file. */
struct writeback {
    uint64_t written, started;
};
void writeback(int fd, struct writeback *wb, size_t just_written);

/* mkdir -p with mode for created components. */
int mkdir_p(const char *path, mode_t mode, struct cairn_err *err);
/* What kind of file a mode is, for messages: "directory", "symlink", "FIFO", "socket",
 * "character device", "block device", "regular file" ("special file" for anything else). */
const char *file_type_name(mode_t mode);
/* Sizes in bytes, the one grammar of every size option and key: decimal digits (no sign, no
 * space), then optionally a binary unit K, M, G or T (either case: 2^10, 2^20, 2^30, 2^40)
 * followed by an optional "i", then an optional "B". So "4096", "4096B", "64M", "64m",
 * "64MB", "64MiB", "64Mi", "1GiB", "1T". Returns 0, or -1 for anything else or overflow. */
int parse_size(const char *s, uint64_t *out);
/* Durations: "90", "90s", "15m", "1h30m", "2d", "1w", "1y" (365 days). Returns 0 or -1. */
int parse_duration(const char *s, int64_t *sec);
/* fsync the directory containing path (or path itself when it is a directory). */
int fsync_dir(const char *dir, struct cairn_err *err);
/* rm -rf; a missing path is not an error. */
int rmtree(const char *path, struct cairn_err *err);
/* Directory part of path into out ("." when none). */
void path_dirname(const char *path, char *out, size_t cap);
/* Path join with exactly one '/' between parts; returns malloc'd string. */
char *path_join(const char *a, const char *b);
/* A name safe as one path component: non-empty, no '/', not "." or "..", no NUL/control. */
int name_is_safe(const char *name);
/* This host's name (gethostname), "unknown" when it has none, truncated to cap. With
 * name_safe every byte but [A-Za-z0-9-] becomes '-', so it can go into a file name. */
void host_name(char *out, size_t cap, int name_safe);
/* Overwrite len bytes (not optimised away: OPENSSL_cleanse); for secrets before free. */
void wipe(void *p, size_t len);
/* Wipe a NUL-terminated secret and free it; NULL is fine. */
void wipe_free(char *s);

/* UTF-8, strict (RFC 3629): the sequence at p (n >= 1 bytes available) is 1..4 bytes long and
 * its code point goes to *cp; 0 when it is not valid UTF-8 (overlong, surrogate, beyond
 * U+10FFFF, truncated, a stray continuation byte). Go's utf8.DecodeRune is this with 0 read as
 * "U+FFFD, length 1". */
size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *cp);
/* Writes cp (at most U+10FFFF, not a surrogate) as 1..4 bytes into out; returns the length. */
size_t utf8_encode(uint32_t cp, char *out);

/* Peer text made safe for a log line or a terminal: C0 controls, DEL, C1 (raw bytes
 * 0x80-0x9f and encoded U+0080-U+009F), bidi and line-separator code points and invalid UTF-8
 * become visible escapes (\n \r \t \xNN \uNNNN); other valid UTF-8 passes through. The
 * output is valid UTF-8 without controls, so escaping again changes nothing. Writes at most
 * cap bytes to dst (cap > 0) including the NUL, never cutting an escape; returns dst. */
char *str_escape(char *dst, size_t cap, const char *src, size_t len);
/* str_escape of a whole string into a malloc'd one (NULL stays NULL). */
char *str_escape_dup(const char *src);

/* Appends s to a list such as "a; b; c" in buf (cap bytes, *off its length so far, 0 to
 * start), with sep before every item but the first. What does not fit is cut: *off stays
 * below cap and buf NUL-terminated, so a list of failures fills a CAIRN_ERR_MSG_MAX message
 * and stops there. */
void str_join(char *buf, size_t cap, size_t *off, const char *sep, const char *s);

/* Clocks. */
uint64_t now_ms(void);  /* CLOCK_REALTIME in ms */
uint64_t mono_ns(void); /* CLOCK_MONOTONIC in ns */
/* RFC 3339 UTC "2006-01-02T15:04:05Z" (with .nnnnnnnnn when nsec != 0). */
void format_rfc3339(int64_t sec, long nsec, char *out, size_t cap);
/* Parse RFC 3339 (Z or +hh:mm offsets, optional fraction). Returns 0 or -1. */
int parse_rfc3339(const char *s, int64_t *sec, long *nsec);

/* Human sizes "1.5 MiB". */
void format_bytes(uint64_t n, char *out, size_t cap);

/* A name as JSON: key when s is UTF-8, else key_b64, its base64 (util.c). */
struct json_t;
void json_set_name(struct json_t *o, const char *key, const char *s);

#endif
