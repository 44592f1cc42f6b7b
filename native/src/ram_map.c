/*
 * Guest RAM that is a file, as QEMU's memory-backend-file with share=on: mmap(MAP_SHARED) of a
 * slice of the file, handed to JavaScript as an ArrayBuffer over the mapping (unmapped when the
 * ArrayBuffer is collected). Every write to guest RAM is then a write to the file's pages, and
 * each thread that maps the same descriptor sees the same pages, which is how multifd's channel
 * threads reach a file-backed guest (an ArrayBuffer over foreign memory cannot be shared with
 * another thread; the kernel's page cache can). Node has no mmap().
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include <node_api.h>

#include "ram_map.h"

static void unmap(napi_env env, void *data, void *hint) {
  munmap(data, (size_t)(uintptr_t)hint);
}

/*
 * mapShared(fd, offset, length): an ArrayBuffer over bytes [offset, offset + length) of the file
 * open as fd (read-write), or -errno when mmap() refuses. offset must be a multiple of the page
 * size; the descriptor may be closed afterwards.
 */
static napi_value js_map_shared(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t offset;
  int64_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || offset < 0 || length <= 0) {
    napi_throw_type_error(env, NULL, "mapShared(fd, offset, length) takes a descriptor, an offset and a positive length");
    return NULL;
  }
  napi_value out;
  void *data = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (data == MAP_FAILED) {
    if (napi_create_int32(env, -errno, &out) != napi_ok) return NULL;
    return out;
  }
  if (napi_create_external_arraybuffer(env, data, (size_t)length, unmap, (void *)(uintptr_t)length, &out) != napi_ok) {
    munmap(data, (size_t)length);
    return NULL;
  }
  return out;
}

napi_status ram_map_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"mapShared", NULL, js_map_shared, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
