/* A CPython extension includes Python.h and dlbridge.h together: the public
 * header must not define anything of Python's (it once defined METH_NOARGS
 * and METH_FASTCALL_KEYWORDS) nor declare the package's private entry points.
 * Compiled (not run) as C99 and C++17 with -Werror. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "dlbridge.h"

int dlbridge_and_python_together(void);
int dlbridge_and_python_together(void) {
  return METH_NOARGS + (int)(dlb_live_tensor_count() == 0);
}
