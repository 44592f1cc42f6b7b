/*
 * A second descriptor for an open socket: fcntl(F_DUPFD_CLOEXEC). The migration's page thread
 * writes the main channel through its own descriptor, on its own event loop, while the main
 * thread keeps the first one for the return path (QEMU's migration thread and its main loop
 * share one socket the same way). Node has no dup(): a descriptor handed to a net.Socket is
 * closed by that socket, so two threads could not each hold one without it.
 */
#include <errno.h>
#include <fcntl.h>

#include <node_api.h>

#include "fd_dup.h"

/* dupFd(fd): the new descriptor (close-on-exec), or -errno. */
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "dupFd(fd) takes a descriptor number");
    return NULL;
  }
  int result = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (result < 0) result = -errno;
  napi_value out;
  if (napi_create_int32(env, result, &out) != napi_ok) return NULL;
  return out;
}

napi_status fd_dup_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"dupFd", NULL, js_dup_fd, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
