/* Prints the size and field offsets of every DLPack struct. Built once
 * against the official dlpack/dlpack.h and once against dlbridge.h; the two
 * outputs must be identical. */
#ifdef OFFICIAL
#include <dlpack/dlpack.h>
#else
#include "dlbridge.h"
#endif
#include <stddef.h>
#include <stdio.h>

#define SIZE(T) printf(#T " size %zu\n", sizeof(T))
#define FIELD(T, f) printf(#T "." #f " %zu\n", offsetof(T, f))

int main(void) {
  SIZE(DLPackVersion); FIELD(DLPackVersion, major); FIELD(DLPackVersion, minor);
  SIZE(DLDeviceType);
  SIZE(DLDevice); FIELD(DLDevice, device_type); FIELD(DLDevice, device_id);
  SIZE(DLDataType); FIELD(DLDataType, code); FIELD(DLDataType, bits); FIELD(DLDataType, lanes);
  SIZE(DLTensor); FIELD(DLTensor, data); FIELD(DLTensor, device); FIELD(DLTensor, ndim);
  FIELD(DLTensor, dtype); FIELD(DLTensor, shape); FIELD(DLTensor, strides); FIELD(DLTensor, byte_offset);
  SIZE(DLManagedTensor); FIELD(DLManagedTensor, dl_tensor); FIELD(DLManagedTensor, manager_ctx);
  FIELD(DLManagedTensor, deleter);
  SIZE(DLManagedTensorVersioned); FIELD(DLManagedTensorVersioned, version);
  FIELD(DLManagedTensorVersioned, manager_ctx); FIELD(DLManagedTensorVersioned, deleter);
  FIELD(DLManagedTensorVersioned, flags); FIELD(DLManagedTensorVersioned, dl_tensor);
  SIZE(DLPackExchangeAPIHeader); SIZE(DLPackExchangeAPI);
  FIELD(DLPackExchangeAPI, managed_tensor_allocator); FIELD(DLPackExchangeAPI, current_work_stream);
  printf("codes %d %d %d %d %d %d\n", kDLCPU, kDLTrn, kDLCUDAManaged, kDLBool, kDLFloat8_e8m0fnu, kDLFloat4_e2m1fn);
  printf("flags %lu %lu %lu\n", (unsigned long)DLPACK_FLAG_BITMASK_READ_ONLY,
         (unsigned long)DLPACK_FLAG_BITMASK_IS_COPIED, (unsigned long)DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED);
  return 0;
}
