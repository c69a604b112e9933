/* Per-call cost of DLPack exchange in C: dlbridge against tvm-ffi's C API
 * (built with -DWITH_TVM_FFI), same round trip, same machine, same run.
 *
 *   roundtrip: a C producer's DLManagedTensorVersioned is imported, exported
 *              again as DLManagedTensorVersioned, the export's deleter runs,
 *              the library's handle is released.
 *   wrap:      (dlbridge) wrap a C buffer, export versioned, import it back,
 *              free both.
 *
 * Usage: c_roundtrip MODE ITERATIONS  -> prints the median ns per iteration
 * over 7 runs (callgrind counts come from running it under valgrind).
 */
#ifdef WITH_TVM_FFI
#include <dlpack/dlpack.h>
#include <tvm/ffi/c_api.h>
#endif
#include "dlbridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float data[256];
static int64_t shape[1] = {256};
static int64_t strides[1] = {1};
static long producer_deletes;

static void producer_delete(DLManagedTensorVersioned *self) {
  (void)self;
  producer_deletes++;
}

static void producer_init(DLManagedTensorVersioned *mt) {
  memset(mt, 0, sizeof *mt);
  mt->version.major = DLPACK_MAJOR_VERSION;
  mt->version.minor = DLPACK_MINOR_VERSION;
  mt->deleter = producer_delete;
  mt->dl_tensor.data = data;
  mt->dl_tensor.device.device_type = kDLCPU;
  mt->dl_tensor.ndim = 1;
  mt->dl_tensor.dtype.code = kDLFloat;
  mt->dl_tensor.dtype.bits = 32;
  mt->dl_tensor.dtype.lanes = 1;
  mt->dl_tensor.shape = shape;
  mt->dl_tensor.strides = strides;
}

static int dlb_roundtrip(long n) {
  DLManagedTensorVersioned mt;
  long i;
  for (i = 0; i < n; i++) {
    dlb_tensor *h;
    DLManagedTensorVersioned *out;
    producer_init(&mt);
    if (dlb_tensor_from_dlpack_versioned(&mt, &h) != DLB_OK) return 1;
    if (dlb_tensor_to_dlpack_versioned(h, &out) != DLB_OK) return 1;
    out->deleter(out);
    dlb_tensor_free(h);
  }
  return 0;
}

static int dlb_wrap(long n) {
  DLDevice cpu = {kDLCPU, 0};
  DLDataType f32 = {kDLFloat, 32, 1};
  long i;
  for (i = 0; i < n; i++) {
    dlb_tensor *t, *back;
    DLManagedTensorVersioned *out;
    if (dlb_tensor_wrap(data, cpu, f32, 1, shape, NULL, 0, 0, NULL, NULL, &t) != DLB_OK) return 1;
    if (dlb_tensor_to_dlpack_versioned(t, &out) != DLB_OK) return 1;
    if (dlb_tensor_from_dlpack_versioned(out, &back) != DLB_OK) return 1;
    dlb_tensor_free(back);
    dlb_tensor_free(t);
  }
  return 0;
}

#ifdef WITH_TVM_FFI
static int tvm_roundtrip(long n) {
  DLManagedTensorVersioned mt;
  long i;
  for (i = 0; i < n; i++) {
    TVMFFIObjectHandle h;
    DLManagedTensorVersioned *out;
    producer_init(&mt);
    if (TVMFFITensorFromDLPackVersioned(&mt, 0, 0, &h) != 0) return 1;
    if (TVMFFITensorToDLPackVersioned(h, &out) != 0) return 1;
    out->deleter(out);
    TVMFFIObjectDecRef(h);
  }
  return 0;
}
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int (*run)(long) = NULL;
  long n = argc > 2 ? atol(argv[2]) : 1000000;
  double runs[7];
  int r;
  if (argc > 1 && strcmp(argv[1], "roundtrip") == 0) run = dlb_roundtrip;
  if (argc > 1 && strcmp(argv[1], "wrap") == 0) run = dlb_wrap;
#ifdef WITH_TVM_FFI
  if (argc > 1 && strcmp(argv[1], "tvm-roundtrip") == 0) run = tvm_roundtrip;
#endif
  if (!run) {
    fprintf(stderr, "usage: %s roundtrip|wrap|tvm-roundtrip [iterations]\n", argv[0]);
    return 2;
  }
  for (r = 0; r < 7; r++) {
    double t0 = now();
    if (run(n)) {
      fprintf(stderr, "call failed: %s\n", dlb_last_error_message());
      return 1;
    }
    runs[r] = (now() - t0) / (double)n * 1e9;
  }
  qsort(runs, 7, sizeof runs[0], cmp);
  if (dlb_live_tensor_count() != 0 || (run != dlb_wrap && producer_deletes != 7 * n)) {
    fprintf(stderr, "leak: %zu live tensors, %ld producer deletes\n", dlb_live_tensor_count(), producer_deletes);
    return 1;
  }
  printf("%.1f\n", runs[3]);
  return 0;
}
