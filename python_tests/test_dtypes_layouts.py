"""Every dtype NumPy, PyTorch and ml_dtypes share, and every layout:
0-d, size-0, transposed, stepped, negative strides, read-only,
big-endian."""

import ml_dtypes
import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="PyTorch is not installed in this environment")

import dlbridge

SHARED = [
    ("bool", np.bool_, torch.bool),
    ("int8", np.int8, torch.int8),
    ("int16", np.int16, torch.int16),
    ("int32", np.int32, torch.int32),
    ("int64", np.int64, torch.int64),
    ("uint8", np.uint8, torch.uint8),
    ("uint16", np.uint16, torch.uint16),
    ("uint32", np.uint32, torch.uint32),
    ("uint64", np.uint64, torch.uint64),
    ("float16", np.float16, torch.float16),
    ("float32", np.float32, torch.float32),
    ("float64", np.float64, torch.float64),
    ("complex64", np.complex64, torch.complex64),
    ("complex128", np.complex128, torch.complex128),
]


@pytest.mark.parametrize("name,np_type,torch_type", SHARED, ids=[s[0] for s in SHARED])
def test_every_shared_dtype_round_trips_zero_copy(name, np_type, torch_type, no_leak):
    a = (np.arange(12) % 3).astype(np_type).reshape(3, 4)
    t = dlbridge.from_dlpack(a)
    assert t.dtype == name and t.shape == (3, 4) and t.nbytes == a.nbytes
    assert t.__array_interface__["typestr"] == a.dtype.str.replace("=", "<")
    pt = torch.from_dlpack(t)
    assert pt.dtype == torch_type and pt.data_ptr() == a.ctypes.data
    back = np.from_dlpack(dlbridge.from_dlpack(pt))
    assert back.dtype == a.dtype and back.ctypes.data == a.ctypes.data
    np.testing.assert_array_equal(np.asarray(t), a)


def test_bfloat16_reaches_numpy_as_ml_dtypes(no_leak):
    pt = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    t = dlbridge.from_dlpack(pt)
    assert t.dtype == "bfloat16"
    assert t.__array_interface__["typestr"] == "<V2"
    a = t.numpy()
    assert a.dtype == ml_dtypes.bfloat16 and a.ctypes.data == pt.data_ptr()
    assert a.astype(np.float32).tolist() == [1.5, -2.0, 3.25]
    a[0] = 8
    assert pt[0].item() == 8.0


def test_ml_dtypes_arrays_keep_their_type_through_the_array_interface(no_leak):
    for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        a = np.array([1, 2, 3], dtype=getattr(ml_dtypes, name))
        t = dlbridge.asarray(a)  # NumPy cannot DLPack-export these; the array interface carries them
        assert t.dtype == name and t.data_ptr == a.ctypes.data
        b = t.numpy()
        assert b.dtype == a.dtype and b.ctypes.data == a.ctypes.data


def test_float8_from_torch_to_numpy(no_leak):
    pt = torch.tensor([0.5, 1.0, -4.0]).to(torch.float8_e4m3fn)
    t = dlbridge.from_dlpack(pt)
    assert t.dtype == "float8_e4m3fn"
    assert t.numpy().astype(np.float32).tolist() == [0.5, 1.0, -4.0]


def test_zero_d_and_size_zero(no_leak):
    s = dlbridge.from_dlpack(np.array(3.5))
    assert s.shape == () and s.ndim == 0 and s.nbytes == 8
    assert torch.from_dlpack(s).item() == 3.5 and float(np.asarray(s)) == 3.5
    e = dlbridge.from_dlpack(np.zeros((0, 5), dtype=np.int32))
    assert e.shape == (0, 5) and e.nbytes == 0 and e.is_contiguous
    assert np.asarray(e).shape == (0, 5)
    assert torch.from_dlpack(e).shape == (0, 5)


def test_transposed_and_stepped_views_keep_their_strides(no_leak):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    for view, strides in ((a.T, (1, 6)), (a[::2, 1::3], (12, 3))):
        t = dlbridge.from_dlpack(view)
        assert t.strides == strides and not t.is_contiguous
        assert t.data_ptr == view.ctypes.data
        np.testing.assert_array_equal(np.asarray(t), view)
        pt = torch.from_dlpack(t)
        assert pt.stride() == strides
        np.testing.assert_array_equal(pt.numpy(), view)


def test_negative_strides_accepted_and_torch_refuses_clearly(no_leak):
    a = np.arange(5, dtype=np.int64)
    r = a[::-1]
    t = dlbridge.from_dlpack(r)
    assert t.strides == (-1,) and t.data_ptr == r.ctypes.data
    assert np.asarray(t).tolist() == [4, 3, 2, 1, 0]
    assert np.from_dlpack(t).tolist() == [4, 3, 2, 1, 0]
    with pytest.raises((BufferError, RuntimeError, ValueError)) as info:
        torch.from_dlpack(t)
    assert "stride" in str(info.value).lower()
    pt = torch.from_dlpack(t.copy())  # an explicit copy is row-major
    assert pt.tolist() == [4, 3, 2, 1, 0]


def test_read_only_numpy_stays_read_only(no_leak):
    a = np.arange(4, dtype=np.float32)
    a.flags.writeable = False
    t = dlbridge.from_dlpack(a)
    assert t.readonly
    b = np.from_dlpack(t)
    assert not b.flags.writeable and b.ctypes.data == a.ctypes.data
    c = np.asarray(t)
    assert not c.flags.writeable
    with pytest.raises(ValueError):
        c[0] = 1.0
    with pytest.raises(BufferError, match="read-only"):
        t.__dlpack__()  # a legacy capsule cannot say read-only
    w = t.copy()
    assert not w.readonly


def test_big_endian_arrays_are_swapped_into_a_copy_or_refused(no_leak):
    a = np.arange(4, dtype=">f4")
    with pytest.raises(BufferError, match="byte order"):
        dlbridge.from_dlpack(a)  # NumPy refuses to DLPack-export it
    with pytest.raises(BufferError, match="byte order|byte-swap"):
        dlbridge.asarray(a, copy=False)
    t = dlbridge.asarray(a)  # copy=None: a copy is allowed when needed
    assert t.is_copied and np.asarray(t).tolist() == [0.0, 1.0, 2.0, 3.0]
    one_byte = np.arange(4, dtype=">i1")  # byte order means nothing for one byte
    u = dlbridge.asarray(one_byte)
    assert u.dtype == "int8" and not u.is_copied and u.data_ptr == one_byte.ctypes.data
