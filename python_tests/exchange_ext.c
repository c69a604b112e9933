/*
 * A CPython extension that consumes DLPack 1.3's C exchange API the way a
 * kernel launcher does (built and imported by test_exchange_api.py): it
 * finds type(x).__dlpack_c_exchange_api__, checks the table, and drives
 * every function of it, never calling __dlpack__.
 *
 *   launch(x)           -> (sum of x's float32 elements, its ndim, stream or None)
 *                          through dltensor_from_py_object_no_sync and
 *                          current_work_stream, as a kernel launch reads its
 *                          arguments (no allocation, no ownership)
 *   keep(x)             -> a new tensor of the producer's type made from a
 *                          managed export of x (managed_tensor_from_py_object
 *                          then managed_tensor_to_py_object)
 *   release(x)          -> None: takes a managed export and calls its deleter
 *   allocate(x, shape)  -> a new float32 tensor of the producer's type from
 *                          its allocator, filled with 0, 1, 2, ...
 *   allocate_bad(x)     -> raises what the allocator reports through SetError
 *                          (a prototype with an unknown dtype)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlpack/dlpack.h>

static const DLPackExchangeAPI *table_of(PyObject *x) {
  PyObject *capsule = PyObject_GetAttrString((PyObject *)Py_TYPE(x), "__dlpack_c_exchange_api__");
  if (capsule == NULL) return NULL;
  const DLPackExchangeAPI *api = PyCapsule_GetPointer(capsule, "dlpack_exchange_api");
  Py_DECREF(capsule);
  if (api == NULL) return NULL;
  if (api->header.version.major != DLPACK_MAJOR_VERSION) {
    PyErr_SetString(PyExc_RuntimeError, "exchange API of another major version");
    return NULL;
  }
  if (!api->managed_tensor_allocator || !api->managed_tensor_from_py_object_no_sync ||
      !api->managed_tensor_to_py_object_no_sync || !api->current_work_stream) {
    PyErr_SetString(PyExc_RuntimeError, "a required function of the exchange API is NULL");
    return NULL;
  }
  return api;
}

static PyObject *launch(PyObject *self, PyObject *x) {
  (void)self;
  const DLPackExchangeAPI *api = table_of(x);
  if (api == NULL) return NULL;
  if (api->dltensor_from_py_object_no_sync == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "no dltensor_from_py_object_no_sync");
    return NULL;
  }
  DLTensor t; /* on the stack: the producer fills it, allocates nothing */
  if (api->dltensor_from_py_object_no_sync(x, &t) != 0) return NULL;
  void *stream = (void *)0xdead;
  if (api->current_work_stream(t.device.device_type, t.device.device_id, &stream) != 0) return NULL;
  if (t.dtype.code != kDLFloat || t.dtype.bits != 32 || t.dtype.lanes != 1 || t.device.device_type != kDLCPU) {
    PyErr_SetString(PyExc_TypeError, "launch() takes float32 CPU tensors");
    return NULL;
  }
  /* The "kernel": a strided sum over every element. */
  int64_t n = 1;
  for (int i = 0; i < t.ndim; i++) n *= t.shape[i];
  double sum = 0;
  const float *base = (const float *)((const char *)t.data + t.byte_offset);
  for (int64_t flat = 0; flat < n; flat++) {
    int64_t rest = flat, offset = 0, stride = 1;
    for (int i = t.ndim - 1; i >= 0; i--) {
      int64_t index = rest % t.shape[i];
      rest /= t.shape[i];
      offset += index * (t.strides ? t.strides[i] : stride);
      stride *= t.shape[i];
    }
    sum += base[offset];
  }
  if (stream == NULL) return Py_BuildValue("(diO)", sum, t.ndim, Py_None);
  return Py_BuildValue("(diK)", sum, t.ndim, (unsigned long long)(uintptr_t)stream);
}

static PyObject *keep(PyObject *self, PyObject *x) {
  (void)self;
  const DLPackExchangeAPI *api = table_of(x);
  if (api == NULL) return NULL;
  DLManagedTensorVersioned *mt = NULL;
  if (api->managed_tensor_from_py_object_no_sync(x, &mt) != 0) return NULL;
  void *out = NULL;
  if (api->managed_tensor_to_py_object_no_sync(mt, &out) != 0) return NULL; /* mt is stolen */
  return (PyObject *)out;
}

static PyObject *release(PyObject *self, PyObject *x) {
  (void)self;
  const DLPackExchangeAPI *api = table_of(x);
  if (api == NULL) return NULL;
  DLManagedTensorVersioned *mt = NULL;
  if (api->managed_tensor_from_py_object_no_sync(x, &mt) != 0) return NULL;
  if (mt->version.major != DLPACK_MAJOR_VERSION) {
    PyErr_SetString(PyExc_RuntimeError, "managed tensor of another major version");
    return NULL;
  }
  if (mt->deleter) mt->deleter(mt);
  Py_RETURN_NONE;
}

struct error { char kind[64]; char message[256]; int calls; };

static void set_error(void *ctx, const char *kind, const char *message) {
  struct error *e = ctx;
  snprintf(e->kind, sizeof e->kind, "%s", kind);
  snprintf(e->message, sizeof e->message, "%s", message);
  e->calls++;
}

static PyObject *allocate_like(PyObject *x, DLDataType dtype, int64_t *shape, int ndim) {
  const DLPackExchangeAPI *api = table_of(x);
  if (api == NULL) return NULL;
  DLTensor proto = {0};
  proto.device.device_type = kDLCPU;
  proto.ndim = ndim;
  proto.dtype = dtype;
  proto.shape = shape;
  DLManagedTensorVersioned *mt = NULL;
  struct error e = {{0}, {0}, 0};
  if (api->managed_tensor_allocator(&proto, &mt, &e, set_error) != 0) {
    if (e.calls != 1) {
      PyErr_Format(PyExc_RuntimeError, "SetError was called %d times", e.calls);
      return NULL;
    }
    PyObject *kind = PyDict_GetItemString(PyEval_GetBuiltins(), e.kind);
    PyErr_Format(kind ? kind : PyExc_RuntimeError, "%s: %s", e.kind, e.message);
    return NULL;
  }
  if (mt->dl_tensor.dtype.code == kDLFloat && mt->dl_tensor.dtype.bits == 32) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *data = (float *)((char *)mt->dl_tensor.data + mt->dl_tensor.byte_offset);
    for (int64_t i = 0; i < n; i++) data[i] = (float)i;
  }
  void *out = NULL;
  if (api->managed_tensor_to_py_object_no_sync(mt, &out) != 0) return NULL;
  return (PyObject *)out;
}

static PyObject *allocate(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *x;
  long long rows, cols;
  if (!PyArg_ParseTuple(args, "O(LL)", &x, &rows, &cols)) return NULL;
  int64_t shape[2] = {rows, cols};
  DLDataType f32 = {kDLFloat, 32, 1};
  return allocate_like(x, f32, shape, 2);
}

static PyObject *allocate_bad(PyObject *self, PyObject *x) {
  (void)self;
  int64_t shape[1] = {4};
  DLDataType bad = {kDLFloat, 31, 1};
  return allocate_like(x, bad, shape, 1);
}

static PyMethodDef methods[] = {
    {"launch", launch, METH_O, NULL},
    {"keep", keep, METH_O, NULL},
    {"release", release, METH_O, NULL},
    {"allocate", allocate, METH_VARARGS, NULL},
    {"allocate_bad", allocate_bad, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "exchange_ext", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_exchange_ext(void) { return PyModule_Create(&module); }
