"""DLPack frameworks outside the pinned set (python_tests/requirements.txt),
on the CPU: PyArrow, PaddlePaddle, MLX (Linux CPU build), ONNX Runtime,
NVIDIA Warp and array-api-strict. Each framework's tests are skipped when it
is not installed (the project's .venv has none of them). Tried with pyarrow
26.0.1, paddlepaddle 3.3.1, mlx 0.32.4 (mlx[cpu]), onnxruntime 1.32.0,
warp-lang 1.19.0, array-api-strict 2.6.1, NumPy 2.4.6:

    python3 -m venv /tmp/others
    /tmp/others/bin/pip install numpy==2.4.6 ml-dtypes pytest pyarrow paddlepaddle 'mlx[cpu]' \\
        onnxruntime warp-lang array-api-strict
    PYTHONPATH=python /tmp/others/bin/python -m pytest -q python_tests/test_other_frameworks.py

What is checked: both directions (the framework's tensor -> dlbridge.from_dlpack,
a dlbridge tensor -> the framework's own DLPack import) for float32, int64,
bool and float16 and for contiguous, transposed, 0-d and empty layouts
(values, and the data pointer where the exchange is zero copy); the source
dropped first; read-only flags; __dlpack_device__; which __dlpack__ keywords
each side uses; dlbridge.asarray on the framework's buffer protocol or
__array_interface__; and that unsupported cases fail with a clear exception.
xfail(strict=True) marks behaviour that is the other framework's bug (or a
deviation from the DLPack / array API spec), with the reason; when the
framework fixes it the test XPASSes and fails, so the docs can be updated.
See docs/frameworks.md.
"""

from __future__ import annotations

import functools
import gc
import warnings

import numpy as np
import pytest

import dlbridge


def _need(module: str, package: str):
    return pytest.importorskip(module, reason=(
        f"{package} is not installed (outside the pinned set: see this file's docstring)"))


@pytest.fixture(scope="module")
def pa():
    return _need("pyarrow", "pyarrow")


@pytest.fixture(scope="module")
def paddle():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No ccache found" at import
        return _need("paddle", "paddlepaddle")


@pytest.fixture(scope="module")
def mx():
    return _need("mlx.core", "mlx (mlx[cpu] on Linux)")


@pytest.fixture(scope="module")
def ort():
    return _need("onnxruntime", "onnxruntime")


@pytest.fixture(scope="module")
def wp():
    warp = _need("warp", "warp-lang")
    warp.config.quiet = True
    warp.init()
    return warp


@pytest.fixture(scope="module")
def xp():
    return _need("array_api_strict", "array-api-strict")


