"""dlbridge demo: NumPy, PyTorch, JAX and a C library share ONE buffer.

Every address printed is the same memory; a write by any of them is seen
by all the others. Run with `make demo`.
"""

import ctypes
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import torch

import dlbridge

HERE = pathlib.Path(__file__).resolve().parent
consumer = ctypes.CDLL(str(HERE / "libc_consumer.so"))
consumer.c_consumer_add.restype = ctypes.c_double
consumer.c_consumer_add.argtypes = [ctypes.c_void_p, ctypes.c_float]

get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
get_pointer.restype = ctypes.c_void_p
get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
set_name = ctypes.pythonapi.PyCapsule_SetName
set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]


def hand_to_c(obj, delta):
    """What a C extension does with a DLPack producer: take a versioned
    capsule, mark it consumed, pass the DLManagedTensorVersioned to C."""
    capsule = obj.__dlpack__(max_version=(1, 3))
    ptr = get_pointer(capsule, b"dltensor_versioned")
    set_name(capsule, b"used_dltensor_versioned")
    return consumer.c_consumer_add(ptr, delta)


def show(title, **arrays):
    print(title)
    for name, value in arrays.items():
        print(f"  {name:7s} {np.asarray(value).tolist()}")


print(f"dlbridge {dlbridge.__version__} | numpy {np.__version__} | torch {torch.__version__} | "
      f"jax {__import__('jax').__version__}")

# dlbridge allocates 256-byte aligned memory: XLA (JAX) copies buffers that are
# not 64-byte aligned, and NumPy's small arrays are only 16-byte aligned.
t = dlbridge.zeros((2, 3), "float32")
a = t.numpy()                                              # NumPy: zero copy
a[:] = np.arange(6).reshape(2, 3)
pt = torch.from_dlpack(t)                                  # PyTorch: zero copy
x = jnp.from_dlpack(t)                                     # JAX: zero copy
view = np.asarray(t)                                       # NumPy again, via __array_interface__

print("\n1) one buffer, five views - the same address everywhere:")
for name, ptr in [("numpy", a.ctypes.data), ("dlbridge", t.data_ptr), ("torch", pt.data_ptr()),
                  ("jax", x.unsafe_buffer_pointer()), ("asarray", view.ctypes.data)]:
    print(f"  {name:9s} {ptr:#x}")
assert len({a.ctypes.data, t.data_ptr, pt.data_ptr(), x.unsafe_buffer_pointer(), view.ctypes.data}) == 1

a[0, 0] = 100.0
show("\n2) NumPy writes a[0,0] = 100:", torch=pt, jax=x, asarray=view)
pt[1, 2] += 0.5
show("\n3) PyTorch adds 0.5 to [1,2]:", numpy=a, jax=x)
print("\n4) a C library adds 1000 to everything, through DLPack:")
total = hand_to_c(t, 1000.0)
show(f"  (C saw sum {total})", numpy=a, torch=pt, jax=x)
assert a[0, 0] == 1100.0 and float(x[1, 2]) == 1005.5

print("\n5) read-only data stays read-only:")
ro = np.arange(3, dtype=np.float32)
ro.flags.writeable = False
r = dlbridge.from_dlpack(ro)
print(f"  {r}")
print(f"  np.from_dlpack(r).flags.writeable = {np.from_dlpack(r).flags.writeable}")
hand_to_c(r, 1.0)
print(f"  numpy still {ro.tolist()}")
try:
    jnp.from_dlpack(r)
except BufferError as e:
    print(f"  JAX asks for a legacy capsule, which cannot say read-only -> BufferError: {e}")

print("\n6) DLPack 1.3's C exchange API: one C call instead of __dlpack__, both ways:")
w = torch.arange(4, dtype=torch.float32)
via_table = dlbridge.from_dlpack(w)  # PyTorch's table (torch.Tensor.__dlpack_c_exchange_api__)
print(f"  torch -> dlbridge through PyTorch's table: same address {via_table.data_ptr == w.data_ptr()}")
try:
    import tvm_ffi
except ImportError:
    print("  (apache-tvm-ffi is not installed: the other direction is skipped)")
else:
    before = dlbridge._lib.native["exchange_api_calls"]()
    v = tvm_ffi.from_dlpack(via_table)  # dlbridge's table
    used = dlbridge._lib.native["exchange_api_calls"]() - before
    print(f"  dlbridge -> tvm-ffi through dlbridge's table: {used} table call, same address "
          f"{np.from_dlpack(v).ctypes.data == w.data_ptr()}")
    del v
del via_table, w

del t, a, pt, x, view, r
__import__("gc").collect()
print(f"\nlive dlbridge tensors after cleanup: {dlbridge.live_tensor_count()}")
sys.exit(0 if dlbridge.live_tensor_count() == 0 else 1)
