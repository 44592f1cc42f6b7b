#ifndef QMIGD_FD_DUP_H
#define QMIGD_FD_DUP_H
#include <node_api.h>
/* Adds dupFd (fd_dup.c) to the addon's exports. */
napi_status fd_dup_init(napi_env env, napi_value exports);
#endif
