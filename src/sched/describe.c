/* cairnd run --dry-run: the loaded state and the boot plan, as text or one JSON object. */
#include <jansson.h>
#include <stdio.h>

#include "cairn/repo.h"
#include "cairn/storage.h"
#include "internal.h"
#include "runner.h"

/* Whether the schedule's storage takes a new backup (a repository, or a legacy location with
 * backups; its key file, if any, unlocks it): "ok" or the error its runs would fail with.
 * Cheap: the config object and one listing. */
static void storage_check(const struct cairn_schedule_cfg *c, char *msg, size_t cap)
{
    struct cairn_err err;
    struct cairn_storage *st = NULL;
    int rc = runner_storage_open(c, &st, &err);
    if (rc == CAIRN_OK)
        rc = cairn_storage_check_new_backup(st, &err);
    cairn_storage_free(st);
    snprintf(msg, cap, "%s", rc == CAIRN_OK ? "ok" : err.msg);
}

void sched_describe(const struct cairn_sched *s, FILE *out, int json)
{
    /* The CLI's JSON envelope (docs/JSON.md). */
    json_t *root = json ? json_pack("{s:i, s:b}", "format_version", 1, "ok", 1) : NULL;
    json_t *arr = json ? json_array() : NULL;
    char now[40];
    sched_fmt_time(s->boot_now, now, sizeof(now));
    if (!json)
        fprintf(out, "now %s, state store %s\n", now, cairn_state_store_kind(s->store));
    for (size_t i = 0; i < s->n; i++) {
        const struct worker *w = &s->w[i];
        char last[40], next[40];
        sched_fmt_time(w->boot_last, last, sizeof(last));
        int64_t after = w->boot_plan.n         ? w->boot_plan.runs[w->boot_plan.n - 1]
                        : w->boot_plan.skipped ? w->boot_plan.skipped_until
                                               : w->boot_last;
        sched_fmt_time(cron_timing_next(&w->cfg->timing, after), next, sizeof(next));
        json_t *runs = json ? json_array() : NULL;
        char storage[1024];
        storage_check(w->cfg, storage, sizeof(storage));
        if (!json)
            fprintf(out,
                    "schedule %s (%s): last %s%s, catch-up %zu, skip %llu, next %s\n"
                    "  storage: %s\n",
                    w->cfg->name, w->cfg->timing_text, last, w->had_entry ? "" : " (new)",
                    w->boot_plan.n, (unsigned long long)w->boot_plan.skipped, next, storage);
        for (size_t k = 0; k < w->boot_plan.n; k++) {
            char at[40], name[CAIRN_RUN_NAME_MAX];
            sched_fmt_time(w->boot_plan.runs[k], at, sizeof(at));
            plan_run_name(w->cfg->name, w->boot_plan.runs[k], name, sizeof(name));
            if (json)
                json_array_append_new(runs, json_pack("{s:s, s:s}", "at", at, "name", name));
            else
                fprintf(out, "  catch-up %s -> %s\n", at, name);
        }
        if (json)
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:s, s:b, s:o, s:I, s:s, s:s}", "schedule", w->cfg->name,
                               "timing", w->cfg->timing_text, "last", last, "new", !w->had_entry,
                               "catchup", runs, "skipped", (json_int_t)w->boot_plan.skipped, "next",
                               next, "storage", storage));
    }
    if (json) {
        json_object_set_new(root, "now", json_string(now));
        json_object_set_new(root, "store", json_string(cairn_state_store_kind(s->store)));
        json_object_set_new(root, "schedules", arr);
        json_dumpf(root, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fputc('\n', out);
        json_decref(root);
    }
}
