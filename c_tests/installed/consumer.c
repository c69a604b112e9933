/* Built against an installed dlbridge (pkg-config or CMake, shared or
 * static): the header's version macros match the library and the crate
 * version the build passes in (EXPECTED_VERSION), and a DLPack round trip
 * works. Prints "<name>: 1 passed, 0 failed". */
#include <dlbridge.h>

#include <stdio.h>
#include <string.h>

#define STR2(x) #x
#define STR(x) STR2(x)

int main(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "installed consumer";
  int64_t shape[1] = {8};
  DLDataType f32 = {kDLFloat, 32, 1};
  DLDevice cpu = {kDLCPU, 0};
  dlb_tensor *t = NULL, *back = NULL;
  DLManagedTensorVersioned *mt = NULL;
  char numbers[32];
  int ok = 1;

  snprintf(numbers, sizeof numbers, "%d.%d.%d", DLBRIDGE_VERSION_MAJOR, DLBRIDGE_VERSION_MINOR,
           DLBRIDGE_VERSION_PATCH);
  ok &= strcmp(DLBRIDGE_VERSION, EXPECTED_VERSION) == 0; /* header == Cargo.toml */
  ok &= strcmp(numbers, EXPECTED_VERSION) == 0;          /* the numeric macros agree */
  ok &= strcmp(dlb_version(), DLBRIDGE_VERSION) == 0;    /* library == header */
  ok &= dlb_tensor_new(cpu, f32, 1, shape, &t) == DLB_OK;
  ok &= dlb_tensor_to_dlpack_versioned(t, &mt) == DLB_OK;
  ok &= dlb_tensor_from_dlpack_versioned(mt, &back) == DLB_OK;
  ok &= dlb_tensor_dltensor(back)->data == dlb_tensor_dltensor(t)->data;
  dlb_tensor_free(t);
  dlb_tensor_free(back);
  ok &= dlb_live_tensor_count() == 0;
  if (!ok) fprintf(stderr, "header %s, library %s, expected %s\n", DLBRIDGE_VERSION, dlb_version(), EXPECTED_VERSION);
  printf("%s (dlbridge %s): %d passed, %d failed\n", name, dlb_version(), ok, !ok);
  return !ok;
}
