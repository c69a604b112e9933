/* C tests of dlbridge's CUDA paths, through the C ABI alone: allocation on
 * a device and in pinned memory, transfers in every direction (strided and
 * negative-stride device sources too), DLPack export/import of device
 * tensors, stream handoff arguments, bad device ids. Without a CUDA driver
 * every test is skipped and the reason printed; `make test-gpu` runs them on
 * a GPU machine, also under compute-sanitizer (memcheck + leak check,
 * racecheck, synccheck). The driver contract tests (no context made by
 * counting devices, the caller's context restored, copies synchronous,
 * streams of other contexts, a forked child) call libcuda themselves,
 * loaded at run time like dlbridge loads it. */
#define _POSIX_C_SOURCE 200809L
#include "dlbridge.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static const DLDataType F32 = {kDLFloat, 32, 1};
static const DLDevice CPU = {kDLCPU, 0};
static const DLDevice CUDA0 = {kDLCUDA, 0};
static const DLDevice PINNED = {kDLCUDAHost, 0};

static int released;
static void count_release(void *ctx) {
  (void)ctx;
  released++;
}

/* A CPU tensor of shape rows x cols holding 0, 1, 2, ... (row-major). */
static dlb_tensor *iota(int64_t rows, int64_t cols) {
  int64_t shape[2];
  dlb_tensor *t = NULL;
  float *data;
  int64_t i;
  shape[0] = rows;
  shape[1] = cols;
  if (dlb_tensor_new(CPU, F32, 2, shape, &t) != DLB_OK) return NULL;
  data = (float *)dlb_tensor_dltensor(t)->data;
  for (i = 0; i < rows * cols; i++) data[i] = (float)i;
  return t;
}

static const float *host_data(const dlb_tensor *t) { return (const float *)dlb_tensor_dltensor(t)->data; }

static void test_new_on_device_and_pinned(void) {
  int64_t shape[2] = {1000, 3};
  dlb_tensor *d = NULL, *p = NULL, *back = NULL;
  const DLTensor *dl;
  int32_t dev = -1;
  int i, zero = 1;

  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 2, shape, &d), DLB_OK, "");
  dl = dlb_tensor_dltensor(d);
  CHECK(dl->device.device_type == kDLCUDA && dl->device.device_id == 0);
  CHECK(dl->data != NULL && (uintptr_t)dl->data % DLB_ALIGNMENT == 0);
  CHECK_STATUS(dlb_cuda_pointer_device(dl->data, &dev), DLB_OK, "");
  CHECK(dev == 0);
  CHECK(dlb_tensor_nbytes(d) == 12000);
  /* dlb_tensor_new zero-fills, on the device too */
  CHECK_STATUS(dlb_tensor_copy(d, CPU, &back), DLB_OK, "");
  for (i = 0; i < 3000; i++) zero &= host_data(back)[i] == 0.0f;
  CHECK(zero);
  /* pinned memory is host-accessible: written directly from the CPU */
  CHECK_STATUS(dlb_tensor_new(PINNED, F32, 2, shape, &p), DLB_OK, "");
  CHECK(dlb_tensor_dltensor(p)->device.device_type == kDLCUDAHost);
  ((float *)dlb_tensor_dltensor(p)->data)[2999] = 7.0f;
  CHECK(host_data(p)[2999] == 7.0f);
  dlb_tensor_free(d);
  dlb_tensor_free(p);
  dlb_tensor_free(back);
}

static void test_round_trips_in_every_direction(void) {
  dlb_tensor *h = iota(512, 300), *d = NULL, *d2 = NULL, *p = NULL, *p_to_d = NULL, *back = NULL;
  int i, same = 1;

  CHECK(h != NULL);
  CHECK_STATUS(dlb_tensor_copy(h, CUDA0, &d), DLB_OK, "");            /* CPU -> CUDA */
  CHECK(dlb_tensor_flags(d) & DLPACK_FLAG_BITMASK_IS_COPIED);
  CHECK_STATUS(dlb_tensor_copy(d, CUDA0, &d2), DLB_OK, "");           /* CUDA -> CUDA */
  CHECK(dlb_tensor_dltensor(d2)->data != dlb_tensor_dltensor(d)->data);
  CHECK_STATUS(dlb_tensor_copy(d2, PINNED, &p), DLB_OK, "");          /* CUDA -> pinned */
  CHECK_STATUS(dlb_tensor_copy(p, CUDA0, &p_to_d), DLB_OK, "");       /* pinned -> CUDA */
  CHECK_STATUS(dlb_tensor_copy(p_to_d, CPU, &back), DLB_OK, "");      /* CUDA -> CPU */
  for (i = 0; i < 512 * 300; i++) same &= host_data(back)[i] == (float)i && host_data(p)[i] == (float)i;
  CHECK(same);
  CHECK(dlb_tensor_dltensor(back)->device.device_type == kDLCPU);
  dlb_tensor_free(h);
  dlb_tensor_free(d);
  dlb_tensor_free(d2);
  dlb_tensor_free(p);
  dlb_tensor_free(p_to_d);
  dlb_tensor_free(back);
}

