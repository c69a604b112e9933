"""DLPack 1.3's C exchange API (`__dlpack_c_exchange_api__`), both sides:
dlbridge.Tensor publishes a table that real consumers use (tvm-ffi, a C
extension built here that drives every function as a kernel launcher
would), and dlbridge.from_dlpack takes tensors through a producer's table
(PyTorch 2.15's) instead of __dlpack__."""

import ctypes
import pathlib

import numpy as np
import pytest

import dlbridge
from _cext import build_extension
from _optional import needs_torch

HERE = pathlib.Path(__file__).resolve().parent


class Header(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("prev_api", ctypes.c_void_p)]


class Table(ctypes.Structure):
    _fields_ = [("header", Header)] + [(name, ctypes.c_void_p) for name in (
        "managed_tensor_allocator", "managed_tensor_from_py_object_no_sync", "managed_tensor_to_py_object_no_sync",
        "dltensor_from_py_object_no_sync", "current_work_stream")]


def table_of(tp):
    capsule = tp.__dlpack_c_exchange_api__
    get = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
    return Table.from_address(get(capsule, b"dlpack_exchange_api"))


def test_the_tensor_type_publishes_a_complete_table():
    t = dlbridge.zeros((2,), "float32")
    assert "__dlpack_c_exchange_api__" in vars(type(t).__mro__[1])  # on the library's type, inherited
    table = table_of(type(t))
    assert (table.header.major, table.header.minor, table.header.prev_api) == (1, 3, None)
    for name, _ in Table._fields_[1:]:
        assert getattr(table, name), f"{name} is NULL"
    # One table for the process: the same address every time.
    assert ctypes.addressof(table_of(dlbridge.Tensor)) == ctypes.addressof(table)


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """The C extension, compiled against the official DLPack 1.3 header
    (the one apache-tvm-ffi's wheel ships) and this interpreter's Python.h."""
    tvm_ffi = pytest.importorskip("tvm_ffi", reason="apache-tvm-ffi (whose wheel ships dlpack.h 1.3) is not installed")
    include = pathlib.Path(tvm_ffi.__file__).parent / "include"
    if not (include / "dlpack" / "dlpack.h").is_file():
        pytest.skip(f"no dlpack/dlpack.h under {include}")
    return build_extension("exchange_ext", HERE / "exchange_ext.c", tmp_path_factory.mktemp("ext"), f"-I{include}")


def test_a_c_extension_drives_every_function_of_the_table(ext, no_leak):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = dlbridge.from_dlpack(a)
    before = dlbridge._lib.native["exchange_api_calls"]()
    # dltensor_from_py_object_no_sync + current_work_stream (CPU: NULL).
    assert ext.launch(t) == (66.0, 2, None)
    assert ext.launch(dlbridge.from_dlpack(a[:, ::2])) == (float(a[:, ::2].sum()), 2, None)  # strided
    assert ext.launch(dlbridge.from_dlpack(a.T)) == (66.0, 2, None)
    # managed_tensor_from_py_object_no_sync + managed_tensor_to_py_object_no_sync.
    kept = ext.keep(t)
    assert type(kept) is dlbridge.Tensor and kept.data_ptr == t.data_ptr and kept.shape == (3, 4)
    ext.release(t)  # a managed export, deleted by the consumer
    assert dlbridge._lib.native["exchange_api_calls"]() == before + 5
    # managed_tensor_allocator: dlbridge memory, written by the "kernel".
    made = ext.allocate(t, (2, 3))
    assert type(made) is dlbridge.Tensor and made.shape == (2, 3) and made.dtype == "float32"
    assert made.numpy().tolist() == [[0, 1, 2], [3, 4, 5]] and made.data_ptr % 256 == 0
    # Errors come back through SetError, with the Python exception's name
    # (an unsupported dtype is a BufferError, as everywhere in dlbridge).
    with pytest.raises(BufferError, match="BufferError: dtype code 2 does not allow bits=31"):
        ext.allocate_bad(t)
    # Another type's object given to dlbridge's table: TypeError, not a crash.
    class Impostor:
        __dlpack_c_exchange_api__ = dlbridge.Tensor.__dlpack_c_exchange_api__
    with pytest.raises(TypeError, match="dlbridge.Tensor objects only"):
        ext.launch(Impostor())
    del t, kept, made


def test_tvm_ffi_takes_dlbridge_tensors_through_the_table(no_leak):
    tvm_ffi = pytest.importorskip("tvm_ffi", reason="apache-tvm-ffi is not installed")
    a = np.arange(6, dtype=np.float32)
    t = dlbridge.from_dlpack(a)
    before = dlbridge._lib.native["exchange_api_calls"]()
    v = tvm_ffi.from_dlpack(t)
    assert dlbridge._lib.native["exchange_api_calls"]() > before, "tvm-ffi did not use the exchange API"
    assert np.from_dlpack(v).ctypes.data == a.ctypes.data
    # And back: tvm-ffi's tensor into dlbridge (tvm-ffi publishes no table: __dlpack__).
    assert dlbridge.from_dlpack(v).data_ptr == a.ctypes.data
    del t, v


