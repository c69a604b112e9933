"""The __dlpack__ / __dlpack_device__ protocol as the spec states it."""

import ctypes

import numpy as np
import pytest

import dlbridge
from _optional import needs_torch, torch


def capsule_name(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    return get_name(capsule).decode()


def test_capsule_kind_follows_max_version(no_leak):
    t = dlbridge.from_dlpack(np.ones(2))
    assert capsule_name(t.__dlpack__()) == "dltensor"
    assert capsule_name(t.__dlpack__(max_version=(0, 8))) == "dltensor"
    assert capsule_name(t.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert capsule_name(t.__dlpack__(max_version=(2, 0))) == "dltensor_versioned"
    assert t.__dlpack_device__() == (1, 0)


def test_bad_arguments_raise_the_spec_exceptions(no_leak):
    t = dlbridge.from_dlpack(np.ones(2))
    with pytest.raises(ValueError):
        t.__dlpack__(stream=5)  # CPU: only None
    with pytest.raises(TypeError):
        t.__dlpack__(stream="default")
    with pytest.raises(TypeError):
        t.__dlpack__(max_version="1.0")
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match="copy=False"):
        t.__dlpack__(dl_device=(2, 0), copy=False)
    with pytest.raises(TypeError):
        t.__dlpack__(1)  # keyword-only
    with pytest.raises(ValueError, match="only None"):
        t.__dlpack__(stream=-1, max_version=(1, 3))  # CPU: any stream, -1 included, is refused (as NumPy does)


@needs_torch
def test_copy_true_exports_a_copy(no_leak):
    a = np.arange(6, dtype=np.float32).reshape(2, 3).T
    t = dlbridge.from_dlpack(a)
    b = np.from_dlpack(t, copy=True)
    assert b.ctypes.data != a.ctypes.data
    np.testing.assert_array_equal(b, a)
    c = np.from_dlpack(t, copy=False)
    assert c.ctypes.data == a.ctypes.data
    copied = dlbridge.from_dlpack(a, copy=True)  # NumPy makes the copy (and keeps the layout)
    assert copied.is_copied and copied.data_ptr != a.ctypes.data
    ours = dlbridge.from_dlpack(t, copy=True)  # dlbridge makes the copy: row-major
    assert ours.is_copied and ours.is_contiguous and ours.data_ptr != a.ctypes.data
    np.testing.assert_array_equal(torch.from_dlpack(ours).numpy(), a)


def test_from_dlpack_device_and_copy_arguments(no_leak):
    a = np.arange(3)
    same = dlbridge.from_dlpack(a, device="cpu")
    assert same.data_ptr == a.ctypes.data
    copied = dlbridge.from_dlpack(a, copy=True)
    assert copied.data_ptr != a.ctypes.data
    with pytest.raises(ValueError, match="unknown device"):
        dlbridge.from_dlpack(a, device="tpu:0")


def test_legacy_only_producer_is_accepted(no_leak):
    class Old:
        def __init__(self, array):
            self.array = array

        def __dlpack__(self):  # no keywords: a pre-2023 producer
            return self.array.__dlpack__()

        def __dlpack_device__(self):
            return (1, 0)

    a = np.arange(4.0)
    t = dlbridge.from_dlpack(Old(a))
    # A legacy capsule cannot say whether the memory may be written: read-only
    # (as np.from_dlpack makes it), but it may leave as a legacy capsule again.
    assert t.data_ptr == a.ctypes.data and t.readonly
    assert capsule_name(t.__dlpack__()) == "dltensor"


def test_repr_and_properties(no_leak):
    t = dlbridge.from_dlpack(np.zeros((2, 3), dtype=np.uint16))
    assert repr(t) == "dlbridge.Tensor(shape=(2, 3), dtype=uint16, device=cpu, strides=(3, 1))"
    assert (t.ndim, t.nbytes, t.device, t.is_contiguous, t.readonly) == (2, 12, "cpu", True, False)
    z = dlbridge.zeros((3, 2), "bfloat16")
    assert z.dtype == "bfloat16" and z.data_ptr % 256 == 0 and z.nbytes == 12
    with pytest.raises(ValueError, match="unknown dtype"):
        dlbridge.zeros((2,), "float31")
    with pytest.raises(ValueError, match="dimensions must be >= 0"):
        dlbridge.zeros((2, -1))
    with pytest.raises(TypeError):
        dlbridge.Tensor()


def test_the_tensor_type_is_built_by_the_library(no_leak):
    # dlbridge.Tensor subclasses the library's TensorBase (PyType_FromSpec):
    # every protocol is a C method or getter of the base, the tensor is in
    # the object's C struct, and nothing is patched onto a Python class.
    t = dlbridge.asarray(np.arange(4.0))
    base = dlbridge.Tensor.__mro__[1]
    assert base.__name__ == "TensorBase" and base.__module__ == "dlbridge"
    for name in ("__dlpack__", "__dlpack_device__", "copy", "astype", "to_device"):
        assert type(getattr(dlbridge.Tensor, name)).__name__ == "method_descriptor", name
        assert name not in dlbridge.Tensor.__dict__, name
    for name in ("shape", "dtype", "device", "__array_interface__", "__array_struct__"):
        assert type(base.__dict__[name]).__name__ == "getset_descriptor", name
    assert "_c" not in dir(t) and not hasattr(t, "__dict__")
    assert t.__dlpack_device__() == (1, 0)
    name = lambda c: str(c).split('"')[1]  # noqa: E731
    assert name(t.__dlpack__()) == "dltensor"
    assert name(t.__dlpack__(max_version=None)) == "dltensor"
    assert name(t.__dlpack__(max_version=(0, 8))) == "dltensor"
    assert name(t.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert name(t.__dlpack__(max_version=(2, 1), stream=None, dl_device=None, copy=None)) == "dltensor_versioned"
    assert name(t.__dlpack__(copy=True, max_version=(1, 3))) == "dltensor_versioned"
    with pytest.raises(ValueError, match="only None"):
        t.__dlpack__(stream=-1)  # CPU memory: no stream at all
    with pytest.raises(TypeError, match="positional"):
        t.__dlpack__(None)  # keywords only
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        t.__dlpack__(nonsense=1)
    for odd in ("1.0", [1, 0], (1,)):  # not a (major, minor) tuple
        with pytest.raises(TypeError, match="max_version"):
            t.__dlpack__(max_version=odd)
    with pytest.raises(TypeError):
        dlbridge.Tensor.__dlpack__(np.zeros(1))  # the descriptor checks its self
    # Keywords are matched by their text: names built at run time read alike.
    built = {"".join(["max_", "version"]): (1, 0), "".join(["co", "py"]): None}
    assert name(t.__dlpack__(**built)) == "dltensor_versioned"
    # Neither class can be instantiated from Python, nor a subclass: every
    # instance holds a tensor the library put there.
    for cls in (dlbridge.Tensor, base):
        with pytest.raises(TypeError, match="create tensors with dlbridge.from_dlpack"):
            cls()
        with pytest.raises(TypeError):
            cls.__new__(cls)

    class Sub(dlbridge.Tensor):
        __slots__ = ("extra",)
    with pytest.raises(TypeError, match="create tensors with dlbridge.from_dlpack"):
        Sub()
    with pytest.raises(TypeError):
        object.__new__(Sub)
    # The library makes instances of the registered class only if it is one of ours.
    with pytest.raises(TypeError, match="subclass"):
        dlbridge._lib.native["set_tensor_class"](int)
    # Weak references and subclass checks work as for any Python object.
    import weakref
    r = weakref.ref(t)
    assert r() is t and isinstance(t, base)
    del t
    assert r() is None


def test_from_dlpack_builtin_answers_like_the_python_function(no_leak):
    # dlbridge.from_dlpack is a builtin written in the library, the only
    # implementation (no Python shadow).
    a = np.arange(6.0)
    assert type(dlbridge.from_dlpack).__name__ == "builtin_function_or_method"
    assert dlbridge.from_dlpack(a).data_ptr == a.ctypes.data
    assert dlbridge.from_dlpack(a, device=None, copy=None).data_ptr == a.ctypes.data
    assert dlbridge.from_dlpack(a.__dlpack__(max_version=(1, 0))).data_ptr == a.ctypes.data
    assert dlbridge.from_dlpack(x=a).data_ptr == a.ctypes.data  # by keyword: the Python function
    assert dlbridge.from_dlpack(a, copy=True).is_copied
    with pytest.raises(TypeError):
        dlbridge.from_dlpack()
    with pytest.raises(TypeError):
        dlbridge.from_dlpack(a, a)
    with pytest.raises(TypeError):
        dlbridge.from_dlpack(a, nonsense=1)
    with pytest.raises(TypeError, match="DLPack"):
        dlbridge.from_dlpack(3)
    capsule = a.__dlpack__()
    dlbridge.from_dlpack(capsule)
    with pytest.raises(ValueError, match="consumed"):
        dlbridge.from_dlpack(capsule)
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(np.ones(3, ">f4"))  # NumPy's own refusal comes through


def test_memory_the_host_cannot_read_has_no_host_protocols(no_leak):
    # An OpenCL buffer (its data is a handle, never read): wrapped through
    # the C API, it has DLPack but neither __array_struct__ (a C getter)
    # nor __array_interface__: AttributeError, so NumPy moves on to
    # __array__, which says what to do.
    from dlbridge import _lib
    from dlbridge._tensor import _adopt

    handle = ctypes.c_void_p()
    shape = (ctypes.c_int64 * 1)(4)
    wrap = _lib.lib.dlb_tensor_wrap
    wrap.restype = ctypes.c_int
    status = wrap(ctypes.c_void_p(0x1000), _lib.DLDevice(4, 0), _lib.DLDataType(2, 32, 1), 1, shape, None,
                  ctypes.c_uint64(0), ctypes.c_uint64(0), None, None, ctypes.byref(handle))
    assert status == 0
    t = _adopt(handle.value)
    assert t.__dlpack_device__() == (4, 0)
    for name in ("__array_struct__", "__array_interface__"):
        with pytest.raises(AttributeError, match="opencl"):
            getattr(t, name)
        assert not hasattr(t, name)
    with pytest.raises(TypeError):
        np.asarray(t)


def test_argument_edge_cases_found_by_review(no_leak):
    t = dlbridge.asarray(np.arange(4.0))
    # A dtype object in the other byte order is refused, as its string is.
    for dtype in (np.dtype(">f4"), ">f4"):
        with pytest.raises(ValueError):
            t.astype(dtype)
    with pytest.raises(ValueError):
        dlbridge.zeros((2,), np.dtype(">i8"))
    # A huge negative major version asks for a legacy capsule, as any major < 1.
    assert str(t.__dlpack__(max_version=(-2**70, 0))).split('"')[1] == "dltensor"
    assert str(t.__dlpack__(max_version=(2**70, 0))).split('"')[1] == "dltensor_versioned"
    # The truth of a tensor is ambiguous (NumPy refuses it for several elements).
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(dlbridge.zeros((0,)))


def test_producers_whose_tensors_stay_on_the_host_are_asked_for_their_device_once(no_leak):
    # Only to choose a stream does from_dlpack ask __dlpack_device__; a type
    # whose tensors have all been in host memory is not asked again, until
    # one is not (then it is asked again each time: here an OpenCL tensor).
    from dlbridge import capi

    a = np.arange(4.0)
    shape = (ctypes.c_int64 * 1)(4)
    handle = ctypes.c_void_p()
    capi.check(capi.lib.dlb_tensor_wrap(ctypes.c_void_p(0x1000), capi.DLDevice(4, 0), capi.DLDataType(2, 32, 1), 1,
                                        shape, None, 0, 0, capi.dlb_release_fn(), None, ctypes.byref(handle)))
    opencl = capi.to_tensor(handle)

    class Producer:
        asked = 0
        source = a

        def __dlpack__(self, **kwargs):
            return type(self).source.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            type(self).asked += 1
            return type(self).source.__dlpack_device__()

    p = Producer()
    for _ in range(5):
        assert dlbridge.from_dlpack(p).data_ptr == a.ctypes.data
    assert Producer.asked == 1
    Producer.source = opencl  # not host memory: the type is asked again from now on
    assert dlbridge.from_dlpack(p).__dlpack_device__() == (4, 0)
    dlbridge.from_dlpack(p)
    assert Producer.asked == 2
    Producer.source = a
    dlbridge.from_dlpack(p)
    dlbridge.from_dlpack(p)
    assert Producer.asked == 3  # host again: learnt once more
    del opencl


def test_a_producer_without_max_version_is_asked_without_it_after_the_first_time(no_leak):
    a = np.arange(3.0)

    class Old:
        calls = 0

        def __dlpack__(self, **kwargs):  # DLPack 0.x: no max_version
            type(self).calls += 1
            if set(kwargs) - {"stream"}:
                raise TypeError(f"__dlpack__() got an unexpected keyword argument {next(iter(kwargs))!r}")
            return a.__dlpack__()

        def __dlpack_device__(self):
            return (1, 0)

    p = Old()
    for _ in range(4):
        t = dlbridge.from_dlpack(p)
        assert t.data_ptr == a.ctypes.data and t.readonly  # legacy capsule: read-only under dlbridge's rule
    assert Old.calls == 5  # the refused first call, then one call each
    del t