/* Views over device memory that are not compact: a transpose, a step, and a
 * negative stride, wrapped with dlb_tensor_wrap; copies gather them. */
static void test_strided_device_sources(void) {
  dlb_tensor *h = iota(4, 6), *d = NULL, *view = NULL, *out = NULL, *on_dev = NULL, *back = NULL;
  int64_t shape_t[2] = {6, 4}, strides_t[2] = {1, 6};
  int64_t shape_r[1] = {6}, strides_r[1] = {-1};
  char *base;
  int r, c, same = 1;

  CHECK(h != NULL);
  CHECK_STATUS(dlb_tensor_copy(h, CUDA0, &d), DLB_OK, "");
  base = (char *)dlb_tensor_dltensor(d)->data;

  released = 0;
  CHECK_STATUS(dlb_tensor_wrap(base, CUDA0, F32, 2, shape_t, strides_t, 0, 0, count_release, NULL, &view), DLB_OK,
               "");
  CHECK(!dlb_tensor_is_contiguous(view));
  CHECK_STATUS(dlb_tensor_copy(view, CPU, &out), DLB_OK, ""); /* strided CUDA -> CPU */
  for (r = 0; r < 6; r++)
    for (c = 0; c < 4; c++) same &= host_data(out)[r * 4 + c] == (float)(c * 6 + r);
  CHECK(same);
  CHECK_STATUS(dlb_tensor_copy(view, CUDA0, &on_dev), DLB_OK, ""); /* strided CUDA -> CUDA */
  CHECK(dlb_tensor_is_contiguous(on_dev));
  CHECK_STATUS(dlb_tensor_copy(on_dev, CPU, &back), DLB_OK, "");
  CHECK(memcmp(host_data(back), host_data(out), 24 * sizeof(float)) == 0);
  dlb_tensor_free(view);
  dlb_tensor_free(out);
  dlb_tensor_free(on_dev);
  dlb_tensor_free(back);
  CHECK(released == 1);

  /* row 2 reversed: data points at its last element, stride -1 */
  CHECK_STATUS(dlb_tensor_wrap(base + (2 * 6 + 5) * sizeof(float), CUDA0, F32, 1, shape_r, strides_r, 0, 0,
                               count_release, NULL, &view),
               DLB_OK, "");
  CHECK_STATUS(dlb_tensor_copy(view, CPU, &out), DLB_OK, "");
  same = 1;
  for (c = 0; c < 6; c++) same &= host_data(out)[c] == (float)(2 * 6 + 5 - c);
  CHECK(same);
  dlb_tensor_free(view);
  dlb_tensor_free(out);
  CHECK(released == 2);
  dlb_tensor_free(h);
  dlb_tensor_free(d);
}

static void test_dlpack_export_import_of_device_tensors(void) {
  int64_t shape[1] = {4096};
  dlb_tensor *d = NULL, *again = NULL;
  DLManagedTensorVersioned *mt = NULL;
  DLManagedTensor *legacy = NULL;

  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 1, shape, &d), DLB_OK, "");
  CHECK_STATUS(dlb_tensor_to_dlpack_versioned(d, &mt), DLB_OK, "");
  CHECK(mt->dl_tensor.device.device_type == kDLCUDA && mt->dl_tensor.device.device_id == 0);
  CHECK(mt->dl_tensor.data == dlb_tensor_dltensor(d)->data); /* zero copy */
  CHECK_STATUS(dlb_tensor_from_dlpack_versioned(mt, &again), DLB_OK, "");
  CHECK(dlb_tensor_dltensor(again)->data == dlb_tensor_dltensor(d)->data);
  CHECK(dlb_tensor_dltensor(again)->device.device_type == kDLCUDA);
  CHECK_STATUS(dlb_tensor_to_dlpack(again, &legacy), DLB_OK, "");
  CHECK(legacy->dl_tensor.data == dlb_tensor_dltensor(d)->data);
  dlb_tensor_free(d); /* the exports keep the memory alive */
  dlb_tensor_free(again);
  CHECK(dlb_live_tensor_count() == 1);
  legacy->deleter(legacy);
  CHECK(dlb_live_tensor_count() == 0);
}

