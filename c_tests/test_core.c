/* C tests of the dlbridge ABI: bad arguments for every entry point, zero
 * copy, ownership (release callbacks and deleters run exactly once), a
 * foreign producer, read-only, size-0 / 0-d, strided views, every dtype. */
#include "dlbridge.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define SENTINEL ((dlb_tensor *)(uintptr_t)0x5a5a)

static DLDevice cpu(void) {
  DLDevice d = {kDLCPU, 0};
  return d;
}

static DLDataType dt(uint8_t code, uint8_t bits) {
  DLDataType t;
  t.code = code;
  t.bits = bits;
  t.lanes = 1;
  return t;
}

static const DLDataType F32 = {kDLFloat, 32, 1};

static int released;
static void count_release(void *ctx) {
  released++;
  CHECK(ctx == (void *)&released);
}

/* ---- a foreign producer written in C ------------------------------------ */

typedef struct {
  DLManagedTensorVersioned managed; /* first: the deleter casts back */
  int64_t shape[2];
  int64_t strides[2];
  float data[6];
} foreign_tensor;

static int foreign_deletes;
static void foreign_delete(DLManagedTensorVersioned *self) {
  foreign_deletes++;
  free(self);
}

static DLManagedTensorVersioned *foreign_new(void) {
  foreign_tensor *f = (foreign_tensor *)calloc(1, sizeof *f);
  int i;
  for (i = 0; i < 6; i++) f->data[i] = (float)i;
  f->shape[0] = 2;
  f->shape[1] = 3;
  f->strides[0] = 3;
  f->strides[1] = 1;
  f->managed.version.major = DLPACK_MAJOR_VERSION;
  f->managed.version.minor = DLPACK_MINOR_VERSION;
  f->managed.deleter = foreign_delete;
  f->managed.dl_tensor.data = f->data;
  f->managed.dl_tensor.device = cpu();
  f->managed.dl_tensor.ndim = 2;
  f->managed.dl_tensor.dtype = F32;
  f->managed.dl_tensor.shape = f->shape;
  f->managed.dl_tensor.strides = f->strides;
  return &f->managed;
}

typedef struct {
  DLManagedTensor managed;
  int64_t shape[1];
  int32_t data[4];
} foreign_legacy;

static int legacy_deletes;
static void legacy_delete(DLManagedTensor *self) {
  legacy_deletes++;
  free(self);
}

static DLManagedTensor *legacy_new(void) {
  foreign_legacy *f = (foreign_legacy *)calloc(1, sizeof *f);
  f->shape[0] = 4;
  f->managed.deleter = legacy_delete;
  f->managed.dl_tensor.data = f->data;
  f->managed.dl_tensor.device = cpu();
  f->managed.dl_tensor.ndim = 1;
  f->managed.dl_tensor.dtype = dt(kDLInt, 32);
  f->managed.dl_tensor.shape = f->shape;
  f->managed.dl_tensor.strides = NULL; /* pre-1.2 producers send NULL */
  return &f->managed;
}

/* ---- bad arguments, entry point by entry point ------------------------- */

static void test_new_bad_arguments(void) {
  dlb_tensor *out = SENTINEL;
  int64_t shape[2] = {2, 3};
  int64_t neg[3] = {2, 3, -1};
  int64_t huge[2] = {INT64_MAX, 4};
  DLDevice cuda = {kDLCUDA, 0};
  DLDevice bogus = {(DLDeviceType)42, 0};

  CHECK_STATUS(dlb_tensor_new(cpu(), F32, 2, shape, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_tensor_new(cpu(), F32, -1, shape, &out), DLB_ERR_INVALID_NDIM, "ndim is -1");
  CHECK_STATUS(dlb_tensor_new(cpu(), F32, 65, shape, &out), DLB_ERR_INVALID_NDIM, "ndim is 65");
  CHECK_STATUS(dlb_tensor_new(cpu(), F32, 2, NULL, &out), DLB_ERR_INVALID_SHAPE, "shape is NULL");
  CHECK_STATUS(dlb_tensor_new(cpu(), F32, 3, neg, &out), DLB_ERR_INVALID_SHAPE,
               "shape[2] is -1: dimensions must be >= 0");
  CHECK_STATUS(dlb_tensor_new(cpu(), F32, 2, huge, &out), DLB_ERR_OVERFLOW, "overflow");
  CHECK_STATUS(dlb_tensor_new(cpu(), dt(kDLOpaqueHandle, 64), 2, shape, &out),
               DLB_ERR_UNSUPPORTED_DTYPE, "kDLOpaqueHandle");
  CHECK_STATUS(dlb_tensor_new(cpu(), dt(kDLFloat6_e2m3fn, 8), 2, shape, &out),
               DLB_ERR_UNSUPPORTED_DTYPE, "bits=6");
  CHECK_STATUS(dlb_tensor_new(bogus, F32, 2, shape, &out), DLB_ERR_UNSUPPORTED_DEVICE,
               "unknown device type 42");
  {
    DLDevice opencl = {kDLOpenCL, 0};
    int32_t n = 0;
    CHECK_STATUS(dlb_tensor_new(opencl, F32, 2, shape, &out), DLB_ERR_UNSUPPORTED_DEVICE, "cannot allocate on opencl");
    if (dlb_cuda_device_count(&n) != DLB_OK) /* no driver here: an error, never a crash */
      CHECK_STATUS(dlb_tensor_new(cuda, F32, 2, shape, &out), DLB_ERR_CUDA_UNAVAILABLE, "libcuda");
  }
  CHECK(out == SENTINEL);
}

static void test_wrap_bad_arguments(void) {
  float buf[6] = {0};
  dlb_tensor *out = SENTINEL;
  int64_t shape[2] = {2, 3};
  int64_t big_strides[2] = {INT64_MAX / 2, 1};
  DLDataType lanes0 = {kDLFloat, 32, 0};
  DLDevice negative_id = {kDLCPU, -1};
  released = 0;

  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), F32, 2, shape, NULL, 0, 0, count_release, &released, NULL),
               DLB_ERR_NULL_ARGUMENT, "out");
  CHECK_STATUS(dlb_tensor_wrap(NULL, cpu(), F32, 2, shape, NULL, 0, 0, count_release, &released, &out),
               DLB_ERR_NULL_DATA, "data is NULL");
  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), F32, 2, shape, big_strides, 0, 0, NULL, NULL, &out),
               DLB_ERR_OVERFLOW, "overflow");
  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), F32, 2, shape, NULL, UINT64_MAX - 4, 0, NULL, NULL, &out),
               DLB_ERR_OVERFLOW, "byte_offset");
  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), lanes0, 2, shape, NULL, 0, 0, NULL, NULL, &out),
               DLB_ERR_UNSUPPORTED_DTYPE, "lanes is 0");
  CHECK_STATUS(dlb_tensor_wrap(buf, negative_id, F32, 2, shape, NULL, 0, 0, NULL, NULL, &out),
               DLB_ERR_UNSUPPORTED_DEVICE, "negative");
  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), F32, 2, shape, NULL, 0, 1u << 7, NULL, NULL, &out),
               DLB_ERR_UNSUPPORTED_FLAGS, "flag");
  CHECK_STATUS(dlb_tensor_wrap(buf, cpu(), F32, 100, shape, NULL, 0, 0, NULL, NULL, &out),
               DLB_ERR_INVALID_NDIM, "ndim is 100");
  CHECK(out == SENTINEL);
  CHECK(released == 0); /* failure leaves the memory with the caller */
}

