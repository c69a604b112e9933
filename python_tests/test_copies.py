"""Explicit copies: contiguous, astype for every numeric pair, byte swaps,
checked bit for bit against NumPy (and ml_dtypes for bfloat16)."""

import itertools
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import dlbridge
from _optional import needs_torch, torch

TYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
         "float16", "float32", "float64", "complex64", "complex128", "bfloat16"]


def np_dtype(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def source(name):
    """Values every target can hold without undefined behaviour: negatives
    only for integer sources (int -> uint wraps the same everywhere)."""
    if name == "bool":
        values = [0, 1, 1, 0, 1, 0]
    elif name.startswith("int"):
        values = [0, 1, -1, 100, -100, 7]
    elif name.startswith("uint"):
        values = [0, 1, 255, 100, 3, 7]
    else:
        values = [0.0, 1.5, 2.25, 99.75, 0.3, 7.0]
    return np.array(values * 4).astype(np_dtype(name)).reshape(4, 6)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("src,dst", list(itertools.product(TYPES, TYPES)))
def test_astype_matches_numpy_bit_for_bit(src, dst, no_leak):
    a = source(src)
    for view in (a, a.T, a[::-1, ::2]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ComplexWarning: NumPy drops the imaginary part too
            want = view.astype(np_dtype(dst))
        got = dlbridge.asarray(view).astype(dst)
        assert got.is_copied and got.is_contiguous and got.dtype == dst
        assert same_bits(got.numpy(), np.ascontiguousarray(want)), (src, dst, got.numpy(), want)


def test_float32_to_float16_rounds_like_numpy_on_every_kind_of_value(no_leak):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 6e-8, 3e-8, 2.98e-8,
                         1.0009765625, 1.00048828125, 1.00146484375], dtype=np.float32)
    x = np.concatenate([bits.view(np.float32), specials])
    got = dlbridge.asarray(x).astype("float16").numpy()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()
    back = dlbridge.asarray(want).astype("float32").numpy()
    assert back[~nan].tobytes() == want[~nan].astype(np.float32).tobytes()


def test_float64_to_float16_rounds_once_like_numpy(no_leak):
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2**64 - 1, size=300_000, dtype=np.uint64, endpoint=True)
    x = np.concatenate([bits.view(np.float64), rng.standard_normal(100_000) * 1e3,
                        rng.standard_normal(100_000) * 1e-6, [530.7499882417525, 2.0**-25, 65519.99, 65520.0]])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    got = dlbridge.asarray(x).astype("float16").numpy()
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


def test_float32_and_float64_to_bfloat16_match_ml_dtypes(no_leak):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(100_000).astype(np.float32) * 1e3,
                        np.array([0.0, -0.0, np.inf, -np.inf, 1.00390625, 1.01171875, 3.4e38], dtype=np.float32)])
    for source_array in (x, x.astype(np.float64)):
        got = dlbridge.asarray(source_array).astype("bfloat16").numpy()
        want = source_array.astype(ml_dtypes.bfloat16)
        assert got.tobytes() == want.tobytes()
    nan = dlbridge.asarray(np.array([np.nan], dtype=np.float32)).astype("bfloat16").numpy()
    assert np.isnan(nan.astype(np.float32))[0]


def test_large_copies_use_both_cores_and_stay_exact(no_leak):
    a = np.arange(3_000_000, dtype=np.float32).reshape(1500, 2000)
    got = dlbridge.asarray(a.T).copy().numpy()
    assert np.array_equal(got, np.ascontiguousarray(a.T))
    h = dlbridge.asarray(a[:, ::2]).astype("float16").numpy()
    with np.errstate(over="ignore"):
        assert h.tobytes() == a[:, ::2].astype(np.float16).tobytes()


@needs_torch
def test_copy_of_negative_strides_goes_to_torch(no_leak):
    a = np.arange(12.0).reshape(3, 4)[::-1, ::-1]
    c = dlbridge.asarray(a).copy()
    assert c.strides == (4, 1)
    assert torch.from_dlpack(c).numpy().tolist() == a.tolist()


@pytest.mark.parametrize("dtype", [">i2", ">u4", ">i8", ">f2", ">f4", ">f8", ">c8", ">c16"])
def test_big_endian_input_is_byte_swapped_into_a_copy(dtype, no_leak):
    a = (np.arange(12) - 3).astype(dtype).reshape(3, 4)[:, ::2]
    t = dlbridge.asarray(a)
    assert t.is_copied and t.dtype == np.dtype(dtype).newbyteorder("=").name
    assert np.array_equal(np.asarray(t), a)
    with pytest.raises(BufferError, match="byte order"):
        dlbridge.asarray(a, copy=False)
    # The copy comes through the buffer protocol (one native call): the
    # buffer is released once the copy is made, the source not kept.
    refs = sys.getrefcount(a)
    u = dlbridge.asarray(a)
    assert sys.getrefcount(a) == refs and u.is_copied and np.array_equal(np.asarray(u), a)
    assert dlbridge._lib.native["from_buffer"](a, True).is_copied
    with pytest.raises(BufferError, match="big-endian"):
        dlbridge._lib.native["from_buffer"](a)  # without swap: refused, as before


def test_astype_refuses_what_it_cannot_convert(no_leak):
    t = dlbridge.asarray(np.arange(3.0))
    with pytest.raises(BufferError, match="numeric types"):
        t.astype("float8_e4m3fn")
    with pytest.raises(ValueError, match="unknown dtype"):
        t.astype("float128")
    with pytest.raises(TypeError):
        t.astype(3)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64", "complex128"])
def test_permuted_3d_copies_cross_block_boundaries(dtype, no_leak):
    a = (np.arange(3 * 50 * 37) % 251).astype(dtype).reshape(3, 50, 37)
    for view in (a.transpose(0, 2, 1), a.transpose(2, 0, 1), a[:, ::-1].transpose(1, 2, 0), a.T[::2]):
        got = dlbridge.asarray(view).copy().numpy()
        assert got.tobytes() == np.ascontiguousarray(view).tobytes()