static void test_zero_size_device_tensors(void) {
  int64_t shape[2] = {0, 5};
  dlb_tensor *d = NULL, *back = NULL;
  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 2, shape, &d), DLB_OK, "");
  CHECK(dlb_tensor_nbytes(d) == 0);
  CHECK_STATUS(dlb_tensor_copy(d, CPU, &back), DLB_OK, "");
  CHECK(dlb_tensor_dltensor(back)->shape[0] == 0 && dlb_tensor_dltensor(back)->shape[1] == 5);
  dlb_tensor_free(d);
  dlb_tensor_free(back);
}

static void test_bad_devices_and_streams(void) {
  int64_t shape[1] = {4};
  DLDevice missing = {kDLCUDA, 4096};
  dlb_tensor *h = iota(1, 4), *out = NULL;
  float on_stack = 0;
  int32_t dev = 77;

  CHECK(dlb_tensor_new(missing, F32, 1, shape, &out) != DLB_OK);
  CHECK(strstr(dlb_last_error_message(), "4096") != NULL);
  CHECK(out == NULL);
  CHECK(dlb_tensor_copy(h, missing, &out) != DLB_OK);
  CHECK(strstr(dlb_last_error_message(), "4096") != NULL);
  CHECK(out == NULL);
  CHECK_STATUS(dlb_cuda_pointer_device(&on_stack, &dev), DLB_ERR_INVALID_ARGUMENT, "not CUDA memory");
  CHECK(dev == 77);
  CHECK_STATUS(dlb_cuda_stream_wait(0, 2, 1), DLB_OK, ""); /* per-thread waits for legacy */
  CHECK_STATUS(dlb_cuda_stream_wait(0, 1, 1), DLB_OK, "");
  CHECK_STATUS(dlb_cuda_stream_wait(0, 0, 1), DLB_ERR_INVALID_ARGUMENT, "stream 0");
  dlb_tensor_free(h);
}

/* Freed blocks are kept for reuse (pinned memory is slow to pin), and
 * dlb_cuda_empty_cache gives them back. */
static void test_freed_memory_is_reused_then_given_back(void) {
  int64_t shape[1] = {1 << 20};
  dlb_tensor *p = NULL, *again = NULL, *d = NULL;
  void *first;
  CHECK_STATUS(dlb_tensor_new(PINNED, F32, 1, shape, &p), DLB_OK, "");
  first = dlb_tensor_dltensor(p)->data;
  dlb_tensor_free(p);
  CHECK_STATUS(dlb_tensor_new(PINNED, F32, 1, shape, &again), DLB_OK, "");
  CHECK(dlb_tensor_dltensor(again)->data == first);
  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 1, shape, &d), DLB_OK, "");
  dlb_tensor_free(again);
  dlb_tensor_free(d);
  CHECK_STATUS(dlb_cuda_empty_cache(), DLB_OK, "");
  CHECK_STATUS(dlb_tensor_new(PINNED, F32, 1, shape, &p), DLB_OK, ""); /* still works after emptying */
  dlb_tensor_free(p);
  CHECK_STATUS(dlb_cuda_empty_cache(), DLB_OK, "");
}

/* The driver calls the tests make themselves (CUresult 0 = success). */
typedef void *cu_ctx;
typedef void *cu_stream;
static struct {
  int (*PrimaryCtxGetState)(int, unsigned *, int *);
  int (*PrimaryCtxRetain)(cu_ctx *, int);
  int (*PrimaryCtxRelease)(int);
  int (*CtxCreate)(cu_ctx *, unsigned, int);
  int (*CtxDestroy)(cu_ctx);
  int (*CtxGetCurrent)(cu_ctx *);
  int (*CtxSetCurrent)(cu_ctx);
  int (*StreamCreate)(cu_stream *, unsigned);
  int (*StreamDestroy)(cu_stream);
  int (*StreamQuery)(cu_stream);
  int (*StreamSynchronize)(cu_stream);
} cu;