def _known_failure(test):
    """For xfail tests: the failure comes back as a plain AssertionError with
    the original message, so that its traceback does not keep the test's
    tensors alive into the next test's leak check."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            test(*args, **kwargs)
            return
        except BaseException as e:  # noqa: BLE001 (re-raised below, without frames)
            message = f"{type(e).__name__}: {e}"
        raise AssertionError(message)

    return run


def _legacy_import_readonly() -> bool:
    """dlbridge's policy for legacy ("dltensor") capsules, which cannot say
    whether the memory may be written: what MLX, Warp and ONNX Runtime send."""
    return dlbridge.from_dlpack(np.arange(2.0).__dlpack__()).readonly


def _base(case: str) -> np.ndarray:
    """The NumPy reference for each dtype / layout case."""
    return {
        "float32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "int64": np.arange(-2, 3, dtype=np.int64),
        "bool": np.array([True, False, True]),
        "float16": np.arange(4, dtype=np.float16) / 2,
        "transposed": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "0-d": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }[case]


CASES = ["float32", "int64", "bool", "float16", "transposed", "0-d", "empty"]


# -- each framework: build a tensor from NumPy, read its pointer and values, import DLPack --

class Pyarrow:
    name = "pyarrow"
    # pa.Array (1-D, no nulls) and pa.Tensor (N-D, strided) both export DLPack.
    skip_out = {"bool": "Arrow booleans are bit-packed: their __dlpack__ raises (test_pyarrow_bool_and_nulls)"}
    skip_in = {"bool": "pyarrow.Tensor has no bool: ArrowInvalid 'unsupported DLPack type 6' (test_pyarrow_refusals)"}

    def __init__(self, pa):
        self.pa = pa

    def make(self, a):
        if a.ndim == 1 and a.flags.c_contiguous:
            return self.pa.array(a)
        return self.pa.Tensor.from_numpy(a)

    def ptr(self, x):
        if isinstance(x, self.pa.Array):
            return x.buffers()[1].address
        return x.to_numpy().ctypes.data

    def values(self, x):
        return x.to_numpy(zero_copy_only=False) if isinstance(x, self.pa.Array) else x.to_numpy()

    def consume(self, t):
        return self.pa.Tensor.from_dlpack(t)


class Paddle:
    name = "paddle"
    skip_out = {}
    skip_in = {}

    def __init__(self, paddle):
        self.paddle = paddle

    def make(self, a):
        if a.ndim == 2 and not a.flags.c_contiguous:
            return self.paddle.to_tensor(np.ascontiguousarray(a.T)).T  # a strided view (strides [1, 3])
        return self.paddle.to_tensor(a)

    def ptr(self, x):
        return x.data_ptr()

    def values(self, x):
        return x.numpy()

    def consume(self, t):
        return self.paddle.from_dlpack(t)


class Mlx:
    name = "mlx"
    skip_out = {}
    skip_in = {}
    copies_on_import = True  # mx.from_dlpack copies every CPU import (test_mlx_imports_share_memory)

    def __init__(self, mx):
        self.mx = mx

    def make(self, a):
        if a.ndim == 2 and not a.flags.c_contiguous:
            return self.mx.array(np.ascontiguousarray(a.T)).T  # a strided view
        return self.mx.array(a)

    def ptr(self, x):
        return np.asarray(memoryview(x)).ctypes.data  # MLX's buffer protocol

    def values(self, x):
        return np.array(x)

    def consume(self, t):
        return self.mx.from_dlpack(t)


class Onnxruntime:
    name = "onnxruntime"
    skip_out = {"transposed": "OrtValues are always contiguous (ortvalue_from_numpy copies a transposed array)"}
    skip_in = {"transposed": "ONNX Runtime imports contiguous tensors only (test_onnxruntime_refusals)"}

    def __init__(self, ort):
        self.ort = ort

    def make(self, a):
        # ONNX Runtime's own memory (ortvalue_from_numpy would borrow the NumPy array's)
        v = self.ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype)
        if a.size:
            v.update_inplace(np.ascontiguousarray(a))
        return v

    def ptr(self, x):
        return x.data_ptr()

    def values(self, x):
        return x.numpy()

    def consume(self, t):
        return self.ort.OrtValue.from_dlpack(t)


class Warp:
    name = "warp"
    skip_out = {"0-d": "Warp has no 0-d arrays (wp.array of a 0-d array has shape (1,))"}
    skip_in = {"0-d": "wp.from_dlpack of a 0-d tensor raises IndexError (test_warp_takes_0d_tensors)"}

    def __init__(self, wp):
        self.wp = wp

    def make(self, a):
        dtype = {np.float32: self.wp.float32, np.int64: self.wp.int64, np.bool_: self.wp.bool,
                 np.float16: self.wp.float16}[a.dtype.type]
        if a.ndim == 2 and not a.flags.c_contiguous:
            return self.wp.array(np.ascontiguousarray(a.T), dtype=dtype, device="cpu").transpose()
        return self.wp.array(a, dtype=dtype, device="cpu")

    def ptr(self, x):
        return x.ptr

    def values(self, x):
        return x.numpy()

    def consume(self, t):
        return self.wp.from_dlpack(t)


class ArrayApiStrict:
    name = "array-api-strict"
    skip_out = {"float16": "array-api-strict has no float16"}
    skip_in = {"float16": "array-api-strict has no float16 (TypeError)"}

    def __init__(self, xp):
        self.xp = xp

    def make(self, a):
        x = self.xp.asarray(np.ascontiguousarray(a.T) if a.ndim == 2 and not a.flags.c_contiguous else a)
        return x.mT if a.ndim == 2 and not a.flags.c_contiguous else x

    def ptr(self, x):
        return np.from_dlpack(x).ctypes.data  # NumPy underneath

    def values(self, x):
        return np.asarray(x)

    def consume(self, t):
        return self.xp.from_dlpack(t)


FRAMEWORKS = {"pyarrow": (Pyarrow, "pa"), "paddle": (Paddle, "paddle"), "mlx": (Mlx, "mx"),
              "onnxruntime": (Onnxruntime, "ort"), "warp": (Warp, "wp"), "array-api-strict": (ArrayApiStrict, "xp")}


@pytest.fixture(params=list(FRAMEWORKS))
def fw(request):
    cls, fixture = FRAMEWORKS[request.param]
    return cls(request.getfixturevalue(fixture))


@pytest.mark.parametrize("case", CASES)
def test_framework_to_dlbridge_is_zero_copy(fw, case, no_leak):
    if case in fw.skip_out:
        pytest.skip(fw.skip_out[case])
    ref = _base(case)
    x = fw.make(ref)
    t = dlbridge.from_dlpack(x)
    assert t.shape == ref.shape and t.dtype == ref.dtype.name and t.device == "cpu"
    assert np.array_equal(t.numpy(), ref)
    if ref.size:
        assert t.data_ptr == fw.ptr(x)  # zero copy
    if case == "transposed":
        assert not t.is_contiguous and t.strides == (1, 4)  # the view arrived as a view


@pytest.mark.parametrize("case", CASES)
def test_dlbridge_to_framework(fw, case, no_leak):
    if case in fw.skip_in:
        pytest.skip(fw.skip_in[case])
    ref = _base(case)
    t = dlbridge.asarray(ref)
    x = fw.consume(t)
    assert np.array_equal(fw.values(x), ref)
    assert tuple(fw.values(x).shape) == ref.shape
    if ref.size and not getattr(fw, "copies_on_import", False):
        assert fw.ptr(x) == t.data_ptr  # zero copy
        ref_view = t.numpy()
        if not t.readonly:
            ref_view.reshape(-1)[0] = ref_view.reshape(-1)[-1]  # written after the hand-over: seen there
            assert np.array_equal(fw.values(x), ref_view)
    del x


def test_source_dropped_first_both_ways(fw, no_leak):
    big = np.arange(1 << 16, dtype=np.float32)
    x = fw.make(big.copy())
    t = dlbridge.from_dlpack(x)
    del x
    gc.collect()
    junk = [fw.make(np.full(1 << 16, 7.0, dtype=np.float32)) for _ in range(8)]
    assert np.array_equal(t.numpy(), big)  # the framework's memory is still held by t
    t = dlbridge.asarray(big.copy())
    y = fw.consume(t)
    del t
    gc.collect()
    junk += [np.full(1 << 16, 7.0, dtype=np.float32) for _ in range(8)]
    assert np.array_equal(fw.values(y), big)  # and dlbridge's by the framework
    del y, junk


def test_dlpack_device(fw):
    x = fw.make(np.arange(3, dtype=np.float32))
    kind, index = x.__dlpack_device__()
    assert int(kind) == 1  # kDLCPU
    # PaddlePaddle says (kDLCPU, None): dlbridge reads a host device's None id as 0.
    assert index in (0, None)
    assert dlbridge.from_dlpack(x, device=x).device == "cpu"
    assert dlbridge.from_dlpack(x, device=x.__dlpack_device__()).device == "cpu"


def test_dlbridge_copy_and_device_requests(fw, no_leak):
    """dlbridge.from_dlpack's copy= / device= reach every producer (through
    its keywords, or after a keyword-less legacy call) and are honoured."""
    x = fw.make(np.arange(8, dtype=np.float32))
    src = fw.ptr(x)
    copied = dlbridge.from_dlpack(x, copy=True)
    assert copied.data_ptr != src and np.array_equal(copied.numpy(), np.arange(8, dtype=np.float32))
    assert dlbridge.from_dlpack(x, copy=False).data_ptr == src
    assert dlbridge.from_dlpack(x, device="cpu").data_ptr == src


def test_what_each_consumer_asks_dlbridge_for(fw, no_leak):
    """The keywords each framework passes to a dlbridge tensor's __dlpack__."""
    expected = {
        "pyarrow": [{"max_version": (1, 3), "dl_device": None, "copy": None}],
        "paddle": [{"max_version": (1, 2)}],
        "mlx": [{}],  # legacy first (and max_version=(1, 1) only if that fails)
        "onnxruntime": [{}],  # legacy only
        "warp": [{"stream": None}],  # legacy only
        "array-api-strict": [{"dl_device": None, "copy": None, "max_version": (1, 0)}],  # NumPy's call
    }[fw.name]
    calls = []

    class Spy:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kwargs):
            calls.append(kwargs)
            return self.t.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    fw.consume(Spy(dlbridge.asarray(np.arange(3, dtype=np.float32))))
    assert calls == expected


