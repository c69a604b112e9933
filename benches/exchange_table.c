/*
 * Per-tensor cost of DLPack 1.3's C exchange API, measured in C (no Python
 * call in the loop): for a tensor object x, N times
 *   managed_tensor_from_py_object_no_sync(x) -> managed_tensor_to_py_object_no_sync -> Py_DECREF,
 * i.e. an export out of x's framework and an import back into it, and
 *   dltensor_from_py_object_no_sync(x) (a kernel launcher's argument read).
 * Built and driven by benches/exchange_table.py (a CPython extension).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#include <dlpack/dlpack.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static const DLPackExchangeAPI *table_of(PyObject *x) {
  PyObject *capsule = PyObject_GetAttrString((PyObject *)Py_TYPE(x), "__dlpack_c_exchange_api__");
  if (capsule == NULL) return NULL;
  const DLPackExchangeAPI *api = PyCapsule_GetPointer(capsule, "dlpack_exchange_api");
  Py_DECREF(capsule);
  return api;
}

/* Both entry points take (x, n): x's table, or NULL with an exception set. */
static const DLPackExchangeAPI *parse(PyObject *args, PyObject **x, long *n) {
  if (!PyArg_ParseTuple(args, "Ol", x, n)) return NULL;
  return table_of(*x);
}

/* round_trip(x, n) -> ns per export + import through x's table */
static PyObject *round_trip(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *x;
  long n;
  const DLPackExchangeAPI *api = parse(args, &x, &n);
  if (api == NULL) return NULL;
  double start = now_ns();
  for (long i = 0; i < n; i++) {
    DLManagedTensorVersioned *mt;
    void *back;
    if (api->managed_tensor_from_py_object_no_sync(x, &mt) != 0) return NULL;
    if (api->managed_tensor_to_py_object_no_sync(mt, &back) != 0) return NULL;
    Py_DECREF((PyObject *)back);
  }
  return PyFloat_FromDouble((now_ns() - start) / n);
}

/* argument(x, n) -> ns per dltensor_from_py_object_no_sync */
static PyObject *argument(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *x;
  long n;
  const DLPackExchangeAPI *api = parse(args, &x, &n);
  if (api == NULL) return NULL;
  if (api->dltensor_from_py_object_no_sync == NULL) Py_RETURN_NONE;
  volatile int64_t sink = 0;
  double start = now_ns();
  for (long i = 0; i < n; i++) {
    DLTensor t;
    if (api->dltensor_from_py_object_no_sync(x, &t) != 0) return NULL;
    sink += t.ndim;
  }
  (void)sink;
  return PyFloat_FromDouble((now_ns() - start) / n);
}

static PyMethodDef methods[] = {
    {"round_trip", round_trip, METH_VARARGS, NULL},
    {"argument", argument, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "exchange_table", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_exchange_table(void) { return PyModule_Create(&module); }