static int load_driver(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) return 0;
  *(void **)&cu.PrimaryCtxGetState = dlsym(h, "cuDevicePrimaryCtxGetState");
  *(void **)&cu.PrimaryCtxRetain = dlsym(h, "cuDevicePrimaryCtxRetain");
  *(void **)&cu.PrimaryCtxRelease = dlsym(h, "cuDevicePrimaryCtxRelease_v2");
  *(void **)&cu.CtxCreate = dlsym(h, "cuCtxCreate_v2");
  *(void **)&cu.CtxDestroy = dlsym(h, "cuCtxDestroy_v2");
  *(void **)&cu.CtxGetCurrent = dlsym(h, "cuCtxGetCurrent");
  *(void **)&cu.CtxSetCurrent = dlsym(h, "cuCtxSetCurrent");
  *(void **)&cu.StreamCreate = dlsym(h, "cuStreamCreate");
  *(void **)&cu.StreamDestroy = dlsym(h, "cuStreamDestroy_v2");
  *(void **)&cu.StreamQuery = dlsym(h, "cuStreamQuery");
  *(void **)&cu.StreamSynchronize = dlsym(h, "cuStreamSynchronize");
  return cu.PrimaryCtxGetState && cu.PrimaryCtxRetain && cu.PrimaryCtxRelease && cu.CtxCreate && cu.CtxDestroy &&
         cu.CtxGetCurrent && cu.CtxSetCurrent && cu.StreamCreate && cu.StreamDestroy && cu.StreamQuery &&
         cu.StreamSynchronize;
}

static int32_t devices;

static int context_active(int device) {
  unsigned flags = 0;
  int active = -1;
  if (cu.PrimaryCtxGetState(device, &flags, &active) != 0) return -1;
  return active;
}

/* Runs first: counting devices (done by main) made no context anywhere. */
static void test_counting_devices_makes_no_context(void) {
  int d;
  for (d = 0; d < devices; d++) CHECK(context_active(d) == 0);
}

/* Memory on device 0 makes device 0's context, and only that one. */
static void test_first_use_makes_that_devices_context_only(void) {
  int64_t shape[1] = {16};
  dlb_tensor *t = NULL;
  int d;
  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 1, shape, &t), DLB_OK, "");
  CHECK(context_active(0) == 1);
  for (d = 1; d < devices; d++) CHECK(context_active(d) == 0);
  dlb_tensor_free(t);
}

static cu_ctx current(void) {
  cu_ctx now = (cu_ctx)1;
  CHECK(cu.CtxGetCurrent(&now) == 0);
  return now;
}

/* A caller's own (non-primary) context stays current through successes
 * and failures; a stream of that context can take part in handoffs and
 * in ordering a free; no current context stays none. */
static void test_callers_context_is_restored_and_its_streams_work(void) {
  int64_t shape[1] = {1 << 16};
  DLDevice missing = {kDLCUDA, 4096};
  dlb_tensor *d = NULL, *back = NULL, *out = NULL;
  cu_ctx own = NULL;
  cu_stream s = NULL;
  CHECK(cu.CtxCreate(&own, 0, 0) == 0); /* current from here */
  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 1, shape, &d), DLB_OK, "");
  CHECK(current() == own);
  CHECK(dlb_tensor_new(missing, F32, 1, shape, &out) != DLB_OK);
  CHECK(current() == own);
  CHECK_STATUS(dlb_tensor_copy(d, CPU, &back), DLB_OK, "");
  CHECK(current() == own);
  CHECK_STATUS(dlb_tensor_copy(back, missing, &out), DLB_ERR_UNSUPPORTED_DEVICE, "4096");
  CHECK(current() == own);
  CHECK(cu.StreamCreate(&s, 1 /* non-blocking */) == 0);
  CHECK_STATUS(dlb_cuda_stream_wait(0, 1, (uint64_t)(uintptr_t)s), DLB_OK, ""); /* event in s's context */
  CHECK_STATUS(dlb_cuda_stream_wait(0, (uint64_t)(uintptr_t)s, 1), DLB_OK, "");
  CHECK_STATUS(dlb_tensor_record_stream(d, (uint64_t)(uintptr_t)s), DLB_OK, "");
  CHECK_STATUS(dlb_tensor_record_stream(back, (uint64_t)(uintptr_t)s), DLB_OK, ""); /* host: nothing to do */
  dlb_tensor_free(d); /* ordered after s's work, no wait */
  CHECK(current() == own);
  CHECK(cu.StreamSynchronize(s) == 0 && cu.StreamDestroy(s) == 0);
  CHECK(cu.CtxSetCurrent(NULL) == 0);
  CHECK_STATUS(dlb_tensor_copy(back, CUDA0, &d), DLB_OK, "");
  CHECK(current() == NULL);
  dlb_tensor_free(d);
  dlb_tensor_free(back);
  CHECK(cu.CtxDestroy(own) == 0);
}

