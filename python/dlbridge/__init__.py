"""dlbridge: zero-copy tensor exchange through DLPack and the NumPy array
interface, between NumPy, PyTorch, JAX, CuPy, TensorFlow and C.

>>> import numpy as np, dlbridge, torch
>>> a = np.arange(6, dtype=np.float32)
>>> t = dlbridge.from_dlpack(a)          # zero copy
>>> torch.from_dlpack(t)                 # zero copy, same memory
"""

from __future__ import annotations

import ctypes
import datetime as _datetime
import operator
import sys
from typing import Any, Optional, Sequence

from . import _lib
from ._tensor import ML_DTYPES, Tensor, _adopt, copy_flag, dtype_of, parse_device

__all__ = ["Tensor", "from_dlpack", "asarray", "zeros", "live_tensor_count", "cuda_device_count",
           "cuda_empty_cache", "__version__"]
__version__ = _lib.version

_CapsuleType = type(_datetime.datetime_CAPI)

#: from_dlpack(x, *, device=None, copy=None): written in the library
#: (src/python/module.rs), as every protocol is; its docstring says the rules.
from_dlpack = _lib.native["from_dlpack"]
_from_buffer = _lib.native["from_buffer"]
_typestr = _lib.native["typestr"]


def asarray(x: Any, *, copy: Optional[bool] = None) -> Tensor:
    """A ``Tensor`` from anything that shares memory: a ``Tensor``, a DLPack
    producer or capsule, an object with ``__array_interface__``, a
    buffer-protocol object (memoryview, bytearray, array.array), or, last,
    an object with only ``__array__`` (what it returns is taken). The source
    stays alive as long as the memory is used. ``copy=True`` returns a copy;
    ``copy=None`` copies only when it must (data in the other byte order is
    byte-swapped into a copy); ``copy=False`` never copies (BufferError
    where a copy would be needed).
    """
    copy = copy_flag(copy)
    if type(x) is Tensor:
        return x.copy() if copy else x
    if type(x) is _CapsuleType:
        return from_dlpack(x, copy=copy)
    interface = None
    if not getattr(getattr(x, "dtype", None), "isnative", True):
        # Other byte order: DLPack would refuse it. A copy is due unless
        # refused: the buffer protocol gives it in one native call.
        if copy is not False:
            try:
                return _from_buffer(x, True)
            except (TypeError, ValueError, BufferError):
                pass  # no buffer, or a type it cannot describe: the interface says more
        interface = getattr(x, "__array_interface__", None)
    if interface is None and hasattr(x, "__dlpack__"):
        try:
            return from_dlpack(x, copy=copy)
        except BufferError:
            interface = getattr(x, "__array_interface__", None)
            if interface is None:
                raise
    cuda_interface = getattr(x, "__cuda_array_interface__", None) if interface is None else None
    if cuda_interface is not None:
        t = _from_array_interface(x, cuda_interface, None, cuda=True)
        return t.copy() if copy else t
    if interface is None:
        interface = getattr(x, "__array_interface__", None)
    if interface is not None:
        t = _from_array_interface(x, interface, copy)
        if copy and t.is_copied:
            return t
    else:
        try:
            memoryview(x).release()
        except TypeError:
            array = getattr(x, "__array__", None)
            if array is not None:
                # Only NumPy's fallback protocol: the array it returns owns (or keeps) the memory.
                result = array()
                if result is x:
                    raise TypeError(f"{type(x).__name__}.__array__() returned the object itself") from None
                return asarray(result, copy=copy)
            raise TypeError(f"cannot share memory with {type(x).__name__}: it has no __dlpack__, "
                            "__array_interface__, buffer or __array__") from None
        t = _from_buffer(x)
    return t.copy() if copy else t


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64s(value: Any, what: str, low: int) -> tuple:
    """A tuple of integers, each range-checked (never truncated, as ctypes
    would): `low` .. 2**63 - 1."""
    if not isinstance(value, tuple):
        raise TypeError(f"{what} must be a tuple, not {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        try:
            v = operator.index(v)
        except TypeError:
            raise TypeError(f"{what}[{i}] must be an integer, not {type(v).__name__}") from None
        if not low <= v <= _INT64_MAX:
            raise ValueError(f"{what}[{i}] = {v} is out of range ({low} to 2**63 - 1)")
        out.append(v)
    return tuple(out)


def _is_numpy_scalar(x: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.generic)


def _from_array_interface(owner: Any, ai: Any, copy: Optional[bool] = None, cuda: bool = False) -> Tensor:
    """A tensor over the memory an (CUDA) array-interface dict describes,
    checked as NumPy checks it. The tensor keeps `owner` and the dict alive:
    the memory may belong to an object only the dict holds (NumPy scalars
    put a temporary array under "__ref")."""
    if not isinstance(ai, dict):
        raise ValueError(f"__array_interface__ must be a dict, not {type(ai).__name__}")
    if "shape" not in ai:
        raise ValueError("Missing __array_interface__ shape")
    if "typestr" not in ai:
        raise ValueError("Missing __array_interface__ typestr")
    shape = _int64s(ai["shape"], "__array_interface__ shape", 0)
    typestr = ai["typestr"]
    if not isinstance(typestr, str):
        if not isinstance(typestr, bytes):
            raise TypeError(f"__array_interface__ typestr must be a str, not {type(typestr).__name__}")
        typestr = typestr.decode("ascii", "replace")
    # ml_dtypes arrays say "<V2", "<V1" or even "<f1": their dtype's name says
    # which type (NumPy's dtype.name is slow: only asked then).
    vague = typestr[-2:] == "f1" or typestr.lstrip("<>|=")[:1] == "V"
    name = getattr(getattr(owner, "dtype", None), "name", None) if vague else None
    hint = name if name in ML_DTYPES else None
    # The library's typestr rules (kinds, sizes, byte order), then the C struct's size limit.
    swapped = _typestr(typestr, hint)
    if len(typestr) > 7 or "\0" in typestr:
        raise ValueError(f"malformed typestr {ai['typestr']!r}")
    strides = ai.get("strides")
    if strides is not None:
        strides = _int64s(strides, "__array_interface__ strides", _INT64_MIN)
        if len(strides) != len(shape):
            raise ValueError("mismatch in length of strides and shape")
    if ai.get("mask") is not None:
        raise BufferError("masked array interfaces cannot be exchanged")
    data = ai.get("data")
    if not isinstance(data, tuple):
        raise BufferError("array interfaces whose data is a buffer object (or None) are not supported; "
                          "pass the buffer itself")
    if len(data) != 2:
        raise TypeError("__array_interface__ data must be a 2-tuple with (data pointer integer, read-only flag)")
    try:
        address = operator.index(data[0])
    except TypeError:
        raise TypeError(f"__array_interface__ data pointer must be an integer, not {type(data[0]).__name__}") from None
    if not 0 <= address < 1 << 64:
        raise OverflowError(f"__array_interface__ data pointer {address} is not an address (0 to 2**64 - 1)")
    # NumPy scalars describe a temporary copy: never writable through us.
    readonly = bool(data[1]) or _is_numpy_scalar(owner)
    c = _lib.ArrayInterface()
    c.version = 3
    c.typestr = typestr.encode("ascii")
    c.ndim = len(shape)
    shape_arr = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    c.shape = shape_arr
    if strides is not None:
        strides_arr = (ctypes.c_int64 * max(len(strides), 1))(*strides)
        c.strides = strides_arr
    c.data = address
    c.readonly = readonly
    if hint is not None:
        c.dtype = dtype_of(hint)
    if cuda:
        device = ctypes.c_int32(0)
        if c.data:  # zero-size arrays may say 0: they stay on device 0
            _lib.check(_lib.cuda_pointer_device(c.data, ctypes.byref(device)))
        c.device = _lib.DLDevice(2, device.value)
        stream = ai.get("stream")
        if stream is not None:
            if type(stream) is not int or stream == 0 or not -1 <= stream < 1 << 64:
                raise ValueError(f"__cuda_array_interface__ stream must be None, -1 or a stream handle, not {stream!r}")
            if stream != -1:
                # The producer's pending work on `stream` must come before ours,
                # which runs on the legacy default stream.
                _lib.check(_lib.cuda_stream_wait(device.value, 1, stream))
    out = ctypes.c_void_p()
    if not cuda and (copy or (swapped and copy is None)):
        # A copy is allowed (or asked for): the other byte order is swapped on the way.
        _lib.check(_lib.tensor_copy_from_array_interface(ctypes.byref(c), ctypes.byref(out)))
        return _adopt(out.value)
    keep = (owner, ai)
    _lib.incref(keep)
    status = _lib.tensor_from_array_interface(ctypes.byref(c), _lib.decref_release, id(keep), ctypes.byref(out))
    if status:
        _lib.decref(keep)
        _lib.check(status)
    return _adopt(out.value)


def zeros(shape: Sequence[int], dtype: Any = "float32", device: Any = "cpu") -> Tensor:
    """A new zero-filled, 256-byte aligned, row-major tensor on ``device``
    ("cpu", "cuda:0", "cuda_host" for pinned host memory); ``dtype`` a name
    ("float32", "bfloat16") or a NumPy / ml_dtypes dtype, as for ``astype``."""
    shape = _int64s(tuple(shape), "shape", _INT64_MIN)  # negative: the library says why
    dt = dtype_of(dtype)  # names and dtypes, as astype takes them
    out = ctypes.c_void_p()
    dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    _lib.check(_lib.tensor_new(_lib.DLDevice(*parse_device(device)), dt, len(shape), dims, ctypes.byref(out)))
    return _adopt(out.value)


def live_tensor_count() -> int:
    """dlbridge tensor views alive in this process (each lives while a
    Tensor, an exported DLPack tensor not yet deleted or another view of its
    memory holds it): for leak checks, 0 once everything is released."""
    return _lib.live_tensor_count()


def cuda_device_count() -> int:
    """Number of CUDA devices; 0 when no CUDA driver can be loaded."""
    n = ctypes.c_int32(0)
    return n.value if _lib.cuda_device_count(ctypes.byref(n)) == 0 else 0


def cuda_empty_cache() -> None:
    """Gives back to the driver the CUDA memory dlbridge keeps for reuse
    (freed pinned host blocks, the unused part of its device pools), as
    ``torch.cuda.empty_cache()`` does for PyTorch. Nothing to do (and no
    error) without a CUDA driver."""
    if cuda_device_count():
        _lib.check(_lib.cuda_empty_cache())
