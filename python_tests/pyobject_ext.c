/*
 * A CPython extension written in C against dlbridge's C API only (built and
 * imported by test_c_extension.py): dlb_tensor_from_pyobject takes whatever
 * tensor-like object Python passes, dlb_tensor_to_pyobject hands results
 * back. It links the library the dlbridge package loads.
 *
 *   total(x)        -> the sum of x's float64 elements, any layout, any
 *                      producer (NumPy, PyTorch, JAX, buffers, ...)
 *   doubled(x)      -> a new dlbridge.Tensor, 2 * x (float64), made with
 *                      dlb_tensor_new and returned with dlb_tensor_to_pyobject
 *   share(x, copy)  -> x as a dlbridge.Tensor (DLB_PY_ALLOW_COPY when copy)
 *   status(x)       -> the dlb_status dlb_tensor_from_pyobject returns for x
 *                      and whether a Python exception came with it (cleared)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlbridge.h>

static int read_f64(PyObject *x, dlb_tensor **h, const DLTensor **t) {
  if (dlb_tensor_from_pyobject(x, 0, h) != DLB_OK) return -1; /* the exception is set */
  *t = dlb_tensor_dltensor(*h);
  if ((*t)->dtype.code != kDLFloat || (*t)->dtype.bits != 64 || (*t)->device.device_type != kDLCPU) {
    dlb_tensor_free(*h);
    PyErr_SetString(PyExc_TypeError, "float64 CPU tensors only");
    return -1;
  }
  return 0;
}

/* Calls f(offset of element i in elements) for every element, row-major. */
static int64_t element_offset(const DLTensor *t, int64_t flat) {
  int64_t offset = 0, stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    int64_t index = flat % t->shape[i];
    flat /= t->shape[i];
    offset += index * (t->strides ? t->strides[i] : stride);
    stride *= t->shape[i];
  }
  return offset;
}

static int64_t count(const DLTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

static PyObject *total(PyObject *self, PyObject *x) {
  (void)self;
  dlb_tensor *h;
  const DLTensor *t;
  if (read_f64(x, &h, &t) != 0) return NULL;
  const double *base = (const double *)((const char *)t->data + t->byte_offset);
  double sum = 0;
  Py_BEGIN_ALLOW_THREADS /* the handle keeps the memory: no GIL needed to read it */
  for (int64_t i = 0; i < count(t); i++) sum += base[element_offset(t, i)];
  Py_END_ALLOW_THREADS
  dlb_tensor_free(h);
  return PyFloat_FromDouble(sum);
}

static PyObject *doubled(PyObject *self, PyObject *x) {
  (void)self;
  dlb_tensor *h, *out;
  const DLTensor *t;
  if (read_f64(x, &h, &t) != 0) return NULL;
  DLDevice cpu = {kDLCPU, 0};
  DLDataType f64 = {kDLFloat, 64, 1};
  if (dlb_tensor_new(cpu, f64, t->ndim, t->shape, &out) != DLB_OK) {
    PyErr_SetString(PyExc_MemoryError, dlb_last_error_message());
    dlb_tensor_free(h);
    return NULL;
  }
  const double *src = (const double *)((const char *)t->data + t->byte_offset);
  double *dst = dlb_tensor_dltensor(out)->data;
  for (int64_t i = 0; i < count(t); i++) dst[i] = 2 * src[element_offset(t, i)];
  dlb_tensor_free(h);
  void *result = NULL;
  dlb_status s = dlb_tensor_to_pyobject(out, &result);
  dlb_tensor_free(out); /* the Python object holds its own reference */
  return s == DLB_OK ? (PyObject *)result : NULL;
}

static PyObject *share(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *x;
  int copy;
  if (!PyArg_ParseTuple(args, "Op", &x, &copy)) return NULL;
  dlb_tensor *h;
  if (dlb_tensor_from_pyobject(x, copy ? DLB_PY_ALLOW_COPY : 0, &h) != DLB_OK) return NULL;
  void *result = NULL;
  dlb_status s = dlb_tensor_to_pyobject(h, &result);
  dlb_tensor_free(h);
  return s == DLB_OK ? (PyObject *)result : NULL;
}

static PyObject *status(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *x;
  unsigned int flags = 0;
  if (!PyArg_ParseTuple(args, "O|I", &x, &flags)) return NULL;
  dlb_tensor *h = (dlb_tensor *)0x1234;
  dlb_status s = dlb_tensor_from_pyobject(x == Py_None ? NULL : x, flags, &h);
  int raised = PyErr_Occurred() != NULL;
  PyErr_Clear();
  if (s == DLB_OK) dlb_tensor_free(h);
  else if (h != (dlb_tensor *)0x1234) return PyErr_Format(PyExc_AssertionError, "out written on failure");
  return Py_BuildValue("(sis)", dlb_status_name(s), raised, s == DLB_OK ? "" : dlb_last_error_message());
}

static PyMethodDef methods[] = {
    {"total", total, METH_O, NULL},
    {"doubled", doubled, METH_O, NULL},
    {"share", share, METH_VARARGS, NULL},
    {"status", status, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pyobject_ext", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_pyobject_ext(void) { return PyModule_Create(&module); }
