/*
 * Advice to the kernel about guest RAM: madvise(MADV_HUGEPAGE) or madvise(MADV_NOHUGEPAGE) on
 * the memory behind a typed array (a view of a guest RAM segment, a SharedArrayBuffer that V8
 * allocated). QEMU advises its RAM blocks MADV_HUGEPAGE when it allocates them
 * (ram_block_add()); JavaScript has no way to, so qmigd asks here.
 *
 * Only the 2 MiB-aligned interior of the view is advised: the allocation does not start on a
 * huge page boundary (calloc puts its header before the data), and advising beyond the view
 * could change memory that is not ours. Advice changes how pages not yet touched will be
 * faulted in; it must come before the first touch to matter.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include <node_api.h>

#include "ram_advice.h"

#define HUGE_PAGE ((uintptr_t)2 << 20)

/*
 * hugepages(view, on): advises the view's aligned interior; returns the bytes advised (0 when
 * the view holds no whole huge page), or -errno when madvise() refused (EINVAL: a kernel
 * without transparent huge pages).
 */
static napi_value js_hugepages(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "hugepages(view, on) takes a typed array and a boolean");
    return NULL;
  }
  bool is_typed;
  bool on;
  void *data;
  size_t length;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, NULL, "hugepages(view, on) takes a Uint8Array (or Buffer) and a boolean");
    return NULL;
  }
  uintptr_t start = ((uintptr_t)data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uintptr_t end = ((uintptr_t)data + length) & ~(HUGE_PAGE - 1);
  int64_t result = 0;
  if (data != NULL && end > start) {
    if (madvise((void *)start, end - start, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) == 0) result = (int64_t)(end - start);
    else result = -errno;
  }
  napi_value out;
  if (napi_create_int64(env, result, &out) != napi_ok) return NULL;
  return out;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/*
 * populate(view, offset, length): faults in, writable, the pages wholly inside
 * view[offset, offset + length) in one call (madvise(MADV_POPULATE_WRITE)), as touching each
 * would but without a fault per page; their contents are left as they are. Returns the bytes
 * populated, or -errno (EINVAL: a kernel before 5.14).
 */
static napi_value js_populate(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  bool is_typed;
  void *data;
  size_t length;
  napi_typedarray_type type;
  int64_t offset;
  int64_t count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok || napi_get_value_int64(env, argv[2], &count) != napi_ok ||
      offset < 0 || count < 0 || (uint64_t)offset + (uint64_t)count > length) {
    napi_throw_type_error(env, NULL, "populate(view, offset, length) takes a Uint8Array (or Buffer) and a range inside it");
    return NULL;
  }
  uintptr_t page = 4096;
  uintptr_t start = ((uintptr_t)data + (uintptr_t)offset + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)data + (uintptr_t)offset + (uintptr_t)count) & ~(page - 1);
  int64_t result = 0;
  if (data != NULL && end > start) {
    if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) == 0) result = (int64_t)(end - start);
    else result = -errno;
  }
  napi_value out;
  if (napi_create_int64(env, result, &out) != napi_ok) return NULL;
  return out;
}

napi_status ram_advice_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"hugepages", NULL, js_hugepages, NULL, NULL, NULL, napi_default, NULL},
      {"populate", NULL, js_populate, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
