"""``dlbridge.Tensor``: a view of memory shared with other frameworks.

The type itself is built by the library (``TensorBase``, in C: the tensor
lives in the object, and every protocol, property and copy is answered
there); this subclass adds what is Python by nature: ``numpy()``,
``__array__``, pickling and copying, ``repr``.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Tuple

from . import _lib

try:  # for type hints that resolve at run time; NumPy itself stays optional
    from numpy import ndarray
except ImportError:  # pragma: no cover - NumPy is in every tested environment
    ndarray = Any  # type: ignore[misc,assignment]

_native = _lib.native
#: dtypes NumPy lacks (bfloat16, FP8, ...): they reach NumPy through ml_dtypes.
ML_DTYPES = frozenset(_native["ml_dtypes"])
#: Device types whose memory the CPU can read (kDLCPU, kDLCUDAHost, ...).
_HOST_DEVICES = frozenset(_native["host_device_types"])
adopt = _native["adopt"]
copy_flag = _native["copy_flag"]
parse_device = _native["parse_device"]


def _numpy_type(name: str) -> Any:
    """The NumPy type of a dtype NumPy lacks (ml_dtypes'), or None: what
    ``__array_struct__`` hands NumPy as ``descr`` so ``np.asarray`` keeps it."""
    if name not in ML_DTYPES:
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    return getattr(ml_dtypes, name, None)


_native["set_void_resolver"](_numpy_type)


def dtype_of(dtype: Any) -> "_lib.DLDataType":
    """The DLPack type for a name ("float32", "bfloat16", "f4") or a NumPy /
    ml_dtypes dtype or type (the library's rule)."""
    return _lib.DLDataType(*_native["dtype"](dtype))


def _unpickle(data: bytes, shape: Tuple[int, ...], dtype: str) -> "Tensor":
    """A new writable CPU tensor holding pickled data (see Tensor.__reduce__)."""
    from . import zeros

    t = zeros(shape, dtype)
    if len(data) != t.nbytes:
        raise ValueError(f"pickled data has {len(data)} bytes, {dtype}{list(shape)} needs {t.nbytes}")
    if data:
        ctypes.memmove(t.data_ptr, data, len(data))
    return t


def _adopt(handle: Optional[int]) -> "Tensor":
    """A Tensor owning a handle just returned by the C API (NULL: the C
    API's error is raised)."""
    if not handle:
        _lib.raise_last()
    return adopt(handle)


class Tensor(_native["TensorBase"]):
    """A view of memory (shape, strides, dtype, device, read-only flag) that
    keeps that memory alive and exchanges it with zero copy through DLPack
    (``__dlpack__``) and NumPy's ``__array_interface__``.

    Made by ``dlbridge.from_dlpack``, ``dlbridge.asarray`` and
    ``dlbridge.zeros`` (not by calling the class)."""

    __slots__ = ()
    __module__ = "dlbridge"

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> ndarray:
        """NumPy's fallback conversion: a zero-copy view (TypeError for
        device memory: call .to_device('cpu') first)."""
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            if copy is False:
                raise ValueError("converting the dtype needs a copy, and copy=False forbids it")
            return array.astype(dtype)
        return array.copy() if copy else array

    def numpy(self) -> ndarray:
        """A zero-copy NumPy view of this (CPU-readable) tensor. bfloat16 and
        FP8 come back as ml_dtypes dtypes (ml_dtypes must be installed)."""
        if self.__dlpack_device__()[0] not in _HOST_DEVICES:
            raise TypeError(f"numpy() needs CPU memory and this tensor is on {self.device}: "
                            "call .to_device('cpu') first")
        import numpy as np

        array = np.asarray(self)
        name = self.dtype
        if name in ML_DTYPES:
            try:
                import ml_dtypes
            except ImportError:
                raise TypeError(f"{name} has no NumPy dtype; install ml_dtypes to view it in NumPy") from None
            array = array.view(getattr(ml_dtypes, name))
        return array

    def __copy__(self) -> "Tensor":
        """A copy of the data, as ``copy.copy`` of a NumPy array makes."""
        return self.copy()

    def __deepcopy__(self, memo: Any) -> "Tensor":
        """A copy of the data (on the same device)."""
        return self.copy()

    def __reduce__(self) -> Any:
        """Pickles the data (copied, as NumPy does), the shape and the dtype;
        CPU-readable memory only (TypeError otherwise: to_device('cpu') first)."""
        if self.__dlpack_device__()[0] not in _HOST_DEVICES:
            raise TypeError(f"a {self.device} tensor cannot be pickled; call .to_device('cpu') first")
        compact = self if self.is_contiguous else self.copy()
        data = ctypes.string_at(compact.data_ptr, compact.nbytes) if compact.nbytes else b""
        return _unpickle, (data, self.shape, self.dtype)

    def __repr__(self) -> str:
        ro = ", readonly" if self.readonly else ""
        return (f"dlbridge.Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}, "
                f"strides={self.strides}{ro})")


_native["set_tensor_class"](Tensor)
