"""Sub-byte types (DLPack 1.1): ml_dtypes' int2, uint2, int4, uint4,
float4_e2m1fn, float6_e2m3fn and float6_e3m2fn cross dlbridge both ways
padded (one element per byte, IS_SUBBYTE_TYPE_PADDED); packed tensors
(DLPack's default) are described in bits; repack() converts between the
two, checked bit for bit against a naive reference."""

import ctypes

import numpy as np
import pytest

import dlbridge
from dlbridge import capi

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")

SUBBYTE = {"int2": 2, "uint2": 2, "int4": 4, "uint4": 4, "float4_e2m1fn": 4, "float6_e2m3fn": 6, "float6_e3m2fn": 6}
PADDED = 1 << 2  # DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED


def sample(name, n=37):
    """n values of the type, through its own conversion (every bit pattern of the type's width appears)."""
    codes = (np.arange(n) * 7 % (1 << SUBBYTE[name])).astype(np.uint8)
    return codes.view(getattr(ml_dtypes, name))


def naive_pack(codes, bits):
    """DLPack's packed form, one bit at a time: element i takes bits i*bits.. (little bit-endian)."""
    out = bytearray((len(codes) * bits + 7) // 8)
    for i, code in enumerate(codes):
        for b in range(bits):
            if code >> b & 1:
                out[(i * bits + b) // 8] |= 1 << ((i * bits + b) % 8)
    return bytes(out)


def flags_of_export(t):
    managed = capi.take_capsule(t.__dlpack__(max_version=(1, 3)))
    flags = managed.contents.flags
    managed.contents.deleter(managed)
    return flags


@pytest.mark.parametrize("name", sorted(SUBBYTE))
def test_ml_dtypes_arrays_cross_padded_both_ways(name, no_leak):
    a = sample(name)
    t = dlbridge.asarray(a)
    assert (t.dtype, t.is_padded, t.nbytes, t.data_ptr) == (name, True, a.nbytes, a.ctypes.data)  # zero copy
    assert flags_of_export(t) & PADDED
    back = t.numpy()
    assert back.dtype == a.dtype and back.ctypes.data == a.ctypes.data
    assert back.view(np.uint8).tolist() == a.view(np.uint8).tolist()
    assert np.asarray(t).dtype == a.dtype  # __array_struct__ names the ml_dtypes type
    # A strided view of the padded data is a plain strided view.
    s = dlbridge.asarray(a[::3])
    assert s.strides == (3,) and s.numpy().view(np.uint8).tolist() == a[::3].view(np.uint8).tolist()
    del t, back, s


@pytest.mark.parametrize("name", sorted(SUBBYTE))
def test_repack_matches_a_naive_reference_bit_for_bit(name, no_leak):
    bits = SUBBYTE[name]
    a = sample(name)
    codes = a.view(np.uint8)
    for source in (a, a[::-2], a.reshape(1, 37)[:, 1:]):
        src_codes = np.ascontiguousarray(source).view(np.uint8).ravel()
        packed = dlbridge.asarray(source).repack(False)
        assert (packed.is_padded, packed.is_copied, packed.dtype) == (False, True, name)
        assert packed.nbytes == (src_codes.size * bits + 7) // 8
        assert ctypes.string_at(packed.data_ptr, packed.nbytes) == naive_pack(src_codes.tolist(), bits)
        assert not flags_of_export(packed) & PADDED
        # Packed data has no NumPy form: refused clearly, never misread.
        with pytest.raises((BufferError, AttributeError, TypeError)):
            packed.numpy()
        padded = packed.repack(True)
        assert padded.is_padded and padded.numpy().view(np.uint8).ravel().tolist() == src_codes.tolist()
        del packed, padded
    assert codes.size == 37


def test_repack_refuses_other_dtypes_and_copies_the_same_form(no_leak):
    with pytest.raises(BufferError, match="not a sub-byte"):
        dlbridge.zeros((4,), "int8").repack(False)
    t = dlbridge.asarray(sample("int4"))
    same = t.repack(True)
    assert same.is_padded and same.is_copied and same.data_ptr != t.data_ptr
    del t, same


def test_packed_tensors_are_described_in_bits_and_whole_elements(no_leak):
    # A packed int4 buffer wrapped through the C API: 5 elements in 3 bytes.
    data = (ctypes.c_uint8 * 3)(0x21, 0x43, 0x05)
    shape = (ctypes.c_int64 * 1)(5)
    handle = ctypes.c_void_p()
    no_release = capi.dlb_release_fn()
    capi.check(capi.lib.dlb_tensor_wrap(data, capi.DLDevice(1, 0), capi.DLDataType(0, 4, 1), 1, shape, None, 0, 0,
                                        no_release, None, ctypes.byref(handle)))
    t = capi.to_tensor(handle)
    assert (t.dtype, t.is_padded, t.nbytes, t.shape) == ("int4", False, 3, (5,))
    assert t.repack(True).numpy().view(np.uint8).tolist() == [1, 2, 3, 4, 5]
    # A stride that is not one element: packed elements cannot be strided.
    strides = (ctypes.c_int64 * 1)(2)
    status = capi.lib.dlb_tensor_wrap(data, capi.DLDevice(1, 0), capi.DLDataType(0, 4, 1), 1, shape, strides, 0, 0,
                                      no_release, None, ctypes.byref(handle))
    assert capi.STATUS[status] == "DLB_ERR_INVALID_STRIDES", capi.STATUS[status]
    del t


def test_torch_sub_byte_exports_where_it_makes_any():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed in this environment")
    tried = {}
    for name in ("uint4", "int4", "uint2", "int2", "float4_e2m1fn_x2"):
        dtype = getattr(torch, name, None)
        if dtype is None:
            tried[name] = "no such dtype"
            continue
        try:
            x = torch.zeros(4, dtype=dtype)
            t = dlbridge.from_dlpack(x)
        except Exception as e:  # PyTorch refuses to export most of them
            tried[name] = f"{type(e).__name__}: {e}"[:80]
            continue
        tried[name] = f"exported as {t.dtype}, padded={t.is_padded}, nbytes={t.nbytes}"
        assert t.data_ptr == x.data_ptr()
    if all("exported" not in v for v in tried.values()):
        pytest.skip(f"PyTorch {torch.__version__} exports none of its sub-byte types: {tried}")


def test_review_findings_on_sub_byte_data(no_leak):
    # Padded -> padded keeps only the element bits (the rest of a byte is not data).
    junk = np.array([0xFF, 0xF1, 0x12], np.uint8).view(ml_dtypes.int4)
    same = dlbridge.asarray(junk).repack(True)
    assert same.numpy().view(np.uint8).tolist() == [0x0F, 0x01, 0x02]
    # A bare DLTensor has no flags: padded data would read as packed, so the
    # exchange API's dltensor_from_py_object_no_sync refuses it (see test_exchange_api).
    del same
