/* Fuzz MANIFEST parsing (untrusted bytes read from storage), with and without a seal key. */
#include <stdint.h>
#include <string.h>

#include "storage/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cairn_storage st; /* only the key is used by the parser */
    static const uint8_t key[CAIRN_SEAL_KEY_LEN] = {1};
    for (int k = 0; k < 2; k++) {
        struct cairn_backup *b = backup_new_handle(&st, "b", 1);
        struct cairn_err err;
        manifest_parse(b, (const char *)data, size, k ? key : NULL, &err);
        cairn_backup_free(b);
    }
    return 0;
}
