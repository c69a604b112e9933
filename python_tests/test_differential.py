"""Differential test: every framework imports the same source tensor twice,
with its own from_dlpack directly and through dlbridge
(``framework.from_dlpack(dlbridge.from_dlpack(src))``), and the two results
must agree: shape, strides, dtype, data pointer (zero copy exactly when the
direct import is), values and writability. When the direct import raises,
the one through dlbridge must raise too (the exception types are recorded
and printed at the end of the module; they may differ).

Matrix: consumer (NumPy, PyTorch, JAX, TensorFlow) x source producer
(NumPy, PyTorch) x dtype (bool, int8..int64, uint8..uint64, float16..64,
complex64/128, bfloat16) x layout (contiguous, broadcast (stride 0),
negative strides, Fortran order, 0-d, empty, 32-d, read-only, offset (a
contiguous slice), sliced (offset and strided)). PyTorch sources have no
negative strides and no read-only tensors: those two layouts are NumPy
sources only. NumPy cannot DLPack-export bfloat16 (ml_dtypes), so its
bfloat16 sources check that both paths refuse; PyTorch's share it.

TensorFlow 2.20 has no ``from_dlpack(obj)``: its own import is
``tf.experimental.dlpack.from_dlpack(x.__dlpack__())`` (a legacy capsule),
done the same way on both paths. JAX imports under ``jax.enable_x64(True)``
(a context, nothing global changes) so 64-bit types are kept, not narrowed.
"""

from __future__ import annotations

import collections
import ctypes
import importlib

import numpy as np
import pytest

import dlbridge

try:
    import ml_dtypes
except ImportError:  # bfloat16 cases are skipped
    ml_dtypes = None


def _optional(name):
    try:
        return importlib.import_module(name), None
    except Exception as e:  # noqa: BLE001 (a broken install is a skip too)
        return None, f"{name} is not importable here ({type(e).__name__}: {e})"


torch, _NO_TORCH = _optional("torch")
jax, _NO_JAX = _optional("jax")
tf, _NO_TF = _optional("tensorflow")
jnp = importlib.import_module("jax.numpy") if jax is not None else None

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128", "bfloat16"]
LAYOUTS = ["contiguous", "broadcast", "negative", "fortran", "0d", "empty", "32d", "readonly", "offset", "sliced"]
NUMPY_ONLY_LAYOUTS = {"negative", "readonly"}


# -- sources -------------------------------------------------------------


def _np_dtype(name):
    return getattr(ml_dtypes, name) if name == "bfloat16" else np.dtype(name)


def _values(n, name):
    """n distinct-ish values of dtype `name`, in a fresh C-contiguous array."""
    i = np.arange(n)
    if name == "bool":
        return i % 3 == 1
    if name.startswith(("int", "uint")):
        return (i % 101 + 1).astype(name)
    if name.startswith("complex"):
        return (i * 0.5 - 1j * (i + 1)).astype(name)
    return ((i % 97) * 0.5 - 3).astype(np.float32).astype(_np_dtype(name))


def _mk(shape, name):
    return _values(int(np.prod(shape, dtype=np.int64)), name).reshape(shape)


def numpy_source(name, layout):
    if layout == "contiguous":
        return _mk((2, 3, 4), name)
    if layout == "broadcast":
        row = _mk((4,), name)
        return np.lib.stride_tricks.as_strided(row, shape=(3, 4), strides=(0, row.itemsize))  # writable
    if layout == "negative":
        return _mk((3, 4), name)[::-1, ::-2]
    if layout == "fortran":
        return np.asfortranarray(_mk((3, 4), name))
    if layout == "0d":
        return _mk((), name)
    if layout == "empty":
        return _mk((0, 3), name)
    if layout == "32d":
        return _mk((1,) * 30 + (2, 3), name)
    if layout == "readonly":
        a = _mk((2, 3), name)
        a.flags.writeable = False
        return a
    if layout == "offset":
        return _mk((5, 6), name)[2:]
    if layout == "sliced":
        return _mk((5, 6), name)[1:4, 2:5]
    raise AssertionError(layout)


def torch_source(name, layout):
    a = numpy_source(name, layout)
    if name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _source_ptr(src):
    if isinstance(src, np.ndarray):
        return src.__array_interface__["data"][0]
    return src.data_ptr()


# -- consumers: (import, describe) -----------------------------------------


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_pointer.restype = ctypes.c_void_p


def _legacy_capsule_data(capsule):
    """Address of element 0 of a legacy DLPack capsule, read without
    consuming it (its destructor frees it): independent of dlbridge."""
    dl = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    return (dl.data or 0) + dl.byte_offset


def _torch_values(r):
    r = r.detach().cpu()
    if r.dtype == torch.bfloat16:
        return r.view(torch.uint16).numpy().copy().view(ml_dtypes.bfloat16)
    return r.numpy().copy()


def _describe_numpy(r):
    return dict(shape=r.shape, strides=r.strides, dtype=str(r.dtype), ptr=r.__array_interface__["data"][0],
                values=np.array(r, copy=True), writeable=r.flags.writeable, type=type(r).__name__)


def _describe_torch(r):
    return dict(shape=tuple(r.shape), strides=r.stride(), dtype=str(r.dtype), ptr=r.data_ptr(),
                values=_torch_values(r), writeable=None, type=type(r).__name__)


