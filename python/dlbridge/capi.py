"""dlbridge's C API for ctypes users: the loaded library, the DLPack structs,
and every public ``dlb_*`` function of ``include/dlbridge.h`` declared.

Calls go through a ``ctypes.CDLL`` handle, so they release the GIL. Handles
(``dlb_tensor *``) are plain ``c_void_p`` values: free each one once with
``lib.dlb_tensor_free``, or give it to :func:`to_tensor`, which wraps it in a
``dlbridge.Tensor`` that frees it. Example: a NumPy array's capsule into the
C API and back out as a ``Tensor``::

    import ctypes, numpy as np
    from dlbridge import capi

    capsule = np.arange(6.0).__dlpack__(max_version=(1, 3))
    handle = ctypes.c_void_p()
    capi.check(capi.lib.dlb_tensor_from_dlpack_versioned(capi.take_capsule(capsule), ctypes.byref(handle)))
    print(capi.lib.dlb_tensor_dltensor(handle).contents.shape[0])   # 6
    t = capi.to_tensor(handle)                                      # owns the handle now
"""

from __future__ import annotations

import ctypes
from ctypes import CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int, c_int32, c_int64, c_size_t
from ctypes import c_uint32, c_uint64, c_void_p, py_object
from typing import Any

from . import _lib

__all__ = ["lib", "path", "DLDevice", "DLDataType", "DLTensor", "DLPackVersion", "DLManagedTensor",
           "DLManagedTensorVersioned", "dlb_array_interface", "dlb_release_fn", "STATUS", "DLBError", "check",
           "take_capsule", "to_tensor"]

path = _lib.path
#: The library, through CDLL: its calls release the GIL.
lib = ctypes.CDLL(path)

DLDevice = _lib.DLDevice
DLDataType = _lib.DLDataType
dlb_array_interface = _lib.ArrayInterface


class DLPackVersion(Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DLManagedTensor(Structure):
    pass


DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p),
                            ("deleter", CFUNCTYPE(None, POINTER(DLManagedTensor)))]


class DLManagedTensorVersioned(Structure):
    pass


DLManagedTensorVersioned._fields_ = [("version", DLPackVersion), ("manager_ctx", c_void_p),
                                     ("deleter", CFUNCTYPE(None, POINTER(DLManagedTensorVersioned))),
                                     ("flags", c_uint64), ("dl_tensor", DLTensor)]

#: ``void (*)(void *ctx)``, the release callback of ``dlb_tensor_wrap``.
dlb_release_fn = CFUNCTYPE(None, c_void_p)

_handle, _out = c_void_p, POINTER(c_void_p)
_DECLARATIONS = {
    "dlb_status_name": (c_char_p, c_int),
    "dlb_last_error_message": (c_char_p,),
    "dlb_live_tensor_count": (c_size_t,),
    "dlb_version": (c_char_p,),
    "dlb_dtype_from_name": (c_int, c_char_p, POINTER(DLDataType)),
    "dlb_tensor_new": (c_int, DLDevice, DLDataType, c_int32, POINTER(c_int64), _out),
    "dlb_tensor_wrap": (c_int, c_void_p, DLDevice, DLDataType, c_int32, POINTER(c_int64), POINTER(c_int64),
                        c_uint64, c_uint64, dlb_release_fn, c_void_p, _out),
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
    "dlb_tensor_array_interface": (c_int, _handle, POINTER(dlb_array_interface)),
    "dlb_tensor_from_array_interface": (c_int, POINTER(dlb_array_interface), dlb_release_fn, c_void_p, _out),
    "dlb_tensor_copy_from_array_interface": (c_int, POINTER(dlb_array_interface), _out),
    "dlb_cuda_device_count": (c_int, POINTER(c_int32)),
    "dlb_cuda_stream_wait": (c_int, c_int32, c_uint64, c_uint64),
    "dlb_cuda_pointer_device": (c_int, c_void_p, POINTER(c_int32)),
    "dlb_cuda_empty_cache": (c_int,),
}
for _name, (_restype, *_argtypes) in _DECLARATIONS.items():
    _f = getattr(lib, _name)
    _f.restype, _f.argtypes = _restype, _argtypes


def _status_names() -> dict:
    names, code = {}, 0
    while True:
        name = lib.dlb_status_name(code).decode()
        if name == "DLB_UNKNOWN_STATUS":
            return names
        names[code] = name
        code += 1


#: Status code -> name ("DLB_OK", "DLB_ERR_NULL_ARGUMENT", ...), read from the library.
STATUS = _status_names()


class DLBError(Exception):
    """A failed C call: ``status`` (its code), ``name`` and the library's message."""

    def __init__(self, status: int, message: str):
        self.status, self.name = status, STATUS.get(status, f"status {status}")
        super().__init__(f"{self.name}: {message}")


def check(status: int) -> None:
    """Raises :class:`DLBError` for a failed call (its message read on this thread)."""
    if status:
        raise DLBError(status, lib.dlb_last_error_message().decode(errors="replace"))


_capsule_is_valid = ctypes.PYFUNCTYPE(c_int, py_object, c_char_p)(("PyCapsule_IsValid", ctypes.pythonapi))
_capsule_get_pointer = ctypes.PYFUNCTYPE(c_void_p, py_object, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
_capsule_set_name = ctypes.PYFUNCTYPE(c_int, py_object, c_char_p)(("PyCapsule_SetName", ctypes.pythonapi))


def take_capsule(capsule: Any) -> Any:
    """Takes the managed tensor out of a DLPack capsule, as a consumer must:
    the capsule is renamed "used_..." (so it will not free it, and a second
    take is refused), and the caller owns the result (pass it to
    ``dlb_tensor_from_dlpack[_versioned]``, which takes it over, or call its
    deleter once). Returns a ``POINTER(DLManagedTensorVersioned)`` or a
    ``POINTER(DLManagedTensor)``, after the capsule's name."""
    for name, used, struct in ((b"dltensor_versioned", b"used_dltensor_versioned", DLManagedTensorVersioned),
                               (b"dltensor", b"used_dltensor", DLManagedTensor)):
        if _capsule_is_valid(capsule, name) == 1:
            pointer = _capsule_get_pointer(capsule, name)
            _capsule_set_name(capsule, used)
            return ctypes.cast(pointer, POINTER(struct))
    raise ValueError("not an unused DLPack capsule (\"dltensor_versioned\" or \"dltensor\")")


def to_tensor(handle: Any) -> Any:
    """A ``dlbridge.Tensor`` that takes over `handle` (a ``dlb_tensor *``
    from this API; do not free it yourself afterwards)."""
    from ._tensor import _adopt

    value = handle.value if isinstance(handle, c_void_p) else handle
    if not value:
        raise ValueError("handle is NULL")
    return _adopt(value)