# -- read-only data ------------------------------------------------------------

def test_readonly_flags_in(pa, mx, wp, ort, no_leak):
    # pyarrow arrays are immutable: versioned capsules say READ_ONLY.
    assert dlbridge.from_dlpack(pa.array(np.arange(3.0))).readonly
    assert not dlbridge.from_dlpack(pa.Tensor.from_numpy(np.arange(3.0))).readonly
    # MLX, Warp and ONNX Runtime export legacy capsules only (MLX even when
    # max_version is passed): dlbridge applies its legacy policy.
    legacy = _legacy_import_readonly()
    assert dlbridge.from_dlpack(mx.array([1.0])).readonly == legacy
    assert dlbridge.from_dlpack(wp.array([1.0], dtype=wp.float32, device="cpu")).readonly == legacy
    assert dlbridge.from_dlpack(ort.OrtValue.ortvalue_from_numpy(np.arange(3.0))).readonly == legacy


def test_readonly_flags_in_paddle_and_xp(paddle, xp, no_leak):
    assert not dlbridge.from_dlpack(paddle.to_tensor([1.0, 2.0])).readonly
    assert not dlbridge.from_dlpack(xp.asarray(np.arange(3.0))).readonly
    ro = np.arange(3.0)
    ro.flags.writeable = False
    assert dlbridge.from_dlpack(xp.asarray(ro)).readonly


