"""Deliberately broken DLPack producers and consumers, one bug each: the
conformance checker's own tests (test_check.py) make every check fail on
one of them. Importable by name, so the checker's child processes can run
them too ("_check_toys:double_free")."""

import ctypes
import weakref

import ml_dtypes
import numpy as np

from dlbridge._lib import DLManagedTensor, DLManagedTensorVersioned
from dlbridge.check import capsules
from dlbridge.check.capsules import READ_ONLY, Probe
from dlbridge.check.frameworks import Framework, NumPy

# ---- producers ---------------------------------------------------------------------------------------------


class ToyProducer(Framework):
    """Makes probes (hand-made capsules) with one bug."""

    name = "toy-producer"

    def __init__(self, bug):
        self.bug = bug
        self.name = f"toy-producer[{bug}]"

    def version(self):
        return "toy"

    def probe(self, a, **kw):
        p = Probe(a, **kw)
        if self.bug == "wrong-strides":
            p.strides = tuple(reversed(p.strides))  # laid out row-major, described otherwise
        return p

    def make(self, a):
        bug = self.bug
        if bug == "device":
            p = self.probe(a)
            p.device = (2, 0)
            return p
        if bug == "always-versioned":
            return self.probe(a, versioned=True)
        if bug == "major-2":
            return self.probe(a, versioned=True, version=(2, 0))
        if bug == "dl-device-refused":
            return _RefusesDevice(a)
        if bug == "leak":
            p = self.probe(a)
            LEAKED.append(p)
            return p
        if bug == "grows-refcount":
            return _Hoarder(a)
        if bug == "bad-exchange-api":
            return _BadTable(a)
        if bug == "refuses-stream-none":
            return _RefusesStream(a)
        if bug == "double-free":
            return self.probe(a, always_delete=True, abort_twice=True)
        return self.probe(a)

    def readonly(self, a):
        return self.probe(a, versioned=True)  # no READ_ONLY flag

    def big_endian(self, a):
        swapped = a.astype(a.dtype.newbyteorder(">"))
        return self.probe(swapped.view(a.dtype))  # the other order's bytes, described as native

    def views(self, a):
        if self.bug != "wrong-strides":
            return {}
        return {"transposed": (self.probe(np.ascontiguousarray(a.T)), a.T)}


LEAKED = []


class _RefusesDevice(Probe):
    def __dlpack__(self, **kwargs):
        if kwargs.get("dl_device") is not None:
            raise BufferError("cannot export to the device it is on")
        return super().__dlpack__(**kwargs)


class _RefusesStream(Probe):
    def __dlpack__(self, **kwargs):
        if "stream" in kwargs:
            raise BufferError("no stream, please")
        return super().__dlpack__(**kwargs)


class _Hoarder(Probe):
    hoard = []

    def __dlpack__(self, **kwargs):
        _Hoarder.hoard.append(self)
        return super().__dlpack__(**kwargs)


class _BadTable(Probe):
    __dlpack_c_exchange_api__ = "not a capsule"


def double_free(a):
    """For the child-process test: a producer whose capsule destructor frees a consumed capsule again."""
    return ToyProducer("double-free").make(a)


def hang(a):
    """For the time-limit test: a producer that never answers."""
    class Hang(Probe):
        def __dlpack_device__(self):
            import time
            time.sleep(3600)
    return Hang(a)


# ---- consumers ---------------------------------------------------------------------------------------------

_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p)(("PyCapsule_SetName", ctypes.pythonapi))
_USED = {"dltensor": ctypes.create_string_buffer(b"used_dltensor"),
         "dltensor_versioned": ctypes.create_string_buffer(b"used_dltensor_versioned")}
_TYPES = {(0, 8): np.int8, (0, 16): np.int16, (0, 32): np.int32, (0, 64): np.int64, (1, 8): np.uint8,
          (1, 16): np.uint16, (1, 32): np.uint32, (1, 64): np.uint64, (2, 16): np.float16, (2, 32): np.float32,
          (2, 64): np.float64, (4, 16): ml_dtypes.bfloat16, (5, 64): np.complex64, (5, 128): np.complex128,
          (6, 8): np.bool_, (10, 8): ml_dtypes.float8_e4m3fn, (12, 8): ml_dtypes.float8_e5m2, (0, 4): ml_dtypes.int4,
          (17, 4): ml_dtypes.float4_e2m1fn}


def toy_from_dlpack(x, bugs=()):
    """A small consumer through ctypes: asks for a versioned capsule (then
    without keywords), renames it, builds a NumPy view of its memory and
    releases the capsule when the view goes. `bugs` break one rule each."""
    kwargs = {"max_version": (1, 3)}
    if "stream-0" in bugs:
        kwargs["stream"] = 0
    try:
        cap = x.__dlpack__(**kwargs)
    except TypeError:
        cap = x.__dlpack__()
    fields = capsules.read(cap, allow_used="accept-used" in bugs)
    if fields.versioned and fields.version[0] != 1:
        if "accept-major-2" not in bugs:
            raise BufferError(f"DLPack major version {fields.version[0]} is not 1")
        return np.zeros(1)
    address = capsules.pointer(cap, fields.name)
    if fields.name.startswith("used_"):
        fields.name = fields.name[len("used_"):]  # the bug: read as if unused
    if "no-rename" not in bugs and not capsules.name(cap).startswith("used_"):
        _set_name(cap, ctypes.addressof(_USED[fields.name]))
    struct = (DLManagedTensorVersioned if fields.versioned else DLManagedTensor).from_address(address)
    deleter = struct.deleter
    code, bits, _ = fields.dtype
    if (code, bits) == (2, 16) and "wrong-dtype" in bugs:
        bits, code = 16, 1
    dtype = np.dtype(_TYPES[(code, bits)])
    item = dtype.itemsize
    shape = fields.shape or ()
    if "0d-as-1d" in bugs and not shape:
        shape = (1,)
    row_major = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    strides = fields.strides if fields.strides is not None and len(shape) == fields.ndim else None
    if strides is None:
        strides = (0,) * len(shape) if "null-strides-as-zeros" in bugs else row_major
    if "ignore-strides" in bugs:
        strides = row_major
    data = fields.data + (0 if "ignore-byte-offset" in bugs else fields.byte_offset)
    if "align-down" in bugs:
        data &= ~7
    byte_strides = tuple(s * item for s in strides)
    numel = int(np.prod(shape))
    if numel == 0:
        array = np.empty(shape, dtype)
        memory = None
    else:
        lo = sum((d - 1) * s for d, s in zip(shape, byte_strides) if s < 0)
        hi = sum((d - 1) * s for d, s in zip(shape, byte_strides) if s > 0) + item
        memory = (ctypes.c_char * (hi - lo)).from_address(data + lo)
        array = np.ndarray(shape, dtype, buffer=memory, offset=-lo, strides=byte_strides)
    if fields.flags & READ_ONLY and "ignore-read-only" not in bugs:
        array.flags.writeable = False

    def release():
        if "never-release" in bugs:
            return
        deleter(ctypes.cast(address, ctypes.POINTER(type(struct))))
        if "release-twice" in bugs:
            deleter(ctypes.cast(address, ctypes.POINTER(type(struct))))

    weakref.finalize(memory if memory is not None else array, release)
    return array


class ToyConsumer(NumPy):
    """NumPy as producer, `toy_from_dlpack` with one bug as consumer."""

    def __init__(self, bug):
        self.bug = bug
        self.name = f"toy-consumer[{bug}]"

    def version(self):
        return "toy"

    def consume(self, x):
        return toy_from_dlpack(x, (self.bug,))
