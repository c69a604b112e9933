"""Loads libdlbridge with ctypes and declares its functions, once.

Two handles on one library: ``nogil`` (``ctypes.CDLL``: calls release the
GIL) for the public C API, and ``lib`` (``ctypes.PyDLL``) for the two calls
that set up the library's Python namespace (``native``): the ``Tensor``
base type and the functions written against the CPython API, which the
library resolves by name from this interpreter.
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
    """DLBRIDGE_LIBRARY when set; in a source checkout, the library cargo
    builds there (so `pip install -e .` leaves no copy in the package that
    would shadow later builds); else the library the wheel bundles."""
    env = os.environ.get("DLBRIDGE_LIBRARY")
    if env:
        return env
    here = pathlib.Path(__file__).resolve().parent
    checkout = here.parent.parent
    built = checkout / "target" / "release" / "libdlbridge.so"
    if (checkout / "Cargo.toml").is_file() and built.is_file():
        return str(built)
    bundled = sorted(here.glob("libdlbridge*.so")) + sorted(here.glob("libdlbridge*.dylib"))
    if bundled:
        return str(bundled[0])
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
    "dlb_tensor_repack": (c_int, _handle, c_bool, _out),
    "dlb_tensor_array_interface": (c_int, _handle, POINTER(ArrayInterface)),
    "dlb_tensor_from_array_interface": (c_int, POINTER(ArrayInterface), release_fn, c_void_p, _out),
    "dlb_tensor_copy_from_array_interface": (c_int, POINTER(ArrayInterface), _out),
    "dlb_cuda_device_count": (c_int, POINTER(c_int32)),
    "dlb_cuda_stream_wait": (c_int, c_int32, c_uint64, c_uint64),
    "dlb_cuda_pointer_device": (c_int, c_void_p, POINTER(c_int32)),
    "dlb_cuda_empty_cache": (c_int,),
    "dlb_tensor_record_stream": (c_int, _handle, c_uint64),
    # For CPython extensions: these take PyObject* and need the GIL held, so
    # they are declared on the PyDLL handle (`lib`), not on `nogil`.
    "dlb_tensor_from_pyobject": (c_int, py_object, c_uint32, _out),
    "dlb_tensor_to_pyobject": (c_int, _handle, POINTER(py_object)),
}
#: The functions that run with the GIL held (declared on `lib`).
WITH_GIL = frozenset(("dlb_tensor_from_pyobject", "dlb_tensor_to_pyobject"))
for _name, (_restype, *_argtypes) in C_API.items():
    _f = getattr(lib if _name in WITH_GIL else nogil, _name)
    _f.restype, _f.argtypes = _restype, _argtypes

# The calls the package makes (the caller's objects keep the memory alive
# while the GIL is released).
tensor_new = nogil.dlb_tensor_new
tensor_copy_from_array_interface = nogil.dlb_tensor_copy_from_array_interface
tensor_from_array_interface = nogil.dlb_tensor_from_array_interface
live_tensor_count = nogil.dlb_live_tensor_count
cuda_device_count = nogil.dlb_cuda_device_count
cuda_stream_wait = nogil.dlb_cuda_stream_wait
cuda_empty_cache = nogil.dlb_cuda_empty_cache
cuda_pointer_device = nogil.dlb_cuda_pointer_device
version = nogil.dlb_version().decode()

# Private function objects: setting argtypes on the shared
# ctypes.pythonapi.Py_IncRef would change it for every other module too.
incref = ctypes.PYFUNCTYPE(None, py_object)(("Py_IncRef", ctypes.pythonapi))
decref = ctypes.PYFUNCTYPE(None, py_object)(("Py_DecRef", ctypes.pythonapi))


def _native() -> dict:
    """The library's Python namespace (src/python/module.rs): the Tensor
    base type, from_dlpack, and the rules and tables the package uses. The
    library first resolves the CPython functions it calls, by name, from
    this interpreter (the table is in src/python/api.rs)."""
    init = lib.dlb_py_init
    init.restype, init.argtypes = c_int, []
    if init():
        message = nogil.dlb_last_error_message().decode(errors="replace")
        raise ImportError(f"dlbridge cannot use this Python: {message}")
    module = lib.dlb_py_module
    module.restype, module.argtypes = py_object, []
    return module()


native = _native()
#: The release callback that drops one reference to a Python object (with the GIL).
decref_release = release_fn(native["decref_release"])
raise_last = native["raise_last"]


def check(status: int) -> None:
    """Raises the exception for a failed C-API call (BufferError, ValueError, ...)."""
    if status:
        raise_last()