@needs_torch
def test_from_dlpack_uses_torchs_table_not_its_dunder(monkeypatch, no_leak):
    import torch

    assert hasattr(torch.Tensor, "__dlpack_c_exchange_api__"), "PyTorch publishes no exchange API"
    calls = []
    original = torch.Tensor.__dlpack__

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "__dlpack__", spy)
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)[:, 1:]
    t = dlbridge.from_dlpack(x)
    assert calls == [], "dlbridge.from_dlpack called torch's __dlpack__"
    assert (t.data_ptr, t.shape, t.strides, t.dtype) == (x.data_ptr(), (3, 3), (4, 1), "float32")
    assert t.numpy().tolist() == x.numpy().tolist()
    # A request for a copy or a device still goes through __dlpack__ (the table has no such request).
    assert dlbridge.from_dlpack(x, copy=True).data_ptr != x.data_ptr() and calls == [1]
    del t


@needs_torch
def test_torch_memory_stays_alive_through_the_table(no_leak):
    import torch

    x = torch.arange(1 << 16, dtype=torch.float64)
    t = dlbridge.from_dlpack(x)
    del x
    junk = [torch.full((1 << 16,), 7.0, dtype=torch.float64) for _ in range(8)]
    assert t.numpy()[:3].tolist() == [0.0, 1.0, 2.0] and t.numpy()[-1] == (1 << 16) - 1
    del t, junk


@needs_torch
def test_the_table_is_not_used_where_dlpack_would_answer_differently(no_leak):
    import torch

    # PyTorch's table hands out lazy conjugate / negative views as their
    # stored values; its __dlpack__ refuses them: dlbridge asks __dlpack__.
    z = torch.tensor([1 + 2j, 3 - 4j])
    with pytest.raises(BufferError):
        z.conj().__dlpack__()
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(z.conj())
    # A subclass that overrides __dlpack__ exports by its own rules.
    class Seven(torch.Tensor):
        def __dlpack__(self, *args, **kwargs):
            return torch.full((2,), 7.0).__dlpack__(*args, **kwargs)
    s = torch.zeros(2).as_subclass(Seven)
    assert dlbridge.from_dlpack(s).numpy().tolist() == [7.0, 7.0]
    # What the table refuses (sparse) gets __dlpack__'s own error, not a C++ trace.
    sparse = torch.zeros(2, 2).to_sparse()
    with pytest.raises((BufferError, RuntimeError, TypeError)) as direct:
        sparse.__dlpack__()
    with pytest.raises(type(direct.value)):
        dlbridge.from_dlpack(sparse)


def test_a_malformed_table_chain_is_not_followed_for_ever(no_leak):
    # A table of major version 2 whose prev_api points at itself.
    table = Table()
    table.header.major, table.header.minor = 2, 0
    table.header.prev_api = ctypes.addressof(table)
    new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
        ("PyCapsule_New", ctypes.pythonapi))
    a = np.arange(3.0)

    class Cyclic:
        __dlpack_c_exchange_api__ = new(ctypes.addressof(table), b"dlpack_exchange_api", None)

        def __dlpack__(self, **kwargs):
            return a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return (1, 0)

    assert dlbridge.from_dlpack(Cyclic()).data_ptr == a.ctypes.data  # through __dlpack__, promptly


def test_a_bare_dltensor_is_refused_where_flags_would_be_lost(ext, no_leak):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    padded = dlbridge.asarray(np.arange(4, dtype=np.uint8).view(ml_dtypes.int4))
    with pytest.raises(BufferError, match="padded sub-byte"):
        ext.launch(padded)
    readonly = np.arange(4, dtype=np.float32)
    readonly.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):
        ext.launch(dlbridge.asarray(readonly))
    # The managed path carries the flags: allowed.
    assert ext.keep(dlbridge.asarray(readonly)).readonly
    del padded


@needs_torch
def test_torch_tensors_that_require_grad_follow_torchs_own_rule(no_leak):
    import torch

    g = torch.ones(2, requires_grad=True)
    with pytest.raises(Exception) as direct:
        g.__dlpack__()
    with pytest.raises(type(direct.value)):
        dlbridge.from_dlpack(g)
    assert dlbridge.from_dlpack(g.detach()).data_ptr == g.data_ptr()


@needs_torch
def test_a_torch_negative_view_is_refused_not_handed_out_negated(no_leak):
    import torch

    z = torch.tensor([1 + 2j, 3 - 4j])
    negative = z.conj().imag  # a lazy negative view of float32 data: is_neg()
    assert negative.is_neg() and negative.tolist() == [-2.0, 4.0]
    # PyTorch's own export gives the stored values (2, -4): a wrong answer.
    assert torch.from_dlpack(negative.__dlpack__()).tolist() == [2.0, -4.0]
    with pytest.raises(BufferError, match="resolve_neg"):
        dlbridge.from_dlpack(negative)
    assert dlbridge.from_dlpack(negative.resolve_neg()).numpy().tolist() == [-2.0, 4.0]
