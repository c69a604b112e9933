/* The bad-input catalogue: every malformed input we try, the status each
 * gets, and for each: *out untouched, a foreign deleter run exactly once
 * (imports), nothing leaked. Prints the Markdown table that
 * docs/bad-inputs.md must contain (`make -C c_tests catalogue` checks it,
 * `make -C c_tests catalogue-update` rewrites it). */
#include "dlbridge.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SENTINEL ((void *)(uintptr_t)0x5a5a)

typedef struct {
  DLManagedTensorVersioned managed;
  int64_t shape[2];
  int64_t strides[2];
  float data[6];
} producer;

static int deletes;
static void producer_delete(DLManagedTensorVersioned *self) {
  deletes++;
  free(self);
}

static DLManagedTensorVersioned *good(void) {
  producer *p = (producer *)calloc(1, sizeof *p);
  p->shape[0] = 2;
  p->shape[1] = 3;
  p->strides[0] = 3;
  p->strides[1] = 1;
  p->managed.version.major = DLPACK_MAJOR_VERSION;
  p->managed.version.minor = DLPACK_MINOR_VERSION;
  p->managed.deleter = producer_delete;
  p->managed.dl_tensor.data = p->data;
  p->managed.dl_tensor.device.device_type = kDLCPU;
  p->managed.dl_tensor.ndim = 2;
  p->managed.dl_tensor.dtype.code = kDLFloat;
  p->managed.dl_tensor.dtype.bits = 32;
  p->managed.dl_tensor.dtype.lanes = 1;
  p->managed.dl_tensor.shape = p->shape;
  p->managed.dl_tensor.strides = p->strides;
  return &p->managed;
}

static int64_t *shape_of(DLManagedTensorVersioned *m) { return ((producer *)m)->shape; }
static int64_t *strides_of(DLManagedTensorVersioned *m) { return ((producer *)m)->strides; }

typedef struct {
  DLManagedTensor managed;
  int64_t shape[1];
  float data[4];
} legacy_producer;
static void legacy_delete(DLManagedTensor *self) {
  deletes++;
  free(self);
}

/* ---- cases ---------------------------------------------------------------- */

static int failures, rows;
static size_t live_baseline; /* handles a section holds on purpose */
static dlb_tensor *out;

static void row(const char *api, const char *input, dlb_status got, dlb_status want, int want_deletes) {
  const char *message = got == DLB_OK ? "" : dlb_last_error_message();
  int ok = got == want && out == SENTINEL && deletes == want_deletes && dlb_live_tensor_count() == live_baseline;
  rows++;
  if (!ok) {
    failures++;
    fprintf(stderr, "FAILED: %s / %s: got %s (wanted %s), out %s, %d deletes (wanted %d), %zu live\n", api, input,
            dlb_status_name(got), dlb_status_name(want), out == SENTINEL ? "untouched" : "WRITTEN", deletes,
            want_deletes, dlb_live_tensor_count());
  }
  printf("| %d | `%s` | %s | `%s` | %s |\n", rows, api, input, dlb_status_name(got), message);
  deletes = 0;
  out = (dlb_tensor *)SENTINEL;
}

/* A versioned import of `m` after `edit` was applied. */
#define IMPORT(input, want, edit)                                                  \
  do {                                                                             \
    DLManagedTensorVersioned *m = good();                                          \
    edit;                                                                          \
    row("dlb_tensor_from_dlpack_versioned", input, dlb_tensor_from_dlpack_versioned(m, &out), want, 1); \
  } while (0)

static void array_interface(const char *input, dlb_status want, const char *typestr, const int64_t *strides,
                            int version, DLDataType dtype) {
  static float buf[6];
  static const int64_t shape[2] = {2, 3};
  dlb_array_interface ai;
  memset(&ai, 0, sizeof ai);
  ai.version = version;
  memcpy(ai.typestr, typestr, strlen(typestr) < 8 ? strlen(typestr) + 1 : 8);
  ai.ndim = 2;
  ai.shape = shape;
  ai.strides = strides;
  ai.data = buf;
  ai.dtype = dtype;
  row("dlb_tensor_from_array_interface", input, dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), want, 0);
}