static void test_from_dlpack_bad_arguments(void) {
  dlb_tensor *out = SENTINEL;
  DLManagedTensorVersioned *mt;
  DLManagedTensor *legacy;
  foreign_deletes = 0;
  legacy_deletes = 0;

  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(NULL, &out), DLB_ERR_NULL_ARGUMENT, "mt is NULL");
  CHECK_STATUS(dlb_tensor_from_dlpack(NULL, &out), DLB_ERR_NULL_ARGUMENT, "mt is NULL");

  /* NULL out: ownership still passed, so the deleter ran. */
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(foreign_new(), NULL), DLB_ERR_NULL_ARGUMENT, "out");
  CHECK(foreign_deletes == 1);
  CHECK_STATUS(dlb_tensor_from_dlpack(legacy_new(), NULL), DLB_ERR_NULL_ARGUMENT, "out");
  CHECK(legacy_deletes == 1);

  /* Major version mismatch: deleter called, nothing else read (the fields
   * are poisoned to prove it). */
  mt = foreign_new();
  mt->version.major = 2;
  mt->dl_tensor.ndim = -7;
  mt->dl_tensor.shape = (int64_t *)(uintptr_t)0x8;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_VERSION_MISMATCH, "major version 2");
  CHECK(foreign_deletes == 2);

  mt = foreign_new();
  mt->dl_tensor.ndim = -1;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_INVALID_NDIM, "ndim is -1");
  mt = foreign_new();
  mt->dl_tensor.ndim = 1000;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_INVALID_NDIM, "ndim is 1000");
  mt = foreign_new();
  ((foreign_tensor *)mt)->shape[1] = -3;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_INVALID_SHAPE, "shape[1] is -3");
  mt = foreign_new();
  mt->dl_tensor.shape = NULL;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_INVALID_SHAPE, "shape is NULL");
  mt = foreign_new();
  ((foreign_tensor *)mt)->shape[0] = INT64_MAX;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_OVERFLOW, "overflow");
  mt = foreign_new();
  ((foreign_tensor *)mt)->strides[0] = INT64_MAX / 3;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_OVERFLOW, "overflow");
  mt = foreign_new();
  mt->dl_tensor.byte_offset = UINT64_MAX - 8;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_OVERFLOW, "byte_offset");
  mt = foreign_new();
  mt->dl_tensor.dtype = dt(99, 8);
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_UNSUPPORTED_DTYPE, "unknown dtype code 99");
  mt = foreign_new();
  mt->dl_tensor.dtype = dt(kDLFloat4_e2m1fn, 8);
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_UNSUPPORTED_DTYPE, "bits=4");
  mt = foreign_new();
  mt->dl_tensor.dtype.lanes = 0;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_UNSUPPORTED_DTYPE, "lanes is 0");
  mt = foreign_new();
  mt->dl_tensor.device.device_type = (DLDeviceType)5;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_UNSUPPORTED_DEVICE, "unknown device type 5");
  mt = foreign_new();
  mt->dl_tensor.data = NULL;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_NULL_DATA, "6 elements");
  mt = foreign_new();
  mt->flags = 1u << 12;
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &out), DLB_ERR_UNSUPPORTED_FLAGS, "0x1000");
  CHECK(foreign_deletes == 15); /* every failure released exactly once */

  legacy = legacy_new();
  legacy->dl_tensor.ndim = -2;
  CHECK_STATUS(dlb_tensor_from_dlpack(legacy, &out), DLB_ERR_INVALID_NDIM, "ndim is -2");
  CHECK(legacy_deletes == 2);
  CHECK(out == SENTINEL);
}

