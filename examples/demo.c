/* dlbridge demo: a C application shares one buffer, zero copy, with a
 * "framework" that knows only the DLPack ABI, and with NumPy-style array
 * interface consumers. Every address printed is the same memory.
 *
 *   make demo
 */
#include <dlbridge.h>

#include <stdio.h>
#include <stdlib.h>

/* ---- a consumer framework: it sees nothing but DLPack --------------------- */

/* Scales every element in place (refusing read-only tensors), returns the
 * sum, and releases the tensor as the DLPack contract says: exactly once. */
static double framework_scale(DLManagedTensorVersioned *mt, float factor) {
  const DLTensor *t = &mt->dl_tensor;
  double sum = 0;
  int64_t i, j;
  int writable = !(mt->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  printf("  framework got %p: %lldx%lld float32, strides (%lld, %lld), %s\n", t->data,
         (long long)t->shape[0], (long long)t->shape[1], (long long)t->strides[0],
         (long long)t->strides[1], writable ? "writable" : "READ-ONLY: will not write");
  for (i = 0; i < t->shape[0]; i++) {
    for (j = 0; j < t->shape[1]; j++) {
      float *x = (float *)t->data + i * t->strides[0] + j * t->strides[1];
      if (writable) *x *= factor;
      sum += *x;
    }
  }
  if (mt->deleter) mt->deleter(mt);
  return sum;
}

/* ---- the application ---------------------------------------------------- */

static void free_buffer(void *ctx) {
  printf("  release callback: freeing the application's buffer %p (once)\n", ctx);
  free(ctx);
}

static int must(dlb_status s, const char *what) {
  if (s != DLB_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, dlb_status_name(s), dlb_last_error_message());
    exit(1);
  }
  return 0;
}

int main(void) {
  const int64_t shape[2] = {2, 3};
  const int64_t transposed_shape[2] = {3, 2};
  const int64_t transposed_strides[2] = {1, 3};
  const DLDevice cpu = {kDLCPU, 0};
  const DLDataType f32 = {kDLFloat, 32, 1};
  float *buffer = (float *)malloc(6 * sizeof(float));
  dlb_tensor *t = NULL, *tt = NULL, *ro = NULL;
  DLManagedTensorVersioned *mt = NULL;
  DLManagedTensor *legacy = NULL;
  dlb_array_interface ai;
  dlb_status s;
  int i;

  for (i = 0; i < 6; i++) buffer[i] = (float)i;
  printf("dlbridge %s: application buffer at %p = [0 1 2 3 4 5]\n", dlb_version(), (void *)buffer);

  /* 1. Wrap the buffer; dlbridge calls free_buffer when the last user is done. */
  must(dlb_tensor_wrap(buffer, cpu, f32, 2, shape, NULL, 0, 0, free_buffer, buffer, &t), "wrap");

  /* 2. Hand it to the framework through DLPack: zero copy, it writes in place. */
  printf("1) export as DLManagedTensorVersioned, framework doubles it in place\n");
  must(dlb_tensor_to_dlpack_versioned(t, &mt), "export");
  printf("  sum seen by framework: %.1f\n", framework_scale(mt, 2.0f));
  printf("  application now reads buffer = [%g %g %g %g %g %g]  (same memory)\n", buffer[0],
         buffer[1], buffer[2], buffer[3], buffer[4], buffer[5]);

  /* 3. A transposed view of the same memory: strides travel, no copy. */
  printf("2) transposed view (strides in elements), still zero copy\n");
  must(dlb_tensor_wrap(buffer, cpu, f32, 2, transposed_shape, transposed_strides, 0, 0, NULL, NULL, &tt),
       "wrap transposed");
  must(dlb_tensor_to_dlpack_versioned(tt, &mt), "export transposed");
  printf("  sum seen by framework: %.1f\n", framework_scale(mt, 1.0f));

  /* 4. Read-only travels as a flag; the legacy ABI cannot carry it, so it is refused. */
  printf("3) read-only tensor\n");
  must(dlb_tensor_wrap(buffer, cpu, f32, 2, shape, NULL, 0, DLPACK_FLAG_BITMASK_READ_ONLY, NULL, NULL, &ro),
       "wrap read-only");
  s = dlb_tensor_to_dlpack(ro, &legacy);
  printf("  legacy export: %s (%s)\n", dlb_status_name(s), dlb_last_error_message());
  must(dlb_tensor_to_dlpack_versioned(ro, &mt), "export read-only");
  framework_scale(mt, 100.0f);
  printf("  buffer unchanged: [%g %g %g %g %g %g]\n", buffer[0], buffer[1], buffer[2], buffer[3],
         buffer[4], buffer[5]);

  /* 5. The same memory as NumPy's __array_interface__ fields. */
  must(dlb_tensor_array_interface(tt, &ai), "array interface");
  printf("4) array interface of the transposed view: typestr %s, shape (%lld, %lld), byte strides (%lld, %lld), "
         "data %p, version %d\n",
         ai.typestr, (long long)ai.shape[0], (long long)ai.shape[1], (long long)ai.strides[0],
         (long long)ai.strides[1], ai.data, ai.version);

  /* 6. Errors are statuses with messages, never crashes. */
  {
    const int64_t bad[2] = {2, -3};
    dlb_tensor *never = NULL;
    s = dlb_tensor_wrap(buffer, cpu, f32, 2, bad, NULL, 0, 0, NULL, NULL, &never);
    printf("5) bad input: %s: %s\n", dlb_status_name(s), dlb_last_error_message());
  }

  dlb_tensor_free(ro);
  dlb_tensor_free(tt);
  printf("6) freeing the last handle\n");
  dlb_tensor_free(t);
  printf("live tensors at exit: %zu\n", dlb_live_tensor_count());
  return dlb_live_tensor_count() == 0 ? 0 : 1;
}
