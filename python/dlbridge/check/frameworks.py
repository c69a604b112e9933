"""The frameworks the checker knows: how to make one of their tensors from
a NumPy array (the producer side) and how they import a DLPack producer
(the consumer side). A framework author points the checker at their own
type with "module:constructor" (constructor(numpy_array) -> their object)
and, for the consumer side, "module:constructor:from_dlpack" or
"module::from_dlpack"."""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Optional

import numpy as np


class Unsupported(Exception):
    """The framework cannot make or hold this (a dtype, a rank): not a failure."""


class Framework:
    """One framework under test. `make(a)` returns a producer object with
    `a`'s values (raising Unsupported where it cannot); `consume(x)`
    imports a DLPack producer (None: no consumer side); `to_numpy(y)` reads
    an imported array's values back; `readonly(a)` a read-only producer,
    if the framework has such arrays; `views(a)` strided views the
    framework makes (name -> (object, the NumPy equivalent))."""

    name = "?"
    module_name = ""
    #: Where its tensors are: (DLPack device type, id).
    device = (1, 0)

    def version(self) -> str:
        module = importlib.import_module(self.module_name)
        return getattr(module, "__version__", "?")

    def make(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    consume: Optional[Callable[[Any], Any]] = None

    def to_numpy(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def readonly(self, a: np.ndarray) -> Any:
        raise Unsupported(f"{self.name} has no read-only arrays")

    def views(self, a: np.ndarray) -> dict:
        return {}

    def memory(self) -> int:
        """Memory in use (bytes) where its tensors live: the process's resident size for the CPU."""
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def pending(self, n: int):
        """CUDA frameworks: (a tensor of n float32 ones whose last writes are still
        queued on a side stream, the context that makes that stream current, 1.0)."""
        raise Unsupported(f"{self.name} has no streams")

    def big_endian(self, a: np.ndarray) -> Any:
        """A producer of `a`'s values stored in the other byte order."""
        raise Unsupported(f"{self.name} has no data in the other byte order")

    def writable(self, y: Any) -> bool:
        """Whether writing through the imported array `y` would change the producer's memory."""
        return bool(getattr(getattr(y, "flags", None), "writeable", False))


def _numpy_like(a: np.ndarray) -> np.ndarray:
    return np.array(a, copy=True, order="C")


class NumPy(Framework):
    name, module_name = "numpy", "numpy"

    def make(self, a):
        return _numpy_like(a)

    def consume(self, x):
        return np.from_dlpack(x)

    def readonly(self, a):
        b = _numpy_like(a)
        b.flags.writeable = False
        return b

    def views(self, a):
        b = _numpy_like(a)
        return {"transposed": (b.T, a.T), "stepped": (b[::2], a[::2]), "reversed": (b[::-1], a[::-1])}

    def big_endian(self, a):
        return a.astype(a.dtype.newbyteorder(">"))


class Torch(Framework):
    name, module_name = "torch", "torch"

    def make(self, a):
        import torch
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(_numpy_like(a).view(np.uint16)).view(torch.bfloat16)
        if a.dtype.name == "float8_e4m3fn":
            return torch.from_numpy(_numpy_like(a).view(np.uint8)).view(torch.float8_e4m3fn)
        if a.dtype.name == "float8_e5m2":
            return torch.from_numpy(_numpy_like(a).view(np.uint8)).view(torch.float8_e5m2)
        try:
            return torch.from_numpy(_numpy_like(a))
        except TypeError as e:
            raise Unsupported(str(e)) from None

    def consume(self, x):
        import torch
        return torch.from_dlpack(x)

    def to_numpy(self, y):
        import torch
        special = {torch.bfloat16: ("uint16", "bfloat16"), torch.float8_e4m3fn: ("uint8", "float8_e4m3fn"),
                   torch.float8_e5m2: ("uint8", "float8_e5m2")}
        if y.dtype in special:
            import ml_dtypes
            bits, name = special[y.dtype]
            return y.view(getattr(torch, bits)).numpy().view(getattr(ml_dtypes, name))
        return y.numpy()

    def views(self, a):
        b = self.make(a)
        return {"transposed": (b.T, a.T), "stepped": (b[::2], a[::2])}

    def writable(self, y):
        return True  # torch tensors have no read-only state


class Jax(Framework):
    name, module_name = "jax", "jax"

    def make(self, a):
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        try:
            return jnp.asarray(a)
        except TypeError as e:
            raise Unsupported(str(e)) from None

    def consume(self, x):
        import jax.numpy as jnp
        return jnp.from_dlpack(x)

    def readonly(self, a):
        return self.make(a)  # JAX arrays are immutable

    def writable(self, y):
        return False


class TensorFlow(Framework):
    """TensorFlow has only tf.experimental.dlpack (legacy capsules): its
    producer is `to_dlpack(tensor)`, wrapped to answer __dlpack__ with no
    keywords; its consumer takes a capsule, asked for with no keywords."""

    name, module_name = "tensorflow", "tensorflow"

    class _Producer:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kwargs):
            import tensorflow as tf
            if kwargs:
                raise TypeError("tf.experimental.dlpack.to_dlpack takes no keywords")
            return tf.experimental.dlpack.to_dlpack(self.t)

        def __dlpack_device__(self):
            return (1, 0)

    def make(self, a):
        import tensorflow as tf
        try:
            return self._Producer(tf.constant(a))
        except (TypeError, ValueError) as e:
            raise Unsupported(str(e)) from None

    def consume(self, x):
        import tensorflow as tf
        return tf.experimental.dlpack.from_dlpack(x.__dlpack__())

    def to_numpy(self, y):
        return y.numpy()

    def writable(self, y):
        return False


class TvmFfi(Framework):
    name, module_name = "tvm_ffi", "tvm_ffi"

    def make(self, a):
        import tvm_ffi
        try:
            return tvm_ffi.from_dlpack(_numpy_like(a))
        except Exception as e:  # noqa: BLE001 - its dtype refusals vary
            raise Unsupported(str(e)) from None

    def consume(self, x):
        import tvm_ffi
        return tvm_ffi.from_dlpack(x)

    def to_numpy(self, y):
        return np.from_dlpack(y)

    def writable(self, y):
        return True


class CuPy(Framework):
    """CuPy on CUDA device 0 (a GPU machine): producer checks and dlbridge's
    tensors as the consumer side (the probes are CPU memory)."""

    name, module_name = "cupy", "cupy"
    device = (2, 0)

    def make(self, a):
        import cupy
        try:
            return cupy.asarray(_numpy_like(a))
        except (TypeError, ValueError) as e:
            raise Unsupported(str(e)) from None

    def consume(self, x):
        import cupy
        return cupy.from_dlpack(x)

    def to_numpy(self, y):
        import cupy
        return cupy.asnumpy(y)

    def views(self, a):
        b = self.make(a)
        return {"transposed": (b.T, a.T), "stepped": (b[::2], a[::2]), "reversed": (b[::-1], a[::-1])}

    def memory(self):
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()
        return cupy.get_default_memory_pool().used_bytes()

    def pending(self, n):
        import cupy
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            x = cupy.zeros(n, dtype=cupy.float32)
            for _ in range(40):
                x += 1.0 / 40
            x[...] = cupy.rint(x)  # 1.0 once every write has landed
        return x, stream, 1.0


class DLBridge(Framework):
    """dlbridge itself, as a framework under test (the reference)."""

    name, module_name = "dlbridge", "dlbridge"

    def make(self, a):
        import dlbridge
        return dlbridge.asarray(_numpy_like(a))

    def consume(self, x):
        import dlbridge
        return dlbridge.from_dlpack(x)

    def to_numpy(self, y):
        return np.asarray(y)

    def readonly(self, a):
        import dlbridge
        b = _numpy_like(a)
        b.flags.writeable = False
        return dlbridge.asarray(b)

    def views(self, a):
        import dlbridge
        b = _numpy_like(a)
        return {"transposed": (dlbridge.asarray(b.T), a.T), "reversed": (dlbridge.asarray(b[::-1]), a[::-1])}

    def big_endian(self, a):
        import dlbridge
        return dlbridge.asarray(a.astype(a.dtype.newbyteorder(">")))

    def writable(self, y):
        return not y.readonly


class Custom(Framework):
    """A framework named on the command line: "module:constructor",
    "module:constructor:from_dlpack" or "module::from_dlpack"."""

    def __init__(self, spec: str):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"{spec!r}: expected module:constructor[:from_dlpack]")
        self.name, self.module_name = spec, parts[0]
        module = importlib.import_module(parts[0])
        self._make = getattr(module, parts[1]) if parts[1] else None
        if len(parts) == 3 and parts[2]:
            self.consume = getattr(module, parts[2])

    def make(self, a):
        if self._make is None:
            raise Unsupported("no constructor given")
        return self._make(_numpy_like(a))


BUILT_IN = {f.name: f for f in (NumPy, Torch, Jax, TensorFlow, TvmFfi, CuPy, DLBridge)}


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return False


def resolve(name: str) -> Framework:
    if name in BUILT_IN:
        return BUILT_IN[name]()
    if ":" in name:
        return Custom(name)
    raise ValueError(f"unknown framework {name!r}: one of {', '.join(BUILT_IN)} or module:constructor")


def installed() -> list:
    """The built-in frameworks importable here (dlbridge itself excluded)."""
    found = []
    for name, cls in BUILT_IN.items():
        if name == "dlbridge":
            continue
        try:
            importlib.import_module(cls.module_name)
        except Exception:  # noqa: BLE001 - any import failure means absent
            continue
        if cls.device[0] != 1 and not _has_gpu():
            continue  # CuPy without a GPU
        found.append(name)
    return found
