"""Raw DLPack capsules through ctypes, for the conformance checks: read
what a producer hands over without consuming it, and make capsules with
exactly the fields a check needs (the probes handed to consumers). Every
deleter call on a probe's tensors is counted, never trusted: a consumer
that calls a deleter twice is seen, not crashed."""

from __future__ import annotations

import ctypes
import os
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_int64, c_void_p, py_object
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._lib import DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor

UNUSED = (b"dltensor", b"dltensor_versioned")
USED = (b"used_dltensor", b"used_dltensor_versioned")
READ_ONLY, IS_COPIED, IS_SUBBYTE_TYPE_PADDED = 1, 2, 4

# Private function objects: setting argtypes on ctypes.pythonapi's shared
# ones would change them for every other user in the process.
_get_name = ctypes.PYFUNCTYPE(c_char_p, c_void_p)(("PyCapsule_GetName", ctypes.pythonapi))
_get_pointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
_new = ctypes.PYFUNCTYPE(py_object, c_void_p, c_void_p, c_void_p)(("PyCapsule_New", ctypes.pythonapi))
_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, c_void_p, c_void_p)(("PyCapsule_SetName", ctypes.pythonapi))
# The capsule names must outlive every capsule: module-level buffers.
_NAMES = {name: ctypes.create_string_buffer(name) for name in UNUSED + USED + (b"probe",)}
_capsule_type = type(_new(1, ctypes.addressof(_NAMES[b"probe"]), None))


def is_capsule(x: Any) -> bool:
    return type(x) is _capsule_type


def pointer(capsule: Any, cname: str) -> int:
    """The pointer a capsule holds under `cname` (ValueError for another name)."""
    return _get_pointer(ctypes.c_void_p(id(capsule)), cname.encode())


def name(capsule: Any) -> Optional[str]:
    """The capsule's current name (None if it has none)."""
    raw = _get_name(ctypes.c_void_p(id(capsule)))
    return raw.decode() if raw is not None else None


@dataclass
class Fields:
    """What a capsule holds, read without consuming it."""

    name: str
    versioned: bool
    version: Optional[tuple]
    flags: int
    data: int
    device: tuple
    ndim: int
    dtype: tuple
    shape: Optional[tuple]
    strides: Optional[tuple]
    byte_offset: int


def consume(capsule: Any) -> None:
    """Consumes a probe's capsule as a consumer would (renamed, then released at once)."""
    cname = name(capsule)
    address = pointer(capsule, cname)
    _set_name(ctypes.c_void_p(id(capsule)), ctypes.addressof(_NAMES[b"used_" + cname.encode()]))
    _deleter(address)


def read(capsule: Any, allow_used: bool = False) -> Fields:
    """The fields of an unconsumed DLPack capsule (or, with allow_used, a consumed one)."""
    cname = name(capsule)
    if cname not in ("dltensor", "dltensor_versioned") and not (allow_used and cname in ("used_dltensor",
                                                                                        "used_dltensor_versioned")):
        raise ValueError(f"not an unconsumed DLPack capsule: {cname!r}")
    address = _get_pointer(ctypes.c_void_p(id(capsule)), cname.encode())
    versioned = cname.endswith("dltensor_versioned")
    if versioned:
        m = DLManagedTensorVersioned.from_address(address)
        version, flags, dl = (m.version.major, m.version.minor), m.flags, m.dl_tensor
        if version[0] != 1:  # nothing else may be read
            return Fields(cname, True, version, 0, 0, (0, 0), 0, (0, 0, 0), None, None, 0)
    else:
        m = DLManagedTensor.from_address(address)
        version, flags, dl = None, 0, m.dl_tensor
    ndim = dl.ndim
    shape = tuple(dl.shape[i] for i in range(ndim)) if dl.shape and 0 <= ndim <= 64 else None
    strides = tuple(dl.strides[i] for i in range(ndim)) if dl.strides and 0 <= ndim <= 64 else None
    return Fields(cname, versioned, version, flags, dl.data or 0, (dl.device.device_type, dl.device.device_id), ndim,
                  (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes), shape, strides, dl.byte_offset)


# ---- probes: hand-made capsules -------------------------------------------------------------------------

_VOID_FN = CFUNCTYPE(None, c_void_p)


class _Record:
    """One hand-made managed tensor: its ctypes structs (kept for the life of
    the process, so a late or second deleter call never touches freed
    memory), the memory its data points into (let go at the first deleter
    call), and the calls counted."""

    __slots__ = ("structs", "memory", "deletes", "destructed", "always_delete", "abort_twice")

    def __init__(self, structs, memory, always_delete, abort_twice):
        self.structs, self.memory, self.deletes, self.destructed = structs, memory, 0, False
        self.always_delete, self.abort_twice = always_delete, abort_twice


#: address of a managed struct -> its record.
_LIVE: dict = {}


@_VOID_FN
def _deleter(address):
    record = _LIVE.get(address)
    if record is not None:
        record.deletes += 1
        record.memory = None
        if record.deletes > 1 and record.abort_twice:
            os.abort()  # what a real double free does, for the checker's own tests


@_VOID_FN
def _destructor(capsule):
    cname = _get_name(capsule)
    address = _get_pointer(capsule, cname)
    record = _LIVE.get(address)
    if record is None:
        return
    if cname in UNUSED or record.always_delete:  # never consumed: the producer releases it
        record.destructed = True
        _deleter(address)


