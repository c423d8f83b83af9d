/* Internal: the growable byte buffer every module builds text and wire data in. Not
 * installed. */
#ifndef CAIRN_BUF_H
#define CAIRN_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"

/* Zero-initialise; grows by doubling, aborts on OOM like xmalloc. After any append p is
 * non-NULL and NUL-terminated (the NUL is not counted in len), so text can be used as is.
 * The memory is the caller's: free(p) or buf_free. */
struct buf {
    uint8_t *p;
    size_t len, cap;
};
void buf_add(struct buf *b, const void *data, size_t len);
void buf_addc(struct buf *b, uint8_t c);
void buf_adds(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) CAIRN_PRINTF(2, 3);
void buf_free(struct buf *b);

/* Append s (NULL: "") as a JSON string the way Go's encoding/json writes one (HTMLEscape on):
 * '"' and '\\' as \" \\, \n \r \t short, other controls and < > & as \u00XX, U+2028 and
 * U+2029 as \u2028 \u2029, each byte of invalid UTF-8 as \ufffd, all else as is.
 * BUF_JSON_SHORT_BF: \b and \f short too, as Go 1.22 and later write them; meta.json needs
 * it (docs/FORMAT.md: byte-compatible with current Consul and Vault). Without it they are
 * \u0008 \u000c, as older Go writes them: InfluxDB 1.6 (Go 1.10) for the protocol's JSON. */
#define BUF_JSON_SHORT_BF 1u
void buf_json_string(struct buf *b, const char *s, unsigned flags);

#endif
