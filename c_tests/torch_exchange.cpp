// C++ exchange between libtorch (the library inside the PyTorch wheel) and
// dlbridge through DLManagedTensorVersioned, both ways: zero copy proven by
// pointers and by writes seen on the other side, each deleter run exactly
// once, no dlbridge tensor left alive. Built and run by .ci/test_torch_cpp.sh.
// libtorch 2.15 needs C++20 (ATen.h refuses older standards); dlbridge.h itself
// is checked as C99 and C++17 by c_tests/header_twice.c.
#include <ATen/ATen.h>
#include <ATen/DLConvertor.h>

#include <cstdio>

#include "dlbridge.h"

static int failures = 0;
static int passed = 0;
#define EXPECT(cond)                                                         \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                            \
    }                                                                        \
  } while (0)

// torch's deleter, wrapped so that its calls are counted.
static void (*torch_deleter)(DLManagedTensorVersioned*) = nullptr;
static int torch_deletes = 0;
static void counting_deleter(DLManagedTensorVersioned* self) {
  torch_deletes++;
  torch_deleter(self);
}

static void torch_to_dlbridge() {
  at::Tensor x = at::arange(12, at::kFloat).reshape({3, 4});
  DLManagedTensorVersioned* mt = at::toDLPackVersioned(x);
  torch_deleter = mt->deleter;
  mt->deleter = counting_deleter;
  dlb_tensor* t = nullptr;
  EXPECT(dlb_tensor_from_dlpack_versioned(mt, &t) == DLB_OK);
  const DLTensor* dl = dlb_tensor_dltensor(t);
  EXPECT(dl->data == x.data_ptr());  // zero copy
  EXPECT(dl->ndim == 2 && dl->shape[0] == 3 && dl->shape[1] == 4);
  static_cast<float*>(dl->data)[5] = -1.0f;  // a write through dlbridge...
  EXPECT(x[1][1].item<float>() == -1.0f);    // ...is seen by torch

  // dlbridge's own export of the imported tensor still points at torch's memory.
  DLManagedTensorVersioned* again = nullptr;
  EXPECT(dlb_tensor_to_dlpack_versioned(t, &again) == DLB_OK);
  EXPECT(again->dl_tensor.data == x.data_ptr());
  dlb_tensor_free(t);
  EXPECT(torch_deletes == 0);  // the export still holds torch's tensor
  again->deleter(again);
  EXPECT(torch_deletes == 1);  // exactly once, when the last holder went
  EXPECT(dlb_live_tensor_count() == 0);
}

static void dlbridge_to_torch() {
  const int64_t shape[2] = {2, 3};
  DLDataType f32{kDLFloat, 32, 1};
  DLDevice cpu{kDLCPU, 0};
  dlb_tensor* t = nullptr;
  EXPECT(dlb_tensor_new(cpu, f32, 2, shape, &t) == DLB_OK);
  float* data = static_cast<float*>(dlb_tensor_dltensor(t)->data);
  for (int i = 0; i < 6; i++) data[i] = static_cast<float>(i);
  DLManagedTensorVersioned* mt = nullptr;
  EXPECT(dlb_tensor_to_dlpack_versioned(t, &mt) == DLB_OK);
  dlb_tensor_free(t);  // the export keeps the memory
  EXPECT(dlb_live_tensor_count() == 1);
  {
    at::Tensor y = at::fromDLPackVersioned(mt);
    EXPECT(y.data_ptr() == data);  // zero copy
    EXPECT(y.sizes() == at::IntArrayRef({2, 3}) && y.scalar_type() == at::kFloat);
    EXPECT(y.sum().item<float>() == 15.0f);
    y.mul_(2);  // torch writes into dlbridge's memory
    EXPECT(data[5] == 10.0f);
    at::Tensor view = y.t();  // views share the storage (and the export)
    y.reset();
    EXPECT(dlb_live_tensor_count() == 1);
    EXPECT(view[2][1].item<float>() == 10.0f);
  }
  EXPECT(dlb_live_tensor_count() == 0);  // our deleter ran when torch let go
}

static void strided_and_typed_views() {
  at::Tensor base = at::arange(24, at::kDouble).reshape({4, 6});
  at::Tensor view = base.t().slice(0, 1, 6, 2);  // non-contiguous, offset
  dlb_tensor* t = nullptr;
  EXPECT(dlb_tensor_from_dlpack_versioned(at::toDLPackVersioned(view), &t) == DLB_OK);
  EXPECT(!dlb_tensor_is_contiguous(t));
  dlb_tensor* compact = nullptr;
  EXPECT(dlb_tensor_copy(t, DLDevice{kDLCPU, 0}, &compact) == DLB_OK);
  DLManagedTensorVersioned* out = nullptr;
  EXPECT(dlb_tensor_to_dlpack_versioned(compact, &out) == DLB_OK);
  at::Tensor back = at::fromDLPackVersioned(out);
  EXPECT(back.is_contiguous() && at::equal(back, view));
  dlb_tensor_free(t);
  dlb_tensor_free(compact);
  back.reset();
  EXPECT(dlb_live_tensor_count() == 0);
}

#define RUN(test)                                   \
  do {                                              \
    int before = failures;                          \
    test();                                         \
    if (failures == before) {                       \
      passed++;                                     \
      std::printf("ok     %s\n", #test);            \
    } else {                                        \
      std::printf("FAILED %s\n", #test);            \
    }                                               \
  } while (0)

int main() {
  RUN(torch_to_dlbridge);
  RUN(dlbridge_to_torch);
  RUN(strided_and_typed_views);
  int failed = 3 - passed;
  std::printf("c_tests/torch_exchange (libtorch %s): %d passed, %d failed\n", LIBTORCH_VERSION, passed, failed);
  return failed != 0;
}