int main(void) {
  const DLDevice cpu = {kDLCPU, 0};
  const DLDataType f32 = {kDLFloat, 32, 1}, none = {0, 0, 0}, i32 = {kDLInt, 32, 1};
  const DLDataType fp4 = {kDLFloat4_e2m1fn, 4, 1}, fp8 = {kDLFloat8_e4m3fn, 8, 1};
  static float buf[8];
  int64_t shape[2] = {2, 3};
  out = (dlb_tensor *)SENTINEL;

  printf("| # | entry point | malformed input | status | message |\n|---:|---|---|---|---|\n");

  /* Foreign DLManagedTensorVersioned: ownership passes, the deleter runs once. */
  row("dlb_tensor_from_dlpack_versioned", "NULL tensor", dlb_tensor_from_dlpack_versioned(NULL, &out),
      DLB_ERR_NULL_ARGUMENT, 0);
  {
    DLManagedTensorVersioned *m = good();
    dlb_status s = dlb_tensor_from_dlpack_versioned(m, NULL);
    row("dlb_tensor_from_dlpack_versioned", "NULL out (deleter still runs)", s, DLB_ERR_NULL_ARGUMENT, 1);
  }
  IMPORT("major version 0", DLB_ERR_VERSION_MISMATCH, m->version.major = 0);
  IMPORT("major version 2, other fields poisoned", DLB_ERR_VERSION_MISMATCH,
         (m->version.major = 2, m->dl_tensor.ndim = -5, m->dl_tensor.shape = (int64_t *)(uintptr_t)8));
  IMPORT("ndim -1", DLB_ERR_INVALID_NDIM, m->dl_tensor.ndim = -1);
  IMPORT("ndim 65", DLB_ERR_INVALID_NDIM, m->dl_tensor.ndim = 65);
  IMPORT("ndim INT32_MAX", DLB_ERR_INVALID_NDIM, m->dl_tensor.ndim = INT32_MAX);
  IMPORT("NULL shape, ndim 2", DLB_ERR_INVALID_SHAPE, m->dl_tensor.shape = NULL);
  IMPORT("shape[0] = -1", DLB_ERR_INVALID_SHAPE, shape_of(m)[0] = -1);
  IMPORT("shape[1] = INT64_MIN", DLB_ERR_INVALID_SHAPE, shape_of(m)[1] = INT64_MIN);
  IMPORT("element count overflows (2^40 x 2^40)", DLB_ERR_OVERFLOW,
         (shape_of(m)[0] = (int64_t)1 << 40, shape_of(m)[1] = (int64_t)1 << 40));
  IMPORT("stride x dimension overflows", DLB_ERR_OVERFLOW, strides_of(m)[0] = INT64_MAX / 2);
  IMPORT("stride x item size overflows (size-1 dim)", DLB_ERR_OVERFLOW,
         (shape_of(m)[0] = 1, strides_of(m)[0] = INT64_MAX));
  IMPORT("byte_offset UINT64_MAX", DLB_ERR_OVERFLOW,
         (m->dl_tensor.data = (void *)(uintptr_t)0x1000, m->dl_tensor.byte_offset = UINT64_MAX));
  IMPORT("negative stride reaches below address 0", DLB_ERR_OVERFLOW,
         (m->dl_tensor.data = (void *)(uintptr_t)16, strides_of(m)[1] = -1000));
  IMPORT("extent past the end of the address space", DLB_ERR_OVERFLOW,
         m->dl_tensor.data = (void *)(UINTPTR_MAX - 8));
  IMPORT("dtype code 3 (opaque handle)", DLB_ERR_UNSUPPORTED_DTYPE, m->dl_tensor.dtype.code = kDLOpaqueHandle);
  IMPORT("dtype code 99", DLB_ERR_UNSUPPORTED_DTYPE, m->dl_tensor.dtype.code = 99);
  IMPORT("float with 8 bits", DLB_ERR_UNSUPPORTED_DTYPE, m->dl_tensor.dtype.bits = 8);
  IMPORT("float with 0 bits", DLB_ERR_UNSUPPORTED_DTYPE, m->dl_tensor.dtype.bits = 0);
  IMPORT("bool with 1 bit", DLB_ERR_UNSUPPORTED_DTYPE, (m->dl_tensor.dtype.code = kDLBool, m->dl_tensor.dtype.bits = 1));
  IMPORT("lanes 0", DLB_ERR_UNSUPPORTED_DTYPE, m->dl_tensor.dtype.lanes = 0);
  IMPORT("FP6 e2m3fn with bits 8", DLB_ERR_UNSUPPORTED_DTYPE,
         (m->dl_tensor.dtype.code = kDLFloat6_e2m3fn, m->dl_tensor.dtype.bits = 8));
  IMPORT("FP6 e3m2fn with bits 4", DLB_ERR_UNSUPPORTED_DTYPE,
         (m->dl_tensor.dtype.code = kDLFloat6_e3m2fn, m->dl_tensor.dtype.bits = 4));
  IMPORT("FP4 e2m1fn with bits 8", DLB_ERR_UNSUPPORTED_DTYPE,
         (m->dl_tensor.dtype.code = kDLFloat4_e2m1fn, m->dl_tensor.dtype.bits = 8));
  IMPORT("FP8 e5m2 with bits 16", DLB_ERR_UNSUPPORTED_DTYPE,
         (m->dl_tensor.dtype.code = kDLFloat8_e5m2, m->dl_tensor.dtype.bits = 16));
  IMPORT("12-bit vector of FP4 (lanes 3)", DLB_ERR_UNSUPPORTED_DTYPE,
         (m->dl_tensor.dtype.code = kDLFloat4_e2m1fn, m->dl_tensor.dtype.bits = 4, m->dl_tensor.dtype.lanes = 3));
  IMPORT("device type 0", DLB_ERR_UNSUPPORTED_DEVICE, m->dl_tensor.device.device_type = (DLDeviceType)0);
  IMPORT("device type 5 (unassigned)", DLB_ERR_UNSUPPORTED_DEVICE, m->dl_tensor.device.device_type = (DLDeviceType)5);
  IMPORT("device type 99", DLB_ERR_UNSUPPORTED_DEVICE, m->dl_tensor.device.device_type = (DLDeviceType)99);
  IMPORT("device id -1", DLB_ERR_UNSUPPORTED_DEVICE, m->dl_tensor.device.device_id = -1);
  IMPORT("NULL data with 6 elements", DLB_ERR_NULL_DATA, m->dl_tensor.data = NULL);
  IMPORT("unknown flag bit 1<<5", DLB_ERR_UNSUPPORTED_FLAGS, m->flags = 1u << 5);
  IMPORT("strided packed FP4", DLB_ERR_INVALID_STRIDES,
         (m->dl_tensor.dtype.code = kDLFloat4_e2m1fn, m->dl_tensor.dtype.bits = 4, strides_of(m)[0] = 1,
          strides_of(m)[1] = 2));
  {
    DLManagedTensorVersioned *m = good();
    m->deleter = NULL; /* a producer with nothing to release */
    m->dl_tensor.ndim = -3;
    row("dlb_tensor_from_dlpack_versioned", "NULL deleter and ndim -3", dlb_tensor_from_dlpack_versioned(m, &out),
        DLB_ERR_INVALID_NDIM, 0);
    free(m);
  }

  /* Legacy DLManagedTensor. */
  row("dlb_tensor_from_dlpack", "NULL tensor", dlb_tensor_from_dlpack(NULL, &out), DLB_ERR_NULL_ARGUMENT, 0);
  {
    legacy_producer *p = (legacy_producer *)calloc(1, sizeof *p);
    p->shape[0] = 4;
    p->managed.deleter = legacy_delete;
    p->managed.dl_tensor.data = p->data;
    p->managed.dl_tensor.device = cpu;
    p->managed.dl_tensor.ndim = 1;
    p->managed.dl_tensor.dtype = f32;
    p->managed.dl_tensor.shape = p->shape;
    p->shape[0] = -4;
    row("dlb_tensor_from_dlpack", "shape[0] = -4", dlb_tensor_from_dlpack(&p->managed, &out), DLB_ERR_INVALID_SHAPE, 1);
  }

  /* Wrapping caller memory: on failure the release callback is not called. */
  row("dlb_tensor_wrap", "NULL data with 6 elements",
      dlb_tensor_wrap(NULL, cpu, f32, 2, shape, NULL, 0, 0, NULL, NULL, &out), DLB_ERR_NULL_DATA, 0);
  row("dlb_tensor_wrap", "unknown flag bit 1<<9",
      dlb_tensor_wrap(buf, cpu, f32, 2, shape, NULL, 0, 1u << 9, NULL, NULL, &out), DLB_ERR_UNSUPPORTED_FLAGS, 0);
  row("dlb_tensor_wrap", "NULL out", dlb_tensor_wrap(buf, cpu, f32, 2, shape, NULL, 0, 0, NULL, NULL, NULL),
      DLB_ERR_NULL_ARGUMENT, 0);
  row("dlb_tensor_new", "kDLOpenCL (no allocator)",
      dlb_tensor_new((DLDevice){kDLOpenCL, 0}, f32, 2, shape, &out), DLB_ERR_UNSUPPORTED_DEVICE, 0);
  row("dlb_tensor_new", "kDLCPU with device id 5",
      dlb_tensor_new((DLDevice){kDLCPU, 5}, f32, 2, shape, &out), DLB_ERR_UNSUPPORTED_DEVICE, 0);
  row("dlb_tensor_new", "kDLCUDA with device id -1",
      dlb_tensor_new((DLDevice){kDLCUDA, -1}, f32, 2, shape, &out), DLB_ERR_UNSUPPORTED_DEVICE, 0);
  row("dlb_cuda_stream_wait", "device -1 (same stream twice)", dlb_cuda_stream_wait(-1, 1, 1),
      DLB_ERR_UNSUPPORTED_DEVICE, 0);
  row("dlb_tensor_record_stream", "NULL tensor", dlb_tensor_record_stream(NULL, 7), DLB_ERR_NULL_ARGUMENT, 0);
  row("dlb_tensor_wrap", "internal flag bit 1<<63",
      dlb_tensor_wrap(buf, cpu, f32, 2, shape, NULL, 0, (uint64_t)1 << 63, NULL, NULL, &out),
      DLB_ERR_UNSUPPORTED_FLAGS, 0);

  /* Exports. */
  {
    dlb_tensor *ro = NULL, *packed = NULL;
    DLManagedTensor *legacy = (DLManagedTensor *)SENTINEL;
    dlb_array_interface ai;
    dlb_tensor_wrap(buf, cpu, f32, 2, shape, NULL, 0, DLPACK_FLAG_BITMASK_READ_ONLY, NULL, NULL, &ro);
    dlb_tensor_wrap(buf, cpu, fp4, 2, shape, NULL, 0, 0, NULL, NULL, &packed);
    live_baseline = 2;
    row("dlb_tensor_to_dlpack", "read-only tensor (legacy cannot say so)", dlb_tensor_to_dlpack(ro, &legacy),
        DLB_ERR_READ_ONLY, 0);
    if (legacy != (DLManagedTensor *)SENTINEL) failures++;
    row("dlb_tensor_to_dlpack_versioned", "NULL tensor", dlb_tensor_to_dlpack_versioned(NULL, NULL),
        DLB_ERR_NULL_ARGUMENT, 0);
    row("dlb_tensor_array_interface", "packed FP4 (no typestr)", dlb_tensor_array_interface(packed, &ai),
        DLB_ERR_UNSUPPORTED_DTYPE, 0);
    row("dlb_tensor_astype", "to float8_e4m3fn", dlb_tensor_astype(ro, fp8, &out), DLB_ERR_UNSUPPORTED_DTYPE, 0);
    row("dlb_tensor_copy", "to kDLVulkan", dlb_tensor_copy(ro, (DLDevice){kDLVulkan, 0}, &out),
        DLB_ERR_UNSUPPORTED_DEVICE, 0);
    row("dlb_tensor_record_stream", "stream 0 (ambiguous)", dlb_tensor_record_stream(ro, 0),
        DLB_ERR_INVALID_ARGUMENT, 0);
    dlb_tensor_free(packed);
    dlb_tensor_free(ro);
    live_baseline = 0;
  }

  /* Array interface. */
  {
    static const int64_t odd[2] = {12, 3};
    row("dlb_tensor_from_array_interface", "NULL struct",
        dlb_tensor_from_array_interface(NULL, NULL, NULL, &out), DLB_ERR_NULL_ARGUMENT, 0);
    array_interface("version 2", DLB_ERR_INVALID_ARGUMENT, "<f4", NULL, 2, none);
    array_interface("typestr \"\"", DLB_ERR_INVALID_TYPESTR, "", NULL, 3, none);
    array_interface("typestr \"<q4\" (unknown kind)", DLB_ERR_INVALID_TYPESTR, "<q4", NULL, 3, none);
    array_interface("typestr \"f\" (no item size)", DLB_ERR_INVALID_TYPESTR, "f", NULL, 3, none);
    array_interface("typestr \"<f0\"", DLB_ERR_INVALID_TYPESTR, "<f0", NULL, 3, none);
    array_interface("typestr not NUL-terminated in 8 bytes", DLB_ERR_INVALID_TYPESTR, "<f444444", NULL, 3, none);
    array_interface("typestr \">f4\" (big-endian)", DLB_ERR_BYTE_ORDER, ">f4", NULL, 3, none);
    array_interface("typestr \"<M8\" (datetime)", DLB_ERR_UNSUPPORTED_DTYPE, "<M8", NULL, 3, none);
    array_interface("typestr \"|O8\" (object)", DLB_ERR_UNSUPPORTED_DTYPE, "|O8", NULL, 3, none);
    array_interface("typestr \"<M8[ns]\" (datetime with unit)", DLB_ERR_UNSUPPORTED_DTYPE, "<M8[ns]", NULL, 3, none);
    array_interface("typestr \"|O\" (object, no size)", DLB_ERR_UNSUPPORTED_DTYPE, "|O", NULL, 3, none);
    array_interface("typestr \"<f16\" (float128)", DLB_ERR_UNSUPPORTED_DTYPE, "<f16", NULL, 3, none);
    array_interface("typestr \"<V2\" without a dtype", DLB_ERR_UNSUPPORTED_DTYPE, "<V2", NULL, 3, none);
    array_interface("typestr \"<f4\" but dtype int32", DLB_ERR_INVALID_ARGUMENT, "<f4", NULL, 3, i32);
    array_interface("byte strides (12, 3) for 4-byte items", DLB_ERR_INVALID_STRIDES, "<f4", odd, 3, none);
  }
  {
    DLDataType kept = {7, 7, 7};
    dlb_status s = dlb_dtype_from_name("float31", &kept);
    row("dlb_dtype_from_name", "\"float31\"", s, DLB_ERR_INVALID_ARGUMENT, 0);
    if (kept.code != 7) failures++;
  }

  if (dlb_live_tensor_count() != 0) failures++;
  fprintf(stderr, "bad-input catalogue: %d passed, %d failed\n", rows - failures, failures);
  return failures == 0 ? 0 : 1;
}