def _readonly_tensor():
    a = np.arange(4, dtype=np.float32)
    a.flags.writeable = False
    t = dlbridge.from_dlpack(a)
    assert t.readonly
    return a, t


def test_readonly_out_pyarrow_respects_it(pa, no_leak):
    _, t = _readonly_tensor()
    assert not pa.Tensor.from_dlpack(t).is_mutable


def test_readonly_out_xp_respects_it(xp, no_leak):
    _, t = _readonly_tensor()
    x = xp.from_dlpack(t)
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 9.0


def test_readonly_out_mlx_copies(mx, no_leak):
    a, t = _readonly_tensor()
    assert np.array_equal(np.array(mx.from_dlpack(t)), a)  # legacy refused, versioned (1, 1) retried, copied


@pytest.mark.parametrize("consumer", ["warp", "onnxruntime"])
def test_readonly_out_legacy_only_consumers_get_buffer_error(consumer, request, no_leak):
    if consumer == "warp":
        consume = request.getfixturevalue("wp").from_dlpack
    else:
        consume = request.getfixturevalue("ort").OrtValue.from_dlpack
    _, t = _readonly_tensor()
    with pytest.raises(BufferError, match="read-only"):
        consume(t)  # they ask for legacy capsules only, which cannot carry READ_ONLY


@pytest.mark.xfail(strict=True, reason="PaddlePaddle 3.3 accepts a READ_ONLY versioned capsule but ignores the flag: "
                   "its tensor writes into read-only memory (as PyTorch does)")
@_known_failure
def test_paddle_respects_read_only(paddle):
    a, t = _readonly_tensor()
    x = paddle.from_dlpack(t)
    try:
        x[0] = 99.0
    except Exception:
        return  # refused: fine
    assert a[0] == 0.0  # or copied: fine


# -- dlbridge.asarray on what the frameworks offer besides DLPack -----------------

def test_asarray_buffer_protocol_and_array_interface(pa, mx, wp, no_leak):
    m = mx.array(np.arange(6, dtype=np.float32).reshape(2, 3))
    t = dlbridge.asarray(memoryview(m.T))  # MLX's buffer protocol: writable, strided
    assert t.strides == (1, 3) and np.array_equal(t.numpy(), np.array(m.T)) and not t.readonly
    with pytest.raises(BufferError, match="bfloat16"):
        dlbridge.asarray(memoryview(mx.array([1.0], dtype=mx.bfloat16)))  # MLX's nonstandard format "bfloat16"
    pt = pa.Tensor.from_numpy(np.arange(6.0).reshape(2, 3))
    assert dlbridge.asarray(memoryview(pt)).data_ptr == pt.to_numpy().ctypes.data
    buf = pa.py_buffer(b"abcd")
    tb = dlbridge.asarray(buf)
    assert tb.readonly and tb.dtype == "int8" and bytes(tb.numpy()) == b"abcd"

    class OnlyArrayInterface:
        def __init__(self, x):
            self.x = x
            self.__array_interface__ = x.__array_interface__

    w = wp.array(np.arange(12, dtype=np.float32).reshape(3, 4), dtype=wp.float32, device="cpu").transpose()
    tw = dlbridge.asarray(OnlyArrayInterface(w))  # Warp's __array_interface__: writable, strided
    assert tw.data_ptr == w.ptr and tw.strides == (1, 4) and not tw.readonly
    assert np.array_equal(tw.numpy(), w.numpy())


