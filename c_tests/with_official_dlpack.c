/* dlbridge.h and the official dlpack/dlpack.h in one translation unit, in
 * the order DLPACK_FIRST says; code written against dlpack.h's names works
 * with dlbridge's functions. Built as C99 and as C++17, both orders. */
#ifdef DLPACK_FIRST
#include <dlpack/dlpack.h>
#include "dlbridge.h"
#else
#include "dlbridge.h"
#include <dlpack/dlpack.h>
#endif

#include <stdio.h>

static int deletes;
static void deleter(DLManagedTensorVersioned *self) {
  (void)self;
  deletes++;
}

int main(void) {
  static float data[3] = {1, 2, 3};
  static int64_t shape[1] = {3};
  static int64_t strides[1] = {1};
  DLManagedTensorVersioned mt;
  DLManagedTensorVersioned *out = NULL;
  dlb_tensor *t = NULL;
  int ok;

  mt.version.major = DLPACK_MAJOR_VERSION;
  mt.version.minor = DLPACK_MINOR_VERSION;
  mt.manager_ctx = NULL;
  mt.deleter = deleter;
  mt.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  mt.dl_tensor.data = data;
  mt.dl_tensor.device.device_type = kDLCPU;
  mt.dl_tensor.device.device_id = 0;
  mt.dl_tensor.ndim = 1;
  mt.dl_tensor.dtype.code = kDLFloat;
  mt.dl_tensor.dtype.bits = 32;
  mt.dl_tensor.dtype.lanes = 1;
  mt.dl_tensor.shape = shape;
  mt.dl_tensor.strides = strides;
  mt.dl_tensor.byte_offset = 0;

  ok = dlb_tensor_from_dlpack_versioned(&mt, &t) == DLB_OK;
  ok = ok && dlb_tensor_to_dlpack_versioned(t, &out) == DLB_OK;
  ok = ok && out->dl_tensor.data == (void *)data && (out->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  dlb_tensor_free(t);
  if (out) out->deleter(out);
  ok = ok && deletes == 1 && dlb_live_tensor_count() == 0;
#ifdef __cplusplus
  const char *lang = "C++17";
#else
  const char *lang = "C99";
#endif
#ifdef DLPACK_FIRST
  const char *order = "dlpack.h first";
#else
  const char *order = "dlbridge.h first";
#endif
  printf("%s (%s, %s): %s\n", __FILE__, lang, order, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
