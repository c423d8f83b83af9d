/* Private to the source module: the built-in drivers the registry lists. */
#ifndef CAIRN_SOURCE_INTERNAL_H
#define CAIRN_SOURCE_INTERNAL_H

#include "cairn/source.h"

extern const struct cairn_source_driver source_exec_driver;

#endif
