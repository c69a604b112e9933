"""``dlbridge.Tensor``: a view of memory shared with other frameworks."""

from __future__ import annotations

import ctypes
import operator
from typing import TYPE_CHECKING, Any, Optional, Tuple

if TYPE_CHECKING:  # NumPy is optional at run time
    import numpy

from . import _lib

_new_object = object.__new__
_info = _lib.info
_to_capsule = _lib.to_capsule
_array_interface = _lib.array_interface

READ_ONLY = 1
IS_COPIED = 2

# kDLCPU, kDLCUDAHost, kDLROCMHost, kDLCUDAManaged: the CPU can read these.
_HOST_DEVICES = frozenset((1, 3, 11, 13))
# Where a DLPack stream applies (CUDA and managed memory): dlbridge's CUDA
# work is ordered on the legacy default stream.
_STREAM_DEVICES = frozenset((2, 13))
_DEVICE_NAMES = {
    1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm",
    11: "rocm_host", 12: "ext_dev", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon",
    17: "maia", 18: "trn",
}
# dtypes NumPy lacks: they reach NumPy through ml_dtypes.
_ML_DTYPES = frozenset((
    "bfloat16", "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn",
))


def _numpy_type(name: str) -> Any:
    """The NumPy type of a dtype NumPy lacks (ml_dtypes'), or None: what
    ``__array_struct__`` hands NumPy as ``descr`` so ``np.asarray`` keeps it."""
    if name not in _ML_DTYPES:
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    return getattr(ml_dtypes, name, None)


_lib.set_void_resolver(_numpy_type)


def copy_flag(copy: Any) -> Optional[bool]:
    """A ``copy`` argument as None / True / False, with NumPy's rule: None,
    or any value by its truth (``np.True_``, 1, a 0-d array); strings (and
    bytes) are a ValueError, and so is a value without a truth (an array
    of several elements)."""
    if copy is None or copy is True or copy is False:
        return copy
    if isinstance(copy, (str, bytes)):
        raise ValueError(f"copy must be True, False or None, not the string {copy!r}")
    try:
        return bool(copy)
    except ValueError as e:
        raise ValueError(f"copy must be True, False or None: {e}") from None


_DEVICE_INT_MAX = (1 << 31) - 1


def _device_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, not a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, not {type(value).__name__}") from None
    if not 0 <= value <= _DEVICE_INT_MAX:
        raise ValueError(f"{what} {value} is out of range (0 to 2**31 - 1)")
    return value


def _unpickle(data: bytes, shape: Tuple[int, ...], dtype: str) -> "Tensor":
    """A new writable CPU tensor holding pickled data (see Tensor.__reduce__)."""
    from . import zeros

    t = zeros(shape, dtype)
    if len(data) != t.nbytes:
        raise ValueError(f"pickled data has {len(data)} bytes, {dtype}{list(shape)} needs {t.nbytes}")
    if data:
        ctypes.memmove(t.data_ptr, data, len(data))
    return t


def _wrap(capsule: Any) -> "Tensor":
    """A Tensor around a handle capsule (its destructor frees the handle)."""
    t = _new_object(Tensor)
    t._c = capsule
    return t


def _adopt(handle: Optional[int]) -> "Tensor":
    """A Tensor owning a handle just returned by the C API."""
    if not handle:
        _lib.raise_last()
    return _wrap(_lib.own(handle))