/* Copies documented as synchronous leave nothing queued on the legacy
 * stream: pageable host to device under the staging size, device to
 * device on one device, device to host. */
static void test_copies_are_synchronous(void) {
  dlb_tensor *h = iota(1024, 256), *d = NULL, *d2 = NULL, *back = NULL;
  cu_ctx primary = NULL, before = current();
  int i, same = 1;
  CHECK(cu.PrimaryCtxRetain(&primary, 0) == 0);
  CHECK_STATUS(dlb_tensor_copy(h, CUDA0, &d), DLB_OK, "");
  CHECK(cu.CtxSetCurrent(primary) == 0 && cu.StreamQuery((cu_stream)1) == 0 && cu.CtxSetCurrent(before) == 0);
  CHECK_STATUS(dlb_tensor_copy(d, CUDA0, &d2), DLB_OK, "");
  CHECK(cu.CtxSetCurrent(primary) == 0 && cu.StreamQuery((cu_stream)1) == 0 && cu.CtxSetCurrent(before) == 0);
  CHECK_STATUS(dlb_tensor_copy(d2, CPU, &back), DLB_OK, "");
  for (i = 0; i < 1024 * 256; i++) same &= host_data(back)[i] == (float)i;
  CHECK(same);
  CHECK(cu.PrimaryCtxRelease(0) == 0);
  dlb_tensor_free(h);
  dlb_tensor_free(d);
  dlb_tensor_free(d2);
  dlb_tensor_free(back);
}

/* A child forked after CUDA was initialised gets a clean error from every
 * CUDA call, and freeing inherited CUDA tensors touches nothing. */
static void test_forked_child_fails_cleanly(void) {
  int64_t shape[1] = {1024};
  dlb_tensor *inherited = NULL, *dev = NULL;
  int status = -1;
  pid_t pid;
  CHECK_STATUS(dlb_tensor_new(PINNED, F32, 1, shape, &inherited), DLB_OK, "");
  CHECK_STATUS(dlb_tensor_new(CUDA0, F32, 1, shape, &dev), DLB_OK, "");
  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    dlb_tensor *p = NULL;
    int32_t n = -7;
    int ok = dlb_tensor_new(PINNED, F32, 1, shape, &p) == DLB_ERR_CUDA_UNAVAILABLE && p == NULL &&
             strstr(dlb_last_error_message(), "fork") != NULL;
    ok = ok && dlb_cuda_device_count(&n) == DLB_ERR_CUDA_UNAVAILABLE && n == -7;
    dlb_tensor_free(inherited);
    dlb_tensor_free(dev);
    _exit(ok ? 0 : 1);
  }
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  dlb_tensor_free(inherited); /* the parent's are still fine */
  dlb_tensor_free(dev);
}

#define TESTS 12

int main(void) {
  dlb_status s = dlb_cuda_device_count(&devices);
  if (s != DLB_OK || devices == 0 || !load_driver()) {
    printf("c_tests/test_cuda: 0 passed, 0 failed, %d skipped (no CUDA device here: %s; run `make test-gpu` on a GPU "
           "machine)\n",
           TESTS, s != DLB_OK ? dlb_last_error_message() : devices == 0 ? "0 devices" : "libcuda.so.1 lacks a symbol");
    return 0;
  }
  RUN(test_counting_devices_makes_no_context);
  RUN(test_first_use_makes_that_devices_context_only);
  RUN(test_new_on_device_and_pinned);
  RUN(test_round_trips_in_every_direction);
  RUN(test_strided_device_sources);
  RUN(test_dlpack_export_import_of_device_tensors);
  RUN(test_zero_size_device_tensors);
  RUN(test_bad_devices_and_streams);
  RUN(test_freed_memory_is_reused_then_given_back);
  RUN(test_callers_context_is_restored_and_its_streams_work);
  RUN(test_copies_are_synchronous);
  RUN(test_forked_child_fails_cleanly);
  CHECK(dlb_live_tensor_count() == 0);
  if (checks_failed_in_test) tests_failed++;
  printf("c_tests/test_cuda (%d device(s)): %d passed, %d failed\n", devices, tests_passed, tests_failed);
  return tests_failed != 0;
}
