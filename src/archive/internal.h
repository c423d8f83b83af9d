/* Internal pieces shared by the snapshot archive's source files. */
#ifndef CAIRN_ARCHIVE_INTERNAL_H
#define CAIRN_ARCHIVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cairn/err.h"

#define SNAP_META   "meta.json"
#define SNAP_STATE  "state.bin"
#define SNAP_SUMS   "SHA256SUMS"
#define SNAP_SEALED "SHA256SUMS.sealed"

/* Go's %q for a name in an error message, into out (always NUL-terminated). */
void archive_quote(const char *s, char *out, size_t cap);
/* The same for len bytes that may hold NULs (shown as \x00). */
void archive_quote_n(const char *s, size_t len, char *out, size_t cap);

/* Go's hashList.Encode: "<hex>  meta.json\n<hex>  state.bin\n" (we fix this order). *out is
 * malloc'd. */
void archive_sums_encode(const uint8_t meta[32], const uint8_t state[32], char **out, size_t *len);
/* Go's hashList.DecodeAndVerify over a SHA256SUMS text (spec section 8 step 3b), with its
 * error texts: the first unparsable line aborts, "list missing hash for", "hash check failed
 * for", "file missing for". */
int archive_sums_verify(const uint8_t *text, size_t len, const uint8_t meta[32],
                        const uint8_t state[32], struct cairn_err *err);

#endif