def dtype_of(dtype: Any) -> "_lib.DLDataType":
    """The DLPack type for a name ("float32", "bfloat16", ...) or anything
    with a ``name`` (a NumPy or ml_dtypes dtype)."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
    if name is None and isinstance(dtype, type):
        name = getattr(dtype, "__name__", None)  # np.float32, ml_dtypes.bfloat16
    if not isinstance(name, str):
        raise TypeError(f"expected a dtype name or a dtype, not {dtype!r}")
    if "\0" in name:  # C would read only up to it
        raise ValueError(f"unknown dtype name {name!r}")
    out = _lib.DLDataType()
    _lib.check(_lib.dtype_from_name(name.encode(), ctypes.byref(out)))
    return out


def parse_device(device: Any) -> Tuple[int, int]:
    """(device_type, device_id) from "cpu", "cuda:1", a (type, id) pair, or
    an object with ``__dlpack_device__``. Malformed or out-of-range values
    (ids must fit in 0 .. 2**31 - 1) are a ValueError; a host device's id
    may be None (PaddlePaddle's ``(1, None)``) and reads as 0. Whether the
    device exists is checked where it is used (BufferError there)."""
    if not isinstance(device, (tuple, str)) and hasattr(device, "__dlpack_device__"):
        device = device.__dlpack_device__()
        if not isinstance(device, tuple):
            device = tuple(device)
    if isinstance(device, tuple) and len(device) == 2:
        kind, index = device
        kind = _device_int(kind, "device type")
        if index is None and kind in _HOST_DEVICES:
            index = 0
        return kind, _device_int(index, "device id")
    if isinstance(device, str):
        name, sep, index = device.partition(":")
        for code, known in _DEVICE_NAMES.items():
            if known == name and (not sep or index.isdigit()):
                return code, _device_int(int(index), "device id") if sep else 0
    raise ValueError(f"unknown device {device!r}: expected e.g. 'cpu', 'cuda:0' or (device_type, device_id)")


class Tensor:
    """A view of memory (shape, strides, dtype, device, read-only flag) that
    keeps that memory alive and exchanges it with zero copy through DLPack
    (``__dlpack__``) and NumPy's ``__array_interface__``."""

    # _c: the handle capsule; _meta: metadata, fetched on first use.
    __slots__ = ("_c", "_meta", "__weakref__")

    def __init__(self) -> None:
        raise TypeError("create tensors with dlbridge.from_dlpack, dlbridge.asarray or dlbridge.zeros")

    def _m(self):
        try:
            return self._meta
        except AttributeError:
            m = self._meta = _info(self._c)
            return m

    def _handle(self) -> Tuple[Any, int]:
        """The handle capsule and the C handle in it (borrowed: valid while
        the caller holds the capsule, which a call without the GIL needs)."""
        c = self._c
        return c, _lib.handle(c)

    # -- the exchange protocols -------------------------------------------

    def __dlpack__(self, *, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> Any:
        """A DLPack capsule of this tensor (the Python DLPack protocol).

        Versioned ("dltensor_versioned") when ``max_version`` allows it,
        legacy ("dltensor") otherwise; a read-only tensor cannot be exported
        legacy (BufferError). ``copy=True`` exports a copy (IS_COPIED set),
        ``copy=False`` refuses anything that would need one.
        """
        copy = copy_flag(copy)
        if stream is not None:
            if type(stream) is not int:
                raise TypeError(f"stream must be an int or None, not {type(stream).__name__}")
            if not -1 <= stream < 1 << 64:
                raise ValueError(f"stream={stream} is not a stream (-1, 1, 2 or a cudaStream_t)")
            m = self._m()
            if m[3] not in _STREAM_DEVICES:
                raise ValueError(f"stream={stream} is not allowed for a {self.device} tensor (only None)")
            if stream == 0:
                raise ValueError("stream=0 is ambiguous and not allowed; use 1 (legacy default) or 2 (per-thread)")
            if stream not in (-1, 1):
                # Our CUDA work is ordered on the legacy default stream: make the
                # consumer's stream wait for it (event record + wait).
                _lib.check(_lib.cuda_stream_wait(m[4], stream, 1))
        versioned = False
        if max_version is not None:
            if type(max_version) is not tuple or len(max_version) != 2:
                raise TypeError(f"max_version must be a (major, minor) tuple, not {max_version!r}")
            versioned = max_version[0] >= 1
        if dl_device is not None:
            target = parse_device(dl_device)
            if target != self.__dlpack_device__():
                if copy is False:
                    raise BufferError(f"exporting to device {target} needs a copy, and copy=False forbids it")
                try:
                    moved = self.to_device(target)
                except (BufferError, RuntimeError) as e:
                    raise BufferError(f"cannot export a {self.device} tensor to device {target}: {e}") from None
                return _to_capsule(moved._c, versioned, False)
        return _to_capsule(self._c, versioned, copy is True)

    @property
    def __array_interface__(self) -> dict:
        """NumPy's array interface (version 3), zero copy; read-only tensors
        say so in ``data``. CPU-accessible memory only."""
        if self._m()[3] not in _HOST_DEVICES:
            raise AttributeError(f"a {self.device} tensor has no __array_interface__; call .to_device('cpu') first")
        return _array_interface(self._c)

    @property
    def __cuda_array_interface__(self) -> dict:
        """The CUDA array interface (version 3) of a CUDA tensor, zero copy;
        ``stream`` is 1: consumers order their work after the legacy default
        stream, where dlbridge's CUDA work runs."""
        if self._m()[3] != 2:
            raise AttributeError(f"a {self.device} tensor has no __cuda_array_interface__")
        return _array_interface(self._c)

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> numpy.ndarray:
        """NumPy's fallback conversion: a zero-copy view (TypeError for
        device memory: call .to_device('cpu') first)."""
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            if copy is False:
                raise ValueError("converting the dtype needs a copy, and copy=False forbids it")
            return array.astype(dtype)
        return array.copy() if copy else array

    # -- metadata ------------------------------------------------------------

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._m()[0]

    @property
    def strides(self) -> Tuple[int, ...]:
        """Strides in elements."""
        return self._m()[1]

    @property
    def dtype(self) -> str:
        """The dtype's name: "float32", "bool", "bfloat16", "float8_e4m3fn", ..."""
        return self._m()[2]

    @property
    def device(self) -> str:
        """"cpu", "cuda:0", ..."""
        m = self._m()
        name = _DEVICE_NAMES.get(m[3], str(m[3]))
        return name if m[3] in _HOST_DEVICES and m[4] == 0 else f"{name}:{m[4]}"

    @property
    def ndim(self) -> int:
        return len(self._m()[0])

    @property
    def nbytes(self) -> int:
        return self._m()[6]

    @property
    def readonly(self) -> bool:
        return bool(self._m()[5] & READ_ONLY)

    @property
    def is_copied(self) -> bool:
        """True when this memory is a copy made for an exchange (IS_COPIED)."""
        return bool(self._m()[5] & IS_COPIED)

    @property
    def is_contiguous(self) -> bool:
        return self._m()[7]

    @property
    def data_ptr(self) -> int:
        """Address of the first element."""
        return self._m()[8]

    def __len__(self) -> int:
        """The size of the first dimension (TypeError for a 0-d tensor, as NumPy)."""
        shape = self._m()[0]
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]

    def __copy__(self) -> "Tensor":
        """A copy of the data, as ``copy.copy`` of a NumPy array makes."""
        return self.copy()

    def __deepcopy__(self, memo: Any) -> "Tensor":
        """A copy of the data (on the same device)."""
        return self.copy()

    def __reduce__(self) -> Any:
        """Pickles the data (copied, as NumPy does), the shape and the dtype;
        CPU-readable memory only (TypeError otherwise: to_device('cpu') first)."""
        if self._m()[3] not in _HOST_DEVICES:
            raise TypeError(f"a {self.device} tensor cannot be pickled; call .to_device('cpu') first")
        compact = self if self.is_contiguous else self.copy()
        data = ctypes.string_at(compact.data_ptr, compact.nbytes) if compact.nbytes else b""
        return _unpickle, (data, self.shape, self.dtype)

    def __repr__(self) -> str:
        ro = ", readonly" if self.readonly else ""
        return (f"dlbridge.Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}, "
                f"strides={self.strides}{ro})")

    # -- copies and conversions ---------------------------------------------

    def copy(self) -> "Tensor":
        """A compact row-major copy in new memory on the same device
        (writable, IS_COPIED); managed and ROCm host memory, where dlbridge
        does not allocate, are copied to the CPU."""
        # An export of a copy, taken back: the library decides where a copy goes.
        return _wrap(_lib.from_capsule(_to_capsule(self._c, True, True)))

    def astype(self, dtype: Any) -> "Tensor":
        """A compact row-major copy converted to ``dtype`` (a name such as
        "float16" or "bfloat16", or a NumPy dtype), converted as NumPy's
        ``astype`` does; float16/bfloat16 round to nearest even."""
        out = ctypes.c_void_p()
        dt = dtype_of(dtype)
        keep, handle = self._handle()
        _lib.check(_lib.tensor_astype(handle, dt, ctypes.byref(out)))
        del keep
        return _adopt(out.value)

    def to_device(self, device: Any) -> "Tensor":
        """This tensor on ``device`` ("cpu", "cuda:1", "cuda_host" for pinned
        memory, or a (type, id) pair): the same tensor when it is already
        there, else an explicit, synchronous copy (compact row-major,
        IS_COPIED), strided sources included."""
        target = parse_device(device)
        if target == self.__dlpack_device__():
            return self
        out = ctypes.c_void_p()
        keep, handle = self._handle()
        _lib.check(_lib.tensor_copy(handle, _lib.DLDevice(*target), ctypes.byref(out)))
        del keep
        return _adopt(out.value)

    def numpy(self) -> numpy.ndarray:
        """A zero-copy NumPy view of this (CPU) tensor. bfloat16 and FP8
        come back as ml_dtypes dtypes (ml_dtypes must be installed)."""
        if self._m()[3] not in _HOST_DEVICES:
            raise TypeError(f"numpy() needs CPU memory and this tensor is on {self.device}: "
                            "call .to_device('cpu') first")
        import numpy as np

        array = np.asarray(self)
        name = self.dtype
        if name in _ML_DTYPES:
            try:
                import ml_dtypes
            except ImportError:
                raise TypeError(f"{name} has no NumPy dtype; install ml_dtypes to view it in NumPy") from None
            array = array.view(getattr(ml_dtypes, name))
        return array


# __dlpack_device__, __array_struct__ (NumPy's C-level interface: a getter),
# and the common __dlpack__ call (no stream, device or copy request), are
# answered in C by descriptors; every other __dlpack__ call reaches the
# Python method above, kept as _dlpack_slow.
# They read the handle from the `_c` slot directly; the probe (a Tensor whose
# `_c` is a known object) lets the library find where the slot lies.
Tensor._dlpack_slow = Tensor.__dlpack__
_probe = _new_object(Tensor)
_probe._c = _probe_mark = object()
Tensor.__dlpack__, Tensor.__dlpack_device__, Tensor.__array_struct__ = _lib.methods(Tensor, _probe, _probe_mark)
del _probe, _probe_mark