def _describe_jax(r):
    return dict(shape=r.shape, strides=None, dtype=str(r.dtype), ptr=r.unsafe_buffer_pointer() if r.size else None,
                values=np.array(r, copy=True), writeable=None, type=type(r).__name__)


def _describe_tf(r):
    return dict(shape=tuple(r.shape), strides=None, dtype=r.dtype.name,
                ptr=_legacy_capsule_data(tf.experimental.dlpack.to_dlpack(r)) if r.shape.num_elements() else None,
                values=np.array(r.numpy(), copy=True), writeable=None, type=type(r).__name__)


def _import_jax(x):
    with jax.enable_x64(True):
        return jnp.from_dlpack(x)


CONSUMERS = {
    "numpy": (lambda x: np.from_dlpack(x), _describe_numpy, None),
    "torch": (lambda x: torch.from_dlpack(x), _describe_torch, _NO_TORCH),
    "jax": (_import_jax, _describe_jax, _NO_JAX),
    "tensorflow": (lambda x: tf.experimental.dlpack.from_dlpack(x.__dlpack__()), _describe_tf, _NO_TF),
}

# Deliberate differences: (consumer, source, dtype, layout) -> reason; None
# matches any, a frozenset any of its members.
XFAIL: dict = {
    ("numpy", "numpy", frozenset(DTYPES) - {"bfloat16"}, "empty"):
        "dlbridge exports empty tensors with data=NULL (src/tensor.rs View::dltensor), so NumPy allocates "
        "a fresh 1-byte buffer with all-zero strides; directly NumPy keeps the source's pointer and strides",
}


def _xfail_reason(case):
    for key, reason in XFAIL.items():
        if all(k is None or k == c or (isinstance(k, frozenset) and c in k) for k, c in zip(key, case)):
            return reason
    return None


def _cases():
    for consumer, (_, _, missing) in CONSUMERS.items():
        for source in ("numpy", "torch"):
            for dtype in DTYPES:
                for layout in LAYOUTS:
                    if source == "torch" and layout in NUMPY_ONLY_LAYOUTS:
                        continue  # PyTorch has neither (see the module docstring)
                    marks = []
                    if missing:
                        marks.append(pytest.mark.skip(reason=missing))
                    elif source == "torch" and _NO_TORCH:
                        marks.append(pytest.mark.skip(reason=_NO_TORCH))
                    elif dtype == "bfloat16" and ml_dtypes is None:
                        marks.append(pytest.mark.skip(reason="ml_dtypes is not installed: no bfloat16 in NumPy"))
                    reason = _xfail_reason((consumer, source, dtype, layout))
                    if reason:
                        marks.append(pytest.mark.xfail(reason=reason, strict=True))
                    yield pytest.param(consumer, source, dtype, layout, marks=marks,
                                       id=f"{consumer}-from-{source}-{dtype}-{layout}")


# -- the test --------------------------------------------------------------

# (consumer, exception type of the direct import, of the import through dlbridge) -> count
RAISED: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_exceptions(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not RAISED or request.config.option.verbose < 0:
        return  # shown with pytest -v or plain pytest, not -q
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("test_differential: refused on both paths (consumer: direct / through dlbridge x count)")
        for (consumer, direct, via), n in sorted(RAISED.items()):
            mark = "" if direct == via else "   <- types differ"
            reporter.write_line(f"  {consumer:10s} {direct} / {via} x {n}{mark}")


def _attempt(fn):
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 (any refusal is an outcome to compare)
        return None, e


@pytest.mark.parametrize("consumer,source,dtype,layout", list(_cases()))
def test_direct_and_through_dlbridge_agree(consumer, source, dtype, layout):
    do_import, describe, _ = CONSUMERS[consumer]
    src = (numpy_source if source == "numpy" else torch_source)(dtype, layout)
    before = _torch_values(src) if source == "torch" else np.array(src, copy=True)

    direct, direct_error = _attempt(lambda: do_import(src))
    via, via_error = _attempt(lambda: do_import(dlbridge.from_dlpack(src)))

    if direct_error is not None:
        assert via_error is not None, (
            f"{consumer} refuses this directly ({type(direct_error).__name__}: {direct_error}) "
            f"but takes it through dlbridge: {describe(via)}")
        RAISED[consumer, type(direct_error).__name__, type(via_error).__name__] += 1
        return
    assert via_error is None, (
        f"{consumer} takes this directly but not through dlbridge: {type(via_error).__name__}: {via_error}")

    d, v = describe(direct), describe(via)
    for field in ("type", "shape", "strides", "dtype", "writeable"):
        assert d[field] == v[field], f"{field}: direct {d[field]!r}, through dlbridge {v[field]!r}"
    src_ptr = _source_ptr(src)
    if d["ptr"] is not None or v["ptr"] is not None:
        # Zero copy on one path exactly when on the other (a framework may
        # copy, e.g. JAX for unaligned buffers: then both are copies).
        assert (d["ptr"] == src_ptr) == (v["ptr"] == src_ptr), (
            f"data pointer: source {src_ptr:#x}, direct {d['ptr']:#x}, through dlbridge {v['ptr']:#x}")
    assert d["values"].dtype == v["values"].dtype
    np.testing.assert_array_equal(v["values"], d["values"], strict=True)
    np.testing.assert_array_equal(d["values"], before)  # the source as made, untouched
