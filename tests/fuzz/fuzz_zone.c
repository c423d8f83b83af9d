/* libFuzzer target for TZif zone files (sched/zone.c): any input loads or fails with
 * CAIRN_E_INVALID; a loaded zone gives bounded offsets, changes that move forward, and wall
 * clocks whose instants read them. */
#include <stdlib.h>

#include "sched/zone.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cron_zone *z = NULL;
    struct cairn_err err;
    int rc = cron_zone_parse(data, size, "fuzz", &z, &err);
    if (rc != CAIRN_OK) {
        if (rc != CAIRN_E_INVALID || z != NULL)
            abort();
        return 0;
    }
    int64_t t = -2208988800LL; /* 1900 */
    for (int i = 0; i < 64 && t < 4102444800LL; i++) {
        int32_t off = cron_zone_offset(z, t);
        if (off < -CRON_ZONE_MAX_OFFSET || off > CRON_ZONE_MAX_OFFSET)
            abort();
        int64_t out[4];
        size_t n = cron_zone_instants(z, t + off, out, NULL);
        for (size_t k = 0; k < n; k++)
            if (out[k] + cron_zone_offset(z, out[k]) != t + off || (k > 0 && out[k] <= out[k - 1]))
                abort();
        int64_t next = cron_zone_next_change(z, t);
        if (next <= t)
            abort();
        t = next == INT64_MAX ? t + 86400 * 97 : next;
    }
    cron_zone_free(z);
    return 0;
}
