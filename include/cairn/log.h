/* cairn: leveled logging to stderr (or any FILE), as plain text or JSON lines. */
#ifndef CAIRN_LOG_H
#define CAIRN_LOG_H

#include <stdio.h>

#include "cairn/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cairn_log_level {
    CAIRN_LOG_DEBUG = 0,
    CAIRN_LOG_INFO = 1,
    CAIRN_LOG_WARN = 2,
    CAIRN_LOG_ERROR = 3,
    CAIRN_LOG_OFF = 4,
};

/* Configure the process-wide logger. out NULL means stderr. Thread-safe to log after this. */
CAIRN_API void cairn_log_setup(enum cairn_log_level min, int json, FILE *out);
/* Parse "debug|info|warn|error|off"; returns -1 for anything else. */
CAIRN_API int cairn_log_level_parse(const char *s);
CAIRN_API int cairn_log_enabled(enum cairn_log_level level);
/* component: a short subsystem name ("storage", "service", ...). */
CAIRN_API void cairn_log(enum cairn_log_level level, const char *component, const char *fmt, ...)
    CAIRN_PRINTF(3, 4);

#define cairn_debug(c, ...) cairn_log(CAIRN_LOG_DEBUG, c, __VA_ARGS__)
#define cairn_info(c, ...)  cairn_log(CAIRN_LOG_INFO, c, __VA_ARGS__)
#define cairn_warn(c, ...)  cairn_log(CAIRN_LOG_WARN, c, __VA_ARGS__)
#define cairn_error(c, ...) cairn_log(CAIRN_LOG_ERROR, c, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
