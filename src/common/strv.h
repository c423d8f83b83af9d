/* Internal: a growable list of owned strings, what the listing callbacks of storage drivers
 * collect names into (list first, then act: no deletes while a listing pages). Not
 * installed. */
#ifndef CAIRN_STRV_H
#define CAIRN_STRV_H

#include <stddef.h>

/* Zero-initialise; grows by doubling, aborts on OOM like xmalloc. */
struct strv {
    char **v;
    size_t n, cap;
};
void strv_add(struct strv *sv, const char *s); /* a copy of s */
void strv_sort(struct strv *sv);               /* by strcmp */
void strv_free(struct strv *sv);               /* the strings and the array; sv is left empty */

#endif