def test_pyarrow_array_from_dlbridge_numpy_view(pa, no_leak):
    # pa.array() takes neither __dlpack__ nor __array__ objects (it iterates them):
    # hand it t.numpy(), which it wraps zero copy.
    t = dlbridge.zeros((4,), "int64")
    assert pa.array(t.numpy()).buffers()[1].address == t.data_ptr


# -- what fails, and how -----------------------------------------------------------

def test_pyarrow_bool_and_nulls(pa, no_leak):
    for x, match in [(pa.array([True, False]), "Bit-packed boolean"), (pa.array([1, None, 3]), "no nulls")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see test_pyarrow_refusal_is_not_retried_legacy
            with pytest.raises(TypeError, match=match):  # pa.ArrowTypeError
                dlbridge.from_dlpack(x)
    with pytest.raises(TypeError, match="ChunkedArray does not support DLPack"):
        dlbridge.from_dlpack(pa.chunked_array([[1, 2], [3]]))


@pytest.mark.xfail(strict=True, reason="pyarrow 26 raises ArrowTypeError (a TypeError), not the spec's BufferError, "
                   "for data it cannot export (nulls, bit-packed booleans)")
@_known_failure
def test_pyarrow_refusal_is_a_buffer_error(pa):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(BufferError):
            dlbridge.from_dlpack(pa.array([1, None, 3]))


def test_pyarrow_refusal_is_not_retried_legacy(pa):
    # dlbridge retries a keyword-less __dlpack__() only on a plain TypeError (an
    # old signature), not on pyarrow's ArrowTypeError (a refusal): the retry
    # warned and, under -W error, hid the real error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(TypeError, match="no nulls"):
            dlbridge.from_dlpack(pa.array([1, None, 3]))


def test_pyarrow_refusals(pa, no_leak):
    for t, code in [(dlbridge.asarray(np.array([True])), 6), (dlbridge.zeros((2,), "bfloat16"), 4),
                    (dlbridge.asarray(np.zeros(2, np.complex64)), 5)]:
        with pytest.raises(pa.ArrowInvalid, match=f"unsupported DLPack type {code}"):
            pa.Tensor.from_dlpack(t)


def test_onnxruntime_refusals(ort, no_leak):
    strided = dlbridge.asarray(np.arange(12, dtype=np.float32).reshape(3, 4).T)
    with pytest.raises(RuntimeError, match="contiguous"):
        ort.OrtValue.from_dlpack(strided)
    v = ort.OrtValue.from_dlpack(strided.copy())  # the way through: a row-major copy
    assert np.array_equal(v.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4).T)
    with pytest.raises(RuntimeError):
        ort.OrtValue.from_dlpack(dlbridge.asarray(np.zeros(2, np.complex64)))  # no complex in ORT


def test_onnxruntime_producer_takes_no_dlpack_1_keywords(ort, no_leak):
    v = ort.OrtValue.ortvalue_from_numpy(np.arange(4, dtype=np.float32))
    with pytest.raises(TypeError, match="max_version"):
        v.__dlpack__(max_version=(1, 3))
    t = dlbridge.from_dlpack(v)  # dlbridge falls back to the legacy call
    assert t.data_ptr == v.data_ptr()


@pytest.mark.xfail(strict=True, reason="Warp 1.19: wp.from_dlpack of a 0-d tensor raises IndexError "
                   "(Warp has no 0-d arrays; no clean BufferError/ValueError)")
@_known_failure
def test_warp_takes_0d_tensors(wp):
    x = wp.from_dlpack(dlbridge.asarray(np.array(2.5, dtype=np.float32)))
    assert float(x.numpy().reshape(-1)[0]) == 2.5


