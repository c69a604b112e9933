"""dlb_tensor_from_pyobject / dlb_tensor_to_pyobject from a real CPython
extension module written in C (python_tests/pyobject_ext.c), compiled here
with -Wall -Werror against Python.h and dlbridge.h and linked to the
library the package loads."""

import pathlib

import numpy as np
import pytest

import dlbridge
from _cext import build_extension
from _optional import needs_torch

HERE = pathlib.Path(__file__).resolve().parent
INCLUDE = HERE.parent / "include"


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    library = pathlib.Path(dlbridge._lib.path).resolve()
    # Linked by its full path (so the loader maps the very file the package
    # loaded: one copy of dlbridge in the process).
    return build_extension("pyobject_ext", HERE / "pyobject_ext.c", tmp_path_factory.mktemp("pyobject_ext"),
                           f"-I{INCLUDE}", str(library), f"-Wl,-rpath,{library.parent}")


def test_any_producer_reaches_a_c_extension(ext, no_leak):
    a = np.arange(12.0).reshape(3, 4)
    assert ext.total(a) == 66.0
    assert ext.total(a[:, ::2]) == float(a[:, ::2].sum())
    assert ext.total(a.T) == 66.0
    assert ext.total(dlbridge.from_dlpack(a)) == 66.0
    assert ext.total(memoryview(a)) == 66.0  # the buffer protocol
    assert ext.total(a.__dlpack__()) == 66.0  # a raw capsule

    class Interface:  # only __array_interface__
        def __init__(self, x):
            self.__array_interface__ = x.__array_interface__
            self.keep = x
    assert ext.total(Interface(a)) == 66.0


@needs_torch
def test_torch_goes_through_its_exchange_table(ext, no_leak):
    import torch

    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    assert ext.total(x) == 15.0
    assert ext.total(x.t()) == 15.0


def test_results_come_back_as_dlbridge_tensors(ext, no_leak):
    a = np.arange(6.0).reshape(2, 3)
    d = ext.doubled(a[:, ::-1])
    assert type(d) is dlbridge.Tensor and d.shape == (2, 3) and d.data_ptr % 256 == 0
    assert d.numpy().tolist() == (2 * a[:, ::-1]).tolist()
    s = ext.share(a, False)
    assert type(s) is dlbridge.Tensor and s.data_ptr == a.ctypes.data  # zero copy
    del d, s


def test_copies_only_when_allowed(ext, no_leak):
    swapped = np.arange(4.0).astype(">f8")
    with pytest.raises(BufferError):
        ext.share(swapped, False)
    t = ext.share(swapped, True)
    assert t.is_copied and t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    del t


def test_failures_return_a_status_and_set_an_exception(ext, no_leak):
    name, raised, message = ext.status(3)
    assert (name, raised) == ("DLB_ERR_PYTHON", 1) and message.startswith("TypeError: cannot share memory with int")
    name, raised, message = ext.status(None)
    assert (name, raised) == ("DLB_ERR_NULL_ARGUMENT", 1) and "obj is NULL" in message
    name, raised, message = ext.status(np.zeros(2), 8)
    assert (name, raised) == ("DLB_ERR_UNSUPPORTED_FLAGS", 1)
    assert ext.status(np.zeros(2)) == ("DLB_OK", 0, "")