static void test_export_and_inspect_bad_arguments(void) {
  DLManagedTensorVersioned *v = (DLManagedTensorVersioned *)(uintptr_t)0x77;
  DLManagedTensor *l = (DLManagedTensor *)(uintptr_t)0x77;
  dlb_tensor *t = NULL;
  int64_t shape[1] = {3};
  int32_t count = -5;
  dlb_status cuda;

  CHECK(dlb_tensor_new(cpu(), F32, 1, shape, &t) == DLB_OK);
  CHECK_STATUS(dlb_tensor_to_dlpack_versioned(NULL, &v), DLB_ERR_NULL_ARGUMENT, "t is NULL");
  CHECK_STATUS(dlb_tensor_to_dlpack_versioned(t, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_tensor_to_dlpack(NULL, &l), DLB_ERR_NULL_ARGUMENT, "t is NULL");
  CHECK_STATUS(dlb_tensor_to_dlpack(t, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK(v == (DLManagedTensorVersioned *)(uintptr_t)0x77);
  CHECK(l == (DLManagedTensor *)(uintptr_t)0x77);

  CHECK(dlb_tensor_dltensor(NULL) == NULL);
  CHECK(dlb_tensor_flags(NULL) == 0);
  CHECK(!dlb_tensor_is_contiguous(NULL));
  CHECK(dlb_tensor_nbytes(NULL) == 0);
  CHECK(dlb_tensor_retain(NULL) == NULL);
  dlb_tensor_free(NULL);

  CHECK_STATUS(dlb_cuda_device_count(NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_cuda_pointer_device(v, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  {
    int32_t dev = -9;
    dlb_status s = dlb_cuda_pointer_device(v, &dev);
    CHECK(s == DLB_ERR_CUDA_UNAVAILABLE || s == DLB_ERR_INVALID_ARGUMENT); /* a host pointer is not CUDA memory */
    CHECK(dev == -9);
    s = dlb_cuda_stream_wait(0, 0, 1);
    CHECK(s == DLB_ERR_CUDA_UNAVAILABLE || s == DLB_ERR_INVALID_ARGUMENT); /* stream 0 is refused */
  }
  cuda = dlb_cuda_device_count(&count);
  CHECK(cuda == DLB_OK || cuda == DLB_ERR_CUDA_UNAVAILABLE || cuda == DLB_ERR_CUDA);
  CHECK(cuda == DLB_OK ? count >= 0 : count == -5);
  dlb_tensor_free(t);
}

static void test_array_interface_bad_arguments(void) {
  float buf[6] = {0};
  int64_t shape[2] = {2, 3};
  int64_t odd_strides[2] = {12, 3};
  dlb_array_interface ai, filled;
  dlb_tensor *out = SENTINEL, *t = NULL;
  released = 0;

  memset(&ai, 0, sizeof ai);
  ai.version = 3;
  strcpy(ai.typestr, "<f4");
  ai.ndim = 2;
  ai.shape = shape;
  ai.data = buf;

  CHECK_STATUS(dlb_tensor_from_array_interface(NULL, NULL, NULL, &out), DLB_ERR_NULL_ARGUMENT, "ai is NULL");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  ai.version = 2;
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, count_release, &released, &out), DLB_ERR_INVALID_ARGUMENT,
               "version 2");
  ai.version = 3;
  strcpy(ai.typestr, ">f4");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, count_release, &released, &out), DLB_ERR_BYTE_ORDER,
               "byte order");
  strcpy(ai.typestr, "<q4");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_INVALID_TYPESTR, "kind 'q'");
  strcpy(ai.typestr, "f");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_INVALID_TYPESTR, "malformed");
  strcpy(ai.typestr, "<M8[ns]");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_UNSUPPORTED_DTYPE, "datetime");
  memcpy(ai.typestr, "<f444444", 8); /* no NUL */
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_INVALID_TYPESTR, "NUL");
  strcpy(ai.typestr, "<M8");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_UNSUPPORTED_DTYPE, "datetime");
  strcpy(ai.typestr, "<V2");
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_UNSUPPORTED_DTYPE, "bfloat16");
  strcpy(ai.typestr, "<f4");
  ai.dtype = dt(kDLInt, 32);
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_INVALID_ARGUMENT, "int32");
  ai.dtype.lanes = 0;
  ai.strides = odd_strides;
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &out), DLB_ERR_INVALID_STRIDES,
               "strides[1] = 3 bytes is not a multiple of the item size 4");
  CHECK(out == SENTINEL);
  CHECK(released == 0);

  /* Export side: NULL arguments, and packed FP4 has no typestr. */
  memset(&filled, 0x5a, sizeof filled);
  CHECK_STATUS(dlb_tensor_array_interface(NULL, &filled), DLB_ERR_NULL_ARGUMENT, "t is NULL");
  CHECK(dlb_tensor_wrap(buf, cpu(), dt(kDLFloat4_e2m1fn, 4), 2, shape, NULL, 0, 0, NULL, NULL, &t) == DLB_OK);
  CHECK_STATUS(dlb_tensor_array_interface(t, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_tensor_array_interface(t, &filled), DLB_ERR_UNSUPPORTED_DTYPE, "packed");
  CHECK(filled.version == 0x5a5a5a5a); /* untouched */
  dlb_tensor_free(t);
}

