"""Zero copy between real frameworks through dlbridge, proven by data
pointers and by writes seen on both sides."""

import gc

import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="PyTorch is not installed in this environment")
jax = pytest.importorskip("jax", reason="JAX is not installed in this environment")
jnp = pytest.importorskip("jax.numpy")

import dlbridge


def test_numpy_to_dlbridge_to_torch_shares_memory(no_leak):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = dlbridge.from_dlpack(a)
    pt = torch.from_dlpack(t)
    assert t.data_ptr == a.ctypes.data == pt.data_ptr()
    pt[1, 2] = 100.0
    assert a[1, 2] == 100.0
    a[0, 0] = -1.0
    assert pt[0, 0].item() == -1.0


def test_torch_to_dlbridge_to_numpy_shares_memory(no_leak):
    pt = torch.arange(10, dtype=torch.int64)
    t = dlbridge.from_dlpack(pt)
    a = np.from_dlpack(t)
    assert a.ctypes.data == pt.data_ptr() == t.data_ptr
    a[3] = 42
    assert pt[3].item() == 42
    pt[4] = -7
    assert a[4] == -7


def test_np_asarray_is_zero_copy_and_keeps_the_tensor_alive(no_leak):
    a = np.arange(6, dtype=np.float64)
    t = dlbridge.from_dlpack(a)
    view = np.asarray(t)
    assert view.ctypes.data == a.ctypes.data
    assert view.base is t or t in view.base  # NumPy keeps (t, capsule) for __array_struct__
    del t, a
    gc.collect()
    assert view.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_numpy_to_jax_through_dlbridge(no_leak):
    t = dlbridge.zeros((4, 4), "float32")  # 256-byte aligned: XLA takes it without a copy
    host = t.numpy()
    host[:] = np.arange(16, dtype=np.float32).reshape(4, 4)
    x = jnp.from_dlpack(t)
    assert x.unsafe_buffer_pointer() == t.data_ptr
    np.testing.assert_array_equal(np.asarray(x), host)
    host[0, 1] = 77.0  # JAX arrays are immutable, but the memory is the same
    assert float(x[0, 1]) == 77.0


def test_jax_to_numpy_through_dlbridge(no_leak):
    x = jnp.arange(8, dtype=jnp.int32) * 3
    t = dlbridge.from_dlpack(x)
    assert t.data_ptr == x.unsafe_buffer_pointer()
    a = np.from_dlpack(t)
    assert a.ctypes.data == x.unsafe_buffer_pointer()
    assert a.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]


def test_torch_to_jax_through_dlbridge(no_leak):
    pt = torch.zeros(64, dtype=torch.float32) + 2.5
    t = dlbridge.from_dlpack(pt)
    x = jax.dlpack.from_dlpack(t)
    assert float(x.sum()) == 160.0


def test_full_hop_numpy_dlbridge_torch_numpy(no_leak):
    a = np.linspace(0, 1, 5)
    back = np.from_dlpack(torch.from_dlpack(dlbridge.from_dlpack(a)))
    assert back.ctypes.data == a.ctypes.data
    back[2] = 9.0
    assert a[2] == 9.0


def test_shared_mutation_is_visible_and_copy_breaks_sharing(no_leak):
    a = np.zeros(4, dtype=np.int16)
    t = dlbridge.asarray(a)
    c = t.copy()
    assert c.data_ptr != t.data_ptr and c.is_copied and not c.readonly
    a[0] = 5
    assert t.numpy()[0] == 5
    assert c.numpy()[0] == 0
    c.numpy()[1] = 9
    assert a[1] == 0