# A capsule or a consumer's tensor may outlive this module (a framework
# that leaks, objects freed at interpreter exit): the two callbacks are
# never freed, so C never calls into freed memory.
for _callback in (_deleter, _destructor):
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_callback))


class Probe:
    """A producer whose ``__dlpack__`` hands over a hand-made capsule of
    ``array``'s values with the fields asked for; it records the keywords
    of each call and counts the deleter calls of each capsule (kept alive,
    so a second call is counted rather than a crash).

    versioned: a DLManagedTensorVersioned ("dltensor_versioned") whatever
    is asked (True), a legacy one (False), or as max_version asks (None).
    Other options set one field: version, flags, byte_offset (the data
    then starts that many bytes into a larger buffer), null_strides,
    strides (elements; the buffer then holds the elements where the
    strides put them), dtype (a DLPack (code, bits, lanes) triple),
    misalign (bytes added to the data address), keywords (False: a
    TypeError for any keyword, as an old producer), null_data. Two
    deliberate bugs, for the checker's own tests: always_delete (the
    capsule's destructor releases it even once consumed) and abort_twice
    (a second release aborts the process, as a real double free would).
    """

    def __init__(self, array: np.ndarray, *, versioned: Optional[bool] = None, version=(1, 3), flags: int = 0,
                 byte_offset: int = 0, null_strides: bool = False, strides: Optional[tuple] = None,
                 dtype: Optional[tuple] = None, misalign: int = 0, keywords: bool = True, null_data: bool = False,
                 device=(1, 0), always_delete: bool = False, abort_twice: bool = False):
        from .._tensor import dtype_of  # the library's dtype table
        # A class of its own: consumers that learn per type (dlbridge does)
        # must not carry what one probe taught them over to the next.
        self.__class__ = type(type(self).__name__, (type(self),), {})
        self.array = np.asarray(array)
        self.versioned, self.version, self.flags = versioned, version, flags
        self.byte_offset, self.null_strides, self.misalign = byte_offset, null_strides, misalign
        self.keywords, self.null_data, self.device = keywords, null_data, device
        self.always_delete, self.abort_twice = always_delete, abort_twice
        self.calls: list = []
        self.records: list = []
        a = self.array
        if dtype is None:
            d = dtype_of(a.dtype.name)
            dtype = (d.code, d.bits, d.lanes)
        self.dtype = dtype
        item = a.dtype.itemsize
        if strides is None:
            strides = tuple(s // item for s in a.strides) if a.size else (1,) * a.ndim
        self.strides = tuple(strides)
        # The buffer: byte_offset + misalign bytes first, then the elements
        # where the strides put them (lowest address first).
        lo = sum((d - 1) * s for d, s in zip(a.shape, self.strides) if s < 0 and d > 0) * item
        hi = sum((d - 1) * s for d, s in zip(a.shape, self.strides) if s > 0 and d > 0) * item + item
        span = max(hi - lo, item) if a.size else item
        head = byte_offset + misalign
        self.buffer = np.zeros(head + span + 64, np.uint8)
        base = self.buffer.ctypes.data + head - lo  # address of element (0, ..., 0)
        if a.size:
            target = np.ndarray(a.shape, a.dtype, buffer=self.buffer, offset=head - lo,
                                strides=tuple(s * item for s in self.strides))
            target[...] = a
        self.data_address = base - byte_offset  # what `data` says; byte_offset moves it to the elements

    # the protocol ------------------------------------------------------------------------------------
    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        self.calls.append(dict(kwargs))
        if not self.keywords and kwargs:
            raise TypeError("__dlpack__() takes no keyword arguments")
        versioned = self.versioned
        if versioned is None:
            mv = kwargs.get("max_version")
            versioned = mv is not None and mv[0] >= 1
        return self.capsule(versioned)

    # what the checks read back -----------------------------------------------------------------------
    def capsule(self, versioned: bool):
        a = self.array
        shape = (c_int64 * max(a.ndim, 1))(*a.shape)
        strides = (c_int64 * max(a.ndim, 1))(*self.strides)
        dl = DLTensor()
        dl.data = None if self.null_data else self.data_address
        dl.device = DLDevice(*self.device)
        dl.ndim = a.ndim
        dl.dtype = DLDataType(*self.dtype)
        dl.shape = ctypes.cast(shape, POINTER(c_int64)) if a.ndim else None
        dl.strides = None if (self.null_strides or not a.ndim) else ctypes.cast(strides, POINTER(c_int64))
        dl.byte_offset = self.byte_offset
        if versioned:
            m = DLManagedTensorVersioned()
            m.version = DLPackVersion(*self.version)
            m.flags = self.flags
            m.deleter = ctypes.cast(_deleter, type(m.deleter))
            key = b"dltensor_versioned"
        else:
            m = DLManagedTensor()
            m.deleter = ctypes.cast(_deleter, type(m.deleter))
            key = b"dltensor"
        m.dl_tensor = dl
        address = ctypes.addressof(m)
        record = _Record((m, shape, strides), self.buffer, self.always_delete, self.abort_twice)
        _LIVE[address] = record
        self.records.append(record)
        return _new(address, ctypes.addressof(_NAMES[key]), ctypes.cast(_destructor, c_void_p).value)

    def delete_counts(self) -> list:
        """How many times each capsule handed out so far was released."""
        return [r.deletes for r in self.records]