static void test_status_names(void) {
  int code;
  CHECK(strcmp(dlb_status_name(DLB_OK), "DLB_OK") == 0);
  CHECK(strcmp(dlb_status_name(DLB_ERR_PANIC), "DLB_ERR_PANIC") == 0);
  CHECK(strcmp(dlb_status_name(DLB_ERR_VERSION_MISMATCH), "DLB_ERR_VERSION_MISMATCH") == 0);
  for (code = 0; code <= DLB_ERR_PANIC; code++) CHECK(strncmp(dlb_status_name(code), "DLB_", 4) == 0);
  CHECK(strcmp(dlb_status_name(-1), "DLB_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(dlb_status_name(1000), "DLB_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(dlb_version(), DLBRIDGE_VERSION) == 0);
}

static void test_copies_bad_arguments(void) {
  float buf[4] = {0};
  int64_t shape[1] = {4};
  dlb_tensor *t = NULL, *out = SENTINEL;
  DLDevice cuda = {kDLCUDA, 0};
  DLDevice bogus = {(DLDeviceType)99, 0};
  DLDataType lanes0 = {kDLFloat, 32, 0};
  DLDataType kept = {7, 7, 7};
  dlb_array_interface ai;

  CHECK(dlb_tensor_wrap(buf, cpu(), F32, 1, shape, NULL, 0, 0, NULL, NULL, &t) == DLB_OK);
  CHECK_STATUS(dlb_tensor_copy(NULL, cpu(), &out), DLB_ERR_NULL_ARGUMENT, "t is NULL");
  CHECK_STATUS(dlb_tensor_copy(t, cpu(), NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  {
    int32_t n = 0;
    if (dlb_cuda_device_count(&n) != DLB_OK) {
      CHECK_STATUS(dlb_tensor_copy(t, cuda, &out), DLB_ERR_CUDA_UNAVAILABLE, "libcuda");
      CHECK_STATUS(dlb_cuda_empty_cache(), DLB_ERR_CUDA_UNAVAILABLE, "libcuda");
    }
  }
  {
    DLDevice vulkan = {kDLVulkan, 0};
    CHECK_STATUS(dlb_tensor_copy(t, vulkan, &out), DLB_ERR_UNSUPPORTED_DEVICE, "vulkan");
  }
  CHECK_STATUS(dlb_tensor_copy(t, bogus, &out), DLB_ERR_UNSUPPORTED_DEVICE, "unknown device type 99");
  CHECK_STATUS(dlb_tensor_astype(NULL, F32, &out), DLB_ERR_NULL_ARGUMENT, "t is NULL");
  CHECK_STATUS(dlb_tensor_astype(t, F32, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_tensor_astype(t, lanes0, &out), DLB_ERR_UNSUPPORTED_DTYPE, "lanes is 0");
  CHECK_STATUS(dlb_tensor_astype(t, dt(kDLFloat8_e4m3fn, 8), &out), DLB_ERR_UNSUPPORTED_DTYPE, "numeric types");
  CHECK_STATUS(dlb_tensor_copy_from_array_interface(NULL, &out), DLB_ERR_NULL_ARGUMENT, "ai is NULL");
  memset(&ai, 0, sizeof ai);
  ai.version = 3;
  strcpy(ai.typestr, ">f4");
  ai.ndim = 1;
  ai.shape = shape;
  ai.data = buf;
  CHECK_STATUS(dlb_tensor_copy_from_array_interface(&ai, NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  strcpy(ai.typestr, ">x4");
  CHECK_STATUS(dlb_tensor_copy_from_array_interface(&ai, &out), DLB_ERR_INVALID_TYPESTR, "kind 'x'");
  CHECK(out == SENTINEL);
  CHECK_STATUS(dlb_dtype_from_name(NULL, &kept), DLB_ERR_NULL_ARGUMENT, "name is NULL");
  CHECK_STATUS(dlb_dtype_from_name("float32", NULL), DLB_ERR_NULL_ARGUMENT, "out is NULL");
  CHECK_STATUS(dlb_dtype_from_name("float31", &kept), DLB_ERR_INVALID_ARGUMENT, "float31");
  CHECK(kept.code == 7 && kept.bits == 7 && kept.lanes == 7);
  dlb_tensor_free(t);
}

/* ---- behaviour ---------------------------------------------------------- */

static void test_zero_copy_round_trip(void) {
  float buf[6] = {0, 1, 2, 3, 4, 5};
  int64_t shape[2] = {2, 3};
  dlb_tensor *t = NULL, *back = NULL;
  DLManagedTensorVersioned *mt = NULL;
  const DLTensor *view;
  float *consumer;

  CHECK(dlb_tensor_wrap(buf, cpu(), F32, 2, shape, NULL, 0, 0, NULL, NULL, &t) == DLB_OK);
  CHECK(dlb_tensor_to_dlpack_versioned(t, &mt) == DLB_OK);
  CHECK(mt->version.major == DLPACK_MAJOR_VERSION && mt->version.minor == DLPACK_MINOR_VERSION);
  CHECK(mt->dl_tensor.data == (void *)buf);
  CHECK(mt->dl_tensor.byte_offset == 0);
  CHECK(mt->dl_tensor.strides != NULL && mt->dl_tensor.strides[0] == 3 && mt->dl_tensor.strides[1] == 1);
  CHECK(mt->flags == 0);
  /* A write by the consumer is seen by the producer, and the other way. */
  consumer = (float *)mt->dl_tensor.data;
  consumer[4] = 40.0f;
  CHECK(buf[4] == 40.0f);
  buf[1] = 10.0f;
  CHECK(consumer[1] == 10.0f);
  /* And back in: still the same memory. */
  CHECK(dlb_tensor_from_dlpack_versioned(mt, &back) == DLB_OK);
  view = dlb_tensor_dltensor(back);
  CHECK(view->data == (void *)buf && view->ndim == 2 && view->shape[1] == 3);
  CHECK(dlb_tensor_is_contiguous(back));
  CHECK(dlb_tensor_nbytes(back) == 24);
  dlb_tensor_free(back);
  dlb_tensor_free(t);
}

static void test_release_runs_once_whatever_the_free_order(void) {
  int order;
  for (order = 0; order < 6; order++) {
    static float buf[4];
    int64_t shape[1] = {4};
    dlb_tensor *t = NULL, *r;
    DLManagedTensorVersioned *v = NULL;
    DLManagedTensor *l = NULL;
    released = 0;
    CHECK(dlb_tensor_wrap(buf, cpu(), F32, 1, shape, NULL, 0, 0, count_release, &released, &t) == DLB_OK);
    r = dlb_tensor_retain(t);
    CHECK(r == t); /* handles are reference counted: retain returns t, counted once more */
    CHECK(dlb_tensor_to_dlpack_versioned(t, &v) == DLB_OK);
    CHECK(dlb_tensor_to_dlpack(r, &l) == DLB_OK);
    switch (order) {
      case 0: dlb_tensor_free(t); dlb_tensor_free(r); v->deleter(v); CHECK(released == 0); l->deleter(l); break;
      case 1: v->deleter(v); l->deleter(l); dlb_tensor_free(r); CHECK(released == 0); dlb_tensor_free(t); break;
      case 2: l->deleter(l); dlb_tensor_free(t); v->deleter(v); CHECK(released == 0); dlb_tensor_free(r); break;
      case 3: dlb_tensor_free(r); v->deleter(v); l->deleter(l); CHECK(released == 0); dlb_tensor_free(t); break;
      case 4: dlb_tensor_free(t); l->deleter(l); dlb_tensor_free(r); CHECK(released == 0); v->deleter(v); break;
      default: v->deleter(v); dlb_tensor_free(r); dlb_tensor_free(t); CHECK(released == 0); l->deleter(l); break;
    }
    CHECK(released == 1);
  }
}

static void test_foreign_producer_deleter_runs_once(void) {
  dlb_tensor *t = NULL;
  DLManagedTensorVersioned *mt = foreign_new(), *again = NULL;
  float *data = ((foreign_tensor *)mt)->data;
  foreign_deletes = 0;
  CHECK(dlb_tensor_from_dlpack_versioned(mt, &t) == DLB_OK);
  CHECK(dlb_tensor_dltensor(t)->data == (void *)data);
  /* Handed on to a third party, then the handle is freed first. */
  CHECK(dlb_tensor_to_dlpack_versioned(t, &again) == DLB_OK);
  CHECK(again != mt && again->dl_tensor.data == (void *)data);
  dlb_tensor_free(t);
  CHECK(foreign_deletes == 0);
  CHECK(((float *)again->dl_tensor.data)[5] == 5.0f); /* still alive */
  again->deleter(again);
  CHECK(foreign_deletes == 1);
}

static void test_legacy_import_null_strides(void) {
  dlb_tensor *t = NULL;
  const DLTensor *view;
  legacy_deletes = 0;
  CHECK(dlb_tensor_from_dlpack(legacy_new(), &t) == DLB_OK);
  view = dlb_tensor_dltensor(t);
  CHECK(view->strides != NULL && view->strides[0] == 1); /* NULL read as row-major, always filled */
  /* The legacy ABI cannot say whether the memory may be written: read-only,
   * and said so in versioned exports, but legacy in, legacy out works. */
  CHECK((dlb_tensor_flags(t) & DLPACK_FLAG_BITMASK_READ_ONLY) != 0);
  {
    DLManagedTensorVersioned *v = NULL;
    DLManagedTensor *l = NULL;
    CHECK(dlb_tensor_to_dlpack_versioned(t, &v) == DLB_OK && (v->flags & DLPACK_FLAG_BITMASK_READ_ONLY));
    CHECK(dlb_tensor_to_dlpack(t, &l) == DLB_OK);
    if (v) v->deleter(v);
    if (l) l->deleter(l);
  }
  dlb_tensor_free(t);
  CHECK(legacy_deletes == 1);
}

static void test_read_only_propagation(void) {
  float buf[4] = {1, 2, 3, 4};
  int64_t shape[1] = {4};
  dlb_tensor *t = NULL, *back = NULL, *from_ai = NULL;
  DLManagedTensorVersioned *v = NULL;
  DLManagedTensor *l = (DLManagedTensor *)(uintptr_t)0x99;
  dlb_array_interface ai;

  CHECK(dlb_tensor_wrap(buf, cpu(), F32, 1, shape, NULL, 0, DLPACK_FLAG_BITMASK_READ_ONLY, NULL, NULL, &t) == DLB_OK);
  CHECK(dlb_tensor_flags(t) == DLPACK_FLAG_BITMASK_READ_ONLY);
  CHECK_STATUS(dlb_tensor_to_dlpack(t, &l), DLB_ERR_READ_ONLY, "read-only");
  CHECK(l == (DLManagedTensor *)(uintptr_t)0x99);
  CHECK(dlb_tensor_to_dlpack_versioned(t, &v) == DLB_OK);
  CHECK(v->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  CHECK(dlb_tensor_from_dlpack_versioned(v, &back) == DLB_OK);
  CHECK(dlb_tensor_flags(back) & DLPACK_FLAG_BITMASK_READ_ONLY);
  CHECK(dlb_tensor_array_interface(back, &ai) == DLB_OK);
  CHECK(ai.readonly);
  CHECK(dlb_tensor_from_array_interface(&ai, NULL, NULL, &from_ai) == DLB_OK);
  CHECK(dlb_tensor_flags(from_ai) & DLPACK_FLAG_BITMASK_READ_ONLY);
  dlb_tensor_free(from_ai);
  dlb_tensor_free(back);
  dlb_tensor_free(t);
}

static void test_size_zero_and_zero_d(void) {
  int64_t empty_shape[2] = {0, 3};
  dlb_tensor *e = NULL, *s = NULL, *w = NULL;
  DLManagedTensorVersioned *v = NULL;
  dlb_array_interface ai;
  double scalar = 2.5;

  CHECK(dlb_tensor_new(cpu(), F32, 2, empty_shape, &e) == DLB_OK);
  CHECK(dlb_tensor_nbytes(e) == 0);
  CHECK(dlb_tensor_is_contiguous(e));
  CHECK(dlb_tensor_to_dlpack_versioned(e, &v) == DLB_OK);
  CHECK(v->dl_tensor.data == NULL && v->dl_tensor.ndim == 2 && v->dl_tensor.shape[0] == 0);
  v->deleter(v);
  /* A foreign empty tensor may carry NULL data. */
  CHECK(dlb_tensor_wrap(NULL, cpu(), F32, 2, empty_shape, NULL, 0, 0, NULL, NULL, &w) == DLB_OK);
  CHECK(dlb_tensor_array_interface(w, &ai) == DLB_OK && ai.data == NULL && ai.shape[1] == 3);

  /* 0-d: shape may be NULL. */
  CHECK(dlb_tensor_wrap(&scalar, cpu(), dt(kDLFloat, 64), 0, NULL, NULL, 0, 0, NULL, NULL, &s) == DLB_OK);
  CHECK(dlb_tensor_nbytes(s) == 8);
  CHECK(dlb_tensor_dltensor(s)->ndim == 0);
  CHECK(dlb_tensor_to_dlpack_versioned(s, &v) == DLB_OK);
  CHECK(*(double *)v->dl_tensor.data == 2.5 && v->dl_tensor.ndim == 0);
  v->deleter(v);
  CHECK(dlb_tensor_array_interface(s, &ai) == DLB_OK && ai.ndim == 0 && strcmp(ai.typestr, "<f8") == 0);
  dlb_tensor_free(s);
  dlb_tensor_free(w);
  dlb_tensor_free(e);
}

static void test_transposed_and_negative_strides(void) {
  int32_t buf[6] = {0, 1, 2, 3, 4, 5};
  int64_t shape[2] = {3, 2};
  int64_t transposed[2] = {1, 3};
  int64_t rshape[1] = {6};
  int64_t reversed[1] = {-1};
  dlb_tensor *t = NULL, *r = NULL, *back = NULL;
  DLManagedTensorVersioned *v = NULL;
  dlb_array_interface ai;
  const DLTensor *view;

  CHECK(dlb_tensor_wrap(buf, cpu(), dt(kDLInt, 32), 2, shape, transposed, 0, 0, NULL, NULL, &t) == DLB_OK);
  CHECK(!dlb_tensor_is_contiguous(t));
  CHECK(dlb_tensor_to_dlpack_versioned(t, &v) == DLB_OK);
  CHECK(v->dl_tensor.strides[0] == 1 && v->dl_tensor.strides[1] == 3);
  /* element [2][1] = buf[2*1 + 1*3] */
  CHECK(((int32_t *)v->dl_tensor.data)[2 * v->dl_tensor.strides[0] + 1 * v->dl_tensor.strides[1]] == 5);
  CHECK(dlb_tensor_from_dlpack_versioned(v, &back) == DLB_OK);
  CHECK(dlb_tensor_array_interface(back, &ai) == DLB_OK);
  CHECK(ai.strides[0] == 4 && ai.strides[1] == 12);

  /* Reversed view: data points at the last element, stride -1. */
  CHECK(dlb_tensor_wrap(buf + 5, cpu(), dt(kDLInt, 32), 1, rshape, reversed, 0, 0, NULL, NULL, &r) == DLB_OK);
  view = dlb_tensor_dltensor(r);
  CHECK(view->data == (void *)(buf + 5) && view->strides[0] == -1);
  CHECK(((int32_t *)view->data)[-5] == 0);
  CHECK(!dlb_tensor_is_contiguous(r));
  CHECK(dlb_tensor_array_interface(r, &ai) == DLB_OK && ai.strides[0] == -4);
  dlb_tensor_free(r);
  dlb_tensor_free(back);
  dlb_tensor_free(t);
}

static void test_byte_offset_is_folded_into_data(void) {
  float buf[8] = {0};
  int64_t shape[1] = {4};
  dlb_tensor *t = NULL;
  DLManagedTensor *l = NULL;
  CHECK(dlb_tensor_wrap(buf, cpu(), F32, 1, shape, NULL, 16, 0, NULL, NULL, &t) == DLB_OK);
  CHECK(dlb_tensor_dltensor(t)->data == (void *)(buf + 4));
  CHECK(dlb_tensor_to_dlpack(t, &l) == DLB_OK);
  CHECK(l->dl_tensor.data == (void *)(buf + 4) && l->dl_tensor.byte_offset == 0);
  l->deleter(l);
  dlb_tensor_free(t);
}

static void test_new_is_aligned_and_zeroed(void) {
  int64_t shape[2] = {7, 9};
  dlb_tensor *t = NULL;
  const DLTensor *view;
  const unsigned char *bytes;
  size_t i;
  int zero = 1;
  CHECK(dlb_tensor_new(cpu(), dt(kDLComplex, 128), 2, shape, &t) == DLB_OK);
  view = dlb_tensor_dltensor(t);
  CHECK((uintptr_t)view->data % DLB_ALIGNMENT == 0);
  CHECK(dlb_tensor_nbytes(t) == 7 * 9 * 16);
  bytes = (const unsigned char *)view->data;
  for (i = 0; i < dlb_tensor_nbytes(t); i++) zero &= bytes[i] == 0;
  CHECK(zero);
  dlb_tensor_free(t);
}

static void test_every_dtype_code(void) {
  /* code, bits, typestr ("" = no array-interface form when packed) */
  static const struct {
    uint8_t code, bits;
    const char *typestr;
  } table[] = {
      {kDLInt, 8, "|i1"},   {kDLInt, 16, "<i2"},    {kDLInt, 32, "<i4"},     {kDLInt, 64, "<i8"},
      {kDLUInt, 8, "|u1"},  {kDLUInt, 16, "<u2"},   {kDLUInt, 32, "<u4"},    {kDLUInt, 64, "<u8"},
      {kDLFloat, 16, "<f2"}, {kDLFloat, 32, "<f4"}, {kDLFloat, 64, "<f8"},   {kDLBfloat, 16, "<V2"},
      {kDLComplex, 64, "<c8"}, {kDLComplex, 128, "<c16"}, {kDLBool, 8, "|b1"},
      {kDLFloat8_e3m4, 8, "|V1"}, {kDLFloat8_e4m3, 8, "|V1"}, {kDLFloat8_e4m3b11fnuz, 8, "|V1"},
      {kDLFloat8_e4m3fn, 8, "|V1"}, {kDLFloat8_e4m3fnuz, 8, "|V1"}, {kDLFloat8_e5m2, 8, "|V1"},
      {kDLFloat8_e5m2fnuz, 8, "|V1"}, {kDLFloat8_e8m0fnu, 8, "|V1"}, {kDLFloat6_e2m3fn, 6, ""},
      {kDLFloat6_e3m2fn, 6, ""},    {kDLFloat4_e2m1fn, 4, ""},
  };
  static unsigned char buf[64];
  int64_t shape[2] = {2, 4};
  size_t i;
  for (i = 0; i < sizeof table / sizeof table[0]; i++) {
    dlb_tensor *t = NULL, *back = NULL, *from_ai = NULL;
    DLManagedTensorVersioned *v = NULL;
    dlb_array_interface ai;
    DLDataType type = dt(table[i].code, table[i].bits);
    CHECK(dlb_tensor_wrap(buf, cpu(), type, 2, shape, NULL, 0, 0, NULL, NULL, &t) == DLB_OK);
    CHECK(dlb_tensor_nbytes(t) == (size_t)(8 * table[i].bits + 7) / 8);
    CHECK(dlb_tensor_to_dlpack_versioned(t, &v) == DLB_OK);
    CHECK(v->dl_tensor.dtype.code == type.code && v->dl_tensor.dtype.bits == type.bits);
    CHECK(dlb_tensor_from_dlpack_versioned(v, &back) == DLB_OK);
    if (table[i].typestr[0] != '\0') {
      CHECK(dlb_tensor_array_interface(back, &ai) == DLB_OK);
      CHECK(strcmp(ai.typestr, table[i].typestr) == 0);
      CHECK(ai.dtype.code == type.code && ai.dtype.bits == type.bits);
      /* With the dtype field, raw-byte types ("V") come back as themselves. */
      CHECK(dlb_tensor_from_array_interface(&ai, NULL, NULL, &from_ai) == DLB_OK);
      CHECK(dlb_tensor_dltensor(from_ai)->dtype.code == type.code);
      CHECK(dlb_tensor_dltensor(from_ai)->data == (void *)buf);
    } else {
      CHECK_STATUS(dlb_tensor_array_interface(back, &ai), DLB_ERR_UNSUPPORTED_DTYPE, "packed");
    }
    dlb_tensor_free(from_ai);
    dlb_tensor_free(back);
    dlb_tensor_free(t);
  }
}

static void test_array_interface_round_trip(void) {
  double buf[6] = {0, 1, 2, 3, 4, 5};
  int64_t shape[2] = {3, 2};
  int64_t byte_strides[2] = {8, 24}; /* Fortran order */
  dlb_array_interface in, out;
  dlb_tensor *t = NULL;
  released = 0;
  memset(&in, 0, sizeof in);
  in.version = DLB_ARRAY_INTERFACE_VERSION;
  strcpy(in.typestr, "<f8");
  in.ndim = 2;
  in.shape = shape;
  in.strides = byte_strides;
  in.data = buf;
  CHECK(dlb_tensor_from_array_interface(&in, count_release, &released, &t) == DLB_OK);
  CHECK(dlb_tensor_dltensor(t)->strides[0] == 1 && dlb_tensor_dltensor(t)->strides[1] == 3);
  CHECK(dlb_tensor_dltensor(t)->device.device_type == kDLCPU);
  CHECK(dlb_tensor_array_interface(t, &out) == DLB_OK);
  CHECK(out.version == 3 && out.ndim == 2 && out.data == (void *)buf && !out.readonly);
  CHECK(out.strides[0] == 8 && out.strides[1] == 24 && out.shape[0] == 3);
  CHECK(strcmp(out.typestr, "<f8") == 0);
  dlb_tensor_free(t);
  CHECK(released == 1);
}

static void test_copies(void) {
  int32_t buf[6] = {0, 1, 2, 3, 4, 5};
  int64_t shape[2] = {3, 2};
  int64_t transposed[2] = {1, 3};
  int64_t four[1] = {4};
  float f[4] = {1.5f, -2.0f, 65520.0f, 0.0f};
  uint32_t big[4] = {0x01000000u, 0x02000000u, 0xffffffffu, 0x00010000u}; /* 1, 2, -1, 256 big-endian */
  dlb_tensor *t = NULL, *c = NULL, *h = NULL, *w = NULL, *s = NULL;
  DLDataType f16 = {kDLFloat, 16, 1}, i32 = {kDLInt, 32, 1};
  const DLTensor *v;
  dlb_array_interface ai;

  CHECK(dlb_tensor_wrap(buf, cpu(), i32, 2, shape, transposed, 0, DLPACK_FLAG_BITMASK_READ_ONLY, NULL, NULL, &t) ==
        DLB_OK);
  CHECK(dlb_tensor_copy(t, cpu(), &c) == DLB_OK);
  v = dlb_tensor_dltensor(c);
  CHECK(v->data != (void *)buf && v->strides[0] == 2 && v->strides[1] == 1);
  CHECK(((int32_t *)v->data)[1] == 3 && ((int32_t *)v->data)[2] == 1 && ((int32_t *)v->data)[5] == 5);
  CHECK(dlb_tensor_flags(c) == DLPACK_FLAG_BITMASK_IS_COPIED); /* a copy is writable */
  CHECK((uintptr_t)v->data % DLB_ALIGNMENT == 0);

  CHECK(dlb_tensor_wrap(f, cpu(), F32, 1, four, NULL, 0, 0, NULL, NULL, &w) == DLB_OK);
  CHECK(dlb_tensor_astype(w, f16, &h) == DLB_OK);
  v = dlb_tensor_dltensor(h);
  CHECK(v->dtype.code == kDLFloat && v->dtype.bits == 16);
  CHECK(((uint16_t *)v->data)[0] == 0x3e00 && ((uint16_t *)v->data)[1] == 0xc000);
  CHECK(((uint16_t *)v->data)[2] == 0x7c00); /* rounds to infinity */

  memset(&ai, 0, sizeof ai);
  ai.version = 3;
  strcpy(ai.typestr, ">i4");
  ai.ndim = 1;
  ai.shape = four;
  ai.data = big;
  CHECK_STATUS(dlb_tensor_from_array_interface(&ai, NULL, NULL, &s), DLB_ERR_BYTE_ORDER, "byte order");
  CHECK(dlb_tensor_copy_from_array_interface(&ai, &s) == DLB_OK);
  v = dlb_tensor_dltensor(s);
  CHECK(((int32_t *)v->data)[0] == 1 && ((int32_t *)v->data)[2] == -1 && ((int32_t *)v->data)[3] == 256);
  CHECK(dlb_tensor_flags(s) & DLPACK_FLAG_BITMASK_IS_COPIED);
  dlb_tensor_free(s);
  dlb_tensor_free(h);
  dlb_tensor_free(w);
  dlb_tensor_free(c);
  dlb_tensor_free(t);
}

int main(void) {
  RUN(test_new_bad_arguments);
  RUN(test_wrap_bad_arguments);
  RUN(test_from_dlpack_bad_arguments);
  RUN(test_export_and_inspect_bad_arguments);
  RUN(test_array_interface_bad_arguments);
  RUN(test_copies_bad_arguments);
  RUN(test_status_names);
  RUN(test_zero_copy_round_trip);
  RUN(test_release_runs_once_whatever_the_free_order);
  RUN(test_foreign_producer_deleter_runs_once);
  RUN(test_legacy_import_null_strides);
  RUN(test_read_only_propagation);
  RUN(test_size_zero_and_zero_d);
  RUN(test_transposed_and_negative_strides);
  RUN(test_byte_offset_is_folded_into_data);
  RUN(test_new_is_aligned_and_zeroed);
  RUN(test_every_dtype_code);
  RUN(test_array_interface_round_trip);
  RUN(test_copies);

  /* Every handle and export above was freed: nothing may be alive. */
  checks_failed_in_test = 0;
  CHECK(dlb_live_tensor_count() == 0);
  if (checks_failed_in_test) {
    tests_failed++;
    printf("FAILED live tensor count is %zu at exit\n", dlb_live_tensor_count());
  } else {
    tests_passed++;
    printf("ok     live tensor count is 0 at exit\n");
  }
  printf("c_tests/test_core: %d passed, %d failed\n", tests_passed, tests_failed);
  return tests_failed == 0 ? 0 : 1;
}
