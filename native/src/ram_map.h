#ifndef QMIGD_RAM_MAP_H
#define QMIGD_RAM_MAP_H
#include <node_api.h>
/* Adds mapShared (ram_map.c) to the addon's exports. */
napi_status ram_map_init(napi_env env, napi_value exports);
#endif
