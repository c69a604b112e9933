/* The header included twice, compiled as C99 and as C++17 (-x c++), with
 * the DLPack layout pinned by compile-time checks. */
#include "dlbridge.h"
#include "dlbridge.h"

#include <stddef.h>

#define PIN(name, cond) typedef char name[(cond) ? 1 : -1]
PIN(dltensor_size, sizeof(DLTensor) == 48);
PIN(dltensor_shape, offsetof(DLTensor, shape) == 24);
PIN(dltensor_byte_offset, offsetof(DLTensor, byte_offset) == 40);
PIN(device_size, sizeof(DLDevice) == 8);
PIN(dtype_size, sizeof(DLDataType) == 4);
PIN(managed_size, sizeof(DLManagedTensor) == 64);
PIN(versioned_size, sizeof(DLManagedTensorVersioned) == 80);
PIN(versioned_flags, offsetof(DLManagedTensorVersioned, flags) == 24);
PIN(versioned_tensor, offsetof(DLManagedTensorVersioned, dl_tensor) == 32);
PIN(exchange_size, sizeof(DLPackExchangeAPI) == 56);
PIN(version_macro, DLPACK_MAJOR_VERSION == 1 && DLPACK_MINOR_VERSION == 3);

int main(void) {
  dlb_tensor *t = NULL;
  int64_t shape[1] = {2};
  DLDevice device = {kDLCPU, 0};
  DLDataType type = {kDLFloat, 32, 1};
  int ok = dlb_tensor_new(device, type, 1, shape, &t) == DLB_OK;
  dlb_tensor_free(t);
  return ok && dlb_live_tensor_count() == 0 ? 0 : 1;
}
