/* A C library that consumes DLPack tensors: it knows nothing of dlbridge or
 * Python, only the DLPack ABI (here through dlbridge.h's DLPack section,
 * identical to dlpack/dlpack.h). Built as a shared library for demo.py. */
#include <dlbridge.h>
#include <stdio.h>

/* Adds `delta` to every element of a float32 tensor (unless it is
 * read-only), prints what it sees, releases the tensor, returns the sum. */
double c_consumer_add(DLManagedTensorVersioned *mt, float delta) {
  const DLTensor *t = &mt->dl_tensor;
  int writable = !(mt->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  int64_t n = 1, i, k;
  double sum = 0;
  for (k = 0; k < t->ndim; k++) n *= t->shape[k];
  printf("  C consumer: DLPack %u.%u tensor at %p, %lld elements, %s\n", mt->version.major,
         mt->version.minor, t->data, (long long)n, writable ? "writable" : "READ-ONLY (not writing)");
  for (i = 0; i < n; i++) {
    /* row-major index -> strided address */
    int64_t rest = i, offset = 0;
    float *x;
    for (k = t->ndim - 1; k >= 0; k--) {
      offset += (rest % t->shape[k]) * t->strides[k];
      rest /= t->shape[k];
    }
    x = (float *)t->data + offset;
    if (writable) *x += delta;
    sum += *x;
  }
  if (mt->deleter) mt->deleter(mt);
  return sum;
}
