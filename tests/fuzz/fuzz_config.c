/* libFuzzer target for the cairnd configuration parser: any input parses or fails with a
 * "file:line: ..." or "file: ..." message; a parsed config is internally consistent. */
#include <stdlib.h>
#include <string.h>

#include "cairn/state.h"
#include "sched/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cairn_config *c = NULL;
    struct cairn_err err;
    int rc = config_parse((const char *)data, size, "fuzz.conf", &c, &err);
    if (rc != CAIRN_OK) {
        if (rc != CAIRN_E_INVALID || c != NULL || strncmp(err.msg, "fuzz.conf", 9) != 0)
            abort();
        return 0;
    }
    if (c->n_schedules == 0 || c->state_url == NULL || c->state_keep == 0 || c->max_concurrent == 0)
        abort();
    for (size_t i = 0; i < c->n_schedules; i++) {
        const struct cairn_schedule_cfg *s = &c->schedules[i];
        if (!cairn_state_name_valid(s->name) || !s->source || !s->to || s->keep_last == 0)
            abort();
        /* Timing always yields a strictly later instant. */
        int64_t t = cron_timing_next(&s->timing, 1767225600);
        if (t <= 1767225600)
            abort();
    }
    config_free(c);
    return 0;
}
