#ifndef QMIGD_RAM_ADVICE_H
#define QMIGD_RAM_ADVICE_H
#include <node_api.h>
/* Adds the RAM advice functions (ram_advice.c) to the addon's exports. */
napi_status ram_advice_init(napi_env env, napi_value exports);
#endif
