/* libFuzzer target for the state snapshot decoder (every released payload version). Anything
 * that decodes must re-encode to the same bytes (the encoding is canonical) and a decoder
 * error must be CORRUPT or UNSUPPORTED with a message, never a crash. */
#include <stdlib.h>
#include <string.h>

#include "cairn/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cairn_state *st = NULL;
    struct cairn_err err;
    unsigned ver = 0;
    int rc = cairn_state_decode(data, size, &st, &ver, &err);
    if (rc != CAIRN_OK) {
        if ((rc != CAIRN_E_CORRUPT && rc != CAIRN_E_UNSUPPORTED) || err.msg[0] == '\0' || st)
            abort();
        return 0;
    }
    if (ver < 1 || ver > CAIRN_STATE_PAYLOAD_VERSION)
        abort();
    uint8_t *buf = NULL;
    size_t len = 0;
    if (cairn_state_encode(st, &buf, &len, &err) != CAIRN_OK)
        abort();
    /* Only the newest version round-trips byte for byte; older ones are upgraded. */
    if (ver == CAIRN_STATE_PAYLOAD_VERSION && (len != size || memcmp(buf, data, size) != 0))
        abort();
    for (size_t i = 0; i < cairn_state_count(st); i++) {
        int64_t t;
        const char *name = cairn_state_entry(st, i, &t);
        int64_t again;
        if (!cairn_state_name_valid(name) || !cairn_state_get(st, name, &again) || again != t)
            abort();
    }
    free(buf);
    cairn_state_free(st);
    return 0;
}
