/* cairn: shared definitions for the public headers. */
#ifndef CAIRN_COMMON_H
#define CAIRN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CAIRN_API          __attribute__((visibility("default")))
#define CAIRN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CAIRN_API
#define CAIRN_PRINTF(f, a)
#endif

#define CAIRN_VERSION_MAJOR  0
#define CAIRN_VERSION_MINOR  1
#define CAIRN_VERSION_PATCH  0
#define CAIRN_VERSION_STRING "0.1.0"

CAIRN_API const char *cairn_version(void);

#ifdef __cplusplus
}
#endif

#endif
