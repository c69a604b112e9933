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
import sys
from typing import Any, Optional, Sequence

from . import _lib
from ._tensor import _ML_DTYPES, Tensor, _adopt, _wrap, parse_device

__all__ = ["Tensor", "from_dlpack", "asarray", "zeros", "live_tensor_count", "cuda_device_count",
           "cuda_empty_cache", "__version__"]
__version__ = _lib.version

_CapsuleType = type(_datetime.datetime_CAPI)
_MAX_VERSION = (1, 3)
_from_capsule = _lib.from_capsule


def from_dlpack(x: Any, *, device: Any = None, copy: Optional[bool] = None) -> Tensor:
    """A ``Tensor`` over the memory of any DLPack producer (NumPy, PyTorch,
    JAX, CuPy, ...) or of a raw DLPack capsule, zero copy.

    Asks for a versioned capsule (``max_version=(1, 3)``) and falls back to
    a keyword-less ``__dlpack__()`` for older producers. ``device`` asks the
    producer for a copy on that device; ``copy=True`` / ``False`` is passed
    on (always / never copy). A capsule can be consumed once.
    """
    if type(x) is _CapsuleType:
        return _honour(_wrap(_from_capsule(x)), device, copy)
    try:
        dlpack = x.__dlpack__
    except AttributeError:
        raise TypeError(f"{type(x).__name__} does not support DLPack (no __dlpack__)") from None
    stream = None if type(x) in _HOST_TYPES else _consumer_stream(x)
    if device is None and copy is None and stream is None:
        try:
            capsule = dlpack(max_version=_MAX_VERSION)
        except TypeError:
            capsule = dlpack()  # a producer older than DLPack 1.0 keywords
        return _wrap(_from_capsule(capsule))
    kwargs = {"max_version": _MAX_VERSION}
    if stream is not None:
        kwargs["stream"] = stream
    if copy is not None:
        kwargs["copy"] = copy
    if device is not None:
        kwargs["dl_device"] = parse_device(device)
    try:
        capsule = dlpack(**kwargs)
    except TypeError:
        # An old producer: take what it has, then honour the request here.
        old = dlpack() if stream is None else dlpack(stream=stream)
        return _honour(_wrap(_from_capsule(old)), device, copy)
    return _wrap(_from_capsule(capsule))


# Types whose tensors always live in host memory: from_dlpack skips asking
# them for their device (filled as they are seen: NumPy's arrays).
_HOST_TYPES: set = set()
# kDLCUDA and kDLCUDAManaged: the legacy default stream (1); kDLROCM: its default stream (0).
_STREAM_TO_ASK = {2: 1, 13: 1, 10: 0}


def _consumer_stream(x: Any) -> Optional[int]:
    """The stream to pass to ``x.__dlpack__``: dlbridge orders its CUDA work
    on the legacy default stream, so a CUDA producer is asked to make its
    pending work visible there (the spec's stream=1); None elsewhere."""
    try:
        device_type = x.__dlpack_device__()[0]
    except AttributeError:
        return None  # an old producer without __dlpack_device__: nothing to ask
    if device_type == 1 and type(x).__module__ == "numpy":
        _HOST_TYPES.add(type(x))
        _lib.add_host_type(type(x))
    return _STREAM_TO_ASK.get(int(device_type))


# The plain calls (a capsule, or a NumPy array, with no device or copy
# request) are answered by a builtin written in C; it hands every other call
# to the Python function above, with the same arguments.
_from_dlpack_python = from_dlpack
from_dlpack = _lib.from_dlpack_function(Tensor, _from_dlpack_python)  # noqa: F811


def _honour(t: Tensor, device: Any, copy: Optional[bool]) -> Tensor:
    """Applies from_dlpack's device / copy request to a tensor the producer
    handed over as it was (a raw capsule, or a producer without keywords)."""
    if device is not None and parse_device(device) != t.__dlpack_device__():
        return t.to_device(device)
    return t.copy() if copy else t