def test_warp_array_constructor_takes_dlbridge_tensor(wp):
    # Warp 1.19's wp.array(data) wants data with __len__, which Tensor has now.
    t = dlbridge.asarray(np.arange(3, dtype=np.float32))
    assert np.array_equal(wp.array(t, device="cpu").numpy(), np.arange(3, dtype=np.float32))


def test_warp_refusals(wp, no_leak):
    with pytest.raises(RuntimeError, match="complex"):
        wp.from_dlpack(dlbridge.asarray(np.zeros(2, np.complex64)))
    t = wp.from_dlpack(dlbridge.asarray(np.arange(6.0)[::-1]))  # negative strides: taken as they are
    assert np.array_equal(t.numpy(), np.arange(6.0)[::-1])


@pytest.mark.xfail(strict=True, reason="MLX 0.32 on Linux copies every CPU DLPack import "
                   "(copy=False: 'Cannot import a CPU array without a copy')")
@_known_failure
def test_mlx_imports_share_memory(mx):
    t = dlbridge.zeros((1024,), "float32")
    x = mx.from_dlpack(t)
    assert np.asarray(memoryview(x)).ctypes.data == t.data_ptr


@pytest.mark.xfail(strict=True, reason="MLX 0.32 raises ValueError, not the array API's BufferError, for "
                   "from_dlpack(copy=False) when it must copy")
@_known_failure
def test_mlx_copy_false_is_a_buffer_error(mx):
    with pytest.raises(BufferError):
        mx.from_dlpack(dlbridge.zeros((4,)), copy=False)


def test_mlx_refusals(mx, no_leak):
    with pytest.raises(ValueError, match="negative strides"):
        mx.from_dlpack(dlbridge.asarray(np.arange(6.0)[::-1]))
    with pytest.raises(ValueError):
        mx.from_dlpack(dlbridge.zeros((2,), "float8_e4m3fn"))
    x = mx.array(np.arange(4, dtype=np.float32))
    # MLX ignores max_version (always a legacy capsule) and stream on the CPU
    assert "versioned" not in repr(x.__dlpack__(max_version=(1, 3)))
    with pytest.raises(BufferError):
        x.__dlpack__(max_version=(1, 3), dl_device=(2, 0), copy=False)


def test_paddle_bfloat16_and_fp8_cross_both_ways(paddle, no_leak):
    for name in ("bfloat16", "float8_e4m3fn"):
        t = dlbridge.zeros((3,), name)
        x = paddle.from_dlpack(t)
        assert x.data_ptr() == t.data_ptr
        back = dlbridge.from_dlpack(x)
        assert back.dtype == name and back.data_ptr == t.data_ptr


@pytest.mark.xfail(strict=True, reason="PaddlePaddle 3.3: __dlpack_device__() returns (kDLCPU, None); "
                   "the spec says the device id is an int")
@_known_failure
def test_paddle_device_id_is_an_int(paddle):
    assert isinstance(paddle.to_tensor([1.0]).__dlpack_device__()[1], int)


@pytest.mark.xfail(strict=True, reason="PaddlePaddle 3.3 (CPU build): __dlpack__(dl_device=<CUDA>) raises "
                   "NotImplementedError, not the spec's BufferError")
@_known_failure
def test_paddle_unavailable_device_is_a_buffer_error(paddle):
    with pytest.raises(BufferError):
        paddle.to_tensor([1.0]).__dlpack__(max_version=(1, 3), dl_device=(2, 0))


@pytest.mark.xfail(strict=True, reason="PaddlePaddle 3.3 takes negative strides zero copy, but .numpy() of that "
                   "tensor then fails (MemoryError: 'Fail to alloc memory of 18446744073709551584 size')")
@_known_failure
def test_paddle_negative_strides(paddle):
    x = paddle.from_dlpack(dlbridge.asarray(np.arange(6.0)[::-1]))
    assert np.array_equal(x.numpy(), np.arange(6.0)[::-1])


def test_paddle_negative_strides_compute(paddle, no_leak):
    x = paddle.from_dlpack(dlbridge.asarray(np.arange(6.0)[::-1]))
    assert np.array_equal((x + 0).numpy(), np.arange(6.0)[::-1])  # arithmetic reads them right
