"""Loads libdlbridge with ctypes and declares its functions, once.

The library is loaded as ``ctypes.PyDLL``: the GIL stays held during calls,
which the Python-facing entry points (``dlb_py_*``) need, since they build
capsules, dicts and tuples through the CPython API. The library resolves
that API itself, by name, from this interpreter (``dlb_py_init``); errors
come back as ordinary Python exceptions.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
from ctypes import CFUNCTYPE, POINTER, c_bool, c_char, c_char_p, c_int, c_int32, c_int64, c_uint8, c_uint16
from ctypes import c_uint32, c_uint64, c_size_t, c_void_p, py_object


def _check_interpreter() -> None:
    """dlbridge is tested on CPython 3.11, 3.12 and 3.13 with the GIL; its
    library keeps Python objects (interned names, builtin types) shared by
    the whole process, which one GIL and one interpreter make safe. Anything
    else is refused here, before the library is touched (subinterpreters
    are refused by the library itself, which can tell them apart)."""
    import sys
    import sysconfig

    if sys.implementation.name != "cpython":
        raise ImportError(f"dlbridge supports CPython only, not {sys.implementation.name}")
    if sys.version_info < (3, 11):
        raise ImportError(f"dlbridge needs CPython 3.11 or newer; this is {sys.version.split()[0]}")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise ImportError("dlbridge does not support free-threaded CPython builds (no GIL) yet: "
                          "use a standard build")


_check_interpreter()


def _library_path() -> str:
    here = pathlib.Path(__file__).resolve().parent
    bundled = sorted(here.glob("libdlbridge*.so")) + sorted(here.glob("libdlbridge*.dylib"))
    if bundled:
        return str(bundled[0])
    env = os.environ.get("DLBRIDGE_LIBRARY")
    if env:
        return env
    in_repo = here.parent.parent / "target" / "release" / "libdlbridge.so"
    if in_repo.is_file():
        return str(in_repo)
    raise ImportError(
        "libdlbridge not found: install the package (pip install .), set DLBRIDGE_LIBRARY "
        "to the library's path, or run `cargo build --release` in the repository"
    )


path = _library_path()
lib = ctypes.PyDLL(path)
# The same library through CDLL: calls made through it release the GIL, for
# long work that touches no Python object (copies, conversions, transfers).
nogil = ctypes.CDLL(path)


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class ArrayInterface(ctypes.Structure):
    """``dlb_array_interface``."""

    _fields_ = [
        ("version", c_int32),
        ("ndim", c_int32),
        ("typestr", c_char * 8),
        ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)),
        ("data", c_void_p),
        ("readonly", c_uint8),
        ("dtype", DLDataType),
        ("device", DLDevice),
    ]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p),
                            ("deleter", CFUNCTYPE(None, POINTER(DLManagedTensor)))]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DLManagedTensorVersioned._fields_ = [("version", DLPackVersion), ("manager_ctx", c_void_p),
                                     ("deleter", CFUNCTYPE(None, POINTER(DLManagedTensorVersioned))),
                                     ("flags", c_uint64), ("dl_tensor", DLTensor)]

#: ``void (*)(void *ctx)``, the release callback of ``dlb_tensor_wrap``.
release_fn = CFUNCTYPE(None, c_void_p)

# The public C API (include/dlbridge.h), declared once, on `nogil`: the
# package's own calls (copies, conversions, transfers) and dlbridge.capi's
# users share these declarations. Status-returning functions return int.
_handle, _out = c_void_p, POINTER(c_void_p)
C_API = {
    "dlb_status_name": (c_char_p, c_int),
    "dlb_last_error_message": (c_char_p,),
    "dlb_live_tensor_count": (c_size_t,),
    "dlb_version": (c_char_p,),
    "dlb_dtype_from_name": (c_int, c_char_p, POINTER(DLDataType)),
    "dlb_tensor_new": (c_int, DLDevice, DLDataType, c_int32, POINTER(c_int64), _out),
    "dlb_tensor_wrap": (c_int, c_void_p, DLDevice, DLDataType, c_int32, POINTER(c_int64), POINTER(c_int64),
                        c_uint64, c_uint64, release_fn, c_void_p, _out),
    "dlb_tensor_from_dlpack_versioned": (c_int, POINTER(DLManagedTensorVersioned), _out),
    "dlb_tensor_from_dlpack": (c_int, POINTER(DLManagedTensor), _out),
    "dlb_tensor_to_dlpack_versioned": (c_int, _handle, POINTER(POINTER(DLManagedTensorVersioned))),
    "dlb_tensor_to_dlpack": (c_int, _handle, POINTER(POINTER(DLManagedTensor))),
    "dlb_tensor_dltensor": (POINTER(DLTensor), _handle),
    "dlb_tensor_flags": (c_uint64, _handle),
    "dlb_tensor_is_contiguous": (c_bool, _handle),
    "dlb_tensor_nbytes": (c_size_t, _handle),
    "dlb_tensor_retain": (c_void_p, _handle),
    "dlb_tensor_free": (None, _handle),
    "dlb_tensor_copy": (c_int, _handle, DLDevice, _out),
    "dlb_tensor_astype": (c_int, _handle, DLDataType, _out),
    "dlb_tensor_array_interface": (c_int, _handle, POINTER(ArrayInterface)),
    "dlb_tensor_from_array_interface": (c_int, POINTER(ArrayInterface), release_fn, c_void_p, _out),
    "dlb_tensor_copy_from_array_interface": (c_int, POINTER(ArrayInterface), _out),
    "dlb_cuda_device_count": (c_int, POINTER(c_int32)),
    "dlb_cuda_stream_wait": (c_int, c_int32, c_uint64, c_uint64),
    "dlb_cuda_pointer_device": (c_int, c_void_p, POINTER(c_int32)),
    "dlb_cuda_empty_cache": (c_int,),
}
for _name, (_restype, *_argtypes) in C_API.items():
    _f = getattr(nogil, _name)
    _f.restype, _f.argtypes = _restype, _argtypes

# The calls the package makes (the caller's objects keep the memory alive
# while the GIL is released).
tensor_new = nogil.dlb_tensor_new
tensor_copy = nogil.dlb_tensor_copy
tensor_astype = nogil.dlb_tensor_astype
tensor_copy_from_array_interface = nogil.dlb_tensor_copy_from_array_interface
tensor_from_array_interface = nogil.dlb_tensor_from_array_interface
dtype_from_name = nogil.dlb_dtype_from_name
live_tensor_count = nogil.dlb_live_tensor_count
cuda_device_count = nogil.dlb_cuda_device_count
cuda_stream_wait = nogil.dlb_cuda_stream_wait
cuda_empty_cache = nogil.dlb_cuda_empty_cache
cuda_pointer_device = nogil.dlb_cuda_pointer_device
version = nogil.dlb_version().decode()


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


# Python entry points: NULL results come with a Python exception set.
# A Tensor's handle lives in a "handle capsule" whose C destructor frees it.
from_capsule = _fn("dlb_py_from_capsule", py_object, py_object)
from_buffer = _fn("dlb_py_from_buffer", py_object, py_object)
own = _fn("dlb_py_own", py_object, c_void_p)
handle = _fn("dlb_py_handle", c_void_p, py_object)
to_capsule = _fn("dlb_py_to_capsule", py_object, py_object, c_bool, c_bool)
methods = _fn("dlb_py_methods", py_object, py_object, py_object, py_object)
from_dlpack_function = _fn("dlb_py_from_dlpack_function", py_object, py_object, py_object)
add_host_type = _fn("dlb_py_add_host_type", None, py_object)
array_interface = _fn("dlb_py_array_interface", py_object, py_object)
info = _fn("dlb_py_info", py_object, py_object)
raise_last = _fn("dlb_py_raise_last", py_object)
set_void_resolver = _fn("dlb_py_set_void_resolver", None, py_object)
# The release callback that drops one reference to a Python object (with the GIL).
decref_release = release_fn(ctypes.cast(lib.dlb_py_decref, c_void_p).value)

# Private function objects: setting argtypes on the shared
# ctypes.pythonapi.Py_IncRef would change it for every other module too.
incref = ctypes.PYFUNCTYPE(None, py_object)(("Py_IncRef", ctypes.pythonapi))
decref = ctypes.PYFUNCTYPE(None, py_object)(("Py_DecRef", ctypes.pythonapi))


def check(status: int) -> None:
    """Raises the exception for a failed C-API call (BufferError, ValueError, ...)."""
    if status:
        raise_last()


def _register() -> None:
    """Has the library resolve the CPython functions it calls, by name, from
    this interpreter (the table is in src/python/api.rs)."""
    if _fn("dlb_py_init", c_int)():
        message = _fn("dlb_last_error_message", c_char_p)().decode(errors="replace")
        raise ImportError(f"dlbridge cannot use this Python: {message}")


_register()