def asarray(x: Any, *, copy: Optional[bool] = None) -> Tensor:
    """A ``Tensor`` from anything that shares memory: a ``Tensor``, a DLPack
    producer or capsule, an object with ``__array_interface__``, or a
    buffer-protocol object (memoryview, bytearray, array.array). The source
    stays alive as long as the memory is used. ``copy=True`` returns a copy;
    ``copy=None`` copies only when it must (data in the other byte order is
    byte-swapped into a copy); ``copy=False`` never copies (BufferError
    where a copy would be needed).
    """
    if type(x) is Tensor:
        return x.copy() if copy else x
    if type(x) is _CapsuleType:
        return from_dlpack(x, copy=copy)
    interface = None
    if not getattr(getattr(x, "dtype", None), "isnative", True):
        interface = getattr(x, "__array_interface__", None)  # other byte order: DLPack would refuse it
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
            raise TypeError(f"cannot share memory with {type(x).__name__}: it has no __dlpack__, "
                            "__array_interface__ or buffer") from None
        t = _wrap(_lib.from_buffer(x))
    return t.copy() if copy else t


def _from_array_interface(owner: Any, ai: dict, copy: Optional[bool] = None, cuda: bool = False) -> Tensor:
    if ai.get("mask") is not None:
        raise BufferError("masked array interfaces cannot be exchanged")
    data = ai.get("data")
    if not isinstance(data, tuple):
        raise BufferError("array interfaces whose data is a buffer object are not supported; pass the buffer")
    shape = tuple(ai["shape"])
    strides = ai.get("strides")
    c = _lib.ArrayInterface()
    c.version = int(ai.get("version", 3))
    typestr = ai["typestr"].encode()
    if len(typestr) > 7:
        raise ValueError(f"malformed typestr {ai['typestr']!r}")
    c.typestr = typestr
    c.ndim = len(shape)
    shape_arr = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    c.shape = shape_arr
    if strides is not None:
        strides_arr = (ctypes.c_int64 * max(len(strides), 1))(*strides)
        c.strides = strides_arr
    c.data = int(data[0]) + int(ai.get("offset", 0))
    c.readonly = bool(data[1])
    # ml_dtypes arrays say "<V2", "<V1" or even "<f1" (NumPy's dtype.name is slow: only asked then).
    vague = typestr[1:2] == b"V" or typestr[1:] == b"f1"
    name = getattr(getattr(owner, "dtype", None), "name", None) if vague else None
    if name in _ML_DTYPES:
        _lib.check(_lib.dtype_from_name(name.encode(), ctypes.byref(c.dtype)))
    if cuda:
        device = ctypes.c_int32(0)
        if c.data:  # zero-size arrays may say 0: they stay on device 0
            _lib.check(_lib.cuda_pointer_device(c.data, ctypes.byref(device)))
        c.device = _lib.DLDevice(2, device.value)
        stream = ai.get("stream")
        if stream is not None:
            # The producer's pending work on `stream` must come before ours,
            # which runs on the legacy default stream.
            _lib.check(_lib.cuda_stream_wait(device.value, 1, int(stream)))
    out = ctypes.c_void_p()
    swapped = len(typestr) > 2 and typestr[:1] == (b">" if sys.byteorder == "little" else b"<") and typestr[2:] != b"1"
    if not cuda and (copy or (swapped and copy is None)):
        # A copy is allowed (or asked for): the other byte order is swapped on the way.
        _lib.check(_lib.tensor_copy_from_array_interface(ctypes.byref(c), ctypes.byref(out)))
        return _adopt(out.value)
    _lib.incref(owner)
    status = _lib.tensor_from_array_interface(ctypes.byref(c), _lib.decref_callback, id(owner), ctypes.byref(out))
    if status:
        _lib.decref(owner)
        _lib.check(status)
    return _adopt(out.value)


def zeros(shape: Sequence[int], dtype: str = "float32", device: Any = "cpu") -> Tensor:
    """A new zero-filled, 256-byte aligned, row-major tensor on ``device``
    ("cpu", "cuda:0", "cuda_host" for pinned host memory)."""
    shape = tuple(int(d) for d in shape)
    dt = _lib.DLDataType()
    _lib.check(_lib.dtype_from_name(str(dtype).encode(), ctypes.byref(dt)))
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
