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
from ctypes import POINTER, c_char_p, c_int, c_void_p, py_object
from typing import Any

from . import _lib

__all__ = ["lib", "pylib", "path", "DLDevice", "DLDataType", "DLTensor", "DLPackVersion", "DLManagedTensor",
           "DLManagedTensorVersioned", "dlb_array_interface", "dlb_release_fn", "STATUS", "DLBError", "check",
           "take_capsule", "to_tensor"]

path = _lib.path
#: The library, through CDLL: its calls release the GIL. Every public
#: function is declared (the table is `_lib.C_API`, which the package uses too).
lib = _lib.nogil
#: The same library through PyDLL (the GIL stays held): for the functions
#: that take Python objects, `dlb_tensor_from_pyobject` and
#: `dlb_tensor_to_pyobject` (declared here, with `py_object` arguments).
pylib = _lib.lib
_DECLARATIONS = _lib.C_API

DLDevice = _lib.DLDevice
DLDataType = _lib.DLDataType
DLTensor = _lib.DLTensor
DLPackVersion = _lib.DLPackVersion
DLManagedTensor = _lib.DLManagedTensor
DLManagedTensorVersioned = _lib.DLManagedTensorVersioned
dlb_array_interface = _lib.ArrayInterface
#: ``void (*)(void *ctx)``, the release callback of ``dlb_tensor_wrap``.
dlb_release_fn = _lib.release_fn


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

